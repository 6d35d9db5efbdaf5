//! The request body exai sends: the common OpenAI chat fields, each provider's dialect on top
//! (glm.rs, kimi.rs, openai.rs, openrouter.rs, custom.rs), and the output limit in the field the
//! provider documents. `tests/fixtures/providers/*/request_*.json` are what it must produce.

use serde_json::{Value, json};

use super::dialect::{Dialect, dialect};
use super::{ChatMessage, ChatRequest, ModelInfo};
use crate::config::ProviderKind;

/// The smallest output limit sent, even when the estimated prompt leaves less: a provider that
/// counts the prompt as over the window says so, which is clearer than an answer cut to nothing.
const MIN_OUTPUT: u64 = 1_024;

/// What one image is taken to cost in the estimate of a prompt (providers do not document it;
/// generous, so the room left for the answer is not overstated).
const IMAGE_TOKENS: u64 = 4_096;

/// What each message adds besides its text (role, separators), in the estimate of a prompt.
const MESSAGE_TOKENS: u64 = 8;

/// The whole body of a chat request to `model` on an endpoint of `kind` at `host`.
pub(crate) fn request_body(
    kind: ProviderKind,
    host: &str,
    model: &ModelInfo,
    request: &ChatRequest,
) -> Value {
    let dialect = dialect(kind);
    let mut body = json!({"model": model.id, "messages": request.messages, "stream": true});
    keep_reasoning_where_wanted(dialect, &mut body);
    if dialect.images_first() {
        images_before_text(&mut body);
    }
    body[dialect.limit_field()] = json!(output_limit(kind, model, request));
    dialect.shape(model, request, host, &mut body);
    body
}

/// The most output tokens to ask for: the model's limit, lowered by the tool's setting; where the
/// server refuses a prompt plus limit over the context window, no more than the room the estimated
/// prompt leaves.
pub(crate) fn output_limit(kind: ProviderKind, model: &ModelInfo, request: &ChatRequest) -> u64 {
    let mut limit = model.max_output;
    if let Some(cap) = request.max_output {
        limit = limit.min(cap);
    }
    if dialect(kind).limit_within_context() {
        let room = model
            .context_window
            .saturating_sub(estimated_prompt_tokens(request));
        limit = limit.min(room.max(MIN_OUTPUT));
    }
    limit.max(1)
}

/// The prompt's tokens, over- rather than underestimated: exai's own count when it made one
/// (plus a tenth, as providers tokenize a little differently), else a token per three bytes of
/// text; images and messages on top.
pub(crate) fn estimated_prompt_tokens(request: &ChatRequest) -> u64 {
    let text = request
        .prompt_tokens
        .unwrap_or_else(|| rough_tokens(&request.messages));
    let images: u64 = request
        .messages
        .iter()
        .map(|m| m.images.len() as u64 * IMAGE_TOKENS)
        .sum();
    text + text / 10 + images + request.messages.len() as u64 * MESSAGE_TOKENS
}

/// About a token per three bytes of the messages' text, reasoning and tool calls (English runs
/// about four bytes a token, code three, CJK more): cheap enough for the runtime.
pub(crate) fn rough_tokens(messages: &[ChatMessage]) -> u64 {
    let bytes: usize = messages
        .iter()
        .map(|m| {
            m.content.len()
                + m.reasoning_content.as_ref().map_or(0, String::len)
                + m.tool_calls
                    .iter()
                    .map(|c| c.id.len() + c.function.name.len() + c.function.arguments.len())
                    .sum::<usize>()
        })
        .sum();
    (bytes as u64).div_ceil(3)
}

/// A temperature as the user wrote it: `0.3`, not the `0.30000001192092896` an `f32` widens to.
pub(crate) fn temperature(t: f32) -> Value {
    json!(t.to_string().parse::<f64>().unwrap_or(f64::from(t)))
}

/// Earlier reasoning goes back only where the platform wants it; to the others it is an unknown
/// field.
fn keep_reasoning_where_wanted(dialect: &dyn Dialect, body: &mut Value) {
    let Some(messages) = body["messages"].as_array_mut() else {
        return;
    };
    for message in messages {
        let called_tools = message.get("tool_calls").is_some();
        if let Some(m) = message.as_object_mut()
            && !dialect.echoes_reasoning(called_tools)
        {
            m.remove("reasoning_content");
        }
    }
}

/// Images before the question, where the provider's documented examples put them there.
fn images_before_text(body: &mut Value) {
    let Some(messages) = body["messages"].as_array_mut() else {
        return;
    };
    for message in messages {
        if let Some(parts) = message["content"].as_array_mut() {
            // A stable sort: images keep their order, the text goes last.
            parts.sort_by_key(|part| part["type"] != "image_url");
        }
    }
}

#[cfg(test)]
mod tests;
