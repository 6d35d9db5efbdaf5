//! Per-provider concurrency limits that queue in order and say where a call stands in line.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{CallObserver, ProviderError};

/// How often a waiting call refreshes its queue position.
const POSITION_REFRESH: Duration = Duration::from_millis(250);
/// Places counted ahead of a caller: beyond this the line says "over N ahead". Counting is then
/// bounded however long the line, and the far end of it sends no progress at each move.
const MOST_COUNTED_AHEAD: usize = 100;

/// A first-come, first-served limit on requests in flight to one provider.
pub struct ConcurrencyLimit {
    slots: Arc<Semaphore>,
    /// How many requests may be in flight at once.
    max: usize,
    /// The tickets of the callers waiting now, in arrival order: a caller that stops waiting
    /// (served, out of time, or cancelled) leaves, so positions count only live waiters.
    waiting: Mutex<BTreeSet<u64>>,
    next_ticket: AtomicU64,
}

/// One provider's line at a moment (the page's queues).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct QueueFigures {
    pub limit: usize,
    pub in_flight: usize,
    pub waiting: usize,
}

/// A caller's place in line; dropping it (however the wait ended) leaves the line.
struct Place<'a> {
    limit: &'a ConcurrencyLimit,
    ticket: u64,
}

impl<'a> Place<'a> {
    fn join(limit: &'a ConcurrencyLimit) -> Self {
        let ticket = limit.next_ticket.fetch_add(1, Ordering::Relaxed);
        limit.line().insert(ticket);
        Self { limit, ticket }
    }

    /// Callers still waiting that came first, counted up to one past [`MOST_COUNTED_AHEAD`].
    fn ahead(&self) -> usize {
        self.limit
            .line()
            .range(..self.ticket)
            .take(MOST_COUNTED_AHEAD + 1)
            .count()
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.limit.line().remove(&self.ticket);
    }
}

impl ConcurrencyLimit {
    pub fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max.max(1))),
            max: max.max(1),
            waiting: Mutex::new(BTreeSet::new()),
            next_ticket: AtomicU64::new(0),
        }
    }

    /// Where the line stands now: its size, requests in flight, callers waiting.
    pub fn figures(&self) -> QueueFigures {
        QueueFigures {
            limit: self.max,
            in_flight: self.max.saturating_sub(self.slots.available_permits()),
            waiting: self.line().len(),
        }
    }

    fn line(&self) -> MutexGuard<'_, BTreeSet<u64>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
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
        let place = Place::join(self);
        let acquire = self.slots.clone().acquire_owned();
        tokio::pin!(acquire);
        let until = tokio::time::Instant::from_std(deadline);
        let mut refresh = tokio::time::interval(POSITION_REFRESH);
        let mut shown = None;
        loop {
            tokio::select! {
                permit = &mut acquire => return permit.map_err(|_| ProviderError::Deadline { what: format!("a slot for {provider} (limit closed)") }),
                _ = tokio::time::sleep_until(until) => return Err(ProviderError::Deadline {
                    what: format!("a free slot for {provider} (still queued)"),
                }),
                _ = refresh.tick() => {
                    let ahead = place.ahead();
                    if shown != Some(ahead) {
                        shown = Some(ahead);
                        observer.stage(if ahead > MOST_COUNTED_AHEAD {
                            format!("queued · over {MOST_COUNTED_AHEAD} ahead for {provider}")
                        } else {
                            format!("queued · {ahead} ahead for {provider}")
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remembers the stages it was told.
    #[derive(Default)]
    struct Stages(Mutex<Vec<String>>);

    impl Stages {
        fn last(&self) -> Option<String> {
            self.0.lock().unwrap().last().cloned()
        }
    }

    impl CallObserver for Stages {
        fn stage(&self, stage: String) {
            self.0.lock().unwrap().push(stage);
        }
        fn model(&self, _: &str, _: &str) {}
        fn tokens(&self, _: u64, _: bool) {}
    }

    async fn shows(stages: &Stages, expected: &str) {
        let waited = tokio::time::timeout(Duration::from_secs(5), async {
            while stages.last().as_deref() != Some(expected) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "expected {expected:?}, last stage {:?}",
            stages.last()
        );
    }

    /// A caller queued at `limit` in its own task, with its stages.
    fn waiter(
        limit: &Arc<ConcurrencyLimit>,
        deadline: Instant,
    ) -> (tokio::task::JoinHandle<bool>, Arc<Stages>) {
        let stages = Arc::new(Stages::default());
        let (limit, seen) = (limit.clone(), stages.clone());
        let task = crate::spawn::in_current_span(async move {
            limit.acquire("p", deadline, &*seen).await.is_ok()
        });
        (task, stages)
    }

    #[tokio::test]
    async fn cancelled_waiters_leave_the_line_and_positions_count_only_live_ones() {
        let limit = Arc::new(ConcurrencyLimit::new(1));
        let deadline = Instant::now() + Duration::from_secs(60);
        let held = limit
            .acquire("p", deadline, &Stages::default())
            .await
            .unwrap();
        let (first, first_stages) = waiter(&limit, deadline);
        shows(&first_stages, "queued · 0 ahead for p").await;
        let (second, second_stages) = waiter(&limit, deadline);
        shows(&second_stages, "queued · 1 ahead for p").await;
        let (third, third_stages) = waiter(&limit, deadline);
        shows(&third_stages, "queued · 2 ahead for p").await;

        // The two ahead are cancelled (their futures dropped, as a cancelled call's are).
        first.abort();
        second.abort();
        shows(&third_stages, "queued · 0 ahead for p").await;
        let (fourth, fourth_stages) = waiter(&limit, deadline);
        shows(&fourth_stages, "queued · 1 ahead for p").await;

        drop(held);
        assert!(third.await.unwrap(), "the third caller is served next");
        assert!(fourth.await.unwrap());
        assert!(limit.line().is_empty(), "nobody is left in line");
    }

    #[tokio::test]
    async fn a_caller_out_of_time_leaves_the_line() {
        let limit = Arc::new(ConcurrencyLimit::new(1));
        let held = limit
            .acquire(
                "p",
                Instant::now() + Duration::from_secs(60),
                &Stages::default(),
            )
            .await
            .unwrap();
        let (late, _) = waiter(&limit, Instant::now() + Duration::from_millis(50));
        assert!(!late.await.unwrap(), "the deadline ends the wait");
        let (next, next_stages) = waiter(&limit, Instant::now() + Duration::from_secs(60));
        shows(&next_stages, "queued · 0 ahead for p").await;
        drop(held);
        assert!(next.await.unwrap());
    }

    #[tokio::test]
    async fn a_long_line_counts_only_so_far_ahead() {
        let limit = Arc::new(ConcurrencyLimit::new(1));
        let deadline = Instant::now() + Duration::from_secs(60);
        let _held = limit
            .acquire("p", deadline, &Stages::default())
            .await
            .unwrap();
        // Far more callers than are counted: the last is told it is far back, and a place is
        // counted in bounded steps however long the line.
        let mut line = Vec::new();
        for _ in 0..MOST_COUNTED_AHEAD + 20 {
            line.push(Place::join(&limit));
        }
        let last = Place::join(&limit);
        assert_eq!(last.ahead(), MOST_COUNTED_AHEAD + 1);
        let (waiting, stages) = waiter(&limit, deadline);
        shows(
            &stages,
            &format!("queued · over {MOST_COUNTED_AHEAD} ahead for p"),
        )
        .await;
        waiting.abort();
        drop(line);
        assert_eq!(last.ahead(), 0);
    }
}
