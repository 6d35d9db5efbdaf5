//! `exai daemon stop` and `exai daemon restart` for a person: what stopping did, and a daemon
//! started again where the stopped one listened; `exai reload`: what reading the config again
//! changed, by name.

use std::io::Write;

use crate::config::Config;
use crate::daemon::DaemonInfo;
use crate::daemon::control::{ControlError, Stopped};
use crate::settings::Reloaded;

/// Why `exai reload` did not reload.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("the daemon's answer was not understood: {0}")]
    Answer(String),
    #[error("the config could not be used; the daemon keeps its previous settings: {0}")]
    Unusable(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Asks the running daemon to read its config and keys files again, and says what changed
/// (setting names, never values). No daemon running is no error: the next one reads them.
pub async fn reload(config: &Config, out: &mut impl Write) -> Result<(), ReloadError> {
    let answer = match crate::daemon::control::ask(config, "POST", "/reload", true).await {
        Ok(answer) => answer,
        Err(ControlError::NotRunning(_)) => {
            writeln!(
                out,
                "no exai daemon is running for this EXAI_HOME; the next one starts with the config and keys as they are"
            )?;
            return Ok(());
        }
        Err(other) => return Err(other.into()),
    };
    let reloaded: Reloaded =
        serde_json::from_value(answer).map_err(|e| ReloadError::Answer(e.to_string()))?;
    if let Some(error) = reloaded.error {
        return Err(ReloadError::Unusable(error));
    }
    if reloaded.changed.is_empty() && reloaded.earlier.is_empty() {
        writeln!(out, "nothing changed that the daemon follows")?;
    } else if reloaded.changed.is_empty() {
        writeln!(
            out,
            "the exai daemon already follows the config and keys files (generation {}, which changed: {})",
            reloaded.generation,
            reloaded.earlier.join(", ")
        )?;
    } else {
        writeln!(
            out,
            "the exai daemon reloaded its settings (generation {}); new calls use them, calls in flight finish on theirs:",
            reloaded.generation
        )?;
        for name in &reloaded.changed {
            writeln!(out, "  {name} changed")?;
        }
    }
    for name in &reloaded.needs_restart {
        writeln!(
            out,
            "  {name} changed, but the running daemon keeps its value: it needs `exai daemon restart`"
        )?;
    }
    Ok(())
}

/// The daemon stopped, but a new one did not start, and why.
#[derive(Debug, thiserror::Error)]
#[error("the daemon stopped, but a new one did not start: {0}")]
pub struct NotStarted(String);

/// Starts a daemon for this EXAI_HOME again, where the stopped one listened (else where the
/// config says), detached as the shim starts one; returns what it wrote when up.
pub async fn start_again(
    mut config: Config,
    stopped: Option<&Stopped>,
) -> Result<DaemonInfo, NotStarted> {
    if let Some(listen) = stopped.and_then(|s| s.listen.parse().ok()) {
        config.listen = listen;
    }
    config.daemon_url = None;
    crate::shim::start_daemon(&config)
        .await
        .map_err(|e| NotStarted(e.to_string()))?;
    DaemonInfo::read(&config).ok_or_else(|| NotStarted("it wrote no daemon.json".into()))
}

/// Says what `stop` did.
pub fn report(stopped: &Option<Stopped>, out: &mut impl Write) -> std::io::Result<()> {
    let Some(stopped) = stopped else {
        return writeln!(out, "no exai daemon is running for this EXAI_HOME");
    };
    writeln!(
        out,
        "stopped the exai daemon (pid {}) in {:.1} s",
        stopped.pid,
        stopped.waited.as_secs_f64()
    )?;
    if stopped.interrupted.is_empty() {
        return writeln!(out, "no call was interrupted");
    }
    writeln!(
        out,
        "{} call(s) were still running after the grace and were interrupted:",
        stopped.interrupted.len()
    )?;
    for row in &stopped.interrupted {
        writeln!(
            out,
            "  {} {} (see `exai calls show {}`)",
            row.id, row.tool, row.id
        )?;
    }
    Ok(())
}
