//! The layers a build stacks its root filesystems on: the layer store
//! ([`ocibuild_snapshot::LayerStore`]), the layers of it the build holds, which snapshotter
//! the build's stages use, and the upper directories of its overlay steps.
//!
//! - Choice ([`BuildLayers::open`]): overlay wherever it works (the probe
//!   [`Overlay::available`] mounts a tiny detached overlay in this build's step directory
//!   inside the store), else the walk; `--snapshotter` forces either, building in `/`
//!   always walks `/`, and `--isolation chroot` walks (its sandbox has no mount namespace
//!   to mount the overlay in). The log names the choice and why ([`BuildEvent::Snapshotter`]).
//! - Lowers ([`BuildLayers::lowers`]): a layer's lower directory is its directory in the
//!   store, put there when a rootfs first needs it, never before: a build whose steps are
//!   all cache hits extracts nothing. Missing layers are extracted several at once, each
//!   while it downloads when it is not on disk yet (the store checks both digests on the
//!   way). The walk takes a blob file for a layer the store does not hold, and extracts it
//!   into its own directory only.
//! - Held: every store layer the build uses is held ([`ocibuild_snapshot::StoredLayer`])
//!   until the build ends, so `ocibuild prune` never removes it meanwhile.
//! - Uppers: a committed overlay step's upper directory is a lower of the next steps (and
//!   of later stages) as it is; when the build succeeds, each is adopted into the store
//!   under its diff ID ([`BuildLayers::adopt_uppers`]), so later builds share it. The step
//!   directory is inside the store root (same filesystem, so adoption is a rename) and is
//!   removed with everything in it when the build ends, however it ends; one left by a
//!   killed process is removed by the next build's store sweep.

use crate::engine::Registry;
use crate::error::{BuildError, Result};
use crate::events::BuildEvent;
use crate::image::{Layer, LayerBlob};
use crate::isolation::Isolation;
use crate::options::{BuildOptions, SnapshotterChoice};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use ocibuild_registry::{BlobObserver, Reference};
use ocibuild_snapshot::{
    overlay, Inserted, LayerDigests, LayerStore, Overlay, RootDir, StepDirs, StoredLayer,
};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

/// How many missing layers are pulled and extracted at once.
const CONCURRENT_LAYERS: usize = 3;

/// How many downloaded chunks may wait for the extraction (bounds the memory a download
/// running ahead of its extraction takes).
const FEED_CHUNKS: usize = 32;

/// The snapshotter of a build's stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// [`ocibuild_snapshot::Overlay`], with step directories in the layer store.
    Overlay,
    /// [`ocibuild_snapshot::StatWalk`] on a directory per stage (or `/`).
    Walk,
}

/// A committed upper directory, adopted into the store when the build succeeds.
#[derive(Debug)]
struct Upper {
    dir: PathBuf,
    digest: String,
    diff_id: String,
}

/// The build's layer store, snapshotter choice, held layers and overlay step directories.
pub(crate) struct BuildLayers {
    store: LayerStore,
    kind: Kind,
    /// Why this snapshotter (for the log).
    reason: String,
    /// This build's step directories (overlay only).
    steps: Option<StepDirs>,
    /// Store layers in use, by diff ID.
    held: Mutex<HashMap<String, StoredLayer>>,
    /// Committed upper directories, in the order made.
    uppers: Mutex<Vec<Upper>>,
    /// The fixed layer mtime (`--reproducible`), which adopted uppers get too.
    mtime: Option<u64>,
}

/// Where the layer store of a build with `opts` (working in `work`) is: `--layer-store`,
/// else [`ocibuild_snapshot::default_store_dir`]; when building in `/`, never a path of
/// `/` the image would be unpacked over: `layer-store/` in the cache directory or the work
/// directory.
pub(crate) fn store_root(opts: &BuildOptions, work: &Path) -> PathBuf {
    let in_work = || work.join("layer-store");
    match (&opts.layer_store, opts.isolation) {
        (Some(dir), _) => dir.clone(),
        (None, Isolation::None) => opts.cache_dir.as_ref().map_or_else(in_work, |dir| {
            dir.join(ocibuild_snapshot::store::STORE_IN_CACHE_DIR)
        }),
        (None, _) => {
            ocibuild_snapshot::default_store_dir(opts.cache_dir.as_deref()).unwrap_or_else(in_work)
        }
    }
}

impl BuildLayers {
    /// Opens the store of `opts` at `root` (sweeping what killed builds left) and chooses
    /// the snapshotter; `live` is set when building in `/`. A forced overlay that cannot
    /// be mounted is an error saying why.
    pub fn open(opts: &BuildOptions, root: &Path, live: bool) -> Result<BuildLayers> {
        let store = LayerStore::open(root).map_err(BuildError::snapshot(format!(
            "opening the layer store {}",
            root.display()
        )))?;
        let (kind, reason, steps) = choose(opts, &store, live)?;
        Ok(BuildLayers {
            store,
            kind,
            reason,
            steps,
            held: Mutex::default(),
            uppers: Mutex::default(),
            mtime: opts.reproducible.then_some(0),
        })
    }

    /// The snapshotter the stages use.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The event that names the snapshotter and why it was chosen.
    pub fn event(&self) -> BuildEvent {
        let name = match self.kind {
            Kind::Overlay => "overlay",
            Kind::Walk => "walk",
        };
        BuildEvent::Snapshotter {
            name: name.to_string(),
            reason: self.reason.clone(),
        }
    }

    /// Whether the store holds the layer `diff_id` extracted from the blob `digest` (so
    /// that blob was checked against its diff ID).
    pub fn holds_blob(&self, diff_id: &str, digest: &str) -> bool {
        self.store.holds_blob(diff_id, digest)
    }

    /// An overlay snapshotter with its step directories in this build's.
    pub fn overlay(&self) -> Result<Overlay> {
        let dir = self.step_dir()?;
        Overlay::new(dir).map_err(BuildError::snapshot("preparing the overlay snapshotter"))
    }

    /// This build's step directory (overlay only).
    fn step_dir(&self) -> Result<&Path> {
        match &self.steps {
            Some(steps) => Ok(steps.path()),
            None => Err(BuildError::Options(
                "the overlay snapshotter was not chosen for this build".into(),
            )),
        }
    }

    /// A read-only view of the tree of `lowers` (a finished stage), as a directory path
    /// that stays valid while the returned tree lives.
    pub fn view(&self, lowers: &[PathBuf]) -> Result<SourceTree> {
        let empty = self.step_dir()?.join("empty");
        let root = overlay::read_only_view(lowers, &empty)
            .map_err(BuildError::snapshot("mounting a finished stage's rootfs"))?;
        Ok(SourceTree::of_view(root))
    }

    /// The lowers of `layers` (bottom-most first) and the extraction events: each layer's
    /// store directory, extracting the missing ones (several at once), a private copy of it
    /// where it comes a second time; with `dirs` unset (the walk), a layer the store does
    /// not hold is its blob file instead.
    pub async fn lowers(
        &self,
        registry: &Registry,
        layers: &[Layer],
        dirs: bool,
    ) -> Result<(Vec<PathBuf>, Vec<BuildEvent>)> {
        let found: Vec<Option<PathBuf>> = layers.iter().map(|l| self.known(l)).collect();
        let found = self.look_up(layers, found).await?;
        let missing: Vec<usize> = (0..layers.len()).filter(|i| found[*i].is_none()).collect();
        let fetched: Vec<(usize, PathBuf, Option<BuildEvent>)> = stream::iter(missing)
            .map(|index| async move {
                let layer = &layers[index];
                match dirs {
                    true => {
                        let (path, event) = self.extract(registry, layer, index).await?;
                        Ok::<_, BuildError>((index, path, event))
                    }
                    false => Ok((index, registry.local_file(layer).await?, None)),
                }
            })
            .buffer_unordered(CONCURRENT_LAYERS)
            .try_collect()
            .await?;
        let mut found = found;
        let mut events = Vec::new();
        for (index, path, event) in fetched {
            found[index] = Some(path);
            events.extend(event);
        }
        let mut lowers: Vec<PathBuf> = Vec::with_capacity(layers.len());
        for lower in found.into_iter().flatten() {
            // A layer that comes twice: an overlay takes each directory once.
            let lower = match dirs && lowers.contains(&lower) {
                true => self.private_copy(&lower).await?,
                false => lower,
            };
            lowers.push(lower);
        }
        Ok((lowers, events))
    }

    /// The directory of `layer` if the build already holds it (or made it as an upper).
    fn known(&self, layer: &Layer) -> Option<PathBuf> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stored) = held.get(&layer.diff_id) {
            return Some(stored.path().to_path_buf());
        }
        let uppers = self.uppers.lock().unwrap_or_else(|e| e.into_inner());
        uppers
            .iter()
            .find(|u| u.diff_id == layer.diff_id)
            .map(|u| u.dir.clone())
    }

    /// Fills in `found` the layers the store holds (holding them), on the blocking pool.
    async fn look_up(
        &self,
        layers: &[Layer],
        mut found: Vec<Option<PathBuf>>,
    ) -> Result<Vec<Option<PathBuf>>> {
        let wanted: Vec<(usize, String)> = (0..layers.len())
            .filter(|i| found[*i].is_none())
            .map(|i| (i, layers[i].diff_id.clone()))
            .collect();
        if wanted.is_empty() {
            return Ok(found);
        }
        let store = self.store.clone();
        let got = crate::blocking::run(move || {
            let mut got = Vec::new();
            for (index, diff_id) in wanted {
                let stored = store.get(&diff_id).map_err(BuildError::snapshot(format!(
                    "looking layer {diff_id} up in the layer store"
                )))?;
                got.extend(stored.map(|s| (index, s)));
            }
            Ok(got)
        })
        .await?;
        for (index, stored) in got {
            found[index] = Some(stored.path().to_path_buf());
            self.hold(stored);
        }
        Ok(found)
    }

    /// Keeps `stored` held until the build ends.
    fn hold(&self, stored: StoredLayer) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.entry(stored.diff_id().to_string()).or_insert(stored);
    }

    /// Extracts `layer` (at `index` in its image) into the store: while it downloads when
    /// it is a remote blob not on disk yet, else from its file. Returns its directory and
    /// the event of the extraction (none when another build had just done it).
    async fn extract(
        &self,
        registry: &Registry,
        layer: &Layer,
        index: usize,
    ) -> Result<(PathBuf, Option<BuildEvent>)> {
        let digest = layer.digest().to_string();
        let streamed = match &layer.blob {
            LayerBlob::Remote { source, .. } => {
                // Held while downloading, so that an upload of the same blob waits and
                // then takes the file.
                let lock = registry.blobs.fetch_lock(&digest);
                let _fetching = lock.lock().await;
                match registry.blobs.has_file_or_cached(&digest) {
                    true => None,
                    false => {
                        let streamed = self.stream(registry, source, &digest, &layer.diff_id);
                        let streamed = streamed.await.map_err(|e| mismatch(e, layer, index))?;
                        registry.blobs.record_known(&digest, &layer.diff_id);
                        let (blobs, diff_id) = (&registry.blobs, &layer.diff_id);
                        blobs.add_to_cache(source, &digest, diff_id).await?;
                        Some(streamed)
                    }
                }
            }
            LayerBlob::Local(_) => None,
        };
        let inserted = match streamed {
            Some(inserted) => inserted,
            None => {
                let file = registry.local_file(layer).await?;
                let inserted = self.insert_file(file, &digest, &layer.diff_id).await;
                inserted.map_err(|e| mismatch(e, layer, index))?
            }
        };
        registry.blobs.record_known(&digest, &layer.diff_id);
        let event = inserted
            .extracted
            .as_ref()
            .map(|stats| BuildEvent::Extracted {
                diff_id: layer.diff_id.clone(),
                entries: stats.entries,
                bytes: stats.disk_bytes,
            });
        let path = inserted.layer.path().to_path_buf();
        self.hold(inserted.layer);
        Ok((path, event))
    }

    /// Inserts the blob file `file` into the store (on the blocking pool).
    async fn insert_file(
        &self,
        file: PathBuf,
        digest: &str,
        diff_id: &str,
    ) -> std::result::Result<Inserted, Extraction> {
        let (store, digest, diff_id) =
            (self.store.clone(), digest.to_string(), diff_id.to_string());
        crate::blocking::spawn(move || {
            let digests = LayerDigests {
                digest: &digest,
                diff_id: &diff_id,
            };
            store.insert_from_file(&file, digests)
        })
        .await
        .map_err(Extraction::Build)?
        .map_err(Extraction::Store)
    }

    /// Downloads blob `digest` of `source` into the work directory while the store
    /// extracts it. When the download had to start over after bytes went to the
    /// extraction, the extraction is abandoned and the downloaded file inserted instead.
    async fn stream(
        &self,
        registry: &Registry,
        source: &Reference,
        digest: &str,
        diff_id: &str,
    ) -> std::result::Result<Inserted, Extraction> {
        let (sender, receiver) = sync_channel(FEED_CHUNKS);
        let (store, owned) = (
            self.store.clone(),
            (digest.to_string(), diff_id.to_string()),
        );
        // Started now, not when awaited: it takes the chunks while the download runs.
        let extraction = tokio::task::spawn_blocking(move || {
            let digests = LayerDigests {
                digest: &owned.0,
                diff_id: &owned.1,
            };
            store.insert_from_reader(Feed::new(receiver), digests)
        });
        let mut tee = Tee {
            sender: Some(sender),
            sent: false,
            broken: false,
        };
        let path = registry.blobs.path(digest);
        let pulled = registry
            .pull_client
            .pull_blob_to_file_observed(source, digest, &path, &mut tee)
            .await;
        let broken = tee.broken;
        drop(tee);
        let extracted = match extraction.await {
            Ok(extracted) => extracted,
            Err(e) => match e.try_into_panic() {
                Ok(payload) => std::panic::resume_unwind(payload),
                Err(_) => return Err(Extraction::Build(BuildError::Cancelled)),
            },
        };
        let context = format!("pulling layer {digest} of {source}");
        let bytes = pulled
            .map_err(BuildError::registry(context))
            .map_err(Extraction::Build)?;
        registry.blobs.record_download(source, digest, bytes);
        match (extracted, broken) {
            (Ok(inserted), false) => Ok(inserted),
            (_, true) => self.insert_file(path, digest, diff_id).await,
            (Err(e), false) => Err(Extraction::Store(e)),
        }
    }

    /// A private copy of the layer directory `dir`, in this build's step directory: an
    /// overlay refuses one directory twice among its lowers (a layer may come twice in a
    /// stage, e.g. two identical reproducible steps taken from the cache).
    pub async fn private_copy(&self, dir: &Path) -> Result<PathBuf> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COPIES: AtomicU64 = AtomicU64::new(0);
        let n = COPIES.fetch_add(1, Ordering::Relaxed);
        let copy = self.step_dir()?.join(format!("copy-{n}"));
        let (from, to) = (dir.to_path_buf(), copy.clone());
        crate::blocking::run(move || {
            // `cp -a` keeps what makes it a layer: whiteout devices and overlay xattrs.
            let status = std::process::Command::new("cp")
                .arg("-a")
                .arg(&from)
                .arg(&to)
                .status()
                .map_err(BuildError::io(&from))?;
            match status.success() {
                true => Ok(()),
                false => Err(BuildError::Options(format!(
                    "copying the layer directory {} to {} failed",
                    from.display(),
                    to.display()
                ))),
            }
        })
        .await?;
        Ok(copy)
    }

    /// Registers the committed upper directory `dir` of a step whose layer has `digest` and
    /// `diff_id`, for [`BuildLayers::adopt_uppers`].
    pub fn add_upper(&self, dir: PathBuf, digest: &str, diff_id: &str) {
        let mut uppers = self.uppers.lock().unwrap_or_else(|e| e.into_inner());
        uppers.push(Upper {
            dir,
            digest: digest.to_string(),
            diff_id: diff_id.to_string(),
        });
    }

    /// Adopts the upper directories of the build's steps into the store (on the blocking
    /// pool), after giving them the layers' fixed mtime if there is one; returns warnings
    /// for those that could not be (they are removed with the step directory).
    pub async fn adopt_uppers(&self) -> Result<Vec<String>> {
        let uppers = std::mem::take(&mut *self.uppers.lock().unwrap_or_else(|e| e.into_inner()));
        if uppers.is_empty() {
            return Ok(Vec::new());
        }
        let (store, mtime) = (self.store.clone(), self.mtime);
        crate::blocking::run(move || {
            let mut warnings = Vec::new();
            for upper in uppers {
                if let Err(e) = adopt(&store, &upper, mtime) {
                    warnings.push(format!(
                        "the layer {} stays out of the layer store: {e}",
                        upper.diff_id
                    ));
                }
            }
            Ok(warnings)
        })
        .await
    }
}

/// Adopts one upper directory into `store` (see [`BuildLayers::adopt_uppers`]).
fn adopt(store: &LayerStore, upper: &Upper, mtime: Option<u64>) -> ocibuild_snapshot::Result<()> {
    if let Some(mtime) = mtime {
        overlay::set_mtimes(&upper.dir, mtime)?;
    }
    let digests = LayerDigests {
        digest: &upper.digest,
        diff_id: &upper.diff_id,
    };
    store.adopt(&upper.dir, digests).map(drop)
}

/// The snapshotter for `opts`, why, and (overlay) the build's step directories.
fn choose(
    opts: &BuildOptions,
    store: &LayerStore,
    live: bool,
) -> Result<(Kind, String, Option<StepDirs>)> {
    if live {
        let reason = "building in / (--isolation none): the walk snapshots / itself";
        return Ok((Kind::Walk, reason.into(), None));
    }
    if opts.snapshotter == SnapshotterChoice::Walk {
        return Ok((Kind::Walk, "--snapshotter walk".into(), None));
    }
    let why = match opts.isolation {
        Isolation::Chroot => "--isolation chroot runs RUN without a mount namespace of its \
                              own, where the overlay would be mounted"
            .to_string(),
        _ => {
            let steps = store
                .step_dirs()
                .map_err(BuildError::snapshot("making the build's step directory"))?;
            match Overlay::available(steps.path()) {
                Ok(()) => {
                    let mut reason = format!("layer store {}", store.root().display());
                    if overlay::XattrNamespace::current() == overlay::XattrNamespace::User {
                        reason.push_str(", in a user namespace: userxattr");
                    }
                    return Ok((Kind::Overlay, reason, Some(steps)));
                }
                Err(unavailable) => format!("{unavailable} (in {})", store.root().display()),
            }
        }
    };
    match opts.snapshotter {
        SnapshotterChoice::Overlay => Err(BuildError::Options(format!(
            "--snapshotter overlay: overlayfs cannot be used here: {why}; use --snapshotter \
             auto (or walk) to build with the walk snapshotter instead"
        ))),
        _ => Ok((Kind::Walk, format!("overlay unavailable: {why}"), None)),
    }
}

/// Why an extraction into the store failed.
enum Extraction {
    /// The store refused the layer (a digest mismatch, a bad tar) or failed.
    Store(ocibuild_snapshot::Error),
    /// Getting the blob failed.
    Build(BuildError),
}

/// The build error of a failed extraction of `layer` (at `index` in its image): a diff ID
/// that does not match the image config is a [`BuildError::LayerMismatch`].
fn mismatch(e: Extraction, layer: &Layer, index: usize) -> BuildError {
    let e = match e {
        Extraction::Build(e) => return e,
        Extraction::Store(e) => e,
    };
    match e {
        ocibuild_snapshot::Error::DigestMismatch {
            what: "diff_id",
            expected,
            found,
            ..
        } => BuildError::LayerMismatch {
            image: match &layer.blob {
                LayerBlob::Remote { source, .. } => source.to_string(),
                LayerBlob::Local(_) => "built by this build".into(),
            },
            index,
            digest: layer.digest().to_string(),
            expected,
            actual: found,
        },
        e => BuildError::snapshot(format!("extracting layer {}", layer.digest()))(e),
    }
}

/// The download side of a streamed extraction: hands every chunk to the extraction.
struct Tee {
    sender: Option<SyncSender<Vec<u8>>>,
    /// Bytes went to the extraction.
    sent: bool,
    /// An attempt started over after bytes went out: the extraction is abandoned.
    broken: bool,
}

impl BlobObserver for Tee {
    fn restart(&mut self) {
        if self.sent {
            self.broken = true;
            self.sender = None;
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        let Some(sender) = &self.sender else { return };
        // Waits while the extraction is behind (letting the runtime move its other tasks
        // elsewhere meanwhile); a finished extraction takes no more.
        let sent = crate::blocking::in_place(|| sender.send(bytes.to_vec()));
        if sent.is_err() {
            self.sender = None;
        }
        self.sent = true;
    }
}

/// The extraction side: the chunks of the download as a reader (at its end when the
/// download side is dropped).
struct Feed {
    receiver: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Feed {
    fn new(receiver: Receiver<Vec<u8>>) -> Feed {
        Feed {
            receiver,
            chunk: Vec::new(),
            at: 0,
        }
    }
}

impl Read for Feed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.receiver.recv() {
                Ok(chunk) => (self.chunk, self.at) = (chunk, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// A finished stage's (or a pulled image's) root filesystem, read only, for `COPY --from`
/// and `RUN --mount=...,from=`: a directory, or a read-only overlay view named by a path
/// into this process's descriptor of it (`/proc/<pid>/fd/<n>`, which other processes of
/// the same user can follow too), valid while a clone of this value lives.
#[derive(Debug, Clone)]
pub(crate) struct SourceTree {
    path: PathBuf,
    view: Option<Arc<RootDir>>,
}

impl SourceTree {
    /// The plain directory `dir`.
    pub fn dir(dir: PathBuf) -> SourceTree {
        SourceTree {
            path: dir,
            view: None,
        }
    }

    /// The mounted view `root`.
    fn of_view(root: RootDir) -> SourceTree {
        use std::os::fd::{AsFd, AsRawFd};
        let fd = root.as_dir().as_fd().as_raw_fd();
        SourceTree {
            path: PathBuf::from(format!("/proc/{}/fd/{fd}", std::process::id())),
            view: Some(Arc::new(root)),
        }
    }

    /// The path to read it by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether it is a mounted view, which the RUN sandbox cannot bind from (a bind
    /// mount of it binds a copy).
    pub fn is_view(&self) -> bool {
        self.view.is_some()
    }
}
