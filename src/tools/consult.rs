//! Asking a model on a tool's behalf: history and files fitted into the model's context, one
//! streaming call with progress, and what it cost recorded on the call.

use std::borrow::Cow;

use super::{ToolContext, dry_run, extract};
use crate::calls::{FailureKind, ToolFailure, Usage};
use crate::config::ProviderKind;
use crate::documents::Extracted;
use crate::files::{self, Embedded};
use crate::images;
use crate::providers::{ChatMessage, ChatRequest, ChatResponse, Effort, Need, Resolved, dialect};
use crate::threads::{Thread, ThreadError};
use crate::tokens;

/// What to ask.
pub struct Question<'a> {
    /// Borrowed when it is the tool's own text.
    pub system: Cow<'static, str>,
    /// The request itself; files are shown before it.
    pub prompt: &'a str,
    /// Absolute paths to embed, within what the model's context leaves.
    pub files: Vec<String>,
    /// The conversation to replay (newest turns first within budget); `None` for a blinded call.
    pub thread: Option<&'a Thread>,
    pub temperature: Option<f32>,
    pub thinking: Option<Effort>,
    /// Let the model search the web (where the provider and model can).
    pub web_search: bool,
    /// Images (absolute paths or data URLs) shown with the question.
    pub images: Vec<String>,
}

/// A model's answer with what went into the question.
pub struct Answer {
    pub response: ChatResponse,
    pub embedded: Embedded,
    /// Older turns of the conversation that did not fit.
    pub turns_left_out: usize,
    kind: ProviderKind,
}

impl Answer {
    /// The answer of a sub-agent CLI (`cli:codex` in a consensus): nothing was embedded or left
    /// out by exai, and no reasoning is replayed.
    pub fn of_sub_agent(response: ChatResponse) -> Self {
        Self {
            response,
            embedded: Embedded::default(),
            turns_left_out: 0,
            kind: ProviderKind::Custom,
        }
    }

    /// The reasoning to keep with the answer in the conversation: only where the provider wants
    /// it replayed (Kimi's thinking models); elsewhere the record keeps it.
    pub fn reasoning_to_keep(&self) -> Option<String> {
        dialect(self.kind)
            .wants_reasoning_back()
            .then(|| self.response.reasoning.clone())
            .flatten()
    }

    /// What the call cost, for the record.
    pub fn usage(&self) -> Usage {
        Usage {
            tokens_in: self.response.tokens_in,
            tokens_out: self.response.tokens_out,
            reasoning_tokens: self.response.reasoning_tokens,
            cached_tokens: self.response.cached_tokens,
            time_to_first_token: self.response.time_to_first_token,
            attempts: Some(self.response.attempts),
            cost: self.response.cost.clone(),
        }
    }

    /// Notes for the answer: files left out, turns left out.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(note) = self.embedded.note() {
            notes.push(note);
        }
        if self.turns_left_out > 0 {
            notes.push(format!(
                "{} older turn(s) of this conversation did not fit the model's context and were left out.",
                self.turns_left_out
            ));
        }
        notes
    }
}

/// A failed question, with what it cost before it failed.
pub struct Failed {
    pub failure: ToolFailure,
    pub usage: Usage,
}

/// The model a tool should ask: `name`, or the default / best for `need`.
pub fn choose(ctx: &ToolContext, name: Option<&str>, need: Need) -> Result<Resolved, ToolFailure> {
    ctx.providers
        .resolve(name, need)
        .map_err(|unusable| ToolFailure::new(FailureKind::NoModel, unusable.to_string()))
}

/// A value named by one word of a closed list (a thinking mode, a confidence level), read with
/// an error that names the field and the whole list.
pub trait Word: Copy + Eq + Send + Sync + 'static {
    /// The argument's name, for the error.
    const FIELD: &'static str;
    /// Every value, in the order the list is shown.
    const ALL: &'static [Self];
    /// The value's word on the wire.
    fn word(self) -> &'static str;
}

/// A word that is not on its field's list.
#[derive(Debug, thiserror::Error)]
#[error("{field} {given:?} is not one of {list}")]
pub struct NotOneOf {
    field: &'static str,
    given: String,
    list: String,
}

/// The value `given` names, or why it names none.
pub fn word_of<W: Word>(given: &str) -> Result<W, NotOneOf> {
    W::ALL
        .iter()
        .copied()
        .find(|value| value.word() == given)
        .ok_or_else(|| NotOneOf {
            field: W::FIELD,
            given: given.to_string(),
            list: W::ALL
                .iter()
                .map(|value| value.word())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Serde for a `Word` type: written as its word, read with `NotOneOf`'s error; its schema, when
/// `schema` is given, lists the words.
macro_rules! word_serde {
    ($type:ty) => {
        impl serde::Serialize for $type {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str($crate::tools::consult::Word::word(*self))
            }
        }
        impl<'de> serde::Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let given = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                $crate::tools::consult::word_of(&given).map_err(serde::de::Error::custom)
            }
        }
    };
    ($type:ty, schema) => {
        word_serde!($type);
        impl schemars::JsonSchema for $type {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($type).into()
            }
            fn inline_schema() -> bool {
                true
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                let words: Vec<&str> = <$type as $crate::tools::consult::Word>::ALL
                    .iter()
                    .map(|value| $crate::tools::consult::Word::word(*value))
                    .collect();
                schemars::json_schema!({"type": "string", "enum": words})
            }
        }
    };
}
pub(crate) use word_serde;

/// How hard the model should think (Zen's names): OpenAI takes the effort by name, the others
/// only think or don't.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThinkingMode {
    Minimal,
    Low,
    Medium,
    High,
    Max,
}

impl Word for ThinkingMode {
    const FIELD: &'static str = "thinking_mode";
    const ALL: &'static [Self] = &[
        Self::Minimal,
        Self::Low,
        Self::Medium,
        Self::High,
        Self::Max,
    ];
    fn word(self) -> &'static str {
        match self {
            Self::Minimal => "minimal",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Max => "max",
        }
    }
}
word_serde!(ThinkingMode, schema);

/// The effort asked of the provider for `mode` (the model's default when not given).
pub fn thinking_of(mode: Option<ThinkingMode>) -> Option<Effort> {
    mode.map(|mode| match mode {
        ThinkingMode::Minimal => Effort::Minimal,
        ThinkingMode::Low => Effort::Low,
        ThinkingMode::Medium => Effort::Medium,
        ThinkingMode::High => Effort::High,
        ThinkingMode::Max => Effort::Max,
    })
}

/// A temperature outside the range every provider accepts.
#[derive(Debug, thiserror::Error)]
#[error("temperature {0} is outside 0–2")]
pub struct TemperatureOutOfRange(f32);

/// Checks a temperature is in the range every provider accepts.
pub fn check_temperature(temperature: Option<f32>) -> Result<(), TemperatureOutOfRange> {
    match temperature {
        Some(t) if !(0.0..=2.0).contains(&t) => Err(TemperatureOutOfRange(t)),
        _ => Ok(()),
    }
}

/// The first path that is not absolute, as a clear complaint.
pub fn relative_path<'p>(paths: impl IntoIterator<Item = &'p String>) -> Option<String> {
    paths
        .into_iter()
        .find(|p| !std::path::Path::new(p).is_absolute())
        .map(|p| {
            format!(
                "{p:?} is not an absolute path; give full paths, e.g. /home/me/project/src/main.rs"
            )
        })
}

/// Loads the conversation `id` names, or starts a new one.
pub async fn thread(ctx: &ToolContext, id: Option<&str>) -> Result<Thread, ToolFailure> {
    let caller = &ctx.call.origin.caller;
    let Some(id) = id else {
        return Ok(Thread::new(caller.user_name().map(str::to_string)));
    };
    Thread::load(ctx.calls.store(), id, caller)
        .await
        .map_err(|e| match e {
            ThreadError::Unknown(_) | ThreadError::Malformed(_) => {
                ToolFailure::new(FailureKind::UnknownThread, e.to_string())
            }
            other => ToolFailure::new(FailureKind::Store, other.to_string()),
        })
}

/// Saves the new turns of `thread`; returns a note for the answer when the oldest exchanges
/// had to go to keep the thread within `EXAI_THREAD_MAX_TURNS`, or when saving failed (which is
/// logged and does not cost the caller its answer).
pub async fn remember(
    ctx: &ToolContext,
    thread: &mut Thread,
    turns: Vec<crate::threads::Turn>,
) -> Option<String> {
    let max = ctx.config.thread_max_turns;
    let saved = thread
        .append(ctx.calls.store(), turns, max, ctx.config.thread_ttl)
        .await;
    if saved.is_ok() {
        ctx.call.note_thread(&thread.id);
    }
    match saved {
        Ok(0) => None,
        Ok(dropped) => Some(format!(
            "The oldest {dropped} exchange(s) of this conversation were dropped: it keeps the \
             latest {max} (EXAI_THREAD_MAX_TURNS)."
        )),
        Err(error) => {
            tracing::error!(%error, thread = %thread.id, "could not save the conversation thread");
            Some(format!(
                "This exchange could not be saved to the conversation ({error}); continuing it \
                 will not remember it."
            ))
        }
    }
}

pub fn blocking_failure(e: tokio::task::JoinError) -> ToolFailure {
    ToolFailure::new(
        FailureKind::Internal,
        format!("a blocking task failed: {e}"),
    )
}

/// What a question must fit into a model's context (computed on a blocking thread).
struct Fitting {
    context: usize,
    max_output: usize,
    /// The system prompt: always sent, the same on every turn.
    system: String,
    /// The question: always sent.
    prompt: String,
    thread: Option<Thread>,
    /// Every file to consider, newest reference first (the question's, then the thread's).
    files: Vec<String>,
    /// The files the question itself names, in its order.
    asked_files: Vec<String>,
    roots: files::Policy,
    /// The named documents' extracted texts.
    documents: Extracted,
    /// Earlier answers go back with their reasoning (the provider wants it), which then counts.
    replays_reasoning: bool,
}

/// A question fitted to a model: the turns to replay, each with the files it named, and the
/// files for the question itself.
struct Fitted {
    /// Turns to replay, oldest first, each with the text of the files placed before it.
    history: Vec<(crate::threads::Turn, String)>,
    /// Older turns that did not fit.
    left_out: usize,
    /// Every file embedded; its `text` holds only the files placed before the question.
    embedded: Embedded,
    /// Tokens of all the text.
    counted: usize,
}

impl Fitting {
    /// Room for the answer first, then up to 30% of the rest for history, then files.
    ///
    /// The history budget leaves the question out, so it stays the same from turn to turn and
    /// the replay keeps its start (`Thread::history`); only a question of more than about half
    /// the context shrinks it. Which files fit is decided newest reference first; where each goes is
    /// the turn that first named it, so an earlier turn is replayed with the same files, in the
    /// same order, as it was first sent.
    fn fit(self) -> Fitted {
        let reserve = self.max_output.min(self.context / 4);
        let system_tokens = tokens::count(&self.system);
        let prompt_tokens = tokens::count(&self.prompt);
        let steady = self.context.saturating_sub(reserve + system_tokens) * 3 / 10;
        let room = self
            .context
            .saturating_sub(reserve + system_tokens + prompt_tokens);
        // A question that leaves too little room for the steady share takes the old one, 30%
        // of what it leaves.
        let history_budget = if steady <= room * 6 / 10 {
            steady
        } else {
            room * 3 / 10
        };
        let (history, left_out) = match &self.thread {
            Some(thread) => {
                let (turns, left_out) = thread.history(history_budget, self.replays_reasoning);
                (turns.into_iter().cloned().collect::<Vec<_>>(), left_out)
            }
            None => (Vec::new(), 0),
        };
        let history_tokens: usize = history
            .iter()
            .map(|turn| turn.replayed_tokens(self.replays_reasoning))
            .sum();
        let budget = room.saturating_sub(history_tokens);
        let mut embedded = files::embed_with(&self.files, budget, &self.roots, &self.documents);
        embedded.skipped.extend(self.documents.skipped);
        let counted = system_tokens + prompt_tokens + history_tokens + embedded.tokens;
        let resolved = |given: &[String]| -> Vec<std::path::PathBuf> {
            given
                .iter()
                .filter_map(|f| std::path::Path::new(f).canonicalize().ok())
                .collect()
        };
        // Each replayed turn, then the question itself, with the paths it named.
        let mut named: Vec<Vec<std::path::PathBuf>> = history
            .iter()
            .map(|turn| match turn.role.as_str() {
                "user" => resolved(&turn.files),
                _ => Vec::new(),
            })
            .collect();
        named.push(resolved(&self.asked_files));
        let (mut placed, rest) = place_files(&named, &embedded);
        let mut question_files = placed.pop().unwrap_or_default();
        question_files.push_str(&rest);
        embedded.text = question_files;
        Fitted {
            history: history.into_iter().zip(placed).collect(),
            left_out,
            embedded,
            counted,
        }
    }
}

/// The embedded files' text split by where each goes: before the first message that named it
/// (`named`: each message's resolved paths, a directory naming the files under it), in the
/// order that message named them and, under one directory, in path order — never in the order
/// they were embedded, which follows the newest references and so changes from turn to turn;
/// the files no message names come back apart, in the order they were embedded.
fn place_files(named: &[Vec<std::path::PathBuf>], embedded: &Embedded) -> (Vec<String>, String) {
    let mut taken = vec![false; embedded.files.len()];
    let block = |at: usize| &embedded.text[embedded.spans[at].clone()];
    let mut placed = Vec::with_capacity(named.len());
    for paths in named {
        let mut text = String::new();
        for path in paths {
            let mut under: Vec<usize> = (0..embedded.files.len())
                .filter(|&at| !taken[at] && embedded.files[at].starts_with(path))
                .collect();
            under.sort_by(|&a, &b| embedded.files[a].cmp(&embedded.files[b]));
            for at in under {
                taken[at] = true;
                text.push_str(block(at));
            }
        }
        placed.push(text);
    }
    let rest = (0..embedded.files.len())
        .filter(|&at| !taken[at])
        .map(block)
        .collect();
    (placed, rest)
}

/// A user message's text with the files placed before it (the same layout on every turn, so a
/// replayed turn is sent exactly as it first was).
fn with_files(files_text: &str, text: &str) -> String {
    if files_text.is_empty() {
        return text.to_string();
    }
    format!("Files for context (line-numbered):\n\n{files_text}\n{text}")
}

/// The key a conversation's requests carry for providers that route by it: a hash of the
/// thread id, so it says nothing about who asked.
fn cache_key(thread_id: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("exai-thread:{thread_id}").as_bytes(),
    );
    crate::hex::hex(&digest.as_ref()[..16])
}

/// A tool's system prompt with the locale's instruction, when one is set, after it: the
/// tool's text stays the prefix it always is.
fn system_prompt(
    tool_prompt: Cow<'static, str>,
    locale: Option<&crate::config::locale::Locale>,
) -> Cow<'static, str> {
    match locale {
        Some(locale) => Cow::Owned(format!("{tool_prompt}\n\n{}", locale.instruction())),
        None => tool_prompt,
    }
}

/// Asks `target` one question. Does not touch the call's usage: callers that ask several
/// models add theirs up.
///
/// The messages are laid out so a conversation's next turn starts with this turn's bytes: the
/// system prompt, then the replayed turns (each with the files it named), then the question
/// with any other files; nothing that changes from call to call (times, ids, counters) comes
/// before the question.
pub async fn ask(
    ctx: &ToolContext,
    target: Resolved,
    question: &Question<'_>,
) -> Result<Answer, Failed> {
    let kind = target.endpoint.config.kind;
    let system = system_prompt(question.system.clone(), ctx.config.locale.as_ref());
    let images = load_images(ctx, &target, &question.images)
        .await
        .map_err(|failure| Failed {
            failure,
            usage: Usage::default(),
        })?;
    let turns = question.thread.map(|t| t.turns.len()).unwrap_or(0);
    // The tool's own output limit, where the user set one, leaves more room for files.
    let max_output = ctx.config.max_output_for(&ctx.call.tool);
    let model_output = max_output.map_or(target.model.max_output, |cap| {
        cap.min(target.model.max_output)
    });
    // The tokenizer is only woken when there is something to fit, and then off the runtime:
    // counting (and loading the tokenizer the first time) is CPU work.
    let mut planned_documents = Vec::new();
    let (history, turns_left_out, mut embedded, counted) =
        if question.files.is_empty() && turns == 0 {
            (Vec::new(), 0, Embedded::default(), None)
        } else {
            let mut wanted = question.files.clone();
            if let Some(thread) = question.thread {
                for file in thread.files() {
                    if !wanted.contains(&file) {
                        wanted.push(file);
                    }
                }
            }
            if !wanted.is_empty() {
                ctx.call
                    .progress
                    .set_stage(format!("reading {} file path(s)", wanted.len()));
            }
            let documents = extract::prepare(ctx, &target, &wanted)
                .await
                .map_err(|failure| Failed {
                    failure,
                    usage: Usage::default(),
                })?;
            planned_documents = documents.planned.clone();
            let fitting = Fitting {
                context: target.model.context_window as usize,
                max_output: model_output as usize,
                system: system.to_string(),
                prompt: question.prompt.to_string(),
                thread: question.thread.cloned(),
                files: wanted,
                asked_files: question.files.clone(),
                roots: ctx.file_policy(),
                documents,
                replays_reasoning: crate::providers::dialect(kind).wants_reasoning_back(),
            };
            // Counting tokens (the tokenizer loads on first use) can take a while: say so.
            ctx.call
                .progress
                .set_stage("fitting the files and history into the model's context");
            let fitted = crate::spawn::blocking(move || fitting.fit())
                .await
                .map_err(|e| Failed {
                    failure: blocking_failure(e),
                    usage: Usage::default(),
                })?;
            (
                fitted.history,
                fitted.left_out,
                fitted.embedded,
                Some(fitted.counted as u64),
            )
        };

    // Sized to hold exactly what follows: the request lives as long as the call waits.
    let mut messages = Vec::with_capacity(history.len() + 2);
    messages.push(ChatMessage::system(system));
    // History and file text move into the messages: a long call keeps one copy, not two.
    messages.extend(history.into_iter().map(|(turn, files_text)| {
        if turn.role == "assistant" {
            ChatMessage {
                reasoning_content: turn.reasoning,
                ..ChatMessage::assistant(turn.content)
            }
        } else {
            ChatMessage::user(with_files(&files_text, &turn.content))
        }
    }));
    let text = with_files(&std::mem::take(&mut embedded.text), question.prompt);
    messages.push(ChatMessage {
        images,
        ..ChatMessage::user(text)
    });
    let request = ChatRequest {
        messages,
        temperature: question.temperature,
        thinking: question.thinking,
        web_search: question.web_search,
        deadline: ctx.call.deadline,
        max_output,
        prompt_tokens: counted,
        cache_key: question.thread.map(|t| cache_key(&t.id)),
    };
    if let Some(plan) = &ctx.dry_run {
        let mut notes: Vec<String> = embedded.note().into_iter().collect();
        if turns_left_out > 0 {
            notes.push(format!(
                "{turns_left_out} older turn(s) of this conversation would be left out"
            ));
        }
        let mut request = target.endpoint.plan(&target.model, &request);
        dry_run::shorten_data_urls(&mut request.body);
        plan.record(dry_run::Planned {
            provider: target.endpoint.name().to_string(),
            model: target.model.id.clone(),
            request,
            documents: planned_documents,
            notes,
        });
        return Err(Failed {
            failure: dry_run::stopped(),
            usage: Usage::default(),
        });
    }
    match ctx
        .providers
        .chat(target, &request, &ctx.call.progress)
        .await
    {
        Ok(response) => Ok(Answer {
            response,
            embedded,
            turns_left_out,
            kind,
        }),
        Err(failure) => Err(Failed {
            failure: ToolFailure {
                kind: FailureKind::Provider(failure.error.kind()),
                message: match failure.attempts {
                    0 | 1 => failure.error.to_string(),
                    n => format!("{} (after {n} attempts)", failure.error),
                },
                timed_out: failure.error.is_timeout(),
            },
            usage: Usage {
                tokens_in: failure.spent.tokens_in,
                tokens_out: failure.spent.tokens_out,
                reasoning_tokens: failure.spent.reasoning_tokens,
                cached_tokens: failure.spent.cached_tokens,
                attempts: Some(failure.attempts),
                cost: failure.cost,
                ..Usage::default()
            },
        }),
    }
}

/// Checks and reads the images of a question: the model must see images, at most
/// `images::MAX_IMAGES`, each under the path policy and size cap.
async fn load_images(
    ctx: &ToolContext,
    target: &Resolved,
    given: &[String],
) -> Result<Vec<String>, ToolFailure> {
    if given.is_empty() {
        return Ok(Vec::new());
    }
    let bad = |message: String| ToolFailure::new(FailureKind::BadArguments, message);
    if given.len() > images::MAX_IMAGES {
        return Err(bad(format!(
            "{} images given; at most {} per call",
            given.len(),
            images::MAX_IMAGES
        )));
    }
    if !target.model.vision {
        return Err(bad(format!(
            "{} cannot see images (the catalog does not mark it `vision`); choose a model that \
             can, or leave the images out",
            target.model.id
        )));
    }
    let roots = ctx.file_policy();
    let given = given.to_vec();
    ctx.call
        .progress
        .set_stage(format!("reading {} image(s)", given.len()));
    crate::spawn::blocking(move || {
        given
            .iter()
            .map(|g| {
                images::load(g, &roots).map_err(|why| format!("image {}: {why}", images::label(g)))
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(blocking_failure)?
    .map_err(bad)
}

/// Asks one model and records usage and reasoning on the call (the one-model tools).
pub async fn ask_and_record(
    ctx: &ToolContext,
    target: Resolved,
    question: Question<'_>,
) -> Result<Answer, ToolFailure> {
    // Lent, not moved: each async layer keeps room for what it was given by value.
    match ask(ctx, target, &question).await {
        Ok(answer) => {
            ctx.call.set_usage(answer.usage());
            ctx.call.set_reasoning(answer.response.reasoning.clone());
            ctx.call
                .set_finish_reason(answer.response.finish_reason.clone());
            Ok(answer)
        }
        Err(failed) => {
            ctx.call.set_usage(failed.usage);
            Err(failed.failure)
        }
    }
}

/// The structured form of a `resend_prompt` answer.
#[derive(serde::Serialize)]
struct ResendPrompt<'a> {
    status: &'static str,
    content: &'a str,
}

/// The `resend_prompt` answer (Zen's) when `text` is over the MCP size limit: `chat` reads a
/// prompt.txt passed in `files`; other tools put long material in files they name.
pub fn too_long(
    ctx: &ToolContext,
    tool: &str,
    field: &str,
    text: &str,
) -> Option<rmcp::model::CallToolResult> {
    let (size, limit) = (text.len(), ctx.config.prompt_size_limit);
    if size <= limit {
        return None;
    }
    let how = if tool == "chat" {
        "Save it to a file named prompt.txt and call chat again with its absolute path in `files` \
         (and a short `prompt`, or none); exai will read the prompt from the file."
            .to_string()
    } else {
        let files_field = if tool == "clink" {
            "files"
        } else {
            "relevant_files"
        };
        format!(
            "Keep `{field}` short: save the long material to a file and pass its absolute path in \
             {files_field}, then call {tool} again."
        )
    };
    let text = format!(
        "The {field} is {size} characters, more than the {limit} that fit in an MCP message here. {how}"
    );
    let mut result =
        rmcp::model::CallToolResult::success(vec![rmcp::model::ContentBlock::text(text.clone())]);
    result.structured_content = serde_json::to_value(ResendPrompt {
        status: "resend_prompt",
        content: &text,
    })
    .ok();
    Some(result)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// Files embedded in `order`, each block its name and a newline.
    fn embedded(order: &[&str]) -> Embedded {
        let mut out = Embedded::default();
        for name in order {
            let start = out.text.len();
            out.text.push_str(&format!("[{name}]"));
            out.spans.push(start..out.text.len());
            out.files.push(PathBuf::from(name));
        }
        out
    }

    #[test]
    fn each_file_goes_with_the_first_replayed_turn_that_named_it_in_that_turns_order() {
        // Embedded newest reference first; turn 1 named a file and a directory, turn 3 a file
        // of that directory again and one that is gone; an answer (turn 2) names nothing.
        let files = embedded(&["/p/new.rs", "/p/dir/b.rs", "/p/top.rs", "/p/dir/a.rs"]);
        let named = vec![
            vec![PathBuf::from("/p/top.rs"), PathBuf::from("/p/dir")],
            Vec::new(),
            vec![PathBuf::from("/p/dir/b.rs"), PathBuf::from("/p/other.rs")],
        ];
        let (placed, rest) = place_files(&named, &files);
        // Under a directory in path order, whatever order they were embedded in.
        assert_eq!(placed, ["[/p/top.rs][/p/dir/a.rs][/p/dir/b.rs]", "", ""]);
        assert_eq!(rest, "[/p/new.rs]");
        assert_eq!(with_files("", "q"), "q");
        assert_eq!(
            with_files("[f]", "q"),
            "Files for context (line-numbered):\n\n[f]\nq"
        );
    }

    #[test]
    fn a_threads_cache_key_is_stable_its_own_and_says_nothing_of_the_id() {
        let (one, again, other) = (
            cache_key("5b0c9a5e-3f0e-4c53-9a57-1d2b0e6f7a11"),
            cache_key("5b0c9a5e-3f0e-4c53-9a57-1d2b0e6f7a11"),
            cache_key("0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"),
        );
        assert_eq!(one, again);
        assert_ne!(one, other);
        assert_eq!(one.len(), 32);
        assert!(!one.contains("5b0c9a5e"));
    }
}
