//! [`LayoutCache`]: the layer cache in an OCI image layout directory (kaniko's
//! `--cache-repo oci:/path/to/layout`), for air-gapped CI where no registry is at hand.
//!
//! An entry is stored exactly as [`RegistryCache`](super::RegistryCache) stores it in a
//! registry: a one-layer OCI image (the layer, a small config recording the diff ID, the
//! step's history line and the creation time, and an OCI manifest), named in `index.json`
//! with the annotation `org.opencontainers.image.ref.name` = the key, so that
//! `skopeo inspect oci:DIR:<key>` and `umoci` read it.
//!
//! ```text
//! DIR/
//!   oci-layout                 {"imageLayoutVersion":"1.0.0"}
//!   index.json                 one manifest descriptor per key (ref.name annotation)
//!   blobs/sha256/<hex>         layers, configs and manifests
//!   .ocibuild-tmp/             temporary files, renamed into blobs/ when complete
//!   .ocibuild-lock             flock(2)ed while index.json is rewritten
//! ```
//!
//! Every file is written to a temporary file, fsynced and renamed into place, so readers
//! never see a torn blob or index; `index.json` is read, modified and replaced under an
//! exclusive lock, so several builds sharing the directory do not lose each other's
//! entries. [`LayoutCache::get`] verifies the manifest, config and layer blobs against
//! their digests; a missing or corrupt blob makes the lookup a miss with a warning.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ocibuild_image::manifest::{self, media_types, Descriptor, ImageIndex};

use super::fsutil::{
    check_blob, copy_to_temp, digest_hex, lock, remove_if_exists, sync_dir, temp_name,
    validate_key, write_atomic, BlobCheck, FileLock, LockKind,
};
use super::registry::{entry_config, entry_from_config, entry_manifest};
use super::{CacheError, CachedLayer};
use ocibuild_image::layout::{self, OCI_LAYOUT_FILE, REF_NAME_ANNOTATION};

/// The largest manifest or config blob read back (entries are a few hundred bytes).
const MAX_METADATA_BLOB: u64 = 4 << 20;

/// The layer cache in an OCI image layout directory.
#[derive(Debug, Clone)]
pub struct LayoutCache {
    dir: PathBuf,
    blobs: PathBuf,
    tmp: PathBuf,
    ttl: Duration,
}

impl LayoutCache {
    /// Opens (creating if needed) the layout `dir`: `oci-layout` is written when missing
    /// (an existing one must be a layout marker), `index.json` too (an existing one must be
    /// an image index, whose other entries are kept). Entries older than `ttl` are ignored.
    pub fn open(dir: &Path, ttl: Duration) -> Result<LayoutCache, CacheError> {
        let cache = LayoutCache {
            dir: dir.to_path_buf(),
            blobs: dir.join("blobs").join("sha256"),
            tmp: dir.join(".ocibuild-tmp"),
            ttl,
        };
        for d in [&cache.blobs, &cache.tmp] {
            fs::create_dir_all(d).map_err(CacheError::io("create directory", d))?;
        }
        let marker = dir.join("oci-layout");
        match fs::read(&marker) {
            Ok(bytes) if layout::is_layout_marker(&bytes) => {}
            Ok(_) => {
                return Err(CacheError::InvalidLayout {
                    dir: dir.to_path_buf(),
                    reason: format!("oci-layout is not a layout marker ({OCI_LAYOUT_FILE})"),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                write_atomic(&cache.temp("write"), &marker, OCI_LAYOUT_FILE.as_bytes())?;
            }
            Err(e) => return Err(CacheError::io("read", &marker)(e)),
        }
        let _lock = cache.lock()?;
        let index = cache.read_index()?;
        if !cache.dir.join("index.json").exists() {
            cache.write_index(&index)?;
        }
        Ok(cache)
    }

    /// The layout directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry age after which an entry is ignored.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf, CacheError> {
        Ok(self.blobs.join(digest_hex(digest)?))
    }

    /// Takes the exclusive lock serialising rewrites of `index.json` (waits for it).
    fn lock(&self) -> Result<FileLock, CacheError> {
        lock(&self.dir.join(".ocibuild-lock"), LockKind::Exclusive)
    }

    /// A fresh temporary file name in `.ocibuild-tmp/`.
    fn temp(&self, what: &str) -> PathBuf {
        temp_name(&self.tmp, what)
    }

    /// `index.json` (an empty index when missing).
    fn read_index(&self) -> Result<ImageIndex, CacheError> {
        let path = self.dir.join("index.json");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(layout::empty_index()),
            Err(e) => return Err(CacheError::io("read", &path)(e)),
        };
        layout::parse_index(&bytes).map_err(|reason| CacheError::InvalidLayout {
            dir: self.dir.clone(),
            reason,
        })
    }

    fn write_index(&self, index: &ImageIndex) -> Result<(), CacheError> {
        let bytes = manifest::index_json(index);
        write_atomic(&self.temp("write"), &self.dir.join("index.json"), &bytes)
    }

    /// The manifest descriptor named `key` in `index.json` (the last one, if several).
    fn find(&self, key: &str) -> Result<Option<Descriptor>, CacheError> {
        let index = self.read_index()?;
        let entry = index
            .manifests()
            .iter()
            .rev()
            .find(|e| layout::ref_name_of(e) == Some(key));
        Ok(entry.cloned())
    }

    /// Reads a small blob and checks it against `digest` and `size`; `Ok(None)` plus a
    /// warning when it is missing or does not match.
    fn read_small_blob(
        &self,
        key: &str,
        what: &str,
        digest: &str,
        size: u64,
        warnings: &mut Vec<String>,
    ) -> Result<Option<Vec<u8>>, CacheError> {
        if size > MAX_METADATA_BLOB {
            warnings.push(format!(
                "layout cache entry {key}: its {what} {digest} has {size} bytes, more than a cache entry's; ignored"
            ));
            return Ok(None);
        }
        let path = self.blob_path(digest)?;
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                warnings.push(format!(
                    "layout cache entry {key}: its {what} {digest} is missing; ignored"
                ));
                return Ok(None);
            }
            Err(e) => return Err(CacheError::io("read", &path)(e)),
        };
        let actual = ocibuild_image::digest::sha256_digest(&bytes);
        if actual != digest || bytes.len() as u64 != size {
            warnings.push(format!(
                "layout cache entry {key}: its {what} {digest} is corrupt (content hashes to {actual}, {} bytes); ignored",
                bytes.len()
            ));
            return Ok(None);
        }
        Ok(Some(bytes))
    }

    /// Looks `key` up: the index entry named `key`, its manifest (one layer), its config
    /// (diff ID, history, creation time; entries older than the TTL are ignored) and the
    /// layer blob, each verified against its digest. Returns the entry and the path of the
    /// verified layer blob. A missing, corrupt, expired or malformed entry is a miss with a
    /// warning naming the key; the layout is never modified by a lookup.
    pub fn get(
        &self,
        key: &str,
        warnings: &mut Vec<String>,
    ) -> Result<Option<(CachedLayer, PathBuf)>, CacheError> {
        validate_key(key)?;
        let Some(descriptor) = self.find(key)? else {
            return Ok(None);
        };
        let Some(manifest) = self.read_small_blob(
            key,
            "manifest",
            descriptor.digest().as_ref(),
            descriptor.size(),
            warnings,
        )?
        else {
            return Ok(None);
        };
        let manifest = match manifest::parse_manifest(&manifest) {
            Ok(m) => m,
            Err(e) => {
                warnings.push(format!(
                    "layout cache entry {key}: its manifest is {e}; ignored"
                ));
                return Ok(None);
            }
        };
        let [layer] = manifest.layers().as_slice() else {
            warnings.push(format!(
                "layout cache entry {key} has {} layers instead of 1; ignored",
                manifest.layers().len()
            ));
            return Ok(None);
        };
        let Some(config) = self.read_small_blob(
            key,
            "config",
            manifest.config().digest().as_ref(),
            manifest.config().size(),
            warnings,
        )?
        else {
            return Ok(None);
        };
        let name = format!("oci:{}:{key}", self.dir.display());
        let Some(cached) = entry_from_config(&name, layer, &config, self.ttl, warnings) else {
            return Ok(None);
        };
        let blob = self.blob_path(&cached.digest)?;
        match check_blob(&blob, &cached.digest, Some(cached.size))
            .map_err(CacheError::io("read", &blob))?
        {
            BlobCheck::Intact => Ok(Some((cached, blob))),
            BlobCheck::Missing => {
                warnings.push(format!(
                    "layout cache entry {key}: its layer {} is missing; ignored",
                    cached.digest
                ));
                Ok(None)
            }
            BlobCheck::Corrupt { why, .. } => {
                warnings.push(format!(
                    "layout cache entry {key}: its layer {} is corrupt ({why}); ignored",
                    cached.digest
                ));
                Ok(None)
            }
        }
    }

    /// Stores the layer `file` under `key`: the layer blob (copied and checked against
    /// `layer.digest`, unless an intact copy is there), the config and the manifest of the
    /// one-layer entry image, then the index entry named `key` (replacing an older one with
    /// that name). Every file goes through a temporary file, fsync and rename.
    pub fn put(&self, key: &str, layer: &CachedLayer, file: &Path) -> Result<(), CacheError> {
        validate_key(key)?;
        layer.check_file(file)?;
        let blob = self.blob_path(&layer.digest)?;
        let present = matches!(
            check_blob(&blob, &layer.digest, Some(layer.size))
                .map_err(CacheError::io("read", &blob))?,
            BlobCheck::Intact
        );
        if !present {
            let (tmp, digest, _) = copy_to_temp(self.temp("blob"), file)?;
            if digest != layer.digest {
                let _ = remove_if_exists(&tmp);
                return Err(CacheError::DigestMismatch {
                    what: file.display().to_string(),
                    expected: layer.digest.clone(),
                    actual: digest,
                });
            }
            if let Err(e) = fs::rename(&tmp, &blob) {
                let _ = remove_if_exists(&tmp);
                return Err(CacheError::io("rename into place", &blob)(e));
            }
            sync_dir(&self.blobs)?;
        }
        let config = entry_config(layer)?;
        let config_digest = ocibuild_image::digest::sha256_digest(&config);
        self.put_small_blob(&config_digest, &config)?;
        let manifest = entry_manifest(layer, &config_digest, config.len() as u64)?;
        let manifest_digest = ocibuild_image::digest::sha256_digest(&manifest);
        self.put_small_blob(&manifest_digest, &manifest)?;
        let mut entry = manifest::descriptor(
            media_types::OCI_MANIFEST,
            &manifest_digest,
            manifest.len() as u64,
        )
        .map_err(|e| CacheError::InvalidEntry {
            reason: e.to_string(),
        })?;
        entry.set_annotations(Some(
            [(REF_NAME_ANNOTATION.to_string(), key.to_string())].into(),
        ));
        let _lock = self.lock()?;
        let index = layout::add_to_index(self.read_index()?, entry, Some(key));
        self.write_index(&index)
    }

    /// Writes a small blob unless an intact copy is there.
    fn put_small_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), CacheError> {
        let path = self.blob_path(digest)?;
        if fs::read(&path).is_ok_and(|b| b == bytes) {
            return Ok(());
        }
        write_atomic(&self.temp("write"), &path, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer_file(dir: &Path, content: &[u8]) -> (CachedLayer, PathBuf) {
        let file = dir.join("layer.tar");
        fs::write(&file, content).unwrap();
        let digest = ocibuild_image::digest::sha256_digest(content);
        (
            CachedLayer {
                digest: digest.clone(),
                diff_id: digest,
                size: content.len() as u64,
                media_type: media_types::OCI_LAYER_TAR.into(),
                created_by: "RUN true".into(),
                created: ocibuild_image::time::now_rfc3339(),
            },
            file,
        )
    }

    const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn entries_round_trip_and_corrupt_blobs_are_misses() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("layout");
        let cache = LayoutCache::open(&dir, Duration::from_secs(3600)).unwrap();
        let (layer, file) = layer_file(tmp.path(), b"layer bytes");
        let mut warnings = Vec::new();
        assert!(cache.get(KEY, &mut warnings).unwrap().is_none());
        cache.put(KEY, &layer, &file).unwrap();
        cache.put("other", &layer, &file).unwrap();
        cache.put(KEY, &layer, &file).unwrap();
        let (got, path) = cache.get(KEY, &mut warnings).unwrap().unwrap();
        assert_eq!(got, layer);
        assert_eq!(fs::read(&path).unwrap(), b"layer bytes");
        assert!(warnings.is_empty(), "{warnings:?}");
        let index = layout::parse_index(&fs::read(dir.join("index.json")).unwrap()).unwrap();
        assert_eq!(index.manifests().len(), 2);
        assert_eq!(
            fs::read_to_string(dir.join("oci-layout")).unwrap(),
            OCI_LAYOUT_FILE
        );
        fs::write(&path, b"layer bytez").unwrap();
        assert!(cache.get(KEY, &mut warnings).unwrap().is_none());
        assert!(warnings[0].contains("corrupt"), "{warnings:?}");
        // Storing again repairs the blob.
        cache.put(KEY, &layer, &file).unwrap();
        assert!(cache.get(KEY, &mut Vec::new()).unwrap().is_some());
    }

    #[test]
    fn expired_entries_bad_files_and_bad_layouts_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("layout");
        let (layer, file) = layer_file(tmp.path(), b"x");
        LayoutCache::open(&dir, Duration::ZERO)
            .unwrap()
            .put(KEY, &layer, &file)
            .unwrap();
        let mut warnings = Vec::new();
        let expired = LayoutCache::open(&dir, Duration::ZERO).unwrap();
        assert!(expired.get(KEY, &mut warnings).unwrap().is_none());
        assert!(warnings[0].contains("expired"), "{warnings:?}");
        let wrong = CachedLayer {
            size: 1,
            digest: format!("sha256:{}", "0".repeat(64)),
            ..layer.clone()
        };
        let err = expired.put(KEY, &wrong, &file).unwrap_err();
        assert!(matches!(err, CacheError::DigestMismatch { .. }), "{err}");
        assert!(expired.get("bad/key", &mut warnings).is_err());
        fs::write(dir.join("index.json"), b"[]").unwrap();
        let err = LayoutCache::open(&dir, Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("not a JSON object"), "{err}");
        let other = tmp.path().join("other");
        fs::create_dir_all(&other).unwrap();
        fs::write(other.join("oci-layout"), b"hello").unwrap();
        assert!(LayoutCache::open(&other, Duration::ZERO).is_err());
    }
}
