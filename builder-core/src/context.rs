//! [`Context`]: the build context of a [`crate::Build`] or of [`crate::build()`] — a
//! directory, a tar stream or a context spelled as kaniko's `--context` — made available as
//! a local directory by [`ocibuild_context`], with archives extracted like `ADD` extracts
//! local archives (members never land outside the context directory, whatever their names
//! (`../x`, `/x`) or the symlinks before them).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::copy::{self, CopyError};
use crate::error::Result;
use crate::options::BuildOptions;
use ocibuild_context::{ContextSource, GitOptions};

/// The build context of a [`crate::Build`], or of [`crate::build()`] once
/// [prepared](Context::prepare).
///
/// ```
/// use ocibuild_core::{Context, GitOptions};
/// let dir = Context::dir("./app");
/// let remote = Context::url("git://github.com/acme/app.git#refs/heads/main")
///     .sub_path("services/web")
///     .git_options(GitOptions::default());
/// let stream = Context::tar_stream(std::io::Cursor::new(Vec::<u8>::new()));
/// # let _ = (dir, remote, stream);
/// ```
#[non_exhaustive]
pub struct Context {
    source: ContextKind,
    sub_path: Option<String>,
    git: GitOptions,
}

enum ContextKind {
    Dir(PathBuf),
    Url(String),
    TarStream(Box<dyn Read + Send>),
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("Context");
        match &self.source {
            ContextKind::Dir(dir) => out.field("dir", dir),
            ContextKind::Url(url) => out.field("url", url),
            ContextKind::TarStream(_) => out.field("tar_stream", &format_args!("..")),
        };
        out.field("sub_path", &self.sub_path)
            .finish_non_exhaustive()
    }
}

impl Context {
    fn new(source: ContextKind) -> Context {
        Context {
            source,
            sub_path: None,
            git: GitOptions::default(),
        }
    }

    /// A local directory, used in place.
    pub fn dir(path: impl Into<PathBuf>) -> Context {
        Context::new(ContextKind::Dir(path.into()))
    }

    /// A context spelled as kaniko's `--context`: a directory, `dir://`, `tar://PATH`,
    /// `tar://stdin`, `git://`, `s3://` or `https://` (see [`ocibuild_context`]); it is
    /// fetched or extracted when the build runs (or the context is
    /// [prepared](Context::prepare)), and a malformed one is an error then.
    pub fn url(text: impl Into<String>) -> Context {
        Context::new(ContextKind::Url(text.into()))
    }

    /// A tar archive (plain, gzip, bzip2, xz or zstd) read from `reader` and extracted
    /// when the build runs (or the context is [prepared](Context::prepare)).
    pub fn tar_stream(reader: impl Read + Send + 'static) -> Context {
        Context::new(ContextKind::TarStream(Box::new(reader)))
    }

    /// Builds from this directory inside the context (kaniko's `--context-sub-path`); it
    /// must exist and stay inside the context.
    pub fn sub_path(mut self, path: impl Into<String>) -> Context {
        self.sub_path = Some(path.into());
        self
    }

    /// Options of `git://` contexts (kaniko's `--git`).
    pub fn git_options(mut self, git: GitOptions) -> Context {
        self.git = git;
        self
    }

    /// Makes the context available as a directory for [`crate::build()`]
    /// ([`BuildOptions::context`]), as [`crate::Build::run`] does: a directory is used in
    /// place; every other kind is fetched or extracted into a temporary directory made
    /// where a build with `opts` makes its own (the system's temporary directory; with
    /// [`crate::Isolation::None`], [`BuildOptions::kaniko_dir`]) and removed when the
    /// result is dropped.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), ocibuild_core::BuildError> {
    /// use ocibuild_core::{BuildOptions, Context};
    /// let mut opts = BuildOptions::default();
    /// let context = Context::url("tar://ctx.tar.gz").prepare(&opts).await?;
    /// opts.context = context.path().to_path_buf();
    /// opts.no_push = true;
    /// ocibuild_core::build(&opts, &mut |_| {}).await?;
    /// # Ok(()) }
    /// ```
    pub async fn prepare(self, opts: &BuildOptions) -> Result<PreparedContext> {
        let temp = crate::build::temp_dir(opts, None)?;
        let dir = self.prepare_in(temp.path()).await?;
        Ok(PreparedContext { dir, _temp: temp })
    }

    /// Makes the context available as a directory, extracting or fetching it into a fresh
    /// directory under `work` (created when missing) unless it is a directory.
    pub(crate) async fn prepare_in(self, work: &Path) -> Result<PathBuf> {
        let Context {
            source,
            sub_path,
            git,
        } = self;
        let work = work.to_path_buf();
        let source = match source {
            ContextKind::Dir(dir) => ContextSource::Dir(dir),
            ContextKind::Url(text) => ocibuild_context::parse_context(&text)?,
            ContextKind::TarStream(reader) => {
                return crate::blocking::run(move || {
                    let name = "tar stream";
                    let sub_path = sub_path.as_deref();
                    Ok(ocibuild_context::prepare_tar_reader(
                        reader, name, sub_path, &work, unpack,
                    )?)
                })
                .await;
            }
        };
        let sub_path = sub_path.as_deref();
        Ok(ocibuild_context::prepare_context(&source, sub_path, &git, &work, unpack).await?)
    }
}

/// A [`Context`] made available as a directory by [`Context::prepare`]; fetched and
/// extracted files are removed when it is dropped.
#[derive(Debug)]
#[non_exhaustive]
pub struct PreparedContext {
    dir: PathBuf,
    _temp: ocibuild_snapshot::HeldDir,
}

impl PreparedContext {
    /// The context directory (with the sub-path applied).
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

/// The [`ocibuild_context::Unpack`] of the engine: `copy::extract_tar_stream`, with an
/// archive member's error reported as `at MEMBER: MESSAGE`.
fn unpack(reader: &mut dyn Read, name: &Path, dest: &Path) -> std::result::Result<(), String> {
    copy::extract_tar_stream(reader, name, dest).map_err(|e| match e {
        CopyError::Archive {
            member, message, ..
        } => format!("at {member}: {message}"),
        other => other.to_string(),
    })
}
