//! OpenRouter: one API for many vendors; reasoning is switched with its `reasoning` field.

use serde_json::{Value, json};

use super::{ChatRequest, ModelInfo, Thinking};

pub fn shape(model: &ModelInfo, request: &ChatRequest, body: &mut Value) {
    body["stream_options"] = json!({"include_usage": true});
    if let Some(t) = request.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(on) = request.thinking
        && model.thinking != Thinking::None
    {
        body["reasoning"] = json!({"enabled": on});
    }
}
