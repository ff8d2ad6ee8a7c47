//! Credential files that rotate without a restart: client secrets, private keys,
//! client assertions (projected service-account tokens), client certificates, actor
//! tokens, CA bundles and the shared cache's keys.
//!
//! Each file is read and validated at load. Afterwards [`poll_all`] compares every
//! file's identity (device, inode, size, mtime, following symlinks, so Kubernetes'
//! atomic `..data` swap counts as a change) and re-reads what changed. A valid new
//! value is swapped in for the next use without a lock on the reading side; a file
//! that becomes unreadable or invalid keeps the last good value in use and is logged
//! (never its content) and counted.
//!
//! What each file holds is parsed here as well, each parser proving that what it accepts
//! is usable: [`parse_secret`] for text, [`assertion`] for client assertions and the keys
//! that sign them, [`certs`] for CA bundles and client identities, [`fleet_keys`] for the
//! shared cache's keys; [`expiry`] dates them.

pub mod assertion;
pub mod certs;
pub mod expiry;
pub mod fleet_keys;

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

/// A file's identity; a change in any part means "re-read".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    })
}

type Parser<T> = dyn Fn(&[Vec<u8>]) -> Result<T, String> + Send + Sync;

/// A value read from one or more files, kept current.
pub struct Watched<T> {
    inner: Arc<Inner<T>>,
}

struct Inner<T> {
    paths: Vec<PathBuf>,
    value: ArcSwap<T>,
    stamps: Mutex<Vec<Option<Stamp>>>,
    parse: Option<Box<Parser<T>>>,
    generation: AtomicU64,
}

impl<T> Clone for Watched<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T> fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The value may be a secret: only the paths are ever shown.
        f.debug_struct("Watched")
            .field("paths", &self.inner.paths)
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> Watched<T> {
    /// Reads `paths` and parses them; the error names the first file and the cause.
    pub fn load(
        paths: Vec<PathBuf>,
        parse: impl Fn(&[Vec<u8>]) -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<Self, String> {
        let stamps = paths.iter().map(|p| stamp(p)).collect();
        let contents = read_all(&paths)?;
        let value = parse(&contents)?;
        Ok(Self {
            inner: Arc::new(Inner {
                paths,
                value: ArcSwap::from_pointee(value),
                stamps: Mutex::new(stamps),
                parse: Some(Box::new(parse)),
                generation: AtomicU64::new(0),
            }),
        })
    }

    /// A value written inline in the config: never changes.
    pub fn fixed(value: T) -> Self {
        Self::pinned(Vec::new(), value)
    }

    /// A value read once from `paths` by the caller: shows its paths, never re-read.
    pub fn pinned(paths: Vec<PathBuf>, value: T) -> Self {
        Self {
            inner: Arc::new(Inner {
                stamps: Mutex::new(vec![None; paths.len()]),
                paths,
                value: ArcSwap::from_pointee(value),
                parse: None,
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// The value in force now.
    pub fn current(&self) -> Arc<T> {
        self.inner.value.load_full()
    }

    /// Reads the value in force without taking a reference to it (no refcount traffic on
    /// the request path).
    pub fn with<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&self.inner.value.load())
    }

    /// Increments on every successful reload; lets users rebuild derived state.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }
}

impl<T> Watched<T> {
    /// The files behind this value (none for an inline value).
    pub fn paths(&self) -> &[PathBuf] {
        &self.inner.paths
    }

    /// Takes the files as they are now for seen, so [`Poll::poll`] reports only later
    /// changes: for a caller about to read them itself. Call it before that read, so a
    /// write made during the read is still a change.
    pub fn mark_seen(&self) {
        let now = self.inner.paths.iter().map(|p| stamp(p)).collect();
        if let Ok(mut stamps) = self.inner.stamps.lock() {
            *stamps = now;
        }
    }
}

/// A credential file's text: UTF-8, without the trailing newline that `kubectl create
/// secret` and editors leave, and not empty.
pub fn parse_secret(path: &Path, bytes: &[u8]) -> Result<crate::secret::Secret, String> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    let value = text.trim_end_matches(['\r', '\n']);
    if value.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(crate::secret::Secret::new(value))
}

fn read_all(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, String> {
    paths
        .iter()
        .map(|p| {
            read_bounded(p, MAX_FILE_BYTES).map_err(|e| format!("cannot read {}: {e}", p.display()))
        })
        .collect()
}

/// The largest credential file tokex reads: far above any real one (a full CA bundle is a
/// few hundred KiB), and small enough that a wrong path (a log, a device) cannot exhaust
/// memory.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the file is larger than {} MiB, the most tokex reads from it", .0 >> 20)]
    TooLarge(u64),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads `path` whole, refusing a file past `limit` bytes: by its size before reading, and
/// by what was read for files whose size says nothing (pipes, devices, growing files).
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    if file.metadata()?.len() > limit {
        return Err(ReadError::TooLarge(limit));
    }
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge(limit));
    }
    Ok(bytes)
}

/// What polling one watched value found.
#[derive(Debug, PartialEq, Eq)]
pub enum Polled {
    Unchanged,
    Reloaded,
    /// The file changed but is unusable; the last good value stays in force.
    Kept(String),
}

/// Anything [`poll_all`] can check.
pub trait Poll: Send + Sync + fmt::Debug {
    fn poll(&self) -> Polled;
    fn describe(&self) -> String;
}

impl<T: Send + Sync + 'static> Poll for Watched<T> {
    fn poll(&self) -> Polled {
        let Some(parse) = &self.inner.parse else {
            return Polled::Unchanged;
        };
        let now: Vec<Option<Stamp>> = self.inner.paths.iter().map(|p| stamp(p)).collect();
        let Ok(mut stamps) = self.inner.stamps.lock() else {
            return Polled::Unchanged;
        };
        if *stamps == now {
            return Polled::Unchanged;
        }
        // Remember what we looked at even on failure, so one bad write is reported once
        // and the next write is picked up.
        *stamps = now;
        match read_all(&self.inner.paths).and_then(|c| parse(&c)) {
            Ok(value) => {
                self.inner.value.store(Arc::new(value));
                self.inner.generation.fetch_add(1, Ordering::AcqRel);
                Polled::Reloaded
            }
            Err(e) => Polled::Kept(e),
        }
    }

    fn describe(&self) -> String {
        self.inner
            .paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Polls every watched credential once; logs reloads and failures, and hands each one's
/// result (`ok` or `error`) to `count`.
pub fn poll_all(items: &[Arc<dyn Poll>], mut count: impl FnMut(&'static str)) {
    for item in items {
        match item.poll() {
            Polled::Unchanged => {}
            Polled::Reloaded => {
                count("ok");
                tracing::info!(file = %item.describe(), "credential reloaded");
            }
            Polled::Kept(error) => {
                count("error");
                tracing::warn!(file = %item.describe(), %error, "credential file unusable; keeping the last good one");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(c: &[Vec<u8>]) -> Result<String, String> {
        let s = String::from_utf8(c[0].clone()).map_err(|_| "not UTF-8".to_string())?;
        let s = s.trim_end().to_string();
        if s.is_empty() {
            Err("empty".into())
        } else {
            Ok(s)
        }
    }

    /// A rewrite is picked up; an invalid rewrite keeps the last good value; a later
    /// good write is picked up again; Kubernetes' symlink swap counts as a change.
    #[test]
    fn reload_keep_last_good_and_symlink_swap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "one\n").unwrap();
        let w = Watched::load(vec![path.clone()], parse_text).unwrap();
        assert_eq!((w.current().as_str(), w.poll()), ("one", Polled::Unchanged));

        std::fs::write(&path, "two-longer\n").unwrap();
        assert_eq!(w.poll(), Polled::Reloaded);
        assert_eq!((w.current().as_str(), w.generation()), ("two-longer", 1));

        std::fs::write(&path, "").unwrap();
        assert!(matches!(w.poll(), Polled::Kept(_)));
        assert_eq!(w.current().as_str(), "two-longer");
        assert_eq!(w.poll(), Polled::Unchanged, "a bad write is reported once");

        std::fs::remove_file(&path).unwrap();
        assert!(matches!(w.poll(), Polled::Kept(e) if e.contains("cannot read")));
        assert_eq!(w.current().as_str(), "two-longer");

        // Kubernetes: the file is a symlink through `..data`, swapped atomically.
        let (a, b) = (dir.path().join("..2026_a"), dir.path().join("..2026_b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        std::fs::write(a.join("token"), "first").unwrap();
        std::fs::write(b.join("token"), "second").unwrap();
        std::os::unix::fs::symlink("..2026_a", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/token", dir.path().join("token")).unwrap();
        let t = Watched::load(vec![dir.path().join("token")], parse_text).unwrap();
        assert_eq!(t.current().as_str(), "first");
        std::os::unix::fs::symlink("..2026_b", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        assert_eq!(t.poll(), Polled::Reloaded);
        assert_eq!(t.current().as_str(), "second");
    }

    /// A file marked seen polls as unchanged; a write after the mark is a change.
    #[test]
    fn a_file_marked_seen_is_unchanged_until_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, "one\n").unwrap();
        let w = Watched::load(vec![path.clone()], parse_text).unwrap();
        std::fs::write(&path, "two-longer\n").unwrap();
        w.mark_seen();
        assert_eq!(w.poll(), Polled::Unchanged);
        std::fs::write(&path, "three-longest\n").unwrap();
        assert_eq!(w.poll(), Polled::Reloaded);
    }

    /// Debug shows the path, never the value.
    #[test]
    fn debug_hides_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "hunter2").unwrap();
        let w = Watched::load(vec![path], parse_text).unwrap();
        assert!(!format!("{w:?}").contains("hunter2"));
    }
}
