//! The OpenAI chat-completions protocol, streamed over SSE: the core every provider speaks.

use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures::StreamExt;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;

use super::{CallObserver, ChatRequest, ChatResponse, Provider, ProviderError};
use crate::config::{EndpointConfig, Secret};

/// Longest error body read from a failed request.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// An OpenAI-compatible endpoint.
pub struct OpenAiCompatible {
    name: String,
    base_url: String,
    api_key: Option<Secret>,
    default_model: Option<String>,
    idle_timeout: Duration,
    http: reqwest::Client,
}

impl OpenAiCompatible {
    pub fn new(
        endpoint: &EndpointConfig,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            name: endpoint.name.clone(),
            base_url: endpoint.base_url.clone(),
            api_key: endpoint.api_key.clone(),
            default_model: endpoint.default_model.clone(),
            idle_timeout,
            http,
        }
    }

    fn idle(&self, what: &str) -> ProviderError {
        ProviderError::Idle {
            provider: self.name.clone(),
            what: what.to_string(),
            waited_s: self.idle_timeout.as_secs(),
        }
    }

    async fn stream_chat(
        &self,
        request: ChatRequest,
        observer: &dyn CallObserver,
    ) -> Result<ChatResponse, ProviderError> {
        let url = format!("{}/chat/completions", self.base_url);
        let mut body = json!({
            "model": request.model,
            "messages": request.messages,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if let Some(t) = request.temperature {
            body["temperature"] = json!(t);
        }
        let mut builder = self.http.post(&url).json(&body);
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key.expose());
        }
        observer.model(&self.name, &request.model);
        observer.stage(format!("waiting for {} to answer", self.name));
        tracing::info!(provider = %self.name, model = %request.model, "provider request sent");
        let started = Instant::now();
        let response = tokio::time::timeout(self.idle_timeout, builder.send())
            .await
            .map_err(|_| self.idle("waiting for response headers"))?
            .map_err(|e| ProviderError::Connect {
                provider: self.name.clone(),
                url: url.clone(),
                detail: error_chain(&e),
            })?;
        let status = response.status();
        tracing::info!(provider = %self.name, status = status.as_u16(), "provider response headers");
        if !status.is_success() {
            return Err(ProviderError::Status {
                provider: self.name.clone(),
                status: status.as_u16(),
                message: self.error_message(response).await,
            });
        }
        observer.stage("waiting for first token".into());
        let mut events = response.bytes_stream().eventsource();
        let mut answer = ChatResponse {
            provider: self.name.clone(),
            model: request.model.clone(),
            attempts: 1,
            ..Default::default()
        };
        let mut reasoning = String::new();
        let mut finished = false;
        let mut streaming = false;
        loop {
            let what = if streaming {
                "streaming the answer"
            } else {
                "waiting for the first token"
            };
            let event = match tokio::time::timeout(self.idle_timeout, events.next()).await {
                Err(_) => return Err(self.idle(what)),
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(ProviderError::Garbage {
                        provider: self.name.clone(),
                        detail: format!("broken event stream: {e}"),
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
                detail: format!("{e} in stream event {:?}", snippet(data)),
            })?;
            if let Some(error) = chunk.error {
                return Err(ProviderError::Status {
                    provider: self.name.clone(),
                    status: 200,
                    message: error.to_string(),
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
                if let Some(text) = choice.delta.reasoning_content.filter(|t| !t.is_empty()) {
                    reasoning.push_str(&text);
                    observer.tokens(1, true);
                    streaming =
                        mark_first_token(streaming, &mut answer, started, observer, "thinking");
                }
                if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                    answer.text.push_str(&text);
                    observer.tokens(1, false);
                    streaming =
                        mark_first_token(streaming, &mut answer, started, observer, "streaming");
                }
                if choice.finish_reason.is_some() {
                    finished = true;
                }
            }
        }
        if !finished {
            return Err(ProviderError::Truncated {
                provider: self.name.clone(),
            });
        }
        if !reasoning.is_empty() {
            answer.reasoning = Some(reasoning);
        }
        tracing::info!(
            provider = %self.name,
            model = %answer.model,
            tokens_in = answer.tokens_in,
            tokens_out = answer.tokens_out,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "provider answer complete"
        );
        Ok(answer)
    }

    async fn error_message(&self, response: reqwest::Response) -> String {
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while body.len() < MAX_ERROR_BODY {
            match tokio::time::timeout(self.idle_timeout, stream.next()).await {
                Ok(Some(Ok(bytes))) => body.extend_from_slice(&bytes),
                _ => break,
            }
        }
        let text = String::from_utf8_lossy(&body);
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| {
                v.pointer("/error/message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| snippet(&text))
    }
}

fn mark_first_token(
    streaming: bool,
    answer: &mut ChatResponse,
    started: Instant,
    observer: &dyn CallObserver,
    stage: &str,
) -> bool {
    if !streaming {
        answer.time_to_first_token = Some(started.elapsed());
        observer.stage(stage.to_string());
    }
    true
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

impl Provider for OpenAiCompatible {
    fn name(&self) -> &str {
        &self.name
    }
    fn base_url(&self) -> &str {
        &self.base_url
    }
    fn default_model(&self) -> Option<&str> {
        self.default_model.as_deref()
    }
    fn chat<'a>(
        &'a self,
        request: ChatRequest,
        observer: &'a dyn CallObserver,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        Box::pin(self.stream_chat(request, observer))
    }
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
