//! The config loader: YAML text to the validated model, as `tokex check` runs it, isolated
//! from the machine (`${NAME}` and files come from a fixed set, so nothing depends on the
//! host). A config that loads can be printed, keeps the promises the model makes, and
//! neither it nor any error ever shows the contents of a credential file.
#![no_main]

use std::path::{Path, PathBuf};
use std::rc::Rc;

use libfuzzer_sys::fuzz_target;
use tokex::config::Config;
use tokex::config::sources::Fixed;

const CONFIG_PATH: &str = "/fuzz/tokex.yaml";

/// Credential files, by the path a config names them with (relative paths resolve
/// against the config's directory, `/fuzz`).
const FILES: [(&str, &[u8]); 9] = [
    ("/fuzz/client-secret", b"fuzz-file-client-secret-5b1f\n"),
    ("/fuzz/assertion", ASSERTION),
    ("/fuzz/actor", ACTOR),
    ("/fuzz/ec.pem", include_bytes!("../fixtures/ec-p256.pem")),
    (
        "/fuzz/rsa.pem",
        include_bytes!("../../tests/it/fixtures/rsa-2048.pem"),
    ),
    (
        "/fuzz/ed25519.pem",
        include_bytes!("../../tests/it/fixtures/ed25519.pem"),
    ),
    ("/fuzz/ca.pem", include_bytes!("../fixtures/ca.pem")),
    ("/fuzz/client.pem", include_bytes!("../fixtures/client.pem")),
    ("/fuzz/empty", b""),
];

/// `{"alg":"none"}.{"sub":"orders-service","exp":4102444800}.sig`: expires in 2100.
const ASSERTION: &[u8] =
    b"eyJhbGciOiJub25lIn0.eyJzdWIiOiJvcmRlcnMtc2VydmljZSIsImV4cCI6NDEwMjQ0NDgwMH0.c2ln";
/// `{"alg":"none"}.{"sub":"tokex","exp":4102444800}.sig`.
const ACTOR: &[u8] = b"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ0b2tleCIsImV4cCI6NDEwMjQ0NDgwMH0.c2ln";

thread_local! {
    static FIXED: Rc<Fixed> = Rc::new(Fixed {
        env: [
            ("TOKEX_BACKEND_CLIENT_SECRET", "fuzz-env-client-secret"),
            ("TOKEX_HOST", "payments.internal"),
            ("EMPTY", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        files: FILES.iter().map(|(p, c)| (PathBuf::from(p), c.to_vec())).collect(),
    });
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let fixed = FIXED.with(Rc::clone);
    match tokex::config::parse_isolated(text, Path::new(CONFIG_PATH), fixed) {
        Ok(config) => loaded(text, &config),
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with(CONFIG_PATH), "{message}");
            assert_no_credentials(text, &message);
        }
    }
});

fn loaded(text: &str, config: &Config) {
    let printed =
        serde_saphyr::to_string(config).expect("tokex check cannot print a loaded config");
    assert_no_credentials(text, &printed);
    assert_no_credentials(text, &format!("{config:?}"));
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

/// Credential contents travel only inside secret types; the fuzzer may of course write
/// the same text into the YAML itself, and then it may be printed.
fn assert_no_credentials(text: &str, output: &str) {
    for (path, contents) in FILES {
        let Ok(contents) = std::str::from_utf8(contents) else {
            continue;
        };
        for secret in contents
            .lines()
            .filter(|l| l.len() >= 16 && !l.starts_with("-----"))
        {
            assert!(
                text.contains(secret) || !output.contains(secret),
                "{path}'s contents in: {output:.2000}"
            );
        }
    }
}
