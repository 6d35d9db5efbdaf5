//! Model providers: one file per provider dialect over one OpenAI-compatible core,
//! the catalog of models, and the set of endpoints configured in this process.

pub mod catalog;
mod custom;
mod glm;
mod kimi;
mod limits;
mod openai;
pub mod openai_compat;
mod openrouter;
mod retry;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use catalog::{Catalog, ModelInfo, Thinking};
pub use limits::ConcurrencyLimit;

use crate::config::{Config, EndpointConfig, ProviderKind, RetryConfig};
use openai_compat::OpenAiCompatible;

/// One message of a conversation sent to a model.
#[derive(Debug, Clone, Serialize)]
pub struct ChatMessage {
    pub role: &'static str,
    pub content: String,
}

/// A request for one model answer.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub temperature: Option<f32>,
    /// Ask the model to think (`Some(true)`), not to (`Some(false)`), or leave it to the model.
    pub thinking: Option<bool>,
    /// The call's deadline: no attempt, wait or retry goes past it.
    pub deadline: Instant,
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
    pub attempts: u32,
    pub time_to_first_token: Option<Duration>,
}

/// Receives what a provider call is doing, for progress and records.
pub trait CallObserver: Send + Sync {
    /// A new stage ("waiting for glm", "queued · 2 ahead for glm", "streaming").
    fn stage(&self, stage: String);
    /// Which provider and model serve the call.
    fn model(&self, provider: &str, model: &str);
    /// More output arrived (`reasoning` for thinking tokens).
    fn tokens(&self, count: u64, reasoning: bool);
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
    #[error("{provider} ({model}) sent nothing for {waited_s} s while {what}")]
    Idle {
        provider: String,
        model: String,
        what: String,
        waited_s: u64,
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
    #[error("no room before the call's deadline for {what}")]
    Deadline { what: String },
}

impl ProviderError {
    /// Short machine-readable kind, stored in the call record.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Connect { .. } => "provider_unreachable",
            ProviderError::Idle { .. } => "provider_idle_timeout",
            ProviderError::Status { status: 429, .. } => "provider_rate_limited",
            ProviderError::Status {
                status: 401 | 403, ..
            } => "provider_auth",
            ProviderError::Status { .. } => "provider_http_error",
            ProviderError::Garbage { .. } => "provider_garbage",
            ProviderError::Truncated { .. } => "provider_truncated",
            ProviderError::Deadline { .. } => "deadline",
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
    /// or the provider said "later" (429, 5xx).
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Connect { .. } => true,
            ProviderError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// Worth trying a fallback model: this one is unavailable or out of retries.
    pub fn wants_fallback(&self) -> bool {
        self.is_retryable()
            || matches!(self, ProviderError::Status { status: 404, .. })
            || matches!(self, ProviderError::Idle { .. })
    }
}

/// The number of attempts a failed call made, carried next to its error.
#[derive(Debug, Clone)]
pub struct Failure {
    pub error: ProviderError,
    pub attempts: u32,
}

/// A usable endpoint: its client, its queue, its retry policy.
pub struct Endpoint {
    pub config: EndpointConfig,
    client: OpenAiCompatible,
    limit: ConcurrencyLimit,
    retry: RetryConfig,
}

impl Endpoint {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// One model answer, waiting in line and retrying as configured.
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
            .map_err(|error| Failure { error, attempts: 0 })?;
        retry::with_retries(&self.retry, request.deadline, observer, |attempt| {
            self.client.attempt(model, request, observer, attempt)
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
    default_model: Option<String>,
    fallback_models: Vec<String>,
}

impl Providers {
    pub fn from_config(config: &Config, catalog: Catalog) -> Self {
        let mut usable = Vec::new();
        let mut unusable = Vec::new();
        for endpoint in &config.endpoints {
            if endpoint.unavailable.is_some() {
                unusable.push(endpoint.clone());
                continue;
            }
            usable.push(Arc::new(Endpoint {
                client: OpenAiCompatible::new(
                    endpoint,
                    config.provider_connect_timeout,
                    config.provider_idle_timeout,
                    config.first_token_timeout,
                ),
                limit: ConcurrencyLimit::new(endpoint.max_concurrency),
                retry: config.retry.clone(),
                config: endpoint.clone(),
            }));
        }
        Self {
            usable,
            unusable,
            catalog,
            discovered: RwLock::new(HashMap::new()),
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
                    if let Ok(mut d) = self.discovered.write() {
                        d.insert(name, models);
                    }
                }
                Ok(Err(error)) => tracing::warn!(provider = %name, %error, "listing models failed"),
                Err(_) => tracing::warn!(provider = %name, "listing models timed out"),
            }
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
        Ok(Resolved {
            endpoint: endpoint.clone(),
            model,
        })
    }

    fn unknown(&self, name: &str, why: &str) -> String {
        let available = self.available_models();
        let shown: Vec<_> = available.iter().take(30).cloned().collect();
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

    /// `auto`: the best-scoring allowed catalog model of a usable endpoint.
    fn auto(&self, need: Need) -> Result<Resolved, String> {
        let mut candidates: Vec<Resolved> = self
            .usable
            .iter()
            .flat_map(|e| {
                self.catalog
                    .of_provider(e.name())
                    .filter(|m| Self::allowed(e, &m.id))
                    .map(|m| Resolved {
                        endpoint: e.clone(),
                        model: m.clone(),
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
        for (i, target) in chain.iter().enumerate() {
            if i > 0 {
                observer.stage(format!("falling back to {}", target.model.id));
                tracing::warn!(fallback = %target.model.id, provider = target.endpoint.name(), "trying a fallback model");
            }
            observer.model(target.endpoint.name(), &target.model.id);
            match target.endpoint.chat(&target.model, request, observer).await {
                Ok(mut answer) => {
                    answer.attempts += attempts;
                    return Ok(answer);
                }
                Err(failure) => {
                    attempts += failure.attempts;
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
        })
    }
}

/// Builds the provider-specific request body from the common parts.
pub(crate) fn shape_body(
    kind: ProviderKind,
    model: &ModelInfo,
    request: &ChatRequest,
    body: &mut serde_json::Value,
) {
    match kind {
        ProviderKind::Glm => glm::shape(model, request, body),
        ProviderKind::Kimi => kimi::shape(model, request, body),
        ProviderKind::OpenAi => openai::shape(model, request, body),
        ProviderKind::OpenRouter => openrouter::shape(model, request, body),
        ProviderKind::Custom => custom::shape(model, request, body),
    }
}

/// What to tell the user about an HTTP error from this kind of provider.
pub(crate) fn hint_for(kind: ProviderKind, key_source: Option<&str>, status: u16) -> String {
    match status {
        401 | 403 => match key_source {
            Some(var) => format!(" — the key was rejected; check {var}"),
            None => " — the endpoint wants a key; set one".to_string(),
        },
        404 => " — the model or URL does not exist there; see listmodels".to_string(),
        429 => " — rate limited; exai retried as long as the deadline allowed".to_string(),
        s if s >= 500 => match kind {
            ProviderKind::Custom => " — the endpoint failed; is the server healthy?".to_string(),
            _ => {
                " — the provider failed; exai retried; try again later or another model".to_string()
            }
        },
        _ => String::new(),
    }
}
