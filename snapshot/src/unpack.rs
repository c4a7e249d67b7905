//! Applying OCI layer tars onto a root filesystem directory.
//!
//! Follows the OCI image-spec layer rules: entries replace what is there,
//! `.wh.NAME` files delete `NAME` from lower layers, and `.wh..wh..opq`
//! empties a directory of everything lower layers put there.
//!
//! Every file operation goes through [`RootDir`]: an entry's parent directory is opened
//! (or created) inside the rootfs with symlinks resolved as if the rootfs were `/`, and the
//! entry is then written, removed, linked, chowned, chmodded and timestamped by name
//! relative to that directory descriptor, never following a symlink in its place. So
//! neither `..`, a symbolic link in the image (`a -> /etc`, then `a/passwd`), nor a link
//! swapped in concurrently can make a write land outside the rootfs. Hard links link the
//! entry they name (a symlink itself, never its target); xattrs are not set on symlinks.
//! Regular files keep their holes: blocks of zeros are not written ([`crate::sparse`]).

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use filetime::FileTime;
use tar::EntryType;

use crate::decompress::decompressed;
use crate::error::{io_err, Error, Result};
use crate::rootfd::{Dir, RootDir};
use crate::rootpath::{clean_relative, is_missing, is_plain_name};
use crate::sparse::write_sparse;

/// Prefix of whiteout file names.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Name of the opaque-directory marker.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// PAX record prefix for extended attributes.
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";
/// The extended attribute that marks an overlayfs directory opaque (in the namespace of
/// this process' mounts, see [`crate::overlay::XattrNamespace`]), and its value.
pub fn overlay_opaque_xattr() -> (&'static str, &'static [u8]) {
    (crate::overlay::XattrNamespace::current().opaque(), b"y")
}
/// Extended attribute namespaces overlayfs reads its own metadata from.
const OVERLAY_XATTR_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];

/// Counters describing one applied layer.
#[derive(Debug, Default, Clone)]
pub struct UnpackStats {
    /// Tar entries processed (whiteouts included).
    pub entries: u64,
    /// Bytes of regular-file data written.
    pub bytes: u64,
    /// Bytes the regular files and new directories take on disk (their blocks as `fstat`
    /// reports them right after writing; a hard link adds nothing).
    pub disk_bytes: u64,
    /// Device nodes not created because `mknod` was not permitted.
    pub skipped_devices: u64,
    /// Ownership changes that were not permitted (only when not running as root).
    pub chown_failures: u64,
    /// Extended attributes that could not be set.
    pub xattr_failures: u64,
}

/// What a layer is written as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnpackFormat {
    /// Applied onto a root filesystem: a whiteout removes what lower layers put there and
    /// an opaque marker empties its directory of it.
    #[default]
    Apply,
    /// Extracted alone into an empty directory, as an overlayfs lower directory: a
    /// whiteout `.wh.NAME` becomes a character device `NAME` with device number 0/0 (mode
    /// 0) and an opaque marker `.wh..wh..opq` the extended attribute
    /// `trusted.overlay.opaque=y` (`user.overlay.opaque=y` in a user namespace) on its
    /// directory; extended attributes of the layer in
    /// the `trusted.overlay.` and `user.overlay.` namespaces are dropped, since overlayfs
    /// would obey them. Paths are resolved within this one layer: a symlink a lower layer
    /// put on the way is not seen (as with every overlay-based unpacker).
    OverlayLower,
}

/// Settings for [`unpack_layer_with`].
#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    /// What the layer is written as.
    pub format: UnpackFormat,
    /// Paths (relative to the destination) whose subtrees are left alone: not written,
    /// not removed by whiteouts or opaque markers.
    pub skip: Vec<PathBuf>,
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
    let reader = decompressed(file).map_err(io_err(path, "read layer"))?;
    let options = UnpackOptions {
        format: UnpackFormat::Apply,
        skip: skip.to_vec(),
    };
    unpack_layer_with(reader, rootfs, &options).map_err(|e| match e {
        Error::TarRead { source } => Error::io(path, "read layer", source),
        other => other,
    })
}

/// Applies the layer directory `dir` (overlayfs lower-dir format: whiteouts are character
/// devices 0/0, opaque directories are marked `trusted.overlay.opaque=y`) onto `rootfs`,
/// leaving the `skip` paths alone as [`unpack_layer_file_skipping`] does. The directory is
/// streamed through the layer writer's tar into the unpacker, so its entries are applied
/// exactly as the same layer's tar would be.
pub fn unpack_layer_dir(dir: &Path, rootfs: &Path, skip: &[PathBuf]) -> Result<UnpackStats> {
    let changes = crate::overlay::format::read_layer_dir(dir)?;
    let (reader, writer) = nix::unistd::pipe().map_err(|e| Error::io(dir, "pipe", e.into()))?;
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || {
            let out = io::BufWriter::with_capacity(64 * 1024, File::from(writer));
            let out = crate::layer::write_tar_stream(dir, &changes, out)?;
            out.into_inner()
                .map(drop)
                .map_err(|e| Error::io(dir, "write layer stream", e.into_error()))
        });
        let reader = io::BufReader::with_capacity(64 * 1024, File::from(reader));
        let options = UnpackOptions {
            format: UnpackFormat::Apply,
            skip: skip.to_vec(),
        };
        let unpacked = unpack_layer_with(reader, rootfs, &options);
        // The reader is closed now, so a producer still writing stops with EPIPE.
        let produced = producer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        match (produced, unpacked) {
            (Err(e), _) => Err(e),
            (Ok(()), unpacked) => unpacked,
        }
    })
}

/// Applies one uncompressed layer tar from `tar_stream` onto `rootfs`.
pub fn unpack_layer<R: Read>(tar_stream: R, rootfs: &Path) -> Result<UnpackStats> {
    unpack_layer_with(tar_stream, rootfs, &UnpackOptions::default())
}

/// Writes one uncompressed layer tar from `tar_stream` into `dest` as `options` say. The
/// stream is read up to the end-of-archive marker, not necessarily to its end.
pub fn unpack_layer_with<R: Read>(
    tar_stream: R,
    dest: &Path,
    options: &UnpackOptions,
) -> Result<UnpackStats> {
    let mut archive = tar::Archive::new(tar_stream);
    let mut unpacker = Unpacker::new(dest, options)?;
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

/// Where an entry goes: `name` in the directory `dir`, held open; `path` is that entry's
/// resolved path inside the rootfs (plain names only), used for bookkeeping and messages.
struct Slot {
    dir: Dir,
    name: OsString,
    path: PathBuf,
}

/// True if `e` is an I/O error with OS error `errno`.
fn is_errno(e: &Error, errno: i32) -> bool {
    matches!(e, Error::Io { source, .. } if source.raw_os_error() == Some(errno))
}

/// True if `e` says that something does not exist.
fn is_missing_err(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if is_missing(source))
}

/// State kept while one layer is applied.
struct Unpacker {
    root: RootDir,
    is_root: bool,
    /// Paths (relative to rootfs, resolved) created by this layer, and their ancestors.
    created: HashSet<PathBuf>,
    /// Resolved paths of directories marked opaque by this layer.
    opaque: Vec<PathBuf>,
    /// Directory mtimes (by resolved path) to set once all entries are in place.
    dir_times: BTreeMap<PathBuf, FileTime>,
    stats: UnpackStats,
    /// Relative paths whose subtrees are left alone.
    skip: Vec<PathBuf>,
    /// What the layer is written as.
    format: UnpackFormat,
}

impl Unpacker {
    /// Starts writing a layer into `rootfs` as `options` say.
    fn new(rootfs: &Path, options: &UnpackOptions) -> Result<Self> {
        Ok(Unpacker {
            root: RootDir::open(rootfs)?,
            is_root: nix::unistd::geteuid().is_root(),
            created: HashSet::new(),
            opaque: Vec::new(),
            dir_times: BTreeMap::new(),
            stats: UnpackStats::default(),
            skip: options.skip.clone(),
            format: options.format,
        })
    }

    /// The host path of `path` (inside the rootfs), for messages only.
    fn shown(&self, path: &Path) -> PathBuf {
        self.root.host_path().join(path)
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
        let parent = rel.parent().unwrap_or(Path::new(""));
        let dir = self.root.create_dir_all(parent, 0o755)?;
        let path = dir.rel().join(&name);
        let slot = Slot { dir, name, path };
        let pax = PaxInfo::read(entry, &rel)?;
        let made = match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.write_file(entry, &slot)?
            }
            EntryType::Directory => self.make_dir(&slot)?,
            EntryType::Symlink => self.make_symlink(entry, &rel, &slot)?,
            EntryType::Link => {
                self.make_hardlink(entry, &rel, &slot)?;
                self.mark_created(&slot.path);
                return Ok(());
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.make_node(entry, &rel, &slot, kind)?
            }
            other => {
                return Err(Error::BadEntry {
                    path: rel,
                    reason: format!("unsupported entry type {other:?}"),
                })
            }
        };
        if made {
            self.mark_created(&slot.path);
            self.apply_metadata(entry, &rel, &slot, kind, &pax)?;
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
        let slot = Slot {
            dir: self.root.as_dir().try_clone()?,
            name: OsString::from("."),
            path: PathBuf::new(),
        };
        self.apply_metadata(entry, rel, &slot, kind, &pax)
    }

    /// Records `path` (resolved, inside the rootfs) and its ancestors as present in this
    /// layer.
    fn mark_created(&mut self, path: &Path) {
        for ancestor in path.ancestors() {
            if ancestor.as_os_str().is_empty() || !self.created.insert(ancestor.to_path_buf()) {
                break;
            }
        }
    }

    /// True if `rel` is at or below a skipped path.
    fn is_skipped(&self, rel: &Path) -> bool {
        self.skip.iter().any(|s| rel.starts_with(s))
    }

    /// True if `path` (resolved) was created by this layer.
    fn is_created(&self, path: &Path) -> bool {
        self.created.contains(path)
    }

    /// Handles `.wh.NAME` and `.wh..wh..opq` entries.
    fn whiteout(&mut self, rel: &Path, name: &[u8]) -> Result<()> {
        if self.format == UnpackFormat::OverlayLower {
            return self.overlay_whiteout(rel, name);
        }
        let parent = self
            .root
            .resolve(rel.parent().unwrap_or(Path::new("")), true)?;
        if name == OPAQUE_MARKER {
            self.opaque.push(parent);
            return Ok(());
        }
        let path = parent.join(whiteout_victim(rel, name)?);
        if self.is_created(&path) || self.is_skipped(&path) {
            return Ok(());
        }
        self.dir_times.remove(&path);
        match self.root.open_parent(&path) {
            Ok((dir, name)) => dir.remove_all(&name),
            Err(e) if is_missing_err(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes a whiteout as overlayfs does: `.wh.NAME` as the character device 0/0 `NAME`
    /// (unless this layer has its own `NAME`, which wins as in [`UnpackFormat::Apply`]),
    /// `.wh..wh..opq` as an opaque directory, marked in [`Unpacker::finish`].
    fn overlay_whiteout(&mut self, rel: &Path, name: &[u8]) -> Result<()> {
        let victim = match name == OPAQUE_MARKER {
            true => None,
            false => Some(whiteout_victim(rel, name)?),
        };
        let dir = self
            .root
            .create_dir_all(rel.parent().unwrap_or(Path::new("")), 0o755)?;
        let Some(victim) = victim else {
            self.opaque.push(dir.rel().to_path_buf());
            return Ok(());
        };
        if dir.lstat(victim)?.is_some() {
            return Ok(());
        }
        dir.mknod(victim, libc::S_IFCHR, 0)
    }

    /// Clears the slot for a new entry; an existing directory is kept when `keep_dir` is
    /// set. Returns true if a directory was kept.
    fn clear_slot(&mut self, slot: &Slot, keep_dir: bool) -> Result<bool> {
        match slot.dir.lstat(&slot.name)? {
            Some(meta) if meta.is_dir() && keep_dir => return Ok(true),
            Some(_) => {}
            None => return Ok(false),
        }
        self.dir_times.remove(&slot.path);
        slot.dir.remove_all(&slot.name)?;
        Ok(false)
    }

    /// Writes a regular file from the entry's data, blocks of zeros left as holes (a GNU
    /// sparse entry reads as its holes' zeros).
    fn write_file<R: Read>(&mut self, entry: &mut tar::Entry<R>, slot: &Slot) -> Result<bool> {
        self.clear_slot(slot, false)?;
        let file = slot.dir.create_file(&slot.name, 0o600)?;
        let shown = self.shown(&slot.path);
        let written = write_sparse(entry, &file).map_err(io_err(&shown, "write file"))?;
        self.stats.bytes += written;
        let meta = file.metadata().map_err(io_err(&shown, "stat file"))?;
        self.stats.disk_bytes += meta.blocks() * 512;
        Ok(true)
    }

    /// Creates a directory, or keeps an existing one.
    fn make_dir(&mut self, slot: &Slot) -> Result<bool> {
        if !self.clear_slot(slot, true)? {
            slot.dir.mkdir(&slot.name, 0o755)?;
            let blocks = slot.dir.lstat(&slot.name)?.map_or(0, |m| m.blocks());
            self.stats.disk_bytes += blocks * 512;
        }
        Ok(true)
    }

    /// Creates a symbolic link with the entry's target, verbatim.
    fn make_symlink<R: Read>(
        &mut self,
        entry: &tar::Entry<R>,
        rel: &Path,
        slot: &Slot,
    ) -> Result<bool> {
        let target = link_name(entry, rel)?;
        self.clear_slot(slot, false)?;
        slot.dir
            .symlink(Path::new(OsStr::from_bytes(&target)), &slot.name)?;
        Ok(true)
    }

    /// Creates a hard link to an earlier path of the image (a symlink there is linked
    /// itself, never followed).
    fn make_hardlink<R: Read>(
        &mut self,
        entry: &tar::Entry<R>,
        rel: &Path,
        slot: &Slot,
    ) -> Result<()> {
        let target = link_name(entry, rel)?;
        let source = self
            .root
            .resolve(Path::new(OsStr::from_bytes(&target)), false)?;
        let bad = |reason: String| Error::BadEntry {
            path: rel.to_path_buf(),
            reason,
        };
        let missing = || {
            bad(format!(
                "hard link target {} does not exist",
                String::from_utf8_lossy(&target)
            ))
        };
        let (from, name) = self.root.open_parent(&source).map_err(|_| missing())?;
        match from.lstat(&name) {
            Ok(Some(meta)) if meta.is_dir() => return Err(bad("hard link to a directory".into())),
            Ok(Some(_)) => {}
            _ => return Err(missing()),
        }
        if source == slot.path {
            return Ok(());
        }
        self.clear_slot(slot, false)?;
        from.hard_link(&name, &slot.dir, &slot.name)
    }

    /// Creates a device node or fifo. Returns false if `mknod` was not permitted.
    fn make_node<R: Read>(
        &mut self,
        entry: &tar::Entry<R>,
        rel: &Path,
        slot: &Slot,
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
        self.clear_slot(slot, false)?;
        match slot.dir.mknod(&slot.name, file_type | 0o600, dev) {
            Ok(()) => Ok(true),
            Err(e) if is_errno(&e, libc::EPERM) => {
                self.stats.skipped_devices += 1;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Applies ownership, mode, xattrs and times from the entry to the slot, never
    /// following a symlink there.
    fn apply_metadata<R: Read>(
        &mut self,
        entry: &tar::Entry<R>,
        rel: &Path,
        slot: &Slot,
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
        self.chown(slot, rel, uid, gid)?;
        if kind != EntryType::Symlink {
            let mode = header.mode().map_err(|_| bad("mode"))? & 0o7777;
            slot.dir.chmod(&slot.name, mode)?;
        }
        for (name, value) in &pax.xattrs {
            if self.format == UnpackFormat::OverlayLower && is_overlay_xattr(name) {
                continue;
            }
            if slot.dir.set_xattr(&slot.name, name, value).is_err() {
                self.stats.xattr_failures += 1;
            }
        }
        let mtime = match pax.mtime {
            Some(t) => t,
            None => FileTime::from_unix_time(header.mtime().map_err(|_| bad("mtime"))? as i64, 0),
        };
        if kind == EntryType::Directory {
            self.dir_times.insert(slot.path.clone(), mtime);
            return Ok(());
        }
        slot.dir.set_times(&slot.name, mtime, mtime)
    }

    /// Changes the owner of the slot without following a symlink.
    fn chown(&mut self, slot: &Slot, rel: &Path, uid: u64, gid: u64) -> Result<()> {
        let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
            return Err(Error::BadEntry {
                path: rel.to_path_buf(),
                reason: format!("uid {uid} or gid {gid} out of range"),
            });
        };
        match slot.dir.chown(&slot.name, uid, gid) {
            Ok(()) => Ok(()),
            Err(e)
                if !self.is_root && (is_errno(&e, libc::EPERM) || is_errno(&e, libc::EINVAL)) =>
            {
                self.stats.chown_failures += 1;
                Ok(())
            }
            Err(e) if is_errno(&e, libc::EINVAL) && !crate::is_host_root() => {
                Err(Error::UnmappedId {
                    path: rel.to_path_buf(),
                    uid,
                    gid,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Carries out opaque markers and directory times, then returns the counters.
    fn finish(mut self) -> Result<UnpackStats> {
        for path in std::mem::take(&mut self.opaque) {
            let dir = match self.root.open_dir(&path) {
                Ok(dir) => dir,
                Err(e) if is_missing_err(&e) || is_errno(&e, libc::ENOTDIR) => continue,
                Err(e) => return Err(e),
            };
            match self.format {
                UnpackFormat::Apply => self.prune_lower(&dir, &path)?,
                UnpackFormat::OverlayLower => {
                    let (key, value) = overlay_opaque_xattr();
                    dir.set_xattr(OsStr::new("."), OsStr::new(key), value)?;
                }
            }
        }
        for (path, mtime) in &self.dir_times {
            let Ok((dir, name)) = self.root.open_parent(path) else {
                continue;
            };
            match dir.lstat(&name) {
                Ok(Some(meta)) if meta.is_dir() => {}
                _ => continue,
            }
            dir.set_times(&name, *mtime, *mtime)?;
        }
        Ok(self.stats)
    }

    /// Removes everything in `dir` (at the resolved `path`) that this layer did not create.
    fn prune_lower(&self, dir: &Dir, path: &Path) -> Result<()> {
        for name in dir.names()? {
            let child = path.join(&name);
            if self.is_skipped(&child) {
                continue;
            }
            let holds_skipped = self.skip.iter().any(|s| s.starts_with(&child));
            if !self.is_created(&child) && !holds_skipped {
                dir.remove_all(&name)?;
                continue;
            }
            if dir.lstat(&name)?.is_some_and(|m| m.is_dir()) {
                self.prune_lower(&dir.open_dir(&name)?, &child)?;
            }
        }
        Ok(())
    }
}

/// The name a whiteout entry `rel` (file name `name`, `.wh.` included) removes, checked to
/// be a plain name.
fn whiteout_victim<'a>(rel: &Path, name: &'a [u8]) -> Result<&'a OsStr> {
    let victim = OsStr::from_bytes(&name[WHITEOUT_PREFIX.len()..]);
    if !is_plain_name(victim) {
        return Err(Error::UnsafePath {
            path: rel.to_path_buf(),
            reason: "whiteout does not name a plain file".into(),
        });
    }
    Ok(victim)
}

/// True if the extended attribute `name` is one overlayfs reads its own metadata from.
fn is_overlay_xattr(name: &OsStr) -> bool {
    OVERLAY_XATTR_PREFIXES
        .iter()
        .any(|prefix| name.as_bytes().starts_with(prefix))
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
