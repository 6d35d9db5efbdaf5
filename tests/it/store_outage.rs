//! A daemon whose Postgres database goes away mid-run: calls are still answered, what needs the
//! store says so clearly, and the daemon recovers by itself when the database returns.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::common::*;

/// A chat's text and id when the store cannot keep it: the model's answer all the same, with a
/// note that it was not recorded yet and why.
async fn answered_but_not_recorded(client: &Client, prompt: &str) -> (String, String) {
    let answer = client.call_tool(chat(prompt, "fake-fast")).await.unwrap();
    let text = all_text_of(&answer);
    assert_eq!(answer.is_error, Some(false), "{text}");
    assert!(text.contains(&format!("echo: {prompt}")), "{text}");
    assert!(
        text.contains("exai could not record this call")
            && text.contains("writes it once the call store takes it again"),
        "{text}"
    );
    (text, call_id_of(&answer))
}

/// The error `call_result` gives for a recorded call `id` while the store cannot be read.
async fn fetch_fails(client: &Client, id: &str) -> String {
    let fetched = client
        .call_tool(call("call_result", json!({ "call_id": id })))
        .await
        .unwrap();
    let text = all_text_of(&fetched);
    assert_eq!(fetched.is_error, Some(true), "{text}");
    text
}

/// Once the database answers again, the record of a call it could not take is written, with its
/// answer, and no record or thread save waits any more.
fn recorded_late(daemon: &Daemon, id: &str, answer: &str) {
    let record = daemon.final_record(id);
    assert_eq!(record.state.as_str(), "succeeded", "{record:?}");
    assert!(record.result.unwrap_or_default().contains(answer));
    wait_until("nothing waiting", Duration::from_secs(10), || {
        let store = &daemon.healthz()["store"];
        (store["records_waiting"] == 0 && store["threads_waiting"] == 0).then_some(())
    });
}

#[tokio::test]
async fn a_daemon_that_loses_its_database_answers_says_what_it_could_not_keep_and_recovers() {
    if !on_postgres() {
        eprintln!("skipped: a test of the PostgreSQL store (set EXAI_TEST_DATABASE_URL)");
        return;
    }
    let (cluster, _fake, daemon, client, before_id) = daemon_on_own_cluster(&[]).await;

    // A call that starts before the outage and ends during it: its record is there, its end not.
    let spanning = {
        let peer = client.peer().clone();
        tokio::spawn(async move {
            peer.call_tool(chat("across the outage", "fake-delay-3000"))
                .await
        })
    };
    let running = exai::store::CallFilter {
        running_only: true,
        ..Default::default()
    };
    let spanning_id = wait_until_async(
        "the spanning call recorded",
        Duration::from_secs(10),
        || {
            let open = daemon.read_store(|store| store.list(&running).unwrap_or_default());
            open.first().map(|row| row.id.clone())
        },
    )
    .await;
    cluster.pause();
    let (text, during_id) = answered_but_not_recorded(&client, "during the outage").await;
    let spanning = spanning.await.unwrap().unwrap();
    assert_eq!(call_id_of(&spanning), spanning_id);
    assert!(
        all_text_of(&spanning).contains("exai could not record this call"),
        "{}",
        all_text_of(&spanning)
    );
    assert_eq!(daemon.healthz()["store"]["records_waiting"], 2);
    // The conversations the two began wait for the store too.
    assert_eq!(daemon.healthz()["store"]["threads_waiting"], 2);
    // The server's own words: it shut the connection, or refuses new ones.
    assert!(
        text.contains("postgres://127.0.0.1:")
            && (text.contains("Connection refused")
                || text.contains("terminating connection due to administrator command")),
        "{text}"
    );
    // A call whose record waits can be fetched all the same: its answer is held in memory.
    let waiting = client
        .call_tool(call(
            "call_result",
            json!({ "call_id": during_id, "wait_s": 0 }),
        ))
        .await
        .unwrap();
    assert!(
        all_text_of(&waiting).contains("echo: during the outage"),
        "{}",
        all_text_of(&waiting)
    );
    // What needs the store says the store is the problem.
    let fetched_text = fetch_fails(&client, &before_id).await;
    assert!(fetched_text.contains("call store"), "{fetched_text}");
    // Control messages and tools that need no store go on.
    assert!(!client.list_all_tools().await.unwrap().is_empty());
    let status = all_text_of(&client.call_tool(call("status", json!({}))).await.unwrap());
    assert!(status.contains("call store write failed"), "{status}");
    assert!(
        status.contains("ended calls wait for the store to take them"),
        "{status}"
    );
    for shown in [&text, &fetched_text, &status] {
        assert!(!shown.contains(&cluster.password()), "{shown}");
    }

    cluster.resume();
    // What it could not take is written now.
    recorded_late(&daemon, &during_id, "echo: during the outage");
    recorded_late(&daemon, &call_id_of(&spanning), "echo: across the outage");
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
        all_text_of(&fetched).contains("echo: before anything happens to the database"),
        "{}",
        all_text_of(&fetched)
    );
    assert_eq!(logged(&daemon.home, &cluster.password()), 0);
    client.cancel().await.unwrap();
}

/// A database that accepts connections and then never answers (a server stopped with SIGSTOP, a
/// stuck proxy, a lost route the kernel still acknowledges) bounds every wait on it: a call is
/// answered with the database's own bound named, control messages and `exai status` go on, and
/// the daemon records calls again once the server goes on.
#[tokio::test]
async fn a_daemon_whose_database_hangs_answers_in_bounded_time_says_why_and_recovers() {
    if !on_postgres() {
        eprintln!("skipped: a test of the PostgreSQL store (set EXAI_TEST_DATABASE_URL)");
        return;
    }
    let (cluster, _fake, daemon, client, before_id) = daemon_on_own_cluster(&[]).await;

    cluster.freeze();
    let (text, hung_id) = answered_but_not_recorded(&client, "while the database hangs").await;
    // The database's own bound ended the wait, not the writer's last-resort one (30 s), which
    // was all that stopped a hung server from holding calls before.
    assert!(
        text.contains("no answer from the database within"),
        "{text}"
    );
    assert!(!client.list_all_tools().await.unwrap().is_empty());
    // A read that needs the store (on a reader of its own) says the database did not answer.
    let fetched_text = fetch_fails(&client, &before_id).await;
    assert!(
        fetched_text.contains("no answer from the database within"),
        "{fetched_text}"
    );
    let (_, status) = daemon.cli(&["status"]);
    assert!(
        status.contains("daemon: up") && status.contains("no answer from the database within"),
        "{status}"
    );
    for shown in [&text, &fetched_text, &status] {
        assert!(!shown.contains(&cluster.password()), "{shown}");
    }

    cluster.thaw();
    // After a hang the store lets the database rest a few seconds before asking it again.
    let mut tries = 0;
    let after = loop {
        tries += 1;
        let after = client
            .call_tool(chat(&format!("after the hang {tries}"), "fake-fast"))
            .await
            .unwrap();
        if !all_text_of(&after).contains("could not record") {
            break after;
        }
        assert!(tries < 40, "{}", all_text_of(&after));
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    assert_eq!(
        daemon.final_record(&call_id_of(&after)).state.as_str(),
        "succeeded"
    );
    recorded_late(&daemon, &hung_id, "echo: while the database hangs");
    assert_eq!(logged(&daemon.home, &cluster.password()), 0);
    client.cancel().await.unwrap();
}

/// A daemon whose database accepts its connection and never answers stops at start, within the
/// connect bound, saying so; `exai doctor` and `exai status`, which find no daemon to ask, say
/// why the last one stopped, and a shim that starts one reports the same error. Needs no
/// PostgreSQL: a listener that never speaks stands in.
#[test]
fn a_daemon_whose_database_never_answers_stops_at_start_and_doctor_and_status_say_why() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for connection in silent.incoming() {
            held.push(connection);
        }
    });
    let home = temp_home();
    let password = "never-shown-pw";
    let env = [
        ("EXAI_HOME", path(&home)),
        (
            "EXAI_DATABASE_URL",
            format!("postgres://exai:{password}@127.0.0.1:{port}/team"),
        ),
        ("EXAI_LISTEN", format!("127.0.0.1:{}", free_port())),
        ("PATH", std::env::var("PATH").unwrap_or_default()),
    ];
    let exai = |args: &[&str]| {
        let mut command = Command::new(EXAI);
        command
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("EXAI_NO_AUTOSTART", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    };
    let mut daemon = Proc(exai(&["daemon"]).spawn().unwrap());
    let pid = daemon.0.id();
    // It holds its home's lock, and names itself there, while it waits on the database.
    wait_until(
        "the daemon to take its lock",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(home.join("daemon.lock"))
                .ok()
                .filter(|note| note.contains(&pid.to_string()))
        },
    );
    let doctor = exai(&["doctor"]).output().unwrap();
    let doctor = String::from_utf8_lossy(&doctor.stdout).to_string();
    let status = wait_until("the daemon to stop", Duration::from_secs(30), || {
        daemon.0.try_wait().unwrap()
    });
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(daemon.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let why = "no answer from the database within 3 s (waited for a new connection)";
    assert!(stderr.contains(why), "{stderr}");
    // Doctor waited for it while it held the lock, or found it stopped: either way it says why.
    assert!(
        doctor.contains(&format!("(pid {pid})")) && doctor.contains(why),
        "{doctor}"
    );
    let shown_status = exai(&["status"]).output().unwrap();
    let shown_status = String::from_utf8_lossy(&shown_status.stdout).to_string();
    assert!(
        shown_status.contains(&format!("the last one (pid {pid}) stopped"))
            && shown_status.contains(why),
        "{shown_status}"
    );
    // A client's shim that starts the daemon itself reports the same error: the connect bound is
    // under its wait for a started daemon.
    let mut called = exai(&["call", "chat", "--arg", "prompt=hi"]);
    let called = called.env_remove("EXAI_NO_AUTOSTART").output().unwrap();
    let called = String::from_utf8_lossy(&called.stderr).to_string();
    assert!(called.contains(why), "{called}");
    for shown in [&stderr, &doctor, &shown_status, &called] {
        assert!(!shown.contains(password), "the password was shown");
    }
}
