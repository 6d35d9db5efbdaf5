//! What the live page hears of calls: a bounded broadcast the lifecycle publishes to when a call
//! starts and ends, and a sampler that publishes the progress of calls in flight twice a second
//! while anyone listens — so a token streamed costs a call nothing, and a slow listener lags
//! (and resyncs) without ever holding a call up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{Calls, LiveCall};
use crate::store::CallState;

/// Events kept for a listener that has not read them yet; past this it lags and resyncs.
pub const EVENTS_KEPT: usize = 1024;
/// How often the progress of calls in flight is looked at while someone listens.
const PROGRESS_SAMPLE: Duration = Duration::from_millis(500);

/// A call in flight as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LiveSummary {
    pub id: String,
    pub tool: String,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub client: Option<String>,
    /// The person the call is recorded under; `None` for the machine's owner.
    pub user: Option<String>,
    pub stage: String,
    pub received_at_ms: i64,
    pub elapsed_ms: u64,
    /// Output and reasoning tokens so far.
    pub tokens: u64,
}

impl LiveSummary {
    pub fn of(call: &LiveCall) -> Self {
        let snapshot = call.progress.snapshot();
        Self {
            id: call.id.clone(),
            tool: call.tool.clone(),
            provider: snapshot.provider,
            model: snapshot.model,
            client: call.origin.client_name.clone(),
            user: call.origin.caller.user_name().map(str::to_string),
            stage: snapshot.stage,
            received_at_ms: call.received_at_ms,
            elapsed_ms: call.elapsed().as_millis() as u64,
            tokens: snapshot.tokens_out + snapshot.reasoning_tokens,
        }
    }
}

/// Something that happened to a call.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CallEvent {
    Started(LiveSummary),
    Progress(LiveSummary),
    Ended {
        id: String,
        tool: String,
        user: Option<String>,
        state: CallState,
        duration_ms: u64,
    },
}

impl CallEvent {
    /// The user the call belongs to (what visibility is decided on).
    pub fn user(&self) -> Option<&str> {
        match self {
            CallEvent::Started(call) | CallEvent::Progress(call) => call.user.as_deref(),
            CallEvent::Ended { user, .. } => user.as_deref(),
        }
    }
}

/// The sending side, held by [`Calls`].
pub struct CallEvents {
    tx: broadcast::Sender<CallEvent>,
}

impl Default for CallEvents {
    fn default() -> Self {
        Self {
            tx: broadcast::Sender::new(EVENTS_KEPT),
        }
    }
}

impl CallEvents {
    /// Publishes the event `make` builds, only when someone listens (nothing is built otherwise).
    pub fn publish(&self, make: impl FnOnce() -> CallEvent) {
        if self.tx.receiver_count() > 0 {
            // An error only means the last listener left meanwhile.
            let _ = self.tx.send(make());
        }
    }

    fn listening(&self) -> bool {
        self.tx.receiver_count() > 0
    }
}

impl Calls {
    /// Listens to calls starting, moving and ending from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<CallEvent> {
        self.events.tx.subscribe()
    }

    /// Publishes the progress of calls in flight whose stage or tokens moved, every
    /// [`PROGRESS_SAMPLE`] while someone listens, until `stop`.
    pub fn feed_progress(self: &Arc<Self>, stop: CancellationToken) {
        let calls = self.clone();
        crate::spawn::in_span(tracing::Span::none(), async move {
            let mut every = tokio::time::interval(PROGRESS_SAMPLE);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Per call: the stage version and tokens last published.
            let mut published: HashMap<String, (u64, u64)> = HashMap::new();
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = stop.cancelled() => return,
                }
                if !calls.events.listening() {
                    published.clear();
                    continue;
                }
                let in_flight = calls.in_flight();
                let running: std::collections::HashSet<&str> =
                    in_flight.iter().map(|c| c.id.as_str()).collect();
                published.retain(|id, _| running.contains(id.as_str()));
                for call in in_flight {
                    let snapshot = call.progress.snapshot();
                    let now = (
                        snapshot.stage_version,
                        snapshot.tokens_out + snapshot.reasoning_tokens,
                    );
                    if published.insert(call.id.clone(), now) != Some(now) {
                        calls
                            .events
                            .publish(|| CallEvent::Progress(LiveSummary::of(&call)));
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_built_without_a_listener_and_a_listener_hears_what_follows() {
        let events = CallEvents::default();
        events.publish(|| unreachable!("nobody listens"));
        let mut rx = events.tx.subscribe();
        events.publish(|| CallEvent::Ended {
            id: "c".into(),
            tool: "chat".into(),
            user: None,
            state: CallState::Cancelled,
            duration_ms: 5,
        });
        let heard = rx.try_recv().unwrap();
        assert!(matches!(
            heard,
            CallEvent::Ended {
                state: CallState::Cancelled,
                ..
            }
        ));
        assert_eq!(
            serde_json::to_value(&heard).unwrap()["kind"],
            serde_json::json!("ended")
        );
    }
}
