//! Kimi (Moonshot): on kimi-* models the platform fixes sampling, so none is sent;
//! thinking models can be told not to think with `thinking: {type: disabled}`.

use serde_json::{Value, json};

use super::{ChatRequest, ModelInfo, Thinking};

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
}
