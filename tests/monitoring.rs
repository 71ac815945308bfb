//! The alert rules (`deploy/prometheus/alerts.yaml`) and the dashboard
//! (`deploy/grafana/kwikid-gateway.json`) ask only for metrics a running gateway exports,
//! compared with its live `/metrics`, never with a list kept by hand; every rule has a
//! summary, a runbook in the README and a unit test, and promtool accepts both files.
//!
//! The promtool checks need Debian's `prometheus` package; without it they fail, unless
//! `KWIKID_SKIP_PROMTOOL=1` is set.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use support::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap();
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn dashboard() -> Value {
    let path = Path::new(ROOT).join("deploy/grafana/kwikid-gateway.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

/// Every rule of alerts.yaml, across its groups.
fn rules() -> Vec<Value> {
    yaml("deploy/prometheus/alerts.yaml")["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect()
}

/// Every query of the dashboard: each panel's targets (rows' panels included) and each
/// template variable's query.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    fn walk(panels: &Value, out: &mut Vec<String>) {
        for panel in panels.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                out.push(target["expr"].as_str().unwrap().to_owned());
            }
            walk(&panel["panels"], out);
        }
    }
    let mut queries = Vec::new();
    walk(&dashboard["panels"], &mut queries);
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["definition"].as_str() {
            queries.push(query.to_owned());
        }
    }
    queries
}

/// The metric names a PromQL expression uses: its identifiers that start as the gateway's
/// and the process's metrics do.
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("kwikid_gateway_") || word.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// The sample names a Prometheus text exposition can have: each family's own name, and a
/// histogram's `_bucket`, `_sum` and `_count`, whether or not a sample is there yet; and
/// every sample name that is there.
fn exported_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(typed) = line.strip_prefix("# TYPE ") {
            let mut words = typed.split(' ');
            let (name, kind) = (words.next().unwrap(), words.next().unwrap());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            } else {
                names.insert(name.to_owned());
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// A JWT-shaped token (unsigned) whose `exp` is 30 days away, so that the gateway exports
/// the token's expiry.
fn jwt_token() -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 30 * 86_400;
    let header = b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = b64.encode(format!(r#"{{"sub":"kwikid-gateway-test","exp":{exp}}}"#));
    format!("{header}.{payload}.c2lnbmF0dXJlLW5vdC1jaGVja2Vk")
}

/// The live exposition of a gateway, holding a token with an expiry, that has answered an
/// init and refused a GET.
async fn live_exposition() -> String {
    let upstream = Upstream::start().await;
    let token = jwt_token();
    let kwikid = upstream.another_accepting(&token).await;
    let config = config_for(&base_url_for(kwikid.addr.port()), &upstream.ca_file, "");
    let gw = Gateway::start_with_env(&config, &[("KWIKID_API_TOKEN", &token)]);
    assert_eq!(init(gw.addr, "{}").await.status, 200);
    let get = http::Request::get(INIT)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(send(gw.addr, get).await.status, 405);
    gw.stdout.wait_count(2, HANG_GUARD);
    let answer = metrics_accepting(gw.admin, "text/plain").await;
    assert_eq!(answer.status, 200);
    answer.text()
}

/// Guards against a dashboard panel or an alert rule that asks for a metric the gateway
/// does not export (a typo, a rename, a histogram asked for without its suffix): such a
/// panel shows "no data" and such a rule never fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_alert_rules_ask_only_for_exported_metrics() {
    let exported = exported_names(&live_exposition().await);
    let dashboard = dashboard();
    let mut missing = Vec::new();
    let mut used = BTreeSet::new();
    let alerts = rules()
        .iter()
        .map(|r| {
            (
                r["alert"].as_str().unwrap().to_owned(),
                r["expr"].as_str().unwrap().to_owned(),
            )
        })
        .collect::<Vec<_>>();
    let panels = dashboard_queries(&dashboard)
        .into_iter()
        .map(|q| ("dashboard".to_owned(), q));
    for (whose, expr) in alerts.into_iter().chain(panels) {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "{whose}: {expr} uses no gateway metric");
        for name in names {
            if !exported.contains(&name) {
                missing.push(format!("{whose}: {name}"));
            }
            used.insert(name);
        }
    }
    assert!(
        missing.is_empty(),
        "not exported: {missing:#?}\nexported: {exported:#?}"
    );
    for family in [
        "kwikid_gateway_requests_total",
        "kwikid_gateway_request_duration_seconds_bucket",
        "kwikid_gateway_upstream_duration_seconds_bucket",
        "kwikid_gateway_upstream_errors_total",
        "kwikid_gateway_rate_limited_total",
        "kwikid_gateway_in_flight",
        "kwikid_gateway_token_age_seconds",
        "kwikid_gateway_token_expiry_timestamp_seconds",
        "kwikid_gateway_upstream_auth_failures_total",
        "kwikid_gateway_caller_requests_total",
    ] {
        assert!(used.contains(family), "the dashboard shows no {family}");
    }
}

/// Guards against an alert that pages someone with no summary, no runbook, a runbook link
/// into a README section that does not exist, or no unit test of when it fires.
#[test]
fn every_rule_has_a_summary_a_runbook_and_a_unit_test() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let anchors: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|heading| {
            heading
                .trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect();
    let tests = yaml("deploy/prometheus/alerts_test.yaml");
    let fired: BTreeSet<&str> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap())
        .filter(|t| t["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()))
        .map(|t| t["alertname"].as_str().unwrap())
        .collect();
    let rules = rules();
    assert!(rules.len() >= 5, "{rules:?}");
    for rule in &rules {
        let name = rule["alert"].as_str().unwrap();
        let annotations = &rule["annotations"];
        assert!(
            annotations["summary"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "{name}: no summary"
        );
        let runbook = annotations["runbook"].as_str().unwrap_or_default();
        let anchor = runbook
            .strip_prefix("README.md#")
            .unwrap_or_else(|| panic!("{name}: runbook {runbook:?} is not README.md#…"));
        assert!(
            anchors.contains(anchor),
            "{name}: no README section #{anchor}"
        );
        assert!(fired.contains(name), "{name}: no unit test sees it fire");
    }
}

/// Guards against rules Prometheus would refuse to load, or that fire at the wrong time:
/// `promtool check rules` and `promtool test rules`, as CI runs them.
#[test]
fn promtool_accepts_the_rules_and_their_tests_pass() {
    for args in [
        ["check", "rules", "deploy/prometheus/alerts.yaml"],
        ["test", "rules", "deploy/prometheus/alerts_test.yaml"],
    ] {
        let Some(mut promtool) = promtool() else {
            return;
        };
        let out = promtool.args(args).current_dir(ROOT).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
