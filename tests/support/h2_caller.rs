//! An HTTP/2 caller: h2c with prior knowledge, or over any stream (TLS with ALPN `h2`).

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::Answer;

/// An HTTP/2 connection to the gateway: the handle and the task driving the connection,
/// which ends `Ok` when the gateway closes the connection cleanly (GOAWAY, then EOF).
pub struct H2 {
    pub sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    pub driver: tokio::task::JoinHandle<Result<(), String>>,
}

impl H2 {
    /// h2c with prior knowledge (RFC 9113 §3.3): the connection preface, no upgrade.
    pub async fn plain(addr: std::net::SocketAddr) -> Self {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        Self::over(TokioIo::new(tcp)).await
    }

    pub async fn over<I>(io: I) -> Self
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("an HTTP/2 handshake");
        let driver = tokio::spawn(async move { connection.await.map_err(|e| e.to_string()) });
        Self { sender, driver }
    }

    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Answer {
        let request = for_h2(request);
        let response =
            tokio::time::timeout(Duration::from_secs(30), self.sender.send_request(request))
                .await
                .expect("an answer within 30 s")
                .expect("an HTTP/2 answer");
        assert_eq!(response.version(), Version::HTTP_2);
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }
}

/// An HTTP/1.1-style request made into an HTTP/2 one: absolute URI (`:scheme`,
/// `:authority`) and no `Host`, which HTTP/2 replaces.
pub fn for_h2(mut request: Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    *request.uri_mut() = format!("http://gateway.internal{path}").parse().unwrap();
    *request.version_mut() = Version::HTTP_2;
    request.headers_mut().remove("host");
    request
}
