//! Any OpenAI-compatible endpoint (Ollama, vLLM, LM Studio, llama.cpp, a company gateway): the
//! plain protocol, with the output limit in `max_tokens`, which all of them take.

use serde_json::{Value, json};

use super::{ChatRequest, ModelInfo, body};

pub fn shape(_model: &ModelInfo, request: &ChatRequest, body: &mut Value) {
    body["stream_options"] = json!({"include_usage": true});
    if let Some(t) = request.temperature {
        body["temperature"] = body::temperature(t);
    }
}
