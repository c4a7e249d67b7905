//! Running one stage: each instruction changes the image config, the root filesystem, or
//! both; filesystem changes are snapshotted into a layer per instruction.
//!
//! Each instruction is lowered to an [`ir::Op`] with the stage's [`Scope`] (its ARGs, the
//! image's ENV, SHELL, USER and WORKDIR), which expands variables and parses flags; the
//! stage then keys the op (`key → lookup`), runs it on a miss and commits its layer.
//! RUN sees ARGs and ENV as environment variables, but only ENV is stored in the image.

use crate::cache::{CacheHit, CachedLayer, StepKey};
use crate::config::Empty;
use crate::copy::{self, CopyOptions, SourceRoot};
use crate::engine::{FinishedStage, Handles, Progress, Registry, Settings, Stages, StepCache};
use crate::error::{BoxError, BuildError, Result};
use crate::events::{BuildEvent, Events};
use crate::image::{Image, ImageFormat, Layer, LayerBlob};
use crate::isolation::{self, Network, RunSpec, Security};
use crate::mounts::{self, MountSpec};
use ocibuild_dockerfile::ir::{
    self, ConfigEdit, CopyOp, KeyValue, Op, RunOp, RunScript, Scope, WorkdirOp,
};
use ocibuild_dockerfile::parser::{Command, Instruction};
use ocibuild_dockerfile::plan::StageBase;
use ocibuild_image::config::ImageConfig;
use ocibuild_registry::{Descriptor, Platform, Reference};
use ocibuild_snapshot::LayerInfo;
use ocibuild_snapshot::{Changes, LayerOptions, StatWalk};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The state of the stage being built, with the handles it borrows from the build.
pub(crate) struct StageRun<'b, 'o> {
    settings: &'b Settings<'o>,
    registry: &'b Registry,
    cache: &'b mut StepCache,
    progress: &'b mut Progress,
    stages: &'b mut Stages,
    index: usize,
    label: String,
    image: Image,
    rootfs: Option<PathBuf>,
    snapshotter: StatWalk,
    args: BTreeMap<String, Option<String>>,
    cmd_set: bool,
    /// The cache key of the last step (see [`crate::cache::StepKey`]).
    key: String,
    /// The key to store the next committed layer under (set on a cache miss).
    pending_key: Option<String>,
}

impl<'b, 'o> StageRun<'b, 'o> {
    /// Runs stage `index` of the plan with the build's handles `h`.
    pub(crate) async fn run(
        h: Handles<'b, 'o>,
        index: usize,
        events: Events<'_>,
    ) -> Result<FinishedStage> {
        let stage = h.settings.plan.stages[index].clone();
        let label = stage.name.clone().unwrap_or_else(|| index.to_string());
        let started = h.progress.begin_step(&label, &stage.from, events);
        let platform = match &stage.platform {
            Some(p) => crate::options::parse_platform(Some(p))?,
            None => h.settings.platform.clone(),
        };
        let image = base_image(h.registry, h.stages, &stage.base, &platform, events).await?;
        let key = match &stage.base {
            StageBase::Stage(i) => h.stages.finished[*i]
                .as_ref()
                .map(|f| f.key.clone())
                .unwrap_or_default(),
            _ => image_identity(&image, &platform.to_string()),
        };
        h.progress.end_step(started, None, events);
        let args = inherited_args(h.stages, &stage.base);
        let ignore = h.settings.live_ignore.clone().unwrap_or_default();
        let mut run = StageRun {
            settings: h.settings,
            registry: h.registry,
            cache: h.cache,
            progress: h.progress,
            stages: h.stages,
            index,
            label,
            image,
            rootfs: None,
            snapshotter: StatWalk::new(ignore),
            args,
            cmd_set: false,
            key,
            pending_key: None,
        };
        run.run_onbuild_triggers(&stage.from, events).await?;
        for ins in &stage.instructions {
            run.settings.cancel.check()?;
            let started = run.progress.begin_step(&run.label, ins, events);
            let layer = run.dispatch(ins, events).await?;
            run.progress.end_step(started, layer, events);
        }
        // In `/` mode the next stage replaces the files: a later COPY --from unpacks the
        // stage's layers elsewhere instead.
        let rootfs = if run.settings.live_ignore.is_some() {
            None
        } else {
            run.rootfs
        };
        Ok(FinishedStage {
            image: run.image,
            rootfs,
            key: run.key,
            args: run.args,
        })
    }

    async fn dispatch(
        &mut self,
        ins: &Instruction,
        events: Events<'_>,
    ) -> Result<Option<(String, u64)>> {
        match self.lower(ins)? {
            Op::Run(op) => return self.run_command(ins, op, events).await,
            Op::Workdir(op) => return self.workdir(ins, op, events).await,
            Op::Copy(op) => return self.copy(ins, op, events).await,
            Op::Meta(edit) => self.apply_edit(ins, edit)?,
        }
        self.key = StepKey::after(&self.key, "metadata")
            .field("instruction", &ins.original)
            .field(
                "config",
                serde_json::to_vec(&self.image.config.config).unwrap_or_default(),
            )
            .field("author", self.image.config.author.as_deref().unwrap_or(""))
            .finish();
        self.history(ins, true);
        Ok(None)
    }

    /// Applies a metadata instruction to the image config (ARG: to the stage's ARGs).
    fn apply_edit(&mut self, ins: &Instruction, edit: ConfigEdit) -> Result<()> {
        let config = &mut self.image.config.config;
        match edit {
            ConfigEdit::Arg(decls) => {
                for (name, value) in decls {
                    self.stages.used_args.insert(name.clone());
                    self.args.insert(name, value);
                }
            }
            ConfigEdit::Env(pairs) => {
                for (k, v) in pairs {
                    self.image.config.env_set(&k, &v);
                }
            }
            ConfigEdit::Label(pairs) => config
                .labels
                .get_or_insert_with(Default::default)
                .extend(pairs),
            ConfigEdit::User(user) => config.user = Some(user),
            ConfigEdit::Expose(ports) => {
                let exposed = config.exposed_ports.get_or_insert_with(Default::default);
                exposed.extend(ports.into_iter().map(|p| (p, Empty {})));
            }
            ConfigEdit::Volume(paths) => {
                let volumes = config.volumes.get_or_insert_with(Default::default);
                volumes.extend(paths.into_iter().map(|v| (v, Empty {})));
            }
            ConfigEdit::StopSignal(sig) => config.stop_signal = Some(sig),
            ConfigEdit::Entrypoint(argv) => {
                config.entrypoint = Some(argv);
                if !self.cmd_set {
                    config.cmd = None;
                }
            }
            ConfigEdit::Cmd(argv) => {
                config.cmd = Some(argv);
                self.cmd_set = true;
            }
            ConfigEdit::Shell(shell) => config.shell = Some(shell),
            ConfigEdit::Maintainer(name) => self.image.config.author = Some(name),
            ConfigEdit::Healthcheck(check) => {
                let health = healthcheck(&check).map_err(|m| self.step_err(ins, m))?;
                self.image.config.config.healthcheck = Some(health);
            }
            ConfigEdit::Onbuild(trigger) => {
                config.on_build.get_or_insert_with(Vec::new).push(trigger)
            }
        }
        Ok(())
    }

    /// Runs the base image's ONBUILD triggers as if they followed FROM, then drops them:
    /// triggers are not inherited by grand-children.
    async fn run_onbuild_triggers(&mut self, from: &Instruction, events: Events<'_>) -> Result<()> {
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
            self.dispatch(&ins, events).await?;
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
            build_args: self.settings.opts.build_args.clone(),
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

    /// The stage's root filesystem, unpacked from its layers on first use.
    async fn rootfs(&mut self) -> Result<PathBuf> {
        if let Some(dir) = &self.rootfs {
            return Ok(dir.clone());
        }
        let dir = if self.settings.live_ignore.is_some() {
            PathBuf::from("/")
        } else {
            self.settings
                .work
                .join(format!("stage-{}", self.index))
                .join("rootfs")
        };
        materialize(self.settings, self.registry, self.stages, &self.image, &dir).await?;
        self.record_baseline(&dir).await?;
        self.rootfs = Some(dir.clone());
        Ok(dir)
    }

    /// Records the state of `rootfs` that the next snapshot compares with.
    async fn record_baseline(&mut self, rootfs: &Path) -> Result<()> {
        let mut snapshotter = std::mem::take(&mut self.snapshotter);
        let rootfs = rootfs.to_path_buf();
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

    /// What changed in `rootfs` since the baseline.
    async fn changes(&mut self, rootfs: &Path) -> Result<Changes> {
        let mut snapshotter = std::mem::take(&mut self.snapshotter);
        let rootfs = rootfs.to_path_buf();
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

    /// Snapshots what the instruction changed into a layer (none when nothing changed).
    async fn commit(&mut self, ins: &Instruction) -> Result<Option<(String, u64)>> {
        let rootfs = self.rootfs.clone().expect("commit after materializing");
        let changes = self.changes(&rootfs).await?;
        let pending_key = self.pending_key.take();
        if changes.is_empty() && pending_key.is_none() {
            self.history(ins, true);
            return Ok(None);
        }
        let layers_dir = self.settings.work.join("layers");
        std::fs::create_dir_all(&layers_dir).map_err(BuildError::io(&layers_dir))?;
        let opts = LayerOptions {
            compression: self.settings.opts.compression,
            mtime: self.settings.opts.reproducible.then_some(0),
        };
        let no_changes = changes.is_empty();
        let line = ins.line;
        let info = crate::blocking::run(move || {
            ocibuild_snapshot::write_layer(&rootfs, &changes, &layers_dir, &opts).map_err(
                BuildError::snapshot(format!("writing the layer of line {line}")),
            )
        })
        .await?;
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

    async fn workdir(
        &mut self,
        ins: &Instruction,
        op: WorkdirOp,
        events: Events<'_>,
    ) -> Result<Option<(String, u64)>> {
        self.image.config.config.working_dir = Some(op.path.clone());
        let key = step_key(&self.key, "WORKDIR", &op.key_fields());
        if let Some(done) = self.lookup(ins, key, true, events).await? {
            return Ok(done);
        }
        let rootfs = self.rootfs().await?;
        let owner = self.user_ids(ins, &rootfs)?;
        self.make_dir(ins, &rootfs, &op.path, owner)?;
        self.commit(ins).await
    }

    /// The numeric ids of the image's current USER (root when unset).
    fn user_ids(&self, ins: &Instruction, rootfs: &Path) -> Result<(u32, u32)> {
        let user = self.image.config.config.user.as_deref();
        let ids = isolation::resolve_user(rootfs, user).map_err(|e| self.step_err(ins, e))?;
        Ok((ids.uid, ids.gid))
    }

    /// Creates `path` (inside the image) and missing parents (mode 0755), owned by
    /// `owner`. Symlinks on the way are followed inside the rootfs only, and every
    /// directory is created and chowned by name in its parent's descriptor
    /// ([`ocibuild_snapshot::RootDir`]), so a link a RUN left behind cannot lead outside.
    fn make_dir(
        &self,
        ins: &Instruction,
        rootfs: &Path,
        path: &str,
        owner: (u32, u32),
    ) -> Result<()> {
        let root = ocibuild_snapshot::RootDir::open(rootfs).map_err(|e| self.step_err(ins, e))?;
        root.create_dir_all_owned(Path::new(path), 0o755, owner)
            .map_err(|e| self.step_err(ins, e))?;
        Ok(())
    }

    async fn copy(
        &mut self,
        ins: &Instruction,
        op: CopyOp,
        events: Events<'_>,
    ) -> Result<Option<(String, u64)>> {
        let key = self.copy_key(ins, &op).await?;
        if let Some(done) = self
            .lookup(ins, key, self.settings.opts.cache_copy_layers, events)
            .await?
        {
            return Ok(done);
        }
        let rootfs = self.rootfs().await?;
        let chown = match &op.chown {
            Some(spec) => {
                let ids = isolation::resolve_user(&rootfs, Some(spec))
                    .map_err(|e| self.step_err(ins, e))?;
                // "A username without groupname or a UID without GID uses the same numeric
                // UID as the GID" (Dockerfile reference, COPY --chown).
                let gid = if spec.contains(':') { ids.gid } else { ids.uid };
                Some((ids.uid, gid))
            }
            None => None,
        };
        let opts = CopyOptions {
            chown,
            chmod: op.chmod.as_ref().map(|c| c.bits),
            extract_archives: op.add,
            exclude: op.exclude.clone(),
            parents: op.parents,
        };
        let from_dir;
        let from = match &op.from {
            None => SourceRoot {
                dir: &self.settings.context,
                ignore: Some(&self.settings.ignore),
                origin: "build context".into(),
                keep_owner: false,
            },
            Some(name) => {
                from_dir = self.source_rootfs(ins, name, events).await?;
                SourceRoot {
                    dir: &from_dir,
                    ignore: None,
                    origin: format!("stage or image {name:?}"),
                    keep_owner: true,
                }
            }
        };
        // Sources alone are counted by what they match (copy.rs: an empty wildcard counts
        // for nothing); with heredocs, every source counts.
        let (sources, dest_abs) = (&op.sources, &op.dest_abs);
        let counted = !op.heredocs.is_empty();
        if counted && sources.len() + op.heredocs.len() > 1 && !dest_abs.ends_with('/') {
            let dest = op.dest.clone();
            return Err(self.step_err(ins, copy::CopyError::DestNotDir { dest }));
        }
        if !sources.is_empty() && op.add {
            let add = copy::AddOptions {
                checksum: op.checksum.clone(),
                unpack: op.unpack,
                keep_git_dir: op.keep_git_dir,
            };
            let scratch = self.settings.work.join("add-downloads");
            let result =
                copy::add_sources(&from, sources, dest_abs, &rootfs, &opts, &add, &scratch).await;
            let _ = std::fs::remove_dir_all(&scratch);
            result.map_err(|e| self.step_err(ins, e))?;
        } else if !sources.is_empty() {
            copy::copy_sources(&from, sources, dest_abs, &rootfs, &opts)
                .map_err(|e| self.step_err(ins, e))?;
        }
        if !op.heredocs.is_empty() {
            self.copy_heredocs(ins, &op, &rootfs, opts)?;
        }
        self.commit(ins).await
    }

    /// Writes COPY/ADD heredocs (`<<NAME` sources) as files named NAME in a fresh
    /// directory and copies them to the destination.
    fn copy_heredocs(
        &self,
        ins: &Instruction,
        op: &CopyOp,
        rootfs: &Path,
        opts: CopyOptions,
    ) -> Result<()> {
        let dir = self
            .settings
            .work
            .join("scratch")
            .join(format!("heredocs-{}-{}", self.index, ins.line));
        let mut names = Vec::new();
        for (doc, content) in op.heredocs.iter().zip(&op.heredoc_contents) {
            write_file(&dir.join(&doc.name), content.as_bytes(), 0o644)?;
            names.push(doc.name.clone());
        }
        let heredocs = SourceRoot {
            dir: &dir,
            ignore: None,
            origin: "heredoc".into(),
            keep_owner: false,
        };
        let opts = CopyOptions {
            extract_archives: false,
            exclude: Vec::new(),
            parents: false,
            ..opts
        };
        copy::copy_sources(&heredocs, &names, &op.dest_abs, rootfs, &opts)
            .map_err(|e| self.step_err(ins, e))
    }

    /// The root filesystem of `--from=NAME`: an earlier stage, or an image pulled for it.
    async fn source_rootfs(
        &mut self,
        ins: &Instruction,
        name: &str,
        events: Events<'_>,
    ) -> Result<PathBuf> {
        if let Some(i) = self
            .settings
            .plan
            .stage_index(name)
            .filter(|i| *i < self.index)
        {
            let done = self.stages.finished[i]
                .as_ref()
                .ok_or_else(|| self.step_err(ins, format!("stage {name:?} was not built")))?;
            if let Some(dir) = &done.rootfs {
                return Ok(dir.clone());
            }
            let image = done.image.clone();
            let dir = self.settings.work.join(format!("stage-{i}")).join("rootfs");
            materialize(self.settings, self.registry, self.stages, &image, &dir).await?;
            self.stages.finished[i]
                .as_mut()
                .expect("checked above")
                .rootfs = Some(dir.clone());
            return Ok(dir);
        }
        let platform = self.settings.platform.clone();
        let image = self.registry.pull_image(name, &platform, events).await?;
        let dir = self.settings.work.join(format!(
            "image-{}",
            crate::image::sha256_digest(name.as_bytes()).trim_start_matches("sha256:")
        ));
        if !dir.exists() {
            materialize(self.settings, self.registry, self.stages, &image, &dir).await?;
        }
        Ok(dir)
    }

    async fn run_command(
        &mut self,
        ins: &Instruction,
        op: RunOp,
        events: Events<'_>,
    ) -> Result<Option<(String, u64)>> {
        self.check_security(ins, op.security)?;
        let mut mount_inputs = Vec::new();
        for spec in &op.mounts {
            mount_inputs.push(self.mount_input(ins, spec).await?);
        }
        let key = step_key(&self.key, "RUN", &op.key_fields(&mount_inputs));
        if let Some(done) = self
            .lookup(ins, key, self.settings.opts.cache_run_layers, events)
            .await?
        {
            return Ok(done);
        }
        self.execute_run(ins, op, events).await?;
        self.commit(ins).await
    }

    /// Runs a RUN's command in the sandbox with its mounts; fails unless it exits 0.
    async fn execute_run(
        &mut self,
        ins: &Instruction,
        op: RunOp,
        events: Events<'_>,
    ) -> Result<()> {
        let scratch = self.settings.work.join("scratch");
        std::fs::create_dir_all(&scratch).map_err(BuildError::io(&scratch))?;
        let RunOp {
            argv,
            mut env,
            workdir: cwd,
            user,
            mounts: mount_specs,
            network,
            security,
            script,
            ..
        } = op;
        let mut extra_mounts = match &script {
            Some(script) => vec![self.write_script(ins, script, &scratch)?],
            None => Vec::new(),
        };
        let rootfs = self.rootfs().await?;
        let owner = self.user_ids(ins, &rootfs)?;
        self.make_dir(ins, &rootfs, &cwd, owner)?;
        let mount_dir = scratch.join(format!("mounts-{}-{}", self.index, ins.line));
        let prepared = self
            .prepare_mounts(ins, &mount_specs, &mount_dir, &mut env, events)
            .await;
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&mount_dir);
                return Err(e);
            }
        };
        let (tmpfs_mounts, leases) = split_prepared(prepared, &mut extra_mounts);
        let spec = RunSpec {
            rootfs: rootfs.clone(),
            argv,
            env,
            cwd,
            user,
            hostname: None,
            network: match network {
                ir::Network::Host => Network::Host,
                ir::Network::None => Network::None,
            },
            isolation: self.settings.opts.isolation,
            security: match security {
                ir::Security::Sandbox => Security::Sandbox,
                ir::Security::Insecure => Security::Insecure,
            },
            extra_mounts,
            tmpfs_mounts,
            scratch_dir: scratch,
        };
        let outcome = run_isolated(spec, &self.settings.cancel, events).await;
        drop(leases);
        let _ = std::fs::remove_dir_all(&mount_dir);
        let outcome = match outcome {
            Err(isolation::IsolationError::Stopped) => return Err(BuildError::Cancelled),
            other => other.map_err(|e| self.step_err(ins, e))?,
        };
        if outcome.status != 0 {
            return Err(BuildError::RunFailed {
                file: self.settings.plan.file.clone(),
                line: ins.line,
                instruction: ins.original.clone(),
                code: outcome.status,
            });
        }
        Ok(())
    }
}

impl StageRun<'_, '_> {
    /// Makes `key` the current key and, when the cache is on for this kind of step, looks
    /// it up: a hit adds the cached layer (and returns what the step produced), a miss
    /// remembers the key so that the step's layer is stored under it.
    async fn lookup(
        &mut self,
        ins: &Instruction,
        key: String,
        enabled: bool,
        events: Events<'_>,
    ) -> Result<Option<Option<(String, u64)>>> {
        self.key = key.clone();
        if !enabled || self.cache.layers.is_empty() {
            return Ok(None);
        }
        let mut warnings = Vec::new();
        let hit = match self.cache.layers.get(&key, &mut warnings).await {
            Ok(hit) => hit,
            Err(e) => {
                warnings.push(format!("layer cache lookup of {key} failed: {e}"));
                None
            }
        };
        for warning in warnings {
            events(BuildEvent::Warning(warning));
        }
        events(BuildEvent::Cache {
            key: key.clone(),
            hit: hit.is_some(),
        });
        match hit {
            None => {
                self.cache.misses += 1;
                self.pending_key = Some(key);
                Ok(None)
            }
            Some(hit) => {
                self.cache.hits += 1;
                Ok(Some(self.apply_hit(ins, hit).await?))
            }
        }
    }

    /// Adds a cached layer to the image (and to the root filesystem if it is already
    /// unpacked; otherwise nothing is unpacked now).
    async fn apply_hit(
        &mut self,
        ins: &Instruction,
        hit: CacheHit,
    ) -> Result<Option<(String, u64)>> {
        let cached = hit.layer().clone();
        if cached.diff_id == empty_layer_diff_id() {
            self.history(ins, true);
            return Ok(None);
        }
        let blob = match hit {
            CacheHit::Local { path, layer } => {
                let dir = self.settings.work.join("layers");
                std::fs::create_dir_all(&dir).map_err(BuildError::io(&dir))?;
                let copy = dir.join(layer.digest.replace(':', "-"));
                if !copy.exists() {
                    crate::image::link_or_copy(&path, &copy)?;
                }
                LayerBlob::Local(LayerInfo {
                    digest: layer.digest.clone(),
                    diff_id: layer.diff_id.clone(),
                    size: layer.size,
                    path: copy,
                    compression: compression_of(&layer.media_type),
                })
            }
            CacheHit::Registry { layer, repository } => LayerBlob::Remote {
                source: Box::new(Reference {
                    tag: None,
                    digest: None,
                    ..repository
                }),
                descriptor: Box::new(Descriptor {
                    media_type: layer.media_type.clone(),
                    digest: layer.digest.clone(),
                    size: layer.size,
                    platform: None,
                    annotations: None,
                    urls: None,
                }),
            },
        };
        let layer = Layer {
            blob,
            diff_id: cached.diff_id.clone(),
        };
        if let Some(rootfs) = self.rootfs.clone() {
            let file = self.registry.local_file(&layer).await?;
            let what = format!("unpacking cached layer {}", cached.digest);
            unpack(file, rootfs.clone(), None, what).await?;
            self.record_baseline(&rootfs).await?;
        }
        self.image
            .config
            .rootfs
            .diff_ids
            .push(cached.diff_id.clone());
        self.image.layers.push(layer);
        self.history(ins, false);
        Ok(Some((cached.digest, cached.size)))
    }

    /// The cache key of a COPY/ADD: its expanded arguments and a digest of its sources.
    async fn copy_key(&mut self, ins: &Instruction, op: &CopyOp) -> Result<String> {
        let opts = CopyOptions {
            exclude: op.exclude.clone(),
            ..Default::default()
        };
        let content = match &op.from {
            None => {
                let from = SourceRoot {
                    dir: &self.settings.context,
                    ignore: Some(&self.settings.ignore),
                    origin: "build context".into(),
                    keep_owner: false,
                };
                copy::hash_sources(&from, &op.sources, &opts).map_err(|e| self.step_err(ins, e))?
            }
            Some(name) => match self
                .settings
                .plan
                .stage_index(name)
                .filter(|i| *i < self.index)
            {
                Some(i) => self.stages.finished[i]
                    .as_ref()
                    .map(|f| f.key.clone())
                    .unwrap_or_default(),
                None => {
                    let platform = self.settings.platform.clone();
                    let image = self
                        .registry
                        .pull_image(name, &platform, &mut |_| {})
                        .await?;
                    image_identity(&image, &platform.to_string())
                }
            },
        };
        // A URL without --checksum can change at any time: never reuse its layer.
        let unpinned_url =
            op.sources.iter().any(|s| crate::fetch::is_url(s)) && op.checksum.is_none();
        let nonce = if unpinned_url {
            crate::time::now_rfc3339() + &std::process::id().to_string()
        } else {
            String::new()
        };
        Ok(step_key(
            &self.key,
            op.key_kind(),
            &op.key_fields(content, nonce),
        ))
    }

    /// What a `--mount` contributes to the RUN's cache key besides its text: the content of
    /// a bind source (context files, or the source stage's key). Cache mount contents and
    /// secret values never do.
    async fn mount_input(&mut self, ins: &Instruction, spec: &MountSpec) -> Result<String> {
        let MountSpec::Bind { from, source, .. } = spec else {
            return Ok(String::new());
        };
        match from {
            None => {
                let context = SourceRoot {
                    dir: &self.settings.context,
                    ignore: Some(&self.settings.ignore),
                    origin: "build context".into(),
                    keep_owner: false,
                };
                let source = source.trim_start_matches('/');
                let source = if source.is_empty() {
                    ".".to_string()
                } else {
                    source.to_string()
                };
                copy::hash_sources(&context, &[source], &CopyOptions::default())
                    .map_err(|e| self.step_err(ins, e))
            }
            Some(name) => match self
                .settings
                .plan
                .stage_index(name)
                .filter(|i| *i < self.index)
            {
                Some(i) => Ok(self.stages.finished[i]
                    .as_ref()
                    .map(|f| f.key.clone())
                    .unwrap_or_default()),
                None => {
                    let platform = self.settings.platform.clone();
                    let image = self
                        .registry
                        .pull_image(name, &platform, &mut |_| {})
                        .await?;
                    Ok(image_identity(&image, &platform.to_string()))
                }
            },
        }
    }

    /// Turns the RUN's `--mount`s into mounts for the isolated command: cache directories
    /// (held for the run), secrets written to files in `dir` or added to `env`, binds of the
    /// context or another stage (copied to `dir` first when writable, so writes are
    /// discarded) and tmpfs.
    async fn prepare_mounts(
        &mut self,
        ins: &Instruction,
        specs: &[MountSpec],
        dir: &Path,
        env: &mut Vec<(String, String)>,
        events: Events<'_>,
    ) -> Result<Vec<Prepared>> {
        std::fs::create_dir_all(dir).map_err(BuildError::io(dir))?;
        let mut prepared = Vec::new();
        for (n, spec) in specs.iter().enumerate() {
            match spec {
                MountSpec::Tmpfs { target, size } => {
                    prepared.push(Prepared::Tmpfs(isolation::TmpfsMount {
                        target: target.clone(),
                        size: *size,
                    }))
                }
                MountSpec::Secret {
                    id,
                    target,
                    env: env_name,
                    required,
                    mode,
                    uid,
                    gid,
                } => {
                    let secrets = &self.settings.secrets;
                    let missing = || {
                        if *required {
                            Err(self.step_err(ins, mounts::missing_secret(id)))
                        } else {
                            Ok(())
                        }
                    };
                    if let Some(name) = env_name {
                        match secrets.value(id).map_err(|e| self.step_err(ins, e))? {
                            Some(value) => env
                                .push((name.clone(), String::from_utf8_lossy(&value).into_owned())),
                            None => missing()?,
                        }
                    }
                    let Some(target) = target
                        .clone()
                        .or_else(|| env_name.is_none().then(|| format!("/run/secrets/{id}")))
                    else {
                        continue;
                    };
                    match secrets
                        .write_to(id, &dir.join(format!("secret-{n}")), *mode, *uid, *gid)
                        .map_err(|e| self.step_err(ins, e))?
                    {
                        Some(file) => prepared.push(Prepared::Bind(isolation::Mount {
                            source: file,
                            target,
                            readonly: true,
                        })),
                        None => missing()?,
                    }
                }
                MountSpec::Cache {
                    target,
                    id,
                    sharing,
                    readonly,
                    from,
                    source,
                    mode,
                    uid,
                    gid,
                } => {
                    let lease = match self.stages.cache_mounts() {
                        Ok(cache) => cache.acquire(id, *sharing, *mode, *uid, *gid),
                        Err(e) => Err(e),
                    }
                    .map_err(|e| self.step_err(ins, e))?;
                    if lease.fresh {
                        if let Some(name) = from {
                            let root = self.source_rootfs(ins, name, events).await?;
                            let seed = SourceRoot {
                                dir: &root,
                                ignore: None,
                                origin: format!("stage or image {name:?}"),
                                keep_owner: true,
                            };
                            let src = source.clone().unwrap_or_else(|| "/".into());
                            copy::copy_sources(
                                &seed,
                                &[src],
                                &format!("{}/", lease.path.display()),
                                Path::new("/"),
                                &CopyOptions::default(),
                            )
                            .map_err(|e| self.step_err(ins, e))?;
                        }
                    }
                    let mount = isolation::Mount {
                        source: lease.path.clone(),
                        target: target.clone(),
                        readonly: *readonly,
                    };
                    prepared.push(Prepared::Cache(mount, lease));
                }
                MountSpec::Bind {
                    target,
                    from,
                    source,
                    readwrite,
                } => {
                    let root = match from {
                        None => self.settings.context.clone(),
                        Some(name) => self.source_rootfs(ins, name, events).await?,
                    };
                    // Read only: the source of a bind mount (or of `cp -a` for rw) in the
                    // context or another stage's rootfs, where no command is running.
                    let host = ocibuild_snapshot::resolve_in_root(&root, Path::new(source), true)
                        .map_err(|e| self.step_err(ins, e))?;
                    if !host.exists() {
                        return Err(self.step_err(
                            ins,
                            format!(
                                "--mount source {source:?} does not exist in {}",
                                from.as_deref().unwrap_or("the build context")
                            ),
                        ));
                    }
                    let source_path = if *readwrite {
                        let copy_dir = dir.join(format!("bind-{n}"));
                        let status = std::process::Command::new("cp")
                            .arg("-a")
                            .arg(&host)
                            .arg(&copy_dir)
                            .status()
                            .map_err(BuildError::io(&host))?;
                        if !status.success() {
                            return Err(self.step_err(
                                ins,
                                format!(
                                    "copying {} for a writable bind mount failed",
                                    host.display()
                                ),
                            ));
                        }
                        copy_dir
                    } else {
                        host
                    };
                    prepared.push(Prepared::Bind(isolation::Mount {
                        source: source_path,
                        target: target.clone(),
                        readonly: !*readwrite,
                    }));
                }
            }
        }
        Ok(prepared)
    }

    /// `RUN --security=insecure` only with `--allow security.insecure`.
    fn check_security(&self, ins: &Instruction, security: ir::Security) -> Result<()> {
        if security == ir::Security::Insecure && !self.settings.opts.allow_insecure {
            return Err(self.step_err(
                ins,
                "--security=insecure runs the command with every capability and no seccomp \
                 filter: start the build with --allow security.insecure to permit it",
            ));
        }
        Ok(())
    }

    /// Writes the script of a RUN that is a single heredoc and returns its mount.
    fn write_script(
        &self,
        ins: &Instruction,
        script: &RunScript,
        scratch: &Path,
    ) -> Result<isolation::Mount> {
        let dir = scratch.join(format!("heredoc-{}-{}", self.index, ins.line));
        let file = dir.join(&script.name);
        write_file(&file, script.content.as_bytes(), 0o755)?;
        Ok(isolation::Mount {
            source: file,
            target: script.target(),
            readonly: true,
        })
    }
}

/// Writes `bytes` to `path` (creating its directory) with permission bits `mode`.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, bytes)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    };
    write().map_err(BuildError::io(path))
}

/// The image config form of HEALTHCHECK: `["NONE"]`, `["CMD", ...]` or
/// `["CMD-SHELL", cmd]`, durations in nanoseconds (0 = default, omitted).
fn healthcheck(
    check: &ocibuild_dockerfile::parser::Healthcheck,
) -> std::result::Result<crate::config::HealthConfig, String> {
    use ocibuild_dockerfile::parser::Healthcheck as H;
    let H::Check {
        command,
        interval,
        timeout,
        start_period,
        start_interval,
        retries,
    } = check
    else {
        return Ok(crate::config::HealthConfig {
            test: Some(vec!["NONE".to_string()]),
            ..Default::default()
        });
    };
    let test = match command {
        Command::Exec(args) => std::iter::once("CMD".to_string())
            .chain(args.iter().cloned())
            .collect(),
        Command::Shell(text) => vec!["CMD-SHELL".to_string(), text.clone()],
    };
    let retries = match retries {
        None => None,
        Some(r) => match r.parse::<i64>() {
            Ok(n) if n >= 0 => (n != 0).then_some(n),
            _ => {
                return Err(format!(
                    "--retries={r}: expected a whole number of at least 0"
                ))
            }
        },
    };
    Ok(crate::config::HealthConfig {
        test: Some(test),
        interval: health_duration("interval", interval)?,
        timeout: health_duration("timeout", timeout)?,
        start_period: health_duration("start-period", start_period)?,
        start_interval: health_duration("start-interval", start_interval)?,
        retries,
    })
}

/// A HEALTHCHECK duration flag in nanoseconds; 0 means "default" and is left out.
fn health_duration(flag: &str, value: &Option<String>) -> std::result::Result<Option<i64>, String> {
    let Some(text) = value else { return Ok(None) };
    let nanos = parse_duration(text).ok_or_else(|| {
        format!("--{flag}={text}: expected a duration such as 30s, 1m30s or 500ms")
    })?;
    if nanos != 0 && nanos < 1_000_000 {
        return Err(format!("--{flag}={text}: must be at least 1ms"));
    }
    Ok((nanos != 0).then_some(nanos))
}

/// Parses a Go-style duration (`300ms`, `1.5h`, `2h45m`) into nanoseconds.
fn parse_duration(text: &str) -> Option<i64> {
    if text == "0" {
        return Some(0);
    }
    if text.is_empty() {
        return None;
    }
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    (total <= i64::MAX as f64).then_some(total as i64)
}

/// A `--mount` ready for the isolated command.
enum Prepared {
    Bind(isolation::Mount),
    Cache(isolation::Mount, mounts::CacheLease),
    Tmpfs(isolation::TmpfsMount),
}

/// Adds the bind and cache mounts to `mounts`; returns the tmpfs mounts and the cache
/// leases to hold while the command runs.
fn split_prepared(
    prepared: Vec<Prepared>,
    mounts: &mut Vec<isolation::Mount>,
) -> (Vec<isolation::TmpfsMount>, Vec<mounts::CacheLease>) {
    let (mut tmpfs, mut leases) = (Vec::new(), Vec::new());
    for m in prepared {
        match m {
            Prepared::Bind(mount) => mounts.push(mount),
            Prepared::Cache(mount, lease) => {
                mounts.push(mount);
                leases.push(lease);
            }
            Prepared::Tmpfs(t) => tmpfs.push(t),
        }
    }
    (tmpfs, leases)
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

/// The image a stage starts from: scratch, an earlier stage, or a pulled base.
async fn base_image(
    registry: &Registry,
    stages: &Stages,
    base: &StageBase,
    platform: &Platform,
    events: Events<'_>,
) -> Result<Image> {
    match base {
        StageBase::Scratch => Ok(Image {
            config: ImageConfig::scratch(
                &platform.os,
                &platform.architecture,
                platform.variant.as_deref(),
            ),
            layers: Vec::new(),
            format: ImageFormat::Oci,
        }),
        StageBase::Stage(i) => {
            let done = stages.finished[*i]
                .as_ref()
                .expect("earlier stages run first");
            Ok(done.image.clone())
        }
        StageBase::Image(name) => registry.pull_image(name, platform, events).await,
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

/// Unpacks `image`'s layers into a fresh `dir`.
async fn materialize(
    settings: &Settings<'_>,
    registry: &Registry,
    stages: &Stages,
    image: &Image,
    dir: &Path,
) -> Result<()> {
    if let (Some(ignore), true) = (&settings.live_ignore, dir == Path::new("/")) {
        // Like kaniko: the first stage is unpacked over the container's files; later stages
        // first remove what the previous one left.
        if stages
            .live_root_used
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            crate::liveroot::delete_filesystem(dir, ignore).map_err(BuildError::io(dir))?;
        }
        for layer in &image.layers {
            settings.cancel.check()?;
            let file = registry.local_file(layer).await?;
            let what = format!("unpacking layer {} into /", layer.digest());
            unpack(file, dir.to_path_buf(), Some(ignore.clone()), what).await?;
        }
        return Ok(());
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(BuildError::io(dir))?;
    }
    std::fs::create_dir_all(dir).map_err(BuildError::io(dir))?;
    for layer in &image.layers {
        settings.cancel.check()?;
        let file = registry.local_file(layer).await?;
        let what = format!("unpacking layer {}", layer.digest());
        unpack(file, dir.to_path_buf(), None, what).await?;
    }
    Ok(())
}

/// Runs a RUN command on the blocking thread pool, passing its output on as
/// [`BuildEvent::Output`]. The command is killed when `cancel` is cancelled or when this
/// future is dropped (the output channel closes).
async fn run_isolated(
    spec: RunSpec,
    cancel: &crate::cancel::CancelToken,
    events: Events<'_>,
) -> std::result::Result<isolation::RunOutcome, isolation::IsolationError> {
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let cancel = cancel.clone();
    let task = tokio::task::spawn_blocking(move || {
        let stop = || cancel.is_cancelled() || sender.is_closed();
        isolation::run_until(&spec, &mut |bytes| drop(sender.send(bytes.to_vec())), &stop)
    });
    while let Some(bytes) = receiver.recv().await {
        events(BuildEvent::Output(bytes));
    }
    match task.await {
        Ok(outcome) => outcome,
        Err(e) => match e.try_into_panic() {
            Ok(payload) => std::panic::resume_unwind(payload),
            Err(_) => Err(isolation::IsolationError::Stopped),
        },
    }
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

/// The key of a step of `kind` after `previous`, from the op's fields in order.
fn step_key(previous: &str, kind: &str, fields: &[(&'static str, KeyValue)]) -> String {
    let mut key = StepKey::after(previous, kind);
    for (name, value) in fields {
        key = match value {
            KeyValue::Text(text) => key.field(name, text),
            KeyValue::List(items) => key.list(name, items),
        };
    }
    key.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("30s"), Some(30_000_000_000));
        assert_eq!(parse_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration("1.5h"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("500ms"), Some(500_000_000));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("5d"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn healthcheck_forms_become_docker_config() {
        use ocibuild_dockerfile::parser::Healthcheck as H;
        assert_eq!(healthcheck(&H::None).unwrap().test.unwrap(), ["NONE"]);
        let check = H::Check {
            command: Command::Shell("curl -f localhost".into()),
            interval: Some("5m".into()),
            timeout: Some("3s".into()),
            start_period: None,
            start_interval: Some("0s".into()),
            retries: Some("3".into()),
        };
        let h = healthcheck(&check).unwrap();
        assert_eq!(h.test.clone().unwrap(), ["CMD-SHELL", "curl -f localhost"]);
        assert_eq!(
            (
                h.interval,
                h.timeout,
                h.start_period,
                h.start_interval,
                h.retries
            ),
            (
                Some(300_000_000_000),
                Some(3_000_000_000),
                None,
                None,
                Some(3)
            )
        );
        let bad = H::Check {
            command: Command::Exec(vec!["x".into()]),
            interval: Some("1us".into()),
            timeout: None,
            start_period: None,
            start_interval: None,
            retries: None,
        };
        assert!(healthcheck(&bad).unwrap_err().contains("1ms"));
    }

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
