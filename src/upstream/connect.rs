//! A new connection to KwikID: DNS (reused for a few seconds), TCP to each address in turn
//! (KwikID's, or the egress proxy's and then a CONNECT tunnel), the TLS handshake with ALPN,
//! then hyper's HTTP/1.1 or HTTP/2 handshake, as ALPN chose; all within `connect_timeout`.
//! A failure says why, in [`cause`]'s words.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::cause::{self, Failure};
use super::pool::{Connection, Pool};
use super::tunnel;
use crate::config::{self, EgressProxy};

/// How long looked-up addresses are reused (unless connecting to them fails): a burst of new
/// connections costs one lookup, not a blocking thread each.
const DNS_REUSE: Duration = Duration::from_secs(10);

pub(super) struct Connector {
    tls: TlsConnector,
    server_name: ServerName<'static>,
    /// KwikID's `host:port`, as CONNECT and the logs name it.
    target: String,
    /// Where TCP connections go: KwikID, or the proxy.
    dial_host: String,
    dial_port: u16,
    proxy: Option<EgressProxy>,
    connect_timeout: Duration,
    resolved: tokio::sync::Mutex<Option<(Instant, Arc<[SocketAddr]>)>>,
}

/// How far a connection got, read when `connect_timeout` cuts it short.
#[derive(Default)]
struct Progress(AtomicU8);

const LOOKUP: u8 = 0;
const TCP: u8 = 1;
const TUNNEL: u8 = 2;
const TLS: u8 = 3;
const HTTP: u8 = 4;

impl Progress {
    fn at(&self, phase: u8) {
        self.0.store(phase, Ordering::Relaxed);
    }

    fn words(&self, connector: &Connector) -> String {
        match self.0.load(Ordering::Relaxed) {
            LOOKUP => format!("looking up {}", connector.dial_host),
            TCP if connector.proxy.is_some() => "opening TCP to the proxy".to_owned(),
            TCP => "opening TCP".to_owned(),
            TUNNEL => "waiting for the proxy's answer to CONNECT".to_owned(),
            TLS => "in the TLS handshake".to_owned(),
            _ => "in the HTTP/2 handshake".to_owned(),
        }
    }
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
        let port = config.authority.port_u16().unwrap_or(443);
        let proxy = config.egress.proxy().cloned();
        let (dial_host, dial_port) = match &proxy {
            Some(proxy) => (proxy.host.clone(), proxy.port),
            None => (host.clone(), port),
        };
        Ok(Self {
            tls: TlsConnector::from(Arc::new(tls)),
            server_name,
            target: format!("{}:{port}", config.authority.host()),
            dial_host,
            dial_port,
            proxy,
            connect_timeout: config.connect_timeout,
            resolved: tokio::sync::Mutex::new(None),
        })
    }

    /// KwikID's `host:port`.
    pub(super) fn target(&self) -> &str {
        &self.target
    }

    /// The proxy's `host:port`, when connections go through one.
    pub(super) fn proxy(&self) -> Option<String> {
        self.proxy.as_ref().map(EgressProxy::address)
    }

    /// A new connection, within `connect_timeout`. An HTTP/2 one is also offered to `pool`,
    /// so the requests that follow share it.
    pub(super) async fn connect(&self, pool: &Pool) -> Result<Box<Connection>, Failure> {
        let progress = Progress::default();
        self.within_timeout(&progress, self.open(pool, &progress))
            .await
    }

    /// DNS, TCP (and the tunnel) and the TLS handshake, within `connect_timeout`; nothing
    /// is sent inside TLS.
    pub(super) async fn handshake(&self) -> Result<TlsStream<TcpStream>, Failure> {
        let progress = Progress::default();
        self.within_timeout(&progress, self.tls_stream(&progress))
            .await
    }

    async fn within_timeout<T>(
        &self,
        progress: &Progress,
        work: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(self.connect_timeout, work).await {
            Ok(done) => done,
            Err(_) => Err(Failure::connect(
                "connect_timeout",
                format!(
                    "no connection within upstream.connect_timeout ({}) while {}",
                    humantime::format_duration(self.connect_timeout),
                    progress.words(self)
                ),
            )),
        }
    }

    async fn open(&self, pool: &Pool, progress: &Progress) -> Result<Box<Connection>, Failure> {
        let tls = self.tls_stream(progress).await?;
        progress.at(HTTP);
        let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        let handshake_failed =
            |_| Failure::connect("connect", "the HTTP handshake with KwikID failed");
        if http2 {
            let (sender, driver) = http2::Builder::new(TokioExecutor::new())
                .handshake(io)
                .await
                .map_err(handshake_failed)?;
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
            .map_err(handshake_failed)?;
        Ok(Box::new(Connection::http1(sender, driver)))
    }

    async fn tls_stream(&self, progress: &Progress) -> Result<TlsStream<TcpStream>, Failure> {
        let mut tcp = self.tcp(progress).await?;
        if let Some(proxy) = &self.proxy {
            progress.at(TUNNEL);
            tcp = tunnel::open(tcp, proxy, &self.target).await?;
        }
        progress.at(TLS);
        self.tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| Failure::connect("tls", cause::tls(&e)))
    }

    async fn tcp(&self, progress: &Progress) -> Result<TcpStream, Failure> {
        let addrs = self.addresses().await?;
        progress.at(TCP);
        let mut failed = Vec::new();
        for &addr in addrs.iter() {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    tracing::debug!(%addr, "upstream connection opened");
                    // Without it every small write waits for the last one's ACK (Nagle).
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "upstream connect failed");
                    failed.push(format!("{} ({addr})", cause::socket(&e)));
                }
            }
        }
        // Perhaps the name points elsewhere now: look it up again next time.
        *self.resolved.lock().await = None;
        let mut words = failed
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        if failed.len() > 3 {
            words.push_str(&format!("; and {} more addresses", failed.len() - 3));
        }
        Err(Failure::connect("connect", self.via_proxy(words)))
    }

    /// One lookup at a time; the others wait for it and share its answer.
    async fn addresses(&self) -> Result<Arc<[SocketAddr]>, Failure> {
        let mut resolved = self.resolved.lock().await;
        if let Some((at, addrs)) = &*resolved
            && at.elapsed() < DNS_REUSE
        {
            return Ok(addrs.clone());
        }
        let host = self.dial_host.as_str();
        let addrs: Arc<[SocketAddr]> = tokio::net::lookup_host((host, self.dial_port))
            .await
            .map_err(|e| Failure::connect("dns", self.via_proxy(cause::dns(host, &e))))?
            .collect();
        if addrs.is_empty() {
            let words = format!("DNS lookup of {host} found no address");
            return Err(Failure::connect("dns", self.via_proxy(words)));
        }
        *resolved = Some((Instant::now(), addrs.clone()));
        Ok(addrs)
    }

    /// Says that a failure to reach the dialled host was the proxy's.
    fn via_proxy(&self, words: String) -> String {
        match &self.proxy {
            Some(proxy) => format!("cannot reach proxy {}: {words}", proxy.address()),
            None => words,
        }
    }
}
