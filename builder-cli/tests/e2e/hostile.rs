//! Hostile input: a context, Dockerfile or base image made by an attacker must end the
//! build with a normal error, leaking nothing and pushing nothing.

use crate::common::*;
use ocibuild_registry::{media_types, sha256_digest, Client, ClientOptions, Reference};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Output;

/// A registry credential as a CI runner's `config.json` holds it.
const SECRET: &str = "{\"auths\":{\"registry.example\":{\"auth\":\"Y2k6c3VwZXJzZWNyZXQ=\"}}}\n";

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a failed build that exited normally with status 1 (no abort, no signal).
fn assert_plain_failure(out: &Output) {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
}

fn assert_no_secret(text: &str) {
    for piece in [
        "Y2k6c3VwZXJzZWNyZXQ",
        "supersecret",
        "auths",
        "registry.example",
    ] {
        assert!(!text.contains(piece), "{piece:?} leaked into:\n{text}");
    }
}

fn build(context: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["build", "--context", context.to_str().unwrap(), "--no-push"];
    args.extend_from_slice(extra);
    ocibuild(&args)
}

#[test]
fn a_dockerfile_symlink_out_of_the_context_is_refused_without_leaking() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("config.json");
    fs::write(&secret, SECRET).unwrap();
    let ctx = tempfile::tempdir().unwrap();
    symlink(&secret, ctx.path().join("Dockerfile")).unwrap();
    let out = build(ctx.path(), &[]);
    assert_plain_failure(&out);
    let text = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    assert!(text.contains("outside the build context"), "{text}");
    assert_no_secret(&text);
    // The same through `-f` naming a path in the context, and through a directory link.
    symlink(outside.path(), ctx.path().join("up")).unwrap();
    for f in ["Dockerfile", "up/config.json"] {
        let path = ctx.path().join(f);
        let out = build(ctx.path(), &["-f", path.to_str().unwrap()]);
        assert_plain_failure(&out);
        assert_no_secret(&stderr(&out));
    }
}

#[test]
fn a_dockerignore_symlink_out_of_the_context_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("config.json");
    fs::write(&secret, SECRET).unwrap();
    let ctx = context_with("FROM scratch\nCOPY a /a\n", &[("a", "x")]);
    symlink(&secret, ctx.path().join(".dockerignore")).unwrap();
    let out = build(ctx.path(), &[]);
    assert_plain_failure(&out);
    assert!(stderr(&out).contains(".dockerignore"), "{}", stderr(&out));
    assert_no_secret(&stderr(&out));
}

#[test]
fn a_non_dockerfile_given_with_f_outside_the_context_is_not_quoted() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("config.json");
    fs::write(&secret, SECRET).unwrap();
    let ctx = tempfile::tempdir().unwrap();
    let out = build(ctx.path(), &["-f", secret.to_str().unwrap()]);
    assert_plain_failure(&out);
    let text = stderr(&out);
    assert!(text.contains("config.json:1"), "{text}");
    assert_no_secret(&text);
}

#[test]
fn deeply_nested_substitutions_fail_cleanly_naming_the_line() {
    let deep = format!("{}x{}", "${a:-".repeat(20_000), "}".repeat(20_000));
    let tmp = tempfile::tempdir().unwrap();
    for dockerfile in [
        format!("FROM scratch\nENV A={deep}\n"),
        format!("ARG A={deep}\nFROM scratch\n"),
        format!("FROM scratch\nWORKDIR \"{deep}\"\n"),
    ] {
        let ctx = context_with(&dockerfile, &[]);
        let out = ocibuild_with_env(
            &[
                "build",
                "--context",
                ctx.path().to_str().unwrap(),
                "--no-push",
            ],
            &[("TMPDIR", tmp.path().to_str().unwrap())],
        );
        assert_plain_failure(&out);
        let text = stderr(&out);
        assert!(
            text.contains("nested more than"),
            "{}",
            &text[..text.len().min(300)]
        );
        assert!(
            text.contains("Dockerfile:"),
            "{}",
            &text[..text.len().min(300)]
        );
    }
    let left: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

/// Pushes a one-layer image whose config lists a wrong diff_id; returns the layer digest,
/// the wrong diff_id and the true one.
fn push_image_with_wrong_diff_id(reference: &str) -> (String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/hello"), "hello\n").unwrap();
    let tar = dir.path().join("layer.tar");
    run(
        "tar",
        &[
            "-C",
            root.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ],
    );
    let tar_bytes = fs::read(&tar).unwrap();
    run("gzip", &["-n", tar.to_str().unwrap()]);
    let layer = fs::read(dir.path().join("layer.tar.gz")).unwrap();
    let layer_digest = sha256_digest(&layer);
    let true_diff_id = sha256_digest(&tar_bytes);
    let wrong_diff_id = sha256_digest(b"not the layer");
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [wrong_diff_id] },
    });
    let config = serde_json::to_vec(&config).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_MANIFEST,
        "config": {
            "mediaType": media_types::OCI_CONFIG,
            "digest": sha256_digest(&config),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": media_types::OCI_LAYER_GZIP,
            "digest": layer_digest,
            "size": layer.len(),
        }],
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let r = Reference::parse(reference).unwrap();
    let client = Client::new(ClientOptions {
        insecure_all: true,
        ..ClientOptions::default()
    })
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        client
            .push_blob_bytes(&r, &layer_digest, layer)
            .await
            .unwrap();
        client
            .push_blob_bytes(&r, &sha256_digest(&config), config)
            .await
            .unwrap();
        client
            .push_manifest(&r, media_types::OCI_MANIFEST, &manifest)
            .await
            .unwrap();
    });
    (layer_digest, wrong_diff_id, true_diff_id)
}

fn is_pushed(reference: &str) -> bool {
    std::process::Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn a_base_layer_with_a_wrong_diff_id_fails_the_build_and_pushes_nothing() {
    let base = format!("{}:1", unique_repo("wrong-diffid"));
    let (digest, wrong, right) = push_image_with_wrong_diff_id(&base);
    let cache = tempfile::tempdir().unwrap();
    let cases = [
        ("run", format!("FROM {base}\nRUN true\n"), None),
        (
            "metadata",
            format!("FROM {base}\nLABEL a=b\nENV X=1\n"),
            None,
        ),
        (
            "copy-from",
            format!("FROM scratch\nCOPY --from={base} /etc/hello /h\n"),
            None,
        ),
        (
            "cached",
            format!("FROM {base}\nLABEL a=b\n"),
            Some(cache.path()),
        ),
        (
            "cached-again",
            format!("FROM {base}\nLABEL a=b\n"),
            Some(cache.path()),
        ),
    ];
    for (name, dockerfile, cache_dir) in cases {
        let dest = format!("{}:1", unique_repo(&format!("wrong-diffid-{name}")));
        let ctx = context_with(&dockerfile, &[]);
        let mut args = vec![
            "build",
            "--context",
            ctx.path().to_str().unwrap(),
            "--destination",
            &dest,
            "--insecure",
            "--insecure-pull",
        ];
        let dir;
        if let Some(d) = cache_dir {
            dir = d.to_str().unwrap().to_string();
            args.extend(["--cache=true", "--cache-dir", &dir]);
        }
        let out = ocibuild(&args);
        let text = stderr(&out);
        assert_plain_failure(&out);
        assert!(text.contains("layer 0"), "{name}: {text}");
        for part in [&digest, &wrong, &right] {
            assert!(
                text.contains(part.as_str()),
                "{name}: {part} missing in {text}"
            );
        }
        assert!(!is_pushed(&dest), "{name}: the image was pushed");
    }
}
