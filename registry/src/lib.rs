//! A thin OCI distribution client for ocibuild.
//!
//! # Why a thin client on reqwest
//!
//! We write our own small client on [`reqwest`] rather than using `oci-client`
//! because ocibuild needs, in one HTTP stack that we control:
//!
//! * docker `config.json` auth: `auths` entries with `auth` or `username`/`password`,
//!   `identitytoken`, and `credHelpers` / `credsStore` calling
//!   `docker-credential-<name> get`;
//! * bearer-token challenge handling with per-scope token caching (and basic auth);
//! * plain http per registry (`--insecure`);
//! * per-registry TLS: private CAs, client certificates (mutual TLS) and skipped
//!   verification, with one HTTP client per distinct TLS configuration;
//! * registry mirrors and registry maps for pulls, with or without falling back to the
//!   original registry;
//! * one retry policy for every request (`retry`): exponential backoff with jitter,
//!   `Retry-After` honoured, corrupt downloads retried, `N` retries meaning `N`; and an
//!   idle timeout per request (`idle`), so a registry that stops answering fails the
//!   attempt instead of hanging;
//! * file-streamed uploads and downloads with sha256 verification, never holding a
//!   layer in memory.
//!
//! The crate stays deliberately small: [`Reference`] parsing, [`DockerConfig`] credential
//! lookup and the async [`Client`]. Manifests, indexes, descriptors and platforms are
//! oci-spec's types, re-exported from `ocibuild_image` ([`manifest`], [`platform`]).
//!
//! ```no_run
//! # async fn demo() -> ocibuild_registry::Result<()> {
//! use ocibuild_registry::{platform, Client, ClientOptions, DockerConfig, Reference};
//! let client = Client::new(ClientOptions {
//!     docker_config: DockerConfig::load(None)?,
//!     insecure_registries: vec!["127.0.0.1:5000".into()],
//!     ..Default::default()
//! })?;
//! let r = Reference::parse("127.0.0.1:5000/busybox:latest")?;
//! let pulled = client.pull_manifest(&r, &platform::linux_amd64()).await?;
//! let config = client.pull_blob_bytes(&r, pulled.manifest.config().digest().as_ref()).await?;
//! # let _ = config; Ok(()) }
//! ```
//!
//! # Module graph
//!
//! Leaf first; each module imports only modules above it, so there are no cycles.
//!
//! | module | role | imports (crate modules) |
//! | --- | --- | --- |
//! | [`error`] | the [`Error`] type, registry error bodies | — |
//! | [`auth`] | docker `config.json` and credential helpers | `error` |
//! | [`reference`](mod@reference) | image references, digest syntax, registry host normalisation | `error` |
//! | [`trace`] | what is told to a `tracing` subscriber: requests, tokens, transfer spans | `reference` |
//! | `retry` | the retry policy: which failures are retried, how often, backoff, `Retry-After` | `error` |
//! | `idle` | the idle timeout: a request's progress and the watchdog on it | — |
//! | `options` | [`ClientOptions`], plain data | `auth` (for [`DockerConfig`]) |
//! | `digest` | [`sha256_digest`], digest checks and verification | `error`, `reference` |
//! | `tls` | one reqwest client per TLS configuration, built from options; TLS diagnosis | `error`, `options`, `reference` |
//! | `mirror` | mirrors and registry maps as pull sources | `error`, `options`, `reference` |
//! | `token` | `WWW-Authenticate` challenges, bearer tokens, basic auth, the token cache | `auth`, `error`, `reference`, `retry`, `tls`, `trace` |
//! | `transport` | scheme (with loopback fallback), URLs, sending one attempt with auth and the idle timeout, status errors, retry policies per kind of request | `error`, `idle`, `options`, `reference`, `retry`, `tls`, `token`, `trace` |
//! | `pull` | manifests, platform selection, verified blob downloads, [`BlobObserver`], source fallback | `digest`, `error`, `idle`, `mirror`, `options`, `reference`, `token`, `trace`, `transport` |
//! | `push` | blob HEAD, cross-repository mount, monolithic upload, manifest PUT, the push-permission check | `digest`, `error`, `idle`, `reference`, `token`, `trace`, `transport` |
//! | [`client`] | [`Client`], whose methods delegate to `pull` and `push` | `digest`, `error`, `options`, `pull`, `push`, `reference`, `token`, `transport` |
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod auth;
pub mod client;
mod digest;
pub mod error;
mod idle;
mod mirror;
mod options;
mod pull;
mod push;
pub mod reference;
mod retry;
mod tls;
mod token;
pub mod trace;
mod transport;

pub use auth::{Credential, DockerConfig};
pub use client::{sha256_digest, BlobObserver, Client, ClientOptions, PulledManifest};
pub use error::{Error, Result};
pub use ocibuild_image::manifest::{
    self, media_types, Descriptor, Digest, ImageIndex, ImageManifest, MediaType, Platform,
};
pub use ocibuild_image::platform;
pub use reference::Reference;
