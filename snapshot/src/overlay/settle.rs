//! Making a committed upper directory the extraction of its own layer, so that it can be
//! stacked under any later step, stage or build as that layer ([`crate::LayerStore::adopt`]).
//!
//! An upper directory holds the step's layer plus what overlayfs leaves that is not part
//! of it (see the `upper` module): whiteouts for names the lowers do not have, opaque
//! marks where nothing below is hidden, directories copied up only to hold such entries,
//! sockets. Over the lowers of the step these change nothing, so [`settle_upper`] removes
//! them at once; what is left holds exactly the entries the layer's tar does, as the layer
//! store would extract them. The tar's timestamps are the entries' own, unless the layer
//! was written with a fixed mtime ([`crate::LayerOptions::mtime`]): the steps after it see
//! the real ones, as with the walk snapshotter, and [`set_mtimes`] gives the directory the
//! tar's once no step reads it any more.

use std::fs::{self, Metadata};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use filetime::FileTime;

use crate::error::{io_err, Error, Result};
use crate::layer::is_unsupported;
use crate::overlay::format::{kind_of, opaque_xattr, Kind};
use crate::walk::Changes;

/// Removes from the committed upper directory `upper` every entry that is not in the layer
/// written from `changes` (which [`crate::Snapshotter::diff`] found in it): whiteouts that
/// are not deletions, opaque marks of directories that are not opaque, sockets, and
/// directories that are neither upserts nor hold anything of the layer.
pub fn settle_upper(upper: &Path, changes: &Changes) -> Result<()> {
    settle_dir(upper, Path::new(""), changes).map(drop)
}

/// Settles the directory `rel` of `upper`; true if anything of the layer is left in it.
fn settle_dir(upper: &Path, rel: &Path, changes: &Changes) -> Result<bool> {
    // Only this process touches a committed upper directory: it is no step's rootfs any
    // more, and `rel` has plain names found by this walk.
    let host = upper.join(rel);
    let mut kept = false;
    for entry in fs::read_dir(&host).map_err(io_err(&host, "read directory"))? {
        let entry = entry.map_err(io_err(&host, "read directory"))?;
        let child = rel.join(entry.file_name());
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(io_err(&path, "lstat"))?;
        let keep = match kind_of(&path, &meta, false)? {
            Kind::Whiteout => changes.deletions.contains(&child),
            Kind::Dir { opaque, .. } => {
                let below = settle_dir(upper, &child, changes)?;
                let keep = below || changes.upserts.contains(&child);
                if keep && opaque && !changes.opaque_dirs.contains(&child) {
                    remove_xattr(&path, opaque_xattr())?;
                }
                keep
            }
            Kind::Other => !meta.file_type().is_socket(),
        };
        if !keep {
            remove(&path, &meta)?;
        }
        kept |= keep;
    }
    Ok(kept)
}

/// Removes the entry `path` (a directory with what is left in it).
fn remove(path: &Path, meta: &Metadata) -> Result<()> {
    let removed = match meta.is_dir() {
        true => fs::remove_dir_all(path),
        false => fs::remove_file(path),
    };
    removed.map_err(io_err(path, "remove"))
}

/// Removes the xattr `name` of `path` (not following a symlink); a missing one is fine.
fn remove_xattr(path: &Path, name: &str) -> Result<()> {
    match xattr::remove(path, name) {
        Err(e) if is_unsupported(&e) || e.raw_os_error() == Some(libc::ENODATA) => Ok(()),
        other => other.map_err(io_err(path, "remove xattr")),
    }
}

/// Gives every entry below `dir` (not `dir` itself, which no layer has) the modification
/// time `mtime`, in whole seconds, as a layer written with that mtime records it.
pub fn set_mtimes(dir: &Path, mtime: u64) -> Result<()> {
    let seconds = i64::try_from(mtime).map_err(|_| {
        Error::InvalidOption(format!("mtime {mtime} is out of range for a timestamp"))
    })?;
    set_mtimes_below(dir, FileTime::from_unix_time(seconds, 0))
}

/// [`set_mtimes`] with the time ready.
fn set_mtimes_below(dir: &Path, time: FileTime) -> Result<()> {
    // Read and timestamped only, in a settled upper directory nothing else uses.
    for entry in fs::read_dir(dir).map_err(io_err(dir, "read directory"))? {
        let entry = entry.map_err(io_err(dir, "read directory"))?;
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(io_err(&path, "lstat"))?;
        if meta.is_dir() {
            set_mtimes_below(&path, time)?;
        }
        let atime = FileTime::from_last_access_time(&meta);
        filetime::set_symlink_file_times(&path, atime, time).map_err(io_err(&path, "set times"))?;
    }
    Ok(())
}
