//! Model providers: one file per provider dialect over one OpenAI-compatible core,
//! the catalog of models, and the set of endpoints configured in this process.

mod body;
pub mod catalog;
mod client;
mod custom;
mod errors;
#[cfg(test)]
mod fixture_tests;
mod glm;
mod kimi;
mod limits;
mod openai;
pub mod openai_compat;
mod openrouter;
mod retry;
#[cfg(test)]
pub(crate) mod scripted;
mod search;
pub mod sse;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

pub(crate) use body::request_body;
pub use catalog::{Catalog, ListedReasoning, ModelInfo, Thinking};
pub(crate) use client::ModelClient;
pub use errors::ErrorClass;
pub use limits::ConcurrencyLimit;
pub use search::can_search;

use crate::config::{Config, EndpointConfig, RetryConfig};
use openai_compat::OpenAiCompatible;

/// One message of a conversation sent to a model.
#[derive(Debug, Clone, Default)]
pub struct ChatMessage {
    pub role: &'static str,
    pub content: String,
    /// Images shown with a user message, as data URLs.
    pub images: Vec<String>,
    /// An assistant turn's reasoning, sent back where the platform wants it (Kimi).
    pub reasoning_content: Option<String>,
    /// The tools an assistant turn asked for.
    pub tool_calls: Vec<ToolCall>,
    /// A tool message: the call it answers, and the tool's name.
    pub tool_call_id: Option<String>,
    pub name: Option<String>,
}

/// The OpenAI wire form: `content` is a string, or text and image parts when there are images.
impl Serialize for ChatMessage {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("role", self.role)?;
        if self.images.is_empty() {
            map.serialize_entry("content", &self.content)?;
        } else {
            let mut parts = vec![serde_json::json!({"type": "text", "text": self.content})];
            parts.extend(
                self.images
                    .iter()
                    .map(|url| serde_json::json!({"type": "image_url", "image_url": {"url": url}})),
            );
            map.serialize_entry("content", &parts)?;
        }
        if let Some(reasoning) = &self.reasoning_content {
            map.serialize_entry("reasoning_content", reasoning)?;
        }
        if !self.tool_calls.is_empty() {
            map.serialize_entry("tool_calls", &self.tool_calls)?;
        }
        if let Some(id) = &self.tool_call_id {
            map.serialize_entry("tool_call_id", id)?;
        }
        if let Some(name) = &self.name {
            map.serialize_entry("name", name)?;
        }
        map.end()
    }
}

impl ChatMessage {
    fn plain(role: &'static str, content: String) -> Self {
        Self {
            role,
            content,
            ..Self::default()
        }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self::plain("system", content.into())
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::plain("user", content.into())
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::plain("assistant", content.into())
    }
}

/// A tool call a model asked for, as the OpenAI protocol spells it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ToolCall {
    pub id: String,
    /// `function`, or `builtin_function` for a tool the platform runs itself (Kimi).
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionCall,
}

/// The function part of a tool call; `arguments` is a JSON text, kept verbatim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FunctionCall {
    pub name: String,
    pub arguments: String,
}

/// A web page a model's answer drew on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    pub title: String,
    pub url: String,
}

/// A request for one model answer.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub temperature: Option<f32>,
    /// Ask the model to think (`Some(true)`), not to (`Some(false)`), or leave it to the model.
    pub thinking: Option<bool>,
    /// Let the model search the web, where it and its provider can (else a note says it did not).
    pub web_search: bool,
    /// The call's deadline: no attempt, wait or retry goes past it.
    pub deadline: Instant,
    /// The most output tokens this call wants (a tool's `EXAI_TOOL_MAX_OUTPUT`); the model's
    /// own limit caps it, and without it the model's limit is asked for.
    pub max_output: Option<u64>,
    /// exai's count of the tokens in the messages' text, when it counted them (to fit files or
    /// history); else the output limit estimates them from their size.
    pub prompt_tokens: Option<u64>,
}

#[cfg(test)]
impl ChatRequest {
    /// One user message and nothing else set, a minute to answer it (for tests).
    pub(crate) fn question(text: &str) -> Self {
        Self {
            messages: vec![ChatMessage::user(text)],
            temperature: None,
            thinking: None,
            web_search: false,
            deadline: Instant::now() + Duration::from_secs(60),
            max_output: None,
            prompt_tokens: None,
        }
    }
}

/// A model's answer and what it cost.
#[derive(Debug, Clone, Default)]
pub struct ChatResponse {
    pub provider: String,
    pub model: String,
    pub text: String,
    pub reasoning: Option<String>,
    pub tokens_in: Option<u64>,
    pub tokens_out: Option<u64>,
    pub reasoning_tokens: Option<u64>,
    /// Input tokens the provider served from its cache (part of `tokens_in`).
    pub cached_tokens: Option<u64>,
    /// Why the model stopped, as the provider said it (`stop`, `length`, `sensitive`, …).
    pub finish_reason: Option<String>,
    pub attempts: u32,
    pub time_to_first_token: Option<Duration>,
    /// Web pages the answer drew on, as the provider reported them (GLM's web search).
    pub sources: Vec<Source>,
    /// Web searches the model ran through exai's tool loop (Kimi's `$web_search`).
    pub web_searches: u32,
    /// What the caller should know about how the answer came about ("no web search: …").
    pub notes: Vec<String>,
    /// Tools the model asked for in this round; handled inside `providers`, empty in an answer.
    pub(crate) tool_calls: Vec<ToolCall>,
}

/// Receives what a provider call is doing, for progress and records.
pub trait CallObserver: Send + Sync {
    /// A new stage ("waiting for glm", "queued · 2 ahead for glm", "streaming").
    fn stage(&self, stage: String);
    /// Which provider and model serve the call.
    fn model(&self, provider: &str, model: &str);
    /// The model's output began or moved on (`thinking`, `streaming`, `preparing a web
    /// search`): a stage of the one answer being streamed.
    fn output(&self, stage: String) {
        self.stage(stage);
    }
    /// More output arrived (`reasoning` for thinking tokens).
    fn tokens(&self, count: u64, reasoning: bool);
}

/// A duration as people read it in a message: `1 s`, `1.5 s`, `600 s` (tenths, rounded).
#[derive(Debug, Clone, Copy)]
pub struct Seconds(pub Duration);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tenths = (self.0.as_millis() + 50) / 100;
        if tenths.is_multiple_of(10) {
            write!(f, "{} s", tenths / 10)
        } else {
            write!(f, "{}.{} s", tenths / 10, tenths % 10)
        }
    }
}

/// Why a provider call failed; every message names the provider and what was waited for.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("could not reach {provider} at {url}: {detail}")]
    Connect {
        provider: String,
        url: String,
        detail: String,
    },
    #[error("{provider} ({model}) sent nothing for {waited} while {what}")]
    Idle {
        provider: String,
        model: String,
        what: String,
        waited: Seconds,
    },
    #[error("{provider} ({model}) answered HTTP {status}: {message}{hint}")]
    Status {
        provider: String,
        model: String,
        status: u16,
        message: String,
        /// What to do about it, with a leading " — ".
        hint: String,
        retry_after: Option<Duration>,
        /// What the body says the failure is (quota, rate limit, overload, …).
        class: ErrorClass,
    },
    #[error("{provider} ({model}) reported an error in the middle of its answer: {message}{hint}")]
    Stream {
        provider: String,
        model: String,
        message: String,
        /// What to do about it, with a leading " — ".
        hint: String,
        class: ErrorClass,
    },
    #[error("{provider} ({model}) sent a malformed answer: {detail}")]
    Garbage {
        provider: String,
        model: String,
        detail: String,
    },
    #[error("{provider} ({model}) closed the connection before the answer was complete: {detail}")]
    Truncated {
        provider: String,
        model: String,
        detail: String,
    },
    #[error(
        "{provider} ({model}) sent {what}; the request was stopped (EXAI_MAX_ANSWER_BYTES sets \
         the limit)"
    )]
    TooLarge {
        provider: String,
        model: String,
        /// What was received: "more than 8 MiB (answer 7.9 MiB, reasoning 0.1 MiB) without finishing".
        what: String,
    },
    #[error(
        "{provider} ({model}) answered HTTP {status}, a redirect to {location}; exai follows no \
         redirects from providers (one would send the prompt and files there) — if that address \
         is right, make it the provider's URL"
    )]
    Redirect {
        provider: String,
        model: String,
        status: u16,
        /// Where it pointed, credentials masked.
        location: String,
    },
    #[error("no room before the call's deadline for {what}")]
    Deadline { what: String },
    #[error(
        "{provider} ({model}) still asked to search the web after {rounds} rounds of searching; exai \
         stops there so a call cannot loop — ask a narrower question, or without use_websearch"
    )]
    SearchLoop {
        provider: String,
        model: String,
        rounds: u32,
    },
}

impl ProviderError {
    /// Short machine-readable kind, stored in the call record.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Connect { .. } => "provider_unreachable",
            ProviderError::Idle { .. } => "provider_idle_timeout",
            ProviderError::Status { class, .. } | ProviderError::Stream { class, .. }
                if class.is_account_problem() =>
            {
                match class {
                    ErrorClass::Quota => "provider_quota_exhausted",
                    _ => "provider_account_blocked",
                }
            }
            ProviderError::Status {
                class: ErrorClass::Overloaded,
                ..
            } => "provider_overloaded",
            ProviderError::Status {
                class: ErrorClass::RateLimited,
                ..
            } => "provider_rate_limited",
            ProviderError::Stream { .. } => "provider_stream_error",
            ProviderError::Status {
                status: 401 | 403, ..
            } => "provider_auth",
            ProviderError::Status { .. } => "provider_http_error",
            ProviderError::Garbage { .. } => "provider_garbage",
            ProviderError::Truncated { .. } => "provider_truncated",
            ProviderError::TooLarge { .. } => "provider_answer_too_large",
            ProviderError::Redirect { .. } => "provider_redirect",
            ProviderError::Deadline { .. } => "deadline",
            ProviderError::SearchLoop { .. } => "provider_search_loop",
        }
    }

    /// A timeout rather than a failure.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            ProviderError::Idle { .. } | ProviderError::Deadline { .. }
        )
    }

    /// Worth another attempt at the same model: the request never got an answer (connect),
    /// or the provider said "later" (a rate limit, an overload, 5xx) — not when the account's
    /// balance or plan is exhausted, which no wait of seconds mends.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Connect { .. } => true,
            ProviderError::Status { class, .. } | ProviderError::Stream { class, .. } => {
                class.is_retryable()
            }
            _ => false,
        }
    }

    /// Worth trying a fallback model: this one is unavailable or out of retries, or its
    /// account is out (a fallback on another provider's account may still answer).
    pub fn wants_fallback(&self) -> bool {
        self.is_retryable()
            || self.account_problem()
            || matches!(self, ProviderError::Status { status: 404, .. })
            || matches!(self, ProviderError::Idle { .. })
    }

    /// The account behind the endpoint is out of balance or plan, or blocked: every model on
    /// that endpoint would be refused the same way.
    pub fn account_problem(&self) -> bool {
        matches!(
            self,
            ProviderError::Status { class, .. } | ProviderError::Stream { class, .. }
                if class.is_account_problem()
        )
    }
}

/// The number of attempts a failed call made, and the tokens it spent, carried next to its error.
#[derive(Debug, Clone)]
pub struct Failure {
    pub error: ProviderError,
    pub attempts: u32,
    pub spent: Spent,
}

impl Failure {
    pub fn new(error: ProviderError, attempts: u32) -> Self {
        Self {
            error,
            attempts,
            spent: Spent::default(),
        }
    }
}

/// Tokens already spent by a call that failed later (earlier rounds of a web search).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spent {
    pub tokens_in: Option<u64>,
    pub tokens_out: Option<u64>,
    pub reasoning_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
}

impl Spent {
    pub(crate) fn of(answer: &ChatResponse) -> Self {
        Self {
            tokens_in: answer.tokens_in,
            tokens_out: answer.tokens_out,
            reasoning_tokens: answer.reasoning_tokens,
            cached_tokens: answer.cached_tokens,
        }
    }

    pub(crate) fn add(&mut self, other: Spent) {
        self.tokens_in = add_tokens(self.tokens_in, other.tokens_in);
        self.tokens_out = add_tokens(self.tokens_out, other.tokens_out);
        self.reasoning_tokens = add_tokens(self.reasoning_tokens, other.reasoning_tokens);
        self.cached_tokens = add_tokens(self.cached_tokens, other.cached_tokens);
    }

    /// Puts the sums into an answer.
    pub(crate) fn into_answer(self, answer: &mut ChatResponse) {
        answer.tokens_in = self.tokens_in;
        answer.tokens_out = self.tokens_out;
        answer.reasoning_tokens = self.reasoning_tokens;
        answer.cached_tokens = self.cached_tokens;
    }
}

/// Sum of two optional counts; unknown only when both are.
pub(crate) fn add_tokens(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    }
}

/// A usable endpoint: its client, its queue, its retry policy.
pub struct Endpoint {
    pub config: EndpointConfig,
    client: Arc<dyn ModelClient>,
    limit: ConcurrencyLimit,
    retry: RetryConfig,
}

impl Endpoint {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// One model answer, waiting in line, retrying as configured, and running the web-search
    /// rounds the model asks for; the slot in line is held for all rounds.
    async fn chat(
        &self,
        model: &ModelInfo,
        request: &ChatRequest,
        observer: &dyn CallObserver,
    ) -> Result<ChatResponse, Failure> {
        let _slot = self
            .limit
            .acquire(&self.config.name, request.deadline, observer)
            .await
            .map_err(|error| Failure::new(error, 0))?;
        search::answer(self, model, request, observer).await
    }

    /// One round: a request with its retries.
    async fn round(
        &self,
        model: &ModelInfo,
        request: &ChatRequest,
        observer: &dyn CallObserver,
        searching: bool,
    ) -> Result<ChatResponse, Failure> {
        retry::with_retries(&self.retry, request.deadline, observer, |attempt| {
            self.client
                .attempt(model, request, observer, attempt, searching)
        })
        .await
    }
}

/// Where a model name led.
#[derive(Clone)]
pub struct Resolved {
    pub endpoint: Arc<Endpoint>,
    pub model: ModelInfo,
}

/// What a tool wants from `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The strongest reasoning available.
    Deep,
    /// A quick, capable answer.
    Fast,
}

/// The endpoints configured in this process, the catalog, and model selection.
pub struct Providers {
    usable: Vec<Arc<Endpoint>>,
    unusable: Vec<EndpointConfig>,
    catalog: Catalog,
    /// Model ids each endpoint reported at `GET /models`.
    discovered: RwLock<HashMap<String, Vec<String>>>,
    /// What endpoints reported of their models' reasoning, by endpoint and model id.
    listed_reasoning: RwLock<HashMap<String, HashMap<String, ListedReasoning>>>,
    default_model: Option<String>,
    fallback_models: Vec<String>,
}

impl Providers {
    pub fn from_config(config: &Config, catalog: Catalog) -> Self {
        Self::with_clients(config, catalog, |endpoint| {
            let client = OpenAiCompatible::new(endpoint, config)?;
            Ok(Arc::new(client) as Arc<dyn ModelClient>)
        })
    }

    /// Like [`Providers::from_config`], each usable endpoint answered by the client `connect`
    /// makes for it (or unusable, with why not).
    pub(crate) fn with_clients(
        config: &Config,
        catalog: Catalog,
        connect: impl Fn(&EndpointConfig) -> Result<Arc<dyn ModelClient>, String>,
    ) -> Self {
        let mut usable = Vec::new();
        let mut unusable = Vec::new();
        for endpoint in &config.endpoints {
            if endpoint.unavailable.is_some() {
                unusable.push(endpoint.clone());
                continue;
            }
            match connect(endpoint) {
                Ok(client) => usable.push(Arc::new(Endpoint {
                    client,
                    limit: ConcurrencyLimit::new(endpoint.max_concurrency),
                    retry: config.retry.clone(),
                    config: endpoint.clone(),
                })),
                Err(why) => {
                    tracing::error!(provider = %endpoint.name, %why, "provider cannot be used");
                    unusable.push(EndpointConfig {
                        unavailable: Some(why),
                        ..endpoint.clone()
                    });
                }
            }
        }
        Self {
            usable,
            unusable,
            catalog,
            discovered: RwLock::new(HashMap::new()),
            listed_reasoning: RwLock::new(HashMap::new()),
            default_model: config.default_model.clone(),
            fallback_models: config.fallback_models.clone(),
        }
    }

    pub fn usable(&self) -> &[Arc<Endpoint>] {
        &self.usable
    }

    pub fn unusable(&self) -> &[EndpointConfig] {
        &self.unusable
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Asks every usable endpoint for its models (bounded), and remembers the answers.
    pub async fn discover(&self, limit: Duration) {
        let asks = self.usable.iter().map(|e| async move {
            let models = tokio::time::timeout(limit, e.client.list_models()).await;
            (e.name().to_string(), models)
        });
        for (name, models) in futures::future::join_all(asks).await {
            match models {
                Ok(Ok(models)) => {
                    tracing::info!(provider = %name, models = models.len(), "models discovered");
                    self.remember_reasoning(&name, &models);
                    if let Ok(mut d) = self.discovered.write() {
                        d.insert(name, models.into_iter().map(|(id, _)| id).collect());
                    }
                }
                Ok(Err(error)) => tracing::warn!(provider = %name, %error, "listing models failed"),
                Err(_) => tracing::warn!(provider = %name, "listing models timed out"),
            }
        }
    }

    fn remember_reasoning(&self, provider: &str, models: &[(String, Option<ListedReasoning>)]) {
        let listed: HashMap<String, ListedReasoning> = models
            .iter()
            .filter_map(|(id, r)| Some((id.clone(), r.clone()?)))
            .collect();
        if let Ok(mut all) = self.listed_reasoning.write() {
            all.insert(provider.to_string(), listed);
        }
    }

    /// `model` as its endpoint last reported it (OpenRouter: mandatory reasoning, efforts).
    fn as_listed(&self, provider: &str, model: ModelInfo) -> ModelInfo {
        let listed = self
            .listed_reasoning
            .read()
            .ok()
            .and_then(|all| all.get(provider)?.get(&model.id).cloned());
        match listed {
            Some(listed) => model.with_listed(&listed),
            None => model,
        }
    }

    /// Models an endpoint reported.
    pub fn discovered(&self, provider: &str) -> Vec<String> {
        self.discovered
            .read()
            .map(|d| d.get(provider).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    fn endpoint(&self, name: &str) -> Option<&Arc<Endpoint>> {
        self.usable.iter().find(|e| e.name() == name)
    }

    fn allowed(endpoint: &Endpoint, model: &str) -> bool {
        endpoint
            .config
            .allowed_models
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|a| a.eq_ignore_ascii_case(model)))
    }

    /// Every model a caller may name now, as `provider:model`.
    pub fn available_models(&self) -> Vec<String> {
        let mut names = Vec::new();
        for e in &self.usable {
            let mut ids: Vec<String> = self
                .catalog
                .of_provider(e.name())
                .map(|m| m.id.clone())
                .collect();
            ids.extend(e.config.models.iter().cloned());
            ids.extend(self.discovered(e.name()));
            ids.sort();
            ids.dedup();
            names.extend(
                ids.into_iter()
                    .filter(|m| Self::allowed(e, m))
                    .map(|m| format!("{}:{m}", e.name())),
            );
        }
        names
    }

    fn model_on(&self, endpoint: &Arc<Endpoint>, name: &str) -> Result<Resolved, String> {
        if !Self::allowed(endpoint, name) {
            return Err(self.unknown(
                name,
                &format!("it is not in {}'s allowed models", endpoint.name()),
            ));
        }
        let model = self
            .catalog
            .find(name, Some(endpoint.name()))
            .cloned()
            .unwrap_or_else(|| ModelInfo::unlisted(endpoint.name(), name));
        let model = self.as_listed(endpoint.name(), model);
        Ok(Resolved {
            endpoint: endpoint.clone(),
            model,
        })
    }

    fn unknown(&self, name: &str, why: &str) -> String {
        let available = self.available_models();
        let shown = fair_share(&available, 30);
        let mut text = format!("model {name:?} cannot be used: {why}. ");
        if available.is_empty() {
            text.push_str(
                "No provider is configured: set GLM_API_KEY, KIMI_API_KEY, OPENAI_API_KEY, \
                           OPENROUTER_API_KEY or CUSTOM_API_URL.",
            );
        } else {
            text.push_str(&format!("Available: {}", shown.join(", ")));
            if available.len() > shown.len() {
                text.push_str(&format!(
                    " (and {} more; see listmodels)",
                    available.len() - shown.len()
                ));
            }
        }
        text
    }

    /// Resolves a model name: `provider:model`, a catalog id or alias, a model an endpoint
    /// declared or reported, or `auto`/nothing (the default model, else the best available).
    pub fn resolve(&self, name: Option<&str>, need: Need) -> Result<Resolved, String> {
        let name = name
            .map(str::trim)
            .filter(|n| !n.is_empty() && !n.eq_ignore_ascii_case("auto"));
        let Some(name) = name else {
            return match self
                .default_model
                .as_deref()
                .filter(|d| !d.eq_ignore_ascii_case("auto"))
            {
                Some(default) => self.resolve(Some(default), need),
                None => self.auto(need),
            };
        };
        if let Some((provider, model)) = name.split_once(':')
            && let Some(endpoint) = self.endpoint(provider)
        {
            return self.model_on(endpoint, model);
        }
        if let Some((provider, _)) = name.split_once(':')
            && let Some(config) = self.unusable.iter().find(|c| c.name == provider)
        {
            return Err(self.unknown(
                name,
                &format!(
                    "provider {provider} is not configured ({})",
                    config.unavailable.as_deref().unwrap_or("?")
                ),
            ));
        }
        if let Some(model) = self.catalog.find(name, None) {
            if let Some(endpoint) = self.endpoint(&model.provider) {
                return self.model_on(endpoint, &model.id);
            }
            // The same model may be served by a generic endpoint that declared or reported it.
            if let Some(found) = self.declared(name) {
                return Ok(found);
            }
            let why = match self.unusable.iter().find(|c| c.name == model.provider) {
                Some(c) => format!(
                    "it needs provider {}, which is not configured ({})",
                    model.provider,
                    c.unavailable.as_deref().unwrap_or("?")
                ),
                None => format!(
                    "it needs provider {}, which is not configured",
                    model.provider
                ),
            };
            return Err(self.unknown(name, &why));
        }
        if let Some(found) = self.declared(name) {
            return Ok(found);
        }
        // One endpoint only: hand it any name (a local server knows its own models).
        if let [only] = self.usable.as_slice() {
            return self.model_on(only, name);
        }
        Err(self.unknown(name, "no configured provider offers it"))
    }

    fn declared(&self, name: &str) -> Option<Resolved> {
        self.usable.iter().find_map(|e| {
            let known = e
                .config
                .models
                .iter()
                .chain(self.discovered(e.name()).iter())
                .any(|m| m == name);
            known.then(|| self.model_on(e, name).ok()).flatten()
        })
    }

    /// `auto`: the best-scoring allowed catalog model of a usable endpoint, never a deprecated one.
    fn auto(&self, need: Need) -> Result<Resolved, String> {
        let mut candidates: Vec<Resolved> = self
            .usable
            .iter()
            .flat_map(|e| {
                self.catalog
                    .of_provider(e.name())
                    .filter(|m| m.deprecated.is_none() && Self::allowed(e, &m.id))
                    .map(|m| Resolved {
                        endpoint: e.clone(),
                        model: self.as_listed(e.name(), m.clone()),
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        candidates.sort_by_key(|r| {
            let fast_bonus = u32::from(need == Need::Fast && r.model.fast) * 1000;
            std::cmp::Reverse(r.model.score + fast_bonus)
        });
        if let Some(best) = candidates.into_iter().next() {
            return Ok(best);
        }
        // Only generic endpoints: their declared default, else the first model they name.
        for e in &self.usable {
            let first = e
                .config
                .default_model
                .clone()
                .or_else(|| e.config.models.first().cloned())
                .or_else(|| self.discovered(e.name()).into_iter().next());
            if let Some(model) = first {
                return self.model_on(e, &model);
            }
        }
        Err(self.unknown("auto", "exai has no model to choose from"))
    }

    /// One answer from `primary`, then from each fallback model in turn while the
    /// failure is one a fallback can help with — all inside the request's deadline.
    pub async fn chat(
        &self,
        primary: Resolved,
        request: &ChatRequest,
        observer: &dyn CallObserver,
    ) -> Result<ChatResponse, Failure> {
        let mut attempts = 0;
        let mut spent = Spent::default();
        let mut chain = vec![primary];
        for name in &self.fallback_models {
            match self.resolve(Some(name), Need::Deep) {
                Ok(r)
                    if !chain.iter().any(|c| {
                        c.model.id == r.model.id && c.endpoint.name() == r.endpoint.name()
                    }) =>
                {
                    chain.push(r)
                }
                Ok(_) => {}
                Err(why) => tracing::debug!(fallback = %name, %why, "fallback model not usable"),
            }
        }
        let mut last = None;
        // Endpoints whose account said it is out: their other models are not asked.
        let mut refused: Vec<&str> = Vec::new();
        for (i, target) in chain.iter().enumerate() {
            if refused.contains(&target.endpoint.name()) {
                continue;
            }
            if i > 0 {
                observer.stage(format!("falling back to {}", target.model.id));
                tracing::warn!(fallback = %target.model.id, provider = target.endpoint.name(), "trying a fallback model");
            }
            observer.model(target.endpoint.name(), &target.model.id);
            match target.endpoint.chat(&target.model, request, observer).await {
                Ok(mut answer) => {
                    answer.attempts += attempts;
                    spent.add(Spent::of(&answer));
                    spent.into_answer(&mut answer);
                    return Ok(answer);
                }
                Err(failure) => {
                    attempts += failure.attempts;
                    spent.add(failure.spent);
                    if failure.error.account_problem() {
                        refused.push(target.endpoint.name());
                    }
                    let go_on = failure.error.wants_fallback() && Instant::now() < request.deadline;
                    last = Some(failure.error);
                    if !go_on {
                        break;
                    }
                }
            }
        }
        Err(Failure {
            error: last.unwrap_or(ProviderError::Deadline {
                what: "a model answer".into(),
            }),
            attempts,
            spent,
        })
    }
}

/// At most `limit` of the `provider:model` names, taken in turn from each provider so that one
/// provider with many models does not hide the others; in their original order.
fn fair_share(names: &[String], limit: usize) -> Vec<String> {
    let provider = |n: &String| n.split_once(':').map_or(n.clone(), |(p, _)| p.to_string());
    let mut providers: Vec<String> = names.iter().map(provider).collect();
    providers.dedup();
    let mut taken = vec![false; names.len()];
    let mut count = 0;
    'rounds: loop {
        let mut progressed = false;
        for p in &providers {
            if let Some(i) = (0..names.len()).find(|&i| !taken[i] && provider(&names[i]) == *p) {
                if count == limit {
                    break 'rounds;
                }
                taken[i] = true;
                count += 1;
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    names
        .iter()
        .zip(taken)
        .filter(|(_, t)| *t)
        .map(|(n, _)| n.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_gets_its_share_of_the_names_shown() {
        let names: Vec<String> = (0..40)
            .map(|i| format!("glm:m{i:02}"))
            .chain(["kimi:a", "kimi:b"].map(String::from))
            .collect();
        let shown = fair_share(&names, 5);
        assert_eq!(shown, ["glm:m00", "glm:m01", "glm:m02", "kimi:a", "kimi:b"]);
        assert_eq!(fair_share(&names, 100).len(), 42);
    }
}
