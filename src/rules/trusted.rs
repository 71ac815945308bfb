//! Who may call, and what the caller is called.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// Longest caller id taken from the caller header; longer ones are ignored.
const MAX_CALLER_ID: usize = 128;

/// Whether `peer` is inside one of the trusted networks. IPv4-mapped IPv6 peers
/// (`::ffff:10.1.2.3`, from a dual-stack listener) match IPv4 networks.
pub fn is_trusted(allow: &[IpNet], peer: IpAddr) -> bool {
    let peer = peer.to_canonical();
    allow.iter().any(|net| net.contains(&peer))
}

/// The caller's name, as the per-caller bucket keys it and the access log shows it: the
/// caller header's value when it holds 1–128 visible ASCII characters, else the peer's IP
/// address. Shared (`Arc`), as the request's record and the bucket key both hold it.
pub fn caller_name(caller_header: Option<&[u8]>, peer: SocketAddr) -> Arc<str> {
    caller_header
        .filter(|v| !v.is_empty() && v.len() <= MAX_CALLER_ID && v.iter().all(u8::is_ascii_graphic))
        .and_then(|v| std::str::from_utf8(v).ok())
        .map_or_else(|| peer.ip().to_canonical().to_string().into(), Arc::from)
}

/// The caller's name from its client certificate: the first DNS SAN, else the subject CN.
pub fn certificate_name(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        let dns = san.value.general_names.iter().find_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            _ => None,
        });
        if dns.is_some() {
            return dns;
        }
    }
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    Some(cn.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv4_matches_ipv4_networks() {
        let allow: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(is_trusted(&allow, "::ffff:10.1.2.3".parse().unwrap()));
        assert!(is_trusted(&allow, "10.1.2.3".parse().unwrap()));
        assert!(!is_trusted(&allow, "11.1.2.3".parse().unwrap()));
    }

    #[test]
    fn caller_header_names_the_caller_unless_it_is_unusable() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(&*caller_name(None, peer), "127.0.0.1");
        assert_eq!(&*caller_name(Some(b"orders-svc"), peer), "orders-svc");
        assert_eq!(
            &*caller_name(Some("x".repeat(129).as_bytes()), peer),
            "127.0.0.1"
        );
        assert_eq!(&*caller_name(Some(b"a b"), peer), "127.0.0.1");
        assert_eq!(&*caller_name(Some(b""), peer), "127.0.0.1");
    }
}
