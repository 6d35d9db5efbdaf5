//! `exai doctor`: what works and what to fix — each check a verdict (ok, warn, FAIL), what it
//! found and, when not ok, the exact fix; no key or token is ever shown.
//!
//! The checks are independent async functions listed in [`checks`] and run together: adding
//! one is one function and one line there.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::json;

use crate::clients::{Client, Places, Scope, Wanted};
use crate::config::{BUILT_IN_PROVIDERS, Config, EndpointConfig, TOKEN_FILE, settings};
use crate::daemon::DaemonInfo;
use crate::daemon::control::{self, RESTART_ADVICE};
use crate::providers::openai_compat::ListModelsError;
use crate::providers::{ProbeError, platform_urls, probe_models};
use crate::store::{StoreLocation, StoreReader};

/// Below this much free space in EXAI_HOME's filesystem, a warning.
const LOW_DISK: u64 = 1 << 30;

/// How long the daemon gets to answer `/healthz`.
const DAEMON_WAIT: Duration = Duration::from_secs(2);

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    /// Works, but deserves attention; does not fail the run.
    Warn,
    /// Something exai uses does not work.
    Fail,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub verdict: Verdict,
    pub detail: String,
    /// What to do, whenever the verdict is not ok.
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            verdict: Verdict::Ok,
            detail: detail.into(),
            fix: None,
        }
    }
    fn warn(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Warn,
            fix: Some(fix.into()),
            ..Self::ok(name, detail)
        }
    }
    fn fail(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Fail,
            fix: Some(fix.into()),
            ..Self::ok(name, detail)
        }
    }
}

/// What the checks look at.
pub struct Scene {
    /// The configuration, or why it cannot be read (then most checks have nothing to look at).
    pub config: Result<Config, String>,
    /// Where the keys file is (or would be).
    pub keys_file: Option<PathBuf>,
    /// EXAI_HOME, known from the environment even when the configuration cannot be read.
    pub home: Option<PathBuf>,
    /// How long a provider gets to answer.
    pub timeout: Duration,
}

impl Scene {
    /// The process's environment and config file; `timeout` bounds each provider's answer.
    pub fn from_env(timeout: Duration) -> Self {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let config = Config::from_env().map_err(|e| e.to_string());
        // EXAI_HOME is never set in the config file: the environment alone gives it.
        let home = match &config {
            Ok(config) => Some(config.home.clone()),
            Err(_) => Config::from_lookup(env).ok().map(|c| c.home),
        };
        Self {
            config,
            keys_file: crate::config::keys::location(env),
            home,
            timeout,
        }
    }
}

/// Every check, each on its own; they run at once.
fn checks(scene: &Scene) -> Vec<BoxFuture<'_, Vec<Check>>> {
    vec![
        Box::pin(configuration(scene)),
        Box::pin(daemon(scene)),
        Box::pin(private_files(scene)),
        Box::pin(store(scene)),
        Box::pin(providers(scene)),
        Box::pin(default_model(scene)),
        Box::pin(clients(scene)),
        Box::pin(disk(scene)),
    ]
}

/// Runs every check; returns them in the order of [`checks`].
pub async fn examine(scene: &Scene) -> Vec<Check> {
    futures::future::join_all(checks(scene))
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Whether everything exai uses works: no check failed.
pub fn healthy(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.verdict != Verdict::Fail)
}

/// Writes the report, as text or as JSON (`checks` and a `summary`).
pub fn report(checks: &[Check], as_json: bool, out: &mut impl Write) -> std::io::Result<()> {
    let count = |verdict| checks.iter().filter(|c| c.verdict == verdict).count();
    let (ok, warn, fail) = (
        count(Verdict::Ok),
        count(Verdict::Warn),
        count(Verdict::Fail),
    );
    if as_json {
        let value = json!({
            "checks": checks,
            "summary": {"ok": ok, "warn": warn, "fail": fail, "healthy": fail == 0},
        });
        return super::write_json(out, &value);
    }
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for check in checks {
        writeln!(
            out,
            "{:<4}  {:<width$}  {}",
            check.verdict.label(),
            check.name,
            check.detail
        )?;
        if let Some(fix) = &check.fix {
            writeln!(out, "{:<4}  {:<width$}  fix: {fix}", "", "")?;
        }
    }
    writeln!(
        out,
        "\n{ok} ok, {warn} warning(s), {fail} failure(s){}",
        if fail == 0 {
            ": exai is ready"
        } else {
            ": fix the FAIL lines above"
        }
    )
}

/// The configuration read as the daemon reads it (environment, keys file, config file).
async fn configuration(scene: &Scene) -> Vec<Check> {
    let check = match &scene.config {
        Ok(config) => Check::ok(
            "config",
            match &config.file {
                Some(file) => format!("read {} (and the environment)", file.display()),
                None => {
                    "no config file; the environment and defaults (`exai config` shows them)".into()
                }
            },
        ),
        Err(why) => Check::fail(
            "config",
            format!("cannot be read: {why}"),
            "correct what the message names (the daemon would refuse to start the same way)",
        ),
    };
    vec![check]
}

/// What to do about a daemon that stopped on an error.
const STOPPED_ON_AN_ERROR: &str = "correct what the error names; the next client starts the daemon \
     again (`exai daemon` in a terminal shows it starting)";

/// This binary's version, the daemon's, and whether the daemon answers.
async fn daemon(scene: &Scene) -> Vec<Check> {
    let binary = format!(
        "exai {}{}",
        crate::VERSION,
        std::env::current_exe()
            .map(|p| format!(" ({})", p.display()))
            .unwrap_or_default()
    );
    let Ok(config) = &scene.config else {
        return vec![Check::ok("version", binary)];
    };
    if let Some(url) = &config.daemon_url {
        return remote_daemon(config, &binary, url).await;
    }
    if !crate::daemon::lock_is_held(config) {
        let daemon = if let Some((pid, ago, error)) = super::last_daemon_failure(config) {
            Check::warn(
                "daemon",
                format!(
                    "not running; the last one (pid {pid}) stopped {ago} ago on an error: {error}"
                ),
                STOPPED_ON_AN_ERROR,
            )
        } else if config.no_autostart {
            Check::warn(
                "daemon",
                "not running, and autostart is off (EXAI_NO_AUTOSTART=1)",
                "start it with `exai daemon`, or unset EXAI_NO_AUTOSTART",
            )
        } else {
            Check::ok("daemon", "not running: it starts with the first client")
        };
        return vec![Check::ok("version", binary), daemon];
    }
    let health = answer_of_starting_daemon(config, scene.timeout).await;
    let info = DaemonInfo::read(config);
    let daemon_version = control::running_version(info.as_ref(), health.as_ref());
    let pid = crate::daemon::holder_pid(config).map_or("?".to_string(), |pid| pid.to_string());
    let in_flight = health.as_ref().and_then(|h| h["calls_in_flight"].as_u64());
    let version = version_check(&binary, daemon_version.as_deref(), in_flight);
    let daemon = match &health {
        Some(h) => Check::ok(
            "daemon",
            format!(
                "up · pid {pid} · {} · up {} s · {} call(s) in flight",
                h["listen"].as_str().unwrap_or("?"),
                h["uptime_s"],
                h["calls_in_flight"]
            ),
        ),
        None => match super::last_daemon_failure(config) {
            // It let go of the lock while doctor waited: it stopped while starting.
            Some((pid, _, error)) => Check::fail(
                "daemon",
                format!("a daemon (pid {pid}) was starting but stopped on an error: {error}"),
                STOPPED_ON_AN_ERROR,
            ),
            None => match crate::daemon::stopped_holder(config) {
                Some(stopped) => Check::fail(
                    "daemon",
                    format!(
                        "a daemon (pid {pid}) holds {} but does not answer: {stopped}",
                        config.lock_path().display()
                    ),
                    "let it go on, or `exai daemon restart` for a fresh one",
                ),
                None => Check::fail(
                    "daemon",
                    format!(
                        "a daemon (pid {pid}) holds {} but does not answer on {} within {} s",
                        config.lock_path().display(),
                        config.socket_path().display(),
                        scene.timeout.as_secs_f64()
                    ),
                    "`exai daemon restart` (or `kill <pid>` if it does not stop)",
                ),
            },
        },
    };
    vec![version, daemon]
}

/// What the daemon holding this home's lock answers at `/healthz`. It may still be starting (it
/// binds its socket once its store is open, which takes a while on a remote database), so it gets
/// up to `wait` while it keeps the lock.
async fn answer_of_starting_daemon(config: &Config, wait: Duration) -> Option<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(health) = control::health_within(config, DAEMON_WAIT).await {
            return Some(health);
        }
        // A stopped daemon answers nothing until it is let go on: no use waiting for it.
        if crate::daemon::stopped_holder(config).is_some()
            || tokio::time::Instant::now() >= deadline
            || !crate::daemon::lock_is_held(config)
        {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The daemon `EXAI_URL` names (a shared one, or one on another address): its `/healthz`.
async fn remote_daemon(config: &Config, binary: &str, url: &str) -> Vec<Check> {
    let health = control::health_within(config, DAEMON_WAIT).await;
    let Some(health) = health else {
        return vec![
            Check::ok("version", binary),
            Check::fail(
                "daemon",
                format!(
                    "EXAI_URL {url}: no exai daemon answers /healthz there within {} s",
                    DAEMON_WAIT.as_secs()
                ),
                "start the daemon there (`exai daemon --listen HOST:PORT`), or correct or unset \
                 EXAI_URL",
            ),
        ];
    };
    let version = version_check(
        binary,
        health["version"].as_str(),
        health["calls_in_flight"].as_u64(),
    );
    let daemon = Check::ok(
        "daemon",
        format!(
            "up at EXAI_URL {url} · up {} s · {} call(s) in flight",
            health["uptime_s"], health["calls_in_flight"]
        ),
    );
    vec![version, daemon]
}

/// This binary's version against the daemon's (`None`: not known), with the calls the daemon
/// is running.
fn version_check(binary: &str, daemon: Option<&str>, in_flight: Option<u64>) -> Check {
    let Some(daemon) = daemon else {
        return Check::ok("version", binary);
    };
    match control::version_skew(crate::VERSION, daemon) {
        None => Check::ok(
            "version",
            format!("{binary}; the daemon is the same version"),
        ),
        Some(skew) => Check::warn(
            "version",
            format!(
                "{skew}{}",
                in_flight.map_or(String::new(), |n| format!(" ({n} call(s) in flight)"))
            ),
            format!("{RESTART_ADVICE}; the next client may also restart an idle one itself"),
        ),
    }
}

/// EXAI_HOME, its token and the keys and config files: each private to its owner.
async fn private_files(scene: &Scene) -> Vec<Check> {
    let mut found = Vec::new();
    if let Some(keys) = &scene.keys_file {
        found.extend(private_file(
            "keys file",
            keys,
            0o077,
            "600",
            Verdict::Fail,
            Link::Refused,
        ));
    }
    if let Some(home) = &scene.home {
        // The daemon makes its home private when it starts; a token others can read is an open
        // door now (as is a keys file, which exai refuses altogether).
        found.extend(private_file(
            "EXAI_HOME",
            home,
            0o077,
            "700",
            Verdict::Warn,
            Link::Followed,
        ));
        let token = home.join(TOKEN_FILE);
        found.extend(private_file(
            "token",
            &token,
            0o077,
            "600",
            Verdict::Fail,
            Link::Followed,
        ));
    }
    if let Ok(Config {
        file: Some(file), ..
    }) = &scene.config
    {
        found.extend(config_file(file));
    }
    found
}

/// The config file. Others may read one that holds no credential, but one they can write could
/// send the keys to a URL of theirs; one that holds a credential (a password in `store.url`, a
/// key in a base URL) must be as private as the keys file.
fn config_file(path: &Path) -> Option<Check> {
    const NAME: &str = "config file";
    // The file was just read for the configuration: an error here is one already reported.
    let credentials = crate::config::credentials_in_file(path).unwrap_or_default();
    if credentials.is_empty() {
        return private_file(NAME, path, 0o022, "644", Verdict::Fail, Link::Followed);
    }
    let mut check = private_file(NAME, path, 0o077, "600", Verdict::Fail, Link::Followed)?;
    check.detail.push_str(&format!(
        "; it holds a credential ({})",
        credentials.join(", ")
    ));
    Some(check)
}

/// What a check does with a symbolic link at the path: what exai itself does with one there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// exai reads through it (a config file kept with dotfiles, a home elsewhere): the file it
    /// points to is checked.
    Followed,
    /// exai refuses it (the keys file is read only as a regular file): a link fails, as such.
    Refused,
}

/// `path`'s owner and mode: ok when it is the user's and has none of the `forbidden` mode bits,
/// else `exposed` with the chmod (to `mode`) that fixes it. Nothing when it does not exist yet.
fn private_file(
    name: &str,
    path: &Path,
    forbidden: u32,
    mode: &str,
    exposed: Verdict,
    link: Link,
) -> Option<Check> {
    let looked = match link {
        Link::Followed => std::fs::metadata(path),
        Link::Refused => std::fs::symlink_metadata(path),
    };
    let meta = match looked {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            return Some(Check::fail(
                name,
                format!("{}: {e}", path.display()),
                format!("make {} readable by you", path.display()),
            ));
        }
    };
    let at = path.display();
    let target = || {
        path.canonicalize()
            .or_else(|_| std::fs::read_link(path))
            .map_or_else(|_| "?".to_string(), |t| t.display().to_string())
    };
    if meta.file_type().is_symlink() {
        // A link's own mode (777) says nothing, and no chmod helps: the link itself is the fault.
        let target = target();
        return Some(Check::fail(
            name,
            format!(
                "{at} is a symbolic link (to {target}); exai reads it only as a regular file, \
                 never through a link"
            ),
            format!("put the file itself there: mv {target} {at}; chmod {mode} {at}"),
        ));
    }
    // What was looked at: a followed link is named with the file it points to.
    let shown = match std::fs::symlink_metadata(path) {
        Ok(own) if own.file_type().is_symlink() => format!("{at} (a link to {})", target()),
        _ => at.to_string(),
    };
    let me = crate::daemon::local_socket::current_uid();
    if meta.uid() != me {
        return Some(Check::fail(
            name,
            format!(
                "{shown} belongs to user {}, not to you (user {me})",
                meta.uid()
            ),
            format!("chown {me} {at}, or remove it (exai makes it again)"),
        ));
    }
    let bits = meta.permissions().mode() & 0o777;
    if bits & forbidden == 0 {
        return Some(Check::ok(name, format!("{shown} (mode {bits:03o}, yours)")));
    }
    Some(Check {
        verdict: exposed,
        // chmod follows a link: this fixes the file a followed link points to.
        fix: Some(format!("chmod {mode} {at}")),
        ..Check::ok(
            name,
            format!("{shown} has mode {bits:03o}: other users may reach it"),
        )
    })
}

/// The store: it takes a write (rolled back), and how big it is (SQLite).
async fn store(scene: &Scene) -> Vec<Check> {
    let Ok(config) = &scene.config else {
        return Vec::new();
    };
    let location = config.store.clone();
    if !location.exists() {
        return vec![Check::ok(
            "store",
            format!("{location}: not created yet (the daemon creates it at its first start)"),
        )];
    }
    let shown = location.to_string();
    // On a blocking thread: the Postgres client cannot run on an async worker.
    let probing = crate::spawn::blocking(move || -> Result<(), String> {
        let reader = StoreReader::open_at(&location).map_err(|e| e.to_string())?;
        reader.check_writable().map_err(|e| e.to_string())
    });
    let fix = match &config.store {
        StoreLocation::Sqlite(path) => format!(
            "make {} and its directory writable by you, or move a damaged file aside (the \
             daemon starts a new one)",
            path.display()
        ),
        StoreLocation::Postgres(_) => format!(
            "check that the database server is up and that {} names it with a user allowed \
             to write",
            settings::DATABASE_URL.var
        ),
    };
    let written = match tokio::time::timeout(scene.timeout, probing).await {
        Ok(Ok(written)) => written,
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer within {} s",
            scene.timeout.as_secs_f64()
        )),
    };
    let check = match written {
        Err(why) => Check::fail("store", format!("{shown}: cannot write: {why}"), fix),
        Ok(()) => Check::ok(
            "store",
            match &config.store {
                StoreLocation::Sqlite(path) => {
                    format!("{shown}: writable · {}", size_text(sqlite_bytes(path)))
                }
                StoreLocation::Postgres(_) => {
                    format!("{shown}: connected; a write in a transaction was rolled back")
                }
            },
        ),
    };
    vec![check]
}

/// The SQLite file and its write-ahead log, in bytes.
fn sqlite_bytes(path: &Path) -> u64 {
    let size = |p: PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    size(path.to_path_buf()) + size(PathBuf::from(wal))
}

fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} bytes"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

/// Each configured provider asked for its model list (no model runs: nothing is spent), all at
/// once, each within the timeout.
async fn providers(scene: &Scene) -> Vec<Check> {
    let Ok(config) = &scene.config else {
        return Vec::new();
    };
    let configured: Vec<&EndpointConfig> = config
        .endpoints
        .iter()
        .filter(|e| e.unavailable.is_none())
        .collect();
    if configured.is_empty() {
        return vec![Check::fail(
            "providers",
            "no provider is configured: no key for glm, kimi, openai or openrouter, and no \
             CUSTOM_API_URL",
            "store a key with `exai keys set glm` (or kimi, openai, openrouter); or set \
             CUSTOM_API_URL to a local OpenAI-compatible server (e.g. http://localhost:11434/v1)",
        )];
    }
    let asks = configured.into_iter().map(|endpoint| async move {
        let probed = probe_models(endpoint, config, scene.timeout).await;
        provider_check(endpoint, probed)
    });
    futures::future::join_all(asks).await
}

/// The verdict on one provider's answer, with the fix its failure calls for.
fn provider_check(
    endpoint: &EndpointConfig,
    probed: Result<crate::providers::ModelListProbe, ProbeError>,
) -> Check {
    let name = format!("provider {}", endpoint.name);
    let url = endpoint.base_url.shown();
    let where_url = url_setting(endpoint);
    let error = match probed {
        Ok(probe) => {
            return Check::ok(
                name,
                format!(
                    "{url} answered in {} ms · {} model(s)",
                    probe.latency.as_millis(),
                    probe.models
                ),
            );
        }
        Err(error) => error,
    };
    let platforms = platforms_text(endpoint);
    let (detail, fix) = match &error {
        ProbeError::Failed(ListModelsError::Status(status @ (401 | 403))) => (
            format!("{url} refused the key (HTTP {status}): a bad key"),
            format!("{}{platforms}", key_fix(endpoint)),
        ),
        ProbeError::Failed(ListModelsError::Status(404)) => (
            format!(
                "{url}/models does not exist (HTTP 404): a wrong URL{}",
                match platforms.is_empty() {
                    true => "",
                    false => " or region endpoint",
                }
            ),
            format!("set {where_url} to the provider's API base URL{platforms}"),
        ),
        ProbeError::Failed(ListModelsError::Unreachable(why)) => (
            format!("cannot connect to {url}: {why}"),
            format!("check {where_url} (host and port) and the network"),
        ),
        ProbeError::TimedOut(limit) => (
            format!(
                "{url} did not answer within {} s: timed out",
                limit.as_secs_f64()
            ),
            format!(
                "check the network (a proxy or firewall) and {where_url}; for a slow provider, \
                 `exai doctor --timeout 30`"
            ),
        ),
        ProbeError::Failed(ListModelsError::Status(status)) if *status >= 500 => (
            format!("{url} failed (HTTP {status})"),
            "the provider has a problem of its own: try again later".to_string(),
        ),
        other => (
            format!("{url}: {other}"),
            format!("check that {where_url} is the provider's OpenAI-compatible API base URL"),
        ),
    };
    Check::fail(name, detail, fix)
}

/// Where `endpoint`'s URL is set, for a fix.
fn url_setting(endpoint: &EndpointConfig) -> String {
    match BUILT_IN_PROVIDERS.iter().find(|p| p.name == endpoint.name) {
        Some(provider) => provider.url_var.to_string(),
        None if endpoint.name == "custom" => settings::CUSTOM_API_URL.var.to_string(),
        None => format!(
            "base_url of [[endpoints]] {:?} in the config file",
            endpoint.name
        ),
    }
}

/// How to give `endpoint` a good key: where the key it has comes from decides.
fn key_fix(endpoint: &EndpointConfig) -> String {
    let name = &endpoint.name;
    let from_env = endpoint
        .key_source
        .as_deref()
        .filter(|source| !source.starts_with("the keys file"));
    match (crate::config::keys::override_vars(name), from_env) {
        (Some(_), Some(var)) => format!(
            "the key comes from {var}, which overrides the keys file: put a valid key there, or \
             unset it and run `exai keys set {name}`"
        ),
        (Some(_), None) => format!("`exai keys set {name}` with a valid key"),
        (None, Some(var)) => format!("put a valid key in {var}"),
        (None, None) => "give the endpoint a valid key".to_string(),
    }
}

/// `; the key works only where it was issued: …` for a provider that runs several platforms.
fn platforms_text(endpoint: &EndpointConfig) -> String {
    let urls = platform_urls(endpoint.kind);
    if urls.is_empty() {
        return String::new();
    }
    let listed: Vec<String> = urls
        .iter()
        .map(|(label, url)| format!("{url} ({label})"))
        .collect();
    format!(
        "; a key works only on the platform that issued it, so {} must be that platform's: {}",
        url_setting(endpoint),
        listed.join(", ")
    )
}

/// Calls that name no model, and fallbacks, have a model to go to.
async fn default_model(scene: &Scene) -> Vec<Check> {
    let Ok(config) = &scene.config else {
        return Vec::new();
    };
    // With no provider at all, the providers check says what to do.
    if config.endpoints.iter().all(|e| e.unavailable.is_some()) {
        return Vec::new();
    }
    let warnings = super::default_model_warnings(config);
    if warnings.is_empty() {
        let which = config.default_model.as_deref().unwrap_or("auto");
        return vec![Check::ok(
            "default model",
            format!("{which}: usable with the configured providers"),
        )];
    }
    warnings
        .into_iter()
        .map(|warning| {
            Check::warn(
                "default model",
                warning,
                "store the key of the provider it needs (`exai keys set <provider>`), or set \
                 DEFAULT_MODEL to a model of a configured provider (`exai config` lists them)",
            )
        })
        .collect()
}

/// Free space where EXAI_HOME is (its records and logs grow there).
/// Each installed MCP client: is exai in its user configuration, is it this binary, and does the
/// client wait as long as exai's deadlines need. A client's own file is the user's: warnings only.
async fn clients(scene: &Scene) -> Vec<Check> {
    let Ok(config) = &scene.config else {
        return Vec::new();
    };
    let wanted = match Wanted::for_this_binary(config) {
        Ok(wanted) => wanted,
        Err(e) => return vec![Check::warn("clients", e.to_string(), "reinstall exai")],
    };
    let places = match Places::from_env() {
        Ok(places) => places,
        Err(e) => return vec![Check::warn("clients", e.to_string(), "set HOME")],
    };
    // Reading the clients' files is blocking I/O: off the async threads.
    crate::spawn::blocking(move || client_checks(&places, &wanted))
        .await
        .unwrap_or_default()
}

fn client_checks(places: &Places, wanted: &Wanted) -> Vec<Check> {
    let installed: Vec<&dyn Client> = crate::clients::all()
        .into_iter()
        .filter(|client| client.installed(places))
        .collect();
    if installed.is_empty() {
        return vec![Check::warn(
            "clients",
            "no MCP client found (Claude Code, Codex, Cursor, Gemini CLI, Auggie)",
            "install one, then `exai setup <client>`",
        )];
    }
    installed
        .into_iter()
        .map(|client| client_check(client, places, wanted))
        .collect()
}

fn client_check(client: &dyn Client, places: &Places, wanted: &Wanted) -> Check {
    let name = format!("client {}", client.id());
    let setup = format!("exai setup {}", client.id());
    let entry = match client.read(places, &Scope::User) {
        Ok(Some(entry)) => entry,
        Ok(None) => {
            return Check::warn(
                name,
                format!(
                    "{} is installed but exai is not in its configuration",
                    client.name()
                ),
                setup,
            );
        }
        Err(e) => return Check::warn(name, e.to_string(), format!("fix the file, then `{setup}`")),
    };
    if entry.command != wanted.command {
        return Check::warn(
            name,
            format!(
                "{} launches {}, not this exai ({})",
                client.name(),
                entry.command,
                wanted.command
            ),
            setup,
        );
    }
    let needed = wanted.timeout.as_secs();
    match entry.timeout {
        Some(timeout) if client.has_entry_timeout() && timeout < wanted.timeout => {
            return Check::warn(
                name,
                format!(
                    "{} gives up on a tool call after {} s; exai's longest deadline needs {needed} s",
                    client.name(),
                    timeout.as_secs()
                ),
                setup,
            );
        }
        _ => {}
    }
    if let Some(advice) = client.timeout_advice(places, wanted.timeout) {
        return Check::warn(
            name,
            format!("{} is set up for exai", client.name()),
            advice,
        );
    }
    let waits = match entry.timeout {
        Some(timeout) => format!(", waits {} s for a tool call", timeout.as_secs()),
        None => String::new(),
    };
    Check::ok(
        name,
        format!("{} is set up for this exai{waits}", client.name()),
    )
}

async fn disk(scene: &Scene) -> Vec<Check> {
    let Ok(config) = &scene.config else {
        return Vec::new();
    };
    // EXAI_HOME may not exist yet: its nearest existing ancestor is on the same filesystem.
    let Some(place) = config.home.ancestors().find(|p| p.exists()) else {
        return Vec::new();
    };
    let check = match free_bytes(place) {
        Err(e) => Check::warn(
            "disk",
            format!("cannot tell the free space of {}: {e}", place.display()),
            "check the filesystem with `df -h`",
        ),
        Ok(free) if free < LOW_DISK => Check::warn(
            "disk",
            format!(
                "only {} free where {} is",
                size_text(free),
                config.home.display()
            ),
            "free some space there: exai keeps call records and logs in EXAI_HOME",
        ),
        Ok(free) => Check::ok(
            "disk",
            format!(
                "{} free where {} is",
                size_text(free),
                config.home.display()
            ),
        ),
    };
    vec![check]
}

/// Bytes an unprivileged user may still write on `path`'s filesystem.
fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("the path holds a NUL byte"))?;
    // SAFETY: `name` is a NUL-terminated path and `stats` a properly sized out-parameter.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(name.as_ptr(), &mut stats) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // Both are 32 bits wide on some targets.
    #[allow(clippy::useless_conversion)]
    let (blocks, block_size) = (u64::from(stats.f_bavail), u64::from(stats.f_frsize));
    Ok(blocks.saturating_mul(block_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_of_another_version_is_a_warning_naming_the_restart() {
        let same = version_check("exai x", Some(crate::VERSION), Some(0));
        assert_eq!(same.verdict, Verdict::Ok);
        let skewed = version_check("exai x", Some("0.0.1-old"), Some(2));
        assert_eq!(skewed.verdict, Verdict::Warn);
        assert!(
            skewed.detail.contains("version 0.0.1-old")
                && skewed.detail.contains(crate::VERSION)
                && skewed.detail.contains("(2 call(s) in flight)"),
            "{}",
            skewed.detail
        );
        assert!(skewed.fix.unwrap().contains("exai daemon restart"));
        assert_eq!(version_check("exai x", None, None).verdict, Verdict::Ok);
    }

    #[test]
    fn a_daemon_url_gives_its_health_url() {
        let shown = |url: &str| control::healthz_url(url).map(|u| u.to_string());
        assert_eq!(
            shown("ws://127.0.0.1:8765/ws").as_deref(),
            Some("http://127.0.0.1:8765/healthz")
        );
        assert_eq!(
            shown("wss://exai.example/ws?x=1").as_deref(),
            Some("https://exai.example/healthz")
        );
        assert_eq!(shown("ftp://x/ws"), None);
    }

    #[test]
    fn sizes_are_shown_in_binary_units() {
        assert_eq!(size_text(512), "512 bytes");
        assert_eq!(size_text(1536), "1.5 KiB");
        assert_eq!(size_text(3 << 30), "3.0 GiB");
    }

    #[test]
    fn free_space_is_read_from_the_filesystem() {
        assert!(free_bytes(Path::new("/")).is_ok());
        assert!(free_bytes(Path::new("/no/such/place")).is_err());
    }
}
