//! The shared state of one exai process: its fixed config, the settings calls run on (swapped
//! on a reload), calls, tools.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::calls::Calls;
use crate::config::Config;
use crate::health::Health;
use crate::providers::{Budgets, Catalog, Providers};
use crate::replica::Replica;
use crate::settings::{LiveSettings, Settings};
use crate::store::shared_slots::SharedSlots;
use crate::store::{Store, StoreError, StoreLocation};
use crate::tools::ToolRegistry;

/// Everything a session needs, shared by all sessions of the process.
pub struct App {
    /// The config the process started with: what it keeps until a restart (home, listen, store,
    /// message size…). What a call runs on is in `settings`.
    pub config: Arc<Config>,
    pub calls: Arc<Calls>,
    /// The settings calls run on: the daemon's snapshot (swapped whole on a reload) and sessions' own.
    pub settings: Arc<LiveSettings>,
    pub tools: ToolRegistry,
    pub health: Arc<Health>,
    /// Cancelled when the process shuts down: sessions close.
    pub shutdown: CancellationToken,
    /// This process among the replicas sharing the store.
    pub replica: Arc<Replica>,
    /// What the clients' own configuration says they wait (Codex's `tool_timeout_sec`).
    pub client_patience: crate::clients::ClientPatience,
}

impl App {
    /// Opens the store (marking calls of dead processes `interrupted`) and builds the rest.
    ///
    /// Blocking (it opens the database): call before serving, or from `spawn_blocking`.
    pub fn open(config: Config, health: Health) -> Result<Arc<Self>, StoreError> {
        Self::open_with(
            config,
            health,
            Arc::new(crate::config::process_env),
            Providers::following,
        )
    }

    /// [`App::open`] with the providers `providers` makes from a config and catalog (taking over
    /// from the providers they follow).
    fn open_with(
        config: Config,
        health: Health,
        env: crate::settings::Environment,
        providers: impl Fn(&Config, Catalog, Option<&SharedSlots>, Option<&Providers>) -> Providers
        + Send
        + Sync
        + 'static,
    ) -> Result<Arc<Self>, StoreError> {
        let store = Store::open(&config.store)?;
        #[cfg(test)]
        let store = store.without_answer_limit();
        let reader = store.reader()?;
        let interrupted = reader.interrupt_orphans("exai stopped while the call was running")?;
        if interrupted > 0 {
            tracing::warn!(
                calls = interrupted,
                "calls left open by a previous run marked interrupted"
            );
        }
        // Registered before it opens any call: a call's replica with no record was forgotten.
        let replica = Arc::new(Replica::new(config.replica_lease));
        replica.register(&reader)?;
        let pruned = reader.apply_retention(
            config.retention_max_age,
            config.retention_max_rows,
            config.result_ttl,
        )?;
        if pruned > 0 {
            tracing::info!(records = pruned, "old call records pruned");
        }
        // Limits the replicas keep together, held on the shared store (config made sure it is one).
        let shared_slots = match &config.store {
            StoreLocation::Postgres(url) if !config.shared_concurrency.is_empty() => {
                Some(SharedSlots::start(url)?)
            }
            _ => None,
        };
        for endpoint in &config.endpoints {
            match &endpoint.unavailable {
                Some(why) => {
                    tracing::info!(provider = %endpoint.name, why = %why, "provider not configured")
                }
                None => {
                    tracing::info!(provider = %endpoint.name, url = %endpoint.base_url, "provider configured")
                }
            }
        }
        let health = Arc::new(health);
        // Today's spend is the store's, so every replica sharing it keeps to the same budgets;
        // the budgets are the daemon's settings, so a reload reaches them.
        let spend = store.clone();
        let build = Box::new(move |config: &Config, previous: Option<&Providers>| {
            let budgets = Budgets::new(
                config.daily_budget,
                config.provider_daily_budget.clone(),
                spend.clone(),
            )
            .with_per_user(config.user_daily_budget.clone());
            providers(config, catalog_of(config), shared_slots.as_ref(), previous)
                .with_budgets(budgets)
        });
        Ok(Arc::new(Self {
            settings: Arc::new(LiveSettings::new(
                config.clone(),
                config.clone(),
                env,
                build,
                health.clone(),
            )),
            calls: Arc::new(
                Calls::new(store, config.max_output_tokens).for_replica(replica.id().to_string()),
            ),
            replica,
            tools: ToolRegistry::new(&config.disabled_tools),
            health,
            config: Arc::new(config),
            shutdown: CancellationToken::new(),
            client_patience: crate::clients::ClientPatience::from_env(),
        }))
    }

    /// The daemon's settings now (a call takes its snapshot once, at receipt).
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.current()
    }

    /// Starts this replica's heartbeat and cancel watcher (until shutdown).
    pub fn run_replica(self: &Arc<Self>) {
        self.replica.run(&self.calls, &self.shutdown);
    }

    /// Clean shutdown, once the calls have ended: this replica leaves the store.
    pub async fn leave(&self) {
        self.replica.leave(self.calls.store()).await;
    }

    /// Asks the endpoints for their models now and every ten minutes (each ask bounded),
    /// so names they serve resolve without a catalog entry.
    pub fn discover_models(self: &Arc<Self>) {
        const REFRESH: std::time::Duration = std::time::Duration::from_secs(600);
        let app = self.clone();
        // The process's own timer: no call's span.
        crate::spawn::in_span(tracing::Span::none(), async move {
            loop {
                app.settings()
                    .providers
                    .discover(std::time::Duration::from_secs(5))
                    .await;
                tokio::select! {
                    _ = tokio::time::sleep(REFRESH) => {}
                    _ = app.shutdown.cancelled() => return,
                }
            }
        });
    }
}

/// The model catalog `config` names, or the built-in one when that file cannot be used (logged).
fn catalog_of(config: &Config) -> Catalog {
    Catalog::load(config.catalog_file.as_deref()).unwrap_or_else(|error| {
        tracing::error!(%error, "model catalog file ignored; using the built-in catalog");
        Catalog::built_in()
    })
}

/// An app for unit tests: its own EXAI_HOME (removed on drop), every endpoint answered in-process
/// by one scripted client, the default config otherwise.
#[cfg(test)]
pub(crate) struct TestApp {
    pub app: Arc<App>,
    /// The client behind every endpoint (what it was asked).
    pub client: Arc<crate::providers::scripted::Scripted>,
    home: std::path::PathBuf,
}

#[cfg(test)]
impl App {
    /// The default config (the custom endpoint, default model `fake-fast`) with `settings`
    /// (environment names and values) over it; a store in a fresh temporary EXAI_HOME.
    ///
    /// Blocking (it opens the database), like [`App::open`].
    pub(crate) fn for_tests(settings: &[(&str, &str)]) -> TestApp {
        let home = crate::scratch::scratch_dir("app");
        let mut vars: std::collections::HashMap<String, String> = [
            ("EXAI_HOME", home.to_string_lossy().as_ref()),
            // Never dialled: the scripted client answers.
            ("CUSTOM_API_URL", "http://127.0.0.1:9/v1"),
            ("CUSTOM_MODEL_NAME", "fake-fast"),
        ]
        .into_iter()
        .chain(settings.iter().copied())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        vars.retain(|_, v| !v.is_empty());
        let vars = Arc::new(vars);
        let config = Config::from_env_and_file(|k| vars.get(k).cloned()).expect("test config");
        let client = Arc::new(crate::providers::scripted::Scripted::new("custom"));
        let scripted = client.clone();
        let providers = move |config: &Config,
                              catalog,
                              shared: Option<&SharedSlots>,
                              previous: Option<&Providers>| {
            Providers::with_clients(config, catalog, shared, previous, |_| {
                Ok(scripted.clone() as Arc<dyn crate::providers::ModelClient>)
            })
        };
        let env = Arc::new(move |k: &str| vars.get(k).cloned());
        let app =
            Self::open_with(config, Health::new("test", None), env, providers).expect("test app");
        TestApp { app, client, home }
    }
}

#[cfg(test)]
impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.home);
    }
}
