//! The config loader: YAML text to the validated model. The offline check (what
//! `tokex check --offline` runs) reads nothing from the machine, so every input gets the
//! same answer anywhere; a config that passes it is then loaded for real from a directory
//! that does not exist (so no credential file can be read) and must keep the promises
//! the model makes. Every error names the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tokex::config::Config;

const CONFIG_PATH: &str = "/nonexistent-fuzz-dir/tokex.yaml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new(CONFIG_PATH);
    if let Err(e) = tokex::config::check_offline_text(text, path) {
        let message = e.to_string();
        assert!(message.starts_with(CONFIG_PATH), "{message}");
        return;
    }
    match tokex::config::parse(text, path) {
        Ok(config) => loaded(&config),
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with(CONFIG_PATH), "{message}");
        }
    }
});

fn loaded(config: &Config) {
    for (i, route) in config.routes.iter().enumerate() {
        assert!(
            !config.routes[..i].iter().any(|r| r.name == route.name),
            "duplicate route {}",
            route.name
        );
        if let Some(exchange) = &route.exchange {
            assert!(config.authorities.contains_key(&exchange.authority));
        }
        if let Some(prefix) = &route.path_prefix {
            assert!(prefix.starts_with('/'));
            // Requests are routed by their normalized path, so a prefix that is not one
            // could never match.
            assert_eq!(
                tokex::routing::normalize(prefix).as_deref(),
                Ok(prefix.as_str()),
                "routes[{i}].match.path_prefix"
            );
        }
        assert!(!route.strip_prefix || route.path_prefix.is_some());
        assert!(!route.upstream.base_path.ends_with('/'));
        let c = &route.cache;
        assert!(c.max_ttl.is_zero() || c.early_expiry < c.max_ttl);
    }
}
