//! A small streaming tar writer: ustar headers plus PAX extended headers.
//!
//! The `tar` crate writes GNU long-name entries and knows nothing about
//! whiteouts, so layers are written with this module instead. Long or
//! non-ASCII names, large ids, huge sizes and extended attributes go into a
//! PAX extended header (typeflag `x`) placed before the entry; GNU extensions
//! are never used.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use crate::error::{Error, Result};

/// Size of one tar block.
pub const BLOCK: usize = 512;
/// Longest value that fits an octal field of 8 bytes (7 digits).
const MAX_OCTAL_7: u64 = 0o7_777_777;
/// Longest value that fits an octal field of 12 bytes (11 digits).
const MAX_OCTAL_11: u64 = 0o77_777_777_777;
/// Length of the ustar name and linkname fields.
const NAME_LEN: usize = 100;

/// What kind of file an entry describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file with `size` bytes of data.
    File,
    /// A hard link to `link_name`, an earlier entry of the same archive.
    HardLink,
    /// A symbolic link pointing to `link_name`.
    Symlink,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A directory.
    Directory,
    /// A named pipe.
    Fifo,
}

impl EntryKind {
    /// The ustar typeflag byte.
    fn typeflag(self) -> u8 {
        match self {
            EntryKind::File => b'0',
            EntryKind::HardLink => b'1',
            EntryKind::Symlink => b'2',
            EntryKind::CharDevice => b'3',
            EntryKind::BlockDevice => b'4',
            EntryKind::Directory => b'5',
            EntryKind::Fifo => b'6',
        }
    }
}

/// Everything written about one entry except its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHeader {
    /// Path inside the archive as raw bytes (directories should end with `/`).
    pub path: Vec<u8>,
    /// Kind of entry.
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky (`& 0o7777` is applied).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u64,
    /// Numeric group.
    pub gid: u64,
    /// Number of data bytes (regular files only; 0 otherwise).
    pub size: u64,
    /// Modification time in whole seconds since the epoch.
    pub mtime: u64,
    /// Link target for symlinks and hard links, empty otherwise.
    pub link_name: Vec<u8>,
    /// Device major number (devices only).
    pub dev_major: u32,
    /// Device minor number (devices only).
    pub dev_minor: u32,
    /// Extended attributes, written as `SCHILY.xattr.NAME` PAX records.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl EntryHeader {
    /// A header of `kind` for `path` with every other field zero or empty.
    pub fn new(path: Vec<u8>, kind: EntryKind) -> Self {
        EntryHeader {
            path,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            link_name: Vec::new(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: Vec::new(),
        }
    }

    /// The path for error messages.
    fn display_path(&self) -> PathBuf {
        PathBuf::from(String::from_utf8_lossy(&self.path).into_owned())
    }
}

/// Writes tar entries to `W` one after another.
pub struct TarWriter<W: Write> {
    out: W,
    /// The buffer file data is copied through (allocated at the first file with data).
    buffer: Vec<u8>,
}

/// Bytes of file data read at a time: a 100 MB file takes 400 reads, not 12 800.
const COPY_BUFFER: usize = 256 * 1024;

impl<W: Write> TarWriter<W> {
    /// Starts an archive on `out`.
    pub fn new(out: W) -> Self {
        TarWriter {
            out,
            buffer: Vec::new(),
        }
    }

    /// Appends one entry. For regular files exactly `header.size` bytes are
    /// copied from `data`; a short read is an error naming the entry.
    pub fn append(&mut self, header: &EntryHeader, data: &mut dyn Read) -> Result<()> {
        let pax = pax_records(header);
        if !pax.is_empty() {
            self.write_pax(header, &pax)?;
        }
        let block = ustar_block(header)?;
        self.write_all(header, &block)?;
        if header.kind == EntryKind::File {
            self.copy_data(header, data)?;
        }
        Ok(())
    }

    /// Writes the two zero blocks that end the archive and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// Writes a PAX extended header entry carrying `records` for `header`.
    fn write_pax(&mut self, header: &EntryHeader, records: &[u8]) -> Result<()> {
        let mut pax = EntryHeader::new(b"././@PaxHeader".to_vec(), EntryKind::File);
        pax.mode = 0o644;
        pax.size = records.len() as u64;
        pax.mtime = header.mtime.min(MAX_OCTAL_11);
        let mut block = ustar_block(&pax)?;
        block[156] = b'x';
        set_checksum(&mut block);
        self.write_all(header, &block)?;
        self.write_all(header, records)?;
        self.write_all(header, &zero_padding(records.len() as u64))
    }

    /// Copies the file data of `header` from `data`, then pads to a block.
    fn copy_data(&mut self, header: &EntryHeader, data: &mut dyn Read) -> Result<()> {
        let copied = self
            .copy_from(data, header.size)
            .map_err(|e| Error::io(&header.display_path(), "copy file data into layer", e))?;
        if copied != header.size {
            return Err(Error::TarWrite {
                path: header.display_path(),
                reason: format!(
                    "file shrank while writing: expected {} bytes, read {copied}",
                    header.size
                ),
            });
        }
        self.write_all(header, &zero_padding(header.size))
    }

    /// Copies up to `size` bytes from `data` to the output; returns how many there were.
    fn copy_from(&mut self, data: &mut dyn Read, size: u64) -> io::Result<u64> {
        if size > 0 && self.buffer.is_empty() {
            self.buffer = vec![0u8; COPY_BUFFER];
        }
        let mut copied = 0u64;
        while copied < size {
            let want = usize::try_from(size - copied).map_or(COPY_BUFFER, |n| n.min(COPY_BUFFER));
            let n = match data.read(&mut self.buffer[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.out.write_all(&self.buffer[..n])?;
            copied += n as u64;
        }
        Ok(copied)
    }

    /// Writes `bytes`, mapping errors to the entry's path.
    fn write_all(&mut self, header: &EntryHeader, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io(&header.display_path(), "write layer", e))
    }
}

/// Zero bytes needed after `len` bytes of data to reach a block boundary.
fn zero_padding(len: u64) -> Vec<u8> {
    let rest = (len % BLOCK as u64) as usize;
    if rest == 0 {
        Vec::new()
    } else {
        vec![0u8; BLOCK - rest]
    }
}

/// True if `bytes` fit a ustar name field as they are.
fn fits_name_field(bytes: &[u8]) -> bool {
    bytes.len() <= NAME_LEN && bytes.is_ascii() && !bytes.contains(&0)
}

/// The PAX records `header` needs, concatenated; empty if none.
fn pax_records(header: &EntryHeader) -> Vec<u8> {
    let mut out = Vec::new();
    if !fits_name_field(&header.path) {
        push_record(&mut out, b"path", &header.path);
    }
    if !fits_name_field(&header.link_name) {
        push_record(&mut out, b"linkpath", &header.link_name);
    }
    if header.uid > MAX_OCTAL_7 {
        push_record(&mut out, b"uid", header.uid.to_string().as_bytes());
    }
    if header.gid > MAX_OCTAL_7 {
        push_record(&mut out, b"gid", header.gid.to_string().as_bytes());
    }
    if header.size > MAX_OCTAL_11 {
        push_record(&mut out, b"size", header.size.to_string().as_bytes());
    }
    if header.mtime > MAX_OCTAL_11 {
        push_record(&mut out, b"mtime", header.mtime.to_string().as_bytes());
    }
    for (name, value) in &header.xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(name);
        push_record(&mut out, &key, value);
    }
    out
}

/// Appends one PAX record `"<len> <key>=<value>\n"`, where `len` counts the whole record.
pub(crate) fn push_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3; // space, '=', newline
    let mut len = body + 1;
    while body + len.to_string().len() != len {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Builds the 512-byte ustar header block for `header` (values too large for
/// their field are zero here and carried by the PAX header instead).
fn ustar_block(header: &EntryHeader) -> Result<[u8; BLOCK]> {
    let mut block = [0u8; BLOCK];
    copy_truncated(&mut block[0..100], &header.path);
    write_octal(&mut block[100..108], u64::from(header.mode & 0o7777));
    write_octal(&mut block[108..116], cap(header.uid, MAX_OCTAL_7));
    write_octal(&mut block[116..124], cap(header.gid, MAX_OCTAL_7));
    write_octal(&mut block[124..136], cap(header.size, MAX_OCTAL_11));
    write_octal(&mut block[136..148], cap(header.mtime, MAX_OCTAL_11));
    block[156] = header.kind.typeflag();
    copy_truncated(&mut block[157..257], &header.link_name);
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    check_device_number(header, header.dev_major)?;
    check_device_number(header, header.dev_minor)?;
    write_octal(&mut block[329..337], u64::from(header.dev_major));
    write_octal(&mut block[337..345], u64::from(header.dev_minor));
    set_checksum(&mut block);
    Ok(block)
}

/// Device numbers have no PAX record, so they must fit 7 octal digits.
fn check_device_number(header: &EntryHeader, number: u32) -> Result<()> {
    if u64::from(number) > MAX_OCTAL_7 {
        return Err(Error::TarWrite {
            path: header.display_path(),
            reason: format!("device number {number} does not fit a ustar header"),
        });
    }
    Ok(())
}

/// `value` if it is at most `max`, else 0 (the PAX header then holds the value).
fn cap(value: u64, max: u64) -> u64 {
    if value > max {
        0
    } else {
        value
    }
}

/// Copies as much of `src` as fits into `field`.
fn copy_truncated(field: &mut [u8], src: &[u8]) {
    let n = src.len().min(field.len());
    field[..n].copy_from_slice(&src[..n]);
}

/// Writes `value` as zero-padded octal followed by a NUL, filling `field`.
fn write_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

/// Computes the header checksum (field taken as spaces) and stores it as
/// six octal digits, NUL, space.
fn set_checksum(block: &mut [u8; BLOCK]) {
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{sum:06o}");
    block[148..154].copy_from_slice(text.as_bytes());
    block[154] = 0;
    block[155] = b' ';
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_one(header: &EntryHeader, data: &[u8]) -> Vec<u8> {
        let mut w = TarWriter::new(Vec::new());
        w.append(header, &mut &data[..]).unwrap();
        w.finish().unwrap()
    }

    /// Path, type, uid, size and data of an entry read back.
    type ReadBack = (Vec<u8>, tar::EntryType, u64, u64, Vec<u8>);

    fn read_back(bytes: &[u8]) -> Vec<ReadBack> {
        let mut archive = tar::Archive::new(bytes);
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path_bytes().into_owned();
            let kind = entry.header().entry_type();
            let uid = entry.header().uid().unwrap();
            let size = entry.size();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            out.push((path, kind, uid, size, data));
        }
        out
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let mut out = Vec::new();
        push_record(&mut out, b"path", b"a");
        assert_eq!(out, b"9 path=a\n");
        let mut out = Vec::new();
        let value = vec![b'x'; 93];
        push_record(&mut out, b"path", &value);
        // 93 + 4 + 3 = 100 plus 3 digits = 103
        assert!(out.starts_with(b"103 path="));
        assert_eq!(out.len(), 103);
    }

    #[test]
    fn short_file_has_no_pax_header() {
        let mut h = EntryHeader::new(b"hello.txt".to_vec(), EntryKind::File);
        h.size = 5;
        h.mode = 0o644;
        let bytes = write_one(&h, b"hello");
        assert_eq!(bytes.len(), 512 + 512 + 1024);
        let entries = read_back(&bytes);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0, b"hello.txt");
        assert_eq!(entries[0].4, b"hello");
    }

    #[test]
    fn long_and_non_ascii_names_use_pax() {
        let long = vec![b'a'; 300];
        for path in [long, "caf\u{e9}".as_bytes().to_vec()] {
            let h = EntryHeader::new(path.clone(), EntryKind::File);
            let bytes = write_one(&h, b"");
            assert_eq!(bytes[156], b'x');
            let entries = read_back(&bytes);
            assert_eq!(entries.len(), 1);
            assert_eq!(entries[0].0, path);
        }
    }

    #[test]
    fn big_uid_uses_pax() {
        let mut h = EntryHeader::new(b"f".to_vec(), EntryKind::File);
        h.uid = 100_000_000;
        let entries = read_back(&write_one(&h, b""));
        assert_eq!(entries[0].2, 100_000_000);
    }

    #[test]
    fn short_data_is_an_error() {
        let mut h = EntryHeader::new(b"f".to_vec(), EntryKind::File);
        h.size = 10;
        let mut w = TarWriter::new(Vec::new());
        let err = w.append(&h, &mut &b"abc"[..]).unwrap_err();
        assert!(err.to_string().contains("shrank"), "{err}");
    }

    #[test]
    fn checksum_is_valid() {
        let h = EntryHeader::new(b"dir/".to_vec(), EntryKind::Directory);
        let block = ustar_block(&h).unwrap();
        let parsed = tar::Header::from_byte_slice(&block);
        assert_eq!(parsed.cksum().unwrap(), {
            let mut copy = block;
            copy[148..156].fill(b' ');
            copy.iter().map(|&b| u32::from(b)).sum::<u32>()
        });
    }
}
