//! Attacks on [`RootDir`]: a rootfs full of links to "the host" (a separate temp dir),
//! and checks that the host tree is exactly as before.

use super::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::symlink;

/// Everything observable about a tree: per path, its kind, content or link target, mode,
/// mtime and owner.
pub(crate) type Tree = BTreeMap<PathBuf, (String, Vec<u8>, u32, i64, i64, u32)>;

pub(crate) fn tree(root: &Path) -> Tree {
    let mut out = Tree::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(path) = todo.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        let (kind, data) = if meta.is_symlink() {
            (
                "link",
                fs::read_link(&path).unwrap().into_os_string().into_vec(),
            )
        } else if meta.is_dir() {
            for e in fs::read_dir(&path).unwrap() {
                todo.push(e.unwrap().path());
            }
            ("dir", Vec::new())
        } else {
            ("file", fs::read(&path).unwrap())
        };
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        let entry = (
            kind.to_string(),
            data,
            meta.mode(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.uid(),
        );
        out.insert(rel, entry);
    }
    out
}

use std::os::unix::ffi::OsStringExt;

/// A "host" directory with `etc/resolv.conf`, `etc/hosts` and old mtimes.
pub(crate) fn host() -> tempfile::TempDir {
    let host = tempfile::tempdir().unwrap();
    fs::create_dir(host.path().join("etc")).unwrap();
    fs::write(host.path().join("etc/resolv.conf"), b"nameserver 1.1.1.1\n").unwrap();
    fs::write(host.path().join("etc/hosts"), b"127.0.0.1 localhost\n").unwrap();
    let old = FileTime::from_unix_time(1_000_000_000, 0);
    for p in ["etc/resolv.conf", "etc/hosts", "etc", ""] {
        filetime::set_symlink_file_times(host.path().join(p), old, old).unwrap();
    }
    host
}

/// Both resolution strategies on the rootfs at `path`.
fn roots(path: &Path) -> Vec<RootDir> {
    vec![
        RootDir::open(path).unwrap(),
        RootDir::open(path).unwrap().without_openat2(),
    ]
}

/// A rootfs whose `/etc` is a link to the host's `etc`, by `form` ("absolute" or
/// "relative" `../../..`-style).
fn hostile_root(host: &Path, form: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let target = match form {
        "absolute" => host.join("etc"),
        _ => {
            let up = "../".repeat(root.path().components().count() + 2);
            PathBuf::from(format!("{up}{}", host.join("etc").display()))
        }
    };
    symlink(&target, root.path().join("etc")).unwrap();
    root
}

#[test]
fn a_parent_link_to_the_host_resolves_inside_the_root() {
    let host = host();
    let before = tree(host.path());
    for (form, walk_only) in [
        ("absolute", false),
        ("relative", false),
        ("absolute", true),
        ("relative", true),
    ] {
        let root = hostile_root(host.path(), form);
        let r = RootDir::open(root.path()).unwrap();
        let r = if walk_only { r.without_openat2() } else { r };
        {
            // The link's target does not exist inside the root: nothing to open.
            let err = r.open_parent(Path::new("/etc/resolv.conf")).unwrap_err();
            assert!(
                matches!(&err, Error::Io { source, .. } if is_missing(source)),
                "{err}"
            );
            assert_eq!(r.lstat(Path::new("etc/hosts")).unwrap().map(|_| ()), None);
            // mkdir -p follows the link, inside the root.
            let dir = r.create_dir_all(Path::new("/etc"), 0o755).unwrap();
            let mut f = dir.create_file(OsStr::new("resolv.conf"), 0o644).unwrap();
            f.write_all(b"mine").unwrap();
            dir.set_times(OsStr::new("."), FileTime::zero(), FileTime::zero())
                .unwrap();
            let inside = root.path().join(&dir.rel).join("resolv.conf");
            assert!(inside.starts_with(root.path()), "{}", inside.display());
            assert_eq!(fs::read(&inside).unwrap(), b"mine");
            r.open_parent(Path::new("etc/resolv.conf"))
                .unwrap()
                .0
                .remove(OsStr::new("resolv.conf"))
                .unwrap();
        }
    }
    assert_eq!(tree(host.path()), before);
}

#[test]
fn dotdot_links_stop_at_the_root() {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("a/b")).unwrap();
    symlink("../../../../..", root.path().join("a/b/up")).unwrap();
    for r in roots(root.path()) {
        let dir = r.open_dir(Path::new("a/b/up/../..")).unwrap();
        assert!(dir.same_as(r.as_dir()).unwrap());
        assert_eq!(
            r.resolve(Path::new("a/b/up/x"), true).unwrap(),
            Path::new("x")
        );
    }
}

#[test]
fn final_links_are_never_followed() {
    let host = host();
    let before = tree(host.path());
    let root = tempfile::tempdir().unwrap();
    symlink(host.path().join("etc/hosts"), root.path().join("hosts")).unwrap();
    symlink(host.path().join("etc"), root.path().join("etcdir")).unwrap();
    for r in roots(root.path()) {
        let (dir, name) = r.open_parent(Path::new("/hosts")).unwrap();
        dir.chown(&name, 1234, 1234).unwrap();
        dir.set_times(&name, FileTime::zero(), FileTime::zero())
            .unwrap();
        assert!(dir.chmod(&name, 0o777).is_err(), "no modes on symlinks");
        assert!(dir.set_xattr(&name, OsStr::new("user.x"), b"v").is_err());
        assert!(dir.create_file(&name, 0o644).is_err(), "O_EXCL on a link");
        assert!(dir.mkdir(&name, 0o755).is_err());
        assert!(dir.open_dir(OsStr::new("etcdir")).is_err());
        assert!(r.lstat(Path::new("hosts")).unwrap().unwrap().is_symlink());
    }
    let r = RootDir::open(root.path()).unwrap();
    r.as_dir().remove_all(OsStr::new("etcdir")).unwrap();
    r.as_dir().remove(OsStr::new("hosts")).unwrap();
    assert_eq!(tree(host.path()), before);
    assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
}

#[test]
fn remove_all_removes_links_not_their_targets() {
    let host = host();
    let before = tree(host.path());
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("d/e/f")).unwrap();
    fs::write(root.path().join("d/e/f/file"), b"x").unwrap();
    symlink(host.path().join("etc"), root.path().join("d/e/host")).unwrap();
    symlink("../../../..", root.path().join("d/e/f/up")).unwrap();
    let r = RootDir::open(root.path()).unwrap();
    r.as_dir().remove_all(OsStr::new("d")).unwrap();
    r.as_dir().remove_all(OsStr::new("missing")).unwrap();
    assert!(!root.path().join("d").exists());
    assert_eq!(tree(host.path()), before);
}

#[test]
fn hard_links_link_the_link_itself() {
    let host = host();
    let root = tempfile::tempdir().unwrap();
    symlink(host.path().join("etc/hosts"), root.path().join("l")).unwrap();
    let r = RootDir::open(root.path()).unwrap();
    let dir = r.as_dir();
    dir.hard_link(OsStr::new("l"), dir, OsStr::new("l2"))
        .unwrap();
    let meta = fs::symlink_metadata(root.path().join("l2")).unwrap();
    assert!(meta.is_symlink());
    let host_meta = fs::metadata(host.path().join("etc/hosts")).unwrap();
    assert_eq!(host_meta.nlink(), 1);
}

#[test]
fn resolve_follows_links_inside_the_root_and_keeps_missing_names() {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("usr/lib")).unwrap();
    fs::create_dir_all(root.path().join("a/real")).unwrap();
    symlink("/usr/lib", root.path().join("lib")).unwrap();
    symlink("real", root.path().join("a/link")).unwrap();
    symlink("/nowhere/x", root.path().join("dangling")).unwrap();
    let r = RootDir::open(root.path()).unwrap();
    for (path, follow, expected) in [
        ("lib/x", true, "usr/lib/x"),
        ("lib", false, "lib"),
        ("lib", true, "usr/lib"),
        ("a/link/f", true, "a/real/f"),
        ("../../a/./link/../real", true, "a/real"),
        ("dangling/y", true, "nowhere/x/y"),
        ("nope/../lib/z", true, "usr/lib/z"),
        ("", true, ""),
    ] {
        let got = r.resolve(Path::new(path), follow).unwrap();
        assert_eq!(got, Path::new(expected), "{path}");
    }
}

#[test]
fn link_loops_are_errors() {
    let root = tempfile::tempdir().unwrap();
    symlink("b", root.path().join("a")).unwrap();
    symlink("a", root.path().join("b")).unwrap();
    for r in roots(root.path()) {
        assert!(r.open_dir(Path::new("a/x")).is_err());
        assert!(r.create_dir_all(Path::new("a/x"), 0o755).is_err());
    }
    let r = RootDir::open(root.path()).unwrap();
    let err = r.resolve(Path::new("a"), true).unwrap_err();
    assert!(matches!(err, Error::SymlinkLoop { .. }), "{err}");
}

#[test]
fn only_plain_names_are_accepted() {
    let root = tempfile::tempdir().unwrap();
    let r = RootDir::open(root.path()).unwrap();
    for bad in ["..", "a/b", "", "/x"] {
        let err = r.as_dir().mkdir(OsStr::new(bad), 0o755).unwrap_err();
        assert!(matches!(err, Error::UnsafePath { .. }), "{bad}: {err}");
    }
    assert!(r.open_parent(Path::new("a/..")).is_err());
    let (dir, name) = r.open_parent(Path::new("/")).unwrap();
    assert_eq!(name, ".");
    assert!(dir.same_as(r.as_dir()).unwrap());
}

#[test]
fn create_dir_all_refuses_a_file_in_the_way() {
    let root = tempfile::tempdir().unwrap();
    fs::write(root.path().join("f"), b"").unwrap();
    let r = RootDir::open(root.path()).unwrap();
    assert!(r.create_dir_all(Path::new("f/sub"), 0o755).is_err());
    let dir = r.create_dir_all(Path::new("x/y/z"), 0o700).unwrap();
    assert_eq!(dir.rel(), Path::new("x/y/z"));
    assert_eq!(dir.names().unwrap(), Vec::<OsString>::new());
}
