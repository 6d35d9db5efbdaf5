//! Concurrency limits shared by every replica on one Postgres database: a slot of a limit is a
//! Postgres advisory lock held by the replica that uses it.
//!
//! Advisory locks belong to the connection that took them, so a replica that dies (or loses its
//! connection) gives its slots back without anyone cleaning up after it. One connection per
//! replica holds them all, on a thread of its own; callers ask it over a channel.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::postgres::Link;
use super::{BackendError, StoreError};

/// How often a caller that found every slot taken tries again.
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// Why no shared slot was had.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error(
        "no free slot of the shared limit for {name} (all {limit} in use across replicas) before the deadline"
    )]
    Deadline { name: String, limit: usize },
    #[error("the shared limit for {name} cannot be checked: {why}")]
    Unavailable { name: String, why: String },
}

enum Ask {
    /// Take a free slot of `limit` under `key`, if there is one. The slot goes back as a
    /// [`SharedSlot`] made by the holder (with `asks`), so one whose asker stopped waiting (a
    /// cancel, a deadline) is given back when the answer is dropped, never held for nobody.
    Take {
        key: i32,
        limit: usize,
        asks: mpsc::UnboundedSender<Ask>,
        reply: oneshot::Sender<Result<Option<SharedSlot>, String>>,
    },
    Give {
        key: i32,
        slot: i32,
    },
}

/// This replica's holder of shared slots; cheap to clone.
#[derive(Clone)]
pub struct SharedSlots {
    // Unbounded in type, bounded in fact: one `Take` per caller waiting, one `Give` per slot held.
    asks: mpsc::UnboundedSender<Ask>,
}

/// A slot held; given back when dropped.
pub struct SharedSlot {
    asks: mpsc::UnboundedSender<Ask>,
    key: i32,
    slot: i32,
}

impl Drop for SharedSlot {
    fn drop(&mut self) {
        let _ = self.asks.send(Ask::Give {
            key: self.key,
            slot: self.slot,
        });
    }
}

impl SharedSlots {
    /// Starts the holder on its own thread, with its own connection to the database at `url`.
    pub fn start(url: &str) -> Result<Self, StoreError> {
        let config =
            super::postgres::connection_config(url).map_err(|source| StoreError::Database {
                store: super::postgres::describe(url),
                source: BackendError::Postgres(source),
            })?;
        let (asks, inbox) = mpsc::unbounded_channel();
        let described = super::postgres::describe(url);
        std::thread::Builder::new()
            .name("exai-shared-slots".into())
            .spawn(move || Holder::new(config, described).run(inbox))
            .map_err(|source| StoreError::Io {
                path: "exai-shared-slots".into(),
                source,
            })?;
        Ok(Self { asks })
    }

    /// Waits for a free slot of the `limit` named `name` until `deadline`, calling `waiting`
    /// once when it has to wait.
    pub async fn acquire(
        &self,
        name: &str,
        limit: usize,
        deadline: Instant,
        waiting: impl FnOnce(),
    ) -> Result<SharedSlot, SlotError> {
        let key = key_of(name);
        let mut waiting = Some(waiting);
        loop {
            let (reply, answer) = oneshot::channel();
            let unavailable = |why: String| SlotError::Unavailable {
                name: name.to_string(),
                why,
            };
            let asks = self.asks.clone();
            self.asks
                .send(Ask::Take {
                    key,
                    limit,
                    asks,
                    reply,
                })
                .map_err(|_| unavailable("its holder has stopped".into()))?;
            let taken = tokio::time::timeout_at(deadline.into(), answer)
                .await
                .map_err(|_| SlotError::Deadline {
                    name: name.to_string(),
                    limit,
                })?
                .map_err(|_| unavailable("its holder has stopped".into()))?
                .map_err(unavailable)?;
            if let Some(slot) = taken {
                return Ok(slot);
            }
            if let Some(waiting) = waiting.take() {
                waiting();
            }
            if Instant::now() + RETRY_EVERY >= deadline {
                return Err(SlotError::Deadline {
                    name: name.to_string(),
                    limit,
                });
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }
}

/// The lock key of a limit's name: stable across replicas and builds (FNV-1a).
fn key_of(name: &str) -> i32 {
    let hash = name.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    i32::from_ne_bytes(hash.to_ne_bytes())
}

/// The thread that holds the locks, on one connection.
struct Holder {
    link: Link,
    described: String,
    /// The slots held now, so a connection that broke can be reported with what it lost.
    held: HashSet<(i32, i32)>,
}

impl Holder {
    fn new(config: tokio_postgres::Config, described: String) -> Self {
        Self {
            link: Link::new(config),
            described,
            held: HashSet::new(),
        }
    }

    fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Ask>) {
        while let Some(ask) = inbox.blocking_recv() {
            match ask {
                Ask::Take {
                    key,
                    limit,
                    asks,
                    reply,
                } => {
                    let taken = self.take(key, limit).map_err(|e| e.to_string());
                    let slot = taken.map(|slot| slot.map(|slot| SharedSlot { asks, key, slot }));
                    // Nobody waits any more: the slot in the answer is dropped here, and
                    // its `Give` comes next.
                    let _ = reply.send(slot);
                }
                Ask::Give { key, slot } => self.give(key, slot),
            }
        }
    }

    /// Asks `sql` of the lock `(key, slot)`. A connection that failed or hung is dropped, and
    /// the server gives back whatever locks it held.
    fn lock_query(&mut self, sql: &str, key: i32, slot: i32) -> Result<bool, BackendError> {
        let (held, described) = (&mut self.held, &self.described);
        self.link.with(|c, fresh| {
            if fresh && !held.is_empty() {
                tracing::warn!(store = %described, slots = held.len(),
                    "the connection holding shared limit slots broke: its slots were given back; calls holding them go on");
                held.clear();
            }
            c.wait(c.client().query_one(sql, &[&key, &slot]))
                .map(|row| row.get::<_, bool>(0))
        })
    }

    fn take(&mut self, key: i32, limit: usize) -> Result<Option<i32>, BackendError> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        for slot in 0..limit {
            if self.held.contains(&(key, slot)) {
                continue;
            }
            if self.lock_query("SELECT pg_try_advisory_lock($1, $2)", key, slot)? {
                self.held.insert((key, slot));
                return Ok(Some(slot));
            }
        }
        Ok(None)
    }

    fn give(&mut self, key: i32, slot: i32) {
        if !self.held.remove(&(key, slot)) {
            return;
        }
        if let Err(error) = self.lock_query("SELECT pg_advisory_unlock($1, $2)", key, slot) {
            // The connection is gone, and the lock with it.
            tracing::debug!(%error, "a shared slot was given back by a broken connection");
        }
    }
}

impl std::fmt::Debug for SharedSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedSlots")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slot taken while its asker stopped waiting (its call cancelled, or out of time) goes
    /// back: before, the holder kept it for nobody until its connection broke.
    #[tokio::test]
    async fn a_slot_taken_for_an_asker_that_stopped_waiting_is_given_back() {
        let super::super::StoreLocation::Postgres(url) = super::super::tests::test_location()
        else {
            eprintln!("skipped: shared slots are Postgres advisory locks");
            return;
        };
        let slots = SharedSlots::start(&url).unwrap();
        let name = format!("leak-{}", uuid::Uuid::now_v7());
        let (reply, answer) = oneshot::channel();
        drop(answer);
        slots
            .asks
            .send(Ask::Take {
                key: key_of(&name),
                limit: 1,
                asks: slots.asks.clone(),
                reply,
            })
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let slot = slots.acquire(&name, 1, deadline, || {}).await;
        assert!(slot.is_ok(), "the limit's one slot was kept for nobody");
    }

    #[test]
    fn a_name_has_the_same_key_everywhere() {
        assert_eq!(key_of("glm"), key_of("glm"));
        assert_ne!(key_of("glm"), key_of("kimi"));
        assert_eq!(
            key_of(""),
            i32::from_ne_bytes(0x811c_9dc5_u32.to_ne_bytes())
        );
    }
}
