//! HTTP/1.1 message framing for the engine (RFC 9112 §6): how long a response body is,
//! the chunked-coding scanner that finds its end, and writing heads.
//!
//! The engine relays bodies as they come, so it never decodes chunked coding: it only
//! walks it to know where the message ends, and refuses anything malformed.

use http::{HeaderMap, StatusCode};

use crate::forward::list_has;

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: HEAD, 1xx, 204, 304.
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes; the connection to the app closes after it too.
    Close,
}

/// A response the engine refuses to relay.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// The framing of a response (`http10`: the upstream answered as HTTP/1.0). The second
/// value says whether the upstream connection may carry another request afterwards.
pub fn response_framing(
    head_request: bool,
    status: u16,
    http10: bool,
    headers: &[httparse::Header<'_>],
) -> Result<(Framing, bool), Malformed> {
    let mut length: Option<u64> = None;
    let mut transfer_coding: Option<&[u8]> = None;
    let (mut close, mut keep_alive) = (false, false);
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(h.value).ok_or(Malformed("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Malformed("conflicting Content-Length values"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_coding = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("connection") {
            close |= list_has(h.value, b"close");
            keep_alive |= list_has(h.value, b"keep-alive");
        }
    }
    // HTTP/1.0 closes unless it says otherwise (RFC 9112 §9.3).
    let reusable = !close && (!http10 || keep_alive);
    if head_request || status < 200 || status == 204 || status == 304 {
        return Ok((Framing::Empty, reusable));
    }
    match (transfer_coding, length) {
        // Both at once is how smuggling starts: relay by the coding, never reuse. An
        // HTTP/1.0 server has no business sending a coding: faulty, so until close.
        (Some(coding), l) => {
            let last = coding.rsplit(|&b| b == b',').next().unwrap_or_default();
            if !http10 && trim(last).eq_ignore_ascii_case(b"chunked") {
                Ok((Framing::Chunked, reusable && l.is_none()))
            } else {
                Ok((Framing::Close, false))
            }
        }
        (None, Some(n)) => Ok((Framing::Length(n), reusable)),
        (None, None) => Ok((Framing::Close, false)),
    }
}

/// Content-Length: 1*DIGIT, at most 19 digits so it fits.
pub fn parse_length(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b" \t".contains(b))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b" \t".contains(b))
        .map_or(start, |i| i + 1);
    &v[start..end]
}

/// Appends `status` as an HTTP/1.1 status line.
pub fn status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends a `Date` field with the current time (RFC 9110 §6.6.1: a response tokex makes,
/// or relays without one, gets one). Formatted at most once a second per thread.
pub fn date(out: &mut Vec<u8>) {
    thread_local! {
        static CACHED: std::cell::RefCell<(u64, String)> = const {
            std::cell::RefCell::new((0, String::new()))
        };
    }
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|(at, text)| {
        if *at != secs || text.is_empty() {
            *text = httpdate::fmt_http_date(now);
            *at = secs;
        }
        field(out, b"date", text.as_bytes());
    });
}

/// A `Content-Length` field, formatted without allocating.
pub fn content_length(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    field(out, b"content-length", &digits[at..]);
}

pub fn fields(out: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
}

/// Walks chunked coding (RFC 9112 §7.1) to find where the message ends. Sizes are
/// bounded by u64, extensions and trailers by [`Chunked::LINE_MAX`] per line.
#[derive(Debug, Default)]
pub struct Chunked {
    state: State,
    size: u64,
    digits: u8,
    line: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Size,
    /// Whitespace after the size: only more of it, `;` or CR may follow.
    SizeWs,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

impl Chunked {
    const LINE_MAX: usize = 8 * 1024;

    /// Consumes `bytes`. `Some(n)`: the message ends after the first `n` of them;
    /// `None`: all were consumed and more are needed.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, Malformed> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.state {
                State::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
                        if self.digits >= 16 {
                            return Err(Malformed("chunk size too large"));
                        }
                        self.size = self.size << 4 | digit;
                        self.digits += 1;
                    }
                    b';' if self.digits > 0 => self.enter(State::Extension),
                    b' ' | b'\t' if self.digits > 0 => self.state = State::SizeWs,
                    b'\r' if self.digits > 0 => self.state = State::SizeLf,
                    _ => return Err(Malformed("invalid chunk size")),
                },
                State::SizeWs => match b {
                    b' ' | b'\t' => {}
                    b';' => self.enter(State::Extension),
                    b'\r' => self.state = State::SizeLf,
                    _ => return Err(Malformed("invalid chunk size")),
                },
                State::Extension => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\n' => return Err(Malformed("bare LF in chunk extension")),
                    _ => self.count_line()?,
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(Malformed("chunk size line without LF"));
                    }
                    self.state = if self.size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    };
                }
                State::Data => {
                    let take =
                        (bytes.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    self.size -= take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr if b == b'\r' => self.state = State::DataLf,
                State::DataLf if b == b'\n' => {
                    self.digits = 0;
                    self.state = State::Size;
                }
                State::DataCr | State::DataLf => return Err(Malformed("chunk data without CRLF")),
                State::TrailerStart if b == b'\r' => self.state = State::EndLf,
                State::TrailerStart if b == b'\n' => {
                    return Err(Malformed("bare LF after the last chunk"));
                }
                State::TrailerStart => {
                    self.enter(State::Trailer);
                    self.count_line()?;
                }
                State::Trailer => match b {
                    b'\r' => self.state = State::TrailerLf,
                    b'\n' => return Err(Malformed("bare LF in trailer")),
                    _ => self.count_line()?,
                },
                State::TrailerLf if b == b'\n' => self.state = State::TrailerStart,
                State::EndLf if b == b'\n' => {
                    self.state = State::Done;
                    return Ok(Some(i + 1));
                }
                State::TrailerLf | State::EndLf => return Err(Malformed("trailer without LF")),
                State::Done => return Ok(Some(i)),
            }
            i += 1;
        }
        Ok((self.state == State::Done).then_some(0))
    }

    fn enter(&mut self, state: State) {
        self.state = state;
        self.line = 0;
    }

    fn count_line(&mut self) -> Result<(), Malformed> {
        self.line += 1;
        if self.line > Self::LINE_MAX {
            return Err(Malformed("chunk extension or trailer line too long"));
        }
        Ok(())
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

    /// Every body rule of RFC 9112 §6.3 the engine relies on.
    #[test]
    fn framing_table() {
        let cl = [header("Content-Length", "5")];
        assert_eq!(
            response_framing(false, 200, false, &cl),
            Ok((Framing::Length(5), true))
        );
        assert_eq!(
            response_framing(true, 200, false, &cl),
            Ok((Framing::Empty, true))
        );
        assert_eq!(
            response_framing(false, 204, false, &[]),
            Ok((Framing::Empty, true))
        );
        assert_eq!(
            response_framing(false, 304, false, &cl),
            Ok((Framing::Empty, true))
        );
        assert_eq!(
            response_framing(false, 200, false, &[]),
            Ok((Framing::Close, false))
        );
        let te = [header("Transfer-Encoding", "gzip, chunked")];
        assert_eq!(
            response_framing(false, 200, false, &te),
            Ok((Framing::Chunked, true))
        );
        let both = [
            header("Transfer-Encoding", "chunked"),
            header("Content-Length", "3"),
        ];
        assert_eq!(
            response_framing(false, 200, false, &both),
            Ok((Framing::Chunked, false))
        );
        let other = [header("Transfer-Encoding", "gzip")];
        assert_eq!(
            response_framing(false, 200, false, &other),
            Ok((Framing::Close, false))
        );
        let close = [
            header("Connection", "keep-alive, close"),
            header("Content-Length", "0"),
        ];
        assert_eq!(
            response_framing(false, 200, false, &close),
            Ok((Framing::Length(0), false))
        );
        for bad in ["-1", "1 2", "", "0x10", "99999999999999999999"] {
            assert!(response_framing(false, 200, false, &[header("Content-Length", bad)]).is_err());
        }
        let twice = [header("Content-Length", "5"), header("Content-Length", "6")];
        assert!(response_framing(false, 200, false, &twice).is_err());
        let same = [
            header("Content-Length", "5"),
            header("Content-Length", " 5"),
        ];
        assert_eq!(
            response_framing(false, 200, false, &same),
            Ok((Framing::Length(5), true))
        );
    }

    fn scan_in_pieces(body: &[u8], piece: usize) -> Result<Option<usize>, Malformed> {
        let mut c = Chunked::default();
        let mut at = 0;
        for part in body.chunks(piece) {
            if let Some(n) = c.feed(part)? {
                return Ok(Some(at + n));
            }
            at += part.len();
        }
        Ok(None)
    }

    /// The end is found at every split of the input, extensions and trailers included,
    /// and bytes after the end are not consumed.
    #[test]
    fn chunked_end_at_every_split() {
        let body =
            b"5;ext=\"a\"\r\nhello\r\n0A \t;x\r\n0123456789\r\n0 \r\nx-trailer: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        for piece in 1..=body.len() {
            assert_eq!(scan_in_pieces(body, piece), Ok(Some(end)), "piece {piece}");
        }
        assert_eq!(scan_in_pieces(b"0\r\n\r\n", 5), Ok(Some(5)));
        assert_eq!(scan_in_pieces(b"3\r\nab", 2), Ok(None));
    }

    #[test]
    fn chunked_refuses_malformed() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n",
            b"2\r\nabc\r\n",
            b"11111111111111111\r\n",
            b"0\r\nbad\ntrailer\r\n\r\n",
            b"0\r\n\rX",
            b"0\r\n\nX: y\r\n\r\n",
            b"5 6\r\nhello\r\n",
        ] {
            assert!(
                scan_in_pieces(bad, 1).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn content_length_digits() {
        for n in [0, 7, 10, 1234567890, u64::MAX] {
            let mut out = Vec::new();
            content_length(&mut out, n);
            assert_eq!(out, format!("content-length: {n}\r\n").as_bytes());
        }
    }

    #[test]
    fn date_field_is_an_http_date() {
        let mut out = Vec::new();
        date(&mut out);
        let text = String::from_utf8(out).unwrap();
        let value = text.strip_prefix("date: ").unwrap().trim_end();
        let parsed = httpdate::parse_http_date(value).unwrap();
        let skew = std::time::SystemTime::now().duration_since(parsed).unwrap();
        assert!(skew < std::time::Duration::from_secs(2), "{text}");
    }
}
