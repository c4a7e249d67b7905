//! `ocibuild executor push` (tarballs and OCI layouts pushed to the lab registry, read back
//! with skopeo and umoci) and `--cache-repo oci:DIR` (the layer cache in an OCI layout).

use crate::common::*;
use std::fs;
use std::path::Path;

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `ocibuild executor push ARGS` expecting success; returns stdout.
fn push_ok(args: &[&str]) -> String {
    let mut all = vec!["executor", "push"];
    all.extend_from_slice(args);
    let out = ocibuild(&all);
    assert!(
        out.status.success(),
        "ocibuild {all:?} failed:\n{}",
        stderr_of(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `ocibuild executor push ARGS` expecting failure; returns stderr.
fn push_fails(args: &[&str]) -> String {
    let mut all = vec!["executor", "push"];
    all.extend_from_slice(args);
    let out = ocibuild(&all);
    let stderr = stderr_of(&out);
    assert!(!out.status.success(), "ocibuild {all:?} succeeded");
    stderr
}

/// The digest in `pushed REF@DIGEST` for `dest`.
fn pushed_digest(stdout: &str, dest: &str) -> String {
    let prefix = format!("pushed {dest}@");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in {stdout:?}"))
        .to_string()
}

fn assert_demo_image(dest: &str, digest: &str) {
    let inspect = skopeo_inspect(dest);
    assert_eq!(inspect["Digest"], digest, "{inspect}");
    assert_eq!(inspect["Labels"]["org.opencontainers.image.title"], "demo");
    let unpacked = unpack(&format!("docker://{dest}"));
    assert_eq!(
        fs::read_to_string(unpacked.rootfs.join("var/lib/app/greeting")).unwrap(),
        "hello\n"
    );
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn build_outputs_and_skopeo_archives_push_to_the_registry() {
    let reg = registry();
    let tmp = tempfile::tempdir().unwrap();
    let tar = tmp.path().join("out.tar");
    let layout = tmp.path().join("layout");
    build_ok(&[
        "--context",
        testdata("demo").to_str().unwrap(),
        "--build-arg",
        &format!("BASE_REGISTRY={reg}"),
        "--no-push",
        "--tar-path",
        tar.to_str().unwrap(),
        "--oci-layout-path",
        layout.to_str().unwrap(),
    ]);

    // The docker-archive tarball, to two destinations, with a digest file.
    let a = format!("{}:1", unique_repo("push-a"));
    let a2 = format!("{}:2", unique_repo("push-a"));
    let digest_file = tmp.path().join("sub/digest");
    let out = push_ok(&[
        tar.to_str().unwrap(),
        "-d",
        &a,
        "--destination",
        &a2,
        "--digest-file",
        digest_file.to_str().unwrap(),
        "--insecure",
    ]);
    let digest = pushed_digest(&out, &a);
    assert_eq!(pushed_digest(&out, &a2), digest);
    assert_eq!(fs::read_to_string(&digest_file).unwrap(), digest);
    assert_demo_image(&a, &digest);
    assert_eq!(
        skopeo_manifest(&a)["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );

    // The OCI layout: the pushed manifest is byte for byte the one in the layout.
    let b = format!("{}:1", unique_repo("push-b"));
    let out = push_ok(&[layout.to_str().unwrap(), "-d", &b]);
    let digest = pushed_digest(&out, &b);
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());
    assert_demo_image(&b, &digest);
    // Pushing again uploads nothing new and gives the same digest.
    assert_eq!(
        pushed_digest(&push_ok(&[layout.to_str().unwrap(), "-d", &b]), &b),
        digest
    );

    // A tarball written by an independent tool (skopeo, gzip layers, Docker config).
    let x = tmp.path().join("x.tar");
    run(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{reg}/busybox:latest"),
            &format!("docker-archive:{}", x.display()),
        ],
    );
    let c = format!("{}:1", unique_repo("push-skopeo"));
    let out = push_ok(&[x.to_str().unwrap(), "-d", &c]);
    let digest = pushed_digest(&out, &c);
    assert_eq!(skopeo_inspect(&c)["Digest"], digest.as_str());
    let unpacked = unpack(&format!("docker://{c}"));
    assert!(unpacked.rootfs.join("bin/busybox").exists());

    // A layout holding several images, pushed by name (skopeo copy oci:DIR:NAME).
    let multi = tmp.path().join("multi");
    for name in ["one", "two"] {
        run(
            "skopeo",
            &[
                "copy",
                "--src-tls-verify=false",
                &format!("docker://{reg}/busybox:latest"),
                &format!("oci:{}:{name}", multi.display()),
            ],
        );
    }
    let err = push_fails(&[multi.to_str().unwrap(), "-d", &c]);
    assert!(err.contains("holds 2 images; pick one with"), "{err}");
    assert!(err.contains("one, two"), "{err}");
    let d = format!("{}:1", unique_repo("push-named"));
    let out = push_ok(&[&format!("{}:two", multi.display()), "-d", &d]);
    assert_eq!(
        skopeo_inspect(&d)["Digest"],
        pushed_digest(&out, &d).as_str()
    );
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn bad_paths_and_images_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = format!("{}:1", unique_repo("push-bad"));
    let missing = tmp.path().join("missing.tar");
    let err = push_fails(&[missing.to_str().unwrap(), "-d", &dest]);
    assert!(
        err.contains("missing.tar: no such file or directory"),
        "{err}"
    );

    let err = push_fails(&[tmp.path().to_str().unwrap(), "-d", &dest]);
    assert!(err.contains("is not a usable OCI image layout"), "{err}");
    assert!(err.contains("no index.json"), "{err}");

    let junk = tmp.path().join("junk.tar");
    fs::write(&junk, "this is not a tarball").unwrap();
    let err = push_fails(&[junk.to_str().unwrap(), "-d", &dest]);
    assert!(
        err.contains("is not a usable docker-archive tarball"),
        "{err}"
    );

    let layout = tmp.path().join("layout");
    fs::create_dir_all(&layout).unwrap();
    fs::write(
        layout.join("index.json"),
        r#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}"#,
    )
    .unwrap();
    let err = push_fails(&[&format!("{}:v2", layout.display()), "-d", &dest]);
    assert!(
        err.contains("no image named \"v2\" (it holds: v1)"),
        "{err}"
    );
    let err = push_fails(&[layout.to_str().unwrap(), "-d", &dest]);
    assert!(err.contains("is missing"), "{err}");

    let err = push_fails(&[layout.to_str().unwrap(), "-d", "Not A Ref"]);
    assert!(err.contains("--destination \"Not A Ref\""), "{err}");
    let out = ocibuild(&["executor", "push", layout.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("--destination"),
        "{}",
        stderr_of(&out)
    );
}

/// `ocibuild build --cache --cache-repo oci:DIR` of `ctx`; returns stderr.
fn layout_cached_build(ctx: &Path, layout: &Path) -> String {
    let out = build_ok(&[
        "--context",
        ctx.to_str().unwrap(),
        "--no-push",
        "--cache",
        "--cache-repo",
        &format!("oci:{}", layout.display()),
    ]);
    stderr_of(&out)
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn oci_layout_cache_repo_serves_hits_and_names_entries_by_key() {
    let reg = registry();
    let ctx = context_with(
        &format!(
            "FROM {reg}/busybox:latest\nCOPY a.txt /a.txt\nRUN echo $((40+2)); echo ran > /ran.txt\nWORKDIR /w\n"
        ),
        &[("a.txt", "layout cache\n")],
    );
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("cache-layout");
    let first = layout_cached_build(ctx.path(), &layout);
    let misses: Vec<&str> = first
        .lines()
        .filter_map(|l| l.trim().strip_prefix("CACHE MISS "))
        .collect();
    assert_eq!(misses.len(), 3, "{first}");
    assert!(!first.contains("CACHE HIT"), "{first}");
    assert!(first.contains("cache: 0 hits, 3 misses"), "{first}");

    let second = layout_cached_build(ctx.path(), &layout);
    let hits: Vec<&str> = second
        .lines()
        .filter_map(|l| l.trim().strip_prefix("CACHE HIT "))
        .collect();
    assert_eq!(hits, misses, "{second}");
    assert!(!second.contains("CACHE MISS"), "{second}");
    assert!(
        !second.lines().any(|l| l.trim() == "42"),
        "the RUN step ran again:\n{second}"
    );
    assert!(first.lines().any(|l| l.trim() == "42"), "{first}");

    // Each entry is a one-layer image named by its key, readable by skopeo.
    let key = misses[1];
    let raw = run(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci:{}:{key}", layout.display()),
        ],
    );
    let manifest: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);
    let config = run(
        "skopeo",
        &[
            "inspect",
            "--config",
            "--raw",
            &format!("oci:{}:{key}", layout.display()),
        ],
    );
    assert!(config.contains("echo ran > /ran.txt"), "{config}");
    let leftovers = fs::read_dir(layout.join(".ocibuild-tmp")).unwrap().count();
    assert_eq!(leftovers, 0, "temporary files left in the layout");

    // A corrupted layer blob is a miss with a warning, and the step runs again.
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let blob = layout
        .join("blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    let mut bytes = fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&blob, bytes).unwrap();
    let third = layout_cached_build(ctx.path(), &layout);
    assert!(third.contains(&format!("CACHE MISS {key}")), "{third}");
    assert!(third.contains("is corrupt"), "{third}");
    // ...and the rebuild stored it intact again.
    let fourth = layout_cached_build(ctx.path(), &layout);
    assert!(!fourth.contains("CACHE MISS"), "{fourth}");

    // A directory that is something else is refused with a clear message.
    let bad = tmp.path().join("bad");
    fs::create_dir_all(&bad).unwrap();
    fs::write(bad.join("index.json"), "[]").unwrap();
    let out = ocibuild(&[
        "build",
        "--context",
        ctx.path().to_str().unwrap(),
        "--no-push",
        "--cache",
        "--cache-repo",
        &format!("oci:{}", bad.display()),
    ]);
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(err.contains("is not a usable OCI image layout"), "{err}");
}
