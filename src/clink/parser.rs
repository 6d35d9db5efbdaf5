//! What every CLI's event stream comes down to: what the sub-agent is doing now (for progress)
//! and, at the end, its answer, session, model, usage and cost. One parser per CLI
//! (`claude.rs`, `codex.rs`, `gemini.rs`) behind one small trait.

use serde_json::Value;

use super::config::ParserKind;

/// What a run reported, gathered from its events.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    /// The final answer (the result event's, else the agent messages joined).
    pub answer: Option<String>,
    /// The CLI's own session id, for resuming it.
    pub session_id: Option<String>,
    pub model: Option<String>,
    pub tokens_in: Option<u64>,
    pub tokens_out: Option<u64>,
    /// Input tokens served from the CLI's provider cache (part of `tokens_in`).
    pub cached_tokens: Option<u64>,
    /// What the CLI says the run cost (Claude Code reports it; the others do not).
    pub cost_usd: Option<f64>,
    /// The CLI said the run failed, and why.
    pub error: Option<String>,
    /// The answer was longer than the bound and was cut.
    pub answer_cut: bool,
}

/// Reads one CLI's output, a line at a time.
pub trait StreamParser: Send {
    /// Takes one line of standard output; returns what the sub-agent is doing now when the
    /// line says (“running: cargo test”, “reading src/x.rs”, “writing the answer”).
    fn line(&mut self, line: &str) -> Option<String>;
    /// What the whole stream reported.
    fn report(&self) -> &Report;
}

/// The parser for `kind`, keeping at most `max_answer_bytes` of answer.
pub fn parser_for(kind: ParserKind, max_answer_bytes: usize) -> Box<dyn StreamParser> {
    match kind {
        ParserKind::Claude => Box::new(super::claude::Claude::new(max_answer_bytes)),
        ParserKind::Codex => Box::new(super::codex::Codex::new(max_answer_bytes)),
        ParserKind::Gemini => Box::new(super::gemini::Gemini::new(max_answer_bytes)),
    }
}

/// Most characters of an activity line (one progress message).
const ACTIVITY_CHARS: usize = 120;

/// One line of what the sub-agent does, on one line and short.
pub fn activity_line(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= ACTIVITY_CHARS {
        return flat;
    }
    let cut: String = flat.chars().take(ACTIVITY_CHARS - 1).collect();
    format!("{cut}…")
}

/// What a tool call of the sub-agent amounts to, from its name and input (Claude Code's and
/// Gemini CLI's tool names both).
pub fn tool_activity(name: &str, input: &Value) -> String {
    let field = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| input.get(*k).and_then(Value::as_str))
            .unwrap_or("")
            .to_string()
    };
    let path = || field(&["file_path", "absolute_path", "path", "notebook_path"]);
    let line = match name {
        "Bash" | "run_shell_command" | "shell" => format!("running: {}", field(&["command"])),
        "Read" | "read_file" | "read_many_files" => format!("reading {}", path()),
        "Edit" | "MultiEdit" | "Write" | "NotebookEdit" | "write_file" | "replace" | "edit" => {
            format!("writing {}", path())
        }
        "Grep" | "Glob" | "search_file_content" | "glob" | "grep" | "list_directory" | "LS" => {
            format!("searching {}", field(&["pattern", "path", "dir_path"]))
        }
        "WebSearch" | "google_web_search" | "web_search" => {
            format!("searching the web: {}", field(&["query"]))
        }
        "WebFetch" | "web_fetch" => format!("fetching {}", field(&["url", "prompt"])),
        "Task" | "Agent" => format!("starting a helper: {}", field(&["description"])),
        "TodoWrite" | "write_todos" => "updating its plan".to_string(),
        other => format!("using {other}"),
    };
    activity_line(&line)
}

/// Appends `text` to `answer`, keeping it within `max` bytes (cut on a character boundary).
pub fn append_bounded(answer: &mut String, text: &str, max: usize, cut: &mut bool) {
    let room = max.saturating_sub(answer.len());
    if text.len() <= room {
        answer.push_str(text);
        return;
    }
    let mut end = room;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    answer.push_str(&text[..end]);
    *cut = true;
}

/// `text` cut to `max` bytes (on a character boundary), and whether it was.
pub fn bounded(text: &str, max: usize) -> (String, bool) {
    let mut out = String::new();
    let mut cut = false;
    append_bounded(&mut out, text, max, &mut cut);
    (out, cut)
}

/// A count from a JSON number, if it is one.
pub fn count(value: Option<&Value>) -> Option<u64> {
    value.and_then(Value::as_u64)
}

/// Adds an optional count to a running total.
pub fn add(total: &mut Option<u64>, more: Option<u64>) {
    if let Some(more) = more {
        *total = Some(total.unwrap_or(0).saturating_add(more));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tool_calls_read_as_what_the_agent_does() {
        assert_eq!(
            tool_activity("Bash", &json!({"command": "cargo test\n  --lib"})),
            "running: cargo test --lib"
        );
        assert_eq!(
            tool_activity("read_file", &json!({"absolute_path": "/p/src/x.rs"})),
            "reading /p/src/x.rs"
        );
        assert_eq!(tool_activity("Mystery", &json!({})), "using Mystery");
        let long = tool_activity("Bash", &json!({"command": "x".repeat(500)}));
        assert!(long.chars().count() <= ACTIVITY_CHARS && long.ends_with('…'));
    }

    #[test]
    fn an_answer_is_cut_on_a_character_boundary() {
        let (text, cut) = bounded("ééé", 3);
        assert_eq!((text.as_str(), cut), ("é", true));
        let (text, cut) = bounded("abc", 3);
        assert_eq!((text.as_str(), cut), ("abc", false));
    }
}
