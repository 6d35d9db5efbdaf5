//! The page's charts in numbers: per model, the p50/p95 time to first token and total, the error
//! rate and the tokens of the calls of a window (the last hour or day), and the same window in
//! buckets over time.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::store::{CallFigures, CallState};

/// A window of time the page looks back over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Hour,
    Day,
}

impl Window {
    pub fn parse(text: Option<&str>) -> Option<Self> {
        match text.unwrap_or("hour") {
            "hour" => Some(Window::Hour),
            "day" => Some(Window::Day),
            _ => None,
        }
    }

    pub fn length_ms(self) -> i64 {
        match self {
            Window::Hour => 3_600_000,
            Window::Day => 86_400_000,
        }
    }

    /// Buckets of the time chart: 12 of 5 minutes, or 24 of an hour.
    fn buckets(self) -> i64 {
        match self {
            Window::Hour => 12,
            Window::Day => 24,
        }
    }
}

/// One model's calls in the window.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ModelFigures {
    pub model: String,
    /// Calls that ended (succeeded or not): a call in flight has no figures yet.
    pub calls: usize,
    /// Failed, timed out or interrupted (a cancelled call is no error of the model's).
    pub errors: usize,
    pub error_rate: f64,
    pub ttft_p50_ms: Option<i64>,
    pub ttft_p95_ms: Option<i64>,
    pub total_p50_ms: Option<i64>,
    pub total_p95_ms: Option<i64>,
    pub tokens_in: i64,
    pub tokens_out: i64,
}

/// A slice of the window.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Bucket {
    pub start_ms: i64,
    pub calls: usize,
    pub errors: usize,
    pub tokens: i64,
}

/// Everything the charts draw.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub since_ms: i64,
    pub bucket_ms: i64,
    pub models: Vec<ModelFigures>,
    pub buckets: Vec<Bucket>,
}

fn is_error(state: CallState) -> bool {
    matches!(
        state,
        CallState::Failed | CallState::TimedOut | CallState::Interrupted
    )
}

/// The value under which `share` of the sorted `values` lie (nearest rank).
fn percentile(sorted: &[i64], share: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (share * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// The figures of `calls` in `window` ending at `now_ms`.
pub fn figures(calls: &[CallFigures], window: Window, now_ms: i64) -> Figures {
    let since_ms = now_ms - window.length_ms();
    let bucket_ms = window.length_ms() / window.buckets();
    let mut buckets: Vec<Bucket> = (0..window.buckets())
        .map(|i| Bucket {
            start_ms: since_ms + i * bucket_ms,
            ..Bucket::default()
        })
        .collect();
    let mut by_model: BTreeMap<String, (ModelFigures, Vec<i64>, Vec<i64>)> = BTreeMap::new();
    for call in calls.iter().filter(|c| c.received_at_ms >= since_ms) {
        let tokens = call.tokens_in.unwrap_or(0) + call.tokens_out.unwrap_or(0);
        let slot = ((call.received_at_ms - since_ms) / bucket_ms) as usize;
        if let Some(bucket) = buckets.get_mut(slot) {
            bucket.calls += 1;
            bucket.errors += usize::from(is_error(call.state));
            bucket.tokens += tokens;
        }
        // A call in flight has no model, latency or tokens on record yet: it counts in its bucket.
        if !call.state.is_final() {
            continue;
        }
        let name = call.model.clone().unwrap_or_else(|| "(no model)".into());
        let (model, ttfts, totals) = by_model.entry(name.clone()).or_insert_with(|| {
            (
                ModelFigures {
                    model: name,
                    ..ModelFigures::default()
                },
                Vec::new(),
                Vec::new(),
            )
        });
        model.calls += 1;
        model.tokens_in += call.tokens_in.unwrap_or(0);
        model.tokens_out += call.tokens_out.unwrap_or(0);
        model.errors += usize::from(is_error(call.state));
        ttfts.extend(call.time_to_first_token_ms);
        totals.extend(call.duration_ms);
    }
    let models = by_model
        .into_values()
        .map(|(mut model, mut ttfts, mut totals)| {
            ttfts.sort_unstable();
            totals.sort_unstable();
            model.error_rate = match model.calls {
                0 => 0.0,
                n => model.errors as f64 / n as f64,
            };
            model.ttft_p50_ms = percentile(&ttfts, 0.5);
            model.ttft_p95_ms = percentile(&ttfts, 0.95);
            model.total_p50_ms = percentile(&totals, 0.5);
            model.total_p95_ms = percentile(&totals, 0.95);
            model
        })
        .collect();
    Figures {
        since_ms,
        bucket_ms,
        models,
        buckets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(model: &str, state: CallState, at: i64, total: i64, ttft: i64) -> CallFigures {
        CallFigures {
            model: Some(model.into()),
            state,
            received_at_ms: at,
            duration_ms: Some(total),
            time_to_first_token_ms: Some(ttft),
            tokens_in: Some(10),
            tokens_out: Some(5),
        }
    }

    #[test]
    fn percentiles_rates_and_buckets() {
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7], 0.95), Some(7));
        let hundred: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 0.5), Some(50));
        assert_eq!(percentile(&hundred, 0.95), Some(95));

        let now = 10_000_000;
        let calls = vec![
            call("a", CallState::Succeeded, now - 1000, 100, 10),
            call("a", CallState::Failed, now - 2000, 300, 30),
            call("a", CallState::Cancelled, now - 3000, 50, 5),
            call("a", CallState::Running, now - 4000, 0, 0),
            call("b", CallState::TimedOut, now - 3_500_000, 900, 90),
            // Outside the hour.
            call("b", CallState::Failed, now - 3_700_000, 900, 90),
        ];
        let got = figures(&calls, Window::Hour, now);
        assert_eq!(got.models.len(), 2);
        let a = &got.models[0];
        assert_eq!((a.calls, a.errors), (3, 1));
        assert!((a.error_rate - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!((a.total_p50_ms, a.total_p95_ms), (Some(100), Some(300)));
        assert_eq!((a.ttft_p50_ms, a.ttft_p95_ms), (Some(10), Some(30)));
        assert_eq!((a.tokens_in, a.tokens_out), (30, 15));
        assert_eq!(got.models[1].error_rate, 1.0);
        assert_eq!(got.buckets.len(), 12);
        assert_eq!(got.buckets[11].calls, 4);
        assert_eq!(got.buckets[0].errors, 1);
        assert_eq!(got.buckets.iter().map(|b| b.calls).sum::<usize>(), 5);
    }
}
