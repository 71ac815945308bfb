//! The floor under the gateway's per-request cost: the same proxy job written with nothing
//! but the crates the gateway stands on (hyper, hyper-util, tokio, rustls), as their own
//! examples write it, and none of the gateway's own work (no access log, rate limits, body or
//! callback checks, request ids, metrics, header rules beyond the token). Not a product: a
//! measuring stick for `benches/count.sh bare`, which counts its instructions per request
//! as it counts the gateway's and nginx's.
//!
//! ```sh
//! KWIKID_API_TOKEN=… cargo run --release --example bare_proxy -- \
//!     127.0.0.1:8080 localhost:8443 ca.pem
//! ```
//!
//! Listens on the first address (HTTP/1.1), forwards every request to the second over
//! HTTPS (trusting the CA in the third, a PEM file) on pooled keep-alive connections with
//! `Authorization: Bearer $KWIKID_API_TOKEN` set, and returns the answer whole; 502 when the
//! upstream fails. One thread, as the gateway's runtime on one CPU.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use zeroize::Zeroizing;

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Upstream {
    addr: String,
    host: HeaderValue,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    authorization: HeaderValue,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl Upstream {
    /// A pooled connection that is still open, or a new one.
    async fn checkout(&self) -> Result<SendRequest<Full<Bytes>>, Error> {
        loop {
            let pooled = self.idle.lock().map_err(|_| "pool poisoned")?.pop();
            let Some(mut sender) = pooled else { break };
            if sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
        let tcp = TcpStream::connect(&self.addr).await?;
        tcp.set_nodelay(true)?;
        let tls = self.tls.connect(self.server_name.clone(), tcp).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(connection);
        Ok(sender)
    }

    async fn forward(&self, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Error> {
        let (mut parts, body) = request.into_parts();
        let body = body.collect().await?.to_bytes();
        parts
            .headers
            .insert(AUTHORIZATION, self.authorization.clone());
        parts.headers.insert(HOST, self.host.clone());
        let mut sender = self.checkout().await?;
        let answer = sender
            .send_request(Request::from_parts(parts, Full::new(body)))
            .await?;
        let (parts, body) = answer.into_parts();
        let body = body.collect().await?.to_bytes();
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(sender);
        }
        Ok(Response::from_parts(parts, Full::new(body)))
    }
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream, ca_file] = args.as_slice() else {
        return Err("usage: bare_proxy LISTEN_ADDR UPSTREAM_HOST:PORT CA_PEM_FILE".into());
    };
    let listen: SocketAddr = listen.parse()?;
    let host = upstream
        .rsplit_once(':')
        .map_or(upstream.as_str(), |(h, _)| h);
    // Zeroed on drop, as the gateway's own copies are; the header value's bytes are hyper's.
    let token = Zeroizing::new(
        std::env::var("KWIKID_API_TOKEN").map_err(|_| "KWIKID_API_TOKEN is not set")?,
    );
    let bearer = Zeroizing::new(format!("Bearer {}", token.as_str()));
    let mut authorization = HeaderValue::try_from(bearer.as_str())?;
    authorization.set_sensitive(true);

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file)? {
        roots.add(cert?)?;
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];

    let upstream = Arc::new(Upstream {
        addr: upstream.clone(),
        host: HeaderValue::try_from(upstream.as_str())?,
        server_name: ServerName::try_from(host.to_owned())?,
        tls: TlsConnector::from(Arc::new(tls)),
        authorization,
        idle: Mutex::new(Vec::new()),
    });

    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(listen, upstream))
}

async fn serve(listen: SocketAddr, upstream: Arc<Upstream>) -> Result<(), Error> {
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let upstream = upstream.clone();
                async move {
                    Ok::<_, Infallible>(upstream.forward(request).await.unwrap_or_else(|_| {
                        let mut answer = Response::new(Full::new(Bytes::new()));
                        *answer.status_mut() = StatusCode::BAD_GATEWAY;
                        answer
                    }))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
