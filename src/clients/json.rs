//! The `{"mcpServers": {"exai": {…}}}` documents of Claude Code, Cursor, Gemini CLI and Auggie:
//! exai's entry read, written and removed with every other key kept in its order and the file's
//! indentation and final newline kept.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};

use std::path::PathBuf;

use super::files::{self, FileEdit, MAX_CONFIG_BYTES};
use super::{Client, ClientError, Entry, Places, Plan, SERVER_NAME, Scope, Wanted};

const SERVERS: &str = "mcpServers";

/// How one client's entry looks beyond `command` and `args`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shape {
    /// `"type": "stdio"` first (Claude Code).
    pub stdio_type: bool,
    /// An empty `"env": {}` (what Claude Code's own CLI writes).
    pub empty_env: bool,
    /// The tool timeout as `"timeout"` in milliseconds (Gemini CLI).
    pub timeout_ms: bool,
}

impl Shape {
    /// `command` and `args` only.
    pub const PLAIN: Shape = Shape {
        stdio_type: false,
        empty_env: false,
        timeout_ms: false,
    };
}

/// A client whose MCP servers are the `mcpServers` of one JSON file in a directory of the
/// home (and of a project, when it has a project scope).
pub struct JsonClient {
    pub id: &'static str,
    pub name: &'static str,
    pub program: &'static str,
    /// The directory under the home (and under a project), e.g. `.cursor`.
    pub dir: &'static str,
    pub file: &'static str,
    pub project_scope: bool,
    pub shape: Shape,
}

impl Client for JsonClient {
    fn id(&self) -> &'static str {
        self.id
    }
    fn name(&self) -> &'static str {
        self.name
    }
    fn program(&self) -> &'static str {
        self.program
    }
    fn config_dir(&self, places: &Places) -> PathBuf {
        places.home.join(self.dir)
    }
    fn config_file(&self, places: &Places, scope: &Scope) -> Result<PathBuf, ClientError> {
        match scope {
            Scope::User => Ok(self.config_dir(places).join(self.file)),
            Scope::Project(dir) if self.project_scope => {
                super::in_project(dir, &[self.dir, self.file])
            }
            Scope::Project(_) => Err(ClientError::NoSuchScope {
                client: self.name,
                scope: "project",
            }),
        }
    }
    fn read(&self, places: &Places, scope: &Scope) -> Result<Option<Entry>, ClientError> {
        read(&self.config_file(places, scope)?, self.shape)
    }
    fn plan_setup(
        &self,
        places: &Places,
        scope: &Scope,
        wanted: &Wanted,
    ) -> Result<Plan, ClientError> {
        plan_setup(&self.config_file(places, scope)?, self.shape, wanted)
    }
    fn plan_removal(&self, places: &Places, scope: &Scope) -> Result<Plan, ClientError> {
        plan_removal(&self.config_file(places, scope)?)
    }
    fn has_entry_timeout(&self) -> bool {
        self.shape.timeout_ms
    }
}

/// A parsed document and how its text was laid out.
struct Document {
    root: Map<String, Value>,
    indent: String,
    final_newline: bool,
    /// The text as it was, `None` when there was no file.
    text: Option<String>,
}

impl Document {
    fn read(path: &Path) -> Result<Self, ClientError> {
        let text = files::read_text(path, MAX_CONFIG_BYTES)?;
        let source = text.as_deref().unwrap_or("");
        let root = if source.trim().is_empty() {
            Map::new()
        } else {
            match serde_json::from_str::<Value>(source) {
                Ok(Value::Object(root)) => root,
                Ok(_) => {
                    return Err(ClientError::Unparsable {
                        path: path.display().to_string(),
                        why: "its top level is not a JSON object".into(),
                    });
                }
                Err(e) => {
                    return Err(ClientError::Unparsable {
                        path: path.display().to_string(),
                        why: e.to_string(),
                    });
                }
            }
        };
        Ok(Self {
            root,
            indent: indent_of(source),
            final_newline: text.is_none() || source.ends_with('\n') || source.trim().is_empty(),
            text,
        })
    }

    fn servers(&self) -> Option<&Map<String, Value>> {
        self.root.get(SERVERS).and_then(Value::as_object)
    }

    fn render(&self, root: &Map<String, Value>) -> String {
        let mut out = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(self.indent.as_bytes());
        let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
        // A map of JSON values always serializes.
        let _ = root.serialize(&mut serializer);
        let mut text = String::from_utf8_lossy(&out).into_owned();
        if self.final_newline {
            text.push('\n');
        }
        text
    }

    /// The change from the text as it was to `root` rendered in its layout.
    fn edit(&self, path: &Path, root: Option<&Map<String, Value>>) -> FileEdit {
        let kept_layout = match &self.text {
            Some(text) if !text.trim().is_empty() => self.render(&self.root) == *text,
            _ => true,
        };
        FileEdit {
            path: path.to_path_buf(),
            before: self.text.clone(),
            after: root.map(|root| self.render(root)),
            note: (!kept_layout).then(|| {
                "the file is written back as indented JSON: its other entries are unchanged, their layout may differ".to_string()
            }),
        }
    }
}

/// The indentation of the first indented line (two spaces when there is none).
fn indent_of(text: &str) -> String {
    text.lines()
        .skip(1)
        .map(|line| {
            line.chars()
                .take_while(|c| *c == ' ' || *c == '\t')
                .collect::<String>()
        })
        .find(|indent| !indent.is_empty())
        .unwrap_or_else(|| "  ".to_string())
}

fn not_an_object(path: &Path, what: &str) -> ClientError {
    ClientError::Unparsable {
        path: path.display().to_string(),
        why: format!("{what} is not a JSON object"),
    }
}

/// exai's entry in the document at `path`.
pub(crate) fn read(path: &Path, shape: Shape) -> Result<Option<Entry>, ClientError> {
    let document = Document::read(path)?;
    Ok(document
        .servers()
        .and_then(|servers| servers.get(SERVER_NAME))
        .map(|entry| entry_of(entry, shape)))
}

/// The `timeout` of the Gemini-style server entry that launches exai (`this_exe`, else any
/// `exai`), from a settings file's text. `Ok(None)`: no such entry, or it sets none.
pub fn exai_timeout_ms(text: &str, this_exe: Option<&Path>) -> Result<Option<Duration>, String> {
    let document: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let Some(servers) = document.get("mcpServers").and_then(Value::as_object) else {
        return Ok(None);
    };
    let shape = Shape {
        timeout_ms: true,
        ..Shape::PLAIN
    };
    let entries = servers.values().map(|entry| entry_of(entry, shape));
    Ok(super::launching_exai(entries, this_exe).and_then(|entry| entry.timeout))
}

fn entry_of(entry: &Value, shape: Shape) -> Entry {
    Entry {
        command: entry["command"].as_str().unwrap_or_default().to_string(),
        args: entry["args"]
            .as_array()
            .map(|args| {
                args.iter()
                    .map(|a| a.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default(),
        timeout: shape
            .timeout_ms
            .then(|| entry["timeout"].as_f64())
            .flatten()
            .and_then(|ms| crate::config::bounded_seconds(ms / 1000.0)),
    }
}

/// The change that makes the document at `path` launch `wanted` as `exai`; other keys of an
/// entry already there are kept, and so is a longer timeout.
pub(crate) fn plan_setup(path: &Path, shape: Shape, wanted: &Wanted) -> Result<Plan, ClientError> {
    let document = Document::read(path)?;
    if let Some(entry) = document.servers().and_then(|s| s.get(SERVER_NAME))
        && wanted.is_met_by(&entry_of(entry, shape), shape.timeout_ms)
    {
        return Ok(Plan::Nothing);
    }
    let mut root = document.root.clone();
    let servers = root
        .entry(SERVERS)
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| not_an_object(path, SERVERS))?;
    let entry = servers
        .entry(SERVER_NAME)
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    let entry = entry
        .as_object_mut()
        .ok_or_else(|| not_an_object(path, "mcpServers.exai"))?;
    if shape.stdio_type {
        entry.insert("type".into(), json!("stdio"));
    }
    entry.insert("command".into(), json!(wanted.command));
    entry.insert("args".into(), json!(wanted.args));
    if shape.empty_env && !entry.contains_key("env") {
        entry.insert("env".into(), json!({}));
    }
    if shape.timeout_ms {
        let ms = wanted.timeout.as_millis() as u64;
        let kept = entry.get("timeout").and_then(Value::as_u64).unwrap_or(0);
        entry.insert("timeout".into(), json!(ms.max(kept)));
    }
    Ok(Plan::Edit(document.edit(path, Some(&root))))
}

/// The change that takes `exai` out of the document at `path`: an `mcpServers` left empty goes
/// too, and a file left with nothing at all is removed (the backup keeps it).
pub(crate) fn plan_removal(path: &Path) -> Result<Plan, ClientError> {
    let document = Document::read(path)?;
    if document
        .servers()
        .is_none_or(|s| !s.contains_key(SERVER_NAME))
    {
        return Ok(Plan::Nothing);
    }
    let mut root = document.root.clone();
    if let Some(servers) = root.get_mut(SERVERS).and_then(Value::as_object_mut) {
        servers.shift_remove(SERVER_NAME);
        if servers.is_empty() {
            root.shift_remove(SERVERS);
        }
    }
    let after = (!root.is_empty()).then_some(&root);
    Ok(Plan::Edit(document.edit(path, after)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::test_support::{applied, wanted};

    fn temp_file(text: Option<&str>) -> std::path::PathBuf {
        let dir = crate::scratch::scratch_dir("json");
        let path = dir.join("settings.json");
        if let Some(text) = text {
            std::fs::write(&path, text).expect("write");
        }
        path
    }

    #[test]
    fn setup_then_removal_gives_back_the_same_bytes() {
        let original = "{\n    \"theme\": \"dark\",\n    \"mcpServers\": {\n        \"other\": {\n            \"command\": \"npx\",\n            \"args\": [\n                \"x\"\n            ]\n        }\n    },\n    \"zeta\": 1\n}\n";
        let path = temp_file(Some(original));
        let shape = Shape {
            timeout_ms: true,
            ..Shape::default()
        };
        let edit = applied(plan_setup(&path, shape, &wanted(630)).expect("plan"));
        assert!(edit.note.is_none());
        let written = std::fs::read_to_string(&path).expect("read");
        assert!(
            written
                .contains("        \"exai\": {\n            \"command\": \"/opt/exai/bin/exai\""),
            "{written}"
        );
        let value: Value = serde_json::from_str(&written).expect("json");
        assert_eq!(value["mcpServers"]["exai"]["timeout"], 630_000);
        assert_eq!(value["zeta"], 1);
        assert_eq!(
            read(&path, shape).expect("read"),
            Some(Entry {
                command: "/opt/exai/bin/exai".into(),
                args: vec!["stdio".into()],
                timeout: Some(Duration::from_secs(630)),
            })
        );
        assert!(matches!(
            plan_setup(&path, shape, &wanted(630)).expect("plan"),
            Plan::Nothing
        ));
        applied(plan_removal(&path).expect("plan"));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), original);
        assert!(matches!(plan_removal(&path).expect("plan"), Plan::Nothing));
    }

    #[test]
    fn a_file_exai_created_goes_again_with_the_entry() {
        let path = temp_file(None);
        let shape = Shape::default();
        applied(plan_setup(&path, shape, &wanted(630)).expect("plan"));
        let value: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        assert_eq!(
            value,
            json!({"mcpServers": {"exai": {"command": "/opt/exai/bin/exai", "args": ["stdio"]}}})
        );
        applied(plan_removal(&path).expect("plan"));
        assert!(!path.exists());
    }

    #[test]
    fn a_broken_file_is_refused_with_its_line() {
        let path = temp_file(Some("{\n  \"a\": 1,\n  oops\n}\n"));
        let error = plan_setup(&path, Shape::default(), &wanted(630)).expect_err("refused");
        let message = error.to_string();
        assert!(message.contains("line 3"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
    }

    #[test]
    fn tabs_stay_tabs() {
        let path = temp_file(Some("{\n\t\"a\": 1\n}"));
        let edit = applied(plan_setup(&path, Shape::default(), &wanted(630)).expect("plan"));
        let after = edit.after.expect("after");
        assert!(
            after.contains("\n\t\"mcpServers\": {\n\t\t\"exai\""),
            "{after}"
        );
        assert!(!after.ends_with('\n'));
    }
}
