//! GLM (Zhipu / Z.ai): thinking through the `thinking` body field (or, on models that always
//! think, the lowest `reasoning_effort`), temperatures within 0–1, the output limit in
//! `max_tokens`, no `stream_options` (usage comes in the last chunk anyway), and web search as a
//! server-side `web_search` tool with the engine the host documents; images before the text;
//! reasoning sent back on turns that called tools; its business error codes; its billing pages.

use serde_json::{Value, json};

use super::dialect::{Dialect, Extraction, WebSearch};
use super::errors::{self, ErrorBody, ErrorClass};
use super::{ChatRequest, Effort, ModelInfo, Thinking, body, search};

pub(crate) struct Glm;

impl Dialect for Glm {
    /// GLM documents only `max_tokens`.
    fn limit_field(&self) -> &'static str {
        "max_tokens"
    }

    fn images_first(&self) -> bool {
        true
    }

    /// Interleaved thinking: the reasoning of a turn that called tools goes back with it.
    fn echoes_reasoning(&self, called_tools: bool) -> bool {
        called_tools
    }

    fn shape(&self, model: &ModelInfo, request: &ChatRequest, host: &str, body: &mut Value) {
        shape(model, request, host, body);
    }

    fn web_search(&self) -> Option<WebSearch> {
        Some(WebSearch::InRequest)
    }

    /// Z.ai (international) and BigModel (mainland China) issue their own keys; the Coding
    /// Plan has an endpoint of its own.
    fn platform_urls(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("Z.ai, international", "https://api.z.ai/api/paas/v4"),
            ("Z.ai Coding Plan", "https://api.z.ai/api/coding/paas/v4"),
            (
                "BigModel, mainland China",
                "https://open.bigmodel.cn/api/paas/v4",
            ),
        ]
    }

    fn error_class(&self, _status: u16, body: &ErrorBody) -> Option<ErrorClass> {
        code(body).and_then(code_class)
    }

    fn refused_hint(&self, _body: &ErrorBody) -> String {
        " — the GLM plan does not include this model; choose another model (listmodels) or \
         another plan at https://z.ai/subscribe"
            .to_string()
    }

    /// 1113 also answers a Coding Plan key sent to the pay-as-you-go endpoint.
    fn document_extraction(&self) -> Option<Extraction> {
        Some(Extraction::Parser)
    }

    fn quota_hint(&self, body: &ErrorBody) -> String {
        if plan_code(body) {
            errors::exhausted(
                "the GLM plan's usage limit is reached (the message says when it resets); see \
                 https://z.ai/subscribe",
            )
        } else {
            errors::exhausted(
                "top up the GLM balance at https://z.ai/manage-apikey/billing (or use the \
                 endpoint that matches the key's plan)",
            )
        }
    }
}

fn shape(model: &ModelInfo, request: &ChatRequest, host: &str, body: &mut Value) {
    if let Some(t) = request.temperature {
        body["temperature"] = body::temperature(t.clamp(0.0, 1.0));
    }
    match (request.thinking.map(Effort::thinks), model.thinking) {
        (_, Thinking::None) | (None, _) => {}
        // `thinking: disabled` is refused (code 1210) by a model that always thinks.
        (Some(false), Thinking::Always) => {
            if let Some(lowest) = model.lowest_effort() {
                body["reasoning_effort"] = json!(lowest);
            }
        }
        (Some(on), _) => {
            body["thinking"] = json!({"type": if on { "enabled" } else { "disabled" }});
            // GLM-5.2 and later take an effort, `max` by default (SOURCES.md Z1, Z10): a tool
            // asking for less would get the most.
            if let Some(effort) = request.thinking.filter(|_| on)
                && let Some(word) = model.effort_for(effort)
            {
                body["reasoning_effort"] = json!(word);
            }
        }
    }
    // No tool_choice: GLM documents it for function tools only.
    if request.web_search && search::offered(&Glm, model).is_some() {
        body["tools"] = json!([search_tool(host)]);
    }
}

/// GLM's server-side search: the platform searches before the model answers and, with
/// `search_result` (off by default), returns what it found in a top-level `web_search` array.
/// The reference marks `search_engine` required, and its values differ by host.
pub(crate) fn search_tool(host: &str) -> Value {
    json!({"type": "web_search", "web_search": {
        "enable": true,
        "search_engine": search_engine(host),
        "search_result": true,
    }})
}

/// The engine GLM documents for `host`: api.z.ai names only `search_pro_jina`; open.bigmodel.cn
/// lists search_std, search_pro, search_pro_sogou and search_pro_quark, of which the first two
/// return results without links. Any other host (a proxy) gets api.z.ai's.
fn search_engine(host: &str) -> &'static str {
    let host = host.to_ascii_lowercase();
    if host == "bigmodel.cn" || host.ends_with(".bigmodel.cn") {
        "search_pro_quark"
    } else {
        "search_pro_jina"
    }
}

/// GLM's numeric business code.
fn code(body: &ErrorBody) -> Option<u32> {
    body.code.as_deref()?.parse().ok()
}

/// GLM's business codes (Z.ai "Errors" page, codes with their HTTP status).
fn code_class(code: u32) -> Option<ErrorClass> {
    Some(match code {
        // 1113 balance; 1304 daily call limit; 1308/1310 plan windows (the message says when
        // they reset); 1309 plan expired; 1313 fair-use restriction; 1314–1321 other plan
        // restrictions.
        1113 | 1304 | 1308 | 1309 | 1310 | 1313..=1321 => ErrorClass::Quota,
        1110 | 1111 | 1112 | 1121 => ErrorClass::Account,
        1302 | 1303 => ErrorClass::RateLimited,
        // 1305 the API's traffic limit; 1312 this model is busy ("try later, or another
        // model").
        1305 | 1312 => ErrorClass::Overloaded,
        // The plan does not include this model: the plan's other models still answer.
        1311 => ErrorClass::Refused,
        _ => return None,
    })
}

/// GLM codes of a plan's usage window or term rather than the account's balance.
fn plan_code(body: &ErrorBody) -> bool {
    matches!(code(body), Some(1304 | 1308 | 1309 | 1310 | 1313..=1321))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glm_gets_the_search_engine_its_host_documents() {
        for (host, engine) in [
            ("api.z.ai", "search_pro_jina"),
            ("open.bigmodel.cn", "search_pro_quark"),
            ("OPEN.BIGMODEL.CN", "search_pro_quark"),
            ("bigmodel.cn.example", "search_pro_jina"),
            ("127.0.0.1", "search_pro_jina"),
        ] {
            assert_eq!(search_engine(host), engine, "{host}");
            assert_eq!(search_tool(host)["web_search"]["search_engine"], engine);
        }
    }
}
