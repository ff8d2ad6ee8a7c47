//! Where the config loader reads `${NAME}` values and the files a config names.
//!
//! Normally the process environment and the disk. [`isolated`] puts a fixed set in their
//! place for one call on the current thread, so a config can be loaded where neither may
//! be read: the fuzzer feeds configs that name any variable and any path, and a result
//! that depended on the machine it ran on would make its findings unreproducible.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;

/// Environment variables and file contents that stand in for the machine's.
#[derive(Debug, Clone, Default)]
pub struct Fixed {
    pub env: BTreeMap<String, String>,
    pub files: BTreeMap<PathBuf, Vec<u8>>,
}

thread_local! {
    static FIXED: RefCell<Option<Rc<Fixed>>> = const { RefCell::new(None) };
}

/// Runs `f` with `fixed` in place of the environment and the disk on this thread.
pub fn isolated<R>(fixed: Rc<Fixed>, f: impl FnOnce() -> R) -> R {
    // Restored on unwind too, so a panicking load cannot leave the thread isolated.
    struct Restore(Option<Rc<Fixed>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            FIXED.set(self.0.take());
        }
    }
    let _restore = Restore(FIXED.replace(Some(fixed)));
    f()
}

/// The variable `name`: from the fixed set while one is in place, else the process's.
pub(super) fn env_var(name: &str) -> Option<String> {
    match current() {
        Some(fixed) => fixed.env.get(name).cloned(),
        None => std::env::var(name).ok(),
    }
}

/// The contents of `paths` while a fixed set is in place; `None` means read the disk.
pub(super) fn fixed_files(paths: &[PathBuf]) -> Option<Result<Vec<Vec<u8>>, String>> {
    let fixed = current()?;
    Some(
        paths
            .iter()
            .map(|p| {
                fixed
                    .files
                    .get(p)
                    .cloned()
                    .ok_or_else(|| format!("cannot read {}: no such file", p.display()))
            })
            .collect(),
    )
}

fn current() -> Option<Rc<Fixed>> {
    FIXED.with_borrow(Option::clone)
}
