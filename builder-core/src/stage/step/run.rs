//! RUN: the key covers the command, its environment and mounts (with what a bind mount
//! reads); on a miss the command runs in the sandbox ([`crate::isolation`]) on the
//! blocking thread pool, with its `--mount`s prepared by [`super::mounts`].

use super::mounts::{self, Prepared};
use super::{remove_dir, write_file, KeyFields, Layering, Step};
use crate::cancel::CancelToken;
use crate::engine::{Progress, StageOptions};
use crate::error::{BuildError, Result};
use crate::events::BuildEvent;
use crate::isolation::{self, IsolationError, Network, RunOutcome, RunRoot, RunSpec, Security};
use crate::stage::StageRun;
use ocibuild_dockerfile::ir::{self, RunOp, RunScript};
use ocibuild_dockerfile::parser::Instruction;
use std::path::{Path, PathBuf};

impl Step for RunOp {
    fn kind(&self) -> &'static str {
        "RUN"
    }

    fn layering(&self, options: &StageOptions) -> Layering {
        Layering::Layer {
            cached: options.cache_run_layers,
        }
    }

    /// `RUN --security=insecure` only with `--allow security.insecure`.
    fn prepare(&self, stage: &mut StageRun<'_, '_>, ins: &Instruction) -> Result<()> {
        if self.security == ir::Security::Insecure && !stage.settings.options.allow_insecure {
            return Err(stage.step_err(
                ins,
                "--security=insecure runs the command with every capability and no seccomp \
                 filter: start the build with --allow security.insecure to permit it",
            ));
        }
        Ok(())
    }

    async fn key_fields(
        &self,
        stage: &mut StageRun<'_, '_>,
        ins: &Instruction,
    ) -> Result<KeyFields> {
        let mut mount_inputs = Vec::new();
        for spec in &self.mounts {
            mount_inputs.push(mounts::key_input(stage, ins, spec).await?);
        }
        Ok(RunOp::key_fields(self, &mount_inputs))
    }

    /// Runs the command in the sandbox with its mounts; fails unless it exits 0.
    async fn execute(self, stage: &mut StageRun<'_, '_>, ins: &Instruction) -> Result<()> {
        let scratch = stage.settings.work.join("scratch");
        let dir = scratch.clone();
        crate::blocking::run(move || std::fs::create_dir_all(&dir).map_err(BuildError::io(&dir)))
            .await?;
        let script = match &self.script {
            Some(script) => Some(write_script(stage, ins, script, &scratch).await?),
            None => None,
        };
        stage.make_dir(ins, &self.workdir).await?;
        let mount_dir = scratch.join(format!("mounts-{}-{}", stage.index, ins.line));
        let mut env = self.env.clone();
        let prepared = mounts::prepare(stage, ins, &self.mounts, &mount_dir, &mut env).await;
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                remove_dir(mount_dir).await?;
                return Err(e);
            }
        };
        let Prepared {
            mounts: bind_mounts,
            tmpfs,
            leases,
        } = prepared;
        let root = stage.rootfs.run_root()?;
        let shown = match &root {
            RunRoot::Dir(dir) => dir.clone(),
            RunRoot::Overlay(layers) => layers.upper.clone(),
        };
        let mut spec = sandbox_spec(self, stage.settings.options.isolation, shown, env, scratch);
        spec.extra_mounts = script.into_iter().chain(bind_mounts).collect();
        spec.tmpfs_mounts = tmpfs;
        let outcome = run_isolated(spec, root, &stage.settings.cancel, stage.progress).await;
        drop(leases);
        remove_dir(mount_dir).await?;
        check_outcome(stage, ins, outcome?)
    }
}

/// What the sandbox runs for `op` (in `rootfs`, which only names the rootfs in errors: the
/// sandbox is given the step's [`RunRoot`]), with environment `env` (the op's, plus
/// secrets given as variables); mounts are added by the caller.
fn sandbox_spec(
    op: RunOp,
    isolation: isolation::Isolation,
    rootfs: PathBuf,
    env: Vec<(String, String)>,
    scratch: PathBuf,
) -> RunSpec {
    RunSpec {
        rootfs,
        argv: op.argv,
        env,
        cwd: op.workdir,
        user: op.user,
        hostname: None,
        network: match op.network {
            ir::Network::Host => Network::Host,
            ir::Network::None => Network::None,
        },
        isolation,
        security: match op.security {
            ir::Security::Sandbox => Security::Sandbox,
            ir::Security::Insecure => Security::Insecure,
        },
        extra_mounts: Vec::new(),
        tmpfs_mounts: Vec::new(),
        scratch_dir: scratch,
    }
}

/// The step's result from how the command ended: stopped (the build was cancelled),
/// failed to start, or its exit status (anything but 0 fails the build).
fn check_outcome(
    stage: &StageRun<'_, '_>,
    ins: &Instruction,
    outcome: std::result::Result<RunOutcome, IsolationError>,
) -> Result<()> {
    let outcome = match outcome {
        Err(IsolationError::Stopped) => return Err(BuildError::Cancelled),
        other => other.map_err(|e| stage.step_err(ins, e))?,
    };
    if outcome.status != 0 {
        return Err(BuildError::RunFailed {
            file: stage.settings.plan.file.clone(),
            line: ins.line,
            instruction: ins.original.clone(),
            code: outcome.status,
        });
    }
    Ok(())
}

/// Runs a RUN command in `root` on the blocking thread pool, passing its output on as
/// [`BuildEvent::Output`]. The command is killed when `cancel` is cancelled or when this
/// future is dropped (the output channel closes).
async fn run_isolated(
    spec: RunSpec,
    root: RunRoot,
    cancel: &CancelToken,
    progress: &mut Progress<'_>,
) -> Result<std::result::Result<RunOutcome, IsolationError>> {
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let cancel = cancel.clone();
    let task = crate::blocking::spawn(move || {
        let stop = || cancel.is_cancelled() || sender.is_closed();
        let mut output = |bytes: &[u8]| drop(sender.send(bytes.to_vec()));
        isolation::run_on(&root, &spec, &mut output, &stop)
    });
    let forward = async {
        while let Some(bytes) = receiver.recv().await {
            progress.report(BuildEvent::Output(bytes));
        }
    };
    let (outcome, ()) = tokio::join!(task, forward);
    outcome
}

/// Writes the script of a RUN that is a single heredoc under `scratch` and returns its
/// mount.
async fn write_script(
    stage: &StageRun<'_, '_>,
    ins: &Instruction,
    script: &RunScript,
    scratch: &Path,
) -> Result<isolation::Mount> {
    let dir = scratch.join(format!("heredoc-{}-{}", stage.index, ins.line));
    let file = dir.join(&script.name);
    let (path, content) = (file.clone(), script.content.clone());
    crate::blocking::run(move || {
        write_file(&path, content.as_bytes(), 0o755).map_err(BuildError::io(&path))
    })
    .await?;
    Ok(isolation::Mount {
        source: file,
        target: script.target(),
        readonly: true,
    })
}
