//! Registry & TLS flags, of builds (`RegistryFlags`) and of `executor push`
//! (`RegistryTlsArgs`); both share the TLS flags (`TlsFlags`).

use super::Mode;
use anyhow::{bail, Context, Result};
use clap::Args;
use ocibuild_core::BuildOptions;
use ocibuild_registry::ClientOptions;
use std::path::PathBuf;
use std::time::Duration;

/// How a build reaches registries: plain HTTP, TLS, mirrors, retries and the timeout.
#[derive(Args, Debug)]
#[command(next_help_heading = "Registry & TLS")]
pub struct RegistryFlags {
    /// Push to (and pull from the destination registries over) plain HTTP.
    #[arg(long)]
    insecure: bool,
    /// Pull base images over plain HTTP.
    #[arg(long)]
    insecure_pull: bool,
    /// A registry to always use over plain HTTP; repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registries: Vec<String>,
    /// Skip TLS verification when pulling base images.
    #[arg(long)]
    skip_tls_verify_pull: bool,
    #[command(flatten)]
    tls: TlsFlags,
    /// A mirror for docker.io pulls; repeatable.
    #[arg(long = "registry-mirror", value_name = "HOST")]
    registry_mirrors: Vec<String>,
    /// Pull from replacements: `ORIGINAL=REPLACEMENT[;REPLACEMENT...]`; repeatable.
    #[arg(long = "registry-map", value_name = "ORIGINAL=REPLACEMENTS")]
    registry_maps: Vec<String>,
    /// Do not fall back to the original registry when mirrors/maps fail.
    #[arg(long)]
    skip_default_registry_fallback: bool,
    /// Retries of a failing push request [default: 3, as every registry request]
    #[arg(long, value_name = "N")]
    push_retry: Option<u32>,
    /// Retries of a failing base image download [default: 3, as every registry request]
    #[arg(long, value_name = "N")]
    image_download_retry: Option<u32>,
    #[command(flatten)]
    timeout: TimeoutFlag,
}

/// The idle timeout of registry requests.
#[derive(Args, Debug)]
pub struct TimeoutFlag {
    /// Fail a registry request attempt (and retry it) after this long without data.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    registry_timeout: String,
}

/// TLS verification and certificates, per registry or for all.
#[derive(Args, Debug)]
pub struct TlsFlags {
    /// Skip TLS verification for every registry.
    #[arg(long)]
    skip_tls_verify: bool,
    /// Skip TLS verification for this registry; repeatable.
    #[arg(long = "skip-tls-verify-registry", value_name = "HOST[:PORT]")]
    skip_tls_verify_registry: Vec<String>,
    /// Trust this CA for a registry: `REGISTRY=PATH.pem`; repeatable.
    #[arg(long = "registry-certificate", value_name = "REGISTRY=PATH")]
    registry_certificates: Vec<String>,
    /// Client certificate for a registry (mTLS): `REGISTRY=CERT.pem,KEY.pem`; repeatable.
    #[arg(long = "registry-client-cert", value_name = "REGISTRY=CERT,KEY")]
    registry_client_certs: Vec<String>,
}

/// Registry connection flags of commands that only talk to registries (`executor push`).
#[derive(Args, Debug)]
pub struct RegistryTlsArgs {
    /// Use plain HTTP for every registry.
    #[arg(long)]
    insecure: bool,
    /// A registry to always use over plain HTTP; repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registries: Vec<String>,
    #[command(flatten)]
    tls: TlsFlags,
    /// Retries of a failing push request [default: 3]
    #[arg(long, value_name = "N")]
    push_retry: Option<u32>,
    #[command(flatten)]
    timeout: TimeoutFlag,
}

impl RegistryFlags {
    /// Sets plain HTTP, the registry client settings and (for `executor` without
    /// `$DOCKER_CONFIG`) kaniko's credentials file.
    pub fn apply(&self, opts: &mut BuildOptions, mode: Mode) -> Result<()> {
        opts.insecure = self.insecure;
        opts.insecure_pull = self.insecure_pull;
        opts.insecure_registries = self.insecure_registries.clone();
        opts.skip_tls_verify_pull = self.skip_tls_verify_pull;
        opts.docker_config = match (mode, std::env::var_os("DOCKER_CONFIG")) {
            (Mode::Executor, None) => Some(PathBuf::from("/kaniko/.docker/config.json")),
            _ => None,
        };
        opts.registry = self.client_options()?;
        Ok(())
    }

    /// The client settings of commands that only pull (the warmer): plain HTTP with
    /// `--insecure` or `--insecure-pull`, TLS verification skipped for every registry with
    /// `--skip-tls-verify` or `--skip-tls-verify-pull`, and the TLS, mirror and retry flags.
    pub fn pull_client_options(&self) -> Result<ClientOptions> {
        let mut options = self.client_options()?;
        options.insecure_all = self.insecure || self.insecure_pull;
        options.insecure_registries = self.insecure_registries.clone();
        options.skip_tls_verify_all |= self.skip_tls_verify_pull;
        Ok(options)
    }

    /// The registry client settings of the TLS, mirror and retry flags.
    fn client_options(&self) -> Result<ClientOptions> {
        let mut options = ClientOptions::default();
        self.tls.apply(&mut options)?;
        options.mirrors = self.registry_mirrors.clone();
        options.skip_default_registry_fallback = self.skip_default_registry_fallback;
        options.push_retries = self.push_retry;
        options.pull_retries = self.image_download_retry;
        options.idle_timeout = self.timeout.duration()?;
        for text in &self.registry_maps {
            let (original, replacements) = split_pair("--registry-map", text)?;
            let replacements = replacements
                .split(';')
                .filter(|r| !r.is_empty())
                .map(str::to_string)
                .collect();
            options
                .registry_map
                .push((original.to_string(), replacements));
        }
        Ok(options)
    }
}

impl RegistryTlsArgs {
    /// The registry client settings of these flags (credentials not included).
    pub fn client_options(&self) -> Result<ClientOptions> {
        let mut options = ClientOptions::default();
        self.tls.apply(&mut options)?;
        options.insecure_all = self.insecure;
        options.insecure_registries = self.insecure_registries.clone();
        options.push_retries = self.push_retry;
        options.idle_timeout = self.timeout.duration()?;
        Ok(options)
    }
}

impl TimeoutFlag {
    /// The idle timeout given (Go duration syntax, as `--cache-ttl`: `60s`, `2m`, `1.5s`).
    fn duration(&self) -> Result<Duration> {
        let d = ocibuild_cache::parse_ttl(&self.registry_timeout).context("--registry-timeout")?;
        if d.is_zero() {
            bail!(
                "--registry-timeout {:?}: must be longer than 0",
                self.registry_timeout
            );
        }
        Ok(d)
    }
}

impl TlsFlags {
    /// Sets TLS verification, CAs and client certificates in `options`.
    fn apply(&self, options: &mut ClientOptions) -> Result<()> {
        options.skip_tls_verify = self.skip_tls_verify_registry.clone();
        options.skip_tls_verify_all = self.skip_tls_verify;
        for text in &self.registry_certificates {
            let (registry, path) = split_pair("--registry-certificate", text)?;
            options
                .ca_certificates
                .push((registry.to_string(), PathBuf::from(path)));
        }
        for text in &self.registry_client_certs {
            let (registry, files) = split_pair("--registry-client-cert", text)?;
            let Some((cert, key)) = files.split_once(',') else {
                bail!("--registry-client-cert {text:?}: expected REGISTRY=CERT.pem,KEY.pem");
            };
            options.client_certificates.push((
                registry.to_string(),
                PathBuf::from(cert),
                PathBuf::from(key),
            ));
        }
        Ok(())
    }
}

/// Splits `KEY=VALUE` (for `--registry-certificate` and friends).
fn split_pair<'a>(flag: &str, text: &'a str) -> Result<(&'a str, &'a str)> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k, v)),
        _ => bail!("{flag} {text:?}: expected REGISTRY=VALUE"),
    }
}
