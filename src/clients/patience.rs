//! How long a session's client waits for a tool answer, following the client's own
//! configuration where exai can read it: a Codex session gets the `tool_timeout_sec`, a Gemini
//! CLI session the `timeout`, of the entry that launches exai (read on a blocking thread,
//! bounded in size and time, cached until the file changes). A rule the user set
//! (`EXAI_CLIENT_PATIENCE`, `client_patience`) still wins.
//!
//! The file is read as a call opens, before its deadline runs: a file on a mount that hangs, or
//! a FIFO in its place, must not hold the call. The read is given [`LOOK_LIMIT`], one read at a
//! time per file, and only a regular file is opened.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use super::{codex, json};
use crate::config::Config;
use crate::files;

/// Larger than any client's config: past it the file is not read.
const MAX_CLIENT_CONFIG_BYTES: u64 = 1024 * 1024;
/// Longest a call waits for a look at a client's file; past it the call goes on with the
/// default patience (a local file takes microseconds).
const LOOK_LIMIT: Duration = Duration::from_secs(1);

/// A file's identity for the cache: modified time and length (`None`: no file).
type Stamp = Option<(Option<SystemTime>, u64)>;

/// Reads the timeout of exai's entry from a client's config text (this binary's path given).
type ReadTimeout = fn(&str, Option<&Path>) -> Result<Option<Duration>, String>;

/// One client's own timeout setting: which sessions it is for, where it is, how it is read.
struct OwnTimeout {
    /// The start of the client's `clientInfo.name` (lowercase).
    client: &'static str,
    /// Its name in log lines.
    name: &'static str,
    file: PathBuf,
    read: ReadTimeout,
    /// The file last read: its stamp and the timeout found there.
    cache: Mutex<Option<(Stamp, Option<Duration>)>>,
    /// A look at the file is under way (on a blocking thread, which may outlive the wait for
    /// it): no second one starts, so a hung file holds one thread, not one per call.
    looking: Arc<AtomicBool>,
}

/// What one look at a client's file found.
enum Looked {
    /// Unchanged since the cached stamp.
    Unchanged,
    /// No file there.
    Absent,
    /// The file, with its text or why it cannot be used.
    Read(Stamp, Result<String, String>),
}

/// The clients' own timeouts, as their configuration files say.
pub struct ClientPatience {
    own: Vec<OwnTimeout>,
    this_exe: Option<PathBuf>,
}

impl ClientPatience {
    /// Reads Codex's `config.toml` at `codex_config` and Gemini CLI's `settings.json` at
    /// `gemini_settings` (none: that client's file is not read).
    pub fn new(codex_config: Option<PathBuf>, gemini_settings: Option<PathBuf>) -> Self {
        let own = [
            (
                "codex",
                "Codex",
                codex_config,
                codex::exai_tool_timeout as ReadTimeout,
            ),
            (
                "gemini-cli",
                "Gemini CLI",
                gemini_settings,
                json::exai_timeout_ms,
            ),
        ]
        .into_iter()
        .filter_map(|(client, name, file, read)| {
            Some(OwnTimeout {
                client,
                name,
                file: file?,
                read,
                cache: Mutex::new(None),
                looking: Arc::default(),
            })
        })
        .collect();
        Self {
            own,
            this_exe: std::env::current_exe().ok(),
        }
    }

    /// The client files of this process's environment (`CODEX_HOME`, else `~/.codex`;
    /// `~/.gemini`).
    pub fn from_env() -> Self {
        let places = super::Places::from_lookup(|name| std::env::var(name).ok()).ok();
        Self::new(
            places.as_ref().map(|p| p.codex_home.join("config.toml")),
            places.map(|p| p.home.join(".gemini/settings.json")),
        )
    }

    /// How long the client named `client` waits for a `tools/call` answer.
    pub async fn for_client(&self, config: &Config, client: Option<&str>) -> Duration {
        if let Some(set) = config.configured_patience_for(client) {
            return set;
        }
        let name = client.unwrap_or("").to_ascii_lowercase();
        if let Some(own) = self.own.iter().find(|own| name.starts_with(own.client))
            && let Some(timeout) = self.timeout_in(own).await
        {
            return timeout;
        }
        config.patience_for(client)
    }

    async fn timeout_in(&self, own: &OwnTimeout) -> Option<Duration> {
        let cached = *own.cache.lock().unwrap_or_else(|p| p.into_inner());
        if own.looking.swap(true, Ordering::AcqRel) {
            // Another call is looking (or a look hangs): the last verdict stands meanwhile.
            return cached.and_then(|(_, timeout)| timeout);
        }
        let (file, looking) = (own.file.clone(), own.looking.clone());
        let known = cached.map(|(stamp, _)| stamp);
        let look = crate::spawn::blocking(move || {
            let looked = look_at(&file, known);
            looking.store(false, Ordering::Release);
            looked
        });
        let looked = match tokio::time::timeout(LOOK_LIMIT, look).await {
            Ok(Ok(looked)) => looked,
            Ok(Err(_)) => return None,
            Err(_) => {
                tracing::warn!(path = %own.file.display(), client = own.name,
                    limit_s = LOOK_LIMIT.as_secs(),
                    "the client's config could not be read in time (a hung mount?); its patience stays the default");
                return cached.and_then(|(_, timeout)| timeout);
            }
        };
        let (stamp, timeout) = match looked {
            Looked::Unchanged => return cached.and_then(|(_, timeout)| timeout),
            Looked::Absent => (None, None),
            Looked::Read(stamp, text) => (stamp, self.timeout_from(own, text)),
        };
        *own.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some((stamp, timeout));
        timeout
    }

    /// The timeout in the client's file; a file that cannot be used is ignored with one log
    /// line (per change of the file: the cache holds the verdict).
    fn timeout_from(&self, own: &OwnTimeout, text: Result<String, String>) -> Option<Duration> {
        let path = &own.file;
        match text.and_then(|text| (own.read)(&text, self.this_exe.as_deref())) {
            Ok(timeout) => {
                if let Some(timeout) = timeout {
                    tracing::info!(path = %path.display(), client = own.name, timeout_s = timeout.as_secs_f64(), "the client's sessions wait as long as its own timeout for exai");
                }
                timeout
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), client = own.name, %error, "client config not usable; its patience stays the default");
                None
            }
        }
    }
}

/// Looks at a client's file (blocking): unchanged since `known`, absent, or read — as any file
/// exai reads ([`files::read_regular`]: a regular file only, opened non-blocking, at most
/// [`MAX_CLIENT_CONFIG_BYTES`]), where it really is: dotfile managers link configs.
fn look_at(path: &Path, known: Option<Stamp>) -> Looked {
    let Ok(meta) = std::fs::metadata(path) else {
        return Looked::Absent;
    };
    let stamp = Some((meta.modified().ok(), meta.len()));
    if known == Some(stamp) {
        return Looked::Unchanged;
    }
    let read = (path.canonicalize().map_err(files::FileError::from))
        .and_then(|real| files::read_regular(&real, MAX_CLIENT_CONFIG_BYTES))
        .map_err(|e| e.to_string())
        .and_then(|bytes| String::from_utf8(bytes).map_err(|_| "not UTF-8".to_string()));
    Looked::Read(stamp, read)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(patience: Option<&str>) -> Config {
        Config::from_lookup(|name| match name {
            "EXAI_HOME" => Some("/x".into()),
            "EXAI_CLIENT_PATIENCE" => patience.map(str::to_string),
            _ => None,
        })
        .expect("config")
    }

    #[tokio::test]
    async fn codex_sessions_follow_the_codex_file_and_its_changes() {
        let dir = crate::scratch::scratch_dir("patience");
        let file = dir.join("config.toml");
        let patience = ClientPatience::new(Some(file.clone()), None);
        let plain = config(None);
        let codex = Some("codex-mcp-client");
        assert_eq!(
            patience.for_client(&plain, codex).await,
            Duration::from_secs(60)
        );
        std::fs::write(
            &file,
            "[mcp_servers.exai]\ncommand = \"/x/exai\"\ntool_timeout_sec = 3\n",
        )
        .expect("write");
        assert_eq!(
            patience.for_client(&plain, codex).await,
            Duration::from_secs(3)
        );
        // Other clients are not Codex.
        assert_eq!(
            patience.for_client(&plain, Some("claude-code")).await,
            plain.patience_for(Some("claude-code"))
        );
        // The user's own rule wins.
        let ruled = config(Some("codex=120"));
        assert_eq!(
            patience.for_client(&ruled, codex).await,
            Duration::from_secs(120)
        );
        // A broken file falls back to the default.
        std::fs::write(&file, "[mcp_servers.exai\n").expect("write");
        assert_eq!(
            patience.for_client(&plain, codex).await,
            Duration::from_secs(60)
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_fifo_in_place_of_the_clients_file_is_never_opened() {
        let dir = crate::scratch::scratch_dir("patience");
        let file = dir.join("config.toml");
        let path = std::ffi::CString::new(file.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: a valid NUL-terminated path; mkfifo only creates the node.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        let patience = ClientPatience::new(Some(file), None);
        // Opening a FIFO for reading waits for a writer: were it opened, this would not return.
        let waited = tokio::time::timeout(
            Duration::from_secs(30),
            patience.for_client(&config(None), Some("codex-mcp-client")),
        )
        .await;
        assert_eq!(waited.ok(), Some(Duration::from_secs(60)));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn gemini_sessions_follow_the_timeout_of_the_entry_that_launches_exai() {
        let dir = crate::scratch::scratch_dir("patience");
        let file = dir.join("settings.json");
        let patience = ClientPatience::new(None, Some(file.clone()));
        let plain = config(None);
        let gemini = Some("gemini-cli-mcp-client");
        // No file: Gemini CLI's own default, ten minutes.
        assert_eq!(
            patience.for_client(&plain, gemini).await,
            Duration::from_secs(600)
        );
        std::fs::write(
            &file,
            r#"{"theme": "x", "mcpServers": {"other": {"command": "npx", "timeout": 1000},
                "mine": {"command": "/opt/bin/exai", "args": ["stdio"], "timeout": 90000}}}"#,
        )
        .expect("write");
        assert_eq!(
            patience.for_client(&plain, gemini).await,
            Duration::from_secs(90)
        );
        // Codex's file is not Gemini's.
        assert_eq!(
            patience.for_client(&plain, Some("codex-mcp-client")).await,
            Duration::from_secs(60)
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
