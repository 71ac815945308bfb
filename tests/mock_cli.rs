//! The `kwikid-mock` command line, as the README documents it: the binary the demo, the
//! benchmarks and anyone trying the gateway by hand start. It prints the address it bound,
//! writes its throwaway CA where `--ca-out` says, answers as KwikID does (200 with the right
//! token, 400 without `Authorization`, 401 with another token), serves plain HTTP with
//! `--plain-http`, and misbehaves as `--fault` says.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use support::*;

/// The token the mock process accepts in these tests.
const MOCK_TOKEN: &str = "mock-cli-token-4d2e9a";

/// The `kwikid-mock` binary, with no `KWIKID_API_TOKEN` from the tests' environment.
fn mock_bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kwikid-mock"));
    cmd.env_remove("KWIKID_API_TOKEN");
    cmd
}

/// A `kwikid-mock` process, killed on drop.
struct MockProcess {
    child: Child,
    /// The scheme and bound address from its "listening on" line.
    scheme: String,
    addr: SocketAddr,
    stderr: Lines,
}

impl MockProcess {
    /// Starts `kwikid-mock --listen 127.0.0.1:0 --token TOKEN ARGS…` and reads the address it
    /// bound from its "listening on" line.
    fn start(token: &str, args: &[&std::ffi::OsStr]) -> Self {
        let mut cmd = mock_bin();
        cmd.args(["--listen", "127.0.0.1:0", "--token", token])
            .args(args);
        let (child, stdout, stderr) = spawn_followed(&mut cmd);
        let line = stdout.wait_for("the listening line", Duration::from_secs(30), |l| {
            l.starts_with("kwikid-mock listening on ")
        });
        let url = line.trim_start_matches("kwikid-mock listening on ");
        let (scheme, addr) = url
            .split_once("://")
            .unwrap_or_else(|| panic!("not a URL: {line}"));
        Self {
            child,
            scheme: scheme.to_owned(),
            addr: addr
                .parse()
                .unwrap_or_else(|e| panic!("not an address ({e}): {line}")),
            stderr,
        }
    }

    /// Sends SIGTERM and waits for the exit code.
    fn terminate(&mut self) -> Option<i32> {
        signal(self.child.id(), "TERM");
        exit_code_within(&mut self.child, Duration::from_secs(30))
    }
}

impl Drop for MockProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client config that trusts only the certificates in `ca_file` (PEM).
fn trusting(ca_file: &Path) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(kwikid_gateway::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Asserts a JSON answer with exactly this status and body.
fn assert_answer(answer: &Answer, status: u16, body: &str) {
    assert_eq!(answer.status.as_u16(), status, "{}", answer.text());
    assert_eq!(answer.headers["content-type"], "application/json");
    assert_eq!(answer.text(), body);
}

/// Over HTTPS with its throwaway certificate: the CA it writes to `--ca-out` is what a client
/// needs (one trusting only the public roots is refused), the right token gets 200 and a
/// `redirection_url` of KwikID's shape, no `Authorization` gets 400 and another token 401,
/// each with KwikID's body; a gateway given the file as `upstream.ca_file` reaches it; SIGTERM
/// stops it with exit 0. Guards the documented way of starting the mock by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mock_serves_https_with_the_ca_it_writes_and_answers_as_kwikid() {
    let scratch = Scratch::new();
    let ca_out = scratch.0.join("mock-ca.pem");
    let mut mock = MockProcess::start(MOCK_TOKEN, &["--ca-out".as_ref(), ca_out.as_ref()]);
    assert_eq!(mock.scheme, "https");
    assert_eq!(mock.addr.ip().to_string(), "127.0.0.1");
    assert_ne!(mock.addr.port(), 0, "the bound port, not the one asked for");

    let rejected = try_send_tls(
        mock.addr,
        kwikid_gateway::tls::client_config(&[]).unwrap(),
        post(INIT, "{}", &[]),
        HANG_GUARD,
    )
    .await;
    assert!(
        rejected.is_err(),
        "the public roots do not trust the throwaway certificate: {rejected:?}"
    );

    let bearer = format!("Bearer {MOCK_TOKEN}");
    let ok = try_send_tls(
        mock.addr,
        trusting(&ca_out),
        post(INIT, "{}", &[("authorization", &bearer)]),
        HANG_GUARD,
    )
    .await
    .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.headers["content-type"], "application/json");
    let json = ok.json();
    assert_eq!(json.as_object().unwrap().len(), 1, "{json}");
    let url = json["redirection_url"].as_str().unwrap();
    assert!(
        url.starts_with(
            "https://gateway.internal/verification/v2/digilocker/redirect?redirection_url="
        ),
        "{url}"
    );
    assert!(
        url.contains(&format!("&client_id={}&", B64.encode("kwikid-mock"))),
        "{url}"
    );
    assert!(
        url.ends_with(&format!("&authorization={}", B64.encode(&bearer))),
        "{url}"
    );

    let missing = try_send_tls(
        mock.addr,
        trusting(&ca_out),
        post(INIT, "{}", &[]),
        HANG_GUARD,
    )
    .await
    .unwrap();
    assert_answer(
        &missing,
        400,
        r#"{"error": "Authorization token is required."}"#,
    );
    let other = try_send_tls(
        mock.addr,
        trusting(&ca_out),
        post(INIT, "{}", &[("authorization", "Bearer another-token")]),
        HANG_GUARD,
    )
    .await
    .unwrap();
    assert_answer(&other, 401, KWIKID_401_BODY);

    assert_eq!(mock.terminate(), Some(0), "{}", mock.stderr.text());
}

/// The file `--ca-out` writes works as the gateway's `upstream.ca_file`, as the README's
/// manual set-up uses it: a request through the gateway reaches the mock process and gets
/// its 200. Guards a CA file that is written but is not the one that signed the certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_it_writes_is_a_gateway_upstream_ca_file() {
    let scratch = Scratch::new();
    let ca_out = scratch.0.join("mock-ca.pem");
    let mock = MockProcess::start(TOKEN, &["--ca-out".as_ref(), ca_out.as_ref()]);
    let gw = Gateway::start(&config_for(&base_url_for(mock.addr.port()), &ca_out, ""));
    let answer = init(gw.addr, "{}").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(answer.json()["redirection_url"].is_string());
}

/// `--plain-http` serves plain HTTP (and says `http://`), still answering as KwikID does.
/// Guards the flag being ignored (benchmarks that compare against a plain upstream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_serves_without_tls() {
    let mock = MockProcess::start(MOCK_TOKEN, &["--plain-http".as_ref()]);
    assert_eq!(mock.scheme, "http");
    let bearer = format!("Bearer {MOCK_TOKEN}");
    let ok = send(mock.addr, post(INIT, "{}", &[("authorization", &bearer)])).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert!(ok.json()["redirection_url"].is_string());
    let missing = send(mock.addr, post(INIT, "{}", &[])).await;
    assert_answer(
        &missing,
        400,
        r#"{"error": "Authorization token is required."}"#,
    );
}

/// `--fault 500` answers KwikID's 500 even to the right token, and `--fault 429=7` a 429 with
/// `Retry-After: 7`. Guards the faults the README lists being parsed but not applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_makes_it_misbehave() {
    let bearer = format!("Bearer {MOCK_TOKEN}");
    let mock = MockProcess::start(
        MOCK_TOKEN,
        &["--plain-http".as_ref(), "--fault".as_ref(), "500".as_ref()],
    );
    let answer = send(mock.addr, post(INIT, "{}", &[("authorization", &bearer)])).await;
    assert_answer(&answer, 500, r#"{"error": "Internal Server Error"}"#);

    let mock = MockProcess::start(
        MOCK_TOKEN,
        &[
            "--plain-http".as_ref(),
            "--fault".as_ref(),
            "429=7".as_ref(),
        ],
    );
    let answer = send(mock.addr, post(INIT, "{}", &[("authorization", &bearer)])).await;
    assert_answer(&answer, 429, r#"{"error": "Too Many Requests"}"#);
    assert_eq!(answer.headers["retry-after"], "7");
}

/// An unknown `--fault`, or no token at all, is a usage error: exit 2 and a message saying
/// what is expected, never a mock that serves. Guards a typo silently giving a well-behaved
/// mock.
#[test]
fn a_bad_fault_or_no_token_is_a_usage_error() {
    let mut cmd = mock_bin();
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--token",
        MOCK_TOKEN,
        "--fault",
        "slow",
    ]);
    let (code, stdout, stderr) = run_to_exit(cmd, Duration::from_secs(30));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("expected none, delay=DURATION, reset, 500, 429[=SECONDS] or garbage"),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");

    let mut cmd = mock_bin();
    cmd.args(["--listen", "127.0.0.1:0"]);
    let (code, stdout, stderr) = run_to_exit(cmd, Duration::from_secs(30));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--token"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
}
