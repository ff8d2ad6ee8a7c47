//! The tokex binary in a subprocess, with its stderr collected.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Sidecar;

/// A `tokex` process with its stderr collected.
pub struct Spawned {
    pub child: tokio::process::Child,
    /// The first stderr line containing the ready marker.
    pub ready: String,
    log: Arc<Mutex<String>>,
    /// The thread collecting stderr; it ends when the process closes it.
    reader: Option<std::thread::JoinHandle<()>>,
}

/// Runs `tokex args...` with `env` and waits (20 s at most) for a stderr line containing
/// `ready`. The trust-root variables of the machine running the tests are not passed on
/// (only those in `env`), so what tokex trusts does not depend on it.
pub async fn spawn_tokex<S: AsRef<std::ffi::OsStr>>(
    args: &[S],
    env: &[(&str, &str)],
    ready: &str,
) -> Spawned {
    use std::io::BufRead;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tokex"))
        .args(args)
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap().into_owned_fd().unwrap();
    let log: Arc<Mutex<String>> = Arc::default();
    let (l, (tx, rx), marker) = (
        log.clone(),
        std::sync::mpsc::channel::<String>(),
        ready.to_string(),
    );
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(std::fs::File::from(stderr))
            .lines()
            .map_while(Result::ok)
        {
            if line.contains(&marker) {
                let _ = tx.send(line.clone());
            }
            l.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let ready =
        tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)).unwrap())
            .await
            .unwrap();
    Spawned {
        child,
        ready,
        log,
        reader: Some(reader),
    }
}

impl Spawned {
    /// The address after `listen=` on the ready line.
    pub fn listen(&self) -> String {
        self.field("listen")
    }

    /// The value after `name=` on the ready line.
    pub fn field(&self, name: &str) -> String {
        let after = self
            .ready
            .split(&format!("{name}="))
            .nth(1)
            .unwrap_or_else(|| panic!("no {name}= in {}", self.ready));
        after.split_whitespace().next().unwrap().to_string()
    }

    /// Everything written to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits up to 20 s for the exit and for the rest of its stderr,
    /// so [`Spawned::log`] is complete afterwards.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().unwrap().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .unwrap()
            .unwrap();
        if let Some(reader) = self.reader.take() {
            tokio::task::spawn_blocking(move || reader.join().unwrap())
                .await
                .unwrap();
        }
        status
    }
}

/// `tokex run` as a process of its own, on ephemeral ports, with its config in a temp dir:
/// what a replica of a workload is.
pub struct TokexProcess {
    /// Dropping it kills the process.
    pub process: Spawned,
    addr: SocketAddr,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl TokexProcess {
    /// Starts `tokex run` on `yaml` (without `listen`/`admin`, which are added) and waits
    /// until it listens.
    pub async fn start(yaml: &str) -> Self {
        Self::start_with(yaml, &[("RUST_LOG", "info")]).await
    }

    /// [`TokexProcess::start`] with the environment `env`.
    pub async fn start_with(yaml: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokex.yaml");
        std::fs::write(
            &path,
            format!("listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n{yaml}"),
        )
        .unwrap();
        let args = [std::ffi::OsStr::new("run"), "-c".as_ref(), path.as_os_str()];
        let process = spawn_tokex(&args, env, "listening").await;
        let addr = process.listen().parse().unwrap();
        let admin = process.field("admin").parse().unwrap();
        Self {
            process,
            addr,
            admin,
            _dir: dir,
        }
    }
}

impl Sidecar for TokexProcess {
    fn proxy_addr(&self) -> SocketAddr {
        self.addr
    }
    fn admin_addr(&self) -> SocketAddr {
        self.admin
    }
}
