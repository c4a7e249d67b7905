//! Downloads for `ADD <url>`: an `http://` or `https://` source is streamed to a file in a
//! scratch directory, checked against `--checksum` when one is given, and then copied into
//! the image like a single local file (see `copy::add_sources`).
//!
//! As the Dockerfile reference describes for remote files:
//!
//! - the file gets permissions `0600`;
//! - its mtime comes from the `Last-Modified` response header when there is one;
//! - its name is the file name the server gives in `Content-Disposition`, else the last
//!   segment of the URL path, else `index` (as BuildKit names it);
//! - it is not extracted, even when it is an archive, unless `ADD --unpack=true`.

use sha2::{Digest, Sha256, Sha384, Sha512};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What went wrong while downloading an `ADD` source.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL does not parse or is not `http(s)://`.
    #[error("{url}: not a valid http:// or https:// URL ({reason})")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// `--checksum` is not `ALGORITHM:HEX` with a supported algorithm.
    #[error(
        "--checksum={checksum}: {reason}; expected sha256:<64 hex digits> (or sha384:/sha512:)"
    )]
    InvalidChecksum {
        /// The checksum as given.
        checksum: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The request could not be sent or the body could not be read.
    #[error("downloading {url} failed: {message}")]
    Request {
        /// The URL.
        url: String,
        /// The error and its causes.
        message: String,
    },
    /// The server answered with an error status.
    #[error("downloading {url} failed: the server answered HTTP {status}; check the URL and that the file is public")]
    Status {
        /// The URL.
        url: String,
        /// The status line, e.g. `404 Not Found`.
        status: String,
    },
    /// The downloaded content does not have the digest given with `--checksum`.
    #[error("{url}: checksum mismatch: --checksum expects {expected} but the downloaded file is {actual}")]
    ChecksumMismatch {
        /// The URL.
        url: String,
        /// The digest given with `--checksum`.
        expected: String,
        /// The digest of what was downloaded.
        actual: String,
    },
    /// Writing the downloaded file failed.
    #[error("downloading {url}: {path}: {source}")]
    Io {
        /// The URL.
        url: String,
        /// The local path involved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// A downloaded file, ready to be copied into the image.
#[derive(Debug, Clone)]
pub struct FetchedFile {
    /// The URL it came from.
    pub url: String,
    /// The directory holding only this file (a fresh directory under the `dest_dir` given to
    /// [`download`]).
    pub dir: PathBuf,
    /// The file name inside [`FetchedFile::dir`]; also the name it gets in the image when
    /// the destination is a directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// `sha256:<hex>` of the content.
    pub digest: String,
    /// The `Last-Modified` time the server sent (also set as the file's mtime).
    pub last_modified: Option<SystemTime>,
}

impl FetchedFile {
    /// The host path of the downloaded file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }
}

/// A parsed `--checksum` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// `sha256`, `sha384` or `sha512`.
    pub algorithm: String,
    /// Lower-case hex digest.
    pub hex: String,
}

impl Checksum {
    /// Parses `sha256:<hex>` (also `sha384:` and `sha512:`).
    pub fn parse(text: &str) -> Result<Checksum, FetchError> {
        let bad = |reason: &str| FetchError::InvalidChecksum {
            checksum: text.to_string(),
            reason: reason.to_string(),
        };
        let (algorithm, hex) = text
            .split_once(':')
            .ok_or_else(|| bad("missing the algorithm prefix"))?;
        let len = match algorithm {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            _ => return Err(bad("unsupported algorithm")),
        };
        if hex.len() != len || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(&format!("the digest must be {len} hex digits")));
        }
        Ok(Checksum {
            algorithm: algorithm.to_string(),
            hex: hex.to_ascii_lowercase(),
        })
    }
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

/// True for sources `ADD` downloads: `http://` and `https://` URLs.
pub fn is_url(source: &str) -> bool {
    let lower = source.get(..8).unwrap_or(source).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// One of the running digests, as `--checksum` asks.
enum Hasher {
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl Hasher {
    fn new(algorithm: &str) -> Hasher {
        match algorithm {
            "sha384" => Hasher::Sha384(Sha384::new()),
            "sha512" => Hasher::Sha512(Sha512::new()),
            _ => Hasher::Sha256(Sha256::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha384(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

/// Downloads `url` into a new directory under `dest_dir` (which must exist), verifying
/// `checksum` (`sha256:<hex>`) when given. The file gets mode `0600` and the server's
/// `Last-Modified` time. Redirects are followed; an error status is an error.
pub async fn download(
    url: &str,
    dest_dir: &Path,
    checksum: Option<&str>,
) -> Result<FetchedFile, FetchError> {
    let expected = checksum.map(Checksum::parse).transpose()?;
    let parsed = parse_http_url(url)?;
    let request_err = |e: reqwest::Error| FetchError::Request {
        url: url.to_string(),
        message: ocibuild_image::chain::error_chain(&e),
    };
    let client = http_client(true).map_err(request_err)?;
    let mut response = client
        .get(parsed.clone())
        .send()
        .await
        .map_err(request_err)?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::Status {
            url: url.to_string(),
            status: status.to_string(),
        });
    }
    let (name, last_modified) = file_name_and_time(&response, &parsed);
    let dir = tempfile::Builder::new()
        .prefix("download-")
        .tempdir_in(dest_dir)
        .map_err(io_err(url, dest_dir))?
        .keep();
    let part = dir.join(".download");
    let algorithm = expected.as_ref().map_or("sha256", |c| c.algorithm.as_str());
    let saved = save_hashed(&mut response, &part, algorithm, url).await?;
    if let Some(expected) = &expected {
        if expected.hex != saved.hex {
            let _ = fs::remove_dir_all(&dir);
            return Err(FetchError::ChecksumMismatch {
                url: url.to_string(),
                expected: expected.to_string(),
                actual: format!("{}:{}", expected.algorithm, saved.hex),
            });
        }
    }
    let path = dir.join(&name);
    finish_file(&part, &path, last_modified, url)?;
    Ok(FetchedFile {
        url: url.to_string(),
        dir,
        name,
        size: saved.size,
        digest: saved.sha256,
        last_modified,
    })
}

/// An HTTP client with ocibuild's user agent and a 30 s connect timeout, following
/// redirects when `follow_redirects`.
pub(crate) fn http_client(follow_redirects: bool) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .user_agent(concat!("ocibuild/", env!("CARGO_PKG_VERSION")));
    if !follow_redirects {
        builder = builder.redirect(reqwest::redirect::Policy::none());
    }
    builder.build()
}

/// Why writing a response body to a file stopped.
pub(crate) enum BodyError {
    /// Reading the body failed.
    Read(reqwest::Error),
    /// Writing the file failed.
    Write(io::Error),
}

/// Writes the body of `response` to `file`, showing each chunk to `seen` too; returns the
/// body's size.
pub(crate) async fn write_body(
    response: &mut reqwest::Response,
    file: &mut fs::File,
    mut seen: impl FnMut(&[u8]),
) -> Result<u64, BodyError> {
    let mut size = 0u64;
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        seen(&chunk);
        file.write_all(&chunk).map_err(BodyError::Write)?;
        size += chunk.len() as u64;
    }
    file.flush().map_err(BodyError::Write)?;
    Ok(size)
}

/// `url` parsed, if it is an `http://` or `https://` URL.
fn parse_http_url(url: &str) -> Result<reqwest::Url, FetchError> {
    let invalid = |reason: String| FetchError::InvalidUrl {
        url: url.to_string(),
        reason,
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "scheme {:?} is not http or https",
            parsed.scheme()
        )));
    }
    Ok(parsed)
}

/// The file name a download gets (`Content-Disposition`, else the URL's last segment) and
/// the `Last-Modified` time the server sent.
fn file_name_and_time(
    response: &reqwest::Response,
    url: &reqwest::Url,
) -> (String, Option<SystemTime>) {
    let headers = response.headers();
    let name = headers
        .get(reqwest::header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .and_then(disposition_filename)
        .unwrap_or_else(|| url_file_name(url));
    let last_modified = headers
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date);
    (name, last_modified)
}

/// A body saved by [`save_hashed`].
struct Saved {
    /// Size in bytes.
    size: u64,
    /// Hex digest with the algorithm asked for.
    hex: String,
    /// `sha256:<hex>`.
    sha256: String,
}

/// Streams the body of `response` into the new file `part`, hashing it with `algorithm`
/// (and with sha256 too when that is another algorithm).
async fn save_hashed(
    response: &mut reqwest::Response,
    part: &Path,
    algorithm: &str,
    url: &str,
) -> Result<Saved, FetchError> {
    let mut file = fs::File::create(part).map_err(io_err(url, part))?;
    let mut hasher = Hasher::new(algorithm);
    let mut sha256 = (algorithm != "sha256").then(Sha256::new);
    let size = write_body(response, &mut file, |chunk| {
        hasher.update(chunk);
        if let Some(h) = sha256.as_mut() {
            h.update(chunk);
        }
    })
    .await
    .map_err(|e| match e {
        BodyError::Read(e) => FetchError::Request {
            url: url.to_string(),
            message: ocibuild_image::chain::error_chain(&e),
        },
        BodyError::Write(e) => io_err(url, part)(e),
    })?;
    let hex = hasher.finish();
    let sha256 = match sha256 {
        Some(h) => format!("sha256:{}", hex::encode(h.finalize())),
        None => format!("sha256:{hex}"),
    };
    Ok(Saved { size, hex, sha256 })
}

/// Renames the finished download `part` to `path`, with mode `0600` and the server's
/// `last_modified` time.
fn finish_file(
    part: &Path,
    path: &Path,
    last_modified: Option<SystemTime>,
    url: &str,
) -> Result<(), FetchError> {
    fs::rename(part, path).map_err(io_err(url, path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_err(url, path))?;
    if let Some(time) = last_modified {
        let ft = filetime::FileTime::from_system_time(time);
        filetime::set_file_times(path, ft, ft).map_err(io_err(url, path))?;
    }
    Ok(())
}

/// A [`FetchError::Io`] of downloading `url`, at `path`.
fn io_err(url: &str, path: &Path) -> impl FnOnce(io::Error) -> FetchError {
    let (url, path) = (url.to_string(), path.to_path_buf());
    move |source| FetchError::Io { url, path, source }
}

/// A usable file name: not empty, not `.`/`..`, without `/` or NUL.
fn plain_name(name: &str) -> Option<String> {
    let ok = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0']);
    ok.then(|| name.to_string())
}

/// The last non-empty segment of the URL path (percent-decoded), or `index` when there is
/// none.
pub fn url_file_name(url: &reqwest::Url) -> String {
    url.path_segments()
        .and_then(|mut segments| segments.rfind(|s| !s.is_empty()))
        .map(percent_decode)
        .and_then(|s| plain_name(&s))
        .unwrap_or_else(|| "index".to_string())
}

/// `s` with its `%XX` escapes decoded (invalid UTF-8 replaced).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| {
            std::str::from_utf8(h)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        });
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The base name of `filename=` in a `Content-Disposition` header.
fn disposition_filename(header: &str) -> Option<String> {
    header.split(';').skip(1).find_map(|param| {
        let (key, value) = param.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("filename") {
            return None;
        }
        let value = value.trim().trim_matches('"');
        if value.ends_with('/') {
            return None;
        }
        plain_name(value.rsplit('/').next().unwrap_or(value))
    })
}

/// Parses an HTTP date in the IMF-fixdate form (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn parse_http_date(text: &str) -> Option<SystemTime> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let [_, day, month, year, clock, zone] = words.as_slice() else {
        return None;
    };
    if *zone != "GMT" && *zone != "UTC" {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m == month)? as i64 + 1;
    let day: i64 = day.parse().ok()?;
    let year: i64 = year.parse().ok()?;
    let mut hms = clock.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if !(1..=31).contains(&day)
        || !(0..24).contains(&h)
        || !(0..60).contains(&m)
        || !(0..61).contains(&s)
    {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + m * 60 + s;
    u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

/// `secs` (since the epoch) as an IMF-fixdate HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn format_http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // `YYYY-MM-DDTHH:MM:SSZ`
    let iso = ocibuild_image::time::rfc3339(secs);
    let month = iso
        .get(5..7)
        .and_then(|m| m.parse::<usize>().ok())
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
        .unwrap_or(&"Jan");
    format!(
        "{}, {} {month} {} {} GMT",
        DAYS[((secs / 86_400) % 7) as usize],
        iso.get(8..10).unwrap_or("01"),
        iso.get(0..4).unwrap_or("1970"),
        iso.get(11..19).unwrap_or("00:00:00"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(
            format_http_date(784_111_777),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(format_http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        let now = 1_800_000_123;
        assert_eq!(
            parse_http_date(&format_http_date(now)),
            Some(UNIX_EPOCH + Duration::from_secs(now))
        );
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_secs(), 784_111_777);
        let t = parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT").unwrap();
        assert_eq!(t, UNIX_EPOCH);
        assert!(parse_http_date("yesterday").is_none());
        assert!(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT").is_none());
    }

    #[test]
    fn file_names() {
        let name = |u: &str| url_file_name(&reqwest::Url::parse(u).unwrap());
        assert_eq!(
            name("https://example.com/a/b/tool.tar.gz?x=1"),
            "tool.tar.gz"
        );
        assert_eq!(name("https://example.com/"), "index");
        assert_eq!(name("https://example.com"), "index");
        assert_eq!(name("https://example.com/dir/"), "dir");
        assert_eq!(name("https://example.com/my%20file"), "my file");
        assert_eq!(
            disposition_filename("attachment; filename=\"x/y.bin\""),
            Some("y.bin".into())
        );
        assert_eq!(disposition_filename("attachment; filename=\"..\""), None);
        assert_eq!(disposition_filename("inline"), None);
    }

    #[test]
    fn checksums() {
        let hex = "a".repeat(64);
        assert_eq!(
            Checksum::parse(&format!("sha256:{}", hex.to_uppercase()))
                .unwrap()
                .to_string(),
            format!("sha256:{hex}")
        );
        assert!(Checksum::parse("md5:abcd").is_err());
        assert!(Checksum::parse(&hex).is_err());
        assert!(Checksum::parse("sha256:xyz").is_err());
        assert!(is_url("HTTPS://x/y") && is_url("http://x") && !is_url("git@x:y"));
    }
}
