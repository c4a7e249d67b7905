//! Build contexts given the way kaniko spells them (`--context`), made available as a local
//! directory before the build starts.
//!
//! | form | context |
//! | --- | --- |
//! | `PATH`, `dir://PATH` | a local directory, used in place |
//! | `tar://PATH` | a local tar archive, plain or compressed (told by content) |
//! | `tar://stdin` | a gzipped (or plain) tar archive read from standard input |
//! | `git://HOST/REPO.git[#REF[#COMMIT]]` | a git repository, cloned with the `git` CLI |
//! | `s3://BUCKET/KEY` | a tar.gz object in S3 (or an S3-compatible server) |
//! | `gs://BUCKET/OBJECT` | a tar.gz object in Google Cloud Storage (or an emulator) |
//! | `https://ACCOUNT.blob.core.windows.net/CONTAINER/BLOB` | a tar.gz blob in Azure Blob Storage |
//! | `https://HOST/PATH` (also `http://`) | a tar.gz archive downloaded over HTTP(S) |
//!
//! As kaniko does, `git://` URLs are fetched over `https://` unless `GIT_PULL_METHOD=http`
//! (then `http://`); ocibuild also takes `GIT_PULL_METHOD=git` to keep the native git
//! protocol (e.g. for a `git daemon`). `REF` is a branch or tag (`refs/heads/main`,
//! `refs/tags/v1`, `main`) or any other ref (`refs/pull/1/head`, fetched explicitly);
//! `COMMIT` is checked out after the clone. kaniko's `--git` options
//! ([`parse_git_options`]) choose the branch when the URL names none, single-branch clones,
//! submodules and skipping TLS verification.
//!
//! The object stores are read with one GET each, with the credentials their own tools
//! find: S3 with the AWS default chain (environment, `~/.aws` profiles, web identity,
//! container and instance credentials; see [`s3`] and `aws`), GCS with Google's application
//! default credentials or `STORAGE_EMULATOR_HOST` (`gcs`), Azure with a SAS token, a
//! connection string or a shared key ([`azure`]). Without credentials the request is sent
//! anonymously (public objects). The environment is read once ([`ContextEnv`]).
//!
//! Archives are extracted by the [`Unpack`] function the caller gives; the engine's
//! (`ocibuild_core::Context`) extracts like `ADD` extracts local archives: members never
//! land outside the context directory, whatever their names (`../x`, `/x`) or the symlinks
//! before them. `--context-sub-path` then selects a directory inside the context; it may
//! not leave it.
//!
//! Also here: reading the Dockerfile and `.dockerignore` inside a context
//! ([`contextfile`]) and downloads over HTTP(S) ([`fetch`], shared with `ADD <url>`).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod aws;
pub mod azure;
pub mod contextfile;
mod env;
pub mod fetch;
mod gcs;
mod object;
pub mod s3;

pub use azure::AzureBlob;
pub use env::ContextEnv;
pub use s3::{sigv4_authorization, SigV4Request};

use crate::fetch::FetchError;
use std::fs;
use std::future::Future;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

/// A build context given on the command line, as kaniko spells them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextSource {
    /// A local directory: a plain path or `dir://PATH`.
    Dir(PathBuf),
    /// A local tar archive, plain or compressed: `tar://PATH`.
    Tar(PathBuf),
    /// A gzipped (or plain) tar archive on standard input: `tar://stdin`.
    TarStdin,
    /// A git repository: `git://HOST/REPO.git#REF#COMMIT`.
    Git {
        /// The repository URL without the `#` parts (`git://github.com/acme/app.git`).
        /// URLs that do not start with `git://` (`https://`, `file://`, a local path) are
        /// given to `git clone` as they are.
        url: String,
        /// The branch or tag (`refs/heads/main`, `refs/tags/v1`, `main`) or another ref.
        reference: Option<String>,
        /// The commit to check out after cloning.
        commit: Option<String>,
    },
    /// An object in S3: `s3://BUCKET/KEY`.
    S3 {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
    },
    /// A tar.gz archive to download: an `https://` (or `http://`) URL.
    Https(String),
    /// An object in Google Cloud Storage: `gs://BUCKET/OBJECT`.
    Gcs {
        /// The bucket.
        bucket: String,
        /// The object name.
        object: String,
    },
    /// A blob in Azure Blob Storage: `https://ACCOUNT.blob.core.windows.net/CONTAINER/BLOB`.
    Azure(AzureBlob),
}

/// kaniko's `--git` options: `branch=NAME,single-branch=BOOL,recurse-submodules=BOOL,insecure-skip-tls=BOOL`.
#[derive(Default, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GitOptions {
    /// The branch (or tag) to clone when the context URL names no ref.
    pub branch: Option<String>,
    /// Clone only the history of that branch.
    pub single_branch: bool,
    /// Also check out submodules, recursively.
    pub recurse_submodules: bool,
    /// Do not verify TLS certificates of `https://` remotes.
    pub insecure_skip_tls: bool,
}

/// What went wrong while parsing or preparing a build context.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// The `--context` value is malformed.
    #[error("--context {text}: {reason}")]
    Invalid {
        /// The value as given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The `--context` value has a scheme ocibuild does not know.
    #[error("--context {text}: unknown context scheme {scheme}://; use a directory, dir://, tar://, git://, s3://, gs://, https:// (Azure Blob Storage too)")]
    UnknownScheme {
        /// The value as given.
        text: String,
        /// The scheme.
        scheme: String,
    },
    /// The `--git` value is malformed.
    #[error("--git {text}: {reason}; expected branch=NAME,single-branch=true|false,recurse-submodules=true|false,insecure-skip-tls=true|false")]
    InvalidGitOptions {
        /// The value as given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An environment variable has a value that cannot be used.
    #[error("{name}={value}: {reason}")]
    InvalidEnv {
        /// The variable.
        name: String,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A local context directory or archive does not exist.
    #[error("build context {path}: {reason}")]
    NotFound {
        /// The path.
        path: PathBuf,
        /// What is wrong (no such directory, not a file, ...).
        reason: String,
    },
    /// `--context-sub-path` is unusable.
    #[error("--context-sub-path {sub_path}: {reason}")]
    SubPath {
        /// The value as given.
        sub_path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Extracting a context archive failed.
    #[error("extracting the build context {archive}: {message}")]
    Extract {
        /// The archive (a path, `stdin` or a URL).
        archive: String,
        /// What went wrong.
        message: String,
    },
    /// The `git` command is not installed.
    #[error(
        "git contexts need the git command, which is not installed (Debian: apt-get install git)"
    )]
    GitMissing,
    /// A git command failed.
    #[error("{command} failed: {message}")]
    Git {
        /// The command line, e.g. `git clone https://github.com/acme/app.git`.
        command: String,
        /// Its error output.
        message: String,
    },
    /// Downloading an `https://` context failed.
    #[error("build context: {0}")]
    Fetch(#[from] FetchError),
    /// The request for an object (S3, GCS, Azure) could not be sent or its body read.
    #[error("fetching build context {object} from {url} failed: {message}")]
    ObjectRequest {
        /// `s3://BUCKET/KEY`, `gs://BUCKET/OBJECT` or the Azure URL.
        object: String,
        /// The URL requested (without credentials).
        url: String,
        /// The error and its causes.
        message: String,
    },
    /// The object store answered with an error status.
    #[error("fetching build context {object} from {url} failed: HTTP {status}{detail}{hint}")]
    ObjectStatus {
        /// `s3://BUCKET/KEY`, `gs://BUCKET/OBJECT` or the Azure URL.
        object: String,
        /// The URL requested (without credentials).
        url: String,
        /// The status, e.g. `403 Forbidden`.
        status: String,
        /// `: Code: message` from the error document, or empty.
        detail: String,
        /// What to check, or empty.
        hint: String,
    },
    /// Credentials for an object store were configured but could not be obtained or used.
    #[error("build context credentials from {provider}: {message}")]
    Credentials {
        /// Where they were looked for (a variable, a file, an endpoint).
        provider: String,
        /// What went wrong.
        message: String,
    },
    /// A filesystem operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

pub(crate) type Result<T> = std::result::Result<T, ContextError>;

/// Extracts a tar stream (plain or compressed) into the existing directory `dest`; `name`
/// names the archive in errors. The error is a one-line message, reported as
/// [`ContextError::Extract`].
pub type Unpack =
    fn(reader: &mut dyn Read, name: &Path, dest: &Path) -> std::result::Result<(), String>;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ContextError + '_ {
    move |source| ContextError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Parses a `--context` value: `dir://PATH` and plain paths, `tar://PATH` (`.tar`,
/// `.tar.gz`, ...), `tar://stdin`, `git://HOST/REPO.git[#REF[#COMMIT]]`, `s3://BUCKET/KEY`,
/// `gs://BUCKET/OBJECT`, `https://ACCOUNT.blob.core.windows.net/CONTAINER/BLOB` (Azure) and
/// other `https://HOST/context.tar.gz` (and `http://`) URLs.
pub fn parse_context(text: &str) -> Result<ContextSource> {
    let invalid = |reason: &str| ContextError::Invalid {
        text: text.to_string(),
        reason: reason.to_string(),
    };
    if text.is_empty() {
        return Err(invalid("the build context is empty"));
    }
    let Some((scheme, rest)) = text.split_once("://").filter(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    }) else {
        return Ok(ContextSource::Dir(PathBuf::from(text)));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "dir" => {
            if rest.is_empty() {
                return Err(invalid("dir:// needs a directory path"));
            }
            Ok(ContextSource::Dir(PathBuf::from(rest)))
        }
        "tar" => match rest {
            "" => Err(invalid(
                "tar:// needs an archive path (or stdin for a gzipped tar on standard input)",
            )),
            "stdin" => Ok(ContextSource::TarStdin),
            path => Ok(ContextSource::Tar(PathBuf::from(path))),
        },
        "git" => parse_git(text, rest),
        "s3" => {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid(
                    "s3:// needs a bucket: s3://BUCKET/path/context.tar.gz",
                ));
            }
            if key.is_empty() {
                return Err(invalid(
                    "s3:// needs an object key after the bucket: s3://BUCKET/path/context.tar.gz",
                ));
            }
            Ok(ContextSource::S3 {
                bucket: bucket.to_string(),
                key: key.to_string(),
            })
        }
        "gs" => {
            let (bucket, object) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() || object.is_empty() {
                return Err(invalid(
                    "gs:// needs a bucket and an object: gs://BUCKET/path/context.tar.gz",
                ));
            }
            Ok(ContextSource::Gcs {
                bucket: bucket.to_string(),
                object: object.to_string(),
            })
        }
        "https" | "http" => {
            let url = reqwest::Url::parse(text)
                .map_err(|e| invalid(&format!("not a valid URL ({e})")))?;
            let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
            if host.is_empty() {
                return Err(invalid("the URL has no host"));
            }
            match host.strip_suffix(".blob.core.windows.net") {
                Some(account) => parse_azure(&url, account).map_err(|r| invalid(&r)),
                None => Ok(ContextSource::Https(text.to_string())),
            }
        }
        other => Err(ContextError::UnknownScheme {
            text: text.to_string(),
            scheme: other.to_string(),
        }),
    }
}

/// The blob of an Azure URL of `account`: `/CONTAINER/BLOB`, the query a SAS token.
fn parse_azure(url: &reqwest::Url, account: &str) -> std::result::Result<ContextSource, String> {
    let path = url.path().trim_start_matches('/');
    let (container, blob) = path.split_once('/').unwrap_or((path, ""));
    if account.is_empty() || account.contains('.') || container.is_empty() || blob.is_empty() {
        return Err(
            "Azure Blob Storage contexts are https://ACCOUNT.blob.core.windows.net/CONTAINER/path/context.tar.gz"
                .to_string(),
        );
    }
    Ok(ContextSource::Azure(AzureBlob {
        account: account.to_string(),
        container: fetch::percent_decode(container),
        blob: fetch::percent_decode(blob),
        scheme: url.scheme().to_string(),
        sas: url.query().filter(|q| !q.is_empty()).map(str::to_string),
    }))
}

fn parse_git(text: &str, rest: &str) -> Result<ContextSource> {
    let invalid = |reason: String| ContextError::Invalid {
        text: text.to_string(),
        reason,
    };
    let mut parts = rest.split('#');
    let repo = parts.next().unwrap_or_default();
    let reference = parts.next().filter(|r| !r.is_empty());
    let commit = parts.next().filter(|c| !c.is_empty());
    if parts.next().is_some() {
        return Err(invalid(
            "too many '#' parts; expected git://HOST/REPO.git#REF#COMMIT".to_string(),
        ));
    }
    if repo.is_empty() || repo.starts_with('/') {
        return Err(invalid(
            "git:// needs a host and repository: git://github.com/acme/app.git".to_string(),
        ));
    }
    if repo.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "the repository URL contains whitespace or control characters".to_string(),
        ));
    }
    if let Some(r) = reference {
        check_ref(r).map_err(|reason| invalid(format!("ref {r:?}: {reason}")))?;
    }
    if let Some(c) = commit {
        check_commit(c).map_err(|reason| invalid(format!("commit {c:?}: {reason}")))?;
    }
    Ok(ContextSource::Git {
        url: format!("git://{repo}"),
        reference: reference.map(str::to_string),
        commit: commit.map(str::to_string),
    })
}

/// A ref or branch name usable on a git command line.
fn check_ref(r: &str) -> std::result::Result<(), String> {
    if r.starts_with('-') {
        return Err("may not start with '-'".to_string());
    }
    if r.chars().any(|c| c.is_whitespace() || c.is_control()) || r.contains("..") {
        return Err("not a valid git ref name".to_string());
    }
    Ok(())
}

fn check_commit(c: &str) -> std::result::Result<(), String> {
    if !(4..=64).contains(&c.len()) || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("a commit must be 4 to 64 hex digits".to_string());
    }
    Ok(())
}

/// Parses Go-style booleans as kaniko's flags take them.
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Parses kaniko's `--git` value:
/// `branch=NAME,single-branch=BOOL,recurse-submodules=BOOL,insecure-skip-tls=BOOL`, every
/// part optional; an empty value gives the defaults.
pub fn parse_git_options(text: &str) -> Result<GitOptions> {
    let invalid = |reason: String| ContextError::InvalidGitOptions {
        text: text.to_string(),
        reason,
    };
    let mut options = GitOptions::default();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| invalid(format!("{part:?} is not KEY=VALUE")))?;
        let flag = || {
            parse_bool(value.trim())
                .ok_or_else(|| invalid(format!("{key}={value}: the value must be true or false")))
        };
        match key.trim() {
            "branch" => {
                let branch = value.trim();
                if branch.is_empty() {
                    return Err(invalid("branch= needs a branch name".to_string()));
                }
                check_ref(branch).map_err(|r| invalid(format!("branch={branch}: {r}")))?;
                options.branch = Some(branch.to_string());
            }
            "single-branch" => options.single_branch = flag()?,
            "recurse-submodules" => options.recurse_submodules = flag()?,
            "insecure-skip-tls" => options.insecure_skip_tls = flag()?,
            other => return Err(invalid(format!("unknown option {other:?}"))),
        }
    }
    Ok(options)
}

impl std::str::FromStr for GitOptions {
    type Err = ContextError;

    /// [`parse_git_options`].
    fn from_str(text: &str) -> Result<GitOptions> {
        parse_git_options(text)
    }
}

/// Makes the context available as a local directory and returns it, with `sub_path`
/// (`--context-sub-path`) applied: it must exist and stay inside the context. Directory
/// contexts are used in place; every other kind is extracted or cloned into a fresh
/// subdirectory of `work` (created when missing), which the caller removes; archives are
/// extracted with `unpack`. Reads the environment ([`ContextEnv::from_env`]) for git and
/// the object stores' credentials.
pub async fn prepare_context(
    source: &ContextSource,
    sub_path: Option<&str>,
    git: &GitOptions,
    work: &Path,
    unpack: Unpack,
) -> Result<PathBuf> {
    prepare_context_with(source, sub_path, git, work, &ContextEnv::from_env(), unpack).await
}

/// [`prepare_context`] with the environment given explicitly.
pub async fn prepare_context_with(
    source: &ContextSource,
    sub_path: Option<&str>,
    git: &GitOptions,
    work: &Path,
    env: &ContextEnv,
    unpack: Unpack,
) -> Result<PathBuf> {
    let root = match source {
        ContextSource::Dir(dir) => local_dir(dir)?,
        ContextSource::Tar(path) => {
            let file = open_archive(path)?;
            let name = path.display().to_string();
            extract_blocking(file, name, work.to_path_buf(), unpack).await?
        }
        ContextSource::TarStdin => {
            extract_blocking(io::stdin(), "stdin".to_string(), work.to_path_buf(), unpack).await?
        }
        ContextSource::Git {
            url,
            reference,
            commit,
        } => git_context(url, reference, commit, git, env, work).await?,
        ContextSource::S3 { bucket, key } => {
            let name = format!("s3://{bucket}/{key}");
            object_context(name, work, unpack, |dest| async move {
                s3::s3_get(bucket, key, env, &dest).await
            })
            .await?
        }
        ContextSource::Gcs { bucket, object } => {
            let name = format!("gs://{bucket}/{object}");
            object_context(name, work, unpack, |dest| async move {
                gcs::gcs_get(bucket, object, env, &dest).await
            })
            .await?
        }
        ContextSource::Azure(blob) => {
            let name = format!(
                "{}://{}.blob.core.windows.net/{}/{}",
                blob.scheme, blob.account, blob.container, blob.blob
            );
            object_context(name, work, unpack, |dest| async move {
                azure::azure_get(blob, env, &dest).await
            })
            .await?
        }
        ContextSource::Https(url) => https_context(url, work, unpack).await?,
    };
    apply_sub_path(&root, sub_path)
}

/// A directory context: `dir`, which must be a directory.
fn local_dir(dir: &Path) -> Result<PathBuf> {
    let not_found = |reason: String| ContextError::NotFound {
        path: dir.to_path_buf(),
        reason,
    };
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(dir.to_path_buf()),
        Ok(_) => Err(not_found("not a directory".to_string())),
        Err(e) => Err(not_found(e.to_string())),
    }
}

/// The archive of a `tar://` context, which must be a file.
fn open_archive(path: &Path) -> Result<fs::File> {
    let not_found = |reason: String| ContextError::NotFound {
        path: path.to_path_buf(),
        reason,
    };
    match fs::File::open(path) {
        Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => Ok(f),
        Ok(_) => Err(not_found(
            "not a file; tar:// needs a tar archive".to_string(),
        )),
        Err(e) => Err(not_found(e.to_string())),
    }
}

/// A `git://` context, cloned into a fresh directory under `work`.
async fn git_context(
    url: &str,
    reference: &Option<String>,
    commit: &Option<String>,
    git: &GitOptions,
    env: &ContextEnv,
    work: &Path,
) -> Result<PathBuf> {
    let url = clone_url(url, env)?;
    let (reference, commit, git, work) = (
        reference.clone(),
        commit.clone(),
        git.clone(),
        work.to_path_buf(),
    );
    blocking(move || git_clone(&url, reference.as_deref(), commit.as_deref(), &git, &work)).await
}

/// An object-store context (`name` in messages): `get` downloads the object to the path
/// it is given, in a scratch directory under `work`; it is extracted into a fresh directory
/// and the download removed.
async fn object_context<F, Fut>(
    name: String,
    work: &Path,
    unpack: Unpack,
    get: F,
) -> Result<PathBuf>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let dest = fresh_dir(work, "download-")?;
    let archive = dest.join("context.tar.gz");
    let result = match get(archive.clone()).await {
        Ok(()) => extract_file(&archive, name, work, unpack).await,
        Err(e) => Err(e),
    };
    let _ = fs::remove_dir_all(&dest);
    result
}

/// An `https://` context: the archive is downloaded under `work`, extracted into a fresh
/// directory, and the download removed.
async fn https_context(url: &str, work: &Path, unpack: Unpack) -> Result<PathBuf> {
    fs::create_dir_all(work).map_err(io_err(work))?;
    let fetched = fetch::download(url, work, None).await?;
    let result = extract_file(&fetched.path(), url.to_string(), work, unpack).await;
    let _ = fs::remove_dir_all(&fetched.dir);
    result
}

/// Extracts the tar stream `reader` (gzipped, otherwise compressed, or plain) into a fresh
/// subdirectory of `work` and returns it with `sub_path` applied, as [`prepare_context`]
/// does for `tar://` contexts, with `unpack`.
pub fn prepare_tar_reader<R: Read>(
    reader: R,
    name: &str,
    sub_path: Option<&str>,
    work: &Path,
    unpack: Unpack,
) -> Result<PathBuf> {
    let dest = extract_into_fresh(reader, name, work, unpack)?;
    apply_sub_path(&dest, sub_path)
}

fn extract_into_fresh<R: Read>(
    mut reader: R,
    name: &str,
    work: &Path,
    unpack: Unpack,
) -> Result<PathBuf> {
    let dest = fresh_dir(work, "context-")?;
    unpack(&mut reader, Path::new(name), &dest).map_err(|message| ContextError::Extract {
        archive: name.to_string(),
        message,
    })?;
    Ok(dest)
}

/// Extracts the archive file `path` (`name` in errors) into a fresh directory under `work`.
async fn extract_file(path: &Path, name: String, work: &Path, unpack: Unpack) -> Result<PathBuf> {
    let file = fs::File::open(path).map_err(io_err(path))?;
    extract_blocking(file, name, work.to_path_buf(), unpack).await
}

async fn extract_blocking<R: Read + Send + 'static>(
    reader: R,
    name: String,
    work: PathBuf,
    unpack: Unpack,
) -> Result<PathBuf> {
    blocking(move || extract_into_fresh(reader, &name, &work, unpack)).await
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ContextError::Io {
            path: PathBuf::from("build context"),
            source: io::Error::other(format!("preparing the build context was aborted: {e}")),
        })?
}

/// A new empty directory under `work` (created when missing).
fn fresh_dir(work: &Path, prefix: &str) -> Result<PathBuf> {
    fs::create_dir_all(work).map_err(io_err(work))?;
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(work)
        .map_err(io_err(work))?;
    Ok(dir.keep())
}

/// `root` joined with `sub_path`, which must be relative, stay inside `root` (also through
/// symlinks) and name an existing directory.
fn apply_sub_path(root: &Path, sub_path: Option<&str>) -> Result<PathBuf> {
    let Some(sub) = sub_path.filter(|s| !s.is_empty()) else {
        return Ok(root.to_path_buf());
    };
    let bad = |reason: &str| ContextError::SubPath {
        sub_path: sub.to_string(),
        reason: reason.to_string(),
    };
    let mut rel = PathBuf::new();
    for c in Path::new(sub).components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if !rel.pop() {
                    return Err(bad(
                        "leaves the build context; it must be a directory inside it",
                    ));
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(bad("must be relative to the build context"));
            }
        }
    }
    let joined = root.join(&rel);
    let real = joined
        .canonicalize()
        .map_err(|e| bad(&format!("no such directory in the build context ({e})")))?;
    let real_root = root.canonicalize().map_err(io_err(root))?;
    if !real.starts_with(&real_root) {
        return Err(bad(
            "leaves the build context through a symlink; it must be a directory inside it",
        ));
    }
    if !real.is_dir() {
        return Err(bad("is not a directory"));
    }
    Ok(joined)
}

// ---------------------------------------------------------------------------------------
// git

/// The URL `git clone` gets: `git://` becomes `https://` (or what `GIT_PULL_METHOD` says).
fn clone_url(url: &str, env: &ContextEnv) -> Result<String> {
    let Some(rest) = url.strip_prefix("git://") else {
        return Ok(url.to_string());
    };
    let method = env.var("GIT_PULL_METHOD").unwrap_or("https");
    let scheme = match method.to_ascii_lowercase().as_str() {
        "https" => "https",
        "http" => "http",
        "git" => "git",
        _ => {
            return Err(ContextError::InvalidEnv {
                name: "GIT_PULL_METHOD".to_string(),
                value: method.to_string(),
                reason: "must be https, http or git".to_string(),
            })
        }
    };
    Ok(format!("{scheme}://{rest}"))
}

fn git_clone(
    url: &str,
    reference: Option<&str>,
    commit: Option<&str>,
    options: &GitOptions,
    work: &Path,
) -> Result<PathBuf> {
    if url.starts_with('-') {
        return Err(ContextError::Invalid {
            text: url.to_string(),
            reason: "a repository URL may not start with '-'".to_string(),
        });
    }
    let reference = reference.or(options.branch.as_deref());
    if let Some(r) = reference {
        check_ref(r).map_err(|reason| ContextError::Invalid {
            text: r.to_string(),
            reason,
        })?;
    }
    if let Some(c) = commit {
        check_commit(c).map_err(|reason| ContextError::Invalid {
            text: c.to_string(),
            reason,
        })?;
    }
    let dest = fresh_dir(work, "context-")?;
    let git = |args: &[&str]| run_git(&dest, args, options.insecure_skip_tls);

    // `git clone --branch` takes branch and tag names; other refs are fetched afterwards.
    let (branch, other_ref) = match reference {
        Some(r) => match r
            .strip_prefix("refs/heads/")
            .or_else(|| r.strip_prefix("refs/tags/"))
        {
            Some(name) => (Some(name), None),
            None if r.starts_with("refs/") => (None, Some(r)),
            None => (Some(r), None),
        },
        None => (None, None),
    };
    let dest_text = dest.to_string_lossy().into_owned();
    let mut clone = vec!["clone", "--quiet"];
    clone.push(if options.single_branch {
        "--single-branch"
    } else {
        "--no-single-branch"
    });
    if let Some(b) = branch {
        clone.extend(["--branch", b]);
    }
    clone.extend(["--", url, &dest_text]);
    git(&clone)?;

    if let Some(r) = other_ref {
        git(&["fetch", "--quiet", "origin", "--", r])?;
        git(&["checkout", "--quiet", "--detach", "FETCH_HEAD"])?;
    }
    if let Some(c) = commit {
        if git(&["checkout", "--quiet", "--detach", c, "--"]).is_err() {
            // Not in the cloned history (e.g. a single-branch clone): ask for it.
            git(&["fetch", "--quiet", "origin", c]).map_err(|e| ContextError::Git {
                command: format!("git checkout {c}"),
                message: format!(
                    "commit {c} is not in {url}{} and fetching it failed: {e}",
                    reference.map(|r| format!(" at {r}")).unwrap_or_default()
                ),
            })?;
            git(&["checkout", "--quiet", "--detach", c, "--"])?;
        }
    }
    if options.recurse_submodules {
        git(&["submodule", "update", "--quiet", "--init", "--recursive"])?;
    }
    Ok(dest)
}

/// Runs `git ARGS` in `dir` without prompting; a failure carries git's error output.
fn run_git(dir: &Path, args: &[&str], insecure: bool) -> Result<()> {
    let mut cmd = Command::new("git");
    cmd.args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if insecure {
        cmd.env("GIT_SSL_NO_VERIFY", "1");
    }
    let output = cmd.output().map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ContextError::GitMissing,
        _ => ContextError::Io {
            path: PathBuf::from("git"),
            source: e,
        },
    })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    Err(ContextError::Git {
        command: format!("git {}", args.join(" ")),
        message: if tail.is_empty() {
            format!("it exited with {}", output.status)
        } else {
            tail
        },
    })
}
