//! Process-wide counters shown by `/healthz` and the `status` tool.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// What the process is and how busy it is.
#[derive(Debug)]
pub struct Health {
    pub started: Instant,
    pub pid: u32,
    /// "daemon", or "stdio --no-daemon".
    pub mode: &'static str,
    /// Address the daemon listens on, if it is one.
    pub listen: Option<String>,
    sessions: AtomicUsize,
    /// Call results handed to a session and not yet written to its client.
    answers_pending: AtomicUsize,
}

impl Health {
    pub fn new(mode: &'static str, listen: Option<String>) -> Self {
        Self {
            started: Instant::now(),
            pid: std::process::id(),
            mode,
            listen,
            sessions: AtomicUsize::new(0),
            answers_pending: AtomicUsize::new(0),
        }
    }

    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
    }

    pub fn answer_pending(&self) {
        self.answers_pending.fetch_add(1, Ordering::SeqCst);
    }

    pub fn answer_settled(&self) {
        self.answers_pending.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn answers_pending(&self) -> usize {
        self.answers_pending.load(Ordering::SeqCst)
    }

    /// Counts a session until the returned guard drops.
    pub fn session_opened(self: &std::sync::Arc<Self>) -> SessionGuard {
        self.sessions.fetch_add(1, Ordering::Relaxed);
        SessionGuard(self.clone())
    }
}

/// Keeps one session counted.
pub struct SessionGuard(std::sync::Arc<Health>);

impl SessionGuard {
    pub fn health(&self) -> &Health {
        &self.0
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}
