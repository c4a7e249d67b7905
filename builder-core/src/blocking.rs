//! Long blocking work of a build (RUN commands, filesystem walks, unpacking, layer
//! compression, file copies) runs on tokio's blocking thread pool, never on the async
//! runtime's threads.

use crate::error::{BuildError, Result};

/// Runs `work` on the blocking thread pool and waits for it. A panic in `work` resumes on
/// the caller; a task the runtime dropped (it is shutting down) ends as
/// [`BuildError::Cancelled`].
pub(crate) async fn run<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    spawn(work).await?
}

/// Runs `work` on the blocking thread pool and returns what it returns (errors of its own
/// type included, for the caller to place). A panic in `work` resumes on the caller; a task
/// the runtime dropped ends as [`BuildError::Cancelled`].
pub(crate) async fn spawn<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => Ok(value),
        Err(e) => match e.try_into_panic() {
            Ok(payload) => std::panic::resume_unwind(payload),
            Err(_) => Err(BuildError::Cancelled),
        },
    }
}

/// Runs `work`, which borrows from its caller and so cannot move to the blocking pool,
/// with [`tokio::task::block_in_place`] where the runtime allows it (multi-threaded: the
/// worker's other tasks move to another thread meanwhile), and inline otherwise (a
/// current-thread runtime, or no runtime).
pub(crate) fn in_place<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}
