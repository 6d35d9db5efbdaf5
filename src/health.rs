//! Process-wide counters shown by `/healthz` and the `status` tool.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::{Value, json};

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
    /// How many times the settings in use were replaced by a reload.
    settings_generation: AtomicU64,
    /// Why the configuration could not be read again (the previous settings stay), until it can.
    settings_problem: Mutex<Option<String>>,
    /// Settings fixed at start whose value in the files changed since: they wait for a restart.
    settings_needing_restart: Mutex<Vec<String>>,
    /// Sessions whose client sets settings of its own, by session id.
    session_settings: Mutex<BTreeMap<String, SessionSettings>>,
}

/// A session whose client's environment sets settings differently from the daemon's.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionSettings {
    pub client: Option<String>,
    /// The variables that differ (names only).
    pub variables: Vec<String>,
    /// Whether its calls run with them (the local socket), or only the warning stands (TCP).
    pub applied: bool,
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
            settings_generation: AtomicU64::new(0),
            settings_problem: Mutex::new(None),
            settings_needing_restart: Mutex::new(Vec::new()),
            session_settings: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn set_settings_generation(&self, generation: u64) {
        self.settings_generation
            .store(generation, Ordering::Relaxed);
    }

    pub fn set_settings_needing_restart(&self, names: Vec<String>) {
        *self
            .settings_needing_restart
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = names;
    }

    pub fn set_settings_problem(&self, problem: Option<String>) {
        *self
            .settings_problem
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = problem;
    }

    /// Notes (or, with no variables, forgets) a session's own settings.
    pub fn note_session_settings(&self, session: &str, note: Option<SessionSettings>) {
        let mut notes = self
            .session_settings
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match note {
            Some(note) if !note.variables.is_empty() => {
                notes.insert(session.to_string(), note);
            }
            _ => {
                notes.remove(session);
            }
        }
    }

    /// The settings' state for `/healthz` and `status`: a reload's problem, and the sessions
    /// with settings of their own (variable names, never values).
    pub fn settings_report(&self) -> Value {
        let problem = self
            .settings_problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let sessions: Vec<Value> = self
            .session_settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(session, note)| json!({"session": session, "client": note.client, "variables": note.variables, "applied": note.applied}))
            .collect();
        let needs_restart = self
            .settings_needing_restart
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        json!({
            "generation": self.settings_generation.load(Ordering::Relaxed),
            "problem": problem,
            "needs_restart": needs_restart,
            "sessions_with_own_settings": sessions,
        })
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

/// `settings_report` as lines for a person (`exai status`, the `status` tool).
pub fn settings_lines(report: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(problem) = report["problem"].as_str() {
        lines.push(format!("settings: {problem}"));
    }
    for name in report["needs_restart"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        lines.push(format!(
            "settings: {name} changed in the config, but the running daemon keeps its value: it needs `exai daemon restart`"
        ));
    }
    for session in report["sessions_with_own_settings"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let names: Vec<&str> = session["variables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let who = match session["client"].as_str() {
            Some(client) => format!(
                "session {} ({client})",
                session["session"].as_str().unwrap_or("?")
            ),
            None => format!("session {}", session["session"].as_str().unwrap_or("?")),
        };
        lines.push(if session["applied"].as_bool() == Some(true) {
            format!(
                "settings: {who} runs with its own settings: its client sets {} differently from the daemon",
                names.join(", ")
            )
        } else {
            format!(
                "settings: {who} sets {} differently from the daemon, but it connects over TCP, where the daemon's settings apply",
                names.join(", ")
            )
        });
    }
    lines
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
