//! Build contexts as kaniko spells them: parsing every form, and preparing each kind against
//! real parts (files, tar streams, a `git daemon`, the lab's S3 server, a loopback HTTP
//! server).

use ocibuild_core::context::{
    parse_context, parse_git_options, prepare_context, prepare_context_with, prepare_tar_reader,
    sigv4_authorization, ContextEnv, ContextError, ContextSource, GitOptions, SigV4Request,
};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
// parse_context

#[test]
fn parses_every_kaniko_form() {
    use ContextSource as C;
    let cases: Vec<(&str, C)> = vec![
        ("./app", C::Dir("./app".into())),
        ("/abs/app", C::Dir("/abs/app".into())),
        ("dir://ctx/app", C::Dir("ctx/app".into())),
        ("dir:///workspace", C::Dir("/workspace".into())),
        ("tar://ctx.tar.gz", C::Tar("ctx.tar.gz".into())),
        ("tar:///tmp/ctx.tar", C::Tar("/tmp/ctx.tar".into())),
        ("tar://stdin", C::TarStdin),
        (
            "git://github.com/acme/app.git",
            C::Git {
                url: "git://github.com/acme/app.git".into(),
                reference: None,
                commit: None,
            },
        ),
        (
            "git://github.com/acme/app.git#refs/heads/dev",
            C::Git {
                url: "git://github.com/acme/app.git".into(),
                reference: Some("refs/heads/dev".into()),
                commit: None,
            },
        ),
        (
            "git://github.com/acme/app.git#refs/heads/dev#0123abcd",
            C::Git {
                url: "git://github.com/acme/app.git".into(),
                reference: Some("refs/heads/dev".into()),
                commit: Some("0123abcd".into()),
            },
        ),
        (
            "git://github.com/acme/app.git##0123abcd",
            C::Git {
                url: "git://github.com/acme/app.git".into(),
                reference: None,
                commit: Some("0123abcd".into()),
            },
        ),
        (
            "s3://bucket/path/ctx.tar.gz",
            C::S3 {
                bucket: "bucket".into(),
                key: "path/ctx.tar.gz".into(),
            },
        ),
        (
            "https://example.com/ctx.tar.gz",
            C::Https("https://example.com/ctx.tar.gz".into()),
        ),
        (
            "http://127.0.0.1:8080/ctx.tar.gz",
            C::Https("http://127.0.0.1:8080/ctx.tar.gz".into()),
        ),
        (
            "gs://bucket/ctx.tar.gz",
            C::Gcs("gs://bucket/ctx.tar.gz".into()),
        ),
        (
            "https://acct.blob.core.windows.net/container/ctx.tar.gz",
            C::Azure("https://acct.blob.core.windows.net/container/ctx.tar.gz".into()),
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_context(text).unwrap(), expected, "{text}");
    }
}

#[test]
fn malformed_contexts_are_refused_with_a_reason() {
    let invalid = [
        ("", "empty"),
        ("dir://", "directory path"),
        ("tar://", "archive path"),
        ("git://", "host and repository"),
        ("git://host/r.git#a#b#c", "too many"),
        ("git://host/r.git#--upload-pack=x", "may not start with '-'"),
        ("git://host/r.git#main#not-hex!", "hex digits"),
        ("s3://bucket", "object key"),
        ("s3:///key", "needs a bucket"),
        ("gs://", "bucket"),
        ("https://", "URL"),
    ];
    for (text, reason) in invalid {
        let err = parse_context(text).expect_err(text);
        assert!(
            matches!(err, ContextError::Invalid { .. }),
            "{text}: {err:?}"
        );
        assert!(err.to_string().contains(reason), "{text}: {err}");
    }
    let err = parse_context("ftp://host/ctx.tar").unwrap_err();
    assert!(matches!(err, ContextError::UnknownScheme { .. }), "{err:?}");
    assert!(err.to_string().contains("ftp://"), "{err}");
}

#[test]
fn git_options_parse_like_kaniko() {
    assert_eq!(parse_git_options("").unwrap(), GitOptions::default());
    let o = parse_git_options(
        "branch=dev,single-branch=true,recurse-submodules=true,insecure-skip-tls=false",
    )
    .unwrap();
    assert_eq!(
        o,
        GitOptions {
            branch: Some("dev".into()),
            single_branch: true,
            recurse_submodules: true,
            insecure_skip_tls: false,
        }
    );
    assert!(
        parse_git_options("insecure-skip-tls=1")
            .unwrap()
            .insecure_skip_tls
    );
    for bad in [
        "branch",
        "branch=",
        "single-branch=yes",
        "depth=1",
        "branch=-x",
    ] {
        let err = parse_git_options(bad).expect_err(bad);
        assert!(
            matches!(err, ContextError::InvalidGitOptions { .. }),
            "{bad}: {err:?}"
        );
    }
}

#[tokio::test]
async fn gcs_and_azure_say_they_are_not_supported() {
    let work = tempfile::tempdir().unwrap();
    let git = GitOptions::default();
    let gs = parse_context("gs://b/ctx.tar.gz").unwrap();
    let err = prepare_context(&gs, None, &git, work.path())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(
            "gs:// contexts are not supported yet; download the archive and pass tar://PATH"
        ),
        "{err}"
    );
    let az = parse_context("https://a.blob.core.windows.net/c/ctx.tar.gz").unwrap();
    let err = prepare_context(&az, None, &git, work.path())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Azure Blob Storage contexts are not supported yet"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// directories and sub paths

#[tokio::test]
async fn directory_contexts_are_used_in_place_with_a_sub_path() {
    let ctx = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    fs::create_dir_all(ctx.path().join("services/api")).unwrap();
    fs::write(ctx.path().join("services/api/Dockerfile"), "FROM scratch").unwrap();
    fs::write(ctx.path().join("file"), "f").unwrap();
    symlink("/etc", ctx.path().join("out")).unwrap();
    let git = GitOptions::default();
    let source = ContextSource::Dir(ctx.path().to_path_buf());

    let dir = prepare_context(&source, None, &git, work.path())
        .await
        .unwrap();
    assert_eq!(dir, ctx.path());
    let dir = prepare_context(&source, Some("services/api"), &git, work.path())
        .await
        .unwrap();
    assert_eq!(dir, ctx.path().join("services/api"));
    assert!(dir.join("Dockerfile").is_file());
    let dir = prepare_context(
        &source,
        Some("./services/../services/api/"),
        &git,
        work.path(),
    )
    .await
    .unwrap();
    assert!(dir.join("Dockerfile").is_file());
    assert_eq!(
        fs::read_dir(work.path()).unwrap().count(),
        0,
        "nothing copied"
    );

    for (sub, reason) in [
        ("../x", "leaves the build context"),
        ("services/../../x", "leaves the build context"),
        ("/etc", "must be relative"),
        ("out", "through a symlink"),
        ("missing", "no such directory"),
        ("file", "not a directory"),
    ] {
        let err = prepare_context(&source, Some(sub), &git, work.path())
            .await
            .expect_err(sub);
        assert!(
            matches!(err, ContextError::SubPath { .. }),
            "{sub}: {err:?}"
        );
        assert!(err.to_string().contains(reason), "{sub}: {err}");
    }

    let missing = ContextSource::Dir(ctx.path().join("nope"));
    let err = prepare_context(&missing, None, &git, work.path())
        .await
        .unwrap_err();
    assert!(matches!(err, ContextError::NotFound { .. }), "{err:?}");
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
// git

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "protocol.file.allow=always",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git is installed (scripts/lab.sh installs it)");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

struct Repo {
    _dir: tempfile::TempDir,
    base: PathBuf,
    first: String,
    feature: String,
}

/// `BASE/repo.git`: main has two commits (a.txt v1 then v2, sub/dir/file.txt), feature
/// adds feature.txt; tag v1 points to the first commit.
fn make_repo() -> Repo {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("srv");
    let work = dir.path().join("src");
    fs::create_dir_all(&base).unwrap();
    fs::create_dir_all(work.join("sub/dir")).unwrap();
    git(&work, &["init", "-q"]);
    fs::write(work.join("a.txt"), "v1").unwrap();
    fs::write(work.join("sub/dir/file.txt"), "in sub").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "one"]);
    let first = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["tag", "v1"]);
    fs::write(work.join("a.txt"), "v2").unwrap();
    git(&work, &["commit", "-q", "-am", "two"]);
    git(&work, &["checkout", "-q", "-b", "feature"]);
    fs::write(work.join("feature.txt"), "feature").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "feature"]);
    let feature = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["checkout", "-q", "main"]);
    git(
        dir.path(),
        &["clone", "-q", "--bare", "src", "srv/repo.git"],
    );
    Repo {
        _dir: dir,
        base,
        first,
        feature,
    }
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn git_daemon(base: &Path) -> (Daemon, u16) {
    let port = free_port();
    let child = Command::new("git")
        .arg("daemon")
        .arg("--export-all")
        .arg(format!("--base-path={}", base.display()))
        .arg(format!("--port={port}"))
        .arg("--listen=127.0.0.1")
        .arg("--reuseaddr")
        .arg(base)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("git daemon starts");
    let daemon = Daemon(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "git daemon did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (daemon, port)
}

fn git_env() -> ContextEnv {
    ContextEnv {
        git_pull_method: Some("git".into()),
        ..ContextEnv::default()
    }
}

#[tokio::test]
async fn git_contexts_clone_branches_tags_and_commits() {
    let repo = make_repo();
    let (_daemon, port) = git_daemon(&repo.base);
    let work = tempfile::tempdir().unwrap();
    let env = git_env();
    let url = format!("git://127.0.0.1:{port}/repo.git");
    let prepare = |text: String, sub: Option<&'static str>, opts: GitOptions| {
        let env = env.clone();
        let work = work.path().to_path_buf();
        async move {
            let source = parse_context(&text).unwrap();
            prepare_context_with(&source, sub, &opts, &work, &env).await
        }
    };
    let none = GitOptions::default;

    // default branch
    let dir = prepare(url.clone(), None, none()).await.unwrap();
    assert!(dir.starts_with(work.path()));
    assert_eq!(read(&dir.join("a.txt")), "v2");
    assert!(!dir.join("feature.txt").exists());

    // a branch by ref
    let dir = prepare(format!("{url}#refs/heads/feature"), None, none())
        .await
        .unwrap();
    assert_eq!(read(&dir.join("feature.txt")), "feature");

    // a tag
    let dir = prepare(format!("{url}#refs/tags/v1"), None, none())
        .await
        .unwrap();
    assert_eq!(read(&dir.join("a.txt")), "v1");

    // a commit on the branch, with a sub path
    let dir = prepare(
        format!("{url}#refs/heads/main#{}", repo.first),
        Some("sub/dir"),
        none(),
    )
    .await
    .unwrap();
    assert_eq!(read(&dir.join("file.txt")), "in sub");
    assert_eq!(
        read(&dir.parent().unwrap().parent().unwrap().join("a.txt")),
        "v1"
    );

    // --git branch=feature when the URL names no ref
    let opts = GitOptions {
        branch: Some("feature".into()),
        single_branch: true,
        ..GitOptions::default()
    };
    let dir = prepare(url.clone(), None, opts).await.unwrap();
    assert_eq!(read(&dir.join("feature.txt")), "feature");
    let branches = git(&dir, &["branch", "-r"]);
    assert!(
        !branches.contains("origin/main"),
        "single branch: {branches}"
    );

    // a commit outside a single-branch clone is fetched
    let opts = GitOptions {
        single_branch: true,
        ..GitOptions::default()
    };
    let dir = prepare(
        format!("{url}#refs/heads/main#{}", repo.feature),
        None,
        opts,
    )
    .await
    .unwrap();
    assert_eq!(read(&dir.join("feature.txt")), "feature");
}

#[tokio::test]
async fn git_errors_name_the_command_and_git_says_why() {
    let repo = make_repo();
    let (_daemon, port) = git_daemon(&repo.base);
    let work = tempfile::tempdir().unwrap();
    let git_opts = GitOptions::default();
    let url = format!("git://127.0.0.1:{port}/repo.git");

    let source = parse_context(&format!("{url}#refs/heads/nope")).unwrap();
    let err = prepare_context_with(&source, None, &git_opts, work.path(), &git_env())
        .await
        .unwrap_err();
    assert!(matches!(err, ContextError::Git { .. }), "{err:?}");
    assert!(err.to_string().contains("git clone"), "{err}");
    assert!(err.to_string().contains("nope"), "{err}");

    let source = parse_context(&format!("{url}#refs/heads/main#{}", "0".repeat(40))).unwrap();
    let err = prepare_context_with(&source, None, &git_opts, work.path(), &git_env())
        .await
        .unwrap_err();
    assert!(matches!(err, ContextError::Git { .. }), "{err:?}");
    assert!(err.to_string().contains(&"0".repeat(40)), "{err}");

    let source = parse_context(&format!("{url}#refs/heads/main")).unwrap();
    let err = prepare_context_with(&source, Some("missing"), &git_opts, work.path(), &git_env())
        .await
        .unwrap_err();
    assert!(matches!(err, ContextError::SubPath { .. }), "{err:?}");

    // kaniko's default transport for git:// URLs is https (the daemon does not speak it)
    let source = parse_context(&url).unwrap();
    let err = prepare_context_with(
        &source,
        None,
        &git_opts,
        work.path(),
        &ContextEnv::default(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("https://127.0.0.1:{port}/repo.git")),
        "{err}"
    );
    let bad = ContextEnv {
        git_pull_method: Some("ftp".into()),
        ..ContextEnv::default()
    };
    let err = prepare_context_with(&source, None, &git_opts, work.path(), &bad)
        .await
        .unwrap_err();
    assert!(matches!(err, ContextError::InvalidEnv { .. }), "{err:?}");
}

#[tokio::test]
async fn git_urls_other_than_git_scheme_are_cloned_as_given() {
    let repo = make_repo();
    let work = tempfile::tempdir().unwrap();
    let bare = repo.base.join("repo.git");
    for url in [
        format!("file://{}", bare.display()),
        bare.display().to_string(),
    ] {
        let source = ContextSource::Git {
            url,
            reference: Some("feature".into()),
            commit: None,
        };
        let dir = prepare_context_with(
            &source,
            None,
            &GitOptions::default(),
            work.path(),
            &ContextEnv::default(),
        )
        .await
        .unwrap();
        assert_eq!(read(&dir.join("feature.txt")), "feature");
    }
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
