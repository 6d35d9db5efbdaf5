//! GLM (Zhipu / Z.ai): thinking through the `thinking` body field, temperatures within 0–1,
//! no `stream_options` (usage comes in the last chunk anyway), and web search as a server-side
//! `web_search` tool (GLM takes only `tool_choice: "auto"`).

use serde_json::{Value, json};

use super::{ChatRequest, ModelInfo, Thinking, search};
use crate::config::ProviderKind;

pub fn shape(model: &ModelInfo, request: &ChatRequest, body: &mut Value) {
    if let Some(t) = request.temperature {
        body["temperature"] = json!(t.clamp(0.0, 1.0));
    }
    if let Some(on) = request.thinking
        && model.thinking != Thinking::None
    {
        body["thinking"] = json!({"type": if on { "enabled" } else { "disabled" }});
    }
    if request.web_search && search::can_search(ProviderKind::Glm, model) {
        body["tools"] = json!([search::glm_tool()]);
        body["tool_choice"] = json!("auto");
    }
}
