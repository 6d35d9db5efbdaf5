//! `exai stdio`: what MCP clients launch — a relay between stdin/stdout and the daemon's `/ws`.
//!
//! It reaches the daemon over `EXAI_HOME/daemon.sock` (or, for an explicit `EXAI_URL`, over TCP
//! after the daemon proved it holds the token), starts the daemon if none answers (once: a failed
//! start is reported, not retried in a loop), matches responses to requests so that a lost daemon
//! never leaves a request unanswered, reconnects with backoff and replays the client's
//! `initialize` so the client's session survives a restart.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::either::Either;

use crate::calls::CALL_ID_META;
use crate::config::Config;
use crate::daemon::{local_socket, proof};
use crate::settings::{CLIENT_DIGEST_HEADER, CLIENT_ENV_HEADER, ClientEnv};
use crate::transport::{FrameError, line_frames};

/// TCP for an explicit `EXAI_URL`, the socket in `EXAI_HOME` otherwise.
type Link = Either<TcpStream, UnixStream>;
type Ws = WebSocketStream<Link>;

/// How long the shim waits for a started daemon to come up.
const AUTOSTART_WAIT: Duration = Duration::from_secs(5);
/// After a failed start, how long the shim reports that failure before it starts another daemon.
const AUTOSTART_COOLDOWN: Duration = Duration::from_secs(60);
/// How long one connection attempt may take (both steps of the TCP proof included).
const CONNECT_WAIT: Duration = Duration::from_secs(2);
/// How long requests wait for a lost daemon to come back before they get an error.
const RECONNECT_PATIENCE: Duration = Duration::from_secs(10);
/// WebSocket ping period; a link silent for three periods is dead.
const PING_EVERY: Duration = Duration::from_secs(5);
/// Longest a message to the daemon may take to go out. Past it the daemon is taken as gone (it
/// takes nothing more: stopped, wedged, or a connection gone dark), so a send cannot hold the
/// relay — and with it the ping check and every request's error — for ever. Generous: a large
/// message over a slow link to a remote daemon still goes out.
const SEND_LIMIT: Duration = Duration::from_secs(30);
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
    /// The settings this client's environment sets, handed to the daemon for its session.
    client_env: Arc<ClientEnv>,
    out: mpsc::Sender<String>,
    pending: HashMap<String, Pending>,
    /// The client's `initialize` request, replayed after a reconnect.
    initialize: Option<Value>,
    client_initialized: bool,
    /// Messages for the daemon while the link is down or re-initializing.
    held: VecDeque<(Instant, String)>,
    ready: bool,
    last_error: String,
    /// When and why the last daemon the shim started failed to come up.
    start_failure: Option<(Instant, String)>,
    /// A daemon answered once: one that went away may come back (a restart), so requests wait.
    linked_before: bool,
}

/// Runs the relay until stdin closes.
pub async fn run(config: Config) -> Result<(), ShimError> {
    let (out_tx, out_rx) = mpsc::channel::<String>(1024);
    let writer = crate::spawn::in_current_span(write_stdout(out_rx));
    let (in_tx, mut input) = mpsc::channel::<Input>(64);
    crate::spawn::in_current_span(read_stdin(in_tx, config.max_message_bytes));

    let client_env = Arc::new(
        crate::spawn::blocking(ClientEnv::of_process)
            .await
            .unwrap_or_else(|_| ClientEnv::new(Default::default())),
    );
    let mut relay = Relay {
        config,
        client_env,
        out: out_tx,
        pending: HashMap::new(),
        initialize: None,
        client_initialized: false,
        held: VecDeque::new(),
        ready: false,
        last_error: String::new(),
        linked_before: false,
        start_failure: None,
    };
    let mut link: Option<Ws> = None;
    let mut connecting = Some(crate::spawn::in_current_span(connect(
        relay.config.clone(),
        relay.client_env.clone(),
        None,
    )));
    let mut next_attempt = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(100);
    let mut last_seen = Instant::now();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When the ping last ticked: a tick far later than due means the shim itself was stopped
    // (Ctrl-Z, a client that stopped reading), and the daemon's silence meanwhile says nothing.
    let mut last_tick = Instant::now();
    let mut patience = tokio::time::interval(Duration::from_millis(500));
    let mut relaying = false;
    // Messages on their way to the daemon. They go out while the daemon's own are read: a
    // relay that waited on a send before reading again would deadlock with a daemon that waits
    // for room for its answers (progress of thousands of calls) before reading more.
    let mut outgoing = Outgoing::default();

    loop {
        tokio::select! {
            item = input.recv(), if outgoing.has_room() => match item.unwrap_or(Input::Eof) {
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
                        match (&link, relay.ready) {
                            (Some(_), true) => outgoing.push(Message::Text(frame.into())),
                            _ => relay.hold(frame).await,
                        }
                    }
                }
            },
            event = next_event(&mut link, &mut outgoing) => match event {
                LinkEvent::SendFailed(e) => {
                    relay.last_error = e;
                    link = None;
                    outgoing.clear();
                    relay.lost().await;
                }
                LinkEvent::Frame(Some(Ok(Message::Text(text)))) => {
                    last_seen = Instant::now();
                    // The first answer from the daemon: from here on the shim only relays.
                    if !relaying {
                        relaying = true;
                        crate::memory::release_startup_code();
                    }
                    if relay.on_daemon_frame(text.as_str()).await && link.is_some() {
                        // What waited for the daemon goes out like the rest (at most MAX_HELD).
                        for (_, frame) in relay.held.drain(..) {
                            outgoing.push(Message::Text(frame.into()));
                        }
                    }
                }
                LinkEvent::Frame(Some(Ok(_))) => last_seen = Instant::now(),
                LinkEvent::Frame(Some(Err(e))) => {
                    relay.last_error = e.to_string();
                    link = None;
                    outgoing.clear();
                    relay.lost().await;
                }
                LinkEvent::Frame(None) => {
                    relay.last_error = "the daemon closed the connection".into();
                    link = None;
                    outgoing.clear();
                    relay.lost().await;
                }
            },
            done = join(&mut connecting) => {
                connecting = None;
                match done {
                    Ok(mut ws) => {
                        relay.linked_before = true;
                        backoff = Duration::from_millis(100);
                        last_seen = Instant::now();
                        if relay.connected(&mut ws).await.is_ok() {
                            link = Some(ws);
                        }
                    }
                    Err(error) => {
                        let error = match error {
                            LinkError::NobodyListens(why) if relay.config.no_autostart && !relay.linked_before => {
                                nobody_will_start(&why)
                            }
                            other => other,
                        };
                        tracing::debug!(%error, "daemon not reachable");
                        if let LinkError::StartFailed(why) = &error {
                            relay.start_failure = Some((Instant::now(), why.clone()));
                        }
                        relay.last_error = error.to_string();
                        if error.answers_now() {
                            relay.answer_held_now().await;
                        }
                        next_attempt = tokio::time::Instant::now() + backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            },
            _ = tokio::time::sleep_until(next_attempt), if link.is_none() && connecting.is_none() => {
                connecting = Some(crate::spawn::in_current_span(connect(relay.config.clone(), relay.client_env.clone(), relay.recent_start_failure())));
            },
            _ = ping.tick(), if link.is_some() => {
                if last_tick.elapsed() > PING_EVERY * 2 {
                    last_seen = Instant::now();
                }
                last_tick = Instant::now();
                if last_seen.elapsed() > PING_EVERY * 3 {
                    relay.last_error = "the daemon stopped answering pings".into();
                    link = None;
                    outgoing.clear();
                    relay.lost().await;
                } else if outgoing.stalled() {
                    relay.last_error = format!(
                        "the daemon took no message for {} s",
                        SEND_LIMIT.as_secs()
                    );
                    link = None;
                    outgoing.clear();
                    relay.lost().await;
                } else {
                    outgoing.push(Message::Ping(Vec::new().into()));
                }
            },
            _ = patience.tick(), if !relay.held.is_empty() => relay.expire_held().await,
        }
    }
    // stdin closed: the client is gone. Calls already in the daemon go on there. What it sent
    // last and was queued for the linked daemon (a cancel, as `exai call` sends on Ctrl-C) goes
    // before the link closes; what waited for a link does not.
    if let Some(mut ws) = link {
        let flush = flush_outgoing(&mut ws, &mut outgoing);
        if let Ok(Err(error)) | Err(error) = tokio::time::timeout(FLUSH_AT_EXIT, flush)
            .await
            .map_err(|_| format!("not sent within {} s", FLUSH_AT_EXIT.as_secs()))
        {
            tracing::warn!(%error, "the client's last messages did not all reach the daemon");
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), ws.close(None)).await;
    }
    drop(relay);
    let _ = tokio::time::timeout(Duration::from_millis(500), writer).await;
    Ok(())
}

/// Sends `message` to the daemon within [`SEND_LIMIT`]; the error says why it did not go.
async fn send_within(ws: &mut Ws, message: Message) -> Result<(), String> {
    match tokio::time::timeout(SEND_LIMIT, ws.send(message)).await {
        Ok(sent) => sent.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "the daemon took no message for {} s",
            SEND_LIMIT.as_secs()
        )),
    }
}

/// Messages waiting to go to the daemon, and since when none has gone.
#[derive(Default)]
struct Outgoing {
    queue: VecDeque<Message>,
    /// Set while messages wait: when the last one went (or the first was queued).
    since: Option<Instant>,
}

/// Most messages waiting to go to the daemon: past it, the client's input is not read.
const MAX_OUTGOING: usize = 256;
/// The longest the client's last messages are given to reach the daemon once its input ends.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(2);

impl Outgoing {
    fn push(&mut self, message: Message) {
        if self.queue.is_empty() {
            self.since = Some(Instant::now());
        }
        self.queue.push_back(message);
    }

    fn has_room(&self) -> bool {
        self.queue.len() < MAX_OUTGOING
    }

    /// Messages have waited past [`SEND_LIMIT`] with none going out.
    fn stalled(&self) -> bool {
        self.since.is_some_and(|since| since.elapsed() > SEND_LIMIT)
    }

    fn clear(&mut self) {
        self.queue.clear();
        self.since = None;
    }
}

/// What the link to the daemon did.
enum LinkEvent {
    /// A frame came (or the link ended: `None`).
    Frame(Option<Result<Message, tungstenite::Error>>),
    /// A message could not be sent.
    SendFailed(String),
}

impl Outgoing {
    /// Sends what waits as far as the connection takes it, and flushes: `Ok(true)` once nothing
    /// waits and all went out, `Ok(false)` while something waits (the connection wakes `cx`
    /// when it takes more).
    fn poll_send(&mut self, ws: &mut Ws, cx: &mut std::task::Context<'_>) -> Result<bool, String> {
        use futures::Sink;
        use std::pin::Pin;
        use std::task::Poll;
        let mut sent = false;
        while !self.queue.is_empty() {
            match Pin::new(&mut *ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    if let Some(message) = self.queue.pop_front() {
                        Pin::new(&mut *ws)
                            .start_send(message)
                            .map_err(|e| e.to_string())?;
                    }
                    sent = true;
                }
                Poll::Ready(Err(e)) => return Err(e.to_string()),
                Poll::Pending => break,
            }
        }
        if sent {
            self.since = (!self.queue.is_empty()).then(Instant::now);
        }
        match Pin::new(&mut *ws).poll_flush(cx) {
            Poll::Ready(Ok(())) => Ok(self.queue.is_empty()),
            Poll::Ready(Err(e)) => Err(e.to_string()),
            Poll::Pending => Ok(false),
        }
    }
}

/// The daemon's next frame, sending what waits in `outgoing` meanwhile, as far as the
/// connection takes it: one direction never waits on the other.
async fn next_event(link: &mut Option<Ws>, outgoing: &mut Outgoing) -> LinkEvent {
    use futures::Stream;
    use std::pin::Pin;
    use std::task::Poll;
    let Some(ws) = link else {
        return std::future::pending().await;
    };
    std::future::poll_fn(|cx| {
        if let Err(e) = outgoing.poll_send(ws, cx) {
            return Poll::Ready(LinkEvent::SendFailed(e));
        }
        Pin::new(&mut *ws).poll_next(cx).map(LinkEvent::Frame)
    })
    .await
}

/// Sends what waits in `outgoing`, reading (and dropping: the client is gone) the daemon's
/// frames meanwhile, so that a daemon which reads no more until its answers have room still
/// takes them.
async fn flush_outgoing(ws: &mut Ws, outgoing: &mut Outgoing) -> Result<(), String> {
    use futures::Stream;
    use std::pin::Pin;
    use std::task::Poll;
    std::future::poll_fn(|cx| {
        loop {
            match outgoing.poll_send(ws, cx) {
                Ok(true) => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(e)),
                Ok(false) => {}
            }
            match Pin::new(&mut *ws).poll_next(cx) {
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e.to_string())),
                Poll::Ready(None) => {
                    return Poll::Ready(Err("the daemon closed the connection".into()));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}

async fn join(
    task: &mut Option<tokio::task::JoinHandle<Result<Ws, LinkError>>>,
) -> Result<Ws, LinkError> {
    match task {
        Some(handle) => handle
            .await
            .unwrap_or_else(|e| Err(LinkError::Unreachable(e.to_string()))),
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
                    if let Some(params) = message.get_mut("params").and_then(Value::as_object_mut) {
                        pending.tool = params
                            .get("name")
                            .and_then(Value::as_str)
                            .map(str::to_string);
                        let meta = params.entry("_meta").or_insert_with(|| json!({}));
                        if let Some(meta) = meta.as_object_mut() {
                            // A UUID the client proposed (`exai call` names its call to say it
                            // on Ctrl-C) is kept when the daemon would take it (freshly minted);
                            // the daemon still refuses one that is taken.
                            let call_id = meta
                                .get(CALL_ID_META)
                                .and_then(Value::as_str)
                                .and_then(|id| uuid::Uuid::parse_str(id).ok())
                                .filter(crate::calls::freshly_minted)
                                .unwrap_or_else(uuid::Uuid::now_v7)
                                .to_string();
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
                send_within(ws, Message::Text(init.to_string().into()))
                    .await
                    .map_err(|e| self.last_error = e)
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
            if let Err(e) = send_within(ws, Message::Text(frame.into())).await {
                self.last_error = e;
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
                let why = self.unavailable();
                self.answer_unsendable(&frame, &why).await;
            }
        }
    }

    /// A failure that waiting will not cure: every held request gets it now.
    async fn answer_held_now(&mut self) {
        let why = self.unavailable();
        while let Some((_, frame)) = self.held.pop_front() {
            self.answer_unsendable(&frame, &why).await;
        }
    }

    fn unavailable(&self) -> String {
        if self.config.no_autostart {
            return format!(
                "the exai daemon at {} is unavailable ({}), and autostart is off \
                 (EXAI_NO_AUTOSTART=1): start it with `exai daemon`, or unset EXAI_NO_AUTOSTART",
                daemon_place(&self.config),
                self.last_error
            );
        }
        format!(
            "the exai daemon at {} is unavailable ({}); see EXAI_HOME/logs or run `exai status`",
            daemon_place(&self.config),
            self.last_error
        )
    }

    /// Why the last start failed, while too recent to start another.
    fn recent_start_failure(&self) -> Option<String> {
        self.start_failure
            .as_ref()
            .filter(|(at, _)| at.elapsed() < AUTOSTART_COOLDOWN)
            .map(|(_, why)| why.clone())
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

/// Why there is no link to the daemon.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    /// Nothing listens: a daemon may be started.
    #[error("{0}")]
    NobodyListens(String),
    /// Worth another try soon: requests wait for the daemon meanwhile.
    #[error("{0}")]
    Unreachable(String),
    /// Will not fix itself soon (a listener that is not the daemon, a wrong token, an unsafe
    /// directory): requests get this error at once.
    #[error("{0}")]
    Refused(String),
    /// The daemon the shim started did not come up.
    #[error("could not start the exai daemon: {0}")]
    StartFailed(String),
}

impl LinkError {
    fn answers_now(&self) -> bool {
        matches!(self, Self::Refused(_) | Self::StartFailed(_))
    }
}

/// Why waiting for a daemon nobody will start is pointless, for a shim that never had one.
fn nobody_will_start(why: &str) -> LinkError {
    LinkError::Refused(format!(
        "{why}, and autostart is off (EXAI_NO_AUTOSTART=1): start the daemon with `exai daemon`, \
         or unset EXAI_NO_AUTOSTART"
    ))
}

/// Where the daemon is, for messages: the socket, or the URL the user named.
fn daemon_place(config: &Config) -> String {
    match &config.daemon_url {
        Some(url) => url.clone(),
        None => config.socket_path().display().to_string(),
    }
}

/// Connects to the daemon, starting it first if allowed and nobody answers.
///
/// `start_failure`: why the last start failed, while the shim waits before trying another.
async fn connect(
    config: Config,
    client_env: Arc<ClientEnv>,
    start_failure: Option<String>,
) -> Result<Ws, LinkError> {
    if config.daemon_url.is_none() {
        settle_version_skew(&config).await;
    }
    match bounded_connect(&config, &client_env).await {
        Err(LinkError::NobodyListens(_)) if !config.no_autostart => {
            if let Some(why) = start_failure {
                return Err(LinkError::Refused(format!(
                    "could not start the exai daemon: {why} (the next attempt is in at most {} s)",
                    AUTOSTART_COOLDOWN.as_secs()
                )));
            }
            match start_daemon(&config).await {
                Ok(()) => {}
                Err(StartError::Failed(why)) => return Err(LinkError::StartFailed(why)),
                Err(StartError::Busy(why)) => return Err(LinkError::Unreachable(why)),
            }
            // Started, yet nobody there: a failed start too, so it is not repeated at once.
            bounded_connect(&config, &client_env)
                .await
                .map_err(|e| match e {
                    LinkError::NobodyListens(why) => {
                        LinkError::StartFailed(format!("it started, but then {why}"))
                    }
                    other => other,
                })
        }
        other => other,
    }
}

/// A daemon of another version than this binary (an upgrade since it started) is never met in
/// silence: with no call in flight it is stopped, so the connection that follows starts this
/// version (its other clients' shims reconnect by themselves); otherwise the log says what runs
/// and what to do.
async fn settle_version_skew(config: &Config) {
    let info = {
        let config = config.clone();
        crate::spawn::blocking(move || {
            crate::daemon::DaemonInfo::read(&config)
                .filter(|_| crate::daemon::lock_is_held(&config))
        })
    };
    let Ok(Some(info)) = info.await else {
        return;
    };
    if info.version == crate::VERSION {
        return;
    }
    let in_flight = tokio::time::timeout(CONNECT_WAIT, calls_in_flight(config))
        .await
        .ok()
        .flatten();
    if in_flight == Some(0) && !config.no_autostart {
        let stopping = config.clone();
        let stopped = crate::spawn::blocking(move || crate::daemon::control::stop(&stopping)).await;
        match stopped {
            Ok(Ok(_)) => tracing::warn!(
                daemon_version = %info.version, version = crate::VERSION, pid = info.pid,
                "the running exai daemon was another version and idle: stopped it to start this one"
            ),
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not stop the exai daemon of another version")
            }
            Err(error) => {
                tracing::warn!(%error, "could not stop the exai daemon of another version")
            }
        }
        return;
    }
    let busy = in_flight.map_or("calls in flight unknown".to_string(), |n| {
        format!("{n} call(s) in flight")
    });
    tracing::warn!(
        daemon_version = %info.version, version = crate::VERSION, pid = info.pid,
        "{} ({busy}): {}",
        crate::daemon::control::version_skew(crate::VERSION, &info.version).unwrap_or_default(),
        crate::daemon::control::RESTART_ADVICE
    );
}

/// The daemon's calls in flight, from its `/healthz` over the socket.
async fn calls_in_flight(config: &Config) -> Option<u64> {
    crate::daemon::control::health(config).await?["calls_in_flight"].as_u64()
}

async fn bounded_connect(config: &Config, client_env: &ClientEnv) -> Result<Ws, LinkError> {
    let attempt = async {
        match config.daemon_url.as_deref() {
            None => connect_socket(config, client_env).await,
            Some(url) => connect_tcp(config, url, client_env).await,
        }
    };
    match tokio::time::timeout(CONNECT_WAIT, attempt).await {
        Ok(connected) => connected,
        Err(_) => {
            // A daemon stopped where it runs holds its socket and answers nothing: say so.
            let stopped = match config.daemon_url {
                None => {
                    let config = config.clone();
                    crate::spawn::blocking(move || crate::daemon::stopped_holder(&config))
                        .await
                        .ok()
                        .flatten()
                }
                Some(_) => None,
            };
            Err(LinkError::Unreachable(format!(
                "no answer from {} within {} s{}",
                daemon_place(config),
                CONNECT_WAIT.as_secs(),
                stopped.map(|s| format!(": {s}")).unwrap_or_default()
            )))
        }
    }
}

/// The default way in: the daemon's socket, once its directory is known to be private. The
/// client's own settings go with the upgrade request: the daemon runs this session's calls
/// with them.
async fn connect_socket(config: &Config, client_env: &ClientEnv) -> Result<Ws, LinkError> {
    let path = config.socket_path();
    let home = config.home.clone();
    let inspected = {
        let path = path.clone();
        crate::spawn::blocking(move || local_socket::inspect(&home, &path))
    };
    let found = inspected
        .await
        .map_err(|e| LinkError::Unreachable(e.to_string()))?
        .map_err(|e| LinkError::Refused(e.to_string()))?;
    if found == local_socket::Found::Nothing {
        return Err(LinkError::NobodyListens(format!(
            "no daemon socket at {}",
            path.display()
        )));
    }
    let stream = local_socket::connect(&path)
        .await
        .map_err(|e| io_link_error(e, &path.display().to_string()))?;
    let token = read_token(config).await?;
    // Over the socket the Host check still applies: `localhost` is what a local client is.
    let mut request = ws_request("ws://localhost/ws", &format!("Bearer {token}"))?;
    if !client_env.is_empty() {
        add_header(&mut request, CLIENT_ENV_HEADER, &client_env.to_header())?;
    }
    handshake(Either::Right(stream), request, config)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| handshake_error(e, config, &path.display().to_string()))
}

/// An explicit `EXAI_URL`: the daemon proves it holds the token before anything is sent (proof.rs).
/// The client's own settings do not cross TCP: only their digests go, so the daemon can say
/// which differ from its own.
async fn connect_tcp(config: &Config, url: &str, client_env: &ClientEnv) -> Result<Ws, LinkError> {
    let authority = tcp_authority(url).map_err(|e| LinkError::Refused(e.to_string()))?;
    let client_nonce = proof::new_nonce().map_err(|e| LinkError::Unreachable(e.to_string()))?;
    // Step 1: a challenge. A listener that lets the shim in without one is not the daemon.
    let ask = ws_request(url, &proof::authorization(&client_nonce, None))?;
    let server_nonce = match handshake(dial(authority).await?, ask, config).await {
        Ok(_) => {
            return Err(LinkError::Refused(not_the_daemon(
                url,
                "it accepted the connection without asking for a proof",
            )));
        }
        Err(tungstenite::Error::Http(response)) => {
            let offered = response
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(proof::parse)
                .and_then(|fields| fields.server_nonce)
                .filter(|nonce| proof::is_nonce(nonce));
            match offered {
                Some(nonce) if response.status() == 401 => nonce,
                _ => return Err(LinkError::Refused(http_refusal(url, &response))),
            }
        }
        Err(e) => return Err(handshake_error(e, config, url)),
    };
    // Step 2: the proof, answered by the daemon's own.
    let token = read_token(config).await?;
    let mac = proof::shim_proof(&token, &server_nonce, &client_nonce);
    let mut answer = ws_request(
        url,
        &proof::authorization(&client_nonce, Some((&server_nonce, &mac))),
    )?;
    if !client_env.is_empty() {
        add_header(
            &mut answer,
            CLIENT_DIGEST_HEADER,
            &client_env.to_digest_header(&token),
        )?;
    }
    let (ws, response) = handshake(dial(authority).await?, answer, config)
        .await
        .map_err(|e| handshake_error(e, config, url))?;
    let daemon_proof = response
        .headers()
        .get(proof::DAEMON_PROOF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !proof::daemon_proof_holds(&token, &server_nonce, &client_nonce, daemon_proof) {
        // `ws` is dropped unused: the connection closes before any message is sent.
        return Err(LinkError::Refused(not_the_daemon(
            url,
            "its answer carried no valid proof of the token",
        )));
    }
    Ok(ws)
}

fn not_the_daemon(url: &str, why: &str) -> String {
    format!(
        "the listener at {url} did not prove it is the exai daemon ({why}); the token was not sent \
         and nothing was relayed. Another program may hold that port: check it, or unset EXAI_URL \
         to use the daemon's private socket"
    )
}

/// A non-101 answer other than the daemon's challenge or its refusal of the token.
fn http_refusal(url: &str, response: &tungstenite::http::Response<Option<Vec<u8>>>) -> String {
    let body = response
        .body()
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let first_line: String = body
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    format!(
        "{url} answered HTTP {} {first_line:?} without the exai challenge, so it is not an exai daemon \
         of this version; the token was not sent",
        response.status().as_u16()
    )
}

fn io_link_error(error: std::io::Error, place: &str) -> LinkError {
    match error.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            LinkError::NobodyListens(format!("nothing listens on {place}: {error}"))
        }
        _ => LinkError::Unreachable(format!("{place}: {error}")),
    }
}

fn handshake_error(error: tungstenite::Error, config: &Config, place: &str) -> LinkError {
    match error {
        tungstenite::Error::Http(response) if response.status() == 401 => {
            LinkError::Refused(format!(
                "the daemon at {place} refused this shim's token (from {}): is it using EXAI_HOME {}?",
                config.token_path().display(),
                config.home.display()
            ))
        }
        tungstenite::Error::Http(response) => LinkError::Refused(http_refusal(place, &response)),
        tungstenite::Error::Io(e) => io_link_error(e, place),
        other => LinkError::Unreachable(format!("{place}: {other}")),
    }
}

async fn read_token(config: &Config) -> Result<String, LinkError> {
    let path = config.token_path();
    match tokio::fs::read_to_string(&path).await {
        Ok(token) if !token.trim().is_empty() => Ok(token.trim().to_string()),
        Ok(_) => Err(LinkError::Refused(format!(
            "the token file {} is empty",
            path.display()
        ))),
        Err(e) => Err(LinkError::Refused(format!(
            "cannot read exai's token {}: {e}",
            path.display()
        ))),
    }
}

fn ws_request(
    url: &str,
    authorization: &str,
) -> Result<tungstenite::handshake::client::Request, LinkError> {
    let mut request = url
        .into_client_request()
        .map_err(|e| LinkError::Refused(format!("EXAI_URL {url}: {e}")))?;
    let value = authorization.parse().map_err(|_| {
        LinkError::Refused("the token holds characters a header cannot carry".into())
    })?;
    request.headers_mut().insert(header::AUTHORIZATION, value);
    request.headers_mut().insert(
        crate::daemon::SHIM_VERSION_HEADER,
        header::HeaderValue::from_static(crate::VERSION),
    );
    Ok(request)
}

fn add_header(
    request: &mut tungstenite::handshake::client::Request,
    name: &'static str,
    value: &str,
) -> Result<(), LinkError> {
    let value = value.parse().map_err(|_| {
        LinkError::Refused(format!(
            "the {name} header cannot carry this client's settings"
        ))
    })?;
    request.headers_mut().insert(name, value);
    Ok(())
}

async fn dial(authority: &str) -> Result<Link, LinkError> {
    let tcp = TcpStream::connect(authority)
        .await
        .map_err(|e| io_link_error(e, authority))?;
    // Small MCP frames must not wait for Nagle's algorithm.
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    Ok(Either::Left(tcp))
}

async fn handshake(
    stream: Link,
    request: tungstenite::handshake::client::Request,
    config: &Config,
) -> Result<(Ws, tungstenite::handshake::client::Response), tungstenite::Error> {
    let limit = config.max_message_bytes + 1024;
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config)).await
}

/// Why `EXAI_URL` names no daemon the shim can reach or start.
#[derive(Debug, thiserror::Error)]
enum BadUrl {
    #[error("EXAI_URL {0} must start with ws:// (for a daemon on this machine or an SSH tunnel)")]
    NotWs(String),
    #[error("EXAI_URL {0} must name host:port, e.g. ws://127.0.0.1:8765/ws")]
    NoPort(String),
    #[error("cannot resolve {authority} (from EXAI_URL): {error}")]
    Unresolved {
        authority: String,
        #[source]
        error: std::io::Error,
    },
    #[error(
        "EXAI_URL {url} names {authority}, which is not a loopback address of this machine, \
         and the shim only starts local daemons: start `exai daemon` there yourself"
    )]
    NotLoopback { url: String, authority: String },
}

/// `host:port` of a `ws://host:port/path` URL.
fn tcp_authority(url: &str) -> Result<&str, BadUrl> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| BadUrl::NotWs(url.to_string()))?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(authority),
        _ => Err(BadUrl::NoPort(url.to_string())),
    }
}

/// The loopback address to start a daemon on for `url`: its host resolved, never a remote one.
async fn loopback_listen(url: &str) -> Result<SocketAddr, BadUrl> {
    let authority = tcp_authority(url)?;
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host(authority)
        .await
        .map_err(|error| BadUrl::Unresolved {
            authority: authority.to_string(),
            error,
        })?
        .collect();
    addresses
        .iter()
        .find(|a| a.is_ipv4() && a.ip().is_loopback())
        .or_else(|| addresses.iter().find(|a| a.ip().is_loopback()))
        .copied()
        .ok_or_else(|| BadUrl::NotLoopback {
            url: url.to_string(),
            authority: authority.to_string(),
        })
}

/// Why the shim did not get a daemon up.
pub(crate) enum StartError {
    /// It failed: reported with its reason, and not tried again for a while.
    Failed(String),
    /// Another daemon of this home is starting or stopping: the shim waits for it.
    Busy(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Failed(why) | StartError::Busy(why) => f.write_str(why),
        }
    }
}

impl From<String> for StartError {
    fn from(why: String) -> Self {
        Self::Failed(why)
    }
}

fn busy(config: &Config) -> StartError {
    StartError::Busy(format!(
        "an exai daemon holds {} but does not answer yet (starting or stopping)",
        config.home.display()
    ))
}

/// Starts `exai daemon` detached and waits (bounded) until it is up, or says why it is not.
pub(crate) async fn start_daemon(config: &Config) -> Result<(), StartError> {
    let listen = match config.daemon_url.as_deref() {
        None => config.listen,
        Some(url) => loopback_listen(url)
            .await
            .map_err(|e| StartError::Failed(e.to_string()))?,
    };
    let spawned = {
        let config = config.clone();
        crate::spawn::blocking(move || spawn_daemon_process(&config, listen))
    };
    let mut child = spawned.await.map_err(|e| e.to_string())??;
    let outcome = wait_until_up(config, &mut child, listen).await;
    // Reap it if it exits while we live; it outlives us otherwise.
    std::thread::spawn(move || child.wait());
    outcome
}

/// Until the started daemon has written its `daemon.json`, it exits, or `AUTOSTART_WAIT` passes.
async fn wait_until_up(
    config: &Config,
    child: &mut std::process::Child,
    listen: SocketAddr,
) -> Result<(), StartError> {
    let log = config.log_dir().join("daemon.out");
    let started = Instant::now();
    let until = started + AUTOSTART_WAIT;
    loop {
        if running_daemon_pid(config).await == Some(child.id()) {
            tracing::info!(%listen, "started the exai daemon");
            return Ok(());
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                // Another shim's daemon may have won the race for EXAI_HOME's lock.
                if daemon_listens(config, listen).await {
                    return Ok(());
                }
                if status.code() == Some(i32::from(crate::daemon::EXIT_BUSY)) {
                    return Err(busy(config));
                }
                return Err(StartError::Failed(format!(
                    "`exai daemon --listen {listen}` exited after {:.1} s ({status}): {} (log: {})",
                    started.elapsed().as_secs_f64(),
                    last_line(&log).await,
                    log.display()
                )));
            }
            Ok(None) => {}
            Err(e) => return Err(format!("cannot watch the started daemon: {e}").into()),
        }
        if Instant::now() >= until {
            return Err(StartError::Failed(format!(
                "started `exai daemon --listen {listen}` (pid {}) but it was not up within {} s; see {}",
                child.id(),
                AUTOSTART_WAIT.as_secs(),
                log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Whether something listens where the shim connects (the next connection checks what it is).
async fn daemon_listens(config: &Config, listen: SocketAddr) -> bool {
    match config.daemon_url {
        None => local_socket::connect(&config.socket_path()).await.is_ok(),
        Some(_) => TcpStream::connect(listen).await.is_ok(),
    }
}

/// The pid in `daemon.json`, written by a daemon once it listens.
async fn running_daemon_pid(config: &Config) -> Option<u32> {
    let text = tokio::fs::read_to_string(config.daemon_info_path())
        .await
        .ok()?;
    serde_json::from_str::<crate::daemon::DaemonInfo>(&text)
        .ok()
        .map(|info| info.pid)
}

/// The last line a failed daemon wrote (its error), from the end of its log.
async fn last_line(log: &std::path::Path) -> String {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let read = async {
        let mut file = tokio::fs::File::open(log).await.ok()?;
        let len = file.metadata().await.ok()?.len();
        file.seek(std::io::SeekFrom::Start(len.saturating_sub(4096)))
            .await
            .ok()?;
        let mut tail = Vec::new();
        file.read_to_end(&mut tail).await.ok()?;
        let text = String::from_utf8_lossy(&tail).to_string();
        text.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().chars().take(400).collect::<String>())
    };
    read.await
        .unwrap_or_else(|| "it wrote no error".to_string())
}

fn spawn_daemon_process(
    config: &Config,
    listen: SocketAddr,
) -> Result<std::process::Child, StartError> {
    use std::os::unix::process::CommandExt;
    crate::daemon::prepare_home(config).map_err(|e| e.to_string())?;
    if crate::daemon::lock_is_held(config) {
        return Err(busy(config));
    }
    let log_path = config.log_dir().join("daemon.out");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the exai binary: {e}"))?;
    let mut command = std::process::Command::new(exe);
    // The daemon is everybody's: it takes from this environment only what is the daemon's
    // (where it lives, listens and stores, its log); a client's provider and call settings
    // reach the daemon with that client's session, never as everybody's.
    for name in ClientEnv::of_process()
        .names()
        .iter()
        .chain(&shim_only_vars())
    {
        command.env_remove(name);
    }
    command
        .arg("daemon")
        .env("EXAI_HOME", &config.home)
        .env("EXAI_LISTEN", listen.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start `exai daemon`: {e}").into())
}

/// The settings only `exai stdio` reads (where to find the daemon): not the daemon's.
fn shim_only_vars() -> Vec<String> {
    crate::config::SETTINGS
        .iter()
        .filter(|s| s.scope == crate::config::Scope::Shim)
        .map(|s| s.var.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_comes_from_a_ws_url_with_a_port() {
        assert_eq!(
            tcp_authority("ws://127.0.0.1:8765/ws").ok(),
            Some("127.0.0.1:8765")
        );
        assert_eq!(tcp_authority("ws://localhost:1").ok(), Some("localhost:1"));
        assert_eq!(tcp_authority("ws://[::1]:9/ws").ok(), Some("[::1]:9"));
        assert!(matches!(
            tcp_authority("ws://localhost/ws"),
            Err(BadUrl::NoPort(_))
        ));
        assert!(matches!(
            tcp_authority("wss://localhost:1/ws"),
            Err(BadUrl::NotWs(_))
        ));
        assert!(tcp_authority("nonsense").is_err());
    }

    #[tokio::test]
    async fn autostart_resolves_host_names_to_loopback_only() {
        assert_eq!(
            loopback_listen("ws://localhost:8765/ws").await.ok(),
            Some(SocketAddr::from(([127, 0, 0, 1], 8765)))
        );
        assert_eq!(
            loopback_listen("ws://127.0.0.1:9/ws")
                .await
                .map(|a| a.port())
                .ok(),
            Some(9)
        );
        let err = loopback_listen("ws://192.0.2.7:9/ws")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a loopback address"), "{err}");
    }
}
