//! What differs between two configurations, by setting name and never by value: what a reload
//! changed, and what a client's own settings change for its session.

use std::collections::BTreeMap;

use super::settings::{SETTINGS, Scope};
use super::{BUILT_IN_PROVIDERS, Config, EndpointConfig};

/// One difference: what it is called in a reload's report, and the variable that sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `DEFAULT_MODEL`, `glm key`, `glm base URL`, `endpoint gateway`.
    pub what: String,
    /// The environment variable that sets it (`GLM_API_KEY` for the glm key).
    pub var: String,
    pub scope: Scope,
}

impl Change {
    fn setting(var: &str, scope: Scope) -> Self {
        Self {
            what: var.to_string(),
            var: var.to_string(),
            scope,
        }
    }
}

/// What differs from `old` to `new`: each setting of the table (as `exai config` shows it), then
/// each endpoint's key, URL, models and limit.
pub fn changes(old: &Config, new: &Config) -> Vec<Change> {
    let mut found: Vec<Change> = SETTINGS
        .iter()
        // Where the file is comes from the environment, which no reload changes; a file that
        // appears or goes is a change of the settings it holds, named as those.
        .filter(|setting| setting.var != super::settings::CONFIG_FILE.var)
        .filter(|setting| (setting.shown)(old) != (setting.shown)(new))
        .map(|setting| Change::setting(setting.var, setting.scope))
        .collect();
    let by_name = |config: &Config| -> BTreeMap<String, EndpointConfig> {
        config
            .endpoints
            .iter()
            .map(|e| (e.name.clone(), e.clone()))
            .collect()
    };
    let (before, after) = (by_name(old), by_name(new));
    for name in before
        .keys()
        .chain(after.keys().filter(|n| !before.contains_key(*n)))
    {
        match (before.get(name), after.get(name)) {
            (Some(was), Some(is)) => found.extend(endpoint_changes(was, is)),
            (was, is) => found.push(Change {
                what: format!(
                    "endpoint {name} {}",
                    if is.is_some() { "added" } else { "removed" }
                ),
                var: endpoint_var(was.or(is), |spec| spec.url_var, "CUSTOM_API_URL"),
                scope: Scope::Call,
            }),
        }
    }
    // The clink CLIs and roles follow the file too; each is named by its section.
    found.extend(
        old.clis
            .changed_entries(&new.clis)
            .into_iter()
            .map(|section| Change {
                what: section.clone(),
                var: section,
                scope: Scope::Call,
            }),
    );
    found
}

/// The variable of an endpoint's field: a built-in provider's (`spec` picks it), the custom
/// endpoint's `custom`; a config file endpoint is named by its section.
fn endpoint_var(
    endpoint: Option<&EndpointConfig>,
    spec: impl Fn(&super::BuiltInProvider) -> &'static str,
    custom: &str,
) -> String {
    let name = endpoint.map_or("", |e| e.name.as_str());
    match BUILT_IN_PROVIDERS.iter().find(|p| p.name == name) {
        Some(provider) => spec(provider).to_string(),
        None if name == "custom" => custom.to_string(),
        None => format!("[[endpoints]] {name}"),
    }
}

fn endpoint_changes(was: &EndpointConfig, is: &EndpointConfig) -> Vec<Change> {
    let name = &is.name;
    let mut found = Vec::new();
    let mut add = |differs: bool, what: &str, var: String| {
        if differs {
            found.push(Change {
                what: format!("{name} {what}"),
                var,
                scope: Scope::Call,
            });
        }
    };
    // The key's variable: where the new key came from, when that is a variable.
    let key_var = is
        .key_source
        .clone()
        .filter(|source| !source.contains(' '))
        .unwrap_or_else(|| endpoint_var(Some(is), |spec| spec.key_vars[0], "CUSTOM_API_KEY"));
    add(was.api_key != is.api_key, "key", key_var);
    add(
        was.base_url != is.base_url,
        "base URL",
        endpoint_var(Some(is), |spec| spec.url_var, "CUSTOM_API_URL"),
    );
    add(
        was.allowed_models != is.allowed_models,
        "allowed models",
        endpoint_var(Some(is), |spec| spec.allowed_var, "CUSTOM_ALLOWED_MODELS"),
    );
    add(
        was.models != is.models || was.default_model != is.default_model,
        "models",
        endpoint_var(Some(is), |spec| spec.url_var, "CUSTOM_MODEL_NAME"),
    );
    add(
        was.max_concurrency != is.max_concurrency,
        "concurrency",
        endpoint_var(
            Some(is),
            |spec| spec.concurrency_var,
            "CUSTOM_MAX_CONCURRENCY",
        ),
    );
    found
}

impl Config {
    /// Keeps `running`'s value of every setting fixed at the daemon's start (`Scope::Restart`):
    /// a configuration read again may change only what a running daemon can follow.
    pub fn keep_fixed(&mut self, running: &Config) {
        self.home = running.home.clone();
        self.listen = running.listen;
        self.store = running.store.clone();
        self.daemon_url = running.daemon_url.clone();
        self.max_message_bytes = running.max_message_bytes;
        self.replica_lease = running.replica_lease;
        self.shared_concurrency = running.shared_concurrency.clone();
        self.disabled_tools = running.disabled_tools.clone();
        self.max_output_tokens = running.max_output_tokens;
    }

    /// Keeps `daemon`'s value of every setting of the daemon's own (`Scope::Daemon`: shutdown,
    /// retention): they are never a session's.
    pub fn keep_daemons_own(&mut self, daemon: &Config) {
        self.shutdown_grace = daemon.shutdown_grace;
        self.retention_max_age = daemon.retention_max_age;
        self.retention_max_rows = daemon.retention_max_rows;
        self.result_ttl = daemon.result_ttl;
    }

    /// The provider and call settings a client's environment sets, by variable: what `env`
    /// gives for each variable reading the configuration asks for, less the daemon's own and the
    /// locations of its files. These are what a shim hands its daemon for its session.
    pub fn session_vars(
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<BTreeMap<String, String>, super::ConfigError> {
        let seen = std::sync::Mutex::new(BTreeMap::new());
        Self::from_env_and_file(|name| {
            let value = env(name).filter(|v| !v.trim().is_empty());
            if let Some(value) = &value
                && super::settings::is_session_var(name)
            {
                seen.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.to_string(), value.clone());
            }
            value
        })?;
        Ok(seen.into_inner().unwrap_or_else(|p| p.into_inner()))
    }

    /// The value each of `names` has for the environment `env` and its files: the environment,
    /// else the config file, else (a provider's key variable) the keys file. What a client's
    /// variable is compared with when only its digest may cross the wire.
    pub fn values_read(
        env: impl Fn(&str) -> Option<String>,
        names: &[String],
    ) -> Result<BTreeMap<String, String>, super::ConfigError> {
        let mut from_files = BTreeMap::new();
        if let Some((path, explicit)) =
            super::file::location(env("EXAI_CONFIG"), env("XDG_CONFIG_HOME"), env("HOME"))
        {
            if let Some(parsed) = super::file::read(&path, explicit)? {
                for (var, value, _) in parsed.as_vars()? {
                    from_files.insert(var, value);
                }
            }
            let stored = super::keys::read(&super::keys::beside(&path))?;
            for (provider, vars) in super::keys::providers() {
                let Some(key) = stored.get(provider) else {
                    continue;
                };
                if vars.iter().all(|var| env(var).is_none()) {
                    for var in vars {
                        from_files.insert(var.to_string(), key.expose().to_string());
                    }
                }
            }
        }
        Ok(names
            .iter()
            .filter_map(|name| {
                let value = env(name)
                    .filter(|v| !v.trim().is_empty())
                    .or_else(|| from_files.get(name).cloned())?;
                Some((name.clone(), value))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Config {
        let vars: BTreeMap<String, String> = [("EXAI_HOME", "/x")]
            .iter()
            .chain(vars)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned()).unwrap()
    }

    #[test]
    fn changes_name_settings_and_keys_never_values() {
        let old = config(&[("GLM_API_KEY", "old-secret"), ("DEFAULT_MODEL", "a")]);
        let new = config(&[("GLM_API_KEY", "new-secret"), ("DEFAULT_MODEL", "b")]);
        let found = changes(&old, &new);
        let whats: Vec<&str> = found.iter().map(|c| c.what.as_str()).collect();
        assert_eq!(whats, ["DEFAULT_MODEL", "glm key"]);
        assert_eq!(found[1].var, "GLM_API_KEY");
        assert!(!format!("{found:?}").contains("secret"));
        assert!(changes(&old, &old).is_empty());
    }

    #[test]
    fn a_changed_clink_cli_or_role_is_a_change_a_reload_follows() {
        let old = config(&[]);
        let mut new = config(&[]);
        let section: crate::clink::ClinkSection = toml::from_str(
            "[clis.codex]\ntimeout_s = 60\n[roles.mine]\nprompt_file = \"/r.txt\"\n",
        )
        .unwrap();
        new.clis = crate::clink::Clis::with_section(&section).unwrap();
        let whats: Vec<String> = changes(&old, &new).into_iter().map(|c| c.what).collect();
        assert_eq!(whats, ["[clink.clis.codex]", "[clink.roles.mine]"]);
    }

    #[test]
    fn keep_fixed_keeps_every_restart_setting() {
        let running = config(&[]);
        let mut read = config(&[
            ("EXAI_LISTEN", "127.0.0.1:9999"),
            ("EXAI_MAX_MESSAGE_BYTES", "1000"),
            ("EXAI_REPLICA_LEASE_S", "99"),
            ("DISABLED_TOOLS", "chat"),
            ("MAX_MCP_OUTPUT_TOKENS", "5000"),
            ("EXAI_CALL_TIMEOUT_S", "7"),
            ("EXAI_SHUTDOWN_GRACE_S", "1"),
            ("EXAI_RETENTION_S", "100"),
            ("EXAI_RETENTION_ROWS", "10"),
            ("EXAI_RESULT_TTL_S", "10"),
        ]);
        read.keep_fixed(&running);
        let scopes = |left: &[Change]| {
            let mut scopes: Vec<Scope> = left.iter().map(|c| c.scope).collect();
            scopes.dedup();
            scopes
        };
        let left = changes(&running, &read);
        assert_eq!(scopes(&left), [Scope::Call, Scope::Daemon], "{left:?}");
        read.keep_daemons_own(&running);
        let left = changes(&running, &read);
        assert_eq!(
            left.iter().map(|c| c.what.as_str()).collect::<Vec<_>>(),
            ["EXAI_CALL_TIMEOUT_S"],
            "a fixed or daemon setting was not kept"
        );
    }

    #[test]
    fn a_clients_session_vars_are_its_call_and_provider_settings() {
        let env: BTreeMap<&str, &str> = [
            ("HOME", "/nowhere"),
            ("EXAI_HOME", "/x"),
            ("EXAI_LISTEN", "127.0.0.1:1"),
            ("GLM_API_KEY", "k"),
            ("DEFAULT_MODEL", "m"),
            ("EXAI_SHUTDOWN_GRACE_S", "3"),
            // A client cannot raise the budgets its calls are held to.
            ("EXAI_DAILY_BUDGET_USD", "1000"),
            ("EXAI_USER_DAILY_BUDGET_USD", "*=1000"),
            ("UNRELATED", "u"),
        ]
        .into_iter()
        .collect();
        let vars = Config::session_vars(|n| env.get(n).map(|v| v.to_string())).unwrap();
        assert_eq!(
            vars.keys().map(String::as_str).collect::<Vec<_>>(),
            ["DEFAULT_MODEL", "GLM_API_KEY"]
        );
    }
}
