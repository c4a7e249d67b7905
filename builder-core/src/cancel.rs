//! [`CancelToken`]: asks a running build to stop.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How long a cancelled build may take to stop by itself (kill its RUN command, finish the
/// blocking work under way) before it is abandoned and its files are removed.
const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// A cancellation flag shared between the caller and a build ([`crate::Build::cancel_on`]).
/// Clones share the flag. Once cancelled, the build kills the running RUN command, stops
/// before its next step, removes its temporary directories and ends with
/// [`crate::BuildError::Cancelled`].
///
/// ```
/// let token = ocibuild_core::CancelToken::new();
/// let for_the_build = token.clone();
/// token.cancel();
/// assert!(for_the_build.is_cancelled());
/// ```
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    cancelled: AtomicBool,
    notify: Notify,
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Cancels every build holding a clone of this token (idempotent).
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Completes once the token is cancelled.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }

    /// `Err(Cancelled)` once cancelled: the check between build steps.
    pub(crate) fn check(&self) -> crate::error::Result<()> {
        if self.is_cancelled() {
            Err(crate::BuildError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// Runs `work` until it finishes or `cancel` is cancelled; a cancelled `work` gets
/// [`CANCEL_GRACE`] to stop by itself before it is dropped.
pub(crate) async fn until_cancelled<T>(
    cancel: &CancelToken,
    work: impl Future<Output = crate::error::Result<T>>,
) -> crate::error::Result<T> {
    tokio::pin!(work);
    tokio::select! {
        result = &mut work => return result,
        () = cancel.cancelled() => {}
    }
    let _ = tokio::time::timeout(CANCEL_GRACE, &mut work).await;
    Err(crate::BuildError::Cancelled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cancelled_completes_after_cancel_from_another_task() {
        let token = CancelToken::new();
        let waiter = tokio::spawn({
            let token = token.clone();
            async move { token.cancelled().await }
        });
        tokio::task::yield_now().await;
        assert!(!token.is_cancelled());
        token.cancel();
        waiter.await.unwrap();
        assert!(token.check().is_err());
    }
}
