//! `tokex check` prints the effective config in the file's own format: fed back to
//! `tokex check` it loads and prints the same, secrets stay redacted, files stay paths.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_tokex");

/// `tokex check` on `path` with only `env`; the effective config it printed.
fn effective(path: &Path, env: &[(&str, &str)]) -> String {
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(path)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The output for `path`, written to another directory and checked again, prints the
/// same; returns it.
fn round_trip(path: &Path, env: &[(&str, &str)]) -> String {
    let first = effective(path, env);
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("effective.yaml");
    std::fs::write(&copy, &first).unwrap();
    let second = effective(&copy, env);
    assert_eq!(first, second, "{} does not round-trip", path.display());
    first
}

/// Every shipped sidecar config round-trips; the Kubernetes one with its mounted
/// credentials placed in a temporary directory.
#[test]
fn shipped_configs_round_trip() {
    let example = round_trip(Path::new("config/example.yaml"), &[]);
    let secret = std::path::absolute("config/example-client-secret").unwrap();
    assert!(
        example.contains(&format!("client_secret_file: {}", secret.display())),
        "{example}"
    );
    assert!(
        !example.contains("REPLACE-ME"),
        "the secret file's content never prints"
    );
    let chaining = round_trip(Path::new("config/chaining.yaml"), &[]);
    assert!(
        chaining.contains("    chain:\n    - authority: domain-a\n"),
        "{chaining}"
    );
    assert!(!chaining.contains("tokex-a-secret"), "{chaining}");

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("secrets");
    for file in ["tokex/client-secret", "tokens/tokex"] {
        std::fs::create_dir_all(root.join(file).parent().unwrap()).unwrap();
        std::fs::write(root.join(file), "placeholder").unwrap();
    }
    let text = std::fs::read_to_string("deploy/kubernetes/tokex.yaml").unwrap();
    let text = text.replace("/var/run/secrets/", &format!("{}/", root.display()));
    let path = dir.path().join("tokex.yaml");
    std::fs::write(&path, text).unwrap();
    round_trip(&path, &[]);
}

/// A config with every kind of key (a jwt-bearer route with extra parameters among them,
/// printed without the token types it refuses): the output has each default filled in, inline and
/// `${NAME}` secrets as the placeholder, credential files as absolute paths, and a literal
/// `${` still literal; it round-trips.
#[test]
fn every_key_round_trips_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let put = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    put("ca.pem", &ca.cert.pem());
    put("tls.crt", &ca.cert.pem());
    put("tls.key", &ca.signing_key.serialize_pem());
    put("key.pem", include_str!("fixtures/ed25519.pem"));
    put("secret.txt", "file-secret-VALUE\n");
    put("assertion.jwt", "header.payload.signature\n");
    put("actor.jwt", "actor-TOKEN\n");
    let yaml = "tls: { ca_file: ca.pem }
authorities:
  inline:
    token_endpoint: http://127.0.0.1:9/token
    client_id: c
    auth: { method: client_secret_basic, client_secret: inline-SECRET }
  env:
    token_endpoint: https://sts.example/token
    issuer: https://sts.example
    client_id: ${CLIENT_ID}
    auth: { method: client_secret_post, client_secret: \"${CLIENT_SECRET}\" }
    actor_token: { file: actor.jwt }
    ca_file: ca.pem
    timeout: 3s
    attempt_timeout: 1500ms
    retries: 1
    circuit_breaker: { failures: 0 }
  file:
    token_endpoint: https://sts.example/token
    client_id: c
    auth: { method: client_secret_basic, client_secret_file: secret.txt }
  jwt:
    token_endpoint: https://sts.example:8443/token
    client_id: c
    auth: { method: private_key_jwt, private_key_file: key.pem, alg: EdDSA, key_id: k1 }
  assertion:
    token_endpoint: https://sts.example/token
    client_id: c
    auth: { method: client_assertion, assertion_file: assertion.jwt }
  mtls:
    token_endpoint: https://sts.example/token
    client_id: c
    auth: { method: tls_client_auth, cert_file: tls.crt, key_file: tls.key }
  public:
    token_endpoint: http://sts.lab.example/token
    allow_insecure_http: true
    client_id: c
    auth: { method: none }
routes:
  - name: full
    match: { host: Payments.Internal:8080, path_prefix: /pay }
    strip_prefix: true
    upstream: https://payments.example/base
    ca_file: ca.pem
    on_missing_token: forward
    timeout: 5s
    deadline: 7s
    retry_on_401: true
    cache: { max_ttl: 2m, early_expiry: 10s }
    exchange:
      authority: env
      audience: payments
      resource: https://payments.example/
      scope: read  write read lit$${eral}
      subject_token_from: { cookie: session }
      inject: { header: X-Token, scheme: none }
  - name: cc
    upstream: http://127.0.0.1:9
    on_missing_token: client_credentials
    exchange: { authority: jwt, audience: api }
  - name: obo
    match: { host: graph.internal }
    upstream: https://graph.example
    exchange:
      authority: file
      grant: jwt-bearer
      scope: https://graph.example/.default
      extra_params:
        requested_token_use: on_behalf_of
        tenant: lit$${eral}
  - name: none
    match: { host: status.internal }
    upstream: http://status.example
    exchange: none
  - name: redirected
    match: { destination: '[fd00::/8]:8080' }
    upstream: http://orders.example
    exchange: none
transparent: { ports: [80, 8080], exclude_cidrs: [169.254.169.254/32], unmatched: reject }
cache: { max_ttl: 20m, refresh_ahead: 30s }
audit: { enabled: true, file: audit.jsonl }
tracing: { otlp_endpoint: http://127.0.0.1:4318 }
";
    put("tokex.yaml", yaml);
    let env = [("CLIENT_ID", "env-client"), ("CLIENT_SECRET", "env-SECRET")];
    let out = round_trip(&dir.path().join("tokex.yaml"), &env);
    for secret in [
        "inline-SECRET",
        "env-SECRET",
        "file-secret-VALUE",
        "actor-TOKEN",
    ] {
        assert!(!out.contains(secret), "{secret} printed:\n{out}");
    }
    assert_eq!(
        out.matches("client_secret: '[redacted]'").count()
            + out.matches("client_secret: \"[redacted]\"").count(),
        2,
        "{out}"
    );
    let abs = |name: &str| {
        std::path::absolute(dir.path().join(name))
            .unwrap()
            .display()
            .to_string()
    };
    for expected in [
        format!("client_secret_file: {}", abs("secret.txt")),
        format!("private_key_file: {}", abs("key.pem")),
        format!("file: {}", abs("audit.jsonl")),
        "client_id: env-client".into(),
        "attempt_timeout: 1500ms".into(),
        "audience: https://sts.example:8443/token".into(),
        "key_id: k1".into(),
        "assertion_type: urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
        "host: payments.internal:8080".into(),
        "scope: read write lit$${eral}".into(),
        "early_expiry: 10s".into(),
        "roots: webpki".into(),
        "tracing:\n  otlp_endpoint: http://127.0.0.1:4318".into(),
        "destination: \"[fd00::/8]:8080\"".into(),
        "listen: 127.0.0.1:15006".into(),
        "proxy_uid: 65532".into(),
        "unmatched: reject".into(),
        "grant: jwt-bearer".into(),
        "grant: token-exchange".into(),
        "    extra_params:\n      requested_token_use: on_behalf_of\n      tenant: lit$${eral}"
            .into(),
    ] {
        assert!(out.contains(&expected), "no `{expected}` in:\n{out}");
    }
}
