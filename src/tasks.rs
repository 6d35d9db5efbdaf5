//! MCP tasks (the 2026-07-28 tasks extension): a task is a call, and its state is the call's.
//!
//! A client that declares the extension gets a task for a long tool at once and polls
//! `tasks/get`; there is no second source of truth: a task is rendered from the call's
//! `CallView` (calls/view.rs).

use rmcp::ErrorData as McpError;
use rmcp::model::{CallToolResult, DetailedTask, JsonObject, Task, TaskPayload, TaskStatus};

use crate::calls::LiveCall;
use crate::calls::view::{self, Answer, CallView};
use crate::store::{CallRow, CallState};

/// Suggested polling period for clients.
pub(crate) const POLL_INTERVAL_MS: u64 = 2000;

/// RFC 3339 time of a moment in ms since the epoch, as tasks carry it.
pub(crate) fn timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn base(id: &str, received_at_ms: i64, updated_at_ms: i64, ttl_ms: u64) -> Task {
    Task::new(
        id,
        TaskStatus::Working,
        timestamp(received_at_ms),
        timestamp(updated_at_ms),
    )
    .with_ttl_ms(ttl_ms)
    .with_poll_interval_ms(POLL_INTERVAL_MS)
}

fn result_object(result: &CallToolResult) -> JsonObject {
    match serde_json::to_value(result) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => JsonObject::new(),
    }
}

/// The task that stands for a call still running.
pub fn working(call: &LiveCall, received_at_ms: i64, ttl_ms: u64) -> Task {
    let now = crate::store::now_ms();
    base(&call.id, received_at_ms, now, ttl_ms)
        .with_status_message(call.progress.snapshot().message())
}

/// `tasks/get` for call `id`, as it stands.
pub fn detailed(id: &str, view: &CallView, ttl_ms: u64) -> Result<DetailedTask, McpError> {
    let recorded = |row: &CallRow| {
        base(
            &row.id,
            row.received_at_ms,
            row.finished_at_ms.unwrap_or(row.received_at_ms),
            ttl_ms,
        )
        .with_status_message(row.last_progress.clone().unwrap_or_default())
    };
    let failed = |task: Task, message: String| {
        let mut error = JsonObject::new();
        error.insert("code".into(), (-32603).into());
        error.insert("message".into(), message.into());
        DetailedTask::new(task, TaskPayload::Failed { error })
    };
    Ok(match view {
        CallView::Running(call) => DetailedTask::new(
            working(call, call.received_at_ms, ttl_ms),
            TaskPayload::Working,
        ),
        CallView::Ended(ended) => {
            let mut task = base(&ended.id, ended.received_at_ms, ended.updated_at_ms, ttl_ms);
            if ended.from_store() {
                task = task.with_status_message(ended.progress.clone().unwrap_or_default());
            }
            match &ended.answer {
                _ if ended.state == CallState::Cancelled => {
                    DetailedTask::new(task, TaskPayload::Cancelled)
                }
                Answer::Fresh(result) | Answer::Stored(result) => DetailedTask::new(
                    task,
                    TaskPayload::Completed {
                        result: result_object(result),
                    },
                ),
                Answer::TooLarge | Answer::Missing => return Err(expired(id)),
            }
        }
        // Another replica runs it: working, as its record says, and where.
        CallView::HeldElsewhere(row) => DetailedTask::new(
            base(&row.id, row.received_at_ms, crate::store::now_ms(), ttl_ms).with_status_message(
                match &row.last_progress {
                    Some(progress) => format!("{progress} (on {})", view::runner(row)),
                    None => view::held_elsewhere("call", row),
                },
            ),
            TaskPayload::Working,
        ),
        CallView::Interrupted(row) => failed(
            recorded(row),
            format!("call {} was interrupted: {}", row.id, row.interruption()),
        ),
        CallView::Expired => return Err(expired(id)),
    })
}

pub fn expired(id: &str) -> McpError {
    McpError::invalid_params(format!("task {id} has expired or never existed"), None)
}
