//! Settings read from the environment (and the command line), with their defaults.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}={value:?} is not valid: {why}")]
    Invalid {
        var: &'static str,
        value: String,
        why: String,
    },
    #[error("no state directory: set EXAI_HOME, or HOME so that ~/.local/state/exai can be used")]
    NoHome,
}

/// A secret value (an API key) that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }
    /// The real value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(****)")
    }
}

/// One OpenAI-compatible endpoint (for now the Zen-compatible `CUSTOM_API_*` one).
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub name: String,
    pub base_url: String,
    pub api_key: Option<Secret>,
    pub default_model: Option<String>,
}

/// Everything exai reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// State directory: store, logs, lock, token.
    pub home: PathBuf,
    /// Where the daemon listens.
    pub listen: SocketAddr,
    /// Where the shim finds the daemon.
    pub daemon_url: String,
    /// Shim: never start a daemon by itself.
    pub no_autostart: bool,
    /// Default deadline of a call.
    pub call_timeout: Duration,
    /// Per-tool deadlines (`EXAI_TOOL_TIMEOUTS="chat=300,status=10"`).
    pub tool_timeouts: HashMap<String, Duration>,
    /// How long a provider connection may take to open.
    pub provider_connect_timeout: Duration,
    /// How long a provider may stay silent (before headers or between stream events).
    pub provider_idle_timeout: Duration,
    /// Heartbeat period of progress notifications.
    pub progress_interval: Duration,
    /// SIGTERM: how long calls in flight may still run.
    pub shutdown_grace: Duration,
    /// Largest MCP message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Records older than this are deleted.
    pub retention_max_age: Duration,
    /// At most this many records are kept.
    pub retention_max_rows: u64,
    /// Configured OpenAI-compatible endpoints.
    pub endpoints: Vec<EndpointConfig>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8765";

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so tests can feed their own environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let home = match get("EXAI_HOME") {
            Some(h) => PathBuf::from(h),
            None => default_home(get("XDG_STATE_HOME"), get("HOME")).ok_or(ConfigError::NoHome)?,
        };
        let listen_text = get("EXAI_LISTEN").unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen: SocketAddr = listen_text.parse().map_err(|e| ConfigError::Invalid {
            var: "EXAI_LISTEN",
            value: listen_text.clone(),
            why: format!("{e} (expected host:port, e.g. {DEFAULT_LISTEN})"),
        })?;
        let daemon_url = get("EXAI_URL").unwrap_or_else(|| format!("ws://{listen}/ws"));
        let secs = |var: &'static str, default: u64| -> Result<Duration, ConfigError> {
            match get(var) {
                None => Ok(Duration::from_secs(default)),
                Some(v) => parse_seconds(var, &v),
            }
        };
        let max_message_bytes = match get("EXAI_MAX_MESSAGE_BYTES") {
            None => 16 * 1024 * 1024,
            Some(v) => v.parse().map_err(|e| ConfigError::Invalid {
                var: "EXAI_MAX_MESSAGE_BYTES",
                value: v.clone(),
                why: format!("{e}"),
            })?,
        };
        let retention_max_rows = match get("EXAI_RETENTION_ROWS") {
            None => 100_000,
            Some(v) => v.parse().map_err(|e| ConfigError::Invalid {
                var: "EXAI_RETENTION_ROWS",
                value: v.clone(),
                why: format!("{e}"),
            })?,
        };
        let mut endpoints = Vec::new();
        if let Some(url) = get("CUSTOM_API_URL") {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::Invalid {
                    var: "CUSTOM_API_URL",
                    value: url,
                    why: "must start with http:// or https://".into(),
                });
            }
            endpoints.push(EndpointConfig {
                name: "custom".into(),
                base_url: url.trim_end_matches('/').to_string(),
                api_key: get("CUSTOM_API_KEY").map(Secret::new),
                default_model: get("CUSTOM_MODEL_NAME"),
            });
        }
        Ok(Config {
            home,
            listen,
            daemon_url,
            no_autostart: get("EXAI_NO_AUTOSTART").is_some_and(|v| v != "0"),
            call_timeout: secs("EXAI_CALL_TIMEOUT_S", 600)?,
            tool_timeouts: parse_tool_timeouts(get("EXAI_TOOL_TIMEOUTS"))?,
            provider_connect_timeout: secs("EXAI_PROVIDER_CONNECT_TIMEOUT_S", 10)?,
            provider_idle_timeout: secs("EXAI_PROVIDER_IDLE_TIMEOUT_S", 120)?,
            progress_interval: secs("EXAI_PROGRESS_INTERVAL_S", 5)?,
            shutdown_grace: secs("EXAI_SHUTDOWN_GRACE_S", 10)?,
            max_message_bytes,
            retention_max_age: secs("EXAI_RETENTION_S", 30 * 24 * 3600)?,
            retention_max_rows,
            endpoints,
        })
    }

    /// The deadline budget of one call of `tool`.
    pub fn timeout_for(&self, tool: &str) -> Duration {
        self.tool_timeouts
            .get(tool)
            .copied()
            .unwrap_or(self.call_timeout)
    }

    pub fn token_path(&self) -> PathBuf {
        self.home.join("token")
    }
    pub fn lock_path(&self) -> PathBuf {
        self.home.join("daemon.lock")
    }
    /// Written by the running daemon: its pid and address.
    pub fn daemon_info_path(&self) -> PathBuf {
        self.home.join("daemon.json")
    }
    pub fn store_path(&self) -> PathBuf {
        self.home.join("calls.sqlite3")
    }
    pub fn log_dir(&self) -> PathBuf {
        self.home.join("logs")
    }
}

fn default_home(xdg_state: Option<String>, home: Option<String>) -> Option<PathBuf> {
    if let Some(state) = xdg_state {
        return Some(Path::new(&state).join("exai"));
    }
    home.map(|h| Path::new(&h).join(".local/state/exai"))
}

fn parse_seconds(var: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let secs: f64 = value.trim().parse().map_err(|e| ConfigError::Invalid {
        var,
        value: value.to_string(),
        why: format!("{e} (expected a number of seconds)"),
    })?;
    if !secs.is_finite() || secs <= 0.0 {
        return Err(ConfigError::Invalid {
            var,
            value: value.to_string(),
            why: "must be a positive number of seconds".into(),
        });
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_tool_timeouts(text: Option<String>) -> Result<HashMap<String, Duration>, ConfigError> {
    let mut map = HashMap::new();
    for pair in text.iter().flat_map(|t| t.split(',')).map(str::trim) {
        if pair.is_empty() {
            continue;
        }
        let (tool, secs) = pair.split_once('=').ok_or_else(|| ConfigError::Invalid {
            var: "EXAI_TOOL_TIMEOUTS",
            value: pair.to_string(),
            why: "expected tool=seconds".into(),
        })?;
        map.insert(
            tool.trim().to_string(),
            parse_seconds("EXAI_TOOL_TIMEOUTS", secs)?,
        );
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| vars.get(k).cloned())
    }

    #[test]
    fn defaults_follow_xdg_and_the_documented_values() {
        let c = config(&[("HOME", "/home/u")]).unwrap();
        assert_eq!(c.home, PathBuf::from("/home/u/.local/state/exai"));
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.daemon_url, "ws://127.0.0.1:8765/ws");
        assert_eq!(c.call_timeout, Duration::from_secs(600));
        assert_eq!(c.max_message_bytes, 16 * 1024 * 1024);
        assert!(c.endpoints.is_empty());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = config(&[("HOME", "/h"), ("EXAI_CALL_TIMEOUT_S", "soon")]).unwrap_err();
        assert!(err.to_string().contains("EXAI_CALL_TIMEOUT_S"), "{err}");
        let err = config(&[("HOME", "/h"), ("CUSTOM_API_URL", "ftp://x")]).unwrap_err();
        assert!(err.to_string().contains("CUSTOM_API_URL"), "{err}");
        assert!(matches!(config(&[]), Err(ConfigError::NoHome)));
    }

    #[test]
    fn per_tool_timeouts_override_the_default() {
        let c = config(&[
            ("EXAI_HOME", "/x"),
            ("EXAI_TOOL_TIMEOUTS", "chat=2.5, status=1"),
        ])
        .unwrap();
        assert_eq!(c.timeout_for("chat"), Duration::from_millis(2500));
        assert_eq!(c.timeout_for("version"), Duration::from_secs(600));
    }

    #[test]
    fn secrets_do_not_print() {
        let c = config(&[
            ("EXAI_HOME", "/x"),
            ("CUSTOM_API_URL", "http://127.0.0.1:1/v1"),
            ("CUSTOM_API_KEY", "sk-very-secret"),
        ])
        .unwrap();
        assert!(!format!("{c:?}").contains("sk-very-secret"));
    }
}
