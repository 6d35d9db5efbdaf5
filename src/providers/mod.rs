//! Model providers: the trait every provider implements, and the set configured.
//!
//! One file per provider; today every endpoint speaks the OpenAI chat-completions
//! protocol (`openai_compat`). The providers issue adds GLM, Kimi and friends here.

pub mod openai_compat;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;

use crate::config::Config;

/// One message of a conversation sent to a model.
#[derive(Debug, Clone, Serialize)]
pub struct ChatMessage {
    pub role: &'static str,
    pub content: String,
}

/// A request for one model answer.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub temperature: Option<f32>,
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
    /// A new stage ("connecting to …", "waiting for first token", "streaming").
    fn stage(&self, stage: String);
    /// Which provider and model serve the call.
    fn model(&self, provider: &str, model: &str);
    /// More output arrived (`reasoning` for thinking tokens).
    fn tokens(&self, count: u64, reasoning: bool);
}

/// Why a provider call failed; every message names the provider and what was waited for.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("could not reach provider {provider} at {url}: {detail}")]
    Connect {
        provider: String,
        url: String,
        detail: String,
    },
    #[error("provider {provider} sent nothing for {waited_s} s while {what}")]
    Idle {
        provider: String,
        what: String,
        waited_s: u64,
    },
    #[error("provider {provider} answered HTTP {status}: {message}")]
    Status {
        provider: String,
        status: u16,
        message: String,
    },
    #[error("provider {provider} sent a malformed answer: {detail}")]
    Garbage { provider: String, detail: String },
    #[error("provider {provider} closed the stream before the answer was complete")]
    Truncated { provider: String },
}

impl ProviderError {
    /// Short machine-readable kind, stored in the call record.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Connect { .. } => "provider_unreachable",
            ProviderError::Idle { .. } => "provider_idle_timeout",
            ProviderError::Status { status: 429, .. } => "provider_rate_limited",
            ProviderError::Status { status: 401, .. }
            | ProviderError::Status { status: 403, .. } => "provider_auth",
            ProviderError::Status { .. } => "provider_http_error",
            ProviderError::Garbage { .. } => "provider_garbage",
            ProviderError::Truncated { .. } => "provider_truncated",
        }
    }

    /// Whether this is the provider going silent (a timeout, not a failure).
    pub fn is_timeout(&self) -> bool {
        matches!(self, ProviderError::Idle { .. })
    }
}

/// A model provider.
pub trait Provider: Send + Sync {
    /// Name shown to users ("custom", "glm", …).
    fn name(&self) -> &str;
    /// Base URL of its API (no secrets in it).
    fn base_url(&self) -> &str;
    /// The model used when the caller names none.
    fn default_model(&self) -> Option<&str>;
    /// One streaming chat completion; dropping the future closes the request.
    fn chat<'a>(
        &'a self,
        request: ChatRequest,
        observer: &'a dyn CallObserver,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>>;
}

/// The providers configured in this process.
#[derive(Clone, Default)]
pub struct Providers {
    all: Vec<Arc<dyn Provider>>,
}

impl Providers {
    pub fn from_config(config: &Config) -> Self {
        let all = config
            .endpoints
            .iter()
            .map(|endpoint| {
                Arc::new(openai_compat::OpenAiCompatible::new(
                    endpoint,
                    config.provider_connect_timeout,
                    config.provider_idle_timeout,
                )) as Arc<dyn Provider>
            })
            .collect();
        Self { all }
    }

    pub fn all(&self) -> &[Arc<dyn Provider>] {
        &self.all
    }

    /// Picks the provider for `model` (or the default model); returns the provider and model id.
    pub fn resolve(&self, model: Option<&str>) -> Result<(Arc<dyn Provider>, String), String> {
        let Some(first) = self.all.first() else {
            return Err(
                "no model provider is configured: set CUSTOM_API_URL (and CUSTOM_API_KEY, \
                        CUSTOM_MODEL_NAME) to an OpenAI-compatible endpoint"
                    .into(),
            );
        };
        if let Some((provider, model)) = model.and_then(|m| m.split_once(':')) {
            return match self.all.iter().find(|p| p.name() == provider) {
                Some(p) => Ok((p.clone(), model.to_string())),
                None => Err(format!(
                    "no provider named {provider:?}; configured: {}",
                    self.names().join(", ")
                )),
            };
        }
        match model.filter(|m| !m.is_empty() && *m != "auto") {
            Some(m) => Ok((first.clone(), m.to_string())),
            None => match first.default_model() {
                Some(m) => Ok((first.clone(), m.to_string())),
                None => Err(format!(
                    "no model given and provider {} has no default: pass `model` or set CUSTOM_MODEL_NAME",
                    first.name()
                )),
            },
        }
    }

    fn names(&self) -> Vec<&str> {
        self.all.iter().map(|p| p.name()).collect()
    }
}
