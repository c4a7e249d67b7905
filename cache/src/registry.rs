//! [`RegistryCache`]: the layer cache in a registry repository (kaniko's `--cache-repo`).
//!
//! An entry is a one-layer OCI image tagged with the step key: the manifest lists the step's
//! layer, and the config records the diff ID, the step's history line and the entry's
//! creation time, from which the TTL is measured.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ocibuild_image::manifest::{self, media_types, Descriptor};
use ocibuild_image::platform;
use ocibuild_registry::{Client, Error as RegistryError, Reference};
use serde::Deserialize;

use super::fsutil::validate_key;
use super::parse::parse_rfc3339;
use super::{CacheError, CachedLayer};

/// The layer cache in a registry repository.
#[derive(Debug, Clone)]
pub struct RegistryCache {
    client: Client,
    repository: Reference,
    ttl: Duration,
}

/// The parts of a cache entry's config that are read back.
#[derive(Deserialize)]
struct EntryConfig {
    #[serde(default)]
    created: Option<String>,
    rootfs: RootFs,
    #[serde(default)]
    history: Vec<History>,
}

#[derive(Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct History {
    #[serde(default)]
    created_by: Option<String>,
}

impl RegistryCache {
    /// A cache in repository `repo` (`registry/path/cache`, no tag or digest) reached with
    /// `client`; entries older than `ttl` are ignored.
    pub fn new(client: Client, repo: &str, ttl: Duration) -> Result<RegistryCache, CacheError> {
        let bad = |reason: String| CacheError::InvalidRepository {
            input: repo.to_string(),
            reason,
        };
        let last = repo.rsplit('/').next().unwrap_or(repo);
        if last.contains(':') || repo.contains('@') {
            return Err(bad(
                "give a repository without tag or digest; entries are tagged with their keys"
                    .into(),
            ));
        }
        let parsed = Reference::parse(repo).map_err(|e| bad(e.to_string()))?;
        Ok(RegistryCache {
            client,
            repository: Reference {
                tag: None,
                digest: None,
                ..parsed
            },
            ttl,
        })
    }

    /// The cache repository (without tag).
    pub fn repository(&self) -> &Reference {
        &self.repository
    }

    /// The entry age after which an entry is ignored.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The reference of the entry for `key` (`repo:<key>`).
    pub fn reference(&self, key: &str) -> Result<Reference, CacheError> {
        validate_key(key)?;
        Ok(self.repository.with_tag(key))
    }

    fn registry_error(&self, what: String) -> impl FnOnce(RegistryError) -> CacheError {
        let repository = self.repository.to_string();
        move |source| CacheError::Registry {
            what,
            repository,
            source: Box::new(source),
        }
    }

    /// Looks `key` up: pulls manifest `repo:<key>` (missing → `None`), reads its config,
    /// ignores the entry when it is older than the TTL, and checks that the layer blob still
    /// exists. An expired, malformed or blob-less entry gives `None` and a warning naming
    /// the key. Registry failures other than "not found" are errors; callers should treat
    /// them as a miss.
    pub async fn get(
        &self,
        key: &str,
        warnings: &mut Vec<String>,
    ) -> Result<Option<CachedLayer>, CacheError> {
        let reference = self.reference(key)?;
        let pulled = match self
            .client
            .pull_manifest(&reference, &platform::linux_amd64())
            .await
        {
            Ok(p) => p,
            Err(RegistryError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.registry_error(format!("lookup of {key}"))(e)),
        };
        let manifest = &pulled.manifest;
        let [layer] = manifest.layers().as_slice() else {
            warnings.push(format!(
                "registry cache entry {reference} has {} layers instead of 1; ignored",
                manifest.layers().len()
            ));
            return Ok(None);
        };
        let config = match self
            .client
            .pull_blob_bytes(&reference, manifest.config().digest().as_ref())
            .await
        {
            Ok(c) => c,
            Err(RegistryError::NotFound { .. }) => {
                warnings.push(format!(
                    "registry cache entry {reference}: its config {} is missing; ignored",
                    manifest.config().digest()
                ));
                return Ok(None);
            }
            Err(e) => return Err(self.registry_error(format!("config of {key}"))(e)),
        };
        let Some(cached) =
            entry_from_config(&reference.to_string(), layer, &config, self.ttl, warnings)
        else {
            return Ok(None);
        };
        let exists = self
            .client
            .blob_exists(&reference, &cached.digest)
            .await
            .map_err(self.registry_error(format!("layer of {key}")))?;
        if !exists {
            warnings.push(format!(
                "registry cache entry {reference}: its layer {} is missing from the repository; ignored",
                cached.digest
            ));
            return Ok(None);
        }
        Ok(Some(cached))
    }

    /// Stores the layer `file` under `key`: uploads the layer blob unless the repository has
    /// it, then a small OCI config (`rootfs.diff_ids = [diff_id]`, one history entry with
    /// `created_by`, `created = layer.created`) and an OCI manifest with the one layer,
    /// tagged `<key>`.
    pub async fn put(&self, key: &str, layer: &CachedLayer, file: &Path) -> Result<(), CacheError> {
        let reference = self.reference(key)?;
        layer.validate()?;
        let size = tokio::fs::metadata(file)
            .await
            .map_err(CacheError::io("read", file))?
            .len();
        layer.check_size(file, size)?;
        let exists = self
            .client
            .blob_exists_for_push(&reference, &layer.digest)
            .await
            .map_err(self.registry_error(format!("check of layer {}", layer.digest)))?;
        if !exists {
            self.client
                .push_blob_file(&reference, &layer.digest, file)
                .await
                .map_err(self.registry_error(format!("upload of layer {}", layer.digest)))?;
        }
        let config = entry_config(layer)?;
        let config_digest = ocibuild_image::digest::sha256_digest(&config);
        let config_exists = self
            .client
            .blob_exists_for_push(&reference, &config_digest)
            .await
            .map_err(self.registry_error(format!("check of config of {key}")))?;
        if !config_exists {
            self.client
                .push_blob_bytes(&reference, &config_digest, config.clone())
                .await
                .map_err(self.registry_error(format!("upload of config of {key}")))?;
        }
        let manifest = entry_manifest(layer, &config_digest, config.len() as u64)?;
        self.client
            .push_manifest(&reference, media_types::OCI_MANIFEST, &manifest)
            .await
            .map_err(self.registry_error(format!("push of entry {key}")))?;
        Ok(())
    }
}

/// The config of a one-layer cache entry image: an OCI config with `rootfs.diff_ids =
/// [diff_id]`, one history entry with `created_by`, and `created = layer.created` (from
/// which the TTL is measured). Shared by the registry and the OCI layout cache.
/// The manifest of a cache entry: an OCI manifest with the entry's config and one layer.
pub(super) fn entry_manifest(
    layer: &CachedLayer,
    config_digest: &str,
    config_size: u64,
) -> Result<Vec<u8>, CacheError> {
    let invalid = |e: manifest::ManifestError| CacheError::InvalidEntry {
        reason: e.to_string(),
    };
    let config = manifest::descriptor(media_types::OCI_CONFIG, config_digest, config_size);
    let layer = manifest::descriptor(&layer.media_type, &layer.digest, layer.size);
    let manifest = manifest::image_manifest(
        media_types::OCI_MANIFEST,
        config.map_err(invalid)?,
        vec![layer.map_err(invalid)?],
        &Default::default(),
    );
    Ok(manifest::manifest_json(&manifest))
}

pub(super) fn entry_config(layer: &CachedLayer) -> Result<Vec<u8>, CacheError> {
    let config = serde_json::json!({
        "architecture": platform::host_architecture(),
        "os": "linux",
        "created": layer.created,
        "rootfs": { "type": "layers", "diff_ids": [layer.diff_id] },
        "history": [{ "created": layer.created, "created_by": layer.created_by }],
    });
    serde_json::to_vec(&config).map_err(|e| CacheError::InvalidEntry {
        reason: format!("cannot serialise the config: {e}"),
    })
}

/// The entry recorded by a cache image whose one layer is `layer` and whose config is
/// `config`: `None` with a warning naming `name` when the config is unreadable, does not
/// have exactly one diff ID, the entry is invalid, or it is older than `ttl`.
pub(super) fn entry_from_config(
    name: &str,
    layer: &Descriptor,
    config: &[u8],
    ttl: Duration,
    warnings: &mut Vec<String>,
) -> Option<CachedLayer> {
    let config: EntryConfig = match serde_json::from_slice(config) {
        Ok(c) => c,
        Err(e) => {
            warnings.push(format!(
                "cache entry {name} has an unreadable config ({e}); ignored"
            ));
            return None;
        }
    };
    if config.rootfs.diff_ids.len() != 1 {
        warnings.push(format!(
            "cache entry {name} has {} diff IDs instead of 1; ignored",
            config.rootfs.diff_ids.len()
        ));
        return None;
    }
    let cached = CachedLayer {
        digest: layer.digest().to_string(),
        diff_id: config.rootfs.diff_ids.first().cloned().unwrap_or_default(),
        size: layer.size(),
        media_type: layer.media_type().to_string(),
        created_by: config
            .history
            .first()
            .and_then(|h| h.created_by.clone())
            .unwrap_or_default(),
        created: config.created.unwrap_or_default(),
    };
    if let Err(e) = cached.validate() {
        warnings.push(format!("cache entry {name} is invalid: {e}; ignored"));
        return None;
    }
    let created = parse_rfc3339(&cached.created).unwrap_or(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let age = Duration::from_secs(now.saturating_sub(created).max(0) as u64);
    if age >= ttl {
        warnings.push(format!(
            "cache entry {name} expired (created {}, TTL {}s); ignored",
            cached.created,
            ttl.as_secs()
        ));
        return None;
    }
    Some(cached)
}
