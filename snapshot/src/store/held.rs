//! [`HeldDir`]: a directory that lives as long as the process that made it.
//!
//! The directory `<parent>/<prefix><pid>-<n>-<nanos>/` comes with an exclusive `flock` on
//! its sibling `<name>.lock`, made and locked before the directory and removed after it.
//! Dropping a [`HeldDir`] removes both; a process killed in any way leaves them behind with
//! the lock released, and [`HeldDir::sweep`] (run by the next process that makes one in
//! the same parent) removes every such directory whose lock it can take. A directory
//! without a lock file is never touched: it is not one of these.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{lock, prune::names};
use crate::error::{io_err, Error, Result};
use crate::rootfd::RootDir;

/// A directory held by this process: removed (with everything in it) when dropped, and by
/// the next [`HeldDir::sweep`] of its parent if the process dies first.
#[derive(Debug)]
pub struct HeldDir {
    path: PathBuf,
    lock_path: PathBuf,
    lock: Option<lock::Lock>,
}

impl HeldDir {
    /// Makes a new directory (mode 0700, empty) in `parent`, named `prefix` followed by
    /// this process's id and a unique suffix, and holds it.
    pub fn create(parent: &Path, prefix: &str) -> Result<HeldDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}{}-{n}-{nanos:08x}", std::process::id());
        let path = parent.join(&name);
        let lock_path = parent.join(format!("{name}.lock"));
        let lock = lock::wait(&lock_path, lock::Kind::Exclusive)?;
        // From here on, an error drops `held`, which removes the lock file again.
        let held = HeldDir {
            path,
            lock_path,
            lock: Some(lock),
        };
        DirBuilder::new()
            .mode(0o700)
            .create(&held.path)
            .map_err(io_err(&held.path, "create directory"))?;
        Ok(held)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directories in `parent` named `prefix...` that a process now gone
    /// held: those whose lock file is there and free. Returns how many it removed. Those
    /// of another user that this one may not lock or remove (in a shared parent such as
    /// `/tmp`) are left alone.
    pub fn sweep(parent: &Path, prefix: &str) -> Result<usize> {
        let mut removed = 0;
        for name in names(parent)? {
            let Some(stem) = name.strip_suffix(".lock") else {
                continue;
            };
            if !stem.starts_with(prefix) {
                continue;
            }
            let path = parent.join(&name);
            let Some(_held) = not_denied(lock::try_lock(&path, lock::Kind::Exclusive))?.flatten()
            else {
                continue;
            };
            if not_denied(remove_below(&parent.join(stem)))?.is_none() {
                continue;
            }
            remove_lock_file(&path)?;
            removed += 1;
        }
        Ok(removed)
    }
}

impl Drop for HeldDir {
    /// Removes the directory, then releases and removes the lock (best effort: what is
    /// left is swept later).
    fn drop(&mut self) {
        let _ = remove_below(&self.path);
        let _ = fs::remove_file(&self.lock_path);
        self.lock = None;
    }
}

/// `result`, with an error of a permission denied (`EACCES`, `EPERM`) as `None`.
fn not_denied<T>(result: Result<T>) -> Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::PermissionDenied => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Removes the lock file at `path`; a missing one is fine.
fn remove_lock_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io(path, "remove", e)),
        _ => Ok(()),
    }
}

/// Removes `path` (a directory directly in its parent) and everything in it, by name in
/// descriptors, never following a link; a missing one is fine.
pub(super) fn remove_below(path: &Path) -> Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    match RootDir::open(parent)?.as_dir().remove_all(name) {
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_directory_is_removed_when_dropped_and_not_swept_while_held() {
        let parent = tempfile::tempdir().unwrap();
        let held = HeldDir::create(parent.path(), "x-").unwrap();
        fs::write(held.path().join("file"), "data").unwrap();
        assert_eq!(HeldDir::sweep(parent.path(), "x-").unwrap(), 0);
        assert!(held.path().join("file").exists());
        let path = held.path().to_path_buf();
        drop(held);
        assert!(!path.exists());
        assert_eq!(names(parent.path()).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn sweep_removes_directories_whose_lock_is_free_and_only_those_of_its_prefix() {
        let parent = tempfile::tempdir().unwrap();
        // A process that died: its directory and lock file stay, the lock is free.
        for name in ["x-1-0-0", "y-1-0-0"] {
            fs::create_dir_all(parent.path().join(name).join("sub")).unwrap();
            fs::write(parent.path().join(format!("{name}.lock")), "").unwrap();
        }
        fs::create_dir(parent.path().join("x-without-lock")).unwrap();
        assert_eq!(HeldDir::sweep(parent.path(), "x-").unwrap(), 1);
        let mut left = names(parent.path()).unwrap();
        left.sort();
        assert_eq!(left, ["x-without-lock", "y-1-0-0", "y-1-0-0.lock"]);
    }
}
