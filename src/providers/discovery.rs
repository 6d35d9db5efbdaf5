//! What endpoints report of themselves at `GET /models`: the models they serve and, where they
//! say it, their reasoning (which overrides the catalog's).

use std::collections::HashMap;
use std::time::Duration;

use super::{ListedReasoning, ModelInfo, Providers};

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
        self.discovered
            .read()
            .map(|d| d.get(provider).cloned().unwrap_or_default())
            .unwrap_or_default()
    }
}
