//! `listmodels`: every provider (configured or why not), its models, aliases, context windows
//! and deprecations.

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool};
use serde_json::json;

use super::{
    ExaiTool, NoArguments, ToolContext, ToolFuture, definition, local_read_only, parse_arguments,
};
use crate::calls::progress::thousands;
use crate::providers::{ModelInfo, Providers, can_search};

pub struct ListModels;

impl ExaiTool for ListModels {
    fn definition(&self) -> Tool {
        definition::<NoArguments>(
            "listmodels",
            "List the model providers (configured or why not), their models, aliases and context windows.",
            local_read_only(),
        )
    }

    fn run(&self, arguments: JsonObject, ctx: ToolContext) -> ToolFuture {
        Box::pin(async move {
            parse_arguments::<NoArguments>("listmodels", arguments)?;
            let (text, structured) = describe(&ctx.providers);
            let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
            result.structured_content = Some(structured);
            Ok(result)
        })
    }
}

fn models_of(providers: &Providers, name: &str, declared: &[String]) -> Vec<ModelInfo> {
    let mut models: Vec<ModelInfo> = providers.catalog().of_provider(name).cloned().collect();
    // A set: an endpoint may list thousands.
    let mut listed: std::collections::HashSet<String> =
        models.iter().map(|m| m.id.clone()).collect();
    for id in declared.iter().cloned().chain(providers.discovered(name)) {
        if listed.insert(id.clone()) {
            models.push(
                providers
                    .catalog()
                    .find(&id, None)
                    .filter(|m| m.id == id)
                    .map(|m| ModelInfo {
                        provider: name.to_string(),
                        ..m.clone()
                    })
                    .unwrap_or_else(|| ModelInfo::unlisted(name, &id)),
            );
        }
    }
    models
}

fn describe(providers: &Providers) -> (String, serde_json::Value) {
    let mut lines = Vec::new();
    let mut entries = Vec::new();
    for endpoint in providers.usable() {
        let config = &endpoint.config;
        let allowed = |id: &str| {
            config
                .allowed_models
                .as_ref()
                .is_none_or(|a| a.iter().any(|m| m.eq_ignore_ascii_case(id)))
        };
        let models: Vec<ModelInfo> = models_of(providers, &config.name, &config.models)
            .into_iter()
            .filter(|m| allowed(&m.id))
            .collect();
        lines.push(format!(
            "{} — configured — {} — {} model(s)",
            config.name,
            config.base_url,
            models.len()
        ));
        for m in &models {
            let aliases = if m.aliases.is_empty() {
                String::new()
            } else {
                format!(" (aliases: {})", m.aliases.join(", "))
            };
            let context = if m.unlisted {
                "context unknown".to_string()
            } else {
                format!("{} context", thousands(m.context_window))
            };
            let search = if can_search(config.kind, m) {
                " · web search"
            } else {
                ""
            };
            let vision = if m.vision { " · images" } else { "" };
            let deprecated = match &m.deprecated {
                Some(why) => format!(" · deprecated: {why}"),
                None => String::new(),
            };
            lines.push(format!(
                "  {}{aliases} · {context} · score {}{search}{vision}{deprecated}",
                m.id, m.score
            ));
        }
        entries.push(json!({
            "provider": config.name,
            "configured": true,
            "base_url": config.base_url,
            "max_concurrency": config.max_concurrency,
            "models": models.iter().map(|m| json!({
                "id": m.id,
                "aliases": m.aliases,
                "context_window": (!m.unlisted).then_some(m.context_window),
                "max_output": (!m.unlisted).then_some(m.max_output),
                "thinking": m.thinking,
                "web_search": can_search(config.kind, m),
                "vision": m.vision,
                "score": m.score,
                "deprecated": m.deprecated,
            })).collect::<Vec<_>>(),
        }));
    }
    for config in providers.unusable() {
        let why = config.unavailable.clone().unwrap_or_default();
        lines.push(format!("{} — not configured: {why}", config.name));
        entries.push(json!({"provider": config.name, "configured": false, "why": why}));
    }
    if providers.usable().is_empty() {
        lines.push(
            "No provider is configured yet: store a key with `exai keys set <provider>` (glm, \
             kimi, openai, openrouter; or set CUSTOM_API_URL for any OpenAI-compatible \
             endpoint), then run `exai doctor` to check it."
                .into(),
        );
    }
    (lines.join("\n"), json!({ "providers": entries }))
}
