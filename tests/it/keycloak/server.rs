//! The Keycloak process: one per test binary, shared by every Keycloak test.
//!
//! Keycloak takes tens of seconds to start, so the first test to ask starts it and the
//! others wait for it; tests take turns through a lock, shared for the ordinary tests
//! and exclusive for the one that restarts it. It runs `kc.sh start --optimized` (the
//! production start, built once by scripts/keycloak.sh) on loopback ports it picks
//! itself, plain HTTP and HTTPS with optional client certificates, with an H2 file
//! database in a temporary directory (so a restart keeps realm keys and user sessions,
//! as a production restart does) and the realm imported from
//! tests/interop/keycloak-realm.json.
//!
//! The process is started from a thread that lives as long as the test binary, under
//! `setpriv --pdeathsig TERM`: when the binary exits, however it exits, the kernel sends
//! `kc.sh` SIGTERM, which it passes on to Keycloak.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{OnceCell, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::support::*;

/// The realm the tests use.
pub const REALM: &str = "tokex";
/// Where the realm file is.
const REALM_FILE: &str = "tests/interop/keycloak-realm.json";
/// How long a start may take: Keycloak needs 30 to 130 s on two busy cores.
const START_WITHIN: Duration = Duration::from_secs(420);
/// Log lines kept per process, shown when a start fails.
const LOG_LINES: usize = 300;

static SERVER: OnceCell<Server> = OnceCell::const_new();
static TURNS: RwLock<()> = RwLock::const_new(());

/// The shared Keycloak, for a test that uses it alongside others.
pub async fn shared() -> Turn<RwLockReadGuard<'static, ()>> {
    let turn = TURNS.read().await;
    Turn {
        _turn: turn,
        server: server().await,
    }
}

/// The shared Keycloak, for a test that must have it to itself (it restarts it).
pub async fn exclusive() -> Turn<RwLockWriteGuard<'static, ()>> {
    let turn = TURNS.write().await;
    Turn {
        _turn: turn,
        server: server().await,
    }
}

async fn server() -> &'static Server {
    let server = SERVER.get_or_init(Server::start).await;
    assert!(
        server.running(),
        "Keycloak is not running (a test that restarted it failed)"
    );
    server
}

/// Access to the server for as long as the turn is held.
pub struct Turn<G> {
    _turn: G,
    server: &'static Server,
}

impl<G> Deref for Turn<G> {
    type Target = Server;
    fn deref(&self) -> &Server {
        self.server
    }
}

/// A Keycloak with the test realm, on fixed ports once started.
pub struct Server {
    home: PathBuf,
    dir: tempfile::TempDir,
    pub http_port: u16,
    pub https_port: u16,
    /// PEM of the CA that signed Keycloak's HTTPS certificate and tokex's client certificate.
    pub ca_pem: String,
    process: Mutex<Option<Child>>,
}

impl Server {
    async fn start() -> Server {
        let started = Instant::now();
        let home = home();
        let dir = tempfile::tempdir().unwrap();
        let ca_pem = write_pki(dir.path());
        let import = home.join("data/import");
        std::fs::create_dir_all(&import).unwrap();
        let staged = import.join(".tokex-realm.json.tmp");
        std::fs::copy(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(REALM_FILE),
            &staged,
        )
        .unwrap();
        std::fs::rename(&staged, import.join("tokex-realm.json")).unwrap();
        let mut server = Server {
            home,
            dir,
            http_port: 0,
            https_port: 0,
            ca_pem,
            process: Mutex::new(None),
        };
        let (http, https) = server.launch().await;
        (server.http_port, server.https_port) = (http, https);
        eprintln!(
            "Keycloak started in {:.1} s on ports {http} and {https}",
            started.elapsed().as_secs_f64()
        );
        server
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The realm's issuer over plain HTTP: `http://127.0.0.1:PORT/realms/tokex`.
    pub fn issuer(&self) -> String {
        format!("{}/realms/{REALM}", self.base())
    }

    /// The realm's issuer over HTTPS (Keycloak names itself after the request's origin).
    pub fn https_issuer(&self) -> String {
        format!("https://127.0.0.1:{}/realms/{REALM}", self.https_port)
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/protocol/openid-connect/token", self.issuer())
    }

    /// A file in the server's temporary directory (the TLS material).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn running(&self) -> bool {
        let mut process = self.process.lock().unwrap();
        process
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Stops Keycloak (SIGTERM, as an orchestrator would) and waits until it has exited.
    pub async fn stop(&self) {
        let child = self.process.lock().unwrap().take();
        let Some(mut child) = child else { return };
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM kc.sh");
        tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap();
    }

    /// Starts Keycloak again on the same ports, with the same database.
    pub async fn restart(&self) {
        let started = Instant::now();
        let ports = self.launch().await;
        assert_eq!(ports, (self.http_port, self.https_port), "same ports");
        eprintln!(
            "Keycloak restarted in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    /// Runs `kc.sh start` and waits until the realm's discovery document is served;
    /// returns the HTTP and HTTPS ports.
    async fn launch(&self) -> (u16, u16) {
        let d = self.dir.path();
        let mut cmd = Command::new("setpriv");
        cmd.args(["--pdeathsig", "TERM", "--"])
            .arg(self.home.join("bin/kc.sh"))
            .args(["start", "--optimized", "--http-enabled=true"])
            .args([
                "--http-host=127.0.0.1",
                "--hostname-strict=false",
                "--cache=local",
            ])
            .arg(format!("--http-port={}", self.http_port))
            .arg(format!("--https-port={}", self.https_port))
            .arg(format!(
                "--https-certificate-file={}",
                d.join("server.pem").display()
            ))
            .arg(format!(
                "--https-certificate-key-file={}",
                d.join("server.key").display()
            ))
            .arg(format!(
                "--https-trust-store-file={}",
                d.join("ca.pem").display()
            ))
            .arg(format!(
                "--db-url=jdbc:h2:file:{};NON_KEYWORDS=VALUE",
                d.join("db/keycloak").display()
            ))
            .arg("--import-realm")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn(cmd);
        let log: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let (ports_tx, ports_rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        collect(out, log.clone(), Some(ports_tx));
        collect(err, log.clone(), None);
        *self.process.lock().unwrap() = Some(child);

        let deadline = Instant::now() + START_WITHIN;
        let fail = |why: &str| -> ! {
            let lines: Vec<String> = log.lock().unwrap().iter().cloned().collect();
            panic!("Keycloak {why}; its log:\n{}", lines.join("\n"))
        };
        let ports = loop {
            if let Ok(ports) = ports_rx.try_recv() {
                break ports;
            }
            if !self.running() {
                fail("exited during startup");
            }
            if Instant::now() > deadline {
                fail(&format!("did not start within {START_WITHIN:?}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let discovery = format!(
            "http://127.0.0.1:{}/realms/{REALM}/.well-known/openid-configuration",
            ports.0
        );
        loop {
            if let Ok(r) = client().get(&discovery).send().await
                && r.status() == 200
            {
                break;
            }
            if Instant::now() > deadline {
                fail("served no discovery document for the realm");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ports
    }
}

/// The Keycloak installation: `TOKEX_KEYCLOAK_HOME`, else where scripts/keycloak.sh puts it.
fn home() -> PathBuf {
    let path = std::env::var_os("TOKEX_KEYCLOAK_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let pin = include_str!("../../interop/keycloak-dist.txt");
            let version = pin
                .lines()
                .find_map(|l| l.strip_prefix("version="))
                .expect("version= in tests/interop/keycloak-dist.txt");
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/keycloak-{version}"))
        });
    assert!(
        path.join("bin/kc.sh").exists() && path.join(".installed").exists(),
        "no Keycloak at {}: run scripts/keycloak.sh (scripts/test.sh does), which installs it",
        path.display()
    );
    path
}

/// Spawns `cmd` from a thread that outlives every test, so that `--pdeathsig` (which
/// follows the spawning thread, not the process) fires only when the binary exits.
fn spawn(cmd: Command) -> Child {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static LAUNCHER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let launcher = LAUNCHER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("keycloak-launcher".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .unwrap();
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    launcher.lock().unwrap().send((cmd, tx)).unwrap();
    rx.recv()
        .unwrap()
        .expect("start Keycloak (needs setpriv and Java)")
}

/// Keeps the last lines of `stream` in `log`; sends the ports of the first
/// `Listening on: http://127.0.0.1:P and https://127.0.0.1:Q` line to `ports`.
fn collect(
    stream: impl Read + Send + 'static,
    log: Arc<Mutex<VecDeque<String>>>,
    mut ports: Option<mpsc::Sender<(u16, u16)>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Some(listening) = line.split("Listening on: ").nth(1)
                && let Some(tx) = ports.take()
            {
                let port = |scheme: &str| {
                    listening
                        .split(" and ")
                        .find_map(|url| url.strip_prefix(scheme)?.trim().parse().ok())
                        .unwrap_or_else(|| panic!("no {scheme} port in: {line}"))
                };
                let _ = tx.send((port("http://127.0.0.1:"), port("https://127.0.0.1:")));
            }
            let mut log = log.lock().unwrap();
            if log.len() == LOG_LINES {
                log.pop_front();
            }
            log.push_back(line);
        }
    });
}

/// A CA, Keycloak's HTTPS certificate for 127.0.0.1 and tokex's client certificate for
/// `tls_client_auth` (subject `CN=tokex-mtls`, as the realm's `tokex-mtls` client
/// expects), written into `dir`; returns the CA's PEM.
fn write_pki(dir: &Path) -> String {
    let dn = |cn: &str| {
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, cn);
        dn
    };
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name = dn("tokex test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, cn: &str, file: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.distinguished_name = dn(cn);
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
    };
    leaf(vec!["127.0.0.1".into()], "127.0.0.1", "server");
    leaf(vec![], "tokex-mtls", "client");
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    ca.pem()
}
