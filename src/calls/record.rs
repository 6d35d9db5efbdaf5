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

/// The daemon's JSON log lines that mention `call_id`, oldest first (blocking: reads files).
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
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| {
            text.lines()
                .filter(|l| l.contains(call_id))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}
