//! Host-side writes into a rootfs never follow a link out of it, written as a
//! specification. A previous RUN may have left any path in the rootfs as a symlink to the
//! host; "the host" here is a separate temp dir whose whole tree (names, contents, modes,
//! owners, mtimes) must be exactly the same after COPY, ADD and WORKDIR-style directory
//! creation.

use crate::copy::{copy_sources, CopyOptions, SourceRoot};
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;

#[path = "../../tests/support/host_tree.rs"]
mod host_tree;
use host_tree::{host, tree};

/// A rootfs after a hostile RUN: `/etc` links to the host's `etc` by absolute path,
/// `/up` by a `../../..` relative path, `/hostfile` to the host's `etc/hosts`.
fn hostile_rootfs(host: &Path) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let etc = host.join("etc");
    symlink(&etc, root.path().join("etc")).unwrap();
    let up = "../".repeat(root.path().components().count() + 2);
    let relative = format!("{up}{}", etc.display().to_string().trim_start_matches('/'));
    symlink(relative, root.path().join("up")).unwrap();
    symlink(etc.join("hosts"), root.path().join("hostfile")).unwrap();
    root
}

/// A build context with `hosts`, `resolv.conf`, a directory `d/` and a tar `a.tar`.
fn context() -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("hosts"), "10.0.0.1 pwned\n").unwrap();
    fs::write(ctx.path().join("resolv.conf"), "nameserver 6.6.6.6\n").unwrap();
    fs::create_dir(ctx.path().join("d")).unwrap();
    fs::write(ctx.path().join("d/hosts"), "pwned too\n").unwrap();
    fs::write(ctx.path().join("a.tar"), hostile_tar()).unwrap();
    ctx
}

/// An archive whose members try to leave the extraction directory: a member symlink to
/// the host's `etc`, then a file through it, a hard link through it, and a `../` climb.
fn hostile_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let link = |b: &mut tar::Builder<Vec<u8>>, kind, path: &str, target: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, path, target).unwrap();
    };
    link(&mut b, tar::EntryType::Symlink, "l", "/etc");
    link(
        &mut b,
        tar::EntryType::Symlink,
        "u",
        "../../../../../../etc",
    );
    let file = |b: &mut tar::Builder<Vec<u8>>, path: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o777);
        h.set_size(5);
        b.append_data(&mut h, path, &b"pwned"[..]).unwrap();
    };
    file(&mut b, "l/hosts");
    file(&mut b, "u/resolv.conf");
    link(&mut b, tar::EntryType::Link, "hard", "l/hosts");
    b.into_inner().unwrap()
}

fn copy(ctx: &Path, rootfs: &Path, source: &str, dest: &str, opts: &CopyOptions) {
    let from = SourceRoot {
        dir: ctx,
        ignore: None,
        origin: "build context".into(),
        keep_owner: false,
    };
    let root = ocibuild_snapshot::RootDir::open(rootfs).unwrap();
    copy_sources(&from, &[source.to_string()], dest, &root, opts).unwrap();
}

#[test]
fn copy_to_a_destination_under_a_host_link_lands_inside_the_rootfs() {
    let host = host();
    let before = tree(host.path());
    let root = hostile_rootfs(host.path());
    let ctx = context();
    let owned = CopyOptions {
        chown: Some((4321, 4321)),
        chmod: Some(0o777),
        ..CopyOptions::default()
    };
    copy(ctx.path(), root.path(), "hosts", "/etc/hosts", &owned);
    copy(ctx.path(), root.path(), "resolv.conf", "/up/", &owned);
    copy(
        ctx.path(),
        root.path(),
        "d",
        "/etc/",
        &CopyOptions::default(),
    );
    copy(ctx.path(), root.path(), "d", "/up/sub/", &owned);
    assert_eq!(tree(host.path()), before);
    let inside = root
        .path()
        .join(host.path().strip_prefix("/").unwrap())
        .join("etc");
    assert_eq!(
        fs::read_to_string(inside.join("hosts")).unwrap(),
        "pwned too\n"
    );
    assert_eq!(
        fs::read_to_string(inside.join("resolv.conf")).unwrap(),
        "nameserver 6.6.6.6\n"
    );
    assert_eq!(fs::metadata(inside.join("sub/hosts")).unwrap().uid(), 4321);
}

/// Like Docker, a destination that is a symlink is followed, but inside the rootfs.
#[test]
fn copy_onto_a_link_to_a_host_file_follows_it_inside_the_rootfs() {
    let host = host();
    let before = tree(host.path());
    let root = hostile_rootfs(host.path());
    let ctx = context();
    let opts = CopyOptions {
        chown: Some((4321, 4321)),
        chmod: Some(0o600),
        ..CopyOptions::default()
    };
    copy(ctx.path(), root.path(), "hosts", "/hostfile", &opts);
    assert_eq!(tree(host.path()), before);
    let link = fs::symlink_metadata(root.path().join("hostfile")).unwrap();
    assert!(link.is_symlink());
    let inside = root.path().join(host.path().strip_prefix("/").unwrap());
    let meta = fs::symlink_metadata(inside.join("etc/hosts")).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (4321, 0o600));
}

/// Entries copied out of a source directory are created first and only replace what is
/// in the way when the name is taken: a link to the host there is removed, never followed,
/// whatever the entry (file, directory, symlink, hard link).
#[test]
fn entries_of_a_copied_directory_replace_links_to_the_host_in_their_place() {
    let host = host();
    let before = tree(host.path());
    let root = hostile_rootfs(host.path());
    let ctx = tempfile::tempdir().unwrap();
    let src = ctx.path().join("src");
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::write(src.join("hosts"), "copied\n").unwrap();
    fs::write(src.join("etc/passwd"), "root\n").unwrap();
    fs::hard_link(src.join("hosts"), src.join("hard")).unwrap();
    symlink("hosts", src.join("link")).unwrap();
    let dest = root.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let host_etc = host.path().join("etc");
    for name in ["hosts", "hard", "link"] {
        symlink(host_etc.join("hosts"), dest.join(name)).unwrap();
    }
    symlink(&host_etc, dest.join("etc")).unwrap();
    copy(
        ctx.path(),
        root.path(),
        "src",
        "/dest/",
        &CopyOptions::default(),
    );
    assert_eq!(tree(host.path()), before);
    for name in ["hosts", "hard"] {
        assert_eq!(fs::read_to_string(dest.join(name)).unwrap(), "copied\n");
    }
    assert_eq!(
        fs::read_link(dest.join("link")).unwrap(),
        Path::new("hosts")
    );
    let etc = fs::symlink_metadata(dest.join("etc")).unwrap();
    assert!(etc.is_dir());
    assert_eq!(
        fs::read_to_string(dest.join("etc/passwd")).unwrap(),
        "root\n"
    );
}

#[test]
fn archive_members_through_links_stay_in_the_extraction_directory() {
    let host = host();
    let before = tree(host.path());
    let root = tempfile::tempdir().unwrap();
    let ctx = context();
    let opts = CopyOptions {
        extract_archives: true,
        ..CopyOptions::default()
    };
    copy(ctx.path(), root.path(), "a.tar", "/x/", &opts);
    assert_eq!(tree(host.path()), before);
    // Member links resolve inside the extraction directory `/x`.
    let x = root.path().join("x");
    assert_eq!(fs::read(x.join("etc/hosts")).unwrap(), b"pwned");
    assert_eq!(fs::read(x.join("etc/resolv.conf")).unwrap(), b"pwned");
    assert_eq!(
        fs::metadata(x.join("hard")).unwrap().ino(),
        fs::metadata(x.join("etc/hosts")).unwrap().ino()
    );
}

#[test]
fn workdir_style_directory_creation_through_links_stays_inside_the_rootfs() {
    let host = host();
    let before = tree(host.path());
    let root = hostile_rootfs(host.path());
    let rootfd = ocibuild_snapshot::RootDir::open(root.path()).unwrap();
    for path in [
        "/etc/app",
        "/up/w",
        "/etc/../../../etc/x/y",
        "/hostfile/../z",
    ] {
        rootfd
            .create_dir_all_owned(Path::new(path), 0o755, (4321, 4321))
            .unwrap();
    }
    assert_eq!(tree(host.path()), before);
    let inside = root
        .path()
        .join(host.path().strip_prefix("/").unwrap())
        .join("etc");
    for dir in ["app", "w", "x/y"] {
        assert_eq!(fs::metadata(inside.join(dir)).unwrap().uid(), 4321, "{dir}");
    }
    // The dangling link was followed inside the rootfs (mkdir -p in a chroot).
    assert!(inside.join("hosts").is_dir() && inside.join("z").is_dir());
}
