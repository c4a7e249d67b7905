//! Blobs as files on disk, and the error of reading an image stored on disk (an OCI layout
//! or a docker archive).

use std::io;
use std::path::{Path, PathBuf};

/// The largest manifest, index, `manifest.json` or config read into memory.
pub const MAX_METADATA: u64 = 16 << 20;

/// A blob as a file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobFile {
    /// `sha256:<hex>` (or another algorithm's digest, in a layout).
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// The file holding exactly the blob's bytes.
    pub path: PathBuf,
}

/// Why an image stored on disk could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The layout has no `index.json`.
    #[error("it has no index.json")]
    NoIndex,
    /// The layout has no single image to read without a name, or none with the name given.
    #[error("{0}")]
    NoSuchImage(String),
    /// The content is not what the format requires; the text says what is wrong.
    #[error("{0}")]
    Invalid(String),
}

impl ReadError {
    /// A `map_err` adapter for an I/O error on `path`.
    pub fn io(path: &Path) -> impl FnOnce(io::Error) -> ReadError {
        let path = path.to_path_buf();
        move |source| ReadError::Io { path, source }
    }
}

/// Reads the file of a `what` (a manifest, a config, …) that has `size` bytes, refusing one
/// larger than [`MAX_METADATA`].
pub fn read_small(path: &Path, size: u64, what: &str) -> Result<Vec<u8>, ReadError> {
    if size > MAX_METADATA {
        return Err(ReadError::Invalid(format!(
            "{what} has {size} bytes, more than the {MAX_METADATA} a manifest or config may have"
        )));
    }
    std::fs::read(path).map_err(|e| ReadError::Invalid(format!("reading {what}: {e}")))
}

/// `blobs` with each digest once, first occurrence first.
pub fn dedup(blobs: Vec<BlobFile>) -> Vec<BlobFile> {
    let mut seen = std::collections::HashSet::new();
    blobs
        .into_iter()
        .filter(|b| seen.insert(b.digest.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_files_are_read_and_huge_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        std::fs::write(&path, b"{}").unwrap();
        assert_eq!(read_small(&path, 2, "the manifest").unwrap(), b"{}");
        let err = read_small(&path, MAX_METADATA + 1, "the manifest").unwrap_err();
        assert!(err.to_string().contains("the manifest has"), "{err}");
        let blob = |d: &str| BlobFile {
            digest: d.into(),
            size: 1,
            path: path.clone(),
        };
        let kept = dedup(vec![blob("a"), blob("b"), blob("a")]);
        assert_eq!(kept, vec![blob("a"), blob("b")]);
    }
}
