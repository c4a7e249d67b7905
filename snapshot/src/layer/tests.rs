use super::*;
use crate::unpack::unpack_layer_file;
use crate::walk::StatWalk;
use ocibuild_image::digest::sha256_file;
use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::{chown, symlink, PermissionsExt};
use std::process::Command;

const LONG_DIR: &str = "long/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// A path longer than 255 bytes.
fn very_long_path() -> String {
    format!("{LONG_DIR}/{}", "b".repeat(150))
}

/// A path between 100 and 255 bytes.
fn mid_path() -> String {
    format!("mid/{}", "c".repeat(120))
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

/// The tree before the changes.
fn make_base(root: &Path) {
    write(root, "etc/passwd", b"root:x:0:0\n");
    write(root, "etc/conf.d/a", b"a");
    write(root, "usr/bin/tool", b"#!/bin/sh\n");
    write(root, "op/x", b"x");
    write(root, "op/sub/y", b"y");
    write(root, "gone/deep/f", b"f");
    write(root, "bin/rmme", b"bye");
    write(root, "bin/keep", b"stay");
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
}

/// Applies every kind of change the layer must carry.
fn change_tree(root: &Path) {
    write(root, "etc/new", b"new file");
    write(root, "etc/passwd", b"toor:x:0:0\n");
    fs::remove_file(root.join("bin/rmme")).unwrap();
    fs::remove_dir_all(root.join("gone")).unwrap();
    write(root, "op.new/z", b"z");
    fs::remove_dir_all(root.join("op")).unwrap();
    fs::rename(root.join("op.new"), root.join("op")).unwrap();
    fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool2")).unwrap();
    write(root, &very_long_path(), b"long");
    write(root, &mid_path(), b"mid");
    write(
        root,
        "usr/share/caf\u{e9}.txt",
        "d\u{e9}j\u{e0} vu".as_bytes(),
    );
    symlink("tool", root.join("usr/bin/link")).unwrap();
    symlink(
        format!("/{}", very_long_path()),
        root.join("usr/bin/longlink"),
    )
    .unwrap();
    write(root, "usr/bin/su", b"su");
    fs::set_permissions(root.join("usr/bin/su"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::create_dir(root.join("tmp")).unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    chown(root.join("bin/keep"), Some(1000), Some(1001)).unwrap();
    let _ = xattr::set(root.join("etc/passwd"), "user.test", b"hello");
    fs::create_dir(root.join("run")).unwrap();
    mkfifo(&root.join("run/fifo"));
    mknod_char(&root.join("run/null"), 1, 3);
}

/// Makes a character device; silently does nothing where that is not permitted.
fn mknod_char(path: &Path, major: u32, minor: u32) {
    let _ = nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(major.into(), minor.into()),
    );
}

/// A comparable description of one path.
#[derive(Debug, PartialEq, Eq)]
struct Summary {
    file_type: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    rdev: u64,
    content: Vec<u8>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn summarize(root: &Path) -> BTreeMap<PathBuf, Summary> {
    let mut out = BTreeMap::new();
    summarize_dir(root, Path::new(""), &mut out);
    out
}

fn summarize_dir(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Summary>) {
    for entry in fs::read_dir(root.join(rel)).unwrap() {
        let entry = entry.unwrap();
        let child_rel = rel.join(entry.file_name());
        let host = entry.path();
        let meta = fs::symlink_metadata(&host).unwrap();
        let file_type = meta.mode() & libc::S_IFMT;
        let content = match file_type {
            libc::S_IFREG => fs::read(&host).unwrap(),
            libc::S_IFLNK => fs::read_link(&host).unwrap().into_os_string().into_vec(),
            _ => Vec::new(),
        };
        let summary = Summary {
            file_type,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: meta.mtime(),
            rdev: meta.rdev(),
            content,
            xattrs: read_xattrs(&host).unwrap(),
        };
        out.insert(child_rel.clone(), summary);
        if file_type == libc::S_IFDIR {
            summarize_dir(root, &child_rel, out);
        }
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    copy: PathBuf,
    work: PathBuf,
    changes: Changes,
}

/// Builds the base tree, copies it, changes the original and diffs it.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let copy = dir.path().join("copy");
    let work = dir.path().join("work");
    fs::create_dir(&root).unwrap();
    fs::create_dir(&work).unwrap();
    make_base(&root);
    let status = Command::new("cp")
        .arg("-a")
        .arg(&root)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let mut walk = StatWalk::new(Vec::new());
    walk.baseline(&root).unwrap();
    change_tree(&root);
    let changes = walk.changes(&root).unwrap();
    Fixture {
        _dir: dir,
        root,
        copy,
        work,
        changes,
    }
}

fn decompress(path: &Path, compression: Compression) -> Vec<u8> {
    let file = File::open(path).unwrap();
    let mut out = Vec::new();
    match compression {
        Compression::None => io::BufReader::new(file).read_to_end(&mut out).unwrap(),
        Compression::Gzip { .. } => flate2::read::GzDecoder::new(file)
            .read_to_end(&mut out)
            .unwrap(),
        Compression::Zstd { .. } => zstd::Decoder::new(file)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap(),
    };
    out
}

fn sha256_bytes(bytes: &[u8]) -> String {
    let mut w = HashingWriter::new(io::sink());
    w.write_all(bytes).unwrap();
    w.finish().1
}

/// One entry as the `tar` crate reads it back.
#[derive(Debug)]
struct ReadEntry {
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    link: Option<Vec<u8>>,
    dev: Option<(u32, u32)>,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn read_entries(tar_bytes: &[u8]) -> Vec<(Vec<u8>, ReadEntry)> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut xattrs = Vec::new();
        if let Some(exts) = entry.pax_extensions().unwrap() {
            for ext in exts {
                let ext = ext.unwrap();
                if let Some(name) = ext.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
        let h = entry.header();
        let read = ReadEntry {
            kind: h.entry_type(),
            mode: h.mode().unwrap(),
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
            mtime: h.mtime().unwrap(),
            link: entry.link_name_bytes().map(|l| l.into_owned()),
            dev: h.device_major().unwrap().zip(h.device_minor().unwrap()),
            xattrs,
        };
        out.push((entry.path_bytes().into_owned(), read));
    }
    out
}

fn find<'a>(entries: &'a [(Vec<u8>, ReadEntry)], name: &str) -> &'a ReadEntry {
    entries
        .iter()
        .find(|(n, _)| n == name.as_bytes())
        .map(|(_, e)| e)
        .unwrap_or_else(|| panic!("no entry {name}"))
}

#[test]
fn changes_cover_the_fixture() {
    let f = fixture();
    assert_eq!(
        f.changes.deletions,
        ["bin/rmme", "gone"]
            .iter()
            .map(PathBuf::from)
            .collect::<BTreeSet<_>>()
    );
    assert_eq!(
        f.changes.opaque_dirs,
        ["op"].iter().map(PathBuf::from).collect::<BTreeSet<_>>()
    );
}

#[test]
fn round_trip_gzip_layer() {
    let f = fixture();
    let info = write_layer(&f.root, &f.changes, &f.work, &LayerOptions::default()).unwrap();
    let out = info.path.clone();
    assert_eq!(out, f.work.join(layer_file_name(&info.digest)));
    assert_eq!(info.compression, Compression::Gzip { level: 6 });
    assert_eq!(info.digest, sha256_file(&out).unwrap().0);
    assert_eq!(info.size, fs::metadata(&out).unwrap().len());
    let tar_bytes = decompress(&out, info.compression);
    assert_eq!(info.diff_id, sha256_bytes(&tar_bytes));
    assert_eq!(tar_bytes.len() % 512, 0);

    let entries = read_entries(&tar_bytes);
    let expect_xattr = xattr::get(f.root.join("etc/passwd"), "user.test")
        .unwrap()
        .is_some();
    check_entries(&entries, expect_xattr);

    unpack_layer_file(&out, &f.copy).unwrap();
    assert_eq!(summarize(&f.copy), summarize(&f.root));
    let tool = fs::metadata(f.copy.join("usr/bin/tool")).unwrap();
    let tool2 = fs::metadata(f.copy.join("usr/bin/tool2")).unwrap();
    assert_eq!(tool.ino(), tool2.ino());
    assert_eq!(
        fs::read_dir(&f.work).unwrap().count(),
        1,
        "temp file left behind"
    );
}

fn check_entries(entries: &[(Vec<u8>, ReadEntry)], expect_xattr: bool) {
    let names: Vec<&[u8]> = entries.iter().map(|(n, _)| n.as_slice()).collect();
    let mut sorted = names.clone();
    sorted.sort_by_key(|n| PathBuf::from(std::ffi::OsStr::from_bytes(n)));
    assert_eq!(names, sorted, "entries in path order");
    let etc = find(entries, "etc/");
    assert_eq!(etc.kind, tar::EntryType::Directory);
    let passwd = find(entries, "etc/passwd");
    assert_eq!(passwd.kind, tar::EntryType::Regular);
    assert_eq!(passwd.mode, 0o644);
    if expect_xattr {
        assert_eq!(
            passwd.xattrs,
            vec![("user.test".to_string(), b"hello".to_vec())]
        );
    }
    let rmme = find(entries, "bin/.wh.rmme");
    assert_eq!(
        (rmme.kind, rmme.mode, rmme.uid, rmme.mtime),
        (tar::EntryType::Regular, 0, 0, 0)
    );
    find(entries, ".wh.gone");
    find(entries, "op/");
    find(entries, "op/.wh..wh..opq");
    assert_eq!(find(entries, "op/z").kind, tar::EntryType::Regular);
    let keep = find(entries, "bin/keep");
    assert_eq!((keep.uid, keep.gid), (1000, 1001));
    let tool2 = find(entries, "usr/bin/tool2");
    assert_eq!(tool2.kind, tar::EntryType::Link);
    assert_eq!(tool2.link.as_deref(), Some(&b"usr/bin/tool"[..]));
    let link = find(entries, "usr/bin/link");
    assert_eq!(link.kind, tar::EntryType::Symlink);
    assert_eq!(link.link.as_deref(), Some(&b"tool"[..]));
    let longlink = find(entries, "usr/bin/longlink");
    assert_eq!(
        longlink.link.as_deref(),
        Some(format!("/{}", very_long_path()).as_bytes())
    );
    assert_eq!(find(entries, "usr/bin/su").mode, 0o4755);
    assert_eq!(find(entries, "tmp/").mode, 0o1777);
    assert_eq!(find(entries, "run/fifo").kind, tar::EntryType::Fifo);
    if let Some((_, null)) = entries.iter().find(|(n, _)| n == b"run/null") {
        assert_eq!(null.kind, tar::EntryType::Char);
        assert_eq!(null.dev, Some((1, 3)));
    }
    find(entries, &very_long_path());
    find(entries, &mid_path());
    find(entries, "usr/share/caf\u{e9}.txt");
    assert!(!names
        .iter()
        .any(|n| n.starts_with(b"bin/rmme") || n.starts_with(b"gone/")));
    assert!(!names
        .iter()
        .any(|n| n.is_empty() || *n == b"./" || *n == b"/"));
}

#[test]
fn xattrs_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    write(&root, "f", b"x");
    if xattr::set(root.join("f"), "user.test", b"v").is_err() {
        return; // no user xattrs on this filesystem
    }
    xattr::set(root.join("f"), "trusted.skip", b"no").ok();
    let changes = Changes {
        upserts: [PathBuf::from("f")].into_iter().collect(),
        ..Changes::default()
    };
    let opts = LayerOptions {
        compression: Compression::None,
        mtime: None,
    };
    let info = write_layer(&root, &changes, dir.path(), &opts).unwrap();
    let entries = read_entries(&fs::read(&info.path).unwrap());
    assert_eq!(
        find(&entries, "f").xattrs,
        vec![("user.test".to_string(), b"v".to_vec())]
    );
}

#[test]
fn fixed_mtime_and_determinism() {
    let f = fixture();
    let opts = LayerOptions {
        compression: Compression::Gzip { level: 6 },
        mtime: Some(1_234_567_890),
    };
    let a = write_layer(&f.root, &f.changes, &f.work, &opts).unwrap();
    let b = write_layer(&f.root, &f.changes, &f.work, &opts).unwrap();
    assert_eq!(a.digest, b.digest);
    assert_eq!(
        a.path, b.path,
        "the same bytes share their digest-named file"
    );
    b.verify().unwrap();
    assert_eq!(a.diff_id, b.diff_id);
    let entries = read_entries(&decompress(&a.path, a.compression));
    assert!(entries.iter().all(|(_, e)| e.mtime == 1_234_567_890));
}

#[test]
fn plain_and_zstd_layers() {
    let f = fixture();
    let mut zstd_layer = PathBuf::new();
    for compression in [Compression::None, Compression::Zstd { level: 3 }] {
        let opts = LayerOptions {
            compression,
            mtime: None,
        };
        let info = write_layer(&f.root, &f.changes, &f.work, &opts).unwrap();
        let out = info.path.clone();
        if compression != Compression::None {
            zstd_layer = out.clone();
        }
        assert_eq!(info.digest, sha256_file(&out).unwrap().0);
        assert_eq!(info.diff_id, sha256_bytes(&decompress(&out, compression)));
        if compression == Compression::None {
            assert_eq!(info.digest, info.diff_id);
        }
    }
    let copy_root = f.copy.clone();
    unpack_layer_file(&zstd_layer, &copy_root).unwrap();
    assert_eq!(summarize(&f.copy), summarize(&f.root));
}

#[test]
fn gnu_tools_accept_the_layer() {
    let f = fixture();
    let out = write_layer(&f.root, &f.changes, &f.work, &LayerOptions::default())
        .unwrap()
        .path;
    let gzip = Command::new("gzip").arg("-t").arg(&out).status().unwrap();
    assert!(gzip.success());
    let listing = Command::new("tar").arg("-tzvf").arg(&out).output().unwrap();
    assert!(
        listing.status.success(),
        "{}",
        String::from_utf8_lossy(&listing.stderr)
    );
    let text = String::from_utf8_lossy(&listing.stdout);
    assert!(text.contains(&very_long_path()), "{text}");
    assert!(text.contains(&mid_path()), "{text}");
    assert!(
        text.contains("usr/bin/tool2 link to usr/bin/tool"),
        "{text}"
    );
    assert!(text.contains("op/.wh..wh..opq"), "{text}");
    assert!(!text.contains("PaxHeader"), "{text}");
}

#[test]
fn paths_below_a_symlink_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    write(dir.path(), "secret", b"host file");
    symlink(dir.path(), root.join("link")).unwrap();
    let changes = Changes {
        upserts: [PathBuf::from("link/secret")].into_iter().collect(),
        ..Changes::default()
    };
    let err = write_layer(&root, &changes, dir.path(), &LayerOptions::default()).unwrap_err();
    assert!(matches!(err, Error::UnsafePath { .. }), "{err}");
}

#[test]
fn media_types() {
    let info = |compression| LayerInfo {
        digest: String::new(),
        diff_id: String::new(),
        size: 0,
        path: PathBuf::new(),
        compression,
    };
    let gz = info(Compression::default());
    assert_eq!(
        gz.oci_media_type(),
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(
        gz.docker_media_type(),
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    let zst = info(Compression::Zstd { level: 3 });
    assert_eq!(
        zst.oci_media_type(),
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_eq!(zst.docker_media_type(), zst.oci_media_type());
    assert_eq!(
        info(Compression::None).oci_media_type(),
        "application/vnd.oci.image.layer.v1.tar"
    );
}

#[test]
fn bad_level_and_missing_path_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LayerOptions {
        compression: Compression::Gzip { level: 42 },
        mtime: None,
    };
    let err = write_layer(dir.path(), &Changes::default(), dir.path(), &opts);
    assert!(matches!(err, Err(Error::InvalidOption(_))));
    let changes = Changes {
        upserts: [PathBuf::from("missing")].into_iter().collect(),
        ..Changes::default()
    };
    let err = write_layer(dir.path(), &changes, dir.path(), &LayerOptions::default()).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "temp file removed"
    );
}

#[test]
fn empty_changes_give_an_empty_tar() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let opts = LayerOptions {
        compression: Compression::None,
        mtime: None,
    };
    let info = write_layer(dir.path(), &Changes::default(), out.path(), &opts).unwrap();
    assert_eq!(info.size, 1024);
}

#[test]
fn compression_and_info_serde() {
    let json = serde_json::to_string(&Compression::Gzip { level: 6 }).unwrap();
    assert_eq!(json, r#"{"gzip":{"level":6}}"#);
    let info = LayerInfo {
        digest: "sha256:ab".into(),
        diff_id: "sha256:cd".into(),
        size: 3,
        path: PathBuf::from("/x"),
        compression: Compression::None,
    };
    let back: LayerInfo = serde_json::from_str(&serde_json::to_string(&info).unwrap()).unwrap();
    assert_eq!(back, info);
}

/// ONBUILD with two triggers once wrote both layers to one path: the first layer's record
/// then described the second one's bytes. Layers written one after the other into one
/// directory each keep their own file, and each file matches its record.
#[test]
fn layers_written_into_one_directory_never_share_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let layers = dir.path().join("layers");
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(&layers).unwrap();
    let mut written = Vec::new();
    for name in ["a", "b"] {
        write(&root, name, name.as_bytes());
        let changes = Changes {
            upserts: [PathBuf::from(name)].into_iter().collect(),
            ..Changes::default()
        };
        written.push(write_layer(&root, &changes, &layers, &LayerOptions::default()).unwrap());
    }
    assert_ne!(written[0].path, written[1].path);
    for info in &written {
        info.verify().unwrap();
    }
    let names: Vec<_> = fs::read_dir(&layers)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "no temporary file is left: {names:?}");
}

#[test]
fn a_layer_file_changed_after_writing_fails_verification() {
    let f = fixture();
    let mut info = write_layer(&f.root, &f.changes, &f.work, &LayerOptions::default()).unwrap();
    info.digest = format!("sha256:{}", "0".repeat(64));
    let err = info.verify().unwrap_err();
    assert!(matches!(err, Error::CorruptLayer { .. }), "{err}");
}

/// A layer of many gzip blocks unpacks with our own unpacker, and its bytes are exactly
/// what one compression thread makes of its tar: the digest is the same on any machine.
#[test]
fn a_layer_of_many_blocks_round_trips_and_matches_one_thread() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let copy = dir.path().join("copy");
    fs::create_dir_all(&copy).unwrap();
    let big = crate::compress::tests::mixed_data(20 * crate::compress::GZIP_BLOCK_SIZE + 5);
    write(&root, "big/blob", &big);
    write(&root, "big/small", b"small");
    let changes = Changes {
        upserts: ["big", "big/blob", "big/small"]
            .into_iter()
            .map(PathBuf::from)
            .collect(),
        ..Changes::default()
    };
    let info = write_layer(&root, &changes, dir.path(), &LayerOptions::default()).unwrap();
    let tar_bytes = decompress(&info.path, info.compression);
    let mut one_thread = crate::compress::ParallelGzip::new(Vec::new(), 6, 1).unwrap();
    one_thread.write_all(&tar_bytes).unwrap();
    assert!(one_thread.finish().unwrap() == fs::read(&info.path).unwrap());
    unpack_layer_file(&info.path, &copy).unwrap();
    assert!(fs::read(copy.join("big/blob")).unwrap() == big);
    assert_eq!(summarize(&copy), summarize(&root));
}
