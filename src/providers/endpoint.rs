//! One usable endpoint: its client, its queue in front of the provider, its retry policy.

use super::client::{DocumentUpload, ExtractError, PlannedRequest};
use super::{
    CallObserver, ChatRequest, ChatResponse, ConcurrencyLimit, Failure, ModelClient, ModelInfo,
    ProviderError, retry, search,
};
use crate::config::{EndpointConfig, RetryConfig};
use crate::store::shared_slots::{SharedSlot, SharedSlots, SlotError};

/// A usable endpoint: its client, its queue, its retry policy.
pub struct Endpoint {
    pub config: EndpointConfig,
    pub(super) client: std::sync::Arc<dyn ModelClient>,
    /// Shared with the endpoint's successor when a reload leaves it unchanged.
    pub(super) limit: std::sync::Arc<ConcurrencyLimit>,
    /// The limit every replica on the shared store keeps together, and its size.
    pub(super) shared: Option<(SharedSlots, usize)>,
    pub(super) retry: RetryConfig,
}

impl Endpoint {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Whether this endpoint's provider extracts documents' text (Kimi, GLM).
    pub fn extracts_documents(&self) -> bool {
        super::dialect(self.config.kind)
            .document_extraction()
            .is_some()
    }

    /// The request a chat with `model` would send first, without sending it (a dry run).
    pub fn plan(&self, model: &ModelInfo, request: &ChatRequest) -> PlannedRequest {
        self.client.plan(model, request)
    }

    /// A document's text through the provider's file API, before `deadline`.
    pub async fn extract(
        &self,
        document: DocumentUpload<'_>,
        deadline: std::time::Instant,
        observer: &dyn CallObserver,
    ) -> Result<String, ExtractError> {
        self.client.extract(document, deadline, observer).await
    }

    /// This process's line in front of the provider, as it stands now.
    pub fn queue(&self) -> super::limits::QueueFigures {
        self.limit.figures()
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
        let _shared_slot = self
            .shared_slot(request, observer)
            .await
            .map_err(|error| Failure::new(error, 0))?;
        search::answer(self, model, request, observer).await
    }

    /// A slot of the limit the replicas share, when there is one (after this replica's own).
    async fn shared_slot(
        &self,
        request: &ChatRequest,
        observer: &dyn CallObserver,
    ) -> Result<Option<SharedSlot>, ProviderError> {
        let Some((slots, limit)) = &self.shared else {
            return Ok(None);
        };
        let provider = &self.config.name;
        let waiting = || {
            observer.stage(format!(
                "queued for {provider} (all {limit} of its slots shared by the replicas in use)"
            ))
        };
        match slots
            .acquire(provider, *limit, request.deadline, waiting)
            .await
        {
            Ok(slot) => Ok(Some(slot)),
            Err(SlotError::Deadline { .. }) => Err(ProviderError::Deadline {
                what: format!(
                    "a free slot for {provider} (all {limit} shared by the replicas in use)"
                ),
            }),
            Err(SlotError::Unavailable { why, .. }) => Err(ProviderError::SharedLimit {
                provider: provider.clone(),
                why,
            }),
        }
    }

    /// One round: a request with its retries.
    pub(super) async fn round(
        &self,
        model: &ModelInfo,
        request: &ChatRequest,
        observer: &dyn CallObserver,
        searching: bool,
    ) -> Result<ChatResponse, Failure> {
        retry::with_retries(
            self.name(),
            &self.retry,
            request.deadline,
            observer,
            |attempt| {
                self.client
                    .attempt(model, request, observer, attempt, searching)
            },
        )
        .await
    }
}
