//! `status`: daemon health, calls in flight and the latest failures.

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool};
use serde_json::json;

use super::{
    ExaiTool, NoArguments, ToolContext, ToolFuture, definition, local_read_only, parse_arguments,
};
use crate::providers::price::{usd, usd_json};
use crate::store::{CallFilter, spend_totals};

pub struct Status;

/// How many recent failures the answer lists.
const RECENT_FAILURES: usize = 5;

impl ExaiTool for Status {
    fn definition(&self) -> Tool {
        definition::<NoArguments>(
            "status",
            "exai health: uptime, calls in flight (elapsed time, latest progress) and the latest failures.",
            local_read_only(),
        )
    }

    fn run(&self, arguments: JsonObject, ctx: ToolContext) -> ToolFuture {
        Box::pin(async move {
            parse_arguments::<NoArguments>("status", arguments)?;
            let in_flight: Vec<_> = ctx
                .calls
                .in_flight_for(&ctx.call.origin.caller)
                .into_iter()
                .filter(|c| c.id != ctx.call.id)
                .map(|c| {
                    let snapshot = c.progress.snapshot();
                    json!({
                        "call_id": c.id,
                        "tool": c.tool,
                        "elapsed_s": c.elapsed().as_secs(),
                        "model": snapshot.model,
                        "progress": snapshot.message(),
                    })
                })
                .collect();
            // A store that cannot be read is a problem to report, not a reason to fail status.
            let mut store_problems = ctx.calls.store_problems();
            let only = ctx.call.origin.caller.sees_only().map(str::to_string);
            let (failures, spend) = ctx
                .calls
                .store()
                .read(move |store| {
                    // A user sees what their own calls spent; the owner and admins everyone's.
                    let spend = store.spend_today_seen_by(only.as_deref())?;
                    let failures = store.list(&CallFilter {
                        failed_only: true,
                        limit: RECENT_FAILURES,
                        user: only,
                        ..Default::default()
                    })?;
                    Ok((failures, Some(spend)))
                })
                .await
                .unwrap_or_else(|e| {
                    store_problems.push(format!("the call store cannot be read: {e}"));
                    (Vec::new(), None)
                });
            let totals = spend.as_deref().map(spend_totals);
            let spent_today = totals.map(|(micros, _)| micros);
            let unpriced_today = totals.map_or(0, |(_, unpriced)| unpriced);
            let failures: Vec<_> = failures
                .into_iter()
                .map(|r| {
                    json!({
                        "call_id": r.id,
                        "tool": r.tool,
                        "state": r.state,
                        "error": r.error_message,
                    })
                })
                .collect();
            let mut text = format!(
                "exai {} · {} · pid {} · up {} s · {} session(s) · {} other call(s) in flight · store queue {}",
                crate::VERSION,
                ctx.health.mode,
                ctx.health.pid,
                ctx.health.uptime_s(),
                ctx.health.sessions(),
                in_flight.len(),
                ctx.calls.store().queue_depth(),
            );
            // The client's shim says its version when it connects: a daemon left running
            // across an upgrade is named here, with what to do.
            let version_skew = ctx.call.origin.shim_version.as_deref().and_then(|shim| {
                crate::daemon::control::version_skew(shim, crate::VERSION)
                    .map(|skew| format!("{skew}: {}", crate::daemon::control::RESTART_ADVICE))
            });
            if let Some(skew) = &version_skew {
                text.push_str(&format!("\n  version: {skew}"));
            }
            if let Some(micros) = spent_today {
                text.push_str(&format!("\n  spent today (UTC): {}", usd(Some(micros))));
                if unpriced_today > 0 {
                    text.push_str(&format!(
                        " and {unpriced_today} call(s) of unknown cost (models without a price)"
                    ));
                }
            }
            for problem in &store_problems {
                text.push_str(&format!("\n  store: {problem}"));
            }
            // The daemon's settings are its owner's (and admins') business, not every user's.
            let settings = match ctx.call.origin.caller.sees_only() {
                None => ctx.health.settings_report(),
                Some(_) => json!({}),
            };
            for line in crate::health::settings_lines(&settings) {
                text.push_str(&format!("\n  {line}"));
            }
            for c in &in_flight {
                text.push_str(&format!("\n  running {} · {}", c["call_id"], c["progress"]));
            }
            for f in &failures {
                text.push_str(&format!(
                    "\n  {} {} {}: {}",
                    f["state"], f["tool"], f["call_id"], f["error"]
                ));
            }
            let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
            result.structured_content = Some(json!({
                "version": crate::VERSION,
                "shim_version": ctx.call.origin.shim_version,
                "version_skew": version_skew,
                "pid": ctx.health.pid,
                "uptime_s": ctx.health.uptime_s(),
                "sessions": ctx.health.sessions(),
                "calls_in_flight": in_flight,
                "recent_failures": failures,
                "store_problems": store_problems,
                "settings": settings,
                "spent_today_usd": spent_today.map(|m| usd_json(Some(m))),
                "spent_today_usd_micros": spent_today,
                "unpriced_calls_today": unpriced_today,
            }));
            Ok(result)
        })
    }
}
