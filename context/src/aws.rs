//! AWS credentials, found the way the AWS SDKs and CLI find them (the default credential
//! chain), in this order:
//!
//! 1. `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`);
//! 2. web identity (IRSA): `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`
//!    (+ `AWS_ROLE_SESSION_NAME`), exchanged with STS `AssumeRoleWithWebIdentity`;
//! 3. the shared profile (`AWS_PROFILE`, else `default`) of `~/.aws/credentials` and
//!    `~/.aws/config` (`AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE`): static keys, or
//!    `role_arn` + `web_identity_token_file`;
//! 4. ECS/EKS container credentials: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (on
//!    169.254.170.2) or `AWS_CONTAINER_CREDENTIALS_FULL_URI`, with
//!    `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` or `AWS_CONTAINER_AUTHORIZATION_TOKEN`;
//! 5. EC2 instance metadata (IMDSv2, falling back to v1) unless
//!    `AWS_EC2_METADATA_DISABLED=true`; `AWS_EC2_METADATA_SERVICE_ENDPOINT` moves it.
//!
//! STS is `AWS_ENDPOINT_URL_STS`, else `AWS_ENDPOINT_URL`, else
//! `https://sts.REGION.amazonaws.com`. Nothing found means no credentials: the request is
//! sent unsigned (public objects).

use crate::object::{credentials_error, form, json_answer, metadata_client, now_secs, xml_field};
use crate::{ContextEnv, ContextError, Result};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Credentials to sign requests with, and where they came from (for messages).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// `the environment`, `profile dev in /root/.aws/credentials`, ...
    pub source: String,
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The settings of one profile, merged from the credentials and the config file.
#[derive(Debug, Default, Clone)]
pub(crate) struct Profile {
    /// The profile name.
    pub name: String,
    /// Its keys (`aws_access_key_id`, `region`, `role_arn`, ...), each with the file it
    /// came from.
    settings: BTreeMap<String, (String, PathBuf)>,
}

impl Profile {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.settings
            .get(key)
            .map(|(v, _)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn file_of(&self, key: &str) -> String {
        self.settings
            .get(key)
            .map(|(_, p)| p.display().to_string())
            .unwrap_or_default()
    }
}

/// The profile the environment selects, read from the shared files (a missing file is
/// empty). A profile named by `AWS_PROFILE` must exist in one of them.
pub(crate) fn load_profile(env: &ContextEnv) -> Result<Profile> {
    let explicit = env.first(&["AWS_PROFILE", "AWS_DEFAULT_PROFILE"]);
    let name = explicit.map_or("default", |(_, v)| v).to_string();
    let credentials_file = env
        .var("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| env.home_path(".aws/credentials"));
    let config_file = env
        .var("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .or_else(|| env.home_path(".aws/config"));
    let mut profile = Profile {
        name: name.clone(),
        settings: BTreeMap::new(),
    };
    let mut found = false;
    // The credentials file wins over the config file for the same key.
    for (file, is_config) in [(&credentials_file, false), (&config_file, true)] {
        let Some(file) = file else { continue };
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(credentials_error(
                    "AWS shared config",
                    format!("{}: {e}", file.display()),
                ))
            }
        };
        if let Some(section) = ini_section(&text, &name, is_config) {
            found = true;
            for (k, v) in section {
                profile.settings.entry(k).or_insert((v, file.clone()));
            }
        }
    }
    if let Some((var, _)) = explicit.filter(|_| !found) {
        let files: Vec<String> = [credentials_file, config_file]
            .into_iter()
            .flatten()
            .map(|p| p.display().to_string())
            .collect();
        return Err(credentials_error(
            "AWS shared config",
            format!("{var}={name}: no such profile in {}", files.join(" or ")),
        ));
    }
    Ok(profile)
}

/// The keys of section `name` of an INI text (`[name]`, or `[profile name]` in the config
/// file, where `default` is `[default]`); `None` when there is no such section.
fn ini_section(text: &str, name: &str, is_config: bool) -> Option<Vec<(String, String)>> {
    let wanted = |header: &str| {
        let header = header.trim();
        if is_config && name != "default" {
            header
                .strip_prefix("profile")
                .filter(|rest| rest.starts_with(char::is_whitespace))
                .is_some_and(|rest| rest.trim() == name)
        } else {
            header == name || (is_config && header == "profile default")
        }
    };
    let mut section: Option<Vec<(String, String)>> = None;
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = wanted(header);
            if inside {
                section.get_or_insert_with(Vec::new);
            }
            continue;
        }
        if !inside {
            continue;
        }
        if let (Some(s), Some((k, v))) = (section.as_mut(), line.split_once('=')) {
            s.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    section
}

/// The region: `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region`, else
/// `us-east-1`.
pub(crate) fn region(env: &ContextEnv, profile: &Profile) -> String {
    env.first(&["AWS_REGION", "AWS_DEFAULT_REGION"])
        .map(|(_, v)| v)
        .or_else(|| profile.get("region"))
        .unwrap_or("us-east-1")
        .to_string()
}

/// The credentials of the default chain, or `None` when it finds none.
pub(crate) async fn credentials(
    env: &ContextEnv,
    profile: &Profile,
    region: &str,
) -> Result<Option<AwsCredentials>> {
    if let Some(c) = env_credentials(env)? {
        return Ok(Some(c));
    }
    if let (Some(token_file), Some(role)) = (
        env.var("AWS_WEB_IDENTITY_TOKEN_FILE"),
        env.var("AWS_ROLE_ARN"),
    ) {
        let session = env.var("AWS_ROLE_SESSION_NAME");
        let source = "web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN)";
        return web_identity(env, region, Path::new(token_file), role, session, source)
            .await
            .map(Some);
    }
    if let Some(c) = profile_credentials(env, profile, region).await? {
        return Ok(Some(c));
    }
    if let Some(c) = container_credentials(env).await? {
        return Ok(Some(c));
    }
    if env.flag("AWS_EC2_METADATA_DISABLED") {
        return Ok(None);
    }
    instance_credentials(env).await
}

/// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`; one without the other is an error.
fn env_credentials(env: &ContextEnv) -> Result<Option<AwsCredentials>> {
    let source = "the environment (AWS_ACCESS_KEY_ID)";
    match (
        env.var("AWS_ACCESS_KEY_ID"),
        env.var("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Some(id), Some(secret)) => Ok(Some(AwsCredentials {
            access_key_id: id.to_string(),
            secret_access_key: secret.to_string(),
            session_token: env.var("AWS_SESSION_TOKEN").map(str::to_string),
            source: source.to_string(),
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(credentials_error(
            source,
            "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not",
        )),
        (None, Some(_)) => Err(credentials_error(
            source,
            "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not",
        )),
    }
}

/// The static keys of the profile, or its web identity role.
async fn profile_credentials(
    env: &ContextEnv,
    profile: &Profile,
    region: &str,
) -> Result<Option<AwsCredentials>> {
    let source = format!(
        "profile {} in {}",
        profile.name,
        profile.file_of("aws_access_key_id")
    );
    match (
        profile.get("aws_access_key_id"),
        profile.get("aws_secret_access_key"),
    ) {
        (Some(id), Some(secret)) => {
            return Ok(Some(AwsCredentials {
                access_key_id: id.to_string(),
                secret_access_key: secret.to_string(),
                session_token: profile.get("aws_session_token").map(str::to_string),
                source,
            }))
        }
        (Some(_), None) => {
            return Err(credentials_error(
                &source,
                "aws_access_key_id is set but aws_secret_access_key is not",
            ))
        }
        _ => {}
    }
    let Some(role) = profile.get("role_arn") else {
        return Ok(None);
    };
    let source = format!(
        "profile {} in {}",
        profile.name,
        profile.file_of("role_arn")
    );
    match profile.get("web_identity_token_file") {
        Some(token_file) => {
            let session = profile.get("role_session_name");
            web_identity(env, region, Path::new(token_file), role, session, &source)
                .await
                .map(Some)
        }
        None => Err(credentials_error(
            &source,
            "role_arn without web_identity_token_file (source_profile, credential_source) is \
             not supported; export the role's credentials (aws configure export-credentials) \
             into AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN",
        )),
    }
}

/// The STS endpoint: `AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL`, else the regional one.
fn sts_endpoint(env: &ContextEnv, region: &str) -> String {
    env.first(&["AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"])
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com"))
}

/// Exchanges the token in `token_file` for the credentials of `role` with STS
/// `AssumeRoleWithWebIdentity` (an unsigned call, as the SDKs make it).
async fn web_identity(
    env: &ContextEnv,
    region: &str,
    token_file: &Path,
    role: &str,
    session: Option<&str>,
    source: &str,
) -> Result<AwsCredentials> {
    let fail = |message: String| credentials_error(source, message);
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| fail(format!("reading the token {}: {e}", token_file.display())))?;
    let session = session
        .map(str::to_string)
        .unwrap_or_else(|| format!("ocibuild-{}", now_secs()));
    let endpoint = sts_endpoint(env, region);
    let body = form(&[
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("RoleArn", role),
        ("RoleSessionName", &session),
        ("WebIdentityToken", token.trim()),
    ]);
    let client = crate::fetch::http_client(false)
        .map_err(|e| fail(ocibuild_image::chain::error_chain(&e)))?;
    let response = client
        .post(&endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| {
            fail(format!(
                "STS {endpoint}: {}",
                ocibuild_image::chain::error_chain(&e)
            ))
        })?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(fail(format!(
            "STS {endpoint} AssumeRoleWithWebIdentity for {role}: HTTP {status}{}",
            crate::object::error_detail(&text)
        )));
    }
    let field = |tag: &str| {
        xml_field(&text, tag)
            .map(str::to_string)
            .ok_or_else(|| fail(format!("STS {endpoint} answered without {tag}")))
    };
    Ok(AwsCredentials {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: field("SecretAccessKey")?,
        session_token: Some(field("SessionToken")?),
        source: source.to_string(),
    })
}

/// The addresses of the ECS and EKS credential agents.
const ECS_AGENTS: [[u8; 4]; 2] = [[169, 254, 170, 2], [169, 254, 170, 23]];

/// The URL of the container credentials endpoint, if the environment names one.
fn container_url(env: &ContextEnv) -> Result<Option<String>> {
    if let Some(rel) = env.var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        return Ok(Some(format!("http://169.254.170.2{rel}")));
    }
    let Some(full) = env.var("AWS_CONTAINER_CREDENTIALS_FULL_URI") else {
        return Ok(None);
    };
    let bad = |reason: &str| ContextError::InvalidEnv {
        name: "AWS_CONTAINER_CREDENTIALS_FULL_URI".to_string(),
        value: full.to_string(),
        reason: reason.to_string(),
    };
    let url = reqwest::Url::parse(full).map_err(|e| bad(&e.to_string()))?;
    // As the SDKs: plain http only to a loopback address or the ECS/EKS agents.
    let host = url.host_str().unwrap_or_default();
    let allowed_http = match host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback() || ECS_AGENTS.contains(&ip.octets()),
        Ok(std::net::IpAddr::V6(ip)) => ip.is_loopback(),
        Err(_) => host == "localhost",
    };
    match url.scheme() {
        "https" => Ok(Some(full.to_string())),
        "http" if allowed_http => Ok(Some(full.to_string())),
        _ => Err(bad(
            "must be https://, or http:// to a loopback address or the ECS/EKS agent",
        )),
    }
}

/// Credentials from the ECS/EKS container endpoint, when the environment names one.
async fn container_credentials(env: &ContextEnv) -> Result<Option<AwsCredentials>> {
    let Some(url) = container_url(env)? else {
        return Ok(None);
    };
    let source = "container credentials (AWS_CONTAINER_CREDENTIALS_*_URI)";
    let fail = |message: String| credentials_error(source, format!("{url}: {message}"));
    let token = match env.var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
        Some(file) => Some(
            std::fs::read_to_string(file)
                .map_err(|e| fail(format!("reading the token {file}: {e}")))?
                .trim()
                .to_string(),
        ),
        None => env
            .var("AWS_CONTAINER_AUTHORIZATION_TOKEN")
            .map(str::to_string),
    };
    let client = metadata_client().map_err(|e| fail(e.to_string()))?;
    let mut request = client.get(&url);
    if let Some(token) = token {
        request = request.header("authorization", token);
    }
    let json = json_answer(request).await.map_err(fail)?;
    json_credentials(&json, source).map(Some).map_err(fail)
}

/// `AccessKeyId`, `SecretAccessKey` and `Token` of a container or instance credentials
/// document.
fn json_credentials(
    json: &serde_json::Value,
    source: &str,
) -> std::result::Result<AwsCredentials, String> {
    let field = |name: &str| {
        json.get(name)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    match (field("AccessKeyId"), field("SecretAccessKey")) {
        (Some(id), Some(secret)) => Ok(AwsCredentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: field("Token"),
            source: source.to_string(),
        }),
        _ => Err(format!(
            "no AccessKeyId and SecretAccessKey in the answer{}",
            field("Message")
                .map(|m| format!(" ({m})"))
                .unwrap_or_default()
        )),
    }
}

/// Credentials of the EC2 instance's role (IMDSv2, else v1); `None` when no metadata
/// service answers or the instance has no role.
async fn instance_credentials(env: &ContextEnv) -> Result<Option<AwsCredentials>> {
    let base = env
        .var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .unwrap_or("http://169.254.169.254")
        .trim_end_matches('/')
        .to_string();
    let source = "EC2 instance metadata";
    let fail = |message: String| credentials_error(source, format!("{base}: {message}"));
    let client = metadata_client().map_err(|e| fail(e.to_string()))?;
    let token = match client
        .put(format!("{base}/latest/api/token"))
        .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
        .send()
        .await
    {
        // Not on EC2 (or the endpoint is unreachable): no instance credentials.
        Err(_) => return Ok(None),
        Ok(r) if r.status().is_success() => r.text().await.ok(),
        // IMDSv1 only.
        Ok(_) => None,
    };
    let get = |path: String| {
        let mut request = client.get(format!(
            "{base}/latest/meta-data/iam/security-credentials/{path}"
        ));
        if let Some(token) = &token {
            request = request.header("x-aws-ec2-metadata-token", token.trim());
        }
        request
    };
    let roles = match get(String::new()).send().await {
        Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
        Ok(r) if r.status().as_u16() == 404 => return Ok(None),
        Ok(r) => {
            return Err(fail(format!(
                "listing the instance's roles: HTTP {}",
                r.status()
            )))
        }
        Err(e) => return Err(fail(ocibuild_image::chain::error_chain(&e))),
    };
    let Some(role) = roles.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return Ok(None);
    };
    let json = json_answer(get(role.to_string())).await.map_err(fail)?;
    json_credentials(&json, source).map(Some).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_come_from_both_files_the_credentials_file_first() {
        let dir = tempfile::tempdir().unwrap();
        let credentials = dir.path().join("credentials");
        let config = dir.path().join("config");
        std::fs::write(
            &credentials,
            "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = s1\n\n\
             [dev]\n# a comment\naws_access_key_id=AKIDDEV\naws_secret_access_key=s2\n",
        )
        .unwrap();
        std::fs::write(
            &config,
            "[default]\nregion = eu-west-1\n[profile dev]\nregion = eu-north-1\n\
             aws_access_key_id = IGNORED\n[profile web]\nrole_arn = arn:aws:iam::1:role/r\n\
             web_identity_token_file = /t\n",
        )
        .unwrap();
        let env = ContextEnv::default()
            .with("AWS_SHARED_CREDENTIALS_FILE", credentials.to_str().unwrap())
            .with("AWS_CONFIG_FILE", config.to_str().unwrap());
        let default = load_profile(&env).unwrap();
        assert_eq!(default.get("aws_access_key_id"), Some("AKIDDEFAULT"));
        assert_eq!(region(&env, &default), "eu-west-1");
        let dev = load_profile(&env.clone().with("AWS_PROFILE", "dev")).unwrap();
        assert_eq!(dev.get("aws_access_key_id"), Some("AKIDDEV"));
        assert_eq!(region(&env, &dev), "eu-north-1");
        assert_eq!(
            region(&env.clone().with("AWS_REGION", "ap-south-1"), &dev),
            "ap-south-1"
        );
        let web = load_profile(&env.clone().with("AWS_PROFILE", "web")).unwrap();
        assert_eq!(web.get("role_arn"), Some("arn:aws:iam::1:role/r"));
        let err = load_profile(&env.clone().with("AWS_PROFILE", "nope")).unwrap_err();
        assert!(
            err.to_string()
                .contains("AWS_PROFILE=nope: no such profile"),
            "{err}"
        );
        // Without files, the default profile is simply empty.
        let none = load_profile(&ContextEnv::default().with("HOME", "/nonexistent")).unwrap();
        assert_eq!(none.get("region"), None);
    }

    #[test]
    fn container_endpoints_are_the_ecs_agent_loopback_or_https() {
        let env = |k: &str, v: &str| ContextEnv::default().with(k, v);
        let rel = env(
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "/v2/credentials/x",
        );
        assert_eq!(
            container_url(&rel).unwrap().as_deref(),
            Some("http://169.254.170.2/v2/credentials/x")
        );
        for ok in [
            "http://127.0.0.1:9000/creds",
            "http://localhost/creds",
            "http://169.254.170.23/v1/credentials",
            "https://creds.example.com/x",
        ] {
            let e = env("AWS_CONTAINER_CREDENTIALS_FULL_URI", ok);
            assert_eq!(container_url(&e).unwrap().as_deref(), Some(ok));
        }
        let e = env(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://10.0.0.1/creds",
        );
        assert!(matches!(
            container_url(&e),
            Err(ContextError::InvalidEnv { .. })
        ));
        assert_eq!(container_url(&ContextEnv::default()).unwrap(), None);
    }

    #[test]
    fn sts_is_the_regional_endpoint_unless_moved() {
        let env = ContextEnv::default();
        assert_eq!(
            sts_endpoint(&env, "eu-west-1"),
            "https://sts.eu-west-1.amazonaws.com"
        );
        let env = env.with("AWS_ENDPOINT_URL", "http://127.0.0.1:1");
        assert_eq!(sts_endpoint(&env, "eu-west-1"), "http://127.0.0.1:1");
        let env = env.with("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:2");
        assert_eq!(sts_endpoint(&env, "eu-west-1"), "http://127.0.0.1:2");
    }
}
