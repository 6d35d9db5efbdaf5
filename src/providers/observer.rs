//! What a provider call reports while it runs, for progress and records.

use super::Cost;

/// Receives what a provider call is doing, for progress and records.
pub trait CallObserver: Send + Sync {
    /// A new stage ("waiting for glm", "queued · 2 ahead for glm", "streaming").
    fn stage(&self, stage: String);
    /// Which provider and model serve the call.
    fn model(&self, provider: &str, model: &str);
    /// The model's output began or moved on (`thinking`, `streaming`, `preparing a web
    /// search`): a stage of the one answer being streamed.
    fn output(&self, stage: String) {
        self.stage(stage);
    }
    /// More output arrived (`reasoning` for thinking tokens).
    fn tokens(&self, count: u64, reasoning: bool);
    /// The person whose call this is (`None`: the owner), for their daily budget.
    fn user(&self) -> Option<&str> {
        None
    }
    /// A request of the call billed `picodollars` (`None`: unknown) at `provider`.
    fn billed(&self, provider: &str, picodollars: Option<u64>) {
        let _ = (provider, picodollars);
    }
    /// What the call's requests are known to have billed so far (a part nobody said is left
    /// out): not in the store's daily totals until the call ends, so its next request's budget
    /// check adds it.
    fn billed_so_far(&self) -> Cost {
        Cost::default()
    }
}
