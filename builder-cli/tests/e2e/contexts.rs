//! Build contexts in Google Cloud Storage and Azure Blob Storage, end to end: the executor
//! builds the demo from a `gs://` object in the lab's GCS emulator and from an
//! `https://ACCOUNT.blob.core.windows.net/...` blob in the lab's azurite, reached through
//! `STORAGE_EMULATOR_HOST` and a connection string. The archives are uploaded with `curl`
//! (the Azure ones signed with the account's well-known key).

use crate::common::*;
use crate::executor::{build_demo_from, demo_tar_gz, env_var};
use ocibuild_context::azure::{shared_key_headers, DEV_ACCOUNT, DEV_ACCOUNT_KEY};
use std::path::Path;

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn gs_context_from_the_gcs_emulator() {
    let emulator = env_var("OCIBUILD_TEST_GCS");
    let (_dir, tar, bucket) = demo_archive("ctx-gs");
    let created = format!("{{\"name\":\"{bucket}\"}}");
    let buckets = format!("{emulator}/storage/v1/b?project=ocibuild");
    curl_post("application/json", &created, &buckets);
    let upload = format!(
        "{emulator}/upload/storage/v1/b/{bucket}/o?uploadType=media&name=builds/ctx.tar.gz"
    );
    curl_post("application/gzip", &format!("@{}", tar.display()), &upload);
    let env = [("STORAGE_EMULATOR_HOST", emulator.as_str())];
    build_demo_from(
        "ctx-gs",
        &format!("gs://{bucket}/builds/ctx.tar.gz"),
        &[],
        &env,
        None,
    );

    let missing = format!("gs://{bucket}/builds/nope.tar.gz");
    let out = ocibuild_with_env(
        &[
            "executor",
            "--isolation",
            "namespaces",
            "--context",
            &missing,
            "--no-push",
        ],
        &env,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&missing) && stderr.contains("HTTP 404"),
        "{stderr}"
    );
}

/// `curl -X POST` of `data` (`@FILE` for a file) as `content_type` to `url`.
fn curl_post(content_type: &str, data: &str, url: &str) {
    let header = format!("content-type: {content_type}");
    run(
        "curl",
        &[
            "-sSf",
            "-X",
            "POST",
            "-H",
            &header,
            "--data-binary",
            data,
            url,
        ],
    );
}

/// `curl -X PUT` of `body` (a file, or nothing) to azurite's `path`, signed with the
/// account key.
fn azure_put(endpoint: &str, path: &str, extra: &[(&str, &str)], body: Option<&Path>) {
    let url = reqwest::Url::parse(&format!("{endpoint}{path}")).unwrap();
    let length = body
        .map_or(0, |b| std::fs::metadata(b).unwrap().len())
        .to_string();
    let mut headers = vec![
        ("content-length", length.as_str()),
        ("content-type", "application/octet-stream"),
    ];
    headers.extend_from_slice(extra);
    let signed = shared_key_headers("PUT", &url, DEV_ACCOUNT, DEV_ACCOUNT_KEY, &headers).unwrap();
    let mut args = vec!["-sSf".to_string(), "-X".into(), "PUT".into()];
    for (name, value) in signed {
        args.push("-H".into());
        args.push(format!("{name}: {value}"));
    }
    if let Some(body) = body {
        args.push("--data-binary".into());
        args.push(format!("@{}", body.display()));
    }
    args.push(url.to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run("curl", &args);
}

/// A temporary directory holding the demo context as `ctx.tar.gz`, and a unique
/// lower-case name starting with `tag` (for a bucket or a container).
fn demo_archive(tag: &str) -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let tar = demo_tar_gz(dir.path());
    (dir, tar, unique_string(tag).to_ascii_lowercase())
}

#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn azure_blob_context_from_azurite() {
    let endpoint = env_var("OCIBUILD_TEST_AZURITE");
    let (_dir, tar, container) = demo_archive("ctx-az");
    azure_put(
        &endpoint,
        &format!("/{container}?restype=container"),
        &[],
        None,
    );
    azure_put(
        &endpoint,
        &format!("/{container}/builds/ctx.tar.gz"),
        &[("x-ms-blob-type", "BlockBlob")],
        Some(&tar),
    );
    let connection = format!(
        "DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_ACCOUNT_KEY};BlobEndpoint={endpoint};"
    );
    build_demo_from(
        "ctx-azure",
        &format!("https://{DEV_ACCOUNT}.blob.core.windows.net/{container}/builds/ctx.tar.gz"),
        &[],
        &[("AZURE_STORAGE_CONNECTION_STRING", &connection)],
        None,
    );
}
