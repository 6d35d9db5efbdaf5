//! Workflow tools and consensus through the real binary: the step protocol, state kept in the
//! thread, the expert call, precommit reading git, consensus in parallel, and bad input.

use crate::common;

use std::path::PathBuf;

use common::*;
use serde_json::{Value, json};

fn requests(fake: &Fake) -> u64 {
    fake.stats()["requests"].as_u64().unwrap()
}

fn project() -> PathBuf {
    let dir = temp_home().canonicalize().unwrap();
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("src/cache.rs"),
        "pub fn get(key: &str) -> Option<String> {\n    None\n}\n",
    )
    .unwrap();
    dir
}

#[tokio::test]
async fn a_debug_workflow_pauses_without_a_model_then_asks_the_expert_once() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let dir = project();
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;

    let first = answer_of(
        &client
            .call_tool(call(
                "debug",
                json!({
                    "step": "The cache returns nothing after a restart",
                    "step_number": 1, "total_steps": 3, "next_step_required": true,
                    "findings": "Reproduced: every get after restart is None",
                    "model": "fake-fast",
                }),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(first["status"], "pause_for_investigation");
    assert_eq!(first["progress"]["steps_recorded"], 1);
    assert!(!first["required_actions"].as_array().unwrap().is_empty());
    let id = first["continuation_id"].as_str().unwrap().to_string();
    assert!(first["next_steps"].as_str().unwrap().contains(&id));
    assert_eq!(requests(&fake), 0, "an intermediate step calls no model");

    let second = answer_of(
        &client
            .call_tool(call(
                "debug",
                json!({
                    "step": "Read the cache code",
                    "step_number": 2, "total_steps": 3, "next_step_required": true,
                    "findings": "get() never reads the disk",
                    "relevant_files": [path(&dir.join("src/cache.rs"))],
                    "relevant_context": ["cache::get"],
                    "hypothesis": "the disk layer was never wired in",
                    "confidence": "medium",
                    "continuation_id": id,
                }),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(second["progress"]["steps_recorded"], 2);
    assert_eq!(second["progress"]["relevant_files"], 1);
    assert_eq!(requests(&fake), 0);

    let last = client
        .call_tool(call(
            "debug",
            json!({
                "step": "Confirmed the cause",
                "step_number": 3, "total_steps": 3, "next_step_required": false,
                "findings": "get() returns None unconditionally at line 2",
                "issues_found": [{"severity": "high", "description": "cache ignores stored entries"}],
                "confidence": "very_high",
                "continuation_id": id,
                "model": "fake-fast",
            }),
        ))
        .await
        .unwrap();
    let done = answer_of(&last);
    assert_eq!(done["status"], "calling_expert_analysis");
    assert_eq!(done["expert_analysis"]["model"], "fake-fast");
    assert_eq!(done["summary"]["steps_taken"], 3);
    assert_eq!(requests(&fake), 1, "the expert is asked exactly once");
    let analysis = last.content[1].as_text().unwrap().text.clone();
    assert!(
        analysis.starts_with("Expert analysis (fake-fast)"),
        "{analysis}"
    );

    // What the expert saw: the debug prompt, every step, the issue, the file line-numbered.
    let body = last_body(&fake, "fake-fast");
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    let system = messages[0]["content"].as_str().unwrap();
    assert!(system.starts_with("You are an expert debugger"), "{system}");
    let question = messages[1]["content"].as_str().unwrap();
    let shown = question
        .replace(&path(&dir), "<project>")
        .replace(&id, "<id>");
    insta::assert_snapshot!("debug_expert_question", shown);

    let record = daemon.final_record(&call_id_of(&last));
    assert_eq!(record.state.as_str(), "succeeded");
    assert_eq!(record.model.as_deref(), Some("fake-fast"));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn certainty_or_no_assistant_skips_the_expert() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let sure = answer_of(
        &client
            .call_tool(call(
                "debug",
                json!({
                    "step": "Typo in the config key", "step_number": 1, "total_steps": 1,
                    "next_step_required": false, "findings": "key is spelled 'tiemout'",
                    "confidence": "certain",
                }),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(sure["status"], "certain_confidence_proceed_with_fix");
    assert_eq!(sure["expert_analysis"]["status"], "skipped");
    let own = answer_of(
        &client
            .call_tool(call(
                "thinkdeep",
                json!({
                    "step": "Should we shard?", "step_number": 1, "total_steps": 1,
                    "next_step_required": false, "use_assistant_model": false,
                }),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(
        own["status"],
        "deep_thinking_complete_ready_for_implementation"
    );
    assert_eq!(requests(&fake), 0);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn interleaved_workflows_never_mix_and_survive_a_restart() {
    let fake = Fake::start();
    let home = temp_home();
    let daemon = Daemon::start_in(home.clone(), "127.0.0.1:0", &fake, &[]);
    // Two sessions (two clients), each running its own thinkdeep.
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let (other, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let start = |topic: &str| {
        call(
            "thinkdeep",
            json!({
                "step": format!("Think about {topic}"), "step_number": 1, "total_steps": 2,
                "next_step_required": true, "findings": format!("{topic}-finding-one"),
            }),
        )
    };
    let (a, b) = tokio::join!(
        client.call_tool(start("alpha")),
        other.call_tool(start("beta"))
    );
    let a = answer_of(&a.unwrap())["continuation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = answer_of(&b.unwrap())["continuation_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(a, b);
    client.cancel().await.unwrap();
    other.cancel().await.unwrap();

    // The daemon dies (kill -9) between step 1 and step 2.
    drop(daemon);
    let daemon = Daemon::start_in(home, "127.0.0.1:0", &fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let finish = |id: &str, model: &str| {
        call(
            "thinkdeep",
            json!({
                "step": "Done", "step_number": 2, "total_steps": 2, "next_step_required": false,
                "findings": "final", "continuation_id": id, "model": model,
            }),
        )
    };
    // Two models so each expert question can be read back on its own.
    let (ra, rb) = tokio::join!(
        client.call_tool(finish(&a, "fake-fast")),
        client.call_tool(finish(&b, "fake-delay-10"))
    );
    assert_eq!(answer_of(&ra.unwrap())["summary"]["steps_taken"], 2);
    assert_eq!(answer_of(&rb.unwrap())["summary"]["steps_taken"], 2);
    let question = |model: &str| {
        last_body(&fake, model)["messages"][1]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let qa = question("fake-fast");
    let qb = question("fake-delay-10");
    assert!(
        qa.contains("alpha-finding-one") && !qa.contains("beta"),
        "{qa}"
    );
    assert!(
        qb.contains("beta-finding-one") && !qb.contains("alpha"),
        "{qb}"
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn bad_steps_get_clear_errors_and_nothing_else_is_affected() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let base = json!({"step": "x", "step_number": 1, "total_steps": 2, "next_step_required": true});
    let with = |tool: &str, changes: Value| {
        let mut args = base.clone();
        for (k, v) in changes.as_object().unwrap() {
            args[k] = v.clone();
        }
        call(tool, args)
    };
    let cases = [
        (
            with("debug", json!({"step_number": 0})),
            "step_number starts at 1",
        ),
        (with("debug", json!({"step_number": "two"})), "invalid type"),
        (
            with("debug", json!({"step_number": 2})),
            "needs the continuation_id",
        ),
        (
            with(
                "debug",
                json!({"step_number": 2, "continuation_id": "01a2132d-05c7-76ba-ab75-235da0d3ad5f"}),
            ),
            "expired or never existed",
        ),
        (
            with("debug", json!({"continuation_id": "not-a-uuid"})),
            "not valid",
        ),
        (
            with("debug", json!({"relevant_files": ["src/main.rs"]})),
            "not an absolute path",
        ),
        (
            with("debug", json!({"confidence": "sure"})),
            "is not one of",
        ),
        (
            with(
                "debug",
                json!({"issues_found": [{"severity": "bad", "description": "d"}]}),
            ),
            "unknown variant",
        ),
        (with("codereview", json!({})), "step 1 needs relevant_files"),
        (
            with(
                "refactor",
                json!({"relevant_files": ["/tmp"], "confidence": "certain"}),
            ),
            "exploring, incomplete, partial, complete",
        ),
        (with("debug", json!({"step": "  "})), "`step` is empty"),
        (
            call("debug", json!({"step_number": 1})),
            "missing field `step`",
        ),
        (
            with("debug", json!({"total_steps": 0})),
            "total_steps must be 1 or more",
        ),
        (with("debug", json!({"model": "glm-4.6"})), "not configured"),
        (with("precommit", json!({})), "precommit needs `path`"),
        (
            with(
                "planner",
                json!({"step_number": 1, "revises_step_number": 3}),
            ),
            "must name an earlier step",
        ),
        (
            with(
                "docgen",
                json!({"next_step_required": false, "num_files_documented": 1, "total_files_to_document": 3}),
            ),
            "1 of 3 files are documented",
        ),
    ];
    for (request, expected) in cases {
        let tool = request.name.to_string();
        let result = client.call_tool(request).await.unwrap();
        assert_eq!(
            result.is_error,
            Some(true),
            "{tool} ({expected}): {}",
            all_text_of(&result)
        );
        let text = error_of(&result);
        assert!(text.contains(expected), "{tool}: {text}");
    }
    // total_steps below step_number is adjusted with a note, not refused.
    let first = answer_of(&client.call_tool(with("planner", json!({}))).await.unwrap());
    let id = first["continuation_id"].as_str().unwrap();
    let adjusted = answer_of(
        &client
            .call_tool(with(
                "planner",
                json!({"step_number": 3, "total_steps": 2, "continuation_id": id}),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(adjusted["total_steps"], 3);
    assert!(
        adjusted["notes"][0]
            .as_str()
            .unwrap()
            .contains("below step_number"),
        "{adjusted}"
    );
    // The daemon still answers normally.
    let ok = client
        .call_tool(chat("still fine", "fake-fast"))
        .await
        .unwrap();
    assert_eq!(text_of(&ok), "echo: still fine");
    assert_eq!(requests(&fake), 1);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn guidance_tools_answer_without_a_model() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let ask = answer_of(
        &client
            .call_tool(call(
                "tracer",
                json!({"step": "Trace Cache::get", "step_number": 1, "total_steps": 3, "next_step_required": true}),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(ask["status"], "mode_selection_required");

    let first = answer_of(
        &client
            .call_tool(call(
                "planner",
                json!({"step": "Plan the migration", "step_number": 1, "total_steps": 2, "next_step_required": true}),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(first["status"], "pause_for_planning");
    assert!(first["guidance"].as_str().unwrap().len() > 200);
    let id = first["continuation_id"].as_str().unwrap();
    let done = answer_of(
        &client
            .call_tool(call(
                "planner",
                json!({"step": "Copy data, then switch reads", "step_number": 2, "total_steps": 2,
                       "next_step_required": false, "continuation_id": id}),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(done["status"], "planning_complete");
    let steps: Vec<&str> = done["summary"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["Plan the migration", "Copy data, then switch reads"]
    );

    let trace = answer_of(
        &client
            .call_tool(call(
                "tracer",
                json!({"step": "Trace Cache::get", "step_number": 1, "total_steps": 1,
                       "next_step_required": false, "trace_mode": "precision",
                       "findings": "get -> lookup -> None"}),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(trace["status"], "tracing_complete");
    assert!(trace["guidance"].as_str().unwrap().contains("precision"));
    let docs = answer_of(
        &client
            .call_tool(call(
                "docgen",
                json!({"step": "Documented cache.rs", "step_number": 1, "total_steps": 1,
                       "next_step_required": false, "num_files_documented": 2,
                       "total_files_to_document": 2}),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(docs["status"], "documentation_analysis_complete");
    assert_eq!(docs["expert_analysis"]["status"], "skipped");
    assert_eq!(requests(&fake), 0);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn precommit_reads_the_repository_itself_and_keeps_secrets_home() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let repo = project();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "start"]);
    std::fs::write(
        repo.join("src/cache.rs"),
        "pub fn get(key: &str) -> Option<String> {\n    STORE.get(key).cloned()\n}\n",
    )
    .unwrap();
    std::fs::write(repo.join(".env"), "API_KEY=sk-never-leaves-home").unwrap();
    git(&repo, &["add", "src/cache.rs", ".env"]);
    std::fs::write(repo.join("notes.txt"), "untracked").unwrap();
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;

    let first = answer_of(
        &client
            .call_tool(call(
                "precommit",
                json!({"step": "Wire the cache to the store", "step_number": 1, "total_steps": 2,
                       "next_step_required": true, "path": path(&repo)}),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(first["status"], "pause_for_validation");
    assert_eq!(first["gathered"]["branch"], "main");
    assert_eq!(first["gathered"]["staged"], 2);
    assert_eq!(first["gathered"]["untracked"], 1);
    let id = first["continuation_id"].as_str().unwrap();

    let last = client
        .call_tool(call(
            "precommit",
            json!({"step": "Checked", "step_number": 2, "total_steps": 2, "next_step_required": false,
                   "findings": "looks right", "continuation_id": id, "model": "fake-fast"}),
        ))
        .await
        .unwrap();
    let done = answer_of(&last);
    assert_eq!(done["status"], "calling_expert_analysis");
    let notes = done["notes"].to_string();
    assert!(notes.contains(".env"), "{notes}");
    let question = last_body(&fake, "fake-fast")["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        question.contains("+    STORE.get(key).cloned()"),
        "{question}"
    );
    assert!(question.contains("### staged changes (1 file(s))"));
    assert!(!question.contains("sk-never-leaves-home"));

    // Against a ref: the committed change is the diff.
    git(&repo, &["reset", "-q", "--", ".env"]);
    git(&repo, &["commit", "-q", "-m", "wire the store"]);
    let since = answer_of(
        &client
            .call_tool(call(
                "precommit",
                json!({"step": "Review the last commit", "step_number": 1, "total_steps": 1,
                       "next_step_required": false, "path": path(&repo),
                       "compare_to": "HEAD~1", "model": "fake-delay-5"}),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(since["status"], "calling_expert_analysis");
    let question = last_body(&fake, "fake-delay-5")["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        question.contains("### changes since HEAD~1 (1 file(s))"),
        "{question}"
    );
    assert!(question.contains("-    None"));

    // A ref that does not exist is named.
    let wrong = client
        .call_tool(call(
            "precommit",
            json!({"step": "x", "step_number": 1, "total_steps": 1, "next_step_required": false,
                   "path": path(&repo), "compare_to": "no-such-branch", "model": "fake-fast"}),
        ))
        .await
        .unwrap();
    assert!(error_of(&wrong).contains("no-such-branch"));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn consensus_asks_every_model_at_once_and_survives_one_failing() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let dir = project();
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let result = client
        .call_tool(call(
            "consensus",
            json!({
                "step": "Should the cache move to Redis?",
                "findings": "my own view: not yet",
                "relevant_files": [path(&dir.join("src/cache.rs"))],
                "models": [
                    {"model": "fake-delay-400", "stance": "for"},
                    {"model": "fake-delay-401", "stance": "against"},
                    {"model": "fake-500", "stance": "neutral"},
                ],
            }),
        ))
        .await
        .unwrap();
    let summary = answer_of(&result);
    assert_eq!(summary["status"], "consensus_complete");
    let consulted = summary["models_consulted"].as_array().unwrap();
    assert_eq!(consulted.len(), 3);
    assert_eq!(consulted[2]["status"], "failed");
    assert!(consulted[2]["error"].as_str().unwrap().contains("500"));
    assert_eq!(summary["tally"]["failed"], 1);
    let stats = fake.stats();
    assert!(
        stats["max_in_flight"].as_u64().unwrap() >= 2,
        "models asked in parallel: {stats}"
    );
    // Each model was blinded: it saw the proposal and the file, not the agent's view.
    let against = last_body(&fake, "fake-delay-401");
    let question = against["messages"][1]["content"].as_str().unwrap();
    assert!(question.contains("Should the cache move to Redis?"));
    assert!(question.contains("1│ pub fn get"), "{question}");
    assert!(!question.contains("my own view"));
    let system = against["messages"][0]["content"].as_str().unwrap();
    assert!(!system.contains("{stance}"));
    // The synthesis (by the first model that answered) saw every evaluation and the agent's view.
    let synthesis = last_body(&fake, "fake-delay-400")["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(synthesis.contains("my own view"), "{synthesis}");
    assert!(synthesis.contains("# fake-delay-401 (against)"));
    assert!(synthesis.contains("# fake-500 (neutral) — no answer"));
    let body = all_text_of(&result);
    assert!(body.contains("# Synthesis"), "{body}");
    let record = daemon.final_record(&call_id_of(&result));
    assert_eq!(record.state.as_str(), "succeeded");
    assert!(record.tokens_out.unwrap_or(0) > 0);

    // Plain model names are taken as neutral stances.
    let by_name = client
        .call_tool(call(
            "consensus",
            json!({"step": "Tabs or spaces?", "models": ["fake-fast", "fake-delay-5"],
                   "synthesize": false}),
        ))
        .await
        .unwrap();
    let summary = answer_of(&by_name);
    assert_eq!(summary["status"], "consensus_complete", "{summary}");
    assert_eq!(
        summary["models_consulted"][1]["stance"], "neutral",
        "{summary}"
    );

    for (models, expected) in [
        (json!([{"model": "fake-fast"}]), "at least two models"),
        (
            json!([{"model": "fake-fast", "stance": "for"}, {"model": "fake-fast", "stance": "for"}]),
            "listed twice",
        ),
        (
            json!([{"model": "fake-fast", "stance": "sideways"}, {"model": "fake-fast"}]),
            "unknown variant",
        ),
    ] {
        let bad = client
            .call_tool(call("consensus", json!({"step": "x", "models": models})))
            .await
            .unwrap();
        assert!(error_of(&bad).contains(expected), "{}", all_text_of(&bad));
    }
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_chat_continues_a_codereview_thread() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let dir = project();
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let review = answer_of(
        &client
            .call_tool(call(
                "codereview",
                json!({"step": "Review the cache", "step_number": 1, "total_steps": 1,
                       "next_step_required": false, "findings": "get ignores the store",
                       "relevant_files": [path(&dir.join("src"))], "model": "fake-fast"}),
            ))
            .await
            .unwrap(),
    );
    let id = review["continuation_id"].as_str().unwrap();
    let reply = client
        .call_tool(call(
            "chat",
            json!({"prompt": "How would you fix it?", "continuation_id": id, "model": "fake-fast"}),
        ))
        .await
        .unwrap();
    assert_eq!(reply.is_error, Some(false));
    let messages = last_body(&fake, "fake-fast")["messages"]
        .as_array()
        .unwrap()
        .clone();
    let history: Vec<&str> = messages
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert!(
        history
            .iter()
            .any(|c| c.contains("codereview step 1/1: Review the cache")),
        "{history:?}"
    );
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_directory_and_a_huge_file_are_bounded_and_named() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let dir = project();
    let huge = dir.join("huge");
    for d in 0..100 {
        let sub = huge.join(format!("d{d:03}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..1000 {
            std::fs::write(sub.join(format!("f{f:04}.txt")), "x\n").unwrap();
        }
    }
    let big = dir.join("big.log");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(50 * 1024 * 1024)
        .unwrap();
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let review = client.call_tool(call(
        "codereview",
        json!({"step": "Review everything", "step_number": 1, "total_steps": 1,
               "next_step_required": false, "model": "fake-fast",
               "relevant_files": [path(&huge), path(&big), path(&dir.join("src/cache.rs"))]}),
    ));
    // The daemon keeps answering other requests meanwhile.
    let (review, other) = tokio::join!(review, client.call_tool(chat("meanwhile", "fake-fast")));
    assert_eq!(text_of(&other.unwrap()), "echo: meanwhile");
    let review = review.unwrap();
    let done = answer_of(&review);
    assert_eq!(done["status"], "calling_expert_analysis");
    let notes = done["notes"].to_string();
    assert!(notes.contains("more than 2000 files"), "{notes}");
    assert!(notes.contains("over the 1048576-byte limit"), "{notes}");
    assert!(notes.contains("more (name fewer files"), "{notes}");
    let question = last_body(&fake, "fake-fast");
    let sent = question.to_string();
    assert!(sent.len() < 2_000_000, "the question stayed bounded");
    client.cancel().await.unwrap();
}

/// Each expert workflow: the fake saw the tool's own system prompt, its own sections and the
/// file line-numbered; the client got the expert's answer.
#[tokio::test]
async fn every_expert_workflow_asks_with_its_own_prompt_and_sections() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let dir = project();
    let file = path(&dir.join("src/cache.rs"));
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let cases = [
        (
            "thinkdeep",
            json!({"problem_context": "a cache for a CLI", "focus_areas": ["latency"]}),
            "You",
            "## Focus areas\n- latency",
        ),
        (
            "analyze",
            json!({"analysis_type": "performance"}),
            "You",
            "## Analysis type\nperformance",
        ),
        (
            "codereview",
            json!({"review_type": "security", "standards": "no panics"}),
            "You",
            "## Standards to apply\nno panics",
        ),
        (
            "refactor",
            json!({"refactor_type": "decompose", "confidence": "partial"}),
            "You",
            "## Refactoring type\ndecompose",
        ),
        ("testgen", json!({}), "You", "## Task\nWork on the cache"),
        (
            "secaudit",
            json!({"threat_level": "high", "compliance_requirements": ["GDPR"]}),
            "You",
            "## Compliance requirements\n- GDPR",
        ),
        (
            "debug",
            json!({"hypothesis": "never wired"}),
            "You are an expert debugger",
            "Hypothesis: never wired",
        ),
    ];
    for (i, (tool, extra, system_start, section)) in cases.into_iter().enumerate() {
        let model = format!("fake-delay-{}", 20 + i);
        let mut args = json!({
            "step": "Work on the cache", "step_number": 1, "total_steps": 1,
            "next_step_required": false, "findings": "get() ignores the store",
            "relevant_files": [file], "model": model,
        });
        for (k, v) in extra.as_object().unwrap() {
            args[k] = v.clone();
        }
        let result = client.call_tool(call(tool, args)).await.unwrap();
        let done = answer_of(&result);
        assert_eq!(done["status"], "calling_expert_analysis", "{tool}: {done}");
        assert_eq!(done["expert_analysis"]["files_embedded"], 1, "{tool}");
        let analysis = result.content[1].as_text().unwrap().text.clone();
        assert!(
            analysis.contains("echo: Files for context"),
            "{tool}: {analysis}"
        );
        let body = last_body(&fake, &model);
        let system = body["messages"][0]["content"].as_str().unwrap();
        assert!(system.starts_with(system_start), "{tool}: {system}");
        let prompt = std::fs::read_to_string(format!(
            "{}/src/tools/prompts/{tool}.txt",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        assert_eq!(system, prompt, "{tool} sends its own prompt file");
        let question = body["messages"][1]["content"].as_str().unwrap();
        assert!(question.contains("    2│     None"), "{tool}: {question}");
        assert!(question.contains(section), "{tool}: {question}");
        assert!(
            question.contains(&format!("ran a {tool} workflow")),
            "{tool}"
        );
    }
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consensus_takes_about_as_long_as_its_slowest_model_not_the_sum() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let started = std::time::Instant::now();
    let result = client
        .call_tool(call(
            "consensus",
            json!({"step": "Rewrite it in Rust?", "synthesize": false, "models": [
                {"model": "fake-delay-1500", "stance": "for"},
                {"model": "fake-delay-1501", "stance": "against"},
                {"model": "fake-delay-1502", "stance": "neutral"},
            ]}),
        ))
        .await
        .unwrap();
    let took = started.elapsed();
    let summary = answer_of(&result);
    assert_eq!(summary["tally"]["failed"], 0);
    assert_eq!(fake.stats()["max_in_flight"], 3, "all three asked at once");
    // Sequential would be 4.5 s; parallel is the slowest (1.5 s) plus overhead.
    assert!(
        took < std::time::Duration::from_millis(3500),
        "took {took:?}"
    );
    eprintln!("consensus of three 1.5 s models took {took:?}");
    client.cancel().await.unwrap();
}
