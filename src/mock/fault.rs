//! How the mock misbehaves, and the writer that turns its answers into bytes that are not HTTP.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How the mock misbehaves. Over HTTP/2 a fault that breaks a connection (reset, garbage)
/// breaks every stream on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Fault {
    #[default]
    None,
    /// Answer normally, after this long.
    Delay(Duration),
    /// Close the connection without answering (with a TCP reset where the socket allows).
    Reset,
    /// `500 {"error": "Internal Server Error"}`.
    ServerError,
    /// `429` with this `Retry-After`, as an account over its quota would get.
    TooManyRequests { retry_after_secs: u64 },
    /// Bytes that are not HTTP in place of the answer and of everything written after it.
    Garbage,
}

impl std::str::FromStr for Fault {
    type Err = String;

    /// `none`, `delay=250ms`, `reset`, `500`, `429` or `429=7`, `garbage`.
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "none" => Fault::None,
            "reset" => Fault::Reset,
            "500" => Fault::ServerError,
            "429" => Fault::TooManyRequests {
                retry_after_secs: 1,
            },
            "garbage" => Fault::Garbage,
            _ => {
                if let Some(d) = s.strip_prefix("delay=") {
                    Fault::Delay(humantime::parse_duration(d).map_err(|e| format!("delay: {e}"))?)
                } else if let Some(n) = s.strip_prefix("429=") {
                    Fault::TooManyRequests {
                        retry_after_secs: n
                            .parse()
                            .map_err(|_| "429=N takes whole seconds".to_owned())?,
                    }
                } else {
                    return Err(
                        "expected none, delay=DURATION, reset, 500, 429[=SECONDS] or garbage"
                            .into(),
                    );
                }
            }
        })
    }
}

const GARBAGE: &[u8] = b"\x16\x03 this is not HTTP \x00\xff\r\n\r\n";

/// Passes bytes through, except that once `garbage` is set every write is replaced by bytes
/// that are not HTTP (nor HTTP/2 frames).
pub(super) struct FaultyIo<S> {
    inner: S,
    garbage: Arc<AtomicBool>,
}

impl<S> FaultyIo<S> {
    pub(super) fn new(inner: S, garbage: Arc<AtomicBool>) -> Self {
        Self { inner, garbage }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FaultyIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FaultyIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.garbage.load(Ordering::Relaxed) {
            return match Pin::new(&mut self.inner).poll_write(cx, GARBAGE) {
                Poll::Ready(Ok(_)) => Poll::Ready(Ok(buf.len())),
                other => other,
            };
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
