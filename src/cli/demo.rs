//! `kwikid-gateway demo`: the gateway's whole job on one machine with no KwikID account.
//!
//! A mock KwikID serves HTTPS with a throwaway certificate on loopback; the gateway sits in
//! front of it with a demo token, with its admin listener (`/metrics`, `/readyz`); one sample
//! init goes through; then both serve until Ctrl-C so the printed `curl` lines can be pasted.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use kwikid_gateway::access_log::AccessLog;
use kwikid_gateway::config::{Config, RawConfig};
use kwikid_gateway::hardening::{self, Refused};
use kwikid_gateway::rules::route;
use kwikid_gateway::secret::Token;
use kwikid_gateway::{Gateway, logging, server, tls};

// The mock KwikID is binaries' code, compiled in here for the demo; the library never sees it.
#[path = "../mock/mod.rs"]
mod mock;
use mock::Mock;

const SAMPLE_BODY: &str =
    r#"{"handshake_id":"demo-session-1","callback_url":"https://app.example.com/dl/cb"}"#;

/// `refused`: the hardening steps the kernel refused, logged once logging is up.
pub(crate) async fn run(refused: &[Refused]) -> ExitCode {
    match demo(refused).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kwikid-gateway demo: {e}");
            ExitCode::from(1)
        }
    }
}

/// Binds `preferred`, or any free loopback port if it is taken.
async fn bind(preferred: &str) -> Result<TcpListener, String> {
    match TcpListener::bind(preferred).await {
        Ok(l) => Ok(l),
        Err(_) => TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot listen: {e}")),
    }
}

async fn demo(refused: &[Refused]) -> Result<(), String> {
    let secret = format!("demo-{}", ulid::Ulid::generate());
    let token = Token::new(secret.clone()).map_err(|e| e.to_string())?;

    let cert =
        tls::throwaway_server_cert(&["localhost", "127.0.0.1"]).map_err(|e| e.to_string())?;
    let ca = cert.ca_der.clone();
    let mock_tls = tls::server_config(cert.chain, cert.key).map_err(|e| e.to_string())?;
    let mock_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let mock =
        Mock::start(mock_listener, &secret, Some(mock_tls), false).map_err(|e| e.to_string())?;
    drop(secret);

    let mut raw = RawConfig::default();
    raw.upstream.base_url = format!("https://localhost:{}", mock.addr.port());
    raw.routes = vec![kwikid_gateway::config::RawRoute {
        method: "POST".into(),
        path: route::DIGILOCKER_INIT.into(),
    }];
    raw.log.format = "text".into();
    raw.log.level = "warn".into();
    let mut config: Config = raw.validate(Path::new("demo")).map_err(|e| e.to_string())?;
    config.upstream.extra_roots.push(ca);
    // The demo's KwikID is on loopback: an egress proxy from the environment cannot reach it.
    config.upstream.egress = kwikid_gateway::config::Egress::Direct;
    logging::init(&config.log);
    hardening::warn(refused);

    let listener = bind(&config.listen.addr.to_string()).await?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let admin_listener = bind(&config.admin.addr.to_string()).await?;
    let admin_addr = admin_listener.local_addr().map_err(|e| e.to_string())?;
    let (lines_tx, lines) = mpsc::channel();
    let gateway = Gateway::new(config, &token, AccessLog::to_writer(LineTap(lines_tx)))
        .map_err(|e| e.to_string())?;
    let serving = tokio::spawn(server::serve(
        listener,
        gateway.clone(),
        server::shutdown_signal(),
    ));
    let admin = tokio::spawn(kwikid_gateway::admin::serve(
        admin_listener,
        gateway.clone(),
    ));
    gateway.set_ready(true);

    println!("kwikid-gateway demo");
    println!(
        "  mock KwikID  https://localhost:{} (throwaway certificate, demo token)",
        mock.addr.port()
    );
    println!(
        "  gateway      http://{addr}  token_id {}",
        token.fingerprint()
    );
    println!("  admin        http://{admin_addr}  (/metrics, /readyz, /healthz)");
    println!();
    println!("→ POST {}  {SAMPLE_BODY}", route::DIGILOCKER_INIT);
    let (status, body) = send_sample(addr).await?;
    println!("← {status}  {body}");
    println!();
    match lines.recv_timeout(Duration::from_secs(2)) {
        Ok(line) => print!("access log (stdout; no token, no redirection_url):\n{line}"),
        Err(_) => println!("access log: no line within 2 s"),
    }
    println!();
    println!("The gateway keeps serving until Ctrl-C. Try:");
    println!(
        "  curl -sS -X POST http://{addr}{} -H 'content-type: application/json' -H 'x-caller-id: my-service' -d '{{\"handshake_id\":\"session-12345\"}}'",
        route::DIGILOCKER_INIT
    );
    println!("  curl -sS http://{admin_addr}/metrics");
    println!();
    let _ = std::io::stdout().flush();
    // Later access-log lines go straight to stdout, as in production.
    std::thread::spawn(move || {
        for line in lines {
            print!("{line}");
            let _ = std::io::stdout().flush();
        }
    });

    let _ = serving.await;
    admin.abort();
    gateway.access_log.close();
    mock.stop().await;
    Ok(())
}

/// Sends the sample init as a caller would: plain HTTP, no credentials.
async fn send_sample(addr: SocketAddr) -> Result<(http::StatusCode, String), String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = Request::post(route::DIGILOCKER_INIT)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header("x-caller-id", "demo-client")
        .body(Full::new(Bytes::from_static(SAMPLE_BODY.as_bytes())))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Hands each access-log line to the demo, which prints it.
struct LineTap(mpsc::Sender<String>);

impl Write for LineTap {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.send(String::from_utf8_lossy(buf).into_owned());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
