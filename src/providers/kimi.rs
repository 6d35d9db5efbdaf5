//! Kimi (Moonshot): on kimi-* models the platform fixes sampling, so none is sent;
//! thinking models can be told not to think with `thinking: {type: disabled}`; web search is
//! the builtin `$web_search` function, whose calls `search.rs` hands back.

use serde_json::{Value, json};

use super::{ChatRequest, ModelInfo, Thinking, search};
use crate::config::ProviderKind;

pub fn shape(model: &ModelInfo, request: &ChatRequest, body: &mut Value) {
    body["stream_options"] = json!({"include_usage": true});
    if let Some(t) = request.temperature
        && !model.fixed_sampling
    {
        body["temperature"] = json!(t.clamp(0.0, 1.0));
    }
    if request.thinking == Some(false) && model.thinking == Thinking::DefaultOn {
        body["thinking"] = json!({"type": "disabled"});
    }
    // No tool_choice: Kimi's default is "auto", the only choice its thinking models accept.
    if request.web_search && search::can_search(ProviderKind::Kimi, model) {
        body["tools"] = json!([search::kimi_tool()]);
    }
}
