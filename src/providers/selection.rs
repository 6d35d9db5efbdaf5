//! Model selection: `provider:model`, catalog ids and aliases, models an endpoint declared or
//! reported, `auto`, and each endpoint's allowed models.

use std::sync::Arc;

use super::{Endpoint, ModelInfo, Providers};

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

impl Providers {
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
        let model = self.as_listed(endpoint.name(), model);
        Ok(Resolved {
            endpoint: endpoint.clone(),
            model,
        })
    }

    fn unknown(&self, name: &str, why: &str) -> String {
        let available = self.available_models();
        let shown = fair_share(&available, 30);
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

    /// `auto`: the best-scoring allowed catalog model of a usable endpoint, never a deprecated one.
    fn auto(&self, need: Need) -> Result<Resolved, String> {
        let mut candidates: Vec<Resolved> = self
            .usable
            .iter()
            .flat_map(|e| {
                self.catalog
                    .of_provider(e.name())
                    .filter(|m| m.deprecated.is_none() && Self::allowed(e, &m.id))
                    .map(|m| Resolved {
                        endpoint: e.clone(),
                        model: self.as_listed(e.name(), m.clone()),
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
}

/// At most `limit` of the `provider:model` names, taken in turn from each provider so that one
/// provider with many models does not hide the others; in their original order.
fn fair_share(names: &[String], limit: usize) -> Vec<String> {
    let provider = |n: &String| n.split_once(':').map_or(n.clone(), |(p, _)| p.to_string());
    let mut providers: Vec<String> = names.iter().map(provider).collect();
    providers.dedup();
    let mut taken = vec![false; names.len()];
    let mut count = 0;
    'rounds: loop {
        let mut progressed = false;
        for p in &providers {
            if let Some(i) = (0..names.len()).find(|&i| !taken[i] && provider(&names[i]) == *p) {
                if count == limit {
                    break 'rounds;
                }
                taken[i] = true;
                count += 1;
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    names
        .iter()
        .zip(taken)
        .filter(|(_, t)| *t)
        .map(|(n, _)| n.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_gets_its_share_of_the_names_shown() {
        let names: Vec<String> = (0..40)
            .map(|i| format!("glm:m{i:02}"))
            .chain(["kimi:a", "kimi:b"].map(String::from))
            .collect();
        let shown = fair_share(&names, 5);
        assert_eq!(shown, ["glm:m00", "glm:m01", "glm:m02", "kimi:a", "kimi:b"]);
        assert_eq!(fair_share(&names, 100).len(), 42);
    }
}
