//! The one connection to the shared cache's server: multiplexed (every request's command
//! shares it), made in the background, dropped when it fails and made again, behind a
//! circuit breaker.
//!
//! tokex opens the TCP or TLS stream itself and hands it to `redis`'s multiplexed
//! connection, so TLS is tokex's own ([`crate::tls`]): the `ring` provider, the trust
//! roots of the `tls` section plus `ca_file`, re-read when those files change. A request
//! waits at most `timeout` for a command, connecting included; a connect that takes
//! longer goes on in the background for the requests that come later.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::{Cmd, RedisConnectionInfo, Value};
use tokio::sync::Notify;

use crate::clock;
use crate::config::model::SharedCacheSettings;
use crate::credentials::Watched;
use crate::credentials::certs::CaBundle;
use crate::metrics::Gauge;
use crate::resilience::Breaker;
use crate::secret::Secret;

/// How long a connection may take to come up, TLS and `AUTH` included, in the background.
const CONNECT_WITHIN: Duration = Duration::from_secs(5);

/// Why a command got no usable answer; the `kind` label of the error counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The breaker is open: the server was not asked.
    Open,
    /// No answer within `timeout`.
    Timeout,
    /// No connection: refused, unreachable, TLS or `AUTH` failed.
    Connect,
    /// The connection broke under the command, or what came back was not Redis.
    Io,
    /// Redis answered with an error, or with an answer of the wrong shape.
    Reply,
}

impl Failure {
    /// The label, one of [`crate::metrics::SharedCacheMetrics`]'s error kinds.
    pub fn kind(self) -> &'static str {
        let [open, timeout, connect, io, reply] = crate::metrics::shared::ERRORS;
        match self {
            Failure::Open => open,
            Failure::Timeout => timeout,
            Failure::Connect => connect,
            Failure::Io => io,
            Failure::Reply => reply,
        }
    }

    /// Whether the failure says the server is unwell (what the breaker counts); an error
    /// reply comes from a server that answers.
    fn transient(self) -> bool {
        matches!(self, Failure::Timeout | Failure::Connect | Failure::Io)
    }
}

/// Where the server is and how to log in.
struct Target {
    host: String,
    port: u16,
    /// `Some` for `rediss://`: the trust roots, `None` inside for the webpki roots alone.
    tls: Option<Option<Watched<CaBundle>>>,
    db: i64,
    username: Option<String>,
    password: Option<Watched<Secret>>,
}

/// A connection and the number it was made under, so only a failure of this one drops it.
struct Current {
    id: u64,
    conn: MultiplexedConnection,
}

pub struct Link {
    target: Target,
    timeout: Duration,
    current: ArcSwapOption<Current>,
    connecting: AtomicBool,
    connected: Notify,
    next_id: AtomicU64,
    breaker: Breaker,
    breaker_open: Gauge,
}

impl Link {
    pub fn new(s: &SharedCacheSettings, breaker_open: Gauge) -> Arc<Self> {
        Arc::new(Self {
            target: Target {
                host: s.host.clone(),
                port: s.port,
                tls: s.tls.then(|| s.ca_file.clone()),
                db: s.db,
                username: s.username.clone(),
                password: s.password.clone(),
            },
            timeout: s.timeout,
            current: ArcSwapOption::empty(),
            connecting: AtomicBool::new(false),
            connected: Notify::new(),
            next_id: AtomicU64::new(0),
            breaker: Breaker::new(s.circuit_breaker),
            breaker_open,
        })
    }

    /// Starts connecting, so the first lookup finds the connection made.
    pub fn warm(self: &Arc<Self>) {
        if tokio::runtime::Handle::try_current().is_ok() {
            self.start_connecting();
        }
    }

    /// Sends `cmd` and reads its answer within `timeout`, connecting first if need be,
    /// unless the breaker is open.
    pub async fn query(self: &Arc<Self>, cmd: &Cmd) -> Result<Value, Failure> {
        let admitted = self
            .breaker
            .admit(clock::now())
            .map_err(|_| Failure::Open)?;
        let result = match tokio::time::timeout(self.timeout, self.send(cmd)).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Timeout),
        };
        let transient = result.as_ref().err().is_some_and(|f| f.transient());
        self.breaker.record(admitted, transient, clock::now());
        self.breaker_open.set(i64::from(self.breaker.tripped()));
        result
    }

    async fn send(self: &Arc<Self>, cmd: &Cmd) -> Result<Value, Failure> {
        let current = self.connection().await?;
        let mut conn = current.conn.clone();
        // Dropped on the way out unless the answer came: a timed-out command leaves the
        // connection with a backlog behind a server that does not answer.
        let guard = DropOnFailure {
            link: self,
            id: current.id,
            armed: true,
        };
        let answer = conn.send_packed_command(cmd).await;
        let result = match answer {
            Ok(value) => value.extract_error().map_err(|e| classify(&e)),
            Err(e) => Err(classify(&e)),
        };
        let mut guard = guard;
        guard.armed = matches!(result, Err(f) if f.transient());
        result
    }

    /// The connection, waiting for one being made (the caller's timeout bounds the wait).
    async fn connection(self: &Arc<Self>) -> Result<Arc<Current>, Failure> {
        if let Some(current) = self.current.load_full() {
            return Ok(current);
        }
        let notified = self.connected.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(current) = self.current.load_full() {
            return Ok(current);
        }
        self.start_connecting();
        notified.await;
        self.current.load_full().ok_or(Failure::Connect)
    }

    fn start_connecting(self: &Arc<Self>) {
        if self.connecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let link = self.clone();
        tokio::spawn(async move {
            let id = link.next_id.fetch_add(1, Ordering::Relaxed);
            match tokio::time::timeout(CONNECT_WITHIN, link.connect(id)).await {
                Ok(Ok(conn)) => link.current.store(Some(Arc::new(Current { id, conn }))),
                Ok(Err(e)) => {
                    tracing::debug!(host = %link.target.host, port = link.target.port, error = %e, "shared cache: cannot connect");
                }
                Err(_) => {
                    tracing::debug!(host = %link.target.host, port = link.target.port, "shared cache: connecting timed out");
                }
            }
            link.connecting.store(false, Ordering::Release);
            link.connected.notify_waiters();
        });
    }

    /// Opens the stream, logs in and selects the database; the connection's driver runs
    /// as its own task, which forgets the connection when it ends.
    async fn connect(self: &Arc<Self>, id: u64) -> Result<MultiplexedConnection, String> {
        let t = &self.target;
        let tcp = tokio::net::TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &t.tls {
            None => self.handshake(id, tcp).await,
            Some(ca) => {
                let bundle = ca.as_ref().map(Watched::current);
                let tls = crate::tls::client_config(bundle.as_deref(), None, &[])
                    .map_err(|e| format!("TLS config: {e}"))?;
                let name = rustls_pki_types::ServerName::try_from(t.host.clone())
                    .map_err(|e| format!("server name: {e}"))?;
                let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                self.handshake(id, stream).await
            }
        }
    }

    /// Logs in on `stream` and starts the connection's driver.
    async fn handshake<S>(
        self: &Arc<Self>,
        id: u64,
        stream: S,
    ) -> Result<MultiplexedConnection, String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let config = redis::AsyncConnectionConfig::new();
        let (conn, driver) = MultiplexedConnection::new_with_config(&self.login(), stream, config)
            .await
            .map_err(|e| format!("login: {e}"))?;
        let link = Arc::downgrade(self);
        tokio::spawn(async move {
            driver.await;
            forget(&link, id);
        });
        Ok(conn)
    }

    /// The database, user name and current password, with no client-name handshake
    /// (older servers refuse it).
    fn login(&self) -> RedisConnectionInfo {
        let t = &self.target;
        let mut info = RedisConnectionInfo::default()
            .set_db(t.db)
            .set_skip_set_lib_name();
        if let Some(user) = &t.username {
            info = info.set_username(user);
        }
        if let Some(password) = &t.password {
            info = info.set_password(password.current().expose());
        }
        info
    }
}

/// Drops connection `id` unless disarmed: a failed command's, or one whose caller gave up.
struct DropOnFailure<'a> {
    link: &'a Arc<Link>,
    id: u64,
    armed: bool,
}

impl Drop for DropOnFailure<'_> {
    fn drop(&mut self) {
        if self.armed {
            forget(&Arc::downgrade(self.link), self.id);
        }
    }
}

/// Forgets connection `id`, if it is still the current one; the next command connects.
fn forget(link: &Weak<Link>, id: u64) {
    if let Some(link) = link.upgrade() {
        link.current.rcu(|current| match current {
            Some(c) if c.id == id => None,
            other => other.clone(),
        });
    }
}

fn classify(e: &redis::RedisError) -> Failure {
    if e.is_timeout() {
        Failure::Timeout
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
        Failure::Io
    } else {
        Failure::Reply
    }
}
