//! Spawning tasks with their tracing span, so a call's log lines keep its id across tasks.
//! The only place that calls `tokio::spawn` (clippy's `disallowed-methods` keeps it so). Also
//! the signal for the process groups exai spawns programs in (sub-agent CLIs, client CLIs).

use std::future::Future;

use tokio::task::JoinHandle;
use tracing::{Instrument, Span};

/// Runs `future` as a task inside the current span: whatever call or session started it follows.
pub fn in_current_span<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    in_span(Span::current(), future)
}

/// Runs `future` as a task inside `span`: its own (a call's supervisor), or `Span::none()` for the
/// process's own tasks (servers, timers) that outlive whoever started them.
pub fn in_span<F>(span: Span, future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    #[allow(clippy::disallowed_methods)] // The one call the lint leads everyone else here from.
    tokio::spawn(future.instrument(span))
}

/// Runs blocking work (disk, SQLite, token counting) on the blocking pool inside the current
/// span, so what it logs still names the call.
pub fn blocking<F, R>(work: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let span = Span::current();
    #[allow(clippy::disallowed_methods)] // As above: the one place that spawns blocking work.
    tokio::task::spawn_blocking(move || span.in_scope(work))
}

/// Sends `signal` to every process of group `pgid`; false when none is left.
pub fn signal_group(pgid: i32, signal: i32) -> bool {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    pgid > 1 && unsafe { libc::kill(-pgid, signal) } == 0
}
