//! A daemon whose Postgres database goes away mid-run: calls are still answered, what needs the
//! store says so clearly, and the daemon recovers by itself when the database returns.

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn a_daemon_that_loses_its_database_answers_says_what_it_could_not_keep_and_recovers() {
    if !on_postgres() {
        eprintln!("skipped: a test of the PostgreSQL store (set EXAI_TEST_DATABASE_URL)");
        return;
    }
    let cluster = Cluster::start(false);
    let url = cluster.url();
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[("EXAI_DATABASE_URL", &url)]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let before = client
        .call_tool(chat("before the outage", "fake-fast"))
        .await
        .unwrap();
    let before_id = call_id_of(&before);
    assert_eq!(daemon.final_record(&before_id).state.as_str(), "succeeded");

    cluster.pause();
    // The model's answer still comes, with a note that it was not recorded and why.
    let during = client
        .call_tool(chat("during the outage", "fake-fast"))
        .await
        .unwrap();
    let text = all_text_of(&during);
    assert_eq!(during.is_error, Some(false), "{text}");
    assert!(text.contains("echo: during the outage"), "{text}");
    assert!(
        text.contains("exai could not record this call")
            && text.contains("postgres://127.0.0.1:")
            && text.contains("Connection refused"),
        "{text}"
    );
    // What needs the store says the store is the problem.
    let fetched = client
        .call_tool(call("call_result", json!({ "call_id": before_id })))
        .await
        .unwrap();
    let fetched_text = all_text_of(&fetched);
    assert_eq!(fetched.is_error, Some(true), "{fetched_text}");
    assert!(fetched_text.contains("call store"), "{fetched_text}");
    // Control messages and tools that need no store go on.
    assert!(!client.list_all_tools().await.unwrap().is_empty());
    let status = all_text_of(&client.call_tool(call("status", json!({}))).await.unwrap());
    assert!(status.contains("call store write failed"), "{status}");
    for shown in [&text, &fetched_text, &status] {
        assert!(!shown.contains(&cluster.password()), "{shown}");
    }

    cluster.resume();
    // The next call is recorded again, with no note: the daemon reconnected by itself.
    let after = client
        .call_tool(chat("after the outage", "fake-fast"))
        .await
        .unwrap();
    let after_text = all_text_of(&after);
    assert!(!after_text.contains("could not record"), "{after_text}");
    assert_eq!(
        daemon.final_record(&call_id_of(&after)).state.as_str(),
        "succeeded"
    );
    let fetched = client
        .call_tool(call("call_result", json!({ "call_id": before_id })))
        .await
        .unwrap();
    assert!(
        all_text_of(&fetched).contains("echo: before the outage"),
        "{}",
        all_text_of(&fetched)
    );
    assert_eq!(logged(&daemon.home, &cluster.password()), 0);
    client.cancel().await.unwrap();
}
