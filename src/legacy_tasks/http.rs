//! 2025-11-25 tasks over Streamable HTTP (`/mcp`): the same wire adapter as the framed
//! transports, run on each POST body and on the SSE answers it must complete.
//!
//! rmcp's `StreamableHttpService` reads the body itself, so the adapter sits in front of it
//! as one of the route's steps (`daemon/http.rs`), one adapter per `Mcp-Session-Id` of a
//! session that negotiated 2025-11-25. Requests of other sessions pass untouched and unread.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::Value;

use super::adapter::Adapter;

const SESSION_HEADER: &str = "mcp-session-id";
/// Sessions remembered at most; beyond it an arbitrary one is forgotten (its tasks stay
/// reachable, only the 2025-11-25 shapes are lost for it). rmcp ends idle sessions without
/// telling us, so this bounds what such sessions leave behind.
const MAX_SESSIONS: usize = 4096;

/// The adapters of the HTTP sessions that negotiated 2025-11-25.
pub struct LegacySessions {
    by_session: Mutex<HashMap<String, Arc<Adapter>>>,
    task_tools: Vec<String>,
    /// Largest request body read (the MCP message limit).
    limit: usize,
}

impl LegacySessions {
    pub fn new(task_tools: Vec<String>, limit: usize) -> Arc<Self> {
        Arc::new(Self {
            by_session: Mutex::new(HashMap::new()),
            task_tools,
            limit,
        })
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Adapter>>> {
        self.by_session.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, session: String, adapter: Arc<Adapter>) {
        let mut sessions = self.sessions();
        if sessions.len() >= MAX_SESSIONS
            && let Some(any) = sessions.keys().next().cloned()
        {
            sessions.remove(&any);
        }
        sessions.insert(session, adapter);
    }
}

/// The `Mcp-Session-Id` a request or response carries.
pub fn session_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The `/mcp` step that adapts the POSTs of 2025-11-25 sessions and of `initialize`; `next`
/// is the rest of the route.
pub async fn adapt(
    legacy: &LegacySessions,
    request: Request,
    next: impl AsyncFnOnce(Request) -> Response,
) -> Response {
    let session = session_of(request.headers());
    if request.method() == Method::DELETE {
        if let Some(session) = &session {
            legacy.sessions().remove(session);
        }
        return next(request).await;
    }
    if request.method() != Method::POST {
        return next(request).await;
    }
    let adapter = match &session {
        // A session that is not 2025-11-25 is not read here at all.
        Some(id) => {
            let known = legacy.sessions().get(id).cloned();
            match known {
                Some(adapter) if adapter.watches_inbound() => adapter,
                _ => return next(request).await,
            }
        }
        // No session yet: this may be the `initialize` that starts one.
        None => Arc::new(Adapter::new(legacy.task_tools.clone())),
    };
    let (mut parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, legacy.limit).await {
        Ok(bytes) => bytes,
        Err(error) => {
            let error = error.into_inner();
            return if error.is::<http_body_util::LengthLimitError>() {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("message larger than the {}-byte limit\n", legacy.limit),
                )
            } else {
                // The client stopped sending (the server loop's bound on reading a body).
                (
                    StatusCode::BAD_REQUEST,
                    format!("the request's body could not be read: {error}\n"),
                )
            }
            .into_response();
        }
    };
    // Nothing to adapt (or not JSON: rmcp answers that itself): passed on as it came.
    let adapt = std::str::from_utf8(&bytes).is_ok_and(|text| adapter.may_adapt(text));
    let parsed = adapt
        .then(|| serde_json::from_slice::<Value>(&bytes).ok())
        .flatten();
    let Some(mut message) = parsed else {
        return next(Request::from_parts(parts, Body::from(bytes))).await;
    };
    adapter.inbound(&mut message);
    parts.headers.remove(header::CONTENT_LENGTH);
    let response = next(Request::from_parts(parts, Body::from(message.to_string()))).await;
    if !adapter.watches_outbound() {
        return response;
    }
    if session.is_none()
        && let Some(created) = session_of(response.headers())
    {
        // The answer completes the negotiation as it streams out; the client sends
        // nothing in this session before it has read that answer.
        legacy.remember(created, adapter.clone());
    }
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (parts, body) = response.into_parts();
    let body = if json {
        match axum::body::to_bytes(body, usize::MAX).await {
            Ok(bytes) => Body::from(rewrite_json(&bytes, &adapter)),
            Err(error) => {
                tracing::warn!(%error, "could not read an answer to adapt");
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
        }
    } else {
        rewrite_sse(body, adapter)
    };
    let mut response = Response::from_parts(parts, body);
    response.headers_mut().remove(header::CONTENT_LENGTH);
    response
}

fn rewrite_json(bytes: &Bytes, adapter: &Adapter) -> Bytes {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(mut message) => {
            adapter.outbound(&mut message);
            Bytes::from(message.to_string())
        }
        Err(_) => bytes.clone(),
    }
}

/// One SSE line, with its `data:` JSON adapted (rmcp writes each message on one line).
fn rewrite_line(line: &[u8], adapter: &Adapter) -> Vec<u8> {
    let Some(data) = line.strip_prefix(b"data:") else {
        return line.to_vec();
    };
    let data = data.strip_prefix(b" ").unwrap_or(data);
    let data = data.strip_suffix(b"\n").unwrap_or(data);
    let data = data.strip_suffix(b"\r").unwrap_or(data);
    match serde_json::from_slice::<Value>(data) {
        Ok(mut message) if message.is_object() => {
            adapter.outbound(&mut message);
            format!("data: {message}\n").into_bytes()
        }
        _ => line.to_vec(),
    }
}

/// Adapts an SSE body line by line as it streams (a call's stream may stay open long).
fn rewrite_sse(body: Body, adapter: Arc<Adapter>) -> Body {
    let state = (body.into_data_stream(), Vec::<u8>::new(), adapter, false);
    let stream = futures::stream::unfold(
        state,
        |(mut stream, mut pending, adapter, ended)| async move {
            if ended {
                return None;
            }
            match stream.next().await {
                Some(Ok(bytes)) => {
                    pending.extend_from_slice(&bytes);
                    let mut out = Vec::with_capacity(pending.len());
                    while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=end).collect();
                        out.extend(rewrite_line(&line, &adapter));
                    }
                    Some((Ok(Bytes::from(out)), (stream, pending, adapter, false)))
                }
                Some(Err(error)) => Some((Err(error), (stream, pending, adapter, true))),
                None if pending.is_empty() => None,
                None => {
                    let rest = Bytes::from(std::mem::take(&mut pending));
                    Some((Ok(rest), (stream, pending, adapter, true)))
                }
            }
        },
    );
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_data_lines_are_adapted_and_the_rest_kept() {
        let adapter = Adapter::new(Vec::new());
        let mut init = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}});
        adapter.inbound(&mut init);
        assert_eq!(rewrite_line(b"id: 0\n", &adapter), b"id: 0\n");
        assert_eq!(rewrite_line(b"data: \n", &adapter), b"data: \n");
        let answer = br#"data: {"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{}}}
"#;
        let line = String::from_utf8(rewrite_line(answer, &adapter)).unwrap();
        assert!(
            line.starts_with("data: {") && line.ends_with("}\n"),
            "{line}"
        );
        assert!(line.contains(r#""tasks":{"#), "{line}");
        assert!(adapter.is_legacy());
    }
}
