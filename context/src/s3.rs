//! `s3://BUCKET/KEY` contexts: one GET signed with AWS signature version 4, with the
//! credentials of the AWS default chain: the environment's keys, web identity
//! (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`), the `~/.aws` profile (`AWS_PROFILE`),
//! container credentials (`AWS_CONTAINER_CREDENTIALS_*_URI`), then EC2 instance metadata.
//!
//! The region is `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region`, else
//! `us-east-1`. `S3_ENDPOINT`, `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` points to an
//! S3-compatible server, which is then addressed path-style (`ENDPOINT/BUCKET/KEY`) unless
//! `S3_FORCE_PATH_STYLE=false`; `S3_FORCE_PATH_STYLE=true` forces path style on AWS too.

use crate::aws::{self, AwsCredentials};
use crate::object::{now_secs, request_error, uri_encode, ObjectGet};
use crate::{fetch, parse_bool, ContextEnv, ContextError, Result};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::path::Path;

/// SHA-256 of the empty payload of a GET.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return Vec::new(),
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The inputs of one signature version 4 request signature.
#[derive(Debug, Clone)]
pub struct SigV4Request<'a> {
    /// `GET`, `PUT`, ...
    pub method: &'a str,
    /// The URI-encoded path (`/bucket/key`).
    pub canonical_uri: &'a str,
    /// The canonical query string (sorted, encoded), usually empty.
    pub canonical_query: &'a str,
    /// Headers to sign, names lower-case (must include `host` and `x-amz-date`).
    pub headers: &'a [(&'a str, &'a str)],
    /// Hex SHA-256 of the payload (or `UNSIGNED-PAYLOAD`).
    pub payload_sha256: &'a str,
    /// `YYYYMMDDTHHMMSSZ`, the value of `x-amz-date`.
    pub amz_date: &'a str,
    /// The region, e.g. `us-east-1`.
    pub region: &'a str,
    /// The service, `s3`.
    pub service: &'a str,
}

/// The `Authorization` header value signing `request` with AWS signature version 4.
pub fn sigv4_authorization(
    request: &SigV4Request<'_>,
    access_key: &str,
    secret_key: &str,
) -> String {
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(n, v)| {
            let value = v.split_whitespace().collect::<Vec<_>>().join(" ");
            (n.to_ascii_lowercase(), value)
        })
        .collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let signed_headers = headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method,
        request.canonical_uri,
        request.canonical_query,
        canonical_headers,
        signed_headers,
        request.payload_sha256
    );
    let date = request.amz_date.get(..8).unwrap_or(request.amz_date);
    let scope = format!("{date}/{}/{}/aws4_request", request.region, request.service);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        request.amz_date,
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let mut key = hmac_sha256(format!("AWS4{secret_key}").as_bytes(), date.as_bytes());
    for part in [request.region, request.service, "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    let signature = hex::encode(hmac_sha256(&key, string_to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"
    )
}

/// The current UTC time as `YYYYMMDDTHHMMSSZ`.
pub fn amz_date_now() -> String {
    ocibuild_image::time::rfc3339(now_secs()).replace(['-', ':'], "")
}

/// The S3-compatible endpoint the environment names, with the variable naming it.
fn endpoint(env: &ContextEnv) -> Option<(&str, &str)> {
    env.first(&["S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"])
}

/// The URL of `bucket`/`key` as the environment asks (endpoint, path or virtual-host style).
pub(crate) fn s3_url(
    bucket: &str,
    key: &str,
    env: &ContextEnv,
    region: &str,
) -> Result<reqwest::Url> {
    let force = match env.var("S3_FORCE_PATH_STYLE") {
        None => None,
        Some(v) => Some(parse_bool(v).ok_or_else(|| ContextError::InvalidEnv {
            name: "S3_FORCE_PATH_STYLE".to_string(),
            value: v.to_string(),
            reason: "must be true or false".to_string(),
        })?),
    };
    let encoded_key = uri_encode(key, true);
    let (base, path_style) = match endpoint(env) {
        Some((_, endpoint)) => {
            let with_scheme = if endpoint.contains("://") {
                endpoint.to_string()
            } else {
                format!("https://{endpoint}")
            };
            (with_scheme, force.unwrap_or(true))
        }
        None => (
            format!("https://s3.{region}.amazonaws.com"),
            force.unwrap_or(false),
        ),
    };
    let bad_endpoint = |reason: String| {
        let (name, value) = endpoint(env).unwrap_or(("S3_ENDPOINT", ""));
        ContextError::InvalidEnv {
            name: name.to_string(),
            value: value.to_string(),
            reason,
        }
    };
    let mut url = reqwest::Url::parse(&base).map_err(|e| bad_endpoint(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad_endpoint(
            "must be an http:// or https:// URL".to_string(),
        ));
    }
    let prefix = url.path().trim_end_matches('/').to_string();
    if path_style {
        url.set_path(&format!(
            "{prefix}/{}/{encoded_key}",
            uri_encode(bucket, false)
        ));
    } else {
        let host = format!("{bucket}.{}", url.host_str().unwrap_or_default());
        url.set_host(Some(&host))
            .map_err(|e| bad_endpoint(format!("bucket {bucket}: {e}")))?;
        url.set_path(&format!("{prefix}/{encoded_key}"));
    }
    Ok(url)
}

/// GETs `s3://bucket/key` into the file `dest`, signed when the credential chain finds
/// credentials.
pub(crate) async fn s3_get(bucket: &str, key: &str, env: &ContextEnv, dest: &Path) -> Result<()> {
    let profile = aws::load_profile(env)?;
    let region = aws::region(env, &profile);
    let url = s3_url(bucket, key, env, &region)?;
    let credentials = aws::credentials(env, &profile, &region).await?;
    let object = format!("s3://{bucket}/{key}");
    let client = fetch::http_client(false)
        .map_err(|e| request_error(&object, &url, ocibuild_image::chain::error_chain(&e)))?;
    let mut request = client.get(url.clone());
    if let Some(credentials) = &credentials {
        request = sign_s3_get(request, &url, &region, credentials);
    }
    let get = ObjectGet {
        object,
        url,
        request,
    };
    let source = credentials.map(|c| c.source);
    get.save(dest, |status| status_hint(status, source.as_deref()))
        .await
}

/// What to check after an S3 error status, given where the credentials came from.
fn status_hint(status: u16, source: Option<&str>) -> String {
    match (status, source) {
        (401 | 403, None) => "; no AWS credentials were found (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, web identity, container or instance credentials), so the request was not signed".to_string(),
        (401 | 403, Some(source)) => format!("; check the credentials (from {source}), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION"),
        (404, _) => "; check the bucket and the key".to_string(),
        (301 | 307, _) => "; the bucket is in another region: set AWS_REGION".to_string(),
        _ => String::new(),
    }
}

/// `request`, a GET of `url`, signed with signature version 4 (with the session token, if
/// any).
fn sign_s3_get(
    mut request: reqwest::RequestBuilder,
    url: &reqwest::Url,
    region: &str,
    credentials: &AwsCredentials,
) -> reqwest::RequestBuilder {
    let host = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let amz_date = amz_date_now();
    let mut headers = vec![
        ("host", host.as_str()),
        ("x-amz-content-sha256", EMPTY_SHA256),
        ("x-amz-date", amz_date.as_str()),
    ];
    if let Some(token) = credentials.session_token.as_deref() {
        headers.push(("x-amz-security-token", token));
    }
    let authorization = sigv4_authorization(
        &SigV4Request {
            method: "GET",
            canonical_uri: url.path(),
            canonical_query: "",
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
            amz_date: &amz_date,
            region,
            service: "s3",
        },
        &credentials.access_key_id,
        &credentials.secret_access_key,
    );
    for (name, value) in headers.iter().filter(|(n, _)| *n != "host") {
        request = request.header(*name, *value);
    }
    request.header(reqwest::header::AUTHORIZATION, authorization)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The "GET Object" example of the AWS signature version 4 documentation.
    #[test]
    fn sigv4_matches_the_documented_example() {
        let headers = [
            ("host", "examplebucket.s3.amazonaws.com"),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
        ];
        let auth = sigv4_authorization(
            &SigV4Request {
                method: "GET",
                canonical_uri: "/test.txt",
                canonical_query: "",
                headers: &headers,
                payload_sha256: EMPTY_SHA256,
                amz_date: "20130524T000000Z",
                region: "us-east-1",
                service: "s3",
            },
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn s3_urls() {
        let env = ContextEnv::default();
        let url = s3_url("b", "dir/my ctx.tar.gz", &env, "eu-west-1").unwrap();
        assert_eq!(
            url.as_str(),
            "https://b.s3.eu-west-1.amazonaws.com/dir/my%20ctx.tar.gz"
        );
        let env = ContextEnv::default().with("S3_ENDPOINT", "http://127.0.0.1:9000");
        let url = s3_url("b", "k.tgz", &env, "us-east-1").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:9000/b/k.tgz");
        let env = ContextEnv::default().with("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9001");
        let url = s3_url("b", "k.tgz", &env, "us-east-1").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:9001/b/k.tgz");
        let env = ContextEnv::default()
            .with("S3_ENDPOINT", "minio.example:9000")
            .with("S3_FORCE_PATH_STYLE", "false");
        let url = s3_url("b", "k.tgz", &env, "us-east-1").unwrap();
        assert_eq!(url.as_str(), "https://b.minio.example:9000/k.tgz");
        let env = ContextEnv::default().with("S3_FORCE_PATH_STYLE", "maybe");
        assert!(matches!(
            s3_url("b", "k", &env, "us-east-1"),
            Err(ContextError::InvalidEnv { .. })
        ));
    }

    #[test]
    fn amz_dates_have_the_basic_format() {
        let d = amz_date_now();
        assert_eq!(d.len(), 16, "{d}");
        assert!(d.ends_with('Z') && d.as_bytes()[8] == b'T', "{d}");
    }
}
