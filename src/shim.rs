//! `exai stdio`: what MCP clients launch — a relay between stdin/stdout and the daemon's `/ws`.
//!
//! It starts the daemon if none answers, matches responses to requests so that a
//! lost daemon never leaves a request unanswered, reconnects with backoff and
//! replays the client's `initialize` so the client's session survives a restart.

use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::calls::CALL_ID_META;
use crate::config::Config;
use crate::transport::{FrameError, line_frames};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long the shim waits for a started daemon to answer `/healthz`.
const AUTOSTART_WAIT: Duration = Duration::from_secs(5);
/// How long requests wait for a lost daemon to come back before they get an error.
const RECONNECT_PATIENCE: Duration = Duration::from_secs(10);
/// WebSocket ping period; a link silent for three periods is dead.
const PING_EVERY: Duration = Duration::from_secs(5);
/// Messages held while the daemon is away.
const MAX_HELD: usize = 1024;
/// The parts of a daemon message the shim looks at.
#[derive(serde::Deserialize)]
struct Head {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    method: Option<serde::de::IgnoredAny>,
}

/// Id of the shim's own replayed `initialize`.
const REINIT_ID: &str = "exai-shim-reinitialize";

/// Why the shim stopped.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("cannot write to stdout: {0}")]
    Stdout(std::io::Error),
}

enum Input {
    Line(String),
    TooLarge,
    NotUtf8,
    Eof,
}

/// A request of the client that awaits its response.
struct Pending {
    method: String,
    call_id: Option<String>,
    tool: Option<String>,
}

/// The relay's state between events.
struct Relay {
    config: Config,
    out: mpsc::Sender<String>,
    pending: HashMap<String, Pending>,
    /// The client's `initialize` request, replayed after a reconnect.
    initialize: Option<Value>,
    client_initialized: bool,
    /// Messages for the daemon while the link is down or re-initializing.
    held: VecDeque<(Instant, String)>,
    ready: bool,
    last_error: String,
}

/// Runs the relay until stdin closes.
pub async fn run(config: Config) -> Result<(), ShimError> {
    let (out_tx, out_rx) = mpsc::channel::<String>(1024);
    let writer = tokio::spawn(write_stdout(out_rx));
    let (in_tx, mut input) = mpsc::channel::<Input>(64);
    tokio::spawn(read_stdin(in_tx, config.max_message_bytes));

    let mut relay = Relay {
        config,
        out: out_tx,
        pending: HashMap::new(),
        initialize: None,
        client_initialized: false,
        held: VecDeque::new(),
        ready: false,
        last_error: String::new(),
    };
    let mut link: Option<Ws> = None;
    let mut connecting = Some(tokio::spawn(connect(relay.config.clone(), true)));
    let mut next_attempt = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(100);
    let mut last_seen = Instant::now();
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut patience = tokio::time::interval(Duration::from_millis(500));

    loop {
        tokio::select! {
            item = input.recv() => match item.unwrap_or(Input::Eof) {
                Input::Eof => break,
                Input::TooLarge => {
                    relay.reply_error(Value::Null, -32600, &format!(
                        "message larger than the {}-byte limit was dropped unread", relay.config.max_message_bytes)).await;
                }
                Input::NotUtf8 => {
                    relay.reply_error(Value::Null, -32700, "parse error: the message is not valid UTF-8").await;
                }
                Input::Line(line) => {
                    if let Some(frame) = relay.on_client_line(&line).await {
                        match (&mut link, relay.ready) {
                            (Some(ws), true) => {
                                if let Err(e) = ws.send(Message::Text(frame.into())).await {
                                    relay.last_error = e.to_string();
                                    link = None;
                                    relay.lost().await;
                                }
                            }
                            _ => relay.hold(frame).await,
                        }
                    }
                }
            },
            frame = next_frame(&mut link) => match frame {
                Some(Ok(Message::Text(text))) => {
                    last_seen = Instant::now();
                    if relay.on_daemon_frame(text.as_str()).await
                        && let Some(ws) = link.as_mut()
                        && relay.flush_held(ws).await.is_err()
                    {
                        link = None;
                        relay.lost().await;
                    }
                }
                Some(Ok(_)) => last_seen = Instant::now(),
                Some(Err(e)) => {
                    relay.last_error = e.to_string();
                    link = None;
                    relay.lost().await;
                }
                None => {
                    relay.last_error = "the daemon closed the connection".into();
                    link = None;
                    relay.lost().await;
                }
            },
            done = join(&mut connecting) => {
                connecting = None;
                match done {
                    Ok(mut ws) => {
                        backoff = Duration::from_millis(100);
                        last_seen = Instant::now();
                        if relay.connected(&mut ws).await.is_ok() {
                            link = Some(ws);
                        }
                    }
                    Err(error) => {
                        tracing::debug!(%error, "daemon not reachable");
                        relay.last_error = error;
                        next_attempt = tokio::time::Instant::now() + backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            },
            _ = tokio::time::sleep_until(next_attempt), if link.is_none() && connecting.is_none() => {
                connecting = Some(tokio::spawn(connect(relay.config.clone(), true)));
            },
            _ = ping.tick(), if link.is_some() => {
                if last_seen.elapsed() > PING_EVERY * 3 {
                    relay.last_error = "the daemon stopped answering pings".into();
                    link = None;
                    relay.lost().await;
                } else if let Some(ws) = link.as_mut()
                    && ws.send(Message::Ping(Vec::new().into())).await.is_err()
                {
                    link = None;
                    relay.lost().await;
                }
            },
            _ = patience.tick(), if !relay.held.is_empty() => relay.expire_held().await,
        }
    }
    // stdin closed: the client is gone. Calls already in the daemon go on there.
    if let Some(mut ws) = link {
        let _ = tokio::time::timeout(Duration::from_millis(200), ws.close(None)).await;
    }
    drop(relay);
    let _ = tokio::time::timeout(Duration::from_millis(500), writer).await;
    Ok(())
}

async fn next_frame(link: &mut Option<Ws>) -> Option<Result<Message, tungstenite::Error>> {
    match link {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}

async fn join(
    task: &mut Option<tokio::task::JoinHandle<Result<Ws, String>>>,
) -> Result<Ws, String> {
    match task {
        Some(handle) => handle.await.unwrap_or_else(|e| Err(e.to_string())),
        None => std::future::pending().await,
    }
}

fn id_key(id: &Value) -> String {
    id.to_string()
}

impl Relay {
    async fn write(&self, line: String) {
        let _ = self.out.send(line).await;
    }

    async fn reply_error(&self, id: Value, code: i64, message: &str) {
        self.write(
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
                .to_string(),
        )
        .await;
    }

    /// Reads one client message; returns the frame to send to the daemon, if any.
    async fn on_client_line(&mut self, line: &str) -> Option<String> {
        let mut message: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                self.reply_error(Value::Null, -32700, &format!("parse error: {e}"))
                    .await;
                return None;
            }
        };
        let method = message
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_string);
        let id = message.get("id").cloned();
        match (method.as_deref(), id) {
            (Some(method), Some(id)) => {
                let mut pending = Pending {
                    method: method.to_string(),
                    call_id: None,
                    tool: None,
                };
                if method == "initialize" {
                    self.initialize = Some(message.clone());
                } else if method == "tools/call" {
                    // Name the call now, so that even a vanished daemon leaves the client an id to ask about.
                    let call_id = uuid::Uuid::now_v7().to_string();
                    if let Some(params) = message.get_mut("params").and_then(Value::as_object_mut) {
                        pending.tool = params
                            .get("name")
                            .and_then(Value::as_str)
                            .map(str::to_string);
                        let meta = params.entry("_meta").or_insert_with(|| json!({}));
                        if let Some(meta) = meta.as_object_mut() {
                            meta.insert(CALL_ID_META.into(), Value::String(call_id.clone()));
                            pending.call_id = Some(call_id);
                        }
                    }
                }
                self.pending.insert(id_key(&id), pending);
            }
            (Some("notifications/initialized"), None) => self.client_initialized = true,
            (Some("notifications/cancelled"), None) => {
                if let Some(request_id) = message.pointer("/params/requestId") {
                    // No response will come for a cancelled request.
                    self.pending.remove(&id_key(request_id));
                }
            }
            _ => {}
        }
        Some(message.to_string())
    }

    /// Handles one daemon frame; returns true when the link just became ready.
    async fn on_daemon_frame(&mut self, text: &str) -> bool {
        // Only the id and whether it is a request matter here: the rest (a tools/list or a long
        // answer) is skipped by the parser, not built into a tree.
        let head: Option<Head> = serde_json::from_str(text).ok();
        let response_id = head.filter(|h| h.method.is_none()).and_then(|h| h.id);
        if let Some(id) = response_id {
            if id.as_str() == Some(REINIT_ID) {
                tracing::info!("session re-initialized with the daemon");
                if self.client_initialized {
                    self.held.push_front((
                        Instant::now(),
                        json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
                            .to_string(),
                    ));
                }
                self.ready = true;
                return true;
            }
            self.pending.remove(&id_key(&id));
        }
        self.write(text.to_string()).await;
        false
    }

    /// A new link: replay the client's initialize, or be ready at once.
    async fn connected(&mut self, ws: &mut Ws) -> Result<(), ()> {
        // The client's own initialize still waiting here goes out as it is: replaying it too
        // would initialize the session twice.
        let initialize_held = self.held.iter().any(|(_, frame)| {
            serde_json::from_str::<Value>(frame)
                .ok()
                .is_some_and(|m| m.get("method").and_then(Value::as_str) == Some("initialize"))
        });
        match self.initialize.as_ref().filter(|_| !initialize_held) {
            Some(init) => {
                tracing::info!("reconnected to the daemon; replaying initialize");
                let mut init = init.clone();
                init["id"] = Value::String(REINIT_ID.into());
                self.ready = false;
                ws.send(Message::Text(init.to_string().into()))
                    .await
                    .map_err(|_| ())
            }
            None => {
                self.ready = true;
                self.flush_held(ws).await
            }
        }
    }

    async fn hold(&mut self, frame: String) {
        if self.held.len() >= MAX_HELD {
            self.answer_unsendable(&frame, "too many messages waiting for the exai daemon")
                .await;
            return;
        }
        self.held.push_back((Instant::now(), frame));
    }

    async fn flush_held(&mut self, ws: &mut Ws) -> Result<(), ()> {
        while let Some((_, frame)) = self.held.pop_front() {
            if ws.send(Message::Text(frame.into())).await.is_err() {
                return Err(());
            }
        }
        Ok(())
    }

    /// Requests held too long while the daemon is away get an error instead of a hang.
    async fn expire_held(&mut self) {
        while let Some((since, _)) = self.held.front() {
            if since.elapsed() < RECONNECT_PATIENCE {
                break;
            }
            if let Some((_, frame)) = self.held.pop_front() {
                let why = format!(
                    "the exai daemon at {} is unavailable ({}); see EXAI_HOME/logs or run `exai status`",
                    self.config.daemon_url, self.last_error
                );
                self.answer_unsendable(&frame, &why).await;
            }
        }
    }

    async fn answer_unsendable(&mut self, frame: &str, why: &str) {
        let Some(id) = serde_json::from_str::<Value>(frame)
            .ok()
            .and_then(|m| m.get("id").cloned())
        else {
            return;
        };
        self.pending.remove(&id_key(&id));
        self.reply_error(id, -32000, why).await;
    }

    /// The daemon is gone: every request in flight is answered now.
    async fn lost(&mut self) {
        tracing::warn!(error = %self.last_error, in_flight = self.pending.len(), "lost the exai daemon; reconnecting");
        self.ready = false;
        let pending: Vec<(String, Pending)> = self.pending.drain().collect();
        for (id, request) in pending {
            let id: Value = serde_json::from_str(&id).unwrap_or(Value::Null);
            let message = match (&request.call_id, &request.tool) {
                (Some(call_id), tool) => format!(
                    "lost the connection to the exai daemon ({}) while call {call_id} ({}) was running; \
                     it may still finish there: see its result with `exai calls show {call_id}`",
                    self.last_error,
                    tool.as_deref().unwrap_or("tool")
                ),
                (None, _) => format!(
                    "lost the connection to the exai daemon ({}) during {}; retry the request",
                    self.last_error, request.method
                ),
            };
            self.reply_error(id, -32000, &message).await;
        }
    }
}

async fn read_stdin(tx: mpsc::Sender<Input>, limit: usize) {
    let mut frames = line_frames(crate::stdio::input(), limit);
    while let Some(frame) = frames.next().await {
        let input = match frame {
            Ok(line) if line.trim().is_empty() => continue,
            Ok(line) => Input::Line(line),
            Err(FrameError::TooLarge { .. }) => Input::TooLarge,
            Err(FrameError::NotUtf8) => Input::NotUtf8,
            Err(FrameError::Io(_)) => break,
        };
        if tx.send(input).await.is_err() {
            return;
        }
    }
    let _ = tx.send(Input::Eof).await;
}

async fn write_stdout(mut rx: mpsc::Receiver<String>) -> Result<(), ShimError> {
    let mut stdout = crate::stdio::output();
    while let Some(mut line) = rx.recv().await {
        line.push('\n');
        // A closed pipe is an error to log, never a panic.
        if let Err(e) = stdout.write_all(line.as_bytes()).await {
            tracing::warn!(error = %e, "stdout closed; the client is gone");
            return Err(ShimError::Stdout(e));
        }
        if rx.is_empty()
            && let Err(e) = stdout.flush().await
        {
            return Err(ShimError::Stdout(e));
        }
    }
    let _ = stdout.flush().await;
    Ok(())
}

/// Connects to the daemon, starting it first if allowed and nobody answers.
async fn connect(config: Config, may_start: bool) -> Result<Ws, String> {
    match try_connect(&config).await {
        Ok(ws) => Ok(ws),
        Err(first) if may_start && !config.no_autostart && refused(&first) => {
            start_daemon(&config).await?;
            try_connect(&config).await.map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

fn refused(error: &tungstenite::Error) -> bool {
    matches!(error, tungstenite::Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

async fn try_connect(config: &Config) -> Result<Ws, tungstenite::Error> {
    let mut request = config.daemon_url.as_str().into_client_request()?;
    // The token file may not exist yet (daemon not started): connect without it and get a clear 401.
    if let Ok(token) = crate::daemon::read_token(&config.token_path())
        && let Ok(value) = format!("Bearer {token}").parse()
    {
        request.headers_mut().insert("authorization", value);
    }
    let limit = config.max_message_bytes + 1024;
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let attempt = tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true);
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(result) => result.map(|(ws, _)| ws),
        Err(_) => Err(tungstenite::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer from {} within 2 s", config.daemon_url),
        ))),
    }
}

/// `host:port` of a `ws://host:port/path` URL.
fn url_authority(url: &str) -> Option<&str> {
    url.split("://").nth(1)?.split('/').next()
}

/// Starts `exai daemon` detached and waits (bounded) until `/healthz` answers.
async fn start_daemon(config: &Config) -> Result<(), String> {
    let authority = url_authority(&config.daemon_url)
        .ok_or_else(|| format!("cannot read host:port from EXAI_URL {}", config.daemon_url))?
        .to_string();
    let home = config.home.clone();
    let listen = authority.clone();
    tokio::task::spawn_blocking(move || spawn_daemon_process(&home, &listen))
        .await
        .map_err(|e| e.to_string())??;
    let health = format!("http://{authority}/healthz");
    let http = reqwest::Client::new();
    let until = Instant::now() + AUTOSTART_WAIT;
    while Instant::now() < until {
        let probe = http
            .get(&health)
            .timeout(Duration::from_millis(500))
            .send()
            .await;
        if probe.is_ok_and(|r| r.status().is_success()) {
            tracing::info!(%authority, "started the exai daemon");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(format!(
        "started `exai daemon` but it did not answer on {health} within {} s; see {}",
        AUTOSTART_WAIT.as_secs(),
        config.log_dir().join("daemon.out").display()
    ))
}

fn spawn_daemon_process(home: &std::path::Path, listen: &str) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let logs = home.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let log_path = logs.join("daemon.out");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the exai binary: {e}"))?;
    let mut child = std::process::Command::new(exe)
        .arg("daemon")
        .env("EXAI_HOME", home)
        .env("EXAI_LISTEN", listen)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start `exai daemon`: {e}"))?;
    // Reap it if it exits while we live; it outlives us otherwise.
    std::thread::spawn(move || child.wait());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_comes_from_the_url() {
        assert_eq!(
            url_authority("ws://127.0.0.1:8765/ws"),
            Some("127.0.0.1:8765")
        );
        assert_eq!(url_authority("ws://localhost:1"), Some("localhost:1"));
        assert_eq!(url_authority("nonsense"), None);
    }
}
