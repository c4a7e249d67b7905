//! Speaking HTTP to registries: the HTTP client per registry (built once, in
//! [`HttpClients`]), the scheme (with the https-then-http fallback for loopback
//! registries), URLs, and sending requests with auth and retries.

use std::collections::HashMap;
use std::sync::Mutex;

use reqwest::header::AUTHORIZATION;
use reqwest::{RequestBuilder, Response, StatusCode, Url};

use crate::error::{error_detail, Error, Result};
use crate::options::ClientOptions;
use crate::reference::Reference;
use crate::retry::{backoff, is_transient, is_transient_status};
use crate::tls::{tls_failure, tls_hint, HttpClients};
use crate::token::{Access, Tokens};

/// The HTTP side of a client: options, HTTP clients, tokens and the schemes found.
pub(crate) struct Transport {
    opts: ClientOptions,
    /// HTTP clients per TLS configuration.
    http: HttpClients,
    /// Authorization values per (registry, scope key).
    tokens: Tokens,
    /// The scheme found to work for each loopback registry (see [`Transport::scheme`]).
    schemes: Mutex<HashMap<String, &'static str>>,
}

impl Transport {
    /// Builds the HTTP clients for `opts` (reading their CA and certificate files).
    pub(crate) fn new(opts: ClientOptions) -> Result<Transport> {
        let http = HttpClients::new(&opts)?;
        let tokens = Tokens::new(opts.docker_config.clone(), opts.retries);
        Ok(Transport {
            opts,
            http,
            tokens,
            schemes: Mutex::new(HashMap::new()),
        })
    }

    /// The options of the client.
    pub(crate) fn options(&self) -> &ClientOptions {
        &self.opts
    }

    /// Retries allowed for idempotent requests.
    pub(crate) fn retries(&self) -> u32 {
        self.opts.retries
    }

    /// Retries allowed for push requests.
    pub(crate) fn push_retry_limit(&self) -> u32 {
        self.opts.retries.max(self.opts.push_retries)
    }

    /// The HTTP client with `r`'s registry's TLS configuration.
    fn http_for(&self, r: &Reference) -> &reqwest::Client {
        self.http.for_registry(&r.registry, r.api_host())
    }

    /// The scheme to use with `r`'s registry: plain http when it is marked insecure; for a
    /// loopback registry (`localhost`, `127.0.0.0/8`, `::1`) https when it answers https and
    /// http otherwise, as Docker and go-containerregistry treat local registries; https
    /// for everything else.
    async fn scheme(&self, r: &Reference) -> &'static str {
        let o = &self.opts;
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
            .schemes
            .lock()
            .ok()
            .and_then(|m| m.get(&r.registry).copied())
        {
            return s;
        }
        let scheme = probe_scheme(self.http_for(r), r.api_host()).await;
        if let Ok(mut m) = self.schemes.lock() {
            m.insert(r.registry.clone(), scheme);
        }
        scheme
    }

    /// The URL of `tail` below `r`'s repository (`/v2/<repository>/<tail>`).
    pub(crate) async fn url(&self, r: &Reference, tail: &str) -> Result<Url> {
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

    /// The error for a failed request about `what` of `r`: [`Error::Tls`] for TLS
    /// failures over https, else [`Error::Http`].
    pub(crate) fn http_err(r: &Reference, what: &str, e: reqwest::Error) -> Error {
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

    /// Sends a request with auth handling and up to `retries` retries of transient
    /// failures (0 for requests that are not idempotent). TLS failures are not retried.
    ///
    /// `build` is called for every attempt, so bodies can be re-created.
    pub(crate) async fn send<F>(
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
        let scopes = Tokens::scopes(r, access, extra_scopes);
        let mut attempt = 0u32;
        let mut authed: Option<bool> = None;
        loop {
            let mut rb = build(self.http_for(r))?;
            if let Some(h) = self.tokens.cached(&r.registry, &scopes) {
                rb = rb.header(AUTHORIZATION, h);
            }
            match rb.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    if status == StatusCode::UNAUTHORIZED {
                        if let Some(had) = authed {
                            return Err(self.tokens.unauthorized(r, had, access));
                        }
                        let http = self.http_for(r);
                        let had = self
                            .tokens
                            .authenticate(http, r, access, &scopes, resp.headers())
                            .await?;
                        authed = Some(had);
                        continue;
                    }
                    if is_transient_status(status) && attempt < retries {
                        backoff(attempt).await;
                        attempt += 1;
                        continue;
                    }
                    return Ok(resp);
                }
                Err(e) => {
                    if tls_failure(&e).is_some() {
                        return Err(Self::http_err(r, what, e));
                    }
                    if attempt == 0 && !e.is_connect() && !e.is_timeout() {
                        if let Some(err) = self.tls_in_disguise(r, what, &e).await {
                            return Err(err);
                        }
                    }
                    if attempt < retries && is_transient(&e) {
                        backoff(attempt).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(Self::http_err(r, what, e));
                }
            }
        }
    }

    /// For a connection that was set up but dropped: an [`Error::Tls`] when a TLS 1.2
    /// handshake with the same settings shows that TLS was the reason.
    async fn tls_in_disguise(
        &self,
        r: &Reference,
        what: &str,
        e: &reqwest::Error,
    ) -> Option<Error> {
        let url = e.url()?;
        let reason = crate::tls::diagnose(&self.opts, &r.registry, r.api_host(), url).await?;
        Some(Error::Tls {
            registry: r.registry.clone(),
            repository: r.repository.clone(),
            what: what.to_string(),
            hint: tls_hint(&r.registry, &reason),
            reason: format!(
                "the registry closed the connection after the TLS handshake; a TLS 1.2 handshake with the same settings got: {reason}"
            ),
        })
    }

    /// Turns a non-success response into an error.
    pub(crate) async fn status_error(
        r: &Reference,
        access: Access,
        what: &str,
        resp: Response,
    ) -> Error {
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
}

/// Finds the scheme a loopback registry at `host` answers: https when it does, else
/// http.
async fn probe_scheme(http: &reqwest::Client, host: &str) -> &'static str {
    let ping = |scheme: &str| format!("{scheme}://{host}/v2/");
    match http.get(ping("https")).send().await {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let c = Transport::new(ClientOptions {
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
}
