//! The seam below the tools: what answers one model request. The HTTP client
//! ([`OpenAiCompatible`]) in the product; an in-process scripted client in unit tests.

use futures::future::BoxFuture;

use super::openai_compat::{ListModelsError, OpenAiCompatible};
use super::retry::AttemptError;
use super::{CallObserver, ChatRequest, ChatResponse, ListedReasoning, ModelInfo};

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
}
