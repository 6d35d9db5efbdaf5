//! `dry_run: true` through the real binary: every tool that asks a model answers with the exact
//! request it would send (model, endpoint, messages with the prompt and the files as embedded),
//! secrets masked, and the fake provider receives nothing; `exai call … --dry-run` prints it.

use crate::common;

use common::*;
use serde_json::{Value, json};

/// The custom endpoint's key: it must never appear in a dry run's answer.
const KEY: &str = "sk-dry-run-secret-0123456789abcdef";

fn project() -> std::path::PathBuf {
    let dir = temp_home().canonicalize().unwrap();
    std::fs::write(dir.join("cache.rs"), "pub fn get() {\n    None\n}\n").unwrap();
    dir
}

fn workflow(step: &str, file: &str, model: &str) -> Value {
    json!({
        "step": step, "step_number": 1, "total_steps": 1, "next_step_required": false,
        "findings": "get() ignores the store", "relevant_files": [file], "model": model,
        "dry_run": true,
    })
}

#[tokio::test]
async fn a_dry_run_of_each_model_calling_tool_sends_nothing_and_shows_the_request() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[("CUSTOM_API_KEY", KEY)]);
    let dir = project();
    let file = path(&dir.join("cache.rs"));
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let mut cases = vec![(
        "chat",
        json!({"prompt": "Is the dry run honest?", "files": [file], "model": "fake-fast",
               "temperature": 0.3, "dry_run": true}),
        "Is the dry run honest?",
    )];
    for tool in [
        "thinkdeep",
        "analyze",
        "codereview",
        "refactor",
        "testgen",
        "secaudit",
        "debug",
    ] {
        cases.push((
            tool,
            workflow("Look at the cache", &file, "fake-fast"),
            "Look at the cache",
        ));
    }
    // precommit reads the repository itself: a staged change is what the plan must show.
    git(&dir, &["init", "-q", "-b", "main"]);
    git(&dir, &["add", "."]);
    git(&dir, &["commit", "-q", "-m", "start"]);
    std::fs::write(
        dir.join("cache.rs"),
        "pub fn get() {\n    None\n}\n// staged\n",
    )
    .unwrap();
    git(&dir, &["add", "cache.rs"]);
    let mut precommit = workflow("Check the change", &file, "fake-fast");
    precommit["path"] = json!(path(&dir));
    cases.push(("precommit", precommit, "+// staged"));
    cases.push((
        "consensus",
        json!({"step": "Move the cache to Redis?", "relevant_files": [file], "dry_run": true,
               "models": [{"model": "fake-fast", "stance": "for"},
                          {"model": "fake-delay-5", "stance": "against"}]}),
        "Move the cache to Redis?",
    ));
    for (tool, args, prompt) in cases {
        let result = client.call_tool(call(tool, args)).await.unwrap();
        let text = all_text_of(&result);
        assert_eq!(result.is_error, Some(false), "{tool}: {text}");
        assert!(text.starts_with("Dry run:"), "{tool}: {text}");
        assert!(!text.contains(KEY), "{tool} shows the key: {text}");
        assert!(text.contains("Bearer ***"), "{tool}: {text}");
        let planned = result.structured_content.clone().unwrap();
        let requests = planned["requests"].as_array().unwrap();
        assert_eq!(
            requests.len(),
            if tool == "consensus" { 2 } else { 1 },
            "{tool}: {planned}"
        );
        for request in requests {
            let url = request["request"]["url"].as_str().unwrap();
            assert_eq!(url, format!("{}/v1/chat/completions", fake.url), "{tool}");
            let body = &request["request"]["body"];
            assert_eq!(body["model"], request["model"], "{tool}");
            let question = body["messages"].as_array().unwrap().last().unwrap()["content"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(question.contains(prompt), "{tool}: {question}");
            assert!(question.contains("    2│     None"), "{tool}: {question}");
        }
        if tool == "chat" {
            assert_eq!(requests[0]["request"]["body"]["temperature"], 0.3);
        }
        if tool == "consensus" {
            let models: Vec<&str> = requests
                .iter()
                .map(|r| r["model"].as_str().unwrap())
                .collect();
            assert!(
                models.contains(&"fake-fast") && models.contains(&"fake-delay-5"),
                "{models:?}"
            );
        }
    }
    let stats = fake.stats();
    assert_eq!(
        stats["requests"], 0,
        "nothing reached the provider: {stats}"
    );
    // Recorded like any call: succeeded, the planned request its answer.
    let rows = daemon.read_store(|store| store.list(&Default::default()).unwrap());
    let chat = rows.iter().find(|r| r.tool == "chat").unwrap();
    assert_eq!(chat.state.as_str(), "succeeded");
    assert!(chat.result.as_deref().unwrap().contains("Dry run"));
    assert!(!daemon.store_contents().iter().any(|c| c.contains(KEY)));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn tools_that_ask_no_model_say_so_and_a_bad_flag_is_refused() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    for tool in ["version", "listmodels"] {
        let result = client
            .call_tool(call(tool, json!({"dry_run": true})))
            .await
            .unwrap();
        let text = all_text_of(&result);
        assert!(text.contains(&format!("{tool} asks no model")), "{text}");
    }
    let result = client
        .call_tool(call("chat", json!({"prompt": "x", "dry_run": "yes"})))
        .await
        .unwrap();
    assert!(error_of(&result).contains("dry_run must be true or false"));
    // Only the tools that ask a model declare it.
    let tools = client.list_all_tools().await.unwrap();
    let declares = |name: &str| {
        let tool = tools.iter().find(|t| t.name == name).unwrap();
        tool.input_schema
            .get("properties")
            .and_then(|p| p.get("dry_run"))
            .is_some()
    };
    assert!(declares("chat") && declares("consensus") && declares("codereview"));
    assert!(!declares("version") && !declares("planner"));
    assert_eq!(fake.stats()["requests"], 0);
    client.cancel().await.unwrap();
}

#[test]
fn exai_call_dry_run_prints_the_request() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[("CUSTOM_API_KEY", KEY)]);
    let (ok, text) = daemon.cli(&["call", "chat", "--arg", "prompt=dry hello", "--dry-run"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("Dry run: chat would send 1 request(s)"),
        "{text}"
    );
    assert!(text.contains("dry hello"), "{text}");
    assert!(text.contains("/v1/chat/completions"), "{text}");
    assert!(text.contains("\"model\": \"fake-fast\""), "{text}");
    assert!(!text.contains(KEY), "{text}");
    assert_eq!(fake.stats()["requests"], 0);
}
