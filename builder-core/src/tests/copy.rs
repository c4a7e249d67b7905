//! COPY and ADD behaviour, written as a specification: each test names the rule it checks.

use crate::copy::{
    add_sources, copy_sources, source_kind, AddOptions, CopyError, CopyOptions, SourceKind,
    SourceRoot,
};
use ocibuild_dockerfile::pathmatch::IgnoreRules;
use ocibuild_snapshot::RootDir;
use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

// ---------------------------------------------------------------------------------------
// helpers

fn context() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("src/a")).unwrap();
    fs::create_dir_all(root.join("src/b")).unwrap();
    fs::write(root.join("src/a/main.rs"), "a main").unwrap();
    fs::write(root.join("src/a/notes.txt"), "a notes").unwrap();
    fs::write(root.join("src/b/main.rs"), "b main").unwrap();
    fs::write(root.join("src/lib.rs"), "lib").unwrap();
    fs::write(root.join("home.md"), "home").unwrap();
    fs::write(root.join("home.txt"), "home txt").unwrap();
    fs::write(root.join("hello.txt"), "hello").unwrap();
    fs::write(root.join("file1"), "1").unwrap();
    fs::write(root.join("file2"), "2").unwrap();
    dir
}

fn ctx_root(dir: &Path) -> SourceRoot<'_> {
    SourceRoot {
        dir,
        ignore: None,
        origin: "build context".into(),
        keep_owner: false,
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn copy(ctx: &Path, rootfs: &Path, sources: &[&str], dest: &str) -> Result<(), CopyError> {
    copy_with(ctx, rootfs, sources, dest, &CopyOptions::default())
}

fn copy_with(
    ctx: &Path,
    rootfs: &Path,
    sources: &[&str],
    dest: &str,
    opts: &CopyOptions,
) -> Result<(), CopyError> {
    let root = RootDir::open(rootfs)?;
    copy_sources(&ctx_root(ctx), &strings(sources), dest, &root, opts)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every path under `root`, relative, sorted.
fn tree(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            e.path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    out.sort();
    out
}

async fn add(
    ctx: &Path,
    rootfs: &Path,
    sources: &[&str],
    dest: &str,
    opts: &CopyOptions,
    add: &AddOptions,
) -> Result<(), CopyError> {
    let scratch = tempfile::tempdir().unwrap();
    let root = RootDir::open(rootfs)?;
    add_sources(
        &ctx_root(ctx),
        &strings(sources),
        dest,
        &root,
        opts,
        add,
        &scratch.path().join("downloads"),
    )
    .await
}

// ---------------------------------------------------------------------------------------
// 1. the build context cannot be left

#[test]
fn a_source_with_dotdot_leaving_the_context_is_refused() {
    let ctx = context();
    let rootfs = tempfile::tempdir().unwrap();
    let err = copy(ctx.path(), rootfs.path(), &["src/../../etc/passwd"], "/x").unwrap_err();
    assert!(matches!(err, CopyError::OutsideRoot { .. }), "{err}");
    assert!(
        err.to_string().contains("outside the build context"),
        "{err}"
    );
    // `..` that stays inside is fine.
    copy(ctx.path(), rootfs.path(), &["src/../hello.txt"], "/x").unwrap();
    assert_eq!(read(&rootfs.path().join("x")), "hello");
}

#[test]
fn a_source_symlink_with_an_absolute_target_is_refused() {
    let ctx = context();
    let rootfs = tempfile::tempdir().unwrap();
    symlink("/etc/passwd", ctx.path().join("passwd")).unwrap();
    let err = copy(ctx.path(), rootfs.path(), &["passwd"], "/x").unwrap_err();
    assert!(matches!(err, CopyError::SymlinkOutside { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.starts_with("passwd: symlink"), "{msg}");
    assert!(
        msg.contains("to /etc/passwd points outside the build context"),
        "{msg}"
    );
    assert!(!rootfs.path().join("x").exists());
}

#[test]
fn a_source_symlink_climbing_out_of_the_context_is_refused() {
    let ctx = context();
    let rootfs = tempfile::tempdir().unwrap();
    symlink("../../x", ctx.path().join("src/up")).unwrap();
    let err = copy(ctx.path(), rootfs.path(), &["src/up"], "/x").unwrap_err();
    assert!(matches!(err, CopyError::SymlinkOutside { .. }), "{err}");
    assert!(err.to_string().contains("../../x"), "{err}");
}

#[test]
fn a_source_passing_through_a_symlinked_directory_outside_is_refused() {
    let ctx = context();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret"), "s").unwrap();
    symlink(outside.path(), ctx.path().join("ext")).unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    let err = copy(ctx.path(), rootfs.path(), &["ext/secret"], "/x").unwrap_err();
    assert!(matches!(err, CopyError::SymlinkOutside { .. }), "{err}");
    let err = copy(ctx.path(), rootfs.path(), &["ext/*"], "/x/").unwrap_err();
    assert!(matches!(err, CopyError::SymlinkOutside { .. }), "{err}");
}

#[test]
fn a_source_symlink_inside_the_context_is_followed() {
    let ctx = context();
    let rootfs = tempfile::tempdir().unwrap();
    symlink("../hello.txt", ctx.path().join("src/link")).unwrap();
    symlink("src/a", ctx.path().join("adir")).unwrap();
    copy(ctx.path(), rootfs.path(), &["src/link"], "/out/").unwrap();
    let copied = rootfs.path().join("out/link");
    assert!(!fs::symlink_metadata(&copied).unwrap().is_symlink());
    assert_eq!(read(&copied), "hello");
    copy(ctx.path(), rootfs.path(), &["adir/"], "/a/").unwrap();
    assert_eq!(read(&rootfs.path().join("a/main.rs")), "a main");
}

#[test]
fn symlinks_inside_a_copied_directory_are_copied_verbatim_whatever_their_target() {
    let ctx = context();
    let rootfs = tempfile::tempdir().unwrap();
    symlink("/etc/passwd", ctx.path().join("src/abs")).unwrap();
    symlink("../../../outside", ctx.path().join("src/rel")).unwrap();
    copy(ctx.path(), rootfs.path(), &["src"], "/app/").unwrap();
    assert_eq!(
        fs::read_link(rootfs.path().join("app/abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        fs::read_link(rootfs.path().join("app/rel")).unwrap(),
        Path::new("../../../outside")
    );
}

#[test]
fn copying_from_a_stage_follows_symlinks_inside_that_root_filesystem() {
    let stage = tempfile::tempdir().unwrap();
    fs::create_dir_all(stage.path().join("etc")).unwrap();
    fs::write(stage.path().join("etc/conf"), "stage conf").unwrap();
    symlink("/etc/conf", stage.path().join("link")).unwrap();
    std::os::unix::fs::lchown(stage.path().join("etc/conf"), Some(7), Some(8)).unwrap();
    let from = SourceRoot {
        dir: stage.path(),
        ignore: None,
        origin: "stage \"build\"".into(),
        keep_owner: true,
    };
    let rootfs = tempfile::tempdir().unwrap();
    copy_sources(
        &from,
        &strings(&["link"]),
        "/conf",
        &RootDir::open(rootfs.path()).unwrap(),
        &CopyOptions::default(),
    )
    .unwrap();
    let meta = fs::metadata(rootfs.path().join("conf")).unwrap();
    assert_eq!(read(&rootfs.path().join("conf")), "stage conf");
    assert_eq!((meta.uid(), meta.gid()), (7, 8), "stage files keep owners");
}

// ---------------------------------------------------------------------------------------
// 2. wildcards

#[test]
fn wildcards_star_question_mark_class_and_double_star_match_paths_in_the_context() {
    let ctx = context();
    let rootfs = tempfile::tempdir().unwrap();
    copy(ctx.path(), rootfs.path(), &["home.*"], "/star/").unwrap();
    assert_eq!(tree(&rootfs.path().join("star")), ["home.md", "home.txt"]);
    copy(ctx.path(), rootfs.path(), &["file?"], "/q/").unwrap();
    assert_eq!(tree(&rootfs.path().join("q")), ["file1", "file2"]);
    copy(ctx.path(), rootfs.path(), &["file[2-9]"], "/class/").unwrap();
    assert_eq!(tree(&rootfs.path().join("class")), ["file2"]);
    copy(ctx.path(), rootfs.path(), &["src/**/main.rs"], "/deep/").unwrap();
    // both match the name main.rs: the last in sorted order (src/b) wins
    assert_eq!(tree(&rootfs.path().join("deep")), ["main.rs"]);
    assert_eq!(read(&rootfs.path().join("deep/main.rs")), "b main");
}

#[test]
fn a_wildcard_matching_a_directory_copies_its_contents_in_sorted_order() {
    let ctx = context();
    let rootfs = tempfile::tempdir().unwrap();
    copy(ctx.path(), rootfs.path(), &["src/[ab]"], "/merged/").unwrap();
    assert_eq!(
        tree(&rootfs.path().join("merged")),
        ["main.rs", "notes.txt"]
    );
    assert_eq!(read(&rootfs.path().join("merged/main.rs")), "b main");
}

#[test]
fn dockerignored_paths_never_match_a_wildcard() {
    let ctx = context();
    let rootfs = tempfile::tempdir().unwrap();
    let rules = IgnoreRules::parse("home.txt\n");
    let from = SourceRoot {
        ignore: Some(&rules),
        ..ctx_root(ctx.path())
    };
    copy_sources(
        &from,
        &strings(&["home.*"]),
        "/h/",
        &RootDir::open(rootfs.path()).unwrap(),
        &CopyOptions::default(),
    )
    .unwrap();
    assert_eq!(tree(&rootfs.path().join("h")), ["home.md"]);
    // Ignored paths are not in the context at all: the wildcard matches nothing.
    copy_sources(
        &from,
        &strings(&["home.t*"]),
        "/i/",
        &RootDir::open(rootfs.path()).unwrap(),
        &CopyOptions::default(),
    )
    .unwrap();
    assert!(!rootfs.path().join("i").exists());
}

/// BuildKit copies every local source with AllowEmptyWildcard
/// (frontend/dockerfile/dockerfile2llb/convert_copy.go, dispatchCopy), and its copy
/// backend returns early on an empty match (solver/llbsolver/file/backend.go, docopy).
#[test]
fn a_wildcard_without_match_copies_nothing_but_its_directory_must_exist() {
    let ctx = context();
    let rootfs = tempfile::tempdir().unwrap();
    copy(ctx.path(), rootfs.path(), &["src/*.go"], "/x/").unwrap();
    assert!(!rootfs.path().join("x").exists());
    let err = copy(ctx.path(), rootfs.path(), &["nosuchdir/*.go"], "/x/").unwrap_err();
    assert!(matches!(err, CopyError::NotFound { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "nosuchdir/*.go: no such file or directory in the build context"
    );
}

// ---------------------------------------------------------------------------------------
// 3. --exclude

fn excluding(patterns: &[&str]) -> CopyOptions {
    CopyOptions {
        exclude: strings(patterns),
        ..CopyOptions::default()
    }
}

#[test]
fn exclude_drops_matching_sources_of_a_wildcard() {
    let ctx = context();
    let rootfs = tempfile::tempdir().unwrap();
    let opts = excluding(&["*.txt"]);
    copy_with(ctx.path(), rootfs.path(), &["h*"], "/d/", &opts).unwrap();
    assert_eq!(tree(&rootfs.path().join("d")), ["home.md"]);
}

#[test]
fn exclude_drops_directories_with_their_contents_and_honours_exceptions() {
    let ctx = context();
    let rootfs = tempfile::tempdir().unwrap();
    let opts = excluding(&["src/a", "*.txt", "!hello.txt", "file?"]);
    copy_with(ctx.path(), rootfs.path(), &["."], "/all/", &opts).unwrap();
    assert_eq!(
        tree(&rootfs.path().join("all")),
        [
            "hello.txt",
            "home.md",
            "src",
            "src/b",
            "src/b/main.rs",
            "src/lib.rs"
        ]
    );
}

#[test]
fn exclude_patterns_also_match_relative_to_a_copied_directory() {
    let ctx = context();
    let rootfs = tempfile::tempdir().unwrap();
    let opts = excluding(&["*.txt"]);
    copy_with(ctx.path(), rootfs.path(), &["src/a"], "/a/", &opts).unwrap();
    assert_eq!(tree(&rootfs.path().join("a")), ["main.rs"]);
}

#[test]
fn a_source_that_is_entirely_excluded_is_not_found() {
    let ctx = context();
    let rootfs = tempfile::tempdir().unwrap();
    let err = copy_with(
        ctx.path(),
        rootfs.path(),
        &["hello.txt"],
        "/x/",
        &excluding(&["*.txt"]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("--exclude"), "{err}");
}

// ---------------------------------------------------------------------------------------
// 4. --parents

fn parents() -> CopyOptions {
    CopyOptions {
        parents: true,
        ..CopyOptions::default()
    }
}

#[test]
fn parents_keeps_the_source_directories_relative_to_the_context() {
    let ctx = context();
    let rootfs = tempfile::tempdir().unwrap();
    copy_with(
        ctx.path(),
        rootfs.path(),
        &["src/a/main.rs", "src/b/main.rs"],
        "/p/",
        &parents(),
    )
    .unwrap();
    assert_eq!(read(&rootfs.path().join("p/src/a/main.rs")), "a main");
    assert_eq!(read(&rootfs.path().join("p/src/b/main.rs")), "b main");
}

#[test]
fn parents_with_a_wildcard_and_with_a_directory() {
    let ctx = context();
    let rootfs = tempfile::tempdir().unwrap();
    copy_with(
        ctx.path(),
        rootfs.path(),
        &["src/*/main.rs"],
        "/w/",
        &parents(),
    )
    .unwrap();
    assert_eq!(
        tree(&rootfs.path().join("w")),
        ["src", "src/a", "src/a/main.rs", "src/b", "src/b/main.rs"]
    );
    copy_with(ctx.path(), rootfs.path(), &["src/b"], "/d/", &parents()).unwrap();
    assert_eq!(
        tree(&rootfs.path().join("d")),
        ["src", "src/b", "src/b/main.rs"]
    );
}

#[test]
fn parents_starts_at_a_dot_pivot_in_the_source() {
    let ctx = context();
    fs::create_dir_all(ctx.path().join("x/y")).unwrap();
    fs::write(ctx.path().join("x/y/z"), "z").unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    copy_with(
        ctx.path(),
        rootfs.path(),
        &["./x/./y/z"],
        "/dst/",
        &parents(),
    )
    .unwrap();
    assert_eq!(tree(&rootfs.path().join("dst")), ["y", "y/z"]);
    assert_eq!(read(&rootfs.path().join("dst/y/z")), "z");
    // without --parents the pivot is only a path component
    copy(ctx.path(), rootfs.path(), &["./x/./y/z"], "/flat/").unwrap();
    assert_eq!(tree(&rootfs.path().join("flat")), ["z"]);
}

// ---------------------------------------------------------------------------------------
// 5. ADD of local archives

/// A tar with a directory, a file (owner 1234:5678, mode 0640, mtime 1000000), a symlink,
/// a hard link and a whiteout-looking file.
fn sample_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_path("app/").unwrap();
    h.set_mode(0o750);
    h.set_uid(1234);
    h.set_gid(5678);
    h.set_mtime(2_000_000);
    h.set_size(0);
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();
    let data = b"payload";
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_path("app/file.txt").unwrap();
    h.set_mode(0o640);
    h.set_uid(1234);
    h.set_gid(5678);
    h.set_mtime(1_000_000);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, &data[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    h.set_mtime(1_000_000);
    b.append_link(&mut h, "app/link", "file.txt").unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    b.append_link(&mut h, "app/hard", "app/file.txt").unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_path("app/.wh.gone").unwrap();
    h.set_mode(0o644);
    h.set_size(2);
    h.set_cksum();
    b.append(&h, &b"wh"[..]).unwrap();
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn bzip2(data: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn check_sample_extracted(dir: &Path, owner: (u32, u32)) {
    let file = dir.join("app/file.txt");
    assert_eq!(read(&file), "payload");
    let meta = fs::metadata(&file).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!(meta.mtime(), 1_000_000);
    assert_eq!((meta.uid(), meta.gid()), owner);
    let app = fs::metadata(dir.join("app")).unwrap();
    assert_eq!(app.mode() & 0o7777, 0o750);
    assert_eq!(
        app.mtime(),
        2_000_000,
        "directory mtime set after its contents"
    );
    assert_eq!(
        fs::read_link(dir.join("app/link")).unwrap(),
        Path::new("file.txt")
    );
    assert_eq!(
        fs::metadata(dir.join("app/hard")).unwrap().ino(),
        meta.ino()
    );
    assert_eq!(read(&dir.join("app/.wh.gone")), "wh");
}

#[tokio::test]
async fn add_extracts_plain_gzip_bzip2_and_xz_archives_recognised_by_content() {
    let ctx = context();
    let tar = sample_tar();
    fs::write(ctx.path().join("plain.tar"), &tar).unwrap();
    fs::write(ctx.path().join("g.tgz"), gzip(&tar)).unwrap();
    fs::write(ctx.path().join("b.bin"), bzip2(&tar)).unwrap(); // no telling name
    fs::write(ctx.path().join("x.tar.xz"), xz(&tar)).unwrap();
    for name in ["plain.tar", "g.tgz", "b.bin", "x.tar.xz"] {
        let rootfs = tempfile::tempdir().unwrap();
        add(
            ctx.path(),
            rootfs.path(),
            &[name],
            "/opt/",
            &CopyOptions::default(),
            &AddOptions::default(),
        )
        .await
        .unwrap();
        check_sample_extracted(&rootfs.path().join("opt"), (1234, 5678));
        assert!(!rootfs.path().join("opt").join(name).exists(), "{name}");
    }
}

#[tokio::test]
async fn add_with_chown_extracts_with_that_owner() {
    let ctx = context();
    fs::write(ctx.path().join("a.tar.gz"), gzip(&sample_tar())).unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    let opts = CopyOptions {
        chown: Some((10, 20)),
        ..CopyOptions::default()
    };
    add(
        ctx.path(),
        rootfs.path(),
        &["a.tar.gz"],
        "/o",
        &opts,
        &AddOptions::default(),
    )
    .await
    .unwrap();
    check_sample_extracted(&rootfs.path().join("o"), (10, 20));
}

#[tokio::test]
async fn add_unpack_false_copies_the_archive_as_a_file() {
    let ctx = context();
    let bytes = gzip(&sample_tar());
    fs::write(ctx.path().join("a.tar.gz"), &bytes).unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    let no = AddOptions {
        unpack: Some(false),
        ..AddOptions::default()
    };
    add(
        ctx.path(),
        rootfs.path(),
        &["a.tar.gz"],
        "/o/",
        &CopyOptions::default(),
        &no,
    )
    .await
    .unwrap();
    assert_eq!(fs::read(rootfs.path().join("o/a.tar.gz")).unwrap(), bytes);
}

#[tokio::test]
async fn add_copies_files_that_only_look_like_archives_by_name() {
    let ctx = context();
    fs::write(ctx.path().join("fake.tar.gz"), "not an archive").unwrap();
    fs::write(ctx.path().join("data.gz"), gzip(b"gzip but not tar")).unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    add(
        ctx.path(),
        rootfs.path(),
        &["fake.tar.gz", "data.gz"],
        "/o/",
        &CopyOptions::default(),
        &AddOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(read(&rootfs.path().join("o/fake.tar.gz")), "not an archive");
    assert!(rootfs.path().join("o/data.gz").is_file());
}

/// A tar whose member names try to leave the extraction directory.
fn hostile_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let raw = |b: &mut tar::Builder<Vec<u8>>, name: &[u8], kind: tar::EntryType, link: &str| {
        let data = b"evil";
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(kind);
        h.set_mode(0o644);
        if kind == tar::EntryType::Symlink {
            h.set_link_name(link).unwrap();
            h.set_size(0);
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
        } else {
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, &data[..]).unwrap();
        }
    };
    raw(&mut b, b"../../escaped", tar::EntryType::Regular, "");
    raw(&mut b, b"/abs", tar::EntryType::Regular, "");
    raw(&mut b, b"up", tar::EntryType::Symlink, "/");
    raw(&mut b, b"up/through-link", tar::EntryType::Regular, "");
    raw(&mut b, b"out", tar::EntryType::Symlink, "../../..");
    raw(&mut b, b"out/through-dotdot", tar::EntryType::Regular, "");
    b.into_inner().unwrap()
}

#[tokio::test]
async fn archive_members_never_leave_the_destination() {
    let ctx = context();
    fs::write(ctx.path().join("evil.tar"), hostile_tar()).unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    add(
        ctx.path(),
        rootfs.path(),
        &["evil.tar"],
        "/x/y/",
        &CopyOptions::default(),
        &AddOptions::default(),
    )
    .await
    .unwrap();
    let dest = rootfs.path().join("x/y");
    assert_eq!(
        tree(rootfs.path()),
        [
            "x",
            "x/y",
            "x/y/abs",
            "x/y/escaped",
            "x/y/out",
            "x/y/through-dotdot",
            "x/y/through-link",
            "x/y/up"
        ]
    );
    assert_eq!(fs::read_link(dest.join("up")).unwrap(), Path::new("/"));
}

#[tokio::test]
async fn a_corrupt_archive_is_a_clear_error() {
    let ctx = context();
    let gz = gzip(&sample_tar());
    let mut broken = gz.clone();
    broken.truncate(gz.len() / 2 + 20);
    fs::write(ctx.path().join("broken.tgz"), &broken).unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    let result = add(
        ctx.path(),
        rootfs.path(),
        &["broken.tgz"],
        "/o/",
        &CopyOptions::default(),
        &AddOptions::default(),
    )
    .await;
    let msg = result.unwrap_err().to_string();
    assert!(msg.contains("broken.tgz"), "{msg}");
    assert!(msg.contains("extracting the archive failed"), "{msg}");
}

// ---------------------------------------------------------------------------------------
// 6. ADD from a URL

struct Reply {
    status: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

/// Serves `routes` over HTTP/1.1 on 127.0.0.1 until the test ends; unknown paths get 404.
fn serve(routes: HashMap<&'static str, Reply>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = Arc::new(routes);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let routes = routes.clone();
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                let not_found = Reply {
                    status: "404 Not Found",
                    headers: vec![],
                    body: b"no".to_vec(),
                };
                let reply = routes.get(path.as_str()).unwrap_or(&not_found);
                let mut head = format!(
                    "HTTP/1.1 {}\r\nContent-Length: {}\r\nConnection: close\r\n",
                    reply.status,
                    reply.body.len()
                );
                for (k, v) in &reply.headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&reply.body);
            });
        }
    });
    format!("http://{addr}")
}

fn ok(body: &[u8], headers: Vec<(&'static str, String)>) -> Reply {
    Reply {
        status: "200 OK",
        headers,
        body: body.to_vec(),
    }
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

fn test_server() -> String {
    let mut routes = HashMap::new();
    routes.insert(
        "/files/tool.sh",
        ok(
            b"#!/bin/sh\necho tool\n",
            vec![("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT".into())],
        ),
    );
    routes.insert("/files/bundle.tar.gz", ok(&gzip(&sample_tar()), vec![]));
    routes.insert(
        "/download?id=7",
        ok(
            b"named",
            vec![(
                "Content-Disposition",
                "attachment; filename=\"report.csv\"".into(),
            )],
        ),
    );
    serve(routes)
}

#[tokio::test]
async fn add_url_downloads_into_a_directory_with_mode_0600_and_last_modified_mtime() {
    let base = test_server();
    let ctx = context();
    let rootfs = tempfile::tempdir().unwrap();
    let url = format!("{base}/files/tool.sh");
    add(
        ctx.path(),
        rootfs.path(),
        &[&url],
        "/usr/local/bin/",
        &CopyOptions::default(),
        &AddOptions::default(),
    )
    .await
    .unwrap();
    let file = rootfs.path().join("usr/local/bin/tool.sh");
    assert_eq!(read(&file), "#!/bin/sh\necho tool\n");
    let meta = fs::metadata(&file).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(meta.mtime(), 784_111_777);
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
}

#[tokio::test]
async fn add_url_to_a_file_path_and_with_chmod_and_checksum() {
    let base = test_server();
    let ctx = context();
    let rootfs = tempfile::tempdir().unwrap();
    let url = format!("{base}/files/tool.sh");
    let opts = CopyOptions {
        chmod: Some(0o755),
        chown: Some((1, 2)),
        ..CopyOptions::default()
    };
    let digest = format!("sha256:{}", sha256_hex(b"#!/bin/sh\necho tool\n"));
    let with_sum = AddOptions {
        checksum: Some(digest),
        ..AddOptions::default()
    };
    add(
        ctx.path(),
        rootfs.path(),
        &[&url],
        "/bin/tool",
        &opts,
        &with_sum,
    )
    .await
    .unwrap();
    let meta = fs::metadata(rootfs.path().join("bin/tool")).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o755, 1, 2)
    );
}

#[tokio::test]
async fn add_url_takes_the_name_from_content_disposition() {
    let base = test_server();
    let ctx = context();
    let rootfs = tempfile::tempdir().unwrap();
    let url = format!("{base}/download?id=7");
    add(
        ctx.path(),
        rootfs.path(),
        &[&url],
        "/data/",
        &CopyOptions::default(),
        &AddOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(read(&rootfs.path().join("data/report.csv")), "named");
}

#[tokio::test]
async fn add_url_archives_are_extracted_only_with_unpack_true() {
    let base = test_server();
    let ctx = context();
    let url = format!("{base}/files/bundle.tar.gz");
    let rootfs = tempfile::tempdir().unwrap();
    add(
        ctx.path(),
        rootfs.path(),
        &[&url],
        "/kept/",
        &CopyOptions::default(),
        &AddOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(tree(&rootfs.path().join("kept")), ["bundle.tar.gz"]);
    let unpack = AddOptions {
        unpack: Some(true),
        ..AddOptions::default()
    };
    add(
        ctx.path(),
        rootfs.path(),
        &[&url],
        "/unpacked/",
        &CopyOptions::default(),
        &unpack,
    )
    .await
    .unwrap();
    check_sample_extracted(&rootfs.path().join("unpacked"), (1234, 5678));
}

#[tokio::test]
async fn add_url_http_errors_name_the_status_and_the_url() {
    let base = test_server();
    let ctx = context();
    let rootfs = tempfile::tempdir().unwrap();
    let url = format!("{base}/missing.bin");
    let err = add(
        ctx.path(),
        rootfs.path(),
        &[&url],
        "/x/",
        &CopyOptions::default(),
        &AddOptions::default(),
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("404 Not Found"), "{msg}");
    assert!(msg.contains(&url), "{msg}");
    assert!(!rootfs.path().join("x").exists());
}

#[tokio::test]
async fn add_url_checksum_mismatch_names_both_digests() {
    let base = test_server();
    let ctx = context();
    let rootfs = tempfile::tempdir().unwrap();
    let url = format!("{base}/files/tool.sh");
    let wrong = format!("sha256:{}", "0".repeat(64));
    let add_opts = AddOptions {
        checksum: Some(wrong.clone()),
        ..AddOptions::default()
    };
    let err = add(
        ctx.path(),
        rootfs.path(),
        &[&url],
        "/x/",
        &CopyOptions::default(),
        &add_opts,
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    let actual = format!("sha256:{}", sha256_hex(b"#!/bin/sh\necho tool\n"));
    assert!(msg.contains("checksum mismatch"), "{msg}");
    assert!(msg.contains(&wrong) && msg.contains(&actual), "{msg}");
    assert!(!rootfs.path().join("x/tool.sh").exists());
}

#[tokio::test]
async fn checksum_with_a_local_source_and_malformed_checksums_are_refused() {
    let ctx = context();
    let rootfs = tempfile::tempdir().unwrap();
    let add_opts = AddOptions {
        checksum: Some(format!("sha256:{}", "0".repeat(64))),
        ..AddOptions::default()
    };
    let err = add(
        ctx.path(),
        rootfs.path(),
        &["hello.txt"],
        "/x/",
        &CopyOptions::default(),
        &add_opts,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CopyError::ChecksumNotUrl { .. }), "{err}");
    let bad = AddOptions {
        checksum: Some("md5:1234".into()),
        ..AddOptions::default()
    };
    let err = add(
        ctx.path(),
        rootfs.path(),
        &["http://127.0.0.1:9/x"],
        "/x/",
        &CopyOptions::default(),
        &bad,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("--checksum=md5:1234"), "{err}");
}

// ---------------------------------------------------------------------------------------
// 7. git sources

#[tokio::test]
async fn add_of_a_git_repository_is_not_supported_yet() {
    assert_eq!(
        source_kind("git@github.com:moby/buildkit.git", None),
        SourceKind::Git
    );
    assert_eq!(
        source_kind("https://github.com/moby/buildkit.git#v0.10.1", None),
        SourceKind::Git
    );
    assert_eq!(
        source_kind("https://example.com/repo", Some(true)),
        SourceKind::Git
    );
    assert_eq!(
        source_kind("https://example.com/a.tar.gz", None),
        SourceKind::Url
    );
    assert_eq!(source_kind("src/app.git", None), SourceKind::Local);
    let ctx = context();
    let rootfs = tempfile::tempdir().unwrap();
    for (src, keep) in [
        ("git@github.com:moby/buildkit.git", None),
        ("https://example.com/r.git", Some(true)),
    ] {
        let add_opts = AddOptions {
            keep_git_dir: keep,
            ..AddOptions::default()
        };
        let err = add(
            ctx.path(),
            rootfs.path(),
            &[src],
            "/src/",
            &CopyOptions::default(),
            &add_opts,
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("ADD of a git repository is not supported yet"),
            "{err}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 8. what worked before keeps working

#[tokio::test]
async fn add_of_plain_files_and_directories_behaves_like_copy() {
    let ctx = context();
    let rootfs = tempfile::tempdir().unwrap();
    add(
        ctx.path(),
        rootfs.path(),
        &["src", "hello.txt"],
        "/app/",
        &CopyOptions::default(),
        &AddOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(read(&rootfs.path().join("app/lib.rs")), "lib");
    assert_eq!(read(&rootfs.path().join("app/hello.txt")), "hello");
    let meta = fs::metadata(rootfs.path().join("app/hello.txt")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "context files become 0:0");
    let err = add(
        ctx.path(),
        rootfs.path(),
        &["src", "hello.txt"],
        "/app",
        &CopyOptions::default(),
        &AddOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CopyError::DestNotDir { .. }), "{err}");
    fs::set_permissions(
        ctx.path().join("hello.txt"),
        fs::Permissions::from_mode(0o604),
    )
    .unwrap();
    copy(ctx.path(), rootfs.path(), &["hello.txt"], "/m").unwrap();
    assert_eq!(
        fs::metadata(rootfs.path().join("m")).unwrap().mode() & 0o7777,
        0o604
    );
}

/// The directory COPY/ADD creates for a directory source is made, not copied: BuildKit's
/// fsutil `prepareTargetDir` creates it with `MkdirAll(target, 0755, chown, utime)` and
/// `copy` then leaves its metadata alone (the top level is copied with
/// `overwriteTargetMetadata=false`, so `copyFileInfo` runs only for entries it created).
/// So it is 0755 and owned by `--chown` (or root) — not the source directory's mode, and
/// not `--chmod`, which applies to the copied entries.
#[test]
fn a_directory_destination_that_copy_creates_is_0755_whatever_the_source_mode_or_chmod() {
    let ctx = context();
    let rootfs = tempfile::tempdir().unwrap();
    fs::create_dir(ctx.path().join("qux")).unwrap();
    fs::write(ctx.path().join("qux/f"), "f").unwrap();
    fs::set_permissions(ctx.path().join("qux"), fs::Permissions::from_mode(0o775)).unwrap();
    copy(ctx.path(), rootfs.path(), &["qux"], "/dir").unwrap();
    let opts = CopyOptions {
        chmod: Some(0o777),
        chown: Some((1000, 1000)),
        ..CopyOptions::default()
    };
    copy_with(ctx.path(), rootfs.path(), &["qux"], "/dir777", &opts).unwrap();

    let meta = |p: &str| fs::metadata(rootfs.path().join(p)).unwrap();
    assert_eq!(meta("dir").mode() & 0o7777, 0o755);
    assert_eq!(meta("dir777").mode() & 0o7777, 0o755);
    assert_eq!((meta("dir777").uid(), meta("dir777").gid()), (1000, 1000));
    assert_eq!(
        meta("dir777/f").mode() & 0o7777,
        0o777,
        "--chmod is for what is copied"
    );
}
