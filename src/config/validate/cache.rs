//! The lifetime rules of cached tokens: the `cache` section and a route's overrides of it.

use std::time::Duration;

use serde_saphyr::Spanned;

use super::{Invalid, at, nowhere};
use crate::config::file::{FileCache, FileCacheOverride};
use crate::config::model::CacheSettings;
use tokex_common::values::{Dur, format_duration};

/// Written when a key is not set, so an error about its value does not read as a typo.
const DEFAULT_NOTE: &str = "the default when it is not set";

pub(super) fn cache_settings(c: &FileCache) -> Result<CacheSettings, Invalid> {
    let value =
        |d: &Option<Spanned<Dur>>, default: Duration| d.as_ref().map_or(default, |d| d.value.0);
    let s = CacheSettings {
        max_ttl: value(&c.max_ttl, Duration::from_secs(600)),
        default_ttl: c.default_ttl.map_or(Duration::from_secs(60), |d| d.0),
        early_expiry: value(&c.early_expiry, Duration::from_secs(30)),
        refresh_ahead: c.refresh_ahead.map_or(Duration::ZERO, |d| d.0),
    };
    let early_note = c.early_expiry.is_none().then_some(DEFAULT_NOTE);
    check_cache(&s, "cache", [&c.early_expiry, &c.max_ttl], early_note)?;
    Ok(s)
}

/// Route `i`'s cache: the cache section's values overridden by the route's own.
pub(super) fn override_cache(
    base: &CacheSettings,
    o: &FileCacheOverride,
    i: usize,
    base_early_set: bool,
) -> Result<CacheSettings, Invalid> {
    let value = |d: &Option<Spanned<Dur>>, base: Duration| d.as_ref().map_or(base, |d| d.value.0);
    let s = CacheSettings {
        max_ttl: value(&o.max_ttl, base.max_ttl),
        default_ttl: o.default_ttl.map_or(base.default_ttl, |d| d.0),
        early_expiry: value(&o.early_expiry, base.early_expiry),
        refresh_ahead: o.refresh_ahead.map_or(base.refresh_ahead, |d| d.0),
    };
    let early_note = match (&o.early_expiry, base_early_set) {
        (Some(_), _) => None,
        (None, true) => Some("from cache.early_expiry"),
        (None, false) => Some(DEFAULT_NOTE),
    };
    let path = format!("routes[{i}].cache");
    check_cache(&s, &path, [&o.early_expiry, &o.max_ttl], early_note)?;
    Ok(s)
}

/// `early_expiry` must leave a token some life below `max_ttl`. The error points at
/// whichever of the two this section sets (`keys`, early_expiry first) and says where an
/// `early_expiry` it does not set comes from.
fn check_cache(
    s: &CacheSettings,
    path: &str,
    keys: [&Option<Spanned<Dur>>; 2],
    early_note: Option<&str>,
) -> Result<(), Invalid> {
    if s.early_expiry < s.max_ttl
        || s.max_ttl.is_zero()
        || !tokex_common::offline::comparable(&[s.early_expiry, s.max_ttl])
    {
        return Ok(());
    }
    let early = match early_note {
        Some(note) => format!("{}, {note}", format_duration(s.early_expiry)),
        None => format_duration(s.early_expiry),
    };
    let message = format!(
        "{path}.early_expiry ({early}) must be shorter than max_ttl ({}), or no token would \
         ever be cached; lower early_expiry or raise max_ttl",
        format_duration(s.max_ttl)
    );
    Err(match keys.into_iter().flatten().next() {
        Some(span) => at(span, message),
        None => nowhere(message),
    })
}
