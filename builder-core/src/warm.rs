//! The cache warmer: pre-fetches base images (manifest, config and every layer) into a
//! local cache directory, so that builds using `--cache-dir` pull nothing but the tag
//! lookup — like kaniko's warmer, for a cache directory kept on a PersistentVolumeClaim.

use crate::cache::LocalCache;
use crate::error::{BuildError, Result};
use crate::events::{BuildEvent, Events};
use crate::image::{self, BlobStore, LayerBlob};
use crate::options::{parse_platform, BuildOptions};
use ocibuild_dockerfile::plan::StageBase;
use ocibuild_registry::{Client, ClientOptions, DockerConfig, Reference};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What to warm.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
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
    /// A Dockerfile whose FROM images are fetched too (kaniko's `--dockerfile`).
    pub dockerfile: Option<PathBuf>,
    /// Build arguments for the Dockerfile's global ARGs (`None`: take no value).
    pub build_args: BTreeMap<String, Option<String>>,
    /// Download every layer again, even those already in the cache directory (kaniko's
    /// `--force`).
    pub force: bool,
    /// Registry client settings (TLS, certificates, mirrors, retries, timeout); plain
    /// HTTP from them is added to `insecure_pull` and `insecure_registries`.
    pub registry: ClientOptions,
}

/// Fetches every image of `opts` (the `images`, then the FROM images of the
/// `dockerfile`) into the cache directory; blobs already there are not downloaded again
/// unless `force`. Reports each layer downloaded as [`BuildEvent::BlobPulled`] and each
/// image as [`BuildEvent::Pulled`]. Images are resolved and their layers fetched and
/// checked against their config's diff_ids as a build does (`image::resolve_image`,
/// `image::pull_into_cache`).
pub async fn warm(opts: &WarmOptions, events: Events<'_>) -> Result<()> {
    let cache = LocalCache::open(&opts.cache_dir, opts.cache_dir_max_size).map_err(|e| {
        BuildError::Options(format!("cache directory {}: {e}", opts.cache_dir.display()))
    })?;
    let client = warm_client(opts)?;
    let platform = parse_platform(opts.platform.as_deref())?;
    let mut images = opts.images.clone();
    if let Some(dockerfile) = &opts.dockerfile {
        let bases = dockerfile_bases(dockerfile, &opts.build_args, opts.platform.as_deref())?;
        images.extend(bases.into_iter().filter(|b| !opts.images.contains(b)));
    }
    if images.is_empty() {
        return Err(BuildError::Options(
            "nothing to warm: name images (--image IMAGE) or a Dockerfile with FROM images \
             (--dockerfile PATH)"
                .into(),
        ));
    }
    for name in &images {
        let reference =
            Reference::parse(name).map_err(BuildError::registry(format!("image {name:?}")))?;
        let pulled = image::resolve_image(&client, reference, &platform, "warming").await?;
        for (index, layer) in pulled.image.layers.iter().enumerate() {
            let LayerBlob::Remote { source, descriptor } = &layer.blob else {
                continue;
            };
            let digest = descriptor.digest().as_ref();
            if !opts.force && cache.blob(digest).is_some() {
                continue;
            }
            // The diff_id is computed during the download and recorded, so that builds
            // need no extra pass to verify the layer against their image's config.
            let (_, diff_id, bytes) =
                image::pull_into_cache(&cache, &client, source, digest).await?;
            BlobStore::check_diff_id(name, index, layer, diff_id)?;
            events(BuildEvent::BlobPulled {
                reference: source.to_string(),
                digest: digest.to_string(),
                bytes,
            });
        }
        cache
            .put_image(&pulled.manifest_digest, &pulled.manifest, &pulled.config)
            .map_err(|e| BuildError::Options(format!("warming {}: {e}", pulled.reference)))?;
        events(pulled.event());
    }
    Ok(())
}

/// The registry client of `opts`: its client settings with the plain-HTTP options and the
/// credentials of `docker_config` (or the usual places).
fn warm_client(opts: &WarmOptions) -> Result<Client> {
    let docker_config = DockerConfig::load(opts.docker_config.as_deref())
        .map_err(BuildError::registry("reading registry credentials"))?;
    let mut options = ClientOptions {
        docker_config,
        ..opts.registry.clone()
    };
    options.insecure_all |= opts.insecure_pull;
    options
        .insecure_registries
        .extend(opts.insecure_registries.iter().cloned());
    Client::new(options).map_err(BuildError::registry("setting up the registry client"))
}

/// The images the FROM lines of `dockerfile` start from, each once in order: global ARGs
/// expanded with `build_args` and the automatic platform ARGs of `platform` (default: the
/// host's), as a build plans them; `scratch` and earlier stages left out (kaniko's
/// warmer `--dockerfile`).
pub fn dockerfile_bases(
    dockerfile: &Path,
    build_args: &BTreeMap<String, Option<String>>,
    platform: Option<&str>,
) -> Result<Vec<String>> {
    let context = match dockerfile.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let opts = BuildOptions {
        context,
        dockerfile: dockerfile.to_path_buf(),
        build_args: build_args.clone(),
        platform: platform.map(str::to_string),
        ..BuildOptions::default()
    };
    let (_, _, plan) = crate::build::load_plan(&opts)?;
    let mut bases: Vec<String> = Vec::new();
    for stage in &plan.stages {
        if let StageBase::Image(name) = &stage.base {
            if !bases.contains(name) {
                bases.push(name.clone());
            }
        }
    }
    Ok(bases)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dockerfile_names_its_from_images_with_build_args_expanded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("Containerfile");
        std::fs::write(
            &file,
            "ARG REG=docker.io\nARG TAG\n\
             FROM ${REG}/library/alpine:${TAG:-3} AS one\n\
             FROM scratch AS two\n\
             FROM one\n\
             FROM ${REG}/library/alpine:${TAG:-3}\n\
             FROM ${REG}/busybox:${TARGETARCH}\n",
        )
        .unwrap();
        let args: BTreeMap<String, Option<String>> =
            [("REG".to_string(), Some("reg.example:5000".to_string()))].into();
        let bases = dockerfile_bases(&file, &args, Some("linux/arm64")).unwrap();
        assert_eq!(
            bases,
            [
                "reg.example:5000/library/alpine:3",
                "reg.example:5000/busybox:arm64"
            ]
        );
        let missing = dockerfile_bases(&dir.path().join("nope"), &args, None);
        assert!(missing.is_err());
    }
}
