//! Stopping the daemon of an EXAI_HOME from outside it (`exai daemon stop`, `restart`, a shim that
//! meets a daemon of another version): SIGTERM, a bounded wait while its calls finish within the
//! grace, and the calls it had to interrupt, read from the store.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::{DaemonInfo, lock_is_held};
use crate::config::Config;
use crate::store::{CallFilter, CallRow, CallState, StoreReader, now_ms};

/// Beyond the shutdown grace, how long a stopping daemon may take to close its store and exit.
const EXIT_MARGIN: Duration = Duration::from_secs(10);

/// Why the daemon could not be stopped (or started again).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot signal the exai daemon (pid {pid}): {source}")]
    Signal { pid: u32, source: std::io::Error },
    #[error(
        "the exai daemon (pid {pid}) did not exit within {waited:?} of SIGTERM; it may still be \
         finishing calls — look at `exai status`, or stop it with `kill -9 {pid}`"
    )]
    StillRunning { pid: u32, waited: Duration },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What the daemon of this EXAI_HOME says of itself at `/healthz`, over its socket; `None` when
/// nobody answers there. Bounded by the caller.
pub async fn health(config: &Config) -> Option<serde_json::Value> {
    let mut stream = UnixStream::connect(config.socket_path()).await.ok()?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut answer = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut answer).await.ok()?;
    let text = String::from_utf8_lossy(&answer);
    let (_, body) = text.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

/// What to say when this exai (`ours`: a binary, or a client's shim) and the daemon (`daemon`)
/// are different versions; `None` when they are the same. [`RESTART_ADVICE`] says what to do.
pub fn version_skew(ours: &str, daemon: &str) -> Option<String> {
    (ours != daemon)
        .then(|| format!("the running exai daemon is version {daemon} and this exai is {ours}"))
}

/// What to do about a version skew.
pub const RESTART_ADVICE: &str = "run `exai daemon restart` when its calls are done";

/// What stopping found.
pub struct Stopped {
    pub pid: u32,
    /// Where it listened.
    pub listen: String,
    pub waited: Duration,
    /// The calls that were running and ended as interrupted.
    pub interrupted: Vec<CallRow>,
}

/// Stops the daemon of this EXAI_HOME, if one runs: SIGTERM, then waits while it finishes its
/// calls within the grace. Blocking: call from a blocking thread.
pub fn stop(config: &Config) -> Result<Option<Stopped>, ControlError> {
    let Some(info) = DaemonInfo::read(config).filter(|_| lock_is_held(config)) else {
        return Ok(None);
    };
    let asked_at_ms = now_ms();
    let started = std::time::Instant::now();
    let pid = info.pid;
    let signalled = i32::try_from(pid).map_or(-1, |pid| {
        // SAFETY: kill(2) with a pid read from our own daemon.json and a fixed signal.
        unsafe { libc::kill(pid, libc::SIGTERM) }
    });
    if signalled != 0 {
        return Err(ControlError::Signal {
            pid,
            source: std::io::Error::last_os_error(),
        });
    }
    let limit = config.shutdown_grace + EXIT_MARGIN;
    while lock_is_held(config) {
        if started.elapsed() >= limit {
            return Err(ControlError::StillRunning { pid, waited: limit });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Some(Stopped {
        pid,
        listen: info.listen,
        waited: started.elapsed(),
        interrupted: interrupted_since(config, pid, asked_at_ms),
    }))
}

/// The calls of process `pid` that ended interrupted since `since_ms` (none when the store
/// cannot be read: the stop itself went well).
fn interrupted_since(config: &Config, pid: u32, since_ms: i64) -> Vec<CallRow> {
    let rows = StoreReader::open_at(&config.store).and_then(|store| {
        store.list(&CallFilter {
            failed_only: true,
            limit: 1000,
            ..Default::default()
        })
    });
    rows.unwrap_or_default()
        .into_iter()
        .filter(|row| {
            row.state == CallState::Interrupted
                && row.owner_pid == i64::from(pid)
                && row.finished_at_ms.is_some_and(|at| at >= since_ms)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_skew_names_both_versions() {
        assert_eq!(version_skew("0.2.0", "0.2.0"), None);
        assert_eq!(
            version_skew("0.2.0", "0.1.0").as_deref(),
            Some("the running exai daemon is version 0.1.0 and this exai is 0.2.0")
        );
    }
}
