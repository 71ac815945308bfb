//! The access log: one JSON line per request on stdout, written by one thread so the request
//! path never waits for the terminal.
//!
//! The scrubbing lives here and only here. The line is built from named fields — never from a
//! request, a header map or a response body — so the token and `redirection_url` have no way
//! in, and any caller-chosen field that contains the token in a revealing form is replaced.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::secret::LoadedToken;

/// Caller-chosen text is cut to this many characters.
const MAX_FIELD_CHARS: usize = 128;

/// One request, as the access log records it.
#[derive(Debug)]
pub struct AccessRecord<'a> {
    pub request_id: &'a str,
    pub caller: &'a str,
    pub peer: std::net::SocketAddr,
    pub method: &'a str,
    /// Without the query string.
    pub path: &'a str,
    pub status: u16,
    pub upstream_status: Option<u16>,
    pub outcome: &'a str,
    pub duration_ms: f64,
    pub upstream_ms: Option<f64>,
    pub bytes_in: usize,
    pub bytes_out: usize,
    pub handshake_id: Option<&'a str>,
}

impl Default for AccessRecord<'_> {
    fn default() -> Self {
        Self {
            request_id: "",
            caller: "",
            peer: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            method: "",
            path: "",
            status: 0,
            upstream_status: None,
            outcome: "",
            duration_ms: 0.0,
            upstream_ms: None,
            bytes_in: 0,
            bytes_out: 0,
            handshake_id: None,
        }
    }
}

#[derive(Serialize)]
struct Line<'a> {
    #[serde(serialize_with = "as_display")]
    ts: humantime::Rfc3339Timestamp,
    request_id: &'a str,
    caller: &'a str,
    peer: SocketAddr,
    method: &'a str,
    path: &'a str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_status: Option<u16>,
    outcome: &'a str,
    duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_ms: Option<f64>,
    bytes_in: usize,
    bytes_out: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    handshake_id: Option<&'a str>,
    token_id: &'a str,
}

fn as_display<S: serde::Serializer>(
    value: &impl std::fmt::Display,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

/// Cuts caller-chosen text and refuses it whole if it reveals the token.
fn scrub<'a>(text: &'a str, token: &LoadedToken) -> &'a str {
    let cut = text
        .char_indices()
        .nth(MAX_FIELD_CHARS)
        .map_or(text, |(i, _)| &text[..i]);
    if token.is_revealed_in(text.as_bytes()) {
        "[REDACTED]"
    } else {
        cut
    }
}

fn round3(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

/// Renders one record as a JSON line ending in `\n`. serde_json escapes quotes, newlines and
/// control characters, so one request is always exactly one line.
pub fn render(record: &AccessRecord<'_>, token: &LoadedToken) -> Vec<u8> {
    let mut out = Vec::with_capacity(384);
    render_into(&mut out, record, token);
    out
}

/// [`render`], appending to `out`.
fn render_into(out: &mut Vec<u8>, record: &AccessRecord<'_>, token: &LoadedToken) {
    let line = Line {
        ts: humantime::format_rfc3339_millis(SystemTime::now()),
        request_id: scrub(record.request_id, token),
        caller: scrub(record.caller, token),
        peer: record.peer,
        method: scrub(record.method, token),
        path: scrub(record.path, token),
        status: record.status,
        upstream_status: record.upstream_status,
        outcome: record.outcome,
        duration_ms: round3(record.duration_ms),
        upstream_ms: record.upstream_ms.map(round3),
        bytes_in: record.bytes_in,
        bytes_out: record.bytes_out,
        handshake_id: record.handshake_id.map(|h| scrub(h, token)),
        token_id: &token.fingerprint,
    };
    let start = out.len();
    // A struct of strings and numbers always serializes; never leave half a line behind.
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    } else {
        out.truncate(start);
    }
}

/// Past this many bytes waiting, the writer is woken at once.
const WAKE_AT: usize = 32 * 1024;
/// Otherwise waiting lines are written at most this late.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// Lines waiting for the writer thread.
#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    closed: bool,
}

/// The access log. Requests append their line to a shared buffer; one writer thread writes
/// it out in batches, so a busy gateway pays one `write` per batch instead of one per
/// request (or a thread wake-up per request), and never waits for the terminal. Nothing is
/// dropped: the buffer grows if the output stalls.
pub struct AccessLog {
    pending: Arc<(Mutex<Pending>, Condvar)>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl AccessLog {
    /// Writes to stdout.
    pub fn stdout() -> Self {
        Self::to_writer(std::io::stdout())
    }

    pub fn to_writer(mut output: impl Write + Send + 'static) -> Self {
        let pending = Arc::new((Mutex::new(Pending::default()), Condvar::new()));
        let shared = pending.clone();
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let (lock, wake) = &*shared;
                let mut batch = Vec::with_capacity(2 * WAKE_AT);
                loop {
                    let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
                    while p.lines.is_empty() && !p.closed {
                        p = wake.wait(p).unwrap_or_else(|e| e.into_inner());
                    }
                    if p.lines.len() < WAKE_AT && !p.closed {
                        p = wake
                            .wait_timeout(p, FLUSH_EVERY)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    std::mem::swap(&mut p.lines, &mut batch);
                    let done = p.closed && batch.is_empty();
                    drop(p);
                    if done {
                        break;
                    }
                    let _ = output.write_all(&batch);
                    let _ = output.flush();
                    batch.clear();
                }
            })
            .ok();
        Self {
            pending,
            writer: Mutex::new(writer),
        }
    }

    pub fn write(&self, record: &AccessRecord<'_>, token: &LoadedToken) {
        let (lock, wake) = &*self.pending;
        let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
        if p.closed {
            return;
        }
        let was_empty = p.lines.is_empty();
        render_into(&mut p.lines, record, token);
        if was_empty || p.lines.len() >= WAKE_AT {
            wake.notify_one();
        }
    }

    /// Writes out every waiting line and stops the writer; later records are dropped.
    pub fn close(&self) {
        let (lock, wake) = &*self.pending;
        lock.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        wake.notify_one();
        if let Ok(mut writer) = self.writer.lock()
            && let Some(handle) = writer.take()
        {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Token;

    fn token() -> LoadedToken {
        LoadedToken::new(&Token::new("tok-SECRET-42".into()).unwrap())
    }

    #[test]
    fn hostile_values_stay_on_one_line() {
        let t = token();
        let record = AccessRecord {
            request_id: "id",
            caller: "a\"b\nc",
            handshake_id: Some("x\r\n{\"status\":1}\u{0}"),
            path: "/p",
            method: "POST",
            outcome: "forwarded",
            ..Default::default()
        };
        let line = render(&record, &t);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(*line.last().unwrap(), b'\n');
        let json: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(json["caller"], "a\"b\nc");
        assert_eq!(json["token_id"], t.fingerprint.as_str());
    }

    #[test]
    fn fields_that_reveal_the_token_are_redacted() {
        let t = token();
        let record = AccessRecord {
            request_id: "tok-SECRET-42",
            caller: "QmVhcmVyIHRvay1TRUNSRVQtNDI",
            handshake_id: Some("see tok-SECRET-42"),
            ..Default::default()
        };
        let line = String::from_utf8(render(&record, &t)).unwrap();
        assert!(!line.contains("tok-SECRET-42"), "{line}");
        assert!(!line.contains("QmVhcmVyIHRvay1TRUNSRVQtNDI"), "{line}");
        assert_eq!(line.matches("[REDACTED]").count(), 3);
    }

    #[test]
    fn long_handshake_ids_are_cut() {
        let long = "h".repeat(1000);
        let record = AccessRecord {
            handshake_id: Some(&long),
            ..Default::default()
        };
        let json: serde_json::Value = serde_json::from_slice(&render(&record, &token())).unwrap();
        assert_eq!(
            json["handshake_id"].as_str().unwrap().len(),
            MAX_FIELD_CHARS
        );
    }
}
