//! kaniko's warmer: the binary invoked as `warmer` (and `ocibuild warm`) fills a cache
//! directory with base images named by `--image` or found in a `--dockerfile`'s FROM lines,
//! downloads again with `--force`, takes `--customPlatform` and the executor's registry
//! flags, and the executor then builds from the warmed base without downloading it.
//! Downloads are counted from the `pulled DIGEST (SIZE) from REPO` lines of `-v debug`
//! (the warmer's and the build's `BlobPulled` events), each build with a fresh layer store.

use crate::common::*;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A directory holding `warmer`, a link to the ocibuild under test, so that it runs under
/// the name of kaniko's binary.
fn warmer_link() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("warmer");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ocibuild"), &link).unwrap();
    (dir, link)
}

/// Runs `warmer ARGS -v debug` (the link of [`warmer_link`]) with `cache` as `--cache-dir`.
fn warmer(link: &Path, cache: &Path, args: &[&str]) -> Output {
    Command::new(link)
        .arg(format!("--cache-dir={}", cache.display()))
        .args(["-v", "debug", "--progress", "plain"])
        .args(args)
        .env_remove("DOCKER_CONFIG")
        .output()
        .expect("running warmer")
}

fn log_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output, what: &str) -> String {
    let log = log_of(out);
    assert!(out.status.success(), "{what} failed:\n{log}");
    log
}

/// The `pulled sha256:0123456789ab (SIZE) from REPO` lines of a debug log.
fn pulled_lines(log: &str) -> Vec<&str> {
    log.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("pulled sha256:"))
        .collect()
}

/// Whether the log shows a download of the layer `digest`.
fn pulled(log: &str, digest: &str) -> bool {
    let short = &digest[.."sha256:".len() + 12];
    pulled_lines(log).iter().any(|l| l.contains(short))
}

/// The layer digests of `reference` in the lab registry (for `arch`, if given).
fn layers(reference: &str, arch: Option<&str>) -> Vec<String> {
    let mut args = vec!["inspect", "--tls-verify=false"];
    if let Some(arch) = arch {
        args.extend(["--override-arch", arch]);
    }
    let target = format!("docker://{reference}");
    args.push(&target);
    let value: Value = serde_json::from_str(&run("skopeo", &args)).unwrap();
    value["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

/// Whether the cache directory holds blob `digest`.
fn cached(cache: &Path, digest: &str) -> bool {
    let hex = digest.strip_prefix("sha256:").unwrap();
    cache.join("blobs/sha256").join(hex).is_file()
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn warmer_finds_the_dockerfile_bases_with_build_args_and_force_downloads_again() {
    let reg = registry();
    let (_dir, link) = warmer_link();
    let cache = tempfile::tempdir().unwrap();
    let dockerfile = testdata("demo/Dockerfile");
    let base = format!("{reg}/busybox:latest");
    let base_layers = layers(&base, None);
    let base_arg = format!("BASE_REGISTRY={reg}");
    let args = [
        "--dockerfile",
        dockerfile.to_str().unwrap(),
        "--build-arg",
        &base_arg,
    ];

    // The demo's `FROM ${BASE_REGISTRY}/busybox:latest`, with the build arg's registry.
    let log = assert_ok(&warmer(&link, cache.path(), &args), "warmer --dockerfile");
    assert!(log.contains(&format!("base {base}@sha256:")), "{log}");
    for layer in &base_layers {
        assert!(pulled(&log, layer), "{layer} downloaded:\n{log}");
        assert!(cached(cache.path(), layer), "{layer} in the cache dir");
    }
    assert!(log.contains("warmed 1 image in"), "{log}");

    // Warm again: everything is there, nothing is downloaded.
    let log = assert_ok(&warmer(&link, cache.path(), &args), "second warmer");
    assert_eq!(pulled_lines(&log), Vec::<&str>::new(), "{log}");
    assert!(log.contains("(0 layers downloaded)"), "{log}");

    // --force downloads every layer again.
    let mut forced = args.to_vec();
    forced.push("--force");
    let log = assert_ok(&warmer(&link, cache.path(), &forced), "warmer --force");
    for layer in &base_layers {
        assert!(pulled(&log, layer), "{layer} downloaded again:\n{log}");
    }

    // Another build arg names another base: the one it expands to is the one asked for.
    let other_arg = format!("BASE_REGISTRY={reg}/warm-elsewhere");
    let out = warmer(
        &link,
        cache.path(),
        &[
            "--dockerfile",
            dockerfile.to_str().unwrap(),
            "--build-arg",
            &other_arg,
        ],
    );
    let log = log_of(&out);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains(&format!("{reg}/warm-elsewhere/busybox:latest")),
        "{log}"
    );
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn the_executor_builds_from_a_warmed_base_without_downloading_it() {
    let reg = registry();
    let (_dir, link) = warmer_link();
    let base = format!("{reg}/busybox:latest");
    let base_layers = layers(&base, None);
    let build = |cache: &Path, dest: &str| {
        let store = tempfile::tempdir().unwrap();
        let out = ocibuild(&[
            "executor",
            "--isolation",
            "namespaces",
            "--context",
            testdata("demo").to_str().unwrap(),
            "--build-arg",
            &format!("BASE_REGISTRY={reg}"),
            "--cache-dir",
            cache.to_str().unwrap(),
            "--layer-store",
            store.path().to_str().unwrap(),
            "--destination",
            dest,
            "-v",
            "debug",
            "--progress",
            "plain",
        ]);
        assert_ok(&out, "executor build")
    };

    let warmed = tempfile::tempdir().unwrap();
    let log = assert_ok(
        &warmer(&link, warmed.path(), &["-i", &base]),
        "warmer --image",
    );
    assert!(pulled(&log, &base_layers[0]), "{log}");
    let repo = unique_repo("warm-exec");
    let log = build(warmed.path(), &format!("{repo}:warmed"));
    for layer in &base_layers {
        assert!(
            !pulled(&log, layer),
            "{layer} came from the cache dir:\n{log}"
        );
    }

    // The same build with an empty cache directory downloads the base.
    let empty = tempfile::tempdir().unwrap();
    let log = build(empty.path(), &format!("{repo}:cold"));
    for layer in &base_layers {
        assert!(pulled(&log, layer), "{layer} downloaded:\n{log}");
    }
}

/// The digest of the `arch` manifest of the image index `reference` in the lab registry.
fn platform_manifest(reference: &str, arch: &str) -> String {
    let raw = run(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ],
    );
    let index: Value = serde_json::from_str(&raw).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == arch)
        .unwrap_or_else(|| panic!("no {arch} in {raw}"));
    entry["digest"].as_str().unwrap().to_string()
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn warm_takes_the_platform_and_repeated_images() {
    let reg = registry();
    let cache = tempfile::tempdir().unwrap();
    let multi = format!("{reg}/busybox-multi:latest");
    let layered = format!("{reg}/layered:latest");
    let out = ocibuild(&[
        "warm",
        "--cache-dir",
        cache.path().to_str().unwrap(),
        "--customPlatform",
        "linux/arm64",
        "-i",
        &multi,
        "--image",
        &layered,
    ]);
    let log = assert_ok(&out, "warm --customPlatform");
    assert!(log.contains("warmed 2 images"), "{log}");
    let arm = platform_manifest(&multi, "arm64");
    assert!(
        log.contains(&format!("base {multi}@{arm}")),
        "the arm64 image:\n{log}"
    );
    for layer in layers(&multi, Some("arm64"))
        .iter()
        .chain(&layers(&layered, None))
    {
        assert!(cached(cache.path(), layer), "layer {layer}");
    }
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn warm_takes_the_registry_tls_and_mirror_flags() {
    let reg = registry();
    let tls = std::env::var("OCIBUILD_TEST_TLS_REGISTRY").expect("the lab's TLS registry");
    let ca = std::env::var("OCIBUILD_TEST_TLS_CA").expect("the lab's CA");
    let cert_dir = tempfile::tempdir().unwrap();
    fs::copy(&ca, cert_dir.path().join("ca.crt")).unwrap();
    let private = format!("{tls}/test-warm-tls-{}:1", std::process::id());
    run(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("--dest-cert-dir={}", cert_dir.path().display()),
            &format!("docker://{reg}/busybox:latest"),
            &format!("docker://{private}"),
        ],
    );
    let cache = tempfile::tempdir().unwrap();
    let warm = |extra: &[&str]| {
        let mut args = vec!["warm", "--cache-dir", cache.path().to_str().unwrap()];
        args.extend_from_slice(extra);
        ocibuild(&args)
    };
    let out = warm(&["-i", &private]);
    assert!(
        !out.status.success(),
        "a private CA is not trusted by default"
    );
    assert!(log_of(&out).contains("TLS"), "{}", log_of(&out));
    let trusted = format!("{tls}={ca}");
    let out = warm(&["-i", &private, "--registry-certificate", &trusted]);
    assert_ok(&out, "warm --registry-certificate");
    let out = warm(&["-i", &private, "--skip-tls-verify", "--force"]);
    assert_ok(&out, "warm --skip-tls-verify");

    // docker.io images from a mirror (the lab has no internet).
    run(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{reg}/busybox:latest"),
            &format!("docker://{reg}/library/busybox:latest"),
        ],
    );
    let out = warm(&[
        "-i",
        "busybox:latest",
        "--registry-mirror",
        &reg,
        "--force",
        "-v",
        "debug",
        "--progress",
        "plain",
    ]);
    let log = assert_ok(&out, "warm --registry-mirror");
    assert!(
        log.contains(&format!(
            "GET http://{reg}/v2/library/busybox/blobs/sha256:"
        )),
        "the layers came from the mirror:\n{log}"
    );
    assert!(!pulled_lines(&log).is_empty(), "{log}");
}

#[test]
fn warm_without_images_says_what_to_pass_and_takes_kanikos_cache_ttl() {
    let cache = tempfile::tempdir().unwrap();
    let out = ocibuild(&[
        "warm",
        "--cache-dir",
        cache.path().to_str().unwrap(),
        "--cache-ttl=24h",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", log_of(&out));
    let log = log_of(&out);
    assert!(
        log.contains("nothing to warm") && log.contains("--image") && log.contains("--dockerfile"),
        "{log}"
    );
    assert!(!log.contains("changes nothing"), "--cache-ttl works: {log}");
    let out = ocibuild(&["warm", "-i", "busybox", "--cache-ttl=soon"]);
    assert!(!out.status.success());
    assert!(log_of(&out).contains("--cache-ttl"), "{}", log_of(&out));
}

/// The `--help` text of `ocibuild ARGS --help`.
fn help_of(args: &[&str]) -> String {
    let mut args = args.to_vec();
    args.push("--help");
    let out = ocibuild(&args);
    assert!(out.status.success(), "{}", log_of(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_warmers_help_shows_no_push_flags_and_the_executors_does() {
    let (_dir, link) = warmer_link();
    let out = Command::new(&link).arg("--help").output().unwrap();
    let warmer = String::from_utf8_lossy(&out.stdout).into_owned();
    for help in [help_of(&["warm"]), warmer] {
        assert!(help.contains("--image-download-retry"), "{help}");
        assert!(!help.contains("--push-retry"), "{help}");
        assert!(
            !help.contains("Push to"),
            "--insecure is about pulls: {help}"
        );
        assert!(help.contains("--cache-ttl"), "{help}");
    }
    let executor = help_of(&["executor"]);
    assert!(executor.contains("--push-retry"), "{executor}");
    assert!(executor.contains("Push to"), "{executor}");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn cache_ttl_downloads_again_the_images_cached_longer_ago() {
    let reg = registry();
    let (_dir, link) = warmer_link();
    let cache = tempfile::tempdir().unwrap();
    let base = format!("{reg}/busybox:latest");
    let base_layers = layers(&base, None);
    let log = assert_ok(&warmer(&link, cache.path(), &["-i", &base]), "warmer");
    assert!(!pulled_lines(&log).is_empty(), "{log}");

    // Cached just now: younger than the TTL, nothing is downloaded.
    let args = ["-i", base.as_str(), "--cache-ttl", "1h"];
    let log = assert_ok(&warmer(&link, cache.path(), &args), "warmer --cache-ttl 1h");
    assert_eq!(pulled_lines(&log), Vec::<&str>::new(), "{log}");
    assert!(log.contains("(0 layers downloaded)"), "{log}");

    // Cached two hours ago: older than the TTL, every layer is downloaded again.
    let images: Vec<PathBuf> = fs::read_dir(cache.path().join("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(images.len(), 1, "one image entry: {images:?}");
    run("touch", &["-d", "2 hours ago", images[0].to_str().unwrap()]);
    let log = assert_ok(&warmer(&link, cache.path(), &args), "warmer, entry 2h old");
    for layer in &base_layers {
        assert!(pulled(&log, layer), "{layer} downloaded again:\n{log}");
    }
    // ... which makes the entry young again.
    let log = assert_ok(
        &warmer(&link, cache.path(), &args),
        "warmer after the refresh",
    );
    assert_eq!(pulled_lines(&log), Vec::<&str>::new(), "{log}");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_from_platform_in_the_dockerfile_warms_that_platforms_image() {
    let reg = registry();
    let (_dir, link) = warmer_link();
    let cache = tempfile::tempdir().unwrap();
    let multi = format!("{reg}/busybox-multi:latest");
    let context = tempfile::tempdir().unwrap();
    let dockerfile = context.path().join("Dockerfile");
    fs::write(
        &dockerfile,
        "ARG REG\nFROM --platform=linux/arm64 $REG/busybox-multi:latest\n",
    )
    .unwrap();
    let reg_arg = format!("REG={reg}");
    let args = [
        "--dockerfile",
        dockerfile.to_str().unwrap(),
        "--build-arg",
        &reg_arg,
    ];
    let log = assert_ok(&warmer(&link, cache.path(), &args), "warmer --dockerfile");
    let arm = platform_manifest(&multi, "arm64");
    assert!(
        log.contains(&format!("base {multi}@{arm}")),
        "the arm64 image:\n{log}"
    );
    let hex = arm.strip_prefix("sha256:").unwrap();
    assert!(
        cache.path().join(format!("images/{hex}.json")).is_file(),
        "the arm64 manifest is in the cache dir"
    );
    for layer in layers(&multi, Some("arm64")) {
        assert!(cached(cache.path(), &layer), "layer {layer}");
    }
    let amd = platform_manifest(&multi, "amd64");
    assert!(!log.contains(&amd), "not the host's image:\n{log}");
}
