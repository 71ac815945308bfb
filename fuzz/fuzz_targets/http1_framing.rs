//! The HTTP/1.1 framing both sides of the gateway share (`wire`): the incremental chunked
//! decoder `Chunked::feed` and the framing decision of `FramingHeaders`.
//!
//! Properties:
//! - `Chunked::feed` never panics, whatever the bytes and the limit `max`; it never reports
//!   more bytes used than it was given, and never decodes more than `max + 1` bytes;
//! - feeding a body in pieces, as a reader appending to its buffer does (append a piece, feed
//!   `&buf[used..]`, advance `used` by what was used), whether the fuzzer chooses every cut or
//!   only a read size, ends exactly as feeding it whole: the same refusal or not, the same
//!   decoded bytes, the same bytes used (at `Done`, and while more is needed as long as the
//!   limit was not passed);
//! - a body built by a plain reference encoder (non-empty data chunks, optional chunk
//!   extensions, optional trailer lines) decodes to exactly its data and is `Done` at exactly
//!   its encoded length, whatever bytes follow it (the next pipelined request);
//! - `FramingHeaders`, for any list of header lines: a request is `Chunked` only with exactly
//!   one `Transfer-Encoding` line whose value is `chunked` (case-insensitively, OWS trimmed)
//!   and not on HTTP/1.0; `Length(n)` only without `Transfer-Encoding` and with every
//!   `Content-Length` one decimal number equal to `n` (`0` when there is none); never
//!   `UntilClose`; `both()` exactly when both headers are present. Both `request` and
//!   `response` also match a model of RFC 9112 §6.3 as the module documents it exactly.
//!
//! Found and fixed: a chunk-size or trailer line longer than the 4096-byte limit was accepted
//! when it arrived complete in one read and refused when it arrived in pieces (seed
//! `regression_long_chunk_line`; `src/wire.rs`
//! `an_over_long_chunk_line_is_refused_whole_or_in_pieces`).
#![no_main]

use arbitrary::Arbitrary;
use kwikid_gateway::wire::{BadFraming, ChunkProgress, Chunked, Framing, FramingHeaders};
use libfuzzer_sys::fuzz_target;

/// RFC 9110 §5.6.2 `tchar`.
const TCHAR: &[u8] =
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

#[derive(Arbitrary, Debug)]
enum Limit {
    Small(u8),
    Medium(u16),
    Unbounded,
}

impl Limit {
    fn get(&self) -> usize {
        match *self {
            Self::Small(n) => usize::from(n),
            Self::Medium(n) => usize::from(n),
            Self::Unbounded => usize::MAX,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Ext<'a> {
    /// 0: none, 1: a space, 2: a space and a tab (BWS before `;`, RFC 9112 §7.1.1).
    bws: u8,
    name: &'a [u8],
    value: Option<&'a [u8]>,
}

#[derive(Arbitrary, Debug)]
struct Chunk<'a> {
    data: &'a [u8],
    /// Leading zeros on the size.
    zeros: u8,
    upper: bool,
    exts: Vec<Ext<'a>>,
}

#[derive(Arbitrary, Debug)]
struct Trailer<'a> {
    name: &'a [u8],
    value: &'a [u8],
}

#[derive(Arbitrary, Debug)]
enum Name<'a> {
    /// `Content-Length` with the letters' case from the mask.
    ContentLength(u16),
    TransferEncoding(u16),
    Other(&'a [u8]),
}

#[derive(Arbitrary, Debug)]
enum Value<'a> {
    /// `chunked`, case from the mask, with OWS around it from `pad`.
    Chunked(u16, u8),
    /// A decimal number with leading zeros and OWS.
    Number(u64, u8, u8),
    Raw(&'a [u8]),
}

#[derive(Arbitrary, Debug)]
struct Stretch {
    at: u16,
    /// In steps of 64 bytes.
    len: u8,
    byte: u8,
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    max: Limit,
    /// Piece lengths for the piecewise decodes; what is left after them is one last piece.
    cuts: Vec<u16>,
    /// The same, cut in pieces of this length (a reader's buffer size; 0 is 1).
    stride: u16,
    /// A run of one byte put into `raw`, to reach the line-length limit with short inputs
    /// (libFuzzer's inputs stay under 4096 bytes by default).
    stretch: Option<Stretch>,
    /// A well-formed body: its data chunks, its last chunk's extensions, its trailers.
    chunks: Vec<Chunk<'a>>,
    last_zeros: u8,
    last_exts: Vec<Ext<'a>>,
    trailers: Vec<Trailer<'a>>,
    /// What follows the body on the connection.
    after: &'a [u8],
    headers: Vec<(Name<'a>, Value<'a>)>,
    http10: bool,
    /// Bytes for the decoder as they come: the rest of the input.
    raw: &'a [u8],
}

// ---- Chunked ----------------------------------------------------------------------------

/// How a decode ended, after all the input was given.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Refused,
    /// More than `max` decoded: the caller stops there (how much was used no longer matters).
    OverLimit(Vec<u8>),
    NeedMore {
        out: Vec<u8>,
        used: usize,
    },
    Done {
        out: Vec<u8>,
        used: usize,
    },
}

/// One `feed`, with the properties that hold for every call.
fn feed(
    decoder: &mut Chunked,
    input: &[u8],
    out: &mut Vec<u8>,
    max: usize,
) -> Option<ChunkProgress> {
    let before = out.len();
    let progress = decoder.feed(input, out, max).ok();
    assert!(out.len() >= before, "feed shrank the output");
    assert!(
        out.len() <= max.saturating_add(1),
        "decoded {} bytes with max {max}",
        out.len()
    );
    if let Some(ChunkProgress::NeedMore(used) | ChunkProgress::Done(used)) = progress {
        assert!(used <= input.len(), "used {used} of {} bytes", input.len());
    }
    progress
}

fn decode_whole(wire: &[u8], max: usize) -> Outcome {
    let mut out = Vec::new();
    match feed(&mut Chunked::default(), wire, &mut out, max) {
        None => Outcome::Refused,
        Some(_) if out.len() > max => Outcome::OverLimit(out),
        Some(ChunkProgress::NeedMore(used)) => Outcome::NeedMore { out, used },
        Some(ChunkProgress::Done(used)) => Outcome::Done { out, used },
    }
}

/// As `connection.rs` and `upstream.rs` read a body: append what arrived, feed what is not
/// used yet.
fn decode_in_pieces(wire: &[u8], cuts: &[u16], max: usize) -> Outcome {
    let mut pieces = Vec::with_capacity(cuts.len() + 1);
    let mut rest = wire;
    for &cut in cuts {
        let (piece, after) = rest.split_at(usize::from(cut).min(rest.len()));
        pieces.push(piece);
        rest = after;
    }
    pieces.push(rest);

    let mut decoder = Chunked::default();
    let mut out = Vec::new();
    let mut buf = Vec::with_capacity(wire.len());
    let mut used = 0;
    for piece in pieces {
        buf.extend_from_slice(piece);
        match feed(&mut decoder, &buf[used..], &mut out, max) {
            None => return Outcome::Refused,
            Some(_) if out.len() > max => return Outcome::OverLimit(out),
            Some(ChunkProgress::Done(n)) => {
                return Outcome::Done {
                    out,
                    used: used + n,
                };
            }
            Some(ChunkProgress::NeedMore(n)) => used += n,
        }
    }
    Outcome::NeedMore { out, used }
}

fn check_pieces(wire: &[u8], cuts: &[u16], stride: u16, max: usize) -> Outcome {
    let whole = decode_whole(wire, max);
    let pieces = decode_in_pieces(wire, cuts, max);
    assert_eq!(
        whole,
        pieces,
        "whole and in pieces disagree on {} (max {max}, cuts {cuts:?})",
        show(wire)
    );
    // A reader with a fixed buffer size: every read as long as the last.
    let stride = usize::from(stride.max(1));
    let reads = vec![stride as u16; wire.len() / stride];
    let read = decode_in_pieces(wire, &reads, max);
    assert_eq!(
        whole,
        read,
        "whole and in reads of {stride} disagree on {} (max {max})",
        show(wire)
    );
    whole
}

/// Bytes for a message: escaped, long runs of one byte shortened.
fn show(bytes: &[u8]) -> String {
    let mut shown = String::new();
    let mut at = 0;
    while at < bytes.len() {
        let run = bytes[at..].iter().take_while(|&&b| b == bytes[at]).count();
        if run > 8 {
            shown += &format!("[{} x {}]", run, [bytes[at]].escape_ascii());
        } else {
            shown += &bytes[at..at + run].escape_ascii().to_string();
        }
        at += run;
    }
    format!("{} bytes: \"{shown}\"", bytes.len())
}

fn tokens(bytes: &[u8], at_most: usize) -> Vec<u8> {
    let mut token: Vec<u8> = bytes
        .iter()
        .take(at_most)
        .map(|&b| TCHAR[usize::from(b) % TCHAR.len()])
        .collect();
    if token.is_empty() {
        token.push(b'x');
    }
    token
}

/// A chunk-size line: the size in hex with leading zeros (15 digits at most), extensions.
fn size_line(wire: &mut Vec<u8>, size: usize, zeros: u8, upper: bool, exts: &[Ext<'_>]) {
    let hex = if upper {
        format!("{size:X}")
    } else {
        format!("{size:x}")
    };
    let zeros = usize::from(zeros) % (16 - hex.len());
    wire.extend(std::iter::repeat_n(b'0', zeros));
    wire.extend_from_slice(hex.as_bytes());
    // Bounded so the line stays far below the decoder's 4096-byte line limit.
    for ext in exts.iter().take(8) {
        wire.extend_from_slice(&b" \t"[..usize::from(ext.bws % 3)]);
        wire.push(b';');
        wire.extend(tokens(ext.name, 64));
        if let Some(value) = ext.value {
            wire.push(b'=');
            wire.extend(tokens(value, 64));
        }
    }
    wire.extend_from_slice(b"\r\n");
}

/// The reference encoder (RFC 9112 §7.1): returns the body and its data.
fn encode(input: &Input<'_>) -> (Vec<u8>, Vec<u8>) {
    let mut wire = Vec::new();
    let mut data = Vec::new();
    for chunk in input.chunks.iter().filter(|c| !c.data.is_empty()) {
        size_line(
            &mut wire,
            chunk.data.len(),
            chunk.zeros,
            chunk.upper,
            &chunk.exts,
        );
        wire.extend_from_slice(chunk.data);
        wire.extend_from_slice(b"\r\n");
        data.extend_from_slice(chunk.data);
    }
    size_line(&mut wire, 0, input.last_zeros, false, &input.last_exts);
    for trailer in &input.trailers {
        wire.extend(tokens(trailer.name, 256));
        wire.extend_from_slice(b": ");
        wire.extend(trailer.value.iter().take(1024).map(|&b| field_byte(b)));
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    (wire, data)
}

/// A byte as it can appear in a field value: CR, LF and other controls become a space.
fn field_byte(b: u8) -> u8 {
    match b {
        b'\t' | b' '..=0x7e | 0x80.. => b,
        _ => b' ',
    }
}

fn check_chunked(input: &Input<'_>) {
    let max = input.max.get();
    let mut raw = input.raw.to_vec();
    if let Some(Stretch { at, len, byte }) = input.stretch {
        let at = usize::from(at) % (raw.len() + 1);
        let run = std::iter::repeat_n(byte, usize::from(len) * 64);
        raw.splice(at..at, run);
    }
    check_pieces(&raw, &input.cuts, input.stride, max);

    let (body, data) = encode(input);
    let mut wire = body.clone();
    wire.extend_from_slice(input.after);
    // Exactly at the limit is not past it.
    let expected = Outcome::Done {
        out: data.clone(),
        used: body.len(),
    };
    assert_eq!(
        decode_whole(&wire, data.len()),
        expected,
        "a well-formed body is misread: {}",
        show(&wire)
    );
    assert_eq!(
        check_pieces(&wire, &input.cuts, input.stride, data.len()),
        expected
    );
    // And with the fuzzer's limit: the data, or its first `max + 1` bytes.
    let outcome = check_pieces(&wire, &input.cuts, input.stride, max);
    if data.len() <= max {
        assert_eq!(outcome, expected);
    } else {
        assert_eq!(outcome, Outcome::OverLimit(data[..max + 1].to_vec()));
    }
}

// ---- FramingHeaders ---------------------------------------------------------------------

fn cased(word: &str, mask: u16) -> Vec<u8> {
    word.bytes()
        .enumerate()
        .map(|(i, b)| {
            if mask & (1 << (i % 16)) != 0 {
                b.to_ascii_uppercase()
            } else {
                b
            }
        })
        .collect()
}

/// Optional whitespace around a value, from two bits each side.
fn padded(core: &[u8], pad: u8) -> Vec<u8> {
    const OWS: [&[u8]; 4] = [b"", b" ", b"\t", b" \t "];
    let mut value = OWS[usize::from(pad & 3)].to_vec();
    value.extend_from_slice(core);
    value.extend_from_slice(OWS[usize::from(pad >> 2 & 3)]);
    value
}

/// RFC 9110 §5.6.3: OWS is spaces and tabs.
fn ows_trim(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// A `Content-Length` value as the module accepts it: one decimal number, 18 digits at most.
fn length_value(value: &[u8]) -> Option<u64> {
    let digits = ows_trim(value);
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn check_framing(input: &Input<'_>) {
    let lines: Vec<(Vec<u8>, Vec<u8>)> = input
        .headers
        .iter()
        .map(|(name, value)| {
            let name = match name {
                Name::ContentLength(mask) => cased("content-length", *mask),
                Name::TransferEncoding(mask) => cased("transfer-encoding", *mask),
                Name::Other(name) => name.to_vec(),
            };
            // What httparse hands over: no CR, LF or other controls but HTAB.
            let value = match value {
                Value::Chunked(mask, pad) => padded(&cased("chunked", *mask), *pad),
                Value::Number(n, zeros, pad) => {
                    let digits = format!("{}{n}", "0".repeat(usize::from(zeros % 4)));
                    padded(digits.as_bytes(), *pad)
                }
                Value::Raw(raw) => raw.iter().map(|&b| field_byte(b)).collect(),
            };
            (name, value)
        })
        .collect();

    let shown: Vec<String> = lines
        .iter()
        .map(|(name, value)| format!("{}: {}", name.escape_ascii(), value.escape_ascii()))
        .collect();
    let shown = format!("{shown:?}");

    let mut seen = FramingHeaders::default();
    for (name, value) in &lines {
        seen.see(name, value);
    }

    let te: Vec<&[u8]> = lines
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"transfer-encoding"))
        .map(|(_, v)| v.as_slice())
        .collect();
    let cl: Vec<&[u8]> = lines
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"content-length"))
        .map(|(_, v)| v.as_slice())
        .collect();
    let chunked = te.len() == 1 && ows_trim(te[0]).eq_ignore_ascii_case(b"chunked");
    let lengths: Vec<Option<u64>> = cl.iter().map(|v| length_value(v)).collect();
    // `Some(n)`: every Content-Length is `n` (`Some(None)` when there is none).
    let length: Option<Option<u64>> = match lengths.first() {
        None => Some(None),
        Some(&Some(n)) if lengths.iter().all(|&l| l == Some(n)) => Some(Some(n)),
        Some(_) => None,
    };

    let request = seen.request(input.http10);
    match request {
        Ok(Framing::Chunked) => {
            assert!(!input.http10, "chunked on HTTP/1.0: {shown}");
            assert!(chunked, "chunked without exactly one `chunked`: {shown}");
        }
        Ok(Framing::Length(n)) => {
            assert!(te.is_empty(), "a length despite Transfer-Encoding: {shown}");
            for value in &cl {
                let digits = ows_trim(value);
                assert!(
                    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit),
                    "Content-Length {:?} taken as {n}",
                    String::from_utf8_lossy(value)
                );
                let significant = match digits.iter().position(|&d| d != b'0') {
                    Some(at) => &digits[at..],
                    None => b"0",
                };
                assert_eq!(
                    significant,
                    n.to_string().as_bytes(),
                    "Content-Length {:?} taken as {n}",
                    String::from_utf8_lossy(value)
                );
            }
            if cl.is_empty() {
                assert_eq!(n, 0, "a length without Content-Length");
            }
        }
        Ok(Framing::UntilClose) => panic!("a request read until close: {shown}"),
        Err(_) => {}
    }
    assert_eq!(
        seen.both(),
        !te.is_empty() && !cl.is_empty(),
        "both() wrong for {shown}"
    );

    // The whole decision, as documented.
    let expected_request = if chunked && !input.http10 {
        Ok(Framing::Chunked)
    } else if !te.is_empty() && cl.is_empty() {
        Err(BadFraming::TransferEncoding)
    } else if !te.is_empty() {
        Err(BadFraming::Both)
    } else {
        match length {
            Some(n) => Ok(Framing::Length(n.unwrap_or(0))),
            None => Err(BadFraming::ContentLength),
        }
    };
    assert_eq!(request, expected_request, "request framing of {shown}");
    let expected_response = if chunked {
        Ok(Framing::Chunked)
    } else if !te.is_empty() {
        Ok(Framing::UntilClose)
    } else {
        match length {
            Some(Some(n)) => Ok(Framing::Length(n)),
            Some(None) => Ok(Framing::UntilClose),
            None => Err(BadFraming::ContentLength),
        }
    };
    assert_eq!(
        seen.response(),
        expected_response,
        "response framing of {shown}"
    );
}

fuzz_target!(|input: Input<'_>| {
    check_chunked(&input);
    check_framing(&input);
});
