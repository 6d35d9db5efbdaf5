//! Web search: which models may search, and the two ways providers search — inside the one
//! request (GLM's `web_search` tool), or a round trip through a builtin function (Kimi's
//! `$web_search`: the model asks, exai hands the arguments back, the platform searches). The
//! tool each provider wants is in its own file.

use std::borrow::Cow;
use std::time::Instant;

use super::dialect::{Dialect, WebSearch, dialect};
use super::{
    CallObserver, ChatMessage, ChatRequest, ChatResponse, Endpoint, Failure, ModelInfo,
    ProviderError, Source, Spent, ToolCall,
};
use crate::config::ProviderKind;

/// Rounds of searching a model may ask for in one call before exai stops it.
pub(crate) const MAX_SEARCH_ROUNDS: u32 = 3;

/// Whether exai can let this model search the web: the catalog says the model can, and exai
/// knows its provider's way of doing it.
pub fn can_search(kind: ProviderKind, model: &ModelInfo) -> bool {
    offered(dialect(kind), model).is_some()
}

/// How `model` searches the web through exai on a provider of this dialect, if it can.
pub(crate) fn offered(dialect: &dyn Dialect, model: &ModelInfo) -> Option<WebSearch> {
    dialect.web_search().filter(|_| model.web_search)
}

/// One answer from `endpoint`, running the search rounds the model asks for. Usage, attempts and
/// reasoning of every round are summed into the answer (or the failure).
pub(super) async fn answer(
    endpoint: &Endpoint,
    model: &ModelInfo,
    request: &ChatRequest,
    observer: &dyn CallObserver,
) -> Result<ChatResponse, Failure> {
    let search = offered(dialect(endpoint.config.kind), model).filter(|_| request.web_search);
    let searching = search.is_some();
    let mut notes = Vec::new();
    if let Some(why) = &model.deprecated {
        notes.push(format!(
            "{} is deprecated by {}: {why}. Name another model to stop seeing this note.",
            model.id,
            endpoint.name()
        ));
    }
    if request.web_search && !searching {
        notes.push(format!(
            "No web search: {} on {} cannot search the web through exai, so the answer comes \
             from the model's own knowledge.",
            model.id,
            endpoint.name()
        ));
    }
    let mut conversation = Cow::Borrowed(request);
    let mut earlier = Rounds::default();
    loop {
        // A search inside the request runs in it; a round trip between rounds, once asked.
        let searching_now = match search {
            Some(WebSearch::InRequest) => true,
            Some(WebSearch::RoundTrip { .. }) => earlier.rounds > 0,
            None => false,
        };
        let mut round = endpoint
            .round(model, &conversation, observer, searching_now)
            .await
            .map_err(|mut failure| {
                failure.attempts += earlier.attempts;
                failure.spent.add(earlier.spent);
                failure
            })?;
        earlier.attempts += round.attempts;
        earlier.spent.add(Spent::of(&round));
        let calls = std::mem::take(&mut round.tool_calls);
        let round_trip = match search {
            Some(WebSearch::RoundTrip { function }) if !calls.is_empty() => Some(function),
            _ => None,
        };
        let Some(function) = round_trip else {
            if !calls.is_empty() {
                tracing::warn!(
                    provider = endpoint.name(),
                    calls = calls.len(),
                    "the model asked for tools exai did not offer; ignored"
                );
            }
            return Ok(earlier.finish(round, notes));
        };
        let fail = |error: ProviderError, earlier: &Rounds| Failure {
            error,
            attempts: earlier.attempts,
            spent: earlier.spent,
            cost: super::Cost::default(),
            streamed: false,
        };
        if let Some(other) = calls.iter().find(|c| c.function.name != function) {
            let error = ProviderError::Garbage {
                provider: endpoint.name().to_string(),
                model: model.id.clone(),
                detail: format!(
                    "it asked to call {:?}, a tool exai did not offer",
                    other.function.name
                ),
            };
            return Err(fail(error, &earlier));
        }
        if earlier.rounds >= MAX_SEARCH_ROUNDS {
            let error = ProviderError::SearchLoop {
                provider: endpoint.name().to_string(),
                model: model.id.clone(),
                rounds: earlier.rounds,
            };
            return Err(fail(error, &earlier));
        }
        if Instant::now() >= request.deadline {
            let error = ProviderError::Deadline {
                what: "the answer after a web search".into(),
            };
            return Err(fail(error, &earlier));
        }
        tracing::info!(
            provider = endpoint.name(),
            model = %model.id,
            searches = calls.len(),
            round = earlier.rounds + 1,
            "the model asked to search the web"
        );
        observer.stage("searching the web".into());
        earlier.rounds += 1;
        // Billed per search the model asked for (Kimi's pricing), whatever comes next.
        earlier.spent.web_searches = earlier
            .spent
            .web_searches
            .saturating_add(calls.len() as u32);
        earlier.keep(&round);
        let next = conversation.to_mut();
        let thinks = model.thinks(next.thinking);
        let turn = search_turn(round, calls, thinks);
        next.prompt_tokens = next
            .prompt_tokens
            .map(|n| n + super::body::rough_tokens(&turn));
        next.messages.extend(turn);
    }
}

/// What goes back after a round that asked to search (Kimi's round trip): the assistant turn as
/// it came, reasoning included, then one tool message per call whose content is the call's
/// arguments, verbatim. While the model thinks, Kimi refuses an assistant tool-call turn without
/// `reasoning_content`, so a round that streamed no reasoning sends an empty one.
pub(crate) fn search_turn(
    round: ChatResponse,
    calls: Vec<ToolCall>,
    thinks: bool,
) -> Vec<ChatMessage> {
    let reasoning = round.reasoning.or_else(|| thinks.then(String::new));
    let mut turn = vec![ChatMessage {
        role: "assistant",
        content: round.text.into(),
        reasoning_content: reasoning,
        tool_calls: calls.clone(),
        ..ChatMessage::default()
    }];
    turn.extend(calls.into_iter().map(|call| ChatMessage {
        role: "tool",
        content: call.function.arguments.into(),
        tool_call_id: Some(call.id),
        name: Some(call.function.name),
        ..ChatMessage::default()
    }));
    turn
}

/// What the rounds before the last one left behind.
#[derive(Default)]
struct Rounds {
    rounds: u32,
    attempts: u32,
    spent: Spent,
    reasoning: Vec<String>,
    sources: Vec<Source>,
    time_to_first_token: Option<std::time::Duration>,
}

impl Rounds {
    fn keep(&mut self, round: &ChatResponse) {
        if let Some(reasoning) = &round.reasoning {
            self.reasoning.push(reasoning.clone());
        }
        add_sources(&mut self.sources, &round.sources);
        self.time_to_first_token = self.time_to_first_token.or(round.time_to_first_token);
    }

    /// The last round's answer, carrying what every round spent and thought.
    fn finish(mut self, mut last: ChatResponse, mut notes: Vec<String>) -> ChatResponse {
        if let Some(reasoning) = last.reasoning.take() {
            self.reasoning.push(reasoning);
        }
        if !self.reasoning.is_empty() {
            last.reasoning = Some(self.reasoning.join("\n\n"));
        }
        add_sources(&mut self.sources, &last.sources);
        last.sources = self.sources;
        last.time_to_first_token = self.time_to_first_token.or(last.time_to_first_token);
        self.spent.into_answer(&mut last);
        last.attempts = self.attempts;
        // The last round's own notes (how it ended) follow the notes about searching.
        notes.append(&mut last.notes);
        last.notes = notes;
        last
    }
}

/// Most sources an answer lists: a search brings tens; the rest of a flood is left out.
pub(crate) const MOST_SOURCES: usize = 100;

/// Appends the sources not already listed (by URL), up to [`MOST_SOURCES`]; in time linear in
/// both lists, however many a provider sends.
pub(crate) fn add_sources(to: &mut Vec<Source>, from: &[Source]) {
    let mut listed: std::collections::HashSet<String> = to.iter().map(|s| s.url.clone()).collect();
    for source in from {
        if to.len() >= MOST_SOURCES {
            return;
        }
        if listed.insert(source.url.clone()) {
            to.push(source.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::{Value, json};

    use super::*;
    use crate::providers::kimi::SEARCH_FUNCTION;
    use crate::providers::{FunctionCall, Thinking, glm, request_body};

    fn request(web_search: bool) -> ChatRequest {
        ChatRequest {
            messages: vec![ChatMessage::user("q")],
            temperature: None,
            thinking: None,
            web_search,
            deadline: Instant::now() + Duration::from_secs(60),
            max_output: None,
            prompt_tokens: None,
            cache_key: None,
        }
    }

    fn model(provider: &str, web_search: bool) -> ModelInfo {
        let mut m = ModelInfo::unlisted(provider, "m");
        m.web_search = web_search;
        m.thinking = Thinking::DefaultOn;
        m
    }

    fn body(kind: ProviderKind, model: &ModelInfo, request: &ChatRequest) -> Value {
        request_body(kind, "api.z.ai", model, request)
    }

    #[test]
    fn each_provider_gets_its_own_search_tool_only_when_asked_and_able() {
        let glm = body(ProviderKind::Glm, &model("glm", true), &request(true));
        assert_eq!(glm["tools"], json!([glm::search_tool("api.z.ai")]));
        assert!(
            glm.get("tool_choice").is_none(),
            "GLM documents tool_choice for function tools only: {glm}"
        );
        let kimi = body(ProviderKind::Kimi, &model("kimi", true), &request(true));
        assert_eq!(
            kimi["tools"],
            json!([{"type": "builtin_function", "function": {"name": "$web_search"}}])
        );
        assert!(kimi.get("tool_choice").is_none());
        for (kind, m, r) in [
            (ProviderKind::Glm, model("glm", true), request(false)),
            (ProviderKind::Glm, model("glm", false), request(true)),
            (ProviderKind::Kimi, model("kimi", false), request(true)),
            (
                ProviderKind::OpenRouter,
                model("openrouter", true),
                request(true),
            ),
            (ProviderKind::Custom, model("custom", true), request(true)),
        ] {
            let b = body(kind, &m, &r);
            assert!(b.get("tools").is_none(), "{kind:?}: {b}");
        }
    }

    #[test]
    fn messages_of_a_round_trip_serialize_as_kimi_wants_them() {
        let call = ToolCall {
            id: "c1".into(),
            kind: "builtin_function".into(),
            function: FunctionCall {
                name: SEARCH_FUNCTION.into(),
                arguments: "{\"x\":1}".into(),
            },
        };
        let assistant = ChatMessage {
            role: "assistant",
            reasoning_content: Some("hm".into()),
            tool_calls: vec![call],
            ..ChatMessage::default()
        };
        let tool = ChatMessage {
            role: "tool",
            content: "{\"x\":1}".into(),
            tool_call_id: Some("c1".into()),
            name: Some(SEARCH_FUNCTION.into()),
            ..ChatMessage::default()
        };
        assert_eq!(
            serde_json::to_value([assistant, tool, ChatMessage::user("u")]).unwrap(),
            json!([
                {"role": "assistant", "content": "", "reasoning_content": "hm",
                 "tool_calls": [{"id": "c1", "type": "builtin_function",
                                 "function": {"name": "$web_search", "arguments": "{\"x\":1}"}}]},
                {"role": "tool", "content": "{\"x\":1}", "tool_call_id": "c1", "name": "$web_search"},
                {"role": "user", "content": "u"},
            ])
        );
    }

    #[test]
    fn a_thinking_model_gets_reasoning_content_back_even_when_it_streamed_none() {
        let call = ToolCall {
            id: "c1".into(),
            kind: "builtin_function".into(),
            function: FunctionCall {
                name: SEARCH_FUNCTION.into(),
                arguments: "{}".into(),
            },
        };
        for (reasoning, thinks, sent) in [
            (Some("hm"), true, Some("hm")),
            (Some("hm"), false, Some("hm")),
            (None, true, Some("")),
            (None, false, None),
        ] {
            let round = ChatResponse {
                reasoning: reasoning.map(String::from),
                ..ChatResponse::default()
            };
            let turn = search_turn(round, vec![call.clone()], thinks);
            assert_eq!(turn.len(), 2);
            assert_eq!(
                turn[0].reasoning_content.as_deref(),
                sent,
                "{reasoning:?} {thinks}"
            );
            assert_eq!(turn[1].content, "{}");
        }
    }
}
