//! `chat`: ask a model a question, with files and conversation memory; the answer streams
//! back with progress.

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::consult::{self, Question};
use super::{ExaiTool, ToolContext, ToolFuture, answer, definition, parse_arguments};
use crate::calls::{FailureKind, ToolFailure};
use crate::files;
use crate::providers::Need;
use crate::threads::{Thread, Turn};

pub(super) const SYSTEM_PROMPT: &str = include_str!("prompts/chat.txt");

pub struct Chat;

/// Arguments of `chat` (names as Zen/PAL clients send them).
#[derive(Debug, Deserialize, JsonSchema)]
struct ChatArguments {
    /// The question or request for the model (may be left out when `files` holds a prompt.txt).
    #[serde(default)]
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
    thinking_mode: Option<consult::ThinkingMode>,
    /// Let the model search the web (GLM/Kimi models that can); default false.
    #[serde(default)]
    use_websearch: Option<bool>,
    /// Show the model's reasoning, marked, before its answer; default false.
    #[serde(default)]
    show_reasoning: Option<bool>,
    /// Images to show the model: absolute paths or data URLs (at most 5; vision models).
    #[serde(default)]
    images: Option<Vec<String>>,
}

fn bad(message: String) -> ToolFailure {
    ToolFailure::new(
        FailureKind::BadArguments,
        format!("invalid arguments for chat: {message}"),
    )
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

    fn system_prompts(&self) -> Vec<(&'static str, &'static str)> {
        vec![("chat", SYSTEM_PROMPT)]
    }

    fn run(&self, arguments: JsonObject, ctx: ToolContext) -> ToolFuture {
        Box::pin(async move {
            // Taken apart at once: the arguments as a whole would be kept for the call's wait,
            // where only the prompt, the files and one flag are still needed.
            let ChatArguments {
                mut prompt,
                model,
                files,
                continuation_id,
                temperature,
                thinking_mode,
                use_websearch,
                show_reasoning,
                images,
            } = parse_arguments("chat", arguments)?;
            let mut asked_files = files.unwrap_or_default();
            // A prompt too big for MCP comes back as a file named prompt.txt.
            if let Some(at) = asked_files.iter().position(|f| {
                std::path::Path::new(f)
                    .file_name()
                    .is_some_and(|n| n == "prompt.txt")
            }) {
                let path = asked_files.remove(at);
                let roots = ctx.file_policy();
                let text = crate::spawn::blocking(move || files::read_prompt_file(&path, &roots))
                    .await
                    .map_err(consult::blocking_failure)?
                    .map_err(|why| bad(format!("prompt.txt: {why}")))?;
                prompt = if prompt.trim().is_empty() {
                    text
                } else {
                    format!("{text}\n\n{prompt}")
                };
            } else if let Some(answer) = consult::too_long(&ctx, "chat", "prompt", &prompt) {
                return Ok(answer);
            }
            if prompt.trim().is_empty() {
                return Err(bad(
                    "`prompt` is empty: give the question, or a prompt.txt in `files`".into(),
                ));
            }
            consult::check_temperature(temperature).map_err(|e| bad(e.to_string()))?;
            let thinking = consult::thinking_of(thinking_mode);
            if let Some(complaint) = consult::relative_path(&asked_files) {
                return Err(bad(complaint));
            }
            // (In blocks of their own, so the id and the name are not kept for the wait.)
            let thread = {
                let id = continuation_id;
                consult::thread(&ctx, id.as_deref()).await?
            };
            let target = {
                let name = model;
                consult::choose(&ctx, name.as_deref(), Need::Deep)?
            };
            let consulted = consult::ask_and_record(
                &ctx,
                target,
                Question {
                    system: SYSTEM_PROMPT.into(),
                    prompt: &prompt,
                    files: asked_files.clone(),
                    thread: Some(&thread),
                    temperature,
                    thinking,
                    web_search: use_websearch.unwrap_or(false),
                    images: images.unwrap_or_default(),
                },
            )
            .await?;
            // Boxed: laying out the answer is large and brief, and the future above is what
            // a call holds for as long as it waits on the model.
            Box::pin(reply(
                &ctx,
                prompt,
                show_reasoning.unwrap_or(false),
                asked_files,
                thread,
                consulted,
            ))
            .await
        })
    }
}

/// The model's answer laid out for the client, its turns kept in the conversation.
async fn reply(
    ctx: &ToolContext,
    prompt: String,
    show_reasoning: bool,
    asked_files: Vec<String>,
    mut thread: Thread,
    consulted: consult::Answer,
) -> Result<CallToolResult, ToolFailure> {
    let answer = &consulted.response;

    let turns = vec![
        Turn::asked("chat", prompt, asked_files),
        Turn::answered(
            "chat",
            answer.text.clone(),
            Some(answer.model.clone()),
            consulted.reasoning_to_keep(),
        ),
    ];
    let memory_note = consult::remember(ctx, &mut thread, turns).await;

    let layout = answer::Layout {
        show_reasoning,
        max_output_tokens: ctx.config.max_output_tokens,
    };
    // Shown reasoning may need cutting to a token budget: counting is CPU work.
    let (mut content, mut notes) = if layout.show_reasoning {
        let response = answer.clone();
        crate::spawn::blocking(move || answer::lay_out(&response, layout))
            .await
            .map_err(consult::blocking_failure)?
    } else {
        answer::lay_out(answer, layout)
    };
    notes.extend(consulted.notes());
    notes.extend(memory_note);
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
        "files_embedded": consulted.embedded.files.len(),
        "files_skipped": consulted.embedded.skipped.iter().map(|s| json!({"path": s.path, "why": s.why})).collect::<Vec<_>>(),
        "sources": answer.sources,
        "web_searches": answer.web_searches,
    }));
    Ok(result)
}
