//! The MCP clients exai sets itself up in: where each keeps its MCP servers, exai's entry there
//! (read, written, removed), and what the client waits for a tool answer.
//!
//! One file per client behind the [`Client`] trait; `files.rs` holds the careful file edit every
//! client shares (no symlinks, no clobbering a broken file, a backup, an atomic write) and
//! `json.rs` the `mcpServers` documents four of them use.

pub mod auggie;
pub mod claude;
pub mod codex;
pub mod cursor;
pub mod files;
pub mod gemini;
pub mod json;
pub mod patience;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::config::Config;

pub use files::FileEdit;
pub use patience::ClientPatience;

/// The name exai's entry has in every client's configuration.
pub const SERVER_NAME: &str = "exai";

/// Delivery time added to exai's longest call deadline: the client must still be waiting when
/// the deadline's answer (an error or a call handle) arrives.
pub const DELIVERY_MARGIN: Duration = Duration::from_secs(30);

/// Why reading or changing a client's configuration failed. No message quotes a key.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error(
        "{path} is a symbolic link; exai edits only regular files (edit the file it points to by hand, or replace the link)"
    )]
    Symlink { path: String },
    #[error(
        "{path} is a symbolic link (to {target}); exai writes a project's configuration only \
         inside the project, never through a link: remove the link, or set the client up for \
         your user (without --project)"
    )]
    ProjectLink { path: String, target: String },
    #[error(
        "{path} does not parse ({why}); exai leaves a broken file alone: fix it, then run this again"
    )]
    Unparsable { path: String, why: String },
    #[error("{path} changed while exai was editing it; run this again")]
    ChangedMeanwhile { path: String },
    #[error("{client} has no {scope} configuration exai knows of")]
    NoSuchScope {
        client: &'static str,
        scope: &'static str,
    },
    #[error("no home directory: set HOME")]
    NoHome,
    #[error("cannot tell where this exai binary is: {0}")]
    NoExecutable(std::io::Error),
    #[error("`{command}` failed: {why}")]
    Command { command: String, why: String },
}

impl ClientError {
    pub(crate) fn file(path: &Path, why: impl std::fmt::Display) -> Self {
        Self::File {
            path: path.display().to_string(),
            why: why.to_string(),
        }
    }
}

/// Whose configuration: the user's (every project), or one project's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    User,
    Project(PathBuf),
}

impl Scope {
    pub fn word(&self) -> &'static str {
        match self {
            Scope::User => "user",
            Scope::Project(_) => "project",
        }
    }
}

/// The file at `parts` (`.codex`, `config.toml`) below a project's directory `root`, refused
/// when any part of it is a symbolic link: directories are created and files renamed through
/// links, so a cloned repository's `.codex -> ~/.codex` would make a project's set-up edit the
/// user's own configuration. (`root` itself is canonical: links above it are the person's.)
pub fn in_project(root: &Path, parts: &[&str]) -> Result<PathBuf, ClientError> {
    let mut path = root.to_path_buf();
    for part in parts {
        path.push(part);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            let target = std::fs::read_link(&path)
                .map_or_else(|_| "?".to_string(), |t| t.display().to_string());
            return Err(ClientError::ProjectLink {
                path: path.display().to_string(),
                target,
            });
        }
    }
    Ok(path)
}

/// Where clients keep their files, and where their programs are: from the environment.
#[derive(Debug, Clone)]
pub struct Places {
    pub home: PathBuf,
    /// `CODEX_HOME`, else `~/.codex`.
    pub codex_home: PathBuf,
    /// `CLAUDE_CONFIG_DIR`, when set (Claude Code then keeps `.claude.json` and its settings there).
    pub claude_config_dir: Option<PathBuf>,
    /// The directories of `PATH`.
    pub path: Vec<PathBuf>,
}

impl Places {
    /// The places `lookup` (an environment) names.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ClientError> {
        let set = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let home = PathBuf::from(set("HOME").ok_or(ClientError::NoHome)?);
        Ok(Self {
            codex_home: set("CODEX_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(".codex")),
            claude_config_dir: set("CLAUDE_CONFIG_DIR").map(PathBuf::from),
            path: set("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default(),
            home,
        })
    }

    /// The places of this process's environment.
    pub fn from_env() -> Result<Self, ClientError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// `program` as found on PATH (an executable regular file).
    pub fn find_program(&self, program: &str) -> Option<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        self.path
            .iter()
            .map(|dir| dir.join(program))
            .find(|candidate| {
                std::fs::metadata(candidate)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
    }
}

/// exai's entry as a client's configuration holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub command: String,
    pub args: Vec<String>,
    /// The tool timeout set in the entry, where the client has one.
    pub timeout: Option<Duration>,
}

/// The entry `exai setup` writes: this binary, `stdio`, and the timeout exai's deadlines need.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub command: String,
    pub args: Vec<String>,
    pub timeout: Duration,
}

impl Wanted {
    /// The running exai binary (absolute) with `config`'s longest deadline plus delivery.
    pub fn for_this_binary(config: &Config) -> Result<Self, ClientError> {
        let exe = std::env::current_exe().map_err(ClientError::NoExecutable)?;
        Ok(Self {
            command: exe.to_string_lossy().into_owned(),
            args: vec!["stdio".into()],
            timeout: needed_timeout(config),
        })
    }

    /// Whether `entry` launches what this one launches with at least its timeout (a longer one
    /// someone chose is kept). `has_timeout`: the client has a tool timeout in the entry.
    pub fn is_met_by(&self, entry: &Entry, has_timeout: bool) -> bool {
        entry.command == self.command
            && entry.args == self.args
            && (!has_timeout || entry.timeout.is_some_and(|t| t >= self.timeout))
    }
}

/// What a client must wait for a tool answer: exai's longest call deadline, plus delivery.
pub fn needed_timeout(config: &Config) -> Duration {
    config
        .tool_timeouts
        .values()
        .copied()
        .fold(config.call_timeout, Duration::max)
        + DELIVERY_MARGIN
}

/// One run of a client's own CLI.
#[derive(Debug, Clone)]
pub struct CliRun {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Where it runs (a project scope's directory).
    pub dir: Option<PathBuf>,
}

impl CliRun {
    /// The command line as a person would type it.
    pub fn shown(&self) -> String {
        std::iter::once(self.program.to_string_lossy().into_owned())
            .chain(self.args.iter().cloned())
            .map(|word| {
                if word.is_empty() || word.contains(|c: char| c.is_whitespace() || c == '"') {
                    format!("{word:?}")
                } else {
                    word
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs it, its output captured, for at most `CLI_WAIT`; a failure carries its stderr.
    pub fn run(&self) -> Result<String, ClientError> {
        use std::os::unix::process::CommandExt;
        let failed = |why: String| ClientError::Command {
            command: self.shown(),
            why,
        };
        let mut command = std::process::Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A group of its own: what it starts is stopped with it.
            .process_group(0);
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        let mut child = command.spawn().map_err(|e| failed(e.to_string()))?;
        let stdout = read_all(child.stdout.take());
        let stderr = read_all(child.stderr.take());
        let until = Instant::now() + CLI_WAIT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < until => std::thread::sleep(CLI_POLL),
                Ok(None) => {
                    if let Ok(group) = i32::try_from(child.id()) {
                        crate::spawn::signal_group(group, libc::SIGKILL);
                    }
                    let _ = child.wait();
                    return Err(failed(format!(
                        "it did not finish within {} s (waiting for input, a login or the \
                         network?), so it was stopped; run it yourself to see what it waits for",
                        CLI_WAIT.as_secs()
                    )));
                }
                Err(e) => return Err(failed(e.to_string())),
            }
        };
        // Whatever it left running may hold its output open: not waited for long.
        let text = |read: std::sync::mpsc::Receiver<Vec<u8>>| {
            let bytes = read.recv_timeout(CLI_POLL * 50).unwrap_or_default();
            String::from_utf8_lossy(&bytes).trim().to_string()
        };
        if status.success() {
            Ok(text(stdout))
        } else {
            Err(failed(format!("{status}: {}", text(stderr))))
        }
    }
}

/// How long a client's own CLI may take to change its configuration: it only edits a file, so one
/// that runs longer waits for something (a prompt nobody sees, a login, the network).
const CLI_WAIT: Duration = Duration::from_secs(30);
const CLI_POLL: Duration = Duration::from_millis(20);

/// All of `pipe`, read on a thread of its own (a full pipe would stall the program writing it).
fn read_all(
    pipe: Option<impl std::io::Read + Send + 'static>,
) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (done, read) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        let _ = done.send(bytes);
    });
    read
}

/// What setting up (or removing) exai in a client takes.
#[derive(Debug)]
pub enum Plan {
    /// Nothing: it is already as asked.
    Nothing,
    /// One file changed.
    Edit(FileEdit),
    /// The client's own CLI, these commands in order; `file` is the one they change (backed up
    /// first).
    Run {
        file: PathBuf,
        commands: Vec<CliRun>,
    },
}

/// One MCP client: where its configuration lives and how exai's entry is kept there.
pub trait Client: Sync {
    /// The word on exai's command line: `claude`, `codex`, …
    fn id(&self) -> &'static str;
    /// The name a person knows it by.
    fn name(&self) -> &'static str;
    /// Its program, looked for on PATH.
    fn program(&self) -> &'static str;
    /// The directory of its user configuration (it exists once the client ran).
    fn config_dir(&self, places: &Places) -> PathBuf;
    /// The file holding its MCP servers for `scope`.
    fn config_file(&self, places: &Places, scope: &Scope) -> Result<PathBuf, ClientError>;
    /// exai's entry in `scope`, if there is one.
    fn read(&self, places: &Places, scope: &Scope) -> Result<Option<Entry>, ClientError>;
    /// What makes `scope` hold `wanted`.
    fn plan_setup(
        &self,
        places: &Places,
        scope: &Scope,
        wanted: &Wanted,
    ) -> Result<Plan, ClientError>;
    /// What takes exai's entry out of `scope`.
    fn plan_removal(&self, places: &Places, scope: &Scope) -> Result<Plan, ClientError>;
    /// Whether its entry carries a tool timeout (Codex, Gemini CLI).
    fn has_entry_timeout(&self) -> bool {
        false
    }
    /// A timeout set outside the entry that exai cannot meet, with what to do (Claude Code).
    fn timeout_advice(&self, _places: &Places, _needed: Duration) -> Option<String> {
        None
    }
    /// Where the client's tool timeout stands, for `--list`, when it is not in the entry.
    fn timeout_elsewhere(&self, _places: &Places) -> Option<String> {
        None
    }

    /// Installed: its program is on PATH or its configuration directory exists.
    fn installed(&self, places: &Places) -> bool {
        places.find_program(self.program()).is_some() || self.config_dir(places).is_dir()
    }
}

/// Every client exai knows, in the order `--list` shows them.
pub fn all() -> [&'static dyn Client; 5] {
    [
        &claude::ClaudeCode,
        &codex::Codex,
        &cursor::CURSOR,
        &gemini::GEMINI_CLI,
        &auggie::AUGGIE,
    ]
}

/// The client `id` names.
pub fn by_id(id: &str) -> Option<&'static dyn Client> {
    all().into_iter().find(|c| c.id() == id)
}

/// The ids `exai setup` takes, for messages.
pub fn ids() -> String {
    all().iter().map(|c| c.id()).collect::<Vec<_>>().join(", ")
}

/// What the clients' unit tests share.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// This exai at `/opt/exai/bin/exai` needing `secs` of patience.
    pub fn wanted(secs: u64) -> Wanted {
        Wanted {
            command: "/opt/exai/bin/exai".into(),
            args: vec!["stdio".into()],
            timeout: Duration::from_secs(secs),
        }
    }

    /// `plan`, which must be a file edit, made.
    pub fn applied(plan: Plan) -> FileEdit {
        match plan {
            Plan::Edit(edit) => {
                edit.apply().expect("apply");
                edit
            }
            other => panic!("expected an edit, got {other:?}"),
        }
    }
}

/// Whether `command` launches an exai binary: this one, or any program named `exai`.
fn is_exai(command: &str, this_exe: Option<&Path>) -> bool {
    let path = Path::new(command);
    this_exe.is_some_and(|exe| exe == path) || path.file_name().is_some_and(|name| name == "exai")
}

/// Of a client's server entries, the one that launches exai: this binary's first, else any `exai`.
fn launching_exai(entries: impl Iterator<Item = Entry>, this_exe: Option<&Path>) -> Option<Entry> {
    let launching: Vec<Entry> = entries
        .filter(|entry| is_exai(&entry.command, this_exe))
        .collect();
    let exact = launching
        .iter()
        .position(|entry| this_exe.is_some_and(|exe| Path::new(&entry.command) == exe));
    launching.into_iter().nth(exact.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_needed_timeout_is_the_longest_deadline_plus_delivery() {
        let config = Config::from_lookup(|name| match name {
            "EXAI_HOME" => Some("/x".into()),
            "EXAI_TOOL_TIMEOUTS" => Some("chat=900,status=10".into()),
            _ => None,
        })
        .expect("config");
        assert_eq!(needed_timeout(&config), Duration::from_secs(930));
        let plain =
            Config::from_lookup(|name| (name == "EXAI_HOME").then(|| "/x".into())).expect("config");
        assert_eq!(needed_timeout(&plain), plain.call_timeout + DELIVERY_MARGIN);
    }

    #[test]
    fn a_longer_timeout_someone_chose_still_meets_what_exai_wants() {
        let wanted = Wanted {
            command: "/bin/exai".into(),
            args: vec!["stdio".into()],
            timeout: Duration::from_secs(630),
        };
        let entry = |secs: Option<u64>| Entry {
            command: "/bin/exai".into(),
            args: vec!["stdio".into()],
            timeout: secs.map(Duration::from_secs),
        };
        assert!(wanted.is_met_by(&entry(Some(630)), true));
        assert!(wanted.is_met_by(&entry(Some(3600)), true));
        assert!(!wanted.is_met_by(&entry(Some(60)), true));
        assert!(!wanted.is_met_by(&entry(None), true));
        assert!(wanted.is_met_by(&entry(None), false));
        let elsewhere = Entry {
            command: "/old/exai".into(),
            ..entry(Some(630))
        };
        assert!(!wanted.is_met_by(&elsewhere, true));
    }

    #[test]
    fn clients_are_found_by_their_word() {
        for client in all() {
            assert_eq!(by_id(client.id()).map(|c| c.name()), Some(client.name()));
        }
        assert!(by_id("vim").is_none());
        assert_eq!(ids(), "claude, codex, cursor, gemini, auggie");
    }
}
