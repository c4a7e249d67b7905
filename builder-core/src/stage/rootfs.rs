//! The root filesystem of a stage: its [`Snapshotter`] (overlay, or the walk on a directory
//! of its own, or on `/` when building in place), the lower directories it is stacked from,
//! the rootfs of the step in progress, and the layer written from the step's changes. This
//! is the one place that names the snapshotters; the stage loop asks for the step's rootfs
//! (host-side writes go through its [`RootDir`], RUN through its [`RunRoot`]) and commits
//! the step.
//!
//! The lowers are made on the first step that needs files, never before: from the store's
//! directories of the image's layers ([`crate::layers::BuildLayers::lowers`]), or the lowers
//! of the stage it is built on, taken as they are. A cache hit after that adds the cached
//! layer's lower; a committed overlay step adds its upper directory.

use crate::engine::{Kept, Registry, Settings, Stages};
use crate::error::{BuildError, Result};
use crate::events::BuildEvent;
use crate::image::{Image, Layer};
use crate::layers::{Kind, SourceTree};
use ocibuild_snapshot::{
    overlay, LayerInfo, LayerOptions, RootDir, RunRoot, Snapshotter, StatWalk, StepRoot,
};
use std::path::{Path, PathBuf};

/// A stage's snapshotter, as the stage holds it.
type BoxedSnapshotter = Box<dyn Snapshotter + Sync>;

/// The root filesystem of the stage being built.
pub(crate) struct StageRootfs {
    /// Its snapshotter; only `None` while it works on the blocking pool.
    snapshotter: Option<BoxedSnapshotter>,
    /// Which one it is (overlay may turn into the walk, see [`StageRootfs::prepare`]).
    kind: Kind,
    /// The walk's directory: `/` when building in place, else the stage's directory in
    /// the work directory.
    dir: PathBuf,
    /// In `/` mode: the paths of `/` to leave alone, relative to `/`.
    live_ignore: Option<Vec<PathBuf>>,
    /// The lower directories (the walk: or layer blob files), bottom-most first.
    lowers: Vec<PathBuf>,
    /// Whether `lowers` were made from the image's layers.
    ready: bool,
    /// The lowers of the stage this one is built on (overlay), one per layer of its image.
    inherited: Option<Vec<PathBuf>>,
    /// The rootfs of the step in progress.
    step: Option<StepRoot>,
    /// Events and warnings for the stage loop to report.
    notes: Vec<BuildEvent>,
}

/// What committing a step gave.
pub(crate) struct Committed {
    /// Whether the step changed nothing.
    pub empty: bool,
    /// The layer written (none when nothing changed and no empty layer was asked for).
    pub layer: Option<LayerInfo>,
}

impl StageRootfs {
    /// The root filesystem of stage `index`, not materialized yet, with the snapshotter of
    /// the build; `inherited` are the lowers of the stage it is built on, if known.
    pub fn new(
        settings: &Settings,
        registry: &Registry,
        index: usize,
        inherited: Option<Vec<PathBuf>>,
    ) -> Result<StageRootfs> {
        let dir = match &settings.live_ignore {
            Some(_) => PathBuf::from("/"),
            None => stage_dir(settings, index),
        };
        let kind = registry.layers.kind();
        let snapshotter: BoxedSnapshotter = match kind {
            Kind::Overlay => Box::new(registry.layers.overlay()?),
            Kind::Walk => Box::new(walk_at(&dir, settings.live_ignore.clone())),
        };
        Ok(StageRootfs {
            snapshotter: Some(snapshotter),
            kind,
            dir,
            live_ignore: settings.live_ignore.clone(),
            lowers: Vec::new(),
            ready: false,
            inherited,
            step: None,
            notes: Vec::new(),
        })
    }

    /// The events and warnings to report since the last call.
    pub fn take_notes(&mut self) -> Vec<BuildEvent> {
        std::mem::take(&mut self.notes)
    }

    /// The rootfs of the current step, made on first use: the stage's lowers (from
    /// `image`'s layers, the first time), then the step's rootfs on them.
    pub async fn step(
        &mut self,
        settings: &Settings,
        registry: &Registry,
        stages: &Stages,
        image: &Image,
        label: &str,
    ) -> Result<&mut StepRoot> {
        if !self.ready {
            self.materialize(settings, registry, stages, image, label)
                .await?;
        }
        if self.step.is_none() {
            let step = self.prepare().await?;
            self.step = Some(step);
        }
        Ok(self.step.as_mut().expect("prepared above"))
    }

    /// Makes the lowers from `image`'s layers (or takes the inherited ones), after clearing
    /// the walk's directory (`/`: what an earlier stage left).
    async fn materialize(
        &mut self,
        settings: &Settings,
        registry: &Registry,
        stages: &Stages,
        image: &Image,
        label: &str,
    ) -> Result<()> {
        if self.kind == Kind::Walk {
            clear(self.dir.clone(), self.live_ignore.clone(), stages).await?;
        }
        let inherited = self.inherited.take();
        match inherited {
            Some(lowers) if self.kind == Kind::Overlay && lowers.len() == image.layers.len() => {
                self.lowers = lowers;
            }
            _ => {
                settings.cancel.check()?;
                let dirs = self.kind == Kind::Overlay;
                let (lowers, events) = registry
                    .layers
                    .lowers(registry, &image.layers, dirs)
                    .await?;
                self.notes.extend(events);
                self.add_lowers(registry, lowers).await?;
            }
        }
        self.ready = true;
        self.notes.push(BuildEvent::Rootfs {
            stage: label.to_string(),
            snapshotter: self.name().to_string(),
            layers: self.lowers.len(),
        });
        Ok(())
    }

    /// The snapshotter's name.
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Overlay => "overlay",
            Kind::Walk => "walk",
        }
    }

    /// Prepares the step's rootfs on the blocking pool. Too many lowers for one overlay
    /// turn the stage over to the walk, on a directory of its own (with a warning).
    async fn prepare(&mut self) -> Result<StepRoot> {
        match self.prepare_with_snapshotter().await? {
            Ok(step) => Ok(step),
            Err(ocibuild_snapshot::Error::TooManyLowers { count, limit }) => {
                self.notes.push(BuildEvent::Warning(format!(
                    "{count} layers are more than one overlay stacks ({limit}): this stage \
                     continues with the walk snapshotter in {}",
                    self.dir.display()
                )));
                self.kind = Kind::Walk;
                self.snapshotter = Some(Box::new(walk_at(&self.dir, None)));
                self.prepare_with_snapshotter()
                    .await?
                    .map_err(BuildError::snapshot("preparing the step's rootfs"))
            }
            Err(e) => Err(BuildError::snapshot("preparing the step's rootfs")(e)),
        }
    }

    /// [`Snapshotter::prepare`] on the lowers, on the blocking pool.
    async fn prepare_with_snapshotter(
        &mut self,
    ) -> Result<std::result::Result<StepRoot, ocibuild_snapshot::Error>> {
        let mut snapshotter = self.take_snapshotter()?;
        let lowers = self.lowers.clone();
        let (snapshotter, prepared) = crate::blocking::run(move || {
            let prepared = snapshotter.prepare(&lowers);
            Ok((snapshotter, prepared))
        })
        .await?;
        self.snapshotter = Some(snapshotter);
        Ok(prepared)
    }

    /// The snapshotter, taken out to work on the blocking pool.
    fn take_snapshotter(&mut self) -> Result<BoxedSnapshotter> {
        self.snapshotter.take().ok_or_else(|| {
            BuildError::Options("the stage's snapshotter was lost by a failed step".into())
        })
    }

    /// Adds the cached `layer` (a cache hit) to the lowers when they are made; nothing
    /// happens otherwise (it is in the image's layers the lowers are made from).
    pub async fn add_layer(&mut self, registry: &Registry, layer: &Layer) -> Result<()> {
        if !self.ready {
            return Ok(());
        }
        let dirs = self.kind == Kind::Overlay;
        let layers = std::slice::from_ref(layer);
        let (lowers, events) = registry.layers.lowers(registry, layers, dirs).await?;
        self.notes.extend(events);
        self.add_lowers(registry, lowers).await
    }

    /// Puts `lowers` on top of the stage's; for an overlay, one that is there already is
    /// stacked as a private copy (an overlay takes each directory once).
    async fn add_lowers(&mut self, registry: &Registry, lowers: Vec<PathBuf>) -> Result<()> {
        for lower in lowers {
            let lower = match self.kind == Kind::Overlay && self.lowers.contains(&lower) {
                true => registry.layers.private_copy(&lower).await?,
                false => lower,
            };
            self.lowers.push(lower);
        }
        Ok(())
    }

    /// Ends the step in progress: finds what it changed and writes that as a layer file
    /// into `layers_dir` (also an empty one when `keep_empty`, to be cached); a change
    /// makes the step's result a lower of the next step (overlay: its upper directory,
    /// settled and registered for adoption into the store). `line` names the step in
    /// errors.
    pub async fn commit(
        &mut self,
        registry: &Registry,
        layers_dir: PathBuf,
        opts: LayerOptions,
        keep_empty: bool,
        line: usize,
    ) -> Result<Committed> {
        let Some(step) = self.step.take() else {
            return Ok(Committed {
                empty: true,
                layer: None,
            });
        };
        let mut snapshotter = self.take_snapshotter()?;
        let dir = layers_dir.clone();
        let (snapshotter, done) = crate::blocking::run(move || {
            let done = commit_step(snapshotter.as_mut(), step, &dir, &opts, keep_empty);
            Ok((snapshotter, done))
        })
        .await?;
        self.snapshotter = Some(snapshotter);
        let (committed, upper) =
            done.map_err(|e| full_layers_dir(e, &layers_dir))
                .map_err(BuildError::snapshot(format!(
                    "snapshotting the step of line {line}"
                )))?;
        if let (Some(dir), Some(info)) = (upper, &committed.layer) {
            registry
                .layers
                .add_upper(dir.clone(), &info.digest, &info.diff_id);
            self.lowers.push(dir);
        }
        Ok(committed)
    }

    /// The step's rootfs as a [`RootDir`] for host-side work on the blocking pool (a second
    /// handle on the step's view: drop it before [`StageRootfs::run_root`]).
    pub fn root_dir(&mut self) -> Result<RootDir> {
        let step = self.prepared()?;
        let root = step.root_dir().and_then(RootDir::try_clone);
        root.map_err(BuildError::snapshot("opening the step's rootfs"))
    }

    /// What the RUN sandbox runs the step's command in.
    pub fn run_root(&mut self) -> Result<RunRoot> {
        Ok(self.prepared()?.run_root())
    }

    /// The step in progress.
    fn prepared(&mut self) -> Result<&mut StepRoot> {
        self.step
            .as_mut()
            .ok_or_else(|| BuildError::Options("no step's rootfs is prepared".into()))
    }

    /// What a finished stage leaves for later stages: its lowers (overlay) or its
    /// directory (walk); nothing in `/` mode (the next stage replaces the files; a later
    /// COPY --from materializes the stage elsewhere) or when it was never materialized.
    pub fn into_kept(self) -> Option<Kept> {
        if !self.ready || self.live_ignore.is_some() {
            return None;
        }
        match self.kind {
            Kind::Overlay => Some(Kept::Lowers(self.lowers)),
            Kind::Walk => Some(Kept::Dir(self.dir)),
        }
    }
}

/// The walk snapshotter on `dir`, leaving the paths of `ignore` alone.
fn walk_at(dir: &Path, ignore: Option<Vec<PathBuf>>) -> StatWalk {
    StatWalk::at(dir, ignore.unwrap_or_default())
}

/// A commit's error, where a full filesystem (`ENOSPC`, `EDQUOT`) is named by `layers_dir`,
/// the directory the layer was being written into (the snapshotter's error names the file
/// it was reading).
fn full_layers_dir(e: ocibuild_snapshot::Error, layers_dir: &Path) -> ocibuild_snapshot::Error {
    const FULL: [i32; 2] = [28, 122];
    match &e {
        ocibuild_snapshot::Error::Io { source, .. } => match source.raw_os_error() {
            Some(code) if FULL.contains(&code) => ocibuild_snapshot::Error::io(
                layers_dir,
                "write the layer into",
                std::io::Error::from_raw_os_error(code),
            ),
            _ => e,
        },
        _ => e,
    }
}

/// Diffs `step`, writes its layer (see [`StageRootfs::commit`]) and commits it; returns
/// what was committed and the upper directory that is now a lower (overlay), settled.
fn commit_step(
    snapshotter: &mut dyn Snapshotter,
    mut step: StepRoot,
    layers_dir: &Path,
    opts: &LayerOptions,
    keep_empty: bool,
) -> ocibuild_snapshot::Result<(Committed, Option<PathBuf>)> {
    let diff = snapshotter.diff(&mut step)?;
    let empty = diff.changes.is_empty();
    if empty && !keep_empty {
        // Dropped without commit: an overlay step's directories are removed.
        return Ok((Committed { empty, layer: None }, None));
    }
    std::fs::create_dir_all(layers_dir)
        .map_err(|e| ocibuild_snapshot::Error::io(layers_dir, "create directory", e))?;
    let layer = ocibuild_snapshot::write_layer(&diff.source, &diff.changes, layers_dir, opts)?;
    let upper = match empty {
        true => None,
        false => snapshotter.commit(step)?,
    };
    if let Some(dir) = &upper {
        overlay::settle_upper(dir, &diff.changes)?;
    }
    let layer = Some(layer);
    Ok((Committed { empty, layer }, upper))
}

/// Where the root filesystem of stage `index` is, in the walk's case, in the work
/// directory: `stage-<index>-<process tag>/rootfs`. The tag makes the name new to the
/// filesystem at each build, so that ext4 starts the tree in a block group of its own
/// rather than where the last build's was just deleted (see
/// [`ocibuild_snapshot::spread`]).
pub(crate) fn stage_dir(settings: &Settings, index: usize) -> PathBuf {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let tag = TAG.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!("{}{nanos:08x}", std::process::id())
    });
    settings
        .work
        .join(format!("stage-{index}-{tag}"))
        .join("rootfs")
}

/// The root filesystem of `image` (a finished stage never materialized, or an image named
/// by `--from`) for reading (see [`tree_of_lowers`]), with the events of the extractions
/// it took.
pub(crate) async fn source_tree(
    registry: &Registry,
    image: &Image,
    dir: &Path,
) -> Result<(SourceTree, Vec<BuildEvent>)> {
    let dirs = registry.layers.kind() == Kind::Overlay;
    let (lowers, events) = registry
        .layers
        .lowers(registry, &image.layers, dirs)
        .await?;
    Ok((tree_of_lowers(registry, lowers, dir).await?, events))
}

/// The tree of `lowers` for reading: a read-only overlay of them (overlay), or them
/// extracted into the fresh directory `dir` (the walk, and more lowers than one overlay
/// stacks).
pub(crate) async fn tree_of_lowers(
    registry: &Registry,
    lowers: Vec<PathBuf>,
    dir: &Path,
) -> Result<SourceTree> {
    if registry.layers.kind() == Kind::Overlay {
        match registry.layers.view(&lowers) {
            Err(BuildError::Snapshot { source, .. })
                if matches!(*source, ocibuild_snapshot::Error::TooManyLowers { .. }) => {}
            view => return view,
        }
    }
    let dir = dir.to_path_buf();
    let tree = SourceTree::dir(dir.clone());
    crate::blocking::run(move || {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(BuildError::io(&dir))?;
        }
        std::fs::create_dir_all(&dir).map_err(BuildError::io(&dir))?;
        for lower in &lowers {
            let unpacked = match lower.is_file() {
                true => ocibuild_snapshot::unpack_layer_file(lower, &dir),
                false => ocibuild_snapshot::unpack_layer_dir(lower, &dir, &[]),
            };
            let what = format!("unpacking {} into {}", lower.display(), dir.display());
            unpacked.map_err(BuildError::snapshot(what))?;
        }
        Ok(())
    })
    .await?;
    Ok(tree)
}

/// Prepares the walk's directory: a fresh empty directory, or in `/` mode (`ignore` given)
/// `/` itself. Like kaniko, the first stage is unpacked over the container's files; later
/// stages first remove what the previous one left.
async fn clear(dir: PathBuf, ignore: Option<Vec<PathBuf>>, stages: &Stages) -> Result<()> {
    use std::sync::atomic::Ordering;
    let used_before = ignore.is_some() && stages.live_root_used.swap(true, Ordering::SeqCst);
    crate::blocking::run(move || match ignore {
        Some(ignore) if used_before => {
            crate::liveroot::delete_filesystem(&dir, &ignore).map_err(BuildError::io(&dir))
        }
        Some(_) => Ok(()),
        None => {
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(BuildError::io(&dir))?;
            }
            std::fs::create_dir_all(&dir).map_err(BuildError::io(&dir))
        }
    })
    .await
}
