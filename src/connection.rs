//! One caller connection, HTTP/1.1: request heads and bodies in, answers out, one at a time
//! and in order, until the caller closes, times out, or the gateway drains.
//!
//! A request is parsed in place in the connection's buffer; the pipeline in [`crate::stack`]
//! reads it through [`Inbox`] and leaves its answer, head and body, in one buffer that goes
//! out in one write. Whatever might make two parsers disagree about where a request ends
//! (both `Content-Length` and `Transfer-Encoding`, lengths that differ, unknown codings,
//! folded lines) is answered with 400 and the connection is closed.

use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::futures::OwnedNotified;
use tokio::time::{Instant, Sleep};

use crate::error::Reject;
use crate::server::Gateway;
use crate::stack::Peer;
use crate::wire::{self, ChunkProgress, Chunked, Field, Framing, FramingHeaders};

/// A DigiLocker init needs a few hundred bytes of head. Past 64 headers or 16 KiB of head
/// (HAProxy's default), the caller gets 431 and the connection is closed.
const MAX_HEADERS: usize = 64;
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Read buffers start this small: a whole request usually fits, and an idle connection
/// holds none.
const FIRST_READ: usize = 1024;

/// Bytes a caller may send ahead (pipelined requests) while its request is at KwikID.
const MAX_READ_AHEAD: usize = 64 * 1024;

/// Room for a typical whole answer, made once instead of grown piece by piece; kept between
/// requests.
const ANSWER_BYTES: usize = 1024;

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Serves HTTP/1.1 on one caller connection until it ends.
pub(crate) async fn serve<S>(stream: S, peer: Peer, gateway: Arc<Gateway>, drained: OwnedNotified)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut drained = std::pin::pin!(drained);
    drained.as_mut().enable();
    let header_read_timeout = gateway.config.listen.header_read_timeout;
    let mut conn = Caller {
        io: CallerIo {
            stream,
            read_ahead: Vec::new(),
        },
        inbox: Inbox::default(),
        out: Vec::new(),
        head_timer: Box::pin(tokio::time::sleep(header_read_timeout)),
    };
    loop {
        // A connection accepted just before the drain began may have missed its wake-up.
        if conn.inbox.buf.is_empty() && !gateway.ready.load(Ordering::Acquire) {
            return;
        }
        match conn.read_head(header_read_timeout, drained.as_mut()).await {
            Ok(()) => {}
            Err(HeadError::Gone) => return,
            Err(HeadError::Refused(reject)) => {
                let finished = gateway.refuse_unreadable(&mut conn.out, &peer, reject);
                let _ = conn.flush().await;
                finished.record();
                return;
            }
        }
        conn.out.reserve(ANSWER_BYTES);
        // Boxed: the request's future is large and lives only while a request does; inline,
        // every idle keep-alive connection would hold room for it.
        let Some(finished) = Box::pin(gateway.handle(&mut conn, &peer)).await else {
            return; // the caller left before its answer
        };
        let sent = conn.flush().await;
        finished.record();
        if sent.is_err() || conn.inbox.must_close {
            return;
        }
        conn.inbox.next_request(&mut conn.io.read_ahead);
    }
}

/// A caller connection while it is served.
pub(crate) struct Caller<S> {
    pub(crate) io: CallerIo<S>,
    pub(crate) inbox: Inbox,
    /// The answer being written: head and body, sent with one write.
    pub(crate) out: Vec<u8>,
    /// Armed once per connection and pushed back only when it fires early, so waiting for a
    /// head does not register a new timer per request.
    head_timer: Pin<Box<Sleep>>,
}

/// The caller's socket, for what the pipeline does with it directly.
pub(crate) struct CallerIo<S> {
    stream: S,
    /// Bytes the caller sent while its request was being forwarded.
    read_ahead: Vec<u8>,
}

/// Why no request head came.
enum HeadError {
    /// Closed, broken, timed out while idle, or the gateway is draining: close quietly.
    Gone,
    /// Not a request the gateway will read: answer and close.
    Refused(Reject),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Caller<S> {
    /// Waits for a whole request head, within `timeout` of starting to wait for it.
    async fn read_head(
        &mut self,
        timeout: Duration,
        mut drained: Pin<&mut OwnedNotified>,
    ) -> Result<(), HeadError> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.inbox.buf.is_empty() {
                match self.inbox.parse_head() {
                    Ok(true) => return Ok(()),
                    Ok(false) if self.inbox.buf.len() >= MAX_HEAD_BYTES => {
                        return Err(HeadError::Refused(Reject::HeadTooLarge));
                    }
                    Ok(false) => {}
                    Err(reject) => return Err(HeadError::Refused(reject)),
                }
            }
            let idle = self.inbox.buf.is_empty();
            reserve(&mut self.inbox.buf);
            tokio::select! {
                biased;
                read = self.io.stream.read_buf(&mut self.inbox.buf) => match read {
                    Ok(0) | Err(_) => return Err(HeadError::Gone),
                    Ok(_) => {}
                },
                () = self.head_timer.as_mut() => {
                    if Instant::now() < deadline {
                        self.head_timer.as_mut().reset(deadline);
                    } else if idle {
                        return Err(HeadError::Gone);
                    } else {
                        return Err(HeadError::Refused(Reject::HeadTimeout));
                    }
                }
                () = drained.as_mut(), if idle => return Err(HeadError::Gone),
            }
        }
    }

    /// Reads the request's body, refusing it past `max` bytes (before reading a byte when
    /// its length is announced) and when it has not arrived within `deadline`.
    pub(crate) async fn read_body(&mut self, max: usize, deadline: Duration) -> Result<(), Reject> {
        if let Framing::Length(n) = self.inbox.framing()
            && n > max as u64
        {
            return Err(Reject::BodyTooLarge);
        }
        if !self.inbox.body_arrived(max)? {
            if self.inbox.head.expects_continue {
                self.io
                    .stream
                    .write_all(CONTINUE)
                    .await
                    .map_err(|_| Reject::BodyUnreadable)?;
                self.io
                    .stream
                    .flush()
                    .await
                    .map_err(|_| Reject::BodyUnreadable)?;
            }
            let arriving = async {
                loop {
                    reserve(&mut self.inbox.buf);
                    match self.io.stream.read_buf(&mut self.inbox.buf).await {
                        Ok(0) | Err(_) => return Err(Reject::BodyUnreadable),
                        Ok(_) if self.inbox.body_arrived(max)? => return Ok(()),
                        Ok(_) => {}
                    }
                }
            };
            tokio::time::timeout(deadline, arriving)
                .await
                .unwrap_or(Err(Reject::BodyTimeout))
                .inspect_err(|_| self.inbox.must_close = true)?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        let written = self.io.stream.write_all(&self.out).await;
        self.out.clear();
        written?;
        self.io.stream.flush().await
    }
}

impl<S: AsyncRead + Unpin> CallerIo<S> {
    /// Resolves when the caller has closed the connection or it broke. What the caller sends
    /// meanwhile (a pipelined request) is kept for after the answer.
    pub(crate) async fn closed(&mut self) {
        while self.read_ahead.len() < MAX_READ_AHEAD {
            reserve(&mut self.read_ahead);
            match self.stream.read_buf(&mut self.read_ahead).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        std::future::pending().await
    }
}

/// Room for the next read: [`FIRST_READ`] bytes at first, then doubling.
fn reserve(buf: &mut Vec<u8>) {
    if buf.capacity() - buf.len() < FIRST_READ / 2 {
        buf.reserve(buf.len().max(FIRST_READ));
    }
}

/// The request being served, parsed in place: its head, and its body once read.
#[derive(Default)]
pub(crate) struct Inbox {
    buf: Vec<u8>,
    head: Head,
    fields: Vec<Field>,
    /// A chunked body, decoded; a `Content-Length` body stays in `buf`.
    decoded: Vec<u8>,
    chunked: Chunked,
    /// Bytes of `buf`, from the start of the head, that belong to this request so far.
    used: usize,
    body_done: bool,
    /// The connection ends after this request's answer.
    pub(crate) must_close: bool,
}

#[derive(Debug, Default)]
struct Head {
    len: usize,
    method: (u32, u32),
    target: (u32, u32),
    framing: Framing,
    keep_alive: bool,
    expects_continue: bool,
    http10: bool,
}

impl Inbox {
    /// Parses the head at the start of `buf`; `Ok(false)` until it is complete.
    fn parse_head(&mut self) -> Result<bool, Reject> {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut []);
        let len = match request.parse_with_uninit_headers(&self.buf, &mut slots) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(false),
            Err(httparse::Error::TooManyHeaders) => return Err(Reject::HeadTooLarge),
            Err(_) => return Err(Reject::BadRequest),
        };
        let (Some(method), Some(target), Some(version)) =
            (request.method, request.path, request.version)
        else {
            return Err(Reject::BadRequest);
        };
        if !target.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Reject::BadRequest);
        }
        let http10 = version == 0;
        let mut framing = FramingHeaders::default();
        let (mut close, mut keep_alive, mut expects_continue) = (false, false, false);
        self.fields.clear();
        for header in request.headers.iter() {
            let (name, value) = (header.name.as_bytes(), header.value);
            framing.see(name, value);
            if name.eq_ignore_ascii_case(b"connection") {
                close |= wire::lists(value, b"close");
                keep_alive |= wire::lists(value, b"keep-alive");
            } else if name.eq_ignore_ascii_case(b"expect") {
                expects_continue = wire::trim(value).eq_ignore_ascii_case(b"100-continue");
            }
            self.fields.push(Field::locate(&self.buf, header));
        }
        // 400 rather than 501 for an unknown coding too: nothing after the head is read.
        let (framing, both) = (
            framing.request(http10).map_err(|_| Reject::BadRequest)?,
            framing.both(),
        );
        self.must_close |= both;
        self.head = Head {
            len,
            method: wire::span_of(&self.buf, method.as_bytes()),
            target: wire::span_of(&self.buf, target.as_bytes()),
            framing,
            keep_alive: !close && (!http10 || keep_alive),
            expects_continue: expects_continue && !http10,
            http10,
        };
        self.used = len;
        self.body_done = false;
        self.decoded.clear();
        self.chunked = Chunked::default();
        Ok(true)
    }

    /// Whether the whole body is in; refuses it once it is past `max`.
    fn body_arrived(&mut self, max: usize) -> Result<bool, Reject> {
        if self.body_done {
            return Ok(true);
        }
        match self.framing() {
            Framing::Length(n) => {
                let end = self.head.len + n as usize;
                if self.buf.len() >= end {
                    self.used = end;
                    self.body_done = true;
                }
            }
            Framing::Chunked => {
                // Chunk-size lines, extensions and trailers are not data, so the data limit
                // does not bound them: the bytes on the wire are bounded too.
                if self.buf.len() - self.head.len > max.saturating_mul(2) + MAX_HEAD_BYTES {
                    return Err(Reject::BodyTooLarge);
                }
                let progress = self
                    .chunked
                    .feed(&self.buf[self.used..], &mut self.decoded, max)
                    .map_err(|_| Reject::BodyUnreadable)?;
                if self.decoded.len() > max {
                    return Err(Reject::BodyTooLarge);
                }
                match progress {
                    ChunkProgress::NeedMore(used) => self.used += used,
                    ChunkProgress::Done(used) => {
                        self.used += used;
                        self.body_done = true;
                    }
                }
            }
            Framing::UntilClose => return Err(Reject::BadRequest),
        }
        Ok(self.body_done)
    }

    fn framing(&self) -> Framing {
        self.head.framing
    }

    /// Forgets the answered request, keeping what follows it (a pipelined request). When
    /// nothing follows, the buffers are freed: an idle connection holds none.
    fn next_request(&mut self, read_ahead: &mut Vec<u8>) {
        self.buf.drain(..self.used.min(self.buf.len()));
        self.buf.append(read_ahead);
        self.used = 0;
        if self.buf.is_empty() {
            self.buf = Vec::new();
        }
        if self.decoded.capacity() > 0 {
            self.decoded = Vec::new();
        }
    }

    /// Whether the connection can carry another request after this one's answer: the caller
    /// asked for keep-alive and the body was read, or skipping it is safe because it has
    /// fully arrived.
    pub(crate) fn can_continue(&mut self) -> bool {
        if self.must_close || !self.head.keep_alive {
            return false;
        }
        if !self.body_done {
            match self.framing() {
                Framing::Length(n) if self.buf.len() >= self.head.len + n as usize => {
                    self.used = self.head.len + n as usize;
                }
                _ => return false,
            }
        }
        true
    }

    pub(crate) fn is_http10(&self) -> bool {
        self.head.http10
    }

    pub(crate) fn method(&self) -> &str {
        let (start, end) = self.head.method;
        std::str::from_utf8(&self.buf[start as usize..end as usize]).unwrap_or_default()
    }

    /// The request target as sent: checked to be visible ASCII.
    pub(crate) fn target(&self) -> &str {
        let (start, end) = self.head.target;
        std::str::from_utf8(&self.buf[start as usize..end as usize]).unwrap_or_default()
    }

    /// Every header line, in order, names as the caller wrote them.
    pub(crate) fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
        self.fields
            .iter()
            .map(|f| (f.name(&self.buf), f.value(&self.buf)))
    }

    /// The first value of header `name` (lowercase).
    pub(crate) fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The body, once [`Caller::read_body`] has read it.
    pub(crate) fn body(&self) -> &[u8] {
        match self.framing() {
            Framing::Chunked => &self.decoded,
            Framing::Length(n) if self.body_done => {
                &self.buf[self.head.len..self.head.len + n as usize]
            }
            _ => &[],
        }
    }
}
