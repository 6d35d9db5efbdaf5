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
use super::auth::{self, Listener, TokenCheck};
use crate::app::App;
use crate::calls::TransportKind;
use crate::config::{Config, process_env};
use crate::health::SessionSettings;
use crate::legacy_tasks::LegacyTasks;
use crate::legacy_tasks::adapter::Adapter;
use crate::service::{ExaiService, Session};
use crate::settings::{
    CLIENT_DIGEST_HEADER, CLIENT_ENV_HEADER, ClientEnv, ClientEnvError, differing_digests,
};
use crate::transport::{FrameError, FrameTransport};
use crate::users::Caller;

/// The daemon's token, the key of a TCP client's settings digests.
#[derive(Clone)]
pub struct DaemonToken(pub Arc<String>);

/// What a client says of its own settings: their values (the local socket) or, over TCP, only
/// which of them differ from the daemon's.
enum ClientSettings {
    Values(ClientEnv),
    Differing(Vec<String>),
}

pub async fn upgrade(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Extension((DaemonToken(token), check)): Extension<(DaemonToken, Arc<TokenCheck>)>,
    listener: Option<Extension<Listener>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let over_socket = listener.is_some_and(|Extension(l)| l == Listener::Socket);
    let client_settings = match client_env(&headers, over_socket && caller == Caller::Owner) {
        Some(env) => Some(ClientSettings::Values(env)),
        None => differing_over_tcp(&headers, &token)
            .await
            .map(ClientSettings::Differing),
    };
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
        .on_upgrade(move |socket| {
            serve(app, (caller, check), shim_version, client_settings, socket)
        })
}

/// Longest shim version kept.
const MAX_VERSION_LEN: usize = 64;

/// The variables a client over TCP sets differently from the daemon, from their digests: its
/// calls run on the daemon's settings, and status says so.
async fn differing_over_tcp(headers: &HeaderMap, token: &Arc<String>) -> Option<Vec<String>> {
    let header = headers
        .get(CLIENT_DIGEST_HEADER)?
        .to_str()
        .ok()?
        .to_string();
    let token = token.clone();
    let compared = crate::spawn::blocking(move || {
        differing_digests(&header, &token, |names| {
            Config::values_read(process_env, names).unwrap_or_default()
        })
    })
    .await;
    match compared {
        Ok(Ok(names)) => Some(names).filter(|names| !names.is_empty()),
        Ok(Err(error)) => {
            tracing::warn!(%error, "the client's settings digests were not read");
            None
        }
        Err(_) => None,
    }
}

/// The settings the shim's client sets in its environment, which its session's calls run with:
/// taken only from the home's owner over the local socket (the same user, as if it ran
/// `exai stdio --no-daemon` itself). A header that cannot be read is logged (never its value).
fn client_env(headers: &HeaderMap, trusted: bool) -> Option<ClientEnv> {
    let value = headers.get(CLIENT_ENV_HEADER)?;
    if !trusted {
        tracing::warn!(
            "a client's settings header arrived other than from the owner over the local socket: ignored"
        );
        return None;
    }
    match value
        .to_str()
        .map_err(|_| ClientEnvError::Malformed)
        .and_then(ClientEnv::from_header)
    {
        Ok(env) => Some(env),
        Err(error) => {
            tracing::warn!(%error, "the client's settings were not read; its session runs on the daemon's");
            None
        }
    }
}

/// Serves the connection as one session of `caller` (who its upgrade request was admitted as),
/// relayed by a shim of `shim_version` when one said so; its calls run with the client's own settings over the daemon's (`client_settings`' values), or
/// on the daemon's with a warning (what a client over TCP sets differently).
async fn serve(
    app: Arc<App>,
    (caller, check): (Caller, Arc<TokenCheck>),
    shim_version: Option<String>,
    client_settings: Option<ClientSettings>,
    socket: WebSocket,
) {
    let session = Session::new(TransportKind::Ws, Some(caller.clone()), &app);
    if let Some(version) = shim_version {
        session.set_shim_version(version);
    }
    let session_id = session.id.clone();
    tracing::info!(session = %session_id, "websocket session opened");
    let note = |variables: Vec<String>, applied: bool| {
        app.health.note_session_settings(
            &session_id,
            Some(SessionSettings {
                client: None,
                variables,
                applied,
            }),
        )
    };
    match client_settings {
        Some(ClientSettings::Values(env)) => {
            let settings = app.settings.for_session(Some(&env)).await;
            if !settings.differs.is_empty() {
                tracing::info!(session = %session_id, variables = %settings.differs.join(", "), "the session runs with its own settings: its client sets these variables differently from the daemon");
                note(settings.differs.clone(), true);
            }
            session.run_with_client_env(env);
        }
        Some(ClientSettings::Differing(names)) => {
            tracing::warn!(session = %session_id, variables = %names.join(", "), "the client sets these variables differently from the daemon, but it connects over TCP: its calls run on the daemon's settings");
            note(names, false);
        }
        None => {}
    }
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
        app.calls.clone(),
        app.config.max_message_bytes,
        Some(Arc::new(Adapter::new(app.tools.task_capable()))),
    );
    let service = ExaiService::new(app.clone(), session)
        .with_custom_requests(LegacyTasks::requests())
        .into_server();
    let ends = app.shutdown.child_token();
    if caller != Caller::Owner {
        crate::spawn::in_current_span(auth::end_when_revoked(caller, check, ends.clone()));
    }
    match service.serve_with_ct(transport, ends.clone()).await {
        Ok(running) => {
            let reason = running.waiting().await;
            tracing::info!(session = %session_id, ?reason, "websocket session closed");
        }
        Err(error) => {
            tracing::warn!(session = %session_id, %error, "websocket session ended before initialize")
        }
    }
    ends.cancel();
}
