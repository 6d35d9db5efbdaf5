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
                    let until = tokio::time::Instant::now() + Duration::from_secs(5);
                    match CallView::Running(live).wait_until(until).await {
                        CallView::Ended(ended) => {
                            format!("call {id} ({tool}) stopped: {}", ended.state)
                        }
                        _ => format!("call {id} ({tool}) was told to stop; it has not ended yet"),
                    }
                }
                CallView::Ended(Ended { tool, state, .. }) => {
                    format!("call {id} ({tool}) had already ended: {state}; nothing to cancel")
                }
                CallView::HeldElsewhere(row) | CallView::Interrupted(row) => format!(
                    "call {id} ({}) had already ended: {}; nothing to cancel",
                    row.tool, row.state
                ),
                CallView::Expired => return Err(unknown_call(&id, ctx.config.result_ttl)),
            };
            Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
        })
    }
}
