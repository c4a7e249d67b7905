//! Integration tests against the real CNCF distribution registries of `scripts/lab.sh`.
//!
//! Run `eval "$(scripts/lab.sh env)"` first; these tests panic when the lab is not set up.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

mod common;

use common::{env, push_tiny_image, unique};
use ocibuild_registry::manifest::{self, index_json};
use ocibuild_registry::platform::{self, linux_amd64};
use ocibuild_registry::{
    media_types, sha256_digest, Client, ClientOptions, DockerConfig, Error, ImageIndex, Reference,
};

fn registry() -> String {
    env("OCIBUILD_TEST_REGISTRY")
}

/// Pseudo-random bytes (xorshift), different per call.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut x = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn client_for(reg: &str, cfg: DockerConfig) -> Client {
    Client::new(ClientOptions {
        insecure_registries: vec![reg.to_string()],
        docker_config: cfg,
        ..Default::default()
    })
    .expect("client")
}

fn plain_client() -> Client {
    client_for(&registry(), DockerConfig::default())
}

fn reference(reg: &str, repo: &str, tag: &str) -> Reference {
    Reference::parse(&format!("{reg}/{repo}:{tag}")).expect("reference")
}

/// Pushes a tiny image (config + one random layer) and returns (manifest bytes, digest).
async fn push_small_image(c: &Client, r: &Reference) -> (Vec<u8>, String) {
    let pushed = push_tiny_image(c, r, &random_bytes(4096)).await;
    (pushed.bytes, pushed.digest)
}

#[tokio::test]
async fn blob_file_round_trip() {
    let c = plain_client();
    let reg = registry();
    let r = reference(&reg, &unique("ocibuild-test/blob"), "x");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("layer.bin");
    let data = random_bytes(5 * 1024 * 1024 + 123);
    std::fs::write(&src, &data).unwrap();
    let digest = sha256_digest(&data);

    assert!(!c.blob_exists(&r, &digest).await.unwrap());
    c.push_blob_file(&r, &digest, &src)
        .await
        .expect("push file");
    assert!(c.blob_exists(&r, &digest).await.unwrap());
    // Pushing again is harmless.
    c.push_blob_file(&r, &digest, &src).await.expect("re-push");

    let dest = dir.path().join("sub-pulled.bin");
    let n = c
        .pull_blob_to_file(&r, &digest, &dest)
        .await
        .expect("pull file");
    assert_eq!(n, data.len() as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    // No temp files left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // A wrong digest for the file is rejected by the registry, naming the digest.
    let wrong = sha256_digest(b"not the file");
    let err = c.push_blob_file(&r, &wrong, &src).await.unwrap_err();
    assert!(err.to_string().contains(&wrong), "{err}");

    // Unknown blob: 404 error naming it.
    let missing = sha256_digest(b"missing blob");
    let err = c
        .pull_blob_to_file(&r, &missing, &dir.path().join("m"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(err.to_string().contains(&missing), "{err}");
    assert!(!dir.path().join("m").exists());
}

#[tokio::test]
async fn manifest_push_then_pull() {
    let c = plain_client();
    let reg = registry();
    let r = reference(&reg, &unique("ocibuild-test/manifest"), "v1");
    let (bytes, digest) = push_small_image(&c, &r).await;
    assert_eq!(digest, sha256_digest(&bytes));

    let pulled = c.pull_manifest(&r, &linux_amd64()).await.expect("pull");
    assert_eq!(pulled.digest, digest);
    assert_eq!(pulled.bytes, bytes);
    assert_eq!(pulled.media_type.as_ref(), media_types::OCI_MANIFEST);
    assert_eq!(pulled.manifest.layers().len(), 1);

    // By digest, and pushing the same manifest under its digest.
    let by_digest = r.with_digest(&digest);
    let again = c.pull_manifest(&by_digest, &linux_amd64()).await.unwrap();
    assert_eq!(again.digest, digest);
    let d2 = c
        .push_manifest(
            &Reference {
                tag: None,
                ..by_digest.clone()
            },
            media_types::OCI_MANIFEST,
            &bytes,
        )
        .await
        .unwrap();
    assert_eq!(d2, digest);

    // A reference pinned to the wrong digest cannot be pushed.
    let wrong = r.with_digest(&sha256_digest(b"other"));
    let err = c
        .push_manifest(&wrong, media_types::OCI_MANIFEST, &bytes)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");

    // Unknown tag: not found, naming the tag.
    let err = c
        .pull_manifest(&r.with_tag("nope"), &linux_amd64())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("nope"), "{err}");
}

#[tokio::test]
async fn busybox_fixture() {
    let c = plain_client();
    let reg = registry();
    let r = reference(&reg, "busybox", "latest");
    let pulled = c
        .pull_manifest(&r, &linux_amd64())
        .await
        .expect("busybox:latest fixture missing; run scripts/lab.sh up");
    assert_eq!(pulled.manifest.schema_version(), 2);
    assert!(!pulled.manifest.layers().is_empty());
    let cfg = c
        .pull_blob_bytes(&r, pulled.manifest.config().digest().as_ref())
        .await
        .expect("config");
    let cfg: serde_json::Value = serde_json::from_slice(&cfg).unwrap();
    assert_eq!(cfg["architecture"], "amd64");
    assert_eq!(cfg["os"], "linux");
    assert_eq!(cfg["config"]["Cmd"][0], "sh");

    let layer = &pulled.manifest.layers()[0];
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("layer.tar.gz");
    let n = c
        .pull_blob_to_file(&r, layer.digest().as_ref(), &dest)
        .await
        .unwrap();
    assert_eq!(n, layer.size());
}

#[tokio::test]
async fn mount_between_repositories() {
    let c = plain_client();
    let reg = registry();
    let from = unique("ocibuild-test/mount-src");
    let src = reference(&reg, &from, "x");
    let dst = reference(&reg, &unique("ocibuild-test/mount-dst"), "x");
    let data = random_bytes(10_000);
    let digest = sha256_digest(&data);
    c.push_blob_bytes(&src, &digest, data).await.unwrap();
    assert!(!c.blob_exists(&dst, &digest).await.unwrap());
    assert!(c.mount_blob(&dst, &from, &digest).await.unwrap());
    assert!(c.blob_exists(&dst, &digest).await.unwrap());
    // Mounting a blob the source does not have starts (and cancels) an upload.
    let missing = sha256_digest(b"never pushed");
    assert!(!c.mount_blob(&dst, &from, &missing).await.unwrap());
}

#[tokio::test]
async fn index_resolves_platform() {
    let c = plain_client();
    let reg = registry();
    let multi = reference(&reg, "busybox-multi", "latest");
    let single = c
        .pull_manifest(&reference(&reg, "busybox", "latest"), &linux_amd64())
        .await
        .unwrap();
    let amd = c
        .pull_manifest(&multi, &linux_amd64())
        .await
        .expect("busybox-multi:latest fixture missing; run scripts/lab.sh up");
    assert_eq!(amd.digest, single.digest);
    assert_eq!(amd.media_type.as_ref(), media_types::OCI_MANIFEST);

    let arm = platform::platform("linux", "arm64", Some("v8"));
    let arm = c.pull_manifest(&multi, &arm).await.unwrap();
    assert_ne!(arm.digest, amd.digest);
    let cfg = c
        .pull_blob_bytes(&multi, arm.manifest.config().digest().as_ref())
        .await
        .unwrap();
    let cfg: serde_json::Value = serde_json::from_slice(&cfg).unwrap();
    assert_eq!(cfg["architecture"], "arm64");

    let err = c
        .pull_manifest(&multi, &platform::platform("linux", "s390x", None))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::NoMatchingPlatform { .. }), "{msg}");
    assert!(
        msg.contains("linux/amd64") && msg.contains("linux/arm64/v8"),
        "{msg}"
    );

    // Pushing an index with our own client and resolving it.
    let r = reference(&reg, &unique("ocibuild-test/index"), "multi");
    let (bytes, digest) = push_small_image(&c, &r).await;
    let mut entry =
        manifest::descriptor(media_types::OCI_MANIFEST, &digest, bytes.len() as u64).unwrap();
    entry.set_platform(Some(linux_amd64()));
    let mut index = ImageIndex::default();
    index.set_media_type(Some(media_types::OCI_INDEX.into()));
    index.set_manifests(vec![entry]);
    let ib = index_json(&index);
    c.push_manifest(&r, media_types::OCI_INDEX, &ib)
        .await
        .unwrap();
    let got = c.pull_manifest(&r, &linux_amd64()).await.unwrap();
    assert_eq!(got.digest, digest);
}

/// A fake registry that serves `body` for every request.
async fn serve_wrong_content(body: &'static [u8]) -> String {
    serve_fn(std::sync::Arc::new(move |_| {
        let content_type = (
            "Content-Type".to_string(),
            "application/octet-stream".to_string(),
        );
        (200, vec![content_type], body.to_vec())
    }))
    .await
}

#[tokio::test]
async fn digest_mismatch_detected() {
    // Make sure the lab is up even for this test, so it never silently passes alone.
    let _ = registry();
    let addr = serve_wrong_content(b"tampered content").await;
    let c = client_for(&addr, DockerConfig::default());
    let r = reference(&addr, "evil", "x");
    let digest = sha256_digest(b"the real content");
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("blob");
    let err = c.pull_blob_to_file(&r, &digest, &dest).await.unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&digest), "{err}");
    assert!(!dest.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    let err = c.pull_blob_bytes(&r, &digest).await.unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");

    // Local check for pushes, too.
    let real = plain_client();
    let rr = reference(&registry(), "ocibuild-test/mismatch", "x");
    let err = real
        .push_blob_bytes(&rr, &digest, b"something else".to_vec())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
}

fn write_config(dir: &Path, reg: &str, user: &str, password: &str) -> std::path::PathBuf {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let path = dir.join("config.json");
    std::fs::write(
        &path,
        format!(r#"{{"auths":{{"http://{reg}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn basic_auth_registry() {
    let reg = env("OCIBUILD_TEST_AUTH_REGISTRY");
    let user = env("OCIBUILD_TEST_AUTH_USER");
    let pw = env("OCIBUILD_TEST_AUTH_PASSWORD");
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = write_config(dir.path(), &reg, &user, &pw);
    let cfg = DockerConfig::load(Some(&cfg_path)).unwrap();
    let c = client_for(&reg, cfg);
    let r = reference(&reg, &unique("ocibuild-test/auth"), "v1");
    let (bytes, digest) = push_small_image(&c, &r).await;
    let pulled = c.pull_manifest(&r, &linux_amd64()).await.unwrap();
    assert_eq!(pulled.digest, digest);
    assert_eq!(pulled.bytes, bytes);
    let dest = dir.path().join("layer");
    c.pull_blob_to_file(&r, pulled.manifest.layers()[0].digest().as_ref(), &dest)
        .await
        .unwrap();

    // Without credentials: a 401 error telling the user what to do.
    let empty_dir = tempfile::tempdir().unwrap();
    let empty_path = empty_dir.path().join("config.json");
    let anon = client_for(&reg, DockerConfig::load(Some(&empty_path)).unwrap());
    let err = anon.pull_manifest(&r, &linux_amd64()).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Unauthorized { .. }), "{msg}");
    assert!(
        msg.starts_with(&format!("401 from {reg} for repository {}", r.repository)),
        "{msg}"
    );
    assert!(msg.contains("no credentials found in"), "{msg}");
    assert!(msg.contains(&empty_path.display().to_string()), "{msg}");
    assert!(msg.contains("docker login"), "{msg}");

    // Wrong password: rejected credentials.
    let bad_dir = tempfile::tempdir().unwrap();
    let bad_path = write_config(bad_dir.path(), &reg, &user, "wrong-password");
    let bad = client_for(&reg, DockerConfig::load(Some(&bad_path)).unwrap());
    let err = bad
        .blob_exists(&r, pulled.manifest.config().digest().as_ref())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Unauthorized { .. }), "{msg}");
    assert!(msg.contains("rejected"), "{msg}");
}

type Handler = std::sync::Arc<dyn Fn(&str) -> (u16, Vec<(String, String)>, Vec<u8>) + Send + Sync>;

/// A tiny HTTP/1.1 server; `handler` gets the request head and returns (status, headers, body).
async fn serve_fn(handler: Handler) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&got).into_owned();
                let (status, headers, body) = handler(&head);
                let mut out = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                let _ = s.write_all(out.as_bytes()).await;
                let _ = s.write_all(&body).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn bearer_token_flow() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let _ = registry();
    let blob: &'static [u8] = b"bearer protected blob";
    let digest = sha256_digest(blob);
    let token_calls = Arc::new(AtomicUsize::new(0));
    let tc = token_calls.clone();
    let realm = Arc::new(std::sync::Mutex::new(String::new()));
    let realm2 = realm.clone();
    let handler: Handler = Arc::new(move |head: &str| {
        let first = head.lines().next().unwrap_or("").to_string();
        let lower = head.to_ascii_lowercase();
        if first.contains("/token?") {
            tc.fetch_add(1, Ordering::SeqCst);
            // Basic credentials from config.json must be sent to the token endpoint.
            let ok = lower.contains("authorization: basic dxnlcjpwyxnz") // user:pass
                && first.contains("service=fake")
                && first.contains("scope=repository%3Abearer%2Frepo%3Apull");
            return if ok {
                (200, vec![], br#"{"token":"tok-123"}"#.to_vec())
            } else {
                (401, vec![], b"{}".to_vec())
            };
        }
        if lower.contains("authorization: bearer tok-123") {
            return (200, vec![], blob.to_vec());
        }
        let realm = realm2.lock().unwrap().clone();
        (
            401,
            vec![(
                "WWW-Authenticate".into(),
                format!(
                    r#"Bearer realm="{realm}",service="fake",scope="repository:bearer/repo:pull""#
                ),
            )],
            b"{}".to_vec(),
        )
    });
    let addr = serve_fn(handler).await;
    *realm.lock().unwrap() = format!("http://{addr}/token");

    let dir = tempfile::tempdir().unwrap();
    let cfg_path = write_config(dir.path(), &addr, "user", "pass");
    let c = client_for(&addr, DockerConfig::load(Some(&cfg_path)).unwrap());
    let r = reference(&addr, "bearer/repo", "x");
    assert_eq!(c.pull_blob_bytes(&r, &digest).await.unwrap(), blob);
    // The token is cached per scope: a second pull needs no new token.
    assert_eq!(c.pull_blob_bytes(&r, &digest).await.unwrap(), blob);
    assert_eq!(token_calls.load(Ordering::SeqCst), 1);

    // Anonymous token requests are refused by this fake: a clear token error.
    let anon = client_for(&addr, DockerConfig::default());
    let err = anon.pull_blob_bytes(&r, &digest).await.unwrap_err();
    assert!(matches!(err, Error::Token { .. }), "{err}");
    assert!(err.to_string().contains(&addr), "{err}");
}

/// Like Docker and go-containerregistry, a registry on a loopback address that does not
/// answer https is spoken to over plain http without any insecure flag.
#[tokio::test]
async fn loopback_registries_fall_back_to_http_without_flags() {
    let c = Client::new(ClientOptions::default()).unwrap();
    let r = reference(&registry(), "busybox", "latest");
    let pulled = c
        .pull_manifest(&r, &linux_amd64())
        .await
        .expect("a plain-http loopback registry works without insecure flags");
    assert!(!pulled.manifest.layers().is_empty());
}
