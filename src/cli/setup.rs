//! `exai setup <client>`, `--list`, `--remove`, `--dry-run`: exai's entry in an MCP client's
//! configuration, each change shown, backed up, and followed by the step that makes it work.

use std::io::Write;
use std::path::PathBuf;

use serde_json::json;

use crate::clients::{self, Client, ClientError, Places, Plan, Scope, Wanted, files};
use crate::config::Config;

/// Why `exai setup` failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("unknown client {0:?}; exai sets up: {known}", known = clients::ids())]
    UnknownClient(String),
    #[error("name a client (exai setup CLIENT; one of {known}) or ask for --list", known = clients::ids())]
    NoClient,
    #[error("--project {0}: {1}")]
    Project(String, std::io::Error),
    #[error("{0}")]
    Output(#[from] std::io::Error),
}

/// What `exai setup` was asked (its command-line arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct Request {
    /// claude, codex, cursor, gemini or auggie.
    pub client: Option<String>,
    /// Each client: installed or not, its config file, set up for exai, its tool timeout.
    #[arg(long, conflicts_with_all = ["client", "remove", "dry_run"])]
    pub list: bool,
    /// Take exai out of CLIENT's configuration (the rest of the file stays as it was).
    #[arg(long)]
    pub remove: bool,
    /// The configuration of the project in DIR (default: the current directory) instead of
    /// the user's.
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = ".")]
    pub project: Option<PathBuf>,
    /// Show the change (a diff of the file, or the client's command) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --list: print JSON (for scripts).
    #[arg(long, requires = "list")]
    pub json: bool,
}

/// Runs `request` against the environment's places, for this exai binary under `config`.
pub fn run(config: &Config, request: &Request, out: &mut impl Write) -> Result<(), SetupError> {
    let places = Places::from_env()?;
    let scope = match &request.project {
        None => Scope::User,
        Some(dir) => Scope::Project(
            std::fs::canonicalize(dir)
                .map_err(|e| SetupError::Project(dir.display().to_string(), e))?,
        ),
    };
    let wanted = Wanted::for_this_binary(config)?;
    if request.list {
        return list(&places, &scope, &wanted, request.json, out);
    }
    let id = request.client.as_deref().ok_or(SetupError::NoClient)?;
    let client = clients::by_id(id).ok_or_else(|| SetupError::UnknownClient(id.into()))?;
    if request.remove {
        remove(client, &places, &scope, request.dry_run, out)
    } else {
        set_up(client, &places, &scope, &wanted, request.dry_run, out)
    }
}

/// "user config ~/.codex/config.toml" for the headline.
fn where_(client: &dyn Client, places: &Places, scope: &Scope) -> Result<String, ClientError> {
    Ok(format!(
        "{} config {}",
        scope.word(),
        client.config_file(places, scope)?.display()
    ))
}

/// What the entry launches, and its timeout where the client keeps one there.
fn describe(client: &dyn Client, wanted: &Wanted) -> String {
    let mut text = format!("{} {}", wanted.command, wanted.args.join(" "));
    if client.has_entry_timeout() {
        text.push_str(&format!(
            ", tool timeout {} s (exai's longest call deadline plus {} s to deliver its answer)",
            wanted.timeout.as_secs(),
            clients::DELIVERY_MARGIN.as_secs()
        ));
    }
    text
}

/// `exai setup CLIENT`.
pub fn set_up(
    client: &dyn Client,
    places: &Places,
    scope: &Scope,
    wanted: &Wanted,
    dry_run: bool,
    out: &mut impl Write,
) -> Result<(), SetupError> {
    let name = client.name();
    writeln!(out, "{name}: {}", where_(client, places, scope)?)?;
    let plan = client.plan_setup(places, scope, wanted)?;
    let changed = !matches!(plan, Plan::Nothing);
    if changed {
        writeln!(out, "exai entry: {}", describe(client, wanted))?;
    }
    carry_out(plan, dry_run, "already set up; nothing changed", out)?;
    if let Some(advice) = client.timeout_advice(places, wanted.timeout) {
        writeln!(out, "note: {advice}")?;
    }
    let next = if dry_run && changed {
        "run this again without --dry-run to make the change".to_string()
    } else {
        match (client.id(), scope) {
            ("claude", Scope::Project(_)) => format!(
                "restart {name} in this project and approve the project's exai server when it asks"
            ),
            ("codex", Scope::Project(_)) => format!(
                "restart {name} (it reads a project's .codex/config.toml only when it trusts the project)"
            ),
            _ if changed => format!("restart {name} so it loads exai"),
            _ => format!("restart {name} if it does not list exai yet"),
        }
    };
    writeln!(out, "next: {next}")?;
    Ok(())
}

/// `exai setup --remove CLIENT`.
pub fn remove(
    client: &dyn Client,
    places: &Places,
    scope: &Scope,
    dry_run: bool,
    out: &mut impl Write,
) -> Result<(), SetupError> {
    let name = client.name();
    writeln!(out, "{name}: {}", where_(client, places, scope)?)?;
    let plan = client.plan_removal(places, scope)?;
    let changed = !matches!(plan, Plan::Nothing);
    carry_out(
        plan,
        dry_run,
        "exai is not set up there; nothing changed",
        out,
    )?;
    let next = if dry_run && changed {
        "run this again without --dry-run to make the change".to_string()
    } else {
        format!("restart {name} so it stops starting exai")
    };
    writeln!(out, "next: {next}")?;
    Ok(())
}

/// Shows (dry run) or makes the change of `plan`, saying what happened and where the backup is.
fn carry_out(
    plan: Plan,
    dry_run: bool,
    unchanged: &str,
    out: &mut impl Write,
) -> Result<(), SetupError> {
    match plan {
        Plan::Nothing => writeln!(out, "{unchanged}")?,
        Plan::Edit(edit) if dry_run => {
            writeln!(out, "dry run: nothing written; the change would be:")?;
            write!(out, "{}", edit.diff())?;
            if let Some(note) = &edit.note {
                writeln!(out, "note: {note}")?;
            }
        }
        Plan::Edit(edit) => {
            let backup = edit.apply()?;
            match (&edit.after, &backup) {
                (Some(_), _) => writeln!(out, "wrote {}", edit.path.display())?,
                (None, _) => writeln!(
                    out,
                    "removed {} (nothing else was left in it)",
                    edit.path.display()
                )?,
            }
            match backup {
                Some(backup) => {
                    writeln!(out, "backup of the file as it was: {}", backup.display())?
                }
                None => writeln!(out, "(a new file: there was nothing to back up)")?,
            }
            if let Some(note) = &edit.note {
                writeln!(out, "note: {note}")?;
            }
        }
        Plan::Run { commands, .. } if dry_run => {
            writeln!(out, "dry run: nothing run; the commands would be:")?;
            for command in &commands {
                writeln!(out, "  {}", command.shown())?;
            }
        }
        Plan::Run { file, commands } => {
            let backup = files::back_up(&file)?;
            for command in &commands {
                writeln!(out, "ran: {}", command.shown())?;
                for line in command.run()?.lines() {
                    writeln!(out, "  {line}")?;
                }
            }
            if let Some(backup) = backup {
                writeln!(
                    out,
                    "backup of {} as it was: {}",
                    file.display(),
                    backup.display()
                )?;
            }
        }
    }
    Ok(())
}

/// One client's line of `exai setup --list`, as JSON.
pub fn status(
    client: &dyn Client,
    places: &Places,
    scope: &Scope,
    wanted: &Wanted,
) -> serde_json::Value {
    let file = client.config_file(places, scope);
    let entry = client.read(places, scope);
    let (configured, this_exai, timeout, problem) = match &entry {
        Ok(Some(entry)) => (
            true,
            entry.command == wanted.command,
            entry.timeout.map(|t| t.as_secs_f64()),
            None,
        ),
        Ok(None) => (false, false, None, None),
        Err(e) => (false, false, None, Some(e.to_string())),
    };
    json!({
        "client": client.id(),
        "name": client.name(),
        "installed": client.installed(places),
        "config_file": file.as_ref().ok(),
        "configured": configured,
        "command": entry.as_ref().ok().and_then(Option::as_ref).map(|e| e.command.clone()),
        "this_exai": this_exai,
        "timeout_s": timeout,
        "timeout_needed_s": client.has_entry_timeout().then_some(wanted.timeout.as_secs()),
        "timeout_elsewhere": client.timeout_elsewhere(places),
        "timeout_advice": client.timeout_advice(places, wanted.timeout),
        "problem": problem.or_else(|| file.err().map(|e| e.to_string())),
    })
}

/// `exai setup --list`: each client, installed or not, its file, set up for exai, its timeout.
pub fn list(
    places: &Places,
    scope: &Scope,
    wanted: &Wanted,
    as_json: bool,
    out: &mut impl Write,
) -> Result<(), SetupError> {
    let rows: Vec<serde_json::Value> = clients::all()
        .into_iter()
        .map(|client| status(client, places, scope, wanted))
        .collect();
    if as_json {
        super::write_json(out, &json!({"scope": scope.word(), "clients": rows}))?;
        return Ok(());
    }
    writeln!(out, "MCP clients ({} scope):", scope.word())?;
    for row in &rows {
        let text = |key: &str| row[key].as_str().unwrap_or("").to_string();
        let configured = match (&row["problem"], row["configured"] == true) {
            (serde_json::Value::String(problem), _) => format!("cannot tell: {problem}"),
            (_, false) => "not set up for exai".to_string(),
            (_, true) if row["this_exai"] == true => "set up for exai".to_string(),
            (_, true) => format!("set up for another exai ({})", text("command")),
        };
        let timeout = match (row["timeout_s"].as_f64(), row["timeout_needed_s"].as_u64()) {
            (Some(set), Some(needed)) if set < needed as f64 => {
                format!("timeout {set} s, shorter than the {needed} s exai needs")
            }
            (Some(set), _) => format!("timeout {set} s"),
            (None, Some(needed)) if row["configured"] == true => {
                format!("no timeout set (exai needs {needed} s)")
            }
            _ => match &row["timeout_advice"] {
                serde_json::Value::String(advice) => advice.clone(),
                _ => text("timeout_elsewhere"),
            },
        };
        let installed = if row["installed"] == true {
            "installed"
        } else {
            "not installed"
        };
        writeln!(out, "{:<12} {installed}; {configured}", text("name"))?;
        writeln!(out, "{:<12} {}", "", text("config_file"))?;
        if !timeout.is_empty() {
            writeln!(out, "{:<12} {timeout}", "")?;
        }
    }
    writeln!(
        out,
        "next: exai setup CLIENT (one of {}; add --project for this project only, --dry-run to see the change first)",
        clients::ids()
    )?;
    Ok(())
}
