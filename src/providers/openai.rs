//! OpenAI: reasoning models take no temperature; the effort a tool asks for goes in
//! `reasoning_effort` as the catalog names it (the lowest listed, else `low`, for the least). The output limit goes in `max_completion_tokens` for
//! every model (reasoning models refuse `max_tokens`). A conversation's requests carry its
//! `prompt_cache_key`, so they reach the machines holding their cached prefix.

use serde_json::{Value, json};

use super::dialect::Dialect;
use super::errors::{self, ErrorBody};
use super::{ChatRequest, Effort, ModelInfo, Thinking, body};

pub(crate) struct OpenAi;

impl Dialect for OpenAi {
    /// OpenAI's reasoning models refuse `max_tokens`.
    fn limit_field(&self) -> &'static str {
        "max_completion_tokens"
    }

    /// OpenAI refuses a prompt plus limit over the window (`context_length_exceeded`, "… in the
    /// messages, … in the completion", SOURCES.md O7).
    fn limit_within_context(&self) -> bool {
        true
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
        // The effort asked for, as the catalog names it. A model whose default is no reasoning
        // at all (gpt-5.6's `none`) reasons only when it is named.
        _ => match request.thinking {
            Some(Effort::Minimal) => {
                body["reasoning_effort"] = json!(model.lowest_effort().unwrap_or("low"));
            }
            Some(effort) => {
                if let Some(word) = model.effort_for(effort) {
                    body["reasoning_effort"] = json!(word);
                }
            }
            None => {}
        },
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
