//! Digests: parsing them into oci-spec's [`Digest`] with a clear error ([`parse`]), and
//! sha256 digests in the `sha256:<hex>` form of OCI descriptors: of bytes, of a stream, of
//! a file, and of everything written through a [`HashingWriter`] or read through a
//! [`HashingReader`]. The one set of hashing helpers of the workspace.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest as _, Sha256};

pub use oci_spec::image::{Digest, DigestAlgorithm};

/// A digest that is not `algorithm:encoded` as the OCI image spec defines it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{digest:?} is not a valid digest: {reason}")]
pub struct InvalidDigest {
    /// The text given.
    pub digest: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Parses `text` as a digest: `sha256:` and 64 lowercase hex characters (likewise sha384
/// and sha512 with 96 and 128), or another algorithm's `algorithm:encoded` with the
/// characters the OCI image spec allows.
pub fn parse(text: &str) -> Result<Digest, InvalidDigest> {
    let invalid = |reason: String| InvalidDigest {
        digest: text.to_string(),
        reason,
    };
    let Some((algorithm, encoded)) = text.split_once(':') else {
        return Err(invalid(
            "expected algorithm:encoded, e.g. sha256:<64 hex>".into(),
        ));
    };
    let known = DigestAlgorithm::from(algorithm).digest_hexlen();
    if let Some(len) = known {
        let hex = encoded
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if encoded.len() != len as usize || !hex {
            return Err(invalid(format!(
                "{algorithm} needs {len} lowercase hex characters"
            )));
        }
    }
    Digest::try_from(text).map_err(|e| invalid(e.to_string()))
}

/// The [`Digest`] of `sha256_digest(bytes)`.
pub fn sha256(bytes: &[u8]) -> Digest {
    parse(&sha256_digest(bytes)).expect("a sha256 digest we format is valid")
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// An incremental sha256 that counts the bytes it is given.
#[derive(Debug, Clone, Default)]
pub struct Sha256Hasher {
    hasher: Sha256,
    bytes: u64,
}

impl Sha256Hasher {
    /// A hasher that has seen nothing yet.
    pub fn new() -> Sha256Hasher {
        Sha256Hasher::default()
    }

    /// Hashes the next `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
    }

    /// The number of bytes hashed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// `sha256:<hex>` of everything hashed, and its size.
    pub fn finish(self) -> (String, u64) {
        let digest = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        (digest, self.bytes)
    }
}

/// A writer that passes bytes on to `W` while hashing and counting them.
pub struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256Hasher,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`; nothing has been hashed yet.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256Hasher::new(),
        }
    }

    /// Number of bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.hasher.bytes()
    }

    /// The wrapped writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Ends hashing: returns the inner writer, `sha256:<hex>` of the bytes written and their
    /// count.
    pub fn finish(self) -> (W, String, u64) {
        let (digest, bytes) = self.hasher.finish();
        (self.inner, digest, bytes)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that passes on the bytes of `R` while hashing and counting them.
pub struct HashingReader<R: Read> {
    inner: R,
    hasher: Sha256Hasher,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`; nothing has been hashed yet.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256Hasher::new(),
        }
    }

    /// Reads what is left of the stream (hashing it) and returns `sha256:<hex>` of every
    /// byte read and their count.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.hasher.finish())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// `sha256:<hex>` and size of everything `reader` yields.
pub fn sha256_reader(mut reader: impl Read) -> io::Result<(String, u64)> {
    let mut hashing = HashingWriter::new(io::sink());
    io::copy(&mut reader, &mut hashing)?;
    let (_, digest, size) = hashing.finish();
    Ok((digest, size))
}

/// `sha256:<hex>` and size of the file at `path`.
pub fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    sha256_reader(io::BufReader::with_capacity(256 * 1024, File::open(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const HELLO: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn bytes_readers_and_files_hash_alike() {
        assert_eq!(sha256_digest(b""), EMPTY);
        assert_eq!(sha256_reader(&b""[..]).unwrap(), (EMPTY.to_string(), 0));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello").unwrap();
        assert_eq!(sha256_file(&path).unwrap(), (HELLO.to_string(), 5));
        assert!(sha256_file(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn digests_parse_and_bad_ones_are_named_with_the_reason() {
        let d = parse(HELLO).unwrap();
        assert_eq!(d.algorithm(), &DigestAlgorithm::Sha256);
        assert_eq!(d.to_string(), HELLO);
        assert_eq!(sha256(b"hello"), d);
        let long = format!("sha512:{}", "ab".repeat(64));
        assert_eq!(parse(&long).unwrap().to_string(), long);
        assert!(parse("multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8").is_ok());
        let upper = HELLO.to_uppercase().replace("SHA256", "sha256");
        for (bad, reason) in [
            ("sha256:abc", "sha256 needs 64 lowercase hex characters"),
            (upper.as_str(), "sha256 needs 64 lowercase hex characters"),
            ("nocolon", "expected algorithm:encoded"),
            ("../x:abc", "algorithm"),
            ("sha999:", "value"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
            assert!(err.reason.contains(reason), "{bad}: {}", err.reason);
        }
    }

    #[test]
    fn the_hashing_writer_passes_bytes_on_and_counts_them() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hel").unwrap();
        w.write_all(b"lo").unwrap();
        assert_eq!(w.bytes(), 5);
        let (inner, digest, n) = w.finish();
        assert_eq!(inner, b"hello");
        assert_eq!((digest.as_str(), n), (HELLO, 5));
        let mut h = Sha256Hasher::new();
        h.update(b"he");
        h.update(b"llo");
        assert_eq!(h.finish(), (HELLO.to_string(), 5));
    }

    #[test]
    fn the_hashing_reader_hashes_what_was_read_and_what_is_left() {
        let mut r = HashingReader::new(&b"hello"[..]);
        let mut first = [0u8; 3];
        r.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"hel");
        assert_eq!(r.finish().unwrap(), (HELLO.to_string(), 5));
    }
}
