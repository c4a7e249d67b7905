//! Placeholders against a command that swaps rootfs directories for links to the host.
//! "The host" is a separate temp dir whose tree (names, contents, modes, mtimes) must be
//! exactly the same afterwards.

use super::*;
use std::os::unix::fs::symlink;

#[path = "../../../builder-core/tests/support/host_tree.rs"]
mod host_tree;
use host_tree::{host, set_old, tree};

/// What a hostile RUN leaves at `/etc`: a link to the host's `etc`, absolute or relative.
fn link_to_host(root: &Path, host: &Path, relative: bool) {
    let target = if relative {
        let up = "../".repeat(root.components().count() + 3);
        PathBuf::from(format!("{up}{}", host.join("etc").display()))
    } else {
        host.join("etc")
    };
    symlink(target, root.join("etc")).unwrap();
}

#[test]
fn removal_after_etc_was_replaced_by_a_host_link_leaves_the_host_alone() {
    let host = host();
    let before = tree(host.path());
    for relative in [false, true] {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("etc")).unwrap();
        let mut ph = Placeholders::default();
        let target = ph
            .ensure(root.path(), "/etc/resolv.conf", Kind::File, true)
            .unwrap();
        assert_eq!(target, Some(root.path().join("etc/resolv.conf")));
        assert!(ph
            .create_file_with(root.path(), "/etc/hosts", b"10.0.0.1 me\n")
            .unwrap());
        ph.seal();
        // The RUN: `mv /etc /etc.old && ln -s <host>/etc /etc`.
        fs::rename(root.path().join("etc"), root.path().join("etc.old")).unwrap();
        link_to_host(root.path(), host.path(), relative);
        ph.remove().unwrap();
        assert_eq!(tree(host.path()), before, "relative: {relative}");
        // The placeholders moved with their directory and were left there.
        assert!(root.path().join("etc.old/resolv.conf").exists());
    }
}

#[test]
fn removal_after_a_created_etc_was_replaced_by_a_host_link_leaves_the_host_alone() {
    let host = host();
    let before = tree(host.path());
    for relative in [false, true] {
        let root = tempfile::tempdir().unwrap();
        set_old(root.path());
        let mut ph = Placeholders::default();
        ph.ensure(root.path(), "/etc/resolv.conf", Kind::File, true)
            .unwrap()
            .unwrap();
        ph.seal();
        // The RUN: `rm -rf /etc && ln -s <host>/etc /etc`.
        fs::remove_dir_all(root.path().join("etc")).unwrap();
        link_to_host(root.path(), host.path(), relative);
        drop(ph); // removal on drop, as on an early return
        assert_eq!(tree(host.path()), before, "relative: {relative}");
        assert!(fs::symlink_metadata(root.path().join("etc"))
            .unwrap()
            .is_symlink());
    }
}

#[test]
fn placeholders_are_removed_and_parent_times_restored() {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("etc")).unwrap();
    fs::create_dir_all(root.path().join("usr/lib")).unwrap();
    symlink("/usr/lib", root.path().join("lib")).unwrap();
    for p in ["etc", "usr/lib", "usr", ""] {
        set_old(&root.path().join(p));
    }
    let before = tree(root.path());
    let mut ph = Placeholders::default();
    let proc_dir = ph.ensure(root.path(), "/proc", Kind::Dir, true).unwrap();
    assert_eq!(proc_dir, Some(root.path().join("proc")));
    let via_link = ph.ensure(root.path(), "/lib/x/y", Kind::Dir, true).unwrap();
    assert_eq!(via_link, Some(root.path().join("usr/lib/x/y")));
    ph.ensure(root.path(), "/etc/resolv.conf", Kind::File, true)
        .unwrap()
        .unwrap();
    ph.seal();
    ph.remove().unwrap();
    assert_eq!(tree(root.path()), before);
}

#[test]
fn nothing_is_created_at_a_link_target() {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("etc")).unwrap();
    symlink("/run/resolv.conf", root.path().join("etc/resolv.conf")).unwrap();
    let mut ph = Placeholders::default();
    let got = ph
        .ensure(root.path(), "/etc/resolv.conf", Kind::File, true)
        .unwrap();
    assert_eq!(got, None);
    assert!(!root.path().join("run").exists());
}
