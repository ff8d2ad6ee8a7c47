//! Read access to a request's header fields, whichever engine parsed them: hyper's
//! [`HeaderMap`], or the HTTP/1.1 engine's fields as httparse found them in the read
//! buffer ([`Raw`], never copied). The code that decides about a request (routing, the
//! subject token, trace context, the rewrite) reads fields only through this, so both
//! engines decide alike without the engine building a map per request.

use http::HeaderMap;

/// The fields of one request head.
pub trait Fields {
    /// The values of every field named `name` (lowercase), in the order received.
    fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a [u8]>;

    /// The first value of `name`.
    fn first(&self, name: &str) -> Option<&[u8]> {
        self.values(name).next()
    }
}

impl Fields for HeaderMap {
    fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a [u8]> {
        self.get_all(name).iter().map(http::HeaderValue::as_bytes)
    }
}

/// Fields as httparse parsed them.
#[derive(Clone, Copy)]
pub struct Raw<'h, 'b>(pub &'h [httparse::Header<'b>]);

impl Fields for Raw<'_, '_> {
    fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a [u8]> {
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both forms give the same values for a name, in order, whatever its case on the wire.
    #[test]
    fn map_and_raw_fields_agree() {
        let raw = [
            httparse::Header {
                name: "Cookie",
                value: b"a=1",
            },
            httparse::Header {
                name: "Host",
                value: b"x",
            },
            httparse::Header {
                name: "cookie",
                value: b"b=2",
            },
        ];
        let mut map = HeaderMap::new();
        for h in &raw {
            map.append(
                http::HeaderName::from_bytes(h.name.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(h.value).unwrap(),
            );
        }
        let raw = Raw(&raw);
        for name in ["cookie", "host", "authorization"] {
            let a: Vec<&[u8]> = Fields::values(&map, name).collect();
            let b: Vec<&[u8]> = raw.values(name).collect();
            assert_eq!(a, b, "{name}");
        }
        assert_eq!(raw.first("cookie"), Some(&b"a=1"[..]));
    }
}
