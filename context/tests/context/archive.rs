//! Contexts that hold an archive: tar files, tar streams, `tar://stdin`, the lab's S3
//! server and a loopback HTTP server. The archives are extracted by [`super::untar`], a
//! plain extraction with the `tar` crate; the engine's own extraction (`ADD`'s rules,
//! hostile members) is tested with `ocibuild_core::Context` in builder-core.

use super::{prepare_context_with, read, untar};
use ocibuild_context::{
    parse_context, sigv4_authorization, ContextEnv, ContextError, ContextSource, GitOptions,
    SigV4Request,
};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
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

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn sample_tar() -> Vec<u8> {
    tar_bytes(&[
        ("app/Dockerfile", b"FROM scratch\n"),
        ("app/src/main.rs", b"fn main() {}\n"),
        ("top.txt", b"top"),
    ])
}

/// The names in `dir`.
fn names(dir: &Path) -> Vec<String> {
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
// S3 (the lab's moto server, which checks signatures)

struct S3Lab {
    endpoint: String,
    access: String,
    secret: String,
}

fn env_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the test lab with scripts/lab.sh up and eval \"$(scripts/lab.sh env)\"")
    })
}

fn s3_lab() -> S3Lab {
    S3Lab {
        endpoint: env_var("OCIBUILD_TEST_S3_ENDPOINT"),
        access: env_var("OCIBUILD_TEST_S3_ACCESS_KEY"),
        secret: env_var("OCIBUILD_TEST_S3_SECRET_KEY"),
    }
}

/// A PUT signed with ocibuild's own signature version 4 code.
async fn s3_put(lab: &S3Lab, path: &str, body: Vec<u8>) {
    let url = reqwest::Url::parse(&format!("{}{path}", lab.endpoint)).unwrap();
    let host = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let payload = hex::encode(Sha256::digest(&body));
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let date = ocibuild_image::time::rfc3339(secs).replace(['-', ':'], "");
    let headers = [
        ("host", host.as_str()),
        ("x-amz-content-sha256", payload.as_str()),
        ("x-amz-date", date.as_str()),
    ];
    let auth = sigv4_authorization(
        &SigV4Request {
            method: "PUT",
            canonical_uri: url.path(),
            canonical_query: "",
            headers: &headers,
            payload_sha256: &payload,
            amz_date: &date,
            region: "us-east-1",
            service: "s3",
        },
        &lab.access,
        &lab.secret,
    );
    let response = reqwest::Client::new()
        .put(url.clone())
        .header("x-amz-content-sha256", &payload)
        .header("x-amz-date", &date)
        .header("authorization", auth)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert!(
        status.is_success(),
        "PUT {url}: {status}: {}",
        response.text().await.unwrap_or_default()
    );
}

#[tokio::test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
async fn s3_contexts_are_fetched_with_signed_requests() {
    let lab = s3_lab();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let bucket = format!("ctx-{}-{nanos}", std::process::id());
    s3_put(&lab, &format!("/{bucket}"), Vec::new()).await;
    s3_put(
        &lab,
        &format!("/{bucket}/builds/my%20ctx.tar.gz"),
        gzip(&sample_tar()),
    )
    .await;

    let work = tempfile::tempdir().unwrap();
    let git = GitOptions::default();
    let env = ContextEnv {
        aws_access_key_id: Some(lab.access.clone()),
        aws_secret_access_key: Some(lab.secret.clone()),
        s3_endpoint: Some(lab.endpoint.clone()),
        ..ContextEnv::default()
    };
    let source = parse_context(&format!("s3://{bucket}/builds/my ctx.tar.gz")).unwrap();
    let dir = prepare_context_with(&source, Some("app"), &git, work.path(), &env)
        .await
        .unwrap();
    assert!(dir.starts_with(work.path()));
    assert_eq!(read(&dir.join("src/main.rs")), "fn main() {}\n");
    let downloads: Vec<_> = names(work.path())
        .into_iter()
        .filter(|n| n.starts_with("download-"))
        .collect();
    assert!(downloads.is_empty(), "download removed: {downloads:?}");

    let wrong = ContextEnv {
        aws_secret_access_key: Some("not-the-secret".into()),
        ..env.clone()
    };
    let err = prepare_context_with(&source, None, &git, work.path(), &wrong)
        .await
        .unwrap_err();
    assert!(matches!(err, ContextError::S3Status { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("HTTP 403"), "{text}");
    assert!(text.contains("SignatureDoesNotMatch"), "{text}");
    assert!(text.contains("AWS_SECRET_ACCESS_KEY"), "{text}");

    let missing = parse_context(&format!("s3://{bucket}/nope.tar.gz")).unwrap();
    let err = prepare_context_with(&missing, None, &git, work.path(), &env)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("HTTP 404"), "{err}");

    let half = ContextEnv {
        aws_secret_access_key: None,
        ..env.clone()
    };
    let err = prepare_context_with(&source, None, &git, work.path(), &half)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("AWS_SECRET_ACCESS_KEY is not"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// https (plain http on loopback)

/// Serves `body` with `status` to every request until the test ends.
fn http_server(status: &'static str, body: Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte) {
                    Ok(1) => request.push(byte[0]),
                    _ => break,
                }
            }
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    port
}

#[tokio::test]
async fn https_contexts_are_downloaded_and_extracted() {
    let port = http_server("200 OK", gzip(&sample_tar()));
    let work = tempfile::tempdir().unwrap();
    let source = parse_context(&format!("http://127.0.0.1:{port}/ctx.tar.gz")).unwrap();
    let dir = prepare(&source, Some("app"), work.path()).await.unwrap();
    assert!(dir.starts_with(work.path()));
    assert_eq!(read(&dir.join("Dockerfile")), "FROM scratch\n");
    let left = names(work.path());
    assert_eq!(left.len(), 1, "the download is removed: {left:?}");

    let port = http_server("404 Not Found", b"no".to_vec());
    let source = parse_context(&format!("http://127.0.0.1:{port}/ctx.tar.gz")).unwrap();
    let err = prepare(&source, None, work.path()).await.unwrap_err();
    assert!(matches!(err, ContextError::Fetch(_)), "{err:?}");
    assert!(err.to_string().contains("404"), "{err}");
}
