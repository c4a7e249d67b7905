//! Build contexts that hold an archive (tar files, tar streams, `tar://stdin`, the lab's S3
//! server, a loopback HTTP server), prepared by `ocibuild_core::context` with the engine's
//! extraction. The other kinds are tested in the ocibuild-context crate.

use ocibuild_core::context::{
    parse_context, prepare_context, prepare_context_with, prepare_tar_reader, sigv4_authorization,
    ContextEnv, ContextError, ContextSource, GitOptions, SigV4Request,
};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
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

fn env_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the test lab with scripts/lab.sh up and eval \"$(scripts/lab.sh env)\"")
    })
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
    let git = GitOptions::default();
    let mut seen = Vec::new();
    for archive in [&plain, &gz] {
        let source = parse_context(&format!("tar://{}", archive.display())).unwrap();
        let dir = prepare_context(&source, None, &git, work.path())
            .await
            .unwrap();
        assert!(dir.starts_with(work.path()), "{}", dir.display());
        assert_eq!(read(&dir.join("app/src/main.rs")), "fn main() {}\n");
        assert_eq!(read(&dir.join("top.txt")), "top");
        let sub = prepare_context(&source, Some("app"), &git, work.path())
            .await
            .unwrap();
        assert_eq!(read(&sub.join("Dockerfile")), "FROM scratch\n");
        seen.push(dir);
    }
    assert_ne!(seen[0], seen[1], "each context gets its own directory");

    let missing = ContextSource::Tar(files.path().join("nope.tar"));
    let err = prepare_context(&missing, None, &git, work.path())
        .await
        .unwrap_err();
    assert!(matches!(err, ContextError::NotFound { .. }), "{err:?}");
    fs::write(files.path().join("junk.tar.gz"), b"\x1f\x8bnot really gzip").unwrap();
    let junk = ContextSource::Tar(files.path().join("junk.tar.gz"));
    let err = prepare_context(&junk, None, &git, work.path())
        .await
        .unwrap_err();
    assert!(matches!(err, ContextError::Extract { .. }), "{err:?}");
}

#[test]
fn hostile_members_stay_inside_the_context() {
    let outside = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let target = outside.path().display().to_string();
    let archive = tar_bytes(&[
        Member::File("../evil", b"dotdot"),
        Member::File("a/../../../evil2", b"deep"),
        Member::File("/abs-evil", b"absolute"),
        Member::Symlink("link", &target),
        Member::File("link/escaped", b"through a symlink"),
        Member::File("ok.txt", b"ok"),
    ]);
    let dir = prepare_tar_reader(
        gzip(&archive).as_slice(),
        "hostile.tar.gz",
        None,
        work.path(),
    )
    .unwrap();
    assert_eq!(read(&dir.join("evil")), "dotdot");
    assert_eq!(read(&dir.join("evil2")), "deep");
    assert_eq!(read(&dir.join("abs-evil")), "absolute");
    assert_eq!(read(&dir.join("ok.txt")), "ok");
    assert!(!work.path().join("evil").exists());
    assert!(!dir.parent().unwrap().join("evil").exists());
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

#[test]
fn tar_streams_are_read_gzipped_or_plain() {
    let work = tempfile::tempdir().unwrap();
    let gz = gzip(&sample_tar());
    let dir = prepare_tar_reader(gz.as_slice(), "stdin", Some("app/src"), work.path()).unwrap();
    assert_eq!(read(&dir.join("main.rs")), "fn main() {}\n");
    let plain = sample_tar();
    let dir = prepare_tar_reader(plain.as_slice(), "stdin", None, work.path()).unwrap();
    assert_eq!(read(&dir.join("top.txt")), "top");
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
    let dir = prepare_tar_reader(Trickle(gz, 0), "stdin", None, work.path()).unwrap();
    assert_eq!(read(&dir.join("app/Dockerfile")), "FROM scratch\n");
    let err = prepare_tar_reader(&b"garbage"[..], "stdin", None, work.path()).unwrap_err();
    assert!(matches!(err, ContextError::Extract { .. }), "{err:?}");
    assert!(err.to_string().contains("stdin"), "{err}");
    let err = prepare_tar_reader(
        gzip(&sample_tar()).as_slice(),
        "stdin",
        Some("../x"),
        work.path(),
    )
    .unwrap_err();
    assert!(matches!(err, ContextError::SubPath { .. }), "{err:?}");
}

const STDIN_CHILD: &str = "OCIBUILD_CONTEXT_STDIN_CHILD";

/// Not a test on its own: the child half of `tar_stdin_is_read_by_prepare_context`.
#[tokio::test]
async fn stdin_child() {
    let Ok(work) = std::env::var(STDIN_CHILD) else {
        return;
    };
    let dir = prepare_context(
        &ContextSource::TarStdin,
        Some("app"),
        &GitOptions::default(),
        Path::new(&work),
    )
    .await
    .unwrap();
    println!("CONTEXT={}", dir.display());
}

#[test]
fn tar_stdin_is_read_by_prepare_context() {
    let files = tempfile::tempdir().unwrap();
    let archive = files.path().join("ctx.tar.gz");
    fs::write(&archive, gzip(&sample_tar())).unwrap();
    let work = files.path().join("work");
    let exe = std::env::current_exe().unwrap();
    let output = Command::new("sh")
        .arg("-c")
        .arg(r#"cat "$1" | "$2" --exact stdin_child --nocapture --test-threads=1"#)
        .arg("sh")
        .arg(&archive)
        .arg(&exe)
        .env(STDIN_CHILD, &work)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dir = stdout
        .lines()
        .find_map(|l| l.split_once("CONTEXT=").map(|(_, dir)| dir.trim()))
        .unwrap_or_else(|| panic!("no CONTEXT= line in {stdout}"));
    assert!(Path::new(dir).starts_with(&work));
    assert_eq!(read(&Path::new(dir).join("Dockerfile")), "FROM scratch\n");
}

// ---------------------------------------------------------------------------------------
// S3 (the lab's moto server, which checks signatures)

struct S3Lab {
    endpoint: String,
    access: String,
    secret: String,
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
    let date = ocibuild_core::time::rfc3339(secs).replace(['-', ':'], "");
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
    let leftovers: Vec<_> = fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("download-"))
        .collect();
    assert!(leftovers.is_empty(), "download removed: {leftovers:?}");

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
    let git = GitOptions::default();
    let source = parse_context(&format!("http://127.0.0.1:{port}/ctx.tar.gz")).unwrap();
    let dir = prepare_context(&source, Some("app"), &git, work.path())
        .await
        .unwrap();
    assert!(dir.starts_with(work.path()));
    assert_eq!(read(&dir.join("Dockerfile")), "FROM scratch\n");
    let names: Vec<_> = fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "the download is removed: {names:?}");

    let port = http_server("404 Not Found", b"no".to_vec());
    let source = parse_context(&format!("http://127.0.0.1:{port}/ctx.tar.gz")).unwrap();
    let err = prepare_context(&source, None, &git, work.path())
        .await
        .unwrap_err();
    assert!(matches!(err, ContextError::Fetch(_)), "{err:?}");
    assert!(err.to_string().contains("404"), "{err}");
}
