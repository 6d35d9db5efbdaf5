//! Per-provider concurrency limits that queue in order and say where a call stands in line.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{CallObserver, ProviderError};

/// How often a waiting call refreshes its queue position.
const POSITION_REFRESH: Duration = Duration::from_millis(250);

/// A first-come, first-served limit on requests in flight to one provider.
pub struct ConcurrencyLimit {
    slots: Arc<Semaphore>,
    /// Tickets handed out to callers that had to wait, and tickets served.
    issued: AtomicU64,
    served: AtomicU64,
}

impl ConcurrencyLimit {
    pub fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max.max(1))),
            issued: AtomicU64::new(0),
            served: AtomicU64::new(0),
        }
    }

    /// Waits for a slot (tokio's semaphore is fair: first come, first served), reporting
    /// "queued · N ahead for PROVIDER" meanwhile; gives up at the deadline.
    pub async fn acquire(
        &self,
        provider: &str,
        deadline: Instant,
        observer: &dyn CallObserver,
    ) -> Result<OwnedSemaphorePermit, ProviderError> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let ticket = self.issued.fetch_add(1, Ordering::SeqCst);
        let acquire = self.slots.clone().acquire_owned();
        tokio::pin!(acquire);
        let until = tokio::time::Instant::from_std(deadline);
        let mut refresh = tokio::time::interval(POSITION_REFRESH);
        let mut shown = None;
        let result = loop {
            tokio::select! {
                permit = &mut acquire => break permit.map_err(|_| ProviderError::Deadline { what: format!("a slot for {provider} (limit closed)") }),
                _ = tokio::time::sleep_until(until) => break Err(ProviderError::Deadline {
                    what: format!("a free slot for {provider} (still queued)"),
                }),
                _ = refresh.tick() => {
                    let ahead = ticket.saturating_sub(self.served.load(Ordering::SeqCst));
                    if shown != Some(ahead) {
                        shown = Some(ahead);
                        observer.stage(format!("queued · {ahead} ahead for {provider}"));
                    }
                }
            }
        };
        self.served.fetch_add(1, Ordering::SeqCst);
        result
    }
}
