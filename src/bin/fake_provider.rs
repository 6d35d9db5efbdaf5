//! `exai-fake-provider`: an OpenAI-compatible fake LLM server for tests and benchmarks.
//!
//! The behaviour of each chat-completion request is scripted by its model name
//! (`fake-fast`, `fake-delay-<ms>`, `fake-stream-<n>x<ms>`, `fake-hang`, `fake-stall-<n>`,
//! `fake-429-<k>`, `fake-500`, `fake-401`, `fake-garbage`, `fake-reset`, `fake-reasoning`).
//! The answer text is always `echo: <last user message>`, so concurrent callers can check that
//! they got their own answer. `GET /stats` reports how many requests completed or were aborted
//! by the client, and `POST /reset` zeroes those counters.
//!
//! On start the server prints exactly one line, `LISTENING http://<addr>`, to stdout.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::{IncomingStream, Listener};
use axum::{Json, Router};
use clap::Parser;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Model names advertised by `GET /v1/models` (examples of every script).
const EXAMPLE_MODELS: &[&str] = &[
    "fake-fast",
    "fake-delay-1000",
    "fake-stream-5x100",
    "fake-hang",
    "fake-stall-2",
    "fake-429-2",
    "fake-500",
    "fake-401",
    "fake-garbage",
    "fake-reset",
    "fake-reasoning",
];

/// Reasoning chunks streamed by `fake-reasoning` before the answer.
const REASONING_STEPS: &[&str] = &[
    "thinking step 1\n",
    "thinking step 2\n",
    "thinking step 3\n",
];

#[derive(Parser, Debug)]
#[command(
    name = "exai-fake-provider",
    about = "OpenAI-compatible fake LLM server, scripted by model name"
)]
struct Cli {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Require `Authorization: Bearer <KEY>` on chat-completion requests.
    #[arg(long, value_name = "KEY")]
    require_key: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Scripts
// ---------------------------------------------------------------------------------------------

/// What the server does for a request, decided by the model name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Script {
    /// `fake-fast`: answer at once.
    Fast,
    /// `fake-delay-<ms>`: wait, then answer (nothing is sent before the wait ends).
    Delay(Duration),
    /// `fake-stream-<n>x<ms>`: `chunks` content chunks, one every `every`.
    Stream { chunks: u32, every: Duration },
    /// `fake-hang`: never answer.
    Hang,
    /// `fake-stall-<n>`: stream `n` content chunks, then nothing more.
    Stall(u32),
    /// `fake-429-<k>`: the first `k` requests get 429, later ones answer like `Fast`.
    RateLimited(u32),
    /// `fake-500`.
    ServerError,
    /// `fake-401`.
    Unauthorized,
    /// `fake-garbage`: 200 with a body that is not JSON.
    Garbage,
    /// `fake-reset`: drop the TCP connection (RST) without any response.
    Reset,
    /// `fake-reasoning`: reasoning content, then the answer.
    Reasoning,
    /// Anything else: 404 model not found.
    Unknown,
}

impl Script {
    fn parse(model: &str) -> Script {
        match model {
            "fake-fast" => return Script::Fast,
            "fake-hang" => return Script::Hang,
            "fake-500" => return Script::ServerError,
            "fake-401" => return Script::Unauthorized,
            "fake-garbage" => return Script::Garbage,
            "fake-reset" => return Script::Reset,
            "fake-reasoning" => return Script::Reasoning,
            _ => {}
        }
        Self::parse_parameterized(model).unwrap_or(Script::Unknown)
    }

    fn parse_parameterized(model: &str) -> Option<Script> {
        if let Some(ms) = model.strip_prefix("fake-delay-") {
            return Some(Script::Delay(Duration::from_millis(number(ms)?)));
        }
        if let Some(spec) = model.strip_prefix("fake-stream-") {
            let (n, ms) = spec.split_once('x')?;
            return Some(Script::Stream {
                chunks: number(n)?,
                every: Duration::from_millis(number(ms)?),
            });
        }
        if let Some(n) = model.strip_prefix("fake-stall-") {
            return Some(Script::Stall(number(n)?));
        }
        if let Some(k) = model.strip_prefix("fake-429-") {
            return Some(Script::RateLimited(number(k)?));
        }
        None
    }
}

/// Strict decimal parse: digits only (no sign, no spaces).
fn number<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

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
    by_model: BTreeMap<String, u64>,
    /// Requests seen per `fake-429-<k>` model name.
    rate_limited: HashMap<String, u32>,
}

#[derive(Default)]
struct Stats(Mutex<Counters>);

impl Stats {
    fn lock(&self) -> MutexGuard<'_, Counters> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a new chat-completion request and returns its tracker.
    fn start(self: &Arc<Self>) -> Tracker {
        let mut c = self.lock();
        c.requests += 1;
        c.in_flight += 1;
        Tracker {
            stats: Arc::clone(self),
            epoch: c.epoch,
            done: false,
        }
    }

    fn count_model(&self, model: &str) {
        *self.lock().by_model.entry(model.to_owned()).or_default() += 1;
    }

    /// True while the request should still be rate limited (first `limit` requests).
    fn take_rate_limit(&self, model: &str, limit: u32) -> bool {
        let mut c = self.lock();
        let seen = c.rate_limited.entry(model.to_owned()).or_default();
        *seen += 1;
        *seen <= limit
    }

    fn finish(&self, epoch: u64, completed: bool) {
        let mut c = self.lock();
        c.in_flight = c.in_flight.saturating_sub(1);
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
        let in_flight = c.in_flight;
        *c = Counters {
            epoch: c.epoch + 1,
            in_flight,
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
            "by_model": c.by_model,
        })
    }
}

/// Lives as long as a request is being answered (handler future, then response body stream).
/// Dropped without [`Tracker::complete`] means the client went away: counted as aborted.
struct Tracker {
    stats: Arc<Stats>,
    epoch: u64,
    done: bool,
}

impl Tracker {
    fn complete(&mut self) {
        if !self.done {
            self.done = true;
            self.stats.finish(self.epoch, true);
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
            self.stats.finish(self.epoch, false);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connections that can be reset (for `fake-reset`)
// ---------------------------------------------------------------------------------------------

/// Per-connection handle given to handlers (as `ConnectInfo`) to reset their connection.
#[derive(Clone, Default)]
struct ResetHandle(Arc<AtomicBool>);

impl ResetHandle {
    fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn is_triggered(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// TCP listener whose connections fail all I/O (and close with RST) once their
/// [`ResetHandle`] is triggered.
struct ResettableListener(TcpListener);

impl Listener for ResettableListener {
    type Io = ResettableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let io = ResettableStream {
                        inner: stream,
                        reset: ResetHandle::default(),
                    };
                    return (io, addr);
                }
                // Typically EMFILE under load: back off a little and retry.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

impl Connected<IncomingStream<'_, ResettableListener>> for ResetHandle {
    fn connect_info(stream: IncomingStream<'_, ResettableListener>) -> Self {
        stream.io().reset.clone()
    }
}

struct ResettableStream {
    inner: TcpStream,
    reset: ResetHandle,
}

impl ResettableStream {
    /// Once reset: arrange for an RST on close and fail the I/O so hyper drops the socket.
    fn check_reset(&self) -> std::io::Result<()> {
        if !self.reset.is_triggered() {
            return Ok(());
        }
        let _ = self.inner.set_zero_linger();
        Err(std::io::ErrorKind::ConnectionReset.into())
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.check_reset()?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.check_reset()?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.check_reset()?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.check_reset()?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
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
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    role: String,
    #[serde(default)]
    content: Value,
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

fn word_count(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

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
    /// Stream mode: after the content chunks, stay silent forever instead of finishing.
    stall: bool,
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
            stall: false,
        }
    }

    fn usage(&self) -> Value {
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
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "message": message, "finish_reason": "stop" }],
            "usage": self.usage(),
        })
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>, usage: Option<Value>) -> Step {
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
        Step::Send(format!("data: {chunk}\n\n"))
    }

    fn stream_steps(&self) -> VecDeque<Step> {
        let mut steps = VecDeque::from([self.chunk(json!({ "role": "assistant" }), None, None)]);
        for r in &self.reasoning {
            steps.push_back(self.chunk(json!({ "reasoning_content": r }), None, None));
        }
        for c in &self.content {
            if !self.gap.is_zero() {
                steps.push_back(Step::Wait(self.gap));
            }
            steps.push_back(self.chunk(json!({ "content": c }), None, None));
        }
        if self.stall {
            steps.push_back(Step::Silence);
        } else {
            steps.push_back(self.chunk(json!({}), Some("stop"), Some(self.usage())));
            steps.push_back(Step::Send("data: [DONE]\n\n".to_owned()));
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
    format!("echo: {last_user}")
}

/// Splits `text` into `parts` pieces of about the same number of characters.
fn split_text(text: &str, parts: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let size = chars.len().div_ceil(parts.max(1)).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// `tok0 `, `tok1 `, ... then the echo text as the last of `n` chunks.
fn token_chunks(n: u32, echo: &str) -> Vec<String> {
    let mut chunks: Vec<String> = (0..n.saturating_sub(1))
        .map(|i| format!("tok{i} "))
        .collect();
    chunks.push(echo.to_owned());
    chunks
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

fn error_response(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response {
    let mut error = json!({ "message": message, "type": kind });
    if let Some(code) = code {
        error["code"] = json!(code);
    }
    (status, Json(json!({ "error": error }))).into_response()
}

fn rate_limited() -> Response {
    let mut response = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        "rate limited",
        "rate_limit_error",
        None,
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("0"));
    response
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
        match state.steps.pop_front()? {
            Step::Wait(pause) => tokio::time::sleep(pause).await,
            Step::Send(text) => {
                if state.steps.is_empty() {
                    state.tracker.complete();
                }
                return Some((Ok(Bytes::from(text)), state));
            }
            Step::Silence => std::future::pending::<()>().await,
        }
    }
}

fn sse_response(steps: VecDeque<Step>, tracker: Tracker) -> Response {
    let body = futures::stream::unfold(StreamState { steps, tracker }, next_sse_chunk);
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
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

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

struct App {
    stats: Arc<Stats>,
    require_key: Option<String>,
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
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tracker = app.stats.start();
    if !app.authorized(&headers) {
        return tracker.finish(invalid_api_key());
    }
    let req: ChatRequest = match serde_json::from_slice(&body) {
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
    app.stats.count_model(&req.model);
    run_script(&app, &reset, Script::parse(&req.model), &req, tracker).await
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
        Script::RateLimited(limit) if app.stats.take_rate_limit(&req.model, limit) => {
            tracker.finish(rate_limited())
        }
        Script::Reset => {
            // The response below is never written: the connection fails and closes with RST.
            reset.trigger();
            tracker.finish(StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        Script::Garbage => garbage(stream, tracker),
        Script::Hang | Script::Stall(_) if !stream => {
            // Keep the handler pending; the tracker counts an abort if hyper drops us.
            let _tracker = tracker;
            std::future::pending().await
        }
        Script::Hang => sse_response(VecDeque::from([Step::Silence]), tracker),
        _ => answer(script, req, stream, tracker).await,
    }
}

/// Scripts that produce a real answer: fast, delay, stream, stall, reasoning, 429 (after k).
async fn answer(script: Script, req: &ChatRequest, stream: bool, tracker: Tracker) -> Response {
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
            answer.content = (0..chunks).map(|i| format!("tok{i} ")).collect();
            answer.stall = true;
        }
        Script::Reasoning => {
            answer.reasoning = REASONING_STEPS.iter().map(ToString::to_string).collect();
        }
        _ => {}
    }
    if stream {
        sse_response(answer.stream_steps(), tracker)
    } else {
        tracker.finish(Json(answer.completion()).into_response())
    }
}

async fn models() -> Json<Value> {
    let data: Vec<Value> = EXAMPLE_MODELS
        .iter()
        .map(|id| json!({ "id": id, "object": "model", "owned_by": "fake" }))
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

async fn stats(State(app): State<Arc<App>>) -> Json<Value> {
    Json(app.stats.snapshot())
}

async fn reset_stats(State(app): State<Arc<App>>) -> StatusCode {
    app.stats.reset();
    StatusCode::NO_CONTENT
}

fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .route("/models", get(models))
        .route("/chat/completions", post(chat_completions));
    Router::new()
        .nest("/v1", api.clone())
        .merge(api)
        .route("/stats", get(stats))
        .route("/reset", post(reset_stats))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(app)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let listener = TcpListener::bind(cli.listen).await?;
    let addr = listener.local_addr()?;
    let app = Arc::new(App {
        stats: Arc::default(),
        require_key: cli.require_key,
    });
    let service = router(app).into_make_service_with_connect_info::<ResetHandle>();
    let server = axum::serve(ResettableListener(listener), service);

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "LISTENING http://{addr}")?;
    stdout.flush()?;
    drop(stdout);

    // No graceful shutdown: hanging/stalled connections would never drain.
    tokio::select! {
        result = server.into_future() => result?,
        () = shutdown_signal() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fixed_names() {
        assert_eq!(Script::parse("fake-fast"), Script::Fast);
        assert_eq!(Script::parse("fake-hang"), Script::Hang);
        assert_eq!(Script::parse("fake-500"), Script::ServerError);
        assert_eq!(Script::parse("fake-401"), Script::Unauthorized);
        assert_eq!(Script::parse("fake-garbage"), Script::Garbage);
        assert_eq!(Script::parse("fake-reset"), Script::Reset);
        assert_eq!(Script::parse("fake-reasoning"), Script::Reasoning);
    }

    #[test]
    fn parses_parameterized_names() {
        assert_eq!(
            Script::parse("fake-delay-1000"),
            Script::Delay(Duration::from_millis(1000))
        );
        assert_eq!(
            Script::parse("fake-stream-5x100"),
            Script::Stream {
                chunks: 5,
                every: Duration::from_millis(100)
            }
        );
        assert_eq!(Script::parse("fake-stall-2"), Script::Stall(2));
        assert_eq!(Script::parse("fake-429-2"), Script::RateLimited(2));
        assert_eq!(Script::parse("fake-429-0"), Script::RateLimited(0));
    }

    #[test]
    fn rejects_unknown_and_malformed_names() {
        for model in [
            "",
            "gpt-4o",
            "fake-",
            "fake-fast2",
            "fake-delay-",
            "fake-delay-abc",
            "fake-delay--5",
            "fake-delay-+5",
            "fake-stream-5",
            "fake-stream-x100",
            "fake-stream-5x",
            "fake-stream-5x100x2",
            "fake-stall-",
            "fake-429-two",
            "fake-429-99999999999",
        ] {
            assert_eq!(Script::parse(model), Script::Unknown, "{model:?}");
        }
    }

    #[test]
    fn every_advertised_model_is_scripted() {
        for model in EXAMPLE_MODELS {
            assert_ne!(Script::parse(model), Script::Unknown, "{model}");
        }
    }

    #[test]
    fn token_chunks_end_with_echo() {
        assert_eq!(token_chunks(3, "echo: hi"), ["tok0 ", "tok1 ", "echo: hi"]);
        assert_eq!(token_chunks(0, "echo: hi"), ["echo: hi"]);
    }

    #[test]
    fn split_text_keeps_text() {
        let parts = split_text("echo: héllo wörld", 3);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.concat(), "echo: héllo wörld");
        assert_eq!(split_text("", 3).concat(), "");
    }
}
