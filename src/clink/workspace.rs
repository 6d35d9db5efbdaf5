//! The empty directory a sub-agent runs in. A CLI agent loads configuration from its working
//! directory (Claude Code's `.claude/settings.json` with hooks, `env` and `apiKeyHelper`, Gemini
//! CLI's `.gemini/settings.json` with `mcpServers`, `.env` files…), so it never runs inside a
//! repository cloned from anywhere: it runs here, in a directory of exai's own home, and is handed
//! the repository as an extra directory. The directory is made for one run and removed after it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Directories a run of this process works in now: a name in use is never handed out twice.
fn live() -> &'static Mutex<HashSet<PathBuf>> {
    static LIVE: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    LIVE.get_or_init(|| Mutex::new(HashSet::new()))
}

/// An empty directory made for one run; removed (with whatever the agent left in it) on drop.
#[derive(Debug)]
pub struct Workspace {
    path: PathBuf,
    /// Whether it got the name asked for (not a fresh one, that name being in use).
    as_named: bool,
}

/// The parent of every workspace under exai's home.
pub fn root(home: &Path) -> PathBuf {
    home.join("agents")
}

/// A name fit for a path component: letters, digits, `-` and `_` only.
fn plain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Workspace {
    /// Makes `root/name` afresh (blocking: it touches the disk). The same name is the same
    /// directory for a later run, which is how a CLI that finds its sessions by directory
    /// (Claude Code, Gemini CLI) resumes one. A leftover of a run that never cleaned up (a killed
    /// daemon) is removed first; a name another run of this process holds, or one that is not
    /// plain, gets a fresh name instead ([`Workspace::as_named`] says which).
    pub fn make(root: &Path, name: &str) -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)?;
        if !std::fs::symlink_metadata(root)?.is_dir() {
            return Err(std::io::Error::other(format!(
                "{} is not a directory",
                root.display()
            )));
        }
        let mut live = live().lock().unwrap_or_else(|p| p.into_inner());
        let asked = root.join(name);
        let (path, as_named) = if plain(name) && !live.contains(&asked) {
            (asked, true)
        } else {
            (root.join(uuid::Uuid::now_v7().to_string()), false)
        };
        match std::fs::remove_dir_all(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        live.insert(path.clone());
        Ok(Self { path, as_named })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this is the directory named as asked (a session kept under it can resume).
    pub fn as_named(&self) -> bool {
        self.as_named
    }

    /// Removes it now, waiting until it is gone (dropped instead, it goes in the background).
    pub async fn remove(mut self) {
        let path = std::mem::take(&mut self.path);
        let _ = crate::spawn::blocking(move || remove(&path)).await;
    }
}

/// Removes `path` and lets its name be used again (blocking).
fn remove(path: &Path) {
    // remove_dir_all follows no link the agent may have left inside.
    if let Err(e) = std::fs::remove_dir_all(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "a sub-agent's working directory could not be removed");
    }
    live()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(path);
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let path = std::mem::take(&mut self.path);
        if path.as_os_str().is_empty() {
            return;
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            drop(crate::spawn::blocking(move || remove(&path)));
        } else {
            remove(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workspace_is_made_empty_kept_apart_while_in_use_and_removed_after() {
        let home = crate::scratch::scratch_dir("ws");
        let root = root(&home);
        // A leftover of a run that never cleaned up, with what its agent wrote.
        std::fs::create_dir_all(root.join("t-1-claude/sub")).unwrap();
        std::fs::write(root.join("t-1-claude/sub/x"), "old").unwrap();
        let first = Workspace::make(&root, "t-1-claude").unwrap();
        assert!(first.as_named());
        assert_eq!(first.path(), root.join("t-1-claude"));
        assert_eq!(std::fs::read_dir(first.path()).unwrap().count(), 0);
        let second = Workspace::make(&root, "t-1-claude").unwrap();
        assert!(!second.as_named(), "a name in use is not handed out twice");
        let hostile = Workspace::make(&root, "../../etc").unwrap();
        assert!(!hostile.as_named() && hostile.path().starts_with(&root));
        let (kept, other) = (first.path().to_path_buf(), second.path().to_path_buf());
        std::fs::write(kept.join("scratch"), "written by the agent").unwrap();
        drop(first);
        drop(second);
        assert!(!kept.exists() && !other.exists());
        assert!(Workspace::make(&root, "t-1-claude").unwrap().as_named());
        let _ = std::fs::remove_dir_all(home);
    }
}
