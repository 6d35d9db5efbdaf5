//! An in-process model client for unit tests, scripted by model name with the fake provider's
//! vocabulary (`exai_fake_provider::script`): no HTTP and no process, and every wait is a tokio
//! timer, so tests on paused time wait for nothing. It plays the scripts that make sense without
//! a connection — `fake-fast`, `fake-json`, `fake-delay-<ms>`, `fake-stream-<n>x<ms>`,
//! `fake-thinkstream-<n>x<ms>`, `fake-slowstart-<ms>x<n>`, `fake-nousage-<n>`,
//! `fake-comments-<n>`, `fake-hang`, `fake-stall-<n>`, `fake-429-<k>`, `fake-429r<s>-<k>`,
//! `fake-500`, `fake-500-<k>`, `fake-503`, `fake-401`, `fake-garbage`, `fake-nochoices`,
//! `fake-truncated`, `fake-reset`, `fake-resetmid-<n>` — and answers `echo: <last user message>`
//! as the fake does. Any other name is a 404, as an unknown model is at the fake.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use exai_fake_provider::script::{self, Script};
use futures::future::BoxFuture;
use serde_json::json;

use super::client::{DocumentUpload, ExtractError, ModelClient, ModelList, PlannedRequest};
use super::errors::{self, ErrorBody};
use super::openai_compat::ListModelsError;
use super::retry::AttemptError;
use super::{CallObserver, ChatRequest, ChatResponse, ModelInfo, ProviderError};
use crate::config::ProviderKind;

/// Answers every request of one endpoint by the script its model name names.
pub(crate) struct Scripted {
    provider: String,
    /// Requests seen per model name (for `fake-429-<k>` and `fake-500-<k>`).
    seen: Mutex<HashMap<String, u32>>,
    /// The model of every attempt, in order.
    asked: Mutex<Vec<String>>,
}

/// How a scripted answer comes out.
#[derive(Default)]
struct Plan {
    reasoning: Vec<String>,
    content: Vec<String>,
    /// Before each chunk (reasoning and content).
    gap: Duration,
    /// Before the first chunk.
    first_gap: Duration,
    with_usage: bool,
    /// The usage to report instead of counting words: prompt, completion and cached tokens.
    usage: Option<(u64, u64, Option<u64>)>,
    /// After the chunks: `None` ends the answer, else the connection fails or goes silent.
    ending: Option<Ending>,
}

enum Ending {
    Silence,
    Truncated,
}

impl Scripted {
    /// The client of the endpoint named `provider`.
    pub(crate) fn new(provider: &str) -> Self {
        Self {
            provider: provider.to_string(),
            seen: Mutex::new(HashMap::new()),
            asked: Mutex::new(Vec::new()),
        }
    }

    /// The model of every attempt so far, in order.
    pub(crate) fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// True while `model`'s request should still fail (its first `limit` requests).
    fn take_failure(&self, model: &str, limit: u32) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let count = seen.entry(model.to_string()).or_default();
        *count = count.saturating_add(1);
        *count <= limit
    }

    async fn play(
        &self,
        model: &ModelInfo,
        request: &ChatRequest,
        observer: &dyn CallObserver,
    ) -> Result<ChatResponse, AttemptError> {
        self.asked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(model.id.clone());
        observer.stage(format!("waiting for {}", self.provider));
        let echo = script::echo(&last_user(request));
        let words = |chunks: u32| script::token_chunks(chunks, &echo);
        let streamed = |content, gap| Plan {
            content,
            gap,
            with_usage: true,
            ..Plan::default()
        };
        let plan = match Script::parse(&model.id) {
            Script::Fast | Script::Json => streamed(script::split_text(&echo, 3), Duration::ZERO),
            Script::RateLimited { limit, retry_after } if self.take_failure(&model.id, limit) => {
                let body =
                    json!({"error": {"message": "rate limited", "type": "rate_limit_error"}});
                let wait = Duration::from_secs(u64::from(retry_after));
                return Err(self.refused(model, 429, &body.to_string(), Some(wait)));
            }
            Script::ServerErrorFirst(limit) if self.take_failure(&model.id, limit) => {
                let body =
                    json!({"error": {"message": "upstream overloaded", "type": "server_error"}});
                return Err(self.refused(model, 500, &body.to_string(), None));
            }
            Script::RateLimited { .. } | Script::ServerErrorFirst(_) => {
                streamed(script::split_text(&echo, 3), Duration::ZERO)
            }
            Script::Delay(pause) => Plan {
                first_gap: pause,
                ..streamed(script::split_text(&echo, 3), Duration::ZERO)
            },
            Script::Stream { chunks, every } => streamed(words(chunks), every),
            Script::ThinkStream { chunks, every } => Plan {
                reasoning: (0..chunks).map(|i| format!("thought{i} ")).collect(),
                ..streamed(words(chunks), every)
            },
            Script::SlowStart { wait, chunks } => Plan {
                first_gap: wait,
                ..streamed(words(chunks), Duration::ZERO)
            },
            Script::Comments(chunks) => streamed(words(chunks), Duration::ZERO),
            Script::Usage {
                tokens_in,
                tokens_out,
                cached,
            } => Plan {
                usage: Some((tokens_in, tokens_out, cached)),
                ..streamed(script::split_text(&echo, 3), Duration::ZERO)
            },
            Script::NoUsage(chunks) => Plan {
                with_usage: false,
                ..streamed(words(chunks), Duration::ZERO)
            },
            Script::Hang => Plan {
                ending: Some(Ending::Silence),
                ..Plan::default()
            },
            Script::Stall(chunks) => Plan {
                ending: Some(Ending::Silence),
                ..streamed(script::tokens(chunks), Duration::ZERO)
            },
            Script::ResetMid(chunks) => Plan {
                ending: Some(Ending::Truncated),
                ..streamed(script::tokens(chunks), Duration::ZERO)
            },
            Script::Truncated | Script::Reset => Plan {
                ending: Some(Ending::Truncated),
                ..Plan::default()
            },
            Script::ServerError => {
                let body =
                    json!({"error": {"message": "internal server error", "type": "server_error"}});
                return Err(self.refused(model, 500, &body.to_string(), None));
            }
            Script::Unavailable => return Err(self.refused(model, 503, "", None)),
            Script::Unauthorized => {
                let body = json!({"error": {"message": "invalid api key", "type": "invalid_request_error", "code": "invalid_api_key"}});
                return Err(self.refused(model, 401, &body.to_string(), None));
            }
            Script::Garbage | Script::NoChoices => {
                let error = ProviderError::Garbage {
                    provider: self.provider.clone(),
                    model: model.id.clone(),
                    detail: "the scripted answer is not a completion".to_string(),
                };
                return Err(not_started(error));
            }
            _ => {
                let message = format!("model '{}' not found", model.id);
                let body = json!({"error": {"message": message, "type": "invalid_request_error", "code": "model_not_found"}});
                return Err(self.refused(model, 404, &body.to_string(), None));
            }
        };
        self.stream(model, request, observer, plan).await
    }

    /// Sends the plan's chunks to `observer` on its schedule, then ends as it says.
    async fn stream(
        &self,
        model: &ModelInfo,
        request: &ChatRequest,
        observer: &dyn CallObserver,
        plan: Plan,
    ) -> Result<ChatResponse, AttemptError> {
        let started = tokio::time::Instant::now();
        let mut first_token = None;
        tokio::time::sleep(plan.first_gap).await;
        for (reasoning, chunks) in [(true, &plan.reasoning), (false, &plan.content)] {
            for i in 0..chunks.len() {
                tokio::time::sleep(plan.gap).await;
                if first_token.is_none() {
                    first_token = Some(started.elapsed());
                }
                observer.tokens(1, reasoning);
                if i == 0 {
                    observer.output(if reasoning { "thinking" } else { "streaming" }.to_string());
                }
            }
        }
        let content_started = first_token.is_some();
        match plan.ending {
            Some(Ending::Silence) => return std::future::pending().await,
            Some(Ending::Truncated) => {
                let error = ProviderError::Truncated {
                    provider: self.provider.clone(),
                    model: model.id.clone(),
                    detail: "connection reset".to_string(),
                };
                return Err(AttemptError {
                    error,
                    content_started,
                });
            }
            None => {}
        }
        let text = plan.content.concat();
        let reasoning = (!plan.reasoning.is_empty()).then(|| plan.reasoning.concat());
        let words = |text: &str| text.split_whitespace().count() as u64;
        let reasoning_tokens = reasoning.as_deref().map(words);
        let tokens_out = words(&text) + reasoning_tokens.unwrap_or(0);
        let tokens_in = request.messages.iter().map(|m| words(&m.content)).sum();
        let (tokens_in, tokens_out, cached_tokens) = match plan.usage {
            Some((tokens_in, tokens_out, cached)) => (Some(tokens_in), Some(tokens_out), cached),
            None => (
                plan.with_usage.then_some(tokens_in),
                plan.with_usage.then_some(tokens_out),
                None,
            ),
        };
        Ok(ChatResponse {
            provider: self.provider.clone(),
            model: model.id.clone(),
            text,
            reasoning,
            tokens_in,
            tokens_out,
            cached_tokens,
            reasoning_tokens: reasoning_tokens.filter(|_| plan.with_usage),
            finish_reason: Some("stop".to_string()),
            time_to_first_token: first_token,
            ..ChatResponse::default()
        })
    }

    /// An HTTP error answer, read as the HTTP client reads one.
    fn refused(
        &self,
        model: &ModelInfo,
        status: u16,
        body: &str,
        retry_after: Option<Duration>,
    ) -> AttemptError {
        let fields = ErrorBody::parse(body);
        let kind = ProviderKind::Custom;
        let class = errors::classify(kind, status, &fields, retry_after.is_some());
        let key = errors::Key {
            source: None,
            set: false,
        };
        not_started(ProviderError::Status {
            provider: self.provider.clone(),
            model: model.id.clone(),
            status,
            message: fields
                .message
                .clone()
                .unwrap_or_else(|| "an HTML error page (503 Service Unavailable)".to_string()),
            hint: errors::hint(kind, key, status, class, &fields),
            retry_after,
            class,
        })
    }
}

fn not_started(error: ProviderError) -> AttemptError {
    AttemptError {
        error,
        content_started: false,
    }
}

/// The text of the conversation's last user message.
fn last_user(request: &ChatRequest) -> String {
    request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| m.content.to_string())
        .unwrap_or_default()
}

impl ModelClient for Scripted {
    fn attempt<'a>(
        &'a self,
        model: &'a ModelInfo,
        request: &'a ChatRequest,
        observer: &'a dyn CallObserver,
        _attempt: u32,
        _searching: bool,
    ) -> BoxFuture<'a, Result<ChatResponse, AttemptError>> {
        Box::pin(self.play(model, request, observer))
    }

    fn plan(&self, model: &ModelInfo, request: &ChatRequest) -> PlannedRequest {
        PlannedRequest {
            method: "POST",
            url: "scripted://chat/completions".into(),
            headers: Vec::new(),
            body: super::request_body(ProviderKind::Custom, "", model, request),
        }
    }

    fn extract<'a>(
        &'a self,
        document: DocumentUpload<'a>,
        _deadline: std::time::Instant,
        _observer: &'a dyn CallObserver,
    ) -> BoxFuture<'a, Result<String, ExtractError>> {
        let text = format!("scripted extraction of {}", document.name);
        Box::pin(std::future::ready(Ok(text)))
    }

    fn list_models(&self) -> BoxFuture<'_, Result<ModelList, ListModelsError>> {
        let models = script::EXAMPLE_MODELS
            .iter()
            .map(|id| (id.to_string(), None))
            .collect();
        Box::pin(std::future::ready(Ok(models)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::App;
    use crate::calls::Progress;
    use crate::providers::Need;

    /// One answer through the providers (queue, retries, fallback) from the scripted client.
    async fn ask(app: &App, model: &str) -> Result<ChatResponse, ProviderError> {
        let target = app
            .settings()
            .providers
            .resolve(Some(model), Need::Fast)
            .expect(model);
        let observer = Progress::new("chat");
        let request = ChatRequest::question("hi");
        let answer = app
            .settings()
            .providers
            .chat(target, &request, &observer)
            .await;
        answer.map_err(|failure| failure.error)
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limited_model_is_retried_until_it_answers() {
        let test = App::for_tests(&[]);
        let answer = ask(&test.app, "fake-429-2").await.expect("an answer");
        assert_eq!(answer.text, "echo: hi");
        assert_eq!(answer.attempts, 3, "two refusals, then the answer");
        assert_eq!(test.client.asked().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn scripts_answer_as_the_fake_does() {
        let test = App::for_tests(&[("EXAI_RETRY_ATTEMPTS", "1")]);
        let streamed = ask(&test.app, "fake-thinkstream-3x100")
            .await
            .expect("an answer");
        assert_eq!(streamed.text, "tok0 tok1 echo: hi");
        assert_eq!(
            streamed.reasoning.as_deref(),
            Some("thought0 thought1 thought2 ")
        );
        let first_token = streamed.time_to_first_token.expect("timed");
        assert!(first_token >= Duration::from_millis(100), "{first_token:?}");
        let unknown = ask(&test.app, "fake-nonsense").await.expect_err("a 404");
        assert!(
            unknown
                .to_string()
                .contains("HTTP 404: model 'fake-nonsense' not found"),
            "{unknown}"
        );
        let broken = ask(&test.app, "fake-500").await.expect_err("a 500");
        assert!(
            broken
                .to_string()
                .contains("HTTP 500: internal server error"),
            "{broken}"
        );
        let cut = ask(&test.app, "fake-resetmid-2")
            .await
            .expect_err("a reset");
        assert!(matches!(cut, ProviderError::Truncated { .. }), "{cut}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_fallback_answer_costs_what_every_model_of_the_chain_billed() {
        let dir = crate::scratch::scratch_dir("prices");
        let file = dir.join("models.toml");
        std::fs::write(
            &file,
            "[[model]]\nid = \"fake-500\"\nprovider = \"custom\"\nprice = { input = 9, output = 9 }\n\n\
             [[model]]\nid = \"fake-usage-2000x100c1000\"\nprovider = \"custom\"\n\
             price = { input = 1.5, cached_input = 0.5, output = 6 }\n",
        )
        .unwrap();
        let test = App::for_tests(&[
            ("EXAI_MODELS_FILE", &file.display().to_string()),
            ("EXAI_FALLBACK_MODELS", "fake-usage-2000x100c1000"),
            ("EXAI_RETRY_ATTEMPTS", "1"),
        ]);
        let answer = ask(&test.app, "fake-500")
            .await
            .expect("the fallback answers");
        assert_eq!(answer.model, "fake-usage-2000x100c1000");
        // The refusal billed nothing; the fallback 1000 × 1.5 + 1000 × 0.5 + 100 × 6 µ$/M.
        assert_eq!(answer.cost.micros(), Some(2600));
        assert_eq!(answer.cost.to_string(), "$0.002600");
        let _ = std::fs::remove_dir_all(dir);
    }
}
