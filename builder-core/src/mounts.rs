//! `RUN --mount` support: parsing BuildKit's `--mount=` values, the directories backing
//! `type=cache` mounts, and the secrets given with `--secret`.
//!
//! - [`parse_mount`] turns one `--mount=` value (BuildKit's CSV syntax, e.g.
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

/// Default target directory of secret mounts: `/run/secrets/<id>`.
pub const SECRETS_DIR: &str = "/run/secrets";

/// Most `-N` suffixes tried for a `sharing=private` cache before giving up.
const MAX_PRIVATE: u32 = 4096;

/// Errors of this module. Messages say what to change; none contains a secret's value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    /// The `--mount` / `--secret` value is not a comma-separated list of `key=value`.
    #[error("invalid {flag} value {spec:?}: {problem}")]
    Syntax {
        /// `--mount` or `--secret`.
        flag: &'static str,
        /// The whole value.
        spec: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A key that the flag does not know.
    #[error("{flag}: unknown key {key:?}; expected one of {expected}")]
    UnknownKey {
        /// `--mount` or `--secret`.
        flag: &'static str,
        /// The key as written.
        key: String,
        /// The accepted keys.
        expected: &'static str,
    },
    /// A key that exists but means nothing for this mount type.
    #[error("--mount: key {key:?} does not apply to type={kind} mounts; remove it")]
    KeyNotForType {
        /// The key as written.
        key: String,
        /// The mount type.
        kind: &'static str,
    },
    /// An unknown `type=`.
    #[error("{flag}: unknown type {kind:?}; expected one of {expected}")]
    UnknownType {
        /// `--mount` or `--secret`.
        flag: &'static str,
        /// The type as written.
        kind: String,
        /// The accepted types.
        expected: &'static str,
    },
    /// `type=ssh`.
    #[error(
        "--mount=type=ssh is not supported yet; pass the key as a secret instead \
         (--secret id=sshkey,src=FILE and --mount=type=secret,id=sshkey)"
    )]
    SshNotSupported,
    /// A cache, bind or tmpfs mount without `target=`.
    #[error("--mount=type={kind} needs target=/path/in/container (alias dst= or destination=)")]
    MissingTarget {
        /// The mount type.
        kind: &'static str,
    },
    /// A secret mount with neither `id=` nor `target=`.
    #[error("--mount=type=secret needs id=NAME (or target=/path, whose file name is the id)")]
    MissingSecretId,
    /// A target that cannot be a mount point.
    #[error("--mount: target {target:?} {problem}")]
    BadTarget {
        /// The target as written.
        target: String,
        /// Why it is rejected.
        problem: &'static str,
    },
    /// A value that does not parse.
    #[error("{flag}: invalid {key}={value:?}: expected {expected}")]
    BadValue {
        /// `--mount` or `--secret`.
        flag: &'static str,
        /// The key.
        key: String,
        /// The value as written (never a secret value: mount and secret flags only name them).
        value: String,
        /// What would be accepted.
        expected: &'static str,
    },
    /// Two keys that contradict each other.
    #[error("{flag}: {problem}")]
    Conflict {
        /// `--mount` or `--secret`.
        flag: &'static str,
        /// Which keys and what to do.
        problem: String,
    },
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

/// How concurrent builds share one `type=cache` directory (`sharing=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sharing {
    /// Everyone uses the same directory at the same time (the default).
    #[default]
    Shared,
    /// Each concurrent user gets its own directory.
    Private,
    /// Users take turns: the second waits until the first is done.
    Locked,
}

impl Sharing {
    /// The keyword as written in a Dockerfile.
    pub fn as_str(self) -> &'static str {
        match self {
            Sharing::Shared => "shared",
            Sharing::Private => "private",
            Sharing::Locked => "locked",
        }
    }
}

impl fmt::Display for Sharing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One parsed `--mount=` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSpec {
    /// `type=cache`: a directory kept across builds.
    Cache {
        /// Absolute mount point.
        target: String,
        /// Cache id; defaults to the target.
        id: String,
        /// How concurrent users share it; default [`Sharing::Shared`].
        sharing: Sharing,
        /// Mount read-only.
        readonly: bool,
        /// Stage or image whose `source` seeds a fresh cache.
        from: Option<String>,
        /// Path in `from` that seeds a fresh cache.
        source: Option<String>,
        /// Mode of a fresh cache directory; default `0o755`.
        mode: u32,
        /// Owner of a fresh cache directory; default 0.
        uid: u32,
        /// Group of a fresh cache directory; default 0.
        gid: u32,
    },
    /// `type=secret`: a secret given with `--secret`, as a file and/or an env var.
    Secret {
        /// Secret id; defaults to the file name of `target`.
        id: String,
        /// Absolute path of the file; `/run/secrets/<id>` unless `env` is set.
        target: Option<String>,
        /// Environment variable to expose the value in.
        env: Option<String>,
        /// Fail when the secret was not given (else the mount is skipped).
        required: bool,
        /// File mode; default `0o400`.
        mode: u32,
        /// File owner; default 0.
        uid: u32,
        /// File group; default 0.
        gid: u32,
    },
    /// `type=bind` (the default type): a directory or file of the context or of a stage.
    Bind {
        /// Absolute mount point.
        target: String,
        /// Stage or image to take `source` from; the build context when `None`.
        from: Option<String>,
        /// Path in `from` (or the context); default `/`.
        source: String,
        /// Writable (writes are discarded after the RUN); read-only by default.
        readwrite: bool,
    },
    /// `type=tmpfs`: an empty in-memory file system.
    Tmpfs {
        /// Absolute mount point.
        target: String,
        /// Size limit in bytes.
        size: Option<u64>,
    },
}

impl MountSpec {
    /// The mount type keyword (`cache`, `secret`, `bind`, `tmpfs`).
    pub fn kind(&self) -> &'static str {
        match self {
            MountSpec::Cache { .. } => "cache",
            MountSpec::Secret { .. } => "secret",
            MountSpec::Bind { .. } => "bind",
            MountSpec::Tmpfs { .. } => "tmpfs",
        }
    }

    /// The mount point inside the container, if the mount has one (a secret exposed only
    /// as an environment variable has none).
    pub fn target(&self) -> Option<&str> {
        match self {
            MountSpec::Cache { target, .. }
            | MountSpec::Bind { target, .. }
            | MountSpec::Tmpfs { target, .. } => Some(target),
            MountSpec::Secret { target, .. } => target.as_deref(),
        }
    }
}

const MOUNT_KEYS: &str = "type, target (dst, destination), source (src), from, id, sharing, \
                          readonly (ro), readwrite (rw), mode, uid, gid, required, env, size";
const MOUNT_TYPES: &str = "bind, cache, secret, tmpfs";
const SECRET_KEYS: &str = "id, src (source), env, type";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bind,
    Cache,
    Secret,
    Tmpfs,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Bind => "bind",
            Kind::Cache => "cache",
            Kind::Secret => "secret",
            Kind::Tmpfs => "tmpfs",
        }
    }
}

/// Splits CSV text into fields: commas separate fields except inside double quotes, a
/// quoted section may start anywhere (`"target=/a,b"` or `target="/a,b"`), and `""` inside
/// one is a literal quote.
fn split_csv(flag: &'static str, spec: &str) -> Result<Vec<String>, MountError> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = spec.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    if quoted {
        return Err(MountError::Syntax {
            flag,
            spec: spec.to_string(),
            problem: "a double quote is not closed".into(),
        });
    }
    fields.push(cur);
    Ok(fields
        .into_iter()
        .filter(|f| !f.trim().is_empty())
        .collect())
}

/// Splits fields into (lower-case key, value); a bare word has no value.
fn key_values(flag: &'static str, spec: &str) -> Result<Vec<(String, Option<String>)>, MountError> {
    split_csv(flag, spec)?
        .into_iter()
        .map(|field| {
            let (key, value) = match field.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (field.as_str(), None),
            };
            let key = key.trim().to_ascii_lowercase();
            if key.is_empty() {
                return Err(MountError::Syntax {
                    flag,
                    spec: spec.to_string(),
                    problem: format!("field {field:?} has no key; write key=value"),
                });
            }
            Ok((key, value))
        })
        .collect()
}

/// Go's `strconv.ParseBool`, case-insensitively.
fn parse_bool(key: &str, value: &str) -> Result<bool, MountError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Ok(true),
        "0" | "f" | "false" => Ok(false),
        _ => Err(MountError::BadValue {
            flag: "--mount",
            key: key.to_string(),
            value: value.to_string(),
            expected: "true or false",
        }),
    }
}

fn parse_mode(key: &str, value: &str) -> Result<u32, MountError> {
    let digits = value.trim();
    let digits = digits
        .strip_prefix("0o")
        .or_else(|| digits.strip_prefix("0O"))
        .unwrap_or(digits);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o7777 && !digits.starts_with('+') => Ok(mode),
        _ => Err(MountError::BadValue {
            flag: "--mount",
            key: key.to_string(),
            value: value.to_string(),
            expected: "an octal file mode such as 0755 (at most 7777)",
        }),
    }
}

fn parse_id(key: &str, value: &str) -> Result<u32, MountError> {
    let v = value.trim();
    match v.parse::<u32>() {
        Ok(n) if !v.starts_with('+') => Ok(n),
        _ => Err(MountError::BadValue {
            flag: "--mount",
            key: key.to_string(),
            value: value.to_string(),
            expected: "a numeric id such as 1000",
        }),
    }
}

/// Parses a size in bytes with an optional binary unit: `1024`, `64k`, `64m`, `1g`, `1.5g`,
/// `64MiB`, `64MB` (units are powers of 1024, as in Docker's `--tmpfs size=`).
pub fn parse_mount_size(value: &str) -> Option<u64> {
    let v = value.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return None,
    };
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return None;
    }
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if frac.contains('.') {
        return None;
    }
    let int: u64 = int.parse().ok()?;
    let mut bytes = int.checked_mul(1u64 << shift)?;
    if !frac.is_empty() {
        // Fractional part, exact to the byte: frac / 10^len * 2^shift.
        let digits = frac.len().min(18) as u32;
        let frac: u128 = frac[..digits as usize].parse().ok()?;
        let part = (frac << shift) / 10u128.pow(digits);
        bytes = bytes.checked_add(u64::try_from(part).ok()?)?;
    }
    Some(bytes)
}

/// Makes a target absolute (relative to `/`) and removes `.`, `..` and repeated slashes.
fn clean_target(target: &str) -> Result<String, MountError> {
    if target.trim().is_empty() {
        return Err(MountError::BadTarget {
            target: target.to_string(),
            problem: "is empty; give an absolute path such as /cache",
        });
    }
    if target.contains('\0') {
        return Err(MountError::BadTarget {
            target: target.to_string(),
            problem: "contains a NUL byte",
        });
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(MountError::BadTarget {
            target: target.to_string(),
            problem: "is the root directory, which cannot be a mount point; choose a directory such as /cache",
        });
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Parses one `--mount=` value in BuildKit's syntax, e.g.
/// `type=cache,target=/root/.gradle,id=gradle,sharing=locked`.
///
/// Keys are case-insensitive; aliases: `dst`/`destination` = `target`, `src` = `source`,
/// `ro` = `readonly`, `rw` = `readwrite`; `ro`, `rw` and `required` may be bare or take a
/// boolean; `mode` is octal; a value may be double-quoted (CSV quoting). The type defaults to
/// `bind`. A relative target is taken relative to `/`. For secrets, `source`/`src` is an
/// alias of `id` (as in BuildKit). Keys that mean nothing for the mount type are rejected.
pub fn parse_mount(spec: &str) -> Result<MountSpec, MountError> {
    let fields = key_values("--mount", spec)?;
    let mut kind = Kind::Bind;
    for (key, value) in &fields {
        if let ("type", Some(value)) = (key.as_str(), value) {
            kind = match value.trim().to_ascii_lowercase().as_str() {
                "bind" => Kind::Bind,
                "cache" => Kind::Cache,
                "secret" => Kind::Secret,
                "tmpfs" => Kind::Tmpfs,
                "ssh" => return Err(MountError::SshNotSupported),
                _ => {
                    return Err(MountError::UnknownType {
                        flag: "--mount",
                        kind: value.to_string(),
                        expected: MOUNT_TYPES,
                    })
                }
            };
        }
    }
    let not_for = |key: &str| MountError::KeyNotForType {
        key: key.to_string(),
        kind: kind.name(),
    };

    let mut target: Option<String> = None;
    let mut source: Option<String> = None;
    let mut from: Option<String> = None;
    let mut id: Option<String> = None;
    let mut sharing = Sharing::Shared;
    let mut readonly: Option<bool> = None;
    let mut mode: Option<u32> = None;
    let mut uid = 0;
    let mut gid = 0;
    let mut required = false;
    let mut env: Option<String> = None;
    let mut size: Option<u64> = None;

    for (key, value) in fields {
        let Some(value) = value else {
            match key.as_str() {
                "readonly" | "ro" | "readwrite" | "rw" | "required" => {}
                _ => {
                    return Err(MountError::Syntax {
                        flag: "--mount",
                        spec: spec.to_string(),
                        problem: format!("field {key:?} must be a key=value pair"),
                    })
                }
            }
            let on = !matches!(key.as_str(), "readwrite" | "rw");
            apply_flag(kind, &key, on, &mut readonly, &mut required)?;
            continue;
        };
        match key.as_str() {
            "type" => {}
            "target" | "dst" | "destination" => target = Some(value),
            "source" | "src" => {
                if kind == Kind::Tmpfs {
                    return Err(not_for(&key));
                }
                source = Some(value);
            }
            "from" => {
                if matches!(kind, Kind::Secret | Kind::Tmpfs) {
                    return Err(not_for(&key));
                }
                from = Some(value);
            }
            "id" => {
                if matches!(kind, Kind::Bind | Kind::Tmpfs) {
                    return Err(not_for(&key));
                }
                id = Some(value);
            }
            "sharing" => {
                if kind != Kind::Cache {
                    return Err(not_for(&key));
                }
                sharing = match value.trim().to_ascii_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => {
                        return Err(MountError::BadValue {
                            flag: "--mount",
                            key,
                            value,
                            expected: "shared, private or locked",
                        })
                    }
                };
            }
            "readonly" | "ro" | "readwrite" | "rw" => {
                let on = parse_bool(&key, &value)?;
                let on = if matches!(key.as_str(), "readwrite" | "rw") {
                    !on
                } else {
                    on
                };
                apply_flag(kind, &key, on, &mut readonly, &mut required)?;
            }
            "required" => {
                let on = parse_bool(&key, &value)?;
                apply_flag(kind, &key, on, &mut readonly, &mut required)?;
            }
            "mode" | "uid" | "gid" => {
                if matches!(kind, Kind::Bind | Kind::Tmpfs) {
                    return Err(not_for(&key));
                }
                match key.as_str() {
                    "mode" => mode = Some(parse_mode(&key, &value)?),
                    "uid" => uid = parse_id(&key, &value)?,
                    _ => gid = parse_id(&key, &value)?,
                }
            }
            "env" => {
                if kind != Kind::Secret {
                    return Err(not_for(&key));
                }
                if value.is_empty() || value.contains('=') || value.contains('\0') {
                    return Err(MountError::BadValue {
                        flag: "--mount",
                        key,
                        value,
                        expected: "an environment variable name",
                    });
                }
                env = Some(value);
            }
            "size" => {
                if kind != Kind::Tmpfs {
                    return Err(not_for(&key));
                }
                size = Some(
                    parse_mount_size(&value).ok_or_else(|| MountError::BadValue {
                        flag: "--mount",
                        key: key.clone(),
                        value: value.clone(),
                        expected: "a size in bytes such as 1024, 64m or 1g",
                    })?,
                );
            }
            _ => {
                return Err(MountError::UnknownKey {
                    flag: "--mount",
                    key,
                    expected: MOUNT_KEYS,
                })
            }
        }
    }

    let target = target.map(|t| clean_target(&t)).transpose()?;
    let need_target = || {
        target
            .clone()
            .ok_or(MountError::MissingTarget { kind: kind.name() })
    };
    Ok(match kind {
        Kind::Bind => MountSpec::Bind {
            target: need_target()?,
            from,
            source: source.unwrap_or_else(|| "/".into()),
            readwrite: !readonly.unwrap_or(true),
        },
        Kind::Cache => {
            let target = need_target()?;
            MountSpec::Cache {
                id: id
                    .filter(|i| !i.is_empty())
                    .unwrap_or_else(|| target.clone()),
                target,
                sharing,
                readonly: readonly.unwrap_or(false),
                from,
                source,
                mode: mode.unwrap_or(0o755),
                uid,
                gid,
            }
        }
        Kind::Tmpfs => MountSpec::Tmpfs {
            target: need_target()?,
            size,
        },
        Kind::Secret => {
            let id = match (
                id.filter(|i| !i.is_empty()),
                source.filter(|s| !s.is_empty()),
            ) {
                (Some(id), Some(src)) if id != src => {
                    return Err(MountError::Conflict {
                        flag: "--mount",
                        problem: format!(
                            "type=secret has both id={id:?} and source={src:?}; they name the \
                             same thing, keep only id="
                        ),
                    })
                }
                (Some(id), _) | (None, Some(id)) => id,
                (None, None) => match &target {
                    Some(t) => t.rsplit('/').next().unwrap_or_default().to_string(),
                    None => return Err(MountError::MissingSecretId),
                },
            };
            let target = match (target, &env) {
                (Some(t), _) => Some(t),
                (None, Some(_)) => None,
                (None, None) => Some(clean_target(&format!("{SECRETS_DIR}/{id}"))?),
            };
            MountSpec::Secret {
                id,
                target,
                env,
                required,
                mode: mode.unwrap_or(0o400),
                uid,
                gid,
            }
        }
    })
}

/// Applies `readonly`/`readwrite`/`required` (already turned into "on") for `kind`.
fn apply_flag(
    kind: Kind,
    key: &str,
    on: bool,
    readonly: &mut Option<bool>,
    required: &mut bool,
) -> Result<(), MountError> {
    let not_for = || MountError::KeyNotForType {
        key: key.to_string(),
        kind: kind.name(),
    };
    match key {
        "required" => {
            if kind != Kind::Secret {
                return Err(not_for());
            }
            *required = on;
        }
        _ => match kind {
            Kind::Bind | Kind::Cache => *readonly = Some(on),
            // Secrets are always read-only: accept saying so, refuse the opposite.
            Kind::Secret if on => {}
            Kind::Secret => {
                return Err(MountError::Conflict {
                    flag: "--mount",
                    problem: "secret mounts are always read-only; remove the rw/readwrite key"
                        .into(),
                })
            }
            Kind::Tmpfs => return Err(not_for()),
        },
    }
    Ok(())
}

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

    /// The directory holding the caches.
    pub fn dir(&self) -> &Path {
        &self.dir
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
    let mut id: Option<String> = None;
    let mut src: Option<String> = None;
    let mut env: Option<String> = None;
    let mut typ: Option<SecretKind> = None;
    for (key, value) in key_values("--secret", text)? {
        let Some(value) = value else {
            return Err(MountError::Syntax {
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
                        return Err(MountError::UnknownType {
                            flag: "--secret",
                            kind: value,
                            expected: "file, env",
                        })
                    }
                })
            }
            _ => {
                return Err(MountError::UnknownKey {
                    flag: "--secret",
                    key,
                    expected: SECRET_KEYS,
                })
            }
        }
    }
    let id = id
        .filter(|i| !i.is_empty())
        .ok_or_else(|| MountError::Syntax {
            flag: "--secret",
            spec: text.to_string(),
            problem: "missing id=NAME (e.g. --secret id=npmrc,src=$HOME/.npmrc)".into(),
        })?;
    let empty = |key: &str| MountError::BadValue {
        flag: "--secret",
        key: key.to_string(),
        value: String::new(),
        expected: "a non-empty value",
    };
    let conflict = |problem: &str| MountError::Conflict {
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
    fn csv_quoting() {
        let f = split_csv("--mount", r#"a=1,"b=2,3",c="x,""y""",,d"#).unwrap();
        assert_eq!(f, vec!["a=1", "b=2,3", r#"c=x,"y""#, "d"]);
        assert!(split_csv("--mount", r#"a="open"#).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_mount_size("1024"), Some(1024));
        assert_eq!(parse_mount_size("64k"), Some(64 << 10));
        assert_eq!(parse_mount_size("64m"), Some(64 << 20));
        assert_eq!(parse_mount_size("64M"), Some(64 << 20));
        assert_eq!(parse_mount_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_mount_size("64mb"), Some(64 << 20));
        assert_eq!(parse_mount_size("1g"), Some(1 << 30));
        assert_eq!(parse_mount_size("1.5g"), Some(3 << 29));
        assert_eq!(parse_mount_size("0"), Some(0));
        for bad in ["", "m", "1x", "-1", "1..5m", ".5m", "5.m", "99999999999p"] {
            assert_eq!(parse_mount_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn targets() {
        assert_eq!(clean_target("cache").unwrap(), "/cache");
        assert_eq!(clean_target("/a//b/./c/").unwrap(), "/a/b/c");
        assert_eq!(clean_target("../../etc/x").unwrap(), "/etc/x");
        assert!(clean_target("/").is_err());
        assert!(clean_target("/a/..").is_err());
        assert!(clean_target("").is_err());
    }

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

    #[test]
    fn modes_and_ids() {
        assert_eq!(parse_mode("mode", "0755").unwrap(), 0o755);
        assert_eq!(parse_mode("mode", "0o700").unwrap(), 0o700);
        assert_eq!(parse_mode("mode", "4755").unwrap(), 0o4755);
        for bad in ["8", "17777", "", "+7", "rwx"] {
            assert!(parse_mode("mode", bad).is_err(), "{bad}");
        }
        assert_eq!(parse_id("uid", "1000").unwrap(), 1000);
        assert!(parse_id("uid", "-1").is_err());
        assert!(parse_id("uid", "abc").is_err());
    }
}
