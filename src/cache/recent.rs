//! A connection's memory of its last lookup. An app connection nearly always sends one
//! subject token to one route, request after request; remembering what that token gave
//! lets the next request skip decoding the token's `exp`, the keyed hash and the shared
//! map, and go straight to the entry, which is still checked on every use.
//!
//! Nothing here widens what may be served: the entry must still be the cache's answer
//! ([`Entry::usable`]: not invalidated, not replaced by a refresh) and within its bound,
//! and the memory applies only to the same route runtime (a reload builds new ones,
//! with new keys), the same actor and the same token bytes.

use std::sync::Arc;

use super::{Entry, Key};
use crate::secret::Secret;

/// What one token gave on one route, kept by the connection that sent it.
pub struct Recent {
    scope: u64,
    actor: Option<[u8; 32]>,
    subject: Secret,
    /// The subject's own `exp`, decoded once.
    pub subject_exp: Option<u64>,
    pub key: Key,
    pub entry: Arc<Entry>,
}

impl Recent {
    /// `scope` names the route runtime whose key builder made `key`.
    pub fn new(
        scope: u64,
        actor: Option<[u8; 32]>,
        subject: &str,
        subject_exp: Option<u64>,
        key: Key,
        entry: Arc<Entry>,
    ) -> Self {
        Self {
            scope,
            actor,
            subject: Secret::new(subject),
            subject_exp,
            key,
            entry,
        }
    }

    /// Whether this memory is about `subject` under `actor` on route runtime `scope`.
    pub fn is_for(&self, scope: u64, actor: Option<&[u8; 32]>, subject: &str) -> bool {
        self.scope == scope && self.actor.as_ref() == actor && self.subject.expose() == subject
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::clock;

    fn recent() -> Recent {
        let entry = Entry::new(
            http::HeaderValue::from_static("Bearer narrowed"),
            clock::now() + Duration::from_secs(60),
            None,
        );
        Recent::new(7, None, "subject-a", None, [1; 32], Arc::new(entry))
    }

    /// Any difference in route runtime, actor or token bytes means another key.
    #[test]
    fn remembers_only_the_same_scope_actor_and_subject() {
        let r = recent();
        assert!(r.is_for(7, None, "subject-a"));
        assert!(!r.is_for(8, None, "subject-a"), "a reloaded route");
        assert!(!r.is_for(7, Some(&[0; 32]), "subject-a"), "another actor");
        assert!(!r.is_for(7, None, "subject-b"), "another subject");
        assert!(!r.is_for(7, None, "subject-a2"), "a longer subject");
    }

    /// A retired or expired entry is never served from memory.
    #[test]
    fn retired_or_expired_entries_are_not_usable() {
        let r = recent();
        let now = clock::now();
        assert!(r.entry.usable(now));
        assert!(!r.entry.usable(now + Duration::from_secs(61)));
        r.entry.retire();
        assert!(!r.entry.usable(now));
    }
}
