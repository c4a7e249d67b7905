//! What the client tells a [`tracing`] subscriber, for logs and progress views. Nothing is
//! recorded unless a subscriber asks for it.
//!
//! - Under [`HTTP_TARGET`], at `debug`: every request sent (method, URL, status or error,
//!   time to the answer) and every token request (realm, scopes, which credential);
//!   at `trace`, the auth scheme sent and the answer's headers that carry no secret.
//!   URLs never carry credentials: user info is dropped and query values other than
//!   digests and repository names are replaced ([`shown_url`]); `Authorization` headers,
//!   tokens and passwords are never recorded.
//! - Under [`TRANSFER_TARGET`], at `info`: every blob download and upload is a span named
//!   `transfer` while it runs, with the fields `direction` (`pull` or `push`), `digest`,
//!   `repository` (the reference transferred from or to), `total` (bytes, 0 when the
//!   size is not known) and `done` (bytes moved so far, recorded as chunks go). A retried
//!   transfer is a new span. Progress views draw these; closing the span ends the
//!   transfer (successfully or not).

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};

use crate::reference::Reference;

/// The target of the request and token events.
pub const HTTP_TARGET: &str = "ocibuild_registry::http";

/// The target of the `transfer` spans.
pub const TRANSFER_TARGET: &str = "ocibuild_registry::transfer";

/// Query parameters whose values are shown: digests and repository names, never secrets.
const SHOWN_QUERY_VALUES: [&str; 5] = ["digest", "mount", "from", "n", "last"];

/// `url` as logs show it: without user name and password, and with the value of every
/// query parameter but [`SHOWN_QUERY_VALUES`] replaced by `REDACTED` (upload locations and
/// redirects may carry signatures or session state).
pub fn shown_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let value = if SHOWN_QUERY_VALUES.contains(&k.as_ref()) {
                    v.into_owned()
                } else {
                    "REDACTED".to_string()
                };
                (k.into_owned(), value)
            })
            .collect();
        shown.query_pairs_mut().clear().extend_pairs(pairs);
    }
    shown.to_string()
}

/// Records one request: `GET URL -> 200 OK in 12 ms`, or the error it ended with.
pub(crate) fn request(
    method: &Method,
    url: &Url,
    outcome: std::result::Result<StatusCode, &reqwest::Error>,
    elapsed: Duration,
) {
    if !tracing::enabled!(target: HTTP_TARGET, tracing::Level::DEBUG) {
        return;
    }
    let url = shown_url(url);
    let ms = elapsed.as_millis() as u64;
    match outcome {
        Ok(status) => tracing::debug!(
            target: HTTP_TARGET,
            method = %method,
            url = %url,
            status = status.as_u16(),
            duration_ms = ms,
            "{method} {url} -> {status} in {ms} ms"
        ),
        Err(e) => {
            let error = ocibuild_image::chain::error_chain(e);
            tracing::debug!(
                target: HTTP_TARGET,
                method = %method,
                url = %url,
                error = %error,
                duration_ms = ms,
                "{method} {url} failed after {ms} ms: {error}"
            )
        }
    }
}

/// Records, at `trace`, the auth scheme a request carried and the answer's headers that
/// carry no secret.
pub(crate) fn exchange(
    method: &Method,
    url: &Url,
    auth: Option<&str>,
    headers: &reqwest::header::HeaderMap,
) {
    if !tracing::enabled!(target: HTTP_TARGET, tracing::Level::TRACE) {
        return;
    }
    const SHOWN: [&str; 6] = [
        "content-type",
        "content-length",
        "docker-content-digest",
        "docker-distribution-api-version",
        "www-authenticate",
        "range",
    ];
    let mut shown: Vec<String> = SHOWN
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?.to_str().ok()?;
            Some(format!("{name}: {value}"))
        })
        .collect();
    if let Some(location) = headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| url.join(v).ok())
    {
        shown.push(format!("location: {}", shown_url(&location)));
    }
    let scheme = auth
        .and_then(|a| a.split_whitespace().next())
        .unwrap_or("none");
    let url = shown_url(url);
    tracing::trace!(
        target: HTTP_TARGET,
        "{method} {url}: sent authorization {scheme}; answer headers: {}",
        shown.join(", ")
    );
}

/// Records a token request to `realm` for `scopes`, made with `credential` (`username and
/// password`, `identity token` or `none`), and its answer.
pub(crate) fn token(
    realm: &Url,
    scopes: &[String],
    credential: &str,
    outcome: std::result::Result<StatusCode, String>,
    elapsed: Duration,
) {
    if !tracing::enabled!(target: HTTP_TARGET, tracing::Level::DEBUG) {
        return;
    }
    let realm = shown_url(realm);
    let scopes = scopes.join(" ");
    let ms = elapsed.as_millis() as u64;
    let answer = match outcome {
        Ok(status) => status.to_string(),
        Err(e) => format!("failed: {e}"),
    };
    tracing::debug!(
        target: HTTP_TARGET,
        realm = %realm,
        scopes = %scopes,
        credential,
        duration_ms = ms,
        "token from {realm} for scopes [{scopes}] with credential {credential} -> {answer} in {ms} ms"
    );
}

/// Records that `registry` asked for basic auth for a request needing `scopes`, answered
/// with `credential` (its kind, never its value).
pub(crate) fn basic(registry: &str, scopes: &[String], credential: &str) {
    let scopes = scopes.join(" ");
    tracing::debug!(
        target: HTTP_TARGET,
        registry,
        scopes = %scopes,
        credential,
        "basic auth for {registry} (scopes [{scopes}]) with credential {credential}"
    );
}

/// One blob download or upload, as a `transfer` span (see the [module docs](self)).
pub(crate) struct Transfer {
    span: tracing::Span,
    done: u64,
}

impl Transfer {
    /// A transfer of blob `digest` from or to `r` in `direction` (`pull` or `push`) starts;
    /// `total` is its size when known.
    pub(crate) fn start(
        direction: &'static str,
        r: &Reference,
        digest: &str,
        total: Option<u64>,
    ) -> Transfer {
        let span = tracing::info_span!(
            target: TRANSFER_TARGET,
            "transfer",
            direction,
            digest,
            repository = %r,
            total = total.unwrap_or(0),
            done = 0u64,
        );
        Transfer { span, done: 0 }
    }

    /// `bytes` more moved.
    pub(crate) fn advance(&mut self, bytes: usize) {
        self.done += bytes as u64;
        self.span.record("done", self.done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_urls_carry_no_credentials_or_query_secrets() {
        let url = Url::parse(
            "https://user:s3cret@r.io/v2/a/blobs/uploads/u1?_state=abc&digest=sha256%3A01&X-Amz-Signature=sig",
        )
        .unwrap();
        let shown = shown_url(&url);
        assert_eq!(
            shown,
            "https://r.io/v2/a/blobs/uploads/u1?_state=REDACTED&digest=sha256%3A01&X-Amz-Signature=REDACTED"
        );
        for secret in ["user", "s3cret", "abc", "sig"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        let plain = Url::parse("http://127.0.0.1:5000/v2/a/manifests/1").unwrap();
        assert_eq!(shown_url(&plain), plain.as_str());
    }
}
