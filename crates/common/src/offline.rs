//! `tokex check --offline`: the config checked without its environment. `${NAME}` stays
//! unresolved, a typed value that holds one (a URL, a duration, an address) stands in
//! unchecked, and checks that compare an unresolved value with another are skipped, since
//! the real value is not known. Files the config names are not read either (see
//! `sources`).

use std::cell::Cell;
use std::time::Duration;

thread_local! {
    /// Set while an offline check parses on this thread: serde gives `Deserialize` no
    /// context of its own, and parsing never leaves the thread that started it.
    static OFFLINE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` (the parse of one file) with `${NAME}` left unresolved.
pub fn scope<R>(f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            OFFLINE.set(false);
        }
    }
    OFFLINE.set(true);
    let _reset = Reset;
    f()
}

/// Whether an offline check is parsing.
pub fn active() -> bool {
    OFFLINE.get()
}

/// Whether `value` holds a `${NAME}` left unresolved by an offline check, so it cannot
/// be checked.
pub fn unresolved(value: &str) -> bool {
    active() && value.contains("${")
}

/// What an unresolved duration stands in as: no written duration has nanoseconds, so
/// comparisons can tell it apart.
pub const DURATION: Duration = Duration::from_nanos(1);

/// Whether a comparison of `durations` means anything, i.e. none is unresolved.
pub fn comparable(durations: &[Duration]) -> bool {
    !durations.contains(&DURATION)
}

/// What an unresolved URL stands in as (`.invalid` never resolves, RFC 2606).
pub const URL: &str = "https://unresolved.invalid/";
