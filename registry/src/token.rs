//! Registry authentication: `WWW-Authenticate` challenges, bearer tokens from the
//! challenge's realm, basic auth, and the cache of `Authorization` values per registry
//! and scope.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, StatusCode, Url};

use crate::auth::{Credential, DockerConfig};
use crate::error::{error_detail, Error, Result};
use crate::reference::Reference;
use crate::retry::RetryPolicy;
use crate::tls::{tls_failure, tls_hint};
use ocibuild_image::chain::error_chain;

/// Access a request needs; determines the token scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
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

    /// How an error message names this access (`pull from`, `push to`).
    pub(crate) fn verb(self) -> &'static str {
        match self {
            Access::Pull => "pull from",
            Access::Push => "push to",
        }
    }
}

/// The cache key of basic-auth values: they hold for every scope of a registry.
const BASIC_SCOPE: &str = "*basic*";

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

/// `Authorization` values per (registry, scope key), and how to obtain new ones.
pub(crate) struct Tokens {
    docker_config: DockerConfig,
    /// The retry policy of token requests.
    policy: RetryPolicy,
    /// The longest a token request may take.
    idle_timeout: Duration,
    cache: Mutex<HashMap<(String, String), String>>,
}

impl Tokens {
    /// Tokens from `docker_config`'s credentials; token requests are retried `retries`
    /// times and may each take `idle_timeout`.
    pub(crate) fn new(docker_config: DockerConfig, retries: u32, idle_timeout: Duration) -> Tokens {
        Tokens {
            docker_config,
            policy: RetryPolicy::new(retries),
            idle_timeout,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The scopes a request for `access` to `r` needs, plus `extra`.
    pub(crate) fn scopes(r: &Reference, access: Access, extra: &[String]) -> Vec<String> {
        let mut scopes = vec![format!("repository:{}:{}", r.repository, access.actions())];
        scopes.extend(extra.iter().cloned());
        scopes
    }

    /// The cached `Authorization` value for `scopes` on `registry`, if any.
    pub(crate) fn cached(&self, registry: &str, scopes: &[String]) -> Option<String> {
        let t = self.cache.lock().ok()?;
        t.get(&(registry.to_string(), scopes.join(" ")))
            .or_else(|| t.get(&(registry.to_string(), BASIC_SCOPE.to_string())))
            .cloned()
    }

    fn store(&self, registry: &str, scope: &str, value: String) {
        if let Ok(mut t) = self.cache.lock() {
            t.insert((registry.to_string(), scope.to_string()), value);
        }
    }

    async fn credential(&self, registry: &str) -> Result<Option<Credential>> {
        let cfg = self.docker_config.clone();
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

    /// The error for a request to `r` that is still unauthorized after authenticating.
    pub(crate) fn unauthorized(
        &self,
        r: &Reference,
        had_credential: bool,
        access: Access,
    ) -> Error {
        let loc = self.docker_config.describe_location();
        let verb = access.verb();
        let hint = if had_credential {
            format!(
                "the credentials for {} in {loc} were rejected or lack permission to {verb} this repository; run `docker login {}` again, with an account that may {verb} it",
                r.registry, r.registry
            )
        } else {
            format!(
                "no credentials found in {loc}, and the registry wants them to {verb} this repository; run `docker login {}` or set DOCKER_CONFIG",
                r.registry
            )
        };
        Error::Unauthorized {
            registry: r.registry.clone(),
            repository: r.repository.clone(),
            hint,
        }
    }

    /// Handles a 401 whose headers are `headers`: obtains and caches an Authorization
    /// value, fetching bearer tokens with `http`. Returns whether a credential from the
    /// docker config was used.
    pub(crate) async fn authenticate(
        &self,
        http: &reqwest::Client,
        r: &Reference,
        access: Access,
        scopes: &[String],
        headers: &HeaderMap,
    ) -> Result<bool> {
        let challenges: Vec<Challenge> = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_www_authenticate)
            .collect();
        let cred = self.credential(&r.registry).await?;
        let had = cred.is_some();
        if let Some(ch) = challenges.iter().find(|c| c.scheme == "bearer") {
            let token = self.fetch_token(http, r, ch, scopes, cred.as_ref()).await?;
            self.store(&r.registry, &scopes.join(" "), format!("Bearer {token}"));
            return Ok(had);
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            return self.basic(r, access, cred);
        }
        Err(Error::Unauthorized {
            registry: r.registry.clone(),
            repository: r.repository.clone(),
            hint: format!(
                "the registry sent no usable WWW-Authenticate challenge ({:?})",
                headers.get(WWW_AUTHENTICATE)
            ),
        })
    }

    /// Answers a basic challenge with `cred`: caches the header value for the registry.
    fn basic(&self, r: &Reference, access: Access, cred: Option<Credential>) -> Result<bool> {
        match cred {
            Some(Credential::Basic { username, password }) => {
                let v = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                self.store(&r.registry, BASIC_SCOPE, format!("Basic {v}"));
                Ok(true)
            }
            Some(Credential::IdentityToken(_)) => Err(Error::Unauthorized {
                registry: r.registry.clone(),
                repository: r.repository.clone(),
                hint: format!(
                    "the registry wants basic auth but {} only has an identity token for it; run `docker login {}` with a username and password",
                    self.docker_config.describe_location(),
                    r.registry
                ),
            }),
            None => Err(self.unauthorized(r, false, access)),
        }
    }

    /// Gets a bearer token for `scopes` (and those the challenge names) from the
    /// challenge's realm, retrying transient failures.
    async fn fetch_token(
        &self,
        http: &reqwest::Client,
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
        let service = ch.params.get("service").map(String::as_str);
        let mut all_scopes: Vec<String> = scopes.to_vec();
        if let Some(s) = ch.params.get("scope") {
            for s in s.split(' ') {
                if !s.is_empty() && !all_scopes.iter().any(|x| x == s) {
                    all_scopes.push(s.to_string());
                }
            }
        }
        let (status, body) = self
            .policy
            .run(|| async {
                let req = token_request(http, &realm_url, service, &all_scopes, cred);
                // TLS failures are final (a Token error); other network failures retried.
                let net = |e: reqwest::Error| match tls_failure(&e) {
                    Some(tls) => terr(format!(
                        "TLS error: {}; {}",
                        error_chain(&e),
                        tls_hint(&r.registry, &tls)
                    )),
                    None => Error::Http {
                        registry: r.registry.clone(),
                        repository: r.repository.clone(),
                        what: format!("token from {realm}"),
                        hint: String::new(),
                        source: e,
                    },
                };
                let resp = req.timeout(self.idle_timeout).send().await.map_err(net)?;
                let status = resp.status();
                if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                    return Err(Error::Status {
                        registry: r.registry.clone(),
                        repository: r.repository.clone(),
                        status: status.as_u16(),
                        what: format!("token from {realm}"),
                        detail: String::new(),
                        retry_after: None,
                    });
                }
                Ok((status, resp.text().await.map_err(net)?))
            })
            .await
            .map_err(|e| match e {
                Error::Http { source, .. } => terr(error_chain(&source)),
                Error::Status { status, .. } => terr(format!("HTTP {status}")),
                other => other,
            })?;
        self.token_from(r, status, &body).map_err(terr)
    }

    /// The token in a token endpoint's answer, or why there is none.
    fn token_from(
        &self,
        r: &Reference,
        status: StatusCode,
        body: &str,
    ) -> std::result::Result<String, String> {
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(format!(
                "HTTP {status}: credentials from {} were rejected{}; run `docker login {}`",
                self.docker_config.describe_location(),
                error_detail(body),
                r.registry
            ));
        }
        if !status.is_success() {
            return Err(format!("HTTP {status}{}", error_detail(body)));
        }
        #[derive(serde::Deserialize)]
        struct Tok {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let t: Tok =
            serde_json::from_str(body).map_err(|e| format!("invalid token response: {e}"))?;
        t.token
            .filter(|s| !s.is_empty())
            .or(t.access_token.filter(|s| !s.is_empty()))
            .ok_or_else(|| "token response has no token".to_string())
    }
}

/// The token request: an OAuth2 refresh-token POST with an identity token, else a GET
/// with the scopes as query parameters (and basic auth with a username and password).
fn token_request(
    http: &reqwest::Client,
    realm_url: &Url,
    service: Option<&str>,
    scopes: &[String],
    cred: Option<&Credential>,
) -> RequestBuilder {
    match cred {
        Some(Credential::IdentityToken(tok)) => {
            let mut form: Vec<(&str, String)> = vec![
                ("grant_type", "refresh_token".into()),
                ("refresh_token", tok.clone()),
                ("client_id", "ocibuild".into()),
            ];
            if let Some(s) = service {
                form.push(("service", s.to_string()));
            }
            form.push(("scope", scopes.join(" ")));
            http.post(realm_url.clone()).form(&form)
        }
        other => {
            let mut q: Vec<(&str, String)> = Vec::new();
            if let Some(s) = service {
                q.push(("service", s.to_string()));
            }
            for s in scopes {
                q.push(("scope", s.clone()));
            }
            let mut b = http.get(realm_url.clone()).query(&q);
            if let Some(Credential::Basic { username, password }) = other {
                b = b.basic_auth(username, Some(password));
            }
            b
        }
    }
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
}
