//! A step's upper directory as [`Changes`], normalised so that they are exactly what
//! [`crate::StatWalk`] finds for the same operations on a plain directory.
//!
//! The upper directory holds every entry the step created or changed, plus what overlayfs
//! put there on its own. Only the upper directory is walked; the lower directories are
//! looked up (see [`LowerStack`]) for the few entries that need it: directories, whiteouts
//! and opaque directories. The rules:
//!
//! - A file, symlink, device node or FIFO in the upper directory is an upsert: overlayfs
//!   copies one up to change it (content, mode, owner, times, xattrs, a new link), and
//!   each of those changes its ctime, which is what the walk compares; even a change back
//!   to what it was (a rename there and back, a link made and removed) does. The one
//!   exception: a file opened for writing is copied up at `open`, so one closed without a
//!   write (a lock file) is in the overlay's layer, unchanged, but not in the walk's.
//! - A directory is an upsert when it is new (nothing, or a non-directory, below it) or
//!   when its mode, owner, mtime or layer xattrs differ from the lower directory's. A
//!   directory copied up only to hold a changed child keeps the lower's attributes
//!   (overlayfs restores the parent's times after a copy-up) and is not an upsert; the
//!   layer writer still adds it as a parent, as it does for the walk.
//! - Opaque directories: overlayfs marks a directory opaque whenever it is created where
//!   a whiteout was, or a new directory is renamed into a merged one. The walk calls a
//!   directory opaque when it replaced a directory (a different inode at a path that was
//!   a directory). So a mark is kept only where the lowers show a directory at that path
//!   and no ancestor is already opaque (the walk lists the top-most only); elsewhere it is
//!   dropped, since there is nothing below to hide. Below a kept opaque directory,
//!   everything is an upsert and nothing is a deletion, as for the walk.
//! - A whiteout is a deletion when the lowers show something at that path (overlayfs can
//!   leave whiteouts for names that are not there, e.g. inside a replaced directory).
//!
//! The result: the same opaque directories and the same deletions and upserts as the
//! walk's. A replaced directory always gets one `.wh..wh..opq`, never a whiteout per old
//! child: the walk tells a replaced directory by its inode and birth time (a deleted
//! directory's inode number may come back at once), overlayfs by its opaque mark. `trusted.overlay.*` xattrs never reach a layer (the layer writer only writes
//! `user.*` and `security.capability`).

use std::fs::{self, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{io_err, Result};
use crate::layer::read_xattrs;
use crate::overlay::format::{kind_of, Kind};
use crate::overlay::lowers::{Level, LowerStack};
use crate::walk::Changes;

/// The changes a step made, read from its upper directory `upper` over `lowers`.
pub(crate) fn upper_changes(upper: &Path, lowers: &LowerStack) -> Result<Changes> {
    let mut walk = UpperWalk {
        upper,
        lowers,
        changes: Changes::default(),
    };
    let root = Context {
        levels: lowers.root_levels(),
        x: false,
    };
    walk.visit(Path::new(""), &root)?;
    Ok(walk.changes)
}

/// What is known about a directory of the upper directory while its entries are read.
#[derive(Debug, Clone, Default)]
struct Context {
    /// The lower directories merged at this path. None when nothing below it has a
    /// counterpart in the lowers: it is new, or a kept opaque directory, or below one.
    levels: Vec<Level>,
    /// The directory is marked as holding xwhiteouts.
    x: bool,
}

/// The state of one walk of an upper directory.
struct UpperWalk<'a> {
    upper: &'a Path,
    lowers: &'a LowerStack,
    changes: Changes,
}

impl UpperWalk<'_> {
    /// Reads the directory `rel` of the upper directory.
    fn visit(&mut self, rel: &Path, context: &Context) -> Result<()> {
        // Read only, after the step's commands finished: `rel` has plain names of
        // directories found by this walk.
        let host = self.upper.join(rel);
        for entry in fs::read_dir(&host).map_err(io_err(&host, "read directory"))? {
            let entry = entry.map_err(io_err(&host, "read directory"))?;
            let child = rel.join(entry.file_name());
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(io_err(&path, "lstat"))?;
            match kind_of(&path, &meta, context.x)? {
                Kind::Whiteout => self.whiteout(child, context)?,
                Kind::Dir { opaque, xwhiteouts } => {
                    let mut inner = self.directory(&child, &path, &meta, opaque, context)?;
                    inner.x = xwhiteouts;
                    self.visit(&child, &inner)?;
                }
                Kind::Other => {
                    self.changes.upserts.insert(child);
                }
            }
        }
        Ok(())
    }

    /// A whiteout at `rel`: a deletion if the lowers show something there.
    fn whiteout(&mut self, rel: PathBuf, context: &Context) -> Result<()> {
        if self.lowers.lookup(&context.levels, &rel)?.1.is_some() {
            self.changes.deletions.insert(rel);
        }
        Ok(())
    }

    /// Records the directory `rel` (at `host`) and returns the context for its entries.
    fn directory(
        &mut self,
        rel: &Path,
        host: &Path,
        meta: &Metadata,
        opaque: bool,
        context: &Context,
    ) -> Result<Context> {
        let (levels, lower) = self.lowers.lookup(&context.levels, rel)?;
        let lower = lower.filter(|(_, lower_meta)| lower_meta.is_dir());
        let Some((lower_host, lower_meta)) = lower else {
            self.changes.upserts.insert(rel.to_path_buf());
            return Ok(Context::default());
        };
        if opaque {
            self.changes.opaque_dirs.insert(rel.to_path_buf());
            self.changes.upserts.insert(rel.to_path_buf());
            return Ok(Context::default());
        }
        if !same_directory(host, meta, &lower_host, &lower_meta)? {
            self.changes.upserts.insert(rel.to_path_buf());
        }
        Ok(Context { levels, x: false })
    }
}

/// True if the directories `a` and `b` have the same mode, owner, mtime and layer xattrs.
fn same_directory(a: &Path, a_meta: &Metadata, b: &Path, b_meta: &Metadata) -> Result<bool> {
    let attributes = |m: &Metadata| (m.mode(), m.uid(), m.gid(), m.mtime(), m.mtime_nsec());
    if attributes(a_meta) != attributes(b_meta) {
        return Ok(false);
    }
    Ok(read_xattrs(a)? == read_xattrs(b)?)
}
