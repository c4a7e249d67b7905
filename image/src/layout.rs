//! The OCI image layout (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`): the pieces
//! shared by `--oci-layout-path` output and the layout cache (`--cache-repo oci:DIR`).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The annotation naming an image inside an OCI image layout (`oci:DIR:NAME` in skopeo,
/// `--image DIR:NAME` in umoci).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// The content of an OCI layout's `oci-layout` file.
pub const OCI_LAYOUT_FILE: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// The media type of an OCI image index (`index.json`).
pub const OCI_INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

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
pub fn ref_name_of(entry: &Value) -> Option<&str> {
    entry
        .get("annotations")
        .and_then(|a| a.get(REF_NAME_ANNOTATION))
        .and_then(Value::as_str)
}

/// Parses `index.json`: a JSON object whose `manifests`, when present, is an array or
/// `null`. The error says what is wrong.
pub fn parse_index(bytes: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(index)) => match index.get("manifests") {
            None | Some(Value::Null | Value::Array(_)) => Ok(index),
            Some(_) => Err("\"manifests\" in index.json is not an array".into()),
        },
        Ok(_) => Err("index.json is not a JSON object".into()),
        Err(e) => Err(format!("index.json is not valid JSON ({e})")),
    }
}

/// `index` (an existing `index.json`, or `{}`) with `descriptor` added: entries it replaces
/// (same ref name, or unnamed with the same digest) are dropped, the rest is kept, and
/// `schemaVersion`, `mediaType` and `manifests` are set.
pub fn add_to_index(
    index: Value,
    descriptor: Value,
    ref_name: Option<&str>,
) -> Result<Value, String> {
    let Value::Object(mut index) = index else {
        return Err("index.json is not a JSON object".into());
    };
    let digest = descriptor.get("digest").cloned();
    let mut manifests = match index.remove("manifests") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err("\"manifests\" in index.json is not an array".into()),
    };
    manifests.retain(|entry| match ref_name {
        Some(name) => ref_name_of(entry) != Some(name),
        None => !(ref_name_of(entry).is_none() && entry.get("digest") == digest.as_ref()),
    });
    manifests.push(descriptor);
    index.insert("schemaVersion".into(), 2.into());
    index
        .entry("mediaType")
        .or_insert_with(|| OCI_INDEX_MEDIA_TYPE.into());
    index.insert("manifests".into(), Value::Array(manifests));
    Ok(Value::Object(index))
}

/// `index` with `schemaVersion`, `mediaType` and `manifests` filled in, as written.
pub fn complete_index(mut index: Map<String, Value>) -> Value {
    index.insert("schemaVersion".into(), 2.into());
    index
        .entry("mediaType")
        .or_insert_with(|| OCI_INDEX_MEDIA_TYPE.into());
    index
        .entry("manifests")
        .or_insert_with(|| Value::Array(Vec::new()));
    Value::Object(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn index_entries_with_the_same_ref_name_are_replaced_and_others_kept() {
        let old = json!({
            "schemaVersion": 2,
            "annotations": {"keep": "me"},
            "manifests": [
                {"mediaType": "m", "digest": "sha256:1", "size": 1,
                 "annotations": {REF_NAME_ANNOTATION: "v1"}},
                {"mediaType": "m", "digest": "sha256:2", "size": 1,
                 "annotations": {REF_NAME_ANNOTATION: "v2"}},
                {"mediaType": "m", "digest": "sha256:3", "size": 1}
            ]
        });
        let new = json!({"mediaType": "m", "digest": "sha256:9", "size": 1,
                         "annotations": {REF_NAME_ANNOTATION: "v1"}});
        let index = add_to_index(old.clone(), new, Some("v1")).unwrap();
        let digests: Vec<&str> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["digest"].as_str().unwrap())
            .collect();
        assert_eq!(digests, ["sha256:2", "sha256:3", "sha256:9"]);
        assert_eq!(index["annotations"]["keep"], "me");
        assert_eq!(index["mediaType"], OCI_INDEX_MEDIA_TYPE);
        let unnamed = json!({"mediaType": "m", "digest": "sha256:3", "size": 1});
        let index = add_to_index(old, unnamed, None).unwrap();
        assert_eq!(index["manifests"].as_array().unwrap().len(), 3);
        assert!(add_to_index(json!([]), json!({}), None).is_err());
        assert!(add_to_index(json!({"manifests": 1}), json!({}), None).is_err());
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
        assert!(parse_index(b"{\"manifests\":null}").is_ok());
        assert!(parse_index(b"[]").is_err());
        assert!(parse_index(b"{\"manifests\":1}").is_err());
        assert!(parse_index(b"nope").is_err());
        let index = complete_index(Map::new());
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["manifests"], json!([]));
    }
}
