//! Unmatched HTTP on a redirected connection under `unmatched: passthrough`: sent on to
//! where the app was sending it, as the app wrote it. No token work at all; the app's
//! `Authorization` is its own business, since no route asked tokex to touch it.
//!
//! Each request gets its own upstream connection: this is the path for traffic tokex
//! does not care about, kept simple rather than fast.

use crate::clock::Instant;
use std::net::SocketAddr;

use http::{Request, Response, StatusCode, Version};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::{Proxy, Runtime};
use crate::config::model::Unmatched;
use crate::error::{Code, ProxyError};
use crate::forward::{self, Body, upgrade};
use crate::idle::IdleBody;

impl Runtime {
    pub(super) fn passes_unmatched(&self) -> bool {
        self.config
            .transparent
            .as_ref()
            .is_some_and(|t| t.unmatched == Unmatched::Passthrough)
    }
}

impl Proxy {
    pub(super) async fn pass_through(
        &self,
        runtime: &Runtime,
        req: Request<Incoming>,
        destination: SocketAddr,
        started: Instant,
    ) -> Response<Body> {
        let method = req.method().clone();
        let result = send(runtime, req, destination).await;
        self.report(
            None,
            &method,
            result.as_ref().map(|r| r.status().as_u16()),
            started,
        );
        result.unwrap_or_else(|e| e.to_response().map(Either::Right))
    }
}

async fn send(
    runtime: &Runtime,
    mut req: Request<Incoming>,
    destination: SocketAddr,
) -> Result<Response<Body>, ProxyError> {
    let timeouts = &runtime.config.timeouts;
    let unavailable = |e: &dyn std::fmt::Display| {
        ProxyError::new(
            Code::UpstreamUnavailable,
            "the original destination could not be reached",
        )
        .because(format!("{destination}: {e}"))
    };
    let stream = tokio::time::timeout(timeouts.upstream_connect, TcpStream::connect(destination))
        .await
        .map_err(|_| {
            ProxyError::new(
                Code::UpstreamTimeout,
                "the original destination did not accept the connection in time",
            )
        })?
        .map_err(|e| unavailable(&e))?;
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(stream);
    let switch = upgrade::requested(&req).is_some();
    let app_side = switch.then(|| hyper::upgrade::on(&mut req));
    let req = req.map(|b| IdleBody::new(b, runtime.to_upstream.clone()));
    let response = if req.version() == Version::HTTP_2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| unavailable(&e))?;
        tokio::spawn(conn);
        sender.send_request(req).await
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| unavailable(&e))?;
        tokio::spawn(conn.with_upgrades());
        sender.send_request(req).await
    };
    let mut response = response.map_err(|e| unavailable(&e))?;
    if let Some(app_side) = app_side
        && response.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        upgrade::tunnel(app_side, hyper::upgrade::on(&mut response));
    }
    let to_app = runtime.to_app.clone();
    Ok(response.map(|b| Either::Left(forward::passed_on(b, to_app))))
}
