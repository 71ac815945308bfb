//! `kwikid-mock`: a stand-in for KwikID's DigiLocker init endpoint, for demos, tests and
//! benchmarks. The mock itself is `src/mock/`, compiled into this binary (it is no part of the
//! gateway's library).

#[path = "../mock/mod.rs"]
mod mock;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kwikid_gateway::tls;
use mock::{Fault, Mock, Options};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A mock KwikID: serves POST /verification/v2/digilocker/init as KwikID documents it.
///
/// With the right token it answers 200 and a redirection_url of KwikID's shape; without
/// Authorization 400; with another token 401. By default it serves HTTPS with a throwaway
/// certificate whose CA it writes to --ca-out, so a gateway can trust it. It speaks HTTP/1.1
/// and HTTP/2 (ALPN h2 over HTTPS, prior knowledge over plain HTTP) unless --http1-only.
#[derive(Parser)]
#[command(name = "kwikid-mock", version)]
struct Cli {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// The one token it accepts.
    #[arg(long, env = "KWIKID_API_TOKEN", hide_env_values = true)]
    token: String,
    /// Serve plain HTTP instead of HTTPS.
    #[arg(long)]
    plain_http: bool,
    /// Certificate chain (PEM) to serve instead of a throwaway one; needs --key.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) for --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Where to write the throwaway CA certificate (PEM), for the gateway's upstream.ca_file.
    #[arg(long)]
    ca_out: Option<PathBuf>,
    /// Serve HTTP/1.1 only (ALPN offers only http/1.1), as a KwikID behind an HTTP/1.1-only
    /// load balancer would.
    #[arg(long)]
    http1_only: bool,
    /// Misbehave: none, delay=250ms, reset, 500, 429[=SECONDS], garbage.
    #[arg(long, default_value = "none")]
    fault: Fault,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kwikid-mock: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kwikid-mock: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let tls = if cli.plain_http {
        None
    } else if let (Some(cert), Some(key)) = (&cli.cert, &cli.key) {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("--cert {}: {e}", cert.display()))?;
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("--key {}: {e}", key.display()))?;
        Some(tls::server_config(chain, key).map_err(|e| format!("TLS: {e}"))?)
    } else {
        let cert = tls::throwaway_server_cert(&["localhost", "127.0.0.1", "::1"])
            .map_err(|e| e.to_string())?;
        if let Some(out) = &cli.ca_out {
            std::fs::write(out, &cert.ca_pem)
                .map_err(|e| format!("--ca-out {}: {e}", out.display()))?;
        }
        Some(tls::server_config(cert.chain, cert.key).map_err(|e| format!("TLS: {e}"))?)
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cli.listen))?;
    let options = Options {
        record: false,
        http2: !cli.http1_only,
    };
    let mock = Mock::start_with(listener, &cli.token, tls, options).map_err(|e| e.to_string())?;
    mock.set_fault(cli.fault);
    println!("kwikid-mock listening on {scheme}://{}", mock.addr);
    shutdown_signal().await;
    mock.stop().await;
    Ok(())
}

/// SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut interrupt)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
