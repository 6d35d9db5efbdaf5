//! A client's configuration file read and changed with care: regular files only (never through a
//! symlink), a bounded size, the file as it was kept as `<file>.exai-backup`, the new one written
//! to a temporary file beside it and renamed over it with the old file's mode.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::ClientError;

/// Larger than any client configuration (Claude Code's `~/.claude.json` grows with its history).
pub const MAX_CONFIG_BYTES: u64 = 64 * 1024 * 1024;

/// The mode of a configuration file exai creates: other servers' entries may hold tokens.
const NEW_FILE_MODE: u32 = 0o600;

/// The text of the configuration file at `path`, `None` when there is none. A symlink, a file
/// that is not regular, larger than `limit` or not UTF-8 is refused.
pub fn read_text(path: &Path, limit: u64) -> Result<Option<String>, ClientError> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ClientError::file(path, e)),
    };
    if metadata.file_type().is_symlink() {
        return Err(ClientError::Symlink {
            path: path.display().to_string(),
        });
    }
    if !metadata.is_file() {
        return Err(ClientError::file(path, "not a regular file"));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| ClientError::file(path, e))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ClientError::file(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(ClientError::file(
            path,
            format!("larger than {limit} bytes; not a configuration file exai edits"),
        ));
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| ClientError::Unparsable {
            path: path.display().to_string(),
            why: "not UTF-8 text".into(),
        })
}

/// One file's change: its text before (`None`: no file) and after (`None`: the file goes).
#[derive(Debug, Clone)]
pub struct FileEdit {
    pub path: PathBuf,
    pub before: Option<String>,
    pub after: Option<String>,
    /// Something a person should know about the change (e.g. the layout was rewritten).
    pub note: Option<String>,
}

impl FileEdit {
    /// `<file>.exai-backup`: the file as it was before exai's last change.
    pub fn backup_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".exai-backup");
        PathBuf::from(name)
    }

    /// The change as a unified diff of the file.
    pub fn diff(&self) -> String {
        let before = self.before.as_deref().unwrap_or("");
        let after = self.after.as_deref().unwrap_or("");
        let shown = self.path.display().to_string();
        let old = if self.before.is_some() {
            format!("a{shown}")
        } else {
            "/dev/null".to_string()
        };
        let new = if self.after.is_some() {
            format!("b{shown}")
        } else {
            "/dev/null".to_string()
        };
        similar::TextDiff::from_lines(before, after)
            .unified_diff()
            .context_radius(3)
            .header(&old, &new)
            .to_string()
    }

    /// Makes the change: the file as it was kept in the backup (when there was one), then the
    /// new text written atomically with the old file's mode (or the file removed). Returns the
    /// backup's path. Refuses when the file changed since it was read.
    pub fn apply(&self) -> Result<Option<PathBuf>, ClientError> {
        let now = read_text(&self.path, MAX_CONFIG_BYTES)?;
        if now != self.before {
            return Err(ClientError::ChangedMeanwhile {
                path: self.path.display().to_string(),
            });
        }
        let mode = match std::fs::metadata(&self.path) {
            Ok(m) => m.permissions().mode() & 0o7777,
            Err(_) => NEW_FILE_MODE,
        };
        let backup = match &self.before {
            Some(before) => {
                let backup = self.backup_path();
                refuse_symlink(&backup)?;
                write_atomically(&backup, before.as_bytes(), mode)?;
                Some(backup)
            }
            None => None,
        };
        match &self.after {
            Some(after) => {
                if let Some(dir) = self.path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| ClientError::file(dir, e))?;
                }
                write_atomically(&self.path, after.as_bytes(), mode)?;
            }
            None => {
                std::fs::remove_file(&self.path).map_err(|e| ClientError::file(&self.path, e))?
            }
        }
        Ok(backup)
    }
}

/// Keeps `path` as it is now in `<path>.exai-backup` (before a client's own CLI changes it).
/// Returns the backup's path, `None` when there is no file.
pub fn back_up(path: &Path) -> Result<Option<PathBuf>, ClientError> {
    let Some(text) = read_text(path, MAX_CONFIG_BYTES)? else {
        return Ok(None);
    };
    let edit = FileEdit {
        path: path.to_path_buf(),
        before: Some(text.clone()),
        after: Some(text),
        note: None,
    };
    let backup = edit.backup_path();
    refuse_symlink(&backup)?;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(NEW_FILE_MODE);
    write_atomically(
        &backup,
        edit.before.as_deref().unwrap_or("").as_bytes(),
        mode,
    )?;
    Ok(Some(backup))
}

fn refuse_symlink(path: &Path) -> Result<(), ClientError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(ClientError::Symlink {
            path: path.display().to_string(),
        }),
        _ => Ok(()),
    }
}

/// `bytes` into `path` through a new temporary file in the same directory, renamed over it.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ClientError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.exai-{}-{}", std::process::id(), nonce()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temp)?;
        // The mode asked at creation passes through the umask; the old file's is wanted whole.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(ClientError::file(path, e));
    }
    Ok(())
}

/// A number that makes a temporary name unlikely to be taken.
fn nonce() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        crate::scratch::scratch_dir("files")
    }

    #[test]
    fn an_edit_keeps_a_backup_and_the_mode() {
        let dir = temp_dir();
        let path = dir.join("config.toml");
        std::fs::write(&path, "a = 1\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let edit = FileEdit {
            path: path.clone(),
            before: read_text(&path, MAX_CONFIG_BYTES).expect("read"),
            after: Some("a = 2\n".into()),
            note: None,
        };
        assert!(edit.diff().contains("-a = 1\n+a = 2\n"), "{}", edit.diff());
        let backup = edit.apply().expect("apply").expect("a backup");
        assert_eq!(std::fs::read_to_string(&backup).expect("backup"), "a = 1\n");
        assert_eq!(std::fs::read_to_string(&path).expect("file"), "a = 2\n");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        // Nothing else was left in the directory.
        assert_eq!(std::fs::read_dir(&dir).expect("ls").count(), 2);
        // A file changed after it was read is not overwritten.
        std::fs::write(&path, "a = 3\n").expect("write");
        assert!(matches!(
            edit.apply(),
            Err(ClientError::ChangedMeanwhile { .. })
        ));
        assert_eq!(std::fs::read_to_string(&path).expect("file"), "a = 3\n");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn symlinks_are_refused() {
        let dir = temp_dir();
        let target = dir.join("real.json");
        std::fs::write(&target, "{}").expect("write");
        let link = dir.join("mcp.json");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert!(matches!(
            read_text(&link, MAX_CONFIG_BYTES),
            Err(ClientError::Symlink { .. })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }
}
