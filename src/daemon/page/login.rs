//! Getting into the live page without a token in the address bar: `exai open` asks (with the
//! token) for a one-time login code; `/login?code=…` swaps it for a session cookie once, within a
//! minute. Codes and sessions are random, held in memory only, bounded and expiring.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header;

use crate::users::Caller;

/// How long a login code may wait to be used.
pub const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// How long a page session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// The session cookie's name.
pub const COOKIE: &str = "exai_page";
/// Most codes (and sessions) one caller holds; past this their own nearest to its end goes, so
/// one person logging in again and again ends no one else's session.
const MOST_PER_CALLER: usize = 16;
/// Most codes and sessions held in all; past this the one nearest its end goes.
const MOST_HELD: usize = 4096;

/// Why no code could be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot make a random login code: {0}")]
pub struct NoRandom(String);

/// Who holds what: unused codes and open sessions, each with its caller and its end.
pub struct Logins {
    codes: Mutex<HashMap<String, (Instant, Caller)>>,
    sessions: Mutex<HashMap<String, (Instant, Caller)>>,
    code_lifetime: Duration,
}

impl Default for Logins {
    fn default() -> Self {
        Self {
            codes: Mutex::default(),
            sessions: Mutex::default(),
            code_lifetime: CODE_LIFETIME,
        }
    }
}

impl Logins {
    /// A new one-time code for `caller`, good for [`CODE_LIFETIME`].
    pub fn new_code(&self, caller: Caller) -> Result<String, NoRandom> {
        let code = random_id()?;
        keep(&self.codes, code.clone(), caller, self.code_lifetime);
        Ok(code)
    }

    /// Swaps a code (once, before it expires) for a new session id; `None` when the code was
    /// used, expired or never made.
    pub fn redeem(&self, code: &str) -> Result<Option<String>, NoRandom> {
        let found = lock(&self.codes).remove(code);
        let Some((_, caller)) = found.filter(|(until, _)| *until > Instant::now()) else {
            return Ok(None);
        };
        let session = random_id()?;
        keep(&self.sessions, session.clone(), caller, SESSION_LIFETIME);
        Ok(Some(session))
    }

    /// Who the request's session cookie belongs to, while the session lasts.
    pub fn caller(&self, headers: &HeaderMap) -> Option<Caller> {
        let session = session_cookie(headers)?;
        let sessions = lock(&self.sessions);
        let (until, caller) = sessions.get(session)?;
        (*until > Instant::now()).then(|| caller.clone())
    }
}

fn lock(
    map: &Mutex<HashMap<String, (Instant, Caller)>>,
) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Caller)>> {
    map.lock().unwrap_or_else(|p| p.into_inner())
}

/// Holds `id` for `lifetime`, forgetting the expired and, when `caller` holds too many (or all
/// are full), the one nearest its end: the caller's own first.
fn keep(
    map: &Mutex<HashMap<String, (Instant, Caller)>>,
    id: String,
    caller: Caller,
    lifetime: Duration,
) {
    let now = Instant::now();
    let mut held = lock(map);
    held.retain(|_, (until, _)| *until > now);
    let nearest_end = |held: &HashMap<String, (Instant, Caller)>, of: Option<&Caller>| {
        held.iter()
            .filter(|(_, (_, holder))| of.is_none_or(|of| holder == of))
            .min_by_key(|(_, (until, _))| *until)
            .map(|(id, _)| id.clone())
    };
    let own = held
        .values()
        .filter(|(_, holder)| *holder == caller)
        .count();
    let goes = if own >= MOST_PER_CALLER {
        nearest_end(&held, Some(&caller))
    } else if held.len() >= MOST_HELD {
        nearest_end(&held, None)
    } else {
        None
    };
    if let Some(first) = goes {
        held.remove(&first);
    }
    held.insert(id, (now + lifetime, caller));
}

/// 32 random bytes in hex.
fn random_id() -> Result<String, NoRandom> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| NoRandom(e.to_string()))?;
    Ok(crate::hex::hex(&bytes))
}

/// The value of the session cookie among the request's cookies.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The `Set-Cookie` value of a new session: script cannot read it, other sites cannot send it.
pub fn session_cookie_header(session: &str) -> String {
    format!(
        "{COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_LIFETIME.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_works_once_and_its_session_names_the_caller() {
        let logins = Logins::default();
        let caller = Caller::User {
            name: "ann".into(),
            admin: false,
        };
        let code = logins.new_code(caller.clone()).unwrap();
        let session = logins.redeem(&code).unwrap().expect("a fresh code works");
        assert_eq!(
            logins.redeem(&code).unwrap(),
            None,
            "a used code is refused"
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            format!("other=1; {COOKIE}={session}").parse().unwrap(),
        );
        assert_eq!(logins.caller(&headers), Some(caller));
        headers.insert(header::COOKIE, format!("{COOKIE}=nope").parse().unwrap());
        assert_eq!(logins.caller(&headers), None);
    }

    #[test]
    fn an_expired_code_is_refused() {
        let logins = Logins {
            code_lifetime: Duration::ZERO,
            ..Logins::default()
        };
        let code = logins.new_code(Caller::Owner).unwrap();
        assert_eq!(logins.redeem(&code).unwrap(), None);
    }

    #[test]
    fn held_codes_stay_bounded() {
        let logins = Logins::default();
        for n in 0..MOST_HELD + 10 {
            let caller = Caller::User {
                name: format!("u{n}"),
                admin: false,
            };
            logins.new_code(caller).unwrap();
        }
        assert_eq!(lock(&logins.codes).len(), MOST_HELD);
        let one = Logins::default();
        for _ in 0..MOST_PER_CALLER + 10 {
            one.new_code(Caller::Owner).unwrap();
        }
        assert_eq!(lock(&one.codes).len(), MOST_PER_CALLER);
    }

    #[test]
    fn one_person_logging_in_again_and_again_ends_no_one_elses_session() {
        let logins = Logins::default();
        let user = |name: &str| Caller::User {
            name: name.into(),
            admin: false,
        };
        let login = |caller: Caller| {
            let code = logins.new_code(caller).unwrap();
            logins.redeem(&code).unwrap().expect("a fresh code works")
        };
        let anns = login(user("ann"));
        let owners = login(Caller::Owner);
        for _ in 0..MOST_HELD + 10 {
            login(user("bob"));
        }
        let cookie = |session: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::COOKIE,
                format!("{COOKIE}={session}").parse().unwrap(),
            );
            headers
        };
        assert_eq!(logins.caller(&cookie(&anns)), Some(user("ann")));
        assert_eq!(logins.caller(&cookie(&owners)), Some(Caller::Owner));
        assert!(lock(&logins.sessions).len() <= 2 + MOST_PER_CALLER);
    }
}
