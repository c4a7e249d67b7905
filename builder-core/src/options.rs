//! [`BuildOptions`]: everything a build needs to know, and the target platform they name.
//! A leaf module: the engine's modules read the options without importing the `build` module.

use crate::cancel::CancelToken;
use crate::error::{BuildError, Result};
use crate::image::ImageFormat;
use crate::isolation::Isolation;
use crate::mounts::SecretSource;
use ocibuild_dockerfile::plan::BuildArgs;
use ocibuild_image::platform::{self, Platform};
use ocibuild_registry::ClientOptions;
use ocibuild_snapshot::Compression;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Everything a build needs to know. `Default` gives an empty context and Dockerfile path,
/// no destinations, namespace isolation, gzip at level 6 and no layer cache; set the public
/// fields on it (the struct is `#[non_exhaustive]`: it cannot be written as a literal
/// outside this crate, so new options are not breaking changes).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BuildOptions {
    /// The build context directory.
    pub context: PathBuf,
    /// The Dockerfile; a relative path that does not exist is looked up in the context.
    /// A path in the context (and the context's `.dockerignore`) is read only if its
    /// symlinks stay in the context (see [`crate::contextfile`]).
    pub dockerfile: PathBuf,
    /// Where to push the image (`registry/repo:tag`), any number.
    pub destinations: Vec<String>,
    /// `--build-arg` values (`None`: declared without a value).
    pub build_args: BuildArgs,
    /// Labels added to the final image, after the Dockerfile's.
    pub labels: Vec<(String, String)>,
    /// The stage to build (default: the last).
    pub target: Option<String>,
    /// Build but push nothing.
    pub no_push: bool,
    /// Also write a `docker save`-style tarball here.
    pub tar_path: Option<PathBuf>,
    /// Write the manifest digest here.
    pub digest_file: Option<PathBuf>,
    /// Push over plain HTTP (also pulls from the destination registries over HTTP).
    pub insecure: bool,
    /// Pull over plain HTTP.
    pub insecure_pull: bool,
    /// Registries always spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// A docker `config.json` to read credentials from (default: `$DOCKER_CONFIG` or
    /// `~/.docker`).
    pub docker_config: Option<PathBuf>,
    /// How RUN steps are isolated.
    pub isolation: Isolation,
    /// `--allow security.insecure`: `RUN --security=insecure` may run with every
    /// capability and no seccomp filter (refused otherwise).
    pub allow_insecure: bool,
    /// Layer compression (pinned: it decides layer digests).
    pub compression: Compression,
    /// Timestamps set to the epoch so identical inputs give identical digests.
    pub reproducible: bool,
    /// Target platform `os/arch[/variant]` (default: the host's).
    pub platform: Option<String>,
    /// Directory for root filesystems and layers (default: a fresh temporary directory,
    /// removed afterwards).
    pub work_dir: Option<PathBuf>,
    /// Stops the build when cancelled: the running RUN command and its processes are
    /// killed, the temporary directories removed, and [`crate::build()`] returns
    /// [`crate::BuildError::Cancelled`] (within about two seconds).
    pub cancel: CancelToken,
    /// Use the layer cache: steps whose key is cached are not run (see [`crate::cache`]).
    pub cache: bool,
    /// Registry repository for cached layers (kaniko's `--cache-repo`); with `cache` and
    /// neither this nor `cache_dir`, `<first destination>/cache` is used.
    pub cache_repo: Option<String>,
    /// Local cache directory (a PVC in Kubernetes): cached layers when `cache` is on, and
    /// base image layers always.
    pub cache_dir: Option<PathBuf>,
    /// Size limit of `cache_dir`, in bytes; least recently used entries are evicted.
    pub cache_dir_max_size: Option<u64>,
    /// Entries of `cache_repo` older than this are ignored.
    pub cache_ttl: Duration,
    /// Cache RUN layers.
    pub cache_run_layers: bool,
    /// Cache COPY/ADD layers.
    pub cache_copy_layers: bool,
    /// Directory backing `RUN --mount=type=cache` (default: `mounts/` in `cache_dir`, else
    /// `$XDG_CACHE_HOME/ocibuild/mounts` or `~/.cache/ocibuild/mounts`).
    pub cache_mounts_dir: Option<PathBuf>,
    /// Secrets for `RUN --mount=type=secret` (`--secret id=NAME,src=FILE|env=VAR`).
    pub secrets: Vec<(String, SecretSource)>,
    /// With [`Isolation::None`]: the builder's own directory, never touched (kaniko's
    /// `--kaniko-dir`, default `/kaniko`); the work directory goes there too.
    pub kaniko_dir: PathBuf,
    /// With [`Isolation::None`]: more paths to leave alone (`--ignore-path`).
    pub ignore_paths: Vec<PathBuf>,
    /// With [`Isolation::None`]: leave `/var/run` alone (`--ignore-var-run`, default true).
    pub ignore_var_run: bool,
    /// Build in `/` even when not in a container (`--force`): this overwrites the machine.
    pub force: bool,
    /// Registry client settings shared by pulls and pushes: TLS roots and client
    /// certificates per registry, TLS verification skipping, mirrors, registry maps, push
    /// retries (its insecure fields are added to the ones above).
    pub registry: ClientOptions,
    /// Skip TLS verification when pulling (`--skip-tls-verify-pull`).
    pub skip_tls_verify_pull: bool,
    /// Look layers up in the cache repository but never push to it (`--no-push-cache`).
    pub no_push_cache: bool,
    /// Also write the image into this OCI image layout directory (`--oci-layout-path`).
    pub oci_layout_path: Option<PathBuf>,
    /// Write `<registry>/<repo>@<digest>` per destination here (kaniko's
    /// `--image-name-with-digest-file`).
    pub image_name_with_digest_file: Option<PathBuf>,
    /// Write `<registry>/<repo>:<tag>@<digest>` per destination here (kaniko's
    /// `--image-name-tag-with-digest-file`).
    pub image_name_tag_with_digest_file: Option<PathBuf>,
    /// Annotations of the manifest (`--annotation KEY=VALUE`).
    pub annotations: BTreeMap<String, String>,
    /// Force the manifest format (`--image-format`); `None` follows the base image.
    pub image_format: Option<ImageFormat>,
    /// How each step's root filesystem is made and its changes found (`--snapshotter`).
    pub snapshotter: SnapshotterChoice,
    /// The store of extracted layers (`--layer-store`); default:
    /// [`ocibuild_snapshot::default_store_dir`] of `cache_dir` (with [`Isolation::None`],
    /// `layer-store/` in `cache_dir` or else in the work directory, never a path of `/`).
    pub layer_store: Option<PathBuf>,
}

/// Which snapshotter a build uses (`--snapshotter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SnapshotterChoice {
    /// Overlay where it can be mounted (the layer store's filesystem takes overlayfs upper
    /// directories, mounting is permitted, RUN runs in namespaces), else the walk; the log
    /// says which and why.
    #[default]
    Auto,
    /// Overlay, or an error saying why it cannot be mounted.
    Overlay,
    /// The walk: a plain directory per stage, changes found by `lstat`-walking it.
    Walk,
}

impl SnapshotterChoice {
    /// The flag spelling: `auto`, `overlay` or `walk`.
    pub fn name(self) -> &'static str {
        match self {
            SnapshotterChoice::Auto => "auto",
            SnapshotterChoice::Overlay => "overlay",
            SnapshotterChoice::Walk => "walk",
        }
    }
}

impl std::str::FromStr for SnapshotterChoice {
    type Err = BuildError;

    /// `auto`, `overlay` or `walk` (case-insensitive), as `--snapshotter` takes them.
    fn from_str(s: &str) -> Result<SnapshotterChoice> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(SnapshotterChoice::Auto),
            "overlay" => Ok(SnapshotterChoice::Overlay),
            "walk" => Ok(SnapshotterChoice::Walk),
            _ => Err(BuildError::Options(format!(
                "--snapshotter {s:?}: expected auto, overlay or walk"
            ))),
        }
    }
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            context: PathBuf::new(),
            dockerfile: PathBuf::new(),
            destinations: Vec::new(),
            build_args: BuildArgs::new(),
            labels: Vec::new(),
            target: None,
            no_push: false,
            tar_path: None,
            digest_file: None,
            insecure: false,
            insecure_pull: false,
            insecure_registries: Vec::new(),
            docker_config: None,
            isolation: Isolation::default(),
            allow_insecure: false,
            compression: Compression::default(),
            reproducible: false,
            platform: None,
            work_dir: None,
            cancel: CancelToken::new(),
            cache: false,
            cache_repo: None,
            cache_dir: None,
            cache_dir_max_size: None,
            cache_ttl: DEFAULT_CACHE_TTL,
            cache_run_layers: true,
            cache_copy_layers: true,
            cache_mounts_dir: None,
            secrets: Vec::new(),
            kaniko_dir: PathBuf::from("/kaniko"),
            ignore_paths: Vec::new(),
            ignore_var_run: true,
            force: false,
            registry: ClientOptions::default(),
            skip_tls_verify_pull: false,
            no_push_cache: false,
            oci_layout_path: None,
            image_name_with_digest_file: None,
            image_name_tag_with_digest_file: None,
            annotations: BTreeMap::new(),
            image_format: None,
            snapshotter: SnapshotterChoice::Auto,
            layer_store: None,
        }
    }
}

/// The default `cache_ttl`: two weeks, as kaniko.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(14 * 24 * 3600);

/// The platform to build for: `os/arch[/variant]` or the host's.
pub fn parse_platform(spec: Option<&str>) -> Result<Platform> {
    let spec = spec.unwrap_or("");
    if spec.is_empty() {
        return Ok(platform::linux_host());
    }
    match spec.split('/').collect::<Vec<&str>>().as_slice() {
        [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(platform::platform(os, arch, None)),
        [os, arch, variant] if !os.is_empty() && !arch.is_empty() => {
            Ok(platform::platform(os, arch, Some(variant)))
        }
        _ => Err(BuildError::Options(format!(
            "platform {spec:?}: expected os/arch[/variant], e.g. linux/amd64"
        ))),
    }
}
