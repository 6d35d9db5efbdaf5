//! Calls outlive their clients: background answers with a call handle, call_result,
//! call_cancel, call_list, attached retries, restarts.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use exai::store::Delivery;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use serde_json::{Value, json};

/// Polls call_result until the call is done; returns its answer.
async fn fetch(client: &Client, id: &str) -> CallToolResult {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client
            .call_tool(call("call_result", json!({"call_id": id, "wait_s": 30})))
            .await
            .unwrap();
        let running = r
            .structured_content
            .as_ref()
            .is_some_and(|s| s["status"] == "running");
        if !running {
            return r;
        }
        // Still running: the answer is about the call asked for, never a handle for call_result itself.
        assert_eq!(
            r.structured_content.as_ref().unwrap()["call_id"],
            id,
            "{}",
            text_of(&r)
        );
        assert!(Instant::now() < until, "call {id} never finished");
    }
}

#[tokio::test]
async fn an_impatient_client_gets_a_handle_in_time_and_the_answer_later() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[("EXAI_CLIENT_PATIENCE", "exai-tests=5")]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let started = Instant::now();
    let handle = client
        .call_tool(chat("a slow question", "fake-delay-12000"))
        .await
        .unwrap();
    let answered_in = started.elapsed();
    assert!(
        answered_in < Duration::from_secs(5),
        "answered after {answered_in:?}, past the client's patience"
    );
    assert_eq!(
        handle.is_error,
        Some(false),
        "a background answer is not an error"
    );
    let status = handle.structured_content.clone().unwrap();
    assert_eq!(status["status"], "running");
    assert!(status["poll_after_s"].as_u64().is_some());
    let id = status["call_id"].as_str().unwrap().to_string();
    assert!(
        text_of(&handle).contains(&format!("call_result(call_id=\"{id}\"")),
        "{}",
        text_of(&handle)
    );

    let answer = fetch(&client, &id).await;
    assert_eq!(text_of(&answer), "echo: a slow question");
    assert_eq!(
        call_id_of(&answer),
        id,
        "exactly the original call's result"
    );
    assert_eq!(
        fake.stats()["by_model"]["fake-delay-12000"],
        1,
        "one provider call"
    );
    let record = daemon.final_record(&id);
    assert_eq!(record.state.as_str(), "succeeded");
    assert_eq!(record.delivery, Delivery::DeliveredByCallResult);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn another_client_fetches_the_result_of_one_that_left() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (first, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let peer = first.peer().clone();
    let pending =
        tokio::spawn(async move { peer.call_tool(chat("left behind", "fake-delay-1500")).await });
    calls_in_flight(&daemon, 1).await;
    first.cancel().await.unwrap();
    let _ = pending.await;
    let (second, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let list = second
        .call_tool(call("call_list", json!({})))
        .await
        .unwrap();
    let calls = list.structured_content.unwrap()["calls"].clone();
    let id = calls[0]["call_id"].as_str().unwrap().to_string();
    assert_eq!(calls[0]["tool"], "chat");
    let answer = fetch(&second, &id).await;
    assert_eq!(text_of(&answer), "echo: left behind");
    second.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identical_retry_attaches_to_the_running_call() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let peer = client.peer().clone();
    let first = tokio::spawn(async move {
        peer.call_tool(chat("same question", "fake-delay-1500"))
            .await
            .unwrap()
    });
    wait_until_async(
        "the first call at the provider",
        Duration::from_secs(10),
        || (fake.stats()["in_flight"].as_u64()? == 1).then_some(()),
    )
    .await;
    let second = client
        .call_tool(chat("same question", "fake-delay-1500"))
        .await
        .unwrap();
    let first = first.await.unwrap();
    assert_eq!(text_of(&first), "echo: same question");
    assert!(text_of(&second).starts_with("echo: same question"));
    assert!(
        all_text_of(&second).contains("was already running; this request was attached to it"),
        "{}",
        text_of(&second)
    );
    assert_eq!(fake.stats()["requests"], 1, "one provider call for both");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn call_cancel_stops_a_running_call_and_says_so_for_finished_ones() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[("EXAI_CLIENT_PATIENCE", "exai-tests=3")]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let handle = client
        .call_tool(chat("forever", "fake-hang"))
        .await
        .unwrap();
    let id = handle.structured_content.unwrap()["call_id"]
        .as_str()
        .unwrap()
        .to_string();
    let cancelled = client
        .call_tool(call("call_cancel", json!({"call_id": id})))
        .await
        .unwrap();
    assert!(
        text_of(&cancelled).contains("stopped: cancelled"),
        "{}",
        text_of(&cancelled)
    );
    provider_aborted(&fake, 1).await;
    let again = client
        .call_tool(call("call_cancel", json!({"call_id": id})))
        .await
        .unwrap();
    assert!(
        text_of(&again).contains("had already ended: cancelled"),
        "{}",
        text_of(&again)
    );
    let result = client
        .call_tool(call("call_result", json!({"call_id": id})))
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(true));
    assert!(
        text_of(&result).contains("cancelled by the client"),
        "{}",
        text_of(&result)
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn bad_call_ids_and_waits_get_clear_errors() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    for (args, expected) in [
        (json!({"call_id": "nope"}), "is not a call id"),
        (
            json!({"call_id": "01a2132d-05c7-76ba-ab75-235da0d3ad5f"}),
            "it never existed",
        ),
        (
            json!({"call_id": "01a2132d-05c7-76ba-ab75-235da0d3ad5f", "wait_s": -1}),
            "wait_s must be 0 or more",
        ),
        (json!({"wait_s": 1}), "missing field `call_id`"),
    ] {
        let r = client
            .call_tool(call("call_result", args.clone()))
            .await
            .unwrap();
        assert_eq!(r.is_error, Some(true), "{args}");
        assert!(text_of(&r).contains(expected), "{args}: {}", text_of(&r));
    }
    // A huge wait is capped below the client's patience, not honoured.
    let done = client.call_tool(chat("quick", "fake-fast")).await.unwrap();
    let again = client
        .call_tool(call(
            "call_result",
            json!({"call_id": call_id_of(&done), "wait_s": 1e9}),
        ))
        .await
        .unwrap();
    assert_eq!(text_of(&again), "echo: quick");
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_daemon_crash_call_result_says_the_call_was_interrupted() {
    let fake = Fake::start();
    let listen = format!("127.0.0.1:{}", free_port());
    let home = temp_home();
    let mut daemon = Daemon::start_in(home.clone(), &listen, &fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let peer = client.peer().clone();
    let pending = tokio::spawn(async move { peer.call_tool(chat("doomed", "fake-hang")).await });
    at_provider(&fake, 1).await;
    // The record is written as the call starts, not waited for: kill the daemon once it is in
    // the store (a kill in its first milliseconds is another case), which a loaded machine may
    // take a moment to reach.
    running_chat(&daemon).await;
    daemon.signal("-KILL");
    let error = pending.await.unwrap().unwrap_err().to_string();
    let id = error
        .split("while call ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    drop(daemon.proc.take());
    let _daemon = Daemon::start_in(home, &listen, &fake, &[]);
    let result = client
        .call_tool(call("call_result", json!({"call_id": id})))
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(true));
    let text = text_of(&result);
    assert!(text.contains("was interrupted and has no result"), "{text}");
    assert!(text.contains("Run it again"), "{text}");
    client.cancel().await.unwrap();
}

/// A client that declares the MCP tasks extension.
#[derive(Clone)]
struct TaskClient;

impl rmcp::ClientHandler for TaskClient {
    fn get_info(&self) -> rmcp::model::ClientConfig {
        let mut info = rmcp::model::ClientConfig::default();
        info.capabilities = rmcp::model::ClientCapabilities::builder()
            .enable_tasks()
            .build();
        info.client_info = rmcp::model::Implementation::new("task-tests", "1.0");
        info
    }
}

#[tokio::test]
async fn a_tasks_client_gets_a_task_and_polls_it_to_the_answer() {
    use rmcp::model::{CallToolResponse, CancelTaskParams, GetTaskParams, TaskPayload};
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let client = stdio_client_with(&daemon.stdio_env(), TaskClient).await;
    let peer = client.peer().clone();
    let CallToolResponse::Task(created) = peer
        .call_tool_once(chat("as a task", "fake-delay-1000"))
        .await
        .unwrap()
    else {
        panic!("a long tool answers a tasks client with a task");
    };
    let id = created.task.task_id.clone();
    assert!(created.task.poll_interval_ms.is_some());
    let until = Instant::now() + Duration::from_secs(20);
    let result = loop {
        let task = peer.get_task(GetTaskParams::new(id.clone())).await.unwrap();
        match task.task.payload {
            TaskPayload::Working => {
                assert!(Instant::now() < until, "task never completed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            TaskPayload::Completed { result } => break result,
            other => panic!("unexpected task state {other:?}"),
        }
    };
    assert_eq!(result["content"][0]["text"], "echo: as a task");
    assert_eq!(
        daemon.final_record(&id).state.as_str(),
        "succeeded",
        "the task is the call record"
    );
    // Quick tools still answer at once.
    let CallToolResponse::Complete(version) = peer
        .call_tool_once(CallToolRequestParams::new("version"))
        .await
        .unwrap()
    else {
        panic!("version is not a task");
    };
    assert!(text_of(&version).contains(exai::VERSION));

    let CallToolResponse::Task(hung) = peer
        .call_tool_once(chat("hang", "fake-hang"))
        .await
        .unwrap()
    else {
        panic!("expected a task");
    };
    at_provider(&fake, 1).await;
    peer.cancel_task(CancelTaskParams::new(hung.task.task_id.clone()))
        .await
        .unwrap();
    provider_aborted(&fake, 1).await;
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let task = peer
            .get_task(GetTaskParams::new(hung.task.task_id.clone()))
            .await
            .unwrap();
        if matches!(task.task.payload, TaskPayload::Cancelled) {
            break;
        }
        assert!(
            Instant::now() < until,
            "cancelled task never showed as cancelled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unknown = peer
        .get_task(GetTaskParams::new("01a2132d-05c7-76ba-ab75-235da0d3ad5f"))
        .await
        .unwrap_err();
    assert!(
        unknown.to_string().contains("expired or never existed"),
        "{unknown}"
    );
    client.cancel().await.unwrap();
}

/// The 2025-11-25 flow, raw: task-augmented tools/call, tasks/get, tasks/list, tasks/result,
/// tasks/cancel, errors; plain calls of the same session unaffected.
fn legacy_task_flow(fake: &Fake, daemon: &Daemon, args: &[&str]) {
    let mut raw = RawClient::start(&daemon.stdio_env(), args);
    let init = raw.ok(
        "initialize",
        json!({"protocolVersion": "2025-11-25",
               "capabilities": {"tasks": {"list": {}, "cancel": {}}},
               "clientInfo": {"name": "legacy-raw", "version": "1"}}),
    );
    assert_eq!(init["protocolVersion"], "2025-11-25");
    assert_eq!(
        init["capabilities"]["tasks"],
        json!({"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}),
        "{init}"
    );
    raw.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));

    let tools = raw.ok("tools/list", json!({}))["tools"].clone();
    let support = |name: &str| {
        tools
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| t["execution"]["taskSupport"].clone())
            .unwrap()
    };
    assert_eq!(support("chat"), "optional");
    assert_eq!(support("version"), Value::Null, "quick tools are not tasks");

    let started = Instant::now();
    let created = raw.ok(
        "tools/call",
        json!({"name": "chat", "arguments": {"prompt": "legacy task", "model": "fake-delay-3000"},
               "task": {"ttl": 60000}}),
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the task came at once"
    );
    let task = &created["task"];
    let id = task["taskId"].as_str().unwrap().to_string();
    assert_eq!(task["status"], "working", "{created}");
    assert!(task["ttl"].as_u64().unwrap() >= 60000, "{created}");
    assert!(task["pollInterval"].as_u64().is_some(), "{created}");
    assert!(
        task["createdAt"].as_str().unwrap().ends_with('Z'),
        "{created}"
    );

    let got = raw.ok("tasks/get", json!({"taskId": id}));
    assert_eq!(got["status"], "working", "{got}");
    assert_eq!(got["taskId"], id.as_str());
    let listed = raw.ok("tasks/list", json!({}));
    assert!(
        listed["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["taskId"] == id.as_str()),
        "{listed}"
    );

    // A plain call in the same session still answers with the result itself.
    let plain = raw.ok(
        "tools/call",
        json!({"name": "chat", "arguments": {"prompt": "plain", "model": "fake-fast"}}),
    );
    assert_eq!(plain["content"][0]["text"], "echo: plain", "{plain}");
    assert!(plain.get("task").is_none());
    // A quick tool is no task (taskSupport "forbidden").
    let refused = raw.err(
        "tools/call",
        json!({"name": "version", "arguments": {}, "task": {"ttl": 1000}}),
    );
    assert_eq!(refused["code"], -32601, "{refused}");

    // tasks/result waits for the end and returns the call's own answer.
    let answer = raw.ok("tasks/result", json!({"taskId": id}));
    assert_eq!(
        answer["content"][0]["text"], "echo: legacy task",
        "{answer}"
    );
    assert_eq!(
        answer["_meta"]["io.modelcontextprotocol/related-task"]["taskId"],
        id.as_str()
    );
    assert_eq!(answer["_meta"]["exai.dev/callId"], id.as_str());
    assert!(answer.get("resultType").is_none(), "{answer}");
    assert_eq!(
        raw.ok("tasks/get", json!({"taskId": id}))["status"],
        "completed"
    );
    let record = daemon.final_record(&id);
    assert_eq!(
        record.state.as_str(),
        "succeeded",
        "the task is the call record"
    );
    assert_eq!(record.task.as_deref(), Some("2025-11-25"));
    assert_eq!(record.delivery, Delivery::DeliveredByTasksResult);

    // tasks/cancel stops another task; the provider sees the abort.
    let hung = raw.ok(
        "tools/call",
        json!({"name": "chat", "arguments": {"prompt": "hang", "model": "fake-hang"},
               "task": {"ttl": 60000}}),
    )["task"]["taskId"]
        .as_str()
        .unwrap()
        .to_string();
    wait_until(
        "the hung call at the provider",
        Duration::from_secs(10),
        || (fake.stats()["in_flight"].as_u64()? == 1).then_some(()),
    );
    let cancelled = raw.ok("tasks/cancel", json!({"taskId": hung}));
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["taskId"], hung.as_str());
    wait_until("the abort at the provider", Duration::from_secs(10), || {
        (fake.stats()["aborted"].as_u64()? == 1).then_some(())
    });
    assert_eq!(
        raw.ok("tasks/get", json!({"taskId": hung}))["status"],
        "cancelled"
    );
    let again = raw.err("tasks/cancel", json!({"taskId": hung}));
    assert_eq!(again["code"], -32602, "{again}");
    assert!(
        again["message"]
            .as_str()
            .unwrap()
            .contains("already cancelled"),
        "{again}"
    );
    let result = raw.ok("tasks/result", json!({"taskId": hung}));
    assert_eq!(result["isError"], true, "{result}");
    assert!(
        result["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("cancelled by the client"),
        "{result}"
    );

    let unknown = "01a2132d-05c7-76ba-ab75-235da0d3ad5f";
    for method in ["tasks/get", "tasks/result", "tasks/cancel"] {
        let error = raw.err(method, json!({"taskId": unknown}));
        assert_eq!(error["code"], -32602, "{method}: {error}");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("expired or never existed"),
            "{method}: {error}"
        );
    }
    let error = raw.err("tasks/list", json!({"cursor": "not-a-cursor"}));
    assert_eq!(error["code"], -32602, "{error}");
}

#[test]
fn a_2025_11_25_client_runs_chat_as_a_task_via_the_daemon() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    legacy_task_flow(&fake, &daemon, &[]);
}

#[test]
fn a_2025_11_25_client_runs_chat_as_a_task_in_process() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    legacy_task_flow(&fake, &daemon, &["--no-daemon"]);
}

#[tokio::test]
async fn short_ids_find_calls_and_relayed_failures_keep_their_reason() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[("EXAI_RETRY_ATTEMPTS", "1")]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let failed = client
        .call_tool(chat("fail please", "fake-500"))
        .await
        .unwrap();
    assert_eq!(failed.is_error, Some(true));
    let id = call_id_of(&failed);
    // Time-ordered ids share their start with calls of the same moment: the end is unique.
    let tail = &id[id.len() - 8..];
    let relayed = client
        .call_tool(call("call_result", json!({"call_id": tail})))
        .await
        .unwrap();
    assert_eq!(relayed.is_error, Some(true));
    assert!(text_of(&relayed).contains("500"), "{}", text_of(&relayed));
    // The relayed answer names the call it came from; the call_result call has its own record.
    assert_eq!(call_id_of(&relayed), id);
    let relays = daemon
        .read_store(|store| {
            store.list(&exai::store::CallFilter {
                tool: Some("call_result".into()),
                limit: 5,
                ..Default::default()
            })
        })
        .unwrap();
    let record = daemon.final_record(&relays[0].id);
    assert!(
        record
            .error_message
            .as_deref()
            .is_some_and(|m| m.contains("500")),
        "a failed row carries its reason: {record:?}"
    );
    let (ok, shown) = daemon.cli(&["calls", "show", tail]);
    assert!(ok && shown.contains(&id), "{shown}");
    let vague = client
        .call_tool(call("call_result", json!({"call_id": "0"})))
        .await
        .unwrap();
    assert!(
        text_of(&vague).contains("first or last 6+ characters"),
        "{}",
        text_of(&vague)
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_running_call_s_record_names_its_model() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let slow = cancellable_call(&client, chat("take your time", "fake-delay-4000")).await;
    // The record names the model while the call runs (it used to only at the end).
    let listed = wait_until_async(
        "exai calls --running to name the model",
        Duration::from_secs(10),
        || {
            let (ok, text) = daemon.cli(&["calls", "--running"]);
            (ok && text.contains("fake-delay-4000")).then_some(text)
        },
    )
    .await;
    assert!(listed.contains("running"), "{listed}");
    slow.cancel(None).await.unwrap();
    client.cancel().await.unwrap();
}
