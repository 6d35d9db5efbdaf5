//! OpenAI: reasoning models take no temperature; their effort can be lowered instead (to the
//! lowest the catalog lists, else `low`). The output limit goes in `max_completion_tokens` for
//! every model (reasoning models refuse `max_tokens`). A conversation's requests carry its
//! `prompt_cache_key`, so they reach the machines holding their cached prefix.

use serde_json::{Value, json};

use super::dialect::Dialect;
use super::errors::{self, ErrorBody};
use super::{ChatRequest, ModelInfo, Thinking, body};

pub(crate) struct OpenAi;

impl Dialect for OpenAi {
    /// OpenAI's reasoning models refuse `max_tokens`.
    fn limit_field(&self) -> &'static str {
        "max_completion_tokens"
    }

    fn shape(&self, model: &ModelInfo, request: &ChatRequest, _host: &str, body: &mut Value) {
        shape(model, request, body);
    }

    fn quota_hint(&self, _body: &ErrorBody) -> String {
        errors::exhausted(
            "check the OpenAI credit and spend limits at https://platform.openai.com/account/billing",
        )
    }
}

fn shape(model: &ModelInfo, request: &ChatRequest, body: &mut Value) {
    body["stream_options"] = json!({"include_usage": true});
    // OpenAI routes requests with the same key to the machines that cached their prefix.
    if let Some(key) = &request.cache_key {
        body["prompt_cache_key"] = json!(key);
    }
    match model.thinking {
        Thinking::None => {
            if let Some(t) = request.temperature {
                body["temperature"] = body::temperature(t);
            }
        }
        _ => {
            if request.thinking == Some(false) {
                body["reasoning_effort"] = json!(model.lowest_effort().unwrap_or("low"));
            }
        }
    }
    // An assistant turn that only called tools has no content: null, as OpenAI documents it.
    if let Some(messages) = body["messages"].as_array_mut() {
        for message in messages {
            if message["role"] == "assistant"
                && message.get("tool_calls").is_some()
                && message["content"] == ""
            {
                message["content"] = Value::Null;
            }
        }
    }
}
