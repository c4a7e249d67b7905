//! Applying OCI layer tars onto a root filesystem directory.
//!
//! Follows the OCI image-spec layer rules: entries replace what is there,
//! `.wh.NAME` files delete `NAME` from lower layers, and `.wh..wh..opq`
//! empties a directory of everything lower layers put there. Every path is
//! resolved inside the rootfs with [`resolve_in_root`], so neither `..` nor a
//! symbolic link in the image can make a write land outside it.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use filetime::FileTime;
use tar::EntryType;

use crate::error::{io_err, Error, Result};
use crate::rootpath::{clean_relative, is_plain_name, relative_to, resolve_in_root};

/// Prefix of whiteout file names.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Name of the opaque-directory marker.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// PAX record prefix for extended attributes.
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";

/// Counters describing one applied layer.
#[derive(Debug, Default, Clone)]
pub struct UnpackStats {
    /// Tar entries processed (whiteouts included).
    pub entries: u64,
    /// Bytes of regular-file data written.
    pub bytes: u64,
    /// Device nodes not created because `mknod` was not permitted.
    pub skipped_devices: u64,
    /// Ownership changes that were not permitted (only when not running as root).
    pub chown_failures: u64,
    /// Extended attributes that could not be set.
    pub xattr_failures: u64,
}

/// Compression of a layer file, told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sniffed {
    Gzip,
    Zstd,
    Plain,
}

/// Tells the compression from the magic bytes at the start of a file.
fn sniff(magic: &[u8]) -> Sniffed {
    if magic.starts_with(&[0x1f, 0x8b]) {
        Sniffed::Gzip
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Sniffed::Zstd
    } else {
        Sniffed::Plain
    }
}

/// Applies the layer file at `path` onto `rootfs`; gzip, zstd and plain tar
/// are recognised by their magic bytes.
pub fn unpack_layer_file(path: &Path, rootfs: &Path) -> Result<UnpackStats> {
    unpack_layer_file_skipping(path, rootfs, &[])
}

/// Like [`unpack_layer_file`], but entries at or below the `skip` paths (relative to
/// rootfs) are left alone: not written, not removed by whiteouts or opaque markers. Used
/// when unpacking into a live `/` (kaniko mode), where `/proc`, `/dev`, mount points and
/// the builder's own directory must survive.
pub fn unpack_layer_file_skipping(
    path: &Path,
    rootfs: &Path,
    skip: &[PathBuf],
) -> Result<UnpackStats> {
    let file = File::open(path).map_err(io_err(path, "open layer"))?;
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let magic = reader.fill_buf().map_err(io_err(path, "read layer"))?;
    let result = match sniff(magic) {
        Sniffed::Gzip => {
            unpack_skipping(flate2::bufread::MultiGzDecoder::new(reader), rootfs, skip)
        }
        Sniffed::Zstd => {
            let decoder = zstd::Decoder::with_buffer(reader).map_err(io_err(path, "start zstd"))?;
            unpack_skipping(decoder, rootfs, skip)
        }
        Sniffed::Plain => unpack_skipping(reader, rootfs, skip),
    };
    result.map_err(|e| match e {
        Error::TarRead { source } => Error::io(path, "read layer", source),
        other => other,
    })
}

/// Applies one uncompressed layer tar from `tar_stream` onto `rootfs`.
pub fn unpack_layer<R: Read>(tar_stream: R, rootfs: &Path) -> Result<UnpackStats> {
    unpack_skipping(tar_stream, rootfs, &[])
}

fn unpack_skipping<R: Read>(tar_stream: R, rootfs: &Path, skip: &[PathBuf]) -> Result<UnpackStats> {
    let mut archive = tar::Archive::new(tar_stream);
    let mut unpacker = Unpacker::new(rootfs);
    unpacker.skip = skip.to_vec();
    let entries = archive
        .entries()
        .map_err(|source| Error::TarRead { source })?;
    for entry in entries {
        let mut entry = entry.map_err(|source| Error::TarRead { source })?;
        unpacker.apply(&mut entry)?;
    }
    unpacker.finish()
}

/// The extra metadata an entry may carry in PAX records.
#[derive(Debug, Default)]
struct PaxInfo {
    xattrs: Vec<(OsString, Vec<u8>)>,
    mtime: Option<FileTime>,
}

impl PaxInfo {
    /// Reads the PAX records of `entry` that the tar crate does not apply itself.
    fn read<R: Read>(entry: &mut tar::Entry<R>, path: &Path) -> Result<PaxInfo> {
        let mut info = PaxInfo::default();
        let Some(extensions) = entry
            .pax_extensions()
            .map_err(|source| Error::TarRead { source })?
        else {
            return Ok(info);
        };
        for extension in extensions {
            let extension = extension.map_err(|source| Error::TarRead { source })?;
            let Ok(key) = extension.key() else { continue };
            if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                info.xattrs
                    .push((OsString::from(name), extension.value_bytes().to_vec()));
            } else if key == "mtime" {
                info.mtime = Some(parse_pax_time(extension.value_bytes(), path)?);
            }
        }
        Ok(info)
    }
}

/// Parses a PAX time value such as `1700000000` or `1700000000.25`.
fn parse_pax_time(value: &[u8], path: &Path) -> Result<FileTime> {
    let bad = || Error::BadEntry {
        path: path.to_path_buf(),
        reason: format!("invalid PAX mtime {:?}", String::from_utf8_lossy(value)),
    };
    let text = std::str::from_utf8(value).map_err(|_| bad())?;
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    let digits: String = frac.chars().take(9).collect();
    let nanos = if digits.is_empty() {
        0
    } else {
        let n: u32 = digits.parse().map_err(|_| bad())?;
        n * 10u32.pow(9 - digits.len() as u32)
    };
    Ok(FileTime::from_unix_time(secs, nanos))
}

/// Turns a tar entry name into a clean relative path: leading `/` and `./`
/// and `.` components dropped; any `..` is refused.
fn normalise_entry_path(raw: &[u8]) -> Result<PathBuf> {
    clean_relative(Path::new(OsStr::from_bytes(raw)), "entry name")
}

/// Removes whatever is at `path` (a directory recursively); missing is fine.
fn remove_any(path: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, "lstat", e)),
    };
    if meta.is_dir() {
        fs::remove_dir_all(path).map_err(io_err(path, "remove directory"))
    } else {
        fs::remove_file(path).map_err(io_err(path, "remove"))
    }
}

/// Converts a host path to a C string for libc calls.
fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::BadEntry {
        path: path.to_path_buf(),
        reason: "path contains a NUL byte".into(),
    })
}

/// State kept while one layer is applied.
struct Unpacker<'a> {
    rootfs: &'a Path,
    is_root: bool,
    /// Paths (relative to rootfs, resolved) created by this layer, and their ancestors.
    created: HashSet<PathBuf>,
    /// Host paths of directories marked opaque by this layer.
    opaque: Vec<PathBuf>,
    /// Directory mtimes to set once all entries are in place.
    dir_times: BTreeMap<PathBuf, FileTime>,
    stats: UnpackStats,
    /// Relative paths whose subtrees are left alone.
    skip: Vec<PathBuf>,
}

impl<'a> Unpacker<'a> {
    /// Starts applying a layer onto `rootfs`.
    fn new(rootfs: &'a Path) -> Self {
        Unpacker {
            rootfs,
            // SAFETY: geteuid has no preconditions and cannot fail.
            is_root: unsafe { libc::geteuid() } == 0,
            created: HashSet::new(),
            opaque: Vec::new(),
            dir_times: BTreeMap::new(),
            stats: UnpackStats::default(),
            skip: Vec::new(),
        }
    }

    /// Applies one tar entry.
    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<()> {
        self.stats.entries += 1;
        let raw = entry.path_bytes().into_owned();
        let rel = normalise_entry_path(&raw)?;
        if self.is_skipped(&rel) {
            return Ok(());
        }
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            return Ok(());
        }
        let Some(name) = rel.file_name().map(|n| n.to_os_string()) else {
            return self.apply_root(entry, &rel, kind);
        };
        if name.as_bytes().starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(&rel, name.as_bytes());
        }
        let parent = self.resolve_parent(&rel)?;
        fs::create_dir_all(&parent).map_err(io_err(&parent, "create parent directories"))?;
        let host = parent.join(&name);
        let pax = PaxInfo::read(entry, &rel)?;
        let made = match kind {
            EntryType::Regular | EntryType::Continuous => self.write_file(entry, &host)?,
            EntryType::Directory => self.make_dir(&host)?,
            EntryType::Symlink => self.make_symlink(entry, &rel, &host)?,
            EntryType::Link => {
                self.make_hardlink(entry, &rel, &host)?;
                self.mark_created(&host);
                return Ok(());
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.make_node(entry, &rel, &host, kind)?
            }
            other => {
                return Err(Error::BadEntry {
                    path: rel,
                    reason: format!("unsupported entry type {other:?}"),
                })
            }
        };
        if made {
            self.mark_created(&host);
            self.apply_metadata(entry, &rel, &host, kind, &pax)?;
        }
        Ok(())
    }

    /// Handles an entry naming the root itself (`./`): only a directory may.
    fn apply_root<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        rel: &Path,
        kind: EntryType,
    ) -> Result<()> {
        if kind != EntryType::Directory {
            return Err(Error::UnsafePath {
                path: rel.to_path_buf(),
                reason: "only a directory may stand for the root".into(),
            });
        }
        let pax = PaxInfo::read(entry, rel)?;
        let root = self.rootfs.to_path_buf();
        self.apply_metadata(entry, rel, &root, kind, &pax)
    }

    /// Resolves the parent directory of `rel` inside the rootfs.
    fn resolve_parent(&self, rel: &Path) -> Result<PathBuf> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        let host = resolve_in_root(self.rootfs, parent, true)?;
        if !host.starts_with(self.rootfs) {
            return Err(Error::UnsafePath {
                path: rel.to_path_buf(),
                reason: "resolves outside the root filesystem".into(),
            });
        }
        Ok(host)
    }

    /// Records `host` and its ancestors as present in this layer.
    fn mark_created(&mut self, host: &Path) {
        let rel = relative_to(self.rootfs, host);
        for ancestor in rel.ancestors() {
            if ancestor.as_os_str().is_empty() || !self.created.insert(ancestor.to_path_buf()) {
                break;
            }
        }
    }

    /// True if `host` was created by this layer.
    fn is_skipped(&self, rel: &Path) -> bool {
        self.skip.iter().any(|s| rel.starts_with(s))
    }

    fn is_created(&self, host: &Path) -> bool {
        self.created.contains(relative_to(self.rootfs, host))
    }

    /// Handles `.wh.NAME` and `.wh..wh..opq` entries.
    fn whiteout(&mut self, rel: &Path, name: &[u8]) -> Result<()> {
        let parent = self.resolve_parent(rel)?;
        if name == OPAQUE_MARKER {
            self.opaque.push(parent);
            return Ok(());
        }
        let victim = OsStr::from_bytes(&name[WHITEOUT_PREFIX.len()..]);
        if !is_plain_name(victim) {
            return Err(Error::UnsafePath {
                path: rel.to_path_buf(),
                reason: "whiteout does not name a plain file".into(),
            });
        }
        let host = parent.join(victim);
        if self.is_created(&host) || self.is_skipped(relative_to(self.rootfs, &host)) {
            return Ok(());
        }
        self.dir_times.remove(&host);
        remove_any(&host)
    }

    /// Clears `host` for a new entry; an existing directory is kept when
    /// `keep_dir` is set. Returns true if a directory was kept.
    fn clear_slot(&mut self, host: &Path, keep_dir: bool) -> Result<bool> {
        match fs::symlink_metadata(host) {
            Ok(meta) if meta.is_dir() && keep_dir => return Ok(true),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io(host, "lstat", e)),
        }
        self.dir_times.remove(host);
        remove_any(host)?;
        Ok(false)
    }

    /// Writes a regular file from the entry's data.
    fn write_file<R: Read>(&mut self, entry: &mut tar::Entry<R>, host: &Path) -> Result<bool> {
        self.clear_slot(host, false)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(host)
            .map_err(io_err(host, "create file"))?;
        let written = io::copy(entry, &mut file).map_err(io_err(host, "write file"))?;
        self.stats.bytes += written;
        Ok(true)
    }

    /// Creates a directory, or keeps an existing one.
    fn make_dir(&mut self, host: &Path) -> Result<bool> {
        if !self.clear_slot(host, true)? {
            fs::create_dir(host).map_err(io_err(host, "create directory"))?;
        }
        Ok(true)
    }

    /// Creates a symbolic link with the entry's target, verbatim.
    fn make_symlink<R: Read>(
        &mut self,
        entry: &tar::Entry<R>,
        rel: &Path,
        host: &Path,
    ) -> Result<bool> {
        let target = link_name(entry, rel)?;
        self.clear_slot(host, false)?;
        std::os::unix::fs::symlink(OsStr::from_bytes(&target), host)
            .map_err(io_err(host, "create symlink"))?;
        Ok(true)
    }

    /// Creates a hard link to an earlier path of the image.
    fn make_hardlink<R: Read>(
        &mut self,
        entry: &tar::Entry<R>,
        rel: &Path,
        host: &Path,
    ) -> Result<()> {
        let target = link_name(entry, rel)?;
        let source = resolve_in_root(self.rootfs, Path::new(OsStr::from_bytes(&target)), false)?;
        match fs::symlink_metadata(&source) {
            Ok(meta) if meta.is_dir() => {
                return Err(Error::BadEntry {
                    path: rel.to_path_buf(),
                    reason: "hard link to a directory".into(),
                })
            }
            Ok(_) => {}
            Err(_) => {
                return Err(Error::BadEntry {
                    path: rel.to_path_buf(),
                    reason: format!(
                        "hard link target {} does not exist",
                        String::from_utf8_lossy(&target)
                    ),
                })
            }
        }
        if source == host {
            return Ok(());
        }
        self.clear_slot(host, false)?;
        fs::hard_link(&source, host).map_err(io_err(host, "create hard link"))
    }

    /// Creates a device node or fifo. Returns false if `mknod` was not permitted.
    fn make_node<R: Read>(
        &mut self,
        entry: &tar::Entry<R>,
        rel: &Path,
        host: &Path,
        kind: EntryType,
    ) -> Result<bool> {
        let header = entry.header();
        let bad = |what: &str| Error::BadEntry {
            path: rel.to_path_buf(),
            reason: format!("invalid device {what} number"),
        };
        let (file_type, dev) = match kind {
            EntryType::Char | EntryType::Block => {
                let major = header.device_major().map_err(|_| bad("major"))?;
                let minor = header.device_minor().map_err(|_| bad("minor"))?;
                let file_type = if kind == EntryType::Char {
                    libc::S_IFCHR
                } else {
                    libc::S_IFBLK
                };
                let dev = libc::makedev(major.unwrap_or(0), minor.unwrap_or(0));
                (file_type, dev)
            }
            _ => (libc::S_IFIFO, 0),
        };
        self.clear_slot(host, false)?;
        let c = c_path(host)?;
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        let rc = unsafe { libc::mknod(c.as_ptr(), file_type | 0o600, dev) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EPERM) {
            self.stats.skipped_devices += 1;
            return Ok(false);
        }
        Err(Error::io(host, "mknod", err))
    }

    /// Applies ownership, mode, xattrs and times from the entry to `host`.
    fn apply_metadata<R: Read>(
        &mut self,
        entry: &tar::Entry<R>,
        rel: &Path,
        host: &Path,
        kind: EntryType,
        pax: &PaxInfo,
    ) -> Result<()> {
        let header = entry.header();
        let bad = |what: &str| Error::BadEntry {
            path: rel.to_path_buf(),
            reason: format!("invalid {what} in header"),
        };
        let uid = header.uid().map_err(|_| bad("uid"))?;
        let gid = header.gid().map_err(|_| bad("gid"))?;
        self.chown(host, rel, uid, gid)?;
        if kind != EntryType::Symlink {
            let mode = header.mode().map_err(|_| bad("mode"))? & 0o7777;
            fs::set_permissions(host, fs::Permissions::from_mode(mode))
                .map_err(io_err(host, "chmod"))?;
        }
        for (name, value) in &pax.xattrs {
            if xattr::set(host, name, value).is_err() {
                self.stats.xattr_failures += 1;
            }
        }
        let mtime = match pax.mtime {
            Some(t) => t,
            None => FileTime::from_unix_time(header.mtime().map_err(|_| bad("mtime"))? as i64, 0),
        };
        if kind == EntryType::Directory {
            self.dir_times.insert(host.to_path_buf(), mtime);
            return Ok(());
        }
        filetime::set_symlink_file_times(host, mtime, mtime).map_err(io_err(host, "set times"))
    }

    /// Changes the owner of `host` without following symlinks.
    fn chown(&mut self, host: &Path, rel: &Path, uid: u64, gid: u64) -> Result<()> {
        let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
            return Err(Error::BadEntry {
                path: rel.to_path_buf(),
                reason: format!("uid {uid} or gid {gid} out of range"),
            });
        };
        let c = c_path(host)?;
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        let rc = unsafe { libc::lchown(c.as_ptr(), uid, gid) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        let not_permitted = matches!(err.raw_os_error(), Some(libc::EPERM) | Some(libc::EINVAL));
        if not_permitted && !self.is_root {
            self.stats.chown_failures += 1;
            return Ok(());
        }
        Err(Error::io(host, "lchown", err))
    }

    /// Carries out opaque markers and directory times, then returns the counters.
    fn finish(mut self) -> Result<UnpackStats> {
        for dir in std::mem::take(&mut self.opaque) {
            self.prune_lower(&dir)?;
        }
        for (dir, mtime) in &self.dir_times {
            match fs::symlink_metadata(dir) {
                Ok(meta) if meta.is_dir() => {}
                _ => continue,
            }
            filetime::set_symlink_file_times(dir, *mtime, *mtime)
                .map_err(io_err(dir, "set directory times"))?;
        }
        Ok(self.stats)
    }

    /// Removes everything under `dir` that this layer did not create.
    fn prune_lower(&self, dir: &Path) -> Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(dir, "read directory", e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err(dir, "read directory"))?;
            let child = entry.path();
            let rel = relative_to(self.rootfs, &child);
            if self.is_skipped(rel) {
                continue;
            }
            let holds_skipped = self.skip.iter().any(|s| s.starts_with(rel));
            if !self.is_created(&child) && !holds_skipped {
                remove_any(&child)?;
                continue;
            }
            let is_dir = entry.file_type().map_err(io_err(&child, "lstat"))?.is_dir();
            if is_dir {
                self.prune_lower(&child)?;
            }
        }
        Ok(())
    }
}

/// The link name of a symlink or hard link entry.
fn link_name<R: Read>(entry: &tar::Entry<R>, rel: &Path) -> Result<Vec<u8>> {
    match entry.link_name_bytes() {
        Some(name) if !name.is_empty() => Ok(name.into_owned()),
        _ => Err(Error::BadEntry {
            path: rel.to_path_buf(),
            reason: "link entry without a link name".into(),
        }),
    }
}

#[cfg(test)]
mod tests;
