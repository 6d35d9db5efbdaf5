//! The live page the daemon serves at `/`: one HTML file, one script and one stylesheet carried
//! in the binary (no build step, nothing inline, a strict Content-Security-Policy), its data
//! endpoints (api.rs), and the way in: the daemon's token, or a session cookie a one-time login
//! code bought (login.rs). A change (cancel) made with the cookie must come from the page itself
//! (its `Origin`); any request from a foreign `Origin` is refused.

mod api;
mod login;
mod stats;

use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::auth::{TokenCheck, require_token};
use crate::app::App;
use crate::users::Caller;
use login::Logins;

/// What every answer of the page carries: scripts, styles and connections from the daemon
/// only, no frames, no inline code.
const SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'none'";

const INDEX_HTML: &str = include_str!("assets/index.html");
const PAGE_JS: &str = include_str!("assets/page.js");
const PAGE_CSS: &str = include_str!("assets/page.css");

/// The page's state: who may come in.
#[derive(Clone)]
pub struct PageAccess {
    check: Arc<TokenCheck>,
    logins: Arc<Logins>,
}

impl PageAccess {
    pub fn new(check: Arc<TokenCheck>) -> Self {
        Self {
            check,
            logins: Arc::new(Logins::default()),
        }
    }
}

/// The page, its assets and its API (behind the token or the cookie), and `/login`.
pub fn routes(app: Arc<App>, access: PageAccess) -> Router<Arc<App>> {
    app.calls.feed_progress(app.shutdown.clone());
    let guarded = Router::new()
        .route("/", get(index))
        .route("/assets/page.js", get(script))
        .route("/assets/page.css", get(style))
        .route("/api/calls", get(api::calls))
        .route("/api/calls/{id}", get(api::call))
        .route("/api/calls/{id}/cancel", post(api::cancel))
        .route("/api/stats", get(api::stats))
        .route("/api/events", get(api::events))
        .route_layer(middleware::from_fn_with_state(access.clone(), page_access));
    let by_token = Router::new()
        .route("/api/login-code", post(login_code))
        .route_layer(middleware::from_fn_with_state(
            access.check.clone(),
            require_token,
        ));
    Router::new()
        .route("/login", get(log_in))
        .merge(guarded)
        .merge(by_token)
        .layer(Extension(access.logins))
        .layer(middleware::from_fn(secure_headers))
}

/// The same-origin rule of the page: an `Origin`, when sent, names this very host.
fn origin_is_ours(headers: &HeaderMap) -> Option<bool> {
    let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok())?;
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))?;
    Some(origin_host == host)
}

fn refused(status: StatusCode, why: &str) -> Response {
    tracing::warn!(%why, "page request refused");
    (status, format!("{why}\n")).into_response()
}

/// Admits the page's requests with the session cookie (a change only from the page's own
/// origin) or with the daemon's token as `/mcp` takes it; refuses any other origin.
async fn page_access(
    State(access): State<PageAccess>,
    mut request: Request,
    next: Next,
) -> Response {
    // The event feed checks its reader's token again while it stays open.
    request.extensions_mut().insert(access.check.clone());
    let same_origin = origin_is_ours(request.headers());
    if same_origin == Some(false)
        || request.headers().contains_key(header::ORIGIN) && same_origin.is_none()
    {
        return refused(
            StatusCode::FORBIDDEN,
            "this page's data is for the page itself: a request from another origin is refused",
        );
    }
    let Some(caller) = access.logins.caller(request.headers()) else {
        return require_token(State(access.check), request, next).await;
    };
    // A login outlives no revocation: the user's token was what it was made with.
    if !access.check.personal.still_active(&caller).await {
        return refused(
            StatusCode::UNAUTHORIZED,
            "the personal token this page was opened with was revoked: its session has ended",
        );
    }
    let changes = !matches!(*request.method(), Method::GET | Method::HEAD);
    if changes && same_origin != Some(true) {
        return refused(
            StatusCode::FORBIDDEN,
            "a change made with the page's cookie must come from the page (its Origin header)",
        );
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// Every answer of the page: the policy, no sniffing, no referrer (a login code stays out of
/// other sites' logs), nothing cached.
async fn secure_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", PAGE_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", PAGE_CSS)
}

/// `POST /api/login-code` (with the token): a one-time code for `/login`, as `exai open` asks.
async fn login_code(
    Extension(logins): Extension<Arc<Logins>>,
    Extension(caller): Extension<Caller>,
) -> Response {
    match logins.new_code(caller) {
        Ok(code) => Json(json!({
            "path": format!("/login?code={code}"),
            "expires_in_s": login::CODE_LIFETIME.as_secs(),
        }))
        .into_response(),
        Err(error) => refused(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string()),
    }
}

/// `/login`'s query.
#[derive(Debug, Deserialize)]
struct LoginQuery {
    code: Option<String>,
}

/// `GET /login?code=…`: the code (once, within its minute) becomes a session cookie, and the
/// browser goes on to `/`, so the code does not stay in the address bar.
async fn log_in(
    Extension(logins): Extension<Arc<Logins>>,
    Query(query): Query<LoginQuery>,
) -> Response {
    let code = query.code.unwrap_or_default();
    match logins.redeem(&code) {
        Ok(Some(session)) => {
            tracing::info!("live page: a login code was used");
            (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, "/".to_string()),
                    (header::SET_COOKIE, login::session_cookie_header(&session)),
                ],
            )
                .into_response()
        }
        Ok(None) => refused(
            StatusCode::UNAUTHORIZED,
            "this login link was used already or has expired (a link works once, within a \
             minute): run `exai open` again",
        ),
        Err(error) => refused(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string()),
    }
}
