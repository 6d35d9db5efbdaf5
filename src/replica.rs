//! This process as one replica of those sharing a store: registered at start with a heartbeat
//! every third of the lease, it marks interrupted the calls of replicas whose heartbeat stopped,
//! cancels its own calls that another replica was asked to cancel, and leaves at clean shutdown.
//!
//! Every store access goes through `Store::read` (a blocking thread): the Postgres client may
//! not run on the async workers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::calls::{Calls, CancelReason};
use crate::store::{ReplicaRow, Store, StoreError, StoreReader, now_ms, this_host};

/// Longest wait, at shutdown, to remove this replica's record.
const LEAVE_LIMIT: Duration = Duration::from_secs(3);
/// How often a replica with calls in flight looks for cancels other replicas left on them.
const CANCEL_POLL: Duration = Duration::from_millis(500);

/// This process's registration among the replicas, and its background work.
pub struct Replica {
    row: ReplicaRow,
    lease: Duration,
    /// Stops the heartbeat and the cancel watcher (at shutdown, before leaving).
    stop: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Replica {
    /// A new replica (a fresh UUIDv7) of this process, not yet registered.
    pub fn new(lease: Duration) -> Self {
        let started_at_ms = now_ms();
        Self {
            row: ReplicaRow {
                id: uuid::Uuid::now_v7().to_string(),
                host: this_host(),
                pid: i64::from(std::process::id()),
                started_at_ms,
                heartbeat_at_ms: started_at_ms,
                version: crate::VERSION.to_string(),
            },
            lease,
            stop: CancellationToken::new(),
            tasks: Mutex::new(Vec::new()),
        }
    }

    pub fn id(&self) -> &str {
        &self.row.id
    }

    /// Registers this replica (blocking: start-up, or a blocking thread).
    pub fn register(&self, store: &StoreReader) -> Result<(), StoreError> {
        store.heartbeat(&self.row)
    }

    /// Starts the heartbeat (which also judges the other replicas) and the cancel watcher; both
    /// run until [`Replica::leave`] or `shutdown`.
    pub fn run(self: &Arc<Self>, calls: &Arc<Calls>, shutdown: &CancellationToken) {
        let stop = self.stop.clone();
        let shutdown = shutdown.clone();
        crate::spawn::in_span(tracing::Span::none(), async move {
            shutdown.cancelled().await;
            stop.cancel();
        });
        let heartbeat = crate::spawn::in_span(
            tracing::Span::none(),
            self.clone().keep_alive(calls.store().clone()),
        );
        let watcher = crate::spawn::in_span(
            tracing::Span::none(),
            self.clone().watch_cancels(calls.clone()),
        );
        self.tasks_slot().extend([heartbeat, watcher]);
    }

    /// Clean shutdown, once this replica's calls have ended: stops the heartbeat and forgets
    /// the replica, so the others have nothing to wait out. Bounded: a store out of reach does
    /// not hold the shutdown (the others then forget this replica after its lease).
    pub async fn leave(&self, store: &Store) {
        self.stop.cancel();
        let tasks: Vec<_> = self.tasks_slot().drain(..).collect();
        let id = self.row.id.clone();
        let leaving = async move {
            for task in tasks {
                let _ = task.await;
            }
            store.read(move |store| store.remove_replica(&id)).await
        };
        let why = match tokio::time::timeout(LEAVE_LIMIT, leaving).await {
            Ok(Ok(())) => {
                tracing::info!(replica = %self.row.id, "replica left the store");
                return;
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("the store did not answer within {LEAVE_LIMIT:?}"),
        };
        tracing::warn!(%why, "could not remove this replica's record; the others forget it after its lease");
    }

    fn tasks_slot(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Renews the heartbeat every third of the lease; once it has gone a whole lease without a
    /// gap, each beat also interrupts the calls of replicas whose heartbeat is older than the
    /// lease. The gap is told by the wall clock (heartbeats are wall-clock times): a replica
    /// that was asleep or cut off from the store gives the others a lease to renew theirs first.
    async fn keep_alive(self: Arc<Self>, store: Store) {
        let period = self.lease / 3;
        let (lease_ms, gap_ms) = (millis(self.lease), 2 * millis(period));
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut steady_since_ms, mut last_beat_ms): (Option<i64>, Option<i64>) = (None, None);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = self.stop.cancelled() => return,
            }
            let judge = steady_since_ms.is_some_and(|since| now_ms() - since >= lease_ms);
            let (row, lease) = (
                ReplicaRow {
                    heartbeat_at_ms: now_ms(),
                    ..self.row.clone()
                },
                self.lease,
            );
            let beat = store
                .read(move |store| {
                    store.heartbeat(&row)?;
                    if judge {
                        store.interrupt_calls_of_lost_replicas(&row.id, lease)
                    } else {
                        Ok(0)
                    }
                })
                .await;
            match beat {
                Ok(interrupted) => {
                    let now = now_ms();
                    if last_beat_ms.is_none_or(|last| now - last > gap_ms) {
                        steady_since_ms = Some(now);
                    }
                    last_beat_ms = Some(now);
                    if std::mem::take(&mut failing) {
                        tracing::info!("replica heartbeat renewed: the store answers again");
                    }
                    if interrupted > 0 {
                        tracing::warn!(
                            calls = interrupted,
                            "calls of replicas that stopped answering marked interrupted"
                        );
                    }
                }
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "replica heartbeat failed; the other replicas will \
                        interrupt this one's calls if the store stays out of reach for the lease");
                }
                Err(_) => {}
            }
        }
    }

    /// Cancels the calls of this replica that another replica left a cancel on (looked for
    /// only while calls are in flight).
    async fn watch_cancels(self: Arc<Self>, calls: Arc<Calls>) {
        let mut every = tokio::time::interval(CANCEL_POLL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = self.stop.cancelled() => return,
            }
            if calls.in_flight_count() == 0 {
                continue;
            }
            let me = self.row.id.clone();
            let requests = match calls
                .store()
                .read(move |store| store.cancel_requests(&me))
                .await
            {
                Ok(requests) => requests,
                Err(error) => {
                    tracing::debug!(%error, "cannot look for cancels left by other replicas");
                    continue;
                }
            };
            for (id, reason) in requests {
                let Some(call) = calls.get(&id) else { continue };
                if !call.is_cancelled() {
                    tracing::info!(call_id = %id, %reason, "cancelled from another replica");
                    call.cancel(CancelReason::Client(Some(reason)));
                }
            }
        }
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
