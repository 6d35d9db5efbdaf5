//! Model providers: one file per provider dialect over one OpenAI-compatible core,
//! the catalog of models, and the set of endpoints configured in this process.

mod body;
pub mod budget;
pub mod catalog;
mod client;
pub mod connections;
mod custom;
mod dialect;
mod discovery;
mod endpoint;
mod errors;
mod failure;
mod fallback;
#[cfg(test)]
mod fixture_tests;
mod glm;
mod h2_connection;
#[cfg(test)]
mod hostile_answer_tests;
mod kimi;
mod limits;
mod observer;
mod openai;
pub mod openai_compat;
mod openrouter;
pub mod price;
mod retry;
#[cfg(test)]
pub(crate) mod scripted;
mod search;
mod selection;
pub mod sse;
mod types;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub(crate) use body::request_body;
pub use budget::{Budgets, OverBudget};
pub use catalog::{Catalog, ListedReasoning, ModelInfo, Thinking};
pub(crate) use client::ModelClient;
pub use client::{DocumentUpload, ExtractError, PlannedRequest};
pub(crate) use dialect::dialect;
pub use discovery::{ModelListProbe, ProbeError, platform_urls, probe_models};
pub use endpoint::Endpoint;
pub use errors::ErrorClass;
pub use failure::{Failure, ProviderError, Seconds};
pub use limits::{ConcurrencyLimit, QueueFigures};
pub use observer::CallObserver;
pub use price::{Cost, Price};
pub use search::can_search;
pub use selection::{Need, Resolved, UnusableModel};
pub use types::{
    ChatMessage, ChatRequest, ChatResponse, Effort, FunctionCall, Source, Spent, ToolCall,
};

use crate::config::{Config, EndpointConfig};
use crate::store::shared_slots::SharedSlots;
use openai_compat::{NoHttpClient, OpenAiCompatible};

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
    /// Daily budgets a request must be within to start.
    budgets: Budgets,
}

/// What new providers take over from the ones they follow (a reload, a session's own settings).
///
/// An endpoint with the same name, URL and limit keeps its queue, so the limit holds across a
/// swap: calls that started on the old settings and calls on the new wait in one line. An
/// endpoint that changed gets a queue of its own; while calls of both run, the provider may see
/// the old limit plus the new one. The models an unchanged endpoint reported are kept until it is
/// asked again.
impl Providers {
    fn unchanged_endpoint(&self, endpoint: &EndpointConfig) -> Option<&Arc<Endpoint>> {
        self.usable.iter().find(|e| {
            e.config.name == endpoint.name
                && e.config.base_url == endpoint.base_url
                && e.config.max_concurrency == endpoint.max_concurrency
        })
    }

    fn inherit_models(&self, from: &Providers) {
        for endpoint in &self.usable {
            if from.unchanged_endpoint(&endpoint.config).is_none() {
                continue;
            }
            let name = endpoint.name();
            if let (Ok(old), Ok(mut new)) = (from.discovered.read(), self.discovered.write())
                && let Some(models) = old.get(name)
            {
                new.insert(name.to_string(), models.clone());
            }
            if let (Ok(old), Ok(mut new)) =
                (from.listed_reasoning.read(), self.listed_reasoning.write())
                && let Some(listed) = old.get(name)
            {
                new.insert(name.to_string(), listed.clone());
            }
        }
    }
}

impl Providers {
    pub fn from_config(config: &Config, catalog: Catalog, shared: Option<&SharedSlots>) -> Self {
        Self::following(config, catalog, shared, None)
    }

    /// Like [`Providers::from_config`], taking over what `previous` had of unchanged endpoints.
    pub fn following(
        config: &Config,
        catalog: Catalog,
        shared: Option<&SharedSlots>,
        previous: Option<&Providers>,
    ) -> Self {
        Self::with_clients(config, catalog, shared, previous, |endpoint| {
            let client = OpenAiCompatible::new(endpoint, config)?;
            Ok(Arc::new(client) as Arc<dyn ModelClient>)
        })
    }

    /// Like [`Providers::following`], each usable endpoint answered by the client `connect`
    /// makes for it (or unusable, with why not).
    pub(crate) fn with_clients(
        config: &Config,
        catalog: Catalog,
        shared: Option<&SharedSlots>,
        previous: Option<&Providers>,
        connect: impl Fn(&EndpointConfig) -> Result<Arc<dyn ModelClient>, NoHttpClient>,
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
                    limit: previous
                        .and_then(|p| p.unchanged_endpoint(endpoint))
                        .map(|e| e.limit.clone())
                        .unwrap_or_else(|| {
                            Arc::new(ConcurrencyLimit::new(endpoint.max_concurrency))
                        }),
                    shared: shared
                        .zip(config.shared_concurrency.get(&endpoint.name))
                        .map(|(slots, limit)| (slots.clone(), *limit)),
                    retry: config.retry.clone(),
                    config: endpoint.clone(),
                })),
                Err(why) => {
                    tracing::error!(provider = %endpoint.name, %why, "provider cannot be used");
                    unusable.push(EndpointConfig {
                        unavailable: Some(why.to_string()),
                        ..endpoint.clone()
                    });
                }
            }
        }
        let providers = Self {
            usable,
            unusable,
            catalog,
            discovered: RwLock::new(HashMap::new()),
            listed_reasoning: RwLock::new(HashMap::new()),
            default_model: config.default_model.clone(),
            fallback_models: config.fallback_models.clone(),
            budgets: Budgets::default(),
        };
        if let Some(previous) = previous {
            providers.inherit_models(previous);
        }
        providers
    }

    /// These providers, each request first checked against `budgets`.
    pub fn with_budgets(mut self, budgets: Budgets) -> Self {
        self.budgets = budgets;
        self
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
}
