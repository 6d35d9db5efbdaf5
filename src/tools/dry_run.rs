//! `dry_run: true`: a call that builds the exact request(s) it would send to the model and
//! answers with them, sending nothing upstream (no chat request, no document upload).
//!
//! Where it cuts off: the tool runs as usual up to the moment it would ask a model;
//! `consult::ask` then records the request the provider's client builds for the wire
//! (`Endpoint::plan`, the same body function a real attempt uses) and stops that question.
//! The call ends succeeded with the planned requests as its answer, and is recorded like any.

use std::sync::{Arc, Mutex};

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool};
use serde::Serialize;
use serde_json::{Value, json};

use super::{ExaiTool, ToolContext, ToolFuture};
use crate::calls::{FailureKind, ToolFailure};
use crate::providers::PlannedRequest;

/// The argument's name, on every tool that asks a model.
pub const ARGUMENT: &str = "dry_run";

/// One request a dry run would have sent.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub provider: String,
    pub model: String,
    pub request: PlannedRequest,
    /// What would happen to each document named: uploaded for extraction, taken from the
    /// cache, or skipped and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub documents: Vec<String>,
    /// Files and turns left out, as a real answer would note them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The requests a dry run collected, in the order the tool built them.
#[derive(Debug, Default)]
pub struct DryRun {
    planned: Mutex<Vec<Planned>>,
}

impl DryRun {
    /// Keeps a request the tool would have sent.
    pub fn record(&self, planned: Planned) {
        self.planned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(planned);
    }

    fn taken(&self) -> Vec<Planned> {
        std::mem::take(&mut *self.planned.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The failure that stops a question in a dry run, once its request is recorded.
pub fn stopped() -> ToolFailure {
    ToolFailure::new(
        FailureKind::DryRun,
        "dry run: the request was built and not sent",
    )
}

/// Adds `dry_run` to the input schema of a tool that asks a model.
pub fn declare(definition: &mut Tool) {
    let mut schema = (*definition.input_schema).clone();
    if let Some(Value::Object(properties)) = schema.get_mut("properties") {
        properties.insert(
            ARGUMENT.into(),
            json!({
                "type": "boolean",
                "description": "Build the request(s) this call would send to the model and return them (secrets masked) instead of sending anything; default false."
            }),
        );
    }
    definition.input_schema = Arc::new(schema);
}

/// Runs `tool`, or — when the arguments ask for a dry run — runs it up to its model requests
/// and answers with them.
pub fn run(tool: Arc<dyn ExaiTool>, mut arguments: JsonObject, mut ctx: ToolContext) -> ToolFuture {
    let wanted = match arguments.remove(ARGUMENT) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(other) => {
            let failure = ToolFailure::new(
                FailureKind::BadArguments,
                format!("invalid arguments: {ARGUMENT} must be true or false, not {other}"),
            );
            return Box::pin(std::future::ready(Err(failure)));
        }
    };
    if !wanted {
        return tool.run(arguments, ctx);
    }
    let name = ctx.call.tool.clone();
    if !tool.asks_models() {
        let text = format!(
            "Dry run: {name} asks no model, so there is no request to show; it was not run."
        );
        return Box::pin(std::future::ready(Ok(answer(text, Vec::new()))));
    }
    let plan = Arc::new(DryRun::default());
    ctx.dry_run = Some(plan.clone());
    let work = tool.run(arguments, ctx);
    Box::pin(async move {
        let outcome = work.await;
        let planned = plan.taken();
        if planned.is_empty() {
            // This step asked no model (a workflow's intermediate step): its own answer stands.
            let mut result = outcome?;
            result.content.insert(
                0,
                ContentBlock::text(format!(
                    "Dry run: this {name} call asked no model, so nothing would be sent upstream; \
                     the step ran as usual."
                )),
            );
            return Ok(result);
        }
        let text = format!(
            "Dry run: {name} would send {} request(s); nothing was sent (no model request, no \
             document upload). Secrets are masked.\n\n{}",
            planned.len(),
            serde_json::to_string_pretty(&planned).unwrap_or_default()
        );
        Ok(answer(text, planned))
    })
}

/// Longest image data URL shown whole in a plan; longer ones are cut (they are base64 bytes).
const SHOWN_DATA_URL: usize = 120;

/// Cuts the image data URLs in a planned body to their start and size: the request is shown,
/// not a megabyte of base64.
pub fn shorten_data_urls(body: &mut Value) {
    let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) else {
        return;
    };
    for message in messages {
        let Some(parts) = message.get_mut("content").and_then(Value::as_array_mut) else {
            continue;
        };
        for part in parts {
            if let Some(Value::String(url)) = part.pointer_mut("/image_url/url")
                && url.starts_with("data:")
                && url.len() > SHOWN_DATA_URL
            {
                let mut end = SHOWN_DATA_URL;
                while !url.is_char_boundary(end) {
                    end -= 1;
                }
                *url = format!("{}… ({} bytes in all)", &url[..end], url.len());
            }
        }
    }
}

fn answer(text: String, planned: Vec<Planned>) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(json!({"dry_run": true, "requests": planned}));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_image_data_urls_are_cut_and_the_rest_is_untouched() {
        let long = format!("data:image/png;base64,{}", "A".repeat(10_000));
        let mut body = json!({"messages": [
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": long}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                {"type": "text", "text": "look"}
            ]},
            {"role": "user", "content": "plain"}
        ]});
        shorten_data_urls(&mut body);
        let parts = &body["messages"][0]["content"];
        let cut = parts[0]["image_url"]["url"].as_str().unwrap();
        assert!(
            cut.len() < 200 && cut.ends_with("(10022 bytes in all)"),
            "{cut}"
        );
        assert_eq!(parts[1]["image_url"]["url"], "https://example.com/a.png");
        assert_eq!(parts[2]["text"], "look");
        assert_eq!(body["messages"][1]["content"], "plain");
    }
}
