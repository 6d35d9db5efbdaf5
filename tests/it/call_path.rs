//! The call path end to end: real `exai daemon`, real `exai stdio`, the rmcp client, the fake provider.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use exai::store::Delivery;
use rmcp::model::CallToolRequestParams;
use serde_json::json;

#[tokio::test]
async fn tools_list_and_a_chat_answer_leave_a_complete_record() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let tools = client.list_all_tools().await.unwrap();
    let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "analyze",
            "call_cancel",
            "call_list",
            "call_result",
            "challenge",
            "chat",
            "clink",
            "codereview",
            "consensus",
            "debug",
            "docgen",
            "listmodels",
            "planner",
            "precommit",
            "refactor",
            "secaudit",
            "status",
            "testgen",
            "thinkdeep",
            "threads",
            "tracer",
            "version"
        ]
    );

    let result = client
        .call_tool(chat("hello exai", "fake-fast"))
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(false));
    assert_eq!(text_of(&result), "echo: hello exai");
    let id = call_id_of(&result);
    let record = daemon.final_record(&id);
    assert_eq!(record.state.as_str(), "succeeded");
    assert_eq!(record.tool, "chat");
    assert_eq!(record.model.as_deref(), Some("fake-fast"));
    assert_eq!(record.client_name.as_deref(), Some("exai-tests"));
    assert_eq!(record.transport.as_str(), "ws");
    assert!(record.tokens_out.unwrap_or(0) > 0);
    assert!(record.result.unwrap().contains("echo: hello exai"));
    let delivered = wait_until("delivery recorded", Duration::from_secs(5), || {
        daemon
            .record(&id)
            .filter(|r| r.delivery == Delivery::Delivered)
    });
    assert_eq!(delivered.delivery, Delivery::Delivered);
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_calls_on_one_session_each_get_their_own_answer() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let peer = client.peer().clone();
    let calls = (0..200).map(|i| {
        let peer = peer.clone();
        async move {
            let result = peer
                .call_tool(chat(&format!("question {i}"), "fake-delay-300"))
                .await
                .unwrap();
            (i, text_of(&result))
        }
    });
    let answers = futures::future::join_all(calls).await;
    for (i, text) in answers {
        assert_eq!(text, format!("echo: question {i}"));
    }
    assert_eq!(fake.stats()["requests"], 200);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn progress_arrives_during_a_long_call_and_stops_at_the_answer() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (client, seen) = stdio_client(&daemon.stdio_env(), &[]).await;
    let started = Instant::now();
    let result = client
        .call_tool(chat("slow one", "fake-stream-12x1000"))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(11));
    assert!(
        text_of(&result).ends_with("echo: slow one"),
        "{}",
        text_of(&result)
    );
    let progress = seen.progress.lock().unwrap().clone();
    assert!(
        progress.len() >= 20,
        "expected a heartbeat every 0.5 s, got {}",
        progress.len()
    );
    for pair in progress.windows(2) {
        assert!(
            pair[1].progress > pair[0].progress,
            "progress must increase"
        );
    }
    let messages: Vec<_> = progress.iter().filter_map(|p| p.message.clone()).collect();
    assert!(
        messages.iter().all(|m| m.starts_with("chat")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("streaming") && m.contains("tokens")),
        "{messages:?}"
    );
    // None after the response: the count stays put.
    let count = progress.len();
    let _ = client
        .call_tool(CallToolRequestParams::new("version"))
        .await
        .unwrap();
    let after_version = seen.progress.lock().unwrap().len();
    assert!(
        after_version - count <= 1,
        "only the version call's own start progress may follow"
    );
    let record = daemon.final_record(&call_id_of(&result));
    assert!(record.progress_count >= 20);
    assert!(record.last_progress.unwrap().contains("streaming"));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn the_deadline_ends_a_hung_call_with_a_clear_error_and_drops_the_upstream_request() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[("EXAI_CALL_TIMEOUT_S", "1.5")]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let result = client
        .call_tool(chat("anyone there?", "fake-hang"))
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(true));
    let text = text_of(&result);
    assert!(text.contains("timed out after 1.5 s"), "{text}");
    assert!(text.contains("while waiting for the first token"), "{text}");
    let record = daemon.final_record(&call_id_of(&result));
    assert_eq!(record.state.as_str(), "timed_out");
    assert_eq!(record.error_kind.as_deref(), Some("deadline"));
    wait_until("the fake saw the abort", Duration::from_secs(5), || {
        (fake.stats()["aborted"].as_u64()? >= 1).then_some(())
    });
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_silent_provider_hits_the_idle_timeout() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[("EXAI_PROVIDER_IDLE_TIMEOUT_S", "1")]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let result = client
        .call_tool(chat("stall", "fake-stall-2"))
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(true));
    let text = text_of(&result);
    assert!(
        text.contains("sent nothing for 1 s while streaming the answer"),
        "{text}"
    );
    assert_eq!(
        daemon.final_record(&call_id_of(&result)).state.as_str(),
        "timed_out"
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn cancel_stops_the_call_and_closes_the_provider_request() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let handle = cancellable_call(&client, chat("never mind", "fake-hang")).await;
    at_provider(&fake, 1).await;
    handle
        .cancel(Some("user pressed Esc".into()))
        .await
        .unwrap();
    provider_aborted(&fake, 1).await;
    let cancelled = wait_until_async("a cancelled record", Duration::from_secs(10), || {
        let rows = daemon
            .read_store(|store| {
                store.list(&exai::store::CallFilter {
                    failed_only: true,
                    limit: 5,
                    ..Default::default()
                })
            })
            .ok()?;
        // The end and its delivery are one write; the record is read until it shows them.
        rows.into_iter()
            .find(|r| r.state.as_str() == "cancelled" && r.delivery != Delivery::Pending)
    })
    .await;
    assert!(
        cancelled
            .error_message
            .unwrap()
            .contains("user pressed Esc")
    );
    assert_eq!(cancelled.delivery, Delivery::NotSentCancelled);
    // The session goes on.
    let result = client
        .call_tool(chat("still here?", "fake-fast"))
        .await
        .unwrap();
    assert_eq!(text_of(&result), "echo: still here?");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_client_that_leaves_mid_call_does_not_lose_the_result() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let peer = client.peer().clone();
    let pending =
        tokio::spawn(async move { peer.call_tool(chat("long", "fake-delay-1500")).await });
    calls_in_flight(&daemon, 1).await;
    client.cancel().await.unwrap();
    assert!(pending.await.unwrap().is_err());
    let record = wait_until_async("the result kept", Duration::from_secs(10), || {
        let rows = daemon
            .read_store(|store| {
                store.list(&exai::store::CallFilter {
                    tool: Some("chat".into()),
                    limit: 5,
                    ..Default::default()
                })
            })
            .ok()?;
        rows.into_iter()
            .find(|r| r.state.as_str() == "succeeded" && r.delivery != Delivery::Pending)
    })
    .await;
    assert!(record.result.unwrap().contains("echo: long"));
    assert!(
        matches!(record.delivery, Delivery::ClientGone | Delivery::Failed(_)),
        "{}",
        record.delivery
    );
    assert_eq!(daemon.healthz()["status"], "ok");
    // Another client of the same daemon is unaffected.
    let (other, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    assert_eq!(
        text_of(&other.call_tool(chat("next", "fake-fast")).await.unwrap()),
        "echo: next"
    );
    other.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_daemon_fails_calls_at_once_and_the_session_survives_a_restart() {
    let fake = Fake::start();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let home = temp_home();
    let mut daemon = Daemon::start_in(home.clone(), &listen, &fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let peer = client.peer().clone();
    let pending = tokio::spawn(async move { peer.call_tool(chat("doomed", "fake-hang")).await });
    at_provider(&fake, 1).await;
    // The record is durable milliseconds after receipt (group commit), which a loaded machine
    // can stretch past the provider's answer: kill only once it is there, as a user would
    // find it.
    wait_until_async("the running call's record", Duration::from_secs(10), || {
        let rows = daemon
            .read_store(|store| {
                store.list(&exai::store::CallFilter {
                    running_only: true,
                    limit: 5,
                    ..Default::default()
                })
            })
            .ok()?;
        (!rows.is_empty()).then_some(())
    })
    .await;
    let killed = Instant::now();
    daemon.signal("-KILL");
    let error = pending.await.unwrap().unwrap_err().to_string();
    assert!(
        killed.elapsed() < Duration::from_secs(1),
        "answered after {:?}",
        killed.elapsed()
    );
    assert!(
        error.contains("lost the connection to the exai daemon"),
        "{error}"
    );
    assert!(error.contains("exai calls show"), "{error}");
    let call_id = error
        .split("while call ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    drop(daemon.proc.take());

    let daemon = Daemon::start_in(home, &listen, &fake, &[]);
    let result = client
        .call_tool(chat("after restart", "fake-fast"))
        .await
        .unwrap();
    assert_eq!(text_of(&result), "echo: after restart");
    let record = daemon.final_record(&call_id);
    assert_eq!(record.state.as_str(), "interrupted");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn provider_failures_are_tool_errors_with_clear_text() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[("EXAI_RETRY_ATTEMPTS", "1")]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    for (model, expected, kind) in [
        ("fake-500", "answered HTTP 500", "provider_http_error"),
        ("fake-401", "answered HTTP 401", "provider_auth"),
        ("fake-429-5", "answered HTTP 429", "provider_rate_limited"),
        ("fake-garbage", "malformed answer", "provider_garbage"),
        (
            "fake-reset",
            "could not reach custom",
            "provider_unreachable",
        ),
        ("no-such-model", "answered HTTP 404", "provider_http_error"),
    ] {
        let result = client.call_tool(chat("x", model)).await.unwrap();
        assert_eq!(result.is_error, Some(true), "{model}");
        let text = text_of(&result);
        assert!(text.contains(expected), "{model}: {text}");
        let record = daemon.final_record(&call_id_of(&result));
        assert_eq!(record.state.as_str(), "failed", "{model}");
        assert_eq!(record.error_kind.as_deref(), Some(kind), "{model}");
    }
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn bad_arguments_and_unknown_tools_get_clear_errors_and_records() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let bad = CallToolRequestParams::new("chat")
        .with_arguments(json!({"prompt": 5}).as_object().unwrap().clone());
    let result = client.call_tool(bad).await.unwrap();
    assert_eq!(result.is_error, Some(true));
    assert!(
        text_of(&result).contains("invalid arguments for chat"),
        "{}",
        text_of(&result)
    );
    assert_eq!(
        daemon
            .final_record(&call_id_of(&result))
            .error_kind
            .as_deref(),
        Some("bad_arguments")
    );

    let error = client
        .call_tool(CallToolRequestParams::new("no_such_tool"))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("unknown tool \"no_such_tool\""), "{error}");
    let rows = daemon
        .read_store(|store| {
            store.list(&exai::store::CallFilter {
                tool: Some("no_such_tool".into()),
                limit: 1,
                ..Default::default()
            })
        })
        .unwrap();
    assert_eq!(rows[0].error_kind.as_deref(), Some("unknown_tool"));
    let version = client
        .call_tool(CallToolRequestParams::new("version"))
        .await
        .unwrap();
    assert!(text_of(&version).contains(exai::VERSION));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn status_shows_calls_in_flight_and_recent_failures() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let _ = client.call_tool(chat("x", "fake-500")).await.unwrap();
    let peer = client.peer().clone();
    let slow = tokio::spawn(async move { peer.call_tool(chat("slow", "fake-delay-2000")).await });
    calls_in_flight(&daemon, 1).await;
    let status = client
        .call_tool(CallToolRequestParams::new("status"))
        .await
        .unwrap();
    let s = status.structured_content.clone().unwrap();
    assert_eq!(s["calls_in_flight"].as_array().unwrap().len(), 1);
    assert!(
        s["calls_in_flight"][0]["progress"]
            .as_str()
            .unwrap()
            .starts_with("chat · fake-delay-2000")
    );
    assert!(
        s["recent_failures"][0]["error"]
            .as_str()
            .unwrap()
            .contains("HTTP 500")
    );
    slow.await.unwrap().unwrap();
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn no_daemon_mode_serves_in_process() {
    let fake = Fake::start();
    let home = temp_home();
    let env = in_process_env(&fake, &home, &[]);
    let (client, _) = stdio_client(&env, &["--no-daemon"]).await;
    let result = client.call_tool(chat("local", "fake-fast")).await.unwrap();
    assert_eq!(text_of(&result), "echo: local");
    let version = client
        .call_tool(CallToolRequestParams::new("version"))
        .await
        .unwrap();
    assert!(
        text_of(&version).contains("no-daemon"),
        "{}",
        text_of(&version)
    );
    let id = call_id_of(&result);
    let record = read_store_of_home(&home, |store| store.get(&id)).unwrap();
    assert_eq!(record.unwrap().transport.as_str(), "stdio");
    assert!(!home.join("daemon.json").exists(), "no daemon was started");
    client.cancel().await.unwrap();
}

/// An MCP client need not read its server's stderr. Here every call is logged there (EXAI_LOG=info),
/// many times what a pipe holds, and the client never reads it: every call is still answered.
#[tokio::test]
async fn calls_are_answered_when_the_client_never_reads_stderr() {
    // About a kilobyte of lines a call: this is several times the 64 KiB a pipe holds.
    const CALLS: usize = 400;
    let fake = Fake::start();
    let home = temp_home();
    let env = in_process_env(&fake, &home, &[("EXAI_LOG", "info")]);
    let (transport, stderr) =
        exai_stdio_with_stderr(&env, &["--no-daemon"], std::process::Stdio::piped());
    let _never_read = stderr.expect("stderr is a pipe");
    let client = rmcp::ServiceExt::serve((), transport)
        .await
        .expect("initialize");
    for i in 0..CALLS {
        let prompt = format!("unread stderr {i}");
        let answer = tokio::time::timeout(
            Duration::from_secs(20),
            client.call_tool(chat(&prompt, "fake-fast")),
        )
        .await
        .unwrap_or_else(|_| panic!("call {i} got no answer: the server is stuck writing stderr"))
        .unwrap();
        assert_eq!(text_of(&answer), format!("echo: {prompt}"));
    }
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn the_tool_list_is_cheap_and_disabled_tools_are_hidden() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[("DISABLED_TOOLS", "status,listmodels")]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    assert!(
        !names.contains(&"status".to_string()) && !names.contains(&"listmodels".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"chat".to_string()));
    let error = client
        .call_tool(CallToolRequestParams::new("status"))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("unknown tool \"status\""), "{error}");
    client.cancel().await.unwrap();

    // What the whole list costs an agent's context (Zen's is about 30,000 tokens).
    let daemon = Daemon::start(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let all = client.list_all_tools().await.unwrap();
    let cost = exai::tokens::count(&serde_json::to_string(&all).unwrap());
    assert!(cost <= 10_000, "tools/list costs {cost} tokens");
    eprintln!("tools/list: {} tools, {cost} tokens", all.len());
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn challenge_turns_a_claim_into_a_reassessment_without_a_model() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let args = json!({"prompt": "You are wrong, the cache is never invalidated."});
    let result = client
        .call_tool(
            CallToolRequestParams::new("challenge")
                .with_arguments(args.as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    let text = text_of(&result);
    assert!(text.contains("instead of agreeing"), "{text}");
    assert!(
        text.ends_with("You are wrong, the cache is never invalidated."),
        "{text}"
    );
    assert_eq!(
        result.structured_content.unwrap()["status"],
        "challenge_accepted"
    );
    assert_eq!(fake.stats()["requests"], 0, "no model call");
    let empty = client
        .call_tool(
            CallToolRequestParams::new("challenge")
                .with_arguments(json!({"prompt": " "}).as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    assert_eq!(empty.is_error, Some(true));
    client.cancel().await.unwrap();
}

/// Over HTTP the answer goes to rmcp, which writes it itself: the call's end records that, in the
/// commit that comes before the answer, so the record says so the moment the answer arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_call_s_record_names_its_delivery_when_its_answer_arrives() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let url = format!("http://{}/mcp", daemon.addr);
    let mut session = HttpSession::open(&url, &daemon.token()).await;
    let result = session
        .call_tool(
            "chat",
            json!({"prompt": "hello over http", "model": "fake-fast"}),
        )
        .await;
    let id = result["_meta"]["exai.dev/callId"].as_str().unwrap();
    let record = daemon
        .record(id)
        .expect("the record is committed before the answer is sent");
    assert_eq!(record.state.as_str(), "succeeded");
    assert_eq!(record.delivery, Delivery::HandedToHttp);
}
