//! Space in a [`LocalCache`]: what it holds, collecting orphan blobs and evicting least
//! recently used ones.
//!
//! Both run under the exclusive lock on `DIR/lock`; writers hold it shared while they make a
//! blob and what refers to it (its entry, or its reference in `refs/`) appear. So a blob
//! seen under the exclusive lock with nothing referring to it is an orphan for good (its
//! entry was replaced by another build's), and two evictions never both work from the
//! same listing: the second one sees what the first left.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{read_with_identity, LocalCache, LOCK_WAIT};
use crate::fsutil::{digest_hex, is_sha256_hex, remove_if_exists, remove_if_same, sync_dir};
use crate::fsutil::{FileId, LockKind};
use crate::{CacheError, CachedLayer};

/// Room asked for beyond a blob's own size when the filesystem is full: entries, records
/// and directory blocks.
const ROOM_SLACK: u64 = 64 << 10;

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

/// A blob in `blobs/sha256/`.
struct Blob {
    hex: String,
    size: u64,
    mtime: SystemTime,
}

/// An entry file in `keys/` and what it was when read.
struct Entry {
    path: PathBuf,
    identity: FileId,
    mtime: SystemTime,
}

/// The blobs and what refers to them, read under the exclusive lock.
struct Scan {
    blobs: Vec<Blob>,
    /// The entries referring to each blob, by hex.
    referrers: HashMap<String, Vec<Entry>>,
    /// The names in `refs/`.
    refs: HashSet<String>,
}

impl Scan {
    /// The last use of `blob`: its own mtime or that of the newest entry referring to it.
    fn last_use(&self, blob: &Blob) -> SystemTime {
        let entries = self.referrers.get(&blob.hex).into_iter().flatten();
        entries.map(|e| e.mtime).fold(blob.mtime, SystemTime::max)
    }
}

impl LocalCache {
    /// What the directory holds now.
    pub fn usage(&self) -> Result<CacheUsage, CacheError> {
        let mut usage = CacheUsage::default();
        for blob in self.list_blobs()? {
            usage.blobs += 1;
            usage.blob_bytes += blob.size;
        }
        usage.entries = count_json(&self.keys)?;
        usage.images = count_json(&self.images)?;
        Ok(usage)
    }

    /// Every blob: hex, size and modification time.
    fn list_blobs(&self) -> Result<Vec<Blob>, CacheError> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.blobs).map_err(CacheError::io("list", &self.blobs))?;
        for entry in entries {
            let entry = entry.map_err(CacheError::io("list", &self.blobs))?;
            let Some(hex) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !is_sha256_hex(&hex) {
                continue;
            }
            // A blob may vanish between listing and stat (another process evicted it).
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_file() {
                let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                let size = meta.len();
                out.push(Blob { hex, size, mtime });
            }
        }
        Ok(out)
    }

    /// Reads the blobs, the entries and the references (call it under the exclusive lock).
    fn scan(&self) -> Result<Scan, CacheError> {
        let blobs = self.list_blobs()?;
        let mut referrers: HashMap<String, Vec<Entry>> = HashMap::new();
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
            referrers.entry(hex.to_string()).or_default().push(Entry {
                path,
                identity,
                mtime,
            });
        }
        let refs = fs::read_dir(&self.refs)
            .map_err(CacheError::io("list", &self.refs))?
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        Ok(Scan {
            blobs,
            referrers,
            refs,
        })
    }

    /// Whether `blob` is referred to: by an entry, by `refs/<hex>`, or by a diff_id record
    /// (every base-image blob has one: caches written before `refs/` existed).
    fn is_referred_to(&self, scan: &Scan, blob: &Blob) -> bool {
        scan.referrers.contains_key(&blob.hex)
            || scan.refs.contains(&blob.hex)
            || self.diff_ids.join(&blob.hex).exists()
    }

    /// At open: orphan blobs are collected and, with a size limit, blobs evicted down to
    /// it. Best-effort: errors are ignored.
    pub(super) fn tidy(&self) {
        // Not waiting: a busy directory is tidied by whoever holds the lock, or next time.
        let Ok(Some(_lock)) = self.lock(LockKind::Exclusive, Duration::ZERO) else {
            return;
        };
        if let Ok(scan) = self.scan() {
            let _ = self.collect(&scan, None, self.max_size);
        }
    }

    /// With a size limit, while the blobs total more than it: collects orphan blobs, then
    /// evicts least recently used blobs with the entries that refer to them (blobs larger
    /// than the limit first); `keep` is never evicted.
    pub(super) fn evict(&self, keep: Option<&str>) -> Result<(), CacheError> {
        let Some(max) = self.max_size else {
            return Ok(());
        };
        let total: u64 = self.list_blobs()?.iter().map(|b| b.size).sum();
        if total <= max {
            return Ok(());
        }
        let Some(_lock) = self.lock(LockKind::Exclusive, LOCK_WAIT)? else {
            return Ok(()); // over the limit until the next eviction
        };
        let scan = self.scan()?;
        self.collect(&scan, keep, Some(max)).map(drop)
    }

    /// On a full filesystem: collects orphan blobs and evicts least recently used blobs
    /// until there is room for `size` more bytes (and some slack). Returns the bytes freed;
    /// nothing is evicted for a blob larger than the whole filesystem.
    pub(super) fn make_room(&self, size: u64) -> Result<u64, CacheError> {
        let (capacity, available) = match nix::sys::statvfs::statvfs(&self.blobs) {
            Ok(s) => {
                let unit = s.fragment_size();
                (
                    s.blocks().saturating_mul(unit),
                    s.blocks_available().saturating_mul(unit),
                )
            }
            Err(_) => (u64::MAX, 0),
        };
        if size > capacity {
            return Ok(0);
        }
        let wanted = size
            .saturating_add(ROOM_SLACK)
            .saturating_sub(available)
            .max(ROOM_SLACK);
        let Some(_lock) = self.lock(LockKind::Exclusive, LOCK_WAIT)? else {
            return Ok(0);
        };
        let scan = self.scan()?;
        let total: u64 = scan.blobs.iter().map(|b| b.size).sum();
        self.collect(&scan, None, Some(total.saturating_sub(wanted)))
    }

    /// Removes the orphan blobs of `scan` and the references to blobs that are gone; then,
    /// with `limit`, evicts while the blobs total more than it. Returns the bytes freed.
    fn collect(
        &self,
        scan: &Scan,
        keep: Option<&str>,
        limit: Option<u64>,
    ) -> Result<u64, CacheError> {
        let mut freed = 0;
        let mut live = Vec::new();
        for blob in &scan.blobs {
            if Some(blob.hex.as_str()) == keep || self.is_referred_to(scan, blob) {
                live.push(blob);
            } else {
                self.remove_blob(&blob.hex)?;
                freed += blob.size;
            }
        }
        let present: HashSet<&str> = live.iter().map(|b| b.hex.as_str()).collect();
        for name in scan.refs.iter().filter(|r| !present.contains(r.as_str())) {
            let _ = remove_if_exists(&self.refs.join(name));
        }
        if let Some(limit) = limit {
            freed += self.evict_lru(scan, &live, keep, limit)?;
        }
        sync_dir(&self.keys)?;
        sync_dir(&self.blobs)?;
        Ok(freed)
    }

    /// Evicts the `live` blobs of `scan` least recently used first (those larger than
    /// `limit` before all others), with their entries and references, while they total
    /// more than `limit`. `keep` is never evicted; when it is larger than the limit on its
    /// own, the others are brought under the limit without counting it. Returns the bytes
    /// freed.
    fn evict_lru(
        &self,
        scan: &Scan,
        live: &[&Blob],
        keep: Option<&str>,
        limit: u64,
    ) -> Result<u64, CacheError> {
        let mut total: u64 = live.iter().map(|b| b.size).sum();
        if let Some(kept) = live.iter().find(|b| Some(b.hex.as_str()) == keep) {
            if kept.size > limit {
                total -= kept.size;
            }
        }
        let mut order: Vec<(bool, SystemTime, &Blob)> = live
            .iter()
            .filter(|b| Some(b.hex.as_str()) != keep)
            .map(|b| (b.size <= limit, scan.last_use(b), *b))
            .collect();
        order.sort_by_key(|(fits, last_use, _)| (*fits, *last_use));
        let mut freed = 0;
        for (_, _, blob) in order {
            if total <= limit {
                break;
            }
            // Entries first: an entry must never point at a blob that is gone for good.
            // (Only the entry file that was read: one rewritten meanwhile is kept.)
            for entry in scan.referrers.get(&blob.hex).into_iter().flatten() {
                remove_if_same(&entry.path, entry.identity);
            }
            let _ = remove_if_exists(&self.refs.join(&blob.hex));
            self.remove_blob(&blob.hex)?;
            total = total.saturating_sub(blob.size);
            freed += blob.size;
        }
        Ok(freed)
    }

    fn remove_blob(&self, hex: &str) -> Result<(), CacheError> {
        let blob = self.blob_path(hex);
        remove_if_exists(&blob).map_err(CacheError::io("remove", &blob))
    }
}

/// Number of `*.json` files in `dir`.
fn count_json(dir: &Path) -> Result<u64, CacheError> {
    let entries = fs::read_dir(dir).map_err(CacheError::io("list", dir))?;
    Ok(entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .count() as u64)
}
