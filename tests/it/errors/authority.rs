//! Rows the authorization server decides: each OAuth error it answers, a response tokex
//! cannot use, and an authority that is down, slow or refusing.

use super::*;

each_mode!(
    paused:
    insufficient_scope_when_the_as_answers_invalid_scope,
    exchange_denied_when_the_as_answers_invalid_target,
    exchange_denied_when_the_as_answers_access_denied,
    exchange_misconfigured_when_the_as_answers_invalid_client,
    exchange_misconfigured_when_the_as_answers_unauthorized_client,
    bad_exchange_response_for_token_type_n_a,
    bad_exchange_response_for_the_wrong_issued_token_type,
    bad_exchange_response_for_a_garbage_body,
    bad_exchange_response_for_a_widened_scope,
    bad_exchange_response_for_an_oversized_body,
    bad_exchange_response_for_a_redirect_that_is_never_followed,
    authority_unavailable_when_the_as_answers_503,
    authority_unavailable_when_the_as_answers_429_passes_retry_after_on,
    authority_unavailable_when_the_as_answers_temporarily_unavailable,
    authority_unavailable_when_the_as_port_is_closed,
    authority_unavailable_when_the_as_times_out,
    authority_unavailable_after_retries,
);

// ---------------------------------------------------------------------------------------
// 403 insufficient_scope

/// The AS answering `invalid_scope` is 403 `insufficient_scope` with the RFC 6750
/// challenge and the AS's code echoed.
async fn insufficient_scope_when_the_as_answers_invalid_scope(mode: Mode) {
    let r = when_as_answers(mode, oauth_error(400, "invalid_scope")).await;
    assert_refusal(
        &r,
        403,
        "insufficient_scope",
        Some("invalid_scope"),
        SUBJECT,
    );
}

// ---------------------------------------------------------------------------------------
// 403 exchange_denied

/// The AS answering `invalid_target` is 403 `exchange_denied`, no challenge.
async fn exchange_denied_when_the_as_answers_invalid_target(mode: Mode) {
    let r = when_as_answers(mode, oauth_error(400, "invalid_target")).await;
    assert_refusal(&r, 403, "exchange_denied", Some("invalid_target"), SUBJECT);
}

/// The AS answering 403 `access_denied` is 403 `exchange_denied`.
async fn exchange_denied_when_the_as_answers_access_denied(mode: Mode) {
    let r = when_as_answers(mode, oauth_error(403, "access_denied")).await;
    assert_refusal(&r, 403, "exchange_denied", Some("access_denied"), SUBJECT);
}

// ---------------------------------------------------------------------------------------
// 502 exchange_misconfigured

/// The AS answering 401 `invalid_client` means tokex's own credentials are wrong: 502
/// `exchange_misconfigured`.
async fn exchange_misconfigured_when_the_as_answers_invalid_client(mode: Mode) {
    let r = when_as_answers(mode, oauth_error(401, "invalid_client")).await;
    assert_refusal(
        &r,
        502,
        "exchange_misconfigured",
        Some("invalid_client"),
        SUBJECT,
    );
}

/// The AS answering `unauthorized_client` is 502 `exchange_misconfigured`.
async fn exchange_misconfigured_when_the_as_answers_unauthorized_client(mode: Mode) {
    let r = when_as_answers(mode, oauth_error(400, "unauthorized_client")).await;
    assert_refusal(
        &r,
        502,
        "exchange_misconfigured",
        Some("unauthorized_client"),
        SUBJECT,
    );
}

// ---------------------------------------------------------------------------------------
// 502 bad_exchange_response

/// A success response with `token_type: N_A` is refused: 502 `bad_exchange_response`,
/// and the issued token is not echoed.
async fn bad_exchange_response_for_token_type_n_a(mode: Mode) {
    let r = when_as_answers(mode, token_response_with("token_type", "N_A".into())).await;
    assert_refusal(&r, 502, "bad_exchange_response", None, SUBJECT);
    assert!(!r.body.contains("narrowed-token"), "{}", r.body);
}

/// A success response whose `issued_token_type` is not the requested one is 502
/// `bad_exchange_response`.
async fn bad_exchange_response_for_the_wrong_issued_token_type(mode: Mode) {
    let wrong = "urn:ietf:params:oauth:token-type:id_token";
    let r = when_as_answers(mode, token_response_with("issued_token_type", wrong.into())).await;
    assert_refusal(&r, 502, "bad_exchange_response", None, SUBJECT);
    assert!(!r.body.contains("narrowed-token"), "{}", r.body);
}

/// A 200 whose body is not JSON is 502 `bad_exchange_response`.
async fn bad_exchange_response_for_a_garbage_body(mode: Mode) {
    let garbage = raw_reply(
        200,
        b"<html>access_token=oops</html>",
        &[("content-type", "text/html")],
    );
    let r = when_as_answers(mode, garbage).await;
    assert_refusal(&r, 502, "bad_exchange_response", None, SUBJECT);
}

/// A granted scope wider than the requested `read write` is 502 `bad_exchange_response`.
async fn bad_exchange_response_for_a_widened_scope(mode: Mode) {
    let r = when_as_answers(
        mode,
        token_response_with("scope", "read write admin".into()),
    )
    .await;
    assert_refusal(&r, 502, "bad_exchange_response", None, SUBJECT);
    assert!(!r.body.contains("narrowed-token"), "{}", r.body);
}

/// A 10 MB token response is over the size cap: 502 `bad_exchange_response`.
async fn bad_exchange_response_for_an_oversized_body(mode: Mode) {
    let huge = "x".repeat(10 << 20);
    let r = when_as_answers(mode, token_response_with("access_token", huge.into())).await;
    assert_refusal(&r, 502, "bad_exchange_response", None, SUBJECT);
    assert!(r.body.len() < 1024, "error body stays small");
}

/// A 302 from the token endpoint is 502 `bad_exchange_response` and is never followed:
/// the AS it points at receives nothing, so the subject token goes nowhere else.
async fn bad_exchange_response_for_a_redirect_that_is_never_followed(mode: Mode) {
    let elsewhere = MockAs::start().await;
    let redirect = raw_reply(302, b"", &[("location", &elsewhere.endpoint())]);
    let r = when_as_answers(mode, redirect).await;
    assert_refusal(&r, 502, "bad_exchange_response", None, SUBJECT);
    assert_eq!(elsewhere.count(), 0, "the redirect was followed");
}

// ---------------------------------------------------------------------------------------
// 503 authority_unavailable

/// The AS answering 503 is 503 `authority_unavailable` with `Retry-After`.
async fn authority_unavailable_when_the_as_answers_503(mode: Mode) {
    let r = when_as_answers(mode, raw_reply(503, b"down for maintenance", &[])).await;
    assert_refusal(&r, 503, "authority_unavailable", None, SUBJECT);
}

/// The AS answering 429 with `Retry-After: 7` is 503 `authority_unavailable`, and tokex
/// passes the AS's `Retry-After: 7` on to the app.
async fn authority_unavailable_when_the_as_answers_429_passes_retry_after_on(mode: Mode) {
    let r = when_as_answers(mode, raw_reply(429, b"slow down", &[("retry-after", "7")])).await;
    assert_refusal(&r, 503, "authority_unavailable", None, SUBJECT);
    assert_eq!(r.headers["retry-after"], "7");
}

/// The AS answering 400 `temporarily_unavailable` is 503 `authority_unavailable`, with
/// the AS's code echoed.
async fn authority_unavailable_when_the_as_answers_temporarily_unavailable(mode: Mode) {
    let r = when_as_answers(mode, oauth_error(400, "temporarily_unavailable")).await;
    assert_refusal(
        &r,
        503,
        "authority_unavailable",
        Some("temporarily_unavailable"),
        SUBJECT,
    );
}

/// An authority whose port nothing listens on is 503 `authority_unavailable`.
async fn authority_unavailable_when_the_as_port_is_closed(mode: Mode) {
    let closed = format!("http://127.0.0.1:{}/token", closed_port().await);
    let rig = Rig::with(mode, |yaml| with_token_endpoint(&yaml, &closed)).await;
    let r = rig.call().await;
    assert_refusal(&r, 503, "authority_unavailable", None, SUBJECT);
    assert_eq!(rig.as_.count(), 0);
    rig.assert_upstream_untouched();
}

/// An AS slower than the authority's `timeout: 1s` (it answers after 3 s) is 503
/// `authority_unavailable`, and tokex answers at its own timeout, to the millisecond,
/// not at the AS's pace.
async fn authority_unavailable_when_the_as_times_out(mode: Mode) {
    let rig = Rig::start(mode).await;
    rig.as_
        .on(|req, n| issue(req, n).delayed(Duration::from_secs(3)));
    let started = Instant::now();
    let r = rig.call().await;
    let elapsed = started.elapsed();
    assert_refusal(&r, 503, "authority_unavailable", None, SUBJECT);
    assert_eq!(elapsed, Duration::from_secs(1));
    rig.assert_upstream_untouched();
}

/// With `retries: 2` a persistent 503 makes exactly three AS calls, then 503
/// `authority_unavailable`.
async fn authority_unavailable_after_retries(mode: Mode) {
    let rig = Rig::with(mode, |yaml| yaml.replace("retries: 0", "retries: 2")).await;
    rig.as_.on(|_, _| raw_reply(503, b"", &[]));
    let r = rig.call().await;
    assert_refusal(&r, 503, "authority_unavailable", None, SUBJECT);
    assert_eq!(rig.as_.count(), 3, "one call and two retries");
    rig.assert_upstream_untouched();
}
