//! `call_cancel`: stop a call that is still running.

use std::time::Duration;

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Deserialize;

use super::call_result::{resolve_call_id, unknown_call};
use super::{ExaiTool, ToolContext, ToolFuture, definition, parse_arguments};
use crate::calls::view::{CallView, Ended};
use crate::calls::{CancelReason, FailureKind, ToolFailure};

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
            let text = match view {
                CallView::Running(live) => {
                    live.cancel(CancelReason::Client(Some(format!(
                        "call_cancel from call {}",
                        ctx.call.id
                    ))));
                    let tool = live.tool.clone();
                    let stopped = stopped_within(&ctx, CallView::Running(live)).await;
                    format!("call {id} ({tool}) {stopped}")
                }
                CallView::HeldElsewhere(row) => {
                    let reason =
                        format!("call_cancel from call {} on another replica", ctx.call.id);
                    let asked = ctx
                        .calls
                        .request_cancel(&row, reason)
                        .await
                        .map_err(|e| ToolFailure::new(FailureKind::Store, e.to_string()))?;
                    let tool = row.tool.clone();
                    match asked {
                        Some(replica) => {
                            let stopped = stopped_within(&ctx, CallView::HeldElsewhere(row)).await;
                            format!(
                                "call {id} ({tool}) runs on {replica}: the cancel was sent to it; \
                                 the call {stopped}"
                            )
                        }
                        None => format!("call {id} ({tool}) had already ended; nothing to cancel"),
                    }
                }
                CallView::Ended(Ended { tool, state, .. }) => {
                    format!("call {id} ({tool}) had already ended: {state}; nothing to cancel")
                }
                CallView::Interrupted(row) => format!(
                    "call {id} ({}) had already ended: {}; nothing to cancel",
                    row.tool, row.state
                ),
                CallView::Expired => return Err(unknown_call(&id, ctx.config.result_ttl)),
            };
            Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
        })
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
