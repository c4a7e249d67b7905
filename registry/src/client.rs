//! The registry client: the [`Client`] type, whose methods hand pulls to `pull`,
//! pushes to `push` and HTTP to `transport`.

use std::path::Path;
use std::sync::Arc;

use crate::error::Result;
use crate::pull::{NoObserver, Pulls};
use crate::push;
use crate::reference::Reference;
use crate::transport::Transport;
use ocibuild_image::platform::Platform;

pub use crate::digest::sha256_digest;
pub use crate::options::ClientOptions;
pub use crate::pull::{BlobObserver, PulledManifest};

struct Inner {
    /// Options, HTTP clients, tokens, schemes.
    transport: Transport,
    /// Mirrors, registry map and where each pulled repository came from.
    pulls: Pulls,
}

/// A cheap-to-clone registry client.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("opts", self.options())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Creates a client.
    ///
    /// Reads the CA and client certificate files named in `opts` and checks the mirror
    /// and registry map entries: an unreadable or invalid file is an
    /// [`Error::TlsConfig`](crate::Error::TlsConfig), a malformed entry an
    /// [`Error::ClientSetup`](crate::Error::ClientSetup).
    pub fn new(opts: ClientOptions) -> Result<Client> {
        let transport = Transport::new(opts)?;
        let pulls = Pulls::new(transport.options())?;
        Ok(Client {
            inner: Arc::new(Inner { transport, pulls }),
        })
    }

    /// The options this client was created with.
    pub fn options(&self) -> &ClientOptions {
        self.inner.transport.options()
    }

    fn transport(&self) -> &Transport {
        &self.inner.transport
    }

    /// The references a pull of `r` tries, in order: its registry map entries and (for
    /// docker hub) mirrors, then `r` itself unless
    /// [`ClientOptions::skip_default_registry_fallback`] is set. Just `r` when nothing
    /// replaces its registry.
    pub fn pull_sources(&self, r: &Reference) -> Vec<Reference> {
        self.inner.pulls.candidates(r)
    }

    /// Pulls the image manifest for `r`, resolving an index / manifest list to the
    /// entry for `platform`.
    ///
    /// With mirrors or registry map entries for `r`'s registry, each source is tried in
    /// turn (see [`Client::pull_sources`]); the blobs of `r` are then pulled from the
    /// source that served the manifest first. When every source fails: the last
    /// [`Error::NotFound`](crate::Error::NotFound) (its detail naming the other sources)
    /// if all were not found, else [`Error::AllSourcesFailed`](crate::Error::AllSourcesFailed).
    pub async fn pull_manifest(
        &self,
        r: &Reference,
        platform: &Platform,
    ) -> Result<PulledManifest> {
        self.inner
            .pulls
            .manifest(self.transport(), r, platform)
            .await
    }

    /// Downloads blob `digest` to `dest` (via a temp file next to it), verifying sha256.
    /// Returns the size in bytes. Uses `r`'s mirrors / registry map like
    /// [`Client::pull_manifest`].
    pub async fn pull_blob_to_file(&self, r: &Reference, digest: &str, dest: &Path) -> Result<u64> {
        self.pull_blob_to_file_observed(r, digest, dest, &mut NoObserver)
            .await
    }

    /// Like [`Client::pull_blob_to_file`], also passing every downloaded byte to
    /// `observer` in the same pass (for instance to hash the uncompressed content). Each
    /// new attempt (a retry, another mirror) first calls [`BlobObserver::restart`].
    pub async fn pull_blob_to_file_observed(
        &self,
        r: &Reference,
        digest: &str,
        dest: &Path,
        observer: &mut (dyn BlobObserver + Send),
    ) -> Result<u64> {
        let t = self.transport();
        self.inner
            .pulls
            .blob_to_file(t, r, digest, dest, observer)
            .await
    }

    /// Downloads a small blob (e.g. an image config) into memory, verifying sha256.
    /// Uses `r`'s mirrors / registry map like [`Client::pull_manifest`].
    pub async fn pull_blob_bytes(&self, r: &Reference, digest: &str) -> Result<Vec<u8>> {
        self.inner
            .pulls
            .blob_bytes(self.transport(), r, digest)
            .await
    }

    /// Whether blob `digest` exists in the repository (HEAD).
    pub async fn blob_exists(&self, r: &Reference, digest: &str) -> Result<bool> {
        push::blob_exists(self.transport(), r, digest).await
    }

    /// Cross-repository mount of `digest` from `from_repository` (same registry) into
    /// `target`. Returns `true` when mounted (201), `false` when the registry started a
    /// regular upload instead (that upload is cancelled).
    pub async fn mount_blob(
        &self,
        target: &Reference,
        from_repository: &str,
        digest: &str,
    ) -> Result<bool> {
        push::mount_blob(self.transport(), target, from_repository, digest).await
    }

    /// Uploads the file at `path` as blob `digest`, streaming it from disk.
    pub async fn push_blob_file(&self, r: &Reference, digest: &str, path: &Path) -> Result<()> {
        push::push_blob_file(self.transport(), r, digest, path).await
    }

    /// Uploads in-memory `bytes` as blob `digest` (the digest is checked first).
    pub async fn push_blob_bytes(&self, r: &Reference, digest: &str, bytes: Vec<u8>) -> Result<()> {
        push::push_blob_bytes(self.transport(), r, digest, bytes).await
    }

    /// Pushes a manifest or index under `r`'s tag (or digest); returns its digest.
    pub async fn push_manifest(
        &self,
        r: &Reference,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String> {
        push::push_manifest(self.transport(), r, media_type, bytes).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::error::Error;
    use ocibuild_image::manifest::media_types;

    /// A one-request-per-connection HTTP server answering manifest PUTs with 503
    /// `failures` times, then 201. Returns its address and the PUT counter.
    async fn flaky_registry(
        failures: usize,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::AtomicUsize;
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let puts = Arc::new(AtomicUsize::new(0));
        let counter = puts.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let status = if head.starts_with("PUT ") {
                        let n = counter.fetch_add(1, Ordering::SeqCst);
                        if n < failures {
                            "503 Service Unavailable"
                        } else {
                            "201 Created"
                        }
                    } else {
                        "404 Not Found"
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        (addr, puts)
    }

    #[tokio::test]
    async fn pushes_honour_push_retries() {
        let push = |addr: String, retries: u32, push_retries: u32| async move {
            let c = Client::new(ClientOptions {
                insecure_registries: vec![addr.clone()],
                retries,
                push_retries,
                ..Default::default()
            })
            .unwrap();
            let r = Reference::parse(&format!("{addr}/a:1")).unwrap();
            c.push_manifest(&r, media_types::OCI_MANIFEST, b"{}").await
        };
        // Two failures: push_retries 2 beats retries 0.
        let (addr, puts) = flaky_registry(2).await;
        push(addr, 0, 2).await.expect("third attempt succeeds");
        assert_eq!(puts.load(Ordering::SeqCst), 3);
        // One extra attempt is not enough.
        let (addr, puts) = flaky_registry(2).await;
        let e = push(addr, 0, 1).await.expect_err("two attempts fail");
        assert!(matches!(e, Error::Status { status: 503, .. }), "{e}");
        assert_eq!(puts.load(Ordering::SeqCst), 2);
        // The general retry count still applies when it is larger.
        let (addr, puts) = flaky_registry(1).await;
        push(addr, 1, 0).await.expect("second attempt succeeds");
        assert_eq!(puts.load(Ordering::SeqCst), 2);
        assert_eq!(ClientOptions::default().push_retries, 0);
    }
}
