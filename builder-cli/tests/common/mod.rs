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
