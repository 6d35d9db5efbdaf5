//! The OpenAI chat-completions protocol, streamed over SSE (or, from servers that will not
//! stream, one JSON answer): the core every provider speaks — text, reasoning, tool calls, usage.
//!
//! What a provider sends is bounded: the answer (text, reasoning, tool calls, sources) by
//! `EXAI_MAX_ANSWER_BYTES`, one SSE event and a whole JSON body by twice that (room for the
//! JSON around it), an error body by `MAX_ERROR_BODY`; past a bound the request is dropped.
//! Redirects are never followed, and the provider's words pass through `secrets` before they
//! are logged, stored or returned.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::json;

use self::bounded::FirstOf;

use super::body::{estimated_prompt_tokens, output_limit};
use super::catalog::ListedReasoning;
use super::client::PlannedRequest;
use super::connections::{Answer, Checkout, ClientSettings, Connections, TransportError};
use super::errors::{self, ErrorBody, ErrorClass};
use super::retry::AttemptError;
use super::search::MOST_SOURCES;
use super::sse::{SseDecoder, SseError};
use super::{
    CallObserver, ChatRequest, ChatResponse, ModelInfo, ProviderError, Seconds, Source, ToolCall,
    request_body,
};
use crate::config::{Config, EndpointConfig, ProviderKind, Secret};
use crate::metrics::{self, RequestStatus};
use crate::secrets;

mod bounded;
mod files_api;

/// Longest error body read from a failed request.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// Room for the JSON around an answer in one SSE event or a whole body, beyond twice the answer.
const ENVELOPE_ROOM: usize = 64 * 1024;

/// How much of a provider's text is looked at to show its start in a message.
const SHOWN_TEXT_READ: usize = 4 * 1024;

/// Longest `GET /models` answer read.
const MAX_MODEL_LIST: usize = 4 * 1024 * 1024;

/// Longest finish reason kept (a provider's word, such as `model_context_window_exceeded`).
const MAX_FINISH_REASON: usize = 64;

/// Why an endpoint's client could not be built.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no HTTP client: {detail}")]
pub struct NoHttpClient {
    detail: String,
}

/// Why an endpoint's base URL gives no request URL (the parser's words).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub struct BadUrl {
    detail: String,
}

/// Why `GET /models` gave no list; the provider's words are masked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ListModelsError {
    #[error("{0}")]
    BadUrl(String),
    /// No connection: nothing listens there, the name does not resolve, or no network.
    #[error("{0}")]
    Unreachable(String),
    /// The request or the reading of the answer failed.
    #[error("{0}")]
    Failed(String),
    #[error("HTTP {status}, a redirect to {location} (not followed)")]
    Redirect { status: u16, location: String },
    #[error("HTTP {0}")]
    Status(u16),
    #[error("the model list stopped coming")]
    Stalled,
    #[error("the model list is larger than {}", size_text(MAX_MODEL_LIST))]
    TooLarge,
    /// Not the documented list (the parser's words).
    #[error("{0}")]
    Malformed(String),
}

/// An OpenAI-compatible endpoint.
pub struct OpenAiCompatible {
    name: String,
    kind: ProviderKind,
    /// `…/chat/completions` and `…/models` on the base URL (its query kept), or why not.
    chat_url: Result<reqwest::Url, BadUrl>,
    models_url: Result<reqwest::Url, BadUrl>,
    /// The base URL with its credentials masked, for messages.
    shown_url: String,
    /// The base URL as configured, for the file APIs' paths on it.
    base_url: crate::config::ProviderUrl,
    /// Whether the URL's user and password are left out (a key is sent instead).
    drop_userinfo: bool,
    api_key: Option<Secret>,
    key_source: Option<String>,
    /// What the provider might echo back that must not be shown: the key, the URL's credentials.
    known_secrets: Vec<Secret>,
    idle_timeout: Duration,
    first_token_timeout: Duration,
    /// Most bytes of answer, reasoning, tool calls and sources one request may bring.
    max_answer: usize,
    connections: Connections,
    /// The provider as `/metrics` labels its requests.
    metrics_name: metrics::Name,
}

impl OpenAiCompatible {
    /// The client of one endpoint; fails only when no HTTP client can be built.
    pub fn new(endpoint: &EndpointConfig, config: &Config) -> Result<Self, NoHttpClient> {
        let base = endpoint.base_url.expose();
        // With a key, the URL's user and password would be a second Authorization header.
        let drop_userinfo = endpoint.api_key.is_some();
        let chat_url = endpoint_url(base, "/chat/completions", drop_userinfo);
        if drop_userinfo && chat_url.is_ok() && base_has_userinfo(base) {
            tracing::warn!(provider = %endpoint.name, "the user and password in the URL are not sent: the API key is");
        }
        let connections = Connections::new(
            ClientSettings {
                connect_timeout: config.provider_connect_timeout,
                keepalive: config.provider_keepalive,
                http2: config.provider_http2,
                trusted: config.provider_ca.clone(),
            },
            chat_url.as_ref().ok(),
        )
        .map_err(|e| NoHttpClient {
            detail: error_chain(&e),
        })?;
        Ok(Self {
            name: endpoint.name.clone(),
            kind: endpoint.kind,
            chat_url,
            models_url: endpoint_url(base, "/models", drop_userinfo),
            shown_url: endpoint.base_url.shown().to_string(),
            base_url: endpoint.base_url.clone(),
            drop_userinfo,
            api_key: endpoint.api_key.clone(),
            key_source: endpoint.key_source.clone(),
            known_secrets: url_secrets(base)
                .into_iter()
                .chain(endpoint.api_key.iter().map(|k| k.expose().to_string()))
                .map(Secret::new)
                .collect(),
            idle_timeout: config.provider_idle_timeout,
            first_token_timeout: config.first_token_timeout,
            max_answer: config.max_answer_bytes,
            connections,
            metrics_name: metrics::name(&endpoint.name),
        })
    }

    /// The most one SSE event or a whole JSON body may hold.
    fn max_wire(&self) -> usize {
        self.max_answer
            .saturating_mul(2)
            .saturating_add(ENVELOPE_ROOM)
    }

    /// Where this endpoint's key comes from and whether it is set, for error hints.
    fn key(&self) -> errors::Key<'_> {
        errors::Key {
            source: self.key_source.as_deref(),
            set: self.api_key.is_some(),
        }
    }

    /// A request on the least busy connection, and the hold on it (keep it while reading the answer).
    fn request(
        &self,
        method: reqwest::Method,
        url: &reqwest::Url,
    ) -> (reqwest::RequestBuilder, Checkout) {
        let checkout = self.connections.checkout();
        let builder = checkout.http.request(method, url.clone());
        let builder = match &self.api_key {
            Some(key) => builder.bearer_auth(key.expose()),
            None => builder,
        };
        (builder, checkout)
    }

    /// A chat request's headers: its JSON body, and the key as reqwest's `bearer_auth` sends
    /// it (marked sensitive, so no debug output shows it).
    fn chat_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(2);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        // A key that is no header value (a control character in it) is left out: the
        // provider's 401 then names the problem, as it would for a wrong key.
        if let Some(key) = &self.api_key
            && let Ok(mut value) = HeaderValue::try_from(format!("Bearer {}", key.expose()))
        {
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        headers
    }

    /// Token counts past what `request` could have used are a provider's garbage (a custom
    /// endpoint may be any server): each is counted as that most, with a note, so one answer
    /// cannot bill millions or spend every budget for the day.
    fn keep_usage_plausible(
        &self,
        model: &ModelInfo,
        request: &ChatRequest,
        answer: &mut ChatResponse,
    ) {
        // Generously over the limit sent: some servers leave reasoning out of it (DeepSeek-R1's
        // chain of thought, up to 32K, came on top of `max_tokens`).
        let limit = output_limit(self.kind, model, request);
        let most_out = limit.saturating_mul(2).saturating_add(65_536);
        // The server may add to the prompt (its web search's results), but not past the
        // model's window; the largest any model has stands in for it, as a models file may leave
        // the window at its default, well below the real one.
        let most_in = LARGEST_WINDOW
            .max(model.context_window)
            .max(estimated_prompt_tokens(request).saturating_mul(2))
            .saturating_add(4096);
        for (count, most, what) in [
            (&mut answer.tokens_in, most_in, "input"),
            (&mut answer.tokens_out, most_out, "output"),
        ] {
            if let Some(reported) = count.filter(|&n| n > most) {
                tracing::warn!(provider = %self.name, model = %model.id, reported, counted = most, "the provider reported more {what} tokens than the request could use");
                answer.notes.push(format!(
                    "the provider reported {reported} {what} tokens, more than this request could \
                     use; counted as {most}"
                ));
                *count = Some(most);
            }
        }
        // A part is no more than its whole, where the whole was reported.
        if let Some(whole) = answer.tokens_in {
            answer.cached_tokens = answer.cached_tokens.map(|n| n.min(whole));
        }
        if let Some(whole) = answer.tokens_out {
            answer.reasoning_tokens = answer.reasoning_tokens.map(|n| n.min(whole));
        }
    }

    /// Text from the provider or about it, as it may be shown: secrets masked.
    fn clean(&self, text: &str) -> String {
        let known: Vec<&str> = self.known_secrets.iter().map(Secret::expose).collect();
        secrets::redact_text(text, &known)
    }

    /// The start of a provider's text, for a message: secrets masked before it is cut, so a
    /// cut never leaves half a key.
    fn shown(&self, text: &str) -> String {
        let mut end = text.len().min(SHOWN_TEXT_READ);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        snippet(&self.clean(&text[..end]))
    }

    /// A transport error as one line, without the request URL (it may carry credentials).
    fn describe(&self, error: TransportError) -> String {
        self.clean(&error_chain(&error.without_url()))
    }

    /// `GET /models`: the ids the endpoint serves, with what it says of their reasoning.
    pub async fn list_models(
        &self,
    ) -> Result<Vec<(String, Option<ListedReasoning>)>, ListModelsError> {
        let url = self
            .models_url
            .as_ref()
            .map_err(|e| ListModelsError::BadUrl(self.clean(&e.to_string())))?;
        let (request, _connection) = self.request(reqwest::Method::GET, url);
        let response = request.send().await.map_err(|e| match e.is_connect() {
            true => ListModelsError::Unreachable(self.describe(TransportError::Pooled(e))),
            false => ListModelsError::Failed(self.describe(TransportError::Pooled(e))),
        })?;
        let response = Answer::Pooled(response);
        let status = response.status();
        if status.is_redirection() {
            return Err(ListModelsError::Redirect {
                status: status.as_u16(),
                location: redirect_target(&response, url),
            });
        }
        if !status.is_success() {
            return Err(ListModelsError::Status(status.as_u16()));
        }
        let body = match read_capped(response, MAX_MODEL_LIST, self.idle_timeout).await {
            Ok(body) => body,
            Err(Capped::Idle) => return Err(ListModelsError::Stalled),
            Err(Capped::Failed(e)) => return Err(ListModelsError::Failed(self.describe(e))),
            Err(Capped::TooLarge) => return Err(ListModelsError::TooLarge),
        };
        let list: ModelList = serde_json::from_slice(&body)
            .map_err(|e| ListModelsError::Malformed(self.shown(&e.to_string())))?;
        let listed = list.data.into_vec();
        let count = listed.len();
        let models: Vec<_> = listed
            .into_iter()
            .filter(|m| is_plausible_model_id(&m.id))
            .map(|m| {
                let reasoning = m.reasoning.as_ref().and_then(ListedReasoning::from_json);
                (m.id, reasoning)
            })
            .collect();
        if models.len() < count {
            tracing::warn!(
                provider = %self.name,
                left_out = count - models.len(),
                "the endpoint listed model names no model has (empty, over {MOST_MODEL_ID_BYTES} \
                 bytes, spaced at either end, or holding line breaks or control characters); \
                 they are left out"
            );
        }
        Ok(models)
    }

    /// The chat URL, or why the base URL gives none.
    fn usable_chat_url(&self) -> Result<&reqwest::Url, ProviderError> {
        self.chat_url
            .as_ref()
            .map_err(|why| ProviderError::Connect {
                provider: self.name.clone(),
                url: self.shown_url.clone(),
                detail: format!("not a usable URL: {}", self.clean(&why.to_string())),
            })
    }

    /// The body of a chat request to `url`: the one function both a sent request and a dry
    /// run's plan are built by.
    fn body(
        &self,
        url: &reqwest::Url,
        model: &ModelInfo,
        request: &ChatRequest,
    ) -> serde_json::Value {
        request_body(self.kind, url.host_str().unwrap_or(""), model, request)
    }

    /// What an attempt would send (a dry run): method, URL and headers as sent, with the URL's
    /// credentials and the key masked, and the body exactly as built for the wire.
    pub fn plan(&self, model: &ModelInfo, request: &ChatRequest) -> PlannedRequest {
        let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        if self.api_key.is_some() {
            headers.push(("Authorization".into(), format!("Bearer {}", secrets::MASK)));
        }
        match self.usable_chat_url() {
            Ok(url) => PlannedRequest {
                method: "POST",
                url: secrets::mask_url(url.as_str()),
                headers,
                body: self.body(url, model, request),
            },
            Err(why) => PlannedRequest {
                method: "POST",
                url: why.to_string(),
                headers,
                body: request_body(self.kind, "", model, request),
            },
        }
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
        let url = self.usable_chat_url()?;
        let waiting = if searching {
            format!("searching the web ({})", self.name)
        } else {
            format!("waiting for {}", self.name)
        };
        observer.stage(waiting);
        tracing::info!(
            provider = self.name.as_str(),
            model = model.id.as_str(),
            attempt,
            searching,
            "provider request sent"
        );
        let started = Instant::now();
        // The body tree is dropped once serialized, not kept for the whole (long) stream; the
        // bytes may be kept until the answer's headers (reqwest keeps them to resend), so they
        // are cut to their length rather than left with the room serializing grew.
        let body = {
            // A JSON tree always serializes; its `Display` would go through a formatter.
            let mut body = serde_json::to_vec(&self.body(url, model, request)).unwrap_or_default();
            body.shrink_to_fit();
            body
        };
        let connection = self.connections.checkout();
        let send = connection.post(url, self.chat_headers(), body);
        let counted = metrics::ProviderRequest::sent(&self.metrics_name);
        let response = match tokio::time::timeout(self.idle_timeout, send).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) if e.refused_answer() => {
                let error = ProviderError::Garbage {
                    provider: self.name.clone(),
                    model: model.id.clone(),
                    detail: self.describe(e),
                };
                counted.ended(RequestStatus::Unusable(error.kind()));
                return Err(error);
            }
            Ok(Err(e)) => {
                counted.ended(RequestStatus::Connect);
                return Err(ProviderError::Connect {
                    provider: self.name.clone(),
                    url: secrets::mask_url(url.as_str()),
                    detail: self.describe(e),
                });
            }
            Err(_) => {
                counted.ended(RequestStatus::Timeout);
                return Err(self.idle(model, "waiting for response headers", self.idle_timeout));
            }
        };
        let status = response.status();
        counted.ended(RequestStatus::Http(status.as_u16()));
        tracing::debug!(provider = %self.name, status = status.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "provider response headers");
        if status.is_redirection() {
            return Err(ProviderError::Redirect {
                provider: self.name.clone(),
                model: model.id.clone(),
                status: status.as_u16(),
                location: redirect_target(&response, url),
            });
        }
        if !status.is_success() {
            // Boxed, as the other ends below: an attempt's future is sized by its largest
            // step, and a call holds it for as long as it waits on the model.
            return Err(Box::pin(self.refused(model, response)).await);
        }
        let mut collected = Collected::default();
        // Some servers ignore `stream: true` and send one JSON completion.
        let whole_json = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json"));
        if whole_json {
            let text = Box::pin(self.whole_body(model, response)).await?;
            let completion: Completion =
                serde_json::from_slice(&text).map_err(|e| ProviderError::Garbage {
                    provider: self.name.clone(),
                    model: model.id.clone(),
                    detail: format!(
                        "{} in the answer {:?}",
                        self.shown(&e.to_string()),
                        self.shown(&String::from_utf8_lossy(
                            &text[..text.len().min(SHOWN_TEXT_READ)]
                        ))
                    ),
                })?;
            if let Some(error) = completion.error {
                return Err(self.error_in_answer(model, &error));
            }
            collected.completion(completion);
            if collected.size > self.max_answer {
                return Err(self.too_large(model, &collected, "in one answer"));
            }
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
        Box::pin(self.finish(model, request, collected, state, started)).await
    }

    /// Reads the SSE stream into `collected`, bounded by the first-token and idle timeouts
    /// (each the longest wait for the next event) and by the size bounds; returning drops the
    /// response, which closes the connection.
    async fn read_events(
        &self,
        model: &ModelInfo,
        mut response: Answer,
        observer: &dyn CallObserver,
        started: Instant,
        state: &mut Stream,
        collected: &mut Collected,
    ) -> Result<(), ProviderError> {
        let mut decoder = SseDecoder::new(self.max_wire());
        let mut events: VecDeque<String> = VecDeque::new();
        let mut waiting_since = tokio::time::Instant::now();
        let mut comments = 0;
        loop {
            if let Some(data) = events.pop_front() {
                match self.event(model, &data, observer, started, state, collected)? {
                    Step::Done => return Ok(()),
                    Step::Grew => waiting_since = tokio::time::Instant::now(),
                    // An event that brings nothing (`{"choices":[]}` again and again) is no sign
                    // of life: it would hold the attempt to the call's deadline.
                    Step::Empty => {}
                }
                continue;
            }
            // Silence allowed before the next sign of life: a model that thinks before it
            // says anything gets the first-token timeout, not the (shorter) idle timeout.
            let (limit, what) = if state.content_started {
                (self.idle_timeout, "streaming the answer")
            } else {
                (self.first_token_timeout, "waiting for the first token")
            };
            let chunk = match tokio::time::timeout_at(waiting_since + limit, response.chunk()).await
            {
                Err(_) => return Err(self.idle(model, what, limit)),
                Ok(None) => return Ok(()),
                Ok(Some(Err(e))) => {
                    return Err(ProviderError::Truncated {
                        provider: self.name.clone(),
                        model: model.id.clone(),
                        detail: self.describe(e),
                    });
                }
                Ok(Some(Ok(chunk))) => chunk,
            };
            decoder.feed(&chunk, &mut events).map_err(|e| match e {
                SseError::TooLong { limit } => ProviderError::TooLarge {
                    provider: self.name.clone(),
                    model: model.id.clone(),
                    what: format!(
                        "more than {} in one stream event without ending it",
                        size_text(limit)
                    ),
                },
                SseError::NotUtf8 => ProviderError::Garbage {
                    provider: self.name.clone(),
                    model: model.id.clone(),
                    detail: e.to_string(),
                },
            })?;
            // Keep-alive comments (`: OPENROUTER PROCESSING`) are signs of life too.
            if decoder.comments() != comments {
                comments = decoder.comments();
                waiting_since = tokio::time::Instant::now();
            }
        }
    }

    /// Takes in one SSE event: whether it ended the answer (`[DONE]`), or brought anything.
    fn event(
        &self,
        model: &ModelInfo,
        data: &str,
        observer: &dyn CallObserver,
        started: Instant,
        state: &mut Stream,
        collected: &mut Collected,
    ) -> Result<Step, ProviderError> {
        let data = data.trim();
        if data.is_empty() {
            return Ok(Step::Empty);
        }
        if data == "[DONE]" {
            collected.finished = true;
            return Ok(Step::Done);
        }
        let chunk: Chunk = serde_json::from_str(data).map_err(|e| ProviderError::Garbage {
            provider: self.name.clone(),
            model: model.id.clone(),
            // serde quotes values it did not expect: they are the provider's words too.
            detail: format!(
                "{} in stream event {:?}",
                self.shown(&e.to_string()),
                self.shown(data)
            ),
        })?;
        if let Some(error) = chunk.error {
            return Err(self.error_in_answer(model, &error));
        }
        // Usage counts as news only with a count in it (`"usage":{}` again and again is none).
        let counted = chunk
            .usage
            .as_ref()
            .is_some_and(|u| u.prompt_tokens.is_some() || u.completion_tokens.is_some());
        let before = (collected.size, collected.finished, counted);
        let got = collected.chunk(chunk);
        let grew = before.2 || collected.size > before.0 || collected.finished != before.1;
        if collected.size > self.max_answer {
            return Err(self.too_large(model, collected, "without finishing"));
        }
        for (kind, count) in [
            (Got::Reasoning, got.reasoning),
            (Got::Content, got.content),
            (Got::ToolCall, got.tool_calls),
        ] {
            if count == 0 {
                continue;
            }
            observer.tokens(count, kind == Got::Reasoning);
            state.output(started, observer, kind);
        }
        Ok(if grew { Step::Grew } else { Step::Empty })
    }

    /// The answer outgrew `max_answer`: what came, by kind.
    fn too_large(&self, model: &ModelInfo, collected: &Collected, how: &str) -> ProviderError {
        let mut parts = vec![format!("answer {}", size_text(collected.text.len()))];
        for (name, bytes) in [
            ("reasoning", collected.reasoning.len()),
            ("tool calls", collected.calls.size),
            ("sources", collected.sources_size),
        ] {
            if bytes > 0 {
                parts.push(format!("{name} {}", size_text(bytes)));
            }
        }
        ProviderError::TooLarge {
            provider: self.name.clone(),
            model: model.id.clone(),
            what: format!(
                "more than {} ({}) {how}",
                size_text(self.max_answer),
                parts.join(", ")
            ),
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
        let finish_reason = collected.finish_reason.as_deref().map(|r| {
            let mut end = r.len().min(MAX_FINISH_REASON);
            while !r.is_char_boundary(end) {
                end -= 1;
            }
            self.clean(&r[..end])
        });
        let mut notes = Vec::new();
        match finish_reason.as_deref().map(finish_kind) {
            Some(Finish::Failed(what)) => {
                return Err(self.stream_error(
                    model,
                    &format!(
                        "it ended the answer with finish_reason {:?} ({what})",
                        finish_reason.as_deref().unwrap_or_default()
                    ),
                    ErrorClass::ServerError,
                    &ErrorBody::default(),
                ));
            }
            Some(Finish::Cut(note)) => {
                tracing::warn!(provider = %self.name, model = %model.id, finish_reason = finish_reason.as_deref(), "the answer did not end normally");
                notes.push(note);
            }
            Some(Finish::Complete) | None => {}
        }
        if collected.calls.left_out > 0 {
            tracing::warn!(provider = %self.name, model = %model.id, left_out = collected.calls.left_out, "the model asked for more tool calls than are taken");
            notes.push(format!(
                "the model asked for more than {MOST_TOOL_CALLS} tool calls at once; the rest \
                 were left out"
            ));
        }
        let tool_calls = collected.calls.finish();
        let mut answer = ChatResponse {
            provider: self.name.clone(),
            model: model.id.clone(),
            time_to_first_token: state.time_to_first_token,
            sources: collected.sources,
            finish_reason,
            notes,
            ..Default::default()
        };
        if let Some(usage) = collected.usage {
            answer.tokens_in = usage.prompt_tokens;
            answer.tokens_out = usage.completion_tokens;
            answer.cached_tokens = usage.cached();
            answer.reasoning_tokens = usage
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens);
            self.keep_usage_plausible(model, request, &mut answer);
        }
        // No usage from the provider: count with the tokenizer rather than leave the record
        // blank — on a blocking thread, as counting is CPU work (and the first count loads the
        // tokenizer).
        if answer.tokens_out.is_none() || answer.tokens_in.is_none() {
            let mut produced = vec![collected.text.clone(), collected.reasoning.clone()];
            produced.extend(tool_calls.iter().map(|c| c.function.arguments.clone()));
            let prompt: Vec<String> = request
                .messages
                .iter()
                .map(|m| m.content.to_string())
                .collect();
            let counted = crate::spawn::blocking(move || {
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
            provider = self.name.as_str(),
            model = answer.model.as_str(),
            tokens_in = answer.tokens_in,
            tokens_out = answer.tokens_out,
            reasoning_tokens = answer.reasoning_tokens,
            cached_tokens = answer.cached_tokens,
            finish_reason = answer.finish_reason.as_deref(),
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
        response: Answer,
    ) -> Result<Vec<u8>, ProviderError> {
        let limit = self.max_wire();
        read_capped(response, limit, self.idle_timeout)
            .await
            .map_err(|e| match e {
                Capped::Idle => self.idle(model, "reading the answer", self.idle_timeout),
                Capped::Failed(e) => ProviderError::Truncated {
                    provider: self.name.clone(),
                    model: model.id.clone(),
                    detail: self.describe(e),
                },
                Capped::TooLarge => ProviderError::TooLarge {
                    provider: self.name.clone(),
                    model: model.id.clone(),
                    what: format!("a whole answer of more than {}", size_text(limit)),
                },
            })
    }

    /// A failed request: its status and body read into what it means (quota, rate limit,
    /// overload, …), the wait it asked for, and what to tell the user.
    async fn refused(&self, model: &ModelInfo, response: Answer) -> ProviderError {
        let status = response.status().as_u16();
        let header_wait = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let (message, body) = self.error_message(response).await;
        let class = errors::classify(self.kind, status, &body, header_wait.is_some());
        // A rate limit that names its wait only in words (Kimi: "try again after 1 seconds").
        let retry_after = header_wait.or_else(|| {
            (class == ErrorClass::RateLimited)
                .then(|| body.message.as_deref().and_then(errors::wait_in_message))
                .flatten()
        });
        ProviderError::Status {
            provider: self.name.clone(),
            model: model.id.clone(),
            status,
            message,
            hint: errors::hint(self.kind, self.key(), status, class, &body),
            retry_after,
            class,
        }
    }

    /// An error the provider put inside a 200 answer (an `error` event in the stream, or in
    /// a whole body).
    fn error_in_answer(&self, model: &ModelInfo, error: &serde_json::Value) -> ProviderError {
        let body = ErrorBody::of(&json!({ "error": error }));
        let message = body.message.clone().unwrap_or_else(|| error.to_string());
        let class = errors::classify(self.kind, 200, &body, false);
        self.stream_error(model, &message, class, &body)
    }

    /// A failure the provider reported inside its answer; its text is the provider's words.
    fn stream_error(
        &self,
        model: &ModelInfo,
        message: &str,
        class: ErrorClass,
        body: &ErrorBody,
    ) -> ProviderError {
        let hint = if class.is_account_problem() {
            errors::hint(self.kind, self.key(), 200, class, body)
        } else {
            " — the answer is incomplete; try again or another model".to_string()
        };
        ProviderError::Stream {
            provider: self.name.clone(),
            model: model.id.clone(),
            message: self.shown(message),
            hint,
            class,
        }
    }

    fn idle(&self, model: &ModelInfo, what: &str, waited: Duration) -> ProviderError {
        ProviderError::Idle {
            provider: self.name.clone(),
            model: model.id.clone(),
            what: what.to_string(),
            waited: Seconds(waited),
        }
    }

    /// What a failed request's body says, in one short line, secrets masked, and its fields;
    /// at most `MAX_ERROR_BODY` of it is read.
    async fn error_message(&self, mut response: Answer) -> (String, ErrorBody) {
        let html = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("html"));
        let mut body = Vec::new();
        while body.len() < MAX_ERROR_BODY {
            match tokio::time::timeout(self.idle_timeout, response.chunk()).await {
                Ok(Some(Ok(bytes))) => body.extend_from_slice(&bytes),
                _ => break,
            }
        }
        body.truncate(MAX_ERROR_BODY);
        let text = String::from_utf8_lossy(&body);
        let fields = ErrorBody::parse(&text);
        if let Some(message) = &fields.message {
            return (self.shown(message), fields);
        }
        if html || text.trim_start().starts_with('<') {
            let title = text
                .split("<title>")
                .nth(1)
                .or_else(|| text.split("<h1>").nth(1))
                .and_then(|t| t.split('<').next())
                .unwrap_or("no title");
            return (
                format!("an HTML error page ({})", self.shown(title.trim())),
                fields,
            );
        }
        (self.shown(&text), fields)
    }
}

/// `base` with `path` added to its path, its query kept after it (`https://h/v1?key=k` →
/// `https://h/v1/chat/completions?key=k`); without the URL's user and password when
/// `drop_userinfo`.
fn endpoint_url(base: &str, path: &str, drop_userinfo: bool) -> Result<reqwest::Url, BadUrl> {
    let mut url = reqwest::Url::parse(base).map_err(|e| BadUrl {
        detail: e.to_string(),
    })?;
    let joined = format!("{}{path}", url.path().trim_end_matches('/'));
    url.set_path(&joined);
    url.set_fragment(None);
    if drop_userinfo {
        // Only URLs that cannot have a user (no host) refuse, and those fail to connect anyway.
        let _ = url.set_username("");
        let _ = url.set_password(None);
    }
    Ok(url)
}

fn base_has_userinfo(base: &str) -> bool {
    reqwest::Url::parse(base).is_ok_and(|u| !u.username().is_empty() || u.password().is_some())
}

/// The credentials inside a URL, as a provider might echo them: user, password and the values
/// of secret-looking query parameters, each as written in the URL and decoded.
fn url_secrets(base: &str) -> Vec<String> {
    let Ok(url) = reqwest::Url::parse(base) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut add = |written: &str, form: bool| {
        if written.is_empty() {
            return;
        }
        found.push(decoded(written, form));
        if found.last().is_some_and(|d| d != written) {
            found.push(written.to_string());
        }
    };
    add(url.username(), false);
    add(url.password().unwrap_or(""), false);
    for pair in url.query().unwrap_or("").split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if secrets::is_secret_name(&decoded(name, true)) {
            add(value, true);
        }
    }
    found
}

/// `text` percent-decoded (and `+` as a space, in a query's form encoding).
fn decoded(text: &str, form: bool) -> String {
    let text = match form {
        true => std::borrow::Cow::Owned(text.replace('+', " ")),
        false => std::borrow::Cow::Borrowed(text),
    };
    percent_encoding::percent_decode_str(&text)
        .decode_utf8_lossy()
        .into_owned()
}

/// Where a redirect answer points, resolved against the request's URL and masked.
fn redirect_target(response: &Answer, url: &reqwest::Url) -> String {
    response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|location| match url.join(location) {
            Ok(url) => secrets::mask_url(url.as_str()),
            Err(_) => secrets::mask_url(location),
        })
        .unwrap_or_else(|| "nowhere (no Location header)".into())
}

/// Why a capped body could not be read whole.
enum Capped {
    /// Nothing came for the idle timeout.
    Idle,
    Failed(TransportError),
    /// It grew past the cap; the rest was not read.
    TooLarge,
}

/// A whole body of at most `cap` bytes, each read bounded by `idle`.
async fn read_capped(mut response: Answer, cap: usize, idle: Duration) -> Result<Vec<u8>, Capped> {
    let mut body = Vec::new();
    loop {
        match tokio::time::timeout(idle, response.chunk()).await {
            Err(_) => return Err(Capped::Idle),
            Ok(None) => return Ok(body),
            Ok(Some(Err(e))) => return Err(Capped::Failed(e)),
            Ok(Some(Ok(bytes))) => {
                if body.len() + bytes.len() > cap {
                    return Err(Capped::TooLarge);
                }
                body.extend_from_slice(&bytes);
            }
        }
    }
}

/// A size as people read it: `512 bytes`, `16 KiB`, `7.9 MiB`.
fn size_text(bytes: usize) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    let (value, unit) = if b >= KIB * KIB {
        (b / (KIB * KIB), "MiB")
    } else if b >= KIB {
        (b / KIB, "KiB")
    } else {
        return format!("{bytes} bytes");
    };
    let text = format!("{value:.1}");
    format!("{} {unit}", text.strip_suffix(".0").unwrap_or(&text))
}

/// What one stream event did.
enum Step {
    /// It ended the answer.
    Done,
    /// It brought something: text, reasoning, a tool call, sources, usage or a finish.
    Grew,
    /// It brought nothing.
    Empty,
}

/// Per-attempt streaming state.
#[derive(Default)]
struct Stream {
    content_started: bool,
    time_to_first_token: Option<Duration>,
    /// The furthest kind of output announced so far.
    announced: Option<Got>,
}

impl Stream {
    /// Output of `kind` arrived: the first token is timed, and the stage moves on when the
    /// output does (thinking → streaming → preparing a web search), never back.
    fn output(&mut self, started: Instant, observer: &dyn CallObserver, kind: Got) {
        if !self.content_started {
            self.content_started = true;
            self.time_to_first_token = Some(started.elapsed());
        }
        if self.announced.is_none_or(|shown| shown < kind) {
            self.announced = Some(kind);
            let stage = match kind {
                Got::Reasoning => "thinking",
                Got::Content => "streaming",
                Got::ToolCall => "preparing a web search",
            };
            observer.output(stage.to_string());
        }
    }
}

/// What kind of output a chunk carried, in the order a streamed answer brings them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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
    /// Bytes of the sources' titles and links received (duplicates included).
    sources_size: usize,
    /// Bytes of text, reasoning, tool calls and sources received: what the cap is checked on.
    size: usize,
    usage: Option<Usage>,
    /// The last finish reason a choice named.
    finish_reason: Option<String>,
    finished: bool,
    saw_choice: bool,
}

impl Collected {
    fn chunk(&mut self, chunk: Chunk) -> Added {
        let mut added = Added::default();
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        self.add_sources(chunk.web_search.into_vec());
        for choice in chunk.choices.into_vec() {
            self.saw_choice = true;
            let delta = choice.delta;
            if let Some(text) = reasoning_of(
                delta.reasoning_content,
                delta.reasoning,
                delta.reasoning_details,
            ) {
                self.size += text.len();
                self.reasoning.push_str(&text);
                added.reasoning += 1;
            }
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                self.size += text.len();
                self.text.push_str(&text);
                added.content += 1;
            }
            for (position, part) in delta.tool_calls.into_vec().into_iter().enumerate() {
                // A fragment with no name and no arguments (`{}`) is no output: it neither
                // starts the answer (which ends retries) nor times the first token.
                let carries = part.function.as_ref().is_some_and(|f| {
                    f.name.as_ref().is_some_and(|n| !n.is_empty())
                        || f.arguments
                            .as_ref()
                            .is_some_and(|a| !a.is_null() && a.as_str() != Some(""))
                });
                self.size += self.calls.add(position, part);
                added.tool_calls += u64::from(carries);
            }
            // Kimi's streaming guide puts usage inside the final choice.
            if let Some(usage) = choice.usage {
                self.usage = Some(usage);
            }
            self.finish(choice.finish_reason);
        }
        added
    }

    /// A choice's finish reason: the answer is complete (in form); the last reason is kept.
    fn finish(&mut self, reason: Option<String>) {
        if let Some(reason) = reason {
            self.finished = true;
            if !reason.is_empty() {
                self.finish_reason = Some(reason);
            }
        }
    }

    fn completion(&mut self, completion: Completion) {
        self.usage = completion.usage;
        self.add_sources(completion.web_search.into_vec());
        for choice in completion.choices.into_vec() {
            self.saw_choice = true;
            self.finish(choice.finish_reason);
            // A whole answer is finished whether or not it names its reason.
            self.finished = true;
            let text = choice.message.content.unwrap_or_default();
            let reasoning = reasoning_of(
                choice.message.reasoning_content,
                choice.message.reasoning,
                choice.message.reasoning_details,
            )
            .unwrap_or_default();
            self.size += text.len() + reasoning.len();
            self.text.push_str(&text);
            self.reasoning.push_str(&reasoning);
            for (position, call) in choice.message.tool_calls.into_vec().into_iter().enumerate() {
                self.size += self.calls.add(position, call);
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
        let bytes: usize = found.iter().map(|s| s.title.len() + s.url.len()).sum();
        self.sources_size += bytes;
        self.size += bytes;
        super::search::add_sources(&mut self.sources, &found);
    }
}

/// What one more tool call costs beyond its text, as counted against the answer cap.
const CALL_BOOKKEEPING: usize = 64;

/// Tool calls put together from their streamed fragments: each fragment names its call by
/// `index`; the first carries id, type and name, the arguments come in pieces to concatenate.
#[derive(Default)]
struct ToolCallParts {
    calls: std::collections::BTreeMap<usize, ToolCall>,
    /// Bytes of ids, types, names and arguments received.
    size: usize,
    /// Fragments of calls past [`MOST_TOOL_CALLS`], left out.
    left_out: usize,
}

/// A context window no model's exceeds (the largest are two million tokens).
const LARGEST_WINDOW: u64 = 2_000_000;

/// Most tool calls one answer is taken with: models ask for a few at once; each is answered
/// (a `$web_search` is billed) and sent back.
const MOST_TOOL_CALLS: usize = 64;

impl ToolCallParts {
    /// Adds a fragment; `position` (its place in the chunk's list) stands in for a missing
    /// index. Returns the bytes it added (a new call counts for its bookkeeping too, so that
    /// empty fragments with ever new indexes are bounded as well).
    fn add(&mut self, position: usize, part: ToolCallPart) -> usize {
        let index = part.index.unwrap_or(position);
        let mut added = if self.calls.contains_key(&index) {
            0
        } else if self.calls.len() >= MOST_TOOL_CALLS {
            self.left_out += 1;
            return 0;
        } else {
            CALL_BOOKKEEPING
        };
        let call = self.calls.entry(index).or_default();
        if let Some(id) = part.id.filter(|i| !i.is_empty())
            && call.id.is_empty()
        {
            added += id.len();
            call.id = id;
        }
        if let Some(kind) = part.kind.filter(|k| !k.is_empty())
            && call.kind.is_empty()
        {
            added += kind.len();
            call.kind = kind;
        }
        if let Some(function) = part.function {
            if let Some(name) = function.name.filter(|n| !n.is_empty())
                && call.function.name.is_empty()
            {
                added += name.len();
                call.function.name = name;
            }
            let before = call.function.arguments.len();
            match function.arguments {
                Some(serde_json::Value::String(piece)) => call.function.arguments.push_str(&piece),
                // Some servers send whole arguments as an object rather than a JSON text.
                Some(serde_json::Value::Null) | None => {}
                Some(other) => call.function.arguments.push_str(&other.to_string()),
            }
            added += call.function.arguments.len() - before;
        }
        self.size += added;
        added
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
    data: FirstOf<ModelEntry, MOST_LISTED_MODELS>,
}

#[derive(Deserialize)]
struct ModelEntry {
    id: String,
    /// OpenRouter's reasoning settings of the model, read leniently by `ListedReasoning`.
    #[serde(default)]
    reasoning: Option<serde_json::Value>,
}

/// A chat-completions body: a streamed chunk (its choices carry a `delta`) or a whole answer
/// (its choices carry a `message`).
///
/// Its arrays are read only as far as exai uses them ([`FirstOf`]): one choice (exai asks for
/// one), and bounded tool calls, reasoning parts and sources.
#[derive(Deserialize)]
struct Envelope<Choice> {
    #[serde(default = "FirstOf::default")]
    choices: FirstOf<Choice, 1>,
    #[serde(default, deserialize_with = "usage_leniently")]
    usage: Option<Usage>,
    error: Option<serde_json::Value>,
    /// GLM: what its server-side web search found.
    #[serde(default)]
    web_search: FirstOf<WebSearchItem, MOST_SOURCES>,
}

/// Longest model name taken from a provider's list: the longest real ones are under 100.
const MOST_MODEL_ID_BYTES: usize = 256;

/// Whether `id`, from a provider's list, can be a model's name: it goes into requests, logs,
/// records and metric labels, and the list is chosen from when no model is named. A space
/// inside is taken (local servers name models "Phi-3 Mini Instruct"); one at either end, a
/// line break, a control character or any other kind of space is not.
fn is_plausible_model_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MOST_MODEL_ID_BYTES
        && id.trim() == id
        && !id
            .chars()
            .any(|c| c.is_control() || (c.is_whitespace() && c != ' '))
}

/// Most models a provider's list is read for: hundreds are offered by the largest.
const MOST_LISTED_MODELS: usize = 5_000;
/// Most tool calls (or parts of them) one delta or message is read for.
const MOST_TOOL_CALL_PARTS: usize = 128;
/// Most reasoning parts one delta or message is read for.
const MOST_REASONING_PARTS: usize = 64;

type Chunk = Envelope<ChunkChoice>;
/// A whole (non-streamed) chat completion.
type Completion = Envelope<CompletionChoice>;

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Delta,
    finish_reason: Option<String>,
    #[serde(default, deserialize_with = "usage_leniently")]
    usage: Option<Usage>,
}

/// A streamed piece of the answer. Reasoning comes as `reasoning_content` (GLM, Kimi, most
/// servers) or as OpenRouter's `reasoning` with the same text again in `reasoning_details`.
#[derive(Deserialize, Default)]
struct Delta {
    content: Option<String>,
    reasoning_content: Option<String>,
    reasoning: Option<String>,
    #[serde(default)]
    reasoning_details: FirstOf<ReasoningDetail, MOST_REASONING_PARTS>,
    #[serde(default)]
    tool_calls: FirstOf<ToolCallPart, MOST_TOOL_CALL_PARTS>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    #[serde(default)]
    message: CompletionMessage,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct CompletionMessage {
    content: Option<String>,
    reasoning_content: Option<String>,
    reasoning: Option<String>,
    #[serde(default)]
    reasoning_details: FirstOf<ReasoningDetail, MOST_REASONING_PARTS>,
    #[serde(default)]
    tool_calls: FirstOf<ToolCallPart, MOST_TOOL_CALL_PARTS>,
}

/// One of OpenRouter's `reasoning_details`: `reasoning.text` carries `text`,
/// `reasoning.summary` carries `summary`; `reasoning.encrypted` carries only opaque `data`,
/// which exai neither reads nor keeps.
#[derive(Deserialize)]
struct ReasoningDetail {
    text: Option<String>,
    summary: Option<String>,
}

/// The reasoning a delta or message carries, read from one field only — OpenRouter sends the
/// same text in `reasoning` and in `reasoning_details`, and adding both would double it.
fn reasoning_of(
    reasoning_content: Option<String>,
    reasoning: Option<String>,
    details: FirstOf<ReasoningDetail, MOST_REASONING_PARTS>,
) -> Option<String> {
    if let Some(text) = reasoning_content.filter(|t| !t.is_empty()) {
        return Some(text);
    }
    if let Some(text) = reasoning.filter(|t| !t.is_empty()) {
        return Some(text);
    }
    let text: String = details
        .into_vec()
        .into_iter()
        .filter_map(|d| d.text.or(d.summary))
        .collect();
    (!text.is_empty()).then_some(text)
}

/// How an answer ended, by its finish reason.
#[derive(Debug, PartialEq, Eq)]
enum Finish {
    /// `stop`, `tool_calls` and the like: the model ended its answer.
    Complete,
    /// Cut short (the output limit, a content filter, the context window): the answer is
    /// kept, with a note saying so.
    Cut(String),
    /// The provider failed while answering: an error.
    Failed(&'static str),
}

/// What a finish reason means: GLM's stop, tool_calls, length, sensitive,
/// model_context_window_exceeded, network_error; OpenAI's content_filter and function_call;
/// OpenRouter's error.
fn finish_kind(reason: &str) -> Finish {
    match reason.to_ascii_lowercase().as_str() {
        "stop" | "tool_calls" | "function_call" | "end_turn" | "stop_sequence" | "eos" => {
            Finish::Complete
        }
        "network_error" => Finish::Failed("the provider lost its connection to the model"),
        "error" => Finish::Failed("the provider failed while answering"),
        "length" | "max_tokens" => Finish::Cut(format!(
            "The answer was cut at the output limit (finish_reason: {reason}): it may end \
             mid-sentence or leave things out; ask for a shorter answer, or continue the \
             conversation for the rest."
        )),
        "sensitive" | "content_filter" => Finish::Cut(format!(
            "The provider's content filter stopped the answer (finish_reason: {reason}): what \
             came before it is shown, and it is incomplete."
        )),
        "model_context_window_exceeded" => Finish::Cut(format!(
            "The answer was cut because the model's context window was full (finish_reason: \
             {reason}): send less (fewer or smaller files, a shorter history) to get all of it."
        )),
        _ => Finish::Cut(format!(
            "The provider ended the answer with finish_reason {reason:?}, not a normal stop: it \
             may be incomplete."
        )),
    }
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

/// Far more tokens than any call is billed: a larger count is a provider's garbage, clamped so
/// sums and costs cannot overflow.
const MOST_TOKENS: u64 = 1 << 40;

/// A token count as a provider sent it: a number is taken (a fraction rounded down, past
/// [`MOST_TOKENS`] clamped); anything else (negative, text, an object) is no count. A bad count
/// never costs the answer it came with.
fn token_count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let sent = Option::<serde_json::Value>::deserialize(d)?;
    let count = sent.as_ref().and_then(|value| {
        (value.as_u64()).or_else(|| value.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
    });
    Ok(count.map(|count| count.min(MOST_TOKENS)))
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default, deserialize_with = "token_count")]
    prompt_tokens: Option<u64>,
    #[serde(default, deserialize_with = "token_count")]
    completion_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    completion_tokens_details: Option<UsageDetails>,
    /// GLM, OpenAI, OpenRouter: `cached_tokens` inside.
    #[serde(default, deserialize_with = "lenient")]
    prompt_tokens_details: Option<PromptDetails>,
    /// Kimi: cached input tokens at the top level of `usage`.
    #[serde(default, deserialize_with = "token_count")]
    cached_tokens: Option<u64>,
}

/// `usage` as sent, or none when it is no usage object: taken raw first, so that not even a
/// number out of range (`1e400`, which fails any other reading) costs the answer it came with.
fn usage_leniently<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Usage>, D::Error> {
    let sent = Option::<Box<serde_json::value::RawValue>>::deserialize(d)?;
    Ok(sent.and_then(|raw| serde_json::from_str(raw.get()).ok()))
}

/// A part of `usage` that is not the object expected (`null`, a number) is no part.
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let sent = Option::<serde_json::Value>::deserialize(d)?;
    Ok(sent.and_then(|value| serde_json::from_value(value).ok()))
}

impl Usage {
    /// Input tokens served from the provider's cache, wherever the provider puts them.
    fn cached(&self) -> Option<u64> {
        self.prompt_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens)
            .or(self.cached_tokens)
    }
}

#[derive(Deserialize)]
struct UsageDetails {
    #[serde(default, deserialize_with = "token_count")]
    reasoning_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default, deserialize_with = "token_count")]
    cached_tokens: Option<u64>,
}

#[cfg(test)]
mod chunk_tests {
    //! Stream chunks as providers send them.

    #[test]
    fn a_chunk_is_parsed_into_content_reasoning_and_usage() {
        let chunk: super::Chunk = serde_json::from_str(
            r#"{"choices":[{"delta":{"reasoning_content":"hm","content":"hi"},"finish_reason":"stop"}],
                "usage":{"prompt_tokens":3,"completion_tokens":2,"completion_tokens_details":{"reasoning_tokens":1}}}"#,
        )
        .unwrap();
        assert_eq!(chunk.choices.0[0].delta.content.as_deref(), Some("hi"));
        assert_eq!(
            chunk.choices.0[0].delta.reasoning_content.as_deref(),
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

    #[test]
    fn garbage_in_usage_costs_no_answer_and_no_count_can_overflow() {
        let chunk: super::Chunk = serde_json::from_str(
            r#"{"choices":[{"delta":{"content":"hi"},"finish_reason":"stop"}],
                "usage":{"prompt_tokens":1e30,"completion_tokens":-3,"cached_tokens":"many",
                         "completion_tokens_details":7,
                         "prompt_tokens_details":{"cached_tokens":18446744073709551615}}}"#,
        )
        .unwrap();
        assert_eq!(chunk.choices.0[0].delta.content.as_deref(), Some("hi"));
        let usage = chunk.usage.unwrap();
        assert_eq!(usage.prompt_tokens, Some(super::MOST_TOKENS));
        assert_eq!(usage.completion_tokens, None);
        assert!(usage.completion_tokens_details.is_none());
        assert_eq!(usage.cached(), Some(super::MOST_TOKENS));
        assert_eq!(super::MOST_TOKENS as i64 as u64, super::MOST_TOKENS);
    }

    #[test]
    fn usage_that_is_no_usage_costs_no_answer_even_out_of_range() {
        for usage in [
            r#""n/a""#,
            "[]",
            r#"{"prompt_tokens":1e400,"completion_tokens":2}"#,
            &format!(r#"{{"prompt_tokens":{}}}"#, "9".repeat(400)),
        ] {
            for chunk in [
                format!(r#"{{"choices":[{{"delta":{{"content":"hi"}}}}],"usage":{usage}}}"#),
                format!(r#"{{"choices":[{{"delta":{{"content":"hi"}},"usage":{usage}}}]}}"#),
            ] {
                let chunk: super::Chunk = serde_json::from_str(&chunk).unwrap();
                assert_eq!(chunk.choices.0[0].delta.content.as_deref(), Some("hi"));
                let choice = &chunk.choices.0[0];
                for read in [&chunk.usage, &choice.usage] {
                    assert!(
                        read.as_ref().is_none_or(|u| u.prompt_tokens.is_none()),
                        "{usage}"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod reasoning_tests {
    //! Reasoning as each provider streams it: one field read, never two added.

    use super::*;

    fn reasoning_in(delta: &str) -> Option<String> {
        let d: Delta = serde_json::from_str(delta).unwrap();
        reasoning_of(d.reasoning_content, d.reasoning, d.reasoning_details)
    }

    #[test]
    fn reasoning_details_alone_are_read_and_encrypted_ones_skipped() {
        let only_details = r#"{"reasoning_details":[{"type":"reasoning.text","text":"a"},
            {"type":"reasoning.encrypted","data":"opaque"},
            {"type":"reasoning.summary","summary":"b"}]}"#;
        assert_eq!(reasoning_in(only_details).as_deref(), Some("ab"));
        let both =
            r#"{"reasoning":"x","reasoning_details":[{"type":"reasoning.text","text":"x"}]}"#;
        assert_eq!(reasoning_in(both).as_deref(), Some("x"));
        let glm = r#"{"reasoning_content":"r","reasoning":"r"}"#;
        assert_eq!(reasoning_in(glm).as_deref(), Some("r"));
        assert_eq!(reasoning_in(r#"{"reasoning":null,"content":"c"}"#), None);
        assert_eq!(
            reasoning_in(r#"{"reasoning":"","reasoning_details":[]}"#),
            None
        );
    }

    #[test]
    fn finish_reasons_end_complete_cut_or_failed() {
        for complete in ["stop", "tool_calls", "function_call", "STOP"] {
            assert_eq!(finish_kind(complete), Finish::Complete, "{complete}");
        }
        for cut in [
            "length",
            "sensitive",
            "content_filter",
            "model_context_window_exceeded",
            "odd",
        ] {
            assert!(
                matches!(finish_kind(cut), Finish::Cut(note) if note.contains(cut)),
                "{cut}"
            );
        }
        for failed in ["network_error", "error"] {
            assert!(matches!(finish_kind(failed), Finish::Failed(_)), "{failed}");
        }
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

#[cfg(test)]
mod bound_tests {
    //! What counts against the answer cap, and the URLs requests go to.

    use super::*;

    fn chunk(data: &str) -> Chunk {
        serde_json::from_str(data).unwrap()
    }

    #[test]
    fn text_reasoning_tool_calls_and_sources_all_count_against_the_cap() {
        let mut collected = Collected::default();
        collected.chunk(chunk(
            r#"{"choices":[{"delta":{"reasoning_content":"abcd","content":"xy"}}]}"#,
        ));
        assert_eq!(collected.size, 6);
        collected.chunk(chunk(
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c","type":"f","function":{"name":"n","arguments":"{}"}}]}}]}"#,
        ));
        assert_eq!(collected.size, 6 + CALL_BOOKKEEPING + 5);
        assert_eq!(collected.calls.size, CALL_BOOKKEEPING + 5);
        // Empty fragments with ever new indexes are not free.
        for i in 1..=3 {
            collected.chunk(chunk(&format!(
                r#"{{"choices":[{{"delta":{{"tool_calls":[{{"index":{i}}}]}}}}]}}"#
            )));
        }
        assert_eq!(collected.size, 6 + 4 * CALL_BOOKKEEPING + 5);
        collected.chunk(chunk(
            r#"{"web_search":[{"title":"T","link":"https://a/"}],"choices":[]}"#,
        ));
        assert_eq!(collected.sources_size, 11);
        assert_eq!(collected.size, 6 + 4 * CALL_BOOKKEEPING + 5 + 11);
    }

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(size_text(512), "512 bytes");
        assert_eq!(size_text(16 * 1024), "16 KiB");
        assert_eq!(size_text(8 * 1024 * 1024), "8 MiB");
        assert_eq!(size_text(4000 * 1024), "3.9 MiB");
        assert_eq!(size_text(100 * 1024), "100 KiB");
    }

    #[test]
    fn paths_go_before_the_query_and_userinfo_gives_way_to_a_key() {
        let url = endpoint_url("https://u:p@h.example/v1?key=k&x=1", "/models", false).unwrap();
        assert_eq!(url.as_str(), "https://u:p@h.example/v1/models?key=k&x=1");
        let url = endpoint_url("https://u:p@h.example/v1/", "/chat/completions", true).unwrap();
        assert_eq!(url.as_str(), "https://h.example/v1/chat/completions");
        assert!(endpoint_url("https://", "/models", false).is_err());
        assert_eq!(
            url_secrets("https://u:p%40ss@h/v1?api_key=a%2Fb&v=1&token=t"),
            ["u", "p@ss", "p%40ss", "a/b", "a%2Fb", "t"]
        );
    }
}
