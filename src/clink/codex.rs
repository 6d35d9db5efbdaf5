//! Codex's `codex exec --json` (JSON Lines): `thread.started` with the thread id (the session
//! to resume), `turn.started`, `item.started`/`item.updated`/`item.completed` for each item
//! (agent_message, reasoning, command_execution, file_change, mcp_tool_call, web_search,
//! todo_list), then `turn.completed` with usage or `turn.failed`/`error`. Codex reports no cost.

use serde_json::Value;

use super::parser::{Report, StreamParser, activity_line, add, bounded, count};

pub struct Codex {
    report: Report,
    max_answer_bytes: usize,
}

impl Codex {
    pub fn new(max_answer_bytes: usize) -> Self {
        Self {
            report: Report::default(),
            max_answer_bytes,
        }
    }

    fn item(&mut self, item: &Value, completed: bool) -> Option<String> {
        let text = |key: &str| item.get(key).and_then(Value::as_str).unwrap_or("");
        // Older releases named the field `item_type`.
        let kind = item
            .get("type")
            .or_else(|| item.get("item_type"))
            .and_then(Value::as_str)?;
        let doing = match kind {
            "agent_message" | "assistant_message" => {
                if completed {
                    let (answer, cut) = bounded(text("text"), self.max_answer_bytes);
                    self.report.answer = Some(answer);
                    self.report.answer_cut = cut;
                }
                "writing the answer".to_string()
            }
            "reasoning" => "thinking".to_string(),
            "command_execution" => format!("running: {}", text("command")),
            "file_change" => {
                let paths: Vec<&str> = item
                    .get("changes")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.get("path").and_then(Value::as_str))
                    .collect();
                format!("writing {}", paths.join(", "))
            }
            "mcp_tool_call" => format!("using {}.{}", text("server"), text("tool")),
            "web_search" => format!("searching the web: {}", text("query")),
            "todo_list" => "updating its plan".to_string(),
            _ => return None,
        };
        Some(activity_line(&doing))
    }
}

impl StreamParser for Codex {
    fn line(&mut self, line: &str) -> Option<String> {
        let event: Value = serde_json::from_str(line).ok()?;
        match event.get("type").and_then(Value::as_str)? {
            "thread.started" => {
                self.report.session_id = event
                    .get("thread_id")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                Some("started".to_string())
            }
            "turn.started" => Some("thinking".to_string()),
            "item.started" | "item.updated" => self.item(event.get("item")?, false),
            "item.completed" => self.item(event.get("item")?, true),
            "turn.completed" => {
                if let Some(usage) = event.get("usage") {
                    add(&mut self.report.tokens_in, count(usage.get("input_tokens")));
                    add(
                        &mut self.report.cached_tokens,
                        count(usage.get("cached_input_tokens")),
                    );
                    add(
                        &mut self.report.tokens_out,
                        count(usage.get("output_tokens")),
                    );
                }
                Some("done".to_string())
            }
            "turn.failed" | "error" => {
                let why = event
                    .pointer("/error/message")
                    .or_else(|| event.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("the run failed");
                self.report.error = Some(activity_line(why));
                Some("failed".to_string())
            }
            _ => None,
        }
    }

    fn report(&self) -> &Report {
        &self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_becomes_activities_and_a_report() {
        let mut p = Codex::new(1000);
        let lines = [
            r#"{"type":"thread.started","thread_id":"0199a213-81c0-7800-8aa1-bbab2a035a53"}"#,
            r#"{"type":"turn.started"}"#,
            r#"{"type":"item.started","item":{"id":"item_1","type":"command_execution","command":"bash -lc ls","status":"in_progress"}}"#,
            r#"{"type":"item.completed","item":{"id":"item_2","type":"file_change","changes":[{"path":"src/x.rs","kind":"update"}],"status":"completed"}}"#,
            r#"{"type":"item.completed","item":{"id":"item_3","type":"agent_message","text":"Done: renamed it."}}"#,
            r#"{"type":"turn.completed","usage":{"input_tokens":24763,"cached_input_tokens":24448,"output_tokens":122}}"#,
        ];
        let seen: Vec<Option<String>> = lines.iter().map(|l| p.line(l)).collect();
        assert_eq!(seen[2].as_deref(), Some("running: bash -lc ls"));
        assert_eq!(seen[3].as_deref(), Some("writing src/x.rs"));
        let r = p.report();
        assert_eq!(
            r.session_id.as_deref(),
            Some("0199a213-81c0-7800-8aa1-bbab2a035a53")
        );
        assert_eq!(r.answer.as_deref(), Some("Done: renamed it."));
        assert_eq!(
            (r.tokens_in, r.cached_tokens, r.tokens_out),
            (Some(24763), Some(24448), Some(122))
        );
        assert_eq!(r.cost_usd, None, "codex reports no cost");
    }

    #[test]
    fn a_failed_turn_is_the_runs_failure() {
        let mut p = Codex::new(1000);
        p.line(r#"{"type":"turn.failed","error":{"message":"stream disconnected"}}"#);
        assert_eq!(p.report().error.as_deref(), Some("stream disconnected"));
    }
}
