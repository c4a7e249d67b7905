//! The snapshotter seam: where a step's root filesystem is, how it is materialised, and
//! how the step's changes are found.
//!
//! # Design
//!
//! A stage's rootfs is described by its *lower directories*: layer directories in
//! overlayfs lower-dir format (whiteouts as character devices 0/0, opaque directories
//! marked `trusted.overlay.opaque=y`), bottom-most first, as the image lists its layers.
//! They come from the layer store (base-image and cached layers) and from earlier steps
//! of the stage. A [`Snapshotter`] turns them into a rootfs for one step at a time:
//!
//! ```text
//!   let mut lowers = store dirs of the stage's base layers;
//!   for each step {
//!       let mut step = snapshotter.prepare(&lowers)?;     // the step's rootfs
//!       COPY, WORKDIR, --chown write through step.root_dir()?;
//!       RUN runs in step.run_root() (isolation::run_on);  // the same tree, in the sandbox
//!       let diff = snapshotter.diff(&mut step)?;          // what the step changed
//!       write_layer(&diff.source, &diff.changes, layers_dir, &options)?;
//!       if let Some(dir) = snapshotter.commit(step)? {    // the step's result
//!           lowers.push(dir);                             // is a lower of the next step
//!       }
//!   }
//! ```
//!
//! A cache hit needs no step: the cached layer's store directory is pushed onto `lowers`.
//!
//! Two implementations, chosen by the engine (and forced with `--snapshotter`):
//!
//! - [`crate::Overlay`]: each step gets a fresh upper directory over the lowers. The
//!   host side sees the merged tree through a *detached* overlay mount (never attached to
//!   any mount namespace, freed when its last descriptor closes); a RUN's sandbox mounts
//!   the same layers itself inside its own mount namespace. The step's changes are read
//!   from the upper directory alone, so a step costs what it changed, not what the image
//!   holds. `commit` hands the upper directory over as the next step's top lower. Needs
//!   mount rights and a filesystem overlayfs takes as upper: check with
//!   [`crate::Overlay::available`] and fall back to the walk.
//! - [`crate::StatWalk`]: the rootfs is a plain directory; `prepare` extracts the lowers
//!   it does not hold yet into it (and walks it to record a baseline), `diff` walks it
//!   again and compares. `commit` returns `None`: the changes stay in the directory, so
//!   `lowers` only grows by cached layers, which `prepare` then extracts. Its lowers may
//!   also be layer blob files, extracted straight from the tar (the engine passes those
//!   for layers the store does not hold yet, so the walk never extracts a layer twice). This is the
//!   fallback wherever overlay cannot be mounted, and kaniko mode (the rootfs is `/`).
//!
//! Both produce the same [`Changes`] and so byte-identical layers for the same operations
//! (see the `overlay::upper` module for how the upper directory is normalised), with one
//! exception: a file opened for writing and closed unchanged is in the overlay's layer
//! (overlayfs copied it up at `open`) but not in the walk's. Where overlayfs itself
//! behaves differently from a plain directory, the difference is overlayfs' and the same
//! as under Docker's overlay2 driver: renaming a directory that came from a lower fails
//! with `EXDEV` (`redirect_dir=off`; `mv` then copies it), a hard link between two lower
//! files is broken when one of them is changed (`index=off`), and a character device 0/0
//! cannot be created (it is a whiteout).
//!
//! The trait is object safe: the stage holds a `Box<dyn Snapshotter>`.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::overlay::OverlayLayers;
use crate::rootfd::RootDir;
use crate::walk::Changes;

/// Where a stage's root filesystem is, how it is materialised for each step, and how
/// the step's changes are found. See the [module documentation](self) for the protocol.
pub trait Snapshotter: Send + std::fmt::Debug {
    /// A short name for logs: `overlay` or `walk`.
    fn name(&self) -> &'static str;

    /// Makes the rootfs of the next step: the tree of `lowers` (layer directories in
    /// overlay lower-dir format, bottom-most first) plus whatever this snapshotter already
    /// holds from earlier steps. `lowers` must extend the list given to the previous call
    /// (the stage only ever pushes onto it). Too many lowers for one overlay mount give
    /// [`crate::Error::TooManyLowers`]; the caller may squash some of them and retry, or
    /// fall back to the walk.
    fn prepare(&mut self, lowers: &[PathBuf]) -> Result<StepRoot>;

    /// What the step changed, once its last command finished: the changes and the
    /// directory [`crate::write_layer`] reads their entries from. Call it once per step.
    fn diff(&mut self, step: &mut StepRoot) -> Result<Diff>;

    /// Ends the step. Returns the directory now holding the step's result in lower-dir
    /// format when the next step needs it as its top-most lower (overlay: the upper
    /// directory, which from now on belongs to the caller), or `None` when the snapshotter
    /// keeps the changes itself (walk). A step dropped without `commit` is discarded
    /// (overlay: its upper directory is removed).
    fn commit(&mut self, step: StepRoot) -> Result<Option<PathBuf>>;
}

/// What a step changed: see [`Snapshotter::diff`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    /// The changes, in the shape [`crate::write_layer`] takes.
    pub changes: Changes,
    /// The directory to read the changed entries from (the `rootfs` argument of
    /// [`crate::write_layer`]): the rootfs itself (walk) or the upper directory (overlay).
    pub source: PathBuf,
}

/// The rootfs a RUN command runs in; what the sandbox needs to show the step's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunRoot {
    /// A plain directory, entered as it is.
    Dir(PathBuf),
    /// An overlay the sandbox mounts itself, inside its own mount namespace, with the
    /// options of [`crate::overlay::options`]: the lowers stay read-only, every change
    /// lands in the upper directory.
    Overlay(OverlayLayers),
}

/// The rootfs of one step, from [`Snapshotter::prepare`].
#[derive(Debug)]
pub struct StepRoot {
    kind: Kind,
}

/// What a [`StepRoot`] is made of.
#[derive(Debug)]
enum Kind {
    /// A plain directory (walk).
    Dir {
        path: PathBuf,
        view: Option<RootDir>,
    },
    /// An overlay (upper directory and work directory inside `step_dir`).
    Overlay {
        /// The host-side view: a detached mount, opened on first use.
        view: Option<RootDir>,
        layers: OverlayLayers,
        /// The directory holding this step's upper and work directories.
        step_dir: PathBuf,
        /// Set by commit: the upper directory now belongs to the caller.
        committed: bool,
    },
}

impl StepRoot {
    /// A step whose rootfs is the plain directory `path`.
    pub(crate) fn dir(path: &Path) -> StepRoot {
        StepRoot {
            kind: Kind::Dir {
                path: path.to_path_buf(),
                view: None,
            },
        }
    }

    /// A step whose rootfs is the overlay of `layers`, its directories inside `step_dir`.
    pub(crate) fn overlay(layers: OverlayLayers, step_dir: PathBuf) -> StepRoot {
        StepRoot {
            kind: Kind::Overlay {
                view: None,
                layers,
                step_dir,
                committed: false,
            },
        }
    }

    /// The rootfs as seen from the host, for host-side writes (COPY, ADD, WORKDIR,
    /// `--chown`) through the rootfs-safe resolver. Opened on first use: for an overlay,
    /// a detached mount. [`crate::Dir`]s opened from it must be dropped before the next
    /// [`StepRoot::run_root`].
    pub fn root_dir(&mut self) -> Result<&RootDir> {
        let view = match &mut self.kind {
            Kind::Dir { path, view } => {
                if view.is_none() {
                    *view = Some(RootDir::open(path)?);
                }
                view
            }
            Kind::Overlay { view, layers, .. } => {
                if view.is_none() {
                    *view = Some(layers.open()?);
                }
                view
            }
        };
        Ok(view
            .as_ref()
            .unwrap_or_else(|| unreachable!("opened above")))
    }

    /// What the RUN sandbox needs to run a command in this rootfs. For an overlay, the
    /// host-side view is closed first, so that two mounts never share the upper directory
    /// (the next [`StepRoot::root_dir`] mounts a fresh one that sees the command's
    /// changes).
    pub fn run_root(&mut self) -> RunRoot {
        match &mut self.kind {
            Kind::Dir { path, .. } => RunRoot::Dir(path.clone()),
            Kind::Overlay { view, layers, .. } => {
                *view = None;
                RunRoot::Overlay(layers.clone())
            }
        }
    }

    /// The overlay layers of this step (`None` for a plain directory).
    pub fn overlay_layers(&self) -> Option<&OverlayLayers> {
        match &self.kind {
            Kind::Dir { .. } => None,
            Kind::Overlay { layers, .. } => Some(layers),
        }
    }

    /// The plain directory of this step (`None` for an overlay).
    pub(crate) fn plain_dir(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Dir { path, .. } => Some(path),
            Kind::Overlay { .. } => None,
        }
    }

    /// Closes the host-side view and hands the upper directory over to the caller: it is
    /// no longer removed when this `StepRoot` is dropped. `None` for a plain directory.
    pub(crate) fn keep_upper(&mut self) -> Option<(OverlayLayers, PathBuf)> {
        match &mut self.kind {
            Kind::Dir { .. } => None,
            Kind::Overlay {
                view,
                layers,
                step_dir,
                committed,
            } => {
                *view = None;
                *committed = true;
                Some((layers.clone(), step_dir.clone()))
            }
        }
    }
}

impl Drop for StepRoot {
    /// Closes the view; an overlay step that was not committed is discarded (its upper
    /// and work directories are removed, best effort).
    fn drop(&mut self) {
        if let Kind::Overlay {
            view,
            step_dir,
            committed,
            ..
        } = &mut self.kind
        {
            *view = None;
            if !*committed {
                let _ = std::fs::remove_dir_all(step_dir);
            }
        }
    }
}
