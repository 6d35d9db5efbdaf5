//! How long a session's client waits for a tool answer, following the client's own
//! configuration where exai can read it: a Codex session gets the `tool_timeout_sec` of the
//! Codex entry that launches exai (read off the async threads, bounded, cached until the file's
//! mtime changes). A rule the user set (`EXAI_CLIENT_PATIENCE`, `client_patience`) still wins.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::io::AsyncReadExt;

use super::codex;
use crate::config::Config;

/// Larger than any Codex config: past it the file is not read.
const MAX_CODEX_CONFIG_BYTES: u64 = 1024 * 1024;

/// A file's identity for the cache: modified time and length (`None`: no file).
type Stamp = Option<(Option<SystemTime>, u64)>;

/// The clients' own timeouts, as their configuration files say.
pub struct ClientPatience {
    /// Codex's `config.toml` in this process's environment.
    codex_config: Option<PathBuf>,
    this_exe: Option<PathBuf>,
    /// The Codex file last read: its stamp and the timeout found there.
    codex: Mutex<Option<(Stamp, Option<Duration>)>>,
}

impl ClientPatience {
    /// Reads Codex's config at `codex_config` (none: no client's file is read).
    pub fn new(codex_config: Option<PathBuf>) -> Self {
        Self {
            codex_config,
            this_exe: std::env::current_exe().ok(),
            codex: Mutex::new(None),
        }
    }

    /// The client files of this process's environment (`CODEX_HOME`, else `~/.codex`).
    pub fn from_env() -> Self {
        let places = super::Places::from_lookup(|name| std::env::var(name).ok()).ok();
        Self::new(places.map(|p| p.codex_home.join("config.toml")))
    }

    /// How long the client named `client` waits for a `tools/call` answer.
    pub async fn for_client(&self, config: &Config, client: Option<&str>) -> Duration {
        if let Some(set) = config.configured_patience_for(client) {
            return set;
        }
        let name = client.unwrap_or("").to_ascii_lowercase();
        if name.starts_with("codex")
            && let Some(own) = self.codex_timeout().await
        {
            return own;
        }
        config.patience_for(client)
    }

    async fn codex_timeout(&self) -> Option<Duration> {
        let path = self.codex_config.as_deref()?;
        let stamp: Stamp = tokio::fs::metadata(path)
            .await
            .ok()
            .map(|m| (m.modified().ok(), m.len()));
        let cached = *self.codex.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((cached, timeout)) = cached
            && cached == stamp
        {
            return timeout;
        }
        let timeout = match stamp {
            Some(_) => self.read_codex(path).await,
            None => None,
        };
        *self.codex.lock().unwrap_or_else(|p| p.into_inner()) = Some((stamp, timeout));
        timeout
    }

    /// The timeout in Codex's file; a file that cannot be used is ignored with one log line
    /// (per change of the file: the cache holds the verdict).
    async fn read_codex(&self, path: &Path) -> Option<Duration> {
        let read = async {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|e| e.to_string())?;
            let mut bytes = Vec::new();
            file.take(MAX_CODEX_CONFIG_BYTES + 1)
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| e.to_string())?;
            if bytes.len() as u64 > MAX_CODEX_CONFIG_BYTES {
                return Err(format!("larger than {MAX_CODEX_CONFIG_BYTES} bytes"));
            }
            let text = String::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
            codex::exai_tool_timeout(&text, self.this_exe.as_deref())
        };
        match read.await {
            Ok(timeout) => {
                if let Some(timeout) = timeout {
                    tracing::info!(path = %path.display(), tool_timeout_s = timeout.as_secs_f64(), "Codex sessions wait as long as Codex's tool_timeout_sec for exai");
                }
                timeout
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "Codex config not usable; Codex's patience stays the default");
                None
            }
        }
    }
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
        let dir = std::env::temp_dir().join(format!("exai-patience-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("config.toml");
        let patience = ClientPatience::new(Some(file.clone()));
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
}
