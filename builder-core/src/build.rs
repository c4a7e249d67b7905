//! The build pipeline and the public embedding API: [`build`] takes [`BuildOptions`], runs
//! the stages the target needs, and pushes or writes the resulting image, reporting progress
//! as [`BuildEvent`]s.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ocibuild_core::BuildError> {
//! let mut opts = ocibuild_core::BuildOptions::default();
//! opts.context = "./app".into();
//! opts.dockerfile = "./app/Dockerfile".into();
//! opts.destinations = vec!["127.0.0.1:5000/demo:1".into()];
//! opts.insecure = true;
//! let out = ocibuild_core::build(&opts, &mut |event| eprintln!("{event:?}")).await?;
//! println!("{}", out.manifest_digest);
//! # Ok(()) }
//! ```
//!
//! [`crate::Build`] wraps this for embedding (inline Dockerfiles, remote contexts, an
//! image that owns its layers, cancellation).
//!
//! The root filesystem of a stage is materialized lazily: it is stacked from the base
//! layers (extracted into the layer store if it does not hold them yet) only when an
//! instruction needs files (RUN, COPY, ADD, WORKDIR), so metadata-only and fully cached
//! builds extract nothing. Every filesystem step is snapshotted into its own layer, by the
//! snapshotter the build chose (see [`crate::SnapshotterChoice`]).

use crate::cache::{CacheStore, LayerCache, LayoutCache, LocalCache, ReadOnly, RegistryCache};
use crate::cancel::{until_cancelled, CancelToken};
use crate::contextfile::{self, DockerfileLocation};
use crate::engine::{EventSink, Handles, Progress, Registry, Settings, Stages, StepCache};
use crate::error::{BuildError, Result};
use crate::image::{self, BlobReports, BlobStore, Image, Layer, LayerBlob};
use crate::isolation::Isolation;
use crate::layers::BuildLayers;
use crate::mounts::Secrets;
use crate::stage::StageRun;
use crate::upload::Uploads;
use ocibuild_dockerfile::plan::Plan;
use ocibuild_image::config::ImageConfig;
use ocibuild_image::platform::{self, Platform};
use ocibuild_registry::{Client, ClientOptions, DockerConfig, Reference};
use ocibuild_snapshot::HeldDir;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use crate::events::{BuildEvent, Events};
pub use crate::options::{parse_platform, BuildOptions};

/// What a successful build produced.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BuildOutput {
    /// `sha256:` of the manifest.
    pub manifest_digest: String,
    /// `sha256:` of the config.
    pub config_digest: String,
    /// The image: its config, its layers ([`BuildOutput::config`], [`BuildOutput::layers`]).
    pub(crate) image: Image,
    /// Destinations pushed to.
    pub pushed: Vec<String>,
    /// Steps whose layer came from the cache.
    pub cache_hits: usize,
    /// Cacheable steps that ran.
    pub cache_misses: usize,
}

impl BuildOutput {
    /// The image config.
    pub fn config(&self) -> &ImageConfig {
        &self.image.config
    }

    /// The layers, bottom first.
    pub fn layers(&self) -> Vec<BuiltLayer> {
        self.image.layers.iter().map(BuiltLayer::of).collect()
    }
}

/// One layer of a built image ([`BuildOutput::layers`], [`crate::BuiltImage::layers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BuiltLayer {
    /// `sha256:` of the compressed blob.
    pub digest: String,
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
    /// Compressed size in bytes.
    pub size: u64,
    /// The blob's file, for layers the build made; base image layers stay in their
    /// registry until an export needs them (`None`).
    pub path: Option<PathBuf>,
}

impl BuiltLayer {
    fn of(layer: &Layer) -> BuiltLayer {
        let (size, path) = match &layer.blob {
            LayerBlob::Local(info) => (info.size, Some(info.path.clone())),
            LayerBlob::Remote { descriptor, .. } => (descriptor.size(), None),
        };
        BuiltLayer {
            digest: layer.digest().to_string(),
            diff_id: layer.diff_id.clone(),
            size,
            path,
        }
    }
}

/// Runs a build.
pub async fn build(opts: &BuildOptions, events: Events<'_>) -> Result<BuildOutput> {
    check_options(opts)?;
    let (work, _guard) = work_dir(opts)?;
    let cancel = &opts.cancel;
    let built = until_cancelled(cancel, build_in(opts, &work, events, cancel)).await?;
    Ok(built.output)
}

/// A finished build with what its image's blobs need after it: the blob store of its
/// work directory and its registry clients.
pub(crate) struct Built {
    pub output: BuildOutput,
    pub blobs: BlobStore,
    pub pull_client: Client,
    pub push_client: Client,
}

/// Fails early on options that cannot work together.
pub(crate) fn check_options(opts: &BuildOptions) -> Result<()> {
    digest_files(opts).check(&opts.destinations)?;
    crate::output::check_image_format(opts.image_format, opts.compression)
}

/// Runs a build in the work directory `work`, stopping when `cancel` is cancelled.
pub(crate) async fn build_in(
    opts: &BuildOptions,
    work: &Path,
    events: Events<'_>,
    cancel: &CancelToken,
) -> Result<Built> {
    // Blob downloads happen where no event sink is at hand: they are reported before the
    // next event, and at the end.
    let reports = BlobReports::default();
    let mut reported = |event: BuildEvent| {
        reports.report_to(&mut *events);
        events(event);
    };
    let built = build_reporting(opts, work, &mut reported, cancel, &reports).await;
    reports.report_to(events);
    built
}

/// [`build_in`] with events to `events` and blob downloads recorded in `reports`.
async fn build_reporting(
    opts: &BuildOptions,
    work: &Path,
    events: Events<'_>,
    cancel: &CancelToken,
    reports: &BlobReports,
) -> Result<Built> {
    let mut builder = Builder::new(opts, work, cancel.clone(), events, reports)?;
    let output = match builder.run_stages().await {
        Ok(image) => builder.finish(image).await,
        Err(e) => Err(e),
    };
    // The layers of the steps that were committed join the store also when a later step
    // or the push failed: the next try finds them there.
    let adopted = builder.registry.layers.adopt_uppers().await;
    for warning in adopted.as_ref().into_iter().flatten() {
        builder
            .progress
            .report(BuildEvent::Warning(warning.clone()));
    }
    let output = output?;
    adopted?;
    Ok(Built {
        output,
        blobs: builder.registry.blobs,
        pull_client: builder.registry.pull_client,
        push_client: builder.registry.push_client,
    })
}

/// The digest files the options ask for.
fn digest_files(opts: &BuildOptions) -> crate::output::DigestFiles<'_> {
    crate::output::DigestFiles {
        digest_file: opts.digest_file.as_deref(),
        image_name_with_digest_file: opts.image_name_with_digest_file.as_deref(),
        image_name_tag_with_digest_file: opts.image_name_tag_with_digest_file.as_deref(),
    }
}

/// A temporary work dir removed on drop, or the user's.
pub(crate) fn work_dir(opts: &BuildOptions) -> Result<(PathBuf, Option<HeldDir>)> {
    match &opts.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(BuildError::io(dir))?;
            Ok((dir.clone(), None))
        }
        None => {
            let tmp = temp_dir(opts, None)?;
            Ok((tmp.path().to_path_buf(), Some(tmp)))
        }
    }
}

/// A fresh temporary directory `ocibuild-<pid>-...` for a build in `parent` (by default
/// the system's temporary directory), removed on drop. Those that processes now gone left
/// in `parent` (killed before they could remove them) are removed first.
pub(crate) fn temp_dir(opts: &BuildOptions, parent: Option<&Path>) -> Result<HeldDir> {
    // In `/` mode the temporary directory would be unpacked over: keep it in the
    // builder's own (ignored) directory instead.
    let parent = match (opts.isolation, parent) {
        (Isolation::None, _) => opts.kaniko_dir.clone(),
        (_, Some(parent)) => parent.to_path_buf(),
        (_, None) => default_temp_parent(),
    };
    std::fs::create_dir_all(&parent).map_err(BuildError::io(&parent))?;
    HeldDir::sweep(&parent, TEMP_PREFIX).map_err(BuildError::snapshot(
        "removing temporary directories of ended builds",
    ))?;
    let held = HeldDir::create(&parent, TEMP_PREFIX)
        .map_err(BuildError::snapshot("making a temporary directory"))?;
    // Stage rootfs trees are made in it, under names unique to the build.
    ocibuild_snapshot::spread_subdirectories(held.path());
    Ok(held)
}

/// Where builds make their temporary directories by default: `$TMPDIR` when set, else
/// `/tmp` for host root and `ocibuild/tmp` in the user's cache directory for anyone else
/// (a rootless build: its own disk space, not a shared `/tmp`).
fn default_temp_parent() -> PathBuf {
    if std::env::var_os("TMPDIR").is_some() || ocibuild_snapshot::is_host_root() {
        return std::env::temp_dir();
    }
    user_cache_dir().join("ocibuild").join("tmp")
}

/// `$XDG_CACHE_HOME`, else `~/.cache`, else `/var/cache`.
fn user_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"))
}

/// How the names of the temporary directories of builds begin.
const TEMP_PREFIX: &str = "ocibuild-";

/// One build: its options and the handles its stages borrow.
pub(crate) struct Builder<'a> {
    opts: &'a BuildOptions,
    /// The `--destination`s.
    destinations: Vec<Reference>,
    settings: Settings,
    registry: Registry,
    cache: StepCache,
    progress: Progress<'a>,
    stages: Stages,
}

impl<'a> Builder<'a> {
    /// A build of `opts` in `work`, stopped by `cancel`, reporting to `events` and
    /// recording blob transfers in `reports`.
    fn new(
        opts: &'a BuildOptions,
        work: &Path,
        cancel: CancelToken,
        events: Events<'a>,
        reports: &BlobReports,
    ) -> Result<Builder<'a>> {
        let (context, dockerfile, plan) = load_plan(opts)?;
        let platform = parse_platform(opts.platform.as_deref())?;
        let ignore = read_dockerignore(&context, &dockerfile)?;
        let docker_config = DockerConfig::load(opts.docker_config.as_deref())
            .map_err(BuildError::registry("reading registry credentials"))?;
        let destinations = parse_destinations(&opts.destinations)?;
        let mut pull_insecure = opts.insecure_registries.clone();
        if opts.insecure {
            pull_insecure.extend(destinations.iter().map(|r| r.registry.clone()));
        }
        let client = |insecure_all: bool, insecure_registries: Vec<String>, skip_tls: bool| {
            let mut options = ClientOptions {
                insecure_registries,
                insecure_all,
                docker_config: docker_config.clone(),
                ..opts.registry.clone()
            };
            options
                .insecure_registries
                .extend(opts.registry.insecure_registries.iter().cloned());
            options.skip_tls_verify_all |= skip_tls;
            Client::new(options).map_err(BuildError::registry("setting up the registry client"))
        };
        let created = if opts.reproducible {
            "1970-01-01T00:00:00Z".to_string()
        } else {
            ocibuild_image::time::now_rfc3339()
        };
        let stage_count = plan.stages.len();
        let pull_client = client(opts.insecure_pull, pull_insecure, opts.skip_tls_verify_pull)?;
        let push_client = client(opts.insecure, opts.insecure_registries.clone(), false)?;
        let local_cache = match &opts.cache_dir {
            Some(dir) => Some(LocalCache::open(dir, opts.cache_dir_max_size).map_err(|e| {
                BuildError::Options(format!("cache directory {}: {e}", dir.display()))
            })?),
            None => None,
        };
        let cache = layer_cache(opts, local_cache.clone(), &push_client)?;
        let blobs = BlobStore::new(work.join("blobs"), local_cache)?.reporting_to(reports.clone());
        let uploads = Uploads::new(
            if opts.no_push {
                Vec::new()
            } else {
                destinations.clone()
            },
            (push_client.clone(), pull_client.clone()),
            blobs.clone(),
            cancel.clone(),
            reports.clone(),
        )
        .for_target(&plan, plan.target(opts.target.as_deref())?);
        let store = crate::layers::store_root(opts, work);
        let keep = [context.clone(), work.to_path_buf(), store.clone()];
        let live_ignore = live_ignore(opts, &keep, reports)?;
        let layers = BuildLayers::open(opts, &store, live_ignore.is_some())?;
        let settings = Settings {
            secrets: Secrets::new(opts.secrets.clone()),
            live_ignore,
            cancel,
            platform,
            work: work.to_path_buf(),
            options: opts.into(),
            plan,
            context,
            ignore,
            created,
        };
        Ok(Builder {
            opts,
            destinations,
            registry: Registry::new((pull_client, push_client), blobs, uploads, layers),
            cache: StepCache::new(cache),
            progress: Progress::new(EventSink::new(events)),
            stages: Stages::new(stage_count, cache_mounts_dir(opts)),
            settings,
        })
    }

    /// The handles a stage borrows.
    fn handles(&mut self) -> Handles<'_, 'a> {
        Handles {
            settings: &self.settings,
            registry: &self.registry,
            cache: &mut self.cache,
            progress: &mut self.progress,
            stages: &mut self.stages,
        }
    }

    async fn run_stages(&mut self) -> Result<Image> {
        let target = self.settings.plan.target(self.opts.target.as_deref())?;
        let needed = self.settings.plan.needed_stages(target);
        self.progress.total_steps = needed
            .iter()
            .map(|i| 1 + self.settings.plan.stages[*i].instructions.len())
            .sum();
        self.stages
            .used_args
            .extend(self.settings.plan.global_args.keys().cloned());
        self.progress.report(self.registry.layers.event());
        for index in needed {
            self.settings.cancel.check()?;
            let finished = StageRun::run(self.handles(), index).await?;
            self.stages.finished[index] = Some(finished);
        }
        self.registry.verify_pulled().await?;
        self.warn_unused_args();
        let done = self.stages.finished[target]
            .take()
            .expect("the target stage ran");
        Ok(done.image)
    }

    fn warn_unused_args(&mut self) {
        let unused: Vec<&str> = self
            .opts
            .build_args
            .keys()
            .filter(|k| !self.stages.used_args.contains(*k) && !is_predefined_arg(k))
            .map(String::as_str)
            .collect();
        if !unused.is_empty() {
            let warning = format!("build-args not consumed by any ARG: {}", unused.join(", "));
            self.progress.report(BuildEvent::Warning(warning));
        }
    }

    async fn finish(&mut self, mut image: Image) -> Result<BuildOutput> {
        if !self.opts.labels.is_empty() {
            let labels = image
                .config
                .config
                .labels
                .get_or_insert_with(Default::default);
            for (k, v) in &self.opts.labels {
                labels.insert(k.clone(), v.clone());
            }
        }
        image.config.created = Some(self.settings.created.clone());
        if let Some(format) = self.opts.image_format {
            image.format = format;
        }
        let manifested = image.manifest_with(&self.opts.annotations)?;
        let destinations = &self.destinations;
        if self.opts.tar_path.is_some() || self.opts.oci_layout_path.is_some() {
            image.verify_local_layers()?;
        }
        if let Some(path) = &self.opts.tar_path {
            let tags: Vec<String> = destinations
                .iter()
                .filter(|r| r.tag.is_some())
                .map(|r| r.to_string())
                .collect();
            image::write_docker_archive(
                &image,
                &manifested,
                &tags,
                path,
                &self.registry.blobs,
                &self.registry.pull_client,
            )
            .await?;
        }
        if let Some(dir) = &self.opts.oci_layout_path {
            let ref_names = crate::output::layout_ref_names(destinations);
            let ref_names: Vec<&str> = ref_names.iter().map(String::as_str).collect();
            crate::output::write_oci_layout(
                &image,
                &manifested,
                dir,
                &ref_names,
                &self.registry.blobs,
                &self.registry.pull_client,
            )
            .await?;
        }
        let mut report = |event| self.progress.report(event);
        self.registry
            .uploads
            .push(&image, &manifested, &mut report)
            .await?;
        let pushed = if self.opts.no_push {
            Vec::new()
        } else {
            destinations.iter().map(Reference::to_string).collect()
        };
        crate::output::write_digest_files(
            &manifested.manifest.digest,
            destinations,
            &digest_files(self.opts),
        )?;
        Ok(BuildOutput {
            manifest_digest: manifested.manifest.digest,
            config_digest: manifested.config_digest,
            image,
            pushed,
            cache_hits: self.cache.hits,
            cache_misses: self.cache.misses,
        })
    }
}

/// Parses the `--destination`s.
pub(crate) fn parse_destinations(destinations: &[String]) -> Result<Vec<Reference>> {
    destinations
        .iter()
        .map(|d| Reference::parse(d).map_err(BuildError::registry(format!("destination {d:?}"))))
        .collect()
}

/// The layer cache the options ask for: the local directory and/or the cache repository
/// (by default `<first destination>/cache`), or none when `cache` is off.
fn layer_cache(
    opts: &BuildOptions,
    local: Option<LocalCache>,
    client: &Client,
) -> Result<LayerCache> {
    if !opts.cache {
        return Ok(LayerCache::default());
    }
    let repo = match (&opts.cache_repo, &local, opts.destinations.first()) {
        (Some(repo), _, _) => Some(repo.clone()),
        (None, None, Some(dest)) => Some(default_cache_repo(dest)?),
        _ => None,
    };
    let mut stores: Vec<Box<dyn CacheStore>> = Vec::new();
    if let Some(local) = local {
        stores.push(Box::new(local));
    }
    if let Some(repo) = repo {
        stores.push(shared_store(opts, client, &repo)?);
    }
    if stores.is_empty() {
        return Err(BuildError::Options(
            "the layer cache needs a store: pass --cache-dir DIR or --cache-repo REGISTRY/REPO or oci:DIR (or a --destination)".into(),
        ));
    }
    Ok(LayerCache::new(stores))
}

/// The cache repository of a build pushing to `destination`: `<registry>/<repository>/cache`
/// (kaniko's default for `--cache` without `--cache-repo`).
pub fn default_cache_repo(destination: &str) -> Result<String> {
    let r = Reference::parse(destination)
        .map_err(BuildError::registry(format!("destination {destination:?}")))?;
    Ok(format!("{}/{}/cache", r.registry, r.repository))
}

/// The store of cache repository `repo`: an OCI layout for `oci:DIR`, a registry
/// repository otherwise; read-only with `--no-push-cache`.
fn shared_store(opts: &BuildOptions, client: &Client, repo: &str) -> Result<Box<dyn CacheStore>> {
    let invalid = |e| BuildError::Options(format!("--cache-repo {repo}: {e}"));
    let store: Box<dyn CacheStore> = match repo.strip_prefix("oci:") {
        Some("") => {
            return Err(BuildError::Options(
                "--cache-repo oci:: give the OCI layout directory, as in oci:/path/to/layout"
                    .into(),
            ))
        }
        Some(dir) => read_only_if(
            opts.no_push_cache,
            LayoutCache::open(Path::new(dir), opts.cache_ttl).map_err(invalid)?,
        ),
        None => read_only_if(
            opts.no_push_cache,
            RegistryCache::new(client.clone(), repo, opts.cache_ttl).map_err(invalid)?,
        ),
    };
    Ok(store)
}

/// `store`, wrapped in [`ReadOnly`] when `read_only`.
fn read_only_if<S: CacheStore + 'static>(read_only: bool, store: S) -> Box<dyn CacheStore> {
    if read_only {
        Box::new(ReadOnly(store))
    } else {
        Box::new(store)
    }
}

/// The ignore list for building in `/` (keeping the paths `keep`: the context, the work
/// directory, the layer store), after refusing to do so outside a container unless forced
/// (then with a warning in `reports`).
fn live_ignore(
    opts: &BuildOptions,
    keep: &[PathBuf],
    reports: &BlobReports,
) -> Result<Option<Vec<PathBuf>>> {
    if opts.isolation != Isolation::None {
        return Ok(None);
    }
    check_live_root(opts)?;
    if !crate::liveroot::in_container() {
        reports.warned(FORCED_LIVE_ROOT_WARNING.into());
    }
    Ok(Some(crate::liveroot::ignored_paths(opts, keep)))
}

/// The warning of building in `/` outside a container (`--force`).
const FORCED_LIVE_ROOT_WARNING: &str =
    "BUILDING IN THIS MACHINE'S / (--force outside a container): the base image is unpacked \
     over the host's root filesystem and RUN runs there unisolated; the host's / is modified \
     (only kaniko's ignore list is left alone)";

/// Refuses building in `/` (`--isolation none`, the `executor` default) outside a container
/// unless `--force` was given, as kaniko does.
pub fn check_live_root(opts: &BuildOptions) -> Result<()> {
    if opts.isolation != Isolation::None || opts.force || crate::liveroot::in_container() {
        return Ok(());
    }
    Err(BuildError::Options(
        "building in / (--isolation none, the executor's default, as kaniko) overwrites this \
         machine's root filesystem with the base image; ocibuild only does that inside a \
         container (found no /.dockerenv, /run/.containerenv, $container or container cgroup). \
         Pass --force if this really is a throwaway system (kaniko's --force), or build \
         isolated with --isolation namespaces."
            .into(),
    ))
}

/// Where `RUN --mount=type=cache` directories live.
fn cache_mounts_dir(opts: &BuildOptions) -> PathBuf {
    if let Some(dir) = &opts.cache_mounts_dir {
        return dir.clone();
    }
    if let Some(dir) = &opts.cache_dir {
        return dir.join("mounts");
    }
    user_cache_dir().join("ocibuild").join("mounts")
}

/// `--dryrun`: reads the Dockerfile of `opts` (found as [`build()`] finds it), makes the
/// plan for the target platform with the build args, and returns a description of the
/// target's plan (the stages it needs and their steps). Nothing is pulled, run or written.
pub fn dry_run(opts: &BuildOptions) -> Result<String> {
    let (_, _, plan) = load_plan(opts)?;
    let target = plan.target(opts.target.as_deref())?;
    Ok(crate::output::describe_plan(&plan, target))
}

/// Reads and plans the Dockerfile of `opts`: the canonical context directory, where the
/// Dockerfile is and the plan (global and automatic platform ARGs evaluated). A Dockerfile
/// in the context must stay in it; parse errors of one outside it quote nothing of it.
pub(crate) fn load_plan(opts: &BuildOptions) -> Result<(PathBuf, DockerfileLocation, Plan)> {
    let context = opts.context.canonicalize().map_err(|e| {
        BuildError::Options(format!(
            "build context {}: {e}; pass an existing directory with --context",
            opts.context.display()
        ))
    })?;
    let location = contextfile::locate_dockerfile(&opts.dockerfile, &context, &opts.context);
    let text = contextfile::read_dockerfile(&location, &context)?;
    let dockerfile = ocibuild_dockerfile::parser::parse(&text, &location.path).map_err(|e| {
        if location.in_context {
            e
        } else {
            e.redacted()
        }
    })?;
    let platform = parse_platform(opts.platform.as_deref())?;
    let auto_args = platform_args(&platform, &parse_platform(None)?);
    let plan = Plan::new(&dockerfile, &opts.build_args, auto_args)?;
    Ok((context, location, plan))
}

/// The ignore rules of the build (see [`contextfile::read_dockerignore`]).
fn read_dockerignore(
    context: &Path,
    dockerfile: &DockerfileLocation,
) -> Result<ocibuild_dockerfile::pathmatch::IgnoreRules> {
    let text = contextfile::read_dockerignore(dockerfile, context)?;
    Ok(text
        .map(|t| ocibuild_dockerfile::pathmatch::IgnoreRules::parse(&t))
        .unwrap_or_default())
}

/// BuildKit's automatic platform ARGs for the target and the build platform.
fn platform_args(target: &Platform, build: &Platform) -> BTreeMap<String, String> {
    let mut args = BTreeMap::new();
    for (prefix, p) in [("TARGET", target), ("BUILD", build)] {
        args.insert(format!("{prefix}PLATFORM"), platform::name(p));
        args.insert(format!("{prefix}OS"), p.os().to_string());
        args.insert(format!("{prefix}ARCH"), p.architecture().to_string());
        args.insert(
            format!("{prefix}VARIANT"),
            p.variant().clone().unwrap_or_default(),
        );
    }
    args
}

/// Build args Docker defines without an ARG instruction (never warned about).
pub(crate) use ocibuild_dockerfile::ir::is_predefined_arg;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_or_default_to_the_host() {
        let p = parse_platform(Some("linux/arm64/v8")).unwrap();
        assert_eq!(platform::name(&p), "linux/arm64/v8");
        let args = platform_args(&p, &parse_platform(Some("linux/amd64")).unwrap());
        assert_eq!(args["TARGETARCH"], "arm64");
        assert_eq!(args["TARGETVARIANT"], "v8");
        assert_eq!(args["BUILDPLATFORM"], "linux/amd64");
        assert_eq!(args["BUILDVARIANT"], "");
        assert_eq!(parse_platform(None).unwrap().os().to_string(), "linux");
        assert!(parse_platform(Some("linux")).is_err());
        assert!(parse_platform(Some("linux/arm64/v8/x")).is_err());
    }

    #[test]
    fn on_ext4_a_builds_temporary_directory_spreads_the_trees_made_in_it() {
        use rustix::fs::{ioctl_getflags, statfs, IFlags};
        let parent = tempfile::tempdir().unwrap();
        let held = temp_dir(&BuildOptions::default(), Some(parent.path())).unwrap();
        let flags = ioctl_getflags(std::fs::File::open(held.path()).unwrap());
        match statfs(parent.path()).unwrap().f_type == 0xEF53 {
            true => assert!(flags.unwrap().contains(IFlags::TOPDIR)),
            false => assert!(held.path().is_dir()),
        }
    }

    #[test]
    fn dockerfile_is_found_in_the_context_when_not_at_the_given_path() {
        let ctx = tempfile::tempdir().unwrap();
        let dir = ctx.path().canonicalize().unwrap();
        std::fs::write(dir.join("Dockerfile.web"), "FROM scratch\n").unwrap();
        let found = contextfile::locate_dockerfile(Path::new("Dockerfile.web"), &dir, &dir);
        assert_eq!(found.path, dir.join("Dockerfile.web"));
        let found = contextfile::locate_dockerfile(Path::new(""), &dir, &dir);
        assert_eq!(found.path, dir.join("Dockerfile"));
    }
}
