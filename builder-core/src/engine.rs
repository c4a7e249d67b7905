//! The handles a stage runs with, instead of the whole builder: the read-only
//! [`Settings`] (with the few [`StageOptions`] stages read), the [`Registry`] (clients,
//! blob store and the layer store the stages' root filesystems are stacked on), the [`StepCache`] with its hit and miss counters, the [`Progress`] that
//! owns the build's [`EventSink`], and the cross-stage state [`Stages`]. `build` makes them and lends them to `stage` as [`Handles`]; this module
//! imports neither.

use crate::cache::LayerCache;
use crate::cancel::CancelToken;
use crate::error::{BuildError, Result};
use crate::events::{BuildEvent, Events};
use crate::image::{BlobStore, Image, Layer, LayerBlob, PulledImage};
use crate::isolation::Isolation;
use crate::layers::{BuildLayers, SourceTree};
use crate::mounts::{CacheMounts, MountError, Secrets};
use crate::options::BuildOptions;
use crate::upload::Uploads;
use ocibuild_dockerfile::parser::Instruction;
use ocibuild_dockerfile::pathmatch::IgnoreRules;
use ocibuild_dockerfile::plan::{BuildArgs, Plan};
use ocibuild_registry::{Client, Platform, Reference};
use ocibuild_snapshot::Compression;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::Instant;

/// What the stages read and never change.
pub(crate) struct Settings {
    /// The build options the stages read.
    pub options: StageOptions,
    /// The plan of the Dockerfile.
    pub plan: Plan,
    /// The work directory: root filesystems, layers, scratch files.
    pub work: PathBuf,
    /// The canonical build context directory.
    pub context: PathBuf,
    /// The context's `.dockerignore` rules.
    pub ignore: IgnoreRules,
    /// The target platform.
    pub platform: Platform,
    /// The creation time of the image and its history entries (RFC 3339).
    pub created: String,
    /// Secrets given for the build.
    pub secrets: Secrets,
    /// With [`crate::Isolation::None`]: the paths of `/` to leave alone, relative to `/`.
    pub live_ignore: Option<Vec<PathBuf>>,
    /// Cancels the build: checked before each step and while RUN commands run.
    pub cancel: CancelToken,
}

/// The few [`BuildOptions`] the stages read (the rest is the build's: outputs, pushes,
/// registries, the cache stores).
#[derive(Debug, Clone)]
pub(crate) struct StageOptions {
    /// `--build-arg` values.
    pub build_args: BuildArgs,
    /// How RUN steps are isolated.
    pub isolation: Isolation,
    /// `RUN --security=insecure` is permitted.
    pub allow_insecure: bool,
    /// Layer compression.
    pub compression: Compression,
    /// Layer timestamps set to the epoch.
    pub reproducible: bool,
    /// RUN layers are looked up in and stored to the layer cache.
    pub cache_run_layers: bool,
    /// COPY/ADD layers are looked up in and stored to the layer cache.
    pub cache_copy_layers: bool,
}

impl From<&BuildOptions> for StageOptions {
    fn from(opts: &BuildOptions) -> StageOptions {
        StageOptions {
            build_args: opts.build_args.clone(),
            isolation: opts.isolation,
            allow_insecure: opts.allow_insecure,
            compression: opts.compression,
            reproducible: opts.reproducible,
            cache_run_layers: opts.cache_run_layers,
            cache_copy_layers: opts.cache_copy_layers,
        }
    }
}

/// The registry side of a build: its clients, the blob store of its work directory and
/// the queue that uploads the image's layers while the build goes on, and the layer store
/// its root filesystems are stacked from.
pub(crate) struct Registry {
    /// Pulls base images and their layers.
    pub pull_client: Client,
    /// Pushes the image.
    pub push_client: Client,
    /// Layer files, downloaded or made.
    pub blobs: BlobStore,
    /// Uploads to the destinations: stages hand their layers to it
    /// ([`Uploads::offer_stage`]) as soon as they exist.
    pub uploads: Uploads,
    /// Extracted layers, the snapshotter choice and the overlay step directories.
    pub layers: BuildLayers,
    /// Images pulled whose layers are not all checked against their diff IDs yet (see
    /// [`Registry::pull_image`]).
    unverified: Mutex<Vec<(String, Image)>>,
}

impl Registry {
    /// The registry side of a build with these clients (pull, push), stores and upload
    /// queue.
    pub fn new(
        clients: (Client, Client),
        blobs: BlobStore,
        uploads: Uploads,
        layers: BuildLayers,
    ) -> Registry {
        let (pull_client, push_client) = clients;
        Registry {
            pull_client,
            push_client,
            blobs,
            uploads,
            layers,
            unverified: Mutex::default(),
        }
    }

    /// The local file of `layer`, downloaded on first use.
    pub async fn local_file(&self, layer: &Layer) -> Result<PathBuf> {
        self.blobs.local_file(&self.pull_client, layer).await
    }

    /// Resolves `name` to a manifest and config (layers stay remote until needed). The
    /// caller reports [`PulledImage::event`] when the pull is part of the build's progress.
    ///
    /// Every base layer is checked against its diff_id before the build ends (whether it
    /// is extracted or only referenced by the output image): a layer the store holds from
    /// the same blob was checked when it went in, one extracted during the build is checked
    /// by the store as it streams in, and [`Registry::verify_pulled`] checks the others.
    pub async fn pull_image(&self, name: &str, platform: &Platform) -> Result<PulledImage> {
        let reference =
            Reference::parse(name).map_err(BuildError::registry(format!("base image {name:?}")))?;
        let pulled =
            crate::image::resolve_image(&self.pull_client, reference, platform, "pulling").await?;
        for layer in &pulled.image.layers {
            if let LayerBlob::Remote { descriptor, .. } = &layer.blob {
                let digest = descriptor.digest().as_ref();
                if self.layers.holds_blob(&layer.diff_id, digest) {
                    self.blobs.record_known(digest, &layer.diff_id);
                }
            }
        }
        let mut unverified = self.unverified.lock().unwrap_or_else(|e| e.into_inner());
        let same = |(n, i): &(String, Image)| n == name && i.config == pulled.image.config;
        if !unverified.iter().any(same) {
            unverified.push((name.to_string(), pulled.image.clone()));
        }
        Ok(pulled)
    }

    /// Checks the layers of every image pulled against the diff_ids their configs list
    /// (downloading those not checked yet); called when the stages are done, before
    /// anything is pushed or written.
    pub async fn verify_pulled(&self) -> Result<()> {
        let pulled =
            std::mem::take(&mut *self.unverified.lock().unwrap_or_else(|e| e.into_inner()));
        for (name, image) in pulled {
            self.blobs
                .verify_layers(&self.pull_client, &name, &image)
                .await?;
        }
        Ok(())
    }
}

/// The layer cache and how it fared.
pub(crate) struct StepCache {
    /// The stores looked up and written to (empty when the cache is off).
    pub layers: LayerCache,
    /// Steps whose layer came from the cache.
    pub hits: usize,
    /// Cacheable steps that ran.
    pub misses: usize,
}

impl StepCache {
    /// `layers` with no hits or misses yet.
    pub fn new(layers: LayerCache) -> StepCache {
        StepCache {
            layers,
            hits: 0,
            misses: 0,
        }
    }
}

/// Where a build reports its [`BuildEvent`]s: the caller's callback. The callback is only
/// `Send`; it sits behind a mutex so that the handles are `Sync` and a stage's futures may
/// hold shared borrows of them across awaits (it is never contended: the build reports
/// from one task).
pub(crate) struct EventSink<'e> {
    callback: std::sync::Mutex<Events<'e>>,
}

impl<'e> EventSink<'e> {
    /// Reports to `callback`.
    pub fn new(callback: Events<'e>) -> EventSink<'e> {
        EventSink {
            callback: std::sync::Mutex::new(callback),
        }
    }

    /// Reports `event`.
    pub fn emit(&mut self, event: BuildEvent) {
        let callback = self
            .callback
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        callback(event)
    }
}

/// Step numbers and the current step's warnings, reported to the build's [`EventSink`].
pub(crate) struct Progress<'e> {
    sink: EventSink<'e>,
    /// The number of the current step (1-based; 0 before the first).
    pub step: usize,
    /// The number of steps in the stages built.
    pub total_steps: usize,
    /// Warnings raised during a step, reported at its end.
    warnings: Vec<String>,
}

impl<'e> Progress<'e> {
    /// No step yet; events go to `sink`.
    pub fn new(sink: EventSink<'e>) -> Progress<'e> {
        Progress {
            sink,
            step: 0,
            total_steps: 0,
            warnings: Vec::new(),
        }
    }

    /// Reports `event` now.
    pub fn report(&mut self, event: BuildEvent) {
        self.sink.emit(event)
    }

    /// Starts the next step, `ins` of `stage`: its number and start time.
    pub fn begin_step(&mut self, stage: &str, ins: &Instruction) -> (usize, Instant) {
        self.step += 1;
        self.sink.emit(BuildEvent::Step {
            number: self.step,
            total: self.total_steps,
            stage: stage.to_string(),
            instruction: ins.original.clone(),
        });
        (self.step, Instant::now())
    }

    /// Ends the step `started` that made `layer`, reporting its warnings first.
    pub fn end_step(&mut self, started: (usize, Instant), layer: Option<(String, u64)>) {
        for warning in std::mem::take(&mut self.warnings) {
            self.sink.emit(BuildEvent::Warning(warning));
        }
        self.sink.emit(BuildEvent::StepDone {
            number: started.0,
            elapsed: started.1.elapsed(),
            layer,
        });
    }

    /// Records a warning, reported when the current step ends.
    pub fn warn(&mut self, warning: String) {
        self.warnings.push(warning);
    }
}

/// What the stages pass on to each other.
pub(crate) struct Stages {
    /// The stages that have run, by index.
    pub finished: Vec<Option<FinishedStage>>,
    /// The build args some ARG consumed.
    pub used_args: BTreeSet<String>,
    /// Whether a stage was already unpacked into `/`.
    pub live_root_used: AtomicBool,
    /// The root filesystems of images named by `--from`, by name, once read.
    pub image_trees: BTreeMap<String, SourceTree>,
    /// Where the directories of `RUN --mount=type=cache` live.
    cache_mounts_dir: PathBuf,
    /// Those directories, once opened.
    cache_mounts: Option<CacheMounts>,
}

impl Stages {
    /// `count` stages, none run yet, with cache mounts in `cache_mounts_dir`.
    pub fn new(count: usize, cache_mounts_dir: PathBuf) -> Stages {
        Stages {
            finished: (0..count).map(|_| None).collect(),
            used_args: BTreeSet::new(),
            live_root_used: AtomicBool::default(),
            image_trees: BTreeMap::new(),
            cache_mounts_dir,
            cache_mounts: None,
        }
    }

    /// The directories of `RUN --mount=type=cache`, opened on first use.
    pub fn cache_mounts(&mut self) -> std::result::Result<&CacheMounts, MountError> {
        if self.cache_mounts.is_none() {
            self.cache_mounts = Some(CacheMounts::open(&self.cache_mounts_dir)?);
        }
        Ok(self.cache_mounts.as_ref().expect("opened above"))
    }
}

/// A stage that has run: its image and, if it was materialized, its root filesystem.
pub(crate) struct FinishedStage {
    /// Its image.
    pub image: Image,
    /// Its root filesystem, if it was materialized (never in `/` mode).
    pub rootfs: Option<Kept>,
    /// Its root filesystem as later stages read it, once one did.
    pub tree: Option<SourceTree>,
    /// The cache key of its last step.
    pub key: String,
    /// Its ARGs and their values at the end, for stages built on it.
    pub args: BTreeMap<String, Option<String>>,
}

/// What a finished stage leaves of its root filesystem.
#[derive(Debug, Clone)]
pub(crate) enum Kept {
    /// Overlay: its lower directories, one per layer of its image.
    Lowers(Vec<PathBuf>),
    /// Walk: its directory.
    Dir(PathBuf),
}

/// The handles a stage borrows from the build: read-only settings and registry, mutable
/// cache counters, progress and cross-stage state.
pub(crate) struct Handles<'b, 'e> {
    /// What the stage reads.
    pub settings: &'b Settings,
    /// Pulls and blobs.
    pub registry: &'b Registry,
    /// The layer cache.
    pub cache: &'b mut StepCache,
    /// Step numbers, warnings and the event sink.
    pub progress: &'b mut Progress<'e>,
    /// The other stages.
    pub stages: &'b mut Stages,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_numbers_steps_and_reports_warnings_before_the_step_is_done() {
        let parsed = ocibuild_dockerfile::parse(
            "FROM scratch\nENV A=1\n",
            std::path::Path::new("Dockerfile"),
        )
        .unwrap();
        let mut seen = Vec::new();
        let mut events = |event: BuildEvent| seen.push(event);
        let mut progress = Progress::new(EventSink::new(&mut events));
        progress.total_steps = 2;
        for ins in &parsed.instructions {
            let started = progress.begin_step("0", ins);
            progress.warn(format!("warning of step {}", started.0));
            progress.end_step(started, None);
        }
        drop(progress);
        let names: Vec<String> = seen
            .iter()
            .map(|event| match event {
                BuildEvent::Step { number, total, .. } => format!("step {number}/{total}"),
                BuildEvent::Warning(text) => text.clone(),
                BuildEvent::StepDone { number, .. } => format!("done {number}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            names,
            [
                "step 1/2",
                "warning of step 1",
                "done 1",
                "step 2/2",
                "warning of step 2",
                "done 2"
            ]
        );
    }

    #[test]
    fn stages_open_the_cache_mounts_directory_on_first_use() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("mounts");
        let mut stages = Stages::new(2, dir.clone());
        assert_eq!(stages.finished.len(), 2);
        assert!(!dir.exists());
        stages.cache_mounts().unwrap();
        assert!(dir.exists());
    }
}
