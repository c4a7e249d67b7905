//! Pulls: manifests (resolving image indexes to the wanted platform), blob downloads
//! verified against their digest with the [`BlobObserver`] hook, and the fallback over
//! mirrors and registry map entries.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ocibuild_image::digest::Sha256Hasher;
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE};
use tokio::io::AsyncWriteExt;

use crate::digest::{check_sha256, sha256_digest, verify};
use crate::error::{Error, Result};
use crate::idle::next_within;
use crate::mirror::PullSources;
use crate::options::ClientOptions;
use crate::reference::Reference;
use crate::token::Access;
use crate::trace::Transfer;
use crate::transport::Transport;

/// Bytes of a download gathered before they are written to its file: every write of a
/// `tokio::fs::File` is one trip to the blocking pool, and network chunks are a few KiB.
const DOWNLOAD_BUFFER: usize = 512 * 1024;
use ocibuild_image::manifest::{self, media_types, ImageManifest, MediaType};
use ocibuild_image::platform::{self, Platform};

/// An image manifest fetched from a registry (after resolving an index, if any).
#[derive(Debug, Clone)]
pub struct PulledManifest {
    /// Digest of `bytes` (`sha256:<hex>`).
    pub digest: String,
    /// Media type of the image manifest.
    pub media_type: MediaType,
    /// The manifest exactly as served.
    pub bytes: Vec<u8>,
    /// The parsed manifest.
    pub manifest: ImageManifest,
}

/// Sees a blob's bytes while
/// [`Client::pull_blob_to_file_observed`](crate::Client::pull_blob_to_file_observed)
/// downloads it.
pub trait BlobObserver {
    /// A new download attempt starts: forget the bytes seen so far.
    fn restart(&mut self);
    /// The next bytes of the blob.
    fn update(&mut self, bytes: &[u8]);
}

/// The observer of a plain download.
pub(crate) struct NoObserver;

impl BlobObserver for NoObserver {
    fn restart(&mut self) {}
    fn update(&mut self, _bytes: &[u8]) {}
}

/// The observer of a download, shared by its attempts.
type SharedObserver<'a> = Mutex<&'a mut (dyn BlobObserver + Send)>;

/// Runs `f` on the observer behind `observer` (a poisoned lock is still usable: the
/// observer restarts with the next attempt).
fn observe(observer: &SharedObserver<'_>, f: impl FnOnce(&mut (dyn BlobObserver + Send))) {
    let mut guard = observer.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut **guard);
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Where pulls come from: the mirrors and registry map, and which source served each
/// pulled repository's last manifest.
pub(crate) struct Pulls {
    sources: PullSources,
    /// For a pulled (registry, repository): the (registry, repository) of the source
    /// that served its last manifest; tried first for its blobs.
    pulled_from: Mutex<HashMap<(String, String), (String, String)>>,
}

impl Pulls {
    /// Parses the mirrors and registry map of `opts`.
    pub(crate) fn new(opts: &ClientOptions) -> Result<Pulls> {
        Ok(Pulls {
            sources: PullSources::new(opts)?,
            pulled_from: Mutex::new(HashMap::new()),
        })
    }

    /// The references a pull of `r` tries, in order.
    pub(crate) fn candidates(&self, r: &Reference) -> Vec<Reference> {
        self.sources.candidates(r)
    }

    /// The image manifest for `r` and `platform`, from the first source that has it.
    pub(crate) async fn manifest(
        &self,
        t: &Transport,
        r: &Reference,
        platform: &Platform,
    ) -> Result<PulledManifest> {
        self.try_sources(
            r,
            true,
            |c| async move { manifest_from(t, &c, platform).await },
        )
        .await
    }

    /// Downloads blob `digest` of `r` to `dest`, showing its bytes to `observer`.
    pub(crate) async fn blob_to_file(
        &self,
        t: &Transport,
        r: &Reference,
        digest: &str,
        dest: &Path,
        observer: &mut (dyn BlobObserver + Send),
    ) -> Result<u64> {
        check_sha256(digest)?;
        let observer = Mutex::new(observer);
        let observer = &observer;
        self.try_sources(r, false, |c| async move {
            blob_to_file_from(t, &c, digest, dest, observer).await
        })
        .await
    }

    /// Downloads blob `digest` of `r` into memory.
    pub(crate) async fn blob_bytes(
        &self,
        t: &Transport,
        r: &Reference,
        digest: &str,
    ) -> Result<Vec<u8>> {
        check_sha256(digest)?;
        self.try_sources(
            r,
            false,
            |c| async move { blob_bytes_from(t, &c, digest).await },
        )
        .await
    }

    /// Runs `f` on each pull source of `r` until one succeeds. For blobs the source
    /// that served `r`'s last manifest goes first; a manifest's source is remembered.
    ///
    /// With one source its error is returned unchanged. When every source fails: the
    /// last [`Error::NotFound`] (its detail naming the other sources) if all were
    /// not-found errors, else [`Error::AllSourcesFailed`].
    async fn try_sources<T, F, Fut>(&self, r: &Reference, manifest: bool, f: F) -> Result<T>
    where
        F: Fn(Reference) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut candidates = self.sources.candidates(r);
        let key = (r.registry.clone(), r.repository.clone());
        if !manifest && candidates.len() > 1 {
            self.prefer_manifest_source(&key, &mut candidates);
        }
        let several = candidates.len() > 1;
        let mut failures: Vec<(String, Error)> = Vec::new();
        for c in candidates {
            let label = format!("{}/{}", c.registry, c.repository);
            let source = (c.registry.clone(), c.repository.clone());
            match f(c).await {
                Ok(v) => {
                    if manifest && several {
                        if let Ok(mut m) = self.pulled_from.lock() {
                            m.insert(key, source);
                        }
                    }
                    return Ok(v);
                }
                Err(e) => failures.push((label, e)),
            }
        }
        Err(all_failed(r, failures))
    }

    /// Moves the source that served the last manifest of `key` to the front.
    fn prefer_manifest_source(&self, key: &(String, String), candidates: &mut Vec<Reference>) {
        let preferred = self
            .pulled_from
            .lock()
            .ok()
            .and_then(|m| m.get(key).cloned());
        if let Some((reg, repo)) = preferred {
            if let Some(i) = candidates
                .iter()
                .position(|c| c.registry == reg && c.repository == repo)
            {
                let c = candidates.remove(i);
                candidates.insert(0, c);
            }
        }
    }
}

/// The error of a pull of `r` whose every source failed (see [`Pulls::try_sources`]).
fn all_failed(r: &Reference, mut failures: Vec<(String, Error)>) -> Error {
    if failures.len() == 1 {
        if let Some((_, e)) = failures.pop() {
            return e;
        }
    }
    if failures
        .iter()
        .all(|(_, e)| matches!(e, Error::NotFound { .. }))
    {
        let others: Vec<String> = failures
            .iter()
            .take(failures.len().saturating_sub(1))
            .map(|(l, _)| l.clone())
            .collect();
        if let Some((
            _,
            Error::NotFound {
                registry,
                repository,
                what,
                detail,
            },
        )) = failures.pop()
        {
            return Error::NotFound {
                registry,
                repository,
                what,
                detail: format!("{detail} (not found on {} either)", others.join(", ")),
            };
        }
    }
    Error::AllSourcesFailed {
        reference: r.to_string(),
        failures,
    }
}

/// The image manifest for `r` and `platform` from `r`'s own registry.
async fn manifest_from(
    t: &Transport,
    r: &Reference,
    platform: &Platform,
) -> Result<PulledManifest> {
    let (mt, bytes) = get_manifest_raw(t, r).await?;
    let (mt, bytes, resolved) = if media_types::is_index(&mt) {
        let child = select_platform(r, &bytes, platform)?;
        let (cmt, cbytes) = get_manifest_raw(t, &child).await?;
        if media_types::is_index(&cmt) {
            return Err(Error::UnsupportedManifest {
                reference: child.to_string(),
                reason: "nested image indexes are not supported".to_string(),
            });
        }
        (cmt, cbytes, child)
    } else {
        (mt, bytes, r.clone())
    };
    let manifest = manifest::parse_manifest(&bytes).map_err(|e| Error::InvalidManifest {
        reference: resolved.to_string(),
        reason: e.to_string(),
    })?;
    if manifest.schema_version() != 2 {
        return Err(Error::UnsupportedManifest {
            reference: resolved.to_string(),
            reason: format!("schemaVersion {} (expected 2)", manifest.schema_version()),
        });
    }
    Ok(PulledManifest {
        digest: sha256_digest(&bytes),
        media_type: MediaType::from(mt.as_str()),
        bytes,
        manifest,
    })
}

/// The reference of the image manifest for `platform` in index `bytes` of `r`.
fn select_platform(r: &Reference, bytes: &[u8], wanted: &Platform) -> Result<Reference> {
    let index = manifest::parse_index(bytes).map_err(|e| Error::InvalidManifest {
        reference: r.to_string(),
        reason: e.to_string(),
    })?;
    let entry = index.manifests().iter().find(|d| {
        d.platform()
            .as_ref()
            .is_some_and(|p| platform::matches(wanted, p))
            && (media_types::is_image_manifest(d.media_type())
                || d.media_type().as_ref().is_empty())
    });
    let Some(entry) = entry else {
        let available = index
            .manifests()
            .iter()
            .filter_map(|d| d.platform().as_ref().map(platform::name))
            .collect();
        return Err(Error::NoMatchingPlatform {
            reference: r.to_string(),
            wanted: platform::name(wanted),
            available,
        });
    };
    Ok(r.with_digest(entry.digest().as_ref()))
}

fn media_type_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Fetches a manifest or index by tag or digest; returns (media type, bytes).
async fn get_manifest_raw(t: &Transport, r: &Reference) -> Result<(String, Vec<u8>)> {
    let reference = r.tag_or_digest();
    let what = format!("manifest {reference}");
    let url = t.url(r, &format!("manifests/{reference}")).await?;
    let accept = [
        media_types::OCI_MANIFEST,
        media_types::DOCKER_MANIFEST,
        media_types::OCI_INDEX,
        media_types::DOCKER_MANIFEST_LIST,
    ]
    .join(", ");
    t.pull_policy()
        .run(|| async {
            let resp = t
                .send(r, Access::Pull, &[], &what, |c, _| {
                    Ok(c.get(url.clone()).header(ACCEPT, accept.clone()))
                })
                .await?;
            if !resp.status().is_success() {
                return Err(t.status_error(r, Access::Pull, &what, resp).await);
            }
            let header_mt = media_type_of(resp.headers());
            let bytes = t.body(r, &what, resp).await?;
            let mt = manifest_media_type(r, header_mt, &bytes)?;
            if let Some(want) = &r.digest {
                if want.starts_with("sha256:") {
                    verify(r, &format!("manifest {want}"), want, sha256_digest(&bytes))?;
                }
            }
            Ok((mt, bytes))
        })
        .await
}

/// The media type of manifest `bytes` of `r` served as `header_mt`: the one in the
/// manifest, else the header's, else guessed from its shape. Schema 1 is refused.
fn manifest_media_type(r: &Reference, header_mt: Option<String>, bytes: &[u8]) -> Result<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        schema_version: Option<u32>,
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| Error::InvalidManifest {
        reference: r.to_string(),
        reason: format!("not valid JSON: {e}"),
    })?;
    let schema1 = probe.schema_version == Some(1)
        || [&header_mt, &probe.media_type]
            .iter()
            .any(|m| m.as_deref().is_some_and(media_types::is_schema1));
    if schema1 {
        return Err(Error::UnsupportedManifest {
            reference: r.to_string(),
            reason: "docker schema 1 manifests are deprecated and not supported; re-push the image with a current docker, buildah or skopeo (schema 2 / OCI)".to_string(),
        });
    }
    let known = |m: &String| media_types::is_index(m) || media_types::is_image_manifest(m);
    Ok(probe
        .media_type
        .filter(known)
        .or(header_mt.filter(known))
        .unwrap_or_else(|| {
            if probe.manifests.is_some() {
                media_types::OCI_INDEX.to_string()
            } else {
                media_types::OCI_MANIFEST.to_string()
            }
        }))
}

/// A temporary file next to `dest`, unique in this process.
fn partial_path(dest: &Path) -> PathBuf {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "blob".into());
    dir.join(format!(
        ".{name}.partial-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Downloads blob `digest` from `r`'s own registry to `dest` via a temporary file,
/// under the pull retry policy (a corrupt download is retried too; its bytes never
/// reach `dest`).
async fn blob_to_file_from(
    t: &Transport,
    r: &Reference,
    digest: &str,
    dest: &Path,
    observer: &SharedObserver<'_>,
) -> Result<u64> {
    let tmp = partial_path(dest);
    let size = t
        .pull_policy()
        .run(|| async {
            let res = download_once(t, r, digest, &tmp, observer).await;
            if res.is_err() {
                let _ = tokio::fs::remove_file(&tmp).await;
            }
            res
        })
        .await?;
    match tokio::fs::rename(&tmp, dest).await {
        Ok(()) => Ok(size),
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            Err(Error::Io {
                path: dest.to_path_buf(),
                source: e,
            })
        }
    }
}

/// One GET of blob `digest`, failing on any non-success status.
async fn get_blob(
    t: &Transport,
    r: &Reference,
    digest: &str,
    what: &str,
) -> Result<reqwest::Response> {
    let url = t.url(r, &format!("blobs/{digest}")).await?;
    let resp = t
        .send(r, Access::Pull, &[], what, |c, _| Ok(c.get(url.clone())))
        .await?;
    if !resp.status().is_success() {
        return Err(t.status_error(r, Access::Pull, what, resp).await);
    }
    Ok(resp)
}

/// One attempt at downloading blob `digest` to `tmp`, hashing as it streams.
async fn download_once(
    t: &Transport,
    r: &Reference,
    digest: &str,
    tmp: &Path,
    observer: &SharedObserver<'_>,
) -> Result<u64> {
    observe(observer, |o| o.restart());
    let what = format!("blob {digest}");
    let resp = get_blob(t, r, digest, &what).await?;
    let io_err = |e: std::io::Error| Error::Io {
        path: tmp.to_path_buf(),
        source: e,
    };
    let file = tokio::fs::File::create(tmp).await.map_err(io_err)?;
    let mut file = tokio::io::BufWriter::with_capacity(DOWNLOAD_BUFFER, file);
    let mut hasher = Sha256Hasher::new();
    let mut transfer = Transfer::start("pull", r, digest, resp.content_length());
    let mut stream = resp.bytes_stream();
    loop {
        let chunk = match next_within(&mut stream, t.options().idle_timeout).await {
            None => return Err(t.stalled(r, &what)),
            Some(None) => break,
            Some(Some(chunk)) => chunk.map_err(|e| Transport::http_err(r, &what, e))?,
        };
        hasher.update(&chunk);
        transfer.advance(chunk.len());
        observe(observer, |o| o.update(&chunk));
        file.write_all(&chunk).await.map_err(io_err)?;
    }
    file.flush().await.map_err(io_err)?;
    file.get_ref().sync_all().await.map_err(io_err)?;
    drop(file);
    let (actual, size) = hasher.finish();
    verify(r, &what, digest, actual)?;
    Ok(size)
}

/// Downloads blob `digest` from `r`'s own registry into memory, under the pull retry
/// policy.
async fn blob_bytes_from(t: &Transport, r: &Reference, digest: &str) -> Result<Vec<u8>> {
    let what = format!("blob {digest}");
    t.pull_policy()
        .run(|| async {
            let resp = get_blob(t, r, digest, &what).await?;
            let bytes = t.body(r, &what, resp).await?;
            verify(r, &what, digest, sha256_digest(&bytes))?;
            Ok(bytes)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn r() -> Reference {
        Reference::parse("127.0.0.1:5000/app:1").unwrap()
    }

    #[test]
    fn schema1_manifests_are_refused_with_a_clear_error() {
        let by_version = br#"{"schemaVersion":1,"name":"app","fsLayers":[]}"#;
        let by_header = Some(media_types::DOCKER_SCHEMA1_SIGNED.to_string());
        for (header, bytes) in [(None, &by_version[..]), (by_header, b"{}")] {
            let err = manifest_media_type(&r(), header, bytes).unwrap_err();
            assert!(matches!(err, Error::UnsupportedManifest { .. }), "{err}");
            assert!(err.to_string().contains("schema 1"), "{err}");
        }
    }

    #[test]
    fn media_types_come_from_the_manifest_the_header_or_its_shape() {
        let list = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#;
        let mt = manifest_media_type(&r(), None, list).unwrap();
        assert_eq!(mt, media_types::DOCKER_MANIFEST_LIST);
        let header = Some(media_types::DOCKER_MANIFEST.to_string());
        let mt = manifest_media_type(&r(), header, br#"{"schemaVersion":2}"#).unwrap();
        assert_eq!(mt, media_types::DOCKER_MANIFEST);
        let shaped = manifest_media_type(&r(), None, br#"{"manifests":[]}"#).unwrap();
        assert_eq!(shaped, media_types::OCI_INDEX);
    }

    #[test]
    fn a_docker_manifest_list_resolves_to_the_wanted_platform() {
        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"{A}","size":1,"platform":{{"architecture":"arm64","os":"linux"}}}}]}}"#
        );
        let want = platform::platform("linux", "arm64", Some("v8"));
        let child = select_platform(&r(), list.as_bytes(), &want).unwrap();
        assert_eq!(child.digest.as_deref(), Some(A));
        let err = select_platform(&r(), list.as_bytes(), &platform::linux_amd64()).unwrap_err();
        assert!(err.to_string().contains("linux/arm64"), "{err}");
        let bad = list.replace(A, "sha256:AB");
        let err = select_platform(&r(), bad.as_bytes(), &want).unwrap_err();
        assert!(matches!(err, Error::InvalidManifest { .. }), "{err}");
        assert!(err.to_string().contains("manifests[0]"), "{err}");
    }
}
