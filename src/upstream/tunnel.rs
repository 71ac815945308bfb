//! A tunnel to KwikID through an HTTP CONNECT proxy (RFC 9110 §9.3.6): `CONNECT host:port`,
//! the proxy's `2xx`, then the socket is KwikID's and TLS starts inside it. The proxy sees
//! KwikID's name and encrypted bytes, never the token.
//!
//! hyper-util's `Tunnel` connector does the same, but reports every refusal other than 407
//! as "unsuccessful": the operator needs the proxy's status.

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zeroize::Zeroizing;

use super::cause::{self, Failure};
use crate::config::EgressProxy;

/// A proxy's answer to CONNECT is a status line and a few headers; more is not an answer.
const MAX_ANSWER: usize = 8 * 1024;
const MAX_HEADERS: usize = 32;

/// Asks the proxy on `stream` for a tunnel to `target` (`host:port`); the stream is the
/// tunnel once the proxy answers `2xx`.
///
/// # Errors
/// Kind `proxy` when the proxy refuses (its status named) or does not answer in HTTP;
/// `connect` when the connection to it breaks.
pub(super) async fn open(
    mut stream: TcpStream,
    proxy: &EgressProxy,
    target: &str,
) -> Result<TcpStream, Failure> {
    let broken = |e: std::io::Error| {
        Failure::connect(
            "connect",
            format!(
                "the connection to proxy {} broke during CONNECT: {}",
                proxy.address(),
                cause::socket(&e)
            ),
        )
    };
    // Holds the proxy's credentials: wiped once written.
    let mut head = Zeroizing::new(Vec::with_capacity(256));
    head.extend_from_slice(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n").as_bytes());
    if let Some(authorization) = &proxy.authorization {
        head.extend_from_slice(b"Proxy-Authorization: ");
        head.extend_from_slice(authorization.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    stream.write_all(&head).await.map_err(broken)?;
    drop(head);

    let mut answer = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(broken)?;
        if n == 0 {
            return Err(refused(
                proxy,
                "closed the connection without answering CONNECT",
            ));
        }
        answer.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        match parsed.parse(&answer) {
            Ok(httparse::Status::Complete(end)) => {
                let status = parsed.code.unwrap_or_default();
                return match StatusCode::from_u16(status) {
                    Ok(s) if s.is_success() && end == answer.len() => Ok(stream),
                    // TLS has not begun: the client speaks first, so these bytes are not KwikID's.
                    Ok(s) if s.is_success() => Err(refused(
                        proxy,
                        "sent bytes of its own after accepting CONNECT",
                    )),
                    Ok(s) => Err(refused(proxy, &refusal(s))),
                    Err(_) => Err(refused(proxy, "did not answer CONNECT in HTTP")),
                };
            }
            Ok(httparse::Status::Partial) if answer.len() < MAX_ANSWER => {}
            Ok(httparse::Status::Partial) => {
                return Err(refused(proxy, "answered CONNECT with an oversized head"));
            }
            Err(_) => return Err(refused(proxy, "did not answer CONNECT in HTTP")),
        }
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
