//! The step directories of running builds (`steps/`): where a build's overlay steps keep
//! their upper and work directories, inside the store root so that a finished upper
//! directory can be renamed into the store ([`LayerStore::adopt`]).
//!
//! Each build holds one directory, `steps/<pid>-<n>-<nanos>/`, and an exclusive `flock`
//! on `steps/<pid>-<n>-<nanos>.lock` for as long as it lives. The lock file is made and
//! locked before the directory, and removed after it. Dropping [`StepDirs`] removes both;
//! a process killed in any way leaves them behind with the lock released, and the next
//! [`LayerStore::open`] (or prune) removes every directory whose lock it can take.

use std::path::{Path, PathBuf};

use super::held::{remove_below, HeldDir};
use super::{prune::names, LayerStore};
use crate::error::Result;

/// One build's step directory in the store, held: removed (with everything in it) when
/// dropped, and by the next sweep if the process dies first.
#[derive(Debug)]
pub struct StepDirs {
    held: HeldDir,
}

impl StepDirs {
    /// The directory (mode 0700, empty when made): give it to [`crate::Overlay::new`].
    pub fn path(&self) -> &Path {
        self.held.path()
    }
}

impl LayerStore {
    /// A new step directory for this build, held until the returned value is dropped.
    pub fn step_dirs(&self) -> Result<StepDirs> {
        let held = HeldDir::create(&self.steps_dir(), "")?;
        Ok(StepDirs { held })
    }

    /// Removes the step directories of builds that are gone: those whose lock nobody
    /// holds, and those without a lock file.
    pub(super) fn sweep_steps(&self) -> Result<()> {
        let dir = self.steps_dir();
        HeldDir::sweep(&dir, "")?;
        let all = names(&dir)?;
        for name in &all {
            if !name.ends_with(".lock") && !all.contains(&format!("{name}.lock")) {
                remove_below(&dir.join(name))?;
            }
        }
        Ok(())
    }

    pub(super) fn steps_dir(&self) -> PathBuf {
        self.root.join("steps")
    }
}
