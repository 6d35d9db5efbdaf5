//! `exai calls` and `exai status`: what happened, read straight from the store (daemon up or not);
//! `doctor`, `keys`, `threads`, `usage` and `users` in their own modules.

pub mod call;
pub mod daemon_control;
pub mod doctor;
pub mod follow;
pub mod keys;
pub mod open;
pub mod safe_output;
pub mod setup;
pub mod threads;
pub mod usage;
pub mod users;

use std::io::Write;
use std::time::Duration;

use serde_json::json;

use crate::calls::progress::thousands;
use crate::calls::record::{log_lines, record_json, result_text};
use crate::config::Config;
use crate::daemon::DaemonInfo;
use crate::store::{CallFilter, CallRow, CallState, StoreError, StoreReader, now_ms};

/// Why a CLI command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no call with id {0:?} (it may have expired, or never existed)")]
    UnknownCall(String),
    #[error("{0:?} matches several calls: {1}; give more of the id")]
    Ambiguous(String, String),
    #[error(
        "no thread with id {0:?} (it may have expired, or never existed; `exai threads` lists them)"
    )]
    UnknownThread(String),
    #[error("{0:?} matches several threads: {1}; give more of the id")]
    AmbiguousThread(String, String),
    #[error("{0}")]
    DamagedThread(String),
    #[error("no call store yet at {0}: exai has not run with this EXAI_HOME")]
    NoStore(String),
}

fn open_store(config: &Config) -> Result<StoreReader, CliError> {
    if !config.store.exists() {
        return Err(CliError::NoStore(config.store.to_string()));
    }
    Ok(StoreReader::open_at(&config.store)?)
}

/// How the last daemon of this home ended, when it stopped on an error and no daemon holds the
/// home now: its pid, how long ago ("3 min"), and the error.
fn last_daemon_failure(config: &Config) -> Option<(u32, String, String)> {
    if crate::daemon::lock_is_held(config) {
        return None;
    }
    let note = crate::daemon::LockNote::read(config)?;
    let error = note.stopped_on?;
    Some((note.pid, age(now_ms() - note.at_ms), error))
}

/// "3 s", "4 min", "2 h", "5 d".
fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86400),
    }
}

fn duration(row: &CallRow) -> String {
    match row.duration_ms {
        Some(ms) if ms < 10_000 => format!("{:.2} s", ms as f64 / 1000.0),
        Some(ms) => format!("{} s", ms / 1000),
        None => format!("{} s…", (now_ms() - row.received_at_ms) / 1000),
    }
}

fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// `exai calls`: a table of recent calls (or JSON).
pub fn list_calls(
    config: &Config,
    filter: &CallFilter,
    as_json: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let rows = open_store(config)?.list(filter)?;
    if as_json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        )?;
        return Ok(());
    }
    if rows.is_empty() {
        writeln!(out, "no calls")?;
        return Ok(());
    }
    // A shared store names each call's user; one person's store has none to show.
    let with_users = rows.iter().any(|row| row.user_name.is_some());
    let user_cell = |user: &str| match with_users {
        true => format!("{:<12}  ", one_line(user, 12)),
        false => String::new(),
    };
    writeln!(
        out,
        "{:<36}  {:>7}  {}{:<10}  {:<20}  {:<11}  {:>8}  {:>13}  ERROR",
        "ID",
        "AGE",
        user_cell("USER"),
        "TOOL",
        "MODEL",
        "STATE",
        "DURATION",
        "TOKENS IN/OUT"
    )?;
    let now = now_ms();
    for row in rows {
        let tokens = match (row.tokens_in, row.tokens_out) {
            (None, None) => "-".to_string(),
            (i, o) => format!(
                "{}/{}",
                i.map(|t| thousands(t as u64)).unwrap_or_else(|| "?".into()),
                o.map(|t| thousands(t as u64)).unwrap_or_else(|| "?".into())
            ),
        };
        writeln!(
            out,
            "{:<36}  {:>7}  {}{:<10}  {:<20}  {:<11}  {:>8}  {:>13}  {}",
            row.id,
            age(now - row.received_at_ms),
            user_cell(row.user_name.as_deref().unwrap_or("(owner)")),
            one_line(&row.tool, 10),
            one_line(row.model.as_deref().unwrap_or("-"), 20),
            row.state,
            duration(&row),
            tokens,
            one_line(row.error_message.as_deref().unwrap_or(""), 60)
        )?;
    }
    Ok(())
}

/// `exai calls show ID`: everything about one call, its answer or error, and its log lines.
pub fn show_call(
    config: &Config,
    id: &str,
    as_json: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let store = open_store(config)?;
    let row = match store.get(id)? {
        Some(row) => row,
        None => {
            let matches = store.find_by_fragment(id, None)?;
            match matches.as_slice() {
                [only] => store
                    .get(only)?
                    .ok_or_else(|| CliError::UnknownCall(id.into()))?,
                [] => return Err(CliError::UnknownCall(id.into())),
                many => return Err(CliError::Ambiguous(id.into(), many.join(", "))),
            }
        }
    };
    let logs = log_lines(&config.log_dir(), &row.id);
    if as_json {
        write_json(out, &record_json(&row, &logs))?;
        return Ok(());
    }
    let field = |name: &str, value: Option<String>| -> String {
        format!("{name:<15}{}\n", value.unwrap_or_else(|| "-".into()))
    };
    let mut text = String::new();
    text += &field("call", Some(row.id.clone()));
    text += &field("tool", Some(row.tool.clone()));
    text += &field("state", Some(row.state.to_string()));
    text += &field(
        "client",
        Some(format!(
            "{} {} via {} (session {})",
            row.client_name.as_deref().unwrap_or("?"),
            row.client_version.as_deref().unwrap_or(""),
            row.transport,
            row.session_id
        )),
    );
    text += &field(
        "user",
        Some(
            row.user_name
                .clone()
                .unwrap_or_else(|| "(the owner: the daemon's own token)".into()),
        ),
    );
    text += &field(
        "received",
        Some(format!("{} ago", age(now_ms() - row.received_at_ms))),
    );
    text += &field("duration", Some(duration(&row)));
    text += &field("provider", row.provider.clone());
    text += &field("model", row.model.clone());
    text += &field(
        "tokens in/out",
        Some(format!(
            "{}/{}{}",
            row.tokens_in
                .map(|t| t.to_string())
                .unwrap_or_else(|| "?".into()),
            row.tokens_out
                .map(|t| t.to_string())
                .unwrap_or_else(|| "?".into()),
            row.cached_tokens
                .map(|t| format!(" ({t} of the input cached)"))
                .unwrap_or_default()
        )),
    );
    text += &field(
        "cost",
        Some(match (row.cost_usd_micros, row.state) {
            (None, CallState::Succeeded) => format!(
                "unknown ({} has no price: give it one in the models file)",
                row.model.as_deref().unwrap_or("the model")
            ),
            (None, state) if state.is_final() => format!(
                "unknown (no usage was reported before the call ended, or {} has no price)",
                row.model.as_deref().unwrap_or("the model")
            ),
            (micros, _) => crate::providers::price::usd(micros),
        }),
    );
    text += &field("finish", row.finish_reason.clone());
    text += &field("attempts", row.attempts.map(|a| a.to_string()));
    text += &field(
        "progress",
        Some(format!(
            "{} sent; last: {}",
            row.progress_count,
            row.last_progress.as_deref().unwrap_or("-")
        )),
    );
    text += &field("delivery", Some(row.delivery.to_string()));
    text += &field(
        "error",
        row.error_kind
            .as_ref()
            .map(|k| format!("{k}: {}", row.error_message.as_deref().unwrap_or(""))),
    );
    text += &field("arguments", Some(row.arguments.clone()));
    write!(out, "{text}")?;
    if let Some(result) = &row.result {
        writeln!(out, "\n--- result ---")?;
        writeln!(out, "{}", result_text(result))?;
    }
    writeln!(out, "\n--- log ({} lines) ---", logs.len())?;
    for line in logs {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// `exai status`: is the daemon up, what is it doing, what failed lately.
pub async fn status(config: &Config, as_json: bool, out: &mut impl Write) -> Result<(), CliError> {
    let info = DaemonInfo::read(config);
    let address = info
        .as_ref()
        .map(|i| i.listen.clone())
        .unwrap_or_else(|| config.listen.to_string());
    let health = crate::daemon::control::health_within(config, Duration::from_secs(2)).await;
    let for_reading = config.clone();
    let (failures, running, today, unreadable) =
        crate::spawn::blocking(move || -> Result<_, CliError> {
            let store = match open_store(&for_reading) {
                Ok(store) => store,
                Err(error) => return Ok((Vec::new(), Vec::new(), None, Some(error))),
            };
            let failures = store.list(&CallFilter {
                failed_only: true,
                limit: 5,
                ..Default::default()
            })?;
            let running = store.list(&CallFilter {
                running_only: true,
                limit: 50,
                ..Default::default()
            })?;
            let today = store.spend_today_seen_by(None)?;
            Ok((failures, running, Some(today), None))
        })
        .await
        .map_err(std::io::Error::other)??;
    let spent_today = today.map(|spend| crate::store::spend_totals(&spend).0);
    let daemon_version = crate::daemon::control::running_version(info.as_ref(), health.as_ref())
        .filter(|_| health.is_some());
    let version_skew = daemon_version.as_deref().and_then(|daemon| {
        crate::daemon::control::version_skew(crate::VERSION, daemon)
            .map(|skew| format!("{skew}: {}", crate::daemon::control::RESTART_ADVICE))
    });
    if as_json {
        let value = json!({
            "version": crate::VERSION,
            "daemon_version": daemon_version,
            "version_skew": version_skew,
            "daemon": health,
            "address": address,
            "home": config.home,
            "running": running,
            "recent_failures": failures,
            "spent_today_usd": spent_today.map(|m| crate::providers::price::usd_json(Some(m))),
            "spent_today_usd_micros": spent_today,
        });
        write_json(out, &value)?;
        return Ok(());
    }
    match &health {
        Some(h) => writeln!(
            out,
            "daemon: up · {} · pid {} · up {} s · {} session(s) · {} call(s) in flight · version {}",
            address,
            h["pid"],
            h["uptime_s"],
            h["sessions"],
            h["calls_in_flight"],
            daemon_version.as_deref().unwrap_or("?")
        )?,
        // This home's own daemon (not one EXAI_URL names) is known by its lock and its note.
        None if config.daemon_url.is_some() => {
            writeln!(out, "daemon: not running (expected at {address})")?
        }
        None => match last_daemon_failure(config) {
            Some((pid, ago, error)) => writeln!(
                out,
                "daemon: not running (expected at {address}); the last one (pid {pid}) stopped \
                 {ago} ago on an error: {error}"
            )?,
            None if crate::daemon::lock_is_held(config) => {
                let why = crate::daemon::stopped_holder(config).unwrap_or_else(|| {
                    let pid = crate::daemon::holder_pid(config)
                        .map_or("?".to_string(), |pid| pid.to_string());
                    format!(
                        "the daemon (pid {pid}) holds this home; it may be starting or stopping"
                    )
                });
                writeln!(out, "daemon: does not answer at {address}: {why}")?
            }
            None => writeln!(out, "daemon: not running (expected at {address})")?,
        },
    }
    if let Some(skew) = &version_skew {
        writeln!(out, "version: {skew}")?;
    }
    writeln!(out, "home: {}", config.home.display())?;
    if let Some(micros) = spent_today {
        writeln!(
            out,
            "spent today (UTC): {}{}",
            crate::providers::price::usd(Some(micros)),
            budget_note(config)
        )?;
    }
    let problems = health
        .as_ref()
        .and_then(|h| h["store"]["problems"].as_array().cloned())
        .unwrap_or_default();
    for problem in problems.iter().filter_map(|p| p.as_str()) {
        writeln!(out, "store: {problem}")?;
    }
    if let Some(error) = &unreadable {
        writeln!(out, "store: cannot be read: {error}")?;
    }
    if let Some(health) = &health {
        for line in crate::health::settings_lines(&health["settings"]) {
            writeln!(out, "{line}")?;
        }
    }
    for row in &running {
        writeln!(
            out,
            "  running {} {} · {} · {}",
            row.id,
            row.tool,
            duration(row),
            row.last_progress.as_deref().unwrap_or("-")
        )?;
    }
    if failures.is_empty() {
        writeln!(out, "no recent failures")?;
    } else {
        writeln!(out, "recent failures:")?;
        for row in &failures {
            writeln!(
                out,
                "  {} {} {} ({} ago): {}",
                row.id,
                row.tool,
                row.state,
                age(now_ms() - row.received_at_ms),
                one_line(row.error_message.as_deref().unwrap_or(""), 100)
            )?;
        }
    }
    Ok(())
}

/// " of a $5.000000 daily budget (glm: $1.000000)", or nothing when no budget is set.
fn budget_note(config: &Config) -> String {
    let usd = |m: i64| crate::providers::price::usd(Some(m));
    let mut providers: Vec<String> = config
        .provider_daily_budget
        .iter()
        .map(|(p, m)| format!("{p}: {}", usd(*m)))
        .collect();
    providers.sort();
    match (config.daily_budget, providers.is_empty()) {
        (None, true) => String::new(),
        (Some(m), true) => format!(" of a {} daily budget", usd(m)),
        (Some(m), false) => format!(" of a {} daily budget ({})", usd(m), providers.join(", ")),
        (None, false) => format!(" (daily budgets: {})", providers.join(", ")),
    }
}

/// What is wrong with the models calls fall back on: a default or fallback model that no usable
/// provider offers makes every call without a model (or every fallback) fail.
fn default_model_warnings(config: &Config) -> Vec<String> {
    let catalog = crate::providers::Catalog::load(config.catalog_file.as_deref())
        .unwrap_or_else(|_| crate::providers::Catalog::built_in());
    let providers = crate::providers::Providers::from_config(config, catalog, None);
    let mut warnings = Vec::new();
    // Naming no model is what such calls do: the default model, else `auto`.
    if let Err(why) = providers.resolve(None, crate::providers::Need::Deep) {
        let which = config.default_model.as_deref().unwrap_or("auto");
        warnings.push(format!(
            "DEFAULT_MODEL {which} cannot be used, so calls that name no model will fail: {why}"
        ));
    }
    for model in &config.fallback_models {
        if let Err(why) = providers.resolve(Some(model), crate::providers::Need::Deep) {
            warnings.push(format!(
                "EXAI_FALLBACK_MODELS {model} cannot be used: {why}"
            ));
        }
    }
    warnings
}

/// `exai config`: the effective settings, where each came from, and the providers (keys masked).
pub fn show_config(config: &Config, as_json: bool, out: &mut impl Write) -> Result<(), CliError> {
    let settings: Vec<(&crate::config::Setting, String, String)> = crate::config::SETTINGS
        .iter()
        .filter_map(|setting| {
            let value = (setting.shown)(config)?;
            let from = config
                .sources
                .get(setting.var)
                .cloned()
                .unwrap_or_else(|| "default".into());
            Some((setting, value, from))
        })
        .collect();
    let providers: Vec<serde_json::Value> = config
        .endpoints
        .iter()
        .map(|e| {
            json!({
                "name": e.name,
                "usable": e.unavailable.is_none(),
                "why_not": e.unavailable,
                "base_url": e.base_url,
                "key": match (&e.api_key, &e.key_source) {
                    (Some(key), Some(var)) => format!("set in {var} ({} characters, hidden)", key.expose().len()),
                    (Some(key), None) => format!("set ({} characters, hidden)", key.expose().len()),
                    (None, Some(var)) => format!("none ({var} not set)"),
                    (None, None) => "none needed".into(),
                },
                "models": e.models,
                "allowed_models": e.allowed_models,
                "max_concurrency": e.max_concurrency,
            })
        })
        .collect();
    // The CLIs clink may run; their variables by name only (a value may be a key).
    let clis: Vec<serde_json::Value> = config
        .clis
        .clis
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "command": c.command,
                "args": c.args,
                "resume_args": c.resume_args,
                "timeout_s": c.timeout.as_secs_f64(),
                "env": c.env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
                "working_dir": c.working_dir,
            })
        })
        .collect();
    let roles: Vec<serde_json::Value> = config
        .clis
        .roles
        .iter()
        .map(|(name, role)| match role {
            crate::clink::Role::BuiltIn(_) => json!({"name": name, "prompt": "built in"}),
            crate::clink::Role::File(path) => json!({"name": name, "prompt": path}),
        })
        .collect();
    let warnings = default_model_warnings(config);
    if as_json {
        let value = json!({
            "warnings": warnings,
            "config_file": config.file,
            "settings": settings.iter().map(|(setting, value, from)| json!({
                "setting": setting.var,
                "value": value,
                "from": from,
                "file_key": setting.file_key_shown(),
            })).collect::<Vec<_>>(),
            "providers": providers,
            "clink": {"clis": clis, "roles": roles},
        });
        write_json(out, &value)?;
        return Ok(());
    }
    match &config.file {
        Some(file) => writeln!(out, "config file: {}", file.display())?,
        None => writeln!(
            out,
            "config file: none (set EXAI_CONFIG or create ~/.config/exai/config.toml)"
        )?,
    }
    for warning in &warnings {
        writeln!(out, "warning: {warning}")?;
    }
    writeln!(
        out,
        "\n{:<32}  {:<40}  {:<32}  FROM",
        "SETTING", "VALUE", "CONFIG FILE KEY"
    )?;
    for (setting, value, from) in &settings {
        writeln!(
            out,
            "{:<32}  {:<40}  {:<32}  {from}",
            setting.var,
            one_line(value, 40),
            setting.file_key_shown()
        )?;
    }
    writeln!(out, "\nproviders:")?;
    for p in &providers {
        let state = if p["usable"] == true {
            "usable".to_string()
        } else {
            format!("not usable: {}", p["why_not"].as_str().unwrap_or("?"))
        };
        writeln!(out, "  {:<12} {state}", p["name"].as_str().unwrap_or("?"))?;
        writeln!(
            out,
            "      url {} · key {} · at most {} at once",
            p["base_url"].as_str().unwrap_or(""),
            p["key"].as_str().unwrap_or(""),
            p["max_concurrency"]
        )?;
        if let Some(allowed) = p["allowed_models"].as_array() {
            let names: Vec<&str> = allowed.iter().filter_map(|m| m.as_str()).collect();
            writeln!(out, "      allowed models: {}", names.join(", "))?;
        }
    }
    writeln!(out, "\nclink CLIs:")?;
    for cli in &config.clis.clis {
        writeln!(
            out,
            "  {:<12} {} {} · at most {}",
            cli.name,
            cli.command,
            cli.args.join(" "),
            crate::providers::Seconds(cli.timeout)
        )?;
    }
    let role_names = config.clis.role_names().join(", ");
    writeln!(out, "clink roles: {role_names}")?;
    Ok(())
}

/// What `exai` alone says at a terminal: what it is, and the commands that set it up.
pub fn welcome(out: &mut impl Write) -> std::io::Result<()> {
    write!(
        out,
        "exai {} — an MCP server that gives coding agents (Claude Code, Codex, Cursor, Gemini CLI, \
         Auggie) a team of other models: GLM, Kimi, OpenAI, OpenRouter or a local server.

Next:
  exai keys set glm     store a provider's key (or kimi, openai, openrouter, custom)
  exai setup claude     add exai to a client (or codex, cursor, gemini, auggie)
  exai doctor           check that everything works, and how to fix what does not

`exai --help` lists every command.
",
        crate::VERSION
    )
}

/// Writes `value` as pretty JSON on a line of its own (`--json` output).
pub(crate) fn write_json(out: &mut impl Write, value: &serde_json::Value) -> std::io::Result<()> {
    writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    )
}
