//! What models cost: a catalog entry's prices per million tokens, and what a call cost, summed by
//! provider in picodollars (exact integers; rounded to micro-dollars only when stored).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Spent;

/// Picodollars (10⁻¹² USD) in one micro-dollar.
const PICO_PER_MICRO: u64 = 1_000_000;

/// Picodollars in one US dollar.
const PICO_PER_USD: u64 = PICO_PER_MICRO * 1_000_000;

/// The most US dollars an amount (a budget) may be: beyond any day's spend, far inside an i64.
const MOST_USD: f64 = 1e9;

/// An amount of US dollars (`2.50`) in micro-dollars, exact for up to six decimals; `None` for a
/// negative, absurd or non-number amount.
pub fn micros_of_usd(usd: f64) -> Option<i64> {
    (usd.is_finite() && (0.0..=MOST_USD).contains(&usd))
        .then(|| (usd * PICO_PER_MICRO as f64).round() as i64)
}

/// A price in USD per million tokens, kept as picodollars per token (the same digits: $1.40 per
/// million tokens is 1,400,000 picodollars a token), so any price of up to six decimals is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PerMillion(u64);

/// The dearest price accepted: far above any model's, low enough that no sum overflows.
const MOST_USD_PER_MILLION: f64 = 100_000.0;

impl PerMillion {
    /// `usd` per million tokens; `None` for a negative, absurd or non-number price.
    pub fn usd(usd: f64) -> Option<Self> {
        (usd.is_finite() && (0.0..=MOST_USD_PER_MILLION).contains(&usd))
            .then(|| Self((usd * PICO_PER_MICRO as f64).round() as u64))
    }

    /// USD per million tokens.
    pub fn as_usd(self) -> f64 {
        self.0 as f64 / PICO_PER_MICRO as f64
    }

    fn of(self, tokens: u64) -> u64 {
        tokens.saturating_mul(self.0)
    }
}

impl<'de> Deserialize<'de> for PerMillion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let usd = f64::deserialize(deserializer)?;
        Self::usd(usd).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{usd} is not a price: expected USD per million tokens, from 0 to {MOST_USD_PER_MILLION}"
            ))
        })
    }
}

impl Serialize for PerMillion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.as_usd())
    }
}

/// A price in USD per call (a web search), kept as picodollars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PerCall(u64);

/// The dearest price per call accepted.
const MOST_USD_PER_CALL: f64 = 100.0;

impl PerCall {
    /// `usd` per call; `None` for a negative, absurd or non-number price.
    pub fn usd(usd: f64) -> Option<Self> {
        (usd.is_finite() && (0.0..=MOST_USD_PER_CALL).contains(&usd))
            .then(|| Self((usd * PICO_PER_USD as f64).round() as u64))
    }

    fn of(self, calls: u32) -> u64 {
        self.0.saturating_mul(u64::from(calls))
    }
}

impl<'de> Deserialize<'de> for PerCall {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let usd = f64::deserialize(deserializer)?;
        Self::usd(usd).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{usd} is not a price: expected USD per call, from 0 to {MOST_USD_PER_CALL}"
            ))
        })
    }
}

impl Serialize for PerCall {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.0 as f64 / PICO_PER_USD as f64)
    }
}

/// What a model costs, in USD per million tokens, as its provider's pricing page said on `checked`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Input tokens not served from the provider's cache.
    pub input: PerMillion,
    /// Input tokens served from the cache; the input price when the provider names none.
    #[serde(default)]
    pub cached_input: Option<PerMillion>,
    /// Output tokens (reasoning included: providers bill it as output).
    pub output: PerMillion,
    /// Each web search the model runs through the provider's search function, where the
    /// provider bills it on top of the tokens (Kimi's `$web_search`).
    #[serde(default)]
    pub web_search: Option<PerCall>,
    /// When the prices were read from the provider's page (`2026-12-02`).
    #[serde(default)]
    pub checked: Option<String>,
}

impl Price {
    /// Picodollars for `spent`: cached input at its price, the rest of the input at the input price.
    pub fn of(&self, spent: &Spent) -> u64 {
        let input = spent.tokens_in.unwrap_or(0);
        let cached = spent.cached_tokens.unwrap_or(0).min(input);
        let cached_price = self.cached_input.unwrap_or(self.input);
        self.input
            .of(input - cached)
            .saturating_add(cached_price.of(cached))
            .saturating_add(self.output.of(spent.tokens_out.unwrap_or(0)))
            .saturating_add(
                self.web_search
                    .map_or(0, |per_search| per_search.of(spent.web_searches)),
            )
    }
}

/// What a call cost, by provider: picodollars each, or unknown where a model without a price (or
/// an answer without usage) was billed. Retries and fallbacks add what each provider reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Cost {
    by_provider: Vec<(String, Option<u64>)>,
}

impl Cost {
    /// Adds `picodollars` (`None`: unknown) billed by `provider`.
    pub fn add(&mut self, provider: &str, picodollars: Option<u64>) {
        match self.by_provider.iter_mut().find(|(p, _)| p == provider) {
            Some((_, sum)) => *sum = sum.zip(picodollars).map(|(a, b)| a.saturating_add(b)),
            None => self.by_provider.push((provider.to_string(), picodollars)),
        }
    }

    /// Adds everything `other` cost.
    pub fn merge(&mut self, other: &Cost) {
        for (provider, picodollars) in &other.by_provider {
            self.add(provider, *picodollars);
        }
    }

    /// Whether nothing billed was reported (no provider answered or failed with usage).
    pub fn is_empty(&self) -> bool {
        self.by_provider.is_empty()
    }

    /// Both added up.
    pub fn plus(mut self, other: &Cost) -> Cost {
        self.merge(other);
        self
    }

    /// The whole cost in micro-dollars (rounded half up), `None` when any part is unknown; a
    /// call that billed nothing cost 0.
    pub fn micros(&self) -> Option<i64> {
        let mut total: u64 = 0;
        for (_, picodollars) in &self.by_provider {
            total = total.saturating_add((*picodollars)?);
        }
        Some(micros(total))
    }

    /// Each provider's part in micro-dollars (`None`: unknown).
    pub fn micros_by_provider(&self) -> Vec<(String, Option<i64>)> {
        self.by_provider
            .iter()
            .map(|(provider, picodollars)| (provider.clone(), picodollars.map(micros)))
            .collect()
    }
}

impl std::fmt::Display for Cost {
    /// `$0.004200 (glm $0.001200, kimi $0.003000)`; `unknown (custom: no price)` in part.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&usd(self.micros()))?;
        let parts = self.micros_by_provider();
        if parts.len() > 1 || parts.iter().any(|(_, m)| m.is_none()) {
            let each: Vec<String> = parts
                .iter()
                .map(|(provider, m)| match m {
                    Some(_) => format!("{provider} {}", usd(*m)),
                    None => format!("{provider}: a model without a price"),
                })
                .collect();
            write!(f, " ({})", each.join(", "))?;
        }
        Ok(())
    }
}

fn micros(picodollars: u64) -> i64 {
    i64::try_from(picodollars.saturating_add(PICO_PER_MICRO / 2) / PICO_PER_MICRO)
        .unwrap_or(i64::MAX)
}

/// Micro-dollars as people read them: `$0.012346`; `unknown` for none.
pub fn usd(micros: Option<i64>) -> String {
    match micros {
        Some(m) => format!("${}.{:06}", m / 1_000_000, m % 1_000_000),
        None => "unknown".to_string(),
    }
}

/// Micro-dollars as a JSON number of USD (`null` when unknown).
pub fn usd_json(micros: Option<i64>) -> serde_json::Value {
    match micros {
        Some(m) => serde_json::json!(m as f64 / 1_000_000.0),
        None => serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spent(tokens_in: u64, cached: u64, tokens_out: u64) -> Spent {
        Spent {
            tokens_in: Some(tokens_in),
            tokens_out: Some(tokens_out),
            reasoning_tokens: None,
            cached_tokens: Some(cached),
            web_searches: 0,
        }
    }

    #[test]
    fn a_price_is_exact_to_the_picodollar() {
        // A saturated cost (absurd token counts) rounds without overflowing.
        assert_eq!(micros(u64::MAX), (u64::MAX / PICO_PER_MICRO) as i64);
        let price = Price {
            input: PerMillion::usd(1.40).unwrap(),
            cached_input: PerMillion::usd(0.26),
            output: PerMillion::usd(4.40).unwrap(),
            web_search: None,
            checked: None,
        };
        // 900 fresh × 1.40 + 100 cached × 0.26 + 500 × 4.40 = 1260 + 26 + 2200 µ$ … per million.
        assert_eq!(price.of(&spent(1000, 100, 500)), 3_486_000_000);
        let mut cost = Cost::default();
        cost.add("glm", Some(price.of(&spent(1000, 100, 500))));
        assert_eq!(cost.micros(), Some(3486));
        assert_eq!(usd(cost.micros()), "$0.003486");
        // Ten thousand such calls are exactly ten thousand times one.
        let mut many = Cost::default();
        for _ in 0..10_000 {
            many.add("glm", Some(price.of(&spent(1000, 100, 500))));
        }
        assert_eq!(many.micros(), Some(34_860_000));
        assert_eq!(usd(many.micros()), "$34.860000");
    }

    #[test]
    fn an_unknown_part_makes_the_whole_unknown_but_keeps_the_others() {
        let mut cost = Cost::default();
        cost.add("glm", Some(2_500_000));
        cost.add("custom", None);
        assert_eq!(cost.micros(), None);
        assert_eq!(usd(cost.micros()), "unknown");
        assert_eq!(
            cost.micros_by_provider(),
            [("glm".to_string(), Some(3)), ("custom".to_string(), None)]
        );
        assert_eq!(Cost::default().micros(), Some(0));
        assert_eq!(
            cost.to_string(),
            "unknown (glm $0.000003, custom: a model without a price)"
        );
        let mut two = Cost::default();
        two.add("glm", Some(1_200_000_000));
        two.add("kimi", Some(3_000_000_000));
        assert_eq!(two.to_string(), "$0.004200 (glm $0.001200, kimi $0.003000)");
    }

    #[test]
    fn prices_outside_reason_are_refused() {
        assert!(PerMillion::usd(-1.0).is_none());
        assert!(PerMillion::usd(f64::NAN).is_none());
        assert_eq!(PerMillion::usd(0.0375).unwrap().as_usd(), 0.0375);
        assert_eq!(micros_of_usd(2.5), Some(2_500_000));
        assert_eq!(micros_of_usd(0.000_001), Some(1));
        assert_eq!(micros_of_usd(-0.5), None);
    }
}
