//! One usable endpoint: its client, its queue in front of the provider, its retry policy.

use super::{
    CallObserver, ChatRequest, ChatResponse, ConcurrencyLimit, Failure, ModelClient, ModelInfo,
    retry, search,
};
use crate::config::{EndpointConfig, RetryConfig};

/// A usable endpoint: its client, its queue, its retry policy.
pub struct Endpoint {
    pub config: EndpointConfig,
    pub(super) client: std::sync::Arc<dyn ModelClient>,
    pub(super) limit: ConcurrencyLimit,
    pub(super) retry: RetryConfig,
}

impl Endpoint {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// One model answer, waiting in line, retrying as configured, and running the web-search
    /// rounds the model asks for; the slot in line is held for all rounds.
    pub(super) async fn chat(
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
    pub(super) async fn round(
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
