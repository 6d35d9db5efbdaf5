//! The OpenAI chat-completions protocol, streamed over SSE (or, from servers that will not
//! stream, one JSON answer): the core every provider speaks — text, reasoning, tool calls, usage.

use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::retry::AttemptError;
use super::{
    CallObserver, ChatRequest, ChatResponse, ModelInfo, ProviderError, Source, ToolCall, hint_for,
    shape_body,
};
use crate::config::{EndpointConfig, ProviderKind, Secret};

/// Longest error body read from a failed request.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// Largest whole (non-streamed) answer accepted.
const MAX_ANSWER_BODY: usize = 64 * 1024 * 1024;

/// An OpenAI-compatible endpoint.
pub struct OpenAiCompatible {
    name: String,
    kind: ProviderKind,
    base_url: String,
    api_key: Option<Secret>,
    key_source: Option<String>,
    idle_timeout: Duration,
    first_token_timeout: Duration,
    http: reqwest::Client,
}

impl OpenAiCompatible {
    pub fn new(
        endpoint: &EndpointConfig,
        connect_timeout: Duration,
        idle_timeout: Duration,
        first_token_timeout: Duration,
    ) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            name: endpoint.name.clone(),
            kind: endpoint.kind,
            base_url: endpoint.base_url.clone(),
            api_key: endpoint.api_key.clone(),
            key_source: endpoint
                .key_source
                .clone()
                .filter(|_| endpoint.api_key.is_some() || endpoint.kind != ProviderKind::Custom),
            idle_timeout,
            first_token_timeout,
            http,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self
            .http
            .request(method, format!("{}{path}", self.base_url));
        match &self.api_key {
            Some(key) => builder.bearer_auth(key.expose()),
            None => builder,
        }
    }

    /// `GET /models`: the ids the endpoint serves.
    pub async fn list_models(&self) -> Result<Vec<String>, String> {
        let response = self
            .request(reqwest::Method::GET, "/models")
            .send()
            .await
            .map_err(|e| error_chain(&e))?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status().as_u16()));
        }
        let list: ModelList = response.json().await.map_err(|e| e.to_string())?;
        Ok(list.data.into_iter().map(|m| m.id).collect())
    }

    /// One attempt; `searching` says the platform searches the web before the first token.
    pub async fn attempt(
        &self,
        model: &ModelInfo,
        request: &ChatRequest,
        observer: &dyn CallObserver,
        attempt: u32,
        searching: bool,
    ) -> Result<ChatResponse, AttemptError> {
        let mut state = Stream::default();
        self.stream(model, request, observer, attempt, searching, &mut state)
            .await
            .map_err(|error| AttemptError {
                error,
                content_started: state.content_started,
            })
    }

    async fn stream(
        &self,
        model: &ModelInfo,
        request: &ChatRequest,
        observer: &dyn CallObserver,
        attempt: u32,
        searching: bool,
        state: &mut Stream,
    ) -> Result<ChatResponse, ProviderError> {
        let url = format!("{}/chat/completions", self.base_url);
        let waiting = if searching {
            format!("searching the web ({})", self.name)
        } else {
            format!("waiting for {}", self.name)
        };
        observer.stage(waiting);
        tracing::info!(provider = %self.name, model = %model.id, attempt, searching, "provider request sent");
        let started = Instant::now();
        // The body tree is dropped once serialized, not kept for the whole (long) stream.
        let send = {
            let mut body = json!({"model": model.id, "messages": request.messages, "stream": true});
            shape_body(self.kind, model, request, &mut body);
            self.request(reqwest::Method::POST, "/chat/completions")
                .json(&body)
                .send()
        };
        let response = tokio::time::timeout(self.idle_timeout, send)
            .await
            .map_err(|_| self.idle(model, "waiting for response headers", self.idle_timeout))?
            .map_err(|e| ProviderError::Connect {
                provider: self.name.clone(),
                url: url.clone(),
                detail: error_chain(&e),
            })?;
        let status = response.status();
        tracing::info!(provider = %self.name, status = status.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "provider response headers");
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(ProviderError::Status {
                provider: self.name.clone(),
                model: model.id.clone(),
                status: status.as_u16(),
                message: self.error_message(response).await,
                hint: hint_for(self.kind, self.key_source.as_deref(), status.as_u16()),
                retry_after,
            });
        }
        let mut collected = Collected::default();
        // Some servers ignore `stream: true` and send one JSON completion.
        let whole_json = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json"));
        if whole_json {
            let text = self.whole_body(model, response).await?;
            let completion: Completion =
                serde_json::from_slice(&text).map_err(|e| ProviderError::Garbage {
                    provider: self.name.clone(),
                    model: model.id.clone(),
                    detail: format!(
                        "{e} in the answer {:?}",
                        snippet(&String::from_utf8_lossy(&text))
                    ),
                })?;
            if let Some(error) = completion.error {
                return Err(self.error_in_answer(model, &error));
            }
            collected.completion(completion);
            state.time_to_first_token = Some(started.elapsed());
            // Progress only: a rough count is enough, and the tokenizer stays off the runtime.
            observer.tokens((collected.text.len() / 4).max(1) as u64, false);
        } else {
            if !searching {
                observer.stage("waiting for the first token".into());
            }
            self.read_events(model, response, observer, started, state, &mut collected)
                .await?;
        }
        self.finish(model, request, collected, state, started).await
    }

    /// Reads the SSE stream into `collected`, bounded by the first-token and idle timeouts.
    async fn read_events(
        &self,
        model: &ModelInfo,
        response: reqwest::Response,
        observer: &dyn CallObserver,
        started: Instant,
        state: &mut Stream,
        collected: &mut Collected,
    ) -> Result<(), ProviderError> {
        let mut events = response.bytes_stream().eventsource();
        loop {
            let (limit, what) = if state.content_started {
                (self.idle_timeout, "streaming the answer")
            } else {
                (
                    self.first_token_timeout.min(self.idle_timeout),
                    "waiting for the first token",
                )
            };
            let event = match tokio::time::timeout(limit, events.next()).await {
                Err(_) => return Err(self.idle(model, what, limit)),
                Ok(None) => return Ok(()),
                Ok(Some(Err(e))) => {
                    return Err(ProviderError::Truncated {
                        provider: self.name.clone(),
                        model: model.id.clone(),
                        detail: format!("{e}"),
                    });
                }
                Ok(Some(Ok(event))) => event,
            };
            let data = event.data.trim();
            if data.is_empty() {
                continue;
            }
            if data == "[DONE]" {
                collected.finished = true;
                return Ok(());
            }
            let chunk: Chunk = serde_json::from_str(data).map_err(|e| ProviderError::Garbage {
                provider: self.name.clone(),
                model: model.id.clone(),
                detail: format!("{e} in stream event {:?}", snippet(data)),
            })?;
            if let Some(error) = chunk.error {
                return Err(self.error_in_answer(model, &error));
            }
            let got = collected.chunk(chunk);
            for (kind, count) in [
                (Got::Reasoning, got.reasoning),
                (Got::Content, got.content),
                (Got::ToolCall, got.tool_calls),
            ] {
                if count == 0 {
                    continue;
                }
                observer.tokens(count, kind == Got::Reasoning);
                let stage = match kind {
                    Got::Reasoning => "thinking",
                    Got::Content => "streaming",
                    Got::ToolCall => "preparing a web search",
                };
                state.first_token(started, observer, stage, collected.text.len());
            }
        }
    }

    /// Checks the collected answer is whole and fills in what the provider left out.
    async fn finish(
        &self,
        model: &ModelInfo,
        request: &ChatRequest,
        collected: Collected,
        state: &Stream,
        started: Instant,
    ) -> Result<ChatResponse, ProviderError> {
        if !collected.saw_choice {
            return Err(ProviderError::Garbage {
                provider: self.name.clone(),
                model: model.id.clone(),
                detail: "the answer had no choices".into(),
            });
        }
        if !collected.finished {
            return Err(ProviderError::Truncated {
                provider: self.name.clone(),
                model: model.id.clone(),
                detail: "the stream ended without a finish reason or [DONE]".into(),
            });
        }
        let tool_calls = collected.calls.finish();
        let mut answer = ChatResponse {
            provider: self.name.clone(),
            model: model.id.clone(),
            time_to_first_token: state.time_to_first_token,
            sources: collected.sources,
            ..Default::default()
        };
        if let Some(usage) = collected.usage {
            answer.tokens_in = usage.prompt_tokens;
            answer.tokens_out = usage.completion_tokens;
            answer.reasoning_tokens = usage
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens);
        }
        // No usage from the provider: count with the tokenizer rather than leave the record
        // blank — on a blocking thread, as counting is CPU work (and the first count loads the
        // tokenizer).
        if answer.tokens_out.is_none() || answer.tokens_in.is_none() {
            let mut produced = vec![collected.text.clone(), collected.reasoning.clone()];
            produced.extend(tool_calls.iter().map(|c| c.function.arguments.clone()));
            let prompt: Vec<String> = request.messages.iter().map(|m| m.content.clone()).collect();
            let counted = tokio::task::spawn_blocking(move || {
                let out: usize = produced.iter().map(|t| crate::tokens::count(t)).sum();
                let input: usize = prompt.iter().map(|t| crate::tokens::count(t) + 4).sum();
                (out as u64, input as u64)
            })
            .await;
            if let Ok((out, input)) = counted {
                answer.tokens_out = answer.tokens_out.or(Some(out));
                answer.tokens_in = answer.tokens_in.or(Some(input));
                tracing::debug!(provider = %self.name, "no usage reported; tokens estimated");
            }
        }
        answer.text = collected.text;
        if !collected.reasoning.is_empty() {
            answer.reasoning = Some(collected.reasoning);
        }
        answer.tool_calls = tool_calls;
        tracing::info!(
            provider = %self.name,
            model = %answer.model,
            tokens_in = answer.tokens_in,
            tokens_out = answer.tokens_out,
            reasoning_tokens = answer.reasoning_tokens,
            tool_calls = answer.tool_calls.len(),
            sources = answer.sources.len(),
            ttft_ms = answer.time_to_first_token.map(|t| t.as_millis() as u64),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "provider answer complete"
        );
        Ok(answer)
    }

    /// A whole (non-streamed) body, each read bounded by the idle timeout, its size capped.
    async fn whole_body(
        &self,
        model: &ModelInfo,
        response: reqwest::Response,
    ) -> Result<Vec<u8>, ProviderError> {
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        loop {
            match tokio::time::timeout(self.idle_timeout, stream.next()).await {
                Err(_) => return Err(self.idle(model, "reading the answer", self.idle_timeout)),
                Ok(None) => return Ok(body),
                Ok(Some(Err(e))) => {
                    return Err(ProviderError::Truncated {
                        provider: self.name.clone(),
                        model: model.id.clone(),
                        detail: error_chain(&e),
                    });
                }
                Ok(Some(Ok(bytes))) => {
                    body.extend_from_slice(&bytes);
                    if body.len() > MAX_ANSWER_BODY {
                        return Err(ProviderError::Garbage {
                            provider: self.name.clone(),
                            model: model.id.clone(),
                            detail: format!("the answer is larger than {MAX_ANSWER_BODY} bytes"),
                        });
                    }
                }
            }
        }
    }

    /// An error the provider put inside a 200 answer.
    fn error_in_answer(&self, model: &ModelInfo, error: &serde_json::Value) -> ProviderError {
        ProviderError::Status {
            provider: self.name.clone(),
            model: model.id.clone(),
            status: 200,
            message: error
                .get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| error.to_string()),
            hint: String::new(),
            retry_after: None,
        }
    }

    fn idle(&self, model: &ModelInfo, what: &str, waited: Duration) -> ProviderError {
        ProviderError::Idle {
            provider: self.name.clone(),
            model: model.id.clone(),
            what: what.to_string(),
            waited_s: waited.as_secs(),
        }
    }

    async fn error_message(&self, response: reqwest::Response) -> String {
        let html = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("html"));
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while body.len() < MAX_ERROR_BODY {
            match tokio::time::timeout(self.idle_timeout, stream.next()).await {
                Ok(Some(Ok(bytes))) => body.extend_from_slice(&bytes),
                _ => break,
            }
        }
        let text = String::from_utf8_lossy(&body);
        if let Some(message) = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| {
                v.pointer("/error/message")
                    .or_else(|| v.get("message"))
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
        {
            return message;
        }
        if html || text.trim_start().starts_with('<') {
            let title = text
                .split("<title>")
                .nth(1)
                .or_else(|| text.split("<h1>").nth(1))
                .and_then(|t| t.split('<').next())
                .unwrap_or("no title");
            return format!("an HTML error page ({})", title.trim());
        }
        snippet(&text)
    }
}

/// Per-attempt streaming state.
#[derive(Default)]
struct Stream {
    content_started: bool,
    time_to_first_token: Option<Duration>,
}

impl Stream {
    fn first_token(
        &mut self,
        started: Instant,
        observer: &dyn CallObserver,
        stage: &str,
        text_len: usize,
    ) {
        if !self.content_started {
            self.content_started = true;
            self.time_to_first_token = Some(started.elapsed());
            observer.stage(stage.to_string());
        } else if stage == "streaming" && text_len <= 4 {
            // The answer proper started after reasoning.
            observer.stage(stage.to_string());
        }
    }
}

/// What kind of output a chunk carried.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Got {
    Reasoning,
    Content,
    ToolCall,
}

/// How many pieces of each kind one chunk added.
#[derive(Default)]
struct Added {
    reasoning: u64,
    content: u64,
    tool_calls: u64,
}

/// Everything an attempt's answer has brought so far, streamed or whole.
#[derive(Default)]
struct Collected {
    text: String,
    reasoning: String,
    calls: ToolCallParts,
    sources: Vec<Source>,
    usage: Option<Usage>,
    finished: bool,
    saw_choice: bool,
}

impl Collected {
    fn chunk(&mut self, chunk: Chunk) -> Added {
        let mut added = Added::default();
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        self.add_sources(chunk.web_search.unwrap_or_default());
        for choice in chunk.choices {
            self.saw_choice = true;
            if let Some(text) = choice.delta.reasoning_content.filter(|t| !t.is_empty()) {
                self.reasoning.push_str(&text);
                added.reasoning += 1;
            }
            if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                self.text.push_str(&text);
                added.content += 1;
            }
            for (position, part) in choice
                .delta
                .tool_calls
                .unwrap_or_default()
                .into_iter()
                .enumerate()
            {
                self.calls.add(position, part);
                added.tool_calls += 1;
            }
            // Moonshot has been seen to put usage inside the final choice.
            if let Some(usage) = choice.usage {
                self.usage = Some(usage);
            }
            if choice.finish_reason.is_some() {
                self.finished = true;
            }
        }
        added
    }

    fn completion(&mut self, completion: Completion) {
        self.usage = completion.usage;
        self.add_sources(completion.web_search.unwrap_or_default());
        for choice in completion.choices {
            self.saw_choice = true;
            // A whole answer is finished whether or not it names its reason.
            self.finished = true;
            self.text
                .push_str(&choice.message.content.unwrap_or_default());
            self.reasoning
                .push_str(&choice.message.reasoning_content.unwrap_or_default());
            for (position, call) in choice
                .message
                .tool_calls
                .unwrap_or_default()
                .into_iter()
                .enumerate()
            {
                self.calls.add(position, call);
            }
        }
    }

    fn add_sources(&mut self, items: Vec<WebSearchItem>) {
        let found: Vec<Source> = items
            .into_iter()
            .filter_map(|item| {
                let url = item.link.filter(|l| !l.trim().is_empty())?;
                let title = item
                    .title
                    .filter(|t| !t.trim().is_empty())
                    .unwrap_or_else(|| url.clone());
                Some(Source { title, url })
            })
            .collect();
        super::search::add_sources(&mut self.sources, &found);
    }
}

/// Tool calls put together from their streamed fragments: each fragment names its call by
/// `index`; the first carries id, type and name, the arguments come in pieces to concatenate.
#[derive(Default)]
struct ToolCallParts {
    calls: std::collections::BTreeMap<usize, ToolCall>,
}

impl ToolCallParts {
    /// Adds a fragment; `position` (its place in the chunk's list) stands in for a missing index.
    fn add(&mut self, position: usize, part: ToolCallPart) {
        let call = self
            .calls
            .entry(part.index.unwrap_or(position))
            .or_default();
        if let Some(id) = part.id.filter(|i| !i.is_empty())
            && call.id.is_empty()
        {
            call.id = id;
        }
        if let Some(kind) = part.kind.filter(|k| !k.is_empty())
            && call.kind.is_empty()
        {
            call.kind = kind;
        }
        let Some(function) = part.function else {
            return;
        };
        if let Some(name) = function.name.filter(|n| !n.is_empty())
            && call.function.name.is_empty()
        {
            call.function.name = name;
        }
        match function.arguments {
            Some(serde_json::Value::String(piece)) => call.function.arguments.push_str(&piece),
            // Some servers send whole arguments as an object rather than a JSON text.
            Some(serde_json::Value::Null) | None => {}
            Some(other) => call.function.arguments.push_str(&other.to_string()),
        }
    }

    /// The calls in index order; fragments that never named a function are dropped.
    fn finish(self) -> Vec<ToolCall> {
        self.calls
            .into_iter()
            .filter(|(_, call)| !call.function.name.is_empty())
            .map(|(index, mut call)| {
                if call.id.is_empty() {
                    call.id = format!("call_{index}");
                }
                if call.kind.is_empty() {
                    call.kind = "function".into();
                }
                call
            })
            .collect()
    }
}

fn snippet(text: &str) -> String {
    let mut s: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        s.push('…');
    }
    s
}

/// The error and its causes, one line (reqwest hides the useful part in `source`).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelEntry>,
}

#[derive(Deserialize)]
struct ModelEntry {
    id: String,
}

/// A chat-completions body: a streamed chunk (its choices carry a `delta`) or a whole answer
/// (its choices carry a `message`).
#[derive(Deserialize)]
struct Envelope<Choice> {
    #[serde(default = "Vec::new")]
    choices: Vec<Choice>,
    usage: Option<Usage>,
    error: Option<serde_json::Value>,
    /// GLM: what its server-side web search found.
    web_search: Option<Vec<WebSearchItem>>,
}

type Chunk = Envelope<ChunkChoice>;
/// A whole (non-streamed) chat completion.
type Completion = Envelope<CompletionChoice>;

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Delta,
    finish_reason: Option<String>,
    usage: Option<Usage>,
}

#[derive(Deserialize, Default)]
struct Delta {
    content: Option<String>,
    reasoning_content: Option<String>,
    tool_calls: Option<Vec<ToolCallPart>>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    #[serde(default)]
    message: CompletionMessage,
}

#[derive(Deserialize, Default)]
struct CompletionMessage {
    content: Option<String>,
    reasoning_content: Option<String>,
    tool_calls: Option<Vec<ToolCallPart>>,
}

/// A tool call, or a streamed fragment of one.
#[derive(Deserialize)]
struct ToolCallPart {
    index: Option<usize>,
    id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    function: Option<FunctionPart>,
}

#[derive(Deserialize)]
struct FunctionPart {
    name: Option<String>,
    arguments: Option<serde_json::Value>,
}

/// One result of GLM's web search (it also sends content, media, icon, refer, publish_date).
#[derive(Deserialize)]
struct WebSearchItem {
    title: Option<String>,
    link: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    completion_tokens_details: Option<UsageDetails>,
}

#[derive(Deserialize)]
struct UsageDetails {
    reasoning_tokens: Option<u64>,
}

#[cfg(test)]
mod sse_tests {
    //! The SSE framing exai relies on, fed the way networks deliver it.

    use eventsource_stream::Eventsource;
    use futures::StreamExt;

    async fn events(chunks: &[&str]) -> Vec<String> {
        let owned: Vec<Result<Vec<u8>, std::io::Error>> =
            chunks.iter().map(|c| Ok(c.as_bytes().to_vec())).collect();
        futures::stream::iter(owned)
            .eventsource()
            .filter_map(|e| async move { e.ok().map(|e| e.data) })
            .collect()
            .await
    }

    #[tokio::test]
    async fn events_split_across_chunks_are_joined() {
        let got = events(&["data: {\"a\"", ":1}\n", "\n", "data: [DONE]\n\n"]).await;
        assert_eq!(got, ["{\"a\":1}", "[DONE]"]);
    }

    #[tokio::test]
    async fn crlf_comments_and_multi_line_data() {
        let got = events(&[
            ": keep-alive\r\n\r\n",
            "data: line one\r\ndata: line two\r\n\r\n",
            "data: [DONE]\r\n\r\n",
        ])
        .await;
        assert_eq!(got, ["line one\nline two", "[DONE]"]);
    }

    #[tokio::test]
    async fn a_chunk_is_parsed_into_content_reasoning_and_usage() {
        let chunk: super::Chunk = serde_json::from_str(
            r#"{"choices":[{"delta":{"reasoning_content":"hm","content":"hi"},"finish_reason":"stop"}],
                "usage":{"prompt_tokens":3,"completion_tokens":2,"completion_tokens_details":{"reasoning_tokens":1}}}"#,
        )
        .unwrap();
        assert_eq!(chunk.choices[0].delta.content.as_deref(), Some("hi"));
        assert_eq!(
            chunk.choices[0].delta.reasoning_content.as_deref(),
            Some("hm")
        );
        let usage = chunk.usage.unwrap();
        assert_eq!(
            (usage.prompt_tokens, usage.completion_tokens),
            (Some(3), Some(2))
        );
        assert_eq!(
            usage.completion_tokens_details.unwrap().reasoning_tokens,
            Some(1)
        );
    }
}

#[cfg(test)]
mod tool_call_tests {
    //! Tool calls put together from the fragments providers stream, and from whole answers.

    use super::*;
    use crate::providers::FunctionCall;

    fn chunk(data: &str) -> Chunk {
        serde_json::from_str(data).unwrap()
    }

    #[test]
    fn fragments_split_across_chunks_are_joined_by_index() {
        let mut collected = Collected::default();
        for data in [
            r#"{"choices":[{"delta":{"reasoning_content":"look it up"}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"builtin_function","function":{"name":"$web_search","arguments":""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"search_result\":"}}]}}]}"#,
            // A second call starts while the first is still open.
            r#"{"choices":[{"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"other","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"search_id\":\"s1\"}}"}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":5,"completion_tokens":7}}"#,
        ] {
            collected.chunk(chunk(data));
        }
        assert!(collected.finished);
        assert_eq!(collected.reasoning, "look it up");
        let calls = collected.calls.finish();
        assert_eq!(
            calls,
            [
                ToolCall {
                    id: "call_a".into(),
                    kind: "builtin_function".into(),
                    function: FunctionCall {
                        name: "$web_search".into(),
                        arguments: r#"{"search_result":{"search_id":"s1"}}"#.into(),
                    },
                },
                ToolCall {
                    id: "call_b".into(),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: "other".into(),
                        arguments: "{}".into(),
                    },
                },
            ]
        );
    }

    #[test]
    fn missing_index_id_and_type_get_defaults_and_nameless_fragments_are_dropped() {
        let mut parts = ToolCallParts::default();
        let part = |json: &str| -> ToolCallPart { serde_json::from_str(json).unwrap() };
        parts.add(0, part(r#"{"function":{"name":"f","arguments":"{\"a\""}}"#));
        parts.add(0, part(r#"{"function":{"arguments":":1}"}}"#));
        // A later repeat of the name does not double it; an object argument is kept as JSON.
        parts.add(1, part(r#"{"function":{"name":"g","arguments":{"b":2}}}"#));
        parts.add(1, part(r#"{"function":{"name":"g"}}"#));
        parts.add(2, part(r#"{"type":"web_search"}"#));
        let calls = parts.finish();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            (calls[0].id.as_str(), calls[0].kind.as_str()),
            ("call_0", "function")
        );
        assert_eq!(calls[0].function.arguments, r#"{"a":1}"#);
        assert_eq!(calls[1].function.name, "g");
        assert_eq!(calls[1].function.arguments, r#"{"b":2}"#);
    }

    #[test]
    fn a_whole_answer_brings_its_tool_calls_sources_and_usage() {
        let completion: Completion = serde_json::from_str(
            r#"{"choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant",
                "content":null,"reasoning_content":"hm",
                "tool_calls":[{"index":0,"id":"c1","type":"builtin_function",
                  "function":{"name":"$web_search","arguments":"{\"q\":1}"}}]}}],
              "usage":{"prompt_tokens":3,"completion_tokens":4},
              "web_search":[{"title":"T","link":"https://a.example/x","refer":"ref_1"},
                            {"title":"dup","link":"https://a.example/x"},
                            {"link":"https://b.example/"},{"title":"no link"}]}"#,
        )
        .unwrap();
        let mut collected = Collected::default();
        collected.completion(completion);
        assert!(collected.finished && collected.saw_choice);
        assert_eq!(collected.text, "");
        assert_eq!(collected.reasoning, "hm");
        assert_eq!(collected.usage.as_ref().unwrap().completion_tokens, Some(4));
        let calls = collected.calls.finish();
        assert_eq!(calls[0].function.arguments, r#"{"q":1}"#);
        let urls: Vec<(&str, &str)> = collected
            .sources
            .iter()
            .map(|s| (s.title.as_str(), s.url.as_str()))
            .collect();
        assert_eq!(
            urls,
            [
                ("T", "https://a.example/x"),
                ("https://b.example/", "https://b.example/")
            ]
        );
    }

    #[test]
    fn glm_sources_in_a_stream_chunk_and_usage_inside_a_choice_are_kept() {
        let mut collected = Collected::default();
        collected.chunk(chunk(
            r#"{"web_search":[{"title":"A","link":"https://a.example/"}],"choices":[{"delta":{"role":"assistant"}}]}"#,
        ));
        collected.chunk(chunk(
            r#"{"choices":[{"delta":{"content":"hi"},"finish_reason":"stop","usage":{"prompt_tokens":1,"completion_tokens":2}}]}"#,
        ));
        assert_eq!(collected.sources.len(), 1);
        assert_eq!(collected.text, "hi");
        assert_eq!(collected.usage.unwrap().prompt_tokens, Some(1));
    }
}
