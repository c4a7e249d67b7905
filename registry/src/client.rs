//! The registry client: the [`Client`] type, whose methods hand pulls to `pull`,
//! pushes to `push` and HTTP to `transport`.

use std::path::Path;
use std::sync::Arc;

use crate::error::Result;
use crate::pull::{NoObserver, Pulls};
use crate::push;
use crate::reference::Reference;
use crate::token::Access;
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
        push::blob_exists(self.transport(), r, digest, Access::Pull).await
    }

    /// Whether blob `digest` exists in a repository being pushed to: like
    /// [`Client::blob_exists`], but asked with push access, so that credentials that may
    /// not push fail here, before any upload, with an error that says so; retried like
    /// the other push requests.
    pub async fn blob_exists_for_push(&self, r: &Reference, digest: &str) -> Result<bool> {
        push::blob_exists(self.transport(), r, digest, Access::Push).await
    }

    /// Checks, as kaniko does before a build, that `r`'s repository can be pushed to with
    /// this client's credentials: starts a blob upload there and cancels it. Fails as a
    /// push would: [`Error::Http`](crate::Error::Http) when the registry cannot be
    /// reached, [`Error::Unauthorized`](crate::Error::Unauthorized) or
    /// [`Error::Denied`](crate::Error::Denied) when the credentials are missing, rejected
    /// or may not push.
    pub async fn check_push_permission(&self, r: &Reference) -> Result<()> {
        push::check_push_permission(self.transport(), r).await
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
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::auth::DockerConfig;
    use crate::digest::sha256_digest;
    use crate::error::Error;
    use ocibuild_image::manifest::media_types;

    /// What the scripted registry does with a request.
    enum Reply {
        /// Answers this status with these extra header lines and no body.
        Status(u16, &'static str),
        /// Answers 200 with this body.
        Body(Vec<u8>),
        /// Reads the request and never answers.
        Stall,
        /// Closes the connection without answering.
        Close,
        /// Answers 200 with the head of this body (its full length announced) and closes.
        Cut(Vec<u8>),
    }

    /// The requests a scripted registry got: `METHOD PATH` each.
    type Seen = Arc<Mutex<Vec<String>>>;

    /// Reads one request (head and `Content-Length` body) from `sock`; returns its
    /// request line, or `None` when the connection ends first.
    async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<String> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            let n = sock.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
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
            let n = sock.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
            buf.extend_from_slice(&chunk[..n]);
        }
        head.lines().next().map(str::to_string)
    }

    /// A one-request-per-connection HTTP server answering request `n` (counted from 0)
    /// with `script(n, "METHOD PATH")`. Returns its address and the requests seen.
    async fn scripted_registry(
        script: impl Fn(usize, &str) -> Reply + Send + Sync + 'static,
    ) -> (String, Seen) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen: Seen = Arc::default();
        let log = seen.clone();
        let script = Arc::new(script);
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (log, script) = (log.clone(), script.clone());
                tokio::spawn(async move {
                    let Some(line) = read_request(&mut sock).await else {
                        return;
                    };
                    let request = line.rsplit_once(' ').map_or(&*line, |(r, _)| r).to_string();
                    let n = {
                        let mut log = log.lock().unwrap();
                        log.push(request.clone());
                        log.len() - 1
                    };
                    let (status, headers, body, cut) = match script(n, &request) {
                        Reply::Status(s, h) => (s, h, Vec::new(), None),
                        Reply::Body(b) => (200, "", b, None),
                        Reply::Cut(b) => (200, "", b.clone(), Some(b.len() / 2)),
                        Reply::Stall => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            return;
                        }
                        Reply::Close => return,
                    };
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(&body[..cut.unwrap_or(body.len())]).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        (addr, seen)
    }

    /// A client of the scripted registry at `addr` (plain HTTP) with `opts`.
    fn client(addr: &str, opts: ClientOptions) -> (Client, Reference) {
        let c = Client::new(ClientOptions {
            insecure_registries: vec![addr.to_string()],
            ..opts
        })
        .unwrap();
        (c, Reference::parse(&format!("{addr}/a:1")).unwrap())
    }

    /// How many requests in `seen` start with `prefix`.
    fn count(seen: &Seen, prefix: &str) -> usize {
        let seen = seen.lock().unwrap();
        seen.iter().filter(|r| r.starts_with(prefix)).count()
    }

    const BLOB: &[u8] = b"the layer's bytes, served once corrupt";

    #[tokio::test]
    async fn pushes_honour_push_retries() {
        let flaky = |failures: usize| {
            scripted_registry(move |n, _| match n < failures {
                true => Reply::Status(503, ""),
                false => Reply::Status(201, ""),
            })
        };
        let push = |addr: String, retries: u32, push_retries: Option<u32>| async move {
            let opts = ClientOptions {
                retries,
                push_retries,
                ..Default::default()
            };
            let (c, r) = client(&addr, opts);
            c.push_manifest(&r, media_types::OCI_MANIFEST, b"{}").await
        };
        // Two failures: push_retries 2 beats retries 0.
        let (addr, seen) = flaky(2).await;
        push(addr, 0, Some(2))
            .await
            .expect("third attempt succeeds");
        assert_eq!(count(&seen, "PUT"), 3);
        // One retry is one retry, however large the general count.
        let (addr, seen) = flaky(2).await;
        let e = push(addr, 5, Some(1)).await.expect_err("two attempts fail");
        assert!(matches!(e, Error::Status { status: 503, .. }), "{e}");
        assert_eq!(count(&seen, "PUT"), 2);
        // Without push_retries the general count applies.
        let (addr, seen) = flaky(1).await;
        push(addr, 1, None).await.expect("second attempt succeeds");
        assert_eq!(count(&seen, "PUT"), 2);
        assert_eq!(ClientOptions::default().push_retries, None);
    }

    #[tokio::test]
    async fn n_download_retries_make_n_plus_one_attempts_not_their_square() {
        for (retries, pull_retries, attempts) in [(3, None, 4), (3, Some(1), 2), (0, Some(0), 1)] {
            let (addr, seen) = scripted_registry(|_, _| Reply::Status(500, "")).await;
            let opts = ClientOptions {
                retries,
                pull_retries,
                ..Default::default()
            };
            let (c, r) = client(&addr, opts);
            let dir = tempfile::tempdir().unwrap();
            let e = c
                .pull_blob_to_file(&r, &sha256_digest(BLOB), &dir.path().join("b"))
                .await
                .unwrap_err();
            assert!(matches!(e, Error::Status { status: 500, .. }), "{e}");
            assert_eq!(count(&seen, "GET"), attempts, "{retries} {pull_retries:?}");
        }
    }

    #[tokio::test]
    async fn a_corrupt_download_is_retried_and_never_lands() {
        let script = |n: usize, _: &str| {
            let mut body = BLOB.to_vec();
            if n == 0 {
                body[7] ^= 0x20;
            }
            Reply::Body(body)
        };
        let (addr, seen) = scripted_registry(script).await;
        let (c, r) = client(&addr, ClientOptions::default());
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("b");
        let digest = sha256_digest(BLOB);
        assert_eq!(
            c.pull_blob_to_file(&r, &digest, &dest).await.unwrap(),
            BLOB.len() as u64
        );
        assert_eq!(std::fs::read(&dest).unwrap(), BLOB);
        assert_eq!(count(&seen, "GET"), 2);
        assert_eq!(c.pull_blob_bytes(&r, &digest).await.unwrap(), BLOB);

        // Without retries it fails; nothing is left behind, not even the partial file.
        let (addr, _) = scripted_registry(|_, _| Reply::Body(b"corrupt".to_vec())).await;
        let no_retries = ClientOptions {
            retries: 0,
            ..Default::default()
        };
        let (c, r) = client(&addr, no_retries);
        let e = c
            .pull_blob_to_file(&r, &digest, &dest.with_extension("x"))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("b")]);
    }

    #[tokio::test]
    async fn a_registry_that_stops_answering_times_out_and_is_retried() {
        let idle = Duration::from_millis(300);
        let script = |n: usize, _: &str| match n {
            0 => Reply::Stall,
            _ => Reply::Body(BLOB.to_vec()),
        };
        let (addr, seen) = scripted_registry(script).await;
        let opts = ClientOptions {
            idle_timeout: idle,
            ..Default::default()
        };
        let (c, r) = client(&addr, opts.clone());
        let start = Instant::now();
        assert_eq!(
            c.pull_blob_bytes(&r, &sha256_digest(BLOB)).await.unwrap(),
            BLOB
        );
        assert!(start.elapsed() >= idle, "{:?}", start.elapsed());
        assert_eq!(count(&seen, "GET"), 2);

        // Stalled for good: every attempt times out, then the request fails, saying so.
        let (addr, seen) = scripted_registry(|_, _| Reply::Stall).await;
        let (c, r) = client(&addr, ClientOptions { retries: 1, ..opts });
        let start = Instant::now();
        let e = c
            .pull_blob_bytes(&r, &sha256_digest(BLOB))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
        assert!(e.to_string().contains("--registry-timeout"), "{e}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(count(&seen, "GET"), 2);
    }

    #[tokio::test]
    async fn retry_after_is_honoured() {
        let script = |n: usize, _: &str| match n {
            0 => Reply::Status(429, "Retry-After: 1\r\n"),
            _ => Reply::Body(BLOB.to_vec()),
        };
        let (addr, seen) = scripted_registry(script).await;
        let (c, r) = client(&addr, ClientOptions::default());
        let start = Instant::now();
        c.pull_blob_bytes(&r, &sha256_digest(BLOB)).await.unwrap();
        assert!(
            start.elapsed() >= Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(count(&seen, "GET"), 2);
    }

    #[tokio::test]
    async fn a_broken_plain_http_connection_is_retried_and_does_not_suggest_plain_http() {
        for broken in [|| Reply::Close, || Reply::Cut(BLOB.to_vec())] {
            let (addr, seen) = scripted_registry(move |_, _| broken()).await;
            let opts = ClientOptions {
                retries: 1,
                ..Default::default()
            };
            let (c, r) = client(&addr, opts);
            let dir = tempfile::tempdir().unwrap();
            let digest = sha256_digest(BLOB);
            let e = c
                .pull_blob_to_file(&r, &digest, &dir.path().join("b"))
                .await
                .unwrap_err();
            assert!(matches!(e, Error::Http { .. }), "{e}");
            assert!(!e.to_string().contains("--insecure"), "{e}");
            assert_eq!(count(&seen, "GET"), 2, "retried: {e}");
            let e = c.pull_blob_bytes(&r, &digest).await.unwrap_err();
            assert!(matches!(e, Error::Http { .. }), "{e}");
            assert_eq!(count(&seen, "GET"), 4, "retried: {e}");
        }
    }

    #[tokio::test]
    async fn a_401_during_a_push_names_the_push_permission() {
        let (addr, seen) =
            scripted_registry(|_, _| Reply::Status(401, "WWW-Authenticate: Basic realm=\"x\"\r\n"))
                .await;
        let config = format!(r#"{{"auths":{{"{addr}":{{"username":"u","password":"p"}}}}}}"#);
        let opts = ClientOptions {
            docker_config: DockerConfig::from_json(&config, None).unwrap(),
            ..Default::default()
        };
        let (c, r) = client(&addr, opts);
        let e = c
            .blob_exists_for_push(&r, &sha256_digest(BLOB))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Unauthorized { .. }), "{e}");
        assert!(e.to_string().contains("lack permission to push to"), "{e}");
        let e = c
            .push_blob_bytes(&r, &sha256_digest(BLOB), BLOB.to_vec())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("lack permission to push to"), "{e}");
        let e = c
            .push_manifest(&r, media_types::OCI_MANIFEST, b"{}")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("lack permission to push to"), "{e}");
        // Two requests each (without and with the credentials), none retried.
        assert_eq!(count(&seen, "HEAD"), 2);
        assert_eq!(count(&seen, "POST"), 2);
        assert_eq!(count(&seen, "PUT"), 2);
        // Pulls say pull.
        let e = c
            .pull_blob_bytes(&r, &sha256_digest(BLOB))
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("lack permission to pull from"),
            "{e}"
        );
    }
    #[tokio::test]
    async fn the_push_permission_check_starts_an_upload_and_cancels_it() {
        let script = |_: usize, request: &str| match request {
            "POST /v2/a/blobs/uploads/" => {
                Reply::Status(202, "Location: /v2/a/blobs/uploads/session-1\r\n")
            }
            _ => Reply::Status(204, ""),
        };
        let (addr, seen) = scripted_registry(script).await;
        let (c, r) = client(&addr, ClientOptions::default());
        c.check_push_permission(&r).await.unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "POST /v2/a/blobs/uploads/",
                "DELETE /v2/a/blobs/uploads/session-1"
            ]
        );

        // Without credentials for a registry that wants them: the error says push.
        let challenge = "WWW-Authenticate: Basic realm=\"x\"\r\n";
        let (addr, seen) = scripted_registry(move |_, _| Reply::Status(401, challenge)).await;
        let (c, r) = client(&addr, ClientOptions::default());
        let e = c.check_push_permission(&r).await.unwrap_err();
        assert!(matches!(e, Error::Unauthorized { .. }), "{e}");
        assert!(e.to_string().contains("wants them to push to"), "{e}");
        assert_eq!(count(&seen, "POST"), 1, "not retried");

        // A registry that refuses the push: 403, not retried.
        let (addr, seen) = scripted_registry(|_, _| Reply::Status(403, "")).await;
        let (c, r) = client(&addr, ClientOptions::default());
        let e = c.check_push_permission(&r).await.unwrap_err();
        assert!(matches!(e, Error::Denied { .. }), "{e}");
        assert_eq!(count(&seen, "POST"), 1, "not retried");
    }
}
