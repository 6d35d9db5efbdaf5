//! Binds each Streamable HTTP session to the token that opened it, in front of rmcp: a request
//! naming a session (a POST, its GET stream, the DELETE that ends it) that its token did not
//! open is answered 404 "no such MCP session for this token", whoever opened it.
//!
//! rmcp ends a session on any DELETE with its id and replays its stream to any GET; it knows
//! nothing of tokens. Without this, a member who learnt a teammate's session id could end their
//! session or read what it streams. A member's sessions are also bounded: opening one past
//! [`MOST_PER_MEMBER`] ends their own least used (rmcp keeps an idle session for the longest
//! call's time, and sets no bound of its own).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;

use crate::legacy_tasks::http::session_of;
use crate::users::Caller;

/// Below this many sessions the map is never pruned.
const FIRST_PRUNE: usize = 64;
/// Most sessions one personal token keeps open on a replica (the owner's are not bounded).
const MOST_PER_MEMBER: usize = 64;

/// Who opened each live session.
pub struct SessionOwners {
    owners: Mutex<Owners>,
    /// rmcp's sessions: an id it no longer holds (ended, or idle past its keep-alive) is pruned.
    sessions: Arc<LocalSessionManager>,
}

struct Owners {
    by_session: HashMap<String, Held>,
    /// The size at which the map is next pruned (twice what it kept last time).
    prune_at: usize,
}

/// Who opened a session, and when it was last asked anything.
struct Held {
    caller: Caller,
    last_used: Instant,
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

    /// Whether `session` is one `caller` opened (and is still known): it is then marked used.
    fn is_theirs(&self, session: &str, caller: Option<&Caller>) -> bool {
        let mut owners = self.owners();
        match owners.by_session.get_mut(session) {
            Some(held) if Some(&held.caller) == caller => {
                held.last_used = Instant::now();
                true
            }
            _ => false,
        }
    }

    fn forget(&self, session: &str) {
        self.owners().by_session.remove(session);
    }

    async fn remember(&self, session: String, caller: Caller) {
        let (prune, least_used_of_theirs) = {
            let mut owners = self.owners();
            let least_used = if caller == Caller::Owner {
                None
            } else {
                let theirs = owners
                    .by_session
                    .iter()
                    .filter(|(_, held)| held.caller == caller);
                if theirs.clone().count() >= MOST_PER_MEMBER {
                    theirs
                        .min_by_key(|(_, held)| held.last_used)
                        .map(|(id, _)| id.clone())
                } else {
                    None
                }
            };
            if let Some(least_used) = &least_used {
                owners.by_session.remove(least_used);
            }
            let now = Instant::now();
            owners.by_session.insert(
                session,
                Held {
                    caller,
                    last_used: now,
                },
            );
            (owners.by_session.len() >= owners.prune_at, least_used)
        };
        if let Some(least_used) = least_used_of_theirs {
            tracing::info!(
                "a member opened more MCP sessions than a replica keeps for one person: their least used ends"
            );
            if let Err(error) = self.sessions.close_session(&least_used.into()).await {
                tracing::warn!(%error, "a member's least used MCP session could not be closed");
            }
        }
        if !prune {
            return;
        }
        // A session remembered (or used) while rmcp's list is read is kept whatever the list says.
        let listed_at = Instant::now();
        let live: HashSet<String> = self
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
            .retain(|id, held| held.last_used >= listed_at || live.contains(id));
        owners.prune_at = (owners.by_session.len() * 2).max(FIRST_PRUNE);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.owners().by_session.len()
    }
}

/// The `/mcp` step that keeps each session to the caller who opened it (after the token check,
/// which put the request's [`Caller`] on it); `next` is the rest of the route.
pub async fn bind(
    owners: &SessionOwners,
    request: Request,
    next: impl AsyncFnOnce(Request) -> Response,
) -> Response {
    let Some(session) = session_of(request.headers()) else {
        // No session yet: this may be the `initialize` that opens one, for this caller.
        let caller = request.extensions().get::<Caller>().cloned();
        let response = next(request).await;
        if let (Some(opened), Some(caller)) = (session_of(response.headers()), caller) {
            owners.remember(opened, caller).await;
        }
        return response;
    };
    // Every session is opened through here: one this caller did not open is not theirs to
    // use, stream or end, whether another token opened it or it never existed.
    if !owners.is_theirs(&session, request.extensions().get::<Caller>()) {
        tracing::warn!(method = %request.method(), "a request naming an MCP session its token did not open refused");
        return (
            StatusCode::NOT_FOUND,
            "no such MCP session for this token; start a new session\n",
        )
            .into_response();
    }
    let ending = request.method() == Method::DELETE;
    let response = next(request).await;
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

    #[tokio::test]
    async fn a_member_opening_session_after_session_ends_their_own_least_used_not_anyone_elses() {
        let manager = Arc::new(LocalSessionManager::default());
        let owners = SessionOwners::new(manager.clone());
        let bob = Caller::User {
            name: "bob".into(),
            admin: false,
        };
        let mut kept = Vec::new();
        let mut open = async |caller: &Caller| {
            let (id, transport) = manager.create_session().await.unwrap();
            kept.push(transport);
            owners.remember(id.to_string(), caller.clone()).await;
            id
        };
        let owners_own = open(&Caller::Owner).await;
        let bobs_first = open(&bob).await;
        let bobs_second = open(&bob).await;
        // Bob keeps using his first session: his second is the least used.
        for _ in 0..MOST_PER_MEMBER - 1 {
            open(&bob).await;
            assert!(owners.is_theirs(&bobs_first, Some(&bob)));
        }
        assert!(
            !manager.has_session(&bobs_second).await.unwrap(),
            "bob's least used session ended"
        );
        assert!(
            manager.has_session(&bobs_first).await.unwrap(),
            "his busy one stays"
        );
        assert!(
            !owners.is_theirs(&owners_own, Some(&bob)),
            "the owner's is not bob's"
        );
        assert!(
            manager.has_session(&owners_own).await.unwrap(),
            "the owner's session stays"
        );
        let bobs = owners
            .owners()
            .by_session
            .values()
            .filter(|held| held.caller == bob)
            .count();
        assert_eq!(bobs, MOST_PER_MEMBER);
    }
}
