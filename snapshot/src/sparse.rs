//! Writing files with their holes: a sparse file (a 1 GiB preallocated database, a disk
//! image) takes only its data on disk when it is unpacked or copied, not its apparent size.
//!
//! [`write_sparse`] writes a stream, skipping every block of zeros (the filesystem's block
//! size, aligned in the file) instead of writing it, so those blocks stay holes; unpacking
//! a layer uses it for every regular file, whether the tar entry was a GNU sparse one or a
//! plain one full of zeros. [`copy_file_sparse`] copies a file's data ranges only, found
//! with `SEEK_DATA`/`SEEK_HOLE`, with `copy_file_range` (which also shares blocks where the
//! filesystem can reflink).
//!
//! Layer tars stay dense, as Docker's are: a hole is written into the tar as the zeros it
//! reads as (they compress to almost nothing); only files on disk keep their holes.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};

use rustix::fs::SeekFrom;
use rustix::io::Errno;

/// Bytes read or copied at a time.
const BUFFER: usize = 256 * 1024;

/// Writes everything `reader` gives into `dst` from its start (`dst` is truncated first),
/// leaving blocks of zeros as holes; `dst` then has exactly the bytes read. Returns how
/// many. `dst`'s file position is not moved.
pub fn write_sparse<R: Read + ?Sized>(reader: &mut R, dst: &File) -> io::Result<u64> {
    dst.set_len(0)?;
    let writer = HoleWriter::new(dst)?;
    let mut buf = vec![0u8; BUFFER];
    let mut total = 0u64;
    loop {
        // A short read is fine: blocks are told apart by their offsets in the file.
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        writer.write_at(&buf[..n], total)?;
        total += n as u64;
    }
    dst.set_len(total)?;
    Ok(total)
}

/// Copies the content of `src` into `dst` (truncated first), keeping `src`'s holes: only
/// the ranges `SEEK_DATA`/`SEEK_HOLE` report as data are copied, with `copy_file_range`,
/// or read and written (skipping blocks of zeros) where that is not supported. Returns
/// the size of the file. The file positions of both files are unspecified afterwards.
pub fn copy_file_sparse(src: &File, dst: &File) -> io::Result<u64> {
    let len = src.metadata()?.len();
    dst.set_len(0)?;
    let writer = HoleWriter::new(dst)?;
    let mut offset = 0;
    while offset < len {
        let Some((start, end)) = next_data(src, offset, len)? else {
            break;
        };
        copy_range(src, &writer, start, end)?;
        offset = end;
    }
    dst.set_len(len)?;
    Ok(len)
}

/// The next range of data at or after `offset` in `src` (of `len` bytes), as
/// `(start, end)`; `None` when only a hole is left. Without `SEEK_DATA` support, all of
/// the rest is data.
fn next_data(src: &File, offset: u64, len: u64) -> io::Result<Option<(u64, u64)>> {
    let start = match rustix::fs::seek(src, SeekFrom::Data(offset)) {
        Ok(start) => start,
        Err(Errno::NXIO) => return Ok(None),
        Err(Errno::INVAL | Errno::OPNOTSUPP) => return Ok(Some((offset, len))),
        Err(e) => return Err(e.into()),
    };
    let end = rustix::fs::seek(src, SeekFrom::Hole(start)).unwrap_or(len);
    Ok((start < len).then_some((start, end.min(len))))
}

/// Copies bytes `start..end` of `src` to the same offsets of the writer's file.
fn copy_range(src: &File, writer: &HoleWriter, start: u64, end: u64) -> io::Result<()> {
    let (mut from, mut to) = (start, start);
    while from < end {
        let want = usize::try_from(end - from)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match rustix::fs::copy_file_range(src, Some(&mut from), writer.dst, Some(&mut to), want) {
            Ok(0) => break, // the file shrank meanwhile
            Ok(_) => {}
            Err(Errno::XDEV | Errno::NOSYS | Errno::OPNOTSUPP | Errno::INVAL) => {
                return copy_range_by_reading(src, writer, from, end)
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// [`copy_range`] with reads and writes, for filesystems without `copy_file_range`.
fn copy_range_by_reading(src: &File, writer: &HoleWriter, start: u64, end: u64) -> io::Result<()> {
    // No bigger than the range: a COPY of many small files allocates little.
    let size = usize::try_from(end - start).map_or(BUFFER, |n| n.clamp(1, BUFFER));
    let mut buf = vec![0u8; size];
    let mut offset = start;
    while offset < end {
        let want = usize::try_from(end - offset).map_or(buf.len(), |n| n.min(buf.len()));
        let n = src.read_at(&mut buf[..want], offset)?;
        if n == 0 {
            break;
        }
        writer.write_at(&buf[..n], offset)?;
        offset += n as u64;
    }
    Ok(())
}

/// Writes into a file at given offsets, skipping the blocks (of the filesystem's block
/// size, aligned in the file) that hold only zeros. The file must read as zeros wherever
/// nothing was written: a new or truncated file.
struct HoleWriter<'a> {
    dst: &'a File,
    zeros: Vec<u8>,
}

impl<'a> HoleWriter<'a> {
    fn new(dst: &'a File) -> io::Result<HoleWriter<'a>> {
        let block = dst.metadata()?.blksize().clamp(512, 1 << 20) as usize;
        Ok(HoleWriter {
            dst,
            zeros: vec![0; block],
        })
    }

    /// Writes `buf` at `offset`, one write per run of blocks that are not all zeros.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let block = self.zeros.len() as u64;
        let mut run: Option<usize> = None; // start of the pending run of data
        let mut at = 0;
        while at < buf.len() {
            let into_block = ((offset + at as u64) % block) as usize;
            let end = (at + self.zeros.len() - into_block).min(buf.len());
            let zero = buf[at..end] == self.zeros[..end - at];
            match (zero, run) {
                (true, Some(start)) => {
                    self.dst
                        .write_all_at(&buf[start..at], offset + start as u64)?;
                    run = None;
                }
                (false, None) => run = Some(at),
                _ => {}
            }
            at = end;
        }
        if let Some(start) = run {
            self.dst
                .write_all_at(&buf[start..], offset + start as u64)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Cursor;

    /// Bytes a file takes on disk.
    fn allocated(file: &File) -> u64 {
        file.metadata().unwrap().blocks() * 512
    }

    /// 8 MiB of zeros with a little data at the start, in the middle (unaligned) and at the
    /// very end.
    fn mostly_zeros() -> Vec<u8> {
        let mut bytes = vec![0u8; 8 << 20];
        bytes[..5].copy_from_slice(b"start");
        bytes[3_000_001..3_000_007].copy_from_slice(b"middle");
        let len = bytes.len();
        bytes[len - 3..].copy_from_slice(b"end");
        bytes
    }

    #[test]
    fn blocks_of_zeros_are_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = mostly_zeros();
        let file = File::create(dir.path().join("f")).unwrap();
        fs::write(dir.path().join("f"), b"old content is truncated").unwrap();
        let written = write_sparse(&mut Cursor::new(&bytes), &file).unwrap();
        assert_eq!(written, bytes.len() as u64);
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), bytes);
        assert!(
            allocated(&file) <= 64 << 10,
            "{} bytes on disk",
            allocated(&file)
        );

        // A file of zeros only (its end is a hole too) and an empty one.
        let zeros = vec![0u8; 3 << 20];
        write_sparse(&mut Cursor::new(&zeros), &file).unwrap();
        assert_eq!(file.metadata().unwrap().len(), zeros.len() as u64);
        assert_eq!(allocated(&file), 0);
        assert_eq!(write_sparse(&mut io::empty(), &file).unwrap(), 0);
        assert_eq!(file.metadata().unwrap().len(), 0);
    }

    #[test]
    fn copies_keep_holes_and_content() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = mostly_zeros();
        let src = File::create(dir.path().join("src")).unwrap();
        write_sparse(&mut Cursor::new(&bytes), &src).unwrap();
        let src = File::open(dir.path().join("src")).unwrap();
        let dst = File::create(dir.path().join("dst")).unwrap();
        assert_eq!(copy_file_sparse(&src, &dst).unwrap(), bytes.len() as u64);
        assert_eq!(fs::read(dir.path().join("dst")).unwrap(), bytes);
        assert!(
            allocated(&dst) <= 64 << 10,
            "{} bytes on disk",
            allocated(&dst)
        );

        // Data ranges copied by reading (as without copy_file_range) skip zeros too.
        let writer = HoleWriter::new(&dst).unwrap();
        dst.set_len(0).unwrap();
        copy_range_by_reading(&src, &writer, 0, bytes.len() as u64).unwrap();
        dst.set_len(bytes.len() as u64).unwrap();
        assert_eq!(fs::read(dir.path().join("dst")).unwrap(), bytes);
        assert!(
            allocated(&dst) <= 64 << 10,
            "{} bytes on disk",
            allocated(&dst)
        );
    }
}
