//! A connection the transparent redirect brought: where the app was connecting, what it
//! speaks, and so whether tokex serves it as HTTP or leaves it alone.
//!
//! Only plain HTTP can have its token exchanged. TLS cannot be rewritten without
//! terminating the app's TLS, which tokex never does, and other protocols are not
//! tokex's business: both are relayed untouched (`unmatched: passthrough`) or closed
//! (`reject`), and counted.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::connection::{self, Settings};
use super::detect::{PREFIX_MAX, Prefixed};
use crate::config::model::Unmatched;
use crate::proxy::Proxy;
use crate::session::Session;

/// How long an app may wait before its first byte. HTTP and TLS clients speak at once;
/// one that waits is running a protocol whose server speaks first, which is relayed.
const FIRST_BYTES_WITHIN: Duration = Duration::from_secs(1);

/// What a redirected connection speaks, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spoken {
    Http,
    Tls,
    Other,
}

impl Spoken {
    fn label(self) -> &'static str {
        match self {
            Spoken::Http => "http",
            Spoken::Tls => "tls",
            Spoken::Other => "other",
        }
    }
}

pub async fn serve(proxy: Arc<Proxy>, mut stream: TcpStream, settings: Arc<Settings>) {
    let destination = match crate::transparent::original_destination(&stream) {
        Ok(d) if Some(d) != stream.local_addr().ok() => d,
        Ok(_) => {
            return tracing::debug!(
                "a connection straight to the transparent listener, not redirected; closing"
            );
        }
        Err(e) => return tracing::debug!(error = %e, "no original destination; closing"),
    };
    let mut first = [0u8; PREFIX_MAX];
    let (spoken, len) =
        match tokio::time::timeout(FIRST_BYTES_WITHIN, sniff(&mut stream, &mut first)).await {
            Ok(Ok(Some(sniffed))) => sniffed,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => return tracing::debug!(error = %e, "redirected connection failed"),
            // Silent: the server is meant to speak first.
            Err(_) => (Spoken::Other, 0),
        };
    let config = proxy.config();
    let unmatched = config
        .transparent
        .as_ref()
        .map_or(Unmatched::Reject, |t| t.unmatched);
    let outcome = match (spoken, unmatched) {
        (Spoken::Http, _) => "proxied",
        (_, Unmatched::Passthrough) => "passthrough",
        (_, Unmatched::Reject) => "rejected",
    };
    proxy
        .metrics
        .redirected
        .series(&[spoken.label(), outcome])
        .inc();
    let prefixed = Prefixed::new(&first[..len], stream);
    match (spoken, unmatched) {
        (Spoken::Http, _) => {
            let session = Arc::new(Session::redirected(destination));
            connection::serve_io(proxy, prefixed, settings, session).await;
        }
        (_, Unmatched::Passthrough) => {
            let within = config.timeouts.upstream_connect;
            drop(config);
            if let Err(e) = crate::transparent::relay::relay(prefixed, destination, within).await {
                tracing::debug!(%destination, error = %e, "relay ended with an error");
            }
        }
        (_, Unmatched::Reject) => tracing::debug!(
            %destination,
            protocol = spoken.label(),
            "redirected connection refused (unmatched: reject)"
        ),
    }
}

/// Reads until the first bytes tell what the app speaks; `None` when it closed first.
async fn sniff(
    stream: &mut TcpStream,
    buf: &mut [u8; PREFIX_MAX],
) -> std::io::Result<Option<(Spoken, usize)>> {
    let mut len = 0;
    loop {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Ok((len > 0).then_some((Spoken::Other, len)));
        }
        len += n;
        if let Some(spoken) = classify(&buf[..len]).or((len == buf.len()).then_some(Spoken::Other))
        {
            return Ok(Some((spoken, len)));
        }
    }
}

/// TLS starts with a handshake record (0x16); HTTP/1.x and the HTTP/2 preface with a
/// method token, a space and a request target (`/`, `*` or an absolute `http` URI).
/// `None`: not enough bytes yet.
fn classify(bytes: &[u8]) -> Option<Spoken> {
    const METHOD_MAX: usize = 16;
    let first = *bytes.first()?;
    if first == 0x16 {
        return Some(Spoken::Tls);
    }
    for (i, &b) in bytes.iter().enumerate() {
        if b == b' ' {
            if i == 0 {
                return Some(Spoken::Other);
            }
            return match bytes.get(i + 1) {
                None => None,
                Some(b'/' | b'*' | b'h' | b'H') => Some(Spoken::Http),
                Some(_) => Some(Spoken::Other),
            };
        }
        if !(b.is_ascii_uppercase() || b == b'-' || b == b'_') || i >= METHOD_MAX {
            return Some(Spoken::Other);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_tell_http_tls_and_others_apart() {
        let cases: [(&[u8], Option<Spoken>); 12] = [
            (b"GET / HTTP/1.1\r\n", Some(Spoken::Http)),
            (b"POST http://a/ HTTP/1.1", Some(Spoken::Http)),
            (b"OPTIONS * HTTP/1.1", Some(Spoken::Http)),
            (b"PRI * HTTP/2.0\r\n", Some(Spoken::Http)),
            (b"\x16\x03\x01\x02\x00", Some(Spoken::Tls)),
            (b"SET key value\r\n", Some(Spoken::Other)),
            (b"\x00\x00\x00\x08\x04\xd2\x16\x2f", Some(Spoken::Other)),
            (b"get / HTTP/1.1", Some(Spoken::Other)),
            (b" GET", Some(Spoken::Other)),
            (b"GE", None),
            (b"GET ", None),
            (b"", None),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                classify(bytes),
                expected,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}
