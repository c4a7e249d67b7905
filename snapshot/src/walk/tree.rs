//! The records of one stat-walk, kept compact, and the comparison of two of them.
//!
//! A walk of a 100 000-file rootfs is kept in memory between two steps and compared with
//! the next one, so its size per path matters. A [`Tree`] stores the paths in depth-first
//! order with each directory's children sorted by name, each entry as its depth and its
//! own name (in one shared byte buffer) plus a 17-byte [`Record`] — about 40 bytes a path
//! instead of a `PathBuf` and full `lstat` fields in a map. Depth-first order with sorted
//! children is the order of [`Path`]'s `Ord` (component by component), so two trees are
//! compared in one merge pass without any lookup structure.

use std::ffi::OsStr;
use std::fs::Metadata;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::Changes;

/// What is remembered about one path: enough of its `lstat` fields to notice any change,
/// folded into two 64-bit hashes.
///
/// `ctime` is the key field: the kernel updates it on content writes, chmod, chown, xattr
/// changes and link count changes, even when `mtime` is reset. Directories leave it out
/// (see [`Record::from_metadata`]) and record a hash of their layer xattrs instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Record {
    /// Every compared field (the identity included): a different value is a change.
    state: u64,
    /// Inode, device and (directories) birth time: a directory whose identity changed was
    /// deleted and made again (or another one moved into its place).
    identity: u64,
    /// The entry is a directory.
    is_dir: bool,
}

impl Record {
    /// Takes the fields from `lstat` metadata and, for directories, the hash of their
    /// layer xattrs. For directories, `ctime` and `size` are left out: they change
    /// whenever an entry is added or removed, even when it is put back (as the mount
    /// points of a RUN are), while every real change below a directory is seen on the
    /// entry itself (and the layer writer adds its parents); a directory's own mode, owner
    /// and mtime are still compared. A directory's birth time (where the filesystem
    /// records one) is part of its identity: a directory deleted and made again may get
    /// the same inode number back, but its birth time is later than the baseline walk.
    pub(super) fn from_metadata(meta: &Metadata, xattrs: u64) -> Record {
        let is_dir = meta.is_dir();
        let born = if is_dir { meta.created().ok() } else { None };
        let identity = hash_of(&(meta.ino(), meta.dev(), born));
        let (size, ctime) = match is_dir {
            true => (0, (0, 0)),
            false => (meta.size(), (meta.ctime(), meta.ctime_nsec())),
        };
        let state = hash_of(&(
            identity,
            meta.mode(),
            meta.uid(),
            meta.gid(),
            size,
            (meta.mtime(), meta.mtime_nsec()),
            ctime,
            meta.rdev(),
            xattrs,
        ));
        Record {
            state,
            identity,
            is_dir,
        }
    }

    /// True for directories.
    pub(super) fn is_dir(&self) -> bool {
        self.is_dir
    }
}

/// A 64-bit hash of `value` (SipHash with fixed keys: the same within a process).
fn hash_of(value: &impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// One path of a [`Tree`].
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Where its name starts in [`Tree::names`].
    name_at: u32,
    /// The length of its name.
    name_len: u32,
    /// How many components its path has (1 for a child of the root).
    depth: u32,
    record: Record,
}

/// All records of one walk: paths below the rootfs in depth-first order, each directory's
/// children sorted by name (see the module documentation).
#[derive(Debug, Clone, Default)]
pub(super) struct Tree {
    entries: Vec<Entry>,
    /// The names of all entries, one after the other.
    names: Vec<u8>,
}

impl Tree {
    /// How many paths the walk recorded.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Appends the next path in depth-first order: `name` at `depth` (its parent is the
    /// last entry pushed at `depth - 1`).
    pub(super) fn push(&mut self, depth: u32, name: &OsStr, record: Record) {
        let name = name.as_bytes();
        self.entries.push(Entry {
            name_at: self.names.len() as u32,
            name_len: name.len() as u32,
            depth,
            record,
        });
        self.names.extend_from_slice(name);
    }

    /// Gives back spare capacity once the walk is complete (the tree is kept until the
    /// next walk).
    pub(super) fn shrink(&mut self) {
        self.entries.shrink_to_fit();
        self.names.shrink_to_fit();
    }

    fn name(&self, entry: &Entry) -> &OsStr {
        let at = entry.name_at as usize;
        OsStr::from_bytes(&self.names[at..at + entry.name_len as usize])
    }
}

/// Reads a [`Tree`] in order, keeping the full path of the current entry.
struct Cursor<'a> {
    tree: &'a Tree,
    next: usize,
    /// The path of the current entry (empty before the first one and after the last).
    path: PathBuf,
    current: Option<Entry>,
}

impl<'a> Cursor<'a> {
    fn new(tree: &'a Tree) -> Cursor<'a> {
        let mut cursor = Cursor {
            tree,
            next: 0,
            path: PathBuf::new(),
            current: None,
        };
        cursor.advance();
        cursor
    }

    /// Moves to the next entry.
    fn advance(&mut self) {
        self.current = self.tree.entries.get(self.next).copied();
        let Some(entry) = self.current else {
            return;
        };
        self.next += 1;
        let mut depth = self.path.components().count() as u32;
        while depth >= entry.depth && self.path.pop() {
            depth -= 1;
        }
        self.path.push(self.tree.name(&entry));
    }
}

/// What the comparison knows about one ancestor of the path being compared.
#[derive(Debug, Clone, Copy)]
struct Frame {
    /// It is a directory in the new tree, and neither it nor an ancestor is opaque: a path
    /// deleted directly below it needs a whiteout of its own.
    whiteouts_below: bool,
    /// It or an ancestor is opaque: everything below it goes into the layer.
    in_opaque: bool,
}

/// Works out the changes from `old` to `new` in one pass over both.
///
/// - a path in `new` whose record differs from `old` (or is missing there) is an upsert,
///   and so is every path below an opaque directory;
/// - a directory in both whose identity changed is opaque (top-most only);
/// - a path only in `old` is a deletion unless an ancestor is gone, no longer a
///   directory, or opaque (then the whiteout, or the opaque marker, covers it).
pub(super) fn compare(old: &Tree, new: &Tree) -> Changes {
    let mut changes = Changes::default();
    let (mut a, mut b) = (Cursor::new(old), Cursor::new(new));
    let root = Frame {
        whiteouts_below: true,
        in_opaque: false,
    };
    // frames[d] describes the ancestor of depth d + 1 of the current path.
    let mut frames: Vec<Frame> = Vec::new();
    loop {
        let order = match (a.current, b.current) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(_), Some(_)) => a.path.cmp(&b.path),
        };
        let depth = match order {
            std::cmp::Ordering::Greater => b.current.map(|e| e.depth),
            _ => a.current.map(|e| e.depth),
        }
        .unwrap_or(1) as usize;
        frames.truncate(depth - 1);
        let parent = frames.last().copied().unwrap_or(root);
        let frame = match order {
            std::cmp::Ordering::Less => {
                if parent.whiteouts_below {
                    changes.deletions.insert(a.path.clone());
                }
                a.advance();
                Frame {
                    whiteouts_below: false,
                    ..parent
                }
            }
            std::cmp::Ordering::Greater => {
                changes.upserts.insert(b.path.clone());
                let is_dir = b.current.is_some_and(|e| e.record.is_dir);
                b.advance();
                Frame {
                    whiteouts_below: parent.whiteouts_below && is_dir,
                    ..parent
                }
            }
            std::cmp::Ordering::Equal => {
                let frame = compare_entry(&a, &b, parent, &mut changes);
                a.advance();
                b.advance();
                frame
            }
        };
        frames.push(frame);
    }
    changes
}

/// Compares a path present in both trees (the current entries of `old` and `new`).
fn compare_entry(
    old: &Cursor<'_>,
    new: &Cursor<'_>,
    parent: Frame,
    changes: &mut Changes,
) -> Frame {
    let (Some(before), Some(now)) = (old.current, new.current) else {
        unreachable!("compare_entry is called with two current entries")
    };
    let (before, now) = (before.record, now.record);
    let recreated = before.identity != now.identity;
    let opaque = now.is_dir && before.is_dir && recreated && !parent.in_opaque;
    if opaque {
        changes.opaque_dirs.insert(new.path.clone());
    }
    if before != now || parent.in_opaque {
        changes.upserts.insert(new.path.clone());
    }
    Frame {
        whiteouts_below: parent.whiteouts_below && now.is_dir && !opaque,
        in_opaque: parent.in_opaque || opaque,
    }
}

/// Paths as a sorted set, for messages and tests.
#[cfg(test)]
pub(super) fn paths(tree: &Tree) -> std::collections::BTreeSet<PathBuf> {
    let mut cursor = Cursor::new(tree);
    let mut out = std::collections::BTreeSet::new();
    while cursor.current.is_some() {
        out.insert(cursor.path.clone());
        cursor.advance();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn record(state: u64, identity: u64, is_dir: bool) -> Record {
        Record {
            state,
            identity,
            is_dir,
        }
    }

    /// A tree from `(path, state, identity, is_dir)` given in depth-first sorted order.
    fn tree(entries: &[(&str, u64, u64, bool)]) -> Tree {
        let mut tree = Tree::default();
        for (path, state, identity, is_dir) in entries {
            let path = std::path::Path::new(path);
            let depth = path.components().count() as u32;
            let name = path.file_name().unwrap();
            tree.push(depth, name, record(*state, *identity, *is_dir));
        }
        tree
    }

    fn set(paths: &[&str]) -> BTreeSet<PathBuf> {
        paths.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn an_entry_is_a_few_dozen_bytes() {
        assert!(std::mem::size_of::<Entry>() <= 40);
    }

    #[test]
    fn the_cursor_gives_full_paths_in_path_order() {
        let t = tree(&[
            ("a", 1, 1, true),
            ("a/x", 1, 1, false),
            ("a/y", 1, 1, true),
            ("a/y/z", 1, 1, false),
            ("a.b", 1, 1, false),
            ("b", 1, 1, false),
        ]);
        let mut cursor = Cursor::new(&t);
        let mut seen = Vec::new();
        while cursor.current.is_some() {
            seen.push(cursor.path.clone());
            cursor.advance();
        }
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted);
        assert_eq!(
            seen,
            ["a", "a/x", "a/y", "a/y/z", "a.b", "b"].map(PathBuf::from)
        );
    }

    #[test]
    fn merge_finds_upserts_deletions_and_opaque_dirs_around_sibling_prefixes() {
        let old = tree(&[
            ("a", 1, 1, true),
            ("a/gone", 1, 1, false),
            ("a/kept", 1, 1, false),
            ("a.b", 1, 1, true),
            ("a.b/x", 1, 1, false),
            ("d", 1, 1, true),
            ("d/e", 1, 1, true),
            ("d/e/f", 1, 1, false),
            ("file", 1, 1, true),
            ("file/under", 1, 1, false),
        ]);
        let new = tree(&[
            ("a", 2, 1, true),
            ("a/kept", 1, 1, false),
            ("a/new", 1, 1, false),
            ("a.b", 1, 1, true),
            ("a.b/x", 2, 1, false),
            ("d", 3, 9, true),
            ("d/e", 1, 1, true),
            ("file", 3, 3, false),
        ]);
        let changes = compare(&old, &new);
        assert_eq!(
            changes.upserts,
            set(&["a", "a/new", "a.b/x", "d", "d/e", "file"])
        );
        assert_eq!(changes.deletions, set(&["a/gone"]));
        assert_eq!(changes.opaque_dirs, set(&["d"]));
        assert!(compare(&new, &new).is_empty());
        assert_eq!(paths(&new).len(), new.len());
    }
}
