//! Speaking HTTP to registries: the HTTP client per registry (built once, in
//! [`HttpClients`]), the scheme (with the https-then-http fallback for loopback
//! registries), URLs, and sending requests with auth and retries.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use reqwest::header::{AUTHORIZATION, RETRY_AFTER};
use reqwest::{RequestBuilder, Response, StatusCode, Url};

use crate::error::{error_detail, Error, Result};
use crate::idle::{next_within, Progress};
use crate::options::ClientOptions;
use crate::reference::Reference;
use crate::retry::{parse_retry_after, RetryPolicy};
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
        let tokens = Tokens::new(opts.docker_config.clone(), opts.retries, opts.idle_timeout);
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

    /// The retry policy of requests that are neither downloads nor pushes.
    pub(crate) fn policy(&self) -> RetryPolicy {
        RetryPolicy::new(self.opts.retries)
    }

    /// The retry policy of downloads (manifests and blobs).
    pub(crate) fn pull_policy(&self) -> RetryPolicy {
        RetryPolicy::new(self.opts.pull_retries.unwrap_or(self.opts.retries))
    }

    /// The retry policy of push requests.
    pub(crate) fn push_policy(&self) -> RetryPolicy {
        RetryPolicy::new(self.opts.push_retries.unwrap_or(self.opts.retries))
    }

    /// The error of a request about `what` of `r` that went idle for the timeout.
    pub(crate) fn stalled(&self, r: &Reference, what: &str) -> Error {
        Error::Timeout {
            registry: r.registry.clone(),
            repository: r.repository.clone(),
            what: what.to_string(),
            idle: self.opts.idle_timeout,
        }
    }

    /// The body of `resp` to its end, each chunk within the idle timeout.
    pub(crate) async fn body(&self, r: &Reference, what: &str, resp: Response) -> Result<Vec<u8>> {
        let mut stream = resp.bytes_stream();
        let mut body = Vec::new();
        loop {
            match next_within(&mut stream, self.opts.idle_timeout).await {
                None => return Err(self.stalled(r, what)),
                Some(None) => return Ok(body),
                Some(Some(chunk)) => {
                    body.extend_from_slice(&chunk.map_err(|e| Self::http_err(r, what, e))?)
                }
            }
        }
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
        let scheme = probe_scheme(self.http_for(r), r.api_host(), o.idle_timeout).await;
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
            hint: http_hint(&r.registry, &e),
            source: e,
        }
    }

    /// Sends one attempt of a request with auth handling: a 401 makes it authenticate
    /// and send the request once more. Failures are not retried here: callers run whole
    /// attempts under their [`RetryPolicy`]. Waiting for the answer ends with
    /// [`Error::Timeout`] once no byte moved for the idle timeout.
    ///
    /// `build` is called for every request sent, so bodies can be re-created; an upload
    /// body passes its chunks through [`Progress::tracking`] so that a slow but moving
    /// upload is not taken for a stall.
    pub(crate) async fn send<F>(
        &self,
        r: &Reference,
        access: Access,
        extra_scopes: &[String],
        what: &str,
        build: F,
    ) -> Result<Response>
    where
        F: Fn(&reqwest::Client, &Progress) -> Result<RequestBuilder>,
    {
        let scopes = Tokens::scopes(r, access, extra_scopes);
        let mut authed: Option<bool> = None;
        loop {
            let progress = Progress::new();
            let mut rb = build(self.http_for(r), &progress)?;
            if let Some(h) = self.tokens.cached(&r.registry, &scopes) {
                rb = rb.header(AUTHORIZATION, h);
            }
            let sent = progress
                .unless_stalled(self.opts.idle_timeout, rb.send())
                .await
                .ok_or_else(|| self.stalled(r, what))?;
            let resp = match sent {
                Ok(resp) => resp,
                Err(e) => return Err(self.send_error(r, what, e).await),
            };
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            if let Some(had) = authed {
                return Err(self.tokens.unauthorized(r, had, access));
            }
            let http = self.http_for(r);
            let had = self
                .tokens
                .authenticate(http, r, access, &scopes, resp.headers())
                .await?;
            authed = Some(had);
        }
    }

    /// The error of a request about `what` of `r` that could not be sent or answered:
    /// [`Error::Tls`] when TLS was the reason, even in disguise, else [`Error::Http`].
    async fn send_error(&self, r: &Reference, what: &str, e: reqwest::Error) -> Error {
        if tls_failure(&e).is_none() && !e.is_connect() && !e.is_timeout() {
            if let Some(err) = self.tls_in_disguise(r, what, &e).await {
                return err;
            }
        }
        Self::http_err(r, what, e)
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

    /// Turns a non-success response into an error (with the `Retry-After` of a 429 or
    /// 503 answer).
    pub(crate) async fn status_error(
        &self,
        r: &Reference,
        access: Access,
        what: &str,
        resp: Response,
    ) -> Error {
        let status = resp.status();
        let retry_after = match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now())),
            _ => None,
        };
        let body = self.body(r, what, resp).await.unwrap_or_default();
        let body = String::from_utf8_lossy(&body);
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
                retry_after,
            },
        }
    }
}

/// Finds the scheme a loopback registry at `host` answers: https when it does, else
/// http. Each ping may take `idle` at most.
async fn probe_scheme(http: &reqwest::Client, host: &str, idle: Duration) -> &'static str {
    let ping = |scheme: &str| http.get(format!("{scheme}://{host}/v2/")).timeout(idle);
    match ping("https").send().await {
        Ok(_) => "https",
        Err(e) => {
            // A registry answering plain http is used over http, as is a host that
            // answers neither. A host that answers plain http but not like a registry
            // (a TLS server answers plain requests with 400) or whose https attempt
            // failed in TLS stays on https, so that the real request reports the TLS
            // problem instead of a confusing HTTP error.
            match ping("http").send().await.map(|r| r.status()) {
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

/// What to check after request error `e` with `registry`. Plain HTTP is suggested only
/// when an https connection could not even be set up: a reset or a cut-short answer
/// over plain HTTP is no reason to switch schemes (TLS failures get their own hint).
fn http_hint(registry: &str, e: &reqwest::Error) -> String {
    let https = e.url().is_some_and(|u| u.scheme() == "https");
    if e.is_connect() && https {
        format!("check that the registry is reachable; if {registry} serves plain HTTP, use --insecure-registry {registry} (or --insecure / --insecure-pull)")
    } else if e.is_connect() {
        "check that the registry is reachable".to_string()
    } else if e.is_timeout() {
        "the registry did not answer in time".to_string()
    } else {
        "the connection was closed or the answer cut short, by the registry or something in between; retries, if any, were used up".to_string()
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
