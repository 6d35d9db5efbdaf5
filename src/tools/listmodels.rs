//! `listmodels`: the configured endpoints and their models.

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool};
use serde_json::json;

use super::{
    ExaiTool, NoArguments, ToolContext, ToolFuture, definition, local_read_only, parse_arguments,
};

pub struct ListModels;

impl ExaiTool for ListModels {
    fn definition(&self) -> Tool {
        definition::<NoArguments>(
            "listmodels",
            "List the model endpoints exai is configured with and their models.",
            local_read_only(),
        )
    }

    fn run(&self, arguments: JsonObject, ctx: ToolContext) -> ToolFuture {
        Box::pin(async move {
            parse_arguments::<NoArguments>("listmodels", arguments)?;
            let providers: Vec<_> = ctx
                .providers
                .all()
                .iter()
                .map(|p| {
                    json!({
                        "provider": p.name(),
                        "base_url": p.base_url(),
                        "default_model": p.default_model(),
                    })
                })
                .collect();
            let text = if providers.is_empty() {
                "No model provider is configured. Set CUSTOM_API_URL (and CUSTOM_API_KEY, \
                 CUSTOM_MODEL_NAME) to an OpenAI-compatible endpoint."
                    .to_string()
            } else {
                ctx.providers
                    .all()
                    .iter()
                    .map(|p| {
                        format!(
                            "{} — {} — default model: {}",
                            p.name(),
                            p.base_url(),
                            p.default_model().unwrap_or("(none; pass `model`)")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
            result.structured_content = Some(json!({ "providers": providers }));
            Ok(result)
        })
    }
}
