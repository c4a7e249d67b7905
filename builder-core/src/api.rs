//! The embedding API: [`Build`] runs a build from a [`Dockerfile`] (a file or a string)
//! and a [`Context`] (a directory, a kaniko-style URL or a tar stream) and returns a
//! [`BuiltImage`], which owns its layer files until it is dropped and pushes or writes
//! itself.
//!
//! ```no_run
//! use ocibuild_core::{Build, CancelToken, Context, Dockerfile};
//!
//! # async fn demo() -> Result<(), ocibuild_core::BuildError> {
//! let cancel = CancelToken::new();
//! let image = Build::new(
//!     Dockerfile::inline("FROM scratch\nCOPY a /a\n"),
//!     Context::dir("."),
//! )
//! .build_arg("V", "1")
//! .events(|event| eprintln!("{event}"))
//! .cancel_on(cancel.clone())
//! .run()
//! .await?;
//! image.write_oci_layout("out/layout", Some("v1")).await?;
//! image.push(&["registry.example/app:v1"]).await?;
//! # Ok(()) }
//! ```
//!
//! Blocking work (RUN commands, unpacking, snapshotting and compressing layers) runs on
//! tokio's blocking thread pool; the runtime may be multi-threaded or current-thread.

use crate::build::{self, BuildEvent, BuildOptions, BuildOutput, BuiltLayer};
use crate::cancel::{until_cancelled, CancelToken};
use crate::context::Context;
use crate::error::{BuildError, Result};
use crate::image::{self, BlobReports, BlobStore, Manifested};
use crate::isolation::Isolation;
use crate::options::SnapshotterChoice;
use crate::upload::Uploads;
use ocibuild_image::config::ImageConfig;
use ocibuild_registry::Client;
use ocibuild_snapshot::Compression;
use std::fmt;
use std::path::{Path, PathBuf};

/// The Dockerfile of a [`Build`]: a file or its text.
///
/// ```
/// use ocibuild_core::Dockerfile;
/// let from_file = Dockerfile::path("app/Dockerfile");
/// let from_text = Dockerfile::inline("FROM scratch\nLABEL a=b\n");
/// # let _ = (from_file, from_text);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Dockerfile {
    source: DockerfileSource,
}

#[derive(Debug, Clone)]
enum DockerfileSource {
    Path(PathBuf),
    Inline(String),
}

impl Dockerfile {
    /// A Dockerfile on disk; a relative path that does not exist is looked up in the
    /// context, and a file in the context must stay in it (as `--dockerfile`).
    pub fn path(path: impl Into<PathBuf>) -> Dockerfile {
        Dockerfile {
            source: DockerfileSource::Path(path.into()),
        }
    }

    /// A Dockerfile given as text.
    pub fn inline(text: impl Into<String>) -> Dockerfile {
        Dockerfile {
            source: DockerfileSource::Inline(text.into()),
        }
    }
}

/// The progress callback of a [`Build`].
type EventSink = Box<dyn FnMut(BuildEvent) + Send>;

/// A build to run: the Dockerfile, the context and options, then [`Build::run`].
///
/// ```no_run
/// use ocibuild_core::{Build, Context, Dockerfile, Isolation};
///
/// # async fn demo() -> Result<(), ocibuild_core::BuildError> {
/// let image = Build::new(Dockerfile::path("Dockerfile"), Context::dir("."))
///     .target("release")
///     .label("org.opencontainers.image.version", "1.2")
///     .platform("linux/amd64")
///     .isolation(Isolation::Chroot)
///     .cache_dir("/var/cache/ocibuild")
///     .run()
///     .await?;
/// println!("{}", image.digest());
/// # Ok(()) }
/// ```
#[non_exhaustive]
pub struct Build {
    dockerfile: Dockerfile,
    context: Context,
    options: BuildOptions,
    temp_parent: Option<PathBuf>,
    events: EventSink,
    cancel: CancelToken,
}

impl fmt::Debug for Build {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Build")
            .field("dockerfile", &self.dockerfile)
            .field("context", &self.context)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Build {
    /// A build of `dockerfile` in `context` with [`BuildOptions::default`]'s settings.
    pub fn new(dockerfile: Dockerfile, context: Context) -> Build {
        Build {
            dockerfile,
            context,
            options: BuildOptions::default(),
            temp_parent: None,
            events: Box::new(|_| {}),
            cancel: CancelToken::new(),
        }
    }

    /// Sets the build argument `name` (`--build-arg NAME=VALUE`).
    pub fn build_arg(mut self, name: impl Into<String>, value: impl Into<String>) -> Build {
        self.options
            .build_args
            .insert(name.into(), Some(value.into()));
        self
    }

    /// Builds the stage `name` instead of the last one.
    pub fn target(mut self, name: impl Into<String>) -> Build {
        self.options.target = Some(name.into());
        self
    }

    /// Adds a label to the image, after the Dockerfile's.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Build {
        self.options.labels.push((key.into(), value.into()));
        self
    }

    /// Builds for `os/arch[/variant]` instead of the host's platform.
    pub fn platform(mut self, platform: impl Into<String>) -> Build {
        self.options.platform = Some(platform.into());
        self
    }

    /// How RUN commands are isolated (default: namespaces).
    pub fn isolation(mut self, isolation: Isolation) -> Build {
        self.options.isolation = isolation;
        self
    }

    /// Layer compression (default: gzip level 6).
    pub fn compression(mut self, compression: Compression) -> Build {
        self.options.compression = compression;
        self
    }

    /// Epoch timestamps, so identical inputs give identical digests.
    pub fn reproducible(mut self, reproducible: bool) -> Build {
        self.options.reproducible = reproducible;
        self
    }

    /// Turns the layer cache on with a local cache directory (which also keeps base image
    /// layers).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Build {
        self.options.cache = true;
        self.options.cache_dir = Some(dir.into());
        self
    }

    /// Turns the layer cache on with a registry repository (`REGISTRY/REPO`) or an OCI
    /// layout (`oci:DIR`).
    pub fn cache_repo(mut self, repo: impl Into<String>) -> Build {
        self.options.cache = true;
        self.options.cache_repo = Some(repo.into());
        self
    }

    /// Speaks plain HTTP to this registry (`HOST[:PORT]`), for pulls and pushes.
    pub fn insecure_registry(mut self, registry: impl Into<String>) -> Build {
        self.options.insecure_registries.push(registry.into());
        self
    }

    /// Reads registry credentials from this docker `config.json` (default:
    /// `$DOCKER_CONFIG` or `~/.docker`).
    pub fn docker_config(mut self, path: impl Into<PathBuf>) -> Build {
        self.options.docker_config = Some(path.into());
        self
    }

    /// The layer store: where base and cached layers are kept extracted, shared with later
    /// builds (default: [`BuildOptions::layer_store`]'s, `/var/lib/ocibuild` as root).
    pub fn layer_store(mut self, dir: impl Into<PathBuf>) -> Build {
        self.options.layer_store = Some(dir.into());
        self
    }

    /// How each step's root filesystem is made (default: [`SnapshotterChoice::Auto`],
    /// overlay wherever it can be mounted).
    pub fn snapshotter(mut self, choice: SnapshotterChoice) -> Build {
        self.options.snapshotter = choice;
        self
    }

    /// Where the build's temporary directory (extracted context, root filesystems, layer
    /// files) is made: default the system's temporary directory (with
    /// [`Isolation::None`], always [`BuildOptions::kaniko_dir`]).
    pub fn temp_dir_in(mut self, dir: impl Into<PathBuf>) -> Build {
        self.temp_parent = Some(dir.into());
        self
    }

    /// Changes any other [`BuildOptions`] field (secrets, registry TLS, annotations, ...).
    /// `context`, `dockerfile` and `work_dir` are set by the build itself; destinations and
    /// outputs given here are honoured as by [`crate::build()`].
    pub fn options(mut self, change: impl FnOnce(&mut BuildOptions)) -> Build {
        change(&mut self.options);
        self
    }

    /// Sends the build's progress to `callback`.
    pub fn events(mut self, callback: impl FnMut(BuildEvent) + Send + 'static) -> Build {
        self.events = Box::new(callback);
        self
    }

    /// Stops the build when `token` is cancelled: the running RUN command is killed, the
    /// temporary directories are removed and [`Build::run`] returns
    /// [`BuildError::Cancelled`].
    pub fn cancel_on(mut self, token: CancelToken) -> Build {
        self.cancel = token;
        self
    }

    /// Runs the build. The result owns its layer files until it is dropped.
    pub async fn run(self) -> Result<BuiltImage> {
        let Build {
            dockerfile,
            context,
            mut options,
            temp_parent,
            mut events,
            cancel,
        } = self;
        options.work_dir = None;
        build::check_options(&options)?;
        let temp = build::temp_dir(&options, temp_parent.as_deref())?;
        let work = temp.path().join("work");
        let built = until_cancelled(&cancel, async {
            options.context = context.prepare_in(&temp.path().join("context")).await?;
            options.dockerfile = dockerfile_path(&dockerfile, temp.path())?;
            build::build_in(&options, &work, &mut *events, &cancel).await
        })
        .await?;
        keep_only_blobs(temp.path(), &work).await?;
        let manifested = built.output.image.manifest_with(&options.annotations)?;
        Ok(BuiltImage {
            output: built.output,
            manifested,
            blobs: built.blobs,
            pull_client: built.pull_client,
            push_client: built.push_client,
            temp,
        })
    }
}

/// The Dockerfile path to build with: an inline Dockerfile is checked for parse errors
/// (reported with its text) and written under `temp`.
fn dockerfile_path(dockerfile: &Dockerfile, temp: &Path) -> Result<PathBuf> {
    match &dockerfile.source {
        DockerfileSource::Path(path) => Ok(path.clone()),
        DockerfileSource::Inline(text) => {
            let path = temp.join("Dockerfile");
            crate::dockerfile::parse(text, Path::new("Dockerfile"))?;
            std::fs::write(&path, text).map_err(BuildError::io(&path))?;
            Ok(path)
        }
    }
}

/// Removes everything of the finished build from `temp` but the image's blobs: the work
/// directory's `layers` and `blobs`.
async fn keep_only_blobs(temp: &Path, work: &Path) -> Result<()> {
    let (temp, work) = (temp.to_path_buf(), work.to_path_buf());
    crate::blocking::run(move || {
        remove_all_but(&temp, &["work"])?;
        remove_all_but(&work, &["layers", "blobs"])
    })
    .await
}

/// Removes every entry of `dir` not named in `keep`.
fn remove_all_but(dir: &Path, keep: &[&str]) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(BuildError::io(dir))? {
        let entry = entry.map_err(BuildError::io(dir))?;
        if keep.iter().any(|k| entry.file_name() == *k) {
            continue;
        }
        let path = entry.path();
        let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(BuildError::io(&path))?;
    }
    Ok(())
}

/// The image a [`Build`] made. It owns a temporary directory with the layer files the
/// build wrote (and base layers fetched for exports), removed when it is dropped.
///
/// ```no_run
/// # async fn demo(image: ocibuild_core::BuiltImage) -> Result<(), ocibuild_core::BuildError> {
/// println!("{} ({} layers)", image.digest(), image.layers().len());
/// image.write_oci_layout("/tmp/layout", Some("latest")).await?;
/// image.write_docker_archive("/tmp/image.tar", &["example.com/app:latest"]).await?;
/// image.push(&["127.0.0.1:5000/app:latest"]).await?;
/// # Ok(()) }
/// ```
#[non_exhaustive]
pub struct BuiltImage {
    output: BuildOutput,
    manifested: Manifested,
    blobs: BlobStore,
    pull_client: Client,
    push_client: Client,
    temp: ocibuild_snapshot::HeldDir,
}

impl fmt::Debug for BuiltImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuiltImage")
            .field("digest", &self.digest())
            .field("layers", &self.layers())
            .field("dir", &self.temp.path())
            .finish_non_exhaustive()
    }
}

impl BuiltImage {
    /// `sha256:` of the manifest.
    pub fn digest(&self) -> &str {
        &self.manifested.manifest.digest
    }

    /// `sha256:` of the config.
    pub fn config_digest(&self) -> &str {
        &self.manifested.config_digest
    }

    /// The image config.
    pub fn config(&self) -> &ImageConfig {
        self.output.config()
    }

    /// The manifest JSON.
    pub fn manifest(&self) -> &[u8] {
        &self.manifested.manifest.bytes
    }

    /// The layers, bottom first.
    pub fn layers(&self) -> Vec<BuiltLayer> {
        self.output.layers()
    }

    /// What [`crate::build()`] reports: cache hits and misses, destinations pushed to by
    /// [`BuildOptions::destinations`].
    pub fn output(&self) -> &BuildOutput {
        &self.output
    }

    /// The directory holding the image's files (removed on drop).
    pub fn dir(&self) -> &Path {
        self.temp.path()
    }

    /// Pushes the image to each `registry/repo[:tag]`, with the build's credentials and
    /// registry settings; returns the manifest digest pushed to each. The layers upload a
    /// few at a time, to every destination at once; config and manifest go out only once
    /// every layer is confirmed everywhere, so a failed upload leaves no tag behind.
    pub async fn push(&self, destinations: &[&str]) -> Result<Vec<String>> {
        let destinations: Vec<String> = destinations.iter().map(|d| d.to_string()).collect();
        let mut uploads = Uploads::new(
            build::parse_destinations(&destinations)?,
            (self.push_client.clone(), self.pull_client.clone()),
            self.blobs.clone(),
            CancelToken::new(),
            BlobReports::default(),
        );
        uploads
            .push(&self.output.image, &self.manifested, &mut |_| {})
            .await
    }

    /// Writes the image into the OCI image layout `dir` (created, or added to), named
    /// `tag` in its index when given (as `org.opencontainers.image.ref.name`).
    pub async fn write_oci_layout(&self, dir: impl AsRef<Path>, tag: Option<&str>) -> Result<()> {
        crate::output::write_oci_layout(
            &self.output.image,
            &self.manifested,
            dir.as_ref(),
            tag.as_slice(),
            &self.blobs,
            &self.pull_client,
        )
        .await
    }

    /// Writes the image as a `docker save` tarball at `path`, with these `repo:tag` names.
    pub async fn write_docker_archive(&self, path: impl AsRef<Path>, tags: &[&str]) -> Result<()> {
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        image::write_docker_archive(
            &self.output.image,
            &self.manifested,
            &tags,
            path.as_ref(),
            &self.blobs,
            &self.pull_client,
        )
        .await
    }
}
