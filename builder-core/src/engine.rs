//! The handles a stage runs with, instead of the whole builder: the read-only
//! [`Settings`], the [`Registry`] (clients and blob store), the [`StepCache`] with its hit
//! and miss counters, the [`Progress`] reported as events, and the cross-stage state
//! [`Stages`]. `build` makes them and lends them to `stage` as [`Handles`]; this module
//! imports neither.

use crate::cache::LayerCache;
use crate::cancel::CancelToken;
use crate::error::{BuildError, Result};
use crate::events::{BuildEvent, Events};
use crate::image::{BlobStore, Image, ImageFormat, Layer, LayerBlob};
use crate::mounts::{CacheMounts, MountError, Secrets};
use crate::options::BuildOptions;
use ocibuild_dockerfile::parser::Instruction;
use ocibuild_dockerfile::pathmatch::IgnoreRules;
use ocibuild_dockerfile::plan::Plan;
use ocibuild_image::config::ImageConfig;
use ocibuild_registry::{Client, Platform, Reference};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// What the stages read and never change.
pub(crate) struct Settings<'o> {
    /// The build's options.
    pub opts: &'o BuildOptions,
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

/// The registry side of a build: its clients and the blob store of its work directory.
pub(crate) struct Registry {
    /// Pulls base images and their layers.
    pub pull_client: Client,
    /// Pushes the image.
    pub push_client: Client,
    /// Layer files, downloaded or made.
    pub blobs: BlobStore,
}

impl Registry {
    /// The local file of `layer`, downloaded on first use.
    pub async fn local_file(&self, layer: &Layer) -> Result<PathBuf> {
        self.blobs.local_file(&self.pull_client, layer).await
    }

    /// Resolves `name` to a manifest and config (layers stay remote until needed).
    pub async fn pull_image(
        &self,
        name: &str,
        platform: &Platform,
        events: Events<'_>,
    ) -> Result<Image> {
        let reference =
            Reference::parse(name).map_err(BuildError::registry(format!("base image {name:?}")))?;
        let context = format!("pulling {reference}");
        let pulled = self
            .pull_client
            .pull_manifest(&reference, platform)
            .await
            .map_err(BuildError::registry(&context))?;
        let config_bytes = self
            .pull_client
            .pull_blob_bytes(&reference, pulled.manifest.config().digest().as_ref())
            .await
            .map_err(BuildError::registry(&context))?;
        let config = ImageConfig::from_json(&config_bytes).map_err(|e| {
            BuildError::Options(format!(
                "{context}: the image config is not valid JSON: {e}"
            ))
        })?;
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != pulled.manifest.layers().len() {
            return Err(BuildError::Options(format!(
                "{context}: the manifest has {} layers but the config lists {} diff_ids",
                pulled.manifest.layers().len(),
                diff_ids.len()
            )));
        }
        let layers = pulled
            .manifest
            .layers()
            .iter()
            .zip(diff_ids)
            .map(|(descriptor, diff_id)| Layer {
                blob: LayerBlob::Remote {
                    source: Box::new(reference.clone()),
                    descriptor: Box::new(descriptor.clone()),
                },
                diff_id: diff_id.clone(),
            })
            .collect();
        let image = Image {
            config,
            layers,
            format: ImageFormat::of_manifest(&pulled.media_type),
        };
        // Every base layer is checked against its diff_id here, whether it is unpacked
        // later or only referenced by the output image.
        self.blobs
            .verify_layers(&self.pull_client, name, &image)
            .await?;
        events(BuildEvent::Pulled {
            reference: reference.to_string(),
            digest: pulled.digest.clone(),
        });
        Ok(image)
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

/// Step numbers and the current step's warnings, reported as [`BuildEvent`]s.
#[derive(Default)]
pub(crate) struct Progress {
    /// The number of the current step (1-based; 0 before the first).
    pub step: usize,
    /// The number of steps in the stages built.
    pub total_steps: usize,
    /// Warnings raised where no event sink is at hand, reported at the end of the step.
    warnings: Vec<String>,
}

impl Progress {
    /// Starts the next step, `ins` of `stage`: its number and start time.
    pub fn begin_step(
        &mut self,
        stage: &str,
        ins: &Instruction,
        events: Events<'_>,
    ) -> (usize, Instant) {
        self.step += 1;
        events(BuildEvent::Step {
            number: self.step,
            total: self.total_steps,
            stage: stage.to_string(),
            instruction: ins.original.clone(),
        });
        (self.step, Instant::now())
    }

    /// Ends the step `started` that made `layer`, reporting its warnings first.
    pub fn end_step(
        &mut self,
        started: (usize, Instant),
        layer: Option<(String, u64)>,
        events: Events<'_>,
    ) {
        for warning in std::mem::take(&mut self.warnings) {
            events(BuildEvent::Warning(warning));
        }
        events(BuildEvent::StepDone {
            number: started.0,
            elapsed: started.1.elapsed(),
            layer,
        });
    }

    /// Records a warning for the current step.
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
    /// Its root filesystem, if it was unpacked (never in `/` mode).
    pub rootfs: Option<PathBuf>,
    /// The cache key of its last step.
    pub key: String,
    /// Its ARGs and their values at the end, for stages built on it.
    pub args: BTreeMap<String, Option<String>>,
}

/// The handles a stage borrows from the build: read-only settings and registry, mutable
/// cache counters, progress and cross-stage state.
pub(crate) struct Handles<'b, 'o> {
    /// What the stage reads.
    pub settings: &'b Settings<'o>,
    /// Pulls and blobs.
    pub registry: &'b Registry,
    /// The layer cache.
    pub cache: &'b mut StepCache,
    /// Step numbers and warnings.
    pub progress: &'b mut Progress,
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
        let mut progress = Progress {
            total_steps: 2,
            ..Progress::default()
        };
        let mut seen = Vec::new();
        let mut events = |event: BuildEvent| seen.push(event);
        for ins in &parsed.instructions {
            let started = progress.begin_step("0", ins, &mut events);
            progress.warn(format!("warning of step {}", started.0));
            progress.end_step(started, None, &mut events);
        }
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
