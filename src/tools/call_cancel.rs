//! `call_cancel`: stop a call that is still running.

use std::time::Duration;

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Deserialize;

use super::call_result::{resolve_call_id, unknown_call};
use super::{ExaiTool, ToolContext, ToolFuture, definition, parse_arguments};
use crate::calls::view::{CallView, CancelAsked, Ended};
use crate::calls::{FailureKind, ToolFailure};

pub struct CallCancel;

/// Arguments of `call_cancel`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CallCancelArguments {
    /// The id of the call to stop.
    call_id: String,
}

impl ExaiTool for CallCancel {
    fn definition(&self) -> Tool {
        definition::<CallCancelArguments>(
            "call_cancel",
            "Stop a running call (by the call id exai gave); its provider request is closed.",
            ToolAnnotations::new()
                .read_only(false)
                .destructive(false)
                .idempotent(true)
                .open_world(false),
        )
    }

    fn run(&self, arguments: JsonObject, ctx: ToolContext) -> ToolFuture {
        Box::pin(async move {
            let args: CallCancelArguments = parse_arguments("call_cancel", arguments)?;
            let id = resolve_call_id(&ctx, "call_cancel", &args.call_id).await?;
            let view = ctx
                .calls
                .lookup(&id, &ctx.call.origin.caller)
                .await
                .map_err(|e| ToolFailure::new(FailureKind::Store, e.to_string()))?;
            let asked = ctx
                .calls
                .cancel(view, format!("call_cancel from call {}", ctx.call.id))
                .await
                .map_err(|e| ToolFailure::new(FailureKind::Store, e.to_string()))?;
            let text = match asked {
                CancelAsked::Told {
                    view,
                    replica: None,
                } => {
                    let tool = tool_of(&view);
                    let stopped = stopped_within(&ctx, view).await;
                    format!("call {id} ({tool}) {stopped}")
                }
                CancelAsked::Told {
                    view,
                    replica: Some(replica),
                } => {
                    let tool = tool_of(&view);
                    let stopped = stopped_within(&ctx, view).await;
                    format!(
                        "call {id} ({tool}) runs on {replica}: the cancel was sent to it; \
                         the call {stopped}"
                    )
                }
                CancelAsked::NotRunning(CallView::HeldElsewhere(row)) => {
                    format!(
                        "call {id} ({}) had already ended; nothing to cancel",
                        row.tool
                    )
                }
                CancelAsked::NotRunning(CallView::Ended(Ended { tool, state, .. })) => {
                    format!("call {id} ({tool}) had already ended: {state}; nothing to cancel")
                }
                CancelAsked::NotRunning(CallView::Interrupted(row)) => format!(
                    "call {id} ({}) had already ended: {}; nothing to cancel",
                    row.tool, row.state
                ),
                CancelAsked::NotRunning(CallView::Running(_) | CallView::Expired) => {
                    return Err(unknown_call(&id, ctx.config.result_ttl));
                }
            };
            Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
        })
    }
}

/// The tool of a call being stopped.
fn tool_of(view: &CallView) -> String {
    match view {
        CallView::Running(live) => live.tool.clone(),
        CallView::Ended(ended) => ended.tool.clone(),
        CallView::HeldElsewhere(row) | CallView::Interrupted(row) => row.tool.clone(),
        CallView::Expired => String::new(),
    }
}

/// How a call told to stop has ended, waiting a few seconds for it: "stopped: cancelled", or
/// "was told to stop; it has not ended yet".
async fn stopped_within(ctx: &ToolContext, view: CallView) -> String {
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    match view.wait_until(&ctx.calls, until).await {
        CallView::Ended(ended) => format!("stopped: {}", ended.state),
        CallView::Interrupted(row) => format!("stopped: {}", row.state),
        _ => "was told to stop; it has not ended yet".to_string(),
    }
}
