//! The typed step IR: one [`Op`] per Dockerfile instruction of a stage, with word
//! expansion and flag parsing done once, here, and every error naming the line.
//!
//! Lowering needs the stage's variables, and those depend on the base image's config ENV,
//! so the engine lowers each instruction when it reaches it, with a [`Scope`] built from
//! the stage's state: [`lower`] turns an [`Instruction`] into an [`Op`] and updates the
//! scope the way the instruction does (ARG, ENV, USER, WORKDIR, SHELL).
//!
//! Each op names its cache-key inputs ([`RunOp::key_fields`], [`WorkdirOp::key_fields`]);
//! the engine hashes them in order, so the keys are the ones it computed before the IR.

mod copy;
mod meta;
mod run;
#[cfg(test)]
mod tests;

use crate::expand::{expand_word, expand_words, ExpandError, Vars};
use crate::mount::MountSpecError;
use crate::parser::{Command, Instruction, InstructionKind};
pub(crate) use crate::pathmatch::clean_path;
use std::collections::BTreeMap;

pub use copy::{Chmod, CopyOp};
pub use meta::{expose_ports, ConfigEdit};
pub use run::{Network, RunOp, RunScript, Security};

/// The shell of shell-form commands when the stage has no `SHELL`.
pub const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// One step of a stage, fully expanded and parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `RUN`.
    Run(RunOp),
    /// `COPY` and `ADD`.
    Copy(CopyOp),
    /// `WORKDIR`.
    Workdir(WorkdirOp),
    /// An instruction that only changes the image config or the variables in scope.
    Meta(ConfigEdit),
}

/// `WORKDIR`: the directory to create and make the working directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkdirOp {
    /// The new working directory: absolute and cleaned (`/a/./b/..` → `/a`).
    pub path: String,
    /// The `USER` that owns the directories it creates (None: root).
    pub user: Option<String>,
}

impl WorkdirOp {
    /// The cache-key fields, in order: `path`, `user`.
    pub fn key_fields(&self) -> Vec<(&'static str, KeyValue)> {
        vec![
            ("path", KeyValue::Text(self.path.clone())),
            (
                "user",
                KeyValue::Text(self.user.clone().unwrap_or_default()),
            ),
        ]
    }
}

/// The value of one cache-key field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyValue {
    /// One string, hashed as its bytes.
    Text(String),
    /// A list of strings, hashed as one field of length-prefixed items.
    List(Vec<String>),
}

/// What is in scope while lowering a stage's instructions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The Dockerfile's escape character.
    pub escape: char,
    /// The stage's ARGs (None: declared without a value).
    pub args: BTreeMap<String, Option<String>>,
    /// The image config's ENV, in order.
    pub env: Vec<(String, String)>,
    /// The image config's SHELL (None: [`DEFAULT_SHELL`]).
    pub shell: Option<Vec<String>>,
    /// The image config's USER.
    pub user: Option<String>,
    /// The image config's WORKDIR (None: `/`).
    pub workdir: Option<String>,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, Option<String>>,
    /// The global ARGs (declared before the first FROM) and their values.
    pub global_args: BTreeMap<String, Option<String>>,
    /// The automatic platform ARGs (`TARGETPLATFORM`, …).
    pub auto_args: BTreeMap<String, String>,
}

impl Default for Scope {
    fn default() -> Scope {
        Scope {
            escape: '\\',
            args: BTreeMap::new(),
            env: Vec::new(),
            shell: None,
            user: None,
            workdir: None,
            build_args: BTreeMap::new(),
            global_args: BTreeMap::new(),
            auto_args: BTreeMap::new(),
        }
    }
}

impl Vars for Scope {
    /// ENV wins over an ARG of the same name (the last entry of a name repeated in ENV).
    fn get(&self, name: &str) -> Option<String> {
        match self.env.iter().rev().find(|(k, _)| k == name) {
            Some((_, v)) => Some(v.clone()),
            None => self.args.get(name).cloned().flatten(),
        }
    }
}

impl Scope {
    /// Expands one word with the variables in scope.
    pub fn expand(&self, word: &str) -> Result<String, ExpandError> {
        expand_word(word, self, self.escape)
    }

    /// Expands each item and splits it into words (EXPOSE, VOLUME).
    pub fn expand_all(&self, items: &[String]) -> Result<Vec<String>, ExpandError> {
        let mut words = Vec::new();
        for item in items {
            words.extend(expand_words(item, self, self.escape)?);
        }
        Ok(words)
    }

    /// The variables in scope by name: the ARGs with a value, overridden by ENV.
    pub fn vars(&self) -> BTreeMap<String, String> {
        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in &self.args {
            if let Some(v) = v {
                vars.insert(k.clone(), v.clone());
            }
        }
        vars.extend(self.env.iter().cloned());
        vars
    }

    /// Sets ENV `key` in place, or appends it.
    pub fn set_env(&mut self, key: &str, value: &str) {
        match self.env.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.to_string(),
            None => self.env.push((key.to_string(), value.to_string())),
        }
    }

    /// The working directory (`/` when unset).
    pub fn cwd(&self) -> String {
        self.workdir.clone().unwrap_or_else(|| "/".into())
    }

    /// The argv of CMD/ENTRYPOINT/RUN: exec form as is, shell form through SHELL.
    pub fn argv(&self, cmd: &Command) -> Vec<String> {
        match cmd {
            Command::Exec(args) => args.clone(),
            Command::Shell(text) => {
                let mut argv: Vec<String> = match &self.shell {
                    Some(shell) => shell.clone(),
                    None => DEFAULT_SHELL.iter().map(|s| s.to_string()).collect(),
                };
                argv.push(text.clone());
                argv
            }
        }
    }
}

/// Build args Docker defines without an ARG instruction (proxy settings: passed to RUN,
/// never warned about, never part of a cache key unless declared).
pub fn is_predefined_arg(name: &str) -> bool {
    matches!(
        name.to_ascii_uppercase().as_str(),
        "HTTP_PROXY" | "HTTPS_PROXY" | "FTP_PROXY" | "NO_PROXY" | "ALL_PROXY"
    )
}

/// An instruction that cannot be lowered, with its line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {instruction}: {reason}")]
pub struct LowerError {
    /// The instruction's first line in the Dockerfile.
    pub line: usize,
    /// The instruction as written.
    pub instruction: String,
    /// What is wrong.
    pub reason: LowerReason,
}

/// Why an instruction cannot be lowered. Messages say what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LowerReason {
    /// A `$` reference that does not expand.
    #[error("{0}")]
    Expand(ExpandError),
    /// A `--mount=` value (after expansion) that does not parse.
    #[error("--mount={text}: {error}")]
    Mount {
        /// The expanded value.
        text: String,
        /// Why it does not parse.
        error: Box<MountSpecError>,
    },
    /// An unknown `--network=` value.
    #[error("--network={0}: expected default, none or host")]
    Network(String),
    /// An unknown `--security=` value.
    #[error("--security={0}: expected sandbox or insecure")]
    Security(String),
    /// RUN heredocs with an exec-form command.
    #[error("heredocs need the shell form of RUN")]
    HeredocNeedsShell,
    /// A heredoc name that cannot be a file name.
    #[error("heredoc name {0:?} cannot be used as a file name")]
    HeredocName(String),
    /// A `--chmod=` value that is not octal.
    #[error("--chmod={0}: expected octal permission bits such as 755")]
    Chmod(String),
    /// An EXPOSE value that is not a port, range or port/protocol.
    #[error("{0}")]
    Expose(String),
    /// `VOLUME ""`.
    #[error("VOLUME with an empty path")]
    EmptyVolume,
    /// `SHELL []`.
    #[error("SHELL needs at least one element")]
    EmptyShell,
    /// FROM starts a stage; it is not a step.
    #[error("FROM starts a stage and cannot be lowered to a step")]
    From,
}

impl From<ExpandError> for LowerReason {
    fn from(e: ExpandError) -> LowerReason {
        LowerReason::Expand(e)
    }
}

/// Lowers one instruction with the variables in `scope`, and applies the instruction's
/// effect on the scope (ARG, ENV, USER, WORKDIR, SHELL).
pub fn lower(instruction: &Instruction, scope: &mut Scope) -> Result<Op, LowerError> {
    lower_kind(&instruction.kind, scope).map_err(|reason| LowerError {
        line: instruction.line,
        instruction: instruction.original.clone(),
        reason,
    })
}

fn lower_kind(kind: &InstructionKind, scope: &mut Scope) -> Result<Op, LowerReason> {
    use InstructionKind as K;
    match kind {
        K::Run(args) => Ok(Op::Run(run::lower_run(args, scope)?)),
        K::Copy(args) => Ok(Op::Copy(copy::lower_copy(args, false, scope)?)),
        K::Add(args) => Ok(Op::Copy(copy::lower_copy(args, true, scope)?)),
        K::Workdir(dir) => Ok(Op::Workdir(lower_workdir(dir, scope)?)),
        K::From { .. } => Err(LowerReason::From),
        other => Ok(Op::Meta(meta::lower_meta(other, scope)?)),
    }
}

fn lower_workdir(dir: &str, scope: &mut Scope) -> Result<WorkdirOp, LowerReason> {
    let dir = scope.expand(dir)?;
    let path = if dir.starts_with('/') {
        clean_path(&dir)
    } else {
        clean_path(&format!("{}/{dir}", scope.cwd()))
    };
    scope.workdir = Some(path.clone());
    Ok(WorkdirOp {
        path,
        user: scope.user.clone(),
    })
}

/// Checks that a heredoc name works as a file name.
fn check_heredoc_name(name: &str) -> Result<(), LowerReason> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(LowerReason::HeredocName(name.to_string()));
    }
    Ok(())
}
