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
use std::time::Duration;

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
    /// Download an image again (as `force`) when its entry in the cache directory is older
    /// than this (kaniko's `--cache-ttl`); younger ones are left as they are.
    pub cache_ttl: Option<Duration>,
    /// Registry client settings (TLS, certificates, mirrors, retries, timeout); plain
    /// HTTP from them is added to `insecure_pull` and `insecure_registries`.
    pub registry: ClientOptions,
}

/// Fetches every image of `opts` (the `images`, then the FROM images of the
/// `dockerfile`, each for its FROM's `--platform` if it has one) into the cache directory;
/// blobs already there are not downloaded again unless `force` or the image's entry is
/// older than `cache_ttl`. Reports each layer downloaded as [`BuildEvent::BlobPulled`] and each
/// image as [`BuildEvent::Pulled`]. Images are resolved and their layers fetched and
/// checked against their config's diff_ids as a build does (`image::resolve_image`,
/// `image::pull_into_cache`).
pub async fn warm(opts: &WarmOptions, events: Events<'_>) -> Result<()> {
    let cache = LocalCache::open(&opts.cache_dir, opts.cache_dir_max_size).map_err(|e| {
        BuildError::Options(format!("cache directory {}: {e}", opts.cache_dir.display()))
    })?;
    let client = warm_client(opts)?;
    let mut images: Vec<(String, Option<String>)> =
        opts.images.iter().map(|i| (i.clone(), None)).collect();
    if let Some(dockerfile) = &opts.dockerfile {
        let bases = dockerfile_bases(dockerfile, &opts.build_args, opts.platform.as_deref())?;
        for base in bases {
            if !images.contains(&base) {
                images.push(base);
            }
        }
    }
    if images.is_empty() {
        return Err(BuildError::Options(
            "nothing to warm: name images (--image IMAGE) or a Dockerfile with FROM images \
             (--dockerfile PATH)"
                .into(),
        ));
    }
    for (name, from_platform) in &images {
        let platform = parse_platform(from_platform.as_deref().or(opts.platform.as_deref()))?;
        let reference =
            Reference::parse(name).map_err(BuildError::registry(format!("image {name:?}")))?;
        let pulled = image::resolve_image(&client, reference, &platform, "warming").await?;
        let age = cache.image_age(&pulled.manifest_digest);
        let expired = matches!((age, opts.cache_ttl), (Some(age), Some(ttl)) if age >= ttl);
        let force = opts.force || expired;
        for (index, layer) in pulled.image.layers.iter().enumerate() {
            let LayerBlob::Remote { source, descriptor } = &layer.blob else {
                continue;
            };
            let digest = descriptor.digest().as_ref();
            if !force && cache.blob(digest).is_some() {
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
        // An entry kept is not written again, so that its age is that of its download.
        if force || age.is_none() {
            cache
                .put_image(&pulled.manifest_digest, &pulled.manifest, &pulled.config)
                .map_err(|e| BuildError::Options(format!("warming {}: {e}", pulled.reference)))?;
        }
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

/// The images the FROM lines of `dockerfile` start from, each once in order with the
/// FROM's own `--platform` (`None`: the line has none): global ARGs expanded with
/// `build_args` and the automatic platform ARGs of `platform` (default: the host's), as a
/// build plans them; `scratch` and earlier stages left out (kaniko's warmer
/// `--dockerfile`).
pub fn dockerfile_bases(
    dockerfile: &Path,
    build_args: &BTreeMap<String, Option<String>>,
    platform: Option<&str>,
) -> Result<Vec<(String, Option<String>)>> {
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
    let mut bases = Vec::new();
    for stage in &plan.stages {
        if let StageBase::Image(name) = &stage.base {
            let base = (name.clone(), stage.platform.clone());
            if !bases.contains(&base) {
                bases.push(base);
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
        let image = |name: &str| (name.to_string(), None);
        assert_eq!(
            bases,
            [
                image("reg.example:5000/library/alpine:3"),
                image("reg.example:5000/busybox:arm64")
            ]
        );
        let missing = dockerfile_bases(&dir.path().join("nope"), &args, None);
        assert!(missing.is_err());
    }

    #[test]
    fn a_from_platform_names_the_platform_of_its_image() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("Dockerfile");
        std::fs::write(
            &file,
            "ARG ARCH=arm64\n\
             FROM --platform=linux/arm64 reg.example/multi:1 AS arm\n\
             FROM --platform=linux/${ARCH}/v8 reg.example/multi:1 AS arm-v8\n\
             FROM --platform=$BUILDPLATFORM reg.example/tools:1 AS tools\n\
             FROM --platform=$TARGETPLATFORM reg.example/runtime:1 AS runtime\n\
             FROM reg.example/multi:1\n",
        )
        .unwrap();
        let host = ocibuild_image::platform::name(&parse_platform(None).unwrap());
        let bases = dockerfile_bases(&file, &BTreeMap::new(), Some("linux/s390x")).unwrap();
        let at =
            |name: &str, platform: Option<&str>| (name.to_string(), platform.map(String::from));
        assert_eq!(
            bases,
            [
                at("reg.example/multi:1", Some("linux/arm64")),
                at("reg.example/multi:1", Some("linux/arm64/v8")),
                at("reg.example/tools:1", Some(&host)),
                at("reg.example/runtime:1", Some("linux/s390x")),
                at("reg.example/multi:1", None),
            ]
        );
        let on_host = dockerfile_bases(&file, &BTreeMap::new(), None).unwrap();
        assert_eq!(on_host[3], at("reg.example/runtime:1", Some(&host)));
    }
}
