//! The keys file: `keys.toml` beside the config file, `<provider> = "<key>"` per line. It is
//! read only when it is a regular file private to its owner (as ssh reads its keys), and written
//! atomically with mode 0600; no error ever quotes a key.

use std::collections::BTreeMap;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{BUILT_IN_PROVIDERS, Secret, file, settings};

/// The keys file's name, in the config file's directory.
pub const FILE_NAME: &str = "keys.toml";

const CUSTOM_KEY_VARS: &[&str] = &[settings::CUSTOM_API_KEY.var];

/// The providers a key may be stored for, each with the environment variables that override it.
pub fn providers() -> impl Iterator<Item = (&'static str, &'static [&'static str])> {
    BUILT_IN_PROVIDERS
        .iter()
        .map(|p| (p.name, p.key_vars))
        .chain([("custom", CUSTOM_KEY_VARS)])
}

/// The environment variables that override `provider`'s stored key; `None` for no such provider.
pub fn override_vars(provider: &str) -> Option<&'static [&'static str]> {
    providers()
        .find(|(name, _)| *name == provider)
        .map(|(_, vars)| vars)
}

/// The providers' names, for messages.
pub fn provider_names() -> String {
    providers()
        .map(|(name, _)| name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The keys file that goes with the config file at `config_file`.
pub fn beside(config_file: &Path) -> PathBuf {
    config_file
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(FILE_NAME)
}

/// The keys file for the environment seen through `env`, beside wherever the config file is.
pub fn location(env: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    file::location(env("EXAI_CONFIG"), env("XDG_CONFIG_HOME"), env("HOME"))
        .map(|(config_file, _)| beside(&config_file))
}

/// Why the keys file cannot be used. Messages name the file and the fix, never a key.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("keys file {path}: {why}")]
    Io { path: String, why: String },
    #[error(
        "keys file {path} may be read by other users (mode {mode:03o}); refusing to use it. \
         Fix: chmod 600 {path}"
    )]
    Exposed { path: String, mode: u32 },
    #[error(
        "keys file {path} belongs to user {owner}, not to you (user {me}); refusing to use it. \
         Fix: chown it to yourself, or remove it and set the keys again"
    )]
    NotOwned { path: String, owner: u32, me: u32 },
    #[error(
        "keys file {path} is a symlink or not a regular file; refusing to use it. \
         Fix: replace it with a regular file (exai keys set writes one)"
    )]
    NotRegular { path: String },
    #[error(
        "keys file {path}: line {line} is not `provider = \"key\"` (the line is not shown: it may hold a key)"
    )]
    Syntax { path: String, line: usize },
    #[error("keys file {path}: unknown provider {name:?}; known: {known}")]
    UnknownProvider {
        path: String,
        name: String,
        known: String,
    },
}

/// The stored keys by provider name.
#[derive(Debug, Default, Clone)]
pub struct Keys(BTreeMap<String, Secret>);

impl Keys {
    pub fn get(&self, provider: &str) -> Option<&Secret> {
        self.0.get(provider)
    }
    pub fn set(&mut self, provider: &str, key: Secret) {
        self.0.insert(provider.to_string(), key);
    }
    /// Removes `provider`'s key; whether there was one.
    pub fn remove(&mut self, provider: &str) -> bool {
        self.0.remove(provider).is_some()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The file's text: one `provider = "key"` line each.
    fn to_toml(&self) -> String {
        let mut text = String::from(
            "# exai provider keys (exai keys set|list|rm). Keep private: mode 0600.\n",
        );
        for (name, key) in &self.0 {
            text.push_str(&format!("{name} = \"{}\"\n", escaped(key.expose())));
        }
        text
    }
}

/// `text` as the inside of a TOML basic string.
fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

fn io_error(path: &Path, e: std::io::Error) -> KeysError {
    KeysError::Io {
        path: shown(path),
        why: e.to_string(),
    }
}

/// Refuses a file that is not regular, not the caller's, or open to group or others.
fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<(), KeysError> {
    if !meta.file_type().is_file() {
        return Err(KeysError::NotRegular { path: shown(path) });
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(KeysError::NotOwned {
            path: shown(path),
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeysError::Exposed {
            path: shown(path),
            mode,
        });
    }
    Ok(())
}

/// Reads the keys file; a missing one holds no keys.
pub fn read(path: &Path) -> Result<Keys, KeysError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => check_private(path, &meta)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Keys::default()),
        Err(e) => return Err(io_error(path, e)),
    }
    // O_NOFOLLOW and a check of the opened file itself: a swap after the first look is caught.
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => KeysError::NotRegular { path: shown(path) },
            _ => io_error(path, e),
        })?;
    check_private(path, &file.metadata().map_err(|e| io_error(path, e))?)?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| io_error(path, e))?;
    parse(path, &text)
}

fn parse(path: &Path, text: &str) -> Result<Keys, KeysError> {
    let table: BTreeMap<String, String> = toml::from_str(text).map_err(|e| {
        let at = e.span().map_or(0, |span| span.start);
        KeysError::Syntax {
            path: shown(path),
            line: text[..at.min(text.len())].matches('\n').count() + 1,
        }
    })?;
    let mut keys = Keys::default();
    for (name, key) in table {
        if override_vars(&name).is_none() {
            return Err(KeysError::UnknownProvider {
                path: shown(path),
                name,
                known: provider_names(),
            });
        }
        let key = key.trim().to_string();
        if !key.is_empty() {
            keys.set(&name, Secret::new(key));
        }
    }
    Ok(keys)
}

/// Changes the keys file at `path`: read, `change`d, and written back when `change` says it
/// changed something — all under an exclusive lock, so two `exai keys set` at once keep both
/// keys (each read-modify-write alone would write back the file without the other's key).
/// Returns what `change` said.
pub fn update(path: &Path, change: impl FnOnce(&mut Keys) -> bool) -> Result<bool, KeysError> {
    let _held = lock(path)?;
    let mut keys = read(path)?;
    let changed = change(&mut keys);
    if changed {
        write(path, &keys)?;
    }
    Ok(changed)
}

/// The directory of the keys file at `path`, created private (0700) if missing.
fn private_dir_of(path: &Path) -> Result<&Path, KeysError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_error(dir, e))?;
    Ok(dir)
}

/// The lock of the keys file at `path`: `.keys.toml.lock` beside it (the keys file itself is
/// replaced by each write, so it cannot hold a lock), held until the file returned is dropped.
fn lock(path: &Path) -> Result<File, KeysError> {
    let dir = private_dir_of(path)?;
    let lock_path = dir.join(format!(".{FILE_NAME}.lock"));
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&lock_path)
        .map_err(|e| io_error(&lock_path, e))?;
    file.lock().map_err(|e| io_error(&lock_path, e))?;
    Ok(file)
}

/// Writes `keys` to `path` atomically: a new 0600 file in the same directory (created 0700 if
/// missing), synced, then renamed over the old one.
pub fn write(path: &Path, keys: &Keys) -> Result<(), KeysError> {
    let dir = private_dir_of(path)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let temp = dir.join(format!(".{FILE_NAME}.{}.{nanos}.tmp", std::process::id()));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temp)?;
        file.write_all(keys.to_toml().as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        // The rename itself is durable once the directory is synced.
        File::open(dir)?.sync_all()
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        io_error(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir() -> PathBuf {
        crate::scratch::scratch_dir("keys")
    }

    #[test]
    fn keys_are_written_private_and_read_back() {
        let path = temp_dir().join("sub/keys.toml");
        let mut keys = Keys::default();
        keys.set("glm", Secret::new("sk-\"odd\\key".into()));
        keys.set("custom", Secret::new("sk-custom".into()));
        write(&path, &keys).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let back = read(&path).unwrap();
        assert_eq!(back.get("glm").unwrap().expose(), "sk-\"odd\\key");
        assert_eq!(back.get("custom").unwrap().expose(), "sk-custom");
        assert!(back.get("kimi").is_none());
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from(FILE_NAME)]);
    }

    #[test]
    fn changes_made_at_once_are_all_kept() {
        let path = temp_dir().join("sub").join(FILE_NAME);
        let names: Vec<&str> = providers().map(|(name, _)| name).collect();
        const ROUNDS: usize = 40;
        std::thread::scope(|scope| {
            for name in &names {
                let path = &path;
                scope.spawn(move || {
                    for round in 0..ROUNDS {
                        let key = Secret::new(format!("sk-{name}-{round}"));
                        update(path, |keys| {
                            keys.set(name, key);
                            true
                        })
                        .unwrap();
                    }
                });
            }
        });
        let kept = read(&path).unwrap();
        for name in &names {
            assert_eq!(
                kept.get(name).map(Secret::expose),
                Some(format!("sk-{name}-{}", ROUNDS - 1).as_str()),
                "{name}'s last key"
            );
        }
        // Nothing but the file and its lock is left beside it.
        let mut left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, [".keys.toml.lock", FILE_NAME]);
    }

    #[test]
    fn a_missing_file_holds_no_keys() {
        assert!(read(&temp_dir().join(FILE_NAME)).unwrap().is_empty());
    }

    #[test]
    fn an_open_file_a_symlink_and_a_directory_are_refused() {
        let dir = temp_dir();
        let path = dir.join(FILE_NAME);
        std::fs::write(&path, "glm = \"sk-secret-1234\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = read(&path).unwrap_err().to_string();
        assert!(
            error.contains("chmod 600") && error.contains(&shown(&path)),
            "{error}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read(&path).is_ok());

        let link = dir.join("link.toml");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let error = read(&link).unwrap_err();
        assert!(matches!(error, KeysError::NotRegular { .. }), "{error}");

        let error = read(&dir).unwrap_err();
        assert!(matches!(error, KeysError::NotRegular { .. }), "{error}");
    }

    #[test]
    fn mistakes_are_named_without_quoting_the_key() {
        let path = temp_dir().join(FILE_NAME);
        let error = parse(&path, "glm = \"sk-secret-1234\"\nkimi = sk-bare-5678\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 2"), "{error}");
        assert!(!error.contains("sk-"), "{error}");
        let error = parse(&path, "gpt = \"sk-secret-1234\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("\"gpt\"") && error.contains("openrouter"),
            "{error}"
        );
        assert!(!error.contains("sk-"), "{error}");
    }
}
