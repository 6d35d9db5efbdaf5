//! chat with files and conversation memory, through the real binary.

use crate::common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn files_are_embedded_line_numbered_and_secrets_stay_home() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let project = temp_home().canonicalize().unwrap();
    std::fs::create_dir_all(project.join("src")).unwrap();
    std::fs::write(
        project.join("src/lib.rs"),
        "pub fn answer() -> u32 {\n    42\n}\n",
    )
    .unwrap();
    std::fs::write(project.join(".env"), "API_KEY=do-not-send-me").unwrap();
    std::fs::write(
        project.join("logo.png"),
        [0x89u8, b'P', b'N', b'G', 0, 0, 1],
    )
    .unwrap();
    std::fs::create_dir_all(project.join(".ssh")).unwrap();
    std::fs::write(project.join(".ssh/id_ed25519"), "PRIVATE").unwrap();
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let result = client
        .call_tool(chat_with(json!({
            "prompt": "review this",
            "model": "fake-fast",
            "files": [project.display().to_string(), project.join(".ssh/id_ed25519").display().to_string()],
        })))
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(false), "{}", all_text_of(&result));
    let sent = fake.last_messages("fake-fast");
    let question = sent.last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        question.contains("    2│     42"),
        "line-numbered: {question}"
    );
    assert!(question.ends_with("review this"));
    assert!(!question.contains("do-not-send-me") && !question.contains("PRIVATE"));
    let notes = all_text_of(&result);
    assert!(notes.contains("logo.png — binary file"), "{notes}");
    assert!(
        notes.contains("id_ed25519 — credentials directory"),
        "{notes}"
    );
    let structured = result.structured_content.clone().unwrap();
    assert_eq!(structured["files_embedded"], 1);

    let relative = client
        .call_tool(chat_with(
            json!({"prompt": "x", "model": "fake-fast", "files": ["src/lib.rs"]}),
        ))
        .await
        .unwrap();
    assert_eq!(relative.is_error, Some(true));
    assert!(
        text_of(&relative).contains("\"src/lib.rs\" is not an absolute path"),
        "{}",
        text_of(&relative)
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_conversation_continues_across_calls_and_a_daemon_restart() {
    let fake = Fake::start();
    let home = temp_home();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut daemon = Daemon::start_in(home.clone(), &listen, &fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let first = client
        .call_tool(chat_with(
            json!({"prompt": "remember 42", "model": "fake-fast"}),
        ))
        .await
        .unwrap();
    let thread = first.structured_content.clone().unwrap()["continuation_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(all_text_of(&first).contains(&format!("continuation_id: {thread}")));
    let second = client
        .call_tool(chat_with(
            json!({"prompt": "which number?", "model": "fake-fast", "continuation_id": thread}),
        ))
        .await
        .unwrap();
    assert_eq!(
        second.structured_content.clone().unwrap()["continuation_id"],
        thread.as_str()
    );
    let sent = fake.last_messages("fake-fast");
    let roles: Vec<&str> = sent.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(sent[1]["content"], "remember 42");
    assert_eq!(sent[2]["content"], "echo: remember 42");

    daemon.signal("-TERM");
    wait_until(
        "the daemon to stop",
        std::time::Duration::from_secs(10),
        || daemon.proc.as_mut().unwrap().0.try_wait().unwrap(),
    );
    let _daemon = Daemon::start_in(home, &listen, &fake, &[]);
    let third = client
        .call_tool(chat_with(
            json!({"prompt": "and now?", "model": "fake-fast", "continuation_id": thread}),
        ))
        .await
        .unwrap();
    assert_eq!(third.is_error, Some(false), "{}", all_text_of(&third));
    assert_eq!(
        fake.last_messages("fake-fast").len(),
        6,
        "the thread outlived the daemon"
    );

    let unknown = client
        .call_tool(chat_with(json!({"prompt": "x", "model": "fake-fast", "continuation_id": "01a2132d-05c7-76ba-ab75-235da0d3ad5f"})))
        .await
        .unwrap();
    assert_eq!(unknown.is_error, Some(true));
    assert!(
        text_of(&unknown).contains("expired or never existed"),
        "{}",
        text_of(&unknown)
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn big_prompts_come_back_as_files_and_big_answers_are_cut_but_kept() {
    let fake = Fake::start();
    let daemon = Daemon::start(
        &fake,
        &[
            ("EXAI_PROMPT_SIZE_LIMIT", "2000"),
            ("MAX_MCP_OUTPUT_TOKENS", "1000"),
        ],
    );
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let long_prompt = "please consider this. ".repeat(200);
    let asked = client
        .call_tool(chat_with(
            json!({"prompt": long_prompt, "model": "fake-fast"}),
        ))
        .await
        .unwrap();
    assert_eq!(
        asked.structured_content.clone().unwrap()["status"],
        "resend_prompt"
    );
    assert!(
        text_of(&asked).contains("prompt.txt"),
        "{}",
        text_of(&asked)
    );
    let dir = temp_home().canonicalize().unwrap();
    std::fs::write(dir.join("prompt.txt"), &long_prompt).unwrap();
    // As the handoff says: the prompt may be left out when the file holds it.
    let answered = client
        .call_tool(chat_with(
            json!({"model": "fake-fast", "files": [dir.join("prompt.txt").display().to_string()]}),
        ))
        .await
        .unwrap();
    assert_eq!(text_of(&answered), format!("echo: {long_prompt}"));

    let huge = "word ".repeat(3000);
    std::fs::write(dir.join("prompt.txt"), &huge).unwrap();
    let cut = client
        .call_tool(chat_with(
            json!({"prompt": "", "model": "fake-fast", "files": [dir.join("prompt.txt").display().to_string()]}),
        ))
        .await
        .unwrap();
    assert!(exai::tokens::count(&text_of(&cut)) <= 1000);
    let all = all_text_of(&cut);
    let id = call_id_of(&cut);
    assert!(
        all.contains(&format!("The whole answer is kept: `exai calls show {id}`")),
        "{all}"
    );
    let thread = cut.structured_content.clone().unwrap()["continuation_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        all.contains(&format!("continuation_id: {thread}")),
        "the thread survives the cut in the text: {all}"
    );
    let record = daemon.final_record(&id);
    assert!(
        record.result.unwrap().contains(huge.trim_end()),
        "the record keeps the whole answer"
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn the_thread_limit_counts_exchanges_says_what_it_dropped_and_replays_from_a_question() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[("EXAI_THREAD_MAX_TURNS", "2")]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let mut thread: Option<String> = None;
    let mut texts = Vec::new();
    for question in ["first?", "second?", "third?"] {
        let mut args = json!({"prompt": question, "model": "fake-fast"});
        if let Some(id) = &thread {
            args["continuation_id"] = json!(id);
        }
        let result = client.call_tool(chat_with(args)).await.unwrap();
        thread = Some(
            result.structured_content.clone().unwrap()["continuation_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        texts.push(all_text_of(&result));
    }
    // Two exchanges (four messages) fit: nothing is dropped before the third.
    assert!(!texts[1].contains("were dropped"), "{}", texts[1]);
    assert!(
        texts[2].contains("The oldest 1 exchange(s) of this conversation were dropped: it keeps the latest 2 (EXAI_THREAD_MAX_TURNS)"),
        "{}",
        texts[2]
    );
    // The third call replayed both earlier exchanges, starting with a question.
    let sent = fake.last_messages("fake-fast");
    let roles: Vec<&str> = sent.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "user", "assistant", "user"]
    );
    assert!(sent[1]["content"].as_str().unwrap().contains("first?"));
    client.cancel().await.unwrap();
}
