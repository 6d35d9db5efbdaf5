//! Records of calls that ended while the store could not take them: kept in memory (bounded)
//! and written once the store answers again, so an outage of the database costs a call's record
//! a delay, not the record.
//!
//! A write that timed out may have landed all the same, so a late record is written by what the
//! store holds now: nothing (insert it, then its end), this call's record (write its end, unless
//! that landed too — a second end would count its cost twice), or another call's record under the
//! same id (a proposed id already taken: the call is recorded under a fresh one).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::{CallRow, CallState, Delivery, FinishedCall, NewCall, Store, StoreError};

/// The most records kept, and the most bytes of their text: past either, the oldest is given up.
const MOST_RECORDS: usize = 10_000;
const MOST_BYTES: usize = 64 * 1024 * 1024;

/// The wait after a failed try, doubling from the first up to the longest.
const FIRST_WAIT: Duration = Duration::from_millis(500);
const LONGEST_WAIT: Duration = Duration::from_secs(5);

/// How long a stopping exai gives the store to take the records waiting (those it does not
/// take are named in the log).
pub(super) const AT_EXIT: Duration = Duration::from_secs(5);

/// The longest a record is tried: one the store keeps refusing while it takes others goes to
/// the back of the line each time, and is given up in the end.
const LONGEST_KEPT: Duration = Duration::from_secs(24 * 3600);

/// A call's record and end, not yet written.
pub(super) struct Late {
    record: Arc<NewCall>,
    done: FinishedCall,
    /// How the answer went to the client, as noted while the record waited (it replaces the
    /// end's own note: the answer went out after the end was recorded).
    delivery: Mutex<Option<String>>,
    /// Since when it has waited.
    since: Instant,
}

impl Late {
    pub fn new(record: Arc<NewCall>, done: FinishedCall) -> Self {
        Self {
            record,
            done,
            delivery: Mutex::new(None),
            since: Instant::now(),
        }
    }

    /// The call's end as it will be written, with the delivery noted since.
    fn done(&self) -> FinishedCall {
        let mut done = self.done.clone();
        if let Some(delivery) = self.noted_delivery() {
            done.delivery = Some(delivery);
        }
        done
    }

    fn noted_delivery(&self) -> Option<String> {
        self.delivery
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Notes how the answer went to the client. As in the store, once an answer reached a
    /// client a later note about another path does not undo that.
    fn note_delivery(&self, delivery: &Delivery) {
        let mut noted = self.delivery.lock().unwrap_or_else(|p| p.into_inner());
        let now = noted.as_ref().or(self.done.delivery.as_ref());
        if !now.is_some_and(|d| d.starts_with("delivered")) {
            *noted = Some(delivery.to_string());
        }
    }

    /// Roughly what keeping it costs: its texts.
    fn bytes(&self) -> usize {
        let texts = [
            &self.done.result,
            &self.done.reasoning,
            &self.done.error_message,
            &self.done.last_progress,
        ];
        self.record.arguments.len()
            + texts
                .iter()
                .map(|t| t.as_ref().map_or(0, String::len))
                .sum::<usize>()
    }

    fn id(&self) -> &str {
        &self.record.id
    }

    /// The row the store will hold once it takes this record.
    fn row(&self) -> CallRow {
        let (call, done) = (&*self.record, &self.done());
        CallRow {
            id: call.id.clone(),
            session_id: call.session_id.clone(),
            client_name: call.client_name.clone(),
            client_version: call.client_version.clone(),
            transport: call.transport,
            tool: call.tool.clone(),
            arguments: call.arguments.clone(),
            state: done.state.unwrap_or(CallState::Failed),
            received_at_ms: call.received_at_ms,
            started_at_ms: done.started_at_ms,
            finished_at_ms: Some(done.finished_at_ms),
            deadline_at_ms: call.deadline_at_ms,
            duration_ms: Some(done.finished_at_ms - call.received_at_ms),
            provider: done.provider.clone(),
            model: done.model.clone(),
            tokens_in: done.tokens_in,
            tokens_out: done.tokens_out,
            reasoning_tokens: done.reasoning_tokens,
            time_to_first_token_ms: done.time_to_first_token_ms,
            reasoning: done.reasoning.clone(),
            attempts: done.attempts,
            progress_count: done.progress_count,
            last_progress: done.last_progress.clone(),
            error_kind: done.error_kind.clone(),
            error_message: done.error_message.clone(),
            result: done.result.clone(),
            is_error: done.is_error,
            delivery: done
                .delivery
                .as_deref()
                .map_or(Delivery::Pending, Delivery::parse),
            owner_pid: i64::from(std::process::id()),
            task: None,
            cached_tokens: done.cached_tokens,
            finish_reason: done.finish_reason.clone(),
            replica: call.replica.clone(),
            cancel_requested: None,
            user_name: call.user_name.clone(),
            cost_usd_micros: done.cost_usd_micros,
        }
    }

    fn give_up(&self, why: &str) {
        tracing::error!(call_id = %self.id(), waited_s = self.since.elapsed().as_secs(),
            "a call's record is given up, unwritten: {why}");
    }
}

/// The records waiting, written in turn: one the store refuses goes to the back of the line.
#[derive(Default)]
pub(super) struct LateRecords {
    waiting: Mutex<Waiting>,
    /// Signalled when the last one waiting was written.
    all_written: tokio::sync::Notify,
}

#[derive(Default)]
struct Waiting {
    records: VecDeque<Arc<Late>>,
    bytes: usize,
    /// Whether a task is writing them (one at a time, oldest first).
    writing: bool,
    /// The one that task holds (out of `records` while it is written).
    in_hand: Option<Arc<Late>>,
}

impl LateRecords {
    /// How many records wait for the store.
    pub fn count(&self) -> usize {
        let waiting = self.lock();
        waiting.records.len() + usize::from(waiting.in_hand.is_some())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `late` until the store takes it, starting the task that writes records if none is.
    pub fn keep(self: &Arc<Self>, store: &Store, late: Late) {
        let mut waiting = self.lock();
        waiting.bytes += late.bytes();
        waiting.records.push_back(Arc::new(late));
        while waiting.records.len() > MOST_RECORDS || waiting.bytes > MOST_BYTES {
            let Some(given_up) = waiting.records.pop_front() else {
                break;
            };
            waiting.bytes -= given_up.bytes();
            given_up.give_up("the records waiting for the store are at their bound");
        }
        if !waiting.writing {
            waiting.writing = true;
            let (records, store) = (self.clone(), store.clone());
            crate::spawn::in_span(tracing::Span::none(), records.write_all(store));
        }
    }

    /// Writes the records waiting, oldest first, trying again (after a growing wait) while the
    /// store does not take them; ends when none is left.
    async fn write_all(self: Arc<Self>, store: Store) {
        let mut wait = FIRST_WAIT;
        loop {
            let next = {
                let mut waiting = self.lock();
                let Some(late) = waiting.records.pop_front() else {
                    waiting.writing = false;
                    self.all_written.notify_waiters();
                    return;
                };
                waiting.bytes -= late.bytes();
                waiting.in_hand = Some(late.clone());
                late
            };
            if next.since.elapsed() > LONGEST_KEPT {
                next.give_up("it has waited a day");
                self.lock().in_hand = None;
                continue;
            }
            match write(&store, &next).await {
                Ok(recorded_as) => {
                    self.lock().in_hand = None;
                    // A note taken while it was written may have missed the write.
                    if let Some(delivery) = next.noted_delivery() {
                        let id = recorded_as.as_deref().unwrap_or(next.id());
                        let _ = store.note_delivery(id, Delivery::parse(&delivery)).await;
                    }
                    tracing::info!(call_id = %next.id(), recorded_as = recorded_as.as_deref(),
                        late_s = next.since.elapsed().as_secs(),
                        "a call's record written late, once the store took it");
                    wait = FIRST_WAIT;
                }
                Err(error) => {
                    tracing::debug!(call_id = %next.id(), %error,
                        "the store does not take a late record yet");
                    {
                        let mut waiting = self.lock();
                        waiting.in_hand = None;
                        waiting.bytes += next.bytes();
                        waiting.records.push_back(next);
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(LONGEST_WAIT);
                }
            }
        }
    }

    /// Shutdown: waits up to `limit` for the records waiting to be written, then names each
    /// one that was not (it is lost with this process).
    pub async fn settle(&self, limit: Duration) {
        let until = tokio::time::Instant::now() + limit;
        loop {
            let written = self.all_written.notified();
            if self.count() == 0 {
                return;
            }
            if tokio::time::timeout_at(until, written).await.is_err() {
                break;
            }
        }
        let waiting = self.lock();
        for late in waiting.in_hand.iter().chain(&waiting.records) {
            tracing::error!(call_id = %late.id(),
                "exai stops with this call's record unwritten: the store did not take it");
        }
    }

    /// Notes how call `id`'s answer went to the client, if its record waits here: `false`
    /// when it does not (the store has it, or never will).
    pub fn note_delivery(&self, id: &str, delivery: &Delivery) -> bool {
        let waiting = self.lock();
        let late = (waiting.in_hand.iter().chain(&waiting.records)).find(|late| late.id() == id);
        late.inspect(|late| late.note_delivery(delivery)).is_some()
    }

    /// The record of call `id` as it will be written, while it waits: its answer is still
    /// there to fetch, though the store cannot be read.
    pub fn find(&self, id: &str) -> Option<CallRow> {
        let waiting = self.lock();
        waiting
            .in_hand
            .iter()
            .chain(&waiting.records)
            .find(|late| late.id() == id)
            .map(|late| late.row())
    }
}

/// Writes `late` by what the store holds under its id now (see the module's note); `Some(id)`
/// when the call had to be recorded under a fresh id.
pub(super) async fn write(store: &Store, late: &Late) -> Result<Option<String>, StoreError> {
    let id = late.id().to_string();
    let found = store.read(move |reader| reader.get(&id)).await?;
    let record = &late.record;
    let Some(row) = found else {
        store.insert(record.clone()).await?;
        store.finish(&record.id, late.done()).await?;
        return Ok(None);
    };
    let ours = row.replica == record.replica
        && row.session_id == record.session_id
        && row.received_at_ms == record.received_at_ms
        && row.tool == record.tool;
    if ours {
        // Its end landed already when the same end is there; another replica may have marked
        // it interrupted meanwhile (this one seemed gone): the real end replaces that.
        if row.finished_at_ms != Some(late.done.finished_at_ms) {
            store.finish(&record.id, late.done()).await?;
        }
        return Ok(None);
    }
    let fresh = uuid::Uuid::now_v7().to_string();
    tracing::warn!(call_id = %record.id, recorded_as = %fresh,
        "the call's id already names another record; this call is recorded under a fresh id");
    let mut renamed = NewCall::clone(record);
    renamed.id = fresh.clone();
    store.insert(renamed).await?;
    let mut done = late.done();
    if let Some(text) = done.result.as_mut() {
        *text = text.replace(&record.id, &fresh);
    }
    store.finish(&fresh, done).await?;
    Ok(Some(fresh))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{new_call, test_location};
    use crate::store::{now_ms, spend_totals};

    fn ended(result: &str) -> FinishedCall {
        FinishedCall {
            state: Some(CallState::Succeeded),
            finished_at_ms: now_ms(),
            result: Some(result.to_string()),
            spend: vec![("custom".to_string(), Some(250))],
            ..FinishedCall::default()
        }
    }

    fn call(id: &str) -> Arc<NewCall> {
        Arc::new(NewCall {
            replica: Some("this-replica".to_string()),
            ..new_call(id)
        })
    }

    async fn row(store: &Store, id: &str) -> Option<CallRow> {
        let id = id.to_string();
        store.read(move |r| r.get(&id)).await.unwrap()
    }

    async fn spent_today(store: &Store) -> i64 {
        let spend = store.read(|r| r.spend_today_seen_by(None)).await.unwrap();
        spend_totals(&spend).0
    }

    #[tokio::test]
    async fn a_late_record_is_written_by_what_the_store_holds_now() {
        let store = Store::open(&test_location()).unwrap();

        // Nothing there (neither write landed): the record and its end.
        let late = Late::new(call("0000-none"), ended("answer of none"));
        assert_eq!(write(&store, &late).await.unwrap(), None);
        let written = row(&store, "0000-none").await.unwrap();
        assert_eq!(written.state, CallState::Succeeded);
        assert_eq!(written.result.as_deref(), Some("answer of none"));
        assert_eq!(spent_today(&store).await, 250);

        // Its insert landed though its wait failed: only the end is written.
        let record = call("0001-inserted");
        store.insert(record.clone()).await.unwrap();
        let late = Late::new(record, ended("answer of inserted"));
        assert_eq!(write(&store, &late).await.unwrap(), None);
        let written = row(&store, "0001-inserted").await.unwrap();
        assert_eq!(written.state, CallState::Succeeded);
        assert_eq!(written.result.as_deref(), Some("answer of inserted"));
        assert_eq!(spent_today(&store).await, 500);

        // Its end landed too: nothing is written again, and its cost is not counted twice.
        assert_eq!(write(&store, &late).await.unwrap(), None);
        assert_eq!(spent_today(&store).await, 500);

        // Another replica marked it interrupted meanwhile: the real end replaces that.
        let record = call("0002-interrupted");
        store.insert(record.clone()).await.unwrap();
        let mut marked = ended("");
        marked.state = Some(CallState::Interrupted);
        marked.finished_at_ms -= 1000;
        marked.spend.clear();
        store.finish("0002-interrupted", marked).await.unwrap();
        let late = Late::new(record, ended("answer of interrupted"));
        assert_eq!(write(&store, &late).await.unwrap(), None);
        let written = row(&store, "0002-interrupted").await.unwrap();
        assert_eq!(written.state, CallState::Succeeded);
        assert_eq!(spent_today(&store).await, 750);

        // The id names another call's record (a proposed id taken meanwhile): left untouched,
        // and this call recorded under a fresh id, which its answer names.
        let other = Arc::new(NewCall {
            replica: Some("another-replica".to_string()),
            ..new_call("0003-taken")
        });
        store.insert(other).await.unwrap();
        let late = Late::new(call("0003-taken"), ended("answer of call 0003-taken"));
        let fresh = write(&store, &late).await.unwrap().expect("a fresh id");
        let untouched = row(&store, "0003-taken").await.unwrap();
        assert_eq!(untouched.replica.as_deref(), Some("another-replica"));
        assert_eq!(untouched.state, CallState::Received);
        let written = row(&store, &fresh).await.unwrap();
        assert_eq!(written.state, CallState::Succeeded);
        assert_eq!(
            written.result,
            Some(format!("answer of call {fresh}")),
            "{written:?}"
        );
    }

    #[tokio::test]
    async fn how_the_answer_went_out_is_noted_on_a_record_while_it_waits() {
        let store = Store::open(&test_location()).unwrap();
        let records = Arc::new(LateRecords::default());
        let mut done = ended("answer");
        done.delivery = Some(Delivery::Pending.to_string());
        records.keep(&store, Late::new(call("2000-noted"), done));
        assert!(records.note_delivery("2000-noted", &Delivery::Delivered));
        // A later note about another path does not undo that the answer reached the client.
        assert!(records.note_delivery("2000-noted", &Delivery::ClientGone));
        assert!(!records.note_delivery("2000-elsewhere", &Delivery::Delivered));
        assert_eq!(
            records.find("2000-noted").map(|row| row.delivery),
            Some(Delivery::Delivered)
        );
        records.settle(Duration::from_secs(30)).await;
        let written = row(&store, "2000-noted").await.unwrap();
        assert_eq!(written.delivery, Delivery::Delivered);
    }

    #[tokio::test]
    async fn records_kept_are_bounded_and_written_once_the_store_takes_them() {
        let store = Store::open(&test_location()).unwrap();
        let records = Arc::new(LateRecords::default());
        // Five records of a quarter of the bound each, kept before the writer first runs (this
        // runtime has one thread): the two oldest are given up.
        let big = "x".repeat(MOST_BYTES / 4);
        for i in 0..5 {
            records.keep(&store, Late::new(call(&format!("1000-{i}")), ended(&big)));
        }
        assert_eq!(records.count(), 3);
        records.settle(Duration::from_secs(30)).await;
        assert_eq!(records.count(), 0);
        for i in 0..5 {
            let written = row(&store, &format!("1000-{i}")).await;
            assert_eq!(written.is_some(), i >= 2, "record {i}: {written:?}");
        }
    }
}
