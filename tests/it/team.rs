//! A team's deployment as the README describes it: exai replicas on one PostgreSQL database behind
//! nginx (scripts/nginx.sh), driven through nginx by a minimal Streamable HTTP client. Runs when
//! the suite runs on PostgreSQL and nginx is installed.

use crate::common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Opens sessions through nginx until one lands on each replica; returns them by replica.
async fn a_session_on_each(team: &Team) -> Vec<HttpSession> {
    let mut found: Vec<Option<HttpSession>> = team.replicas.iter().map(|_| None).collect();
    for _ in 0..10 * team.replicas.len() {
        let mut session = team.session().await;
        let id = call_id_in(&session.call_tool("version", json!({})).await);
        let replica = team.replica_of_call(&id);
        found[replica].get_or_insert(session);
        if found.iter().all(Option::is_some) {
            return found.into_iter().flatten().collect();
        }
    }
    panic!("new sessions never reached every replica");
}

#[tokio::test]
async fn sessions_spread_over_the_replicas_and_each_keeps_to_its_own() {
    let fake = Fake::start();
    let Some(team) = Team::start(&fake, 2) else {
        return;
    };
    let mut served = HashSet::new();
    for _ in 0..4 {
        let mut session = team.session().await;
        let tools = session.request("tools/list", json!({})).await;
        assert!(
            tools["result"]["tools"].as_array().unwrap().len() > 5,
            "{tools}"
        );
        let mut replicas = HashSet::new();
        for n in 0..3 {
            let result = session
                .call_tool(
                    "chat",
                    json!({"prompt": format!("n{n}"), "model": "fake-fast"}),
                )
                .await;
            assert_eq!(text_in(&result), format!("echo: n{n}"));
            replicas.insert(team.replica_of_call(&call_id_in(&result)));
        }
        assert_eq!(replicas.len(), 1, "one session's calls ran on {replicas:?}");
        served.extend(replicas);
    }
    assert_eq!(
        served.len(),
        2,
        "four sessions all landed on replica {served:?}"
    );
}

#[tokio::test]
async fn a_call_made_on_one_replica_is_fetched_and_listed_on_the_other() {
    let fake = Fake::start();
    let Some(team) = Team::start(&fake, 2) else {
        return;
    };
    let mut sessions = a_session_on_each(&team).await;
    let there = &mut sessions[0];
    let made = there
        .call_tool(
            "chat",
            json!({"prompt": "made on r1", "model": "fake-fast"}),
        )
        .await;
    let id = call_id_in(&made);
    assert_eq!(team.replica_of_call(&id), 0);
    assert_eq!(
        team.replicas[0].final_record(&id).state.as_str(),
        "succeeded"
    );

    let here = &mut sessions[1];
    let fetched = here.call_tool("call_result", json!({"call_id": id})).await;
    assert_eq!(text_in(&fetched), "echo: made on r1", "{fetched}");
    let listed = here.call_tool("call_list", json!({"limit": 100})).await;
    let calls = listed["structuredContent"]["calls"].as_array().unwrap();
    assert!(
        calls.iter().any(|call| call["call_id"] == id.as_str()),
        "{listed}"
    );
    // The session asking is still on the other replica.
    let probe = here.call_tool("version", json!({})).await;
    assert_eq!(team.replica_of_call(&call_id_in(&probe)), 1);
}

#[tokio::test]
async fn a_killed_replica_is_passed_over_and_its_sessions_are_told_to_start_again() {
    let fake = Fake::start();
    let Some(mut team) = Team::start(&fake, 2) else {
        return;
    };
    let sessions = a_session_on_each(&team).await;
    team.kill(0);
    for n in 0..4 {
        let mut session = team.session().await;
        let result = session
            .call_tool(
                "chat",
                json!({"prompt": format!("after {n}"), "model": "fake-fast"}),
            )
            .await;
        assert_eq!(text_in(&result), format!("echo: after {n}"));
        assert_eq!(team.replica_of_call(&call_id_in(&result)), 1);
    }
    let orphaned = &sessions[0];
    let asked = Instant::now();
    let answer = orphaned
        .post(&json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list", "params": {}}))
        .await;
    assert_eq!(answer.status, 404, "{}", answer.body);
    assert!(
        answer.body.contains("start a new session"),
        "{}",
        answer.body
    );
    assert!(asked.elapsed() < Duration::from_secs(5));
    // The survivor's sessions go on.
    let survivor = &sessions[1];
    let answer = survivor
        .post(&json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list", "params": {}}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test]
async fn shims_reach_the_team_over_websocket_through_nginx() {
    let fake = Fake::start();
    let Some(team) = Team::start(&fake, 2) else {
        return;
    };
    // The shim's Exai-Proof handshake is two requests: both must reach one replica, whichever.
    let url = format!("ws://127.0.0.1:{}/ws", team.port());
    let mut served = HashSet::new();
    for n in 0..6 {
        let (client, _) = stdio_client(&team.replicas[0].tcp_stdio_env(&url), &[]).await;
        let result = client
            .call_tool(chat(&format!("ws {n}"), "fake-fast"))
            .await
            .unwrap();
        assert_eq!(text_of(&result), format!("echo: ws {n}"));
        served.insert(team.replica_of_call(&call_id_of(&result)));
        client.cancel().await.unwrap();
    }
    eprintln!("six shims served by replicas {served:?}");
}
