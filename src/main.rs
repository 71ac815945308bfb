//! `kwikid-gateway`: run the gateway, check a config, try it with `demo`, or print its shell
//! completions and man page.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod cli;

/// A reverse proxy that holds the KwikID API token so your services never do.
///
/// Trusted internal callers POST /verification/v2/digilocker/init without credentials; the
/// gateway checks them, rate-limits them, attaches `Authorization: Bearer <token>` and forwards
/// to KwikID over HTTPS, answering with KwikID's response unchanged. The access log (stdout)
/// never contains the token or the redirection_url.
///
/// Exit codes: 0 clean shutdown, 1 runtime failure (a drain that ended with requests still in
/// flight included), 2 bad usage or bad config.
#[derive(Parser)]
#[command(
    name = "kwikid-gateway",
    version,
    after_help = "Try it with no KwikID account: kwikid-gateway demo"
)]
struct Cli {
    #[command(flatten)]
    config: ConfigPath,
    #[command(subcommand)]
    command: Option<Command>,
}

/// `--config` for running; `check` takes it before or after its name. Only the commands that
/// read a config take it, so `demo --help` offers only what the demo uses.
#[derive(clap::Args)]
struct ConfigPath {
    /// The TOML config file [default: config.toml].
    #[arg(long, env = "KWIKID_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
}

impl ConfigPath {
    /// The file to read: `given` (a `--config` after the subcommand's name) first, then this
    /// one (given before it, or the variable), then `./config.toml`. The variable is read
    /// here only, so it never wins over a `--config` on either side.
    fn resolve(self, given: Option<PathBuf>) -> PathBuf {
        given
            .or(self.config)
            .unwrap_or_else(|| PathBuf::from("config.toml"))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Validate the config and the token source, print the effective config (token redacted).
    Check {
        /// The TOML config file [default: config.toml, or $KWIKID_GATEWAY_CONFIG].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also connect to KwikID (DNS, TCP, the egress proxy, TLS) without sending a request;
        /// exit 2 with the cause when that fails.
        #[arg(long)]
        connect: bool,
    },
    /// Start a mock KwikID and the gateway on loopback, send one init, then serve until Ctrl-C.
    Demo,
    /// Print a completion script for SHELL, e.g. `source <(kwikid-gateway completions bash)`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `kwikid-gateway man | man -l -`.
    Man,
}

/// jemalloc: an idle keep-alive connection's buffers cost only the pages written (glibc's
/// malloc touches more around each 8 KiB buffer), and with its background thread (see
/// `.cargo/config.toml`) memory freed after a burst goes back to the OS. Measured in the
/// README's Performance section.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // First, before any subcommand reads the token: no core files, not dumpable. What the
    // kernel refuses is reported by the subcommand once its logging is up.
    let refused = kwikid_gateway::hardening::harden();
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
        None => cli::run::run(&cli.config.resolve(None), &refused),
        Some(Command::Check { config, connect }) => {
            cli::check::check(&cli.config.resolve(config), connect, &refused)
        }
        Some(Command::Demo) => cli::runtime().map_or(ExitCode::from(1), |rt| {
            rt.block_on(cli::demo::run(&refused))
        }),
        Some(Command::Completions { shell }) => cli::docs::completions(shell, Cli::command()),
        Some(Command::Man) => cli::docs::man(Cli::command()),
    }
}
