//! Every documented provider response (`tests/fixtures/providers/*/stream_*.sse` and
//! `error_*.json`, read at run time) served byte for byte over HTTP to the real client, and what
//! exai made of it: answer, reasoning, tool calls, sources, usage (cached tokens included),
//! finish reason and its note, or the error's kind, retryability, wait and hint.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::openai_compat::OpenAiCompatible;
use super::retry::AttemptError;
use super::{CallObserver, ChatRequest, ChatResponse, ModelInfo, ProviderError};
use crate::config::{Config, EndpointConfig, ProviderKind, ProviderUrl, Secret};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/providers")
}

/// The fixtures each test below replays; `every_response_fixture_has_a_test` keeps it whole.
const COVERED: &[&str] = &[
    "glm/error_400_1210_thinking_always_on.json",
    "glm/error_400_1211.json",
    "glm/error_400_1214.json",
    "glm/error_401_1002.json",
    "glm/error_429_1113.json",
    "glm/error_429_1302.json",
    "glm/error_429_1305.json",
    "glm/error_429_1308.json",
    "glm/error_429_1310.json",
    "glm/error_429_1311.json",
    "glm/error_429_1312.json",
    "glm/stream_error_after_200.sse",
    "glm/stream_finish_length.sse",
    "glm/stream_finish_model_context_window_exceeded.sse",
    "glm/stream_finish_network_error.sse",
    "glm/stream_finish_sensitive.sse",
    "glm/stream_reasoning.sse",
    "glm/stream_tool_calls_cached_usage.sse",
    "glm/stream_web_search.sse",
    "kimi/error_400_content_filter.json",
    "kimi/error_400_invalid_request_error_token_limit.json",
    "kimi/error_401_incorrect_api_key_error.json",
    "kimi/error_401_invalid_authentication_error.json",
    "kimi/error_403_access_terminated_error.json",
    "kimi/error_403_insufficient_balance.json",
    "kimi/error_404_resource_not_found_error.json",
    "kimi/error_429_engine_overloaded_error.json",
    "kimi/error_429_exceeded_current_quota_error_suspended.json",
    "kimi/error_429_exceeded_current_quota_error_token_quota.json",
    "kimi/error_429_rate_limit_reached_error.json",
    "kimi/stream_finish_length.sse",
    "kimi/stream_reasoning_cached_usage.sse",
    "kimi/stream_usage_in_choice.sse",
    "kimi/stream_web_search_call.sse",
    "openai/error_400_unsupported_parameter_max_tokens.json",
    "openai/error_400_unsupported_value_temperature.json",
    "openai/error_401_invalid_api_key.json",
    "openai/error_429_credit_balance_exhausted.json",
    "openai/error_429_insufficient_quota.json",
    "openai/error_429_project_spend_limit_exceeded.json",
    "openai/error_429_rate_limit_exceeded.json",
    "openai/stream_error_after_200.sse",
    "openai/stream_finish_content_filter.sse",
    "openai/stream_finish_length.sse",
    "openai/stream_tool_calls.sse",
    "openai/stream_usage_cached_reasoning.sse",
    "openrouter/error_400_reasoning_mandatory.json",
    "openrouter/error_401_invalid_credentials.json",
    "openrouter/error_402_insufficient_credits.json",
    "openrouter/error_402_max_tokens_unaffordable.json",
    "openrouter/error_403_moderation_flagged.json",
    "openrouter/error_408_timeout.json",
    "openrouter/error_429_rate_limited.json",
    "openrouter/stream_error_after_200.sse",
    "openrouter/stream_finish_length.sse",
    "openrouter/stream_keepalive_before_first_token.sse",
    "openrouter/stream_reasoning_summary.sse",
    "openrouter/stream_reasoning_text.sse",
];

/// What the client told its observer: stages, output stages, token counts.
#[derive(Default)]
pub(super) struct Seen {
    outputs: Mutex<Vec<String>>,
    reasoning_tokens: Mutex<u64>,
}

impl CallObserver for Seen {
    fn stage(&self, _stage: String) {}
    fn model(&self, _provider: &str, _model: &str) {}
    fn output(&self, stage: String) {
        self.outputs.lock().unwrap().push(stage);
    }
    fn tokens(&self, count: u64, reasoning: bool) {
        if reasoning {
            *self.reasoning_tokens.lock().unwrap() += count;
        }
    }
}

/// One HTTP answer on 127.0.0.1: `status`, `content_type`, `body`, to the first request.
pub(super) async fn serve_once(status: u16, content_type: &'static str, body: Vec<u8>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    crate::spawn::in_current_span(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        // Read the whole request (headers, then Content-Length bytes) before answering.
        let mut request = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            let n = socket.read(&mut buffer).await.unwrap();
            request.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if request.len() >= end + 4 + length {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        socket.write_all(&body).await.unwrap();
        socket.shutdown().await.unwrap();
    });
    url
}

fn kind_of(provider: &str) -> (ProviderKind, &'static str) {
    match provider {
        "glm" => (ProviderKind::Glm, "GLM_API_KEY"),
        "kimi" => (ProviderKind::Kimi, "KIMI_API_KEY"),
        "openai" => (ProviderKind::OpenAi, "OPENAI_API_KEY"),
        "openrouter" => (ProviderKind::OpenRouter, "OPENROUTER_API_KEY"),
        other => panic!("no provider {other}"),
    }
}

fn request() -> ChatRequest {
    ChatRequest::question("Say hello in Portuguese")
}

/// Serves `provider/file` (status from its name) and runs one attempt of the real client.
async fn replay(fixture: &str) -> (Result<ChatResponse, AttemptError>, Seen) {
    let (provider, file) = fixture.split_once('/').unwrap();
    let body = std::fs::read(fixtures().join(fixture)).unwrap();
    let (status, content_type) = match file.strip_prefix("error_") {
        Some(rest) => (rest[..3].parse().unwrap(), "application/json"),
        None => (200, "text/event-stream"),
    };
    replay_body(provider, status, content_type, body).await
}

/// Serves `body` as `provider` would (`status`, `content_type`) and runs one attempt of the
/// real client.
pub(super) async fn replay_body(
    provider: &str,
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
) -> (Result<ChatResponse, AttemptError>, Seen) {
    let client = client_of(provider, serve_once(status, content_type, body).await);
    let model = ModelInfo::unlisted(provider, "fixture-model");
    let seen = Seen::default();
    let outcome = client.attempt(&model, &request(), &seen, 1, false).await;
    (outcome, seen)
}

/// The real client of `provider` at `url`, with a key.
pub(super) fn client_of(provider: &str, url: String) -> OpenAiCompatible {
    client_with(provider, url, &[])
}

/// The real client of `provider` at `url`, with a key and the settings `env`.
pub(super) fn client_with(provider: &str, url: String, env: &[(&str, &str)]) -> OpenAiCompatible {
    let (kind, key_var) = kind_of(provider);
    let config = Config::from_lookup(|k| match k {
        "HOME" => Some("/nonexistent".to_string()),
        _ => env
            .iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.to_string()),
    })
    .expect("a config");
    let endpoint = EndpointConfig {
        name: provider.to_string(),
        kind,
        base_url: ProviderUrl::new(url),
        api_key: Some(Secret::new("fixture-test-key".into())),
        key_source: Some(key_var.to_string()),
        models: Vec::new(),
        default_model: None,
        allowed_models: None,
        max_concurrency: 1,
        unavailable: None,
    };
    OpenAiCompatible::new(&endpoint, &config).unwrap()
}

async fn answer_of(fixture: &str) -> (ChatResponse, Seen) {
    match replay(fixture).await {
        (Ok(answer), seen) => (answer, seen),
        (Err(e), _) => panic!("{fixture}: {}", e.error),
    }
}

fn usage(answer: &ChatResponse) -> (Option<u64>, Option<u64>, Option<u64>, Option<u64>) {
    (
        answer.tokens_in,
        answer.tokens_out,
        answer.cached_tokens,
        answer.reasoning_tokens,
    )
}

/// The error of a fixture that must fail, and whether content had streamed before it.
async fn error_of(fixture: &str) -> (ProviderError, bool) {
    match replay(fixture).await {
        (Err(e), _) => (e.error, e.content_started),
        (Ok(answer), _) => panic!("{fixture} answered {:?}", answer.text),
    }
}

/// What an error answer must be read as.
struct Expected {
    kind: &'static str,
    retryable: bool,
    /// Words the message (with its hint) must contain.
    says: &'static [&'static str],
}

async fn check_error(fixture: &str, expected: Expected) -> ProviderError {
    let (error, _) = error_of(fixture).await;
    let text = error.to_string();
    assert_eq!(error.kind(), expected.kind, "{fixture}: {text}");
    assert_eq!(
        error.is_retryable(),
        expected.retryable,
        "{fixture}: {text}"
    );
    for words in expected.says {
        assert!(text.contains(words), "{fixture}: {words:?} not in {text}");
    }
    assert!(!text.contains("fixture-test-key"), "{text}");
    error
}

fn retry_after(error: &ProviderError) -> Option<Duration> {
    match error {
        ProviderError::Status { retry_after, .. } => *retry_after,
        _ => None,
    }
}

const QUOTA: &str = "provider_quota_exhausted";
const BALANCE: &str = "the account's balance or plan is exhausted";
const NOT_RETRIED: &str = "exai did not retry";

#[test]
fn every_response_fixture_has_a_test() {
    let mut found = Vec::new();
    for provider in ["glm", "kimi", "openai", "openrouter"] {
        for entry in std::fs::read_dir(fixtures().join(provider)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let response = (name.starts_with("stream_") && name.ends_with(".sse"))
                || (name.starts_with("error_") && name.ends_with(".json"));
            if response {
                found.push(format!("{provider}/{name}"));
            }
        }
    }
    found.sort();
    assert_eq!(
        found, COVERED,
        "a response fixture without a test, or the reverse"
    );
}

// --- GLM -----------------------------------------------------------------------------------

#[tokio::test]
async fn glm_error_400_1210_thinking_always_on() {
    let expected = Expected {
        kind: "provider_http_error",
        retryable: false,
        says: &["HTTP 400", "always engages in thinking"],
    };
    check_error("glm/error_400_1210_thinking_always_on.json", expected).await;
}

#[tokio::test]
async fn glm_error_400_1211_unknown_model() {
    let expected = Expected {
        kind: "provider_http_error",
        retryable: false,
        says: &["Unknown Model"],
    };
    check_error("glm/error_400_1211.json", expected).await;
}

#[tokio::test]
async fn glm_error_400_1214_empty_input() {
    let expected = Expected {
        kind: "provider_http_error",
        retryable: false,
        says: &["Input cannot be empty"],
    };
    check_error("glm/error_400_1214.json", expected).await;
}

#[tokio::test]
async fn glm_error_401_1002_names_the_key() {
    let expected = Expected {
        kind: "provider_auth",
        retryable: false,
        says: &["HTTP 401", "the key was rejected; check GLM_API_KEY"],
    };
    check_error("glm/error_401_1002.json", expected).await;
}

#[tokio::test]
async fn glm_error_429_1113_is_an_empty_balance_with_the_billing_page() {
    let expected = Expected {
        kind: QUOTA,
        retryable: false,
        says: &[
            "HTTP 429",
            "Insufficient balance",
            BALANCE,
            "https://z.ai/manage-apikey/billing",
            NOT_RETRIED,
        ],
    };
    let error = check_error("glm/error_429_1113.json", expected).await;
    assert!(error.wants_fallback() && error.account_problem());
}

#[tokio::test]
async fn glm_error_429_1302_is_a_rate_limit() {
    let expected = Expected {
        kind: "provider_rate_limited",
        retryable: true,
        says: &["Rate limit reached", "rate limited; exai retried"],
    };
    check_error("glm/error_429_1302.json", expected).await;
}

#[tokio::test]
async fn glm_error_429_1305_is_an_overload() {
    let expected = Expected {
        kind: "provider_overloaded",
        retryable: true,
        says: &["temporarily overloaded", "the provider is overloaded"],
    };
    check_error("glm/error_429_1305.json", expected).await;
}

#[tokio::test]
async fn glm_error_429_1308_is_a_used_up_plan_window() {
    let expected = Expected {
        kind: QUOTA,
        retryable: false,
        says: &["will reset at", "https://z.ai/subscribe", NOT_RETRIED],
    };
    check_error("glm/error_429_1308.json", expected).await;
}

#[tokio::test]
async fn glm_error_429_1310_is_a_used_up_plan_window() {
    let expected = Expected {
        kind: QUOTA,
        retryable: false,
        says: &["Weekly/Monthly Limit Exhausted", "https://z.ai/subscribe"],
    };
    check_error("glm/error_429_1310.json", expected).await;
}

#[tokio::test]
async fn glm_error_429_1311_is_a_model_the_plan_lacks_not_an_empty_account() {
    let expected = Expected {
        kind: "provider_refused",
        retryable: false,
        says: &["GLM-5.3", "the GLM plan does not include this model"],
    };
    let error = check_error("glm/error_429_1311.json", expected).await;
    // The plan's other models still answer: the endpoint is not given up.
    assert!(error.wants_fallback() && !error.account_problem());
}

#[tokio::test]
async fn glm_error_429_1312_is_a_busy_model() {
    let expected = Expected {
        kind: "provider_overloaded",
        retryable: true,
        says: &["the provider is overloaded"],
    };
    let error = check_error("glm/error_429_1312.json", expected).await;
    assert!(error.wants_fallback() && !error.account_problem());
}

#[tokio::test]
async fn glm_stream_error_after_200() {
    let (error, content_started) = error_of("glm/stream_error_after_200.sse").await;
    assert_eq!(error.kind(), "provider_stream_error");
    assert!(
        error
            .to_string()
            .contains("in the middle of its answer: Network error")
    );
    assert!(content_started, "Partial answer came first: no retry");
}

#[tokio::test]
async fn glm_stream_finish_length_keeps_the_answer_with_a_note() {
    let (answer, _) = answer_of("glm/stream_finish_length.sse").await;
    assert_eq!(answer.text, "Partial answer");
    assert_eq!(answer.finish_reason.as_deref(), Some("length"));
    assert!(
        answer.notes[0].contains("cut at the output limit"),
        "{:?}",
        answer.notes
    );
    assert_eq!(usage(&answer), (Some(18), Some(4), Some(0), None));
}

#[tokio::test]
async fn glm_stream_finish_model_context_window_exceeded() {
    let (answer, _) = answer_of("glm/stream_finish_model_context_window_exceeded.sse").await;
    assert_eq!(answer.text, "Partial answer");
    assert_eq!(
        answer.finish_reason.as_deref(),
        Some("model_context_window_exceeded")
    );
    assert!(
        answer.notes[0].contains("context window was full"),
        "{:?}",
        answer.notes
    );
}

#[tokio::test]
async fn glm_stream_finish_network_error_is_an_error() {
    let (error, content_started) = error_of("glm/stream_finish_network_error.sse").await;
    assert_eq!(error.kind(), "provider_stream_error");
    let text = error.to_string();
    assert!(text.contains("finish_reason \"network_error\""), "{text}");
    assert!(text.contains("lost its connection to the model"), "{text}");
    assert!(content_started);
}

#[tokio::test]
async fn glm_stream_finish_sensitive_is_noted_as_filtered() {
    let (answer, _) = answer_of("glm/stream_finish_sensitive.sse").await;
    assert_eq!(answer.finish_reason.as_deref(), Some("sensitive"));
    assert!(
        answer.notes[0].contains("content filter"),
        "{:?}",
        answer.notes
    );
}

#[tokio::test]
async fn glm_stream_reasoning() {
    let (answer, seen) = answer_of("glm/stream_reasoning.sse").await;
    assert_eq!(answer.reasoning.as_deref(), Some("The person is asking"));
    assert_eq!(answer.text, "Oi!");
    assert_eq!(answer.finish_reason.as_deref(), Some("stop"));
    assert!(answer.notes.is_empty());
    assert_eq!(usage(&answer), (Some(18), Some(202), Some(0), None));
    assert_eq!(*seen.outputs.lock().unwrap(), ["thinking", "streaming"]);
}

#[tokio::test]
async fn glm_stream_tool_calls_cached_usage() {
    let (answer, _) = answer_of("glm/stream_tool_calls_cached_usage.sse").await;
    assert_eq!(answer.tool_calls.len(), 1);
    assert_eq!(answer.tool_calls[0].function.name, "weather");
    assert_eq!(
        answer.tool_calls[0].function.arguments,
        "{\"location\": \"Florence,Italy\"}"
    );
    assert_eq!(answer.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(answer.reasoning.as_deref(), Some("The user is asking"));
    assert_eq!(usage(&answer), (Some(179), Some(70), Some(43), None));
}

#[tokio::test]
async fn glm_stream_web_search_lists_the_linked_sources() {
    let (answer, _) = answer_of("glm/stream_web_search.sse").await;
    assert_eq!(answer.text, "According to [ref_1] ...");
    let urls: Vec<&str> = answer.sources.iter().map(|s| s.url.as_str()).collect();
    assert_eq!(
        urls,
        ["https://example.com/one"],
        "the empty link is dropped"
    );
}

// --- Kimi ----------------------------------------------------------------------------------

#[tokio::test]
async fn kimi_error_400_content_filter() {
    let expected = Expected {
        kind: "provider_http_error",
        retryable: false,
        says: &["HTTP 400", "considered high risk"],
    };
    check_error("kimi/error_400_content_filter.json", expected).await;
}

#[tokio::test]
async fn kimi_error_400_token_limit() {
    let expected = Expected {
        kind: "provider_http_error",
        retryable: false,
        says: &["exceeded model token limit"],
    };
    check_error(
        "kimi/error_400_invalid_request_error_token_limit.json",
        expected,
    )
    .await;
}

#[tokio::test]
async fn kimi_error_403_is_an_empty_balance_not_a_bad_key() {
    let expected = Expected {
        kind: QUOTA,
        retryable: false,
        says: &["HTTP 403", BALANCE, "https://platform.kimi.ai/console"],
    };
    let error = check_error("kimi/error_403_insufficient_balance.json", expected).await;
    assert!(error.wants_fallback() && !error.to_string().contains("key was rejected"));
}

#[tokio::test]
async fn kimi_error_403_access_terminated_is_a_blocked_account() {
    let expected = Expected {
        kind: "provider_account_blocked",
        retryable: false,
        says: &["Access terminated", "the account cannot be used"],
    };
    let error = check_error("kimi/error_403_access_terminated_error.json", expected).await;
    assert!(error.wants_fallback() && error.account_problem());
}

#[tokio::test]
async fn kimi_error_401_incorrect_api_key() {
    let expected = Expected {
        kind: "provider_auth",
        retryable: false,
        says: &["check KIMI_API_KEY"],
    };
    check_error("kimi/error_401_incorrect_api_key_error.json", expected).await;
}

#[tokio::test]
async fn kimi_error_401_invalid_authentication() {
    let expected = Expected {
        kind: "provider_auth",
        retryable: false,
        says: &["Invalid Authentication", "check KIMI_API_KEY"],
    };
    check_error("kimi/error_401_invalid_authentication_error.json", expected).await;
}

#[tokio::test]
async fn kimi_error_404_retired_model_wants_a_fallback() {
    let expected = Expected {
        kind: "provider_http_error",
        retryable: false,
        says: &["Not found the model kimi-k2.5", "see listmodels"],
    };
    let error = check_error("kimi/error_404_resource_not_found_error.json", expected).await;
    assert!(error.wants_fallback());
}

#[tokio::test]
async fn kimi_error_429_engine_overloaded() {
    let expected = Expected {
        kind: "provider_overloaded",
        retryable: true,
        says: &["currently overloaded"],
    };
    check_error("kimi/error_429_engine_overloaded_error.json", expected).await;
}

#[tokio::test]
async fn kimi_error_429_quota_suspended() {
    let expected = Expected {
        kind: QUOTA,
        retryable: false,
        says: &["is suspended", BALANCE, "https://platform.kimi.ai/console"],
    };
    check_error(
        "kimi/error_429_exceeded_current_quota_error_suspended.json",
        expected,
    )
    .await;
}

#[tokio::test]
async fn kimi_error_429_token_quota() {
    let expected = Expected {
        kind: QUOTA,
        retryable: false,
        says: &["current token quota", "https://platform.kimi.ai/console"],
    };
    check_error(
        "kimi/error_429_exceeded_current_quota_error_token_quota.json",
        expected,
    )
    .await;
}

#[tokio::test]
async fn kimi_error_429_rate_limit_waits_as_its_message_says() {
    let expected = Expected {
        kind: "provider_rate_limited",
        retryable: true,
        says: &["max concurrency"],
    };
    let error = check_error("kimi/error_429_rate_limit_reached_error.json", expected).await;
    assert_eq!(retry_after(&error), Some(Duration::from_secs(1)));
}

#[tokio::test]
async fn kimi_stream_finish_length() {
    let (answer, _) = answer_of("kimi/stream_finish_length.sse").await;
    assert_eq!(answer.text, "Partial answer");
    assert_eq!(answer.finish_reason.as_deref(), Some("length"));
    assert!(answer.notes[0].contains("cut at the output limit"));
    assert_eq!(usage(&answer), (Some(19), Some(16), Some(0), None));
}

#[tokio::test]
async fn kimi_stream_reasoning_cached_usage() {
    let (answer, _) = answer_of("kimi/stream_reasoning_cached_usage.sse").await;
    assert_eq!(
        answer.reasoning.as_deref(),
        Some("The user greets me; answer in Portuguese.")
    );
    assert_eq!(answer.text, "Olá!");
    assert_eq!(usage(&answer), (Some(19), Some(13), Some(12), None));
}

#[tokio::test]
async fn kimi_stream_usage_in_choice() {
    let (answer, _) = answer_of("kimi/stream_usage_in_choice.sse").await;
    assert_eq!(answer.text, "Hello.");
    assert_eq!(answer.finish_reason.as_deref(), Some("stop"));
    assert_eq!(usage(&answer), (Some(19), Some(13), None, None));
}

#[tokio::test]
async fn kimi_stream_web_search_call() {
    let (answer, seen) = answer_of("kimi/stream_web_search_call.sse").await;
    let call = &answer.tool_calls[0];
    assert_eq!(
        (
            call.id.as_str(),
            call.kind.as_str(),
            call.function.name.as_str()
        ),
        ("call_web_search_0", "builtin_function", "$web_search")
    );
    assert_eq!(
        call.function.arguments,
        "{\"usage\":{\"total_tokens\":13046}}"
    );
    assert_eq!(answer.finish_reason.as_deref(), Some("tool_calls"));
    assert!(answer.notes.is_empty());
    assert!(answer.reasoning.is_some());
    assert_eq!(
        *seen.outputs.lock().unwrap(),
        ["thinking", "preparing a web search"]
    );
}

// --- OpenAI --------------------------------------------------------------------------------

#[tokio::test]
async fn openai_error_400_unsupported_max_tokens() {
    let expected = Expected {
        kind: "provider_http_error",
        retryable: false,
        says: &["Use 'max_completion_tokens' instead"],
    };
    check_error(
        "openai/error_400_unsupported_parameter_max_tokens.json",
        expected,
    )
    .await;
}

#[tokio::test]
async fn openai_error_400_unsupported_temperature() {
    let expected = Expected {
        kind: "provider_http_error",
        retryable: false,
        says: &["'temperature' does not support 0.3"],
    };
    check_error(
        "openai/error_400_unsupported_value_temperature.json",
        expected,
    )
    .await;
}

#[tokio::test]
async fn openai_error_401_invalid_api_key() {
    let expected = Expected {
        kind: "provider_auth",
        retryable: false,
        says: &["Incorrect API key provided", "check OPENAI_API_KEY"],
    };
    check_error("openai/error_401_invalid_api_key.json", expected).await;
}

#[tokio::test]
async fn openai_error_429_credit_balance_exhausted() {
    let expected = Expected {
        kind: QUOTA,
        retryable: false,
        says: &[BALANCE, "https://platform.openai.com/account/billing"],
    };
    check_error("openai/error_429_credit_balance_exhausted.json", expected).await;
}

#[tokio::test]
async fn openai_error_429_insufficient_quota() {
    let expected = Expected {
        kind: QUOTA,
        retryable: false,
        says: &[
            "exceeded your current quota",
            "https://platform.openai.com/account/billing",
            NOT_RETRIED,
        ],
    };
    check_error("openai/error_429_insufficient_quota.json", expected).await;
}

#[tokio::test]
async fn openai_error_429_project_spend_limit_exceeded() {
    let expected = Expected {
        kind: QUOTA,
        retryable: false,
        says: &["https://platform.openai.com/account/billing"],
    };
    check_error(
        "openai/error_429_project_spend_limit_exceeded.json",
        expected,
    )
    .await;
}

#[tokio::test]
async fn openai_error_429_rate_limit_waits_as_its_message_says() {
    let expected = Expected {
        kind: "provider_rate_limited",
        retryable: true,
        says: &["Rate limit reached", "rate limited; exai retried"],
    };
    let error = check_error("openai/error_429_rate_limit_exceeded.json", expected).await;
    assert_eq!(retry_after(&error), Some(Duration::from_secs(20)));
}

#[tokio::test]
async fn openai_stream_error_after_200() {
    let (error, content_started) = error_of("openai/stream_error_after_200.sse").await;
    assert_eq!(error.kind(), "provider_stream_error");
    assert!(error.is_retryable(), "a server error, had nothing streamed");
    assert!(error.to_string().contains("The server had an error"));
    assert!(content_started);
}

#[tokio::test]
async fn openai_stream_finish_content_filter() {
    let (answer, _) = answer_of("openai/stream_finish_content_filter.sse").await;
    assert_eq!(answer.text, "Partial answer");
    assert_eq!(answer.finish_reason.as_deref(), Some("content_filter"));
    assert!(answer.notes[0].contains("content filter"));
}

#[tokio::test]
async fn openai_stream_finish_length() {
    let (answer, _) = answer_of("openai/stream_finish_length.sse").await;
    assert_eq!(answer.finish_reason.as_deref(), Some("length"));
    assert!(answer.notes[0].contains("cut at the output limit"));
    assert_eq!(usage(&answer), (Some(19), Some(16), Some(0), Some(0)));
}

#[tokio::test]
async fn openai_stream_tool_calls() {
    let (answer, _) = answer_of("openai/stream_tool_calls.sse").await;
    let call = &answer.tool_calls[0];
    assert_eq!(
        (call.id.as_str(), call.function.name.as_str()),
        ("call_abc123", "get_weather")
    );
    assert_eq!(call.function.arguments, "{\"city\":\"Beijing\"}");
    assert_eq!(usage(&answer), (Some(60), Some(15), Some(0), Some(0)));
}

#[tokio::test]
async fn openai_stream_usage_cached_reasoning() {
    let (answer, _) = answer_of("openai/stream_usage_cached_reasoning.sse").await;
    assert_eq!(answer.text, "Olá!");
    assert_eq!(answer.reasoning, None, "OpenAI streams no reasoning text");
    assert_eq!(usage(&answer), (Some(1200), Some(83), Some(1024), Some(64)));
}

// --- OpenRouter ----------------------------------------------------------------------------

#[tokio::test]
async fn openrouter_error_400_reasoning_mandatory() {
    let expected = Expected {
        kind: "provider_http_error",
        retryable: false,
        says: &["Reasoning is mandatory"],
    };
    check_error("openrouter/error_400_reasoning_mandatory.json", expected).await;
}

#[tokio::test]
async fn openrouter_error_401_invalid_credentials() {
    let expected = Expected {
        kind: "provider_auth",
        retryable: false,
        says: &["No auth credentials found", "check OPENROUTER_API_KEY"],
    };
    check_error("openrouter/error_401_invalid_credentials.json", expected).await;
}

#[tokio::test]
async fn openrouter_error_403_is_a_flagged_input_not_a_bad_key() {
    let expected = Expected {
        kind: "provider_refused",
        retryable: false,
        says: &["HTTP 403", "flagged", "choose another model"],
    };
    let error = check_error("openrouter/error_403_moderation_flagged.json", expected).await;
    assert!(!error.to_string().contains("key was rejected"));
    assert!(error.wants_fallback() && !error.account_problem());
}

#[tokio::test]
async fn openrouter_error_408_is_retried() {
    let expected = Expected {
        kind: "provider_http_error",
        retryable: true,
        says: &["HTTP 408", "timed out"],
    };
    check_error("openrouter/error_408_timeout.json", expected).await;
}

#[tokio::test]
async fn openrouter_error_402_insufficient_credits() {
    let expected = Expected {
        kind: QUOTA,
        retryable: false,
        says: &[
            "HTTP 402",
            BALANCE,
            "https://openrouter.ai/settings/credits",
            NOT_RETRIED,
        ],
    };
    check_error("openrouter/error_402_insufficient_credits.json", expected).await;
}

#[tokio::test]
async fn openrouter_error_402_affordable_with_a_shorter_answer() {
    let expected = Expected {
        kind: QUOTA,
        retryable: false,
        says: &["can only afford 1056", "ask for a shorter answer"],
    };
    check_error(
        "openrouter/error_402_max_tokens_unaffordable.json",
        expected,
    )
    .await;
}

#[tokio::test]
async fn openrouter_error_429_rate_limited() {
    let expected = Expected {
        kind: "provider_rate_limited",
        retryable: true,
        says: &["Rate limit exceeded"],
    };
    check_error("openrouter/error_429_rate_limited.json", expected).await;
}

#[tokio::test]
async fn openrouter_stream_error_after_200() {
    let (error, content_started) = error_of("openrouter/stream_error_after_200.sse").await;
    assert_eq!(error.kind(), "provider_stream_error");
    let text = error.to_string();
    assert!(
        text.contains("Provider disconnected unexpectedly"),
        "{text}"
    );
    assert!(content_started);
}

#[tokio::test]
async fn openrouter_stream_finish_length() {
    let (answer, _) = answer_of("openrouter/stream_finish_length.sse").await;
    assert_eq!(answer.text, "Partial answer");
    assert_eq!(answer.finish_reason.as_deref(), Some("length"));
    assert!(answer.notes[0].contains("cut at the output limit"));
}

#[tokio::test]
async fn openrouter_stream_keepalive_before_first_token() {
    let (answer, _) = answer_of("openrouter/stream_keepalive_before_first_token.sse").await;
    assert_eq!(answer.text, "Olá!");
    assert_eq!(answer.finish_reason.as_deref(), Some("stop"));
}

#[tokio::test]
async fn openrouter_stream_reasoning_summary_is_read_once() {
    let (answer, seen) = answer_of("openrouter/stream_reasoning_summary.sse").await;
    assert_eq!(
        answer.reasoning.as_deref(),
        Some("**Responding in Portuguese"),
        "from `reasoning`, not doubled by `reasoning_details`"
    );
    assert_eq!(answer.text, "Olá!");
    assert_eq!(usage(&answer), (Some(19), Some(83), Some(0), Some(64)));
    assert_eq!(*seen.outputs.lock().unwrap(), ["thinking", "streaming"]);
    assert_eq!(*seen.reasoning_tokens.lock().unwrap(), 4);
}

#[tokio::test]
async fn openrouter_stream_reasoning_text() {
    let (answer, _) = answer_of("openrouter/stream_reasoning_text.sse").await;
    assert_eq!(answer.reasoning.as_deref(), Some("\nThe"));
    assert_eq!(answer.text, "Olá!");
    assert_eq!(usage(&answer), (Some(18), Some(40), Some(0), Some(30)));
}
