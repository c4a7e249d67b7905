//! Registry faults: builds that pull their base image through `scripts/faultproxy.py` in
//! front of the lab registry and push through it too, while the proxy answers 5xx and 429,
//! resets, truncates, corrupts, stalls and refuses pushes by rule. Each test checks what
//! the user sees (exit code, message), how many attempts the proxy saw (the retry policy:
//! `N` retries mean `N + 1` attempts) and what is left in the registry (asked directly,
//! not through the proxy).
//!
//! The base image is the lab's busybox; every build is `FROM` it plus one COPY, so the
//! base layer is downloaded once per build and a new layer, the config and the manifest
//! are pushed.
//!
//! Also a full disk: the work directory on a small tmpfs ([`Tmpfs`]) fails the build with
//! an error that says the disk is full and where, leaving nothing behind.

use crate::common::*;
use base64::Engine;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The fault-injecting proxy in front of the lab registry; stopped when dropped.
pub(crate) struct FaultProxy {
    child: Child,
    /// `127.0.0.1:PORT` it listens on.
    pub(crate) addr: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl FaultProxy {
    /// Starts the proxy on a free port with `rules` (see `scripts/faultproxy.py`).
    pub(crate) fn start(rules: Value) -> FaultProxy {
        let dir = tempfile::tempdir().unwrap();
        let rules_file = dir.path().join("rules.json");
        std::fs::write(&rules_file, rules.to_string()).unwrap();
        let log = dir.path().join("log.jsonl");
        let mut child = Command::new("python3")
            .arg(repo_root().join("scripts/faultproxy.py"))
            .args(["--upstream", &registry()])
            .arg("--rules")
            .arg(&rules_file)
            .arg("--log")
            .arg(&log)
            .stdout(Stdio::piped())
            .spawn()
            .expect("running python3 scripts/faultproxy.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("faultproxy did not start: {line:?}"))
            .to_string();
        FaultProxy {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    /// The log entries of requests whose method is `method` and whose target contains
    /// `part`, in order.
    pub(crate) fn requests(&self, method: &str, part: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|e| e["method"] == method && e["path"].as_str().unwrap().contains(part))
            .collect()
    }

    /// How many such requests there were.
    pub(crate) fn count(&self, method: &str, part: &str) -> usize {
        self.requests(method, part).len()
    }

    /// The seconds between consecutive such requests.
    fn gaps(&self, method: &str, part: &str) -> Vec<f64> {
        let times: Vec<f64> = self
            .requests(method, part)
            .iter()
            .map(|e| e["time"].as_f64().unwrap())
            .collect();
        times.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The digest of the lab busybox's (only) layer.
fn base_layer() -> String {
    let manifest = skopeo_manifest(&format!("{}/busybox:latest", registry()));
    manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A build through a proxy and what it left.
struct Build {
    out: Output,
    /// The repository pushed to (without the registry).
    repo: String,
    /// The content of the file the build copies in.
    greeting: String,
    elapsed: Duration,
    /// The build's own (fresh) layer store: the base layer is never there before.
    _store: tempfile::TempDir,
}

impl Build {
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    /// Asserts that the build succeeded.
    fn assert_ok(&self) {
        assert!(
            self.out.status.success(),
            "build failed:\n{}",
            self.stderr()
        );
    }

    /// Asserts that the build failed with exit code 1 and returns its message.
    fn assert_failed(&self) -> String {
        let stderr = self.stderr();
        assert_eq!(self.out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("error: "), "{stderr}");
        stderr
    }

    /// Asserts that the lab registry holds the built image under tag `1`: busybox plus
    /// the greeting, every blob matching its digest (skopeo checks them as it copies).
    fn assert_pushed(&self) {
        let unpacked = unpack(&format!("docker://{}/{}:1", registry(), self.repo));
        assert!(unpacked.rootfs.join("bin/busybox").exists());
        let greeting = std::fs::read_to_string(unpacked.rootfs.join("greeting")).unwrap();
        assert_eq!(greeting, self.greeting);
    }

    /// Asserts that the lab registry has no tag in the repository pushed to.
    fn assert_nothing_tagged(&self) {
        let url = format!("http://{}/v2/{}/tags/list", registry(), self.repo);
        let body = run("curl", &["-s", &url]);
        let tags: Value = serde_json::from_str(&body).unwrap();
        let unknown = tags["errors"][0]["code"] == "NAME_UNKNOWN";
        let empty = tags["tags"].as_array().is_none_or(|t| t.is_empty());
        assert!(unknown || empty, "{} was tagged: {body}", self.repo);
    }
}

/// Builds `FROM <proxy>/busybox` plus one COPY and pushes it through the proxy to a new
/// repository, with `extra` flags and environment `env`.
fn build_through(proxy: &FaultProxy, extra: &[&str], env: &[(&str, &str)]) -> Build {
    let greeting = unique_string("faults");
    let context = context_with(
        "ARG BASE\nFROM ${BASE}\nCOPY greeting /greeting\n",
        &[("greeting", &greeting)],
    );
    let full = unique_repo("faults");
    let repo = full.split_once('/').unwrap().1.to_string();
    let base = format!("BASE={}/busybox:latest", proxy.addr);
    let dest = format!("{}/{repo}:1", proxy.addr);
    let store = tempfile::tempdir().unwrap();
    let mut args = vec![
        "build",
        "--layer-store",
        store.path().to_str().unwrap(),
        "--context",
        context.path().to_str().unwrap(),
        "--build-arg",
        &base,
        "--destination",
        &dest,
        "--insecure-registry",
        &proxy.addr,
    ];
    args.extend_from_slice(extra);
    let start = Instant::now();
    let out = ocibuild_with_env(&args, env);
    Build {
        out,
        repo,
        greeting,
        elapsed: start.elapsed(),
        _store: store,
    }
}

/// A rule for the GETs of blob `digest` (see `scripts/faultproxy.py`).
pub(crate) fn blob_get(digest: &str, fault: Value) -> Value {
    let mut rule = json!({"method": "GET", "path": format!("/blobs/{digest}$")});
    rule.as_object_mut()
        .unwrap()
        .extend(fault.as_object().unwrap().clone());
    rule
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn server_errors_are_retried_on_pulls_and_pushes() {
    let layer = base_layer();
    let proxy = FaultProxy::start(json!([
        blob_get(&layer, json!({"action": "status", "status": 500, "count": 2})),
        {"method": "PUT", "path": "/manifests/", "action": "status", "status": 502, "count": 2},
    ]));
    let build = build_through(&proxy, &[], &[]);
    build.assert_ok();
    assert_eq!(proxy.count("GET", &layer), 3, "two 500s, then the layer");
    assert_eq!(
        proxy.count("PUT", "/manifests/"),
        3,
        "two 502s, then the push"
    );
    build.assert_pushed();
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn retry_after_is_waited_for_on_pulls_and_pushes() {
    let layer = base_layer();
    let proxy = FaultProxy::start(json!([
        blob_get(&layer, json!({"action": "status", "status": 429, "retry_after": 2, "count": 1})),
        {"method": "PUT", "path": "/manifests/", "action": "status", "status": 503, "retry_after": 2, "count": 1},
    ]));
    let build = build_through(&proxy, &[], &[]);
    build.assert_ok();
    for (method, path) in [("GET", layer.as_str()), ("PUT", "/manifests/")] {
        let gaps = proxy.gaps(method, path);
        assert_eq!(gaps.len(), 1, "{method} {path}: one retry");
        assert!(gaps[0] >= 2.0, "{method} {path}: retried after {gaps:?} s");
    }
    build.assert_pushed();
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_reset_and_a_truncated_base_layer_are_retried() {
    let layer = base_layer();
    let proxy = FaultProxy::start(json!([
        blob_get(&layer, json!({"action": "reset", "count": 1})),
        blob_get(&layer, json!({"action": "truncate", "count": 1})),
    ]));
    let build = build_through(&proxy, &[], &[]);
    build.assert_ok();
    assert_eq!(proxy.count("GET", &layer), 3);
    build.assert_pushed();

    // Reset every time: the build fails once its retries are used up, and does not
    // suggest plain HTTP, which it already speaks.
    let proxy = FaultProxy::start(json!([blob_get(&layer, json!({"action": "reset"}))]));
    let build = build_through(&proxy, &["--image-download-retry", "1"], &[]);
    let stderr = build.assert_failed();
    assert_eq!(proxy.count("GET", &layer), 2);
    assert!(stderr.contains(&format!("blob {layer}")), "{stderr}");
    assert!(stderr.contains("cut short"), "{stderr}");
    assert!(!stderr.contains("--insecure"), "{stderr}");
    build.assert_nothing_tagged();
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_corrupt_layer_download_is_retried_and_never_cached_or_pushed() {
    let layer = base_layer();
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let cached = cache
        .path()
        .join("blobs/sha256")
        .join(layer.strip_prefix("sha256:").unwrap());
    // The mount from busybox is refused, so the downloaded layer is uploaded.
    let proxy = FaultProxy::start(json!([
        blob_get(&layer, json!({"action": "corrupt", "count": 1})),
        {"method": "POST", "path": "mount=", "action": "status", "status": 500},
    ]));
    let build = build_through(&proxy, &["--cache-dir", cache_dir], &[]);
    build.assert_ok();
    assert_eq!(
        proxy.count("GET", &layer),
        2,
        "the corrupt copy is fetched again"
    );
    let cached_hex = sha256_hex(&std::fs::read(&cached).unwrap());
    assert_eq!(
        format!("sha256:{cached_hex}"),
        layer,
        "the cache holds the good copy"
    );
    let hex = layer.strip_prefix("sha256:").unwrap();
    let uploads = proxy.requests("PUT", &format!("digest=sha256%3A{hex}"));
    assert_eq!(uploads.len(), 1, "the layer was uploaded once");
    assert_eq!(uploads[0]["status"], 201, "and the registry took it");
    build.assert_pushed();
    assert_no_temp_files(cache.path());

    // Corrupt every time: the build fails, nothing is cached and nothing tagged.
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let proxy = FaultProxy::start(json!([blob_get(&layer, json!({"action": "corrupt"}))]));
    let build = build_through(
        &proxy,
        &["--cache-dir", cache_dir, "--image-download-retry", "1"],
        &[],
    );
    let stderr = build.assert_failed();
    assert!(stderr.contains("digest mismatch"), "{stderr}");
    assert_eq!(proxy.count("GET", &layer), 2);
    let blobs = cache.path().join("blobs/sha256");
    assert!(
        !blobs.join(layer.strip_prefix("sha256:").unwrap()).exists(),
        "a corrupt layer was cached"
    );
    assert_no_temp_files(cache.path());
    build.assert_nothing_tagged();
}

/// Asserts that the cache directory's `tmp/` holds nothing.
pub(crate) fn assert_no_temp_files(cache: &Path) {
    let tmp = cache.join("tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", tmp.display());
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_stalled_download_times_out_and_the_retry_succeeds() {
    let layer = base_layer();
    // Never answered, then stopped after 100 kB: each attempt ends after the 3 s idle
    // timeout. A download that is slow but moving (~4 s) is not cut off.
    let proxy = FaultProxy::start(json!([
        blob_get(&layer, json!({"action": "stall", "count": 1})),
        blob_get(
            &layer,
            json!({"action": "stall", "after": 100000, "count": 1})
        ),
        blob_get(
            &layer,
            json!({"action": "throttle", "rate": 300000, "count": 1})
        ),
    ]));
    let build = build_through(&proxy, &["--registry-timeout", "3s"], &[]);
    build.assert_ok();
    assert_eq!(proxy.count("GET", &layer), 3);
    let gaps = proxy.gaps("GET", &layer);
    assert!(gaps.iter().all(|g| *g >= 3.0), "retried after {gaps:?} s");
    build.assert_pushed();
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_registry_stalled_for_good_fails_the_build_in_time() {
    let layer = base_layer();
    let proxy = FaultProxy::start(json!([blob_get(&layer, json!({"action": "stall"}))]));
    let build = build_through(
        &proxy,
        &["--registry-timeout", "2s", "--image-download-retry", "1"],
        &[],
    );
    let stderr = build.assert_failed();
    assert_eq!(proxy.count("GET", &layer), 2);
    // Two attempts of 2 s and one backoff, plus the build around them.
    assert!(
        build.elapsed >= Duration::from_secs(4) && build.elapsed < Duration::from_secs(15),
        "{:?}",
        build.elapsed
    );
    assert!(stderr.contains("no data from"), "{stderr}");
    assert!(stderr.contains("--registry-timeout"), "{stderr}");
    build.assert_nothing_tagged();
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn image_download_retry_n_makes_n_plus_one_attempts() {
    let layer = base_layer();
    for (flag, attempts) in [(Some("0"), 1), (Some("2"), 3), (None, 4)] {
        let proxy = FaultProxy::start(json!([blob_get(
            &layer,
            json!({"action": "status", "status": 500})
        )]));
        let extra: Vec<&str> = flag.map_or(vec![], |n| vec!["--image-download-retry", n]);
        let build = build_through(&proxy, &extra, &[]);
        let stderr = build.assert_failed();
        assert_eq!(proxy.count("GET", &layer), attempts, "{flag:?}");
        assert!(stderr.contains("unexpected HTTP 500"), "{stderr}");
        build.assert_nothing_tagged();
    }
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_failed_blob_upload_leaves_no_manifest_and_no_tag() {
    let proxy = FaultProxy::start(json!([
        {"method": "PUT", "path": "/blobs/uploads/", "action": "status", "status": 500},
    ]));
    let build = build_through(&proxy, &["--push-retry", "1"], &[]);
    let stderr = build.assert_failed();
    assert!(stderr.contains("upload of blob"), "{stderr}");
    assert!(stderr.contains("unexpected HTTP 500"), "{stderr}");
    assert_eq!(proxy.count("PUT", "/blobs/uploads/"), 2, "one retry");
    assert_eq!(proxy.count("PUT", "/manifests/"), 0, "no manifest pushed");
    build.assert_nothing_tagged();
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_401_on_push_says_the_credentials_may_not_push() {
    let challenge = json!({"WWW-Authenticate": "Basic realm=\"faultproxy\""});
    let proxy = FaultProxy::start(json!([
        {"method": ["POST", "PUT"], "path": "/blobs/uploads/", "action": "status", "status": 401, "headers": challenge},
    ]));
    let config = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode("pusher:secret");
    let auths = json!({"auths": {proxy.addr.clone(): {"auth": auth}}});
    std::fs::write(config.path().join("config.json"), auths.to_string()).unwrap();
    let env = [("DOCKER_CONFIG", config.path().to_str().unwrap())];
    let build = build_through(&proxy, &[], &env);
    let stderr = build.assert_failed();
    assert!(stderr.contains("lack permission to push to"), "{stderr}");
    assert!(!stderr.contains("to pull"), "{stderr}");
    assert_eq!(proxy.count("PUT", "/manifests/"), 0, "no manifest pushed");
    build.assert_nothing_tagged();
}

/// Needs no lab: the flag is checked before anything is built.
#[test]
fn registry_timeout_must_be_a_positive_duration() {
    let demo = testdata("demo");
    let demo = demo.to_str().unwrap();
    for bad in ["0s", "0", "soon", "-1s", "3"] {
        let flag = format!("--registry-timeout={bad}");
        let out = ocibuild(&["build", "--context", demo, "--dryrun", &flag]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bad}: {stderr}");
        assert!(stderr.contains("--registry-timeout"), "{bad}: {stderr}");
    }
    let out = ocibuild(&[
        "build",
        "--context",
        demo,
        "--dryrun",
        "--registry-timeout",
        "1.5s",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tmpfs of a given size mounted on a new temporary directory; unmounted on drop.
pub(crate) struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. `512k`).
    pub(crate) fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let option = format!("size={size}");
        let path = dir.path().to_str().unwrap();
        run("mount", &["-t", "tmpfs", "-o", &option, "tmpfs", path]);
        Tmpfs { dir }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The regular files in it, with their sizes.
    pub(crate) fn files(&self) -> Vec<(PathBuf, u64)> {
        let mut files = Vec::new();
        let mut dirs = vec![self.path().to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let entry = entry.unwrap();
                let meta = entry.metadata().unwrap();
                if meta.is_dir() {
                    dirs.push(entry.path());
                } else {
                    files.push((entry.path(), meta.len()));
                }
            }
        }
        files
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A context whose RUN writes 3 MB that do not compress: more than a 512 KiB work
/// directory takes, whether it fills up with the base layer's download or the step's layer.
fn big_run_context() -> tempfile::TempDir {
    context_with(
        &format!(
            "FROM {}/busybox:latest\nRUN head -c 3000000 /dev/urandom > /big\n",
            registry()
        ),
        &[],
    )
}

/// Asserts that a failed build said the disk is full and named `dir` as the full one.
fn assert_disk_full(out: &Output, dir: &Path) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let said = format!("disk full: no space left in {}", dir.display());
    assert!(stderr.contains(&said), "{said:?} in:\n{stderr}");
    assert!(stderr.contains("--work-dir"), "{stderr}");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_full_work_dir_fails_the_build_saying_so_and_leaves_nothing_behind() {
    let ctx = big_run_context();
    let ctx = ctx.path().to_str().unwrap();
    let store = tempfile::tempdir().unwrap();
    let store = store.path().to_str().unwrap();

    // --work-dir on a full disk: the directory stays (it is the user's), no partial
    // download or layer in it.
    let work = Tmpfs::mount("512k");
    let work_dir = work.path().to_str().unwrap();
    let out = ocibuild(&[
        "build",
        "--no-push",
        "--layer-store",
        store,
        "--work-dir",
        work_dir,
        "-c",
        ctx,
    ]);
    assert_disk_full(&out, work.path());
    let left: u64 = work.files().iter().map(|(_, size)| size).sum();
    assert!(left < 4096, "left in the work dir: {:?}", work.files());

    // The default work directory in a full TMPDIR: removed with everything in it.
    let tmp = Tmpfs::mount("512k");
    let env = [("TMPDIR", tmp.path().to_str().unwrap())];
    let args = ["build", "--no-push", "--layer-store", store, "-c", ctx];
    let out = ocibuild_with_env(&args, &env);
    assert_disk_full(&out, tmp.path());
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
}
