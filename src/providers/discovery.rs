//! What endpoints report of themselves at `GET /models`: the models they serve and, where they
//! say it, their reasoning (which overrides the catalog's).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::openai_compat::{ListModelsError, OpenAiCompatible};
use super::{ListedReasoning, ModelInfo, Providers};
use crate::config::{Config, EndpointConfig, ProviderKind};

/// What one endpoint's `GET /models` came to (`exai doctor`): how many models, and how fast.
#[derive(Debug, Clone)]
pub struct ModelListProbe {
    pub models: usize,
    pub latency: Duration,
}

/// Why an endpoint's `GET /models` gave no list; the provider's words are masked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProbeError {
    #[error("{0}")]
    NoClient(String),
    #[error("no answer within {} s", .0.as_secs_f64())]
    TimedOut(Duration),
    #[error(transparent)]
    Failed(#[from] ListModelsError),
}

/// Asks `endpoint` for its model list once, within `limit` (no model is run: nothing is spent).
pub async fn probe_models(
    endpoint: &EndpointConfig,
    config: &Config,
    limit: Duration,
) -> Result<ModelListProbe, ProbeError> {
    let client =
        OpenAiCompatible::new(endpoint, config).map_err(|e| ProbeError::NoClient(e.to_string()))?;
    let started = Instant::now();
    let models = tokio::time::timeout(limit, client.list_models())
        .await
        .map_err(|_| ProbeError::TimedOut(limit))??;
    Ok(ModelListProbe {
        models: models.len(),
        latency: started.elapsed(),
    })
}

/// The base URLs a provider of `kind` runs by platform (label, URL); empty when it runs one.
pub fn platform_urls(kind: ProviderKind) -> &'static [(&'static str, &'static str)] {
    super::dialect(kind).platform_urls()
}

impl Providers {
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
    pub(super) fn as_listed(&self, provider: &str, model: ModelInfo) -> ModelInfo {
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
        self.with_discovered(provider, <[String]>::to_vec)
    }

    /// `look` at the models an endpoint reported, without copying them (model resolution
    /// asks on every call).
    pub(super) fn with_discovered<T>(
        &self,
        provider: &str,
        look: impl FnOnce(&[String]) -> T,
    ) -> T {
        match self.discovered.read() {
            Ok(all) => look(all.get(provider).map_or(&[][..], Vec::as_slice)),
            Err(_) => look(&[]),
        }
    }
}
