//! Any OpenAI-compatible endpoint (Ollama, vLLM, LM Studio, llama.cpp, a company gateway): the
//! plain protocol, with the output limit in `max_tokens`, which all of them take, kept within the
//! context window (vLLM refuses more); billing and server errors are the endpoint operator's.

use serde_json::{Value, json};

use super::dialect::Dialect;
use super::errors::{self, ErrorBody};
use super::{ChatRequest, ModelInfo, body};

pub(crate) struct Custom;

impl Dialect for Custom {
    /// OpenAI-compatible servers (llama.cpp, Ollama, vLLM, LM Studio) all take `max_tokens`,
    /// while `max_completion_tokens` is newer.
    fn limit_field(&self) -> &'static str {
        "max_tokens"
    }

    /// vLLM refuses a prompt plus limit over the context window.
    fn limit_within_context(&self) -> bool {
        true
    }

    fn shape(&self, model: &ModelInfo, request: &ChatRequest, _host: &str, body: &mut Value) {
        shape(model, request, body);
    }

    fn quota_hint(&self, _body: &ErrorBody) -> String {
        errors::exhausted("ask the endpoint's operator")
    }

    fn server_error_hint(&self) -> &'static str {
        " — the endpoint failed; is the server healthy?"
    }
}

fn shape(_model: &ModelInfo, request: &ChatRequest, body: &mut Value) {
    body["stream_options"] = json!({"include_usage": true});
    if let Some(t) = request.temperature {
        body["temperature"] = body::temperature(t);
    }
}
