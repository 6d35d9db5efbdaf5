//! `challenge`: turns a claim into a request for critical reassessment (no model call), so the
//! agent weighs a pushback instead of agreeing by reflex.

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::{ExaiTool, ToolContext, ToolFuture, definition, local_read_only, parse_arguments};
use crate::calls::{FailureKind, ToolFailure};

const INSTRUCTIONS: &str = include_str!("prompts/challenge.txt");

pub struct Challenge;

/// Arguments of `challenge`.
#[derive(Debug, Deserialize, JsonSchema)]
struct ChallengeArguments {
    /// The statement, claim or pushback to reassess critically.
    prompt: String,
}

impl ExaiTool for Challenge {
    fn definition(&self) -> Tool {
        definition::<ChallengeArguments>(
            "challenge",
            "Reassess a claim or a pushback critically instead of agreeing by reflex (no model call).",
            local_read_only(),
        )
    }

    fn run(&self, arguments: JsonObject, _ctx: ToolContext) -> ToolFuture {
        Box::pin(async move {
            let args: ChallengeArguments = parse_arguments("challenge", arguments)?;
            let statement = args.prompt.trim();
            if statement.is_empty() {
                return Err(ToolFailure::new(
                    FailureKind::BadArguments,
                    "invalid arguments for challenge: `prompt` is empty",
                ));
            }
            let challenge = format!("{INSTRUCTIONS}\n{statement}");
            let mut result = CallToolResult::success(vec![ContentBlock::text(challenge.clone())]);
            result.structured_content = Some(json!({
                "status": "challenge_accepted",
                "original_statement": statement,
                "challenge_prompt": challenge,
            }));
            Ok(result)
        })
    }
}
