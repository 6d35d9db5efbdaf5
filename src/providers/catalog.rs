//! The model catalog: what exai knows about each model (context, output, thinking, score,
//! deprecation).
//!
//! A catalog ships inside the binary (`models.toml`); a user file extends or
//! overrides it. Models a provider reports but the catalog does not know get
//! conservative defaults.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::price::Price;
use super::{Effort, Spent};

const BUILT_IN: &str = include_str!("models.toml");

/// Whether and how a model reasons before answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Thinking {
    #[default]
    None,
    Optional,
    DefaultOn,
    Always,
}

/// One model as the catalog describes it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    pub id: String,
    pub provider: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default = "default_context")]
    pub context_window: u64,
    #[serde(default = "default_output")]
    pub max_output: u64,
    #[serde(default)]
    pub thinking: Thinking,
    #[serde(default)]
    pub vision: bool,
    #[serde(default)]
    pub tools: bool,
    #[serde(default)]
    pub web_search: bool,
    #[serde(default)]
    pub fixed_sampling: bool,
    #[serde(default = "default_score")]
    pub score: u32,
    #[serde(default)]
    pub fast: bool,
    /// The `reasoning_effort` values the provider documents for this model, lowest first: a
    /// model that always thinks is asked for the lowest when told not to think.
    #[serde(default)]
    pub reasoning_efforts: Vec<String>,
    /// Why the provider retired or is retiring the model ("replaced by kimi-k2.6"): `auto`
    /// never picks it, and an answer from it says so.
    #[serde(default)]
    pub deprecated: Option<String>,
    /// What the model costs per million tokens, as its provider's pricing page said; `None`: its
    /// calls' cost is unknown.
    #[serde(default)]
    pub price: Option<Price>,
    /// Not from the catalog: reported by the provider or named by the user.
    #[serde(default, skip_deserializing)]
    pub unlisted: bool,
}

fn default_context() -> u64 {
    32_768
}
fn default_output() -> u64 {
    8_192
}
fn default_score() -> u32 {
    50
}

impl ModelInfo {
    /// Conservative defaults for a model the catalog does not know.
    pub fn unlisted(provider: &str, id: &str) -> Self {
        Self {
            id: id.to_string(),
            provider: provider.to_string(),
            aliases: Vec::new(),
            context_window: default_context(),
            max_output: default_output(),
            thinking: Thinking::None,
            vision: false,
            tools: false,
            web_search: false,
            fixed_sampling: false,
            score: 40,
            fast: false,
            reasoning_efforts: Vec::new(),
            deprecated: None,
            price: None,
            unlisted: true,
        }
    }

    /// The least thinking this model can be asked for by `reasoning_effort`: the lowest value
    /// the catalog lists (never `none` on a model that always thinks, which refuses it).
    pub fn lowest_effort(&self) -> Option<&str> {
        self.reasoning_efforts
            .iter()
            .map(String::as_str)
            .find(|e| !(self.thinking == Thinking::Always && e.eq_ignore_ascii_case("none")))
    }

    /// Picodollars billed for `spent`; `None` when unknown: the model has no price, or an
    /// answer came without usage. A failure that reported no usage billed nothing.
    pub fn cost_of(&self, spent: &Spent, answered: bool) -> Option<u64> {
        if spent.tokens_in.is_none() && spent.tokens_out.is_none() && spent.web_searches == 0 {
            return (!answered).then_some(0);
        }
        self.price.as_ref().map(|price| price.of(spent))
    }

    /// Whether the model thinks in a request that asks for `thinking` (`None`: as it likes).
    pub fn thinks(&self, thinking: Option<Effort>) -> bool {
        let asked = thinking.map(Effort::thinks);
        match self.thinking {
            Thinking::None => false,
            Thinking::Always => true,
            Thinking::DefaultOn => asked != Some(false),
            Thinking::Optional => asked == Some(true),
        }
    }

    /// The `reasoning_effort` the catalog lists for `effort`: the same word where it is listed,
    /// else the nearest listed below it (above it for the least); the highest listed for
    /// `Max`. `None` where the catalog lists none, or only `none`.
    pub fn effort_for(&self, effort: Effort) -> Option<&str> {
        let rank = |word: &str| match word.to_ascii_lowercase().as_str() {
            "minimal" => Some(0),
            "low" => Some(1),
            "medium" => Some(2),
            "high" => Some(3),
            "xhigh" => Some(4),
            "max" => Some(5),
            _ => None,
        };
        let wanted = match effort {
            Effort::Minimal => return self.lowest_effort(),
            Effort::Low => 1,
            Effort::Medium => 2,
            Effort::High => 3,
            Effort::Max => 5,
        };
        let listed = || {
            self.reasoning_efforts
                .iter()
                .filter_map(|word| Some((rank(word)?, word.as_str())))
        };
        listed()
            .filter(|(rank, _)| *rank <= wanted)
            .max_by_key(|(rank, _)| *rank)
            .or_else(|| listed().min_by_key(|(rank, _)| *rank))
            .map(|(_, word)| word)
    }
}

/// Most reasoning efforts taken from an endpoint's list of a model's (real lists name up to six).
const MOST_LISTED_EFFORTS: usize = 8;

/// What an endpoint's `GET /models` says of a model's reasoning (OpenRouter's `reasoning`
/// object: `mandatory`, `default_enabled`, `supported_efforts` highest first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListedReasoning {
    pub mandatory: bool,
    pub default_enabled: Option<bool>,
    /// The accepted `effort` values, lowest first; empty when the endpoint sets no list.
    pub efforts: Vec<String>,
}

impl ListedReasoning {
    /// Reads the object leniently: a shape it does not know is no reasoning information.
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        let object = value.as_object()?;
        let mut efforts: Vec<String> = object
            .get("supported_efforts")
            .and_then(serde_json::Value::as_array)
            .map(|list| {
                // An effort's name goes into every request to the model: only a word is taken.
                list.iter()
                    .filter_map(serde_json::Value::as_str)
                    .filter(|e| {
                        (1..=32).contains(&e.len())
                            && e.chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    })
                    .take(MOST_LISTED_EFFORTS)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        efforts.reverse();
        Some(Self {
            mandatory: object.get("mandatory")?.as_bool()?,
            default_enabled: object
                .get("default_enabled")
                .and_then(serde_json::Value::as_bool),
            efforts,
        })
    }
}

impl ModelInfo {
    /// The model as its endpoint reported it: reasoning the endpoint calls mandatory is never
    /// turned off, and the efforts it lists are the ones asked for.
    pub fn with_listed(mut self, listed: &ListedReasoning) -> Self {
        if listed.mandatory {
            self.thinking = Thinking::Always;
        } else if self.thinking == Thinking::None {
            self.thinking = match listed.default_enabled {
                Some(false) => Thinking::Optional,
                _ => Thinking::DefaultOn,
            };
        }
        if !listed.efforts.is_empty() {
            self.reasoning_efforts = listed.efforts.clone();
        }
        self
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    model: Vec<ModelInfo>,
}

/// Why a catalog file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("model catalog {path}: {message}")]
    Invalid { path: String, message: String },
}

/// All known models.
#[derive(Debug, Clone)]
pub struct Catalog {
    models: Vec<ModelInfo>,
}

impl Catalog {
    /// The built-in catalog, extended or overridden by `user_file`.
    pub fn load(user_file: Option<&Path>) -> Result<Self, CatalogError> {
        let mut models = parse(BUILT_IN, "built-in models.toml")?;
        if let Some(path) = user_file {
            let text = std::fs::read_to_string(path).map_err(|e| CatalogError::Invalid {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            for model in parse(&text, &path.display().to_string())? {
                models.retain(|m| !(m.id == model.id && m.provider == model.provider));
                models.push(model);
            }
        }
        Ok(Self { models })
    }

    pub fn built_in() -> Self {
        // The built-in file is checked by a unit test; an empty catalog is the safe fallback.
        Self::load(None).unwrap_or(Self { models: Vec::new() })
    }

    /// Models of `provider`.
    pub fn of_provider<'a>(
        &'a self,
        provider: &'a str,
    ) -> impl Iterator<Item = &'a ModelInfo> + 'a {
        self.models.iter().filter(move |m| m.provider == provider)
    }

    /// A model by id or alias, optionally within one provider.
    pub fn find(&self, name: &str, provider: Option<&str>) -> Option<&ModelInfo> {
        let wanted = name.to_ascii_lowercase();
        let in_scope = |m: &&ModelInfo| provider.is_none_or(|p| m.provider == p);
        self.models
            .iter()
            .filter(in_scope)
            .find(|m| m.id.eq_ignore_ascii_case(&wanted))
            .or_else(|| {
                self.models
                    .iter()
                    .filter(in_scope)
                    .find(|m| m.aliases.iter().any(|a| a.eq_ignore_ascii_case(&wanted)))
            })
    }

    /// Alias → id, for listing.
    pub fn aliases(&self) -> HashMap<&str, &str> {
        self.models
            .iter()
            .flat_map(|m| m.aliases.iter().map(move |a| (a.as_str(), m.id.as_str())))
            .collect()
    }
}

fn parse(text: &str, origin: &str) -> Result<Vec<ModelInfo>, CatalogError> {
    let file: CatalogFile = toml::from_str(text).map_err(|e| CatalogError::Invalid {
        path: origin.to_string(),
        message: crate::config::toml_error(&e, text),
    })?;
    Ok(file.model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_effort_is_asked_for_by_the_name_the_model_takes() {
        let catalog = Catalog::load(None).unwrap();
        let effort = |model: &str, effort: Effort| {
            catalog
                .find(model, Some("openai"))
                .and_then(|m| m.effort_for(effort))
                .map(str::to_string)
        };
        // gpt-5 takes minimal..high: its least is minimal, and max asks for its most.
        assert_eq!(effort("gpt-5", Effort::Minimal).as_deref(), Some("minimal"));
        assert_eq!(effort("gpt-5", Effort::Medium).as_deref(), Some("medium"));
        assert_eq!(effort("gpt-5", Effort::Max).as_deref(), Some("high"));
        // gpt-5.6 lists none first: the least it is asked for is none, max is max.
        assert_eq!(effort("gpt-5.6-sol", Effort::Low).as_deref(), Some("low"));
        assert_eq!(effort("gpt-5.6-sol", Effort::Max).as_deref(), Some("max"));
        // A word the model does not list: the nearest below it, else the least above it.
        let mut glm = catalog.find("glm-5.3", None).cloned().unwrap();
        assert_eq!(glm.effort_for(Effort::Medium), Some("low"));
        glm.reasoning_efforts = vec!["high".into(), "max".into()];
        assert_eq!(glm.effort_for(Effort::Low), Some("high"));
        glm.reasoning_efforts.clear();
        assert_eq!(glm.effort_for(Effort::High), None);
    }

    #[test]
    fn the_built_in_catalog_parses_and_has_each_provider() {
        let catalog = Catalog::load(None).unwrap();
        for provider in ["glm", "kimi", "openai", "openrouter"] {
            assert!(catalog.of_provider(provider).count() >= 1, "{provider}");
        }
        let mut ids: Vec<_> = catalog
            .models
            .iter()
            .map(|m| (&m.provider, &m.id))
            .collect();
        let before = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), before, "duplicate ids");
        // A built-in price says when it was read from the provider's page.
        for model in &catalog.models {
            if let Some(price) = &model.price {
                assert!(
                    price.checked.is_some(),
                    "{} has a price without a date",
                    model.id
                );
            }
        }
        assert!(catalog.find("glm-4.7", None).unwrap().price.is_some());
    }

    #[test]
    fn aliases_and_case_find_models() {
        let catalog = Catalog::built_in();
        assert_eq!(catalog.find("kimi", None).unwrap().id, "kimi-k3");
        assert_eq!(catalog.find("GLM-4.7", None).unwrap().provider, "glm");
        assert!(catalog.find("glm-4.7", Some("kimi")).is_none());
    }

    #[test]
    fn what_an_endpoint_lists_of_reasoning_corrects_the_catalog() {
        let listed = ListedReasoning::from_json(&serde_json::json!({
            "mandatory": true, "supported_efforts": ["high", "medium", null, "low"],
        }))
        .unwrap();
        assert_eq!(listed.efforts, ["low", "medium", "high"]);
        let stale = Catalog::built_in()
            .find("z-ai/glm-4.7", Some("openrouter"))
            .unwrap()
            .clone()
            .with_listed(&listed);
        assert_eq!(stale.thinking, Thinking::Always);
        assert_eq!(stale.lowest_effort(), Some("low"));

        let optional = ListedReasoning::from_json(&serde_json::json!({
            "mandatory": false, "default_enabled": false,
        }))
        .unwrap();
        let unknown = ModelInfo::unlisted("openrouter", "x/y").with_listed(&optional);
        assert_eq!(unknown.thinking, Thinking::Optional);
        assert!(unknown.reasoning_efforts.is_empty());
        assert!(ListedReasoning::from_json(&serde_json::json!({"effort": "x"})).is_none());
        assert!(ListedReasoning::from_json(&serde_json::json!("mandatory")).is_none());
    }

    #[test]
    fn a_user_file_overrides_and_extends() {
        let dir = crate::scratch::scratch_dir("catalog");
        let path = dir.join("models.toml");
        std::fs::write(
            &path,
            "[[model]]\nid = \"glm-4.7\"\nprovider = \"glm\"\nscore = 99\n\n[[model]]\nid = \"qwen3\"\nprovider = \"ollama\"\nprice = { input = 0.5, output = 2 }\n",
        )
        .unwrap();
        let catalog = Catalog::load(Some(&path)).unwrap();
        assert_eq!(catalog.find("glm-4.7", None).unwrap().score, 99);
        // The user's entry replaces the built-in one, price and all.
        assert!(catalog.find("glm-4.7", None).unwrap().price.is_none());
        let spent = Spent {
            tokens_in: Some(1000),
            tokens_out: Some(100),
            cached_tokens: Some(400),
            ..Spent::default()
        };
        // Cached input at the input price when the file names none: 1000 × 0.5 + 100 × 2 µ$/M.
        let qwen = catalog.find("qwen3", None).unwrap();
        assert_eq!(qwen.cost_of(&spent, true), Some(700_000_000));
        assert_eq!(
            catalog.find("glm-4.7", None).unwrap().cost_of(&spent, true),
            None
        );
        assert_eq!(qwen.cost_of(&Spent::default(), true), None);
        assert_eq!(qwen.cost_of(&Spent::default(), false), Some(0));
        assert_eq!(catalog.find("qwen3", None).unwrap().provider, "ollama");
        std::fs::write(
            &path,
            "[[model]]\nid = \"x\"\nprovider = \"y\"\nbogus = 1\n",
        )
        .unwrap();
        let err = Catalog::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
    }
}
