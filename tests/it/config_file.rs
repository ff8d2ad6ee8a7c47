//! The config file through the binary: hostile input on `tokex check` and on a live reload.

use std::process::Command;
use std::time::Duration;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_tokex");

/// A config whose `listen` is one scalar of `len` bytes.
fn huge_scalar(len: usize) -> String {
    format!("listen: {}\nroutes: []\n", "A".repeat(len))
}

/// `tokex check` refuses a file past the size limit unread, and an error about a huge
/// value under the limit echoes a few dozen characters of it.
#[test]
fn check_bounds_what_a_hostile_file_costs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.yaml");
    for (len, expected) in [
        (
            50 << 20,
            "cannot read config: the file is larger than 1 MiB",
        ),
        (900 << 10, "listen: invalid socket address `AAAA"),
    ] {
        std::fs::write(&path, huge_scalar(len)).unwrap();
        let out = Command::new(BIN)
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}", &stderr[..200]);
        assert!(
            stderr.len() < 300,
            "{} bytes: {}",
            stderr.len(),
            &stderr[..300]
        );
        assert!(
            stderr.starts_with(&format!("{}:", path.display())) && stderr.contains(expected),
            "{stderr}"
        );
    }
}

/// A reload to an oversized file, or to one with a huge bad value, keeps the running
/// config, and the error it logs is one short line.
#[tokio::test]
async fn reload_keeps_the_config_and_logs_a_bounded_error() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokex.yaml");
    let good = format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nroutes:\n  - name: up\n    upstream: {}\n    exchange: none\n",
        up.url()
    );
    std::fs::write(&path, &good).unwrap();
    let mut tokex = spawn_tokex(
        &["run".as_ref(), "-c".as_ref(), path.as_os_str()],
        &[],
        "listening",
    )
    .await;
    let url = format!("http://{}/x", tokex.listen());
    for (n, text) in [huge_scalar(50 << 20), huge_scalar(900 << 10)]
        .iter()
        .enumerate()
    {
        // Written beside and renamed over, as Kubernetes swaps a ConfigMap.
        let next = dir.path().join("next.yaml");
        std::fs::write(&next, text).unwrap();
        std::fs::rename(&next, &path).unwrap();
        let failed = |log: &str| log.matches("config reload failed").count();
        for _ in 0..100 {
            if failed(&tokex.log()) > n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = tokex.log();
        assert_eq!(failed(&log), n + 1, "reload {n} was attempted and failed");
        let longest = log.lines().map(str::len).max().unwrap_or_default();
        assert!(longest < 600, "a log line of {longest} bytes");
        let r = client().get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "the running config still routes");
    }
    assert!(tokex.log().contains("larger than 1 MiB"), "{}", tokex.log());
    assert!(tokex.terminate().await.success());
}
