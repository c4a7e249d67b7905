//! Running one stage: each instruction changes the image config, the root filesystem, or
//! both; filesystem changes are snapshotted into a layer per instruction.
//!
//! Variables: instructions Docker expands see the stage's ARGs overridden by the image's
//! ENV (ENV wins over an ARG of the same name); RUN sees both as environment variables, but
//! only ENV is stored in the image.

use crate::build::{BuildEvent, Builder, Events, FinishedStage};
use crate::config::Empty;
use crate::copy::{self, CopyOptions, SourceRoot};
use crate::dockerfile::{Command, CopyArgs, Instruction, InstructionKind, RunArgs};
use crate::error::{BoxError, BuildError, Result};
use crate::expand::{expand_word, expand_words, Vars};
use crate::image::{Image, Layer, LayerBlob};
use crate::isolation::{self, Network, RunSpec};
use ocibuild_snapshot::{LayerOptions, Snapshotter, StatWalk};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// The state of the stage being built.
pub(crate) struct StageRun<'b, 'o> {
    b: &'b mut Builder<'o>,
    index: usize,
    label: String,
    image: Image,
    rootfs: Option<PathBuf>,
    snapshotter: StatWalk,
    args: BTreeMap<String, Option<String>>,
    cmd_set: bool,
}

struct StageVars(BTreeMap<String, String>);

impl Vars for StageVars {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

impl<'b, 'o> StageRun<'b, 'o> {
    /// Runs stage `index` of the plan.
    pub(crate) async fn run(
        b: &'b mut Builder<'o>,
        index: usize,
        events: Events<'_>,
    ) -> Result<FinishedStage> {
        let stage = b.plan.stages[index].clone();
        let label = stage.name.clone().unwrap_or_else(|| index.to_string());
        let started = b.begin_step(&label, &stage.from, events);
        let platform = match &stage.platform {
            Some(p) => crate::build::parse_platform(Some(p))?,
            None => b.platform.clone(),
        };
        let image = b.base_image(&stage.base, &platform, events).await?;
        b.end_step(started, None, events);
        let mut run = StageRun {
            b,
            index,
            label,
            image,
            rootfs: None,
            snapshotter: StatWalk::new(Vec::new()),
            args: BTreeMap::new(),
            cmd_set: false,
        };
        for ins in &stage.instructions {
            let started = run.b.begin_step(&run.label, ins, events);
            let layer = run.dispatch(ins, events).await?;
            run.b.end_step(started, layer, events);
        }
        Ok(FinishedStage {
            image: run.image,
            rootfs: run.rootfs,
        })
    }

    async fn dispatch(
        &mut self,
        ins: &Instruction,
        events: Events<'_>,
    ) -> Result<Option<(String, u64)>> {
        use InstructionKind as K;
        match &ins.kind {
            K::Run(args) => return self.run_command(ins, args, events).await,
            K::Copy(args) => return self.copy(ins, args, false, events).await,
            K::Add(args) => return self.copy(ins, args, true, events).await,
            K::Workdir(dir) => return self.workdir(ins, dir, events).await,
            K::Arg(decls) => {
                for decl in decls {
                    let value = match self.b.opts.build_args.get(&decl.name) {
                        Some(Some(v)) => Some(v.clone()),
                        _ => match &decl.default {
                            Some(d) => Some(self.expand(ins, d)?),
                            None => self.b.plan.global_args.get(&decl.name).cloned().flatten(),
                        },
                    };
                    self.b.used_args.insert(decl.name.clone());
                    self.args.insert(decl.name.clone(), value);
                }
            }
            K::Env(pairs) => {
                let vars = self.vars();
                let mut expanded = Vec::new();
                for (k, v) in pairs {
                    expanded.push((
                        self.expand_with(ins, k, &vars)?,
                        self.expand_with(ins, v, &vars)?,
                    ));
                }
                for (k, v) in expanded {
                    self.image.config.env_set(&k, &v);
                }
            }
            K::Label(pairs) => {
                let vars = self.vars();
                for (k, v) in pairs {
                    let (k, v) = (
                        self.expand_with(ins, k, &vars)?,
                        self.expand_with(ins, v, &vars)?,
                    );
                    let labels = self
                        .image
                        .config
                        .config
                        .labels
                        .get_or_insert_with(Default::default);
                    labels.insert(k, v);
                }
            }
            K::User(user) => {
                let user = self.expand(ins, user)?;
                self.image.config.config.user = Some(user);
            }
            K::Expose(ports) => {
                for port in self.expand_all(ins, ports)? {
                    for p in expose_ports(&port).map_err(|m| self.b.plan.step_error(ins, &m))? {
                        let config = &mut self.image.config.config;
                        config
                            .exposed_ports
                            .get_or_insert_with(Default::default)
                            .insert(p, Empty {});
                    }
                }
            }
            K::Volume(volumes) => {
                for v in self.expand_all(ins, volumes)? {
                    if v.is_empty() {
                        return Err(self.b.plan.step_error(ins, "VOLUME with an empty path"));
                    }
                    let config = &mut self.image.config.config;
                    config
                        .volumes
                        .get_or_insert_with(Default::default)
                        .insert(v, Empty {});
                }
            }
            K::StopSignal(sig) => {
                let sig = self.expand(ins, sig)?;
                self.image.config.config.stop_signal = Some(sig);
            }
            K::Entrypoint(cmd) => {
                self.image.config.config.entrypoint = Some(self.argv(cmd));
                if !self.cmd_set {
                    self.image.config.config.cmd = None;
                }
            }
            K::Cmd(cmd) => {
                self.image.config.config.cmd = Some(self.argv(cmd));
                self.cmd_set = true;
            }
            K::Shell(shell) => {
                if shell.is_empty() {
                    return Err(self
                        .b
                        .plan
                        .step_error(ins, "SHELL needs at least one element"));
                }
                self.image.config.config.shell = Some(shell.clone());
            }
            K::Maintainer(name) => self.image.config.author = Some(name.clone()),
            K::From { .. } => unreachable!("FROM starts a stage"),
            _ => {
                return Err(self
                    .b
                    .plan
                    .step_error(ins, "this instruction is not supported yet by ocibuild"))
            }
        }
        self.history(ins, true);
        Ok(None)
    }

    /// ARGs with a value, overridden by ENV.
    fn vars(&self) -> StageVars {
        let mut map: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in &self.args {
            if let Some(v) = v {
                map.insert(k.clone(), v.clone());
            }
        }
        map.extend(self.image.config.env_pairs());
        StageVars(map)
    }

    fn expand(&self, ins: &Instruction, word: &str) -> Result<String> {
        let vars = self.vars();
        self.expand_with(ins, word, &vars)
    }

    fn expand_with(&self, ins: &Instruction, word: &str, vars: &StageVars) -> Result<String> {
        expand_word(word, vars, self.b.plan.escape)
            .map_err(|e| self.b.plan.step_error(ins, &e.to_string()))
    }

    /// Expands each item and splits it into words (EXPOSE, VOLUME).
    fn expand_all(&self, ins: &Instruction, items: &[String]) -> Result<Vec<String>> {
        let vars = self.vars();
        let mut words = Vec::new();
        for item in items {
            let expanded = expand_words(item, &vars, self.b.plan.escape)
                .map_err(|e| self.b.plan.step_error(ins, &e.to_string()))?;
            words.extend(expanded);
        }
        Ok(words)
    }

    /// The argv of CMD/ENTRYPOINT/RUN: exec form as is, shell form through SHELL.
    fn argv(&self, cmd: &Command) -> Vec<String> {
        match cmd {
            Command::Exec(args) => args.clone(),
            Command::Shell(text) => {
                let mut argv: Vec<String> = match &self.image.config.config.shell {
                    Some(shell) => shell.clone(),
                    None => DEFAULT_SHELL.iter().map(|s| s.to_string()).collect(),
                };
                argv.push(text.clone());
                argv
            }
        }
    }

    fn history(&mut self, ins: &Instruction, empty_layer: bool) {
        let created = self.b.created.clone();
        self.image
            .config
            .push_history(&created, &ins.original, empty_layer);
    }

    fn step_err(&self, ins: &Instruction, source: impl Into<BoxError>) -> BuildError {
        BuildError::Step {
            file: self.b.plan.file.clone(),
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
        let dir = self
            .b
            .work
            .join(format!("stage-{}", self.index))
            .join("rootfs");
        materialize(self.b, &self.image, &dir).await?;
        self.snapshotter
            .baseline(&dir)
            .map_err(BuildError::snapshot(format!("recording {}", dir.display())))?;
        self.rootfs = Some(dir.clone());
        Ok(dir)
    }

    /// Snapshots what the instruction changed into a layer (none when nothing changed).
    fn commit(&mut self, ins: &Instruction) -> Result<Option<(String, u64)>> {
        let rootfs = self.rootfs.clone().expect("commit after materializing");
        let changes = self
            .snapshotter
            .changes(&rootfs)
            .map_err(BuildError::snapshot(format!(
                "snapshotting {}",
                rootfs.display()
            )))?;
        if changes.is_empty() {
            self.history(ins, true);
            return Ok(None);
        }
        let layers_dir = self.b.work.join("layers");
        std::fs::create_dir_all(&layers_dir).map_err(BuildError::io(&layers_dir))?;
        let out = layers_dir.join(format!("stage{}-line{}.layer", self.index, ins.line));
        let opts = LayerOptions {
            compression: self.b.opts.compression,
            mtime: self.b.opts.reproducible.then_some(0),
        };
        let info = ocibuild_snapshot::write_layer(&rootfs, &changes, &out, &opts).map_err(
            BuildError::snapshot(format!("writing the layer of line {}", ins.line)),
        )?;
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
        dir: &str,
        _events: Events<'_>,
    ) -> Result<Option<(String, u64)>> {
        let dir = self.expand(ins, dir)?;
        let current = self
            .image
            .config
            .config
            .working_dir
            .clone()
            .unwrap_or_else(|| "/".into());
        let path = clean_path(&Path::new(&current).join(&dir));
        self.image.config.config.working_dir = Some(path.clone());
        let rootfs = self.rootfs().await?;
        let owner = self.user_ids(ins, &rootfs)?;
        self.make_dir(ins, &rootfs, &path, owner)?;
        self.commit(ins)
    }

    /// The numeric ids of the image's current USER (root when unset).
    fn user_ids(&self, ins: &Instruction, rootfs: &Path) -> Result<(u32, u32)> {
        let user = self.image.config.config.user.as_deref();
        let ids = isolation::resolve_user(rootfs, user).map_err(|e| self.step_err(ins, e))?;
        Ok((ids.uid, ids.gid))
    }

    /// Creates `path` (inside the image) and missing parents, owned by `owner`.
    fn make_dir(
        &self,
        ins: &Instruction,
        rootfs: &Path,
        path: &str,
        owner: (u32, u32),
    ) -> Result<()> {
        let host = ocibuild_snapshot::resolve_in_root(rootfs, Path::new(path), true)
            .map_err(|e| self.step_err(ins, e))?;
        if host.is_dir() {
            return Ok(());
        }
        let mut missing = Vec::new();
        let mut cur = host.as_path();
        while !cur.exists() && cur != rootfs {
            missing.push(cur.to_path_buf());
            cur = cur.parent().unwrap_or(rootfs);
        }
        for dir in missing.iter().rev() {
            std::fs::create_dir(dir)
                .map_err(|e| self.step_err(ins, format!("{}: {e}", dir.display())))?;
            copy::lchown(dir, owner.0, owner.1).map_err(|e| self.step_err(ins, e))?;
        }
        Ok(())
    }

    async fn copy(
        &mut self,
        ins: &Instruction,
        args: &CopyArgs,
        is_add: bool,
        events: Events<'_>,
    ) -> Result<Option<(String, u64)>> {
        if !args.heredocs.is_empty() {
            return Err(self.step_err(ins, "heredocs in COPY/ADD are not supported yet"));
        }
        let vars = self.vars();
        let mut sources = Vec::new();
        for s in &args.sources {
            let s = self.expand_with(ins, s, &vars)?;
            if is_add
                && (s.starts_with("http://") || s.starts_with("https://") || s.starts_with("git@"))
            {
                return Err(self.step_err(ins, format!("ADD from a URL ({s}) is not supported yet; download it in a RUN step or COPY a local file")));
            }
            sources.push(s);
        }
        let dest = self.expand_with(ins, &args.dest, &vars)?;
        let workdir = self
            .image
            .config
            .config
            .working_dir
            .clone()
            .unwrap_or_else(|| "/".into());
        let mut dest_abs = if dest.starts_with('/') {
            dest.clone()
        } else {
            format!("{}/{dest}", workdir.trim_end_matches('/'))
        };
        if (dest.ends_with('/') || dest == ".") && !dest_abs.ends_with('/') {
            dest_abs.push('/');
        }
        let rootfs = self.rootfs().await?;
        let chown = match &args.chown {
            Some(spec) => {
                let spec = self.expand_with(ins, spec, &vars)?;
                let ids = isolation::resolve_user(&rootfs, Some(&spec))
                    .map_err(|e| self.step_err(ins, e))?;
                Some((ids.uid, ids.gid))
            }
            None => None,
        };
        let chmod = match &args.chmod {
            Some(bits) => Some(u32::from_str_radix(bits, 8).map_err(|_| {
                self.step_err(
                    ins,
                    format!("--chmod={bits}: expected octal permission bits such as 755"),
                )
            })?),
            None => None,
        };
        let opts = CopyOptions {
            chown,
            chmod,
            extract_archives: is_add,
        };
        let from_dir;
        let from = match &args.from {
            None => SourceRoot {
                dir: &self.b.context,
                ignore: Some(&self.b.ignore),
                origin: "build context".into(),
                keep_owner: false,
            },
            Some(name) => {
                let name = self.expand_with(ins, name, &vars)?;
                from_dir = self.source_rootfs(ins, &name, events).await?;
                SourceRoot {
                    dir: &from_dir,
                    ignore: None,
                    origin: format!("stage or image {name:?}"),
                    keep_owner: true,
                }
            }
        };
        copy::copy_sources(&from, &sources, &dest_abs, &rootfs, &opts)
            .map_err(|e| self.step_err(ins, e))?;
        self.commit(ins)
    }

    /// The root filesystem of `--from=NAME`: an earlier stage, or an image pulled for it.
    async fn source_rootfs(
        &mut self,
        ins: &Instruction,
        name: &str,
        events: Events<'_>,
    ) -> Result<PathBuf> {
        if let Some(i) = self.b.plan.stage_index(name).filter(|i| *i < self.index) {
            let done = self.b.finished[i]
                .as_ref()
                .ok_or_else(|| self.step_err(ins, format!("stage {name:?} was not built")))?;
            if let Some(dir) = &done.rootfs {
                return Ok(dir.clone());
            }
            let image = done.image.clone();
            let dir = self.b.work.join(format!("stage-{i}")).join("rootfs");
            materialize(self.b, &image, &dir).await?;
            self.b.finished[i].as_mut().expect("checked above").rootfs = Some(dir.clone());
            return Ok(dir);
        }
        let platform = self.b.platform.clone();
        let image = self.b.pull_image(name, &platform, events).await?;
        let dir = self.b.work.join(format!(
            "image-{}",
            crate::image::sha256_digest(name.as_bytes()).trim_start_matches("sha256:")
        ));
        if !dir.exists() {
            materialize(self.b, &image, &dir).await?;
        }
        Ok(dir)
    }

    async fn run_command(
        &mut self,
        ins: &Instruction,
        args: &RunArgs,
        events: Events<'_>,
    ) -> Result<Option<(String, u64)>> {
        if !args.mounts.is_empty() {
            return Err(self.step_err(ins, "RUN --mount is not supported yet"));
        }
        if !args.heredocs.is_empty() {
            return Err(self.step_err(ins, "heredocs in RUN are not supported yet"));
        }
        let network = match args.network.as_deref() {
            None | Some("default") | Some("host") => Network::Host,
            Some("none") => Network::None,
            Some(other) => {
                return Err(self.step_err(
                    ins,
                    format!("--network={other}: expected default, none or host"),
                ))
            }
        };
        let rootfs = self.rootfs().await?;
        let argv = self.argv(&args.command);
        let mut env = self.image.config.env_pairs();
        for (k, v) in &self.args {
            if let Some(v) = v {
                if !env.iter().any(|(ek, _)| ek == k) {
                    env.push((k.clone(), v.clone()));
                }
            }
        }
        let cwd = self
            .image
            .config
            .config
            .working_dir
            .clone()
            .unwrap_or_else(|| "/".into());
        let owner = self.user_ids(ins, &rootfs)?;
        self.make_dir(ins, &rootfs, &cwd, owner)?;
        let scratch = self.b.work.join("scratch");
        std::fs::create_dir_all(&scratch).map_err(BuildError::io(&scratch))?;
        let spec = RunSpec {
            rootfs: rootfs.clone(),
            argv,
            env,
            cwd,
            user: self.image.config.config.user.clone(),
            hostname: None,
            network,
            isolation: self.b.opts.isolation,
            extra_mounts: Vec::new(),
            scratch_dir: scratch,
        };
        let outcome = isolation::run(&spec, &mut |bytes: &[u8]| {
            events(BuildEvent::Output(bytes.to_vec()))
        })
        .map_err(|e| self.step_err(ins, e))?;
        if outcome.status != 0 {
            return Err(BuildError::RunFailed {
                file: self.b.plan.file.clone(),
                line: ins.line,
                instruction: ins.original.clone(),
                code: outcome.status,
            });
        }
        self.commit(ins)
    }
}

/// Unpacks `image`'s layers into a fresh `dir`.
pub(crate) async fn materialize(b: &Builder<'_>, image: &Image, dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(BuildError::io(dir))?;
    }
    std::fs::create_dir_all(dir).map_err(BuildError::io(dir))?;
    for layer in &image.layers {
        let file = b.blobs.local_file(&b.pull_client, layer).await?;
        ocibuild_snapshot::unpack_layer_file(&file, dir).map_err(BuildError::snapshot(format!(
            "unpacking layer {}",
            layer.digest()
        )))?;
    }
    Ok(())
}

/// `/a/./b/../c/` → `/a/c`.
fn clean_path(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            std::path::Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            std::path::Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    format!("/{}", parts.join("/"))
}

/// EXPOSE values to `port/proto` keys: `80` → `80/tcp`, `53/UDP` → `53/udp`,
/// `8000-8002` → three ports.
fn expose_ports(spec: &str) -> std::result::Result<Vec<String>, String> {
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("EXPOSE {spec}: protocol must be tcp, udp or sctp"));
    }
    let bad = || format!("EXPOSE {spec}: invalid port (expected N, N/proto or N-M)");
    let parse = |p: &str| p.parse::<u16>().map_err(|_| bad());
    let (lo, hi) = match ports.split_once('-') {
        Some((lo, hi)) => (parse(lo)?, parse(hi)?),
        None => (parse(ports)?, parse(ports)?),
    };
    if lo > hi {
        return Err(bad());
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

impl Builder<'_> {
    pub(crate) fn begin_step(
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

    pub(crate) fn end_step(
        &self,
        started: (usize, Instant),
        layer: Option<(String, u64)>,
        events: Events<'_>,
    ) {
        events(BuildEvent::StepDone {
            number: started.0,
            elapsed: started.1.elapsed(),
            layer,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expose_accepts_protocols_and_ranges() {
        assert_eq!(expose_ports("8080").unwrap(), ["8080/tcp"]);
        assert_eq!(expose_ports("53/UDP").unwrap(), ["53/udp"]);
        assert_eq!(
            expose_ports("8000-8002/tcp").unwrap(),
            ["8000/tcp", "8001/tcp", "8002/tcp"]
        );
        assert!(expose_ports("http").is_err());
        assert!(expose_ports("80/icmp").is_err());
    }

    #[test]
    fn workdir_paths_are_cleaned() {
        assert_eq!(clean_path(Path::new("/app/./x/../bin/")), "/app/bin");
        assert_eq!(clean_path(Path::new("/")), "/");
        assert_eq!(clean_path(Path::new("/../..")), "/");
    }
}
