//! Image manifests, image indexes (Docker manifest lists), descriptors and media types.
//!
//! The types are oci-spec's ([`ImageManifest`], [`ImageIndex`], [`Descriptor`],
//! [`MediaType`], [`Digest`], [`Platform`]), so that embedders exchange values with
//! `oci-client` and the rest of the ecosystem. Docker schema 2 manifests and manifest lists
//! use the same types, their media types being [`MediaType::Other`] (see [`media_types`]).
//! What ocibuild adds:
//!
//! - [`parse_manifest`] / [`parse_index`]: parsing with an error that names what is wrong
//!   (a bad digest is named with its place), and an index entry's `os.version` and
//!   `os.features` kept (oci-spec 0.10 spells them `os_version`, `os_features`);
//! - [`manifest_json`] / [`index_json`]: byte-stable serialisation. oci-spec keeps
//!   annotations in `HashMap`s (in a random order) and orders a descriptor's fields
//!   differently; these write fields in the order ocibuild always wrote them (a
//!   descriptor's `mediaType`, `digest`, `size`, `platform`, `annotations`, `urls`) with
//!   annotations sorted by key, so the same manifest always has the same digest.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;

use crate::digest;

pub use crate::platform::{Arch, Os, Platform};
pub use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageManifest, MediaType};

/// The media types ocibuild reads and writes, as they appear on the wire.
pub mod media_types {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI gzip-compressed layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI zstd-compressed layer.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// OCI uncompressed layer.
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// Docker image manifest, schema 2.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker gzip-compressed layer.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker uncompressed layer.
    pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
    /// Docker schema 1 manifest (unsupported; detected to give a clear error).
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    /// Signed docker schema 1 manifest (unsupported; detected to give a clear error).
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";

    /// True for media types of single-image manifests (OCI or Docker schema 2).
    pub fn is_image_manifest(mt: impl AsRef<str>) -> bool {
        matches!(mt.as_ref(), OCI_MANIFEST | DOCKER_MANIFEST)
    }

    /// True for media types of indexes / manifest lists (OCI or Docker).
    pub fn is_index(mt: impl AsRef<str>) -> bool {
        matches!(mt.as_ref(), OCI_INDEX | DOCKER_MANIFEST_LIST)
    }

    /// True for the media types of Docker schema 1 manifests.
    pub fn is_schema1(mt: impl AsRef<str>) -> bool {
        matches!(mt.as_ref(), DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED)
    }
}

/// A manifest or index that could not be parsed, or a descriptor that could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {what}: {reason}")]
pub struct ManifestError {
    /// `image manifest`, `image index` or `descriptor`.
    pub what: &'static str,
    /// What is wrong.
    pub reason: String,
}

/// A serialised manifest or index: its exact bytes, their digest and its media type, as a
/// registry receives it and an OCI layout stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestBytes {
    /// The media type (the `Content-Type` of an upload).
    pub media_type: MediaType,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
    /// The exact bytes.
    pub bytes: Vec<u8>,
}

impl ManifestBytes {
    /// `bytes` of `media_type`, with their digest.
    pub fn new(media_type: MediaType, bytes: Vec<u8>) -> ManifestBytes {
        ManifestBytes {
            media_type,
            digest: digest::sha256_digest(&bytes),
            bytes,
        }
    }

    /// `manifest` serialised with [`manifest_json`]; its media type is the one it names
    /// (the OCI manifest's when it names none).
    pub fn of_manifest(manifest: &ImageManifest) -> ManifestBytes {
        let media_type = manifest.media_type().clone();
        let media_type = media_type.unwrap_or(MediaType::ImageManifest);
        ManifestBytes::new(media_type, manifest_json(manifest))
    }

    /// The descriptor of these bytes.
    pub fn descriptor(&self) -> Descriptor {
        let digest = digest::sha256(&self.bytes);
        Descriptor::new(self.media_type.clone(), self.bytes.len() as u64, digest)
    }
}

/// A descriptor of `size` bytes of `media_type` with digest `digest`, which must be a valid
/// digest.
pub fn descriptor(media_type: &str, digest: &str, size: u64) -> Result<Descriptor, ManifestError> {
    let digest = digest::parse(digest).map_err(|e| ManifestError {
        what: "descriptor",
        reason: e.to_string(),
    })?;
    Ok(Descriptor::new(MediaType::from(media_type), size, digest))
}

/// A schema 2 image manifest of `media_type` (OCI or Docker), with `annotations` unless
/// there are none.
pub fn image_manifest(
    media_type: &str,
    config: Descriptor,
    layers: Vec<Descriptor>,
    annotations: &BTreeMap<String, String>,
) -> ImageManifest {
    let mut manifest = oci_spec::image::ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::from(media_type))
        .config(config)
        .layers(layers)
        .build()
        .expect("every required field of the manifest is set");
    if !annotations.is_empty() {
        manifest.set_annotations(Some(annotations.clone().into_iter().collect()));
    }
    manifest
}

/// Parses an image manifest (OCI or Docker schema 2).
pub fn parse_manifest(bytes: &[u8]) -> Result<ImageManifest, ManifestError> {
    serde_json::from_slice(bytes).map_err(|e| ManifestError {
        what: "image manifest",
        reason: explain(bytes, e),
    })
}

/// Parses an image index or Docker manifest list, keeping its entries' `os.version` and
/// `os.features`.
pub fn parse_index(bytes: &[u8]) -> Result<ImageIndex, ManifestError> {
    let invalid = |reason: String| ManifestError {
        what: "image index",
        reason,
    };
    let mut index: ImageIndex =
        serde_json::from_slice(bytes).map_err(|e| invalid(explain(bytes, e)))?;
    let value: Value = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    let entries = value.get("manifests").and_then(Value::as_array);
    let mut manifests = index.manifests().clone();
    for (entry, json) in manifests.iter_mut().zip(entries.into_iter().flatten()) {
        let (Some(mut platform), Some(json)) = (entry.platform().clone(), json.get("platform"))
        else {
            continue;
        };
        let text = |key: &str| json.get(key).and_then(Value::as_str).map(str::to_string);
        let list = |key: &str| serde_json::from_value(json.get(key)?.clone()).ok();
        platform.set_os_version(platform.os_version().clone().or_else(|| text("os.version")));
        platform.set_os_features(
            platform
                .os_features()
                .clone()
                .or_else(|| list("os.features")),
        );
        entry.set_platform(Some(platform));
    }
    index.set_manifests(manifests);
    Ok(index)
}

/// The reason a manifest or index did not parse: the first descriptor with a bad digest,
/// named by its place, else serde's message.
fn explain(bytes: &[u8], error: serde_json::Error) -> String {
    let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
        return error.to_string();
    };
    let single = ["config", "subject"]
        .into_iter()
        .filter_map(|key| Some((key.to_string(), value.get(key)?)));
    let lists = ["layers", "manifests"].into_iter().flat_map(|key| {
        let entries = value
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        entries
            .enumerate()
            .map(move |(i, entry)| (format!("{key}[{i}]"), entry))
    });
    for (place, entry) in single.chain(lists) {
        if let Some(text) = entry.get("digest").and_then(Value::as_str) {
            if let Err(e) = digest::parse(text) {
                return format!("the digest of {place}: {e}");
            }
        }
    }
    error.to_string()
}

/// The bytes of `manifest`, in ocibuild's stable field order with sorted annotations.
pub fn manifest_json(manifest: &ImageManifest) -> Vec<u8> {
    let wire = WireManifest {
        schema_version: manifest.schema_version(),
        media_type: manifest.media_type().as_ref(),
        artifact_type: manifest.artifact_type().as_ref(),
        config: WireDescriptor::of(manifest.config()),
        layers: manifest.layers().iter().map(WireDescriptor::of).collect(),
        subject: manifest.subject().as_ref().map(WireDescriptor::of),
        annotations: sorted(manifest.annotations()),
    };
    serde_json::to_vec(&wire).expect("a manifest of strings and numbers serialises")
}

/// The bytes of `index`, in ocibuild's stable field order with sorted annotations.
pub fn index_json(index: &ImageIndex) -> Vec<u8> {
    let wire = WireIndex {
        schema_version: index.schema_version(),
        media_type: index.media_type().as_ref(),
        artifact_type: index.artifact_type().as_ref(),
        manifests: index.manifests().iter().map(WireDescriptor::of).collect(),
        subject: index.subject().as_ref().map(WireDescriptor::of),
        annotations: sorted(index.annotations()),
    };
    serde_json::to_vec(&wire).expect("an index of strings and numbers serialises")
}

/// Annotations in key order.
type Sorted<'a> = BTreeMap<&'a str, &'a str>;

fn sorted(map: &Option<HashMap<String, String>>) -> Option<Sorted<'_>> {
    map.as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireManifest<'a> {
    schema_version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    media_type: Option<&'a MediaType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<&'a MediaType>,
    config: WireDescriptor<'a>,
    layers: Vec<WireDescriptor<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<WireDescriptor<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<Sorted<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireIndex<'a> {
    schema_version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    media_type: Option<&'a MediaType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<&'a MediaType>,
    manifests: Vec<WireDescriptor<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<WireDescriptor<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<Sorted<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireDescriptor<'a> {
    media_type: &'a MediaType,
    digest: &'a Digest,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<WirePlatform<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<Sorted<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    urls: Option<&'a Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<&'a MediaType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a String>,
}

impl<'a> WireDescriptor<'a> {
    fn of(d: &'a Descriptor) -> WireDescriptor<'a> {
        WireDescriptor {
            media_type: d.media_type(),
            digest: d.digest(),
            size: d.size(),
            platform: d.platform().as_ref().map(WirePlatform::of),
            annotations: sorted(d.annotations()),
            urls: d.urls().as_ref(),
            artifact_type: d.artifact_type().as_ref(),
            data: d.data().as_ref(),
        }
    }
}

#[derive(Serialize)]
struct WirePlatform<'a> {
    architecture: &'a Arch,
    os: &'a Os,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a String>,
    #[serde(rename = "os.version", skip_serializing_if = "Option::is_none")]
    os_version: Option<&'a String>,
    #[serde(rename = "os.features", skip_serializing_if = "Option::is_none")]
    os_features: Option<&'a Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    features: Option<&'a Vec<String>>,
}

impl<'a> WirePlatform<'a> {
    fn of(p: &'a Platform) -> WirePlatform<'a> {
        WirePlatform {
            architecture: p.architecture(),
            os: p.os(),
            variant: p.variant().as_ref(),
            os_version: p.os_version().as_ref(),
            os_features: p.os_features().as_ref(),
            features: p.features().as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    /// `template` with `{A}` and `{B}` replaced by digests.
    fn with_digests(template: &str) -> String {
        template.replace("{A}", A).replace("{B}", B)
    }

    #[test]
    fn an_oci_manifest_with_annotations_round_trips_byte_identically() {
        let text = with_digests(
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{A}","size":7},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{B}","size":9,"annotations":{"a":"1","b":"2","c":"3"},"urls":["https://example.com/b"]}],"annotations":{"x":"1","y":"2","z":"3"}}"#,
        );
        let m = parse_manifest(text.as_bytes()).unwrap();
        assert_eq!(m.layers()[0].size(), 9);
        assert_eq!(*m.config().media_type(), MediaType::ImageConfig);
        assert_eq!(String::from_utf8(manifest_json(&m)).unwrap(), text);
    }

    #[test]
    fn a_docker_manifest_keeps_its_media_types() {
        let text = with_digests(
            r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{A}","size":7},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{B}","size":9}]}"#,
        );
        let m = parse_manifest(text.as_bytes()).unwrap();
        assert!(media_types::is_image_manifest(
            m.media_type().as_ref().unwrap()
        ));
        assert_eq!(
            m.layers()[0].media_type().as_ref(),
            media_types::DOCKER_LAYER_GZIP
        );
        assert_eq!(String::from_utf8(manifest_json(&m)).unwrap(), text);
    }

    #[test]
    fn a_docker_manifest_list_round_trips_byte_identically() {
        let text = with_digests(
            r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"{A}","size":528,"platform":{"architecture":"amd64","os":"linux"}},{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"{B}","size":528,"platform":{"architecture":"arm","os":"linux","variant":"v7"}}]}"#,
        );
        let index = parse_index(text.as_bytes()).unwrap();
        assert!(media_types::is_index(index.media_type().as_ref().unwrap()));
        let arm = index.manifests()[1].platform().as_ref().unwrap();
        assert_eq!(crate::platform::name(arm), "linux/arm/v7");
        assert_eq!(String::from_utf8(index_json(&index)).unwrap(), text);
    }

    #[test]
    fn an_oci_index_round_trips_byte_identically_with_os_version_and_features() {
        let text = with_digests(
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{A}","size":1,"platform":{"architecture":"amd64","os":"windows","os.version":"10.0.17763.1","os.features":["win32k"]},"annotations":{"org.opencontainers.image.ref.name":"v1","z":"last"}}],"annotations":{"a":"1","b":"2"}}"#,
        );
        let index = parse_index(text.as_bytes()).unwrap();
        let p = index.manifests()[0].platform().as_ref().unwrap();
        assert_eq!(p.os_version().as_deref(), Some("10.0.17763.1"));
        assert_eq!(String::from_utf8(index_json(&index)).unwrap(), text);
    }

    #[test]
    fn made_manifests_leave_out_empty_annotations_and_sort_the_others() {
        let config = descriptor(media_types::OCI_CONFIG, A, 2).unwrap();
        let layer = descriptor(media_types::OCI_LAYER_TAR, B, 3).unwrap();
        let plain = image_manifest(
            media_types::OCI_MANIFEST,
            config.clone(),
            vec![layer.clone()],
            &BTreeMap::new(),
        );
        let bytes = String::from_utf8(manifest_json(&plain)).unwrap();
        assert_eq!(
            bytes,
            with_digests(
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{A}","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{B}","size":3}]}"#
            )
        );
        let annotations = BTreeMap::from([
            ("z".to_string(), "1".to_string()),
            ("a".to_string(), "2".to_string()),
        ]);
        let m = image_manifest(media_types::OCI_MANIFEST, config, vec![layer], &annotations);
        for _ in 0..8 {
            let text = String::from_utf8(manifest_json(&m)).unwrap();
            assert!(
                text.ends_with(r#""annotations":{"a":"2","z":"1"}}"#),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_digests_are_named_by_their_place() {
        let text = with_digests(
            r#"{"schemaVersion":2,"config":{"mediaType":"m","digest":"{A}","size":7},"layers":[{"mediaType":"m","digest":"{B}","size":1},{"mediaType":"m","digest":"sha256:ABC","size":1}]}"#,
        );
        let err = parse_manifest(text.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("not a valid image manifest"), "{err}");
        assert!(err.contains("layers[1]"), "{err}");
        assert!(
            err.contains("sha256 needs 64 lowercase hex characters"),
            "{err}"
        );
        let err = parse_index(br#"{"schemaVersion":2}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("manifests"), "{err}");
        assert!(descriptor("m", "sha256:1", 1).is_err());
        assert!(media_types::is_schema1(media_types::DOCKER_SCHEMA1_SIGNED));
    }

    #[test]
    fn manifest_bytes_carry_their_digest_and_descriptor() {
        let config = descriptor(media_types::DOCKER_CONFIG, A, 2).unwrap();
        let m = image_manifest(
            media_types::DOCKER_MANIFEST,
            config,
            vec![],
            &BTreeMap::new(),
        );
        let bytes = ManifestBytes::of_manifest(&m);
        assert_eq!(bytes.media_type.as_ref(), media_types::DOCKER_MANIFEST);
        assert_eq!(bytes.digest, digest::sha256_digest(&manifest_json(&m)));
        let d = bytes.descriptor();
        assert_eq!(
            (d.digest().to_string(), d.size()),
            (bytes.digest.clone(), bytes.bytes.len() as u64)
        );
    }
}
