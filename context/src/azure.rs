//! Azure Blob Storage contexts, `https://ACCOUNT.blob.core.windows.net/CONTAINER/BLOB`: one
//! GET of the blob, authorized by the first of
//!
//! 1. a SAS token in the URL's query;
//! 2. `AZURE_STORAGE_CONNECTION_STRING`: its `SharedAccessSignature`, else its
//!    `AccountKey` (shared key);
//! 3. `AZURE_STORAGE_SAS_TOKEN`;
//! 4. `AZURE_STORAGE_KEY` (kaniko's `AZURE_STORAGE_ACCESS_KEY` too), a shared key of the
//!    account (`AZURE_STORAGE_ACCOUNT`, which must match the URL's, if set);
//! 5. nothing: an anonymous request (public containers).
//!
//! The request goes to the connection string's `BlobEndpoint` (or the one its
//! `DefaultEndpointsProtocol` and `EndpointSuffix` make, or the emulator's for
//! `UseDevelopmentStorage=true`), which is how an emulator such as azurite is reached, else
//! to the URL's host.

use crate::object::{credentials_error, now_secs, request_error, uri_encode, ObjectGet};
use crate::{fetch, ContextEnv, ContextError, Result};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::path::Path;

/// The REST API version the requests ask for.
pub const API_VERSION: &str = "2021-08-06";
/// The account of the storage emulator (azurite).
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
/// The well-known key of [`DEV_ACCOUNT`], published with the emulator.
pub const DEV_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A blob named by an Azure context URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureBlob {
    /// The storage account (`ACCOUNT` of `ACCOUNT.blob.core.windows.net`).
    pub account: String,
    /// The container.
    pub container: String,
    /// The blob name (decoded).
    pub blob: String,
    /// `https` or `http`.
    pub scheme: String,
    /// The SAS token of the URL's query, if any.
    pub sas: Option<String>,
}

/// How a request is authorized.
enum Auth {
    Sas(String),
    SharedKey { account: String, key: String },
    Anonymous,
}

/// The endpoint and credentials the environment gives for `blob`, and where they came from.
struct Access {
    /// The blob service endpoint, e.g. `https://acct.blob.core.windows.net` or
    /// `http://127.0.0.1:10000/devstoreaccount1`.
    endpoint: String,
    auth: Auth,
    source: String,
}

/// The `key=value` pairs of a connection string (`;`-separated; keys case-insensitive).
fn parse_connection_string(text: &str) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| ContextError::InvalidEnv {
                name: "AZURE_STORAGE_CONNECTION_STRING".to_string(),
                value: "(not shown)".to_string(),
                reason: format!(
                    "{:?} is not Key=Value",
                    part.split('=').next().unwrap_or(part)
                ),
            })?;
        map.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    Ok(map)
}

/// Where the request for `blob` goes and how it is authorized: the endpoint of the
/// connection string (else the URL's), the first credentials of the documented order.
fn access(env: &ContextEnv, blob: &AzureBlob) -> Result<Access> {
    let conn_var = "AZURE_STORAGE_CONNECTION_STRING";
    let c = match env.var(conn_var) {
        Some(text) => parse_connection_string(text)?,
        None => BTreeMap::new(),
    };
    let get = |k: &str| c.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let dev = get("usedevelopmentstorage").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let mismatch = |name: &str, account: &str| {
        credentials_error(
            name,
            format!(
                "it names account {account}, but the context is in account {}",
                blob.account
            ),
        )
    };
    if let Some(account) = get("accountname").or(dev.then_some(DEV_ACCOUNT)) {
        if account != blob.account {
            return Err(mismatch(conn_var, account));
        }
    }
    let endpoint = match get("blobendpoint") {
        Some(endpoint) => endpoint.trim_end_matches('/').to_string(),
        None if dev => format!("http://127.0.0.1:10000/{DEV_ACCOUNT}"),
        None => format!(
            "{}://{}.blob.{}",
            get("defaultendpointsprotocol").unwrap_or(&blob.scheme),
            blob.account,
            get("endpointsuffix").unwrap_or("core.windows.net")
        ),
    };
    let shared_key = |key: &str| Auth::SharedKey {
        account: blob.account.clone(),
        key: key.to_string(),
    };
    let (auth, source) = if let Some(sas) = &blob.sas {
        (Auth::Sas(sas.clone()), "the SAS token in the URL")
    } else if let Some(sas) = get("sharedaccesssignature") {
        (Auth::Sas(sas.to_string()), conn_var)
    } else if let Some(key) = get("accountkey").or(dev.then_some(DEV_ACCOUNT_KEY)) {
        (shared_key(key), conn_var)
    } else if let Some(sas) = env.var("AZURE_STORAGE_SAS_TOKEN") {
        (Auth::Sas(sas.to_string()), "AZURE_STORAGE_SAS_TOKEN")
    } else if let Some((name, key)) = env.first(&["AZURE_STORAGE_KEY", "AZURE_STORAGE_ACCESS_KEY"])
    {
        if let Some(account) = env
            .var("AZURE_STORAGE_ACCOUNT")
            .filter(|a| *a != blob.account)
        {
            return Err(mismatch("AZURE_STORAGE_ACCOUNT", account));
        }
        (shared_key(key), name)
    } else {
        (Auth::Anonymous, "no credentials")
    };
    Ok(Access {
        endpoint,
        auth,
        source: source.to_string(),
    })
}

/// GETs `blob` into the file `dest`.
pub(crate) async fn azure_get(blob: &AzureBlob, env: &ContextEnv, dest: &Path) -> Result<()> {
    let access = access(env, blob)?;
    let bad_endpoint = |reason: String| {
        credentials_error(
            &access.source,
            format!("blob endpoint {}: {reason}", access.endpoint),
        )
    };
    let mut url = reqwest::Url::parse(&format!(
        "{}/{}/{}",
        access.endpoint,
        uri_encode(&blob.container, false),
        uri_encode(&blob.blob, true)
    ))
    .map_err(|e| bad_endpoint(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad_endpoint("not an http:// or https:// URL".to_string()));
    }
    let object = format!(
        "{}://{}.blob.core.windows.net/{}/{}",
        blob.scheme, blob.account, blob.container, blob.blob
    );
    let client = fetch::http_client(true)
        .map_err(|e| request_error(&object, &url, ocibuild_image::chain::error_chain(&e)))?;
    let shown = url.clone();
    if let Auth::Sas(sas) = &access.auth {
        url.set_query(Some(sas.trim_start_matches('?')));
    }
    let headers = match &access.auth {
        Auth::SharedKey { account, key } => shared_key_headers("GET", &url, account, key, &[])
            .map_err(|reason| credentials_error(&access.source, reason))?,
        _ => version_headers(),
    };
    let mut request = client.get(url.clone());
    for (name, value) in &headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let get = ObjectGet {
        object,
        url: shown,
        request,
    };
    let anonymous = matches!(access.auth, Auth::Anonymous);
    let source = access.source;
    get.save(dest, |status| match status {
        401 | 403 | 404 if anonymous => "; no Azure credentials were found (AZURE_STORAGE_CONNECTION_STRING, a SAS token in the URL or AZURE_STORAGE_SAS_TOKEN, AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY), so the request was anonymous".to_string(),
        401 | 403 => format!("; check the credentials (from {source})"),
        404 => "; check the container and the blob name".to_string(),
        _ => String::new(),
    })
    .await
}

/// `x-ms-date` (now) and `x-ms-version`, which every request carries.
fn version_headers() -> Vec<(String, String)> {
    vec![
        ("x-ms-date".to_string(), fetch::format_http_date(now_secs())),
        ("x-ms-version".to_string(), API_VERSION.to_string()),
    ]
}

/// The headers of a request signed with Shared Key: `headers` (the `x-ms-*` and standard
/// ones it sends, e.g. `content-length`), `x-ms-date` (now), `x-ms-version` and
/// `authorization`, for `method` of `url` in `account` with the base64 account `key`.
pub fn shared_key_headers(
    method: &str,
    url: &reqwest::Url,
    account: &str,
    key: &str,
    headers: &[(&str, &str)],
) -> std::result::Result<Vec<(String, String)>, String> {
    let mut all: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    all.extend(version_headers());
    let signed: Vec<(&str, &str)> = all.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let authorization = shared_key_authorization(
        &SharedKeyRequest {
            method,
            account,
            url,
            headers: &signed,
        },
        key,
    )?;
    all.push(("authorization".to_string(), authorization));
    Ok(all)
}

/// The inputs of one Shared Key signature.
#[derive(Debug, Clone)]
pub struct SharedKeyRequest<'a> {
    /// `GET`, `PUT`, ...
    pub method: &'a str,
    /// The storage account.
    pub account: &'a str,
    /// The request URL (its path and query are signed).
    pub url: &'a reqwest::Url,
    /// The request's headers: `x-ms-date`, `x-ms-version` and any other `x-ms-*` ones, and
    /// the standard ones that are signed (`Content-Length`, `Content-Type`, ...), if sent.
    pub headers: &'a [(&'a str, &'a str)],
}

/// The `Authorization` value (`SharedKey ACCOUNT:SIGNATURE`) of `request` signed with the
/// base64 account `key`; an error when the key is not base64.
pub fn shared_key_authorization(
    request: &SharedKeyRequest<'_>,
    key: &str,
) -> std::result::Result<String, String> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .map_err(|e| format!("the account key is not base64 ({e})"))?;
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .filter(|v| !(name == "content-length" && *v == "0"))
            .unwrap_or("")
    };
    let mut lines = vec![request.method.to_string()];
    for name in [
        "content-encoding",
        "content-language",
        "content-length",
        "content-md5",
        "content-type",
        "date",
        "if-modified-since",
        "if-match",
        "if-none-match",
        "if-unmodified-since",
        "range",
    ] {
        lines.push(header(name).to_string());
    }
    let mut ms: Vec<(String, &str)> = request
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim()))
        .filter(|(n, _)| n.starts_with("x-ms-"))
        .collect();
    ms.sort();
    lines.extend(ms.iter().map(|(n, v)| format!("{n}:{v}")));
    let mut resource = format!("/{}{}", request.account, request.url.path());
    let mut query: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in request.url.query_pairs() {
        query
            .entry(k.to_ascii_lowercase())
            .or_default()
            .push(v.into_owned());
    }
    for (k, mut values) in query {
        values.sort();
        resource.push_str(&format!("\n{k}:{}", values.join(",")));
    }
    lines.push(resource);
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
    mac.update(lines.join("\n").as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    Ok(format!("SharedKey {}:{signature}", request.account))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(sas: Option<&str>) -> AzureBlob {
        AzureBlob {
            account: "acct".into(),
            container: "ctx".into(),
            blob: "app.tar.gz".into(),
            scheme: "https".into(),
            sas: sas.map(str::to_string),
        }
    }

    #[test]
    fn credentials_come_in_the_documented_order() {
        let kind = |a: &Access| match &a.auth {
            Auth::Sas(s) => format!("sas {s}"),
            Auth::SharedKey { account, key } => format!("key {account} {key}"),
            Auth::Anonymous => "anonymous".to_string(),
        };
        let env = ContextEnv::default();
        let a = access(&env, &blob(None)).unwrap();
        assert_eq!(
            (kind(&a), a.endpoint.as_str()),
            ("anonymous".into(), "https://acct.blob.core.windows.net")
        );
        let env = env.with("AZURE_STORAGE_ACCESS_KEY", "k1");
        assert_eq!(kind(&access(&env, &blob(None)).unwrap()), "key acct k1");
        let env = env.with("AZURE_STORAGE_KEY", "k2");
        assert_eq!(kind(&access(&env, &blob(None)).unwrap()), "key acct k2");
        let env = env.with("AZURE_STORAGE_SAS_TOKEN", "sv=env");
        assert_eq!(kind(&access(&env, &blob(None)).unwrap()), "sas sv=env");
        assert_eq!(
            kind(&access(&env, &blob(Some("sv=url"))).unwrap()),
            "sas sv=url"
        );
        let env = env.with(
            "AZURE_STORAGE_CONNECTION_STRING",
            "DefaultEndpointsProtocol=http;AccountName=acct;AccountKey=k3;EndpointSuffix=core.chinacloudapi.cn",
        );
        let a = access(&env, &blob(None)).unwrap();
        assert_eq!(
            (kind(&a), a.endpoint.as_str()),
            (
                "key acct k3".into(),
                "http://acct.blob.core.chinacloudapi.cn"
            )
        );
        let env = env.with(
            "AZURE_STORAGE_CONNECTION_STRING",
            "UseDevelopmentStorage=true",
        );
        let dev = AzureBlob {
            account: DEV_ACCOUNT.into(),
            ..blob(None)
        };
        let a = access(&env, &dev).unwrap();
        assert_eq!(a.endpoint, "http://127.0.0.1:10000/devstoreaccount1");
        assert_eq!(kind(&a), format!("key {DEV_ACCOUNT} {DEV_ACCOUNT_KEY}"));
        let err = access(&env, &blob(None)).err().unwrap();
        assert!(
            err.to_string()
                .contains("names account devstoreaccount1, but the context is in account acct"),
            "{err}"
        );
        let env = ContextEnv::default()
            .with("AZURE_STORAGE_KEY", "k")
            .with("AZURE_STORAGE_ACCOUNT", "other");
        assert!(access(&env, &blob(None)).is_err());
        let env = ContextEnv::default().with(
            "AZURE_STORAGE_CONNECTION_STRING",
            "BlobEndpoint=http://x/;nonsense",
        );
        assert!(matches!(
            access(&env, &blob(None)),
            Err(ContextError::InvalidEnv { .. })
        ));
    }

    /// The string to sign of a GET with query parameters, by the rules of the Shared Key
    /// documentation, signed with a known key.
    #[test]
    fn shared_key_signs_the_canonical_string() {
        let url = reqwest::Url::parse(
            "http://127.0.0.1:10000/devstoreaccount1/c?restype=container&comp=list",
        )
        .unwrap();
        let headers = [
            ("x-ms-version", API_VERSION),
            ("x-ms-date", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("Content-Length", "0"),
        ];
        let auth = shared_key_authorization(
            &SharedKeyRequest {
                method: "GET",
                account: DEV_ACCOUNT,
                url: &url,
                headers: &headers,
            },
            DEV_ACCOUNT_KEY,
        )
        .unwrap();
        let expected_string = format!(
            "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Sun, 06 Nov 1994 08:49:37 GMT\nx-ms-version:{API_VERSION}\n/devstoreaccount1/devstoreaccount1/c\ncomp:list\nrestype:container"
        );
        let key = base64::engine::general_purpose::STANDARD
            .decode(DEV_ACCOUNT_KEY)
            .unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(expected_string.as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(auth, format!("SharedKey devstoreaccount1:{signature}"));
        let bad = SharedKeyRequest {
            method: "GET",
            account: "a",
            url: &url,
            headers: &[],
        };
        assert!(shared_key_authorization(&bad, "not base64!").is_err());
    }
}
