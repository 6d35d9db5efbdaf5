//! The shim and the daemon against hostile neighbours: an impostor on the daemon's port, a state
//! directory others can reach, stale sockets — and autostart with a host name in `EXAI_URL`.

use crate::common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use exai::daemon::proof;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// What an impostor does with a WebSocket upgrade.
#[derive(Clone, Copy, Debug)]
enum Trick {
    /// Accepts at once and answers the client's initialize itself.
    Accept,
    /// Plays the daemon's challenge (a nonce of its own), then accepts with a made-up proof.
    FakeChallenge,
}

/// A plain TCP listener on a port of its own that records every byte it receives and answers
/// WebSocket upgrades (with an injected `initialize` answer for request id 1).
struct Impostor {
    port: u16,
    received: Arc<Mutex<Vec<u8>>>,
    connections: Arc<AtomicUsize>,
    /// Connections it has finished reading (the peer closed them).
    closed: Arc<AtomicUsize>,
}

const INJECTED: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"impostor","version":"6.6.6"}}}"#;

impl Impostor {
    fn start(trick: Trick) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (log, count, done) = (received.clone(), connections.clone(), closed.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let (log, done) = (log.clone(), done.clone());
                std::thread::spawn(move || {
                    answer(stream, trick, &log);
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            port,
            received,
            connections,
            closed,
        }
    }

    /// Everything it received, once every connection made to it so far is closed.
    fn everything_received(&self) -> String {
        wait_until(
            "the impostor's connections to close",
            Duration::from_secs(10),
            || {
                let made = self.connections.load(Ordering::SeqCst);
                (made > 0 && self.closed.load(Ordering::SeqCst) == made).then_some(())
            },
        );
        self.received()
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).to_string()
    }
}

/// One connection: record the request, answer as `trick` says, then record whatever else comes.
fn answer(mut stream: TcpStream, trick: Trick, log: &Mutex<Vec<u8>>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    log.lock().unwrap().extend_from_slice(&head);
    let head = String::from_utf8_lossy(&head).to_string();
    let key = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("sec-websocket-key:")
                .then(|| l[18..].trim().to_string())
        })
        .unwrap_or_default();
    let answered_a_challenge = head.contains("sn=");
    if matches!(trick, Trick::FakeChallenge) && !answered_a_challenge {
        let nonce = "ab".repeat(32);
        let _ = write!(
            stream,
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Exai-Proof sn={nonce}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return;
    }
    let _ = write!(
        stream,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nExai-Daemon-Proof: {}\r\n\r\n",
        derive_accept_key(key.as_bytes()),
        "cd".repeat(32)
    );
    let _ = stream.write_all(&text_frame(INJECTED));
    let mut rest = [0u8; 4096];
    while let Ok(n) = stream.read(&mut rest) {
        if n == 0 {
            break;
        }
        log.lock().unwrap().extend_from_slice(&rest[..n]);
    }
}

/// A server-to-client WebSocket text frame (unmasked).
fn text_frame(text: &str) -> Vec<u8> {
    let mut frame = vec![0x81];
    let len = text.len();
    if len < 126 {
        frame.push(len as u8);
    } else {
        frame.push(126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    }
    frame.extend_from_slice(text.as_bytes());
    frame
}

fn initialize_params() -> Value {
    json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "hostile-tests", "version": "0"}})
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `tools/call version` through a raw client that must succeed; returns its text.
fn version_text(raw: &mut RawClient) -> String {
    let result = raw.ok("tools/call", json!({"name": "version", "arguments": {}}));
    result["content"][0]["text"].as_str().unwrap().to_string()
}

#[test]
fn an_impostor_on_the_exai_url_port_never_gets_the_token_nor_reaches_the_client() {
    let fake = Fake::start();
    // A real daemon elsewhere: the token exists and the shim holds it.
    let daemon = Daemon::start(&fake, &[]);
    let token = daemon.token();
    for trick in [Trick::Accept, Trick::FakeChallenge] {
        let impostor = Impostor::start(trick);
        let mut raw = RawClient::start(&daemon.tcp_stdio_env(&impostor.url()), &[]);
        let error = raw.err("initialize", initialize_params());
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("did not prove it is the exai daemon")
                && message.contains(&impostor.url()),
            "{trick:?}: {error}"
        );
        drop(raw);
        let received = impostor.everything_received();
        assert!(
            !received.contains(&token),
            "{trick:?}: the token reached the impostor: {received}"
        );
        assert!(received.contains("Exai-Proof"), "{trick:?}: {received}");
        assert!(
            received.ends_with("\r\n\r\n"),
            "{trick:?}: not a byte after the upgrade request: {received:?}"
        );
    }
}

#[test]
fn an_impostor_on_the_listen_port_is_never_asked_the_shim_uses_the_socket() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let impostor = Impostor::start(Trick::Accept);
    let mut env = daemon.stdio_env();
    env.push(("EXAI_LISTEN".into(), format!("127.0.0.1:{}", impostor.port)));
    let mut raw = RawClient::start(&env, &[]);
    let init = raw.ok("initialize", initialize_params());
    assert_eq!(init["serverInfo"]["name"], "exai", "{init}");
    raw.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    assert!(version_text(&mut raw).contains("daemon"));
    assert_eq!(impostor.connections.load(Ordering::SeqCst), 0);
}

#[test]
fn the_state_dir_is_made_private_and_its_socket_serves_the_same_guarded_routes() {
    let fake = Fake::start();
    let home = temp_home();
    chmod(&home, 0o755);
    let mut daemon = Daemon::start_in(home.clone(), "127.0.0.1:0", &fake, &[]);
    assert_eq!(mode_of(&home), 0o700, "EXAI_HOME made private");
    let socket = home.join("daemon.sock");
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let (status, body) = socket_request(&socket, "localhost", "GET", "/healthz", &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["pid"],
        daemon.pid()
    );
    let (status, _) = socket_request(&socket, "rebound.example", "GET", "/healthz", &[]);
    assert_eq!(status, 403, "the Host guard applies over the socket too");
    let (status, body) = socket_request(&socket, "localhost", "POST", "/mcp", &[]);
    assert_eq!(status, 401, "the token applies over the socket too: {body}");

    let mut raw = RawClient::start(&daemon.stdio_env(), &[]);
    raw.ok("initialize", initialize_params());
    drop(raw);
    daemon.signal("-TERM");
    wait_until("the daemon to exit", Duration::from_secs(10), || {
        daemon.proc.as_mut().unwrap().0.try_wait().unwrap()
    });
    assert!(!socket.exists(), "the socket is removed at shutdown");
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_left_alone() {
    let fake = Fake::start();
    let home = temp_home();
    let socket = home.join("daemon.sock");
    // A socket whose listener is gone: what a killed daemon leaves.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let daemon = Daemon::start_in(home.clone(), "127.0.0.1:0", &fake, &[]);
    let (status, _) = socket_request(&socket, "localhost", "GET", "/healthz", &[]);
    assert_eq!(status, 200, "the stale socket was replaced by a live one");
    drop(daemon);

    // Something else answers on the socket: the daemon leaves it and says so.
    let other = temp_home();
    let _listening = std::os::unix::net::UnixListener::bind(other.join("daemon.sock")).unwrap();
    let output = Command::new(EXAI)
        .args(["daemon", "--listen", "127.0.0.1:0"])
        .env("EXAI_HOME", &other)
        .envs(store_env(&other))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already answers on"), "{stderr}");
    assert!(other.join("daemon.sock").exists());
}

#[test]
fn the_shim_refuses_a_socket_dir_others_can_reach() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    // The TCP address too, so a shim that ignored the socket would get through.
    let mut env = daemon.stdio_env();
    env.push(("EXAI_LISTEN".into(), daemon.addr.clone()));
    chmod(&daemon.home, 0o777);
    let mut raw = RawClient::start(&env, &[]);
    let error = raw.err("initialize", initialize_params());
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("open to other users") && message.contains("chmod 700"),
        "{error}"
    );
    chmod(&daemon.home, 0o700);
    let mut raw = RawClient::start(&env, &[]);
    raw.ok("initialize", initialize_params());
}

#[test]
fn a_state_dir_of_another_user_is_refused_by_daemon_and_shim() {
    if current_uid() != 0 {
        eprintln!("skipped: giving a directory to another user needs root");
        return;
    }
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let mut env = daemon.stdio_env();
    env.push(("EXAI_LISTEN".into(), daemon.addr.clone()));
    let chown = |owner: &str| {
        assert!(
            Command::new("chown")
                .args([owner, &daemon.home.display().to_string()])
                .status()
                .unwrap()
                .success()
        );
    };
    chown("65534");
    let mut raw = RawClient::start(&env, &[]);
    let error = raw.err("initialize", initialize_params());
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("belongs to uid 65534"),
        "{error}"
    );
    let output = Command::new(EXAI)
        .args(["daemon", "--listen", "127.0.0.1:0"])
        .env("EXAI_HOME", &daemon.home)
        .envs(store_env(&daemon.home))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("belongs to uid 65534"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    chown("0");
}

/// The uid this test runs as (from `id -u`: the tests need no libc).
fn current_uid() -> u32 {
    let output = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_host_name_exai_url_starts_one_daemon_and_calls_succeed() {
    let fake = Fake::start();
    let home = temp_home();
    let port = free_port();
    let url = format!("ws://localhost:{port}/ws");
    // A client over TCP hands the daemon none of its settings: the daemon it starts takes its
    // provider from its own config file.
    let config = temp_home();
    std::fs::create_dir_all(config.join("exai")).unwrap();
    std::fs::write(
        config.join("exai/config.toml"),
        format!(
            "[[endpoints]]\nname = \"fake\"\nbase_url = \"{}/v1\"\nmodels = [\"fake-fast\"]\n",
            fake.url
        ),
    )
    .unwrap();
    let mut env = autostart_env(&home, &fake, Some(&url));
    env.push(("XDG_CONFIG_HOME".into(), path(&config)));
    let mut raw = RawClient::start(&env, &[]);
    raw.ok("initialize", initialize_params());
    raw.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    let result = raw.ok(
        "tools/call",
        json!({"name": "chat", "arguments": {"prompt": "by name", "model": "fake-fast"}}),
    );
    assert_eq!(result["content"][0]["text"], "echo: by name", "{result}");
    assert_eq!(daemon_info(&home)["listen"], format!("127.0.0.1:{port}"));
    drop(raw);
    stop_started_daemon(&home);
    assert_eq!(logged(&home, "exai daemon listening"), 1);
    assert_eq!(logged(&home, "exai: "), 0, "no daemon failed to start");
}

#[test]
fn a_daemon_that_cannot_start_is_reported_with_its_reason_and_not_respawned() {
    if sqlite_only("a directory where calls.sqlite3 goes keeps the store from opening") {
        return;
    }
    let fake = Fake::start();
    let home = temp_home();
    // The store cannot open: every daemon started here exits at once.
    std::fs::create_dir_all(home.join("calls.sqlite3")).unwrap();
    let url = format!("ws://localhost:{}/ws", free_port());
    let mut raw = RawClient::start(&autostart_env(&home, &fake, Some(&url)), &[]);
    let error = raw.err("initialize", initialize_params());
    let message = error["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.contains("could not start the exai daemon")
            && message.contains("exited after")
            && message.contains("calls.sqlite3"),
        "{error}"
    );
    // Each later request waits for the shim's next attempt to reach the daemon; none starts another.
    for _ in 0..3 {
        let error = raw.err("tools/list", json!({}));
        assert!(
            error["message"]
                .as_str()
                .unwrap_or_default()
                .contains("calls.sqlite3"),
            "{error}"
        );
    }
    assert_eq!(logged(&home, "exai: call store"), 1, "one start, no loop");
}

#[tokio::test]
async fn challenge_response_admits_the_real_daemon_and_nothing_replayed_or_forged() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let port = daemon.addr.rsplit_once(':').unwrap().1;
    for url in [daemon.url(), format!("ws://localhost:{port}/ws")] {
        let (client, _) = stdio_client(&daemon.tcp_stdio_env(&url), &[]).await;
        let result = client
            .call_tool(chat("over tcp", "fake-fast"))
            .await
            .unwrap();
        assert_eq!(text_of(&result), "echo: over tcp", "{url}");
        client.cancel().await.unwrap();
    }

    // The protocol itself, step by step, as a hostile client would drive it.
    let token = daemon.token();
    let client_nonce = proof::new_nonce().unwrap();
    let upgrade = async |authorization: String| {
        let mut request = daemon.url().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", authorization.parse().unwrap());
        let stream = tokio::net::TcpStream::connect(&daemon.addr).await.unwrap();
        match tokio_tungstenite::client_async(request, stream).await {
            Ok((_, response)) => (response.status().as_u16(), response.headers().clone()),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                (response.status().as_u16(), response.headers().clone())
            }
            Err(other) => panic!("{other}"),
        }
    };
    let challenge = async || {
        let (status, headers) = upgrade(proof::authorization(&client_nonce, None)).await;
        assert_eq!(status, 401);
        let offered = headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .and_then(proof::parse)
            .and_then(|f| f.server_nonce)
            .expect("a challenge");
        assert!(proof::is_nonce(&offered));
        offered
    };
    let answer = |server_nonce: &str, token: &str| {
        let mac = proof::shim_proof(token, server_nonce, &client_nonce);
        proof::authorization(&client_nonce, Some((server_nonce, &mac)))
    };

    let server_nonce = challenge().await;
    let (status, _) = upgrade(answer(&server_nonce, "not the token")).await;
    assert_eq!(status, 401, "a proof made without the token is refused");
    let (status, _) = upgrade(answer(&server_nonce, &token)).await;
    assert_eq!(
        status, 401,
        "a challenge is answered once, even after a wrong guess"
    );

    let server_nonce = challenge().await;
    let (status, headers) = upgrade(answer(&server_nonce, &token)).await;
    assert_eq!(status, 101);
    let daemon_proof = headers
        .get(proof::DAEMON_PROOF_HEADER)
        .and_then(|v| v.to_str().ok())
        .expect("the daemon's proof");
    assert!(proof::daemon_proof_holds(
        &token,
        &server_nonce,
        &client_nonce,
        daemon_proof
    ));
    let (status, _) = upgrade(answer(&server_nonce, &token)).await;
    assert_eq!(status, 401, "a used challenge cannot be replayed");
    // Bearer tokens still work for HTTP clients.
    let (status, _) = upgrade(format!("Bearer {token}")).await;
    assert_eq!(status, 101);
}

#[test]
fn a_stopping_daemon_is_waited_for_then_replaced_without_a_failed_start() {
    let fake = Fake::start();
    let mut daemon = Daemon::start(&fake, &[("EXAI_SHUTDOWN_GRACE_S", "1.5")]);
    let mut first = RawClient::start(&daemon.stdio_env(), &[]);
    first.ok("initialize", initialize_params());
    first.send(&json!({"jsonrpc": "2.0", "id": 50, "method": "tools/call", "params": {"name": "chat", "arguments": {"prompt": "hold on", "model": "fake-hang"}}}));
    wait_until("the call in flight", Duration::from_secs(10), || {
        (daemon.healthz()["calls_in_flight"].as_u64()? == 1).then_some(())
    });
    daemon.signal("-TERM");
    let socket = daemon.home.join("daemon.sock");
    wait_until(
        "the daemon to stop accepting",
        Duration::from_secs(10),
        || {
            std::os::unix::net::UnixStream::connect(&socket)
                .is_err()
                .then_some(())
        },
    );
    // While it drains its call, a new client comes, allowed to start a daemon.
    let mut env: Vec<(String, String)> = daemon
        .stdio_env()
        .into_iter()
        .filter(|(k, _)| k != "EXAI_NO_AUTOSTART")
        .collect();
    env.push(("EXAI_LISTEN".into(), format!("127.0.0.1:{}", free_port())));
    let mut second = RawClient::start(&env, &[]);
    second.ok("initialize", initialize_params());
    assert!(
        daemon
            .proc
            .as_mut()
            .unwrap()
            .0
            .try_wait()
            .unwrap()
            .is_some(),
        "the new daemon came after the old one left"
    );
    assert_ne!(daemon_info(&daemon.home)["pid"], daemon.pid());
    drop((first, second));
    stop_started_daemon(&daemon.home);
    assert_eq!(
        logged(&daemon.home, "another exai daemon is running"),
        0,
        "no daemon was started against the stopping one"
    );
}

/// A daemon that takes no more from its socket (stopped, wedged) cannot hold the shim in the
/// middle of sending a message larger than the socket's buffers: the shim goes on reading while
/// it sends, so the daemon's silence to its pings (15 s) or the send's own bound (30 s) ends the
/// link, and the request gets an error naming why, where once it waited as long as the daemon.
#[tokio::test]
async fn a_daemon_that_takes_no_message_cannot_hold_the_shim_mid_send() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let linked = client.call_tool(chat("hi", "fake-fast")).await.unwrap();
    assert_eq!(linked.is_error, Some(false), "{}", all_text_of(&linked));
    daemon.signal("-STOP");
    let big = "x".repeat(8 << 20);
    let answer = tokio::time::timeout(
        Duration::from_secs(120),
        client.call_tool(chat(&big, "fake-fast")),
    )
    .await;
    daemon.signal("-CONT");
    let error = answer
        .expect("an answer in bounded time")
        .expect_err("an error, not an answer");
    let said = error.to_string();
    assert!(
        said.contains("the daemon stopped answering pings")
            || said.contains("the daemon took no message for 30 s"),
        "{error}"
    );
}

/// What a client sends just before it closes its input reaches the daemon (`exai call` sends its
/// cancel on Ctrl-C and goes): the shim sends what waits for the link before it goes. It used to
/// leave at the end of input with messages still queued, and a cancel was lost now and then.
#[test]
fn the_last_messages_before_the_client_closes_its_input_reach_the_daemon() {
    const CALLS: usize = 20;
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let mut raw = RawClient::start(&daemon.stdio_env(), &[]);
    raw.ok("initialize", initialize_params());
    raw.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    let ids: Vec<String> = (0..CALLS)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    for (n, id) in ids.iter().enumerate() {
        raw.send(
            &json!({"jsonrpc": "2.0", "id": 100 + n, "method": "tools/call", "params": {
                "name": "chat",
                "arguments": {"prompt": format!("slow {n}"), "model": "fake-delay-20000"},
                "_meta": {"exai.dev/callId": id},
            }}),
        );
    }
    wait_until("the calls in flight", Duration::from_secs(20), || {
        (daemon.healthz()["calls_in_flight"].as_u64()? == CALLS as u64).then_some(())
    });
    // Their cancels and the end of input in one write.
    let cancels: String = (0..CALLS)
        .map(|n| {
            let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": 100 + n, "reason": "the client is closing"}});
            format!("{cancel}\n")
        })
        .collect();
    raw.send_and_close(&cancels);
    for id in &ids {
        let record = wait_until("the call's record to end", Duration::from_secs(10), || {
            daemon.record(id).filter(|r| r.finished_at_ms.is_some())
        });
        assert_eq!(record.state.as_str(), "cancelled", "{record:?}");
    }
}

/// The pids of `exai stdio` shims serving `home`.
fn shims_of(home: &Path) -> Vec<String> {
    let wanted = format!("EXAI_HOME={}", home.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid = entry.file_name().into_string().ok()?;
            pid.parse::<u32>().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_shim = args.get(1).is_some_and(|a| *a == b"stdio");
            let of_home = environ
                .split(|b| *b == 0)
                .any(|var| var == wanted.as_bytes());
            (is_shim && of_home).then_some(pid)
        })
        .collect()
}

/// A shim stopped for longer than its ping check (Ctrl-Z on the client, a client that stopped
/// reading) does not take the daemon's silence meanwhile for a dead daemon once it runs again:
/// the call in flight still gets its answer.
#[tokio::test]
async fn a_shim_stopped_for_a_while_does_not_call_a_live_daemon_dead() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let linked = client.call_tool(chat("hi", "fake-fast")).await.unwrap();
    assert_eq!(linked.is_error, Some(false), "{}", all_text_of(&linked));
    let shims = shims_of(&daemon.home);
    assert_eq!(shims.len(), 1, "{shims:?}");
    let peer = client.peer().clone();
    let answer =
        tokio::spawn(async move { peer.call_tool(chat("later", "fake-delay-3000")).await });
    wait_until_async(
        "the call to reach the model",
        Duration::from_secs(10),
        || (fake.stats()["by_model"]["fake-delay-3000"].as_u64() >= Some(1)).then_some(()),
    )
    .await;
    let kill = |signal: &str| {
        let status = Command::new("kill")
            .args([signal, &shims[0]])
            .status()
            .unwrap();
        assert!(status.success());
    };
    kill("-STOP");
    // Longer than three ping periods (15 s): the time the shim is stopped is the point here.
    tokio::time::sleep(Duration::from_secs(17)).await;
    kill("-CONT");
    let answer = tokio::time::timeout(Duration::from_secs(30), answer)
        .await
        .expect("an answer in bounded time")
        .unwrap()
        .unwrap();
    assert_eq!(answer.is_error, Some(false), "{}", all_text_of(&answer));
    assert!(
        all_text_of(&answer).contains("echo: later"),
        "{}",
        all_text_of(&answer)
    );
}

/// A connection to the daemon's TCP port gets keep-alive probes: a peer gone dark (a closed
/// laptop, a dropped network) ends its session once the kernel gives up on it, rather than
/// holding it for ever. Read from the kernel's own table (`/proc/net/tcp`: timer 2 is the
/// keep-alive timer) for the daemon's end of a fresh, idle connection.
#[test]
fn the_daemons_tcp_connections_are_kept_alive() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let client = TcpStream::connect(&daemon.addr).unwrap();
    let (daemon_port, client_port) = (
        client.peer_addr().unwrap().port(),
        client.local_addr().unwrap().port(),
    );
    let timer = || {
        let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
        table.lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = |address: &str| u16::from_str_radix(address.rsplit(':').next()?, 16).ok();
            (port(fields.get(1)?)? == daemon_port && port(fields.get(2)?)? == client_port)
                .then(|| fields.get(5).map(|t| t.to_string()))
                .flatten()
        })
    };
    let armed = wait_until(
        "the daemon's end of the connection",
        Duration::from_secs(10),
        || timer().filter(|t| t.starts_with("02:")),
    );
    // About a minute before the first probe (jiffies at the kernel's HZ; at least 30 s).
    assert!(armed.starts_with("02:"), "{armed}");
    drop(client);
}

#[tokio::test]
async fn thousands_of_calls_sent_at_once_through_the_shim_are_all_opened() {
    // Each call opened sends the client progress; thousands at once fill the daemon's queue of
    // answers, and the daemon then reads no more until the shim reads. A shim that waited on a
    // send before reading again deadlocked there (the 10,000-in-flight bench stalled at ~5,000).
    const CALLS: usize = 8_000;
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[("EXAI_PROVIDER_CONCURRENCY", "20000")]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let calls = spawn_chats(&client, CALLS, "many", "fake-delay-120000");
    wait_until_async("every call in flight", Duration::from_secs(90), || {
        (daemon.healthz()["calls_in_flight"].as_u64()? >= CALLS as u64).then_some(())
    })
    .await;
    // And the session still answers a control message meanwhile.
    let tools = tokio::time::timeout(Duration::from_secs(10), client.list_all_tools())
        .await
        .expect("tools/list answered")
        .unwrap();
    assert!(!tools.is_empty());
    for call in calls {
        call.abort();
    }
    client.cancel().await.unwrap();
}
