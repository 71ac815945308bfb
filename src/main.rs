//! `kwikid-gateway`: run the gateway, check a config, or try it with `demo`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kwikid_gateway::access_log::AccessLog;
use kwikid_gateway::config::{Config, RawConfig, redact_url};
use kwikid_gateway::rate_limit::RateLimits;
use kwikid_gateway::secret::Token;
use kwikid_gateway::{Gateway, logging, server};

/// A reverse proxy that holds the KwikID API token so your services never do.
///
/// Trusted internal callers POST /verification/v2/digilocker/init without credentials; the
/// gateway checks them, rate-limits them, attaches `Authorization: Bearer <token>` and forwards
/// to KwikID over HTTPS, answering with KwikID's response unchanged. The access log (stdout)
/// never contains the token or the redirection_url.
///
/// Exit codes: 0 clean shutdown, 1 runtime failure, 2 bad usage or bad config.
#[derive(Parser)]
#[command(
    name = "kwikid-gateway",
    version,
    after_help = "Try it with no KwikID account: kwikid-gateway demo"
)]
struct Cli {
    /// The TOML config file.
    #[arg(
        long,
        global = true,
        env = "KWIKID_GATEWAY_CONFIG",
        default_value = "config.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the config and the token source, print the effective config (token redacted).
    Check,
    /// Start a mock KwikID and the gateway on loopback, send one init, then serve until Ctrl-C.
    Demo,
}

/// jemalloc: an idle keep-alive connection's buffers cost only the pages written (glibc's
/// malloc touches more around each 8 KiB buffer), and with its background thread (see
/// `.cargo/config.toml`) memory freed after a burst goes back to the OS. Measured in the
/// README's Performance section.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // One crypto provider for every rustls user, the redis client included.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    match cli.command {
        None => run(&cli.config),
        Some(Command::Check) => check(&cli.config),
        Some(Command::Demo) => runtime().map_or(ExitCode::from(1), |rt| {
            rt.block_on(kwikid_gateway::demo::run())
        }),
    }
}

/// A bad config or token: one line on stderr, exit 2.
fn bad_config(line: impl std::fmt::Display) -> ExitCode {
    eprintln!("{}", kwikid_gateway::config::one_line(&line.to_string()));
    ExitCode::from(2)
}

fn load(path: &Path) -> Result<(RawConfig, Config, Token), ExitCode> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad_config(format!("{}: cannot read: {e}", path.display())))?;
    let raw = RawConfig::parse(path, &text).map_err(bad_config)?;
    let config = raw.clone().validate(path).map_err(bad_config)?;
    let token = Token::read(&config.token)
        .map_err(|e| bad_config(format!("{}: token: {e}", path.display())))?;
    Ok((raw, config, token))
}

fn check(path: &Path) -> ExitCode {
    let (mut raw, config, token) = match load(path) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    if config.rate_limit.redis.is_some()
        && let Err(reason) = reach_redis(&config)
    {
        return bad_config(format!(
            "{}: rate_limit.redis_url: Redis does not answer ({reason})",
            path.display()
        ));
    }
    raw.rate_limit.redis_url = raw.rate_limit.redis_url.as_deref().map(redact_url);
    let effective = match toml::to_string(&raw) {
        Ok(text) => text,
        Err(e) => {
            return bad_config(format!(
                "{}: cannot print the effective config: {e}",
                path.display()
            ));
        }
    };
    println!("# {}: OK", path.display());
    println!("# token: {token} (token_id {})", token.fingerprint());
    print!("{effective}");
    ExitCode::SUCCESS
}

/// `check` with `backend = "redis"`: one PING through the same client the gateway uses.
fn reach_redis(config: &Config) -> Result<(), String> {
    let runtime = runtime().ok_or("no runtime")?;
    runtime.block_on(async {
        let limits = RateLimits::new(&config.rate_limit)
            .map_err(|_| "cannot create the client".to_owned())?;
        match limits.ping_shared().await {
            Some(Err(kind)) => Err(kind.to_owned()),
            _ => Ok(()),
        }
    })
}

/// One worker per CPU this process may run on (its affinity and cgroup quota, not the
/// machine's count). On one CPU, the single-threaded scheduler: no work stealing and no
/// cross-thread wake-ups, which is measurably cheaper per request.
fn runtime() -> Option<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut builder = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cpus);
        b
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| eprintln!("kwikid-gateway: cannot start the runtime: {e}"))
        .ok()
}

fn run(path: &Path) -> ExitCode {
    let (_raw, config, token) = match load(path) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    logging::init(&config.log);
    let Some(runtime) = runtime() else {
        return ExitCode::from(1);
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(config.listen.addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(addr = %config.listen.addr, error = %e, "cannot listen");
                return ExitCode::from(1);
            }
        };
        let admin_listener = match tokio::net::TcpListener::bind(config.admin.addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(addr = %config.admin.addr, error = %e, "cannot listen (admin)");
                return ExitCode::from(1);
            }
        };
        let gateway = match Gateway::new(config, &token, AccessLog::stdout()) {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::from(1);
            }
        };
        drop(token);
        // Signal handlers before the start-up line: from then on, SIGTERM means drain.
        let shutdown = server::shutdown_signal();
        let watcher = kwikid_gateway::reload::spawn(gateway.clone());
        let addr_of =
            |l: &tokio::net::TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let (proxy_addr, admin_addr) = (addr_of(&listener), addr_of(&admin_listener));
        let admin = tokio::spawn(kwikid_gateway::admin::serve(
            admin_listener,
            gateway.clone(),
        ));
        // The listener is bound: connections queue in its backlog until `serve` accepts them.
        gateway
            .ready
            .store(true, std::sync::atomic::Ordering::Release);
        tracing::info!(
            proxy_addr,
            admin_addr,
            tls = gateway.config.listen.tls.is_some(),
            upstream = gateway.config.upstream.authority.as_str(),
            token_id = gateway.token.current().fingerprint.as_str(),
            "kwikid-gateway listening"
        );
        server::serve(listener, gateway.clone(), shutdown).await;
        watcher.abort();
        gateway.access_log.close();
        admin.abort();
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}
