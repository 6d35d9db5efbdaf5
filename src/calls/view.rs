//! Where a call stands, decided once: `Calls::lookup` finds a call in the registry or the
//! store and says whether it runs, ended (with what answer), is held by another process,
//! was interrupted, or is gone. `call_result`, MCP tasks and 2025-11-25 tasks only render it.

use std::sync::Arc;

use rmcp::model::CallToolResult;

use super::{Calls, LiveCall, Outcome};
use crate::store::{CallRow, CallState, Delivery, StoreError, now_ms};

/// A call as a client may ask about it.
#[derive(Debug)]
pub enum CallView {
    /// Running in this process: its progress is live, it can be waited on or cancelled.
    Running(Arc<LiveCall>),
    /// Ended (a moment ago in this process, or as recorded).
    Ended(Ended),
    /// Its record says it runs, but under another exai process, which cannot be asked.
    HeldElsewhere(CallRow),
    /// Stopped without an answer (a shutdown, or its process died).
    Interrupted(CallRow),
    /// No record: it never existed, or it ended so long ago that it was pruned.
    Expired,
}

/// A call that ended, and what is left of its answer.
#[derive(Debug)]
pub struct Ended {
    pub id: String,
    pub tool: String,
    pub state: CallState,
    pub received_at_ms: i64,
    /// When it was last heard of: its end as recorded, or now for a call that just ended.
    pub updated_at_ms: i64,
    /// Why it did not succeed: the recorded error, or the answer's first text while fresh.
    pub why: Option<String>,
    /// The last progress message sent, as recorded (none for a call that just ended).
    pub progress: Option<String>,
    pub answer: Answer,
}

/// The answer of an ended call.
#[derive(Debug)]
pub enum Answer {
    /// Handed over by the call as it ended (already fitted to what clients accept).
    Fresh(CallToolResult),
    /// Read back from the record, whole.
    Stored(CallToolResult),
    /// The record's answer was cut to be stored and cannot be read back.
    TooLarge,
    /// The record holds no answer.
    Missing,
}

impl Ended {
    fn of_outcome(call: &LiveCall, outcome: &Outcome) -> Self {
        Self {
            id: call.id.clone(),
            tool: call.tool.clone(),
            state: outcome.state,
            received_at_ms: call.received_at_ms,
            updated_at_ms: now_ms(),
            why: (outcome.state != CallState::Succeeded)
                .then(|| first_text(&outcome.result))
                .flatten(),
            progress: None,
            answer: Answer::Fresh(outcome.result.clone()),
        }
    }

    fn of_record(row: CallRow) -> Self {
        let answer = match row.result.as_deref().map(serde_json::from_str) {
            Some(Ok(result)) => Answer::Stored(result),
            Some(Err(_)) => Answer::TooLarge,
            None => Answer::Missing,
        };
        Self {
            updated_at_ms: row.finished_at_ms.unwrap_or(row.received_at_ms),
            id: row.id,
            tool: row.tool,
            state: row.state,
            received_at_ms: row.received_at_ms,
            why: row.error_message,
            progress: row.last_progress,
            answer,
        }
    }

    /// Whether this was read from the store (rather than handed over by the call itself).
    pub fn from_store(&self) -> bool {
        !matches!(self.answer, Answer::Fresh(_))
    }

    /// What `exai calls show` is pointed at when the stored answer cannot be read back.
    fn too_large_note(&self) -> CallToolResult {
        CallToolResult::success(vec![rmcp::model::ContentBlock::text(format!(
            "call {id} ({}) ended {}; its stored result was too large to keep whole. \
             See it with `exai calls show {id}`.",
            self.tool,
            self.state,
            id = self.id
        ))])
    }
}

impl CallView {
    /// The view of a recorded call that is not in the registry.
    fn of_record(row: CallRow) -> Self {
        match row.state {
            CallState::Received | CallState::Running => CallView::HeldElsewhere(row),
            CallState::Interrupted => CallView::Interrupted(row),
            _ => CallView::Ended(Ended::of_record(row)),
        }
    }

    /// The view of a call in the registry.
    fn of_live(call: Arc<LiveCall>) -> Self {
        match call.outcome() {
            None => CallView::Running(call),
            Some(outcome) => CallView::Ended(Ended::of_outcome(&call, &outcome)),
        }
    }

    /// The one wait: a running call is waited on until it ends or `until` passes (then it is
    /// still `Running`); any other view is already settled.
    pub async fn wait_until(self, until: tokio::time::Instant) -> Self {
        let CallView::Running(call) = self else {
            return self;
        };
        match tokio::time::timeout_at(until, call.finished()).await {
            Ok(outcome) => CallView::Ended(Ended::of_outcome(&call, &outcome)),
            Err(_) => CallView::Running(call),
        }
    }

    /// The state a client is told: a running call's, or the recorded one.
    pub fn state(&self) -> Option<CallState> {
        match self {
            CallView::Running(_) => Some(CallState::Running),
            CallView::Ended(ended) => Some(ended.state),
            CallView::HeldElsewhere(row) | CallView::Interrupted(row) => Some(row.state),
            CallView::Expired => None,
        }
    }
}

/// "{noun} ID is held by another exai process (pid N) that can no longer be asked".
pub fn held_elsewhere(noun: &str, row: &CallRow) -> String {
    format!(
        "{noun} {} is held by another exai process (pid {}) that can no longer be asked",
        row.id, row.owner_pid
    )
}

/// "{noun} ID (tool) was interrupted and has no result: why. Run it again."
pub fn interrupted_without_result(noun: &str, row: &CallRow) -> String {
    format!(
        "{noun} {} ({}) was interrupted and has no result: {}. Run it again.",
        row.id,
        row.tool,
        row.interruption()
    )
}

impl Calls {
    /// Where call `id` stands: the registry first, then the store.
    pub async fn lookup(&self, id: &str) -> Result<CallView, StoreError> {
        if let Some(call) = self.get(id) {
            return Ok(CallView::of_live(call));
        }
        let wanted = id.to_string();
        let row = self.store.read(move |store| store.get(&wanted)).await?;
        Ok(row.map_or(CallView::Expired, |row| self.view_of(row)))
    }

    /// Where the call of a record already read stands (the registry wins while it runs here).
    pub fn view_of(&self, row: CallRow) -> CallView {
        match self.get(&row.id) {
            Some(call) => CallView::of_live(call),
            None => CallView::of_record(row),
        }
    }

    /// Hands an ended call's answer to a client that asked for it later, and records that
    /// (`delivery`); `None` if the record holds none. A stored answer is fitted to the client.
    pub async fn hand_over(&self, ended: Ended, delivery: Delivery) -> Option<CallToolResult> {
        let result = match ended.answer {
            Answer::Fresh(result) => result,
            Answer::Stored(result) => {
                super::output::fitted(result, self.max_output_tokens, &ended.id).await
            }
            Answer::TooLarge => ended.too_large_note(),
            Answer::Missing => return None,
        };
        let _ = self.store.set_delivery(&ended.id, delivery).await;
        Some(result)
    }
}

/// The first text of a result, whole.
fn first_text(result: &CallToolResult) -> Option<String> {
    result
        .content
        .iter()
        .find_map(|c| c.as_text().map(|t| t.text.clone()))
}
