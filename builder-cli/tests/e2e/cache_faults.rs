//! Layer cache faults: a cache entry is only a hint. Builds whose `--cache-repo` is reached
//! through `scripts/faultproxy.py` (see [`crate::faults`]) while the proxy fails the
//! downloads of cached layers or the lookups themselves: each build succeeds with a
//! warning naming the step, rebuilds what it could not take from the cache, pushes an
//! image identical to a clean build's (`--reproducible`: same digest), and leaves good
//! entries for the next build.
//!
//! A cache directory on a full disk (a small tmpfs) is only a warning too.
//!
//! Every proxied build here is the same three-step Dockerfile on the lab's busybox; the image is
//! pushed to the lab registry directly, the cache repository is in the lab registry too
//! and reached either directly or through the proxy.

use crate::cache::{assert_all_hit, key_of, result_of};
use crate::common::*;
use crate::faults::{blob_get, FaultProxy};
use serde_json::{json, Value};
use std::process::Output;

/// The cacheable steps of the Dockerfile, as the log starts them.
const STEPS: [&str; 3] = ["RUN echo a", "COPY f.txt", "RUN cat /a"];

/// A context, its cache repository and the repository its images are pushed to.
struct Fixture {
    ctx: tempfile::TempDir,
    /// The cache repository's path (without the registry).
    cache: String,
    /// The image repository (with the lab registry).
    repo: String,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let ctx = context_with(
            &format!(
                "FROM {}/busybox:latest\n\
                 RUN echo a > /a\n\
                 COPY f.txt /f.txt\n\
                 RUN cat /a /f.txt > /b\n",
                registry()
            ),
            &[("f.txt", "f\n")],
        );
        let repo = unique_repo(name);
        let cache = format!("{}-cache", repo.split_once('/').unwrap().1);
        Fixture { ctx, cache, repo }
    }

    /// Builds and pushes `:tag` with the cache repository reached at `via` (a registry
    /// address: the lab's, or the proxy's) and `extra` flags; each build with a fresh
    /// layer store.
    fn build(&self, via: &str, tag: &str, extra: &[&str]) -> Output {
        let store = tempfile::tempdir().unwrap();
        let cache_repo = format!("{via}/{}", self.cache);
        let dest = format!("{}:{tag}", self.repo);
        let mut args = vec![
            "build",
            "--layer-store",
            store.path().to_str().unwrap(),
            "--context",
            self.ctx.path().to_str().unwrap(),
            "--reproducible",
            "--cache",
            "--cache-repo",
            &cache_repo,
            "--insecure-registry",
            via,
            "--destination",
            &dest,
        ];
        args.extend_from_slice(extra);
        ocibuild(&args)
    }

    /// [`Fixture::build`], which must succeed; its log.
    fn build_ok(&self, via: &str, tag: &str, extra: &[&str]) -> String {
        let out = self.build(via, tag, extra);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "build of :{tag} failed:\n{stderr}");
        stderr
    }

    /// The digest of the layer the cache entry of `key` holds (asked directly).
    fn entry_layer(&self, key: &str) -> String {
        let entry = skopeo_manifest(&format!("{}/{}:{key}", registry(), self.cache));
        entry["layers"][0]["digest"].as_str().unwrap().to_string()
    }

    /// Asserts that `:tag` is the image of the clean build `:1` (same manifest digest,
    /// read directly from the lab registry) and has the files the steps make.
    fn assert_same_as_clean(&self, tag: &str) {
        let digest = |t: &str| skopeo_inspect(&format!("{}:{t}", self.repo))["Digest"].clone();
        assert_eq!(
            digest(tag),
            digest("1"),
            ":{tag} differs from the clean build"
        );
        let img = unpack(&format!("docker://{}:{tag}", self.repo));
        let read = |p: &str| std::fs::read_to_string(img.rootfs.join(p)).unwrap();
        assert_eq!(read("a"), "a\n");
        assert_eq!(read("f.txt"), "f\n");
        assert_eq!(read("b"), "a\nf\n");
    }
}

/// The `warning:` lines of a log.
fn warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect()
}

/// Asserts that the build of `stderr` looked `steps` up with the results `expected`.
fn assert_results(stderr: &str, expected: [Option<bool>; 3]) {
    for (step, hit) in STEPS.iter().zip(expected) {
        assert_eq!(result_of(stderr, step), hit, "{step}:\n{stderr}");
    }
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_cached_layer_that_cannot_be_downloaded_is_rebuilt_from_its_step() {
    let fixture = Fixture::new("cache-fetch-fault");
    let lab = registry();
    let clean = fixture.build_ok(&lab, "1", &[]);
    let copy_layer = fixture.entry_layer(&key_of(&clean, "COPY f.txt"));
    let run_layer = fixture.entry_layer(&key_of(&clean, "RUN echo a"));

    // The COPY's layer answers 500 every time: the RUN before it is a hit, the COPY and
    // the step after it are rebuilt.
    let proxy = FaultProxy::start(json!([blob_get(
        &copy_layer,
        json!({"action": "status", "status": 500})
    )]));
    let retry = ["--image-download-retry", "1"];
    let out = fixture.build_ok(&proxy.addr, "2", &retry);
    assert_results(&out, [Some(true), Some(false), Some(false)]);
    assert_eq!(
        proxy.count("GET", &copy_layer),
        2,
        "one retry, then the rebuild"
    );
    let warned = warnings(&out);
    assert!(
        warned.iter().any(|w| w.contains("`COPY f.txt /f.txt`")
            && w.contains(&copy_layer)
            && w.contains("500")
            && w.contains("rebuilt from this step")),
        "a warning naming the step:\n{out}"
    );
    fixture.assert_same_as_clean("2");

    // The first RUN's layer comes corrupt every time: the whole stage is rebuilt.
    let proxy = FaultProxy::start(json!([blob_get(&run_layer, json!({"action": "corrupt"}))]));
    let out = fixture.build_ok(&proxy.addr, "3", &retry);
    assert_results(&out, [Some(false), Some(false), Some(false)]);
    assert!(
        warned_about(&out, "`RUN echo a > /a`", "digest"),
        "a warning naming the step:\n{out}"
    );
    fixture.assert_same_as_clean("3");

    // The cache holds good entries: the next build takes every layer from it.
    let proxy = FaultProxy::start(json!([]));
    let out = fixture.build_ok(&proxy.addr, "4", &[]);
    assert_all_hit(&out, &STEPS);
    assert_eq!(proxy.count("GET", &run_layer), 1, "each layer fetched once");
    fixture.assert_same_as_clean("4");
}

/// Whether a warning of `stderr` names `step` and contains `reason`.
fn warned_about(stderr: &str, step: &str, reason: &str) -> bool {
    warnings(stderr)
        .iter()
        .any(|w| w.contains(step) && w.contains(reason))
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn cache_lookups_that_fail_or_stall_are_misses_with_a_warning() {
    let fixture = Fixture::new("cache-lookup-fault");
    fixture.build_ok(&registry(), "1", &[]);
    let manifests = format!("/v2/{}/manifests/", fixture.cache);

    // Every lookup answers 500: each step misses with a warning and runs.
    let failing: Value =
        json!([{"method": "GET", "path": manifests, "action": "status", "status": 500}]);
    let proxy = FaultProxy::start(failing);
    let out = fixture.build_ok(&proxy.addr, "2", &["--image-download-retry", "1"]);
    assert_results(&out, [Some(false), Some(false), Some(false)]);
    for step in [
        "`RUN echo a > /a`",
        "`COPY f.txt /f.txt`",
        "`RUN cat /a /f.txt > /b`",
    ] {
        assert!(warned_about(&out, step, "lookup"), "{step}:\n{out}");
    }
    assert!(warned_about(&out, "`RUN echo a", "500"), "{out}");
    assert_eq!(
        proxy.count("GET", &manifests),
        3 * 2,
        "one retry per lookup"
    );
    fixture.assert_same_as_clean("2");

    // Every lookup stalls: each gives up after the idle timeout.
    let stalling = json!([{"method": "GET", "path": manifests, "action": "stall"}]);
    let proxy = FaultProxy::start(stalling);
    let flags = ["--image-download-retry", "0", "--registry-timeout", "1s"];
    let out = fixture.build_ok(&proxy.addr, "3", &flags);
    assert_results(&out, [Some(false), Some(false), Some(false)]);
    assert!(warned_about(&out, "`RUN echo a", "no data from"), "{out}");
    fixture.assert_same_as_clean("3");

    // The rebuilt steps stored their layers again: the next build hits every step.
    let out = fixture.build_ok(&registry(), "4", &[]);
    assert_all_hit(&out, &STEPS);
    fixture.assert_same_as_clean("4");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_full_cache_dir_is_a_warning_and_the_image_is_the_same() {
    let ctx = context_with(
        &format!(
            "FROM {}/busybox:latest\nCOPY big.bin /big.bin\nRUN wc -c /big.bin > /size\n",
            registry()
        ),
        &[],
    );
    let big = incompressible(b"cache-faults", 2 << 20);
    std::fs::write(ctx.path().join("big.bin"), &big).unwrap();
    let repo = unique_repo("cache-dir-full");
    let build = |tag: &str, extra: &[&str]| {
        let store = tempfile::tempdir().unwrap();
        let dest = format!("{repo}:{tag}");
        let mut args = vec![
            "build",
            "--layer-store",
            store.path().to_str().unwrap(),
            "--reproducible",
            "-c",
            ctx.path().to_str().unwrap(),
            "-d",
            &dest,
        ];
        args.extend_from_slice(extra);
        let out = ocibuild(&args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), ":{tag} failed:\n{stderr}");
        stderr
    };
    build("1", &[]);

    // A cache directory too small for the base layer and the COPY's layer.
    let cache = crate::faults::Tmpfs::mount("1m");
    let cache_dir = cache.path().to_str().unwrap();
    let out = build("2", &["--cache", "--cache-dir", cache_dir]);
    let full: Vec<&str> = warnings(&out)
        .into_iter()
        .filter(|w| w.contains("not stored in the layer cache") && w.contains("No space left"))
        .collect();
    assert!(!full.is_empty(), "a warning that the cache is full:\n{out}");
    let digest = |t: &str| skopeo_inspect(&format!("{repo}:{t}"))["Digest"].clone();
    assert_eq!(digest("2"), digest("1"), "the image of a clean build");
    let img = unpack(&format!("docker://{repo}:2"));
    assert_eq!(std::fs::read(img.rootfs.join("big.bin")).unwrap(), big);
    let size = std::fs::read_to_string(img.rootfs.join("size")).unwrap();
    assert_eq!(size, format!("{} /big.bin\n", big.len()));

    // What the full directory holds is consistent: the next build with it succeeds.
    let out = build("3", &["--cache", "--cache-dir", cache_dir]);
    assert_eq!(digest("3"), digest("1"), "{out}");
}
