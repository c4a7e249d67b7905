//! [`LocalCache`]: the layer cache in a directory shared by concurrent builds.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::fsutil::{
    check_blob, copy_to_temp, digest_hex, is_sha256_hex, remove_if_exists, remove_if_same,
    sha256_of, sync_dir, temp_name, touch, try_lock, validate_key, write_atomic, BlobCheck, FileId,
};
use super::{CacheError, CachedLayer};

/// Temporary files older than this are left over from a killed process.
const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);

/// What a cache directory holds (see [`LocalCache::usage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheUsage {
    /// Total size of all blobs in bytes.
    pub blob_bytes: u64,
    /// Number of blobs (step layers and base-image layers).
    pub blobs: u64,
    /// Number of step entries (`keys/*.json`).
    pub entries: u64,
    /// Number of cached base-image manifests (`images/*.json`).
    pub images: u64,
}

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
    tmp: PathBuf,
    max_size: Option<u64>,
}

impl LocalCache {
    /// Opens (creating if needed) the cache in `dir`. With `max_size`, storing evicts the
    /// least recently used blobs and their entries while the blobs total more than that
    /// many bytes. Temporary files older than an hour, left by killed processes, are removed.
    pub fn open(dir: &Path, max_size: Option<u64>) -> Result<LocalCache, CacheError> {
        let cache = LocalCache {
            dir: dir.to_path_buf(),
            blobs: dir.join("blobs").join("sha256"),
            keys: dir.join("keys"),
            images: dir.join("images"),
            diff_ids: dir.join("diffids"),
            tmp: dir.join("tmp"),
            max_size,
        };
        for d in [
            &cache.blobs,
            &cache.keys,
            &cache.images,
            &cache.diff_ids,
            &cache.tmp,
        ] {
            fs::create_dir_all(d).map_err(CacheError::io("create directory", d))?;
        }
        cache.remove_stale_temp_files();
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
    /// without copying). The file is not created.
    pub fn temp_path(&self, what: &str) -> PathBuf {
        let what: String = what
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(32)
            .collect();
        temp_name(&self.tmp, if what.is_empty() { "file" } else { &what })
    }

    fn remove_stale_temp_files(&self) {
        let Ok(entries) = fs::read_dir(&self.tmp) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            let old = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age > STALE_TEMP_AGE);
            if old && !meta.is_dir() {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    fn entry_path(&self, key: &str) -> PathBuf {
        self.keys.join(format!("{key}.json"))
    }

    fn blob_path(&self, hex: &str) -> PathBuf {
        self.blobs.join(hex)
    }

    /// Looks `key` up. The blob is verified (size and sha256); when it is missing or
    /// corrupt, or the entry is unreadable, the entry (and a corrupt blob) is removed, a
    /// warning naming the key is pushed to `warnings` and the result is `None`. A hit
    /// refreshes the entry's last use. Returns the entry and the blob's path.
    pub fn get(
        &self,
        key: &str,
        warnings: &mut Vec<String>,
    ) -> Result<Option<(CachedLayer, PathBuf)>, CacheError> {
        validate_key(key)?;
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
    /// their entries are evicted while the total exceeds it (never the blob just stored,
    /// so a single layer larger than the limit is still kept).
    ///
    /// A hard-linked blob shares its inode with `file`: the caller must not rewrite `file`
    /// in place afterwards (replacing or removing it is fine; ocibuild writes layer files to
    /// a temporary name and renames them). Were it rewritten, the next lookup would notice
    /// the mismatch and drop the entry with a warning.
    pub fn put(&self, key: &str, layer: &CachedLayer, file: &Path) -> Result<(), CacheError> {
        validate_key(key)?;
        layer.check_file(file)?;
        let hex = digest_hex(&layer.digest)?;
        self.place_blob(hex, &layer.digest, file, layer.size)?;
        let json = serde_json::to_vec_pretty(layer).map_err(|e| CacheError::InvalidEntry {
            reason: format!("cannot serialise it: {e}"),
        })?;
        write_atomic(&self.tmp, &self.entry_path(key), &json)?;
        self.evict(Some(hex))
    }

    /// Puts `src` (of `size` bytes, announced as `digest`) at `blobs/sha256/<hex>` unless a
    /// blob of that size is already there; `src` itself is left in place.
    fn place_blob(
        &self,
        hex: &str,
        digest: &str,
        src: &Path,
        size: u64,
    ) -> Result<PathBuf, CacheError> {
        let dest = self.blob_path(hex);
        if fs::metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == size) {
            touch(&dest);
            return Ok(dest);
        }
        // A hard link into tmp/ (then verified) costs no copy; across filesystems, copy.
        let linked = temp_name(&self.tmp, "link");
        let (tmp, actual) = match fs::hard_link(src, &linked) {
            Ok(()) => {
                touch(&linked);
                let hashed = File::open(&linked).and_then(|f| {
                    f.sync_all()?;
                    sha256_of(io::BufReader::new(f))
                });
                match hashed {
                    Ok((actual, _)) => (linked, actual),
                    Err(e) => {
                        let _ = remove_if_exists(&linked);
                        return Err(CacheError::io("read", src)(e));
                    }
                }
            }
            Err(_) => {
                let (tmp, actual, _) = copy_to_temp(&self.tmp, src)?;
                (tmp, actual)
            }
        };
        if actual != digest {
            let _ = remove_if_exists(&tmp);
            return Err(CacheError::DigestMismatch {
                what: src.display().to_string(),
                expected: digest.to_string(),
                actual,
            });
        }
        if let Err(e) = fs::rename(&tmp, &dest) {
            let _ = remove_if_exists(&tmp);
            return Err(CacheError::io("rename into place", &dest)(e));
        }
        sync_dir(&self.blobs)?;
        Ok(dest)
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
    /// filesystem, copied otherwise). On success `file` is consumed (removed); on error it
    /// is left alone. Adding a blob that is already present only removes `file`.
    pub fn put_blob(&self, digest: &str, file: &Path) -> Result<PathBuf, CacheError> {
        let hex = digest_hex(digest)?;
        let size = fs::metadata(file)
            .map_err(CacheError::io("read", file))?
            .len();
        let path = self.place_blob(hex, digest, file, size)?;
        remove_if_exists(file).map_err(CacheError::io("remove", file))?;
        self.evict(Some(hex))?;
        Ok(path)
    }

    /// Records that blob `digest` decompresses to `diff_id`, as computed by ocibuild while
    /// it downloaded or read the blob (never as an image config claims it). The record is
    /// a fact about the content, so it stays valid when the blob is evicted.
    pub fn put_diff_id(&self, digest: &str, diff_id: &str) -> Result<(), CacheError> {
        let hex = digest_hex(digest)?;
        digest_hex(diff_id)?;
        write_atomic(&self.tmp, &self.diff_ids.join(hex), diff_id.as_bytes())
    }

    /// The diff_id recorded by [`LocalCache::put_diff_id`] for blob `digest`, if any.
    pub fn diff_id(&self, digest: &str) -> Option<String> {
        let hex = digest_hex(digest).ok()?;
        let text = fs::read_to_string(self.diff_ids.join(hex)).ok()?;
        digest_hex(&text).is_ok().then_some(text)
    }

    /// Stores the manifest and config of a base image under the manifest's digest, so that
    /// later builds (and a warm-up run) need not ask the registry. `manifest` must hash to
    /// `manifest_digest` and `config` to the config digest the manifest names.
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
        write_atomic(&self.tmp, &self.images.join(format!("{hex}.json")), &json)
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

    /// What the directory holds now.
    pub fn usage(&self) -> Result<CacheUsage, CacheError> {
        let mut usage = CacheUsage::default();
        for (_, size, _) in self.list_blobs()? {
            usage.blobs += 1;
            usage.blob_bytes += size;
        }
        usage.entries = count_json(&self.keys)?;
        usage.images = count_json(&self.images)?;
        Ok(usage)
    }

    /// Every blob: hex, size and modification time.
    fn list_blobs(&self) -> Result<Vec<(String, u64, SystemTime)>, CacheError> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.blobs).map_err(CacheError::io("list", &self.blobs))?;
        for entry in entries {
            let entry = entry.map_err(CacheError::io("list", &self.blobs))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !is_sha256_hex(&name) {
                continue;
            }
            // A blob may vanish between listing and stat (another process evicted it).
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_file() {
                let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                out.push((name, meta.len(), mtime));
            }
        }
        Ok(out)
    }

    /// Evicts least recently used blobs, with the entries that refer to them, while the
    /// blobs total more than the size limit; `keep` is never evicted. Skipped when another
    /// process is evicting.
    fn evict(&self, keep: Option<&str>) -> Result<(), CacheError> {
        let Some(max) = self.max_size else {
            return Ok(());
        };
        let blobs = self.list_blobs()?;
        let mut total: u64 = blobs.iter().map(|(_, size, _)| size).sum();
        if total <= max {
            return Ok(());
        }
        let Some(_lock) = try_lock(&self.dir.join("lock"))? else {
            return Ok(());
        };
        // Last use of a blob: its own mtime or that of the newest entry referring to it.
        let mut last_use: HashMap<String, SystemTime> = blobs
            .iter()
            .map(|(hex, _, mtime)| (hex.clone(), *mtime))
            .collect();
        let mut referrers: HashMap<String, Vec<(PathBuf, FileId)>> = HashMap::new();
        let entries = fs::read_dir(&self.keys).map_err(CacheError::io("list", &self.keys))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension() != Some(OsStr::new("json")) {
                continue;
            }
            let Ok(Some((bytes, identity))) = read_with_identity(&path) else {
                continue;
            };
            let Ok(layer) = serde_json::from_slice::<CachedLayer>(&bytes) else {
                continue;
            };
            let Ok(hex) = digest_hex(&layer.digest) else {
                continue;
            };
            let mtime = entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            if let Some(t) = last_use.get_mut(hex) {
                *t = (*t).max(mtime);
            }
            referrers
                .entry(hex.to_string())
                .or_default()
                .push((path, identity));
        }
        let mut order: Vec<(SystemTime, &str, u64)> = blobs
            .iter()
            .filter(|(hex, _, _)| Some(hex.as_str()) != keep)
            .map(|(hex, size, _)| (last_use[hex], hex.as_str(), *size))
            .collect();
        order.sort();
        for (_, hex, size) in order {
            if total <= max {
                break;
            }
            // Entries first: an entry must never point at a blob that is gone for good.
            // (Only the entry file that was read: one rewritten meanwhile is kept.)
            for (entry, identity) in referrers.get(hex).into_iter().flatten() {
                remove_if_same(entry, *identity);
            }
            let blob = self.blob_path(hex);
            remove_if_exists(&blob).map_err(CacheError::io("remove", &blob))?;
            total = total.saturating_sub(size);
        }
        sync_dir(&self.keys)?;
        sync_dir(&self.blobs)
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

/// Number of `*.json` files in `dir`.
fn count_json(dir: &Path) -> Result<u64, CacheError> {
    let entries = fs::read_dir(dir).map_err(CacheError::io("list", dir))?;
    Ok(entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .count() as u64)
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
