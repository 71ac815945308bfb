//! Real servers for the integration tests: the mock KwikID in-process (HTTPS, throwaway CA,
//! OS-chosen loopback port) and the gateway as its real binary, with stdout and stderr
//! captured line by line. Readiness is awaited from the gateway's own start-up log line.
//!
//! One set of helpers for every test file; a test that needs another way of doing one of these
//! extends the helper here instead of writing its own:
//! - send a request and read the answer: [`send`], [`try_send`], [`try_send_tls`],
//!   [`ClientConn`] (keep-alive), [`RawConn::round_trip`] (raw bytes);
//! - post an init, or one as a named caller: [`init`], [`init_as`], [`init_request_as`];
//! - wait until something holds: [`eventually`], [`Lines::wait_until`] and the waits on it;
//! - write a config: [`config_for`], [`upstream_table_for`], [`Upstream::config`];
//! - run a process: [`Gateway::start`], [`Gateway::start_command`], [`spawn_followed`],
//!   [`signal`], [`exit_code_within`], [`run_to_exit`], [`assert_exit`], [`check_connect`];
//! - put an HTTP CONNECT egress proxy between the gateway and KwikID: [`egress::ConnectProxy`];
//! - call over HTTP/2: [`h2_caller::H2`], [`h2_caller::for_h2`];
//! - make certificates and see the one served: [`pki::ca`], [`pki::leaf`],
//!   [`pki::client_trusting`], [`pki::served_leaf`].

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The mock KwikID, compiled into each test binary (it is no part of the gateway's library).
#[path = "../../src/mock/mod.rs"]
pub mod mock;

pub mod egress;
pub mod h2_caller;
pub mod pki;

use mock::Mock;

/// The token the gateway holds and the mock accepts. Tests assert it never shows.
pub const TOKEN: &str = "kwk_live_Zm9vYmFyLXNlY3JldC10b2tlbg-7f3a9c1e5b";
pub const INIT: &str = "/verification/v2/digilocker/init";

// ---------------------------------------------------------------------------------------------
// JWTs made by the tests (SPEC §11): header.payload.signature, each base64url without padding.

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A JWT whose payload is `claims` (JSON), with an HS256 header and a signature of bytes
/// unique to this call. Only KwikID checks the signature; the gateway never does.
pub fn jwt(claims: &str) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let unique = format!(
        "signature-{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        unix_now()
    );
    format!(
        "{}.{}.{}",
        B64URL.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        B64URL.encode(claims),
        B64URL.encode(unique)
    )
}

/// A JWT that expires at `exp` (seconds since the Unix epoch), among claims of its own.
pub fn jwt_expiring_at(exp: u64) -> String {
    jwt(&format!(
        r#"{{"iss":"kwikid","sub":"acct-test-1","iat":{},"exp":{exp}}}"#,
        unix_now()
    ))
}

/// `exp` as the gateway writes it: RFC 3339, UTC, whole seconds.
pub fn rfc3339(exp: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(exp)).to_string()
}

/// The token's fingerprint, as the gateway names the token in logs, metrics and `check`.
pub fn fingerprint_of(token: &str) -> String {
    kwikid_gateway::secret::Token::new(token.into())
        .unwrap()
        .fingerprint()
}

/// Asserts that `text` (`what`: which output) holds neither `token` nor any of its
/// `.`-separated segments: a JWT's payload and signature are as secret as the whole.
pub fn assert_token_absent(text: &str, token: &str, what: &str) {
    assert!(!text.contains(token), "the token in {what}:\n{text}");
    for segment in token.split('.').filter(|s| !s.is_empty()) {
        assert!(
            !text.contains(segment),
            "a segment of the token ({segment}) in {what}:\n{text}"
        );
    }
}

/// How long a test waits for any one answer or event before it fails instead of hanging: a
/// hang guard, never a speed limit, so a busy 2-core machine is never a failure.
pub const HANG_GUARD: Duration = Duration::from_secs(30);

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kwikid-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The mock KwikID over HTTPS with a throwaway CA written to a file for `upstream.ca_file`.
/// It can be taken down and brought back on the same port with the same certificate.
pub struct Upstream {
    mock: Option<Mock>,
    pub addr: SocketAddr,
    pub ca_file: PathBuf,
    pub ca_pem: String,
    tls: rustls::ServerConfig,
    _scratch: Scratch,
}

impl Upstream {
    pub async fn start() -> Self {
        let cert = kwikid_gateway::tls::throwaway_server_cert(&["localhost", "127.0.0.1"]).unwrap();
        let scratch = Scratch::new();
        let ca_file = scratch.write("ca.pem", &cert.ca_pem);
        let tls = kwikid_gateway::tls::server_config(cert.chain, cert.key).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mock = Mock::start(listener, TOKEN, Some(tls.clone()), true).unwrap();
        Self {
            addr: mock.addr,
            mock: Some(mock),
            ca_file,
            ca_pem: cert.ca_pem,
            tls,
            _scratch: scratch,
        }
    }

    /// A second mock with the same certificate that accepts only `token` (so the gateway's
    /// token gets KwikID's 401).
    pub async fn another_accepting(&self, token: &str) -> Mock {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Mock::start(listener, token, Some(self.tls.clone()), true).unwrap()
    }

    pub fn mock(&self) -> &Mock {
        self.mock.as_ref().expect("the upstream is up")
    }

    /// Stops the mock: the port refuses connections and open ones are closed.
    pub async fn down(&mut self) {
        if let Some(mock) = self.mock.take() {
            mock.stop().await;
        }
    }

    /// Starts a fresh mock on the same port with the same certificate.
    pub async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.mock = Some(Mock::start(listener, TOKEN, Some(self.tls.clone()), true).unwrap());
    }

    /// A config for a gateway in front of this mock; `extra` is appended (TOML).
    pub fn config(&self, extra: &str) -> String {
        config_for(&self.base_url(), &self.ca_file, extra)
    }

    pub fn base_url(&self) -> String {
        base_url_for(self.addr.port())
    }

    /// `[upstream]` for this mock with other timeouts.
    pub fn upstream_table(&self, connect_timeout: &str, request_timeout: &str) -> String {
        upstream_table_for(
            &self.base_url(),
            Some(&self.ca_file),
            connect_timeout,
            request_timeout,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Configs for a gateway in front of a test KwikID: `config_for` writes the whole file, and
// `upstream_table_for` an `[upstream]` table that replaces its default one.

/// KwikID's `base_url` for a server of the tests on loopback `port`, reached by the name its
/// certificate has: `https://localhost:PORT`.
pub fn base_url_for(port: u16) -> String {
    format!("https://localhost:{port}")
}

/// `[upstream]` for KwikID at `base_url`, trusting the CA in `ca_file` (if any) on top of the
/// public roots, with these timeouts.
pub fn upstream_table_for(
    base_url: &str,
    ca_file: Option<&Path>,
    connect_timeout: &str,
    request_timeout: &str,
) -> String {
    let ca_line = ca_file.map_or_else(String::new, |p| format!("ca_file = \"{}\"\n", p.display()));
    format!(
        "[upstream]\nbase_url = \"{base_url}\"\n{ca_line}connect_timeout = \"{connect_timeout}\"\nrequest_timeout = \"{request_timeout}\"\n"
    )
}

/// A test config: loopback, OS-chosen ports, KwikID at `base_url` trusted through `ca_file`
/// (1 s to connect, 2 s to answer), generous limits, unless `extra` says otherwise. `extra` is
/// appended; a table it has (`[listen]`, `[admin]`, `[upstream]`, `[rate_limit]`) replaces the
/// default one.
pub fn config_for(base_url: &str, ca_file: &Path, extra: &str) -> String {
    let has = |table: &str| extra.contains(&format!("[{table}]"));
    let mut c = String::new();
    if !has("listen") {
        c.push_str("[listen]\naddr = \"127.0.0.1:0\"\n");
    }
    if !has("admin") {
        c.push_str("[admin]\naddr = \"127.0.0.1:0\"\n");
    }
    if !has("upstream") {
        c.push_str(&upstream_table_for(base_url, Some(ca_file), "1s", "2s"));
    }
    if !has("rate_limit") {
        c.push_str("[rate_limit]\nglobal = { per_second = 10000, burst = 10000 }\nper_caller = { per_second = 10000, burst = 10000 }\n");
    }
    c.push_str(extra);
    c
}

/// Lines a child process wrote, with a way to wait for more.
#[derive(Clone, Default)]
pub struct Lines(Arc<(Mutex<Vec<String>>, Condvar)>);

impl Lines {
    fn follow(self, stream: impl std::io::Read + Send + 'static) {
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let (lines, ready) = &*self.0;
                lines.lock().unwrap().push(line);
                ready.notify_all();
            }
        });
    }

    pub fn all(&self) -> Vec<String> {
        self.0.0.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        self.all().join("\n")
    }

    /// Waits (up to `timeout`) until `found` finds what it looks for in the lines so far, and
    /// returns it; woken by each new line, never by a timer. `what` names it if it never comes.
    pub fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        found: impl Fn(&[String]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        let (lines, ready) = &*self.0;
        let mut guard = lines.lock().unwrap();
        loop {
            if let Some(found) = found(&guard) {
                return found;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; lines so far:\n{}",
                guard.join("\n")
            );
            guard = ready.wait_timeout(guard, left).unwrap().0;
        }
    }

    /// Waits until a line satisfies `pred`, and returns it.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        self.wait_until(what, timeout, |lines| {
            lines.iter().find(|l| pred(l)).cloned()
        })
    }

    /// Waits until at least `n` lines satisfy `pred`.
    pub fn wait_for_count(
        &self,
        what: &str,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) {
        self.wait_until(what, timeout, |lines| {
            (lines.iter().filter(|l| pred(l)).count() >= n).then_some(())
        })
    }

    /// Waits until at least `n` lines have arrived, and returns all so far.
    pub fn wait_count(&self, n: usize, timeout: Duration) -> Vec<String> {
        self.wait_until(&format!("{n} lines"), timeout, |lines| {
            (lines.len() >= n).then(|| lines.to_vec())
        })
    }
}

/// The gateway binary, running.
pub struct Gateway {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub stdout: Lines,
    pub stderr: Lines,
    pub config_path: PathBuf,
    pub scratch: Scratch,
}

/// The environment variables that name an egress proxy for KwikID (SPEC §3).
pub const PROXY_VARIABLES: [&str; 6] = [
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// The gateway binary, hermetic: neither `KWIKID_API_TOKEN`, `KWIKID_GATEWAY_CONFIG` nor a
/// proxy variable comes from the environment the tests run in.
pub fn gateway_bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kwikid-gateway"));
    cmd.env_remove("KWIKID_API_TOKEN")
        .env_remove("KWIKID_GATEWAY_CONFIG");
    for variable in PROXY_VARIABLES {
        cmd.env_remove(variable);
    }
    cmd
}

/// [`gateway_bin`] with the test token in `KWIKID_API_TOKEN`.
pub fn gateway_with_token() -> Command {
    let mut cmd = gateway_bin();
    cmd.env("KWIKID_API_TOKEN", TOKEN);
    cmd
}

/// `kwikid-gateway check --config PATH` with the test token.
pub fn check_config(path: &Path) -> std::process::Output {
    gateway_with_token()
        .arg("check")
        .arg("--config")
        .arg(path)
        .output()
        .unwrap()
}

/// `kwikid-gateway check --connect --config PATH` with the test token and `env` added, run
/// off the runtime's threads (the mock it reaches runs on them): its output.
pub async fn check_connect(path: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = gateway_with_token();
    cmd.args(["check", "--connect", "--config"]).arg(path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// Starts `cmd` with stdin closed and its stdout and stderr followed line by line.
pub fn spawn_followed(cmd: &mut Command) -> (Child, Lines, Lines) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {:?}: {e}", cmd.get_program()));
    let stdout = Lines::from_stream(child.stdout.take().unwrap());
    let stderr = Lines::from_stream(child.stderr.take().unwrap());
    (child, stdout, stderr)
}

/// Sends a signal (`TERM`, `HUP`, `INT`, …) to process `pid`.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}: {status}");
}

/// Asserts that a finished process exited with `code`; a failure shows what it wrote to
/// stderr.
pub fn assert_exit(out: &std::process::Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Gateway {
    /// Starts the gateway with `config` (TOML) and the test token in `KWIKID_API_TOKEN`, and
    /// waits for its start-up line.
    pub fn start(config: &str) -> Self {
        Self::start_with_env(config, &[("KWIKID_API_TOKEN", TOKEN)])
    }

    /// Like [`Self::start`], with exactly the environment variables in `env` (no token unless
    /// `env` has one).
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Self {
        let scratch = Scratch::new();
        let config_path = scratch.write("gateway.toml", config);
        let mut cmd = gateway_bin();
        cmd.arg("--config").arg(&config_path);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::start_command(cmd, config_path, scratch)
    }

    /// Starts the gateway as `cmd` says (its own command line, environment or working
    /// directory; `config_path` is the config it reads, in `scratch`) and waits for its JSON
    /// start-up line.
    pub fn start_command(mut cmd: Command, config_path: PathBuf, scratch: Scratch) -> Self {
        let (child, stdout, stderr) = spawn_followed(&mut cmd);
        let line = stderr.wait_for("the start-up line", Duration::from_secs(30), |l| {
            l.contains("\"proxy_addr\"")
        });
        let json: serde_json::Value = serde_json::from_str(&line).expect("start-up line is JSON");
        let addr = json["proxy_addr"].as_str().unwrap().parse().unwrap();
        let admin = json["admin_addr"].as_str().unwrap().parse().unwrap();
        Self {
            child,
            addr,
            admin,
            stdout,
            stderr,
            config_path,
            scratch,
        }
    }

    /// The access-log lines so far, parsed.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        self.stdout
            .all()
            .iter()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("access log line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    /// Waits for the `n`th access-log line (1-based) and returns it parsed.
    pub fn access_line(&self, n: usize) -> serde_json::Value {
        let lines = self.stdout.wait_count(n, Duration::from_secs(10));
        serde_json::from_str(&lines[n - 1]).unwrap()
    }

    /// Waits (up to [`HANG_GUARD`]) for the access-log line that contains `needle` (such as
    /// `"request_id":"abc"`) and returns it parsed; `what` names it if it never comes.
    pub fn access_line_with(&self, what: &str, needle: &str) -> serde_json::Value {
        let line = self
            .stdout
            .wait_for(what, HANG_GUARD, |l| l.contains(needle));
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("access log line is not JSON ({e}): {line}"))
    }

    /// The gateway's warnings that an exchange with KwikID failed (`upstream request
    /// failed`, JSON log format), parsed, in order.
    pub fn upstream_warnings(&self) -> Vec<serde_json::Value> {
        self.stderr
            .all()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["level"] == "WARN" && l["message"] == "upstream request failed")
            .collect()
    }

    /// Waits (up to [`HANG_GUARD`]) for an `upstream request failed` warning of `kind` and
    /// returns it parsed.
    pub fn upstream_warning(&self, kind: &str) -> serde_json::Value {
        let needle = format!("\"kind\":\"{kind}\"");
        self.stderr.wait_for(
            &format!("an upstream warning of kind {kind}"),
            HANG_GUARD,
            |l| l.contains("upstream request failed") && l.contains(&needle),
        );
        self.upstream_warnings()
            .into_iter()
            .find(|w| w["kind"] == kind)
            .unwrap()
    }

    /// Sends a signal (`TERM`, `HUP`, …) to the gateway process.
    pub fn signal(&self, name: &str) {
        signal(self.child.id(), name);
    }

    /// Waits (up to 40 s) for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        exit_code_within(&mut self.child, Duration::from_secs(40))
    }

    /// [`Self::wait_exit`] off the runtime's threads, for async tests: the exit code, and the
    /// gateway back for reading its logs.
    pub async fn exited(mut self) -> (Option<i32>, Self) {
        tokio::task::spawn_blocking(move || (self.wait_exit(), self))
            .await
            .unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on the admin listener: status and body.
pub async fn admin_get(addr: SocketAddr, path: &str) -> Answer {
    send(
        addr,
        Request::get(path)
            .header("host", "admin")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
}

/// The admin listener's `/metrics` exposition; it must answer 200.
pub async fn metrics(admin: SocketAddr) -> String {
    let answer = admin_get(admin, "/metrics").await;
    assert_eq!(answer.status, 200, "/metrics: {}", answer.text());
    answer.text()
}

/// `GET /metrics` on the admin listener with `Accept: accept`: the exposition as that
/// scraper gets it.
pub async fn metrics_accepting(admin: SocketAddr, accept: &str) -> Answer {
    send(
        admin,
        Request::get("/metrics")
            .header("host", "admin")
            .header("accept", accept)
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
}

/// `promtool` (Debian's `prometheus` package), as [`tool`] finds it.
pub fn promtool() -> Option<Command> {
    tool("promtool", "prometheus", "KWIKID_SKIP_PROMTOOL")
}

/// `program`, which Debian's `package` installs. Not installed, the test fails, unless the
/// environment variable `skip` is `1`: then it says on stderr that it checked nothing, and
/// gets `None` (the `KWIKID_SKIP_REDIS` pattern of tests/shared_limits.rs).
pub fn tool(program: &str, package: &str, skip: &str) -> Option<Command> {
    let installed = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if installed {
        return Some(Command::new(program));
    }
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    assert!(
        std::env::var(skip).as_deref() == Ok("1"),
        "{test}: {program} is not installed. Install it (Debian/Ubuntu: apt-get install \
         {package}), or set {skip}=1 to skip the checks that need it"
    );
    // Straight to stderr, past the test harness's output capture: a skip is never silent.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("SKIPPED {test}: {program} is not installed and {skip}=1; nothing was checked\n")
            .as_bytes(),
    );
    None
}

/// Runs `cmd` with `input` on its stdin: its exit code and what it wrote to stdout and
/// stderr together.
pub fn run_with_stdin(mut cmd: Command, input: &[u8]) -> (Option<i32>, String) {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {:?}: {e}", cmd.get_program()));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// The value of the sample `series` (a metric name with its labels, if any, exactly as
/// exposed) in `metrics`, `None` when it is absent. A value that is not a number fails.
pub fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{series} {v}: not a number ({e})"))
        })
}

/// Polls `check` every 10 ms until it holds (or panics after `timeout`). The one way the
/// tests wait for a state they cannot be told about: a count, a metric, a refused connection.
pub async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A response as the caller sees it.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The gateway's own error code, if it answered itself.
    pub fn gateway_error(&self) -> Option<&str> {
        self.headers
            .get("x-gateway-error")
            .map(|v| v.to_str().unwrap())
    }

    /// The `Retry-After` this answer carries, in whole seconds.
    pub fn retry_after(&self) -> u64 {
        let value = self
            .headers
            .get("retry-after")
            .unwrap_or_else(|| panic!("no retry-after: {:?}", self.headers));
        value
            .to_str()
            .unwrap()
            .parse()
            .unwrap_or_else(|e| panic!("retry-after {value:?}: {e}"))
    }

    /// Asserts a gateway error: status, code header and a JSON `{"error": "..."}` body.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        assert_eq!(self.gateway_error(), Some(code), "body: {}", self.text());
        assert_eq!(self.headers["content-type"], "application/json");
        let json = self.json();
        assert!(
            json["error"].as_str().is_some_and(|s| !s.is_empty()),
            "{json}"
        );
        assert_eq!(json.as_object().unwrap().len(), 1, "{json}");
    }
}

/// A client's HTTP/1.1 connection (hyper) over any stream, plain TCP or TLS: requests go out
/// one after another on it (keep-alive), the target kept byte for byte.
pub struct ClientConn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl ClientConn {
    /// A connection over plain TCP to `addr`.
    pub async fn connect(addr: SocketAddr) -> Result<Self, String> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        Self::over(stream).await
    }

    /// A connection over TLS to `addr`, verifying the server as `localhost` with `config`;
    /// `Err` when the TLS handshake fails.
    pub async fn connect_tls(
        addr: SocketAddr,
        config: rustls::ClientConfig,
    ) -> Result<Self, String> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(
                rustls_pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        Self::over(tls).await
    }

    /// An HTTP/1.1 connection over `io`, already connected.
    pub async fn over<S>(io: S) -> Result<Self, String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(connection);
        Ok(Self { sender })
    }

    /// Sends `request` once the connection is ready and reads the whole answer; a protocol
    /// failure or a closed connection is an `Err`. No time limit: see [`Self::send_within`].
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Answer, String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// [`Self::send`], with a hang guard: no whole answer within `within` fails the test.
    pub async fn send_within(
        &mut self,
        request: Request<Full<Bytes>>,
        within: Duration,
    ) -> Result<Answer, String> {
        hang_guard(within, self.send(request)).await
    }
}

/// Awaits `exchange`, and fails the test (instead of hanging, or passing as an error) when it
/// has not finished within `within`.
async fn hang_guard<T>(within: Duration, exchange: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(within, exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer within {within:?}"))
}

/// Sends one request on a new connection and returns the answer; the target is kept byte for
/// byte. Anything but a whole HTTP answer within 20 s fails the test.
pub async fn send(addr: SocketAddr, request: Request<Full<Bytes>>) -> Answer {
    try_send(addr, request, Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("an HTTP answer: {e}"))
}

/// Like [`send`], but a connection or protocol failure (refused, reset, closed without an
/// answer) is an `Err`, not a panic. The whole exchange, connect included, must end within
/// `within`: a hang fails the test, it is never taken for an error.
pub async fn try_send(
    addr: SocketAddr,
    request: Request<Full<Bytes>>,
    within: Duration,
) -> Result<Answer, String> {
    hang_guard(within, async {
        ClientConn::connect(addr).await?.send(request).await
    })
    .await
}

/// [`try_send`] over TLS, verifying the server as `localhost` with `config`: a failed TLS
/// handshake is an `Err`.
pub async fn try_send_tls(
    addr: SocketAddr,
    config: rustls::ClientConfig,
    request: Request<Full<Bytes>>,
    within: Duration,
) -> Result<Answer, String> {
    hang_guard(within, async {
        ClientConn::connect_tls(addr, config)
            .await?
            .send(request)
            .await
    })
    .await
}

/// A POST of `body` to `target` with these extra headers.
pub fn post(target: &str, body: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::post(target)
        .header("host", "gateway.internal")
        .header("content-type", "application/json");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// An HTTP/1.1 init (`{}` body) in raw bytes that leaves the connection open, with
/// `X-Request-Id: id`.
pub fn raw_init_with_id(id: &str) -> Vec<u8> {
    format!(
        "POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nX-Request-Id: {id}\r\nContent-Length: 2\r\n\r\n{{}}"
    )
    .into_bytes()
}

/// The usual init call.
pub async fn init(addr: SocketAddr, body: &str) -> Answer {
    send(addr, post(INIT, body, &[])).await
}

/// An init of `{}` posted as the caller `caller` names itself (`x-caller-id: caller`), for
/// [`try_send`] and the like; [`init_as`] sends it.
pub fn init_request_as(caller: &str) -> Request<Full<Bytes>> {
    post(INIT, "{}", &[("x-caller-id", caller)])
}

/// Posts an init of `{}` as the caller `caller` (`x-caller-id: caller`) and returns the
/// answer: the one way the tests speak as a named caller.
pub async fn init_as(addr: SocketAddr, caller: &str) -> Answer {
    send(addr, init_request_as(caller)).await
}

/// Writes raw bytes and reads until the server closes (or 10 s pass).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in a raw answer.
pub fn raw_status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 connections, process probes and fallible requests, for tests/properties.rs,
// tests/hostile.rs and tests/chaos.rs.

/// One response read off a raw connection.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// The status line and headers, as received.
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.header_all(name).into_iter().next()
    }
}

/// A client connection that writes raw bytes and reads responses one at a time, keeping what
/// it read past a response for the next one (pipelining).
pub struct RawConn {
    pub stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self {
            stream: tokio::net::TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    async fn fill(&mut self, deadline: tokio::time::Instant) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no response in time",
            )),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Ok(Err(e)) => Err(e),
        }
    }

    /// The next response (framed by Content-Length; none means no body). `Ok(None)`: the
    /// server closed the connection cleanly before sending another byte. An interim `1xx`
    /// response is skipped.
    pub async fn read_response(
        &mut self,
        within: Duration,
    ) -> std::io::Result<Option<RawResponse>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let head_end = loop {
                if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                if self.fill(deadline).await? == 0 {
                    return if self.buf.is_empty() {
                        Ok(None)
                    } else {
                        Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!(
                                "closed mid-response: {:?}",
                                String::from_utf8_lossy(&self.buf)
                            ),
                        ))
                    };
                }
            };
            let head = String::from_utf8_lossy(&self.buf[..head_end - 4]).into_owned();
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("no status line: {head:?}"),
                    )
                })?;
            let mut response = RawResponse {
                status,
                head,
                body: Vec::new(),
            };
            let length: usize = response
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while self.buf.len() < head_end + length {
                if self.fill(deadline).await? == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "closed mid-body",
                    ));
                }
            }
            response.body = self.buf[head_end..head_end + length].to_vec();
            self.buf.drain(..head_end + length);
            if !(100..200).contains(&status) {
                return Ok(Some(response));
            }
        }
    }

    /// The next final response, within [`HANG_GUARD`]; a timeout, a reset or a close without
    /// one fails the test.
    pub async fn next_response(&mut self) -> RawResponse {
        self.read_response(HANG_GUARD)
            .await
            .expect("a response, not an error")
            .expect("a response, not a closed connection")
    }

    /// Writes `bytes` (a whole request) and returns the next final response, as
    /// [`Self::next_response`] reads it.
    pub async fn round_trip(&mut self, bytes: &[u8]) -> RawResponse {
        self.send(bytes).await.expect("the request is written");
        self.next_response().await
    }

    /// Whether the server closes the connection (EOF or reset) within `within`, with no
    /// further response bytes; `Err` carries bytes it sent instead.
    pub async fn closed_within(&mut self, within: Duration) -> Result<bool, String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match self.fill(deadline).await {
                Ok(0) | Err(_) if !self.buf.is_empty() => {
                    return Err(String::from_utf8_lossy(&self.buf).into_owned());
                }
                Ok(0) => return Ok(true),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Ok(false),
                Err(_) => return Ok(true),
            }
        }
    }
}

/// Open file descriptors of process `pid` (Linux `/proc`).
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident memory of process `pid` in KiB (Linux `/proc`).
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// Memory process `pid` holds locked against swap (`mlock`), in KiB (Linux `/proc`).
pub fn locked_kib(pid: u32) -> u64 {
    status_kib(pid, "VmLck")
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS`, `VmLck`, …); 0 if it cannot be read.
fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A resource limit of process `pid` (`"self"` for this one) as `/proc/<pid>/limits` shows
/// it: `(soft, hard)`, each a number or `unlimited`. `name` is the row's name, such as
/// `Max core file size` or `Max open files`.
pub fn proc_limit(pid: &str, name: &str) -> Option<(String, String)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let row = limits.lines().find_map(|l| l.strip_prefix(name))?;
    let mut values = row.split_whitespace();
    Some((values.next()?.to_owned(), values.next()?.to_owned()))
}

/// This process's soft limit on open files (`ulimit -n`), from `/proc/self/limits`.
pub fn open_files_soft_limit() -> u64 {
    proc_limit("self", "Max open files")
        .and_then(|(soft, _)| soft.parse().ok())
        .unwrap_or(1024)
}

// ---------------------------------------------------------------------------------------------
// Another user: the gateway run as an unprivileged user, to see what the other processes of
// that user can and cannot do to it.

/// The user and group id the gateway runs as in those tests: 65534 (`nobody` and `nogroup` on
/// Debian), unprivileged everywhere.
pub const NOBODY: u32 = 65534;

/// `setpriv` running what follows as [`NOBODY`], with no supplementary groups (hence no
/// capabilities either), and neither `KWIKID_API_TOKEN` nor `KWIKID_GATEWAY_CONFIG` from the
/// tests' environment. `None` when the tests do not run as root and so cannot switch users:
/// then `test` is reported `SKIPPED …` on stderr (past the harness's capture, like the Redis
/// tests).
pub fn as_nobody(test: &str) -> Option<Command> {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED {test}: needs root, to run processes as uid {NOBODY} with setpriv");
        return None;
    }
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .arg("--")
        .env_remove("KWIKID_API_TOKEN")
        .env_remove("KWIKID_GATEWAY_CONFIG");
    Some(cmd)
}

impl Scratch {
    /// Hands the directory to [`NOBODY`] (owner, mode 0700), so a gateway run as that user can
    /// read what it holds.
    pub fn give_to_nobody(&self) {
        use std::os::unix::fs::PermissionsExt;
        std::os::unix::fs::chown(&self.0, Some(NOBODY), Some(NOBODY)).unwrap();
        std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o700)).unwrap();
    }

    /// Writes `contents` as `name`, owned by [`NOBODY`] and readable by it alone (0600), the
    /// way a token file is deployed; an existing file is replaced by a rename, so a reader
    /// never sees it half written.
    pub fn write_for_nobody(&self, name: &str, contents: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.0.join(name);
        let tmp = self.0.join(format!("{name}.tmp"));
        std::fs::write(&tmp, contents).unwrap();
        std::os::unix::fs::chown(&tmp, Some(NOBODY), Some(NOBODY)).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }
}

/// The gateway binary at a path [`NOBODY`] can run: where Cargo built it when every directory
/// on the way lets others through, else a copy in `scratch` (given to nobody first).
pub fn gateway_bin_for_nobody(scratch: &Scratch) -> PathBuf {
    let built = PathBuf::from(env!("CARGO_BIN_EXE_kwikid-gateway"));
    let reachable = as_nobody("gateway_bin_for_nobody")
        .and_then(|mut cmd| cmd.arg("test").arg("-x").arg(&built).status().ok())
        .is_some_and(|status| status.success());
    if reachable {
        return built;
    }
    let copy = scratch.0.join("kwikid-gateway");
    std::fs::copy(&built, &copy).unwrap();
    std::os::unix::fs::chown(&copy, Some(NOBODY), Some(NOBODY)).unwrap();
    copy
}

impl Lines {
    /// The lines `stream` (a child process's stdout or stderr) writes, collected as they come.
    pub fn from_stream(stream: impl std::io::Read + Send + 'static) -> Self {
        let lines = Self::default();
        lines.clone().follow(stream);
        lines
    }
}

// ---------------------------------------------------------------------------------------------
// Refusals of a request head the gateway could not read: malformed (400), too large (431),
// too slow (408).
//
// The gateway's answers to heads it cannot read come from hyper (issue 11 accepts them): a
// bare status line with `connection: close` and no body, or, for a head too slow, no answer
// at all; either way the connection is closed, and the gateway counts the refusal in
// `kwikid_gateway_connection_errors_total{kind}`. There is no access-log line: no request
// was read. These three helpers are the one place that pins those answers.

/// 431 (more than 64 headers or 16 KiB of head), read off `conn`; then the connection is
/// closed and the refusal counted as `headers_too_large`.
pub async fn assert_431(gw: &Gateway, conn: &mut RawConn) {
    assert_bare_refusal(gw, conn, 431, "headers_too_large").await;
}

/// A head that started but did not finish within `listen.header_read_timeout`: the
/// connection is closed without an answer, and the refusal counted as `header_timeout`.
pub async fn assert_408_header_timeout(gw: &Gateway, conn: &mut RawConn) {
    assert_eq!(
        conn.closed_within(HANG_GUARD).await,
        Ok(true),
        "a head that is too slow ends the connection"
    );
    assert_counted(gw, "header_timeout").await;
}

/// 400 (a malformed head, or framing RFC 9112 refuses), read off `conn`; then the connection
/// is closed and the refusal counted as `bad_request`.
pub async fn assert_400_bad_request(gw: &Gateway, conn: &mut RawConn) {
    assert_bare_refusal(gw, conn, 400, "bad_request").await;
}

async fn assert_bare_refusal(gw: &Gateway, conn: &mut RawConn, status: u16, kind: &str) {
    let answer = conn
        .read_response(HANG_GUARD)
        .await
        .unwrap_or_else(|e| panic!("{status} {kind}: no answer: {e}"))
        .unwrap_or_else(|| panic!("{status} {kind}: closed without an answer"));
    let head = &answer.head;
    assert!(
        head.starts_with(&format!("HTTP/1.1 {status} ")),
        "{status} {kind}: {head}"
    );
    assert_eq!(
        answer.header("connection").as_deref(),
        Some("close"),
        "{head}"
    );
    assert!(answer.body.is_empty(), "{head}");
    assert_eq!(
        conn.closed_within(HANG_GUARD).await,
        Ok(true),
        "{status} {kind}: the connection is closed after the answer"
    );
    assert_counted(gw, kind).await;
}

/// `kwikid_gateway_connection_errors_total{kind}` counts at least one refusal.
async fn assert_counted(gw: &Gateway, kind: &str) {
    let series = format!("kwikid_gateway_connection_errors_total{{kind=\"{kind}\"}}");
    eventually(
        &format!("{series} to count the refusal"),
        HANG_GUARD,
        || async { metric(&metrics(gw.admin).await, &series).is_some_and(|n| n >= 1.0) },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// The gateway's own answers to a request whose head it read, as a caller reads them off a raw
// connection.

/// The gateway's 404 `no_route` body, byte for byte.
pub const NO_ROUTE_BODY: &str = r#"{"error":"No route matches this path."}"#;
/// The gateway's 405 `method_not_allowed` body, byte for byte.
pub const METHOD_BODY: &str = r#"{"error":"This method is not allowed on this path."}"#;
/// The gateway's 413 `body_too_large` body, byte for byte.
pub const TOO_LARGE_BODY: &str =
    r#"{"error":"The request body is larger than the gateway accepts."}"#;
/// The gateway's 408 `body_timeout` body, byte for byte.
pub const BODY_TIMEOUT_BODY: &str = r#"{"error":"The request body did not arrive in time."}"#;
/// The gateway's 400 `invalid_body` body for a body it could not read, byte for byte.
pub const UNREADABLE_BODY: &str = r#"{"error":"The request body could not be read."}"#;
/// The gateway's 502 `upstream_unavailable` body, byte for byte.
pub const UNAVAILABLE_BODY: &str =
    r#"{"error":"KwikID could not be reached or did not answer properly."}"#;
/// The gateway's 503 `shutting_down` body (the drain's grace ended first), byte for byte.
pub const SHUTTING_DOWN_BODY: &str =
    r#"{"error":"The gateway is shutting down and did not finish this request; send it again."}"#;
/// KwikID's (the mock's) 401 body for a token it does not accept, byte for byte.
pub const KWIKID_401_BODY: &str = r#"{"detail": {}, "message": "Invalid or expired token."}"#;

/// One of the gateway's own answers, read off a raw connection: `status`, `x-gateway-error:
/// code`, a JSON content type, and exactly `body`.
pub fn assert_gateway_answer(r: &RawResponse, status: u16, code: &str, body: &str) {
    assert_eq!(r.status, status, "{}", r.head);
    assert_eq!(
        r.header("x-gateway-error").as_deref(),
        Some(code),
        "{}",
        r.head
    );
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json"),
        "{}",
        r.head
    );
    assert_eq!(String::from_utf8_lossy(&r.body), body, "{}", r.head);
}

/// The next response on `conn` is the gateway's own refusal (see [`assert_gateway_answer`])
/// with `connection: close`; then the connection is closed. An empty or partial reply fails.
pub async fn assert_refused_then_closed(conn: &mut RawConn, status: u16, code: &str, body: &str) {
    let r = conn.next_response().await;
    assert_gateway_answer(&r, status, code, body);
    assert_eq!(
        r.header("connection").as_deref(),
        Some("close"),
        "{}",
        r.head
    );
    assert_eq!(
        conn.closed_within(HANG_GUARD).await,
        Ok(true),
        "closed after the {status}"
    );
}

// ---------------------------------------------------------------------------------------------
// Processes started by a test itself (the gateway with its own command line, `kwikid-mock`).

/// Waits (up to `within`) for `child` to exit by itself and returns its exit code; a child
/// still running then is killed and the test fails instead of hanging.
pub fn exit_code_within(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the process did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads `stream` (a child's stdout or stderr) to its end on a thread of its own: joined
/// after the child exits, it holds every byte the child wrote.
pub fn read_all(
    mut stream: impl std::io::Read + Send + 'static,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stream, &mut text);
        text
    })
}

/// Runs `cmd` until it exits by itself (within `within`): its exit code, and everything it
/// wrote to stdout and to stderr.
pub fn run_to_exit(mut cmd: Command, within: Duration) -> (Option<i32>, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the process");
    let stdout = read_all(child.stdout.take().unwrap());
    let stderr = read_all(child.stderr.take().unwrap());
    let code = exit_code_within(&mut child, within);
    (code, stdout.join().unwrap(), stderr.join().unwrap())
}

/// The body the mock made when it answered its `n`th request (1-based) with 200: built, as
/// the mock builds it, from the Host and Authorization that request carried and the mock's
/// count. A caller's body equal to this is KwikID's answer byte for byte.
pub fn mock_ok_body(mock: &Mock, n: usize) -> Vec<u8> {
    let received = mock.received();
    let seen = received
        .get(n - 1)
        .unwrap_or_else(|| panic!("the mock received {} requests, not {n}", received.len()));
    let host = seen
        .host()
        .unwrap_or_else(|| panic!("request {n} reached the mock without Host or :authority"));
    let authorization = seen
        .headers
        .get("authorization")
        .unwrap_or_else(|| panic!("request {n} reached the mock without authorization"))
        .to_str()
        .unwrap();
    let url = mock::redirection_url(host, authorization, n as u64);
    serde_json::json!({ "redirection_url": url })
        .to_string()
        .into_bytes()
}
