//! The engine's side toward plain-`http` upstreams: one kept-alive connection per app
//! connection, reused while requests go to the same upstream, so the hot path shares
//! nothing between connections and takes no lock.
//!
//! A kept connection the upstream may have closed meanwhile is checked before reuse;
//! an idempotent request that still meets a closed connection before any response byte
//! is sent once more on a new one (RFC 9112 §9.3.1.1), as a pooled client would.

use std::io;
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use http::uri::Authority;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::wire::{self, Chunked, Framing};
use crate::error::{Code, ProxyError};

const READ_CHUNK: usize = 16 * 1024;
const MAX_HEADERS: usize = 100;
/// Response heads larger than this are refused, as hyper's client refuses them.
const HEAD_MAX: usize = 64 * 1024;

/// The upstream connection an app connection keeps.
#[derive(Default)]
pub struct Upstreams {
    conn: Option<Conn>,
}

struct Conn {
    authority: Authority,
    io: TcpStream,
    buf: BytesMut,
    idle_since: Instant,
}

/// What the engine needs to relay the body after the head was written to `out`.
pub struct Head {
    pub status: u16,
    pub framing: Framing,
    reusable: bool,
}

/// One request to send: the whole message, and how to treat it.
pub struct Outgoing<'a> {
    pub authority: &'a Authority,
    pub message: &'a [u8],
    /// Safe to send twice (RFC 9110 §9.2.2).
    pub idempotent: bool,
    pub head_request: bool,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// When the request started: the clock the idle check and idle mark use.
    pub now: Instant,
}

fn unavailable() -> ProxyError {
    ProxyError::new(
        Code::UpstreamUnavailable,
        "the upstream refused, reset or failed TLS",
    )
}

fn malformed(why: &'static str) -> ProxyError {
    tracing::debug!(why, "upstream response refused");
    ProxyError::new(
        Code::UpstreamUnavailable,
        "the upstream sent a malformed response",
    )
}

impl Upstreams {
    /// Sends the request and writes the response head, as the app sees it, into `out`.
    pub async fn send(
        &mut self,
        req: &Outgoing<'_>,
        out: &mut Vec<u8>,
        close_client: bool,
    ) -> Result<Head, ProxyError> {
        let done = match self.take_kept(req) {
            Some(conn) => match Self::attempt(conn, true, req, out, close_client).await {
                Ok(done) => Some(done),
                // A kept connection closed under us: one more try on a new connection,
                // only for requests that may be sent twice.
                Err(Attempt::Stale) if req.idempotent => None,
                Err(Attempt::Stale) => return Err(unavailable()),
                Err(Attempt::Failed(e)) => return Err(e),
            },
            None => None,
        };
        let (conn, head) = match done {
            Some(done) => done,
            None => {
                let conn = connect(req).await?;
                Self::attempt(conn, false, req, out, close_client)
                    .await
                    .map_err(|e| match e {
                        Attempt::Stale => unavailable(),
                        Attempt::Failed(e) => e,
                    })?
            }
        };
        self.conn = Some(conn);
        Ok(head)
    }

    /// The kept connection when it goes to the same upstream, has not idled too long,
    /// and has no unread bytes or EOF waiting (either means it cannot be reused).
    fn take_kept(&mut self, req: &Outgoing<'_>) -> Option<Conn> {
        let conn = self.conn.take()?;
        if conn.authority != *req.authority
            || req.now.saturating_duration_since(conn.idle_since) > req.idle_timeout
        {
            return None;
        }
        // Readiness the driver has seen decides: without any, no syscall and no waker
        // is touched. With some, a one-byte read tells EOF or stray bytes (either way the
        // connection goes) from a stale readiness (it stays).
        let mut probe = [0u8; 1];
        match conn.io.try_read(&mut probe) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(conn),
            _ => None,
        }
    }

    async fn attempt(
        mut conn: Conn,
        reused: bool,
        req: &Outgoing<'_>,
        out: &mut Vec<u8>,
        close_client: bool,
    ) -> Result<(Conn, Head), Attempt> {
        let stale = |e: ProxyError| {
            if reused {
                Attempt::Stale
            } else {
                Attempt::Failed(e)
            }
        };
        if conn.io.write_all(req.message).await.is_err() {
            return Err(stale(unavailable()));
        }
        conn.buf.clear();
        let mut got_any = false;
        loop {
            if let Some(head) = parse_head(&mut conn.buf, req.head_request, out, close_client)
                .map_err(Attempt::Failed)?
            {
                return Ok((conn, head));
            }
            if conn.buf.len() > HEAD_MAX {
                return Err(Attempt::Failed(malformed("response head too large")));
            }
            conn.buf.reserve(READ_CHUNK);
            match conn.io.read_buf(&mut conn.buf).await {
                Ok(0) | Err(_) if !got_any => return Err(stale(unavailable())),
                Ok(0) | Err(_) => return Err(Attempt::Failed(unavailable())),
                Ok(_) => got_any = true,
            }
        }
    }

    /// Relays the body of the response whose head is in `out` to the app. An error
    /// means the app's connection must close: its response is cut short.
    pub async fn relay(
        &mut self,
        head: &Head,
        client: &mut TcpStream,
        out: &mut Vec<u8>,
        now: Instant,
    ) -> io::Result<()> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let mut reusable = head.reusable;
        match head.framing {
            Framing::Empty => client.write_all(out).await?,
            Framing::Length(n) => {
                let mut left = n;
                let take = conn
                    .buf
                    .len()
                    .min(usize::try_from(left).unwrap_or(usize::MAX));
                out.extend_from_slice(&conn.buf[..take]);
                conn.buf.advance(take);
                left -= take as u64;
                client.write_all(out).await?;
                while left > 0 {
                    conn.buf.reserve(READ_CHUNK);
                    if conn.io.read_buf(&mut conn.buf).await? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    let take = conn
                        .buf
                        .len()
                        .min(usize::try_from(left).unwrap_or(usize::MAX));
                    client.write_all(&conn.buf[..take]).await?;
                    conn.buf.advance(take);
                    left -= take as u64;
                }
            }
            Framing::Chunked => {
                let mut scan = Chunked::default();
                let mut pending = std::mem::take(out);
                loop {
                    let fed = scan
                        .feed(&conn.buf)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.0))?;
                    let take = fed.unwrap_or(conn.buf.len());
                    pending.extend_from_slice(&conn.buf[..take]);
                    conn.buf.advance(take);
                    client.write_all(&pending).await?;
                    pending.clear();
                    if fed.is_some() {
                        break;
                    }
                    conn.buf.reserve(READ_CHUNK);
                    if conn.io.read_buf(&mut conn.buf).await? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                *out = pending;
            }
            Framing::Close => {
                out.extend_from_slice(&conn.buf);
                conn.buf.clear();
                client.write_all(out).await?;
                loop {
                    conn.buf.reserve(READ_CHUNK);
                    if conn.io.read_buf(&mut conn.buf).await? == 0 {
                        break;
                    }
                    client.write_all(&conn.buf).await?;
                    conn.buf.clear();
                }
                reusable = false;
            }
        }
        // Bytes past the end of the response: the upstream cannot be trusted with more.
        if reusable && conn.buf.is_empty() {
            conn.idle_since = now;
        } else {
            self.conn = None;
        }
        Ok(())
    }
}

enum Attempt {
    /// A kept connection failed before any response byte.
    Stale,
    Failed(ProxyError),
}

async fn connect(req: &Outgoing<'_>) -> Result<Conn, ProxyError> {
    let port = req.authority.port_u16().unwrap_or(80);
    let host = req.authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let io = match tokio::time::timeout(req.connect_timeout, TcpStream::connect((host, port))).await
    {
        Ok(Ok(io)) => io,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "upstream connect failed");
            return Err(unavailable());
        }
        Err(_) => {
            tracing::debug!("upstream connect timed out");
            return Err(unavailable());
        }
    };
    let _ = io.set_nodelay(true);
    Ok(Conn {
        authority: req.authority.clone(),
        io,
        buf: BytesMut::with_capacity(READ_CHUNK),
        idle_since: req.now,
    })
}

/// Parses a complete response head from `buf` into `out` (status line and end-to-end
/// fields, plus the framing fields the app's connection needs), skipping 1xx interim
/// responses. `None`: more bytes are needed.
fn parse_head(
    buf: &mut BytesMut,
    head_request: bool,
    out: &mut Vec<u8>,
    close_client: bool,
) -> Result<Option<Head>, ProxyError> {
    loop {
        let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut res,
            buf,
            &mut fields,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(malformed("unparsable response head")),
        };
        let code = res.code.unwrap_or(0);
        let status = http::StatusCode::from_u16(code).map_err(|_| malformed("bad status"))?;
        if (100..200).contains(&code) {
            // 101 would switch protocols, which tokex never asked for.
            if code == 101 {
                return Err(malformed("unexpected 101"));
            }
            buf.advance(len);
            continue;
        }
        let http10 = res.version == Some(0);
        let (framing, reusable) = wire::response_framing(head_request, code, http10, res.headers)
            .map_err(|e| malformed(e.0))?;
        out.clear();
        wire::status_line(out, status);
        // Content-Length and Transfer-Encoding are the engine's to write, from the framing
        // it relays by: a `Connection` naming one of them must not unframe the response.
        let hop_by_hop = crate::forward::HopByHop::of(res.headers);
        let mut dated = false;
        for h in res.headers.iter() {
            let framing_field = h.name.eq_ignore_ascii_case("content-length")
                || h.name.eq_ignore_ascii_case("transfer-encoding");
            if !framing_field && !hop_by_hop.contains(h.name) {
                wire::field(out, h.name.as_bytes(), h.value);
                dated |= h.name.eq_ignore_ascii_case("date");
            }
        }
        if !dated {
            wire::date(out);
        }
        let named = |name: &'static str| {
            res.headers
                .iter()
                .filter(move |h| h.name.eq_ignore_ascii_case(name))
        };
        match framing {
            Framing::Length(n) => wire::content_length(out, n),
            // HEAD and 304 describe the body they would have had; 204 and 1xx have none.
            Framing::Empty if head_request || code == 304 => {
                if let Some(n) = named("content-length").find_map(|h| wire::parse_length(h.value)) {
                    wire::content_length(out, n);
                }
            }
            Framing::Empty => {}
            // The codings are relayed as they are, so the app can undo them.
            Framing::Chunked | Framing::Close => {
                for h in named("transfer-encoding") {
                    wire::field(out, b"transfer-encoding", h.value);
                }
            }
        }
        if framing == Framing::Close || close_client {
            wire::field(out, b"connection", b"close");
        }
        out.extend_from_slice(b"\r\n");
        buf.advance(len);
        return Ok(Some(Head {
            status: code,
            framing,
            reusable,
        }));
    }
}
