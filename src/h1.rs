//! The HTTP/1.1 engine: the hot path from the app to a plain-`http` upstream, without a
//! general-purpose HTTP stack in between (issue 2's throughput bar).
//!
//! Each app connection runs one loop: read a request head, route it, take the token
//! (SPEC §4 steps 2 to 6, the same code as [`Proxy::handle`]), write the rewritten head
//! (step 7, [`forward::upstream_request`]) to the upstream connection this app
//! connection keeps, and relay the response back as it arrives.
//!
//! The engine takes only requests whose shape it fully understands: HTTP/1.1, a body
//! that is absent or given by Content-Length and already received whole, no `Expect`,
//! and a route [`Proxy::plan`] accepts. Anything else, including h2c and every malformed
//! request, hands the connection (with the bytes already read) to hyper, which serves it
//! from then on through [`Proxy::handle`]. So the edge cases of HTTP/1.1 stay with hyper,
//! and both engines apply one routing, token and rewrite code.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Sleep;

use crate::cache::Recent;
use crate::error::ProxyError;
use crate::forward;
use crate::proxy::{Planned, Proxy};

mod upstream;
mod wire;

use upstream::{Outgoing, Upstreams};

const READ_CHUNK: usize = 8 * 1024;
const MAX_HEADERS: usize = 64;
/// Heads longer than this, and bodies larger, go to hyper, which has its own limits.
const HEAD_MAX: usize = 64 * 1024;
const BODY_MAX: usize = 64 * 1024;

/// What every connection shares: hyper's server for hand-overs, and the wait for a
/// request head (`timeouts.client_header_read`, which also bounds idle keep-alive).
pub struct Settings {
    pub fallback: auto::Builder<TokioExecutor>,
    pub header_read: Duration,
    /// Turns true when tokex starts draining.
    pub stop: watch::Receiver<bool>,
}

/// A request head the engine will serve.
struct Parsed {
    req: Request<()>,
    head_len: usize,
    body_len: usize,
    /// Whether the request declared a Content-Length (the engine writes its own).
    has_length: bool,
    close: bool,
}

// Boxing `Parsed` would add an allocation per request to save a move.
#[allow(clippy::large_enum_variant)]
enum Next {
    Request(Parsed),
    /// The app closed, stalled past the header timeout, or tokex is shutting down.
    Done,
    /// Something the engine leaves to hyper.
    HandOver,
}

/// One app connection's state: its socket and read buffer, the buffers heads are
/// written into, and the upstream connection it keeps.
struct Conn {
    io: TcpStream,
    buf: BytesMut,
    out: Vec<u8>,
    head: Vec<u8>,
    upstreams: Upstreams,
    /// The last token lookup, for the next request with the same token.
    recent: Option<Recent>,
    /// The last request's header map, emptied: the next request's fields go into its
    /// allocation instead of a new one.
    spare: HeaderMap,
    /// The header-read and upstream-response deadlines. Each is one timer reset per
    /// request: a later deadline only moves the timer (no re-registration), which keeps
    /// timers off the hot path's cost.
    header_timer: Pin<Box<Sleep>>,
    response_timer: Pin<Box<Sleep>>,
}

/// Serves one app connection until it closes or tokex drains.
pub async fn serve(proxy: Arc<Proxy>, io: TcpStream, settings: Arc<Settings>) {
    // One wait for the drain per connection, not per request: it stays registered.
    let mut stop = settings.stop.clone();
    let stopped = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    let mut stopped = std::pin::pin!(stopped);
    let mut conn = Conn {
        io,
        buf: BytesMut::with_capacity(READ_CHUNK),
        out: Vec::with_capacity(READ_CHUNK),
        head: Vec::with_capacity(1024),
        upstreams: Upstreams::default(),
        recent: None,
        spare: HeaderMap::new(),
        header_timer: Box::pin(tokio::time::sleep(settings.header_read)),
        response_timer: Box::pin(tokio::time::sleep(settings.header_read)),
    };
    loop {
        let deadline = Instant::now() + settings.header_read;
        conn.header_timer.as_mut().reset(deadline.into());
        let timer = conn.header_timer.as_mut();
        let spare = &mut conn.spare;
        let next = next(&mut conn.io, &mut conn.buf, spare, timer, stopped.as_mut()).await;
        let parsed = match next {
            Next::Request(parsed) => parsed,
            Next::Done => return,
            Next::HandOver => return hand_over(proxy, conn, &settings).await,
        };
        let Some(plan) = proxy.plan(&parsed.req) else {
            return hand_over(proxy, conn, &settings).await;
        };
        conn.buf.advance(parsed.head_len);
        let body = conn.buf.split_to(parsed.body_len);
        let body = parsed.has_length.then_some(&body[..]);
        // The drain's value only ever turns true, so a change means it began; reading the
        // version takes no lock.
        let close = parsed.close || settings.stop.has_changed().unwrap_or(true);
        match conn.one(&proxy, &plan, parsed.req, body, close).await {
            Ok(false) if !close => {}
            _ => return,
        }
    }
}

impl Conn {
    /// Serves one request. `Ok(true)` or an error: the app's connection must close.
    async fn one(
        &mut self,
        proxy: &Proxy,
        plan: &Planned,
        req: Request<()>,
        body: Option<&[u8]>,
        close: bool,
    ) -> io::Result<bool> {
        let started = Instant::now();
        let method = req.method().clone();
        let route = plan.route();
        let (out, head, upstreams) = (&mut self.out, &mut self.head, &mut self.upstreams);
        let (recent, spare) = (&mut self.recent, &mut self.spare);
        let response_timer = self.response_timer.as_mut();
        let sent = async {
            let credential = plan.authorize(proxy, req.headers(), recent).await?;
            let (mut parts, ()) = req.into_parts();
            forward::upstream_headers(&mut parts.headers, route, credential);
            let authority = &route.upstream.authority;
            request_head(out, &mut parts, &plan.path, authority, body);
            parts.headers.clear();
            *spare = parts.headers;
            let timeouts = plan.timeouts();
            let outgoing = Outgoing {
                authority,
                message: out,
                idempotent: parts.method.is_idempotent(),
                head_request: method == Method::HEAD,
                connect_timeout: timeouts.upstream_connect,
                idle_timeout: timeouts.idle,
                now: started,
            };
            let mut response_timer = response_timer;
            response_timer
                .as_mut()
                .reset((Instant::now() + route.timeout).into());
            tokio::select! {
                biased;
                sent = upstreams.send(&outgoing, head, close) => sent,
                () = response_timer => Err(ProxyError::new(
                    crate::error::Code::UpstreamTimeout,
                    "the upstream did not answer in time",
                )),
            }
        };
        match sent.await {
            Ok(response) => {
                plan.report(proxy, &method, Ok(response.status), started);
                self.upstreams
                    .relay(&response, &mut self.io, &mut self.head, started)
                    .await?;
                Ok(response.framing == wire::Framing::Close)
            }
            Err(e) => {
                plan.report(proxy, &method, Err(&e), started);
                error_response(&mut self.out, &e, method == Method::HEAD, close);
                self.io.write_all(&self.out).await?;
                Ok(false)
            }
        }
    }
}

/// Writes the upstream request head: origin-form target (routing built it from the
/// app's already-parsed target and the configured base path), `Host` from the upstream
/// URL (without the default port, as hyper's client writes it), the rewritten fields,
/// then the body. The framing is the engine's own: a `Connection` field naming
/// Content-Length must not leave the body unframed, where it would read as a request of
/// its own.
fn request_head(
    out: &mut Vec<u8>,
    parts: &mut http::request::Parts,
    target: &str,
    authority: &http::uri::Authority,
    body: Option<&[u8]>,
) {
    out.clear();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let host = match authority.port_u16() {
        Some(80) => authority.host(),
        _ => authority.as_str(),
    };
    wire::field(out, b"host", host.as_bytes());
    parts.headers.remove(http::header::CONTENT_LENGTH);
    wire::fields(out, &parts.headers);
    if let Some(body) = body {
        wire::content_length(out, body.len() as u64);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.unwrap_or_default());
}

/// The SPEC §5 response for `e`; a HEAD request gets the head alone.
fn error_response(out: &mut Vec<u8>, e: &ProxyError, head_request: bool, close: bool) {
    let (status, headers, body) = e.response_parts();
    out.clear();
    wire::status_line(out, status);
    wire::fields(out, &headers);
    wire::content_length(out, body.len() as u64);
    wire::date(out);
    if close {
        wire::field(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    if !head_request {
        out.extend_from_slice(&body);
    }
}

/// Reads until `buf` starts with a complete request head the engine takes.
async fn next(
    io: &mut TcpStream,
    buf: &mut BytesMut,
    spare: &mut HeaderMap,
    mut deadline: Pin<&mut Sleep>,
    mut stopped: Pin<&mut impl Future<Output = ()>>,
) -> Next {
    // Bytes already known to hold no end of head: a head trickling in a byte at a time is
    // scanned once, not parsed again from the start on every read.
    let mut scanned: usize = 0;
    loop {
        if buf.len() > HEAD_MAX {
            return Next::HandOver;
        }
        let from = scanned.saturating_sub(3);
        if buf.len() > from && ends_head(&buf[from..]) {
            match parse(buf, spare) {
                Ok(Some(parsed)) => return Next::Request(parsed),
                Ok(None) => {}
                Err(()) => return Next::HandOver,
            }
        }
        scanned = buf.len();
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_CHUNK);
        }
        tokio::select! {
            biased;
            read = io.read_buf(buf) => match read {
                Ok(0) | Err(_) => return Next::Done,
                Ok(_) => {}
            },
            () = stopped.as_mut(), if buf.is_empty() => return Next::Done,
            () = deadline.as_mut() => {
                tracing::debug!("no complete request head within client_header_read; closing");
                return Next::Done;
            }
        }
    }
}

/// Whether `bytes` hold the empty line that ends a head (CRLF, or the bare LF that
/// httparse also accepts).
fn ends_head(bytes: &[u8]) -> bool {
    bytes
        .windows(2)
        .enumerate()
        .any(|(i, w)| w == b"\n\n" || w == b"\n\r" && bytes.get(i + 2) == Some(&b'\n'))
}

/// `Ok(None)`: the head is incomplete. `Err`: hyper's to serve. The fields go into
/// `spare`'s allocation (it is left empty otherwise).
fn parse(buf: &BytesMut, spare: &mut HeaderMap) -> Result<Option<Parsed>, ()> {
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    if req.version != Some(1) {
        return Err(());
    }
    let mut headers = std::mem::take(spare);
    headers.clear();
    headers.reserve(req.headers.len());
    let mut body_len: Option<usize> = None;
    let mut close = false;
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| ())?;
        if name == http::header::TRANSFER_ENCODING || name == http::header::EXPECT {
            return Err(());
        }
        if name == http::header::CONTENT_LENGTH {
            let n = wire::parse_length(h.value).and_then(|n| usize::try_from(n).ok());
            match (n, body_len) {
                (Some(n), None) => body_len = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return Err(()),
            }
        }
        if name == http::header::CONNECTION {
            close |= wire::list_has(h.value, b"close");
        }
        headers.append(name, HeaderValue::from_bytes(h.value).map_err(|_| ())?);
    }
    let has_length = body_len.is_some();
    let body_len = body_len.unwrap_or(0);
    if body_len > BODY_MAX || buf.len() < head_len + body_len {
        return Err(());
    }
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes()).map_err(|_| ())?;
    let uri = Uri::try_from(req.path.unwrap_or_default()).map_err(|_| ())?;
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Ok(Some(Parsed {
        req: request,
        head_len,
        body_len,
        has_length,
        close,
    }))
}

/// Gives the connection to hyper, bytes already read first, until it closes or `stop`
/// asks for a graceful close.
async fn hand_over(proxy: Arc<Proxy>, conn: Conn, settings: &Settings) {
    let mut stop = settings.stop.clone();
    let io = TokioIo::new(Rewind {
        read: conn.buf.freeze(),
        io: conn.io,
    });
    let svc = service_fn(move |req| proxy.clone().handle(req));
    let conn = settings.fallback.serve_connection(io, svc);
    tokio::pin!(conn);
    // The connection first: a request already read must be served even when the drain
    // has begun (a graceful shutdown before it is parsed would drop it).
    tokio::select! {
        biased;
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            return;
        }
        _ = stop.wait_for(|stopped| *stopped) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// A connection that replays bytes the engine already read before reading more.
struct Rewind {
    read: Bytes,
    io: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
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
    use super::ends_head;

    #[test]
    fn head_end_is_found_in_every_form() {
        assert!(ends_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(ends_head(b"GET / HTTP/1.1\nHost: a\n\n"));
        assert!(ends_head(b"\n\r\n"));
        assert!(!ends_head(b"GET / HTTP/1.1\r\nHost: a\r\n"));
        assert!(!ends_head(b"\r\n\r"));
        assert!(!ends_head(b""));
    }
}
