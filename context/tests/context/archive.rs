//! Contexts that hold an archive: tar files, tar streams, `tar://stdin` and a loopback HTTP
//! server (the object stores are in `cloud`). The archives are extracted by [`super::untar`], a
//! plain extraction with the `tar` crate; the engine's own extraction (`ADD`'s rules,
//! hostile members) is tested with `ocibuild_core::Context` in builder-core.

use super::{read, untar};
use ocibuild_context::{parse_context, ContextError, ContextSource, GitOptions};
use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------
// helpers

async fn prepare(
    source: &ContextSource,
    sub_path: Option<&str>,
    work: &Path,
) -> Result<PathBuf, ContextError> {
    super::prepare_context(source, sub_path, &GitOptions::default(), work).await
}

fn tar_bytes(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_600_000_000);
        header.set_cksum();
        builder.append_data(&mut header, name, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

pub(crate) fn sample_tar() -> Vec<u8> {
    tar_bytes(&[
        ("app/Dockerfile", b"FROM scratch\n"),
        ("app/src/main.rs", b"fn main() {}\n"),
        ("top.txt", b"top"),
    ])
}

/// The names in `dir`.
pub(crate) fn names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------
// tar archives

#[tokio::test]
async fn tar_and_tar_gz_files_are_extracted_into_a_fresh_directory() {
    let files = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let plain = files.path().join("ctx.tar");
    let gz = files.path().join("ctx.tar.gz");
    fs::write(&plain, sample_tar()).unwrap();
    fs::write(&gz, gzip(&sample_tar())).unwrap();
    let mut seen = Vec::new();
    for archive in [&plain, &gz] {
        let source = parse_context(&format!("tar://{}", archive.display())).unwrap();
        let dir = prepare(&source, None, work.path()).await.unwrap();
        assert!(dir.starts_with(work.path()), "{}", dir.display());
        assert_eq!(read(&dir.join("app/src/main.rs")), "fn main() {}\n");
        assert_eq!(read(&dir.join("top.txt")), "top");
        let sub = prepare(&source, Some("app"), work.path()).await.unwrap();
        assert_eq!(read(&sub.join("Dockerfile")), "FROM scratch\n");
        seen.push(dir);
    }
    assert_ne!(seen[0], seen[1], "each context gets its own directory");

    let missing = ContextSource::Tar(files.path().join("nope.tar"));
    let err = prepare(&missing, None, work.path()).await.unwrap_err();
    assert!(matches!(err, ContextError::NotFound { .. }), "{err:?}");
    let not_a_file = ContextSource::Tar(files.path().to_path_buf());
    let err = prepare(&not_a_file, None, work.path()).await.unwrap_err();
    assert!(err.to_string().contains("not a file"), "{err}");
    fs::write(files.path().join("junk.tar.gz"), b"\x1f\x8bnot really gzip").unwrap();
    let junk = ContextSource::Tar(files.path().join("junk.tar.gz"));
    let err = prepare(&junk, None, work.path()).await.unwrap_err();
    assert!(matches!(err, ContextError::Extract { .. }), "{err:?}");
    assert!(err.to_string().contains("junk.tar.gz"), "{err}");
}

#[test]
fn tar_streams_are_extracted_with_the_sub_path_applied() {
    let work = tempfile::tempdir().unwrap();
    let gz = gzip(&sample_tar());
    let prepare = |reader: &[u8], sub_path| {
        ocibuild_context::prepare_tar_reader(reader, "stdin", sub_path, work.path(), untar)
    };
    let dir = prepare(&gz, Some("app/src")).unwrap();
    assert_eq!(read(&dir.join("main.rs")), "fn main() {}\n");
    let dir = prepare(&sample_tar(), None).unwrap();
    assert_eq!(read(&dir.join("top.txt")), "top");
    let err = prepare(b"garbage", None).unwrap_err();
    assert!(matches!(err, ContextError::Extract { .. }), "{err:?}");
    assert!(err.to_string().contains("stdin"), "{err}");
    let err = prepare(&gz, Some("../x")).unwrap_err();
    assert!(matches!(err, ContextError::SubPath { .. }), "{err:?}");
}

/// The only test of this binary that touches standard input: it becomes the archive.
#[tokio::test]
async fn tar_stdin_is_read_from_standard_input() {
    let files = tempfile::tempdir().unwrap();
    let archive = files.path().join("ctx.tar.gz");
    fs::write(&archive, gzip(&sample_tar())).unwrap();
    let file = fs::File::open(&archive).unwrap();
    nix::unistd::dup2(file.as_raw_fd(), 0).unwrap();
    let work = files.path().join("work");
    let dir = prepare(&ContextSource::TarStdin, Some("app"), &work)
        .await
        .unwrap();
    assert!(dir.starts_with(&work), "{}", dir.display());
    assert_eq!(read(&dir.join("Dockerfile")), "FROM scratch\n");
}

// ---------------------------------------------------------------------------------------
// https (plain http on loopback)

/// Serves `body` with `status` to every request until the test ends.
fn http_server(status: u16, body: Vec<u8>) -> u16 {
    super::server::serve(move |_| (status, body.clone())).0
}

#[tokio::test]
async fn https_contexts_are_downloaded_and_extracted() {
    let port = http_server(200, gzip(&sample_tar()));
    let work = tempfile::tempdir().unwrap();
    let source = parse_context(&format!("http://127.0.0.1:{port}/ctx.tar.gz")).unwrap();
    let dir = prepare(&source, Some("app"), work.path()).await.unwrap();
    assert!(dir.starts_with(work.path()));
    assert_eq!(read(&dir.join("Dockerfile")), "FROM scratch\n");
    let left = names(work.path());
    assert_eq!(left.len(), 1, "the download is removed: {left:?}");

    let port = http_server(404, b"no".to_vec());
    let source = parse_context(&format!("http://127.0.0.1:{port}/ctx.tar.gz")).unwrap();
    let err = prepare(&source, None, work.path()).await.unwrap_err();
    assert!(matches!(err, ContextError::Fetch(_)), "{err:?}");
    assert!(err.to_string().contains("404"), "{err}");
}
