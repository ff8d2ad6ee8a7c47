//! HTTP/1.1 protocol switches (RFC 9110 §7.8), WebSocket among them. The request that
//! asks for one goes through every step like any other, so the upstream sees the
//! narrowed token and never the caller's; only after the upstream's `101` are bytes
//! relayed both ways, until either side closes. HTTP/2's extended CONNECT (RFC 8441)
//! is not supported.

use http::header::{self, HeaderValue};
use http::{Request, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// The protocol a request asks to switch to: HTTP/1.1 with `Upgrade` and a
/// `Connection` that names it (a bare `Upgrade` is only a hop-by-hop field). A switch
/// to HTTP itself (`h2c`) is never relayed: the requests inside the tunnel would reach
/// the upstream with the caller's own token, so such a request is served as plain
/// HTTP/1.1 instead, as RFC 9110 §7.8 lets a server do.
pub fn requested<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let named = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
    let mut protocols = req.headers().get_all(header::UPGRADE).iter();
    match (named, protocols.next(), protocols.next()) {
        (true, Some(protocol), None) if !is_http(protocol.as_bytes()) => Some(protocol.clone()),
        _ => None,
    }
}

fn is_http(protocol: &[u8]) -> bool {
    let p = protocol.trim_ascii();
    p.eq_ignore_ascii_case(b"h2c")
        || p.eq_ignore_ascii_case(b"h2")
        || p.len() >= 5 && p[..5].eq_ignore_ascii_case(b"http/")
}

/// Relays bytes between the app's and the upstream's switched connections until
/// either side closes.
pub fn tunnel(app: OnUpgrade, upstream: OnUpgrade) {
    tokio::spawn(async move {
        let (app, upstream) = match tokio::try_join!(app, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "protocol switch did not complete");
                return;
            }
        };
        let (mut app, mut upstream) = (TokioIo::new(app), TokioIo::new(upstream));
        match tokio::io::copy_bidirectional(&mut app, &mut upstream).await {
            Ok((to_upstream, to_app)) => {
                tracing::debug!(to_upstream, to_app, "switched connection closed");
            }
            Err(e) => tracing::debug!(error = %e, "switched connection ended"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, fields: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get("/").version(version);
        for (k, v) in fields {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    /// Only HTTP/1.1 with one `Upgrade` named in `Connection` asks for a switch.
    #[test]
    fn what_asks_for_a_switch() {
        let ws = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ];
        assert_eq!(requested(&req(Version::HTTP_11, &ws)).unwrap(), "websocket");
        assert!(requested(&req(Version::HTTP_10, &ws)).is_none());
        assert!(requested(&req(Version::HTTP_11, &[("upgrade", "websocket")])).is_none());
        assert!(requested(&req(Version::HTTP_11, &[("connection", "upgrade")])).is_none());
        let two = [
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("upgrade", "h2c"),
        ];
        assert!(requested(&req(Version::HTTP_11, &two)).is_none());
        for http in ["h2c", "H2C", "HTTP/2.0", "h2"] {
            let asks = [("connection", "upgrade"), ("upgrade", http)];
            assert!(requested(&req(Version::HTTP_11, &asks)).is_none(), "{http}");
        }
    }
}
