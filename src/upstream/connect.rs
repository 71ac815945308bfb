//! A new connection to KwikID: DNS (reused for a few seconds), TCP to each address in turn,
//! the TLS handshake with ALPN, then hyper's HTTP/1.1 or HTTP/2 handshake, as ALPN chose;
//! all within `connect_timeout`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::UpstreamError;
use super::pool::{Connection, Pool};
use crate::config;

/// How long looked-up upstream addresses are reused (unless connecting to them fails): a
/// burst of new connections costs one lookup, not a blocking thread each.
const DNS_REUSE: Duration = Duration::from_secs(10);

const CONNECT: UpstreamError = UpstreamError::Connect { kind: "connect" };
const DNS: UpstreamError = UpstreamError::Connect { kind: "dns" };

pub(super) struct Connector {
    tls: TlsConnector,
    server_name: ServerName<'static>,
    host: String,
    port: u16,
    connect_timeout: Duration,
    resolved: tokio::sync::Mutex<Option<(Instant, Arc<[SocketAddr]>)>>,
}

impl Connector {
    pub(super) fn new(config: &config::Upstream) -> Result<Self, rustls::Error> {
        let mut tls = crate::tls::client_config(&config.extra_roots)?;
        // RFC 7301: KwikID picks; with `upstream.http2 = "never"` only HTTP/1.1 is offered.
        tls.alpn_protocols = if config.http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let host = config
            .authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let server_name = ServerName::try_from(host.as_str())
            .map(|name| name.to_owned())
            .map_err(|_| rustls::Error::General("upstream host is not a valid TLS name".into()))?;
        Ok(Self {
            tls: TlsConnector::from(Arc::new(tls)),
            server_name,
            port: config.authority.port_u16().unwrap_or(443),
            host,
            connect_timeout: config.connect_timeout,
            resolved: tokio::sync::Mutex::new(None),
        })
    }

    /// A new connection, within `connect_timeout`. An HTTP/2 one is also offered to `pool`,
    /// so the requests that follow share it.
    pub(super) async fn connect(&self, pool: &Pool) -> Result<Box<Connection>, UpstreamError> {
        tokio::time::timeout(self.connect_timeout, self.open(pool))
            .await
            .unwrap_or(Err(UpstreamError::Connect {
                kind: "connect_timeout",
            }))
    }

    async fn open(&self, pool: &Pool) -> Result<Box<Connection>, UpstreamError> {
        let tcp = self.tcp().await?;
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|_| UpstreamError::Connect { kind: "tls" })?;
        let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        if http2 {
            let (sender, driver) = http2::Builder::new(TokioExecutor::new())
                .handshake(io)
                .await
                .map_err(|_| CONNECT)?;
            tokio::spawn(async move {
                if let Err(e) = driver.await {
                    tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
                }
            });
            tracing::debug!("upstream connection speaks HTTP/2");
            pool.share_http2(sender.clone());
            return Ok(Box::new(Connection::http2(sender)));
        }
        let (sender, driver) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|_| CONNECT)?;
        Ok(Box::new(Connection::http1(sender, driver)))
    }

    async fn tcp(&self) -> Result<TcpStream, UpstreamError> {
        let addrs = self.addresses().await?;
        for &addr in addrs.iter() {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    tracing::debug!(%addr, "upstream connection opened");
                    stream.set_nodelay(true).map_err(|_| CONNECT)?;
                    return Ok(stream);
                }
                Err(e) => tracing::debug!(%addr, error = %e, "upstream connect failed"),
            }
        }
        // Perhaps the name points elsewhere now: look it up again next time.
        *self.resolved.lock().await = None;
        Err(CONNECT)
    }

    /// One lookup at a time; the others wait for it and share its answer.
    async fn addresses(&self) -> Result<Arc<[SocketAddr]>, UpstreamError> {
        let mut resolved = self.resolved.lock().await;
        if let Some((at, addrs)) = &*resolved
            && at.elapsed() < DNS_REUSE
        {
            return Ok(addrs.clone());
        }
        let addrs: Arc<[SocketAddr]> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|_| DNS)?
            .collect();
        if addrs.is_empty() {
            return Err(DNS);
        }
        *resolved = Some((Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}
