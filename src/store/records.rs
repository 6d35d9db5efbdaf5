//! What the store keeps: a call's states, transports and deliveries as their stored words, and
//! the rows written at a call's receipt and end and read back.

use serde::{Deserialize, Serialize};

/// The life of a call: `received → running → succeeded | failed | timed_out | cancelled | interrupted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    Received,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    Interrupted,
}

impl CallState {
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Received => "received",
            CallState::Running => "running",
            CallState::Succeeded => "succeeded",
            CallState::Failed => "failed",
            CallState::TimedOut => "timed_out",
            CallState::Cancelled => "cancelled",
            CallState::Interrupted => "interrupted",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "received" => CallState::Received,
            "running" => CallState::Running,
            "succeeded" => CallState::Succeeded,
            "failed" => CallState::Failed,
            "timed_out" => CallState::TimedOut,
            "cancelled" => CallState::Cancelled,
            "interrupted" => CallState::Interrupted,
            _ => return None,
        })
    }
    pub fn is_final(self) -> bool {
        !Self::OPEN.contains(&self)
    }

    /// The states of a call that has not ended.
    pub const OPEN: [CallState; 2] = [CallState::Received, CallState::Running];
    /// The ends other than success.
    pub const UNSUCCESSFUL: [CallState; 4] = [
        CallState::Failed,
        CallState::TimedOut,
        CallState::Cancelled,
        CallState::Interrupted,
    ];
}

/// The condition on `state` of an unsuccessful call, as the store's queries write it: the four
/// words for what it means (the form of Postgres's `calls_unsuccessful`), and the states it is
/// not (the form of SQLite's, V10, which its writes check without building a temporary index).
/// Each database uses its index only for a query that carries the index's own condition.
pub(super) fn unsuccessful_sql() -> String {
    format!(
        "state IN {} AND state NOT IN {} AND state <> '{}'",
        sql_list(&CallState::UNSUCCESSFUL),
        sql_list(&CallState::OPEN),
        CallState::Succeeded.as_str()
    )
}

/// States' stored words as an SQL list, `('received','running')` (fixed words: nothing to escape).
pub(super) fn sql_list(states: &[CallState]) -> String {
    let words: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
    format!("({})", words.join(","))
}

impl std::fmt::Display for CallState {
    // `pad`, so listings can align the word (`{:<11}`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// How a session reaches the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportKind {
    /// `exai stdio --no-daemon`: the service in-process over stdin/stdout.
    Stdio,
    /// The shim's WebSocket (`/ws`).
    Ws,
    /// Streamable HTTP (`/mcp`), served by rmcp.
    Http,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Stdio => "stdio",
            TransportKind::Ws => "ws",
            TransportKind::Http => "http",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [TransportKind::Stdio, TransportKind::Ws, TransportKind::Http]
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }

    /// Whether exai's own transport writes the answers, and so can record their delivery
    /// (the framed ones do; rmcp's HTTP writes them itself).
    pub fn reports_delivery(self) -> bool {
        self != TransportKind::Http
    }
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Whether, and how, a call's answer reached a client. Stored as its wire form (`delivered`,
/// `failed: …`), which `exai calls` shows and the SQL guard `delivered%` relies on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Not answered yet.
    Pending,
    /// Written to the client's stream.
    Delivered,
    /// Fetched later with `call_result`.
    DeliveredByCallResult,
    /// Fetched later with the 2025-11-25 `tasks/result`.
    DeliveredByTasksResult,
    /// Given to rmcp's HTTP transport, which writes it itself.
    HandedToHttp,
    /// The client got a call handle instead of the answer.
    HandleSent,
    /// The client got a task instead of the answer.
    TaskCreated,
    /// The answer waits for `call_result` (the client had a handle).
    KeptForCallResult,
    /// The client left before the answer; it is kept in the store.
    ClientGone,
    /// The call was cancelled: no answer was sent.
    NotSentCancelled,
    /// Writing the answer failed, and why.
    Failed(String),
}

impl Delivery {
    pub(super) const NAMES: [(&'static str, Delivery); 10] = [
        ("pending", Delivery::Pending),
        ("delivered", Delivery::Delivered),
        ("delivered_by_call_result", Delivery::DeliveredByCallResult),
        (
            "delivered_by_tasks_result",
            Delivery::DeliveredByTasksResult,
        ),
        ("handed_to_http", Delivery::HandedToHttp),
        ("handle_sent", Delivery::HandleSent),
        ("task_created", Delivery::TaskCreated),
        ("kept_for_call_result", Delivery::KeptForCallResult),
        ("client_gone", Delivery::ClientGone),
        ("not_sent_cancelled", Delivery::NotSentCancelled),
    ];

    /// Reads the stored form; anything unknown (an older exai's word) is kept as a failure text.
    pub fn parse(text: &str) -> Self {
        if let Some(why) = text.strip_prefix("failed: ") {
            return Delivery::Failed(why.to_string());
        }
        Self::NAMES
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| Delivery::Failed(text.to_string()))
    }
}

impl std::fmt::Display for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Delivery::Failed(why) = self {
            return write!(f, "failed: {why}");
        }
        let name = Self::NAMES
            .iter()
            .find(|(_, d)| d == self)
            .map(|(name, _)| *name)
            .unwrap_or("pending");
        f.write_str(name)
    }
}

impl Serialize for Delivery {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What is known about a call when it arrives.
#[derive(Debug, Clone, Serialize)]
pub struct NewCall {
    pub id: String,
    pub session_id: String,
    pub client_name: Option<String>,
    pub client_version: Option<String>,
    pub transport: TransportKind,
    pub tool: String,
    /// Arguments as JSON text, secrets redacted and size-capped.
    pub arguments: String,
    pub received_at_ms: i64,
    pub deadline_at_ms: i64,
    /// The replica (daemon) that runs it, when the process is one.
    pub replica: Option<String>,
    /// The user who made the call; `None` for the machine's owner (the daemon's own token).
    pub user_name: Option<String>,
}

/// What is known about a call when it ends.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FinishedCall {
    pub state: Option<CallState>,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: i64,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub tokens_in: Option<i64>,
    pub tokens_out: Option<i64>,
    pub reasoning_tokens: Option<i64>,
    /// Input tokens the provider served from its cache (part of `tokens_in`).
    pub cached_tokens: Option<i64>,
    /// Why the model stopped (`stop`, `length`, `sensitive`, …), as the provider said it.
    pub finish_reason: Option<String>,
    pub time_to_first_token_ms: Option<i64>,
    /// The model's reasoning, kept apart from the answer.
    pub reasoning: Option<String>,
    pub attempts: Option<i64>,
    pub progress_count: i64,
    pub last_progress: Option<String>,
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    /// The result as the client sees it (JSON), size-capped.
    pub result: Option<String>,
    pub is_error: bool,
    /// What the call cost in micro-dollars; `None`: unknown (a model without a price answered).
    pub cost_usd_micros: Option<i64>,
    /// What each provider billed, in micro-dollars (`None`: unknown), added to the day's totals.
    pub spend: Vec<(String, Option<i64>)>,
    /// The conversation the call added turns to (a thread's cost is its calls').
    pub thread_id: Option<String>,
    /// How the answer leaves, where the end decides it (a [`Delivery`]'s stored word).
    pub delivery: Option<String>,
}

/// One row of the `calls` table, as read back.
#[derive(Debug, Clone, Serialize)]
pub struct CallRow {
    pub id: String,
    pub session_id: String,
    pub client_name: Option<String>,
    pub client_version: Option<String>,
    pub transport: TransportKind,
    pub tool: String,
    pub arguments: String,
    pub state: CallState,
    pub received_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub deadline_at_ms: i64,
    pub duration_ms: Option<i64>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub tokens_in: Option<i64>,
    pub tokens_out: Option<i64>,
    pub reasoning_tokens: Option<i64>,
    pub time_to_first_token_ms: Option<i64>,
    /// The model's reasoning, kept apart from the answer.
    pub reasoning: Option<String>,
    pub attempts: Option<i64>,
    pub progress_count: i64,
    pub last_progress: Option<String>,
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    pub result: Option<String>,
    pub is_error: bool,
    pub delivery: Delivery,
    pub owner_pid: i64,
    /// Which tasks API the call was answered as a task for, if any ("2025-11-25", "extension").
    pub task: Option<String>,
    /// Input tokens the provider served from its cache (part of `tokens_in`).
    pub cached_tokens: Option<i64>,
    /// Why the model stopped (`stop`, `length`, `sensitive`, …), as the provider said it.
    pub finish_reason: Option<String>,
    /// The replica that runs (or ran) it.
    pub replica: Option<String>,
    /// Why another replica asked for it to be cancelled, if one did.
    pub cancel_requested: Option<String>,
    /// The user who made the call; `None` for the machine's owner.
    pub user_name: Option<String>,
    /// What the call cost in micro-dollars; `None`: unknown (a model without a price answered,
    /// or the call is older than costs).
    pub cost_usd_micros: Option<i64>,
}

impl CallRow {
    /// Why an interrupted call stopped, as recorded.
    pub fn interruption(&self) -> &str {
        self.error_message
            .as_deref()
            .unwrap_or("exai stopped while it ran")
    }
}

/// One daemon sharing the store, as it registered itself; its heartbeat says it is alive.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaRow {
    /// A UUIDv7 made at the process's start.
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub started_at_ms: i64,
    pub heartbeat_at_ms: i64,
    /// The exai version it runs.
    pub version: String,
}

impl std::fmt::Display for ReplicaRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "replica {} (host {}, pid {})",
            self.id, self.host, self.pid
        )
    }
}

/// A conversation thread as stored: its turns are JSON.
#[derive(Debug, Clone)]
pub struct ThreadRow {
    pub id: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub expires_at_ms: i64,
    pub turns: String,
    /// The user whose conversation it is; `None` for the machine's owner.
    pub user_name: Option<String>,
    /// What the conversation was first asked (secrets masked, bounded); kept once set.
    pub first_prompt: Option<String>,
    /// The tools that added turns, comma-separated, in the order they first did.
    pub tools: String,
    /// Turns ever added (the oldest may have been dropped since).
    pub turn_count: i64,
}

/// Which threads `list_threads` returns.
#[derive(Debug, Clone, Default)]
pub struct ThreadFilter {
    /// Only the thread of this id.
    pub id: Option<String>,
    /// Only threads of this user (`None`: everyone's).
    pub user: Option<String>,
    /// Only threads with a turn at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Only threads whose first prompt holds every one of these words (matched literally,
    /// case-insensitively).
    pub words: Vec<String>,
    pub limit: usize,
}

/// A thread as a listing shows it: no turns, what it cost.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadSummary {
    pub id: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub expires_at_ms: i64,
    pub user_name: Option<String>,
    pub first_prompt: Option<String>,
    pub tools: Vec<String>,
    pub turn_count: i64,
    /// Micro-dollars of the thread's calls whose cost is known.
    pub cost_usd_micros: i64,
    /// The thread's calls whose cost is unknown (a model without a price), not in the sum.
    pub unpriced_calls: i64,
}

/// Which calls `list` returns.
#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    pub failed_only: bool,
    pub running_only: bool,
    pub tool: Option<String>,
    /// Only calls from clients of this name.
    pub client: Option<String>,
    /// Only calls answered as tasks.
    pub tasks_only: bool,
    /// Only calls older than this id (ids grow with time): the next page after it.
    pub before_id: Option<String>,
    /// Only calls received at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Only calls of this user (`None`: everyone's).
    pub user: Option<String>,
    /// Only calls in this state (an outcome, or running).
    pub state: Option<CallState>,
    /// Only calls answered by this model.
    pub model: Option<String>,
    pub limit: usize,
}

/// The figures of one call that latency, error and token charts are drawn from.
#[derive(Debug, Clone, Serialize)]
pub struct CallFigures {
    pub model: Option<String>,
    pub state: CallState,
    pub received_at_ms: i64,
    pub duration_ms: Option<i64>,
    pub time_to_first_token_ms: Option<i64>,
    pub tokens_in: Option<i64>,
    pub tokens_out: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every state, named in a match so a new one cannot be left out of this list.
    fn every_state() -> [CallState; 7] {
        let every = [
            CallState::Received,
            CallState::Running,
            CallState::Succeeded,
            CallState::Failed,
            CallState::TimedOut,
            CallState::Cancelled,
            CallState::Interrupted,
        ];
        for state in every {
            match state {
                CallState::Received
                | CallState::Running
                | CallState::Succeeded
                | CallState::Failed
                | CallState::TimedOut
                | CallState::Cancelled
                | CallState::Interrupted => {}
            }
        }
        every
    }

    #[test]
    fn a_call_is_open_succeeded_or_unsuccessful_and_only_one_of_them() {
        // `unsuccessful_sql` names the unsuccessful states both ways (SQLite's index names them by
        // the others): the two agree only while these three cover every state once.
        for state in every_state() {
            let sets = [
                CallState::OPEN.contains(&state),
                state == CallState::Succeeded,
                CallState::UNSUCCESSFUL.contains(&state),
            ];
            assert_eq!(sets.iter().filter(|&&is| is).count(), 1, "{state}");
        }
    }
}
