//! Real model ids (the built-in catalog's), answered as their provider would: a request is first
//! checked against what the provider documents as refused (tests/fixtures/providers/README.md,
//! "The fake rejects what the provider rejects") and refused with the provider's documented error
//! body — the fixture where there is one. A request that passes is answered like `fake-fast`,
//! except a Kimi request that offers `$web_search` (the `fake-kimi-search` round trip) and a
//! streamed GLM request whose `web_search` tool asks for results (`glm/stream_web_search.sse`
//! replayed).

use std::collections::VecDeque;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ChatRequest, KIMI_SEARCH, ResetHandle, Script, Step, Tracker};

/// Which provider's rules a real model id follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Provider {
    Glm,
    Kimi,
    OpenAi,
    OpenRouter,
}

/// Whether a model thinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Thinking {
    Never,
    UnlessDisabled,
    Always,
}

/// What the fake knows of a real model: only what its provider's rules need.
pub(super) struct Model {
    id: &'static str,
    provider: Provider,
    /// Input plus output limit may not exceed it (Kimi refuses such requests).
    context: u64,
    /// The most output tokens it may be asked for (GLM refuses more).
    max_output: u64,
    /// Whether it thinks: never, unless told not to, or whatever the request says (then
    /// `thinking: disabled` is refused; on OpenRouter, reasoning is mandatory).
    thinking: Thinking,
    /// Takes image parts.
    vision: bool,
    /// The platform fixes temperature and the other sampling parameters (Kimi's current models).
    fixed_sampling: bool,
    /// The reasoning efforts it accepts, highest first, as OpenRouter lists them (empty: any).
    efforts: &'static [&'static str],
}

const fn model(id: &'static str, provider: Provider, context: u64, max_output: u64) -> Model {
    Model {
        id,
        provider,
        context,
        max_output,
        thinking: Thinking::Never,
        vision: false,
        fixed_sampling: false,
        efforts: &[],
    }
}

const fn efforts(efforts: &'static [&'static str], model: Model) -> Model {
    Model { efforts, ..model }
}

/// Thinks whatever the request says.
const fn thinking(model: Model) -> Model {
    Model {
        thinking: Thinking::Always,
        ..model
    }
}

/// Thinks unless told `thinking: {type: disabled}`.
const fn thinks_by_default(model: Model) -> Model {
    Model {
        thinking: Thinking::UnlessDisabled,
        ..model
    }
}

const fn seeing(model: Model) -> Model {
    Model {
        vision: true,
        ..model
    }
}

const fn fixed(model: Model) -> Model {
    Model {
        fixed_sampling: true,
        ..model
    }
}

/// The real ids the fake answers, with what their documentation says about them.
const MODELS: &[Model] = &[
    thinking(model("glm-5.3", Provider::Glm, 1_048_576, 131_072)),
    model("glm-5.2", Provider::Glm, 1_048_576, 131_072),
    model("glm-5", Provider::Glm, 202_752, 131_072),
    model("glm-4.7", Provider::Glm, 202_752, 131_072),
    model("glm-4.6", Provider::Glm, 202_752, 131_072),
    model("glm-4.5-air", Provider::Glm, 131_072, 98_304),
    seeing(model("glm-5.3-flashx", Provider::Glm, 131_072, 32_768)),
    fixed(seeing(thinking(model(
        "kimi-k3",
        Provider::Kimi,
        1_048_576,
        1_048_576,
    )))),
    fixed(seeing(thinking(model(
        "kimi-k2.7-code",
        Provider::Kimi,
        262_144,
        262_144,
    )))),
    fixed(seeing(thinking(model(
        "kimi-k2.7-code-highspeed",
        Provider::Kimi,
        262_144,
        262_144,
    )))),
    fixed(seeing(thinks_by_default(model(
        "kimi-k2.6",
        Provider::Kimi,
        262_144,
        262_144,
    )))),
    fixed(thinks_by_default(model(
        "kimi-k2.5",
        Provider::Kimi,
        262_144,
        262_144,
    ))),
    model("moonshot-v1-128k", Provider::Kimi, 131_072, 131_072),
    seeing(model("gpt-5.6-sol", Provider::OpenAi, 1_050_000, 128_000)),
    seeing(model("gpt-5.6-terra", Provider::OpenAi, 1_050_000, 128_000)),
    seeing(thinking(model("gpt-5", Provider::OpenAi, 400_000, 128_000))),
    seeing(thinking(model(
        "gpt-5-mini",
        Provider::OpenAi,
        400_000,
        128_000,
    ))),
    seeing(model("gpt-4.1", Provider::OpenAi, 1_047_576, 32_768)),
    model("z-ai/glm-4.7", Provider::OpenRouter, 202_752, 131_072),
    model(
        "moonshotai/kimi-k2.6",
        Provider::OpenRouter,
        262_144,
        65_536,
    ),
    efforts(
        &["high", "medium", "low", "minimal"],
        seeing(thinking(model(
            "openai/gpt-5",
            Provider::OpenRouter,
            400_000,
            128_000,
        ))),
    ),
    seeing(thinking(model(
        "google/gemini-2.5-pro",
        Provider::OpenRouter,
        1_048_576,
        65_536,
    ))),
    // Stand-ins for OpenRouter models whose `GET /models` entry reports their reasoning (see
    // `listed`); real ids are not listed, so no name resolves to the wrong provider in tests.
    efforts(
        &["high", "medium", "low"],
        thinking(model(
            "fake/mandatory-reasoner",
            Provider::OpenRouter,
            131_072,
            32_768,
        )),
    ),
    model(
        "fake/optional-reasoner",
        Provider::OpenRouter,
        131_072,
        32_768,
    ),
];

/// The `GET /models` entries of the OpenRouter stand-ins, with their `reasoning` objects.
pub(super) fn listed() -> Vec<Value> {
    ["fake/mandatory-reasoner", "fake/optional-reasoner"]
        .iter()
        .filter_map(|id| find(id))
        .map(|m| {
            let reasoning = match m.thinking {
                Thinking::Always => json!({"mandatory": true, "supported_efforts": m.efforts}),
                _ => json!({"mandatory": false, "default_enabled": false,
                            "supported_efforts": null}),
            };
            json!({"id": m.id, "object": "model", "owned_by": "fake", "reasoning": reasoning})
        })
        .collect()
}

/// The real model `id` names, if the fake knows it.
pub(super) fn find(id: &str) -> Option<&'static Model> {
    MODELS.iter().find(|m| m.id == id)
}

/// The search engines GLM documents (api.z.ai: search_pro_jina; open.bigmodel.cn: the others).
const GLM_ENGINES: &[&str] = &[
    "search_pro_jina",
    "search_std",
    "search_pro",
    "search_pro_sogou",
    "search_pro_quark",
];

/// Sampling parameters Kimi fixes on its current models ("do not pass it explicitly").
const KIMI_FIXED: &[&str] = &[
    "temperature",
    "top_p",
    "n",
    "presence_penalty",
    "frequency_penalty",
];

/// Answers a request for a real model: its provider's refusal, or an answer.
pub(super) async fn answer(
    model: &Model,
    body: &Value,
    req: &ChatRequest,
    reset: &ResetHandle,
    tracker: Tracker,
) -> Response {
    if let Some(refused) = refusal(model, body).await {
        return tracker.finish(refused);
    }
    let stream = req.stream.unwrap_or(false);
    match model.provider {
        Provider::Kimi if offers(body, is_kimi_search) => {
            super::kimi_search(Script::KimiSearch, req, stream, tracker).await
        }
        // Without `search_result: true` GLM searches but returns no results.
        Provider::Glm
            if stream
                && offers(body, |t| {
                    t["type"] == "web_search" && t["web_search"]["search_result"] == true
                }) =>
        {
            match body_of("glm/stream_web_search.sse").await {
                Ok(events) => super::sse_response(VecDeque::from([Step::Send(events)]), tracker),
                Err(response) => tracker.finish(response),
            }
        }
        _ => super::answer(Script::Fast, req, reset, stream, tracker).await,
    }
}

fn offers(body: &Value, wanted: impl Fn(&Value) -> bool) -> bool {
    body["tools"]
        .as_array()
        .is_some_and(|t| t.iter().any(wanted))
}

fn is_kimi_search(tool: &Value) -> bool {
    tool["type"] == "builtin_function" && tool["function"]["name"] == KIMI_SEARCH
}

/// What the provider answers `body` with when it refuses it.
async fn refusal(model: &Model, body: &Value) -> Option<Response> {
    let refused = match model.provider {
        Provider::Glm => glm_refusal(model, body),
        Provider::Kimi => kimi_refusal(model, body),
        Provider::OpenAi => openai_refusal(model, body),
        Provider::OpenRouter => openrouter_refusal(model, body),
    }?;
    Some(match refused {
        Refused::Fixture(file) => match body_of(file).await {
            Ok(text) => {
                let status = status_of(file);
                let json = [(header::CONTENT_TYPE, "application/json")];
                (status, json, text).into_response()
            }
            Err(response) => response,
        },
        Refused::Glm(message) => {
            bad_request(json!({"error": {"code": "1214", "message": message}}))
        }
        Refused::OpenAi(message) => {
            bad_request(json!({"error": {"message": message, "type": "invalid_request_error"}}))
        }
    })
}

/// A documented refusal: a fixture file, or a message in the provider's error shape.
enum Refused {
    Fixture(&'static str),
    /// GLM's shape, business code 1214 (parameter error).
    Glm(String),
    /// The OpenAI shape with `type: invalid_request_error` (Kimi and OpenAI).
    OpenAi(String),
}

fn glm_refusal(model: &Model, body: &Value) -> Option<Refused> {
    if model.thinking == Thinking::Always && body["thinking"]["type"] == "disabled" {
        return Some(Refused::Fixture(
            "glm/error_400_1210_thinking_always_on.json",
        ));
    }
    for tool in body["tools"].as_array().into_iter().flatten() {
        if tool["type"] != "web_search" {
            continue;
        }
        let search = &tool["web_search"];
        if !search.is_object() || search["enable"] != true {
            return Some(Refused::Glm(
                "a web_search tool needs its web_search object with enable: true".into(),
            ));
        }
        if let Some(engine) = search.get("search_engine")
            && !GLM_ENGINES.iter().any(|e| engine == *e)
        {
            return Some(Refused::Glm(format!("unknown search_engine {engine}")));
        }
    }
    if let Some(choice) = body.get("tool_choice")
        && choice != "auto"
    {
        return Some(Refused::Glm("tool_choice only supports auto".into()));
    }
    if let Some(t) = body["temperature"].as_f64()
        && !(0.0..=1.0).contains(&t)
    {
        return Some(Refused::Glm(format!("temperature {t} is outside [0, 1]")));
    }
    if let Some(limit) = body["max_tokens"].as_u64()
        && limit > model.max_output
    {
        return Some(Refused::Glm(format!(
            "max_tokens {limit} is above {}",
            model.max_output
        )));
    }
    if !model.vision && has_parts(body) {
        return Some(Refused::Glm(format!(
            "{} is a text model: content must be a string",
            model.id
        )));
    }
    None
}

fn kimi_refusal(model: &Model, body: &Value) -> Option<Refused> {
    let refuse = |message: String| Some(Refused::OpenAi(message));
    if model.fixed_sampling
        && let Some(field) = KIMI_FIXED.iter().find(|f| body.get(**f).is_some())
    {
        return refuse(format!(
            "{field} is fixed for {} and cannot be set",
            model.id
        ));
    }
    let thinking = &body["thinking"];
    if model.id == "kimi-k3" && !thinking.is_null() {
        return refuse("kimi-k3 does not take thinking; use reasoning_effort".into());
    }
    let disabled = thinking["type"] == "disabled";
    if model.thinking == Thinking::Always && disabled {
        return refuse(format!("thinking cannot be disabled for {}", model.id));
    }
    if model.id.starts_with("kimi-k2") && body["tool_choice"] == "required" {
        return refuse("tool_choice 'required' is not supported with thinking".into());
    }
    let thinks = match model.thinking {
        Thinking::Never => false,
        Thinking::UnlessDisabled => !disabled,
        Thinking::Always => true,
    };
    if thinks && let Some(index) = assistant_tool_call_without_reasoning(body) {
        return refuse(format!(
            "thinking is enabled but reasoning_content is missing in assistant tool call \
             message at index {index}"
        ));
    }
    if model.id == "kimi-k3"
        && image_urls(body).any(|url| !(url.starts_with("data:") || url.starts_with("ms://")))
    {
        return refuse("kimi-k3 takes images as base64 or ms://<file-id>, not URLs".into());
    }
    let limit = body["max_completion_tokens"]
        .as_u64()
        .or_else(|| body["max_tokens"].as_u64())
        .unwrap_or(0);
    if prompt_tokens(body) + limit > model.context {
        // The fixture is the documented template filled with 262,144; other windows fill it alike.
        if model.context == 262_144 {
            return Some(Refused::Fixture(
                "kimi/error_400_invalid_request_error_token_limit.json",
            ));
        }
        return refuse(format!(
            "Your request exceeded model token limit : {}",
            model.context
        ));
    }
    None
}

fn openai_refusal(model: &Model, body: &Value) -> Option<Refused> {
    let always = model.thinking == Thinking::Always;
    let reasons = always || model.id.starts_with("gpt-5.6");
    if reasons && body.get("max_tokens").is_some() {
        return Some(Refused::Fixture(
            "openai/error_400_unsupported_parameter_max_tokens.json",
        ));
    }
    if always
        && let Some(t) = body["temperature"].as_f64()
        && t != 1.0
    {
        return Some(Refused::Fixture(
            "openai/error_400_unsupported_value_temperature.json",
        ));
    }
    None
}

fn openrouter_refusal(model: &Model, body: &Value) -> Option<Refused> {
    let reasoning = &body["reasoning"];
    let disabled = reasoning["enabled"] == false || reasoning["effort"] == "none";
    if model.thinking == Thinking::Always && disabled {
        return Some(Refused::Fixture(
            "openrouter/error_400_reasoning_mandatory.json",
        ));
    }
    if let Some(effort) = reasoning["effort"].as_str()
        && !model.efforts.is_empty()
        && !model.efforts.contains(&effort)
    {
        return Some(Refused::OpenAi(format!(
            "reasoning effort {effort:?} is not supported by {}",
            model.id
        )));
    }
    None
}

/// The index (in `messages`) of the first assistant turn that called tools without
/// `reasoning_content`: Kimi refuses it while thinking is on.
fn assistant_tool_call_without_reasoning(body: &Value) -> Option<usize> {
    body["messages"].as_array()?.iter().position(|m| {
        m["role"] == "assistant"
            && m.get("tool_calls").is_some()
            && m.get("reasoning_content").is_none()
    })
}

fn has_parts(body: &Value) -> bool {
    body["messages"]
        .as_array()
        .is_some_and(|ms| ms.iter().any(|m| m["content"].is_array()))
}

fn image_urls(body: &Value) -> impl Iterator<Item = &str> {
    body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["content"].as_array())
        .flatten()
        .filter_map(|part| part["image_url"]["url"].as_str())
}

/// A rough count of the prompt's tokens: four bytes of text a token.
fn prompt_tokens(body: &Value) -> u64 {
    let bytes: usize = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m["content"].to_string().len())
        .sum();
    (bytes / 4) as u64
}

fn bad_request(body: Value) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

/// The HTTP status a fixture's name gives (`error_<status>_…`).
fn status_of(file: &str) -> StatusCode {
    file.rsplit('/')
        .next()
        .and_then(|name| name.strip_prefix("error_"))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A fixture file's text, read at run time from the source tree.
async fn body_of(file: &str) -> Result<String, Response> {
    let path = format!(
        "{}/../tests/fixtures/providers/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    tokio::fs::read_to_string(&path).await.map_err(|e| {
        let message = format!("the fake cannot read {path}: {e}");
        (StatusCode::INTERNAL_SERVER_ERROR, message).into_response()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_names_give_their_status() {
        assert_eq!(
            status_of("glm/error_400_1210_thinking_always_on.json"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_of("openrouter/error_402_insufficient_credits.json"),
            StatusCode::PAYMENT_REQUIRED
        );
    }

    #[test]
    fn real_ids_are_known_and_fake_ones_are_not() {
        assert_eq!(find("glm-5.3").map(|m| m.provider), Some(Provider::Glm));
        assert_eq!(
            find("openai/gpt-5").map(|m| m.provider),
            Some(Provider::OpenRouter)
        );
        assert!(find("fake-fast").is_none());
        assert!(find("gpt-4o").is_none());
    }

    #[test]
    fn kimi_refuses_an_assistant_tool_call_without_reasoning_while_thinking() {
        let k26 = find("kimi-k2.6").unwrap();
        let body = |thinking: Value, reasoning: Option<&str>| {
            let mut assistant = json!({"role": "assistant", "content": "",
                "tool_calls": [{"id": "c", "type": "builtin_function",
                                "function": {"name": "$web_search", "arguments": "{}"}}]});
            if let Some(r) = reasoning {
                assistant["reasoning_content"] = json!(r);
            }
            json!({"model": "kimi-k2.6", "thinking": thinking, "messages": [
                {"role": "user", "content": "q"}, assistant,
                {"role": "tool", "tool_call_id": "c", "name": "$web_search", "content": "{}"}]})
        };
        let refused = |b: &Value| match kimi_refusal(k26, b) {
            Some(Refused::OpenAi(message)) => Some(message),
            _ => None,
        };
        let missing = refused(&body(Value::Null, None)).unwrap();
        assert!(
            missing.ends_with("missing in assistant tool call message at index 1"),
            "{missing}"
        );
        assert!(refused(&body(Value::Null, Some("hm"))).is_none());
        assert!(
            refused(&body(json!({"type": "disabled"}), None)).is_none(),
            "without thinking no reasoning is needed"
        );
    }
}
