//! `call_list`: this client's recent calls and their states.

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::{ExaiTool, ToolContext, ToolFuture, definition, local_read_only, parse_arguments};
use crate::calls::{FailureKind, ToolFailure};
use crate::store::{CallFilter, now_ms};

pub struct CallList;

/// Arguments of `call_list`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CallListArguments {
    /// How many calls to list (default 10, at most 100).
    #[serde(default)]
    limit: Option<u32>,
}

impl ExaiTool for CallList {
    fn definition(&self) -> Tool {
        definition::<CallListArguments>(
            "call_list",
            "List this client's recent calls (id, tool, state, age), newest first.",
            local_read_only(),
        )
    }

    fn run(&self, arguments: JsonObject, ctx: ToolContext) -> ToolFuture {
        Box::pin(async move {
            let args: CallListArguments = parse_arguments("call_list", arguments)?;
            let filter = CallFilter {
                client: ctx.call.origin.client_name.clone(),
                user: ctx.call.origin.caller.sees_only().map(str::to_string),
                limit: args.limit.unwrap_or(10).clamp(1, 100) as usize + 1,
                ..Default::default()
            };
            let rows = ctx
                .calls
                .store()
                .read(move |store| store.list(&filter))
                .await
                .map_err(|e| ToolFailure::new(FailureKind::Store, e.to_string()))?;
            let now = now_ms();
            let calls: Vec<_> = rows
                .into_iter()
                .filter(|r| r.id != ctx.call.id)
                .take(args.limit.unwrap_or(10).clamp(1, 100) as usize)
                .map(|r| {
                    json!({
                        "call_id": r.id,
                        "tool": r.tool,
                        "state": r.state,
                        "age_s": (now - r.received_at_ms) / 1000,
                        "model": r.model,
                        "error": r.error_message,
                    })
                })
                .collect();
            let mut text = format!("{} recent call(s) of this client:", calls.len());
            for c in &calls {
                text.push_str(&format!(
                    "\n  {} {} {} ({} s ago){}",
                    c["call_id"].as_str().unwrap_or(""),
                    c["tool"].as_str().unwrap_or(""),
                    c["state"].as_str().unwrap_or(""),
                    c["age_s"],
                    c["error"]
                        .as_str()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ));
            }
            let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
            result.structured_content = Some(json!({ "calls": calls }));
            Ok(result)
        })
    }
}
