//! What a provider's error answer means: its documented body (GLM's business codes, Kimi's and
//! OpenAI's `error.type` / `error.code`, OpenRouter's 402) read into a class of failure — an
//! exhausted balance, plan or quota (final), a rate limit or overload (worth waiting for) — and
//! what to tell the user about it, naming the provider's billing page where money is the cause
//! (GLM's codes and each provider's page are in its own file, through its dialect). The sources
//! of every rule are in `tests/fixtures/providers/SOURCES.md`.

use std::time::Duration;

use serde_json::Value;

use super::dialect::dialect;
use crate::config::ProviderKind;

/// The fields of an error body exai decides on: `{"error": {"message", "type", "code"}}`, or
/// the same fields at the top level.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ErrorBody {
    pub message: Option<String>,
    /// `error.type`: Kimi's and OpenAI's kind of error (`exceeded_current_quota_error`).
    pub kind: Option<String>,
    /// `error.code` as text: GLM's business code (`"1113"`), OpenAI's cause
    /// (`credit_balance_exhausted`), OpenRouter's number (`402`) or word (`server_error`).
    pub code: Option<String>,
}

impl ErrorBody {
    /// Reads a whole error body (its `error` object, else its top level); unknown shapes give
    /// an empty body.
    pub fn parse(text: &str) -> Self {
        serde_json::from_str::<Value>(text)
            .map(|value| Self::of(&value))
            .unwrap_or_default()
    }

    /// Reads the `error` of a body, or the body itself when it has none.
    pub fn of(value: &Value) -> Self {
        let error = match value.get("error") {
            Some(Value::String(message)) => {
                return Self {
                    message: Some(message.clone()),
                    ..Self::default()
                };
            }
            Some(inner @ Value::Object(_)) => inner,
            _ => value,
        };
        let text = |field: &str| match error.get(field) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        Self {
            message: text("message").or_else(|| match value.get("message") {
                Some(Value::String(s)) => Some(s.clone()),
                _ => None,
            }),
            kind: text("type"),
            code: text("code"),
        }
    }

    fn says(&self, words: &[&str]) -> bool {
        [&self.code, &self.kind]
            .into_iter()
            .flatten()
            .any(|w| words.contains(&w.as_str()))
    }
}

/// What kind of failure an error answer reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The account's balance, credits, plan window or spend limit is used up: waiting seconds
    /// will not help, so exai does not retry (a fallback model elsewhere may still answer).
    Quota,
    /// The account cannot be used (locked, inactive, unknown): final.
    Account,
    /// Too many requests for now: worth retrying after a wait (`Retry-After`).
    RateLimited,
    /// The provider says it is overloaded: worth retrying.
    Overloaded,
    /// The provider failed (5xx, a timeout, a server error reported in the stream): worth
    /// retrying.
    ServerError,
    /// This model will not take this request for this account (the plan lacks the model, its
    /// moderation flagged the input): no wait mends it, but another model may answer.
    Refused,
    /// Anything else (bad request, auth, not found): decided by the HTTP status alone.
    Other,
}

impl ErrorClass {
    /// Worth another attempt at the same model.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorClass::RateLimited | ErrorClass::Overloaded | ErrorClass::ServerError
        )
    }

    /// The account is out or blocked: another provider's model may still answer.
    pub fn is_account_problem(self) -> bool {
        matches!(self, ErrorClass::Quota | ErrorClass::Account)
    }
}

/// OpenAI's and Kimi's words for an exhausted quota, balance or spend limit (in `type` or
/// `code`; OpenAI may keep `type: insufficient_quota` while `code` names the cause).
const QUOTA_WORDS: &[&str] = &[
    "insufficient_quota",
    "credit_balance_exhausted",
    "organization_spend_limit_exceeded",
    "project_spend_limit_exceeded",
    "organization_usage_limit_exceeded",
    "exceeded_current_quota_error",
];

/// Words for a real rate limit (Kimi's type, OpenAI's codes).
const RATE_LIMIT_WORDS: &[&str] = &[
    "rate_limit_reached_error",
    "rate_limit_exceeded",
    "slow_down",
];

/// Words for an overloaded engine (Kimi).
const OVERLOAD_WORDS: &[&str] = &["engine_overloaded_error"];

/// Words for a provider-side failure (OpenAI's and OpenRouter's errors inside a stream).
const SERVER_ERROR_WORDS: &[&str] = &["server_error", "internal_error"];

/// Reads an error answer: its HTTP status (200 for an error inside a stream), its body, and
/// whether it said when to come back.
pub(crate) fn classify(
    kind: ProviderKind,
    status: u16,
    body: &ErrorBody,
    retry_after: bool,
) -> ErrorClass {
    if body.says(QUOTA_WORDS) {
        return ErrorClass::Quota;
    }
    if body.says(RATE_LIMIT_WORDS) {
        return ErrorClass::RateLimited;
    }
    if body.says(OVERLOAD_WORDS) {
        return ErrorClass::Overloaded;
    }
    if let Some(class) = dialect(kind).error_class(status, body) {
        return class;
    }
    match status {
        // Payment Required: out of credits (OpenRouter). One that says when to come back
        // (Retry-After) is a wait, not an empty account.
        402 if retry_after => ErrorClass::RateLimited,
        402 => ErrorClass::Quota,
        429 => ErrorClass::RateLimited,
        // Request Timeout: the provider gave up waiting (OpenRouter documents it); a new
        // attempt may pass.
        408 => ErrorClass::ServerError,
        s if s >= 500 => ErrorClass::ServerError,
        // An error after a 200 is the provider failing in the middle of its answer.
        200 => ErrorClass::ServerError,
        _ if body.says(SERVER_ERROR_WORDS) => ErrorClass::ServerError,
        _ => ErrorClass::Other,
    }
}

/// What to tell the user about an error answer, with a leading " — " (empty when the status
/// and message say it all).
pub(crate) fn hint(
    kind: ProviderKind,
    key: Key<'_>,
    status: u16,
    class: ErrorClass,
    body: &ErrorBody,
) -> String {
    match class {
        ErrorClass::Quota => dialect(kind).quota_hint(body),
        ErrorClass::Account => " — the account cannot be used (inactive, locked or unknown); \
                                see the provider's console; exai did not retry"
            .to_string(),
        ErrorClass::RateLimited => status_hint(kind, key, 429),
        ErrorClass::Overloaded => " — the provider is overloaded; exai retried as long as the \
                                   deadline allowed; try again later or another model"
            .to_string(),
        ErrorClass::Refused => dialect(kind).refused_hint(body),
        ErrorClass::ServerError | ErrorClass::Other => status_hint(kind, key, status),
    }
}

/// The hint for an exhausted balance or plan, naming `what_to_do` (where to pay).
pub(crate) fn exhausted(what_to_do: &str) -> String {
    format!(" — the account's balance or plan is exhausted: {what_to_do}; exai did not retry")
}

/// An endpoint's key as far as hints go: the variable it comes from, and whether it is set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key<'a> {
    pub source: Option<&'a str>,
    pub set: bool,
}

/// What to tell the user about an HTTP error from this kind of provider, by its status.
pub(crate) fn status_hint(kind: ProviderKind, key: Key<'_>, status: u16) -> String {
    match status {
        401 | 403 => match (key.source, key.set) {
            (Some(var), true) if status == 401 => format!(" — the key was rejected; check {var}"),
            // A known key refused this: its rights, region or plan, not its spelling.
            (Some(var), true) => format!(
                " — the key in {var} is not allowed this (its permissions, region or plan); see \
                 the provider's console"
            ),
            (Some(var), false) => format!(" — the endpoint wants a key; set {var}"),
            (None, _) => " — the endpoint wants a key; give its [[endpoints]] entry an \
                          api_key_env naming the variable that holds it"
                .to_string(),
        },
        404 => " — the model or URL does not exist there; see listmodels".to_string(),
        429 => " — rate limited; exai retried as long as the deadline allowed".to_string(),
        s if s >= 500 => dialect(kind).server_error_hint().to_string(),
        _ => String::new(),
    }
}

/// The wait a rate-limit message names when no `Retry-After` came: Kimi's "please try again
/// after 1 seconds", OpenAI's "Please try again in 20s".
pub(crate) fn wait_in_message(message: &str) -> Option<Duration> {
    let lower = message.to_ascii_lowercase();
    let after = ["try again after ", "try again in "]
        .iter()
        .find_map(|lead| lower.find(lead).map(|at| &lower[at + lead.len()..]))?;
    let number: String = after
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let seconds: f64 = number.parse().ok()?;
    let unit = after[number.len()..].trim_start();
    if !(unit.starts_with('s') || unit.starts_with("second")) || !seconds.is_finite() {
        return None;
    }
    Duration::try_from_secs_f64(seconds).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_read_whatever_their_shape() {
        let glm = ErrorBody::parse(r#"{"error":{"code":"1113","message":"m"}}"#);
        assert_eq!(glm.code.as_deref(), Some("1113"));
        let openrouter = ErrorBody::parse(r#"{"error":{"code":402,"message":"m"}}"#);
        assert_eq!(openrouter.code.as_deref(), Some("402"));
        let top = ErrorBody::parse(r#"{"code":1214,"message":"top level"}"#);
        assert_eq!(
            (top.code.as_deref(), top.message.as_deref()),
            (Some("1214"), Some("top level"))
        );
        let plain = ErrorBody::parse(r#"{"error":"just text"}"#);
        assert_eq!(plain.message.as_deref(), Some("just text"));
        assert_eq!(ErrorBody::parse("<html>"), ErrorBody::default());
    }

    #[test]
    fn a_rate_limit_message_may_say_how_long_to_wait() {
        let kimi =
            "request reached organization max concurrency: 1, please try again after 1 seconds";
        assert_eq!(wait_in_message(kimi), Some(Duration::from_secs(1)));
        let openai = "Limit 3, Used 3, Requested 1. Please try again in 20s. Visit …";
        assert_eq!(wait_in_message(openai), Some(Duration::from_secs(20)));
        assert_eq!(wait_in_message("try again in a while"), None);
        assert_eq!(wait_in_message("try again in 5 minutes"), None);
    }

    #[test]
    fn glm_codes_only_count_for_glm() {
        let body = ErrorBody::parse(r#"{"error":{"code":"1113","message":"m"}}"#);
        assert_eq!(
            classify(ProviderKind::Glm, 429, &body, false),
            ErrorClass::Quota
        );
        assert_eq!(
            classify(ProviderKind::Custom, 429, &body, false),
            ErrorClass::RateLimited
        );
        let locked = ErrorBody::parse(r#"{"error":{"code":"1112","message":"locked"}}"#);
        assert_eq!(
            classify(ProviderKind::Glm, 429, &locked, false),
            ErrorClass::Account
        );
    }

    #[test]
    fn each_provider_names_its_own_billing_page_and_server_hint() {
        let key = Key {
            source: None,
            set: false,
        };
        let quota =
            |kind, body: &str| hint(kind, key, 402, ErrorClass::Quota, &ErrorBody::parse(body));
        let exhausted = " — the account's balance or plan is exhausted: ";
        let cases = [
            (
                quota(
                    ProviderKind::Glm,
                    r#"{"error":{"code":"1308","message":"m"}}"#,
                ),
                format!(
                    "{exhausted}the GLM plan's usage limit is reached (the message says when it \
                     resets); see https://z.ai/subscribe; exai did not retry"
                ),
            ),
            (
                quota(
                    ProviderKind::Glm,
                    r#"{"error":{"code":"1113","message":"m"}}"#,
                ),
                format!(
                    "{exhausted}top up the GLM balance at https://z.ai/manage-apikey/billing (or \
                     use the endpoint that matches the key's plan); exai did not retry"
                ),
            ),
            (
                quota(ProviderKind::Kimi, "{}"),
                format!(
                    "{exhausted}top up the Kimi balance at https://platform.kimi.ai/console; exai \
                     did not retry"
                ),
            ),
            (
                quota(ProviderKind::OpenAi, "{}"),
                format!(
                    "{exhausted}check the OpenAI credit and spend limits at \
                     https://platform.openai.com/account/billing; exai did not retry"
                ),
            ),
            (
                quota(
                    ProviderKind::OpenRouter,
                    r#"{"error":{"code":402,"message":"fewer max_tokens. You can only afford 10"}}"#,
                ),
                " — the OpenRouter credits do not cover this many output tokens; add credits at \
                 https://openrouter.ai/settings/credits or ask for a shorter answer; exai did not \
                 retry"
                    .to_string(),
            ),
            (
                quota(ProviderKind::OpenRouter, "{}"),
                format!(
                    "{exhausted}add credits at https://openrouter.ai/settings/credits; exai did \
                     not retry"
                ),
            ),
            (
                quota(ProviderKind::Custom, "{}"),
                format!("{exhausted}ask the endpoint's operator; exai did not retry"),
            ),
            (
                status_hint(ProviderKind::Custom, key, 503),
                " — the endpoint failed; is the server healthy?".to_string(),
            ),
            (
                status_hint(ProviderKind::Kimi, key, 503),
                " — the provider failed; exai retried; try again later or another model"
                    .to_string(),
            ),
        ];
        for (said, expected) in cases {
            assert_eq!(said, expected);
        }
    }
}
