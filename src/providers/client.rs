//! The seam below the tools: what answers one model request. The HTTP client
//! ([`OpenAiCompatible`]) in the product; an in-process scripted client in unit tests.

use std::time::Instant;

use futures::future::BoxFuture;
use serde::Serialize;

use super::openai_compat::{ListModelsError, OpenAiCompatible};
use super::retry::AttemptError;
use super::{CallObserver, ChatRequest, ChatResponse, ListedReasoning, ModelInfo};

/// The HTTP request an attempt would send, as a dry run shows it: the body exactly as built for
/// the wire, the URL with its credentials masked, the key never.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedRequest {
    pub method: &'static str,
    /// The request URL, credentials masked (or why the base URL gives none).
    pub url: String,
    /// The headers that would go with it, the key's value masked.
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

/// A document to have its text extracted by a provider's file API.
pub struct DocumentUpload<'a> {
    /// The file name the provider is told (no directories).
    pub name: &'a str,
    pub bytes: &'a [u8],
}

/// Why a provider gave no text for a document.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ExtractError(pub String);

/// The ids an endpoint serves, with what it says of their reasoning.
pub(crate) type ModelList = Vec<(String, Option<ListedReasoning>)>;

/// One endpoint's way to a model: an attempt at a streamed completion, and its model list.
/// Held per endpoint as `Arc<dyn ModelClient>`; the boxed future is one allocation a request.
pub(crate) trait ModelClient: Send + Sync {
    /// One attempt (no retries: the caller retries); progress goes to `observer`, and
    /// `searching` says the platform searches the web before the first token.
    fn attempt<'a>(
        &'a self,
        model: &'a ModelInfo,
        request: &'a ChatRequest,
        observer: &'a dyn CallObserver,
        attempt: u32,
        searching: bool,
    ) -> BoxFuture<'a, Result<ChatResponse, AttemptError>>;

    /// `GET /models`: the ids the endpoint serves.
    fn list_models(&self) -> BoxFuture<'_, Result<ModelList, ListModelsError>>;

    /// The request [`ModelClient::attempt`] would send for `request`, without sending it.
    fn plan(&self, model: &ModelInfo, request: &ChatRequest) -> PlannedRequest;

    /// A document's text through the provider's file API (upload, extract, delete), before
    /// `deadline`; progress goes to `observer`.
    fn extract<'a>(
        &'a self,
        document: DocumentUpload<'a>,
        deadline: Instant,
        observer: &'a dyn CallObserver,
    ) -> BoxFuture<'a, Result<String, ExtractError>>;
}

impl ModelClient for OpenAiCompatible {
    fn attempt<'a>(
        &'a self,
        model: &'a ModelInfo,
        request: &'a ChatRequest,
        observer: &'a dyn CallObserver,
        attempt: u32,
        searching: bool,
    ) -> BoxFuture<'a, Result<ChatResponse, AttemptError>> {
        Box::pin(OpenAiCompatible::attempt(
            self, model, request, observer, attempt, searching,
        ))
    }

    fn list_models(&self) -> BoxFuture<'_, Result<ModelList, ListModelsError>> {
        Box::pin(OpenAiCompatible::list_models(self))
    }

    fn plan(&self, model: &ModelInfo, request: &ChatRequest) -> PlannedRequest {
        OpenAiCompatible::plan(self, model, request)
    }

    fn extract<'a>(
        &'a self,
        document: DocumentUpload<'a>,
        deadline: Instant,
        observer: &'a dyn CallObserver,
    ) -> BoxFuture<'a, Result<String, ExtractError>> {
        Box::pin(OpenAiCompatible::extract(
            self, document, deadline, observer,
        ))
    }
}
