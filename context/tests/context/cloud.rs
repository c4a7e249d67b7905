//! Object-store contexts against the lab's emulators, with each credential source:
//!
//! - S3: moto, which checks signatures and session tokens, with keys from the environment,
//!   from profile files, from a web identity token (through a loopback STS front, see
//!   [`sts_front`]), from a container credentials endpoint and from instance metadata;
//! - GCS: gcp-storage-emulator (anonymous, as with every emulator), and a loopback API and
//!   token service that checks service-account JWTs with `openssl`, user refresh tokens
//!   and a metadata server;
//! - Azure Blob Storage: azurite with its well-known account, reached through connection
//!   strings, with shared keys and SAS tokens.

use super::archive::{gzip, names, sample_tar};
use super::server::{json_ok, serve, Answer, Seen};
use super::{prepare_context_with, read};
use base64::Engine;
use hmac::{Hmac, Mac};
use ocibuild_context::azure::{shared_key_headers, DEV_ACCOUNT, DEV_ACCOUNT_KEY};
use ocibuild_context::s3::amz_date_now;
use ocibuild_context::{
    parse_context, sigv4_authorization, ContextEnv, ContextError, GitOptions, SigV4Request,
};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

// ---------------------------------------------------------------------------------------
// helpers

fn lab_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the test lab with scripts/lab.sh up and eval \"$(scripts/lab.sh env)\"")
    })
}

/// A name no other test (or run) uses: lower-case letters, digits and `-`.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Prepares `context` (its `app` directory) with `env` in a fresh work directory.
async fn fetch(
    context: &str,
    env: &ContextEnv,
) -> Result<(tempfile::TempDir, PathBuf), ContextError> {
    let work = tempfile::tempdir().unwrap();
    let source = parse_context(context).unwrap();
    let git = GitOptions::default();
    let dir = prepare_context_with(&source, Some("app"), &git, work.path(), env).await?;
    Ok((work, dir))
}

/// Fetches `context` with `env` and checks it holds the sample and left no download.
async fn fetch_ok(context: &str, env: &ContextEnv) {
    let (work, dir) = fetch(context, env)
        .await
        .unwrap_or_else(|e| panic!("{context} with {env:?}: {e}"));
    assert!(dir.starts_with(work.path()));
    assert_eq!(read(&dir.join("src/main.rs")), "fn main() {}\n");
    let downloads: Vec<_> = names(work.path())
        .into_iter()
        .filter(|n| n.starts_with("download-"))
        .collect();
    assert!(downloads.is_empty(), "download removed: {downloads:?}");
}

/// The error of fetching `context` with `env`.
async fn fetch_err(context: &str, env: &ContextEnv) -> ContextError {
    match fetch(context, env).await {
        Ok(_) => panic!("{context} with {env:?} was fetched"),
        Err(e) => e,
    }
}

fn assert_contains(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} not in: {text}");
    }
}

/// Runs `future` to completion on a runtime of its own (in a test server's thread).
fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

// ---------------------------------------------------------------------------------------
// S3

#[derive(Clone)]
struct S3Lab {
    endpoint: String,
    access: String,
    secret: String,
    role: String,
}

/// Temporary credentials of the lab's role, as STS hands them out.
struct Session {
    access: String,
    secret: String,
    token: String,
}

fn s3_lab() -> S3Lab {
    S3Lab {
        endpoint: lab_var("OCIBUILD_TEST_S3_ENDPOINT"),
        access: lab_var("OCIBUILD_TEST_S3_ACCESS_KEY"),
        secret: lab_var("OCIBUILD_TEST_S3_SECRET_KEY"),
        role: lab_var("OCIBUILD_TEST_S3_ROLE_ARN"),
    }
}

impl S3Lab {
    /// A request to the server signed with ocibuild's signature version 4 code, as the
    /// lab user: the status and the body.
    async fn signed(
        &self,
        method: &str,
        path: &str,
        service: &str,
        body: Vec<u8>,
    ) -> (u16, String) {
        let url = reqwest::Url::parse(&format!("{}{path}", self.endpoint)).unwrap();
        let host = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
        let payload = hex::encode(Sha256::digest(&body));
        let date = amz_date_now();
        let headers = [
            ("host", host.as_str()),
            ("x-amz-content-sha256", payload.as_str()),
            ("x-amz-date", date.as_str()),
        ];
        let auth = sigv4_authorization(
            &SigV4Request {
                method,
                canonical_uri: url.path(),
                canonical_query: url.query().unwrap_or(""),
                headers: &headers,
                payload_sha256: &payload,
                amz_date: &date,
                region: "us-east-1",
                service,
            },
            &self.access,
            &self.secret,
        );
        let mut request = reqwest::Client::new()
            .request(method.parse().unwrap(), url.clone())
            .header("x-amz-content-sha256", &payload)
            .header("x-amz-date", &date)
            .header("authorization", auth);
        if service == "sts" {
            request = request.header("content-type", "application/x-www-form-urlencoded");
        }
        let response = request.body(body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    async fn put(&self, path: &str, body: Vec<u8>) {
        let (status, text) = self.signed("PUT", path, "s3", body).await;
        assert!((200..300).contains(&status), "PUT {path}: {status}: {text}");
    }

    /// A new bucket holding the sample context; its `s3://` URL.
    async fn sample_object(&self) -> String {
        let bucket = unique("ctx");
        self.put(&format!("/{bucket}"), Vec::new()).await;
        let key = "builds/my%20ctx.tar.gz";
        self.put(&format!("/{bucket}/{key}"), gzip(&sample_tar()))
            .await;
        format!("s3://{bucket}/builds/my ctx.tar.gz")
    }

    /// The environment every S3 test starts from: the endpoint, no instance metadata (the
    /// machine is not on EC2) and no home directory.
    fn base_env(&self) -> ContextEnv {
        ContextEnv::default()
            .with("S3_ENDPOINT", &self.endpoint)
            .with("AWS_EC2_METADATA_DISABLED", "true")
    }

    /// Fresh credentials of the lab's role from the server's STS.
    async fn session(&self) -> Session {
        let body = format!(
            "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn={}&RoleSessionName=test&WebIdentityToken=lab-token",
            self.role
        );
        let (status, text) = self.signed("POST", "/", "sts", body.into_bytes()).await;
        assert_eq!(status, 200, "{text}");
        let field = |tag: &str| {
            let start = text.find(&format!("<{tag}>")).unwrap() + tag.len() + 2;
            let end = text[start..].find('<').unwrap() + start;
            text[start..end].to_string()
        };
        Session {
            access: field("AccessKeyId"),
            secret: field("SecretAccessKey"),
            token: field("SessionToken"),
        }
    }
}

#[tokio::test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
async fn s3_contexts_are_fetched_with_keys_from_the_environment() {
    let lab = s3_lab();
    let object = lab.sample_object().await;
    let env = lab
        .base_env()
        .with("AWS_ACCESS_KEY_ID", &lab.access)
        .with("AWS_SECRET_ACCESS_KEY", &lab.secret);
    fetch_ok(&object, &env).await;

    let wrong = env.clone().with("AWS_SECRET_ACCESS_KEY", "not-the-secret");
    let err = fetch_err(&object, &wrong).await;
    assert!(matches!(err, ContextError::ObjectStatus { .. }), "{err:?}");
    assert_contains(
        &err.to_string(),
        &[
            "HTTP 403",
            "SignatureDoesNotMatch",
            "AWS_SECRET_ACCESS_KEY",
            "from the environment",
        ],
    );

    let missing = object.replace("my ctx", "nope");
    let err = fetch_err(&missing, &env).await;
    assert_contains(
        &err.to_string(),
        &["HTTP 404", "check the bucket and the key"],
    );

    let half = env.clone().without("AWS_SECRET_ACCESS_KEY");
    let err = fetch_err(&object, &half).await;
    assert!(matches!(err, ContextError::Credentials { .. }), "{err:?}");
    assert_contains(
        &err.to_string(),
        &["AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"],
    );

    // No credentials anywhere: an unsigned request, which the server refuses.
    let err = fetch_err(&object, &lab.base_env()).await;
    assert_contains(
        &err.to_string(),
        &["HTTP 403", "no AWS credentials were found"],
    );
}

#[tokio::test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
async fn s3_credentials_come_from_profile_files() {
    let lab = s3_lab();
    let object = lab.sample_object().await;
    let home = tempfile::tempdir().unwrap();
    let aws = home.path().join(".aws");
    fs::create_dir_all(&aws).unwrap();
    fs::write(
        aws.join("credentials"),
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = wrong-secret\n\n\
             [ci]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            lab.access, lab.access, lab.secret
        ),
    )
    .unwrap();
    fs::write(aws.join("config"), "[profile ci]\nregion = us-east-1\n").unwrap();
    let env = lab.base_env().with("HOME", home.path().to_str().unwrap());

    fetch_ok(&object, &env.clone().with("AWS_PROFILE", "ci")).await;
    // The default profile has the wrong secret, and the error says where it came from.
    let err = fetch_err(&object, &env).await;
    assert_contains(
        &err.to_string(),
        &["HTTP 403", "profile default in", ".aws/credentials"],
    );
    // Keys in the environment come before the profile.
    let keys = env
        .clone()
        .with("AWS_ACCESS_KEY_ID", &lab.access)
        .with("AWS_SECRET_ACCESS_KEY", &lab.secret);
    fetch_ok(&object, &keys).await;
    // The files can be elsewhere.
    let moved = lab
        .base_env()
        .with(
            "AWS_SHARED_CREDENTIALS_FILE",
            aws.join("credentials").to_str().unwrap(),
        )
        .with("AWS_CONFIG_FILE", aws.join("config").to_str().unwrap())
        .with("AWS_PROFILE", "ci");
    fetch_ok(&object, &moved).await;
    let err = fetch_err(&object, &env.clone().with("AWS_PROFILE", "nope")).await;
    assert_contains(&err.to_string(), &["AWS_PROFILE=nope: no such profile"]);
}

/// A loopback STS that takes `AssumeRoleWithWebIdentity` unsigned, as AWS does, checks the
/// token is `token`, and passes the call on to the lab's server signed (moto, with its
/// authentication on, wants every call signed). Returns the STS URL and the log.
fn sts_front(lab: &S3Lab, token: &str) -> (String, super::server::Log) {
    let (lab, token) = (lab.clone(), token.to_string());
    let (port, log) = serve(move |seen: &Seen| -> Answer {
        let valid = seen.method == "POST"
            && seen.header("authorization").is_none()
            && seen.form("Action").as_deref() == Some("AssumeRoleWithWebIdentity")
            && seen.form("WebIdentityToken").as_deref() == Some(token.as_str());
        if !valid {
            let body = "<ErrorResponse><Error><Code>InvalidIdentityToken</Code><Message>bad token</Message></Error></ErrorResponse>";
            return (400, body.as_bytes().to_vec());
        }
        let (status, text) =
            block_on(lab.signed("POST", "/", "sts", seen.body.clone().into_bytes()));
        (status, text.into_bytes())
    });
    (format!("http://127.0.0.1:{port}"), log)
}

#[tokio::test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
async fn s3_credentials_come_from_a_web_identity_token() {
    let lab = s3_lab();
    let object = lab.sample_object().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    fs::write(&token_file, "eyJ.service-account.token\n").unwrap();
    let (sts, log) = sts_front(&lab, "eyJ.service-account.token");
    let env = lab
        .base_env()
        .with("AWS_ENDPOINT_URL_STS", &sts)
        .with("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_str().unwrap())
        .with("AWS_ROLE_ARN", &lab.role)
        .with("AWS_ROLE_SESSION_NAME", "ocibuild-test");
    fetch_ok(&object, &env).await;
    {
        let seen = log.lock().unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].form("RoleArn").as_deref(), Some(lab.role.as_str()));
        assert_eq!(
            seen[0].form("RoleSessionName").as_deref(),
            Some("ocibuild-test")
        );
    }

    // The same role from a profile.
    let config = dir.path().join("config");
    fs::write(
        &config,
        format!(
            "[profile irsa]\nrole_arn = {}\nweb_identity_token_file = {}\n",
            lab.role,
            token_file.display()
        ),
    )
    .unwrap();
    let profile = lab
        .base_env()
        .with("AWS_ENDPOINT_URL_STS", &sts)
        .with("AWS_CONFIG_FILE", config.to_str().unwrap())
        .with("AWS_PROFILE", "irsa");
    fetch_ok(&object, &profile).await;

    // A token STS refuses: the error says which exchange failed and why.
    fs::write(&token_file, "expired").unwrap();
    let err = fetch_err(&object, &env).await;
    assert!(matches!(err, ContextError::Credentials { .. }), "{err:?}");
    assert_contains(
        &err.to_string(),
        &[
            "web identity",
            "AssumeRoleWithWebIdentity",
            "HTTP 400",
            "InvalidIdentityToken",
        ],
    );
}

#[tokio::test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
async fn s3_credentials_come_from_the_container_endpoint() {
    let lab = s3_lab();
    let object = lab.sample_object().await;
    let session = lab.session().await;
    let document = serde_json::json!({
        "AccessKeyId": session.access,
        "SecretAccessKey": session.secret,
        "Token": session.token,
        "Expiration": "2099-01-01T00:00:00Z",
    });
    let (port, log) = serve(move |seen| match seen.header("authorization") {
        Some("Bearer pod-identity") if seen.path == "/v1/credentials" => json_ok(document.clone()),
        _ => (401, br#"{"message":"not authorized"}"#.to_vec()),
    });
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    fs::write(&token_file, "Bearer pod-identity\n").unwrap();
    let env = lab
        .base_env()
        .with(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("http://127.0.0.1:{port}/v1/credentials"),
        )
        .with(
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            token_file.to_str().unwrap(),
        );
    fetch_ok(&object, &env).await;
    assert_eq!(log.lock().unwrap().len(), 1);

    let wrong = env
        .without("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
        .with("AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer someone-else");
    let err = fetch_err(&object, &wrong).await;
    assert_contains(
        &err.to_string(),
        &["container credentials", "HTTP 401", "not authorized"],
    );
}

#[tokio::test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
async fn s3_credentials_come_from_instance_metadata_with_imdsv2() {
    let lab = s3_lab();
    let object = lab.sample_object().await;
    let session = lab.session().await;
    let document = serde_json::json!({
        "Code": "Success",
        "Type": "AWS-HMAC",
        "AccessKeyId": session.access,
        "SecretAccessKey": session.secret,
        "Token": session.token,
    });
    let (port, log) = serve(move |seen| {
        let roles = "/latest/meta-data/iam/security-credentials/";
        match (seen.method.as_str(), seen.path.as_str()) {
            ("PUT", "/latest/api/token")
                if seen
                    .header("x-aws-ec2-metadata-token-ttl-seconds")
                    .is_some() =>
            {
                (200, b"imds-session".to_vec())
            }
            ("GET", _) if seen.header("x-aws-ec2-metadata-token") != Some("imds-session") => {
                (401, Vec::new())
            }
            ("GET", path) if path == roles => (200, b"ocitest-web\n".to_vec()),
            ("GET", path) if path == format!("{roles}ocitest-web") => json_ok(document.clone()),
            _ => (404, Vec::new()),
        }
    });
    let env = lab.base_env().without("AWS_EC2_METADATA_DISABLED").with(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        format!("http://127.0.0.1:{port}"),
    );
    fetch_ok(&object, &env).await;
    let paths: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert_eq!(
        paths,
        [
            "PUT /latest/api/token",
            "GET /latest/meta-data/iam/security-credentials/",
            "GET /latest/meta-data/iam/security-credentials/ocitest-web",
        ]
    );
}

// ---------------------------------------------------------------------------------------
// GCS

/// A new bucket in the GCS emulator holding the sample context; its `gs://` URL.
async fn gcs_sample_object(emulator: &str) -> String {
    let bucket = unique("ctx");
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{emulator}/storage/v1/b?project=ocibuild"))
        .json(&serde_json::json!({ "name": bucket }))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{:?}", created.text().await);
    let object = "builds/my ctx.tar.gz";
    let uploaded = client
        .post(format!("{emulator}/upload/storage/v1/b/{bucket}/o"))
        .query(&[("uploadType", "media"), ("name", object)])
        .header("content-type", "application/gzip")
        .body(gzip(&sample_tar()))
        .send()
        .await
        .unwrap();
    assert!(
        uploaded.status().is_success(),
        "{:?}",
        uploaded.text().await
    );
    format!("gs://{bucket}/{object}")
}

#[tokio::test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
async fn gcs_contexts_are_fetched_from_the_emulator_anonymously() {
    let emulator = lab_var("OCIBUILD_TEST_GCS");
    let object = gcs_sample_object(&emulator).await;
    // Credentials are not used with an emulator: even a missing key file does not matter.
    let env = ContextEnv::default()
        .with("STORAGE_EMULATOR_HOST", &emulator)
        .with("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json");
    fetch_ok(&object, &env).await;
    let host_port = emulator.trim_start_matches("http://");
    fetch_ok(
        &object,
        &env.clone().with("STORAGE_EMULATOR_HOST", host_port),
    )
    .await;

    let err = fetch_err(&object.replace("my ctx", "nope"), &env).await;
    assert!(matches!(err, ContextError::ObjectStatus { .. }), "{err:?}");
    assert_contains(
        &err.to_string(),
        &["HTTP 404", "check the bucket and the object name"],
    );
}

/// An RSA key made with `openssl` in `dir`: the private key file (PKCS#8) and the public one.
fn rsa_key(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    let ok = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let p = private.to_str().unwrap();
    ok(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        p,
    ]);
    ok(&[
        "pkey",
        "-in",
        p,
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    (private, public)
}

/// Whether `jwt` is signed (RS256) by the key `public`, checked by `openssl`, and its claims.
fn verify_jwt(jwt: &str, public: &Path) -> Option<serde_json::Value> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (signed, signature) = jwt.rsplit_once('.')?;
    let dir = tempfile::tempdir().ok()?;
    fs::write(dir.path().join("data"), signed).ok()?;
    fs::write(dir.path().join("sig"), b64.decode(signature).ok()?).ok()?;
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(public)
        .arg("-signature")
        .arg(dir.path().join("sig"))
        .arg(dir.path().join("data"))
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let claims = b64.decode(signed.split('.').nth(1)?).ok()?;
    serde_json::from_slice(&claims).ok()
}

/// A loopback stand-in for Google's token service and storage API: it grants
/// `ya29.service` for a JWT signed by `public` whose claims name `email`, `ya29.user` for
/// the refresh token `user-refresh`, and serves the sample object (and only with one of
/// those tokens). Returns its root URL.
fn google_api(public: PathBuf, email: &str) -> String {
    let email = email.to_string();
    let object = gzip(&sample_tar());
    let (port, _) = serve(move |seen| {
        let bearer = seen.header("authorization").unwrap_or_default();
        if seen.path == "/token" {
            let grant = match seen.form("grant_type").as_deref() {
                Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => {
                    let claims = verify_jwt(&seen.form("assertion").unwrap_or_default(), &public);
                    claims
                        .filter(|c| c["iss"] == email.as_str())
                        .filter(|c| {
                            c["scope"]
                                .as_str()
                                .unwrap_or("")
                                .contains("devstorage.read_only")
                        })
                        .map(|_| "ya29.service")
                }
                Some("refresh_token")
                    if seen.form("refresh_token").as_deref() == Some("user-refresh") =>
                {
                    Some("ya29.user")
                }
                _ => None,
            };
            return match grant {
                Some(token) => json_ok(
                    serde_json::json!({"access_token": token, "token_type": "Bearer", "expires_in": 3599}),
                ),
                None => (
                    400,
                    br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#
                        .to_vec(),
                ),
            };
        }
        let wanted = "/storage/v1/b/bkt/o/builds%2Fctx.tar.gz?alt=media";
        match bearer {
            "Bearer ya29.service" | "Bearer ya29.user" | "Bearer ya29.metadata" if seen.path == wanted => (200, object.clone()),
            _ => (401, br#"{"error":{"code":401,"message":"Anonymous caller does not have storage.objects.get access."}}"#.to_vec()),
        }
    });
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn gcs_credentials_are_service_account_keys_user_credentials_or_the_metadata_server() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = rsa_key(dir.path(), "sa");
    let email = "builder@project.iam.gserviceaccount.com";
    let api = google_api(public, email);
    let key_file = |name: &str, private: &Path| {
        let path = dir.path().join(name);
        let key = serde_json::json!({
            "type": "service_account",
            "client_email": email,
            "private_key_id": "k1",
            "private_key": fs::read_to_string(private).unwrap(),
            "token_uri": format!("{api}/token"),
        });
        fs::write(&path, key.to_string()).unwrap();
        path
    };
    let object = "gs://bkt/builds/ctx.tar.gz";
    let base = ContextEnv::default()
        .with(
            "CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE",
            format!("{api}/storage/v1/"),
        )
        .with("NO_GCE_CHECK", "true");

    let sa = key_file("sa.json", &private);
    let env = base
        .clone()
        .with("GOOGLE_APPLICATION_CREDENTIALS", sa.to_str().unwrap());
    fetch_ok(object, &env).await;

    // gcloud's application default credentials of a user, in the well-known file.
    let gcloud = dir.path().join("home/.config/gcloud");
    fs::create_dir_all(&gcloud).unwrap();
    let user = serde_json::json!({
        "type": "authorized_user",
        "client_id": "id.apps.googleusercontent.com",
        "client_secret": "secret",
        "refresh_token": "user-refresh",
        "token_uri": format!("{api}/token"),
    });
    fs::write(
        gcloud.join("application_default_credentials.json"),
        user.to_string(),
    )
    .unwrap();
    let home = dir.path().join("home");
    fetch_ok(object, &base.clone().with("HOME", home.to_str().unwrap())).await;
    fetch_ok(
        object,
        &base
            .clone()
            .with("CLOUDSDK_CONFIG", gcloud.to_str().unwrap()),
    )
    .await;

    // The metadata server, asked with its header.
    let (port, _) = serve(|seen| match seen.header("metadata-flavor") {
        Some("Google")
            if seen
                .path
                .starts_with("/computeMetadata/v1/instance/service-accounts/default/token") =>
        {
            json_ok(serde_json::json!({"access_token": "ya29.metadata", "expires_in": 3599}))
        }
        _ => (403, Vec::new()),
    });
    let metadata = base
        .clone()
        .without("NO_GCE_CHECK")
        .with("GCE_METADATA_HOST", format!("127.0.0.1:{port}"));
    fetch_ok(object, &metadata).await;

    // A key the token service does not know: the exchange fails, and says so.
    let (other, _) = rsa_key(dir.path(), "other");
    let forged = key_file("forged.json", &other);
    let env = base
        .clone()
        .with("GOOGLE_APPLICATION_CREDENTIALS", forged.to_str().unwrap());
    let err = fetch_err(object, &env).await;
    assert!(matches!(err, ContextError::Credentials { .. }), "{err:?}");
    assert_contains(
        &err.to_string(),
        &[
            "GOOGLE_APPLICATION_CREDENTIALS",
            "token endpoint",
            "HTTP 400",
            "Invalid JWT Signature",
        ],
    );

    // No credentials at all: an anonymous request, refused, with what to set.
    let err = fetch_err(object, &base).await;
    assert_contains(
        &err.to_string(),
        &[
            "HTTP 401",
            "no Google credentials were found",
            "GOOGLE_APPLICATION_CREDENTIALS",
        ],
    );
    // No metadata server on the machine: the same.
    let absent = base
        .without("NO_GCE_CHECK")
        .with("GCE_METADATA_HOST", "127.0.0.1:1");
    let err = fetch_err(object, &absent).await;
    assert_contains(
        &err.to_string(),
        &["HTTP 401", "no Google credentials were found"],
    );
}

// ---------------------------------------------------------------------------------------
// Azure Blob Storage

/// azurite's blob endpoint, `http://127.0.0.1:PORT/devstoreaccount1`.
fn azurite() -> String {
    lab_var("OCIBUILD_TEST_AZURITE")
}

/// A PUT to azurite signed with the account key by ocibuild's Shared Key code.
async fn azure_put(path: &str, extra: &[(&str, &str)], body: Vec<u8>) {
    let url = reqwest::Url::parse(&format!("{}{path}", azurite())).unwrap();
    let length = body.len().to_string();
    let mut headers = vec![("content-length", length.as_str())];
    headers.extend_from_slice(extra);
    let signed = shared_key_headers("PUT", &url, DEV_ACCOUNT, DEV_ACCOUNT_KEY, &headers).unwrap();
    let mut request = reqwest::Client::new().put(url.clone());
    for (name, value) in signed.iter().filter(|(n, _)| n != "content-length") {
        request = request.header(name.as_str(), value.as_str());
    }
    let response = request.body(body).send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "PUT {url}: {status}: {text}");
}

/// A new container in azurite holding the sample context; its context URL.
async fn azure_sample_blob() -> String {
    let container = unique("ctx");
    azure_put(&format!("/{container}?restype=container"), &[], Vec::new()).await;
    let blob = format!("/{container}/builds/my%20ctx.tar.gz");
    azure_put(
        &blob,
        &[("x-ms-blob-type", "BlockBlob")],
        gzip(&sample_tar()),
    )
    .await;
    format!("https://{DEV_ACCOUNT}.blob.core.windows.net{blob}")
}

/// An account SAS (version 2019-12-12) for reading blobs, signed with `key`.
fn account_sas(key: &str) -> String {
    let (permissions, services, types, expiry, protocol, version) = (
        "rl",
        "b",
        "sco",
        "2099-01-01T00:00:00Z",
        "https,http",
        "2019-12-12",
    );
    let to_sign = format!(
        "{DEV_ACCOUNT}\n{permissions}\n{services}\n{types}\n\n{expiry}\n\n{protocol}\n{version}\n"
    );
    let key = base64::engine::general_purpose::STANDARD
        .decode(key)
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(to_sign.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let encoded: String = reqwest::Url::parse_with_params("http://x/", [("sig", signature)])
        .unwrap()
        .query()
        .unwrap()
        .to_string();
    format!("sv={version}&ss={services}&srt={types}&sp={permissions}&se={expiry}&spr=https%2Chttp&{encoded}")
}

/// Another valid account key, which azurite does not know.
fn wrong_key() -> String {
    base64::engine::general_purpose::STANDARD.encode([7u8; 64])
}

#[tokio::test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
async fn azure_contexts_are_fetched_with_a_connection_string_or_shared_keys() {
    let blob = azure_sample_blob().await;
    let endpoint = azurite();
    let connection = |key: &str| {
        format!("DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={key};BlobEndpoint={endpoint};")
    };
    let env = ContextEnv::default().with(
        "AZURE_STORAGE_CONNECTION_STRING",
        connection(DEV_ACCOUNT_KEY),
    );
    fetch_ok(&blob, &env).await;

    // The endpoint from the connection string, the key from AZURE_STORAGE_KEY (or kaniko's
    // AZURE_STORAGE_ACCESS_KEY).
    let endpoint_only = ContextEnv::default()
        .with(
            "AZURE_STORAGE_CONNECTION_STRING",
            format!("BlobEndpoint={endpoint}"),
        )
        .with("AZURE_STORAGE_ACCOUNT", DEV_ACCOUNT);
    fetch_ok(
        &blob,
        &endpoint_only
            .clone()
            .with("AZURE_STORAGE_KEY", DEV_ACCOUNT_KEY),
    )
    .await;
    fetch_ok(
        &blob,
        &endpoint_only
            .clone()
            .with("AZURE_STORAGE_ACCESS_KEY", DEV_ACCOUNT_KEY),
    )
    .await;

    let wrong =
        ContextEnv::default().with("AZURE_STORAGE_CONNECTION_STRING", connection(&wrong_key()));
    let err = fetch_err(&blob, &wrong).await;
    assert!(matches!(err, ContextError::ObjectStatus { .. }), "{err:?}");
    assert_contains(
        &err.to_string(),
        &[
            "HTTP 403",
            "AuthorizationFailure",
            "AZURE_STORAGE_CONNECTION_STRING",
        ],
    );

    let err = fetch_err(&blob.replace("my%20ctx", "nope"), &env).await;
    assert_contains(
        &err.to_string(),
        &["HTTP 404", "check the container and the blob name"],
    );

    // No credentials: anonymous, and the container is private.
    let err = fetch_err(&blob, &endpoint_only).await;
    assert!(matches!(err, ContextError::ObjectStatus { .. }), "{err:?}");
    assert_contains(
        &err.to_string(),
        &["no Azure credentials were found", "anonymous"],
    );
}

#[tokio::test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
async fn azure_contexts_are_fetched_with_sas_tokens() {
    let blob = azure_sample_blob().await;
    let endpoint = azurite();
    let sas = account_sas(DEV_ACCOUNT_KEY);
    let endpoint_only = ContextEnv::default().with(
        "AZURE_STORAGE_CONNECTION_STRING",
        format!("BlobEndpoint={endpoint};"),
    );

    fetch_ok(&format!("{blob}?{sas}"), &endpoint_only).await;
    fetch_ok(
        &blob,
        &endpoint_only
            .clone()
            .with("AZURE_STORAGE_SAS_TOKEN", format!("?{sas}")),
    )
    .await;
    let in_string = ContextEnv::default().with(
        "AZURE_STORAGE_CONNECTION_STRING",
        format!("BlobEndpoint={endpoint};SharedAccessSignature={sas}"),
    );
    fetch_ok(&blob, &in_string).await;

    let forged = account_sas(&wrong_key());
    let err = fetch_err(&format!("{blob}?{forged}"), &endpoint_only).await;
    let text = err.to_string();
    assert_contains(&text, &["HTTP 403", "the SAS token in the URL"]);
    assert!(!text.contains("sig="), "the SAS token is not shown: {text}");
}
