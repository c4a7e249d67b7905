//! "The host" for attack tests: a temp dir standing for host files a hostile rootfs links
//! to, and a snapshot of a tree to assert it is unchanged. Shared by
//! `tests/rootfs_links.rs` and the unit tests of `isolation::rootfs`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Per path: mode, owner, mtime (seconds, nanoseconds) and content or link target.
pub type Tree = BTreeMap<PathBuf, (u32, u32, i64, i64, Vec<u8>)>;

/// Everything observable about the tree under `root`, links not followed.
pub fn tree(root: &Path) -> Tree {
    let mut out = Tree::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(path) = todo.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        let data = if meta.is_dir() {
            for e in fs::read_dir(&path).unwrap() {
                todo.push(e.unwrap().path());
            }
            Vec::new()
        } else if meta.is_symlink() {
            let target = fs::read_link(&path).unwrap();
            target.to_string_lossy().as_bytes().to_vec()
        } else {
            fs::read(&path).unwrap()
        };
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        let entry = (
            meta.mode(),
            meta.uid(),
            meta.mtime(),
            meta.mtime_nsec(),
            data,
        );
        out.insert(rel, entry);
    }
    out
}

/// A host directory with `etc/hosts` and `etc/resolv.conf`, all with old mtimes.
pub fn host() -> tempfile::TempDir {
    let host = tempfile::tempdir().unwrap();
    fs::create_dir(host.path().join("etc")).unwrap();
    fs::write(host.path().join("etc/hosts"), "127.0.0.1 host\n").unwrap();
    fs::write(host.path().join("etc/resolv.conf"), "nameserver 9.9.9.9\n").unwrap();
    for p in ["etc/hosts", "etc/resolv.conf", "etc", ""] {
        set_old(&host.path().join(p));
    }
    host
}

/// Sets the times of `path` (not following it) to a fixed date in 2001.
pub fn set_old(path: &Path) {
    let old = filetime::FileTime::from_unix_time(1_000_000_000, 0);
    filetime::set_symlink_file_times(path, old, old).unwrap();
}
