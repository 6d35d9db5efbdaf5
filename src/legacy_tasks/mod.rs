//! MCP tasks as the 2025-11-25 revision had them: a `tools/call` with `params.task` is
//! answered at once with a task, then `tasks/get`, `tasks/result`, `tasks/list`, `tasks/cancel`.
//!
//! A decorator at the transport edge, so removing the revision means removing this folder and
//! the few lines where transports wrap a session with it: `adapter` renames the revision's
//! requests on the wire (framed transports run it through `transport::WireAdapter`, `/mcp`
//! through the `http` step), and `LegacyTasks` answers the renamed ones through the
//! service's narrow `RequestScope`. As for the 2026 extension (tasks.rs), the task is the call:
//! each answer renders the call's `CallView`, so there is no second source of truth.

pub mod adapter;
pub mod http;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rmcp::ErrorData as McpError;
use rmcp::model::{CallToolRequestParams, CallToolResult, ErrorCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::calls::view::{self, CallView};
use crate::calls::{CancelReason, LiveCall};
use crate::service::{CustomRequests, RequestScope};
use crate::store::{CallFilter, CallState, Delivery, now_ms};
use crate::tasks::{POLL_INTERVAL_MS, timestamp};

/// The protocol revision whose tasks this module speaks.
pub const VERSION: &str = "2025-11-25";

/// exai's names for the revision's requests, after the adapter renamed them (the plain
/// names belong to the 2026 extension, which rmcp answers itself).
pub const CALL: &str = "exai/legacy-tasks/call";
pub const GET: &str = "exai/legacy-tasks/get";
pub const RESULT: &str = "exai/legacy-tasks/result";
pub const LIST: &str = "exai/legacy-tasks/list";
pub const CANCEL: &str = "exai/legacy-tasks/cancel";

/// `_meta` key tying a `tasks/result` answer to its task.
const RELATED_TASK: &str = "io.modelcontextprotocol/related-task";
/// Tasks per `tasks/list` page.
const LIST_PAGE: usize = 50;
/// `tasks/result` waits for the call's deadline plus this: the supervisor has ended it by then.
const RESULT_GRACE: Duration = Duration::from_secs(30);
/// `tasks/cancel` waits this long for the call to stop, so it can answer with the final state.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TaskParams {
    task_id: String,
}

#[derive(Deserialize, Default)]
struct ListParams {
    #[serde(default)]
    cursor: Option<String>,
}

fn params<T: serde::de::DeserializeOwned>(
    method: &str,
    params: Option<Value>,
) -> Result<T, McpError> {
    serde_json::from_value(params.unwrap_or(Value::Null))
        .map_err(|e| McpError::invalid_params(format!("invalid params for {method}: {e}"), None))
}

/// The revision's task statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Working,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    /// The revision's name for a call's state; an error result makes a `failed` task there.
    fn of(state: CallState) -> Self {
        match state {
            CallState::Received | CallState::Running => Status::Working,
            CallState::Succeeded => Status::Completed,
            CallState::Cancelled => Status::Cancelled,
            CallState::Failed | CallState::TimedOut | CallState::Interrupted => Status::Failed,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Status::Working => "working",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }
}

fn task(
    id: &str,
    status: Status,
    message: Option<String>,
    created_ms: i64,
    updated_ms: i64,
    ttl_ms: u64,
) -> Value {
    let mut task = json!({
        "taskId": id,
        "status": status.as_str(),
        "createdAt": timestamp(created_ms),
        "lastUpdatedAt": timestamp(updated_ms),
        "ttl": ttl_ms,
        "pollInterval": POLL_INTERVAL_MS,
    });
    if let Some(message) = message.filter(|m| !m.is_empty()) {
        task["statusMessage"] = Value::String(message);
    }
    task
}

/// The task of a call still running.
fn working(call: &LiveCall, ttl_ms: u64) -> Value {
    task(
        &call.id,
        Status::Working,
        Some(call.progress.snapshot().message()),
        call.received_at_ms,
        now_ms(),
        ttl_ms,
    )
}

/// The task of call `id`, as it stands.
fn of_view(id: &str, view: &CallView, ttl_ms: u64) -> Result<Value, McpError> {
    let recorded = |row: &crate::store::CallRow, status, message| {
        task(
            &row.id,
            status,
            message,
            row.received_at_ms,
            row.finished_at_ms.unwrap_or(row.received_at_ms),
            ttl_ms,
        )
    };
    Ok(match view {
        CallView::Running(call) => working(call, ttl_ms),
        CallView::Ended(ended) => task(
            &ended.id,
            Status::of(ended.state),
            ended.why.clone(),
            ended.received_at_ms,
            ended.updated_at_ms,
            ttl_ms,
        ),
        // Another replica runs it: working, as its record says, and where.
        CallView::HeldElsewhere(row) => task(
            &row.id,
            Status::Working,
            Some(match &row.last_progress {
                Some(progress) => format!("{progress} (on {})", view::runner(row)),
                None => view::held_elsewhere("call", row),
            }),
            row.received_at_ms,
            now_ms(),
            ttl_ms,
        ),
        CallView::Interrupted(row) => recorded(row, Status::Failed, row.error_message.clone()),
        CallView::Expired => return Err(crate::tasks::expired(id)),
    })
}

/// What `tasks/result` hands back: the call's answer, tied to its task, in the revision's shape.
fn answer(result: &CallToolResult, task_id: &str) -> Result<Value, McpError> {
    let mut result = result.clone();
    // The 2025-11-25 wire has no `resultType`, and structured content is an object there.
    result.result_type = None;
    if result
        .structured_content
        .as_ref()
        .is_some_and(|s| !s.is_object())
    {
        result.structured_content = None;
    }
    let mut meta = result.meta.take().unwrap_or_default();
    meta.insert(RELATED_TASK.into(), json!({ "taskId": task_id }));
    result.meta = Some(meta);
    serde_json::to_value(&result).map_err(|e| McpError::internal_error(e.to_string(), None))
}

/// Answers the renamed 2025-11-25 task requests of a session.
pub struct LegacyTasks;

impl LegacyTasks {
    /// The answerer to give a session's service (it keeps nothing per session).
    pub fn requests() -> Arc<dyn CustomRequests> {
        Arc::new(LegacyTasks)
    }
}

impl CustomRequests for LegacyTasks {
    fn answer<'a>(
        &'a self,
        method: &'a str,
        raw: Option<Value>,
        scope: RequestScope<'a>,
    ) -> Option<BoxFuture<'a, Result<Value, McpError>>> {
        Some(match method {
            CALL => Box::pin(async move { call(params("tools/call", raw)?, &scope).await }),
            GET => Box::pin(async move {
                let p: TaskParams = params("tasks/get", raw)?;
                get(&p.task_id, &scope).await
            }),
            RESULT => Box::pin(async move {
                let p: TaskParams = params("tasks/result", raw)?;
                result(&p.task_id, &scope).await
            }),
            LIST => Box::pin(async move {
                let p: Option<ListParams> = params("tasks/list", raw)?;
                list(p.unwrap_or_default().cursor, &scope).await
            }),
            CANCEL => Box::pin(async move {
                let p: TaskParams = params("tasks/cancel", raw)?;
                cancel(&p.task_id, &scope).await
            }),
            _ => return None,
        })
    }
}

fn ttl_ms(scope: &RequestScope<'_>) -> u64 {
    scope.result_ttl().as_millis() as u64
}

async fn lookup(id: &str, scope: &RequestScope<'_>) -> Result<CallView, McpError> {
    scope
        .calls()
        .lookup(id, &scope.caller()?)
        .await
        .map_err(|e| McpError::internal_error(e.to_string(), None))
}

/// A task-augmented `tools/call`: the call starts, the client gets its task at once.
async fn call(request: CallToolRequestParams, scope: &RequestScope<'_>) -> Result<Value, McpError> {
    let call = scope.open_task(request).await?;
    if let Err(error) = scope.calls().store().set_task(&call.id, VERSION).await {
        tracing::warn!(call_id = %call.id, %error, "could not mark the call as a task");
    }
    tracing::info!(call_id = %call.id, "answered with a 2025-11-25 task");
    Ok(json!({ "task": working(&call, ttl_ms(scope)) }))
}

async fn get(id: &str, scope: &RequestScope<'_>) -> Result<Value, McpError> {
    of_view(id, &lookup(id, scope).await?, ttl_ms(scope))
}

/// Waits (bounded by the call's own deadline) for the call's end and returns its answer.
async fn result(id: &str, scope: &RequestScope<'_>) -> Result<Value, McpError> {
    let view = lookup(id, scope).await?;
    let until = match &view {
        CallView::Running(call) => tokio::time::Instant::from_std(call.deadline) + RESULT_GRACE,
        CallView::HeldElsewhere(row) => {
            let left = u64::try_from(row.deadline_at_ms - now_ms()).unwrap_or(0);
            tokio::time::Instant::now() + Duration::from_millis(left) + RESULT_GRACE
        }
        _ => tokio::time::Instant::now(),
    };
    let view = tokio::select! {
        biased;
        view = view.wait_until(scope.calls(), until) => view,
        // rmcp drops the answer of a cancelled request; this only stops the wait.
        _ = scope.cancelled().cancelled() => {
            return Err(McpError::internal_error("tasks/result was cancelled", None));
        }
    };
    match view {
        CallView::Running(_) => Err(McpError::internal_error(
            format!("task {id} is still running past its deadline; see `exai calls show {id}`"),
            None,
        )),
        CallView::Ended(ended) => {
            match scope
                .calls()
                .hand_over(ended, Delivery::DeliveredByTasksResult)
                .await
            {
                Some(result) => answer(&result, id),
                None => Err(crate::tasks::expired(id)),
            }
        }
        CallView::HeldElsewhere(row) => Err(McpError::internal_error(
            format!(
                "{} past its deadline; see `exai calls show {id}`",
                view::held_elsewhere("task", &row)
            ),
            None,
        )),
        CallView::Interrupted(row) => Err(McpError::internal_error(
            view::interrupted_without_result("task", &row),
            None,
        )),
        CallView::Expired => Err(crate::tasks::expired(id)),
    }
}

/// This client's tasks whose results are still kept, newest first, a page at a time.
async fn list(cursor: Option<String>, scope: &RequestScope<'_>) -> Result<Value, McpError> {
    if let Some(cursor) = &cursor
        && uuid::Uuid::parse_str(cursor).is_err()
    {
        return Err(McpError::invalid_params(
            format!("tasks/list: {cursor:?} is not a cursor this server gave"),
            None,
        ));
    }
    let ttl_ms = ttl_ms(scope);
    let filter = CallFilter {
        client: scope.client_name(),
        user: scope.caller()?.sees_only().map(str::to_string),
        tasks_only: true,
        before_id: cursor,
        since_ms: Some(now_ms() - ttl_ms as i64),
        limit: LIST_PAGE + 1,
        ..Default::default()
    };
    let calls = scope.calls();
    let mut rows = calls
        .store()
        .read(move |store| store.list(&filter))
        .await
        .map_err(|e| McpError::internal_error(e.to_string(), None))?;
    let more = rows.len() > LIST_PAGE;
    rows.truncate(LIST_PAGE);
    let next_cursor = more
        .then(|| rows.last().map(|last| last.id.clone()))
        .flatten();
    let tasks = rows
        .into_iter()
        .map(|row| {
            let id = row.id.clone();
            of_view(&id, &calls.view_of(row), ttl_ms)
        })
        .collect::<Result<Vec<Value>, McpError>>()?;
    let mut answer = json!({ "tasks": tasks });
    if let Some(cursor) = next_cursor {
        answer["nextCursor"] = Value::String(cursor);
    }
    Ok(answer)
}

/// Stops a running task and answers with its state once it has stopped (bounded).
async fn cancel(id: &str, scope: &RequestScope<'_>) -> Result<Value, McpError> {
    let view = lookup(id, scope).await?;
    let told = match &view {
        CallView::Running(call) => {
            tracing::info!(call_id = %call.id, "tasks/cancel (2025-11-25)");
            call.cancel(CancelReason::Client(Some("tasks/cancel".into())));
            true
        }
        CallView::HeldElsewhere(row) => {
            let reason = "tasks/cancel on another replica".to_string();
            let asked = scope
                .calls()
                .request_cancel(row, reason)
                .await
                .map_err(|e| McpError::internal_error(e.to_string(), None))?;
            if let Some(replica) = &asked {
                tracing::info!(call_id = %row.id, %replica, "tasks/cancel (2025-11-25) sent to the replica that runs it");
            }
            asked.is_some()
        }
        _ => false,
    };
    if told {
        let stopped = view
            .wait_until(scope.calls(), tokio::time::Instant::now() + CANCEL_WAIT)
            .await;
        return of_view(id, &stopped, ttl_ms(scope));
    }
    // A call held elsewhere that ended meanwhile: its state now.
    let view = match view {
        CallView::HeldElsewhere(_) => lookup(id, scope).await?,
        view => view,
    };
    let Some(state) = view.state() else {
        return Err(crate::tasks::expired(id));
    };
    Err(McpError::new(
        ErrorCode::INVALID_PARAMS,
        format!(
            "task {id} is already {}; a finished task cannot be cancelled",
            Status::of(state).as_str()
        ),
        None,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_error_is_a_failed_task_and_the_answer_names_its_task() {
        assert_eq!(Status::of(CallState::Failed).as_str(), "failed");
        assert_eq!(Status::of(CallState::TimedOut).as_str(), "failed");
        assert_eq!(Status::of(CallState::Succeeded).as_str(), "completed");
        let result = CallToolResult::success(vec![rmcp::model::ContentBlock::text("hi")]);
        let value = answer(&result, "t1").unwrap();
        assert_eq!(value["_meta"][RELATED_TASK]["taskId"], "t1");
        assert!(value.get("resultType").is_none(), "{value}");
        assert_eq!(value["content"][0]["text"], "hi");
        let t = task("t1", Status::Working, Some(String::new()), 0, 1000, 5);
        assert!(t.get("statusMessage").is_none());
        assert_eq!(t["ttl"], 5);
        assert_eq!(t["lastUpdatedAt"], "1970-01-01T00:00:01.000Z");
    }
}
