//! Daily budgets (`EXAI_DAILY_BUDGET_USD` overall, `EXAI_PROVIDER_DAILY_BUDGET_USD` per provider,
//! `EXAI_USER_DAILY_BUDGET_USD` per person on a shared exai):
//! a provider request that would start once today's spend (UTC) has reached a budget is refused
//! before it is sent. Today's spend is the store's running total for the day, which every replica
//! sharing the store adds to, read by key: the check costs one indexed read, and none at all
//! when no budget is set.

use std::collections::HashMap;

use crate::providers::Cost;
use crate::providers::price::usd;
use crate::store::{DailySpend, Store, day_of, now_ms};

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;

/// The budgets set, and the store that knows what was spent.
#[derive(Clone, Default)]
pub struct Budgets {
    /// Micro-dollars a day across every provider.
    overall: Option<i64>,
    /// Micro-dollars a day per provider.
    per_provider: HashMap<String, i64>,
    /// Micro-dollars a day per person (`*`: every person not named).
    per_user: HashMap<String, i64>,
    store: Option<Store>,
}

/// A request refused because a daily budget is spent.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{scope} daily budget of {} is spent: {} spent today (UTC); it resets at {} (in {}), or raise \
     {setting}",
    usd(Some(*budget)), usd(Some(*spent)), reset_time(*resets_at_ms), wait(*resets_at_ms - now_ms())
)]
pub struct OverBudget {
    /// "the overall", "glm's".
    pub scope: String,
    /// The setting to change.
    pub setting: &'static str,
    pub budget: i64,
    pub spent: i64,
    /// The next UTC midnight (ms since the epoch).
    pub resets_at_ms: i64,
}

impl Budgets {
    /// `overall` and `per_provider` in micro-dollars, today's spend read from `store`.
    pub fn new(overall: Option<i64>, per_provider: HashMap<String, i64>, store: Store) -> Self {
        Self {
            overall,
            per_provider,
            per_user: HashMap::new(),
            store: Some(store),
        }
    }

    /// These budgets, and `per_user` (micro-dollars) for each person's own calls.
    pub fn with_per_user(mut self, per_user: HashMap<String, i64>) -> Self {
        self.per_user = per_user;
        self
    }

    /// The daily budget of `user` (none for the owner, who has no name).
    fn of_user(&self, user: Option<&str>) -> Option<i64> {
        let user = user?;
        self.per_user
            .get(user)
            .or_else(|| self.per_user.get("*"))
            .copied()
    }

    fn binds(&self, provider: &str, user: Option<&str>) -> bool {
        self.overall.is_some()
            || self.per_provider.contains_key(provider)
            || self.of_user(user).is_some()
    }

    /// Whether a request of `user`'s call to `provider` may start now, the call having billed
    /// `pending` so far (not yet in the day's totals: a call's spend is added as it ends); the
    /// budget it would go past if not.
    pub async fn check(
        &self,
        provider: &str,
        user: Option<&str>,
        pending: impl FnOnce() -> Cost,
    ) -> Result<(), OverBudget> {
        let Some(store) = self.store.as_ref().filter(|_| self.binds(provider, user)) else {
            return Ok(());
        };
        let today = day_of(now_ms());
        let mut spend = match store.read(move |r| r.spend_on(today)).await {
            Ok(spend) => spend,
            Err(error) => {
                // A store that cannot be read does not stop calls (as a store that cannot write
                // does not): the budget is checked again on the next request.
                tracing::warn!(%error, "today's spend could not be read; the budget is not checked");
                return Ok(());
            }
        };
        spend.extend(pending().micros_by_provider().into_iter().filter_map(
            |(provider, micros)| {
                Some(DailySpend {
                    provider,
                    user_name: user.map(str::to_string),
                    cost_usd_micros: micros?,
                    unpriced_calls: 0,
                })
            },
        ));
        self.judge(provider, user, &spend, today)
    }

    fn judge(
        &self,
        provider: &str,
        user: Option<&str>,
        spend: &[DailySpend],
        today: i64,
    ) -> Result<(), OverBudget> {
        let resets_at_ms = (today + 1) * DAY_MS;
        let over = |scope: String, setting, budget: i64, spent: i64| {
            (spent >= budget).then_some(OverBudget {
                scope,
                setting,
                budget,
                spent,
                resets_at_ms,
            })
        };
        if let Some(budget) = self.overall {
            let spent = spend.iter().map(|s| s.cost_usd_micros).sum();
            if let Some(refusal) =
                over("the overall".into(), "EXAI_DAILY_BUDGET_USD", budget, spent)
            {
                return Err(refusal);
            }
        }
        if let Some(budget) = self.per_provider.get(provider) {
            let spent = spend
                .iter()
                .filter(|s| s.provider == provider)
                .map(|s| s.cost_usd_micros)
                .sum();
            let scope = format!("{provider}'s");
            if let Some(refusal) = over(scope, "EXAI_PROVIDER_DAILY_BUDGET_USD", *budget, spent) {
                return Err(refusal);
            }
        }
        if let (Some(budget), Some(name)) = (self.of_user(user), user) {
            // Every replica on the store adds to the same per-user totals.
            let spent = spend
                .iter()
                .filter(|s| s.user_name.as_deref() == Some(name))
                .map(|s| s.cost_usd_micros)
                .sum();
            let scope = format!("{name}'s");
            if let Some(refusal) = over(scope, "EXAI_USER_DAILY_BUDGET_USD", budget, spent) {
                return Err(refusal);
            }
        }
        Ok(())
    }
}

/// "2026-12-03 00:00 UTC".
fn reset_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// "5 h 12 min", "42 min", "under a minute".
fn wait(ms: i64) -> String {
    let minutes = ms.max(0) / 60_000;
    match (minutes / 60, minutes % 60) {
        (0, 0) => "under a minute".to_string(),
        (0, m) => format!("{m} min"),
        (h, m) => format!("{h} h {m} min"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spent(provider: &str, micros: i64) -> DailySpend {
        spent_by(provider, None, micros)
    }

    fn spent_by(provider: &str, user: Option<&str>, micros: i64) -> DailySpend {
        DailySpend {
            provider: provider.into(),
            user_name: user.map(str::to_string),
            cost_usd_micros: micros,
            unpriced_calls: 0,
        }
    }

    #[test]
    fn a_request_past_a_budget_is_refused_with_the_budget_the_spend_and_the_reset() {
        let budgets = Budgets {
            overall: Some(5_000_000),
            per_provider: [("glm".to_string(), 1_000_000)].into(),
            per_user: HashMap::new(),
            store: None,
        };
        let today = 20_000;
        let spend = [spent("glm", 999_999), spent("kimi", 3_000_000)];
        assert!(budgets.judge("glm", None, &spend, today).is_ok());
        let spend = [spent("glm", 1_000_000), spent("kimi", 3_000_000)];
        let refused = budgets.judge("glm", None, &spend, today).unwrap_err();
        assert_eq!(refused.resets_at_ms, 20_001 * DAY_MS);
        let message = refused.to_string();
        assert!(
            message.starts_with("glm's daily budget of $1.000000 is spent: $1.000000 spent today"),
            "{message}"
        );
        assert!(
            message.contains("resets at 2024-10-05 00:00 UTC"),
            "{message}"
        );
        assert!(budgets.judge("kimi", None, &spend, today).is_ok());
        let spend = [spent("glm", 900_000), spent("kimi", 4_100_000)];
        let overall = budgets.judge("kimi", None, &spend, today).unwrap_err();
        assert!(
            overall
                .to_string()
                .starts_with("the overall daily budget of $5.000000"),
            "{overall}"
        );
    }

    #[test]
    fn a_person_past_their_budget_is_refused_and_others_are_not() {
        let budgets = Budgets {
            overall: None,
            per_provider: HashMap::new(),
            per_user: [("ada".to_string(), 2_000_000), ("*".to_string(), 500_000)].into(),
            store: None,
        };
        let today = 20_000;
        let spend = [
            spent_by("glm", Some("ada"), 1_500_000),
            spent_by("kimi", Some("ada"), 600_000),
            spent_by("glm", Some("bob"), 400_000),
            spent_by("glm", None, 9_000_000),
        ];
        // Ada's own spend across providers counts: $2.10 of her $2.
        let refused = budgets
            .judge("glm", Some("ada"), &spend, today)
            .unwrap_err();
        assert!(
            refused
                .to_string()
                .starts_with("ada's daily budget of $2.000000 is spent: $2.100000 spent today"),
            "{refused}"
        );
        assert!(refused.to_string().contains("EXAI_USER_DAILY_BUDGET_USD"));
        // Bob falls under `*` and is within it; the owner has no personal budget.
        assert!(budgets.judge("glm", Some("bob"), &spend, today).is_ok());
        assert!(budgets.judge("glm", None, &spend, today).is_ok());
        let spend = [spent_by("glm", Some("bob"), 500_000)];
        assert!(budgets.judge("kimi", Some("bob"), &spend, today).is_err());
    }
}
