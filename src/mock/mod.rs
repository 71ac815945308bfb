//! `kwikid-mock`: a stand-in for KwikID's DigiLocker init endpoint, over a real socket, HTTPS
//! (throwaway or given certificate) or plain HTTP.
//!
//! It answers as KwikID documents (200 with a `redirection_url` of KwikID's shape, 400 without
//! `Authorization`, 401 for another token) and can be told to misbehave: delay, reset the
//! connection, answer 500 or 429, or answer bytes that are not HTTP. It records every request
//! it receives, so tests can assert what KwikID would have seen.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::rules::route::DIGILOCKER_INIT;

/// How the mock misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
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
    /// Bytes that are not HTTP, then close.
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

/// A request as the mock received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    /// Path and query, byte for byte.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

struct State {
    token: String,
    fault: Mutex<Fault>,
    received: Mutex<Vec<Received>>,
    record: bool,
    served: AtomicU64,
}

/// A running mock. Dropping it (or [`Mock::stop`]) closes the listener and every connection.
pub struct Mock {
    pub addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl Mock {
    /// Serves on `listener`: HTTPS when `tls` is given, else plain HTTP. `record` keeps every
    /// request for [`Mock::received`] (tests); benchmarks leave it off.
    pub fn start(
        listener: TcpListener,
        token: &str,
        tls: Option<rustls::ServerConfig>,
        record: bool,
    ) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            token: token.to_owned(),
            fault: Mutex::new(Fault::None),
            received: Mutex::new(Vec::new()),
            record,
            served: AtomicU64::new(0),
        });
        let acceptor = tls.map(|c| TlsAcceptor::from(Arc::new(c)));
        let accept = tokio::spawn(accept_loop(listener, acceptor, state.clone()));
        Ok(Self {
            addr,
            state,
            accept,
        })
    }

    pub fn set_fault(&self, fault: Fault) {
        *self.state.fault.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    /// Every request received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.state
            .received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many requests reached the handler (faulty ones included).
    pub fn served(&self) -> u64 {
        self.state.served.load(Ordering::Relaxed)
    }

    /// Stops accepting and closes every open connection.
    pub async fn stop(self) {
        self.accept.abort();
        let _ = (&mut { self }.accept).await;
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, state: Arc<State>) {
    // Connections live in the set, so aborting this task closes them all.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                connections.spawn(connection(stream, tls.clone(), state.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn connection(stream: TcpStream, tls: Option<TlsAcceptor>, state: Arc<State>) {
    let _ = stream.set_nodelay(true);
    if *state.fault.lock().unwrap_or_else(|e| e.into_inner()) == Fault::Reset {
        let _ = stream.set_zero_linger();
    }
    match tls {
        Some(acceptor) => {
            if let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
            {
                serve_http(stream, state).await;
            }
        }
        None => serve_http(stream, state).await,
    }
}

async fn serve_http<S>(io: S, state: Arc<State>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let garbage = Arc::new(AtomicBool::new(false));
    let io = FaultyIo {
        inner: io,
        garbage: garbage.clone(),
    };
    let service = service_fn(move |req| answer(req, state.clone(), garbage.clone()));
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(io), service)
        .await;
}

#[derive(Debug)]
struct ResetRequested;

impl std::fmt::Display for ResetRequested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fault: reset")
    }
}

impl std::error::Error for ResetRequested {}

async fn answer(
    req: Request<Incoming>,
    state: Arc<State>,
    garbage: Arc<AtomicBool>,
) -> Result<Response<Full<Bytes>>, ResetRequested> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    state.served.fetch_add(1, Ordering::Relaxed);
    let fault = *state.fault.lock().unwrap_or_else(|e| e.into_inner());
    if state.record {
        state
            .received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Received {
                method: parts.method.clone(),
                target: parts
                    .uri
                    .path_and_query()
                    .map_or_else(String::new, |pq| pq.to_string()),
                headers: parts.headers.clone(),
                body,
            });
    }
    match fault {
        Fault::Delay(d) => tokio::time::sleep(d).await,
        Fault::Reset => return Err(ResetRequested),
        Fault::Garbage => garbage.store(true, Ordering::Relaxed),
        _ => {}
    }
    if parts.method != Method::POST || parts.uri.path() != DIGILOCKER_INIT {
        return Ok(json(
            StatusCode::NOT_FOUND,
            r#"{"error": "Not Found"}"#.into(),
        ));
    }
    let authorization = parts.headers.get(header::AUTHORIZATION);
    let expected = format!("Bearer {}", state.token);
    Ok(match (fault, authorization) {
        (Fault::ServerError, _) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error": "Internal Server Error"}"#.into(),
        ),
        (Fault::TooManyRequests { retry_after_secs }, _) => {
            let mut r = json(
                StatusCode::TOO_MANY_REQUESTS,
                r#"{"error": "Too Many Requests"}"#.into(),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            r
        }
        (_, None) => json(
            StatusCode::BAD_REQUEST,
            r#"{"error": "Authorization token is required."}"#.into(),
        ),
        (_, Some(v)) if v.as_bytes() != expected.as_bytes() => json(
            StatusCode::UNAUTHORIZED,
            r#"{"detail": {}, "message": "Invalid or expired token."}"#.into(),
        ),
        (_, Some(_)) => {
            let host = parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("verify.test.getkwikid.com");
            let n = state.served.load(Ordering::Relaxed);
            json(
                StatusCode::OK,
                serde_json::json!({ "redirection_url": redirection_url(host, &expected, n) })
                    .to_string(),
            )
        }
    })
}

/// A URL of KwikID's shape: base64 of DigiLocker's authorize URL, a client id, and the base64
/// of `Bearer <token>`.
pub fn redirection_url(host: &str, bearer: &str, n: u64) -> String {
    let digilocker = format!(
        "https://api.digitallocker.gov.in/public/oauth2/1/authorize?client_id=MOCK{n:06}&state=basic&dl_flow=signup&response_type=code&redirect_uri=https://{host}/verification/v2/digilocker/callback"
    );
    format!(
        "https://{host}/verification/v2/digilocker/redirect?redirection_url={}&client_id={}&authorization={}",
        B64.encode(digilocker),
        B64.encode("kwikid-mock"),
        B64.encode(bearer)
    )
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Passes bytes through, except that once `garbage` is set every write is replaced by bytes
/// that are not HTTP.
struct FaultyIo<S> {
    inner: S,
    garbage: Arc<AtomicBool>,
}

const GARBAGE: &[u8] = b"\x16\x03 this is not HTTP \x00\xff\r\n\r\n";

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
