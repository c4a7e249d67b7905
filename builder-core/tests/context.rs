//! [`ocibuild_core::Context`] prepared for [`ocibuild_core::build()`]: where the prepared
//! directory lives and for how long, and the engine's extraction of context archives (the
//! rules of `ADD`: members never land outside the context). Each kind of context is tested
//! in the ocibuild-context crate.

use ocibuild_core::{BuildError, BuildOptions, Context, ContextError, Isolation};
use std::fs;
use std::io::{Read, Write};
use std::path::Path;

// ---------------------------------------------------------------------------------------
// helpers

/// One tar member; names are written verbatim (so hostile names are possible).
enum Member<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
}

fn tar_bytes(members: &[Member<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for m in members {
        let mut header = tar::Header::new_old();
        let (name, kind, data, link): (&str, tar::EntryType, &[u8], Option<&str>) = match m {
            Member::File(n, d) => (n, tar::EntryType::Regular, d, None),
            Member::Dir(n) => (n, tar::EntryType::Directory, b"", None),
            Member::Symlink(n, t) => (n, tar::EntryType::Symlink, b"", Some(t)),
        };
        let raw = &mut header.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(target) = link {
            let raw = &mut header.as_old_mut().linkname;
            raw[..target.len()].copy_from_slice(target.as_bytes());
        }
        header.set_entry_type(kind);
        header.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        header.set_size(data.len() as u64);
        header.set_mtime(1_600_000_000);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn sample_tar() -> Vec<u8> {
    tar_bytes(&[
        Member::Dir("app/"),
        Member::File("app/Dockerfile", b"FROM scratch\n"),
        Member::Dir("app/src/"),
        Member::File("app/src/main.rs", b"fn main() {}\n"),
        Member::File("top.txt", b"top"),
    ])
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Options whose temporary directories go to `parent` (the builder's own directory of a
/// build in `/`).
fn options_with_temp_in(parent: &Path) -> BuildOptions {
    let mut opts = BuildOptions::default();
    opts.isolation = Isolation::None;
    opts.kaniko_dir = parent.to_path_buf();
    opts
}

// ---------------------------------------------------------------------------------------
// Context::prepare

#[tokio::test]
async fn a_directory_is_used_in_place_with_its_sub_path() {
    let ctx = tempfile::tempdir().unwrap();
    fs::create_dir_all(ctx.path().join("web")).unwrap();
    let opts = BuildOptions::default();
    let prepared = Context::dir(ctx.path()).prepare(&opts).await.unwrap();
    assert_eq!(prepared.path(), ctx.path());
    let prepared = Context::url(format!("dir://{}", ctx.path().display()))
        .sub_path("web")
        .prepare(&opts)
        .await
        .unwrap();
    assert_eq!(prepared.path(), ctx.path().join("web"));
}

#[tokio::test]
async fn an_archive_is_extracted_where_the_build_keeps_its_files_until_dropped() {
    let files = tempfile::tempdir().unwrap();
    let archive = files.path().join("ctx.tar.gz");
    fs::write(&archive, gzip(&sample_tar())).unwrap();
    let parent = files.path().join("builder");
    let opts = options_with_temp_in(&parent);

    let prepared = Context::url(format!("tar://{}", archive.display()))
        .sub_path("app")
        .prepare(&opts)
        .await
        .unwrap();
    let dir = prepared.path().to_path_buf();
    assert!(dir.starts_with(&parent), "{}", dir.display());
    assert_eq!(read(&dir.join("Dockerfile")), "FROM scratch\n");
    drop(prepared);
    assert!(!dir.exists(), "{} is still there", dir.display());
    assert_eq!(fs::read_dir(&parent).unwrap().count(), 0);
}

#[tokio::test]
async fn a_malformed_or_missing_context_is_a_context_error() {
    let opts = BuildOptions::default();
    for text in ["nope://x", "tar:///nonexistent/ctx.tar.gz", ""] {
        let err = Context::url(text).prepare(&opts).await.unwrap_err();
        assert!(matches!(err, BuildError::Context(_)), "{text}: {err:?}");
    }
    let err = Context::url("tar:///nonexistent/ctx.tar.gz")
        .prepare(&opts)
        .await
        .unwrap_err();
    assert!(
        matches!(err, BuildError::Context(ContextError::NotFound { .. })),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------
// the engine's extraction

#[tokio::test]
async fn tar_streams_are_read_gzipped_plain_or_a_few_bytes_at_a_time() {
    let opts = BuildOptions::default();
    let plain = Context::tar_stream(std::io::Cursor::new(sample_tar()))
        .prepare(&opts)
        .await
        .unwrap();
    assert_eq!(read(&plain.path().join("top.txt")), "top");

    // a stream that arrives a few bytes at a time, as a pipe may deliver it
    struct Trickle(Vec<u8>, usize);
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(3).min(self.0.len() - self.1);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }
    let trickled = Context::tar_stream(Trickle(gzip(&sample_tar()), 0))
        .sub_path("app/src")
        .prepare(&opts)
        .await
        .unwrap();
    assert_eq!(read(&trickled.path().join("main.rs")), "fn main() {}\n");

    let err = Context::tar_stream(&b"garbage"[..])
        .prepare(&opts)
        .await
        .unwrap_err();
    assert!(
        matches!(err, BuildError::Context(ContextError::Extract { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn hostile_members_stay_inside_the_context() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().display().to_string();
    let archive = tar_bytes(&[
        Member::File("../evil", b"dotdot"),
        Member::File("a/../../../evil2", b"deep"),
        Member::File("/abs-evil", b"absolute"),
        Member::Symlink("link", &target),
        Member::File("link/escaped", b"through a symlink"),
        Member::File("ok.txt", b"ok"),
    ]);
    let parent = tempfile::tempdir().unwrap();
    let opts = options_with_temp_in(parent.path());
    let prepared = Context::tar_stream(std::io::Cursor::new(gzip(&archive)))
        .prepare(&opts)
        .await
        .unwrap();
    let dir = prepared.path();
    assert_eq!(read(&dir.join("evil")), "dotdot");
    assert_eq!(read(&dir.join("evil2")), "deep");
    assert_eq!(read(&dir.join("abs-evil")), "absolute");
    assert_eq!(read(&dir.join("ok.txt")), "ok");
    assert!(!dir.parent().unwrap().join("evil").exists());
    assert!(!parent.path().join("evil").exists());
    assert!(!Path::new("/abs-evil").exists());
    assert_eq!(
        fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing written through the symlink"
    );
    let inside = dir
        .join(outside.path().strip_prefix("/").unwrap())
        .join("escaped");
    assert_eq!(read(&inside), "through a symlink");
}
