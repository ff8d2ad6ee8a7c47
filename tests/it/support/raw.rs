//! Raw app connections: bytes written as a test spells them, and whole responses read
//! back.

use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Tokex;

/// Reads one message (head and body, framed by Content-Length or chunked coding, whose
/// chunks it joins) from `s`, `buf` holding what was read before; `None` at EOF or on a
/// malformed message.
pub async fn read_message(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    read_message_teed(s, buf, None).await
}

/// [`read_message`], also appending every byte read from `s` to `tee`.
pub(super) async fn read_message_teed(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    tee: Option<&Mutex<Vec<u8>>>,
) -> Option<(String, Vec<u8>)> {
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        fill(s, buf, tee).await?;
    };
    let head = String::from_utf8_lossy(&buf[..end + 4]).to_string();
    buf.drain(..end + 4);
    let field = |name: &str| {
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let chunked = field("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if !chunked {
        let len = field("content-length").map_or(0, |v| v.parse::<usize>().unwrap());
        while buf.len() < len {
            fill(s, buf, tee).await?;
        }
        return Some((head, buf.drain(..len).collect()));
    }
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            fill(s, buf, tee).await?;
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers, if any, end with an empty line.
            loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    buf.drain(..i + 2);
                    if i == 0 {
                        return Some((head, body));
                    }
                } else {
                    fill(s, buf, tee).await?;
                }
            }
        }
        while buf.len() < size + 2 {
            fill(s, buf, tee).await?;
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
    }
}

/// Reads more of `s` into `buf` (and `tee`); `None` at EOF or on an error.
async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>, tee: Option<&Mutex<Vec<u8>>>) -> Option<()> {
    let mut more = [0u8; 8192];
    match s.read(&mut more).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&more[..n]);
            if let Some(tee) = tee {
                tee.lock().unwrap().extend_from_slice(&more[..n]);
            }
            Some(())
        }
    }
}

/// One app connection: raw writes, and reads of whole responses.
pub struct App {
    pub s: TcpStream,
    buf: Vec<u8>,
}

impl App {
    pub async fn connect(tokex: &Tokex) -> Self {
        Self {
            s: TcpStream::connect(tokex.addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    /// Forgets what was read so far.
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    pub async fn send(&mut self, raw: &str) {
        self.s.write_all(raw.as_bytes()).await.unwrap();
    }

    /// Reads until `needle` has been seen `times` times in all bytes received so far.
    pub async fn read_until(&mut self, needle: &str, times: usize) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let text = String::from_utf8_lossy(&self.buf).to_string();
            if text.matches(needle).count() >= times {
                return text;
            }
            let mut more = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.s.read(&mut more))
                .await
                .unwrap_or_else(|_| panic!("timed out; got so far: {text:?}"))
                .unwrap();
            assert!(n > 0, "closed early; got so far: {text:?}");
            self.buf.extend_from_slice(&more[..n]);
        }
    }

    /// Reads one whole response (Content-Length framed): its head and body.
    pub async fn response(&mut self) -> (String, Vec<u8>) {
        tokio::time::timeout(
            Duration::from_secs(5),
            read_message(&mut self.s, &mut self.buf),
        )
        .await
        .expect("a response within 5 s")
        .expect("a response before the connection closed")
    }

    /// Reads to EOF.
    pub async fn read_to_close(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(5), self.s.read_to_end(&mut self.buf))
            .await
            .expect("tokex closes the connection")
            .unwrap();
        String::from_utf8_lossy(&self.buf).to_string()
    }
}
