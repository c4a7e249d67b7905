//! The errors a build can end with. Each says where (Dockerfile file and line, or the path
//! or registry involved), what went wrong and, where there is one, what to do.

use ocibuild_dockerfile::PlanError;
use std::path::PathBuf;

/// Boxed error source kept inside [`BuildError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The Dockerfile could not be parsed.
    #[error(transparent)]
    Parse(#[from] ocibuild_dockerfile::ParseError),

    /// The Dockerfile or a `.dockerignore` could not be read from the context.
    #[error(transparent)]
    ContextFile(#[from] crate::contextfile::ContextFileError),

    /// An instruction could not be carried out.
    #[error("{file}:{line}: {instruction}\n  {}", chain(.source))]
    Step {
        /// The Dockerfile.
        file: PathBuf,
        /// The instruction's first line.
        line: usize,
        /// The instruction as written.
        instruction: String,
        /// What went wrong.
        source: BoxError,
    },

    /// A RUN command exited with a non-zero status.
    #[error("{file}:{line}: {instruction}\n  the command exited with code {code}")]
    RunFailed {
        /// The Dockerfile.
        file: PathBuf,
        /// The instruction's first line.
        line: usize,
        /// The instruction as written.
        instruction: String,
        /// Exit code (128 + signal number when killed by a signal).
        code: i32,
    },

    /// The build options are inconsistent or refer to something missing.
    #[error("{0}")]
    Options(String),

    /// A file of the build (Dockerfile, context, work directory, output) could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },

    /// Talking to a registry failed.
    #[error("{context}: {source}")]
    Registry {
        /// What ocibuild was doing (e.g. `pushing to 127.0.0.1:5000/demo:1`).
        context: String,
        /// The registry error.
        source: Box<ocibuild_registry::Error>,
    },

    /// A base image layer does not decompress to the diff_id its image config lists.
    #[error(
        "base image {image}: layer {index} ({digest}) decompresses to {actual}, but the \
         image config lists diff_id {expected}"
    )]
    LayerMismatch {
        /// The base image as named in the Dockerfile.
        image: String,
        /// The layer's position in the manifest, from 0.
        index: usize,
        /// The layer's (compressed) digest.
        digest: String,
        /// The diff_id the config lists.
        expected: String,
        /// The sha256 of the uncompressed layer.
        actual: String,
    },

    /// Unpacking or snapshotting a root filesystem failed.
    #[error("{context}: {source}")]
    Snapshot {
        /// What ocibuild was doing.
        context: String,
        /// The snapshot error.
        source: Box<ocibuild_snapshot::Error>,
    },

    /// The build context could not be made available as a directory.
    #[error("preparing the build context: {0}")]
    Context(#[from] ocibuild_context::ContextError),

    /// The build was cancelled through its [`crate::CancelToken`].
    #[error("the build was cancelled")]
    Cancelled,
}

pub use crate::chain::error_chain;

fn chain(err: &BoxError) -> String {
    error_chain(err.as_ref())
}

impl BuildError {
    /// Builds an [`BuildError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BuildError {
        let path = path.into();
        move |source| BuildError::Io { path, source }
    }

    /// Builds a [`BuildError::Registry`] with `context`.
    pub fn registry(
        context: impl Into<String>,
    ) -> impl FnOnce(ocibuild_registry::Error) -> BuildError {
        let context = context.into();
        move |source| BuildError::Registry {
            context,
            source: Box::new(source),
        }
    }

    /// Builds a [`BuildError::Snapshot`] with `context`.
    pub fn snapshot(
        context: impl Into<String>,
    ) -> impl FnOnce(ocibuild_snapshot::Error) -> BuildError {
        let context = context.into();
        move |source| BuildError::Snapshot {
            context,
            source: Box::new(source),
        }
    }
}

impl From<PlanError> for BuildError {
    /// A misplaced instruction keeps its line ([`BuildError::Step`]); a Dockerfile without
    /// FROM or an unknown `--target` is a [`BuildError::Options`], as before the planner
    /// had its own error.
    fn from(err: PlanError) -> BuildError {
        match err {
            PlanError::Step {
                file,
                line,
                instruction,
                message,
            } => BuildError::Step {
                file,
                line,
                instruction,
                source: message.into(),
            },
            other => BuildError::Options(other.to_string()),
        }
    }
}

/// Result of build operations.
pub type Result<T> = std::result::Result<T, BuildError>;
