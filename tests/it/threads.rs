//! Threads you can find again, through the real binary: `exai threads` lists conversations
//! (newest first, searched by words of their first prompt, `%` and `_` literal), `threads show`
//! prints one as Markdown and `threads export` as JSON; the `threads` tool finds a thread by
//! its words and hands back the continuation id, and never shows a person another's threads.

use crate::common;
use crate::users::{WsClient, add_user};

use common::*;
use serde_json::{Value, json};

/// The continuation id a chat answer names.
fn continuation_of(result: &rmcp::model::CallToolResult) -> String {
    result.structured_content.as_ref().unwrap()["continuation_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `exai ARGS` that must succeed; its output.
fn cli_ok(daemon: &Daemon, args: &[&str]) -> String {
    let (ok, output) = daemon.cli(args);
    assert!(ok, "exai {args:?}: {output}");
    output
}

/// The continuation ids `exai threads ARGS --json` lists, in order.
fn listed(daemon: &Daemon, args: &[&str]) -> Vec<String> {
    let mut args = args.to_vec();
    args.insert(0, "threads");
    args.push("--json");
    let listing: Value = serde_json::from_str(&cli_ok(daemon, &args)).unwrap();
    listing["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["continuation_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn threads_are_listed_shown_exported_and_found_by_the_words_of_their_first_prompt() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let ask = |args: Value| {
        let client = &client;
        async move {
            let result = client.call_tool(chat_with(args)).await.unwrap();
            assert_eq!(result.is_error, Some(false), "{}", all_text_of(&result));
            continuation_of(&result)
        }
    };
    let flaky =
        ask(json!({"prompt": "Why does the Flaky login test fail on CI?", "model": "fake-fast"}))
            .await;
    let again =
        ask(json!({"prompt": "and on macOS?", "model": "fake-fast", "continuation_id": flaky}))
            .await;
    assert_eq!(again, flaky);
    let coverage = ask(json!({"prompt": "Is 100% coverage worth it?", "model": "fake-fast"})).await;

    // Newest first: the coverage thread was the last to get a turn.
    assert_eq!(listed(&daemon, &[]), [coverage.clone(), flaky.clone()]);
    let table = cli_ok(&daemon, &["threads"]);
    assert!(
        table.contains(&flaky) && table.contains("Why does the Flaky login test fail on CI?"),
        "{table}"
    );
    let listing: Value =
        serde_json::from_str(&cli_ok(&daemon, &["threads", "--json", "--limit", "1"])).unwrap();
    let newest = &listing["threads"][0];
    assert_eq!(listing["threads"].as_array().unwrap().len(), 1);
    assert_eq!(
        (newest["turns"].clone(), newest["tools"].clone()),
        (json!(2), json!(["chat"]))
    );
    // The fake's model has no price: the thread's one call is of unknown cost, not $0.
    assert_eq!(
        (
            newest["cost_usd_micros"].clone(),
            newest["unpriced_calls"].clone()
        ),
        (json!(0), json!(1))
    );

    // Words, any case, all of them; as arguments or with --find.
    assert_eq!(listed(&daemon, &["flaky", "LOGIN"]), [flaky.as_str()]);
    assert_eq!(listed(&daemon, &["--find", "login test"]), [flaky.as_str()]);
    assert!(listed(&daemon, &["flaky", "coverage"]).is_empty());
    // `%` and `_` are literal: only the thread that holds a `%` matches it.
    assert_eq!(listed(&daemon, &["%"]), [coverage.as_str()]);
    assert!(listed(&daemon, &["_"]).is_empty());
    assert!(listed(&daemon, &["--since", "1h", "100%c"]).is_empty());
    assert!(
        cli_ok(&daemon, &["threads", "nothing-like-this"]).contains("no thread's first prompt")
    );

    // One thread as Markdown, by the first characters of its id, or by its last.
    let by_last = cli_ok(&daemon, &["threads", "show", &flaky[flaky.len() - 8..]]);
    assert!(
        by_last.starts_with(&format!("# Thread {flaky}")),
        "{by_last}"
    );
    let shown = cli_ok(&daemon, &["threads", "show", &flaky[..8]]);
    assert!(shown.starts_with(&format!("# Thread {flaky}")), "{shown}");
    assert!(shown.contains("## 1. agent · chat · "), "{shown}");
    assert!(
        shown.contains("## 2. model · chat · fake-fast · "),
        "{shown}"
    );
    assert!(
        shown.contains("Why does the Flaky login test fail on CI?"),
        "{shown}"
    );
    assert!(
        shown.contains("## 3. agent · chat") && shown.contains("and on macOS?"),
        "{shown}"
    );
    assert!(
        shown.contains("- cost: $0.000000 + 2 call(s) of unknown cost"),
        "{shown}"
    );

    // Complete, for scripts.
    let exported: Value =
        serde_json::from_str(&cli_ok(&daemon, &["threads", "export", &flaky])).unwrap();
    assert_eq!(exported["continuation_id"], flaky.as_str());
    let turns = exported["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 4);
    assert_eq!(
        (
            turns[0]["role"].clone(),
            turns[1]["role"].clone(),
            turns[1]["model"].clone()
        ),
        (json!("user"), json!("assistant"), json!("fake-fast"))
    );
    assert_eq!(turns[2]["content"], "and on macOS?");
    let as_markdown = cli_ok(&daemon, &["threads", "export", &flaky, "--format", "md"]);
    assert_eq!(as_markdown, shown);

    let (ok, unknown) = daemon.cli(&["threads", "show", "ffffffff"]);
    assert!(
        !ok && unknown.contains("no thread with id \"ffffffff\""),
        "{unknown}"
    );

    // The tool finds it by its words and hands back the id that continues it.
    let found = client
        .call_tool(call("threads", json!({"find": "flaky LOGIN"})))
        .await
        .unwrap();
    assert_eq!(found.is_error, Some(false), "{}", all_text_of(&found));
    let threads = &found.structured_content.as_ref().unwrap()["threads"];
    assert_eq!(threads.as_array().unwrap().len(), 1, "{threads}");
    assert_eq!(threads[0]["continuation_id"], flaky.as_str());
    assert!(text_of(&found).contains(&format!("continuation_id {flaky}")));
    let recent = client
        .call_tool(call("threads", json!({"limit": 5})))
        .await
        .unwrap();
    assert_eq!(
        recent.structured_content.as_ref().unwrap()["threads"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let percent = client
        .call_tool(call("threads", json!({"find": "%"})))
        .await
        .unwrap();
    assert_eq!(
        percent.structured_content.as_ref().unwrap()["threads"][0]["continuation_id"],
        coverage.as_str()
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_person_finds_only_their_own_threads_and_the_owner_sees_all() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let home = daemon.home.clone();
    let (ada_token, bob_token) = (add_user(&home, "ada", false), add_user(&home, "bob", false));
    let mut ada = WsClient::connect(&daemon, &ada_token).await;
    let mut bob = WsClient::connect(&daemon, &bob_token).await;
    let adas = ada
        .chat(json!({"prompt": "ada: the flaky deploy", "model": "fake-fast"}))
        .await["structuredContent"]["continuation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let bobs = bob
        .chat(json!({"prompt": "bob: the flaky deploy", "model": "fake-fast"}))
        .await["structuredContent"]["continuation_id"]
        .as_str()
        .unwrap()
        .to_string();
    for (client, own) in [(&mut ada, &adas), (&mut bob, &bobs)] {
        let found = client
            .tool("threads", json!({"find": "flaky deploy"}))
            .await;
        let threads = found["structuredContent"]["threads"]
            .as_array()
            .unwrap()
            .clone();
        let ids: Vec<&str> = threads
            .iter()
            .map(|t| t["continuation_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [own.as_str()], "{found}");
    }
    // The owner (the CLI on this machine) sees everyone's, with whose they are.
    assert_eq!(
        listed(&daemon, &["flaky", "deploy"]),
        [bobs.clone(), adas.clone()]
    );
    let table = cli_ok(&daemon, &["threads"]);
    assert!(table.contains("ada") && table.contains("bob"), "{table}");
}
