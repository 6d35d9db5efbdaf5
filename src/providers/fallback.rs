//! One answer from the chosen model, then from each fallback model in turn while the failure is
//! one a fallback can help with; each request within the daily budgets, and what each billed
//! priced by its own model.

use std::time::Instant;

use super::{
    CallObserver, ChatRequest, ChatResponse, Cost, Failure, Need, ProviderError, Providers,
    Resolved, Spent,
};

impl Providers {
    /// One answer from `primary`, then from each fallback model in turn while the
    /// failure is one a fallback can help with — all inside the request's deadline.
    pub async fn chat(
        &self,
        primary: Resolved,
        request: &ChatRequest,
        observer: &dyn CallObserver,
    ) -> Result<ChatResponse, Failure> {
        let mut attempts = 0;
        let mut spent = Spent::default();
        let mut cost = Cost::default();
        let mut chain = vec![primary];
        for name in &self.fallback_models {
            match self.resolve(Some(name), Need::Deep) {
                Ok(r)
                    if !chain.iter().any(|c| {
                        c.model.id == r.model.id && c.endpoint.name() == r.endpoint.name()
                    }) =>
                {
                    chain.push(r)
                }
                Ok(_) => {}
                Err(why) => tracing::debug!(fallback = %name, %why, "fallback model not usable"),
            }
        }
        let mut last = None;
        // Endpoints whose account said it is out: their other models are not asked.
        let mut refused: Vec<&str> = Vec::new();
        for (i, target) in chain.iter().enumerate() {
            if refused.contains(&target.endpoint.name()) {
                continue;
            }
            // Refused before any request: a fallback on another provider may be within its budget.
            if let Err(over) = self
                .budgets
                .check(target.endpoint.name(), observer.user(), || {
                    observer.billed_so_far()
                })
                .await
            {
                tracing::warn!(provider = target.endpoint.name(), model = %target.model.id, %over,
                    "request refused: daily budget spent");
                last = Some(ProviderError::OverBudget(over));
                continue;
            }
            if i > 0 {
                observer.stage(format!("falling back to {}", target.model.id));
                tracing::warn!(fallback = %target.model.id, provider = target.endpoint.name(), "trying a fallback model");
            }
            observer.model(target.endpoint.name(), &target.model.id);
            match target.endpoint.chat(&target.model, request, observer).await {
                Ok(mut answer) => {
                    answer.attempts += attempts;
                    let this = Spent::of(&answer);
                    let billed = target.model.cost_of(&this, true);
                    cost.add(target.endpoint.name(), billed);
                    observer.billed(target.endpoint.name(), billed);
                    spent.add(this);
                    spent.into_answer(&mut answer);
                    answer.cost = cost;
                    return Ok(answer);
                }
                Err(failure) => {
                    attempts += failure.attempts;
                    // What earlier rounds (a web search's) reported is known; an attempt that
                    // streamed and broke off billed an amount nobody said.
                    let known = target.model.cost_of(&failure.spent, false);
                    let billed = if failure.streamed { None } else { known };
                    cost.add(target.endpoint.name(), billed);
                    observer.billed(target.endpoint.name(), known);
                    if failure.streamed {
                        observer.billed(target.endpoint.name(), None);
                    }
                    spent.add(failure.spent);
                    if failure.error.account_problem() {
                        refused.push(target.endpoint.name());
                    }
                    let go_on = failure.error.wants_fallback() && Instant::now() < request.deadline;
                    last = Some(failure.error);
                    if !go_on {
                        break;
                    }
                }
            }
        }
        Err(Failure {
            error: last.unwrap_or(ProviderError::Deadline {
                what: "a model answer".into(),
            }),
            attempts,
            spent,
            cost,
            streamed: false,
        })
    }
}
