//! Controlling the daemon of an EXAI_HOME from outside it. Stopping (`exai daemon stop`,
//! `restart`, a shim that meets a daemon of another version): SIGTERM, a bounded wait while its
//! calls finish within the grace, and the calls it had to interrupt, read from the store.
//! Asking (`exai reload`, the shim's look at a daemon's calls): one HTTP request over its socket.

use std::time::Duration;

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
    #[error("no exai daemon answers on {0}")]
    NotRunning(String),
    #[error("the exai daemon answered HTTP {status}: {body}")]
    Refused { status: u16, body: String },
}

/// How long one request over the socket may take, the daemon's work included (a reload reads
/// files and builds clients).
const ASK_LIMIT: Duration = Duration::from_secs(10);

/// `method path` asked of this EXAI_HOME's daemon over its socket (with its token: as the
/// owner), and the JSON it answered.
pub async fn ask(
    config: &Config,
    method: &str,
    path: &str,
    as_owner: bool,
) -> Result<serde_json::Value, ControlError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = config.socket_path();
    let not_running = || ControlError::NotRunning(socket.display().to_string());
    let authorization = if as_owner {
        let token = match tokio::fs::read_to_string(config.token_path()).await {
            Ok(token) => token,
            // A daemon writes the token at its first start: without one, none has run here.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_running()),
            Err(e) => return Err(e.into()),
        };
        format!("Authorization: Bearer {}\r\n", token.trim())
    } else {
        String::new()
    };
    let exchange = async {
        let mut stream = super::local_socket::connect(&socket)
            .await
            .map_err(|_| not_running())?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{authorization}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.take(1024 * 1024).read_to_end(&mut answer).await?;
        Ok::<_, ControlError>(answer)
    };
    let answer = tokio::time::timeout(ASK_LIMIT, exchange)
        .await
        .map_err(|_| not_running())??;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(not_running)?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(not_running)?;
    if status != 200 {
        return Err(ControlError::Refused {
            status,
            body: body.trim().chars().take(400).collect(),
        });
    }
    serde_json::from_str(body).map_err(|e| ControlError::Refused {
        status,
        body: format!("not JSON ({e})"),
    })
}

/// What the daemon of this EXAI_HOME says of itself at `/healthz`, over its socket; `None` when
/// nobody answers there. Bounded by the caller.
pub async fn health(config: &Config) -> Option<serde_json::Value> {
    ask(config, "GET", "/healthz", false).await.ok()
}

/// What the daemon this config reaches says at `/healthz`: the one `EXAI_URL` names, else
/// this EXAI_HOME's own over its socket (never whatever listens on a TCP port, which may be
/// another home's daemon). `None` when nobody answers within `wait`.
pub async fn health_within(
    config: &Config,
    wait: std::time::Duration,
) -> Option<serde_json::Value> {
    let asking = async {
        match config.daemon_url.as_deref() {
            None => health(config).await,
            Some(url) => {
                let answer = reqwest::Client::new()
                    .get(healthz_url(url)?)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())?;
                answer.json().await.ok()
            }
        }
    };
    tokio::time::timeout(wait, asking).await.ok().flatten()
}

/// `ws://host:port/ws` → `http://host:port/healthz` (`wss` → `https`).
pub fn healthz_url(url: &str) -> Option<reqwest::Url> {
    let mut parsed = reqwest::Url::parse(url).ok()?;
    let scheme = match parsed.scheme() {
        "ws" | "http" => "http",
        "wss" | "https" => "https",
        _ => return None,
    };
    parsed.set_scheme(scheme).ok()?;
    parsed.set_path("/healthz");
    parsed.set_query(None);
    Some(parsed)
}

/// The version of the running daemon: what `daemon.json` says (what shims compare with), else
/// what it answered at `/healthz`.
pub fn running_version(
    info: Option<&super::DaemonInfo>,
    health: Option<&serde_json::Value>,
) -> Option<String> {
    info.map(|i| i.version.clone())
        .or_else(|| health?["version"].as_str().map(str::to_string))
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
    let signal = |signal| {
        i32::try_from(pid).map_or(-1, |pid| {
            // SAFETY: kill(2) with a pid read from our own daemon.json and a fixed signal.
            unsafe { libc::kill(pid, signal) }
        })
    };
    if signal(libc::SIGTERM) != 0 {
        return Err(ControlError::Signal {
            pid,
            source: std::io::Error::last_os_error(),
        });
    }
    // A stopped daemon (Ctrl-Z, SIGSTOP) acts on nothing until it goes on: let it go on to stop,
    // as a shell does for a stopped job it kills.
    if super::is_stopped(pid) {
        signal(libc::SIGCONT);
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
