//! `GET /ws`: one WebSocket connection is one MCP session, one message per text frame.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use rmcp::ServiceExt;

use super::SHIM_VERSION_HEADER;
use crate::app::App;
use crate::calls::TransportKind;
use crate::legacy_tasks::LegacyTasks;
use crate::legacy_tasks::adapter::Adapter;
use crate::service::{ExaiService, Session};
use crate::transport::{FrameError, FrameTransport};
use crate::users::Caller;

pub async fn upgrade(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // A little slack over the message limit for the frame header; the transport checks the exact limit.
    let limit = app.config.max_message_bytes + 1024;
    // A version is a short word: anything else a client sends there is not kept.
    let shim_version = headers
        .get(SHIM_VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= MAX_VERSION_LEN)
        .map(str::to_string);
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| serve(app, caller, shim_version, socket))
}

/// Longest shim version kept.
const MAX_VERSION_LEN: usize = 64;

/// Serves the connection as one session of `caller` (who its upgrade request was admitted as),
/// relayed by a shim of `shim_version` when one said so.
async fn serve(app: Arc<App>, caller: Caller, shim_version: Option<String>, socket: WebSocket) {
    let session = Session::new(TransportKind::Ws, Some(caller), &app);
    if let Some(version) = shim_version {
        session.set_shim_version(version);
    }
    let session_id = session.id.clone();
    tracing::info!(session = %session_id, "websocket session opened");
    let (sink, stream) = socket.split();
    let source = stream.filter_map(|message| async move {
        match message {
            Ok(Message::Text(text)) => Some(Ok(text.to_string())),
            Ok(Message::Binary(bytes)) => {
                Some(String::from_utf8(bytes.to_vec()).map_err(|_| FrameError::NotUtf8))
            }
            Ok(Message::Close(_)) => {
                Some(Err(FrameError::Io("client closed the connection".into())))
            }
            Ok(_) => None,
            Err(e) => Some(Err(FrameError::Io(e.to_string()))),
        }
    });
    let sink =
        sink.with(|text: String| async move { Ok::<_, axum::Error>(Message::Text(text.into())) });
    let transport = FrameTransport::spawn(
        Box::pin(source),
        Box::pin(sink),
        session.clone(),
        app.calls.store().clone(),
        app.config.max_message_bytes,
        Some(Arc::new(Adapter::new(app.tools.task_capable()))),
    );
    let service =
        ExaiService::new(app.clone(), session).with_custom_requests(LegacyTasks::requests());
    match service
        .serve_with_ct(transport, app.shutdown.child_token())
        .await
    {
        Ok(running) => {
            let reason = running.waiting().await;
            tracing::info!(session = %session_id, ?reason, "websocket session closed");
        }
        Err(error) => {
            tracing::warn!(session = %session_id, %error, "websocket session ended before initialize")
        }
    }
}
