//! What calls cost, read back: today's spend per provider and user (the running totals the
//! writer keeps, which budgets check), and usage summed by day, model, tool, client or user.

use serde::Serialize;

use super::records::sql_list;
use super::{CallState, Param, StoreError, StoreReader, required_int, required_text};

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;

/// The UTC day of a time in ms since the epoch, as days since 1970-01-01.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// One running total of a day: what a provider billed for a user's calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DailySpend {
    pub provider: String,
    /// `None` for the machine's owner.
    pub user_name: Option<String>,
    pub cost_usd_micros: i64,
    /// Calls whose cost is unknown (a model without a price), not in the total.
    pub unpriced_calls: i64,
}

/// What `usage` sums calls by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageBy {
    Day,
    Model,
    Tool,
    Client,
    User,
}

impl UsageBy {
    pub const ALL: [UsageBy; 5] = [
        UsageBy::Day,
        UsageBy::Model,
        UsageBy::Tool,
        UsageBy::Client,
        UsageBy::User,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UsageBy::Day => "day",
            UsageBy::Model => "model",
            UsageBy::Tool => "tool",
            UsageBy::Client => "client",
            UsageBy::User => "user",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|by| by.as_str() == text)
    }

    /// The grouping expression (fixed SQL: nothing from outside).
    fn key(self) -> &'static str {
        match self {
            UsageBy::Day => "CAST(received_at_ms / 86400000 AS TEXT)",
            UsageBy::Model => "COALESCE(model, '-')",
            UsageBy::Tool => "tool",
            UsageBy::Client => "COALESCE(client_name, '-')",
            UsageBy::User => "COALESCE(user_name, '')",
        }
    }
}

/// Calls of one group (a day, a model, …) and what they cost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    /// The day (`2026-12-01`), model, tool, client or user (`""`: the owner).
    pub key: String,
    pub calls: i64,
    /// Micro-dollars of the calls whose cost is known.
    pub cost_usd_micros: i64,
    /// Ended calls whose cost is unknown (a model without a price), not in `cost_usd_micros`.
    pub unpriced_calls: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cached_tokens: i64,
}

impl UsageRow {
    /// Adds `other`'s figures to these (totals).
    pub fn add(&mut self, other: &UsageRow) {
        self.calls += other.calls;
        self.cost_usd_micros += other.cost_usd_micros;
        self.unpriced_calls += other.unpriced_calls;
        self.tokens_in += other.tokens_in;
        self.tokens_out += other.tokens_out;
        self.cached_tokens += other.cached_tokens;
    }
}

/// `2026-12-01` for a day number.
pub fn day_name(day: i64) -> String {
    chrono::DateTime::from_timestamp_millis(day.saturating_mul(DAY_MS))
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| day.to_string())
}

/// The sums of some running totals: (micro-dollars spent, calls of unknown cost).
pub fn spend_totals(spend: &[DailySpend]) -> (i64, i64) {
    spend.iter().fold((0, 0), |(micros, unpriced), s| {
        (micros + s.cost_usd_micros, unpriced + s.unpriced_calls)
    })
}

impl StoreReader {
    /// Today's (UTC) running totals of the calls `only` may see: a user's own, or everyone's
    /// (`None`: the owner and admins).
    pub fn spend_today_seen_by(&self, only: Option<&str>) -> Result<Vec<DailySpend>, StoreError> {
        let spend = self.spend_on(day_of(super::now_ms()))?;
        Ok(spend
            .into_iter()
            .filter(|s| only.is_none() || s.user_name.as_deref() == only)
            .collect())
    }

    /// Every running total of `day` (one per provider and user that spent).
    pub fn spend_on(&self, day: i64) -> Result<Vec<DailySpend>, StoreError> {
        self.rows(
            "SELECT provider, user_name, cost_usd_micros, unpriced_calls FROM spend_by_day \
             WHERE day = ?1",
            &[Param::Int(Some(day))],
            |row| {
                Ok(DailySpend {
                    provider: required_text(row, 0)?,
                    user_name: Some(required_text(row, 1)?).filter(|u| !u.is_empty()),
                    cost_usd_micros: required_int(row, 2)?,
                    unpriced_calls: required_int(row, 3)?,
                })
            },
        )
    }

    /// Calls received since `since_ms`, summed by `by` (of `user` only when given), in key order.
    pub fn usage(
        &self,
        since_ms: i64,
        by: UsageBy,
        user: Option<&str>,
    ) -> Result<Vec<UsageRow>, StoreError> {
        // Sums cast to BIGINT: Postgres sums BIGINTs as NUMERIC.
        let sql = format!(
            "SELECT {key}, COUNT(*), CAST(COALESCE(SUM(cost_usd_micros), 0) AS BIGINT), \
             CAST(SUM(CASE WHEN cost_usd_micros IS NULL AND state NOT IN {open} THEN 1 ELSE 0 END) AS BIGINT), \
             CAST(COALESCE(SUM(tokens_in), 0) AS BIGINT), CAST(COALESCE(SUM(tokens_out), 0) AS BIGINT), \
             CAST(COALESCE(SUM(cached_tokens), 0) AS BIGINT) FROM calls \
             WHERE received_at_ms >= ?1 AND (CAST(?2 AS TEXT) IS NULL OR user_name = ?2) \
             GROUP BY {key} ORDER BY {key}",
            key = by.key(),
            open = sql_list(&CallState::OPEN),
        );
        let mut rows = self.rows(
            &sql,
            &[Param::Int(Some(since_ms)), Param::Text(user)],
            |row| {
                Ok(UsageRow {
                    key: required_text(row, 0)?,
                    calls: required_int(row, 1)?,
                    cost_usd_micros: required_int(row, 2)?,
                    unpriced_calls: required_int(row, 3)?,
                    tokens_in: required_int(row, 4)?,
                    tokens_out: required_int(row, 5)?,
                    cached_tokens: required_int(row, 6)?,
                })
            },
        )?;
        if by == UsageBy::Day {
            // Numbers as text sort as text; the days are put in order and named.
            rows.sort_by_key(|r| r.key.parse::<i64>().unwrap_or(0));
            for row in &mut rows {
                row.key = day_name(row.key.parse().unwrap_or(0));
            }
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{new_call, test_location};
    use crate::store::{FinishedCall, Store, now_ms};

    /// Inserts and finishes a call of `user` that cost `spend` (provider, micro-dollars).
    async fn finish(store: &Store, id: &str, user: Option<&str>, spend: Vec<(&str, Option<i64>)>) {
        let mut call = new_call(id);
        call.user_name = user.map(str::to_string);
        store.insert(call).await.unwrap();
        let cost = spend.iter().map(|(_, m)| *m).sum::<Option<i64>>();
        store
            .finish(
                id,
                FinishedCall {
                    state: Some(CallState::Succeeded),
                    finished_at_ms: now_ms(),
                    model: Some("m".into()),
                    tokens_in: Some(10),
                    tokens_out: Some(5),
                    cost_usd_micros: cost,
                    spend: spend.into_iter().map(|(p, m)| (p.to_string(), m)).collect(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_day_keeps_running_totals_per_provider_and_user() {
        let store = Store::open(&test_location()).unwrap();
        finish(
            &store,
            "a",
            None,
            vec![("glm", Some(1_000)), ("kimi", Some(250))],
        )
        .await;
        finish(&store, "b", None, vec![("glm", Some(500))]).await;
        finish(
            &store,
            "c",
            Some("ada"),
            vec![("glm", Some(7)), ("custom", None)],
        )
        .await;
        let today = day_of(now_ms());
        let (mut spend, usage, ada) = store
            .read(move |r| {
                Ok((
                    r.spend_on(today)?,
                    r.usage(0, UsageBy::User, None)?,
                    r.usage(0, UsageBy::Model, Some("ada"))?,
                ))
            })
            .await
            .unwrap();
        spend.sort_by(|a, b| (&a.provider, &a.user_name).cmp(&(&b.provider, &b.user_name)));
        let totals: Vec<_> = spend
            .iter()
            .map(|s| {
                (
                    s.provider.as_str(),
                    s.user_name.as_deref(),
                    s.cost_usd_micros,
                    s.unpriced_calls,
                )
            })
            .collect();
        assert_eq!(
            totals,
            [
                ("custom", Some("ada"), 0, 1),
                ("glm", None, 1_500, 0),
                ("glm", Some("ada"), 7, 0),
                ("kimi", None, 250, 0),
            ]
        );
        let owner = &usage[0];
        assert_eq!(
            (owner.key.as_str(), owner.calls, owner.cost_usd_micros),
            ("", 2, 1_750)
        );
        let of_ada = &usage[1];
        assert_eq!(
            (
                of_ada.key.as_str(),
                of_ada.cost_usd_micros,
                of_ada.unpriced_calls
            ),
            ("ada", 0, 1)
        );
        assert_eq!((ada.len(), ada[0].tokens_in, ada[0].tokens_out), (1, 10, 5));
        assert_eq!(day_name(20_001), "2024-10-05");
    }
}
