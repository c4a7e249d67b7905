//! `gs://BUCKET/OBJECT` contexts: one GET of the object's media through the JSON API, with
//! an OAuth access token found the way Google's client libraries find one (application
//! default credentials):
//!
//! 1. `STORAGE_EMULATOR_HOST` (`host:port` or a URL): the emulator, without credentials
//!    (`CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE`, gcloud's endpoint override, moves the API
//!    and keeps the credentials);
//! 2. `GOOGLE_APPLICATION_CREDENTIALS`: a service-account key (a JWT signed with its RSA
//!    key, exchanged at its `token_uri`) or an `authorized_user` file (its refresh token);
//! 3. gcloud's `application_default_credentials.json` (in `CLOUDSDK_CONFIG`, else
//!    `~/.config/gcloud`), the same two kinds;
//! 4. the metadata server of GCE, GKE or Cloud Run (`GCE_METADATA_HOST`, else
//!    `metadata.google.internal`), unless `NO_GCE_CHECK=true`;
//! 5. nothing: the request is sent without credentials (public objects).

use crate::object::{
    credentials_error, form, json_answer, json_of, metadata_client, now_secs, request_error,
    uri_encode, ObjectGet,
};
use crate::{fetch, ContextEnv, ContextError, Result};
use base64::Engine;
use std::path::{Path, PathBuf};

/// The scope asked for: reading objects.
const READ_SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_only";
/// Google's token endpoint, when a credentials file names none.
const TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// An access token and where it came from.
pub(crate) struct Token {
    pub access_token: String,
    pub source: String,
}

/// The JSON API root (`.../storage/v1`) and whether it is an emulator: the emulator of
/// `STORAGE_EMULATOR_HOST`, gcloud's `CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE` (a private
/// endpoint, used with credentials), else Google's.
fn api_root(env: &ContextEnv) -> (String, bool) {
    if let Some(host) = env.var("STORAGE_EMULATOR_HOST") {
        let host = host.trim_end_matches('/');
        let base = if host.contains("://") {
            host.to_string()
        } else {
            format!("http://{host}")
        };
        return (format!("{base}/storage/v1"), true);
    }
    match env.var("CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE") {
        Some(root) => (root.trim_end_matches('/').to_string(), false),
        None => (
            "https://storage.googleapis.com/storage/v1".to_string(),
            false,
        ),
    }
}

/// The media URL of `bucket`/`object` in the JSON API.
pub(crate) fn object_url(env: &ContextEnv, bucket: &str, object: &str) -> Result<reqwest::Url> {
    let (root, _) = api_root(env);
    let text = format!(
        "{root}/b/{}/o/{}?alt=media",
        uri_encode(bucket, false),
        uri_encode(object, false)
    );
    reqwest::Url::parse(&text).map_err(|e| {
        let (name, value) = env
            .first(&[
                "STORAGE_EMULATOR_HOST",
                "CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE",
            ])
            .unwrap_or(("STORAGE_EMULATOR_HOST", ""));
        ContextError::InvalidEnv {
            name: name.to_string(),
            value: value.to_string(),
            reason: e.to_string(),
        }
    })
}

/// GETs `gs://bucket/object` into the file `dest`.
pub(crate) async fn gcs_get(
    bucket: &str,
    object: &str,
    env: &ContextEnv,
    dest: &Path,
) -> Result<()> {
    let url = object_url(env, bucket, object)?;
    let token = access_token(env).await?;
    let name = format!("gs://{bucket}/{object}");
    let client = fetch::http_client(true)
        .map_err(|e| request_error(&name, &url, ocibuild_image::chain::error_chain(&e)))?;
    let mut request = client.get(url.clone());
    if let Some(token) = &token {
        request = request.bearer_auth(&token.access_token);
    }
    let source = token.map(|t| t.source);
    let get = ObjectGet {
        object: name,
        url,
        request,
    };
    get.save(dest, |status| match (status, source) {
        (401 | 403, None) => "; no Google credentials were found (GOOGLE_APPLICATION_CREDENTIALS, gcloud auth application-default login, the metadata server), so the request was not authorized".to_string(),
        (401 | 403, Some(source)) => format!("; check that the account of {source} may read the object"),
        (404, _) => "; check the bucket and the object name".to_string(),
        _ => String::new(),
    })
    .await
}

/// The token of the first credential source that has one; `None` for an emulator or when
/// there is none.
pub(crate) async fn access_token(env: &ContextEnv) -> Result<Option<Token>> {
    if api_root(env).1 {
        return Ok(None);
    }
    if let Some(file) = env.var("GOOGLE_APPLICATION_CREDENTIALS") {
        let source = format!("GOOGLE_APPLICATION_CREDENTIALS={file}");
        return file_token(Path::new(file), &source).await.map(Some);
    }
    if let Some(file) = well_known_file(env).filter(|f| f.is_file()) {
        let source = file.display().to_string();
        return file_token(&file, &source).await.map(Some);
    }
    if env.flag("NO_GCE_CHECK") {
        return Ok(None);
    }
    metadata_token(env).await
}

/// gcloud's application default credentials file.
fn well_known_file(env: &ContextEnv) -> Option<PathBuf> {
    let name = "application_default_credentials.json";
    match env.var("CLOUDSDK_CONFIG") {
        Some(dir) => Some(PathBuf::from(dir).join(name)),
        None => env.home_path(&format!(".config/gcloud/{name}")),
    }
}

/// A token from the credentials file `path`: a service-account key or an authorized user.
async fn file_token(path: &Path, source: &str) -> Result<Token> {
    let fail = |message: String| credentials_error(source, message);
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("reading it: {e}")))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| fail(format!("not a JSON credentials file: {e}")))?;
    let field = |name: &str| {
        json.get(name)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| fail(format!("no {name:?} in the credentials file")))
    };
    let token_uri = json
        .get("token_uri")
        .and_then(|v| v.as_str())
        .unwrap_or(TOKEN_URI);
    let kind = field("type")?;
    let body = match kind {
        "service_account" => {
            let assertion = service_account_jwt(
                field("client_email")?,
                field("private_key")?,
                json.get("private_key_id").and_then(|v| v.as_str()),
                token_uri,
                now_secs(),
            )
            .map_err(fail)?;
            form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", &assertion),
            ])
        }
        "authorized_user" => form(&[
            ("grant_type", "refresh_token"),
            ("client_id", field("client_id")?),
            ("client_secret", field("client_secret")?),
            ("refresh_token", field("refresh_token")?),
        ]),
        other => {
            return Err(fail(format!(
                "credentials of type {other:?} are not supported; use a service-account key or `gcloud auth application-default login`"
            )))
        }
    };
    let client = metadata_client().map_err(|e| fail(e.to_string()))?;
    let request = client
        .post(token_uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    let access_token = json_answer(request)
        .await
        .and_then(|json| access_token_of(&json))
        .map_err(|e| fail(format!("token endpoint {token_uri}: {e}")))?;
    Ok(Token {
        access_token,
        source: source.to_string(),
    })
}

/// The `access_token` of a token endpoint's (or the metadata server's) JSON answer.
fn access_token_of(json: &serde_json::Value) -> std::result::Result<String, String> {
    json.get("access_token")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .ok_or_else(|| "the answer has no access_token".to_string())
}

/// The signed JWT (RS256) a service account exchanges for an access token.
pub(crate) fn service_account_jwt(
    email: &str,
    private_key_pem: &str,
    key_id: Option<&str>,
    token_uri: &str,
    now: u64,
) -> std::result::Result<String, String> {
    let b64 = |data: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data);
    let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = key_id {
        header["kid"] = serde_json::Value::from(kid);
    }
    let claims = serde_json::json!({
        "iss": email,
        "scope": READ_SCOPE,
        "aud": token_uri,
        "iat": now,
        "exp": now + 3600,
    });
    let signed = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let der = pem_body(private_key_pem, "PRIVATE KEY")
        .ok_or("private_key is not a PEM \"PRIVATE KEY\" (PKCS#8)")?;
    let key = ring::signature::RsaKeyPair::from_pkcs8(&der)
        .map_err(|e| format!("private_key is not a usable RSA key: {e}"))?;
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signed.as_bytes(),
        &mut signature,
    )
    .map_err(|_| "signing the token request failed".to_string())?;
    Ok(format!("{signed}.{}", b64(&signature)))
}

/// The decoded body of the first PEM block labelled `label`.
fn pem_body(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = pem[start..].find(&end)? + start;
    let text: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// The default service account's token from the metadata server; `None` when no metadata
/// server answers.
async fn metadata_token(env: &ContextEnv) -> Result<Option<Token>> {
    let host = env
        .var("GCE_METADATA_HOST")
        .unwrap_or("metadata.google.internal");
    let url = format!(
        "http://{host}/computeMetadata/v1/instance/service-accounts/default/token?scopes={}",
        uri_encode(READ_SCOPE, false)
    );
    let source = format!("the metadata server {host}");
    let fail = |message: String| credentials_error(&source, message);
    let client = metadata_client().map_err(|e| fail(e.to_string()))?;
    let request = client.get(&url).header("metadata-flavor", "Google");
    // Whether the server is there at all: a connection that fails means "not on Google
    // Cloud", not an error.
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) if e.is_connect() || e.is_timeout() => return Ok(None),
        Err(e) => return Err(fail(ocibuild_image::chain::error_chain(&e))),
    };
    if response.status().as_u16() == 404 {
        return Ok(None);
    }
    let access_token = json_of(response)
        .await
        .and_then(|json| access_token_of(&json))
        .map_err(fail)?;
    Ok(Some(Token {
        access_token,
        source,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_urls_encode_the_object_name_whole() {
        let env = ContextEnv::default();
        let url = object_url(&env, "b", "dir/my ctx.tar.gz").unwrap();
        assert_eq!(
            url.as_str(),
            "https://storage.googleapis.com/storage/v1/b/b/o/dir%2Fmy%20ctx.tar.gz?alt=media"
        );
        let env = env.with("STORAGE_EMULATOR_HOST", "127.0.0.1:9023");
        let url = object_url(&env, "b", "o").unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9023/storage/v1/b/b/o/o?alt=media"
        );
        let env = env.with("STORAGE_EMULATOR_HOST", "https://gcs.test/");
        let url = object_url(&env, "b", "o").unwrap();
        assert_eq!(
            url.as_str(),
            "https://gcs.test/storage/v1/b/b/o/o?alt=media"
        );
    }

    #[test]
    fn a_key_that_is_not_pkcs8_is_refused_with_a_reason() {
        let err = service_account_jwt("a@b", "not a key", None, TOKEN_URI, 0).unwrap_err();
        assert!(err.contains("PKCS#8"), "{err}");
        let pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let err = service_account_jwt("a@b", pem, None, TOKEN_URI, 0).unwrap_err();
        assert!(err.contains("not a usable RSA key"), "{err}");
    }
}
