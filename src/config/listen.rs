//! `[listen]` and the listeners' addresses: raw → typed, each error naming its key.

use std::net::SocketAddr;
use std::path::Path;

use ipnet::IpNet;

use super::*;

impl RawListen {
    pub(super) fn validate(self, path: &Path, here: &Path) -> Result<Listen, ConfigError> {
        let tls = match &self.tls {
            None => None,
            Some(tls) => Some(tls.validate(path, here)?),
        };
        let allow_cidrs = self
            .allow_cidrs
            .iter()
            .map(|c| parse_cidr(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| ConfigError::at(path, "listen.allow_cidrs", reason))?;
        if self.max_connections == 0 {
            return Err(ConfigError::at(
                path,
                "listen.max_connections",
                "must be at least 1",
            ));
        }
        if self.max_body_bytes == 0 {
            return Err(ConfigError::at(
                path,
                "listen.max_body_bytes",
                "must be at least 1",
            ));
        }
        if self.max_concurrent_streams == 0 {
            return Err(ConfigError::at(
                path,
                "listen.max_concurrent_streams",
                "must be at least 1",
            ));
        }
        if self.header_read_timeout.is_zero() {
            return Err(ConfigError::at(
                path,
                "listen.header_read_timeout",
                "must be longer than 0s",
            ));
        }
        if self.idle_timeout.is_zero() {
            return Err(ConfigError::at(
                path,
                "listen.idle_timeout",
                "must be longer than 0s",
            ));
        }
        Ok(Listen {
            addr: socket_addr(path, "listen.addr", &self.addr)?,
            allow_cidrs,
            max_connections: self.max_connections,
            header_read_timeout: self.header_read_timeout,
            max_body_bytes: self.max_body_bytes,
            shutdown_grace: self.shutdown_grace,
            idle_timeout: self.idle_timeout,
            max_concurrent_streams: self.max_concurrent_streams,
            tls,
        })
    }
}

/// Accepts `10.0.0.0/8` or a bare address (a single host). A network with host bits set
/// (`10.0.0.1/8`) is refused with the network it most likely means: reading it either way
/// silently would trust more, or fewer, callers than the operator thinks.
fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match text.parse::<std::net::IpAddr>() {
            Ok(ip) => return Ok(IpNet::from(ip)),
            Err(_) => {
                return Err(format!(
                    "{text:?} is not a CIDR such as \"10.0.0.0/8\" or an IP address"
                ));
            }
        },
    };
    if net.trunc() != net {
        return Err(format!(
            "{text:?} has host bits set; did you mean \"{}\"?",
            net.trunc()
        ));
    }
    Ok(net)
}

/// Whether two listeners would want the same port: the same address, or the same port with
/// either one on the unspecified address of the other's family. Port 0 (the system picks
/// one) never overlaps.
pub(super) fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip()
            || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified())))
}

pub(super) fn socket_addr(path: &Path, key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        ConfigError::at(
            path,
            key,
            format!(
                "{text:?} is not an IP address and port such as \"127.0.0.1:8080\" or \"[::]:8080\""
            ),
        )
    })
}
