//! Running one stage: each instruction changes the image config, the root filesystem, or
//! both; filesystem changes are snapshotted into a layer per instruction.
//!
//! Each instruction is lowered to an [`ir::Op`] with the stage's [`Scope`] (its ARGs, the
//! image's ENV, SHELL, USER and WORKDIR), which expands variables and parses flags. Every
//! op then goes through one loop, [`StageRun::step`]: its kind ([`step::Step`]: RUN,
//! COPY/ADD, WORKDIR, metadata) checks itself, edits the config and names its key inputs;
//! the loop keys it, looks the key up in the layer cache (a hit adds the cached layer),
//! runs the step on a miss and commits its layer. The root filesystem, its snapshotter and
//! each step's changes belong to [`rootfs::StageRootfs`]: a step's host-side work goes
//! through [`StageRun::root_dir`], a RUN through the step's [`ocibuild_snapshot::RunRoot`].
//! RUN sees ARGs and ENV as environment variables, but only ENV is stored in the image.

mod rootfs;
mod step;

use crate::cache::{CacheHit, CachedLayer, StepKey};
use crate::engine::{
    FinishedStage, Handles, Kept, Progress, Registry, Settings, Stages, StepCache,
};
use crate::error::{BoxError, BuildError, Result};
use crate::events::BuildEvent;
use crate::image::{Image, ImageFormat, Layer, LayerBlob};
use crate::layers::SourceTree;
use ocibuild_dockerfile::ir::{self, Op, Scope};
use ocibuild_dockerfile::parser::Instruction;
use ocibuild_dockerfile::plan::{Stage, StageBase};
use ocibuild_image::config::ImageConfig;
use ocibuild_image::manifest::descriptor;
use ocibuild_image::platform::{self, Platform};
use ocibuild_registry::Reference;
use ocibuild_snapshot::{LayerInfo, LayerOptions, RootDir};
use rootfs::StageRootfs;
use std::collections::BTreeMap;
use step::{step_key, Layering, Step};

/// What a step produced: the digest and compressed size of its layer, if it made one.
type StepLayer = Option<(String, u64)>;

/// The state of the stage being built, with the handles it borrows from the build.
pub(crate) struct StageRun<'b, 'e> {
    settings: &'b Settings,
    registry: &'b Registry,
    cache: &'b mut StepCache,
    progress: &'b mut Progress<'e>,
    stages: &'b mut Stages,
    index: usize,
    label: String,
    image: Image,
    rootfs: StageRootfs,
    args: BTreeMap<String, Option<String>>,
    cmd_set: bool,
    /// The cache key of the last step (see [`crate::cache::StepKey`]).
    key: String,
    /// The key to store the next committed layer under (set on a cache miss).
    pending_key: Option<String>,
    /// A cached layer of this stage could not be obtained: the rest of the stage is
    /// rebuilt (its keys are not looked up; its layers are stored under them).
    rebuilding: bool,
}

impl<'b, 'e> StageRun<'b, 'e> {
    /// Runs stage `index` of the plan with the build's handles `h`.
    pub(crate) async fn run(mut h: Handles<'b, 'e>, index: usize) -> Result<FinishedStage> {
        let stage = h.settings.plan.stages[index].clone();
        let label = stage.name.clone().unwrap_or_else(|| index.to_string());
        let started = h.progress.begin_step(&label, &stage.from);
        let (image, key) = start(&mut h, &stage).await?;
        h.progress.end_step(started, None);
        let inherited = inherited_lowers(h.stages, &stage.base);
        let mut run = StageRun {
            rootfs: StageRootfs::new(h.settings, h.registry, index, inherited)?,
            args: inherited_args(h.stages, &stage.base),
            settings: h.settings,
            registry: h.registry,
            cache: h.cache,
            progress: h.progress,
            stages: h.stages,
            index,
            label,
            image,
            cmd_set: false,
            key,
            pending_key: None,
            rebuilding: false,
        };
        run.run_onbuild_triggers(&stage.from).await?;
        run.registry.uploads.offer_stage(index, &run.image.layers)?;
        for ins in &stage.instructions {
            run.settings.cancel.check()?;
            let started = run.progress.begin_step(&run.label, ins);
            let layer = run.dispatch(ins).await?;
            run.registry.uploads.offer_stage(index, &run.image.layers)?;
            run.progress.end_step(started, layer);
        }
        Ok(FinishedStage {
            image: run.image,
            rootfs: run.rootfs.into_kept(),
            tree: None,
            key: run.key,
            args: run.args,
        })
    }

    /// Lowers `ins` and runs it as the step of its kind.
    async fn dispatch(&mut self, ins: &Instruction) -> Result<StepLayer> {
        match self.lower(ins)? {
            Op::Run(op) => self.step(ins, op).await,
            Op::Copy(op) => self.step(ins, op).await,
            Op::Workdir(op) => self.step(ins, op).await,
            Op::Meta(edit) => self.step(ins, edit).await,
        }
    }

    /// The stage loop for one step: `prepare → key → lookup → execute → commit`. A step
    /// that only edits the config is keyed and recorded in the history; one that makes a
    /// layer takes it from the cache on a hit, or runs and commits its changes.
    async fn step<S: Step>(&mut self, ins: &Instruction, step: S) -> Result<StepLayer> {
        step.prepare(self, ins)?;
        let fields = step.key_fields(self, ins).await?;
        self.key = step_key(&self.key, step.kind(), &fields);
        let cached = match step.layering(&self.settings.options) {
            Layering::Config => {
                self.history(ins, true);
                return Ok(None);
            }
            Layering::Layer { cached } => cached,
        };
        if let Some(done) = self.lookup(ins, cached).await? {
            return Ok(done);
        }
        step.execute(self, ins).await?;
        self.commit(ins).await
    }

    /// Runs the base image's ONBUILD triggers as if they followed FROM, then drops them:
    /// triggers are not inherited by grand-children.
    async fn run_onbuild_triggers(&mut self, from: &Instruction) -> Result<()> {
        let Some(triggers) = self.image.config.config.on_build.take() else {
            return Ok(());
        };
        for trigger in triggers {
            let text = format!("FROM scratch\n{trigger}\n");
            let parsed = ocibuild_dockerfile::parser::parse(&text, &self.settings.plan.file)
                .map_err(|e| {
                    self.step_err(
                        from,
                        format!(
                            "ONBUILD trigger {trigger:?} of the base image: {}",
                            e.message
                        ),
                    )
                })?;
            let Some(mut ins) = parsed.instructions.into_iter().nth(1) else {
                continue;
            };
            ins.line = from.line;
            ins.end_line = from.end_line;
            self.dispatch(&ins).await?;
        }
        Ok(())
    }

    /// What is in scope for lowering the next instruction.
    fn scope(&self) -> Scope {
        let config = &self.image.config.config;
        Scope {
            escape: self.settings.plan.escape,
            args: self.args.clone(),
            env: self.image.config.env_pairs(),
            shell: config.shell.clone(),
            user: config.user.clone(),
            workdir: config.working_dir.clone(),
            build_args: self.settings.options.build_args.clone(),
            global_args: self.settings.plan.global_args.clone(),
            auto_args: self.settings.plan.auto_args.clone(),
        }
    }

    /// Lowers `ins` with the stage's scope (the engine applies its effects itself).
    fn lower(&self, ins: &Instruction) -> Result<Op> {
        ir::lower(ins, &mut self.scope()).map_err(|e| self.step_err(ins, e.reason))
    }

    fn history(&mut self, ins: &Instruction, empty_layer: bool) {
        let created = self.settings.created.clone();
        self.image
            .config
            .push_history(&created, &ins.original, empty_layer);
    }

    fn step_err(&self, ins: &Instruction, source: impl Into<BoxError>) -> BuildError {
        BuildError::Step {
            file: self.settings.plan.file.clone(),
            line: ins.line,
            instruction: ins.original.clone(),
            source: source.into(),
        }
    }

    /// Prepares the current step's root filesystem (the stage's, materialized from its
    /// layers on first use).
    async fn prepare_rootfs(&mut self) -> Result<()> {
        let (settings, registry, stages) = (self.settings, self.registry, &*self.stages);
        let prepared = self
            .rootfs
            .step(settings, registry, stages, &self.image, &self.label)
            .await
            .map(drop);
        self.report_notes();
        prepared
    }

    /// A handle on the current step's root filesystem (prepared first), for host-side work
    /// on the blocking pool; drop it before the step's RUN.
    pub(crate) async fn root_dir(&mut self) -> Result<RootDir> {
        self.prepare_rootfs().await?;
        self.rootfs.root_dir()
    }

    /// Reports what the root filesystem noted (extractions, fallbacks) to the progress.
    fn report_notes(&mut self) {
        for note in self.rootfs.take_notes() {
            match note {
                BuildEvent::Warning(text) => self.progress.warn(text),
                event => self.progress.report(event),
            }
        }
    }
}

impl StageRun<'_, '_> {
    /// When the layer cache is on for this kind of step (`cached`), looks the current key
    /// up: a hit whose layer is at hand adds it to the image (and returns what the step
    /// produced); a miss, or a hit whose layer cannot be obtained, remembers the key so
    /// that the step's layer is stored under it.
    async fn lookup(&mut self, ins: &Instruction, cached: bool) -> Result<Option<StepLayer>> {
        if !cached || self.cache.layers.is_empty() {
            return Ok(None);
        }
        let key = self.key.clone();
        let hit = match self.rebuilding {
            true => None,
            false => self.find(ins, &key).await,
        };
        let taken = match hit {
            Some(hit) => self.obtain(ins, hit).await?,
            None => None,
        };
        self.progress.report(BuildEvent::Cache {
            key: key.clone(),
            hit: taken.is_some(),
        });
        match taken {
            None => {
                self.cache.misses += 1;
                self.pending_key = Some(key);
                Ok(None)
            }
            Some(layer) => {
                self.cache.hits += 1;
                Ok(Some(self.apply_hit(ins, layer).await?))
            }
        }
    }

    /// Looks `key` up in the layer cache, reporting the stores' warnings (named after the
    /// step `ins`); a failed lookup is a miss with a warning.
    async fn find(&mut self, ins: &Instruction, key: &str) -> Option<CacheHit> {
        let mut warnings = Vec::new();
        let hit = match self.cache.layers.get(key, &mut warnings).await {
            Ok(hit) => hit,
            Err(e) => {
                warnings.push(format!("layer cache lookup of {key} failed: {e}"));
                None
            }
        };
        for warning in warnings {
            let warning = format!("{}: {warning}", self.step_name(ins));
            self.progress.report(BuildEvent::Warning(warning));
        }
        hit
    }

    /// The layer of `hit`, at hand in the work directory, so that extracting or pushing it
    /// later needs no download: `Some(None)` for a step that changed nothing (no layer).
    /// A layer that cannot be obtained (a download that fails after its retries, bytes
    /// that do not match the digests, a blob gone from the cache directory) gives `None`
    /// and a warning naming the step: the cache is a hint, so the step runs, and so do the
    /// rest of the stage's steps without looking their keys up (a store that cannot serve
    /// one blob would likely fail the next ones too, each after its retries).
    async fn obtain(&mut self, ins: &Instruction, hit: CacheHit) -> Result<Option<Option<Layer>>> {
        let cached = hit.layer().clone();
        if cached.diff_id == empty_layer_diff_id() {
            return Ok(Some(None));
        }
        match self.cached_blob(hit).await {
            Ok(blob) => Ok(Some(Some(Layer {
                blob,
                diff_id: cached.diff_id,
            }))),
            Err(BuildError::Cancelled) => Err(BuildError::Cancelled),
            Err(e) => {
                self.progress.report(BuildEvent::Warning(format!(
                    "{}: its cached layer {} cannot be used ({}); the stage is rebuilt from \
                     this step",
                    self.step_name(ins),
                    cached.digest,
                    crate::error_chain(&e)
                )));
                self.rebuilding = true;
                Ok(None)
            }
        }
    }

    /// The step `ins` as warnings name it: `FILE:LINE `INSTRUCTION``.
    fn step_name(&self, ins: &Instruction) -> String {
        let file = self.settings.plan.file.display();
        format!("{file}:{} `{}`", ins.line, ins.original)
    }

    /// Adds the layer of a cache hit (none: the step changed nothing) to the image, and to
    /// the root filesystem if it is already unpacked (otherwise nothing is unpacked now).
    async fn apply_hit(&mut self, ins: &Instruction, layer: Option<Layer>) -> Result<StepLayer> {
        let Some(layer) = layer else {
            self.history(ins, true);
            return Ok(None);
        };
        let added = self.rootfs.add_layer(self.registry, &layer).await;
        self.report_notes();
        added?;
        let summary = (layer.digest().to_string(), layer.size());
        self.image
            .config
            .rootfs
            .diff_ids
            .push(layer.diff_id.clone());
        self.image.layers.push(layer);
        self.history(ins, false);
        Ok(Some(summary))
    }

    /// Where the layer of a cache hit is: linked (or copied) from the local cache into the
    /// work directory, so an eviction cannot take it away; or in the cache repository,
    /// fetched into the work directory now (and checked against both digests), while the
    /// image keeps naming the repository, so that a push to the same registry mounts it.
    async fn cached_blob(&self, hit: CacheHit) -> Result<LayerBlob> {
        match hit {
            CacheHit::Local { path, layer } => {
                let dir = self.settings.work.join("layers");
                let copy = dir.join(layer.digest.replace(':', "-"));
                let linked = copy.clone();
                crate::blocking::run(move || {
                    std::fs::create_dir_all(&dir).map_err(BuildError::io(&dir))?;
                    if !linked.exists() {
                        crate::image::link_or_copy(&path, &linked)?;
                    }
                    Ok(())
                })
                .await?;
                Ok(LayerBlob::Local(LayerInfo {
                    digest: layer.digest.clone(),
                    diff_id: layer.diff_id.clone(),
                    size: layer.size,
                    path: copy,
                    compression: compression_of(&layer.media_type),
                }))
            }
            CacheHit::Registry { layer, repository } => {
                let source = Reference {
                    tag: None,
                    digest: None,
                    ..repository
                };
                let registry = self.registry;
                let fetch = registry.blobs.fetch_layer(
                    &registry.pull_client,
                    &source,
                    &layer.digest,
                    &layer.diff_id,
                );
                // Boxed: inline, it nests the stage's future too deep for the compiler.
                Box::pin(fetch).await?;
                Ok(LayerBlob::Remote {
                    source: Box::new(source),
                    descriptor: Box::new(
                        descriptor(&layer.media_type, &layer.digest, layer.size)
                            .map_err(|e| BuildError::Options(e.to_string()))?,
                    ),
                })
            }
        }
    }

    /// Snapshots what the step changed into a layer (none when nothing changed; an empty
    /// layer is still written to be cached under a pending key).
    async fn commit(&mut self, ins: &Instruction) -> Result<StepLayer> {
        let pending_key = self.pending_key.take();
        let opts = LayerOptions {
            compression: self.settings.options.compression,
            mtime: self.settings.options.reproducible.then_some(0),
        };
        let layers_dir = self.settings.work.join("layers");
        let keep_empty = pending_key.is_some();
        let committed = self
            .rootfs
            .commit(self.registry, layers_dir, opts, keep_empty, ins.line)
            .await;
        self.report_notes();
        let committed = committed?;
        let no_changes = committed.empty;
        let Some(info) = committed.layer else {
            self.history(ins, true);
            return Ok(None);
        };
        if let Some(key) = pending_key {
            let entry = CachedLayer::from_layer_info(&info, &ins.original);
            for warning in self.cache.layers.put(&key, &entry, &info.path).await {
                self.progress.warn(warning);
            }
        }
        if no_changes {
            self.history(ins, true);
            return Ok(None);
        }
        let summary = (info.digest.clone(), info.size);
        self.image.config.rootfs.diff_ids.push(info.diff_id.clone());
        self.image.layers.push(Layer {
            diff_id: info.diff_id.clone(),
            blob: LayerBlob::Local(info),
        });
        self.history(ins, false);
        Ok(Some(summary))
    }
}

impl StageRun<'_, '_> {
    /// The root filesystem of `--from=NAME` for reading: an earlier stage's, or that of an
    /// image pulled for it (made once per build).
    async fn source_rootfs(&mut self, ins: &Instruction, name: &str) -> Result<SourceTree> {
        if let Some(i) = self.earlier_stage(name) {
            let done = self.stages.finished[i]
                .as_ref()
                .ok_or_else(|| self.step_err(ins, format!("stage {name:?} was not built")))?;
            if let Some(tree) = &done.tree {
                return Ok(tree.clone());
            }
            let dir = rootfs::stage_dir(self.settings, i);
            let tree = match &done.rootfs {
                Some(Kept::Dir(dir)) => SourceTree::dir(dir.clone()),
                Some(Kept::Lowers(lowers)) => {
                    rootfs::tree_of_lowers(self.registry, lowers.clone(), &dir).await?
                }
                None => {
                    let image = done.image.clone();
                    self.made_tree(&image, &dir).await?
                }
            };
            let done = self.stages.finished[i].as_mut().expect("checked above");
            done.tree = Some(tree.clone());
            return Ok(tree);
        }
        if let Some(tree) = self.stages.image_trees.get(name) {
            return Ok(tree.clone());
        }
        let pulled = self
            .registry
            .pull_image(name, &self.settings.platform)
            .await?;
        self.progress.report(pulled.event());
        let dir = self.settings.work.join(format!(
            "image-{}",
            crate::image::sha256_digest(name.as_bytes()).trim_start_matches("sha256:")
        ));
        let tree = self.made_tree(&pulled.image, &dir).await?;
        self.stages
            .image_trees
            .insert(name.to_string(), tree.clone());
        Ok(tree)
    }

    /// The root filesystem of `image` made for reading (see [`rootfs::source_tree`]),
    /// reporting the extractions it took.
    async fn made_tree(&mut self, image: &Image, dir: &std::path::Path) -> Result<SourceTree> {
        let (tree, events) = rootfs::source_tree(self.registry, image, dir).await?;
        for event in events {
            self.progress.report(event);
        }
        Ok(tree)
    }

    /// What `--from=NAME` contributes to a key: the earlier stage's last key, or the
    /// identity of the image (pulled without reporting it).
    async fn source_key(&self, name: &str) -> Result<String> {
        if let Some(i) = self.earlier_stage(name) {
            let finished = self.stages.finished[i].as_ref();
            return Ok(finished.map(|f| f.key.clone()).unwrap_or_default());
        }
        let platform = &self.settings.platform;
        let pulled = self.registry.pull_image(name, platform).await?;
        Ok(image_identity(&pulled.image, &platform::name(platform)))
    }

    /// The stage before this one that `name` names, if any.
    fn earlier_stage(&self, name: &str) -> Option<usize> {
        self.settings
            .plan
            .stage_index(name)
            .filter(|i| *i < self.index)
    }

    /// A digest of what COPY would read for `sources` from the build context (after
    /// `.dockerignore` and the `exclude` patterns), computed on the blocking pool.
    async fn context_digest(
        &self,
        ins: &Instruction,
        sources: Vec<String>,
        exclude: Vec<String>,
    ) -> Result<String> {
        let context = step::Source::context(self.settings);
        let digest = crate::blocking::spawn(move || {
            let opts = crate::copy::CopyOptions {
                exclude,
                ..Default::default()
            };
            crate::copy::hash_sources(&context.root(), &sources, &opts)
        });
        digest.await?.map_err(|e| self.step_err(ins, e))
    }
}

/// The image a stage starts from and the key of its FROM step: scratch, an earlier stage
/// (and its last key), or a pulled base image (reported) and its identity.
async fn start(h: &mut Handles<'_, '_>, stage: &Stage) -> Result<(Image, String)> {
    let platform = match &stage.platform {
        Some(p) => crate::options::parse_platform(Some(p))?,
        None => h.settings.platform.clone(),
    };
    let image = match &stage.base {
        StageBase::Scratch => scratch_image(&platform),
        StageBase::Stage(i) => {
            let done = h.stages.finished[*i]
                .as_ref()
                .expect("earlier stages run first");
            return Ok((done.image.clone(), done.key.clone()));
        }
        StageBase::Image(name) => {
            let pulled = h.registry.pull_image(name, &platform).await?;
            h.progress.report(pulled.event());
            pulled.image
        }
    };
    let key = image_identity(&image, &platform::name(&platform));
    Ok((image, key))
}

/// An empty image for `platform`.
fn scratch_image(platform: &Platform) -> Image {
    Image {
        config: ImageConfig::scratch_for(platform),
        layers: Vec::new(),
        format: ImageFormat::Oci,
    }
}

/// The lowers a stage built on an earlier stage starts from: that stage's, when it left
/// them (overlay).
fn inherited_lowers(stages: &Stages, base: &StageBase) -> Option<Vec<std::path::PathBuf>> {
    match base {
        StageBase::Stage(i) => match stages.finished[*i].as_ref()?.rootfs.as_ref()? {
            Kept::Lowers(lowers) => Some(lowers.clone()),
            Kept::Dir(_) => None,
        },
        _ => None,
    }
}

/// The ARG values a stage starts with: those of the stage it is built on (BuildKit: a stage
/// built `FROM` another stage continues that stage's build args), none for an image.
fn inherited_args(stages: &Stages, base: &StageBase) -> BTreeMap<String, Option<String>> {
    match base {
        StageBase::Stage(i) => stages.finished[*i]
            .as_ref()
            .map(|f| f.args.clone())
            .unwrap_or_default(),
        _ => BTreeMap::new(),
    }
}

/// The first cache key of a stage built on `image`: its config and layer digests.
fn image_identity(image: &Image, platform: &str) -> String {
    let layers: Vec<&str> = image.layers.iter().map(Layer::digest).collect();
    StepKey::after("", "FROM")
        .field("platform", platform)
        .field("config", image.config.to_json())
        .list("layers", &layers)
        .finish()
}

/// The diff ID of a layer with no entries (two zero blocks), which a cached step that
/// changed nothing records.
fn empty_layer_diff_id() -> String {
    crate::image::sha256_digest(&[0u8; 1024])
}

/// The compression of a layer from its media type.
fn compression_of(media_type: &str) -> ocibuild_snapshot::Compression {
    use ocibuild_snapshot::Compression;
    if media_type.ends_with("+zstd") {
        Compression::Zstd { level: 3 }
    } else if media_type.ends_with("gzip") {
        Compression::Gzip { level: 6 }
    } else {
        Compression::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The keys of lowered ops are the ones the engine built field by field before the IR,
    /// so existing caches stay valid.
    #[test]
    fn op_keys_match_the_keys_before_the_ir() {
        let text = "FROM scratch\nARG A=1\nWORKDIR /w\nRUN --network=none echo $A\n\
                    COPY --chmod=0644 a b/\n";
        let parsed = ocibuild_dockerfile::parse(text, Path::new("Dockerfile")).unwrap();
        let mut scope = Scope {
            build_args: [("HTTP_PROXY".to_string(), Some("http://p".to_string()))].into(),
            ..Scope::default()
        };
        let ops: Vec<Op> = parsed.instructions[1..]
            .iter()
            .map(|i| ir::lower(i, &mut scope).unwrap())
            .collect();
        let none: &[&str] = &[];
        let (Op::Workdir(workdir), Op::Run(run), Op::Copy(copy)) = (&ops[1], &ops[2], &ops[3])
        else {
            panic!("{ops:?}")
        };
        let old_workdir = StepKey::after("p", "WORKDIR")
            .field("path", "/w")
            .field("user", "")
            .finish();
        assert_eq!(step_key("p", "WORKDIR", &workdir.key_fields()), old_workdir);
        let old_run = StepKey::after("p", "RUN")
            .list("mounts", none)
            .list("mount-inputs", none)
            .list("argv", &["/bin/sh", "-c", "echo $A"])
            .list("env", &["A=1"])
            .list("heredocs", none)
            .field("user", "")
            .field("cwd", "/w")
            .field("network", "None")
            .finish();
        assert_eq!(step_key("p", "RUN", &run.key_fields(&[])), old_run);
        let old_copy = StepKey::after("p", "COPY")
            .list("sources", &["a"])
            .field("dest", "/w/b/")
            .list(
                "flags",
                &[
                    "chmod=0644",
                    "parents=false link=false add=false unpack=None keep_git_dir=None",
                ],
            )
            .list("exclude", none)
            .field("content", "c")
            .list("heredocs", none)
            .field("vars", "")
            .field("nonce", "")
            .finish();
        let fields = copy.key_fields("c".into(), String::new());
        assert_eq!(step_key("p", copy.key_kind(), &fields), old_copy);
    }
}
