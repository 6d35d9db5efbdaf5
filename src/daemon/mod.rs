//! `exai daemon`: the shared long-running server (WebSocket, Streamable HTTP, health).
//!
//! Start-up: state dir (private), lock, token, store, listeners (TCP and `EXAI_HOME/daemon.sock`),
//! routes. Shutdown: stop accepting, let calls finish for the grace period, interrupt the rest,
//! close sessions, remove the socket.

mod auth;
pub mod control;
mod held_head;
mod http;
pub mod local_socket;
mod page;
pub mod proof;
mod reload;
mod serve;
mod session_owners;
mod ws;

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::config::Config;
use crate::health::Health;
use crate::store::StoreError;

use auth::Listener;
pub use auth::{load_or_create_token, read_token};

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(
        "another exai daemon is running for {home} (pid {pid}, listening on {listen}); stop it or use another EXAI_HOME"
    )]
    AlreadyRunning {
        home: PathBuf,
        pid: u32,
        listen: String,
    },
    #[error(
        "refusing to listen on {0}: it is not a loopback address; pass --allow-remote if you really mean it"
    )]
    NotLoopback(SocketAddr),
    #[error(
        "EXAI_METRICS_PUBLIC serves /metrics without a token, so it is refused when the daemon \
         can be reached beyond this machine ({why}); unset it and give Prometheus a token \
         (Authorization: Bearer …), or listen on loopback"
    )]
    MetricsNotLocal { why: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Socket(#[from] local_socket::SocketError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a running daemon writes about itself to `EXAI_HOME/daemon.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub pid: u32,
    pub listen: String,
    pub version: String,
    pub started_at_ms: i64,
}

impl DaemonInfo {
    pub fn read(config: &Config) -> Option<Self> {
        let text = std::fs::read_to_string(config.daemon_info_path()).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// What the daemon holding a home's lock writes in the lock file: which process it is, and,
/// when it stopped on an error, that error. `exai doctor` and `exai status` read it when no
/// daemon answers: a daemon that failed while starting (its store unreachable, its port taken)
/// has not written `daemon.json` yet, and an autostarted one has no terminal to say why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockNote {
    pub pid: u32,
    /// The error the daemon stopped on, if it stopped on one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_on: Option<String>,
    /// When it was written.
    pub at_ms: i64,
}

impl LockNote {
    pub fn read(config: &Config) -> Option<Self> {
        let text = std::fs::read_to_string(config.lock_path()).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn of_this_process(stopped_on: Option<String>) -> Self {
        Self {
            pid: std::process::id(),
            stopped_on,
            at_ms: crate::store::now_ms(),
        }
    }

    /// Replaces the lock file's contents (the lock itself is not the file's contents).
    fn write(&self, lock: &File) {
        use std::os::unix::fs::FileExt;
        let text = serde_json::to_string(self).unwrap_or_default();
        let written = lock
            .set_len(0)
            .and_then(|()| lock.write_all_at(text.as_bytes(), 0));
        if let Err(error) = written {
            tracing::debug!(%error, "cannot write the lock file's note");
        }
    }
}

fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> DaemonError + '_ {
    move |source| DaemonError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates the state directory, or makes an existing one private; refuses another user's.
pub fn prepare_home(config: &Config) -> Result<(), DaemonError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.home)
        .map_err(io_error(&config.home))?;
    local_socket::secure_home(&config.home)?;
    let logs = config.log_dir();
    std::fs::create_dir_all(&logs).map_err(io_error(&logs))
}

/// The header a shim names its exai version in when it connects (`/ws`), so the daemon can say
/// when they differ.
pub const SHIM_VERSION_HEADER: &str = "exai-shim-version";

/// Exit status of a daemon that found another one holding its home (EX_TEMPFAIL): a shim that
/// started it waits for that one instead of reporting a failure.
pub const EXIT_BUSY: u8 = 75;

/// Whether a daemon holds `home`'s lock (running, starting or stopping).
///
/// Probed with a shared lock released at once; a daemon starting at that very moment exits
/// with [`EXIT_BUSY`], which its shim treats as a reason to wait, not a failure.
pub fn lock_is_held(config: &Config) -> bool {
    let Ok(file) = File::open(config.lock_path()) else {
        return false;
    };
    matches!(
        file.try_lock_shared(),
        Err(std::fs::TryLockError::WouldBlock)
    )
}

/// The pid of the daemon holding this home, as far as its files say: its lock note, written the
/// moment it took the lock (`daemon.json` may be a dead daemon's until the new one listens), else
/// `daemon.json` (a daemon of a version that wrote no note).
pub fn holder_pid(config: &Config) -> Option<u32> {
    LockNote::read(config)
        .map(|note| note.pid)
        .or_else(|| DaemonInfo::read(config).map(|info| info.pid))
}

/// Whether process `pid` is stopped (Ctrl-Z in its terminal, or SIGSTOP): it holds its sockets
/// and answers nothing until it gets SIGCONT. Linux only; elsewhere never said.
fn is_stopped(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may hold anything.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state == "T" || state == "t")
}

/// When the daemon holding this home is stopped, it answers nothing: that, and the way out.
pub fn stopped_holder(config: &Config) -> Option<String> {
    let pid = holder_pid(config).filter(|pid| is_stopped(*pid))?;
    Some(format!(
        "the daemon (pid {pid}) is stopped (Ctrl-Z in its terminal, or SIGSTOP): `fg` there or \
         `kill -CONT {pid}` lets it go on"
    ))
}

/// Takes the one-daemon-per-home lock; the lock lasts as long as the returned file.
fn take_lock(config: &Config) -> Result<File, DaemonError> {
    let path = config.lock_path();
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_error(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            let info = DaemonInfo::read(config);
            Err(DaemonError::AlreadyRunning {
                home: config.home.clone(),
                pid: info.as_ref().map(|i| i.pid).unwrap_or(0),
                listen: info.map(|i| i.listen).unwrap_or_else(|| "?".into()),
            })
        }
        Err(std::fs::TryLockError::Error(source)) => Err(DaemonError::Io { path, source }),
    }
}

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(config: Config, allow_remote: bool) -> Result<(), DaemonError> {
    if !config.listen.ip().is_loopback() && !allow_remote {
        return Err(DaemonError::NotLoopback(config.listen));
    }
    if config.metrics_public {
        if !config.listen.ip().is_loopback() {
            return Err(DaemonError::MetricsNotLocal {
                why: format!("it listens on {}", config.listen),
            });
        }
        if allow_remote {
            return Err(DaemonError::MetricsNotLocal {
                why: "it runs with --allow-remote".into(),
            });
        }
    }
    prepare_home(&config)?;
    let lock = take_lock(&config)?;
    LockNote::of_this_process(None).write(&lock);
    let served = serve(config, allow_remote).await;
    if let Err(error) = &served {
        LockNote::of_this_process(Some(error.to_string())).write(&lock);
    }
    served
}

/// Serves from a home whose lock is held until SIGTERM/SIGINT.
async fn serve(config: Config, allow_remote: bool) -> Result<(), DaemonError> {
    let token =
        load_or_create_token(&config.token_path()).map_err(io_error(&config.token_path()))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: config.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| DaemonError::Bind {
        addr: config.listen,
        source,
    })?;
    let config_for_open = config.clone();
    let app = crate::spawn::blocking(move || {
        App::open(
            config_for_open,
            Health::new("daemon", Some(local.to_string())),
        )
    })
    .await
    .map_err(|e| DaemonError::Io {
        path: config.store_path(),
        source: std::io::Error::other(e),
    })??;
    let info = DaemonInfo {
        pid: std::process::id(),
        listen: local.to_string(),
        version: crate::VERSION.into(),
        started_at_ms: crate::store::now_ms(),
    };
    // Before the daemon is announced: a config written once it is up is a change, not its start.
    reload::remember_start(&app);
    reload::watch(app.clone());
    // Bound once the store is open, so a shim that finds the socket is served at once.
    // The file is removed when `run` returns, whatever the way.
    let (socket, _socket_file) = local_socket::bind(&config.socket_path()).await?;
    write_daemon_info(&config, &info)?;
    tracing::info!(listen = %local, socket = %config.socket_path().display(), pid = info.pid, home = %config.home.display(), "exai daemon listening");
    crate::allocator::settle();
    spawn_pruning(app.clone());
    app.run_replica();
    app.discover_models();
    // Started: opening the store, migrations and catalogs are done with.
    let released = crate::memory::release_startup_code();
    tracing::debug!(bytes = released, "start-up code pages released");

    let router = http::router(app.clone(), Arc::new(token), allow_remote);
    let stop_accepting = tokio_util::sync::CancellationToken::new();
    let tcp_server = {
        let stop = stop_accepting.clone();
        let router = router.clone().layer(axum::Extension(Listener::Tcp));
        // Small MCP frames must not wait for Nagle's algorithm (40 ms per answer otherwise).
        // Keep-alive probes after a minute of silence: a peer gone dark (a laptop closed, a
        // network dropped) ends its session within about two minutes instead of never.
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(60))
            .with_interval(Duration::from_secs(10))
            .with_retries(6);
        let listener = listener.tap_io(move |tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
            if let Err(error) = socket2::SockRef::from(&*tcp).set_tcp_keepalive(&keepalive) {
                tracing::debug!(%error, "cannot set TCP keep-alive");
            }
        });
        crate::spawn::in_span(tracing::Span::none(), serve::serve(listener, router, stop))
    };
    // The same routes, token and Host checks: the shim sends `Host: localhost` over the socket.
    let socket_server = {
        let stop = stop_accepting.clone();
        let router = router.layer(axum::Extension(Listener::Socket));
        crate::spawn::in_span(tracing::Span::none(), serve::serve(socket, router, stop))
    };
    let signal = wait_for_signal().await;
    // The grace follows the config: the one in effect now.
    let grace = app.settings().config.shutdown_grace;
    tracing::info!(
        signal,
        grace_s = grace.as_secs(),
        "shutting down: no new connections"
    );
    stop_accepting.cancel();
    app.calls.drain(grace).await;
    app.calls.settle_records().await;
    app.leave().await;
    // Let the last answers reach their clients before the sessions close.
    settle("answers to be written", Duration::from_secs(3), || {
        app.health.answers_pending() == 0
    })
    .await;
    app.shutdown.cancel();
    settle("sessions to close", Duration::from_secs(2), || {
        app.health.sessions() == 0
    })
    .await;
    let servers = async {
        let _ = tcp_server.await;
        let _ = socket_server.await;
    };
    if tokio::time::timeout(Duration::from_secs(3), servers)
        .await
        .is_err()
    {
        tracing::warn!("connections still open after shutdown; leaving them");
    }
    let _ = std::fs::remove_file(config.daemon_info_path());
    tracing::info!("exai daemon stopped");
    Ok(())
}

/// Waits (polling, bounded: this is shutdown) until `done` holds.
async fn settle(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let until = tokio::time::Instant::now() + limit;
    while !done() {
        if tokio::time::Instant::now() >= until {
            tracing::warn!("shutdown: gave up waiting for {what}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn write_daemon_info(config: &Config, info: &DaemonInfo) -> Result<(), DaemonError> {
    let path = config.daemon_info_path();
    let tmp = path.with_extension("json.tmp");
    let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
    file.write_all(
        serde_json::to_string_pretty(info)
            .unwrap_or_default()
            .as_bytes(),
    )
    .map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_error(&path))
}

async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the daemon with kill -9");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// Applies the retention limits every hour.
fn spawn_pruning(app: Arc<App>) {
    crate::spawn::in_span(tracing::Span::none(), async move {
        let mut every = tokio::time::interval(Duration::from_secs(3600));
        every.tick().await;
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = app.shutdown.cancelled() => return,
            }
            let config = app.settings().config.clone();
            let pruned = app
                .calls
                .store()
                .read(move |store| {
                    store.apply_retention(
                        config.retention_max_age,
                        config.retention_max_rows,
                        config.result_ttl,
                    )
                })
                .await;
            match pruned {
                Ok(n) if n > 0 => tracing::info!(records = n, "old call records pruned"),
                Err(error) => tracing::warn!(%error, "pruning call records failed"),
                _ => {}
            }
        }
    });
}
