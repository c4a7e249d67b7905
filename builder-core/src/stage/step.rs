//! The step kinds of the stage loop ([`super::StageRun::step`]). Each kind says what it
//! checks and changes in the image config before it is keyed ([`Step::prepare`]), its
//! cache-key inputs ([`Step::key_fields`]), whether it makes a layer and whether that
//! layer is cached ([`Step::layering`]), and what it does to the root filesystem on a
//! cache miss ([`Step::execute`]). The loop does the keying, the lookup, applying a hit,
//! the commit and the events, once for all kinds.

mod copy;
mod meta;
mod mounts;
mod run;
mod workdir;

use super::StageRun;
use crate::cache::StepKey;
use crate::copy::SourceRoot;
use crate::engine::{Settings, StageOptions};
use crate::error::{BoxError, Result};
use crate::layers::SourceTree;
use ocibuild_dockerfile::ir::KeyValue;
use ocibuild_dockerfile::parser::Instruction;
use ocibuild_dockerfile::pathmatch::IgnoreRules;
use std::path::{Path, PathBuf};

/// The cache-key fields of a step, in order.
pub(crate) type KeyFields = Vec<(&'static str, KeyValue)>;

/// Whether a step makes a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layering {
    /// It only changes the image config: no layer, no cache lookup, an empty-layer history
    /// entry.
    Config,
    /// Its changes to the root filesystem become a layer (none when it changed nothing);
    /// looked up in and stored to the layer cache when `cached`.
    Layer {
        /// Whether the layer cache is used for this kind of step.
        cached: bool,
    },
}

/// One kind of step, as the stage loop drives it: `prepare → key → lookup → execute →
/// commit`.
pub(crate) trait Step {
    /// The kind the key is computed under (`RUN`, `COPY`, `ADD`, `WORKDIR`, `metadata`).
    fn kind(&self) -> &'static str;

    /// Whether the step makes a layer and whether the layer cache is used for it.
    fn layering(&self, options: &StageOptions) -> Layering;

    /// Checks the step and applies its effect on the image config, before it is keyed (the
    /// key of a metadata step covers the config it leaves). Nothing by default.
    fn prepare(&self, _: &mut StageRun<'_, '_>, _: &Instruction) -> Result<()> {
        Ok(())
    }

    /// The cache-key fields (what the step reads besides the previous step's key).
    async fn key_fields(
        &self,
        stage: &mut StageRun<'_, '_>,
        ins: &Instruction,
    ) -> Result<KeyFields>;

    /// Changes the root filesystem (only called for steps that make a layer, on a miss).
    async fn execute(self, stage: &mut StageRun<'_, '_>, ins: &Instruction) -> Result<()>;
}

/// The key of a step of `kind` after `previous`, from the op's fields in order.
pub(crate) fn step_key(previous: &str, kind: &str, fields: &[(&'static str, KeyValue)]) -> String {
    let mut key = StepKey::after(previous, kind);
    for (name, value) in fields {
        key = match value {
            KeyValue::Text(text) => key.field(name, text),
            KeyValue::List(items) => key.list(name, items),
        };
    }
    key.finish()
}

/// Where a COPY, ADD or bind mount reads from, owned so that the work can run on the
/// blocking thread pool (see [`SourceRoot`]).
#[derive(Debug, Clone)]
pub(crate) struct Source {
    dir: PathBuf,
    ignore: Option<IgnoreRules>,
    origin: String,
    keep_owner: bool,
    /// Keeps a stage's mounted view alive while the source is read.
    _tree: Option<SourceTree>,
}

impl Source {
    /// The build context, with its `.dockerignore` rules.
    pub fn context(settings: &Settings) -> Source {
        Source {
            dir: settings.context.clone(),
            ignore: Some(settings.ignore.clone()),
            origin: "build context".into(),
            keep_owner: false,
            _tree: None,
        }
    }

    /// The root filesystem `tree` of the stage or image `name` (owners kept).
    pub fn stage(tree: SourceTree, name: &str) -> Source {
        Source {
            dir: tree.path().to_path_buf(),
            ignore: None,
            origin: format!("stage or image {name:?}"),
            keep_owner: true,
            _tree: Some(tree),
        }
    }

    /// A directory the engine wrote (heredoc files), called `origin` in errors.
    pub fn scratch(dir: PathBuf, origin: &str) -> Source {
        Source {
            dir,
            ignore: None,
            origin: origin.into(),
            keep_owner: false,
            _tree: None,
        }
    }

    /// The borrowed form the copy functions take.
    pub fn root(&self) -> SourceRoot<'_> {
        SourceRoot {
            dir: &self.dir,
            ignore: self.ignore.as_ref(),
            origin: self.origin.clone(),
            keep_owner: self.keep_owner,
        }
    }
}

impl StageRun<'_, '_> {
    /// Creates `path` (inside the image) and missing parents (mode 0755), owned by the
    /// image's current USER (root when unset), on the blocking thread pool. Symlinks on
    /// the way are followed inside the rootfs only, and every directory is created and
    /// chowned by name in its parent's descriptor ([`ocibuild_snapshot::RootDir`]), so a
    /// link a RUN left behind cannot lead outside.
    pub(crate) async fn make_dir(&mut self, ins: &Instruction, path: &str) -> Result<()> {
        let user = self.image.config.config.user.clone();
        let root = self.root_dir().await?;
        let path = PathBuf::from(path);
        let made = crate::blocking::spawn(move || -> std::result::Result<(), BoxError> {
            let ids = crate::isolation::resolve_user_in_root(&root, user.as_deref())?;
            root.create_dir_all_owned(&path, 0o755, (ids.uid, ids.gid))?;
            Ok(())
        })
        .await?;
        made.map_err(|e| self.step_err(ins, e))
    }
}

/// Removes the directory `dir` and what is in it, if it exists, on the blocking pool
/// (failures are ignored: it is in the work directory, removed with it).
pub(crate) async fn remove_dir(dir: PathBuf) -> Result<()> {
    crate::blocking::spawn(move || std::fs::remove_dir_all(dir))
        .await?
        .ok();
    Ok(())
}

/// Writes `bytes` to `path` (creating its directory) with permission bits `mode`.
pub(crate) fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, bytes)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ocibuild_dockerfile::ir::{self, Op, Scope};

    /// Which steps make layers and which of those the layer cache serves: RUN and
    /// COPY/ADD as the cache options say, WORKDIR always, metadata never (no layer).
    #[test]
    fn steps_make_layers_cached_as_the_options_say() {
        let text = "FROM scratch\nRUN true\nCOPY a /a\nADD b /b\nWORKDIR /w\nENV A=1\n";
        let parsed = ocibuild_dockerfile::parse(text, Path::new("Dockerfile")).unwrap();
        let mut scope = Scope::default();
        let ops: Vec<Op> = parsed.instructions[1..]
            .iter()
            .map(|i| ir::lower(i, &mut scope).unwrap())
            .collect();
        let layering = |op: &Op, options: &StageOptions| match op {
            Op::Run(op) => (op.kind(), op.layering(options)),
            Op::Copy(op) => (op.kind(), op.layering(options)),
            Op::Workdir(op) => (op.kind(), op.layering(options)),
            Op::Meta(edit) => (edit.kind(), edit.layering(options)),
        };
        let options = |run: bool, copy: bool| StageOptions {
            build_args: Default::default(),
            isolation: Default::default(),
            allow_insecure: false,
            compression: Default::default(),
            reproducible: false,
            cache_run_layers: run,
            cache_copy_layers: copy,
        };
        let cached = |cached| Layering::Layer { cached };
        for (run, copy) in [(true, false), (false, true)] {
            let seen: Vec<_> = ops
                .iter()
                .map(|op| layering(op, &options(run, copy)))
                .collect();
            assert_eq!(
                seen,
                [
                    ("RUN", cached(run)),
                    ("COPY", cached(copy)),
                    ("ADD", cached(copy)),
                    ("WORKDIR", cached(true)),
                    ("metadata", Layering::Config),
                ]
            );
        }
    }
}
