//! `RUN --mount`s made ready for the sandbox: what each contributes to the step's key, and
//! the host directories and files behind them — cache directories (held while the command
//! runs), secrets written to files or given as variables, binds of the context or another
//! stage (copied first when writable, so writes are discarded) and tmpfs. File work runs on
//! the blocking thread pool (a `sharing=locked` cache waits for its lock there).

use super::Source;
use crate::copy::{self, CopyOptions};
use crate::error::{BuildError, Result};
use crate::isolation::{self, TmpfsMount};
use crate::layers::SourceTree;
use crate::mounts::{self as mount_store, CacheLease, MountSpec};
use crate::stage::StageRun;
use ocibuild_dockerfile::parser::Instruction;
use std::path::{Path, PathBuf};

/// The mounts of a RUN, ready for its sandbox.
#[derive(Default)]
pub(crate) struct Prepared {
    /// Bind mounts (binds, secrets and cache directories), in the order given.
    pub mounts: Vec<isolation::Mount>,
    /// Tmpfs mounts.
    pub tmpfs: Vec<TmpfsMount>,
    /// The cache directories in use, held until the command ends.
    pub leases: Vec<CacheLease>,
}

/// What a `--mount` contributes to the RUN's cache key besides its text: the content of a
/// bind source (context files, or the source stage's key or image's identity). Cache mount
/// contents and secret values never do.
pub(crate) async fn key_input(
    stage: &mut StageRun<'_, '_>,
    ins: &Instruction,
    spec: &MountSpec,
) -> Result<String> {
    let MountSpec::Bind { from, source, .. } = spec else {
        return Ok(String::new());
    };
    match from {
        None => {
            let source = source.trim_start_matches('/');
            let source = if source.is_empty() { "." } else { source };
            stage
                .context_digest(ins, vec![source.to_string()], Vec::new())
                .await
        }
        Some(name) => stage.source_key(name).await,
    }
}

/// Prepares `specs` for the sandbox, with files in `dir` and secrets given as variables
/// added to `env`.
pub(crate) async fn prepare(
    stage: &mut StageRun<'_, '_>,
    ins: &Instruction,
    specs: &[MountSpec],
    dir: &Path,
    env: &mut Vec<(String, String)>,
) -> Result<Prepared> {
    let made = dir.to_path_buf();
    crate::blocking::run(move || std::fs::create_dir_all(&made).map_err(BuildError::io(&made)))
        .await?;
    let mut prepared = Prepared::default();
    for (n, spec) in specs.iter().enumerate() {
        match spec {
            MountSpec::Tmpfs { target, size } => prepared.tmpfs.push(TmpfsMount {
                target: target.clone(),
                size: *size,
            }),
            MountSpec::Secret { .. } => {
                let file_dir = dir.join(format!("secret-{n}"));
                let mount = secret_mount(stage, ins, spec, file_dir, env).await?;
                prepared.mounts.extend(mount);
            }
            MountSpec::Cache { .. } => {
                if let Some((mount, lease)) = cache_mount(stage, ins, spec).await? {
                    prepared.mounts.push(mount);
                    prepared.leases.push(lease);
                }
            }
            MountSpec::Bind { .. } => {
                let copy_dir = dir.join(format!("bind-{n}"));
                prepared
                    .mounts
                    .extend(bind_mount(stage, ins, spec, copy_dir).await?);
            }
        }
    }
    Ok(prepared)
}

/// A `type=secret` mount: its value added to `env` under `env=NAME`, and written to a file
/// in `file_dir` to bind at its target (by default `/run/secrets/ID`, none when only a
/// variable is asked for). A secret that was not given fails the step if `required`.
async fn secret_mount(
    stage: &StageRun<'_, '_>,
    ins: &Instruction,
    spec: &MountSpec,
    file_dir: PathBuf,
    env: &mut Vec<(String, String)>,
) -> Result<Option<isolation::Mount>> {
    let MountSpec::Secret {
        id,
        target,
        env: var,
        required,
        mode,
        uid,
        gid,
    } = spec
    else {
        return Ok(None);
    };
    let missing = || match required {
        true => Err(stage.step_err(ins, mount_store::missing_secret(id))),
        false => Ok(None),
    };
    let secrets = stage.settings.secrets.clone();
    if let Some(name) = var {
        let (secrets, id) = (secrets.clone(), id.clone());
        let value = crate::blocking::spawn(move || secrets.value(&id)).await?;
        match value.map_err(|e| stage.step_err(ins, e))? {
            Some(value) => env.push((name.clone(), String::from_utf8_lossy(&value).into_owned())),
            None => {
                missing()?;
            }
        }
    }
    let default_target = || var.is_none().then(|| format!("/run/secrets/{id}"));
    let Some(target) = target.clone().or_else(default_target) else {
        return Ok(None);
    };
    let (id, owner) = (id.clone(), (*mode, *uid, *gid));
    let written =
        crate::blocking::spawn(move || secrets.write_to(&id, &file_dir, owner.0, owner.1, owner.2));
    match written.await?.map_err(|e| stage.step_err(ins, e))? {
        Some(file) => Ok(Some(isolation::Mount {
            source: file,
            target,
            readonly: true,
        })),
        None => missing(),
    }
}

/// A `type=cache` mount: its directory, acquired as its `sharing` says (waiting for a
/// `locked` one on the blocking pool) and seeded from `from`'s `source` when it was just
/// made.
async fn cache_mount(
    stage: &mut StageRun<'_, '_>,
    ins: &Instruction,
    spec: &MountSpec,
) -> Result<Option<(isolation::Mount, CacheLease)>> {
    let MountSpec::Cache {
        target,
        id,
        sharing,
        readonly,
        from,
        source,
        mode,
        uid,
        gid,
    } = spec
    else {
        return Ok(None);
    };
    let cache = match stage.stages.cache_mounts() {
        Ok(cache) => cache.clone(),
        Err(e) => return Err(stage.step_err(ins, e)),
    };
    let (id, sharing, owner) = (id.clone(), *sharing, (*mode, *uid, *gid));
    let lease =
        crate::blocking::spawn(move || cache.acquire(&id, sharing, owner.0, owner.1, owner.2))
            .await?
            .map_err(|e| stage.step_err(ins, e))?;
    if let (true, Some(name)) = (lease.fresh, from) {
        let root = stage.source_rootfs(ins, name).await?;
        let seed = Source::stage(root, name);
        let src = source.clone().unwrap_or_else(|| "/".into());
        let dest = format!("{}/", lease.path.display());
        let seeded = crate::blocking::spawn(move || {
            let opts = CopyOptions::default();
            let host = ocibuild_snapshot::RootDir::open(Path::new("/"))?;
            copy::copy_sources(&seed.root(), &[src], &dest, &host, &opts)
        });
        seeded.await?.map_err(|e| stage.step_err(ins, e))?;
    }
    let mount = isolation::Mount {
        source: lease.path.clone(),
        target: target.clone(),
        readonly: *readonly,
    };
    Ok(Some((mount, lease)))
}

/// A `type=bind` mount of `source` in the context or in `from`'s root filesystem; a
/// writable one binds a copy made in `copy_dir`, so writes are discarded, and so does one
/// of a stage held as an overlay view (the sandbox can only bind directories of the host).
async fn bind_mount(
    stage: &mut StageRun<'_, '_>,
    ins: &Instruction,
    spec: &MountSpec,
    copy_dir: PathBuf,
) -> Result<Option<isolation::Mount>> {
    let MountSpec::Bind {
        target,
        from,
        source,
        readwrite,
    } = spec
    else {
        return Ok(None);
    };
    let tree = match from {
        None => SourceTree::dir(stage.settings.context.clone()),
        Some(name) => stage.source_rootfs(ins, name).await?,
    };
    // A stage's overlay view cannot be bound into the sandbox: its files are copied.
    let (rel, copied) = (PathBuf::from(source), *readwrite || tree.is_view());
    let found = crate::blocking::run(move || bind_source(tree.path(), &rel, copied, copy_dir));
    let host = match found.await? {
        Ok(path) => path,
        Err(BindProblem::Resolve(e)) => return Err(stage.step_err(ins, e)),
        Err(BindProblem::Missing) => {
            let origin = from.as_deref().unwrap_or("the build context");
            let message = format!("--mount source {source:?} does not exist in {origin}");
            return Err(stage.step_err(ins, message));
        }
        Err(BindProblem::CopyFailed(host)) => {
            let message = format!(
                "copying {} for a writable bind mount failed",
                host.display()
            );
            return Err(stage.step_err(ins, message));
        }
    };
    Ok(Some(isolation::Mount {
        source: host,
        target: target.clone(),
        readonly: !readwrite,
    }))
}

/// Why a bind mount's source cannot be bound.
enum BindProblem {
    /// Resolving it inside its root failed.
    Resolve(ocibuild_snapshot::Error),
    /// It does not exist.
    Missing,
    /// Copying it (at this host path) for a writable mount failed.
    CopyFailed(PathBuf),
}

/// The host path to bind for `rel` inside `root` (resolved there, read only: the context
/// or another stage's root filesystem, where no command is running); when `copied`, a
/// copy of it made at `copy_dir`.
fn bind_source(
    root: &Path,
    rel: &Path,
    copied: bool,
    copy_dir: PathBuf,
) -> Result<std::result::Result<PathBuf, BindProblem>> {
    let host = match ocibuild_snapshot::resolve_in_root(root, rel, true) {
        Ok(host) => host,
        Err(e) => return Ok(Err(BindProblem::Resolve(e))),
    };
    if !host.exists() {
        return Ok(Err(BindProblem::Missing));
    }
    if !copied {
        return Ok(Ok(host));
    }
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&host)
        .arg(&copy_dir)
        .status()
        .map_err(BuildError::io(&host))?;
    if !status.success() {
        return Ok(Err(BindProblem::CopyFailed(host)));
    }
    Ok(Ok(copy_dir))
}
