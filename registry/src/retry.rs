//! Retries: the backoff between attempts and which failures are worth another one.

use std::future::Future;
use std::time::Duration;

use reqwest::StatusCode;

use crate::error::{Error, Result};

/// Sleeps 100ms · 4^attempt, at most 30s.
pub(crate) async fn backoff(attempt: u32) {
    let ms = 100u64
        .saturating_mul(4u64.saturating_pow(attempt.min(6)))
        .min(30_000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// A request that failed in a way worth retrying (connection, timeout, request, body).
pub(crate) fn is_transient(e: &reqwest::Error) -> bool {
    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body()
}

/// A response status worth retrying: 5xx and 429.
pub(crate) fn is_transient_status(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

/// An operation's error worth running the whole operation again for: HTTP failures and
/// 5xx / 429 statuses.
fn is_transient_error(e: &Error) -> bool {
    matches!(e, Error::Http { .. })
        || matches!(e, Error::Status { status, .. } if *status >= 500 || *status == 429)
}

/// Runs `op` until it succeeds, fails with an error that is not transient, or has been
/// retried `limit` times, with [`backoff`] between attempts.
pub(crate) async fn with_retries<T, F, Fut>(limit: u32, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut attempt = 0u32;
    loop {
        match op().await {
            Err(e) if is_transient_error(&e) && attempt < limit => {
                backoff(attempt).await;
                attempt += 1;
            }
            res => return res,
        }
    }
}
