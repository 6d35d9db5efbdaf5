//! Calls: every `tools/call` becomes a record at receipt and a supervised task until its end.
//!
//! The call runs in its own task, owned here rather than by the MCP request, so it
//! outlives a client that goes away; its one deadline bounds everything under it;
//! its result is committed to the store before anyone is handed it.

pub mod events;
pub mod kinds;
mod late;
pub mod output;
pub mod progress;
pub mod record;
pub mod redact;
#[cfg(test)]
mod tests;
pub mod view;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use kinds::{FailureKind, TransportKind};
pub use progress::{Progress, Snapshot};

use crate::metrics;
use crate::providers::Seconds;
use crate::store::{
    CallState, Delivery, FinishedCall, InsertRoom, NewCall, QueuedWrite, Store, StoreError, now_ms,
};
use crate::users::Caller;

/// `_meta` key naming the call: the shim proposes it on `tools/call`, every result carries it.
pub const CALL_ID_META: &str = "exai.dev/callId";

/// Why a call was stopped before its end.
#[derive(Debug, Clone)]
pub enum CancelReason {
    /// The client sent `notifications/cancelled` (or `call_cancel`).
    Client(Option<String>),
    /// The daemon is shutting down.
    Shutdown,
    /// The personal token of the call's user was revoked while it ran.
    Revoked,
}

/// A tool's failure, as the tool reports it.
#[derive(Debug, Clone)]
pub struct ToolFailure {
    /// Machine-readable kind for the record.
    pub kind: FailureKind,
    pub message: String,
    /// A timeout of something under the call (a provider gone silent).
    pub timed_out: bool,
}

impl ToolFailure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            timed_out: false,
        }
    }
}

/// The end of a call, as handed to whoever waits for it.
#[derive(Debug)]
pub struct Outcome {
    pub state: CallState,
    pub result: CallToolResult,
}

/// Who asked for a call, and how.
#[derive(Debug, Clone)]
pub struct CallOrigin {
    pub session_id: String,
    pub client_name: Option<String>,
    pub client_version: Option<String>,
    pub transport: TransportKind,
    /// The person the call is recorded under; what they may see of other calls.
    pub caller: Caller,
    /// The exai version of the client's shim, when a shim relays the session.
    pub shim_version: Option<String>,
}

/// Where a call's first write stands. It is queued when the call starts, not waited for:
/// the work runs meanwhile, and the call's end reads the writer's answer before it writes
/// the outcome, so the answer is still committed before anyone is handed it.
#[derive(Debug)]
enum Recording {
    /// Not handed to the store yet: the call has not started. The room kept for it in the
    /// store's queue (none when the store's writer has stopped) is used when it does.
    Pending(Arc<NewCall>, Option<InsertRoom>),
    /// Queued as the call started.
    Queued(Arc<NewCall>, QueuedWrite),
    /// Taken by the call's end.
    Taken,
}

/// A call in flight.
#[derive(Debug)]
pub struct LiveCall {
    pub id: String,
    pub tool: String,
    pub origin: CallOrigin,
    pub received_at: Instant,
    pub received_at_ms: i64,
    pub deadline: Instant,
    pub budget: Duration,
    pub progress: Progress,
    /// Tool, arguments, client and user (a SHA-256 digest: the arguments, a long prompt among
    /// them, are not kept twice): an identical call while this one runs attaches to it.
    pub dedupe_key: DedupeKey,
    /// Counted among its person's calls in flight (a refusal being recorded is not).
    counted: bool,
    cancel: CancellationToken,
    cancel_reason: Mutex<Option<CancelReason>>,
    /// Set once, at the call's end; `ended` wakes whoever waits for it. (A watch channel
    /// would do both, at ten times the size: a waiting call holds it.)
    outcome: std::sync::OnceLock<Arc<Outcome>>,
    ended: tokio::sync::Notify,
    detached: AtomicBool,
    /// The client got a call handle instead of the answer (it fetches it with `call_result`).
    handed_off: AtomicBool,
    started_at_ms: Mutex<Option<i64>>,
    usage: Mutex<Usage>,
    reasoning: Mutex<Option<String>>,
    /// Why the model stopped, for the record.
    finish_reason: Mutex<Option<String>>,
    /// The call's record on its way to the store (see [`Recording`]).
    record: Mutex<Recording>,
    /// The conversation the call added turns to, recorded with its end.
    thread: Mutex<Option<String>>,
    /// The call's span (`call_id`, `tool`, `session`): one for the call's work and for the
    /// request waiting on it, made once (each span keeps its fields rendered for the log).
    pub span: tracing::Span,
}

impl LiveCall {
    /// Stops the call's work; the first reason given wins.
    pub fn cancel(&self, reason: CancelReason) {
        let mut slot = self.cancel_reason.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(reason);
        }
        drop(slot);
        self.cancel.cancel();
    }

    /// Notes that the call added turns to conversation `thread_id` (its record says so at its end).
    pub fn note_thread(&self, thread_id: &str) {
        *self.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread_id.to_string());
    }

    /// Whether the call was told to stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Waits until the call has ended (its record is already committed then).
    pub async fn finished(&self) -> Arc<Outcome> {
        loop {
            // Registered before the outcome is looked at, so an end in between still wakes it.
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if let Some(outcome) = self.outcome.get() {
                return outcome.clone();
            }
            ended.await;
        }
    }

    /// The client stopped waiting (stream closed): the call goes on and keeps its result.
    pub fn detach(&self) {
        self.detached.store(true, Ordering::Relaxed);
    }

    pub fn is_detached(&self) -> bool {
        self.detached.load(Ordering::Relaxed)
    }

    /// The client was answered with a call handle; the result waits for `call_result`.
    pub fn hand_off(&self) {
        self.handed_off.store(true, Ordering::Relaxed);
        self.detach();
    }

    /// The outcome, if the call has ended.
    pub fn outcome(&self) -> Option<Arc<Outcome>> {
        self.outcome.get().cloned()
    }

    pub fn elapsed(&self) -> Duration {
        self.received_at.elapsed()
    }

    fn cancel_reason(&self) -> Option<CancelReason> {
        self.cancel_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Calls in flight by id, and by what makes two calls the same (`running_twin` looks up its
/// few namesakes, not every call in flight).
#[derive(Default)]
struct Live {
    by_id: HashMap<String, Arc<LiveCall>>,
    /// By `dedupe_key`.
    by_key: HashMap<DedupeKey, Vec<Arc<LiveCall>>>,
    /// Proposed ids taken by calls being opened, not yet in `by_id`: two calls proposing the same
    /// id at once get it once.
    opening: std::collections::HashSet<String>,
    /// Calls in flight by person (the owner's are not counted).
    by_user: HashMap<String, usize>,
}

impl Live {
    /// Takes `id` for a call being opened, if no call has it.
    fn take_id(&mut self, id: &str) -> bool {
        !self.by_id.contains_key(id) && self.opening.insert(id.to_string())
    }

    /// Counts a call of `user` about to open, unless they already have `most` (0: no limit);
    /// how many they have if so.
    fn count_in(&mut self, user: &str, most: usize) -> Result<(), usize> {
        let running = self.by_user.get(user).copied().unwrap_or(0);
        if most > 0 && running >= most {
            return Err(running);
        }
        *self.by_user.entry(user.to_string()).or_default() += 1;
        Ok(())
    }

    /// Forgets one call of `user` (counted by [`Self::count_in`]).
    fn count_out(&mut self, user: &str) {
        if let Some(count) = self.by_user.get_mut(user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.by_user.remove(user);
            }
        }
    }

    /// Registers a call counted in by [`Self::count_in`] as it opened.
    fn insert(&mut self, call: Arc<LiveCall>) {
        self.opening.remove(&call.id);
        self.by_key
            .entry(call.dedupe_key)
            .or_default()
            .push(call.clone());
        if let Some(replaced) = self.by_id.insert(call.id.clone(), call)
            && replaced.counted
            && let Some(user) = replaced.origin.caller.user_name()
        {
            // Never expected (ids are taken once): the count stays true all the same.
            self.count_out(user);
        }
    }

    fn remove(&mut self, call: &LiveCall) {
        if self.by_id.remove(&call.id).is_some()
            && call.counted
            && let Some(user) = call.origin.caller.user_name()
        {
            self.count_out(user);
        }
        if let Some(same) = self.by_key.get_mut(&call.dedupe_key) {
            same.retain(|c| c.id != call.id);
            if same.is_empty() {
                self.by_key.remove(&call.dedupe_key);
            }
        }
    }
}

/// A person already has as many calls in flight as `EXAI_USER_MAX_CALLS` allows.
#[derive(Debug, thiserror::Error)]
#[error(
    "{user} already has {running} calls in flight on this exai, as many as EXAI_USER_MAX_CALLS \
     allows; wait for one to end, or cancel one (call_cancel)"
)]
pub struct TooManyCalls {
    pub user: String,
    pub running: usize,
}

/// A call counted in for its person while it opens.
struct Counted<'a> {
    calls: &'a Calls,
    /// `None` once the registry keeps the count.
    user: Option<String>,
}

impl Counted<'_> {
    fn kept(mut self) {
        self.user = None;
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        if let Some(user) = &self.user {
            self.calls.live().count_out(user);
        }
    }
}

/// What makes two calls identical, digested (see [`LiveCall::dedupe_key`]).
pub type DedupeKey = [u8; 32];

/// How far a proposed id's time may be from now: the shim mints it as it sends the call (a
/// remote shim's clock may be a little off).
const PROPOSED_ID_SKEW: Duration = Duration::from_secs(300);

/// A UUIDv7 whose time is within [`PROPOSED_ID_SKEW`] of now: what the shim and `exai call` mint.
pub(crate) fn freshly_minted(id: &uuid::Uuid) -> bool {
    let Some((seconds, nanos)) = id
        .get_version()
        .filter(|v| *v == uuid::Version::SortRand)
        .and_then(|_| id.get_timestamp())
        .map(|t| t.to_unix())
    else {
        return false;
    };
    let minted = std::time::UNIX_EPOCH + Duration::new(seconds, nanos);
    let now = std::time::SystemTime::now();
    let apart = now
        .duration_since(minted)
        .or_else(|_| minted.duration_since(now))
        .unwrap_or(Duration::MAX);
    apart <= PROPOSED_ID_SKEW
}

/// The digest of who asks (user, client) which tool with which arguments. The arguments are
/// serialized straight into the digest, not into a text kept beside them.
fn dedupe_key(
    user: &str,
    client: &str,
    tool: &str,
    arguments: &serde_json::Map<String, Value>,
) -> DedupeKey {
    struct Digesting(ring::digest::Context);
    impl std::io::Write for Digesting {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.update(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut digest = Digesting(ring::digest::Context::new(&ring::digest::SHA256));
    // Each part ends with a separator no name holds, so parts cannot run into each other.
    for part in [user, client, tool] {
        digest.0.update(part.as_bytes());
        digest.0.update(b"\x1f");
    }
    // Writing into a digest cannot fail; a map of JSON values always serializes.
    let _ = serde_json::to_writer(&mut digest, arguments);
    let mut key = [0; 32];
    key.copy_from_slice(digest.0.finish().as_ref());
    key
}

/// The registry of calls in flight, and the door to their records.
pub struct Calls {
    store: Store,
    /// Most tokens of text a client is handed (`MAX_MCP_OUTPUT_TOKENS`).
    pub max_output_tokens: usize,
    live: Mutex<Live>,
    /// Signalled whenever a call ends (shutdown waits on it).
    ended: tokio::sync::Notify,
    /// The replica this process is, named in the record of each call it opens.
    replica: Option<String>,
    /// Calls starting, moving and ending, for whoever listens (the live page).
    events: events::CallEvents,
    /// Records of ended calls the store could not take yet.
    late: Arc<late::LateRecords>,
    /// Set as exai stops ([`Calls::drain`]): a call started from then on (its session still
    /// open) is interrupted at once — recorded, and its client told — rather than left running
    /// as the process ends.
    closing: AtomicBool,
}

impl Calls {
    pub fn new(store: Store, max_output_tokens: usize) -> Self {
        Self {
            store,
            max_output_tokens,
            live: Mutex::new(Live::default()),
            ended: tokio::sync::Notify::new(),
            replica: None,
            events: events::CallEvents::default(),
            late: Arc::default(),
            closing: AtomicBool::new(false),
        }
    }

    /// The registry of replica `id`: the calls it opens are recorded as its own.
    pub fn for_replica(mut self, id: String) -> Self {
        self.replica = Some(id);
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Notes how call `id`'s answer went to the client, without waiting for the store to
    /// commit it (the answer itself was committed with the call's end). A record still waiting
    /// for the store takes the note with it.
    pub async fn note_delivery(&self, id: &str, delivery: Delivery) -> Result<(), StoreError> {
        if self.late.note_delivery(id, &delivery) {
            return Ok(());
        }
        self.store.note_delivery(id, delivery).await
    }

    /// Records how call `id`'s answer went to the client; returns once it is committed (or
    /// noted on its record waiting for the store).
    pub async fn set_delivery(&self, id: &str, delivery: Delivery) -> Result<(), StoreError> {
        if self.late.note_delivery(id, &delivery) {
            return Ok(());
        }
        self.store.set_delivery(id, delivery).await
    }

    /// How many ended calls' records wait for the store to take them.
    pub fn records_waiting(&self) -> usize {
        self.late.count()
    }

    /// What is wrong with the store now, as `exai status` and `/healthz` say it: its own
    /// problems, and the records of ended calls that wait for it.
    pub fn store_problems(&self) -> Vec<String> {
        let mut problems = self.store.health().problems();
        match self.records_waiting() {
            0 => {}
            1 => problems
                .push("the record of 1 ended call waits for the store to take it".to_string()),
            n => problems.push(format!(
                "the records of {n} ended calls wait for the store to take them"
            )),
        }
        match self.store.threads_waiting() {
            0 => {}
            1 => problems.push(
                "1 conversation thread's latest turns wait for the store to take them".to_string(),
            ),
            n => problems.push(format!(
                "{n} conversation threads' latest turns wait for the store to take them"
            )),
        }
        problems
    }

    /// Shutdown, once calls have ended: gives the records and thread saves waiting for the
    /// store a few seconds ([`late::AT_EXIT`]), and names those it did not take.
    pub async fn settle_records(&self) {
        tokio::join!(
            self.late.settle(late::AT_EXIT),
            self.store.settle_threads(late::AT_EXIT)
        );
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls in flight, oldest first.
    pub fn in_flight(&self) -> Vec<Arc<LiveCall>> {
        let mut calls: Vec<_> = self.live().by_id.values().cloned().collect();
        calls.sort_by_key(|c| c.received_at);
        calls
    }

    pub fn in_flight_count(&self) -> usize {
        self.live().by_id.len()
    }

    /// The people (not the owner) with calls in flight here.
    pub fn people_in_flight(&self) -> Vec<String> {
        self.live().by_user.keys().cloned().collect()
    }

    /// Counts a call of `user` about to open (see [`Live::count_in`]): given back if it does
    /// not reach the registry (its opening was dropped), kept by the registry once it does.
    fn count_in(&self, user: &str, most: usize) -> Result<Counted<'_>, TooManyCalls> {
        self.live()
            .count_in(user, most)
            .map(|()| Counted {
                calls: self,
                user: Some(user.to_string()),
            })
            .map_err(|running| TooManyCalls {
                user: user.to_string(),
                running,
            })
    }

    pub fn get(&self, id: &str) -> Option<Arc<LiveCall>> {
        self.live().by_id.get(id).cloned()
    }

    /// A call still running with the same tool, arguments and client as `call`, opened before
    /// it, if any. Only an earlier call qualifies: two identical calls opened together would
    /// otherwise each attach to the other and both wait out their deadline.
    pub fn running_twin(&self, call: &LiveCall) -> Option<Arc<LiveCall>> {
        fn opened(c: &LiveCall) -> (Instant, &str) {
            (c.received_at, &c.id)
        }
        let live = self.live();
        live.by_key
            .get(&call.dedupe_key)?
            .iter()
            .filter(|c| {
                c.dedupe_key == call.dedupe_key && c.outcome().is_none() && opened(c) < opened(call)
            })
            .min_by_key(|c| opened(c))
            .cloned()
    }

    /// Creates the record of a call at receipt and registers it; nothing runs yet.
    ///
    /// `proposed_id` (set by the exai shim, so it can name the call even if the
    /// daemon vanishes) is used when it is a UUIDv7 minted in the last few minutes that no call
    /// here has; otherwise a new UUIDv7 is made. (Anyone may propose: an id of another person's
    /// call, or an old one, must not become this call's name, even for a while.)
    ///
    /// A person (not the owner) with `most_per_person` calls in flight here already is refused
    /// (`Some(0)`: no limit; `None`: a refusal being recorded, not counted at all); counted as
    /// the call opens, so calls sent at once cannot all slip past.
    pub async fn open(
        &self,
        proposed_id: Option<&str>,
        tool: &str,
        arguments: &serde_json::Map<String, Value>,
        origin: CallOrigin,
        budget: Duration,
        most_per_person: Option<usize>,
    ) -> Result<Arc<LiveCall>, TooManyCalls> {
        let counted = match (origin.caller.user_name(), most_per_person) {
            (Some(user), Some(most)) => Some(self.count_in(user, most)?),
            _ => None,
        };
        // The user is part of it: nobody is handed another person's answer.
        let dedupe_key = dedupe_key(
            origin.caller.user_name().unwrap_or(""),
            origin.client_name.as_deref().unwrap_or(""),
            tool,
            arguments,
        );
        let fresh = || uuid::Uuid::now_v7().to_string();
        let proposed = proposed_id
            .and_then(|p| uuid::Uuid::parse_str(p).ok())
            .filter(freshly_minted)
            .map(|u| u.to_string())
            .filter(|id| self.live().take_id(id));
        let received_at = Instant::now();
        let received_at_ms = now_ms();
        let arguments_text = redact::cap(
            redact::arguments_text(arguments),
            redact::MAX_ARGUMENTS_CHARS,
        );
        let record = Arc::new(NewCall {
            id: proposed.clone().unwrap_or_else(fresh),
            session_id: origin.session_id.clone(),
            client_name: origin.client_name.clone(),
            client_version: origin.client_version.clone(),
            transport: origin.transport,
            tool: tool.to_string(),
            arguments: arguments_text,
            received_at_ms,
            deadline_at_ms: received_at_ms + budget.as_millis() as i64,
            replica: self.replica.clone(),
            user_name: origin.caller.user_name().map(str::to_string),
        });
        let id = record.id.clone();
        // Waiting here for room in the store's queue is the back-pressure of a store that falls
        // behind: the record then goes in as the call starts, with no wait.
        let room = self.store.room_for_insert().await.ok();
        let progress = Progress::new(tool).of_user(origin.caller.user_name());
        let span = tracing::info_span!("call", call_id = %id, tool, session = %origin.session_id);
        let call = Arc::new(LiveCall {
            span,
            id: id.clone(),
            tool: tool.to_string(),
            origin,
            received_at,
            received_at_ms,
            deadline: received_at + budget,
            budget,
            progress,
            dedupe_key,
            counted: counted.is_some(),
            cancel: CancellationToken::new(),
            cancel_reason: Mutex::new(None),
            outcome: std::sync::OnceLock::new(),
            ended: tokio::sync::Notify::new(),
            detached: AtomicBool::new(false),
            handed_off: AtomicBool::new(false),
            started_at_ms: Mutex::new(None),
            usage: Mutex::new(Usage::default()),
            reasoning: Mutex::new(None),
            finish_reason: Mutex::new(None),
            record: Mutex::new(Recording::Pending(record, room)),
            thread: Mutex::new(None),
        });
        self.live().insert(call.clone());
        if let Some(counted) = counted {
            counted.kept();
        }
        self.events
            .publish(|| events::CallEvent::Started(events::LiveSummary::of(&call)));
        tracing::info!(
            call_id = call.id.as_str(),
            tool,
            session = call.origin.session_id.as_str(),
            client = call.origin.client_name.as_deref().unwrap_or("?"),
            user = call.origin.caller.user_name().unwrap_or("(owner)"),
            transport = call.origin.transport.as_str(),
            budget_s = budget.as_secs(),
            "call received"
        );
        Ok(call)
    }

    /// Runs `work` for `call` in its own task, bounded by the call's deadline and cancel token.
    pub fn start(
        self: &Arc<Self>,
        call: Arc<LiveCall>,
        work: BoxFuture<'static, Result<CallToolResult, ToolFailure>>,
    ) {
        let started_ms = now_ms();
        *call.started_at_ms.lock().unwrap_or_else(|p| p.into_inner()) = Some(started_ms);
        // The record is created as the call starts, in one write whose commit is read at the
        // end; queued here, before the caller's next write about the call (its task, how its
        // answer went), which the queue keeps after it.
        {
            let mut recording = call.record.lock().unwrap_or_else(|p| p.into_inner());
            if let Recording::Pending(record, room) = &mut *recording
                && let Some(room) = room.take()
            {
                let queued = self.store.insert_started(room, record.clone(), started_ms);
                *recording = Recording::Queued(record.clone(), queued);
            }
        }
        if self.closing.load(Ordering::Acquire) {
            call.cancel(CancelReason::Shutdown);
        }
        let calls = self.clone();
        let span = call.span.clone();
        crate::spawn::in_span(span, async move { calls.supervise(call, work).await });
    }

    async fn supervise(
        &self,
        call: Arc<LiveCall>,
        work: BoxFuture<'static, Result<CallToolResult, ToolFailure>>,
    ) {
        tracing::debug!("call started");
        let deadline = tokio::time::Instant::from_std(call.deadline);
        // A panic in a tool is a failed call, ended and recorded like any other; uncaught it
        // would end this task and leave the call running for ever.
        let work = std::panic::AssertUnwindSafe(work)
            .catch_unwind()
            .map(|ran| ran.unwrap_or_else(|panic| Err(panicked(&*panic))));
        let ended = tokio::select! {
            biased;
            _ = call.cancel.cancelled() => Err(None),
            r = tokio::time::timeout_at(deadline, work) => r.map_err(|_| Some(call.progress.snapshot())),
        };
        let (state, result, failure) = match ended {
            // A result marked as an error (a relayed or attached answer) keeps its reason too.
            Ok(Ok(result)) if result.is_error == Some(true) => {
                let reason = first_text(&result);
                (
                    CallState::Failed,
                    result,
                    Some((FailureKind::ToolError, reason)),
                )
            }
            Ok(Ok(result)) => (CallState::Succeeded, result, None),
            Ok(Err(failure)) => {
                let state = if failure.timed_out {
                    CallState::TimedOut
                } else {
                    CallState::Failed
                };
                let text = format!(
                    "{} failed: {} (call {})",
                    call.tool, failure.message, call.id
                );
                (
                    state,
                    error_result(&text),
                    Some((failure.kind, failure.message)),
                )
            }
            Err(Some(snapshot)) => {
                let message = format!(
                    "{} timed out after {} (the call's deadline) while {}; \
                     the upstream request was dropped (call {})",
                    call.tool,
                    Seconds(call.budget),
                    stage_and_duration(&snapshot),
                    call.id
                );
                (
                    CallState::TimedOut,
                    error_result(&message),
                    Some((FailureKind::Deadline, message)),
                )
            }
            Err(None) => match call.cancel_reason() {
                Some(CancelReason::Shutdown) => {
                    let message = format!(
                        "{} was interrupted: the exai daemon shut down before it finished (call {})",
                        call.tool, call.id
                    );
                    (
                        CallState::Interrupted,
                        error_result(&message),
                        Some((FailureKind::Interrupted, message)),
                    )
                }
                reason => {
                    let why = match reason {
                        Some(CancelReason::Client(Some(r))) => {
                            format!("cancelled by the client: {r}")
                        }
                        Some(CancelReason::Revoked) => {
                            "cancelled: its user's personal token was revoked".to_string()
                        }
                        _ => "cancelled by the client".to_string(),
                    };
                    let message = format!("{} {why} (call {})", call.tool, call.id);
                    (
                        CallState::Cancelled,
                        error_result(&message),
                        Some((FailureKind::Cancelled, message)),
                    )
                }
            },
        };
        // Boxed: the finish path is large, and every call in flight would carry its room.
        Box::pin(self.finish(&call, &call.tool, state, result, failure)).await;
    }

    /// Ends `call`; `metered_tool` is its tool as `/metrics` counts it (a registry name, or
    /// [`metrics::REFUSED_TOOL`] for a call refused before running).
    async fn finish(
        &self,
        call: &Arc<LiveCall>,
        metered_tool: &str,
        state: CallState,
        mut result: CallToolResult,
        failure: Option<(FailureKind, String)>,
    ) {
        let mut meta = result.meta.take().unwrap_or_default();
        // A result fetched for another call (call_result, an attached twin) keeps its own id.
        meta.entry(CALL_ID_META)
            .or_insert_with(|| Value::String(call.id.clone()));
        result.meta = Some(meta);
        let snapshot = call.progress.snapshot();
        let (progress_count, last_sent) = call.progress.sent();
        // A call that sent no progress line records the line it would have sent last.
        let last_progress = Some(last_sent.unwrap_or_else(|| snapshot.message()));
        let result_text = serde_json::to_string(&result).unwrap_or_default();
        let mut usage = call.usage();
        // A call stopped before its tool said what it cost (a consensus cancelled after some
        // models answered) still cost what its requests billed.
        if usage.cost.is_empty() {
            usage.cost = call.progress.billed_in_full();
        }
        // A call stopped while a model streamed (deadline, cancel) reported no usage: the
        // provider billed what it sent, which is not known — unknown, never $0.
        if usage.cost.is_empty() && snapshot.tokens_out > 0 {
            let provider = snapshot.provider.as_deref().unwrap_or("-");
            usage.cost.add(provider, None);
        }
        // Counted from the stream when the provider reported no usage.
        let tokens_out = usage
            .tokens_out
            .or((snapshot.tokens_out > 0).then_some(snapshot.tokens_out));
        let done = FinishedCall {
            delivery: delivery_at_end(call, state).map(|d| d.to_string()),
            state: Some(state),
            started_at_ms: *call.started_at_ms.lock().unwrap_or_else(|p| p.into_inner()),
            finished_at_ms: now_ms(),
            provider: snapshot.provider.clone(),
            model: snapshot.model.clone(),
            tokens_in: usage.tokens_in.map(|t| t as i64),
            tokens_out: tokens_out.map(|t| t as i64),
            attempts: usage.attempts.map(i64::from),
            reasoning_tokens: usage.reasoning_tokens.map(|t| t as i64),
            cached_tokens: usage.cached_tokens.map(|t| t as i64),
            finish_reason: call
                .finish_reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
            time_to_first_token_ms: usage.time_to_first_token.map(|t| t.as_millis() as i64),
            reasoning: call
                .reasoning
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .map(|r| redact::stored(r, redact::MAX_RESULT_CHARS)),
            progress_count,
            last_progress,
            error_kind: failure.as_ref().map(|f| f.0.as_str().to_string()),
            error_message: failure.as_ref().map(|f| f.1.clone()),
            result: Some(redact::stored(result_text, redact::MAX_RESULT_CHARS)),
            is_error: result.is_error == Some(true),
            cost_usd_micros: usage.cost.micros(),
            spend: usage.cost.micros_by_provider(),
            thread_id: call.thread.lock().unwrap_or_else(|p| p.into_inner()).take(),
        };
        // Invariant 3: the result is committed before anyone is handed it.
        let recording = std::mem::replace(
            &mut *call.record.lock().unwrap_or_else(|p| p.into_inner()),
            Recording::Taken,
        );
        let stored = self
            .record_end(call, recording, done)
            .await
            .map(|recorded_as| {
                // The proposed id named another call's record: this one has a fresh id.
                if let (Some(fresh), Some(meta)) = (recorded_as, result.meta.as_mut()) {
                    meta.insert(CALL_ID_META.into(), Value::String(fresh));
                }
            });
        if let Err(error) = stored {
            tracing::error!(%error, "could not record the call; answering anyway, its record kept to write once the store takes it");
            result.content.push(ContentBlock::text(format!(
                "Note: exai could not record this call ({error}); the answer above is complete. \
                 exai keeps its record in memory and writes it once the call store takes it \
                 again; until then only this exai's call_result has it (not `exai calls show {}` \
                 nor another replica). A conversation it began or continued can be continued \
                 through this exai meanwhile.",
                call.id
            )));
        }
        let elapsed = call.elapsed();
        metrics::call_ended(&metrics::CallEnd {
            tool: metered_tool,
            model: snapshot.model.as_deref(),
            outcome: state.as_str(),
            duration: elapsed,
            time_to_first_token: usage.time_to_first_token,
            tokens_in: usage.tokens_in,
            tokens_out,
        });
        if let Some(micros) = usage.cost.micros() {
            metrics::add_cost(metered_tool, snapshot.model.as_deref(), micros as f64 / 1e6);
        }
        let elapsed_ms = elapsed.as_millis() as u64;
        match &failure {
            None => tracing::info!(
                outcome = state.as_str(),
                duration_ms = elapsed_ms,
                model = snapshot.model.as_deref().unwrap_or("-"),
                tokens_in = usage.tokens_in,
                tokens_out = usage.tokens_out,
                cost_usd = %crate::providers::price::usd(usage.cost.micros()),
                "call finished"
            ),
            Some((kind, message)) => tracing::warn!(
                outcome = %state,
                duration_ms = elapsed_ms,
                error_kind = kind.as_str(),
                error = %message,
                "call finished"
            ),
        }
        // The record keeps the whole answer; the client gets what it accepts.
        let result = output::fitted(result, self.max_output_tokens, &call.id).await;
        // Out of the live calls before its waiters hear the end: a lookup by id from then on
        // reads the (already final) record, never this call under an id it may have proposed
        // and lost to an earlier record.
        self.live().remove(call);
        // A call ends once (`finish` is its supervisor's last step).
        let _ = call.outcome.set(Arc::new(Outcome { state, result }));
        call.ended.notify_waiters();
        self.events.publish(|| events::CallEvent::Ended {
            id: call.id.clone(),
            tool: call.tool.clone(),
            user: call.origin.caller.user_name().map(str::to_string),
            state,
            duration_ms: elapsed_ms,
        });
        self.ended.notify_waiters();
    }

    /// Writes `call`'s end after making sure its record exists: queues the end behind the
    /// insert queued at its start and reads both answers; a call that never started, or whose
    /// id was taken, has both written now by what the store holds. `Some(id)` when the call had
    /// to be recorded under a fresh id. A store that did not take them gets them later
    /// ([`late`]): the error says why they wait.
    async fn record_end(
        &self,
        call: &LiveCall,
        mut recording: Recording,
        done: FinishedCall,
    ) -> Result<Option<String>, StoreError> {
        // Refused already (its id names another call's record): no end goes under that id (the
        // writer's memory of refused ids is bounded; this call's own is not). It is recorded
        // as one not recorded yet, under a fresh id.
        if let Recording::Queued(record, queued) = &mut recording
            && queued.refused()
        {
            recording = Recording::Pending(record.clone(), None);
        }
        let (record, done) = match recording {
            Recording::Taken => return self.store.finish(&call.id, done).await.map(|()| None),
            // The room kept for it goes back first: its insert takes a place of its own.
            Recording::Pending(record, _room) => (record, done),
            Recording::Queued(record, queued) => {
                // The end goes in right behind the record (a quick call's two share a commit),
                // and counts only if the record took: its answer is read after the record's.
                // Shared with the queue, not copied: kept here only in case the store fails it.
                let done = Arc::new(done);
                let finishing = self.store.queue_finish(&call.id, done.clone()).await;
                let late = |done| late::Late::new(record.clone(), Arc::unwrap_or_clone(done));
                match (self.store.answer(queued).await, finishing) {
                    (Ok(()), Ok(finishing)) => {
                        return match self.store.answer(finishing).await {
                            Ok(()) => Ok(None),
                            Err(error) => Err(self.keep_late(late(done), error)),
                        };
                    }
                    // Recorded now, under a fresh id the answer names.
                    (Err(StoreError::IdTaken { .. }), _) => {
                        (record.clone(), Arc::unwrap_or_clone(done))
                    }
                    (Err(error), _) | (Ok(()), Err(error)) => {
                        return Err(self.keep_late(late(done), error));
                    }
                }
            }
        };
        let late = late::Late::new(record, done);
        // Boxed: the rare path, the largest, which every call's end would otherwise carry.
        match Box::pin(late::write(&self.store, &late)).await {
            Ok(recorded_as) => Ok(recorded_as),
            Err(error) => Err(self.keep_late(late, error)),
        }
    }

    /// Keeps a call's record and end, which the store did not take (`error`), to write later;
    /// returns the error, which the answer names.
    fn keep_late(&self, late: late::Late, error: StoreError) -> StoreError {
        self.late.keep(&self.store, late);
        error
    }

    /// Records a call that was refused before running (unknown tool); returns its id.
    pub async fn reject(
        &self,
        proposed_id: Option<&str>,
        tool: &str,
        arguments: &serde_json::Map<String, Value>,
        origin: CallOrigin,
        kind: FailureKind,
        message: &str,
    ) -> String {
        // Recorded whatever the person has in flight: a refusal is never itself refused.
        match self
            .open(proposed_id, tool, arguments, origin, Duration::ZERO, None)
            .await
        {
            Ok(call) => {
                let result = error_result(message);
                self.finish(
                    &call,
                    metrics::REFUSED_TOOL,
                    CallState::Failed,
                    result,
                    Some((kind, message.to_string())),
                )
                .await;
                call.id.clone()
            }
            Err(error) => {
                tracing::error!(%error, tool, "could not record a refused call");
                String::new()
            }
        }
    }

    /// Shutdown: waits up to `grace` for calls to end, then interrupts the rest.
    pub async fn drain(&self, grace: Duration) {
        self.closing.store(true, Ordering::Release);
        let until = tokio::time::Instant::now() + grace;
        loop {
            let notified = self.ended.notified();
            let left = self.in_flight_count();
            if left == 0 {
                return;
            }
            tracing::info!(calls_in_flight = left, "waiting for calls to finish");
            if tokio::time::timeout_at(until, notified).await.is_err() {
                break;
            }
        }
        let rest = self.in_flight();
        tracing::warn!(calls = rest.len(), "grace period over: interrupting calls");
        for call in &rest {
            call.cancel(CancelReason::Shutdown);
        }
        for call in rest {
            // Each ends promptly now that its token is cancelled; bounded anyway.
            let _ = tokio::time::timeout(Duration::from_secs(5), call.finished()).await;
        }
    }
}

/// Usage a tool reports for the record.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub tokens_in: Option<u64>,
    pub tokens_out: Option<u64>,
    pub reasoning_tokens: Option<u64>,
    /// Input tokens served from the provider's cache (part of `tokens_in`).
    pub cached_tokens: Option<u64>,
    pub time_to_first_token: Option<Duration>,
    pub attempts: Option<u32>,
    /// What the providers billed (unknown where a model has no price).
    pub cost: crate::providers::Cost,
}

impl LiveCall {
    /// Reports the provider's usage figures for the record.
    pub fn set_usage(&self, usage: Usage) {
        *self.usage_slot() = usage;
    }

    /// Keeps the model's reasoning for the record (apart from the answer).
    pub fn set_reasoning(&self, reasoning: Option<String>) {
        *self.reasoning.lock().unwrap_or_else(|p| p.into_inner()) = reasoning;
    }

    /// Keeps why the model stopped for the record.
    pub fn set_finish_reason(&self, reason: Option<String>) {
        *self.finish_reason.lock().unwrap_or_else(|p| p.into_inner()) = reason;
    }

    fn usage(&self) -> Usage {
        self.usage_slot().clone()
    }

    /// What the call has cost so far, in micro-dollars (`None`: unknown), as its tool reported.
    pub fn cost_usd_micros(&self) -> Option<i64> {
        self.usage_slot().cost.micros()
    }

    fn usage_slot(&self) -> std::sync::MutexGuard<'_, Usage> {
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How `call`'s answer leaves, where its end decides it, written with its end (one write, not
/// two): not at all (cancelled), kept for `call_result` (its client left, or got a handle), or
/// handed to rmcp's HTTP transport, which writes it itself. `None`: the transport writes the
/// answer itself and reports that once done (stdio, WebSocket).
fn delivery_at_end(call: &LiveCall, state: CallState) -> Option<Delivery> {
    if state == CallState::Cancelled {
        return Some(Delivery::NotSentCancelled);
    }
    if call.is_detached() {
        if call.handed_off.load(Ordering::Relaxed) {
            tracing::info!("answer kept for call_result (the client got a call handle)");
            return Some(Delivery::KeptForCallResult);
        }
        tracing::warn!("client gone before the answer; result kept in the store");
        return Some(Delivery::ClientGone);
    }
    (!call.origin.transport.reports_delivery()).then_some(Delivery::HandedToHttp)
}

/// "streaming (for 4.2 s)", and when the output began in an earlier stage (thinking first)
/// how long the model had been sending it: "streaming (for 4.2 s; output for 310.5 s)".
fn stage_and_duration(snapshot: &Snapshot) -> String {
    let now = Instant::now();
    let in_stage = now.saturating_duration_since(snapshot.stage_since);
    match snapshot.output_since {
        Some(first_token) if first_token + OUTPUT_SHOWN_APART < snapshot.stage_since => format!(
            "{} (for {}; output for {})",
            snapshot.stage,
            Seconds(in_stage),
            Seconds(now.saturating_duration_since(first_token))
        ),
        _ => format!("{} (for {})", snapshot.stage, Seconds(in_stage)),
    }
}

/// How far apart the output's start and the stage's must be for both to be told.
const OUTPUT_SHOWN_APART: Duration = Duration::from_millis(100);

/// The first text of a result on one line, short enough for a listing.
fn first_text(result: &CallToolResult) -> String {
    let text = result
        .content
        .iter()
        .find_map(|c| c.as_text().map(|t| t.text.as_str()))
        .unwrap_or("(no text)");
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

fn error_result(text: &str) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text.to_string())])
}

/// The failure a panic in a tool's work becomes: its message, logged as an error.
fn panicked(panic: &(dyn std::any::Any + Send)) -> ToolFailure {
    let what = (panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with no message".to_string());
    tracing::error!(panic = %what, "the tool panicked; the call fails");
    ToolFailure::new(
        FailureKind::Internal,
        format!("exai failed inside the tool ({what}); this is a bug in exai, please report it"),
    )
}
