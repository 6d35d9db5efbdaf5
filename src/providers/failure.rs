//! Why a provider call failed (`ProviderError`, with its stored kind and whether a retry or a
//! fallback may help), and what a failed call spent. Reading a provider's error *body* into a
//! class and a hint is errors.rs.

use std::time::Duration;

use super::{Cost, ErrorClass, OverBudget, Spent};

/// A duration as people read it in a message: `1 s`, `1.5 s`, `600 s` (tenths, rounded).
#[derive(Debug, Clone, Copy)]
pub struct Seconds(pub Duration);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tenths = (self.0.as_millis() + 50) / 100;
        if tenths.is_multiple_of(10) {
            write!(f, "{} s", tenths / 10)
        } else {
            write!(f, "{}.{} s", tenths / 10, tenths % 10)
        }
    }
}

/// Why a provider call failed; every message names the provider and what was waited for.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("could not reach {provider} at {url}: {detail}")]
    Connect {
        provider: String,
        url: String,
        detail: String,
    },
    #[error("{provider} ({model}) sent nothing for {waited} while {what}")]
    Idle {
        provider: String,
        model: String,
        what: String,
        waited: Seconds,
    },
    #[error("{provider} ({model}) answered HTTP {status}: {message}{hint}")]
    Status {
        provider: String,
        model: String,
        status: u16,
        message: String,
        /// What to do about it, with a leading " — ".
        hint: String,
        retry_after: Option<Duration>,
        /// What the body says the failure is (quota, rate limit, overload, …).
        class: ErrorClass,
    },
    #[error("{provider} ({model}) reported an error in the middle of its answer: {message}{hint}")]
    Stream {
        provider: String,
        model: String,
        message: String,
        /// What to do about it, with a leading " — ".
        hint: String,
        class: ErrorClass,
    },
    #[error("{provider} ({model}) sent a malformed answer: {detail}")]
    Garbage {
        provider: String,
        model: String,
        detail: String,
    },
    #[error("{provider} ({model}) closed the connection before the answer was complete: {detail}")]
    Truncated {
        provider: String,
        model: String,
        detail: String,
    },
    #[error(
        "{provider} ({model}) sent {what}; the request was stopped (EXAI_MAX_ANSWER_BYTES sets \
         the limit)"
    )]
    TooLarge {
        provider: String,
        model: String,
        /// What was received: "more than 8 MiB (answer 7.9 MiB, reasoning 0.1 MiB) without finishing".
        what: String,
    },
    #[error(
        "{provider} ({model}) answered HTTP {status}, a redirect to {location}; exai follows no \
         redirects from providers (one would send the prompt and files there) — if that address \
         is right, make it the provider's URL"
    )]
    Redirect {
        provider: String,
        model: String,
        status: u16,
        /// Where it pointed, credentials masked.
        location: String,
    },
    #[error("no room before the call's deadline for {what}")]
    Deadline { what: String },
    #[error("{provider}'s limit shared by the replicas cannot be checked: {why}")]
    SharedLimit { provider: String, why: String },
    /// A daily budget is spent: the request was not sent.
    #[error("{0}")]
    OverBudget(OverBudget),
    #[error(
        "{provider} ({model}) still asked to search the web after {rounds} rounds of searching; exai \
         stops there so a call cannot loop — ask a narrower question, or without use_websearch"
    )]
    SearchLoop {
        provider: String,
        model: String,
        rounds: u32,
    },
}

impl ProviderError {
    /// Short machine-readable kind, stored in the call record.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Connect { .. } => "provider_unreachable",
            ProviderError::Idle { .. } => "provider_idle_timeout",
            ProviderError::Status { class, .. } | ProviderError::Stream { class, .. }
                if class.is_account_problem() =>
            {
                match class {
                    ErrorClass::Quota => "provider_quota_exhausted",
                    _ => "provider_account_blocked",
                }
            }
            ProviderError::Status {
                class: ErrorClass::Overloaded,
                ..
            } => "provider_overloaded",
            ProviderError::Status {
                class: ErrorClass::RateLimited,
                ..
            } => "provider_rate_limited",
            ProviderError::Status {
                class: ErrorClass::Refused,
                ..
            } => "provider_refused",
            ProviderError::Stream { .. } => "provider_stream_error",
            ProviderError::Status {
                status: 401 | 403, ..
            } => "provider_auth",
            ProviderError::Status { .. } => "provider_http_error",
            ProviderError::Garbage { .. } => "provider_garbage",
            ProviderError::Truncated { .. } => "provider_truncated",
            ProviderError::TooLarge { .. } => "provider_answer_too_large",
            ProviderError::Redirect { .. } => "provider_redirect",
            ProviderError::Deadline { .. } => "deadline",
            ProviderError::SharedLimit { .. } => "shared_limit_unavailable",
            ProviderError::SearchLoop { .. } => "provider_search_loop",
            ProviderError::OverBudget(_) => "budget_exceeded",
        }
    }

    /// A timeout rather than a failure.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            ProviderError::Idle { .. } | ProviderError::Deadline { .. }
        )
    }

    /// Worth another attempt at the same model: the request never got an answer (connect),
    /// or the provider said "later" (a rate limit, an overload, 5xx) — not when the account's
    /// balance or plan is exhausted, which no wait of seconds mends.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Connect { .. } => true,
            ProviderError::Status { class, .. } | ProviderError::Stream { class, .. } => {
                class.is_retryable()
            }
            _ => false,
        }
    }

    /// Worth trying a fallback model: this one is unavailable or out of retries, or its
    /// account is out (a fallback on another provider's account may still answer).
    pub fn wants_fallback(&self) -> bool {
        self.is_retryable()
            || self.account_problem()
            || matches!(self, ProviderError::Status { status: 404, .. })
            // This model refused; another may not.
            || matches!(
                self,
                ProviderError::Status { class: ErrorClass::Refused, .. }
                    | ProviderError::Stream { class: ErrorClass::Refused, .. }
            )
            || matches!(self, ProviderError::Idle { .. })
            // Another provider's budget may not be spent.
            || matches!(self, ProviderError::OverBudget(_))
    }

    /// The account behind the endpoint is out of balance or plan, or blocked: every model on
    /// that endpoint would be refused the same way.
    pub fn account_problem(&self) -> bool {
        matches!(
            self,
            ProviderError::Status { class, .. } | ProviderError::Stream { class, .. }
                if class.is_account_problem()
        )
    }
}

/// The number of attempts a failed call made, and the tokens it spent, carried next to its error.
#[derive(Debug, Clone)]
pub struct Failure {
    pub error: ProviderError,
    pub attempts: u32,
    pub spent: Spent,
    /// What the attempts billed, by provider (set by `Providers::chat`).
    pub cost: Cost,
    /// The last attempt streamed output before it failed: the provider billed it, and reported
    /// no usage to say how much.
    pub streamed: bool,
}

impl Failure {
    pub fn new(error: ProviderError, attempts: u32) -> Self {
        Self {
            error,
            attempts,
            spent: Spent::default(),
            cost: Cost::default(),
            streamed: false,
        }
    }
}
