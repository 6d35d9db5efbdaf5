//! People: personal tokens made and revoked with `exai users`, calls recorded with their user,
//! each user seeing only their own calls and threads (admins and the owner all), a revoked token
//! refused while the daemon runs, and `--allow-remote` taking only personal tokens over TCP.

use crate::common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Every test client introduces itself with this name: `call_list` shows a client's own calls,
/// so only the user tells the lists apart.
const CLIENT: &str = "users-test";

/// `exai ARGS` with EXAI_HOME `home` and its store, no daemon needed: (success, stdout + stderr).
fn cli(home: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new(EXAI)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("EXAI_HOME", home)
        .envs(store_env(home))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Adds user `name` to `home`'s store; returns their token.
pub(crate) fn add_user(home: &Path, name: &str, admin: bool) -> String {
    let mut args = vec!["users", "add", name];
    if admin {
        args.push("--admin");
    }
    let (ok, output) = cli(home, &args);
    assert!(ok, "{output}");
    personal_token_in(&output)
}

fn sha256_hex(text: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn initialize_params(protocol: &str, capabilities: Value) -> Value {
    json!({"protocolVersion": protocol, "capabilities": capabilities,
           "clientInfo": {"name": CLIENT, "version": "1"}})
}

/// A 2025-11-25 client that uses that revision's tasks (`tasks/get|result|list|cancel`).
fn with_legacy_tasks() -> Value {
    initialize_params("2025-11-25", json!({"tasks": {"list": {}, "cancel": {}}}))
}

/// A client of the MCP tasks extension (its `tasks/get` and `tasks/cancel`).
fn with_tasks_extension() -> Value {
    initialize_params(
        "2025-06-18",
        json!({"extensions": {"io.modelcontextprotocol/tasks": {}}}),
    )
}

fn plain() -> Value {
    initialize_params("2025-06-18", json!({}))
}

/// Two members, ada and bob: their tokens.
fn ada_and_bob(daemon: &Daemon) -> (String, String) {
    (
        add_user(&daemon.home, "ada", false),
        add_user(&daemon.home, "bob", false),
    )
}

/// A raw MCP session over `/ws`, admitted with `token` (a 2025-11-25 client with tasks).
pub(crate) struct WsClient {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: i64,
    /// Responses that arrived while another was awaited, by id.
    early: HashMap<i64, Value>,
}

impl WsClient {
    /// Waits (at most `within`) for the daemon to close the connection; whether it did.
    pub(crate) async fn closed_within(&mut self, within: Duration) -> bool {
        let closed = async {
            loop {
                match self.ws.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => {}
                }
            }
        };
        tokio::time::timeout(within, closed).await.is_ok()
    }

    pub(crate) async fn connect(daemon: &Daemon, token: &str) -> Self {
        let mut request = daemon.url().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let mut client = Self {
            ws,
            next_id: 0,
            early: HashMap::new(),
        };
        client.request("initialize", with_legacy_tasks()).await;
        client
            .write(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        client
    }

    async fn write(&mut self, message: Value) {
        self.ws
            .send(Message::Text(message.to_string().into()))
            .await
            .unwrap();
    }

    /// Sends a request without waiting for its answer; returns its id.
    pub(crate) async fn send(&mut self, method: &str, params: Value) -> i64 {
        self.next_id += 1;
        let id = self.next_id;
        self.write(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        id
    }

    /// The response to request `id` (notifications and other answers are set aside).
    pub(crate) async fn response(&mut self, id: i64) -> Value {
        if let Some(found) = self.early.remove(&id) {
            return found;
        }
        let wait = async {
            loop {
                let Some(Ok(Message::Text(text))) = self.ws.next().await else {
                    continue;
                };
                let message: Value = serde_json::from_str(text.as_str()).unwrap();
                match message["id"].as_i64() {
                    Some(got) if got == id => return message,
                    Some(other) => {
                        self.early.insert(other, message);
                    }
                    None => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .expect("an answer within 30 s")
    }

    async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params).await;
        self.response(id).await
    }

    /// The result of `tools/call` of `tool` with `arguments`.
    pub(crate) async fn tool(&mut self, tool: &str, arguments: Value) -> Value {
        let answer = self
            .request("tools/call", json!({"name": tool, "arguments": arguments}))
            .await;
        answer["result"].clone()
    }

    pub(crate) async fn chat(&mut self, arguments: Value) -> Value {
        self.tool("chat", arguments).await
    }
}

fn text(result: &Value) -> String {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub(crate) fn call_id(result: &Value) -> String {
    result["_meta"]["exai.dev/callId"]
        .as_str()
        .expect("the result names its call")
        .to_string()
}

/// The error text of a tool result that must be an error, with `id` written as `ID` (and
/// without the note naming the asking call itself).
fn error_about(result: &Value, id: &str) -> String {
    assert_eq!(result["isError"], true, "{result}");
    let text = text(result).replace(id, "ID");
    text.split(" (call ").next().unwrap_or_default().to_string()
}

/// A raw MCP session over Streamable HTTP (`/mcp`), each POST carrying `token`.
struct HttpClient {
    url: String,
    token: String,
    session: Option<String>,
    next_id: i64,
}

impl HttpClient {
    async fn connect(daemon: &Daemon, token: &str, initialize: Value) -> Self {
        let mut client = Self {
            url: format!("http://{}/mcp", daemon.addr),
            token: token.to_string(),
            session: None,
            next_id: 0,
        };
        client.request("initialize", initialize).await;
        client
            .post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        client
    }

    async fn post(&mut self, body: Value) -> String {
        let mut request = reqwest::Client::new()
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("accept", "application/json, text/event-stream")
            .json(&body);
        if let Some(session) = &self.session {
            request = request
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", "2025-06-18");
        }
        let response = request.send().await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        if let Some(session) = response.headers().get("mcp-session-id") {
            self.session = Some(session.to_str().unwrap().to_string());
        }
        response.text().await.unwrap()
    }

    async fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let body = self
            .post(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        // A JSON answer, or server-sent events of which one carries the answer.
        std::iter::once(body.as_str())
            .chain(body.lines().filter_map(|line| line.strip_prefix("data:")))
            .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
            .find(|message| message["id"] == id)
            .unwrap_or_else(|| panic!("no answer to {method} in {body}"))
    }

    async fn tool(&mut self, tool: &str, arguments: Value) -> Value {
        let answer = self
            .request("tools/call", json!({"name": tool, "arguments": arguments}))
            .await;
        answer["result"].clone()
    }
}

#[test]
fn users_are_added_listed_and_revoked_with_no_daemon_and_the_token_is_shown_once() {
    let home = temp_home();
    let (ok, added) = cli(&home, &["users", "add", "ada", "--admin"]);
    assert!(ok, "{added}");
    let token = personal_token_in(&added);
    assert!(token.len() >= "exai_u_".len() + 64, "{token}");
    assert!(added.contains("Authorization: Bearer"), "{added}");
    let bob = add_user(&home, "bob", false);
    assert_ne!(token, bob);

    let (ok, taken) = cli(&home, &["users", "add", "ada"]);
    assert!(!ok && taken.contains("user ada already exists"), "{taken}");
    let (ok, bad) = cli(&home, &["users", "add", "Robert'); DROP TABLE users"]);
    assert!(!ok && bad.contains("is not a valid user name"), "{bad}");

    let (ok, table) = cli(&home, &["users", "list"]);
    assert!(ok, "{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[1].starts_with("ada") && lines[1].contains("yes"),
        "{table}"
    );
    assert!(
        lines[2].starts_with("bob") && lines[2].contains("no"),
        "{table}"
    );
    let (ok, listed) = cli(&home, &["users", "list", "--json"]);
    assert!(ok, "{listed}");
    let users: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(users[0]["name"], "ada");
    assert_eq!(users[0]["admin"], true);
    assert!(users[0]["created_at_ms"].as_i64().unwrap() > 0);
    assert_eq!(users[1]["revoked_at_ms"], Value::Null);
    for shown in [&table, &listed] {
        for secret in [&token, &bob, &sha256_hex(&token), &sha256_hex(&bob)] {
            assert!(!shown.contains(secret.as_str()), "{shown}");
        }
    }

    let (ok, revoked) = cli(&home, &["users", "revoke", "bob"]);
    assert!(ok && revoked.contains("revoked bob"), "{revoked}");
    let (ok, again) = cli(&home, &["users", "revoke", "bob"]);
    assert!(ok && again.contains("bob was already revoked"), "{again}");
    let (ok, unknown) = cli(&home, &["users", "revoke", "carol"]);
    assert!(!ok && unknown.contains("no user carol"), "{unknown}");
    let (_, listed) = cli(&home, &["users", "list", "--json"]);
    let users: Value = serde_json::from_str(&listed).unwrap();
    assert!(users[1]["revoked_at_ms"].as_i64().unwrap() > 0, "{users}");
    // The store keeps the token's hash only.
    let kept = read_store_of_home(&home, |store| store.active_user(&sha256_hex(&token)));
    assert_eq!(kept.unwrap().unwrap().name, "ada");
}

#[tokio::test]
async fn a_call_is_recorded_with_the_user_whose_token_made_it_over_ws_and_mcp() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let ada = add_user(&daemon.home, "ada", false);
    let bob = add_user(&daemon.home, "bob", false);

    let mut over_ws = WsClient::connect(&daemon, &ada).await;
    let by_ada = over_ws
        .chat(json!({"prompt": "from ada", "model": "fake-fast"}))
        .await;
    assert_eq!(text(&by_ada), "echo: from ada", "{by_ada}");
    let mut over_http = HttpClient::connect(&daemon, &bob, plain()).await;
    let by_bob = over_http
        .tool("chat", json!({"prompt": "from bob", "model": "fake-fast"}))
        .await;
    assert_eq!(text(&by_bob), "echo: from bob", "{by_bob}");
    // An HTTP session stays the token's that opened it: to another it does not exist.
    let borrowed = reqwest::Client::new()
        .post(&over_http.url)
        .bearer_auth(&ada)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", over_http.session.as_deref().unwrap())
        .header("mcp-protocol-version", "2025-06-18")
        .json(&json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                      "params": {"name": "call_list", "arguments": {}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(borrowed.status().as_u16(), 404);
    let said = borrowed.text().await.unwrap();
    assert!(
        said.contains("no such MCP session for this token"),
        "{said}"
    );
    let mut owner = WsClient::connect(&daemon, &daemon.token()).await;
    let by_owner = owner
        .chat(json!({"prompt": "from the owner", "model": "fake-fast"}))
        .await;

    let user_of = |result: &Value| daemon.final_record(&call_id(result)).user_name;
    assert_eq!(user_of(&by_ada).as_deref(), Some("ada"));
    assert_eq!(user_of(&by_bob).as_deref(), Some("bob"));
    assert_eq!(user_of(&by_owner), None);
    let (ok, shown) = daemon.cli(&["calls", "show", &call_id(&by_ada)]);
    assert!(ok && shown.contains("\nuser           ada\n"), "{shown}");
    // The listing has a USER column once the store has users' calls.
    let (ok, listed) = daemon.cli(&["calls"]);
    let row_of = |id: &str| {
        listed
            .lines()
            .find(|line| line.starts_with(id))
            .map(|line| {
                // The id, then the age (two words: "0 s"), then the user.
                line.split_whitespace()
                    .nth(3)
                    .unwrap_or_default()
                    .to_string()
            })
    };
    assert!(
        ok && listed
            .lines()
            .next()
            .is_some_and(|h| h.contains("  USER  ")),
        "{listed}"
    );
    assert_eq!(
        row_of(&call_id(&by_ada)).as_deref(),
        Some("ada"),
        "{listed}"
    );
    assert_eq!(
        row_of(&call_id(&by_owner)).as_deref(),
        Some("(owner)"),
        "{listed}"
    );
    assert_eq!(
        daemon.record(&call_id(&by_bob)).unwrap().transport.as_str(),
        "http"
    );

    // The tokens themselves are nowhere: not in the store (its hash is), not in the logs.
    let stored = daemon.store_contents().join("\n");
    assert!(stored.contains(&sha256_hex(&ada)), "the store was read");
    for token in [&ada, &bob] {
        assert!(!stored.contains(token.as_str()));
        assert_eq!(logged(&daemon.home, token), 0);
    }
}

#[tokio::test]
async fn users_see_only_their_own_calls_and_threads_and_admins_see_all() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let home = daemon.home.clone();
    let (ada_token, bob_token, boss_token) = (
        add_user(&home, "ada", false),
        add_user(&home, "bob", false),
        add_user(&home, "boss", true),
    );
    let mut ada = WsClient::connect(&daemon, &ada_token).await;
    let mut bob = WsClient::connect(&daemon, &bob_token).await;
    let mut boss = WsClient::connect(&daemon, &boss_token).await;
    let mut bob_http = HttpClient::connect(&daemon, &bob_token, with_tasks_extension()).await;
    let mut boss_http = HttpClient::connect(&daemon, &boss_token, with_tasks_extension()).await;

    let first = ada
        .chat(json!({"prompt": "ada's secret", "model": "fake-fast"}))
        .await;
    let finished = call_id(&first);
    let thread = first["structuredContent"]["continuation_id"]
        .as_str()
        .unwrap()
        .to_string();
    // One of ada's calls stays running, as a task.
    let created = ada
        .request(
            "tools/call",
            json!({"name": "chat", "arguments": {"prompt": "wait", "model": "fake-hang"},
                   "task": {"ttl": 60000}}),
        )
        .await;
    let running = created["result"]["task"]["taskId"]
        .as_str()
        .unwrap_or_else(|| panic!("a task: {created}"))
        .to_string();
    let made_up = uuid::Uuid::now_v7().to_string();
    let swap = |args: &Value, from: &str, to: &str| -> Value {
        serde_json::from_str(&args.to_string().replace(from, to)).unwrap()
    };
    let message = |answer: &Value, id: &str| {
        answer["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("an error: {answer}"))
            .replace(id, "ID")
    };

    // To bob, each of ada's calls looks exactly like an id that never existed.
    for id in [&finished, &running] {
        for (tool, arguments) in [
            ("call_result", json!({"call_id": id, "wait_s": 0})),
            ("call_cancel", json!({"call_id": id})),
        ] {
            let seen = bob.tool(tool, arguments.clone()).await;
            let unknown = bob.tool(tool, swap(&arguments, id, &made_up)).await;
            assert_eq!(
                error_about(&seen, id),
                error_about(&unknown, &made_up),
                "{tool}"
            );
        }
        // Nor does a fragment of the id find it.
        let fragment = &id[id.len() - 8..];
        let by_fragment = bob.tool("call_result", json!({"call_id": fragment})).await;
        assert!(
            text(&by_fragment).contains(&format!("no call {fragment}:")),
            "{by_fragment}"
        );
        for method in ["tasks/get", "tasks/result", "tasks/cancel"] {
            let seen = bob.request(method, json!({"taskId": id})).await;
            let unknown = bob.request(method, json!({"taskId": made_up})).await;
            assert_eq!(message(&seen, id), message(&unknown, &made_up), "{method}");
        }
        let seen = bob_http.request("tasks/get", json!({"taskId": id})).await;
        let unknown = bob_http
            .request("tasks/get", json!({"taskId": made_up}))
            .await;
        assert_eq!(
            message(&seen, id),
            message(&unknown, &made_up),
            "tasks/get (extension)"
        );
    }
    let listed = |list: &Value| -> Vec<String> {
        list["structuredContent"]["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["call_id"].as_str().unwrap().to_string())
            .collect()
    };
    let tasks = |list: &Value| -> Vec<String> {
        list["result"]["tasks"]
            .as_array()
            .unwrap_or_else(|| panic!("tasks: {list}"))
            .iter()
            .map(|t| t["taskId"].as_str().unwrap().to_string())
            .collect()
    };
    let bobs_list = bob.tool("call_list", json!({"limit": 100})).await;
    assert!(!listed(&bobs_list).contains(&finished), "{bobs_list}");
    assert!(!listed(&bobs_list).contains(&running), "{bobs_list}");
    let bobs_tasks = bob.request("tasks/list", json!({})).await;
    assert!(tasks(&bobs_tasks).is_empty(), "{bobs_tasks}");
    let continued = bob
        .chat(json!({"prompt": "go on", "model": "fake-fast", "continuation_id": thread}))
        .await;
    let never = uuid::Uuid::new_v4().to_string();
    let unknown = bob
        .chat(json!({"prompt": "go on", "model": "fake-fast", "continuation_id": never}))
        .await;
    assert_eq!(
        error_about(&continued, &thread),
        error_about(&unknown, &never)
    );
    assert!(
        !last_body(&fake, "fake-fast").to_string().contains("go on"),
        "bob's attempts never reached a model"
    );

    // Ada sees her own; the admin sees everyone's and may continue ada's thread, which stays hers.
    let own = ada.request("tasks/get", json!({"taskId": finished})).await;
    assert_eq!(own["result"]["status"], "completed", "{own}");
    let own = ada.request("tasks/list", json!({})).await;
    assert_eq!(tasks(&own), std::slice::from_ref(&running));
    let fetched = boss
        .tool("call_result", json!({"call_id": finished, "wait_s": 0}))
        .await;
    assert_eq!(text(&fetched), "echo: ada's secret", "{fetched}");
    let boss_list = boss.tool("call_list", json!({"limit": 100})).await;
    assert!(listed(&boss_list).contains(&finished), "{boss_list}");
    assert!(listed(&boss_list).contains(&running), "{boss_list}");
    assert_eq!(
        tasks(&boss.request("tasks/list", json!({})).await),
        std::slice::from_ref(&running)
    );
    let got = boss_http
        .request("tasks/get", json!({"taskId": running}))
        .await;
    assert_eq!(got["result"]["status"], "working", "{got}");
    let by_admin = boss
        .chat(json!({"prompt": "admin here", "model": "fake-fast", "continuation_id": thread}))
        .await;
    assert_eq!(by_admin["isError"], false, "{by_admin}");
    let kept = daemon.read_store(|store| store.thread(&thread).unwrap().unwrap());
    assert_eq!(kept.user_name.as_deref(), Some("ada"));
    assert!(kept.turns.contains("admin here"));
    let ada_again = ada
        .chat(json!({"prompt": "mine still", "model": "fake-fast", "continuation_id": thread}))
        .await;
    assert_eq!(ada_again["isError"], false, "{ada_again}");

    // Ada stops her own running call.
    let stopped = ada.tool("call_cancel", json!({"call_id": running})).await;
    assert!(text(&stopped).contains("stopped"), "{stopped}");
    assert_eq!(daemon.final_record(&running).state.as_str(), "cancelled");
    assert_eq!(
        daemon.record(&running).unwrap().user_name.as_deref(),
        Some("ada")
    );
}

#[test]
fn a_revoked_token_is_refused_within_seconds_while_the_daemon_runs() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let token = add_user(&daemon.home, "ada", false);
    let url = format!("http://{}/mcp", daemon.addr);
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                            "params": plain()})
    .to_string();
    let bearer = format!("Bearer {token}");
    let post = || {
        http_request(
            "POST",
            &url,
            &[
                ("Authorization", &bearer),
                ("Accept", "application/json, text/event-stream"),
                ("Content-Type", "application/json"),
            ],
            &initialize,
        )
    };
    let (status, body) = post();
    assert_eq!(status, 200, "{body}");

    let (ok, revoked) = daemon.cli(&["users", "revoke", "ada"]);
    assert!(ok, "{revoked}");
    let body = wait_until(
        "the revoked token to be refused",
        Duration::from_secs(5),
        || {
            let (status, body) = post();
            (status == 401).then_some(body)
        },
    );
    assert!(body.contains("unknown or revoked personal token"), "{body}");
    assert!(!body.contains(&token), "{body}");
    assert_eq!(logged(&daemon.home, &token), 0);
}

#[tokio::test]
async fn with_allow_remote_the_daemons_own_token_is_refused_over_tcp() {
    let fake = Fake::start();
    let daemon = Daemon::start_with_args(
        temp_home(),
        &["--listen", "127.0.0.1:0", "--allow-remote"],
        &fake,
        &[],
    );
    let owner = format!("Bearer {}", daemon.token());
    let (status, body) = http_request(
        "POST",
        &format!("http://{}/mcp", daemon.addr),
        &[("Authorization", &owner)],
        "{}",
    );
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("--allow-remote") && body.contains("personal token"),
        "{body}"
    );
    assert!(!body.contains(&daemon.token()), "{body}");

    // The owner's token still opens the local socket; the shim's proof still works over TCP.
    let (status, body) = socket_request(
        &daemon.home.join("daemon.sock"),
        "localhost",
        "POST",
        "/mcp",
        &[("Authorization", &owner)],
    );
    assert_ne!(status, 401, "{body}");
    let (client, _) = stdio_client(&daemon.tcp_stdio_env(&daemon.url()), &[]).await;
    let through_shim = client
        .call_tool(chat("via the shim", "fake-fast"))
        .await
        .unwrap();
    assert_eq!(text_of(&through_shim), "echo: via the shim");
    client.cancel().await.unwrap();

    // A personal token is taken over TCP.
    let ada = add_user(&daemon.home, "ada", false);
    let mut remote = HttpClient::connect(&daemon, &ada, plain()).await;
    let answer = remote
        .tool("chat", json!({"prompt": "remote", "model": "fake-fast"}))
        .await;
    assert_eq!(text(&answer), "echo: remote", "{answer}");
    let record = daemon.final_record(&call_id(&answer));
    assert_eq!(record.user_name.as_deref(), Some("ada"));
}

/// A team member's personal token reads no file on exai's machine (its token, the replicas'
/// config, anyone's checkout) unless the operator opened a directory to the team with
/// `EXAI_ALLOWED_ROOTS`, and starts no CLI agent there (one runs with exai's own rights). The
/// machine's owner reads the same file as before.
#[tokio::test]
async fn a_personal_token_reads_no_file_of_exais_machine_outside_the_allowed_roots() {
    let fake = Fake::start();
    let shared = temp_home().canonicalize().unwrap();
    let file = shared.join("notes.txt");
    std::fs::write(&file, "the server's own notes\n").unwrap();
    let ask =
        json!({"prompt": "read it", "model": "fake-fast", "files": [file.display().to_string()]});
    let sent_the_file = || {
        let sent = fake.last_messages("fake-fast");
        sent.last().unwrap()["content"]
            .as_str()
            .unwrap()
            .contains("the server's own notes")
    };

    let daemon = Daemon::start(&fake, &[]);
    let mut ada = WsClient::connect(&daemon, &add_user(&daemon.home, "ada", false)).await;
    let mut boss = WsClient::connect(&daemon, &add_user(&daemon.home, "boss", true)).await;
    for person in [&mut ada, &mut boss] {
        let answer = person.chat(ask.clone()).await;
        assert_eq!(answer["isError"], false, "{answer}");
        assert!(!sent_the_file(), "a personal token's call sent the file");
        assert!(
            answer["content"][1]["text"]
                .as_str()
                .unwrap_or_default()
                .contains("a personal token may read only below the allowed roots"),
            "{answer}"
        );
        let clink = person
            .tool("clink", json!({"prompt": "run ls", "cli_name": "claude"}))
            .await;
        assert_eq!(clink["isError"], true, "{clink}");
        assert!(text(&clink).contains("not a personal token"), "{clink}");
    }
    // Another replica's token (outside this one's own private files), read through a call by
    // the user both run as, would make anyone the owner.
    let opened = Daemon::start(
        &fake,
        &[("EXAI_ALLOWED_ROOTS", &shared.display().to_string())],
    );
    let token_file = opened.home.join("token").display().to_string();
    ada.chat(json!({"prompt": "x", "model": "fake-fast", "files": [token_file]}))
        .await;
    let sent = fake.last_messages("fake-fast").last().unwrap().to_string();
    assert!(!sent.contains(&opened.token()), "{sent}");
    let (owner, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let answer = owner.call_tool(chat_with(ask.clone())).await.unwrap();
    assert_eq!(answer.is_error, Some(false), "{}", all_text_of(&answer));
    assert!(sent_the_file(), "the owner's call did not send the file");
    owner.cancel().await.unwrap();

    // A directory opened to the team: its files are read for a personal token too.
    let mut ada = WsClient::connect(&opened, &add_user(&opened.home, "ada", false)).await;
    let answer = ada.chat(ask.clone()).await;
    assert_eq!(answer["isError"], false, "{answer}");
    assert!(
        sent_the_file(),
        "a file below the allowed roots was not sent"
    );
}

/// A cancel sent into another person's `/mcp` session (its id known) does not cancel their
/// call: each message carries its own token, and the session stays its first token's. The call
/// runs on and is recorded with its answer. (rmcp itself still ends that request's stream on any
/// cancel it is sent: the answer is then fetched with `call_result`.)
#[tokio::test]
async fn a_cancel_sent_into_another_persons_session_does_not_cancel_their_call() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (ada_token, bob_token) = ada_and_bob(&daemon);
    let mut ada = HttpClient::connect(&daemon, &ada_token, plain()).await;
    let (session, url) = (ada.session.clone().unwrap(), ada.url.clone());
    let request_id = ada.next_id + 1;
    let running = tokio::spawn(async move {
        ada.post(
            json!({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                        "params": {"name": "chat",
                                   "arguments": {"prompt": "slow", "model": "fake-delay-2000"}}}),
        )
        .await
    });
    wait_until_async(
        "ada's call to reach the model",
        Duration::from_secs(10),
        || (fake.stats()["requests"].as_u64() >= Some(1)).then_some(()),
    )
    .await;
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                        "params": {"requestId": request_id, "reason": "bob says so"}});
    let sent = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&bob_token)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .json(&cancel)
        .send()
        .await
        .unwrap();
    assert!(sent.status().as_u16() < 500, "{}", sent.status());
    let _ = tokio::time::timeout(Duration::from_secs(30), running).await;
    let ended = |row: &exai::store::CallRow| !matches!(row.state.as_str(), "received" | "running");
    let record = wait_until_async("ada's call to end", Duration::from_secs(30), || {
        let rows = daemon.read_store(|store| {
            let all = exai::store::CallFilter {
                limit: 10,
                ..Default::default()
            };
            store.list(&all).unwrap_or_default()
        });
        rows.into_iter()
            .find(|row| row.tool == "chat" && ended(row))
    })
    .await;
    assert_eq!(record.state.as_str(), "succeeded", "{record:?}");
    assert!(record.result.unwrap_or_default().contains("echo: slow"));
}

/// rmcp ends a session on any DELETE naming it and opens its stream to any GET: exai binds a
/// session to the token that opened it, so a teammate who learnt its id can do neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_ended_or_streamed_only_with_the_token_that_opened_it() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (ada_token, bob_token) = ada_and_bob(&daemon);
    let mut ada = HttpClient::connect(&daemon, &ada_token, plain()).await;
    let (session, url) = (ada.session.clone().unwrap(), ada.url.clone());
    let with_adas_session = |method: reqwest::Method, token: &str| {
        reqwest::Client::new()
            .request(method, &url)
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-06-18")
    };
    let ended = with_adas_session(reqwest::Method::DELETE, &bob_token)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status().as_u16(), 404, "bob ended ada's session");
    let stream = with_adas_session(reqwest::Method::GET, &bob_token)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status().as_u16(), 404, "bob opened ada's stream");
    let listed = with_adas_session(reqwest::Method::POST, &bob_token)
        .json(&json!({"jsonrpc": "2.0", "id": 99, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status().as_u16(), 404, "bob used ada's session");
    // Ada's session goes on, and she ends it herself.
    let chat = ada
        .tool(
            "chat",
            json!({"prompt": "still here", "model": "fake-fast"}),
        )
        .await;
    assert!(text(&chat).contains("echo: still here"), "{chat}");
    let mine = with_adas_session(reqwest::Method::DELETE, &ada_token)
        .send()
        .await
        .unwrap();
    assert!(mine.status().is_success(), "{}", mine.status());
    let after = with_adas_session(reqwest::Method::POST, &ada_token)
        .json(&json!({"jsonrpc": "2.0", "id": 100, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status().as_u16(), 404, "the ended session answered");
}

/// A member who proposes a teammate's call id for a call of his own (the shim's `callId`) does
/// not take the teammate's call over: her `call_result` still finds her own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_proposing_a_teammates_call_id_does_not_hide_her_call() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (ada_token, bob_token) = ada_and_bob(&daemon);
    let mut ada = WsClient::connect(&daemon, &ada_token).await;
    let mine = ada
        .chat(json!({"prompt": "ada's own", "model": "fake-fast"}))
        .await;
    let id = call_id(&mine);
    let mut bob = WsClient::connect(&daemon, &bob_token).await;
    bob.send(
        "tools/call",
        json!({"name": "chat", "arguments": {"prompt": "squat", "model": "fake-delay-10000"},
               "_meta": {"exai.dev/callId": id}}),
    )
    .await;
    wait_until_async(
        "bob's call to reach the model",
        Duration::from_secs(10),
        || (fake.stats()["by_model"]["fake-delay-10000"].as_u64() >= Some(1)).then_some(()),
    )
    .await;
    let fetched = ada
        .tool("call_result", json!({"call_id": id, "wait_s": 0}))
        .await;
    assert!(text(&fetched).contains("echo: ada's own"), "{fetched}");
}

/// One member cannot take every slot of a shared exai: past `EXAI_USER_MAX_CALLS` calls in
/// flight their next call is refused (and recorded), while a teammate's call goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_as_many_calls_as_allowed_in_flight_is_refused_another_while_others_call() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[("EXAI_USER_MAX_CALLS", "2")]);
    let (ada_token, bob_token) = ada_and_bob(&daemon);
    let mut bob = WsClient::connect(&daemon, &bob_token).await;
    // Six at once: as many as may run do, the rest are refused, however they interleave.
    let mut sent = Vec::new();
    for n in 0..6 {
        sent.push(
            bob.send(
                "tools/call",
                json!({"name": "chat", "arguments": {"prompt": format!("hog {n}"), "model": "fake-delay-3000"}}),
            )
            .await,
        );
    }
    let mut refusals = Vec::new();
    for id in sent {
        let answer = bob.response(id).await;
        if let Some(message) = answer["error"]["message"].as_str() {
            refusals.push(message.to_string());
        }
    }
    assert_eq!(refusals.len(), 4, "{refusals:?}");
    assert!(
        refusals[0].contains("bob already has 2 calls in flight")
            && refusals[0].contains("EXAI_USER_MAX_CALLS"),
        "{refusals:?}"
    );
    assert_eq!(fake.stats()["by_model"]["fake-delay-3000"], 2);
    // Now bob has nothing in flight: his next call runs.
    let again = bob
        .chat(json!({"prompt": "one more", "model": "fake-fast"}))
        .await;
    assert_eq!(text(&again), "echo: one more", "{again}");
    let mut ada = WsClient::connect(&daemon, &ada_token).await;
    let hers = ada
        .chat(json!({"prompt": "mine", "model": "fake-fast"}))
        .await;
    assert_eq!(text(&hers), "echo: mine", "{hers}");
    let refused = daemon.read_store(|store| {
        store
            .list(&exai::store::CallFilter {
                limit: 20,
                ..Default::default()
            })
            .unwrap_or_default()
    });
    assert!(
        refused
            .iter()
            .any(|row| row.error_kind.as_deref() == Some("too_many_calls")),
        "the refusal is recorded"
    );
}
