//! Layer files and keys shared by the cache tests and their writer processes
//! (`writer.rs`).

use std::fs;
use std::path::{Path, PathBuf};

use ocibuild_cache::CachedLayer;
use sha2::{Digest, Sha256};

/// Deterministic pseudo-random bytes for `seed`.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A 64-hex step key for `name`.
pub fn key(name: &str) -> String {
    hex::encode(Sha256::digest(name.as_bytes()))
}

/// Writes a "layer" file of `len` bytes in `dir` and returns its entry. Like the snapshot
/// crate, it writes a new file and renames it into place, never rewriting a file in place
/// (the cache may have hard-linked the previous one).
pub fn layer_file(dir: &Path, seed: u64, len: usize) -> (CachedLayer, PathBuf) {
    let bytes = content(seed, len);
    let path = dir.join(format!("layer-{seed}-{}.tar.gz", std::process::id()));
    let partial = path.with_extension("partial");
    fs::write(&partial, &bytes).unwrap();
    fs::rename(&partial, &path).unwrap();
    let layer = CachedLayer {
        digest: sha256(&bytes),
        diff_id: sha256(format!("diff {seed}").as_bytes()),
        size: len as u64,
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        created_by: format!("/bin/sh -c echo step {seed}"),
        created: ocibuild_image::time::now_rfc3339(),
    };
    (layer, path)
}
