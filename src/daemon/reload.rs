//! The daemon follows its config: a watch on the directories of the config file and the keys
//! file (editors and `exai keys set` replace files by renaming, which a watch on the file itself
//! would lose), debounced, and `POST /reload` (what `exai reload` asks over the socket).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use notify::Watcher;

use crate::app::App;
use crate::config::{Config, ConfigError, keys, process_env};
use crate::users::Caller;

/// Changes closer together than this are read as one (an editor's write, rename and chmod).
const DEBOUNCE: Duration = Duration::from_millis(200);

/// The configuration as the daemon reads it: its own environment over its files.
fn read() -> Result<Config, ConfigError> {
    Config::from_env()
}

/// Reads the configuration again and puts it in place for the next calls.
pub async fn reload(app: &App) -> crate::settings::Reloaded {
    app.settings.reload(read).await
}

/// Remembers the configuration as the daemon's environment and files give it now, so that a
/// command-line override (`--listen`) is not taken for a change of the file.
pub fn remember_start(app: &App) {
    if let Ok(config) = read() {
        app.settings.remember_read(config);
    }
}

/// `POST /reload`: the home's owner only; the answer names what changed, never a value.
pub async fn route(State(app): State<Arc<App>>, Extension(caller): Extension<Caller>) -> Response {
    if caller != Caller::Owner {
        return (
            StatusCode::FORBIDDEN,
            "only the owner of this exai may reload its settings\n",
        )
            .into_response();
    }
    Json(reload(&app).await).into_response()
}

/// The files whose change is a reload: the config file and the keys file beside it, and the
/// file a symlink among them points to (dotfiles kept elsewhere).
fn watched_files() -> Vec<PathBuf> {
    let named: Vec<PathBuf> = crate::config::file_location(process_env)
        .into_iter()
        .chain(keys::location(process_env))
        .collect();
    let targets: Vec<PathBuf> = named
        .iter()
        .filter_map(|file| file.canonicalize().ok())
        .filter(|target| !named.contains(target))
        .collect();
    named.into_iter().chain(targets).collect()
}

/// Watches the config and keys files' directories until shutdown; each settled burst of
/// changes to either file is one reload. A directory that cannot be watched is logged: `exai
/// reload` still works.
pub fn watch(app: Arc<App>) {
    let files = watched_files();
    let (tx, mut changed) = tokio::sync::mpsc::channel::<()>(1);
    let names: Vec<std::ffi::OsString> = files
        .iter()
        .filter_map(|f| f.file_name().map(ToOwned::to_owned))
        .collect();
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let ours = event.paths.iter().any(|path| {
            path.file_name()
                .is_some_and(|name| names.iter().any(|n| n == name))
        });
        if ours && !matches!(event.kind, notify::EventKind::Access(_)) {
            // Full means a reload is already due.
            let _ = tx.try_send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(watcher) => watcher,
        Err(error) => {
            tracing::warn!(%error, "cannot watch the config files; use `exai reload` after a change");
            return;
        }
    };
    let mut dirs: Vec<&Path> = files.iter().filter_map(|f| f.parent()).collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        if let Err(error) = watch_dir(&mut watcher, dir) {
            tracing::warn!(dir = %dir.display(), %error, "cannot watch the config directory; use `exai reload` after a change");
        }
    }
    crate::spawn::in_span(tracing::Span::none(), async move {
        // The watcher lives as long as this task.
        let _watcher = watcher;
        loop {
            tokio::select! {
                got = changed.recv() => if got.is_none() { return },
                _ = app.shutdown.cancelled() => return,
            }
            // Settle: more changes within the debounce are the same edit.
            loop {
                tokio::select! {
                    got = changed.recv() => if got.is_none() { return },
                    _ = tokio::time::sleep(DEBOUNCE) => break,
                    _ = app.shutdown.cancelled() => return,
                }
            }
            tracing::info!("the config or keys file changed: reading it again");
            reload(&app).await;
        }
    });
}

/// Watches `dir` (created private when missing, as `exai keys set` would create it).
fn watch_dir(watcher: &mut impl Watcher, dir: &Path) -> Result<(), notify::Error> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(notify::Error::io)?;
    }
    watcher.watch(dir, notify::RecursiveMode::NonRecursive)
}
