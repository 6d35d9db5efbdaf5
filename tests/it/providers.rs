//! Providers through the real binary: several at once, dialects, retries, fallback, limits, garbage.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};

/// A daemon whose GLM and Kimi providers are the fake, with no custom endpoint.
fn glm_and_kimi(fake: &Fake, extra: &[(&str, &str)]) -> Daemon {
    let url = format!("{}/v1", fake.url);
    let catalog = temp_home().join("models.toml");
    std::fs::write(
        &catalog,
        "[[model]]\nid = \"fake-fast\"\nprovider = \"kimi\"\nfixed_sampling = true\nthinking = \"default_on\"\nscore = 10\n\n\
         [[model]]\nid = \"fake-glm-thinking\"\nprovider = \"glm\"\nthinking = \"default_on\"\naliases = [\"thinker\"]\nscore = 20\n\n\
         [[model]]\nid = \"fake-reasoning\"\nprovider = \"kimi\"\nthinking = \"default_on\"\nvision = true\nscore = 5\n\n\
         [[model]]\nid = \"fake-kimi-search\"\nprovider = \"kimi\"\nthinking = \"default_on\"\nweb_search = true\nscore = 5\n\
         price = { input = 0.0, output = 0.0, web_search = 0.005 }\n\n\
         [[model]]\nid = \"fake-kimi-search-loop\"\nprovider = \"kimi\"\nweb_search = true\nscore = 5\n\n\
         [[model]]\nid = \"fake-glm-search\"\nprovider = \"glm\"\nweb_search = true\nscore = 5\n",
    )
    .unwrap();
    let catalog = catalog.display().to_string();
    let mut env: Vec<(&str, &str)> = vec![
        ("CUSTOM_API_URL", ""),
        ("GLM_API_KEY", "glm-test-key"),
        ("GLM_API_URL", &url),
        ("MOONSHOT_API_KEY", "kimi-test-key"),
        ("KIMI_API_URL", &url),
        ("EXAI_MODELS_FILE", &catalog),
    ];
    env.extend_from_slice(extra);
    Daemon::start(fake, &env)
}

#[tokio::test]
async fn two_providers_at_once_by_model_name_with_their_own_dialects() {
    let fake = Fake::start();
    let daemon = glm_and_kimi(
        &fake,
        &[
            ("GLM_ALLOWED_MODELS", "fake-glm-thinking"),
            ("KIMI_ALLOWED_MODELS", "fake-fast"),
        ],
    );
    let (client, seen) = stdio_client(&daemon.stdio_env(), &[]).await;

    // An alias from the user's catalog file, served by GLM; reasoning streams first.
    let glm = client
        .call_tool(chat_with(
            json!({"prompt": "think", "model": "thinker", "temperature": 1.7}),
        ))
        .await
        .unwrap();
    assert!(text_of(&glm).ends_with("echo: think"), "{}", text_of(&glm));
    let record = daemon.final_record(&call_id_of(&glm));
    assert_eq!(record.provider.as_deref(), Some("glm"));
    assert_eq!(record.model.as_deref(), Some("fake-glm-thinking"));
    let sent = last_body(&fake, "fake-glm-thinking");
    assert_eq!(
        sent["temperature"], 1.0,
        "GLM temperatures are clamped to 0–1: {sent}"
    );
    assert!(sent.get("stream_options").is_none(), "{sent}");
    assert_eq!(sent["_has_auth"], true);
    assert_eq!(
        record.reasoning.as_deref(),
        Some("Let me think. Step two. "),
        "reasoning kept apart"
    );
    assert!(record.reasoning_tokens.unwrap_or(0) > 0);
    assert!(record.time_to_first_token_ms.is_some());
    assert!(
        !text_of(&glm).contains("Let me think"),
        "the answer carries no reasoning"
    );
    drop(seen);

    // `provider:model` picks Kimi; kimi-* style models take no sampling parameters.
    let kimi = client
        .call_tool(chat_with(
            json!({"prompt": "k", "model": "kimi:fake-fast", "temperature": 0.3}),
        ))
        .await
        .unwrap();
    assert_eq!(text_of(&kimi), "echo: k");
    assert_eq!(
        daemon.final_record(&call_id_of(&kimi)).provider.as_deref(),
        Some("kimi")
    );
    let sent = last_body(&fake, "fake-fast");
    assert!(sent.get("temperature").is_none(), "fixed sampling: {sent}");
    assert_eq!(sent["stream_options"]["include_usage"], true);

    // `auto` picks the best-scoring model the allow-lists leave.
    let auto = client
        .call_tool(chat_with(json!({"prompt": "a"})))
        .await
        .unwrap();
    assert_eq!(
        daemon.final_record(&call_id_of(&auto)).model.as_deref(),
        Some("fake-glm-thinking")
    );
    let refused = client.call_tool(chat("x", "kimi-k3")).await.unwrap();
    assert!(
        text_of(&refused).contains("not in kimi's allowed models"),
        "{}",
        text_of(&refused)
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn unknown_and_unconfigured_models_say_what_is_available() {
    let fake = Fake::start();
    let daemon = glm_and_kimi(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let unknown = client.call_tool(chat("x", "gpt-5")).await.unwrap();
    assert_eq!(unknown.is_error, Some(true));
    let text = text_of(&unknown);
    assert!(
        text.contains(
            "needs provider openai, which is not configured (OPENAI_API_KEY not set: `exai keys \
             set openai` stores its key)"
        ),
        "{text}"
    );
    assert!(
        text.contains("Available:")
            && text.contains("glm:fake-glm-thinking")
            && text.contains("kimi:"),
        "{text}"
    );
    let models = client
        .call_tool(CallToolRequestParams::new("listmodels"))
        .await
        .unwrap();
    let listing = text_of(&models);
    assert!(listing.contains("glm — configured"), "{listing}");
    assert!(
        listing.contains("openai — not configured: OPENAI_API_KEY not set"),
        "{listing}"
    );
    assert!(
        listing.contains(
            "kimi-k3 (aliases: kimi) · 1,048,576 context · score 93 · web search · images\n"
        ),
        "{listing}"
    );
    assert!(
        listing.contains(
            "moonshot-v1-128k · 131,072 context · score 60 · deprecated: replaced by kimi-k2.6\n"
        ),
        "no web search, and what replaced it: {listing}"
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn rate_limits_are_retried_honouring_retry_after() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (client, seen) = stdio_client(&daemon.stdio_env(), &[]).await;
    let started = Instant::now();
    let result = client
        .call_tool(chat("patience", "fake-429r1-2"))
        .await
        .unwrap();
    assert_eq!(text_of(&result), "echo: patience");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "two Retry-After: 1 waits"
    );
    let record = daemon.final_record(&call_id_of(&result));
    assert_eq!(record.attempts, Some(3));
    assert_eq!(fake.stats()["by_model"]["fake-429r1-2"], 3);
    let messages = progress_messages(&seen);
    assert!(
        messages
            .iter()
            .any(|m| m.contains("retrying in 1.0 s after: HTTP 429 (attempt 2 of 4)")),
        "{messages:?}"
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn auth_failures_and_content_resets_are_not_retried() {
    let fake = Fake::start();
    let daemon = glm_and_kimi(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let rejected = client.call_tool(chat("x", "glm:fake-401")).await.unwrap();
    let text = text_of(&rejected);
    assert!(text.contains("glm (fake-401) answered HTTP 401: invalid api key — the key was rejected; check GLM_API_KEY"), "{text}");
    assert!(!text.contains("glm-test-key"));
    let reset = client
        .call_tool(chat("x", "glm:fake-resetmid-3"))
        .await
        .unwrap();
    let text = text_of(&reset);
    assert!(
        text.contains("closed the connection before the answer was complete"),
        "{text}"
    );
    let stats = fake.stats();
    assert_eq!(stats["by_model"]["fake-401"], 1, "401 is not retried");
    assert_eq!(
        stats["by_model"]["fake-resetmid-3"], 1,
        "no retry once content streamed"
    );
    assert_eq!(daemon.final_record(&call_id_of(&reset)).attempts, Some(1));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_failing_model_falls_back_inside_the_deadline() {
    let fake = Fake::start();
    let daemon = Daemon::start(
        &fake,
        &[
            ("EXAI_FALLBACK_MODELS", "fake-fast"),
            ("EXAI_RETRY_ATTEMPTS", "2"),
            ("EXAI_RETRY_BASE_S", "0.05"),
        ],
    );
    let (client, seen) = stdio_client(&daemon.stdio_env(), &[]).await;
    let result = client.call_tool(chat("plan b", "fake-500")).await.unwrap();
    assert_eq!(text_of(&result), "echo: plan b");
    let record = daemon.final_record(&call_id_of(&result));
    assert_eq!(record.model.as_deref(), Some("fake-fast"));
    assert_eq!(
        record.attempts,
        Some(3),
        "two at fake-500, one at the fallback"
    );
    drop(seen);
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_limit_queues_in_order_and_shows_the_queue() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[("EXAI_PROVIDER_CONCURRENCY", "2")]);
    let (client, seen) = stdio_client(&daemon.stdio_env(), &[]).await;
    let peer = client.peer().clone();
    let calls = (0..10).map(|i| {
        let peer = peer.clone();
        async move {
            text_of(
                &peer
                    .call_tool(chat(&format!("q{i}"), "fake-delay-300"))
                    .await
                    .unwrap(),
            )
        }
    });
    let answers = futures::future::join_all(calls).await;
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer, &format!("echo: q{i}"));
    }
    assert_eq!(fake.stats()["max_in_flight"], 2);
    // The last of the ten waited behind seven; progress is coalesced, so a loaded machine may
    // show its place only once the line has moved on a little.
    let messages = progress_messages(&seen);
    let deepest = messages
        .iter()
        .filter_map(|m| {
            m.split("queued · ")
                .nth(1)?
                .split(" ahead for custom")
                .next()
        })
        .filter_map(|n| n.parse::<u32>().ok())
        .max();
    assert!(
        deepest.is_some_and(|n| (4..=7).contains(&n)),
        "{messages:?}"
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn provider_garbage_gets_clear_errors() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[("EXAI_RETRY_ATTEMPTS", "1")]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    for (model, expected) in [
        ("fake-truncated", "malformed answer: EOF while parsing"),
        ("fake-nochoices", "the answer had no choices"),
        (
            "fake-503",
            "answered HTTP 503: an HTML error page (503 Service Unavailable)",
        ),
        ("fake-garbage", "malformed answer"),
    ] {
        let result = client.call_tool(chat("x", model)).await.unwrap();
        assert_eq!(result.is_error, Some(true), "{model}");
        assert!(
            text_of(&result).contains(expected),
            "{model}: {}",
            text_of(&result)
        );
    }
    // Keep-alive comments, no usage, and a server that will not stream.
    for model in ["fake-comments-3", "fake-nousage-3", "fake-json"] {
        let result = client.call_tool(chat("fine", model)).await.unwrap();
        assert!(
            text_of(&result).ends_with("echo: fine"),
            "{model}: {}",
            text_of(&result)
        );
    }
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_slow_first_token_hits_its_own_timeout() {
    let fake = Fake::start();
    let daemon = Daemon::start(
        &fake,
        &[
            ("EXAI_FIRST_TOKEN_TIMEOUT_S", "1"),
            ("EXAI_RETRY_ATTEMPTS", "1"),
        ],
    );
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let result = client
        .call_tool(chat("x", "fake-slowstart-3000x2"))
        .await
        .unwrap();
    let text = text_of(&result);
    assert!(
        text.contains("sent nothing for 1 s while waiting for the first token"),
        "{text}"
    );
    assert_eq!(
        daemon.final_record(&call_id_of(&result)).state.as_str(),
        "timed_out"
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn cancelling_closes_the_provider_request_at_once() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let handle = cancellable_call(&client, chat("stop", "fake-hang")).await;
    at_provider(&fake, 1).await;
    let cancelled = Instant::now();
    handle.cancel(None).await.unwrap();
    provider_aborted(&fake, 1).await;
    let took = cancelled.elapsed();
    // The fake polls its socket; the stats poll adds up to 20 ms on top.
    assert!(
        took < Duration::from_millis(150),
        "the provider saw the abort after {took:?}"
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_config_file_adds_named_endpoints_and_exai_config_hides_keys() {
    let fake = Fake::start();
    let dir = temp_home();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "default_model = \"local:fake-fast\"\n[timeouts]\ncall = 30\n\n\
             [[endpoints]]\nname = \"local\"\nbase_url = \"{}/v1\"\napi_key_env = \"LOCAL_KEY\"\nmodels = [\"fake-fast\"]\nmax_concurrency = 3\n",
            fake.url
        ),
    )
    .unwrap();
    let config_path = config.display().to_string();
    let daemon = Daemon::start(
        &fake,
        &[
            ("CUSTOM_API_URL", ""),
            ("EXAI_CONFIG", &config_path),
            ("LOCAL_KEY", "sk-local-secret-123"),
        ],
    );
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let result = client
        .call_tool(chat_with(json!({"prompt": "from the file"})))
        .await
        .unwrap();
    assert_eq!(text_of(&result), "echo: from the file");
    let record = daemon.final_record(&call_id_of(&result));
    assert_eq!(record.provider.as_deref(), Some("local"));
    assert_eq!(record.deadline_at_ms - record.received_at_ms, 30_000);
    assert_eq!(last_body(&fake, "fake-fast")["_has_auth"], true);
    client.cancel().await.unwrap();

    let output = std::process::Command::new(EXAI)
        .args(["config"])
        .env("EXAI_HOME", &daemon.home)
        .envs(store_env(&daemon.home))
        .env("EXAI_CONFIG", &config_path)
        .env("LOCAL_KEY", "sk-local-secret-123")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(
        shown.contains("EXAI_CALL_TIMEOUT_S") && shown.contains("config file: timeouts.call"),
        "{shown}"
    );
    assert!(
        shown.contains("key set in LOCAL_KEY (19 characters, hidden)"),
        "{shown}"
    );
    assert!(!shown.contains("sk-local-secret-123"), "{shown}");
}

/// Words of every message's content, as the fake counts prompt tokens.
fn prompt_words(messages: &[Value]) -> i64 {
    messages
        .iter()
        .map(|m| {
            m["content"]
                .as_str()
                .unwrap_or("")
                .split_whitespace()
                .count() as i64
        })
        .sum()
}

fn progress_messages(seen: &Seen) -> Vec<String> {
    seen.progress
        .lock()
        .unwrap()
        .iter()
        .filter_map(|p| p.message.clone())
        .collect()
}

#[tokio::test]
async fn kimi_searches_the_web_in_a_second_round_and_every_round_is_counted() {
    let fake = Fake::start();
    let daemon = glm_and_kimi(&fake, &[]);
    let (client, seen) = stdio_client(&daemon.stdio_env(), &[]).await;
    let result = client
        .call_tool(chat_with(json!({
            "prompt": "what is new?", "model": "kimi:fake-kimi-search", "use_websearch": true,
        })))
        .await
        .unwrap();
    assert_ne!(result.is_error, Some(true), "{}", all_text_of(&result));
    assert_eq!(text_of(&result), "echo: what is new? (web searches: 1)");
    assert!(
        all_text_of(&result).contains("The model searched the web (1 search)."),
        "{}",
        all_text_of(&result)
    );
    assert_eq!(
        result.structured_content.as_ref().unwrap()["web_searches"],
        1
    );
    assert_eq!(fake.stats()["by_model"]["fake-kimi-search"], 2);
    // Kimi bills each search on top of the tokens (free here): $0.005.
    let record = daemon.final_record(&call_id_of(&result));
    assert_eq!(record.cost_usd_micros, Some(5_000), "{record:?}");

    // The fake refuses a second round that is not right; check what it got all the same.
    let sent = last_body(&fake, "fake-kimi-search");
    assert_eq!(
        sent["tools"],
        json!([{"type": "builtin_function", "function": {"name": "$web_search"}}])
    );
    let messages = sent["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool"]);
    let call = &messages[2]["tool_calls"][0];
    assert_eq!(call["id"], "call_search_1");
    assert_eq!(call["function"]["name"], "$web_search");
    assert_eq!(messages[2]["reasoning_content"], "I should look this up. ");
    assert_eq!(messages[3]["tool_call_id"], "call_search_1");
    assert_eq!(messages[3]["name"], "$web_search");
    assert_eq!(messages[3]["content"], call["function"]["arguments"]);

    // Usage of both rounds, summed (the fake counts words).
    let record = daemon.final_record(&call_id_of(&result));
    assert_eq!(record.state.as_str(), "succeeded");
    assert_eq!(record.attempts, Some(2), "one attempt per round");
    let first_round = prompt_words(&messages[..2]);
    let second_round = prompt_words(messages);
    assert_eq!(record.tokens_in, Some(first_round + second_round));
    // Round 1: 5 reasoning words; round 2: 2 reasoning words and a 7-word answer.
    assert_eq!(record.tokens_out, Some(14));
    assert_eq!(record.reasoning_tokens, Some(7));
    assert_eq!(
        record.reasoning.as_deref(),
        Some("I should look this up. \n\nFound it. ")
    );
    let progress = progress_messages(&seen);
    assert!(
        progress.iter().any(|m| m.contains("searching the web")),
        "{progress:?}"
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn glm_web_search_sends_its_tool_and_lists_the_sources_under_the_answer() {
    let fake = Fake::start();
    let daemon = glm_and_kimi(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let result = client
        .call_tool(chat_with(json!({
            "prompt": "weather?", "model": "glm:fake-glm-search", "use_websearch": true,
        })))
        .await
        .unwrap();
    assert_eq!(
        text_of(&result),
        "echo: weather? [ref_1]\n\nSources:\n\
         - Fake result one — https://example.com/one\n\
         - Fake result two — https://example.org/two"
    );
    let sources = &result.structured_content.as_ref().unwrap()["sources"];
    assert_eq!(sources[1]["url"], "https://example.org/two");
    let sent = last_body(&fake, "fake-glm-search");
    assert_eq!(
        sent["tools"],
        json!([{"type": "web_search", "web_search": {
            "enable": true, "search_engine": "search_pro_jina", "search_result": true}}])
    );
    assert!(sent.get("tool_choice").is_none(), "{sent}");
    let record = daemon.final_record(&call_id_of(&result));
    assert_eq!(record.attempts, Some(1));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_model_that_keeps_searching_is_stopped_with_a_clear_error() {
    let fake = Fake::start();
    let daemon = glm_and_kimi(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let result = client
        .call_tool(chat_with(json!({
            "prompt": "forever", "model": "kimi:fake-kimi-search-loop", "use_websearch": true,
        })))
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(true));
    let text = text_of(&result);
    assert!(
        text.contains(
            "kimi (fake-kimi-search-loop) still asked to search the web after 3 rounds of searching"
        ),
        "{text}"
    );
    assert_eq!(
        fake.stats()["by_model"]["fake-kimi-search-loop"],
        4,
        "three rounds of searching, then the fourth ask is refused"
    );
    let record = daemon.final_record(&call_id_of(&result));
    assert_eq!(record.state.as_str(), "failed");
    assert_eq!(record.error_kind.as_deref(), Some("provider_search_loop"));
    assert_eq!(record.attempts, Some(4));
    // Five reasoning words per round, all four rounds kept in the record.
    assert_eq!(record.tokens_out, Some(20));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn web_search_on_a_model_without_it_answers_with_a_note() {
    let fake = Fake::start();
    let daemon = glm_and_kimi(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let result = client
        .call_tool(chat_with(json!({
            "prompt": "q", "model": "kimi:fake-fast", "use_websearch": true,
        })))
        .await
        .unwrap();
    assert_ne!(result.is_error, Some(true));
    assert_eq!(text_of(&result), "echo: q");
    let all = all_text_of(&result);
    assert!(
        all.contains("No web search: fake-fast on kimi cannot search the web through exai"),
        "{all}"
    );
    let sent = last_body(&fake, "fake-fast");
    assert!(sent.get("tools").is_none(), "{sent}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn show_reasoning_puts_the_reasoning_before_the_answer_only_when_asked() {
    let fake = Fake::start();
    let daemon = glm_and_kimi(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let shown = client
        .call_tool(chat_with(json!({
            "prompt": "think", "model": "glm:fake-glm-thinking", "show_reasoning": true,
        })))
        .await
        .unwrap();
    let texts: Vec<String> = shown
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect();
    assert!(
        texts[0].starts_with("=== Model reasoning (its thinking, not its answer) ===\n"),
        "{texts:?}"
    );
    assert!(texts[0].contains("Let me think. Step two."), "{texts:?}");
    assert!(texts[0].ends_with("=== End of reasoning; the answer follows ==="));
    assert_eq!(texts[1], "echo: think");
    let record = daemon.final_record(&call_id_of(&shown));
    assert_eq!(
        record.reasoning.as_deref(),
        Some("Let me think. Step two. ")
    );

    let hidden = client
        .call_tool(chat_with(
            json!({"prompt": "think", "model": "glm:fake-glm-thinking"}),
        ))
        .await
        .unwrap();
    assert_eq!(text_of(&hidden), "echo: think");
    assert!(!all_text_of(&hidden).contains("Let me think"));
    assert_eq!(
        daemon
            .final_record(&call_id_of(&hidden))
            .reasoning
            .as_deref(),
        Some("Let me think. Step two. "),
        "kept in the record either way"
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn cancelling_while_the_platform_searches_closes_the_second_request() {
    let fake = Fake::start();
    let daemon = glm_and_kimi(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let handle = cancellable_call(
        &client,
        chat_with(json!({
            "prompt": "stop", "model": "kimi:fake-kimi-search", "use_websearch": true,
        })),
    )
    .await;
    // The second round is in flight while the fake "searches" (600 ms before its first chunk).
    wait_until_async(
        "the second round at the provider",
        Duration::from_secs(10),
        || {
            let stats = fake.stats();
            (stats["by_model"]["fake-kimi-search"] == 2 && stats["in_flight"] == 1).then_some(())
        },
    )
    .await;
    handle.cancel(None).await.unwrap();
    provider_aborted(&fake, 1).await;
    assert_eq!(
        fake.stats()["completed"],
        1,
        "only the first round completed"
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn kimi_gets_its_reasoning_back_when_history_is_replayed_and_glm_does_not() {
    let fake = Fake::start();
    let daemon = glm_and_kimi(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let first = client
        .call_tool(chat_with(
            json!({"prompt": "think first", "model": "kimi:fake-reasoning"}),
        ))
        .await
        .unwrap();
    assert_eq!(first.is_error, Some(false), "{}", all_text_of(&first));
    let id = first.structured_content.as_ref().unwrap()["continuation_id"]
        .as_str()
        .unwrap()
        .to_string();
    for model in ["kimi:fake-reasoning", "glm:fake-glm-thinking"] {
        let next = client
            .call_tool(chat_with(
                json!({"prompt": "and then?", "model": model, "continuation_id": id}),
            ))
            .await
            .unwrap();
        assert_eq!(next.is_error, Some(false), "{}", all_text_of(&next));
        let bare = model.split_once(':').unwrap().1;
        let messages = last_body(&fake, bare)["messages"]
            .as_array()
            .unwrap()
            .clone();
        let replayed = messages
            .iter()
            .find(|m| m["role"] == "assistant")
            .expect("the earlier answer is replayed");
        let reasoning = replayed.get("reasoning_content").and_then(|r| r.as_str());
        if model.starts_with("kimi") {
            assert!(reasoning.is_some_and(|r| !r.is_empty()), "{replayed}");
        } else {
            assert!(
                reasoning.is_none(),
                "GLM gets no reasoning_content: {replayed}"
            );
        }
    }
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn images_reach_a_vision_model_as_data_urls_and_are_refused_elsewhere() {
    let fake = Fake::start();
    let daemon = glm_and_kimi(&fake, &[]);
    let dir = temp_home().canonicalize().unwrap();
    let png = dir.join("shot.png");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    std::fs::write(dir.join("fake.png"), b"plain text").unwrap();
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let seen = client
        .call_tool(chat_with(
            json!({"prompt": "what is on it?", "model": "kimi:fake-reasoning",
                                     "images": [png.display().to_string()]}),
        ))
        .await
        .unwrap();
    assert_eq!(seen.is_error, Some(false), "{}", all_text_of(&seen));
    let messages = last_body(&fake, "fake-reasoning")["messages"]
        .as_array()
        .unwrap()
        .clone();
    let parts = messages.last().unwrap()["content"]
        .as_array()
        .unwrap()
        .clone();
    // Kimi gets the image before the question, as its documented example puts it.
    assert_eq!(parts[1]["type"], "text");
    assert!(
        parts[1]["text"]
            .as_str()
            .unwrap()
            .ends_with("what is on it?")
    );
    assert!(
        parts[0]["image_url"]["url"]
            .as_str()
            .unwrap()
            .starts_with("data:image/png;base64,iVBORw0KGgo")
    );
    for (model, image, expected) in [
        (
            "glm:fake-glm-thinking",
            png.display().to_string(),
            "cannot see images",
        ),
        (
            "kimi:fake-reasoning",
            dir.join("fake.png").display().to_string(),
            "not a PNG, JPEG, GIF or WebP",
        ),
        ("kimi:fake-reasoning", "shot.png".to_string(), "absolute"),
    ] {
        let refused = client
            .call_tool(chat_with(
                json!({"prompt": "look", "model": model, "images": [image]}),
            ))
            .await
            .unwrap();
        assert_eq!(refused.is_error, Some(true));
        assert!(
            all_text_of(&refused).contains(expected),
            "{}",
            all_text_of(&refused)
        );
    }
    client.cancel().await.unwrap();
}

/// Most the daemon may grow to while a provider floods it (its answer cap set to 4 MiB).
const FLOOD_RSS_LIMIT: u64 = 200 * 1024 * 1024;

/// Runs `work` while reading process `pid`'s resident memory every 10 ms; fails as soon as it
/// passes `limit` (so a daemon without a bound is stopped early). Returns the output and the peak.
async fn within_memory<T>(pid: u32, limit: u64, work: impl Future<Output = T>) -> (T, u64) {
    tokio::pin!(work);
    let mut peak = 0;
    loop {
        tokio::select! {
            output = &mut work => return (output, peak),
            _ = tokio::time::sleep(Duration::from_millis(10)) => {
                peak = peak.max(rss_bytes(pid).unwrap_or(0));
                assert!(peak < limit, "the daemon grew to {} MiB", peak >> 20);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_never_stops_sending_is_cut_off_and_memory_stays_bounded() {
    let fake = Fake::start();
    let daemon = Daemon::start(
        &fake,
        &[
            ("EXAI_MAX_ANSWER_BYTES", "4194304"),
            ("EXAI_RETRY_ATTEMPTS", "1"),
            ("EXAI_CALL_TIMEOUT_S", "60"),
        ],
    );
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let floods = [
        (
            "fake-flood",
            "custom (fake-flood) sent more than 4 MiB (answer 3.9 MiB, reasoning 100 KiB) \
             without finishing; the request was stopped (EXAI_MAX_ANSWER_BYTES sets the limit)",
        ),
        (
            "fake-longline",
            "custom (fake-longline) sent more than 8.1 MiB in one stream event without ending it; \
             the request was stopped",
        ),
        (
            "fake-flood-json",
            "custom (fake-flood-json) sent a whole answer of more than 8.1 MiB; the request was stopped",
        ),
    ];
    for (n, (model, expected)) in floods.into_iter().enumerate() {
        let (result, peak) = within_memory(
            daemon.pid(),
            FLOOD_RSS_LIMIT,
            client.call_tool(chat("flood", model)),
        )
        .await;
        let result = result.unwrap();
        assert_eq!(result.is_error, Some(true), "{model}");
        let text = text_of(&result);
        assert!(text.contains(expected), "{model}: {text}");
        let record = daemon.final_record(&call_id_of(&result));
        assert_eq!(record.state.as_str(), "failed");
        assert_eq!(
            record.error_kind.as_deref(),
            Some("provider_answer_too_large")
        );
        // The connection was dropped: the fake saw its endless answer aborted.
        provider_aborted(&fake, n as u64 + 1).await;
        eprintln!("{model}: peak RSS {} MiB", peak >> 20);
    }
    assert_eq!(fake.stats()["requests"], 3, "not retried");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_its_target_never_gets_the_prompt() {
    let fake = Fake::start();
    let elsewhere = Fake::start();
    let port = elsewhere.url.rsplit(':').next().unwrap().to_string();
    let daemon = Daemon::start(&fake, &[("EXAI_RETRY_ATTEMPTS", "1")]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let model = format!("fake-redirect-{port}");
    let result = client
        .call_tool(chat("the plan, not for elsewhere", &model))
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(true));
    let text = text_of(&result);
    assert!(
        text.contains(&format!(
            "custom ({model}) answered HTTP 307, a redirect to \
             http://127.0.0.1:{port}/v1/chat/completions?api_key=***; exai follows no redirects"
        )),
        "{text}"
    );
    assert!(!text.contains("fake-redirect-secret"), "{text}");
    let record = daemon.final_record(&call_id_of(&result));
    assert_eq!(record.error_kind.as_deref(), Some("provider_redirect"));
    assert_eq!(
        elsewhere.stats()["requests"],
        0,
        "the other origin received nothing"
    );
    assert_eq!(fake.stats()["by_model"][&model], 1);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn credentials_in_provider_urls_and_error_bodies_are_never_shown_logged_or_stored() {
    let fake = Fake::start();
    let authority = fake.url.strip_prefix("http://").unwrap();
    let custom_url = format!("http://exai-user:url-pass-4821@{authority}/v1?key=url-key-7391");
    let dir = temp_home();
    let config = dir.join("config.toml");
    let dead = dead_port();
    std::fs::write(
        &config,
        format!(
            "[[endpoints]]\nname = \"dead\"\nmodels = [\"fake-fast\"]\n\
             base_url = \"http://dead-user:dead-pass-5512@127.0.0.1:{}/v1?api_key=dead-key-6604\"\n",
            dead.port
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let mut daemon = Daemon::start(
        &fake,
        &[
            ("CUSTOM_API_URL", &custom_url),
            ("CUSTOM_API_KEY", "sk-custom-secret-2290"),
            ("EXAI_CONFIG", &config),
            ("EXAI_RETRY_ATTEMPTS", "1"),
        ],
    );
    let secrets = [
        "url-pass-4821",
        "url-key-7391",
        "custom-secret-2290",
        "dead-pass-5512",
        "dead-key-6604",
    ];
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let mut shown = Vec::new();
    let mut ids = Vec::new();

    // The key and the URL's query (after the path) still reach the provider, which echoes them
    // back (the path as its `/v1` router sees it).
    let ok = client
        .call_tool(chat("hello", "custom:fake-fast"))
        .await
        .unwrap();
    assert_eq!(text_of(&ok), "echo: hello");
    assert_eq!(last_body(&fake, "fake-fast")["_has_auth"], true);
    let echoed = client
        .call_tool(chat("x", "custom:fake-echo-auth"))
        .await
        .unwrap();
    let text = text_of(&echoed);
    assert!(
        text.contains(
            "answered HTTP 401: Incorrect API key provided: Bearer *** \
             (request /chat/completions?key=***)"
        ),
        "{text}"
    );
    // An endpoint that cannot be reached names its URL, masked.
    let dead = client.call_tool(chat("x", "dead:fake-fast")).await.unwrap();
    let text = text_of(&dead);
    assert!(
        text.contains("could not reach dead at http://***@127.0.0.1:")
            && text.contains("/v1/chat/completions?api_key=***: "),
        "{text}"
    );
    let models = client
        .call_tool(CallToolRequestParams::new("listmodels"))
        .await
        .unwrap();
    assert!(
        all_text_of(&models).contains(&format!(
            "custom — configured — http://***@{authority}/v1?key=***"
        )),
        "{}",
        all_text_of(&models)
    );
    for result in [&ok, &echoed, &dead, &models] {
        shown.push(all_text_of(result));
        shown.push(serde_json::to_string(&result.structured_content).unwrap());
        ids.push(call_id_of(result));
    }
    client.cancel().await.unwrap();

    for id in &ids {
        let (success, record) = daemon.cli(&["calls", "show", id, "--json"]);
        assert!(success, "{record}");
        shown.push(record);
    }
    for args in [&["config"][..], &["config", "--json"], &["status"]] {
        let (success, output) = daemon.cli(args);
        assert!(success, "{args:?}: {output}");
        shown.push(output);
    }
    daemon.stop();
    let logs: Vec<String> = std::fs::read_dir(daemon.home.join("logs"))
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect();
    assert!(
        logs.iter().any(|l| l.contains("provider configured")),
        "the logs were read"
    );
    shown.extend(logs);
    shown.extend(daemon.store_contents());
    for text in &shown {
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} shown in: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_custom_endpoint_keeps_its_own_concurrency_limit() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[("CUSTOM_MAX_CONCURRENCY", "1")]);
    let (client, seen) = stdio_client(&daemon.stdio_env(), &[]).await;
    let peer = client.peer().clone();
    let calls = (0..2).map(|i| {
        let peer = peer.clone();
        async move {
            text_of(
                &peer
                    .call_tool(chat(&format!("q{i}"), "fake-delay-500"))
                    .await
                    .unwrap(),
            )
        }
    });
    let answers = futures::future::join_all(calls).await;
    assert_eq!(answers, ["echo: q0", "echo: q1"]);
    assert_eq!(fake.stats()["max_in_flight"], 1, "one at a time");
    let messages = progress_messages(&seen);
    assert!(
        messages
            .iter()
            .any(|m| m.contains("queued · 0 ahead for custom")),
        "{messages:?}"
    );
    client.cancel().await.unwrap();
}

/// The seconds in `text` right after `label` ("for 0.8 s" → 0.8).
fn seconds_after(text: &str, label: &str) -> f64 {
    let rest = text
        .split_once(label)
        .unwrap_or_else(|| panic!("no {label:?} in {text}"))
        .1;
    rest.split_once(" s")
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no seconds after {label:?} in {text}"))
}

#[tokio::test]
async fn a_deadline_after_thinking_says_how_long_the_output_had_been_streaming() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[("EXAI_CALL_TIMEOUT_S", "3")]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    // Reasoning from 0.25 s to 2 s, the answer from 2.25 s on: the deadline falls in the answer.
    let result = client
        .call_tool(chat("x", "fake-thinkstream-8x250"))
        .await
        .unwrap();
    let text = text_of(&result);
    assert!(
        text.contains("chat timed out after 3 s (the call's deadline) while streaming (for "),
        "{text}"
    );
    let streaming = seconds_after(&text, "while streaming (for ");
    let output = seconds_after(&text, "; output for ");
    assert!(
        output - streaming >= 1.5,
        "the thinking before the answer counts as output: {text}"
    );
    assert!(output <= 3.0, "{text}");
    assert_eq!(
        daemon.final_record(&call_id_of(&result)).state.as_str(),
        "timed_out"
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_keyless_endpoint_that_wants_a_key_names_the_variable_to_set() {
    let fake = Fake::start();
    // The custom endpoint with no CUSTOM_API_KEY, as a new user starts.
    let daemon = Daemon::start(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let rejected = client.call_tool(chat("x", "fake-401")).await.unwrap();
    let text = text_of(&rejected);
    assert!(
        text.contains("the endpoint wants a key; set CUSTOM_API_KEY"),
        "{text}"
    );
    client.cancel().await.unwrap();
}
