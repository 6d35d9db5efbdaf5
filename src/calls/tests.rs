//! The call lifecycle in-process: a test app (temporary store, the scripted model client), the
//! real tools, no process and no socket. Waits for the model run on paused time; a test whose
//! tool writes to the store while a timer is pending (a thread saved after the answer) runs on
//! real time instead, with answers that take no time, because paused time would jump to that
//! timer while the store's writer thread works.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::CallToolResult;
use serde_json::{Value, json};

use super::{CallOrigin, CancelReason, LiveCall, Outcome, TransportKind};
use crate::app::App;
use crate::store::{CallRow, CallState, Delivery, StoreReader};
use crate::tools::ToolContext;

/// A budget far beyond any scripted answer that is not meant to hit it.
const BUDGET: Duration = Duration::from_secs(600);

fn origin() -> CallOrigin {
    CallOrigin {
        session_id: "test-session".to_string(),
        client_name: Some("unit-test".to_string()),
        client_version: None,
        transport: TransportKind::Stdio,
        caller: crate::users::Caller::Owner,
        shim_version: None,
    }
}

/// Records a call of `tool` at receipt; nothing runs yet.
async fn open(app: &App, tool: &str, arguments: &Value, budget: Duration) -> Arc<LiveCall> {
    app.calls
        .open(
            None,
            tool,
            arguments.as_object().expect("arguments are an object"),
            origin(),
            budget,
            Some(0),
        )
        .await
        .expect("the call is recorded")
}

/// Runs the real tool for `call` under the call's supervision (deadline, cancel, finish).
fn start(app: &App, call: &Arc<LiveCall>, arguments: &Value) {
    let tool = app.tools.get(&call.tool).expect("a known tool");
    let context = ToolContext {
        call: call.clone(),
        calls: app.calls.clone(),
        providers: app.settings().providers.clone(),
        health: app.health.clone(),
        config: app.settings().config.clone(),
        answer_by: None,
        dry_run: None,
    };
    let arguments = arguments.as_object().cloned().unwrap_or_default();
    app.calls.start(
        call.clone(),
        crate::tools::dry_run::run(tool, arguments, context),
    );
}

/// Opens and starts a call, then waits for its end.
async fn call(app: &App, tool: &str, arguments: Value) -> (Arc<LiveCall>, Arc<Outcome>) {
    let call = open(app, tool, &arguments, BUDGET).await;
    start(app, &call, &arguments);
    let outcome = call.finished().await;
    (call, outcome)
}

/// The call's record as the store has it now.
fn record(app: &App, id: &str) -> CallRow {
    StoreReader::open_at(&app.config.store)
        .expect("the store opens")
        .get(id)
        .expect("the store reads")
        .expect("the call has a record")
}

fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The JSON answer of a workflow tool (its first text block).
fn answer_of(outcome: &Outcome) -> Value {
    let first = outcome.result.content[0].as_text().expect("a text answer");
    serde_json::from_str(&first.text).expect("a JSON answer")
}

/// Waits until the call's stage is `stage`.
async fn stage_reaches(call: &LiveCall, stage: &str) {
    loop {
        let next = call.progress.next_stage();
        tokio::pin!(next);
        next.as_mut().enable();
        if call.progress.snapshot().stage == stage {
            return;
        }
        next.await;
    }
}

fn chat(model: &str) -> Value {
    json!({"prompt": "hi", "model": model})
}

/// Two calls proposing the same id at once (a client reusing one) never share it: the second
/// gets a fresh id, so each can be found, cancelled and drained on its own.
#[tokio::test]
async fn calls_proposing_one_id_at_once_get_it_once() {
    let test = App::for_tests(&[]);
    let app = &test.app;
    let proposed = uuid::Uuid::now_v7().to_string();
    let arguments = chat("fake-fast");
    let open_proposing = || {
        app.calls.open(
            Some(&proposed),
            "chat",
            arguments.as_object().expect("an object"),
            origin(),
            BUDGET,
            Some(0),
        )
    };
    let (one, two) = tokio::join!(open_proposing(), open_proposing());
    let (one, two) = (one.expect("recorded"), two.expect("recorded"));
    assert_ne!(one.id, two.id);
    assert!(one.id == proposed || two.id == proposed);
    assert!(app.calls.get(&one.id).is_some() && app.calls.get(&two.id).is_some());
}

/// A proposed id becomes the call's only when freshly minted (a UUIDv7 of the last minutes): an
/// old id, such as another person's call's, or a v4, gets a fresh one.
#[tokio::test]
async fn only_a_freshly_minted_id_proposed_is_taken() {
    let test = App::for_tests(&[]);
    let app = &test.app;
    let arguments = chat("fake-fast");
    let arguments = &arguments;
    let open_proposing = |proposed: String| async move {
        let call = app
            .calls
            .open(
                Some(&proposed),
                "chat",
                arguments.as_object().expect("an object"),
                origin(),
                BUDGET,
                Some(0),
            )
            .await
            .expect("recorded");
        (call.id.clone(), proposed)
    };
    let an_hour_ago = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        (crate::store::now_ms() / 1000 - 3600) as u64,
        0,
    ));
    // A version-4 (random) UUID, as another client might mint.
    let random = "8c5f3c1e-2b1a-4d7e-9f00-0123456789ab".to_string();
    for stale in [an_hour_ago.to_string(), random] {
        let (got, proposed) = open_proposing(stale).await;
        assert_ne!(got, proposed);
    }
    let (got, proposed) = open_proposing(uuid::Uuid::now_v7().to_string()).await;
    assert_eq!(got, proposed);
}

/// A call that arrives while exai stops (its session not closed yet) is interrupted at once and
/// recorded so, rather than left running as the process ends.
#[tokio::test]
async fn a_call_started_once_exai_is_stopping_is_interrupted_and_recorded() {
    let test = App::for_tests(&[]);
    let app = &test.app;
    app.calls.drain(Duration::ZERO).await;
    let arguments = chat("fake-delay-60000");
    let (call, outcome) =
        tokio::time::timeout(Duration::from_secs(30), self::call(app, "chat", arguments))
            .await
            .expect("the call ends at once");
    assert_eq!(outcome.state, CallState::Interrupted);
    assert!(
        text_of(&outcome.result).contains("shut down"),
        "{}",
        text_of(&outcome.result)
    );
    assert_eq!(record(app, &call.id).state, CallState::Interrupted);
}

/// A tool that panics (a bug in exai) fails its call, which ends and is recorded like any other,
/// rather than staying "running" for ever with its waiters waiting.
#[tokio::test]
async fn a_tool_that_panics_fails_its_call_which_still_ends() {
    let test = App::for_tests(&[]);
    let app = &test.app;
    let call = open(app, "chat", &chat("fake-fast"), BUDGET).await;
    let work: futures::future::BoxFuture<'static, _> = Box::pin(async {
        let empty: Vec<u8> = std::hint::black_box(Vec::new());
        Ok(CallToolResult::success(vec![
            rmcp::model::ContentBlock::text(format!("{}", empty[1])),
        ]))
    });
    app.calls.start(call.clone(), work);
    let outcome = tokio::time::timeout(Duration::from_secs(30), call.finished())
        .await
        .expect("the call ends");
    assert_eq!(outcome.state, CallState::Failed);
    assert!(
        text_of(&outcome.result).contains("exai failed inside the tool (index out of bounds"),
        "{}",
        text_of(&outcome.result)
    );
    let stored = record(app, &call.id);
    assert_eq!(stored.state, CallState::Failed);
    assert_eq!(stored.error_kind.as_deref(), Some("internal"));
}

#[tokio::test(start_paused = true)]
async fn a_call_past_its_deadline_times_out_naming_the_stage() {
    let test = App::for_tests(&[]);
    let app = &test.app;
    for (model, stage) in [
        ("fake-hang", "waiting for custom"),
        ("fake-stall-2", "streaming"),
    ] {
        let arguments = chat(model);
        let call = open(app, "chat", &arguments, Duration::from_secs(30)).await;
        start(app, &call, &arguments);
        let outcome = call.finished().await;
        assert_eq!(outcome.state, CallState::TimedOut, "{model}");
        let text = text_of(&outcome.result);
        let expected = format!("chat timed out after 30 s (the call's deadline) while {stage} (");
        assert!(text.starts_with(&expected), "{model}: {text}");
        assert!(text.ends_with(&format!("(call {})", call.id)), "{text}");
        let row = record(app, &call.id);
        assert_eq!(row.state.to_string(), CallState::TimedOut.to_string());
        assert_eq!(row.error_kind.as_deref(), Some("deadline"));
    }
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_call_ends_at_once_and_says_why() {
    let test = App::for_tests(&[]);
    let app = &test.app;
    let arguments = chat("fake-hang");
    let call = open(app, "chat", &arguments, BUDGET).await;
    start(app, &call, &arguments);
    stage_reaches(&call, "waiting for custom").await;
    call.cancel(CancelReason::Client(Some("user pressed stop".into())));
    // A second reason does not replace the first.
    call.cancel(CancelReason::Shutdown);
    let outcome = call.finished().await;
    assert_eq!(outcome.state, CallState::Cancelled);
    assert_eq!(
        text_of(&outcome.result),
        format!(
            "chat cancelled by the client: user pressed stop (call {})",
            call.id
        )
    );
    let row = record(app, &call.id);
    assert_eq!(row.state.to_string(), CallState::Cancelled.to_string());
    assert_eq!(row.delivery, Delivery::NotSentCancelled);
    assert_eq!(app.calls.in_flight_count(), 0);
}

#[tokio::test]
async fn a_call_whose_client_went_away_finishes_and_is_stored() {
    let test = App::for_tests(&[]);
    let app = &test.app;
    let arguments = chat("fake-fast");
    let call = open(app, "chat", &arguments, BUDGET).await;
    call.detach();
    start(app, &call, &arguments);
    let outcome = call.finished().await;
    assert_eq!(outcome.state, CallState::Succeeded);
    let row = record(app, &call.id);
    assert_eq!(row.state.to_string(), CallState::Succeeded.to_string());
    assert_eq!(row.delivery, Delivery::ClientGone);
    assert_eq!(row.model.as_deref(), Some("fake-fast"));
    let stored = row.result.expect("the answer is kept");
    assert!(stored.contains("echo: hi"), "{stored}");
}

#[tokio::test]
async fn the_record_is_committed_before_the_outcome_is_published() {
    let test = App::for_tests(&[]);
    let app = &test.app;
    let calls = (0..8).map(|i| async move {
        let arguments = json!({"prompt": format!("question {i}"), "model": "fake-fast"});
        call(app, "chat", arguments).await
    });
    for (call, outcome) in futures::future::join_all(calls).await {
        // Read the moment the outcome is out: the record must already be final.
        let row = record(app, &call.id);
        assert_eq!(row.state.to_string(), outcome.state.to_string());
        assert_eq!(outcome.state, CallState::Succeeded);
        assert!(row.finished_at_ms.is_some());
        let answer = text_of(&outcome.result);
        let stored = row.result.expect("the answer is stored");
        let echo = answer
            .lines()
            .find(|l| l.starts_with("echo: question"))
            .expect("its own answer");
        assert!(stored.contains(echo), "{stored}");
    }
}

#[tokio::test]
async fn an_identical_call_attaches_to_the_running_one() {
    let test = App::for_tests(&[]);
    let app = &test.app;
    let arguments = chat("fake-fast");
    let first = open(app, "chat", &arguments, BUDGET).await;
    let second = open(app, "chat", &arguments, BUDGET).await;
    let other = open(app, "chat", &chat("fake-delay-1"), BUDGET).await;
    assert!(app.calls.running_twin(&other).is_none());
    let twin = app
        .calls
        .running_twin(&second)
        .expect("the first call is its twin");
    assert_eq!(twin.id, first.id);
    // The twin waits for the first call's answer; started first, so it really waits.
    app.calls
        .start(second.clone(), crate::service::attach_to(twin));
    start(app, &first, &arguments);
    start(app, &other, &chat("fake-delay-1"));
    let (one, two) = (first.finished().await, second.finished().await);
    assert_eq!(one.state, CallState::Succeeded);
    assert_eq!(two.state, CallState::Succeeded);
    let attached = text_of(&two.result);
    assert!(attached.starts_with(&text_of(&one.result)), "{attached}");
    assert!(
        attached.contains(&format!(
            "an identical call, {}, was already running",
            first.id
        )),
        "{attached}"
    );
    other.finished().await;
    assert_eq!(
        test.client.asked(),
        ["fake-fast", "fake-delay-1"],
        "the model is asked once for the two identical calls"
    );
    // Ended calls leave the index: an identical call now has no twin, and the next one after
    // it finds it (not a call that ended).
    let third = open(app, "chat", &arguments, BUDGET).await;
    assert!(app.calls.running_twin(&third).is_none());
    let fourth = open(app, "chat", &arguments, BUDGET).await;
    let twin = app
        .calls
        .running_twin(&fourth)
        .expect("the third is its twin");
    assert_eq!(twin.id, third.id);
}

#[tokio::test]
async fn identical_calls_opened_together_never_wait_on_each_other() {
    let test = App::for_tests(&[]);
    let app = &test.app;
    let arguments = chat("fake-fast");
    let calls = [
        open(app, "chat", &arguments, BUDGET).await,
        open(app, "chat", &arguments, BUDGET).await,
        open(app, "chat", &arguments, BUDGET).await,
    ];
    // Only the first runs; each later one attaches to the first, so no two wait on each other.
    assert!(app.calls.running_twin(&calls[0]).is_none());
    for later in &calls[1..] {
        let twin = app.calls.running_twin(later).expect("an earlier twin");
        assert_eq!(twin.id, calls[0].id);
    }
}

#[tokio::test]
async fn a_workflow_pauses_between_steps_then_asks_the_expert_once() {
    let test = App::for_tests(&[]);
    let app = &test.app;
    let (_, first) = call(
        app,
        "debug",
        json!({
            "step": "The cache returns nothing after a restart",
            "step_number": 1, "total_steps": 2, "next_step_required": true,
            "findings": "every get after restart is None",
            "model": "fake-fast",
        }),
    )
    .await;
    let first = answer_of(&first);
    assert_eq!(first["status"], "pause_for_investigation", "{first}");
    let id = first["continuation_id"].as_str().expect("a thread id");
    assert!(
        test.client.asked().is_empty(),
        "an intermediate step asks no model"
    );

    let (call_, last) = call(
        app,
        "debug",
        json!({
            "step": "Confirmed the cause",
            "step_number": 2, "total_steps": 2, "next_step_required": false,
            "findings": "get() returns None unconditionally",
            "confidence": "high",
            "continuation_id": id,
            "model": "fake-fast",
        }),
    )
    .await;
    assert_eq!(last.state, CallState::Succeeded);
    let done = answer_of(&last);
    assert_eq!(done["status"], "calling_expert_analysis", "{done}");
    assert_eq!(done["summary"]["steps_taken"], 2, "{done}");
    assert_eq!(
        test.client.asked(),
        ["fake-fast"],
        "the expert is asked once"
    );
    let analysis = last.result.content[1].as_text().expect("the analysis");
    assert!(analysis.text.starts_with("Expert analysis (fake-fast)"));
    assert!(analysis.text.contains("echo: "), "{}", analysis.text);
    assert_eq!(record(app, &call_.id).model.as_deref(), Some("fake-fast"));
}

#[tokio::test]
async fn consensus_survives_a_failing_voice() {
    // One attempt each: the failing voice is not retried (no backoff to wait for).
    let test = App::for_tests(&[("EXAI_RETRY_ATTEMPTS", "1")]);
    let app = &test.app;
    let (call, outcome) = call(
        app,
        "consensus",
        json!({
            "step": "Should the cache move to Redis?",
            "models": [
                {"model": "fake-fast", "stance": "for"},
                {"model": "fake-delay-1", "stance": "against"},
                {"model": "fake-500", "stance": "neutral"},
            ],
        }),
    )
    .await;
    assert_eq!(outcome.state, CallState::Succeeded);
    let summary = answer_of(&outcome);
    assert_eq!(summary["status"], "consensus_complete", "{summary}");
    let consulted = summary["models_consulted"].as_array().expect("the voices");
    assert_eq!(consulted.len(), 3);
    assert_eq!(consulted[0]["status"], "answered", "{summary}");
    assert_eq!(consulted[2]["status"], "failed", "{summary}");
    let error = consulted[2]["error"].as_str().expect("why it failed");
    assert!(error.contains("HTTP 500"), "{error}");
    assert_eq!(summary["tally"]["failed"], 1, "{summary}");
    let mut asked = test.client.asked();
    asked.sort();
    assert!(
        ["fake-500", "fake-delay-1", "fake-fast"]
            .iter()
            .all(|m| asked.iter().any(|a| a == m)),
        "every voice is asked: {asked:?}"
    );
    assert_eq!(
        record(app, &call.id).state.to_string(),
        CallState::Succeeded.to_string()
    );
}

#[test]
fn calls_are_identical_only_for_the_same_person_client_tool_and_arguments() {
    let args = |prompt: &str| {
        let Value::Object(map) = json!({"prompt": prompt, "model": "glm"}) else {
            unreachable!("an object")
        };
        map
    };
    let key = super::dedupe_key("ann", "claude-code", "chat", &args("hi"));
    assert_eq!(
        key,
        super::dedupe_key("ann", "claude-code", "chat", &args("hi"))
    );
    for other in [
        super::dedupe_key("bob", "claude-code", "chat", &args("hi")),
        super::dedupe_key("ann", "codex", "chat", &args("hi")),
        super::dedupe_key("ann", "claude-code", "thinkdeep", &args("hi")),
        super::dedupe_key("ann", "claude-code", "chat", &args("hi!")),
        // The parts cannot run into each other.
        super::dedupe_key("annclaude-code", "", "chat", &args("hi")),
        super::dedupe_key("ann", "claude-codechat", "", &args("hi")),
    ] {
        assert_ne!(key, other);
    }
}
