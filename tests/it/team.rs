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

#[tokio::test]
async fn people_see_only_their_own_on_every_replica_and_a_revoked_token_is_refused_by_all() {
    let fake = Fake::start();
    let Some(team) = Team::start(&fake, 2) else {
        return;
    };
    let add = |name: &str| {
        let (ok, output) = team.replicas[0].cli(&["users", "add", name]);
        assert!(ok, "{output}");
        personal_token_in(&output)
    };
    let (ada, bob) = (add("ada"), add("bob"));
    let mut through_nginx = HttpSession::open(&team.mcp_url(), &ada).await;
    let made = through_nginx
        .call_tool(
            "chat",
            json!({"prompt": "ada's question", "model": "fake-fast"}),
        )
        .await;
    let id = call_id_in(&made);
    let made_up = "01a2132d-05c7-76ba-ab75-235da0d3ad5f";
    for replica in &team.replicas {
        let url = format!("http://{}/mcp", replica.addr);
        // Ada reaches her call on every replica.
        let mut hers = HttpSession::open(&url, &ada).await;
        let fetched = hers.call_tool("call_result", json!({"call_id": id})).await;
        assert!(
            text_in(&fetched).contains("echo: ada's question"),
            "{fetched}"
        );
        // To Bob it is exactly an id that never existed, whichever replica he asks.
        let mut his = HttpSession::open(&url, &bob).await;
        for tool in ["call_result", "call_cancel"] {
            let hidden = his.call_tool(tool, json!({"call_id": id})).await;
            let unknown = his.call_tool(tool, json!({"call_id": made_up})).await;
            assert_eq!(hidden["isError"], unknown["isError"], "{hidden}");
            // Each answer ends naming its own call (`(call …)`): compare what comes before.
            let said = |result: &serde_json::Value, asked: &str| {
                let text = text_in(result).replace(asked, "ID");
                text.split(" (call ").next().unwrap_or_default().to_string()
            };
            assert_eq!(said(&hidden, &id), said(&unknown, made_up), "{tool}");
        }
        // His list holds his own calls (which name her id in their errors), never hers.
        let listed = his.call_tool("call_list", json!({})).await;
        let ids: Vec<&str> = listed["structuredContent"]["calls"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|call| call["call_id"].as_str())
            .collect();
        assert!(!ids.is_empty() && !ids.contains(&id.as_str()), "{listed}");
    }
    // Revoked on one replica's CLI: refused by every replica within seconds.
    let (ok, output) = team.replicas[1].cli(&["users", "revoke", "ada"]);
    assert!(ok, "{output}");
    let initialize = json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "team-tests", "version": "1.0"}},
    });
    for replica in &team.replicas {
        let url = format!("http://{}/mcp", replica.addr);
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let answer = mcp_post(&url, &ada, None, &initialize).await;
            if answer.status == 401 {
                assert!(!answer.body.contains(&ada), "{}", answer.body);
                break;
            }
            assert!(Instant::now() < until, "still admitted: {}", answer.body);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
