//! Build contexts given the way kaniko spells them (`--context`), made available as a local
//! directory before the build starts: [`ocibuild_context`], with archives extracted like
//! `ADD` extracts local archives (members never land outside the context directory,
//! whatever their names (`../x`, `/x`) or the symlinks before them).

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::copy::{self, CopyError};
pub use ocibuild_context::{
    parse_context, parse_git_options, sigv4_authorization, ContextEnv, ContextError, ContextSource,
    GitOptions, SigV4Request,
};

/// [`ocibuild_context::prepare_context`], extracting archives like `ADD`.
pub async fn prepare_context(
    source: &ContextSource,
    sub_path: Option<&str>,
    git: &GitOptions,
    work: &Path,
) -> Result<PathBuf, ContextError> {
    ocibuild_context::prepare_context(source, sub_path, git, work, unpack).await
}

/// [`ocibuild_context::prepare_context_with`], extracting archives like `ADD`.
pub async fn prepare_context_with(
    source: &ContextSource,
    sub_path: Option<&str>,
    git: &GitOptions,
    work: &Path,
    env: &ContextEnv,
) -> Result<PathBuf, ContextError> {
    ocibuild_context::prepare_context_with(source, sub_path, git, work, env, unpack).await
}

/// [`ocibuild_context::prepare_tar_reader`], extracting like `ADD`.
pub fn prepare_tar_reader<R: Read>(
    reader: R,
    name: &str,
    sub_path: Option<&str>,
    work: &Path,
) -> Result<PathBuf, ContextError> {
    ocibuild_context::prepare_tar_reader(reader, name, sub_path, work, unpack)
}

/// The [`ocibuild_context::Unpack`] of the engine: [`copy::extract_tar_stream`], with an
/// archive member's error reported as `at MEMBER: MESSAGE`.
fn unpack(reader: &mut dyn Read, name: &Path, dest: &Path) -> Result<(), String> {
    copy::extract_tar_stream(reader, name, dest).map_err(|e| match e {
        CopyError::Archive {
            member, message, ..
        } => format!("at {member}: {message}"),
        other => other.to_string(),
    })
}
