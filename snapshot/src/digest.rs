//! SHA-256 helpers: hashing files, and hashing everything written through a writer or read
//! through a reader.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use ocibuild_image::digest::sha256_reader;
use sha2::{Digest, Sha256};

use crate::error::{io_err, Result};

/// Formats a finished SHA-256 hasher as `sha256:<hex>`.
fn format_digest(hasher: Sha256) -> String {
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// Returns `sha256:<hex>` of the file at `path`, reading it in chunks.
pub fn sha256_file(path: &Path) -> Result<String> {
    let file = File::open(path).map_err(io_err(path, "open"))?;
    let (digest, _) = sha256_reader(file).map_err(io_err(path, "read"))?;
    Ok(digest)
}

/// A writer that passes bytes on to `W` while hashing and counting them.
pub struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`; nothing has been hashed yet.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Number of bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The wrapped writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Ends hashing: returns the inner writer, `sha256:<hex>` of the bytes written and their count.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, format_digest(self.hasher), self.bytes)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that passes on the bytes of `R` while hashing and counting them.
pub struct HashingReader<R: Read> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`; nothing has been hashed yet.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Reads what is left of the stream (hashing it) and returns `sha256:<hex>` of every
    /// byte read and their count.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((format_digest(self.hasher), self.bytes))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const HELLO: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn hashing_writer_counts_and_hashes() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hel").unwrap();
        w.write_all(b"lo").unwrap();
        assert_eq!(w.bytes(), 5);
        let (inner, digest, n) = w.finish();
        assert_eq!(inner, b"hello");
        assert_eq!(digest, HELLO);
        assert_eq!(n, 5);
    }

    #[test]
    fn hashing_reader_hashes_what_was_read_and_what_is_left() {
        let mut r = HashingReader::new(&b"hello"[..]);
        let mut first = [0u8; 3];
        r.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"hel");
        assert_eq!(r.finish().unwrap(), (HELLO.to_string(), 5));
    }

    #[test]
    fn empty_writer_has_empty_digest() {
        let (_, digest, n) = HashingWriter::new(io::sink()).finish();
        assert_eq!(digest, EMPTY);
        assert_eq!(n, 0);
    }

    #[test]
    fn sha256_file_matches_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello").unwrap();
        assert_eq!(sha256_file(&path).unwrap(), HELLO);
    }

    #[test]
    fn sha256_file_missing_names_path() {
        let err = sha256_file(Path::new("/nonexistent/file")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/file"), "{err}");
    }
}
