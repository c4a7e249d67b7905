//! The root filesystem of a stage and its snapshots: where it lives, how it is
//! materialized from the image's layers, the baseline a step's changes are measured
//! against, and the layer written from those changes. This is the one place that knows the
//! root filesystem is a directory unpacked from tar layers and diffed by [`StatWalk`]; the
//! stage loop only asks for the directory, the changes and the layer.

use crate::engine::{Registry, Settings, Stages};
use crate::error::{BuildError, Result};
use crate::image::Image;
use ocibuild_snapshot::{Changes, LayerInfo, LayerOptions, StatWalk};
use std::path::{Path, PathBuf};

/// The root filesystem of the stage being built.
pub(crate) struct StageRootfs {
    /// Where it lives: `/` when building in place, else the stage's directory in the
    /// work directory.
    dir: PathBuf,
    /// In `/` mode: the paths of `/` to leave alone, relative to `/`.
    live_ignore: Option<Vec<PathBuf>>,
    /// Whether it has been materialized (and a baseline recorded).
    ready: bool,
    /// What finds the changes since the baseline.
    snapshotter: StatWalk,
}

impl StageRootfs {
    /// The root filesystem of stage `index`, not materialized yet.
    pub fn new(settings: &Settings, index: usize) -> StageRootfs {
        let dir = match &settings.live_ignore {
            Some(_) => PathBuf::from("/"),
            None => stage_dir(settings, index),
        };
        let ignore = settings.live_ignore.clone().unwrap_or_default();
        StageRootfs {
            dir,
            live_ignore: settings.live_ignore.clone(),
            ready: false,
            snapshotter: StatWalk::new(ignore),
        }
    }

    /// The directory, once materialized.
    pub fn path(&self) -> Option<&Path> {
        self.ready.then_some(self.dir.as_path())
    }

    /// The directory, unpacked from `image`'s layers on first use (with a baseline
    /// recorded then).
    pub async fn materialized(
        &mut self,
        settings: &Settings,
        registry: &Registry,
        stages: &Stages,
        image: &Image,
    ) -> Result<PathBuf> {
        if !self.ready {
            materialize(settings, registry, stages, image, &self.dir).await?;
            self.record_baseline().await?;
            self.ready = true;
        }
        Ok(self.dir.clone())
    }

    /// Adds the layer `file` (taken from the cache; `digest` names it in errors): unpacked,
    /// with a new baseline, when the directory is materialized; nothing happens otherwise
    /// (the layer is unpacked with the others on first use).
    pub async fn add_layer(&mut self, file: PathBuf, digest: &str) -> Result<()> {
        if !self.ready {
            return Ok(());
        }
        let what = format!("unpacking cached layer {digest}");
        unpack(file, self.dir.clone(), None, what).await?;
        self.record_baseline().await
    }

    /// What changed since the baseline.
    pub async fn changes(&mut self) -> Result<Changes> {
        let mut snapshotter = std::mem::take(&mut self.snapshotter);
        let rootfs = self.dir.clone();
        let (snapshotter, changes) = crate::blocking::run(move || {
            let changes = snapshotter
                .changes(&rootfs)
                .map_err(BuildError::snapshot(format!(
                    "snapshotting {}",
                    rootfs.display()
                )))?;
            Ok((snapshotter, changes))
        })
        .await?;
        self.snapshotter = snapshotter;
        Ok(changes)
    }

    /// Writes `changes` as a layer file into `layers_dir`; `line` names the step in
    /// errors.
    pub async fn write_layer(
        &self,
        changes: Changes,
        layers_dir: PathBuf,
        opts: LayerOptions,
        line: usize,
    ) -> Result<LayerInfo> {
        let rootfs = self.dir.clone();
        crate::blocking::run(move || {
            std::fs::create_dir_all(&layers_dir).map_err(BuildError::io(&layers_dir))?;
            ocibuild_snapshot::write_layer(&rootfs, &changes, &layers_dir, &opts).map_err(
                BuildError::snapshot(format!("writing the layer of line {line}")),
            )
        })
        .await
    }

    /// The directory a finished stage leaves for later stages to copy from: none in `/`
    /// mode (the next stage replaces the files; a later COPY --from unpacks the stage's
    /// layers elsewhere) or when it was never materialized.
    pub fn into_kept(self) -> Option<PathBuf> {
        (self.ready && self.live_ignore.is_none()).then_some(self.dir)
    }

    /// Records the state of the directory that the next snapshot compares with.
    async fn record_baseline(&mut self) -> Result<()> {
        let mut snapshotter = std::mem::take(&mut self.snapshotter);
        let rootfs = self.dir.clone();
        self.snapshotter = crate::blocking::run(move || {
            snapshotter
                .baseline(&rootfs)
                .map_err(BuildError::snapshot(format!(
                    "recording {}",
                    rootfs.display()
                )))?;
            Ok(snapshotter)
        })
        .await?;
        Ok(())
    }
}

/// Where the root filesystem of stage `index` is materialized in the work directory.
pub(crate) fn stage_dir(settings: &Settings, index: usize) -> PathBuf {
    settings.work.join(format!("stage-{index}")).join("rootfs")
}

/// Unpacks `image`'s layers into a fresh `dir` (or, in `/` mode, over `/`).
pub(crate) async fn materialize(
    settings: &Settings,
    registry: &Registry,
    stages: &Stages,
    image: &Image,
    dir: &Path,
) -> Result<()> {
    let ignore = match (&settings.live_ignore, dir == Path::new("/")) {
        (Some(ignore), true) => Some(ignore.clone()),
        _ => None,
    };
    clear(dir.to_path_buf(), ignore.clone(), stages).await?;
    for layer in &image.layers {
        settings.cancel.check()?;
        let file = registry.local_file(layer).await?;
        let what = match ignore {
            Some(_) => format!("unpacking layer {} into /", layer.digest()),
            None => format!("unpacking layer {}", layer.digest()),
        };
        unpack(file, dir.to_path_buf(), ignore.clone(), what).await?;
    }
    Ok(())
}

/// Prepares `dir` for unpacking: a fresh empty directory, or in `/` mode (`ignore` given)
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

/// Unpacks the layer `file` into `rootfs` on the blocking thread pool, leaving the paths
/// of `ignore` alone when given; `what` names the work in errors.
async fn unpack(
    file: PathBuf,
    rootfs: PathBuf,
    ignore: Option<Vec<PathBuf>>,
    what: String,
) -> Result<()> {
    crate::blocking::run(move || {
        let unpacked = match &ignore {
            Some(ignore) => ocibuild_snapshot::unpack_layer_file_skipping(&file, &rootfs, ignore),
            None => ocibuild_snapshot::unpack_layer_file(&file, &rootfs),
        };
        unpacked.map(|_| ()).map_err(BuildError::snapshot(what))
    })
    .await
}
