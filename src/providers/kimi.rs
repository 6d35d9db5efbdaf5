//! Kimi (Moonshot): on kimi-* models the platform fixes sampling, so none is sent; thinking
//! models that may stop thinking are told `thinking: {type: disabled}`, those that always think
//! (kimi-k3, kimi-k2.7-code) get at most their lowest `reasoning_effort` and never a `thinking`
//! field; the output limit goes in `max_completion_tokens`; web search is the builtin
//! `$web_search` function, whose calls `search.rs` hands back; images before the text; every
//! turn's reasoning sent back; its billing page.

use serde_json::{Value, json};

use super::dialect::{Dialect, Extraction, WebSearch};
use super::errors::{self, ErrorBody, ErrorClass};
use super::{ChatRequest, Effort, ModelInfo, Thinking, body, search};

/// The name of Kimi's builtin search function.
pub(crate) const SEARCH_FUNCTION: &str = "$web_search";

pub(crate) struct Kimi;

impl Dialect for Kimi {
    /// Kimi deprecates `max_tokens`.
    fn limit_field(&self) -> &'static str {
        "max_completion_tokens"
    }

    /// Kimi documents that a prompt plus limit over the context window is refused.
    fn limit_within_context(&self) -> bool {
        true
    }

    fn images_first(&self) -> bool {
        true
    }

    /// Kimi takes the reasoning back on every assistant turn.
    fn wants_reasoning_back(&self) -> bool {
        true
    }

    fn shape(&self, model: &ModelInfo, request: &ChatRequest, _host: &str, body: &mut Value) {
        shape(model, request, body);
    }

    fn web_search(&self) -> Option<WebSearch> {
        Some(WebSearch::RoundTrip {
            function: SEARCH_FUNCTION,
        })
    }

    fn document_extraction(&self) -> Option<Extraction> {
        Some(Extraction::FilesApi)
    }

    fn quota_hint(&self, _body: &ErrorBody) -> String {
        errors::exhausted("top up the Kimi balance at https://platform.kimi.ai/console")
    }

    /// Kimi answers 403 for an account it will not serve: an empty balance or a used-up
    /// billing cycle (its help pages), or one its risk control terminated
    /// (`access_terminated_error`). Any other 403 is left to its status.
    fn error_class(&self, status: u16, body: &ErrorBody) -> Option<ErrorClass> {
        if status != 403 {
            return None;
        }
        let said: Vec<String> = [&body.kind, &body.code, &body.message]
            .into_iter()
            .flatten()
            .map(|text| text.to_ascii_lowercase())
            .collect();
        let says = |words: &[&str]| {
            said.iter()
                .any(|text| words.iter().any(|w| text.contains(w)))
        };
        if says(&["access_terminated", "access terminated"]) {
            Some(ErrorClass::Account)
        } else if says(&["balance", "recharge", "suspended", "usage limit", "quota"]) {
            Some(ErrorClass::Quota)
        } else {
            None
        }
    }

    /// Moonshot's international and mainland China platforms issue their own keys.
    fn platform_urls(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("international", "https://api.moonshot.ai/v1"),
            ("mainland China", "https://api.moonshot.cn/v1"),
        ]
    }
}

fn shape(model: &ModelInfo, request: &ChatRequest, body: &mut Value) {
    body["stream_options"] = json!({"include_usage": true});
    if let Some(t) = request.temperature
        && !model.fixed_sampling
    {
        body["temperature"] = body::temperature(t.clamp(0.0, 1.0));
    }
    match request.thinking {
        Some(Effort::Minimal) => match model.thinking {
            Thinking::DefaultOn => body["thinking"] = json!({"type": "disabled"}),
            Thinking::Always => {
                if let Some(lowest) = model.lowest_effort() {
                    body["reasoning_effort"] = json!(lowest);
                }
            }
            Thinking::None | Thinking::Optional => {}
        },
        // A model with documented efforts thinks at `max` unless told (K3, SOURCES.md K1).
        Some(effort) if model.thinking != Thinking::None => {
            if let Some(word) = model.effort_for(effort) {
                body["reasoning_effort"] = json!(word);
            }
        }
        _ => {}
    }
    // No tool_choice: Kimi's default is "auto", the only choice its thinking models accept.
    // Thinking stays as the model has it: $web_search works with thinking on.
    if request.web_search && search::offered(&Kimi, model).is_some() {
        body["tools"] = json!([search_tool()]);
    }
}

/// Kimi's builtin search: the model calls it, and the caller passes the arguments back.
pub(crate) fn search_tool() -> Value {
    json!({"type": "builtin_function", "function": {"name": SEARCH_FUNCTION}})
}
