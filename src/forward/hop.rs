//! Hop-by-hop fields (RFC 9110 §7.6.1) over fields as httparse parsed them: the one test
//! of which fields stay on their hop, for the HTTP/1.1 engine's requests and responses.

use super::HOP_BY_HOP;

/// Whether comma-separated `list` holds `item` (case-insensitive).
pub fn list_has(list: &[u8], item: &[u8]) -> bool {
    list.split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(item))
}

/// Which fields of a message stay on its hop: the fixed ones of [`HOP_BY_HOP`], `TE`, and
/// any field the message's `Connection` names (as [`super::strip_hop_by_hop`] decides
/// over a map).
pub struct HopByHop<'a, 'h> {
    headers: &'a [httparse::Header<'h>],
    /// Whether `Connection` names any field besides `Keep-Alive` (itself hop-by-hop).
    /// Messages nearly always carry `Connection: keep-alive` and nothing more, or no
    /// `Connection` at all, so the per-field search of its values is usually skipped.
    names_others: bool,
}

impl<'a, 'h> HopByHop<'a, 'h> {
    pub fn of(headers: &'a [httparse::Header<'h>]) -> Self {
        let names_others = headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .flat_map(|h| h.value.split(|&b| b == b','))
            .any(|t| !t.trim_ascii().eq_ignore_ascii_case(b"keep-alive"));
        Self {
            headers,
            names_others,
        }
    }

    /// Whether `name` is a hop-by-hop field of this message.
    pub fn contains(&self, name: &str) -> bool {
        // The lengths of the fixed names: most fields are ruled out without comparing.
        matches!(name.len(), 2 | 7 | 10 | 16..=19)
            && (HOP_BY_HOP
                .iter()
                .any(|h| h.as_str().len() == name.len() && name.eq_ignore_ascii_case(h.as_str()))
                || name.eq_ignore_ascii_case("te"))
            || self.named(name)
    }

    /// Whether this message's `Connection` names `name`.
    pub fn named(&self, name: &str) -> bool {
        self.names_others
            && self
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("connection"))
                .any(|h| list_has(h.value, name.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(name: &'a str, value: &'a str) -> httparse::Header<'a> {
        httparse::Header {
            name,
            value: value.as_bytes(),
        }
    }

    #[test]
    fn hop_by_hop_response_fields() {
        let h = [
            header("Connection", "x-internal"),
            header("x-internal", "1"),
        ];
        let hop = HopByHop::of(&h);
        assert!(hop.contains("x-internal"));
        assert!(hop.contains("Keep-Alive"));
        assert!(hop.contains("transfer-encoding"));
        assert!(!hop.contains("content-type"));
        assert!(!HopByHop::of(&[]).contains("x-internal"));
        // The usual `keep-alive` alone names nothing else; a list with more still does.
        let usual = [
            header("Connection", "keep-alive"),
            header("x-internal", "1"),
        ];
        assert!(!HopByHop::of(&usual).contains("x-internal"));
        let listed = [header("Connection", "Keep-Alive, x-internal")];
        assert!(HopByHop::of(&listed).contains("X-Internal"));
        for name in HOP_BY_HOP
            .iter()
            .map(|h| h.as_str())
            .chain(["te", "TE", "Upgrade"])
        {
            assert!(HopByHop::of(&[]).contains(name), "{name}");
        }
    }
}
