//! The one retry policy of the client: which failures are retried, how often, and how
//! long to wait between attempts.
//!
//! # What is retried
//!
//! Every request runs under [`RetryPolicy::run`] exactly once — nothing is retried at two
//! levels — so `N` retries mean at most `N + 1` attempts of that request:
//!
//! * manifest and blob downloads: one attempt is the GET, the whole body and its sha256
//!   check ([`ClientOptions::pull_retries`](crate::ClientOptions::pull_retries), else
//!   [`ClientOptions::retries`](crate::ClientOptions::retries));
//! * blob uploads: one attempt is the POST that opens the upload session and the PUT of
//!   the whole blob; manifest PUTs and the blob HEADs of a push
//!   ([`ClientOptions::push_retries`](crate::ClientOptions::push_retries), else
//!   `retries`);
//! * blob HEADs and token requests (`retries`).
//!
//! A cross-repository mount is tried once: when it fails the blob is uploaded instead.
//!
//! Retried failures: connection failures (refused, reset, closed or cut short mid-body),
//! the idle timeout ([`Error::Timeout`]), HTTP 5xx and 429, and a download whose sha256
//! does not match its digest ([`Error::DigestMismatch`]: a corrupt or truncated response).
//! Not retried: TLS failures, 401, 403, 404 and other 4xx answers, local I/O errors,
//! malformed manifests and digests. A 401 first makes the client authenticate and send
//! the request again; that is not a retry.
//!
//! # How long it waits
//!
//! Before retry `k` (0 for the first) it waits 200 ms · 2^k, at most 10 s, with jitter:
//! a random time between half and all of that. A 429 or 503 answer with `Retry-After`
//! (seconds, or an HTTP date) waits as long as the registry asks instead, at most 60 s.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use ocibuild_image::time::days_from_civil;

/// The wait before the first retry, doubled for each further one.
const BASE_DELAY: Duration = Duration::from_millis(200);
/// The longest wait between attempts without `Retry-After`.
const MAX_DELAY: Duration = Duration::from_secs(10);
/// The longest wait a `Retry-After` header gets.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How many times failing requests are retried, and how (see the [module](self) docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
}

/// What a failure means for the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Give up: another attempt would fail the same way.
    Fatal,
    /// Try again, after the registry's `Retry-After` when it sent one.
    Retry(Option<Duration>),
}

/// Whether failure `e` is worth another attempt.
pub(crate) fn verdict(e: &Error) -> Verdict {
    match e {
        Error::Http { source, .. } if is_transient(source) => Verdict::Retry(None),
        Error::Timeout { .. } | Error::DigestMismatch { .. } => Verdict::Retry(None),
        Error::Status {
            status,
            retry_after,
            ..
        } if *status >= 500 || *status == 429 => Verdict::Retry(*retry_after),
        _ => Verdict::Fatal,
    }
}

/// A request that failed in a way worth retrying: connecting, a timeout, sending, or
/// reading the body (a reset or cut-short body is a "decode" error to reqwest when it
/// streams the body).
pub(crate) fn is_transient(e: &reqwest::Error) -> bool {
    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body() || e.is_decode()
}

impl RetryPolicy {
    /// A policy of `retries` retries.
    pub(crate) fn new(retries: u32) -> RetryPolicy {
        RetryPolicy { retries }
    }

    /// Runs `op` until it succeeds, fails in a way not worth retrying ([`verdict`]), or
    /// has been retried `retries` times, waiting [`delay`] between attempts.
    pub(crate) async fn run<T, F, Fut>(self, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 0u32;
        loop {
            let err = match op().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            match verdict(&err) {
                Verdict::Retry(after) if attempt < self.retries => {
                    tokio::time::sleep(delay(attempt, after)).await;
                    attempt += 1;
                }
                _ => return Err(err),
            }
        }
    }
}

/// The wait before retry `attempt` (0 for the first): the registry's `retry_after`
/// (at most [`MAX_RETRY_AFTER`]) when it sent one, else exponential backoff with jitter.
pub(crate) fn delay(attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(after) = retry_after {
        return after.min(MAX_RETRY_AFTER);
    }
    let full = BASE_DELAY
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(MAX_DELAY);
    let half = full / 2;
    half + half.mul_f64(random_fraction())
}

/// A random number in `[0, 1)`, from the standard library's randomly keyed hasher.
fn random_fraction() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The wait a `Retry-After` header value asks for at time `now`: a number of seconds, or
/// an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`; a date in the past means no wait).
/// `None` when it is neither.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = parse_http_date(value)?;
    let now = now.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(when.saturating_sub(now)))
}

/// Seconds since the Unix epoch of an HTTP date in the preferred format (RFC 9110
/// IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`).
fn parse_http_date(text: &str) -> Option<u64> {
    let (_weekday, rest) = text.split_once(", ")?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = parts[..] else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let day: i64 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    let year: i64 = year.parse().ok().filter(|y| *y >= 1970)?;
    let hms: Vec<u64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = hms[..] else { return None };
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn status(status: u16, retry_after: Option<Duration>) -> Error {
        Error::Status {
            registry: "r".into(),
            repository: "a".into(),
            status,
            what: "blob".into(),
            detail: String::new(),
            retry_after,
        }
    }

    fn mismatch() -> Error {
        Error::DigestMismatch {
            registry: "r".into(),
            repository: "a".into(),
            what: "blob".into(),
            expected: "sha256:a".into(),
            actual: "sha256:b".into(),
        }
    }

    #[test]
    fn server_errors_throttling_timeouts_and_corrupt_downloads_are_retried() {
        assert_eq!(verdict(&status(500, None)), Verdict::Retry(None));
        assert_eq!(verdict(&status(502, None)), Verdict::Retry(None));
        let after = Some(Duration::from_secs(2));
        assert_eq!(verdict(&status(429, after)), Verdict::Retry(after));
        assert_eq!(verdict(&mismatch()), Verdict::Retry(None));
        let timeout = Error::Timeout {
            registry: "r".into(),
            repository: "a".into(),
            what: "blob".into(),
            idle: Duration::from_secs(3),
        };
        assert_eq!(verdict(&timeout), Verdict::Retry(None));
    }

    #[test]
    fn client_errors_and_local_failures_are_not_retried() {
        for s in [400, 401, 403, 404, 416] {
            assert_eq!(verdict(&status(s, None)), Verdict::Fatal, "{s}");
        }
        let io = Error::Io {
            path: "/x".into(),
            source: std::io::Error::other("disk full"),
        };
        assert_eq!(verdict(&io), Verdict::Fatal);
        let tls = Error::Tls {
            registry: "r".into(),
            repository: "a".into(),
            what: "blob".into(),
            reason: "UnknownIssuer".into(),
            hint: String::new(),
        };
        assert_eq!(verdict(&tls), Verdict::Fatal);
    }

    /// Runs a policy of `retries` over an operation failing with `fail(n)` for attempt
    /// `n` (`None`: success); returns the outcome and the number of attempts.
    async fn attempts(retries: u32, fail: impl Fn(u32) -> Option<Error>) -> (bool, u32) {
        let count = AtomicU32::new(0);
        let res = RetryPolicy::new(retries)
            .run(|| {
                let n = count.fetch_add(1, Ordering::SeqCst);
                let outcome = fail(n);
                async move { outcome.map_or(Ok(()), Err) }
            })
            .await;
        (res.is_ok(), count.load(Ordering::SeqCst))
    }

    #[tokio::test(start_paused = true)]
    async fn n_retries_mean_n_plus_one_attempts() {
        for n in [0, 1, 3, 6] {
            let (ok, tries) = attempts(n, |_| Some(status(500, None))).await;
            assert!(!ok);
            assert_eq!(tries, n + 1, "retries {n}");
        }
        let (ok, tries) = attempts(3, |n| (n < 2).then(|| status(503, None))).await;
        assert!(ok);
        assert_eq!(tries, 3);
        let (ok, tries) = attempts(3, |n| (n < 1).then(mismatch)).await;
        assert!(ok, "a corrupt download is retried, not fatal");
        assert_eq!(tries, 2);
        let (ok, tries) = attempts(5, |_| Some(status(404, None))).await;
        assert!(!ok);
        assert_eq!(tries, 1, "a 404 is final");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_waited_for() {
        let start = tokio::time::Instant::now();
        let after = Some(Duration::from_secs(7));
        let (ok, tries) = attempts(3, |n| (n < 1).then(|| status(429, after))).await;
        assert!(ok);
        assert_eq!(tries, 2);
        assert!(
            start.elapsed() >= Duration::from_secs(7),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for attempt in 0..20 {
            let full = BASE_DELAY
                .saturating_mul(1 << attempt.min(16))
                .min(MAX_DELAY);
            for _ in 0..20 {
                let d = delay(attempt, None);
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
            }
        }
        assert_eq!(
            delay(0, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(delay(0, Some(Duration::from_secs(3600))), MAX_RETRY_AFTER);
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // 1994-11-06 08:49:37
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past"
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2000 12:00:00 GMT"),
            Some(951_825_600)
        );
        for bad in [
            "",
            "soon",
            "-1",
            "Sun, 06 Nov 1994 08:49:37",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:00:00 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }
}
