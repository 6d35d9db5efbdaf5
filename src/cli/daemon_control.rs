//! `exai daemon stop` and `exai daemon restart` for a person: what stopping did, and a daemon
//! started again where the stopped one listened.

use std::io::Write;

use crate::config::Config;
use crate::daemon::DaemonInfo;
use crate::daemon::control::Stopped;

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
