//! Streams that stall: `timeouts.body_idle` in both directions.
//!
//! A body stalls when its sender stops sending ([`IdleBody`] times the wait for its next
//! frame) or when its receiver stops reading ([`WriteStall`] times a write the socket
//! does not take). Either ends the exchange between the app and the upstream: the error
//! goes to hyper, which closes the connection it cannot finish, and the other side's
//! body is dropped with it. Each stall is counted by direction.
//!
//! Timers are armed only while something waits, so a body that arrives whole or a
//! socket that takes every write costs no timer at all.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::clock;

/// A body or write that made no progress for `timeouts.body_idle`.
#[derive(Debug, thiserror::Error)]
#[error("no progress for {0:?}: the stream stalled")]
pub struct Stalled(pub Duration);

/// Polls `fut` until it is ready or `limit` passes (`None`). The future stays pinned
/// where its caller put it: wrapping a large future by value (as
/// `tokio::time::timeout` does) would copy it, and the hot path's futures are large.
pub async fn within<F: Future>(limit: Duration, fut: Pin<&mut F>) -> Option<F::Output> {
    let sleep = std::pin::pin!(tokio::time::sleep(limit));
    within_on(sleep, limit, fut).await
}

/// [`within`] on a timer the caller keeps: moving a registered timer's deadline later
/// costs next to nothing, registering a new one for each request does not.
pub async fn within_on<F: Future>(
    mut sleep: Pin<&mut Sleep>,
    limit: Duration,
    mut fut: Pin<&mut F>,
) -> Option<F::Output> {
    sleep.as_mut().reset(clock::now() + limit);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        sleep.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// Which party stopped a request's exchange, read from the error it ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// The app stopped sending its request body.
    AppSending,
    /// The upstream stopped reading the request body.
    UpstreamReading,
}

/// Whether `e` (or a cause of it) is a stall, and whose.
pub fn stall_of(e: &(dyn std::error::Error + 'static)) -> Option<Stall> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            // `io::Error::source` skips the error it wraps; `get_ref` does not.
            if io.get_ref().is_some_and(|inner| inner.is::<Stalled>()) {
                return Some(Stall::UpstreamReading);
            }
        }
        if err.is::<Stalled>() {
            return Some(Stall::AppSending);
        }
        next = err.source();
    }
    None
}

/// The limit and the counter a stall is recorded in.
#[derive(Clone)]
pub struct Watch {
    pub limit: Duration,
    pub stalls: Counter,
}

/// The clock of one stream: started when a wait begins, cleared by progress.
struct Timer {
    watch: Watch,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl Timer {
    fn new(watch: Watch) -> Self {
        Self {
            watch,
            sleep: None,
            armed: false,
        }
    }

    fn progress(&mut self) {
        self.armed = false;
    }

    /// Called when the stream has to wait: whether it has waited too long.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = clock::now() + self.watch.limit;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            sleep.as_mut().reset(deadline);
            self.armed = true;
        }
        if sleep.as_mut().poll(cx).is_ready() {
            self.watch.stalls.inc();
            self.armed = false;
            return true;
        }
        false
    }
}

/// A body whose sender must send its next frame within the limit.
pub struct IdleBody<B> {
    inner: B,
    timer: Timer,
}

impl<B> IdleBody<B> {
    pub fn new(inner: B, watch: Watch) -> Self {
        Self {
            inner,
            timer: Timer::new(watch),
        }
    }

    pub fn inner(&self) -> &B {
        &self.inner
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer.progress();
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending if this.timer.expired(cx) => {
                Poll::Ready(Some(Err(Box::new(Stalled(this.timer.watch.limit)))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection whose peer must take written bytes within the limit.
pub struct WriteStall<T> {
    inner: T,
    timer: Timer,
}

impl<T> WriteStall<T> {
    pub fn new(inner: T, watch: Watch) -> Self {
        Self {
            inner,
            timer: Timer::new(watch),
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    fn guard<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match poll {
            Poll::Ready(r) => {
                self.timer.progress();
                Poll::Ready(r)
            }
            Poll::Pending if self.timer.expired(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                Stalled(self.timer.watch.limit),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteStall<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteStall<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.guard(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.guard(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.guard(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = ready!(Pin::new(&mut self.inner).poll_shutdown(cx));
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn watch() -> Watch {
        Watch {
            limit: Duration::from_secs(60),
            stalls: Counter::default(),
        }
    }

    /// Frames from a channel; the channel's end is the body's end.
    struct Channel(tokio::sync::mpsc::Receiver<Bytes>);

    impl Body for Channel {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
        }
    }

    /// A sender that pauses for less than the limit between frames is fine; one that
    /// pauses for the limit gets a stall error, counted once.
    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_sending_stalls() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let watch = watch();
        let stalls = watch.stalls.clone();
        let mut body = IdleBody::new(Channel(rx), watch);
        let sender = tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(59)).await;
                tx.send(Bytes::from_static(b"x")).await.unwrap();
            }
            // Holds the channel open, sending nothing more.
            std::future::pending::<()>().await;
        });
        for _ in 0..3 {
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), "x");
        }
        assert_eq!(stalls.get(), 0);
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.downcast_ref::<Stalled>().is_some(), "{err}");
        assert_eq!(stalls.get(), 1);
        sender.abort();
    }

    /// A write the peer never takes fails with `TimedOut` after the limit.
    #[tokio::test(start_paused = true)]
    async fn a_write_that_is_never_taken_stalls() {
        use tokio::io::AsyncWriteExt;
        let (a, _b) = tokio::io::duplex(16);
        let watch = watch();
        let stalls = watch.stalls.clone();
        let mut a = WriteStall::new(a, watch);
        let err = a.write_all(&[0; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(stalls.get(), 1);
    }
}
