//! Model selection: `provider:model`, catalog ids and aliases, models an endpoint declared or
//! reported, `auto`, and each endpoint's allowed models.

use std::sync::Arc;

use super::{Endpoint, ModelInfo, Providers};
use crate::config::EndpointConfig;

/// Where a model name led.
#[derive(Clone)]
pub struct Resolved {
    pub endpoint: Arc<Endpoint>,
    /// Shared, not copied: a call's future carries its target through several async layers,
    /// and each layer would otherwise hold a copy of the whole entry.
    pub model: Arc<ModelInfo>,
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

    fn model_on(&self, endpoint: &Arc<Endpoint>, name: &str) -> Result<Resolved, UnusableModel> {
        if !Self::allowed(endpoint, name) {
            return Err(self.unknown(
                name,
                WhyUnusable::NotAllowed {
                    provider: endpoint.name().to_string(),
                },
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
            model: Arc::new(model),
        })
    }

    fn unknown(&self, name: &str, reason: WhyUnusable) -> UnusableModel {
        let available = self.available_models();
        let shown = fair_share(&available, 30);
        UnusableModel {
            name: name.to_string(),
            reason,
            choices: Choices {
                more: available.len() - shown.len(),
                shown,
            },
        }
    }

    /// Resolves a model name: `provider:model`, a catalog id or alias, a model an endpoint
    /// declared or reported, or `auto`/nothing (the default model, else the best available).
    pub fn resolve(&self, name: Option<&str>, need: Need) -> Result<Resolved, UnusableModel> {
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
                WhyUnusable::NamedProviderUnusable {
                    provider: provider.to_string(),
                    why: why_unusable(config),
                },
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
            let provider = model.provider.clone();
            let reason = match self.unusable.iter().find(|c| c.name == model.provider) {
                Some(c) => WhyUnusable::ProviderUnusable {
                    provider,
                    why: why_unusable(c),
                },
                None => WhyUnusable::ProviderMissing { provider },
            };
            return Err(self.unknown(name, reason));
        }
        if let Some(found) = self.declared(name) {
            return Ok(found);
        }
        // One endpoint only: hand it any name (a local server knows its own models).
        if let [only] = self.usable.as_slice() {
            return self.model_on(only, name);
        }
        Err(self.unknown(name, WhyUnusable::NotOffered))
    }

    fn declared(&self, name: &str) -> Option<Resolved> {
        self.usable.iter().find_map(|e| {
            let known = e.config.models.iter().any(|m| m == name)
                || self.with_discovered(e.name(), |ids| ids.iter().any(|m| m == name));
            known.then(|| self.model_on(e, name).ok()).flatten()
        })
    }

    /// `auto`: the best-scoring allowed catalog model of a usable endpoint, never a deprecated one.
    fn auto(&self, need: Need) -> Result<Resolved, UnusableModel> {
        // Chosen over the catalog's entries; only the winner is copied out (every call
        // without a model name comes here).
        let best = self
            .usable
            .iter()
            .flat_map(|e| {
                self.catalog
                    .of_provider(e.name())
                    .filter(|m| m.deprecated.is_none() && Self::allowed(e, &m.id))
                    .map(move |m| (e, m))
            })
            .min_by_key(|(_, m)| {
                let fast_bonus = u32::from(need == Need::Fast && m.fast) * 1000;
                std::cmp::Reverse(m.score + fast_bonus)
            });
        if let Some((e, m)) = best {
            return Ok(Resolved {
                endpoint: e.clone(),
                model: Arc::new(self.as_listed(e.name(), m.clone())),
            });
        }
        // Only generic endpoints: their declared default, else the first model they name.
        for e in &self.usable {
            let first = e
                .config
                .default_model
                .clone()
                .or_else(|| e.config.models.first().cloned())
                .or_else(|| self.with_discovered(e.name(), |ids| ids.first().cloned()));
            if let Some(model) = first {
                return self.model_on(e, &model);
            }
        }
        Err(self.unknown("auto", WhyUnusable::NothingToChoose))
    }
}

/// A model name that leads to no usable model, and the names a caller may use instead.
#[derive(Debug, Clone, thiserror::Error)]
#[error("model {name:?} cannot be used: {reason}. {choices}")]
pub struct UnusableModel {
    name: String,
    reason: WhyUnusable,
    choices: Choices,
}

/// Why a model name leads to no usable model.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WhyUnusable {
    #[error("it is not in {provider}'s allowed models")]
    NotAllowed { provider: String },
    /// `provider:model` named a provider that is configured but cannot be used.
    #[error("provider {provider} is not configured ({why})")]
    NamedProviderUnusable { provider: String, why: String },
    /// A catalog model of a provider that is configured but cannot be used.
    #[error("it needs provider {provider}, which is not configured ({why})")]
    ProviderUnusable { provider: String, why: String },
    /// A catalog model of a provider that is not configured at all.
    #[error("it needs provider {provider}, which is not configured")]
    ProviderMissing { provider: String },
    #[error("no configured provider offers it")]
    NotOffered,
    #[error("exai has no model to choose from")]
    NothingToChoose,
}

/// What to do when no provider is configured at all.
const NO_PROVIDER: &str = "No provider is configured: store a key with `exai keys set <provider>` \
     (glm, kimi, openai, openrouter; or set CUSTOM_API_URL for a local server), then run \
     `exai doctor` to check it.";

/// The `provider:model` names shown with an unusable one (a fair share of them), and how many
/// more there are.
#[derive(Debug, Clone)]
struct Choices {
    shown: Vec<String>,
    more: usize,
}

impl std::fmt::Display for Choices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.shown.is_empty() {
            return f.write_str(NO_PROVIDER);
        }
        write!(f, "Available: {}", self.shown.join(", "))?;
        if self.more > 0 {
            write!(f, " (and {} more; see listmodels)", self.more)?;
        }
        Ok(())
    }
}

/// Why a configured endpoint cannot be used, as its configuration says, and the command that
/// stores its key when the keys file can hold it.
fn why_unusable(config: &EndpointConfig) -> String {
    let why = config.unavailable.as_deref().unwrap_or("?");
    match crate::config::keys::override_vars(&config.name) {
        Some(_) => format!("{why}: `exai keys set {}` stores its key", config.name),
        None => why.to_string(),
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

    #[test]
    fn an_unusable_model_says_why_and_what_may_be_named_instead() {
        let unusable = |reason, shown: &[&str], more| {
            UnusableModel {
                name: "m".into(),
                reason,
                choices: Choices {
                    shown: shown.iter().map(|s| s.to_string()).collect(),
                    more,
                },
            }
            .to_string()
        };
        let provider = || "openai".to_string();
        let why = || "OPENAI_API_KEY not set".to_string();
        assert_eq!(
            unusable(WhyUnusable::NotOffered, &[], 0),
            "model \"m\" cannot be used: no configured provider offers it. No provider is \
             configured: store a key with `exai keys set <provider>` (glm, kimi, openai, \
             openrouter; or set CUSTOM_API_URL for a local server), then run `exai doctor` to \
             check it."
        );
        assert_eq!(
            unusable(
                WhyUnusable::ProviderUnusable {
                    provider: provider(),
                    why: why()
                },
                &["glm:a", "kimi:b"],
                3
            ),
            "model \"m\" cannot be used: it needs provider openai, which is not configured \
             (OPENAI_API_KEY not set). Available: glm:a, kimi:b (and 3 more; see listmodels)"
        );
        for (reason, said) in [
            (
                WhyUnusable::NotAllowed {
                    provider: provider(),
                },
                "it is not in openai's allowed models",
            ),
            (
                WhyUnusable::NamedProviderUnusable {
                    provider: provider(),
                    why: why(),
                },
                "provider openai is not configured (OPENAI_API_KEY not set)",
            ),
            (
                WhyUnusable::ProviderMissing {
                    provider: provider(),
                },
                "it needs provider openai, which is not configured",
            ),
            (
                WhyUnusable::NothingToChoose,
                "exai has no model to choose from",
            ),
        ] {
            assert_eq!(
                unusable(reason, &["glm:a"], 0),
                format!("model \"m\" cannot be used: {said}. Available: glm:a")
            );
        }
    }
}
