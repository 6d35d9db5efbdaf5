//! Replicas: two daemons (A and B) on one PostgreSQL database serve the same calls — a call
//! started on A is listed, fetched and cancelled through B, a workflow's steps alternate
//! between them, and when A is killed mid-call B marks its call interrupted within the lease.
//! Run only with `EXAI_TEST_DATABASE_URL` set (`replicas` says so and skips otherwise).

use std::time::{Duration, Instant};

use exai::store::{CallState, ReplicaRow};
use serde_json::json;

use crate::common::*;

/// The replica registered for `daemon`'s process.
fn replica_of(daemon: &Daemon) -> ReplicaRow {
    let pid = i64::from(daemon.pid());
    daemon
        .read_store(|store| store.replicas())
        .unwrap()
        .into_iter()
        .find(|replica| replica.pid == pid)
        .expect("the daemon registered itself as a replica")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_one_replica_is_listed_and_fetched_through_the_other() {
    let fake = Fake::start();
    let Some(ReplicaPair {
        a,
        b,
        client_a,
        client_b,
    }) = replica_pair(&fake, &[]).await
    else {
        return;
    };
    let peer = client_a.peer().clone();
    let on_a = tokio::spawn(async move {
        // Long enough to be listed as running on a loaded 2-core CI machine (3 s was not).
        peer.call_tool(chat("slow question", "fake-delay-8000"))
            .await
    });
    let row = running_chat(&a).await;
    assert_eq!(row.replica.as_deref(), Some(replica_of(&a).id.as_str()));
    assert_ne!(replica_of(&a).id, replica_of(&b).id);

    let listed = client_b
        .call_tool(call("call_list", json!({})))
        .await
        .unwrap();
    let calls = listed.structured_content.unwrap()["calls"].clone();
    let mine = calls
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["call_id"] == row.id.as_str())
        .unwrap_or_else(|| panic!("B lists A's call: {calls}"));
    assert_eq!(mine["state"], "running");

    let started = Instant::now();
    let fetched = client_b
        .call_tool(call(
            "call_result",
            json!({"call_id": row.id, "wait_s": 30}),
        ))
        .await
        .unwrap();
    assert_eq!(text_of(&fetched), "echo: slow question", "{fetched:?}");
    assert_eq!(
        call_id_of(&fetched),
        row.id,
        "A's own answer, fetched through B"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "B answered as soon as A stored the answer, not at the end of the 30 s wait"
    );
    let answered_on_a = on_a.await.unwrap().unwrap();
    assert_eq!(text_of(&answered_on_a), "echo: slow question");
    assert_eq!(
        fake.stats()["by_model"]["fake-delay-8000"],
        1,
        "one provider call"
    );
    client_a.cancel().await.unwrap();
    client_b.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_one_replica_is_cancelled_through_the_other() {
    let fake = Fake::start();
    // Unused replicas are bound all the same: a daemon stops when dropped.
    let Some(ReplicaPair {
        a,
        b: _b,
        client_a,
        client_b,
    }) = replica_pair(&fake, &[]).await
    else {
        return;
    };
    let peer = client_a.peer().clone();
    let on_a = tokio::spawn(async move { peer.call_tool(chat("never mind", "fake-hang")).await });
    let row = running_chat(&a).await;
    at_provider(&fake, 1).await;

    let cancelled = client_b
        .call_tool(call("call_cancel", json!({"call_id": row.id})))
        .await
        .unwrap();
    let text = text_of(&cancelled);
    let replica = replica_of(&a);
    assert!(
        text.contains(&format!(
            "runs on {replica}: the cancel was sent to it; the call stopped: cancelled"
        )),
        "{text}"
    );
    provider_aborted(&fake, 1).await;
    let record = a.final_record(&row.id);
    assert_eq!(record.state, CallState::Cancelled);
    let reason = record.error_message.unwrap_or_default();
    assert!(
        reason.contains("cancelled by the client: call_cancel from call")
            && reason.contains("on another replica"),
        "{reason}"
    );
    assert!(record.cancel_requested.is_some());
    let _ = on_a.await.unwrap();
    client_a.cancel().await.unwrap();
    client_b.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflows_steps_alternate_replicas() {
    let fake = Fake::start();
    // Unused replicas are bound all the same: a daemon stops when dropped.
    let Some(ReplicaPair {
        a: _a,
        b: _b,
        client_a,
        client_b,
    }) = replica_pair(&fake, &[]).await
    else {
        return;
    };
    let step = |number: u64, continuation: Option<&str>| {
        let mut args = json!({
            "step": format!("Step {number} of the investigation"),
            "step_number": number, "total_steps": 3, "next_step_required": number < 3,
            "findings": format!("finding {number}"),
            "model": "fake-fast",
        });
        if let Some(id) = continuation {
            args["continuation_id"] = json!(id);
        }
        call("debug", args)
    };
    let first = answer_of(&client_a.call_tool(step(1, None)).await.unwrap());
    let id = first["continuation_id"].as_str().unwrap().to_string();
    let second = answer_of(&client_b.call_tool(step(2, Some(&id))).await.unwrap());
    assert_eq!(
        second["progress"]["steps_recorded"], 2,
        "B read A's step from the shared thread: {second}"
    );
    let last = client_a.call_tool(step(3, Some(&id))).await.unwrap();
    let done = answer_of(&last);
    assert_eq!(done["summary"]["steps_taken"], 3, "{done}");
    let question = fake.last_messages("fake-fast")[1]["content"]
        .as_str()
        .unwrap()
        .to_string();
    for n in 1..=3 {
        assert!(question.contains(&format!("finding {n}")), "{question}");
    }
    client_a.cancel().await.unwrap();
    client_b.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_call_has_its_call_interrupted_by_another_within_the_lease() {
    const LEASE: Duration = Duration::from_secs(2);
    let fake = Fake::start();
    let Some(ReplicaPair {
        mut a,
        b,
        client_a,
        client_b,
    }) = replica_pair(&fake, &[("EXAI_REPLICA_LEASE_S", "2")]).await
    else {
        return;
    };
    let peer = client_a.peer().clone();
    let doomed = tokio::spawn(async move { peer.call_tool(chat("doomed", "fake-hang")).await });
    let row = running_chat(&a).await;
    at_provider(&fake, 1).await;
    let (replica, pid) = (replica_of(&a), a.pid());

    a.signal("-KILL");
    let killed = Instant::now();
    let record = wait_until_async(
        "B to mark A's call interrupted",
        Duration::from_secs(15),
        || {
            b.record(&row.id)
                .filter(|r| r.state == CallState::Interrupted)
        },
    )
    .await;
    let took = killed.elapsed();
    assert!(
        took <= LEASE + Duration::from_secs(2),
        "interrupted {took:?} after the kill; the lease is {LEASE:?}"
    );
    let message = record.error_message.unwrap();
    assert!(
        message.starts_with(&format!(
            "replica {} (host {}, pid {pid}) stopped answering; last heartbeat ",
            replica.id, replica.host
        )),
        "{message}"
    );
    assert!(
        b.read_store(|store| store.replica(&replica.id))
            .unwrap()
            .is_none(),
        "the lost replica is forgotten"
    );
    let fetched = client_b
        .call_tool(call("call_result", json!({"call_id": row.id})))
        .await
        .unwrap();
    let text = text_of(&fetched);
    assert!(
        text.contains("was interrupted and has no result") && text.contains("stopped answering"),
        "{text}"
    );
    let _ = doomed.await;
    drop(a.proc.take());
    client_b.cancel().await.unwrap();
}

/// A raw 2025-11-25 session (tasks declared) on `daemon`.
fn legacy_session(daemon: &Daemon) -> RawClient {
    let mut raw = RawClient::start(&daemon.stdio_env(), &[]);
    raw.ok(
        "initialize",
        json!({"protocolVersion": "2025-11-25",
               "capabilities": {"tasks": {"list": {}, "cancel": {}}},
               "clientInfo": {"name": "legacy-raw", "version": "1"}}),
    );
    raw.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    raw
}

#[test]
fn a_task_on_one_replica_is_polled_fetched_and_cancelled_through_the_other() {
    let fake = Fake::start();
    let Some((a, b)) = replicas(&fake, &[]) else {
        return;
    };
    let (mut on_a, mut on_b) = (legacy_session(&a), legacy_session(&b));
    let task = |raw: &mut RawClient, model: &str| {
        raw.ok(
            "tools/call",
            json!({"name": "chat", "arguments": {"prompt": "a task", "model": model},
                   "task": {"ttl": 60000}}),
        )["task"]["taskId"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let id = task(&mut on_a, "fake-delay-3000");
    let got = on_b.ok("tasks/get", json!({"taskId": id}));
    assert_eq!(got["status"], "working", "{got}");
    let replica = replica_of(&a);
    assert!(
        got["statusMessage"]
            .as_str()
            .unwrap()
            .contains(&format!("replica {}", replica.id)),
        "{got}"
    );
    let answer = on_b.ok("tasks/result", json!({"taskId": id}));
    assert_eq!(answer["content"][0]["text"], "echo: a task", "{answer}");
    assert_eq!(answer["_meta"]["exai.dev/callId"], id.as_str());

    let hung = task(&mut on_a, "fake-hang");
    wait_until(
        "the hung call at the provider",
        Duration::from_secs(10),
        || (fake.stats()["in_flight"].as_u64()? == 1).then_some(()),
    );
    let stopped = on_b.ok("tasks/cancel", json!({"taskId": hung}));
    assert_eq!(stopped["status"], "cancelled", "{stopped}");
    let record = a.final_record(&hung);
    assert_eq!(record.state, CallState::Cancelled);
    assert!(
        record
            .error_message
            .unwrap_or_default()
            .contains("tasks/cancel on another replica")
    );
}
