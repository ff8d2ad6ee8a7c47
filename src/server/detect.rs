//! Which HTTP version an app connection speaks, decided once from its first bytes: the
//! HTTP/2 connection preface (RFC 9113 §3.4, prior knowledge) or anything else, which
//! is HTTP/1.x. The bytes read to decide are replayed to the HTTP server by [`Prefixed`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

/// Reads until the first bytes tell the protocol; `None` when the app closed first.
/// Most requests differ from the preface in their first byte, so one read decides.
pub async fn detect<T: AsyncRead + Unpin>(
    mut io: T,
) -> io::Result<Option<(Protocol, Prefixed<T>)>> {
    let mut prefix = [0u8; PREFACE.len()];
    let mut len = 0;
    while PREFACE.starts_with(&prefix[..len]) && len < PREFACE.len() {
        let n = io.read(&mut prefix[len..]).await?;
        if n == 0 {
            if len == 0 {
                return Ok(None);
            }
            break;
        }
        len += n;
    }
    let protocol = if prefix[..len] == PREFACE[..] {
        Protocol::Http2
    } else {
        Protocol::Http1
    };
    Ok(Some((
        protocol,
        Prefixed {
            prefix,
            at: 0,
            len,
            io,
        },
    )))
}

/// A connection that first replays the bytes [`detect`] read.
pub struct Prefixed<T> {
    prefix: [u8; PREFACE.len()],
    at: usize,
    len: usize,
    io: T,
}

/// The most bytes a [`Prefixed`] replays.
pub const PREFIX_MAX: usize = PREFACE.len();

impl<T> Prefixed<T> {
    /// `io` with `read` (at most [`PREFIX_MAX`] bytes, already taken from it) in front.
    pub fn new(read: &[u8], io: T) -> Self {
        let len = read.len().min(PREFIX_MAX);
        let mut prefix = [0u8; PREFACE.len()];
        prefix[..len].copy_from_slice(&read[..len]);
        Self {
            prefix,
            at: 0,
            len,
            io,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.len {
            let n = (self.len - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn detected(pieces: &[&[u8]]) -> Option<(Protocol, Vec<u8>)> {
        let (mut app, tokex) = tokio::io::duplex(1024);
        for piece in pieces {
            app.write_all(piece).await.unwrap();
        }
        drop(app);
        let (protocol, mut io) = detect(tokex).await.unwrap()?;
        let mut replayed = Vec::new();
        io.read_to_end(&mut replayed).await.unwrap();
        Some((protocol, replayed))
    }

    /// The preface, also split across writes, is HTTP/2; anything else is HTTP/1.x; every
    /// byte read is replayed.
    #[tokio::test]
    async fn preface_decides_and_bytes_are_replayed() {
        let h2 = [&PREFACE[..], b"\x00\x00"].concat();
        assert_eq!(detected(&[&h2]).await, Some((Protocol::Http2, h2.clone())));
        assert_eq!(
            detected(&[&h2[..3], &h2[3..10], &h2[10..]]).await,
            Some((Protocol::Http2, h2.clone()))
        );
        let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(
            detected(&[get]).await,
            Some((Protocol::Http1, get.to_vec()))
        );
        let put = b"PRI / HTTP/1.1\r\n\r\n";
        assert_eq!(
            detected(&[&put[..2], &put[2..]]).await,
            Some((Protocol::Http1, put.to_vec()))
        );
        assert_eq!(
            detected(&[b"PR"]).await,
            Some((Protocol::Http1, b"PR".to_vec()))
        );
        assert_eq!(detected(&[]).await, None);
    }
}
