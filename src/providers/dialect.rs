//! What differs between providers, each difference owned by its provider's file (glm.rs, kimi.rs,
//! openai.rs, openrouter.rs, custom.rs): the request body, web search, error codes, billing
//! hints, reasoning sent back. `dialect` is the one place a `ProviderKind` is matched.

use serde_json::Value;

use super::errors::{ErrorBody, ErrorClass};
use super::{ChatRequest, ModelInfo, custom, glm, kimi, openai, openrouter};
use crate::config::ProviderKind;

/// The dialect an endpoint of `kind` speaks.
pub(crate) fn dialect(kind: ProviderKind) -> &'static dyn Dialect {
    match kind {
        ProviderKind::Glm => &glm::Glm,
        ProviderKind::Kimi => &kimi::Kimi,
        ProviderKind::OpenAi => &openai::OpenAi,
        ProviderKind::OpenRouter => &openrouter::OpenRouter,
        ProviderKind::Custom => &custom::Custom,
    }
}

/// How a provider lets a model search the web.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WebSearch {
    /// The platform searches inside the one request, before the first token.
    InRequest,
    /// The model calls this builtin function; exai hands the call's arguments back and the
    /// platform searches before the next round.
    RoundTrip { function: &'static str },
}

/// How a provider turns a document (PDF, Word, spreadsheet, slides) into text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Extraction {
    /// Kimi's Files API: upload with `purpose=file-extract`, read the content, delete.
    FilesApi,
    /// GLM's file parser: a task created with the file, its text polled for.
    Parser,
}

/// One provider's way with the OpenAI chat protocol; the defaults are the plain protocol.
pub(crate) trait Dialect: Sync {
    /// The body field the output limit goes in.
    fn limit_field(&self) -> &'static str;

    /// The server refuses a prompt plus output limit over the context window, so the limit is
    /// kept within the room the estimated prompt leaves.
    fn limit_within_context(&self) -> bool {
        false
    }

    /// Images go before the question's text, as the provider's documented examples put them.
    fn images_first(&self) -> bool {
        false
    }

    /// Every assistant turn's reasoning goes back to the provider, so a conversation keeps it
    /// with the answer.
    fn wants_reasoning_back(&self) -> bool {
        false
    }

    /// An earlier assistant turn's reasoning is sent back (`called_tools`: the turn asked for
    /// tools); to a provider that does not want it, it is an unknown field.
    fn echoes_reasoning(&self, called_tools: bool) -> bool {
        let _ = called_tools;
        self.wants_reasoning_back()
    }

    /// The provider's own fields on top of the common body; `host` is the endpoint's host.
    fn shape(&self, model: &ModelInfo, request: &ChatRequest, host: &str, body: &mut Value);

    /// How the provider extracts a document's text, if it does.
    fn document_extraction(&self) -> Option<Extraction> {
        None
    }

    /// How exai can let the provider's models search the web, if it can.
    fn web_search(&self) -> Option<WebSearch> {
        None
    }

    /// The class the provider's own error codes (or its documented meaning of a status) give,
    /// before the HTTP status alone decides.
    fn error_class(&self, status: u16, body: &ErrorBody) -> Option<ErrorClass> {
        let _ = (status, body);
        None
    }

    /// What to tell the user when this model refused the request for this account, with a
    /// leading " — ".
    fn refused_hint(&self, body: &ErrorBody) -> String {
        let _ = body;
        " — the provider will not take this request on this model for this account; exai \
         tried the next model where there was one"
            .to_string()
    }

    /// What to tell the user when the account's balance or plan is exhausted, with a leading
    /// " — ": where to pay.
    fn quota_hint(&self, body: &ErrorBody) -> String;

    /// The provider's base URLs by platform (label, URL), where it runs more than one: a key
    /// works only on the platform that issued it, so a wrong one answers 401 or 404.
    fn platform_urls(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// What to tell the user about a server error (5xx), with a leading " — ".
    fn server_error_hint(&self) -> &'static str {
        " — the provider failed; exai retried; try again later or another model"
    }
}
