//! Integration tests for TLS (private CA, client certificates, skipped verification),
//! registry mirrors and registry maps against the registries of `scripts/lab.sh`.
//!
//! Run `eval "$(scripts/lab.sh env)"` first; these tests panic when the lab is not set up.
//! Nothing here reaches the internet: mirror and map tests disable the fallback to the
//! original registry.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::{env, push_tiny_image, unique};
use ocibuild_registry::platform::linux_amd64;
use ocibuild_registry::{sha256_digest, Client, ClientOptions, Error, Reference};

fn tls_registry() -> String {
    env("OCIBUILD_TEST_TLS_REGISTRY")
}

fn mtls_registry() -> String {
    env("OCIBUILD_TEST_MTLS_REGISTRY")
}

fn plain_registry() -> String {
    env("OCIBUILD_TEST_REGISTRY")
}

fn ca() -> PathBuf {
    env("OCIBUILD_TEST_TLS_CA").into()
}

fn client_cert() -> (PathBuf, PathBuf) {
    (
        env("OCIBUILD_TEST_TLS_CLIENT_CERT").into(),
        env("OCIBUILD_TEST_TLS_CLIENT_KEY").into(),
    )
}

fn client(opts: ClientOptions) -> Client {
    Client::new(opts).expect("client")
}

fn reference(s: &str) -> Reference {
    Reference::parse(s).expect("reference")
}

/// Pushes a tiny one-layer image to `r` and checks that it pulls back identically.
async fn push_and_pull(c: &Client, r: &Reference) {
    let layer = unique("layer").into_bytes();
    let pushed = push_tiny_image(c, r, &layer).await;
    let pulled = c
        .pull_manifest(r, &linux_amd64())
        .await
        .expect("pull manifest");
    assert_eq!(pulled.digest, pushed.digest);
    assert_eq!(pulled.bytes, pushed.bytes);
    assert_eq!(
        c.pull_blob_bytes(r, &pushed.config_digest)
            .await
            .expect("pull config"),
        pushed.config
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("layer");
    c.pull_blob_to_file(r, &pushed.layer_digest, &dest)
        .await
        .expect("pull layer");
    assert_eq!(std::fs::read(&dest).expect("read layer"), layer);
}

fn assert_tls_error(e: &Error, registry: &str, flags: &[&str]) {
    let msg = e.to_string();
    assert!(matches!(e, Error::Tls { .. }), "not a TLS error: {msg}");
    assert!(msg.contains("TLS error"), "{msg}");
    assert!(msg.contains(registry), "{msg}");
    for f in flags {
        assert!(msg.contains(f), "{f} missing from: {msg}");
    }
}

#[tokio::test]
async fn tls_registry_with_ca_pushes_and_pulls() {
    let reg = tls_registry();
    let c = client(ClientOptions {
        ca_certificates: vec![(reg.clone(), ca())],
        ..Default::default()
    });
    push_and_pull(&c, &reference(&format!("{reg}/tls/ca:{}", unique("t")))).await;
}

#[tokio::test]
async fn tls_registry_without_ca_is_a_clear_tls_error() {
    let reg = tls_registry();
    // A CA configured for another registry must not be trusted for this one.
    let c = client(ClientOptions {
        ca_certificates: vec![("other.example:5000".into(), ca())],
        ..Default::default()
    });
    let r = reference(&format!("{reg}/tls/none:latest"));
    let start = Instant::now();
    let e = c
        .pull_manifest(&r, &linux_amd64())
        .await
        .expect_err("untrusted certificate must fail");
    assert_tls_error(
        &e,
        &reg,
        &[
            &format!("--registry-certificate {reg}=CA.pem"),
            &format!("--skip-tls-verify-registry {reg}"),
        ],
    );
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    // TLS failures are not retried.
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let e = c
        .push_blob_bytes(&r, &sha256_digest(b"x"), b"x".to_vec())
        .await
        .expect_err("push must fail too");
    assert_tls_error(&e, &reg, &["--registry-certificate"]);
}

#[tokio::test]
async fn tls_registry_with_skipped_verification_works() {
    let reg = tls_registry();
    let c = client(ClientOptions {
        skip_tls_verify: vec![format!("https://{reg}/")],
        ..Default::default()
    });
    push_and_pull(&c, &reference(&format!("{reg}/tls/skip:{}", unique("t")))).await;
    let c = client(ClientOptions {
        skip_tls_verify_all: true,
        ..Default::default()
    });
    push_and_pull(
        &c,
        &reference(&format!("{reg}/tls/skip-all:{}", unique("t"))),
    )
    .await;
}

#[tokio::test]
async fn mtls_registry_with_client_certificate_works() {
    let reg = mtls_registry();
    let (cert, key) = client_cert();
    let c = client(ClientOptions {
        ca_certificates: vec![(reg.clone(), ca())],
        client_certificates: vec![(reg.clone(), cert, key)],
        ..Default::default()
    });
    push_and_pull(&c, &reference(&format!("{reg}/mtls/ok:{}", unique("t")))).await;
}

#[tokio::test]
async fn mtls_registry_without_client_certificate_is_a_clear_tls_error() {
    let reg = mtls_registry();
    let (cert, key) = client_cert();
    // The client certificate is configured for another registry only.
    let c = client(ClientOptions {
        ca_certificates: vec![(reg.clone(), ca())],
        client_certificates: vec![(tls_registry(), cert, key)],
        ..Default::default()
    });
    let r = reference(&format!("{reg}/mtls/none:latest"));
    let e = c
        .pull_manifest(&r, &linux_amd64())
        .await
        .expect_err("missing client certificate must fail");
    assert_tls_error(&e, &reg, &[&format!("--registry-client-cert {reg}=")]);
}

#[tokio::test]
async fn unusable_certificate_files_fail_client_creation() {
    let reg = tls_registry();
    let e = Client::new(ClientOptions {
        ca_certificates: vec![(reg.clone(), "/nonexistent/ca.pem".into())],
        ..Default::default()
    })
    .expect_err("missing CA file");
    assert!(matches!(e, Error::TlsConfig { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    // A CA certificate is no client identity (no key).
    let e = Client::new(ClientOptions {
        client_certificates: vec![(reg.clone(), ca(), ca())],
        ..Default::default()
    })
    .expect_err("certificate without key");
    assert!(matches!(e, Error::TlsConfig { .. }), "{e}");
    assert!(e.to_string().contains(&reg), "{e}");
}

/// Copies the plain lab registry's busybox to `repo` there (idempotent).
fn copy_busybox(repo: &str) {
    let reg = plain_registry();
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{reg}/busybox:latest"),
            &format!("docker://{reg}/{repo}:latest"),
        ])
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo copy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Pulls `r` (manifest, config and every layer) with `c` and returns the manifest digest.
async fn pull_all(c: &Client, r: &Reference) -> Result<String, Error> {
    let pulled = c.pull_manifest(r, &linux_amd64()).await?;
    c.pull_blob_bytes(r, pulled.manifest.config().digest().as_ref())
        .await?;
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, l) in pulled.manifest.layers().iter().enumerate() {
        c.pull_blob_to_file(r, l.digest().as_ref(), &dir.path().join(i.to_string()))
            .await?;
    }
    Ok(pulled.digest)
}

async fn plain_digest(repo: &str) -> String {
    let c = client(ClientOptions::default());
    let r = reference(&format!("{}/{repo}:latest", plain_registry()));
    pull_all(&c, &r)
        .await
        .expect("pull from the plain registry")
}

#[tokio::test]
async fn docker_hub_pulls_use_the_mirror() {
    copy_busybox("library/busybox");
    let reg = plain_registry();
    let c = client(ClientOptions {
        // A dead mirror first: the next one must be tried.
        mirrors: vec!["127.0.0.1:1".into(), reg.clone()],
        skip_default_registry_fallback: true,
        ..Default::default()
    });
    let r = reference("docker.io/library/busybox:latest");
    assert_eq!(
        c.pull_sources(&r)
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
        [
            "127.0.0.1:1/library/busybox:latest".to_string(),
            format!("{reg}/library/busybox:latest")
        ]
    );
    let digest = pull_all(&c, &r).await.expect("pull through the mirror");
    assert_eq!(digest, plain_digest("library/busybox").await);
    // `busybox` and index.docker.io name the same image.
    pull_all(&c, &reference("index.docker.io/busybox"))
        .await
        .expect("pull through the mirror");
}

#[tokio::test]
async fn missing_on_every_mirror_without_fallback_fails_locally() {
    let reg = plain_registry();
    let c = client(ClientOptions {
        mirrors: vec![reg.clone()],
        skip_default_registry_fallback: true,
        ..Default::default()
    });
    let r = reference(&format!("docker.io/library/{}:latest", unique("absent")));
    let e = c
        .pull_manifest(&r, &linux_amd64())
        .await
        .expect_err("absent image");
    assert!(
        matches!(&e, Error::NotFound { registry, .. } if registry == &reg),
        "{e}"
    );
    // Two dead mirrors: both failures are reported.
    let c = client(ClientOptions {
        mirrors: vec!["127.0.0.1:1".into(), reg.clone()],
        skip_default_registry_fallback: true,
        ..Default::default()
    });
    let e = c
        .pull_manifest(&r, &linux_amd64())
        .await
        .expect_err("absent image");
    assert!(
        matches!(&e, Error::AllSourcesFailed { failures, .. } if failures.len() == 2),
        "{e}"
    );
    let msg = e.to_string();
    assert!(msg.contains("127.0.0.1:1") && msg.contains(&reg), "{msg}");
}

#[tokio::test]
async fn registry_map_replaces_registries_in_order() {
    copy_busybox("mapped/busybox");
    let reg = plain_registry();
    let c = client(ClientOptions {
        registry_map: vec![
            (
                "registry.example.invalid".into(),
                vec!["127.0.0.1:1".into(), format!("{reg}/mapped")],
            ),
            ("index.docker.io".into(), vec![reg.clone()]),
        ],
        skip_default_registry_fallback: true,
        ..Default::default()
    });
    let r = reference("registry.example.invalid/busybox:latest");
    let digest = pull_all(&c, &r).await.expect("pull through the map");
    assert_eq!(digest, plain_digest("mapped/busybox").await);
    // index.docker.io maps docker hub references too.
    copy_busybox("library/busybox");
    pull_all(&c, &reference("busybox"))
        .await
        .expect("docker hub through the map");
    // Registries that are not mapped are used as they are.
    let plain = reference(&format!("{reg}/busybox:latest"));
    assert_eq!(c.pull_sources(&plain), vec![plain.clone()]);
    pull_all(&c, &plain).await.expect("unmapped registry");
}

#[tokio::test]
async fn mirror_on_a_tls_registry_uses_its_tls_settings() {
    let reg = tls_registry();
    let seed = client(ClientOptions {
        ca_certificates: vec![(reg.clone(), ca())],
        ..Default::default()
    });
    let prefix = unique("hub");
    // docker.io/app is docker.io/library/app; the mirror serves it below its prefix.
    let target = reference(&format!("{reg}/{prefix}/library/app:1"));
    push_and_pull(&seed, &target).await;
    let direct = seed
        .pull_manifest(&target, &linux_amd64())
        .await
        .expect("direct pull");
    let c = client(ClientOptions {
        ca_certificates: vec![(reg.clone(), ca())],
        mirrors: vec![format!("{reg}/{prefix}")],
        skip_default_registry_fallback: true,
        ..Default::default()
    });
    let hub = reference("app:1");
    assert_eq!(
        pull_all(&c, &hub)
            .await
            .expect("pull through the TLS mirror"),
        direct.digest
    );
    // Without the CA the mirror fails with the TLS error, and nothing else is tried.
    let c = client(ClientOptions {
        mirrors: vec![format!("{reg}/{prefix}")],
        skip_default_registry_fallback: true,
        ..Default::default()
    });
    let e = pull_all(&c, &hub).await.expect_err("untrusted mirror");
    assert_tls_error(&e, &reg, &["--registry-certificate"]);
}
