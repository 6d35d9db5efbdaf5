//! What providers answer, as their documentation says they answer it, through the real binary:
//! the fake provider replays the documented fixtures (`fake-fixture-<provider>-<stem>`), and
//! each test asserts what a user of exai gets — quota errors that are not retried and name the
//! billing page, OpenRouter's reasoning kept, cut answers noted, silent thinkers kept alive.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// The fake model that replays `provider/stem`, on that provider's endpoint.
fn fixture(provider: &str, stem: &str) -> String {
    format!("{provider}:fake-fixture-{provider}-{stem}")
}

/// The call's record as `exai calls show ID --json` prints it.
fn shown_record(daemon: &Daemon, id: &str) -> Value {
    daemon.final_record(id);
    let (ok, text) = daemon.cli(&["calls", "show", id, "--json"]);
    assert!(ok, "{text}");
    serde_json::from_str::<Value>(&text).expect("JSON record")["call"].clone()
}

/// How many requests the fake received for the model `provider:fake-fixture-…` names.
fn requests_for(fake: &Fake, model: &str) -> u64 {
    let name = model.split_once(':').map_or(model, |(_, m)| m);
    fake.stats()["by_model"][name].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn an_exhausted_balance_is_not_retried_and_names_the_billing_page() {
    let fake = Fake::start();
    let daemon = every_provider(&fake, &[("EXAI_RETRY_BASE_S", "0.05")]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    for (model, page) in [
        (
            fixture("glm", "error_429_1113"),
            "https://z.ai/manage-apikey/billing",
        ),
        (
            fixture("kimi", "error_429_exceeded_current_quota_error_token_quota"),
            "https://platform.kimi.ai/console",
        ),
        (
            fixture("openai", "error_429_insufficient_quota"),
            "https://platform.openai.com/account/billing",
        ),
        (
            fixture("openrouter", "error_402_insufficient_credits"),
            "https://openrouter.ai/settings/credits",
        ),
    ] {
        let result = client.call_tool(chat("hello", &model)).await.unwrap();
        let text = error_of(&result);
        assert!(
            text.contains("the account's balance or plan is exhausted") && text.contains(page),
            "{model}: {text}"
        );
        assert!(!text.contains("rate limited"), "{model}: {text}");
        assert_eq!(requests_for(&fake, &model), 1, "{model}: not retried");
        let record = daemon.final_record(&call_id_of(&result));
        assert_eq!(
            record.error_kind.as_deref(),
            Some("provider_quota_exhausted"),
            "{model}"
        );
        assert_eq!(record.attempts, Some(1), "{model}");
    }
    // A real rate limit is still retried (and then reported as one).
    let limited = fixture("glm", "error_429_1302");
    let result = client.call_tool(chat("hello", &limited)).await.unwrap();
    assert!(error_of(&result).contains("rate limited; exai retried"));
    assert!(requests_for(&fake, &limited) > 1, "a rate limit is retried");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn an_exhausted_account_falls_back_to_another_provider_not_to_its_own_models() {
    let fake = Fake::start();
    let quota = fixture("glm", "error_429_1113");
    let daemon = every_provider(
        &fake,
        &[("EXAI_FALLBACK_MODELS", "glm:fake-delay-1,kimi:fake-fast")],
    );
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let result = client.call_tool(chat("plan b", &quota)).await.unwrap();
    assert_eq!(text_of(&result), "echo: plan b");
    let record = daemon.final_record(&call_id_of(&result));
    assert_eq!(
        (record.provider.as_deref(), record.model.as_deref()),
        (Some("kimi"), Some("fake-fast"))
    );
    let stats = fake.stats();
    assert_eq!(requests_for(&fake, &quota), 1);
    assert!(
        stats["by_model"]["fake-delay-1"].is_null(),
        "the same out-of-balance account is not asked again: {stats}"
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn openrouter_reasoning_is_shown_and_kept_in_the_record() {
    let fake = Fake::start();
    let daemon = every_provider(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let model = fixture("openrouter", "stream_reasoning_summary");
    let result = client
        .call_tool(call(
            "chat",
            json!({"prompt": "Say hello in Portuguese", "model": model, "show_reasoning": true}),
        ))
        .await
        .unwrap();
    let text = all_text_of(&result);
    assert!(
        text.contains("=== Model reasoning") && text.contains("**Responding in Portuguese"),
        "{text}"
    );
    assert!(
        !text.contains("**Responding**Responding"),
        "reasoning and reasoning_details are one text, not two: {text}"
    );
    let record = shown_record(&daemon, &call_id_of(&result));
    assert_eq!(
        record["reasoning"], "**Responding in Portuguese",
        "{record}"
    );
    assert_eq!(record["reasoning_tokens"], 64);
    assert_eq!(record["cached_tokens"], 0);
    assert_eq!(record["finish_reason"], "stop");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn cached_input_tokens_reach_the_record_and_calls_show() {
    let fake = Fake::start();
    let daemon = every_provider(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    for (model, tokens_in, cached) in [
        (
            fixture("openai", "stream_usage_cached_reasoning"),
            1200,
            1024,
        ),
        (fixture("kimi", "stream_reasoning_cached_usage"), 19, 12),
        (fixture("glm", "stream_tool_calls_cached_usage"), 179, 43),
    ] {
        let result = client.call_tool(chat("hello", &model)).await.unwrap();
        let id = call_id_of(&result);
        let record = shown_record(&daemon, &id);
        assert_eq!(record["tokens_in"], tokens_in, "{model}: {record}");
        assert_eq!(record["cached_tokens"], cached, "{model}: {record}");
        let (_, shown) = daemon.cli(&["calls", "show", &id]);
        assert!(
            shown.contains(&format!("({cached} of the input cached)")),
            "{model}: {shown}"
        );
    }
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn an_answer_cut_at_the_output_limit_says_so_and_the_record_keeps_why() {
    let fake = Fake::start();
    let daemon = every_provider(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    for provider in ["glm", "kimi", "openai", "openrouter"] {
        let model = fixture(provider, "stream_finish_length");
        let result = client.call_tool(chat("hello", &model)).await.unwrap();
        assert_eq!(text_of(&result), "Partial answer", "{model}");
        let text = all_text_of(&result);
        assert!(
            text.contains("The answer was cut at the output limit (finish_reason: length)"),
            "{model}: {text}"
        );
        let id = call_id_of(&result);
        assert_eq!(shown_record(&daemon, &id)["finish_reason"], "length");
        let (_, shown) = daemon.cli(&["calls", "show", &id]);
        assert!(shown.contains("finish         length"), "{shown}");
    }
    // GLM's network_error ends the answer in an error, not in a complete-looking answer.
    let broken = fixture("glm", "stream_finish_network_error");
    let result = client.call_tool(chat("hello", &broken)).await.unwrap();
    assert!(
        error_of(&result).contains("finish_reason \"network_error\""),
        "{}",
        all_text_of(&result)
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_silent_thinker_outlives_the_idle_timeout_and_keep_alives_keep_it_alive() {
    let fake = Fake::start();
    // Idle 1 s, first token 2 s: the first-token wait is its own, not min(first token, idle).
    let daemon = every_provider(
        &fake,
        &[
            ("EXAI_PROVIDER_IDLE_TIMEOUT_S", "1"),
            ("EXAI_FIRST_TOKEN_TIMEOUT_S", "2"),
            ("EXAI_RETRY_ATTEMPTS", "1"),
        ],
    );
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    // OpenAI streams no reasoning: 1.5 s of silence, past the idle timeout, before it speaks.
    let silent = format!(
        "{}~1500",
        fixture("openai", "stream_usage_cached_reasoning")
    );
    let result = client.call_tool(chat("hello", &silent)).await.unwrap();
    assert_eq!(text_of(&result), "Olá!", "{}", all_text_of(&result));
    // OpenRouter's `: OPENROUTER PROCESSING` every 0.7 s for 2.8 s, longer than the first-token
    // timeout itself: the comments are signs of life.
    let kept_alive = format!(
        "{}~700",
        fixture("openrouter", "stream_keepalive_before_first_token")
    );
    let started = std::time::Instant::now();
    let result = client.call_tool(chat("hello", &kept_alive)).await.unwrap();
    assert_eq!(text_of(&result), "Olá!", "{}", all_text_of(&result));
    assert!(started.elapsed() >= Duration::from_millis(2800));
    let record = daemon.final_record(&call_id_of(&result));
    assert!(record.time_to_first_token_ms.unwrap_or(0) >= 2800);
    client.cancel().await.unwrap();
}
