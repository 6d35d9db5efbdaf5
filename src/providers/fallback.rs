//! One answer from the chosen model, then from each fallback model in turn while the failure is
//! one a fallback can help with.

use std::time::Instant;

use super::{
    CallObserver, ChatRequest, ChatResponse, Failure, Need, ProviderError, Providers, Resolved,
    Spent,
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
            if i > 0 {
                observer.stage(format!("falling back to {}", target.model.id));
                tracing::warn!(fallback = %target.model.id, provider = target.endpoint.name(), "trying a fallback model");
            }
            observer.model(target.endpoint.name(), &target.model.id);
            match target.endpoint.chat(&target.model, request, observer).await {
                Ok(mut answer) => {
                    answer.attempts += attempts;
                    spent.add(Spent::of(&answer));
                    spent.into_answer(&mut answer);
                    return Ok(answer);
                }
                Err(failure) => {
                    attempts += failure.attempts;
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
        })
    }
}
