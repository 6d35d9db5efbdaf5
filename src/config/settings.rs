//! Every setting once: its environment variable, config-file key, kind (with its default) and
//! meaning. Parsing, the config file's keys, `exai config` and the README check all read this table.

use super::{Config, DEFAULT_LISTEN, DEFAULT_MAX_ANSWER_BYTES};

/// One setting.
pub struct Setting {
    /// The environment variable that sets it.
    pub var: &'static str,
    /// Its key in the config file (`section.key` for keys in a `[section]`); `None` when only the
    /// environment can hold it.
    pub file_key: Option<&'static str>,
    /// What its value looks like, and its default.
    pub kind: Kind,
    /// Whose it is: a call's, the daemon's, fixed at the daemon's start, or the shim's.
    pub scope: Scope,
    /// What it is for, in one line.
    pub doc: &'static str,
    /// Its effective value as `exai config` lists it; `None` leaves it out (provider settings are
    /// shown with their provider).
    pub shown: fn(&Config) -> Option<String>,
}

/// Whose a setting is, which says what a running daemon does when it changes and whether a
/// client's environment may set it for the client's own session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A call's: taken when a call is received, so a reload reaches the next call; a client on
    /// the local socket whose environment sets it gets it for its own session's calls.
    Call,
    /// The daemon's own (shutdown, retention): follows a reload, never taken from a client.
    Daemon,
    /// Fixed when the daemon starts (where it lives, listens, stores): a reload that changes
    /// it keeps the old value and says `exai daemon restart`.
    Restart,
    /// Read by `exai stdio` only (where to find the daemon).
    Shim,
}

impl Scope {
    /// How the README's settings table says it.
    pub fn word(self) -> &'static str {
        match self {
            Scope::Call => "call",
            Scope::Daemon => "daemon",
            Scope::Restart => "restart",
            Scope::Shim => "shim",
        }
    }
}

/// Variables that say where exai's files are, read by every setting's lookup; never a
/// session's own (the daemon's files are the daemon's).
const LOCATION_VARS: [&str; 3] = ["HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME"];

/// Whether a client's environment may set `var` for its own session: a call-scope setting, or
/// a provider's variable (its key, URL, models, limit: not in the table), never a location.
pub fn is_session_var(var: &str) -> bool {
    match setting(var) {
        Some(setting) => setting.scope == Scope::Call,
        None => !LOCATION_VARS.contains(&var),
    }
}

/// What a setting's value looks like. Kinds with a typed default carry it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// Text taken as it is; `default` says in words what applies when it is unset.
    Text { default: &'static str },
    /// `ip:port` or `localhost:port`.
    Address { default: &'static str },
    /// Set to anything but `0`, it is on.
    Flag,
    /// Comma-separated items (a list in the config file).
    List,
    /// An `http://` or `https://` URL.
    Url,
    /// A `postgres://` URL; its user and password are never shown.
    DatabaseUrl,
    /// A secret: never shown, never in the config file.
    Secret,
    /// A path to a file that exists.
    File,
    /// A positive number of seconds.
    Seconds(f64),
    /// A whole number.
    Count(u64),
    /// A whole number above zero.
    Positive(u64),
    /// A whole number of at least `min` (`_` separators allowed).
    AtLeast { min: u64, default: u64 },
    /// A whole number above `min`.
    Above { min: u64, default: u64 },
    /// `name=seconds` pairs (a table in the config file); `default` in words.
    SecondsByName { default: &'static str },
    /// `name=count` pairs, each a positive whole number (a table in the config file).
    CountsByName,
    /// An amount of US dollars (`2.50`), kept exactly to the micro-dollar.
    Dollars,
    /// `name=dollars` pairs (a table in the config file).
    DollarsByName,
}

impl Kind {
    /// The default as the README's settings table gives it (`—` for none).
    pub fn default_text(&self) -> String {
        match *self {
            Kind::Text { default }
            | Kind::Address { default }
            | Kind::SecondsByName { default } => default.to_string(),
            Kind::DatabaseUrl => "SQLite: EXAI_HOME/calls.sqlite3".to_string(),
            Kind::Seconds(secs) => secs.to_string(),
            Kind::Count(n)
            | Kind::Positive(n)
            | Kind::AtLeast { default: n, .. }
            | Kind::Above { default: n, .. } => n.to_string(),
            Kind::Flag
            | Kind::List
            | Kind::Url
            | Kind::Secret
            | Kind::File
            | Kind::CountsByName
            | Kind::Dollars
            | Kind::DollarsByName => "—".to_string(),
        }
    }

    /// Whether the config file holds it as a table of names (`[tool_timeouts]`).
    pub fn is_table(&self) -> bool {
        matches!(
            self,
            Kind::SecondsByName { .. } | Kind::CountsByName | Kind::DollarsByName
        )
    }
}

impl Setting {
    /// Its config-file key as `exai config` shows it: `[section]` for tables, `-` for none.
    pub fn file_key_shown(&self) -> String {
        match self.file_key {
            None => "-".to_string(),
            Some(key) if self.kind.is_table() => format!("[{key}]"),
            Some(key) => key.to_string(),
        }
    }
}

/// The setting set by `var`, if it is one of the table's.
pub fn setting(var: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.var == var)
}

fn seconds(d: std::time::Duration) -> Option<String> {
    Some(d.as_secs_f64().to_string())
}

fn whole_seconds(d: std::time::Duration) -> Option<String> {
    Some(d.as_secs().to_string())
}

fn path(p: &std::path::Path) -> Option<String> {
    Some(p.display().to_string())
}

/// `name=value` pairs sorted by name, as `exai config` shows a table setting.
fn sorted_pairs<V>(pairs: impl Iterator<Item = (String, V)>, show: fn(V) -> String) -> String {
    let mut pairs: Vec<String> = pairs.map(|(k, v)| format!("{k}={}", show(v))).collect();
    pairs.sort();
    pairs.join(",")
}

/// Settings shown with their provider in `exai config`.
fn with_the_provider(_: &Config) -> Option<String> {
    None
}

/// Declares each setting as a constant (for the code that reads it) and lists them all in
/// `SETTINGS`, so a setting cannot be declared and forgotten by the list.
macro_rules! settings {
    ($($name:ident { $($field:ident: $value:expr),* $(,)? })*) => {
        $(pub const $name: Setting = Setting { $($field: $value),* };)*
        /// Every setting, in the order `exai config` lists them.
        pub const SETTINGS: &[Setting] = &[$($name),*];
    };
}

settings! {
    HOME {
        var: "EXAI_HOME",
        file_key: None,
        kind: Kind::Text { default: "$XDG_STATE_HOME/exai or ~/.local/state/exai" },
        scope: Scope::Restart,
        doc: "state directory: store, logs, lock, token, daemon.sock",
        shown: |c| path(&c.home),
    }
    LISTEN {
        var: "EXAI_LISTEN",
        file_key: Some("listen"),
        kind: Kind::Address { default: DEFAULT_LISTEN },
        scope: Scope::Restart,
        doc: "the daemon's TCP address for HTTP clients",
        shown: |c| Some(c.listen.to_string()),
    }
    URL {
        var: "EXAI_URL",
        file_key: None,
        kind: Kind::Text { default: "unset: EXAI_HOME/daemon.sock" },
        scope: Scope::Shim,
        doc: "where exai stdio finds the daemon (ws://host:port/ws: TCP with challenge-response)",
        shown: |c| Some(c.daemon_url.clone().unwrap_or_else(|| {
            format!("unset: exai stdio uses {}", c.socket_path().display())
        })),
    }
    NO_AUTOSTART {
        var: "EXAI_NO_AUTOSTART",
        file_key: None,
        kind: Kind::Flag,
        scope: Scope::Shim,
        doc: "exai stdio never starts a daemon",
        shown: |c| Some(c.no_autostart.to_string()),
    }
    METRICS_PUBLIC {
        var: "EXAI_METRICS_PUBLIC",
        file_key: None,
        kind: Kind::Flag,
        scope: Scope::Restart,
        doc: "the daemon serves /metrics without a token (only when it listens on loopback)",
        shown: |c| Some(c.metrics_public.to_string()),
    }
    CONFIG_FILE {
        var: "EXAI_CONFIG",
        file_key: None,
        kind: Kind::Text { default: "~/.config/exai/config.toml" },
        scope: Scope::Restart,
        doc: "the config file",
        shown: |c| c.file.as_deref().and_then(path),
    }
    DEFAULT_MODEL {
        var: "DEFAULT_MODEL",
        file_key: Some("default_model"),
        kind: Kind::Text { default: "auto" },
        scope: Scope::Call,
        doc: "the model of calls that name none (auto: the strongest available)",
        shown: |c| Some(c.default_model.clone().unwrap_or_else(|| "auto".into())),
    }
    FALLBACK_MODELS {
        var: "EXAI_FALLBACK_MODELS",
        file_key: Some("fallback_models"),
        kind: Kind::List,
        scope: Scope::Call,
        doc: "tried in order when a model is unavailable or out of retries",
        shown: |c| Some(c.fallback_models.join(",")),
    }
    MODELS_FILE {
        var: "EXAI_MODELS_FILE",
        file_key: Some("models_file"),
        kind: Kind::File,
        scope: Scope::Call,
        doc: "a catalog file extending the built-in one",
        shown: |c| c.catalog_file.as_deref().and_then(path),
    }
    CALL_TIMEOUT {
        var: "EXAI_CALL_TIMEOUT_S",
        file_key: Some("timeouts.call"),
        kind: Kind::Seconds(600.0),
        scope: Scope::Call,
        doc: "the deadline of a call",
        shown: |c| seconds(c.call_timeout),
    }
    TOOL_TIMEOUTS {
        var: "EXAI_TOOL_TIMEOUTS",
        file_key: Some("tool_timeouts"),
        kind: Kind::SecondsByName { default: "—" },
        scope: Scope::Call,
        doc: "per-tool deadlines (tool=seconds)",
        shown: |c| Some(sorted_pairs(
            c.tool_timeouts.iter().map(|(t, d)| (t.clone(), *d)),
            |d| d.as_secs_f64().to_string(),
        )),
    }
    TOOL_MAX_OUTPUT {
        var: "EXAI_TOOL_MAX_OUTPUT",
        file_key: Some("tool_max_output"),
        kind: Kind::CountsByName,
        scope: Scope::Call,
        doc: "per-tool output limits in tokens (tool=tokens), below each model's own",
        shown: |c| Some(sorted_pairs(
            c.tool_max_output.iter().map(|(t, n)| (t.clone(), *n)),
            |n| n.to_string(),
        )),
    }
    PROVIDER_CONNECT_TIMEOUT {
        var: "EXAI_PROVIDER_CONNECT_TIMEOUT_S",
        file_key: Some("timeouts.provider_connect"),
        kind: Kind::Seconds(10.0),
        scope: Scope::Call,
        doc: "opening a connection to a provider",
        shown: |c| seconds(c.provider_connect_timeout),
    }
    PROVIDER_KEEPALIVE {
        var: "EXAI_PROVIDER_KEEPALIVE_S",
        file_key: Some("timeouts.provider_keepalive"),
        kind: Kind::Seconds(20.0),
        scope: Scope::Call,
        doc: "an HTTP/2 ping to a provider this often while a request waits; a connection that leaves one unanswered as long is dropped",
        shown: |c| seconds(c.provider_keepalive),
    }
    PROVIDER_HTTP2 {
        var: "EXAI_PROVIDER_HTTP2",
        file_key: Some("provider_http2"),
        kind: Kind::Text { default: "auto" },
        scope: Scope::Call,
        doc: "HTTP/2 to providers: auto (where TLS offers it), always (also h2c over http://), off",
        shown: |c| Some(c.provider_http2.as_str().to_string()),
    }
    PROVIDER_CA_FILE {
        var: "EXAI_PROVIDER_CA_FILE",
        file_key: Some("provider_ca_file"),
        kind: Kind::File,
        scope: Scope::Call,
        doc: "PEM certificates trusted for providers' TLS besides the built-in roots (a self-hosted endpoint's CA)",
        shown: |c| c.provider_ca.as_ref().and_then(|ca| path(&ca.path)),
    }
    PROVIDER_IDLE_TIMEOUT {
        var: "EXAI_PROVIDER_IDLE_TIMEOUT_S",
        file_key: Some("timeouts.provider_idle"),
        kind: Kind::Seconds(120.0),
        scope: Scope::Call,
        doc: "a provider silent this long (before headers or between events) fails the attempt",
        shown: |c| seconds(c.provider_idle_timeout),
    }
    FIRST_TOKEN_TIMEOUT {
        var: "EXAI_FIRST_TOKEN_TIMEOUT_S",
        file_key: Some("timeouts.first_token"),
        kind: Kind::Seconds(300.0),
        scope: Scope::Call,
        doc: "the longest silence before the first token",
        shown: |c| seconds(c.first_token_timeout),
    }
    PROGRESS_INTERVAL {
        var: "EXAI_PROGRESS_INTERVAL_S",
        file_key: Some("timeouts.progress_interval"),
        kind: Kind::Seconds(5.0),
        scope: Scope::Call,
        doc: "heartbeat period of progress notifications",
        shown: |c| seconds(c.progress_interval),
    }
    SHUTDOWN_GRACE {
        var: "EXAI_SHUTDOWN_GRACE_S",
        file_key: Some("timeouts.shutdown_grace"),
        kind: Kind::Seconds(10.0),
        scope: Scope::Daemon,
        doc: "on SIGTERM, how long calls in flight may still finish",
        shown: |c| seconds(c.shutdown_grace),
    }
    MAX_MESSAGE_BYTES {
        var: "EXAI_MAX_MESSAGE_BYTES",
        file_key: Some("max_message_bytes"),
        kind: Kind::Count(16 * 1024 * 1024),
        scope: Scope::Restart,
        doc: "largest MCP message accepted, in bytes",
        shown: |c| Some(c.max_message_bytes.to_string()),
    }
    MAX_ANSWER_BYTES {
        var: "EXAI_MAX_ANSWER_BYTES",
        file_key: Some("max_answer_bytes"),
        kind: Kind::Positive(DEFAULT_MAX_ANSWER_BYTES),
        scope: Scope::Call,
        doc: "most answer, reasoning and tool-call bytes one provider request may bring",
        shown: |c| Some(c.max_answer_bytes.to_string()),
    }
    PROVIDER_CONCURRENCY {
        var: "EXAI_PROVIDER_CONCURRENCY",
        file_key: Some("provider_concurrency"),
        kind: Kind::Positive(16),
        scope: Scope::Call,
        doc: "requests in flight per provider unless it has its own limit",
        shown: |c| Some(c.default_concurrency.to_string()),
    }
    RETRY_ATTEMPTS {
        var: "EXAI_RETRY_ATTEMPTS",
        file_key: Some("retry.attempts"),
        kind: Kind::Positive(4),
        scope: Scope::Call,
        doc: "attempts per model, the first included",
        shown: |c| Some(c.retry.max_attempts.to_string()),
    }
    RETRY_BASE {
        var: "EXAI_RETRY_BASE_S",
        file_key: Some("retry.base_s"),
        kind: Kind::Seconds(0.5),
        scope: Scope::Call,
        doc: "the first retry's backoff",
        shown: |c| seconds(c.retry.base_delay),
    }
    RETRY_MAX_DELAY {
        var: "EXAI_RETRY_MAX_DELAY_S",
        file_key: Some("retry.max_delay_s"),
        kind: Kind::Seconds(8.0),
        scope: Scope::Call,
        doc: "the longest backoff",
        shown: |c| seconds(c.retry.max_delay),
    }
    RETRY_AFTER_CAP {
        var: "EXAI_RETRY_AFTER_CAP_S",
        file_key: Some("retry.retry_after_cap_s"),
        kind: Kind::Seconds(30.0),
        scope: Scope::Call,
        doc: "the longest Retry-After honoured",
        shown: |c| seconds(c.retry.max_retry_after),
    }
    RETENTION {
        var: "EXAI_RETENTION_S",
        file_key: Some("retention.max_age_s"),
        kind: Kind::Seconds(30.0 * 24.0 * 3600.0),
        scope: Scope::Daemon,
        doc: "call records older than this are deleted",
        shown: |c| whole_seconds(c.retention_max_age),
    }
    RETENTION_ROWS {
        var: "EXAI_RETENTION_ROWS",
        file_key: Some("retention.max_rows"),
        kind: Kind::Count(100_000),
        scope: Scope::Daemon,
        doc: "at most this many call records are kept",
        shown: |c| Some(c.retention_max_rows.to_string()),
    }
    DATABASE_URL {
        var: "EXAI_DATABASE_URL",
        file_key: Some("store.url"),
        kind: Kind::DatabaseUrl,
        scope: Scope::Restart,
        doc: "a Postgres database as the store, shared by a team's daemons (SQLite in EXAI_HOME when unset)",
        shown: |c| Some(c.store.to_string()),
    }
    REPLICA_LEASE {
        var: "EXAI_REPLICA_LEASE_S",
        file_key: Some("store.replica_lease_s"),
        kind: Kind::Seconds(15.0),
        scope: Scope::Restart,
        doc: "a replica silent this long (no heartbeat) has its running calls marked interrupted by the others",
        shown: |c| seconds(c.replica_lease),
    }
    SHARED_CONCURRENCY {
        var: "EXAI_SHARED_CONCURRENCY",
        file_key: Some("shared_concurrency"),
        kind: Kind::CountsByName,
        scope: Scope::Restart,
        doc: "requests in flight per provider across every replica on the shared store (provider=requests), on top of each replica's own limit",
        shown: |c| Some(sorted_pairs(
            c.shared_concurrency.iter().map(|(p, n)| (p.clone(), *n)),
            |n| n.to_string(),
        )),
    }
    DAILY_BUDGET {
        var: "EXAI_DAILY_BUDGET_USD",
        file_key: Some("daily_budget_usd"),
        kind: Kind::Dollars,
        scope: Scope::Daemon,
        doc: "US dollars a UTC day all calls may spend: past it, a provider request is refused before it is sent, saying the budget, today's spend and when it resets",
        shown: |c| c.daily_budget.map(|m| crate::providers::price::usd(Some(m))),
    }
    PROVIDER_DAILY_BUDGET {
        var: "EXAI_PROVIDER_DAILY_BUDGET_USD",
        file_key: Some("provider_daily_budget_usd"),
        kind: Kind::DollarsByName,
        scope: Scope::Daemon,
        doc: "US dollars a UTC day each provider's requests may spend (provider=dollars), refused as EXAI_DAILY_BUDGET_USD's",
        shown: |c| Some(sorted_pairs(
            c.provider_daily_budget.iter().map(|(p, m)| (p.clone(), *m)),
            |m| crate::providers::price::usd(Some(m)),
        )),
    }
    USER_DAILY_BUDGET {
        var: "EXAI_USER_DAILY_BUDGET_USD",
        file_key: Some("user_daily_budget_usd"),
        kind: Kind::DollarsByName,
        scope: Scope::Daemon,
        doc: "US dollars a UTC day each person's calls may spend on a shared exai (name=dollars, * for every other person; the owner's token has none), refused as EXAI_DAILY_BUDGET_USD's",
        shown: |c| Some(sorted_pairs(
            c.user_daily_budget.iter().map(|(p, m)| (p.clone(), *m)),
            |m| crate::providers::price::usd(Some(m)),
        )),
    }
    USER_MAX_CALLS {
        var: "EXAI_USER_MAX_CALLS",
        file_key: Some("user_max_calls"),
        kind: Kind::Count(32),
        scope: Scope::Daemon,
        doc: "calls one person may have in flight on this exai at once (0: no limit; the owner's token has none), so one member cannot take every provider slot",
        shown: |c| Some(c.user_max_calls.to_string()),
    }
    CUSTOM_API_URL {
        var: "CUSTOM_API_URL",
        file_key: None,
        kind: Kind::Url,
        scope: Scope::Call,
        doc: "an OpenAI-compatible endpoint (use [[endpoints]] in the config file)",
        shown: with_the_provider,
    }
    CUSTOM_API_KEY {
        var: "CUSTOM_API_KEY",
        file_key: None,
        kind: Kind::Secret,
        scope: Scope::Call,
        doc: "the custom endpoint's key",
        shown: with_the_provider,
    }
    CUSTOM_MODEL_NAME {
        var: "CUSTOM_MODEL_NAME",
        file_key: None,
        kind: Kind::Text { default: "—" },
        scope: Scope::Call,
        doc: "the custom endpoint's model",
        shown: with_the_provider,
    }
    CUSTOM_ALLOWED_MODELS {
        var: "CUSTOM_ALLOWED_MODELS",
        file_key: None,
        kind: Kind::List,
        scope: Scope::Call,
        doc: "when set, only these models may be used on the custom endpoint",
        shown: with_the_provider,
    }
    CLIENT_PATIENCE {
        var: "EXAI_CLIENT_PATIENCE",
        file_key: Some("client_patience"),
        kind: Kind::SecondsByName { default: "Claude Code: 24 h, Gemini CLI: 10 min, Codex and others: 60 s" },
        scope: Scope::Call,
        doc: "how long each client waits for a tool answer (client=seconds, * for all others)",
        shown: |c| {
            let mut rules: Vec<String> = c
                .client_patience
                .iter()
                .map(|(client, d)| format!("{client}={}", d.as_secs()))
                .collect();
            rules.push(format!("*={}", c.default_patience.as_secs()));
            Some(rules.join(","))
        },
    }
    RESULT_TTL {
        var: "EXAI_RESULT_TTL_S",
        file_key: Some("memory.result_ttl_s"),
        kind: Kind::Seconds(86_400.0),
        scope: Scope::Daemon,
        doc: "how long finished results stay fetchable with call_result",
        shown: |c| whole_seconds(c.result_ttl),
    }
    ALLOWED_ROOTS {
        var: "EXAI_ALLOWED_ROOTS",
        file_key: Some("allowed_roots"),
        kind: Kind::List,
        scope: Scope::Call,
        doc: "when set, files are read only below these directories",
        shown: |c| Some(
            c.allowed_roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
    }
    THREAD_TTL {
        var: "EXAI_THREAD_TTL_S",
        file_key: Some("memory.thread_ttl_s"),
        kind: Kind::Seconds(86_400.0),
        scope: Scope::Call,
        doc: "how long an idle conversation thread is kept",
        shown: |c| whole_seconds(c.thread_ttl),
    }
    THREAD_MAX_TURNS {
        var: "EXAI_THREAD_MAX_TURNS",
        file_key: Some("memory.thread_max_exchanges"),
        kind: Kind::Above { min: 1, default: 50 },
        scope: Scope::Call,
        doc: "most exchanges a conversation thread keeps",
        shown: |c| Some(c.thread_max_turns.to_string()),
    }
    DISABLED_TOOLS {
        var: "DISABLED_TOOLS",
        file_key: Some("disabled_tools"),
        kind: Kind::List,
        scope: Scope::Restart,
        doc: "tools hidden from clients",
        shown: |c| Some(c.disabled_tools.join(",")),
    }
    MAX_OUTPUT_TOKENS {
        var: "MAX_MCP_OUTPUT_TOKENS",
        file_key: Some("max_output_tokens"),
        kind: Kind::AtLeast { min: 1000, default: 25_000 },
        scope: Scope::Restart,
        doc: "the most tokens of answer a client is handed; the record keeps it whole",
        shown: |c| Some(c.max_output_tokens.to_string()),
    }
    PROMPT_SIZE_LIMIT {
        var: "EXAI_PROMPT_SIZE_LIMIT",
        file_key: Some("prompt_size_limit"),
        kind: Kind::AtLeast { min: 1, default: 60_000 },
        scope: Scope::Call,
        doc: "longer prompts (characters) are asked for as a file",
        shown: |c| Some(c.prompt_size_limit.to_string()),
    }
    LOCALE {
        var: "EXAI_LOCALE",
        file_key: Some("locale"),
        kind: Kind::Text { default: "—" },
        scope: Scope::Call,
        doc: "the language models answer in (a tag like fr-FR or a name; else LOCALE)",
        shown: |c| c.locale.as_ref().map(|l| l.as_str().to_string()),
    }
    LOG {
        var: "EXAI_LOG",
        file_key: None,
        kind: Kind::Text { default: "info" },
        scope: Scope::Restart,
        doc: "log filter (else RUST_LOG)",
        shown: |_| Some(
            std::env::var("EXAI_LOG")
                .or_else(|_| std::env::var("RUST_LOG"))
                .unwrap_or_else(|_| "info".into()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readme() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
    }

    /// The README's settings table as (variables, default) per row.
    fn readme_rows(readme: &str) -> Vec<(Vec<String>, String)> {
        let section = &readme[readme.find("\n## Settings\n").expect("a Settings section")..];
        let section = &section[..section[1..].find("\n## ").map_or(section.len(), |n| n + 1)];
        section
            .lines()
            .filter(|line| line.starts_with("| `"))
            .map(|line| {
                let cells: Vec<&str> = line[1..].splitn(3, '|').map(str::trim).collect();
                // `EXAI_LOG` (or `RUST_LOG`): the words in brackets name aliases, not settings.
                let names = cells[0].split(" (").next().unwrap_or_default();
                let vars = names
                    .split(',')
                    .map(|name| name.trim().trim_matches('`').to_string())
                    .collect();
                (vars, cells[1].to_string())
            })
            .collect()
    }

    /// A default as the README writes it, in the table's words: no code marks, numbers without
    /// thousands separators, days in seconds, "unset" as "—".
    fn normalized(default: &str) -> String {
        let text = default.replace('`', "");
        let text = text.trim();
        if text == "unset" {
            return "—".into();
        }
        if let Some(days) = text.strip_suffix(" days")
            && let Ok(days) = days.parse::<u64>()
        {
            return (days * 86_400).to_string();
        }
        if text.chars().all(|c| c.is_ascii_digit() || c == ',') {
            return text.replace(',', "");
        }
        text.to_string()
    }

    #[test]
    fn the_readme_documents_every_setting_with_its_default() {
        let readme = readme();
        let rows = readme_rows(&readme);
        assert!(
            rows.len() > 20,
            "the settings table was not found: {rows:?}"
        );
        let mut documented = Vec::new();
        for (vars, default) in &rows {
            let parts: Vec<&str> = match default.split(", ").collect::<Vec<_>>() {
                parts if vars.len() > 1 && parts.len() == vars.len() => parts,
                _ => vec![default.as_str(); vars.len()],
            };
            for (var, default) in vars.iter().zip(parts) {
                let setting = setting(var)
                    .unwrap_or_else(|| panic!("README documents {var}, which is no setting"));
                assert_eq!(
                    normalized(default),
                    setting.kind.default_text(),
                    "{var}: the README's default differs from the table's"
                );
                documented.push(var.clone());
            }
        }
        let undocumented: Vec<&str> = SETTINGS
            .iter()
            .map(|s| s.var)
            .filter(|var| !documented.iter().any(|d| d == var))
            .collect();
        assert!(
            undocumented.is_empty(),
            "not in README's table: {undocumented:?}"
        );
    }

    #[test]
    fn the_readme_names_the_settings_without_a_file_key_and_the_keys_it_comments() {
        let readme = readme();
        let sentence = &readme[readme
            .find("has a key here except")
            .expect("the sentence naming settings without a key")..];
        let sentence = &sentence[..sentence.find("(use").unwrap_or(sentence.len())];
        let named: Vec<&str> = sentence.split('`').skip(1).step_by(2).collect();
        let is_named = |var: &str| {
            named.iter().any(|name| match name.strip_suffix('*') {
                Some(prefix) => var.starts_with(prefix),
                None => *name == var,
            })
        };
        for setting in SETTINGS {
            assert_eq!(
                setting.file_key.is_none(),
                is_named(setting.var),
                "{}: README and table disagree on whether it has a file key",
                setting.var
            );
        }
        for name in named.iter().filter(|n| !n.ends_with('*')) {
            assert!(
                setting(name).is_some(),
                "README names {name}, which is no setting"
            );
        }
        // `max_output_tokens = 25000   # MAX_MCP_OUTPUT_TOKENS`: the comment names the key's setting.
        let mut commented = 0;
        for line in readme.lines() {
            let Some((assignment, comment)) = line.split_once('#') else {
                continue;
            };
            let (Some((key, _)), Some(setting)) =
                (assignment.split_once(" = "), setting(comment.trim()))
            else {
                continue;
            };
            assert_eq!(setting.file_key, Some(key.trim()), "{line}");
            commented += 1;
        }
        assert!(
            commented >= 2,
            "the example's comments naming settings were not found"
        );
    }

    #[test]
    fn the_tables_defaults_are_the_defaults_config_applies() {
        let config =
            Config::from_lookup(|var| (var == "EXAI_HOME").then(|| "/x".to_string())).unwrap();
        for setting in SETTINGS {
            let numeric = matches!(
                setting.kind,
                Kind::Seconds(_)
                    | Kind::Count(_)
                    | Kind::Positive(_)
                    | Kind::AtLeast { .. }
                    | Kind::Above { .. }
                    | Kind::Address { .. }
            );
            if numeric {
                assert_eq!(
                    (setting.shown)(&config),
                    Some(setting.kind.default_text()),
                    "{}",
                    setting.var
                );
            }
        }
        assert_eq!((DEFAULT_MODEL.shown)(&config).as_deref(), Some("auto"));
    }

    #[test]
    fn each_setting_and_file_key_is_declared_once_and_the_file_can_hold_its_kind() {
        for (i, setting) in SETTINGS.iter().enumerate() {
            let later = &SETTINGS[i + 1..];
            assert!(
                !later.iter().any(|s| s.var == setting.var),
                "{} twice",
                setting.var
            );
            if let Some(key) = setting.file_key {
                assert!(
                    !later.iter().any(|s| s.file_key == Some(key)),
                    "{key} twice"
                );
                assert!(
                    !matches!(setting.kind, Kind::Flag | Kind::Secret),
                    "{} cannot be in the file",
                    setting.var
                );
            }
        }
    }
}
