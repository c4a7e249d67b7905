//! `RUN --mount` values: [`parse_mount`] turns one `--mount=` value (BuildKit's CSV syntax,
//! e.g. `type=cache,target=/root/.gradle,sharing=locked`) into a typed [`MountSpec`].
//!
//! The value is parsed after word expansion (the engine expands `$VAR` with the stage's ARG
//! and ENV first); [`mount_from`] reads only the `from=` stage name, for the planner's
//! dependency graph, before expansion.

use std::fmt;

/// Default target directory of secret mounts: `/run/secrets/<id>`.
pub const SECRETS_DIR: &str = "/run/secrets";

/// Why a `--mount` (or `--secret`) value does not parse. Messages say what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MountSpecError {
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
fn split_csv(flag: &'static str, spec: &str) -> Result<Vec<String>, MountSpecError> {
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
        return Err(MountSpecError::Syntax {
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

/// Splits a `--mount` or `--secret` value (`flag` names it in errors) into fields, and
/// each field into (lower-case key, value); a bare word has no value.
pub fn key_values(
    flag: &'static str,
    spec: &str,
) -> Result<Vec<(String, Option<String>)>, MountSpecError> {
    split_csv(flag, spec)?
        .into_iter()
        .map(|field| {
            let (key, value) = match field.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (field.as_str(), None),
            };
            let key = key.trim().to_ascii_lowercase();
            if key.is_empty() {
                return Err(MountSpecError::Syntax {
                    flag,
                    spec: spec.to_string(),
                    problem: format!("field {field:?} has no key; write key=value"),
                });
            }
            Ok((key, value))
        })
        .collect()
}

/// A `--mount` value `key=value` that does not parse; `expected` says what would.
fn bad_value(
    key: impl Into<String>,
    value: impl Into<String>,
    expected: &'static str,
) -> MountSpecError {
    MountSpecError::BadValue {
        flag: "--mount",
        key: key.into(),
        value: value.into(),
        expected,
    }
}

/// Go's `strconv.ParseBool`, case-insensitively.
fn parse_bool(key: &str, value: &str) -> Result<bool, MountSpecError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Ok(true),
        "0" | "f" | "false" => Ok(false),
        _ => Err(bad_value(key, value, "true or false")),
    }
}

fn parse_mode(key: &str, value: &str) -> Result<u32, MountSpecError> {
    let digits = value.trim();
    let digits = digits
        .strip_prefix("0o")
        .or_else(|| digits.strip_prefix("0O"))
        .unwrap_or(digits);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o7777 && !digits.starts_with('+') => Ok(mode),
        _ => Err(bad_value(
            key,
            value,
            "an octal file mode such as 0755 (at most 7777)",
        )),
    }
}

fn parse_id(key: &str, value: &str) -> Result<u32, MountSpecError> {
    let v = value.trim();
    match v.parse::<u32>() {
        Ok(n) if !v.starts_with('+') => Ok(n),
        _ => Err(bad_value(key, value, "a numeric id such as 1000")),
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
fn clean_target(target: &str) -> Result<String, MountSpecError> {
    if target.trim().is_empty() {
        return Err(MountSpecError::BadTarget {
            target: target.to_string(),
            problem: "is empty; give an absolute path such as /cache",
        });
    }
    if target.contains('\0') {
        return Err(MountSpecError::BadTarget {
            target: target.to_string(),
            problem: "contains a NUL byte",
        });
    }
    let cleaned = crate::pathmatch::clean_path(target);
    if cleaned == "/" {
        return Err(MountSpecError::BadTarget {
            target: target.to_string(),
            problem: "is the root directory, which cannot be a mount point; choose a directory such as /cache",
        });
    }
    Ok(cleaned)
}

/// Parses one `--mount=` value in BuildKit's syntax, e.g.
/// `type=cache,target=/root/.gradle,id=gradle,sharing=locked`.
///
/// Keys are case-insensitive; aliases: `dst`/`destination` = `target`, `src` = `source`,
/// `ro` = `readonly`, `rw` = `readwrite`; `ro`, `rw` and `required` may be bare or take a
/// boolean; `mode` is octal; a value may be double-quoted (CSV quoting). The type defaults to
/// `bind`. A relative target is taken relative to `/`. For secrets, `source`/`src` is an
/// alias of `id` (as in BuildKit). Keys that mean nothing for the mount type are rejected.
pub fn parse_mount(spec: &str) -> Result<MountSpec, MountSpecError> {
    let fields = key_values("--mount", spec)?;
    let kind = spec_kind(&fields)?;
    let mut keys = MountKeys::default();
    for (key, value) in fields {
        match value {
            Some(value) => keys.set(kind, key, value)?,
            None => keys.set_bare(kind, spec, &key)?,
        }
    }
    keys.into_spec(kind)
}

/// The mount type of a `--mount` value's fields: the last `type=`, `bind` without one.
fn spec_kind(fields: &[(String, Option<String>)]) -> Result<Kind, MountSpecError> {
    let mut kind = Kind::Bind;
    for (key, value) in fields {
        if let ("type", Some(value)) = (key.as_str(), value) {
            kind = match mount_kind(value) {
                Some(kind) => kind,
                None if value.trim().eq_ignore_ascii_case("ssh") => {
                    return Err(MountSpecError::SshNotSupported)
                }
                None => {
                    return Err(MountSpecError::UnknownType {
                        flag: "--mount",
                        kind: value.to_string(),
                        expected: MOUNT_TYPES,
                    })
                }
            };
        }
    }
    Ok(kind)
}

/// Whether `key` means something for `kind` mounts (unknown keys are refused elsewhere;
/// `readonly`, `readwrite` and `required` are checked by [`MountKeys::apply_flag`]).
fn key_applies(key: &str, kind: Kind) -> bool {
    match key {
        "source" | "src" => kind != Kind::Tmpfs,
        "from" => matches!(kind, Kind::Bind | Kind::Cache),
        "id" | "mode" | "uid" | "gid" => matches!(kind, Kind::Cache | Kind::Secret),
        "sharing" => kind == Kind::Cache,
        "env" => kind == Kind::Secret,
        "size" => kind == Kind::Tmpfs,
        _ => true,
    }
}

/// The keys of a `--mount` value read so far, before the defaults of its type.
#[derive(Default)]
struct MountKeys {
    target: Option<String>,
    source: Option<String>,
    from: Option<String>,
    id: Option<String>,
    sharing: Sharing,
    readonly: Option<bool>,
    mode: Option<u32>,
    uid: u32,
    gid: u32,
    required: bool,
    env: Option<String>,
    size: Option<u64>,
}

impl MountKeys {
    /// Reads `key=value` for a `kind` mount.
    fn set(&mut self, kind: Kind, key: String, value: String) -> Result<(), MountSpecError> {
        if !key_applies(&key, kind) {
            return Err(MountSpecError::KeyNotForType {
                key,
                kind: kind.name(),
            });
        }
        match key.as_str() {
            "type" => {}
            "target" | "dst" | "destination" => self.target = Some(value),
            "source" | "src" => self.source = Some(value),
            "from" => self.from = Some(value),
            "id" => self.id = Some(value),
            "sharing" => self.sharing = parse_sharing(key, value)?,
            "readonly" | "ro" | "readwrite" | "rw" | "required" => {
                let on = parse_bool(&key, &value)?;
                let on = on != matches!(key.as_str(), "readwrite" | "rw");
                self.apply_flag(kind, &key, on)?;
            }
            "mode" => self.mode = Some(parse_mode(&key, &value)?),
            "uid" => self.uid = parse_id(&key, &value)?,
            "gid" => self.gid = parse_id(&key, &value)?,
            "env" => self.env = Some(parse_env_name(key, value)?),
            "size" => self.size = Some(parse_size(key, value)?),
            _ => {
                return Err(MountSpecError::UnknownKey {
                    flag: "--mount",
                    key,
                    expected: MOUNT_KEYS,
                })
            }
        }
        Ok(())
    }

    /// Reads a bare `key` (no `=value`): only `ro`, `rw` and `required` may be bare.
    fn set_bare(&mut self, kind: Kind, spec: &str, key: &str) -> Result<(), MountSpecError> {
        if !matches!(key, "readonly" | "ro" | "readwrite" | "rw" | "required") {
            return Err(MountSpecError::Syntax {
                flag: "--mount",
                spec: spec.to_string(),
                problem: format!("field {key:?} must be a key=value pair"),
            });
        }
        let on = !matches!(key, "readwrite" | "rw");
        self.apply_flag(kind, key, on)
    }

    /// Applies `readonly`/`readwrite`/`required` (already turned into "on") for `kind`.
    fn apply_flag(&mut self, kind: Kind, key: &str, on: bool) -> Result<(), MountSpecError> {
        let not_for = || MountSpecError::KeyNotForType {
            key: key.to_string(),
            kind: kind.name(),
        };
        match (key, kind) {
            ("required", Kind::Secret) => self.required = on,
            ("required", _) => return Err(not_for()),
            (_, Kind::Bind | Kind::Cache) => self.readonly = Some(on),
            // Secrets are always read-only: accept saying so, refuse the opposite.
            (_, Kind::Secret) if on => {}
            (_, Kind::Secret) => {
                return Err(MountSpecError::Conflict {
                    flag: "--mount",
                    problem: "secret mounts are always read-only; remove the rw/readwrite key"
                        .into(),
                })
            }
            (_, Kind::Tmpfs) => return Err(not_for()),
        }
        Ok(())
    }

    /// The mount, with the defaults of `kind` for what was not given.
    fn into_spec(self, kind: Kind) -> Result<MountSpec, MountSpecError> {
        let target = self.target.as_deref().map(clean_target).transpose()?;
        let need_target = |target: Option<String>| {
            target.ok_or(MountSpecError::MissingTarget { kind: kind.name() })
        };
        Ok(match kind {
            Kind::Bind => MountSpec::Bind {
                target: need_target(target)?,
                from: self.from,
                source: self.source.unwrap_or_else(|| "/".into()),
                readwrite: !self.readonly.unwrap_or(true),
            },
            Kind::Cache => self.cache(need_target(target)?),
            Kind::Tmpfs => MountSpec::Tmpfs {
                target: need_target(target)?,
                size: self.size,
            },
            Kind::Secret => self.secret(target)?,
        })
    }

    /// A `type=cache` mount at `target`.
    fn cache(self, target: String) -> MountSpec {
        MountSpec::Cache {
            id: self
                .id
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| target.clone()),
            target,
            sharing: self.sharing,
            readonly: self.readonly.unwrap_or(false),
            from: self.from,
            source: self.source,
            mode: self.mode.unwrap_or(0o755),
            uid: self.uid,
            gid: self.gid,
        }
    }

    /// A `type=secret` mount, at `target` if given.
    fn secret(self, target: Option<String>) -> Result<MountSpec, MountSpecError> {
        let id = secret_id(self.id, self.source, target.as_deref())?;
        let target = match (target, &self.env) {
            (Some(t), _) => Some(t),
            (None, Some(_)) => None,
            (None, None) => Some(clean_target(&format!("{SECRETS_DIR}/{id}"))?),
        };
        Ok(MountSpec::Secret {
            id,
            target,
            env: self.env,
            required: self.required,
            mode: self.mode.unwrap_or(0o400),
            uid: self.uid,
            gid: self.gid,
        })
    }
}

/// A secret mount's id: `id=`, or `source=` (an alias), or the file name of the target.
fn secret_id(
    id: Option<String>,
    source: Option<String>,
    target: Option<&str>,
) -> Result<String, MountSpecError> {
    match (
        id.filter(|i| !i.is_empty()),
        source.filter(|s| !s.is_empty()),
    ) {
        (Some(id), Some(src)) if id != src => Err(MountSpecError::Conflict {
            flag: "--mount",
            problem: format!(
                "type=secret has both id={id:?} and source={src:?}; they name the same thing, \
                 keep only id="
            ),
        }),
        (Some(id), _) | (None, Some(id)) => Ok(id),
        (None, None) => match target {
            Some(t) => Ok(t.rsplit('/').next().unwrap_or_default().to_string()),
            None => Err(MountSpecError::MissingSecretId),
        },
    }
}

/// `sharing=shared|private|locked`.
fn parse_sharing(key: String, value: String) -> Result<Sharing, MountSpecError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "shared" => Ok(Sharing::Shared),
        "private" => Ok(Sharing::Private),
        "locked" => Ok(Sharing::Locked),
        _ => Err(bad_value(key, value, "shared, private or locked")),
    }
}

/// `env=NAME` of a secret mount: a non-empty name without `=` or NUL.
fn parse_env_name(key: String, value: String) -> Result<String, MountSpecError> {
    if value.is_empty() || value.contains('=') || value.contains('\0') {
        return Err(bad_value(key, value, "an environment variable name"));
    }
    Ok(value)
}

/// `size=` of a tmpfs mount, through [`parse_mount_size`].
fn parse_size(key: String, value: String) -> Result<u64, MountSpecError> {
    parse_mount_size(&value).ok_or(bad_value(
        key,
        value,
        "a size in bytes such as 1024, 64m or 1g",
    ))
}

/// The `from=` of a `--mount` value as written (before word expansion), for the planner:
/// the stage a `type=bind` or `type=cache` mount reads from. Only the CSV syntax is checked
/// here; the whole value is parsed by [`parse_mount`] once, after expansion, when the RUN
/// runs.
pub fn mount_from(spec: &str) -> Result<Option<String>, MountSpecError> {
    let mut kind = Some(Kind::Bind);
    let mut from = None;
    for (key, value) in key_values("--mount", spec)? {
        match (key.as_str(), value) {
            ("type", Some(value)) => kind = mount_kind(&value),
            ("from", Some(value)) => from = Some(value),
            _ => {}
        }
    }
    Ok(from.filter(|_| matches!(kind, Some(Kind::Bind | Kind::Cache))))
}

/// The mount type named by a `type=` value, if it is a known one.
fn mount_kind(value: &str) -> Option<Kind> {
    match value.trim().to_ascii_lowercase().as_str() {
        "bind" => Some(Kind::Bind),
        "cache" => Some(Kind::Cache),
        "secret" => Some(Kind::Secret),
        "tmpfs" => Some(Kind::Tmpfs),
        _ => None,
    }
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
    fn mount_from_reads_only_from_of_bind_and_cache() {
        assert_eq!(mount_from("from=a,target=/x").unwrap(), Some("a".into()));
        assert_eq!(
            mount_from("TYPE=Cache,FROM=a,from=b,colour=blue").unwrap(),
            Some("b".into())
        );
        assert_eq!(mount_from("type=secret,id=s,from=a").unwrap(), None);
        assert_eq!(mount_from("type=$T,from=a").unwrap(), None);
        assert_eq!(mount_from("type=bind,target=/x,from").unwrap(), None);
        assert_eq!(mount_from("from=$STAGE").unwrap(), Some("$STAGE".into()));
        assert!(mount_from("from=\"a").is_err());
        assert!(mount_from("=a").is_err());
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
