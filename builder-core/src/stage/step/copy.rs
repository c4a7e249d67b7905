//! COPY and ADD: the key covers a digest of the sources (or the `--from` stage's key or
//! image's identity); on a miss the sources are copied, downloaded or extracted into the
//! root filesystem on the blocking thread pool (downloads stay on the async runtime).

use super::{remove_dir, write_file, KeyFields, Layering, Source, Step};
use crate::copy::{self, AddOptions, CopyError, CopyOptions};
use crate::engine::StageOptions;
use crate::error::{BuildError, Result};
use crate::stage::StageRun;
use ocibuild_dockerfile::ir::CopyOp;
use ocibuild_dockerfile::parser::Instruction;
use ocibuild_snapshot::RootDir;

impl Step for CopyOp {
    fn kind(&self) -> &'static str {
        self.key_kind()
    }

    fn layering(&self, options: &StageOptions) -> Layering {
        Layering::Layer {
            cached: options.cache_copy_layers,
        }
    }

    /// The expanded arguments and a digest of the sources; a URL without `--checksum` can
    /// change at any time, so its step gets a nonce and is never reused.
    async fn key_fields(
        &self,
        stage: &mut StageRun<'_, '_>,
        ins: &Instruction,
    ) -> Result<KeyFields> {
        let content = match &self.from {
            None => {
                let sources = self.sources.clone();
                stage
                    .context_digest(ins, sources, self.exclude.clone())
                    .await?
            }
            Some(name) => stage.source_key(name).await?,
        };
        let unpinned_url =
            self.sources.iter().any(|s| crate::fetch::is_url(s)) && self.checksum.is_none();
        let nonce = if unpinned_url {
            crate::time::now_rfc3339() + &std::process::id().to_string()
        } else {
            String::new()
        };
        Ok(CopyOp::key_fields(self, content, nonce))
    }

    async fn execute(self, stage: &mut StageRun<'_, '_>, ins: &Instruction) -> Result<()> {
        let rootfs = stage.root_dir().await?;
        let opts = copy_options(stage, ins, &self, &rootfs).await?;
        let from = match &self.from {
            None => Source::context(stage.settings),
            Some(name) => Source::stage(stage.source_rootfs(ins, name).await?, name),
        };
        // Sources alone are counted by what they match (copy.rs: an empty wildcard counts
        // for nothing); with heredocs, every source counts.
        let counted = !self.heredocs.is_empty();
        let dest_abs = &self.dest_abs;
        if counted && self.sources.len() + self.heredocs.len() > 1 && !dest_abs.ends_with('/') {
            let dest = self.dest.clone();
            return Err(stage.step_err(ins, CopyError::DestNotDir { dest }));
        }
        if !self.sources.is_empty() && self.add {
            add(stage, ins, &self, from, &rootfs, &opts).await?;
        } else if !self.sources.is_empty() {
            let (sources, dest, rootfs, opts) = (
                self.sources.clone(),
                dest_abs.clone(),
                second_handle(&rootfs)?,
                opts.clone(),
            );
            let copied = crate::blocking::spawn(move || {
                copy::copy_sources(&from.root(), &sources, &dest, &rootfs, &opts)
            });
            copied.await?.map_err(|e| stage.step_err(ins, e))?;
        }
        if !self.heredocs.is_empty() {
            copy_heredocs(stage, ins, &self, rootfs, opts).await?;
        }
        Ok(())
    }
}

/// A second handle on the step's rootfs, for work on the blocking pool.
fn second_handle(rootfs: &RootDir) -> Result<RootDir> {
    rootfs
        .try_clone()
        .map_err(BuildError::snapshot("opening the step's rootfs"))
}

/// The copy options of `op`, with `--chown` resolved in `rootfs` (on the blocking pool:
/// it reads the image's user database).
async fn copy_options(
    stage: &StageRun<'_, '_>,
    ins: &Instruction,
    op: &CopyOp,
    rootfs: &RootDir,
) -> Result<CopyOptions> {
    let chown = match op.chown.clone() {
        Some(spec) => {
            let rootfs = second_handle(rootfs)?;
            let ids = crate::blocking::spawn(move || {
                let ids = crate::isolation::resolve_user_in_root(&rootfs, Some(&spec))?;
                // "A username without groupname or a UID without GID uses the same numeric
                // UID as the GID" (Dockerfile reference, COPY --chown).
                let gid = if spec.contains(':') { ids.gid } else { ids.uid };
                Ok::<_, crate::isolation::IsolationError>((ids.uid, gid))
            });
            Some(ids.await?.map_err(|e| stage.step_err(ins, e))?)
        }
        None => None,
    };
    Ok(CopyOptions {
        chown,
        chmod: op.chmod.as_ref().map(|c| c.bits),
        extract_archives: op.add,
        exclude: op.exclude.clone(),
        parents: op.parents,
    })
}

/// ADD: the sources are checked and the local ones expanded (on the blocking pool), the
/// URLs downloaded, then everything is placed in order (on the blocking pool again); the
/// downloads are removed afterwards.
async fn add(
    stage: &StageRun<'_, '_>,
    ins: &Instruction,
    op: &CopyOp,
    from: Source,
    rootfs: &RootDir,
    opts: &CopyOptions,
) -> Result<()> {
    let add = AddOptions {
        checksum: op.checksum.clone(),
        unpack: op.unpack,
        keep_git_dir: op.keep_git_dir,
    };
    let scratch = stage.settings.work.join("add-downloads");
    let (sources, dest) = (op.sources.clone(), op.dest_abs.clone());
    let (rootfs, opts) = (second_handle(rootfs)?, opts.clone());
    let added = async {
        let (plan_from, plan_dest, plan_opts, plan_add) =
            (from.clone(), dest.clone(), opts.clone(), add.clone());
        let plan = crate::blocking::spawn(move || {
            copy::plan_add(
                &plan_from.root(),
                &sources,
                &plan_dest,
                &plan_opts,
                &plan_add,
            )
        })
        .await?
        .map_err(|e| stage.step_err(ins, e))?;
        let fetched = copy::download_add(&plan, &scratch, &add)
            .await
            .map_err(|e| stage.step_err(ins, e))?;
        crate::blocking::spawn(move || {
            copy::place_add(&from.root(), &plan, fetched, &dest, &rootfs, &opts, &add)
        })
        .await?
        .map_err(|e| stage.step_err(ins, e))
    };
    let result = added.await;
    remove_dir(scratch).await?;
    result
}

/// Writes COPY/ADD heredocs (`<<NAME` sources) as files named NAME in a fresh
/// directory and copies them to the destination.
async fn copy_heredocs(
    stage: &StageRun<'_, '_>,
    ins: &Instruction,
    op: &CopyOp,
    rootfs: RootDir,
    opts: CopyOptions,
) -> Result<()> {
    let dir = stage
        .settings
        .work
        .join("scratch")
        .join(format!("heredocs-{}-{}", stage.index, ins.line));
    let docs: Vec<(String, String)> = op
        .heredocs
        .iter()
        .zip(&op.heredoc_contents)
        .map(|(doc, content)| (doc.name.clone(), content.clone()))
        .collect();
    let opts = CopyOptions {
        extract_archives: false,
        exclude: Vec::new(),
        parents: false,
        ..opts
    };
    let dest = op.dest_abs.clone();
    let copied = crate::blocking::run(move || {
        let mut names = Vec::new();
        for (name, content) in docs {
            let file = dir.join(&name);
            write_file(&file, content.as_bytes(), 0o644).map_err(BuildError::io(&file))?;
            names.push(name);
        }
        let heredocs = Source::scratch(dir, "heredoc");
        Ok(copy::copy_sources(
            &heredocs.root(),
            &names,
            &dest,
            &rootfs,
            &opts,
        ))
    });
    copied.await?.map_err(|e| stage.step_err(ins, e))
}
