//! `exai keys set|list|rm`: provider keys in the keys file, shown only masked.

use std::io::{BufRead, Write};
use std::path::Path;

use serde_json::json;

use crate::config::Secret;
use crate::config::keys::{self, Keys, KeysError};

/// Why a `keys` command failed. No message quotes a key.
#[derive(Debug, thiserror::Error)]
pub enum KeysCliError {
    #[error(transparent)]
    File(#[from] KeysError),
    #[error("unknown provider {0:?}; known: {known}", known = keys::provider_names())]
    UnknownProvider(String),
    #[error("no key given (an empty key is not stored)")]
    Empty,
    #[error("cancelled: no key stored")]
    Cancelled,
    #[error("cannot read the key: {0}")]
    Input(std::io::Error),
    #[error("{0}")]
    Output(#[from] std::io::Error),
    #[error(
        "no config directory: set EXAI_CONFIG, XDG_CONFIG_HOME or HOME (the keys file lives beside the config file)"
    )]
    NoLocation,
    /// The config file, read for the variable each provider's key comes from.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// What a running daemon does with the change, in words (it watches the keys file).
const DAEMON_FOLLOWS: &str = "a running daemon that reads this keys file picks the change up by \
     itself; `exai reload` applies it at once";

/// The keys file of this process's environment.
pub fn keys_file() -> Result<std::path::PathBuf, KeysCliError> {
    keys::location(|var| std::env::var(var).ok().filter(|v| !v.trim().is_empty()))
        .ok_or(KeysCliError::NoLocation)
}

fn known(provider: &str) -> Result<(), KeysCliError> {
    keys::override_vars(provider)
        .map(|_| ())
        .ok_or_else(|| KeysCliError::UnknownProvider(provider.into()))
}

/// The variables each provider's key is read from as the configuration reads them: the
/// environment over the config file, so `GLM_API_KEY_ENV=MY_KEY` (or `api_key_env`) names
/// MY_KEY, not the built-in GLM_API_KEY.
fn key_vars() -> Result<impl Fn(&str) -> Vec<String>, KeysCliError> {
    let get = crate::config::env_over_file(crate::config::process_env)?;
    Ok(move |provider: &str| crate::config::key_vars(provider, &get).unwrap_or_default())
}

/// "…wxyz" for a key long enough that its last four characters say little; else its length.
fn masked(key: &Secret) -> String {
    let chars: Vec<char> = key.expose().chars().collect();
    if chars.len() >= 12 {
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("…{tail}")
    } else {
        format!("{} characters", chars.len())
    }
}

/// The first of `vars` set in the environment.
fn set_in_environment(vars: &[String]) -> Option<&str> {
    vars.iter()
        .map(String::as_str)
        .find(|var| crate::config::process_env(var).is_some())
}

/// `exai keys set PROVIDER`: the key from stdin (a pipe) or typed at a prompt without echo.
pub fn set(path: &Path, provider: &str, out: &mut impl Write) -> Result<(), KeysCliError> {
    known(provider)?;
    let vars = key_vars()?(provider);
    // A file exai would refuse is named before the key is asked for.
    keys::read(path)?;
    let key = Secret::new(read_key(provider)?);
    let shown = masked(&key);
    keys::update(path, |stored| {
        stored.set(provider, key);
        true
    })?;
    writeln!(
        out,
        "{provider}: key stored ({shown}) in {}",
        path.display()
    )?;
    if let Some(var) = set_in_environment(&vars) {
        writeln!(
            out,
            "note: {var} is set in this environment; where it is set, it wins over the keys file"
        )?;
    }
    writeln!(out, "{DAEMON_FOLLOWS}")?;
    Ok(())
}

/// `exai keys rm PROVIDER`.
pub fn remove(path: &Path, provider: &str, out: &mut impl Write) -> Result<(), KeysCliError> {
    known(provider)?;
    if keys::update(path, |stored| stored.remove(provider))? {
        writeln!(out, "{provider}: key removed from {}", path.display())?;
        writeln!(out, "{DAEMON_FOLLOWS}")?;
    } else {
        writeln!(out, "{provider}: no key stored in {}", path.display())?;
    }
    Ok(())
}

/// `exai keys list`: each provider, whether its key is set and where the effective one comes from.
pub fn list(path: &Path, as_json: bool, out: &mut impl Write) -> Result<(), KeysCliError> {
    let stored = keys::read(path)?;
    let vars_of = key_vars()?;
    let rows: Vec<serde_json::Value> = keys::providers()
        .map(|(name, _)| row(&stored, name, &vars_of(name)))
        .collect();
    if as_json {
        let value = json!({"keys_file": path, "providers": rows});
        super::write_json(out, &value)?;
        return Ok(());
    }
    writeln!(out, "keys file: {}", path.display())?;
    for row in &rows {
        let name = row["provider"].as_str().unwrap_or("?");
        let line = match (row["set"].as_bool(), row["from"].as_str()) {
            (Some(true), Some(from)) => {
                let mut line = format!("set ({}) from {from}", row["shown"].as_str().unwrap_or(""));
                if row["stored_but_overridden"] == true {
                    line.push_str(" (the keys file's key is not used)");
                }
                line
            }
            _ => format!(
                "not set (exai keys set {name}, or {})",
                row["variables"]
                    .as_array()
                    .map(|v| v
                        .iter()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(" or "))
                    .unwrap_or_default()
            ),
        };
        writeln!(out, "{name:<12} {line}")?;
    }
    Ok(())
}

/// One provider's line of `exai keys list`, as JSON: never the key, only its masked form.
fn row(stored: &Keys, name: &str, vars: &[String]) -> serde_json::Value {
    let from_file = stored.get(name);
    let env_var = set_in_environment(vars);
    let (set, shown, from) = match (env_var, from_file) {
        (Some(var), _) => {
            let key = Secret::new(
                crate::config::process_env(var)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            );
            (
                true,
                Some(masked(&key)),
                Some(format!("environment variable {var}")),
            )
        }
        (None, Some(key)) => (true, Some(masked(key)), Some("keys file".to_string())),
        (None, None) => (false, None, None),
    };
    json!({
        "provider": name,
        "set": set,
        "shown": shown,
        "from": from,
        "stored_but_overridden": from_file.is_some() && env_var.is_some(),
        "variables": vars,
    })
}

/// The key: one line of stdin when it is not a terminal, else typed at a prompt without echo.
fn read_key(provider: &str) -> Result<String, KeysCliError> {
    let stdin = std::io::stdin();
    let terminal = std::io::IsTerminal::is_terminal(&stdin);
    let mut line = String::new();
    if terminal {
        // Quiet before the prompt shows: a key typed (or Ctrl-C) the moment it appears is
        // already read the quiet way.
        let echo_off = EchoOff::new(libc::STDIN_FILENO).map_err(KeysCliError::Input)?;
        let mut prompt = std::io::stderr();
        write!(prompt, "{provider} API key (not shown): ")?;
        prompt.flush()?;
        let read = typed_line(&mut stdin.lock(), &mut line);
        drop(echo_off);
        // The newline typed was not echoed either.
        writeln!(prompt)?;
        if !read.map_err(KeysCliError::Input)? {
            return Err(KeysCliError::Cancelled);
        }
    } else {
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(KeysCliError::Input)?;
    }
    let key = line.trim().to_string();
    if key.is_empty() {
        return Err(KeysCliError::Empty);
    }
    Ok(key)
}

/// Reads a line typed at a terminal in raw mode into `line`: Enter ends it, Backspace takes
/// back a character, Ctrl-D on an empty line ends it empty; `false` when Ctrl-C cancels it.
/// (Read byte by byte: with the terminal's own signals off, Ctrl-C arrives as a byte rather
/// than killing exai before the echo is turned back on.)
fn typed_line(input: &mut impl std::io::Read, line: &mut String) -> std::io::Result<bool> {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if input.read(&mut byte)? == 0 {
            break;
        }
        match byte[0] {
            b'\r' | b'\n' => break,
            0x03 => return Ok(false),
            0x04 if bytes.is_empty() => break,
            0x7f | 0x08 => {
                // A whole UTF-8 character goes.
                while bytes.pop().is_some_and(|b| b & 0xC0 == 0x80) {}
            }
            other => bytes.push(other),
        }
    }
    line.push_str(&String::from_utf8_lossy(&bytes));
    Ok(true)
}

/// The terminal's echo turned off (and its line editing and signals: see [`typed_line`]);
/// turned back on when dropped, whatever path leaves.
struct EchoOff {
    fd: libc::c_int,
    saved: libc::termios,
}

impl EchoOff {
    fn new(fd: libc::c_int) -> std::io::Result<Self> {
        // SAFETY: termios is plain data; tcgetattr fills it or fails, and is checked.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut quiet = saved;
        quiet.c_lflag &= !(libc::ECHO | libc::ICANON | libc::ISIG);
        quiet.c_cc[libc::VMIN] = 1;
        quiet.c_cc[libc::VTIME] = 0;
        // SAFETY: a termios read from this descriptor, with one flag changed.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self { fd, saved })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `new` on the same descriptor.
        unsafe {
            libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(bytes: &[u8]) -> Option<String> {
        let mut line = String::new();
        typed_line(&mut &bytes[..], &mut line)
            .unwrap()
            .then_some(line)
    }

    #[test]
    fn a_typed_key_takes_backspace_and_ctrl_c_cancels_it() {
        assert_eq!(typed(b"sk-ab\x7fc\r").as_deref(), Some("sk-ac"));
        assert_eq!(typed("clé\x7f\x7fe\n".as_bytes()).as_deref(), Some("ce"));
        assert_eq!(typed(b"\x04").as_deref(), Some(""));
        assert_eq!(typed(b"sk-half\x03more\r"), None);
    }
}
