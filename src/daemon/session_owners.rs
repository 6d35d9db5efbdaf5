//! Binds each Streamable HTTP session to the token that opened it, in front of rmcp: a request
//! naming the session (a POST, its GET stream, the DELETE that ends it) with another token is
//! answered as for a session that does not exist.
//!
//! rmcp ends a session on any DELETE with its id and replays its stream to any GET; it knows
//! nothing of tokens. Without this, a member who learnt a teammate's session id could end their
//! session or read what it streams.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;

use crate::legacy_tasks::http::session_of;
use crate::users::Caller;

/// Below this many sessions the map is never pruned.
const FIRST_PRUNE: usize = 64;

/// Who opened each live session.
pub struct SessionOwners {
    owners: Mutex<Owners>,
    /// rmcp's sessions: an id it no longer holds (ended, or idle past its keep-alive) is pruned.
    sessions: Arc<LocalSessionManager>,
}

struct Owners {
    by_session: HashMap<String, Caller>,
    /// The size at which the map is next pruned (twice what it kept last time).
    prune_at: usize,
}

impl SessionOwners {
    pub fn new(sessions: Arc<LocalSessionManager>) -> Arc<Self> {
        Arc::new(Self {
            owners: Mutex::new(Owners {
                by_session: HashMap::new(),
                prune_at: FIRST_PRUNE,
            }),
            sessions,
        })
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, Owners> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn owner(&self, session: &str) -> Option<Caller> {
        self.owners().by_session.get(session).cloned()
    }

    fn forget(&self, session: &str) {
        self.owners().by_session.remove(session);
    }

    async fn remember(&self, session: String, caller: Caller) {
        let prune = {
            let mut owners = self.owners();
            owners.by_session.insert(session, caller);
            owners.by_session.len() >= owners.prune_at
        };
        if !prune {
            return;
        }
        let live: Vec<String> = self
            .sessions
            .sessions
            .read()
            .await
            .keys()
            .map(|id| id.to_string())
            .collect();
        let mut owners = self.owners();
        owners
            .by_session
            .retain(|id, _| live.iter().any(|live| live == id));
        owners.prune_at = (owners.by_session.len() * 2).max(FIRST_PRUNE);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.owners().by_session.len()
    }
}

/// The middleware (after the token check, which put the request's [`Caller`] on it).
pub async fn bind(
    State(owners): State<Arc<SessionOwners>>,
    request: Request,
    next: Next,
) -> Response {
    let caller = request.extensions().get::<Caller>().cloned();
    let Some(session) = session_of(request.headers()) else {
        // No session yet: this may be the `initialize` that opens one, for this caller.
        let response = next.run(request).await;
        if let (Some(opened), Some(caller)) = (session_of(response.headers()), caller) {
            owners.remember(opened, caller).await;
        }
        return response;
    };
    if let Some(owner) = owners.owner(&session)
        && Some(&owner) != caller.as_ref()
    {
        tracing::warn!(method = %request.method(), "a request naming another token's MCP session refused");
        // The answer for a session that does not exist: it tells the asker nothing, and a client
        // whose own token changed starts a new session, as it should.
        return (
            StatusCode::NOT_FOUND,
            "no such MCP session for this token; start a new session\n",
        )
            .into_response();
    }
    let ending = request.method() == Method::DELETE;
    let response = next.run(request).await;
    if ending && response.status().is_success() {
        owners.forget(&session);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_rmcp_no_longer_holds_are_forgotten_as_the_map_grows() {
        let owners = SessionOwners::new(Arc::new(LocalSessionManager::default()));
        for n in 0..FIRST_PRUNE - 1 {
            owners.remember(format!("gone-{n}"), Caller::Owner).await;
        }
        assert_eq!(owners.len(), FIRST_PRUNE - 1);
        owners.remember("one more".into(), Caller::Owner).await;
        assert_eq!(owners.len(), 0, "none of these is a session rmcp holds");
    }
}
