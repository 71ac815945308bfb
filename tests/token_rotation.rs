//! Rotating the token without a restart: in-place writes, rename-replace, the Kubernetes
//! Secret volume's `..data` symlink swap, SIGHUP, and bad reads that keep the last good token.
//!
//! Every request is checked for what the caller got and for the token KwikID received with
//! it. Reloads are awaited on the gateway's `token reloaded` line, never on a clock.

mod support;

use std::os::unix::fs::symlink;
use std::path::Path;

use support::*;

/// The mock KwikID accepts only [`TOKEN`]. Rotations mostly go from a token it no longer
/// accepts (as after a revocation or an expiry) to `TOKEN`, so each answer also tells which
/// token was sent: KwikID's 401 for these two, its 200 for `TOKEN`.
const REVOKED: &str = "kwk_live_revoked-token-1";
const NEXT: &str = "kwk_live_rotated-token-2";

fn fingerprint(token: &str) -> String {
    kwikid_gateway::secret::Token::new(token.into())
        .unwrap()
        .fingerprint()
}

fn gateway_with_token_file(upstream: &Upstream, file: &Path) -> Gateway {
    Gateway::start_with_env(
        &upstream.config(&format!("[token]\nfile = \"{}\"\n", file.display())),
        &[],
    )
}

/// Sends the `n`th init (1-based, counting every request this gateway and mock have seen)
/// and checks all of it: KwikID received it once with exactly one `Authorization: Bearer
/// <token>`; the caller got KwikID's answer byte for byte (200 and the body it made for
/// `TOKEN`, its 401 for any other token); the access log names `token`'s fingerprint.
async fn init_sent_with(gw: &Gateway, upstream: &Upstream, n: usize, token: &str) {
    let body = format!("{{\"handshake_id\":\"rotation-{n}\"}}");
    let answer = init(gw.addr, &body).await;
    let status = if token == TOKEN { 200 } else { 401 };
    assert_eq!(answer.status, status, "request {n}: {}", answer.text());
    assert!(answer.gateway_error().is_none(), "request {n}");
    let received = upstream.mock().received();
    assert_eq!(received.len(), n, "request {n} reached KwikID once");
    let seen = &received[n - 1];
    assert_eq!(seen.body, body.as_bytes(), "request {n}");
    let auth: Vec<_> = seen.headers.get_all("authorization").iter().collect();
    assert_eq!(
        auth,
        [&format!("Bearer {token}")],
        "request {n}: the token KwikID received"
    );
    if token == TOKEN {
        assert_eq!(answer.body, mock_ok_body(upstream.mock(), n), "request {n}");
    } else {
        assert_eq!(answer.text(), KWIKID_401_BODY, "request {n}");
    }
    let line = gw.access_line_with(
        &format!("the access-log line of request {n}"),
        &format!("\"handshake_id\":\"rotation-{n}\""),
    );
    assert_eq!(line["status"], status, "{line}");
    assert_eq!(line["upstream_status"], status, "{line}");
    assert_eq!(line["outcome"], "forwarded", "{line}");
    assert_eq!(line["token_id"], fingerprint(token), "{line}");
}

/// The gateway's `token reloaded` lines so far, parsed.
fn reload_lines(gw: &Gateway) -> Vec<serde_json::Value> {
    gw.stderr
        .all()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["message"] == "token reloaded")
        .collect()
}

/// Waits for the `token reloaded` line that names `token`'s fingerprint and `trigger`
/// (`file change` or `SIGHUP`), and returns it parsed.
fn reloaded_to(gw: &Gateway, token: &str, trigger: &str) -> serde_json::Value {
    let id = format!("\"token_id\":\"{}\"", fingerprint(token));
    let trigger_field = format!("\"trigger\":\"{trigger}\"");
    let line = gw.stderr.wait_for(
        &format!("the reload to {} on {trigger}", fingerprint(token)),
        HANG_GUARD,
        |l| l.contains("\"token reloaded\"") && l.contains(&id) && l.contains(&trigger_field),
    );
    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["level"], "INFO", "{line}");
    line
}

/// `kwikid_gateway_token_reloads_total` for `result` (`ok` or `error`), 0 when it is absent.
fn reloads(metrics: &str, result: &str) -> f64 {
    metric(
        metrics,
        &format!("kwikid_gateway_token_reloads_total{{result=\"{result}\"}}"),
    )
    .unwrap_or(0.0)
}

/// Exactly `token` is advertised as in use, by fingerprint, and no other.
fn assert_token_in_use(metrics: &str, token: &str) {
    let info: Vec<_> = metrics
        .lines()
        .filter(|l| l.starts_with("kwikid_gateway_token_info{"))
        .collect();
    assert_eq!(
        info,
        [format!(
            "kwikid_gateway_token_info{{fingerprint=\"{}\"}} 1",
            fingerprint(token)
        )],
        "{metrics}"
    );
}

/// No token, in any of its rotations, shows on stdout or stderr.
fn assert_no_token_logged(gw: &Gateway) {
    let logs = format!("{}\n{}", gw.stdout.text(), gw.stderr.text());
    for token in [TOKEN, REVOKED, NEXT] {
        assert!(!logs.contains(token), "a token in the logs:\n{logs}");
    }
}

/// Writes `contents` to a temporary file beside `file` and renames it over `file`, as many
/// editors and config agents save: the path never names a partly written file, and after the
/// rename it names a new inode.
fn rename_replace(file: &Path, contents: &str) {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// A plain in-place write (truncate, then write) is picked up, and the next request carries
/// the new token. Guards: a gateway that reads the file only at start-up, or keeps sending
/// the old token after announcing the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_token_file_is_used_for_the_next_request() {
    let upstream = Upstream::start().await;
    let dir = Scratch::new();
    let file = dir.write("token", &format!("{REVOKED}\n"));
    let gw = gateway_with_token_file(&upstream, &file);
    init_sent_with(&gw, &upstream, 1, REVOKED).await;
    init_sent_with(&gw, &upstream, 2, REVOKED).await;

    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    reloaded_to(&gw, TOKEN, "file change");
    init_sent_with(&gw, &upstream, 3, TOKEN).await;
    init_sent_with(&gw, &upstream, 4, TOKEN).await;

    let metrics = metrics(gw.admin).await;
    assert_token_in_use(&metrics, TOKEN);
    assert_eq!(reloads(&metrics, "ok"), 1.0, "{metrics}");
    assert_no_token_logged(&gw);
}

/// Rename-replace: a new file renamed over the old one (a new inode at the same path) is
/// picked up, twice in a row, and since the path never names a partial file no read fails.
/// Guards: a watcher that follows the old inode (an open handle, an inotify watch on the file)
/// and so never sees the new one, or sees only the first rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_renamed_over_the_old_one_is_used() {
    let upstream = Upstream::start().await;
    let dir = Scratch::new();
    let file = dir.write("token", &format!("{REVOKED}\n"));
    let gw = gateway_with_token_file(&upstream, &file);
    init_sent_with(&gw, &upstream, 1, REVOKED).await;

    rename_replace(&file, &format!("{NEXT}\n"));
    reloaded_to(&gw, NEXT, "file change");
    init_sent_with(&gw, &upstream, 2, NEXT).await;

    rename_replace(&file, TOKEN);
    reloaded_to(&gw, TOKEN, "file change");
    init_sent_with(&gw, &upstream, 3, TOKEN).await;

    let metrics = metrics(gw.admin).await;
    assert_token_in_use(&metrics, TOKEN);
    assert_eq!(reloads(&metrics, "ok"), 2.0, "{metrics}");
    assert_eq!(reloads(&metrics, "error"), 0.0, "{metrics}");
    let stderr = gw.stderr.text();
    assert!(!stderr.contains("token reload failed"), "{stderr}");
    assert_eq!(reload_lines(&gw).len(), 2, "{stderr}");
    assert_no_token_logged(&gw);
}

/// Kubernetes mounts a Secret as `token -> ..data/token`, and rotates it by writing a new
/// `..<timestamp>` directory and renaming a new `..data` symlink over the old one. Guards: a
/// watcher that resolves the symlink once and keeps reading the old (deleted) directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_volume_symlink_swap_is_a_change() {
    let upstream = Upstream::start().await;
    let dir = Scratch::new();
    std::fs::create_dir(dir.0.join("..2026_11_26_01")).unwrap();
    dir.write("..2026_11_26_01/token", REVOKED);
    symlink("..2026_11_26_01", dir.0.join("..data")).unwrap();
    symlink("..data/token", dir.0.join("token")).unwrap();
    let gw = gateway_with_token_file(&upstream, &dir.0.join("token"));
    init_sent_with(&gw, &upstream, 1, REVOKED).await;

    std::fs::create_dir(dir.0.join("..2026_11_26_02")).unwrap();
    dir.write("..2026_11_26_02/token", TOKEN);
    symlink("..2026_11_26_02", dir.0.join("..data_tmp")).unwrap();
    std::fs::rename(dir.0.join("..data_tmp"), dir.0.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.0.join("..2026_11_26_01")).unwrap();

    reloaded_to(&gw, TOKEN, "file change");
    init_sent_with(&gw, &upstream, 2, TOKEN).await;
    assert_token_in_use(&metrics(gw.admin).await, TOKEN);
    assert_no_token_logged(&gw);
}

/// A missing, empty or invalid file keeps the last good token, warns without the content, and
/// counts an error; a good file afterwards is picked up again. Guards: a gateway that drops
/// its token (or sends an empty one) when a read fails, or echoes what it read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reads_keep_the_last_good_token() {
    let upstream = Upstream::start().await;
    let dir = Scratch::new();
    let file = dir.write("token", TOKEN);
    let gw = gateway_with_token_file(&upstream, &file);
    init_sent_with(&gw, &upstream, 1, TOKEN).await;
    let warnings = |n: usize| {
        gw.stderr
            .wait_for_count("reload warnings", n, HANG_GUARD, |l| {
                l.contains("token reload failed")
            });
    };

    std::fs::remove_file(&file).unwrap();
    warnings(1);
    init_sent_with(&gw, &upstream, 2, TOKEN).await;
    std::fs::write(&file, "").unwrap();
    warnings(2);
    init_sent_with(&gw, &upstream, 3, TOKEN).await;
    std::fs::write(&file, "bad token VALUE-NOT-TO-ECHO\n").unwrap();
    warnings(3);
    init_sent_with(&gw, &upstream, 4, TOKEN).await;

    let stderr = gw.stderr.text();
    assert!(!stderr.contains("VALUE-NOT-TO-ECHO"), "{stderr}");
    assert!(stderr.contains("not a valid header value"), "{stderr}");
    let metrics = metrics(gw.admin).await;
    assert_eq!(reloads(&metrics, "error"), 3.0, "{metrics}");
    assert_token_in_use(&metrics, TOKEN);
    assert_eq!(
        admin_get(gw.admin, "/readyz").await.status,
        200,
        "a good token is still loaded"
    );

    // A readable file again, even one whose token KwikID refuses, is the token from now on.
    rename_replace(&file, NEXT);
    reloaded_to(&gw, NEXT, "file change");
    init_sent_with(&gw, &upstream, 5, NEXT).await;
    assert_no_token_logged(&gw);
}

/// SIGHUP re-reads the file at once, even without a change, and logs that it did; the
/// process keeps serving with the same token. Guards: SIGHUP's default action (the process
/// ends) or a handler that ignores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_the_token_file() {
    let upstream = Upstream::start().await;
    let dir = Scratch::new();
    let file = dir.write("token", TOKEN);
    let gw = gateway_with_token_file(&upstream, &file);
    gw.signal("HUP");
    reloaded_to(&gw, TOKEN, "SIGHUP");
    init_sent_with(&gw, &upstream, 1, TOKEN).await;
    let metrics = metrics(gw.admin).await;
    assert_token_in_use(&metrics, TOKEN);
    assert_eq!(reloads(&metrics, "ok"), 1.0, "{metrics}");
    assert_no_token_logged(&gw);
}

/// The file changes, then SIGHUP: the reload SIGHUP causes reads the new file, and the next
/// request carries the new token. (The once-a-second poll may notice the change first; the
/// read SIGHUP forces happens after the change either way, so its line must name the new
/// token.) Guards: a SIGHUP handler that re-applies the token it already holds instead of
/// reading the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_after_a_change_uses_the_new_token() {
    let upstream = Upstream::start().await;
    let dir = Scratch::new();
    let file = dir.write("token", REVOKED);
    let gw = gateway_with_token_file(&upstream, &file);
    init_sent_with(&gw, &upstream, 1, REVOKED).await;

    rename_replace(&file, TOKEN);
    gw.signal("HUP");
    reloaded_to(&gw, TOKEN, "SIGHUP");
    init_sent_with(&gw, &upstream, 2, TOKEN).await;
    let metrics = metrics(gw.admin).await;
    assert_token_in_use(&metrics, TOKEN);
    assert!(reloads(&metrics, "ok") >= 1.0, "{metrics}");
    assert_eq!(reloads(&metrics, "error"), 0.0, "{metrics}");
    assert_no_token_logged(&gw);
}
