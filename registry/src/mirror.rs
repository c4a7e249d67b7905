//! Pull sources: registry mirrors (`--registry-mirror`) and registry maps
//! (`--registry-map`).
//!
//! A pull of a reference is tried against each replacement source in order and then,
//! unless [`ClientOptions::skip_default_registry_fallback`] is set, against the
//! reference's own registry. Pushes never use these.

use crate::error::{Error, Result};
use crate::options::ClientOptions;
use crate::reference::{normalize_host, Reference, DOCKER_HUB};

/// A replacement source: a registry host and an optional repository prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    /// Registry host (`mirror.gcr.io`, `127.0.0.1:5000`).
    pub host: String,
    /// Path put in front of the repository (`cache` in `host/cache`), maybe empty.
    pub prefix: String,
}

impl Source {
    /// Parses `host[:port][/prefix]`, accepting and dropping an `http(s)://` scheme.
    pub(crate) fn parse(s: &str) -> Result<Source> {
        let bad = |reason: &str| {
            Error::ClientSetup(format!(
                "invalid registry mirror or registry map entry {s:?}: {reason}"
            ))
        };
        let t = s.trim();
        let t = t
            .strip_prefix("https://")
            .or_else(|| t.strip_prefix("http://"))
            .unwrap_or(t)
            .trim_end_matches('/');
        let (host, prefix) = t.split_once('/').unwrap_or((t, ""));
        if host.is_empty() {
            return Err(bad("no registry host"));
        }
        if host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '@' || c == '=')
        {
            return Err(bad("the host contains whitespace, '@' or '='"));
        }
        if prefix
            .split('/')
            .any(|p| p.is_empty() && !prefix.is_empty())
        {
            return Err(bad("empty path component"));
        }
        let host = match host.to_ascii_lowercase().as_str() {
            "index.docker.io" => DOCKER_HUB.to_string(),
            h => h.to_string(),
        };
        Ok(Source {
            host,
            prefix: prefix.to_string(),
        })
    }

    /// `r` served from this source (tag and digest kept).
    pub(crate) fn apply(&self, r: &Reference) -> Reference {
        let repository = if self.prefix.is_empty() {
            r.repository.clone()
        } else {
            format!("{}/{}", self.prefix, r.repository)
        };
        Reference {
            registry: self.host.clone(),
            repository,
            ..r.clone()
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix.is_empty() {
            f.write_str(&self.host)
        } else {
            write!(f, "{}/{}", self.host, self.prefix)
        }
    }
}

/// The parsed pull sources of a [`ClientOptions`].
#[derive(Debug, Clone, Default)]
pub(crate) struct PullSources {
    /// (normalised original registry, replacement) in option order.
    map: Vec<(String, Source)>,
    /// Mirrors for docker hub.
    mirrors: Vec<Source>,
    skip_fallback: bool,
}

impl PullSources {
    /// Parses and validates `opts.registry_map` and `opts.mirrors`.
    pub(crate) fn new(opts: &ClientOptions) -> Result<PullSources> {
        let mut map = Vec::new();
        for (orig, repls) in &opts.registry_map {
            let orig_host = normalize_host(orig);
            if orig_host.is_empty() {
                return Err(Error::ClientSetup(format!(
                    "invalid registry map entry {orig:?}: no original registry"
                )));
            }
            for r in repls {
                map.push((orig_host.clone(), Source::parse(r)?));
            }
        }
        let mirrors = opts
            .mirrors
            .iter()
            .map(|m| Source::parse(m))
            .collect::<Result<Vec<_>>>()?;
        Ok(PullSources {
            map,
            mirrors,
            skip_fallback: opts.skip_default_registry_fallback,
        })
    }

    /// The references to try, in order, when pulling `r`. Just `r` when nothing
    /// replaces its registry.
    pub(crate) fn candidates(&self, r: &Reference) -> Vec<Reference> {
        let host = normalize_host(&r.registry);
        let mut out: Vec<Reference> = self
            .map
            .iter()
            .filter(|(orig, _)| orig == &host)
            .map(|(_, s)| s.apply(r))
            .collect();
        if host == DOCKER_HUB {
            out.extend(self.mirrors.iter().map(|s| s.apply(r)));
        }
        if out.is_empty() || !self.skip_fallback {
            out.push(r.clone());
        }
        let mut seen = Vec::new();
        out.retain(|c| {
            let key = (c.registry.clone(), c.repository.clone());
            if seen.contains(&key) {
                false
            } else {
                seen.push(key);
                true
            }
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    fn names(c: &[Reference]) -> Vec<String> {
        c.iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn sources_parse() {
        assert_eq!(
            Source::parse("https://mirror.gcr.io/").unwrap(),
            Source {
                host: "mirror.gcr.io".into(),
                prefix: String::new()
            }
        );
        let s = Source::parse("127.0.0.1:5000/hub/cache").unwrap();
        assert_eq!(
            (s.host.as_str(), s.prefix.as_str()),
            ("127.0.0.1:5000", "hub/cache")
        );
        assert_eq!(s.to_string(), "127.0.0.1:5000/hub/cache");
        assert_eq!(Source::parse("Index.Docker.io").unwrap().host, "docker.io");
        for bad in ["", "/x", "a b", "h//x", "user@h"] {
            assert!(Source::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mirrors_apply_to_docker_hub_only() {
        let opts = ClientOptions {
            mirrors: vec!["m1.io".into(), "m2.io/hub".into()],
            ..Default::default()
        };
        let p = PullSources::new(&opts).unwrap();
        assert_eq!(
            names(&p.candidates(&r("busybox:1"))),
            [
                "m1.io/library/busybox:1",
                "m2.io/hub/library/busybox:1",
                "docker.io/library/busybox:1"
            ]
        );
        assert_eq!(
            names(&p.candidates(&r("index.docker.io/x/y@sha256:0123456789012345678901234567890123456789012345678901234567890123"))),
            [
                "m1.io/x/y@sha256:0123456789012345678901234567890123456789012345678901234567890123",
                "m2.io/hub/x/y@sha256:0123456789012345678901234567890123456789012345678901234567890123",
                "docker.io/x/y@sha256:0123456789012345678901234567890123456789012345678901234567890123"
            ]
        );
        assert_eq!(names(&p.candidates(&r("quay.io/a/b:c"))), ["quay.io/a/b:c"]);
        let skip = PullSources::new(&ClientOptions {
            skip_default_registry_fallback: true,
            ..opts
        })
        .unwrap();
        assert_eq!(
            names(&skip.candidates(&r("busybox"))),
            [
                "m1.io/library/busybox:latest",
                "m2.io/hub/library/busybox:latest"
            ]
        );
        // Without replacements the registry itself is always used.
        assert_eq!(
            names(&skip.candidates(&r("quay.io/a/b:c"))),
            ["quay.io/a/b:c"]
        );
    }

    #[test]
    fn registry_map_comes_first_then_mirrors() {
        let opts = ClientOptions {
            registry_map: vec![
                (
                    "index.docker.io".into(),
                    vec!["mirror.gcr.io".into(), "other.io".into()],
                ),
                ("quay.io".into(), vec!["q.local:5000/quay".into()]),
            ],
            mirrors: vec!["m.io".into(), "other.io".into()],
            skip_default_registry_fallback: true,
            ..Default::default()
        };
        let p = PullSources::new(&opts).unwrap();
        assert_eq!(
            names(&p.candidates(&r("busybox"))),
            [
                "mirror.gcr.io/library/busybox:latest",
                "other.io/library/busybox:latest",
                "m.io/library/busybox:latest"
            ]
        );
        assert_eq!(
            names(&p.candidates(&r("quay.io/a/b:c"))),
            ["q.local:5000/quay/a/b:c"]
        );
        assert!(PullSources::new(&ClientOptions {
            registry_map: vec![("".into(), vec!["x.io".into()])],
            ..Default::default()
        })
        .is_err());
    }
}
