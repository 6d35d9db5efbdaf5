//! The TOML config file. Its settings are named after the environment variables they
//! stand for, so one set of rules parses and checks both; the environment wins.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{BUILT_IN_PROVIDERS, ConfigError};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    default_model: Option<String>,
    fallback_models: Option<Vec<String>>,
    models_file: Option<String>,
    listen: Option<String>,
    max_message_bytes: Option<u64>,
    max_answer_bytes: Option<u64>,
    provider_concurrency: Option<u64>,
    timeouts: Option<Timeouts>,
    tool_timeouts: Option<BTreeMap<String, f64>>,
    tool_max_output: Option<BTreeMap<String, u64>>,
    retry: Option<Retry>,
    retention: Option<Retention>,
    memory: Option<Memory>,
    allowed_roots: Option<Vec<String>>,
    disabled_tools: Option<Vec<String>>,
    client_patience: Option<BTreeMap<String, f64>>,
    max_output_tokens: Option<u64>,
    prompt_size_limit: Option<u64>,
    providers: Option<BTreeMap<String, ProviderSection>>,
    #[serde(default)]
    pub endpoints: Vec<EndpointSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Timeouts {
    call: Option<f64>,
    provider_connect: Option<f64>,
    provider_idle: Option<f64>,
    first_token: Option<f64>,
    progress_interval: Option<f64>,
    shutdown_grace: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Retry {
    attempts: Option<u64>,
    base_s: Option<f64>,
    max_delay_s: Option<f64>,
    retry_after_cap_s: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Retention {
    max_age_s: Option<f64>,
    max_rows: Option<u64>,
}

/// How long conversations and results are kept.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Memory {
    thread_ttl_s: Option<f64>,
    thread_max_exchanges: Option<u64>,
    result_ttl_s: Option<f64>,
}

/// Each setting's key in the config file, by the environment variable it stands for (the
/// per-provider settings are `providers.<name>.*`, the endpoints `[[endpoints]]`).
pub const FILE_KEYS: &[(&str, &str)] = &[
    ("DEFAULT_MODEL", "default_model"),
    ("EXAI_FALLBACK_MODELS", "fallback_models"),
    ("EXAI_MODELS_FILE", "models_file"),
    ("EXAI_LISTEN", "listen"),
    ("EXAI_MAX_MESSAGE_BYTES", "max_message_bytes"),
    ("EXAI_MAX_ANSWER_BYTES", "max_answer_bytes"),
    ("EXAI_PROVIDER_CONCURRENCY", "provider_concurrency"),
    ("EXAI_CALL_TIMEOUT_S", "timeouts.call"),
    (
        "EXAI_PROVIDER_CONNECT_TIMEOUT_S",
        "timeouts.provider_connect",
    ),
    ("EXAI_PROVIDER_IDLE_TIMEOUT_S", "timeouts.provider_idle"),
    ("EXAI_FIRST_TOKEN_TIMEOUT_S", "timeouts.first_token"),
    ("EXAI_PROGRESS_INTERVAL_S", "timeouts.progress_interval"),
    ("EXAI_SHUTDOWN_GRACE_S", "timeouts.shutdown_grace"),
    ("EXAI_TOOL_TIMEOUTS", "[tool_timeouts]"),
    ("EXAI_TOOL_MAX_OUTPUT", "[tool_max_output]"),
    ("EXAI_RETRY_ATTEMPTS", "retry.attempts"),
    ("EXAI_RETRY_BASE_S", "retry.base_s"),
    ("EXAI_RETRY_MAX_DELAY_S", "retry.max_delay_s"),
    ("EXAI_RETRY_AFTER_CAP_S", "retry.retry_after_cap_s"),
    ("EXAI_RETENTION_S", "retention.max_age_s"),
    ("EXAI_RETENTION_ROWS", "retention.max_rows"),
    ("EXAI_THREAD_TTL_S", "memory.thread_ttl_s"),
    ("EXAI_THREAD_MAX_TURNS", "memory.thread_max_exchanges"),
    ("EXAI_RESULT_TTL_S", "memory.result_ttl_s"),
    ("EXAI_ALLOWED_ROOTS", "allowed_roots"),
    ("DISABLED_TOOLS", "disabled_tools"),
    ("EXAI_CLIENT_PATIENCE", "[client_patience]"),
    ("MAX_MCP_OUTPUT_TOKENS", "max_output_tokens"),
    ("EXAI_PROMPT_SIZE_LIMIT", "prompt_size_limit"),
];

/// The config-file key of the setting `var`, if it has one.
pub fn key_of(var: &str) -> Option<String> {
    if let Some((_, key)) = FILE_KEYS.iter().find(|(v, _)| *v == var) {
        return Some(key.to_string());
    }
    BUILT_IN_PROVIDERS.iter().find_map(|spec| {
        let section = format!("providers.{}", spec.name);
        if var == spec.url_var {
            Some(format!("{section}.base_url"))
        } else if var == spec.allowed_var {
            Some(format!("{section}.allowed_models"))
        } else if var == spec.concurrency_var {
            Some(format!("{section}.max_concurrency"))
        } else {
            None
        }
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderSection {
    /// The environment variable holding the key (the key itself never goes in the file).
    api_key_env: Option<String>,
    base_url: Option<String>,
    allowed_models: Option<Vec<String>>,
    max_concurrency: Option<u64>,
}

/// A named OpenAI-compatible endpoint: Ollama, vLLM, LM Studio, a company gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSection {
    pub name: String,
    pub base_url: String,
    /// The environment variable holding its key; none when the endpoint needs no key.
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub models: Vec<String>,
    pub allowed_models: Option<Vec<String>>,
    pub max_concurrency: Option<u64>,
}

/// Where the config file is: `EXAI_CONFIG`, else `$XDG_CONFIG_HOME/exai/config.toml`,
/// else `~/.config/exai/config.toml`. The bool says whether it was named explicitly.
pub fn location(
    explicit: Option<String>,
    xdg_config: Option<String>,
    home: Option<String>,
) -> Option<(PathBuf, bool)> {
    if let Some(path) = explicit {
        return Some((PathBuf::from(path), true));
    }
    let base = xdg_config
        .map(PathBuf::from)
        .or_else(|| home.map(|h| Path::new(&h).join(".config")))?;
    Some((base.join("exai/config.toml"), false))
}

/// Reads the file; a missing default file is no error, a missing named one is.
pub fn read(path: &Path, explicit: bool) -> Result<Option<FileConfig>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(None),
        Err(e) => {
            return Err(ConfigError::File {
                path: path.display().to_string(),
                why: e.to_string(),
            });
        }
    };
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            why: e.to_string(),
        })
}

impl FileConfig {
    /// The file's settings as (environment variable, value, file key).
    pub fn as_vars(&self) -> Result<Vec<(String, String, String)>, ConfigError> {
        let mut vars = Vec::new();
        let mut put = |var: &str, value: String, key: &str| {
            vars.push((var.to_string(), value, key.to_string()))
        };
        let join = |items: &Vec<String>| items.join(",");
        if let Some(v) = &self.default_model {
            put("DEFAULT_MODEL", v.clone(), "default_model");
        }
        if let Some(v) = &self.fallback_models {
            put("EXAI_FALLBACK_MODELS", join(v), "fallback_models");
        }
        if let Some(v) = &self.models_file {
            put("EXAI_MODELS_FILE", v.clone(), "models_file");
        }
        if let Some(v) = &self.listen {
            put("EXAI_LISTEN", v.clone(), "listen");
        }
        if let Some(v) = self.max_message_bytes {
            put("EXAI_MAX_MESSAGE_BYTES", v.to_string(), "max_message_bytes");
        }
        if let Some(v) = self.max_answer_bytes {
            put("EXAI_MAX_ANSWER_BYTES", v.to_string(), "max_answer_bytes");
        }
        if let Some(v) = self.provider_concurrency {
            put(
                "EXAI_PROVIDER_CONCURRENCY",
                v.to_string(),
                "provider_concurrency",
            );
        }
        if let Some(t) = &self.timeouts {
            for (value, var, key) in [
                (t.call, "EXAI_CALL_TIMEOUT_S", "timeouts.call"),
                (
                    t.provider_connect,
                    "EXAI_PROVIDER_CONNECT_TIMEOUT_S",
                    "timeouts.provider_connect",
                ),
                (
                    t.provider_idle,
                    "EXAI_PROVIDER_IDLE_TIMEOUT_S",
                    "timeouts.provider_idle",
                ),
                (
                    t.first_token,
                    "EXAI_FIRST_TOKEN_TIMEOUT_S",
                    "timeouts.first_token",
                ),
                (
                    t.progress_interval,
                    "EXAI_PROGRESS_INTERVAL_S",
                    "timeouts.progress_interval",
                ),
                (
                    t.shutdown_grace,
                    "EXAI_SHUTDOWN_GRACE_S",
                    "timeouts.shutdown_grace",
                ),
            ] {
                if let Some(v) = value {
                    put(var, v.to_string(), key);
                }
            }
        }
        if let Some(tools) = &self.tool_timeouts {
            let pairs: Vec<String> = tools
                .iter()
                .map(|(tool, s)| format!("{tool}={s}"))
                .collect();
            put("EXAI_TOOL_TIMEOUTS", pairs.join(","), "tool_timeouts");
        }
        if let Some(tools) = &self.tool_max_output {
            let pairs: Vec<String> = tools
                .iter()
                .map(|(tool, tokens)| format!("{tool}={tokens}"))
                .collect();
            put("EXAI_TOOL_MAX_OUTPUT", pairs.join(","), "tool_max_output");
        }
        if let Some(r) = &self.retry {
            if let Some(v) = r.attempts {
                put("EXAI_RETRY_ATTEMPTS", v.to_string(), "retry.attempts");
            }
            for (value, var, key) in [
                (r.base_s, "EXAI_RETRY_BASE_S", "retry.base_s"),
                (r.max_delay_s, "EXAI_RETRY_MAX_DELAY_S", "retry.max_delay_s"),
                (
                    r.retry_after_cap_s,
                    "EXAI_RETRY_AFTER_CAP_S",
                    "retry.retry_after_cap_s",
                ),
            ] {
                if let Some(v) = value {
                    put(var, v.to_string(), key);
                }
            }
        }
        if let Some(m) = &self.memory {
            if let Some(v) = m.thread_ttl_s {
                put("EXAI_THREAD_TTL_S", v.to_string(), "memory.thread_ttl_s");
            }
            if let Some(v) = m.thread_max_exchanges {
                put(
                    "EXAI_THREAD_MAX_TURNS",
                    v.to_string(),
                    "memory.thread_max_exchanges",
                );
            }
            if let Some(v) = m.result_ttl_s {
                put("EXAI_RESULT_TTL_S", v.to_string(), "memory.result_ttl_s");
            }
        }
        if let Some(v) = &self.allowed_roots {
            put("EXAI_ALLOWED_ROOTS", join(v), "allowed_roots");
        }
        if let Some(v) = &self.disabled_tools {
            put("DISABLED_TOOLS", join(v), "disabled_tools");
        }
        if let Some(clients) = &self.client_patience {
            let pairs: Vec<String> = clients
                .iter()
                .map(|(client, s)| format!("{client}={s}"))
                .collect();
            put("EXAI_CLIENT_PATIENCE", pairs.join(","), "client_patience");
        }
        if let Some(v) = self.max_output_tokens {
            put("MAX_MCP_OUTPUT_TOKENS", v.to_string(), "max_output_tokens");
        }
        if let Some(v) = self.prompt_size_limit {
            put("EXAI_PROMPT_SIZE_LIMIT", v.to_string(), "prompt_size_limit");
        }
        if let Some(r) = &self.retention {
            if let Some(v) = r.max_age_s {
                put("EXAI_RETENTION_S", v.to_string(), "retention.max_age_s");
            }
            if let Some(v) = r.max_rows {
                put("EXAI_RETENTION_ROWS", v.to_string(), "retention.max_rows");
            }
        }
        for (name, section) in self.providers.iter().flatten() {
            let Some(spec) = BUILT_IN_PROVIDERS.iter().find(|p| p.name == name) else {
                let known: Vec<_> = BUILT_IN_PROVIDERS.iter().map(|p| p.name).collect();
                return Err(ConfigError::File {
                    path: "config file".into(),
                    why: format!(
                        "unknown provider [providers.{name}]; known: {} (add other endpoints as [[endpoints]])",
                        known.join(", ")
                    ),
                });
            };
            let upper = spec.name.to_ascii_uppercase();
            if let Some(v) = &section.api_key_env {
                put(
                    &format!("{upper}_API_KEY_ENV"),
                    v.clone(),
                    &format!("providers.{name}.api_key_env"),
                );
            }
            if let Some(v) = &section.base_url {
                put(
                    spec.url_var,
                    v.clone(),
                    &format!("providers.{name}.base_url"),
                );
            }
            if let Some(v) = &section.allowed_models {
                put(
                    spec.allowed_var,
                    join(v),
                    &format!("providers.{name}.allowed_models"),
                );
            }
            if let Some(v) = section.max_concurrency {
                put(
                    spec.concurrency_var,
                    v.to_string(),
                    &format!("providers.{name}.max_concurrency"),
                );
            }
        }
        Ok(vars)
    }
}
