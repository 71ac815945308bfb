//! Running it: the admin listener, metrics, graceful drain and connection hygiene.
//!
//! Nothing here waits on a timer to synchronise: a request is kept in flight by a KwikID
//! stand-in that holds it until the test lets it go, and every wait is for an event (a log
//! line, a count, a status) under a generous hang guard.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use support::mock::Fault;
use support::*;
use tokio::sync::watch;

/// The body the held KwikID answers with.
const HELD_BODY: &str = r#"{"redirection_url":"https://verify.test.getkwikid.com/held"}"#;

/// A KwikID stand-in over real TLS on a loopback port chosen by the OS that answers 200
/// [`HELD_BODY`] to the first `allowed` requests and holds the rest until the test allows
/// them: a request stays in flight for exactly as long as a test needs, with no timer.
struct HeldKwikId {
    base_url: String,
    ca_file: PathBuf,
    /// How many requests have arrived.
    arrived: watch::Receiver<usize>,
    /// How many requests may be answered.
    allowed: watch::Sender<usize>,
    accept: tokio::task::JoinHandle<()>,
    _scratch: Scratch,
}

impl HeldKwikId {
    async fn start(allowed: usize) -> Self {
        let cert = kwikid_gateway::tls::throwaway_server_cert(&["localhost", "127.0.0.1"]).unwrap();
        let scratch = Scratch::new();
        let ca_file = scratch.write("ca.pem", &cert.ca_pem);
        let tls = tokio_rustls::TlsAcceptor::from(Arc::new(
            kwikid_gateway::tls::server_config(cert.chain, cert.key).unwrap(),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (arrived_tx, arrived) = watch::channel(0usize);
        let (allowed, allowed_rx) = watch::channel(allowed);
        let arrived_tx = Arc::new(arrived_tx);
        let accept = tokio::spawn(async move {
            // Connections live in the set, so aborting this task closes them all.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let tls = tls.clone();
                let arrived_tx = arrived_tx.clone();
                let allowed_rx = allowed_rx.clone();
                connections.spawn(async move {
                    let Ok(stream) = tls.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let arrived_tx = arrived_tx.clone();
                            let mut allowed_rx = allowed_rx.clone();
                            async move {
                                let _ = req.into_body().collect().await;
                                let mut index = 0;
                                arrived_tx.send_modify(|n| {
                                    index = *n;
                                    *n += 1;
                                });
                                let _ = allowed_rx.wait_for(|allowed| *allowed > index).await;
                                Ok::<_, std::convert::Infallible>(
                                    http::Response::builder()
                                        .header("content-type", "application/json")
                                        .body(Full::new(Bytes::from_static(HELD_BODY.as_bytes())))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            base_url: base_url_for(port),
            ca_file,
            arrived,
            allowed,
            accept,
            _scratch: scratch,
        }
    }

    /// A gateway config in front of it, with timeouts no test here reaches.
    fn config(&self, extra: &str) -> String {
        let upstream = upstream_table_for(&self.base_url, Some(&self.ca_file), "30s", "120s");
        config_for(&self.base_url, &self.ca_file, &format!("{upstream}{extra}"))
    }

    /// Waits until `n` requests have arrived.
    async fn wait_arrived(&self, n: usize) {
        let mut arrived = self.arrived.clone();
        tokio::time::timeout(HANG_GUARD, arrived.wait_for(|a| *a >= n))
            .await
            .unwrap_or_else(|_| panic!("{n} requests did not reach KwikID"))
            .unwrap();
    }

    fn arrived(&self) -> usize {
        *self.arrived.borrow()
    }

    /// Lets the first `n` requests be answered.
    fn allow(&self, n: usize) {
        self.allowed.send_replace(n);
    }
}

impl Drop for HeldKwikId {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// A raw keep-alive POST to the init route with this body.
fn raw_init(body: &str) -> Vec<u8> {
    format!(
        "POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Guards against a missing or unsafe admin surface: /healthz and /readyz answer, /metrics
/// counts every request in the documented families with bounded labels, and never shows a
/// caller id, a caller-chosen path or the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_and_metrics() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(
        "[rate_limit]\nglobal = { per_second = 1000, burst = 1000 }\nper_caller = { per_second = 0.01, burst = 2 }\n",
    ));
    assert_ne!(gw.admin, gw.addr, "never on the proxy port");
    assert_eq!(admin_get(gw.admin, "/healthz").await.status, 200);
    assert_eq!(admin_get(gw.admin, "/readyz").await.status, 200);
    assert_eq!(
        admin_get(gw.addr, "/metrics").await.status,
        404,
        "the proxy port has no metrics"
    );

    let call = || init_as(gw.addr, "orders-svc-7f3");
    assert_eq!(call().await.status, 200);
    upstream.mock().set_fault(Fault::Garbage);
    assert_eq!(call().await.status, 502);
    assert_eq!(call().await.status, 429);
    assert_eq!(send(gw.addr, post("/other", "{}", &[])).await.status, 404);
    // A request is counted before its access-log line is written: after the fifth line, all
    // five are in the metrics.
    gw.stdout.wait_count(5, HANG_GUARD);

    let metrics = admin_get(gw.admin, "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = metrics.text();
    for expected in [
        "kwikid_gateway_requests_total{route=\"/verification/v2/digilocker/init\",status=\"200\",outcome=\"forwarded\"} 1",
        "kwikid_gateway_requests_total{route=\"/verification/v2/digilocker/init\",status=\"502\",outcome=\"upstream_unavailable\"} 1",
        "kwikid_gateway_requests_total{route=\"/verification/v2/digilocker/init\",status=\"429\",outcome=\"rate_limited\"} 1",
        "kwikid_gateway_requests_total{route=\"none\",status=\"404\",outcome=\"no_route\"} 2",
        "kwikid_gateway_rate_limited_total{scope=\"caller\"} 1",
        "kwikid_gateway_upstream_errors_total{kind=\"garbage\"} 1",
        "kwikid_gateway_request_duration_seconds_count{class=\"forwarded\"} 1",
        "kwikid_gateway_request_duration_seconds_count{class=\"upstream_error\"} 1",
        "kwikid_gateway_request_duration_seconds_count{class=\"refused\"} 3",
        "kwikid_gateway_upstream_duration_seconds_count 2",
        "kwikid_gateway_in_flight 0",
        "kwikid_gateway_rate_limiter_keys 1",
        "kwikid_gateway_token_age_seconds",
        "kwikid_gateway_token_info{fingerprint=\"",
        "# EOF",
    ] {
        assert!(text.contains(expected), "{expected} missing:\n{text}");
    }
    assert!(!text.contains("orders-svc-7f3"), "no caller ids in labels");
    assert!(!text.contains("/other"), "no caller-chosen paths in labels");
    assert!(!text.contains(TOKEN));
}

/// Guards against a drain that cuts requests or keeps serving: on SIGTERM, /readyz turns 503,
/// idle keep-alive connections are closed, new connections are refused, the request in
/// flight at KwikID still gets KwikID's answer and its access-log line, and the process
/// exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    // The first request is answered; the second is held at KwikID.
    let kwikid = HeldKwikId::start(1).await;
    let mut gw = Gateway::start(
        &kwikid.config("[listen]\naddr = \"127.0.0.1:0\"\nshutdown_grace = \"120s\"\n"),
    );

    // An idle keep-alive connection that has served one request.
    let mut idle = RawConn::connect(gw.addr).await;
    let first = idle.round_trip(&raw_init("{}")).await;
    assert_eq!(first.status, 200, "{}", first.head);

    let addr = gw.addr;
    let in_flight = tokio::spawn(async move {
        let request = post(INIT, r#"{"handshake_id":"drain"}"#, &[]);
        try_send(addr, request, Duration::from_secs(300)).await
    });
    kwikid.wait_arrived(2).await;

    gw.signal("TERM");
    eventually("/readyz to turn 503", HANG_GUARD, || async {
        admin_get(gw.admin, "/readyz").await.status == 503
    })
    .await;
    assert_eq!(
        metric(&metrics(gw.admin).await, "kwikid_gateway_ready"),
        Some(0.0),
        "the alert rules see the drain"
    );
    assert_eq!(
        idle.closed_within(HANG_GUARD).await,
        Ok(true),
        "the idle keep-alive connection is closed, with nothing sent"
    );
    eventually("new connections to be refused", HANG_GUARD, || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(
        !in_flight.is_finished(),
        "the held request is still in flight"
    );
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "the gateway waits for the request in flight"
    );

    kwikid.allow(2);
    let answer = in_flight
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("the drained request got no answer: {e}"));
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.body, HELD_BODY.as_bytes(), "KwikID's answer, whole");
    let (code, gw) = gw.exited().await;
    assert_eq!(code, Some(0), "{}", gw.stderr.text());
    assert_eq!(kwikid.arrived(), 2);
    // The process has exited: whatever it logged is all there is.
    let line = gw.access_line_with(
        "the drained request's access-log line",
        "\"handshake_id\":\"drain\"",
    );
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["outcome"], "forwarded", "{line}");
}

/// Guards against a connection cap that is not enforced, or that refuses instead of queueing:
/// past `max_connections` a new connection waits, unanswered, while the open ones keep being
/// served, and it is served once a slot frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_makes_extra_callers_wait() {
    let upstream = Upstream::start().await;
    // Idle keep-alive connections must stay open for the whole test.
    let gw = Gateway::start(&upstream.config(
        "[listen]\naddr = \"127.0.0.1:0\"\nmax_connections = 2\nheader_read_timeout = \"300s\"\n",
    ));
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = RawConn::connect(gw.addr).await;
        let answer = conn.round_trip(&raw_init("{}")).await;
        assert_eq!(answer.status, 200, "{}", answer.head);
        held.push(conn);
    }

    // The third connection is accepted by the kernel, and its request is sent.
    let mut waiting = RawConn::connect(gw.addr).await;
    waiting.send(&raw_init("{}")).await.unwrap();
    // Meanwhile the two open connections are served, again and again.
    for round in 0..3 {
        for conn in &mut held {
            let answer = conn.round_trip(&raw_init("{}")).await;
            assert_eq!(answer.status, 200, "round {round}: {}", answer.head);
        }
    }
    let mut byte = [0u8; 1];
    match waiting.stream.try_read(&mut byte) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => {
            panic!("the third connection was answered or closed while two are open: {other:?}")
        }
    }
    assert_eq!(
        upstream.mock().served(),
        8,
        "only the two open connections' requests reached KwikID"
    );

    drop(held.pop());
    let answer = waiting
        .read_response(HANG_GUARD)
        .await
        .unwrap()
        .expect("an answer once a slot freed");
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert_eq!(upstream.mock().served(), 9);
    assert_eq!(
        admin_get(gw.admin, "/healthz").await.status,
        200,
        "the process is fine"
    );
}

/// Guards against slowloris: a client that starts a head and does not finish it is answered
/// 408 `header_timeout` and disconnected once `header_read_timeout` fires, while others are
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(
        &upstream.config("[listen]\naddr = \"127.0.0.1:0\"\nheader_read_timeout = \"1s\"\n"),
    );
    let mut slow = RawConn::connect(gw.addr).await;
    slow.send(format!("POST {INIT} HTTP/1.1\r\nHost: gw\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(
        init(gw.addr, "{}").await.status,
        200,
        "others are served meanwhile"
    );
    // The timeout fires: the answer, then the close (how soon is not the point).
    assert_408_header_timeout(&gw, &mut slow).await;
    assert_eq!(
        upstream.mock().served(),
        1,
        "the slow request never reached KwikID"
    );
}

/// Guards against requests that leave no trace: a caller that hangs up while its request is
/// at KwikID still leaves an access-log line (status 499, outcome `client_closed`) and is
/// counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_hangs_up_is_still_logged() {
    // Every request is held at KwikID.
    let kwikid = HeldKwikId::start(0).await;
    let gw = Gateway::start(&kwikid.config(""));
    let mut caller = RawConn::connect(gw.addr).await;
    caller
        .send(&raw_init(r#"{"handshake_id":"hung-up"}"#))
        .await
        .unwrap();
    kwikid.wait_arrived(1).await;
    drop(caller);
    let line = gw.access_line_with(
        "the hung-up request's access-log line",
        "\"handshake_id\":\"hung-up\"",
    );
    assert_eq!(line["status"], 499, "{line}");
    assert_eq!(line["outcome"], "client_closed", "{line}");
    assert_eq!(line["path"], INIT, "{line}");
    let metrics = metrics(gw.admin).await;
    assert_eq!(
        metric(
            &metrics,
            "kwikid_gateway_requests_total{route=\"/verification/v2/digilocker/init\",status=\"499\",outcome=\"client_closed\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    kwikid.allow(1);
}
