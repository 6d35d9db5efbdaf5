//! A call's record as people read it: the answer's text, the daemon's log lines that name the
//! call, and the one JSON of both that `exai calls show --json` prints and the live page shows.

use std::path::Path;

use serde_json::json;

use crate::store::CallRow;

/// The record and its log lines, as `exai calls show --json` prints them.
pub fn record_json(row: &CallRow, log: &[String]) -> serde_json::Value {
    json!({"call": row, "log": log})
}

/// The text blocks of a stored `CallToolResult`, or the raw JSON.
pub fn result_text(result: &str) -> String {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(result) else {
        return result.to_string();
    };
    let texts: Vec<&str> = value["content"]
        .as_array()
        .map(|blocks| blocks.iter().filter_map(|b| b["text"].as_str()).collect())
        .unwrap_or_default();
    if texts.is_empty() {
        result.to_string()
    } else {
        texts.join("\n")
    }
}

/// The daemon's JSON log lines of call `call_id` (its span's or an event's `call_id` field, not
/// any line whose text holds the id), oldest first (blocking: reads files).
pub fn log_lines(dir: &Path, call_id: &str) -> Vec<String> {
    // In the daemon, the lines still waiting for the log thread are part of the record.
    crate::logging::write_now();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("exai.log"))
        })
        .collect();
    files.sort();
    // JSON escapes the quotes of any text a line carries, so only a field can match.
    let field = format!("\"call_id\":{}", serde_json::Value::from(call_id));
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| {
            text.lines()
                .filter(|l| l.contains(&field))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_calls_log_is_its_own_lines_not_every_line_holding_its_id() {
        let dir = crate::scratch::scratch_dir("log");
        let id = "0193a7b0-0000-7000-8000-000000000001";
        let lines = [
            // The call's own line (in its span), and an event naming it in a field.
            format!(r#"{{"message":"started","span":{{"call_id":"{id}","name":"call"}}}}"#),
            format!(r#"{{"message":"cancel asked","call_id":"{id}"}}"#),
            // Another call whose session id is this id, and text quoting it.
            format!(r#"{{"message":"x","span":{{"call_id":"other","session":"{id}"}}}}"#),
            format!(r#"{{"message":"prompt said \"call_id\":\"{id}\""}}"#),
        ];
        std::fs::write(dir.join("exai.log"), lines.join("\n")).expect("written");
        let found = log_lines(&dir, id);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(found, lines[..2].to_vec());
    }
}
