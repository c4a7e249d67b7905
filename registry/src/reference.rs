//! Image references (`registry/repository[:tag][@digest]`) with docker's normalisation.

use std::fmt;

use crate::error::{Error, Result};

/// The registry docker uses when a reference names none.
pub const DOCKER_HUB: &str = "docker.io";
/// The host actually serving the docker hub registry API.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed, normalised image reference.
///
/// `busybox` parses to registry `docker.io`, repository `library/busybox`, tag `latest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host, optionally with port (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path inside the registry (`library/busybox`).
    pub repository: String,
    /// Tag, if any. Set to `latest` by [`Reference::parse`] when neither tag nor digest is given.
    pub tag: Option<String>,
    /// Digest (`sha256:<hex>`), if any.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses a reference using docker's rules.
    ///
    /// The first path component is a registry when it contains `.` or `:` or is
    /// `localhost`; otherwise the registry is `docker.io`, and single-component
    /// docker hub repositories get the `library/` prefix. Without tag and digest
    /// the tag is `latest`.
    pub fn parse(input: &str) -> Result<Reference> {
        let bad = |reason: &str| Error::InvalidReference {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(bad("empty reference"));
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains whitespace or control characters"));
        }
        let (name_tag, digest) = match input.split_once('@') {
            Some((n, d)) => {
                validate_digest(d).map_err(|e| bad(&format!("bad digest: {e}")))?;
                (n, Some(d.to_string()))
            }
            None => (input, None),
        };
        let last_slash = name_tag.rfind('/');
        let (name, tag) = match name_tag.rfind(':') {
            Some(colon) if !matches!(last_slash, Some(s) if s > colon) => {
                (&name_tag[..colon], Some(&name_tag[colon + 1..]))
            }
            _ => (name_tag, None),
        };
        if name.is_empty() {
            return Err(bad("missing repository name"));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        validate_registry(&registry).map_err(|e| bad(&e))?;
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        validate_repository(&repository).map_err(|e| bad(&e))?;
        if let Some(t) = tag {
            validate_tag(t).map_err(|e| bad(&e))?;
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// Returns a copy pinned to `digest` (the tag is kept for display).
    pub fn with_digest(&self, digest: &str) -> Reference {
        Reference {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// Returns a copy with tag `tag` and no digest.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }

    /// The manifest reference used in API URLs: digest if set, else tag, else `latest`.
    pub fn tag_or_digest(&self) -> String {
        self.digest
            .clone()
            .or_else(|| self.tag.clone())
            .unwrap_or_else(|| "latest".to_string())
    }

    /// The host serving the registry API (`docker.io` → `registry-1.docker.io`).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Reference> {
        Reference::parse(s)
    }
}

fn validate_registry(registry: &str) -> std::result::Result<(), String> {
    if registry.is_empty() {
        return Err("empty registry host".into());
    }
    let ok = registry
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_'));
    if !ok {
        return Err(format!(
            "registry host {registry:?} contains invalid characters"
        ));
    }
    if let Some((_, port)) = registry.rsplit_once(':') {
        if !registry.ends_with(']') && (port.is_empty() || port.parse::<u16>().is_err()) {
            return Err(format!("registry {registry:?} has an invalid port"));
        }
    }
    Ok(())
}

/// Checks one repository path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() {
        return false;
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn validate_repository(repo: &str) -> std::result::Result<(), String> {
    if repo.is_empty() {
        return Err("missing repository name".into());
    }
    if repo.len() > 255 {
        return Err("repository name longer than 255 characters".into());
    }
    if repo.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("repository {repo:?} must be lowercase"));
    }
    for comp in repo.split('/') {
        if !valid_component(comp) {
            return Err(format!(
                "repository {repo:?} has invalid component {comp:?} (allowed: lowercase letters, digits, separated by '.', '_', '__' or '-')"
            ));
        }
    }
    Ok(())
}

fn validate_tag(tag: &str) -> std::result::Result<(), String> {
    let b = tag.as_bytes();
    if b.is_empty() {
        return Err("empty tag after ':'".into());
    }
    if b.len() > 128 {
        return Err("tag longer than 128 characters".into());
    }
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    if !word(b[0]) || !b.iter().all(|&x| word(x) || x == b'.' || x == b'-') {
        return Err(format!(
            "tag {tag:?} is invalid (allowed: letters, digits, '_', '.', '-'; must not start with '.' or '-')"
        ));
    }
    Ok(())
}

/// Validates a digest string `algorithm:encoded` as oci-spec's [`Digest`] parses it
/// (`sha256` digests must be 64 lowercase hex characters); the error says why not.
///
/// [`Digest`]: ocibuild_image::digest::Digest
pub fn validate_digest(d: &str) -> std::result::Result<(), String> {
    ocibuild_image::digest::parse(d)
        .map(|_| ())
        .map_err(|e| format!("{d:?}: {}", e.reason))
}

/// Normalises a registry host as written in options: drops an `http(s)://` prefix, a
/// trailing `/` and any path, lower-cases it, and maps docker hub's aliases
/// (`index.docker.io`, `registry-1.docker.io`) to `docker.io`.
pub(crate) fn normalize_host(s: &str) -> String {
    let s = s.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or("").to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn p(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_hub_short_name() {
        let r = p("busybox");
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/busybox");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.digest, None);
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
    }

    #[test]
    fn docker_hub_user_repo_and_index_alias() {
        let r = p("someuser/app:1.2");
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "someuser/app");
        assert_eq!(r.tag.as_deref(), Some("1.2"));
        let r = p("index.docker.io/busybox");
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/busybox");
        let r = p("docker.io/library/busybox:1");
        assert_eq!(r.to_string(), "docker.io/library/busybox:1");
    }

    #[test]
    fn registry_with_port() {
        let r = p("127.0.0.1:5000/busybox:1");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "busybox");
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.api_host(), "127.0.0.1:5000");
        let r = p("localhost:5000/a/b/c");
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.repository, "a/b/c");
        assert_eq!(r.tag.as_deref(), Some("latest"));
    }

    #[test]
    fn localhost_and_dotted_hosts() {
        let r = p("localhost/x");
        assert_eq!(r.registry, "localhost");
        assert_eq!(r.repository, "x");
        let r = p("ghcr.io/org/img:v1");
        assert_eq!(r.registry, "ghcr.io");
        assert_eq!(r.repository, "org/img");
    }

    #[test]
    fn digest_forms() {
        let r = p(&format!("x@{D}"));
        assert_eq!(r.repository, "library/x");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.tag_or_digest(), D);
        assert_eq!(r.to_string(), format!("docker.io/library/x@{D}"));
        let r = p(&format!("127.0.0.1:5000/x:1@{D}"));
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.tag_or_digest(), D);
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/x:1@{D}"));
    }

    #[test]
    fn with_tag_and_digest() {
        let r = p("127.0.0.1:5000/x:1");
        let d = r.with_digest(D);
        assert_eq!(d.tag_or_digest(), D);
        let t = d.with_tag("2");
        assert_eq!(t.digest, None);
        assert_eq!(t.tag_or_digest(), "2");
        let none = Reference {
            tag: None,
            digest: None,
            ..r
        };
        assert_eq!(none.tag_or_digest(), "latest");
    }

    #[test]
    fn separators_in_repository() {
        p("a.b_c__d-e--f/g");
        p("quay.io/a-b/c.d");
    }

    #[test]
    fn errors() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "busybox:a/b",
            "a//b",
            "a/b/",
            "/a",
            "_a",
            "a__-b",
            "a b",
            "x@sha256:abc",
            "x@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
            "x@nodigest",
            "127.0.0.1:notaport/x",
            "127.0.0.1:5000/",
            ":tag",
        ] {
            let e = Reference::parse(bad);
            assert!(e.is_err(), "{bad:?} should fail, got {e:?}");
            let msg = e.unwrap_err().to_string();
            assert!(msg.contains("invalid image reference"), "{msg}");
        }
        let long_tag = format!("x:{}", "a".repeat(129));
        assert!(Reference::parse(&long_tag).is_err());
        let msg = Reference::parse("Foo/bar").unwrap_err().to_string();
        assert!(msg.contains("lowercase"), "{msg}");
    }

    #[test]
    fn digest_validation() {
        assert!(validate_digest(D).is_ok());
        assert!(validate_digest("sha256:").is_err());
        assert!(validate_digest("md5").is_err());
    }

    #[test]
    fn hosts_are_normalised() {
        assert_eq!(
            normalize_host("https://My.Registry:5000/"),
            "my.registry:5000"
        );
        assert_eq!(normalize_host("index.docker.io"), "docker.io");
        assert_eq!(normalize_host("registry-1.docker.io"), "docker.io");
        assert_eq!(
            normalize_host("http://127.0.0.1:5000/v2/"),
            "127.0.0.1:5000"
        );
        assert_eq!(normalize_host(" docker.io "), "docker.io");
    }
}
