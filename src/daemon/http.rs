//! The daemon's routes: `/healthz`, `/metrics` (Prometheus), `/ws` (WebSocket MCP), `/mcp`
//! (Streamable HTTP MCP, behind the 2025-11-25 tasks adapter of legacy_tasks/http.rs), `/reload`,
//! and the live page (page/).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{any, get, post};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;

use super::auth::{PersonalTokens, TokenCheck, host_and_origin_allowed, require_token};
use super::session_owners::{self, SessionOwners};
use super::{held_head, page, ws};
use crate::app::App;
use crate::calls::TransportKind;
use crate::legacy_tasks::LegacyTasks;
use crate::legacy_tasks::http::{self as legacy_http, LegacySessions};
use crate::service::{ExaiService, Session};

/// Builds the router.
pub fn router(app: Arc<App>, token: Arc<String>, allow_remote: bool) -> Router {
    let check = Arc::new(TokenCheck {
        token: token.as_ref().clone(),
        token_path: app.config.token_path().display().to_string(),
        challenges: Default::default(),
        personal: PersonalTokens::new(app.calls.store().clone()),
        personal_only_over_tcp: allow_remote,
    });
    // A revoked member's calls stop, however they came in.
    crate::spawn::in_current_span(super::auth::cancel_calls_of_revoked_users(
        app.calls.clone(),
        check.clone(),
        app.shutdown.child_token(),
    ));
    // 2025-11-25 task clients over HTTP get the same adapter as over /ws and stdio.
    let legacy = LegacySessions::new(app.tools.task_capable(), app.config.max_message_bytes);
    // A session answers only the token that opened it (rmcp itself knows no tokens).
    let sessions = Arc::new(mcp_sessions(&app));
    let steps = Arc::new(McpSteps {
        owners: SessionOwners::new(sessions.clone()),
        legacy,
        rmcp: mcp_service(app.clone(), sessions),
    });
    // rmcp reads no path: `/mcp/` and below are the same endpoint, as a nested service was.
    let mcp = Router::new()
        .route("/mcp", any(mcp_route))
        .route("/mcp/", any(mcp_route))
        .route("/mcp/{*rest}", any(mcp_route))
        .with_state(steps);
    // `/metrics` takes the token like the rest, unless EXAI_METRICS_PUBLIC opened it for a local
    // Prometheus (the daemon refuses that setting unless it listens on loopback only).
    let metrics_route = Router::new().route("/metrics", get(metrics));
    let (protected_metrics, public_metrics) = if app.config.metrics_public {
        (Router::new(), metrics_route)
    } else {
        (metrics_route, Router::new())
    };
    let protected = Router::new()
        .route(
            "/ws",
            get(ws::upgrade).layer(axum::Extension((
                ws::DaemonToken(token.clone()),
                check.clone(),
            ))),
        )
        .route("/reload", post(super::reload::route))
        .merge(mcp)
        .merge(protected_metrics)
        .route_layer(middleware::from_fn_with_state(check.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(public_metrics)
        .merge(protected)
        .merge(page::routes(app.clone(), page::PageAccess::new(check)))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            guard_host(req, next, allow_remote)
        }))
        .with_state(app)
}

/// What the `/mcp` route keeps: its own steps' state and rmcp's service behind them.
struct McpSteps {
    owners: Arc<SessionOwners>,
    legacy: Arc<LegacySessions>,
    /// Shared, not cloned per request as a tower service is (its clone copies its settings and
    /// its shutdown token, whose clone and drop take a lock).
    rmcp: StreamableHttpService<ExaiService, LocalSessionManager>,
}

/// The `/mcp` route: its own steps, outermost first, then rmcp (a layer apiece cloned the
/// service behind it and boxed a future for every request): a session answers only the caller
/// who opened it, a quick answer leaves with its head, and 2025-11-25 task clients are adapted.
async fn mcp_route(State(steps): State<Arc<McpSteps>>, request: Request) -> Response {
    // On the heap once, here: the steps and rmcp's handling make a future of kilobytes, which
    // each of the router's layers above would otherwise copy as it boxes its own.
    Box::pin(async move {
        session_owners::bind(&steps.owners, request, async |request| {
            held_head::hold_head(request, async |request| {
                legacy_http::adapt(&steps.legacy, request, async |request| {
                    steps.rmcp.handle(request).await.into_response()
                })
                .await
            })
            .await
        })
        .await
    })
    .await
}

async fn guard_host(request: Request, next: Next, allow_remote: bool) -> Response {
    match host_and_origin_allowed(request.headers(), allow_remote) {
        Ok(()) => next.run(request).await,
        Err(why) => {
            tracing::warn!(%why, "request refused");
            (StatusCode::FORBIDDEN, format!("{why}\n")).into_response()
        }
    }
}

fn mcp_sessions(app: &App) -> LocalSessionManager {
    let mut sessions = LocalSessionManager::default();
    // rmcp closes a session after `keep_alive` without traffic; a long silent call
    // would lose its answer, so keep sessions at least as long as any call may run.
    let longest_call = app
        .config
        .tool_timeouts
        .values()
        .copied()
        .chain([app.config.call_timeout])
        .max()
        .unwrap_or(Duration::from_secs(600));
    sessions.session_config.keep_alive = Some(longest_call + Duration::from_secs(300));
    sessions
}

fn mcp_service(
    app: Arc<App>,
    sessions: Arc<LocalSessionManager>,
) -> StreamableHttpService<ExaiService, LocalSessionManager> {
    // Host and Origin are checked by `guard_host` for every route, this one included.
    let config = StreamableHttpServerConfig::default()
        .with_cancellation_token(app.shutdown.child_token())
        .with_max_request_body_bytes(app.config.max_message_bytes)
        .disable_allowed_hosts();
    StreamableHttpService::new(
        move || {
            Ok(
                ExaiService::new(app.clone(), Session::new(TransportKind::Http, None, &app))
                    .with_custom_requests(LegacyTasks::requests()),
            )
        },
        sessions,
        config,
    )
}

async fn healthz(
    State(app): State<Arc<App>>,
    listener: Option<axum::Extension<super::auth::Listener>>,
) -> Json<serde_json::Value> {
    // `/healthz` takes no token: which sessions run on their own settings, the variables they set
    // and a reload's error are said only over the home's own socket (`exai status`); over TCP,
    // only whether there is something to look at.
    let settings = app.health.settings_report();
    let settings = match listener {
        Some(axum::Extension(super::auth::Listener::Socket)) => settings,
        _ => json!({
            "generation": settings["generation"],
            "problem": !settings["problem"].is_null(),
            "needs_restart": settings["needs_restart"].as_array().map_or(0, Vec::len),
            "sessions_with_own_settings": settings["sessions_with_own_settings"].as_array().map_or(0, Vec::len),
        }),
    };
    let store = app.calls.store();
    Json(json!({
        "status": "ok",
        "version": crate::VERSION,
        "pid": app.health.pid,
        // Which replica answered, when several share a store (the id its calls are recorded with).
        "replica": app.replica.id(),
        "listen": app.health.listen,
        "uptime_s": app.health.uptime_s(),
        "sessions": app.health.sessions(),
        "calls_in_flight": app.calls.in_flight_count(),
        "store": {
            "path": store.location().to_string(),
            "queue": store.queue_depth(),
            "records_waiting": app.calls.records_waiting(),
            "threads_waiting": store.threads_waiting(),
            "problems": app.calls.store_problems(),
        },
        "settings": settings,
    }))
}

/// The process's metrics in the Prometheus text format, the gauges read now.
async fn metrics(
    State(app): State<Arc<App>>,
    caller: Option<axum::Extension<crate::users::Caller>>,
) -> Response {
    // The metrics are the whole daemon's (every user's calls and spend): a member sees their
    // own through `status` and the page.
    if let Some(axum::Extension(crate::users::Caller::User { admin: false, name })) = caller {
        tracing::warn!(user = %name, "/metrics refused to a member's token");
        return (
            StatusCode::FORBIDDEN,
            "the metrics cover everyone's calls: they take the owner's or an admin's token\n",
        )
            .into_response();
    }
    let now = crate::metrics::Now {
        calls_in_flight: app.calls.in_flight_count(),
        store_queue: app.calls.store().queue_depth(),
        store_records_waiting: app.calls.records_waiting(),
        store_threads_waiting: app.calls.store().threads_waiting(),
        providers: app
            .settings
            .current()
            .providers
            .usable()
            .iter()
            .map(|endpoint| {
                let queue = endpoint.queue();
                (
                    crate::metrics::name(endpoint.name()),
                    queue.waiting,
                    queue.in_flight,
                )
            })
            .collect(),
    };
    match crate::metrics::render(now) {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                crate::metrics::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot render the metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot render the metrics\n",
            )
                .into_response()
        }
    }
}
