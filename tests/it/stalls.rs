//! `timeouts.body_idle`: a body that stops moving, in either direction and on either
//! side, ends both connections and is counted. Time is paused: the idle limit passes
//! as soon as every socket waits, so nothing here waits for the wall clock.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// An upstream that reads a request head, then does what `act` says on the raw socket.
async fn raw_upstream<F, Fut>(act: F) -> (String, Task)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let act = std::sync::Arc::new(act);
    let task = tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let act = act.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                act(s).await;
            });
        }
    });
    (url, Task(task))
}

async fn tokex_to(url: &str) -> (MockAs, Tokex) {
    let as_ = MockAs::start().await;
    let yaml = format!(
        "{}timeouts: {{ body_idle: 2s }}\n",
        config(&as_, url).replace(
            "    timeout: 1s\n    exchange",
            "    timeout: 1h\n    exchange"
        )
    );
    let tokex = Tokex::start(&yaml).await;
    (as_, tokex)
}

fn stalls(metrics: &str, direction: &str) -> u64 {
    let series = format!("tokex_body_stalls_total{{direction=\"{direction}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.parse().unwrap())
}

const GET: &str =
    "GET / HTTP/1.1\r\nHost: echo.internal\r\nAuthorization: Bearer app-token\r\n\r\n";

/// An upstream that sends half its body and stops: after the idle limit the app's
/// connection ends without the rest, and the stall is counted toward the app.
#[tokio::test(start_paused = true)]
async fn an_upstream_that_stops_sending_ends_the_exchange() {
    let (url, _up) = raw_upstream(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
            .await;
        std::future::pending::<()>().await;
    })
    .await;
    let (_as, tokex) = tokex_to(&url).await;
    let mut app = App::connect(&tokex).await;
    app.send(GET).await;
    let text = app.read_to_close().await;
    assert!(
        text.starts_with("HTTP/1.1 200 OK") && text.ends_with("hello"),
        "{text}"
    );
    assert_eq!(stalls(&tokex.metrics().await, "to_app"), 1);
}

/// An app that sends half its request body and stops: after the idle limit its
/// connection is closed without an answer (it is not reading one), the upstream's
/// connection with it, and the stall is counted toward the upstream.
#[tokio::test(start_paused = true)]
async fn an_app_that_stops_sending_loses_its_connection() {
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<usize>();
    let closed_tx = std::sync::Mutex::new(Some(closed_tx));
    let (url, _up) = raw_upstream(move |mut s| {
        let tx = closed_tx.lock().unwrap().take();
        async move {
            // Reads what arrives until tokex closes this connection.
            let mut body = Vec::new();
            let _ = s.read_to_end(&mut body).await;
            if let Some(tx) = tx {
                let _ = tx.send(body.len());
            }
        }
    })
    .await;
    let (_as, tokex) = tokex_to(&url).await;
    let mut app = App::connect(&tokex).await;
    app.send("POST / HTTP/1.1\r\nHost: echo.internal\r\nAuthorization: Bearer app-token\r\nContent-Length: 10\r\n\r\nhello")
        .await;
    let text = app.read_to_close().await;
    assert_eq!(text, "", "no answer to an app that is not reading one");
    assert_eq!(
        closed_rx.await.unwrap(),
        5,
        "the upstream got the start, then a close"
    );
    assert_eq!(stalls(&tokex.metrics().await, "to_upstream"), 1);
}

/// An app that stops reading a large response: once the sockets' buffers are full,
/// tokex's write waits; after the idle limit both connections end, counted toward
/// the app.
#[tokio::test(start_paused = true)]
async fn an_app_that_stops_reading_loses_its_connection() {
    let (url, _up) = raw_upstream(|mut s| async move {
        let len = 256 << 20;
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
        if s.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..256 {
            if s.write_all(&chunk).await.is_err() {
                return; // tokex closed the connection
            }
        }
    })
    .await;
    let (_as, tokex) = tokex_to(&url).await;
    let mut app = TcpStream::connect(tokex.addr).await.unwrap();
    app.write_all(GET.as_bytes()).await.unwrap();
    // Not reading while the clock passes the limit (paused time: at once).
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(stalls(&tokex.metrics().await, "to_app"), 1);
    let mut sink = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), app.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "tokex closed the app's connection");
    assert!(sink.len() < 256 << 20, "the body was cut short");
}

/// An upstream that stops reading the request body: tokex's write to it waits; after
/// the idle limit the app gets 504 `upstream_timeout`, counted toward the upstream.
#[tokio::test(start_paused = true)]
async fn an_upstream_that_stops_reading_times_out() {
    let (url, _up) = raw_upstream(|s| async move {
        let _held_open = s;
        std::future::pending::<()>().await;
    })
    .await;
    let (_as, tokex) = tokex_to(&url).await;
    let len = 64 << 20;
    let mut app = TcpStream::connect(tokex.addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: echo.internal\r\nAuthorization: Bearer app-token\r\nContent-Length: {len}\r\n\r\n"
    );
    app.write_all(head.as_bytes()).await.unwrap();
    let (mut read, mut write) = app.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..64 {
            if write.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut text = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), read.read_to_end(&mut text)).await;
    let text = String::from_utf8_lossy(&text);
    assert!(text.starts_with("HTTP/1.1 504 "), "{text}");
    assert!(text.contains("tokex-error: upstream_timeout"), "{text}");
    assert_eq!(stalls(&tokex.metrics().await, "to_upstream"), 1);
    writer.abort();
}
