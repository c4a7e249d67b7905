//! The overlayfs on-disk format of a layer directory: what is a whiteout, what is an
//! opaque directory, and reading a whole layer directory as [`Changes`].
//!
//! Both the lower directories (the layer store's extracted layers, earlier steps' upper
//! directories) and a step's upper directory are in this format:
//!
//! - a whiteout is a character device 0/0, or (in a directory marked
//!   `trusted.overlay.opaque=x`) a zero-size regular file with the xattr
//!   `trusted.overlay.whiteout` (an "xwhiteout");
//! - an opaque directory has the xattr `trusted.overlay.opaque=y`. The value `x` does
//!   not make a directory opaque: it only says that the directory may hold xwhiteouts.
//!
//! In a user namespace (a rootless build) the same xattrs are `user.overlay.*`: this
//! process reads the namespace its mounts use ([`XattrNamespace::current`]).

use std::fs::{self, Metadata};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::error::{io_err, Error, Result};
use crate::layer::is_unsupported;
use crate::overlay::XattrNamespace;
use crate::walk::Changes;

/// The xattr marking an opaque directory (`y`) or one holding xwhiteouts (`x`), in the
/// namespace of this process' mounts.
pub(crate) fn opaque_xattr() -> &'static str {
    XattrNamespace::current().opaque()
}

/// What one entry of a layer directory stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A whiteout: the name is deleted from the layers below.
    Whiteout,
    /// A directory.
    Dir {
        /// Marked opaque: the layers below contribute nothing to it.
        opaque: bool,
        /// Marked as holding xwhiteouts.
        xwhiteouts: bool,
    },
    /// Anything else: a file, symlink, device node or FIFO of the layer.
    Other,
}

/// Classifies the entry at `host` with metadata `meta` (from `lstat`); `parent_x` tells
/// whether its directory is marked as holding xwhiteouts.
pub(crate) fn kind_of(host: &Path, meta: &Metadata, parent_x: bool) -> Result<Kind> {
    let file_type = meta.file_type();
    if file_type.is_char_device() && meta.rdev() == 0 {
        return Ok(Kind::Whiteout);
    }
    if file_type.is_file()
        && meta.len() == 0
        && parent_x
        && has_xattr(host, XattrNamespace::current().whiteout())?
    {
        return Ok(Kind::Whiteout);
    }
    if !file_type.is_dir() {
        return Ok(Kind::Other);
    }
    let mark = get_xattr(host, opaque_xattr())?;
    Ok(Kind::Dir {
        opaque: mark.as_deref() == Some(b"y"),
        xwhiteouts: mark.as_deref() == Some(b"x"),
    })
}

/// The value of xattr `name` of `host` (not following a symlink); `None` when unset or
/// unsupported.
fn get_xattr(host: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    match xattr::get(host, name) {
        Ok(value) => Ok(value),
        Err(e) if is_unsupported(&e) => Ok(None),
        Err(e) => Err(Error::io(host, "read xattr", e)),
    }
}

/// True if `host` has the xattr `name`.
fn has_xattr(host: &Path, name: &str) -> Result<bool> {
    Ok(get_xattr(host, name)?.is_some())
}

/// Reads the layer directory `dir` as it stands: every whiteout is a deletion, every
/// opaque directory an opaque directory, everything else an upsert. This is a layer
/// directory's content in the shape [`crate::write_layer`] takes, with nothing compared to
/// other layers.
pub(crate) fn read_layer_dir(dir: &Path) -> Result<Changes> {
    let mut changes = Changes::default();
    read_dir_into(dir, Path::new(""), false, &mut changes)?;
    Ok(changes)
}

/// Adds the entries below `rel` (a directory of the layer, `x` if it holds xwhiteouts).
fn read_dir_into(root: &Path, rel: &Path, x: bool, changes: &mut Changes) -> Result<()> {
    // Read only: `root` is a layer directory no command runs in, `rel` has plain names of
    // directories found by this walk.
    let host = root.join(rel);
    for entry in fs::read_dir(&host).map_err(io_err(&host, "read directory"))? {
        let entry = entry.map_err(io_err(&host, "read directory"))?;
        let child = rel.join(entry.file_name());
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(io_err(&path, "lstat"))?;
        match kind_of(&path, &meta, x)? {
            Kind::Whiteout => {
                changes.deletions.insert(child);
            }
            Kind::Dir { opaque, xwhiteouts } => {
                if opaque {
                    changes.opaque_dirs.insert(child.clone());
                }
                changes.upserts.insert(child.clone());
                read_dir_into(root, &child, xwhiteouts, changes)?;
            }
            Kind::Other => {
                changes.upserts.insert(child);
            }
        }
    }
    Ok(())
}
