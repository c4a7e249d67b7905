//! `ocibuild executor push` (a kaniko fork's command): pushes an image that is already on
//! disk — a `docker save`-style tarball (what `--tar-path` writes) or an OCI image layout
//! directory (what `--oci-layout-path` writes) — to one or more registries.
//!
//! The image is first read into a [`PreparedImage`] ([`prepare`]) by the image crate's
//! readers (`docker_archive::extract`, `layout::read_image`): every blob is a file on disk
//! (the members of a tarball are streamed into a temporary directory; a layout's blobs are
//! used where they are), and manifests are checked against their digests. Then
//! [`push_prepared`] uploads each blob the registry does not have yet (a HEAD request
//! first; uploads stream from disk), child manifests of an index by digest, and the
//! manifest last, under the destination's tag.
//!
//! # Sources
//!
//! - A file: a docker-archive tarball (optionally gzip-compressed as a whole) with a
//!   `manifest.json` of one image (`Config`, `RepoTags`, `Layers`). Layers may be plain
//!   tar, gzip or zstd; each is pushed as it is with the matching media type (plain tar →
//!   `application/vnd.docker.image.rootfs.diff.tar`, gzip → `…tar.gzip`), the config is
//!   pushed byte for byte (so the image ID is kept), and the manifest is Docker schema 2
//!   (OCI when a layer is zstd, which Docker schema 2 cannot describe). The layer count
//!   must match the config's `rootfs.diff_ids`, and a plain tar layer must hash to its
//!   diff ID.
//! - A directory: an OCI image layout. `DIR` takes the only image of `index.json` (one
//!   entry, or several names of the same manifest);
//!   `DIR:NAME` the entry whose `org.opencontainers.image.ref.name` is `NAME`. An entry
//!   may be an image manifest or an image index (every platform is pushed).
//!
//! `docker-archive:` and `oci:` prefixes (skopeo's transport names) are accepted.

use ocibuild_image::blob::{dedup, ReadError};
use ocibuild_image::compression::Sniffed;
use ocibuild_image::docker_archive::{self, ArchiveLayer};
use ocibuild_image::layout;
use ocibuild_image::manifest::{self, media_types, ManifestBytes};
use ocibuild_registry::{Client, ClientOptions, Reference};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use ocibuild_image::blob::BlobFile;

/// Why an image could not be pushed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushImageError {
    /// The image path does not exist.
    #[error("{path}: no such file or directory; give a docker-archive tarball (docker save, --tar-path) or an OCI image layout directory (--oci-layout-path), optionally DIR:NAME")]
    NotFound {
        /// The path given.
        path: String,
    },

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },

    /// The tarball is not a usable docker-archive.
    #[error("{path} is not a usable docker-archive tarball: {reason}")]
    InvalidArchive {
        /// The tarball.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The directory is not a usable OCI image layout.
    #[error("{dir} is not a usable OCI image layout: {reason}")]
    InvalidLayout {
        /// The layout directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The layout has no single image to push without a name, or none with the name given.
    #[error("{dir}: {reason}")]
    NoSuchImage {
        /// The layout directory.
        dir: PathBuf,
        /// What was looked for and what there is.
        reason: String,
    },

    /// No destination was given.
    #[error("no --destination given: pass --destination REGISTRY/REPO:TAG (repeatable)")]
    NoDestination,

    /// A destination is not a valid image reference.
    #[error("--destination {input:?}: {source}")]
    Destination {
        /// The text given.
        input: String,
        /// The parse error.
        source: Box<ocibuild_registry::Error>,
    },

    /// Talking to the registry failed.
    #[error("{context}: {source}")]
    Registry {
        /// What was being done (`pushing to REF: layer sha256:…`).
        context: String,
        /// The registry error.
        source: Box<ocibuild_registry::Error>,
    },
}

type Result<T> = std::result::Result<T, PushImageError>;

fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> PushImageError {
    let path = path.into();
    move |source| PushImageError::Io { path, source }
}

/// Where the image to push is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushSource {
    /// A docker-archive tarball.
    DockerArchive(PathBuf),
    /// An OCI image layout directory, and the ref name of the image in it, if given.
    OciLayout {
        /// The layout directory.
        dir: PathBuf,
        /// `org.opencontainers.image.ref.name` of the entry to push.
        name: Option<String>,
    },
}

impl PushSource {
    /// Parses `PATH` (a tarball file or a layout directory) or `DIR:NAME`, with an optional
    /// `docker-archive:` or `oci:` prefix. The path must exist.
    pub fn parse(text: &str) -> Result<PushSource> {
        let (text, want_layout, want_archive) = if let Some(rest) = text.strip_prefix("oci:") {
            (rest, true, false)
        } else if let Some(rest) = text.strip_prefix("docker-archive:") {
            (rest, false, true)
        } else {
            (text, false, false)
        };
        if text.is_empty() {
            return Err(PushImageError::NotFound { path: text.into() });
        }
        let whole = Path::new(text);
        let source = match fs::metadata(whole) {
            Ok(m) if m.is_dir() => PushSource::OciLayout {
                dir: whole.to_path_buf(),
                name: None,
            },
            Ok(_) => PushSource::DockerArchive(whole.to_path_buf()),
            Err(_) => match text.rsplit_once(':') {
                Some((dir, name))
                    if !name.is_empty() && !name.contains('/') && Path::new(dir).is_dir() =>
                {
                    PushSource::OciLayout {
                        dir: PathBuf::from(dir),
                        name: Some(name.to_string()),
                    }
                }
                _ => return Err(PushImageError::NotFound { path: text.into() }),
            },
        };
        match (&source, want_layout, want_archive) {
            (PushSource::DockerArchive(p), true, _) => Err(PushImageError::InvalidLayout {
                dir: p.clone(),
                reason: "it is a file, not a directory".into(),
            }),
            (PushSource::OciLayout { dir, .. }, _, true) => Err(PushImageError::InvalidArchive {
                path: dir.clone(),
                reason: "it is a directory, not a tarball".into(),
            }),
            _ => Ok(source),
        }
    }
}

/// An image ready to push: its blobs as files, manifests checked against their digests.
#[derive(Debug)]
pub struct PreparedImage {
    /// Layers and configs, each digest once.
    pub blobs: Vec<BlobFile>,
    /// Manifests an index refers to, pushed by digest before [`top`](Self::top).
    pub children: Vec<ManifestBytes>,
    /// The manifest (or index) pushed under each destination's tag.
    pub top: ManifestBytes,
    /// The temporary directory holding the members of a tarball; removed when dropped.
    _work: Option<tempfile::TempDir>,
}

/// Reads the image at `source` (see the [module documentation](self)). A tarball's members
/// are streamed into a new temporary directory under `work_dir` (default: the system's),
/// which lives as long as the result.
pub fn prepare(source: &PushSource, work_dir: Option<&Path>) -> Result<PreparedImage> {
    match source {
        PushSource::DockerArchive(path) => prepare_archive(path, work_dir),
        PushSource::OciLayout { dir, name } => prepare_layout(dir, name.as_deref()),
    }
}

/// Extracts the tarball `path` into a new temporary directory (under `work_dir` when
/// given) and makes its manifest.
fn prepare_archive(path: &Path, work_dir: Option<&Path>) -> Result<PreparedImage> {
    let work = temp_dir(work_dir)?;
    let archive = docker_archive::extract(path, work.path()).map_err(|e| match e {
        ReadError::Io { path, source } => PushImageError::Io { path, source },
        other => PushImageError::InvalidArchive {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    })?;
    let top = archive_manifest(&archive).map_err(|e| PushImageError::InvalidArchive {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let layers = archive.layers.into_iter().map(|l| l.blob);
    Ok(PreparedImage {
        blobs: dedup(std::iter::once(archive.config).chain(layers).collect()),
        children: Vec::new(),
        top,
        _work: Some(work),
    })
}

/// A new temporary directory for a tarball's members, under `work_dir` when given.
fn temp_dir(work_dir: Option<&Path>) -> Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("ocibuild-push-");
    match work_dir {
        Some(dir) => builder.tempdir_in(dir).map_err(io_err(dir)),
        None => builder.tempdir().map_err(io_err(std::env::temp_dir())),
    }
}

/// The manifest of an extracted archive: Docker schema 2, or OCI when a layer is zstd
/// (which Docker schema 2 cannot describe); each layer with the media type of its
/// compression, the config byte for byte.
fn archive_manifest(
    archive: &docker_archive::Extracted,
) -> std::result::Result<ManifestBytes, manifest::ManifestError> {
    let oci = archive
        .layers
        .iter()
        .any(|l| l.compression == Sniffed::Zstd);
    let (manifest_type, config_type) = if oci {
        (media_types::OCI_MANIFEST, media_types::OCI_CONFIG)
    } else {
        (media_types::DOCKER_MANIFEST, media_types::DOCKER_CONFIG)
    };
    let config = &archive.config;
    let config = manifest::descriptor(config_type, &config.digest, config.size)?;
    let layers = archive
        .layers
        .iter()
        .map(|l| manifest::descriptor(layer_media_type(oci, l), &l.blob.digest, l.blob.size))
        .collect::<std::result::Result<_, _>>()?;
    let image = manifest::image_manifest(manifest_type, config, layers, &Default::default());
    Ok(ManifestBytes::of_manifest(&image))
}

/// The media type of an archive layer in an OCI (`oci`) or Docker manifest.
fn layer_media_type(oci: bool, layer: &ArchiveLayer) -> &'static str {
    match (oci, layer.compression) {
        (false, Sniffed::Gzip) => media_types::DOCKER_LAYER_GZIP,
        (false, _) => media_types::DOCKER_LAYER_TAR,
        (true, Sniffed::Gzip) => media_types::OCI_LAYER_GZIP,
        (true, Sniffed::Zstd) => media_types::OCI_LAYER_ZSTD,
        (true, _) => media_types::OCI_LAYER_TAR,
    }
}

/// Reads the image named `name` (or the only one) of the layout `dir`.
fn prepare_layout(dir: &Path, name: Option<&str>) -> Result<PreparedImage> {
    let image = layout::read_image(dir, name).map_err(|e| {
        let dir = dir.to_path_buf();
        match e {
            ReadError::Io { path, source } => PushImageError::Io { path, source },
            ReadError::NoIndex => PushImageError::InvalidLayout {
                dir,
                reason: "it has no index.json (a docker-archive must be a file; a layout is what --oci-layout-path or skopeo copy oci:DIR write)".into(),
            },
            ReadError::NoSuchImage(reason) => PushImageError::NoSuchImage { dir, reason },
            ReadError::Invalid(reason) => PushImageError::InvalidLayout { dir, reason },
        }
    })?;
    Ok(PreparedImage {
        blobs: image.blobs,
        children: image.children,
        top: image.top,
        _work: None,
    })
}

/// Parses every destination (at least one).
pub fn parse_destinations(destinations: &[String]) -> Result<Vec<Reference>> {
    if destinations.is_empty() {
        return Err(PushImageError::NoDestination);
    }
    destinations
        .iter()
        .map(|d| {
            Reference::parse(d).map_err(|e| PushImageError::Destination {
                input: d.clone(),
                source: Box::new(e),
            })
        })
        .collect()
}

/// Pushes `image` to `dest`: each blob the repository lacks (HEAD first, upload streamed
/// from its file), the child manifests by digest, then the manifest under `dest`'s tag (or
/// digest). Returns the manifest digest.
pub async fn push_prepared(
    image: &PreparedImage,
    dest: &Reference,
    client: &Client,
) -> Result<String> {
    let context = format!("pushing to {dest}");
    let registry = |what: String| {
        move |e: ocibuild_registry::Error| PushImageError::Registry {
            context: what,
            source: Box::new(e),
        }
    };
    for blob in &image.blobs {
        let exists = client
            .blob_exists_for_push(dest, &blob.digest)
            .await
            .map_err(registry(format!(
                "{context}: checking blob {}",
                blob.digest
            )))?;
        if !exists {
            client
                .push_blob_file(dest, &blob.digest, &blob.path)
                .await
                .map_err(registry(format!("{context}: blob {}", blob.digest)))?;
        }
    }
    for child in &image.children {
        client
            .push_manifest(
                &dest.with_digest(&child.digest),
                child.media_type.as_ref(),
                &child.bytes,
            )
            .await
            .map_err(registry(format!("{context}: manifest {}", child.digest)))?;
    }
    client
        .push_manifest(dest, image.top.media_type.as_ref(), &image.top.bytes)
        .await
        .map_err(registry(format!("{context}: manifest")))
}

/// What `executor push` does.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PushOptions {
    /// The image: a tarball or a layout directory (`PATH`, or `DIR:NAME` for the entry
    /// named NAME), optionally prefixed `docker-archive:` or `oci:`.
    pub source: String,
    /// Where to push it; at least one.
    pub destinations: Vec<String>,
    /// Write the manifest digest (`sha256:<hex>`, no newline) here.
    pub digest_file: Option<PathBuf>,
    /// Registry client settings (TLS, plain http, credentials, retries).
    pub client: ClientOptions,
    /// Where a tarball's members are extracted (default: the system's temporary directory).
    pub work_dir: Option<PathBuf>,
}

/// Reads the image of `opts.source` and pushes it to every destination, calling `pushed`
/// with each destination and the manifest digest; writes the digest file last. Returns the
/// manifest digest.
pub async fn push_image(
    opts: &PushOptions,
    pushed: &mut dyn FnMut(&Reference, &str),
) -> Result<String> {
    let destinations = parse_destinations(&opts.destinations)?;
    let source = PushSource::parse(&opts.source)?;
    let client = Client::new(opts.client.clone()).map_err(|e| PushImageError::Registry {
        context: "setting up the registry client".into(),
        source: Box::new(e),
    })?;
    let image = {
        let work_dir = opts.work_dir.clone();
        tokio::task::spawn_blocking(move || prepare(&source, work_dir.as_deref()))
            .await
            .map_err(|e| PushImageError::Io {
                path: PathBuf::from(&opts.source),
                source: io::Error::other(e.to_string()),
            })??
    };
    for dest in &destinations {
        let digest = push_prepared(&image, dest, &client).await?;
        pushed(dest, &digest);
    }
    if let Some(path) = &opts.digest_file {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        fs::write(path, image.top.digest.as_bytes()).map_err(io_err(path))?;
    }
    Ok(image.top.digest.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(tar: &mut tar::Builder<fs::File>, name: &str, bytes: &[u8]) {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes).unwrap();
    }

    fn layer_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_size(2);
        header.set_mode(0o644);
        header.set_cksum();
        b.append_data(&mut header, "hi", &b"hi"[..]).unwrap();
        b.into_inner().unwrap()
    }

    fn archive(dir: &Path, manifest: &str, config: &[u8], layer: &[u8]) -> PathBuf {
        let path = dir.join("image.tar");
        let mut tar = tar::Builder::new(fs::File::create(&path).unwrap());
        append(&mut tar, "./config.json", config);
        append(&mut tar, "abc/layer.tar", layer);
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_cksum();
        tar.append_link(&mut header, "def/layer.tar", "../abc/layer.tar")
            .unwrap();
        append(&mut tar, "manifest.json", manifest.as_bytes());
        tar.finish().unwrap();
        path
    }

    #[test]
    fn archives_with_plain_layers_and_links_become_docker_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let layer = layer_tar();
        let diff_id = ocibuild_image::digest::sha256_digest(&layer);
        let config = format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#);
        let manifest =
            r#"[{"Config":"config.json","RepoTags":["a:1"],"Layers":["def/layer.tar"]}]"#;
        let path = archive(dir.path(), manifest, config.as_bytes(), &layer);
        let source = PushSource::parse(path.to_str().unwrap()).unwrap();
        let image = prepare(&source, Some(dir.path())).unwrap();
        let m: serde_json::Value = serde_json::from_slice(&image.top.bytes).unwrap();
        assert_eq!(m["mediaType"], media_types::DOCKER_MANIFEST);
        assert_eq!(m["layers"][0]["mediaType"], media_types::DOCKER_LAYER_TAR);
        assert_eq!(m["layers"][0]["digest"], diff_id.as_str());
        assert_eq!(
            m["config"]["digest"],
            ocibuild_image::digest::sha256_digest(config.as_bytes()).as_str()
        );
        assert_eq!(image.blobs.len(), 2);
        assert_eq!(fs::read(&image.blobs[1].path).unwrap(), layer);
    }

    #[test]
    fn bad_archives_and_paths_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let layer = layer_tar();
        let config = r#"{"rootfs":{"type":"layers","diff_ids":["sha256:00"]}}"#;
        let manifest = r#"[{"Config":"config.json","Layers":["abc/layer.tar"]}]"#;
        let path = archive(dir.path(), manifest, config.as_bytes(), &layer);
        let err = prepare(&PushSource::DockerArchive(path.clone()), None).unwrap_err();
        assert!(
            err.to_string().contains("but the config's diff_id is"),
            "{err}"
        );
        let manifest = r#"[{"Config":"nope.json","Layers":[]}]"#;
        let path = archive(dir.path(), manifest, config.as_bytes(), &layer);
        let err = prepare(&PushSource::DockerArchive(path), None).unwrap_err();
        assert!(err.to_string().contains("does not contain"), "{err}");
        let junk = dir.path().join("junk");
        fs::write(&junk, b"not a tarball at all").unwrap();
        let err = prepare(&PushSource::DockerArchive(junk), None).unwrap_err();
        assert!(
            err.to_string().contains("not a usable docker-archive"),
            "{err}"
        );
        let err = PushSource::parse("/nonexistent/x.tar").unwrap_err();
        assert!(err.to_string().contains("no such file"), "{err}");
        let err = prepare(
            &PushSource::parse(dir.path().to_str().unwrap()).unwrap(),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("has no index.json"), "{err}");
        assert_eq!(
            PushSource::parse(&format!("{}:v1", dir.path().display())).unwrap(),
            PushSource::OciLayout {
                dir: dir.path().to_path_buf(),
                name: Some("v1".into())
            }
        );
        assert!(parse_destinations(&[]).is_err());
        assert!(parse_destinations(&["Bad Ref".into()]).is_err());
    }
}
