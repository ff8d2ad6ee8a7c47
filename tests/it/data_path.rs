//! The happy path and its invariants: swap, cache, coalescing, isolation, expiry,
//! routing forms, header hygiene, streaming, TLS.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use crate::support::*;

each_mode!(
    token_is_swapped_and_original_never_forwarded,
    second_call_is_a_cache_hit,
    concurrent_misses_make_one_exchange,
    different_inputs_never_share_an_entry,
    hop_by_hop_headers_are_stripped,
    bodies_stream_both_ways,
    upstream_redirects_are_not_followed,
    exchange_none_and_forward_without_token,
);

/// The subject token is exchanged and replaced; the original never reaches the upstream,
/// and the AS sees the route's RFC 8693 parameters with client_secret_basic.
async fn token_is_swapped_and_original_never_forwarded(mode: Mode) {
    let (as_, echo) = (MockAs::start().await, Echo::start(mode).await);
    let tokex = Tokex::start(&config_for(&as_, &echo)).await;
    let subject = "subject+token/with.chars~==";
    let r = get_in(mode, &tokex, "echo.internal", "/orders?x=1", Some(subject)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["authorization"], "Bearer narrowed-1");
    assert_eq!(r.json()["path"], "/orders");
    let seen = echo.up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target(), "/orders?x=1");
    assert_eq!(
        Echo::authority_of(&seen[0]),
        echo.authority(),
        "Host is the upstream's"
    );
    for (name, value) in &seen[0].headers {
        assert!(
            !value.as_bytes().windows(7).any(|w| w == b"subject"),
            "{name} carries the subject token"
        );
    }
    let reqs = as_.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        r.param("grant_type"),
        Some("urn:ietf:params:oauth:grant-type:token-exchange")
    );
    assert_eq!(r.param("subject_token"), Some(subject));
    assert_eq!(
        r.param("subject_token_type"),
        Some("urn:ietf:params:oauth:token-type:access_token")
    );
    assert_eq!(
        r.param("requested_token_type"),
        Some("urn:ietf:params:oauth:token-type:access_token")
    );
    assert_eq!(r.param("audience"), Some("echo-api"));
    assert_eq!(r.param("scope"), Some("read write"));
    assert_eq!(r.param("client_secret"), None);
    assert!(
        r.headers["authorization"]
            .to_str()
            .unwrap()
            .starts_with("Basic ")
    );
}

/// The second call with the same token is a cache hit: one AS request, hit counted.
async fn second_call_is_a_cache_hit(mode: Mode) {
    let (as_, echo) = (MockAs::start().await, Echo::start(mode).await);
    let tokex = Tokex::start(&config_for(&as_, &echo)).await;
    for _ in 0..3 {
        let r = get_in(mode, &tokex, "echo.internal", "/", Some("tok-a")).await;
        assert_eq!(r.json()["authorization"], "Bearer narrowed-1");
    }
    assert_eq!(as_.count(), 1);
    let m = tokex.metrics().await;
    assert!(
        m.contains("tokex_cache_hits_total{route=\"echo\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("tokex_cache_misses_total{route=\"echo\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("tokex_exchanges_total{authority=\"main\",outcome=\"ok\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("tokex_requests_total{route=\"echo\",status=\"200\",code=\"\"} 3"),
        "{m}"
    );
}

/// 200 concurrent requests with one subject token make exactly one AS call.
async fn concurrent_misses_make_one_exchange(mode: Mode) {
    let (as_, echo) = (MockAs::start().await, Echo::start(mode).await);
    as_.on(|req, n| issue(req, n).delayed(Duration::from_millis(300)));
    let tokex = std::sync::Arc::new(Tokex::start(&config_for(&as_, &echo)).await);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let t = tokex.clone();
        tasks.push(tokio::spawn(async move {
            get_in(mode, &t, "echo.internal", "/", Some("same-token"))
                .await
                .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(as_.count(), 1);
}

/// Different subject tokens, audiences or scopes never share a cache entry.
async fn different_inputs_never_share_an_entry(mode: Mode) {
    let (as_, echo) = (MockAs::start().await, Echo::start(mode).await);
    let yaml = format!(
        "{}  - name: other-aud
    match: {{ host: aud.internal }}
    upstream: {u}
    exchange: {{ authority: main, audience: other-api, scope: read write }}
  - name: other-scope
    match: {{ host: scope.internal }}
    upstream: {u}
    exchange: {{ authority: main, audience: echo-api, scope: read }}
",
        config(&as_, &echo.url),
        u = echo.url
    );
    let tokex = Tokex::start(&with_route_lines(&yaml, &echo.route_lines())).await;
    let auth = async |host: &str, token: &str| {
        get_in(mode, &tokex, host, "/", Some(token)).await.json()["authorization"].clone()
    };
    let a = auth("echo.internal", "tok").await;
    let b = auth("aud.internal", "tok").await;
    let c = auth("scope.internal", "tok").await;
    let d = auth("echo.internal", "tok2").await;
    assert_eq!(as_.count(), 4);
    let all = [a, b, c, d];
    for i in 0..4 {
        for j in i + 1..4 {
            assert_ne!(all[i], all[j]);
        }
    }
    let reqs = as_.requests();
    assert_eq!(reqs[1].param("audience"), Some("other-api"));
    assert_eq!(reqs[2].param("scope"), Some("read"));
}

/// Each lifetime bound can stop caching: an issued JWT exp, a subject JWT exp or an
/// expires_in within early_expiry means the next request exchanges again, while a long
/// bound keeps the entry.
#[tokio::test]
async fn expiry_honours_every_bound() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let tokex = Tokex::start(&config(&as_, &up.url())).await;
    let twice = |token: String| {
        let t = &tokex;
        async move {
            get(t, "echo.internal", "/", Some(&token)).await;
            get(t, "echo.internal", "/", Some(&token)).await;
        }
    };
    // Issued JWT exp 20 s ahead (inside early_expiry 30 s) although expires_in says 300.
    as_.on(|req, _| issue_with(req, &jwt(serde_json::json!({"exp": now() + 20})), Some(300)));
    twice("t1".into()).await;
    assert_eq!(as_.count(), 2, "issued exp bounds the lifetime");
    // expires_in 25 s.
    as_.on(|req, n| issue_with(req, &format!("n{n}"), Some(25)));
    twice("t2".into()).await;
    assert_eq!(as_.count(), 4, "expires_in bounds the lifetime");
    // Subject JWT expiring in 20 s.
    as_.on(|req, n| issue_with(req, &format!("n{n}"), Some(300)));
    twice(jwt(serde_json::json!({"exp": now() + 20}))).await;
    assert_eq!(as_.count(), 6, "subject exp bounds the lifetime");
    // Everything long: cached.
    twice(jwt(serde_json::json!({"exp": now() + 3600}))).await;
    assert_eq!(as_.count(), 7, "long-lived tokens are cached");
}

/// max_ttl bounds a long-lived token: with max_ttl 31s and early_expiry 30s the entry
/// lives one second: a hit at its last millisecond, a new exchange at its bound.
#[tokio::test(start_paused = true)]
async fn max_ttl_bounds_the_lifetime() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let yaml = format!(
        "{}cache: {{ max_ttl: 31s, early_expiry: 30s }}\n",
        config(&as_, &up.url())
    );
    let tokex = Tokex::start(&yaml).await;
    get(&tokex, "echo.internal", "/", Some("t")).await;
    get(&tokex, "echo.internal", "/", Some("t")).await;
    assert_eq!(as_.count(), 1);
    tokio::time::advance(Duration::from_millis(999)).await;
    get(&tokex, "echo.internal", "/", Some("t")).await;
    assert_eq!(as_.count(), 1);
    tokio::time::advance(Duration::from_millis(1)).await;
    get(&tokex, "echo.internal", "/", Some("t")).await;
    assert_eq!(as_.count(), 2);
}

/// The three ways an app reaches tokex: Host, absolute-form (HTTP_PROXY) and path
/// prefix with stripping; plus h2c prior knowledge from the app.
#[tokio::test]
async fn routing_forms_and_h2c() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let yaml = format!(
        "{}  - name: by-prefix
    match: {{ path_prefix: /payments }}
    strip_prefix: true
    upstream: {}/base
    exchange: {{ authority: main, audience: echo-api, scope: read write }}
",
        config(&as_, &up.url()),
        up.url()
    );
    let tokex = Tokex::start(&yaml).await;
    // Absolute-form through an HTTP proxy.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let via_proxy = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(tokex.url("")).unwrap())
        .build()
        .unwrap();
    let r = got(via_proxy
        .get("http://echo.internal/abs")
        .bearer_auth("t")
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!((r.status, r.json()["path"].as_str()), (200, Some("/abs")));
    // Path prefix, stripped, under the upstream's base path.
    let r = got(client()
        .get(tokex.url("/payments/p/1?q=2"))
        .bearer_auth("t")
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(up.seen().last().unwrap().uri, "/base/p/1?q=2");
    // h2c prior knowledge with :authority naming the route.
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .resolve("echo.internal", tokex.addr)
        .build()
        .unwrap();
    let r = got(h2
        .get(format!("http://echo.internal:{}/h2", tokex.addr.port()))
        .bearer_auth("t")
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!((r.status, r.json()["path"].as_str()), (200, Some("/h2")));
    assert_eq!(
        as_.count(),
        1,
        "all three share the cache entry for one route and token"
    );
}

/// Hop-by-hop fields, fields named in Connection, and `Connection: authorization`
/// cannot remove or smuggle the narrowed token; end-to-end headers pass. (HTTP/2
/// forbids connection-specific fields, so h2c sends only the end-to-end ones.)
async fn hop_by_hop_headers_are_stripped(mode: Mode) {
    let (as_, echo) = (MockAs::start().await, Echo::start(mode).await);
    let tokex = Tokex::start(&config_for(&as_, &echo)).await;
    let mut req = request_in(mode, &tokex, http::Method::GET, "echo.internal", "/")
        .header("authorization", "Bearer orig")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("x-end-to-end", "kept");
    if !mode.h2c {
        req = req
            .header("connection", "x-private, authorization, keep-alive")
            .header("x-private", "secret-ish")
            .header("keep-alive", "timeout=5");
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let seen = echo.up.seen().pop().unwrap();
    assert_eq!(seen.headers["authorization"], "Bearer narrowed-1");
    assert_eq!(seen.headers["x-end-to-end"], "kept");
    for gone in ["x-private", "keep-alive", "proxy-authorization"] {
        assert!(!seen.headers.contains_key(gone), "{gone} was forwarded");
    }
}

/// Bodies stream both ways: the upstream echoes each chunk back before the app sends
/// the next, which deadlocks if tokex buffered either direction; then 32 MiB passes.
async fn bodies_stream_both_ways(mode: Mode) {
    let (as_, echo) = (MockAs::start().await, Echo::start(mode).await);
    // The upload's upstream answers once it has the whole body: the route's timeout for
    // response headers covers the upload, so it gets room on a loaded machine.
    let yaml = config_for(&as_, &echo).replace(
        "    timeout: 1s\n    exchange",
        "    timeout: 30s\n    exchange",
    );
    let tokex = Tokex::start(&yaml).await;
    let mut app = AppConn::connect(mode, &tokex).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let req = app
        .request(http::Method::POST, "echo.internal", "/stream")
        .header("authorization", "Bearer t")
        .body(ChannelBody(rx))
        .unwrap();
    tx.send(Bytes::from_static(b"ping-1")).await.unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), app.send(req))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut read_chunk = async || {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("streamed chunk");
        frame.unwrap().unwrap().into_data().unwrap()
    };
    assert_eq!(read_chunk().await, "ping-1");
    tx.send(Bytes::from_static(b"ping-2")).await.unwrap();
    assert_eq!(read_chunk().await, "ping-2");
    drop(tx);

    let chunk = Bytes::from(vec![b'x'; 1 << 20]);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    tokio::spawn(async move {
        for _ in 0..32 {
            if tx.send(chunk.clone()).await.is_err() {
                return; // the request failed; its response says why
            }
        }
    });
    let big = reqwest::Body::wrap(ChannelBody(rx));
    let r = request_in(mode, &tokex, http::Method::POST, "echo.internal", "/upload")
        .bearer_auth("t")
        .body(big)
        .send()
        .await
        .unwrap();
    let r = got(r).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["body_len"], 32 << 20);
}

/// HTTPS upstreams are verified against ca_file and negotiate HTTP/2 by ALPN; without
/// the CA the handshake fails closed as upstream_unavailable.
#[tokio::test]
async fn https_upstream_with_ca_file_and_alpn() {
    let as_ = MockAs::start().await;
    let (up, ca_pem) = Upstream::start_tls().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca_pem).unwrap();
    let url = format!("https://localhost:{}", up.addr.port());
    let yaml = format!(
        "{}  - name: untrusted
    match: {{ host: untrusted.internal }}
    upstream: {url}
    exchange: {{ authority: main, audience: echo-api }}
",
        config(&as_, &url).replace(
            "    timeout: 1s\n    exchange",
            "    timeout: 1s\n    ca_file: ca.pem\n    exchange"
        )
    );
    let tokex = Tokex::start_in(dir, &yaml).await;
    let r = get(&tokex, "echo.internal", "/tls", Some("t")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["authorization"], "Bearer narrowed-1");
    assert_eq!(up.seen()[0].version, http::Version::HTTP_2);
    let r = get(&tokex, "untrusted.internal", "/tls", Some("t")).await;
    assert_eq!(
        (r.status, r.tokex_error()),
        (502, Some("upstream_unavailable"))
    );
    assert_eq!(up.seen().len(), 1);
}

/// Redirects from the upstream are passed to the app, never followed (by tokex: the
/// app's client here follows none either).
async fn upstream_redirects_are_not_followed(mode: Mode) {
    let (as_, echo) = (MockAs::start().await, Echo::start(mode).await);
    let tokex = Tokex::start(&config_for(&as_, &echo)).await;
    let r = get_in(mode, &tokex, "echo.internal", "/redirect", Some("t")).await;
    assert_eq!(r.status, 302);
    assert_eq!(r.headers["location"], "http://elsewhere.invalid/");
    assert!(r.headers.get("tokex-error").is_none());
    assert_eq!(echo.up.seen().len(), 1);
}

/// `exchange: none` forwards without any Authorization; `on_missing_token: forward`
/// forwards a token-less request without calling the AS.
async fn exchange_none_and_forward_without_token(mode: Mode) {
    let (as_, echo) = (MockAs::start().await, Echo::start(mode).await);
    let yaml = format!(
        "{}  - name: public
    match: {{ host: public.internal }}
    upstream: {u}
    exchange: none
  - name: optional
    match: {{ host: optional.internal }}
    upstream: {u}
    on_missing_token: forward
    exchange: {{ authority: main, audience: echo-api }}
",
        config(&as_, &echo.url),
        u = echo.url
    );
    let tokex = Tokex::start(&with_route_lines(&yaml, &echo.route_lines())).await;
    let r = get_in(mode, &tokex, "public.internal", "/", Some("orig-token")).await;
    assert_eq!((r.status, r.json()["authorization"].is_null()), (200, true));
    let r = get_in(mode, &tokex, "optional.internal", "/", None).await;
    assert_eq!((r.status, r.json()["authorization"].is_null()), (200, true));
    assert_eq!(as_.count(), 0);
}

/// Admin endpoints: health, readiness (true while serving), and the documented series.
#[tokio::test]
async fn admin_endpoints() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let tokex = Tokex::start(&config(&as_, &up.url())).await;
    get(&tokex, "echo.internal", "/", Some("t")).await;
    let c = client();
    let status = |p: &str| {
        let c = c.clone();
        let url = format!("http://{}{p}", tokex.admin);
        async move { c.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/healthz").await, 200);
    assert_eq!(status("/readyz").await, 200);
    assert_eq!(status("/nope").await, 404);
    let m = tokex.metrics().await;
    for series in [
        "tokex_requests_total{",
        "tokex_request_duration_seconds_bucket{",
        "tokex_exchanges_total{",
        "tokex_exchange_duration_seconds_bucket{",
        "tokex_cache_hits_total{",
        "tokex_cache_misses_total{",
        "tokex_cache_entries ",
        "# TYPE tokex_config_reloads counter",
        // Known series exist at 0 before anything happened to them.
        "tokex_exchanges_total{authority=\"main\",outcome=\"authority_unavailable\"} 0\n",
        "tokex_exchange_retries_total{authority=\"main\"} 0\n",
        "tokex_retry_budget_exhausted_total{authority=\"main\"} 0\n",
        "tokex_circuit_breaker_open{authority=\"main\"} 0\n",
        "tokex_requests_total{route=\"echo\",status=\"502\",code=\"upstream_unavailable\"} 0\n",
        "tokex_body_stalls_total{direction=\"to_app\"} 0\n",
        "tokex_config_reloads_total{result=\"error\"} 0\n",
        // The one exchange issued a token for 300 s.
        "tokex_issued_token_lifetime_seconds_count{authority=\"main\"} 1\n",
        "tokex_issued_token_lifetime_seconds_bucket{le=\"300.0\",authority=\"main\"} 1\n",
        "tokex_issued_token_lifetime_seconds_bucket{le=\"120.0\",authority=\"main\"} 0\n",
        "tokex_config_last_reload_successful 1\n",
        "tokex_build_info{version=",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
    ] {
        assert!(m.contains(series), "missing {series}\n{m}");
    }
    let r = c
        .get(format!("http://{}/metrics", tokex.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(r.text().await.unwrap().ends_with("# EOF\n"));
}

/// gRPC passes through unchanged apart from the token: h2c from the app, h2 by ALPN to
/// the upstream, `te: trailers`, request trailers and response trailers all arrive.
#[tokio::test]
async fn grpc_trailers_pass_through_h2c_to_h2() {
    let as_ = MockAs::start().await;
    let (up, ca_pem) = Upstream::start_tls().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca_pem).unwrap();
    let url = format!("https://localhost:{}", up.addr.port());
    let yaml = config(&as_, &url).replace(
        "    timeout: 1s\n    exchange",
        "    timeout: 1s\n    ca_file: ca.pem\n    exchange",
    );
    let tokex = Tokex::start_in(dir, &yaml).await;

    let stream = tokio::net::TcpStream::connect(tokex.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-timeout", "1S".parse().unwrap());
    let frames = FramesBody(
        [
            hyper::body::Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi")),
            hyper::body::Frame::trailers(trailers),
        ]
        .into_iter()
        .collect(),
    );
    let req = http::Request::post("http://echo.internal/pkg.Service/grpc")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", "Bearer app-token")
        .body(frames)
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.headers());
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    let collected = resp.into_body().collect().await.unwrap();
    let got_trailers = collected.trailers().cloned().expect("response trailers");
    assert_eq!(got_trailers["grpc-status"], "0");
    assert_eq!(collected.to_bytes(), &b"\0\0\0\0\x02hi"[..]);

    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.version, http::Version::HTTP_2);
    assert_eq!(
        seen.uri,
        format!("https://localhost:{}/pkg.Service/grpc", up.addr.port())
    );
    assert_eq!(seen.headers["te"], "trailers");
    assert_eq!(seen.headers["authorization"], "Bearer narrowed-1");
    assert_eq!(
        seen.trailers.expect("request trailers")["grpc-timeout"],
        "1S"
    );
}
