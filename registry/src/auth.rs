//! Credentials from docker's `config.json` (`auths`, `credHelpers` and `credsStore`), then
//! from podman's and buildah's `auth.json` files (containers-auth.json(5)):
//! `REGISTRY_AUTH_FILE` when set, else `$XDG_RUNTIME_DIR/containers/auth.json` and then
//! `$XDG_CONFIG_HOME/containers/auth.json` (`~/.config/containers/auth.json`). The first
//! file with a credential for the registry wins. Keys of `auth.json` that name a namespace
//! (`quay.io/team/app`) rather than a registry are not used: credentials are looked up per
//! registry.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde::Deserialize;

use crate::error::{Error, Result};

/// The key docker uses for docker hub in `auths` and the server URL it passes to helpers.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// A credential for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Username and password (or personal access token).
    Basic {
        /// User name.
        username: String,
        /// Password; never printed by `Debug`.
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken`), exchanged at the token endpoint.
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

#[derive(Clone, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

#[derive(Default, Deserialize)]
struct RawConfig {
    #[serde(default)]
    auths: Option<BTreeMap<String, AuthEntry>>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

/// Parsed docker `config.json` (only the parts relevant to registry auth).
///
/// `Debug` prints the file path and registry keys, never secrets.
#[derive(Clone, Default)]
pub struct DockerConfig {
    path: Option<PathBuf>,
    auths: BTreeMap<String, AuthEntry>,
    cred_helpers: BTreeMap<String, String>,
    creds_store: Option<String>,
    helper_search_path: Option<OsString>,
    /// An `auth.json` of podman: keys with a path are namespaces, not registries.
    auth_file: bool,
    /// The `auth.json` files consulted, in order, when this config has no credential.
    fallbacks: Vec<DockerConfig>,
}

impl fmt::Debug for DockerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerConfig")
            .field("path", &self.path)
            .field("auths", &self.auths.keys().collect::<Vec<_>>())
            .field("cred_helpers", &self.cred_helpers)
            .field("creds_store", &self.creds_store)
            .field("fallbacks", &self.fallbacks)
            .finish()
    }
}

/// Strips scheme and path from an `auths` key: `https://host:5000/v1/` → `host:5000`.
fn normalize_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.split('/').next().unwrap_or(k);
    k.to_ascii_lowercase()
}

fn is_docker_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

impl DockerConfig {
    /// The default config location: `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            return Some(PathBuf::from(dir).join("config.json"));
        }
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".docker").join("config.json"))
    }

    /// The `auth.json` files podman and buildah read, in their order, as `var` (an
    /// environment lookup) gives them: `REGISTRY_AUTH_FILE` alone when set, else
    /// `$XDG_RUNTIME_DIR/containers/auth.json` and `$XDG_CONFIG_HOME/containers/auth.json`
    /// (`$HOME/.config/containers/auth.json` when `XDG_CONFIG_HOME` is unset).
    pub fn podman_auth_paths(var: impl Fn(&str) -> Option<OsString>) -> Vec<PathBuf> {
        let var = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        if let Some(file) = var("REGISTRY_AUTH_FILE") {
            return vec![file];
        }
        let config_home = var("XDG_CONFIG_HOME").or_else(|| var("HOME").map(|h| h.join(".config")));
        [var("XDG_RUNTIME_DIR"), config_home]
            .into_iter()
            .flatten()
            .map(|dir| dir.join("containers").join("auth.json"))
            .collect()
    }

    /// Loads `path`, or the [default path](Self::default_path) when `None`, and then the
    /// [podman `auth.json` files](Self::podman_auth_paths) of the process environment as
    /// fallbacks.
    ///
    /// A missing file gives an empty config; a malformed one is an error naming the file.
    pub fn load(path: Option<&Path>) -> Result<DockerConfig> {
        Self::load_docker(path)?
            .with_auth_files(&Self::podman_auth_paths(|name| std::env::var_os(name)))
    }

    /// This config with the `auth.json` files `paths` consulted after it, in order, for
    /// registries it has no credential for. Missing files (and this config's own file) are
    /// skipped; a malformed one is an error naming the file.
    pub fn with_auth_files(mut self, paths: &[PathBuf]) -> Result<DockerConfig> {
        for path in paths {
            if self.path.as_deref() == Some(path.as_path())
                || self
                    .fallbacks
                    .iter()
                    .any(|f| f.path.as_deref() == Some(path.as_path()))
            {
                continue;
            }
            let file = Self::load_docker(Some(path))?;
            if file.is_empty() {
                continue;
            }
            self.fallbacks.push(DockerConfig {
                auth_file: true,
                helper_search_path: self.helper_search_path.clone(),
                ..file
            });
        }
        Ok(self)
    }

    fn is_empty(&self) -> bool {
        self.auths.is_empty() && self.cred_helpers.is_empty() && self.creds_store.is_none()
    }

    /// Loads one docker-format file (`path`, else the default path), without fallbacks.
    fn load_docker(path: Option<&Path>) -> Result<DockerConfig> {
        let path = match path {
            Some(p) => Some(p.to_path_buf()),
            None => Self::default_path(),
        };
        let Some(path) = path else {
            return Ok(DockerConfig::default());
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_json(&text, Some(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DockerConfig {
                path: Some(path),
                ..DockerConfig::default()
            }),
            Err(e) => Err(Error::ConfigRead { path, source: e }),
        }
    }

    /// Parses config JSON text; `path` is remembered for error messages.
    pub fn from_json(text: &str, path: Option<PathBuf>) -> Result<DockerConfig> {
        let shown = path
            .clone()
            .unwrap_or_else(|| PathBuf::from("<docker config>"));
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            serde_json::from_str(text).map_err(|e| Error::ConfigParse {
                path: shown,
                reason: e.to_string(),
            })?
        };
        Ok(DockerConfig {
            path,
            auths: raw.auths.unwrap_or_default(),
            cred_helpers: raw.cred_helpers.unwrap_or_default(),
            creds_store: raw.creds_store.filter(|s| !s.is_empty()),
            helper_search_path: None,
            auth_file: false,
            fallbacks: Vec::new(),
        })
    }

    /// Uses `search_path` (a `PATH`-style list) instead of `$PATH` to find
    /// `docker-credential-<name>` helpers.
    pub fn with_helper_search_path(mut self, search_path: impl Into<OsString>) -> DockerConfig {
        let search_path = search_path.into();
        for fallback in &mut self.fallbacks {
            fallback.helper_search_path = Some(search_path.clone());
        }
        self.helper_search_path = Some(search_path);
        self
    }

    /// The file this config was (or would have been) loaded from.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Human-readable description of where credentials are looked up, for error messages.
    pub fn describe_location(&self) -> String {
        let own = match &self.path {
            Some(p) => p.display().to_string(),
            None => "docker config.json (neither DOCKER_CONFIG nor HOME is set)".to_string(),
        };
        let files: Vec<String> = self
            .fallbacks
            .iter()
            .filter_map(|f| f.path.as_ref().map(|p| p.display().to_string()))
            .collect();
        if files.is_empty() {
            own
        } else {
            format!("{own} (then {})", files.join(", "))
        }
    }

    /// Finds the credential for `registry` (`host[:port]`, `docker.io` for docker hub): in
    /// this config, else in the first `auth.json` fallback that has one.
    ///
    /// Order in each file: a `credHelpers` entry for the registry, then `credsStore`, then
    /// `auths`. A missing `credsStore` helper binary is skipped (falls back to `auths`); a
    /// missing helper named in `credHelpers` is an error.
    pub fn credential_for(&self, registry: &str) -> Result<Option<Credential>> {
        if let Some(c) = self.own_credential(registry)? {
            return Ok(Some(c));
        }
        for fallback in &self.fallbacks {
            if let Some(c) = fallback.own_credential(registry)? {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// Whether `key` (of `auths` or `credHelpers`) names a namespace of an `auth.json`
    /// (`quay.io/team`) rather than a registry.
    fn is_namespace_key(&self, key: &str) -> bool {
        self.auth_file && !key.contains("://") && key.contains('/')
    }

    /// The credential for `registry` in this file alone.
    fn own_credential(&self, registry: &str) -> Result<Option<Credential>> {
        let host = registry.to_ascii_lowercase();
        let hub = is_docker_hub(&host);
        let server_url = if hub {
            DOCKER_HUB_AUTH_KEY.to_string()
        } else {
            host.clone()
        };
        let key_matches = |k: &str| {
            if self.is_namespace_key(k) {
                return false;
            }
            let n = normalize_key(k);
            if hub {
                is_docker_hub(&n)
            } else {
                n == host
            }
        };

        if let Some((_, helper)) = self
            .cred_helpers
            .iter()
            .find(|(k, _)| k.as_str() == registry || key_matches(k))
        {
            return self.run_helper(helper, &server_url, false);
        }
        if let Some(store) = &self.creds_store {
            if let Some(c) = self.run_helper(store, &server_url, true)? {
                return Ok(Some(c));
            }
        }
        // Prefer an exact key, then any key that normalises to the registry.
        let entry = self
            .auths
            .iter()
            .find(|(k, _)| k.as_str() == registry || (hub && k.as_str() == DOCKER_HUB_AUTH_KEY))
            .or_else(|| self.auths.iter().find(|(k, _)| key_matches(k)));
        match entry {
            Some((key, e)) => self.entry_credential(key, e),
            None => Ok(None),
        }
    }

    fn entry_credential(&self, key: &str, e: &AuthEntry) -> Result<Option<Credential>> {
        let nonempty = |s: &Option<String>| s.clone().filter(|v| !v.is_empty());
        if let Some(tok) = nonempty(&e.identitytoken) {
            return Ok(Some(Credential::IdentityToken(tok)));
        }
        if let Some(auth) = nonempty(&e.auth) {
            let bad = |reason: String| Error::ConfigParse {
                path: self
                    .path
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("<docker config>")),
                reason: format!("auths[{key:?}].auth: {reason}"),
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|e| bad(format!("not valid base64 ({e})")))?;
            let decoded =
                String::from_utf8(decoded).map_err(|_| bad("not valid UTF-8".to_string()))?;
            let Some((user, pass)) = decoded.split_once(':') else {
                return Err(bad("expected base64 of \"username:password\"".to_string()));
            };
            return Ok(Some(Credential::Basic {
                username: user.to_string(),
                password: pass.to_string(),
            }));
        }
        if let (Some(u), Some(p)) = (nonempty(&e.username), e.password.clone()) {
            return Ok(Some(Credential::Basic {
                username: u,
                password: p,
            }));
        }
        Ok(None)
    }

    fn run_helper(
        &self,
        helper: &str,
        server_url: &str,
        missing_ok: bool,
    ) -> Result<Option<Credential>> {
        let herr = |reason: String| Error::CredentialHelper {
            helper: helper.to_string(),
            server: server_url.to_string(),
            reason,
        };
        if helper.is_empty() || helper.contains('/') {
            return Err(herr(format!(
                "invalid helper name {helper:?} in {}",
                self.describe_location()
            )));
        }
        let program = format!("docker-credential-{helper}");
        let resolved = match &self.helper_search_path {
            Some(sp) => std::env::split_paths(sp)
                .map(|d| d.join(&program))
                .find(|p| p.is_file()),
            None => Some(PathBuf::from(&program)),
        };
        let Some(resolved) = resolved else {
            if missing_ok {
                return Ok(None);
            }
            return Err(herr(format!(
                "{program} not found; install it or remove the entry from {}",
                self.describe_location()
            )));
        };
        let child = Command::new(&resolved)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && missing_ok => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(herr(format!(
                    "{program} not found on PATH; install it or remove the entry from {}",
                    self.describe_location()
                )))
            }
            Err(e) => return Err(herr(format!("cannot run {program}: {e}"))),
        };
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that exits without reading stdin is reported via its exit status.
            let _ = stdin.write_all(server_url.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| herr(format!("waiting for {program}: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let text = format!("{} {}", stdout.trim(), stderr.trim());
            if text.to_ascii_lowercase().contains("credentials not found") {
                return Ok(None);
            }
            return Err(herr(format!(
                "{program} get exited with {}: {}",
                out.status,
                text.trim()
            )));
        }
        #[derive(Deserialize)]
        struct HelperOut {
            #[serde(rename = "Username", default)]
            username: String,
            #[serde(rename = "Secret", default)]
            secret: String,
        }
        let parsed: HelperOut = serde_json::from_str(&stdout)
            .map_err(|e| herr(format!("{program} get printed invalid JSON: {e}")))?;
        if parsed.secret.is_empty() {
            return Ok(None);
        }
        if parsed.username == "<token>" {
            return Ok(Some(Credential::IdentityToken(parsed.secret)));
        }
        Ok(Some(Credential::Basic {
            username: parsed.username,
            password: parsed.secret,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn basic(u: &str, p: &str) -> Option<Credential> {
        Some(Credential::Basic {
            username: u.into(),
            password: p.into(),
        })
    }

    #[test]
    fn auths_key_forms() {
        let json = format!(
            r#"{{"auths":{{
                "127.0.0.1:5000":{{"auth":"{}"}},
                "https://reg.example.com:8443":{{"username":"u2","password":"p2"}},
                "http://old.example.com/v1/":{{"auth":"{}"}},
                "https://index.docker.io/v1/":{{"auth":"{}"}},
                "tok.example.com":{{"identitytoken":"refresh-me","auth":""}},
                "empty.example.com":{{}}
            }}}}"#,
            b64("u1:p1"),
            b64("u3:p:3"),
            b64("hub:hubpw")
        );
        let c = DockerConfig::from_json(&json, None).unwrap();
        assert_eq!(
            c.credential_for("127.0.0.1:5000").unwrap(),
            basic("u1", "p1")
        );
        assert_eq!(
            c.credential_for("reg.example.com:8443").unwrap(),
            basic("u2", "p2")
        );
        assert_eq!(
            c.credential_for("old.example.com").unwrap(),
            basic("u3", "p:3")
        );
        assert_eq!(
            c.credential_for("docker.io").unwrap(),
            basic("hub", "hubpw")
        );
        assert_eq!(
            c.credential_for("tok.example.com").unwrap(),
            Some(Credential::IdentityToken("refresh-me".into()))
        );
        assert_eq!(c.credential_for("empty.example.com").unwrap(), None);
        assert_eq!(c.credential_for("127.0.0.1:5001").unwrap(), None);
        assert_eq!(c.credential_for("reg.example.com").unwrap(), None);
    }

    #[test]
    fn podman_auth_files_are_found_where_podman_looks() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let all = &[
            ("REGISTRY_AUTH_FILE", "/explicit/auth.json"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
            ("XDG_CONFIG_HOME", "/home/u/.cfg"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(
            DockerConfig::podman_auth_paths(env(all)),
            [PathBuf::from("/explicit/auth.json")]
        );
        assert_eq!(
            DockerConfig::podman_auth_paths(env(&all[1..])),
            [
                PathBuf::from("/run/user/1000/containers/auth.json"),
                PathBuf::from("/home/u/.cfg/containers/auth.json"),
            ]
        );
        assert_eq!(
            DockerConfig::podman_auth_paths(env(&[("HOME", "/home/u"), ("XDG_RUNTIME_DIR", "")])),
            [PathBuf::from("/home/u/.config/containers/auth.json")]
        );
        assert!(DockerConfig::podman_auth_paths(env(&[])).is_empty());
    }

    #[test]
    fn auth_json_files_are_consulted_after_the_docker_config_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, auths: &[(&str, &str)]| {
            let entries: Vec<String> = auths
                .iter()
                .map(|(k, up)| format!("{k:?}:{{\"auth\":\"{}\"}}", b64(up)))
                .collect();
            let path = dir.path().join(name);
            std::fs::write(&path, format!("{{\"auths\":{{{}}}}}", entries.join(","))).unwrap();
            path
        };
        let docker = write("config.json", &[("a.io", "docker:a")]);
        let runtime = write(
            "runtime-auth.json",
            &[
                ("a.io", "runtime:a"),
                ("b.io", "runtime:b"),
                ("d.io/team/app", "ns:d"),
            ],
        );
        let config = write(
            "config-auth.json",
            &[("b.io", "config:b"), ("c.io", "config:c")],
        );
        let missing = dir.path().join("missing.json");
        let c = DockerConfig::load_docker(Some(&docker))
            .unwrap()
            .with_auth_files(&[runtime.clone(), missing, config.clone(), docker.clone()])
            .unwrap();
        assert_eq!(c.credential_for("a.io").unwrap(), basic("docker", "a"));
        assert_eq!(c.credential_for("b.io").unwrap(), basic("runtime", "b"));
        assert_eq!(c.credential_for("c.io").unwrap(), basic("config", "c"));
        // A namespace's credential is not the registry's.
        assert_eq!(c.credential_for("d.io").unwrap(), None);
        let where_ = c.describe_location();
        assert_eq!(
            where_,
            format!(
                "{} (then {}, {})",
                docker.display(),
                runtime.display(),
                config.display()
            )
        );

        std::fs::write(&config, "{broken").unwrap();
        let err = DockerConfig::default()
            .with_auth_files(std::slice::from_ref(&config))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&config.display().to_string()), "{err}");
    }

    #[test]
    fn bad_auth_field_names_file_and_key() {
        let c = DockerConfig::from_json(
            r#"{"auths":{"r.io":{"auth":"!!!"}}}"#,
            Some("/x/config.json".into()),
        )
        .unwrap();
        let msg = c.credential_for("r.io").unwrap_err().to_string();
        assert!(
            msg.contains("/x/config.json") && msg.contains("r.io"),
            "{msg}"
        );
    }

    #[test]
    fn load_missing_and_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        let c = DockerConfig::load(Some(&missing)).unwrap();
        assert_eq!(c.credential_for("docker.io").unwrap(), None);
        assert_eq!(c.path(), Some(missing.as_path()));

        let bad = dir.path().join("config.json");
        std::fs::write(&bad, "{not json").unwrap();
        let msg = DockerConfig::load(Some(&bad)).unwrap_err().to_string();
        assert!(msg.contains(&bad.display().to_string()), "{msg}");
        assert!(msg.contains("malformed"), "{msg}");

        std::fs::write(&bad, r#"{"auths":null,"credsStore":""}"#).unwrap();
        assert!(DockerConfig::load(Some(&bad)).is_ok());
    }

    #[test]
    fn debug_hides_secrets() {
        let c = Credential::Basic {
            username: "me".into(),
            password: "s3cret".into(),
        };
        let d = format!("{c:?}");
        assert!(d.contains("me") && !d.contains("s3cret"), "{d}");
        let t = format!("{:?}", Credential::IdentityToken("tok123".into()));
        assert!(!t.contains("tok123"));
        let cfg = DockerConfig::from_json(
            &format!(r#"{{"auths":{{"r.io":{{"auth":"{}"}}}}}}"#, b64("a:hidden")),
            None,
        )
        .unwrap();
        let d = format!("{cfg:?}");
        assert!(d.contains("r.io") && !d.contains("hidden") && !d.contains(&b64("a:hidden")));
    }

    #[cfg(unix)]
    fn write_helper(dir: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let script = dir.join("docker-credential-test");
        let text = r#"#!/bin/sh
[ "$1" = get ] || exit 2
read -r server
case "$server" in
  helper.example.com) echo '{"ServerURL":"helper.example.com","Username":"hu","Secret":"hs"}' ;;
  https://index.docker.io/v1/) echo '{"ServerURL":"x","Username":"<token>","Secret":"idtok"}' ;;
  broken.example.com) echo 'boom' >&2; exit 3 ;;
  *) echo 'credentials not found in native keychain'; exit 1 ;;
esac
"#;
        // Staged, then copied by a `cp` child: a file this multi-threaded test process had
        // open for writing could be inherited by a concurrent test's forked child until it
        // execs, and running the helper meanwhile fails with ETXTBSY ("Text file busy").
        let staged = dir.join("helper-source");
        std::fs::write(&staged, text).unwrap();
        let cp = std::process::Command::new("cp")
            .arg(&staged)
            .arg(&script)
            .status()
            .unwrap();
        assert!(cp.success());
        std::fs::remove_file(&staged).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn credential_helpers() {
        let dir = tempfile::tempdir().unwrap();
        write_helper(dir.path());
        // The fake helper is "on PATH": a PATH-style list with the temp dir first.
        let mut sp = OsString::from(dir.path());
        if let Some(p) = std::env::var_os("PATH") {
            sp.push(":");
            sp.push(p);
        }
        let json = format!(
            r#"{{"auths":{{"other.example.com":{{"auth":"{}"}}}},
                "credHelpers":{{"helper.example.com":"test","broken.example.com":"test","missing.example.com":"nonexistent-xyz"}},
                "credsStore":"test"}}"#,
            b64("fu:fp")
        );
        let c = DockerConfig::from_json(&json, Some("/cfg/config.json".into()))
            .unwrap()
            .with_helper_search_path(sp);
        assert_eq!(
            c.credential_for("helper.example.com").unwrap(),
            basic("hu", "hs")
        );
        // credsStore is used for docker hub; Username <token> means identity token.
        assert_eq!(
            c.credential_for("docker.io").unwrap(),
            Some(Credential::IdentityToken("idtok".into()))
        );
        // credsStore has nothing for this one: falls back to auths.
        assert_eq!(
            c.credential_for("other.example.com").unwrap(),
            basic("fu", "fp")
        );
        assert_eq!(c.credential_for("nothing.example.com").unwrap(), None);
        let msg = c
            .credential_for("broken.example.com")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("docker-credential-test") && msg.contains("boom"),
            "{msg}"
        );
        let msg = c
            .credential_for("missing.example.com")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("docker-credential-nonexistent-xyz") && msg.contains("/cfg/config.json"),
            "{msg}"
        );

        // A missing credsStore helper is skipped.
        let c = DockerConfig::from_json(
            &format!(
                r#"{{"auths":{{"r.io":{{"auth":"{}"}}}},"credsStore":"nonexistent-xyz"}}"#,
                b64("a:b")
            ),
            None,
        )
        .unwrap()
        .with_helper_search_path(dir.path());
        assert_eq!(c.credential_for("r.io").unwrap(), basic("a", "b"));
    }
}
