//! Opening a connection to an upstream: TCP, TLS by rustls for `https` (the platform's
//! roots plus the route's `ca_file`; certificate and host name always verified), then
//! HTTP/2 when the upstream picks it by ALPN and HTTP/1.1 otherwise. One task per
//! connection drives hyper's client for it.

use std::sync::Arc;
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::UpstreamBody;
use crate::credentials::certs::CaBundle;
use crate::error::{Code, ProxyError};
use crate::idle::{Watch, WriteStall};

/// A new connection, in the protocol the upstream chose.
pub enum Connected {
    Http1(http1::SendRequest<UpstreamBody>),
    Http2(http2::SendRequest<UpstreamBody>),
}

/// The TLS client configs of one trust generation: one offering h2 and http/1.1, and
/// one offering http/1.1 alone for upgrades, which HTTP/2 does not carry.
pub struct Tls {
    pub generation: u64,
    any: Arc<rustls::ClientConfig>,
    http1: Arc<rustls::ClientConfig>,
}

impl Tls {
    pub fn new(generation: u64, ca: Option<&CaBundle>) -> Result<Self, rustls::Error> {
        let any = crate::tls::client_config(ca, None, &[b"h2", b"http/1.1"])?;
        let http1 = crate::tls::client_config(ca, None, &[b"http/1.1"])?;
        Ok(Self {
            generation,
            any: Arc::new(any),
            http1: Arc::new(http1),
        })
    }
}

/// Where and how to connect.
pub struct Target {
    pub host: String,
    pub port: u16,
    /// `Some` for `https`: the name the certificate must carry.
    pub server_name: Option<ServerName<'static>>,
    pub timeout: Duration,
    pub watch: Watch,
}

fn unavailable(why: impl Into<Box<str>>) -> ProxyError {
    ProxyError::new(
        Code::UpstreamUnavailable,
        "the upstream refused, reset or failed TLS",
    )
    .because(why)
}

impl Target {
    /// Connects within the connect timeout; `http1_only` offers no HTTP/2 by ALPN.
    pub async fn connect(&self, tls: &Tls, http1_only: bool) -> Result<Connected, ProxyError> {
        tokio::time::timeout(self.timeout, self.open(tls, http1_only))
            .await
            .unwrap_or_else(|_| {
                Err(unavailable(format!(
                    "connecting to {}:{}: no connection within {:?}",
                    self.host, self.port, self.timeout
                )))
            })
    }

    /// The failure of one step of connecting, with its cause chain.
    fn failed(&self, step: &str, e: &(dyn std::error::Error + 'static)) -> ProxyError {
        unavailable(format!(
            "{step} {}:{}: {}",
            self.host,
            self.port,
            crate::error::cause::describe(e)
        ))
    }

    async fn open(&self, tls: &Tls, http1_only: bool) -> Result<Connected, ProxyError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| self.failed("connecting to", &e))?;
        let _ = tcp.set_nodelay(true);
        let io = WriteStall::new(tcp, self.watch.clone());
        let Some(name) = &self.server_name else {
            return http1_over(io).await;
        };
        let config = if http1_only { &tls.http1 } else { &tls.any };
        let stream = TlsConnector::from(config.clone())
            .connect(name.clone(), io)
            .await
            .map_err(|e| self.failed("TLS handshake with", &e))?;
        if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(TokioIo::new(stream))
                .await
                .map_err(|e| self.failed("HTTP/2 handshake with", &e))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
                }
            });
            return Ok(Connected::Http2(sender));
        }
        http1_over(stream).await
    }
}

async fn http1_over<T>(io: T) -> Result<Connected, ProxyError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| unavailable(crate::error::cause::describe(&e)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream HTTP/1.1 connection ended");
        }
    });
    Ok(Connected::Http1(sender))
}
