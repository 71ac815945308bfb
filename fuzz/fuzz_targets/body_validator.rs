//! `body::parse_init` on arbitrary bytes: `Ok` or `Err`, never a panic; `Ok` only for a JSON
//! object (first non-whitespace byte `{`, UTF-8 as RFC 8259 §8.1 requires, and serde_json
//! agrees it is an object) whose `handshake_id` / `callback_url` are strings or null when
//! present, as parsed.
//!
//! Found: invalid UTF-8 inside a value the gateway ignores was accepted (fixed; seed
//! `fuzz/seeds/body_validator/regression_not_utf8`, test `tests/fuzz_findings.rs`).
#![no_main]

use kwikid_gateway::rules::body::parse_init;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(init) = parse_init(data) else {
        return;
    };
    let first = data.iter().find(|b| !b.is_ascii_whitespace());
    assert_eq!(
        first,
        Some(&b'{'),
        "accepted a body that does not start with {{"
    );
    assert!(
        std::str::from_utf8(data).is_ok(),
        "accepted a body that is not UTF-8, so not JSON: {:?}",
        String::from_utf8_lossy(data)
    );
    let value: serde_json::Value = match serde_json::from_slice(data) {
        Ok(value) => value,
        // JSON grammar that serde_json's Value refuses and parse_init rightly skips in fields
        // it does not read: lone surrogates (`"\ud800"`, RFC 8259 §8.2 leaves them to the
        // receiver) and numbers beyond f64 (`1e999`, §6 leaves the range to the receiver).
        Err(e)
            if ["surrogate", "number out of range"]
                .iter()
                .any(|known| e.to_string().contains(known)) =>
        {
            return;
        }
        Err(e) => panic!("accepted a body serde_json refuses: {e}"),
    };
    let object = value
        .as_object()
        .expect("accepted a JSON value that is not an object");
    for (field, parsed) in [
        ("handshake_id", init.handshake_id.as_deref()),
        ("callback_url", init.callback_url.as_deref()),
    ] {
        match object.get(field) {
            None | Some(serde_json::Value::Null) => assert_eq!(parsed, None, "{field}"),
            Some(serde_json::Value::String(s)) => assert_eq!(parsed, Some(s.as_str()), "{field}"),
            Some(other) => panic!("accepted {field} = {other}"),
        }
    }
});
