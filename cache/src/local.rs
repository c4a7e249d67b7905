//! [`LocalCache`]: the layer cache in a directory shared by concurrent builds.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::fsutil::{
    check_blob, copy_to_temp, digest_hex, is_same, lock_within, remove_if_exists, remove_if_same,
    sha256_of, sync_dir, temp_name, touch, validate_key, write_atomic, BlobCheck, FileId, FileLock,
    LockKind,
};
use super::tempfiles::{Staged, TempFiles};
use super::{format_size, CacheError, CachedLayer, NotStored};

mod collect;

/// How many times a lookup is tried again when its entry was replaced under it.
const LOOKUP_RETRIES: u32 = 3;

/// How long a store or an eviction waits for `DIR/lock` before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(60);

pub use collect::CacheUsage;

/// A cached base image manifest and config, as stored in `images/<hex>.json`.
#[derive(Serialize, Deserialize)]
struct StoredImage {
    /// The manifest bytes, base64.
    manifest: String,
    /// The config bytes, base64.
    config: String,
}

/// The layer cache in a directory (see the [module documentation](super) for the layout
/// and the rules that make it safe for several processes at once).
#[derive(Debug, Clone)]
pub struct LocalCache {
    dir: PathBuf,
    blobs: PathBuf,
    keys: PathBuf,
    images: PathBuf,
    diff_ids: PathBuf,
    refs: PathBuf,
    tmp: TempFiles,
    max_size: Option<u64>,
}

impl LocalCache {
    /// Opens (creating if needed) the cache in `dir`. With `max_size`, storing evicts the
    /// least recently used blobs and their entries while the blobs total more than that
    /// many bytes. Opening cleans up after processes that are gone: the temporary files of
    /// killed writers are removed at once, and so are orphan blobs (blobs no entry refers
    /// to, left when several builds stored the same key); cleaning up is best-effort and
    /// never fails the open.
    pub fn open(dir: &Path, max_size: Option<u64>) -> Result<LocalCache, CacheError> {
        let cache = LocalCache {
            dir: dir.to_path_buf(),
            blobs: dir.join("blobs").join("sha256"),
            keys: dir.join("keys"),
            images: dir.join("images"),
            diff_ids: dir.join("diffids"),
            refs: dir.join("refs"),
            tmp: TempFiles::new(dir.join("tmp")),
            max_size,
        };
        for d in [
            &cache.blobs,
            &cache.keys,
            &cache.images,
            &cache.diff_ids,
            &cache.refs,
            cache.tmp.dir(),
        ] {
            fs::create_dir_all(d).map_err(CacheError::io("create directory", d))?;
        }
        cache.tmp.reclaim();
        cache.tidy();
        Ok(cache)
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The size limit given to [`LocalCache::open`].
    pub fn max_size(&self) -> Option<u64> {
        self.max_size
    }

    /// A fresh temporary file name inside the cache's `tmp/` directory (on the cache's
    /// filesystem, so a download written there can be moved in by [`LocalCache::put_blob`]
    /// without copying). The file is not created; it belongs to this process, and is
    /// removed by the next [`LocalCache::open`] once the process is gone.
    pub fn temp_path(&self, what: &str) -> PathBuf {
        let what: String = what
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(32)
            .collect();
        let what = if what.is_empty() { "file" } else { &what };
        // Without a writer file (a full directory), a plain name, removed after an hour.
        self.tmp
            .path(what)
            .unwrap_or_else(|_| temp_name(self.tmp.dir(), what))
    }

    fn entry_path(&self, key: &str) -> PathBuf {
        self.keys.join(format!("{key}.json"))
    }

    fn blob_path(&self, hex: &str) -> PathBuf {
        self.blobs.join(hex)
    }

    /// The lock on `DIR/lock`: shared by writers while they make a blob and what refers to
    /// it appear, exclusive while orphans are collected and blobs evicted. Tried for up to
    /// `wait`; `None` when others held it all that time (a stopped or stuck process).
    fn lock(&self, kind: LockKind, wait: Duration) -> Result<Option<FileLock>, CacheError> {
        lock_within(&self.dir.join("lock"), kind, wait)
    }

    /// Looks `key` up. The blob is verified (size and sha256); when it is missing or
    /// corrupt, or the entry is unreadable, the entry (and a corrupt blob) is removed, a
    /// warning naming the key is pushed to `warnings` and the result is `None`; so is a
    /// failing disk (`EIO`). A hit refreshes the entry's last use. Returns the entry and
    /// the blob's path.
    pub fn get(
        &self,
        key: &str,
        warnings: &mut Vec<String>,
    ) -> Result<Option<(CachedLayer, PathBuf)>, CacheError> {
        validate_key(key)?;
        match self.lookup(key, warnings, LOOKUP_RETRIES) {
            Err(e) if e.is_storage_fault() => {
                warnings.push(format!(
                    "layer cache entry {key} could not be read ({e}); treated as a miss"
                ));
                Ok(None)
            }
            found => found,
        }
    }

    /// [`LocalCache::get`] without the treatment of a failing disk. An entry replaced by
    /// another build while it was looked up (whose old blob was collected meanwhile) is
    /// looked up again, at most `retries` times more.
    fn lookup(
        &self,
        key: &str,
        warnings: &mut Vec<String>,
        retries: u32,
    ) -> Result<Option<(CachedLayer, PathBuf)>, CacheError> {
        let entry_path = self.entry_path(key);
        let (bytes, entry_id) = match read_with_identity(&entry_path) {
            Ok(Some(x)) => x,
            Ok(None) => return Ok(None),
            Err(e) => return Err(CacheError::io("read", &entry_path)(e)),
        };
        let layer = match serde_json::from_slice::<CachedLayer>(&bytes) {
            Ok(layer) => match layer.validate() {
                Ok(()) => layer,
                Err(e) => {
                    warnings.push(format!(
                        "layer cache entry {key} is invalid ({e}); removed it"
                    ));
                    remove_if_same(&entry_path, entry_id);
                    return Ok(None);
                }
            },
            Err(e) => {
                warnings.push(format!(
                    "layer cache entry {key} is unreadable ({e}); removed it"
                ));
                remove_if_same(&entry_path, entry_id);
                return Ok(None);
            }
        };
        let hex = digest_hex(&layer.digest)?;
        let blob = self.blob_path(hex);
        let check = check_blob(&blob, &layer.digest, Some(layer.size))
            .map_err(CacheError::io("read", &blob))?;
        match check {
            BlobCheck::Intact => {
                touch(&entry_path);
                touch(&blob);
                Ok(Some((layer, blob)))
            }
            BlobCheck::Missing if !is_same(&entry_path, entry_id) => match retries {
                0 => Ok(None),
                _ => self.lookup(key, warnings, retries - 1),
            },
            BlobCheck::Missing => {
                warnings.push(format!(
                    "layer cache entry {key}: its blob {} is missing; removed the entry",
                    layer.digest
                ));
                remove_if_same(&entry_path, entry_id);
                Ok(None)
            }
            BlobCheck::Corrupt { why, identity } => {
                warnings.push(format!(
                    "layer cache entry {key}: its blob {} is corrupt ({why}); removed the entry and the blob",
                    layer.digest
                ));
                remove_if_same(&blob, identity);
                remove_if_same(&entry_path, entry_id);
                Ok(None)
            }
        }
    }

    /// Stores the layer `file` under `key`: the blob goes to `blobs/sha256/<hex>`
    /// (hard-linked when `file` is on the same filesystem, copied otherwise; nothing is done
    /// when that blob is already there), then the entry to `keys/<key>.json`, both through
    /// a temporary file, fsync and rename. The file's size must be `layer.size` and its
    /// sha256 `layer.digest`. Afterwards, with a size limit, least recently used blobs and
    /// their entries are evicted while the total exceeds it (never the blob just stored).
    ///
    /// Storing is best-effort: a layer larger than the size limit, a full filesystem (after
    /// evicting least recently used blobs to make room, once) or a failing one gives
    /// [`CacheError::NotStored`], a warning for the caller.
    ///
    /// A hard-linked blob shares its inode with `file`: the caller must not rewrite `file`
    /// in place afterwards (replacing or removing it is fine; ocibuild writes layer files to
    /// a temporary name and renames them). Were it rewritten, the next lookup would notice
    /// the mismatch and drop the entry with a warning.
    pub fn put(&self, key: &str, layer: &CachedLayer, file: &Path) -> Result<(), CacheError> {
        validate_key(key)?;
        layer.check_file(file)?;
        let hex = digest_hex(&layer.digest)?;
        let what = format!("entry {key}");
        self.check_fits(&what, layer.size)?;
        let json = serde_json::to_vec_pretty(layer).map_err(|e| CacheError::InvalidEntry {
            reason: format!("cannot serialise it: {e}"),
        })?;
        self.with_room(&what, layer.size, || {
            let _placed = self.place_blob(hex, &layer.digest, file, layer.size)?;
            write_atomic(&self.tmp.path("entry")?, &self.entry_path(key), &json)
        })?;
        self.evict(Some(hex))
    }

    /// A [`NotStored`] unless a blob of `size` bytes fits under the size limit.
    fn check_fits(&self, what: &str, size: u64) -> Result<(), CacheError> {
        match self.max_size {
            Some(max) if size > max => Err(NotStored {
                what: what.to_string(),
                reason: format!(
                    "it has {}, more than the cache's size limit of {}",
                    format_size(size),
                    format_size(max)
                ),
            }
            .into()),
            _ => Ok(()),
        }
    }

    /// Runs `store`, best-effort. When the filesystem is full, least recently used blobs
    /// are evicted to make room for `size` more bytes and `store` runs once more; a full or
    /// failing filesystem then gives [`CacheError::NotStored`] for `what`.
    fn with_room<T>(
        &self,
        what: &str,
        size: u64,
        store: impl Fn() -> Result<T, CacheError>,
    ) -> Result<T, CacheError> {
        let not_stored = |reason: String| -> CacheError {
            NotStored {
                what: what.to_string(),
                reason,
            }
            .into()
        };
        let full = match store() {
            Err(e) if e.is_no_space() => e,
            Err(e) if e.is_storage_fault() => return Err(not_stored(e.to_string())),
            done => return done,
        };
        let freed = self.make_room(size).unwrap_or(0);
        if freed == 0 {
            return Err(not_stored(format!(
                "{full}; nothing could be evicted to make room"
            )));
        }
        match store() {
            Err(e) if e.is_storage_fault() => Err(not_stored(format!(
                "{e} (after evicting {} to make room)",
                format_size(freed)
            ))),
            done => done,
        }
    }

    /// Makes `blobs/sha256/<hex>` hold `src` (of `size` bytes, announced as `digest`;
    /// `src` itself is left in place) unless a blob of that size is there, and returns
    /// holding the shared lock: no orphan collection or eviction can remove the blob until
    /// the caller has written what refers to it and dropped the lock. The slow part
    /// (hashing, or copying across filesystems) is done before taking the lock.
    fn place_blob(
        &self,
        hex: &str,
        digest: &str,
        src: &Path,
        size: u64,
    ) -> Result<FileLock, CacheError> {
        let dest = self.blob_path(hex);
        let present =
            |dest: &Path| fs::metadata(dest).is_ok_and(|m| m.is_file() && m.len() == size);
        let mut staged = match present(&dest) {
            true => None,
            false => Some(self.stage_blob(digest, src)?),
        };
        let Some(shared) = self.lock(LockKind::Shared, LOCK_WAIT)? else {
            return Err(NotStored {
                what: format!("blob {digest}"),
                reason: format!(
                    "{} stayed locked for {} s (another process is stuck evicting)",
                    self.dir.join("lock").display(),
                    LOCK_WAIT.as_secs()
                ),
            }
            .into());
        };
        if staged.is_none() && !present(&dest) {
            // Evicted between the look and the lock: stage it again, under the lock.
            staged = Some(self.stage_blob(digest, src)?);
        }
        match staged {
            None => touch(&dest),
            Some(staged) => {
                fs::rename(staged.path(), &dest)
                    .map_err(CacheError::io("rename into place", &dest))?;
                sync_dir(&self.blobs)?;
            }
        }
        Ok(shared)
    }

    /// A verified temporary copy of `src` in `tmp/`: a hard link (then hashed) costs no
    /// copy; across filesystems, a copy hashed on the way.
    fn stage_blob(&self, digest: &str, src: &Path) -> Result<Staged, CacheError> {
        let linked = self.tmp.path("link")?;
        let (staged, actual) = match fs::hard_link(src, &linked) {
            Ok(()) => {
                let staged = Staged::new(linked);
                touch(staged.path());
                let (actual, _) = File::open(staged.path())
                    .and_then(|f| {
                        f.sync_all()?;
                        sha256_of(io::BufReader::new(f))
                    })
                    .map_err(CacheError::io("read", src))?;
                (staged, actual)
            }
            Err(_) => {
                let (tmp, actual, _) = copy_to_temp(self.tmp.path("blob")?, src)?;
                (Staged::new(tmp), actual)
            }
        };
        if actual != digest {
            return Err(CacheError::DigestMismatch {
                what: src.display().to_string(),
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(staged)
    }

    /// Whether a file for blob `digest` is present, without reading it (so without
    /// checking it: [`LocalCache::blob`] does that before it is used).
    pub fn has_blob(&self, digest: &str) -> bool {
        digest_hex(digest).is_ok_and(|hex| self.blob_path(hex).exists())
    }

    /// The path of blob `digest` if it is present and intact (sha256 verified; a corrupt
    /// blob is removed). A hit refreshes the blob's last use.
    pub fn blob(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest_hex(digest).ok()?;
        let path = self.blob_path(hex);
        match check_blob(&path, digest, None).ok()? {
            BlobCheck::Intact => {
                touch(&path);
                Some(path)
            }
            BlobCheck::Missing => None,
            BlobCheck::Corrupt { identity, .. } => {
                remove_if_same(&path, identity);
                None
            }
        }
    }

    /// Adds the blob in `file` (for instance a base-image layer just downloaded to
    /// [`LocalCache::temp_path`]) after checking its sha256 against `digest`, and returns
    /// its path in the cache. The blob appears atomically (moved when on the same
    /// filesystem, copied otherwise) with its reference `refs/<hex>`, which keeps it from
    /// being taken for an orphan. On success `file` is consumed (removed); on error it is
    /// left alone. Adding a blob that is already present only removes `file`.
    ///
    /// The caller needs the blob, so one larger than the size limit is kept too (without
    /// evicting anything for it); it is the first to go at the next eviction. A full or
    /// failing filesystem gives [`CacheError::NotStored`] as for [`LocalCache::put`].
    pub fn put_blob(&self, digest: &str, file: &Path) -> Result<PathBuf, CacheError> {
        let hex = digest_hex(digest)?;
        let size = fs::metadata(file)
            .map_err(CacheError::io("read", file))?
            .len();
        let what = format!("blob {digest}");
        let path = self.with_room(&what, size, || {
            self.place_referenced_blob(hex, digest, file, size)
        })?;
        remove_if_exists(file).map_err(CacheError::io("remove", file))?;
        self.evict(Some(hex))?;
        Ok(path)
    }

    /// [`LocalCache::put_blob`] for a blob downloaded outside the cache (a base-image layer
    /// in the build's work directory), best-effort: records `diff_id` as
    /// [`LocalCache::put_diff_id`] does, then adds `file`, which is left in place
    /// (hard-linked into the cache when on the same filesystem, copied otherwise; it must
    /// not be rewritten in place afterwards). Returns the blob's path in the cache, or a
    /// [`NotStored`] — for a blob larger than the size limit, a full or failing cache
    /// directory (after evicting to make room) or any other reason — that the caller shows
    /// as a warning before carrying on with `file`.
    pub fn put_blob_best_effort(
        &self,
        digest: &str,
        diff_id: &str,
        file: &Path,
    ) -> Result<PathBuf, NotStored> {
        let what = format!("blob {digest}");
        let stored = (|| {
            let hex = digest_hex(digest)?;
            let size = fs::metadata(file)
                .map_err(CacheError::io("read", file))?
                .len();
            self.check_fits(&what, size)?;
            self.put_diff_id(digest, diff_id)?;
            let path = self.with_room(&what, size, || {
                self.place_referenced_blob(hex, digest, file, size)
            })?;
            self.evict(Some(hex))?;
            Ok(path)
        })();
        stored.map_err(|e| match e {
            CacheError::NotStored(not_stored) => not_stored,
            other => NotStored {
                what,
                reason: other.to_string(),
            },
        })
    }

    /// Places blob `file` and its reference `refs/<hex>` (under the shared lock, so that the
    /// blob never looks like an orphan); returns the blob's path.
    fn place_referenced_blob(
        &self,
        hex: &str,
        digest: &str,
        file: &Path,
        size: u64,
    ) -> Result<PathBuf, CacheError> {
        let _placed = self.place_blob(hex, digest, file, size)?;
        let reference = self.refs.join(hex);
        File::create(&reference).map_err(CacheError::io("create", &reference))?;
        Ok(self.blob_path(hex))
    }

    /// Records that blob `digest` decompresses to `diff_id`, as computed by ocibuild while
    /// it downloaded or read the blob (never as an image config claims it). The record is
    /// a fact about the content, so it stays valid when the blob is evicted. A full or
    /// failing filesystem gives [`CacheError::NotStored`]: the record only saves
    /// recomputing the diff_id.
    pub fn put_diff_id(&self, digest: &str, diff_id: &str) -> Result<(), CacheError> {
        let hex = digest_hex(digest)?;
        digest_hex(diff_id)?;
        let what = format!("the diff_id of blob {digest}");
        self.with_room(&what, 0, || {
            let dest = self.diff_ids.join(hex);
            write_atomic(&self.tmp.path("diffid")?, &dest, diff_id.as_bytes())
        })
    }

    /// The diff_id recorded by [`LocalCache::put_diff_id`] for blob `digest`, if any.
    pub fn diff_id(&self, digest: &str) -> Option<String> {
        let hex = digest_hex(digest).ok()?;
        let text = fs::read_to_string(self.diff_ids.join(hex)).ok()?;
        digest_hex(&text).is_ok().then_some(text)
    }

    /// Stores the manifest and config of a base image under the manifest's digest, so that
    /// later builds (and a warm-up run) need not ask the registry. `manifest` must hash to
    /// `manifest_digest` and `config` to the config digest the manifest names. A full or
    /// failing filesystem gives [`CacheError::NotStored`].
    pub fn put_image(
        &self,
        manifest_digest: &str,
        manifest: &[u8],
        config: &[u8],
    ) -> Result<(), CacheError> {
        let hex = digest_hex(manifest_digest)?;
        check_image(manifest_digest, manifest, config)?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let stored = StoredImage {
            manifest: b64.encode(manifest),
            config: b64.encode(config),
        };
        let json = serde_json::to_vec(&stored).map_err(|e| CacheError::InvalidEntry {
            reason: format!("cannot serialise an image: {e}"),
        })?;
        let what = format!("image {manifest_digest}");
        self.with_room(&what, json.len() as u64, || {
            let dest = self.images.join(format!("{hex}.json"));
            write_atomic(&self.tmp.path("image")?, &dest, &json)
        })
    }

    /// How long ago the image entry of `manifest_digest` was stored (or last read by
    /// [`LocalCache::image`]), from its modification time; `None` when there is no entry.
    /// A time in the future counts as just now.
    pub fn image_age(&self, manifest_digest: &str) -> Option<Duration> {
        let hex = digest_hex(manifest_digest).ok()?;
        let modified = fs::metadata(self.images.join(format!("{hex}.json")))
            .ok()?
            .modified()
            .ok()?;
        Some(modified.elapsed().unwrap_or(Duration::ZERO))
    }

    /// The manifest and config stored by [`LocalCache::put_image`] for `manifest_digest`,
    /// if present and intact (an entry that fails its digest checks is removed).
    pub fn image(&self, manifest_digest: &str) -> Option<(Vec<u8>, Vec<u8>)> {
        let hex = digest_hex(manifest_digest).ok()?;
        let path = self.images.join(format!("{hex}.json"));
        let (bytes, identity) = read_with_identity(&path).ok()??;
        let b64 = base64::engine::general_purpose::STANDARD;
        let decoded = serde_json::from_slice::<StoredImage>(&bytes)
            .ok()
            .and_then(|s| Some((b64.decode(s.manifest).ok()?, b64.decode(s.config).ok()?)))
            .filter(|(m, c)| check_image(manifest_digest, m, c).is_ok());
        match decoded {
            Some(found) => {
                touch(&path);
                Some(found)
            }
            None => {
                remove_if_same(&path, identity);
                None
            }
        }
    }
}

/// The content of `path` and its (dev, inode); `None` when it does not exist.
fn read_with_identity(path: &Path) -> io::Result<Option<(Vec<u8>, FileId)>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(Some((bytes, (meta.dev(), meta.ino()))))
}

/// Checks that `manifest` hashes to `manifest_digest`, names a sha256 config and that
/// `config` hashes to it.
fn check_image(manifest_digest: &str, manifest: &[u8], config: &[u8]) -> Result<(), CacheError> {
    let actual = ocibuild_image::digest::sha256_digest(manifest);
    if actual != manifest_digest {
        return Err(CacheError::DigestMismatch {
            what: "the image manifest".into(),
            expected: manifest_digest.to_string(),
            actual,
        });
    }
    let parsed = ocibuild_image::manifest::parse_manifest(manifest).map_err(|e| {
        CacheError::InvalidEntry {
            reason: format!("the manifest {manifest_digest} is {e}"),
        }
    })?;
    let actual = ocibuild_image::digest::sha256_digest(config);
    let expected = parsed.config().digest().to_string();
    if actual != expected {
        return Err(CacheError::DigestMismatch {
            what: format!("the config of image {manifest_digest}"),
            expected,
            actual,
        });
    }
    Ok(())
}
