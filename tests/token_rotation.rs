//! Rotating the token without a restart: file writes, the Kubernetes Secret volume's `..data`
//! symlink swap, SIGHUP, and bad reads that keep the last good token.

mod support;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use support::*;

const NEXT: &str = "kwk_live_rotated-token-2";

fn fingerprint(token: &str) -> String {
    kwikid_gateway::secret::Token::new(token.into())
        .unwrap()
        .fingerprint()
}

/// The bearer token the mock saw on its latest request.
fn last_bearer(upstream: &Upstream) -> String {
    let received = upstream.mock().received();
    received.last().unwrap().headers["authorization"]
        .to_str()
        .unwrap()
        .to_owned()
}

fn gateway_with_token_file(upstream: &Upstream, file: &Path) -> Gateway {
    Gateway::start_with_env(
        &upstream.config(&format!("[token]\nfile = \"{}\"\n", file.display())),
        &[],
    )
}

fn reloaded_to(gw: &Gateway, token: &str) -> String {
    let id = fingerprint(token);
    gw.stderr.wait_for(
        "the reload log line",
        // The promise is 2 s (one 1 s poll, then the read); the slack is for a loaded CI machine.
        Duration::from_secs(5),
        |l| l.contains("token reloaded") && l.contains(&id),
    )
}

/// A plain write (what an operator's editor or a config agent does) is picked up within 2 s,
/// and the next request carries the new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_token_file_is_used_for_the_next_request() {
    let upstream = Upstream::start().await;
    let dir = Scratch::new();
    let file = dir.write("token", &format!("{TOKEN}\n"));
    let gw = gateway_with_token_file(&upstream, &file);
    assert_eq!(init(gw.addr, "{}").await.status, 200);
    assert_eq!(last_bearer(&upstream), format!("Bearer {TOKEN}"));

    std::fs::write(&file, format!("{NEXT}\n")).unwrap();
    reloaded_to(&gw, NEXT);
    init(gw.addr, "{}").await;
    assert_eq!(last_bearer(&upstream), format!("Bearer {NEXT}"));
    assert_eq!(gw.access_line(2)["token_id"], fingerprint(NEXT));
    let metrics = admin_get(gw.admin, "/metrics").await.text();
    assert!(metrics.contains(&format!(
        "kwikid_gateway_token_info{{fingerprint=\"{}\"}} 1",
        fingerprint(NEXT)
    )));
    assert!(
        !metrics.contains(&fingerprint(TOKEN)),
        "the old fingerprint is gone"
    );
    assert!(
        metrics.contains("kwikid_gateway_token_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(!gw.stderr.text().contains(NEXT) && !gw.stderr.text().contains(TOKEN));
}

/// Kubernetes mounts a Secret as `token -> ..data/token`, and rotates it by writing a new
/// `..<timestamp>` directory and renaming a new `..data` symlink over the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_volume_symlink_swap_is_a_change() {
    let upstream = Upstream::start().await;
    let dir = Scratch::new();
    std::fs::create_dir(dir.0.join("..2026_11_26_01")).unwrap();
    dir.write("..2026_11_26_01/token", TOKEN);
    symlink("..2026_11_26_01", dir.0.join("..data")).unwrap();
    symlink("..data/token", dir.0.join("token")).unwrap();
    let gw = gateway_with_token_file(&upstream, &dir.0.join("token"));
    assert_eq!(init(gw.addr, "{}").await.status, 200);

    std::fs::create_dir(dir.0.join("..2026_11_26_02")).unwrap();
    dir.write("..2026_11_26_02/token", NEXT);
    symlink("..2026_11_26_02", dir.0.join("..data_tmp")).unwrap();
    std::fs::rename(dir.0.join("..data_tmp"), dir.0.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.0.join("..2026_11_26_01")).unwrap();

    reloaded_to(&gw, NEXT);
    init(gw.addr, "{}").await;
    assert_eq!(last_bearer(&upstream), format!("Bearer {NEXT}"));
}

/// A missing, empty or invalid file keeps the last good token, warns without the content, and
/// counts an error; a good file afterwards is picked up again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reads_keep_the_last_good_token() {
    let upstream = Upstream::start().await;
    let dir = Scratch::new();
    let file = dir.write("token", TOKEN);
    let gw = gateway_with_token_file(&upstream, &file);
    let warnings = |n: usize| {
        gw.stderr
            .wait_for_count("reload warnings", n, Duration::from_secs(10), |l| {
                l.contains("token reload failed")
            });
    };

    std::fs::remove_file(&file).unwrap();
    warnings(1);
    std::fs::write(&file, "").unwrap();
    warnings(2);
    std::fs::write(&file, "bad token VALUE-NOT-TO-ECHO\n").unwrap();
    warnings(3);

    assert_eq!(
        init(gw.addr, "{}").await.status,
        200,
        "still the last good token"
    );
    assert_eq!(last_bearer(&upstream), format!("Bearer {TOKEN}"));
    let stderr = gw.stderr.text();
    assert!(
        !stderr.contains("VALUE-NOT-TO-ECHO") && !stderr.contains(TOKEN),
        "{stderr}"
    );
    assert!(stderr.contains("not a valid header value"), "{stderr}");
    let metrics = admin_get(gw.admin, "/metrics").await.text();
    assert!(
        metrics.contains("kwikid_gateway_token_reloads_total{result=\"error\"} 3"),
        "{metrics}"
    );
    assert_eq!(
        admin_get(gw.admin, "/readyz").await.status,
        200,
        "a good token is still loaded"
    );

    std::fs::write(&file, NEXT).unwrap();
    reloaded_to(&gw, NEXT);
}

/// SIGHUP re-reads the file at once, even without a change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_the_token_file() {
    let upstream = Upstream::start().await;
    let dir = Scratch::new();
    let file = dir.write("token", TOKEN);
    let gw = gateway_with_token_file(&upstream, &file);
    gw.signal("HUP");
    let line = gw
        .stderr
        .wait_for("the SIGHUP reload", Duration::from_secs(5), |l| {
            l.contains("token reloaded") && l.contains("SIGHUP")
        });
    assert!(line.contains(&fingerprint(TOKEN)));
    assert_eq!(
        init(gw.addr, "{}").await.status,
        200,
        "still serving after SIGHUP"
    );
}
