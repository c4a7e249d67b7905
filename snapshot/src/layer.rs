//! Writing a layer file from a set of [`Changes`].
//!
//! The layer is produced in one streaming pass: tar writer → hasher (diff ID)
//! → compressor → hasher (digest) → temporary file, which is synced and then
//! named by its digest. Nothing holds the whole layer in memory; compression runs on
//! several threads ([`crate::compress`]) with output that does not depend on their number.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::compress::{compression_threads, zstd_encoder, ParallelGzip};
use crate::error::{io_err, Error, Result};
use crate::rootpath::clean_relative;
use crate::tarwriter::{EntryHeader, EntryKind, TarWriter};
use crate::walk::Changes;
use ocibuild_image::digest::HashingWriter;

/// Name of the opaque-directory marker entry.
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Prefix of whiteout entry names.
const WHITEOUT_PREFIX: &str = ".wh.";

/// The gzip level of [`Compression::default`].
///
/// The gzip bytes decide digests: with [`crate::compress::GZIP_BLOCK_SIZE`] this pins the
/// bytes of every default layer, so the same tree gives the same digest on every machine.
pub const DEFAULT_GZIP_LEVEL: u32 = 6;

/// How a layer file is compressed.
///
/// The level is pinned by the caller because the compressed bytes decide
/// the layer digest: the same tree must give the same digest every time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip at `level` (0–9).
    Gzip {
        /// Compression level, 0 (store) to 9 (best).
        level: u32,
    },
    /// zstd at `level`.
    Zstd {
        /// Compression level as understood by libzstd (1–22, or negative for fast modes).
        level: i32,
    },
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip {
            level: DEFAULT_GZIP_LEVEL,
        }
    }
}

impl Compression {
    /// OCI media type of a layer with this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip { .. } => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd { .. } => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// Docker schema2 media type of a layer with this compression; zstd has
    /// no Docker type, so the OCI one is returned for it.
    pub fn docker_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.docker.image.rootfs.diff.tar",
            Compression::Gzip { .. } => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            Compression::Zstd { .. } => self.oci_media_type(),
        }
    }

    /// Checks that the level is one the compressor accepts.
    fn validate(self) -> Result<()> {
        match self {
            Compression::None => Ok(()),
            Compression::Gzip { level } if level <= 9 => Ok(()),
            Compression::Gzip { level } => Err(Error::InvalidOption(format!(
                "gzip level {level} is out of range 0-9"
            ))),
            Compression::Zstd { level } if zstd::compression_level_range().contains(&level) => {
                Ok(())
            }
            Compression::Zstd { level } => Err(Error::InvalidOption(format!(
                "zstd level {level} is out of range {:?}",
                zstd::compression_level_range()
            ))),
        }
    }
}

/// Settings for [`write_layer`].
#[derive(Debug, Clone, Default)]
pub struct LayerOptions {
    /// How to compress the layer.
    pub compression: Compression,
    /// When set, every entry's mtime is this (reproducible builds)
    pub mtime: Option<u64>,
}

/// What [`write_layer`] produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// `sha256:<hex>` of the layer file as written (compressed).
    pub digest: String,
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    /// Size of the layer file in bytes.
    pub size: u64,
    /// Where the layer file is.
    pub path: PathBuf,
    /// How it is compressed.
    pub compression: Compression,
}

impl LayerInfo {
    /// OCI media type for this compression, e.g. `application/vnd.oci.image.layer.v1.tar+gzip`.
    pub fn oci_media_type(&self) -> &'static str {
        self.compression.oci_media_type()
    }

    /// Docker schema2 media type (`application/vnd.docker.image.rootfs.diff.tar.gzip`;
    /// zstd has only the OCI one, which is returned instead).
    pub fn docker_media_type(&self) -> &'static str {
        self.compression.docker_media_type()
    }

    /// Checks that the file at [`LayerInfo::path`] has exactly the recorded digest and
    /// size ([`Error::CorruptLayer`] otherwise), by hashing it.
    pub fn verify(&self) -> Result<()> {
        let size = fs::metadata(&self.path)
            .map_err(io_err(&self.path, "stat layer file"))?
            .len();
        let (digest, _) = ocibuild_image::digest::sha256_file(&self.path)
            .map_err(io_err(&self.path, "read layer file"))?;
        if digest == self.digest && size == self.size {
            return Ok(());
        }
        Err(Error::CorruptLayer {
            path: self.path.clone(),
            expected: format!("{} ({} bytes)", self.digest, self.size),
            found: format!("{digest} ({size} bytes)"),
        })
    }
}

/// Writes the layer for `changes` of `rootfs` into the directory `dir`, as a file named by
/// its digest (`sha256-<hex>`, see [`layer_file_name`]).
///
/// Entries come in path order with parents first; every ancestor directory of
/// a changed path is included with its current metadata. Deletions become
/// `.wh.NAME` entries and opaque directories get a `.wh..wh..opq` entry.
///
/// The bytes go to a temporary file of this call alone (created exclusively), which is
/// synced and only then given its digest name; a file already there under that name has
/// the same bytes and is kept. So a digest-named file is complete, and nothing writes to
/// it afterwards: two layers can never share a file, whatever else they have in common.
pub fn write_layer(
    rootfs: &Path,
    changes: &Changes,
    dir: &Path,
    opts: &LayerOptions,
) -> Result<LayerInfo> {
    opts.compression.validate()?;
    let plan = plan_entries(changes)?;
    let (tmp, file) = create_temp(dir)?;
    let written =
        write_file(rootfs, &plan, file, &tmp, opts).and_then(|(digest, diff_id, size)| {
            let out = dir.join(layer_file_name(&digest));
            publish(&tmp, &out)?;
            Ok(LayerInfo {
                digest,
                diff_id,
                size,
                path: out,
                compression: opts.compression,
            })
        });
    let _ = fs::remove_file(&tmp);
    written
}

/// The file name of a layer with `digest` (`sha256:<hex>` → `sha256-<hex>`).
pub fn layer_file_name(digest: &str) -> String {
    digest.replace(':', "-")
}

/// Creates a new, exclusively owned temporary file in `dir` (read-only for everyone once
/// closed: layer files are never rewritten).
fn create_temp(dir: &Path) -> Result<(PathBuf, File)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".layer-{}-{n}.tmp", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&tmp, "create layer file", e)),
        }
    }
}

/// Gives the complete file `tmp` the name `out`, unless a file of that name (the same
/// digest, so the same bytes) is already there; `tmp` itself is left for the caller.
fn publish(tmp: &Path, out: &Path) -> Result<()> {
    match fs::hard_link(tmp, out) {
        Ok(()) => {
            sync_parent(out);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io(out, "name the layer file by its digest", e)),
    }
}

/// Syncs the directory holding `path` so the rename is durable (best effort).
fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
}

/// Writes the compressed layer to `file` (the temporary file `tmp`); returns digest, diff
/// ID and size.
fn write_file(
    rootfs: &Path,
    plan: &Plan,
    file: File,
    tmp: &Path,
    opts: &LayerOptions,
) -> Result<(String, String, u64)> {
    let counted = HashingWriter::new(BufWriter::with_capacity(256 * 1024, file));
    let (counted, diff_id) = match opts.compression {
        Compression::None => write_tar(rootfs, plan, opts, counted)?,
        Compression::Gzip { level } => {
            let encoder = ParallelGzip::new(counted, level, compression_threads())
                .map_err(io_err(tmp, "start gzip"))?;
            let (encoder, diff_id) = write_tar(rootfs, plan, opts, encoder)?;
            let counted = encoder.finish().map_err(io_err(tmp, "finish gzip"))?;
            (counted, diff_id)
        }
        Compression::Zstd { level } => {
            let encoder = zstd_encoder(counted, level, compression_threads())
                .map_err(io_err(tmp, "start zstd"))?;
            let (encoder, diff_id) = write_tar(rootfs, plan, opts, encoder)?;
            let counted = encoder.finish().map_err(io_err(tmp, "finish zstd"))?;
            (counted, diff_id)
        }
    };
    let (buffered, digest, size) = counted.finish();
    let file = buffered
        .into_inner()
        .map_err(|e| Error::io(tmp, "write layer file", e.into_error()))?;
    file.sync_all().map_err(io_err(tmp, "fsync layer file"))?;
    Ok((digest, diff_id, size))
}

/// Writes the tar stream for `plan` into `out`; returns `out` and the diff ID.
fn write_tar<W: Write>(
    rootfs: &Path,
    plan: &Plan,
    opts: &LayerOptions,
    out: W,
) -> Result<(W, String)> {
    let mut tar = TarWriter::new(HashingWriter::new(out));
    let mut writer = EntryWriter {
        rootfs,
        opts,
        first_links: HashMap::new(),
        non_dirs: HashSet::new(),
    };
    for (path, item) in plan {
        writer.write_item(&mut tar, path, *item)?;
    }
    let hashing = tar.finish().map_err(io_err(rootfs, "finish layer tar"))?;
    let (out, diff_id, _) = hashing.finish();
    Ok((out, diff_id))
}

/// Writes the uncompressed tar of `changes` of `rootfs` into `out` and returns `out`: the
/// same entries [`write_layer`] writes, used to stream a layer directory into the unpacker.
pub(crate) fn write_tar_stream<W: Write>(rootfs: &Path, changes: &Changes, out: W) -> Result<W> {
    let plan = plan_entries(changes)?;
    let opts = LayerOptions {
        compression: Compression::None,
        mtime: None,
    };
    write_tar(rootfs, &plan, &opts, out).map(|(out, _)| out)
}

/// What one planned tar entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    /// The path as it is now in the rootfs.
    Current,
    /// A `.wh.NAME` or `.wh..wh..opq` marker.
    Whiteout,
}

/// Entries of a layer by tar path; `BTreeMap` order puts parents before children.
type Plan = BTreeMap<PathBuf, Item>;

/// Works out every entry of the layer, in order.
fn plan_entries(changes: &Changes) -> Result<Plan> {
    let mut plan = Plan::new();
    for path in changes.upserts.iter().chain(&changes.opaque_dirs) {
        let path = clean_relative(path, "changed path")?;
        if !path.as_os_str().is_empty() {
            add_with_ancestors(&mut plan, &path);
        }
    }
    for dir in &changes.opaque_dirs {
        let dir = clean_relative(dir, "changed path")?;
        plan.insert(dir.join(OPAQUE_MARKER), Item::Whiteout);
    }
    for path in &changes.deletions {
        let path = clean_relative(path, "changed path")?;
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(Error::UnsafePath {
                path,
                reason: "the root itself cannot be deleted".into(),
            });
        };
        add_ancestors(&mut plan, &path);
        let mut marker = OsString::from(WHITEOUT_PREFIX);
        marker.push(name);
        plan.insert(parent.join(marker), Item::Whiteout);
    }
    Ok(plan)
}

/// Adds `path` as a current entry along with its ancestors.
fn add_with_ancestors(plan: &mut Plan, path: &Path) {
    add_ancestors(plan, path);
    plan.insert(path.to_path_buf(), Item::Current);
}

/// Adds the proper ancestors of `path` (not the root) as current entries.
fn add_ancestors(plan: &mut Plan, path: &Path) {
    for ancestor in path.ancestors().skip(1) {
        if ancestor.as_os_str().is_empty() {
            break;
        }
        plan.entry(ancestor.to_path_buf()).or_insert(Item::Current);
    }
}

/// Turns planned items into tar entries, remembering hard-linked inodes.
struct EntryWriter<'a> {
    rootfs: &'a Path,
    opts: &'a LayerOptions,
    /// Tar path of the first entry written for each multiply-linked inode.
    first_links: HashMap<(u64, u64), Vec<u8>>,
    /// Planned paths found not to be directories; nothing may be read below them.
    non_dirs: HashSet<PathBuf>,
}

impl EntryWriter<'_> {
    /// Writes one planned item.
    fn write_item<W: Write>(
        &mut self,
        tar: &mut TarWriter<W>,
        path: &Path,
        item: Item,
    ) -> Result<()> {
        self.check_parent(path)?;
        if item == Item::Whiteout {
            return tar.append(&self.whiteout_header(path), &mut io::empty());
        }
        // Read only, after the command finished: `path` comes from the walk (plain names),
        // and nothing is written through it.
        let host = self.rootfs.join(path);
        let meta = fs::symlink_metadata(&host).map_err(io_err(&host, "lstat"))?;
        if !meta.is_dir() {
            self.non_dirs.insert(path.to_path_buf());
        }
        let Some(header) = self.header_for(path, &host, &meta)? else {
            return Ok(());
        };
        if header.kind != EntryKind::File {
            return tar.append(&header, &mut io::empty());
        }
        let mut file = File::open(&host).map_err(io_err(&host, "open"))?;
        tar.append(&header, &mut file)
    }

    /// Refuses paths below a symlink or file: reading them would follow the
    /// symlink, possibly out of the rootfs. Parents come first in the plan,
    /// so checking the direct parent is enough.
    fn check_parent(&self, path: &Path) -> Result<()> {
        match path.parent() {
            Some(parent) if self.non_dirs.contains(parent) => Err(Error::UnsafePath {
                path: path.to_path_buf(),
                reason: format!("parent {} is not a directory", parent.display()),
            }),
            _ => Ok(()),
        }
    }

    /// Header of a whiteout marker: an empty file owned by root, mode 0.
    fn whiteout_header(&self, path: &Path) -> EntryHeader {
        let mut header = EntryHeader::new(path.as_os_str().as_bytes().to_vec(), EntryKind::File);
        header.mtime = self.opts.mtime.unwrap_or(0);
        header
    }

    /// Header describing `host` as it is now; `None` for sockets.
    fn header_for(
        &mut self,
        path: &Path,
        host: &Path,
        meta: &Metadata,
    ) -> Result<Option<EntryHeader>> {
        let mut name = path.as_os_str().as_bytes().to_vec();
        let file_type = meta.mode() & libc::S_IFMT;
        let kind = match file_type {
            libc::S_IFREG => EntryKind::File,
            libc::S_IFDIR => EntryKind::Directory,
            libc::S_IFLNK => EntryKind::Symlink,
            libc::S_IFCHR => EntryKind::CharDevice,
            libc::S_IFBLK => EntryKind::BlockDevice,
            libc::S_IFIFO => EntryKind::Fifo,
            _ => return Ok(None),
        };
        if kind == EntryKind::Directory {
            name.push(b'/');
        }
        let mut header = EntryHeader::new(name, kind);
        header.mode = meta.mode() & 0o7777;
        header.uid = u64::from(meta.uid());
        header.gid = u64::from(meta.gid());
        header.mtime = self
            .opts
            .mtime
            .unwrap_or_else(|| u64::try_from(meta.mtime()).unwrap_or(0));
        header.xattrs = read_xattrs(host)?;
        match kind {
            EntryKind::File => self.fill_file(&mut header, meta),
            EntryKind::Symlink => {
                let target = fs::read_link(host).map_err(io_err(host, "readlink"))?;
                header.link_name = target.into_os_string().into_vec();
            }
            EntryKind::CharDevice | EntryKind::BlockDevice => {
                header.dev_major = libc::major(meta.rdev());
                header.dev_minor = libc::minor(meta.rdev());
            }
            _ => {}
        }
        Ok(Some(header))
    }

    /// Sets size, or turns the entry into a hard link to an inode already written.
    fn fill_file(&mut self, header: &mut EntryHeader, meta: &Metadata) {
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.first_links.get(&key) {
                header.kind = EntryKind::HardLink;
                header.link_name = first.clone();
                return;
            }
            self.first_links.insert(key, header.path.clone());
        }
        header.size = meta.len();
    }
}

/// True for extended attributes that go into layers: `security.capability` and `user.*`
/// but overlayfs' own `user.overlay.*` (its marks in a user namespace, which unpacking
/// drops too), so that a rootless build's layers are a root build's.
fn wanted_xattr(name: &[u8]) -> bool {
    name == b"security.capability"
        || (name.starts_with(b"user.") && !name.starts_with(b"user.overlay."))
}

/// Reads the wanted extended attributes of `host` (not following symlinks),
/// sorted by name. A filesystem without xattr support gives none.
pub(crate) fn read_xattrs(host: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let names = match xattr::list(host) {
        Ok(names) => names,
        Err(e) if is_unsupported(&e) => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(host, "list xattrs", e)),
    };
    let mut out = Vec::new();
    for name in names {
        if !wanted_xattr(name.as_bytes()) {
            continue;
        }
        let value = match xattr::get(host, &name) {
            Ok(Some(value)) => value,
            Ok(None) => continue,
            Err(e) if is_unsupported(&e) => continue,
            Err(e) => return Err(Error::io(host, "read xattr", e)),
        };
        out.push((name.into_vec(), value));
    }
    out.sort();
    Ok(out)
}

/// True for errors meaning "no xattrs here" rather than a real failure.
pub(crate) fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOTSUP) | Some(libc::ENODATA) | Some(libc::EPERM)
    )
}

#[cfg(test)]
mod tests;
