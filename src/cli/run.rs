//! `kwikid-gateway [--config PATH]`: load, listen, serve until SIGTERM/SIGINT, drain, exit.

use std::path::Path;
use std::process::ExitCode;

use kwikid_gateway::access_log::AccessLog;
use kwikid_gateway::hardening::{self, Refused};
use kwikid_gateway::{Gateway, logging, server};

use super::check::load;

/// Exit 0 after a clean drain, 1 when the gateway cannot run or the drain ended with
/// requests still in flight (answered 503 or cut: the stop was not clean, and a supervisor
/// should say so), 2 for a bad config.
/// `refused`: the hardening steps the kernel refused, logged once logging is up.
pub(crate) fn run(path: &Path, refused: &[Refused]) -> ExitCode {
    let (_raw, config, token) = match load(path) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    logging::init(&config.log);
    hardening::warn(refused);
    for warning in config.warnings() {
        tracing::warn!(path = %path.display(), "config: {warning}");
    }
    let Some(runtime) = super::runtime() else {
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
        let reminders =
            kwikid_gateway::token_watch::spawn(gateway.token_watch.clone(), gateway.token.clone());
        let cert_watcher = kwikid_gateway::cert_reload::spawn(gateway.clone());
        let addr_of =
            |l: &tokio::net::TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let (proxy_addr, admin_addr) = (addr_of(&listener), addr_of(&admin_listener));
        let admin = tokio::spawn(kwikid_gateway::admin::serve(
            admin_listener,
            gateway.clone(),
        ));
        // The listener is bound: connections queue in its backlog until `serve` accepts them.
        // `/readyz` and `kwikid_gateway_ready` agree from the start-up line on.
        gateway.set_ready(true);
        tracing::info!(
            proxy_addr,
            admin_addr,
            tls = gateway.config.listen.tls.is_some(),
            upstream = gateway.config.upstream.authority.as_str(),
            token_id = gateway.token.current().fingerprint.as_str(),
            "kwikid-gateway listening"
        );
        // When the token expires (SPEC §11); an expired one is an error line, not a stop.
        gateway
            .token_watch
            .loaded(&gateway.token.current(), "start");
        let drained = server::serve(listener, gateway.clone(), shutdown).await;
        watcher.abort();
        reminders.abort();
        if let Some(cert_watcher) = cert_watcher {
            cert_watcher.abort();
        }
        gateway.access_log.close();
        admin.abort();
        tracing::info!(clean = drained.is_clean(), "stopped");
        if drained.is_clean() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    })
}
