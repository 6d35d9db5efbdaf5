//! The wire types of one model call: the messages and request sent, the answer and usage
//! received, tool calls and the web pages an answer drew on.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use serde::Serialize;

/// One message of a conversation sent to a model.
#[derive(Debug, Clone, Default)]
pub struct ChatMessage {
    pub role: &'static str,
    /// Borrowed where it is a tool's own text (a system prompt), so a call waiting on a model
    /// holds no copy of it.
    pub content: Cow<'static, str>,
    /// Images shown with a user message, as data URLs.
    pub images: Vec<String>,
    /// An assistant turn's reasoning, sent back where the platform wants it (Kimi).
    pub reasoning_content: Option<String>,
    /// The tools an assistant turn asked for.
    pub tool_calls: Vec<ToolCall>,
    /// A tool message: the call it answers, and the tool's name.
    pub tool_call_id: Option<String>,
    pub name: Option<String>,
}

/// The OpenAI wire form: `content` is a string, or text and image parts when there are images.
impl Serialize for ChatMessage {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("role", self.role)?;
        if self.images.is_empty() {
            map.serialize_entry("content", &self.content)?;
        } else {
            let mut parts = vec![serde_json::json!({"type": "text", "text": self.content})];
            parts.extend(
                self.images
                    .iter()
                    .map(|url| serde_json::json!({"type": "image_url", "image_url": {"url": url}})),
            );
            map.serialize_entry("content", &parts)?;
        }
        if let Some(reasoning) = &self.reasoning_content {
            map.serialize_entry("reasoning_content", reasoning)?;
        }
        if !self.tool_calls.is_empty() {
            map.serialize_entry("tool_calls", &self.tool_calls)?;
        }
        if let Some(id) = &self.tool_call_id {
            map.serialize_entry("tool_call_id", id)?;
        }
        if let Some(name) = &self.name {
            map.serialize_entry("name", name)?;
        }
        map.end()
    }
}

impl ChatMessage {
    fn plain(role: &'static str, content: Cow<'static, str>) -> Self {
        Self {
            role,
            content,
            ..Self::default()
        }
    }

    pub fn system(content: impl Into<Cow<'static, str>>) -> Self {
        Self::plain("system", content.into())
    }

    pub fn user(content: impl Into<Cow<'static, str>>) -> Self {
        Self::plain("user", content.into())
    }

    pub fn assistant(content: impl Into<Cow<'static, str>>) -> Self {
        Self::plain("assistant", content.into())
    }
}

/// A tool call a model asked for, as the OpenAI protocol spells it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ToolCall {
    pub id: String,
    /// `function`, or `builtin_function` for a tool the platform runs itself (Kimi).
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionCall,
}

/// The function part of a tool call; `arguments` is a JSON text, kept verbatim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FunctionCall {
    pub name: String,
    pub arguments: String,
}

/// A web page a model's answer drew on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    pub title: String,
    pub url: String,
}

/// How hard a model is asked to think (a tool's `thinking_mode`), least first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Effort {
    Minimal,
    Low,
    Medium,
    High,
    Max,
}

impl Effort {
    /// The think / don't-think switch most providers have: anything above minimal thinks.
    pub fn thinks(self) -> bool {
        self != Effort::Minimal
    }
}

/// A request for one model answer.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub temperature: Option<f32>,
    /// How hard to think (`Minimal`: as little as the model allows), or as the model does by
    /// default.
    pub thinking: Option<Effort>,
    /// Let the model search the web, where it and its provider can (else a note says it did not).
    pub web_search: bool,
    /// The call's deadline: no attempt, wait or retry goes past it.
    pub deadline: Instant,
    /// The most output tokens this call wants (a tool's `EXAI_TOOL_MAX_OUTPUT`); the model's
    /// own limit caps it, and without it the model's limit is asked for.
    pub max_output: Option<u64>,
    /// exai's count of the tokens in the messages' text, when it counted them (to fit files or
    /// history); else the output limit estimates them from their size.
    pub prompt_tokens: Option<u64>,
    /// Names the conversation the request belongs to (a hash of its thread id, nothing about
    /// who asked), for providers that route by it to the server holding their prefix cache
    /// (OpenAI's `prompt_cache_key`); `None` outside a conversation.
    pub cache_key: Option<String>,
}

#[cfg(test)]
impl ChatRequest {
    /// One user message and nothing else set, a minute to answer it (for tests).
    pub(crate) fn question(text: &str) -> Self {
        Self {
            messages: vec![ChatMessage::user(text.to_string())],
            temperature: None,
            thinking: None,
            web_search: false,
            deadline: Instant::now() + Duration::from_secs(60),
            max_output: None,
            prompt_tokens: None,
            cache_key: None,
        }
    }
}

/// A model's answer and what it cost.
#[derive(Debug, Clone, Default)]
pub struct ChatResponse {
    pub provider: String,
    pub model: String,
    pub text: String,
    pub reasoning: Option<String>,
    pub tokens_in: Option<u64>,
    pub tokens_out: Option<u64>,
    pub reasoning_tokens: Option<u64>,
    /// Input tokens the provider served from its cache (part of `tokens_in`).
    pub cached_tokens: Option<u64>,
    /// Why the model stopped, as the provider said it (`stop`, `length`, `sensitive`, …).
    pub finish_reason: Option<String>,
    pub attempts: u32,
    pub time_to_first_token: Option<Duration>,
    /// Web pages the answer drew on, as the provider reported them (GLM's web search).
    pub sources: Vec<Source>,
    /// Web searches the model ran through exai's tool loop (Kimi's `$web_search`).
    pub web_searches: u32,
    /// What the caller should know about how the answer came about ("no web search: …").
    pub notes: Vec<String>,
    /// What it cost: every attempt and fallback that billed, by provider (set by `Providers::chat`).
    pub cost: super::Cost,
    /// Tools the model asked for in this round; handled inside `providers`, empty in an answer.
    pub(crate) tool_calls: Vec<ToolCall>,
}

/// What was billed: tokens, and the searches billed per call (Kimi's `$web_search`); also what
/// a call that failed later had already spent (earlier rounds of a web search).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spent {
    pub tokens_in: Option<u64>,
    pub tokens_out: Option<u64>,
    pub reasoning_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
    pub web_searches: u32,
}

impl Spent {
    pub(crate) fn of(answer: &ChatResponse) -> Self {
        Self {
            tokens_in: answer.tokens_in,
            tokens_out: answer.tokens_out,
            reasoning_tokens: answer.reasoning_tokens,
            cached_tokens: answer.cached_tokens,
            web_searches: answer.web_searches,
        }
    }

    pub(crate) fn add(&mut self, other: Spent) {
        self.tokens_in = add_tokens(self.tokens_in, other.tokens_in);
        self.tokens_out = add_tokens(self.tokens_out, other.tokens_out);
        self.reasoning_tokens = add_tokens(self.reasoning_tokens, other.reasoning_tokens);
        self.cached_tokens = add_tokens(self.cached_tokens, other.cached_tokens);
        self.web_searches = self.web_searches.saturating_add(other.web_searches);
    }

    /// Puts the sums into an answer.
    pub(crate) fn into_answer(self, answer: &mut ChatResponse) {
        answer.tokens_in = self.tokens_in;
        answer.tokens_out = self.tokens_out;
        answer.reasoning_tokens = self.reasoning_tokens;
        answer.cached_tokens = self.cached_tokens;
        answer.web_searches = self.web_searches;
    }
}

/// Sum of two optional counts; unknown only when both are.
fn add_tokens(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    }
}
