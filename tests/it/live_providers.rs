//! A check of your own setup against the real services: one tiny request (thinking off, at most
//! 1,024 output tokens) to each built-in provider whose key is set, through the real binary with
//! your environment (keys, `*_API_URL`/`*_BASE_URL`, config file). Ignored by default; run it with
//!
//! ```text
//! GLM_API_KEY=… KIMI_API_KEY=… OPENAI_API_KEY=… OPENROUTER_API_KEY=… \
//!     cargo test --test it live_providers -- --ignored --nocapture
//! ```
//!
//! (any subset of the keys). Each provider is asked with its catalog's fast model, else its
//! best-scoring one, never a deprecated one; `EXAI_LIVE_MODELS="glm=glm-5.2,kimi=kimi-k2.6"`
//! names others. Without any key it says so and passes. Keys are never printed.

use crate::common;

use common::*;
use exai::config::BUILT_IN_PROVIDERS;
use exai::providers::Catalog;
use serde_json::json;

/// The model to ask on `provider`: named in `EXAI_LIVE_MODELS`, else the catalog's pick.
fn model_for(provider: &str) -> Option<String> {
    let named = std::env::var("EXAI_LIVE_MODELS").unwrap_or_default();
    if let Some(model) = named
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .find(|(p, _)| p.trim() == provider)
        .map(|(_, m)| m.trim().to_string())
    {
        return Some(model);
    }
    let catalog = Catalog::built_in();
    let mut models: Vec<_> = catalog
        .of_provider(provider)
        .filter(|m| m.deprecated.is_none())
        .collect();
    models.sort_by_key(|m| std::cmp::Reverse((m.fast, m.score)));
    models.first().map(|m| m.id.clone())
}

#[tokio::test]
#[ignore = "talks to the real providers with your keys; see the module documentation"]
async fn one_tiny_request_per_configured_provider() {
    let configured: Vec<&str> = BUILT_IN_PROVIDERS
        .iter()
        .filter(|p| {
            p.key_vars
                .iter()
                .any(|var| std::env::var(var).is_ok_and(|v| !v.trim().is_empty()))
        })
        .map(|p| p.name)
        .collect();
    if configured.is_empty() {
        let vars: Vec<&str> = BUILT_IN_PROVIDERS
            .iter()
            .flat_map(|p| p.key_vars.iter().copied())
            .collect();
        eprintln!(
            "live check skipped: no provider key is set (set any of {})",
            vars.join(", ")
        );
        return;
    }
    // The fake stands in for the custom endpoint only, which this check leaves out.
    let fake = Fake::start();
    let daemon = Daemon::start(
        &fake,
        &[
            ("CUSTOM_API_URL", ""),
            ("EXAI_TOOL_MAX_OUTPUT", "chat=1024"),
        ],
    );
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let mut failed = Vec::new();
    for provider in configured {
        let Some(model) = model_for(provider) else {
            failed.push(format!("{provider}: no model to ask"));
            continue;
        };
        let result = client
            .call_tool(call(
                "chat",
                json!({
                    "prompt": "Reply with the single word: pong",
                    "model": format!("{provider}:{model}"),
                    "thinking_mode": "minimal",
                }),
            ))
            .await
            .unwrap();
        let record = daemon.final_record(&call_id_of(&result));
        if result.is_error == Some(true) {
            failed.push(format!("{provider} ({model}): {}", all_text_of(&result)));
            continue;
        }
        eprintln!(
            "{provider} ({model}): ok in {} ms, {} tokens in, {} out — {:?}",
            record.duration_ms.unwrap_or_default(),
            record.tokens_in.unwrap_or_default(),
            record.tokens_out.unwrap_or_default(),
            text_of(&result).chars().take(80).collect::<String>()
        );
        if text_of(&result).trim().is_empty() {
            failed.push(format!("{provider} ({model}): an empty answer"));
        }
    }
    client.cancel().await.unwrap();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
