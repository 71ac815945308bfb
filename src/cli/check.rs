//! `kwikid-gateway check`: validate the config and the token source, print the token's
//! fingerprint and expiry (SPEC §11), the named callers (SPEC §10), the egress proxy in use and
//! the effective config with the token shown as `[REDACTED]`; exit 0, or 2 with one line naming
//! the key. `check --connect` also reaches KwikID as a request would, and sends nothing.

use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use kwikid_gateway::config::{Config, Egress, RawConfig, TokenSource, redact_url};
use kwikid_gateway::hardening::Refused;
use kwikid_gateway::limits::RateLimits;
use kwikid_gateway::rules::callers::UnknownCallers;
use kwikid_gateway::secret::Token;
use kwikid_gateway::token_watch::expiry::Standing;

/// A bad config or token: one line on stderr, exit 2.
pub(crate) fn bad_config(line: impl std::fmt::Display) -> ExitCode {
    eprintln!("{}", kwikid_gateway::config::one_line(&line.to_string()));
    ExitCode::from(2)
}

pub(crate) fn load(path: &Path) -> Result<(RawConfig, Config, Token), ExitCode> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad_config(format!("{}: cannot read: {e}", path.display())))?;
    let raw = RawConfig::parse(path, &text).map_err(bad_config)?;
    let config = raw.clone().validate(path).map_err(bad_config)?;
    let token = Token::read(&config.token)
        .map_err(|e| bad_config(format!("{}: token: {e}", path.display())))?;
    Ok((raw, config, token))
}

/// `refused`: the hardening steps the kernel refused, one warning line each on stderr (`check`
/// installs no logger).
pub(crate) fn check(path: &Path, connect: bool, refused: &[Refused]) -> ExitCode {
    for r in refused {
        eprintln!("kwikid-gateway: warning: {r}");
    }
    let (mut raw, config, token) = match load(path) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    for warning in config.warnings() {
        eprintln!("{}: warning: {warning}", path.display());
    }
    if config.rate_limit.redis.is_some()
        && let Err(reason) = reach_redis(&config)
    {
        return bad_config(format!(
            "{}: rate_limit.redis_url: Redis does not answer ({reason})",
            path.display()
        ));
    }
    let reached = match connect.then(|| reach_kwikid(&config)) {
        Some(Err(reason)) => return bad_config(format!("{}: upstream: {reason}", path.display())),
        Some(Ok(reached)) => Some(reached),
        None => None,
    };
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
    let standing = Standing::of(token.expiry(), SystemTime::now(), config.warn_before_expiry);
    println!(
        "# token: fingerprint {}, {}",
        token.fingerprint(),
        standing.describe()
    );
    let source = match &config.token {
        TokenSource::Env(name) => format!("env {name}"),
        TokenSource::File(file) => format!("file {}", file.display()),
    };
    println!("# token source: {source}, value {token}");
    print_callers(&raw, &config);
    match &config.upstream.egress {
        Egress::Direct => println!("# proxy: none"),
        Egress::Bypassed { variable } => {
            println!("# proxy: none ({variable} names KwikID's host)");
        }
        Egress::Proxy(proxy) => println!("# proxy: {proxy}"),
    }
    if let Some(reached) = reached {
        println!("# upstream: {reached}");
    }
    print!("{effective}");
    ExitCode::SUCCESS
}

/// One line for what unlisted callers get, then one per named caller: its share (and whether
/// it is its own) and its routes.
fn print_callers(raw: &RawConfig, config: &Config) {
    let unknown = match config.callers.unknown() {
        UnknownCallers::Allow => "allowed, each at rate_limit.per_caller's share",
        UnknownCallers::Deny => "refused (403 caller_not_allowed)",
    };
    let listed = config.callers.listed();
    println!(
        "# callers: {} named; callers not named are {unknown}",
        listed.len()
    );
    for ((caller, rate), entry) in listed
        .iter()
        .zip(&config.rate_limit.callers)
        .zip(&raw.callers)
    {
        let own = entry.per_second.is_some() || entry.burst.is_some();
        let share = if own {
            "own share"
        } else {
            "rate_limit.per_caller"
        };
        let routes = match &entry.routes {
            Some(paths) => paths.join(", "),
            None => "every route".to_owned(),
        };
        println!(
            "#   {}: {}/s, burst {} ({share}); routes: {routes}",
            caller.name, rate.per_second, rate.burst
        );
    }
}

/// `check --connect`: the TLS handshake with KwikID through the gateway's own connector.
fn reach_kwikid(config: &Config) -> Result<String, String> {
    let runtime = super::runtime().ok_or("no runtime")?;
    let upstream = kwikid_gateway::upstream::Upstream::new(&config.upstream)
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    runtime.block_on(upstream.probe())
}

/// `check` with `backend = "redis"`: one PING through the same client the gateway uses.
fn reach_redis(config: &Config) -> Result<(), String> {
    let runtime = super::runtime().ok_or("no runtime")?;
    runtime.block_on(async {
        let limits = RateLimits::new(&config.rate_limit)
            .map_err(|_| "cannot create the client".to_owned())?;
        match limits.ping_shared().await {
            Some(Err(kind)) => Err(kind.to_owned()),
            _ => Ok(()),
        }
    })
}
