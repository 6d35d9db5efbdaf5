//! The writer thread: every write of the store, committed in groups (one transaction for
//! whatever is queued), whichever backend holds the data.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::records::sql_list;
use super::waiting_threads::{ThreadSave, WaitingThreads};
use super::{
    CallState, FinishedCall, NewCall, Param, Statement, StoreConnection, StoreHealth, now_ms,
};

/// Most operations committed in one transaction.
pub(super) const BATCH: usize = 512;
/// How long writes that nobody waits for (progress, a delivery note) wait for one that somebody
/// does, to share its transaction: a call's delivery note goes with the next call's record
/// instead of costing a commit of its own.
const LINGER: Duration = Duration::from_millis(10);
/// Under load, the least time from one commit's start to the next's: the calls that end
/// meanwhile share a commit, which writes the pages they share (the newest leaf of each index,
/// most of all) once for all of them. A commit is a few pages apiece of the database's log, and
/// the disk's writes of those took a tenth of a busy daemon's machine.
const GROUP_GAP: Duration = Duration::from_millis(2);
/// The size of group (writes) that says the store is under load: below it, a write commits at
/// once, and one call at a time waits for no gap.
const BUSY_GROUP: usize = 8;

pub(super) enum WriteOp {
    /// Shared with the call that made it, which keeps it in case the store cannot take it.
    Insert {
        call: Arc<NewCall>,
        /// When the call started, if it has (the record is then written as running).
        started_at_ms: Option<i64>,
    },
    Progress {
        id: String,
        count: i64,
        message: String,
        /// The model answering, once chosen (so a running call's record names it).
        model: Option<String>,
    },
    Finish {
        id: String,
        /// Behind a pointer: the largest write by far, it would size every slot of the queue.
        /// Shared with the call, which keeps it in case the store cannot take it.
        done: Arc<FinishedCall>,
    },
    Delivery {
        id: String,
        delivery: String,
    },
    /// The call was answered as a task (`kind` names the tasks API).
    Task {
        id: String,
        kind: String,
    },
    /// Creates or replaces a conversation thread (never with an older save of it); nobody
    /// waits for it.
    SaveThread(ThreadSave),
    /// Commits nothing by itself; its acknowledgement orders everything before it.
    Barrier,
}

impl WriteOp {
    /// The id of the call an insert records.
    pub fn inserted_id(&self) -> Option<&str> {
        match self {
            WriteOp::Insert { call, .. } => Some(&call.id),
            _ => None,
        }
    }

    /// The call whose record a write changes after its insert.
    fn updated_id(&self) -> Option<&str> {
        match self {
            WriteOp::Progress { id, .. }
            | WriteOp::Finish { id, .. }
            | WriteOp::Delivery { id, .. }
            | WriteOp::Task { id, .. } => Some(id),
            WriteOp::Insert { .. } | WriteOp::SaveThread(_) | WriteOp::Barrier => None,
        }
    }

    /// How call `id`'s answer went to the client.
    pub fn delivery(id: &str, delivery: super::Delivery) -> Self {
        WriteOp::Delivery {
            id: id.to_string(),
            delivery: delivery.to_string(),
        }
    }
}

/// The ids whose insert this writer refused (taken by another call), the latest kept.
#[derive(Default)]
struct Refused {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Refused {
    /// Far more than the calls a misbehaving client could have running at once.
    const KEPT: usize = 4096;

    fn add(&mut self, id: &str) {
        if self.ids.insert(id.to_string()) {
            self.order.push_back(id.to_string());
        }
        while self.order.len() > Self::KEPT {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
    }

    fn has(&self, id: &str) -> bool {
        self.ids.contains(id)
    }
}

/// Records of calls just started, kept out of the groups other calls' ends commit for a moment
/// (no longer than a write nobody waits for lingers anyway): a quick call's record then goes in
/// with its end, written once as the call ended instead of inserted and then updated (see
/// [`ended_in_group`]). A record goes into the group at once when another write about its call
/// comes (right before it), when a barrier comes, or when it is due.
#[derive(Default)]
struct AwaitingEnd {
    records: HashMap<String, Queued>,
    /// Their ids and when each was queued, oldest first (one whose record went in already is
    /// skipped).
    order: VecDeque<(String, Instant)>,
}

impl AwaitingEnd {
    /// More records than that go in at once (with a barrier behind them, they fit a group).
    const MOST: usize = BATCH / 2;

    /// Takes `next` in: keeps a call's record (one nobody waits for: a record somebody waits
    /// for has no end coming before its answer), or puts `next` in the group, behind the
    /// record it is about. Gives `next` back when the group has no room for it and the
    /// records it must follow: it starts the next group.
    fn take(&mut self, next: Queued, batch: &mut Vec<Queued>) -> Option<Queued> {
        let first = match &next.op {
            WriteOp::Insert { call, .. } => Some(call.id.as_str()),
            op => op.updated_id(),
        }
        .filter(|id| self.records.contains_key(*id));
        let needed = match (&next.op, first) {
            (WriteOp::Barrier, _) => self.records.len() + 1,
            (_, Some(_)) => 2,
            (_, None) => 1,
        };
        if batch.len() + needed > BATCH && !batch.is_empty() {
            return Some(next);
        }
        match (&next.op, first) {
            // The check above left room for every record.
            (WriteOp::Barrier, _) => self.release_all(batch),
            // A second record under the same id goes in behind the first, as queued.
            (_, Some(id)) => {
                batch.extend(self.records.remove(id));
                self.drop_gone();
            }
            (WriteOp::Insert { call, .. }, None)
                if !next.urgent && self.records.len() < Self::MOST =>
            {
                self.order.push_back((call.id.clone(), next.queued_at));
                self.records.insert(call.id.clone(), next);
                return None;
            }
            _ => {}
        }
        batch.push(next);
        None
    }

    /// Once the oldest record has waited [`LINGER`] by `now`, puts it in the group with those
    /// that have waited half as long (as many as the group has room for): records of long calls
    /// share commits, at most two each `LINGER`, instead of one commit each.
    fn release_due(&mut self, now: Instant, batch: &mut Vec<Queued>) {
        if self.next_due().is_none_or(|due| due > now) {
            return;
        }
        let room = BATCH.saturating_sub(batch.len());
        self.release(room, |queued_at| queued_at + LINGER / 2 <= now, batch);
    }

    /// Puts every record in the group, as many as it has room for.
    fn release_all(&mut self, batch: &mut Vec<Queued>) {
        let room = BATCH.saturating_sub(batch.len());
        self.release(room, |_| true, batch);
    }

    /// Puts up to `most` records in the group, oldest first, while `due` says so of the oldest.
    fn release(&mut self, most: usize, due: impl Fn(Instant) -> bool, batch: &mut Vec<Queued>) {
        for _ in 0..most {
            self.drop_gone();
            match self.order.front() {
                Some((id, queued_at)) if due(*queued_at) => {
                    batch.extend(self.records.remove(id));
                    self.order.pop_front();
                }
                _ => break,
            }
        }
    }

    /// Whether the record of `id` queued at `queued_at` still waits (not one that went in, nor
    /// a later record under the same id).
    fn is_waiting(&self, id: &str, queued_at: Instant) -> bool {
        self.records
            .get(id)
            .is_some_and(|record| record.queued_at == queued_at)
    }

    /// When the oldest record waiting is due.
    fn next_due(&mut self) -> Option<Instant> {
        self.drop_gone();
        self.order.front().map(|(_, queued_at)| *queued_at + LINGER)
    }

    /// Forgets the oldest ids whose records went in already, up to the oldest still waiting:
    /// quick calls take their records out in about the order they came, so few stay behind.
    fn drop_gone(&mut self) {
        while let Some((id, queued_at)) = self.order.front() {
            if self.is_waiting(id, *queued_at) {
                break;
            }
            self.order.pop_front();
        }
    }
}

/// What the writer and the calls share about the gap between groups under load (see [`Pacing`]).
#[derive(Debug)]
pub(super) struct Gap {
    /// How long it is ([`GROUP_GAP`]; a test makes it long enough not to end by itself).
    length: Duration,
    /// Set while the writer waits out the gap: a write then does not wake it.
    waiting: AtomicBool,
    /// Calls whose record is queued and whose end is not yet ([`WorkingCall`]). While there is
    /// none, every call that has started waits on the next commit and no end can join it: the
    /// writer commits without waiting out the rest of the gap, in which the cores would sit idle.
    working: AtomicUsize,
}

impl Default for Gap {
    fn default() -> Self {
        Self::of(GROUP_GAP)
    }
}

impl Gap {
    fn of(length: Duration) -> Self {
        Self {
            length,
            waiting: AtomicBool::new(false),
            working: AtomicUsize::new(0),
        }
    }

    /// Whether the writer is waiting out the gap now (a write need not wake it).
    pub fn writer_waits(&self) -> bool {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// A call counted in [`Gap::working`] from just before its record is queued until this is
/// dropped: once its end is queued (or the call is gone). The last one dropped while the writer waits
/// out the gap wakes it.
#[derive(Debug)]
pub(super) struct WorkingCall {
    gap: Arc<Gap>,
    writer: std::thread::Thread,
}

impl WorkingCall {
    pub fn new(gap: Arc<Gap>, writer: std::thread::Thread) -> Self {
        gap.working.fetch_add(1, Ordering::SeqCst);
        Self { gap, writer }
    }
}

impl Drop for WorkingCall {
    fn drop(&mut self) {
        // SeqCst here and in the writer: either it sees no call working, or this sees it waiting.
        if self.gap.working.fetch_sub(1, Ordering::SeqCst) == 1
            && self.gap.waiting.load(Ordering::SeqCst)
        {
            self.writer.unpark();
        }
    }
}

/// Why one queued write did not take effect, as the writer tells whoever waits for it.
#[derive(Debug, Clone)]
pub(super) enum WriteFailure {
    /// An insert named an id that already has a record (the record is left as it was).
    IdTaken,
    /// The database refused it (disk full, locked, unreachable, …), or it found no record to update.
    Sql(String),
}

pub(super) struct Queued {
    pub op: WriteOp,
    /// When it was queued: its answer's latency is measured from here.
    pub queued_at: Instant,
    pub ack: Option<oneshot::Sender<Result<(), WriteFailure>>>,
    /// Somebody waits for the answer now: the group commits without lingering.
    pub urgent: bool,
}

/// Where the writer's answer to one write arrives.
pub(super) type Answer = oneshot::Receiver<Result<(), WriteFailure>>;

impl Queued {
    /// `op`, queued now, for nobody to wait on.
    pub fn unawaited(op: WriteOp) -> Self {
        Self {
            op,
            queued_at: Instant::now(),
            ack: None,
            urgent: false,
        }
    }

    /// `op`, queued now, and where the writer's answer to it will arrive (waited for at once).
    pub fn awaited(op: WriteOp) -> (Self, Answer) {
        let (mut queued, answer) = Self::answered_later(op);
        queued.urgent = true;
        (queued, answer)
    }

    /// `op`, queued now, and where the writer's answer to it will arrive (read later: the
    /// write may linger like one nobody waits for).
    pub fn answered_later(op: WriteOp) -> (Self, Answer) {
        let (ack, answer) = oneshot::channel();
        let queued = Self {
            ack: Some(ack),
            ..Self::unawaited(op)
        };
        (queued, answer)
    }
}

/// Commits what is queued in one transaction; when that fails, each write is retried on its
/// own so one bad row cannot take the others down with it.
pub(super) struct Writer {
    /// The store as messages name it.
    pub store: String,
    pub health: Arc<std::sync::Mutex<StoreHealth>>,
    /// Thread saves the database did not take, tried again until it does.
    pub waiting_threads: Arc<WaitingThreads>,
    /// The gap between groups, as the writer and the calls share it.
    pub gap: Arc<Gap>,
}

impl Writer {
    pub fn run(self, mut conn: Box<dyn StoreConnection>, mut rx: mpsc::Receiver<Queued>) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut refused = Refused::default();
        // A write about a call inserted in the same group waits for the next group: the
        // insert may yet be refused (its id taken), and then the write must not touch the
        // record that owns the id.
        let mut held_over: Option<Queued> = None;
        let mut inserted = HashSet::new();
        // A backend that guards statements runs such a write in the same group, behind its
        // insert and only if the insert took effect.
        let hold_over = !conn.guards_statements();
        let urgency = Urgency::of(conn.as_ref());
        let mut urgent = false;
        // No call was at work when the group last looked at the gap: it goes without waiting.
        let mut none_at_work = false;
        // Until when, after a commit, the writer sleeps without being woken by writes nobody
        // waits for (see `Urgency`).
        let mut quiet_until: Option<Instant> = None;
        // A closing queue tries the thread saves waiting once more, then gives up on them.
        let mut last_try = false;
        // Where a group's statements are guarded, a call's record waits a moment for its end
        // to be written as one with it.
        let mut awaiting_end = conn.guards_statements().then(AwaitingEnd::default);
        let mut pacing = Pacing::new(self.gap.length);
        loop {
            let mut force = false;
            let mut closed = false;
            batch.extend(
                (self.waiting_threads.due(Instant::now()).into_iter())
                    .map(|save| Queued::unawaited(WriteOp::SaveThread(save))),
            );
            while batch.len() < BATCH {
                let next = match held_over.take().map(Ok).unwrap_or_else(|| rx.try_recv()) {
                    Ok(next) => next,
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                };
                if hold_over
                    && !batch.is_empty()
                    && next.op.updated_id().is_some_and(|id| inserted.contains(id))
                {
                    held_over = Some(next);
                    force = true;
                    break;
                }
                inserted.extend(next.op.inserted_id().map(str::to_string));
                urgent |= urgency.is_urgent(&next);
                match awaiting_end.as_mut() {
                    Some(awaiting) => {
                        if let Some(next) = awaiting.take(next, &mut batch) {
                            held_over = Some(next);
                            force = true;
                            break;
                        }
                    }
                    None => batch.push(next),
                }
            }
            let now = Instant::now();
            if let Some(awaiting) = awaiting_end.as_mut() {
                match closed {
                    true => awaiting.release_all(&mut batch),
                    false => awaiting.release_due(now, &mut batch),
                }
            }
            if batch.is_empty() {
                if closed && (last_try || self.waiting_threads.count() == 0) {
                    return;
                }
                if closed {
                    last_try = true;
                    self.waiting_threads.try_now();
                    continue;
                }
                // Records awaiting their end are written by the time they are due at the latest.
                let due = awaiting_end.as_mut().and_then(AwaitingEnd::next_due);
                // Nothing queued: a short quiet sleep after a commit, then a wait that any
                // write ends (or, while thread saves wait, their next try).
                let wake = [quiet_until.filter(|until| *until > now), due];
                match wake.into_iter().flatten().min() {
                    Some(until) => std::thread::park_timeout(until.saturating_duration_since(now)),
                    None => {
                        quiet_until = None;
                        if let Some(next_try) = self.waiting_threads.next_try() {
                            std::thread::park_timeout(next_try.saturating_duration_since(now));
                            continue;
                        }
                        match rx.blocking_recv() {
                            Some(first) => held_over = Some(first),
                            // Closed with no thread save waiting (one waiting has a next try).
                            None => return,
                        }
                    }
                }
                continue;
            }
            // Writes nobody waits for linger (see LINGER) for one somebody does, which rings.
            let linger_until = batch[0].queued_at + LINGER;
            if !(urgent || force || closed || batch.len() >= BATCH) && linger_until > now {
                std::thread::park_timeout(linger_until - now);
                continue;
            }
            // Under load, the next group waits out the gap unless it must go now, or no call is
            // left at work to end in it.
            if !(force || closed || batch.len() >= BATCH || none_at_work)
                && let Some(until) = pacing.hold_until(now)
            {
                self.gap.waiting.store(true, Ordering::SeqCst);
                none_at_work = self.gap.working.load(Ordering::SeqCst) == 0;
                if !none_at_work {
                    std::thread::park_timeout(until - now);
                }
                self.gap.waiting.store(false, Ordering::Relaxed);
                // Round once more either way: an end queued as the last call stopped goes in.
                continue;
            }
            none_at_work = false;
            pacing.committed(now, batch.len());
            self.commit(conn.as_mut(), &mut batch, &mut refused);
            inserted.clear();
            urgent = false;
            quiet_until = Some(Instant::now() + LINGER);
        }
    }

    /// Commits `batch` (emptied) in one group, answers each write, and keeps `refused` up to date.
    fn commit(
        &self,
        conn: &mut dyn StoreConnection,
        batch: &mut Vec<Queued>,
        refused: &mut Refused,
    ) {
        // Writes about a call whose insert was refused change nothing: the id names
        // another call's record.
        batch.retain_mut(|queued| {
            let about_refused = queued.op.updated_id().is_some_and(|id| refused.has(id));
            if about_refused && let Some(ack) = queued.ack.take() {
                let _ = ack.send(Err(WriteFailure::IdTaken));
            }
            !about_refused
        });
        if batch.is_empty() {
            return;
        }
        crate::metrics::store_commit(batch.len());
        let outcomes = match apply_batch(conn, batch) {
            Ok(outcomes) => outcomes,
            // The database is held by another program or cannot be reached: each write
            // would wait and fail the same way again, so all get the error at once.
            Err(error) if error.fails_every_write() || batch.len() == 1 => {
                let failure = WriteFailure::Sql(error.to_string());
                vec![Err(failure); batch.len()]
            }
            Err(error) => {
                tracing::warn!(store = %self.store, %error, writes = batch.len(),
                    "call store batch failed; retrying each write on its own");
                // Alone, a write is not guarded by its call's insert: it is skipped here
                // when that insert was refused (the list below answers it `IdTaken`).
                batch
                    .iter()
                    .map(|queued| {
                        if queued.op.updated_id().is_some_and(|id| refused.has(id)) {
                            return Ok(());
                        }
                        let outcome = match apply_batch(conn, std::slice::from_ref(queued)) {
                            Ok(mut one) => one.pop().unwrap_or(Ok(())),
                            Err(error) => Err(WriteFailure::Sql(error.to_string())),
                        };
                        if let (Some(id), Err(WriteFailure::IdTaken)) =
                            (queued.op.inserted_id(), &outcome)
                        {
                            refused.add(id);
                        }
                        outcome
                    })
                    .collect()
            }
        };
        for (queued, outcome) in batch.drain(..).zip(outcomes) {
            // A write behind an insert of this group that was refused was skipped (by its
            // guard, or by the retry above): the call it is about has no record under that id.
            let outcome = match queued.op.updated_id() {
                Some(id) if refused.has(id) => Err(WriteFailure::IdTaken),
                _ => outcome,
            };
            if let (Some(id), Err(WriteFailure::IdTaken)) = (queued.op.inserted_id(), &outcome) {
                refused.add(id);
            }
            if let Err(WriteFailure::Sql(error)) = &outcome {
                // A thread save tried again failed once already, and said so then.
                match &queued.op {
                    WriteOp::SaveThread(save) if self.waiting_threads.holds(save) => {
                        tracing::debug!(store = %self.store, %error, thread_id = %save.thread.id,
                            "the store does not take a waiting thread save yet");
                    }
                    _ => tracing::error!(store = %self.store, %error, "call store write failed"),
                }
                self.health
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .last_error = Some((now_ms(), error.clone()));
            }
            if let WriteOp::SaveThread(save) = queued.op {
                // Nobody waits for a save: the writer keeps one the database did not take.
                match outcome {
                    Err(WriteFailure::Sql(_)) => self.waiting_threads.keep(save),
                    _ => (self.waiting_threads).saved(&save.thread.id, save.thread.updated_at_ms),
                }
            } else if let Some(ack) = queued.ack {
                crate::metrics::store_write(queued.queued_at.elapsed());
                let _ = ack.send(outcome);
            }
        }
    }
}

/// When the next group may commit: under load, no sooner than the gap ([`GROUP_GAP`]) after
/// the last one started.
struct Pacing {
    gap: Duration,
    /// When the last commit started, and how many writes it had.
    last: Option<(Instant, usize)>,
}

impl Pacing {
    fn new(gap: Duration) -> Self {
        Self { gap, last: None }
    }

    /// Until when a group that need not go at once waits, if it waits at all.
    fn hold_until(&self, now: Instant) -> Option<Instant> {
        let (at, size) = self.last?;
        let until = at + self.gap;
        (size >= BUSY_GROUP && until > now).then_some(until)
    }

    fn committed(&mut self, at: Instant, size: usize) {
        self.last = Some((at, size));
    }
}

/// Which writes the writer commits as soon as it may (at once, or under load when the gap
/// since the last commit is over: `Pacing`), and so is woken for: a write somebody waits for.
/// Others (progress, a thread, a delivery note, a record read at its call's end) are queued
/// without waking it — each wake-up is a thread switch on the call's path — and committed with
/// the next urgent write, or when they have lingered long enough.
#[derive(Debug, Clone, Copy)]
pub(super) struct Urgency {
    /// Where the end of a call cannot share its record's group, the record does not linger
    /// for it: it is committed at once, so the end does not wait for two commits.
    acked_is_urgent: bool,
}

impl Urgency {
    pub fn of(conn: &dyn StoreConnection) -> Self {
        Self {
            acked_is_urgent: !conn.guards_statements(),
        }
    }

    pub fn is_urgent(self, queued: &Queued) -> bool {
        queued.urgent || (self.acked_is_urgent && queued.ack.is_some())
    }
}

/// Applies `batch` in one transaction: `Err` when the transaction failed as a whole,
/// else each write's own outcome (an id already taken, an update that found no record).
fn apply_batch(
    conn: &mut dyn StoreConnection,
    batch: &[Queued],
) -> Result<Vec<Result<(), WriteFailure>>, super::BackendError> {
    let mut statements = Vec::with_capacity(batch.len());
    let mut ends = Vec::with_capacity(batch.len());
    // Where each call inserted in this group has its insert: what follows about it runs only
    // if the insert took effect.
    let guards = conn.guards_statements();
    let mut inserts: HashMap<&str, usize> = HashMap::new();
    let merged = if guards {
        ended_in_group(batch)
    } else {
        HashMap::new()
    };
    let mut spend = GroupSpend::default();
    for (i, queued) in batch.iter().enumerate() {
        let only_if = queued
            .op
            .updated_id()
            .and_then(|id| inserts.get(id).copied())
            .filter(|_| guards);
        if let Some(id) = queued.op.inserted_id() {
            inserts.insert(id, statements.len());
        }
        let with = merged.get(&i).map(|&j| &batch[j].op);
        match (&queued.op, with, only_if) {
            // An end written with its record (statement `record`, which `ended_in_group`
            // paired it with and `inserts` names): only its spend, summed with the group's.
            (WriteOp::Finish { done, .. }, Some(WriteOp::Insert { call, .. }), Some(record)) => {
                spend.add(record, call.user_name.as_deref(), done);
            }
            _ => {
                let recorded_as_ended = match with {
                    Some(WriteOp::Finish { done, .. }) => Some(&**done),
                    _ => None,
                };
                plan(&queued.op, recorded_as_ended, &mut statements, only_if);
            }
        }
        ends.push(statements.len());
    }
    let changed = if spend.ends.is_empty() {
        conn.execute_in_transaction(&statements)?
    } else {
        conn.execute_in_transaction_then(&statements, &|changed| spend.statements(changed))?
    };
    let mut start = 0;
    Ok(batch
        .iter()
        .enumerate()
        .zip(ends)
        .map(|((i, queued), end)| {
            // An end written with its record takes effect as the record does: the caller
            // answers it `IdTaken` when the record's id was taken.
            let outcome = match (&queued.op, merged.get(&i)) {
                (WriteOp::Finish { .. }, Some(_)) => Ok(()),
                _ => judge(&queued.op, &changed[start..end]),
            };
            start = end;
            outcome
        })
        .collect())
}

/// The end of an `INSERT INTO spend_by_day` that adds a spend to the day's running total.
macro_rules! added_to_the_days_spend {
    () => {
        " ON CONFLICT (day, provider, user_name) DO UPDATE SET \
         cost_usd_micros = spend_by_day.cost_usd_micros + excluded.cost_usd_micros, \
         unpriced_calls = spend_by_day.unpriced_calls + excluded.unpriced_calls"
    };
}

/// Adds a sum of spends (day, provider, user, micro-dollars, unpriced calls) to its day's total.
const SUMMED_SPEND: &str = concat!(
    "INSERT INTO spend_by_day (day, provider, user_name, cost_usd_micros, unpriced_calls) \
     VALUES (?1, ?2, ?3, ?4, ?5)",
    added_to_the_days_spend!()
);

/// What the calls recorded and ended in one group spent, written once their records are in as
/// one upsert per day, provider and user: not one for each spend, each looking up its call's
/// user. Under load most calls end in the group that records them.
#[derive(Default)]
pub(super) struct GroupSpend<'a> {
    /// Each spend: the statement of its call's record, then day, provider, user (`''` for the
    /// owner) and micro-dollars (`None`: unpriced).
    ends: Vec<(usize, i64, &'a str, &'a str, Option<i64>)>,
}

impl<'a> GroupSpend<'a> {
    /// The spend of `done`, a call by `user` whose record is statement `record` of the group.
    pub(super) fn add(&mut self, record: usize, user: Option<&'a str>, done: &'a FinishedCall) {
        let day = super::day_of(done.finished_at_ms);
        for (provider, micros) in &done.spend {
            (self.ends).push((record, day, provider, user.unwrap_or(""), *micros));
        }
    }

    /// One sum for each day, provider and user, of the spends whose call's record went in
    /// (`changed`: the rows each statement of the group changed): a call whose id was taken
    /// has no record, and adds nothing, as when each end adds its own.
    pub(super) fn statements(&self, changed: &[u64]) -> Vec<Statement<'a>> {
        let mut sums: BTreeMap<(i64, &'a str, &'a str), (i64, i64)> = BTreeMap::new();
        for &(record, day, provider, user, micros) in &self.ends {
            if changed.get(record).is_none_or(|&rows| rows == 0) {
                continue;
            }
            let (priced, unpriced) = sums.entry((day, provider, user)).or_default();
            match micros {
                // Held at the top rather than wrapped: no real day's spend comes near it.
                Some(micros) => *priced = priced.saturating_add(micros),
                None => *unpriced += 1,
            }
        }
        use Param::{Int, Text};
        (sums.into_iter())
            .map(|((day, provider, user), (priced, unpriced))| Statement {
                sql: SUMMED_SPEND,
                params: vec![
                    Int(Some(day)),
                    Text(Some(provider)),
                    Text(Some(user)),
                    Int(Some(priced)),
                    Int(Some(unpriced)),
                ],
                only_if: None,
            })
            .collect()
    }
}

/// The calls recorded and ended in one group (see [`AwaitingEnd`]), each to be written once,
/// as it ended: one insert instead of an insert and an update, and the record never enters the
/// index of open calls. Each pair both ways (the record's index to its end's and back). Only
/// when nothing but progress (which the end overwrites) comes between the two about the call.
fn ended_in_group(batch: &[Queued]) -> HashMap<usize, usize> {
    let mut open: HashMap<&str, usize> = HashMap::new();
    let mut pairs = HashMap::new();
    for (i, queued) in batch.iter().enumerate() {
        match &queued.op {
            WriteOp::Insert { call, .. } => {
                open.insert(&call.id, i);
            }
            WriteOp::Finish { id, .. } => {
                if let Some(insert) = open.remove(id.as_str()) {
                    pairs.insert(insert, i);
                    pairs.insert(i, insert);
                }
            }
            WriteOp::Progress { .. } => {}
            op => {
                if let Some(id) = op.updated_id() {
                    open.remove(id);
                }
            }
        }
    }
    pairs
}

/// The statements that make one write, each run only if statement `only_if` changed a row.
/// `recorded_as_ended`: for a record whose call's end is in the group too, that end; the record
/// goes in as the call ended (and the end adds only its spend, to the group's [`GroupSpend`]).
pub(super) fn plan<'a>(
    op: &'a WriteOp,
    recorded_as_ended: Option<&'a FinishedCall>,
    statements: &mut Vec<Statement<'a>>,
    only_if: Option<usize>,
) {
    use Param::{Int, Text};
    let mut add = |sql: &'static str, params: Vec<Param<'a>>| {
        statements.push(Statement {
            sql,
            params,
            only_if,
        });
    };
    match op {
        WriteOp::Insert {
            call: c,
            started_at_ms,
        } if let Some(done) = recorded_as_ended => add(
            "INSERT INTO calls (id, session_id, client_name, client_version, transport, tool, \
             arguments, received_at_ms, deadline_at_ms, owner_pid, replica, user_name, \
             state, started_at_ms, finished_at_ms, duration_ms, provider, model, tokens_in, \
             tokens_out, attempts, progress_count, last_progress, error_kind, error_message, \
             result, is_error, reasoning_tokens, time_to_first_token_ms, reasoning, \
             cached_tokens, finish_reason, cost_usd_micros, thread_id, delivery) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
             ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, \
             ?33, ?34, COALESCE(?35, 'pending')) \
             ON CONFLICT(id) DO NOTHING",
            (what_was_asked(c).into_iter())
                .chain([
                    Text(Some(done.state.unwrap_or(CallState::Failed).as_str())),
                    Int(done.started_at_ms.or(*started_at_ms)),
                    Int(Some(done.finished_at_ms)),
                    Int(Some(done.finished_at_ms - c.received_at_ms)),
                ])
                .chain(what_ended(done))
                .collect(),
        ),
        WriteOp::Insert {
            call: c,
            started_at_ms,
        } => add(
            "INSERT INTO calls (id, session_id, client_name, client_version, transport, tool, \
             arguments, received_at_ms, deadline_at_ms, owner_pid, replica, user_name, \
             state, started_at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
             ON CONFLICT(id) DO NOTHING",
            (what_was_asked(c).into_iter())
                .chain([
                    Text(Some(
                        if started_at_ms.is_some() {
                            CallState::Running
                        } else {
                            CallState::Received
                        }
                        .as_str(),
                    )),
                    Int(*started_at_ms),
                ])
                .collect(),
        ),
        WriteOp::Progress {
            id,
            count,
            message,
            model,
        } => add(
            PROGRESS.as_str(),
            vec![
                Text(Some(id)),
                Int(Some(*count)),
                Text(Some(message)),
                text(model),
            ],
        ),
        WriteOp::Finish { id, done } => {
            add(
                "UPDATE calls SET state = ?2, started_at_ms = COALESCE(?3, started_at_ms), \
             finished_at_ms = ?4, duration_ms = ?4 - received_at_ms, provider = ?5, model = ?6, \
             tokens_in = ?7, tokens_out = ?8, attempts = ?9, progress_count = ?10, \
             last_progress = ?11, error_kind = ?12, error_message = ?13, result = ?14, \
             is_error = ?15, reasoning_tokens = ?16, time_to_first_token_ms = ?17, \
             reasoning = ?18, cached_tokens = ?19, finish_reason = ?20, cost_usd_micros = ?21, \
             thread_id = COALESCE(?22, thread_id), delivery = COALESCE(?23, delivery) \
             WHERE id = ?1",
                vec![
                    Text(Some(id)),
                    Text(Some(done.state.unwrap_or(CallState::Failed).as_str())),
                    Int(done.started_at_ms),
                    Int(Some(done.finished_at_ms)),
                ]
                .into_iter()
                .chain(what_ended(done))
                .collect(),
            );
            // What the call's providers billed goes to the running totals of the day it
            // finished (per provider and user, `''` for the owner), in the transaction of its
            // end: the budgets read these. A call without a record adds nothing.
            let day = super::day_of(done.finished_at_ms);
            for (provider, micros) in &done.spend {
                add(
                    concat!(
                        "INSERT INTO spend_by_day (day, provider, user_name, cost_usd_micros, \
                         unpriced_calls) SELECT CAST(?1 AS BIGINT), CAST(?2 AS TEXT), \
                         COALESCE(user_name, ''), CAST(?3 AS BIGINT), CAST(?4 AS BIGINT) \
                         FROM calls WHERE id = ?5",
                        added_to_the_days_spend!()
                    ),
                    vec![
                        Int(Some(day)),
                        Text(Some(provider)),
                        Int(Some(micros.unwrap_or(0))),
                        Int(Some(i64::from(micros.is_none()))),
                        Text(Some(id)),
                    ],
                );
            }
        }
        WriteOp::Barrier => {}
        WriteOp::SaveThread(ThreadSave {
            thread: t,
            search_text,
        }) => add(
            // A thread stays its first user's: a write under another name changes nothing. Its
            // first prompt stays the one it was found by, even once that turn is dropped. An
            // older save (one tried again after an outage) never replaces a newer one.
            "INSERT INTO threads (id, created_at_ms, updated_at_ms, expires_at_ms, turns, \
             user_name, first_prompt, search_text, tools, turn_count) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT(id) DO UPDATE SET \
             created_at_ms = excluded.created_at_ms, updated_at_ms = excluded.updated_at_ms, \
             expires_at_ms = excluded.expires_at_ms, turns = excluded.turns, \
             first_prompt = COALESCE(threads.first_prompt, excluded.first_prompt), \
             search_text = COALESCE(threads.search_text, excluded.search_text), \
             tools = excluded.tools, turn_count = excluded.turn_count \
             WHERE threads.user_name IS NOT DISTINCT FROM excluded.user_name \
             AND threads.updated_at_ms <= excluded.updated_at_ms",
            vec![
                Text(Some(&t.id)),
                Int(Some(t.created_at_ms)),
                Int(Some(t.updated_at_ms)),
                Int(Some(t.expires_at_ms)),
                Text(Some(&t.turns)),
                text(&t.user_name),
                text(&t.first_prompt),
                text(search_text),
                Text(Some(&t.tools)),
                Int(Some(t.turn_count)),
            ],
        ),
        WriteOp::Task { id, kind } => add(
            "UPDATE calls SET task = ?2 WHERE id = ?1",
            vec![Text(Some(id)), Text(Some(kind))],
        ),
        WriteOp::Delivery { id, delivery } => add(
            // Once an answer reached a client, a late report about another
            // path (an abandoned request's closed stream) must not undo that.
            "UPDATE calls SET delivery = ?2 WHERE id = ?1 AND delivery NOT LIKE 'delivered%'",
            vec![Text(Some(id)), Text(Some(delivery))],
        ),
    }
}

/// A write's own outcome from the rows its statements changed: an insert whose id is taken,
/// a finish that found no record, took no effect without failing the transaction.
fn judge(op: &WriteOp, changed: &[u64]) -> Result<(), WriteFailure> {
    match (op, changed.first()) {
        (WriteOp::Insert { .. }, Some(0)) => Err(WriteFailure::IdTaken),
        (WriteOp::Finish { id, .. }, Some(0)) => Err(WriteFailure::Sql(format!(
            "no record of call {id} to finish (its first write was lost)"
        ))),
        _ => Ok(()),
    }
}

/// This process, which records own: asked once, not with each record (a system call each).
static OWNER_PID: LazyLock<i64> = LazyLock::new(|| i64::from(std::process::id()));

/// Progress is noted only while a call is open (a late heartbeat must not touch an ended record).
static PROGRESS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE calls SET progress_count = ?2, last_progress = ?3, \
         model = COALESCE(?4, model) WHERE id = ?1 AND state IN {}",
        sql_list(&CallState::OPEN)
    )
});

/// The columns of a call's record that say what was asked, by whom and where, in the order both
/// inserts of a call bind them first.
fn what_was_asked(c: &NewCall) -> [Param<'_>; 12] {
    use Param::{Int, Text};
    [
        Text(Some(&c.id)),
        Text(Some(&c.session_id)),
        text(&c.client_name),
        text(&c.client_version),
        Text(Some(c.transport.as_str())),
        Text(Some(&c.tool)),
        Text(Some(&c.arguments)),
        Int(Some(c.received_at_ms)),
        Int(Some(c.deadline_at_ms)),
        Int(Some(*OWNER_PID)),
        text(&c.replica),
        text(&c.user_name),
    ]
}

/// The columns of a call's end after its state and times, in the order both the end's
/// `UPDATE` and the insert of an ended call bind them.
fn what_ended(done: &FinishedCall) -> [Param<'_>; 19] {
    use Param::{Bool, Int};
    [
        text(&done.provider),
        text(&done.model),
        Int(done.tokens_in),
        Int(done.tokens_out),
        Int(done.attempts),
        Int(Some(done.progress_count)),
        text(&done.last_progress),
        text(&done.error_kind),
        text(&done.error_message),
        text(&done.result),
        Bool(done.is_error),
        Int(done.reasoning_tokens),
        Int(done.time_to_first_token_ms),
        text(&done.reasoning),
        Int(done.cached_tokens),
        text(&done.finish_reason),
        Int(done.cost_usd_micros),
        text(&done.thread_id),
        text(&done.delivery),
    ]
}

/// An optional text column's value.
fn text(value: &Option<String>) -> Param<'_> {
    Param::Text(value.as_deref())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::store::StoreReader;
    use crate::store::spend_totals;
    use crate::store::tests::{connect_for_test, new_call};

    /// Runs a writer over `conn` for the writes in `ops`, queued before it starts (one batch);
    /// returns each write's outcome.
    pub(in crate::store) fn write_all(
        conn: Box<dyn StoreConnection>,
        ops: Vec<WriteOp>,
    ) -> (Vec<Result<(), WriteFailure>>, StoreHealth) {
        let (tx, rx) = mpsc::channel(ops.len().max(1));
        let mut acks = Vec::new();
        for op in ops {
            let (queued, answer) = Queued::awaited(op);
            tx.try_send(queued).unwrap();
            acks.push(answer);
        }
        drop(tx);
        let health = Arc::new(std::sync::Mutex::new(StoreHealth::default()));
        Writer {
            store: "test store".into(),
            health: health.clone(),
            waiting_threads: Arc::default(),
            gap: Arc::default(),
        }
        .run(conn, rx);
        let outcomes = acks
            .into_iter()
            .map(|mut done| done.try_recv().unwrap())
            .collect();
        let health = health.lock().unwrap().clone();
        (outcomes, health)
    }

    #[test]
    fn one_bad_write_does_not_drop_the_others_in_its_batch() {
        let (location, mut conn) = connect_for_test();
        // The "bad row" of the batch: the database refuses it (as it would a row over its limits).
        conn.execute_raw("CREATE UNIQUE INDEX one_tool_per_session ON calls(session_id, tool)")
            .unwrap();
        let mut first = new_call("a");
        first.session_id = "taken".into();
        let mut bad = new_call("b");
        bad.session_id = "taken".into();
        let ops = vec![
            WriteOp::Insert {
                call: first.into(),
                started_at_ms: None,
            },
            WriteOp::Insert {
                call: bad.into(),
                started_at_ms: None,
            },
            WriteOp::Insert {
                call: new_call("c").into(),
                started_at_ms: None,
            },
        ];
        let (outcomes, health) = write_all(conn, ops);
        assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
        assert!(
            matches!(&outcomes[1], Err(WriteFailure::Sql(m))
                if m.contains("one_tool_per_session") || m.contains("UNIQUE constraint")),
            "{outcomes:?}"
        );
        let reader = StoreReader::open_at(&location).unwrap();
        assert!(reader.get("a").unwrap().is_some());
        assert!(reader.get("b").unwrap().is_none());
        assert!(reader.get("c").unwrap().is_some());
        assert!(
            health.problems()[0].contains("a call store write failed"),
            "{:?}",
            health.problems()
        );
    }

    #[test]
    fn an_end_behind_a_refused_record_in_its_group_leaves_the_owner_of_the_id_untouched() {
        let (location, conn) = connect_for_test();
        let mut intruder = new_call("x");
        intruder.session_id = "another session".into();
        let end = |answer: &str| WriteOp::Finish {
            id: answer.split(' ').next().unwrap_or_default().to_string(),
            done: Arc::new(FinishedCall {
                state: Some(CallState::Succeeded),
                result: Some(answer.to_string()),
                ..FinishedCall::default()
            }),
        };
        let insert = |call: NewCall| WriteOp::Insert {
            call: call.into(),
            started_at_ms: Some(1),
        };
        // One group: x's owner is recorded, a second call names x (refused) and ends, and a
        // third call is recorded and ends.
        let ops = vec![
            insert(new_call("x")),
            insert(intruder),
            end("x from the intruder"),
            insert(new_call("y")),
            end("y done"),
        ];
        let (outcomes, _) = write_all(conn, ops);
        assert!(outcomes[0].is_ok(), "{outcomes:?}");
        assert!(
            matches!(outcomes[1], Err(WriteFailure::IdTaken)),
            "{outcomes:?}"
        );
        assert!(
            matches!(outcomes[2], Err(WriteFailure::IdTaken)),
            "{outcomes:?}"
        );
        assert!(outcomes[3].is_ok() && outcomes[4].is_ok(), "{outcomes:?}");
        let reader = StoreReader::open_at(&location).unwrap();
        let owner = reader.get("x").unwrap().unwrap();
        assert_eq!(
            (owner.state, owner.session_id.as_str()),
            (CallState::Running, "s")
        );
        assert_eq!(owner.result, None);
        let third = reader.get("y").unwrap().unwrap();
        assert_eq!(third.state, CallState::Succeeded);
        assert_eq!(third.result.as_deref(), Some("y done"));
    }

    /// Everything a call's end writes, every column set, and spend from one provider.
    fn full_end(finished_at_ms: i64) -> FinishedCall {
        FinishedCall {
            state: Some(CallState::Succeeded),
            started_at_ms: None,
            finished_at_ms,
            provider: Some("glm".into()),
            model: Some("glm-4.6".into()),
            tokens_in: Some(10),
            tokens_out: Some(20),
            reasoning_tokens: Some(3),
            cached_tokens: Some(4),
            finish_reason: Some("stop".into()),
            time_to_first_token_ms: Some(7),
            reasoning: Some("thought".into()),
            attempts: Some(2),
            progress_count: 5,
            last_progress: Some("answering".into()),
            error_kind: None,
            error_message: None,
            result: Some("{\"content\":[]}".into()),
            is_error: false,
            cost_usd_micros: Some(12),
            spend: vec![("glm".into(), Some(12))],
            thread_id: Some("thread".into()),
            delivery: Some("delivered".into()),
        }
    }

    fn record(id: &str) -> WriteOp {
        WriteOp::Insert {
            call: new_call(id).into(),
            started_at_ms: None,
        }
    }

    fn end(id: &str) -> WriteOp {
        WriteOp::Finish {
            id: id.into(),
            done: Arc::default(),
        }
    }

    fn ids(batch: &[Queued]) -> Vec<String> {
        let name = |op: &WriteOp| match op {
            WriteOp::Insert { call, .. } => format!("record {}", call.id),
            WriteOp::Finish { id, .. } => format!("end {id}"),
            WriteOp::Barrier => "barrier".into(),
            op => format!("write about {}", op.updated_id().unwrap_or("-")),
        };
        batch.iter().map(|q| name(&q.op)).collect()
    }

    #[test]
    fn a_calls_record_waits_for_its_end_out_of_other_calls_groups_until_it_is_due() {
        let mut awaiting = AwaitingEnd::default();
        let mut batch = Vec::new();
        // Each write queued a millisecond after the one before.
        let start = Instant::now();
        let take = |awaiting: &mut AwaitingEnd, batch: &mut Vec<Queued>, n: u64, op| {
            let mut queued = Queued::unawaited(op);
            queued.queued_at = start + Duration::from_millis(n);
            assert!(awaiting.take(queued, batch).is_none());
        };
        for (n, op) in [record("a"), record("b"), end("b"), record("c")]
            .into_iter()
            .enumerate()
        {
            take(&mut awaiting, &mut batch, n as u64, op);
        }
        // b's end commits now, with b's record right before it; a and c wait.
        assert_eq!(ids(&batch), ["record b", "end b"]);
        batch.clear();
        awaiting.release_due(start + LINGER - Duration::from_millis(1), &mut batch);
        assert!(batch.is_empty(), "{:?}", ids(&batch));
        assert_eq!(awaiting.next_due(), Some(start + LINGER));
        // Another write about a call puts its record in right before it.
        let note = WriteOp::delivery("c", crate::store::Delivery::ClientGone);
        take(&mut awaiting, &mut batch, 4, note);
        assert_eq!(ids(&batch), ["record c", "write about c"]);
        batch.clear();
        // A record is written by the time it is due, at the latest, with those that have
        // waited half as long (h's), not with a younger one (g's).
        take(&mut awaiting, &mut batch, 5, record("h"));
        let mut late = Queued::unawaited(record("g"));
        late.queued_at = start + LINGER / 2 + Duration::from_millis(1);
        assert!(awaiting.take(late, &mut batch).is_none());
        awaiting.release_due(start + LINGER, &mut batch);
        assert_eq!(ids(&batch), ["record a", "record h"]);
        assert_eq!(
            awaiting.next_due(),
            Some(start + LINGER / 2 + Duration::from_millis(1) + LINGER)
        );
        batch.clear();
        awaiting.release_all(&mut batch);
        assert_eq!(awaiting.next_due(), None);
        // A barrier orders every record before it; a second record under a taken id goes in
        // behind the first, as they were queued; a record somebody waits for is not kept.
        batch.clear();
        for op in [record("d"), record("e"), record("e"), WriteOp::Barrier] {
            take(&mut awaiting, &mut batch, 5, op);
        }
        let (awaited, _) = Queued::awaited(record("f"));
        assert!(awaiting.take(awaited, &mut batch).is_none());
        assert_eq!(
            ids(&batch),
            ["record e", "record e", "record d", "barrier", "record f"]
        );
        assert!(awaiting.records.is_empty());
    }

    #[test]
    fn records_that_went_in_with_their_ends_are_not_remembered() {
        let mut awaiting = AwaitingEnd::default();
        let mut batch = Vec::new();
        let long = Queued::unawaited(record("long"));
        assert!(awaiting.take(long, &mut batch).is_none());
        for n in 0..10_000 {
            let id = format!("quick {n}");
            for op in [record(&id), end(&id)] {
                assert!(awaiting.take(Queued::unawaited(op), &mut batch).is_none());
            }
            batch.clear();
        }
        // Only the long call's record waits; the quick ones behind it are forgotten once it
        // goes in (at the latest when due).
        assert_eq!(awaiting.records.len(), 1);
        awaiting.release_all(&mut batch);
        awaiting.next_due();
        assert!(awaiting.order.is_empty(), "{}", awaiting.order.len());
        // With none waiting long, none is remembered at all.
        for n in 0..10_000 {
            let id = format!("quick {n}");
            for op in [record(&id), end(&id)] {
                assert!(awaiting.take(Queued::unawaited(op), &mut batch).is_none());
            }
            batch.clear();
        }
        assert!(awaiting.order.is_empty(), "{}", awaiting.order.len());
    }

    #[test]
    fn records_waiting_go_in_only_as_far_as_a_group_has_room() {
        let mut awaiting = AwaitingEnd::default();
        let mut batch = Vec::new();
        for n in 0..AwaitingEnd::MOST + 1 {
            let queued = Queued::unawaited(record(&n.to_string()));
            assert!(awaiting.take(queued, &mut batch).is_none());
        }
        // Past the most kept, a record goes in at once.
        assert_eq!(ids(&batch), [format!("record {}", AwaitingEnd::MOST)]);
        batch.clear();
        batch.extend((1..BATCH).map(|_| Queued::unawaited(WriteOp::Barrier)));
        // A call's end needs room for its record too: it starts the next group instead.
        let given_back = awaiting.take(Queued::unawaited(end("0")), &mut batch);
        assert!(given_back.is_some_and(|q| matches!(q.op, WriteOp::Finish { .. })));
        awaiting.release_all(&mut batch);
        assert_eq!(batch.len(), BATCH, "one record had room");
        batch.clear();
        awaiting.release_all(&mut batch);
        assert_eq!(batch.len(), AwaitingEnd::MOST - 1);
    }

    #[test]
    fn under_load_a_group_waits_out_the_gap_and_one_call_at_a_time_waits_for_nothing() {
        let start = Instant::now();
        let mut pacing = Pacing::new(GROUP_GAP);
        assert_eq!(
            pacing.hold_until(start),
            None,
            "the first group goes at once"
        );
        pacing.committed(start, BUSY_GROUP - 1);
        assert_eq!(
            pacing.hold_until(start),
            None,
            "a group below the load's size: the next goes at once"
        );
        pacing.committed(start, BUSY_GROUP);
        let halfway = start + GROUP_GAP / 2;
        assert_eq!(pacing.hold_until(halfway), Some(start + GROUP_GAP));
        assert_eq!(
            pacing.hold_until(start + GROUP_GAP),
            None,
            "the gap is over"
        );
    }

    #[test]
    fn under_load_a_group_goes_before_its_gap_ends_once_no_call_is_left_at_work() {
        let (_location, conn) = connect_for_test();
        // A gap that never ends by itself in a test's time: only the last call's end ends it.
        let gap = Arc::new(Gap::of(Duration::from_secs(600)));
        let (tx, rx) = mpsc::channel(64);
        // The records of two calls in a group the size of a load, queued before the writer
        // starts so they go as one: the next group waits out the gap.
        let ids = ["first".to_string(), "second".to_string()];
        let load: Vec<Answer> = (0..BUSY_GROUP)
            .map(|n| format!("load-{n}"))
            .chain(ids.clone())
            .map(|id| {
                let (queued, answer) = Queued::awaited(record(&id));
                tx.try_send(queued).unwrap();
                answer
            })
            .collect();
        let writer = Writer {
            store: "test store".into(),
            health: Arc::default(),
            waiting_threads: Arc::default(),
            gap: gap.clone(),
        };
        let writer = std::thread::spawn(move || writer.run(conn, rx));
        for answer in load {
            assert!(answer.blocking_recv().unwrap().is_ok());
        }
        let at_work = || WorkingCall::new(gap.clone(), writer.thread().clone());
        let (first, second) = (at_work(), at_work());
        // A call's end is queued, then it stops being at work (as `Store::answer` has it).
        let ended = |id: &str, at_work: WorkingCall| {
            let (queued, answer) = Queued::awaited(end(id));
            tx.try_send(queued).unwrap();
            drop(at_work);
            answer
        };
        let mut first_end = ended("first", first);
        // The second is still at work: its end may join the group, which waits out the gap.
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            first_end.try_recv().is_err(),
            "the group went while a call was at work"
        );
        let second_end = ended("second", second);
        // Nobody at work: the group goes now (the gap had ten minutes to run).
        let within = Instant::now() + Duration::from_secs(20);
        let answers = [first_end, second_end].map(|mut answer| {
            loop {
                match answer.try_recv() {
                    Ok(outcome) => break outcome,
                    Err(_) if Instant::now() < within => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => panic!("the group waited out the gap with no call at work"),
                }
            }
        });
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        assert_eq!(gap.working.load(Ordering::SeqCst), 0);
        drop(tx);
        writer.join().unwrap();
    }

    /// A connection that notes the first words of every statement it runs.
    struct Noting {
        inner: Box<dyn StoreConnection>,
        ran: Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl StoreConnection for Noting {
        fn begin(&mut self) -> Result<(), super::super::BackendError> {
            self.inner.begin()
        }
        fn commit(&mut self) -> Result<(), super::super::BackendError> {
            self.inner.commit()
        }
        fn rollback(&mut self) {
            self.inner.rollback()
        }
        fn execute(
            &mut self,
            sql: &str,
            params: &[Param<'_>],
        ) -> Result<u64, super::super::BackendError> {
            let words: Vec<&str> = sql.split_whitespace().take(3).collect();
            self.ran.lock().unwrap().push(words.join(" "));
            self.inner.execute(sql, params)
        }
        fn query(
            &mut self,
            sql: &str,
            params: &[Param<'_>],
            each: &mut dyn FnMut(
                &dyn super::super::Columns,
            ) -> Result<(), super::super::BackendError>,
        ) -> Result<(), super::super::BackendError> {
            self.inner.query(sql, params, each)
        }
        fn execute_raw(&mut self, sql: &str) -> Result<(), super::super::BackendError> {
            self.inner.execute_raw(sql)
        }
    }

    #[test]
    fn a_call_recorded_and_ended_in_one_group_is_written_as_its_two_writes_would_write_it() {
        let call = new_call("template");
        let full = full_end(call.received_at_ms + 5);
        // The other way round where the end may leave a column to the record.
        let sparse = FinishedCall {
            state: Some(CallState::Failed),
            started_at_ms: Some(call.received_at_ms + 2),
            error_kind: Some("provider".into()),
            error_message: Some("refused".into()),
            is_error: true,
            thread_id: None,
            delivery: None,
            spend: vec![("glm".into(), None)],
            cost_usd_micros: None,
            ..full.clone()
        };
        for done in [full, sparse] {
            let (location, conn) = connect_for_test();
            let progress = |id: &str| WriteOp::Progress {
                id: id.into(),
                count: 1,
                message: "waiting".into(),
                model: Some("other".into()),
            };
            let record = |id: &str| WriteOp::Insert {
                call: NewCall {
                    id: id.into(),
                    ..call.clone()
                }
                .into(),
                started_at_ms: Some(call.received_at_ms + 1),
            };
            let end = |id: &str| WriteOp::Finish {
                id: id.into(),
                done: Arc::new(done.clone()),
            };
            // `one`: recorded, noted and ended at once; `two`: its end after its record's commit.
            let ran = Arc::default();
            let noting = Noting {
                inner: conn,
                ran: Arc::clone(&ran),
            };
            let ops = vec![record("one"), progress("one"), end("one")];
            let (outcomes, _) = write_all(Box::new(noting), ops);
            assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
            assert_eq!(
                *ran.lock().unwrap(),
                [
                    "INSERT INTO calls",
                    "UPDATE calls SET",
                    "INSERT INTO spend_by_day"
                ],
                "one insert of the ended call, the progress note (which changes nothing then), its spend"
            );
            let (outcomes, _) = write_all(location.connect().unwrap(), vec![record("two")]);
            assert!(outcomes[0].is_ok(), "{outcomes:?}");
            let ops = vec![progress("two"), end("two")];
            let (outcomes, _) = write_all(location.connect().unwrap(), ops);
            assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");

            let reader = StoreReader::open_at(&location).unwrap();
            let row = |id: &str| {
                let mut row = serde_json::to_value(reader.get(id).unwrap().unwrap()).unwrap();
                row["id"] = "".into();
                row
            };
            let (one, two) = (row("one"), row("two"));
            assert_eq!(one["state"], done.state.unwrap().as_str(), "{one}");
            assert_eq!(one, two);
            let (micros, unpriced) =
                spend_totals(&reader.spend_on(super::super::day_of(now_ms())).unwrap());
            let priced = done.cost_usd_micros.is_some();
            assert_eq!(
                (micros, unpriced),
                if priced { (24, 0) } else { (0, 2) },
                "each end adds its spend once"
            );
        }
    }

    #[test]
    fn the_spend_of_calls_recorded_and_ended_in_one_group_is_summed_by_provider_and_user() {
        let (location, conn) = connect_for_test();
        // One instant for every end, so that all fall on the day read back.
        let ended_at = now_ms();
        let record = |id: &str, user: Option<&str>, session: &str| WriteOp::Insert {
            call: NewCall {
                user_name: user.map(str::to_string),
                session_id: session.into(),
                ..new_call(id)
            }
            .into(),
            started_at_ms: Some(1),
        };
        let end = |id: &str, spend: &[(&str, Option<i64>)]| WriteOp::Finish {
            id: id.into(),
            done: Arc::new(FinishedCall {
                state: Some(CallState::Succeeded),
                finished_at_ms: ended_at,
                spend: (spend.iter()).map(|(p, m)| (p.to_string(), *m)).collect(),
                ..FinishedCall::default()
            }),
        };
        let ran = Arc::default();
        let noting = Noting {
            inner: conn,
            ran: Arc::clone(&ran),
        };
        let ops = vec![
            record("a", Some("ann"), "s"),
            end("a", &[("glm", Some(10)), ("kimi", Some(1))]),
            record("b", Some("ann"), "s"),
            end("b", &[("glm", Some(5))]),
            record("c", None, "s"),
            end("c", &[("glm", None)]),
            record("d", Some("bob"), "s"),
            end("d", &[("glm", Some(7))]),
            record("e", None, "s"),
            end("e", &[("glm", None), ("kimi", Some(2))]),
            record("f", Some("ann"), "s"),
            end("f", &[("glm", None)]),
            // Another call naming a's id: refused, so its spend is nobody's.
            record("a", Some("bob"), "another session"),
            end("a", &[("glm", Some(1000))]),
        ];
        let (outcomes, _) = write_all(Box::new(noting), ops);
        assert!(outcomes[..12].iter().all(Result::is_ok), "{outcomes:?}");
        assert!(
            (outcomes[12..].iter()).all(|o| matches!(o, Err(WriteFailure::IdTaken))),
            "{outcomes:?}"
        );
        let spends = (ran.lock().unwrap().iter())
            .filter(|words| words.starts_with("INSERT INTO spend_by_day"))
            .count();
        assert_eq!(
            spends, 5,
            "one sum for each provider and user, not one for each spend"
        );
        let reader = StoreReader::open_at(&location).unwrap();
        let mut spend: Vec<_> = (reader.spend_on(super::super::day_of(ended_at)).unwrap())
            .into_iter()
            .map(|s| (s.provider, s.user_name, s.cost_usd_micros, s.unpriced_calls))
            .collect();
        spend.sort();
        let ann = Some("ann".to_string());
        assert_eq!(
            spend,
            [
                ("glm".into(), None, 0, 2),
                ("glm".into(), ann.clone(), 15, 1),
                ("glm".into(), Some("bob".into()), 7, 0),
                ("kimi".into(), None, 2, 0),
                ("kimi".into(), ann, 1, 0),
            ]
        );
    }

    #[test]
    fn only_progress_may_come_between_a_record_and_its_end_for_them_to_be_written_as_one() {
        let between = [
            WriteOp::delivery("a", crate::store::Delivery::ClientGone),
            WriteOp::Task {
                id: "a".into(),
                kind: "extension".into(),
            },
        ];
        for op in between {
            let group: Vec<Queued> = [record("a"), op, end("a")]
                .into_iter()
                .map(Queued::unawaited)
                .collect();
            assert!(ended_in_group(&group).is_empty());
        }
        // An end whose record went in an earlier group, and a record whose end has not come.
        let group: Vec<Queued> = [end("a"), record("a")]
            .into_iter()
            .map(Queued::unawaited)
            .collect();
        assert!(ended_in_group(&group).is_empty());
    }
}
