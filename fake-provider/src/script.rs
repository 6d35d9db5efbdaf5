//! The script vocabulary: what a model name asks the fake to do (`fake-fast`, `fake-delay-<ms>`,
//! …), what a bearer key asks of `GET /models` (`fake-key-401`, `fake-key-hang`), and the text of
//! the answers, shared by the HTTP server and in-process scripted clients.

use std::time::Duration;

/// Model names advertised by `GET /v1/models` (examples of every script).
pub const EXAMPLE_MODELS: &[&str] = &[
    "fake-fast",
    "fake-delay-1000",
    "fake-stream-5x100",
    "fake-hang",
    "fake-stall-2",
    "fake-429-2",
    "fake-429r1-2",
    "fake-500",
    "fake-500-2",
    "fake-503",
    "fake-401",
    "fake-garbage",
    "fake-reset",
    "fake-wedge",
    "fake-resetmid-3",
    "fake-truncated",
    "fake-nochoices",
    "fake-nousage-3",
    "fake-usage-1000x500c200",
    "fake-reasoning",
    "fake-glm-thinking",
    "fake-comments-3",
    "fake-slowstart-1000x3",
    "fake-kimi-search",
    "fake-kimi-search-loop",
    "fake-glm-search",
    "fake-json",
    "fake-thinkstream-3x100",
    "fake-flood",
    "fake-flood-json",
    "fake-longline",
    "fake-redirect-1",
    "fake-echo-auth",
];

/// What the server does for a request, decided by the model name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// `fake-fast`: answer at once.
    Fast,
    /// `fake-delay-<ms>`: wait, then answer (nothing is sent before the wait ends).
    Delay(Duration),
    /// `fake-stream-<n>x<ms>`: `chunks` content chunks, one every `every`.
    Stream { chunks: u32, every: Duration },
    /// `fake-hang`: never answer.
    Hang,
    /// `fake-stall-<n>`: stream `n` content chunks, then nothing more.
    Stall(u32),
    /// `fake-429-<k>` (`retry_after` 0) and `fake-429r<secs>-<k>`: the first `k` requests get
    /// 429 with `Retry-After: <retry_after>`, later ones answer like `Fast`.
    RateLimited { limit: u32, retry_after: u32 },
    /// `fake-500`: always 500.
    ServerError,
    /// `fake-500-<k>`: the first `k` requests get 500, later ones answer like `Fast`.
    ServerErrorFirst(u32),
    /// `fake-503`: 503 with an HTML body (as a proxy in front of the provider would send).
    Unavailable,
    /// `fake-401`.
    Unauthorized,
    /// `fake-garbage`: 200 with a body that is not JSON.
    Garbage,
    /// `fake-reset`: drop the TCP connection (RST) without any response.
    Reset,
    /// `fake-wedge`: the connection stops moving bytes either way and is never closed (a
    /// network path that died), and no answer comes.
    Freeze,
    /// `fake-resetmid-<n>`: stream `n` content chunks, then reset the connection (no `[DONE]`).
    /// Non-stream: like `Reset`.
    ResetMid(u32),
    /// `fake-truncated`: the body (or the second content event) ends in the middle of its JSON.
    Truncated,
    /// `fake-nochoices`: 200 with an empty `choices` array.
    NoChoices,
    /// `fake-nousage-<n>`: like `fake-stream-<n>x0`, without any `usage`.
    NoUsage(u32),
    /// `fake-usage-<in>x<out>[c<cached>]`: answers like `fake-fast`, reporting exactly these
    /// `prompt_tokens`, `completion_tokens` and `prompt_tokens_details.cached_tokens` (the cost
    /// tests' known usage).
    Usage {
        tokens_in: u64,
        tokens_out: u64,
        cached: Option<u64>,
    },
    /// `fake-reasoning`: reasoning content, then the answer.
    Reasoning,
    /// `fake-glm-thinking`: GLM-style `reasoning_content` chunks, then the answer.
    GlmThinking,
    /// `fake-comments-<n>`: like `fake-stream-<n>x0`, but every event comes after a
    /// `: keep-alive` comment, uses CRLF line endings and is split across two body chunks.
    Comments(u32),
    /// `fake-slowstart-<ms>x<n>`: headers at once, then a pause before the first chunk, then `n`
    /// content chunks without delay. Non-stream: the pause, then the answer.
    SlowStart { wait: Duration, chunks: u32 },
    /// `fake-kimi-search`: Kimi's `$web_search` round trip. The request must offer
    /// `{"type":"builtin_function","function":{"name":"$web_search"}}` (else 400). A conversation
    /// without tool messages gets reasoning (unless `thinking: {type: disabled}`), then a
    /// `$web_search` call (id `call_search_1`, its arguments split across three chunks),
    /// `finish_reason: "tool_calls"`. The next request must carry that assistant message back
    /// (the tool call verbatim and, while thinking is on, a `reasoning_content`: Kimi's documented
    /// 400 otherwise) and a `{"role":"tool","tool_call_id":"call_search_1","name":"$web_search"}`
    /// message whose content is the arguments verbatim (else 400); after a pause (the "search")
    /// it answers `echo: <last user message> (web searches: 1)`, with reasoning first.
    KimiSearch,
    /// `fake-kimi-search-loop`: like `fake-kimi-search`, but every round asks for another search
    /// (`call_search_<n>`), forever.
    KimiSearchLoop,
    /// `fake-glm-search`: the request must offer `{"type":"web_search","web_search":{"enable":true}}`
    /// and, if it names one, `tool_choice: "auto"` (else 400); the answer carries a top-level
    /// `web_search` array of two results (in the first chunk when streaming).
    GlmSearch,
    /// `fake-json`: one JSON completion even when asked to stream (as some servers do).
    Json,
    /// `fake-thinkstream-<n>x<ms>`: `n` reasoning chunks, then `n` content chunks (the last one
    /// the echo), one every `every` (stream mode; non-stream: the whole wait, then the answer).
    ThinkStream { chunks: u32, every: Duration },
    /// `fake-flood`: 100 KiB of reasoning, then answer text as fast as the client reads it,
    /// 16 KiB an event, forever (stream mode; non-stream: a JSON body that never ends).
    Flood,
    /// `fake-flood-json`: a JSON answer whose content never ends, even when asked to stream.
    FloodJson,
    /// `fake-longline`: the start of an event, then one line that never ends (`x` forever,
    /// no newline); non-stream: like `fake-flood`.
    LongLine,
    /// `fake-redirect-<port>`: 307 to `http://127.0.0.1:<port>/v1/chat/completions`, with a
    /// secret `api_key` in the query.
    Redirect(u32),
    /// `fake-echo-auth`: 401 whose message echoes the `Authorization` header and the request's
    /// path (below `/v1`) and query, as some providers echo a wrong key.
    EchoAuth,
    /// `fake-bigheaders-<kib>`: answers like `fake-fast`, its head padded with `<kib>` headers of
    /// 1 KiB each (`x-fake-pad-<i>`): what a client bounds before it reads any body.
    BigHeaders(u32),
    /// Anything else: 404 model not found.
    Unknown,
}

impl Script {
    pub fn parse(model: &str) -> Script {
        match model {
            "fake-fast" => return Script::Fast,
            "fake-hang" => return Script::Hang,
            "fake-500" => return Script::ServerError,
            "fake-503" => return Script::Unavailable,
            "fake-401" => return Script::Unauthorized,
            "fake-garbage" => return Script::Garbage,
            "fake-reset" => return Script::Reset,
            "fake-wedge" => return Script::Freeze,
            "fake-truncated" => return Script::Truncated,
            "fake-nochoices" => return Script::NoChoices,
            "fake-reasoning" => return Script::Reasoning,
            "fake-glm-thinking" => return Script::GlmThinking,
            "fake-kimi-search" => return Script::KimiSearch,
            "fake-kimi-search-loop" => return Script::KimiSearchLoop,
            "fake-glm-search" => return Script::GlmSearch,
            "fake-json" => return Script::Json,
            "fake-flood" => return Script::Flood,
            "fake-flood-json" => return Script::FloodJson,
            "fake-longline" => return Script::LongLine,
            "fake-echo-auth" => return Script::EchoAuth,
            _ => {}
        }
        Self::parse_parameterized(model).unwrap_or(Script::Unknown)
    }

    fn parse_parameterized(model: &str) -> Option<Script> {
        if let Some(ms) = model.strip_prefix("fake-delay-") {
            return Some(Script::Delay(Duration::from_millis(number(ms)?)));
        }
        if let Some(spec) = model.strip_prefix("fake-stream-") {
            let (n, ms) = number_pair(spec, 'x')?;
            return Some(Script::Stream {
                chunks: n,
                every: Duration::from_millis(ms),
            });
        }
        if let Some(spec) = model.strip_prefix("fake-usage-") {
            let (counts, cached) = match spec.split_once('c') {
                Some((counts, cached)) => (counts, Some(number(cached)?)),
                None => (spec, None),
            };
            let (tokens_in, tokens_out) = number_pair(counts, 'x')?;
            return Some(Script::Usage {
                tokens_in,
                tokens_out,
                cached,
            });
        }
        if let Some(spec) = model.strip_prefix("fake-thinkstream-") {
            let (n, ms) = number_pair(spec, 'x')?;
            return Some(Script::ThinkStream {
                chunks: n,
                every: Duration::from_millis(ms),
            });
        }
        if let Some(spec) = model.strip_prefix("fake-slowstart-") {
            let (ms, n) = number_pair(spec, 'x')?;
            return Some(Script::SlowStart {
                wait: Duration::from_millis(ms),
                chunks: n,
            });
        }
        if let Some(k) = model.strip_prefix("fake-429-") {
            let limit = number(k)?;
            return Some(Script::RateLimited {
                limit,
                retry_after: 0,
            });
        }
        if let Some(spec) = model.strip_prefix("fake-429r") {
            let (retry_after, limit) = number_pair(spec, '-')?;
            return Some(Script::RateLimited { limit, retry_after });
        }
        Self::parse_counted(model)
    }

    /// Scripts named `<prefix><n>`.
    fn parse_counted(model: &str) -> Option<Script> {
        type Counted = fn(u32) -> Script;
        const SCRIPTS: &[(&str, Counted)] = &[
            ("fake-stall-", Script::Stall),
            ("fake-500-", Script::ServerErrorFirst),
            ("fake-resetmid-", Script::ResetMid),
            ("fake-nousage-", Script::NoUsage),
            ("fake-comments-", Script::Comments),
            ("fake-redirect-", Script::Redirect),
            ("fake-bigheaders-", Script::BigHeaders),
        ];
        SCRIPTS.iter().find_map(|(prefix, script)| {
            let n = model.strip_prefix(prefix)?;
            Some(script(number(n)?))
        })
    }
}

/// What `GET /models` does, decided by the bearer key (a model list names no model to script
/// by): how `exai doctor` meets a refused key or a provider that never answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyScript {
    /// `Authorization: Bearer fake-key-401`: 401 `invalid_api_key`, as a provider refuses a bad key.
    Unauthorized,
    /// `Authorization: Bearer fake-key-hang`: never answer (not even the headers).
    Hang,
    /// Any other key, or none: the model list.
    List,
}

impl KeyScript {
    /// The script of an `Authorization` header's value (`Bearer <key>`), if any.
    pub fn parse(authorization: Option<&str>) -> KeyScript {
        match authorization.and_then(|value| value.strip_prefix("Bearer ")) {
            Some("fake-key-401") => KeyScript::Unauthorized,
            Some("fake-key-hang") => KeyScript::Hang,
            _ => KeyScript::List,
        }
    }
}

/// Strict decimal parse: digits only (no sign, no spaces).
pub(crate) fn number<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Two strict decimals separated by `sep` (`5x100`, `1-2`).
fn number_pair<A: std::str::FromStr, B: std::str::FromStr>(s: &str, sep: char) -> Option<(A, B)> {
    let (a, b) = s.split_once(sep)?;
    Some((number(a)?, number(b)?))
}

/// `echo: <last user message>`: every scripted answer, so concurrent callers can tell theirs.
pub fn echo(last_user: &str) -> String {
    format!("echo: {last_user}")
}

/// Splits `text` into `parts` pieces of about the same number of characters.
pub fn split_text(text: &str, parts: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let size = chars.len().div_ceil(parts.max(1)).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// `tok0 `, `tok1 `, ... (`n` chunks).
pub fn tokens(n: u32) -> Vec<String> {
    (0..n).map(|i| format!("tok{i} ")).collect()
}

/// `tok0 `, `tok1 `, ... then the echo text as the last of `n` chunks.
pub fn token_chunks(n: u32, echo: &str) -> Vec<String> {
    let mut chunks = tokens(n.saturating_sub(1));
    chunks.push(echo.to_owned());
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fixed_names() {
        assert_eq!(Script::parse("fake-fast"), Script::Fast);
        assert_eq!(Script::parse("fake-hang"), Script::Hang);
        assert_eq!(Script::parse("fake-500"), Script::ServerError);
        assert_eq!(Script::parse("fake-401"), Script::Unauthorized);
        assert_eq!(Script::parse("fake-garbage"), Script::Garbage);
        assert_eq!(Script::parse("fake-reset"), Script::Reset);
        assert_eq!(Script::parse("fake-reasoning"), Script::Reasoning);
        assert_eq!(Script::parse("fake-503"), Script::Unavailable);
        assert_eq!(Script::parse("fake-truncated"), Script::Truncated);
        assert_eq!(Script::parse("fake-nochoices"), Script::NoChoices);
        assert_eq!(Script::parse("fake-glm-thinking"), Script::GlmThinking);
        assert_eq!(Script::parse("fake-kimi-search"), Script::KimiSearch);
        assert_eq!(
            Script::parse("fake-kimi-search-loop"),
            Script::KimiSearchLoop
        );
        assert_eq!(Script::parse("fake-glm-search"), Script::GlmSearch);
        assert_eq!(Script::parse("fake-json"), Script::Json);
        assert_eq!(Script::parse("fake-flood"), Script::Flood);
        assert_eq!(Script::parse("fake-flood-json"), Script::FloodJson);
        assert_eq!(Script::parse("fake-longline"), Script::LongLine);
        assert_eq!(Script::parse("fake-echo-auth"), Script::EchoAuth);
    }

    #[test]
    fn parses_parameterized_names() {
        assert_eq!(
            Script::parse("fake-delay-1000"),
            Script::Delay(Duration::from_millis(1000))
        );
        assert_eq!(
            Script::parse("fake-stream-5x100"),
            Script::Stream {
                chunks: 5,
                every: Duration::from_millis(100)
            }
        );
        assert_eq!(Script::parse("fake-stall-2"), Script::Stall(2));
        let rate_limited = |limit, retry_after| Script::RateLimited { limit, retry_after };
        assert_eq!(Script::parse("fake-429-2"), rate_limited(2, 0));
        assert_eq!(Script::parse("fake-429-0"), rate_limited(0, 0));
        assert_eq!(Script::parse("fake-429r1-2"), rate_limited(2, 1));
        assert_eq!(Script::parse("fake-429r0-3"), rate_limited(3, 0));
        assert_eq!(Script::parse("fake-500-2"), Script::ServerErrorFirst(2));
        assert_eq!(Script::parse("fake-resetmid-3"), Script::ResetMid(3));
        assert_eq!(Script::parse("fake-nousage-4"), Script::NoUsage(4));
        assert_eq!(
            Script::parse("fake-usage-1000x500c200"),
            Script::Usage {
                tokens_in: 1000,
                tokens_out: 500,
                cached: Some(200)
            }
        );
        assert_eq!(
            Script::parse("fake-usage-7x3"),
            Script::Usage {
                tokens_in: 7,
                tokens_out: 3,
                cached: None
            }
        );
        assert_eq!(Script::parse("fake-comments-5"), Script::Comments(5));
        assert_eq!(Script::parse("fake-redirect-8080"), Script::Redirect(8080));
        assert_eq!(Script::parse("fake-bigheaders-64"), Script::BigHeaders(64));
        assert_eq!(
            Script::parse("fake-thinkstream-4x250"),
            Script::ThinkStream {
                chunks: 4,
                every: Duration::from_millis(250)
            }
        );
        assert_eq!(
            Script::parse("fake-slowstart-300x2"),
            Script::SlowStart {
                wait: Duration::from_millis(300),
                chunks: 2
            }
        );
    }

    #[test]
    fn rejects_unknown_and_malformed_names() {
        for model in [
            "",
            "gpt-4o",
            "fake-",
            "fake-fast2",
            "fake-delay-",
            "fake-delay-abc",
            "fake-delay--5",
            "fake-delay-+5",
            "fake-stream-5",
            "fake-stream-x100",
            "fake-stream-5x",
            "fake-stream-5x100x2",
            "fake-stall-",
            "fake-429-two",
            "fake-429-99999999999",
            "fake-429r",
            "fake-429r1",
            "fake-429r1-",
            "fake-429r-2",
            "fake-429rx-2",
            "fake-429r1-2-3",
            "fake-500-",
            "fake-500-x",
            "fake-503-1",
            "fake-resetmid-",
            "fake-truncated-1",
            "fake-nochoices2",
            "fake-nousage-",
            "fake-glm",
            "fake-kimi-search2",
            "fake-glm-search-",
            "fake-comments-",
            "fake-comments-a",
            "fake-slowstart-100",
            "fake-slowstart-x3",
            "fake-slowstart-100x",
            "fake-flood-1",
            "fake-longline2",
            "fake-redirect-",
            "fake-redirect-x",
            "fake-thinkstream-4",
            "fake-echo-auth-1",
            "fake-bigheaders-",
        ] {
            assert_eq!(Script::parse(model), Script::Unknown, "{model:?}");
        }
    }

    #[test]
    fn every_advertised_model_is_scripted() {
        for model in EXAMPLE_MODELS {
            assert_ne!(Script::parse(model), Script::Unknown, "{model}");
        }
    }

    #[test]
    fn a_model_list_is_scripted_by_the_bearer_key() {
        assert_eq!(
            KeyScript::parse(Some("Bearer fake-key-401")),
            KeyScript::Unauthorized
        );
        assert_eq!(
            KeyScript::parse(Some("Bearer fake-key-hang")),
            KeyScript::Hang
        );
        for other in [
            None,
            Some("Bearer sk-real"),
            Some("Bearer fake-key-4011"),
            Some("fake-key-401"),
            Some("Basic fake-key-hang"),
        ] {
            assert_eq!(KeyScript::parse(other), KeyScript::List, "{other:?}");
        }
    }

    #[test]
    fn token_chunks_end_with_echo() {
        assert_eq!(token_chunks(3, "echo: hi"), ["tok0 ", "tok1 ", "echo: hi"]);
        assert_eq!(token_chunks(0, "echo: hi"), ["echo: hi"]);
    }

    #[test]
    fn split_text_keeps_text() {
        let parts = split_text("echo: héllo wörld", 3);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.concat(), "echo: héllo wörld");
        assert_eq!(split_text("", 3).concat(), "");
    }
}
