//! Two network namespaces joined by a veth pair: a "pod" where tokex and the app run and
//! an "upstream" with servers on its own address. Everything runs as processes inside
//! them (`ip netns exec`); dropping the [`Net`] kills them and deletes both namespaces,
//! which takes the veth pair and every rule inside with it, also when a test fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const PROXY_UID: u32 = 65532;

pub struct Net {
    pub pod: String,
    pub up: String,
    /// The pod's and the upstream's addresses on the veth pair.
    pub pod_ip: String,
    pub up_ip: String,
    pub dir: tempfile::TempDir,
    children: Vec<Child>,
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {}", args.join(" "));
}

impl Net {
    /// `id` keeps parallel tests apart: it names the namespaces and picks the subnet.
    pub fn new(id: u8) -> Self {
        assert_eq!(
            tokex::transparent::effective_uid(),
            Some(0),
            "the network-namespace tests create namespaces and kernel rules: run them as root \
             (CI does; scripts/test.sh runs them)"
        );
        let (pod, up) = (format!("tokex-pod-{id}"), format!("tokex-up-{id}"));
        for ns in [&pod, &up] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        let (pod_if, up_if) = (format!("tkx{id}p"), format!("tkx{id}u"));
        let (pod_ip, up_ip) = (format!("10.251.{id}.1"), format!("10.251.{id}.2"));
        let dir = tempfile::tempdir().unwrap();
        // tokex runs as PROXY_UID and reads its config from here.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let net = Self {
            pod,
            up,
            pod_ip,
            up_ip,
            dir,
            children: Vec::new(),
        };
        ip(&["netns", "add", &net.pod]);
        ip(&["netns", "add", &net.up]);
        ip(&[
            "link", "add", &pod_if, "type", "veth", "peer", "name", &up_if,
        ]);
        ip(&["link", "set", &pod_if, "netns", &net.pod]);
        ip(&["link", "set", &up_if, "netns", &net.up]);
        for (ns, dev, addr) in [
            (&net.pod, &pod_if, &net.pod_ip),
            (&net.up, &up_if, &net.up_ip),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        // A default route, as every pod has: the check's probe addresses need one.
        ip(&["-n", &net.pod, "route", "add", "default", "via", &net.up_ip]);
        net
    }

    /// `cmd` inside namespace `ns`, as `uid` when given.
    pub fn command(&self, ns: &str, uid: Option<u32>, cmd: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]);
        if let Some(uid) = uid {
            let id = uid.to_string();
            c.args(["setpriv", "--reuid", &id, "--regid", &id, "--clear-groups"]);
        }
        c.args(cmd);
        c
    }

    /// Runs `cmd` in `ns` to completion.
    pub fn run(&self, ns: &str, cmd: &[&str]) -> Output {
        self.command(ns, None, cmd)
            .output()
            .expect("run in namespace")
    }

    /// Starts a long-running process that prints `ready` on stdout once it serves.
    pub fn start_until_ready(&mut self, mut cmd: Command, what: &str) {
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect(what);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines.next().and_then(Result::ok);
        assert_eq!(ready.as_deref(), Some("ready"), "{what} did not start");
        self.children.push(child);
    }

    /// Starts a long-running process; [`Net::wait_for`] tells when it serves.
    pub fn start(&mut self, mut cmd: Command, what: &str) {
        self.children.push(cmd.spawn().expect(what));
    }

    /// Polls `check` until it holds, for at most 20 s.
    pub fn wait_for(&self, what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Names the pod's resolver knows: `ip netns exec` mounts `/etc/netns/<pod>/hosts`
    /// over `/etc/hosts` for what runs in the pod (removed with the namespaces).
    pub fn pod_hosts(&self, entries: &[(&str, &str)]) {
        let dir = Path::new("/etc/netns").join(&self.pod);
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for (addr, name) in entries {
            text.push_str(&format!("{addr} {name}\n"));
        }
        std::fs::write(dir.join("hosts"), text).unwrap();
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `curl` in the pod as the app (root: not tokex's uid), returning status and body.
    pub fn app_curl(&self, args: &[&str]) -> (u16, String) {
        let mut cmd = vec!["curl", "-sS", "-m", "10", "-w", "\n%{http_code}"];
        cmd.extend_from_slice(args);
        let out = self.run(&self.pod, &cmd);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        (status.trim().parse().unwrap_or(0), body.to_string())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.pod, &self.up] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
        }
    }
}

pub fn tokex_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tokex"))
}

pub fn echo_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/netns/echo.py")
}
