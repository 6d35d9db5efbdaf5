//! The settings a call runs on: one snapshot of the configuration and of the providers built from
//! it, taken when the call is received and kept to its end. The daemon's snapshot is swapped
//! whole when its config or keys file changes; a session whose client sets provider or call
//! settings of its own in its environment gets a snapshot of its own (shared by every session of
//! the same variables).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use base64::Engine;

use crate::config::{Config, ConfigError, Scope, changes, process_env, settings::is_session_var};

use crate::health::Health;
use crate::providers::Providers;

/// The request header a shim on the local socket carries its client's settings in: base64 of a
/// JSON object, variable → value. Never logged, never stored.
pub const CLIENT_ENV_HEADER: &str = "exai-client-env";

/// What a shim over TCP sends instead: base64 of a JSON object, variable → HMAC-SHA256 of its
/// value under the daemon's token. The daemon can tell which differ from its own; the values
/// never cross the wire.
pub const CLIENT_DIGEST_HEADER: &str = "exai-client-env-digest";

/// Most bytes of that header the daemon reads.
const CLIENT_ENV_MAX: usize = 64 * 1024;

/// One snapshot: what a call runs on from its receipt to its end.
pub struct Settings {
    pub config: Arc<Config>,
    pub providers: Arc<Providers>,
    /// Counts the daemon's reloads; a session's own snapshot carries the one it was built on.
    pub generation: u64,
    /// A session's own snapshot: the variables its client sets differently from the daemon
    /// (names only); empty for the daemon's.
    pub differs: Vec<String>,
}

/// Makes the providers of a configuration (the real clients, or the tests' scripted one),
/// taking over from those it follows.
pub type BuildProviders = Box<dyn Fn(&Config, Option<&Providers>) -> Providers + Send + Sync>;

/// The environment the daemon's own settings are read from (its process's, or a test's).
pub type Environment = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The provider and call settings a client's environment sets (`Config::session_vars`).
#[derive(Clone)]
pub struct ClientEnv {
    vars: BTreeMap<String, String>,
    /// SHA-256 of the variables: sessions of one client configuration share one snapshot.
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for ClientEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.vars.keys()).finish()
    }
}

/// Why a client's settings header was not read.
#[derive(Debug, thiserror::Error)]
pub enum ClientEnvError {
    #[error("the {CLIENT_ENV_HEADER} header is larger than {CLIENT_ENV_MAX} bytes")]
    TooLarge,
    #[error("the {CLIENT_ENV_HEADER} header is not base64 of a JSON object of strings")]
    Malformed,
}

impl ClientEnv {
    pub fn new(vars: BTreeMap<String, String>) -> Self {
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        for (name, value) in &vars {
            hash.update(name.as_bytes());
            hash.update(b"\0");
            hash.update(value.as_bytes());
            hash.update(b"\0");
        }
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(hash.finish().as_ref());
        Self { vars, fingerprint }
    }

    /// The variables this process's environment sets for a session (none when the
    /// configuration cannot be read: the shim then reports that itself).
    pub fn of_process() -> Self {
        Self::new(Config::session_vars(process_env).unwrap_or_default())
    }

    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// The variables' names.
    pub fn names(&self) -> Vec<String> {
        self.vars.keys().cloned().collect()
    }

    /// The header's value.
    pub fn to_header(&self) -> String {
        let json = serde_json::to_vec(&self.vars).unwrap_or_default();
        base64::engine::general_purpose::STANDARD.encode(json)
    }

    /// Reads a header's value; variables a session may not set are dropped.
    pub fn from_header(text: &str) -> Result<Self, ClientEnvError> {
        let mut vars = decode_header(text)?;
        vars.retain(|name, value| is_session_var(name) && !value.trim().is_empty());
        Ok(Self::new(vars))
    }

    /// The digest header's value: each variable's HMAC under `token`.
    pub fn to_digest_header(&self, token: &str) -> String {
        let digests: BTreeMap<&String, String> = self
            .vars
            .iter()
            .map(|(name, value)| (name, digest(token, name, value)))
            .collect();
        let json = serde_json::to_vec(&digests).unwrap_or_default();
        base64::engine::general_purpose::STANDARD.encode(json)
    }
}

/// A header's JSON object of strings.
fn decode_header(text: &str) -> Result<BTreeMap<String, String>, ClientEnvError> {
    if text.len() > CLIENT_ENV_MAX {
        return Err(ClientEnvError::TooLarge);
    }
    let json = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| ClientEnvError::Malformed)?;
    serde_json::from_slice(&json).map_err(|_| ClientEnvError::Malformed)
}

/// The HMAC-SHA256 key of the digests: the daemon's token, which both ends hold.
fn digest_key(token: &str) -> ring::hmac::Key {
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token.as_bytes())
}

/// What a variable's digest covers: its name and its value.
fn digested(name: &str, value: &str) -> Vec<u8> {
    [name.as_bytes(), b"\0", value.as_bytes()].concat()
}

/// HMAC-SHA256 of `name`'s `value` under `token`, base64.
fn digest(token: &str, name: &str, value: &str) -> String {
    let tag = ring::hmac::sign(&digest_key(token), &digested(name, value));
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

/// The variables of a digest header whose value differs from the daemon's (`own` gives the
/// daemon's values of the names asked): names only.
pub fn differing_digests(
    header: &str,
    token: &str,
    own: impl FnOnce(&[String]) -> BTreeMap<String, String>,
) -> Result<Vec<String>, ClientEnvError> {
    let mut digests = decode_header(header)?;
    digests.retain(|name, _| is_session_var(name));
    let names: Vec<String> = digests.keys().cloned().collect();
    let own = own(&names);
    let key = digest_key(token);
    let same = |name: &str, sent: &str| {
        let (Some(value), Ok(tag)) = (
            own.get(name),
            base64::engine::general_purpose::STANDARD.decode(sent),
        ) else {
            return false;
        };
        // Constant time: ring compares the whole tag.
        ring::hmac::verify(&key, &digested(name, value), &tag).is_ok()
    };
    Ok(digests
        .into_iter()
        .filter(|(name, sent)| !same(name, sent))
        .map(|(name, _)| name)
        .collect())
}

/// What reading the configuration again did (names only, never values).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Reloaded {
    /// The settings that changed, now in use for new calls (`DEFAULT_MODEL`, `glm key`).
    pub changed: Vec<String>,
    /// Settings fixed at the daemon's start whose value in the files differs from the one the
    /// daemon started with: kept until a restart.
    pub needs_restart: Vec<String>,
    /// When this reading changed nothing: what the reading that made the settings in use changed
    /// (the file watch may have been first).
    pub earlier: Vec<String>,
    /// Why the configuration could not be used: the previous settings stay.
    pub error: Option<String>,
    /// The generation of the settings in use after it.
    pub generation: u64,
}

/// The daemon's settings: the snapshot in use, how to build another, sessions' own snapshots.
pub struct LiveSettings {
    current: ArcSwap<Settings>,
    build: BuildProviders,
    /// What a session's own variables are laid over.
    env: Environment,
    /// The configuration as the daemon's environment and files gave it at start, before
    /// command-line overrides: a fixed setting's change is measured against it (so `--listen` is
    /// no change).
    start_read: Mutex<Config>,
    /// What the last reload that changed something changed.
    last_changed: Mutex<Vec<String>>,
    /// Sessions' own snapshots, by their client's fingerprint.
    own: Mutex<HashMap<[u8; 32], Arc<Settings>>>,
    /// One reload at a time (a file event and `exai reload` together).
    reloading: tokio::sync::Mutex<()>,
    health: Arc<Health>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl LiveSettings {
    /// `config` as read from `env` and the files (`read`, before command-line overrides) and in
    /// effect.
    pub fn new(
        read: Config,
        config: Config,
        env: Environment,
        build: BuildProviders,
        health: Arc<Health>,
    ) -> Self {
        let providers = build(&config, None);
        Self {
            current: ArcSwap::from_pointee(Settings {
                config: Arc::new(config),
                providers: Arc::new(providers),
                generation: 0,
                differs: Vec::new(),
            }),
            build,
            env,
            start_read: Mutex::new(read),
            last_changed: Mutex::new(Vec::new()),
            own: Mutex::new(HashMap::new()),
            reloading: tokio::sync::Mutex::new(()),
            health,
        }
    }

    /// `config` is the configuration as the daemon's environment and files give it (without
    /// command-line overrides): a fixed setting's change is measured against it.
    pub fn remember_read(&self, config: Config) {
        *locked(&self.start_read) = config;
    }

    /// The daemon's snapshot now.
    pub fn current(&self) -> Arc<Settings> {
        self.current.load_full()
    }

    /// The snapshot a call of a session whose client sets `env` runs on: the daemon's when the
    /// client sets nothing of its own, else its own (built once per client configuration and
    /// daemon generation; a client configuration that cannot be used gets the daemon's, logged).
    pub async fn for_session(self: &Arc<Self>, env: Option<&ClientEnv>) -> Arc<Settings> {
        let current = self.current();
        let Some(env) = env.filter(|env| !env.is_empty()) else {
            return current;
        };
        if let Some(found) = locked(&self.own)
            .get(&env.fingerprint)
            .filter(|s| s.generation == current.generation)
        {
            return found.clone();
        }
        let built = {
            let (this, env, base) = (self.clone(), env.clone(), current.clone());
            crate::spawn::blocking(move || this.build_own(&env, &base)).await
        };
        let settings = match built {
            Ok(Ok(settings)) => {
                if !settings.differs.is_empty() {
                    tracing::info!(
                        variables = %settings.differs.join(", "),
                        generation = settings.generation,
                        "a client's own settings built: these variables differ from the daemon's"
                    );
                    discover(&settings.providers);
                }
                settings
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, variables = %env.names().join(", "), "a client's own settings cannot be used; its session runs on the daemon's");
                current
            }
            Err(error) => {
                tracing::warn!(%error, "a client's own settings could not be built");
                current
            }
        };
        let mut own = locked(&self.own);
        own.retain(|_, s| s.generation == self.current().generation);
        own.insert(env.fingerprint, settings.clone());
        settings
    }

    /// A client's settings over the daemon's environment and files, as `exai stdio --no-daemon`
    /// would read them in that client; the daemon's snapshot when they come out the same.
    fn build_own(&self, env: &ClientEnv, base: &Arc<Settings>) -> Result<Arc<Settings>, String> {
        let mut config = Config::from_env_and_file(|name| {
            env.vars.get(name).cloned().or_else(|| (self.env)(name))
        })
        .map_err(|e| e.to_string())?;
        config.keep_fixed(&base.config);
        config.keep_daemons_own(&base.config);
        crate::tools::ToolRegistry::check_settings(&config).map_err(|e| e.to_string())?;
        let mut differs: Vec<String> = changes(&base.config, &config)
            .into_iter()
            .map(|change| change.var)
            .collect();
        differs.sort();
        differs.dedup();
        if differs.is_empty() {
            return Ok(base.clone());
        }
        let providers = (self.build)(&config, Some(&base.providers));
        Ok(Arc::new(Settings {
            config: Arc::new(config),
            providers: Arc::new(providers),
            generation: base.generation,
            differs,
        }))
    }

    /// Reads the configuration again with `read` and, when it can be used, puts it in place for
    /// the next calls; calls in flight keep the snapshot they started with. A configuration that
    /// cannot be used leaves the previous settings in place and is shown in `status` until fixed.
    pub async fn reload(
        self: &Arc<Self>,
        read: impl FnOnce() -> Result<Config, ConfigError> + Send + 'static,
    ) -> Reloaded {
        let _one_at_a_time = self.reloading.lock().await;
        let this = self.clone();
        let outcome = crate::spawn::blocking(move || this.swap(read())).await;
        let reloaded = outcome.unwrap_or_else(|e| Reloaded {
            error: Some(format!("reloading failed: {e}")),
            ..Default::default()
        });
        if reloaded.error.is_none() && !reloaded.changed.is_empty() {
            discover(&self.current().providers);
        }
        reloaded
    }

    fn swap(&self, read: Result<Config, ConfigError>) -> Reloaded {
        let current = self.current();
        let checked = read.map_err(|e| e.to_string()).and_then(|config| {
            crate::tools::ToolRegistry::check_settings(&config)
                .map(|()| config)
                .map_err(|e| e.to_string())
        });
        let mut config = match checked {
            Ok(config) => config,
            Err(error) => {
                tracing::error!(%error, "the config could not be read again; the previous settings stay");
                self.health.set_settings_problem(Some(format!(
                    "the config could not be read again, the previous settings stay: {error}"
                )));
                return Reloaded {
                    error: Some(error),
                    generation: current.generation,
                    ..Default::default()
                };
            }
        };
        self.health.set_settings_problem(None);
        let needs_restart: Vec<String> = changes(&locked(&self.start_read), &config)
            .into_iter()
            .filter(|c| c.scope == Scope::Restart)
            .map(|c| c.what)
            .collect();
        for setting in &needs_restart {
            tracing::warn!(
                %setting,
                "{setting} changed in the config, but the running daemon keeps its value: it needs `exai daemon restart`"
            );
        }
        self.health
            .set_settings_needing_restart(needs_restart.clone());
        config.keep_fixed(&current.config);
        let changed: Vec<String> = changes(&current.config, &config)
            .into_iter()
            .map(|c| c.what)
            .collect();
        if changed.is_empty() {
            tracing::info!(
                generation = current.generation,
                "config read again: nothing the daemon follows changed"
            );
            return Reloaded {
                needs_restart,
                earlier: locked(&self.last_changed).clone(),
                generation: current.generation,
                ..Default::default()
            };
        }
        let providers = (self.build)(&config, Some(&current.providers));
        let generation = current.generation + 1;
        self.current.store(Arc::new(Settings {
            config: Arc::new(config),
            providers: Arc::new(providers),
            generation,
            differs: Vec::new(),
        }));
        locked(&self.own).clear();
        self.health.set_settings_generation(generation);
        locked(&self.last_changed).clone_from(&changed);
        tracing::info!(changed = %changed.join(", "), generation, "settings reloaded");
        Reloaded {
            changed,
            needs_restart,
            earlier: Vec::new(),
            error: None,
            generation,
        }
    }
}

/// Asks new providers for their models (bounded), off the caller's way.
fn discover(providers: &Arc<Providers>) {
    let providers = providers.clone();
    crate::spawn::in_span(tracing::Span::none(), async move {
        providers.discover(std::time::Duration::from_secs(5)).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::App;

    fn env(pairs: &[(&str, &str)]) -> ClientEnv {
        ClientEnv::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn a_header_carries_only_a_sessions_variables_and_shows_only_names() {
        let sent = env(&[
            ("GLM_API_KEY", "sk-secret-1"),
            ("EXAI_LISTEN", "127.0.0.1:1"),
            ("HOME", "/elsewhere"),
        ]);
        let read = ClientEnv::from_header(&sent.to_header()).unwrap();
        assert_eq!(read.names(), ["GLM_API_KEY"]);
        assert!(!format!("{read:?}").contains("sk-secret-1"));
        assert_eq!(
            read.fingerprint,
            env(&[("GLM_API_KEY", "sk-secret-1")]).fingerprint
        );
        assert!(ClientEnv::from_header("not base64!").is_err());
        assert!(ClientEnv::from_header(&"A".repeat(CLIENT_ENV_MAX + 1)).is_err());
    }

    #[test]
    fn digests_tell_which_variables_differ_and_nothing_else() {
        let client = env(&[("GLM_API_KEY", "sk-a"), ("DEFAULT_MODEL", "m")]);
        let header = client.to_digest_header("token");
        assert!(!header.contains("sk-a"));
        let daemon = |names: &[String]| -> BTreeMap<String, String> {
            assert_eq!(names, ["DEFAULT_MODEL", "GLM_API_KEY"]);
            [("GLM_API_KEY", "sk-b"), ("DEFAULT_MODEL", "m")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            differing_digests(&header, "token", daemon).unwrap(),
            ["GLM_API_KEY"]
        );
        // Under another key every digest differs: they prove nothing without the token.
        assert_eq!(
            differing_digests(&header, "other", |_| BTreeMap::from([(
                "DEFAULT_MODEL".to_string(),
                "m".to_string()
            )]))
            .unwrap(),
            ["DEFAULT_MODEL", "GLM_API_KEY"]
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_reload_swaps_whole_keeps_snapshots_taken_and_refuses_what_cannot_be_used() {
        let test = crate::spawn::blocking(|| App::for_tests(&[]))
            .await
            .unwrap();
        let settings = test.app.settings.clone();
        let taken = settings.current();
        let base = (*taken.config).clone();

        let mut changed = base.clone();
        changed.default_model = Some("fake-delay-5".into());
        changed.listen = "127.0.0.1:1".parse().unwrap();
        let reloaded = settings.reload(move || Ok(changed)).await;
        assert_eq!(reloaded.changed, ["DEFAULT_MODEL"]);
        assert_eq!(reloaded.needs_restart, ["EXAI_LISTEN"]);
        assert_eq!(reloaded.generation, 1);
        let now = settings.current();
        assert_eq!(now.config.default_model.as_deref(), Some("fake-delay-5"));
        assert_eq!(now.config.listen, base.listen, "a fixed setting is kept");
        // A snapshot taken before is what it was.
        assert_eq!(taken.config.default_model, base.default_model);
        assert_eq!(taken.generation, 0);

        let reloaded = settings
            .reload(|| {
                Err(ConfigError::File {
                    path: "config.toml".into(),
                    why: "broken".into(),
                })
            })
            .await;
        assert!(reloaded.error.unwrap().contains("broken"));
        assert_eq!(settings.current().generation, 1);
        let report = test.app.health.settings_report();
        assert!(report["problem"].as_str().unwrap().contains("broken"));

        let again = (*now.config).clone();
        let reloaded = settings.reload(move || Ok(again)).await;
        assert!(reloaded.changed.is_empty());
        assert_eq!(reloaded.earlier, ["DEFAULT_MODEL"]);
        assert!(test.app.health.settings_report()["problem"].is_null());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn sessions_of_one_client_configuration_share_one_snapshot() {
        let test = crate::spawn::blocking(|| App::for_tests(&[]))
            .await
            .unwrap();
        let settings = test.app.settings.clone();
        let same_as_daemon = settings
            .for_session(Some(&env(&[("CUSTOM_MODEL_NAME", "fake-fast")])))
            .await;
        assert!(Arc::ptr_eq(&same_as_daemon, &settings.current()));
        let own = env(&[("DEFAULT_MODEL", "fake-delay-1")]);
        let first = settings.for_session(Some(&own)).await;
        let second = settings.for_session(Some(&own)).await;
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(first.differs, ["DEFAULT_MODEL"]);
        assert_eq!(first.config.default_model.as_deref(), Some("fake-delay-1"));
    }
}
