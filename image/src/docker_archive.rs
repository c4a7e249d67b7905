//! `docker save`-style tarballs (`manifest.json`, the config and one file per layer), which
//! `skopeo copy docker-archive:PATH` and `docker load` read: [`write`] makes one, and
//! [`extract`] reads one (`executor push`).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::atomic::IoError;
use crate::blob::{read_small, BlobFile, ReadError};
use crate::compression::{self, Sniffed};
use crate::digest::HashingWriter;

/// What a docker archive holds: the config blob and the layer files, in order.
#[derive(Debug, Clone, Copy)]
pub struct Archive<'a> {
    /// `sha256:` of the config.
    pub config_digest: &'a str,
    /// The config JSON.
    pub config: &'a [u8],
    /// The names the image is loaded as (`RepoTags`).
    pub repo_tags: &'a [String],
    /// Each layer's digest and the file holding its blob.
    pub layers: &'a [(String, PathBuf)],
}

/// Writes `archive` to `path` through `path.tar.partial`, renamed into place once synced.
pub fn write(archive: &Archive<'_>, path: &Path) -> Result<(), IoError> {
    let tmp = path.with_extension("tar.partial");
    let out = File::create(&tmp).map_err(IoError::at("create", &tmp))?;
    write_entries(archive, BufWriter::new(out)).map_err(IoError::at("write", &tmp))?;
    fs::rename(&tmp, path).map_err(IoError::at("rename into place", path))
}

/// The tar entries: the config, the layers, then `manifest.json`.
fn write_entries(archive: &Archive<'_>, out: BufWriter<File>) -> std::io::Result<()> {
    let hex = |digest: &str| digest.trim_start_matches("sha256:").to_string();
    let config_name = format!("{}.json", hex(archive.config_digest));
    let layer_names: Vec<String> = archive
        .layers
        .iter()
        .map(|(digest, _)| format!("{}.tar.gz", hex(digest)))
        .collect();
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": archive.repo_tags,
        "Layers": layer_names,
    }]);
    let mut tar = tar::Builder::new(out);
    append_bytes(&mut tar, &config_name, archive.config)?;
    for (name, (_, file)) in layer_names.iter().zip(archive.layers) {
        let mut f = File::open(file)?;
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
}

fn append_bytes<W: Write>(
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

/// A layer of an extracted archive: its file and the compression its first bytes show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveLayer {
    /// The layer blob, exactly as the archive holds it.
    pub blob: BlobFile,
    /// Its compression (a plain tar, gzip or zstd).
    pub compression: Sniffed,
}

/// A docker archive of one image, extracted by [`extract`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// The config blob, byte for byte (so the image ID is kept).
    pub config: BlobFile,
    /// The names the archive gives the image (`RepoTags`).
    pub repo_tags: Vec<String>,
    /// The layers, bottom first.
    pub layers: Vec<ArchiveLayer>,
}

/// One entry of `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveEntry {
    config: Option<String>,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Option<Vec<String>>,
}

/// Extracts the docker-archive tarball `path` (optionally gzip- or zstd-compressed as a
/// whole) into the directory `into`, one file per member (links are followed, names
/// normalised, nothing is written outside `into`), and reads its one image: the
/// `manifest.json` entry's config and layers. The layer count must match the config's
/// `rootfs.diff_ids`, and an uncompressed layer must hash to its diff ID.
pub fn extract(path: &Path, into: &Path) -> Result<Extracted, ReadError> {
    let members = extract_members(open_tar(path)?, into)?;
    let manifest = members.resolve("manifest.json").map_err(|_| {
        ReadError::Invalid(
            "it has no manifest.json (is it a docker save / --tar-path tarball?)".into(),
        )
    })?;
    let entry = read_entry(&read_small(&manifest.path, manifest.size, "manifest.json")?)?;
    let config_name = entry
        .config
        .ok_or_else(|| invalid("manifest.json has no \"Config\" file name"))?;
    let layer_names = entry
        .layers
        .ok_or_else(|| invalid("manifest.json has no \"Layers\" list"))?;
    let config = members.resolve(&config_name)?;
    let diff_ids = read_diff_ids(&config, &config_name)?;
    if diff_ids.len() != layer_names.len() {
        return Err(invalid(&format!(
            "manifest.json lists {} layers but the config has {} diff_ids",
            layer_names.len(),
            diff_ids.len()
        )));
    }
    let layers = layer_names
        .iter()
        .zip(&diff_ids)
        .map(|(name, diff_id)| archive_layer(&members, name, diff_id))
        .collect::<Result<_, _>>()?;
    Ok(Extracted {
        config,
        repo_tags: entry.repo_tags.unwrap_or_default(),
        layers,
    })
}

fn invalid(reason: &str) -> ReadError {
    ReadError::Invalid(reason.to_string())
}

/// The tar stream of `path`, decompressed when the whole file is gzip or zstd.
fn open_tar(path: &Path) -> Result<Box<dyn Read>, ReadError> {
    let file = File::open(path).map_err(ReadError::io(path))?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let magic = reader.fill_buf().map_err(ReadError::io(path))?.to_vec();
    Ok(match compression::sniff(&magic) {
        Sniffed::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Sniffed::Zstd => Box::new(zstd::Decoder::with_buffer(reader).map_err(ReadError::io(path))?),
        _ => Box::new(reader),
    })
}

/// The one image entry of `manifest.json`.
fn read_entry(bytes: &[u8]) -> Result<ArchiveEntry, ReadError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| invalid(&format!("manifest.json is not valid JSON ({e})")))?;
    let image = match value.as_array().map(Vec::as_slice) {
        Some([image]) => image.clone(),
        Some([]) => return Err(invalid("manifest.json lists no image")),
        Some(many) => {
            return Err(invalid(&format!(
                "manifest.json lists {} images; an archive of one image is needed",
                many.len()
            )))
        }
        None => return Err(invalid("manifest.json is not a JSON array")),
    };
    serde_json::from_value(image)
        .map_err(|e| invalid(&format!("manifest.json does not describe an image ({e})")))
}

/// The `rootfs.diff_ids` of the config file `config` (named `name` in the archive).
fn read_diff_ids(config: &BlobFile, name: &str) -> Result<Vec<String>, ReadError> {
    let bytes = read_small(&config.path, config.size, "the config")?;
    let json: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| invalid(&format!("the config {name} is not valid JSON ({e})")))?;
    let ids = json
        .pointer("/rootfs/diff_ids")
        .and_then(serde_json::Value::as_array);
    Ok(ids
        .into_iter()
        .flatten()
        .filter_map(|id| id.as_str().map(str::to_string))
        .collect())
}

/// The layer file `name` of the archive, whose diff ID is `diff_id`: an uncompressed one
/// must hash to it.
fn archive_layer(members: &Members, name: &str, diff_id: &str) -> Result<ArchiveLayer, ReadError> {
    let blob = members.resolve(name)?;
    let compression = sniff_file(&blob.path)?;
    let compressed = matches!(compression, Sniffed::Gzip | Sniffed::Zstd);
    if !compressed && blob.digest != diff_id {
        return Err(invalid(&format!(
            "layer {name} is an uncompressed tar hashing to {}, but the config's diff_id is {diff_id}",
            blob.digest
        )));
    }
    Ok(ArchiveLayer { blob, compression })
}

/// The compression the first bytes of the file at `path` show.
fn sniff_file(path: &Path) -> Result<Sniffed, ReadError> {
    let mut head = Vec::with_capacity(compression::MAGIC_LEN);
    File::open(path)
        .and_then(|f| f.take(compression::MAGIC_LEN as u64).read_to_end(&mut head))
        .map_err(ReadError::io(path))?;
    Ok(compression::sniff(&head))
}

/// A tarball member once extracted.
enum Member {
    File(BlobFile),
    /// A symbolic or hard link to another member (archive-relative, normalised).
    Link(String),
}

/// The members of an extracted tarball, by normalised name.
struct Members(BTreeMap<String, Member>);

impl Members {
    /// The file `name` stands for, following links.
    fn resolve(&self, name: &str) -> Result<BlobFile, ReadError> {
        let mut current = normalise(Path::new(name))
            .ok_or_else(|| invalid(&format!("{name:?} points outside the archive")))?;
        for _ in 0..16 {
            match self.0.get(&current) {
                Some(Member::File(blob)) => return Ok(blob.clone()),
                Some(Member::Link(target)) => current = target.clone(),
                None => {
                    return Err(invalid(&format!(
                        "manifest.json names {name:?}, which the archive does not contain"
                    )))
                }
            }
        }
        Err(invalid(&format!("{name:?} is a link loop")))
    }
}

/// Streams every regular member of `tar` into its own file in `into` (hashed on the way)
/// and records links.
fn extract_members(tar: Box<dyn Read>, into: &Path) -> Result<Members, ReadError> {
    let unreadable = |e: io::Error| invalid(&format!("reading it as tar: {e}"));
    let mut members = BTreeMap::new();
    let mut archive = tar::Archive::new(tar);
    for (n, entry) in archive.entries().map_err(unreadable)?.enumerate() {
        let mut entry = entry.map_err(unreadable)?;
        let raw = entry
            .path()
            .map_err(|e| invalid(&format!("a member has an unreadable name: {e}")))?
            .into_owned();
        let Some(name) = normalise(&raw) else {
            continue;
        };
        let kind = entry.header().entry_type();
        if kind.is_file() {
            let file = into.join(format!("member-{n}"));
            let blob = extract_file(&mut entry, &file, &name)?;
            members.insert(name, Member::File(blob));
        } else if kind.is_symlink() || kind.is_hard_link() {
            let target = entry.link_name().ok().flatten().map(|t| t.into_owned());
            let joined = match target {
                Some(t) if kind.is_symlink() && !t.is_absolute() => {
                    raw.parent().unwrap_or(Path::new("")).join(t)
                }
                Some(t) => t,
                None => continue,
            };
            if let Some(target) = normalise(&joined) {
                members.insert(name, Member::Link(target));
            }
        }
    }
    Ok(Members(members))
}

/// Copies `entry` (member `name`) into `file`, hashing it.
fn extract_file(entry: &mut impl Read, file: &Path, name: &str) -> Result<BlobFile, ReadError> {
    let out = File::create(file).map_err(ReadError::io(file))?;
    let mut hashing = HashingWriter::new(BufWriter::new(out));
    io::copy(entry, &mut hashing).map_err(|e| invalid(&format!("extracting {name}: {e}")))?;
    let (out, digest, size) = hashing.finish();
    out.into_inner()
        .map_err(|e| ReadError::io(file)(e.into_error()))?;
    Ok(BlobFile {
        digest,
        size,
        path: file.to_path_buf(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_holds_the_config_the_layers_and_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("layer");
        fs::write(&layer, b"layer bytes").unwrap();
        let layers = [("sha256:ab".to_string(), layer)];
        let tags = ["app:1".to_string()];
        let archive = Archive {
            config_digest: "sha256:cd",
            config: b"{}",
            repo_tags: &tags,
            layers: &layers,
        };
        let path = dir.path().join("out.tar");
        write(&archive, &path).unwrap();
        let mut names = Vec::new();
        let mut reader = tar::Archive::new(File::open(&path).unwrap());
        for entry in reader.entries().unwrap() {
            names.push(entry.unwrap().path().unwrap().display().to_string());
        }
        assert_eq!(names, ["cd.json", "ab.tar.gz", "manifest.json"]);
        assert!(!path.with_extension("tar.partial").exists());
    }

    /// A tarball at `path` with the members `files` (name, bytes) and a symlink `link` →
    /// `target`.
    fn tarball(path: &Path, files: &[(&str, &[u8])], link: (&str, &str)) {
        let mut tar = tar::Builder::new(File::create(path).unwrap());
        for (name, bytes) in files {
            append_bytes(&mut tar, name, bytes).unwrap();
        }
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_cksum();
        tar.append_link(&mut header, link.0, link.1).unwrap();
        tar.finish().unwrap();
    }

    #[test]
    fn written_archives_extract_to_the_same_config_layers_and_tags() {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("layer");
        fs::write(&layer, b"plain layer").unwrap();
        let layer_digest = crate::digest::sha256_digest(b"plain layer");
        let config = format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}}}}"#);
        let config_digest = crate::digest::sha256_digest(config.as_bytes());
        let tags = ["app:1".to_string()];
        let layers = [(layer_digest.clone(), layer)];
        let archive = Archive {
            config_digest: &config_digest,
            config: config.as_bytes(),
            repo_tags: &tags,
            layers: &layers,
        };
        let path = dir.path().join("out.tar");
        write(&archive, &path).unwrap();
        let into = dir.path().join("x");
        fs::create_dir(&into).unwrap();
        let read = extract(&path, &into).unwrap();
        assert_eq!(read.config.digest, config_digest);
        assert_eq!(read.repo_tags, tags);
        assert_eq!(read.layers.len(), 1);
        assert_eq!(read.layers[0].blob.digest, layer_digest);
        assert_eq!(read.layers[0].compression, Sniffed::Plain);
        assert!(read.layers[0].blob.path.starts_with(&into));
    }

    #[test]
    fn links_are_followed_inside_the_archive_and_bad_archives_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let into = dir.path().join("x");
        fs::create_dir(&into).unwrap();
        let layer = b"layer";
        let diff_id = crate::digest::sha256_digest(layer);
        let config = format!(r#"{{"rootfs":{{"diff_ids":["{diff_id}"]}}}}"#);
        let path = dir.path().join("a.tar");
        let manifest = br#"[{"Config":"./c.json","Layers":["b/link.tar"]}]"#;
        let files: [(&str, &[u8]); 3] = [
            ("c.json", config.as_bytes()),
            ("a/layer.tar", layer),
            ("manifest.json", manifest),
        ];
        tarball(&path, &files, ("b/link.tar", "../a/layer.tar"));
        let read = extract(&path, &into).unwrap();
        assert_eq!(read.layers[0].blob.digest, diff_id);
        let wrong: [(&str, &[u8]); 3] = [
            ("c.json", br#"{"rootfs":{"diff_ids":["sha256:00"]}}"#),
            ("a/layer.tar", layer),
            ("manifest.json", manifest),
        ];
        tarball(&path, &wrong, ("b/link.tar", "../a/layer.tar"));
        let err = extract(&path, &into).unwrap_err().to_string();
        assert!(
            err.contains("but the config's diff_id is sha256:00"),
            "{err}"
        );
        let escaping: [(&str, &[u8]); 3] = [
            ("c.json", config.as_bytes()),
            ("a/layer.tar", layer),
            ("manifest.json", manifest),
        ];
        tarball(&path, &escaping, ("b/link.tar", "../../../etc/passwd"));
        let err = extract(&path, &into).unwrap_err().to_string();
        assert!(err.contains("does not contain"), "{err}");
        fs::write(&path, b"not a tarball").unwrap();
        let err = extract(&path, &into).unwrap_err().to_string();
        assert!(
            err.contains("manifest.json") || err.contains("tar"),
            "{err}"
        );
    }
}
