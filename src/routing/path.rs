//! Dot segments in a request path (RFC 3986 §5.2.4), read before routing so a request
//! can neither borrow a route by its prefix nor climb out of an upstream's base path.
//!
//! `%2e` counts as a dot (RFC 3986 §2.3: it is an unreserved character, and servers
//! decode it). A segment that an upstream could still turn into a dot segment by
//! decoding `%2f` or `%5c` (`..%2f`) is refused rather than guessed at.

use std::borrow::Cow;

/// Why a path cannot be forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unsafe {
    #[error("the path climbs above the root with dot segments")]
    AboveRoot,
    #[error("the path hides a dot segment behind an encoded slash")]
    EncodedSlash,
}

/// `path` with its dot segments removed; borrowed when it has none.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, Unsafe> {
    if !path.split('/').any(needs_care) {
        return Ok(Cow::Borrowed(path));
    }
    let mut kept: Vec<&str> = Vec::new();
    let mut segments = path.split('/').peekable();
    // A path starts with '/', so the first split piece is the empty root.
    if segments.peek() == Some(&"") {
        segments.next();
    }
    let mut ends_in_dir = false;
    while let Some(segment) = segments.next() {
        ends_in_dir = false;
        match dots(segment) {
            Some(1) => ends_in_dir = true,
            Some(_) => {
                kept.pop().ok_or(Unsafe::AboveRoot)?;
                ends_in_dir = true;
            }
            None if hides_dots(segment) => return Err(Unsafe::EncodedSlash),
            None => kept.push(segment),
        }
        // `/a/./` and `/a/.` both mean the directory `/a/`.
        if ends_in_dir && segments.peek().is_none() {
            break;
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if ends_in_dir || out.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// Whether a segment is a dot segment or might hide one.
pub(super) fn needs_care(segment: &str) -> bool {
    dots(segment).is_some() || hides_dots(segment)
}

/// `Some(1)` for `.`, `Some(2)` for `..` (each dot possibly `%2e`, any case).
fn dots(segment: &str) -> Option<u8> {
    let mut rest = segment.as_bytes();
    let mut n = 0u8;
    while !rest.is_empty() {
        rest = if rest[0] == b'.' {
            &rest[1..]
        } else if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(b"%2e") {
            &rest[3..]
        } else {
            return None;
        };
        n += 1;
        if n > 2 {
            return None;
        }
    }
    (n > 0).then_some(n)
}

/// Whether decoding `%2f`, `%5c` or a raw backslash would cut a dot segment out of it.
fn hides_dots(segment: &str) -> bool {
    let b = segment.as_bytes();
    let has_separator = b.contains(&b'\\')
        || b.windows(3).any(|w| {
            w[0] == b'%'
                && (w[1..].eq_ignore_ascii_case(b"2f") || w[1..].eq_ignore_ascii_case(b"5c"))
        });
    if !has_separator {
        return false;
    }
    let unified = segment
        .replace("%2f", "/")
        .replace("%2F", "/")
        .replace("%5c", "/")
        .replace("%5C", "/")
        .replace('\\', "/");
    unified.split('/').any(|part| dots(part).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3986 §5.2.4's examples and their encoded forms.
    #[test]
    fn dot_segments_are_removed() {
        let cases = [
            ("/a/b/c/./../../g", "/a/g"),
            ("/a/./b", "/a/b"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/%2e%2E/b", "/b"),
            ("/a/.%2e/b", "/b"),
            ("/a/%2e/b", "/a/b"),
            ("/.", "/"),
            ("/a/..", "/"),
            ("/a//../b", "/a/b"),
            ("/mid/content=5/../6", "/mid/6"),
        ];
        for (path, want) in cases {
            assert_eq!(normalize(path).unwrap(), want, "{path}");
        }
    }

    /// Paths without dot segments are borrowed unchanged, dots inside names included.
    #[test]
    fn plain_paths_are_borrowed() {
        for path in ["/", "/a/b", "/a.b/..c/...", "/v1/file.tar.gz", "/%2e%2e%2e"] {
            assert!(matches!(normalize(path), Ok(Cow::Borrowed(p)) if p == path));
        }
    }

    /// Climbing above the root, in any spelling, is refused.
    #[test]
    fn climbing_above_the_root_is_refused() {
        for path in [
            "/..",
            "/../admin",
            "/a/../../admin",
            "/%2e%2e/admin",
            "/a/%2E./../x",
        ] {
            assert_eq!(normalize(path), Err(Unsafe::AboveRoot), "{path}");
        }
    }

    /// A dot segment behind an encoded slash or a backslash is refused; names that only
    /// contain those characters are not.
    #[test]
    fn dots_behind_encoded_slashes_are_refused() {
        for path in [
            "/a/..%2fadmin",
            "/a/%2e%2e%5Cadmin",
            "/a/..\\admin",
            "/a/x%2F..",
        ] {
            assert_eq!(normalize(path), Err(Unsafe::EncodedSlash), "{path}");
        }
        assert!(normalize("/a/b%2Fc").is_ok());
    }
}
