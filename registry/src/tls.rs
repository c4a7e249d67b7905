//! Per-registry TLS: extra trust roots, client certificates and skipped verification.
//!
//! One [`reqwest::Client`] is built per distinct TLS configuration and picked per
//! registry host, so a private CA or a client certificate configured for one registry
//! is never offered to another.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::options::ClientOptions;
use crate::reference::normalize_host;
use ocibuild_image::chain::error_chain;

/// The TLS settings that apply to one registry; equal settings share an HTTP client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct TlsSettings {
    /// PEM files whose certificates are added as trust roots.
    pub ca_files: Vec<PathBuf>,
    /// Client certificate and key PEM files.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Accept any server certificate.
    pub skip_verify: bool,
}

impl TlsSettings {
    /// The settings `opts` give registry `host` (already normalised).
    pub(crate) fn for_host(opts: &ClientOptions, host: &str) -> TlsSettings {
        let ca_files = opts
            .ca_certificates
            .iter()
            .filter(|(h, _)| normalize_host(h) == host)
            .map(|(_, p)| p.clone())
            .collect();
        let identity = opts
            .client_certificates
            .iter()
            .rev()
            .find(|(h, _, _)| normalize_host(h) == host)
            .map(|(_, c, k)| (c.clone(), k.clone()));
        let skip_verify = opts.skip_tls_verify_all
            || opts
                .skip_tls_verify
                .iter()
                .any(|h| normalize_host(h) == host);
        TlsSettings {
            ca_files,
            identity,
            skip_verify,
        }
    }
}

fn read_pem(registry: &str, path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::TlsConfig {
        registry: registry.to_string(),
        path: path.to_path_buf(),
        reason: format!("cannot read the {what}: {e}"),
    })
}

/// Builds the HTTP client for `settings`; `registry` only names the registry in errors.
pub(crate) fn build_http(
    opts: &ClientOptions,
    registry: &str,
    settings: &TlsSettings,
) -> Result<reqwest::Client> {
    build_http_with(opts, registry, settings, false)
}

fn build_http_with(
    opts: &ClientOptions,
    registry: &str,
    settings: &TlsSettings,
    tls12_only: bool,
) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .user_agent(opts.user_agent.clone())
        .connect_timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::limited(10));
    for path in &settings.ca_files {
        let pem = read_pem(registry, path, "CA certificate file")?;
        let bad = |reason: String| Error::TlsConfig {
            registry: registry.to_string(),
            path: path.clone(),
            reason,
        };
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| bad(format!("not a PEM certificate bundle: {e}")))?;
        if certs.is_empty() {
            return Err(bad(
                "no PEM certificate (-----BEGIN CERTIFICATE-----) in the CA certificate file"
                    .to_string(),
            ));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if let Some((cert, key)) = &settings.identity {
        let mut pem = read_pem(registry, cert, "client certificate")?;
        if !pem.ends_with(b"\n") {
            pem.push(b'\n');
        }
        pem.extend_from_slice(&read_pem(registry, key, "client key")?);
        let id = reqwest::Identity::from_pem(&pem).map_err(|e| Error::TlsConfig {
            registry: registry.to_string(),
            path: cert.clone(),
            reason: format!(
                "cannot use it with key {} as a client certificate ({e}); both must be PEM, the key unencrypted (PKCS#8, PKCS#1 or SEC1)",
                key.display()
            ),
        })?;
        b = b.identity(id);
    }
    if settings.skip_verify {
        b = b.danger_accept_invalid_certs(true);
    }
    if tls12_only {
        b = b.max_tls_version(reqwest::tls::Version::TLS_1_2);
    }
    b.build()
        .map_err(|e| Error::ClientSetup(format!("HTTP client for {registry}: {}", error_chain(&e))))
}

/// HTTP clients per TLS configuration, picked per registry host.
#[derive(Debug)]
pub(crate) struct HttpClients {
    default: reqwest::Client,
    per_host: HashMap<String, reqwest::Client>,
}

impl HttpClients {
    /// Builds the default client and one per distinct configuration named in `opts`.
    pub(crate) fn new(opts: &ClientOptions) -> Result<HttpClients> {
        let default_settings = TlsSettings {
            skip_verify: opts.skip_tls_verify_all,
            ..TlsSettings::default()
        };
        let default = build_http(opts, "(any registry)", &default_settings)?;
        let mut hosts: Vec<String> = opts
            .ca_certificates
            .iter()
            .map(|(h, _)| h.clone())
            .chain(opts.client_certificates.iter().map(|(h, _, _)| h.clone()))
            .chain(opts.skip_tls_verify.iter().cloned())
            .map(|h| normalize_host(&h))
            .collect();
        hosts.sort();
        hosts.dedup();
        let mut by_settings: HashMap<TlsSettings, reqwest::Client> = HashMap::new();
        by_settings.insert(default_settings, default.clone());
        let mut per_host = HashMap::new();
        for host in hosts {
            if host.is_empty() {
                return Err(Error::ClientSetup(
                    "a TLS option (--registry-certificate, --registry-client-cert or --skip-tls-verify-registry) names an empty registry".to_string(),
                ));
            }
            let settings = TlsSettings::for_host(opts, &host);
            let client = match by_settings.get(&settings) {
                Some(c) => c.clone(),
                None => {
                    let c = build_http(opts, &host, &settings)?;
                    by_settings.insert(settings, c.clone());
                    c
                }
            };
            per_host.insert(host, client);
        }
        Ok(HttpClients { default, per_host })
    }

    /// The client for a registry, matched by its name or API host (`docker.io` and its
    /// aliases are one registry).
    pub(crate) fn for_registry(&self, registry: &str, api_host: &str) -> &reqwest::Client {
        self.per_host
            .get(&normalize_host(registry))
            .or_else(|| self.per_host.get(&normalize_host(api_host)))
            .unwrap_or(&self.default)
    }

    /// Number of registries with their own TLS configuration.
    #[cfg(test)]
    pub(crate) fn configured_hosts(&self) -> usize {
        self.per_host.len()
    }
}

/// When `e` is a failed TLS handshake or certificate check, a description of it (the
/// messages of its sources).
///
/// rustls reports its failures as `io::Error`s of kind `InvalidData` wrapping its own
/// error; those, and source messages naming certificates, handshakes or TLS alerts,
/// count. The request's own message is skipped: it holds the URL.
pub(crate) fn tls_failure(e: &reqwest::Error) -> Option<String> {
    let mut cur = std::error::Error::source(e);
    let mut found = false;
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::InvalidData && io.get_ref().is_some() {
                found = true;
            }
        }
        let msg = err.to_string().to_ascii_lowercase();
        if [
            "certificate",
            "handshake",
            "fatal alert",
            "tls",
            "invalid peer",
        ]
        .iter()
        .any(|w| msg.contains(w))
        {
            found = true;
        }
        cur = err.source();
    }
    if !found {
        return None;
    }
    Some(
        std::error::Error::source(e)
            .map(error_chain)
            .unwrap_or_default(),
    )
}

/// Finds out whether a failed https request to `url` failed because of TLS.
///
/// With TLS 1.3 a server that rejects the client certificate (or wants one) does so
/// after the client considers the handshake done, so the client may only see the
/// connection closing. A TLS 1.2 handshake, with the same settings, gets the server's
/// verdict as an alert during the handshake; that alert is returned.
pub(crate) async fn diagnose(
    opts: &ClientOptions,
    registry: &str,
    api_host: &str,
    url: &reqwest::Url,
) -> Option<String> {
    if url.scheme() != "https" {
        return None;
    }
    let mut settings = TlsSettings::for_host(opts, &normalize_host(registry));
    if settings
        == (TlsSettings {
            skip_verify: opts.skip_tls_verify_all,
            ..TlsSettings::default()
        })
    {
        settings = TlsSettings::for_host(opts, &normalize_host(api_host));
    }
    let client = build_http_with(opts, registry, &settings, true).ok()?;
    let mut probe = url.clone();
    probe.set_path("/v2/");
    probe.set_query(None);
    match client
        .get(probe)
        .timeout(Duration::from_secs(10))
        .send()
        .await
    {
        Ok(_) => None,
        Err(e) => tls_failure(&e),
    }
}

/// What to suggest for a TLS failure talking to `registry` described by `reason`.
pub(crate) fn tls_hint(registry: &str, reason: &str) -> String {
    let r = reason.to_ascii_lowercase();
    let client_cert = format!(
        "if {registry} requires a client certificate, pass --registry-client-cert {registry}=CERT.pem,KEY.pem"
    );
    let ca = format!(
        "if {registry} uses a certificate from a private CA, pass --registry-certificate {registry}=CA.pem, or --skip-tls-verify-registry {registry} to skip verification (insecure)"
    );
    if r.contains("certificaterequired")
        || r.contains("certificate required")
        || r.contains("badcertificate")
        || r.contains("bad certificate")
        || r.contains("unknownca")
    {
        format!("{client_cert}; {ca}")
    } else if r.contains("corrupt message") || r.contains("invalidcontenttype") {
        format!("the registry does not seem to speak https; for plain http use --insecure-registry {registry}; {ca}")
    } else {
        format!("{ca}; {client_cert}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_per_host() {
        let opts = ClientOptions {
            ca_certificates: vec![
                ("a.io".into(), "/ca1.pem".into()),
                ("https://a.io/".into(), "/ca2.pem".into()),
                ("b.io".into(), "/ca3.pem".into()),
            ],
            client_certificates: vec![("a.io".into(), "/c.pem".into(), "/k.pem".into())],
            skip_tls_verify: vec!["c.io:443".into()],
            ..Default::default()
        };
        let a = TlsSettings::for_host(&opts, "a.io");
        assert_eq!(
            a.ca_files,
            vec![PathBuf::from("/ca1.pem"), "/ca2.pem".into()]
        );
        assert_eq!(a.identity, Some(("/c.pem".into(), "/k.pem".into())));
        assert!(!a.skip_verify);
        assert!(TlsSettings::for_host(&opts, "c.io:443").skip_verify);
        assert!(!TlsSettings::for_host(&opts, "c.io").skip_verify);
        assert_eq!(TlsSettings::for_host(&opts, "d.io"), TlsSettings::default());
        let all = ClientOptions {
            skip_tls_verify_all: true,
            ..Default::default()
        };
        assert!(TlsSettings::for_host(&all, "d.io").skip_verify);
    }

    #[test]
    fn bad_files_are_reported_with_registry_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let opts = ClientOptions {
            ca_certificates: vec![("a.io".into(), missing.clone())],
            ..Default::default()
        };
        let e = HttpClients::new(&opts).unwrap_err().to_string();
        assert!(e.contains("a.io") && e.contains("missing.pem"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let opts = ClientOptions {
            ca_certificates: vec![("a.io".into(), junk.clone())],
            ..Default::default()
        };
        let e = HttpClients::new(&opts).unwrap_err().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        let opts = ClientOptions {
            client_certificates: vec![("a.io".into(), junk.clone(), junk.clone())],
            ..Default::default()
        };
        let e = HttpClients::new(&opts).unwrap_err().to_string();
        assert!(
            e.contains("client certificate") && e.contains("a.io"),
            "{e}"
        );
    }

    #[test]
    fn equal_settings_share_and_hosts_pick_clients() {
        let opts = ClientOptions {
            skip_tls_verify: vec!["a.io".into(), "b.io".into(), "index.docker.io".into()],
            ..Default::default()
        };
        let c = HttpClients::new(&opts).unwrap();
        assert_eq!(c.configured_hosts(), 3);
        // docker.io references reach the hub's client through the alias.
        let _ = c.for_registry("docker.io", "registry-1.docker.io");
        let _ = c.for_registry("other.io", "other.io");
    }

    #[test]
    fn hints_name_the_flags() {
        let h = tls_hint("r.io:5000", "invalid peer certificate: UnknownIssuer");
        assert!(h.contains("--registry-certificate r.io:5000=CA.pem"), "{h}");
        assert!(h.contains("--skip-tls-verify-registry r.io:5000"), "{h}");
        let h = tls_hint("r.io", "received fatal alert: CertificateRequired");
        assert!(
            h.starts_with("if r.io requires a client certificate"),
            "{h}"
        );
    }
}
