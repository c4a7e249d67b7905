//! Finding what changed in a plain rootfs directory between two points in time.
//!
//! [`StatWalk`] walks the whole tree with `lstat` and compares per-path records. It is
//! the [`Snapshotter`] for a rootfs that is a plain directory (see
//! [`crate::snapshotter`]); its path-based methods [`StatWalk::baseline`] and
//! [`StatWalk::changes`] work on any directory.

use std::collections::BTreeSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{io_err, Error, Result};
use crate::layer::read_xattrs;
use crate::snapshotter::{Diff, Snapshotter, StepRoot};
use crate::unpack::{unpack_layer_dir, unpack_layer_file_skipping};

mod tree;
use tree::{compare, Record, Tree};

/// The difference between two states of a rootfs, in the shape a layer needs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Paths (relative to rootfs, no leading slash) whose current content/metadata go into the layer: added or modified entries.
    pub upserts: BTreeSet<PathBuf>,
    /// Paths that existed in the baseline and are gone: each becomes a whiteout. Only top-most deleted paths (a deleted dir's children are not listed).
    pub deletions: BTreeSet<PathBuf>,
    /// Directories that were replaced (deleted and made again, or another one moved into
    /// their place): each gets an opaque whiteout, and all their current descendants are
    /// in `upserts`. Top-most only.
    pub opaque_dirs: BTreeSet<PathBuf>,
}

impl Changes {
    /// True if nothing changed.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.deletions.is_empty() && self.opaque_dirs.is_empty()
    }
}

/// Finds changes by walking the rootfs with `lstat` and comparing records.
///
/// Symbolic links are never followed. Filesystems mounted inside the rootfs
/// are walked like any directory; paths that must not be walked (such as
/// `proc`) go into the ignore list.
#[derive(Debug, Clone, Default)]
pub struct StatWalk {
    ignore: BTreeSet<PathBuf>,
    baseline: Option<Tree>,
    /// The rootfs directory of the [`Snapshotter`] implementation.
    rootfs: Option<PathBuf>,
    /// The lower directories already extracted into `rootfs`, bottom-most first.
    applied: Vec<PathBuf>,
}

impl StatWalk {
    /// A walker that skips the subtrees at `ignore` (paths relative to the
    /// rootfs, e.g. `proc`); with an empty list everything is walked. It works through
    /// [`StatWalk::baseline`] and [`StatWalk::changes`] on any directory; as a
    /// [`Snapshotter`], use [`StatWalk::at`].
    pub fn new(ignore: Vec<PathBuf>) -> StatWalk {
        let ignore = ignore.iter().map(|p| normalise_relative(p)).collect();
        StatWalk {
            ignore,
            ..StatWalk::default()
        }
    }

    /// The walk [`Snapshotter`] whose rootfs is the directory `rootfs` (created by the
    /// first `prepare` when missing; `/` in kaniko mode). The subtrees at `ignore` are
    /// neither walked nor touched when lower directories are extracted.
    pub fn at(rootfs: &Path, ignore: Vec<PathBuf>) -> StatWalk {
        StatWalk {
            rootfs: Some(rootfs.to_path_buf()),
            ..StatWalk::new(ignore)
        }
    }

    /// Records the rootfs as it is now as the baseline for the next `changes` call.
    pub fn baseline(&mut self, rootfs: &Path) -> Result<()> {
        let started = std::time::Instant::now();
        let tree = self.walk(rootfs)?;
        let ms = started.elapsed().as_millis() as u64;
        tracing::debug!(
            examined = tree.len(),
            duration_ms = ms,
            "snapshot (walk): baseline of {} paths in {ms} ms",
            tree.len()
        );
        self.baseline = Some(tree);
        wait_for_coarse_clock();
        Ok(())
    }

    /// Compares the rootfs with the baseline, returns what changed, and makes the current
    /// state the new baseline.
    pub fn changes(&mut self, rootfs: &Path) -> Result<Changes> {
        let Some(old) = self.baseline.as_ref() else {
            return Err(Error::NoBaseline {
                rootfs: rootfs.to_path_buf(),
            });
        };
        let started = std::time::Instant::now();
        let new = self.walk(rootfs)?;
        let changes = compare(old, &new);
        log_changes("walk", Some(new.len()), &changes, started.elapsed());
        self.baseline = Some(new);
        wait_for_coarse_clock();
        Ok(changes)
    }

    /// Walks `rootfs` and records every path below it (not the root itself).
    fn walk(&self, rootfs: &Path) -> Result<Tree> {
        let mut tree = Tree::default();
        self.walk_dir(rootfs, &mut PathBuf::new(), 1, &mut tree)?;
        tree.shrink();
        Ok(tree)
    }

    /// Records the children of the directory `rel` (at `depth`, 1 for the root's
    /// children), sorted by name, and descends into subdirectories.
    fn walk_dir(
        &self,
        rootfs: &Path,
        rel: &mut PathBuf,
        depth: u32,
        tree: &mut Tree,
    ) -> Result<()> {
        // Read only (lstat and read_dir, after the command finished); nothing is written.
        let dir = rootfs.join(&*rel);
        let entries = std::fs::read_dir(&dir).map_err(io_err(&dir, "read directory"))?;
        let mut names = entries
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(io_err(&dir, "read directory"))?;
        names.sort();
        for name in names {
            rel.push(&name);
            if !self.ignore.contains(&*rel) {
                let child = rootfs.join(&*rel);
                let meta = std::fs::symlink_metadata(&child).map_err(io_err(&child, "lstat"))?;
                let xattrs = if meta.is_dir() {
                    xattr_hash(&child)?
                } else {
                    0
                };
                let record = Record::from_metadata(&meta, xattrs);
                tree.push(depth, &name, record);
                if record.is_dir() {
                    self.walk_dir(rootfs, rel, depth + 1, tree)?;
                }
            }
            rel.pop();
        }
        Ok(())
    }
}

impl Snapshotter for StatWalk {
    fn name(&self) -> &'static str {
        "walk"
    }

    /// Extracts the lowers it does not hold yet into the rootfs (leaving the ignored
    /// subtrees alone): layer directories, or layer blob files (gzip, zstd or plain tar),
    /// which only the walk takes, so that a layer needs no extraction of its own first and records the baseline when anything was extracted or none is
    /// recorded yet; otherwise the baseline left by the last `diff` stands.
    fn prepare(&mut self, lowers: &[PathBuf]) -> Result<StepRoot> {
        let Some(rootfs) = self.rootfs.clone() else {
            return Err(Error::InvalidOption(
                "a StatWalk made by StatWalk::new has no rootfs: use StatWalk::at".into(),
            ));
        };
        let Some(new) = lowers.strip_prefix(self.applied.as_slice()) else {
            return Err(Error::LowersMismatch(format!(
                "{} holds {} lower directories that are not the first of the {} given",
                rootfs.display(),
                self.applied.len(),
                lowers.len()
            )));
        };
        std::fs::create_dir_all(&rootfs).map_err(io_err(&rootfs, "create rootfs"))?;
        let skip: Vec<PathBuf> = self.ignore.iter().cloned().collect();
        for lower in new {
            // A layer directory, or (the walk only) a layer blob not extracted anywhere.
            match lower.is_file() {
                true => unpack_layer_file_skipping(lower, &rootfs, &skip)?,
                false => unpack_layer_dir(lower, &rootfs, &skip)?,
            };
            self.applied.push(lower.clone());
        }
        if !new.is_empty() || self.baseline.is_none() {
            self.baseline(&rootfs)?;
        }
        Ok(StepRoot::dir(&rootfs))
    }

    fn diff(&mut self, step: &mut StepRoot) -> Result<Diff> {
        let Some(rootfs) = step.plain_dir().map(Path::to_path_buf) else {
            return Err(Error::InvalidOption(
                "the walk snapshotter was given an overlay step".into(),
            ));
        };
        let changes = self.changes(&rootfs)?;
        Ok(Diff {
            changes,
            source: rootfs,
        })
    }

    fn commit(&mut self, step: StepRoot) -> Result<Option<PathBuf>> {
        drop(step);
        Ok(None)
    }
}

/// Logs what a snapshot found at `debug` (paths examined when known, paths changed, time),
/// and at `trace` each changed path.
pub(crate) fn log_changes(
    snapshotter: &str,
    examined: Option<usize>,
    changes: &Changes,
    elapsed: std::time::Duration,
) {
    let ms = elapsed.as_millis() as u64;
    let (upserts, deletions, opaque) = (
        changes.upserts.len(),
        changes.deletions.len(),
        changes.opaque_dirs.len(),
    );
    let examined_text = examined.map_or(String::new(), |n| format!("{n} paths examined, "));
    tracing::debug!(
        snapshotter,
        examined,
        upserts,
        deletions,
        opaque_dirs = opaque,
        duration_ms = ms,
        "snapshot ({snapshotter}): {examined_text}{upserts} added or changed, {deletions} deleted, {opaque} directories replaced, in {ms} ms"
    );
    if tracing::enabled!(tracing::Level::TRACE) {
        for (mark, paths) in [
            ("+", &changes.upserts),
            ("-", &changes.deletions),
            ("opaque", &changes.opaque_dirs),
        ] {
            for path in paths {
                tracing::trace!("snapshot ({snapshotter}): {mark} /{}", path.display());
            }
        }
    }
}

/// A hash of the layer xattrs of `host` (0 when it has none).
fn xattr_hash(host: &Path) -> Result<u64> {
    let xattrs = read_xattrs(host)?;
    if xattrs.is_empty() {
        return Ok(0);
    }
    let mut hasher = DefaultHasher::new();
    xattrs.hash(&mut hasher);
    Ok(hasher.finish())
}

/// Drops `/`, `.` and `..` so ignore entries compare with walked paths.
fn normalise_relative(path: &Path) -> PathBuf {
    path.components()
        .filter_map(|c| match c {
            std::path::Component::Normal(name) => Some(name),
            _ => None,
        })
        .collect()
}

/// Reads a clock as `(seconds, nanoseconds)`.
fn clock_now(clock: rustix::time::ClockId) -> (i64, i64) {
    let ts = rustix::time::clock_gettime(clock);
    (ts.tv_sec as i64, ts.tv_nsec as i64)
}

/// Waits until the kernel's coarse clock has passed the current time.
///
/// File timestamps (mtime, ctime) are taken from the kernel's coarse clock,
/// which only advances once per timer tick (1 to 10 ms). A file written right
/// after a walk, within the same tick, could get exactly the ctime the walk
/// recorded, and its change would go unnoticed. Reading `CLOCK_REALTIME` after
/// the walk and waiting until `CLOCK_REALTIME_COARSE` is past it guarantees
/// that every later change carries a timestamp newer than anything recorded.
/// The wait is capped at one second so a strange clock cannot hang a build.
fn wait_for_coarse_clock() {
    let target = clock_now(rustix::time::ClockId::Realtime);
    for _ in 0..1000 {
        if clock_now(rustix::time::ClockId::RealtimeCoarse) > target {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{chown, symlink, PermissionsExt};

    fn setup() -> (tempfile::TempDir, StatWalk) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("etc/conf.d")).unwrap();
        fs::write(root.join("etc/passwd"), b"root:x:0:0\n").unwrap();
        fs::write(root.join("etc/conf.d/a"), b"a").unwrap();
        fs::write(root.join("etc/conf.d/b"), b"b").unwrap();
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::write(root.join("usr/bin/tool"), b"#!/bin/sh\n").unwrap();
        symlink("tool", root.join("usr/bin/link")).unwrap();
        let mut walk = StatWalk::new(Vec::new());
        walk.baseline(root).unwrap();
        (dir, walk)
    }

    fn set(paths: &[&str]) -> BTreeSet<PathBuf> {
        paths.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn unchanged_tree_is_empty() {
        let (dir, mut walk) = setup();
        let changes = walk.changes(dir.path()).unwrap();
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn a_directory_whose_entry_came_and_went_with_mtime_restored_is_unchanged() {
        let (dir, mut walk) = setup();
        let etc = dir.path().join("etc");
        let mtime = filetime::FileTime::from_last_modification_time(&fs::metadata(&etc).unwrap());
        fs::write(etc.join("resolv.conf"), b"").unwrap();
        fs::remove_file(etc.join("resolv.conf")).unwrap();
        filetime::set_file_mtime(&etc, mtime).unwrap();
        let changes = walk.changes(dir.path()).unwrap();
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn changes_without_baseline_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = StatWalk::new(Vec::new()).changes(dir.path()).unwrap_err();
        assert!(matches!(err, Error::NoBaseline { .. }));
    }

    #[test]
    fn added_file_and_its_parent() {
        let (dir, mut walk) = setup();
        fs::write(dir.path().join("etc/new"), b"x").unwrap();
        let changes = walk.changes(dir.path()).unwrap();
        assert_eq!(changes.upserts, set(&["etc", "etc/new"]));
        assert!(changes.deletions.is_empty());
        assert!(walk.changes(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn modified_content_same_size_and_mtime_restored() {
        let (dir, mut walk) = setup();
        let path = dir.path().join("etc/passwd");
        let mtime = filetime::FileTime::from_last_modification_time(&fs::metadata(&path).unwrap());
        fs::write(&path, b"toor:x:0:0\n").unwrap();
        filetime::set_file_mtime(&path, mtime).unwrap();
        let changes = walk.changes(dir.path()).unwrap();
        assert_eq!(changes.upserts, set(&["etc/passwd"]));
    }

    #[test]
    fn chmod_and_chown_are_changes() {
        let (dir, mut walk) = setup();
        let tool = dir.path().join("usr/bin/tool");
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
        let changes = walk.changes(dir.path()).unwrap();
        assert_eq!(changes.upserts, set(&["usr/bin/tool"]));
        chown(dir.path().join("etc/passwd"), Some(1000), Some(1000)).unwrap();
        let changes = walk.changes(dir.path()).unwrap();
        assert_eq!(changes.upserts, set(&["etc/passwd"]));
    }

    #[test]
    fn deleted_file_is_a_deletion() {
        let (dir, mut walk) = setup();
        fs::remove_file(dir.path().join("etc/passwd")).unwrap();
        let changes = walk.changes(dir.path()).unwrap();
        assert_eq!(changes.deletions, set(&["etc/passwd"]));
        assert_eq!(changes.upserts, set(&["etc"]));
    }

    #[test]
    fn deleted_dir_is_one_deletion() {
        let (dir, mut walk) = setup();
        fs::remove_dir_all(dir.path().join("etc/conf.d")).unwrap();
        let changes = walk.changes(dir.path()).unwrap();
        assert_eq!(changes.deletions, set(&["etc/conf.d"]));
    }

    #[test]
    fn recreated_dir_is_opaque() {
        let (dir, mut walk) = setup();
        let root = dir.path();
        fs::create_dir(root.join("etc/conf.new")).unwrap();
        fs::write(root.join("etc/conf.new/c"), b"c").unwrap();
        fs::remove_dir_all(root.join("etc/conf.d")).unwrap();
        fs::rename(root.join("etc/conf.new"), root.join("etc/conf.d")).unwrap();
        let changes = walk.changes(root).unwrap();
        assert_eq!(changes.opaque_dirs, set(&["etc/conf.d"]));
        assert_eq!(changes.upserts, set(&["etc", "etc/conf.d", "etc/conf.d/c"]));
        assert!(changes.deletions.is_empty(), "{changes:?}");
    }

    #[test]
    fn dir_replaced_by_file_is_an_upsert_only() {
        let (dir, mut walk) = setup();
        let root = dir.path();
        fs::remove_dir_all(root.join("etc/conf.d")).unwrap();
        fs::write(root.join("etc/conf.d"), b"now a file").unwrap();
        let changes = walk.changes(root).unwrap();
        assert_eq!(changes.upserts, set(&["etc", "etc/conf.d"]));
        assert!(changes.deletions.is_empty(), "{changes:?}");
    }

    #[test]
    fn symlink_retarget_is_a_change() {
        let (dir, mut walk) = setup();
        let link = dir.path().join("usr/bin/link");
        fs::remove_file(&link).unwrap();
        symlink("other", &link).unwrap();
        let changes = walk.changes(dir.path()).unwrap();
        assert!(changes.upserts.contains(Path::new("usr/bin/link")));
        assert!(changes.deletions.is_empty());
    }

    #[test]
    fn new_hardlink_marks_both_paths() {
        let (dir, mut walk) = setup();
        fs::hard_link(
            dir.path().join("usr/bin/tool"),
            dir.path().join("usr/bin/tool2"),
        )
        .unwrap();
        let changes = walk.changes(dir.path()).unwrap();
        assert_eq!(
            changes.upserts,
            set(&["usr/bin", "usr/bin/tool", "usr/bin/tool2"])
        );
    }

    #[test]
    fn xattr_change_is_noticed() {
        let (dir, mut walk) = setup();
        let path = dir.path().join("etc/passwd");
        if xattr::set(&path, "user.test", b"1").is_err() {
            return; // filesystem without user xattrs
        }
        let changes = walk.changes(dir.path()).unwrap();
        assert_eq!(changes.upserts, set(&["etc/passwd"]));
    }

    #[test]
    fn an_xattr_change_on_a_directory_is_noticed() {
        let (dir, mut walk) = setup();
        xattr::set(dir.path().join("etc/conf.d"), "user.test", b"1").unwrap();
        let changes = walk.changes(dir.path()).unwrap();
        assert_eq!(changes.upserts, set(&["etc/conf.d"]));
        xattr::set(dir.path().join("etc/conf.d"), "user.test", b"1").unwrap();
        assert!(
            walk.changes(dir.path()).unwrap().is_empty(),
            "the same value again"
        );
    }

    /// ext4 hands a deleted directory's inode number to the next new one at once, so the
    /// inode alone cannot tell a replaced directory; its birth time can.
    #[test]
    fn a_directory_made_again_is_opaque_even_with_its_old_inode_number() {
        let (dir, mut walk) = setup();
        let conf = dir.path().join("etc/conf.d");
        for round in 0..5 {
            fs::remove_dir_all(&conf).unwrap();
            fs::create_dir(&conf).unwrap();
            let changes = walk.changes(dir.path()).unwrap();
            assert_eq!(changes.opaque_dirs, set(&["etc/conf.d"]), "round {round}");
            assert!(changes.deletions.is_empty(), "round {round}: {changes:?}");
        }
    }

    #[test]
    fn ignored_subtrees_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("proc")).unwrap();
        let mut walk = StatWalk::new(vec![PathBuf::from("/proc")]);
        walk.baseline(dir.path()).unwrap();
        fs::write(dir.path().join("proc/x"), b"x").unwrap();
        fs::write(dir.path().join("y"), b"y").unwrap();
        let changes = walk.changes(dir.path()).unwrap();
        assert_eq!(changes.upserts, set(&["y"]));
    }
}
