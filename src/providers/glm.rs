//! GLM (Zhipu / Z.ai): thinking through the `thinking` body field, temperatures within 0–1,
//! and no `stream_options` (usage comes in the last chunk anyway).

use serde_json::{Value, json};

use super::{ChatRequest, ModelInfo, Thinking};

pub fn shape(model: &ModelInfo, request: &ChatRequest, body: &mut Value) {
    if let Some(t) = request.temperature {
        body["temperature"] = json!(t.clamp(0.0, 1.0));
    }
    if let Some(on) = request.thinking
        && model.thinking != Thinking::None
    {
        body["thinking"] = json!({"type": if on { "enabled" } else { "disabled" }});
    }
}
