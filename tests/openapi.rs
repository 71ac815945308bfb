//! `openapi.yaml` agrees with the code: every `x-gateway-error` code the gateway can send is
//! in its enum and on the response of its status, and nothing else is; every answer names
//! `x-request-id`; the init body is the one the gateway checks.

use std::collections::BTreeSet;

use kwikid_gateway::proxy::rescue::CODES;
use serde_json::Value;

const INIT: &str = "/verification/v2/digilocker/init";

fn document() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("openapi.yaml: {e}"))
}

/// `value`, or the component its `$ref` (`#/components/…`) points to.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(pointer) => doc
            .pointer(pointer.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("dangling $ref {pointer}")),
        None => value,
    }
}

fn strings(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Guards against a code the gateway sends that callers' generated clients do not know, and
/// against a documented code that it never sends.
#[test]
fn the_error_code_enum_is_exactly_what_the_gateway_sends() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let listed = strings(&doc["components"]["schemas"]["GatewayErrorCode"]["enum"]);
    let sent: BTreeSet<String> = CODES.iter().map(|(c, _)| (*c).to_owned()).collect();
    assert_eq!(listed, sent);
    assert_eq!(
        doc["components"]["schemas"]["GatewayErrorCode"]["enum"]
            .as_array()
            .unwrap()
            .len(),
        CODES.len(),
        "no code listed twice"
    );
}

/// Guards against a code documented on the wrong status (a client branching on the status
/// would miss it), and against a status the gateway answers with being left out.
#[test]
fn each_code_is_on_the_response_of_its_status() {
    let doc = document();
    let responses = &doc["paths"][INIT]["post"]["responses"];
    let responses = responses.as_object().expect("the init's responses");
    for (code, status) in CODES {
        let response = resolve(&doc, &responses[&status.to_string()]);
        let header = resolve(&doc, &response["headers"]["x-gateway-error"]);
        let codes = strings(&header["schema"]["enum"]);
        assert!(codes.contains(*code), "{status} does not list {code}");
    }
    for (status, response) in responses {
        let response = resolve(&doc, response);
        let Some(header) = response["headers"].get("x-gateway-error") else {
            continue;
        };
        for code in strings(&resolve(&doc, header)["schema"]["enum"]) {
            assert!(
                CODES.contains(&(code.as_str(), status.parse().unwrap())),
                "{status} lists {code}, which the gateway never sends with that status"
            );
        }
    }
}

/// Guards against a client generated from the document that cannot read `x-request-id`,
/// `Retry-After` or `Allow`, or that sends a body the gateway refuses.
#[test]
fn headers_and_the_init_body_are_described() {
    let doc = document();
    let post = &doc["paths"][INIT]["post"];
    for (status, response) in post["responses"].as_object().unwrap() {
        let headers = &resolve(&doc, response)["headers"];
        assert!(
            headers.get("x-request-id").is_some(),
            "{status} names no x-request-id"
        );
    }
    let responses = &post["responses"];
    assert!(responses["429"]["headers"].get("Retry-After").is_some());
    assert!(responses["405"]["headers"].get("Allow").is_some());
    for status in ["200", "400", "401", "500"] {
        assert!(responses.get(status).is_some(), "KwikID's {status}");
    }
    let init = resolve(
        &doc,
        &post["requestBody"]["content"]["application/json"]["schema"],
    );
    assert_eq!(init["type"], "object");
    for field in ["handshake_id", "callback_url"] {
        assert_eq!(
            strings(&init["properties"][field]["type"]),
            BTreeSet::from(["string".to_owned(), "null".to_owned()]),
            "{field}"
        );
    }
    assert!(init.get("required").is_none(), "both fields are optional");
    let parameters: Vec<&str> = post["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| resolve(&doc, p)["name"].as_str().unwrap())
        .collect();
    assert_eq!(parameters, ["x-request-id", "x-caller-id"]);
}
