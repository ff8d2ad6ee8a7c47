//! The config loader: YAML text to the validated model. The offline check (what
//! `tokex check --offline` runs) reads nothing from the machine, so every input gets the
//! same answer anywhere; a config that passes it is then loaded for real from a directory
//! that does not exist, unless it names an absolute file or the system's certificate
//! store (scripts/fuzz.sh also runs it with an empty environment), so that no load reads
//! the machine either. A loaded config must keep the promises the model makes. Every
//! error names the file.
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
    if reads_the_machine(text) {
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
        // A route without upstream (redirected connections only) needs the transparent section.
        assert!(route.upstream.is_some() || config.transparent.is_some());
        if let Some(up) = &route.upstream {
            assert!(!up.base_path.ends_with('/'));
        }
        let c = &route.cache;
        assert!(c.max_ttl.is_zero() || c.early_expiry < c.max_ttl);
    }
}

/// Whether loading `text` for real would read something of this machine's: a file named by
/// an absolute path (a relative one resolves under the missing directory) or the system's
/// certificate store. Unparsable as plain YAML counts as yes.
fn reads_the_machine(text: &str) -> bool {
    use serde_json::Value;
    fn names_the_machine(key: &str, value: &Value) -> bool {
        match value {
            Value::String(s) if key == "file" || key.ends_with("_file") => s.starts_with('/'),
            Value::String(s) if key == "roots" => s.contains("system"),
            Value::Array(items) => items.iter().any(|v| names_the_machine(key, v)),
            Value::Object(map) => map.iter().any(|(k, v)| names_the_machine(k, v)),
            _ => false,
        }
    }
    serde_saphyr::from_str::<Value>(text).map_or(true, |v| names_the_machine("", &v))
}
