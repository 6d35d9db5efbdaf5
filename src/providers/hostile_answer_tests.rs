//! Answers no honest provider sends, crafted to cost exai memory or time out of proportion to
//! their bytes, served over HTTP to the real client: each is read in time linear in its size and
//! builds only what exai keeps.

use std::time::Duration;

use super::fixture_tests::{client_of, client_with, replay_body, serve_once};
use super::search::MOST_SOURCES;
use super::{ChatResponse, ProviderError};

/// An event stream of `events` (each a JSON object), then `[DONE]`.
fn stream(events: &[String]) -> Vec<u8> {
    let mut body = String::new();
    for event in events {
        body.push_str(&format!("data: {event}\n\n"));
    }
    body.push_str("data: [DONE]\n\n");
    body.into_bytes()
}

/// One attempt at `provider` answering `body`, which must end well within a debug build's
/// reach of a linear read.
async fn attempt(provider: &str, body: Vec<u8>) -> Result<ChatResponse, ProviderError> {
    let replay = replay_body(provider, 200, "text/event-stream", body);
    match tokio::time::timeout(Duration::from_secs(30), replay).await {
        Ok((outcome, _)) => outcome.map_err(|e| e.error),
        Err(_) => panic!("the answer took over 30 s to read"),
    }
}

const ENDING: &str = r#"{"choices":[{"delta":{"content":"done"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;

#[tokio::test]
async fn a_flood_of_sources_in_one_event_is_read_in_linear_time_and_kept_to_a_hundred() {
    // 200,000 distinct links: comparing each with every one kept took minutes.
    let items: Vec<String> = (0..200_000)
        .map(|i| format!(r#"{{"link":"https://s.example/{i}"}}"#))
        .collect();
    let flood = format!(r#"{{"choices":[],"web_search":[{}]}}"#, items.join(","));
    let answer = attempt("glm", stream(&[flood, ENDING.to_string()]))
        .await
        .unwrap();
    assert_eq!(answer.text, "done");
    assert_eq!(answer.sources.len(), MOST_SOURCES);
    assert_eq!(answer.sources[0].url, "https://s.example/0");
    assert_eq!(answer.sources[99].url, "https://s.example/99");
}

#[tokio::test]
async fn only_the_first_choice_is_read_and_a_flood_of_them_builds_nothing() {
    // exai asks for one choice: another's text is not woven into the answer, and a million
    // empty ones are parsed past (built, they were over a gigabyte).
    let flood = format!(
        r#"{{"choices":[{{"delta":{{"content":"mine "}}}},{{"delta":{{"content":"other "}}}},{}{{}}]}}"#,
        "{},".repeat(1_000_000)
    );
    let answer = attempt("openai", stream(&[flood, ENDING.to_string()]))
        .await
        .unwrap();
    assert_eq!(answer.text, "mine done");
}

#[tokio::test]
async fn a_flood_of_tool_call_parts_or_reasoning_parts_is_read_only_so_far() {
    let parts = format!(
        r#"{{"choices":[{{"delta":{{"content":"a ","tool_calls":[{}{{}}],"reasoning_details":[{}{{}}]}}}}]}}"#,
        "{},".repeat(500_000),
        r#"{"text":"r"},"#.repeat(500_000)
    );
    let answer = attempt("openrouter", stream(&[parts, ENDING.to_string()]))
        .await
        .unwrap();
    assert_eq!(answer.text, "a done");
    let reasoning = answer.reasoning.unwrap_or_default();
    assert!(
        !reasoning.is_empty() && reasoning.len() <= 64,
        "reasoning parts read: {}",
        reasoning.len()
    );
}

#[tokio::test]
async fn a_model_list_gives_only_names_a_model_can_have_and_at_most_five_thousand() {
    let mut entries = vec![
        r#"{"id":"glm-4.7"}"#.to_string(),
        format!(r#"{{"id":"{}"}}"#, "m".repeat(5000)),
        r#"{"id":"bad\u001b]52;c;aGk=\u0007"}"#.to_string(),
        r#"{"id":" spaced"}"#.to_string(),
        r#"{"id":"line\u2028break"}"#.to_string(),
        r#"{"id":""}"#.to_string(),
        r#"{"id":"r1","reasoning":{"mandatory":false,"supported_efforts":["high","x y","low",7]}}"#
            .to_string(),
    ];
    entries.push(r#"{"id":"Phi-3 Mini Instruct"}"#.to_string());
    entries.extend((0..20_000).map(|i| format!(r#"{{"id":"m{i}"}}"#)));
    let body = format!(r#"{{"data":[{}]}}"#, entries.join(",")).into_bytes();
    let url = serve_once(200, "application/json", body).await;
    let listed = client_of("openrouter", url).list_models().await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids[..4], ["glm-4.7", "r1", "Phi-3 Mini Instruct", "m0"]);
    assert_eq!(
        ids.len(),
        5_000 - 5,
        "read for 5,000, five of them no names"
    );
    let reasoning = listed[1].1.as_ref().unwrap();
    assert_eq!(reasoning.efforts, ["low", "high"]);
}

#[tokio::test]
async fn usage_past_what_the_request_could_use_is_counted_as_that_most_with_a_note() {
    let usage = r#"{"choices":[{"delta":{"content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1000000000000,"completion_tokens":1000000000000,"prompt_tokens_details":{"cached_tokens":1000000000000},"completion_tokens_details":{"reasoning_tokens":1000000000000}}}"#;
    let answer = attempt("glm", stream(&[usage.to_string()])).await.unwrap();
    let (tokens_in, tokens_out) = (answer.tokens_in.unwrap(), answer.tokens_out.unwrap());
    // At most the largest window any model has, and a little over the output limit sent.
    assert!((2_000_000..2_100_000).contains(&tokens_in), "{tokens_in}");
    assert!((1_000..1_000_000).contains(&tokens_out), "{tokens_out}");
    assert_eq!(answer.cached_tokens, Some(tokens_in));
    assert_eq!(answer.reasoning_tokens, Some(tokens_out));
    let notes = answer.notes.join("\n");
    assert!(
        notes.contains("reported 1000000000000 input tokens")
            && notes.contains(&format!("counted as {tokens_in}"))
            && notes.contains("output tokens"),
        "{notes}"
    );
    // An honest count is taken as sent, with no note: reasoning past the limit sent too (some
    // servers leave it out of the limit), and a cached count without its whole.
    let partial = r#"{"choices":[{"delta":{"content":"hi"},"finish_reason":"stop"}],"usage":{"completion_tokens":5,"cached_tokens":40}}"#;
    let answer = attempt("kimi", stream(&[partial.to_string()]))
        .await
        .unwrap();
    assert_eq!(answer.cached_tokens, Some(40));
    let honest = r#"{"choices":[{"delta":{"content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":90000,"completion_tokens":30000}}"#;
    let answer = attempt("glm", stream(&[honest.to_string()])).await.unwrap();
    assert_eq!(
        (answer.tokens_in, answer.tokens_out),
        (Some(90_000), Some(30_000))
    );
    assert!(answer.notes.is_empty(), "{:?}", answer.notes);
}

#[tokio::test]
async fn tool_calls_past_sixty_four_in_one_answer_are_left_out_with_a_note() {
    let calls: Vec<String> = (0..100)
        .map(|i| {
            format!(
                r#"{{"choices":[{{"delta":{{"tool_calls":[{{"index":{i},"id":"c{i}","type":"function","function":{{"name":"$web_search","arguments":"{{}}"}}}}]}}}}]}}"#
            )
        })
        .collect();
    let mut events = calls;
    events.push(r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#.to_string());
    let answer = attempt("openai", stream(&events)).await.unwrap();
    assert_eq!(answer.tool_calls.len(), 64);
    assert_eq!(answer.tool_calls[63].id, "c63");
    assert!(
        answer
            .notes
            .iter()
            .any(|n| n.contains("more than 64 tool calls")),
        "{:?}",
        answer.notes
    );
}

/// A stream that sends its head, then `event` every 50 ms for ever (until the client leaves).
async fn dribbling(event: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    crate::spawn::in_current_span(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 65536];
        let _ = socket.read(&mut request).await;
        let head =
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
        if socket.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        while socket.write_all(event.as_bytes()).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    url
}

#[tokio::test]
async fn events_that_bring_nothing_are_no_sign_of_life() {
    let timeouts = [
        ("EXAI_FIRST_TOKEN_TIMEOUT_S", "1"),
        ("EXAI_PROVIDER_IDLE_TIMEOUT_S", "1"),
    ];
    for nothing in [
        "data: {\"choices\":[]}\n\n",
        "data: {\"choices\":[],\"usage\":{}}\n\n",
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{}]}}]}\n\n",
    ] {
        let client = client_with("openai", dribbling(nothing).await, &timeouts);
        let model = super::ModelInfo::unlisted("openai", "m");
        let request = super::ChatRequest::question("q");
        let seen = super::fixture_tests::Seen::default();
        let attempt = client.attempt(&model, &request, &seen, 1, false);
        let outcome = tokio::time::timeout(Duration::from_secs(20), attempt).await;
        let error = outcome.expect("ended by the first-token wait").unwrap_err();
        assert!(
            error
                .error
                .to_string()
                .contains("waiting for the first token"),
            "{nothing}: {}",
            error.error
        );
        assert!(!error.content_started, "{nothing}: nothing was output");
    }
}
