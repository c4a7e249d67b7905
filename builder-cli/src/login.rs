//! `executor login`: stores registry credentials in `$DOCKER_CONFIG/config.json` (default
//! `/kaniko/.docker/config.json`), keeping everything else in the file.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use std::path::Path;

/// The `executor login` command line.
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// The registry (host[:port]).
    registry: String,
    /// User name.
    #[arg(short = 'u', long)]
    username: String,
    /// Password (prefer --password-stdin).
    #[arg(short = 'p', long)]
    password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
}

/// Adds the credentials to the config file, written anew with mode 0600.
pub fn run(args: LoginArgs) -> Result<()> {
    let password = password(&args)?;
    let dir = docker_config_dir();
    let path = dir.join("config.json");
    let mut config = read_config(&path)?;
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{}:{password}", args.username),
    );
    add_auth(&mut config, &path, &args.registry, auth)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    write_config(&path, &config)?;
    eprintln!(
        "login succeeded: credentials for {} stored in {}",
        args.registry,
        path.display()
    );
    Ok(())
}

/// The password of `--password` or `--password-stdin` (exactly one of them).
fn password(args: &LoginArgs) -> Result<String> {
    use std::io::Read;
    match (&args.password, args.password_stdin) {
        (Some(p), false) => Ok(p.clone()),
        (None, true) => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the password from standard input")?;
            Ok(text.trim_end_matches(['\n', '\r']).to_string())
        }
        _ => bail!("pass exactly one of --password and --password-stdin"),
    }
}

/// The config file's JSON, or an empty object when there is no file.
fn read_config(path: &Path) -> Result<Value> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({})),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Sets `auths.REGISTRY.auth` in `config` (read from `path`, named in errors).
fn add_auth(config: &mut Value, path: &Path, registry: &str, auth: String) -> Result<()> {
    let Some(object) = config.as_object_mut() else {
        bail!("{} does not hold a JSON object", path.display());
    };
    let auths = object.entry("auths").or_insert_with(|| json!({}));
    let Some(auths) = auths.as_object_mut() else {
        bail!("{}: \"auths\" is not an object", path.display());
    };
    auths.insert(registry.to_string(), json!({ "auth": auth }));
    Ok(())
}

/// Writes `config` to `path` through a temporary file (mode 0600) renamed into place.
fn write_config(path: &Path, config: &Value) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(config)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// kaniko's registry credentials file: `$DOCKER_CONFIG/config.json`, by default
/// `/kaniko/.docker/config.json`.
pub fn docker_config_dir() -> std::path::PathBuf {
    std::env::var_os("DOCKER_CONFIG")
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("/kaniko/.docker"))
}
