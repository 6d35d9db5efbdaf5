//! Codex: `$CODEX_HOME/config.toml` (default `~/.codex/config.toml`), or a trusted project's
//! `.codex/config.toml`; `[mcp_servers.exai]` with `command`, `args` and `tool_timeout_sec`,
//! the one limit of Codex progress does not extend. Edited with `toml_edit`, so comments, order
//! and every other table survive byte for byte.

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml_edit::{Array, DocumentMut, Item, Table, TableLike, Value, value};

use super::files::{self, FileEdit, MAX_CONFIG_BYTES};
use super::{Client, ClientError, Entry, Places, Plan, SERVER_NAME, Scope, Wanted};

pub struct Codex;

const SERVERS: &str = "mcp_servers";
const TOOL_TIMEOUT: &str = "tool_timeout_sec";
const STARTUP_TIMEOUT: &str = "startup_timeout_sec";
/// Start-up time allowed to `exai stdio`, which may start the daemon first (Codex's default is 10 s).
const STARTUP_SECS: i64 = 30;

impl Client for Codex {
    fn id(&self) -> &'static str {
        "codex"
    }
    fn name(&self) -> &'static str {
        "Codex"
    }
    fn program(&self) -> &'static str {
        "codex"
    }
    fn config_dir(&self, places: &Places) -> PathBuf {
        places.codex_home.clone()
    }
    fn config_file(&self, places: &Places, scope: &Scope) -> Result<PathBuf, ClientError> {
        Ok(match scope {
            Scope::User => places.codex_home.join("config.toml"),
            Scope::Project(dir) => super::in_project(dir, &[".codex", "config.toml"])?,
        })
    }
    fn read(&self, places: &Places, scope: &Scope) -> Result<Option<Entry>, ClientError> {
        let (_, document) = read_document(&self.config_file(places, scope)?)?;
        Ok(exai_table(&document).map(entry_of))
    }
    fn plan_setup(
        &self,
        places: &Places,
        scope: &Scope,
        wanted: &Wanted,
    ) -> Result<Plan, ClientError> {
        let path = self.config_file(places, scope)?;
        let (text, mut document) = read_document(&path)?;
        if exai_table(&document).is_some_and(|entry| wanted.is_met_by(&entry_of(entry), true)) {
            return Ok(Plan::Nothing);
        }
        let has_content = !document.as_table().is_empty();
        let root = document.as_table_mut();
        if !root.contains_key(SERVERS) {
            let mut servers = Table::new();
            servers.set_implicit(true);
            root.insert(SERVERS, Item::Table(servers));
        }
        let servers = root
            .get_mut(SERVERS)
            .and_then(Item::as_table_like_mut)
            .ok_or_else(|| not_a_table(&path, SERVERS))?;
        let seconds = wanted.timeout.as_secs_f64().ceil() as i64;
        match servers
            .get_mut(SERVER_NAME)
            .and_then(Item::as_table_like_mut)
        {
            Some(entry) => {
                set(entry, "command", wanted.command.as_str().into());
                set(entry, "args", Value::Array(args(wanted)));
                let kept = entry
                    .get(TOOL_TIMEOUT)
                    .and_then(seconds_of)
                    .map(|d| d.as_secs_f64().ceil() as i64)
                    .unwrap_or(0);
                set(entry, TOOL_TIMEOUT, seconds.max(kept).into());
            }
            None => {
                let mut entry = Table::new();
                entry.insert("command", value(wanted.command.as_str()));
                entry.insert("args", value(args(wanted)));
                entry.insert(TOOL_TIMEOUT, value(seconds));
                entry.insert(STARTUP_TIMEOUT, value(STARTUP_SECS));
                if has_content {
                    // A blank line between it and whatever comes before.
                    entry.decor_mut().set_prefix("\n");
                }
                servers.insert(SERVER_NAME, Item::Table(entry));
            }
        }
        Ok(Plan::Edit(FileEdit {
            path,
            before: text,
            after: Some(document.to_string()),
            note: None,
        }))
    }
    fn plan_removal(&self, places: &Places, scope: &Scope) -> Result<Plan, ClientError> {
        let path = self.config_file(places, scope)?;
        let (text, mut document) = read_document(&path)?;
        if exai_table(&document).is_none() {
            return Ok(Plan::Nothing);
        }
        let root = document.as_table_mut();
        let mut emptied_implicit = false;
        if let Some(servers) = root.get_mut(SERVERS).and_then(Item::as_table_like_mut) {
            servers.remove(SERVER_NAME);
            emptied_implicit = servers.is_empty()
                && root
                    .get(SERVERS)
                    .and_then(Item::as_table)
                    .is_some_and(Table::is_implicit);
        }
        if emptied_implicit {
            root.remove(SERVERS);
        }
        let after = document.to_string();
        Ok(Plan::Edit(FileEdit {
            path,
            before: text,
            // A file left with nothing in it goes (the backup keeps it).
            after: (!after.trim().is_empty()).then_some(after),
            note: None,
        }))
    }
    fn has_entry_timeout(&self) -> bool {
        true
    }
}

fn args(wanted: &Wanted) -> Array {
    wanted.args.iter().map(String::as_str).collect()
}

/// `key = new` in `entry`, keeping the comments and spacing around a value already there.
fn set(entry: &mut dyn TableLike, key: &str, mut new: Value) {
    if let Some(old) = entry.get(key).and_then(Item::as_value) {
        *new.decor_mut() = old.decor().clone();
    }
    entry.insert(key, Item::Value(new));
}

fn not_a_table(path: &Path, what: &str) -> ClientError {
    ClientError::Unparsable {
        path: path.display().to_string(),
        why: format!("`{what}` is not a table"),
    }
}

/// The file's text (`None`: no file) and its document.
fn read_document(path: &Path) -> Result<(Option<String>, DocumentMut), ClientError> {
    let text = files::read_text(path, MAX_CONFIG_BYTES)?;
    let document = parse(text.as_deref().unwrap_or("")).map_err(|why| ClientError::Unparsable {
        path: path.display().to_string(),
        why,
    })?;
    Ok((text, document))
}

/// A TOML document, or the parser's message (which names the line and column).
fn parse(text: &str) -> Result<DocumentMut, String> {
    text.parse::<DocumentMut>().map_err(|e| {
        e.to_string()
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && *line != "|")
            .collect::<Vec<_>>()
            .join(" ")
    })
}

fn exai_table(document: &DocumentMut) -> Option<&dyn TableLike> {
    document
        .get(SERVERS)?
        .as_table_like()?
        .get(SERVER_NAME)?
        .as_table_like()
}

fn entry_of(entry: &dyn TableLike) -> Entry {
    Entry {
        command: entry
            .get("command")
            .and_then(Item::as_str)
            .unwrap_or_default()
            .to_string(),
        args: entry
            .get("args")
            .and_then(Item::as_array)
            .map(|args| {
                args.iter()
                    .map(|a| a.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default(),
        timeout: entry.get(TOOL_TIMEOUT).and_then(seconds_of),
    }
}

/// A number of seconds, integer or float, as Codex reads them.
fn seconds_of(item: &Item) -> Option<Duration> {
    let seconds = item
        .as_integer()
        .map(|s| s as f64)
        .or_else(|| item.as_float())?;
    crate::config::bounded_seconds(seconds)
}

/// The `tool_timeout_sec` of the Codex server entry that launches exai (`this_exe`, else any
/// `exai`), from the text of a Codex config file. `Ok(None)`: no such entry, or it sets none.
pub fn exai_tool_timeout(text: &str, this_exe: Option<&Path>) -> Result<Option<Duration>, String> {
    let document = parse(text)?;
    let Some(servers) = document.get(SERVERS).and_then(Item::as_table_like) else {
        return Ok(None);
    };
    let entries = servers
        .iter()
        .filter_map(|(_, item)| item.as_table_like().map(entry_of));
    Ok(super::launching_exai(entries, this_exe).and_then(|entry| entry.timeout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::test_support::{applied, wanted};

    const ORIGINAL: &str = "# my Codex settings\nmodel = \"o3\" # the best one\n\n[mcp_servers.other]\ncommand = \"npx\" # a comment\nargs = [ \"-y\",  \"thing\" ]\n\n[profiles.fast]\nmodel = \"o4-mini\"\n";

    fn places(dir: &Path) -> Places {
        Places {
            home: dir.to_path_buf(),
            codex_home: dir.join(".codex"),
            claude_config_dir: None,
            path: Vec::new(),
        }
    }

    #[test]
    fn setup_keeps_every_byte_of_the_rest_and_removal_gives_them_back() {
        let dir = crate::scratch::scratch_dir("codex");
        let places = places(&dir);
        let path = places.codex_home.join("config.toml");
        std::fs::create_dir_all(&places.codex_home).expect("dir");
        std::fs::write(&path, ORIGINAL).expect("write");
        applied(
            Codex
                .plan_setup(&places, &Scope::User, &wanted(630))
                .expect("plan"),
        );
        let written = std::fs::read_to_string(&path).expect("read");
        assert!(written.starts_with(ORIGINAL.split("[profiles").next().unwrap_or("")));
        assert!(
            written.contains("[profiles.fast]\nmodel = \"o4-mini\"\n"),
            "{written}"
        );
        let parsed: toml::Table = toml::from_str(&written).expect("toml");
        let exai = &parsed["mcp_servers"]["exai"];
        assert_eq!(exai["command"].as_str(), Some("/opt/exai/bin/exai"));
        assert_eq!(exai["tool_timeout_sec"].as_integer(), Some(630));
        assert_eq!(
            exai_tool_timeout(&written, None).expect("parse"),
            Some(Duration::from_secs(630))
        );
        assert!(matches!(
            Codex
                .plan_setup(&places, &Scope::User, &wanted(630))
                .expect("plan"),
            Plan::Nothing
        ));
        // A longer deadline raises the timeout in place, the entry's comments kept.
        applied(
            Codex
                .plan_setup(&places, &Scope::User, &wanted(900))
                .expect("plan"),
        );
        assert_eq!(
            Codex
                .read(&places, &Scope::User)
                .expect("read")
                .and_then(|e| e.timeout),
            Some(Duration::from_secs(900))
        );
        applied(Codex.plan_removal(&places, &Scope::User).expect("plan"));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), ORIGINAL);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_new_file_holds_only_the_entry_and_goes_with_it() {
        let dir = crate::scratch::scratch_dir("codex");
        let places = places(&dir);
        let edit = applied(
            Codex
                .plan_setup(&places, &Scope::User, &wanted(630))
                .expect("plan"),
        );
        assert_eq!(
            edit.after.as_deref(),
            Some(
                "[mcp_servers.exai]\ncommand = \"/opt/exai/bin/exai\"\nargs = [\"stdio\"]\ntool_timeout_sec = 630\nstartup_timeout_sec = 30\n"
            )
        );
        applied(Codex.plan_removal(&places, &Scope::User).expect("plan"));
        assert!(!places.codex_home.join("config.toml").exists());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_patience_is_read_from_the_entry_that_launches_exai() {
        let text = "[mcp_servers.zen]\ncommand = \"zen\"\ntool_timeout_sec = 5\n\n[mcp_servers.mine]\ncommand = \"/usr/local/bin/exai\"\nargs = [\"stdio\"]\ntool_timeout_sec = 300.5\n";
        assert_eq!(
            exai_tool_timeout(text, None).expect("parse"),
            Some(Duration::from_secs_f64(300.5))
        );
        assert_eq!(exai_tool_timeout("model = \"o3\"\n", None), Ok(None));
        let error = exai_tool_timeout("model = \n", None).expect_err("broken");
        assert!(error.contains("line 1"), "{error}");
    }

    #[test]
    fn a_broken_file_is_refused_untouched() {
        let dir = crate::scratch::scratch_dir("codex");
        let places = places(&dir);
        std::fs::create_dir_all(&places.codex_home).expect("dir");
        let path = places.codex_home.join("config.toml");
        std::fs::write(&path, "model = \"o3\"\n[mcp_servers\n").expect("write");
        let error = Codex
            .plan_setup(&places, &Scope::User, &wanted(630))
            .expect_err("refused")
            .to_string();
        assert!(error.contains("line 2"), "{error}");
        assert!(error.contains("config.toml"), "{error}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
