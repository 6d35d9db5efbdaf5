//! `call_cancel`: stop a call that is still running.

use std::time::Duration;

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Deserialize;

use super::call_result::{resolve_call_id, stored, unknown_call};
use super::{ExaiTool, ToolContext, ToolFuture, definition, parse_arguments};
use crate::calls::CancelReason;

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
            let text = match ctx.calls.get(&id) {
                Some(live) => {
                    live.cancel(CancelReason::Client(Some(format!(
                        "call_cancel from call {}",
                        ctx.call.id
                    ))));
                    let ended = tokio::time::timeout(Duration::from_secs(5), live.finished()).await;
                    match ended {
                        Ok(outcome) => {
                            format!("call {id} ({}) stopped: {}", live.tool, outcome.state)
                        }
                        Err(_) => format!(
                            "call {id} ({}) was told to stop; it has not ended yet",
                            live.tool
                        ),
                    }
                }
                None => match stored(&ctx, &id).await? {
                    Some(row) => format!(
                        "call {id} ({}) had already ended: {}; nothing to cancel",
                        row.tool, row.state
                    ),
                    None => return Err(unknown_call(&id, ctx.config.result_ttl)),
                },
            };
            Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
        })
    }
}
