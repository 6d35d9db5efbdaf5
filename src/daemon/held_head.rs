//! Sends the head of a `/mcp` answer streamed as SSE together with its first message, in one
//! write, instead of the head and the stream's priming event alone and the message later.
//!
//! rmcp answers each POST with an event stream that opens with a priming event (the id a client
//! resumes from). Written as soon as the answer starts, the head and that event cost a write and
//! a wake-up of the client of their own, for every call. Held until the stream's first message
//! (or its end, or [`HOLD`]), they go with it: a quick call's whole answer becomes one write of
//! known length, and a long call's head leaves with its first progress notification.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{Method, header};
use axum::response::Response;
use futures::{FutureExt, StreamExt};
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::body::Frame;

/// The longest an answer's head waits for a message to go with. A call that sends nothing for
/// longer gets its head (and priming event) then, as before, only this much later.
const HOLD: Duration = Duration::from_millis(100);

/// The most held: a burst of events beyond it streams as it comes.
const MOST_HELD: usize = 64 * 1024;

/// The `/mcp` step that holds the head of an event-stream answer to a POST until its first
/// message; `next` is the rest of the route.
pub async fn hold_head(request: Request, next: impl AsyncFnOnce(Request) -> Response) -> Response {
    let post = request.method() == Method::POST;
    let response = next(request).await;
    if !post || !is_event_stream(&response) {
        return response;
    }
    let (parts, mut body) = response.into_parts();
    let until = tokio::time::Instant::now() + HOLD;
    // What the stream yielded so far: the data of its events, and what stopped the wait if it
    // was not data (an error, trailers).
    let mut data = Vec::new();
    let mut after = None;
    // Once a message is held, what the stream has ready goes with it (often its end), but
    // nothing more is waited for.
    let mut message_held = false;
    let ended = loop {
        if data.len() >= MOST_HELD {
            break false;
        }
        let next = if message_held {
            match body.frame().now_or_never() {
                Some(next) => next,
                None => break false,
            }
        } else {
            match tokio::time::timeout_at(until, body.frame()).await {
                Ok(next) => next,
                Err(_) => break false,
            }
        };
        match next {
            None => break true,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(event) => {
                    data.extend_from_slice(&event);
                    message_held |= carries_message(&event);
                }
                Err(frame) => {
                    after = Some(Ok(frame));
                    break false;
                }
            },
            Some(Err(error)) => {
                after = Some(Err(error));
                break false;
            }
        }
    };
    if ended {
        // The whole answer: sent with its length, in one write.
        return Response::from_parts(parts, Body::from(data));
    }
    let held = (!data.is_empty()).then(|| Ok(Frame::data(Bytes::from(data))));
    let head = futures::stream::iter(held.into_iter().chain(after));
    let body = StreamBody::new(head.chain(BodyStream::new(body)));
    Response::from_parts(parts, Body::new(body))
}

fn is_event_stream(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/event-stream"))
}

/// Whether an SSE event carries a JSON-RPC message: the priming event (an id and a retry
/// interval) and keep-alive comments carry none, and are not worth a write of their own.
fn carries_message(event: &[u8]) -> bool {
    event.contains(&b'{')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_events_with_a_json_rpc_message_end_the_wait() {
        assert!(!carries_message(b"data: \nid: 0/12\nretry: 3000\n\n"));
        assert!(!carries_message(b": ping\n\n"));
        assert!(carries_message(
            b"data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\nid: 1/12\n\n"
        ));
    }
}
