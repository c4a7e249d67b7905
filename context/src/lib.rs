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
//! | `https://HOST/PATH` (also `http://`) | a tar.gz archive downloaded over HTTP(S) |
//! | `gs://BUCKET/KEY` | Google Cloud Storage: recognised, not supported yet |
//! | `https://ACCOUNT.blob.core.windows.net/...` | Azure Blob Storage: recognised, not supported yet |
//!
//! As kaniko does, `git://` URLs are fetched over `https://` unless `GIT_PULL_METHOD=http`
//! (then `http://`); ocibuild also takes `GIT_PULL_METHOD=git` to keep the native git
//! protocol (e.g. for a `git daemon`). `REF` is a branch or tag (`refs/heads/main`,
//! `refs/tags/v1`, `main`) or any other ref (`refs/pull/1/head`, fetched explicitly);
//! `COMMIT` is checked out after the clone. kaniko's `--git` options
//! ([`parse_git_options`]) choose the branch when the URL names none, single-branch clones,
//! submodules and skipping TLS verification.
//!
//! S3 objects are fetched with a GET signed with AWS signature version 4 from
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`), in `AWS_REGION`
//! (default `us-east-1`); `S3_ENDPOINT` or `AWS_ENDPOINT_URL` points to an S3-compatible
//! server, which is then addressed path-style (`ENDPOINT/BUCKET/KEY`) unless
//! `S3_FORCE_PATH_STYLE=false`; `S3_FORCE_PATH_STYLE=true` forces path style on AWS too.
//! Without credentials the request is sent unsigned (public objects).
//!
//! Archives are extracted by the [`Unpack`] function the caller gives; the engine's
//! (`ocibuild_core::context`) extracts like `ADD` extracts local archives: members never
//! land outside the context directory, whatever their names (`../x`, `/x`) or the symlinks
//! before them. `--context-sub-path` then selects a directory inside the context; it may
//! not leave it.
//!
//! Also here: reading the Dockerfile and `.dockerignore` inside a context
//! ([`contextfile`]) and downloads over HTTP(S) ([`fetch`], shared with `ADD <url>`).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod contextfile;
pub mod fetch;

use crate::fetch::FetchError;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// Google Cloud Storage, `gs://BUCKET/KEY` (not supported yet).
    Gcs(String),
    /// Azure Blob Storage, `https://ACCOUNT.blob.core.windows.net/...` (not supported yet).
    Azure(String),
}

/// kaniko's `--git` options: `branch=NAME,single-branch=BOOL,recurse-submodules=BOOL,insecure-skip-tls=BOOL`.
#[derive(Default, Clone, Debug, PartialEq, Eq)]
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

/// The environment [`prepare_context`] reads, captured once so it can also be given
/// explicitly ([`prepare_context_with`]).
#[derive(Default, Clone, Debug)]
pub struct ContextEnv {
    /// `GIT_PULL_METHOD`: `https` (default), `http` or `git`.
    pub git_pull_method: Option<String>,
    /// `AWS_ACCESS_KEY_ID`.
    pub aws_access_key_id: Option<String>,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub aws_secret_access_key: Option<String>,
    /// `AWS_SESSION_TOKEN`.
    pub aws_session_token: Option<String>,
    /// `AWS_REGION` (else `AWS_DEFAULT_REGION`); `us-east-1` when unset.
    pub aws_region: Option<String>,
    /// `S3_ENDPOINT`, else `AWS_ENDPOINT_URL`: an S3-compatible server.
    pub s3_endpoint: Option<String>,
    /// `S3_FORCE_PATH_STYLE`: `true` or `false`.
    pub s3_force_path_style: Option<String>,
}

impl ContextEnv {
    /// Reads the variables from the process environment; empty values count as unset.
    pub fn from_env() -> ContextEnv {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        ContextEnv {
            git_pull_method: var("GIT_PULL_METHOD"),
            aws_access_key_id: var("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
            aws_session_token: var("AWS_SESSION_TOKEN"),
            aws_region: var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")),
            s3_endpoint: var("S3_ENDPOINT").or_else(|| var("AWS_ENDPOINT_URL")),
            s3_force_path_style: var("S3_FORCE_PATH_STYLE"),
        }
    }
}

/// What went wrong while parsing or preparing a build context.
#[derive(Debug, thiserror::Error)]
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
    #[error("--context {text}: unknown context scheme {scheme}://; use a directory, dir://, tar://, git://, s3://, https:// or gs://")]
    UnknownScheme {
        /// The value as given.
        text: String,
        /// The scheme.
        scheme: String,
    },
    /// A recognised context kind that is not implemented.
    #[error(
        "{kind} contexts are not supported yet; download the archive and pass tar://PATH ({text})"
    )]
    Unsupported {
        /// `gs://` or `Azure Blob Storage`.
        kind: String,
        /// The context as given.
        text: String,
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
    /// The S3 request could not be sent or its body read.
    #[error("fetching build context {object} from {url} failed: {message}")]
    S3Request {
        /// `s3://BUCKET/KEY`.
        object: String,
        /// The URL requested.
        url: String,
        /// The error and its causes.
        message: String,
    },
    /// S3 answered with an error status.
    #[error("fetching build context {object} from {url} failed: HTTP {status}{detail}{hint}")]
    S3Status {
        /// `s3://BUCKET/KEY`.
        object: String,
        /// The URL requested.
        url: String,
        /// The status, e.g. `403 Forbidden`.
        status: String,
        /// `: Code: message` from the error document, or empty.
        detail: String,
        /// What to check, or empty.
        hint: String,
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

type Result<T> = std::result::Result<T, ContextError>;

/// Extracts a tar stream (plain or compressed) into the existing directory `dest`; `name`
/// names the archive in errors. The error is a one-line message, reported as
/// [`ContextError::Extract`].
pub type Unpack =
    fn(reader: &mut dyn Read, name: &Path, dest: &Path) -> std::result::Result<(), String>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ContextError + '_ {
    move |source| ContextError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Parses a `--context` value: `dir://PATH` and plain paths, `tar://PATH` (`.tar`,
/// `.tar.gz`, ...), `tar://stdin`, `git://HOST/REPO.git[#REF[#COMMIT]]`, `s3://BUCKET/KEY`,
/// `https://HOST/context.tar.gz` (and `http://`), `gs://BUCKET/KEY` and
/// `https://ACCOUNT.blob.core.windows.net/...` (Azure).
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
            if rest.is_empty() || rest.starts_with('/') {
                return Err(invalid("gs:// needs a bucket and object: gs://BUCKET/path"));
            }
            Ok(ContextSource::Gcs(text.to_string()))
        }
        "https" | "http" => {
            let url = reqwest::Url::parse(text)
                .map_err(|e| invalid(&format!("not a valid URL ({e})")))?;
            let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
            if host.is_empty() {
                return Err(invalid("the URL has no host"));
            }
            if host.ends_with(".blob.core.windows.net") {
                Ok(ContextSource::Azure(text.to_string()))
            } else {
                Ok(ContextSource::Https(text.to_string()))
            }
        }
        other => Err(ContextError::UnknownScheme {
            text: text.to_string(),
            scheme: other.to_string(),
        }),
    }
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
fn parse_bool(text: &str) -> Option<bool> {
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

/// Makes the context available as a local directory and returns it, with `sub_path`
/// (`--context-sub-path`) applied: it must exist and stay inside the context. Directory
/// contexts are used in place; every other kind is extracted or cloned into a fresh
/// subdirectory of `work` (created when missing), which the caller removes; archives are
/// extracted with `unpack`. Reads the environment ([`ContextEnv::from_env`]) for git and S3.
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
        ContextSource::Dir(dir) => {
            match fs::metadata(dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(ContextError::NotFound {
                        path: dir.clone(),
                        reason: "not a directory".to_string(),
                    })
                }
                Err(e) => {
                    return Err(ContextError::NotFound {
                        path: dir.clone(),
                        reason: e.to_string(),
                    })
                }
            }
            dir.clone()
        }
        ContextSource::Tar(path) => {
            let file = match fs::File::open(path) {
                Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => f,
                Ok(_) => {
                    return Err(ContextError::NotFound {
                        path: path.clone(),
                        reason: "not a file; tar:// needs a tar archive".to_string(),
                    })
                }
                Err(e) => {
                    return Err(ContextError::NotFound {
                        path: path.clone(),
                        reason: e.to_string(),
                    })
                }
            };
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
        } => {
            let url = clone_url(url, env)?;
            let (reference, commit, git, work) = (
                reference.clone(),
                commit.clone(),
                git.clone(),
                work.to_path_buf(),
            );
            blocking(move || git_clone(&url, reference.as_deref(), commit.as_deref(), &git, &work))
                .await?
        }
        ContextSource::S3 { bucket, key } => {
            let dest = fresh_dir(work, "download-")?;
            let archive = dest.join("context.tar.gz");
            let fetched = s3_get(bucket, key, env, &archive).await;
            let result = match fetched {
                Ok(()) => {
                    let file = fs::File::open(&archive).map_err(io_err(&archive))?;
                    extract_blocking(
                        file,
                        format!("s3://{bucket}/{key}"),
                        work.to_path_buf(),
                        unpack,
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            let _ = fs::remove_dir_all(&dest);
            result?
        }
        ContextSource::Https(url) => {
            fs::create_dir_all(work).map_err(io_err(work))?;
            let fetched = fetch::download(url, work, None).await?;
            let path = fetched.path();
            let result = match fs::File::open(&path) {
                Ok(file) => extract_blocking(file, url.clone(), work.to_path_buf(), unpack).await,
                Err(e) => Err(ContextError::Io { path, source: e }),
            };
            let _ = fs::remove_dir_all(&fetched.dir);
            result?
        }
        ContextSource::Gcs(text) => {
            return Err(ContextError::Unsupported {
                kind: "gs://".to_string(),
                text: text.clone(),
            })
        }
        ContextSource::Azure(text) => {
            return Err(ContextError::Unsupported {
                kind: "Azure Blob Storage".to_string(),
                text: text.clone(),
            })
        }
    };
    apply_sub_path(&root, sub_path)
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
    let method = env.git_pull_method.as_deref().unwrap_or("https");
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

// ---------------------------------------------------------------------------------------
// S3

/// SHA-256 of the empty payload of a GET.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Percent-encodes everything but RFC 3986 unreserved characters (and `/` when asked),
/// as signature version 4 wants.
fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return Vec::new(),
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The inputs of one signature version 4 request signature.
#[derive(Debug, Clone)]
pub struct SigV4Request<'a> {
    /// `GET`, `PUT`, ...
    pub method: &'a str,
    /// The URI-encoded path (`/bucket/key`).
    pub canonical_uri: &'a str,
    /// The canonical query string (sorted, encoded), usually empty.
    pub canonical_query: &'a str,
    /// Headers to sign, names lower-case (must include `host` and `x-amz-date`).
    pub headers: &'a [(&'a str, &'a str)],
    /// Hex SHA-256 of the payload (or `UNSIGNED-PAYLOAD`).
    pub payload_sha256: &'a str,
    /// `YYYYMMDDTHHMMSSZ`, the value of `x-amz-date`.
    pub amz_date: &'a str,
    /// The region, e.g. `us-east-1`.
    pub region: &'a str,
    /// The service, `s3`.
    pub service: &'a str,
}

/// The `Authorization` header value signing `request` with AWS signature version 4.
pub fn sigv4_authorization(
    request: &SigV4Request<'_>,
    access_key: &str,
    secret_key: &str,
) -> String {
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(n, v)| {
            let value = v.split_whitespace().collect::<Vec<_>>().join(" ");
            (n.to_ascii_lowercase(), value)
        })
        .collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let signed_headers = headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method,
        request.canonical_uri,
        request.canonical_query,
        canonical_headers,
        signed_headers,
        request.payload_sha256
    );
    let date = request.amz_date.get(..8).unwrap_or(request.amz_date);
    let scope = format!("{date}/{}/{}/aws4_request", request.region, request.service);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        request.amz_date,
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let mut key = hmac_sha256(format!("AWS4{secret_key}").as_bytes(), date.as_bytes());
    for part in [request.region, request.service, "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    let signature = hex::encode(hmac_sha256(&key, string_to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"
    )
}

/// The current UTC time as `YYYYMMDDTHHMMSSZ`.
fn amz_date_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    ocibuild_image::time::rfc3339(secs).replace(['-', ':'], "")
}

/// The URL of `bucket`/`key` as the environment asks (endpoint, path or virtual-host style).
fn s3_url(bucket: &str, key: &str, env: &ContextEnv, region: &str) -> Result<reqwest::Url> {
    let force = match env.s3_force_path_style.as_deref() {
        None => None,
        Some(v) => Some(parse_bool(v).ok_or_else(|| ContextError::InvalidEnv {
            name: "S3_FORCE_PATH_STYLE".to_string(),
            value: v.to_string(),
            reason: "must be true or false".to_string(),
        })?),
    };
    let encoded_key = uri_encode(key, true);
    let (base, path_style) = match env.s3_endpoint.as_deref() {
        Some(endpoint) => {
            let with_scheme = if endpoint.contains("://") {
                endpoint.to_string()
            } else {
                format!("https://{endpoint}")
            };
            (with_scheme, force.unwrap_or(true))
        }
        None => (
            format!("https://s3.{region}.amazonaws.com"),
            force.unwrap_or(false),
        ),
    };
    let bad_endpoint = |reason: String| ContextError::InvalidEnv {
        name: "S3_ENDPOINT".to_string(),
        value: env.s3_endpoint.clone().unwrap_or_default(),
        reason,
    };
    let mut url = reqwest::Url::parse(&base).map_err(|e| bad_endpoint(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad_endpoint(
            "must be an http:// or https:// URL".to_string(),
        ));
    }
    let prefix = url.path().trim_end_matches('/').to_string();
    if path_style {
        url.set_path(&format!(
            "{prefix}/{}/{encoded_key}",
            uri_encode(bucket, false)
        ));
    } else {
        let host = format!("{bucket}.{}", url.host_str().unwrap_or_default());
        url.set_host(Some(&host))
            .map_err(|e| bad_endpoint(format!("bucket {bucket}: {e}")))?;
        url.set_path(&format!("{prefix}/{encoded_key}"));
    }
    Ok(url)
}

/// Text between `<tag>` and `</tag>` in an S3 error document.
fn xml_field<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let start = body.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(body[start..end].trim())
}

/// GETs `s3://bucket/key` into the file `dest`.
async fn s3_get(bucket: &str, key: &str, env: &ContextEnv, dest: &Path) -> Result<()> {
    let region = env.aws_region.as_deref().unwrap_or("us-east-1");
    let url = s3_url(bucket, key, env, region)?;
    let url_text = url.to_string();
    let object = format!("s3://{bucket}/{key}");
    let request_err = |message: String| ContextError::S3Request {
        object: object.clone(),
        url: url_text.clone(),
        message,
    };
    let credentials = match (&env.aws_access_key_id, &env.aws_secret_access_key) {
        (Some(id), Some(secret)) => Some((id.as_str(), secret.as_str())),
        (None, None) => None,
        (Some(_), None) => {
            return Err(request_err(
                "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".to_string(),
            ))
        }
        (None, Some(_)) => {
            return Err(request_err(
                "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".to_string(),
            ))
        }
    };
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("ocibuild/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| request_err(ocibuild_image::chain::error_chain(&e)))?;
    let mut request = client.get(url.clone());
    if let Some((access_key, secret_key)) = credentials {
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        let amz_date = amz_date_now();
        let mut headers = vec![
            ("host", host.as_str()),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", amz_date.as_str()),
        ];
        if let Some(token) = env.aws_session_token.as_deref() {
            headers.push(("x-amz-security-token", token));
        }
        let authorization = sigv4_authorization(
            &SigV4Request {
                method: "GET",
                canonical_uri: url.path(),
                canonical_query: "",
                headers: &headers,
                payload_sha256: EMPTY_SHA256,
                amz_date: &amz_date,
                region,
                service: "s3",
            },
            access_key,
            secret_key,
        );
        for (name, value) in headers.iter().filter(|(n, _)| *n != "host") {
            request = request.header(*name, *value);
        }
        request = request.header(reqwest::header::AUTHORIZATION, authorization);
    }
    let mut response = request
        .send()
        .await
        .map_err(|e| request_err(ocibuild_image::chain::error_chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let code = xml_field(&body, "Code");
        let message = xml_field(&body, "Message");
        let detail = match (code, message) {
            (Some(c), Some(m)) => format!(": {c}: {m}"),
            (Some(c), None) => format!(": {c}"),
            (None, Some(m)) => format!(": {m}"),
            (None, None) => String::new(),
        };
        let hint = match status.as_u16() {
            401 | 403 if credentials.is_none() => {
                "; AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set, so the request was not signed"
            }
            401 | 403 => "; check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION",
            404 => "; check the bucket and the key",
            301 | 307 => "; the bucket is in another region: set AWS_REGION",
            _ => "",
        };
        return Err(ContextError::S3Status {
            object: object.clone(),
            url: url_text.clone(),
            status: status.to_string(),
            detail,
            hint: hint.to_string(),
        });
    }
    let mut file = fs::File::create(dest).map_err(io_err(dest))?;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| request_err(ocibuild_image::chain::error_chain(&e)))?
    {
        file.write_all(&chunk).map_err(io_err(dest))?;
    }
    file.flush().map_err(io_err(dest))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The "GET Object" example of the AWS signature version 4 documentation.
    #[test]
    fn sigv4_matches_the_documented_example() {
        let headers = [
            ("host", "examplebucket.s3.amazonaws.com"),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
        ];
        let auth = sigv4_authorization(
            &SigV4Request {
                method: "GET",
                canonical_uri: "/test.txt",
                canonical_query: "",
                headers: &headers,
                payload_sha256: EMPTY_SHA256,
                amz_date: "20130524T000000Z",
                region: "us-east-1",
                service: "s3",
            },
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn s3_urls() {
        let env = ContextEnv::default();
        let url = s3_url("b", "dir/my ctx.tar.gz", &env, "eu-west-1").unwrap();
        assert_eq!(
            url.as_str(),
            "https://b.s3.eu-west-1.amazonaws.com/dir/my%20ctx.tar.gz"
        );
        let env = ContextEnv {
            s3_endpoint: Some("http://127.0.0.1:9000".into()),
            ..ContextEnv::default()
        };
        let url = s3_url("b", "k.tgz", &env, "us-east-1").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:9000/b/k.tgz");
        let env = ContextEnv {
            s3_endpoint: Some("minio.example:9000".into()),
            s3_force_path_style: Some("false".into()),
            ..ContextEnv::default()
        };
        let url = s3_url("b", "k.tgz", &env, "us-east-1").unwrap();
        assert_eq!(url.as_str(), "https://b.minio.example:9000/k.tgz");
        let env = ContextEnv {
            s3_force_path_style: Some("maybe".into()),
            ..ContextEnv::default()
        };
        assert!(matches!(
            s3_url("b", "k", &env, "us-east-1"),
            Err(ContextError::InvalidEnv { .. })
        ));
    }

    #[test]
    fn amz_dates_have_the_basic_format() {
        let d = amz_date_now();
        assert_eq!(d.len(), 16, "{d}");
        assert!(d.ends_with('Z') && d.as_bytes()[8] == b'T', "{d}");
    }
}
