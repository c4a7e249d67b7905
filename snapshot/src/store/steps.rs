//! The step directories of running builds (`steps/`): where a build's overlay steps keep
//! their upper and work directories, inside the store root so that a finished upper
//! directory can be renamed into the store ([`LayerStore::adopt`]).
//!
//! Each build holds one directory, `steps/<pid>-<n>-<nanos>/`, and an exclusive `flock`
//! on `steps/<pid>-<n>-<nanos>.lock` for as long as it lives. The lock file is made and
//! locked before the directory, and removed after it. Dropping [`StepDirs`] removes both;
//! a process killed in any way leaves them behind with the lock released, and the next
//! [`LayerStore::open`] (or prune) removes every directory whose lock it can take.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{lock, prune::names, LayerStore};
use crate::error::{io_err, Error, Result};
use crate::rootfd::RootDir;

/// One build's step directory in the store, held: removed (with everything in it) when
/// dropped, and by the next sweep if the process dies first.
#[derive(Debug)]
pub struct StepDirs {
    path: PathBuf,
    lock_path: PathBuf,
    lock: Option<lock::Lock>,
}

impl StepDirs {
    /// The directory (mode 0700, empty when made): give it to [`crate::Overlay::new`].
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StepDirs {
    /// Removes the directory, then releases and removes the lock (best effort: what is
    /// left is swept later).
    fn drop(&mut self) {
        let _ = remove_below(&self.path);
        let _ = fs::remove_file(&self.lock_path);
        self.lock = None;
    }
}

impl LayerStore {
    /// A new step directory for this build, held until the returned value is dropped.
    pub fn step_dirs(&self) -> Result<StepDirs> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{n}-{nanos:08x}", std::process::id());
        let path = self.steps_dir().join(&name);
        let lock_path = self.steps_dir().join(format!("{name}.lock"));
        let lock = lock::wait(&lock_path, lock::Kind::Exclusive)?;
        // From here on, an error drops `dirs`, which removes the lock file again.
        let dirs = StepDirs {
            path,
            lock_path,
            lock: Some(lock),
        };
        DirBuilder::new()
            .mode(0o700)
            .create(&dirs.path)
            .map_err(io_err(&dirs.path, "create step directory"))?;
        Ok(dirs)
    }

    /// Removes the step directories of builds that are gone: those whose lock nobody
    /// holds, and those without a lock file.
    pub(super) fn sweep_steps(&self) -> Result<()> {
        let dir = self.steps_dir();
        let all = names(&dir)?;
        for name in &all {
            if let Some(stem) = name.strip_suffix(".lock") {
                let path = dir.join(name);
                let Some(_held) = lock::try_lock(&path, lock::Kind::Exclusive)? else {
                    continue;
                };
                remove_below(&dir.join(stem))?;
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(Error::io(&path, "remove", e))
                    }
                    _ => {}
                }
            } else if !all.contains(&format!("{name}.lock")) {
                remove_below(&dir.join(name))?;
            }
        }
        Ok(())
    }

    pub(super) fn steps_dir(&self) -> PathBuf {
        self.root.join("steps")
    }
}

/// Removes `path` (a directory directly in `steps/`) and everything in it, by name in
/// descriptors, never following a link; a missing one is fine.
fn remove_below(path: &Path) -> Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    match RootDir::open(parent)?.as_dir().remove_all(name) {
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
