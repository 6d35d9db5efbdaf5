//! MCP tasks as the 2025-11-25 revision had them: a `tools/call` with `params.task` is
//! answered at once with a task, then `tasks/get`, `tasks/result`, `tasks/list`, `tasks/cancel`.
//!
//! As for the 2026 extension (tasks.rs), the task is the call: its state comes from the
//! call registry while it runs and from the store after, so there is no second source of
//! truth. `adapter` renames the revision's requests on the wire to the methods below,
//! which `ExaiService::on_custom_request` hands to `ExaiService::legacy_task_request`.

pub mod adapter;

use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult, ErrorCode};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::calls::{CancelReason, LiveCall};
use crate::service::ExaiService;
use crate::store::{CallFilter, CallRow, CallState, Delivery, now_ms};
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

/// The revision's name for a call's state; an error result makes a `failed` task there.
fn status_of(state: CallState) -> &'static str {
    match state {
        CallState::Received | CallState::Running => "working",
        CallState::Succeeded => "completed",
        CallState::Cancelled => "cancelled",
        CallState::Failed | CallState::TimedOut | CallState::Interrupted => "failed",
    }
}

fn task(
    id: &str,
    status: &str,
    message: Option<String>,
    created_ms: i64,
    updated_ms: i64,
    ttl_ms: u64,
) -> Value {
    let mut task = json!({
        "taskId": id,
        "status": status,
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

fn first_text(result: &CallToolResult) -> Option<String> {
    result
        .content
        .iter()
        .find_map(|c| c.as_text().map(|t| t.text.clone()))
}

/// The task of a call still running.
pub fn working(call: &LiveCall, ttl_ms: u64) -> Value {
    task(
        &call.id,
        "working",
        Some(call.progress.snapshot().message()),
        call.received_at_ms,
        now_ms(),
        ttl_ms,
    )
}

/// The task of a call in the registry.
pub fn of_live(call: &LiveCall, ttl_ms: u64) -> Value {
    match call.outcome() {
        None => working(call, ttl_ms),
        Some(outcome) => task(
            &call.id,
            status_of(outcome.state),
            (outcome.state != CallState::Succeeded)
                .then(|| first_text(&outcome.result))
                .flatten(),
            call.received_at_ms,
            now_ms(),
            ttl_ms,
        ),
    }
}

/// The task of a call that has left the registry.
pub fn of_record(row: &CallRow, ttl_ms: u64) -> Value {
    let updated = row.finished_at_ms.unwrap_or(row.received_at_ms);
    match Some(row.state) {
        // Not ours to ask about, and not going to change while we look: say so.
        Some(CallState::Received | CallState::Running) | None => task(
            &row.id,
            "failed",
            Some(format!(
                "call {} is held by another exai process (pid {}) that can no longer be asked",
                row.id, row.owner_pid
            )),
            row.received_at_ms,
            updated,
            ttl_ms,
        ),
        Some(state) => task(
            &row.id,
            status_of(state),
            row.error_message.clone(),
            row.received_at_ms,
            updated,
            ttl_ms,
        ),
    }
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

impl ExaiService {
    fn ttl_ms(&self) -> u64 {
        self.app.config.result_ttl.as_millis() as u64
    }

    /// Answers one of the renamed 2025-11-25 task requests; `None` if `method` is none of them.
    pub(crate) async fn legacy_task_request(
        &self,
        method: &str,
        raw: Option<Value>,
        context: RequestContext<RoleServer>,
    ) -> Option<Result<Value, McpError>> {
        Some(match method {
            CALL => self.legacy_call(raw, context).await,
            GET => match params::<TaskParams>("tasks/get", raw) {
                Ok(p) => self.legacy_get(&p.task_id).await,
                Err(e) => Err(e),
            },
            RESULT => match params::<TaskParams>("tasks/result", raw) {
                Ok(p) => self.legacy_result(&p.task_id, context).await,
                Err(e) => Err(e),
            },
            LIST => match params::<Option<ListParams>>("tasks/list", raw) {
                Ok(p) => {
                    self.legacy_list(p.unwrap_or_default().cursor, context)
                        .await
                }
                Err(e) => Err(e),
            },
            CANCEL => match params::<TaskParams>("tasks/cancel", raw) {
                Ok(p) => self.legacy_cancel(&p.task_id).await,
                Err(e) => Err(e),
            },
            _ => return None,
        })
    }

    /// A task-augmented `tools/call`: the call starts, the client gets its task at once.
    async fn legacy_call(
        &self,
        raw: Option<Value>,
        context: RequestContext<RoleServer>,
    ) -> Result<Value, McpError> {
        let request: CallToolRequestParams = params("tools/call", raw)?;
        let opened = self.open_call(request, &context, true).await?;
        let call = opened.call;
        self.keep_for_later(&call, &opened.request_id, Delivery::TaskCreated)
            .await;
        if let Err(error) = self.app.calls.store().set_task(&call.id, VERSION).await {
            tracing::warn!(call_id = %call.id, %error, "could not mark the call as a task");
        }
        tracing::info!(call_id = %call.id, "answered with a 2025-11-25 task");
        Ok(json!({ "task": working(&call, self.ttl_ms()) }))
    }

    async fn legacy_get(&self, id: &str) -> Result<Value, McpError> {
        if let Some(call) = self.app.calls.get(id) {
            return Ok(of_live(&call, self.ttl_ms()));
        }
        Ok(of_record(&self.stored(id).await?, self.ttl_ms()))
    }

    /// Waits (bounded by the call's own deadline) for the call's end and returns its answer.
    async fn legacy_result(
        &self,
        id: &str,
        context: RequestContext<RoleServer>,
    ) -> Result<Value, McpError> {
        let store = self.app.calls.store();
        if let Some(call) = self.app.calls.get(id) {
            let limit = tokio::time::Instant::from_std(call.deadline) + RESULT_GRACE;
            let outcome = tokio::select! {
                outcome = call.finished() => outcome,
                // rmcp drops the answer of a cancelled request; this only stops the wait.
                _ = context.ct.cancelled() => {
                    return Err(McpError::internal_error("tasks/result was cancelled", None));
                }
                _ = tokio::time::sleep_until(limit) => {
                    return Err(McpError::internal_error(
                        format!("task {id} is still running past its deadline; see `exai calls show {id}`"),
                        None,
                    ));
                }
            };
            let _ = store
                .set_delivery(id, Delivery::DeliveredByTasksResult)
                .await;
            return answer(&outcome.result, id);
        }
        let row = self.stored(id).await?;
        match Some(row.state) {
            Some(CallState::Received | CallState::Running) | None => Err(McpError::internal_error(
                format!(
                    "task {id} is held by another exai process (pid {}) that can no longer be asked",
                    row.owner_pid
                ),
                None,
            )),
            Some(CallState::Interrupted) => Err(McpError::internal_error(
                format!(
                    "task {id} ({}) was interrupted and has no result: {}. Run it again.",
                    row.tool,
                    row.interruption()
                ),
                None,
            )),
            Some(_) => {
                let result = match row.result.as_deref().map(serde_json::from_str) {
                    Some(Ok(result)) => {
                        crate::calls::output::fitted(result, self.app.calls.max_output_tokens, id)
                            .await
                    }
                    Some(Err(_)) => crate::calls::output::too_large_to_keep(&row),
                    None => return Err(crate::tasks::expired(id)),
                };
                let _ = store
                    .set_delivery(id, Delivery::DeliveredByTasksResult)
                    .await;
                answer(&result, id)
            }
        }
    }

    /// This client's tasks whose results are still kept, newest first, a page at a time.
    async fn legacy_list(
        &self,
        cursor: Option<String>,
        context: RequestContext<RoleServer>,
    ) -> Result<Value, McpError> {
        if let Some(cursor) = &cursor
            && uuid::Uuid::parse_str(cursor).is_err()
        {
            return Err(McpError::invalid_params(
                format!("tasks/list: {cursor:?} is not a cursor this server gave"),
                None,
            ));
        }
        let ttl_ms = self.ttl_ms();
        let filter = CallFilter {
            client: self.origin(&context).client_name,
            tasks_only: true,
            before_id: cursor,
            since_ms: Some(now_ms() - ttl_ms as i64),
            limit: LIST_PAGE + 1,
            ..Default::default()
        };
        let rows = self
            .app
            .calls
            .store()
            .read(move |store| store.list(&filter))
            .await
            .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        let more = rows.len() > LIST_PAGE;
        let page = &rows[..rows.len().min(LIST_PAGE)];
        let tasks: Vec<Value> = page
            .iter()
            .map(|row| match self.app.calls.get(&row.id) {
                Some(call) => of_live(&call, ttl_ms),
                None => of_record(row, ttl_ms),
            })
            .collect();
        let mut answer = json!({ "tasks": tasks });
        if more && let Some(last) = page.last() {
            answer["nextCursor"] = Value::String(last.id.clone());
        }
        Ok(answer)
    }

    /// Stops a running task and answers with its state once it has stopped (bounded).
    async fn legacy_cancel(&self, id: &str) -> Result<Value, McpError> {
        if let Some(call) = self.app.calls.get(id)
            && call.outcome().is_none()
        {
            tracing::info!(call_id = %call.id, "tasks/cancel (2025-11-25)");
            call.cancel(CancelReason::Client(Some("tasks/cancel".into())));
            let _ = tokio::time::timeout(CANCEL_WAIT, call.finished()).await;
            return Ok(of_live(&call, self.ttl_ms()));
        }
        let row = self.stored(id).await?;
        let status = status_of(row.state);
        Err(McpError::new(
            ErrorCode::INVALID_PARAMS,
            format!("task {id} is already {status}; a finished task cannot be cancelled"),
            None,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_error_is_a_failed_task_and_the_answer_names_its_task() {
        assert_eq!(status_of(CallState::Failed), "failed");
        assert_eq!(status_of(CallState::TimedOut), "failed");
        assert_eq!(status_of(CallState::Succeeded), "completed");
        let result = CallToolResult::success(vec![rmcp::model::ContentBlock::text("hi")]);
        let value = answer(&result, "t1").unwrap();
        assert_eq!(value["_meta"][RELATED_TASK]["taskId"], "t1");
        assert!(value.get("resultType").is_none(), "{value}");
        assert_eq!(value["content"][0]["text"], "hi");
        let t = task("t1", "working", Some(String::new()), 0, 1000, 5);
        assert!(t.get("statusMessage").is_none());
        assert_eq!(t["ttl"], 5);
        assert_eq!(t["lastUpdatedAt"], "1970-01-01T00:00:01.000Z");
    }
}
