//! `exai usage`: what calls cost and the tokens they used, by day, model, tool, client and user
//! (on a shared store), with totals — read from the store (daemon up or not).

use std::io::Write;

use serde_json::json;

use super::{CliError, open_store, write_json};
use crate::calls::progress::thousands;
use crate::config::Config;
use crate::providers::price::{usd, usd_json};
use crate::store::{UsageBy, UsageRow, day_of, now_ms};

/// Where `--since` starts: `7d`, `12h`, or a date (`2026-11-01`, UTC); the default is 7 days.
pub fn since_ms(text: Option<&str>, now: i64) -> Result<i64, String> {
    let Some(text) = text.map(str::trim) else {
        return Ok(now - 7 * 86_400_000);
    };
    let relative = |unit: char, ms: i64| {
        text.strip_suffix(unit)
            .and_then(|n| n.trim().parse::<i64>().ok())
            .filter(|n| *n > 0)
            .map(|n| now - n.saturating_mul(ms))
    };
    if let Some(since) = relative('d', 86_400_000).or_else(|| relative('h', 3_600_000)) {
        return Ok(since);
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
        .ok_or_else(|| {
            format!("--since {text:?}: expected days (7d), hours (12h) or a date (2026-11-01)")
        })
}

/// Prints usage since `since` grouped by `by` (every grouping when `None`; users only when the
/// store has some).
pub fn usage(
    config: &Config,
    since: i64,
    by: Option<UsageBy>,
    as_json: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let store = open_store(config)?;
    let mut groups = Vec::new();
    for by in by.map(|b| vec![b]).unwrap_or_else(|| UsageBy::ALL.to_vec()) {
        let rows = store.usage(since, by, None)?;
        let only_the_owner = rows.iter().all(|r| r.key.is_empty());
        if by == UsageBy::User && only_the_owner && groups.len() > 1 {
            continue;
        }
        groups.push((by, rows));
    }
    // Every grouping covers the same calls: the first one's rows add up to the totals.
    let mut total = UsageRow {
        key: "total".into(),
        ..UsageRow::default()
    };
    for row in groups
        .first()
        .map(|(_, rows)| rows.as_slice())
        .unwrap_or_default()
    {
        total.add(row);
    }
    let today = store.spend_on(day_of(now_ms()))?;
    let today_micros: i64 = today.iter().map(|s| s.cost_usd_micros).sum();
    if as_json {
        let row_json = |r: &UsageRow| {
            json!({
                "key": r.key,
                "calls": r.calls,
                "cost_usd": usd_json(Some(r.cost_usd_micros)),
                "cost_usd_micros": r.cost_usd_micros,
                "unpriced_calls": r.unpriced_calls,
                "tokens_in": r.tokens_in,
                "tokens_out": r.tokens_out,
                "cached_tokens": r.cached_tokens,
            })
        };
        let mut value = json!({
            "since": chrono::DateTime::from_timestamp_millis(since).map(|t| t.to_rfc3339()),
            "total": row_json(&total),
            "today_usd": usd_json(Some(today_micros)),
            "today_usd_micros": today_micros,
        });
        for (by, rows) in &groups {
            value[format!("by_{}", by.as_str())] = rows.iter().map(row_json).collect();
        }
        write_json(out, &value)?;
        return Ok(());
    }
    writeln!(
        out,
        "since {} · {} call(s) · {} · today (UTC) {}",
        chrono::DateTime::from_timestamp_millis(since)
            .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_default(),
        total.calls,
        usd(Some(total.cost_usd_micros)),
        usd(Some(today_micros)),
    )?;
    if total.unpriced_calls > 0 {
        writeln!(
            out,
            "{} call(s) cost unknown (a model without a price: give it one in the models file) \
             and are not in the sums",
            total.unpriced_calls
        )?;
    }
    for (by, rows) in &groups {
        writeln!(
            out,
            "\n{:<24}  {:>7}  {:>14}  {:>12}  {:>12}  {:>12}",
            by.as_str().to_uppercase(),
            "CALLS",
            "COST",
            "TOKENS IN",
            "CACHED",
            "TOKENS OUT"
        )?;
        for row in rows.iter().chain(std::iter::once(&total)) {
            let name = match (by, row.key.as_str()) {
                (UsageBy::User, "") => "(owner)",
                (_, key) => key,
            };
            let cost = match row.unpriced_calls {
                0 => usd(Some(row.cost_usd_micros)),
                n => format!("{} +{n}?", usd(Some(row.cost_usd_micros))),
            };
            writeln!(
                out,
                "{:<24}  {:>7}  {:>14}  {:>12}  {:>12}  {:>12}",
                name,
                row.calls,
                cost,
                thousands(row.tokens_in.max(0) as u64),
                thousands(row.cached_tokens.max(0) as u64),
                thousands(row.tokens_out.max(0) as u64),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_days_hours_and_dates() {
        let now = 1_800_000_000_000;
        assert_eq!(since_ms(None, now), Ok(now - 7 * 86_400_000));
        assert_eq!(since_ms(Some("2d"), now), Ok(now - 2 * 86_400_000));
        assert_eq!(since_ms(Some("12h"), now), Ok(now - 12 * 3_600_000));
        assert_eq!(since_ms(Some("2026-11-01"), now), Ok(1_793_491_200_000));
        assert!(since_ms(Some("yesterday"), now).unwrap_err().contains("7d"));
    }
}
