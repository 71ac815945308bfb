//! The command line: exit codes, one-line config errors, `check`, `--help`, `demo`, and the
//! completion scripts and man page it prints.

mod support;

use std::process::{Output, Stdio};

use support::*;

fn run(args: &[&str], config: Option<&str>, token: Option<&str>) -> (Output, Scratch) {
    let scratch = Scratch::new();
    let mut cmd = gateway_bin();
    cmd.args(args);
    if let Some(config) = config {
        let path = scratch.write("gw.toml", config);
        cmd.arg("--config").arg(path);
    }
    if let Some(token) = token {
        cmd.env("KWIKID_API_TOKEN", token);
    }
    (cmd.output().unwrap(), scratch)
}

const MINIMAL: &str = "[upstream]\nbase_url = \"https://verify.test.getkwikid.com\"\n";

/// A bad config is exactly one line on stderr naming the file, the key and the reason, exit 2,
/// for both `check` and running.
#[test]
fn a_bad_config_is_one_line_naming_the_key() {
    for (config, key) in [
        (
            format!("{MINIMAL}[listen]\nheader_read_timout = \"5s\"\n"),
            "listen.header_read_timout (line 4): unknown field",
        ),
        (
            format!("{MINIMAL}[listen]\nheader_read_timeout = \"5 parsecs\"\n"),
            "listen.header_read_timeout (line 4)",
        ),
        (
            format!("{MINIMAL}[rate_limit]\nglobal = {{ per_second = 0, burst = 1 }}\n"),
            "rate_limit.global.per_second",
        ),
        (
            "[upstream]\nbase_url = \"http://plain.example\"\n".to_owned(),
            "upstream.base_url: must start with https://",
        ),
        (
            format!("{MINIMAL}[listen]\nallow_cidrs = [\"10.0.0.0/33\"]\n"),
            "listen.allow_cidrs",
        ),
        // Host bits set: refused with the network it most likely means, value shown.
        (
            format!("{MINIMAL}[listen]\nallow_cidrs = [\"10.0.0.1/8\"]\n"),
            "listen.allow_cidrs: \"10.0.0.1/8\" has host bits set; did you mean \"10.0.0.0/8\"?",
        ),
        // Both listeners on one port would fail at bind time; `check` says so first.
        (
            format!(
                "{MINIMAL}[listen]\naddr = \"0.0.0.0:8080\"\n[admin]\naddr = \"127.0.0.1:8080\"\n"
            ),
            "listen.addr, admin.addr: 0.0.0.0:8080 and 127.0.0.1:8080 share a port",
        ),
        // The operator's words, and the value, for a key that cannot hold a secret.
        (
            format!("{MINIMAL}[listen]\nmax_connections = \"many\"\n"),
            "listen.max_connections (line 4): invalid type: string \"many\", expected a whole number",
        ),
        (
            format!("{MINIMAL}[listen]\nmax_connections = -3\n"),
            "expected a whole number",
        ),
        (
            format!("{MINIMAL}[[routes]]\nmethod = \"POST\"\npath = \"/a/../b\"\n"),
            "routes[0].path",
        ),
        ("[upstream\n".to_owned(), "line 1"),
    ] {
        for args in [&["check"][..], &[][..]] {
            let (out, _s) = run(args, Some(&config), Some("tok"));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?} {config}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "exactly one line: {stderr}");
            assert!(stderr.contains("gw.toml: "), "names the file: {stderr}");
            assert!(stderr.contains(key), "expected {key:?} in {stderr}");
            assert!(out.stdout.is_empty());
        }
    }
}

/// A missing, empty or invalid token stops the start with exit 2 and never echoes it.
#[test]
fn a_bad_token_is_refused_without_echo() {
    for (token, reason) in [
        (None, "environment variable KWIKID_API_TOKEN is not set"),
        (Some("\n"), "token is empty"),
        (Some("has a space-SECRETPART"), "not a valid header value"),
    ] {
        let (out, _s) = run(&[], Some(MINIMAL), token);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_exit(&out, 2);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(reason), "{stderr}");
        assert!(!stderr.contains("SECRETPART"), "{stderr}");
    }
}

/// `check` prints the effective config with defaults filled in and the token redacted.
#[test]
fn check_prints_the_effective_config_redacted() {
    let (out, _s) = run(&["check"], Some(MINIMAL), Some(TOKEN));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_exit(&out, 0);
    assert!(stdout.contains("[REDACTED]"));
    assert!(
        stdout.contains("header_read_timeout = \"5s\""),
        "defaults are shown: {stdout}"
    );
    assert!(
        stdout.contains("path = \"/verification/v2/digilocker/init\""),
        "{stdout}"
    );
    assert!(!stdout.contains(TOKEN));
    let reparsed: toml::Table = stdout.parse().expect("the effective config is TOML");
    assert!(reparsed.contains_key("rate_limit"));
}

/// A token file source works, and its trailing newline is trimmed.
#[test]
fn check_reads_a_token_file() {
    let scratch = Scratch::new();
    let token = scratch.write("token", &format!("{TOKEN}\r\n"));
    let config = format!("{MINIMAL}[token]\nfile = \"{}\"\n", token.display());
    let (out, _s) = run(&["check"], Some(&config), None);
    assert_exit(&out, 0);
    let missing = format!("{MINIMAL}[token]\nfile = \"/nonexistent/token\"\n");
    let (out, _s) = run(&["check"], Some(&missing), None);
    assert_exit(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("token file cannot be read"));
}

/// The shipped config.toml is valid.
#[test]
fn the_shipped_template_passes_check() {
    let (out, _s) = run(
        &[
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"),
        ],
        None,
        Some("template-token"),
    );
    assert_exit(&out, 0);
}

/// `--help` explains the commands; an unknown command is a usage error (exit 2).
#[test]
fn help_and_usage_errors() {
    let (out, _s) = run(&["--help"], None, None);
    assert_exit(&out, 0);
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "check",
        "demo",
        "--config",
        "KWIKID_GATEWAY_CONFIG",
        "Exit codes",
    ] {
        assert!(help.contains(word), "{word} missing from help:\n{help}");
    }
    let (out, _s) = run(&["frobnicate"], None, None);
    assert_exit(&out, 2);
    // `demo` reads no config: its help offers no option it would ignore.
    let (out, _s) = run(&["demo", "--help"], None, None);
    assert_exit(&out, 0);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(!help.contains("--config"), "{help}");
    let (out, _s) = run(&["demo", "--config", "x.toml"], None, None);
    assert_exit(&out, 2);
}

/// `demo` serves a 200 through a mock, prints the access-log line without the
/// redirection_url, and a curl line that works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_the_whole_job() {
    let mut child = gateway_bin()
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let output = Lines::from_stream(child.stdout.take().unwrap());
    let curl = output.wait_for("the curl line", HANG_GUARD, |l| {
        l.trim_start().starts_with("curl ") && l.contains("POST")
    });
    // The admin listener serves while the demo does, at the address it printed.
    let metrics_line = output.wait_for("the metrics curl line", HANG_GUARD, |l| {
        l.trim_start().starts_with("curl ") && l.ends_with("/metrics")
    });
    let admin: std::net::SocketAddr = metrics_line
        .trim_end_matches("/metrics")
        .rsplit("http://")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(admin_get(admin, "/readyz").await.status, 200);
    let metrics = metrics(admin).await;
    assert_eq!(
        metric(
            &metrics,
            "kwikid_gateway_requests_total{route=\"/verification/v2/digilocker/init\",status=\"200\",outcome=\"forwarded\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    let _ = child.kill();
    let _ = child.wait();
    let seen = output.all();
    let text = seen.join("\n");
    let response = seen
        .iter()
        .find(|l| l.starts_with("← 200"))
        .expect("a 200 response");
    let url = response
        .split("\"redirection_url\":\"")
        .nth(1)
        .unwrap()
        .trim_end_matches("\"}");
    let access = seen
        .iter()
        .find(|l| l.starts_with("{\"ts\""))
        .expect("an access-log line");
    let json: serde_json::Value = serde_json::from_str(access).unwrap();
    assert_eq!(json["status"], 200);
    assert_eq!(json["outcome"], "forwarded");
    assert!(
        !access.contains(url) && !access.contains("redirect"),
        "{access}"
    );
    assert!(
        curl.contains("http://127.0.0.1:") && curl.contains(INIT),
        "{text}"
    );
}

/// Guards against a completion script a shell cannot load: bash sources the bash script and
/// then completes `kwikid-gateway` with it; every other shell gets a script of its own; an
/// unknown shell is bad usage (exit 2).
#[test]
fn completion_scripts_load() {
    let bin = env!("CARGO_BIN_EXE_kwikid-gateway");
    let out = std::process::Command::new("bash")
        .args([
            "-c",
            r#"source <("$0" completions bash) && complete -p kwikid-gateway"#,
            bin,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_exit(&out, 0);
    assert!(
        stdout.starts_with("complete ") && stdout.trim_end().ends_with(" kwikid-gateway"),
        "{stdout}"
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let (out, _s) = run(&["completions", shell], None, None);
        assert_exit(&out, 0);
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("kwikid-gateway") && script.contains("completions"),
            "{shell}: {script}"
        );
    }
    let (out, _s) = run(&["completions", "tcsh"], None, None);
    assert_exit(&out, 2);
    assert!(out.stdout.is_empty());
}

/// Guards against a man page `man` cannot render cleanly (any groff warning fails), or one
/// that leaves out a subcommand.
#[test]
fn the_man_page_renders_without_warnings_and_covers_every_subcommand() {
    let (out, _s) = run(&["man"], None, None);
    assert_exit(&out, 0);
    assert!(out.stdout.starts_with(b".ie"), "roff");
    let Some(mut man) = tool("man", "man-db", "KWIKID_SKIP_MAN") else {
        return;
    };
    man.args(["--warnings", "-l", "-"]).env("MANWIDTH", "80");
    let (code, rendered) = run_with_stdin(man, &out.stdout);
    assert_eq!(code, Some(0), "{rendered}");
    for expected in [
        "kwikid-gateway check",
        "kwikid-gateway demo",
        "kwikid-gateway completions bash|elvish|fish|powershell|zsh",
        "kwikid-gateway man",
        "--config",
        "KWIKID_API_TOKEN",
    ] {
        assert!(rendered.contains(expected), "{expected}:\n{rendered}");
    }
    assert!(
        !rendered.contains("warning"),
        "man/groff warned:\n{rendered}"
    );
}

/// A config that runs but likely not as meant: `check` passes (exit 0) and says why on stderr,
/// one line per finding naming its keys; the gateway logs the same at start.
#[test]
fn check_warns_about_surprises_and_still_passes() {
    let config = format!(
        "{MINIMAL}[listen]\nallow_cidrs = [\"0.0.0.0/0\"]\n\
         [rate_limit]\nmax_wait = \"10s\"\nper_caller = {{ per_second = 50, burst = 10 }}\n"
    );
    let (out, _s) = run(&["check"], Some(&config), Some("tok"));
    assert_exit(&out, 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].contains("gw.toml: warning: listen.allow_cidrs: 0.0.0.0/0 trusts every IPv4 peer"),
        "{stderr}"
    );
    assert!(lines[1].contains("warning: rate_limit.per_caller: 50/s (burst 10) is above rate_limit.global's 20/s (burst 40)"), "{stderr}");
    assert!(
        lines[2].contains(
            "warning: rate_limit.max_wait: 10s is not below upstream.request_timeout (10s)"
        ),
        "{stderr}"
    );

    let (out, _s) = run(&["check"], Some(MINIMAL), Some("tok"));
    assert_exit(&out, 0);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
