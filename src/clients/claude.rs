//! Claude Code: its own CLI when `claude` is on PATH (`claude mcp add|remove -s user|project`;
//! where it keeps servers moved between versions), else the file edited directly: the top-level
//! `mcpServers` of `~/.claude.json` (user) or `<project>/.mcp.json`. Its tool timeout is
//! `MCP_TOOL_TIMEOUT` (ms) in the `env` of `~/.claude/settings.json`; exai only reads it.

use std::path::PathBuf;
use std::time::Duration;

use super::files::{self, MAX_CONFIG_BYTES};
use super::json::{self, Shape};
use super::{CliRun, Client, ClientError, Entry, Places, Plan, SERVER_NAME, Scope, Wanted};

pub struct ClaudeCode;

/// What `claude mcp add` itself writes.
const SHAPE: Shape = Shape {
    stdio_type: true,
    empty_env: true,
    timeout_ms: false,
};

const TOOL_TIMEOUT_VAR: &str = "MCP_TOOL_TIMEOUT";

impl ClaudeCode {
    fn settings_file(&self, places: &Places) -> PathBuf {
        self.config_dir(places).join("settings.json")
    }

    /// `MCP_TOOL_TIMEOUT` as the user's settings set it, in milliseconds.
    fn tool_timeout(&self, places: &Places) -> Option<(Duration, PathBuf)> {
        let path = self.settings_file(places);
        let text = files::read_text(&path, MAX_CONFIG_BYTES).ok()??;
        let settings: serde_json::Value = serde_json::from_str(&text).ok()?;
        let value = &settings["env"][TOOL_TIMEOUT_VAR];
        let ms = value
            .as_u64()
            .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))?;
        Some((Duration::from_millis(ms), path))
    }

    fn cli(&self, program: PathBuf, scope: &Scope, args: &[&str]) -> CliRun {
        let mut words: Vec<String> = vec!["mcp".into()];
        words.extend(args.iter().map(|a| a.to_string()));
        CliRun {
            program,
            args: words,
            dir: match scope {
                Scope::User => None,
                Scope::Project(dir) => Some(dir.clone()),
            },
        }
    }

    fn removal(&self, program: PathBuf, scope: &Scope) -> CliRun {
        self.cli(program, scope, &["remove", "-s", scope.word(), SERVER_NAME])
    }
}

impl Client for ClaudeCode {
    fn id(&self) -> &'static str {
        "claude"
    }
    fn name(&self) -> &'static str {
        "Claude Code"
    }
    fn program(&self) -> &'static str {
        "claude"
    }
    fn config_dir(&self, places: &Places) -> PathBuf {
        places
            .claude_config_dir
            .clone()
            .unwrap_or_else(|| places.home.join(".claude"))
    }
    fn config_file(&self, places: &Places, scope: &Scope) -> Result<PathBuf, ClientError> {
        Ok(match (scope, &places.claude_config_dir) {
            (Scope::User, Some(dir)) => dir.join(".claude.json"),
            (Scope::User, None) => places.home.join(".claude.json"),
            (Scope::Project(dir), _) => super::in_project(dir, &[".mcp.json"])?,
        })
    }
    fn read(&self, places: &Places, scope: &Scope) -> Result<Option<Entry>, ClientError> {
        json::read(&self.config_file(places, scope)?, SHAPE)
    }
    fn plan_setup(
        &self,
        places: &Places,
        scope: &Scope,
        wanted: &Wanted,
    ) -> Result<Plan, ClientError> {
        let file = self.config_file(places, scope)?;
        let present = json::read(&file, SHAPE)?;
        if present.as_ref().is_some_and(|e| wanted.is_met_by(e, false)) {
            return Ok(Plan::Nothing);
        }
        // An entry already there is edited in place, keeping what else it holds (its `env`:
        // EXAI_URL of a team's daemon, a token): `claude mcp remove` then `add` would drop it,
        // and leave no entry at all if the add failed.
        let program = match places.find_program(self.program()) {
            Some(program) if present.is_none() => program,
            _ => return json::plan_setup(&file, SHAPE, wanted),
        };
        let mut add = vec![
            "add",
            "-s",
            scope.word(),
            SERVER_NAME,
            "--",
            &wanted.command,
        ];
        add.extend(wanted.args.iter().map(String::as_str));
        Ok(Plan::Run {
            commands: vec![self.cli(program, scope, &add)],
            file,
        })
    }
    fn plan_removal(&self, places: &Places, scope: &Scope) -> Result<Plan, ClientError> {
        let file = self.config_file(places, scope)?;
        if json::read(&file, SHAPE)?.is_none() {
            return Ok(Plan::Nothing);
        }
        match places.find_program(self.program()) {
            Some(program) => Ok(Plan::Run {
                commands: vec![self.removal(program, scope)],
                file,
            }),
            None => json::plan_removal(&file),
        }
    }
    fn timeout_advice(&self, places: &Places, needed: Duration) -> Option<String> {
        let (timeout, path) = self.tool_timeout(places)?;
        (timeout < needed).then(|| {
            format!(
                "{TOOL_TIMEOUT_VAR} is {} ms in {}, shorter than exai's longest call ({} ms): \
                 exai leaves your settings alone; raise it there to at least {} (or remove it)",
                timeout.as_millis(),
                path.display(),
                needed.as_millis(),
                needed.as_millis()
            )
        })
    }
    fn timeout_elsewhere(&self, places: &Places) -> Option<String> {
        Some(match self.tool_timeout(places) {
            Some((timeout, path)) => format!(
                "{TOOL_TIMEOUT_VAR}={} ms ({})",
                timeout.as_millis(),
                path.display()
            ),
            None => format!("{TOOL_TIMEOUT_VAR} not set"),
        })
    }
}
