//! The page's data: recent calls with filters, one call's record, the charts' figures and the
//! provider queues, the live feed of calls (server-sent events), and cancelling a call. Every
//! read goes through `Store::read` and shows only what the caller may see.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Json, Response};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::stats::{self, Window};
use crate::app::App;
use crate::calls::events::{CallEvent, LiveSummary};
use crate::calls::record::{log_lines, record_json, result_text};
use crate::calls::view::{CallView, CancelAsked};
use crate::daemon::auth::{TokenCheck, end_when_revoked};
use crate::store::{CallFilter, CallRow, CallState, StoreError, now_ms};
use crate::users::Caller;

/// Most calls one listing returns.
const MOST_LISTED: usize = 200;
/// Most calls the charts are drawn from (a busy day is sampled at its newest).
const MOST_CHARTED: usize = 50_000;
/// Fields of a record a listing leaves out (the record view has them).
const LEFT_OUT_OF_LISTINGS: [&str; 3] = ["arguments", "result", "reasoning"];
/// How long a cancel waits for the call to end before answering.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

fn store_failed(error: StoreError) -> Response {
    tracing::warn!(%error, "the page could not read the store");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": error.to_string()})),
    )
        .into_response()
}

fn not_found(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("no call with id {id:?}")})),
    )
        .into_response()
}

fn bad_request(what: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": what}))).into_response()
}

/// The filters of `/api/calls`.
#[derive(Debug, Deserialize)]
pub struct CallsQuery {
    outcome: Option<String>,
    tool: Option<String>,
    model: Option<String>,
    client: Option<String>,
    before: Option<String>,
    limit: Option<usize>,
}

/// An empty filter field filters nothing.
fn given(field: Option<String>) -> Option<String> {
    field.filter(|text| !text.trim().is_empty())
}

/// A record as a listing shows it: every field but the large ones, so a field the record gains
/// (cost) reaches the page without a change here.
fn listed(row: &CallRow) -> Value {
    let mut value = serde_json::to_value(row).unwrap_or(Value::Null);
    if let Some(fields) = value.as_object_mut() {
        for field in LEFT_OUT_OF_LISTINGS {
            fields.remove(field);
        }
    }
    value
}

/// `GET /api/calls`: recent calls, newest first, by outcome, tool, model and client.
pub async fn calls(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<CallsQuery>,
) -> Response {
    let state = match given(query.outcome) {
        None => None,
        Some(word) => match CallState::parse(&word) {
            Some(state) => Some(state),
            None => return bad_request(format!("unknown outcome {word:?}")),
        },
    };
    let filter = CallFilter {
        state,
        tool: given(query.tool),
        model: given(query.model),
        client: given(query.client),
        before_id: given(query.before),
        user: caller.sees_only().map(str::to_string),
        limit: query.limit.unwrap_or(50).clamp(1, MOST_LISTED),
        ..CallFilter::default()
    };
    match app.calls.store().read(move |r| r.list(&filter)).await {
        Ok(rows) => Json(json!({
            "now_ms": now_ms(),
            "calls": rows.iter().map(listed).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(error) => store_failed(error),
    }
}

/// `GET /api/calls/{id}`: one record as `exai calls show --json` has it (arguments redacted as
/// stored), with the answer's text, and, while it runs here, where it stands.
pub async fn call(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let wanted = id.clone();
    let row = match app.calls.store().read(move |r| r.get(&wanted)).await {
        Ok(row) => row.filter(|row| caller.may_see(row.user_name.as_deref())),
        Err(error) => return store_failed(error),
    };
    let Some(row) = row else {
        return not_found(&id);
    };
    let log_dir = app.config.log_dir();
    let log = crate::spawn::blocking(move || {
        let log = log_lines(&log_dir, &row.id);
        (row, log)
    })
    .await;
    let Ok((row, log)) = log else {
        return store_failed(StoreError::WriterGone);
    };
    let mut record = record_json(&row, &log);
    record["answer"] = row.result.as_deref().map(result_text).into();
    record["live"] = app
        .calls
        .get(&row.id)
        .map(|live| json!({"call": LiveSummary::of(&live), "stages": live.progress.stages()}))
        .into();
    Json(record).into_response()
}

/// The figures' window.
#[derive(Debug, Deserialize)]
pub struct StatsQuery {
    window: Option<String>,
}

/// `GET /api/stats?window=hour|day`: per-model latency, errors and tokens, the window in
/// buckets, the calls in flight, and each provider's queue.
pub async fn stats(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<StatsQuery>,
) -> Response {
    let Some(window) = Window::parse(query.window.as_deref()) else {
        return bad_request("window is hour or day".into());
    };
    let now = now_ms();
    let user = caller.sees_only().map(str::to_string);
    let since = now - window.length_ms();
    let read = app
        .calls
        .store()
        .read(move |r| {
            let calls = r.figures_since(since, user.as_deref(), MOST_CHARTED)?;
            // Today's spend (UTC): a user's own, the owner's and admins' everyone's.
            let (spent_today, _) =
                crate::store::spend_totals(&r.spend_today_seen_by(user.as_deref())?);
            Ok::<_, crate::store::StoreError>((calls, spent_today))
        })
        .await;
    let (calls, spent_today) = match read {
        Ok(read) => read,
        Err(error) => return store_failed(error),
    };
    let providers = app.settings().providers.clone();
    let queues: Vec<Value> = providers
        .usable()
        .iter()
        .map(|endpoint| json!({"provider": endpoint.name(), "queue": endpoint.queue()}))
        .collect();
    Json(json!({
        "now_ms": now,
        "figures": stats::figures(&calls, window, now),
        "in_flight": app.calls.in_flight_for(&caller).len(),
        "queues": queues,
        "spent_today_usd_micros": spent_today,
    }))
    .into_response()
}

/// What a listener is sent first, and again after it fell behind: the calls in flight now.
fn snapshot(app: &App, caller: &Caller) -> Event {
    let calls: Vec<LiveSummary> = app
        .calls
        .in_flight_for(caller)
        .iter()
        .map(|call| LiveSummary::of(call))
        .collect();
    Event::default()
        .event("snapshot")
        .json_data(json!({"now_ms": now_ms(), "in_flight": calls}))
        .unwrap_or_default()
}

fn event_of(event: &CallEvent) -> Event {
    let name = match event {
        CallEvent::Started(_) => "started",
        CallEvent::Progress(_) => "progress",
        CallEvent::Ended { .. } => "ended",
    };
    Event::default()
        .event(name)
        .json_data(event)
        .unwrap_or_default()
}

/// Events that come close together go out together: a page needs a few updates a second, and
/// every call on a busy daemon would otherwise cost each listener a write (and the daemon a
/// wake-up of its feed) when it starts and again when it ends.
const FEED_WINDOW: Duration = Duration::from_millis(100);

/// `GET /api/events`: the calls in flight, then each start, move and end as it happens (those
/// within [`FEED_WINDOW`] of the first in one write, read without a wake-up each); a listener
/// that falls behind gets a fresh snapshot instead of what it missed.
pub async fn events(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Extension(check): Extension<Arc<TokenCheck>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let heard = app.calls.subscribe();
    let first = snapshot(&app, &caller);
    // Ends with exai, when its reader's personal token is revoked, or when the reader goes
    // (the guard, kept with the feed, stops the revocation check with it).
    let stop = app.shutdown.child_token();
    let gone = stop.clone().drop_guard();
    if caller != Caller::Owner {
        crate::spawn::in_current_span(end_when_revoked(caller.clone(), check, stop.clone()));
    }
    let feed = futures::stream::unfold(
        (Some(first), heard, app, caller, stop, gone),
        |(pending, mut heard, app, caller, stop, gone)| async move {
            if let Some(event) = pending {
                return Some((vec![event], (None, heard, app, caller, stop, gone)));
            }
            let mut batch = Vec::new();
            // Woken by the first event the listener may see ...
            while batch.is_empty() {
                let got = tokio::select! {
                    got = heard.recv() => got,
                    _ = stop.cancelled() => return None,
                };
                match take(got, &mut batch, &app, &caller) {
                    Heard::More => {}
                    Heard::Closed if batch.is_empty() => return None,
                    Heard::Closed => break,
                }
            }
            // ... then not again until the window has passed: the rest is read in one go.
            tokio::select! {
                _ = tokio::time::sleep(FEED_WINDOW) => {}
                _ = stop.cancelled() => return None,
            }
            loop {
                let got = match heard.try_recv() {
                    Ok(event) => Ok(event),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Lagged(missed)) => Err(RecvError::Lagged(missed)),
                    Err(TryRecvError::Closed) => Err(RecvError::Closed),
                };
                if let Heard::Closed = take(got, &mut batch, &app, &caller) {
                    break;
                }
            }
            Some((batch, (None, heard, app, caller, stop, gone)))
        },
    )
    .flat_map(|batch| futures::stream::iter(batch.into_iter().map(Ok)));
    Sse::new(feed).keep_alive(KeepAlive::default())
}

/// Whether the feed may go on reading after an event.
enum Heard {
    More,
    Closed,
}

/// Adds what `got` brings to `batch`: the event if `caller` may see it, a fresh snapshot in
/// place of everything when the listener fell behind.
fn take(
    got: Result<CallEvent, RecvError>,
    batch: &mut Vec<Event>,
    app: &App,
    caller: &Caller,
) -> Heard {
    match got {
        Ok(event) => {
            if caller.may_see(event.user()) {
                batch.push(event_of(&event));
            }
            Heard::More
        }
        Err(RecvError::Lagged(_)) => {
            batch.clear();
            batch.push(snapshot(app, caller));
            Heard::More
        }
        Err(RecvError::Closed) => Heard::Closed,
    }
}

/// `POST /api/calls/{id}/cancel`: the cancel `call_cancel` sends, waited on a few seconds.
pub async fn cancel(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let view = match app.calls.lookup(&id, &caller).await {
        Ok(CallView::Expired) => return not_found(&id),
        Ok(view) => view,
        Err(error) => return store_failed(error),
    };
    let asked = match app.calls.cancel(view, "from the live page".into()).await {
        Ok(asked) => asked,
        Err(error) => return store_failed(error),
    };
    tracing::info!(call_id = %id, "cancel asked from the live page");
    match asked {
        CancelAsked::Told { view, replica } => {
            let until = tokio::time::Instant::now() + CANCEL_WAIT;
            let now = view.wait_until(&app.calls, until).await;
            Json(json!({"id": id, "state": now.state(), "replica": replica})).into_response()
        }
        CancelAsked::NotRunning(view) => (
            StatusCode::CONFLICT,
            Json(json!({"id": id, "state": view.state(), "error": "the call is not running"})),
        )
            .into_response(),
    }
}
