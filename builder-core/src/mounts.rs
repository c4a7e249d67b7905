//! `RUN --mount` support: parsing BuildKit's `--mount=` values, the directories backing
//! `type=cache` mounts, and the secrets given with `--secret`.
//!
//! - [`parse_mount`](ocibuild_dockerfile::mount::parse_mount) turns one `--mount=` value (BuildKit's CSV syntax, e.g.
//!   `type=cache,target=/root/.gradle,sharing=locked`) into a [`MountSpec`].
//! - [`CacheMounts`] keeps the directories of `type=cache` mounts under one directory (a PVC
//!   for CI), shared safely between threads and processes with `flock` according to the
//!   mount's [`Sharing`].
//! - [`Secrets`] holds where each `--secret` comes from ([`parse_secret_flag`]); values are
//!   read only when asked for and never appear in errors or `Debug` output.

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};

use ocibuild_dockerfile::mount::key_values;
pub use ocibuild_dockerfile::mount::{MountSpec, MountSpecError, Sharing};

/// Most `-N` suffixes tried for a `sharing=private` cache before giving up.
const MAX_PRIVATE: u32 = 4096;

/// Errors of this module. Messages say what to change; none contains a secret's value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    /// A `--mount` value that does not parse.
    #[error(transparent)]
    Spec(#[from] MountSpecError),
    /// A file system operation on a cache directory failed.
    #[error("cache mount directory {}: {source}", path.display())]
    CacheIo {
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The owner of a cache directory or secret file could not be set.
    #[error(
        "cannot give {} to uid {uid} gid {gid}: {source}; without root privileges only \
         uid=0,gid=0 (root inside the build, i.e. the caller) can be used",
        path.display()
    )]
    Chown {
        /// The path concerned.
        path: PathBuf,
        /// Requested owner.
        uid: u32,
        /// Requested group.
        gid: u32,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A lock file could not be locked (other than by waiting).
    #[error("cannot lock {}: {source}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Every private copy of a cache is in use.
    #[error(
        "cache {id:?} (sharing=private): all {MAX_PRIVATE} private copies are in use; \
         use sharing=shared or sharing=locked"
    )]
    PrivateExhausted {
        /// The cache id.
        id: String,
    },
    /// A secret's file could not be read.
    #[error("secret {id:?}: cannot read its file {}: {source}; check the path given with --secret id={id},src=...", path.display())]
    SecretFile {
        /// The secret id.
        id: String,
        /// Its file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A secret's environment variable is not set.
    #[error(
        "secret {id:?}: environment variable {var} is not set; export it or pass \
         --secret id={id},src=FILE"
    )]
    SecretEnvUnset {
        /// The secret id.
        id: String,
        /// The variable.
        var: String,
    },
    /// A secret mount with `required=true` whose secret was not given.
    #[error(
        "secret {id:?} is required by RUN --mount=type=secret but was not given: pass \
         --secret id={id},src=<file> or --secret id={id},env=<VAR>"
    )]
    MissingSecret {
        /// The secret id.
        id: String,
    },
    /// Writing a secret's file for mounting failed.
    #[error("secret {id:?}: cannot write it to {}: {source}", path.display())]
    SecretWrite {
        /// The secret id.
        id: String,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

const SECRET_KEYS: &str = "id, src (source), env, type";

/// A file-name-safe, collision-free name for an arbitrary id: its safe characters (at most
/// 48) followed by `-` and 16 hex digits of its SHA-256. Never `.`/`..`, never contains `/`.
fn safe_name(id: &str) -> String {
    let mut name: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    if name.starts_with('.') {
        name.replace_range(0..1, "_");
    }
    let hash = Sha256::digest(id.as_bytes());
    name.push('-');
    name.push_str(&hex::encode(&hash[..8]));
    name
}

fn cache_err(path: &Path) -> impl FnOnce(io::Error) -> MountError + '_ {
    move |source| MountError::CacheIo {
        path: path.to_path_buf(),
        source,
    }
}

/// Gives `path` to `uid:gid` unless it already has them. Without root, `0:0` means the
/// caller (rootless user namespaces map root to the caller) and is left alone.
fn set_owner(path: &Path, uid: u32, gid: u32) -> Result<(), MountError> {
    let meta = fs::symlink_metadata(path).map_err(cache_err(path))?;
    if meta.uid() == uid && meta.gid() == gid {
        return Ok(());
    }
    if uid == 0 && gid == 0 && !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|source| MountError::Chown {
        path: path.to_path_buf(),
        uid,
        gid,
        source,
    })
}

/// Opens (creating) a lock file.
fn open_lock(path: &Path) -> Result<File, MountError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| MountError::Lock {
            path: path.to_path_buf(),
            source,
        })
}

/// Takes an exclusive flock on `path`; `Ok(None)` when `wait` is false and it is held.
fn lock(path: &Path, wait: bool) -> Result<Option<Flock<File>>, MountError> {
    let mut file = open_lock(path)?;
    let arg = if wait {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockExclusiveNonblock
    };
    loop {
        match Flock::lock(file, arg) {
            Ok(held) => return Ok(Some(held)),
            Err((f, Errno::EINTR)) => file = f,
            Err((_, Errno::EWOULDBLOCK)) if !wait => return Ok(None),
            Err((_, errno)) => {
                return Err(MountError::Lock {
                    path: path.to_path_buf(),
                    source: io::Error::from(errno),
                })
            }
        }
    }
}

/// Directories backing `type=cache` mounts, kept across builds and processes (e.g. on a PVC).
///
/// Layout: `<dir>/<name>` per cache (and `<name>-1`, `<name>-2`, ... for private copies),
/// `<dir>/<name>.lock` next to each, `<dir>/.create.lock` serialising creation.
#[derive(Debug, Clone)]
pub struct CacheMounts {
    dir: PathBuf,
}

/// A cache directory in use; a held lock (locked and private sharing) is released on drop.
pub struct CacheLease {
    /// The directory to bind-mount.
    pub path: PathBuf,
    /// The directory was created by this call (seed it from `from`/`source` if given).
    pub fresh: bool,
    lock: Option<Flock<File>>,
}

impl fmt::Debug for CacheLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLease")
            .field("path", &self.path)
            .field("fresh", &self.fresh)
            .field("locked", &self.lock.is_some())
            .finish()
    }
}

impl CacheMounts {
    /// Uses `dir` (created if missing) for cache directories.
    pub fn open(dir: &Path) -> Result<CacheMounts, MountError> {
        fs::create_dir_all(dir).map_err(cache_err(dir))?;
        Ok(CacheMounts {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory for cache `id` (the id is turned into a safe file name, so it can never
    /// escape the cache directory):
    /// - [`Sharing::Shared`]: the same directory for everyone, no lock;
    /// - [`Sharing::Locked`]: takes an exclusive flock on `<dir>/<name>.lock`, blocking until
    ///   other holders (threads or processes) release it; the lease holds it until dropped;
    /// - [`Sharing::Private`]: the first of `<name>`, `<name>-1`, ... whose lock can be taken
    ///   without waiting, so each concurrent user gets its own directory.
    ///
    /// A directory created by this call gets `mode`, `uid` and `gid` and the lease says
    /// `fresh: true`.
    pub fn acquire(
        &self,
        id: &str,
        sharing: Sharing,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<CacheLease, MountError> {
        let name = safe_name(id);
        let (path, lock) = match sharing {
            Sharing::Shared => (self.dir.join(&name), None),
            Sharing::Locked => {
                let held = lock(&self.dir.join(format!("{name}.lock")), true)?;
                (self.dir.join(&name), held)
            }
            Sharing::Private => {
                let mut found = None;
                for n in 0..MAX_PRIVATE {
                    let candidate = if n == 0 {
                        name.clone()
                    } else {
                        format!("{name}-{n}")
                    };
                    let lock_path = self.dir.join(format!("{candidate}.lock"));
                    if let Some(held) = lock(&lock_path, false)? {
                        found = Some((self.dir.join(candidate), Some(held)));
                        break;
                    }
                }
                found.ok_or_else(|| MountError::PrivateExhausted { id: id.to_string() })?
            }
        };
        let fresh = self.ensure_dir(&path, mode, uid, gid)?;
        Ok(CacheLease { path, fresh, lock })
    }

    /// Creates `path` with `mode` and owner unless it exists; true if it was created now.
    /// Creation happens under `.create.lock` in a temporary directory renamed into place, so
    /// no one sees a half-made directory and a crash leaves none behind.
    fn ensure_dir(&self, path: &Path, mode: u32, uid: u32, gid: u32) -> Result<bool, MountError> {
        if path.is_dir() {
            return Ok(false);
        }
        let _guard = lock(&self.dir.join(".create.lock"), true)?;
        if path.is_dir() {
            return Ok(false);
        }
        let file_name = path.file_name().unwrap_or_else(|| OsStr::new("cache"));
        let mut tmp_name = OsStr::new(".new-").to_os_string();
        tmp_name.push(file_name);
        let tmp = self.dir.join(tmp_name);
        if tmp.symlink_metadata().is_ok() {
            fs::remove_dir_all(&tmp).map_err(cache_err(&tmp))?;
        }
        fs::create_dir(&tmp).map_err(cache_err(&tmp))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode & 0o7777))
            .map_err(cache_err(&tmp))?;
        set_owner(&tmp, uid, gid)?;
        // chown may clear setuid/setgid bits: set the mode again.
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode & 0o7777))
            .map_err(cache_err(&tmp))?;
        fs::rename(&tmp, path).map_err(cache_err(path))?;
        Ok(true)
    }
}

/// Where a secret's value comes from.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretSource {
    /// A file on the build host (`--secret id=NAME,src=FILE`).
    File(PathBuf),
    /// An environment variable of the build process (`--secret id=NAME,env=VAR`).
    Env(String),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only where the value is, never the value.
        match self {
            SecretSource::File(path) => f.debug_tuple("File").field(path).finish(),
            SecretSource::Env(var) => f.debug_tuple("Env").field(var).finish(),
        }
    }
}

/// Parses a `--secret` flag value: `id=NAME,src=FILE` (alias `source=`), `id=NAME,env=VAR`,
/// `type=file|env` (with `type=env`, `src=` names the variable, as in buildx), or a bare
/// `id=NAME`, which means the environment variable `NAME` (as in BuildKit).
pub fn parse_secret_flag(text: &str) -> Result<(String, SecretSource), MountError> {
    secret_flag(text).map_err(MountError::Spec)
}

/// [`parse_secret_flag`], with the error of the value's syntax.
fn secret_flag(text: &str) -> Result<(String, SecretSource), MountSpecError> {
    let mut id: Option<String> = None;
    let mut src: Option<String> = None;
    let mut env: Option<String> = None;
    let mut typ: Option<SecretKind> = None;
    for (key, value) in key_values("--secret", text)? {
        let Some(value) = value else {
            return Err(MountSpecError::Syntax {
                flag: "--secret",
                spec: text.to_string(),
                problem: format!("field {key:?} must be a key=value pair"),
            });
        };
        match key.as_str() {
            "id" => id = Some(value),
            "src" | "source" => src = Some(value),
            "env" => env = Some(value),
            "type" => {
                typ = Some(match value.trim().to_ascii_lowercase().as_str() {
                    "file" => SecretKind::File,
                    "env" => SecretKind::Env,
                    _ => {
                        return Err(MountSpecError::UnknownType {
                            flag: "--secret",
                            kind: value,
                            expected: "file, env",
                        })
                    }
                })
            }
            _ => {
                return Err(MountSpecError::UnknownKey {
                    flag: "--secret",
                    key,
                    expected: SECRET_KEYS,
                })
            }
        }
    }
    let id = id
        .filter(|i| !i.is_empty())
        .ok_or_else(|| MountSpecError::Syntax {
            flag: "--secret",
            spec: text.to_string(),
            problem: "missing id=NAME (e.g. --secret id=npmrc,src=$HOME/.npmrc)".into(),
        })?;
    let empty = |key: &str| MountSpecError::BadValue {
        flag: "--secret",
        key: key.to_string(),
        value: String::new(),
        expected: "a non-empty value",
    };
    let conflict = |problem: &str| MountSpecError::Conflict {
        flag: "--secret",
        problem: format!("id={id}: {problem}"),
    };
    let source =
        match (typ, src, env) {
            (_, Some(_), Some(_)) => return Err(conflict(
                "both src= and env= are given; use src=FILE for a file or env=VAR for a variable",
            )),
            (Some(SecretKind::Env), Some(var), None)
            | (Some(SecretKind::Env) | None, None, Some(var)) => {
                if var.is_empty() {
                    return Err(empty("env"));
                }
                SecretSource::Env(var)
            }
            (Some(SecretKind::File) | None, Some(path), None) => {
                if path.is_empty() {
                    return Err(empty("src"));
                }
                SecretSource::File(PathBuf::from(path))
            }
            (Some(SecretKind::File), None, Some(_)) => {
                return Err(conflict(
                    "type=file takes src=FILE, not env=; use type=env with env=VAR",
                ))
            }
            (Some(SecretKind::File), None, None) => {
                return Err(conflict("type=file needs src=FILE"));
            }
            (Some(SecretKind::Env) | None, None, None) => SecretSource::Env(id.clone()),
        };
    Ok((id, source))
}

/// `--secret type=`.
#[derive(Clone, Copy)]
enum SecretKind {
    File,
    Env,
}

/// The secrets given on the command line (`--secret`), by id. Holds only where each value
/// is; values are read when asked for.
#[derive(Clone, Default)]
pub struct Secrets {
    list: Vec<(String, SecretSource)>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.list.iter().map(|(id, src)| (id, src)))
            .finish()
    }
}

impl Secrets {
    /// The given secrets; for an id given twice the later one wins.
    pub fn new(list: Vec<(String, SecretSource)>) -> Secrets {
        let mut kept: Vec<(String, SecretSource)> = Vec::with_capacity(list.len());
        for (id, source) in list {
            match kept.iter_mut().find(|(k, _)| *k == id) {
                Some(slot) => slot.1 = source,
                None => kept.push((id, source)),
            }
        }
        Secrets { list: kept }
    }

    /// The ids given, in order.
    #[cfg(test)]
    pub fn ids(&self) -> Vec<String> {
        self.list.iter().map(|(id, _)| id.clone()).collect()
    }

    /// Where secret `id` comes from, if it was given.
    pub fn source(&self, id: &str) -> Option<&SecretSource> {
        self.list.iter().find(|(k, _)| k == id).map(|(_, s)| s)
    }

    /// The value of secret `id`, read now (file content or environment variable);
    /// `Ok(None)` if no such id was given; an error naming the id and source (never the
    /// value) if the file cannot be read or the variable is unset.
    pub fn value(&self, id: &str) -> Result<Option<Vec<u8>>, MountError> {
        let Some(source) = self.source(id) else {
            return Ok(None);
        };
        match source {
            SecretSource::File(path) => {
                fs::read(path)
                    .map(Some)
                    .map_err(|source| MountError::SecretFile {
                        id: id.to_string(),
                        path: path.clone(),
                        source,
                    })
            }
            SecretSource::Env(var) => match std::env::var_os(var) {
                Some(value) => Ok(Some(value.as_bytes().to_vec())),
                None => Err(MountError::SecretEnvUnset {
                    id: id.to_string(),
                    var: var.clone(),
                }),
            },
        }
    }

    /// Writes the value of `id` to a new file under `dir` (created with mode 0700 if
    /// missing) with `mode` and owner `uid:gid`, for bind-mounting read-only; returns its
    /// path, or `Ok(None)` if no such id was given. The caller removes `dir` after the RUN.
    pub fn write_to(
        &self,
        id: &str,
        dir: &Path,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Option<PathBuf>, MountError> {
        let Some(value) = self.value(id)? else {
            return Ok(None);
        };
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            let id = id.to_string();
            move |source| MountError::SecretWrite { id, path, source }
        };
        if !dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(write_err(dir))?;
        }
        let base = format!("secret-{}", safe_name(id));
        let mut path = dir.join(&base);
        let mut n = 0u32;
        let mut file = loop {
            // Owner-only until the content is written; the final mode is set afterwards.
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(&path)
            {
                Ok(f) => break f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => {
                    n += 1;
                    path = dir.join(format!("{base}-{n}"));
                }
                Err(e) => return Err(write_err(&path)(e)),
            }
        };
        file.write_all(&value)
            .and_then(|()| file.sync_all())
            .map_err(write_err(&path))?;
        drop(file);
        set_owner(&path, uid, gid).map_err(|e| match e {
            MountError::CacheIo { path, source } => MountError::SecretWrite {
                id: id.to_string(),
                path,
                source,
            },
            other => other,
        })?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))
            .map_err(write_err(&path))?;
        Ok(Some(path))
    }
}

/// The error for a `required=true` secret mount whose secret was not given: names the id
/// and the flags that would provide it.
pub fn missing_secret(id: &str) -> MountError {
    MountError::MissingSecret { id: id.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_names() {
        for id in ["..", ".", "/", "../../x", "a/b", "", "\0", &"x".repeat(500)] {
            let n = safe_name(id);
            assert!(
                !n.contains('/') && !n.starts_with('.') && n.len() <= 48 + 17,
                "{n}"
            );
        }
        assert_ne!(safe_name("a/b"), safe_name("a_b"));
        assert_eq!(safe_name("gradle"), safe_name("gradle"));
    }
}
