//! Claude Code's `--output-format stream-json --verbose`: a `system`/`init` event with the
//! session id and model, `assistant` messages whose content holds text, thinking and `tool_use`
//! blocks, and a closing `result` with the answer, `is_error`, `total_cost_usd` and `usage`.

use serde_json::Value;

use super::parser::{
    Report, StreamParser, activity_line, add, append_bounded, bounded, count, tool_activity,
};

pub struct Claude {
    report: Report,
    max_answer_bytes: usize,
    /// The latest assistant text, the answer when no result event comes.
    last_text: String,
    last_text_cut: bool,
}

impl Claude {
    pub fn new(max_answer_bytes: usize) -> Self {
        Self {
            report: Report::default(),
            max_answer_bytes,
            last_text: String::new(),
            last_text_cut: false,
        }
    }

    fn assistant(&mut self, message: &Value) -> Option<String> {
        // `<synthetic>` marks a message Claude Code made up itself (an error), not a model's.
        if let Some(model) = message
            .get("model")
            .and_then(Value::as_str)
            .filter(|m| !m.starts_with('<'))
        {
            self.report.model = Some(model.to_string());
        }
        let mut doing = None;
        let mut text = String::new();
        for block in message
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match block.get("type").and_then(Value::as_str) {
                Some("tool_use") => {
                    let name = block
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("a tool");
                    doing = Some(tool_activity(
                        name,
                        block.get("input").unwrap_or(&Value::Null),
                    ));
                }
                Some("thinking") => doing = Some("thinking".to_string()),
                Some("text") => {
                    if let Some(t) = block.get("text").and_then(Value::as_str) {
                        text.push_str(t);
                    }
                    doing = Some("writing the answer".to_string());
                }
                _ => {}
            }
        }
        if !text.trim().is_empty() {
            self.last_text.clear();
            self.last_text_cut = false;
            append_bounded(
                &mut self.last_text,
                &text,
                self.max_answer_bytes,
                &mut self.last_text_cut,
            );
            self.report.answer = Some(self.last_text.clone());
            self.report.answer_cut = self.last_text_cut;
        }
        doing
    }

    fn result(&mut self, event: &Value) -> Option<String> {
        if let Some(text) = event.get("result").and_then(Value::as_str) {
            let (answer, cut) = bounded(text, self.max_answer_bytes);
            self.report.answer = Some(answer);
            self.report.answer_cut = cut;
        }
        if let Some(cost) = event.get("total_cost_usd").and_then(Value::as_f64) {
            self.report.cost_usd = Some(cost);
        }
        if let Some(usage) = event.get("usage") {
            let input = count(usage.get("input_tokens"));
            let created = count(usage.get("cache_creation_input_tokens"));
            let read = count(usage.get("cache_read_input_tokens"));
            let mut tokens_in = None;
            for part in [input, created, read] {
                add(&mut tokens_in, part);
            }
            self.report.tokens_in = tokens_in;
            self.report.cached_tokens = read;
            self.report.tokens_out = count(usage.get("output_tokens"));
        }
        let failed = event
            .get("is_error")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            || event
                .get("subtype")
                .and_then(Value::as_str)
                .is_some_and(|s| s.starts_with("error"));
        if failed {
            let why = event
                .get("result")
                .and_then(Value::as_str)
                .or_else(|| event.get("subtype").and_then(Value::as_str))
                .unwrap_or("the run failed");
            self.report.error = Some(activity_line(why));
        }
        Some(if failed { "failed" } else { "done" }.to_string())
    }
}

impl StreamParser for Claude {
    fn line(&mut self, line: &str) -> Option<String> {
        let event: Value = serde_json::from_str(line).ok()?;
        if let Some(id) = event.get("session_id").and_then(Value::as_str) {
            self.report.session_id = Some(id.to_string());
        }
        match event.get("type").and_then(Value::as_str)? {
            "system" if event.get("subtype").and_then(Value::as_str) == Some("init") => {
                if let Some(model) = event.get("model").and_then(Value::as_str) {
                    self.report.model = Some(model.to_string());
                }
                Some("started".to_string())
            }
            "assistant" => self.assistant(event.get("message")?),
            "result" => self.result(&event),
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
        let mut p = Claude::new(1000);
        let lines = [
            r#"{"type":"system","subtype":"init","session_id":"s-1","model":"claude-sonnet-4-5","tools":["Bash"]}"#,
            r#"{"type":"assistant","message":{"model":"claude-sonnet-4-5","content":[{"type":"tool_use","id":"t1","name":"Bash","input":{"command":"cargo test"}}]},"session_id":"s-1"}"#,
            r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","content":"ok"}]},"session_id":"s-1"}"#,
            r#"{"type":"assistant","message":{"content":[{"type":"text","text":"All tests pass."}]},"session_id":"s-1"}"#,
            r#"{"type":"result","subtype":"success","is_error":false,"result":"All tests pass.","session_id":"s-1","total_cost_usd":0.0123,"usage":{"input_tokens":10,"cache_creation_input_tokens":5,"cache_read_input_tokens":100,"output_tokens":42}}"#,
        ];
        let seen: Vec<Option<String>> = lines.iter().map(|l| p.line(l)).collect();
        assert_eq!(seen[1].as_deref(), Some("running: cargo test"));
        assert_eq!(seen[2], None);
        assert_eq!(seen[3].as_deref(), Some("writing the answer"));
        let r = p.report();
        assert_eq!(r.answer.as_deref(), Some("All tests pass."));
        assert_eq!(r.session_id.as_deref(), Some("s-1"));
        assert_eq!(r.model.as_deref(), Some("claude-sonnet-4-5"));
        assert_eq!(
            (r.tokens_in, r.cached_tokens, r.tokens_out),
            (Some(115), Some(100), Some(42))
        );
        assert_eq!(r.cost_usd, Some(0.0123));
        assert_eq!(r.error, None);
        assert_eq!(p.line("not json"), None);
    }

    #[test]
    fn an_error_result_is_the_runs_failure() {
        let mut p = Claude::new(1000);
        p.line(r#"{"type":"result","subtype":"success","is_error":true,"result":"Not logged in · Please run /login"}"#);
        assert_eq!(
            p.report().error.as_deref(),
            Some("Not logged in · Please run /login")
        );
    }
}
