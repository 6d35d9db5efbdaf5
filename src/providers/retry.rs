//! Retries: connect errors, rate limits, overloads and 5xx (never an exhausted balance or
//! plan: see `errors.rs`), with exponential backoff and jitter, honouring `Retry-After`
//! (capped) — never past the deadline, never once content has streamed.

use std::future::Future;
use std::time::{Duration, Instant};

use super::{CallObserver, ChatResponse, Failure, ProviderError};
use crate::config::RetryConfig;
use crate::metrics::{self, RequestStatus};

/// What one attempt reports besides its answer or error.
pub struct AttemptError {
    pub error: ProviderError,
    /// Content already reached the caller: repeating the request would duplicate it.
    pub content_started: bool,
}

/// Runs `attempt(n)` until it succeeds, fails for good, or the policy or deadline says stop.
pub async fn with_retries<F, Fut>(
    provider: &str,
    policy: &RetryConfig,
    deadline: Instant,
    observer: &dyn CallObserver,
    mut attempt: F,
) -> Result<ChatResponse, Failure>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<ChatResponse, AttemptError>>,
{
    let mut n = 1;
    loop {
        // The error is gone before the wait: what a call's future holds for the wait is its
        // own state, not the last error's.
        let wait = match attempt(n).await {
            Ok(mut answer) => {
                answer.attempts = n;
                return Ok(answer);
            }
            Err(AttemptError {
                error,
                content_started,
            }) => {
                let give_up = !error.is_retryable() || content_started || n >= policy.max_attempts;
                let wait = delay(policy, n, retry_after(&error));
                let too_late = Instant::now() + wait >= deadline;
                if give_up || too_late {
                    if error.is_retryable() && !give_up {
                        tracing::warn!(attempts = n, %error, "no time left before the deadline for another attempt");
                    }
                    return Err(Failure {
                        streamed: content_started,
                        ..Failure::new(error, n)
                    });
                }
                metrics::provider_retry(&metrics::name(provider), retried_status(&error));
                tracing::warn!(attempt = n, wait_ms = wait.as_millis() as u64, %error, "retrying provider request");
                observer.stage(format!(
                    "retrying in {:.1} s after: {} (attempt {} of {})",
                    wait.as_secs_f64(),
                    short(&error),
                    n + 1,
                    policy.max_attempts
                ));
                wait
            }
        };
        tokio::time::sleep(wait).await;
        n += 1;
    }
}

fn retry_after(error: &ProviderError) -> Option<Duration> {
    match error {
        ProviderError::Status { retry_after, .. } => *retry_after,
        _ => None,
    }
}

/// The status a retry is counted under in `/metrics`.
fn retried_status(error: &ProviderError) -> RequestStatus {
    match error {
        ProviderError::Status { status, .. } => RequestStatus::Http(*status),
        ProviderError::Connect { .. } => RequestStatus::Connect,
        ProviderError::Idle { .. } => RequestStatus::Timeout,
        other => RequestStatus::Unusable(other.kind()),
    }
}

fn short(error: &ProviderError) -> String {
    match error {
        ProviderError::Status { status, .. } => format!("HTTP {status}"),
        ProviderError::Connect { .. } => "connection failed".into(),
        other => other.kind().into(),
    }
}

/// Backoff for retry `n` (1-based): `Retry-After` when given (capped), else exponential with full jitter.
pub fn delay(policy: &RetryConfig, n: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(after) = retry_after {
        return after.min(policy.max_retry_after);
    }
    let exp = policy
        .base_delay
        .saturating_mul(1 << (n - 1).min(16))
        .min(policy.max_delay);
    // Full jitter: anywhere between half and all of the exponential step.
    let mut bytes = [0u8; 4];
    let fraction = match getrandom::fill(&mut bytes) {
        Ok(()) => f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX),
        Err(_) => 1.0,
    };
    exp.mul_f64(0.5 + fraction / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryConfig {
        RetryConfig {
            max_attempts: 4,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            max_retry_after: Duration::from_secs(5),
        }
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let p = policy();
        for n in 1..10 {
            let d = delay(&p, n, None);
            let step = Duration::from_millis(100 * (1 << (n - 1))).min(Duration::from_millis(1000));
            assert!(
                d >= step / 2 && d <= step,
                "attempt {n}: {d:?} not within {step:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let p = policy();
        assert_eq!(
            delay(&p, 1, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            delay(&p, 1, Some(Duration::from_secs(60))),
            Duration::from_secs(5)
        );
    }
}
