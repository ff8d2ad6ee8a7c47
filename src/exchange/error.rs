//! Why an exchange failed, and what of it reaches the app, its log and its error row.

use crate::error::{Code, ProxyError};

/// Why an exchange produced no token. Cloneable: one failed call answers every
/// request that was waiting on it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error(
        "authority refused the exchange with `{oauth_error}` (HTTP {status}){}",
        said(description)
    )]
    Refused {
        oauth_error: String,
        status: u16,
        /// The AS's `error_description`, checked against RFC 6749's character set,
        /// bounded, and with the exchanged tokens cut out should the AS echo one.
        description: Option<String>,
    },
    #[error("authority unavailable: {reason}")]
    Unavailable {
        reason: String,
        retry_after: Option<u64>,
        oauth_error: Option<String>,
    },
    #[error("bad exchange response: {0}")]
    BadResponse(String),
    #[error("too many concurrent exchanges")]
    Overloaded,
    #[error("tokex cannot authenticate: {0}")]
    Misconfigured(String),
    /// One leg of a chained exchange failed: which, and at which authority.
    #[error("{leg} leg, at authority {authority}: {error}")]
    Leg {
        leg: &'static str,
        authority: String,
        error: Box<Error>,
    },
}

fn said(description: &Option<String>) -> String {
    description
        .as_deref()
        .map_or_else(String::new, |d| format!(": {d}"))
}

impl Error {
    /// The failure itself, without the leg of a chain it happened on.
    pub fn cause(&self) -> &Error {
        match self {
            Error::Leg { error, .. } => error.cause(),
            other => other,
        }
    }

    /// The error-table row for this failure.
    pub fn code(&self) -> Code {
        match self {
            Error::Refused { oauth_error, .. } => Code::for_authority_error(oauth_error),
            Error::Unavailable { .. } => Code::AuthorityUnavailable,
            Error::BadResponse(_) => Code::BadExchangeResponse,
            Error::Overloaded => Code::Overloaded,
            Error::Misconfigured(_) => Code::ExchangeMisconfigured,
            Error::Leg { error, .. } => error.code(),
        }
    }

    pub(super) fn is_transient(&self) -> bool {
        self.code() == Code::AuthorityUnavailable
    }

    pub(super) fn retry_after(&self) -> Option<u64> {
        match self.cause() {
            Error::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// What the app is told about a failed exchange; the cause stays in the log.
fn told(e: &Error) -> &'static str {
    match e {
        Error::Refused { .. } => "the authorization server refused the token exchange",
        Error::Unavailable { .. } => "the authorization server is unavailable",
        Error::BadResponse(_) => "the authorization server sent an unusable token response",
        Error::Overloaded => "too many token exchanges in flight",
        Error::Misconfigured(_) => "tokex cannot authenticate to the authorization server",
        Error::Leg { error, .. } => told(error),
    }
}

impl From<&Error> for ProxyError {
    fn from(whole: &Error) -> Self {
        let e = whole.cause();
        let authority_error = match e {
            Error::Refused { oauth_error, .. } => Some(oauth_error.clone()),
            Error::Unavailable { oauth_error, .. } => oauth_error.clone(),
            _ => None,
        };
        ProxyError {
            code: e.code(),
            description: told(e).into(),
            authority_error,
            retry_after: e.retry_after(),
            abort: false,
            close: false,
            cause: Some(whole.to_string().into()),
        }
    }
}
