//! Helpers for the end-to-end tests: the lab registry, running `ocibuild`, and reading
//! results back with independent tools (skopeo, umoci, tar).

#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// `host:port` of the lab registry (started by `scripts/lab.sh up`).
pub fn registry() -> String {
    std::env::var("OCIBUILD_TEST_REGISTRY").unwrap_or_else(|_| {
        panic!(
            "OCIBUILD_TEST_REGISTRY is not set: start the test lab with \
             `eval \"$(scripts/lab.sh env)\"` or run `scripts/test.sh`"
        )
    })
}

/// A repository name unique to this test run.
pub fn unique_repo(name: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{}/test-{name}-{}-{n}", registry(), std::process::id())
}

/// A string no one else produces: a tag plus 24 hex digits of a hash of time, pid and a
/// counter.
pub fn unique_string(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let seed = format!(
        "{tag}/{nanos}/{}/{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    format!("{tag}-{}", &sha256_hex(seed.as_bytes())[..24])
}

/// The sha256 of `data`, in hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// `len` bytes that do not compress, the same for the same `seed` (a sha256 chain).
pub fn incompressible(seed: &[u8], len: usize) -> Vec<u8> {
    use sha2::Digest;
    let mut bytes = Vec::with_capacity(len + 32);
    let mut block = sha2::Sha256::digest(seed).to_vec();
    while bytes.len() < len {
        block = sha2::Sha256::digest(&block).to_vec();
        bytes.extend_from_slice(&block);
    }
    bytes.truncate(len);
    bytes
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A directory under `testdata/`.
pub fn testdata(name: &str) -> PathBuf {
    repo_root().join("testdata").join(name)
}

/// Runs `ocibuild` with `args`.
pub fn ocibuild(args: &[&str]) -> Output {
    ocibuild_with_env(args, &[])
}

/// Runs `ocibuild` with `args` and extra environment variables.
pub fn ocibuild_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ocibuild"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("running ocibuild")
}

/// Writes `Dockerfile` with `text` (and the given extra files) into a new temporary context.
pub fn context_with(text: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), text).unwrap();
    for (name, content) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

/// Runs `ocibuild build` and panics with its output when it fails.
pub fn build_ok(args: &[&str]) -> Output {
    let mut all = vec!["build"];
    all.extend_from_slice(args);
    let out = ocibuild(&all);
    assert!(
        out.status.success(),
        "ocibuild {:?} failed:\n{}",
        all,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The lab's registry that wants credentials, and a docker config directory with them.
pub struct AuthRegistry {
    /// `host:port`.
    pub registry: String,
    /// A `DOCKER_CONFIG` directory whose `config.json` has the credentials.
    pub docker_config: tempfile::TempDir,
    /// The user name and password.
    pub user: String,
    pub password: String,
    /// The config's `auth` value: base64 of `user:password`.
    pub basic: String,
}

/// The lab's registry that wants credentials (`OCIBUILD_TEST_AUTH_*`), with a docker
/// config that has them.
pub fn auth_registry() -> AuthRegistry {
    let registry = std::env::var("OCIBUILD_TEST_AUTH_REGISTRY")
        .expect("OCIBUILD_TEST_AUTH_REGISTRY is not set: run scripts/test.sh");
    let user = std::env::var("OCIBUILD_TEST_AUTH_USER").unwrap();
    let password = std::env::var("OCIBUILD_TEST_AUTH_PASSWORD").unwrap();
    let docker_config = tempfile::tempdir().unwrap();
    let basic = run(
        "sh",
        &["-c", &format!("printf %s '{user}:{password}' | base64")],
    );
    let basic = basic.trim().to_string();
    std::fs::write(
        docker_config.path().join("config.json"),
        serde_json::json!({"auths": {registry.clone(): {"auth": basic}}}).to_string(),
    )
    .unwrap();
    AuthRegistry {
        registry,
        docker_config,
        user,
        password,
        basic,
    }
}

/// Runs a command and returns its stdout, panicking with stderr when it fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| {
        panic!("running {cmd}: {e} (is it installed? scripts/lab.sh up installs it)")
    });
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `umoci unpack --image LAYOUT:TAG BUNDLE`; returns the bundle's root filesystem.
pub fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) -> PathBuf {
    let image = format!("{}:{tag}", layout.display());
    run(
        "umoci",
        &["unpack", "--image", &image, bundle.to_str().unwrap()],
    );
    bundle.join("rootfs")
}

/// `skopeo inspect` of an image in the lab registry.
pub fn skopeo_inspect(reference: &str) -> Value {
    let text = run(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ],
    );
    serde_json::from_str(&text).unwrap()
}

/// The image config, as skopeo reads it.
pub fn skopeo_config(reference: &str) -> Value {
    let text = run(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--config",
            "--raw",
            &format!("docker://{reference}"),
        ],
    );
    serde_json::from_str(&text).unwrap()
}

/// The raw manifest, as skopeo reads it.
pub fn skopeo_manifest(reference: &str) -> Value {
    let text = run(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{reference}"),
        ],
    );
    serde_json::from_str(&text).unwrap()
}

/// Asserts the media types of a manifest: its own, its config's and every layer's.
pub fn assert_media_types(
    manifest: &Value,
    manifest_type: &str,
    config_type: &str,
    layer_type: &str,
) {
    assert_eq!(manifest["mediaType"], manifest_type, "{manifest}");
    assert_eq!(manifest["config"]["mediaType"], config_type, "{manifest}");
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(layer["mediaType"], layer_type, "{manifest}");
    }
}

/// An image copied with skopeo into an OCI layout and unpacked with umoci.
pub struct Unpacked {
    _dir: tempfile::TempDir,
    /// The OCI layout directory.
    pub layout: PathBuf,
    /// The unpacked root filesystem.
    pub rootfs: PathBuf,
}

/// Copies `source` (a skopeo transport reference such as `docker://…` or
/// `docker-archive:…`) into an OCI layout and unpacks it with umoci.
pub fn unpack(source: &str) -> Unpacked {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let bundle = dir.path().join("bundle");
    run(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            source,
            &format!("oci:{}:img", layout.display()),
        ],
    );
    run(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:img", layout.display()),
            bundle.to_str().unwrap(),
        ],
    );
    Unpacked {
        rootfs: bundle.join("rootfs"),
        layout,
        _dir: dir,
    }
}

impl Unpacked {
    /// The layer blobs of the image, bottom first.
    pub fn layer_files(&self) -> Vec<PathBuf> {
        let index: Value =
            serde_json::from_slice(&std::fs::read(self.layout.join("index.json")).unwrap())
                .unwrap();
        let digest = index["manifests"][0]["digest"].as_str().unwrap();
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(self.blob(digest)).unwrap()).unwrap();
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| self.blob(l["digest"].as_str().unwrap()))
            .collect()
    }

    fn blob(&self, digest: &str) -> PathBuf {
        let (alg, hex) = digest.split_once(':').unwrap();
        self.layout.join("blobs").join(alg).join(hex)
    }
}

/// The entry names of a (compressed) layer tar, listed by GNU tar.
pub fn tar_names(layer: &Path) -> Vec<String> {
    run("tar", &["-tzf", layer.to_str().unwrap()])
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect()
}

/// A loopback HTTP server that answers every request with `body` and counts the requests.
pub struct Counter {
    /// The port it listens on.
    pub port: u16,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Counter {
    /// Starts the server on a free loopback port.
    pub fn start(body: impl Into<String>) -> Counter {
        use std::io::{Read, Write};
        let body: String = body.into();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                // Counted before answering, so the count is final when the RUN is done.
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body.as_bytes());
            }
        });
        Counter { port, requests }
    }

    /// Requests answered so far.
    pub fn count(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A throwaway root filesystem holding only ocibuild (at /kaniko/executor, so that it runs
/// under kaniko's name) and the libraries it needs, plus the demo context at /workspace;
/// `container` adds `/.dockerenv` so that ocibuild believes it runs in a container.
pub fn throwaway_root(container: bool) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for dir in ["kaniko", "proc", "dev", "tmp", "workspace", "etc"] {
        std::fs::create_dir_all(r.join(dir)).unwrap();
    }
    let exe = env!("CARGO_BIN_EXE_ocibuild");
    // Copied by a `cp` child, never through a descriptor of this (multi-threaded) test
    // process: a concurrent test's fork would inherit a writable descriptor of the copy
    // until its child execs, and running the executor meanwhile fails with ETXTBSY
    // ("Text file busy").
    run("cp", &[exe, r.join("kaniko/executor").to_str().unwrap()]);
    for lib in run("ldd", &[exe])
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let dest = r.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(lib, &dest).unwrap();
    }
    run(
        "cp",
        &[
            "-a",
            &format!("{}/.", testdata("demo").display()),
            r.join("workspace").to_str().unwrap(),
        ],
    );
    if container {
        std::fs::write(r.join(".dockerenv"), "").unwrap();
    }
    root
}

/// Runs `/kaniko/executor ARGS` chrooted into `root` in new mount, pid and cgroup
/// namespaces, without the container hints of this process's environment.
pub fn in_root(root: &Path, args: &[&str]) -> Output {
    in_root_with_stdin(root, args, None)
}

/// [`in_root`] with `stdin` (if any) written to the executor's standard input. The
/// environment's `container`, `KUBERNETES_SERVICE_HOST` and `DOCKER_CONFIG` are removed,
/// so only the root itself tells the executor where it runs and where credentials are.
pub fn in_root_with_stdin(root: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let r = root.display();
    let script = format!(
        "mount -t proc proc {r}/proc && mount --rbind /dev {r}/dev && \
         exec chroot {r} /kaniko/executor {}",
        quoted.join(" ")
    );
    let mut child = Command::new("unshare")
        .args([
            "--mount", "--pid", "--cgroup", "--fork", "sh", "-c", &script,
        ])
        .env_remove("container")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("DOCKER_CONFIG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running unshare");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(bytes).unwrap();
    }
    child.wait_with_output().expect("waiting for unshare")
}

/// Runs `ocibuild ARGS` with extra environment variables and `stdin` on its standard input.
pub fn ocibuild_with_stdin(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ocibuild"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running ocibuild");
    let mut pipe = child.stdin.take().unwrap();
    let bytes = stdin.to_vec();
    // A writer thread: ocibuild may start writing its log before it has read all of stdin.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&bytes);
    });
    let out = child.wait_with_output().expect("waiting for ocibuild");
    writer.join().unwrap();
    out
}

/// The ocibuild binary, where any user can execute it: the built one when every directory
/// on its way is searchable by others, else a copy (mode 0755, written to a temporary
/// name and renamed, so that no one executes a half-written file) in a directory of the
/// system's temporary directory, replaced when the build is newer.
pub fn binary_for_users() -> PathBuf {
    use std::fs::{metadata, Permissions};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let built = PathBuf::from(env!("CARGO_BIN_EXE_ocibuild"));
    let searchable = |dir: &Path| metadata(dir).is_ok_and(|m| m.mode() & 0o001 != 0);
    let reachable = built.ancestors().skip(1).all(searchable);
    if reachable && metadata(&built).is_ok_and(|m| m.mode() & 0o005 == 0o005) {
        return built;
    }
    let dir = std::env::temp_dir().join("ocibuild-e2e-rootless");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join("ocibuild");
    let stale = match (metadata(&copy), metadata(&built)) {
        (Ok(c), Ok(b)) => c.len() != b.len() || c.mtime() < b.mtime(),
        _ => true,
    };
    if stale {
        let tmp = dir.join(format!("ocibuild.{}", unique_string("tmp")));
        std::fs::copy(&built, &tmp).unwrap();
        std::fs::set_permissions(&tmp, Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &copy).unwrap();
    }
    copy
}
