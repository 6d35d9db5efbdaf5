//! What exai sends to each provider, through the real binary and the built-in catalog: the
//! fake answers the catalog's real ids as their provider documents it (refusals included), and
//! each test reads back the body the fake received. Thinking on and off, web search, output
//! limits, deprecated models.

use crate::common;

use common::*;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use serde_json::{Value, json};
use std::time::Duration;

/// Asks `model` through `chat` with `args` added; the call must succeed.
async fn ask(client: &Client, model: &str, args: Value) -> CallToolResult {
    let mut all = json!({"prompt": "hi", "model": model});
    for (key, value) in args.as_object().unwrap() {
        all[key] = value.clone();
    }
    let result = client.call_tool(chat_with(all)).await.unwrap();
    assert_eq!(
        result.is_error,
        Some(false),
        "{model}: {}",
        all_text_of(&result)
    );
    result
}

/// The body the fake received last for `model` (the id without the provider).
fn sent(fake: &Fake, model: &str) -> Value {
    let bare = model.split_once(':').map_or(model, |(_, m)| m);
    last_body(fake, bare)
}

#[tokio::test]
async fn each_provider_gets_the_catalogs_output_limit_in_its_documented_field() {
    let fake = Fake::start();
    let daemon = every_provider(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    for (model, field, limit, refused) in [
        (
            "glm:glm-5.2",
            "max_tokens",
            131_072,
            "max_completion_tokens",
        ),
        (
            "kimi:kimi-k2.6",
            "max_completion_tokens",
            65_536,
            "max_tokens",
        ),
        (
            "openai:gpt-5",
            "max_completion_tokens",
            128_000,
            "max_tokens",
        ),
        (
            "openai:gpt-4.1",
            "max_completion_tokens",
            32_768,
            "max_tokens",
        ),
        (
            "openrouter:z-ai/glm-4.7",
            "max_completion_tokens",
            131_072,
            "max_tokens",
        ),
    ] {
        ask(&client, model, json!({})).await;
        let body = sent(&fake, model);
        assert_eq!(body[field], limit, "{model}: {body}");
        assert!(body.get(refused).is_none(), "{model}: {body}");
    }
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn glm_switches_thinking_but_never_tells_glm_5_3_to_stop() {
    let fake = Fake::start();
    let daemon = every_provider(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;

    ask(&client, "glm:glm-5.2", json!({"thinking_mode": "high"})).await;
    let body = sent(&fake, "glm-5.2");
    assert_eq!(body["thinking"], json!({"type": "enabled"}));
    assert_eq!(
        body["reasoning_effort"], "high",
        "not the default max: {body}"
    );
    ask(&client, "glm:glm-5.2", json!({"thinking_mode": "max"})).await;
    assert_eq!(sent(&fake, "glm-5.2")["reasoning_effort"], "max");
    // GLM-5.3 takes low, high and max: each level is the nearest it has.
    for (level, effort) in [("low", "low"), ("medium", "low"), ("high", "high")] {
        ask(&client, "glm:glm-5.3", json!({"thinking_mode": level})).await;
        let body = sent(&fake, "glm-5.3");
        assert_eq!(body["reasoning_effort"], effort, "{level}: {body}");
        assert_eq!(body["thinking"], json!({"type": "enabled"}));
    }
    // A model without efforts (before GLM-5.2) is only switched on.
    ask(&client, "glm:glm-4.7", json!({"thinking_mode": "high"})).await;
    let body = sent(&fake, "glm-4.7");
    assert!(body.get("reasoning_effort").is_none(), "{body}");
    // No level asked: the model's own default, nothing sent.
    ask(&client, "glm:glm-5.3", json!({})).await;
    assert!(sent(&fake, "glm-5.3").get("reasoning_effort").is_none());

    ask(&client, "glm:glm-5.2", json!({"thinking_mode": "minimal"})).await;
    assert_eq!(
        sent(&fake, "glm-5.2")["thinking"],
        json!({"type": "disabled"})
    );

    // glm-5.3 always thinks: `thinking: disabled` would be refused with code 1210.
    ask(&client, "glm:glm-5.3", json!({"thinking_mode": "minimal"})).await;
    let body = sent(&fake, "glm-5.3");
    assert!(body.get("thinking").is_none(), "{body}");
    assert_eq!(body["reasoning_effort"], "low");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn glm_searches_with_the_documented_tool_and_lists_what_it_found() {
    let fake = Fake::start();
    let daemon = every_provider(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let searched = ask(&client, "glm:glm-5.2", json!({"use_websearch": true})).await;
    let body = sent(&fake, "glm-5.2");
    assert_eq!(
        body["tools"],
        json!([{"type": "web_search", "web_search": {
            "enable": true, "search_engine": "search_pro_jina", "search_result": true}}])
    );
    assert!(body.get("tool_choice").is_none(), "{body}");
    let text = text_of(&searched);
    assert!(text.starts_with("According to [ref_1]"), "{text}");
    assert!(text.contains("https://example.com/one"), "{text}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn kimi_keeps_thinking_as_the_model_has_it_and_searches_with_thinking_on_or_off() {
    let fake = Fake::start();
    let daemon = every_provider(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;

    ask(
        &client,
        "kimi:kimi-k2.6",
        json!({"thinking_mode": "minimal"}),
    )
    .await;
    let body = sent(&fake, "kimi-k2.6");
    assert_eq!(body["thinking"], json!({"type": "disabled"}));

    // kimi-k3 has no `thinking` field; kimi-k2.7-code refuses `disabled`.
    ask(&client, "kimi:kimi-k3", json!({"thinking_mode": "minimal"})).await;
    let body = sent(&fake, "kimi-k3");
    assert!(body.get("thinking").is_none(), "{body}");
    assert_eq!(body["reasoning_effort"], "low");
    // Its other levels: the effort of the name, not the default max.
    ask(&client, "kimi:kimi-k3", json!({"thinking_mode": "high"})).await;
    assert_eq!(sent(&fake, "kimi-k3")["reasoning_effort"], "high");
    // k2.6 documents no efforts: thinking on is its default, nothing is sent.
    ask(&client, "kimi:kimi-k2.6", json!({"thinking_mode": "high"})).await;
    let body = sent(&fake, "kimi-k2.6");
    assert!(
        body.get("reasoning_effort").is_none() && body.get("thinking").is_none(),
        "{body}"
    );
    ask(
        &client,
        "kimi:kimi-k2.7-code",
        json!({"thinking_mode": "minimal"}),
    )
    .await;
    let body = sent(&fake, "kimi-k2.7-code");
    assert!(body.get("thinking").is_none(), "{body}");

    // Thinking on (K3 always thinks): the echoed turn carries the reasoning back.
    let searched = ask(&client, "kimi:kimi-k3", json!({"use_websearch": true})).await;
    assert_eq!(text_of(&searched), "echo: hi (web searches: 1)");
    let body = sent(&fake, "kimi-k3");
    assert!(body.get("thinking").is_none(), "{body}");
    let echoed = &body["messages"][2];
    assert_eq!(echoed["role"], "assistant");
    assert_eq!(echoed["reasoning_content"], "I should look this up. ");
    assert_eq!(echoed["tool_calls"][0]["type"], "builtin_function");

    // Thinking off on k2.6: no reasoning comes, none goes back, and Kimi takes it.
    let searched = ask(
        &client,
        "kimi:kimi-k2.6",
        json!({"use_websearch": true, "thinking_mode": "minimal"}),
    )
    .await;
    assert_eq!(text_of(&searched), "echo: hi (web searches: 1)");
    let body = sent(&fake, "kimi-k2.6");
    assert_eq!(body["thinking"], json!({"type": "disabled"}));
    assert!(
        body["messages"][2].get("reasoning_content").is_none(),
        "{body}"
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn openai_reasoning_models_get_an_effort_and_no_temperature() {
    let fake = Fake::start();
    let daemon = every_provider(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;

    // gpt-5 refuses `max_tokens` and a temperature; its least thinking is an effort.
    let answer = ask(
        &client,
        "openai:gpt-5",
        json!({"thinking_mode": "minimal", "temperature": 0.3}),
    )
    .await;
    let body = sent(&fake, "gpt-5");
    assert_eq!(body["reasoning_effort"], "minimal", "gpt-5's least: {body}");
    assert!(body.get("temperature").is_none(), "{body}");
    let all = all_text_of(&answer);
    assert!(
        all.contains(
            "gpt-5 is deprecated by openai: shuts down 2026-12-11; replaced by gpt-5.6-sol"
        ),
        "{all}"
    );

    // Each thinking_mode is the effort of its name, as far as the model goes.
    ask(&client, "openai:gpt-5", json!({"thinking_mode": "high"})).await;
    assert_eq!(sent(&fake, "gpt-5")["reasoning_effort"], "high");
    ask(&client, "openai:gpt-5", json!({"thinking_mode": "max"})).await;
    assert_eq!(sent(&fake, "gpt-5")["reasoning_effort"], "high");
    ask(&client, "openai:gpt-5", json!({})).await;
    assert!(
        sent(&fake, "gpt-5").get("reasoning_effort").is_none(),
        "no thinking_mode: the model's default effort"
    );
    // gpt-5.6, which does not reason by default, reasons when asked to.
    ask(
        &client,
        "openai:gpt-5.6-sol",
        json!({"thinking_mode": "max"}),
    )
    .await;
    assert_eq!(sent(&fake, "gpt-5.6-sol")["reasoning_effort"], "max");

    // gpt-5.6 may stop thinking altogether: its lowest documented effort is `none`.
    ask(
        &client,
        "openai:gpt-5.6-sol",
        json!({"thinking_mode": "minimal"}),
    )
    .await;
    assert_eq!(sent(&fake, "gpt-5.6-sol")["reasoning_effort"], "none");

    let searched = ask(
        &client,
        "openai:gpt-4.1",
        json!({"temperature": 0.3, "use_websearch": true}),
    )
    .await;
    let body = sent(&fake, "gpt-4.1");
    assert_eq!(body["temperature"], 0.3);
    assert!(body.get("tools").is_none(), "{body}");
    assert!(
        all_text_of(&searched).contains("No web search: gpt-4.1 on openai"),
        "{}",
        all_text_of(&searched)
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn openrouter_never_disables_mandatory_reasoning() {
    let fake = Fake::start();
    let daemon = every_provider(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;

    // Reasoning is mandatory on openai/gpt-5: `enabled: false` would be answered with HTTP 400.
    ask(
        &client,
        "openrouter:openai/gpt-5",
        json!({"thinking_mode": "minimal"}),
    )
    .await;
    assert_eq!(
        sent(&fake, "openai/gpt-5")["reasoning"],
        json!({"effort": "minimal"})
    );

    // No documented efforts: nothing is sent, the model reasons as it likes.
    ask(
        &client,
        "openrouter:google/gemini-2.5-pro",
        json!({"thinking_mode": "minimal"}),
    )
    .await;
    let body = sent(&fake, "google/gemini-2.5-pro");
    assert!(body.get("reasoning").is_none(), "{body}");

    // A model with efforts is asked for the one of the level, not just switched on.
    ask(
        &client,
        "openrouter:openai/gpt-5",
        json!({"thinking_mode": "high"}),
    )
    .await;
    assert_eq!(
        sent(&fake, "openai/gpt-5")["reasoning"],
        json!({"effort": "high"})
    );

    // A model whose reasoning is optional is switched off and on.
    ask(
        &client,
        "openrouter:z-ai/glm-4.7",
        json!({"thinking_mode": "minimal"}),
    )
    .await;
    assert_eq!(
        sent(&fake, "z-ai/glm-4.7")["reasoning"],
        json!({"enabled": false})
    );
    ask(
        &client,
        "openrouter:z-ai/glm-4.7",
        json!({"thinking_mode": "high"}),
    )
    .await;
    assert_eq!(
        sent(&fake, "z-ai/glm-4.7")["reasoning"],
        json!({"enabled": true})
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_tools_output_limit_reaches_every_provider_in_its_own_field() {
    let fake = Fake::start();
    let daemon = every_provider(&fake, &[("EXAI_TOOL_MAX_OUTPUT", "chat=1234,consensus=99")]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    for (model, field) in [
        ("glm:glm-5.2", "max_tokens"),
        ("kimi:kimi-k2.6", "max_completion_tokens"),
        ("openai:gpt-4.1", "max_completion_tokens"),
        ("openrouter:z-ai/glm-4.7", "max_completion_tokens"),
    ] {
        ask(&client, model, json!({})).await;
        assert_eq!(sent(&fake, model)[field], 1234, "{model}");
    }
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn deprecated_models_are_never_chosen_by_auto_and_say_what_replaced_them() {
    let fake = Fake::start();
    let catalog = temp_home().join("models.toml");
    std::fs::write(
        &catalog,
        "[[model]]\nid = \"fake-fast\"\nprovider = \"kimi\"\nscore = 99\n\
         deprecated = \"replaced by fake-delay-1\"\n\n\
         [[model]]\nid = \"fake-delay-1\"\nprovider = \"kimi\"\nscore = 10\n",
    )
    .unwrap();
    let catalog = catalog.display().to_string();
    let url = format!("{}/v1", fake.url);
    let daemon = Daemon::start(
        &fake,
        &[
            ("CUSTOM_API_URL", ""),
            ("KIMI_API_KEY", "kimi-test-key"),
            ("KIMI_API_URL", &url),
            ("KIMI_ALLOWED_MODELS", "fake-fast,fake-delay-1,kimi-k2.5"),
            ("EXAI_MODELS_FILE", &catalog),
        ],
    );
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let auto = client
        .call_tool(chat_with(json!({"prompt": "a"})))
        .await
        .unwrap();
    assert_eq!(
        daemon.final_record(&call_id_of(&auto)).model.as_deref(),
        Some("fake-delay-1"),
        "the best-scoring model is deprecated: auto passes it by"
    );

    let named = ask(&client, "kimi:kimi-k2.5", json!({})).await;
    assert_eq!(text_of(&named), "echo: hi");
    let all = all_text_of(&named);
    assert!(
        all.contains("kimi-k2.5 is deprecated by kimi: replaced by kimi-k2.6."),
        "{all}"
    );

    let listing = text_of(
        &client
            .call_tool(CallToolRequestParams::new("listmodels"))
            .await
            .unwrap(),
    );
    assert!(
        listing.contains("  kimi-k2.5 · 262,144 context · score 84 · web search · deprecated: replaced by kimi-k2.6\n"),
        "{listing}"
    );
    assert!(
        listing.contains(
            "  fake-fast · 32,768 context · score 99 · deprecated: replaced by fake-delay-1"
        ),
        "{listing}"
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn what_openrouter_lists_of_reasoning_wins_over_a_stale_catalog() {
    let fake = Fake::start();
    let catalog = temp_home().join("models.toml");
    // The user's catalog still believes the model's reasoning can be switched off.
    std::fs::write(
        &catalog,
        "[[model]]\nid = \"fake/mandatory-reasoner\"\nprovider = \"openrouter\"\n\
         thinking = \"default_on\"\n",
    )
    .unwrap();
    let catalog = catalog.display().to_string();
    let url = format!("{}/v1", fake.url);
    let daemon = Daemon::start(
        &fake,
        &[
            ("CUSTOM_API_URL", ""),
            ("OPENROUTER_API_KEY", "openrouter-test-key"),
            ("OPENROUTER_BASE_URL", &url),
            ("EXAI_MODELS_FILE", &catalog),
        ],
    );
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    // Discovery runs in the background at start: poll the listing until it has the models.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let listing = text_of(
            &client
                .call_tool(CallToolRequestParams::new("listmodels"))
                .await
                .unwrap(),
        );
        if listing.contains("fake/optional-reasoner") {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "never discovered: {listing}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    ask(
        &client,
        "openrouter:fake/mandatory-reasoner",
        json!({"thinking_mode": "minimal"}),
    )
    .await;
    assert_eq!(
        sent(&fake, "fake/mandatory-reasoner")["reasoning"],
        json!({"effort": "low"}),
        "mandatory per GET /models: its lowest listed effort, never enabled: false"
    );

    // Not in the catalog at all, but listed as reasoning that may be switched off.
    for (mode, enabled) in [("minimal", false), ("high", true)] {
        ask(
            &client,
            "openrouter:fake/optional-reasoner",
            json!({"thinking_mode": mode}),
        )
        .await;
        assert_eq!(
            sent(&fake, "fake/optional-reasoner")["reasoning"],
            json!({"enabled": enabled}),
            "{mode}"
        );
    }
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn providers_that_refuse_prompt_and_limit_past_the_window_are_asked_for_no_more_than_it_leaves()
 {
    // Kimi documents the refusal; OpenRouter and OpenAI answer it with a 400 (SOURCES.md K*, R7, O7).
    for (provider, key_var, url_var) in [
        ("kimi", "KIMI_API_KEY", "KIMI_API_URL"),
        ("openrouter", "OPENROUTER_API_KEY", "OPENROUTER_BASE_URL"),
        ("openai", "OPENAI_API_KEY", "OPENAI_BASE_URL"),
    ] {
        window_left_for_the_answer(provider, key_var, url_var).await;
    }
}

/// Asks `provider`'s model with a window of 20,000 tokens about files that fill it: the output
/// limit sent is what the prompt leaves, not the model's 8,192.
async fn window_left_for_the_answer(provider: &str, key_var: &str, url_var: &str) {
    let fake = Fake::start();
    let home = temp_home();
    let catalog = home.join("models.toml");
    // A small window, so that files fill what the answer's reserve leaves.
    std::fs::write(
        &catalog,
        format!(
            "[[model]]\nid = \"fake-fast\"\nprovider = \"{provider}\"\ncontext_window = 20000\n\
             max_output = 8192\n"
        ),
    )
    .unwrap();
    let dir = home.canonicalize().unwrap().join("src");
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<String> = (0..8)
        .map(|n| {
            let path = dir.join(format!("part{n}.txt"));
            let text: String = (0..380)
                .map(|i| format!("the quick brown fox {n} jumps over {i}\n"))
                .collect();
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        })
        .collect();
    let catalog = catalog.display().to_string();
    let url = format!("{}/v1", fake.url);
    let daemon = Daemon::start(
        &fake,
        &[
            ("CUSTOM_API_URL", ""),
            (key_var, "provider-test-key"),
            (url_var, &url),
            ("EXAI_MODELS_FILE", &catalog),
        ],
    );
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    ask(
        &client,
        &format!("{provider}:fake-fast"),
        json!({"files": files}),
    )
    .await;
    let body = sent(&fake, "fake-fast");
    let limit = body["max_completion_tokens"].as_u64().unwrap();
    let prompt: usize = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| exai::tokens::count(m["content"].as_str().unwrap()))
        .sum();
    assert!(
        prompt > 10_000,
        "{provider}: the files fill the window: {prompt}"
    );
    assert!(
        (1_024..8_192).contains(&limit),
        "{provider}: less than the model's 8,192: {limit}"
    );
    assert!(
        prompt as u64 + limit <= 20_000,
        "{provider}: prompt {prompt} + limit {limit} within the window"
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn http2_when_asked_carries_calls_on_few_connections_and_none_waits_for_a_stream() {
    // Over plain http:// exai speaks HTTP/1.1 unless told: local servers rarely speak h2c.
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    ask(&client, "fake-fast", json!({})).await;
    assert_eq!(fake.stats()["by_http_version"], json!({"HTTP/1.1": 1}));
    client.cancel().await.unwrap();

    // `always`: h2c. One connection carries at most 100 streams (a server may refuse more on one,
    // and a request over its cap would wait unseen): the 101st call in flight opens a second.
    let fake = Fake::start();
    let daemon = Daemon::start(
        &fake,
        &[
            ("EXAI_PROVIDER_HTTP2", "always"),
            ("EXAI_PROVIDER_CONCURRENCY", "400"),
        ],
    );
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    ask(&client, "fake-fast", json!({})).await;
    let calls = spawn_chats(&client, 101, "h2 ", "fake-delay-60000");
    wait_until_async(
        "101 calls at the provider at once",
        Duration::from_secs(50),
        || (fake.stats()["in_flight"].as_u64()? == 101).then_some(()),
    )
    .await;
    let stats = fake.stats();
    assert_eq!(
        stats["by_http_version"],
        json!({"HTTP/2.0": 102}),
        "{stats}"
    );
    assert_eq!(stats["connections"], 2, "{stats}");
    for call in calls {
        call.abort();
    }
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn every_way_to_a_provider_meets_every_provider_behaviour_alike() {
    // Chat requests go on exai's own HTTP/2 connections over TLS when ALPN picks h2, and over
    // plain http:// with `always`; through reqwest otherwise (and after a TLS server picks
    // HTTP/1.1). Every scripted behaviour must end the same way on every path.
    let cases: &[(&str, &str)] = &[
        ("fake-fast", "echo: x"),
        ("fake-stream-5x10", "echo: x"),
        ("fake-json", "echo: x"),
        ("fake-comments-3", "echo: x"),
        ("fake-429-1", "echo: x"),
        ("fake-truncated", "malformed answer: EOF while parsing"),
        ("fake-nochoices", "the answer had no choices"),
        ("fake-garbage", "malformed answer"),
        ("fake-503", "answered HTTP 503: an HTML error page"),
        ("fake-401", "answered HTTP 401"),
        (
            "fake-stall-2",
            "sent nothing for 1 s while streaming the answer",
        ),
        (
            "fake-resetmid-3",
            "closed the connection before the answer was complete",
        ),
        ("fake-reset", "could not reach custom"),
        // The connection the reset closed is replaced for the next call.
        ("fake-fast", "echo: x"),
        ("fake-flood", "sent more than 64 KiB"),
        // One bound on an answer's head, whichever client read it (reqwest's HTTP/1.1 would
        // take about 400 KiB); a head too large even to decode closes an HTTP/2 connection,
        // which the next call replaces.
        ("fake-bigheaders-8", "echo: x"),
        ("fake-bigheaders-17", "over 16 KiB, more than exai reads"),
        ("fake-bigheaders-1024", "over 16 KiB, more than exai reads"),
        ("fake-fast", "echo: x"),
        (
            "fake-redirect-1",
            "answered HTTP 307, a redirect to http://127.0.0.1:1/v1/chat/completions?api_key=***; \
             exai follows no redirects",
        ),
    ];
    use exai_fake_provider::Tls;
    let ca = trust_test_ca();
    let ca = ca.to_str().unwrap();
    for (http2, tls, version) in [
        ("auto", None, "HTTP/1.1"),
        ("always", None, "HTTP/2.0"),
        ("auto", Some(Tls::Http2AndHttp1), "HTTP/2.0"),
        ("always", Some(Tls::Http2AndHttp1), "HTTP/2.0"),
        ("auto", Some(Tls::Http1Only), "HTTP/1.1"),
        ("off", Some(Tls::Http2AndHttp1), "HTTP/1.1"),
    ] {
        let (fake, url) = match tls {
            None => {
                let fake = Fake::start();
                let url = format!("{}/v1", fake.url);
                (fake, url)
            }
            Some(tls) => {
                let fake = Fake::start_tls(tls);
                let url = format!("{}/v1", fake.tls_url());
                (fake, url)
            }
        };
        let mode = format!("{http2} {tls:?}");
        let daemon = Daemon::start(
            &fake,
            &[
                ("CUSTOM_API_URL", &url),
                ("EXAI_PROVIDER_CA_FILE", ca),
                ("EXAI_PROVIDER_HTTP2", http2),
                ("EXAI_RETRY_ATTEMPTS", "2"),
                ("EXAI_PROVIDER_IDLE_TIMEOUT_S", "1"),
                ("EXAI_MAX_ANSWER_BYTES", "65536"),
            ],
        );
        let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
        // Cancelling resets the stream (or closes the HTTP/1.1 connection) at once
        // (first: the cases below end requests early too).
        let handle = cancellable_call(&client, chat("stop", "fake-hang")).await;
        at_provider(&fake, 1).await;
        handle.cancel(None).await.unwrap();
        provider_aborted(&fake, 1).await;
        for (model, expected) in cases {
            let result = client.call_tool(chat("x", model)).await.unwrap();
            let text = all_text_of(&result);
            assert!(text.contains(expected), "{mode}, {model}: {text}");
            assert_eq!(
                result.is_error,
                Some(!expected.starts_with("echo")),
                "{mode}, {model}: {text}"
            );
        }
        let stats = fake.stats();
        // An answer exai refuses is not asked for again.
        assert_eq!(stats["by_model"]["fake-bigheaders-1024"], 1, "{mode}");
        let versions = stats["by_http_version"].clone();
        assert_eq!(
            versions.as_object().unwrap().keys().collect::<Vec<_>>(),
            [version],
            "{mode}: {versions}"
        );
        client.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn a_provider_s_certificate_is_checked_on_every_path() {
    // Without the test CA trusted, the fake's certificate is refused, whichever client makes
    // the request; with `always`, a TLS server that will not speak HTTP/2 is named as such.
    use exai_fake_provider::Tls;
    for (http2, tls, expected) in [
        (
            "auto",
            Tls::Http2AndHttp1,
            "invalid peer certificate: UnknownIssuer",
        ),
        (
            "off",
            Tls::Http2AndHttp1,
            "invalid peer certificate: UnknownIssuer",
        ),
    ] {
        let fake = Fake::start_tls(tls);
        let url = format!("{}/v1", fake.tls_url());
        let daemon = Daemon::start(
            &fake,
            &[
                ("CUSTOM_API_URL", &url),
                ("EXAI_PROVIDER_HTTP2", http2),
                ("EXAI_RETRY_ATTEMPTS", "1"),
            ],
        );
        let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
        let result = client.call_tool(chat("x", "fake-fast")).await.unwrap();
        let text = all_text_of(&result);
        assert_eq!(result.is_error, Some(true), "{http2}: {text}");
        assert!(text.contains("could not reach custom"), "{http2}: {text}");
        assert!(text.contains(expected), "{http2}: {text}");
        assert_eq!(fake.stats()["requests"], 0, "{http2}: nothing reached it");
        client.cancel().await.unwrap();
    }
    let fake = Fake::start_tls(Tls::Http1Only);
    let url = format!("{}/v1", fake.tls_url());
    let ca = trust_test_ca();
    let daemon = Daemon::start(
        &fake,
        &[
            ("CUSTOM_API_URL", &url),
            ("EXAI_PROVIDER_CA_FILE", ca.to_str().unwrap()),
            ("EXAI_PROVIDER_HTTP2", "always"),
            ("EXAI_RETRY_ATTEMPTS", "1"),
        ],
    );
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let result = client.call_tool(chat("x", "fake-fast")).await.unwrap();
    let text = all_text_of(&result);
    assert_eq!(result.is_error, Some(true), "{text}");
    assert!(text.contains("does not speak HTTP/2 over TLS"), "{text}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_connection_that_dies_silently_is_dropped_at_its_first_unanswered_ping() {
    // `fake-wedge` stops its connection dead: no byte moves, nothing is closed, as when a
    // network path dies or a middlebox forgets the flow while a model thinks. Without pings the
    // call would wait for the idle timeout (60 s here); with them it fails within seconds, and
    // the next call gets a new connection.
    let fake = Fake::start();
    let daemon = Daemon::start(
        &fake,
        &[
            ("EXAI_PROVIDER_HTTP2", "always"),
            ("EXAI_PROVIDER_KEEPALIVE_S", "1"),
            ("EXAI_PROVIDER_IDLE_TIMEOUT_S", "60"),
            ("EXAI_RETRY_ATTEMPTS", "1"),
        ],
    );
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let asked = std::time::Instant::now();
    let result = client.call_tool(chat("x", "fake-wedge")).await.unwrap();
    let took = asked.elapsed();
    let text = all_text_of(&result);
    assert_eq!(result.is_error, Some(true), "{text}");
    assert!(text.contains("could not reach custom"), "{text}");
    assert!(text.contains("keep-alive timed out"), "{text}");
    assert!(
        took < Duration::from_secs(15),
        "failed after {took:?}: {text}"
    );
    let after = client.call_tool(chat("x", "fake-fast")).await.unwrap();
    assert_eq!(text_of(&after), "echo: x");
    assert_eq!(fake.stats()["connections"], 2, "{}", fake.stats());
    client.cancel().await.unwrap();
}
