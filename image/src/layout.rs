//! The OCI image layout (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`): the pieces
//! shared by `--oci-layout-path` output and the layout cache (`--cache-repo oci:DIR`), and
//! [`read_image`], which reads an image out of a layout (`executor push DIR[:NAME]`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::blob::{dedup, read_small, BlobFile, ReadError};
use crate::manifest::{self, media_types, Descriptor, ImageIndex, ManifestBytes, MediaType};

/// How deep image indexes may nest in a layout that is read.
const MAX_INDEX_DEPTH: usize = 4;

/// The annotation naming an image inside an OCI image layout (`oci:DIR:NAME` in skopeo,
/// `--image DIR:NAME` in umoci).
pub const REF_NAME_ANNOTATION: &str = oci_spec::image::ANNOTATION_REF_NAME;

/// The content of an OCI layout's `oci-layout` file.
pub const OCI_LAYOUT_FILE: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// Whether `bytes`, the content of an `oci-layout` file, is a layout marker (a JSON object
/// with a string `imageLayoutVersion`).
pub fn is_layout_marker(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .is_some_and(|v| matches!(v.get("imageLayoutVersion"), Some(Value::String(_))))
}

/// `dir/blobs/<alg>/<encoded>` for `digest`, or `None` when `digest` is not
/// `algorithm:encoded` with the characters the OCI spec allows (no path separators).
pub fn blob_path(dir: &Path, digest: &str) -> Option<PathBuf> {
    let (alg, encoded) = digest.split_once(':')?;
    let alg_ok = alg
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && alg
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
    let encoded_ok = !encoded.is_empty()
        && encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b));
    (alg_ok && encoded_ok).then(|| dir.join("blobs").join(alg).join(encoded))
}

/// Whether `name` is a ref name the OCI image-layout spec allows (components of letters
/// and digits separated by `-._:@+/`).
pub fn is_valid_ref_name(name: &str) -> bool {
    let alnum = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    alnum(name.bytes().next())
        && alnum(name.bytes().last())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:@+/".contains(&b))
}

/// The `org.opencontainers.image.ref.name` of an index entry.
pub fn ref_name_of(entry: &Descriptor) -> Option<&str> {
    entry
        .annotations()
        .as_ref()?
        .get(REF_NAME_ANNOTATION)
        .map(String::as_str)
}

/// An index with no entries, as a new layout's `index.json`.
pub fn empty_index() -> ImageIndex {
    let mut index = ImageIndex::default();
    index.set_media_type(Some(MediaType::ImageIndex));
    index
}

/// Parses `index.json`: an image index, whose `manifests` may also be missing or `null`
/// (no entries) and whose `schemaVersion` may be missing. The error says what is wrong.
pub fn parse_index(bytes: &[u8]) -> Result<ImageIndex, String> {
    let mut index = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(index)) => index,
        Ok(_) => return Err("index.json is not a JSON object".into()),
        Err(e) => return Err(format!("index.json is not valid JSON ({e})")),
    };
    match index.get("manifests") {
        None | Some(Value::Null) => {
            index.insert("manifests".into(), Value::Array(Vec::new()));
        }
        Some(Value::Array(_)) => {}
        Some(_) => return Err("\"manifests\" in index.json is not an array".into()),
    }
    index.entry("schemaVersion").or_insert(2.into());
    let bytes = serde_json::to_vec(&index).map_err(|e| e.to_string())?;
    manifest::parse_index(&bytes).map_err(|e| format!("index.json is {e}"))
}

/// `index` with `descriptor` added: entries it replaces (same ref name, or unnamed with the
/// same digest) are dropped, the rest is kept, `schemaVersion` is set to 2 and `mediaType`
/// to the OCI index's when missing.
pub fn add_to_index(
    mut index: ImageIndex,
    descriptor: Descriptor,
    ref_name: Option<&str>,
) -> ImageIndex {
    let mut manifests = index.manifests().clone();
    manifests.retain(|entry| match ref_name {
        Some(name) => ref_name_of(entry) != Some(name),
        None => !(ref_name_of(entry).is_none() && entry.digest() == descriptor.digest()),
    });
    manifests.push(descriptor);
    index.set_manifests(manifests);
    index.set_schema_version(2);
    if index.media_type().is_none() {
        index.set_media_type(Some(MediaType::from(media_types::OCI_INDEX)));
    }
    index
}

/// Checks that `path` is a file of `size` bytes; `wrong_size` (given the actual size) and
/// `missing` say what is wrong otherwise.
fn expect_file(
    path: &Path,
    size: u64,
    wrong_size: impl FnOnce(u64) -> String,
    missing: impl FnOnce() -> String,
) -> Result<(), ReadError> {
    match fs::metadata(path) {
        Ok(m) if m.is_file() && m.len() == size => Ok(()),
        Ok(m) => Err(ReadError::Invalid(wrong_size(m.len()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ReadError::Invalid(missing())),
        Err(e) => Err(ReadError::io(path)(e)),
    }
}

/// An image read out of an OCI layout by [`read_image`]: its manifests, checked against
/// their digests, and the blobs they need, as files of the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutImage {
    /// Configs and layers, each digest once.
    pub blobs: Vec<BlobFile>,
    /// The manifests an index refers to (at any depth), each once.
    pub children: Vec<ManifestBytes>,
    /// The manifest (or index) of the entry read.
    pub top: ManifestBytes,
}

/// Reads the image of the layout `dir` named `name` in `index.json`, or its only image when
/// no name is given. An entry may be an image manifest or an image index (every manifest
/// it lists is read, nested up to four levels). Every manifest must hash to its digest and
/// every blob must be present with its size.
pub fn read_image(dir: &Path, name: Option<&str>) -> Result<LayoutImage, ReadError> {
    let path = dir.join("index.json");
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ReadError::NoIndex),
        Err(e) => return Err(ReadError::io(&path)(e)),
    };
    let index = parse_index(&bytes).map_err(ReadError::Invalid)?;
    let entry = select_entry(&index, dir, name)?;
    let mut walk = Walk {
        dir,
        blobs: Vec::new(),
        children: Vec::new(),
    };
    let top = walk.manifest(&entry, "index.json", 0)?;
    Ok(LayoutImage {
        blobs: dedup(walk.blobs),
        children: walk.children,
        top,
    })
}

/// The entry of `index` (of layout `dir`) named `name`, or its only entry (or only
/// manifest: several names of one image, as a build with several tags writes them).
fn select_entry(
    index: &ImageIndex,
    dir: &Path,
    name: Option<&str>,
) -> Result<Descriptor, ReadError> {
    let entries = index.manifests();
    let chosen: Vec<&Descriptor> = entries
        .iter()
        .filter(|e| name.is_none() || ref_name_of(e) == name)
        .collect();
    let names = || {
        let list: Vec<&str> = entries
            .iter()
            .map(|e| ref_name_of(e).unwrap_or("(unnamed)"))
            .collect();
        if list.is_empty() {
            "it holds no image".to_string()
        } else {
            format!("it holds: {}", list.join(", "))
        }
    };
    let reason = match (chosen.as_slice(), name) {
        ([one], _) => return Ok((*one).clone()),
        ([first, rest @ ..], None) if rest.iter().all(|e| e.digest() == first.digest()) => {
            return Ok((*first).clone())
        }
        ([], Some(n)) => format!("no image named {n:?} ({})", names()),
        ([], None) => "the layout holds no image".to_string(),
        (_, Some(n)) => format!("several images are named {n:?}"),
        (many, None) => format!(
            "the layout holds {} images; pick one with {}:NAME ({})",
            many.len(),
            dir.display(),
            names()
        ),
    };
    Err(ReadError::NoSuchImage(reason))
}

/// Collects the blobs and manifests an entry of a layout needs.
struct Walk<'a> {
    dir: &'a Path,
    blobs: Vec<BlobFile>,
    children: Vec<ManifestBytes>,
}

impl Walk<'_> {
    /// Reads the manifest or index `descriptor` (found in `whose`) points at, checked
    /// against its digest, collecting what it refers to.
    fn manifest(
        &mut self,
        descriptor: &Descriptor,
        whose: &str,
        depth: usize,
    ) -> Result<ManifestBytes, ReadError> {
        let digest = descriptor.digest().to_string();
        let bytes = self.manifest_bytes(&digest, descriptor.size(), whose)?;
        let here = format!("manifest {digest}");
        let invalid = |e: manifest::ManifestError| ReadError::Invalid(format!("{here} is {e}"));
        let json: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ReadError::Invalid(format!("{here} is not valid JSON ({e})")))?;
        if json.get("manifests").is_some_and(Value::is_array) {
            if depth >= MAX_INDEX_DEPTH {
                return Err(ReadError::Invalid(format!(
                    "image indexes nest deeper than {MAX_INDEX_DEPTH} levels"
                )));
            }
            for child in manifest::parse_index(&bytes).map_err(invalid)?.manifests() {
                let child = self.manifest(child, &here, depth + 1)?;
                if !self.children.iter().any(|c| c.digest == child.digest) {
                    self.children.push(child);
                }
            }
        } else {
            if json.get("config").is_none() {
                return Err(ReadError::Invalid(format!(
                    "{here} has neither \"config\" nor \"manifests\""
                )));
            }
            let image = manifest::parse_manifest(&bytes).map_err(invalid)?;
            for blob in std::iter::once(image.config()).chain(image.layers()) {
                self.blob(blob, &here)?;
            }
        }
        let media_type = match descriptor.media_type().as_ref() {
            "" => json
                .get("mediaType")
                .and_then(Value::as_str)
                .unwrap_or(media_types::OCI_MANIFEST),
            named => named,
        };
        Ok(ManifestBytes {
            media_type: MediaType::from(media_type),
            digest,
            bytes,
        })
    }

    /// The bytes of manifest `digest`, which `whose` says has `size` bytes.
    fn manifest_bytes(&self, digest: &str, size: u64, whose: &str) -> Result<Vec<u8>, ReadError> {
        let path = self.path(digest)?;
        expect_file(
            &path,
            size,
            |len| format!("manifest {digest} has {len} bytes, but {whose} says {size}"),
            || format!("the blob of manifest {digest} is missing"),
        )?;
        let bytes = read_small(&path, size, &format!("manifest {digest}"))?;
        let actual = crate::digest::sha256_digest(&bytes);
        if actual != digest {
            return Err(ReadError::Invalid(format!(
                "manifest {digest} is corrupt: its content hashes to {actual}"
            )));
        }
        Ok(bytes)
    }

    /// Records the blob `descriptor` (found in `here`) points at, which must be a file of
    /// its size.
    fn blob(&mut self, descriptor: &Descriptor, here: &str) -> Result<(), ReadError> {
        let (digest, size) = (descriptor.digest().to_string(), descriptor.size());
        let path = self.path(&digest)?;
        expect_file(
            &path,
            size,
            |len| format!("blob {digest} has {len} bytes, but {here} says {size}"),
            || format!("blob {digest}, which {here} needs, is missing"),
        )?;
        self.blobs.push(BlobFile { digest, size, path });
        Ok(())
    }

    fn path(&self, digest: &str) -> Result<PathBuf, ReadError> {
        blob_path(self.dir, digest)
            .ok_or_else(|| ReadError::Invalid(format!("unsupported blob digest {digest:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// An entry for the digest of `seed` named `name`.
    fn entry(seed: &str, name: Option<&str>) -> Descriptor {
        let digest = crate::digest::sha256_digest(seed.as_bytes());
        let mut d = manifest::descriptor(media_types::OCI_MANIFEST, &digest, 1).unwrap();
        if let Some(name) = name {
            let annotations = [(REF_NAME_ANNOTATION.to_string(), name.to_string())];
            d.set_annotations(Some(annotations.into_iter().collect()));
        }
        d
    }

    #[test]
    fn index_entries_with_the_same_ref_name_are_replaced_and_others_kept() {
        let mut old = ImageIndex::default();
        old.set_annotations(Some([("keep".to_string(), "me".to_string())].into()));
        old.set_manifests(vec![
            entry("1", Some("v1")),
            entry("2", Some("v2")),
            entry("3", None),
        ]);
        let index = add_to_index(old.clone(), entry("9", Some("v1")), Some("v1"));
        let names: Vec<Option<&str>> = index.manifests().iter().map(ref_name_of).collect();
        assert_eq!(names, [Some("v2"), None, Some("v1")]);
        assert_eq!(index.manifests()[2], entry("9", Some("v1")));
        assert_eq!(index.annotations().as_ref().unwrap()["keep"], "me");
        assert_eq!(index.media_type().as_ref(), Some(&MediaType::ImageIndex));
        let index = add_to_index(old, entry("3", None), None);
        assert_eq!(index.manifests().len(), 3);
    }

    #[test]
    fn an_unnamed_lookup_takes_the_one_image_behind_several_names() {
        let dir = Path::new("/l");
        let mut index = empty_index();
        index.set_manifests(vec![entry("1", Some("v1")), entry("1", Some("latest"))]);
        let chosen = select_entry(&index, dir, None).unwrap();
        assert_eq!(chosen, entry("1", Some("v1")));
        index.set_manifests(vec![entry("1", Some("v1")), entry("2", Some("v2"))]);
        let err = select_entry(&index, dir, None).unwrap_err().to_string();
        assert!(err.contains("holds 2 images"), "{err}");
    }

    #[test]
    fn blob_paths_refuse_digests_that_could_escape_the_layout() {
        let dir = Path::new("/l");
        let hex = D.trim_start_matches("sha256:");
        assert_eq!(
            blob_path(dir, D).unwrap(),
            dir.join("blobs/sha256").join(hex)
        );
        for bad in ["sha256:../../etc", "sha256", "../x:abc", "sha256:", ":abc"] {
            assert!(blob_path(dir, bad).is_none(), "{bad}");
        }
        assert!(is_valid_ref_name("1.0"));
        assert!(!is_valid_ref_name("a b"));
        assert!(!is_valid_ref_name(""));
    }

    #[test]
    fn markers_and_indexes_are_checked() {
        assert!(is_layout_marker(OCI_LAYOUT_FILE.as_bytes()));
        assert!(!is_layout_marker(b"{}"));
        assert!(parse_index(b"{\"manifests\":null}")
            .unwrap()
            .manifests()
            .is_empty());
        assert_eq!(parse_index(b"{}").unwrap().schema_version(), 2);
        assert!(parse_index(b"[]").is_err());
        assert!(parse_index(b"{\"manifests\":1}").is_err());
        assert!(parse_index(b"nope").is_err());
        let bad = br#"{"manifests":[{"mediaType":"m","digest":"sha256:1","size":1}]}"#;
        let err = parse_index(bad).unwrap_err();
        assert!(err.contains("manifests[0]"), "{err}");
        let empty = crate::manifest::index_json(&empty_index());
        assert_eq!(
            String::from_utf8(empty).unwrap(),
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#
        );
    }

    /// Writes `bytes` as a blob of the layout `dir`; returns its digest.
    fn put(dir: &Path, bytes: &[u8]) -> String {
        let digest = crate::digest::sha256_digest(bytes);
        let path = blob_path(dir, &digest).unwrap();
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
        digest
    }

    /// A layout with one image named `v1`, reached through an index; returns the digests
    /// of the index, the manifest, the config and the layer.
    fn layout_with_index(dir: &Path) -> [String; 4] {
        let config = put(dir, b"{}");
        let layer = put(dir, b"layer");
        let image = manifest::image_manifest(
            media_types::OCI_MANIFEST,
            manifest::descriptor(media_types::OCI_CONFIG, &config, 2).unwrap(),
            vec![manifest::descriptor(media_types::OCI_LAYER_TAR, &layer, 5).unwrap()],
            &Default::default(),
        );
        let image = ManifestBytes::of_manifest(&image);
        put(dir, &image.bytes);
        let mut index = empty_index();
        index.set_manifests(vec![image.descriptor()]);
        let index = ManifestBytes::new(MediaType::ImageIndex, manifest::index_json(&index));
        put(dir, &index.bytes);
        let top = add_to_index(empty_index(), entry_for(&index, "v1"), Some("v1"));
        fs::write(dir.join("index.json"), manifest::index_json(&top)).unwrap();
        [index.digest, image.digest, config, layer]
    }

    fn entry_for(bytes: &ManifestBytes, name: &str) -> Descriptor {
        let mut d = bytes.descriptor();
        let annotations = [(REF_NAME_ANNOTATION.to_string(), name.to_string())];
        d.set_annotations(Some(annotations.into()));
        d
    }

    #[test]
    fn an_image_is_read_through_its_index_with_every_blob_it_needs() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let [index, image, config, layer] = layout_with_index(dir);
        for name in [Some("v1"), None] {
            let read = read_image(dir, name).unwrap();
            assert_eq!(read.top.digest, index);
            assert_eq!(read.top.media_type, MediaType::ImageIndex);
            let children: Vec<&str> = read.children.iter().map(|c| c.digest.as_str()).collect();
            assert_eq!(children, [image.as_str()]);
            let blobs: Vec<&str> = read.blobs.iter().map(|b| b.digest.as_str()).collect();
            assert_eq!(blobs, [config.as_str(), layer.as_str()]);
            assert_eq!(fs::read(&read.blobs[1].path).unwrap(), b"layer");
        }
        let err = read_image(dir, Some("v2")).unwrap_err().to_string();
        assert!(
            err.contains("no image named \"v2\" (it holds: v1)"),
            "{err}"
        );
    }

    #[test]
    fn corrupt_manifests_missing_blobs_and_missing_indexes_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert!(matches!(read_image(dir, None), Err(ReadError::NoIndex)));
        let [_, image, _, layer] = layout_with_index(dir);
        fs::remove_file(blob_path(dir, &layer).unwrap()).unwrap();
        let err = read_image(dir, None).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "blob {layer}, which manifest {image} needs, is missing"
            )),
            "{err}"
        );
        let manifest = blob_path(dir, &image).unwrap();
        let mut bytes = fs::read(&manifest).unwrap();
        bytes[0] = b' ';
        fs::write(&manifest, bytes).unwrap();
        let err = read_image(dir, None).unwrap_err().to_string();
        assert!(
            err.contains(&format!("manifest {image} is corrupt")),
            "{err}"
        );
    }
}
