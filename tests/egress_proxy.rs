//! Egress through an HTTP CONNECT proxy (SPEC §3 `upstream.proxy`): the gateway asks the
//! proxy for a tunnel to KwikID and runs TLS inside it, so the proxy relays only encrypted
//! bytes and never sees the token. Every test puts a recording proxy on loopback between the
//! real gateway and the mock KwikID.

mod support;

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use support::egress::{ConnectProxy, ProxyAnswer};
use support::*;

const TRACE: &str = "[log]\nlevel = \"trace\"\n";
/// The proxy credentials the tests give the gateway; they must never be written anywhere.
const PROXY_USER: &str = "gw-egress";
const PROXY_PASSWORD: &str = "pr0xy-pass-7c41e9";

/// The base64 forms of `secret`, as they would appear in a header or a URL.
fn base64_forms(secret: &str) -> Vec<String> {
    [STANDARD, URL_SAFE]
        .iter()
        .map(|engine| engine.encode(secret).trim_end_matches('=').to_owned())
        .collect()
}

/// Every string the proxy (or a log) must never see: the token, `Bearer <token>`, their
/// base64 forms, and the header that carries them.
fn token_forms() -> Vec<String> {
    let bearer = format!("Bearer {TOKEN}");
    let mut forms = vec![TOKEN.to_owned(), bearer.clone()];
    forms.extend(base64_forms(TOKEN));
    forms.extend(base64_forms(&bearer));
    forms
}

/// A gateway in front of `upstream` through `proxy` (`upstream.proxy`), with credentials in
/// `egress-auth` beside its config file (the relative path is resolved from there).
fn gateway_through(upstream: &Upstream, proxy: &ConnectProxy) -> (Gateway, PathBuf) {
    let scratch = Scratch::new();
    scratch.write("egress-auth", &format!("{PROXY_USER}:{PROXY_PASSWORD}\n"));
    let config = upstream.config(&format!(
        "{}proxy = \"{}\"\nproxy_auth_file = \"egress-auth\"\n{TRACE}",
        upstream.upstream_table("2s", "5s"),
        proxy.url()
    ));
    let config_path = scratch.write("gateway.toml", &config);
    let mut cmd = gateway_with_token();
    cmd.arg("--config").arg(&config_path);
    (
        Gateway::start_command(cmd, config_path.clone(), scratch),
        config_path,
    )
}

/// The proxy sees `CONNECT localhost:<port>` with the gateway's `Proxy-Authorization`, then
/// only TLS records: the init succeeds with the token reaching KwikID, and no byte the proxy
/// relayed, either way, holds the token, its base64 or an `Authorization` header. Nothing the
/// gateway writes (at trace) holds the token or the proxy's password. `check` names the proxy,
/// credentials redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_runs_inside_the_tunnel_and_the_proxy_never_sees_the_token() {
    let upstream = Upstream::start().await;
    let proxy = ConnectProxy::start(ProxyAnswer::Tunnel).await;
    let (gw, config_path) = gateway_through(&upstream, &proxy);

    let answer = init(gw.addr, r#"{"handshake_id": "via-proxy"}"#).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let received = upstream.mock().received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].headers["authorization"],
        format!("Bearer {TOKEN}").as_str()
    );

    let heads = proxy.heads();
    assert_eq!(heads.len(), 1, "one tunnel: {heads:?}");
    let target = format!("localhost:{}", upstream.addr.port());
    let basic = STANDARD.encode(format!("{PROXY_USER}:{PROXY_PASSWORD}"));
    // hyper writes header names in lower case (names are case-insensitive, RFC 9110 §5.1).
    assert_eq!(
        heads[0],
        format!(
            "CONNECT {target} HTTP/1.1\r\nhost: {target}\r\nproxy-authorization: Basic {basic}"
        )
    );
    let (up, down) = proxy.relayed();
    // A TLS handshake record (RFC 8446 §5.1: content type 22) opens each direction.
    assert_eq!((up.first(), down.first()), (Some(&22), Some(&22)));
    for (direction, bytes) in [("gateway → KwikID", &up), ("KwikID → gateway", &down)] {
        let text = String::from_utf8_lossy(bytes).to_ascii_lowercase();
        assert!(
            !text.contains("authorization"),
            "{direction}: a header in clear"
        );
        for form in token_forms() {
            assert!(
                !text.contains(&form.to_ascii_lowercase()),
                "{direction}: {form}"
            );
        }
    }

    let mut secrets = token_forms();
    secrets.push(PROXY_PASSWORD.to_owned());
    secrets.push(basic.clone());
    let check = check_config(&config_path);
    assert_exit(&check, 0);
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(
        printed.contains(&format!(
            "# proxy: {} (from upstream.proxy, credentials [REDACTED])",
            proxy.url()
        )),
        "{printed}"
    );
    let written = format!("{}\n{}\n{printed}", gw.stdout.text(), gw.stderr.text());
    for secret in &secrets {
        assert!(!written.contains(secret.as_str()), "{secret:?} was written");
    }
}

/// With no `upstream.proxy`, `HTTPS_PROXY` is used as curl uses it (credentials in its URL);
/// `NO_PROXY` naming KwikID's host sends the gateway straight to KwikID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_from_the_environment_is_used_unless_no_proxy_names_the_host() {
    let upstream = Upstream::start().await;
    let proxy = ConnectProxy::start(ProxyAnswer::Tunnel).await;
    let with_credentials = format!("http://{PROXY_USER}:{PROXY_PASSWORD}@{}", proxy.addr);
    let config = upstream.config("");
    let env = [
        ("KWIKID_API_TOKEN", TOKEN),
        ("HTTPS_PROXY", with_credentials.as_str()),
    ];

    let proxied = Gateway::start_with_env(&config, &env);
    assert_eq!(init(proxied.addr, "{}").await.status, 200);
    assert_eq!(proxy.heads().len(), 1);
    let basic = STANDARD.encode(format!("{PROXY_USER}:{PROXY_PASSWORD}"));
    assert!(
        proxy.heads()[0].ends_with(&format!("\r\nproxy-authorization: Basic {basic}")),
        "{:?}",
        proxy.heads()
    );

    let bypassing = Gateway::start_with_env(
        &config,
        &[env[0], env[1], ("NO_PROXY", "example.org, localhost")],
    );
    assert_eq!(init(bypassing.addr, "{}").await.status, 200);
    assert_eq!(proxy.heads().len(), 1, "NO_PROXY: straight to KwikID");
    assert_eq!(upstream.mock().received().len(), 2);

    // `check` says which: the variable that named the proxy, or the one that bypassed it.
    let scratch = Scratch::new();
    let path = scratch.write("gateway.toml", &config);
    for (extra, wanted) in [
        (
            None,
            format!(
                "# proxy: http://{} (from HTTPS_PROXY, credentials [REDACTED])",
                proxy.addr
            ),
        ),
        (
            Some(("NO_PROXY", "localhost")),
            "# proxy: none (NO_PROXY names KwikID's host)".to_owned(),
        ),
    ] {
        let mut cmd = gateway_with_token();
        cmd.args(["check", "--config"])
            .arg(&path)
            .env(env[1].0, env[1].1);
        if let Some((k, v)) = extra {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert_exit(&out, 0);
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(printed.contains(&wanted), "{printed}");
        assert!(!printed.contains(PROXY_PASSWORD) && !printed.contains(&basic));
    }
}

/// A proxy that refuses the tunnel (407: credentials; 403: policy): the caller gets the
/// gateway's 502, nothing reaches KwikID, the metric counts `kind="proxy"`, and the warning
/// names KwikID, the proxy and its status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_refuses_connect_gets_the_caller_502_and_a_warning_naming_it() {
    let upstream = Upstream::start().await;
    for (status, words) in [
        (407, "407 Proxy Authentication Required"),
        (403, "403 Forbidden"),
    ] {
        let proxy = ConnectProxy::start(ProxyAnswer::Refuse(status)).await;
        let (gw, _) = gateway_through(&upstream, &proxy);
        let answer = init(gw.addr, "{}").await;
        answer.assert_error(502, "upstream_unavailable");
        assert_eq!(answer.text(), UNAVAILABLE_BODY);

        let line = gw.upstream_warning("proxy");
        assert_eq!(
            line["upstream"],
            format!("localhost:{}", upstream.addr.port())
        );
        assert_eq!(line["proxy"], proxy.addr.to_string(), "{line}");
        let cause = line["cause"].as_str().unwrap();
        assert!(
            cause.starts_with(&format!("proxy {} refused CONNECT: {words}", proxy.addr)),
            "{cause}"
        );
        assert_eq!(
            metric(
                &metrics(gw.admin).await,
                "kwikid_gateway_upstream_errors_total{kind=\"proxy\"}"
            ),
            Some(1.0)
        );
        assert!(!gw.stderr.text().contains(PROXY_PASSWORD));
    }
    assert_eq!(upstream.mock().connections(), 0, "nothing reached KwikID");
}

/// A proxy that takes the CONNECT and never answers: `upstream.connect_timeout` covers the
/// wait, the caller gets 502 on time, and the warning says where the connection stalled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_never_answers_connect_hits_connect_timeout() {
    let upstream = Upstream::start().await;
    let proxy = ConnectProxy::start(ProxyAnswer::Silent).await;
    let config = upstream.config(&format!(
        "{}proxy = \"{}\"\n",
        upstream.upstream_table("1s", "20s"),
        proxy.url()
    ));
    let gw = Gateway::start(&config);
    init(gw.addr, "{}")
        .await
        .assert_error(502, "upstream_unavailable");
    let line = gw.upstream_warning("connect_timeout");
    assert_eq!(
        line["cause"],
        "no connection within upstream.connect_timeout (1s) while waiting for the proxy's answer to CONNECT",
        "{line}"
    );
    eventually(
        "the first connection and its one retry",
        HANG_GUARD,
        || async { proxy.heads().len() == 2 },
    )
    .await;
    assert_eq!(upstream.mock().connections(), 0);
}

/// `check --connect` goes through the proxy as requests do: one CONNECT, a TLS handshake
/// with KwikID inside it, and no request; a refusing proxy is one line naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_connect_goes_through_the_proxy_and_sends_nothing() {
    let upstream = Upstream::start().await;
    let proxy = ConnectProxy::start(ProxyAnswer::Tunnel).await;
    let (_gw, config_path) = gateway_through(&upstream, &proxy);
    let out = check_connect(&config_path, &[]).await;
    assert_exit(&out, 0);
    let printed = String::from_utf8_lossy(&out.stdout);
    let target = format!("localhost:{}", upstream.addr.port());
    assert!(
        printed.contains(&format!(
            "# upstream: reached KwikID at {target} through proxy {}: TLSv1_3 handshake complete",
            proxy.addr
        )),
        "{printed}"
    );
    assert_eq!(proxy.heads().len(), 1);
    assert!(proxy.heads()[0].starts_with(&format!("CONNECT {target} HTTP/1.1\r\n")));
    assert_eq!(upstream.mock().connections(), 1);
    assert!(upstream.mock().received().is_empty(), "no request was sent");

    let refusing = ConnectProxy::start(ProxyAnswer::Refuse(407)).await;
    let (_gw, config_path) = gateway_through(&upstream, &refusing);
    let out = check_connect(&config_path, &[]).await;
    assert_exit(&out, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "upstream: cannot reach KwikID at {target}: proxy {0} refused CONNECT: 407",
            refusing.addr
        )),
        "{stderr}"
    );
    assert!(!stderr.contains(PROXY_PASSWORD));
}

/// A proxy URL the gateway cannot use is a one-line config error naming the key, and never
/// echoes credentials.
#[test]
fn a_bad_proxy_setting_is_one_line_naming_the_key() {
    let scratch = Scratch::new();
    for (proxy, reason) in [
        (
            "https://egress:3128",
            "upstream.proxy: must start with http://",
        ),
        ("http://egress", "upstream.proxy: must name a port"),
        (
            "http://gw:pr0xy-pass-7c41e9@egress:3128",
            "upstream.proxy: must not hold credentials",
        ),
    ] {
        let path = scratch.write(
            "gateway.toml",
            &format!("[upstream]\nbase_url = \"https://kwikid.example\"\nproxy = \"{proxy}\"\n"),
        );
        let out = check_config(&path);
        assert_exit(&out, 2);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(reason), "{stderr}");
        assert!(!stderr.contains(PROXY_PASSWORD), "{stderr}");
    }
}
