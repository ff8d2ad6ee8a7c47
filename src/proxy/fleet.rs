//! The token for a local miss, from the fleet or the authority: with a shared cache, what
//! another replica already exchanged (or, under the fleet lock, is exchanging) is used,
//! and what this replica exchanges is written back; without one, the exchange alone.

use std::sync::Arc;

use http::HeaderMap;

use super::RouteExchange;
use super::token::{OWN_TOKEN_MARKER, new_entry};
use crate::cache::Entry;
use crate::cache::shared::Name;
use crate::clock::Instant;
use crate::config::Route;
use crate::exchange;

impl RouteExchange {
    /// A new entry for `subject` (`None`: tokex's own token) on `route`; `app_headers` as
    /// for [`new_entry`]. `newer_than`, for a refresh: a shared entry counts only if it
    /// outlives the one being replaced.
    pub(super) async fn fill(
        &self,
        route: &Route,
        audited: bool,
        subject: Option<&str>,
        subject_exp: Option<u64>,
        app_headers: Option<&HeaderMap>,
        newer_than: Option<Instant>,
    ) -> Result<Arc<Entry>, exchange::Error> {
        let Some(params) = route.exchange.as_ref() else {
            return Err(exchange::Error::BadResponse("route has no exchange".into()));
        };
        let exchanged = || async {
            match (&self.first, subject) {
                (Some(first), Some(subject)) => {
                    let settings = &route.cache;
                    self.chained(
                        first,
                        params,
                        settings,
                        audited,
                        subject,
                        subject_exp,
                        app_headers,
                    )
                    .await
                }
                _ => {
                    new_entry(
                        &self.client,
                        params,
                        &route.cache,
                        subject,
                        subject_exp,
                        app_headers,
                        audited,
                    )
                    .await
                }
            }
        };
        let Some(shared) = &self.shared else {
            return exchanged().await;
        };
        let digest = self.actor_digest();
        let actor = match (subject, &digest) {
            (None, _) => OWN_TOKEN_MARKER,
            (Some(_), Some(d)) => &d[..],
            (Some(_), None) => &[][..],
        };
        let name = Name {
            keys: &self.keys,
            actor,
            subject: subject.unwrap_or(""),
        };
        // The fill runs both legs of a chain (tokex's own token only the second).
        let mut wait = self.client.authority().timeout;
        if let (Some(first), Some(_)) = (&self.first, subject) {
            wait += first.client.authority().timeout;
        }
        shared
            .fill(name, &route.cache, wait, newer_than, exchanged)
            .await
    }
}
