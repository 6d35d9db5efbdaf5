//! The daemon and the shim as processes: tokens, locks, signals, autostart, bad input on the wire.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};

#[test]
fn a_missing_or_wrong_token_gets_401_naming_the_token_file() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let home = daemon.home.display().to_string();
    for path in ["/ws", "/mcp"] {
        let (status, body) =
            http_request("POST", &format!("http://{}{path}", daemon.addr), &[], "{}");
        assert_eq!(status, 401, "{path}");
        assert!(body.contains(&format!("{home}/token")), "{path}: {body}");
        let (status, _) = http_request(
            "POST",
            &format!("http://{}{path}", daemon.addr),
            &[("Authorization", "Bearer not-the-token")],
            "{}",
        );
        assert_eq!(status, 401, "{path}");
    }
    let token_mode = std::fs::metadata(daemon.home.join("token")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(token_mode.permissions().mode() & 0o777, 0o600);
}

/// The system's transparent huge pages mode: `always`, `madvise` or `never`.
fn thp_mode() -> Option<String> {
    let modes = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
    let chosen = modes.split_once('[')?.1.split_once(']')?.0;
    Some(chosen.to_string())
}

#[tokio::test]
async fn the_daemons_allocator_asks_for_no_huge_pages() {
    // Where programs choose (`madvise`), mimalloc asks for 2 MiB pages for its arenas, and an
    // idle daemon held ten of them (20 MB for 3 MB of heap). The daemon's allocator is set not
    // to ask; elsewhere the system decides for every program alike and there is nothing to see.
    if thp_mode().as_deref() != Some("madvise") {
        eprintln!("transparent huge pages are not left to programs here; nothing to check");
        return;
    }
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    for i in 0..20 {
        let prompt = format!("warm up {i}");
        let answer = client.call_tool(chat(&prompt, "fake-fast")).await.unwrap();
        assert_eq!(answer.is_error, Some(false));
    }
    assert_eq!(
        proc_kb(
            &format!("/proc/{}/smaps_rollup", daemon.pid()),
            "AnonHugePages"
        )
        .unwrap(),
        0,
        "the daemon's memory is in huge pages"
    );
    client.cancel().await.unwrap();
}

#[test]
fn foreign_hosts_and_origins_are_refused() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let token = format!("Bearer {}", daemon.token());
    let url = format!("http://{}/mcp", daemon.addr);
    // http_request sends Host = the daemon's address; an Origin from elsewhere must be refused.
    let (status, body) = http_request(
        "POST",
        &url,
        &[
            ("Authorization", &token),
            ("Origin", "https://evil.example"),
        ],
        "{}",
    );
    assert_eq!(status, 403, "{body}");
    // A name rebound to the loopback address is refused on every route: /mcp relies on the
    // daemon's own check (rmcp's is switched off), with the token or without.
    let initialize = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}"#;
    for request in [
        "GET /healthz HTTP/1.1\r\nHost: rebound.example:8765\r\nConnection: close\r\n\r\n"
            .to_string(),
        format!(
            "POST /mcp HTTP/1.1\r\nHost: rebound.example:8765\r\nAuthorization: {token}\r\n\
             Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{initialize}",
            initialize.len()
        ),
    ] {
        let mut stream = std::net::TcpStream::connect(&daemon.addr).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
        assert!(
            response.starts_with("HTTP/1.1 403"),
            "{request}\n{response}"
        );
    }
}

/// A client that sends half a request and waits (slowloris) holds its connection only for the
/// daemon's bounds: on reading a head (on TCP and on the home's socket alike) and on reading a
/// body once its head has come; the daemon goes on serving meanwhile.
#[test]
fn half_a_request_is_not_waited_for_forever() {
    use std::io::Read;
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let half_head = "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: applica";
    let mut tcp = std::net::TcpStream::connect(&daemon.addr).unwrap();
    let mut socket =
        std::os::unix::net::UnixStream::connect(daemon.home.join("daemon.sock")).unwrap();
    tcp.write_all(half_head.as_bytes()).unwrap();
    socket.write_all(half_head.as_bytes()).unwrap();
    // A whole head, with the token (so the body is read, not refused unread), and a tenth of
    // the body it announces.
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let half_body = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         Content-Length: {}\r\n\r\n{}",
        daemon.token(),
        body.len() * 10,
        body
    );
    let mut slow_body = std::net::TcpStream::connect(&daemon.addr).unwrap();
    slow_body.write_all(half_body.as_bytes()).unwrap();
    // Well past the bounds (30 s for a head, 60 s for a body), short of for ever.
    let patience = Some(Duration::from_secs(150));
    for stream in [&tcp, &slow_body] {
        stream.set_read_timeout(patience).unwrap();
    }
    socket.set_read_timeout(patience).unwrap();
    let started = Instant::now();
    assert!(http_get(&format!("http://{}/healthz", daemon.addr)).contains("\"ok\""));
    let mut rest = Vec::new();
    let closed = tcp.read_to_end(&mut rest);
    assert!(closed.is_ok(), "the TCP connection was held: {closed:?}");
    let closed = socket.read_to_end(&mut rest);
    assert!(closed.is_ok(), "the socket connection was held: {closed:?}");
    let mut answer = Vec::new();
    let closed = slow_body.read_to_end(&mut answer);
    assert!(
        closed.is_ok(),
        "the connection with half a body was held: {closed:?}"
    );
    // It is told why, not that its message was too large.
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("the request's body did not arrive within 60 s of its head"),
        "{answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(150));
    // The body was given its minute, and the daemon says why it stopped waiting.
    assert!(started.elapsed() >= Duration::from_secs(55));
    wait_until(
        "the daemon's log of the slow body",
        Duration::from_secs(10),
        || (logged(&daemon.home, "a request's body did not arrive in time") > 0).then_some(()),
    );
}

/// A message over `max_message_bytes` POSTed to `/mcp` is refused with the limit named, before
/// a session (where the 2025-11-25 adapter reads it) and within one (where rmcp does); the
/// session goes on serving.
#[tokio::test]
async fn an_oversized_http_message_is_refused_naming_the_limit() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[("EXAI_MAX_MESSAGE_BYTES", "4096")]);
    let url = format!("http://{}/mcp", daemon.addr);
    let token = daemon.token();
    let http = reqwest::Client::new();
    let padding = "x".repeat(8192);
    let initialize = http_initialize(&padding);
    let answer = mcp_post_on(&http, &url, &token, None, &initialize).await;
    assert_eq!(answer.status, 413, "{}", answer.body);
    assert!(answer.body.contains("4096"), "{}", answer.body);
    let mut session = HttpSession::open(&url, &token).await;
    let call = serde_json::json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "chat", "arguments": {"prompt": padding, "model": "fake-fast"}},
    });
    let answer = session.post(&call).await;
    assert_eq!(answer.status, 413, "{}", answer.body);
    assert_eq!(session.chat_text("still here").await, "echo: still here");
}

/// A client set up with `/mcp/` (a trailing slash) reaches the same endpoint, behind the same token.
#[tokio::test]
async fn mcp_with_a_trailing_slash_is_the_same_endpoint_behind_the_same_token() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let url = format!("http://{}/mcp/", daemon.addr);
    let refused = mcp_post(&url, "not-the-token", None, &http_initialize("slash")).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    let mut session = HttpSession::open(&url, &daemon.token()).await;
    assert_eq!(session.chat_text("slash").await, "echo: slash");
}

#[test]
fn healthz_reports_version_pid_sessions_and_calls() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let health = daemon.healthz();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["version"], exai::VERSION);
    assert_eq!(health["pid"], daemon.pid());
    assert_eq!(health["calls_in_flight"], 0);
    // The replica id its calls are recorded with.
    let replica = health["replica"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&replica).is_ok(), "{health}");
    if sqlite_only("the store's path is the SQLite file's") {
        return;
    }
    assert!(
        health["store"]["path"]
            .as_str()
            .unwrap()
            .ends_with("calls.sqlite3")
    );
}

#[test]
fn a_second_daemon_exits_at_once_naming_the_first() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let started = Instant::now();
    let output = Command::new(EXAI)
        .args(["daemon", "--listen", "127.0.0.1:0"])
        .env("EXAI_HOME", &daemon.home)
        .envs(store_env(&daemon.home))
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("pid {}", daemon.pid())),
        "{stderr}"
    );
    assert!(stderr.contains(&daemon.addr), "{stderr}");
}

#[test]
fn a_non_loopback_listen_address_needs_allow_remote() {
    let home = temp_home();
    let output = Command::new(EXAI)
        .args(["daemon", "--listen", "0.0.0.0:0"])
        .env("EXAI_HOME", &home)
        .envs(store_env(&home))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--allow-remote"));
}

/// A raw line-based MCP client over `exai stdio`, for input no SDK would send.
struct RawStdio {
    child: Proc,
    lines: BufReader<std::process::ChildStdout>,
}

impl RawStdio {
    fn start(env: &[(String, String)], args: &[&str]) -> Self {
        Self::start_with_stderr(env, args, Stdio::null())
    }

    /// Like `start`, the shim's own log (its stderr) going to `stderr`.
    fn start_with_stderr(env: &[(String, String)], args: &[&str], stderr: Stdio) -> Self {
        let mut child = Command::new(EXAI)
            .arg("stdio")
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap());
        Self {
            child: Proc(child),
            lines,
        }
    }

    fn send(&mut self, line: &str) {
        self.send_bytes(line.as_bytes());
    }

    fn send_bytes(&mut self, line: &[u8]) {
        let stdin = self.child.0.stdin.as_mut().unwrap();
        stdin.write_all(line).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    fn read(&mut self) -> Value {
        let mut line = String::new();
        self.lines.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    /// Reads until the response with `id` (skipping notifications).
    fn response(&mut self, id: i64) -> Value {
        loop {
            let message = self.read();
            if message["id"] == id {
                return message;
            }
        }
    }

    fn initialize(&mut self) {
        self.send(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}).to_string());
        assert!(self.response(0)["result"]["serverInfo"]["name"] == "exai");
        self.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    }
}

fn bad_input_is_answered_and_the_session_goes_on(env: &[(String, String)], args: &[&str]) {
    let mut raw = RawStdio::start(env, args);
    raw.initialize();
    raw.send("this is not json {");
    let reply = raw.read();
    assert_eq!(reply["error"]["code"], -32700, "{reply}");
    // Not UTF-8: used to end the session.
    raw.send_bytes(b"{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"ping\",\"x\":\"\xff\xfe\"}");
    let reply = raw.read();
    assert_eq!(reply["error"]["code"], -32700, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("UTF-8"),
        "{reply}"
    );
    raw.send(&format!(r#"{{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{{"name":"chat","arguments":{{"prompt":"{}"}}}}}}"#, "x".repeat(5000)));
    let reply = raw.read();
    assert_eq!(reply["error"]["code"], -32600, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("4096-byte limit"),
        "{reply}"
    );
    raw.send(r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":7}}"#);
    let reply = raw.response(6);
    assert!(reply["error"]["code"].as_i64().is_some(), "{reply}");
    raw.send(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"chat","arguments":{"prompt":"still fine","model":"fake-fast"}}}"#);
    let reply = raw.response(7);
    assert_eq!(
        reply["result"]["content"][0]["text"], "echo: still fine",
        "{reply}"
    );
}

#[test]
fn malformed_and_oversized_messages_via_the_shim() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[("EXAI_MAX_MESSAGE_BYTES", "4096")]);
    bad_input_is_answered_and_the_session_goes_on(&daemon.stdio_env(), &[]);
}

#[test]
fn malformed_and_oversized_messages_in_process() {
    let fake = Fake::start();
    let home = temp_home();
    let mut env = vec![
        ("EXAI_HOME".to_string(), home.display().to_string()),
        ("CUSTOM_API_URL".to_string(), format!("{}/v1", fake.url)),
        ("EXAI_MAX_MESSAGE_BYTES".to_string(), "4096".to_string()),
    ];
    env.extend(store_env(&home));
    bad_input_is_answered_and_the_session_goes_on(&env, &["--no-daemon"]);
}

#[test]
fn stdin_eof_exits_within_a_second_and_the_call_finishes_in_the_daemon() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let mut raw = RawStdio::start(&daemon.stdio_env(), &[]);
    raw.initialize();
    raw.send(r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"chat","arguments":{"prompt":"outlive me","model":"fake-delay-1500"}}}"#);
    wait_until("the call in flight", Duration::from_secs(10), || {
        (daemon.healthz()["calls_in_flight"].as_u64()? == 1).then_some(())
    });
    let closed = Instant::now();
    drop(raw.child.0.stdin.take());
    let status = wait_until("the shim to exit", Duration::from_secs(5), || {
        raw.child.0.try_wait().unwrap()
    });
    assert!(
        closed.elapsed() < Duration::from_secs(1),
        "exited after {:?}",
        closed.elapsed()
    );
    assert!(status.success());
    let record = wait_until("the call to finish", Duration::from_secs(10), || {
        let rows = daemon
            .store()
            .list(&exai::store::CallFilter {
                tool: Some("chat".into()),
                limit: 1,
                ..Default::default()
            })
            .ok()?;
        rows.into_iter().find(|r| r.state.as_str() == "succeeded")
    });
    assert!(record.result.unwrap().contains("echo: outlive me"));
}

#[test]
fn sigterm_lets_calls_finish_within_the_grace_period_then_interrupts_the_rest() {
    let fake = Fake::start();
    let mut daemon = Daemon::start(&fake, &[("EXAI_SHUTDOWN_GRACE_S", "1.5")]);
    let mut raw = RawStdio::start(&daemon.stdio_env(), &[]);
    raw.initialize();
    raw.send(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"chat","arguments":{"prompt":"quick","model":"fake-delay-500"}}}"#);
    raw.send(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"chat","arguments":{"prompt":"forever","model":"fake-hang"}}}"#);
    wait_until("two calls in flight", Duration::from_secs(10), || {
        (daemon.healthz()["calls_in_flight"].as_u64()? == 2).then_some(())
    });
    daemon.signal("-TERM");
    let quick = raw.response(1);
    assert_eq!(
        quick["result"]["content"][0]["text"], "echo: quick",
        "{quick}"
    );
    let forever = raw.response(2);
    let text = forever["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(text.contains("interrupted"), "{forever}");
    let exit = wait_until("the daemon to exit", Duration::from_secs(10), || {
        daemon.proc.as_mut().unwrap().0.try_wait().unwrap()
    });
    assert!(exit.success());
    let rows = daemon
        .store()
        .list(&exai::store::CallFilter {
            limit: 5,
            ..Default::default()
        })
        .unwrap();
    let states: Vec<_> = rows
        .iter()
        .map(|r| (r.arguments.contains("forever"), r.state.as_str()))
        .collect();
    assert!(states.contains(&(true, "interrupted")), "{states:?}");
    assert!(states.contains(&(false, "succeeded")), "{states:?}");
    assert!(!daemon.home.join("daemon.json").exists());
}

#[test]
fn exai_daemon_stop_waits_the_grace_and_names_what_it_interrupted_and_restart_starts_it_again() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[("EXAI_SHUTDOWN_GRACE_S", "1")]);
    let old_pid = daemon.pid();
    let old_listen = daemon.addr.clone();
    let mut raw = RawStdio::start(&daemon.stdio_env(), &[]);
    raw.initialize();
    raw.send(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"chat","arguments":{"prompt":"quick","model":"fake-delay-300"}}}"#);
    raw.send(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"chat","arguments":{"prompt":"forever","model":"fake-hang"}}}"#);
    wait_until("two calls in flight", Duration::from_secs(10), || {
        (daemon.healthz()["calls_in_flight"].as_u64()? == 2).then_some(())
    });
    let hanging = wait_until("the hanging call's record", Duration::from_secs(10), || {
        let (_, listed) = daemon.cli(&["calls", "--running", "--json"]);
        let rows: Value = serde_json::from_str(&listed).ok()?;
        rows.as_array()?
            .iter()
            .find(|row| {
                row["arguments"]
                    .as_str()
                    .is_some_and(|a| a.contains("forever"))
            })
            .and_then(|row| Some(row["id"].as_str()?.to_string()))
    });

    let (ok, said) = daemon.cli(&["daemon", "restart"]);
    assert!(ok, "{said}");
    // The quick call finished within the grace; the hanging one is named as interrupted.
    assert!(
        said.contains(&format!("stopped the exai daemon (pid {old_pid})")),
        "{said}"
    );
    assert!(
        said.contains("1 call(s) were still running after the grace and were interrupted:")
            && said.contains(&format!(
                "  {hanging} chat (see `exai calls show {hanging}`)"
            )),
        "{said}"
    );
    assert_eq!(
        raw.response(1)["result"]["content"][0]["text"],
        "echo: quick"
    );
    // A new daemon answers on the same address, and says so.
    let info = daemon_info(&daemon.home);
    let new_pid = info["pid"].as_u64().unwrap();
    assert_ne!(new_pid, u64::from(old_pid));
    assert_eq!(info["listen"], old_listen.as_str());
    assert!(
        said.contains(&format!(
            "started the exai daemon (pid {new_pid}, version {}) on {old_listen}",
            exai::VERSION
        )),
        "{said}"
    );
    assert_eq!(daemon.healthz()["pid"], new_pid);

    // Stopping it leaves nothing running; stopping again says there is nothing to stop.
    let (ok, said) = daemon.cli(&["daemon", "stop"]);
    assert!(ok && said.contains("no call was interrupted"), "{said}");
    assert!(!daemon.home.join("daemon.json").exists());
    let (ok, said) = daemon.cli(&["daemon", "stop"]);
    assert!(
        ok && said.contains("no exai daemon is running for this EXAI_HOME"),
        "{said}"
    );
}

/// Makes the running daemon of `home` look like one of another exai version (as an upgrade of
/// the binary leaves it).
fn claim_another_version(home: &std::path::Path) -> &'static str {
    let mut info = daemon_info(home);
    info["version"] = json!("0.0.1-old");
    std::fs::write(home.join("daemon.json"), info.to_string()).unwrap();
    "0.0.1-old"
}

fn chat_line(id: i64, prompt: &str, model: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "chat", "arguments": {"prompt": prompt, "model": model}}})
    .to_string()
}

#[test]
fn a_shim_that_meets_an_idle_daemon_of_another_version_starts_its_own() {
    let fake = Fake::start();
    let mut daemon = Daemon::start(&fake, &[]);
    let old_pid = daemon.pid();
    claim_another_version(&daemon.home);
    // The shim may start a daemon (autostart on), as an MCP client's would.
    let mut raw = RawStdio::start(&daemon.env, &[]);
    raw.initialize();
    raw.send(&chat_line(1, "after the upgrade", "fake-fast"));
    assert_eq!(
        raw.response(1)["result"]["content"][0]["text"],
        "echo: after the upgrade"
    );
    let info = daemon_info(&daemon.home);
    assert_ne!(info["pid"], u64::from(old_pid));
    assert_eq!(info["version"], exai::VERSION);
    let exited = wait_until("the old daemon to exit", Duration::from_secs(10), || {
        daemon.proc.as_mut()?.0.try_wait().ok()?
    });
    assert!(exited.success(), "{exited}");
    drop(raw);
    stop_started_daemon(&daemon.home);
}

#[test]
fn a_shim_that_meets_a_busy_daemon_of_another_version_says_so_and_leaves_its_calls_alone() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let mut busy = RawStdio::start(&daemon.stdio_env(), &[]);
    busy.initialize();
    busy.send(&chat_line(1, "still thinking", "fake-hang"));
    wait_until("a call in flight", Duration::from_secs(10), || {
        (daemon.healthz()["calls_in_flight"].as_u64()? == 1).then_some(())
    });
    let old = claim_another_version(&daemon.home);
    let log = daemon.home.join("shim-stderr.log");
    let mut raw = RawStdio::start_with_stderr(
        &daemon.env,
        &[],
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    raw.initialize();
    raw.send(&chat_line(2, "served by the old one", "fake-fast"));
    assert_eq!(
        raw.response(2)["result"]["content"][0]["text"],
        "echo: served by the old one"
    );
    assert_eq!(
        daemon.healthz()["pid"],
        daemon.pid(),
        "the busy daemon kept running"
    );
    assert_eq!(daemon.healthz()["calls_in_flight"], 1);
    // stderr's lines are written by a thread of their own, a moment after they are logged.
    let warning = format!(
        "the running exai daemon is version {old} and this exai is {} (1 call(s) in flight): \
         run `exai daemon restart` when its calls are done",
        exai::VERSION
    );
    wait_until(
        "the shim's warning on stderr",
        Duration::from_secs(10),
        || {
            let said = std::fs::read_to_string(&log).ok()?;
            said.contains(&warning).then_some(())
        },
    );
}

#[test]
fn the_shim_starts_a_daemon_when_none_answers() {
    let fake = Fake::start();
    let home = temp_home();
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}/ws");
    let mut raw = RawStdio::start(&autostart_env(&home, &fake, Some(&url)), &[]);
    raw.initialize();
    raw.send(r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"version","arguments":{}}}"#);
    let reply = raw.response(3);
    assert!(
        reply["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("daemon"),
        "{reply}"
    );
    assert_eq!(daemon_info(&home)["listen"], format!("127.0.0.1:{port}"));
    // The shim goes first, or it would start another daemon.
    drop(raw);
    stop_started_daemon(&home);
    // The client's initialize, held while the daemon started, reached it once (not replayed too).
    assert_eq!(logged(&home, "session initialized"), 1);
}

fn exai_cli(home: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(EXAI)
        .args(args)
        .env("EXAI_HOME", home)
        .envs(store_env(home))
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[tokio::test]
async fn the_cli_shows_calls_and_status_with_the_daemon_up_and_down() {
    let fake = Fake::start();
    let mut daemon = Daemon::start(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let ok = client
        .call_tool(chat("for the cli", "fake-fast"))
        .await
        .unwrap();
    let failed = client.call_tool(chat("x", "fake-500")).await.unwrap();
    let (ok_id, failed_id) = (call_id_of(&ok), call_id_of(&failed));
    daemon.final_record(&failed_id);
    client.cancel().await.unwrap();

    let (success, table, _) = exai_cli(&daemon.home, &["calls"]);
    assert!(success);
    assert!(table.lines().next().unwrap().starts_with("ID"), "{table}");
    assert!(
        table.contains(&ok_id) && table.contains(&failed_id),
        "{table}"
    );
    let (_, failed_only, _) = exai_cli(&daemon.home, &["calls", "--failed"]);
    assert!(
        failed_only.contains(&failed_id) && !failed_only.contains(&ok_id),
        "{failed_only}"
    );
    let (_, json_text, _) = exai_cli(
        &daemon.home,
        &["calls", "--json", "--tool", "chat", "--limit", "1"],
    );
    let rows: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["id"], failed_id.as_str());

    let (success, shown, _) = exai_cli(&daemon.home, &["calls", "show", &ok_id]);
    assert!(success);
    assert!(shown.contains("state          succeeded"), "{shown}");
    assert!(shown.contains("echo: for the cli"), "{shown}");
    assert!(
        shown.contains("\"message\":\"call finished\""),
        "log lines of the call: {shown}"
    );
    let (success, _, error) = exai_cli(&daemon.home, &["calls", "show", "0000dead"]);
    assert!(!success);
    assert!(error.contains("no call with id"), "{error}");

    let (_, status, _) = exai_cli(&daemon.home, &["status"]);
    assert!(
        status.contains(&format!("daemon: up · {}", daemon.addr)),
        "{status}"
    );
    assert!(status.contains(&failed_id), "{status}");
    daemon.signal("-TERM");
    wait_until("the daemon to exit", Duration::from_secs(10), || {
        daemon.proc.as_mut().unwrap().0.try_wait().unwrap()
    });
    let (success, status, _) = exai_cli(&daemon.home, &["status"]);
    assert!(success);
    assert!(status.contains("daemon: not running"), "{status}");
    let (_, table, _) = exai_cli(&daemon.home, &["calls"]);
    assert!(
        table.contains(&ok_id),
        "the store is readable with the daemon down"
    );
}

/// A socket address holds about 100 bytes of path; a deeper EXAI_HOME still gets its socket, and
/// the shim and the CLI reach the daemon through it.
#[tokio::test]
async fn a_state_directory_too_deep_for_a_socket_address_still_gets_its_socket() {
    let fake = Fake::start();
    let mut home = temp_home();
    while home.join("daemon.sock").as_os_str().len() <= 120 {
        home.push("deeper-than-a-socket-address-holds");
    }
    std::fs::create_dir_all(&home).unwrap();
    let daemon = Daemon::start_in(home, "127.0.0.1:0", &fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let result = client
        .call_tool(chat("from deep down", "fake-fast"))
        .await
        .unwrap();
    assert_eq!(text_of(&result), "echo: from deep down");
    client.cancel().await.unwrap();
    let (_, status, _) = exai_cli(&daemon.home, &["status"]);
    assert!(
        status.contains(&format!("daemon: up · {}", daemon.addr)),
        "{status}"
    );
}

#[tokio::test]
async fn secrets_appear_in_no_log_record_or_error() {
    const KEY: &str = "sk-exai-test-7f3a9c1e5b";
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[("CUSTOM_API_KEY", KEY), ("EXAI_LOG", "debug")]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let with_secret_arg = CallToolRequestParams::new("chat").with_arguments(
        json!({"prompt": "hi", "model": "fake-fast", "api_key": KEY})
            .as_object()
            .unwrap()
            .clone(),
    );
    let result = client.call_tool(with_secret_arg).await.unwrap();
    let mut texts = vec![text_of(&result)];
    for model in ["fake-fast", "fake-401", "fake-garbage", "fake-500"] {
        texts.push(text_of(&client.call_tool(chat("hi", model)).await.unwrap()));
    }
    let status = client
        .call_tool(CallToolRequestParams::new("status"))
        .await
        .unwrap();
    texts.push(serde_json::to_string(&status).unwrap());
    let models = client
        .call_tool(CallToolRequestParams::new("listmodels"))
        .await
        .unwrap();
    texts.push(serde_json::to_string(&models).unwrap());
    client.cancel().await.unwrap();
    for text in &texts {
        assert!(!text.contains(KEY), "secret in an answer: {text}");
    }
    let record = daemon.final_record(&call_id_of(&result));
    assert!(
        record.arguments.contains("[redacted]"),
        "{}",
        record.arguments
    );
    let stored = daemon.store_contents();
    assert!(!stored.is_empty(), "the store was read");
    assert!(
        !stored.iter().any(|text| text.contains(KEY)),
        "secret found in the store"
    );
    let mut logs_read = 0;
    for entry in std::fs::read_dir(daemon.home.join("logs")).unwrap() {
        let file = entry.unwrap().path();
        let bytes = std::fs::read(&file).unwrap();
        logs_read += 1;
        assert!(
            !String::from_utf8_lossy(&bytes).contains(KEY),
            "secret found in {}",
            file.display()
        );
    }
    assert!(logs_read >= 1, "the logs were read");
}

#[tokio::test]
async fn malformed_websocket_frames_get_errors_and_the_session_goes_on() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let mut request = daemon.url().into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", daemon.token()).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let next_json = async |ws: &mut tokio_tungstenite::WebSocketStream<_>| -> Value {
        loop {
            if let Some(Ok(Message::Text(text))) = ws.next().await {
                return serde_json::from_str(text.as_str()).unwrap();
            }
        }
    };
    ws.send(Message::Text("{not json".into())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["error"]["code"], -32700);
    ws.send(Message::Text(
        r#"{"jsonrpc":"2.0","id":4,"params":{}}"#.into(),
    ))
    .await
    .unwrap();
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["error"]["code"], -32600);
    assert_eq!(reply["id"], 4);
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw-ws","version":"0"}}});
    ws.send(Message::Text(init.to_string().into()))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut ws).await["result"]["serverInfo"]["name"],
        "exai"
    );
}

#[test]
fn with_autostart_off_and_no_daemon_the_client_is_told_at_once_what_to_do() {
    let home = temp_home();
    let mut env = vec![
        ("EXAI_HOME".to_string(), home.display().to_string()),
        ("EXAI_NO_AUTOSTART".to_string(), "1".to_string()),
    ];
    env.extend(store_env(&home));
    let mut raw = RawClient::start(&env, &[]);
    let asked = Instant::now();
    let reply = raw.request(
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "t", "version": "1"}}),
    );
    let message = reply["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("autostart is off (EXAI_NO_AUTOSTART=1)")
            && message.contains("exai daemon"),
        "{reply}"
    );
    // It used to hold the request for the 10 s a restarting daemon gets.
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
}

#[test]
fn a_bad_setting_stops_the_daemon_and_exai_config_naming_it_and_what_is_accepted() {
    let home = temp_home();
    let cases: [(&str, &str, &str); 9] = [
        ("MAX_MCP_OUTPUT_TOKENS", "200", "at least 1000"),
        ("MAX_MCP_OUTPUT_TOKENS", "abc", "at least 1000"),
        ("EXAI_PROMPT_SIZE_LIMIT", "abc", "whole number"),
        (
            "DISABLED_TOOLS",
            "chatt",
            "DISABLED_TOOLS names chatt, which is not a tool; the tools are: analyze, call_cancel",
        ),
        (
            "EXAI_TOOL_TIMEOUTS",
            "chta=5",
            "EXAI_TOOL_TIMEOUTS names chta",
        ),
        (
            "EXAI_TOOL_MAX_OUTPUT",
            "consensus=2000,revieww=10",
            "EXAI_TOOL_MAX_OUTPUT names revieww",
        ),
        (
            "EXAI_ALLOWED_ROOTS",
            "projects/mine",
            "not an absolute path",
        ),
        (
            "EXAI_MODELS_FILE",
            "/nonexistent/models.toml",
            "no such file",
        ),
        ("EXAI_PROVIDER_HTTP2", "h2c", "must be auto, always or off"),
    ];
    for (var, value, expected) in cases {
        for args in [&["config"][..], &["daemon", "--listen", "127.0.0.1:0"][..]] {
            let output = Command::new(EXAI)
                .args(args)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("EXAI_HOME", &home)
                .envs(store_env(&home))
                .env(var, value)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&output.stderr);
            assert!(
                !output.status.success(),
                "{var}={value} accepted by {args:?}"
            );
            assert!(
                said.contains(var) && said.contains(expected),
                "{var}={value} with {args:?}: {said}"
            );
        }
    }
}

#[test]
fn exai_config_warns_of_a_default_model_no_provider_offers_and_shows_every_limit() {
    let run = |env: &[(&str, &str)]| {
        let home = temp_home();
        let output = Command::new(EXAI)
            .arg("config")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("EXAI_HOME", &home)
            .envs(store_env(&home))
            .env("CUSTOM_API_URL", "http://127.0.0.1:9/v1")
            .env("CUSTOM_MODEL_NAME", "qwen3")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    let shown = run(&[("DEFAULT_MODEL", "glm-4.7")]);
    assert!(
        shown.contains(
            "warning: DEFAULT_MODEL glm-4.7 cannot be used, so calls that name no model will fail"
        ),
        "{shown}"
    );
    for setting in [
        "MAX_MCP_OUTPUT_TOKENS",
        "EXAI_PROMPT_SIZE_LIMIT",
        "EXAI_LOG",
        "EXAI_TOOL_MAX_OUTPUT",
    ] {
        assert!(shown.contains(setting), "{setting} missing: {shown}");
    }
    let fine = run(&[]);
    assert!(!fine.contains("warning:"), "{fine}");
}

#[test]
fn a_taken_port_is_said_once_and_clearly() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let home = temp_home();
    let output = Command::new(EXAI)
        .args(["daemon", "--listen", &format!("localhost:{port}")])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("EXAI_HOME", &home)
        .envs(store_env(&home))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        said.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{said}"
    );
    assert_eq!(said.matches("Address already in use").count(), 1, "{said}");
}

#[test]
fn the_readme_config_example_works_as_copied() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme
        .find("### Config file")
        .expect("the Config file section")..];
    let start = section.find("```toml\n").expect("a TOML example") + "```toml\n".len();
    let example = &section[start..start + section[start..].find("```").unwrap()];
    let home = temp_home();
    let file = home.join("config.toml");
    std::fs::write(&file, example).unwrap();
    let output = Command::new(EXAI)
        .args(["config"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("EXAI_HOME", &home)
        .envs(store_env(&home))
        .env("EXAI_CONFIG", &file)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!shown.contains("warning:"), "{shown}");
    assert!(
        shown.contains("config file: memory.thread_max_exchanges"),
        "{shown}"
    );
}

/// A call over Streamable HTTP: its SSE answer opens with a priming event (the id to resume
/// from), which used to leave alone with the head, a write and a client wake-up of its own.
#[tokio::test]
async fn an_http_answer_leaves_with_its_head_and_a_long_call_s_head_does_not_wait_for_it() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let url = format!("http://{}/mcp", daemon.addr);
    let token = daemon.token();
    let session = HttpSession::open(&url, &token).await;
    let http = reqwest::Client::new();
    let call = |id: i64, model: &str| {
        let message = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
            "name": "chat", "arguments": {"prompt": format!("call {id}"), "model": model}}});
        mcp_request(&http, &url, &token, Some(&session.id), &message).send()
    };

    // A quick call: the head, the priming event and the answer form one body of known length.
    // (The head is held at most 100 ms: on a loaded machine a call may take longer, so a few
    // are tried; one quick enough is what this shows.)
    let mut one_write = None;
    for id in 1..=5 {
        let quick = call(id, "fake-fast").await.unwrap();
        assert_eq!(quick.status(), 200);
        assert!(
            quick.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let Some(length) = quick.headers().get("content-length") else {
            continue;
        };
        let length: usize = length.to_str().unwrap().parse().unwrap();
        assert!(quick.headers().get("transfer-encoding").is_none());
        let body = quick.text().await.unwrap();
        assert_eq!(body.len(), length);
        one_write = Some((id, body));
        break;
    }
    let (id, body) = one_write.expect("a quick call's answer in one body of known length");
    assert!(
        body.starts_with("data: \nid: "),
        "priming event first: {body}"
    );
    assert!(body.contains("retry: "), "{body}");
    assert!(body.contains(&format!("echo: call {id}")), "{body}");

    // A call that sends nothing for seconds: its head and priming event leave long before its
    // answer (so a client sees the call accepted, and may resume from the event's id).
    let mut slow = call(9, "fake-delay-3000").await.unwrap();
    assert_eq!(slow.status(), 200);
    assert!(slow.headers().get("content-length").is_none());
    let first = slow.chunk().await.unwrap().expect("the priming event");
    let first = String::from_utf8_lossy(&first).to_string();
    assert!(first.contains("retry: "), "{first}");
    assert!(
        !first.contains("echo"),
        "the head waited for the answer: {first}"
    );
    let mut rest = String::new();
    while let Some(chunk) = slow.chunk().await.unwrap() {
        rest.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(rest.contains("echo: call 9"), "{rest}");
}

/// A key pasted into a prompt (and echoed in the answer) is masked in the call's record — its
/// arguments and its stored answer, which `call_result` hands out later — while the answer sent
/// when the call ended is the model's own. Code's `password = …` stays as it was.
#[tokio::test]
async fn a_key_pasted_into_a_prompt_is_kept_out_of_the_record() {
    const PASTED: &str = "ghp_0123456789abcdefABCDEF0123456789abcd";
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let prompt = format!("why does `password = input()` fail with token {PASTED}?");
    let answer = client.call_tool(chat(&prompt, "fake-fast")).await.unwrap();
    assert!(text_of(&answer).contains(PASTED), "{}", text_of(&answer));
    let id = call_id_of(&answer);
    let record = daemon.final_record(&id);
    let stored = format!("{} {}", record.arguments, record.result.unwrap_or_default());
    assert!(!stored.contains(PASTED), "{stored}");
    assert!(
        stored.contains("ghp_***") && stored.contains("password = input()"),
        "{stored}"
    );
    let fetched = client
        .call_tool(call("call_result", json!({ "call_id": id })))
        .await
        .unwrap();
    let fetched = all_text_of(&fetched);
    assert!(
        !fetched.contains(PASTED) && fetched.contains("ghp_***"),
        "{fetched}"
    );
    client.cancel().await.unwrap();
}
