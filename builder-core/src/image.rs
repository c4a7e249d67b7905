//! Images as ocibuild assembles them: a config plus an ordered list of layers, each either
//! still in a registry (base image layers, fetched only when needed) or a local file that a
//! step produced. Also the local blob store, the manifest, pushing and tarball output.

use crate::config::ImageConfig;
use crate::error::{BuildError, Result};
use ocibuild_registry::{media_types, Client, Descriptor, ImageManifest, Reference};
use ocibuild_snapshot::LayerInfo;
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};

/// Whether the image is written with OCI or Docker schema 2 media types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageFormat {
    /// `application/vnd.oci.image.manifest.v1+json`.
    #[default]
    Oci,
    /// `application/vnd.docker.distribution.manifest.v2+json`.
    Docker,
}

impl ImageFormat {
    /// The format of a pulled manifest's media type.
    pub fn of_manifest(media_type: &str) -> ImageFormat {
        if media_type == media_types::DOCKER_MANIFEST {
            ImageFormat::Docker
        } else {
            ImageFormat::Oci
        }
    }

    fn manifest_media_type(self) -> &'static str {
        match self {
            ImageFormat::Oci => media_types::OCI_MANIFEST,
            ImageFormat::Docker => media_types::DOCKER_MANIFEST,
        }
    }

    fn config_media_type(self) -> &'static str {
        match self {
            ImageFormat::Oci => media_types::OCI_CONFIG,
            ImageFormat::Docker => media_types::DOCKER_CONFIG,
        }
    }

    /// A layer media type translated into this format (gzip and plain tar layers have an
    /// equivalent in both; others are kept).
    fn layer_media_type(self, media_type: &str) -> String {
        let docker_gzip = media_types::DOCKER_LAYER_GZIP;
        let docker_tar = "application/vnd.docker.image.rootfs.diff.tar";
        match (self, media_type) {
            (ImageFormat::Oci, m) if m == docker_gzip => media_types::OCI_LAYER_GZIP.into(),
            (ImageFormat::Oci, m) if m == docker_tar => media_types::OCI_LAYER_TAR.into(),
            (ImageFormat::Docker, m) if m == media_types::OCI_LAYER_GZIP => docker_gzip.into(),
            (ImageFormat::Docker, m) if m == media_types::OCI_LAYER_TAR => docker_tar.into(),
            (_, m) => m.to_string(),
        }
    }
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
            LayerBlob::Remote { descriptor, .. } => &descriptor.digest,
            LayerBlob::Local(info) => &info.digest,
        }
    }

    fn descriptor(&self, format: ImageFormat) -> Descriptor {
        match &self.blob {
            LayerBlob::Remote { descriptor, .. } => Descriptor {
                media_type: format.layer_media_type(&descriptor.media_type),
                ..(**descriptor).clone()
            },
            LayerBlob::Local(info) => Descriptor {
                media_type: match format {
                    ImageFormat::Oci => info.oci_media_type().to_string(),
                    ImageFormat::Docker => info.docker_media_type().to_string(),
                },
                digest: info.digest.clone(),
                size: info.size,
                platform: None,
                annotations: None,
                urls: None,
            },
        }
    }
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
    /// Manifest JSON.
    pub manifest: Vec<u8>,
    /// `sha256:` of the manifest JSON.
    pub manifest_digest: String,
    /// Manifest media type.
    pub media_type: &'static str,
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Image {
    /// Serialises config and manifest.
    pub fn manifest(&self) -> Manifested {
        let config = self.config.to_json();
        let config_digest = sha256_digest(&config);
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(self.format.manifest_media_type().to_string()),
            config: Descriptor {
                media_type: self.format.config_media_type().to_string(),
                digest: config_digest.clone(),
                size: config.len() as u64,
                platform: None,
                annotations: None,
                urls: None,
            },
            layers: self
                .layers
                .iter()
                .map(|l| l.descriptor(self.format))
                .collect(),
            annotations: None,
        };
        let manifest = serde_json::to_vec(&manifest).expect("a manifest always serialises");
        Manifested {
            manifest_digest: sha256_digest(&manifest),
            config,
            config_digest,
            manifest,
            media_type: self.format.manifest_media_type(),
        }
    }
}

/// Content-addressed files under the work directory: downloaded base layers.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
    cache: Option<crate::cache::LocalCache>,
}

impl BlobStore {
    /// A store in `dir` (created if missing); with `cache`, remote blobs are taken from
    /// and added to that local cache directory, so base images are pulled once.
    pub fn new(dir: PathBuf, cache: Option<crate::cache::LocalCache>) -> Result<BlobStore> {
        fs::create_dir_all(&dir).map_err(BuildError::io(&dir))?;
        Ok(BlobStore { dir, cache })
    }

    /// Where blob `digest` lives.
    pub fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(digest.replace(':', "-"))
    }

    /// The local file of `layer`, downloading it first if it is remote and not here yet.
    pub async fn local_file(&self, client: &Client, layer: &Layer) -> Result<PathBuf> {
        match &layer.blob {
            LayerBlob::Local(info) => Ok(info.path.clone()),
            LayerBlob::Remote { source, descriptor } => {
                let path = self.path(&descriptor.digest);
                if !path.exists() {
                    self.fetch(client, source, &descriptor.digest, &path)
                        .await?;
                }
                Ok(path)
            }
        }
    }

    /// Puts blob `digest` of `source` at `path`: from the local cache when it has it, else
    /// pulled (into the cache first, when there is one).
    async fn fetch(
        &self,
        client: &Client,
        source: &Reference,
        digest: &str,
        path: &Path,
    ) -> Result<()> {
        let context = || format!("pulling layer {digest} of {source}");
        if let Some(cache) = &self.cache {
            if let Some(cached) = cache.blob(digest) {
                return link_or_copy(&cached, path);
            }
            let tmp = cache.temp_path("pull");
            client
                .pull_blob_to_file(source, digest, &tmp)
                .await
                .map_err(BuildError::registry(context()))?;
            let cached = cache.put_blob(digest, &tmp).map_err(|e| {
                BuildError::Options(format!(
                    "{}: storing it in the cache directory: {e}",
                    context()
                ))
            })?;
            return link_or_copy(&cached, path);
        }
        client
            .pull_blob_to_file(source, digest, path)
            .await
            .map_err(BuildError::registry(context()))?;
        Ok(())
    }
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

/// Pushes `image` to `dest`: blobs the registry lacks (mounted from the base repository when
/// it is on the same registry, else uploaded from disk), then the manifest. Returns the
/// manifest digest.
pub async fn push(
    image: &Image,
    manifested: &Manifested,
    dest: &Reference,
    client: &Client,
    pull_client: &Client,
    blobs: &BlobStore,
) -> Result<String> {
    let context = format!("pushing to {dest}");
    for layer in &image.layers {
        let digest = layer.digest();
        if client
            .blob_exists(dest, digest)
            .await
            .map_err(BuildError::registry(&context))?
        {
            continue;
        }
        if let LayerBlob::Remote { source, .. } = &layer.blob {
            if source.registry == dest.registry
                && client
                    .mount_blob(dest, &source.repository, digest)
                    .await
                    .unwrap_or(false)
            {
                continue;
            }
        }
        let path = blobs.local_file(pull_client, layer).await?;
        client
            .push_blob_file(dest, digest, &path)
            .await
            .map_err(BuildError::registry(format!("{context}: layer {digest}")))?;
    }
    if !client
        .blob_exists(dest, &manifested.config_digest)
        .await
        .map_err(BuildError::registry(&context))?
    {
        client
            .push_blob_bytes(dest, &manifested.config_digest, manifested.config.clone())
            .await
            .map_err(BuildError::registry(format!("{context}: config")))?;
    }
    client
        .push_manifest(dest, manifested.media_type, &manifested.manifest)
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
    let mut layer_files = Vec::new();
    for layer in &image.layers {
        let file = blobs.local_file(pull_client, layer).await?;
        let hex = layer.digest().trim_start_matches("sha256:").to_string();
        layer_files.push((format!("{hex}.tar.gz"), file));
    }
    let config_name = format!(
        "{}.json",
        manifested.config_digest.trim_start_matches("sha256:")
    );
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": repo_tags,
        "Layers": layer_files.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
    }]);
    let tmp = path.with_extension("tar.partial");
    let out = fs::File::create(&tmp).map_err(BuildError::io(&tmp))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(out));
    let io = BuildError::io(&tmp);
    let result = (|| -> std::io::Result<()> {
        append_bytes(&mut tar, &config_name, &manifested.config)?;
        for (name, file) in &layer_files {
            let mut f = fs::File::open(file)?;
            let mut header = tar::Header::new_ustar();
            header.set_size(f.metadata()?.len());
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, name, &mut f)?;
        }
        append_bytes(&mut tar, "manifest.json", manifest.to_string().as_bytes())?;
        tar.into_inner()?
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()
    })();
    result.map_err(io)?;
    fs::rename(&tmp, path).map_err(BuildError::io(path))
}

fn append_bytes<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    bytes: &[u8],
) -> std::io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, name, bytes)
}
