//! The registry HTTP client: pull/push of manifests and blobs with auth and retries.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use crate::auth::Credential;
use crate::error::{Error, Result};
use crate::manifest::{media_types, ImageIndex, ImageManifest, Platform};
use crate::mirror::PullSources;
use crate::reference::{validate_digest, Reference};
use crate::tls::{tls_failure, tls_hint, HttpClients};

pub use crate::options::ClientOptions;

/// An image manifest fetched from a registry (after resolving an index, if any).
#[derive(Debug, Clone)]
pub struct PulledManifest {
    /// Digest of `bytes` (`sha256:<hex>`).
    pub digest: String,
    /// Media type of the image manifest.
    pub media_type: String,
    /// The manifest exactly as served.
    pub bytes: Vec<u8>,
    /// The parsed manifest.
    pub manifest: ImageManifest,
}

/// Access a request needs; determines the token scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Pull,
    Push,
}

impl Access {
    fn actions(self) -> &'static str {
        match self {
            Access::Pull => "pull",
            Access::Push => "pull,push",
        }
    }
    fn verb(self) -> &'static str {
        match self {
            Access::Pull => "pull from",
            Access::Push => "push to",
        }
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    /// Lower-cased scheme (`bearer`, `basic`).
    pub scheme: String,
    /// Parameters with lower-cased keys.
    pub params: HashMap<String, String>,
}

/// Parses a `WWW-Authenticate` header value into challenges.
pub(crate) fn parse_www_authenticate(value: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let chars: Vec<char> = value.chars().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && (chars[*i].is_whitespace() || chars[*i] == ',') {
            *i += 1;
        }
    };
    let is_token = |c: char| !c.is_whitespace() && c != ',' && c != '=' && c != '"';
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            break;
        }
        let start = i;
        while i < chars.len() && is_token(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        if word.is_empty() {
            i += 1;
            continue;
        }
        // Look ahead: `word=` is a parameter of the current challenge, else a new scheme.
        let mut j = i;
        while j < chars.len() && chars[j] == ' ' {
            j += 1;
        }
        if j < chars.len() && chars[j] == '=' && !out.is_empty() {
            i = j + 1;
            while i < chars.len() && chars[i] == ' ' {
                i += 1;
            }
            let mut val = String::new();
            if i < chars.len() && chars[i] == '"' {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        i += 1;
                    }
                    val.push(chars[i]);
                    i += 1;
                }
                i += 1;
            } else {
                while i < chars.len() && chars[i] != ',' {
                    val.push(chars[i]);
                    i += 1;
                }
                val = val.trim().to_string();
            }
            if let Some(last) = out.last_mut() {
                last.params.insert(word.to_ascii_lowercase(), val);
            }
        } else {
            out.push(Challenge {
                scheme: word.to_ascii_lowercase(),
                params: HashMap::new(),
            });
        }
    }
    out
}

/// Sees a blob's bytes while [`Client::pull_blob_to_file_observed`] downloads it.
pub trait BlobObserver {
    /// A new download attempt starts: forget the bytes seen so far.
    fn restart(&mut self);
    /// The next bytes of the blob.
    fn update(&mut self, bytes: &[u8]);
}

/// The observer of a plain download.
struct NoObserver;

impl BlobObserver for NoObserver {
    fn restart(&mut self) {}
    fn update(&mut self, _bytes: &[u8]) {}
}

/// Runs `f` on the observer behind `observer` (a poisoned lock is still usable: the
/// observer restarts with the next attempt).
fn observe(
    observer: &Mutex<&mut (dyn BlobObserver + Send)>,
    f: impl FnOnce(&mut (dyn BlobObserver + Send)),
) {
    let mut guard = observer.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut **guard);
}

/// sha256 digest string of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn check_sha256(digest: &str) -> Result<()> {
    validate_digest(digest).map_err(|reason| Error::InvalidDigest {
        digest: digest.to_string(),
        reason,
    })?;
    if !digest.starts_with("sha256:") {
        return Err(Error::InvalidDigest {
            digest: digest.to_string(),
            reason: "only sha256 digests are supported".to_string(),
        });
    }
    Ok(())
}

fn media_type_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Extracts a readable detail from a registry error body (`{"errors":[{code,message}]}`).
fn error_detail(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct E {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    #[derive(serde::Deserialize)]
    struct Errs {
        errors: Vec<E>,
    }
    if let Ok(e) = serde_json::from_str::<Errs>(body) {
        let parts: Vec<String> = e
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect();
        if !parts.is_empty() {
            return format!(": {}", parts.join("; "));
        }
    }
    let t = body.trim();
    if t.is_empty() {
        String::new()
    } else {
        let short: String = t.chars().take(300).collect();
        format!(": {short}")
    }
}

struct Inner {
    /// HTTP clients per TLS configuration.
    http: HttpClients,
    /// Mirrors and registry map.
    sources: PullSources,
    /// For a pulled (registry, repository): the (registry, repository) of the source
    /// that served its last manifest; tried first for its blobs.
    pulled_from: Mutex<HashMap<(String, String), (String, String)>>,
    opts: ClientOptions,
    /// Authorization header values per (registry, scope key).
    tokens: Mutex<HashMap<(String, String), String>>,
    /// The scheme found to work for each loopback registry (see [`Client::scheme`]).
    schemes: Mutex<HashMap<String, &'static str>>,
}

/// A cheap-to-clone registry client.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("opts", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

/// True for `localhost`, `127.0.0.0/8` and `::1` hosts (with or without a port).
fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);
const BASIC_SCOPE: &str = "*basic*";

impl Client {
    /// Creates a client.
    ///
    /// Reads the CA and client certificate files named in `opts` and checks the mirror
    /// and registry map entries: an unreadable or invalid file is an
    /// [`Error::TlsConfig`], a malformed entry an [`Error::ClientSetup`].
    pub fn new(opts: ClientOptions) -> Result<Client> {
        let http = HttpClients::new(&opts)?;
        let sources = PullSources::new(&opts)?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                sources,
                pulled_from: Mutex::new(HashMap::new()),
                opts,
                tokens: Mutex::new(HashMap::new()),
                schemes: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The options this client was created with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.opts
    }

    /// The references a pull of `r` tries, in order: its registry map entries and (for
    /// docker hub) mirrors, then `r` itself unless
    /// [`ClientOptions::skip_default_registry_fallback`] is set. Just `r` when nothing
    /// replaces its registry.
    pub fn pull_sources(&self, r: &Reference) -> Vec<Reference> {
        self.inner.sources.candidates(r)
    }

    /// The HTTP client with `r`'s registry's TLS configuration.
    fn http_for(&self, r: &Reference) -> &reqwest::Client {
        self.inner.http.for_registry(&r.registry, r.api_host())
    }

    /// Retries allowed for push requests.
    fn push_retry_limit(&self) -> u32 {
        self.inner.opts.retries.max(self.inner.opts.push_retries)
    }

    /// The scheme to use with `r`'s registry: plain http when it is marked insecure; for a
    /// loopback registry (`localhost`, `127.0.0.0/8`, `::1`) https when it answers https and
    /// http otherwise, as Docker and go-containerregistry treat local registries; https
    /// for everything else.
    async fn scheme(&self, r: &Reference) -> &'static str {
        let o = &self.inner.opts;
        if o.insecure_all
            || o.insecure_registries
                .iter()
                .any(|x| x == &r.registry || x == r.api_host())
        {
            return "http";
        }
        if !is_loopback(r.api_host()) {
            return "https";
        }
        if let Some(s) = self
            .inner
            .schemes
            .lock()
            .ok()
            .and_then(|m| m.get(&r.registry).copied())
        {
            return s;
        }
        let ping = |scheme: &str| format!("{scheme}://{}/v2/", r.api_host());
        let http = self.http_for(r);
        let scheme = match http.get(ping("https")).send().await {
            Ok(_) => "https",
            Err(e) => {
                // A registry answering plain http is used over http, as is a host that
                // answers neither. A host that answers plain http but not like a registry
                // (a TLS server answers plain requests with 400) or whose https attempt
                // failed in TLS stays on https, so that the real request reports the TLS
                // problem instead of a confusing HTTP error.
                match http.get(ping("http")).send().await.map(|r| r.status()) {
                    Ok(s)
                        if s.is_success()
                            || s == StatusCode::UNAUTHORIZED
                            || s == StatusCode::FORBIDDEN
                            || s == StatusCode::NOT_FOUND =>
                    {
                        "http"
                    }
                    Ok(_) => "https",
                    Err(_) if tls_failure(&e).is_some() => "https",
                    Err(_) => "http",
                }
            }
        };
        if let Ok(mut m) = self.inner.schemes.lock() {
            m.insert(r.registry.clone(), scheme);
        }
        scheme
    }

    async fn url(&self, r: &Reference, tail: &str) -> Result<Url> {
        let s = format!(
            "{}://{}/v2/{}/{}",
            self.scheme(r).await,
            r.api_host(),
            r.repository,
            tail
        );
        Url::parse(&s).map_err(|e| Error::InvalidReference {
            input: r.to_string(),
            reason: format!("cannot build URL {s}: {e}"),
        })
    }

    fn scope_key(r: &Reference, access: Access, extra: &[String]) -> Vec<String> {
        let mut scopes = vec![format!("repository:{}:{}", r.repository, access.actions())];
        scopes.extend(extra.iter().cloned());
        scopes
    }

    fn cached_auth(&self, registry: &str, scopes: &[String]) -> Option<String> {
        let t = self.inner.tokens.lock().ok()?;
        t.get(&(registry.to_string(), scopes.join(" ")))
            .or_else(|| t.get(&(registry.to_string(), BASIC_SCOPE.to_string())))
            .cloned()
    }

    fn store_auth(&self, registry: &str, scope: &str, value: String) {
        if let Ok(mut t) = self.inner.tokens.lock() {
            t.insert((registry.to_string(), scope.to_string()), value);
        }
    }

    async fn credential(&self, registry: &str) -> Result<Option<Credential>> {
        let cfg = self.inner.opts.docker_config.clone();
        let reg = registry.to_string();
        match tokio::task::spawn_blocking(move || cfg.credential_for(&reg)).await {
            Ok(r) => r,
            Err(e) => Err(Error::CredentialHelper {
                helper: "(lookup)".into(),
                server: registry.to_string(),
                reason: format!("credential lookup task failed: {e}"),
            }),
        }
    }

    fn http_err(r: &Reference, what: &str, e: reqwest::Error) -> Error {
        if e.url().map(|u| u.scheme() == "https").unwrap_or(true) {
            if let Some(reason) = tls_failure(&e) {
                return Error::Tls {
                    registry: r.registry.clone(),
                    repository: r.repository.clone(),
                    what: what.to_string(),
                    hint: tls_hint(&r.registry, &reason),
                    reason,
                };
            }
        }
        Error::Http {
            registry: r.registry.clone(),
            repository: r.repository.clone(),
            what: what.to_string(),
            source: e,
        }
    }

    fn unauthorized(&self, r: &Reference, had_credential: bool, access: Access) -> Error {
        let loc = self.inner.opts.docker_config.describe_location();
        let hint = if had_credential {
            format!(
                "the credentials for {} in {loc} were rejected or lack permission to {} this repository; run `docker login {}` again",
                r.registry,
                access.actions(),
                r.registry
            )
        } else {
            format!(
                "no credentials found in {loc}; run `docker login {}` or set DOCKER_CONFIG",
                r.registry
            )
        };
        Error::Unauthorized {
            registry: r.registry.clone(),
            repository: r.repository.clone(),
            hint,
        }
    }

    /// Handles a 401: obtains and caches an Authorization value. Returns whether a
    /// credential from the docker config was used.
    async fn authenticate(
        &self,
        r: &Reference,
        access: Access,
        scopes: &[String],
        headers: &HeaderMap,
    ) -> Result<bool> {
        let challenges: Vec<Challenge> = headers
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_www_authenticate)
            .collect();
        let cred = self.credential(&r.registry).await?;
        let had = cred.is_some();
        if let Some(ch) = challenges.iter().find(|c| c.scheme == "bearer") {
            let token = self.fetch_token(r, ch, scopes, cred.as_ref()).await?;
            self.store_auth(&r.registry, &scopes.join(" "), format!("Bearer {token}"));
            return Ok(had);
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            match cred {
                Some(Credential::Basic { username, password }) => {
                    let v = base64::engine::general_purpose::STANDARD
                        .encode(format!("{username}:{password}"));
                    self.store_auth(&r.registry, BASIC_SCOPE, format!("Basic {v}"));
                    return Ok(true);
                }
                Some(Credential::IdentityToken(_)) => {
                    return Err(Error::Unauthorized {
                        registry: r.registry.clone(),
                        repository: r.repository.clone(),
                        hint: format!(
                            "the registry wants basic auth but {} only has an identity token for it; run `docker login {}` with a username and password",
                            self.inner.opts.docker_config.describe_location(),
                            r.registry
                        ),
                    });
                }
                None => return Err(self.unauthorized(r, false, access)),
            }
        }
        Err(Error::Unauthorized {
            registry: r.registry.clone(),
            repository: r.repository.clone(),
            hint: format!(
                "the registry sent no usable WWW-Authenticate challenge ({:?})",
                headers.get(reqwest::header::WWW_AUTHENTICATE)
            ),
        })
    }

    async fn fetch_token(
        &self,
        r: &Reference,
        ch: &Challenge,
        scopes: &[String],
        cred: Option<&Credential>,
    ) -> Result<String> {
        let realm = ch.params.get("realm").cloned().unwrap_or_default();
        let terr = |reason: String| Error::Token {
            registry: r.registry.clone(),
            repository: r.repository.clone(),
            realm: realm.clone(),
            reason,
        };
        let realm_url = Url::parse(&realm)
            .map_err(|e| terr(format!("the challenge has no valid realm URL ({e})")))?;
        let service = ch.params.get("service").cloned();
        let mut all_scopes: Vec<String> = scopes.to_vec();
        if let Some(s) = ch.params.get("scope") {
            for s in s.split(' ') {
                if !s.is_empty() && !all_scopes.iter().any(|x| x == s) {
                    all_scopes.push(s.to_string());
                }
            }
        }
        let mut attempt = 0u32;
        loop {
            let req = match cred {
                Some(Credential::IdentityToken(tok)) => {
                    let mut form: Vec<(&str, String)> = vec![
                        ("grant_type", "refresh_token".into()),
                        ("refresh_token", tok.clone()),
                        ("client_id", "ocibuild".into()),
                    ];
                    if let Some(s) = &service {
                        form.push(("service", s.clone()));
                    }
                    form.push(("scope", all_scopes.join(" ")));
                    self.http_for(r).post(realm_url.clone()).form(&form)
                }
                other => {
                    let mut q: Vec<(&str, String)> = Vec::new();
                    if let Some(s) = &service {
                        q.push(("service", s.clone()));
                    }
                    for s in &all_scopes {
                        q.push(("scope", s.clone()));
                    }
                    let mut b = self.http_for(r).get(realm_url.clone()).query(&q);
                    if let Some(Credential::Basic { username, password }) = other {
                        b = b.basic_auth(username, Some(password));
                    }
                    b
                }
            };
            let resp = match req.send().await {
                Ok(resp) => resp,
                Err(e) if attempt < self.inner.opts.retries && tls_failure(&e).is_none() => {
                    self.backoff(attempt).await;
                    attempt += 1;
                    continue;
                }
                Err(e) => {
                    let reason = crate::tls::error_chain(&e).join(": ");
                    return Err(match tls_failure(&e) {
                        Some(tls) => terr(format!(
                            "TLS error: {reason}; {}",
                            tls_hint(&r.registry, &tls)
                        )),
                        None => terr(reason),
                    });
                }
            };
            let status = resp.status();
            if (status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS)
                && attempt < self.inner.opts.retries
            {
                self.backoff(attempt).await;
                attempt += 1;
                continue;
            }
            let body = resp.text().await.map_err(|e| terr(e.to_string()))?;
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(terr(format!(
                    "HTTP {status}: credentials from {} were rejected{}; run `docker login {}`",
                    self.inner.opts.docker_config.describe_location(),
                    error_detail(&body),
                    r.registry
                )));
            }
            if !status.is_success() {
                return Err(terr(format!("HTTP {status}{}", error_detail(&body))));
            }
            #[derive(serde::Deserialize)]
            struct Tok {
                #[serde(default)]
                token: Option<String>,
                #[serde(default)]
                access_token: Option<String>,
            }
            let t: Tok = serde_json::from_str(&body)
                .map_err(|e| terr(format!("invalid token response: {e}")))?;
            return t
                .token
                .filter(|s| !s.is_empty())
                .or(t.access_token.filter(|s| !s.is_empty()))
                .ok_or_else(|| terr("token response has no token".to_string()));
        }
    }

    /// Sleeps 100ms · 4^attempt, at most 30s.
    async fn backoff(&self, attempt: u32) {
        let ms = 100u64
            .saturating_mul(4u64.saturating_pow(attempt.min(6)))
            .min(30_000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    /// Sends a request with auth handling and up to `retries` retries of transient
    /// failures (0 for requests that are not idempotent). TLS failures are not retried.
    ///
    /// `build` is called for every attempt, so bodies can be re-created.
    async fn send<F>(
        &self,
        r: &Reference,
        access: Access,
        extra_scopes: &[String],
        retries: u32,
        what: &str,
        build: F,
    ) -> Result<Response>
    where
        F: Fn(&reqwest::Client) -> Result<RequestBuilder>,
    {
        let scopes = Self::scope_key(r, access, extra_scopes);
        let mut attempt = 0u32;
        let mut authed: Option<bool> = None;
        loop {
            let mut rb = build(self.http_for(r))?;
            if let Some(h) = self.cached_auth(&r.registry, &scopes) {
                rb = rb.header(AUTHORIZATION, h);
            }
            match rb.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    if status == StatusCode::UNAUTHORIZED {
                        if let Some(had) = authed {
                            return Err(self.unauthorized(r, had, access));
                        }
                        authed = Some(
                            self.authenticate(r, access, &scopes, resp.headers())
                                .await?,
                        );
                        continue;
                    }
                    if (status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS)
                        && attempt < retries
                    {
                        self.backoff(attempt).await;
                        attempt += 1;
                        continue;
                    }
                    return Ok(resp);
                }
                Err(e) => {
                    if tls_failure(&e).is_some() {
                        return Err(Self::http_err(r, what, e));
                    }
                    // The connection was set up but dropped: maybe TLS in disguise.
                    if attempt == 0 && !e.is_connect() && !e.is_timeout() {
                        if let Some(reason) = match e.url() {
                            Some(url) => {
                                crate::tls::diagnose(
                                    &self.inner.opts,
                                    &r.registry,
                                    r.api_host(),
                                    url,
                                )
                                .await
                            }
                            None => None,
                        } {
                            return Err(Error::Tls {
                                registry: r.registry.clone(),
                                repository: r.repository.clone(),
                                what: what.to_string(),
                                hint: tls_hint(&r.registry, &reason),
                                reason: format!(
                                    "the registry closed the connection after the TLS handshake; a TLS 1.2 handshake with the same settings got: {reason}"
                                ),
                            });
                        }
                    }
                    if attempt < retries && is_transient(&e) {
                        self.backoff(attempt).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(Self::http_err(r, what, e));
                }
            }
        }
    }

    /// Turns a non-success response into an error.
    async fn status_error(r: &Reference, access: Access, what: &str, resp: Response) -> Error {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let detail = error_detail(&body);
        match status {
            StatusCode::NOT_FOUND => Error::NotFound {
                registry: r.registry.clone(),
                repository: r.repository.clone(),
                what: what.to_string(),
                detail,
            },
            StatusCode::FORBIDDEN => Error::Denied {
                registry: r.registry.clone(),
                repository: r.repository.clone(),
                what: what.to_string(),
                detail,
                action: access.verb().to_string(),
            },
            StatusCode::UNAUTHORIZED => Error::Unauthorized {
                registry: r.registry.clone(),
                repository: r.repository.clone(),
                hint: format!("{what}{detail}"),
            },
            _ => Error::Status {
                registry: r.registry.clone(),
                repository: r.repository.clone(),
                status: status.as_u16(),
                what: what.to_string(),
                detail,
            },
        }
    }

    /// Fetches a manifest or index by tag or digest; returns (media type, bytes).
    async fn get_manifest_raw(&self, r: &Reference) -> Result<(String, Vec<u8>)> {
        let reference = r.tag_or_digest();
        let what = format!("manifest {reference}");
        let url = self.url(r, &format!("manifests/{reference}")).await?;
        let accept = [
            media_types::OCI_MANIFEST,
            media_types::DOCKER_MANIFEST,
            media_types::OCI_INDEX,
            media_types::DOCKER_MANIFEST_LIST,
        ]
        .join(", ");
        let resp = self
            .send(r, Access::Pull, &[], self.inner.opts.retries, &what, |c| {
                Ok(c.get(url.clone()).header(ACCEPT, accept.clone()))
            })
            .await?;
        if !resp.status().is_success() {
            return Err(Self::status_error(r, Access::Pull, &what, resp).await);
        }
        let header_mt = media_type_of(resp.headers());
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Self::http_err(r, &what, e))?
            .to_vec();
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
        let probe: Probe = serde_json::from_slice(&bytes).map_err(|e| Error::InvalidManifest {
            reference: r.to_string(),
            reason: format!("not valid JSON: {e}"),
        })?;
        let schema1 = probe.schema_version == Some(1)
            || [&header_mt, &probe.media_type].iter().any(|m| {
                matches!(
                    m.as_deref(),
                    Some(media_types::DOCKER_SCHEMA1 | media_types::DOCKER_SCHEMA1_SIGNED)
                )
            });
        if schema1 {
            return Err(Error::UnsupportedManifest {
                reference: r.to_string(),
                reason: "docker schema 1 manifests are deprecated and not supported; re-push the image with a current docker, buildah or skopeo (schema 2 / OCI)".to_string(),
            });
        }
        let mt = probe
            .media_type
            .clone()
            .filter(|m| media_types::is_index(m) || media_types::is_image_manifest(m))
            .or(header_mt.filter(|m| media_types::is_index(m) || media_types::is_image_manifest(m)))
            .unwrap_or_else(|| {
                if probe.manifests.is_some() {
                    media_types::OCI_INDEX.to_string()
                } else {
                    media_types::OCI_MANIFEST.to_string()
                }
            });
        let digest = sha256_digest(&bytes);
        if let Some(want) = &r.digest {
            if want.starts_with("sha256:") && want != &digest {
                return Err(Error::DigestMismatch {
                    registry: r.registry.clone(),
                    repository: r.repository.clone(),
                    what: format!("manifest {want}"),
                    expected: want.clone(),
                    actual: digest,
                });
            }
        }
        Ok((mt, bytes))
    }

    /// Runs `f` on each pull source of `r` (see [`Client::pull_sources`]) until one
    /// succeeds. For blobs the source that served `r`'s last manifest goes first; a
    /// manifest's source is remembered.
    ///
    /// With one source its error is returned unchanged. When every source fails: the
    /// last [`Error::NotFound`] (its detail naming the other sources) if all were
    /// not-found errors, else [`Error::AllSourcesFailed`].
    async fn try_sources<T, F, Fut>(&self, r: &Reference, manifest: bool, f: F) -> Result<T>
    where
        F: Fn(Reference) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut candidates = self.inner.sources.candidates(r);
        let key = (r.registry.clone(), r.repository.clone());
        if !manifest && candidates.len() > 1 {
            let preferred = self
                .inner
                .pulled_from
                .lock()
                .ok()
                .and_then(|m| m.get(&key).cloned());
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
        let several = candidates.len() > 1;
        let mut failures: Vec<(String, Error)> = Vec::new();
        for c in candidates {
            let label = format!("{}/{}", c.registry, c.repository);
            let source = (c.registry.clone(), c.repository.clone());
            match f(c).await {
                Ok(v) => {
                    if manifest && several {
                        if let Ok(mut m) = self.inner.pulled_from.lock() {
                            m.insert(key, source);
                        }
                    }
                    return Ok(v);
                }
                Err(e) => failures.push((label, e)),
            }
        }
        if failures.len() == 1 {
            if let Some((_, e)) = failures.pop() {
                return Err(e);
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
                return Err(Error::NotFound {
                    registry,
                    repository,
                    what,
                    detail: format!("{detail} (not found on {} either)", others.join(", ")),
                });
            }
        }
        Err(Error::AllSourcesFailed {
            reference: r.to_string(),
            failures,
        })
    }

    /// Pulls the image manifest for `r`, resolving an index / manifest list to the
    /// entry for `platform`.
    ///
    /// With mirrors or registry map entries for `r`'s registry, each source is tried in
    /// turn (see [`Client::pull_sources`]); the blobs of `r` are then pulled from the
    /// source that served the manifest first.
    pub async fn pull_manifest(
        &self,
        r: &Reference,
        platform: &Platform,
    ) -> Result<PulledManifest> {
        self.try_sources(r, true, |c| async move {
            self.pull_manifest_from(&c, platform).await
        })
        .await
    }

    async fn pull_manifest_from(
        &self,
        r: &Reference,
        platform: &Platform,
    ) -> Result<PulledManifest> {
        let (mt, bytes) = self.get_manifest_raw(r).await?;
        let (mt, bytes, resolved) = if media_types::is_index(&mt) {
            let index: ImageIndex =
                serde_json::from_slice(&bytes).map_err(|e| Error::InvalidManifest {
                    reference: r.to_string(),
                    reason: format!("bad image index: {e}"),
                })?;
            let entry = index.manifests.iter().find(|d| {
                d.platform.as_ref().is_some_and(|p| platform.matches(p))
                    && (media_types::is_image_manifest(&d.media_type) || d.media_type.is_empty())
            });
            let Some(entry) = entry else {
                let available = index
                    .manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                    .collect();
                return Err(Error::NoMatchingPlatform {
                    reference: r.to_string(),
                    wanted: platform.to_string(),
                    available,
                });
            };
            let child = r.with_digest(&entry.digest);
            let (cmt, cbytes) = self.get_manifest_raw(&child).await?;
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
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| Error::InvalidManifest {
                reference: resolved.to_string(),
                reason: format!("bad image manifest: {e}"),
            })?;
        if manifest.schema_version != 2 {
            return Err(Error::UnsupportedManifest {
                reference: resolved.to_string(),
                reason: format!("schemaVersion {} (expected 2)", manifest.schema_version),
            });
        }
        Ok(PulledManifest {
            digest: sha256_digest(&bytes),
            media_type: mt,
            bytes,
            manifest,
        })
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
        check_sha256(digest)?;
        let observer = Mutex::new(observer);
        let observer = &observer;
        self.try_sources(r, false, |c| async move {
            self.pull_blob_to_file_from(&c, digest, dest, observer)
                .await
        })
        .await
    }

    async fn pull_blob_to_file_from(
        &self,
        r: &Reference,
        digest: &str,
        dest: &Path,
        observer: &Mutex<&mut (dyn BlobObserver + Send)>,
    ) -> Result<u64> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "blob".into());
        let tmp = dir.join(format!(
            ".{name}.partial-{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let mut attempt = 0u32;
        loop {
            let res = self.download_once(r, digest, &tmp, observer).await;
            match res {
                Ok(size) => {
                    return match tokio::fs::rename(&tmp, dest).await {
                        Ok(()) => Ok(size),
                        Err(e) => {
                            let _ = tokio::fs::remove_file(&tmp).await;
                            Err(Error::Io {
                                path: dest.to_path_buf(),
                                source: e,
                            })
                        }
                    };
                }
                Err(e) => {
                    let _ = tokio::fs::remove_file(&tmp).await;
                    let transient = matches!(&e, Error::Http { .. })
                        || matches!(&e, Error::Status { status, .. } if *status >= 500 || *status == 429);
                    if transient && attempt < self.inner.opts.retries {
                        self.backoff(attempt).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// GET of blob `digest`, failing on any non-success status.
    async fn get_blob(&self, r: &Reference, digest: &str, what: &str) -> Result<reqwest::Response> {
        let url = self.url(r, &format!("blobs/{digest}")).await?;
        let resp = self
            .send(r, Access::Pull, &[], self.inner.opts.retries, what, |c| {
                Ok(c.get(url.clone()))
            })
            .await?;
        if !resp.status().is_success() {
            return Err(Self::status_error(r, Access::Pull, what, resp).await);
        }
        Ok(resp)
    }

    async fn download_once(
        &self,
        r: &Reference,
        digest: &str,
        tmp: &Path,
        observer: &Mutex<&mut (dyn BlobObserver + Send)>,
    ) -> Result<u64> {
        observe(observer, |o| o.restart());
        let what = format!("blob {digest}");
        let resp = self.get_blob(r, digest, &what).await?;
        let io_err = |e: std::io::Error| Error::Io {
            path: tmp.to_path_buf(),
            source: e,
        };
        let mut file = tokio::fs::File::create(tmp).await.map_err(io_err)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Self::http_err(r, &what, e))?;
            hasher.update(&chunk);
            observe(observer, |o| o.update(&chunk));
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io_err)?;
        }
        file.flush().await.map_err(io_err)?;
        file.sync_all().await.map_err(io_err)?;
        drop(file);
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != digest {
            return Err(Error::DigestMismatch {
                registry: r.registry.clone(),
                repository: r.repository.clone(),
                what: what.clone(),
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(size)
    }

    /// Downloads a small blob (e.g. an image config) into memory, verifying sha256.
    /// Uses `r`'s mirrors / registry map like [`Client::pull_manifest`].
    pub async fn pull_blob_bytes(&self, r: &Reference, digest: &str) -> Result<Vec<u8>> {
        check_sha256(digest)?;
        self.try_sources(r, false, |c| async move {
            self.pull_blob_bytes_from(&c, digest).await
        })
        .await
    }

    async fn pull_blob_bytes_from(&self, r: &Reference, digest: &str) -> Result<Vec<u8>> {
        let what = format!("blob {digest}");
        let resp = self.get_blob(r, digest, &what).await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Self::http_err(r, &what, e))?
            .to_vec();
        let actual = sha256_digest(&bytes);
        if actual != digest {
            return Err(Error::DigestMismatch {
                registry: r.registry.clone(),
                repository: r.repository.clone(),
                what,
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Whether blob `digest` exists in the repository (HEAD).
    pub async fn blob_exists(&self, r: &Reference, digest: &str) -> Result<bool> {
        check_sha256(digest)?;
        let what = format!("blob {digest}");
        let url = self.url(r, &format!("blobs/{digest}")).await?;
        let resp = self
            .send(r, Access::Pull, &[], self.inner.opts.retries, &what, |c| {
                Ok(c.head(url.clone()))
            })
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(Self::status_error(r, Access::Pull, &what, resp).await),
        }
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
        check_sha256(digest)?;
        let what = format!("mount of blob {digest} from {from_repository}");
        let url = self.url(target, "blobs/uploads/").await?;
        let extra = [format!("repository:{from_repository}:pull")];
        let resp = self
            .send(target, Access::Push, &extra, 0, &what, |c| {
                Ok(c.post(url.clone())
                    .query(&[("mount", digest), ("from", from_repository)])
                    .header(CONTENT_LENGTH, 0))
            })
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                if let Ok(loc) = self.location(target, &url, &resp) {
                    let _ = self
                        .send(target, Access::Push, &[], 0, &what, |c| {
                            Ok(c.request(Method::DELETE, loc.clone()))
                        })
                        .await;
                }
                Ok(false)
            }
            _ => Err(Self::status_error(target, Access::Push, &what, resp).await),
        }
    }

    fn location(&self, r: &Reference, base: &Url, resp: &Response) -> Result<Url> {
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
    async fn start_upload(&self, r: &Reference, what: &str) -> Result<Url> {
        let url = self.url(r, "blobs/uploads/").await?;
        let resp = self
            .send(r, Access::Push, &[], 0, what, |c| {
                Ok(c.post(url.clone()).header(CONTENT_LENGTH, 0))
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED && !resp.status().is_success() {
            return Err(Self::status_error(r, Access::Push, what, resp).await);
        }
        self.location(r, &url, &resp)
    }

    /// Uploads (POST + monolithic PUT) with whole-upload retries.
    async fn upload<F>(&self, r: &Reference, digest: &str, size: u64, body: F) -> Result<()>
    where
        F: Fn() -> Result<reqwest::Body>,
    {
        check_sha256(digest)?;
        let what = format!("upload of blob {digest}");
        let mut attempt = 0u32;
        loop {
            let res = async {
                let mut loc = self.start_upload(r, &what).await?;
                loc.query_pairs_mut().append_pair("digest", digest);
                let resp = self
                    .send(r, Access::Push, &[], 0, &what, |c| {
                        Ok(c.put(loc.clone())
                            .header(CONTENT_TYPE, "application/octet-stream")
                            .header(CONTENT_LENGTH, size)
                            .body(body()?))
                    })
                    .await?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(Self::status_error(r, Access::Push, &what, resp).await)
                }
            }
            .await;
            match res {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let transient = matches!(&e, Error::Http { .. })
                        || matches!(&e, Error::Status { status, .. } if *status >= 500 || *status == 429);
                    if transient && attempt < self.push_retry_limit() {
                        self.backoff(attempt).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Uploads the file at `path` as blob `digest`, streaming it from disk.
    pub async fn push_blob_file(&self, r: &Reference, digest: &str, path: &Path) -> Result<()> {
        let io_err = |e: std::io::Error| Error::Io {
            path: path.to_path_buf(),
            source: e,
        };
        let size = tokio::fs::metadata(path).await.map_err(io_err)?.len();
        self.upload(r, digest, size, || {
            let f = std::fs::File::open(path).map_err(io_err)?;
            let f = tokio::fs::File::from_std(f);
            Ok(reqwest::Body::wrap_stream(
                tokio_util::io::ReaderStream::new(f),
            ))
        })
        .await
    }

    /// Uploads in-memory `bytes` as blob `digest` (the digest is checked first).
    pub async fn push_blob_bytes(&self, r: &Reference, digest: &str, bytes: Vec<u8>) -> Result<()> {
        check_sha256(digest)?;
        let actual = sha256_digest(&bytes);
        if actual != digest {
            return Err(Error::DigestMismatch {
                registry: r.registry.clone(),
                repository: r.repository.clone(),
                what: "blob to push".to_string(),
                expected: digest.to_string(),
                actual,
            });
        }
        let size = bytes.len() as u64;
        self.upload(r, digest, size, || Ok(reqwest::Body::from(bytes.clone())))
            .await
    }

    /// Pushes a manifest or index under `r`'s tag (or digest); returns its digest.
    pub async fn push_manifest(
        &self,
        r: &Reference,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String> {
        let digest = sha256_digest(bytes);
        if let Some(want) = &r.digest {
            if want != &digest {
                return Err(Error::DigestMismatch {
                    registry: r.registry.clone(),
                    repository: r.repository.clone(),
                    what: "manifest to push".to_string(),
                    expected: want.clone(),
                    actual: digest,
                });
            }
        }
        let reference = r.tag_or_digest();
        let what = format!("push of manifest {reference}");
        let url = self.url(r, &format!("manifests/{reference}")).await?;
        let body = bytes.to_vec();
        let resp = self
            .send(r, Access::Push, &[], self.push_retry_limit(), &what, |c| {
                Ok(c.put(url.clone())
                    .header(CONTENT_TYPE, media_type)
                    .body(body.clone()))
            })
            .await?;
        if !resp.status().is_success() {
            return Err(Self::status_error(r, Access::Push, &what, resp).await);
        }
        Ok(digest)
    }
}

fn is_transient(e: &reqwest::Error) -> bool {
    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_bearer_challenge() {
        let c = parse_www_authenticate(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].params["realm"], "https://auth.docker.io/token");
        assert_eq!(c[0].params["service"], "registry.docker.io");
        assert_eq!(c[0].params["scope"], "repository:library/busybox:pull,push");
    }

    #[test]
    fn parse_basic_and_multiple() {
        let c = parse_www_authenticate(r#"Basic realm="ocibuild-lab""#);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].params["realm"], "ocibuild-lab");
        let c = parse_www_authenticate(
            r#"Basic realm="a, b", Bearer realm="https://x/t", error=invalid_token , service = "s\"q""#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].params["realm"], "a, b");
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].params["error"], "invalid_token");
        assert_eq!(c[1].params["service"], "s\"q");
        assert!(parse_www_authenticate("").is_empty());
        // Garbage must not panic.
        for s in [
            "=",
            "\"",
            "Bearer =\"",
            "Bearer realm=\"unterminated",
            ",,,",
            "a=b",
        ] {
            let _ = parse_www_authenticate(s);
        }
    }

    #[test]
    fn registry_error_details() {
        let d = error_detail(
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#,
        );
        assert_eq!(d, ": MANIFEST_UNKNOWN: manifest unknown");
        assert_eq!(error_detail(""), "");
        assert_eq!(error_detail("oops"), ": oops");
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in [
            "localhost:5000",
            "127.0.0.1:5100",
            "127.1.2.3",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "registry-1.docker.io",
            "10.0.0.1:5000",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[tokio::test]
    async fn scheme_and_urls() {
        let c = Client::new(ClientOptions {
            insecure_registries: vec!["127.0.0.1:5000".into()],
            ..Default::default()
        })
        .unwrap();
        let r = Reference::parse("127.0.0.1:5000/a/b:1").unwrap();
        assert_eq!(
            c.url(&r, "manifests/1").await.unwrap().as_str(),
            "http://127.0.0.1:5000/v2/a/b/manifests/1"
        );
        let hub = Reference::parse("busybox").unwrap();
        assert_eq!(
            c.url(&hub, "blobs/uploads/").await.unwrap().as_str(),
            "https://registry-1.docker.io/v2/library/busybox/blobs/uploads/"
        );
        assert_eq!(ClientOptions::default().retries, 3);
    }

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

    #[test]
    fn digest_checks() {
        assert!(check_sha256("sha256:abc").is_err());
        assert!(check_sha256(&sha256_digest(b"x")).is_ok());
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
