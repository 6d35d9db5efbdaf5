//! `threads`: find a conversation again by words from its first prompt (or list the recent
//! ones), with the continuation ids that continue them.

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::{ExaiTool, ToolContext, ToolFuture, definition, local_read_only, parse_arguments};
use crate::calls::{FailureKind, ToolFailure};
use crate::store::ThreadFilter;

pub struct Threads;

/// Most threads one answer lists.
const MOST_LISTED: u32 = 50;
/// Characters of each first prompt shown in the answer's text.
const PROMPT_SHOWN: usize = 160;

/// Arguments of `threads`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ThreadsArguments {
    /// Words from the conversation's first prompt (all must appear, any case); none: the latest.
    #[serde(default)]
    find: Option<String>,
    /// How many conversations to list (default 10, at most 50).
    #[serde(default)]
    limit: Option<u32>,
}

impl ExaiTool for Threads {
    fn definition(&self) -> Tool {
        definition::<ThreadsArguments>(
            "threads",
            "Find an earlier conversation (chat, consensus, workflows) by words from its first \
             prompt, or list the recent ones, newest first: each with its continuation_id (pass it \
             to continue), tools, turns, last activity and cost.",
            local_read_only(),
        )
    }

    fn run(&self, arguments: JsonObject, ctx: ToolContext) -> ToolFuture {
        Box::pin(async move {
            let args: ThreadsArguments = parse_arguments("threads", arguments)?;
            let limit = args.limit.unwrap_or(10).clamp(1, MOST_LISTED) as usize;
            let words: Vec<String> = args
                .find
                .as_deref()
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect();
            let filter = ThreadFilter {
                user: ctx.call.origin.caller.sees_only().map(str::to_string),
                words: words.clone(),
                limit,
                ..Default::default()
            };
            let rows = ctx
                .calls
                .store()
                .read(move |store| store.list_threads(&filter))
                .await
                .map_err(|e| ToolFailure::new(FailureKind::Store, e.to_string()))?;
            let mut text = match (rows.len(), words.is_empty()) {
                (0, true) => "No conversations yet.".to_string(),
                (0, false) => format!(
                    "No conversation's first prompt holds all of: {}.",
                    words.join(" ")
                ),
                (n, true) => format!("{n} recent conversation(s), newest first:"),
                (n, false) => format!(
                    "{n} conversation(s) whose first prompt holds {}, newest first:",
                    words.join(" ")
                ),
            };
            for row in &rows {
                let prompt = row.first_prompt.as_deref().unwrap_or("-");
                let flat = prompt.split_whitespace().collect::<Vec<_>>().join(" ");
                let shown: String = flat.chars().take(PROMPT_SHOWN).collect();
                let cut = if shown.len() < flat.len() { "…" } else { "" };
                text.push_str(&format!(
                    "\n- continuation_id {} · {} · {} turn(s) · {} s ago · {}\n  \"{shown}{cut}\"",
                    row.id,
                    row.tools.join(", "),
                    row.turn_count,
                    (crate::store::now_ms() - row.updated_at_ms).max(0) / 1000,
                    row.cost(),
                ));
            }
            let threads: Vec<_> = rows.iter().map(crate::cli::threads::summary_json).collect();
            let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
            result.structured_content = Some(json!({ "threads": threads }));
            Ok(result)
        })
    }
}
