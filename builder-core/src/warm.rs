//! The cache warmer: pre-fetches base images (manifest, config and every layer) into a
//! local cache directory, so that builds using `--cache-dir` pull nothing but the tag
//! lookup — like kaniko's warmer, for a cache directory kept on a PersistentVolumeClaim.

use crate::cache::LocalCache;
use crate::error::{BuildError, Result};
use crate::events::Events;
use crate::image::{self, BlobStore, LayerBlob};
use crate::options::parse_platform;
use ocibuild_registry::{Client, ClientOptions, DockerConfig, Reference};
use std::path::PathBuf;

/// What to warm.
#[derive(Debug, Clone, Default)]
pub struct WarmOptions {
    /// The cache directory.
    pub cache_dir: PathBuf,
    /// Image references to fetch.
    pub images: Vec<String>,
    /// Size limit of the cache directory in bytes.
    pub cache_dir_max_size: Option<u64>,
    /// Pull over plain HTTP.
    pub insecure_pull: bool,
    /// Registries always spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Platform `os/arch[/variant]` (default: the host's).
    pub platform: Option<String>,
    /// A docker `config.json` to read credentials from.
    pub docker_config: Option<PathBuf>,
}

/// Fetches every image of `opts` into the cache directory; blobs already there are not
/// downloaded again. Reports each image as [`crate::BuildEvent::Pulled`]. Images are resolved and
/// their layers fetched and checked against their config's diff_ids as a build does
/// ([`crate::image::resolve_image`], [`crate::image::pull_into_cache`]).
pub async fn warm(opts: &WarmOptions, events: Events<'_>) -> Result<()> {
    let cache = LocalCache::open(&opts.cache_dir, opts.cache_dir_max_size).map_err(|e| {
        BuildError::Options(format!("cache directory {}: {e}", opts.cache_dir.display()))
    })?;
    let docker_config = DockerConfig::load(opts.docker_config.as_deref())
        .map_err(BuildError::registry("reading registry credentials"))?;
    let client = Client::new(ClientOptions {
        insecure_all: opts.insecure_pull,
        insecure_registries: opts.insecure_registries.clone(),
        docker_config,
        ..ClientOptions::default()
    })
    .map_err(BuildError::registry("setting up the registry client"))?;
    let platform = parse_platform(opts.platform.as_deref())?;
    for name in &opts.images {
        let reference =
            Reference::parse(name).map_err(BuildError::registry(format!("image {name:?}")))?;
        let pulled = image::resolve_image(&client, reference, &platform, "warming").await?;
        for (index, layer) in pulled.image.layers.iter().enumerate() {
            let LayerBlob::Remote { source, descriptor } = &layer.blob else {
                continue;
            };
            let digest = descriptor.digest().as_ref();
            if cache.blob(digest).is_some() {
                continue;
            }
            // The diff_id is computed during the download and recorded, so that builds
            // need no extra pass to verify the layer against their image's config.
            let (_, diff_id, _) = image::pull_into_cache(&cache, &client, source, digest).await?;
            BlobStore::check_diff_id(name, index, layer, diff_id)?;
        }
        cache
            .put_image(&pulled.manifest_digest, &pulled.manifest, &pulled.config)
            .map_err(|e| BuildError::Options(format!("warming {}: {e}", pulled.reference)))?;
        events(pulled.event());
    }
    Ok(())
}
