//! The CLIs clink may run and the roles it may give them: three built in (Claude Code, Codex,
//! Gemini CLI), each changed or joined by others in the config file's `[clink.clis.NAME]`, and
//! roles (`[clink.roles.NAME]`) whose system prompt is a file of the user's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Which event stream a CLI writes, and so which parser reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParserKind {
    /// `claude -p --output-format stream-json --verbose`.
    Claude,
    /// `codex exec --json`.
    Codex,
    /// `gemini --output-format stream-json`.
    Gemini,
}

/// One CLI clink may run, as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct CliSpec {
    pub name: String,
    /// The program: a name looked up on PATH, or a path.
    pub command: String,
    /// Arguments of a new session; the prompt goes to standard input. `{directories}`, an
    /// argument of its own, is where `directory_args` go (at the end where it is missing).
    pub args: Vec<String>,
    /// Arguments that resume a session (`{session_id}` replaced); empty: this CLI cannot resume.
    pub resume_args: Vec<String>,
    /// Arguments that hand it a directory to work on (`{dir}` replaced), once per directory: it
    /// runs in an empty directory of exai's, never inside the repository (whose own CLI
    /// configuration would run). Empty: it is told the files' paths only.
    pub directory_args: Vec<String>,
    /// Arguments that hand over the role's system prompt (`{system_prompt}` replaced); empty:
    /// the system prompt goes in front of the prompt.
    pub system_prompt_args: Vec<String>,
    pub parser: ParserKind,
    /// Variables set for it on top of the daemon's environment.
    pub env: Vec<(String, String)>,
    /// Longest run; the call's own deadline still applies.
    pub timeout: Duration,
    /// The directory it is handed when the call names no files (else: the files' common
    /// directory).
    pub working_dir: Option<PathBuf>,
    /// What to do when it is not installed.
    pub install_hint: String,
    /// What to do when it is not logged in.
    pub login_hint: String,
}

/// A role: the system prompt a sub-agent is given.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// One of exai's own (`src/clink/roles/`).
    BuiltIn(&'static str),
    /// A file of the user's, read (bounded) when a call asks for the role.
    File(PathBuf),
}

/// The CLIs and roles clink knows.
#[derive(Debug, Clone)]
pub struct Clis {
    pub clis: Vec<CliSpec>,
    pub roles: Vec<(String, Role)>,
}

/// The role prompts exai ships.
pub const BUILT_IN_ROLES: &[(&str, &str)] = &[
    ("default", include_str!("roles/default.txt")),
    ("planner", include_str!("roles/planner.txt")),
    ("codereviewer", include_str!("roles/codereviewer.txt")),
];

/// Default longest run of a sub-agent.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Where `directory_args` go in `args`.
pub const DIRECTORIES: &str = "{directories}";

impl Default for Clis {
    /// The flags that keep a repository's own configuration out, as each CLI documents them:
    /// - Claude Code: `--add-dir DIR` (more directories its tools may use) and
    ///   `--setting-sources user` (no project or local `.claude/settings*.json`), both as
    ///   Anthropic's Agent SDK passes them (`anthropics/claude-agent-sdk-python`,
    ///   `_internal/transport/subprocess_cli.py`; code.claude.com/docs/en/cli-reference);
    /// - Codex: `--add-dir DIR`, a flag of `codex exec` before its `resume` subcommand
    ///   (developers.openai.com/codex/cli/reference; `openai/codex` `codex-rs/exec/src/cli.rs`);
    ///   project config is read from the working directory only;
    /// - Gemini CLI: `--include-directories DIR` (at most 5; `google-gemini/gemini-cli`
    ///   `docs/cli/configuration.md`); workspace settings and `.env` are read from the working
    ///   directory, never from an included one.
    fn default() -> Self {
        let claude_args = [
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--setting-sources",
            "user",
            DIRECTORIES,
        ];
        let codex_args = ["exec", "--json", "--skip-git-repo-check", DIRECTORIES];
        let gemini_args = ["--output-format", "stream-json", DIRECTORIES];
        let clis = vec![
            CliSpec {
                name: "claude".into(),
                command: "claude".into(),
                args: strings(&claude_args),
                resume_args: strings(&[&claude_args[..], &["--resume", "{session_id}"]].concat()),
                directory_args: strings(&["--add-dir", "{dir}"]),
                system_prompt_args: strings(&["--append-system-prompt", "{system_prompt}"]),
                parser: ParserKind::Claude,
                env: Vec::new(),
                timeout: DEFAULT_TIMEOUT,
                working_dir: None,
                install_hint: "npm install -g @anthropic-ai/claude-code".into(),
                login_hint: "run `claude` once and /login, or set ANTHROPIC_API_KEY".into(),
            },
            CliSpec {
                name: "codex".into(),
                command: "codex".into(),
                args: strings(&[&codex_args[..], &["-"]].concat()),
                resume_args: strings(&[&codex_args[..], &["resume", "{session_id}", "-"]].concat()),
                directory_args: strings(&["--add-dir", "{dir}"]),
                system_prompt_args: Vec::new(),
                parser: ParserKind::Codex,
                env: Vec::new(),
                timeout: DEFAULT_TIMEOUT,
                working_dir: None,
                install_hint: "npm install -g @openai/codex".into(),
                login_hint: "run `codex login`, or set OPENAI_API_KEY".into(),
            },
            CliSpec {
                name: "gemini".into(),
                command: "gemini".into(),
                args: strings(&gemini_args),
                resume_args: strings(&[&gemini_args[..], &["--resume", "{session_id}"]].concat()),
                directory_args: strings(&["--include-directories", "{dir}"]),
                system_prompt_args: Vec::new(),
                parser: ParserKind::Gemini,
                env: Vec::new(),
                timeout: DEFAULT_TIMEOUT,
                working_dir: None,
                install_hint: "npm install -g @google/gemini-cli".into(),
                login_hint: "run `gemini` once and choose how to sign in, or set GEMINI_API_KEY"
                    .into(),
            },
        ];
        let roles = BUILT_IN_ROLES
            .iter()
            .map(|(name, text)| (name.to_string(), Role::BuiltIn(text)))
            .collect();
        Self { clis, roles }
    }
}

/// `[clink]` of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClinkSection {
    #[serde(default)]
    pub clis: BTreeMap<String, CliSection>,
    #[serde(default)]
    pub roles: BTreeMap<String, RoleSection>,
}

/// `[clink.clis.NAME]`: a built-in CLI changed, or a new one (then `command` and `parser` are
/// needed).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliSection {
    pub command: Option<String>,
    pub args: Option<Vec<String>>,
    pub resume_args: Option<Vec<String>>,
    pub directory_args: Option<Vec<String>>,
    pub system_prompt_args: Option<Vec<String>>,
    pub parser: Option<ParserKind>,
    pub env: Option<BTreeMap<String, String>>,
    pub timeout_s: Option<f64>,
    pub working_dir: Option<PathBuf>,
}

/// `[clink.roles.NAME]`: a role whose system prompt is in `prompt_file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSection {
    pub prompt_file: PathBuf,
}

/// Why the `[clink]` section cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClinkConfigError {
    #[error(
        "[clink.clis.{0}] is a new CLI: it needs `command` and `parser` (claude, codex or gemini)"
    )]
    Incomplete(String),
    #[error(
        "[clink.clis.{name}] timeout_s = {value}: give a number of seconds above 0, at most a year"
    )]
    Timeout { name: String, value: f64 },
    #[error("[clink.clis.{name}] {field}: give an absolute path")]
    Relative { name: String, field: &'static str },
    /// A relative path would be found from the CLI's working directory, which is not the
    /// daemon's.
    #[error(
        "[clink.clis.{0}] command: give a program name (looked up on PATH) or an absolute path"
    )]
    RelativeCommand(String),
    #[error("[clink.roles.{0}] prompt_file: give an absolute path")]
    RelativeRole(String),
    #[error("clink CLI and role names are letters, digits, `-` and `_`: {0:?} is not")]
    Name(String),
}

fn plain_name(name: &str) -> Result<(), ClinkConfigError> {
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        Ok(())
    } else {
        Err(ClinkConfigError::Name(name.to_string()))
    }
}

impl Clis {
    /// The built-in CLIs and roles, changed and joined by the config file's `[clink]`.
    pub fn with_section(section: &ClinkSection) -> Result<Self, ClinkConfigError> {
        let mut clis = Self::default();
        for (name, given) in &section.clis {
            plain_name(name)?;
            let at = match clis.clis.iter().position(|c| &c.name == name) {
                Some(at) => at,
                None => {
                    let (Some(command), Some(parser)) = (&given.command, given.parser) else {
                        return Err(ClinkConfigError::Incomplete(name.clone()));
                    };
                    clis.clis.push(CliSpec {
                        name: name.clone(),
                        command: command.clone(),
                        args: Vec::new(),
                        resume_args: Vec::new(),
                        directory_args: Vec::new(),
                        system_prompt_args: Vec::new(),
                        parser,
                        env: Vec::new(),
                        timeout: DEFAULT_TIMEOUT,
                        working_dir: None,
                        install_hint: format!(
                            "install it, or set `command` in [clink.clis.{name}] to its path"
                        ),
                        login_hint: format!("log in to {name} once by hand"),
                    });
                    clis.clis.len() - 1
                }
            };
            let spec = &mut clis.clis[at];
            if let Some(command) = &given.command {
                if command.contains('/') && !Path::new(command).is_absolute() {
                    return Err(ClinkConfigError::RelativeCommand(name.clone()));
                }
                spec.command = command.clone();
            }
            if let Some(args) = &given.args {
                spec.args = args.clone();
            }
            if let Some(args) = &given.resume_args {
                spec.resume_args = args.clone();
            }
            if let Some(args) = &given.directory_args {
                spec.directory_args = args.clone();
            }
            if let Some(args) = &given.system_prompt_args {
                spec.system_prompt_args = args.clone();
            }
            if let Some(parser) = given.parser {
                spec.parser = parser;
            }
            if let Some(env) = &given.env {
                spec.env = env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            }
            if let Some(seconds) = given.timeout_s {
                if !(seconds.is_finite() && seconds > 0.0 && seconds <= crate::config::MOST_SECONDS)
                {
                    return Err(ClinkConfigError::Timeout {
                        name: name.clone(),
                        value: seconds,
                    });
                }
                spec.timeout = Duration::from_secs_f64(seconds);
            }
            if let Some(dir) = &given.working_dir {
                if !dir.is_absolute() {
                    return Err(ClinkConfigError::Relative {
                        name: name.clone(),
                        field: "working_dir",
                    });
                }
                spec.working_dir = Some(dir.clone());
            }
        }
        for (name, role) in &section.roles {
            plain_name(name)?;
            if !role.prompt_file.is_absolute() {
                return Err(ClinkConfigError::RelativeRole(name.clone()));
            }
            let file = Role::File(role.prompt_file.clone());
            match clis.roles.iter_mut().find(|(n, _)| n == name) {
                Some((_, slot)) => *slot = file,
                None => clis.roles.push((name.clone(), file)),
            }
        }
        Ok(clis)
    }

    /// The `[clink]` entries that differ from `other`'s (changed, added or removed), by their
    /// section name: a reload follows them.
    pub fn changed_entries(&self, other: &Clis) -> Vec<String> {
        let mut changed = Vec::new();
        let clis = self.clis.iter().map(|c| c.name.as_str());
        let other_clis = other.clis.iter().map(|c| c.name.as_str());
        for name in clis.chain(other_clis.filter(|n| self.cli(n).is_none())) {
            if self.cli(name) != other.cli(name) {
                changed.push(format!("[clink.clis.{name}]"));
            }
        }
        let roles = self.roles.iter().map(|(n, _)| n.as_str());
        let other_roles = other.roles.iter().map(|(n, _)| n.as_str());
        for name in roles.chain(other_roles.filter(|n| self.role(n).is_none())) {
            if self.role(name) != other.role(name) {
                changed.push(format!("[clink.roles.{name}]"));
            }
        }
        changed
    }

    pub fn cli(&self, name: &str) -> Option<&CliSpec> {
        self.clis.iter().find(|c| c.name == name)
    }

    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.iter().find(|(n, _)| n == name).map(|(_, r)| r)
    }

    pub fn cli_names(&self) -> Vec<&str> {
        self.clis.iter().map(|c| c.name.as_str()).collect()
    }

    pub fn role_names(&self) -> Vec<&str> {
        self.roles.iter().map(|(n, _)| n.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_changes_a_built_in_cli_and_adds_one_and_a_role() {
        let section: ClinkSection = toml::from_str(
            r#"
            [clis.claude]
            args = ["-p", "--output-format", "stream-json", "--verbose", "--permission-mode", "acceptEdits"]
            timeout_s = 300
            env = { CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = "1" }

            [clis.qwen]
            command = "/opt/qwen/bin/qwen"
            parser = "gemini"
            args = ["--output-format", "stream-json"]

            [roles.security]
            prompt_file = "/home/me/roles/security.txt"
            "#,
        )
        .unwrap();
        let clis = Clis::with_section(&section).unwrap();
        let claude = clis.cli("claude").unwrap();
        assert_eq!(claude.timeout, Duration::from_secs(300));
        assert!(claude.args.contains(&"acceptEdits".to_string()));
        assert_eq!(claude.resume_args.last().unwrap(), "{session_id}");
        assert_eq!(
            claude.env,
            [(
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".to_string(),
                "1".to_string()
            )]
        );
        let qwen = clis.cli("qwen").unwrap();
        assert_eq!(qwen.parser, ParserKind::Gemini);
        assert!(
            qwen.resume_args.is_empty(),
            "a new CLI resumes only when told how"
        );
        assert_eq!(clis.cli_names(), ["claude", "codex", "gemini", "qwen"]);
        assert_eq!(
            clis.role_names(),
            ["default", "planner", "codereviewer", "security"]
        );
    }

    #[test]
    fn a_new_cli_without_its_program_or_parser_is_refused_by_name() {
        let section: ClinkSection = toml::from_str("[clis.aider]\nargs = [\"--yes\"]\n").unwrap();
        let error = Clis::with_section(&section).unwrap_err().to_string();
        assert!(
            error.contains("[clink.clis.aider]") && error.contains("parser"),
            "{error}"
        );
        let bad: Result<ClinkSection, _> = toml::from_str("[clis.claude]\nshell = \"sh -c\"\n");
        assert!(bad.is_err(), "unknown keys are refused");
        let relative: ClinkSection =
            toml::from_str("[roles.x]\nprompt_file = \"x.txt\"\n").unwrap();
        assert!(Clis::with_section(&relative).is_err());
        // Found from the daemon's directory, run from the CLI's: refused.
        let relative: ClinkSection =
            toml::from_str("[clis.claude]\ncommand = \"./claude\"\n").unwrap();
        assert!(matches!(
            Clis::with_section(&relative),
            Err(ClinkConfigError::RelativeCommand(_))
        ));
    }
}
