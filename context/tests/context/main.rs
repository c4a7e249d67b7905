//! Build contexts as kaniko spells them: parsing every form, and preparing each kind against
//! real parts (directories, a `git daemon`, tar files and streams, an HTTP server; the
//! archive kinds in `archive`; S3, GCS and Azure Blob Storage against the lab's emulators
//! with every credential source in `cloud`).

mod archive;
mod cloud;
mod server;

use ocibuild_context::{
    parse_context, parse_git_options, AzureBlob, ContextEnv, ContextError, ContextSource,
    GitOptions,
};
use ocibuild_image::compression::{sniff, Sniffed};
use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// helpers

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The [`ocibuild_context::Unpack`] of these tests: a gzipped or plain tar extracted with
/// the `tar` crate (the engine's own extraction is tested in builder-core).
fn untar(reader: &mut dyn Read, _name: &Path, dest: &Path) -> Result<(), String> {
    let mut head = [0u8; 2];
    let mut filled = 0;
    while filled < head.len() {
        match reader
            .read(&mut head[filled..])
            .map_err(|e| e.to_string())?
        {
            0 => break,
            n => filled += n,
        }
    }
    let whole = std::io::Cursor::new(head[..filled].to_vec()).chain(reader);
    let decoded: Box<dyn Read + '_> = match sniff(&head[..filled]) {
        Sniffed::Gzip => Box::new(flate2::read::GzDecoder::new(whole)),
        _ => Box::new(whole),
    };
    tar::Archive::new(decoded)
        .unpack(dest)
        .map_err(|e| e.to_string())
}

async fn prepare_context(
    source: &ContextSource,
    sub_path: Option<&str>,
    git: &GitOptions,
    work: &Path,
) -> Result<PathBuf, ContextError> {
    ocibuild_context::prepare_context(source, sub_path, git, work, untar).await
}

async fn prepare_context_with(
    source: &ContextSource,
    sub_path: Option<&str>,
    git: &GitOptions,
    work: &Path,
    env: &ContextEnv,
) -> Result<PathBuf, ContextError> {
    ocibuild_context::prepare_context_with(source, sub_path, git, work, env, untar).await
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
            "gs://bucket/builds/ctx.tar.gz",
            C::Gcs {
                bucket: "bucket".into(),
                object: "builds/ctx.tar.gz".into(),
            },
        ),
        (
            "https://acct.blob.core.windows.net/container/dir/my%20ctx.tar.gz",
            C::Azure(AzureBlob {
                account: "acct".into(),
                container: "container".into(),
                blob: "dir/my ctx.tar.gz".into(),
                scheme: "https".into(),
                sas: None,
            }),
        ),
        (
            "https://acct.blob.core.windows.net/c/ctx.tar.gz?sv=2021-08-06&sig=abc%3D",
            C::Azure(AzureBlob {
                account: "acct".into(),
                container: "c".into(),
                blob: "ctx.tar.gz".into(),
                scheme: "https".into(),
                sas: Some("sv=2021-08-06&sig=abc%3D".into()),
            }),
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
        ("gs://bucket", "bucket and an object"),
        ("gs://bucket/", "bucket and an object"),
        (
            "https://acct.blob.core.windows.net/container",
            "CONTAINER/path",
        ),
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
    assert_eq!(o.branch.as_deref(), Some("dev"));
    assert!(o.single_branch && o.recurse_submodules && !o.insecure_skip_tls);
    assert_eq!("branch=dev".parse::<GitOptions>().unwrap().branch, o.branch);
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
    ContextEnv::default().with("GIT_PULL_METHOD", "git")
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
    let mut opts = GitOptions::default();
    opts.branch = Some("feature".into());
    opts.single_branch = true;
    let dir = prepare(url.clone(), None, opts).await.unwrap();
    assert_eq!(read(&dir.join("feature.txt")), "feature");
    let branches = git(&dir, &["branch", "-r"]);
    assert!(
        !branches.contains("origin/main"),
        "single branch: {branches}"
    );

    // a commit outside a single-branch clone is fetched
    let mut opts = GitOptions::default();
    opts.single_branch = true;
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
    let bad = ContextEnv::default().with("GIT_PULL_METHOD", "ftp");
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
