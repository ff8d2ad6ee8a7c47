//! Responses tokex makes itself: the error table in one place.
//!
//! Every failure on the request path becomes a [`ProxyError`]; [`ProxyError::to_response`]
//! turns it into the status, `tokex-error` header, `WWW-Authenticate` challenge
//! (RFC 6750 §3) and JSON body. No variant carries token material, so no body can leak one.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{
    CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use http::{Response, StatusCode};
use http_body_util::Full;

pub mod cause;

/// The header that marks a response as made by tokex rather than the upstream.
pub const TOKEX_ERROR: HeaderName = HeaderName::from_static("tokex-error");

/// The error codes of responses tokex makes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    NoRoute,
    Misdirected,
    Unsupported,
    MissingToken,
    InvalidRequest,
    InvalidToken,
    InsufficientScope,
    ExchangeDenied,
    ExchangeMisconfigured,
    BadExchangeResponse,
    AuthorityUnavailable,
    UpstreamUnavailable,
    UpstreamTimeout,
    Overloaded,
}

impl Code {
    /// Every code, for tests and documentation.
    pub const ALL: [Code; 14] = [
        Code::NoRoute,
        Code::Misdirected,
        Code::Unsupported,
        Code::MissingToken,
        Code::InvalidRequest,
        Code::InvalidToken,
        Code::InsufficientScope,
        Code::ExchangeDenied,
        Code::ExchangeMisconfigured,
        Code::BadExchangeResponse,
        Code::AuthorityUnavailable,
        Code::UpstreamUnavailable,
        Code::UpstreamTimeout,
        Code::Overloaded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Code::NoRoute => "no_route",
            Code::Misdirected => "misdirected_request",
            Code::Unsupported => "unsupported",
            Code::MissingToken => "missing_token",
            Code::InvalidRequest => "invalid_request",
            Code::InvalidToken => "invalid_token",
            Code::InsufficientScope => "insufficient_scope",
            Code::ExchangeDenied => "exchange_denied",
            Code::ExchangeMisconfigured => "exchange_misconfigured",
            Code::BadExchangeResponse => "bad_exchange_response",
            Code::AuthorityUnavailable => "authority_unavailable",
            Code::UpstreamUnavailable => "upstream_unavailable",
            Code::UpstreamTimeout => "upstream_timeout",
            Code::Overloaded => "overloaded",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Code::NoRoute => StatusCode::NOT_FOUND,
            Code::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Code::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            Code::MissingToken | Code::InvalidToken => StatusCode::UNAUTHORIZED,
            Code::InvalidRequest => StatusCode::BAD_REQUEST,
            Code::InsufficientScope | Code::ExchangeDenied => StatusCode::FORBIDDEN,
            Code::ExchangeMisconfigured | Code::BadExchangeResponse | Code::UpstreamUnavailable => {
                StatusCode::BAD_GATEWAY
            }
            Code::AuthorityUnavailable | Code::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Code::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The RFC 6750 §3 challenge, where the table asks for one.
    fn challenge(self) -> Option<&'static str> {
        match self {
            Code::MissingToken => Some("Bearer"),
            Code::InvalidRequest => Some("Bearer error=\"invalid_request\""),
            Code::InvalidToken => Some("Bearer error=\"invalid_token\""),
            Code::InsufficientScope => Some("Bearer error=\"insufficient_scope\""),
            _ => None,
        }
    }

    /// The error-table row for an OAuth error code from the AS (RFC 6749 §5.2, RFC 8693
    /// §2.2.2), tolerating the non-standard codes real servers send.
    pub fn for_authority_error(oauth_code: &str) -> Code {
        match oauth_code {
            "invalid_request" | "invalid_grant" | "invalid_token" | "token_revoked"
            | "expired_token" => Code::InvalidToken,
            "invalid_scope" | "insufficient_scope" | "scope_escalation" => Code::InsufficientScope,
            "invalid_client" | "unauthorized_client" | "unsupported_grant_type" => {
                Code::ExchangeMisconfigured
            }
            "temporarily_unavailable" | "server_error" => Code::AuthorityUnavailable,
            _ => Code::ExchangeDenied,
        }
    }
}

/// A failure on the request path, ready to become a response.
#[derive(Debug, Clone)]
pub struct ProxyError {
    pub code: Code,
    pub description: Cow<'static, str>,
    /// The AS's OAuth error code, already checked to be a plain RFC 6749 error token.
    pub authority_error: Option<String>,
    /// Seconds for `Retry-After` on 503s.
    pub retry_after: Option<u64>,
    /// End the app's connection without a response: its request body stalled, so it
    /// is not reading one.
    pub abort: bool,
    /// Close the app's connection after the response: its framing was in doubt.
    pub close: bool,
    /// Why, for the log line only (never the response): an I/O or TLS cause chain, the
    /// target that matched no route.
    pub cause: Option<Box<str>>,
}

impl ProxyError {
    pub fn new(code: Code, description: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            description: description.into(),
            authority_error: None,
            retry_after: None,
            abort: false,
            close: false,
            cause: None,
        }
    }

    /// Records why, for the log line.
    pub fn because(mut self, cause: impl Into<Box<str>>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    /// The app's message framing was in doubt: answered, then the connection closes.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// The app stopped sending its request body: nothing is answered.
    pub fn aborted(description: &'static str) -> Self {
        Self {
            abort: true,
            ..Self::new(Code::InvalidRequest, description)
        }
    }

    /// The error response for this error. Its body is tokex's own; the request path
    /// wraps it beside relayed bodies (`forward::Body`).
    pub fn to_response(&self) -> Response<Full<Bytes>> {
        let (status, headers, body) = self.response_parts();
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
    }

    /// The status, fields and JSON body of the error response.
    pub fn response_parts(&self) -> (StatusCode, HeaderMap, Bytes) {
        #[derive(serde::Serialize)]
        struct ErrorBody<'a> {
            error: &'a str,
            error_description: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            authority_error: Option<&'a str>,
        }
        let body = serde_json::to_vec(&ErrorBody {
            error: self.code.as_str(),
            error_description: &self.description,
            authority_error: self.authority_error.as_deref(),
        })
        .unwrap_or_default();
        let mut headers = HeaderMap::with_capacity(6);
        headers.insert(TOKEX_ERROR, HeaderValue::from_static(self.code.as_str()));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(challenge) = self.code.challenge() {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if self.close {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        if self.code.status() == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(
                RETRY_AFTER,
                HeaderValue::from(self.retry_after.unwrap_or(1).clamp(1, 3600)),
            );
        }
        (self.code.status(), headers, Bytes::from(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error table, row by row: status, code and challenge.
    #[test]
    fn status_table() {
        let rows: [(Code, u16, &str, Option<&str>); 14] = [
            (Code::NoRoute, 404, "no_route", None),
            (Code::Misdirected, 421, "misdirected_request", None),
            (Code::Unsupported, 405, "unsupported", None),
            (Code::MissingToken, 401, "missing_token", Some("Bearer")),
            (
                Code::InvalidRequest,
                400,
                "invalid_request",
                Some("Bearer error=\"invalid_request\""),
            ),
            (
                Code::InvalidToken,
                401,
                "invalid_token",
                Some("Bearer error=\"invalid_token\""),
            ),
            (
                Code::InsufficientScope,
                403,
                "insufficient_scope",
                Some("Bearer error=\"insufficient_scope\""),
            ),
            (Code::ExchangeDenied, 403, "exchange_denied", None),
            (
                Code::ExchangeMisconfigured,
                502,
                "exchange_misconfigured",
                None,
            ),
            (
                Code::BadExchangeResponse,
                502,
                "bad_exchange_response",
                None,
            ),
            (
                Code::AuthorityUnavailable,
                503,
                "authority_unavailable",
                None,
            ),
            (Code::UpstreamUnavailable, 502, "upstream_unavailable", None),
            (Code::UpstreamTimeout, 504, "upstream_timeout", None),
            (Code::Overloaded, 503, "overloaded", None),
        ];
        // Every code has its row: a new one cannot ship without its status.
        assert_eq!(rows.map(|row| row.0), Code::ALL);
        for (code, status, name, challenge) in rows {
            let r = ProxyError::new(code, "d").to_response();
            assert_eq!(r.status().as_u16(), status, "{name}");
            assert_eq!(r.headers()[TOKEX_ERROR], name);
            assert_eq!(
                r.headers()
                    .get(WWW_AUTHENTICATE)
                    .map(|v| v.to_str().unwrap()),
                challenge
            );
            assert_eq!(
                r.headers().contains_key(RETRY_AFTER),
                status == 503,
                "{name}"
            );
        }
    }

    /// AS error codes, standard and not, land on a sensible row.
    #[test]
    fn authority_error_mapping() {
        for (oauth, code) in [
            ("invalid_request", Code::InvalidToken),
            ("invalid_grant", Code::InvalidToken),
            ("token_revoked", Code::InvalidToken),
            ("invalid_scope", Code::InsufficientScope),
            ("insufficient_scope", Code::InsufficientScope),
            ("scope_escalation", Code::InsufficientScope),
            ("invalid_target", Code::ExchangeDenied),
            ("access_denied", Code::ExchangeDenied),
            ("something_new", Code::ExchangeDenied),
            ("invalid_client", Code::ExchangeMisconfigured),
            ("unauthorized_client", Code::ExchangeMisconfigured),
            ("unsupported_grant_type", Code::ExchangeMisconfigured),
            ("temporarily_unavailable", Code::AuthorityUnavailable),
        ] {
            assert_eq!(Code::for_authority_error(oauth), code, "{oauth}");
        }
    }
}
