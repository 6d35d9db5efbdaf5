//! The OpenAI chat-completions protocol, streamed over SSE: the core every provider speaks.

use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::retry::AttemptError;
use super::{
    CallObserver, ChatRequest, ChatResponse, ModelInfo, ProviderError, hint_for, shape_body,
};
use crate::config::{EndpointConfig, ProviderKind, Secret};

/// Longest error body read from a failed request.
const MAX_ERROR_BODY: usize = 16 * 1024;

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

    /// One streaming attempt.
    pub async fn attempt(
        &self,
        model: &ModelInfo,
        request: &ChatRequest,
        observer: &dyn CallObserver,
        attempt: u32,
    ) -> Result<ChatResponse, AttemptError> {
        let mut state = Stream::default();
        self.stream(model, request, observer, attempt, &mut state)
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
        state: &mut Stream,
    ) -> Result<ChatResponse, ProviderError> {
        let mut body = json!({"model": model.id, "messages": request.messages, "stream": true});
        shape_body(self.kind, model, request, &mut body);
        let url = format!("{}/chat/completions", self.base_url);
        observer.stage(format!("waiting for {}", self.name));
        tracing::info!(provider = %self.name, model = %model.id, attempt, "provider request sent");
        let started = Instant::now();
        let send = self
            .request(reqwest::Method::POST, "/chat/completions")
            .json(&body)
            .send();
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
        observer.stage("waiting for the first token".into());
        let mut events = response.bytes_stream().eventsource();
        let mut answer = ChatResponse {
            provider: self.name.clone(),
            model: model.id.clone(),
            ..Default::default()
        };
        let mut reasoning = String::new();
        let mut finished = false;
        let mut saw_choice = false;
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
                Ok(None) => break,
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
                finished = true;
                break;
            }
            let chunk: Chunk = serde_json::from_str(data).map_err(|e| ProviderError::Garbage {
                provider: self.name.clone(),
                model: model.id.clone(),
                detail: format!("{e} in stream event {:?}", snippet(data)),
            })?;
            if let Some(error) = chunk.error {
                return Err(ProviderError::Status {
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
                });
            }
            if let Some(usage) = chunk.usage {
                answer.tokens_in = usage.prompt_tokens;
                answer.tokens_out = usage.completion_tokens;
                answer.reasoning_tokens = usage
                    .completion_tokens_details
                    .and_then(|d| d.reasoning_tokens);
            }
            for choice in chunk.choices {
                saw_choice = true;
                if let Some(text) = choice.delta.reasoning_content.filter(|t| !t.is_empty()) {
                    reasoning.push_str(&text);
                    observer.tokens(1, true);
                    state.first_token(&mut answer, started, observer, "thinking");
                }
                if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                    answer.text.push_str(&text);
                    observer.tokens(1, false);
                    state.first_token(&mut answer, started, observer, "streaming");
                }
                if choice.finish_reason.is_some() {
                    finished = true;
                }
            }
        }
        if !saw_choice {
            return Err(ProviderError::Garbage {
                provider: self.name.clone(),
                model: model.id.clone(),
                detail: "the answer had no choices".into(),
            });
        }
        if !finished {
            return Err(ProviderError::Truncated {
                provider: self.name.clone(),
                model: model.id.clone(),
                detail: "the stream ended without a finish reason or [DONE]".into(),
            });
        }
        // No usage from the provider: count with the tokenizer rather than leave the record blank.
        if answer.tokens_out.is_none() {
            answer.tokens_out = Some(
                (crate::tokens::count(&answer.text) + crate::tokens::count(&reasoning)) as u64,
            );
            tracing::debug!(provider = %self.name, "no usage reported; output tokens estimated");
        }
        if answer.tokens_in.is_none() {
            let prompt: usize = request
                .messages
                .iter()
                .map(|m| crate::tokens::count(&m.content) + 4)
                .sum();
            answer.tokens_in = Some(prompt as u64);
        }
        if !reasoning.is_empty() {
            answer.reasoning = Some(reasoning);
        }
        tracing::info!(
            provider = %self.name,
            model = %answer.model,
            tokens_in = answer.tokens_in,
            tokens_out = answer.tokens_out,
            reasoning_tokens = answer.reasoning_tokens,
            ttft_ms = answer.time_to_first_token.map(|t| t.as_millis() as u64),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "provider answer complete"
        );
        Ok(answer)
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
}

impl Stream {
    fn first_token(
        &mut self,
        answer: &mut ChatResponse,
        started: Instant,
        observer: &dyn CallObserver,
        stage: &str,
    ) {
        if !self.content_started {
            self.content_started = true;
            answer.time_to_first_token = Some(started.elapsed());
            observer.stage(stage.to_string());
        } else if stage == "streaming" && answer.text.len() <= 4 {
            // The answer proper started after reasoning.
            observer.stage(stage.to_string());
        }
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

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    usage: Option<Usage>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Delta,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct Delta {
    content: Option<String>,
    reasoning_content: Option<String>,
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
