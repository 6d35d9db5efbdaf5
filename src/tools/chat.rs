//! `chat`: ask a model a question, with files and conversation memory; the answer streams
//! back with progress.

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::{ExaiTool, ToolContext, ToolFuture, answer, definition, parse_arguments};
use crate::calls::{ToolFailure, Usage};
use crate::providers::{ChatMessage, ChatRequest, Need};
use crate::threads::{Thread, ThreadError, Turn};
use crate::{files, tokens};

const SYSTEM_PROMPT: &str = include_str!("prompts/chat.txt");

pub struct Chat;

/// Arguments of `chat` (names as Zen/PAL clients send them).
#[derive(Debug, Deserialize, JsonSchema)]
struct ChatArguments {
    /// The question or request for the model (may be empty when `files` holds a prompt.txt).
    prompt: String,
    /// Model id, alias or `provider:model`; the configured default (or the best available) when omitted.
    #[serde(default)]
    model: Option<String>,
    /// Absolute paths of files or directories to show the model.
    #[serde(default, alias = "absolute_file_paths")]
    files: Option<Vec<String>>,
    /// Continue an earlier conversation (from any tool) by its continuation_id.
    #[serde(default)]
    continuation_id: Option<String>,
    /// Sampling temperature (0–2); the model's default when omitted.
    #[serde(default)]
    temperature: Option<f32>,
    /// How hard the model should think: minimal, low, medium, high or max.
    #[serde(default)]
    thinking_mode: Option<String>,
    /// Let the model search the web (GLM/Kimi models that can); default false.
    #[serde(default)]
    use_websearch: Option<bool>,
    /// Show the model's reasoning, marked, before its answer; default false.
    #[serde(default)]
    show_reasoning: Option<bool>,
}

fn bad(message: String) -> ToolFailure {
    ToolFailure::new(
        "bad_arguments",
        format!("invalid arguments for chat: {message}"),
    )
}

/// Asks the agent to send an oversized prompt as a file instead (Zen's `resend_prompt`).
fn resend_prompt(size: usize, limit: usize) -> CallToolResult {
    let text = format!(
        "The prompt is {size} characters, more than the {limit} that fit in an MCP message here. \
         Save it to a file named prompt.txt and call chat again with its absolute path in `files` \
         (and a short `prompt`, or none); exai will read the prompt from the file."
    );
    let mut result = CallToolResult::success(vec![ContentBlock::text(text.clone())]);
    result.structured_content = Some(json!({"status": "resend_prompt", "content": text}));
    result
}

fn blocking_failure(e: tokio::task::JoinError) -> ToolFailure {
    ToolFailure::new("internal", format!("a blocking task failed: {e}"))
}

impl ExaiTool for Chat {
    fn definition(&self) -> Tool {
        definition::<ChatArguments>(
            "chat",
            "Ask another model (GLM, Kimi or any OpenAI-compatible one) for a second opinion, an \
             explanation or a plan, optionally with files; continue a conversation with its \
             continuation_id. Streams; sends progress while the model works.",
            ToolAnnotations::new().read_only(true).open_world(true),
        )
    }

    fn may_run_long(&self) -> bool {
        true
    }

    fn run(&self, arguments: JsonObject, ctx: ToolContext) -> ToolFuture {
        Box::pin(async move {
            let mut args: ChatArguments = parse_arguments("chat", arguments)?;
            // A prompt too big for MCP comes back as a file named prompt.txt.
            if let Some(files) = &mut args.files
                && let Some(at) = files.iter().position(|f| {
                    std::path::Path::new(f)
                        .file_name()
                        .is_some_and(|n| n == "prompt.txt")
                })
            {
                let path = files.remove(at);
                let roots = ctx.config.allowed_roots.clone();
                let text =
                    tokio::task::spawn_blocking(move || files::read_prompt_file(&path, &roots))
                        .await
                        .map_err(blocking_failure)?
                        .map_err(|why| bad(format!("prompt.txt: {why}")))?;
                args.prompt = if args.prompt.trim().is_empty() {
                    text
                } else {
                    format!("{text}\n\n{}", args.prompt)
                };
            } else if args.prompt.len() > ctx.config.prompt_size_limit {
                return Ok(resend_prompt(
                    args.prompt.len(),
                    ctx.config.prompt_size_limit,
                ));
            }
            if args.prompt.trim().is_empty() {
                return Err(bad("`prompt` is empty".into()));
            }
            if let Some(t) = args.temperature
                && !(0.0..=2.0).contains(&t)
            {
                return Err(bad(format!("temperature {t} is outside 0–2")));
            }
            let thinking = match args.thinking_mode.as_deref() {
                None => None,
                Some("minimal") => Some(false),
                Some("low" | "medium" | "high" | "max") => Some(true),
                Some(other) => {
                    return Err(bad(format!(
                        "thinking_mode {other:?} is not one of minimal, low, medium, high, max"
                    )));
                }
            };
            let asked_files = args.files.unwrap_or_default();
            if let Some(relative) = asked_files
                .iter()
                .find(|f| !std::path::Path::new(f).is_absolute())
            {
                return Err(bad(format!(
                    "{relative:?} is not an absolute path; give full paths, e.g. /home/me/project/src/main.rs"
                )));
            }
            let store_path = ctx.calls.store().path().to_path_buf();
            let mut thread = match args.continuation_id.clone() {
                None => Thread::new(),
                Some(id) => tokio::task::spawn_blocking(move || Thread::load(&store_path, &id))
                    .await
                    .map_err(blocking_failure)?
                    .map_err(|e| match e {
                        ThreadError::Unknown(_) | ThreadError::Malformed(_) => {
                            ToolFailure::new("unknown_thread", e.to_string())
                        }
                        other => ToolFailure::new("store", other.to_string()),
                    })?,
            };
            let target = ctx
                .providers
                .resolve(args.model.as_deref(), Need::Deep)
                .map_err(|message| ToolFailure::new("no_model", message))?;

            // The model's context: room for the answer first, then history, then files. The
            // tokenizer is only woken when there is something to fit.
            let (history, left_out, embedded) = if asked_files.is_empty() && thread.turns.is_empty()
            {
                (Vec::new(), 0, files::Embedded::default())
            } else {
                let context = target.model.context_window as usize;
                let reserve = (target.model.max_output as usize).min(context / 4);
                let fixed = tokens::count(SYSTEM_PROMPT) + tokens::count(&args.prompt);
                let room = context.saturating_sub(reserve + fixed);
                let (history, left_out) = thread.history(room * 3 / 10);
                let history_tokens: usize =
                    history.iter().map(|t| tokens::count(&t.content) + 8).sum();
                let mut wanted_files = asked_files.clone();
                for file in thread.files() {
                    if !wanted_files.contains(&file) {
                        wanted_files.push(file);
                    }
                }
                let files_budget = room.saturating_sub(history_tokens);
                let roots = ctx.config.allowed_roots.clone();
                ctx.call
                    .progress
                    .set_stage(format!("reading {} file path(s)", wanted_files.len()));
                let embedded = tokio::task::spawn_blocking(move || {
                    files::embed(&wanted_files, files_budget, &roots)
                })
                .await
                .map_err(blocking_failure)?;
                (history, left_out, embedded)
            };

            let mut messages = vec![ChatMessage::system(SYSTEM_PROMPT)];
            messages.extend(history.iter().map(|turn| {
                if turn.role == "assistant" {
                    ChatMessage::assistant(turn.content.clone())
                } else {
                    ChatMessage::user(turn.content.clone())
                }
            }));
            let mut question = String::new();
            if !embedded.text.is_empty() {
                question.push_str("Files for context (line-numbered):\n\n");
                question.push_str(&embedded.text);
                question.push('\n');
            }
            question.push_str(&args.prompt);
            messages.push(ChatMessage::user(question));
            let request = ChatRequest {
                messages,
                temperature: args.temperature,
                thinking,
                web_search: args.use_websearch.unwrap_or(false),
                deadline: ctx.call.deadline,
            };
            let answer = ctx
                .providers
                .chat(target, &request, &ctx.call.progress)
                .await
                .map_err(|failure| {
                    ctx.call.set_usage(Usage {
                        tokens_in: failure.spent.tokens_in,
                        tokens_out: failure.spent.tokens_out,
                        reasoning_tokens: failure.spent.reasoning_tokens,
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
            ctx.call.set_reasoning(answer.reasoning.clone());

            let now = crate::store::now_ms();
            let turns = vec![
                Turn {
                    role: "user".into(),
                    tool: "chat".into(),
                    content: args.prompt.clone(),
                    files: asked_files,
                    model: None,
                    at_ms: now,
                },
                Turn {
                    role: "assistant".into(),
                    tool: "chat".into(),
                    content: answer.text.clone(),
                    files: Vec::new(),
                    model: Some(answer.model.clone()),
                    at_ms: now,
                },
            ];
            if let Err(error) = thread
                .append(
                    ctx.calls.store(),
                    turns,
                    ctx.config.thread_max_turns,
                    ctx.config.thread_ttl,
                )
                .await
            {
                tracing::error!(%error, "could not save the conversation thread");
            }

            let (mut content, mut notes) = answer::lay_out(
                &answer,
                answer::Layout {
                    show_reasoning: args.show_reasoning.unwrap_or(false),
                    max_output_tokens: ctx.config.max_output_tokens,
                },
            );
            if let Some(note) = embedded.note() {
                notes.push(note);
            }
            if left_out > 0 {
                notes.push(format!("{left_out} older turn(s) of this conversation did not fit the model's context and were left out."));
            }
            notes.push(format!(
                "continuation_id: {} — pass it to continue this conversation (with chat or another tool).",
                thread.id
            ));
            content.push(ContentBlock::text(notes.join("\n\n")));
            let mut result = CallToolResult::success(content);
            result.structured_content = Some(json!({
                "continuation_id": thread.id,
                "model": answer.model,
                "provider": answer.provider,
                "files_embedded": embedded.files.len(),
                "files_skipped": embedded.skipped.iter().map(|s| json!({"path": s.path, "why": s.why})).collect::<Vec<_>>(),
                "sources": answer.sources,
                "web_searches": answer.web_searches,
            }));
            Ok(result)
        })
    }
}
