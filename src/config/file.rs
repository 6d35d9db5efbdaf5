//! The TOML config file. Its keys come from the settings table, and each value is read as the
//! environment variable it stands for, so one set of rules parses and checks both; the
//! environment wins.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

use super::settings::{Kind, SETTINGS, Setting};
use super::{BUILT_IN_PROVIDERS, ConfigError};
use crate::files::FileError;

/// The file's contents: each setting of the table as the environment would spell its value,
/// the built-in providers' sections and the endpoints.
#[derive(Default)]
pub struct FileConfig {
    values: Vec<(&'static Setting, String)>,
    providers: BTreeMap<String, ProviderSection>,
    pub endpoints: Vec<EndpointSection>,
    /// `[clink]`: the CLIs and roles of the `clink` tool.
    pub clink: crate::clink::ClinkSection,
}

const PROVIDERS: &str = "providers";
const ENDPOINTS: &str = "endpoints";
const CLINK: &str = "clink";

/// The keys the file may hold, from the settings table: the top-level keys (settings,
/// `[section]`s, `providers`, `endpoints`) and each section's keys, in the table's order.
struct Layout {
    top: Vec<&'static str>,
    sections: Vec<(&'static str, Vec<&'static str>)>,
}

fn layout() -> &'static Layout {
    static LAYOUT: OnceLock<Layout> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        let mut layout = Layout {
            top: Vec::new(),
            sections: Vec::new(),
        };
        for key in SETTINGS.iter().filter_map(|s| s.file_key) {
            let (top, field) = match key.split_once('.') {
                Some((section, field)) => (section, Some(field)),
                None => (key, None),
            };
            if !layout.top.contains(&top) {
                layout.top.push(top);
            }
            if let Some(field) = field {
                match layout.sections.iter_mut().find(|(name, _)| *name == top) {
                    Some((_, fields)) => fields.push(field),
                    None => layout.sections.push((top, vec![field])),
                }
            }
        }
        layout.top.extend([PROVIDERS, ENDPOINTS, CLINK]);
        layout
    })
}

/// The setting whose file key is `key`.
fn setting_at(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.file_key == Some(key))
}

impl<'de> Deserialize<'de> for FileConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(Section { name: None })
    }
}

/// The whole file (`name` none) or one `[section]` of settings.
#[derive(Clone, Copy)]
struct Section {
    name: Option<&'static str>,
}

impl<'de> DeserializeSeed<'de> for Section {
    type Value = FileConfig;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<FileConfig, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Section {
    type Value = FileConfig;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        // Worded as serde words a struct, as each section was one.
        let name = self.name.unwrap_or("fileConfig");
        let mut letters = name.chars();
        let first: String = letters
            .next()
            .map(|c| c.to_ascii_uppercase())
            .into_iter()
            .collect();
        write!(f, "struct {first}{}", letters.as_str())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FileConfig, A::Error> {
        let layout = layout();
        let keys: &'static [&'static str] = match self.name {
            None => &layout.top,
            Some(name) => layout
                .sections
                .iter()
                .find(|(section, _)| *section == name)
                .map(|(_, fields)| fields.as_slice())
                .unwrap_or_default(),
        };
        let mut file = FileConfig::default();
        while let Some(key) = map.next_key_seed(KnownKey(keys))? {
            let full = match self.name {
                Some(section) => format!("{section}.{key}"),
                None => key.to_string(),
            };
            match (self.name, setting_at(&full)) {
                (_, Some(setting)) => {
                    let value = map.next_value_seed(ValueOf(setting))?;
                    file.values.push((setting, value));
                }
                (None, None) if key == PROVIDERS => file.providers = map.next_value()?,
                (None, None) if key == ENDPOINTS => file.endpoints = map.next_value()?,
                (None, None) if key == CLINK => file.clink = map.next_value()?,
                (None, None) => {
                    let section = map.next_value_seed(Section { name: Some(key) })?;
                    file.values.extend(section.values);
                }
                (Some(_), None) => return Err(de::Error::unknown_field(key, keys)),
            }
        }
        Ok(file)
    }
}

/// A key of a table, refused with the keys it may hold (as serde refuses an unknown field).
struct KnownKey(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for KnownKey {
    type Value = &'static str;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl<'de> Visitor<'de> for KnownKey {
    type Value = &'static str;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("field identifier")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        self.0
            .iter()
            .find(|known| **known == key)
            .copied()
            .ok_or_else(|| E::unknown_field(key, self.0))
    }
}

/// One setting's value, read as the TOML type its kind takes and spelled as the environment
/// would spell it (lists and tables joined with commas).
struct ValueOf(&'static Setting);

impl<'de> DeserializeSeed<'de> for ValueOf {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        fn pairs<V: std::fmt::Display>(map: BTreeMap<String, V>) -> String {
            let pairs: Vec<String> = map.iter().map(|(name, v)| format!("{name}={v}")).collect();
            pairs.join(",")
        }
        Ok(match self.0.kind {
            Kind::Seconds(_) => f64::deserialize(deserializer)?.to_string(),
            Kind::Count(_) | Kind::Positive(_) | Kind::AtLeast { .. } | Kind::Above { .. } => {
                u64::deserialize(deserializer)?.to_string()
            }
            Kind::List => Vec::<String>::deserialize(deserializer)?.join(","),
            Kind::SecondsByName { .. } => {
                pairs(BTreeMap::<String, f64>::deserialize(deserializer)?)
            }
            Kind::CountsByName => pairs(BTreeMap::<String, u64>::deserialize(deserializer)?),
            Kind::Dollars => f64::deserialize(deserializer)?.to_string(),
            Kind::DollarsByName => pairs(BTreeMap::<String, f64>::deserialize(deserializer)?),
            Kind::Text { .. }
            | Kind::Address { .. }
            | Kind::Flag
            | Kind::Url
            | Kind::DatabaseUrl
            | Kind::Secret
            | Kind::File => String::deserialize(deserializer)?,
        })
    }
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

/// The largest config file read: far beyond any real one (a few KiB), and the bound on what a
/// wrong `EXAI_CONFIG` (a log, a device) costs every command and the daemon.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Reads the file; a missing default file is no error, a missing named one is. Only a regular
/// file of at most [`MAX_FILE_BYTES`] is read: a FIFO would block for ever, `/dev/zero` never end.
pub fn read(path: &Path, explicit: bool) -> Result<Option<FileConfig>, ConfigError> {
    let refused = |why: String| ConfigError::File {
        path: path.display().to_string(),
        why,
    };
    // A link is followed (dotfiles kept elsewhere); the reader wants the real path.
    let real = match path.canonicalize() {
        Ok(real) => real,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(None),
        Err(e) => return Err(refused(e.to_string())),
    };
    let bytes = crate::files::read_regular(&real, MAX_FILE_BYTES).map_err(|e| {
        refused(match e {
            FileError::TooLarge { size, .. } => format!(
                "{size} bytes is over the {MAX_FILE_BYTES}-byte (1 MiB) limit of a config file"
            ),
            FileError::Grew { .. } => format!(
                "grew past the {MAX_FILE_BYTES}-byte (1 MiB) limit of a config file while it was read"
            ),
            other => other.to_string(),
        })
    })?;
    let text = String::from_utf8(bytes).map_err(|_| refused("not UTF-8 text".into()))?;
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            why: toml_error(&e, &text),
        })
}

/// A TOML error as its message and line, without the excerpt of the file `toml` would quote: a
/// broken line may hold a database password, and the message reaches logs and `/healthz`.
pub(crate) fn toml_error(error: &toml::de::Error, text: &str) -> String {
    let message = error.message().trim_end();
    match error.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message.to_string(),
    }
}

impl FileConfig {
    /// The file's keys whose values carry a credential (`store.url` with a password, a base URL
    /// with `?key=`): a file holding one must be private to its owner.
    pub fn credential_keys(&self) -> Vec<String> {
        let settings = self
            .values
            .iter()
            .map(|(setting, value)| (setting.file_key.unwrap_or(setting.var).to_string(), value));
        let providers = self.providers.iter().filter_map(|(name, section)| {
            let url = section.base_url.as_ref()?;
            Some((format!("providers.{name}.base_url"), url))
        });
        let endpoints = self.endpoints.iter().map(|endpoint| {
            (
                format!("[[endpoints]] {}: base_url", endpoint.name),
                &endpoint.base_url,
            )
        });
        settings
            .chain(providers)
            .chain(endpoints)
            .filter(|(_, value)| crate::secrets::holds_credential(value))
            .map(|(key, _)| key)
            .collect()
    }

    /// The file's settings as (environment variable, value, file key).
    pub fn as_vars(&self) -> Result<Vec<(String, String, String)>, ConfigError> {
        let mut vars = Vec::new();
        let mut put = |var: &str, value: String, key: &str| {
            vars.push((var.to_string(), value, key.to_string()))
        };
        let join = |items: &Vec<String>| items.join(",");
        for (setting, value) in &self.values {
            put(
                setting.var,
                value.clone(),
                setting.file_key.unwrap_or_default(),
            );
        }
        for (name, section) in &self.providers {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn temp_dir() -> PathBuf {
        crate::scratch::scratch_dir("file")
    }

    /// `read(path)`'s error, within 10 s (a reader blocked on a FIFO fails the test, not hangs it).
    fn refusal(path: &Path) -> String {
        let (tx, rx) = std::sync::mpsc::channel();
        let at = path.to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(read(&at, true).map(|_| ()).map_err(|e| e.to_string()));
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(read) => read.unwrap_err(),
            Err(_) => {
                // A writer lets the blocked reader go, so the test process can end.
                let _ = std::fs::OpenOptions::new().write(true).open(path);
                panic!("reading {} blocked", path.display());
            }
        }
    }

    #[test]
    fn only_a_regular_file_within_the_limit_is_read_through_a_link_too() {
        let dir = temp_dir();
        let fifo = dir.join("config.toml");
        let name = std::ffi::CString::new(fifo.display().to_string()).unwrap();
        // SAFETY: a valid NUL-terminated path; the result is checked.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let error = refusal(&fifo);
        assert!(
            error.contains(&fifo.display().to_string()) && error.contains("named pipe"),
            "{error}"
        );

        let big = dir.join("big.toml");
        let line = format!("#{}\n", "x".repeat(1023));
        std::fs::write(&big, line.repeat(1025)).unwrap();
        let error = refusal(&big);
        assert!(
            error.contains(&big.display().to_string()) && error.contains("1 MiB"),
            "{error}"
        );

        let error = refusal(Path::new("/dev/zero"));
        assert!(
            error.contains("/dev/zero") && error.contains("device"),
            "{error}"
        );

        let real = dir.join("dotfiles.toml");
        std::fs::write(&real, "default_model = \"glm-4.7\"\n").unwrap();
        let link = dir.join("linked.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let vars = read(&link, true).unwrap().unwrap().as_vars().unwrap();
        assert_eq!(vars[0].1, "glm-4.7");
        assert!(read(&dir.join("missing.toml"), false).unwrap().is_none());
        assert!(read(&dir.join("missing.toml"), true).is_err());
    }

    #[test]
    fn the_keys_holding_a_credential_are_named() {
        let file: FileConfig = toml::from_str(
            "default_model = \"glm-4.7\"\n[store]\nurl = \"postgres://exai:hunter2@db/team\"\n\
             [providers.glm]\nbase_url = \"https://api.z.ai/api/paas/v4\"\n\
             [[endpoints]]\nname = \"gateway\"\nbase_url = \"https://gw.example/v1?key=abc\"\n",
        )
        .unwrap();
        assert_eq!(
            file.credential_keys(),
            ["store.url", "[[endpoints]] gateway: base_url"]
        );
        let file: FileConfig =
            toml::from_str("[store]\nurl = \"postgres://exai@db/team\"\n").unwrap();
        assert!(file.credential_keys().is_empty());
    }
}
