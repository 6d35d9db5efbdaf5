//! `exai-fake-provider`: an OpenAI-compatible fake LLM server for tests and benchmarks.
//!
//! The behaviour of each chat-completion request is scripted by its model name
//! (`fake-fast`, `fake-delay-<ms>`, `fake-stream-<n>x<ms>`, `fake-hang`, `fake-stall-<n>`,
//! `fake-429-<k>`, `fake-429r<secs>-<k>`, `fake-500`, `fake-500-<k>`, `fake-503`, `fake-401`,
//! `fake-garbage`, `fake-reset`, `fake-resetmid-<n>`, `fake-truncated`, `fake-nochoices`,
//! `fake-nousage-<n>`, `fake-reasoning`, `fake-glm-thinking`, `fake-comments-<n>`,
//! `fake-slowstart-<ms>x<n>`, `fake-kimi-search`, `fake-kimi-search-loop`, `fake-glm-search`,
//! `fake-json`, `fake-thinkstream-<n>x<ms>`, `fake-flood`, `fake-flood-json`, `fake-longline`,
//! `fake-redirect-<port>`, `fake-echo-auth`, `fake-bigheaders-<kib>`;
//! see [`script::Script`]). `GET /models` is scripted by the bearer key instead: `fake-key-401`
//! is refused with 401, `fake-key-hang` never answered; any other key gets the list (see
//! [`script::KeyScript`]).
//! `fake-wedge` stops its connection dead (no byte moves either way, nothing is closed).
//! `fake-fixture-<provider>-<stem>` replays a documented provider fixture byte for byte
//! (`tests/fixtures/providers/<provider>/<stem>.sse` or `.json`, see [`Fixture`]).
//! The answer text is always `echo: <last user message>`, so concurrent callers can check that
//! they got their own answer. `GET /stats` reports how many requests completed or were aborted
//! by the client, how many are in flight (now, at peak, per model), by HTTP version
//! (`by_http_version`; HTTP/2 is served too, as h2c) and on how many connections, and `POST /reset` zeroes
//! those counters (the peak becomes the current in-flight count).
//! `GET /last_request?model=<name>` returns the last JSON body received for that model (`_raw`:
//! the same as it came, as text), plus
//! `"_has_auth": true|false` (whether an `Authorization` header came with it; the key itself is
//! never echoed) and `"_auth_id"`: [`auth_id`] of that header, so a test tells keys apart
//! without the key being kept. `POST /reset` forgets those bodies too.
//!
//! The providers' document endpoints — Kimi's Files API and GLM's file parser — are served
//! too (see `files.rs`), their uploads, deletes and parser tasks counted under `"files"` in
//! `GET /stats`.
//!
//! Real model ids of the built-in catalog (`glm-5.3`, `kimi-k3`, `openai/gpt-5`, …) are answered
//! as their provider documents it, refusals included (see `documented.rs`).
//!
//! [`start`] runs the server in-process on its own thread and runtime (the integration tests'
//! harness); the `exai-fake-provider` binary serves it as a process (the Python tests, scripts)
//! and prints exactly one line, `LISTENING http://<addr>`, to stdout.

mod documented;
mod files;
pub mod script;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::{IncomingStream, Listener};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use script::{EXAMPLE_MODELS, KeyScript, Script, number, split_text, token_chunks, tokens};

/// Reasoning chunks streamed by `fake-reasoning` before the answer.
const REASONING_STEPS: &[&str] = &[
    "thinking step 1\n",
    "thinking step 2\n",
    "thinking step 3\n",
];

/// Reasoning chunks streamed by `fake-glm-thinking` before the answer.
const GLM_THINKING_STEPS: &[&str] = &["Let me think. ", "Step two. "];

/// `fake-kimi-search`: reasoning streamed before each `$web_search` call, which Kimi wants back.
const KIMI_SEARCH_REASONING: &str = "I should look this up. ";

/// `fake-kimi-search`: reasoning streamed before the answer that follows a search.
const KIMI_FOUND_REASONING: &str = "Found it. ";

/// `fake-kimi-search`: the platform "searching" before the answer after a search starts.
const SEARCH_PAUSE: Duration = Duration::from_millis(600);

/// Kimi's builtin search function.
const KIMI_SEARCH: &str = "$web_search";

/// Body of every `fake-503` answer.
const UNAVAILABLE_HTML: &str = "<html><body><h1>503 Service Unavailable</h1></body></html>";

/// `fake-truncated`: the SSE event cut in the middle of its JSON.
const TRUNCATED_EVENT: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"par\n\n";

/// `fake-truncated`: the non-stream body cut in the middle of its JSON.
const TRUNCATED_BODY: &str = "{\"choices\":[{\"message\":{\"content\":\"par";

/// `fake-nochoices`: the non-stream body.
const NO_CHOICES_BODY: &str = "{\"id\":\"x\",\"object\":\"chat.completion\",\"choices\":[]}";

/// SSE comment sent by `fake-comments-<n>` before every event.
const KEEP_ALIVE: &str = ": keep-alive\r\n\r\n";

/// `fake-comments-<n>`: pause between the two halves of an event, so they leave separately.
const SPLIT_PAUSE: Duration = Duration::from_millis(1);

/// `fake-resetmid-<n>`: pause before the reset, so the chunks already sent reach the client.
const RESET_GRACE: Duration = Duration::from_millis(20);

/// `fake-flood`: reasoning streamed before the flood of answer text (100 KiB).
const FLOOD_REASONING_BYTES: usize = 100 * 1024;

/// `fake-flood`: answer text in each event (16 KiB).
const FLOOD_EVENT_BYTES: usize = 16 * 1024;

/// `fake-flood`: events in each body chunk.
const FLOOD_EVENTS_PER_CHUNK: usize = 16;

/// `fake-longline`: how the one line that never ends begins.
const LONG_LINE_START: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"";

/// `fake-longline`: bytes of the line in each body chunk (64 KiB).
const LONG_LINE_CHUNK_BYTES: usize = 64 * 1024;

/// `fake-redirect-<port>`: a secret in the redirect target, which must not be shown.
const REDIRECT_SECRET: &str = "fake-redirect-secret";

/// Bytes handed to hyper after a mid-stream reset: the write fails, so they never leave.
const RESET_FILLER: &str = ": reset\n\n";

/// The documented provider fixtures of this source tree.
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/providers");

// ---------------------------------------------------------------------------------------------
// Scripts
// ---------------------------------------------------------------------------------------------

// Stats
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Counters {
    /// Incremented by `POST /reset`; trackers of an older epoch no longer count.
    epoch: u64,
    requests: u64,
    completed: u64,
    aborted: u64,
    in_flight: u64,
    /// Peak of `in_flight` since start or the last reset.
    max_in_flight: u64,
    by_model: BTreeMap<String, u64>,
    /// Requests in flight per model (models with none are left out).
    in_flight_by_model: BTreeMap<String, u64>,
    /// Requests seen per `fake-429-<k>` / `fake-500-<k>` model name.
    failures_seen: HashMap<String, u32>,
    /// Last body per model, as it came: parsed (and `_has_auth`, `_auth_id`, `_raw` added)
    /// only when a test asks for it, so a benchmark's stream of requests is not copied.
    last_requests: HashMap<String, Recorded>,
    /// Chat requests per HTTP version (`HTTP/1.1`, `HTTP/2.0`).
    by_http_version: BTreeMap<String, u64>,
    /// The connections chat requests came on (by their numbers).
    connections: std::collections::HashSet<u64>,
}

/// A request body as it came, and its `Authorization` header.
#[derive(Clone)]
struct Recorded {
    raw: Bytes,
    authorization: Option<String>,
}

#[derive(Default)]
struct Stats(Mutex<Counters>);

impl Stats {
    fn lock(&self) -> MutexGuard<'_, Counters> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a new chat-completion request (its HTTP version and connection too) and returns
    /// its tracker.
    fn start(self: &Arc<Self>, version: axum::http::Version, connection: &ResetHandle) -> Tracker {
        let mut c = self.lock();
        c.requests += 1;
        *c.by_http_version.entry(format!("{version:?}")).or_default() += 1;
        c.connections.insert(connection.1);
        c.in_flight += 1;
        c.max_in_flight = c.max_in_flight.max(c.in_flight);
        Tracker {
            stats: Arc::clone(self),
            epoch: c.epoch,
            model: None,
            done: false,
        }
    }

    fn count_model(&self, model: &str) {
        let mut c = self.lock();
        *c.by_model.entry(model.to_owned()).or_default() += 1;
        *c.in_flight_by_model.entry(model.to_owned()).or_default() += 1;
    }

    /// True while the request should still fail (first `limit` requests for this model name).
    fn take_failure(&self, model: &str, limit: u32) -> bool {
        let mut c = self.lock();
        let seen = c.failures_seen.entry(model.to_owned()).or_default();
        *seen = seen.saturating_add(1);
        *seen <= limit
    }

    /// Keeps `raw` (a JSON object whose `model` is `model`) as the last request for that
    /// model, so tests can compare what was sent byte for byte.
    fn record_request(&self, model: &str, raw: Bytes, authorization: Option<&str>) {
        let recorded = Recorded {
            raw,
            authorization: authorization.map(str::to_owned),
        };
        self.lock().last_requests.insert(model.to_owned(), recorded);
    }

    fn last_request(&self, model: &str) -> Option<Value> {
        let recorded = self.lock().last_requests.get(model).cloned()?;
        let mut body = serde_json::from_slice::<Value>(&recorded.raw).ok()?;
        let fields = body.as_object_mut()?;
        fields.insert(
            "_has_auth".to_owned(),
            Value::Bool(recorded.authorization.is_some()),
        );
        fields.insert(
            "_auth_id".to_owned(),
            recorded
                .authorization
                .as_deref()
                .map_or(Value::Null, |a| Value::String(auth_id(a))),
        );
        fields.insert(
            "_raw".to_owned(),
            Value::String(String::from_utf8_lossy(&recorded.raw).into_owned()),
        );
        Some(body)
    }

    fn finish(&self, epoch: u64, model: Option<&str>, completed: bool) {
        let mut c = self.lock();
        c.in_flight = c.in_flight.saturating_sub(1);
        if let Some(model) = model
            && let Some(n) = c.in_flight_by_model.get_mut(model)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.in_flight_by_model.remove(model);
            }
        }
        if c.epoch != epoch {
            return;
        }
        if completed {
            c.completed += 1;
        } else {
            c.aborted += 1;
        }
    }

    fn reset(&self) {
        let mut c = self.lock();
        *c = Counters {
            epoch: c.epoch + 1,
            in_flight: c.in_flight,
            max_in_flight: c.in_flight,
            in_flight_by_model: std::mem::take(&mut c.in_flight_by_model),
            ..Counters::default()
        };
    }

    fn snapshot(&self) -> Value {
        let c = self.lock();
        json!({
            "requests": c.requests,
            "completed": c.completed,
            "aborted": c.aborted,
            "in_flight": c.in_flight,
            "max_in_flight": c.max_in_flight,
            "by_model": c.by_model,
            "in_flight_by_model": c.in_flight_by_model,
            "by_http_version": c.by_http_version,
            "connections": c.connections.len(),
        })
    }
}

/// Lives as long as a request is being answered (handler future, then response body stream).
/// Dropped without [`Tracker::complete`] means the client went away: counted as aborted.
struct Tracker {
    stats: Arc<Stats>,
    epoch: u64,
    /// Set once the body is parsed: the request then counts in `in_flight_by_model`.
    model: Option<String>,
    done: bool,
}

impl Tracker {
    /// Counts the request for `model` (in `by_model` and, until it ends, `in_flight_by_model`).
    fn set_model(&mut self, model: &str) {
        if self.model.is_none() {
            self.stats.count_model(model);
            self.model = Some(model.to_owned());
        }
    }

    fn complete(&mut self) {
        if !self.done {
            self.done = true;
            self.stats.finish(self.epoch, self.model.as_deref(), true);
        }
    }

    /// Marks the request completed and passes the (fully built) response through.
    fn finish(mut self, response: Response) -> Response {
        self.complete();
        response
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if !self.done {
            self.stats.finish(self.epoch, self.model.as_deref(), false);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connections that can be reset (for `fake-reset`)
// ---------------------------------------------------------------------------------------------

/// Per-connection handle given to handlers (as `ConnectInfo`) to reset or freeze their
/// connection; the number tells connections apart.
#[derive(Clone, Default)]
struct ResetHandle(Arc<AtomicU8>, u64);

/// What a [`ResetHandle`] did to its connection.
const RESET: u8 = 1;
const FROZEN: u8 = 2;

/// The number of the next connection accepted.
static NEXT_CONNECTION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl ResetHandle {
    fn trigger(&self) {
        self.0.store(RESET, Ordering::SeqCst);
    }

    fn is_triggered(&self) -> bool {
        self.0.load(Ordering::SeqCst) == RESET
    }

    /// The connection moves no more bytes either way, and says nothing: a network path that died.
    fn freeze(&self) {
        self.0.store(FROZEN, Ordering::SeqCst);
    }

    fn is_frozen(&self) -> bool {
        self.0.load(Ordering::SeqCst) == FROZEN
    }
}

/// TCP listener whose connections fail all I/O (and close with RST) once their
/// [`ResetHandle`] is triggered; with TLS, a connection that opens with a TLS handshake is
/// served over TLS (and one that does not, in plain text: the tests' `/stats`).
struct ResettableListener {
    tcp: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Listener for ResettableListener {
    type Io = ResettableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.tcp.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let Some(inner) = self.secured(stream).await else {
                        continue;
                    };
                    let io = ResettableStream {
                        inner,
                        reset: ResetHandle(
                            Arc::default(),
                            NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed),
                        ),
                    };
                    return (io, addr);
                }
                // Typically EMFILE under load: back off a little and retry.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

impl ResettableListener {
    /// The connection as served: over TLS when it opens with a handshake record (byte 22) and
    /// TLS is on; `None` when its handshake fails (an untrusting client hangs up).
    async fn secured(&self, stream: TcpStream) -> Option<Transport> {
        let Some(acceptor) = &self.tls else {
            return Some(Transport::Plain(stream));
        };
        let mut first = [0u8; 1];
        let peeked = tokio::time::timeout(Duration::from_secs(5), stream.peek(&mut first)).await;
        if !matches!(peeked, Ok(Ok(1))) || first[0] != 22 {
            return Some(Transport::Plain(stream));
        }
        let accepted = tokio::time::timeout(Duration::from_secs(5), acceptor.accept(stream)).await;
        match accepted {
            Ok(Ok(tls)) => Some(Transport::Tls(Box::new(tls))),
            _ => None,
        }
    }
}

/// A connection's bytes: plain, or inside TLS.
enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// What a connection's bytes go through, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Transport {
    fn io(&mut self) -> Pin<&mut dyn Io> {
        match self {
            Self::Plain(tcp) => Pin::new(tcp),
            Self::Tls(tls) => Pin::new(tls.as_mut()),
        }
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => tls.get_ref().0,
        }
    }
}

/// Which application protocols the fake offers over TLS (ALPN), in its order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// HTTP/2, else HTTP/1.1: as the providers' own servers.
    Http2AndHttp1,
    /// HTTP/1.1 only: as many self-hosted servers behind a TLS proxy.
    Http1Only,
}

/// The test CA's certificate (PEM): trust it to reach the fake over TLS. The server's
/// certificate it signed names `localhost` and `127.0.0.1`; the CA's key was not kept.
pub const TEST_CA_PEM: &str = include_str!("../tls/ca.pem");

fn tls_acceptor(tls: Tls) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let chain = CertificateDer::pem_slice_iter(include_bytes!("../tls/server.pem"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&e))?;
    let key = PrivateKeyDer::from_pem_slice(include_bytes!("../tls/server.key"))
        .map_err(|e| invalid(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(&e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| invalid(&e))?;
    config.alpn_protocols = match tls {
        Tls::Http2AndHttp1 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        Tls::Http1Only => vec![b"http/1.1".to_vec()],
    };
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

impl Connected<IncomingStream<'_, ResettableListener>> for ResetHandle {
    fn connect_info(stream: IncomingStream<'_, ResettableListener>) -> Self {
        stream.io().reset.clone()
    }
}

struct ResettableStream {
    inner: Transport,
    reset: ResetHandle,
}

impl ResettableStream {
    /// Whether I/O may go on. Once reset: arrange for an RST on close and fail the I/O so hyper
    /// drops the socket. Once frozen: pending, never woken (nothing moves on it again).
    fn usable(&self) -> Poll<std::io::Result<()>> {
        if self.reset.is_frozen() {
            return Poll::Pending;
        }
        if !self.reset.is_triggered() {
            return Poll::Ready(Ok(()));
        }
        let _ = self.inner.tcp().set_zero_linger();
        Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()))
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.usable())?;
        self.inner.io().poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        std::task::ready!(self.usable())?;
        self.inner.io().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.usable())?;
        self.inner.io().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.usable())?;
        self.inner.io().poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------------------
// Requests and answers
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    #[serde(default)]
    messages: Vec<Message>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    tools: Vec<Value>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    thinking: Option<Value>,
}

impl ChatRequest {
    /// Kimi's switch: thinking models think unless told `thinking: {type: disabled}`.
    fn thinking_disabled(&self) -> bool {
        self.thinking
            .as_ref()
            .is_some_and(|t| t["type"] == "disabled")
    }
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    role: String,
    #[serde(default)]
    content: Value,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Value>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// Text of a message content: a string, or the `text` parts of an array of parts.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// The words of `text`, as `split_whitespace` counts them: byte by byte when it is ASCII (a
/// prompt of kilobytes is counted on every request, beside the exai the bench measures).
fn word_count(text: &str) -> u64 {
    if !text.is_ascii() {
        return text.split_whitespace().count() as u64;
    }
    // `char::is_whitespace` in ASCII, which has the vertical tab `u8::is_ascii_whitespace` lacks.
    let space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r');
    let mut words = 0;
    let mut in_word = false;
    for b in text.as_bytes() {
        let is_space = space(b);
        words += u64::from(!is_space && !in_word);
        in_word = !is_space;
    }
    words
}

/// `text` as a JSON string.
fn json_text(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

/// The delta `{"<field>": text}`.
fn text_delta(field: &str, text: &str) -> String {
    format!("{{\"{field}\":{}}}", json_text(text))
}

/// The first chunk's delta.
const ROLE_DELTA: &str = "{\"role\":\"assistant\"}";

/// Everything needed to render one scripted answer, streamed or not.
struct Answer {
    id: String,
    created: u64,
    model: String,
    prompt_tokens: u64,
    reasoning: Vec<String>,
    content: Vec<String>,
    /// Pause before each content chunk (stream mode).
    gap: Duration,
    /// Pause before the first chunk (stream mode; the headers are sent at once).
    first_gap: Duration,
    /// Whether the answer (or its final chunk) carries `usage`.
    with_usage: bool,
    /// The usage to report instead of counting words: prompt, completion and cached tokens.
    scripted_usage: Option<(u64, u64, Option<u64>)>,
    /// Stream mode: what follows the content chunks.
    ending: Ending,
    /// A tool call (id, function name, argument pieces) after the reasoning; the answer then
    /// ends with `finish_reason: "tool_calls"`.
    tool_call: Option<(String, String, Vec<String>)>,
    /// A top-level `web_search` array (GLM), in the first chunk or the whole answer.
    web_search: Option<Value>,
}

/// How a streamed answer ends, after its content chunks.
enum Ending {
    /// The final chunk (`finish_reason`, usage), then `[DONE]`.
    Done,
    /// Nothing more, forever.
    Stall,
    /// The connection is reset.
    Reset(ResetHandle),
}

impl Answer {
    fn new(req: &ChatRequest) -> Answer {
        let prompt_tokens = req
            .messages
            .iter()
            .map(|m| word_count(&content_text(&m.content)))
            .sum();
        Answer {
            id: format!("chatcmpl-{}", uuid::Uuid::now_v7().simple()),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model: req.model.clone(),
            prompt_tokens,
            reasoning: Vec::new(),
            content: Vec::new(),
            gap: Duration::ZERO,
            first_gap: Duration::ZERO,
            with_usage: true,
            scripted_usage: None,
            ending: Ending::Done,
            tool_call: None,
            web_search: None,
        }
    }

    fn finish_reason(&self) -> &'static str {
        if self.tool_call.is_some() {
            "tool_calls"
        } else {
            "stop"
        }
    }

    fn usage(&self) -> Value {
        if let Some((prompt, completion, cached)) = self.scripted_usage {
            let mut usage = json!({
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            });
            if let Some(cached) = cached {
                usage["prompt_tokens_details"] = json!({ "cached_tokens": cached });
            }
            return usage;
        }
        let reasoning_tokens: u64 = self.reasoning.iter().map(|r| word_count(r)).sum();
        let completion_tokens = word_count(&self.content.concat()) + reasoning_tokens;
        let mut usage = json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
        });
        if !self.reasoning.is_empty() {
            usage["completion_tokens_details"] = json!({ "reasoning_tokens": reasoning_tokens });
        }
        usage
    }

    fn completion(&self) -> Value {
        let mut message = json!({ "role": "assistant", "content": self.content.concat() });
        if !self.reasoning.is_empty() {
            message["reasoning_content"] = json!(self.reasoning.concat());
        }
        if let Some((id, name, pieces)) = &self.tool_call {
            message["tool_calls"] = json!([{
                "index": 0,
                "id": id,
                "type": "builtin_function",
                "function": { "name": name, "arguments": pieces.concat() },
            }]);
        }
        let mut completion = json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "message": message, "finish_reason": self.finish_reason() }],
        });
        if self.with_usage {
            completion["usage"] = self.usage();
        }
        if let Some(results) = &self.web_search {
            completion["web_search"] = results.clone();
        }
        completion
    }

    /// One event: the bytes `chunk_json` would print, written straight out (the throughput
    /// bench runs this fake on the cores it measures exai on, and building each chunk as a map
    /// to print it took a fifth of the bench's own CPU).
    fn chunk(&self, delta: Value, finish_reason: Option<&str>, usage: Option<Value>) -> Step {
        Self::chunk_after(&self.chunk_head(), delta, finish_reason, usage)
    }

    /// What each of this answer's chunks says before its `delta`.
    fn chunk_head(&self) -> String {
        format!(
            "data: {{\"id\":{},\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":{},\
             \"choices\":[{{\"index\":0,\"delta\":",
            json_text(&self.id),
            self.created,
            json_text(&self.model),
        )
    }

    /// The event of `head` (from [`Answer::chunk_head`]) and `delta`, the delta's JSON.
    fn chunk_after(
        head: &str,
        delta: impl std::fmt::Display,
        finish_reason: Option<&str>,
        usage: Option<Value>,
    ) -> Step {
        let finish_reason = finish_reason.map_or_else(|| "null".to_owned(), json_text);
        let usage = usage.map(|usage| format!(",\"usage\":{usage}"));
        Step::Send(format!(
            "{head}{delta},\"finish_reason\":{finish_reason}}}]{}}}\n\n",
            usage.unwrap_or_default(),
        ))
    }

    fn chunk_json(&self, delta: Value, finish_reason: Option<&str>, usage: Option<Value>) -> Value {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish_reason }],
        });
        if let Some(usage) = usage {
            chunk["usage"] = usage;
        }
        chunk
    }

    fn stream_steps(&self) -> VecDeque<Step> {
        let mut steps = VecDeque::new();
        if !self.first_gap.is_zero() {
            steps.push_back(Step::Wait(self.first_gap));
        }
        let head = self.chunk_head();
        // Every chunk but the last is a delta alone, with no finish reason and no usage.
        let delta_only =
            |delta: &dyn std::fmt::Display| Self::chunk_after(&head, delta, None, None);
        match &self.web_search {
            None => steps.push_back(delta_only(&ROLE_DELTA)),
            Some(results) => {
                let mut first = self.chunk_json(json!({ "role": "assistant" }), None, None);
                first["web_search"] = results.clone();
                steps.push_back(Step::Send(format!("data: {first}\n\n")));
            }
        }
        for r in &self.reasoning {
            if !self.gap.is_zero() {
                steps.push_back(Step::Wait(self.gap));
            }
            steps.push_back(delta_only(&text_delta("reasoning_content", r)));
        }
        if let Some((id, name, pieces)) = &self.tool_call {
            // The first fragment names the call; the arguments follow in pieces.
            let opening = json!({ "tool_calls": [{
                "index": 0,
                "id": id,
                "type": "builtin_function",
                "function": { "name": name, "arguments": "" },
            }] });
            steps.push_back(delta_only(&opening));
            for piece in pieces {
                let fragment =
                    json!({ "tool_calls": [{ "index": 0, "function": { "arguments": piece } }] });
                steps.push_back(delta_only(&fragment));
            }
        }
        for c in &self.content {
            if !self.gap.is_zero() {
                steps.push_back(Step::Wait(self.gap));
            }
            steps.push_back(delta_only(&text_delta("content", c)));
        }
        match &self.ending {
            Ending::Done => {
                let usage = self.with_usage.then(|| self.usage());
                steps.push_back(Self::chunk_after(
                    &head,
                    "{}",
                    Some(self.finish_reason()),
                    usage,
                ));
                steps.push_back(Step::Send("data: [DONE]\n\n".to_owned()));
            }
            Ending::Stall => steps.push_back(Step::Silence),
            Ending::Reset(handle) => {
                steps.push_back(Step::Wait(RESET_GRACE));
                steps.push_back(Step::Reset(handle.clone()));
            }
        }
        steps
    }
}

/// `echo: <content of the last user message>`.
fn echo_text(req: &ChatRequest) -> String {
    let last_user = req
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| content_text(&m.content))
        .unwrap_or_default();
    script::echo(&last_user)
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/// A 400 saying what was wrong with the request.
fn bad(message: &str) -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        message,
        "invalid_request_error",
        None,
    )
}

fn error_response(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response {
    let mut error = json!({ "message": message, "type": kind });
    if let Some(code) = code {
        error["code"] = json!(code);
    }
    (status, Json(json!({ "error": error }))).into_response()
}

fn rate_limited(retry_after: u32) -> Response {
    let mut response = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        "rate limited",
        "rate_limit_error",
        None,
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    response
}

fn overloaded() -> Response {
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "upstream overloaded",
        "server_error",
        None,
    )
}

fn unavailable() -> Response {
    let html = [(header::CONTENT_TYPE, "text/html")];
    (StatusCode::SERVICE_UNAVAILABLE, html, UNAVAILABLE_HTML).into_response()
}

/// 200 with `body` sent as is, labelled as JSON (whether it is or not).
fn raw_json(body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn invalid_api_key() -> Response {
    error_response(
        StatusCode::UNAUTHORIZED,
        "invalid api key",
        "invalid_request_error",
        Some("invalid_api_key"),
    )
}

fn model_not_found(model: &str) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        &format!("model '{model}' not found"),
        "invalid_request_error",
        Some("model_not_found"),
    )
}

/// One step of a scripted SSE body.
enum Step {
    Wait(Duration),
    Send(String),
    /// Reset the connection: hyper's next write fails and the socket closes with RST.
    Reset(ResetHandle),
    /// Send nothing more, forever (not even SSE comments). hyper notices when the client closes
    /// the connection (it reads EOF) and drops the body, so the tracker still counts the abort.
    Silence,
}

struct StreamState {
    steps: VecDeque<Step>,
    tracker: Tracker,
}

/// Next chunk of an SSE body; the tracker completes when the last step is sent.
async fn next_sse_chunk(
    mut state: StreamState,
) -> Option<(Result<Bytes, Infallible>, StreamState)> {
    loop {
        let text = match state.steps.pop_front()? {
            Step::Wait(pause) => {
                tokio::time::sleep(pause).await;
                continue;
            }
            Step::Send(text) => text,
            Step::Reset(handle) => {
                // Something must still be written for hyper to hit the failing socket.
                handle.trigger();
                RESET_FILLER.to_owned()
            }
            Step::Silence => std::future::pending().await,
        };
        if state.steps.is_empty() {
            state.tracker.complete();
        }
        return Some((Ok(Bytes::from(text)), state));
    }
}

/// `fake-comments-<n>`: a `: keep-alive` comment before every event, CRLF line endings, and
/// each event split in two body chunks with a short pause between them (so they are flushed
/// separately).
fn with_keep_alives(steps: VecDeque<Step>) -> VecDeque<Step> {
    let mut out = VecDeque::new();
    for step in steps {
        let Step::Send(event) = step else {
            out.push_back(step);
            continue;
        };
        // Serialized JSON never holds a raw newline: only the SSE line endings change.
        let event = event.replace('\n', "\r\n");
        let mut middle = event.len() / 2;
        while !event.is_char_boundary(middle) {
            middle -= 1;
        }
        let (head, tail) = event.split_at(middle);
        out.push_back(Step::Send(KEEP_ALIVE.to_owned()));
        out.push_back(Step::Send(head.to_owned()));
        out.push_back(Step::Wait(SPLIT_PAUSE));
        out.push_back(Step::Send(tail.to_owned()));
    }
    out
}

fn sse_response(steps: VecDeque<Step>, tracker: Tracker) -> Response {
    let body = futures::stream::unfold(StreamState { steps, tracker }, next_sse_chunk);
    sse_body(Body::from_stream(body))
}

/// A 200 `text/event-stream` answer with `body`.
fn sse_body(body: Body) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn garbage(stream: bool, tracker: Tracker) -> Response {
    if stream {
        let steps = VecDeque::from([
            Step::Send("data: {not json\n\n".to_owned()),
            Step::Send("data: [DONE]\n\n".to_owned()),
        ]);
        return sse_response(steps, tracker);
    }
    let response = (
        [(header::CONTENT_TYPE, "application/json")],
        "this is not json {{{",
    )
        .into_response();
    tracker.finish(response)
}

fn truncated(req: &ChatRequest, stream: bool, tracker: Tracker) -> Response {
    if !stream {
        return tracker.finish(raw_json(TRUNCATED_BODY));
    }
    let answer = Answer::new(req);
    let steps = VecDeque::from([
        answer.chunk(json!({ "role": "assistant" }), None, None),
        answer.chunk(json!({ "content": "tok0 " }), None, None),
        Step::Send(TRUNCATED_EVENT.to_owned()),
    ]);
    sse_response(steps, tracker)
}

fn no_choices(stream: bool, tracker: Tracker) -> Response {
    if !stream {
        return tracker.finish(raw_json(NO_CHOICES_BODY));
    }
    let steps = VecDeque::from([
        Step::Send("data: {\"choices\":[]}\n\n".to_owned()),
        Step::Send("data: [DONE]\n\n".to_owned()),
    ]);
    sse_response(steps, tracker)
}

/// A body that repeats `chunk` forever after `head`, as fast as the client reads it; the
/// tracker lives as long as the body (so a client that drops it counts as an abort).
fn endless_body(head: Bytes, chunk: Bytes, tracker: Tracker) -> Body {
    let rest = futures::stream::unfold((chunk, tracker), |(chunk, tracker)| async move {
        Some((Ok::<_, Infallible>(chunk.clone()), (chunk, tracker)))
    });
    let head = futures::stream::iter([Ok::<_, Infallible>(head)]);
    Body::from_stream(futures::StreamExt::chain(head, rest))
}

/// `fake-flood`.
fn flood(req: &ChatRequest, stream: bool, tracker: Tracker) -> Response {
    let text = "x".repeat(FLOOD_EVENT_BYTES);
    if !stream {
        let head =
            format!("{{\"choices\":[{{\"message\":{{\"role\":\"assistant\",\"content\":\"{text}");
        let body = endless_body(Bytes::from(head), Bytes::from(text), tracker);
        return ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    }
    let answer = Answer::new(req);
    let mut head = String::new();
    for step in [
        answer.chunk(json!({ "role": "assistant" }), None, None),
        answer.chunk(
            json!({ "reasoning_content": "r".repeat(FLOOD_REASONING_BYTES) }),
            None,
            None,
        ),
    ] {
        if let Step::Send(event) = step {
            head.push_str(&event);
        }
    }
    let Step::Send(event) = answer.chunk(json!({ "content": text }), None, None) else {
        return tracker.finish(StatusCode::INTERNAL_SERVER_ERROR.into_response());
    };
    let chunk = Bytes::from(event.repeat(FLOOD_EVENTS_PER_CHUNK));
    sse_body(endless_body(Bytes::from(head), chunk, tracker))
}

/// `fake-longline` (stream mode).
fn long_line(tracker: Tracker) -> Response {
    let chunk = Bytes::from("x".repeat(LONG_LINE_CHUNK_BYTES));
    sse_body(endless_body(Bytes::from(LONG_LINE_START), chunk, tracker))
}

/// `fake-redirect-<port>`.
fn redirect(port: u32) -> Response {
    let location = format!("http://127.0.0.1:{port}/v1/chat/completions?api_key={REDIRECT_SECRET}");
    let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// `fake-bigheaders-<kib>`: `kib` headers of 1 KiB each (name and value).
fn pad_headers(headers: &mut HeaderMap, kib: u32) {
    let Ok(value) = HeaderValue::from_str(&"p".repeat(1000)) else {
        return;
    };
    for i in 0..kib {
        if let Ok(name) = header::HeaderName::try_from(format!("x-fake-pad-{i:010}")) {
            headers.insert(name, value.clone());
        }
    }
}

/// `fake-echo-auth`.
fn echo_auth(headers: &HeaderMap, uri: &Uri) -> Response {
    let sent = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("nothing");
    let message = format!("Incorrect API key provided: {sent} (request {uri})");
    error_response(
        StatusCode::UNAUTHORIZED,
        &message,
        "invalid_request_error",
        Some("invalid_api_key"),
    )
}

/// `fake-reset` (and `fake-resetmid-<n>` without streaming).
fn reset_now(reset: &ResetHandle, tracker: Tracker) -> Response {
    // The response below is never written: the connection fails and closes with RST.
    reset.trigger();
    tracker.finish(StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

// ---------------------------------------------------------------------------------------------
// Fixtures: what the providers' documentation says they send
// ---------------------------------------------------------------------------------------------

/// `fake-fixture-<provider>-<stem>[~<ms>]`: the fixture `<provider>/<stem>` replayed byte for
/// byte — `stream_*` as a 200 `text/event-stream` from `<stem>.sse`, `error_<status>_*` as a
/// JSON body from `<stem>.json` with the status its name carries (see the fixtures' README).
/// With `~<ms>`, a stream thinks before it speaks: `<ms>` of silence before each comment line
/// and before the first data event; the rest follows at once.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fixture {
    provider: String,
    stem: String,
    pause: Duration,
}

impl Fixture {
    fn parse(model: &str) -> Option<Fixture> {
        let spec = model.strip_prefix("fake-fixture-")?;
        let (spec, pause) = match spec.split_once('~') {
            Some((spec, ms)) => (spec, Duration::from_millis(number(ms)?)),
            None => (spec, Duration::ZERO),
        };
        let (provider, stem) = spec.split_once('-')?;
        let plain = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
                && !s.contains("..")
        };
        if !plain(provider) || !plain(stem) {
            return None;
        }
        Some(Fixture {
            provider: provider.to_owned(),
            stem: stem.to_owned(),
            pause,
        })
    }

    /// The HTTP status of an `error_<status>_…` fixture; None for a stream.
    fn status(&self) -> Option<StatusCode> {
        let rest = self.stem.strip_prefix("error_")?;
        let digits = rest.split('_').next()?;
        StatusCode::from_u16(number(digits)?).ok()
    }

    async fn replay(&self, dir: &std::path::Path, tracker: Tracker) -> Response {
        let status = self.status();
        let file = dir.join(&self.provider).join(format!(
            "{}.{}",
            self.stem,
            if status.is_some() { "json" } else { "sse" }
        ));
        let bytes = match tokio::fs::read(&file).await {
            Ok(bytes) => bytes,
            Err(e) => {
                let message = format!("no fixture {}: {e}", file.display());
                return tracker.finish(error_response(
                    StatusCode::NOT_FOUND,
                    &message,
                    "invalid_request_error",
                    Some("model_not_found"),
                ));
            }
        };
        if let Some(status) = status {
            let json = [(header::CONTENT_TYPE, "application/json")];
            return tracker.finish((status, json, bytes).into_response());
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        sse_response(self.steps(&text), tracker)
    }

    /// The stream as it is written, one step per event (its blank line included).
    fn steps(&self, text: &str) -> VecDeque<Step> {
        let mut steps = VecDeque::new();
        let mut spoke = false;
        for event in text.split_inclusive("\n\n") {
            let comment = event.starts_with(':');
            if !self.pause.is_zero() && (comment || !spoke) {
                steps.push_back(Step::Wait(self.pause));
            }
            spoke |= !comment;
            steps.push_back(Step::Send(event.to_owned()));
        }
        steps
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

struct App {
    stats: Arc<Stats>,
    files: files::Files,
    require_key: Option<String>,
    fixtures: std::path::PathBuf,
}

impl App {
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(key) = &self.require_key else {
            return true;
        };
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| given == key)
    }
}

async fn chat_completions(
    State(app): State<Arc<App>>,
    ConnectInfo(reset): ConnectInfo<ResetHandle>,
    version: axum::http::Version,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut tracker = app.stats.start(version, &reset);
    // A JSON object in UTF-8 (nearly every body) is read straight into the request; the whole
    // body as a `Value` is wanted by documented models, and a body that is not read that way
    // takes the `Value` path, whose errors and recording are the ones this fake always had.
    let fast = std::str::from_utf8(&body)
        .ok()
        .filter(|text| text.trim_start().starts_with('{'))
        .and_then(|text| serde_json::from_str::<ChatRequest>(text).ok())
        .filter(|req| documented::find(&req.model).is_none());
    let (req, parsed) = match fast {
        Some(req) => (Ok(req), None),
        None => {
            let parsed = serde_json::from_slice::<Value>(&body);
            let req = parsed
                .as_ref()
                .map_err(ToString::to_string)
                .and_then(|body| ChatRequest::deserialize(body).map_err(|e| e.to_string()));
            (req, Some(parsed))
        }
    };
    let model = match (&req, &parsed) {
        (Ok(req), None) => Some(req.model.clone()),
        (_, Some(Ok(body))) => body.get("model").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };
    if let Some(model) = model {
        // Recorded even when the key is refused, so tests can see what the client sent.
        let authorization = headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or("(not text)"));
        app.stats.record_request(&model, body, authorization);
    }
    if !app.authorized(&headers) {
        return tracker.finish(invalid_api_key());
    }
    let req = match req {
        Ok(req) => req,
        Err(e) => {
            let message = format!("invalid request body: {e}");
            let response = error_response(
                StatusCode::BAD_REQUEST,
                &message,
                "invalid_request_error",
                None,
            );
            return tracker.finish(response);
        }
    };
    tracker.set_model(&req.model);
    if let Some(fixture) = Fixture::parse(&req.model) {
        return fixture.replay(&app.fixtures, tracker).await;
    }
    if let (Some(model), Some(Ok(body))) = (documented::find(&req.model), &parsed) {
        return documented::answer(model, body, &req, &reset, tracker).await;
    }
    let script = Script::parse(&req.model);
    if script == Script::EchoAuth {
        return tracker.finish(echo_auth(&headers, &uri));
    }
    run_script(&app, &reset, script, &req, tracker).await
}

async fn run_script(
    app: &App,
    reset: &ResetHandle,
    script: Script,
    req: &ChatRequest,
    tracker: Tracker,
) -> Response {
    let stream = req.stream.unwrap_or(false);
    match script {
        Script::Unknown => tracker.finish(model_not_found(&req.model)),
        Script::Unauthorized => tracker.finish(invalid_api_key()),
        Script::ServerError => tracker.finish(error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal server error",
            "server_error",
            None,
        )),
        Script::RateLimited { limit, retry_after } if app.stats.take_failure(&req.model, limit) => {
            tracker.finish(rate_limited(retry_after))
        }
        Script::ServerErrorFirst(limit) if app.stats.take_failure(&req.model, limit) => {
            tracker.finish(overloaded())
        }
        Script::Unavailable => tracker.finish(unavailable()),
        Script::Reset => reset_now(reset, tracker),
        Script::ResetMid(_) if !stream => reset_now(reset, tracker),
        Script::Garbage => garbage(stream, tracker),
        Script::Truncated => truncated(req, stream, tracker),
        Script::NoChoices => no_choices(stream, tracker),
        Script::Freeze => {
            reset.freeze();
            let _tracker = tracker;
            std::future::pending().await
        }
        Script::Hang | Script::Stall(_) if !stream => {
            // Keep the handler pending; the tracker counts an abort if hyper drops us.
            let _tracker = tracker;
            std::future::pending().await
        }
        Script::Hang => sse_response(VecDeque::from([Step::Silence]), tracker),
        Script::KimiSearch | Script::KimiSearchLoop => {
            kimi_search(script, req, stream, tracker).await
        }
        Script::GlmSearch => glm_search(req, stream, tracker),
        Script::Flood => flood(req, stream, tracker),
        Script::FloodJson => flood(req, false, tracker),
        Script::LongLine if stream => long_line(tracker),
        Script::LongLine => flood(req, false, tracker),
        Script::Redirect(port) => tracker.finish(redirect(port)),
        Script::BigHeaders(kib) => {
            let mut response = answer(Script::Fast, req, reset, stream, tracker).await;
            pad_headers(response.headers_mut(), kib);
            response
        }
        Script::Json => answer(Script::Fast, req, reset, false, tracker).await,
        _ => answer(script, req, reset, stream, tracker).await,
    }
}

/// Scripts that produce a real answer: fast, delay, stream, stall, reasoning, 429/500 (after
/// k), reset mid-stream, no usage, keep-alive comments, slow start.
async fn answer(
    script: Script,
    req: &ChatRequest,
    reset: &ResetHandle,
    stream: bool,
    tracker: Tracker,
) -> Response {
    let echo = echo_text(req);
    let mut answer = Answer::new(req);
    answer.content = split_text(&echo, 3);
    match script {
        Script::Delay(pause) => tokio::time::sleep(pause).await,
        Script::Stream { chunks, every } => {
            answer.content = token_chunks(chunks, &echo);
            if stream {
                answer.gap = every;
            } else {
                tokio::time::sleep(every.saturating_mul(chunks)).await;
            }
        }
        Script::Stall(chunks) => {
            answer.content = tokens(chunks);
            answer.ending = Ending::Stall;
        }
        Script::ResetMid(chunks) => {
            answer.content = tokens(chunks);
            answer.ending = Ending::Reset(reset.clone());
        }
        Script::Usage {
            tokens_in,
            tokens_out,
            cached,
        } => answer.scripted_usage = Some((tokens_in, tokens_out, cached)),
        Script::NoUsage(chunks) | Script::Comments(chunks) => {
            answer.content = token_chunks(chunks, &echo);
            answer.with_usage = !matches!(script, Script::NoUsage(_));
        }
        Script::SlowStart { wait, chunks } => {
            answer.content = token_chunks(chunks, &echo);
            if stream {
                answer.first_gap = wait;
            } else {
                tokio::time::sleep(wait).await;
            }
        }
        Script::ThinkStream { chunks, every } => {
            answer.reasoning = (0..chunks).map(|i| format!("thought{i} ")).collect();
            answer.content = token_chunks(chunks, &echo);
            if stream {
                answer.gap = every;
            } else {
                tokio::time::sleep(every.saturating_mul(chunks.saturating_mul(2))).await;
            }
        }
        Script::Reasoning => answer.reasoning = owned(REASONING_STEPS),
        Script::GlmThinking => answer.reasoning = owned(GLM_THINKING_STEPS),
        _ => {}
    }
    if stream {
        let steps = answer.stream_steps();
        let steps = match script {
            Script::Comments(_) => with_keep_alives(steps),
            _ => steps,
        };
        sse_response(steps, tracker)
    } else {
        tracker.finish(Json(answer.completion()).into_response())
    }
}

/// The arguments of the `n`th `$web_search` call, in the three pieces they are streamed in.
fn search_arguments(n: usize) -> Vec<String> {
    vec![
        "{\"search_result\":{\"search_id\":".to_owned(),
        format!("\"fake-search-{n}\"}},"),
        "\"usage\":{\"total_tokens\":42}}".to_owned(),
    ]
}

/// Checks the `$web_search` round trips in `req`: each assistant tool call came back verbatim
/// (with `reasoning_content` while thinking is on), followed by its tool message echoing the
/// arguments. Returns how many there were.
fn checked_searches(req: &ChatRequest) -> Result<usize, String> {
    let mut done = 0;
    let mut messages = req.messages.iter().enumerate().peekable();
    while let Some((index, message)) = messages.next() {
        match message.role.as_str() {
            "assistant" if message.tool_calls.is_some() => {
                let n = done + 1;
                let id = format!("call_search_{n}");
                let arguments = search_arguments(n).concat();
                let expected = json!([{
                    "id": id,
                    "type": "builtin_function",
                    "function": { "name": KIMI_SEARCH, "arguments": arguments },
                }]);
                if message.tool_calls.as_ref() != Some(&expected) {
                    return Err(format!(
                        "assistant message {n} should carry tool_calls {expected}, not {}",
                        message.tool_calls.clone().unwrap_or_default()
                    ));
                }
                // Kimi's documented refusal: it checks that the reasoning is there, not what it says.
                if !req.thinking_disabled() && message.reasoning_content.is_none() {
                    return Err(format!(
                        "thinking is enabled but reasoning_content is missing in assistant tool \
                         call message at index {index}"
                    ));
                }
                let answered = messages.next().is_some_and(|(_, tool)| {
                    tool.role == "tool"
                        && tool.tool_call_id.as_deref() == Some(id.as_str())
                        && tool.name.as_deref() == Some(KIMI_SEARCH)
                        && tool.content.as_str() == Some(arguments.as_str())
                });
                if !answered {
                    return Err(format!(
                        "tool call {id} must be followed by a tool message with its id, the name \
                         {KIMI_SEARCH} and the arguments verbatim as content"
                    ));
                }
                done = n;
            }
            "tool" => return Err("a tool message without its assistant tool call".to_owned()),
            _ => {}
        }
    }
    Ok(done)
}

fn offers_tool(req: &ChatRequest, wanted: impl Fn(&Value) -> bool) -> bool {
    req.tools.iter().any(wanted)
}

/// `fake-kimi-search` and `fake-kimi-search-loop`.
async fn kimi_search(
    script: Script,
    req: &ChatRequest,
    stream: bool,
    tracker: Tracker,
) -> Response {
    let builtin =
        |t: &Value| t["type"] == "builtin_function" && t["function"]["name"] == KIMI_SEARCH;
    if !offers_tool(req, builtin) {
        return tracker.finish(bad("the $web_search builtin_function is not in tools"));
    }
    let searches = match checked_searches(req) {
        Ok(n) => n,
        Err(why) => return tracker.finish(bad(&why)),
    };
    let mut answer = Answer::new(req);
    let thinks = !req.thinking_disabled();
    if searches == 0 || script == Script::KimiSearchLoop {
        let n = searches + 1;
        if thinks {
            answer.reasoning = vec![KIMI_SEARCH_REASONING.to_owned()];
        }
        answer.tool_call = Some((
            format!("call_search_{n}"),
            KIMI_SEARCH.to_owned(),
            search_arguments(n),
        ));
    } else {
        // The platform searches before the model goes on.
        if stream {
            answer.first_gap = SEARCH_PAUSE;
        } else {
            tokio::time::sleep(SEARCH_PAUSE).await;
        }
        if thinks {
            answer.reasoning = vec![KIMI_FOUND_REASONING.to_owned()];
        }
        let text = format!("{} (web searches: {searches})", echo_text(req));
        answer.content = split_text(&text, 3);
    }
    if stream {
        sse_response(answer.stream_steps(), tracker)
    } else {
        tracker.finish(Json(answer.completion()).into_response())
    }
}

/// What `fake-glm-search` says its search found.
fn glm_search_results() -> Value {
    json!([
        {
            "title": "Fake result one",
            "link": "https://example.com/one",
            "content": "The first thing the search found.",
            "media": "Example",
            "icon": "",
            "refer": "ref_1",
            "publish_date": "2026-01-01",
        },
        {
            "title": "Fake result two",
            "link": "https://example.org/two",
            "content": "The second thing the search found.",
            "media": "Example Org",
            "icon": "",
            "refer": "ref_2",
            "publish_date": "2026-01-02",
        },
    ])
}

/// `fake-glm-search`.
fn glm_search(req: &ChatRequest, stream: bool, tracker: Tracker) -> Response {
    let enabled = |t: &Value| t["type"] == "web_search" && t["web_search"]["enable"] == true;
    if !offers_tool(req, enabled) {
        return tracker.finish(bad(
            "web_search tool requires web_search object with enable: true",
        ));
    }
    if req.tool_choice.as_ref().is_some_and(|c| c != "auto") {
        return tracker.finish(bad("tool_choice only supports auto"));
    }
    let mut answer = Answer::new(req);
    answer.web_search = Some(glm_search_results());
    answer.content = split_text(&format!("{} [ref_1]", echo_text(req)), 3);
    if stream {
        sse_response(answer.stream_steps(), tracker)
    } else {
        tracker.finish(Json(answer.completion()).into_response())
    }
}

fn owned(texts: &[&str]) -> Vec<String> {
    texts.iter().map(ToString::to_string).collect()
}

async fn models(headers: HeaderMap) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match KeyScript::parse(authorization) {
        KeyScript::Unauthorized => return invalid_api_key(),
        KeyScript::Hang => std::future::pending::<()>().await,
        KeyScript::List => {}
    }
    let data: Vec<Value> = EXAMPLE_MODELS
        .iter()
        .map(|id| json!({ "id": id, "object": "model", "owned_by": "fake" }))
        .chain(documented::listed())
        .collect();
    Json(json!({ "object": "list", "data": data })).into_response()
}

async fn stats(State(app): State<Arc<App>>) -> Json<Value> {
    let mut snapshot = app.stats.snapshot();
    snapshot["files"] = app.files.snapshot();
    Json(snapshot)
}

#[derive(Deserialize)]
struct LastRequestQuery {
    model: Option<String>,
}

async fn last_request(
    State(app): State<Arc<App>>,
    Query(query): Query<LastRequestQuery>,
) -> Response {
    let Some(model) = query.model else {
        let message = "missing query parameter 'model'";
        return error_response(
            StatusCode::BAD_REQUEST,
            message,
            "invalid_request_error",
            None,
        );
    };
    match app.stats.last_request(&model) {
        Some(body) => Json(body).into_response(),
        None => error_response(
            StatusCode::NOT_FOUND,
            &format!("no request received for model '{model}'"),
            "invalid_request_error",
            Some("no_request"),
        ),
    }
}

async fn reset_stats(State(app): State<Arc<App>>) -> StatusCode {
    app.stats.reset();
    app.files.reset();
    StatusCode::NO_CONTENT
}

fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .route("/models", get(models))
        .route("/chat/completions", post(chat_completions))
        .route("/files", post(files::upload))
        .route("/files/{id}/content", get(files::content))
        .route("/files/{id}", axum::routing::delete(files::delete))
        .route("/files/parser/create", post(files::parser_create))
        .route(
            "/files/parser/result/{task_id}/{format_type}",
            get(files::parser_result),
        );
    Router::new()
        .nest("/v1", api.clone())
        .merge(api)
        .route("/stats", get(stats))
        .route("/last_request", get(last_request))
        .route("/reset", post(reset_stats))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(app)
}

/// A short name for an `Authorization` header's value (`Bearer <key>`) that does not reveal the
/// key: what `/last_request` records as `_auth_id`.
pub fn auth_id(authorization: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    authorization.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// What the server is told at start.
#[derive(Debug, Clone)]
pub struct Options {
    /// Require `Authorization: Bearer <key>` on chat-completion requests.
    pub require_key: Option<String>,
    /// Where `fake-fixture-*` models find the provider fixtures.
    pub fixtures: PathBuf,
    /// Serve TLS too (with the test CA's certificate, [`TEST_CA_PEM`]), offering these protocols.
    pub tls: Option<Tls>,
    /// The worker threads of the fake's runtime ([`start`]); `None` (or 0): one per core,
    /// tokio's default.
    pub worker_threads: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            require_key: None,
            fixtures: PathBuf::from(FIXTURES),
            tls: None,
            worker_threads: None,
        }
    }
}

/// Serves on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let app = Arc::new(App {
        stats: Arc::default(),
        files: files::Files::default(),
        require_key: options.require_key,
        fixtures: options.fixtures,
    });
    let tls = options.tls.map(tls_acceptor).transpose()?;
    let service = router(app).into_make_service_with_connect_info::<ResetHandle>();
    let server = axum::serve(ResettableListener { tcp: listener, tls }, service);
    // No graceful shutdown: hanging/stalled connections would never drain.
    tokio::select! {
        result = server.into_future() => result,
        () = shutdown => Ok(()),
    }
}

/// A fake provider running in this process on its own thread and runtime (so a test's runtime,
/// however busy or paused, cannot starve it). Dropping it stops the server and drops every open
/// connection, as killing the process did.
pub struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// The address it listens on (127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, as the binary's `LISTENING` line says it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts a fake provider on a free loopback port, in-process (see [`Running`]).
pub fn start(options: Options) -> std::io::Result<Running> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = options.worker_threads.filter(|&threads| threads > 0) {
        runtime.worker_threads(threads);
    }
    let runtime = runtime.enable_all().thread_name("fake-provider").build()?;
    // Bound here so the address is known on return; no `block_on`, which would panic when
    // called from a test's runtime.
    let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("fake-provider".to_owned())
        .spawn(move || {
            let stopped = async {
                let _ = stopped.await;
            };
            let _ = runtime.block_on(async move {
                serve(TcpListener::from_std(listener)?, options, stopped).await
            });
            // Hanging and stalled answers never end: drop their tasks instead of waiting.
            runtime.shutdown_background();
        })?;
    Ok(Running {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer to a model whose name JSON must escape.
    fn odd_answer() -> Answer {
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "fake-\"odd\"\\model é",
            "messages": [{"role": "user", "content": "hi"}],
        }))
        .unwrap();
        Answer::new(&req)
    }

    /// The event `answer.chunk_json` prints for `delta`: what its chunks must be, byte for byte.
    fn printed(
        answer: &Answer,
        delta: Value,
        finish_reason: Option<&str>,
        usage: Option<Value>,
    ) -> String {
        format!(
            "data: {}\n\n",
            answer.chunk_json(delta, finish_reason, usage)
        )
    }

    /// The events `answer` streams, which without pauses are all sent.
    fn sent(answer: &Answer) -> Vec<String> {
        answer
            .stream_steps()
            .into_iter()
            .map(|step| match step {
                Step::Send(text) => text,
                _ => panic!("every step of an answer without pauses is sent"),
            })
            .collect()
    }

    #[test]
    fn a_chunk_written_straight_out_is_the_chunk_printed_from_its_map() {
        let answer = odd_answer();
        let cases = [
            (json!({ "role": "assistant" }), None, None),
            (json!({ "content": "a \"quoted\"\n line" }), None, None),
            (json!({}), Some("stop"), Some(answer.usage())),
            (json!({}), Some("tool_calls"), None),
        ];
        for (delta, finish_reason, usage) in cases {
            let printed = printed(&answer, delta.clone(), finish_reason, usage.clone());
            let Step::Send(written) = answer.chunk(delta, finish_reason, usage) else {
                panic!("a chunk is sent");
            };
            assert_eq!(written, printed);
        }
    }

    #[test]
    fn a_streamed_answer_written_straight_out_is_the_chunks_printed_from_their_maps() {
        let mut answer = odd_answer();
        answer.reasoning = vec!["a \"thought\"\n".into()];
        answer.content = vec!["tab\there ".into(), "é \\ done".into()];
        let expected = [
            printed(&answer, json!({ "role": "assistant" }), None, None),
            printed(
                &answer,
                json!({ "reasoning_content": "a \"thought\"\n" }),
                None,
                None,
            ),
            printed(&answer, json!({ "content": "tab\there " }), None, None),
            printed(&answer, json!({ "content": "é \\ done" }), None, None),
            printed(&answer, json!({}), Some("stop"), Some(answer.usage())),
            "data: [DONE]\n\n".to_owned(),
        ];
        assert_eq!(sent(&answer), expected);
    }

    #[test]
    fn a_streamed_tool_call_written_straight_out_is_the_chunks_printed_from_their_maps() {
        let mut answer = odd_answer();
        answer.content = Vec::new();
        answer.tool_call = Some((
            "call_1".into(),
            "search".into(),
            vec!["{\"q\":".into(), "1}".into()],
        ));
        let fragment = |piece: &str| json!({ "tool_calls": [{ "index": 0, "function": { "arguments": piece } }] });
        let expected = [
            printed(&answer, json!({ "role": "assistant" }), None, None),
            printed(
                &answer,
                json!({ "tool_calls": [{
                    "index": 0,
                    "id": "call_1",
                    "type": "builtin_function",
                    "function": { "name": "search", "arguments": "" },
                }] }),
                None,
                None,
            ),
            printed(&answer, fragment("{\"q\":"), None, None),
            printed(&answer, fragment("1}"), None, None),
            printed(&answer, json!({}), Some("tool_calls"), Some(answer.usage())),
            "data: [DONE]\n\n".to_owned(),
        ];
        assert_eq!(sent(&answer), expected);
    }

    #[test]
    fn words_are_counted_as_split_whitespace_counts_them() {
        for text in [
            "",
            "one",
            "  two  words ",
            "tabs\tand\nlines\r\nand\x0Bvertical\x0Cfeeds",
            "\x0B",
            // ASCII controls `char::is_whitespace` does not count as space.
            "a\x1Cb\x1D\x1E\x1F\x7Fc",
            "é and non-ASCII\u{a0}spaces\u{3000}too",
        ] {
            assert_eq!(
                word_count(text),
                text.split_whitespace().count() as u64,
                "{text:?}"
            );
        }
    }

    #[test]
    fn fixture_names_say_the_file_the_status_and_the_pause() {
        let stream = Fixture::parse("fake-fixture-openrouter-stream_reasoning_summary").unwrap();
        assert_eq!(
            (
                stream.provider.as_str(),
                stream.stem.as_str(),
                stream.status()
            ),
            ("openrouter", "stream_reasoning_summary", None)
        );
        let error = Fixture::parse("fake-fixture-glm-error_429_1113").unwrap();
        assert_eq!(error.status(), Some(StatusCode::TOO_MANY_REQUESTS));
        let paced = Fixture::parse("fake-fixture-kimi-stream_finish_length~250").unwrap();
        assert_eq!(paced.pause, Duration::from_millis(250));
        for bad in [
            "fake-fixture-glm",
            "fake-fixture-glm-../x",
            "fake-fixture-glm-a/b",
            "fake-fixture-glm-x~",
            "fake-fast",
        ] {
            assert_eq!(Fixture::parse(bad), None, "{bad}");
        }
        let steps = paced.steps(": c\n\ndata: 1\n\n: c\n\ndata: 2\n\n");
        let waits = steps.iter().filter(|s| matches!(s, Step::Wait(_))).count();
        assert_eq!(waits, 3, "before each comment and the first data event");
    }

    #[test]
    fn keep_alives_split_events_with_crlf() {
        let steps = VecDeque::from([
            Step::Send("data: {\"a\":\"é\"}\n\n".to_owned()),
            Step::Silence,
        ]);
        let steps: Vec<Step> = with_keep_alives(steps).into();
        let sent: Vec<&str> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Send(text) => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[0], KEEP_ALIVE);
        assert_eq!(sent[1..].concat(), "data: {\"a\":\"é\"}\r\n\r\n");
        assert!(matches!(steps[2], Step::Wait(_)));
        assert!(matches!(steps[4], Step::Silence));
    }

    #[test]
    fn peak_in_flight_and_per_model() {
        let stats = Arc::new(Stats::default());
        let connection = ResetHandle::default();
        let mut a = stats.start(axum::http::Version::HTTP_11, &connection);
        a.set_model("m");
        let b = stats.start(axum::http::Version::HTTP_11, &connection);
        let snapshot = stats.snapshot();
        assert_eq!(snapshot["max_in_flight"], 2);
        assert_eq!(snapshot["in_flight_by_model"], json!({ "m": 1 }));
        drop(b);
        stats.reset();
        assert_eq!(stats.snapshot()["max_in_flight"], 1);
        assert_eq!(stats.snapshot()["in_flight_by_model"], json!({ "m": 1 }));
        a.complete();
        let snapshot = stats.snapshot();
        assert_eq!(snapshot["in_flight_by_model"], json!({}));
        assert_eq!(snapshot["max_in_flight"], 1);
        stats.reset();
        assert_eq!(stats.snapshot()["max_in_flight"], 0);
    }
}
