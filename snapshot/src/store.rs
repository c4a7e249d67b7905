//! The layer store: layers extracted once, verified, and shared by every later build.
//!
//! A [`LayerStore`] keeps each layer it is given, by diff ID, as a directory in
//! overlayfs lower-dir format ([`UnpackFormat::OverlayLower`]), ready to be stacked as a
//! lower directory of an overlay mount. A layer is extracted while its blob is read
//! ([`LayerStore::insert_from_reader`]), so it can be extracted while it downloads; the
//! blob's digest and the tar's diff ID are computed on the way, and a layer whose bytes do
//! not match them is discarded.
//!
//! # Layout
//!
//! ```text
//! ROOT/                       the four directories are made mode 0700 (images have
//!                             set-uid files)
//!   layers/sha256/<hex>/      the layer with diff ID sha256:<hex>; complete, never changed
//!   meta/<hex>.json           its record: blob digest, size on disk; mtime = last use
//!   locks/<hex>.lock          the layer's use lock (see below)
//!   locks/<hex>.insert.lock   held exclusively while the layer is extracted
//!   tmp/<hex>.<unique>        an extraction in progress, or a layer being removed
//!   steps/<pid>-<unique>/     a running build's step directories (overlay upper and
//!                             work directories), see [`LayerStore::step_dirs`]
//!   steps/<pid>-<unique>.lock held exclusively by that build
//!   overlay-xattrs            `trusted` or `user`: where the layers' overlay marks are
//!                             (`user.overlay.*` when written in a user namespace)
//! ```
//!
//! Layers come in by extraction ([`LayerStore::insert_from_reader`]) or, for layers a
//! build made with the overlay snapshotter, by renaming the step's upper directory into
//! place ([`LayerStore::adopt`]): the step directories are inside the store root, so on
//! its filesystem.
//!
//! # Concurrency and crashes
//!
//! A layer is extracted into `tmp/`, its record written, the filesystem synced, and the
//! directory renamed into `layers/sha256/`: a directory there is always complete, and a
//! process killed at any moment leaves at most leftovers in `tmp/`, `meta/` and `locks/`,
//! which [`LayerStore::open`] and [`LayerStore::prune`] remove.
//!
//! Every user of a layer ([`StoredLayer`]) holds a shared `flock` on its use lock for as
//! long as it uses it, and so does an insertion from before it looks whether the layer is
//! there. Removing a layer (pruning, or cleaning leftovers of one) takes that lock
//! exclusively without waiting, so a layer in use is never removed. Inserters of the same
//! layer take its insert lock in turn: the first extracts, the others wait and then find
//! the layer in place, without reading their blob. Locks held by a killed process are
//! released by the kernel.
//!
//! # Where it is
//!
//! [`default_store_dir`]: `layer-store/` inside the cache directory when one is given,
//! else `/var/lib/ocibuild` for root, and `$XDG_DATA_HOME/ocibuild` (or
//! `~/.local/share/ocibuild`) for anyone else.

use std::ffi::OsString;
use std::fs::{self, DirBuilder, File};
use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use ocibuild_image::digest::{DigestAlgorithm, HashingReader};

use crate::decompress::decompressed;
use crate::error::{io_err, Error, Result};
use crate::overlay::XattrNamespace;
use crate::rootfd::RootDir;
use crate::unpack::{unpack_layer_with, UnpackFormat, UnpackOptions, UnpackStats};

mod held;
mod lock;
mod prune;
mod steps;

pub use held::HeldDir;
pub use prune::{LayerEntry, PruneOptions, PruneReport};
pub use steps::StepDirs;

/// The file of the store root naming the xattr namespace of its overlay marks.
const XATTRS_FILE: &str = "overlay-xattrs";

/// The name of the store inside a cache directory.
pub const STORE_IN_CACHE_DIR: &str = "layer-store";

/// Where the layer store is by default: `layer-store/` in `cache_dir` when given, else
/// `/var/lib/ocibuild` when running as root, else `$XDG_DATA_HOME/ocibuild` (an absolute
/// `XDG_DATA_HOME` only) or `$HOME/.local/share/ocibuild`. `None` for a user without
/// either variable. Root of a user namespace (a rootless build) is not root here: its
/// store is the user's.
pub fn default_store_dir(cache_dir: Option<&Path>) -> Option<PathBuf> {
    store_dir_for(cache_dir, is_host_root(), |name| std::env::var_os(name))
}

/// True when this process is root of the initial user namespace (or of one mapping every
/// id to itself, as a rootful container's): root, and `/proc/self/uid_map` maps all ids
/// to themselves. Root of a rootless build's user namespace is not.
pub fn is_host_root() -> bool {
    if !nix::unistd::geteuid().is_root() {
        return false;
    }
    match fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => is_identity_map(&map),
        // No /proc: nothing says otherwise.
        Err(_) => true,
    }
}

/// True when the content of a `uid_map` maps every id to itself.
fn is_identity_map(map: &str) -> bool {
    map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"]
}

/// [`default_store_dir`] with the user and the environment given.
fn store_dir_for(
    cache_dir: Option<&Path>,
    is_root: bool,
    env: impl Fn(&str) -> Option<OsString>,
) -> Option<PathBuf> {
    if let Some(dir) = cache_dir {
        return Some(dir.join(STORE_IN_CACHE_DIR));
    }
    if is_root {
        return Some(PathBuf::from("/var/lib/ocibuild"));
    }
    let absolute = |name: &str| env(name).map(PathBuf::from).filter(|p| p.is_absolute());
    let data_home = absolute("XDG_DATA_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".local/share")))?;
    Some(data_home.join("ocibuild"))
}

/// The two digests a layer is announced with.
#[derive(Debug, Clone, Copy)]
pub struct LayerDigests<'a> {
    /// `sha256:<hex>` of the blob as stored in the registry (compressed).
    pub digest: &'a str,
    /// `sha256:<hex>` of the uncompressed tar: the key the layer is stored under.
    pub diff_id: &'a str,
}

/// A layer in the store, held: it is not removed while this value lives.
#[derive(Debug)]
pub struct StoredLayer {
    diff_id: String,
    path: PathBuf,
    size: u64,
    _lock: lock::Lock,
}

impl StoredLayer {
    /// The layer's diff ID.
    pub fn diff_id(&self) -> &str {
        &self.diff_id
    }

    /// The extracted layer (an overlayfs lower directory). Read-only: nothing may change it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bytes it takes on disk (0 when its record is missing).
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// What [`LayerStore::insert_from_reader`] did.
#[derive(Debug)]
pub struct Inserted {
    /// The layer, held.
    pub layer: StoredLayer,
    /// The counters of the extraction, or `None` when the layer was there already (then
    /// nothing was read).
    pub extracted: Option<UnpackStats>,
}

/// What the store records about a layer, in `meta/<hex>.json`.
#[derive(Debug, Serialize, Deserialize)]
struct LayerRecord {
    /// The blob digest it was extracted from.
    digest: String,
    /// Bytes on disk ([`UnpackStats::disk_bytes`]).
    size: u64,
    /// Tar entries.
    entries: u64,
}

/// A directory of extracted layers (see the module documentation).
#[derive(Debug, Clone)]
pub struct LayerStore {
    root: PathBuf,
}

impl LayerStore {
    /// Opens the store at `root`, creating it if needed, and removes what killed processes
    /// left behind (partial extractions, records and locks of layers that are not there).
    /// Its `tmp/` and `steps/`, where extractions and upper directories are made, spread
    /// new trees over the filesystem ([`crate::spread`]).
    pub fn open(root: &Path) -> Result<LayerStore> {
        let store = LayerStore {
            root: root.to_path_buf(),
        };
        let mut builder = DirBuilder::new();
        builder.recursive(true).mode(0o700);
        for dir in [store.layers_dir(), store.meta_dir(), store.locks_dir()] {
            builder
                .create(&dir)
                .map_err(io_err(&dir, "create directory"))?;
        }
        for dir in [store.tmp_dir(), store.steps_dir()] {
            builder
                .create(&dir)
                .map_err(io_err(&dir, "create directory"))?;
            // Extractions and upper directories are made in these.
            crate::spread::spread_subdirectories(&dir);
        }
        store.check_xattrs(XattrNamespace::current())?;
        store.sweep()?;
        Ok(store)
    }

    /// Records in `overlay-xattrs` the xattr namespace of the overlay marks of the layers
    /// (`trusted` or `user`, see [`XattrNamespace`]) when the store is new, else checks
    /// that it is `ns`: a mount reads the marks of its own namespace only.
    fn check_xattrs(&self, ns: XattrNamespace) -> Result<()> {
        let file = self.root.join(XATTRS_FILE);
        match fs::read_to_string(&file) {
            Ok(written) if written.trim() == ns.name() => Ok(()),
            Ok(written) => Err(Error::StoreXattrs {
                store: self.root.clone(),
                written: written.trim().to_string(),
                wanted: ns.name(),
                why: match ns {
                    XattrNamespace::Trusted => "host root",
                    XattrNamespace::User => "not host root: a rootless build",
                },
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let tmp = self
                    .tmp_dir()
                    .join(format!("{XATTRS_FILE}.{}", std::process::id()));
                fs::write(&tmp, format!("{}\n", ns.name())).map_err(io_err(&tmp, "write file"))?;
                fs::rename(&tmp, &file).map_err(io_err(&file, "rename into place"))
            }
            Err(e) => Err(Error::io(&file, "read file", e)),
        }
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The layer with `diff_id`, held, if the store has it; its last use becomes now.
    pub fn get(&self, diff_id: &str) -> Result<Option<StoredLayer>> {
        let hex = checked_hex(diff_id)?;
        if !self.is_present(hex) {
            return Ok(None);
        }
        let lock = lock::wait(&self.use_lock(hex), lock::Kind::Shared)?;
        if !self.is_present(hex) {
            return Ok(None);
        }
        Ok(Some(self.held(hex, lock)))
    }

    /// Stores the layer whose blob `reader` yields (gzip, zstd or plain tar, told by the
    /// magic bytes), extracting it while reading, unless the store has it already. The
    /// blob must hash to `digests.digest` and its tar to `digests.diff_id`; when either
    /// does not, nothing is kept and the error is [`Error::DigestMismatch`]. Concurrent
    /// insertions of one layer, in any processes, extract it once: the others wait for it.
    pub fn insert_from_reader(&self, reader: impl Read, digests: LayerDigests) -> Result<Inserted> {
        let hex = checked_hex(digests.diff_id)?;
        checked_hex(digests.digest)?;
        let use_lock = lock::wait(&self.use_lock(hex), lock::Kind::Shared)?;
        let extracted = if self.is_present(hex) {
            None
        } else {
            let insert_lock = lock::wait(&self.insert_lock(hex), lock::Kind::Exclusive)?;
            let stats = match self.is_present(hex) {
                true => None,
                false => Some(self.extract(reader, digests, hex)?),
            };
            drop(insert_lock);
            stats
        };
        Ok(Inserted {
            layer: self.held(hex, use_lock),
            extracted,
        })
    }

    /// Whether the store holds the layer `diff_id` extracted from (or written as) the blob
    /// `digest`: then that blob was verified against both digests and needs no download
    /// to check its diff ID.
    pub fn holds_blob(&self, diff_id: &str, digest: &str) -> bool {
        let Ok(hex) = checked_hex(diff_id) else {
            return false;
        };
        self.is_present(hex) && self.read_record(hex).is_some_and(|r| r.digest == digest)
    }

    /// Adopts the finished layer directory `dir`: renames it into the store as the layer
    /// `digests` name, unless the store has that layer already (then `dir` is left as it
    /// is, for the caller to remove, and `extracted` is `None`). `dir` must be in overlay
    /// lower-dir format and hold exactly that layer (a committed overlay upper directory
    /// settled with [`crate::overlay::settle_upper`]); nothing here reads the blob to check.
    /// It must be on the store's filesystem, as directories in [`LayerStore::step_dirs`]
    /// are: elsewhere the rename fails (`EXDEV`) and nothing changes.
    pub fn adopt(&self, dir: &Path, digests: LayerDigests) -> Result<Inserted> {
        let hex = checked_hex(digests.diff_id)?;
        checked_hex(digests.digest)?;
        let use_lock = lock::wait(&self.use_lock(hex), lock::Kind::Shared)?;
        let insert_lock = lock::wait(&self.insert_lock(hex), lock::Kind::Exclusive)?;
        let extracted = match self.is_present(hex) {
            true => None,
            false => {
                let stats = dir_stats(dir)?;
                self.commit(hex, dir, digests, &stats)?;
                Some(stats)
            }
        };
        drop(insert_lock);
        Ok(Inserted {
            layer: self.held(hex, use_lock),
            extracted,
        })
    }

    /// [`LayerStore::insert_from_reader`] for a blob in the file at `path`.
    pub fn insert_from_file(&self, path: &Path, digests: LayerDigests) -> Result<Inserted> {
        let file = File::open(path).map_err(io_err(path, "open layer"))?;
        self.insert_from_reader(file, digests)
    }

    /// Extracts the blob `reader` into a new directory under `tmp/`, checks its digests
    /// and moves it into place. The caller holds the layer's insert lock.
    fn extract(&self, reader: impl Read, digests: LayerDigests, hex: &str) -> Result<UnpackStats> {
        let tmp = self.temp_path(hex, "");
        DirBuilder::new()
            .mode(0o755)
            .create(&tmp)
            .map_err(io_err(&tmp, "create directory"))?;
        let result = extract_verified(reader, digests, &tmp).and_then(|stats| {
            self.commit(hex, &tmp, digests, &stats)?;
            Ok(stats)
        });
        if result.is_err() {
            // What cannot be removed now is a leftover the next sweep removes.
            let _ = self.remove_temp(&tmp);
        }
        result
    }

    /// Writes the record of the layer extracted in `tmp`, syncs the filesystem and renames
    /// the layer into place.
    fn commit(
        &self,
        hex: &str,
        tmp: &Path,
        digests: LayerDigests,
        stats: &UnpackStats,
    ) -> Result<()> {
        let record = LayerRecord {
            digest: digests.digest.to_string(),
            size: stats.disk_bytes,
            entries: stats.entries,
        };
        let json = serde_json::to_vec(&record).unwrap_or_else(|_| unreachable!("plain fields"));
        let record_path = self.record(hex);
        let record_tmp = self.temp_path(hex, ".json");
        ocibuild_image::atomic::write_atomic(&record_tmp, &record_path, &json)
            .map_err(|e| Error::io(&e.path, e.action, e.source))?;
        let dir = File::open(tmp).map_err(io_err(tmp, "open"))?;
        rustix::fs::syncfs(&dir).map_err(|e| Error::io(tmp, "syncfs", e.into()))?;
        let dest = self.layer_path(hex);
        fs::rename(tmp, &dest).map_err(io_err(&dest, "rename into place"))?;
        ocibuild_image::atomic::sync_dir(&self.layers_dir())
            .map_err(|e| Error::io(&e.path, e.action, e.source))
    }

    /// A handle on the present layer `hex`, holding `lock`; marks its use.
    fn held(&self, hex: &str, lock: lock::Lock) -> StoredLayer {
        let record = self.record(hex);
        let _ = filetime::set_file_mtime(&record, filetime::FileTime::now());
        StoredLayer {
            diff_id: format!("sha256:{hex}"),
            path: self.layer_path(hex),
            size: self.read_record(hex).map_or(0, |r| r.size),
            _lock: lock,
        }
    }

    /// The record of layer `hex`, if it is there and readable.
    fn read_record(&self, hex: &str) -> Option<LayerRecord> {
        let bytes = fs::read(self.record(hex)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn is_present(&self, hex: &str) -> bool {
        fs::symlink_metadata(self.layer_path(hex)).is_ok_and(|m| m.is_dir())
    }

    /// Removes `path`, a directory or file directly in `tmp/`, never following a link in it.
    fn remove_temp(&self, path: &Path) -> Result<()> {
        let tmp = RootDir::open(&self.tmp_dir())?;
        let name = path.file_name().unwrap_or_default();
        tmp.as_dir().remove_all(name)
    }

    /// A new, unique path in `tmp/` for layer `hex`, ending in `suffix`.
    fn temp_path(&self, hex: &str, suffix: &str) -> PathBuf {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        self.tmp_dir()
            .join(format!("{hex}.{pid}-{n}-{nanos:08x}{suffix}"))
    }

    fn layers_dir(&self) -> PathBuf {
        self.root.join("layers").join("sha256")
    }

    fn layer_path(&self, hex: &str) -> PathBuf {
        self.layers_dir().join(hex)
    }

    fn meta_dir(&self) -> PathBuf {
        self.root.join("meta")
    }

    fn record(&self, hex: &str) -> PathBuf {
        self.meta_dir().join(format!("{hex}.json"))
    }

    fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }

    fn use_lock(&self, hex: &str) -> PathBuf {
        self.locks_dir().join(format!("{hex}.lock"))
    }

    fn insert_lock(&self, hex: &str) -> PathBuf {
        self.locks_dir().join(format!("{hex}.insert.lock"))
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
}

/// The hex part of the sha256 digest `digest` (64 lowercase hex digits, so a safe file
/// name), or [`Error::InvalidDigest`].
fn checked_hex(digest: &str) -> Result<&str> {
    match ocibuild_image::digest::parse(digest) {
        Ok(parsed) if parsed.algorithm() == &DigestAlgorithm::Sha256 => Ok(&digest[7..]),
        _ => Err(Error::InvalidDigest {
            digest: digest.to_string(),
        }),
    }
}

/// The entries below `dir` and the bytes they take on disk (directories and files by
/// their blocks, each hard-linked file once), as [`UnpackStats`].
fn dir_stats(dir: &Path) -> Result<UnpackStats> {
    let mut stats = UnpackStats::default();
    count_below(dir, &mut stats, &mut std::collections::HashSet::new())?;
    Ok(stats)
}

/// Adds the entries below `dir` to `stats`; `seen` holds the hard-linked files counted.
fn count_below(
    dir: &Path,
    stats: &mut UnpackStats,
    seen: &mut std::collections::HashSet<(u64, u64)>,
) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    // Read only: a finished layer directory no command runs in.
    for entry in fs::read_dir(dir).map_err(io_err(dir, "read directory"))? {
        let entry = entry.map_err(io_err(dir, "read directory"))?;
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(io_err(&path, "lstat"))?;
        stats.entries += 1;
        if meta.nlink() < 2 || meta.is_dir() || seen.insert((meta.dev(), meta.ino())) {
            stats.disk_bytes += meta.blocks() * 512;
        }
        if meta.is_dir() {
            count_below(&path, stats, seen)?;
        }
    }
    Ok(())
}

/// Extracts the blob `reader` into `dir` in overlay lower-dir format, reads it to its end
/// and checks both digests. A blob that does not match its digest is reported as such
/// even when it could not be extracted.
fn extract_verified(reader: impl Read, digests: LayerDigests, dir: &Path) -> Result<UnpackStats> {
    let mut blob = HashingReader::new(reader);
    let extracted = extract_tar(&mut blob, dir);
    let (digest, _) = blob.finish().map_err(|source| Error::TarRead { source })?;
    let mismatch = |what, expected: &str, found| Error::DigestMismatch {
        diff_id: digests.diff_id.to_string(),
        what,
        expected: expected.to_string(),
        found,
    };
    if digest != digests.digest {
        return Err(mismatch("digest", digests.digest, digest));
    }
    let (stats, diff_id) = extracted?;
    if diff_id != digests.diff_id {
        return Err(mismatch("diff_id", digests.diff_id, diff_id));
    }
    Ok(stats)
}

/// Extracts the blob `blob` into `dir`; returns the counters and the tar's diff ID.
fn extract_tar(blob: impl Read, dir: &Path) -> Result<(UnpackStats, String)> {
    let tar = decompressed(blob).map_err(|source| Error::TarRead { source })?;
    let mut tar = HashingReader::new(tar);
    let options = UnpackOptions {
        format: UnpackFormat::OverlayLower,
        skip: Vec::new(),
    };
    let stats = unpack_layer_with(&mut tar, dir, &options)?;
    let (diff_id, _) = tar.finish().map_err(|source| Error::TarRead { source })?;
    Ok((stats, diff_id))
}

#[cfg(test)]
mod tests;
