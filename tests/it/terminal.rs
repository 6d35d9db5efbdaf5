//! The terminal commands through the real binary: `exai call` (answer, error exit, JSON on stdin,
//! Ctrl-C) and `exai calls --follow` (another client's call as it starts and ends).

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

fn exai_call(daemon: &Daemon, args: &[&str], stdin: &str) -> (bool, String, String) {
    let env: Vec<(&str, &str)> = daemon
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let output = exai_output(&env, args, stdin);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn exai_call_prints_the_answer_and_exits_non_zero_on_a_tool_error() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (ok, out, err) = exai_call(
        &daemon,
        &[
            "call",
            "chat",
            "--arg",
            "prompt=hi",
            "--arg",
            "model=fake-fast",
        ],
        "",
    );
    assert!(ok, "{out}{err}");
    // The answer, then chat's note on continuing the conversation.
    assert!(out.starts_with("echo: hi\n"), "{out}");

    let (ok, out, err) = exai_call(
        &daemon,
        &[
            "call",
            "chat",
            "--arg",
            "prompt=hi",
            "--arg",
            "model=fake-401",
        ],
        "",
    );
    assert!(!ok, "{out}");
    assert!(err.contains("401"), "{err}");

    // The arguments as one JSON object on stdin; --json prints the whole result.
    let (ok, out, err) = exai_call(
        &daemon,
        &["call", "chat", "--json"],
        r#"{"prompt": "from stdin", "model": "fake-fast"}"#,
    );
    assert!(ok, "{err}");
    let result: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["content"][0]["text"], "echo: from stdin");
    let id = result["_meta"]["exai.dev/callId"].as_str().unwrap();
    assert_eq!(daemon.final_record(id).state.as_str(), "succeeded");

    let (ok, _, err) = exai_call(&daemon, &["call", "no-such-tool"], "");
    assert!(!ok);
    assert!(
        err.contains("no tool \"no-such-tool\"") && err.contains("chat"),
        "{err}"
    );
}

/// `exai ARGS` running with the daemon's environment, its stdout and stderr piped.
fn started(daemon: &Daemon, args: &[&str]) -> Proc {
    let child = Command::new(EXAI)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(daemon.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Proc(child)
}

#[test]
fn ctrl_c_cancels_the_call_and_says_so() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let mut child = started(
        &daemon,
        &[
            "call",
            "chat",
            "--arg",
            "prompt=slow",
            "--arg",
            "model=fake-delay-20000",
        ],
    );
    wait_until("the call at the provider", Duration::from_secs(10), || {
        (fake.stats()["in_flight"].as_u64()? == 1).then_some(())
    });
    let status = Command::new("kill")
        .args(["-INT", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = wait_until("exai call to exit", Duration::from_secs(15), || {
        child.0.try_wait().unwrap()
    });
    assert!(!exit.success());
    let mut err = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("cancelled"), "{err}");
    // "exai: call ID cancelled; …": the record says the same.
    let id = err
        .split_whitespace()
        .find(|w| uuid::Uuid::parse_str(w).is_ok())
        .unwrap_or_else(|| panic!("no call id in {err:?}"));
    let record = wait_until("the record to end", Duration::from_secs(10), || {
        daemon.record(id).filter(|r| r.finished_at_ms.is_some())
    });
    assert_eq!(record.state.as_str(), "cancelled", "{record:?}");
    assert_eq!(record.client_name.as_deref(), Some("exai-cli"));
}

/// Lines of a child's stdout, read on a thread of their own.
fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The first line from `lines` that `wanted` accepts, within `limit`.
fn line_where(
    lines: &mpsc::Receiver<String>,
    limit: Duration,
    what: &str,
    wanted: impl Fn(&str) -> bool,
) -> String {
    let until = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if wanted(&line) => return line,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no line with {what} within {limit:?}; saw {seen:#?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_follow_shows_another_clients_call_start_then_end() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    // A call that ended before the follow began is not shown.
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let before = client.call_tool(chat("before", "fake-fast")).await.unwrap();
    let before_id = call_id_of(&before);

    let mut follow = started(&daemon, &["calls", "--follow"]);
    let lines = lines_of(&mut follow.0);

    let slow = cancellable_call(&client, chat("watch me", "fake-delay-1500")).await;
    let started = line_where(&lines, Duration::from_secs(10), "a start", |l| {
        l.contains("started")
    });
    assert!(
        started.contains("chat")
            && started.contains("fake-delay-1500")
            && started.contains("exai-tests"),
        "{started}"
    );
    assert!(!started.contains(&before_id), "{started}");
    let id = started.split_whitespace().nth(1).unwrap().to_string();
    let ended = line_where(&lines, Duration::from_secs(10), "its end", |l| {
        l.contains(&id) && !l.contains("started")
    });
    assert!(ended.contains("succeeded"), "{ended}");
    assert!(ended.contains(" s"), "a duration in {ended}");
    let result = slow.await_response().await.unwrap();
    let rmcp::model::ServerResult::CallToolResult(result) = result else {
        panic!("{result:?}")
    };
    assert_eq!(call_id_of(&result), id);
    client.cancel().await.unwrap();
}

/// Text from outside (here a prompt the fake model echoes; as well a crafted repository's content
/// or a hostile endpoint's answer) is printed with its terminal escapes shown, not obeyed: by
/// `exai call`, `exai calls show` (text and JSON, which keeps the same data) and `exai threads show`.
#[tokio::test]
async fn terminal_escapes_in_answers_are_shown_not_obeyed() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let crafted = "hi \u{1b}]0;PWNED\u{7} \u{1b}[2J \u{9b}31m gone\rshown";
    let raw = |text: &str| {
        text.chars().any(|c| {
            (c.is_control() && c != '\n' && c != '\t') || ('\u{80}'..='\u{9f}').contains(&c)
        })
    };
    let prompt = format!("prompt={crafted}");
    let (ok, printed, _) = exai_call(
        &daemon,
        &["call", "chat", "--arg", &prompt, "--arg", "model=fake-fast"],
        "",
    );
    assert!(ok, "{printed}");
    assert!(!raw(&printed), "{}", printed.escape_debug());
    assert!(
        printed.contains("hi \\u001b]0;PWNED\\u0007 \\u001b[2J \\u009b31m gone\\u000dshown"),
        "{printed}"
    );

    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let answer = client.call_tool(chat(crafted, "fake-fast")).await.unwrap();
    let id = call_id_of(&answer);
    let (_, shown) = daemon.cli(&["calls", "show", &id]);
    assert!(!raw(&shown), "{}", shown.escape_debug());
    assert!(shown.contains("\\u001b]0;PWNED"), "{shown}");
    let (_, json) = daemon.cli(&["calls", "show", &id, "--json"]);
    assert!(!raw(&json), "{}", json.escape_debug());
    let read: serde_json::Value = serde_json::from_str(&json).unwrap();
    let result: serde_json::Value =
        serde_json::from_str(read["call"]["result"].as_str().unwrap()).unwrap();
    assert_eq!(
        result["content"][0]["text"].as_str(),
        Some(format!("echo: {crafted}").as_str())
    );
    let thread = answer.structured_content.clone().unwrap()["continuation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, conversation) = daemon.cli(&["threads", "show", &thread]);
    assert!(conversation.contains("PWNED"), "{conversation}");
    assert!(!raw(&conversation), "{}", conversation.escape_debug());
    client.cancel().await.unwrap();
}
