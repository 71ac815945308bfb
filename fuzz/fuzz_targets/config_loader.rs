//! `Config::parse` on arbitrary text: a valid config or an error that prints as exactly one
//! line (SPEC §2: "reported in exactly one line"), never a panic.
//!
//! Found: a key or a file path holding a line break was printed as is, so the error spanned
//! lines (fixed; seed `fuzz/seeds/config_loader/regression_multiline_key.toml`, tests
//! `tests/fuzz_findings.rs`).
#![no_main]

use std::path::Path;

use kwikid_gateway::config::Config;
use kwikid_gateway::rules::route::is_clean_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    // Validation reads the files the config names (ca_file, listen.tls.*). Device and proc
    // files could block or never end; that is an operator pointing at them, not a finding.
    if ["/dev", "/proc", "/sys", "..", "~"]
        .iter()
        .any(|p| text.contains(p))
    {
        return;
    }
    match Config::parse(Path::new("fuzz.toml"), text) {
        Err(e) => {
            let line = e.to_string();
            assert!(
                !line.contains(['\n', '\r']),
                "a config error spans more than one line: {line:?}"
            );
            assert!(line.starts_with("fuzz.toml: "), "{line:?}");
        }
        Ok(config) => {
            assert!(!config.routes.is_empty());
            assert!(config.routes.iter().all(|r| is_clean_path(&r.path)));
            assert!(config.listen.max_connections >= 1);
            assert!(config.listen.max_body_bytes >= 1);
            assert!(!config.listen.header_read_timeout.is_zero());
            assert!(!config.upstream.request_timeout.is_zero());
            assert!(!config.upstream.connect_timeout.is_zero());
            assert_eq!(config.upstream.scheme, http::uri::Scheme::HTTPS);
            for rate in [config.rate_limit.global, config.rate_limit.per_caller] {
                assert!(rate.per_second > 0.0 && rate.per_second.is_finite() && rate.burst >= 1);
            }
        }
    }
});
