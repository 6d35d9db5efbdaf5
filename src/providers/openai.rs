//! OpenAI: reasoning models take no temperature; their effort can be lowered instead.

use serde_json::{Value, json};

use super::{ChatRequest, ModelInfo, Thinking};

pub fn shape(model: &ModelInfo, request: &ChatRequest, body: &mut Value) {
    body["stream_options"] = json!({"include_usage": true});
    match model.thinking {
        Thinking::None => {
            if let Some(t) = request.temperature {
                body["temperature"] = json!(t);
            }
        }
        _ => {
            if request.thinking == Some(false) {
                body["reasoning_effort"] = json!("low");
            }
        }
    }
}
