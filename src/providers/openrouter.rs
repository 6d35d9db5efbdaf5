//! OpenRouter: one API for many vendors; reasoning is switched with its `reasoning` field, except
//! on models whose reasoning is mandatory: they are never sent `enabled: false` (answered with
//! HTTP 400) but their lowest effort, or nothing. The output limit goes in
//! `max_completion_tokens`.

use serde_json::{Value, json};

use super::{ChatRequest, ModelInfo, Thinking, body};

pub fn shape(model: &ModelInfo, request: &ChatRequest, body: &mut Value) {
    body["stream_options"] = json!({"include_usage": true});
    if let Some(t) = request.temperature {
        body["temperature"] = body::temperature(t);
    }
    match (request.thinking, model.thinking) {
        (_, Thinking::None) | (None, _) => {}
        (Some(false), Thinking::Always) => {
            if let Some(lowest) = model.lowest_effort() {
                body["reasoning"] = json!({"effort": lowest});
            }
        }
        (Some(on), _) => body["reasoning"] = json!({"enabled": on}),
    }
}
