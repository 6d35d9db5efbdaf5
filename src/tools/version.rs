//! `version`: what exai this is and how the client reaches it.

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool};
use serde_json::json;

use super::{
    ExaiTool, NoArguments, ToolContext, ToolFuture, definition, local_read_only, parse_arguments,
};

pub struct Version;

impl ExaiTool for Version {
    fn definition(&self) -> Tool {
        definition::<NoArguments>(
            "version",
            "Version of the exai server and how this session reaches it.",
            local_read_only(),
        )
    }

    fn run(&self, arguments: JsonObject, ctx: ToolContext) -> ToolFuture {
        Box::pin(async move {
            parse_arguments::<NoArguments>("version", arguments)?;
            let info = json!({
                "name": "exai",
                "version": crate::VERSION,
                "mode": ctx.health.mode,
                "pid": ctx.health.pid,
                "uptime_s": ctx.health.uptime_s(),
                "transport": ctx.call.origin.transport,
                "session": ctx.call.origin.session_id,
            });
            let text = format!(
                "exai {} ({}, pid {}, up {} s) — this session: {} via {}",
                crate::VERSION,
                ctx.health.mode,
                ctx.health.pid,
                ctx.health.uptime_s(),
                ctx.call.origin.session_id,
                ctx.call.origin.transport
            );
            let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
            result.structured_content = Some(info);
            Ok(result)
        })
    }
}
