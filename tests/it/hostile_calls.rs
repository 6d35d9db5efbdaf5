//! Calls and records under hostile or broken conditions, through the real binary: client-chosen
//! call ids that name existing records, a corrupt store file.

use crate::common;

use common::*;
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};

fn initialized(raw: &mut RawClient) {
    raw.ok(
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "id-reuser", "version": "1"}}),
    );
    raw.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
}

async fn status_text(client: &Client) -> String {
    let status = client
        .call_tool(CallToolRequestParams::new("status"))
        .await
        .unwrap();
    all_text_of(&status)
}

fn call_id_in(result: &Value) -> String {
    result["_meta"]["exai.dev/callId"]
        .as_str()
        .unwrap_or_else(|| panic!("no call id: {result}"))
        .to_string()
}

#[test]
fn a_reused_call_id_never_overwrites_a_record() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    // Without the shim in between, a client chooses the ids it proposes.
    let mut raw = RawClient::start(&daemon.stdio_env(), &["--no-daemon"]);
    initialized(&mut raw);
    let chosen = uuid::Uuid::now_v7().to_string();
    let first = raw.ok(
        "tools/call",
        json!({"name": "version", "arguments": {}, "_meta": {"exai.dev/callId": chosen}}),
    );
    assert_eq!(call_id_in(&first), chosen);
    let second = raw.ok(
        "tools/call",
        json!({"name": "challenge", "arguments": {"prompt": "the sky is green"},
               "_meta": {"exai.dev/callId": chosen}}),
    );
    let second_id = call_id_in(&second);
    assert_ne!(
        second_id, chosen,
        "the reused id was replaced by a fresh one"
    );
    let fetched = raw.ok(
        "tools/call",
        json!({"name": "call_result", "arguments": {"call_id": chosen}}),
    );
    assert_eq!(
        fetched["content"], first["content"],
        "call_result returns the first call's answer"
    );
    assert_eq!(daemon.final_record(&chosen).tool, "version");
    assert_eq!(daemon.final_record(&second_id).tool, "challenge");
}

#[tokio::test]
async fn a_corrupt_store_is_moved_aside_and_calls_go_on() {
    if sqlite_only("a corrupt calls.sqlite3 is moved aside") {
        return;
    }
    let fake = Fake::start();
    let home = temp_home();
    let garbage = b"not a database: someone's notes, or a disk that lied".repeat(100);
    std::fs::write(home.join("calls.sqlite3"), &garbage).unwrap();
    let daemon = Daemon::start_in(home.clone(), "127.0.0.1:0", &fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let answer = client
        .call_tool(chat("still there?", "fake-fast"))
        .await
        .unwrap();
    assert_eq!(answer.is_error, Some(false), "{}", all_text_of(&answer));
    assert_eq!(
        daemon.final_record(&call_id_of(&answer)).state.as_str(),
        "succeeded"
    );
    let text = status_text(&client).await;
    assert!(
        text.contains("store: the call store was corrupt at start: moved aside to"),
        "{text}"
    );
    let aside: Vec<_> = std::fs::read_dir(&home)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("calls.sqlite3.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "moved aside once");
    assert_eq!(
        std::fs::read(aside[0].path()).unwrap(),
        garbage,
        "never deleted"
    );
    let cli = std::process::Command::new(EXAI)
        .arg("status")
        .env_clear()
        .envs(daemon.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("EXAI_LISTEN", &daemon.addr)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&cli.stdout);
    assert!(
        printed.contains("store: the call store was corrupt"),
        "{printed}"
    );
    client.cancel().await.unwrap();
}

/// A daemon on SQLite, a client of it, and another program holding the database's write lock (a
/// backup tool, a stuck CLI) until the connection returned is told `ROLLBACK`; `None` on Postgres.
async fn daemon_with_its_store_locked() -> Option<(Fake, Daemon, Client, rusqlite::Connection)> {
    if sqlite_only("another program holds calls.sqlite3's write lock") {
        return None;
    }
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let locker = rusqlite::Connection::open(daemon.home.join("calls.sqlite3")).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    Some((fake, daemon, client, locker))
}

#[tokio::test]
async fn a_locked_store_delays_nothing_forever_and_the_answer_says_it_was_not_recorded() {
    let Some((_fake, daemon, client, locker)) = daemon_with_its_store_locked().await else {
        return;
    };
    let answer = client
        .call_tool(chat("answer me anyway", "fake-fast"))
        .await
        .unwrap();
    let text = all_text_of(&answer);
    assert_eq!(answer.is_error, Some(false), "{text}");
    assert!(text.contains("echo: answer me anyway"), "{text}");
    assert!(
        text.contains("exai could not record this call") && text.contains("locked"),
        "{text}"
    );
    // Its record waits for the store, and status says so; its answer can be fetched meanwhile.
    assert_eq!(daemon.healthz()["store"]["records_waiting"], 1);
    let fetched = client
        .call_tool(call(
            "call_result",
            json!({ "call_id": call_id_of(&answer), "wait_s": 0 }),
        ))
        .await
        .unwrap();
    assert!(
        all_text_of(&fetched).contains("echo: answer me anyway"),
        "{}",
        all_text_of(&fetched)
    );
    let waiting = status_text(&client).await;
    // (call_result's own record waits too: the store is still locked.)
    assert!(
        waiting.contains("the records of 2 ended calls wait for the store to take them"),
        "{waiting}"
    );
    locker.execute_batch("ROLLBACK").unwrap();
    // Once the lock is gone, the record is written after all, with the answer.
    let record = daemon.final_record(&call_id_of(&answer));
    assert_eq!(record.state.as_str(), "succeeded");
    assert!(
        record
            .result
            .unwrap_or_default()
            .contains("echo: answer me anyway")
    );
    wait_until(
        "no record waiting",
        std::time::Duration::from_secs(10),
        || (daemon.healthz()["store"]["records_waiting"] == 0).then_some(()),
    );
    // Status names the last failure: the lock itself, or, when a call opened during the lock
    // ended just after it, that call's end finding no record (its first write was lost to the
    // lock; its whole record is then written late).
    let text = status_text(&client).await;
    assert!(
        text.contains("store: a call store write failed")
            && (text.contains("locked") || text.contains("its first write was lost")),
        "{text}"
    );
    // Once the lock is gone, calls are recorded again.
    let later = client
        .call_tool(chat("and now?", "fake-fast"))
        .await
        .unwrap();
    assert_eq!(
        daemon.final_record(&call_id_of(&later)).state.as_str(),
        "succeeded"
    );
    client.cancel().await.unwrap();
}

fn thread_of(answer: &rmcp::model::CallToolResult) -> String {
    let content = answer.structured_content.clone().unwrap_or_default();
    content["continuation_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no continuation_id: {content}"))
        .to_string()
}

/// A conversation begun while the store is locked is not lost with its save: exai keeps the
/// save, the conversation goes on through it meanwhile, and the store gets it once it is free,
/// with how the answer went out noted on the call's late record.
#[tokio::test]
async fn a_conversation_begun_while_the_store_is_locked_goes_on_and_is_saved_later() {
    let Some((fake, daemon, client, locker)) = daemon_with_its_store_locked().await else {
        return;
    };
    let first = client
        .call_tool(chat("remember 42", "fake-fast"))
        .await
        .unwrap();
    let text = all_text_of(&first);
    assert!(text.contains("exai could not record this call"), "{text}");
    let thread = thread_of(&first);
    // Nobody waits for a thread's save: it fails on the lock, and is kept, just after the answer.
    wait_until(
        "the thread's save kept to try again",
        std::time::Duration::from_secs(10),
        || (daemon.healthz()["store"]["threads_waiting"] == 1).then_some(()),
    );
    let second = client
        .call_tool(chat_with(
            json!({"prompt": "which number?", "model": "fake-fast", "continuation_id": thread}),
        ))
        .await
        .unwrap();
    assert_eq!(second.is_error, Some(false), "{}", all_text_of(&second));
    let sent = fake.last_messages("fake-fast");
    assert_eq!(sent.len(), 4, "the first exchange was replayed: {sent:?}");
    assert_eq!(sent[1]["content"], "remember 42");
    let waiting = status_text(&client).await;
    assert!(
        waiting.contains("1 conversation thread's latest turns wait for the store"),
        "{waiting}"
    );
    locker.execute_batch("ROLLBACK").unwrap();
    wait_until(
        "the thread saved and the records written",
        std::time::Duration::from_secs(20),
        || {
            let store = &daemon.healthz()["store"];
            (store["threads_waiting"] == 0 && store["records_waiting"] == 0).then_some(())
        },
    );
    let record = daemon.final_record(&call_id_of(&first));
    assert_eq!(record.delivery, exai::store::Delivery::Delivered);
    // The thread now comes from the store, with both exchanges.
    let third = client
        .call_tool(chat_with(
            json!({"prompt": "and now?", "model": "fake-fast", "continuation_id": thread}),
        ))
        .await
        .unwrap();
    assert_eq!(third.is_error, Some(false), "{}", all_text_of(&third));
    assert_eq!(fake.last_messages("fake-fast").len(), 6);
    client.cancel().await.unwrap();
}

/// A NUL character (which PostgreSQL's text cannot hold) in a prompt, and so in the model's
/// answer, or in a model name, and so in the call's error, is recorded all the same, on either
/// store.
#[tokio::test]
async fn a_nul_in_a_prompt_or_a_model_name_is_recorded() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    // A NUL in the prompt comes back in the answer; one in the model name, in the error.
    for (prompt, model, failed, state) in [
        ("before\u{0}after", "fake-fast", false, "succeeded"),
        ("which model?", "fake\u{0}fast", true, "failed"),
    ] {
        let answer = client.call_tool(chat(prompt, model)).await.unwrap();
        let text = all_text_of(&answer);
        assert_eq!(answer.is_error, Some(failed), "{text}");
        assert!(!text.contains("could not record"), "{text}");
        let record = daemon.final_record(&call_id_of(&answer));
        assert_eq!(record.state.as_str(), state, "{record:?}");
    }
    client.cancel().await.unwrap();
}

/// A record the store never took before exai stops is not dropped silently: the daemon gives the
/// store a few seconds, then names each call whose record is lost.
#[tokio::test]
async fn a_record_the_store_never_took_is_named_when_exai_stops() {
    let Some((_fake, mut daemon, client, locker)) = daemon_with_its_store_locked().await else {
        return;
    };
    let answer = client
        .call_tool(chat("never recorded", "fake-fast"))
        .await
        .unwrap();
    assert!(all_text_of(&answer).contains("exai could not record this call"));
    client.cancel().await.unwrap();
    daemon.stop();
    let lines = log_lines(&daemon.home);
    for (lost, id) in [
        ("record unwritten", call_id_of(&answer)),
        ("thread's latest save unwritten", thread_of(&answer)),
    ] {
        let named = lines
            .iter()
            .filter(|line| line.contains(lost) && line.contains(&id))
            .count();
        assert!(named >= 1, "{id} ({lost}) is not named in the log");
    }
    locker.execute_batch("ROLLBACK").unwrap();
}

/// A client whose patience runs out while the store is stuck gets its call handle in time: the
/// note that a handle went out is queued, not waited for.
#[tokio::test]
async fn a_stuck_store_does_not_make_an_impatient_client_miss_its_handle() {
    if sqlite_only("another program holds calls.sqlite3's write lock") {
        return;
    }
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[("EXAI_CLIENT_PATIENCE", "exai-tests=5")]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let locker = rusqlite::Connection::open(daemon.home.join("calls.sqlite3")).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let started = std::time::Instant::now();
    let handle = client
        .call_tool(chat("a slow question", "fake-delay-15000"))
        .await
        .unwrap();
    let answered_in = started.elapsed();
    assert!(
        answered_in < std::time::Duration::from_secs(5),
        "the handle came after {answered_in:?}, past the client's patience"
    );
    assert_eq!(
        handle.structured_content.clone().unwrap()["status"],
        "running",
        "{}",
        all_text_of(&handle)
    );
    locker.execute_batch("ROLLBACK").unwrap();
    client.cancel().await.unwrap();
}

/// A client that sends and never reads cannot make the daemon hold answers without bound: once
/// the answers due to it fill its queue, no more of its requests are read (and a client that
/// reads nothing for minutes has its session ended). Another session is answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_cannot_fill_the_daemons_memory() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let connect = || async {
        let mut request = daemon.url().into_client_request().unwrap();
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", daemon.token()).parse().unwrap(),
        );
        tokio_tungstenite::connect_async(request).await.unwrap().0
    };
    let initialize = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "flood", "version": "1"}}});
    let mut flood = connect().await;
    flood
        .send(Message::Text(initialize.to_string().into()))
        .await
        .unwrap();
    let _ = flood.next().await;
    flood
        .send(Message::Text(
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    let before = rss_bytes(daemon.pid()).unwrap();
    // 30,000 tools/list (about 30 KB of answer each, 900 MB in all), never read.
    let sending = tokio::spawn(async move {
        for id in 1..=30_000 {
            let list = json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"});
            if flood
                .send(Message::Text(list.to_string().into()))
                .await
                .is_err()
            {
                break;
            }
        }
        flood
    });
    // Another session is answered while the flood waits.
    let mut other = connect().await;
    other
        .send(Message::Text(initialize.to_string().into()))
        .await
        .unwrap();
    let answered = tokio::time::timeout(std::time::Duration::from_secs(10), other.next()).await;
    assert!(answered.is_ok(), "another session was not answered");
    // Watched for 15 s, long enough for a debug daemon to answer well past what it queues (8 MiB
    // of answers): without a bound it grew past 300 MB within 10 s, and with the queue bounded
    // by count alone (4,096 answers of 30 KB) by 120 MB and more.
    let mut most = 0;
    for _ in 0..150 {
        let grown = rss_bytes(daemon.pid()).unwrap().saturating_sub(before) >> 20;
        most = most.max(grown);
        assert!(
            grown < 100,
            "the daemon grew {grown} MB for a client that reads nothing"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    eprintln!("most the daemon grew: {most} MB");
    sending.abort();
}
