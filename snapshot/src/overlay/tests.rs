use super::*;
use crate::walk::Changes;
use std::collections::BTreeSet;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::symlink;

/// Makes a character device 0/0 (a whiteout) at `path`.
fn whiteout(path: &Path) {
    nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
}

fn opaque(path: &Path) {
    xattr::set(path, format::opaque_xattr(), b"y").unwrap();
}

fn write(root: &Path, rel: &str, data: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

/// Two lower directories, `bottom` and `top`, over one another, and fresh upper and work
/// directories.
struct Stack {
    _tmp: tempfile::TempDir,
    layers: OverlayLayers,
}

fn stack() -> Stack {
    let tmp = tempfile::tempdir().unwrap();
    let (bottom, top) = (tmp.path().join("bottom"), tmp.path().join("top"));
    write(&bottom, "shared", "bottom");
    write(&bottom, "only-bottom", "bottom");
    write(&bottom, "gone", "bottom");
    write(&bottom, "dir/old", "bottom");
    write(&bottom, "dir/sub/deep", "bottom");
    write(&bottom, "merged/from-bottom", "bottom");
    write(&bottom, "file-then-dir", "bottom");
    write(&top, "shared", "top");
    write(&top, "merged/from-top", "top");
    write(&top, "dir/new", "top");
    write(&top, "file-then-dir/inside", "top");
    whiteout(&top.join("gone"));
    opaque(&top.join("dir"));
    symlink("/etc", top.join("link")).unwrap();
    let (upper, work) = (tmp.path().join("upper"), tmp.path().join("work"));
    fs::create_dir(&upper).unwrap();
    fs::create_dir(&work).unwrap();
    Stack {
        layers: OverlayLayers {
            lowers: vec![bottom, top],
            upper,
            work,
        },
        _tmp: tmp,
    }
}

/// `path` inside the detached mount `root`, as a host path through `/proc/self/fd`.
fn through(root: &RootDir, rel: &str) -> PathBuf {
    let fd = root.as_dir().as_fd().as_raw_fd();
    PathBuf::from(format!("/proc/self/fd/{fd}")).join(rel)
}

#[test]
fn a_detached_mount_merges_the_lowers_top_most_last_in_the_list() {
    let s = stack();
    for option in [LowerOption::Append, LowerOption::List] {
        let fd = s.layers.mount_detached_with(option).unwrap();
        let root = RootDir::from_fd(fd, Path::new("merged"));
        let read = |rel: &str| fs::read_to_string(through(&root, rel)).ok();
        assert_eq!(read("shared").as_deref(), Some("top"), "{option:?}");
        assert_eq!(read("only-bottom").as_deref(), Some("bottom"));
        assert_eq!(read("gone"), None, "whited out");
        assert_eq!(read("dir/old"), None, "below an opaque directory");
        assert_eq!(read("dir/new").as_deref(), Some("top"));
        assert_eq!(read("merged/from-bottom").as_deref(), Some("bottom"));
        assert_eq!(read("merged/from-top").as_deref(), Some("top"));
        assert_eq!(read("file-then-dir/inside").as_deref(), Some("top"));
    }
}

/// What the lowers show at `rel` (a path of plain names; not the root), looked up one
/// component at a time as a walk down the tree does.
fn find(lowers: &LowerStack, rel: &str) -> Option<lowers::Found> {
    let (mut levels, mut prefix, mut found) = (lowers.root_levels(), PathBuf::new(), None);
    for name in Path::new(rel).iter() {
        prefix.push(name);
        let (next, top) = lowers.lookup(&levels, &prefix).unwrap();
        (levels, found) = (next, Some(top?));
    }
    found
}

#[test]
fn the_lower_stack_finds_what_the_mount_shows() {
    let s = stack();
    let root = s.layers.open().unwrap();
    let lowers = LowerStack::new(s.layers.top_first().map(Path::to_path_buf).collect());
    for rel in [
        "shared",
        "only-bottom",
        "gone",
        "dir",
        "dir/old",
        "dir/sub",
        "dir/sub/deep",
        "dir/new",
        "merged",
        "merged/from-bottom",
        "merged/from-top",
        "file-then-dir",
        "file-then-dir/inside",
        "link",
        "missing",
        "missing/x",
    ] {
        let mounted = fs::symlink_metadata(through(&root, rel)).ok();
        let found = find(&lowers, rel);
        assert_eq!(
            found.as_ref().map(|(_, m)| (m.mode(), m.len(), m.uid())),
            mounted.as_ref().map(|m| (m.mode(), m.len(), m.uid())),
            "{rel:?}"
        );
        if let Some((host, _)) = &found {
            assert_eq!(content(host), content(&through(&root, rel)), "{rel:?}");
        }
    }
}

/// A symlink's target or a regular file's bytes.
fn content(path: &Path) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    match fs::read_link(path) {
        Ok(target) => Some(target.into_os_string().into_vec()),
        Err(_) if path.is_file() => fs::read(path).ok(),
        Err(_) => None,
    }
}

fn set(paths: &[&str]) -> BTreeSet<PathBuf> {
    paths.iter().map(PathBuf::from).collect()
}

/// Runs `change` on the merged tree of a fresh overlay step over `lowers` and returns the
/// step's changes.
fn step_changes(lowers: &[PathBuf], change: impl FnOnce(&Path)) -> Changes {
    let state = tempfile::tempdir().unwrap();
    let mut overlay = Overlay::new(state.path()).unwrap();
    let mut step = overlay.prepare(lowers).unwrap();
    let root = step.root_dir().unwrap();
    change(&through(root, ""));
    overlay.diff(&mut step).unwrap().changes
}

#[test]
fn a_directory_copied_up_only_for_a_changed_child_is_not_an_upsert() {
    let s = stack();
    let changes = step_changes(&s.layers.lowers, |root| {
        fs::write(root.join("merged/from-bottom"), "changed").unwrap();
    });
    assert_eq!(changes.upserts, set(&["merged/from-bottom"]));
    assert!(changes.deletions.is_empty() && changes.opaque_dirs.is_empty());
}

#[test]
fn a_replaced_directory_is_opaque_and_a_directory_over_a_file_is_not() {
    let s = stack();
    let changes = step_changes(&s.layers.lowers, |root| {
        fs::remove_dir_all(root.join("merged")).unwrap();
        fs::create_dir(root.join("merged")).unwrap();
        fs::write(root.join("merged/x"), "x").unwrap();
        fs::remove_file(root.join("only-bottom")).unwrap();
        fs::create_dir(root.join("only-bottom")).unwrap();
    });
    assert_eq!(changes.opaque_dirs, set(&["merged"]));
    assert_eq!(changes.upserts, set(&["merged", "merged/x", "only-bottom"]));
    assert!(changes.deletions.is_empty(), "{changes:?}");
}

#[test]
fn whiteouts_are_deletions_only_where_the_lowers_had_something() {
    let s = stack();
    let changes = step_changes(&s.layers.lowers, |root| {
        fs::remove_file(root.join("shared")).unwrap();
        fs::remove_dir_all(root.join("dir")).unwrap();
        fs::write(root.join("fresh"), "x").unwrap();
        fs::remove_file(root.join("fresh")).unwrap();
    });
    assert_eq!(changes.deletions, set(&["dir", "shared"]));
    assert!(changes.upserts.is_empty(), "{changes:?}");
}

#[test]
fn a_step_over_no_lowers_starts_empty_and_commit_hands_over_the_upper() {
    let state = tempfile::tempdir().unwrap();
    let mut overlay = Overlay::new(state.path()).unwrap();
    let mut step = overlay.prepare(&[]).unwrap();
    let root = step.root_dir().unwrap();
    assert!(root.as_dir().names().unwrap().is_empty());
    root.as_dir()
        .create_file(OsStr::new("made"), 0o644)
        .unwrap();
    let diff = overlay.diff(&mut step).unwrap();
    assert_eq!(diff.changes.upserts, set(&["made"]));
    let upper = overlay.commit(step).unwrap().unwrap();
    assert_eq!(upper, diff.source);
    assert!(upper.join("made").is_file());
    let mut next = overlay.prepare(std::slice::from_ref(&upper)).unwrap();
    let names = next.root_dir().unwrap().as_dir().names().unwrap();
    assert_eq!(names, vec![std::ffi::OsString::from("made")]);
}

#[test]
fn a_step_dropped_without_commit_removes_its_directories() {
    let state = tempfile::tempdir().unwrap();
    let mut overlay = Overlay::new(state.path()).unwrap();
    let mut step = overlay.prepare(&[]).unwrap();
    step.root_dir().unwrap();
    drop(step);
    assert_eq!(fs::read_dir(state.path()).unwrap().count(), 0);
}

#[test]
fn too_many_lowers_is_a_typed_error() {
    let state = tempfile::tempdir().unwrap();
    let mut overlay = Overlay::new(state.path()).unwrap();
    let most = max_step_lowers();
    let lowers = vec![state.path().to_path_buf(); most + 1];
    let err = overlay.prepare(&lowers).unwrap_err();
    assert!(
        matches!(err, Error::TooManyLowers { count, limit } if count == most + 1 && limit == most),
        "{err}"
    );
}

#[test]
fn the_probe_passes_here_and_leaves_nothing_behind() {
    let state = tempfile::tempdir().unwrap();
    Overlay::available(state.path()).unwrap();
    assert_eq!(fs::read_dir(state.path()).unwrap().count(), 0);
}

/// The names of a plain layer file's entries, each with the names of its xattrs.
fn layer_xattrs(file: &Path) -> Vec<(String, Vec<String>)> {
    let mut archive = tar::Archive::new(fs::File::open(file).unwrap());
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut names = Vec::new();
        if let Some(extensions) = entry.pax_extensions().unwrap() {
            for ext in extensions {
                let key = ext.unwrap().key().unwrap().to_string();
                names.extend(key.strip_prefix("SCHILY.xattr.").map(String::from));
            }
        }
        out.push((
            String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
            names,
        ));
    }
    out
}

#[test]
fn overlay_xattrs_of_the_upper_directory_never_reach_the_layer() {
    let s = stack();
    let state = tempfile::tempdir().unwrap();
    let mut overlay = Overlay::new(state.path()).unwrap();
    let mut step = overlay.prepare(&s.layers.lowers).unwrap();
    let root = through(step.root_dir().unwrap(), "");
    fs::remove_dir_all(root.join("merged")).unwrap();
    fs::create_dir(root.join("merged")).unwrap();
    fs::write(root.join("merged/x"), "x").unwrap();
    fs::write(root.join("shared"), "changed").unwrap();
    xattr::set(root.join("shared"), "user.kept", b"1").unwrap();
    let diff = overlay.diff(&mut step).unwrap();
    let upper = &diff.source;
    let marks = xattr::list(upper.join("merged")).unwrap();
    assert!(
        marks
            .into_iter()
            .any(|n| n.to_string_lossy().starts_with("trusted.overlay.")),
        "the upper directory has overlayfs' own xattrs"
    );
    let options = crate::LayerOptions {
        compression: crate::Compression::None,
        mtime: Some(0),
    };
    let info = crate::write_layer(upper, &diff.changes, state.path(), &options).unwrap();
    let entries = layer_xattrs(&info.path);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["merged/", "merged/.wh..wh..opq", "merged/x", "shared"]
    );
    let shared = &entries[3].1;
    assert_eq!(shared, &["user.kept".to_string()]);
    assert!(entries
        .iter()
        .all(|(_, x)| x.iter().all(|n| !n.starts_with("trusted."))));
}

/// What is compared of one entry of a layer directory: type and permission bits, owner,
/// content or link target, device number, and whether it is marked opaque.
type Shape = (u32, u32, u32, Option<Vec<u8>>, u64, bool);

/// Every entry below `dir` (relative path → [`Shape`]), the root left out.
fn shape_of(dir: &Path) -> std::collections::BTreeMap<PathBuf, Shape> {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let content = match meta.file_type() {
                t if t.is_file() => Some(fs::read(&path).unwrap()),
                t if t.is_symlink() => Some(
                    fs::read_link(&path)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                ),
                _ => None,
            };
            let opaque = meta.is_dir()
                && xattr::get(&path, format::opaque_xattr())
                    .unwrap()
                    .as_deref()
                    == Some(b"y");
            let rel = path.strip_prefix(dir).unwrap().to_path_buf();
            out.insert(
                rel,
                (
                    meta.mode(),
                    meta.uid(),
                    meta.gid(),
                    content,
                    meta.rdev(),
                    opaque,
                ),
            );
            if meta.is_dir() {
                pending.push(path);
            }
        }
    }
    out
}

/// A settled upper directory holds exactly what the layer store extracts from the layer
/// written from it: whiteouts of names the lowers do not have, opaque marks hiding
/// nothing and directories copied up only for them are gone, the layer's entries are not.
#[test]
fn a_settled_upper_directory_is_its_layer_as_the_store_extracts_it() {
    let s = stack();
    let state = tempfile::tempdir().unwrap();
    let mut overlay = Overlay::new(state.path()).unwrap();
    let mut step = overlay.prepare(&s.layers.lowers).unwrap();
    let root = through(step.root_dir().unwrap(), "");
    fs::write(root.join("merged/from-bottom"), "changed").unwrap();
    fs::remove_file(root.join("shared")).unwrap();
    fs::remove_dir_all(root.join("dir")).unwrap();
    fs::create_dir(root.join("dir")).unwrap();
    fs::write(root.join("dir/y"), "y").unwrap();
    fs::create_dir_all(root.join("new/inner")).unwrap();
    fs::write(root.join("new/inner/f"), "f").unwrap();
    fs::rename(root.join("new/inner"), root.join("merged/moved")).unwrap();
    // A file made and removed again in a directory of the lowers: nothing of it is left
    // in the layer, whatever overlayfs keeps of it.
    fs::write(root.join("dir/sub-less"), "x").unwrap();
    fs::remove_file(root.join("dir/sub-less")).unwrap();
    fs::write(root.join("only-bottom-sibling"), "x").unwrap();
    fs::remove_file(root.join("only-bottom-sibling")).unwrap();
    let diff = overlay.diff(&mut step).unwrap();
    let options = crate::LayerOptions {
        compression: crate::Compression::None,
        mtime: None,
    };
    let info = crate::write_layer(&diff.source, &diff.changes, state.path(), &options).unwrap();
    let upper = overlay.commit(step).unwrap().unwrap();
    settle_upper(&upper, &diff.changes).unwrap();
    let extracted = state.path().join("extracted");
    fs::create_dir(&extracted).unwrap();
    let unpack = crate::UnpackOptions {
        format: crate::UnpackFormat::OverlayLower,
        skip: Vec::new(),
    };
    crate::unpack_layer_with(fs::File::open(&info.path).unwrap(), &extracted, &unpack).unwrap();
    assert_eq!(shape_of(&upper), shape_of(&extracted));
    assert!(shape_of(&upper).contains_key(Path::new("merged/moved/f")));
}

/// With a fixed layer mtime, [`set_mtimes`] gives every entry of a settled upper
/// directory that time, as its layer records it (symlinks themselves, not their targets).
#[test]
fn set_mtimes_gives_every_entry_the_layers_time() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a/b/file", "x");
    symlink("/nonexistent", dir.path().join("a/link")).unwrap();
    set_mtimes(dir.path(), 7).unwrap();
    for rel in ["a", "a/b", "a/b/file", "a/link"] {
        let meta = fs::symlink_metadata(dir.path().join(rel)).unwrap();
        assert_eq!((meta.mtime(), meta.mtime_nsec()), (7, 0), "{rel}");
    }
}

/// A read-only view shows the merged tree of the lowers, refuses writes, and works with a
/// single lower (overlayfs needs two without an upper directory) and with none.
#[test]
fn a_read_only_view_shows_the_lowers_and_refuses_writes() {
    let s = stack();
    let empty = s.layers.upper.join("empty");
    let view = read_only_view(&s.layers.lowers, &empty).unwrap();
    let root = through(&view, "");
    assert_eq!(fs::read_to_string(root.join("shared")).unwrap(), "top");
    assert!(!root.join("gone").exists(), "a whiteout hides the file");
    assert!(
        !root.join("dir/old").exists(),
        "an opaque directory hides the lower's"
    );
    let err = fs::write(root.join("new"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    let single = read_only_view(&s.layers.lowers[..1], &empty).unwrap();
    let single_root = through(&single, "");
    assert_eq!(
        fs::read_to_string(single_root.join("dir/old")).unwrap(),
        "bottom"
    );
    let none = read_only_view(&[], &empty).unwrap();
    assert!(none.as_dir().names().unwrap().is_empty());
}
