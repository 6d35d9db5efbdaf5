//! GLM (Zhipu / Z.ai): thinking through the `thinking` body field (or, on models that always
//! think, the lowest `reasoning_effort`), temperatures within 0–1, the output limit in
//! `max_tokens`, no `stream_options` (usage comes in the last chunk anyway), and web search as a
//! server-side `web_search` tool with the engine the host documents.

use serde_json::{Value, json};

use super::{ChatRequest, ModelInfo, Thinking, body, search};
use crate::config::ProviderKind;

pub fn shape(model: &ModelInfo, request: &ChatRequest, host: &str, body: &mut Value) {
    if let Some(t) = request.temperature {
        body["temperature"] = body::temperature(t.clamp(0.0, 1.0));
    }
    match (request.thinking, model.thinking) {
        (_, Thinking::None) | (None, _) => {}
        // `thinking: disabled` is refused (code 1210) by a model that always thinks.
        (Some(false), Thinking::Always) => {
            if let Some(lowest) = model.lowest_effort() {
                body["reasoning_effort"] = json!(lowest);
            }
        }
        (Some(on), _) => {
            body["thinking"] = json!({"type": if on { "enabled" } else { "disabled" }});
        }
    }
    // No tool_choice: GLM documents it for function tools only.
    if request.web_search && search::can_search(ProviderKind::Glm, model) {
        body["tools"] = json!([search::glm_tool(host)]);
    }
}
