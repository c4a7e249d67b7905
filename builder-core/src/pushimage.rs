//! `ocibuild executor push` (a kaniko fork's command): pushes an image that is already on
//! disk — a `docker save`-style tarball (what `--tar-path` writes) or an OCI image layout
//! directory (what `--oci-layout-path` writes) — to one or more registries.
//!
//! The image is first read into a [`PreparedImage`] ([`prepare`]): every blob is a file on
//! disk (the members of a tarball are streamed into a temporary directory; a layout's blobs
//! are used where they are), and manifests are checked against their digests. Then
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
//! - A directory: an OCI image layout. `DIR` takes the only entry of `index.json`;
//!   `DIR:NAME` the entry whose `org.opencontainers.image.ref.name` is `NAME`. An entry
//!   may be an image manifest or an image index (every platform is pushed).
//!
//! `docker-archive:` and `oci:` prefixes (skopeo's transport names) are accepted.

use ocibuild_image::compression::{self, Sniffed};
use ocibuild_image::layout;
use ocibuild_registry::{media_types, Client, ClientOptions, Reference};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

/// The media type of an uncompressed layer in a Docker schema 2 manifest.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// The largest `manifest.json`, config or manifest read into memory.
const MAX_METADATA: u64 = 16 << 20;

/// How deep image indexes may nest in a layout.
const MAX_INDEX_DEPTH: usize = 4;

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

/// A blob to push, as a file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobFile {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// The file holding exactly the blob's bytes.
    pub path: PathBuf,
}

/// A manifest (or index) to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestBlob {
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
    /// Its media type (the `Content-Type` of the upload).
    pub media_type: String,
    /// The exact bytes.
    pub bytes: Vec<u8>,
}

/// An image ready to push: its blobs as files, manifests checked against their digests.
#[derive(Debug)]
pub struct PreparedImage {
    /// Layers and configs, each digest once.
    pub blobs: Vec<BlobFile>,
    /// Manifests an index refers to, pushed by digest before [`top`](Self::top).
    pub children: Vec<ManifestBlob>,
    /// The manifest (or index) pushed under each destination's tag.
    pub top: ManifestBlob,
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

/// The compression a blob's first bytes reveal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The layer compression `magic` reveals (bzip2 and xz are no layer compression: plain).
fn sniff(magic: &[u8]) -> Compression {
    match compression::sniff(magic) {
        Sniffed::Gzip => Compression::Gzip,
        Sniffed::Zstd => Compression::Zstd,
        Sniffed::Plain | Sniffed::Bzip2 | Sniffed::Xz => Compression::None,
    }
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
    first: Vec<u8>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        if self.first.len() < 4 {
            let take = (4 - self.first.len()).min(n);
            self.first.extend_from_slice(&buf[..take]);
        }
        Ok(n)
    }
}

/// A tarball member once extracted.
#[derive(Debug, Clone)]
enum Member {
    File {
        path: PathBuf,
        digest: String,
        size: u64,
        compression: Compression,
    },
    /// A symbolic or hard link to another member (archive-relative, normalised).
    Link(String),
}

/// `name` without `./`, empty and `.` components; `None` when it climbs out with `..`.
fn normalise(name: &Path) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in name.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Some(parts.join("/"))
}

fn prepare_archive(path: &Path, work_dir: Option<&Path>) -> Result<PreparedImage> {
    let invalid = |reason: String| PushImageError::InvalidArchive {
        path: path.to_path_buf(),
        reason,
    };
    let work = match work_dir {
        Some(dir) => tempfile::Builder::new()
            .prefix("ocibuild-push-")
            .tempdir_in(dir)
            .map_err(io_err(dir))?,
        None => tempfile::Builder::new()
            .prefix("ocibuild-push-")
            .tempdir()
            .map_err(io_err(std::env::temp_dir()))?,
    };
    let file = fs::File::open(path).map_err(io_err(path))?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let magic = reader.fill_buf().map_err(io_err(path))?.to_vec();
    let outer: Box<dyn Read> = match sniff(&magic) {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(zstd::Decoder::with_buffer(reader).map_err(io_err(path))?),
        Compression::None => Box::new(reader),
    };
    let mut members: BTreeMap<String, Member> = BTreeMap::new();
    let mut archive = tar::Archive::new(outer);
    let entries = archive
        .entries()
        .map_err(|e| invalid(format!("reading it as tar: {e}")))?;
    for (n, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| invalid(format!("reading it as tar: {e}")))?;
        let raw = entry
            .path()
            .map_err(|e| invalid(format!("a member has an unreadable name: {e}")))?
            .into_owned();
        let Some(name) = normalise(&raw) else {
            continue;
        };
        let kind = entry.header().entry_type();
        if kind.is_file() {
            let out = work.path().join(format!("member-{n}"));
            let mut hashing = Hashing {
                inner: &mut entry,
                hasher: Sha256::new(),
                size: 0,
                first: Vec::new(),
            };
            let mut dest = io::BufWriter::new(fs::File::create(&out).map_err(io_err(&out))?);
            io::copy(&mut hashing, &mut dest)
                .map_err(|e| invalid(format!("extracting {name}: {e}")))?;
            dest.flush().map_err(io_err(&out))?;
            members.insert(
                name,
                Member::File {
                    path: out,
                    digest: format!("sha256:{}", hex::encode(hashing.hasher.finalize())),
                    size: hashing.size,
                    compression: sniff(&hashing.first),
                },
            );
        } else if kind.is_symlink() || kind.is_hard_link() {
            let Some(target) = entry.link_name().ok().flatten() else {
                continue;
            };
            let joined = if kind.is_symlink() && !target.is_absolute() {
                raw.parent().unwrap_or(Path::new("")).join(&target)
            } else {
                target.into_owned()
            };
            if let Some(target) = normalise(&joined) {
                members.insert(name, Member::Link(target));
            }
        }
    }
    let resolve = |name: &str| -> Result<(PathBuf, String, u64, Compression)> {
        let mut current = normalise(Path::new(name))
            .ok_or_else(|| invalid(format!("{name:?} points outside the archive")))?;
        for _ in 0..16 {
            match members.get(&current) {
                Some(Member::File {
                    path,
                    digest,
                    size,
                    compression,
                }) => return Ok((path.clone(), digest.clone(), *size, *compression)),
                Some(Member::Link(target)) => current = target.clone(),
                None => {
                    return Err(invalid(format!(
                        "manifest.json names {name:?}, which the archive does not contain"
                    )))
                }
            }
        }
        Err(invalid(format!("{name:?} is a link loop")))
    };
    let (manifest_path, _, manifest_size, _) = resolve("manifest.json").map_err(|_| {
        invalid("it has no manifest.json (is it a docker save / --tar-path tarball?)".into())
    })?;
    let manifest =
        read_limited(&manifest_path, manifest_size, "manifest.json").map_err(&invalid)?;
    let manifest: Value = serde_json::from_slice(&manifest)
        .map_err(|e| invalid(format!("manifest.json is not valid JSON ({e})")))?;
    let image = match manifest.as_array().map(Vec::as_slice) {
        Some([image]) => image,
        Some([]) => return Err(invalid("manifest.json lists no image".into())),
        Some(many) => {
            return Err(invalid(format!(
                "manifest.json lists {} images; push takes an archive of one image",
                many.len()
            )))
        }
        None => return Err(invalid("manifest.json is not a JSON array".into())),
    };
    let config_name = image
        .get("Config")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("manifest.json has no \"Config\" file name".into()))?;
    let layer_names: Vec<&str> = match image.get("Layers") {
        Some(Value::Array(names)) => names
            .iter()
            .map(|n| {
                n.as_str()
                    .ok_or_else(|| invalid("\"Layers\" in manifest.json holds a non-string".into()))
            })
            .collect::<Result<_>>()?,
        _ => return Err(invalid("manifest.json has no \"Layers\" list".into())),
    };
    let (config_path, config_digest, config_size, _) = resolve(config_name)?;
    let config = read_limited(&config_path, config_size, "the config").map_err(&invalid)?;
    let config_json: Value = serde_json::from_slice(&config)
        .map_err(|e| invalid(format!("the config {config_name} is not valid JSON ({e})")))?;
    let diff_ids: Vec<&str> = config_json
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .map(|ids| ids.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if diff_ids.len() != layer_names.len() {
        return Err(invalid(format!(
            "manifest.json lists {} layers but the config has {} diff_ids",
            layer_names.len(),
            diff_ids.len()
        )));
    }
    let mut layers = Vec::new();
    for (name, diff_id) in layer_names.iter().zip(&diff_ids) {
        let (path, digest, size, compression) = resolve(name)?;
        if compression == Compression::None && digest != *diff_id {
            return Err(invalid(format!(
                "layer {name} is an uncompressed tar hashing to {digest}, but the config's diff_id is {diff_id}"
            )));
        }
        layers.push((BlobFile { digest, size, path }, compression));
    }
    let oci = layers.iter().any(|(_, c)| *c == Compression::Zstd);
    let layer_type = |c: Compression| -> &'static str {
        match (oci, c) {
            (false, Compression::None) => DOCKER_LAYER_TAR,
            (false, _) => media_types::DOCKER_LAYER_GZIP,
            (true, Compression::None) => media_types::OCI_LAYER_TAR,
            (true, Compression::Gzip) => media_types::OCI_LAYER_GZIP,
            (true, Compression::Zstd) => media_types::OCI_LAYER_ZSTD,
        }
    };
    let (manifest_type, config_type) = if oci {
        (media_types::OCI_MANIFEST, media_types::OCI_CONFIG)
    } else {
        (media_types::DOCKER_MANIFEST, media_types::DOCKER_CONFIG)
    };
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": { "mediaType": config_type, "digest": config_digest, "size": config_size },
        "layers": layers.iter().map(|(b, c)| serde_json::json!({
            "mediaType": layer_type(*c), "digest": b.digest, "size": b.size,
        })).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec(&manifest)
        .map_err(|e| invalid(format!("serialising the manifest: {e}")))?;
    let mut blobs = vec![BlobFile {
        digest: config_digest,
        size: config_size,
        path: config_path,
    }];
    blobs.extend(layers.into_iter().map(|(b, _)| b));
    Ok(PreparedImage {
        blobs: dedup(blobs),
        children: Vec::new(),
        top: ManifestBlob {
            digest: ocibuild_image::digest::sha256_digest(&bytes),
            media_type: manifest_type.to_string(),
            bytes,
        },
        _work: Some(work),
    })
}

fn dedup(blobs: Vec<BlobFile>) -> Vec<BlobFile> {
    let mut seen = HashSet::new();
    blobs
        .into_iter()
        .filter(|b| seen.insert(b.digest.clone()))
        .collect()
}

/// Reads a small file of `size` bytes, refusing huge ones.
fn read_limited(path: &Path, size: u64, what: &str) -> std::result::Result<Vec<u8>, String> {
    if size > MAX_METADATA {
        return Err(format!(
            "{what} has {size} bytes, more than the {MAX_METADATA} a manifest or config may have"
        ));
    }
    fs::read(path).map_err(|e| format!("reading {what}: {e}"))
}

/// The path of blob `digest` in `dir`, for `sha256:<64 lowercase hex>` digests only.
fn layout_blob(dir: &Path, digest: &str) -> Result<PathBuf> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(dir.join("blobs").join("sha256").join(hex))
        }
        _ => Err(PushImageError::InvalidLayout {
            dir: dir.to_path_buf(),
            reason: format!("unsupported blob digest {digest:?} (expected sha256:<64 hex>)"),
        }),
    }
}

/// A descriptor's media type, digest and size.
fn descriptor_fields(dir: &Path, d: &Value, whose: &str) -> Result<(String, String, u64)> {
    let bad = |what: &str| PushImageError::InvalidLayout {
        dir: dir.to_path_buf(),
        reason: format!("a descriptor in {whose} has no valid {what}"),
    };
    let media_type = d
        .get("mediaType")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let digest = d
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("digest"))?
        .to_string();
    let size = d
        .get("size")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("size"))?;
    Ok((media_type, digest, size))
}

fn prepare_layout(dir: &Path, name: Option<&str>) -> Result<PreparedImage> {
    let invalid = |reason: String| PushImageError::InvalidLayout {
        dir: dir.to_path_buf(),
        reason,
    };
    let index_path = dir.join("index.json");
    let index = match fs::read(&index_path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(invalid(
                "it has no index.json (a docker-archive must be a file; a layout is what --oci-layout-path or skopeo copy oci:DIR write)".into(),
            ))
        }
        Err(e) => return Err(io_err(&index_path)(e)),
    };
    let index: Value = serde_json::from_slice(&index)
        .map_err(|e| invalid(format!("index.json is not valid JSON ({e})")))?;
    let entries = index
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("index.json has no \"manifests\" list".into()))?;
    let name_of = |e: &Value| layout::ref_name_of(e).map(str::to_string);
    let names = || {
        let list: Vec<String> = entries
            .iter()
            .map(|e| name_of(e).unwrap_or_else(|| "(unnamed)".into()))
            .collect();
        if list.is_empty() {
            "it holds no image".to_string()
        } else {
            format!("it holds: {}", list.join(", "))
        }
    };
    let chosen: Vec<&Value> = match name {
        Some(n) => entries
            .iter()
            .filter(|e| name_of(e).as_deref() == Some(n))
            .collect(),
        None => entries.iter().collect(),
    };
    let entry = match (chosen.as_slice(), name) {
        ([one], _) => *one,
        ([], Some(n)) => {
            return Err(PushImageError::NoSuchImage {
                dir: dir.to_path_buf(),
                reason: format!("no image named {n:?} ({})", names()),
            })
        }
        ([], None) => {
            return Err(PushImageError::NoSuchImage {
                dir: dir.to_path_buf(),
                reason: "the layout holds no image".into(),
            })
        }
        (_, Some(n)) => {
            return Err(PushImageError::NoSuchImage {
                dir: dir.to_path_buf(),
                reason: format!("several images are named {n:?}"),
            })
        }
        (many, None) => {
            return Err(PushImageError::NoSuchImage {
                dir: dir.to_path_buf(),
                reason: format!(
                    "the layout holds {} images; pick one with {}:NAME ({})",
                    many.len(),
                    dir.display(),
                    names()
                ),
            })
        }
    };
    let mut walk = LayoutWalk {
        dir,
        blobs: Vec::new(),
        children: Vec::new(),
    };
    let top = walk.manifest(entry, "index.json", 0)?;
    Ok(PreparedImage {
        blobs: dedup(walk.blobs),
        children: walk.children,
        top,
        _work: None,
    })
}

/// Collects the blobs and manifests an OCI layout entry needs.
struct LayoutWalk<'a> {
    dir: &'a Path,
    blobs: Vec<BlobFile>,
    children: Vec<ManifestBlob>,
}

impl LayoutWalk<'_> {
    /// Reads the manifest or index `descriptor` points at (checked against its digest),
    /// collecting what it refers to.
    fn manifest(&mut self, descriptor: &Value, whose: &str, depth: usize) -> Result<ManifestBlob> {
        let dir = self.dir;
        let invalid = |reason: String| PushImageError::InvalidLayout {
            dir: dir.to_path_buf(),
            reason,
        };
        let (media_type, digest, size) = descriptor_fields(dir, descriptor, whose)?;
        let path = layout_blob(dir, &digest)?;
        let bytes = match fs::metadata(&path) {
            Ok(m) if m.len() == size => {
                read_limited(&path, size, &format!("manifest {digest}")).map_err(invalid)?
            }
            Ok(m) => {
                return Err(invalid(format!(
                    "manifest {digest} has {} bytes, but {whose} says {size}",
                    m.len()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(invalid(format!("the blob of manifest {digest} is missing")))
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let actual = ocibuild_image::digest::sha256_digest(&bytes);
        if actual != digest {
            return Err(invalid(format!(
                "manifest {digest} is corrupt: its content hashes to {actual}"
            )));
        }
        let json: Value = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(format!("manifest {digest} is not valid JSON ({e})")))?;
        let media_type = if media_type.is_empty() {
            json.get("mediaType")
                .and_then(Value::as_str)
                .unwrap_or(media_types::OCI_MANIFEST)
                .to_string()
        } else {
            media_type
        };
        let here = format!("manifest {digest}");
        if let Some(Value::Array(manifests)) = json.get("manifests") {
            if depth >= MAX_INDEX_DEPTH {
                return Err(invalid(format!(
                    "image indexes nest deeper than {MAX_INDEX_DEPTH} levels"
                )));
            }
            for child in manifests {
                let child = self.manifest(child, &here, depth + 1)?;
                if !self.children.iter().any(|c| c.digest == child.digest) {
                    self.children.push(child);
                }
            }
        } else {
            let config = json.get("config").ok_or_else(|| {
                invalid(format!("{here} has neither \"config\" nor \"manifests\""))
            })?;
            let mut descriptors = vec![config];
            if let Some(Value::Array(layers)) = json.get("layers") {
                descriptors.extend(layers);
            }
            for d in descriptors {
                let (_, digest, size) = descriptor_fields(dir, d, &here)?;
                let path = layout_blob(dir, &digest)?;
                match fs::metadata(&path) {
                    Ok(m) if m.is_file() && m.len() == size => {}
                    Ok(m) => {
                        return Err(invalid(format!(
                            "blob {digest} has {} bytes, but {here} says {size}",
                            m.len()
                        )))
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(invalid(format!(
                            "blob {digest}, which {here} needs, is missing"
                        )))
                    }
                    Err(e) => return Err(io_err(&path)(e)),
                }
                self.blobs.push(BlobFile { digest, size, path });
            }
        }
        Ok(ManifestBlob {
            digest,
            media_type,
            bytes,
        })
    }
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
            .blob_exists(dest, &blob.digest)
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
                &child.media_type,
                &child.bytes,
            )
            .await
            .map_err(registry(format!("{context}: manifest {}", child.digest)))?;
    }
    client
        .push_manifest(dest, &image.top.media_type, &image.top.bytes)
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
        let m: Value = serde_json::from_slice(&image.top.bytes).unwrap();
        assert_eq!(m["mediaType"], media_types::DOCKER_MANIFEST);
        assert_eq!(m["layers"][0]["mediaType"], DOCKER_LAYER_TAR);
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
