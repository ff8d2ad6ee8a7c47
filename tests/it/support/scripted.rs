//! A scripted raw upstream, for faults a well-behaved server never commits.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::{Task, read_message_teed};

/// What the scripted upstream does with one request.
pub enum Act {
    /// Write these pieces (a short pause between them), keep the connection.
    Reply(Vec<&'static [u8]>),
    /// Write the reply, then close.
    ReplyClose(&'static [u8]),
    /// Close without answering.
    Drop,
}

/// One request as the scripted upstream parsed it.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub connection: usize,
    pub head: String,
    pub body: Vec<u8>,
}

/// A raw upstream answering by `script(path, connection number, request number on
/// it)`, recording every byte it received and every request it parsed.
pub struct Scripted {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    parsed: Arc<Mutex<Vec<Parsed>>>,
    raw: Arc<Mutex<Vec<u8>>>,
    _task: Task,
}

type Script = fn(&str, usize, usize) -> Act;

impl Scripted {
    pub async fn start(script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let parsed: Arc<Mutex<Vec<Parsed>>> = Arc::default();
        let raw: Arc<Mutex<Vec<u8>>> = Arc::default();
        let (c, p, r) = (connections.clone(), parsed.clone(), raw.clone());
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let _ = stream.set_nodelay(true);
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(scripted_conn(stream, n, script, p.clone(), r.clone()));
            }
        });
        Self {
            addr,
            connections,
            parsed,
            raw,
            _task: Task(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The request heads it parsed, in order.
    pub fn heads(&self) -> Vec<String> {
        self.parsed().into_iter().map(|p| p.head).collect()
    }

    pub fn parsed(&self) -> Vec<Parsed> {
        self.parsed.lock().unwrap().clone()
    }

    /// Every byte it received, on all connections.
    pub fn raw(&self) -> String {
        String::from_utf8_lossy(&self.raw.lock().unwrap()).to_string()
    }
}

async fn scripted_conn(
    mut s: TcpStream,
    connection: usize,
    script: Script,
    parsed: Arc<Mutex<Vec<Parsed>>>,
    raw: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = Vec::new();
    for nth in 1.. {
        let Some((head, body)) = read_message_teed(&mut s, &mut buf, Some(&raw)).await else {
            return;
        };
        let path = head.split(' ').nth(1).unwrap_or("").to_string();
        parsed.lock().unwrap().push(Parsed {
            connection,
            head,
            body,
        });
        match script(&path, connection, nth) {
            Act::Reply(pieces) => {
                for piece in pieces {
                    if s.write_all(piece).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Act::ReplyClose(reply) => {
                let _ = s.write_all(reply).await;
                return;
            }
            Act::Drop => return,
        }
    }
}
