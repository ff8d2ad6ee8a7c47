//! The one place YAML is parsed, and where the parser's errors are put in the words of a
//! config file: "a whole number" rather than `u32`, a repeated key with the line it first
//! appeared on, and never more than a few dozen characters of the offending value.

use serde_saphyr::{Error, Location};

/// Parses `text` into `T`; on error, the location and a message prefixed with the key
/// path (`routes[0].cache.max_ttl`) that serde_path_to_error tracked, because the
/// parser's own message only names the value.
pub fn from_yaml<T: serde::de::DeserializeOwned>(
    text: &str,
) -> Result<T, (Option<Location>, String)> {
    let mut key_path = None;
    let result = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            key_path = Some(e.path().to_string());
            e.into_inner()
        })
    });
    result.map_err(|e| {
        let location = e.location();
        let message = message(&e, text);
        // `Spanned` fields show up as a `.value` segment, and a key not yet known as `?`;
        // no config key has either name.
        let key_path = key_path.map(|p| p.replace(".value", "").replace(".?", ""));
        match key_path.filter(|p| p != "." && p != "?") {
            Some(p) => (location, format!("{p}: {message}")),
            None => (location, message),
        }
    })
}

/// Whether `text` holds no YAML content at all: only blank lines, comments and markers.
pub fn is_blank(text: &str) -> bool {
    text.lines().map(str::trim).all(|l| {
        l.is_empty() || l.starts_with('#') || l == "---" || l == "..." || l.starts_with("%YAML")
    })
}

fn message(e: &Error, text: &str) -> String {
    match e.without_snippet() {
        Error::InvalidScalar { ty, .. } => format!("expected {}", describe(ty)),
        Error::DuplicateMappingKey {
            key: Some(key),
            location,
        } => match first_occurrence(text, key, *location) {
            Some(line) => format!("key `{key}` appears twice, first at line {line}"),
            None => format!("key `{key}` appears twice in this mapping"),
        },
        Error::DuplicateMappingKey { key: None, .. } => {
            "a key appears twice in this mapping".to_string()
        }
        _ => plain(e),
    }
}

/// The parser's message without its own `error: line N column M:` prefix, with Rust
/// type names spelled out.
fn plain(e: &Error) -> String {
    let full = e.to_string();
    let first = full.lines().next().unwrap_or_default();
    let rest = first.strip_prefix("error: ").unwrap_or(first);
    let message = match rest.strip_prefix("line ").and_then(|r| r.split_once(": ")) {
        Some((_, message)) => message,
        None => rest,
    };
    let mut out = message.to_string();
    for ty in ["u8", "u16", "u32", "u64", "usize", "i32", "i64", "f64"] {
        out = out.replace(
            &format!("expected {ty}"),
            &format!("expected {}", describe(ty)),
        );
    }
    out
}

/// What a value of Rust type `ty` looks like in the file.
fn describe(ty: &str) -> String {
    let whole = |min: i128, max: i128| format!("a whole number from {min} to {max}");
    match ty {
        "u8" => whole(0, u8::MAX.into()),
        "u16" => whole(0, u16::MAX.into()),
        "u32" => whole(0, u32::MAX.into()),
        "u64" | "usize" => whole(0, u64::MAX.into()),
        "i32" => whole(i32::MIN.into(), i32::MAX.into()),
        "i64" => whole(i64::MIN.into(), i64::MAX.into()),
        "f32" | "f64" => "a number".to_string(),
        "bool" => "true or false".to_string(),
        other => format!("a value of type {other}"),
    }
}

/// The line where `key` first appears in the mapping that repeats it at `again`: earlier
/// on the same line (a flow mapping), or on an earlier line at the same column with
/// nothing less indented in between (a block mapping).
fn first_occurrence(text: &str, key: &str, again: Location) -> Option<u64> {
    let lines: Vec<&str> = text.lines().collect();
    let row = usize::try_from(again.line()).ok()?.checked_sub(1)?;
    let col = usize::try_from(again.column()).ok()?.checked_sub(1)?;
    let is_key_at = |line: &str, at: usize| {
        let rest = line.get(at..).unwrap_or_default();
        let rest = rest
            .strip_prefix(key)
            .or_else(|| rest.strip_prefix(&format!("\"{key}\"")))
            .or_else(|| rest.strip_prefix(&format!("'{key}'")));
        rest.is_some_and(|r| r.trim_start().starts_with(':'))
    };
    let current = lines.get(row)?;
    let before = current.get(..col).unwrap_or_default();
    if before
        .char_indices()
        .any(|(i, c)| (c == '{' || c == ',') && is_key_at(before, i + 1 + ws(&before[i + 1..])))
    {
        return Some(again.line());
    }
    for (i, line) in lines[..row].iter().enumerate().rev() {
        if is_key_at(line, col)
            && line
                .get(..col)
                .is_some_and(|p| p.trim().is_empty() || p.trim_end().ends_with('-'))
        {
            return u64::try_from(i + 1).ok();
        }
        let content = line.trim_start();
        if !content.is_empty() && !content.starts_with('#') && line.len() - content.len() < col {
            return None;
        }
    }
    None
}

/// The number of leading spaces of `s`.
fn ws(s: &str) -> usize {
    s.len() - s.trim_start_matches(' ').len()
}

/// Longest stretch of a quoted value kept in a message.
const QUOTED_KEEP: usize = 40;
/// Longest run without whitespace kept in a message (paths and URLs are usually shorter).
const WORD_KEEP: usize = 100;
/// Longest message, whatever it holds.
const MESSAGE_KEEP: usize = 360;

/// `message` with every long echo of the input cut short with an ellipsis: a quoted or
/// backticked value past a few dozen characters, a run without spaces past a hundred, and
/// the whole message past a few hundred. A hostile or broken file then cannot turn one
/// log line or terminal line into megabytes.
pub fn bounded(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MESSAGE_KEEP + 8));
    let mut quote: Option<char> = None;
    let (mut quoted_len, mut word_len, mut total) = (0usize, 0usize, 0usize);
    let mut chars = message.chars().peekable();
    while let Some(c) = chars.next() {
        if total >= MESSAGE_KEEP {
            out.push('…');
            break;
        }
        let closes = quote == Some(c);
        let opens = quote.is_none() && (c == '`' || c == '"');
        if c.is_whitespace() {
            word_len = 0;
        } else {
            word_len += 1;
        }
        if quote.is_some() && !closes {
            quoted_len += 1;
        }
        let cut = (quote.is_some() && !closes && quoted_len > QUOTED_KEEP) || word_len > WORD_KEEP;
        if cut {
            out.push('…');
            total += 1;
            // Skip the rest of this quoted value, or of this word.
            let in_quote = quote.is_some();
            while let Some(&n) = chars.peek() {
                if (in_quote && quote == Some(n)) || (!in_quote && n.is_whitespace()) {
                    break;
                }
                chars.next();
            }
            word_len = 0;
            quoted_len = 0;
            continue;
        }
        out.push(c);
        total += 1;
        if closes {
            quote = None;
            quoted_len = 0;
        } else if opens {
            quote = Some(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Short messages pass unchanged; long quoted values, long words and long messages are
    /// cut with an ellipsis, keeping their start and what follows a quoted value.
    #[test]
    fn echoes_are_bounded() {
        let short = "invalid URL `ftp://x`: scheme must be http or https";
        assert_eq!(bounded(short), short);
        let long = "x".repeat(10_000);
        let quoted = bounded(&format!("invalid host `{long}` in match"));
        assert_eq!(
            quoted,
            format!("invalid host `{}…` in match", "x".repeat(40))
        );
        let word = bounded(&format!("cannot read /{long}: not found"));
        assert_eq!(word, format!("cannot read /{}… not found", "x".repeat(99)));
        let many = bounded(&"word ".repeat(10_000));
        assert_eq!(many.chars().count(), MESSAGE_KEEP + 1);
        assert!(many.ends_with('…'));
        let unicode = bounded(&format!("bad `{}`", "é".repeat(100)));
        assert_eq!(unicode, format!("bad `{}…`", "é".repeat(40)));
    }
}
