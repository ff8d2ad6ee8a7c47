//! Where a route's requests go: its named `upstream`, or, for a route without one, the
//! redirected connection's original destination, once the request's `Host` is found to
//! resolve there (a token chosen by `Host` never goes to an address that name does not
//! have).

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request};
use hyper::body::Incoming;

use crate::clock::Instant;
use crate::config::model::{Route, Timeouts};
use crate::error::{Code, ProxyError};
use crate::idle::Watch;
use crate::session::Session;
use crate::upstream::{OriginalDestinations, Upstream, host_resolves_to};

pub(super) enum RouteUpstream {
    Named(Upstream),
    Original(OriginalDestinations),
}

/// The upstream one request goes to, and the `Host` it carries there.
pub(super) struct Chosen<'a> {
    upstream: Held<'a>,
    pub host: HeaderValue,
}

enum Held<'a> {
    Named(&'a Upstream),
    Original(Arc<Upstream>),
}

impl Deref for Chosen<'_> {
    type Target = Upstream;

    fn deref(&self) -> &Upstream {
        match &self.upstream {
            Held::Named(up) => up,
            Held::Original(up) => up,
        }
    }
}

impl RouteUpstream {
    pub(super) fn new(
        route: &Route,
        timeouts: &Timeouts,
        watch: Watch,
    ) -> Result<Self, rustls::Error> {
        Ok(match &route.upstream {
            Some(up) => Self::Named(Upstream::new(up, route.ca_file.clone(), timeouts, watch)?),
            None => Self::Original(OriginalDestinations::new(timeouts, watch)?),
        })
    }

    pub(super) fn sweep(&self, now: Instant) {
        match self {
            Self::Named(up) => up.sweep(now),
            Self::Original(ups) => ups.sweep(now),
        }
    }

    /// The named upstream, with no work at all; for a route without one, the
    /// destinations [`original`] chooses among.
    pub(super) fn named(&self) -> Result<Chosen<'_>, &OriginalDestinations> {
        match self {
            Self::Named(up) => Ok(Chosen {
                host: up.host().clone(),
                upstream: Held::Named(up),
            }),
            Self::Original(ups) => Err(ups),
        }
    }
}

/// The original destination of `session`, if the request's `Host` resolves to it
/// (looked up within `within`, once per app connection and `Host`).
pub(super) async fn original<'a>(
    ups: &OriginalDestinations,
    req: &Request<Incoming>,
    session: &Session,
    within: Duration,
) -> Result<Chosen<'a>, ProxyError> {
    // Routing gives a route without upstream only redirected connections.
    let destination = session.destination().ok_or_else(|| {
        misdirected().because(
            "the connection was not redirected: a route without upstream forwards only redirected connections",
        )
    })?;
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .ok_or_else(|| misdirected().because("the request has no Host"))?;
    if !session.host_checked(host) {
        if !host_resolves_to(host, destination.ip(), within).await {
            return Err(misdirected().because(format!(
                "Host {host} does not resolve to {}, where the app connected",
                destination.ip()
            )));
        }
        session.note_host_checked(host);
    }
    let upstream = ups.at(destination).map_err(|e| {
        ProxyError::new(
            Code::UpstreamUnavailable,
            "the original destination could not be reached",
        )
        .because(e.to_string())
    })?;
    let host = HeaderValue::from_str(host)
        .map_err(|_| misdirected().because("the Host is not a valid header value"))?;
    Ok(Chosen {
        upstream: Held::Original(upstream),
        host,
    })
}

fn misdirected() -> ProxyError {
    ProxyError::new(
        Code::Misdirected,
        "the request's Host does not name the address the app connected to; its token stays here",
    )
}
