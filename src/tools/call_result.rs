//! `call_result`: the answer of a call that outlived its client's patience (or its client).

use std::time::{Duration, Instant};

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool};
use schemars::JsonSchema;
use serde::Deserialize;

use super::{ExaiTool, ToolContext, ToolFuture, definition, local_read_only, parse_arguments};
use crate::calls::view::{self, CallView};
use crate::calls::{FailureKind, ToolFailure};
use crate::store::Delivery;

pub struct CallResult;

/// How long `call_result` waits when the caller does not say.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// Arguments of `call_result`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CallResultArguments {
    /// The call id from a background answer (or from `call_list`); its first or last 6+ characters will do when unique.
    call_id: String,
    /// Seconds to wait for the call to finish (default 30; capped below the client's patience).
    #[serde(default)]
    wait_s: Option<f64>,
}

/// Shortest part of an id that is looked up.
const MIN_FRAGMENT: usize = 6;

/// A call id as given: a whole UUID, or the unique start or end of one (at least six
/// characters) among the calls running and recorded; otherwise a clear error.
pub(super) async fn resolve_call_id(
    ctx: &ToolContext,
    tool: &str,
    given: &str,
) -> Result<String, ToolFailure> {
    let given = given.trim().to_ascii_lowercase();
    if let Ok(id) = uuid::Uuid::parse_str(&given) {
        return Ok(id.to_string());
    }
    let bad = |why: String| {
        ToolFailure::new(
            FailureKind::BadArguments,
            format!("invalid arguments for {tool}: {why}"),
        )
    };
    if given.len() < MIN_FRAGMENT || !given.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(bad(format!(
            "{given:?} is not a call id (a UUID such as 01a2132d-05c7-76ba-ab75-235da0d3ad5f, \
             or its first or last {MIN_FRAGMENT}+ characters)"
        )));
    }
    let caller = &ctx.call.origin.caller;
    let mut found: Vec<String> = ctx
        .calls
        .in_flight_for(caller)
        .iter()
        .map(|c| c.id.clone())
        .filter(|id| id.starts_with(&given) || id.ends_with(&given))
        .collect();
    let fragment = given.clone();
    let only = caller.sees_only().map(str::to_string);
    let stored = ctx
        .calls
        .store()
        .read(move |store| store.find_by_fragment(&fragment, only.as_deref()))
        .await
        .map_err(|e| ToolFailure::new(FailureKind::Store, e.to_string()))?;
    found.extend(stored);
    found.sort();
    found.dedup();
    match found.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(unknown_call(&given, ctx.config.result_ttl)),
        many => Err(bad(format!(
            "{given:?} matches several calls ({}); give more of the id",
            many.join(", ")
        ))),
    }
}

pub(super) fn unknown_call(id: &str, ttl: Duration) -> ToolFailure {
    ToolFailure::new(
        FailureKind::UnknownCall,
        format!(
            "no call {id}: it never existed, or it ended more than {} h ago and its result has expired",
            ttl.as_secs() / 3600
        ),
    )
}

fn still_running(id: &str, tool: &str, elapsed: Duration, progress: &str) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(format!(
        "call {id} ({tool}) is still running ({} s so far: {progress}). Ask again with \
         call_result(call_id=\"{id}\", wait_s=30).",
        elapsed.as_secs()
    ))]);
    result.structured_content = Some(view::still_running(id, elapsed, progress));
    result
}

impl ExaiTool for CallResult {
    fn definition(&self) -> Tool {
        definition::<CallResultArguments>(
            "call_result",
            "Get the answer of a call that was still running when exai answered with a call id: \
             waits up to wait_s, then returns the answer, or the call's state and progress.",
            local_read_only(),
        )
    }

    fn run(&self, arguments: JsonObject, ctx: ToolContext) -> ToolFuture {
        Box::pin(async move {
            let args: CallResultArguments = parse_arguments("call_result", arguments)?;
            let id = resolve_call_id(&ctx, "call_result", &args.call_id).await?;
            let wanted = match args.wait_s {
                None => DEFAULT_WAIT,
                Some(s) if s.is_finite() && s >= 0.0 => Duration::from_secs_f64(s.min(3600.0)),
                Some(s) => {
                    return Err(ToolFailure::new(
                        FailureKind::BadArguments,
                        format!(
                            "invalid arguments for call_result: wait_s must be 0 or more seconds, not {s}"
                        ),
                    ));
                }
            };
            // Never wait past this call's own answer time (less a second to answer in) or deadline.
            let limit = ctx
                .answer_by
                .map(|by| {
                    by - Duration::from_secs(1)
                        .min(by.saturating_duration_since(ctx.call.received_at))
                })
                .unwrap_or(ctx.call.deadline)
                .min(ctx.call.deadline);
            let wait = wanted.min(limit.saturating_duration_since(Instant::now()));
            let view = ctx
                .calls
                .lookup(&id, &ctx.call.origin.caller)
                .await
                .map_err(|e| ToolFailure::new(FailureKind::Store, e.to_string()))?;
            if let CallView::Running(_) | CallView::HeldElsewhere(_) = view {
                ctx.call
                    .progress
                    .set_stage(format!("waiting for call {id}"));
            }
            let until = tokio::time::Instant::now() + wait;
            match view.wait_until(&ctx.calls, until).await {
                CallView::Running(live) => Ok(still_running(
                    &id,
                    &live.tool,
                    live.elapsed(),
                    &live.progress.snapshot().message(),
                )),
                CallView::Ended(ended) => ctx
                    .calls
                    .hand_over(ended, Delivery::DeliveredByCallResult)
                    .await
                    .ok_or_else(|| unknown_call(&id, ctx.config.result_ttl)),
                CallView::HeldElsewhere(row) => Ok(still_running(
                    &id,
                    &row.tool,
                    Duration::from_millis(
                        (crate::store::now_ms() - row.received_at_ms).max(0) as u64
                    ),
                    &format!(
                        "on {}: {}",
                        view::runner(&row),
                        row.last_progress.as_deref().unwrap_or("started")
                    ),
                )),
                CallView::Interrupted(row) => Err(ToolFailure::new(
                    FailureKind::Interrupted,
                    view::interrupted_without_result("call", &row),
                )),
                CallView::Expired => Err(unknown_call(&id, ctx.config.result_ttl)),
            }
        })
    }
}
