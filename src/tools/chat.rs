//! `chat`: ask a model a question; the answer streams back with progress.

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Deserialize;

use super::{ExaiTool, ToolContext, ToolFuture, definition, parse_arguments};
use crate::calls::{ToolFailure, Usage};
use crate::providers::{ChatMessage, ChatRequest, Need};

const SYSTEM_PROMPT: &str = include_str!("prompts/chat.txt");

pub struct Chat;

/// Arguments of `chat`.
#[derive(Debug, Deserialize, JsonSchema)]
struct ChatArguments {
    /// The question or request for the model.
    prompt: String,
    /// Model id (or `provider:model`); the configured default when omitted.
    #[serde(default)]
    model: Option<String>,
    /// Sampling temperature (0–2); the model's default when omitted.
    #[serde(default)]
    temperature: Option<f32>,
}

impl ExaiTool for Chat {
    fn definition(&self) -> Tool {
        definition::<ChatArguments>(
            "chat",
            "Ask another model (GLM, Kimi or any OpenAI-compatible one) for a second opinion, an \
             explanation or a plan. Streams; sends progress while the model works.",
            ToolAnnotations::new().read_only(true).open_world(true),
        )
    }

    fn may_run_long(&self) -> bool {
        true
    }

    fn run(&self, arguments: JsonObject, ctx: ToolContext) -> ToolFuture {
        Box::pin(async move {
            let args: ChatArguments = parse_arguments("chat", arguments)?;
            if args.prompt.trim().is_empty() {
                return Err(ToolFailure::new(
                    "bad_arguments",
                    "invalid arguments for chat: `prompt` is empty",
                ));
            }
            if let Some(t) = args.temperature
                && !(0.0..=2.0).contains(&t)
            {
                return Err(ToolFailure::new(
                    "bad_arguments",
                    format!("invalid arguments for chat: temperature {t} is outside 0–2"),
                ));
            }
            let target = ctx
                .providers
                .resolve(args.model.as_deref(), Need::Deep)
                .map_err(|message| ToolFailure::new("no_model", message))?;
            let request = ChatRequest {
                messages: vec![
                    ChatMessage {
                        role: "system",
                        content: SYSTEM_PROMPT.to_string(),
                    },
                    ChatMessage {
                        role: "user",
                        content: args.prompt,
                    },
                ],
                temperature: args.temperature,
                thinking: None,
                deadline: ctx.call.deadline,
            };
            let answer = ctx
                .providers
                .chat(target, &request, &ctx.call.progress)
                .await
                .map_err(|failure| {
                    ctx.call.set_usage(Usage {
                        attempts: Some(failure.attempts),
                        ..Usage::default()
                    });
                    ToolFailure {
                        kind: failure.error.kind(),
                        message: match failure.attempts {
                            0 | 1 => failure.error.to_string(),
                            n => format!("{} (after {n} attempts)", failure.error),
                        },
                        timed_out: failure.error.is_timeout(),
                    }
                })?;
            ctx.call.set_usage(Usage {
                tokens_in: answer.tokens_in,
                tokens_out: answer.tokens_out,
                reasoning_tokens: answer.reasoning_tokens,
                time_to_first_token: answer.time_to_first_token,
                attempts: Some(answer.attempts),
            });
            ctx.call.set_reasoning(answer.reasoning);
            Ok(CallToolResult::success(vec![ContentBlock::text(
                answer.text,
            )]))
        })
    }
}
