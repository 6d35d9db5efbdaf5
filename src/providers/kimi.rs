//! Kimi (Moonshot): on kimi-* models the platform fixes sampling, so none is sent; thinking
//! models that may stop thinking are told `thinking: {type: disabled}`, those that always think
//! (kimi-k3, kimi-k2.7-code) get at most their lowest `reasoning_effort` and never a `thinking`
//! field; the output limit goes in `max_completion_tokens`; web search is the builtin
//! `$web_search` function, whose calls `search.rs` hands back.

use serde_json::{Value, json};

use super::{ChatRequest, ModelInfo, Thinking, body, search};
use crate::config::ProviderKind;

pub fn shape(model: &ModelInfo, request: &ChatRequest, body: &mut Value) {
    body["stream_options"] = json!({"include_usage": true});
    if let Some(t) = request.temperature
        && !model.fixed_sampling
    {
        body["temperature"] = body::temperature(t.clamp(0.0, 1.0));
    }
    if request.thinking == Some(false) {
        match model.thinking {
            Thinking::DefaultOn => body["thinking"] = json!({"type": "disabled"}),
            Thinking::Always => {
                if let Some(lowest) = model.lowest_effort() {
                    body["reasoning_effort"] = json!(lowest);
                }
            }
            Thinking::None | Thinking::Optional => {}
        }
    }
    // No tool_choice: Kimi's default is "auto", the only choice its thinking models accept.
    // Thinking stays as the model has it: $web_search works with thinking on.
    if request.web_search && search::can_search(ProviderKind::Kimi, model) {
        body["tools"] = json!([search::kimi_tool()]);
    }
}
