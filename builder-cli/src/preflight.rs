//! Checks before building, so that a mistake that would only show at the end fails in
//! seconds instead: every destination is a valid reference, and
//! (kaniko's push-permission check) each destination registry is reachable and accepts a
//! push with the credentials at hand.

use anyhow::{anyhow, Context, Result};
use ocibuild_core::{BuildOptions, Reference};
use ocibuild_registry::{Client, ClientOptions, DockerConfig, Error};

/// The destinations of `opts`, parsed; the first invalid one is an error naming it.
pub fn destinations(opts: &BuildOptions) -> Result<Vec<Reference>> {
    opts.destinations
        .iter()
        .map(|d| Reference::parse(d).with_context(|| format!("--destination {d:?}")))
        .collect()
}

/// kaniko's push-permission check: for each repository pushed to (once each), an upload
/// started there with the build's push credentials and cancelled.
pub async fn check_push_permission(opts: &BuildOptions) -> Result<()> {
    let targets = push_targets(opts)?;
    if targets.is_empty() {
        return Ok(());
    }
    let client = push_client(opts)?;
    let mut checked: Vec<(String, String)> = Vec::new();
    for (given, target) in targets {
        let repository = (target.registry.clone(), target.repository.clone());
        if checked.contains(&repository) {
            continue;
        }
        client
            .check_push_permission(&target)
            .await
            .map_err(|e| explain(e, &given, &target))?;
        checked.push(repository);
    }
    Ok(())
}

/// What kaniko checks, each with the flag that named it (`--destination REF`): the
/// destinations; with `--no-push`, the `--cache-repo` that cached layers are still pushed
/// to (none in an `oci:` layout, none with `--no-push-cache`).
fn push_targets(opts: &BuildOptions) -> Result<Vec<(String, Reference)>> {
    if !opts.no_push {
        let given = opts
            .destinations
            .iter()
            .map(|d| format!("--destination {d}"));
        return Ok(given.zip(destinations(opts)?).collect());
    }
    match &opts.cache_repo {
        Some(repo) if opts.cache && !opts.no_push_cache && !repo.starts_with("oci:") => {
            let reference =
                Reference::parse(repo).with_context(|| format!("--cache-repo {repo:?}"))?;
            Ok(vec![(format!("--cache-repo {repo}"), reference)])
        }
        _ => Ok(Vec::new()),
    }
}

/// The registry client a build pushes with: the build's registry settings and
/// credentials, plain HTTP with `--insecure` and for the `--insecure-registry` hosts.
fn push_client(opts: &BuildOptions) -> Result<Client> {
    let docker_config = DockerConfig::load(opts.docker_config.as_deref())
        .context("reading registry credentials")?;
    let mut options = ClientOptions {
        insecure_all: opts.insecure,
        docker_config,
        ..opts.registry.clone()
    };
    options
        .insecure_registries
        .extend(opts.insecure_registries.iter().cloned());
    Client::new(options).context("setting up the registry client")
}

/// The error of a failed check of `dest` (`given` as `--destination REF`): one short line
/// for a registry that cannot be reached (a wrong host or port), else the registry's
/// error, saying what was checked.
fn explain(e: Error, given: &str, dest: &Reference) -> anyhow::Error {
    if let Error::Http {
        registry,
        source,
        hint,
        ..
    } = &e
    {
        if source.is_connect() {
            return anyhow!(
                "cannot connect to registry {registry} ({given}): {}; {hint}",
                innermost(source)
            );
        }
    }
    anyhow::Error::new(e).context(format!(
        "cannot push to {dest} (checked before building; --skip-push-permission-check skips \
         the check)"
    ))
}

/// The message of the innermost cause of `e` (`Connection refused (os error 111)`).
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
