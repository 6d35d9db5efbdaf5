//! Every `tests/fixtures/providers/*/request_*.json` against the body exai builds for the same
//! input: the fixture's messages, thinking and web-search switches, and its output limit (given as
//! the tool's limit), through `request_body` (and, for Kimi's second search round, through
//! `search::search_turn`). Each field of the fixture must be sent with the same value; each field
//! exai sends must be in the fixture or listed as added.

use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::*;
use crate::providers::search::search_turn;
use crate::providers::{Catalog, ChatResponse, Effort, FunctionCall, ToolCall};

/// Fixture fields exai never sends for tool round trips: the tools it offers run inside exai (or,
/// for web search, inside the platform), so it declares no function tools of its own.
const NO_FUNCTION_TOOLS: &[(&str, &str)] = &[
    ("tools", "exai declares no function tools"),
    ("tool_choice", "exai declares no function tools"),
];

/// One fixture and the input that should produce it.
struct Case {
    kind: ProviderKind,
    file: &'static str,
    host: &'static str,
    model: ModelInfo,
    thinking: Option<Effort>,
    web_search: bool,
    /// Rebuild the turns after the user's question through Kimi's search round trip.
    search_round_trip: bool,
    /// Fixture fields exai does not send, with why.
    not_sent: &'static [(&'static str, &'static str)],
    /// Fields exai sends beyond the fixture.
    added: &'static [&'static str],
}

impl Case {
    fn new(kind: ProviderKind, file: &'static str, model: &str) -> Self {
        let provider = match kind {
            ProviderKind::Glm => "glm",
            ProviderKind::Kimi => "kimi",
            ProviderKind::OpenAi => "openai",
            ProviderKind::OpenRouter => "openrouter",
            ProviderKind::Custom => "custom",
        };
        let host = match kind {
            ProviderKind::Glm => "api.z.ai",
            ProviderKind::Kimi => "api.moonshot.ai",
            ProviderKind::OpenAi => "api.openai.com",
            ProviderKind::OpenRouter => "openrouter.ai",
            ProviderKind::Custom => "127.0.0.1",
        };
        let model = Catalog::built_in()
            .find(model, Some(provider))
            .cloned()
            .unwrap_or_else(|| panic!("{model} is not in the catalog"));
        Self {
            kind,
            file,
            host,
            model,
            thinking: None,
            web_search: false,
            search_round_trip: false,
            not_sent: &[],
            added: &[],
        }
    }

    fn thinking(self, effort: Effort) -> Self {
        Self {
            thinking: Some(effort),
            ..self
        }
    }

    fn searching(self) -> Self {
        Self {
            web_search: true,
            ..self
        }
    }

    fn at(self, host: &'static str) -> Self {
        Self { host, ..self }
    }

    fn without(self, not_sent: &'static [(&'static str, &'static str)]) -> Self {
        Self { not_sent, ..self }
    }
}

fn fixture(file: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/providers/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A fixture's message as exai holds one.
fn message_of(m: &Value) -> ChatMessage {
    let role = match m["role"].as_str() {
        Some("system") => "system",
        Some("user") => "user",
        Some("assistant") => "assistant",
        Some("tool") => "tool",
        other => panic!("role {other:?}"),
    };
    let (content, images) = match &m["content"] {
        Value::String(text) => (text.clone(), Vec::new()),
        Value::Null => (String::new(), Vec::new()),
        Value::Array(parts) => (
            parts.iter().filter_map(|p| p["text"].as_str()).collect(),
            parts
                .iter()
                .filter_map(|p| p["image_url"]["url"].as_str().map(String::from))
                .collect(),
        ),
        other => panic!("content {other}"),
    };
    let text = |key: &str| m[key].as_str().map(String::from);
    ChatMessage {
        role,
        content: content.into(),
        images,
        reasoning_content: text("reasoning_content"),
        tool_calls: m["tool_calls"]
            .as_array()
            .map(|calls| calls.iter().map(tool_call_of).collect())
            .unwrap_or_default(),
        tool_call_id: text("tool_call_id"),
        name: text("name"),
    }
}

fn tool_call_of(call: &Value) -> ToolCall {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    ToolCall {
        id: text(&call["id"]),
        kind: text(&call["type"]),
        function: FunctionCall {
            name: text(&call["function"]["name"]),
            arguments: text(&call["function"]["arguments"]),
        },
    }
}

/// The fixture's messages; for a search round trip, the turns after the question as
/// `search_turn` makes them from the round that asked to search.
fn messages_for(case: &Case, fixture: &[Value]) -> Vec<ChatMessage> {
    if !case.search_round_trip {
        return fixture.iter().map(message_of).collect();
    }
    let asked = fixture
        .iter()
        .position(|m| m["role"] == "assistant")
        .expect("an assistant turn");
    let turn = message_of(&fixture[asked]);
    let round = ChatResponse {
        text: turn.content.to_string(),
        reasoning: turn.reasoning_content,
        ..ChatResponse::default()
    };
    let mut messages: Vec<ChatMessage> = fixture[..asked].iter().map(message_of).collect();
    messages.extend(search_turn(
        round,
        turn.tool_calls,
        case.model.thinks(case.thinking),
    ));
    messages
}

/// Fixture fields exai does not send (with why), and fields it sends beyond the fixture.
type Exceptions<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);

/// Checks `built` against `want` field by field, naming the field that differs.
fn compare(
    file: &str,
    place: &str,
    want: &Map<String, Value>,
    built: &Map<String, Value>,
    (not_sent, added): Exceptions,
) {
    for (field, value) in want {
        if let Some((_, why)) = not_sent.iter().find(|(f, _)| f == field) {
            assert!(
                !built.contains_key(field),
                "{file}{place}: `{field}` is not sent ({why})"
            );
            continue;
        }
        if place.is_empty() && field == "messages" {
            let (want, got) = (value.as_array().unwrap(), built[field].as_array().unwrap());
            assert_eq!(got.len(), want.len(), "{file}: number of messages");
            for (i, (w, g)) in want.iter().zip(got).enumerate() {
                compare(
                    file,
                    &format!(" message {i}"),
                    w.as_object().unwrap(),
                    g.as_object().unwrap(),
                    (&[], &[]),
                );
            }
            continue;
        }
        assert_eq!(
            built.get(field),
            Some(value),
            "{file}{place}: field `{field}`"
        );
    }
    for (field, value) in built {
        assert!(
            want.contains_key(field) || added.contains(&field.as_str()),
            "{file}{place}: exai sends `{field}` = {value}, which the fixture does not have"
        );
    }
}

/// Builds the body for `case` and compares it with its fixture.
fn check(case: Case) {
    let want = fixture(case.file);
    let limit = want
        .get("max_tokens")
        .or_else(|| want.get("max_completion_tokens"))
        .and_then(Value::as_u64);
    let request = ChatRequest {
        messages: messages_for(&case, want["messages"].as_array().unwrap()),
        temperature: None,
        thinking: case.thinking,
        web_search: case.web_search,
        deadline: Instant::now() + Duration::from_secs(60),
        max_output: limit,
        prompt_tokens: None,
        cache_key: None,
    };
    let built = request_body(case.kind, case.host, &case.model, &request);
    compare(
        case.file,
        "",
        want.as_object().unwrap(),
        built.as_object().unwrap(),
        (case.not_sent, case.added),
    );
}

fn glm(file: &'static str, model: &str) -> Case {
    Case::new(ProviderKind::Glm, file, model)
}
fn kimi(file: &'static str, model: &str) -> Case {
    Case::new(ProviderKind::Kimi, file, model)
}
fn openai(file: &'static str, model: &str) -> Case {
    Case::new(ProviderKind::OpenAi, file, model)
}
fn openrouter(file: &'static str, model: &str) -> Case {
    Case::new(ProviderKind::OpenRouter, file, model)
}

/// Every request fixture and the input that should produce it.
fn cases() -> Vec<Case> {
    let mut glm_vision = glm("glm/request_image.json", "glm-5.2");
    // The GLM vision family is not in the catalog; what matters is that it takes images.
    glm_vision.model = ModelInfo {
        vision: true,
        ..ModelInfo::unlisted("glm", "glm-5.3-flashx")
    };
    vec![
        glm("glm/request_plain.json", "glm-5.2"),
        glm("glm/request_thinking_enabled.json", "glm-4.7").thinking(Effort::High),
        glm("glm/request_thinking_high_glm52.json", "glm-5.2").thinking(Effort::High),
        glm("glm/request_thinking_disabled.json", "glm-5.2").thinking(Effort::Minimal),
        glm("glm/request_thinking_low_glm53.json", "glm-5.3").thinking(Effort::Minimal),
        glm_vision,
        glm("glm/request_tool_round_trip.json", "glm-5.2").without(NO_FUNCTION_TOOLS),
        glm("glm/request_web_search_api_z_ai.json", "glm-5.2").searching(),
        glm("glm/request_web_search_bigmodel.json", "glm-5.2")
            .searching()
            .at("open.bigmodel.cn"),
        kimi("kimi/request_plain_k26.json", "kimi-k2.6"),
        kimi("kimi/request_thinking_disabled_k26.json", "kimi-k2.6").thinking(Effort::Minimal),
        kimi("kimi/request_k3_reasoning_effort_low.json", "kimi-k3").thinking(Effort::Minimal),
        kimi("kimi/request_k3_reasoning_effort_high.json", "kimi-k3").thinking(Effort::High),
        kimi("kimi/request_image_k26.json", "kimi-k2.6"),
        kimi("kimi/request_image_k3.json", "kimi-k3"),
        kimi("kimi/request_tool_round_trip_k26.json", "kimi-k2.6").without(NO_FUNCTION_TOOLS),
        kimi("kimi/request_web_search_k3.json", "kimi-k3").searching(),
        Case {
            search_round_trip: true,
            ..kimi("kimi/request_web_search_round_trip_k26.json", "kimi-k2.6").searching()
        },
        openai("openai/request_plain_gpt41.json", "gpt-4.1"),
        openai("openai/request_image.json", "gpt-4.1"),
        openai("openai/request_reasoning_default_gpt5.json", "gpt-5"),
        openai("openai/request_reasoning_minimal_gpt5.json", "gpt-5").thinking(Effort::Minimal),
        openai("openai/request_reasoning_high_gpt56.json", "gpt-5.6-sol").thinking(Effort::High),
        openai("openai/request_tool_round_trip.json", "gpt-4.1").without(NO_FUNCTION_TOOLS),
        openrouter("openrouter/request_plain.json", "z-ai/glm-4.7"),
        openrouter("openrouter/request_image.json", "openai/gpt-5"),
        openrouter("openrouter/request_reasoning_enabled.json", "z-ai/glm-4.7")
            .thinking(Effort::High),
        openrouter("openrouter/request_reasoning_disabled.json", "z-ai/glm-4.7")
            .thinking(Effort::Minimal),
        openrouter(
            "openrouter/request_reasoning_mandatory_lowest_effort.json",
            "openai/gpt-5",
        )
        .thinking(Effort::Minimal),
        openrouter("openrouter/request_tool_round_trip.json", "z-ai/glm-4.7")
            .without(NO_FUNCTION_TOOLS),
    ]
}

#[test]
fn every_request_fixture_is_what_exai_sends_for_the_same_input() {
    for case in cases() {
        check(case);
    }
}

#[test]
fn every_request_fixture_has_a_case() {
    let covered: Vec<&str> = cases().iter().map(|c| c.file).collect();
    let root = format!("{}/tests/fixtures/providers", env!("CARGO_MANIFEST_DIR"));
    let mut found = 0;
    for provider in ["glm", "kimi", "openai", "openrouter"] {
        for entry in std::fs::read_dir(format!("{root}/{provider}")).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.starts_with("request_") {
                found += 1;
                let file = format!("{provider}/{name}");
                assert!(covered.contains(&file.as_str()), "{file} has no case");
            }
        }
    }
    assert_eq!(found, covered.len(), "every case names a fixture once");
}

fn question(text: &str) -> ChatRequest {
    ChatRequest::question(text)
}

fn catalog_model(provider: &str, id: &str) -> ModelInfo {
    Catalog::built_in()
        .find(id, Some(provider))
        .unwrap()
        .clone()
}

#[test]
fn the_output_limit_is_the_models_lowered_by_the_tool_and_by_kimis_room() {
    let glm = catalog_model("glm", "glm-5.2");
    let mut request = question("hi");
    assert_eq!(output_limit(ProviderKind::Glm, &glm, &request), 131_072);
    request.max_output = Some(2_000);
    assert_eq!(output_limit(ProviderKind::Glm, &glm, &request), 2_000);
    request.max_output = Some(1_000_000);
    assert_eq!(
        output_limit(ProviderKind::Glm, &glm, &request),
        131_072,
        "the model's limit caps the tool's"
    );

    // Unknown models get the catalog's conservative default.
    let unknown = ModelInfo::unlisted("custom", "qwen3");
    let body = request_body(ProviderKind::Custom, "127.0.0.1", &unknown, &question("hi"));
    assert_eq!(body["max_tokens"], 8_192);
    assert!(body.get("max_completion_tokens").is_none());

    // Kimi refuses prompt + limit over the window: the limit leaves room for the prompt.
    let k26 = catalog_model("kimi", "kimi-k2.6");
    let long = question(&"word ".repeat(600_000));
    let estimate = estimated_prompt_tokens(&long);
    assert!(estimate >= 1_000_000, "{estimate}");
    let mut counted = long.clone();
    counted.prompt_tokens = Some(200_000);
    let limit = output_limit(ProviderKind::Kimi, &k26, &counted);
    assert_eq!(limit, 262_144 - estimated_prompt_tokens(&counted));
    assert!(limit + 200_000 < 262_144 && limit > 30_000, "{limit}");
    assert_eq!(
        output_limit(ProviderKind::Kimi, &k26, &long),
        MIN_OUTPUT,
        "a prompt over the window still gets a usable limit; Kimi's error then says why"
    );
    // The same prompt to GLM: its limit does not depend on the prompt.
    assert_eq!(output_limit(ProviderKind::Glm, &glm, &long), 131_072);
}

#[test]
fn each_provider_puts_the_limit_in_its_documented_field() {
    for (kind, provider, id, field) in [
        (ProviderKind::Glm, "glm", "glm-5.2", "max_tokens"),
        (
            ProviderKind::Kimi,
            "kimi",
            "kimi-k2.6",
            "max_completion_tokens",
        ),
        (
            ProviderKind::OpenAi,
            "openai",
            "gpt-4.1",
            "max_completion_tokens",
        ),
        (
            ProviderKind::OpenAi,
            "openai",
            "gpt-5",
            "max_completion_tokens",
        ),
        (
            ProviderKind::OpenRouter,
            "openrouter",
            "z-ai/glm-4.7",
            "max_completion_tokens",
        ),
    ] {
        let model = catalog_model(provider, id);
        let body = request_body(kind, "h", &model, &question("hi"));
        assert_eq!(body[field], model.max_output, "{id}");
        let other = if field == "max_tokens" {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        assert!(body.get(other).is_none(), "{id}: {body}");
    }
}

#[test]
fn a_model_that_always_thinks_is_never_told_to_stop() {
    for (kind, provider, id) in [
        (ProviderKind::Glm, "glm", "glm-5.3"),
        (ProviderKind::Kimi, "kimi", "kimi-k3"),
        (ProviderKind::Kimi, "kimi", "kimi-k2.7-code"),
        (ProviderKind::OpenRouter, "openrouter", "openai/gpt-5"),
        (
            ProviderKind::OpenRouter,
            "openrouter",
            "google/gemini-2.5-pro",
        ),
    ] {
        let model = catalog_model(provider, id);
        let mut request = question("hi");
        request.thinking = Some(Effort::Minimal);
        let body = request_body(kind, "h", &model, &request);
        assert!(body.get("thinking").is_none(), "{id}: {body}");
        assert_ne!(body["reasoning"]["enabled"], false, "{id}: {body}");
        assert_ne!(body["reasoning"]["effort"], "none", "{id}: {body}");
        assert_ne!(body["reasoning_effort"], "none", "{id}: {body}");
    }
    // Without documented efforts nothing is sent at all.
    let gemini = catalog_model("openrouter", "google/gemini-2.5-pro");
    let mut request = question("hi");
    request.thinking = Some(Effort::Minimal);
    let body = request_body(ProviderKind::OpenRouter, "h", &gemini, &request);
    assert!(body.get("reasoning").is_none(), "{body}");
}

#[test]
fn a_temperature_goes_out_as_written() {
    let gpt41 = catalog_model("openai", "gpt-4.1");
    let mut request = question("hi");
    request.temperature = Some(0.3);
    let body = request_body(ProviderKind::OpenAi, "h", &gpt41, &request);
    assert_eq!(body["temperature"].to_string(), "0.3");
    let glm = catalog_model("glm", "glm-5.2");
    request.temperature = Some(1.7);
    let body = request_body(ProviderKind::Glm, "h", &glm, &request);
    assert_eq!(body["temperature"].to_string(), "1.0", "GLM takes 0–1");
}
