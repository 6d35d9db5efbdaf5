//! Gemini CLI's `--output-format stream-json` (JSON Lines): `init` with the session id and
//! model, `message` (user or assistant, `delta` chunks), `tool_use`, `tool_result`, `error`
//! (non-fatal), and a closing `result` with status and stats (tokens). Gemini reports no cost.

use serde_json::Value;

use super::parser::{
    Report, StreamParser, activity_line, add, append_bounded, count, tool_activity,
};

pub struct Gemini {
    report: Report,
    max_answer_bytes: usize,
    /// The assistant's text so far (its deltas joined).
    text: String,
    cut: bool,
}

impl Gemini {
    pub fn new(max_answer_bytes: usize) -> Self {
        Self {
            report: Report::default(),
            max_answer_bytes,
            text: String::new(),
            cut: false,
        }
    }
}

impl StreamParser for Gemini {
    fn line(&mut self, line: &str) -> Option<String> {
        let event: Value = serde_json::from_str(line).ok()?;
        let text = |key: &str| event.get(key).and_then(Value::as_str);
        match text("type")? {
            "init" => {
                self.report.session_id = text("session_id").map(str::to_string);
                self.report.model = text("model").map(str::to_string);
                Some("started".to_string())
            }
            "message" if text("role") == Some("assistant") => {
                let chunk = text("content").unwrap_or("");
                if event.get("delta").and_then(Value::as_bool) != Some(true) {
                    self.text.clear();
                    self.cut = false;
                }
                append_bounded(&mut self.text, chunk, self.max_answer_bytes, &mut self.cut);
                self.report.answer = Some(self.text.clone());
                self.report.answer_cut = self.cut;
                Some("writing the answer".to_string())
            }
            "tool_use" => {
                // A tool call ends the text before it: the answer is what follows the last one.
                self.text.clear();
                let name = text("tool_name").unwrap_or("a tool");
                Some(tool_activity(
                    name,
                    event.get("parameters").unwrap_or(&Value::Null),
                ))
            }
            "result" => {
                if let Some(stats) = event.get("stats") {
                    add(&mut self.report.tokens_in, count(stats.get("input_tokens")));
                    add(
                        &mut self.report.tokens_out,
                        count(stats.get("output_tokens")),
                    );
                    add(&mut self.report.cached_tokens, count(stats.get("cached")));
                }
                if text("status") == Some("error") {
                    let why = event
                        .pointer("/error/message")
                        .and_then(Value::as_str)
                        .unwrap_or("the run failed");
                    self.report.error = Some(activity_line(why));
                    return Some("failed".to_string());
                }
                Some("done".to_string())
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
    fn a_stream_becomes_activities_and_a_report() {
        let mut p = Gemini::new(1000);
        let lines = [
            r#"{"type":"init","timestamp":"2026-01-01T00:00:00Z","session_id":"g-1","model":"gemini-2.5-pro"}"#,
            r#"{"type":"message","role":"user","content":"hi"}"#,
            r#"{"type":"tool_use","tool_name":"read_file","tool_id":"t1","parameters":{"absolute_path":"/p/a.rs"}}"#,
            r#"{"type":"tool_result","tool_id":"t1","status":"success","output":"..."}"#,
            r#"{"type":"message","role":"assistant","content":"It is ","delta":true}"#,
            r#"{"type":"message","role":"assistant","content":"fine.","delta":true}"#,
            r#"{"type":"result","status":"success","stats":{"total_tokens":30,"input_tokens":20,"output_tokens":10,"cached":5,"duration_ms":900,"tool_calls":1}}"#,
        ];
        let seen: Vec<Option<String>> = lines.iter().map(|l| p.line(l)).collect();
        assert_eq!(seen[2].as_deref(), Some("reading /p/a.rs"));
        assert_eq!(
            seen[1], None,
            "the user's own message is not the agent's work"
        );
        let r = p.report();
        assert_eq!(r.answer.as_deref(), Some("It is fine."));
        assert_eq!(r.session_id.as_deref(), Some("g-1"));
        assert_eq!(
            (r.tokens_in, r.cached_tokens, r.tokens_out),
            (Some(20), Some(5), Some(10))
        );
    }
}
