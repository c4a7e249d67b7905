//! What the object-store contexts (S3, GCS, Azure) share: the GET of one object into a file,
//! the errors of their answers, and the short-lived client of metadata endpoints.

use crate::{fetch, io_err, ContextError, Result};
use std::fs;
use std::path::Path;
use std::time::Duration;

/// One object to download: its name for messages (`s3://b/k`, `gs://b/o`, an Azure URL)
/// and the request that gets it.
pub(crate) struct ObjectGet {
    /// The object as the user named it.
    pub object: String,
    /// The URL requested (without secrets).
    pub url: reqwest::Url,
    /// The request, with its authorization.
    pub request: reqwest::RequestBuilder,
}

impl ObjectGet {
    /// Sends the request and writes the body to the new file `dest`; an error status is an
    /// [`ContextError::ObjectStatus`] whose hint is `hint(status)`.
    pub async fn save(self, dest: &Path, hint: impl FnOnce(u16) -> String) -> Result<()> {
        let ObjectGet {
            object,
            url,
            request,
        } = self;
        let chain = |e: &reqwest::Error| ocibuild_image::chain::error_chain(e);
        let mut response = request
            .send()
            .await
            .map_err(|e| request_error(&object, &url, chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(ContextError::ObjectStatus {
                object,
                url: url.to_string(),
                status: status.to_string(),
                detail: error_detail(&body),
                hint: hint(status.as_u16()),
            });
        }
        let mut file = fs::File::create(dest).map_err(io_err(dest))?;
        fetch::write_body(&mut response, &mut file, |_| {})
            .await
            .map_err(|e| match e {
                fetch::BodyError::Read(e) => request_error(&object, &url, chain(&e)),
                fetch::BodyError::Write(e) => io_err(dest)(e),
            })?;
        Ok(())
    }
}

/// A [`ContextError::Credentials`] of `provider`.
pub(crate) fn credentials_error(provider: &str, message: impl Into<String>) -> ContextError {
    ContextError::Credentials {
        provider: provider.to_string(),
        message: message.into(),
    }
}

/// A [`ContextError::ObjectRequest`] about `object` at `url`.
pub(crate) fn request_error(object: &str, url: &reqwest::Url, message: String) -> ContextError {
    ContextError::ObjectRequest {
        object: object.to_string(),
        url: url.to_string(),
        message,
    }
}

/// `: Code: message` from an error document (S3's and Azure's XML, Google's JSON), or
/// empty.
pub(crate) fn error_detail(body: &str) -> String {
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(body) {
        let text = |v: &serde_json::Value, key: &str| v.get(key)?.as_str().map(str::to_string);
        // Google's `{"error": {"message": ...}}`, OAuth's `{"error": CODE,
        // "error_description": ...}`, AWS endpoints' `{"message": ...}`.
        let message = match json.get("error") {
            Some(error) if error.is_object() => text(error, "message"),
            Some(serde_json::Value::String(code)) => Some(match text(&json, "error_description") {
                Some(description) => format!("{code}: {description}"),
                None => code.clone(),
            }),
            _ => text(&json, "message").or_else(|| text(&json, "Message")),
        };
        if let Some(message) = message {
            return format!(": {message}");
        }
    }
    match (xml_field(body, "Code"), xml_field(body, "Message")) {
        (Some(c), Some(m)) => format!(": {c}: {}", first_line(m)),
        (Some(c), None) => format!(": {c}"),
        (None, Some(m)) => format!(": {}", first_line(m)),
        (None, None) => String::new(),
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text).trim()
}

/// Text between `<tag>` and `</tag>` in an XML document (S3, STS and Azure answers).
pub(crate) fn xml_field<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let start = body.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(body[start..end].trim())
}

/// A client for credential endpoints (instance metadata, container credentials, token
/// services): no proxy, no redirects, a 2 s connect timeout and 10 s in all, so that a
/// machine without such an endpoint is found out quickly.
pub(crate) fn metadata_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .user_agent(concat!("ocibuild/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The JSON body of `request`'s answer, which must be a success; the error is one line.
pub(crate) async fn json_answer(
    request: reqwest::RequestBuilder,
) -> std::result::Result<serde_json::Value, String> {
    let response = request
        .send()
        .await
        .map_err(|e| ocibuild_image::chain::error_chain(&e))?;
    json_of(response).await
}

/// The JSON body of `response`, which must be a success; the error is one line.
pub(crate) async fn json_of(
    response: reqwest::Response,
) -> std::result::Result<serde_json::Value, String> {
    let status = response.status();
    let text = response.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("HTTP {status}{}", error_detail(&text)));
    }
    serde_json::from_str(&text).map_err(|e| format!("the answer is not JSON: {e}"))
}

/// Percent-encodes everything but RFC 3986 unreserved characters (and `/` when asked).
pub(crate) fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `application/x-www-form-urlencoded` text of `pairs`.
pub(crate) fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", uri_encode(k, false), uri_encode(v, false)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The current time in seconds since the epoch.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_details_of_xml_and_json_documents() {
        let s3 = "<Error><Code>NoSuchKey</Code><Message>The key does not exist</Message></Error>";
        assert_eq!(error_detail(s3), ": NoSuchKey: The key does not exist");
        let azure = "<Error><Code>AuthorizationFailure</Code><Message>Server failed.\nRequestId:1</Message></Error>";
        assert_eq!(
            error_detail(azure),
            ": AuthorizationFailure: Server failed."
        );
        let gcs = r#"{"error":{"code":404,"message":"No such object: b/o"}}"#;
        assert_eq!(error_detail(gcs), ": No such object: b/o");
        assert_eq!(
            error_detail(r#"{"error":"invalid_grant"}"#),
            ": invalid_grant"
        );
        assert_eq!(error_detail("plain"), "");
        assert_eq!(form(&[("a b", "x/y=z")]), "a%20b=x%2Fy%3Dz");
    }
}
