//! SIGINT, SIGTERM and SIGHUP during a build: the first one cancels the build (its RUN
//! command and every process of it killed, its temporary directories removed) and ocibuild
//! exits with 128 + the signal's number (130, 143, 129) once it has cleaned up; a second
//! one exits at once.

use anyhow::Result;
use ocibuild_core::CancelToken;
use std::future::Future;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use tokio::runtime::Runtime;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// The exit code of a process ended by a signal: 128 + its number.
const SIGHUP_EXIT: i32 = 129;
const SIGINT_EXIT: i32 = 130;
const SIGTERM_EXIT: i32 = 143;

/// The signal handlers of one build, watching from a task on its runtime.
pub struct Interrupts {
    token: CancelToken,
    /// The exit code of the first signal received, 0 before one.
    code: Arc<AtomicI32>,
}

impl Interrupts {
    /// Installs the handlers on `runtime`.
    pub fn install(runtime: &Runtime) -> Result<Interrupts> {
        let _entered = runtime.enter();
        let signals = [
            (signal(SignalKind::interrupt())?, SIGINT_EXIT),
            (signal(SignalKind::terminate())?, SIGTERM_EXIT),
            (signal(SignalKind::hangup())?, SIGHUP_EXIT),
        ];
        let interrupts = Interrupts {
            token: CancelToken::new(),
            code: Arc::new(AtomicI32::new(0)),
        };
        runtime.spawn(watch(
            signals,
            interrupts.token.clone(),
            interrupts.code.clone(),
        ));
        Ok(interrupts)
    }

    /// The token the build stops on.
    pub fn token(&self) -> CancelToken {
        self.token.clone()
    }

    /// The exit code to end with, once a signal came.
    pub fn exit_code(&self) -> Option<i32> {
        match self.code.load(Ordering::SeqCst) {
            0 => None,
            code => Some(code),
        }
    }

    /// Runs `work` on `runtime` until it finishes or a signal comes (then `work` is
    /// dropped and the result is `None`).
    pub fn run<T>(&self, runtime: &Runtime, work: impl Future<Output = T>) -> Option<T> {
        runtime.block_on(async {
            tokio::select! {
                done = work => Some(done),
                () = self.token.cancelled() => None,
            }
        })
    }
}

/// Waits for the signals: the first cancels `token` and records its exit code in `code`,
/// the second ends the process with its code.
async fn watch(mut signals: [(Signal, i32); 3], token: CancelToken, code: Arc<AtomicI32>) {
    loop {
        let [(int, int_code), (term, term_code), (hup, hup_code)] = &mut signals;
        let received = tokio::select! {
            _ = int.recv() => *int_code,
            _ = term.recv() => *term_code,
            _ = hup.recv() => *hup_code,
        };
        if token.is_cancelled() {
            std::process::exit(received);
        }
        code.store(received, Ordering::SeqCst);
        token.cancel();
        crate::log::print_error("interrupted: stopping the build (a second signal exits at once)");
    }
}
