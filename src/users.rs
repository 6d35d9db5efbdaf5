//! People: who a request comes from (the machine's owner or a named user), what each may see,
//! and the personal tokens that say who they are (made here, kept only as a hash).

use serde::Serialize;

use crate::hex::hex;

/// Who made a request: the daemon's own token (or the shim's proof of it) is the machine's owner;
/// a personal token (`exai users add`) is a named user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Caller {
    Owner,
    User { name: String, admin: bool },
}

impl Caller {
    /// The name calls and threads are recorded under (`None` for the owner).
    pub fn user_name(&self) -> Option<&str> {
        match self {
            Caller::Owner => None,
            Caller::User { name, .. } => Some(name),
        }
    }

    /// Whose records this caller sees: `None` for everyone's (the owner, admins), else their own
    /// name. The one place visibility is decided: `may_see` and every list filter read it.
    pub fn sees_only(&self) -> Option<&str> {
        match self {
            Caller::Owner | Caller::User { admin: true, .. } => None,
            Caller::User { name, .. } => Some(name),
        }
    }

    /// Whether a call or thread recorded under `user_name` is visible to this caller. To anyone
    /// else it looks exactly like an id that never existed.
    pub fn may_see(&self, user_name: Option<&str>) -> bool {
        self.sees_only().is_none_or(|me| user_name == Some(me))
    }
}

/// The start of every personal token, so one is recognised in a config file or a leak scanner.
pub const TOKEN_PREFIX: &str = "exai_u_";

/// Longest user name accepted.
const MAX_NAME: usize = 32;

/// Why a personal token could not be made, or a name is refused.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("cannot make a random token: {0}")]
    Random(String),
    #[error(
        "{0:?} is not a valid user name: use 1 to {MAX_NAME} lowercase letters, digits, '.', '_' \
         or '-', starting with a letter or digit"
    )]
    BadName(String),
}

/// A new personal token: the prefix and 32 random bytes in hex.
pub fn new_token() -> Result<String, UserError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| UserError::Random(e.to_string()))?;
    Ok(format!("{TOKEN_PREFIX}{}", hex(&bytes)))
}

/// What the store keeps of a token: its SHA-256, in hex.
pub fn token_hash(token: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

/// Checks a user name: short and safe to show in logs, tables and file names.
pub fn check_name(name: &str) -> Result<(), UserError> {
    let fits = (1..=MAX_NAME).contains(&name.len())
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if fits {
        Ok(())
    } else {
        Err(UserError::BadName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_prefixed_and_kept_as_their_hash() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 64);
        let hash = token_hash(&a);
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains(&a[TOKEN_PREFIX.len()..]));
        assert_eq!(hash, token_hash(&a));
    }

    #[test]
    fn names_are_short_and_safe() {
        for good in ["ada", "bob-2", "c.d_e", "7"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Ada", "-x", "a b", "a/b", "ä", &"x".repeat(33)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn users_see_their_own_records_and_admins_and_the_owner_see_all() {
        let ada = Caller::User {
            name: "ada".into(),
            admin: false,
        };
        let boss = Caller::User {
            name: "boss".into(),
            admin: true,
        };
        assert!(ada.may_see(Some("ada")));
        assert!(!ada.may_see(Some("bob")));
        assert!(!ada.may_see(None));
        for all in [&boss, &Caller::Owner] {
            assert!(all.may_see(Some("ada")) && all.may_see(None));
            assert_eq!(all.sees_only(), None);
        }
        assert_eq!(ada.sees_only(), Some("ada"));
        assert_eq!(boss.user_name(), Some("boss"));
        assert_eq!(Caller::Owner.user_name(), None);
    }
}
