//! Pushes: the HEAD that finds blobs already there, cross-repository mounts, blob
//! uploads (a POST for the session, then one monolithic PUT; the whole upload is
//! retried), manifest PUTs and the push-permission check (an upload started and cancelled),
//! each under the push retry policy (a mount is tried once).

use std::path::Path;

use futures_util::StreamExt;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, Response, StatusCode, Url};

use crate::digest::{check_sha256, sha256_digest, verify};
use crate::error::{Error, Result};
use crate::idle::Progress;
use crate::reference::Reference;
use crate::token::Access;
use crate::trace::Transfer;
use crate::transport::Transport;

/// Bytes of a blob file read at a time while it uploads: large reads, so that a 100 MB
/// layer takes a few hundred trips to the blocking pool, not 25 000 (tokio's default
/// chunk is 4 KiB, and every read of a `tokio::fs::File` is one such trip).
const UPLOAD_CHUNK: usize = 512 * 1024;

/// Whether blob `digest` exists in `r`'s repository (HEAD), asked with `access`: a push
/// asks with push access, so that a missing permission shows before any upload and is
/// reported as one to push.
pub(crate) async fn blob_exists(
    t: &Transport,
    r: &Reference,
    digest: &str,
    access: Access,
) -> Result<bool> {
    check_sha256(digest)?;
    let what = format!("blob {digest}");
    let url = t.url(r, &format!("blobs/{digest}")).await?;
    let policy = match access {
        Access::Pull => t.policy(),
        Access::Push => t.push_policy(),
    };
    policy
        .run(|| async {
            let resp = t
                .send(r, access, &[], &what, |c, _| Ok(c.head(url.clone())))
                .await?;
            match resp.status() {
                s if s.is_success() => Ok(true),
                StatusCode::NOT_FOUND => Ok(false),
                _ => Err(t.status_error(r, access, &what, resp).await),
            }
        })
        .await
}

/// Cross-repository mount of `digest` from `from_repository` into `target`: `true`
/// when mounted, `false` when the registry started an upload instead (cancelled).
pub(crate) async fn mount_blob(
    t: &Transport,
    target: &Reference,
    from_repository: &str,
    digest: &str,
) -> Result<bool> {
    check_sha256(digest)?;
    let what = format!("mount of blob {digest} from {from_repository}");
    let url = t.url(target, "blobs/uploads/").await?;
    let extra = [format!("repository:{from_repository}:pull")];
    let resp = t
        .send(target, Access::Push, &extra, &what, |c, _| {
            Ok(c.post(url.clone())
                .query(&[("mount", digest), ("from", from_repository)])
                .header(CONTENT_LENGTH, 0))
        })
        .await?;
    match resp.status() {
        StatusCode::CREATED => Ok(true),
        StatusCode::ACCEPTED => {
            if let Ok(loc) = location(target, &url, &resp) {
                cancel_upload(t, target, &loc, &what).await;
            }
            Ok(false)
        }
        _ => Err(t.status_error(target, Access::Push, &what, resp).await),
    }
}

/// Cancels the upload session at `loc` (DELETE), ignoring failures: the registry drops
/// an abandoned session anyway.
async fn cancel_upload(t: &Transport, r: &Reference, loc: &Url, what: &str) {
    let _ = t
        .send(r, Access::Push, &[], what, |c, _| {
            Ok(c.request(Method::DELETE, loc.clone()))
        })
        .await;
}

/// kaniko's push-permission check (go-containerregistry's `CheckPushPermission`): starts
/// a blob upload in `r`'s repository with push access, then cancels it. A registry that
/// cannot be reached, credentials that are missing or rejected, and an account that may
/// not push all fail here, before anything is built. Retried like the other pushes.
pub(crate) async fn check_push_permission(t: &Transport, r: &Reference) -> Result<()> {
    let what = "push permission check (an upload started and cancelled)";
    let loc = t.push_policy().run(|| start_upload(t, r, what)).await?;
    cancel_upload(t, r, &loc, what).await;
    Ok(())
}

/// The upload URL in `resp`'s `Location` header, resolved against `base`.
fn location(r: &Reference, base: &Url, resp: &Response) -> Result<Url> {
    let perr = |detail: String| Error::Protocol {
        registry: r.registry.clone(),
        repository: r.repository.clone(),
        detail,
    };
    let loc = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| perr("upload response has no Location header".into()))?;
    base.join(loc)
        .map_err(|e| perr(format!("bad upload Location {loc:?}: {e}")))
}

/// Starts an upload session; returns the upload URL.
async fn start_upload(t: &Transport, r: &Reference, what: &str) -> Result<Url> {
    let url = t.url(r, "blobs/uploads/").await?;
    let resp = t
        .send(r, Access::Push, &[], what, |c, _| {
            Ok(c.post(url.clone()).header(CONTENT_LENGTH, 0))
        })
        .await?;
    if resp.status() != StatusCode::ACCEPTED && !resp.status().is_success() {
        return Err(t.status_error(r, Access::Push, what, resp).await);
    }
    location(r, &url, &resp)
}

/// Uploads (POST + monolithic PUT) under the push retry policy, an attempt being the
/// whole upload. `body` makes the body of each attempt, touching the attempt's
/// [`Progress`] as its chunks go out.
async fn upload<F>(t: &Transport, r: &Reference, digest: &str, size: u64, body: F) -> Result<()>
where
    F: Fn(&Progress) -> Result<reqwest::Body>,
{
    check_sha256(digest)?;
    let what = format!("upload of blob {digest}");
    let what = &what;
    let body = &body;
    t.push_policy()
        .run(|| async move {
            let mut loc = start_upload(t, r, what).await?;
            loc.query_pairs_mut().append_pair("digest", digest);
            let resp = t
                .send(r, Access::Push, &[], what, |c, progress| {
                    Ok(c.put(loc.clone())
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_LENGTH, size)
                        .body(body(progress)?))
                })
                .await?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(t.status_error(r, Access::Push, what, resp).await)
            }
        })
        .await
}

/// Uploads the file at `path` as blob `digest`, streaming it from disk.
pub(crate) async fn push_blob_file(
    t: &Transport,
    r: &Reference,
    digest: &str,
    path: &Path,
) -> Result<()> {
    let io_err = |e: std::io::Error| Error::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let size = tokio::fs::metadata(path).await.map_err(io_err)?.len();
    upload(t, r, digest, size, |progress| {
        let f = std::fs::File::open(path).map_err(io_err)?;
        let f = tokio::fs::File::from_std(f);
        let mut transfer = Transfer::start("push", r, digest, Some(size));
        let chunks =
            tokio_util::io::ReaderStream::with_capacity(f, UPLOAD_CHUNK).inspect(move |chunk| {
                if let Ok(chunk) = chunk {
                    transfer.advance(chunk.len());
                }
            });
        Ok(reqwest::Body::wrap_stream(progress.tracking(chunks)))
    })
    .await
}

/// Uploads in-memory `bytes` as blob `digest` (the digest is checked first).
pub(crate) async fn push_blob_bytes(
    t: &Transport,
    r: &Reference,
    digest: &str,
    bytes: Vec<u8>,
) -> Result<()> {
    check_sha256(digest)?;
    verify(r, "blob to push", digest, sha256_digest(&bytes))?;
    let size = bytes.len() as u64;
    upload(t, r, digest, size, |_| {
        Ok(reqwest::Body::from(bytes.clone()))
    })
    .await
}

/// Pushes a manifest or index under `r`'s tag (or digest); returns its digest.
pub(crate) async fn push_manifest(
    t: &Transport,
    r: &Reference,
    media_type: &str,
    bytes: &[u8],
) -> Result<String> {
    let digest = sha256_digest(bytes);
    if let Some(want) = &r.digest {
        verify(r, "manifest to push", want, digest.clone())?;
    }
    let reference = r.tag_or_digest();
    let what = format!("push of manifest {reference}");
    let url = t.url(r, &format!("manifests/{reference}")).await?;
    let body = bytes.to_vec();
    t.push_policy()
        .run(|| async {
            let resp = t
                .send(r, Access::Push, &[], &what, |c, _| {
                    Ok(c.put(url.clone())
                        .header(CONTENT_TYPE, media_type)
                        .body(body.clone()))
                })
                .await?;
            if !resp.status().is_success() {
                return Err(t.status_error(r, Access::Push, &what, resp).await);
            }
            Ok(())
        })
        .await?;
    Ok(digest)
}
