//! What the gateway does to its own process before it reads the token, seen from outside on
//! the real binary: no core files, not dumpable (other processes of its user cannot read its
//! environment or memory), and the token's bytes in memory locked against swap, with one
//! warning when the kernel refuses the lock.
//!
//! The tests that run the gateway as another user need root (to switch to uid 65534 with
//! `setpriv`); without it they print `SKIPPED …` on stderr and check nothing.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use support::*;

/// Another token KwikID (the mock) does not accept: a rotation to it and back shows the
/// reloads happened.
const NEXT: &str = "kwk_live_rotated-token-2";

/// The row of `/proc/<pid>/limits` for the core-file size.
const CORE: &str = "Max core file size";

/// `prlimit` raising the core-file limit (soft and hard) to this process's hard limit, as a
/// shell or service manager might have set it, so that a gateway showing 0 has lowered it
/// itself.
fn with_core_files_allowed() -> Command {
    let (_, hard) = proc_limit("self", CORE).expect("/proc/self/limits");
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--core={hard}:{hard}")).arg("--");
    cmd
}

/// The gateway's operational-log lines at level `WARN`.
fn warnings(gw: &Gateway) -> Vec<serde_json::Value> {
    gw.stderr
        .all()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["level"] == "WARN")
        .collect()
}

/// Nothing the gateway wrote shows the token.
fn assert_no_token_written(gw: &Gateway, token: &str) {
    let output = format!("{}\n{}", gw.stdout.text(), gw.stderr.text());
    assert!(!output.contains(token), "the token was written:\n{output}");
}

/// A config for a gateway run as [`NOBODY`] from `scratch` (given to it): the upstream's CA
/// and the config itself copied there, `extra` appended. Returns the config's path.
fn config_for_nobody(scratch: &Scratch, upstream: &Upstream, extra: &str) -> std::path::PathBuf {
    let ca = scratch.write_for_nobody("ca.pem", &upstream.ca_pem);
    scratch.write_for_nobody(
        "gateway.toml",
        &config_for(&upstream.base_url(), &ca, extra),
    )
}

/// Whether `reader` (a command prefix running as some user) can open `path` for reading.
fn can_open(reader: Option<Command>, path: &Path) -> (bool, String) {
    let mut cmd = reader.expect("root");
    let out = cmd
        .arg("sh")
        .arg("-c")
        .arg("exec 3< \"$0\"")
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A crash must not write the process memory (the token in it) to a core file: the gateway
/// sets its core-file limit to 0, soft and hard, even when it was started with core files
/// allowed; its token sits in locked memory (`VmLck`); and with nothing refused, it writes no
/// warning. Guards: hardening skipped or applied to the soft limit only, the lock never
/// taken, a warning written when all went well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_files_are_off_and_the_token_is_in_locked_memory() {
    let upstream = Upstream::start().await;
    let scratch = Scratch::new();
    let config = scratch.write("gateway.toml", &upstream.config(""));

    // The limit the gateway starts with, shown by the same wrapper around `cat`.
    let out = with_core_files_allowed()
        .arg("cat")
        .arg("/proc/self/limits")
        .output()
        .unwrap();
    let before = String::from_utf8_lossy(&out.stdout);
    let row = before.lines().find(|l| l.starts_with(CORE)).unwrap();
    if proc_limit("self", CORE).unwrap().1 != "0" {
        assert!(!row.contains(" 0 "), "the wrapper allows core files: {row}");
    }

    let mut cmd = with_core_files_allowed();
    cmd.arg(env!("CARGO_BIN_EXE_kwikid-gateway"))
        .arg("--config")
        .arg(&config)
        .env("KWIKID_API_TOKEN", TOKEN)
        .env_remove("KWIKID_GATEWAY_CONFIG");
    let gw = Gateway::start_command(cmd, config, scratch);
    let pid = gw.child.id();
    assert_eq!(
        proc_limit(&pid.to_string(), CORE),
        Some(("0".into(), "0".into())),
        "/proc/{pid}/limits"
    );
    assert!(locked_kib(pid) > 0, "VmLck of the gateway is 0");

    let answer = init(gw.addr, "{}").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(warnings(&gw), Vec::<serde_json::Value>::new());
    assert_no_token_written(&gw, TOKEN);

    // `check` is hardened the same way, and warns only about what was refused: nothing.
    let out = check_config(&gw.config_path);
    assert_exit(&out, 0);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

/// With the token in its environment (`token.env`) and running as an unprivileged user,
/// the gateway's `/proc/<pid>/environ` and `/proc/<pid>/mem` belong to root, and another
/// process of the same user can open neither; the same user's ordinary process next to it
/// shows what that user could read otherwise (the token in its environment). Guards: a
/// gateway that stays dumpable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_processes_of_its_user_cannot_read_its_environment_or_memory() {
    const TEST: &str = "other_processes_of_its_user_cannot_read_its_environment_or_memory";
    let Some(mut cmd) = as_nobody(TEST) else {
        return;
    };
    let upstream = Upstream::start().await;
    let scratch = Scratch::new();
    scratch.give_to_nobody();
    let config = config_for_nobody(&scratch, &upstream, "");
    cmd.arg(gateway_bin_for_nobody(&scratch))
        .arg("--config")
        .arg(&config)
        .env("KWIKID_API_TOKEN", TOKEN);
    let gw = Gateway::start_command(cmd, config, scratch);
    let pid = gw.child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_row = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_row.split_whitespace().nth(1),
        Some(NOBODY.to_string().as_str()),
        "the gateway runs as nobody: {uid_row}"
    );

    // The control: an ordinary process of the same user, with the same environment (a shell
    // that says when it runs, as that user, and then waits).
    let mut shell = as_nobody(TEST).unwrap();
    shell
        .args(["sh", "-c", "echo running; sleep 60"])
        .env("KWIKID_API_TOKEN", TOKEN);
    let (mut neighbour, said, _) = spawn_followed(&mut shell);
    said.wait_for("the shell's first line", HANG_GUARD, |l| l == "running");
    let theirs = Path::new("/proc").join(neighbour.id().to_string());
    assert_eq!(
        std::fs::metadata(theirs.join("environ")).unwrap().uid(),
        NOBODY
    );
    let out = as_nobody(TEST)
        .unwrap()
        .arg("cat")
        .arg(theirs.join("environ"))
        .output()
        .unwrap();
    let _ = neighbour.kill();
    let _ = neighbour.wait();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains(TOKEN),
        "a dumpable process's environment is open to its user"
    );

    let ours = Path::new("/proc").join(pid.to_string());
    for file in ["environ", "mem"] {
        let path = ours.join(file);
        assert_eq!(
            std::fs::metadata(&path).unwrap().uid(),
            0,
            "{} belongs to root",
            path.display()
        );
        let (opened, why) = can_open(as_nobody(TEST), &path);
        assert!(!opened, "uid {NOBODY} opened {}", path.display());
        assert!(why.contains("Permission denied"), "{why}");
    }

    let answer = init(gw.addr, "{}").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(warnings(&gw), Vec::<serde_json::Value>::new());
    assert_no_token_written(&gw, TOKEN);
}

/// Where the kernel refuses to lock memory (an unprivileged user under `RLIMIT_MEMLOCK` 0),
/// the gateway says so once, for the life of the process, and serves: reloads that lock again
/// (and are refused again) add no warning. Guards: a start-up that fails, a warning per
/// token, a warning that names the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_memory_lock_is_one_warning_and_the_gateway_serves() {
    const TEST: &str = "a_refused_memory_lock_is_one_warning_and_the_gateway_serves";
    let Some(mut cmd) = as_nobody(TEST) else {
        return;
    };
    let upstream = Upstream::start().await;
    let scratch = Scratch::new();
    scratch.give_to_nobody();
    let token = scratch.write_for_nobody("token", TOKEN);
    let config = config_for_nobody(
        &scratch,
        &upstream,
        &format!("[token]\nfile = \"{}\"\n", token.display()),
    );
    cmd.arg("prlimit")
        .arg("--memlock=0:0")
        .arg("--")
        .arg(gateway_bin_for_nobody(&scratch))
        .arg("--config")
        .arg(&config);
    let gw = Gateway::start_command(cmd, config, scratch);
    assert_eq!(locked_kib(gw.child.id()), 0);

    for (n, next) in [NEXT, TOKEN].into_iter().enumerate() {
        gw.scratch.write_for_nobody("token", next);
        gw.stderr
            .wait_for_count("a token reload", n + 1, HANG_GUARD, |l| {
                l.contains("\"token reloaded\"")
            });
    }
    let answer = init(gw.addr, "{}").await;
    assert_eq!(answer.status, 200, "{}", answer.text());

    let warned = warnings(&gw);
    assert_eq!(warned.len(), 1, "{}", gw.stderr.text());
    assert_eq!(
        warned[0]["message"],
        "cannot lock the token's memory against swap (RLIMIT_MEMLOCK, see LimitMEMLOCK= or ulimit -l): it may be written to swap; not repeated for later tokens"
    );
    assert_eq!(warned[0]["error"], "Operation not permitted (os error 1)");
    assert_no_token_written(&gw, TOKEN);
    assert_no_token_written(&gw, NEXT);
}

/// `demo` holds a token too: it is hardened at start like `run`.
#[test]
fn demo_is_hardened_too() {
    let mut cmd = with_core_files_allowed();
    cmd.arg(env!("CARGO_BIN_EXE_kwikid-gateway"))
        .arg("demo")
        .env_remove("KWIKID_API_TOKEN")
        .env_remove("KWIKID_GATEWAY_CONFIG");
    let (mut child, stdout, _stderr) = spawn_followed(&mut cmd);
    stdout.wait_for("the demo's first line", HANG_GUARD, |l| {
        l.starts_with("kwikid-gateway demo")
    });
    let limit = proc_limit(&child.id().to_string(), CORE);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(limit, Some(("0".into(), "0".into())));
}
