//! Why a connection to KwikID failed, in an operator's words: rustls's reason for refusing a
//! certificate, the resolver's answer, the socket's error.
//!
//! The words are built from error *kinds* and from what the server's certificate names, never
//! from anything the gateway sends (the token) or anything KwikID answers (a body). They are
//! stable for one cause (no clock readings in them), so a repeated cause is recognised as one.

use std::borrow::Cow;
use std::io;
use std::time::{Duration, UNIX_EPOCH};

use rustls::{AlertDescription, CertificateError, Error as TlsError};

use super::UpstreamError;

/// An [`UpstreamError`] and its cause in plain words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Failure {
    pub(super) error: UpstreamError,
    pub(super) cause: Cow<'static, str>,
}

impl Failure {
    pub(super) fn connect(kind: &'static str, cause: impl Into<Cow<'static, str>>) -> Self {
        Self {
            error: UpstreamError::Connect { kind },
            cause: cause.into(),
        }
    }

    /// A failure after the request may have been sent; its kind says all there is to say.
    pub(super) fn after_connect(error: UpstreamError) -> Self {
        let cause = match error.kind() {
            "closed" => "KwikID closed the connection before a whole answer",
            "reset" => "the connection was reset before a whole answer",
            "garbage" => "KwikID's answer was not HTTP",
            "body" => "KwikID's answer broke off in its body",
            "too_large" => "KwikID's answer was larger than the gateway reads (1 MiB)",
            _ => "the exchange with KwikID failed",
        };
        Self {
            error,
            cause: Cow::Borrowed(cause),
        }
    }
}

/// A failed TLS handshake with KwikID: rustls's reason when it gave one, else what happened
/// to the socket.
pub(super) fn tls(error: &io::Error) -> Cow<'static, str> {
    match error.get_ref().and_then(|e| e.downcast_ref::<TlsError>()) {
        Some(TlsError::InvalidCertificate(e)) => {
            format!("certificate refused: {}", certificate(e)).into()
        }
        Some(TlsError::AlertReceived(alert)) => alert_received(*alert),
        Some(TlsError::InvalidMessage(_) | TlsError::InappropriateMessage { .. }) => {
            "the server does not speak TLS there (is the port an HTTPS one?)".into()
        }
        Some(TlsError::PeerIncompatible(why)) => {
            format!("the server's TLS is incompatible with the gateway's ({why:?})").into()
        }
        Some(TlsError::NoApplicationProtocol) => {
            "the server speaks neither HTTP/2 nor HTTP/1.1 (ALPN)".into()
        }
        Some(other) => format!("TLS handshake failed: {other}").into(),
        None => match error.kind() {
            io::ErrorKind::UnexpectedEof => {
                "the server closed the connection during the TLS handshake".into()
            }
            _ => format!("TLS handshake failed: {}", socket(error)).into(),
        },
    }
}

/// rustls's certificate reasons, with the hint an operator needs for the common ones.
fn certificate(error: &CertificateError) -> String {
    let date = |t: rustls_pki_types::UnixTime| {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t.as_secs()))
    };
    match error {
        CertificateError::UnknownIssuer => {
            "unknown issuer (not signed by a trusted CA; see upstream.ca_file)".into()
        }
        CertificateError::NotValidForName => "not valid for KwikID's host name".into(),
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => format!(
            "not valid for name {} (it names {})",
            expected.to_str(),
            if presented.is_empty() {
                "no host".to_owned()
            } else {
                presented
                    .iter()
                    .map(|n| bare_name(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
        CertificateError::Expired => "expired".into(),
        CertificateError::ExpiredContext { not_after, .. } => {
            format!("expired (not valid after {})", date(*not_after))
        }
        CertificateError::NotValidYet => "not valid yet".into(),
        CertificateError::NotValidYetContext { not_before, .. } => {
            format!("not valid yet (not before {})", date(*not_before))
        }
        CertificateError::Revoked => "revoked".into(),
        CertificateError::BadSignature => "bad signature".into(),
        CertificateError::BadEncoding => "badly encoded".into(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "not meant for a TLS server".into()
        }
        other => format!("{other}"),
    }
}

/// webpki presents a name as `DnsName("kwikid.example")`; the operator wants the name.
fn bare_name(presented: &str) -> &str {
    presented
        .split_once("(\"")
        .and_then(|(_, rest)| rest.strip_suffix("\")"))
        .unwrap_or(presented)
}

fn alert_received(alert: AlertDescription) -> Cow<'static, str> {
    match alert {
        AlertDescription::HandshakeFailure | AlertDescription::ProtocolVersion => {
            "the server refused the handshake (no TLS version or cipher in common)".into()
        }
        AlertDescription::UnrecognisedName => {
            "the server does not know KwikID's host name (SNI)".into()
        }
        AlertDescription::NoApplicationProtocol => {
            "the server speaks neither HTTP/2 nor HTTP/1.1 (ALPN)".into()
        }
        other => format!("the server ended the handshake with TLS alert {other:?}").into(),
    }
}

/// A resolver's failure: its own message, without the standard library's prefix.
pub(super) fn dns(host: &str, error: &io::Error) -> String {
    let text = error.to_string();
    let reason = text
        .strip_prefix("failed to lookup address information: ")
        .unwrap_or(&text);
    format!("DNS lookup of {host} failed: {reason}")
}

/// A socket error in a few words: `connection refused`, `timed out`, `network unreachable`.
pub(super) fn socket(error: &io::Error) -> Cow<'static, str> {
    use io::ErrorKind::*;
    match error.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset".into(),
        ConnectionAborted => "connection aborted".into(),
        TimedOut => "timed out".into(),
        HostUnreachable => "host unreachable".into(),
        NetworkUnreachable => "network unreachable".into(),
        AddrNotAvailable => "address not available".into(),
        PermissionDenied => "permission denied (a firewall or sandbox?)".into(),
        UnexpectedEof => "connection closed".into(),
        _ => error.to_string().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls_io(error: TlsError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, error)
    }

    #[test]
    fn certificate_reasons_read_as_words() {
        let cases = [
            (
                CertificateError::UnknownIssuer,
                "certificate refused: unknown issuer (not signed by a trusted CA; see upstream.ca_file)",
            ),
            (
                CertificateError::NotValidForNameContext {
                    expected: rustls_pki_types::ServerName::try_from("localhost").unwrap(),
                    presented: vec!["DnsName(\"kwikid.example\")".into()],
                },
                "certificate refused: not valid for name localhost (it names kwikid.example)",
            ),
            (
                CertificateError::ExpiredContext {
                    time: rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs(
                        1_700_000_000,
                    )),
                    not_after: rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs(
                        1_609_459_200,
                    )),
                },
                "certificate refused: expired (not valid after 2021-01-01T00:00:00Z)",
            ),
        ];
        for (error, words) in cases {
            assert_eq!(tls(&tls_io(TlsError::InvalidCertificate(error))), words);
        }
    }

    #[test]
    fn a_plain_http_port_and_a_closed_handshake_are_named() {
        let corrupt = TlsError::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
        assert!(tls(&tls_io(corrupt)).contains("does not speak TLS"));
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof");
        assert_eq!(
            tls(&eof),
            "the server closed the connection during the TLS handshake"
        );
    }

    #[test]
    fn socket_and_dns_errors_read_as_words() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(socket(&refused), "connection refused");
        let lookup =
            io::Error::other("failed to lookup address information: Name or service not known");
        assert_eq!(
            dns("kwikid.invalid", &lookup),
            "DNS lookup of kwikid.invalid failed: Name or service not known"
        );
    }
}
