//! Helpers shared by the lab integration tests (`registry.rs`, `tls.rs`).

use std::time::{SystemTime, UNIX_EPOCH};

use ocibuild_registry::manifest::{descriptor, image_manifest, manifest_json};
use ocibuild_registry::{media_types, sha256_digest, Client, Reference};

/// The value of lab variable `name`; panics when the lab is not set up.
pub fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: the integration tests need the test lab; run `eval $(scripts/lab.sh env)` first"
        ),
    }
}

/// `prefix` made unique per call and process.
pub fn unique(prefix: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{n}-{}", std::process::id())
}

/// A one-layer image pushed by [`push_tiny_image`].
// Each test crate reads its own subset of the fields.
#[allow(dead_code)]
pub struct Pushed {
    /// The manifest as pushed.
    pub bytes: Vec<u8>,
    /// Its digest, as the registry acknowledged it.
    pub digest: String,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub layer_digest: String,
}

/// Pushes an image with `layer` as its one layer (config, layer, manifest) to `r`.
pub async fn push_tiny_image(c: &Client, r: &Reference, layer: &[u8]) -> Pushed {
    let layer_digest = sha256_digest(layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}}}}"#
    )
    .into_bytes();
    let config_digest = sha256_digest(&config);
    c.push_blob_bytes(r, &layer_digest, layer.to_vec())
        .await
        .expect("push layer");
    c.push_blob_bytes(r, &config_digest, config.clone())
        .await
        .expect("push config");
    let size = |n: usize| n as u64;
    let manifest = image_manifest(
        media_types::OCI_MANIFEST,
        descriptor(media_types::OCI_CONFIG, &config_digest, size(config.len())).unwrap(),
        vec![descriptor(media_types::OCI_LAYER_TAR, &layer_digest, size(layer.len())).unwrap()],
        &Default::default(),
    );
    let bytes = manifest_json(&manifest);
    let digest = c
        .push_manifest(r, media_types::OCI_MANIFEST, &bytes)
        .await
        .expect("push manifest");
    Pushed {
        bytes,
        digest,
        config,
        config_digest,
        layer_digest,
    }
}
