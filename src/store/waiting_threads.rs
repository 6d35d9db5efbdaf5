//! Conversation threads whose save the database did not take (an outage, a lock held too long):
//! kept in memory, the newest save of each and bounded, and saved again by the writer once the
//! database takes writes, so a conversation outlives an outage of its store.
//!
//! A save is queued without waiting for its commit (a chat does not wait for its thread), so
//! only the writer sees it fail: it keeps the save here. The store's upsert never lets an older
//! save replace a newer one, so a save tried again late cannot undo a turn another replica added
//! meanwhile.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::ThreadRow;

/// The most threads kept, and the most bytes of their turns: past either, the oldest is given up.
const MOST_THREADS: usize = 1_000;
const MOST_BYTES: usize = 64 * 1024 * 1024;

/// The wait before a try, doubling after each failed one up to the longest.
const FIRST_WAIT: Duration = Duration::from_millis(500);
const LONGEST_WAIT: Duration = Duration::from_secs(5);
/// The longest a thread's save is tried (one the store keeps refusing while it takes other
/// writes would otherwise be tried for ever).
const LONGEST_KEPT: Duration = Duration::from_secs(24 * 3600);

/// One thread's newest save not yet taken by the store.
#[derive(Debug, Clone)]
pub(super) struct ThreadSave {
    pub thread: ThreadRow,
    /// The first prompt in the form searches match.
    pub search_text: Option<String>,
}

impl ThreadSave {
    fn bytes(&self) -> usize {
        self.thread.turns.len()
    }
}

/// The saves waiting, by thread id; shared by the store (lookups, shutdown) and its writer.
#[derive(Default)]
pub(crate) struct WaitingThreads {
    inner: Mutex<Inner>,
    /// Signalled when the last one waiting was saved.
    all_saved: tokio::sync::Notify,
}

#[derive(Default)]
struct Inner {
    saves: HashMap<String, Kept>,
    bytes: usize,
    /// When the writer tries them again (none while none waits).
    next_try: Option<Instant>,
    /// The wait after the next failed try.
    wait: Duration,
}

struct Kept {
    save: ThreadSave,
    /// Since when this thread has had a save waiting.
    since: Instant,
}

impl WaitingThreads {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many threads have a save waiting.
    pub fn count(&self) -> usize {
        self.lock().saves.len()
    }

    /// The save of thread `id` that waits, if one does: newer than what the store holds.
    pub fn find(&self, id: &str) -> Option<ThreadRow> {
        self.lock()
            .saves
            .get(id)
            .map(|kept| kept.save.thread.clone())
    }

    /// Whether `save` is the one waiting for its thread (a try again of it).
    pub(super) fn holds(&self, save: &ThreadSave) -> bool {
        (self.lock().saves.get(&save.thread.id))
            .is_some_and(|kept| kept.save.thread.updated_at_ms == save.thread.updated_at_ms)
    }

    /// Keeps `save`, which the store did not take, unless a newer save of its thread waits.
    pub(super) fn keep(&self, save: ThreadSave) {
        let mut inner = self.lock();
        let id = save.thread.id.clone();
        let since = match inner.saves.get(&id) {
            Some(kept) if kept.save.thread.updated_at_ms > save.thread.updated_at_ms => return,
            Some(kept) => kept.since,
            None => Instant::now(),
        };
        inner.bytes += save.bytes();
        if let Some(replaced) = inner.saves.insert(id, Kept { save, since }) {
            inner.bytes -= replaced.save.bytes();
        }
        while inner.saves.len() > MOST_THREADS || inner.bytes > MOST_BYTES {
            let Some(oldest) = (inner.saves.iter())
                .min_by_key(|(_, kept)| kept.since)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            if let Some(given_up) = inner.saves.remove(&oldest) {
                inner.bytes -= given_up.save.bytes();
                tracing::error!(thread_id = %oldest, waited_s = given_up.since.elapsed().as_secs(),
                    "a conversation thread's save is given up, unwritten: the threads waiting \
                     for the store are at their bound");
            }
        }
        if inner.next_try.is_none() {
            inner.wait = FIRST_WAIT;
            inner.next_try = Some(Instant::now() + FIRST_WAIT);
        }
    }

    /// The store took a save of thread `id` as of `updated_at_ms` (or found a newer one there):
    /// a waiting save no newer than it is done.
    pub(super) fn saved(&self, id: &str, updated_at_ms: i64) {
        let mut inner = self.lock();
        let done = (inner.saves.get(id))
            .is_some_and(|kept| kept.save.thread.updated_at_ms <= updated_at_ms);
        if !done {
            return;
        }
        if let Some(kept) = inner.saves.remove(id) {
            inner.bytes -= kept.save.bytes();
            tracing::info!(thread_id = %id, late_s = kept.since.elapsed().as_secs(),
                "a conversation thread saved late, once the store took it");
        }
        if inner.saves.is_empty() {
            inner.next_try = None;
            drop(inner);
            self.all_saved.notify_waiters();
        }
    }

    /// When the writer should try the saves waiting again.
    pub(super) fn next_try(&self) -> Option<Instant> {
        self.lock().next_try
    }

    /// The saves to try now, if their time has come (the next try is then set further off).
    pub(super) fn due(&self, now: Instant) -> Vec<ThreadSave> {
        let mut inner = self.lock();
        if inner.next_try.is_none_or(|at| at > now) {
            return Vec::new();
        }
        inner.next_try = Some(now + inner.wait);
        inner.wait = (inner.wait * 2).min(LONGEST_WAIT);
        let expired: Vec<String> = (inner.saves.iter())
            .filter(|(_, kept)| kept.since.elapsed() > LONGEST_KEPT)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some(given_up) = inner.saves.remove(&id) {
                inner.bytes -= given_up.save.bytes();
                tracing::error!(thread_id = %id,
                    "a conversation thread's save is given up, unwritten: it has waited a day");
            }
        }
        inner.saves.values().map(|kept| kept.save.clone()).collect()
    }

    /// Makes the saves waiting due now (a stopping store tries them once more at once).
    pub(super) fn try_now(&self) {
        let mut inner = self.lock();
        if inner.next_try.is_some() {
            inner.next_try = Some(Instant::now());
        }
    }

    /// Waits up to `limit` for every save waiting to be taken; then names each one that was not
    /// (it is lost with this process).
    pub async fn settle(&self, limit: Duration) {
        let until = tokio::time::Instant::now() + limit;
        loop {
            let saved = self.all_saved.notified();
            if self.count() == 0 {
                return;
            }
            if tokio::time::timeout_at(until, saved).await.is_err() {
                break;
            }
        }
        for id in self.lock().saves.keys() {
            tracing::error!(thread_id = %id,
                "exai stops with this conversation thread's latest save unwritten: the store \
                 did not take it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn save(id: &str, updated_at_ms: i64, turns: &str) -> ThreadSave {
        ThreadSave {
            thread: ThreadRow {
                id: id.to_string(),
                created_at_ms: 1,
                updated_at_ms,
                expires_at_ms: updated_at_ms + 1000,
                turns: turns.to_string(),
                user_name: None,
                first_prompt: None,
                tools: "chat".into(),
                turn_count: 1,
            },
            search_text: None,
        }
    }

    #[test]
    fn the_newest_save_of_a_thread_is_kept_and_an_older_one_never_replaces_it() {
        let waiting = WaitingThreads::default();
        waiting.keep(save("t", 20, "[2]"));
        waiting.keep(save("t", 10, "[1]"));
        assert_eq!(waiting.find("t").map(|t| t.turns).as_deref(), Some("[2]"));
        waiting.keep(save("t", 30, "[3]"));
        assert_eq!(waiting.count(), 1);
        // The store took an older save (a try from before the newest was kept): still waiting.
        waiting.saved("t", 20);
        assert_eq!(waiting.find("t").map(|t| t.turns).as_deref(), Some("[3]"));
        waiting.saved("t", 30);
        assert_eq!(waiting.count(), 0);
        assert_eq!(waiting.next_try(), None);
    }

    #[test]
    fn saves_are_tried_after_a_growing_wait() {
        let waiting = WaitingThreads::default();
        let start = Instant::now();
        waiting.keep(save("a", 1, "[]"));
        assert!(waiting.due(start).is_empty(), "tried before its first wait");
        let first = waiting.next_try().unwrap_or(start);
        assert_eq!(waiting.due(first).len(), 1);
        let second = waiting.next_try().unwrap_or(first);
        assert_eq!(second - first, FIRST_WAIT);
        assert_eq!(waiting.due(second).len(), 1);
        let third = waiting.next_try().unwrap_or(second);
        assert_eq!(third - second, FIRST_WAIT * 2);
        waiting.try_now();
        assert_eq!(waiting.due(Instant::now()).len(), 1);
    }

    #[test]
    fn the_saves_kept_are_bounded_the_oldest_given_up_first() {
        let waiting = WaitingThreads::default();
        let quarter = "x".repeat(MOST_BYTES / 4 + 1);
        for id in ["1", "2", "3", "4", "5"] {
            waiting.keep(save(id, 1, &quarter));
        }
        assert_eq!(waiting.count(), 3);
        assert!(waiting.find("1").is_none() && waiting.find("2").is_none());
        assert!(waiting.find("5").is_some());
        for id in 0..MOST_THREADS + 10 {
            waiting.keep(save(&format!("small-{id}"), 1, "[]"));
        }
        assert_eq!(waiting.count(), MOST_THREADS);
    }
}
