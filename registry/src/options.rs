//! Plain option types of the client: a leaf of the crate's module graph.
//!
//! Nothing here does I/O; `tls`, `mirror` and the client read these.

use std::path::PathBuf;
use std::time::Duration;

use crate::auth::DockerConfig;

/// Options for [`Client::new`](crate::Client::new).
///
/// Registry hosts in the TLS options are written `host[:port]` as in image references;
/// an `https://` prefix or trailing `/` is ignored, and `docker.io`, `index.docker.io`
/// and `registry-1.docker.io` all mean docker hub. A registry matches when its name or
/// API host equals the option's host (ports must match too).
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Registries (`host[:port]`) spoken to over plain http.
    pub insecure_registries: Vec<String>,
    /// Plain http for every registry.
    pub insecure_all: bool,
    /// Where credentials come from.
    pub docker_config: DockerConfig,
    /// Retries of a request that failed in a way worth another attempt (connection
    /// failures, the idle timeout, 5xx, 429, a corrupt download; see the retry policy in
    /// the crate docs): `N` means at most `N + 1` attempts. Default 3.
    pub retries: u32,
    /// Retries of downloads (manifests and blobs) instead of [`retries`](Self::retries),
    /// when set (kaniko `--image-download-retry`).
    pub pull_retries: Option<u32>,
    /// `User-Agent` header.
    pub user_agent: String,
    /// Extra trust roots per registry: `(host[:port], PEM file)` (kaniko
    /// `--registry-certificate host=path`). Every certificate in the file is trusted for
    /// that registry in addition to the built-in roots; several entries for one registry
    /// add up.
    pub ca_certificates: Vec<(String, PathBuf)>,
    /// Client certificates for mutual TLS: `(host[:port], certificate PEM, key PEM)`
    /// (kaniko `--registry-client-cert host=cert,key`). The certificate file may hold
    /// the chain; the key must be unencrypted (PKCS#8, PKCS#1 or SEC1). The last entry
    /// for a registry wins.
    pub client_certificates: Vec<(String, PathBuf, PathBuf)>,
    /// Registries whose TLS certificate is not verified at all (kaniko
    /// `--skip-tls-verify-registry`); they are still spoken to over https.
    pub skip_tls_verify: Vec<String>,
    /// Skip TLS certificate verification for every registry (kaniko `--skip-tls-verify`).
    pub skip_tls_verify_all: bool,
    /// Mirrors for pulls of docker hub images (kaniko `--registry-mirror`, repeatable):
    /// `host[:port][/prefix]`, tried in order with the same repository path (below
    /// `prefix`) before docker hub itself. Pushes never use them.
    pub mirrors: Vec<String>,
    /// With mirrors or registry map entries for a registry, do not fall back to the
    /// registry itself when all of them fail (kaniko `--skip-default-registry-fallback`).
    pub skip_default_registry_fallback: bool,
    /// Replacement registries for pulls (kaniko `--registry-map orig=r1;r2`):
    /// `(original host, [host[:port][/prefix], ...])`. Pulls from the original registry try
    /// each replacement in order, then (unless `skip_default_registry_fallback`) the
    /// original. Map entries come before [`mirrors`](Self::mirrors) for docker hub.
    pub registry_map: Vec<(String, Vec<String>)>,
    /// Retries of push requests (blob HEADs of a push, uploads, manifest PUTs) instead of
    /// [`retries`](Self::retries), when set (kaniko `--push-retry`).
    pub push_retries: Option<u32>,
    /// How long a request may go without a byte moving either way (waiting for the
    /// answer, or in the middle of a body) before the attempt fails with
    /// [`Error::Timeout`](crate::Error::Timeout) and is retried; default 60 s. Connecting
    /// has its own 30 s limit.
    pub idle_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure_registries: Vec::new(),
            insecure_all: false,
            docker_config: DockerConfig::default(),
            retries: 3,
            pull_retries: None,
            user_agent: concat!("ocibuild/", env!("CARGO_PKG_VERSION")).to_string(),
            ca_certificates: Vec::new(),
            client_certificates: Vec::new(),
            skip_tls_verify: Vec::new(),
            skip_tls_verify_all: false,
            mirrors: Vec::new(),
            skip_default_registry_fallback: false,
            registry_map: Vec::new(),
            push_retries: None,
            idle_timeout: Duration::from_secs(60),
        }
    }
}
