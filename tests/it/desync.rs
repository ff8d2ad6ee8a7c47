//! Request smuggling and response desync, over raw sockets: malformed and ambiguous
//! requests from the app, and responses from an upstream that records exactly the
//! bytes it received. For each case: what the app got and what the upstream parsed.
//! Nothing may be smuggled past tokex, nothing of one exchange may reach another on a
//! kept connection, and the caller's token never reaches the upstream.
//!
//! - [`from_app`]: malformed and ambiguous requests, pipelining, `Host` and dot segments.
//! - [`from_upstream`]: ambiguous, overlong and broken responses.

mod from_app;
mod from_upstream;

use crate::support::*;

/// The app's token in every raw request; it must never reach an upstream.
const APP_TOKEN: &str = "app-token-Xq3";

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// A scripted upstream behind route `echo` (and a plain one behind `other`), tokex
/// before both.
struct Rig {
    up: Scripted,
    other: Scripted,
    _as: MockAs,
    tokex: Tokex,
}

impl Rig {
    async fn start(script: fn(&str, usize, usize) -> Act) -> Self {
        let (up, other, as_) = (
            Scripted::start(script).await,
            Scripted::start(|_, _, _| Act::Reply(vec![OK])).await,
            MockAs::start().await,
        );
        let yaml = format!(
            "{}  - name: other\n    match: {{ host: other.internal }}\n    upstream: {}\n    exchange: {{ authority: main, audience: other-api }}\n",
            config(&as_, &up.url()),
            other.url()
        );
        let tokex = Tokex::start(&yaml).await;
        Self {
            up,
            other,
            _as: as_,
            tokex,
        }
    }

    /// Nothing the app sent as its credential reached either upstream.
    fn assert_token_stayed(&self) {
        for raw in [self.up.raw(), self.other.raw()] {
            assert!(
                !raw.contains(APP_TOKEN),
                "the app's token went upstream: {raw}"
            );
        }
    }
}

fn request(method: &str, path: &str, fields: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: echo.internal\r\nAuthorization: Bearer {APP_TOKEN}\r\n{fields}\r\n{body}"
    )
}

/// The status of the first response in `text`.
fn status(text: &str) -> u16 {
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
