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
use http::{HeaderValue, Method, Uri};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Sleep;

use crate::cache::Recent;
use crate::error::ProxyError;
use crate::fields::Raw;
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

/// A request head the engine will serve, its fields as httparse found them in the read
/// buffer.
struct Parsed<'h, 'b> {
    method: Method,
    uri: Uri,
    fields: &'h [httparse::Header<'b>],
    head_len: usize,
    body_len: usize,
    /// Whether the request declared a Content-Length (the engine writes its own).
    has_length: bool,
    close: bool,
}

enum Next {
    /// The buffer holds a whole head.
    Head,
    /// The app closed, stalled past the header timeout, or tokex is shutting down.
    Done,
    /// Something the engine leaves to hyper.
    HandOver,
}

/// One app connection's state: its socket, the buffers heads are written into, and the
/// upstream connection it keeps. (The read buffer is apart: requests borrow from it.)
struct Conn {
    io: TcpStream,
    out: Vec<u8>,
    head: Vec<u8>,
    upstreams: Upstreams,
    /// The last token lookup, for the next request with the same token.
    recent: Option<Recent>,
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
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut conn = Conn {
        io,
        out: Vec::with_capacity(READ_CHUNK),
        head: Vec::with_capacity(1024),
        upstreams: Upstreams::default(),
        recent: None,
        header_timer: Box::pin(tokio::time::sleep(settings.header_read)),
        response_timer: Box::pin(tokio::time::sleep(settings.header_read)),
    };
    loop {
        let deadline = Instant::now() + settings.header_read;
        conn.header_timer.as_mut().reset(deadline.into());
        let timer = conn.header_timer.as_mut();
        match next(&mut conn.io, &mut buf, timer, stopped.as_mut()).await {
            Next::Head => {}
            Next::Done => return,
            Next::HandOver => return hand_over(proxy, conn, buf, &settings).await,
        }
        let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let Some(parsed) = parse(&buf, &mut fields) else {
            return hand_over(proxy, conn, buf, &settings).await;
        };
        let raw = Raw(parsed.fields);
        let Some(plan) = proxy.plan(&parsed.method, &parsed.uri, &raw) else {
            return hand_over(proxy, conn, buf, &settings).await;
        };
        let (start, end) = (parsed.head_len, parsed.head_len + parsed.body_len);
        let body = parsed.has_length.then(|| &buf[start..end]);
        // The drain's value only ever turns true, so a change means it began; reading the
        // version takes no lock.
        let close = parsed.close || settings.stop.has_changed().unwrap_or(true);
        let served = conn.one(&proxy, &plan, &parsed, body, close).await;
        buf.advance(end);
        match served {
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
        req: &Parsed<'_, '_>,
        body: Option<&[u8]>,
        close: bool,
    ) -> io::Result<bool> {
        let started = Instant::now();
        let method = &req.method;
        let route = plan.route();
        let (out, head, upstreams) = (&mut self.out, &mut self.head, &mut self.upstreams);
        let recent = &mut self.recent;
        let response_timer = self.response_timer.as_mut();
        let sent = async {
            let fields = Raw(req.fields);
            let credential = plan.authorize(proxy, &fields, recent).await?;
            let authority = &route.upstream.authority;
            let head_of = RequestHead {
                method,
                target: &plan.path,
                authority,
                fields: req.fields,
                body,
            };
            head_of.write(out, route, credential.as_ref());
            let timeouts = plan.timeouts();
            let outgoing = Outgoing {
                authority,
                message: out,
                idempotent: method.is_idempotent(),
                head_request: *method == Method::HEAD,
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
                plan.report(proxy, method, Ok(response.status), started);
                self.upstreams
                    .relay(&response, &mut self.io, &mut self.head, started)
                    .await?;
                Ok(response.framing == wire::Framing::Close)
            }
            Err(e) => {
                plan.report(proxy, method, Err(&e), started);
                error_response(&mut self.out, &e, *method == Method::HEAD, close);
                self.io.write_all(&self.out).await?;
                Ok(false)
            }
        }
    }
}

/// The upstream request: origin-form target (routing built it from the app's
/// already-parsed target and the configured base path), `Host` from the upstream URL
/// (without the default port, as hyper's client writes it), the app's fields as step 7
/// keeps them, the credential, then the body. The framing is the engine's own: a
/// `Connection` field naming Content-Length must not leave the body unframed, where it
/// would read as a request of its own.
struct RequestHead<'a> {
    method: &'a Method,
    target: &'a str,
    authority: &'a http::uri::Authority,
    fields: &'a [httparse::Header<'a>],
    body: Option<&'a [u8]>,
}

impl RequestHead<'_> {
    fn write(&self, out: &mut Vec<u8>, route: &crate::config::Route, token: Option<&HeaderValue>) {
        out.clear();
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let host = match self.authority.port_u16() {
            Some(80) => self.authority.host(),
            _ => self.authority.as_str(),
        };
        wire::field(out, b"host", host.as_bytes());
        forward::each_upstream_field(self.fields, route, token, |name, value| {
            wire::field(out, name, value);
        });
        if let Some(body) = self.body {
            wire::content_length(out, body.len() as u64);
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(self.body.unwrap_or_default());
    }
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

/// Reads until `buf` holds the end of a request head. Empty lines before a request line
/// (RFC 9112 §2.2) are skipped, so a head that ends is a whole head.
async fn next(
    io: &mut TcpStream,
    buf: &mut BytesMut,
    mut deadline: Pin<&mut Sleep>,
    mut stopped: Pin<&mut impl Future<Output = ()>>,
) -> Next {
    // Bytes already known to hold no end of head: a head trickling in a byte at a time is
    // scanned once, not parsed again from the start on every read.
    let mut scanned: usize = 0;
    loop {
        let blank = buf
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        if blank > 0 {
            buf.advance(blank);
            scanned = 0;
        }
        if buf.len() > HEAD_MAX {
            return Next::HandOver;
        }
        let from = scanned.saturating_sub(3);
        if buf.len() > from && ends_head(&buf[from..]) {
            return Next::Head;
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
    // A request without a body nearly always arrives alone, its empty line last: no scan.
    if bytes.ends_with(b"\n\n") || bytes.ends_with(b"\n\r\n") {
        return true;
    }
    bytes
        .windows(2)
        .enumerate()
        .any(|(i, w)| w == b"\n\n" || w == b"\n\r" && bytes.get(i + 2) == Some(&b'\n'))
}

/// The head at the start of `buf`, if the engine serves it; `None` leaves the request
/// to hyper. httparse checks names and values as `HeaderName` and `HeaderValue` would,
/// so the fields are used where they lie.
fn parse<'h, 'b>(
    buf: &'b [u8],
    fields: &'h mut [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS],
) -> Option<Parsed<'h, 'b>> {
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, fields) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let httparse::Request {
        method,
        path,
        version,
        headers,
    } = req;
    if version != Some(1) {
        return None;
    }
    let mut body_len: Option<usize> = None;
    let mut close = false;
    for h in headers.iter() {
        let is = |name: &str| h.name.eq_ignore_ascii_case(name);
        if is("transfer-encoding") || is("expect") {
            return None;
        }
        if is("content-length") {
            let n = wire::parse_length(h.value).and_then(|n| usize::try_from(n).ok());
            match (n, body_len) {
                (Some(n), None) => body_len = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return None,
            }
        }
        if is("connection") {
            close |= forward::list_has(h.value, b"close");
        }
    }
    let has_length = body_len.is_some();
    let body_len = body_len.unwrap_or(0);
    if body_len > BODY_MAX || buf.len() < head_len + body_len {
        return None;
    }
    Some(Parsed {
        method: Method::from_bytes(method?.as_bytes()).ok()?,
        uri: Uri::try_from(path?).ok()?,
        fields: headers,
        head_len,
        body_len,
        has_length,
        close,
    })
}

/// Gives the connection to hyper, bytes already read first, until it closes or `stop`
/// asks for a graceful close.
async fn hand_over(proxy: Arc<Proxy>, conn: Conn, buf: BytesMut, settings: &Settings) {
    let mut stop = settings.stop.clone();
    let io = TokioIo::new(Rewind {
        read: buf.freeze(),
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
