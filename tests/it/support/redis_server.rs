//! A real `redis-server` (Debian's package; scripts/test.sh installs it) on a loopback port,
//! started for one test and stopped with it, and a client to look inside it.
//!
//! Redis cannot be told to pick its own port, so one is taken from the kernel by binding
//! port 0 and let go; should another process take it first, the server exits and the
//! start is tried again on another. The server runs under `setpriv --pdeathsig KILL`, so
//! it also ends if the test's thread dies without dropping it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::aio::MultiplexedConnection;

/// One `redis-server`, persistence off, killed on drop.
pub struct Redis {
    pub port: u16,
    /// `rediss://` for a server that speaks TLS only.
    tls: bool,
    /// What `AUTH` takes, when the server asks for it.
    password: Option<String>,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// A plain server on `127.0.0.1`.
    pub async fn start() -> Self {
        Self::start_with(&[], false, None).await
    }

    /// A plain server that answers only clients that log in with `password`.
    pub async fn start_requiring(password: &str) -> Self {
        let args = ["--requirepass".to_string(), password.to_string()];
        Self::start_with(&args, false, Some(password)).await
    }

    /// A TLS-only server for `localhost`, its certificate from the CA whose PEM is
    /// returned.
    pub async fn start_tls() -> (Self, String) {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, ca) = super::localhost_cert();
        for (name, pem) in [("cert.pem", &cert), ("key.pem", &key)] {
            std::fs::write(dir.path().join(name), pem).unwrap();
        }
        let path = |n: &str| dir.path().join(n).display().to_string();
        let args = [
            "--tls-cert-file".to_string(),
            path("cert.pem"),
            "--tls-key-file".into(),
            path("key.pem"),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        let redis = Self::start_with(&args, true, None).await;
        drop(dir);
        (redis, ca)
    }

    async fn start_with(extra: &[String], tls: bool, password: Option<&str>) -> Self {
        for _ in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let mut cmd = Command::new("setpriv");
            cmd.args(["--pdeathsig", "KILL", "redis-server"]);
            match tls {
                true => cmd.args(["--port", "0", "--tls-port", &port.to_string()]),
                false => cmd.args(["--port", &port.to_string()]),
            };
            cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--loglevel", "warning", "--dir"])
                .arg(dir.path())
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let child = cmd
                .spawn()
                .expect("redis-server (Debian package redis-server) must be installed");
            let mut redis = Redis {
                port,
                tls,
                password: password.map(String::from),
                child,
                _dir: dir,
            };
            if redis.ready().await {
                return redis;
            }
        }
        panic!("redis-server did not start on any of 10 ports");
    }

    /// Waits (10 s at most) until the server answers PING; `false` if it exited first.
    async fn ready(&mut self) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            if !self.tls && self.try_connect().await.is_some() {
                return true;
            }
            if self.tls
                && tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .is_ok()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("redis-server on {} did not answer within 10 s", self.port);
    }

    async fn try_connect(&self) -> Option<MultiplexedConnection> {
        let login = self
            .password
            .as_ref()
            .map_or(String::new(), |p| format!(":{p}@"));
        let url = format!("redis://{login}127.0.0.1:{}/", self.port);
        let client = redis::Client::open(url).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        let pong: String = redis::cmd("PING").query_async(&mut conn).await.ok()?;
        (pong == "PONG").then_some(conn)
    }

    /// The URL tokex is configured with.
    pub fn url(&self) -> String {
        match self.tls {
            true => format!("rediss://localhost:{}/0", self.port),
            false => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// A connection for the test to look inside the server (plain servers only).
    pub async fn client(&self) -> MultiplexedConnection {
        self.try_connect().await.expect("redis answers")
    }

    /// Every key and its value.
    pub async fn dump(&self) -> Vec<(String, Vec<u8>)> {
        let mut conn = self.client().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut out = Vec::new();
        for key in keys {
            let value: Option<Vec<u8>> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            if let Some(v) = value {
                out.push((key, v));
            }
        }
        out
    }

    /// Sends `signal` (`STOP`, `CONT`, `KILL`) to the server.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Kills the server and waits for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // A stopped server takes SIGKILL all the same.
        self.kill();
    }
}

/// A port the kernel just handed out and took back.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A key file of fresh random keys for `cache.shared.key_file`, in `dir`.
pub fn key_file(dir: &Path, keys: &[[u8; 32]]) -> std::path::PathBuf {
    use base64::Engine;
    let text: Vec<String> = keys
        .iter()
        .map(|k| base64::engine::general_purpose::STANDARD.encode(k))
        .collect();
    let path = dir.join("cache-key");
    std::fs::write(&path, text.join("\n") + "\n").unwrap();
    path
}
