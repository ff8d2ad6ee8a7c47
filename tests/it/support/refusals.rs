//! `tokex check --offline` on configs it must refuse, each at FILE:LINE:COL.

use std::process::Command;

/// For each case, `head` followed by the case's last line (line `line` of the file):
/// `tokex check` exits 1 with an error at that line, at the column where the case's
/// marker starts, beginning with the case's message.
pub fn assert_refused_at(head: &str, line: usize, cases: &[(&str, &str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.yaml");
    for (last, marker, expected) in cases {
        let col = last.find(marker).unwrap() + 1;
        std::fs::write(&path, format!("{head}{last}")).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_tokex"))
            .args(["check", "--offline", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{last}: {stderr}");
        let place = format!("{}:{line}:{col}: {expected}", path.display());
        assert!(
            stderr.starts_with(&place),
            "{last}\nwanted {place}\n   got {stderr}"
        );
    }
}
