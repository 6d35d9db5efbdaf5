//! What a running call is doing right now: stage, model, tokens — and the human line for it.

use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use crate::providers::CallObserver;

/// A running call's latest state.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub tool: String,
    pub stage: String,
    /// Since when the call has been in this stage: a stage announced again, or one that only
    /// changes its details after " · " (a queue position), goes on rather than starting over.
    pub stage_since: Instant,
    /// Since when the model has been sending this answer's output (its first token), while it
    /// does; the stage may have moved on since (thinking → streaming).
    pub output_since: Option<Instant>,
    /// Bumped on every stage change (token counts do not bump it).
    pub stage_version: u64,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub tokens_out: u64,
    pub reasoning_tokens: u64,
    pub started: Instant,
}

impl Snapshot {
    pub fn new(tool: &str) -> Self {
        let now = Instant::now();
        Self {
            tool: tool.to_string(),
            stage: "starting".into(),
            stage_since: now,
            output_since: None,
            stage_version: 0,
            provider: None,
            model: None,
            tokens_out: 0,
            reasoning_tokens: 0,
            started: now,
        }
    }

    /// Moves to `stage`; true when it is a new one (which restarts the stage's clock) or its
    /// details changed (which does not), so watchers wake.
    fn enter(&mut self, stage: String) -> bool {
        if stage == self.stage {
            return false;
        }
        let kind = |s: &str| s.split(" · ").next().unwrap_or("").to_string();
        if !(stage.contains(" · ") && kind(&stage) == kind(&self.stage)) {
            self.stage_since = Instant::now();
        }
        self.stage = stage;
        self.stage_version += 1;
        true
    }

    /// "chat · glm-4.7 · streaming · 34 s · 1,240 tokens"
    pub fn message(&self) -> String {
        let mut parts = vec![self.tool.clone()];
        if let Some(model) = &self.model {
            parts.push(model.clone());
        }
        parts.push(self.stage.clone());
        parts.push(format!("{} s", self.started.elapsed().as_secs()));
        let tokens = self.tokens_out.saturating_add(self.reasoning_tokens);
        match tokens {
            0 => {}
            1 => parts.push("1 token".into()),
            n => parts.push(format!("{} tokens", thousands(n))),
        }
        parts.join(" · ")
    }
}

/// 1240 → "1,240".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A stage the call entered, and when (since the call began).
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageSeen {
    pub at_ms: u64,
    pub stage: String,
}

/// Most stages a call remembers (a long queue's moves would be many).
const MOST_STAGES_KEPT: usize = 64;

/// The writing side: tools and providers report here.
#[derive(Debug)]
pub struct Progress {
    /// Read by the heartbeat, the page and the record; written by the tool and its provider.
    now: Mutex<Snapshot>,
    /// Wakes whoever waits for the next stage. (A watch channel would do both, at several
    /// times the size: every call in flight holds one.)
    stage_moved: Notify,
    /// Notifications actually sent to the client, and the last message.
    sent: Mutex<(i64, Option<String>)>,
    /// The stages entered so far (the page's progress history).
    stages: Mutex<Vec<StageSeen>>,
    /// The person whose call it is (`None`: the owner).
    user: Option<String>,
    /// What the call's provider requests billed so far: in full (unknown where a part is), and
    /// the parts known (what its daily budgets count).
    billed: Mutex<(crate::providers::Cost, crate::providers::Cost)>,
}

impl Progress {
    pub fn new(tool: &str) -> Self {
        Self {
            now: Mutex::new(Snapshot::new(tool)),
            stage_moved: Notify::new(),
            sent: Mutex::new((0, None)),
            stages: Mutex::new(Vec::new()),
            user: None,
            billed: Mutex::default(),
        }
    }

    /// The progress of `user`'s call (their daily budget applies to its requests).
    pub fn of_user(mut self, user: Option<&str>) -> Self {
        self.user = user.map(str::to_string);
        self
    }

    /// The stages entered so far, oldest first (the first [`MOST_STAGES_KEPT`]).
    pub fn stages(&self) -> Vec<StageSeen> {
        self.stages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn now(&self) -> MutexGuard<'_, Snapshot> {
        self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves the call to `stage` (through `enter`); when it moved, keeps the stage and wakes
    /// whoever waits for the next one.
    fn moved(&self, enter: impl FnOnce(&mut Snapshot) -> bool) {
        let mut now = self.now();
        if !enter(&mut now) {
            return;
        }
        let mut stages = self.stages.lock().unwrap_or_else(|p| p.into_inner());
        if stages.len() < MOST_STAGES_KEPT {
            stages.push(StageSeen {
                at_ms: now.started.elapsed().as_millis() as u64,
                stage: now.stage.clone(),
            });
        }
        drop(stages);
        drop(now);
        self.stage_moved.notify_waiters();
    }

    /// Completes at the next stage change after it is enabled (or first polled): enable it,
    /// then read [`Progress::stage_version`], and no change in between is missed.
    pub fn next_stage(&self) -> Notified<'_> {
        self.stage_moved.notified()
    }

    /// Bumped on every stage change.
    pub fn stage_version(&self) -> u64 {
        self.now().stage_version
    }

    pub fn snapshot(&self) -> Snapshot {
        self.now().clone()
    }

    /// A new stage of the call (not the model's output): the output, if any, has ended.
    pub fn set_stage(&self, stage: impl Into<String>) {
        let stage = stage.into();
        self.moved(|s| {
            s.output_since = None;
            s.enter(stage)
        });
    }

    /// A stage of the model's output; the first one starts the output's clock.
    fn set_output_stage(&self, stage: String) {
        self.moved(|s| {
            s.output_since.get_or_insert_with(Instant::now);
            s.enter(stage)
        });
    }

    /// What the call's provider requests billed, unknown where a part of it is.
    pub fn billed_in_full(&self) -> crate::providers::Cost {
        self.billed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// Remembers a progress line that went to the client; returns the new count.
    pub fn record_sent(&self, message: &str) -> i64 {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        sent.0 += 1;
        sent.1 = Some(message.to_string());
        sent.0
    }

    /// How many progress lines went to the client, and the last of them, read together.
    pub fn sent(&self) -> (i64, Option<String>) {
        let sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        (sent.0, sent.1.clone())
    }
}

impl CallObserver for Progress {
    fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
    fn billed(&self, provider: &str, picodollars: Option<u64>) {
        let mut billed = self.billed.lock().unwrap_or_else(|p| p.into_inner());
        billed.0.add(provider, picodollars);
        if picodollars.is_some() {
            billed.1.add(provider, picodollars);
        }
    }
    fn billed_so_far(&self) -> crate::providers::Cost {
        self.billed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }
    fn stage(&self, stage: String) {
        self.set_stage(stage);
    }
    fn output(&self, stage: String) {
        self.set_output_stage(stage);
    }
    fn model(&self, provider: &str, model: &str) {
        let mut now = self.now();
        now.provider = Some(provider.to_string());
        now.model = Some(model.to_string());
    }
    fn tokens(&self, count: u64, reasoning: bool) {
        // Token counts are read by the heartbeat: they wake nobody.
        let mut now = self.now();
        if reasoning {
            now.reasoning_tokens = now.reasoning_tokens.saturating_add(count);
        } else {
            now.tokens_out = now.tokens_out.saturating_add(count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A budget counts what is known of a call's spend; the record says unknown where a part
    /// of it is.
    #[test]
    fn a_calls_billing_keeps_its_known_part_for_budgets_and_the_whole_for_its_record() {
        let progress = Progress::new("consensus");
        progress.billed("custom", Some(2_000_000));
        progress.billed("custom", None);
        progress.billed("glm", Some(1_000_000));
        let known = progress.billed_so_far();
        assert_eq!(
            known.micros_by_provider(),
            [
                ("custom".to_string(), Some(2)),
                ("glm".to_string(), Some(1))
            ]
        );
        assert_eq!(progress.billed_in_full().micros(), None);
    }

    #[test]
    fn messages_read_like_a_status_line() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1240), "1,240");
        assert_eq!(thousands(1234567), "1,234,567");
        let p = Progress::new("chat");
        p.model("custom", "glm-4.7");
        p.set_stage("streaming");
        p.tokens(1240, false);
        let m = p.snapshot().message();
        assert!(
            m.starts_with("chat · glm-4.7 · streaming · 0 s · 1,240 tokens"),
            "{m}"
        );
    }

    #[test]
    fn a_stage_announced_again_or_only_moving_in_line_keeps_its_clock() {
        let p = Progress::new("chat");
        p.set_stage("queued · 3 ahead for glm");
        let since = p.snapshot().stage_since;
        std::thread::sleep(std::time::Duration::from_millis(5));
        p.set_stage("queued · 2 ahead for glm");
        assert_eq!(p.snapshot().stage_since, since, "still queued");
        assert_eq!(p.snapshot().stage, "queued · 2 ahead for glm");
        p.set_stage("waiting for glm");
        let waiting = p.snapshot();
        assert!(waiting.stage_since > since);
        p.set_stage("waiting for glm");
        assert_eq!(p.snapshot().stage_since, waiting.stage_since);
        assert_eq!(p.snapshot().stage_version, waiting.stage_version);
    }

    #[test]
    fn the_output_clock_runs_from_the_first_token_until_another_stage() {
        let p = Progress::new("chat");
        p.set_stage("waiting for glm");
        assert_eq!(p.snapshot().output_since, None);
        p.output("thinking".into());
        let first_token = p.snapshot().output_since.expect("output started");
        std::thread::sleep(std::time::Duration::from_millis(5));
        p.output("streaming".into());
        let streaming = p.snapshot();
        assert_eq!(streaming.output_since, Some(first_token));
        assert!(streaming.stage_since > first_token);
        p.set_stage("searching the web");
        assert_eq!(p.snapshot().output_since, None);
    }
}
