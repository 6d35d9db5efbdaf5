//! Who may come in: the daemon's own bearer token (or a proof of it, proof.rs) — the machine's
//! owner — or a person's own token (`exai users add`), looked up by its hash; and the Host/Origin
//! guard against DNS rebinding.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use tokio_util::sync::CancellationToken;

use super::proof::{self, Challenges};
use crate::calls::{Calls, CancelReason};
use crate::store::{Store, StoreError};
use crate::users::{Caller, TOKEN_PREFIX, token_hash};

/// Reads the token file.
pub fn read_token(path: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

/// Reads the token, creating a random one (mode 0600) at first start.
pub fn load_or_create_token(path: &Path) -> std::io::Result<String> {
    if let Ok(token) = read_token(path)
        && !token.is_empty()
    {
        return Ok(token);
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
    let token = crate::hex::hex(&bytes);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(token.as_bytes())?;
    Ok(token)
}

/// Which listener a request came in on (each server marks its requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Tcp,
    /// `EXAI_HOME/daemon.sock`, reachable only by the home's owner.
    Socket,
}

/// What the token check needs.
pub struct TokenCheck {
    pub token: String,
    pub token_path: String,
    /// Nonces handed out to shims that prove the token instead of sending it (proof.rs).
    pub challenges: Challenges,
    pub personal: PersonalTokens,
    /// `--allow-remote`: over TCP only personal tokens (and the shim's proof) are taken, so the
    /// machine's own token never has to cross a network.
    pub personal_only_over_tcp: bool,
}

/// How long a personal token's lookup is trusted: a revoked token is refused on every replica
/// within this, and a busy client costs the database one query per token per period.
const PERSONAL_TOKEN_CACHE: Duration = Duration::from_secs(1);
/// Most lookups remembered (a flood of made-up tokens stays cheap and flushes no one's).
const PERSONAL_TOKEN_CACHE_ENTRIES: usize = 4096;

/// Personal tokens, found by their hash in the store with a short memory of each answer.
pub struct PersonalTokens {
    store: Store,
    /// Token hash → who it was (`None`: unknown or revoked).
    recent: Remembered<Option<Caller>>,
    /// User name → the user as stored: (revoked, admin), `None` when there is no such user.
    stored: Remembered<Option<(bool, bool)>>,
}

impl PersonalTokens {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            recent: Remembered::default(),
            stored: Remembered::default(),
        }
    }

    /// Whether `caller`, admitted earlier (a session, a page login), still holds: the owner
    /// always; a user unless revoked (or their admin flag changed) since. A store that cannot
    /// say keeps the session: an outage must not end everyone's. Cached like a token's lookup.
    pub async fn still_active(&self, caller: &Caller) -> bool {
        let Caller::User { name, admin } = caller else {
            return true;
        };
        match self.stored(name).await {
            Some(stored) => stored == Some((false, *admin)),
            None => true,
        }
    }

    /// Whether user `name`'s token is revoked (or the user gone); a store that cannot say
    /// says no. (An admin flag changed since is not a revocation.)
    pub async fn revoked(&self, name: &str) -> bool {
        matches!(self.stored(name).await, Some(None | Some((true, _))))
    }

    /// The user `name` as stored (revoked, admin), cached like a token; `None` when the store
    /// cannot say.
    async fn stored(&self, name: &str) -> Option<Option<(bool, bool)>> {
        if let Some(stored) = self.stored.fresh(name) {
            return Some(stored);
        }
        let wanted = name.to_string();
        let stored = match self.store.read(move |r| r.user(&wanted)).await {
            Ok(user) => user.map(|user| (user.revoked_at_ms.is_some(), user.admin)),
            Err(_) => return None,
        };
        self.stored.remember(name.to_string(), stored);
        Some(stored)
    }

    /// The user `token` belongs to, unless it is unknown or revoked.
    async fn caller(&self, token: &str) -> Result<Option<Caller>, StoreError> {
        let hash = token_hash(token);
        if let Some(caller) = self.recent.fresh(&hash) {
            return Ok(caller);
        }
        let wanted = hash.clone();
        let user = self.store.read(move |r| r.active_user(&wanted)).await?;
        let caller = user.map(|user| Caller::User {
            name: user.name,
            admin: user.admin,
        });
        self.recent.remember(hash, caller.clone());
        Ok(caller)
    }
}

/// Ends a personal token's session once the token is revoked: the connection was admitted
/// once, and a revoked member must not keep calling (and spending) over it. Checked every
/// [`REVOCATION_CHECK`], as a new request's token is; returns when the session ends (`ends`).
pub async fn end_when_revoked(caller: Caller, check: Arc<TokenCheck>, ends: CancellationToken) {
    loop {
        tokio::select! {
            _ = ends.cancelled() => return,
            _ = tokio::time::sleep(REVOCATION_CHECK) => {}
        }
        if !check.personal.still_active(&caller).await {
            tracing::warn!(
                user = caller.user_name().unwrap_or("?"),
                "the session's personal token was revoked: the session ends"
            );
            ends.cancel();
            return;
        }
    }
}

/// Cancels, until `stop`, the calls in flight here whose user's personal token was revoked: a
/// revoked member's calls stop spending within seconds, whichever transport started them. (A
/// changed admin flag ends the person's sessions, not the calls they were allowed to start.)
pub async fn cancel_calls_of_revoked_users(
    calls: Arc<Calls>,
    check: Arc<TokenCheck>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(REVOCATION_CHECK) => {}
        }
        let mut revoked = Vec::new();
        for user in calls.people_in_flight() {
            if check.personal.revoked(&user).await {
                revoked.push(user);
            }
        }
        if revoked.is_empty() {
            continue;
        }
        for call in calls.in_flight() {
            let of_revoked = call
                .origin
                .caller
                .user_name()
                .is_some_and(|user| revoked.iter().any(|r| r == user));
            if of_revoked && !call.is_cancelled() {
                tracing::warn!(call_id = %call.id, user = call.origin.caller.user_name().unwrap_or("?"), "the call's user was revoked: the call is cancelled");
                call.cancel(CancelReason::Revoked);
            }
        }
    }
}

/// How often an open session's (and a running call's) personal token is checked again.
const REVOCATION_CHECK: Duration = Duration::from_secs(1);

/// Answers of the store kept for [`PERSONAL_TOKEN_CACHE`], by key, at most
/// [`PERSONAL_TOKEN_CACHE_ENTRIES`] of them.
struct Remembered<T> {
    entries: Mutex<Entries<T>>,
}

struct Entries<T> {
    by_key: HashMap<String, (Instant, T)>,
    /// When stale answers were last swept out (at most once per cache period: a sweep reads
    /// them all).
    swept: Instant,
}

impl<T> Default for Remembered<T> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(Entries {
                by_key: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }
}

impl<T: Clone> Remembered<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<T>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The answer for `key`, if it is recent enough to trust.
    fn fresh(&self, key: &str) -> Option<T> {
        let entries = self.lock();
        let (at, value) = entries.by_key.get(key)?;
        (at.elapsed() < PERSONAL_TOKEN_CACHE).then(|| value.clone())
    }

    /// Keeps `value` for `key`. When full, stale answers go first; while every one is fresh (a
    /// flood of made-up tokens), new keys are not kept, so the members' answers stay.
    fn remember(&self, key: String, value: T) {
        let mut entries = self.lock();
        if entries.by_key.len() >= PERSONAL_TOKEN_CACHE_ENTRIES
            && entries.swept.elapsed() >= PERSONAL_TOKEN_CACHE
        {
            entries
                .by_key
                .retain(|_, (at, _)| at.elapsed() < PERSONAL_TOKEN_CACHE);
            entries.swept = Instant::now();
        }
        if entries.by_key.len() < PERSONAL_TOKEN_CACHE_ENTRIES || entries.by_key.contains_key(&key)
        {
            entries.by_key.insert(key, (Instant::now(), value));
        }
    }
}

/// Equal-time comparison, so the token cannot be guessed byte by byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Admits requests with the daemon's `Authorization: Bearer` token or a proof of it
/// (`Exai-Proof`) as the machine's owner, or with a personal token as its user; the request
/// carries who it is ([`Caller`]) in its extensions from here on.
pub async fn require_token(
    State(check): State<Arc<TokenCheck>>,
    request: Request,
    next: Next,
) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Some(fields) = proof::parse(authorization) {
        return answer_proof(&check, fields, request, next).await;
    }
    let path = request.uri().path().to_string();
    let Some(token) = authorization.strip_prefix("Bearer ").map(str::trim) else {
        return unauthorized(&check, &path, "missing token");
    };
    if same(token.as_bytes(), check.token.as_bytes()) {
        let over_tcp = request.extensions().get::<Listener>() != Some(&Listener::Socket);
        if over_tcp && check.personal_only_over_tcp {
            return unauthorized(
                &check,
                &path,
                "this daemon runs with --allow-remote: over TCP it takes only personal tokens \
                 (`exai users add NAME` makes one); the daemon's own token works on its local \
                 socket and through the exai shim",
            );
        }
        return admit(Caller::Owner, request, next).await;
    }
    if !token.starts_with(TOKEN_PREFIX) {
        return unauthorized(&check, &path, "wrong token");
    }
    match check.personal.caller(token).await {
        Ok(Some(caller)) => admit(caller, request, next).await,
        Ok(None) => unauthorized(&check, &path, "unknown or revoked personal token"),
        Err(error) => {
            tracing::error!(%path, %error, "cannot check a personal token");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot check the personal token now: {error}\n"),
            )
                .into_response()
        }
    }
}

async fn admit(caller: Caller, mut request: Request, next: Next) -> Response {
    request.extensions_mut().insert(caller);
    next.run(request).await
}

fn unauthorized(check: &TokenCheck, path: &str, what: &str) -> Response {
    tracing::warn!(%path, "request without a valid token refused: {what}");
    unauthorized_answer(check, what)
}

/// The 401 itself; also step 1 of the challenge–response, which is no refusal worth a warning.
fn unauthorized_answer(check: &TokenCheck, what: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        format!(
            "{what}: send 'Authorization: Bearer <token>' with your personal token (`exai users \
             add`), or exai's own token (in {})\n",
            check.token_path
        ),
    )
        .into_response()
}

/// Step 1 of the challenge–response gets a challenge; step 2 is admitted with the daemon's own proof.
async fn answer_proof(
    check: &TokenCheck,
    fields: proof::ProofFields,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_string();
    let Some(client_nonce) = fields.client_nonce.filter(|n| proof::is_nonce(n)) else {
        return unauthorized(check, &path, "Exai-Proof without a valid client nonce (cn)");
    };
    match (fields.server_nonce, fields.mac) {
        (Some(server_nonce), Some(mac)) => {
            // Redeemed first, so a wrong guess still burns the nonce.
            if !(check.challenges.redeem(&server_nonce)
                && proof::shim_proof_holds(&check.token, &server_nonce, &client_nonce, &mac))
            {
                return unauthorized(
                    check,
                    &path,
                    "Exai-Proof refused (not made with this daemon's token, or its challenge was used or expired)",
                );
            }
            let answer = proof::daemon_proof(&check.token, &server_nonce, &client_nonce);
            let mut response = admit(Caller::Owner, request, next).await;
            if let Ok(value) = HeaderValue::from_str(&answer) {
                response
                    .headers_mut()
                    .insert(proof::DAEMON_PROOF_HEADER, value);
            }
            response
        }
        _ => match check.challenges.issue() {
            Ok(server_nonce) => {
                let mut response = unauthorized_answer(check, "Exai-Proof: answer the challenge");
                if let Ok(value) = HeaderValue::from_str(&proof::challenge(&server_nonce)) {
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, value);
                }
                response
            }
            Err(error) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot make a challenge: {error}\n"),
            )
                .into_response(),
        },
    }
}

fn is_loopback_host(host: &str) -> bool {
    // Strip a port: "localhost:8765", "[::1]:8765", "127.0.0.1".
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    matches!(name, "localhost" | "127.0.0.1" | "::1")
}

/// A request from a name or page other than this machine's (the DNS rebinding guard).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotLocal {
    #[error("Host {0:?} is not allowed (only loopback names; DNS rebinding guard)")]
    Host(String),
    #[error("Origin {0:?} is not allowed")]
    Origin(String),
}

/// Refuses requests whose Host or Origin is not loopback (unless remote access is allowed).
pub fn host_and_origin_allowed(headers: &HeaderMap, allow_remote: bool) -> Result<(), NotLocal> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !allow_remote && !is_loopback_host(host) {
        return Err(NotLocal::Host(host.to_string()));
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let origin_host = origin.split("://").nth(1).unwrap_or(origin);
        if !(is_loopback_host(origin_host) || allow_remote && origin_host == host) {
            return Err(NotLocal::Origin(origin.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_made_up_tokens_flushes_no_members_answer() {
        let remembered: Remembered<bool> = Remembered::default();
        remembered.remember("ada".into(), true);
        for n in 0..PERSONAL_TOKEN_CACHE_ENTRIES * 2 {
            remembered.remember(format!("made-up-{n}"), false);
        }
        assert_eq!(remembered.fresh("ada"), Some(true));
        assert!(remembered.lock().by_key.len() <= PERSONAL_TOKEN_CACHE_ENTRIES);
    }

    #[test]
    fn only_loopback_hosts_and_origins_pass() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8765".parse().unwrap());
        assert!(host_and_origin_allowed(&h, false).is_ok());
        h.insert(header::ORIGIN, "http://localhost:3000".parse().unwrap());
        assert!(host_and_origin_allowed(&h, false).is_ok());
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert_eq!(
            host_and_origin_allowed(&h, false),
            Err(NotLocal::Origin("https://evil.example".into()))
        );
        h.remove(header::ORIGIN);
        h.insert(header::HOST, "evil.example:8765".parse().unwrap());
        assert_eq!(
            host_and_origin_allowed(&h, false).map_err(|e| e.to_string()),
            Err("Host \"evil.example:8765\" is not allowed (only loopback names; DNS rebinding guard)".into())
        );
        assert!(host_and_origin_allowed(&h, true).is_ok());
        h.insert(header::HOST, "[::1]:8765".parse().unwrap());
        assert!(host_and_origin_allowed(&h, false).is_ok());
    }

    #[test]
    fn token_comparison_is_exact() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
