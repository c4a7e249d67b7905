//! Layer blobs read decompressed: gzip, zstd or a plain tar, told by their magic bytes.

use std::io::{self, BufReader, Chain, Cursor, Read};

use ocibuild_image::compression::{sniff, Sniffed, MAGIC_LEN};

/// The compressed stream after its first bytes were peeked at.
type Source<R> = BufReader<Chain<Cursor<Vec<u8>>, R>>;

/// The uncompressed bytes of a layer blob (see [`decompressed`]).
pub struct Decompressed<R: Read> {
    inner: Inner<R>,
}

enum Inner<R: Read> {
    Plain(Source<R>),
    Gzip(Box<flate2::bufread::MultiGzDecoder<Source<R>>>),
    Zstd(Box<zstd::Decoder<'static, Source<R>>>),
}

/// Reads `reader`, a layer blob, decompressed: gzip (every member) and zstd are told by
/// their magic bytes, anything else is passed through as it is. Only the first bytes are
/// read here, so `reader` may be a download still in progress.
pub fn decompressed<R: Read>(mut reader: R) -> io::Result<Decompressed<R>> {
    let mut head = Vec::with_capacity(MAGIC_LEN);
    (&mut reader)
        .take(MAGIC_LEN as u64)
        .read_to_end(&mut head)?;
    let kind = sniff(&head);
    let source = BufReader::with_capacity(64 * 1024, Cursor::new(head).chain(reader));
    let inner = match kind {
        Sniffed::Gzip => Inner::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(source))),
        Sniffed::Zstd => Inner::Zstd(Box::new(zstd::Decoder::with_buffer(source)?)),
        Sniffed::Plain | Sniffed::Bzip2 | Sniffed::Xz => Inner::Plain(source),
    };
    Ok(Decompressed { inner })
}

impl<R: Read> Read for Decompressed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Plain(r) => r.read(buf),
            Inner::Gzip(r) => r.read(buf),
            Inner::Zstd(r) => r.read(buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A reader handing out one byte per call, as a slow download may.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(1);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn read_all(blob: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        decompressed(Trickle(blob))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn gzip_zstd_and_plain_streams_read_back_even_one_byte_at_a_time() {
        let data = b"the uncompressed layer".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&data[..], 3).unwrap();
        assert_eq!(read_all(&gz), data);
        assert_eq!(read_all(&zst), data);
        assert_eq!(read_all(&data), data);
        assert_eq!(read_all(b"ab"), b"ab", "shorter than the magic bytes");
    }

    #[test]
    fn every_gzip_member_is_read() {
        let mut blob = Vec::new();
        for part in [&b"first "[..], b"second"] {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(part).unwrap();
            blob.extend(gz.finish().unwrap());
        }
        assert_eq!(read_all(&blob), b"first second");
    }
}
