//! Where a call stands, decided once: `Calls::lookup` finds a call in the registry or the
//! store and says whether it runs, ended (with what answer), runs on another replica (whose
//! record the one wait watches, and on which a cancel is left), was interrupted, or is gone.
//! `call_result`, `call_cancel`, MCP tasks and 2025-11-25 tasks only render it.

use std::sync::Arc;

use rmcp::model::CallToolResult;

use super::{Calls, CancelReason, LiveCall, Outcome};
use crate::store::{CallRow, CallState, Delivery, StoreError, now_ms};
use crate::users::Caller;

/// A call as a client may ask about it.
#[derive(Debug)]
pub enum CallView {
    /// Running in this process: its progress is live, it can be waited on or cancelled.
    Running(Arc<LiveCall>),
    /// Ended (a moment ago in this process, or as recorded).
    Ended(Ended),
    /// Its record says it runs under another exai process (another replica): its record is
    /// watched for the end, and a cancel is left on it for that replica.
    HeldElsewhere(CallRow),
    /// Stopped without an answer (a shutdown, or its process died).
    Interrupted(CallRow),
    /// No record: it never existed, or it ended so long ago that it was pruned.
    Expired,
}

/// A call that ended, and what is left of its answer.
#[derive(Debug)]
pub struct Ended {
    pub id: String,
    pub tool: String,
    pub state: CallState,
    pub received_at_ms: i64,
    /// When it was last heard of: its end as recorded, or now for a call that just ended.
    pub updated_at_ms: i64,
    /// Why it did not succeed: the recorded error, or the answer's first text while fresh.
    pub why: Option<String>,
    /// The last progress message sent, as recorded (none for a call that just ended).
    pub progress: Option<String>,
    pub answer: Answer,
}

/// The answer of an ended call.
#[derive(Debug)]
pub enum Answer {
    /// Handed over by the call as it ended (already fitted to what clients accept).
    Fresh(CallToolResult),
    /// Read back from the record, whole.
    Stored(CallToolResult),
    /// The record's answer was cut to be stored and cannot be read back.
    TooLarge,
    /// The record holds no answer.
    Missing,
}

impl Ended {
    fn of_outcome(call: &LiveCall, outcome: &Outcome) -> Self {
        Self {
            id: call.id.clone(),
            tool: call.tool.clone(),
            state: outcome.state,
            received_at_ms: call.received_at_ms,
            updated_at_ms: now_ms(),
            why: (outcome.state != CallState::Succeeded)
                .then(|| first_text(&outcome.result))
                .flatten(),
            progress: None,
            answer: Answer::Fresh(outcome.result.clone()),
        }
    }

    fn of_record(row: CallRow) -> Self {
        let answer = match row.result.as_deref().map(serde_json::from_str) {
            Some(Ok(result)) => Answer::Stored(result),
            Some(Err(_)) => Answer::TooLarge,
            None => Answer::Missing,
        };
        Self {
            updated_at_ms: row.finished_at_ms.unwrap_or(row.received_at_ms),
            id: row.id,
            tool: row.tool,
            state: row.state,
            received_at_ms: row.received_at_ms,
            why: row.error_message,
            progress: row.last_progress,
            answer,
        }
    }

    /// Whether this was read from the store (rather than handed over by the call itself).
    pub fn from_store(&self) -> bool {
        !matches!(self.answer, Answer::Fresh(_))
    }

    /// What `exai calls show` is pointed at when the stored answer cannot be read back.
    fn too_large_note(&self) -> CallToolResult {
        CallToolResult::success(vec![rmcp::model::ContentBlock::text(format!(
            "call {id} ({}) ended {}; its stored result was too large to keep whole. \
             See it with `exai calls show {id}`.",
            self.tool,
            self.state,
            id = self.id
        ))])
    }
}

impl CallView {
    /// The view of a recorded call that is not in the registry.
    fn of_record(row: CallRow) -> Self {
        match row.state {
            CallState::Received | CallState::Running => CallView::HeldElsewhere(row),
            CallState::Interrupted => CallView::Interrupted(row),
            _ => CallView::Ended(Ended::of_record(row)),
        }
    }

    /// The view of a call in the registry.
    fn of_live(call: Arc<LiveCall>) -> Self {
        match call.outcome() {
            None => CallView::Running(call),
            Some(outcome) => CallView::Ended(Ended::of_outcome(&call, &outcome)),
        }
    }

    /// The one wait: a call running here is waited on until it ends, one held elsewhere has its
    /// record watched until it shows the end, either until `until` passes (then it is still
    /// `Running` or `HeldElsewhere`); any other view is already settled.
    pub async fn wait_until(self, calls: &Calls, until: tokio::time::Instant) -> Self {
        match self {
            CallView::Running(call) => {
                match tokio::time::timeout_at(until, call.finished()).await {
                    Ok(outcome) => CallView::Ended(Ended::of_outcome(&call, &outcome)),
                    Err(_) => CallView::Running(call),
                }
            }
            CallView::HeldElsewhere(row) => calls.watch_elsewhere(row, until).await,
            settled => settled,
        }
    }

    /// The state a client is told: a running call's, or the recorded one.
    pub fn state(&self) -> Option<CallState> {
        match self {
            CallView::Running(_) => Some(CallState::Running),
            CallView::Ended(ended) => Some(ended.state),
            CallView::HeldElsewhere(row) | CallView::Interrupted(row) => Some(row.state),
            CallView::Expired => None,
        }
    }
}

/// What asking a call to stop did.
#[derive(Debug)]
pub enum CancelAsked {
    /// Told to stop: it runs here (`replica` is `None`) or on `replica`; `view` waits for its end.
    Told {
        view: CallView,
        replica: Option<String>,
    },
    /// It was not running (ended, interrupted, gone, or ended while being asked).
    NotRunning(CallView),
}

/// "{noun} ID is running on replica R (pid N)".
pub fn held_elsewhere(noun: &str, row: &CallRow) -> String {
    format!("{noun} {} is running on {}", row.id, runner(row))
}

/// The process a record says runs the call: "replica R (pid N)", or "another exai process
/// (pid N)" for a record made before replicas.
pub fn runner(row: &CallRow) -> String {
    match &row.replica {
        Some(replica) => format!("replica {replica} (pid {})", row.owner_pid),
        None => format!("another exai process (pid {})", row.owner_pid),
    }
}

/// How often the record of a call held elsewhere is read while it is waited on.
const HELD_ELSEWHERE_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// "{noun} ID (tool) was interrupted and has no result: why. Run it again."
pub fn interrupted_without_result(noun: &str, row: &CallRow) -> String {
    format!(
        "{noun} {} ({}) was interrupted and has no result: {}. Run it again.",
        row.id,
        row.tool,
        row.interruption()
    )
}

/// The structured part of an answer that says a call still runs (a call handle, or
/// `call_result` before the end): where to poll, and how far it got.
pub fn still_running(id: &str, elapsed: std::time::Duration, progress: &str) -> serde_json::Value {
    serde_json::json!({
        "call_id": id,
        "status": CallState::Running,
        "poll_after_s": 5,
        "elapsed_s": elapsed.as_secs(),
        "progress": progress,
    })
}

impl Calls {
    /// Where call `id` stands as `caller` may see it: the registry first, then the store.
    /// Another user's call is `Expired`, exactly like an id that never existed.
    pub async fn lookup(&self, id: &str, caller: &Caller) -> Result<CallView, StoreError> {
        // A call running here under this id that the caller may not see is someone else's (it
        // may have proposed the id of the caller's own call): the caller's record is looked for.
        if let Some(call) = self.get(id)
            && caller.may_see(call.origin.caller.user_name())
        {
            return Ok(CallView::of_live(call));
        }
        // Ended here while the store would not take its record: the record waits in memory.
        if let Some(row) = self.late.find(id) {
            return Ok(if caller.may_see(row.user_name.as_deref()) {
                CallView::of_record(row)
            } else {
                CallView::Expired
            });
        }
        let wanted = id.to_string();
        let row = self.store.read(move |store| store.get(&wanted)).await?;
        Ok(row
            .filter(|row| caller.may_see(row.user_name.as_deref()))
            .map_or(CallView::Expired, |row| self.view_of(row)))
    }

    /// Calls in flight that `caller` may see, oldest first.
    pub fn in_flight_for(&self, caller: &Caller) -> Vec<Arc<LiveCall>> {
        let mut calls = self.in_flight();
        calls.retain(|call| caller.may_see(call.origin.caller.user_name()));
        calls
    }

    /// Where the call of a record already read stands (the registry wins while it runs here).
    pub fn view_of(&self, row: CallRow) -> CallView {
        // Only the record's own call: one that proposed the record's id while it was taken runs
        // here under that id too (until it ends and is recorded under a fresh one).
        let own = |call: &Arc<LiveCall>| {
            call.received_at_ms == row.received_at_ms && call.origin.session_id == row.session_id
        };
        match self.get(&row.id).filter(own) {
            Some(call) => CallView::of_live(call),
            None => CallView::of_record(row),
        }
    }

    /// Reads the record of a call another replica runs until it shows the end or `until`
    /// passes. The store failing a read is waited out: the record is read again at the next turn.
    async fn watch_elsewhere(&self, mut row: CallRow, until: tokio::time::Instant) -> CallView {
        loop {
            let now = tokio::time::Instant::now();
            if now >= until {
                return CallView::HeldElsewhere(row);
            }
            tokio::time::sleep_until((now + HELD_ELSEWHERE_POLL).min(until)).await;
            let id = row.id.clone();
            match self.store.read(move |store| store.get(&id)).await {
                Ok(Some(fresh)) => match self.view_of(fresh) {
                    CallView::HeldElsewhere(fresh) => row = fresh,
                    settled => return settled,
                },
                Ok(None) => return CallView::Expired,
                Err(error) => {
                    tracing::debug!(call_id = %row.id, %error, "cannot read the record of a call held elsewhere");
                }
            }
        }
    }

    /// Asks a call to stop, for `reason` (who asked): a call running here is cancelled at once,
    /// one held elsewhere gets the request on its record; the one cancel path of `call_cancel`,
    /// `tasks/cancel`'s peers and the live page.
    pub async fn cancel(&self, view: CallView, reason: String) -> Result<CancelAsked, StoreError> {
        match view {
            CallView::Running(live) => {
                live.cancel(CancelReason::Client(Some(reason)));
                Ok(CancelAsked::Told {
                    view: CallView::Running(live),
                    replica: None,
                })
            }
            CallView::HeldElsewhere(row) => {
                match self
                    .request_cancel(&row, format!("{reason} on another replica"))
                    .await?
                {
                    Some(replica) => Ok(CancelAsked::Told {
                        view: CallView::HeldElsewhere(row),
                        replica: Some(replica),
                    }),
                    None => Ok(CancelAsked::NotRunning(CallView::HeldElsewhere(row))),
                }
            }
            settled => Ok(CancelAsked::NotRunning(settled)),
        }
    }

    /// Asks the replica that runs a call held elsewhere to cancel it, for `reason`: the request
    /// is left on the call's record, where that replica looks for it. Returns the replica asked
    /// (as messages name it), or `None` when the call is no longer open.
    pub async fn request_cancel(
        &self,
        row: &CallRow,
        reason: String,
    ) -> Result<Option<String>, StoreError> {
        let (id, replica) = (row.id.clone(), row.replica.clone());
        let (asked, registered) = self
            .store
            .read(move |store| {
                let asked = store.request_cancel(&id, &reason)?;
                let registered = match &replica {
                    Some(replica) => store.replica(replica)?,
                    None => None,
                };
                Ok((asked, registered))
            })
            .await?;
        Ok(asked.then(|| registered.map_or_else(|| runner(row), |r| r.to_string())))
    }

    /// Hands an ended call's answer to a client that asked for it later, and records that
    /// (`delivery`); `None` if the record holds none. A stored answer is fitted to the client.
    pub async fn hand_over(&self, ended: Ended, delivery: Delivery) -> Option<CallToolResult> {
        let result = match ended.answer {
            Answer::Fresh(result) => result,
            Answer::Stored(result) => {
                super::output::fitted(result, self.max_output_tokens, &ended.id).await
            }
            Answer::TooLarge => ended.too_large_note(),
            Answer::Missing => return None,
        };
        let _ = self.set_delivery(&ended.id, delivery).await;
        Some(result)
    }
}

/// The first text of a result, whole.
fn first_text(result: &CallToolResult) -> Option<String> {
    result
        .content
        .iter()
        .find_map(|c| c.as_text().map(|t| t.text.clone()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rmcp::model::ContentBlock;

    use super::*;
    use crate::calls::{CallOrigin, TransportKind};
    use crate::store::Store;

    fn origin() -> CallOrigin {
        CallOrigin {
            session_id: "s".into(),
            client_name: Some("test".into()),
            client_version: None,
            transport: TransportKind::Stdio,
            caller: crate::users::Caller::Owner,
            shim_version: None,
        }
    }

    /// A chat call from `origin` that runs until the returned sender says "done".
    async fn held_call(
        calls: &Arc<Calls>,
        origin: CallOrigin,
    ) -> (Arc<LiveCall>, tokio::sync::oneshot::Sender<()>) {
        let call = calls
            .open(
                None,
                "chat",
                &serde_json::Map::new(),
                origin,
                Duration::from_secs(60),
                Some(0),
            )
            .await
            .unwrap();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        calls.start(
            call.clone(),
            Box::pin(async move {
                let _ = released.await;
                Ok(CallToolResult::success(vec![ContentBlock::text("done")]))
            }),
        );
        (call, release)
    }

    #[tokio::test]
    async fn a_call_is_running_then_ended_fresh_then_ended_from_its_record() {
        let store = Store::open(&crate::store::tests::test_location()).unwrap();
        let calls = Arc::new(Calls::new(store, 25_000));
        assert!(matches!(
            calls
                .lookup("01a2132d-05c7-76ba-ab75-235da0d3ad5f", &Caller::Owner)
                .await
                .unwrap(),
            CallView::Expired
        ));

        let (call, release) = held_call(&calls, origin()).await;
        let view = calls.lookup(&call.id, &Caller::Owner).await.unwrap();
        assert!(matches!(view, CallView::Running(_)));
        // The wait is bounded: still running when the bound passes.
        let view = view.wait_until(&calls, tokio::time::Instant::now()).await;
        assert_eq!(view.state(), Some(CallState::Running));

        release.send(()).unwrap();
        let far = tokio::time::Instant::now() + Duration::from_secs(10);
        let CallView::Ended(ended) = view.wait_until(&calls, far).await else {
            panic!("the call should have ended");
        };
        assert_eq!(ended.state, CallState::Succeeded);
        assert!(!ended.from_store() && ended.why.is_none());

        // Out of the registry, the record answers; handing it over records the delivery.
        let CallView::Ended(stored) = calls.lookup(&call.id, &Caller::Owner).await.unwrap() else {
            panic!("the record should say the call ended");
        };
        assert!(stored.from_store());
        let answer = calls
            .hand_over(stored, Delivery::DeliveredByCallResult)
            .await
            .unwrap();
        assert_eq!(answer.content[0].as_text().unwrap().text, "done");
        calls.store().sync().await.unwrap();
        let id = call.id.clone();
        let row = calls
            .store()
            .read(move |store| store.get(&id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.delivery, Delivery::DeliveredByCallResult);
    }

    #[tokio::test]
    async fn another_users_call_looks_like_one_that_never_existed() {
        let store = Store::open(&crate::store::tests::test_location()).unwrap();
        let calls = Arc::new(Calls::new(store, 25_000));
        let user = |name: &str, admin| Caller::User {
            name: name.into(),
            admin,
        };
        let (ada, bob, boss) = (user("ada", false), user("bob", false), user("boss", true));
        let mut of_ada = origin();
        of_ada.caller = ada.clone();
        let (call, release) = held_call(&calls, of_ada).await;
        let seen = async |caller: &Caller| calls.lookup(&call.id, caller).await.unwrap().state();
        for (caller, expected) in [
            (&ada, Some(CallState::Running)),
            (&boss, Some(CallState::Running)),
            (&Caller::Owner, Some(CallState::Running)),
            (&bob, None),
        ] {
            assert_eq!(seen(caller).await, expected, "{caller:?}");
        }
        assert_eq!(calls.in_flight_for(&ada).len(), 1);
        assert!(calls.in_flight_for(&bob).is_empty());

        release.send(()).unwrap();
        call.finished().await;
        // From the record (out of the registry): the same answers.
        assert_eq!(seen(&ada).await, Some(CallState::Succeeded));
        assert_eq!(seen(&boss).await, Some(CallState::Succeeded));
        assert_eq!(seen(&bob).await, None);
        let id = call.id.clone();
        let row = calls.store().read(move |s| s.get(&id)).await.unwrap();
        assert_eq!(row.unwrap().user_name.as_deref(), Some("ada"));
    }

    #[test]
    fn records_of_unfinished_and_interrupted_calls_are_told_apart() {
        let row = |state| CallRow {
            id: "c".into(),
            session_id: "s".into(),
            client_name: None,
            client_version: None,
            transport: crate::store::TransportKind::Ws,
            tool: "chat".into(),
            arguments: "{}".into(),
            state,
            received_at_ms: 1,
            started_at_ms: None,
            finished_at_ms: None,
            deadline_at_ms: 2,
            duration_ms: None,
            provider: None,
            model: None,
            tokens_in: None,
            tokens_out: None,
            reasoning_tokens: None,
            time_to_first_token_ms: None,
            reasoning: None,
            attempts: None,
            progress_count: 0,
            last_progress: None,
            error_kind: None,
            error_message: None,
            result: Some("{\"content\": [".into()),
            is_error: false,
            delivery: Delivery::Pending,
            owner_pid: 42,
            task: None,
            cached_tokens: None,
            finish_reason: None,
            replica: None,
            cancel_requested: None,
            user_name: None,
            cost_usd_micros: None,
        };
        let mut held = row(CallState::Running);
        assert_eq!(
            held_elsewhere("task", &held),
            "task c is running on another exai process (pid 42)"
        );
        held.replica = Some("r1".into());
        assert_eq!(
            held_elsewhere("task", &held),
            "task c is running on replica r1 (pid 42)"
        );
        assert!(matches!(
            CallView::of_record(held),
            CallView::HeldElsewhere(_)
        ));
        let interrupted = row(CallState::Interrupted);
        assert_eq!(
            interrupted_without_result("call", &interrupted),
            "call c (chat) was interrupted and has no result: exai stopped while it ran. Run it again."
        );
        assert!(matches!(
            CallView::of_record(interrupted),
            CallView::Interrupted(_)
        ));
        // A stored answer cut short cannot be read back: it is too large, not missing.
        let CallView::Ended(cut) = CallView::of_record(row(CallState::Succeeded)) else {
            panic!("a succeeded record is an ended call");
        };
        assert!(matches!(cut.answer, Answer::TooLarge));
        assert!(
            cut.too_large_note().content[0]
                .as_text()
                .unwrap()
                .text
                .contains("ended succeeded; its stored result was too large")
        );
    }
}
