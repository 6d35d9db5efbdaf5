//! Prompt caching, through the real binary: a thread's next turn is sent starting with the
//! exact bytes of the turn before (files included, each with the turn that named it), so the
//! providers' prefix caches hit; OpenAI requests carry one `prompt_cache_key` per thread; cached
//! input tokens reach the record, the thread's cost and `exai usage`.

use crate::common;

use common::*;
use serde_json::{Value, json};

/// The raw body the fake received last for `model`, and its `messages` array as sent (the
/// fake keeps the order of keys, so serializing them again gives the bytes that came).
fn sent(fake: &Fake, model: &str) -> (String, String, Vec<Value>) {
    let body = last_body(fake, model);
    let raw = body["_raw"].as_str().unwrap().to_string();
    let parsed: Value = serde_json::from_str(&raw).unwrap();
    let messages = parsed["messages"].as_array().unwrap().clone();
    let serialized = serde_json::to_string(&messages).unwrap();
    assert!(
        raw.contains(&format!("\"messages\":{serialized}")),
        "the messages serialize back to the bytes sent"
    );
    (raw, serialized, messages)
}

fn continuation_of(result: &rmcp::model::CallToolResult) -> String {
    assert_eq!(result.is_error, Some(false), "{}", all_text_of(result));
    result.structured_content.as_ref().unwrap()["continuation_id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_threads_next_turn_starts_with_the_bytes_of_the_turn_before_and_one_cache_key() {
    let fake = Fake::start();
    let daemon = every_provider(&fake, &[]);
    let project = temp_home().canonicalize().unwrap();
    let (first_file, second_file) = (project.join("first.rs"), project.join("second.rs"));
    std::fs::write(&first_file, "fn first() -> u32 {\n    1\n}\n").unwrap();
    std::fs::write(&second_file, "fn second() -> u32 {\n    2\n}\n").unwrap();
    // A directory: its files are sent in path order wherever they are named again.
    let dir = project.join("lib");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["x.rs", "y.rs", "w.rs"] {
        std::fs::write(dir.join(name), format!("// {name}\n")).unwrap();
    }
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let model = "openai:fake-fast";

    let first = client
        .call_tool(chat_with(json!({
            "prompt": "What does first() return?", "model": model,
            "files": [path(&first_file), path(&dir)],
        })))
        .await
        .unwrap();
    let thread = continuation_of(&first);
    let (_, turn_one, one) = sent(&fake, "fake-fast");
    let key = last_body(&fake, "fake-fast")["prompt_cache_key"].clone();

    let second = client
        .call_tool(chat_with(json!({
            "prompt": "And second()?", "model": model, "continuation_id": thread,
            "files": [path(&second_file), path(&dir.join("y.rs"))],
        })))
        .await
        .unwrap();
    assert_eq!(continuation_of(&second), thread);
    let (raw_two, _, two) = sent(&fake, "fake-fast");

    // The whole first request's messages, byte for byte, open the second's: system, the first
    // question with its file as first sent; then the answer and the new question with its file.
    let open_prefix = turn_one.strip_suffix(']').unwrap();
    assert!(
        raw_two.contains(&format!("\"messages\":{open_prefix},")),
        "turn 2 must start with turn 1's messages:\n{turn_one}\n---\n{raw_two}"
    );
    assert_eq!(two.len(), one.len() + 2);
    let first_question = two[1]["content"].as_str().unwrap();
    assert!(
        first_question.contains("    2│     1")
            && first_question.ends_with("What does first() return?"),
        "{first_question}"
    );
    let (w, x, y) = (
        first_question.find("// w.rs").unwrap(),
        first_question.find("// x.rs").unwrap(),
        first_question.find("// y.rs").unwrap(),
    );
    assert!(
        w < x && x < y,
        "a directory's files in path order: {first_question}"
    );
    let new_question = two[3]["content"].as_str().unwrap();
    assert!(
        new_question.contains("    2│     2")
            && !new_question.contains("    2│     1")
            && !new_question.contains("// y.rs")
            && new_question.ends_with("And second()?"),
        "each file once, with the turn that named it: {new_question}"
    );

    // A third turn naming the first file again keeps the prefix of the second.
    let (_, turn_two, _) = sent(&fake, "fake-fast");
    let third = client
        .call_tool(chat_with(json!({
            "prompt": "Compare them.", "model": model, "continuation_id": thread,
            "files": [path(&first_file)],
        })))
        .await
        .unwrap();
    assert_eq!(continuation_of(&third), thread);
    let (raw_three, _, _) = sent(&fake, "fake-fast");
    assert!(
        raw_three.contains(&format!(
            "\"messages\":{},",
            turn_two.strip_suffix(']').unwrap()
        )),
        "turn 3 must start with turn 2's messages"
    );

    // One prompt_cache_key per thread: the same on every turn, another for another thread, and
    // nothing of the thread id or the user in it.
    let key = key
        .as_str()
        .expect("OpenAI requests carry prompt_cache_key")
        .to_string();
    assert_eq!(
        last_body(&fake, "fake-fast")["prompt_cache_key"],
        key.as_str()
    );
    assert!(
        !key.contains(&thread) && !key.contains(&thread[..8]),
        "{key}"
    );
    let other = client
        .call_tool(chat_with(json!({"prompt": "Unrelated.", "model": model})))
        .await
        .unwrap();
    continuation_of(&other);
    let other_key = last_body(&fake, "fake-fast")["prompt_cache_key"].clone();
    assert!(
        other_key.is_string() && other_key != key.as_str(),
        "{other_key}"
    );

    // Kimi and GLM cache prefixes by themselves and document no key: none is sent.
    for provider_model in ["kimi:fake-fast", "glm:fake-fast"] {
        let result = client
            .call_tool(chat_with(
                json!({"prompt": "hi", "model": provider_model, "continuation_id": thread}),
            ))
            .await
            .unwrap();
        continuation_of(&result);
        let body = last_body(&fake, "fake-fast");
        assert!(
            body.get("prompt_cache_key").is_none(),
            "{provider_model}: {body}"
        );
    }
    client.cancel().await.unwrap();
}

/// 800 fresh × $1.40 + 200 cached × $0.26 + 500 out × $4.40 per million: $0.003372.
const CACHED_MODEL: &str = "fake-usage-1000x500c200";

#[tokio::test]
async fn cached_input_tokens_reach_the_record_the_threads_cost_and_exai_usage() {
    let fake = Fake::start();
    let home = temp_home();
    let models = home.join("models.toml");
    std::fs::write(
        &models,
        format!(
            "[[model]]\nid = \"{CACHED_MODEL}\"\nprovider = \"custom\"\n\
             price = {{ input = 1.40, cached_input = 0.26, output = 4.40 }}\n"
        ),
    )
    .unwrap();
    let daemon = Daemon::start_in(
        home,
        "127.0.0.1:0",
        &fake,
        &[("EXAI_MODELS_FILE", &path(&models))],
    );
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let first = client
        .call_tool(chat_with(json!({"prompt": "one", "model": CACHED_MODEL})))
        .await
        .unwrap();
    let thread = continuation_of(&first);
    let second = client
        .call_tool(chat_with(
            json!({"prompt": "two", "model": CACHED_MODEL, "continuation_id": thread}),
        ))
        .await
        .unwrap();
    continuation_of(&second);
    let record = daemon.final_record(&call_id_of(&second));
    assert_eq!(
        (record.cached_tokens, record.cost_usd_micros),
        (Some(200), Some(3372))
    );

    let (ok, listing) = daemon.cli(&["threads", "--json"]);
    assert!(ok, "{listing}");
    let listing: Value = serde_json::from_str(&listing).unwrap();
    assert_eq!(listing["threads"][0]["continuation_id"], thread.as_str());
    assert_eq!(listing["threads"][0]["cost_usd_micros"], 2 * 3372);
    assert_eq!(listing["threads"][0]["unpriced_calls"], 0);

    let (ok, usage) = daemon.cli(&["usage", "--json"]);
    assert!(ok, "{usage}");
    let usage: Value = serde_json::from_str(&usage).unwrap();
    assert_eq!(usage["total"]["cached_tokens"], 400);
    assert_eq!(usage["total"]["cost_usd_micros"], 2 * 3372);
    let by_model = usage["by_model"].as_array().unwrap();
    assert_eq!(by_model[0]["key"], CACHED_MODEL);
    assert_eq!(by_model[0]["cached_tokens"], 400);
    let (ok, table) = daemon.cli(&["usage", "--by", "model"]);
    assert!(ok, "{table}");
    let row = table
        .lines()
        .find(|line| line.starts_with(CACHED_MODEL))
        .unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    // MODEL, CALLS, COST, TOKENS IN, CACHED, TOKENS OUT.
    assert_eq!(
        cells[1..],
        ["2", "$0.006744", "2,000", "400", "1,000"],
        "{table}"
    );
    client.cancel().await.unwrap();
}
