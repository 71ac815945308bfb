//! HTTP/1.1 on the wire, the parts both sides share: where a message's body ends (RFC 9112
//! §6), chunked decoding, header lists, and the head of a response.
//!
//! The gateway speaks exactly one kind of exchange, a small JSON request and a small JSON
//! answer, so it reads and writes HTTP/1.1 itself with `httparse` instead of going through a
//! general HTTP stack: a message is parsed once, in place, and a head is written as bytes.
//! Anything ambiguous is refused rather than guessed (RFC 9112 §6.3, §11.2).

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where one header's name and value sit in the buffer the head was parsed from. Offsets,
/// not slices, so the buffer can keep growing (body bytes) while the head is in use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    name: (u32, u32),
    value: (u32, u32),
}

impl Field {
    /// Records `header`, which borrows from `buf`.
    pub(crate) fn locate(buf: &[u8], header: &httparse::Header<'_>) -> Self {
        Self {
            name: span_of(buf, header.name.as_bytes()),
            value: span_of(buf, header.value),
        }
    }

    pub(crate) fn name<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        &buf[self.name.0 as usize..self.name.1 as usize]
    }

    pub(crate) fn value<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        &buf[self.value.0 as usize..self.value.1 as usize]
    }
}

/// The position of `part` inside `buf`, which it must borrow from.
pub(crate) fn span_of(buf: &[u8], part: &[u8]) -> (u32, u32) {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    debug_assert!(start + part.len() <= buf.len());
    (start as u32, (start + part.len()) as u32)
}

/// How the body of a message is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
    /// Only for responses: the body runs until the server closes the connection.
    UntilClose,
}

impl Default for Framing {
    fn default() -> Self {
        Self::Length(0)
    }
}

/// Why a head's framing cannot be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadFraming {
    /// Transfer-Encoding other than exactly `chunked`, or on HTTP/1.0.
    TransferEncoding,
    /// Content-Length that is not one decimal number, or several that differ.
    ContentLength,
    /// Both, with a coding other than `chunked`: a smuggling attempt.
    Both,
}

/// The framing headers of one head, gathered while its fields are walked once.
#[derive(Debug, Default)]
pub struct FramingHeaders {
    content_length: Option<u64>,
    conflicting_length: bool,
    transfer_encoding: Option<TransferEncoding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TransferEncoding {
    /// Exactly one `Transfer-Encoding: chunked` line.
    Chunked,
    /// Anything else: another coding, a list, several lines.
    Other,
}

impl FramingHeaders {
    /// Takes note of one header; other names are ignored.
    pub fn see(&mut self, name: &[u8], value: &[u8]) {
        if name.eq_ignore_ascii_case(b"content-length") {
            match (parse_length(value), self.content_length) {
                (None, _) => self.conflicting_length = true,
                (Some(n), Some(seen)) if n != seen => self.conflicting_length = true,
                (Some(n), _) => self.content_length = Some(n),
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.transfer_encoding = match self.transfer_encoding {
                None if trim(value).eq_ignore_ascii_case(b"chunked") => {
                    Some(TransferEncoding::Chunked)
                }
                _ => Some(TransferEncoding::Other),
            };
        }
    }

    /// A request's framing: no body unless announced, and nothing ambiguous. With both
    /// `Transfer-Encoding: chunked` and `Content-Length`, chunked frames the body (RFC 9112
    /// §6.3) and the connection must close after the answer ([`Self::both`]).
    pub fn request(&self, http10: bool) -> Result<Framing, BadFraming> {
        match (
            self.transfer_encoding,
            self.content_length,
            self.conflicting_length,
        ) {
            (Some(TransferEncoding::Chunked), _, _) if !http10 => Ok(Framing::Chunked),
            (Some(_), None, false) => Err(BadFraming::TransferEncoding),
            (Some(_), _, _) => Err(BadFraming::Both),
            (None, _, true) => Err(BadFraming::ContentLength),
            (None, length, false) => Ok(Framing::Length(length.unwrap_or(0))),
        }
    }

    /// Both `Transfer-Encoding` and `Content-Length` were sent: whatever comes after this
    /// message is not to be trusted as the start of another.
    pub fn both(&self) -> bool {
        self.transfer_encoding.is_some()
            && (self.content_length.is_some() || self.conflicting_length)
    }

    /// A response's framing (RFC 9112 §6.3), for a request that was not `HEAD` and a status
    /// that has a body.
    pub fn response(&self) -> Result<Framing, BadFraming> {
        match (
            self.transfer_encoding,
            self.content_length,
            self.conflicting_length,
        ) {
            (Some(TransferEncoding::Chunked), _, _) => Ok(Framing::Chunked),
            (Some(TransferEncoding::Other), _, _) => Ok(Framing::UntilClose),
            (None, _, true) => Err(BadFraming::ContentLength),
            (None, Some(n), false) => Ok(Framing::Length(n)),
            (None, None, false) => Ok(Framing::UntilClose),
        }
    }
}

/// `Content-Length`: ASCII digits only (no sign, no list), at most 18 of them.
fn parse_length(value: &[u8]) -> Option<u64> {
    let digits = trim(value);
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')),
    )
}

pub(crate) fn trim(value: &[u8]) -> &[u8] {
    value.trim_ascii()
}

/// Whether a comma-separated header value (`Connection`) lists `token`, case-insensitively.
pub(crate) fn lists(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|item| trim(item).eq_ignore_ascii_case(token))
}

/// Decodes a chunked body incrementally: feed it what has arrived, it appends the data to
/// `out` and says how much of the input it used.
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
    Done,
}

/// What [`Chunked::feed`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkProgress {
    /// This many input bytes were used; more are needed.
    NeedMore(usize),
    /// The body ended after this many input bytes.
    Done(usize),
}

/// A chunked body that is not well formed.
#[derive(Debug, PartialEq, Eq)]
pub struct BadChunk;

/// Longest chunk-size or trailer line accepted.
const MAX_CHUNK_LINE: usize = 4096;

impl Chunked {
    /// Decodes from `input`, appending data to `out`; `out` never grows past `max` (the
    /// caller sees `out.len() > max` first and stops).
    pub fn feed(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<ChunkProgress, BadChunk> {
        let mut at = 0;
        loop {
            let rest = &input[at..];
            match self.state {
                ChunkState::Done => return Ok(ChunkProgress::Done(at)),
                ChunkState::Size => {
                    let Some(line) = line(rest)? else {
                        return Ok(ChunkProgress::NeedMore(at));
                    };
                    at += line.len() + 2;
                    let size = chunk_size(line)?;
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if rest.is_empty() {
                        return Ok(ChunkProgress::NeedMore(at));
                    }
                    let take = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let room = max.saturating_add(1).saturating_sub(out.len());
                    out.extend_from_slice(&rest[..take.min(room)]);
                    if out.len() > max {
                        // The caller refuses the body; how much was used no longer matters.
                        return Ok(ChunkProgress::NeedMore(at));
                    }
                    at += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataEnd => {
                    if rest.len() < 2 {
                        return Ok(ChunkProgress::NeedMore(at));
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(BadChunk);
                    }
                    at += 2;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let Some(line) = line(rest)? else {
                        return Ok(ChunkProgress::NeedMore(at));
                    };
                    at += line.len() + 2;
                    if line.is_empty() {
                        self.state = ChunkState::Done;
                    }
                }
            }
        }
    }
}

/// The next CRLF-terminated line, without its CRLF; `None` until it is complete. A bare LF
/// or an over-long line is an error, whether it arrived whole or in pieces.
fn line(input: &[u8]) -> Result<Option<&[u8]>, BadChunk> {
    let window = &input[..input.len().min(MAX_CHUNK_LINE + 2)];
    match memchr::memchr(b'\n', window) {
        Some(end) if end > 0 && window[end - 1] == b'\r' => Ok(Some(&window[..end - 1])),
        Some(_) => Err(BadChunk),
        None if window.len() > MAX_CHUNK_LINE + 1 => Err(BadChunk),
        None => Ok(None),
    }
}

/// A chunk-size line: hex digits (at most 15), then optionally `;` and extensions, which are
/// ignored (RFC 9112 §7.1.1).
fn chunk_size(line: &[u8]) -> Result<u64, BadChunk> {
    let end = line
        .iter()
        .position(|&b| b == b';' || b == b' ' || b == b'\t')
        .unwrap_or(line.len());
    let (hex, rest) = line.split_at(end);
    if hex.is_empty() || hex.len() > 15 {
        return Err(BadChunk);
    }
    // Only spaces and tabs may come before the `;` (RFC 9112 §7.1.1's BWS).
    let rest = &rest[rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()..];
    if !(rest.is_empty() || rest[0] == b';') {
        return Err(BadChunk);
    }
    hex.iter().try_fold(0u64, |n, &d| {
        let digit = (d as char).to_digit(16).ok_or(BadChunk)?;
        Ok(n << 4 | u64::from(digit))
    })
}

/// A status line for `status`, with its canonical reason phrase.
pub(crate) fn status_line(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends `name: value\r\n`.
pub(crate) fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `content-length: n\r\n`.
pub(crate) fn content_length(out: &mut Vec<u8>, n: usize) {
    header(
        out,
        b"content-length",
        itoa::Buffer::new().format(n).as_bytes(),
    );
}

/// The `Date` header value for now (RFC 9110 §6.6.1), formatted once per second per thread.
pub(crate) fn date(out: &mut Vec<u8>) {
    thread_local! {
        static CACHED: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|(at, text)| {
        if *at != second {
            text.copy_from_slice(httpdate::fmt_http_date(now).as_bytes());
            *at = second;
        }
        out.extend_from_slice(text);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing(lines: &[(&str, &str)], http10: bool) -> Result<Framing, BadFraming> {
        let mut seen = FramingHeaders::default();
        for (name, value) in lines {
            seen.see(name.as_bytes(), value.as_bytes());
        }
        seen.request(http10)
    }

    #[test]
    fn request_framing_is_strict() {
        assert_eq!(framing(&[], false), Ok(Framing::Length(0)));
        assert_eq!(
            framing(&[("Content-Length", " 12 ")], false),
            Ok(Framing::Length(12))
        );
        assert_eq!(
            framing(&[("content-length", "2"), ("Content-Length", "2")], false),
            Ok(Framing::Length(2))
        );
        assert_eq!(
            framing(&[("transfer-encoding", "Chunked")], false),
            Ok(Framing::Chunked)
        );
        for bad in ["2, 2", "+2", "0x2", "-1", "", "1 2", "9999999999999999999"] {
            assert_eq!(
                framing(&[("content-length", bad)], false),
                Err(BadFraming::ContentLength),
                "{bad:?}"
            );
        }
        assert_eq!(
            framing(&[("content-length", "2"), ("content-length", "3")], false),
            Err(BadFraming::ContentLength)
        );
        for te in [
            "xchunked",
            "chunked, identity",
            "identity",
            "gzip",
            "\"chunked\"",
            "chunked;q=1",
        ] {
            assert_eq!(
                framing(&[("transfer-encoding", te)], false),
                Err(BadFraming::TransferEncoding),
                "{te:?}"
            );
        }
        assert_eq!(
            framing(
                &[
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked")
                ],
                false
            ),
            Err(BadFraming::TransferEncoding)
        );
        assert_eq!(
            framing(&[("transfer-encoding", "chunked")], true),
            Err(BadFraming::TransferEncoding)
        );
        assert_eq!(
            framing(
                &[("transfer-encoding", "chunked"), ("content-length", "2")],
                false
            ),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            framing(
                &[("transfer-encoding", "gzip"), ("content-length", "2")],
                false
            ),
            Err(BadFraming::Both)
        );
    }

    fn decode(wire: &[u8], max: usize) -> Result<(Vec<u8>, ChunkProgress), BadChunk> {
        let mut out = Vec::new();
        let progress = Chunked::default().feed(wire, &mut out, max)?;
        Ok((out, progress))
    }

    #[test]
    fn chunked_bodies_decode_whole_or_in_pieces() {
        let wire = b"1\r\n{\r\n1;ext=1\r\n}\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        assert_eq!(
            decode(wire, 100).unwrap(),
            (b"{}".to_vec(), ChunkProgress::Done(wire.len() - 4))
        );
        // Byte by byte, as a slow caller would send it.
        let mut decoder = Chunked::default();
        let mut out = Vec::new();
        let mut used = 0;
        for end in 1..=wire.len() {
            match decoder.feed(&wire[used..end], &mut out, 100).unwrap() {
                ChunkProgress::NeedMore(n) => used += n,
                ChunkProgress::Done(n) => {
                    used += n;
                    break;
                }
            }
        }
        assert_eq!((out.as_slice(), used), (&b"{}"[..], wire.len() - 4));
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for wire in [
            &b"fffffffffffffffffff2\r\n{}\r\n0\r\n\r\n"[..],
            b"1\r\n{}\r\n0\r\n\r\n",
            b"g\r\n",
            b"\r\n",
            b"2\n{}\r\n",
            b"2 x\r\n{}\r\n",
        ] {
            assert_eq!(
                decode(wire, 100),
                Err(BadChunk),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    /// Found by fuzz `http1_framing`: a chunk line past the limit was accepted when it came
    /// whole and refused when it came in pieces.
    #[test]
    fn an_over_long_chunk_line_is_refused_whole_or_in_pieces() {
        let mut wire = b"1;".to_vec();
        wire.extend(std::iter::repeat_n(b'a', MAX_CHUNK_LINE));
        wire.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(decode(&wire, 100), Err(BadChunk));
        assert_eq!(decode(&wire[..MAX_CHUNK_LINE + 10], 100), Err(BadChunk));
        // Exactly at the limit is still a line.
        let mut wire = b"1;".to_vec();
        wire.extend(std::iter::repeat_n(b'a', MAX_CHUNK_LINE - 2));
        wire.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(decode(&wire, 100).unwrap().0, b"x");
        // Only spaces and tabs before the `;`.
        assert_eq!(decode(b"1 \t;e\r\nx\r\n0\r\n\r\n", 100).unwrap().0, b"x");
        assert_eq!(decode(b"0\t\r\r\n\r\n", 100), Err(BadChunk));
    }

    #[test]
    fn an_oversized_chunked_body_stops_past_the_limit() {
        let (out, _) = decode(b"a\r\n0123456789\r\n0\r\n\r\n", 4).unwrap();
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn connection_lists_are_matched_by_token() {
        assert!(lists(b"keep-alive, Close", b"close"));
        assert!(!lists(b"closed", b"close"));
    }
}
