//! The idle timeout of a request: no byte moved, either way, for
//! [`ClientOptions::idle_timeout`](crate::ClientOptions::idle_timeout).
//!
//! A request's [`Progress`] is touched whenever its upload body hands over a chunk; waiting
//! for the response head ends once the progress has been still for the timeout
//! ([`Progress::unless_stalled`]), and each chunk of a response body must come within the
//! timeout ([`next_within`]). A registry that accepts a connection and never answers, or
//! stops in the middle of a body, so fails the attempt instead of hanging the build; the
//! retry policy then tries again. Slow but moving transfers never time out.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::time::Instant;

/// When a byte of one request last moved.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    last: Arc<Mutex<Instant>>,
}

impl Progress {
    /// The progress of a request starting now.
    pub(crate) fn new() -> Progress {
        Progress {
            last: Arc::new(Mutex::new(Instant::now())),
        }
    }

    /// Records that bytes moved now.
    pub(crate) fn touch(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn last(&self) -> Instant {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves once nothing has moved for `limit`.
    async fn stalled(&self, limit: Duration) {
        loop {
            let deadline = self.last() + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }

    /// Runs `fut` to its end, or `None` when nothing moved for `limit` first.
    pub(crate) async fn unless_stalled<T>(
        &self,
        limit: Duration,
        fut: impl Future<Output = T>,
    ) -> Option<T> {
        tokio::select! {
            v = fut => Some(v),
            () = self.stalled(limit) => None,
        }
    }

    /// `stream`, touching this progress whenever it yields an item (for upload bodies).
    pub(crate) fn tracking<S: Stream>(&self, stream: S) -> impl Stream<Item = S::Item> {
        let progress = self.clone();
        stream.inspect(move |_| progress.touch())
    }
}

/// The next item of `stream`, or `None` when none came within `limit`.
pub(crate) async fn next_within<S: Stream + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> Option<Option<S::Item>> {
    tokio::time::timeout(limit, stream.next()).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stall_ends_the_wait_but_progress_keeps_it_alive() {
        let p = Progress::new();
        let never = std::future::pending::<()>();
        let start = Instant::now();
        assert_eq!(p.unless_stalled(Duration::from_secs(3), never).await, None);
        assert_eq!(start.elapsed(), Duration::from_secs(3));

        // Touched every second for 10 s: a 3 s limit never fires.
        let p = Progress::new();
        let toucher = p.clone();
        let moving = async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                toucher.touch();
            }
            "done"
        };
        let start = Instant::now();
        assert_eq!(
            p.unless_stalled(Duration::from_secs(3), moving).await,
            Some("done")
        );
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn each_body_chunk_must_come_within_the_limit() {
        let mut chunks = futures_util::stream::iter([1, 2]).chain(futures_util::stream::pending());
        let limit = Duration::from_secs(5);
        assert_eq!(next_within(&mut chunks, limit).await, Some(Some(1)));
        assert_eq!(next_within(&mut chunks, limit).await, Some(Some(2)));
        assert_eq!(next_within(&mut chunks, limit).await, None);
    }
}
