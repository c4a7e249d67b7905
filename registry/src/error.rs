//! Typed errors of the registry client.

use std::path::PathBuf;
use std::time::Duration;

/// Result alias used throughout this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong while talking to a registry or reading credentials.
///
/// Messages name the registry, repository and digest involved and, where possible,
/// what the user can do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An image reference string could not be parsed.
    #[error("invalid image reference {input:?}: {reason}")]
    InvalidReference {
        /// The string that was given.
        input: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A digest string is malformed or uses an unsupported algorithm.
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest {
        /// The digest that was given.
        digest: String,
        /// Why it was rejected.
        reason: String,
    },

    /// The docker config file exists but could not be read.
    #[error("cannot read docker config {path}: {source}")]
    ConfigRead {
        /// The config file.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },

    /// The docker config file is not valid JSON or has an unexpected shape.
    #[error("malformed docker config {path}: {reason}; fix the file or point DOCKER_CONFIG at another directory")]
    ConfigParse {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A `docker-credential-<name>` helper failed.
    #[error("credential helper docker-credential-{helper} failed for {server}: {reason}")]
    CredentialHelper {
        /// Helper name (the part after `docker-credential-`).
        helper: String,
        /// Server URL the credential was requested for.
        server: String,
        /// What went wrong.
        reason: String,
    },

    /// The HTTP client could not be constructed.
    #[error("cannot set up HTTP client: {0}")]
    ClientSetup(String),

    /// A request could not be sent or its body could not be read (network level), on
    /// its last attempt.
    #[error("request to {registry} for repository {repository} failed ({what}): {source}; {hint}")]
    Http {
        /// Registry host.
        registry: String,
        /// Repository.
        repository: String,
        /// What the request was for.
        what: String,
        /// Underlying reqwest error.
        source: reqwest::Error,
        /// What to check or do about it.
        hint: String,
    },

    /// No byte moved for the idle timeout (`--registry-timeout`) on the last attempt of
    /// a request: the registry accepted the connection but stopped answering.
    #[error("no data from {registry} for {idle:?} (repository {repository}, {what}): the registry accepted the connection but stopped answering; if it is only slow, raise --registry-timeout")]
    Timeout {
        /// Registry host.
        registry: String,
        /// Repository.
        repository: String,
        /// What the request was for.
        what: String,
        /// The idle timeout that passed.
        idle: Duration,
    },

    /// The TLS connection to a registry failed: its certificate is not trusted or not
    /// valid for the host, it wants a client certificate, or it does not speak TLS.
    #[error("TLS error talking to registry {registry} (repository {repository}, {what}): {reason}; {hint}")]
    Tls {
        /// Registry host.
        registry: String,
        /// Repository.
        repository: String,
        /// What the request was for.
        what: String,
        /// The TLS failure as reported by the TLS library.
        reason: String,
        /// What to do about it (names `--registry-certificate`, `--skip-tls-verify-registry`
        /// and `--registry-client-cert`).
        hint: String,
    },

    /// A CA certificate or client certificate/key file given for a registry is unusable.
    #[error("TLS setting for registry {registry}: {}: {reason}", path.display())]
    TlsConfig {
        /// Registry host the file was given for.
        registry: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A pull was tried from every source of a reference (its mirrors or registry map
    /// entries, then the registry itself unless the fallback is disabled) and all failed.
    #[error("cannot pull {reference} from any of its sources: {}", failures.iter().map(|(s, e)| format!("[{s}] {e}")).collect::<Vec<_>>().join("; "))]
    AllSourcesFailed {
        /// Canonical reference that was asked for.
        reference: String,
        /// Each source tried (`host[/prefix]`, in order) with its error.
        failures: Vec<(String, Error)>,
    },

    /// The registry answered 401 even after authenticating.
    #[error("401 from {registry} for repository {repository}: {hint}")]
    Unauthorized {
        /// Registry host.
        registry: String,
        /// Repository.
        repository: String,
        /// Explanation and what to do.
        hint: String,
    },

    /// The registry answered 403.
    #[error("403 from {registry} for repository {repository} ({what}): access denied{detail}; check that your account may {action} this repository")]
    Denied {
        /// Registry host.
        registry: String,
        /// Repository.
        repository: String,
        /// What the request was for.
        what: String,
        /// Registry-provided detail (may be empty).
        detail: String,
        /// "pull" or "push".
        action: String,
    },

    /// The registry answered 404.
    #[error("not found on {registry}: repository {repository}, {what}{detail}")]
    NotFound {
        /// Registry host.
        registry: String,
        /// Repository.
        repository: String,
        /// What was looked up (manifest tag, blob digest, ...).
        what: String,
        /// Registry-provided detail (may be empty).
        detail: String,
    },

    /// The registry answered with an unexpected HTTP status.
    #[error(
        "unexpected HTTP {status} from {registry} for repository {repository} ({what}){detail}"
    )]
    Status {
        /// Registry host.
        registry: String,
        /// Repository.
        repository: String,
        /// HTTP status code.
        status: u16,
        /// What the request was for.
        what: String,
        /// Registry-provided detail (may be empty).
        detail: String,
        /// The wait a 429 or 503 answer asked for with `Retry-After`.
        retry_after: Option<Duration>,
    },

    /// Obtaining a bearer token failed.
    #[error("cannot get a token for {registry} repository {repository} from {realm}: {reason}")]
    Token {
        /// Registry host.
        registry: String,
        /// Repository.
        repository: String,
        /// Token endpoint.
        realm: String,
        /// What went wrong.
        reason: String,
    },

    /// Content did not match its digest.
    #[error("digest mismatch for {what} in {registry}/{repository}: expected {expected}, got {actual}; the registry or a proxy returned corrupt content")]
    DigestMismatch {
        /// Registry host.
        registry: String,
        /// Repository.
        repository: String,
        /// What was verified.
        what: String,
        /// Expected digest.
        expected: String,
        /// Digest of the received content.
        actual: String,
    },

    /// The manifest is of a kind this client does not handle (e.g. docker schema 1).
    #[error("unsupported manifest for {reference}: {reason}")]
    UnsupportedManifest {
        /// Canonical reference.
        reference: String,
        /// Why it is unsupported and what to do.
        reason: String,
    },

    /// A manifest could not be parsed.
    #[error("invalid manifest for {reference}: {reason}")]
    InvalidManifest {
        /// Canonical reference.
        reference: String,
        /// What is wrong.
        reason: String,
    },

    /// An image index had no entry for the requested platform.
    #[error("{reference} has no image for platform {wanted}; available platforms: {}", available.join(", "))]
    NoMatchingPlatform {
        /// Canonical reference.
        reference: String,
        /// The requested platform (`os/arch[/variant]`).
        wanted: String,
        /// Platforms listed in the index.
        available: Vec<String>,
    },

    /// The registry violated the distribution protocol (e.g. no Location header).
    #[error("protocol error from {registry} for repository {repository}: {detail}")]
    Protocol {
        /// Registry host.
        registry: String,
        /// Repository.
        repository: String,
        /// What was wrong.
        detail: String,
    },

    /// Local file I/O failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
}

/// Extracts a readable detail from a registry error body (`{"errors":[{code,message}]}`).
pub(crate) fn error_detail(body: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_error_details() {
        let d = error_detail(
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#,
        );
        assert_eq!(d, ": MANIFEST_UNKNOWN: manifest unknown");
        assert_eq!(error_detail(""), "");
        assert_eq!(error_detail("oops"), ": oops");
    }
}
