//! kaniko-compatible outputs of `ocibuild build`: `--oci-layout-path` (read back with skopeo
//! and umoci), the digest files, `--annotation`, `--image-format` and `--dryrun`.

use crate::common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A context whose image has one COPY layer (`/hello.txt` holding `text`) on `base`.
fn context(base: &str, text: &str) -> tempfile::TempDir {
    context_with(
        &format!("FROM {}/{base}\nCOPY hello.txt /hello.txt\n", registry()),
        &[("hello.txt", text)],
    )
}

fn build_args<'a>(ctx: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--context", ctx.to_str().unwrap(), "--insecure"];
    args.extend_from_slice(extra);
    args
}

/// Runs `ocibuild build` expecting a failure; returns its stderr.
fn build_fails(args: &[&str]) -> String {
    let mut all = vec!["build"];
    all.extend_from_slice(args);
    let out = ocibuild(&all);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "ocibuild {all:?} succeeded:\n{stderr}"
    );
    stderr
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap();
    layout.join("blobs").join(alg).join(hex)
}

/// Checks that every blob the manifest `digest` needs is in the layout with its digest.
fn assert_blobs_complete(layout: &Path, digest: &str) -> Value {
    let check = |d: &str| {
        let bytes = fs::read(blob(layout, d)).unwrap_or_else(|e| panic!("blob {d}: {e}"));
        assert_eq!(
            format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
            d,
            "blob content matches its name"
        );
    };
    check(digest);
    let manifest = read_json(&blob(layout, digest));
    check(manifest["config"]["digest"].as_str().unwrap());
    for layer in manifest["layers"].as_array().unwrap() {
        check(layer["digest"].as_str().unwrap());
    }
    manifest
}

fn jq(filter: &str, file: &Path) -> String {
    run("jq", &["-r", filter, file.to_str().unwrap()])
        .trim()
        .to_string()
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn oci_layout_digest_files_and_annotations_match_the_pushed_image() {
    let ctx = context("busybox:latest", "layout\n");
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("layout");
    let digest_file = out.path().join("digest");
    let names = out.path().join("sub/names");
    let names_tags = out.path().join("names-tags");
    let repo = unique_repo("layout");
    let (dest1, dest2) = (format!("{repo}:v1"), format!("{repo}:v2"));
    build_ok(&build_args(
        ctx.path(),
        &[
            "--destination",
            &dest1,
            "--destination",
            &dest2,
            "--oci-layout-path",
            layout.to_str().unwrap(),
            "--digest-file",
            digest_file.to_str().unwrap(),
            "--image-name-with-digest-file",
            names.to_str().unwrap(),
            "--image-name-tag-with-digest-file",
            names_tags.to_str().unwrap(),
            "--annotation",
            "org.opencontainers.image.source=https://example.com/app",
            "--annotation",
            "b.key=x=y",
        ],
    ));

    // Digest files, in kaniko's formats.
    let digest = fs::read_to_string(&digest_file).unwrap();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    assert_eq!(skopeo_inspect(&dest1)["Digest"], digest.as_str());
    assert_eq!(
        fs::read_to_string(&names).unwrap(),
        format!("{repo}@{digest}\n{repo}@{digest}\n")
    );
    assert_eq!(
        fs::read_to_string(&names_tags).unwrap(),
        format!("{dest1}@{digest}\n{dest2}@{digest}\n")
    );

    // The pushed manifest carries the annotations, keys sorted.
    let pushed = skopeo_manifest(&dest1);
    assert_eq!(
        serde_json::to_string(&pushed["annotations"]).unwrap(),
        r#"{"b.key":"x=y","org.opencontainers.image.source":"https://example.com/app"}"#
    );

    // The layout: marker, an index entry named after each destination's tag, blobs.
    assert_eq!(
        fs::read_to_string(layout.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let index = layout.join("index.json");
    assert_eq!(jq(".schemaVersion", &index), "2");
    assert_eq!(jq(".manifests | length", &index), "2");
    assert_eq!(jq(".manifests[0].digest", &index), digest);
    assert_eq!(jq(".manifests[1].digest", &index), digest);
    assert_eq!(
        jq(
            &format!(".manifests | map(.annotations[\"{REF_NAME}\"]) | join(\",\")"),
            &index
        ),
        "v1,v2"
    );
    assert_eq!(
        jq(".manifests[0].mediaType", &index),
        "application/vnd.oci.image.manifest.v1+json"
    );
    let manifest = assert_blobs_complete(&layout, &digest);
    assert_eq!(manifest, pushed, "the layout holds the pushed manifest");
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 2);

    // skopeo reads it by each ref name, and copies it to a registry with the same digest.
    let raw = run(
        "skopeo",
        &["inspect", "--raw", &format!("oci:{}:v1", layout.display())],
    );
    assert_eq!(serde_json::from_str::<Value>(&raw).unwrap(), pushed);
    let inspected: Value = serde_json::from_str(&run(
        "skopeo",
        &["inspect", &format!("oci:{}:v2", layout.display())],
    ))
    .unwrap();
    assert_eq!(inspected["Digest"], digest.as_str());
    let copy = format!("{}:copied", unique_repo("layout-copy"));
    run(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", layout.display()),
            &format!("docker://{copy}"),
        ],
    );
    assert_eq!(skopeo_inspect(&copy)["Digest"], digest.as_str());

    // umoci unpacks it: the base image's files and the COPY.
    let rootfs = umoci_unpack(&layout, "v1", &out.path().join("bundle"));
    assert_eq!(
        fs::read_to_string(rootfs.join("hello.txt")).unwrap(),
        "layout\n"
    );
    assert!(rootfs.join("bin/busybox").exists());
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn an_existing_layout_gets_images_added_and_a_tag_replaced() {
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("layout");
    let layout_arg = layout.to_str().unwrap().to_string();
    let repo = unique_repo("layout-add");
    let mut digests = Vec::new();
    for (tag, text) in [("a", "one\n"), ("b", "two\n"), ("a", "three\n")] {
        let ctx = context("busybox:latest", text);
        let digest_file = out.path().join(format!("digest-{text}"));
        let dest = format!("{repo}:{tag}");
        build_ok(&build_args(
            ctx.path(),
            &[
                "--no-push",
                "--destination",
                &dest,
                "--oci-layout-path",
                &layout_arg,
                "--digest-file",
                digest_file.to_str().unwrap(),
            ],
        ));
        digests.push(fs::read_to_string(&digest_file).unwrap());
    }
    let index = read_json(&layout.join("index.json"));
    let entries: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["annotations"][REF_NAME].as_str().unwrap().to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        vec![
            ("b".to_string(), digests[1].clone()),
            ("a".to_string(), digests[2].clone())
        ],
        "tag a was replaced, b kept"
    );
    for (tag, digest, text) in [("a", &digests[2], "three\n"), ("b", &digests[1], "two\n")] {
        assert_blobs_complete(&layout, digest);
        let bundle = out.path().join(format!("bundle-{tag}"));
        let rootfs = umoci_unpack(&layout, tag, &bundle);
        assert_eq!(fs::read_to_string(rootfs.join("hello.txt")).unwrap(), text);
    }

    // Without a destination the entry has no ref name; skopeo reads the layout's only image.
    let lone = out.path().join("lone");
    let ctx = context("busybox:latest", "lone\n");
    build_ok(&build_args(
        ctx.path(),
        &["--no-push", "--oci-layout-path", lone.to_str().unwrap()],
    ));
    let index = read_json(&lone.join("index.json"));
    assert!(
        index["manifests"][0].get("annotations").is_none(),
        "{index}"
    );
    run(
        "skopeo",
        &["inspect", "--raw", &format!("oci:{}", lone.display())],
    );
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn image_format_forces_media_types_and_refuses_zstd_for_docker() {
    // Docker base, forced to OCI: manifest, config and layers all OCI.
    let ctx = context("busybox-docker:latest", "to oci\n");
    let dest = format!("{}:1", unique_repo("fmt-oci"));
    build_ok(&build_args(
        ctx.path(),
        &["--destination", &dest, "--image-format", "oci"],
    ));
    let manifest = skopeo_manifest(&dest);
    assert_media_types(
        &manifest,
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.oci.image.layer.v1.tar+gzip",
    );
    let unpacked = unpack(&format!("docker://{dest}"));
    assert_eq!(
        fs::read_to_string(unpacked.rootfs.join("hello.txt")).unwrap(),
        "to oci\n"
    );

    // OCI base, forced to Docker, with an OCI layout and a tarball that skopeo reads.
    let ctx = context("busybox:latest", "to docker\n");
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("layout");
    let tar = out.path().join("image.tar");
    let dest = format!("{}:1", unique_repo("fmt-docker"));
    build_ok(&build_args(
        ctx.path(),
        &[
            "--destination",
            &dest,
            "--image-format",
            "docker",
            "--oci-layout-path",
            layout.to_str().unwrap(),
            "--tar-path",
            tar.to_str().unwrap(),
        ],
    ));
    let manifest = skopeo_manifest(&dest);
    assert_media_types(
        &manifest,
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.container.image.v1+json",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    );
    let index = layout.join("index.json");
    assert_eq!(
        jq(".manifests[0].mediaType", &index),
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    // The layout holds the very image pushed (same digest), Docker media types included;
    // skopeo reads it as the layout's only image (skopeo's by-name lookup and umoci accept
    // OCI manifests only: --image-format oci is the way to get those from a Docker base).
    let digest = skopeo_inspect(&dest)["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(jq(".manifests[0].digest", &index), digest);
    assert_blobs_complete(&layout, &digest);
    let raw = run(
        "skopeo",
        &["inspect", "--raw", &format!("oci:{}", layout.display())],
    );
    assert_eq!(serde_json::from_str::<Value>(&raw).unwrap(), manifest);
    let unpacked = unpack(&format!("docker-archive:{}", tar.display()));
    assert_eq!(
        fs::read_to_string(unpacked.rootfs.join("hello.txt")).unwrap(),
        "to docker\n"
    );

    // zstd layers have no Docker media type: refused before building, and when a Docker
    // base is followed, refused instead of writing an invalid manifest.
    for extra in [&["--image-format", "docker"][..], &[][..]] {
        let ctx = context("busybox-docker:latest", "zstd\n");
        let mut args = build_args(ctx.path(), &["--no-push", "--compression", "zstd"]);
        args.extend_from_slice(extra);
        let stderr = build_fails(&args);
        assert!(
            stderr.contains("zstd layers need --image-format oci"),
            "{stderr}"
        );
    }
    let ctx = context("busybox-docker:latest", "zstd\n");
    let dest = format!("{}:1", unique_repo("fmt-zstd"));
    build_ok(&build_args(
        ctx.path(),
        &[
            "--destination",
            &dest,
            "--compression",
            "zstd",
            "--image-format",
            "oci",
        ],
    ));
    let manifest = skopeo_manifest(&dest);
    assert_eq!(
        manifest["layers"].as_array().unwrap().last().unwrap()["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn image_name_files_need_a_destination_and_bad_annotations_are_refused() {
    let ctx = context("busybox:latest", "x\n");
    for flag in [
        "--image-name-with-digest-file",
        "--image-name-tag-with-digest-file",
    ] {
        let file = ctx.path().join("names");
        let stderr = build_fails(&build_args(
            ctx.path(),
            &["--no-push", flag, file.to_str().unwrap()],
        ));
        assert!(
            stderr.contains(flag) && stderr.contains("--destination"),
            "{stderr}"
        );
        assert!(!file.exists());
    }
    for bad in ["novalue", "=v"] {
        let stderr = build_fails(&build_args(ctx.path(), &["--no-push", "--annotation", bad]));
        assert!(stderr.contains("--annotation"), "{stderr}");
    }
    build_fails(&build_args(
        ctx.path(),
        &["--no-push", "--image-format", "v1"],
    ));
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn dryrun_prints_the_plan_and_builds_nothing() {
    let reg = registry();
    let ctx = context_with(
        &format!(
            "ARG BASE={reg}/busybox:latest\n\
             FROM $BASE AS builder\nRUN echo built > /out\n\
             FROM {reg}/does-not-exist:1 AS unused\nRUN false\n\
             FROM scratch AS app\nCOPY --from=builder /out /out\n"
        ),
        &[],
    );
    let work = tempfile::tempdir().unwrap();
    let out = build_ok(&build_args(
        ctx.path(),
        &["--dryrun", "--work-dir", work.path().to_str().unwrap()],
    ));
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains("target: stage 2 \"app\"; stages built: 0, 2 (4 steps)"),
        "{plan}"
    );
    assert!(
        plan.contains(&format!(
            "stage 0 \"builder\" (build): FROM image {reg}/busybox:latest"
        )),
        "{plan}"
    );
    assert!(plan.contains("  [2/4] RUN echo built > /out"), "{plan}");
    assert!(
        plan.contains("stage 1 \"unused\" (skip: the target does not need it)"),
        "{plan}"
    );
    assert!(plan.contains("  - RUN false"), "{plan}");
    assert!(
        plan.contains("stage 2 \"app\" (build, target): FROM scratch"),
        "{plan}"
    );
    assert!(
        plan.contains("  [4/4] COPY --from=builder /out /out"),
        "{plan}"
    );
    assert_eq!(
        fs::read_dir(work.path()).unwrap().count(),
        0,
        "nothing was pulled or run"
    );

    let out = build_ok(&build_args(
        ctx.path(),
        &["--dryrun", "--target", "builder"],
    ));
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains("target: stage 0 \"builder\"; stages built: 0 (2 steps)"),
        "{plan}"
    );
    assert!(plan.contains("stage 2 \"app\" (skip"), "{plan}");
}

#[test]
fn the_debug_log_reports_the_bytes_of_each_blob_pulled_and_pushed() {
    let ctx = context("busybox:latest", "bytes\n");
    let dest = format!("{}:1", unique_repo("bytes"));
    let store = tempfile::tempdir().unwrap();
    let store_flag = ["--layer-store", store.path().to_str().unwrap()];
    let out = build_ok(&build_args(
        ctx.path(),
        &[
            &["--destination", &dest, "--verbosity", "debug"][..],
            &store_flag,
        ]
        .concat(),
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let manifest = skopeo_manifest(&dest);
    let short = |d: &Value| d["digest"].as_str().unwrap()[..19].to_string();
    let layers = manifest["layers"].as_array().unwrap();
    let (base, copied) = (&layers[0], &layers[layers.len() - 1]);
    let line = |start: String| {
        stderr
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(&start))
            .unwrap_or_else(|| panic!("no line starting {start:?} in:\n{stderr}"))
            .to_string()
    };
    // The base layer is downloaded once (into the fresh layer store, which checks its
    // diff_id as it extracts it), with its size.
    let pulled = line(format!("pulled {} (", short(base)));
    assert!(
        pulled.ends_with(&format!("from {}/busybox:latest", registry())),
        "{pulled}"
    );
    // The COPY layer and the config are uploaded; the base layer is mounted, not uploaded.
    for blob in [copied, &manifest["config"]] {
        let pushed = line(format!("pushed {} (", short(blob)));
        assert!(pushed.ends_with(&format!(") to {dest}")), "{pushed}");
        let size = blob["size"].as_u64().unwrap();
        if size < 1024 {
            assert!(pushed.contains(&format!("({size} B)")), "{pushed}");
        }
    }
    assert!(
        !stderr.contains(&format!("pushed {} (", short(base))),
        "{stderr}"
    );
    // At the default verbosity the transfers are not shown.
    let quiet = build_ok(&build_args(ctx.path(), &["--no-push"]));
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("pulled sha256:"));
}
