//! The diff_id of a layer blob: the sha256 of its uncompressed tar, computed while the
//! blob streams by (during its download) or from a file. Gzip and zstd blobs are told by
//! their magic bytes, like the unpacker does; anything else is a plain tar.

use std::io::{self, Read, Write};
use std::path::Path;

use ocibuild_image::compression::{sniff, Sniffed};
use ocibuild_image::digest::HashingWriter;
use ocibuild_registry::BlobObserver;

/// Bytes needed to tell the compression.
const MAGIC_LEN: usize = 4;

/// A layer's uncompressed content could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot decompress the layer to compute its diff_id: {0}")]
pub struct DiffIdError(#[source] pub io::Error);

/// Computes a diff_id from a blob's bytes given in any number of pieces.
pub struct DiffIdHasher {
    state: State,
}

enum State {
    /// Fewer than [`MAGIC_LEN`] bytes seen: the compression is not known yet.
    Sniffing(Vec<u8>),
    Plain(HashWriter),
    Gzip(Box<flate2::write::MultiGzDecoder<HashWriter>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, HashWriter>>),
    Failed(io::Error),
}

/// A writer that only hashes.
type HashWriter = HashingWriter<io::Sink>;

/// The digest of what `w` hashed.
fn digest(w: HashWriter) -> String {
    w.finish().1
}

impl Default for DiffIdHasher {
    fn default() -> Self {
        DiffIdHasher::new()
    }
}

impl DiffIdHasher {
    /// A hasher that has seen nothing yet.
    pub fn new() -> DiffIdHasher {
        DiffIdHasher {
            state: State::Sniffing(Vec::new()),
        }
    }

    /// Feeds the next bytes of the blob. A decompression error is kept for
    /// [`DiffIdHasher::finish`].
    pub fn write(&mut self, bytes: &[u8]) {
        if let State::Sniffing(seen) = &mut self.state {
            seen.extend_from_slice(bytes);
            if seen.len() < MAGIC_LEN {
                return;
            }
            let seen = std::mem::take(seen);
            self.state = start(&seen);
            return self.write_started(&seen);
        }
        self.write_started(bytes);
    }

    fn write_started(&mut self, bytes: &[u8]) {
        let result = match &mut self.state {
            State::Plain(w) => w.write_all(bytes),
            State::Gzip(d) => d.write_all(bytes),
            State::Zstd(d) => d.write_all(bytes),
            State::Sniffing(_) | State::Failed(_) => Ok(()),
        };
        if let Err(e) = result {
            self.state = State::Failed(e);
        }
    }

    /// The diff_id (`sha256:<hex>`) of all the bytes fed.
    pub fn finish(mut self) -> Result<String, DiffIdError> {
        if let State::Sniffing(seen) = &mut self.state {
            let seen = std::mem::take(seen);
            self.state = start(&seen);
            self.write_started(&seen);
        }
        match self.state {
            State::Plain(w) => Ok(digest(w)),
            State::Gzip(d) => Ok(digest(d.finish().map_err(DiffIdError)?)),
            State::Zstd(mut d) => {
                d.flush().map_err(DiffIdError)?;
                Ok(digest(d.into_inner()))
            }
            State::Failed(e) => Err(DiffIdError(e)),
            State::Sniffing(_) => unreachable!("sniffing ends above"),
        }
    }
}

/// The state for a blob starting with `magic`.
fn start(magic: &[u8]) -> State {
    let hash = HashingWriter::new(io::sink());
    match sniff(magic) {
        Sniffed::Gzip => State::Gzip(Box::new(flate2::write::MultiGzDecoder::new(hash))),
        Sniffed::Zstd => match zstd::stream::write::Decoder::new(hash) {
            Ok(d) => State::Zstd(Box::new(d)),
            Err(e) => State::Failed(e),
        },
        Sniffed::Plain | Sniffed::Bzip2 | Sniffed::Xz => State::Plain(hash),
    }
}

impl BlobObserver for DiffIdHasher {
    fn restart(&mut self) {
        *self = DiffIdHasher::new();
    }

    fn update(&mut self, bytes: &[u8]) {
        self.write(bytes);
    }
}

/// The diff_id of the layer blob in the file at `path` (one pass over the file).
pub fn diff_id_of_file(path: &Path) -> Result<String, DiffIdError> {
    let mut file = std::fs::File::open(path).map_err(DiffIdError)?;
    let mut hasher = DiffIdHasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(DiffIdError)?;
        if n == 0 {
            return hasher.finish();
        }
        hasher.write(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(bytes: &[u8]) -> String {
        ocibuild_image::digest::sha256_digest(bytes)
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// Feeds `blob` in pieces of `piece` bytes.
    fn hashed(blob: &[u8], piece: usize) -> Result<String, DiffIdError> {
        let mut h = DiffIdHasher::new();
        for chunk in blob.chunks(piece) {
            h.write(chunk);
        }
        h.finish()
    }

    #[test]
    fn plain_gzip_and_zstd_blobs_hash_their_uncompressed_bytes() {
        let tar: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let want = sha(&tar);
        assert_eq!(hashed(&tar, 7).unwrap(), want);
        assert_eq!(hashed(&gzip(&tar), 1).unwrap(), want);
        assert_eq!(hashed(&gzip(&tar), 4096).unwrap(), want);
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        assert_eq!(hashed(&zst, 3).unwrap(), want);
        assert_eq!(hashed(b"ab", 1).unwrap(), sha(b"ab"));
        assert_eq!(hashed(b"", 1).unwrap(), sha(b""));
    }

    #[test]
    fn concatenated_gzip_members_are_one_stream() {
        let mut blob = gzip(b"first ");
        blob.extend(gzip(b"second"));
        assert_eq!(hashed(&blob, 5).unwrap(), sha(b"first second"));
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let mut blob = gzip(&[7u8; 10_000]);
        let mid = blob.len() / 2;
        blob[mid..].iter_mut().for_each(|b| *b ^= 0x5a);
        assert!(hashed(&blob, 100).is_err());
    }

    #[test]
    fn restart_forgets_what_was_seen() {
        let mut h = DiffIdHasher::new();
        h.update(b"partial download");
        h.restart();
        h.update(b"tar");
        assert_eq!(h.finish().unwrap(), sha(b"tar"));
    }

    #[test]
    fn files_hash_like_streams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("layer");
        std::fs::write(&path, gzip(b"content")).unwrap();
        assert_eq!(diff_id_of_file(&path).unwrap(), sha(b"content"));
    }
}
