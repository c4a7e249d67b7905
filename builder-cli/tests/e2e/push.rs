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

    // A layout holding several images, pushed by name (skopeo copy oci:DIR:NAME); one
    // image under several names (as a build with several tags writes it) needs no name.
    let multi = tmp.path().join("multi");
    let busybox = format!("docker://{reg}/busybox:latest");
    let demo = format!("docker://{a}");
    for (name, source) in [("one", &busybox), ("also-one", &busybox)] {
        skopeo_copy_to_layout(source, &multi, name);
    }
    let out = push_ok(&[multi.to_str().unwrap(), "-d", &c]);
    assert_eq!(
        skopeo_inspect(&c)["Digest"],
        pushed_digest(&out, &c).as_str()
    );
    skopeo_copy_to_layout(&demo, &multi, "two");
    let err = push_fails(&[multi.to_str().unwrap(), "-d", &c]);
    assert!(err.contains("images; pick one with"), "{err}");
    assert!(
        err.contains("holds 3 images") && err.contains("one, also-one, two"),
        "{err}"
    );
    let d = format!("{}:1", unique_repo("push-named"));
    let out = push_ok(&[&format!("{}:two", multi.display()), "-d", &d]);
    assert_eq!(
        skopeo_inspect(&d)["Digest"],
        pushed_digest(&out, &d).as_str()
    );
}

/// `skopeo copy SOURCE oci:LAYOUT:NAME` from the lab's plain-http registry.
fn skopeo_copy_to_layout(source: &str, layout: &Path, name: &str) {
    let target = format!("oci:{}:{name}", layout.display());
    run(
        "skopeo",
        &["copy", "--src-tls-verify=false", source, &target],
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

// ---------------------------------------------------------------------------------------
// Pushes that overlap the build: each layer of the pushed image uploads as soon as its step
// committed it, and the manifest goes last.

/// The index of the first line of `log` containing every one of `parts`.
fn line_with(log: &str, parts: &[&str]) -> usize {
    log.lines()
        .position(|l| parts.iter().all(|p| l.contains(p)))
        .unwrap_or_else(|| panic!("no line with {parts:?} in:\n{log}"))
}

/// The short digest (`sha256:` and 12 hex digits) of the layer made by the step whose
/// log line contains `step`.
fn layer_of_step(log: &str, step: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let start = line_with(log, &[step]);
    lines[start..]
        .iter()
        .find_map(|l| l.trim().strip_prefix("-> layer "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no layer after {step:?} in:\n{log}"))
        .to_string()
}

/// The HTTP status of a HEAD of blob `digest` in the repository of `dest`
/// (`registry/repo[:tag]`).
fn blob_status(dest: &str, digest: &str) -> String {
    let (registry, rest) = dest.split_once('/').unwrap();
    let repo = rest.split(':').next().unwrap();
    run(
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-I",
            &format!("http://{registry}/v2/{repo}/blobs/{digest}"),
        ],
    )
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_layer_uploads_to_every_destination_while_the_next_steps_run_and_the_manifest_goes_last() {
    let reg = registry();
    let ctx = context_with(
        &format!(
            "FROM {reg}/busybox:latest\n\
             RUN dd if=/dev/urandom of=/big bs=1M count=20\n\
             RUN sleep 3\n\
             RUN echo done > /done\n"
        ),
        &[],
    );
    let a = format!("{}:1", unique_repo("early-a"));
    let b = format!("{}:1", unique_repo("early-b"));
    let out = build_ok(&[
        "--context",
        ctx.path().to_str().unwrap(),
        "-d",
        &a,
        "-d",
        &b,
        "--verbosity",
        "debug",
    ]);
    let log = stderr_of(&out);
    let big = layer_of_step(&log, "RUN dd if=/dev/urandom");
    let last_step = line_with(&log, &["RUN echo done > /done"]);
    for dest in [&a, &b] {
        // The 20 MB layer reached the registry while `sleep 3` ran, before the last step.
        let uploaded = line_with(&log, &[&format!("pushed {big} ("), &format!(") to {dest}")]);
        assert!(uploaded < last_step, "uploaded after the last step:\n{log}");
        // Every blob (the config last) is confirmed before the manifest is pushed.
        let manifest = line_with(&log, &[&format!("pushed {dest}@sha256:")]);
        let blobs = log.lines().enumerate().filter(|(_, l)| {
            l.trim().starts_with("pushed sha256:") && l.ends_with(&format!(" to {dest}"))
        });
        // The two layers the steps made and the config (the base layer is mounted).
        assert_eq!(blobs.clone().count(), 3, "{log}");
        assert!(blobs.into_iter().all(|(i, _)| i < manifest), "{log}");
    }
    let digest = skopeo_inspect(&a)["Digest"].clone();
    assert_eq!(skopeo_inspect(&b)["Digest"], digest);
    let layers = skopeo_manifest(&b)["layers"].clone();
    assert!(
        layers
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["digest"].as_str().unwrap().starts_with(&big)),
        "{layers}"
    );
    let unpacked = unpack(&format!("docker://{a}"));
    assert_eq!(
        fs::metadata(unpacked.rootfs.join("big")).unwrap().len(),
        20 << 20
    );
    assert!(unpacked.rootfs.join("done").exists());
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_destination_that_refuses_blobs_fails_the_build_and_no_destination_gets_a_manifest() {
    let reg = registry();
    let auth_reg = std::env::var("OCIBUILD_TEST_AUTH_REGISTRY")
        .expect("OCIBUILD_TEST_AUTH_REGISTRY is not set: run scripts/test.sh");
    let ctx = context_with(
        &format!(
            "FROM {reg}/busybox:latest\nRUN echo {} > /x\nRUN echo two > /two\n",
            unique_string("refused")
        ),
        &[],
    );
    let good = format!("{}:1", unique_repo("refused-good"));
    let refused = format!("{auth_reg}/test-refused-{}:1", std::process::id());
    // No credentials for the auth registry: it answers every request with 401. The check
    // before building would catch that; skipped, the refusal comes during the push.
    let no_credentials = tempfile::tempdir().unwrap();
    let out = ocibuild_with_env(
        &[
            "build",
            "--context",
            ctx.path().to_str().unwrap(),
            "-d",
            &good,
            "-d",
            &refused,
            "--skip-push-permission-check",
        ],
        &[("DOCKER_CONFIG", no_credentials.path().to_str().unwrap())],
    );
    let err = stderr_of(&out);
    assert!(!out.status.success(), "pushed without credentials:\n{err}");
    assert!(
        err.contains(&format!("pushing to {refused}: layer sha256:")),
        "{err}"
    );
    assert!(err.contains("401"), "{err}");
    assert!(
        !err.contains("pushed 127.0.0.1"),
        "a manifest was pushed:\n{err}"
    );
    // Neither the refusing registry nor the one that took the blobs has the tag.
    let inspect = |dest: &str, creds: Option<String>| {
        let mut args = vec![
            "inspect".to_string(),
            "--tls-verify=false".to_string(),
            format!("docker://{dest}"),
        ];
        if let Some(creds) = creds {
            args.insert(1, format!("--creds={creds}"));
        }
        std::process::Command::new("skopeo")
            .args(&args)
            .output()
            .unwrap()
    };
    let good_tag = inspect(&good, None);
    assert!(!good_tag.status.success(), "{good} has a manifest");
    assert!(
        stderr_of(&good_tag).contains("manifest unknown"),
        "{}",
        stderr_of(&good_tag)
    );
    let user = std::env::var("OCIBUILD_TEST_AUTH_USER").unwrap();
    let password = std::env::var("OCIBUILD_TEST_AUTH_PASSWORD").unwrap();
    let refused_tag = inspect(&refused, Some(format!("{user}:{password}")));
    assert!(!refused_tag.status.success(), "{refused} has a manifest");
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn the_layers_of_a_stage_the_image_only_copies_from_are_not_pushed() {
    let reg = registry();
    let dockerfile = format!(
        "FROM {reg}/busybox:latest AS numbers\n\
         RUN seq 1 200000 > /numbers\n\
         RUN wc -l < /numbers > /count\n\
         FROM {reg}/busybox:latest\n\
         COPY --from=numbers /count /copied-count\n"
    );
    let ctx = context_with(&dockerfile, &[]);
    let tmp = tempfile::tempdir().unwrap();
    // The layers of the `numbers` stage on their own (reproducible: the same digests as in
    // the full build below).
    let layout = tmp.path().join("numbers");
    build_ok(&[
        "--context",
        ctx.path().to_str().unwrap(),
        "--target",
        "numbers",
        "--reproducible",
        "--no-push",
        "--oci-layout-path",
        layout.to_str().unwrap(),
    ]);
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(
            layout
                .join("blobs/sha256")
                .join(manifest_digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let base_layers = skopeo_manifest(&format!("{reg}/busybox:latest"))["layers"].clone();
    let base: Vec<&str> = base_layers
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    let intermediate: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .filter(|d| !base.contains(&d.as_str()))
        .collect();
    assert_eq!(intermediate.len(), 2, "{manifest}");

    let dest = format!("{}:1", unique_repo("intermediate"));
    let out = build_ok(&[
        "--context",
        ctx.path().to_str().unwrap(),
        "--reproducible",
        "-d",
        &dest,
        "--verbosity",
        "debug",
    ]);
    let log = stderr_of(&out);
    let pushed = skopeo_manifest(&dest);
    let mut wanted: Vec<&str> = pushed["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    wanted.push(pushed["config"]["digest"].as_str().unwrap());
    for digest in &intermediate {
        // The full build made the same layer, and did not push it.
        assert!(
            log.contains(&format!("-> layer {}", &digest[..19])),
            "{log}"
        );
        assert!(!wanted.contains(&digest.as_str()), "{pushed}");
        assert_eq!(blob_status(&dest, digest), "404", "{digest} was pushed");
    }
    for digest in &wanted {
        assert_eq!(blob_status(&dest, digest), "200", "{digest} is missing");
    }
    // Every upload the log reports is a blob of the pushed image.
    for line in log.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("pushed sha256:") {
            let short = format!("sha256:{}", &rest[..12]);
            assert!(wanted.iter().any(|d| d.starts_with(&short)), "{line}");
        }
    }
}
