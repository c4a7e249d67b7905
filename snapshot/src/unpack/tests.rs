use super::*;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;

/// Builds layer tars with the `tar` crate for the tests.
struct Layer {
    builder: tar::Builder<Vec<u8>>,
}

impl Layer {
    fn new() -> Self {
        Layer {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: EntryType, mode: u32, owner: (u64, u64), mtime: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        h.set_mtime(mtime);
        h.set_size(0);
        h
    }

    fn file(mut self, path: &str, data: &[u8], mode: u32, owner: (u64, u64), mtime: u64) -> Self {
        let mut h = Self::header(EntryType::Regular, mode, owner, mtime);
        h.set_size(data.len() as u64);
        self.builder.append_data(&mut h, path, data).unwrap();
        self
    }

    fn plain(self, path: &str, data: &[u8]) -> Self {
        self.file(path, data, 0o644, (0, 0), 1_000_000)
    }

    fn dir(mut self, path: &str, mode: u32, mtime: u64) -> Self {
        let mut h = Self::header(EntryType::Directory, mode, (0, 0), mtime);
        self.builder.append_data(&mut h, path, io::empty()).unwrap();
        self
    }

    fn link(mut self, kind: EntryType, path: &str, target: &str) -> Self {
        let mut h = Self::header(kind, 0o777, (0, 0), 1_000_000);
        self.builder.append_link(&mut h, path, target).unwrap();
        self
    }

    fn node(mut self, kind: EntryType, path: &str, major: u32, minor: u32) -> Self {
        let mut h = Self::header(kind, 0o620, (0, 5), 1_000_000);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.builder.append_data(&mut h, path, io::empty()).unwrap();
        self
    }

    /// Appends a PAX header with `records` that applies to the next entry.
    fn pax(mut self, records: &[(&str, &[u8])]) -> Self {
        let mut data = Vec::new();
        for (key, value) in records {
            crate::tarwriter::push_record(&mut data, key.as_bytes(), value);
        }
        let mut h = Self::header(EntryType::XHeader, 0o644, (0, 0), 0);
        h.set_size(data.len() as u64);
        h.set_path("PaxHeader").unwrap();
        h.set_cksum();
        self.builder.append(&h, &data[..]).unwrap();
        self
    }

    /// Appends an entry whose name bytes are written as-is (no checks).
    fn raw_name(mut self, name: &[u8]) -> Self {
        let mut h = Self::header(EntryType::Regular, 0o644, (0, 0), 0);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        self.builder.append(&h, io::empty()).unwrap();
        self
    }

    fn bytes(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }

    fn apply(self, root: &Path) -> Result<UnpackStats> {
        unpack_layer(&self.bytes()[..], root)
    }

    /// Extracts the layer into `dir` in overlayfs lower-dir format.
    fn extract_overlay(self, dir: &Path) -> Result<UnpackStats> {
        let options = UnpackOptions {
            format: UnpackFormat::OverlayLower,
            skip: Vec::new(),
        };
        unpack_layer_with(&self.bytes()[..], dir, &options)
    }
}

fn lstat(path: &Path) -> fs::Metadata {
    fs::symlink_metadata(path).unwrap()
}

fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

#[test]
fn files_dirs_modes_owners_and_times() {
    let root = tempfile::tempdir().unwrap();
    let stats = Layer::new()
        .dir("etc/", 0o755, 1_500_000_000)
        .file(
            "etc/passwd",
            b"root:x:0:0\n",
            0o640,
            (1000, 2000),
            1_600_000_000,
        )
        .file("./bin/su", b"su", 0o4755, (0, 0), 1_600_000_001)
        .dir("tmp/", 0o1777, 1_500_000_001)
        .apply(root.path())
        .unwrap();
    assert_eq!(stats.entries, 4);
    assert_eq!(stats.bytes, 13);
    let passwd = lstat(&root.path().join("etc/passwd"));
    assert_eq!(
        fs::read(root.path().join("etc/passwd")).unwrap(),
        b"root:x:0:0\n"
    );
    assert_eq!(passwd.mode() & 0o7777, 0o640);
    assert_eq!((passwd.uid(), passwd.gid()), (1000, 2000));
    assert_eq!(passwd.mtime(), 1_600_000_000);
    assert_eq!(passwd.atime(), 1_600_000_000);
    assert_eq!(lstat(&root.path().join("bin/su")).mode() & 0o7777, 0o4755);
    let tmp = lstat(&root.path().join("tmp"));
    assert_eq!(tmp.mode() & 0o7777, 0o1777);
    let etc = lstat(&root.path().join("etc"));
    assert!(etc.is_dir());
    assert_eq!(etc.mtime(), 1_500_000_000, "dir mtime set after children");
}

#[test]
fn symlinks_and_hardlinks() {
    let root = tempfile::tempdir().unwrap();
    Layer::new()
        .plain("bin/sh", b"shell")
        .link(EntryType::Symlink, "bin/link", "sh")
        .link(EntryType::Symlink, "bin/abs", "/bin/sh")
        .link(EntryType::Link, "bin/hard", "bin/sh")
        .link(EntryType::Link, "usr/hard2", "./bin/sh")
        .apply(root.path())
        .unwrap();
    let r = root.path();
    assert_eq!(fs::read_link(r.join("bin/link")).unwrap(), Path::new("sh"));
    assert_eq!(
        fs::read_link(r.join("bin/abs")).unwrap(),
        Path::new("/bin/sh")
    );
    let ino = lstat(&r.join("bin/sh")).ino();
    assert_eq!(lstat(&r.join("bin/hard")).ino(), ino);
    assert_eq!(lstat(&r.join("usr/hard2")).ino(), ino);
    assert_eq!(lstat(&r.join("bin/sh")).nlink(), 3);
}

#[test]
fn hardlink_to_missing_target_is_an_error() {
    let root = tempfile::tempdir().unwrap();
    let err = Layer::new()
        .link(EntryType::Link, "a", "missing")
        .apply(root.path())
        .unwrap_err();
    assert!(matches!(err, Error::BadEntry { .. }), "{err}");
}

#[test]
fn whiteout_removes_lower_file_and_dir() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    Layer::new()
        .plain("a/file", b"1")
        .plain("a/keep", b"1")
        .plain("b/dir/x", b"1")
        .apply(r)
        .unwrap();
    Layer::new()
        .plain("a/.wh.file", b"")
        .plain(".wh.b", b"")
        .apply(r)
        .unwrap();
    assert!(!exists(&r.join("a/file")));
    assert!(exists(&r.join("a/keep")));
    assert!(!exists(&r.join("b")));
    assert!(!exists(&r.join("a/.wh.file")));
    assert!(!exists(&r.join(".wh.b")));
}

#[test]
fn whiteout_does_not_remove_same_layer_file() {
    let root = tempfile::tempdir().unwrap();
    Layer::new()
        .plain("x", b"new")
        .plain(".wh.x", b"")
        .apply(root.path())
        .unwrap();
    assert_eq!(fs::read(root.path().join("x")).unwrap(), b"new");
}

fn lower_for_opaque(r: &Path) {
    Layer::new()
        .plain("d/old1", b"1")
        .plain("d/sub/old2", b"2")
        .plain("other", b"3")
        .apply(r)
        .unwrap();
}

fn check_opaque_result(r: &Path) {
    assert!(!exists(&r.join("d/old1")));
    assert!(!exists(&r.join("d/sub/old2")));
    assert!(exists(&r.join("d/new")));
    assert!(exists(&r.join("d/sub/new2")));
    assert!(exists(&r.join("other")));
    assert!(!exists(&r.join("d/.wh..wh..opq")));
}

#[test]
fn opaque_marker_first() {
    let root = tempfile::tempdir().unwrap();
    lower_for_opaque(root.path());
    Layer::new()
        .dir("d/", 0o755, 1)
        .plain("d/.wh..wh..opq", b"")
        .plain("d/new", b"n")
        .plain("d/sub/new2", b"n")
        .apply(root.path())
        .unwrap();
    check_opaque_result(root.path());
}

#[test]
fn opaque_marker_after_children() {
    let root = tempfile::tempdir().unwrap();
    lower_for_opaque(root.path());
    Layer::new()
        .plain("d/new", b"n")
        .dir("d/sub/", 0o755, 1)
        .plain("d/sub/new2", b"n")
        .plain("d/.wh..wh..opq", b"")
        .apply(root.path())
        .unwrap();
    check_opaque_result(root.path());
}

#[test]
fn tar_slip_is_refused() {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("root");
    fs::create_dir(&root).unwrap();
    let err = Layer::new()
        .raw_name(b"../escaped")
        .apply(&root)
        .unwrap_err();
    assert!(matches!(err, Error::UnsafePath { .. }), "{err}");
    assert!(!exists(&base.path().join("escaped")));
}

#[test]
fn leading_slash_is_stripped() {
    let root = tempfile::tempdir().unwrap();
    Layer::new()
        .raw_name(b"/abs/file")
        .apply(root.path())
        .unwrap();
    assert!(exists(&root.path().join("abs/file")));
}

#[test]
fn bad_whiteout_name_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let err = Layer::new()
        .raw_name(b"a/.wh..")
        .apply(root.path())
        .unwrap_err();
    assert!(matches!(err, Error::UnsafePath { .. }), "{err}");
}

#[test]
fn symlink_escape_is_contained() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().to_str().unwrap().to_string();
    Layer::new()
        .link(EntryType::Symlink, "evil", &target)
        .plain("evil/pwned", b"gotcha")
        .apply(root.path())
        .unwrap();
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    let inside = root
        .path()
        .join(target.trim_start_matches('/'))
        .join("pwned");
    assert_eq!(fs::read(inside).unwrap(), b"gotcha");
}

#[test]
fn hardlink_cannot_reach_outside() {
    let root = tempfile::tempdir().unwrap();
    let err = Layer::new()
        .link(EntryType::Link, "passwd", "/etc/passwd")
        .apply(root.path())
        .unwrap_err();
    assert!(matches!(err, Error::BadEntry { .. }), "{err}");
}

#[test]
fn replacing_dir_by_file_and_file_by_dir() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    Layer::new()
        .plain("x/child", b"1")
        .plain("y", b"file")
        .link(EntryType::Symlink, "z", "/x")
        .apply(r)
        .unwrap();
    Layer::new()
        .plain("x", b"now a file")
        .dir("y/", 0o700, 5)
        .dir("z/", 0o755, 5)
        .apply(r)
        .unwrap();
    assert_eq!(fs::read(r.join("x")).unwrap(), b"now a file");
    assert!(lstat(&r.join("y")).is_dir());
    assert_eq!(lstat(&r.join("y")).mode() & 0o7777, 0o700);
    assert!(lstat(&r.join("z")).is_dir());
}

#[test]
fn existing_dir_is_kept_and_updated() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    Layer::new().plain("d/a", b"1").apply(r).unwrap();
    Layer::new().dir("d/", 0o750, 7).apply(r).unwrap();
    assert!(exists(&r.join("d/a")));
    assert_eq!(lstat(&r.join("d")).mode() & 0o7777, 0o750);
    assert_eq!(lstat(&r.join("d")).mtime(), 7);
}

#[test]
fn devices_and_fifos() {
    let root = tempfile::tempdir().unwrap();
    let stats = Layer::new()
        .node(EntryType::Char, "dev/null", 1, 3)
        .node(EntryType::Fifo, "run/pipe", 0, 0)
        .apply(root.path())
        .unwrap();
    let pipe = lstat(&root.path().join("run/pipe"));
    assert_eq!(pipe.mode() & libc::S_IFMT, libc::S_IFIFO);
    if stats.skipped_devices == 0 {
        let null = lstat(&root.path().join("dev/null"));
        assert_eq!(null.mode() & libc::S_IFMT, libc::S_IFCHR);
        assert_eq!(null.rdev(), libc::makedev(1, 3));
        assert_eq!(null.mode() & 0o7777, 0o620);
        assert_eq!(null.gid(), 5);
    }
}

#[test]
fn xattrs_and_pax_mtime() {
    let root = tempfile::tempdir().unwrap();
    let stats = Layer::new()
        .pax(&[
            ("SCHILY.xattr.user.test", b"value"),
            ("mtime", b"1700000000.5"),
        ])
        .plain("f", b"x")
        .apply(root.path())
        .unwrap();
    let f = root.path().join("f");
    if stats.xattr_failures == 0 {
        assert_eq!(xattr::get(&f, "user.test").unwrap().unwrap(), b"value");
    }
    assert_eq!(lstat(&f).mtime(), 1_700_000_000);
    assert_eq!(lstat(&f).mtime_nsec(), 500_000_000);
}

#[test]
fn long_names_are_read() {
    let root = tempfile::tempdir().unwrap();
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(200));
    Layer::new().plain(&long, b"x").apply(root.path()).unwrap();
    assert!(exists(&root.path().join(&long)));
}

fn compressed_layers(plain: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(plain).unwrap();
    let zst = zstd::encode_all(plain, 3).unwrap();
    vec![
        ("plain", plain.to_vec()),
        ("gzip", gz.finish().unwrap()),
        ("zstd", zst),
    ]
}

#[test]
fn layer_files_are_sniffed() {
    let plain = Layer::new().plain("hello", b"world").bytes();
    for (name, bytes) in compressed_layers(&plain) {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("layer");
        fs::write(&layer, bytes).unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        let stats = unpack_layer_file(&layer, &root).unwrap();
        assert_eq!(stats.entries, 1, "{name}");
        assert_eq!(fs::read(root.join("hello")).unwrap(), b"world", "{name}");
    }
}

#[test]
fn corrupt_layer_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("broken.tar.gz");
    fs::write(&layer, [0x1f, 0x8b, 0, 1, 2, 3]).unwrap();
    let err = unpack_layer_file(&layer, dir.path()).unwrap_err();
    assert!(err.to_string().contains("broken.tar.gz"), "{err}");
}

#[test]
fn pax_time_parsing() {
    let p = Path::new("x");
    assert_eq!(
        parse_pax_time(b"12", p).unwrap(),
        FileTime::from_unix_time(12, 0)
    );
    assert_eq!(
        parse_pax_time(b"12.000000001", p).unwrap(),
        FileTime::from_unix_time(12, 1)
    );
    assert!(parse_pax_time(b"abc", p).is_err());
}

#[test]
fn skipped_paths_are_never_written_or_removed() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    fs::create_dir_all(r.join("proc/self")).unwrap();
    fs::write(r.join("proc/self/status"), b"live").unwrap();
    fs::create_dir_all(r.join("kaniko")).unwrap();
    fs::write(r.join("kaniko/executor"), b"bin").unwrap();
    fs::write(r.join("old"), b"lower").unwrap();
    let layer = Layer::new()
        .plain("proc/self/status", b"from image")
        .plain(".wh.kaniko", b"")
        .plain(".wh..wh..opq", b"")
        .plain("new", b"n")
        .bytes();
    let file = r
        .parent()
        .unwrap()
        .join(format!("skip-{}.tar", std::process::id()));
    fs::write(&file, layer).unwrap();
    let skip = vec![PathBuf::from("proc"), PathBuf::from("kaniko")];
    unpack_layer_file_skipping(&file, r, &skip).unwrap();
    fs::remove_file(&file).unwrap();
    assert_eq!(fs::read(r.join("proc/self/status")).unwrap(), b"live");
    assert_eq!(fs::read(r.join("kaniko/executor")).unwrap(), b"bin");
    assert!(
        !r.join("old").exists(),
        "the opaque root removed lower files"
    );
    assert_eq!(fs::read(r.join("new")).unwrap(), b"n");
}

/// Attacks: a layer (or the rootfs below it) with links to "the host", a separate temp dir
/// whose tree must be exactly as before.
mod hostile {
    use super::*;
    use crate::rootfd::tests::{host, tree};
    use std::os::unix::fs::symlink;

    /// `host` as a relative link target from `root/<depth dirs>`, climbing with `..`.
    fn relative_to_host(root: &Path, depth: usize, host: &Path) -> String {
        let up = "../".repeat(root.components().count() + depth + 2);
        format!("{up}{}", host.display().to_string().trim_start_matches('/'))
    }

    #[test]
    fn writes_through_a_symlinked_parent_stay_in_the_rootfs() {
        let host = host();
        let before = tree(host.path());
        let root = tempfile::tempdir().unwrap();
        let abs = host.path().join("etc").display().to_string();
        let rel = relative_to_host(root.path(), 0, &host.path().join("etc"));
        Layer::new()
            .link(EntryType::Symlink, "a", &abs)
            .plain("a/hosts", b"pwned")
            .plain("a/new", b"pwned")
            .link(EntryType::Symlink, "b", &rel)
            .plain("b/resolv.conf", b"pwned")
            .dir("b/sub", 0o777, 0)
            .apply(root.path())
            .unwrap();
        assert_eq!(tree(host.path()), before);
        let inside = root.path().join(abs.trim_start_matches('/'));
        assert_eq!(fs::read(inside.join("hosts")).unwrap(), b"pwned");
        assert_eq!(fs::read(inside.join("resolv.conf")).unwrap(), b"pwned");
        assert!(inside.join("sub").is_dir());
    }

    #[test]
    fn whiteouts_and_opaque_dirs_behind_a_host_link_stay_in_the_rootfs() {
        let host = host();
        let before = tree(host.path());
        let root = tempfile::tempdir().unwrap();
        symlink(host.path().join("etc"), root.path().join("etc")).unwrap();
        let rel = relative_to_host(root.path(), 0, &host.path().join("etc"));
        symlink(rel, root.path().join("etc2")).unwrap();
        Layer::new()
            .plain("etc/.wh.hosts", b"")
            .plain("etc2/.wh.resolv.conf", b"")
            .plain("etc/.wh..wh..opq", b"")
            .plain("etc2/.wh..wh..opq", b"")
            .apply(root.path())
            .unwrap();
        assert_eq!(tree(host.path()), before);
    }

    #[test]
    fn hard_links_cannot_reach_the_host_through_links() {
        let host = host();
        let before = tree(host.path());
        let root = tempfile::tempdir().unwrap();
        symlink(host.path().join("etc"), root.path().join("etc")).unwrap();
        symlink(host.path().join("etc/hosts"), root.path().join("hosts")).unwrap();
        let err = Layer::new()
            .link(EntryType::Link, "x", "etc/hosts")
            .apply(root.path())
            .unwrap_err();
        assert!(matches!(err, Error::BadEntry { .. }), "{err}");
        // A hard link to a symlink links the symlink, and metadata on it stays on it.
        Layer::new()
            .link(EntryType::Link, "y", "hosts")
            .apply(root.path())
            .unwrap();
        assert!(lstat(&root.path().join("y")).file_type().is_symlink());
        assert_eq!(
            fs::metadata(host.path().join("etc/hosts")).unwrap().nlink(),
            1
        );
        assert_eq!(tree(host.path()), before);
    }

    #[test]
    fn metadata_of_a_replaced_entry_never_reaches_the_host() {
        let host = host();
        let before = tree(host.path());
        let root = tempfile::tempdir().unwrap();
        symlink(host.path().join("etc/hosts"), root.path().join("f")).unwrap();
        symlink(host.path().join("etc"), root.path().join("d")).unwrap();
        Layer::new()
            .file("f", b"mine", 0o777, (1234, 1234), 5)
            .dir("d", 0o700, 5)
            .pax(&[("SCHILY.xattr.user.x", b"v")])
            .link(EntryType::Symlink, "d", "/etc")
            .apply(root.path())
            .unwrap();
        assert_eq!(fs::read(root.path().join("f")).unwrap(), b"mine");
        assert_eq!(tree(host.path()), before);
    }
}

/// The overlayfs lower-dir format: whiteouts as 0/0 character devices, opaque directories
/// marked with `trusted.overlay.opaque=y`.
mod overlay {
    use super::*;
    use crate::rootfd::tests::{host, tree};
    use std::os::unix::fs::symlink;

    /// Asserts that `path` is an overlayfs whiteout.
    fn assert_whiteout(path: &Path) {
        let meta = lstat(path);
        assert_eq!(meta.mode() & libc::S_IFMT, libc::S_IFCHR, "{path:?}");
        assert_eq!(meta.rdev(), 0, "{path:?} is the device 0/0");
        assert_eq!(meta.mode() & 0o7777, 0, "{path:?}");
    }

    fn opaque(path: &Path) -> Option<Vec<u8>> {
        xattr::get(path, overlay_opaque_xattr().0).unwrap()
    }

    /// Every path below `dir` (relative, `dir` itself as ""), sorted.
    fn names_below(dir: &Path) -> Vec<String> {
        let mut names = vec![String::new()];
        let mut todo = vec![dir.to_path_buf()];
        while let Some(path) = todo.pop() {
            for entry in fs::read_dir(&path).unwrap() {
                let entry = entry.unwrap();
                let rel = entry.path().strip_prefix(dir).unwrap().to_path_buf();
                names.push(rel.display().to_string());
                if entry.file_type().unwrap().is_dir() {
                    todo.push(entry.path());
                }
            }
        }
        names.sort();
        names
    }

    #[test]
    fn whiteouts_become_character_devices_and_opaque_markers_an_xattr() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        Layer::new()
            .dir("opaque/", 0o750, 7)
            .plain("opaque/.wh..wh..opq", b"")
            .plain("opaque/new", b"n")
            .plain("a/.wh.gone", b"")
            .plain(".wh.top", b"")
            .plain("plain/file", b"f")
            .extract_overlay(d)
            .unwrap();
        assert_whiteout(&d.join("a/gone"));
        assert_whiteout(&d.join("top"));
        assert_eq!(opaque(&d.join("opaque")).as_deref(), Some(&b"y"[..]));
        assert_eq!(opaque(&d.join("plain")), None);
        assert_eq!(opaque(&d.join("a")), None, "a whiteout's dir is not opaque");
        assert_eq!(fs::read(d.join("opaque/new")).unwrap(), b"n");
        assert_eq!(lstat(&d.join("opaque")).mode() & 0o7777, 0o750);
        assert_eq!(
            lstat(&d.join("opaque")).mtime(),
            7,
            "marking kept the dir's time"
        );
        assert!(
            !names_below(d).iter().any(|n| n.contains(".wh.")),
            "{:?}",
            names_below(d)
        );
    }

    #[test]
    fn an_opaque_marker_without_a_directory_entry_makes_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        Layer::new()
            .plain("x/y/.wh..wh..opq", b"")
            .extract_overlay(dir.path())
            .unwrap();
        assert!(lstat(&dir.path().join("x/y")).is_dir());
        assert_eq!(opaque(&dir.path().join("x/y")).as_deref(), Some(&b"y"[..]));
        assert_eq!(opaque(&dir.path().join("x")), None);
    }

    #[test]
    fn an_entry_of_the_same_layer_wins_over_its_whiteout_in_either_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        Layer::new()
            .plain("before", b"kept")
            .plain(".wh.before", b"")
            .plain(".wh.after", b"")
            .plain("after", b"written")
            .extract_overlay(d)
            .unwrap();
        assert_eq!(fs::read(d.join("before")).unwrap(), b"kept");
        assert_eq!(fs::read(d.join("after")).unwrap(), b"written");
    }

    #[test]
    fn overlay_xattrs_from_the_layer_are_dropped_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        Layer::new()
            .pax(&[
                ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
                ("SCHILY.xattr.user.kept", b"1"),
            ])
            .dir("fake-opaque/", 0o755, 1)
            .pax(&[
                ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
                ("SCHILY.xattr.user.overlay.metacopy", b""),
            ])
            .plain("redirected", b"x")
            .extract_overlay(d)
            .unwrap();
        assert_eq!(opaque(&d.join("fake-opaque")), None);
        assert_eq!(
            xattr::get(d.join("fake-opaque"), "user.kept").unwrap(),
            Some(b"1".to_vec())
        );
        let left: Vec<_> = xattr::list(d.join("redirected")).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn the_applied_format_still_removes_instead() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        Layer::new().plain("a/gone", b"1").apply(d).unwrap();
        Layer::new().plain("a/.wh.gone", b"").apply(d).unwrap();
        assert!(!exists(&d.join("a/gone")));
    }

    #[test]
    fn disk_bytes_count_file_blocks_once_per_inode() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 100_000];
        let stats = Layer::new()
            .plain("big", &data)
            .link(EntryType::Link, "big2", "big")
            .extract_overlay(dir.path())
            .unwrap();
        let blocks = lstat(&dir.path().join("big")).blocks() * 512;
        assert!(blocks >= 100_000, "{blocks}");
        assert!(stats.disk_bytes >= blocks, "{stats:?}");
        assert!(
            stats.disk_bytes < 2 * blocks,
            "the hard link is not counted: {stats:?}"
        );
    }

    #[test]
    fn whiteouts_and_markers_behind_a_link_to_the_host_stay_in_the_layer() {
        let host = host();
        let before = tree(host.path());
        let dir = tempfile::tempdir().unwrap();
        let host_etc = host.path().join("etc");
        Layer::new()
            .link(EntryType::Symlink, "etc", host_etc.to_str().unwrap())
            .plain("etc/.wh.hosts", b"")
            .plain("etc/.wh..wh..opq", b"")
            .extract_overlay(dir.path())
            .unwrap();
        assert_eq!(tree(host.path()), before);
        let inside = dir.path().join(host_etc.strip_prefix("/").unwrap());
        assert_whiteout(&inside.join("hosts"));
        assert_eq!(opaque(&inside).as_deref(), Some(&b"y"[..]));
        assert_eq!(opaque(host.path().join("etc").as_path()), None);
    }

    #[test]
    fn a_whiteout_naming_a_parent_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("layer");
        fs::create_dir(&dir).unwrap();
        symlink("/", dir.join("root")).unwrap();
        for name in [&b"a/.wh.."[..], b".wh..", b"root/.wh.."] {
            let err = Layer::new()
                .raw_name(name)
                .extract_overlay(&dir)
                .unwrap_err();
            assert!(matches!(err, Error::UnsafePath { .. }), "{err}");
        }
        assert_eq!(names_below(base.path()), ["", "layer", "layer/root"]);
    }
}
