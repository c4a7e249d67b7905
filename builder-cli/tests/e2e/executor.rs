//! kaniko's executor, end to end: the binary run under kaniko's name inside a throwaway
//! root that looks like a container (as a pod runs `/kaniko/executor`), kaniko's spelling
//! of the flags, `executor login`, the context kinds, per-registry TLS, the accepted no-op
//! flags and `--no-push-cache`. Everything is checked with independent tools (skopeo,
//! umoci, git, boto3) against the lab (`scripts/lab.sh up`).

use crate::common::*;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn env_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the test lab with `eval \"$(scripts/lab.sh env)\"`")
    })
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed:\n{}", stderr(out));
}

/// `ocibuild executor ARGS` on the test machine, with namespace isolation (the machine is
/// not a container, but the test environment might carry a container hint).
fn executor(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut all = vec!["executor", "--isolation", "namespaces"];
    all.extend_from_slice(args);
    ocibuild_with_env(&all, env)
}

/// The `digest` skopeo reports for an image in a registry reachable with `flags`.
fn skopeo_digest(reference: &str, flags: &[&str]) -> String {
    let mut args = vec!["inspect"];
    args.extend_from_slice(flags);
    let target = format!("docker://{reference}");
    args.push(&target);
    let value: serde_json::Value = serde_json::from_str(&run("skopeo", &args)).unwrap();
    value["Digest"].as_str().unwrap().to_string()
}

/// The demo's own file, as it must appear in every image built from it.
fn assert_demo_image(reference: &str) {
    let img = unpack(&format!("docker://{reference}"));
    assert_eq!(
        fs::read(img.rootfs.join("app/bin/start")).unwrap(),
        fs::read(testdata("demo/bin/start")).unwrap(),
        "{reference}: /app/bin/start is the demo's"
    );
    assert_eq!(
        fs::read_to_string(img.rootfs.join("var/lib/app/greeting")).unwrap(),
        "hello\n",
        "{reference}: the RUN step ran"
    );
}

// ---------------------------------------------------------------------------------------
// 1. /kaniko/executor in a container, kaniko's spelling

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn executor_in_a_container_builds_in_root_with_kanikos_flags_and_writes_digest_files() {
    let reg = registry();
    let root = throwaway_root(true);
    let r = root.path();
    let repo_x = unique_repo("exec-x");
    let repo_y = unique_repo("exec-y");
    let (dest_x, dest_y) = (format!("{repo_x}:1"), format!("{repo_y}:1"));
    let base_arg = format!("BASE_REGISTRY={reg}");
    // No subcommand and no --isolation: argv[0] `executor` selects the executor, and
    // /.dockerenv makes it build in `/` as kaniko does.
    let out = in_root(
        r,
        &[
            "--context",
            "dir:///workspace",
            "--dockerfile",
            "Dockerfile",
            "--destination",
            &dest_x,
            "--destination",
            &dest_y,
            "--build-arg",
            &base_arg,
            "--digest-file",
            "/kaniko/digest",
            "--image-name-with-digest-file",
            "/kaniko/names",
            "--image-name-tag-with-digest-file",
            "/kaniko/tags",
            "--label",
            "team=ci",
            "--reproducible",
        ],
    );
    assert_ok(&out, "/kaniko/executor");
    let log = stderr(&out);
    assert!(!log.contains("warning:"), "no flag was ignored:\n{log}");

    // Built in the root's `/` (isolation none by default in a container).
    assert_eq!(
        fs::read_to_string(r.join("var/lib/app/greeting")).unwrap(),
        "hello\n",
        "the RUN step ran in the container's /:\n{log}"
    );
    assert!(
        r.join("bin/busybox").is_file(),
        "the base was unpacked in /"
    );

    // Both destinations hold the same manifest, and the files say so.
    let digest = skopeo_digest(&dest_x, &["--tls-verify=false"]);
    assert_eq!(skopeo_digest(&dest_y, &["--tls-verify=false"]), digest);
    assert!(digest.starts_with("sha256:"), "{digest}");
    assert_eq!(
        fs::read_to_string(r.join("kaniko/digest")).unwrap().trim(),
        digest
    );
    let names = fs::read_to_string(r.join("kaniko/names")).unwrap();
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        [format!("{repo_x}@{digest}"), format!("{repo_y}@{digest}")],
        "{names}"
    );
    let tags = fs::read_to_string(r.join("kaniko/tags")).unwrap();
    assert_eq!(
        tags.lines().collect::<Vec<_>>(),
        [format!("{dest_x}@{digest}"), format!("{dest_y}@{digest}")],
        "{tags}"
    );

    let config = skopeo_config(&dest_x);
    assert_eq!(config["config"]["Labels"]["team"], "ci", "{config}");
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.title"], "demo",
        "{config}"
    );
    assert_eq!(config["created"], "1970-01-01T00:00:00Z", "--reproducible");
    assert_demo_image(&dest_y);
}

// ---------------------------------------------------------------------------------------
// 2. executor login, then a push with the stored credentials

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn executor_login_stores_credentials_in_kaniko_docker_and_the_build_uses_them() {
    let reg = registry();
    let auth_reg = env_var("OCIBUILD_TEST_AUTH_REGISTRY");
    let user = env_var("OCIBUILD_TEST_AUTH_USER");
    let password = env_var("OCIBUILD_TEST_AUTH_PASSWORD");
    let dest = format!("{auth_reg}/test-exec-auth-{}:1", std::process::id());
    let base_arg = format!("BASE_REGISTRY={reg}");
    // No --context either: kaniko's default, /workspace/.
    let build = ["--build-arg", &base_arg, "--destination", &dest];

    // Without credentials the registry refuses the push (so the login below is what
    // makes the difference).
    let anonymous = throwaway_root(true);
    let out = in_root(anonymous.path(), &build);
    let err = stderr(&out);
    assert!(!out.status.success(), "pushed without credentials");
    assert!(err.contains("401"), "{err}");
    assert!(
        err.contains("/kaniko/.docker/config.json"),
        "the executor looks for credentials in /kaniko/.docker:\n{err}"
    );

    let root = throwaway_root(true);
    let r = root.path();
    let out = in_root_with_stdin(
        r,
        &["login", &auth_reg, "-u", &user, "--password-stdin"],
        Some(format!("{password}\n").as_bytes()),
    );
    assert_ok(&out, "executor login");
    let config_path = r.join("kaniko/.docker/config.json");
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(&config_path).unwrap()).unwrap();
    let auth = config["auths"][&auth_reg]["auth"].as_str().unwrap();
    assert_eq!(
        auth,
        run(
            "sh",
            &["-c", &format!("printf %s '{user}:{password}' | base64 -w0")]
        ),
        "{config}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&config_path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // No DOCKER_CONFIG in the environment: /kaniko/.docker is the executor's default.
    let out = in_root(r, &build);
    assert_ok(&out, "build with the stored credentials");
    let creds = format!("{user}:{password}");
    let digest = skopeo_digest(&dest, &["--tls-verify=false", "--creds", &creds]);
    assert!(
        stderr(&out).contains(&format!("pushed {dest}@{digest}")),
        "{}",
        stderr(&out)
    );
}

// ---------------------------------------------------------------------------------------
// 3. contexts

pub(crate) fn demo_tar_gz(dir: &Path) -> PathBuf {
    let path = dir.join("ctx.tar.gz");
    run(
        "tar",
        &[
            "-czf",
            path.to_str().unwrap(),
            "-C",
            testdata("demo").to_str().unwrap(),
            ".",
        ],
    );
    path
}

/// Builds the demo from `context` (plus `extra` flags) with the executor on the test
/// machine, pushes it and checks the image holds the demo's files.
pub(crate) fn build_demo_from(
    name: &str,
    context: &str,
    extra: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&[u8]>,
) {
    let dest = format!("{}:1", unique_repo(name));
    let base_arg = format!("BASE_REGISTRY={}", registry());
    let mut args = vec![
        "executor",
        "--isolation",
        "namespaces",
        "--context",
        context,
        "--build-arg",
        &base_arg,
        "--destination",
        &dest,
    ];
    args.extend_from_slice(extra);
    let out = match stdin {
        Some(bytes) => ocibuild_with_stdin(&args, env, bytes),
        None => ocibuild_with_env(&args, env),
    };
    assert_ok(&out, &format!("building from {context}"));
    assert_demo_image(&dest);
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn context_tar_gz_file() {
    let dir = tempfile::tempdir().unwrap();
    let tar = demo_tar_gz(dir.path());
    build_demo_from(
        "ctx-tar",
        &format!("tar://{}", tar.display()),
        &[],
        &[],
        None,
    );
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn context_tar_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = fs::read(demo_tar_gz(dir.path())).unwrap();
    build_demo_from("ctx-stdin", "tar://stdin", &[], &[], Some(&bytes));
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn context_dir_with_sub_path() {
    let dir = tempfile::tempdir().unwrap();
    // The top level has a Dockerfile that cannot build: only the sub-path's works.
    fs::write(dir.path().join("Dockerfile"), "FROM scratch\nRUN false\n").unwrap();
    let sub = dir.path().join("services/demo");
    fs::create_dir_all(&sub).unwrap();
    run(
        "cp",
        &[
            "-a",
            &format!("{}/.", testdata("demo").display()),
            sub.to_str().unwrap(),
        ],
    );
    build_demo_from(
        "ctx-sub",
        &format!("dir://{}", dir.path().display()),
        &["--context-sub-path", "services/demo"],
        &[],
        None,
    );
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn context_s3_object() {
    let endpoint = env_var("OCIBUILD_TEST_S3_ENDPOINT");
    let access = env_var("OCIBUILD_TEST_S3_ACCESS_KEY");
    let secret = env_var("OCIBUILD_TEST_S3_SECRET_KEY");
    let python = PathBuf::from(env_var("OCIBUILD_LAB_DIR")).join("s3-venv/bin/python");
    let dir = tempfile::tempdir().unwrap();
    let tar = demo_tar_gz(dir.path());
    let bucket = format!("exec-ctx-{}", std::process::id());
    let script = "import sys, boto3\n\
        endpoint, access, secret, bucket, path = sys.argv[1:]\n\
        s3 = boto3.client('s3', endpoint_url=endpoint, aws_access_key_id=access,\n\
        \x20   aws_secret_access_key=secret, region_name='us-east-1')\n\
        s3.create_bucket(Bucket=bucket)\n\
        s3.upload_file(path, bucket, 'builds/ctx.tar.gz')\n";
    run(
        python.to_str().unwrap(),
        &[
            "-c",
            script,
            &endpoint,
            &access,
            &secret,
            &bucket,
            tar.to_str().unwrap(),
        ],
    );
    build_demo_from(
        "ctx-s3",
        &format!("s3://{bucket}/builds/ctx.tar.gz"),
        &[],
        &[
            ("AWS_ACCESS_KEY_ID", &access),
            ("AWS_SECRET_ACCESS_KEY", &secret),
            ("S3_ENDPOINT", &endpoint),
        ],
        None,
    );
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(["-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git is installed (scripts/lab.sh installs it)");
    assert_ok(&out, &format!("git {args:?}"));
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn context_git_daemon_branch() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("src");
    let base = dir.path().join("srv");
    fs::create_dir_all(&base).unwrap();
    fs::create_dir_all(&work).unwrap();
    run(
        "cp",
        &[
            "-a",
            &format!("{}/.", testdata("demo").display()),
            work.to_str().unwrap(),
        ],
    );
    git(&work, &["init", "-q"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "demo"]);
    // A second branch whose Dockerfile cannot build: main must be the one cloned.
    git(&work, &["checkout", "-q", "-b", "broken"]);
    fs::write(work.join("Dockerfile"), "FROM scratch\nRUN false\n").unwrap();
    git(&work, &["commit", "-q", "-am", "broken"]);
    git(
        dir.path(),
        &["clone", "-q", "--bare", "src", "srv/repo.git"],
    );
    // The bare clone's HEAD follows src's current branch (broken).
    git(
        &base.join("repo.git"),
        &["symbolic-ref", "HEAD", "refs/heads/broken"],
    );

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _daemon = Daemon(
        Command::new("git")
            .arg("daemon")
            .arg("--export-all")
            .arg(format!("--base-path={}", base.display()))
            .arg(format!("--port={port}"))
            .arg("--listen=127.0.0.1")
            .arg("--reuseaddr")
            .arg(&base)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "git daemon did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    build_demo_from(
        "ctx-git",
        &format!("git://127.0.0.1:{port}/repo.git#refs/heads/main"),
        &[],
        &[("GIT_PULL_METHOD", "git")],
        None,
    );
}

// ---------------------------------------------------------------------------------------
// 4. TLS

fn demo_build_args() -> Vec<String> {
    vec![
        "--context".into(),
        testdata("demo").display().to_string(),
        "--build-arg".into(),
        format!("BASE_REGISTRY={}", registry()),
    ]
}

fn executor_demo(dest: &str, extra: &[String]) -> Output {
    let mut args = demo_build_args();
    args.push("--destination".into());
    args.push(dest.into());
    args.extend_from_slice(extra);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    executor(&refs, &[])
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn tls_registry_needs_its_ca_or_skip_verify() {
    let tls = env_var("OCIBUILD_TEST_TLS_REGISTRY");
    let ca = env_var("OCIBUILD_TEST_TLS_CA");
    let repo = format!("{tls}/test-exec-tls-{}", std::process::id());

    let plain = format!("{repo}:plain");
    let out = executor_demo(&plain, &[]);
    let err = stderr(&out);
    assert!(!out.status.success(), "pushed to a private-CA registry");
    assert!(err.contains("TLS"), "{err}");
    assert!(
        err.contains(&format!("--registry-certificate {tls}=")),
        "{err}"
    );
    let inspect = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{plain}"))
        .output()
        .unwrap();
    assert!(!inspect.status.success(), "nothing was pushed");

    let with_ca = format!("{repo}:ca");
    let out = executor_demo(
        &with_ca,
        &["--registry-certificate".into(), format!("{tls}={ca}")],
    );
    assert_ok(&out, "push with --registry-certificate");
    let cert_dir = tempfile::tempdir().unwrap();
    fs::copy(&ca, cert_dir.path().join("ca.crt")).unwrap();
    let verified = format!("--cert-dir={}", cert_dir.path().display());
    skopeo_digest(&with_ca, &[&verified]);

    let skipped = format!("{repo}:skip");
    let out = executor_demo(
        &skipped,
        &["--skip-tls-verify-registry".into(), tls.clone()],
    );
    assert_ok(&out, "push with --skip-tls-verify-registry");
    skopeo_digest(&skipped, &[&verified]);
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn mtls_registry_takes_a_client_certificate() {
    let mtls = env_var("OCIBUILD_TEST_MTLS_REGISTRY");
    let ca = env_var("OCIBUILD_TEST_TLS_CA");
    let cert = env_var("OCIBUILD_TEST_TLS_CLIENT_CERT");
    let key = env_var("OCIBUILD_TEST_TLS_CLIENT_KEY");
    let dest = format!("{mtls}/test-exec-mtls-{}:1", std::process::id());
    let ca_flag = ["--registry-certificate".to_string(), format!("{mtls}={ca}")];

    let out = executor_demo(&dest, &ca_flag);
    let err = stderr(&out);
    assert!(!out.status.success(), "pushed without a client certificate");
    assert!(err.contains("--registry-client-cert"), "{err}");

    let mut flags = ca_flag.to_vec();
    flags.push("--registry-client-cert".into());
    flags.push(format!("{mtls}={cert},{key}"));
    let out = executor_demo(&dest, &flags);
    assert_ok(&out, "push with --registry-client-cert");

    let cert_dir = tempfile::tempdir().unwrap();
    fs::copy(&ca, cert_dir.path().join("ca.crt")).unwrap();
    fs::copy(&cert, cert_dir.path().join("client.cert")).unwrap();
    fs::copy(&key, cert_dir.path().join("client.key")).unwrap();
    let digest = skopeo_digest(
        &dest,
        &[&format!("--cert-dir={}", cert_dir.path().display())],
    );
    assert!(
        stderr(&out).contains(&format!("pushed {dest}@{digest}")),
        "{}",
        stderr(&out)
    );
}

// ---------------------------------------------------------------------------------------
// 5. accepted no-op flags

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn accepted_noop_flags_each_warn_and_the_build_succeeds() {
    let noop: &[(&str, &[&str])] = &[
        ("--compressed-caching", &["--compressed-caching=false"]),
        ("--single-snapshot", &["--single-snapshot"]),
        ("--use-new-run", &["--use-new-run"]),
        ("--skip-unused-stages", &["--skip-unused-stages"]),
        ("--snapshot-mode", &["--snapshot-mode=redo"]),
        ("--preserve-context", &["--preserve-context"]),
        (
            "--push-ignore-immutable-tag-errors",
            &["--push-ignore-immutable-tag-errors"],
        ),
        (
            "--image-fs-extract-retry",
            &["--image-fs-extract-retry", "3"],
        ),
        ("--force-build-metadata", &["--force-build-metadata"]),
        ("--materialize", &["--materialize"]),
        (
            "--credential-helpers",
            &["--credential-helpers", "ecr-login"],
        ),
    ];
    let dest = format!("{}:1", unique_repo("exec-noop"));
    let mut args: Vec<String> = Vec::new();
    for (_, given) in noop {
        args.extend(given.iter().map(|s| s.to_string()));
    }
    let out = executor_demo(&dest, &args);
    assert_ok(&out, "build with the no-op flags");
    let err = stderr(&out);
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning:")).collect();
    for (flag, _) in noop {
        let prefix = format!("warning: {flag} changes nothing in ocibuild: ");
        assert!(
            warnings.iter().any(|w| w.starts_with(&prefix)),
            "no warning for {flag}:\n{err}"
        );
    }
    assert_eq!(warnings.len(), noop.len(), "one warning per flag:\n{err}");
    assert_demo_image(&dest);

    // A flag neither kaniko nor ocibuild knows is refused by the parser, before building.
    let out = executor(
        &["--context", "/nonexistent", "--no-push", "--frobnicate"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("unexpected argument '--frobnicate' found"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// 6. --no-push-cache

fn list_tags(repo: &str) -> Vec<String> {
    let out = Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{repo}"))
        .output()
        .unwrap();
    if !out.status.success() {
        return Vec::new();
    }
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    value["Tags"]
        .as_array()
        .map(|tags| {
            tags.iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn no_push_cache_leaves_the_cache_repo_empty() {
    // Distinct greetings: the two builds never share a RUN key, so the second cannot be
    // served (or not pushed) because of the first.
    let dest = unique_repo("exec-npc");
    let cache_off = unique_repo("exec-npc-cache");
    let out = executor_demo(
        &format!("{dest}:1"),
        &[
            "--cache".into(),
            "--cache-repo".into(),
            cache_off.clone(),
            "--no-push-cache".into(),
            "--build-arg".into(),
            format!("GREETING=npc-{}", std::process::id()),
        ],
    );
    assert_ok(&out, "build with --no-push-cache");
    assert!(
        stderr(&out).contains("CACHE MISS"),
        "the cache was looked up:\n{}",
        stderr(&out)
    );
    assert_eq!(
        list_tags(&cache_off),
        Vec::<String>::new(),
        "nothing pushed"
    );

    let cache_on = unique_repo("exec-npc-cache");
    let out = executor_demo(
        &format!("{dest}:2"),
        &[
            "--cache".into(),
            "--cache-repo".into(),
            cache_on.clone(),
            "--build-arg".into(),
            format!("GREETING=pc-{}", std::process::id()),
        ],
    );
    assert_ok(&out, "build with cache pushes");
    assert!(
        !list_tags(&cache_on).is_empty(),
        "the cache repo got the RUN layer:\n{}",
        stderr(&out)
    );
}

// ---------------------------------------------------------------------------------------
// 7. --cache with --cache-dir and no --cache-repo (kaniko: layers in <destination>/cache)

/// The `cache: N hits, M misses` numbers of a build log.
fn cache_counts(log: &str) -> (usize, usize) {
    let line = log
        .lines()
        .find(|l| l.starts_with("cache: "))
        .unwrap_or_else(|| panic!("no `cache:` summary line:\n{log}"));
    let numbers: Vec<usize> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn cache_dir_without_cache_repo_still_caches_layers_in_the_destination_cache_repo() {
    let dest = unique_repo("exec-cachedir");
    // A greeting of this test only: no other build has its RUN key.
    let greeting = format!("GREETING=cachedir-{}-{}", std::process::id(), dest.len());
    let build = |tag: &str, cache_dir: &Path| {
        let layer_store = cache_dir.join("fresh-layer-store");
        executor_demo(
            &format!("{dest}:{tag}"),
            &[
                "--cache=true".into(),
                format!("--cache-dir={}", cache_dir.display()),
                format!("--layer-store={}", layer_store.display()),
                "--build-arg".into(),
                greeting.clone(),
            ],
        )
    };
    let first_dir = tempfile::tempdir().unwrap();
    let first = build("1", first_dir.path());
    assert_ok(&first, "first build");
    assert!(stderr(&first).contains("CACHE MISS"), "{}", stderr(&first));
    let cache_repo = format!("{dest}/cache");
    assert!(
        !list_tags(&cache_repo).is_empty(),
        "the RUN layer was pushed to {cache_repo}:\n{}",
        stderr(&first)
    );

    // A new pod: an empty cache directory, so every hit comes from the registry.
    let second_dir = tempfile::tempdir().unwrap();
    let second = build("2", second_dir.path());
    assert_ok(&second, "second build");
    let log = stderr(&second);
    assert!(!log.contains("CACHE MISS"), "{log}");
    let (hits, misses) = cache_counts(&log);
    assert!(hits >= 1 && misses == 0, "{log}");
    let run_layer = |tag: &str| {
        let layers = skopeo_inspect(&format!("{dest}:{tag}"))["Layers"].clone();
        layers.as_array().unwrap().last().unwrap().clone()
    };
    assert_eq!(
        run_layer("2"),
        run_layer("1"),
        "the RUN layer came from the cache"
    );
    let img = unpack(&format!("docker://{dest}:2"));
    assert_eq!(
        fs::read_to_string(img.rootfs.join("var/lib/app/greeting")).unwrap(),
        format!("{}\n", greeting.trim_start_matches("GREETING="))
    );
}
