//! Images as ocibuild assembles them: a config plus an ordered list of layers, each either
//! still in a registry (base image layers, fetched only when needed) or a local file that a
//! step produced. Also the local blob store, the manifest, pushing and tarball output.

use crate::error::{BuildError, Result};
use crate::events::{BuildEvent, Events};
use ocibuild_image::config::ImageConfig;
use ocibuild_image::docker_archive;
use ocibuild_image::manifest::{self, media_types, Descriptor, ManifestBytes, MediaType};
use ocibuild_registry::{Client, Reference};
use ocibuild_snapshot::LayerInfo;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Whether the image is written with OCI or Docker schema 2 media types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ImageFormat {
    /// `application/vnd.oci.image.manifest.v1+json`.
    #[default]
    Oci,
    /// `application/vnd.docker.distribution.manifest.v2+json`.
    Docker,
}

impl ImageFormat {
    /// The format of a pulled manifest's media type.
    pub fn of_manifest(media_type: &MediaType) -> ImageFormat {
        if media_type.as_ref() == media_types::DOCKER_MANIFEST {
            ImageFormat::Docker
        } else {
            ImageFormat::Oci
        }
    }

    /// The flag spelling: `oci` or `docker`.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Oci => "oci",
            ImageFormat::Docker => "docker",
        }
    }

    /// The manifest media type of this format.
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            ImageFormat::Oci => media_types::OCI_MANIFEST,
            ImageFormat::Docker => media_types::DOCKER_MANIFEST,
        }
    }

    /// The config media type of this format.
    pub fn config_media_type(self) -> &'static str {
        match self {
            ImageFormat::Oci => media_types::OCI_CONFIG,
            ImageFormat::Docker => media_types::DOCKER_CONFIG,
        }
    }

    /// A layer media type translated into this format (gzip and plain tar layers have an
    /// equivalent in both; others are kept).
    pub fn layer_media_type(self, media_type: &MediaType) -> MediaType {
        use media_types::{DOCKER_LAYER_GZIP, DOCKER_LAYER_TAR, OCI_LAYER_GZIP, OCI_LAYER_TAR};
        let translated = match (self, media_type.as_ref()) {
            (ImageFormat::Oci, DOCKER_LAYER_GZIP) => OCI_LAYER_GZIP,
            (ImageFormat::Oci, DOCKER_LAYER_TAR) => OCI_LAYER_TAR,
            (ImageFormat::Docker, OCI_LAYER_GZIP) => DOCKER_LAYER_GZIP,
            (ImageFormat::Docker, OCI_LAYER_TAR) => DOCKER_LAYER_TAR,
            (_, other) => other,
        };
        MediaType::from(translated)
    }
}

impl std::fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ImageFormat {
    type Err = BuildError;

    /// `oci` or `docker` (case-insensitive), as `--image-format` takes them.
    fn from_str(s: &str) -> Result<ImageFormat> {
        match s.to_ascii_lowercase().as_str() {
            "oci" => Ok(ImageFormat::Oci),
            "docker" => Ok(ImageFormat::Docker),
            _ => Err(BuildError::Options(format!(
                "--image-format {s:?}: expected docker or oci"
            ))),
        }
    }
}

/// Whether a layer media type has no Docker schema 2 equivalent (zstd, and any other OCI
/// compression Docker does not define).
fn is_oci_only_layer(media_type: &MediaType) -> bool {
    let media_type = media_type.as_ref();
    media_type.starts_with("application/vnd.oci.image.layer.")
        && media_type != media_types::OCI_LAYER_GZIP
        && media_type != media_types::OCI_LAYER_TAR
}

/// Where a layer's bytes are.
#[derive(Debug, Clone)]
pub enum LayerBlob {
    /// In a registry repository (a base image's layer).
    Remote {
        /// The repository it was pulled from.
        source: Box<Reference>,
        /// Its descriptor in the base manifest.
        descriptor: Box<Descriptor>,
    },
    /// A file written by a step.
    Local(LayerInfo),
}

/// One layer of an image.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Where its bytes are.
    pub blob: LayerBlob,
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
}

impl Layer {
    /// The compressed digest.
    pub fn digest(&self) -> &str {
        match &self.blob {
            LayerBlob::Remote { descriptor, .. } => descriptor.digest().as_ref(),
            LayerBlob::Local(info) => &info.digest,
        }
    }

    /// The compressed size.
    pub fn size(&self) -> u64 {
        match &self.blob {
            LayerBlob::Remote { descriptor, .. } => descriptor.size(),
            LayerBlob::Local(info) => info.size,
        }
    }

    /// Its descriptor in a manifest of `format`.
    fn descriptor(&self, format: ImageFormat) -> Result<Descriptor> {
        match &self.blob {
            LayerBlob::Remote { descriptor, .. } => {
                let mut descriptor = (**descriptor).clone();
                descriptor.set_media_type(format.layer_media_type(descriptor.media_type()));
                Ok(descriptor)
            }
            LayerBlob::Local(info) => {
                let media_type = match format {
                    ImageFormat::Oci => info.oci_media_type(),
                    ImageFormat::Docker => info.docker_media_type(),
                };
                manifest::descriptor(media_type, &info.digest, info.size).map_err(manifest_error)
            }
        }
    }
}

/// A manifest that could not be made.
fn manifest_error(e: manifest::ManifestError) -> BuildError {
    BuildError::Options(format!("making the image manifest: {e}"))
}

/// A built (or pulled) image.
#[derive(Debug, Clone)]
pub struct Image {
    /// Its configuration.
    pub config: ImageConfig,
    /// Its layers, bottom first.
    pub layers: Vec<Layer>,
    /// Media type family.
    pub format: ImageFormat,
}

/// The serialised config and manifest of an image.
#[derive(Debug, Clone)]
pub struct Manifested {
    /// Config JSON.
    pub config: Vec<u8>,
    /// `sha256:` of the config JSON.
    pub config_digest: String,
    /// The manifest: its bytes, digest and media type.
    pub manifest: ManifestBytes,
}

pub use ocibuild_image::digest::sha256_digest;

impl Image {
    /// Checks every layer written by this build against its recorded digest and size (the
    /// bytes are on disk, so this is one read of each); pushes and exports call it first,
    /// so a corrupt layer is reported here and never leaves the machine.
    pub fn verify_local_layers(&self) -> Result<()> {
        for (index, layer) in self.layers.iter().enumerate() {
            if let LayerBlob::Local(info) = &layer.blob {
                info.verify().map_err(BuildError::snapshot(format!(
                    "verifying layer {} of the image before pushing or exporting it",
                    index + 1
                )))?;
            }
        }
        Ok(())
    }

    /// Serialises config and manifest, without annotations and without checking that the
    /// layers fit the format (see [`Image::manifest_with`], which `build` should use).
    #[cfg(test)]
    pub fn manifest(&self) -> Result<Manifested> {
        self.serialise(&BTreeMap::new())
    }

    /// Serialises config and manifest in `self.format` (set it first to force a format,
    /// e.g. from `--image-format`), with `annotations` as the manifest's `annotations` map
    /// (keys sorted; left out when empty, so an image without annotations keeps the digest
    /// it had before). Layer media types are translated into the format (gzip and plain
    /// tar have both spellings); a zstd layer in a Docker image is an error, since Docker
    /// schema 2 has no zstd type.
    pub fn manifest_with(&self, annotations: &BTreeMap<String, String>) -> Result<Manifested> {
        if self.format == ImageFormat::Docker {
            for layer in &self.layers {
                let descriptor = layer.descriptor(self.format)?;
                if is_oci_only_layer(descriptor.media_type()) {
                    return Err(BuildError::Options(format!(
                        "zstd layers need --image-format oci: layer {} has media type {}, \
                         which Docker schema 2 manifests cannot carry",
                        descriptor.digest(),
                        descriptor.media_type()
                    )));
                }
            }
        }
        self.serialise(annotations)
    }

    fn serialise(&self, annotations: &BTreeMap<String, String>) -> Result<Manifested> {
        let config = self.config.to_json();
        let config_digest = sha256_digest(&config);
        let config_descriptor = manifest::descriptor(
            self.format.config_media_type(),
            &config_digest,
            config.len() as u64,
        )
        .map_err(manifest_error)?;
        let layers = self
            .layers
            .iter()
            .map(|l| l.descriptor(self.format))
            .collect::<Result<Vec<_>>>()?;
        let manifest = ManifestBytes::of_manifest(&manifest::image_manifest(
            self.format.manifest_media_type(),
            config_descriptor,
            layers,
            annotations,
        ));
        Ok(Manifested {
            config,
            config_digest,
            manifest,
        })
    }
}

/// Content-addressed files under the work directory: downloaded base layers, with the
/// diff_id computed for each (while it downloaded, or once when the local cache got it).
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
    cache: Option<crate::cache::LocalCache>,
    /// The diff_id computed for each blob fetched into `dir`, by digest.
    diff_ids: Arc<Mutex<HashMap<String, String>>>,
    /// One lock per digest, held while it is fetched: a stage unpacking a base layer and
    /// the upload queue pushing it fetch it once, not both into the same file.
    fetching: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// Where its downloads are recorded until the build reports them.
    reports: BlobReports,
}

/// The blob transfers not reported yet, as [`BuildEvent::BlobPulled`] and
/// [`BuildEvent::BlobPushed`] events: a [`BlobStore`] downloads and the upload queue
/// ([`crate::upload::Uploads`]) uploads where no event sink is at hand, and the build
/// reports them before its next event. Clones share the list.
#[derive(Debug, Clone, Default)]
pub struct BlobReports(Arc<Mutex<Vec<BuildEvent>>>);

impl BlobReports {
    /// Records that `bytes` of blob `digest` were downloaded from `source`.
    fn pulled(&self, source: &Reference, digest: &str, bytes: u64) {
        self.record(BuildEvent::BlobPulled {
            reference: source.to_string(),
            digest: digest.to_string(),
            bytes,
        });
    }

    /// Records that `bytes` of blob `digest` were uploaded to `destination`.
    pub fn pushed(&self, destination: &Reference, digest: &str, bytes: u64) {
        self.record(BuildEvent::BlobPushed {
            destination: destination.to_string(),
            digest: digest.to_string(),
            bytes,
        });
    }

    /// Records a warning (the cache directory could not take a blob, ...).
    pub(crate) fn warned(&self, warning: String) {
        self.record(BuildEvent::Warning(warning));
    }

    fn record(&self, event: BuildEvent) {
        let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        list.push(event);
    }

    /// Reports the transfers recorded since the last call to `events`.
    pub fn report_to(&self, events: Events<'_>) {
        let taken = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        for event in taken {
            events(event);
        }
    }
}

impl BlobStore {
    /// A store in `dir` (created if missing); with `cache`, remote blobs are taken from
    /// and added to that local cache directory, so base images are pulled once.
    pub fn new(dir: PathBuf, cache: Option<crate::cache::LocalCache>) -> Result<BlobStore> {
        fs::create_dir_all(&dir).map_err(BuildError::io(&dir))?;
        Ok(BlobStore {
            dir,
            cache,
            diff_ids: Default::default(),
            fetching: Default::default(),
            reports: BlobReports::default(),
        })
    }

    /// The store, recording its downloads in `reports`.
    pub fn reporting_to(self, reports: BlobReports) -> BlobStore {
        BlobStore { reports, ..self }
    }

    /// Downloads blob `digest` of `source` to `path` (its sha256 verified), computing its
    /// diff_id in the same pass, and records the download.
    async fn pull(
        &self,
        client: &Client,
        source: &Reference,
        digest: &str,
        path: &Path,
    ) -> Result<String> {
        let (diff_id, bytes) = pull_blob(client, source, digest, path).await?;
        self.reports.pulled(source, digest, bytes);
        Ok(diff_id)
    }

    /// Checks that every remote layer of `image` (pulled as `name`) decompresses to the
    /// diff_id the image's config lists. The diff_id is the one computed by an earlier
    /// download (recorded in the local cache, which keeps the record when it evicts the
    /// blob), else the layer is fetched now and hashed in the same pass.
    pub async fn verify_layers(&self, client: &Client, name: &str, image: &Image) -> Result<()> {
        for (index, layer) in image.layers.iter().enumerate() {
            let LayerBlob::Remote { source, descriptor } = &layer.blob else {
                continue;
            };
            let digest = descriptor.digest().as_ref();
            let actual = self.verified_diff_id(client, source, digest).await?;
            BlobStore::check_diff_id(name, index, layer, actual)?;
        }
        Ok(())
    }

    /// The diff_id computed for remote blob `digest`, fetching the blob only when no
    /// computation of it is known.
    async fn verified_diff_id(
        &self,
        client: &Client,
        source: &Reference,
        digest: &str,
    ) -> Result<String> {
        let recorded = self.cache.as_ref().and_then(|c| c.diff_id(digest));
        match self.known_diff_id(digest).or(recorded) {
            Some(d) => Ok(d),
            None => Ok(self.fetch_verified(client, source, digest).await?.1),
        }
    }

    /// The local file of remote blob `digest` and the diff_id computed for it, fetching
    /// it first when it is not here yet.
    async fn fetch_verified(
        &self,
        client: &Client,
        source: &Reference,
        digest: &str,
    ) -> Result<(PathBuf, String)> {
        let lock = self.fetch_lock(digest);
        let _fetching = lock.lock().await;
        let path = self.path(digest);
        let known = self.known_diff_id(digest);
        let diff_id = match known {
            Some(d) if path.exists() => d,
            _ => self.fetch(client, source, digest, &path).await?,
        };
        self.diff_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(digest.to_string(), diff_id.clone());
        Ok((path, diff_id))
    }

    /// Makes sure the blob `digest` of `source` (the layer of a cache hit) is in the work
    /// directory, fetching it unless it is there (its sha256 checked on the way), and that
    /// it decompresses to `diff_id`: after that, extracting or pushing the layer needs no
    /// download, so a cache repository that cannot serve it fails here or never.
    pub(crate) async fn fetch_layer(
        &self,
        client: &Client,
        source: &Reference,
        digest: &str,
        diff_id: &str,
    ) -> Result<()> {
        let (_, actual) = self.fetch_verified(client, source, digest).await?;
        if actual == diff_id {
            return Ok(());
        }
        Err(BuildError::Options(format!(
            "layer {digest} of {source} decompresses to {actual}, not to the diff ID \
             {diff_id} its cache entry records"
        )))
    }

    /// Records that blob `digest` decompresses to `diff_id`, checked elsewhere (the layer
    /// store checks both digests of every layer it extracts).
    pub(crate) fn record_known(&self, digest: &str, diff_id: &str) {
        self.diff_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(digest.to_string(), diff_id.to_string());
    }

    /// Records that `bytes` of blob `digest` were downloaded from `source` (reported with
    /// the build's next event).
    pub(crate) fn record_download(&self, source: &Reference, digest: &str, bytes: u64) {
        self.reports.pulled(source, digest, bytes);
    }

    /// Whether blob `digest` is on disk already: downloaded into the work directory, or
    /// present in the local cache directory.
    pub(crate) fn has_file_or_cached(&self, digest: &str) -> bool {
        self.path(digest).exists() || self.cache.as_ref().is_some_and(|c| c.has_blob(digest))
    }

    /// Adds blob `digest` of `source`, downloaded to its [`BlobStore::path`] and found to
    /// decompress to `diff_id`, to the local cache directory when there is one,
    /// best-effort: a cache that cannot take it is a warning, as in `BlobStore::fetch`.
    pub(crate) async fn add_to_cache(
        &self,
        source: &Reference,
        digest: &str,
        diff_id: &str,
    ) -> Result<()> {
        let Some(cache) = &self.cache else {
            return Ok(());
        };
        let (cache, blob, id, file) = (
            cache.clone(),
            digest.to_string(),
            diff_id.to_string(),
            self.path(digest),
        );
        let stored =
            crate::blocking::spawn(move || cache.put_blob_best_effort(&blob, &id, &file)).await?;
        if let Err(not_stored) = stored {
            self.reports
                .warned(format!("pulling layer {digest} of {source}: {not_stored}"));
        }
        Ok(())
    }

    /// The lock held while blob `digest` is fetched (also by a layer store extraction that
    /// downloads it).
    pub(crate) fn fetch_lock(&self, digest: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(digest.to_string()).or_default().clone()
    }

    fn known_diff_id(&self, digest: &str) -> Option<String> {
        let map = self.diff_ids.lock().unwrap_or_else(|e| e.into_inner());
        map.get(digest).cloned()
    }

    /// Where blob `digest` lives.
    pub fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(digest.replace(':', "-"))
    }

    /// The local file of `layer`, downloading it first if it is remote and not here yet.
    pub async fn local_file(&self, client: &Client, layer: &Layer) -> Result<PathBuf> {
        match &layer.blob {
            LayerBlob::Local(info) => Ok(info.path.clone()),
            LayerBlob::Remote { source, descriptor } => Ok(self
                .fetch_verified(client, source, descriptor.digest().as_ref())
                .await?
                .0),
        }
    }

    /// Puts blob `digest` of `source` at `path` and returns its diff_id: from the local
    /// cache when it has it, else pulled (then added to the cache, when there is one, as a
    /// hint: a cache that cannot take it is a warning).
    async fn fetch(
        &self,
        client: &Client,
        source: &Reference,
        digest: &str,
        path: &Path,
    ) -> Result<String> {
        let context = || format!("pulling layer {digest} of {source}");
        let Some(cache) = &self.cache else {
            return self.pull(client, source, digest, path).await;
        };
        if let Some(cached) = cache.blob(digest) {
            let diff_id = match cache.diff_id(digest) {
                Some(d) => d,
                None => {
                    let file = cached.clone();
                    let computed =
                        crate::blocking::spawn(move || crate::diffid::diff_id_of_file(&file))
                            .await?;
                    let diff_id =
                        computed.map_err(|e| BuildError::Options(format!("{}: {e}", context())))?;
                    // The cache is a hint: a diff_id it cannot record is only a warning.
                    if let Err(e) = cache.put_diff_id(digest, &diff_id) {
                        self.reports.warned(format!(
                            "{}: not recorded in the cache directory: {e}",
                            context()
                        ));
                    }
                    diff_id
                }
            };
            link_or_copy_blocking(cached, path.to_path_buf()).await?;
            return Ok(diff_id);
        }
        // Downloaded into the work directory first, then added to the cache best-effort: a
        // full or failing cache directory is a warning, never a failed build.
        let diff_id = self.pull(client, source, digest, path).await?;
        let (cache, blob, file) = (cache.clone(), digest.to_string(), path.to_path_buf());
        let id = diff_id.clone();
        let stored =
            crate::blocking::spawn(move || cache.put_blob_best_effort(&blob, &id, &file)).await?;
        if let Err(not_stored) = stored {
            self.reports.warned(format!("{}: {not_stored}", context()));
        }
        Ok(diff_id)
    }

    /// Checks that layer `index` of the image pulled as `name` decompresses to the diff_id
    /// its config lists: `actual` is the one computed from its bytes.
    pub(crate) fn check_diff_id(
        name: &str,
        index: usize,
        layer: &Layer,
        actual: String,
    ) -> Result<()> {
        if actual == layer.diff_id {
            return Ok(());
        }
        Err(BuildError::LayerMismatch {
            image: name.to_string(),
            index,
            digest: layer.digest().to_string(),
            expected: layer.diff_id.clone(),
            actual,
        })
    }
}

/// Downloads blob `digest` of `source` into the local cache directory, recording the
/// diff_id computed while it downloaded; returns the cached file, the diff_id and the bytes
/// downloaded. The cache warmer's pull, for which storing is the job (a build adds base
/// layers to the cache best-effort instead, in `BlobStore::fetch`).
pub(crate) async fn pull_into_cache(
    cache: &crate::cache::LocalCache,
    client: &Client,
    source: &Reference,
    digest: &str,
) -> Result<(PathBuf, String, u64)> {
    let context = || format!("pulling layer {digest} of {source}");
    let tmp = cache.temp_path("pull");
    let (computed, bytes) = match pull_blob(client, source, digest, &tmp).await {
        Ok((diff_id, bytes)) => (Ok(diff_id), bytes),
        Err(e) => (Err(e.to_string()), 0),
    };
    let diff_id = record_diff_id(cache, digest, computed)
        .map_err(|e| BuildError::Options(format!("{}: {e}", context())))?;
    let (store, owned_digest) = (cache.clone(), digest.to_string());
    let cached = crate::blocking::spawn(move || store.put_blob(&owned_digest, &tmp)).await?;
    let cached = cached.map_err(|e| {
        BuildError::Options(format!(
            "{}: storing it in the cache directory: {e}",
            context()
        ))
    })?;
    Ok((cached, diff_id, bytes))
}

/// An image resolved in a registry: its manifest and config fetched, its layers still
/// remote ([`LayerBlob::Remote`], fetched only when needed).
pub(crate) struct PulledImage {
    /// The reference it was pulled as.
    pub reference: Reference,
    /// `sha256:` of its manifest.
    pub manifest_digest: String,
    /// The manifest as the registry served it.
    pub manifest: Vec<u8>,
    /// The config as the registry served it.
    pub config: Vec<u8>,
    /// The image: config, remote layers and format.
    pub image: Image,
}

impl PulledImage {
    /// The event that reports the pull.
    pub fn event(&self) -> crate::events::BuildEvent {
        crate::events::BuildEvent::Pulled {
            reference: self.reference.to_string(),
            digest: self.manifest_digest.clone(),
        }
    }
}

/// Resolves `reference` for `platform` to its manifest and config (the layers stay
/// remote); `verb` says what for in errors ("pulling", "warming"). The one path by which
/// builds and the cache warmer pull images.
pub(crate) async fn resolve_image(
    client: &Client,
    reference: Reference,
    platform: &ocibuild_image::platform::Platform,
    verb: &str,
) -> Result<PulledImage> {
    let context = format!("{verb} {reference}");
    let pulled = client
        .pull_manifest(&reference, platform)
        .await
        .map_err(BuildError::registry(&context))?;
    let config_bytes = client
        .pull_blob_bytes(&reference, pulled.manifest.config().digest().as_ref())
        .await
        .map_err(BuildError::registry(&context))?;
    let config = ImageConfig::from_json(&config_bytes).map_err(|e| {
        BuildError::Options(format!(
            "{context}: the image config is not valid JSON: {e}"
        ))
    })?;
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != pulled.manifest.layers().len() {
        return Err(BuildError::Options(format!(
            "{context}: the manifest has {} layers but the config lists {} diff_ids",
            pulled.manifest.layers().len(),
            diff_ids.len()
        )));
    }
    let layers = pulled
        .manifest
        .layers()
        .iter()
        .zip(diff_ids)
        .map(|(descriptor, diff_id)| Layer {
            blob: LayerBlob::Remote {
                source: Box::new(reference.clone()),
                descriptor: Box::new(descriptor.clone()),
            },
            diff_id: diff_id.clone(),
        })
        .collect();
    let image = Image {
        config,
        layers,
        format: ImageFormat::of_manifest(&pulled.media_type),
    };
    Ok(PulledImage {
        reference,
        manifest_digest: pulled.digest,
        manifest: pulled.bytes,
        config: config_bytes,
        image,
    })
}

/// Downloads blob `digest` of `source` to `path` (its sha256 verified); returns its
/// diff_id, computed in the same pass, and the bytes downloaded.
async fn pull_blob(
    client: &Client,
    source: &Reference,
    digest: &str,
    path: &Path,
) -> Result<(String, u64)> {
    let context = || format!("pulling layer {digest} of {source}");
    let mut hasher = crate::diffid::DiffIdHasher::new();
    let bytes = client
        .pull_blob_to_file_observed(source, digest, path, &mut hasher)
        .await
        .map_err(BuildError::registry(context()))?;
    let diff_id = hasher
        .finish()
        .map_err(|e| BuildError::Options(format!("{}: {e}", context())))?;
    Ok((diff_id, bytes))
}

/// Records a computed diff_id of blob `digest` in `cache` and returns it.
fn record_diff_id<E: std::fmt::Display>(
    cache: &crate::cache::LocalCache,
    digest: &str,
    computed: std::result::Result<String, E>,
) -> std::result::Result<String, String> {
    let diff_id = computed.map_err(|e| e.to_string())?;
    cache
        .put_diff_id(digest, &diff_id)
        .map_err(|e| format!("recording its diff_id in the cache directory: {e}"))?;
    Ok(diff_id)
}

/// Hard-links `from` to `to` (a copy across filesystems), so that a cache eviction cannot
/// take a file away during the build.
pub fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    let tmp = to.with_extension("partial");
    fs::copy(from, &tmp).map_err(BuildError::io(from))?;
    fs::rename(&tmp, to).map_err(BuildError::io(to))
}

/// [`link_or_copy`] on the blocking thread pool.
async fn link_or_copy_blocking(from: PathBuf, to: PathBuf) -> Result<()> {
    crate::blocking::run(move || link_or_copy(&from, &to)).await
}

/// Makes sure repository `dest` has the blob of `layer`: nothing when it is there
/// already (HEAD), a cross-repository mount when the layer is remote on the same registry,
/// else an upload from its file (downloaded first when remote; checked against its digest
/// first when the build made it, so a corrupt layer never leaves the machine). Returns the
/// bytes uploaded, if any. `clients` are the push and the pull client.
pub async fn push_layer(
    layer: &Layer,
    dest: &Reference,
    clients: (&Client, &Client),
    blobs: &BlobStore,
) -> Result<Option<u64>> {
    let (client, pull_client) = clients;
    let digest = layer.digest();
    let context = format!("pushing to {dest}");
    if client
        .blob_exists_for_push(dest, digest)
        .await
        .map_err(BuildError::registry(format!("{context}: layer {digest}")))?
    {
        return Ok(None);
    }
    if let LayerBlob::Remote { source, .. } = &layer.blob {
        if source.registry == dest.registry
            && client
                .mount_blob(dest, &source.repository, digest)
                .await
                .unwrap_or(false)
        {
            return Ok(None);
        }
    }
    if let LayerBlob::Local(info) = &layer.blob {
        let info = info.clone();
        crate::blocking::run(move || {
            info.verify().map_err(BuildError::snapshot(format!(
                "verifying layer {} before pushing it",
                info.digest
            )))
        })
        .await?;
    }
    let path = blobs.local_file(pull_client, layer).await?;
    client
        .push_blob_file(dest, digest, &path)
        .await
        .map_err(BuildError::registry(format!("{context}: layer {digest}")))?;
    Ok(Some(layer.size()))
}

/// Pushes the config of `manifested` to `dest` when the repository lacks it (reported to
/// `events` as a [`BuildEvent::BlobPushed`]), then the manifest; the layers must be there
/// already ([`push_layer`]). Returns the manifest digest.
pub async fn push_config_and_manifest(
    manifested: &Manifested,
    dest: &Reference,
    client: &Client,
    events: Events<'_>,
) -> Result<String> {
    let context = format!("pushing to {dest}");
    let config_digest = &manifested.config_digest;
    if !client
        .blob_exists_for_push(dest, config_digest)
        .await
        .map_err(BuildError::registry(&context))?
    {
        client
            .push_blob_bytes(dest, config_digest, manifested.config.clone())
            .await
            .map_err(BuildError::registry(format!("{context}: config")))?;
        events(BuildEvent::BlobPushed {
            destination: dest.to_string(),
            digest: config_digest.clone(),
            bytes: manifested.config.len() as u64,
        });
    }
    client
        .push_manifest(
            dest,
            manifested.manifest.media_type.as_ref(),
            &manifested.manifest.bytes,
        )
        .await
        .map_err(BuildError::registry(format!("{context}: manifest")))
}

/// Writes `image` as a `docker save`-style tarball (`manifest.json`, the config and one file
/// per layer), which `skopeo copy docker-archive:PATH` and `docker load` read.
pub async fn write_docker_archive(
    image: &Image,
    manifested: &Manifested,
    repo_tags: &[String],
    path: &Path,
    blobs: &BlobStore,
    pull_client: &Client,
) -> Result<()> {
    let mut layers = Vec::new();
    for layer in &image.layers {
        let file = blobs.local_file(pull_client, layer).await?;
        layers.push((layer.digest().to_string(), file));
    }
    let archive = docker_archive::Archive {
        config_digest: &manifested.config_digest,
        config: &manifested.config,
        repo_tags,
        layers: &layers,
    };
    crate::blocking::in_place(|| docker_archive::write(&archive, path))
        .map_err(|e| BuildError::io(e.path)(e.source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ocibuild_snapshot::Compression;

    fn image(format: ImageFormat, compression: Compression, base_type: &str) -> Image {
        let remote = Layer {
            blob: LayerBlob::Remote {
                source: Box::new(Reference::parse("r.io/base:1").unwrap()),
                descriptor: Box::new(
                    manifest::descriptor(base_type, &format!("sha256:{}", "a".repeat(64)), 3)
                        .unwrap(),
                ),
            },
            diff_id: format!("sha256:{}", "b".repeat(64)),
        };
        let local = Layer {
            blob: LayerBlob::Local(LayerInfo {
                digest: format!("sha256:{}", "c".repeat(64)),
                diff_id: format!("sha256:{}", "d".repeat(64)),
                size: 5,
                path: PathBuf::from("/nonexistent"),
                compression,
            }),
            diff_id: format!("sha256:{}", "d".repeat(64)),
        };
        Image {
            config: ImageConfig::scratch("linux", "amd64", None),
            layers: vec![remote, local],
            format,
        }
    }

    fn parsed(m: &Manifested) -> manifest::ImageManifest {
        manifest::parse_manifest(&m.manifest.bytes).unwrap()
    }

    #[test]
    fn annotations_are_sorted_and_absent_when_empty() {
        let img = image(
            ImageFormat::Oci,
            Compression::default(),
            media_types::OCI_LAYER_GZIP,
        );
        let plain = img.manifest_with(&BTreeMap::new()).unwrap();
        assert_eq!(plain.manifest, img.manifest().unwrap().manifest);
        assert!(!String::from_utf8_lossy(&plain.manifest.bytes).contains("annotations"));
        let annotations = BTreeMap::from([
            ("z".to_string(), "1".to_string()),
            ("a".to_string(), "2".to_string()),
        ]);
        let m = img.manifest_with(&annotations).unwrap();
        assert!(String::from_utf8_lossy(&m.manifest.bytes)
            .ends_with(r#""annotations":{"a":"2","z":"1"}}"#));
        assert_eq!(m.manifest.digest, sha256_digest(&m.manifest.bytes));
    }

    #[test]
    fn a_forced_format_converts_every_media_type() {
        let mut img = image(
            ImageFormat::Docker,
            Compression::default(),
            media_types::DOCKER_LAYER_GZIP,
        );
        img.format = ImageFormat::Oci;
        let m = parsed(&img.manifest_with(&BTreeMap::new()).unwrap());
        let media_type = |t: &MediaType| t.to_string();
        assert_eq!(
            m.media_type().as_ref().map(media_type).unwrap(),
            media_types::OCI_MANIFEST
        );
        assert_eq!(media_type(m.config().media_type()), media_types::OCI_CONFIG);
        assert!(m
            .layers()
            .iter()
            .all(|l| media_type(l.media_type()) == media_types::OCI_LAYER_GZIP));
        img.format = ImageFormat::Docker;
        let m = parsed(&img.manifest_with(&BTreeMap::new()).unwrap());
        assert_eq!(
            m.media_type().as_ref().map(media_type).unwrap(),
            media_types::DOCKER_MANIFEST
        );
        assert_eq!(
            media_type(m.config().media_type()),
            media_types::DOCKER_CONFIG
        );
        assert!(m
            .layers()
            .iter()
            .all(|l| media_type(l.media_type()) == media_types::DOCKER_LAYER_GZIP));
    }

    #[test]
    fn zstd_layers_are_refused_in_docker_images() {
        let zstd = Compression::Zstd { level: 3 };
        let img = image(ImageFormat::Docker, zstd, media_types::DOCKER_LAYER_GZIP);
        let err = img.manifest_with(&BTreeMap::new()).unwrap_err().to_string();
        assert!(err.contains("zstd layers need --image-format oci"), "{err}");
        let img = image(
            ImageFormat::Docker,
            Compression::default(),
            media_types::OCI_LAYER_ZSTD,
        );
        assert!(
            img.manifest_with(&BTreeMap::new()).is_err(),
            "a zstd base layer too"
        );
        let img = image(ImageFormat::Oci, zstd, media_types::OCI_LAYER_ZSTD);
        assert!(img.manifest_with(&BTreeMap::new()).is_ok());
    }

    #[test]
    fn formats_parse_from_flag_values() {
        assert_eq!("OCI".parse::<ImageFormat>().unwrap(), ImageFormat::Oci);
        assert_eq!(
            "docker".parse::<ImageFormat>().unwrap(),
            ImageFormat::Docker
        );
        assert!("v2".parse::<ImageFormat>().is_err());
        assert_eq!(ImageFormat::Docker.to_string(), "docker");
    }
}
