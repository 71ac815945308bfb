//! What KwikID answers, as it documents it: 200 with a `redirection_url` of KwikID's shape for
//! the right token, 400 without `Authorization`, 401 with another token, 404 elsewhere; and
//! what the fault in force makes of that answer.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::connection::Conn;
use super::{DIGILOCKER_INIT, Fault};

pub(super) async fn answer(
    req: Request<Incoming>,
    conn: Arc<Conn>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let n = conn.state.arrived(&parts, body, conn.number);
    let fault = conn.state.fault();
    match fault {
        Fault::Delay(d) => tokio::time::sleep(d).await,
        Fault::Reset => {
            // The connection drops this future with itself.
            conn.reset.notify_one();
            return std::future::pending().await;
        }
        Fault::Garbage => conn.garbage.store(true, Ordering::Relaxed),
        _ => {}
    }
    if parts.method != Method::POST || parts.uri.path() != DIGILOCKER_INIT {
        return Ok(json(
            StatusCode::NOT_FOUND,
            r#"{"error": "Not Found"}"#.into(),
        ));
    }
    let authorization = parts.headers.get(header::AUTHORIZATION);
    let expected = format!("Bearer {}", conn.state.token);
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
            // `Host` over HTTP/1.1, `:authority` over HTTP/2.
            let host = parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| parts.uri.authority().map(|a| a.as_str()))
                .unwrap_or("verify.test.getkwikid.com");
            json(
                StatusCode::OK,
                serde_json::json!({ "redirection_url": redirection_url(host, &expected, n) })
                    .to_string(),
            )
        }
    })
}

/// A URL of KwikID's shape for the `n`th request: base64 of DigiLocker's authorize URL, a
/// client id, and the base64 of `Bearer <token>`.
pub(crate) fn redirection_url(host: &str, bearer: &str, n: u64) -> String {
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
