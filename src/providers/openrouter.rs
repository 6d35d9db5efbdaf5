//! OpenRouter: one API for many vendors; reasoning is switched with its `reasoning` field, except
//! on models whose reasoning is mandatory: they are never sent `enabled: false` (answered with
//! HTTP 400) but their lowest effort, or nothing. The output limit goes in
//! `max_completion_tokens`. A 402 that a smaller output limit would pass says so.

use serde_json::{Value, json};

use super::dialect::Dialect;
use super::errors::{self, ErrorBody, ErrorClass};
use super::{ChatRequest, Effort, ModelInfo, Thinking, body};

pub(crate) struct OpenRouter;

impl Dialect for OpenRouter {
    /// OpenRouter deprecates `max_tokens`.
    fn limit_field(&self) -> &'static str {
        "max_completion_tokens"
    }

    /// OpenRouter refuses a prompt plus limit over the window ("This endpoint's maximum context
    /// length is … However, you requested about … in the output", SOURCES.md R7).
    fn limit_within_context(&self) -> bool {
        true
    }

    fn shape(&self, model: &ModelInfo, request: &ChatRequest, _host: &str, body: &mut Value) {
        shape(model, request, body);
    }

    /// OpenRouter's 403: the model's moderation (or a guardrail) flagged the input; another
    /// model may take it.
    fn error_class(&self, status: u16, _body: &ErrorBody) -> Option<ErrorClass> {
        (status == 403).then_some(ErrorClass::Refused)
    }

    fn refused_hint(&self, _body: &ErrorBody) -> String {
        " — the model's moderation (or a guardrail of the account) flagged the input; rephrase \
         it or choose another model"
            .to_string()
    }

    fn quota_hint(&self, body: &ErrorBody) -> String {
        if affordable_with_fewer_tokens(body) {
            " — the OpenRouter credits do not cover this many output tokens; add credits at \
             https://openrouter.ai/settings/credits or ask for a shorter answer; exai did not \
             retry"
                .to_string()
        } else {
            errors::exhausted("add credits at https://openrouter.ai/settings/credits")
        }
    }
}

fn shape(model: &ModelInfo, request: &ChatRequest, body: &mut Value) {
    body["stream_options"] = json!({"include_usage": true});
    if let Some(t) = request.temperature {
        body["temperature"] = body::temperature(t);
    }
    match (request.thinking.map(Effort::thinks), model.thinking) {
        (_, Thinking::None) | (None, _) => {}
        (Some(false), Thinking::Always) => {
            if let Some(lowest) = model.lowest_effort() {
                body["reasoning"] = json!({"effort": lowest});
            }
        }
        // A model whose efforts are known (its listing, or the catalog) is asked for the one of
        // the tool's level (`reasoning.effort`, SOURCES.md R4); others are switched on or off.
        (Some(on), _) => {
            body["reasoning"] = match request
                .thinking
                .filter(|_| on)
                .and_then(|e| model.effort_for(e))
            {
                Some(word) => json!({"effort": word}),
                None => json!({"enabled": on}),
            }
        }
    }
}

/// OpenRouter's 402 "This request requires more credits, or fewer max_tokens … can only
/// afford N": a smaller output limit would be served.
fn affordable_with_fewer_tokens(body: &ErrorBody) -> bool {
    body.message
        .as_deref()
        .is_some_and(|m| m.contains("can only afford") || m.contains("fewer max_tokens"))
}
