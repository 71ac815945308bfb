//! A tunnel to KwikID through an HTTP CONNECT proxy (RFC 9110 §9.3.6): `CONNECT host:port`,
//! the proxy's `2xx`, then the socket is KwikID's and TLS starts inside it. The proxy sees
//! KwikID's name and encrypted bytes, never the token.
//!
//! The CONNECT goes through hyper's own HTTP/1.1 client connection, driven in this task; the
//! socket is taken back from it once the proxy has said `2xx` (hyper's `into_parts`).
//! hyper-util's `Tunnel` connector does the same, but reports every refusal other than 407
//! as "unsuccessful": the operator needs the proxy's status.

use std::future::poll_fn;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::cause::{self, Failure};
use crate::config::EgressProxy;

/// A proxy's answer to CONNECT is a status line and a few headers; more is not an answer.
/// (hyper's smallest read buffer limit.)
const MAX_ANSWER: usize = 8 * 1024;

/// Asks the proxy on `stream` for a tunnel to `target` (`host:port`); the stream is the
/// tunnel once the proxy answers `2xx`.
///
/// # Errors
/// Kind `proxy` when the proxy refuses (its status named) or does not answer in HTTP;
/// `connect` when the connection to it breaks.
pub(super) async fn open(
    stream: TcpStream,
    proxy: &EgressProxy,
    target: &str,
) -> Result<TcpStream, Failure> {
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(target)
        .header(header::HOST, target);
    if let Some(authorization) = &proxy.authorization {
        request = request.header(header::PROXY_AUTHORIZATION, authorization.clone());
    }
    let request = request.body(Empty::<Bytes>::new()).map_err(|_| {
        refused(
            proxy,
            "cannot be asked for this host (not a valid authority)",
        )
    })?;
    let (mut sender, mut conn) = http1::Builder::new()
        .max_buf_size(MAX_ANSWER)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(proxy, &e))?;

    // The connection is driven here, beside the request, until the proxy has answered; a
    // `2xx` to CONNECT ends hyper's part and leaves the socket to us.
    let answer = sender.send_request(request);
    tokio::pin!(answer);
    let (answer, ended) = tokio::select! {
        biased;
        answer = &mut answer => (answer, false),
        ended = poll_fn(|cx| conn.poll_without_shutdown(cx)) => {
            ended.map_err(|e| failed(proxy, &e))?;
            (answer.await, true)
        }
    };
    let status = answer.map_err(|e| failed(proxy, &e))?.status();
    if !status.is_success() {
        return Err(refused(proxy, &refusal(status)));
    }
    if !ended {
        poll_fn(|cx| conn.poll_without_shutdown(cx))
            .await
            .map_err(|e| failed(proxy, &e))?;
    }
    let parts = conn.into_parts();
    if !parts.read_buf.is_empty() {
        // TLS has not begun: the client speaks first, so these bytes are not KwikID's.
        return Err(refused(
            proxy,
            "sent bytes of its own after accepting CONNECT",
        ));
    }
    Ok(parts.io.into_inner())
}

/// What a hyper error during CONNECT means for the operator.
fn failed(proxy: &EgressProxy, e: &hyper::Error) -> Failure {
    let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
    if let Some(io) = io {
        return Failure::connect(
            "connect",
            format!(
                "the connection to proxy {} broke during CONNECT: {}",
                proxy.address(),
                cause::socket(io)
            ),
        );
    }
    if e.is_parse_too_large() {
        refused(proxy, "answered CONNECT with an oversized head")
    } else if e.is_parse() || e.is_parse_status() {
        refused(proxy, "did not answer CONNECT in HTTP")
    } else {
        refused(proxy, "closed the connection without answering CONNECT")
    }
}

/// `refused CONNECT: 407 Proxy Authentication Required (check upstream.proxy_auth_file)`.
fn refusal(status: StatusCode) -> String {
    let hint = match status {
        StatusCode::PROXY_AUTHENTICATION_REQUIRED => " (check the proxy credentials)",
        StatusCode::FORBIDDEN => " (does its policy allow KwikID's host and port?)",
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => {
            " (the proxy could not reach KwikID)"
        }
        _ => "",
    };
    format!(
        "refused CONNECT: {} {}{hint}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
}

fn refused(proxy: &EgressProxy, what: &str) -> Failure {
    Failure::connect("proxy", format!("proxy {} {what}", proxy.address()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_status_and_what_to_check() {
        assert_eq!(
            refusal(StatusCode::PROXY_AUTHENTICATION_REQUIRED),
            "refused CONNECT: 407 Proxy Authentication Required (check the proxy credentials)"
        );
        assert_eq!(
            refusal(StatusCode::FORBIDDEN),
            "refused CONNECT: 403 Forbidden (does its policy allow KwikID's host and port?)"
        );
    }
}
