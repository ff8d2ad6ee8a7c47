//! What Redis holds: names and values that say nothing of the tokens, TTLs within each
//! entry's bound, values that are tampered with or sealed under another key refused,
//! tokens bound to a sender never written, and no token in a trace-level log.

use super::*;

/// Whether `haystack` holds any 12-byte run of `token` (all of a shorter one).
fn holds_part_of(haystack: &[u8], token: &str) -> bool {
    let run = token.len().min(12);
    token
        .as_bytes()
        .windows(run)
        .any(|w| haystack.windows(run).any(|h| h == w))
}

/// Every key and value in Redis after two exchanges is opaque: no part of a subject or
/// an issued token, JWT or not, appears in either; and each key's TTL is within its
/// entry's bound (the subject JWT's exp leaves 100 s, minus early_expiry: 70 s; the
/// opaque token's expires_in 300 s minus 30 s: 270 s).
#[tokio::test]
async fn redis_sees_neither_tokens_nor_longer_lifetimes() {
    let (redis, as_, up) = (
        Redis::start().await,
        MockAs::start().await,
        Upstream::start().await,
    );
    let issued_jwt = jwt(serde_json::json!({"sub": "issued-ISSUEDMARK", "exp": now() + 3600}));
    let issued = issued_jwt.clone();
    as_.on(move |req, _| match req.param("subject_token") {
        Some(s) if s.starts_with("opaque") => {
            issue_with(req, "opaque-ISSUEDMARK-narrowed", Some(300))
        }
        _ => issue_with(req, &issued, Some(300)),
    });
    let dir = tempfile::tempdir().unwrap();
    let keys = key_file(dir.path(), &random_keys::<1>());
    let tokex = Tokex::start(&shared_config(&as_, &up, &redis.url(), &keys, "")).await;
    let subject_jwt = jwt(serde_json::json!({"sub": "alice-SUBJECTMARK", "exp": now() + 100}));
    let subject_opaque = "opaque-SUBJECTMARK-subject-token";
    narrowed(&tokex, &up, &subject_jwt).await;
    narrowed(&tokex, &up, subject_opaque).await;
    written(&tokex, 2.0).await;
    let dump = redis.dump().await;
    assert_eq!(dump.len(), 2, "two entries, no lock without the fleet lock");
    let secrets = [
        subject_jwt.as_str(),
        subject_opaque,
        issued_jwt.as_str(),
        "opaque-ISSUEDMARK-narrowed",
        "SUBJECTMARK",
        "ISSUEDMARK",
    ];
    for (key, value) in &dump {
        assert!(key.starts_with("tokex:v1:"), "{key}");
        for secret in secrets {
            assert!(!holds_part_of(key.as_bytes(), secret), "{secret} in {key}");
            assert!(!holds_part_of(value, secret), "{secret} in a value");
        }
    }
    let mut conn = redis.client().await;
    let mut ttls = Vec::new();
    for (key, _) in &dump {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        ttls.push(ttl);
    }
    ttls.sort();
    assert!(
        ttls[0] > 60_000 && ttls[0] <= 70_000,
        "subject exp bounds it: {ttls:?}"
    );
    assert!(
        ttls[1] > 260_000 && ttls[1] <= 270_000,
        "expires_in bounds it: {ttls:?}"
    );
}

/// A value altered in Redis, one moved under another entry's name, and one sealed under
/// a key the reader does not hold are each refused and counted, and the reader exchanges
/// instead.
#[tokio::test]
async fn tampered_moved_and_foreign_values_are_refused() {
    let (redis, as_, up) = (
        Redis::start().await,
        MockAs::start().await,
        Upstream::start().await,
    );
    let [old, new] = random_keys::<2>();
    let (old_dir, new_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (old_keys, new_keys) = (
        key_file(old_dir.path(), &[old]),
        key_file(new_dir.path(), &[new]),
    );
    let (url, mut conn) = (redis.url(), redis.client().await);
    let writer = Tokex::start(&shared_config(&as_, &up, &url, &old_keys, "")).await;
    narrowed(&writer, &up, "subject-1").await;
    written(&writer, 1.0).await;
    let (name, mut value) = redis.dump().await.remove(0);
    let middle = value.len() / 2;
    value[middle] ^= 0x01;
    let _: () = redis::cmd("SET")
        .arg(&name)
        .arg(&value)
        .arg("KEEPTTL")
        .query_async(&mut conn)
        .await
        .unwrap();
    let reader = Tokex::start(&shared_config(&as_, &up, &url, &old_keys, "")).await;
    narrowed(&reader, &up, "subject-1").await;
    assert_eq!(as_.count(), 2, "the tampered value was not used");
    let undecryptable = "tokex_shared_cache_ignored_total{reason=\"undecryptable\"}";
    assert_eq!(read_metric(&reader, undecryptable).await, 1.0);

    // The reader wrote subject-1 again; a replica with only the new key writes its own.
    written(&reader, 1.0).await;
    let rotated = Tokex::start(&shared_config(&as_, &up, &url, &new_keys, "")).await;
    narrowed(&rotated, &up, "subject-1").await;
    written(&rotated, 1.0).await;
    assert_eq!(as_.count(), 3, "the old key's entry is not the new key's");
    let dump = redis.dump().await;
    let (old_name, old_value) = dump.iter().find(|(k, _)| *k == name).unwrap().clone();
    let new_name = dump.iter().find(|(k, _)| *k != old_name).unwrap().0.clone();
    let _: () = redis::cmd("SET")
        .arg(&new_name)
        .arg(&old_value)
        .arg("KEEPTTL")
        .query_async(&mut conn)
        .await
        .unwrap();
    let foreign = Tokex::start(&shared_config(&as_, &up, &url, &new_keys, "")).await;
    narrowed(&foreign, &up, "subject-1").await;
    assert_eq!(
        as_.count(),
        4,
        "a value under a key the reader lacks is not used"
    );
    assert_eq!(read_metric(&foreign, undecryptable).await, 1.0);
}

/// A token bound to its sender (here a JWT with a `cnf` claim, as a certificate-bound
/// token carries) is never written; an unbound one from the same replica is.
#[tokio::test]
async fn tokens_bound_to_a_sender_are_never_written() {
    let (redis, as_, up) = (
        Redis::start().await,
        MockAs::start().await,
        Upstream::start().await,
    );
    let bound = jwt(
        serde_json::json!({"sub": "s", "cnf": {"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}}),
    );
    as_.on(move |req, n| match req.param("subject_token") {
        Some("bound-subject") => issue_with(req, &bound, Some(300)),
        _ => issue(req, n),
    });
    let dir = tempfile::tempdir().unwrap();
    let keys = key_file(dir.path(), &random_keys::<1>());
    let yaml = shared_config(&as_, &up, &redis.url(), &keys, "");
    let a = Tokex::start(&yaml).await;
    narrowed(&a, &up, "bound-subject").await;
    narrowed(&a, &up, "plain-subject").await;
    written(&a, 1.0).await;
    assert_eq!(redis.dump().await.len(), 1, "only the unbound token");
    let b = Tokex::start(&yaml).await;
    narrowed(&b, &up, "plain-subject").await;
    narrowed(&b, &up, "bound-subject").await;
    assert_eq!(as_.count(), 3, "the bound token was exchanged again");
    assert_eq!(
        read_metric(&a, "tokex_shared_cache_writes_total").await,
        1.0
    );
}

/// At `RUST_LOG=trace`, with a shared cache behind a password, through an exchange and
/// write, a shared hit and a local hit, the log holds no subject or issued token, no
/// cache key and no Redis password.
#[tokio::test]
async fn trace_logs_carry_no_tokens_keys_or_password() {
    let password = "redis-PASSWORD-hunter2";
    let (redis, as_, up) = (
        Redis::start_requiring(password).await,
        MockAs::start().await,
        Upstream::start().await,
    );
    as_.on(|req, n| issue_with(req, &format!("issued-SECRETVALUE-{n}"), Some(300)));
    let dir = tempfile::tempdir().unwrap();
    let key = random_keys::<1>();
    let keys = key_file(dir.path(), &key);
    let password_file = dir.path().join("redis-password");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let extra = format!("password_file: {}", password_file.display());
    let yaml = shared_config(&as_, &up, &redis.url(), &keys, &extra);
    let writer = Tokex::start(&yaml).await;
    narrowed(&writer, &up, "shared-subject-TOKENVALUE").await;
    written(&writer, 1.0).await;
    let path = dir.path().join("t.yaml");
    std::fs::write(
        &path,
        format!("listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n{yaml}"),
    )
    .unwrap();
    let env = [("RUST_LOG", "trace"), ("TOKIO_WORKER_THREADS", "1")];
    let mut spawned = spawn_tokex(
        &[std::ffi::OsStr::new("run"), "-c".as_ref(), path.as_os_str()],
        &env,
        "listening",
    )
    .await;
    let addr = spawned.listen();
    for token in [
        "shared-subject-TOKENVALUE",
        "own-subject-TOKENVALUE",
        "own-subject-TOKENVALUE",
    ] {
        let r = client()
            .get(format!("http://{addr}/x"))
            .header("host", "echo.internal")
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    assert_eq!(as_.count(), 2, "the first came from the shared cache");
    assert!(spawned.terminate().await.success());
    let log = spawned.log();
    assert!(
        log.lines().filter(|l| l.contains("TRACE")).count() >= 5,
        "trace logging was on:\n{log}"
    );
    use base64::Engine;
    let key_line = base64::engine::general_purpose::STANDARD.encode(key[0]);
    for secret in ["TOKENVALUE", "SECRETVALUE", password, key_line.as_str()] {
        assert!(
            !log.contains(secret),
            "{secret} leaked into the logs:\n{}",
            log.lines()
                .filter(|l| l.contains(secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
