//! The users table: who may use a shared exai, by the SHA-256 of their personal token (the token
//! itself is never stored), whether they are admins, and when they were revoked.

use serde::Serialize;

use super::{Columns, Param, StoreError, StoreReader, now_ms, required_int, required_text};

/// A user as listed: never their token or its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRow {
    pub name: String,
    pub admin: bool,
    pub created_at_ms: i64,
    /// When the token stopped working; `None` while it works.
    pub revoked_at_ms: Option<i64>,
}

/// What revoking a user did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// The token worked until now.
    Now,
    /// It had already been revoked, at this time.
    Already(i64),
}

const USER_COLUMNS: &str = "name, admin, created_at_ms, revoked_at_ms";

fn user_from(row: &dyn Columns) -> Result<UserRow, super::BackendError> {
    Ok(UserRow {
        name: required_text(row, 0)?,
        admin: row.flag(1)?,
        created_at_ms: required_int(row, 2)?,
        revoked_at_ms: row.int(3)?,
    })
}

impl StoreReader {
    /// Adds a user whose token hashes to `token_hash`. A name already used — revoked or not — is
    /// refused: a name keeps meaning one person in the records.
    pub fn add_user(&self, name: &str, token_hash: &str, admin: bool) -> Result<(), StoreError> {
        let added = self.execute(
            "INSERT INTO users (name, token_hash, created_at_ms, admin) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT DO NOTHING",
            &[
                Param::Text(Some(name)),
                Param::Text(Some(token_hash)),
                Param::Int(Some(now_ms())),
                Param::Bool(admin),
            ],
        )?;
        if added == 1 {
            return Ok(());
        }
        if self.user(name)?.is_some() {
            return Err(StoreError::UserTaken { name: name.into() });
        }
        // Two random 32-byte tokens with one hash: never in practice, but not silently.
        Err(StoreError::Write {
            store: self.location.to_string(),
            message: "the new token's hash is already taken; run the command again".into(),
        })
    }

    /// Every user, by name.
    pub fn users(&self) -> Result<Vec<UserRow>, StoreError> {
        self.rows(
            &format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"),
            &[],
            user_from,
        )
    }

    /// The user called `name`, revoked or not.
    pub fn user(&self, name: &str) -> Result<Option<UserRow>, StoreError> {
        let found = self.rows(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"),
            &[Param::Text(Some(name))],
            user_from,
        )?;
        Ok(found.into_iter().next())
    }

    /// Stops `name`'s token from working (the user and their records stay).
    pub fn revoke_user(&self, name: &str) -> Result<Revoked, StoreError> {
        let revoked = self.execute(
            "UPDATE users SET revoked_at_ms = ?2 WHERE name = ?1 AND revoked_at_ms IS NULL",
            &[Param::Text(Some(name)), Param::Int(Some(now_ms()))],
        )?;
        if revoked == 1 {
            return Ok(Revoked::Now);
        }
        match self.user(name)? {
            Some(UserRow {
                revoked_at_ms: Some(at),
                ..
            }) => Ok(Revoked::Already(at)),
            _ => Err(StoreError::UnknownUser { name: name.into() }),
        }
    }

    /// The user whose token hashes to `token_hash`, unless there is none or it was revoked.
    pub fn active_user(&self, token_hash: &str) -> Result<Option<UserRow>, StoreError> {
        let found = self.rows(
            &format!(
                "SELECT {USER_COLUMNS} FROM users WHERE token_hash = ?1 AND revoked_at_ms IS NULL"
            ),
            &[Param::Text(Some(token_hash))],
            user_from,
        )?;
        Ok(found.into_iter().next())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::tests::test_location;
    use crate::store::{StoreError, StoreReader};

    use super::Revoked;

    #[test]
    fn users_are_added_listed_found_by_hash_and_revoked() {
        let store = StoreReader::open_at(&test_location()).unwrap();
        store.add_user("ada", "hash-a", true).unwrap();
        store.add_user("bob", "hash-b", false).unwrap();
        let taken = store.add_user("ada", "hash-c", false).unwrap_err();
        assert!(
            matches!(&taken, StoreError::UserTaken { name } if name == "ada"),
            "{taken}"
        );
        let names: Vec<(String, bool)> = store
            .users()
            .unwrap()
            .into_iter()
            .map(|u| (u.name, u.admin))
            .collect();
        assert_eq!(names, [("ada".into(), true), ("bob".into(), false)]);
        assert_eq!(store.active_user("hash-b").unwrap().unwrap().name, "bob");
        assert!(store.active_user("hash-c").unwrap().is_none());

        assert_eq!(store.revoke_user("bob").unwrap(), Revoked::Now);
        assert!(store.active_user("hash-b").unwrap().is_none());
        let at = store.user("bob").unwrap().unwrap().revoked_at_ms.unwrap();
        assert_eq!(store.revoke_user("bob").unwrap(), Revoked::Already(at));
        // A revoked user's name stays taken.
        assert!(matches!(
            store.add_user("bob", "hash-d", false),
            Err(StoreError::UserTaken { .. })
        ));
        assert!(matches!(
            store.revoke_user("nobody"),
            Err(StoreError::UnknownUser { name }) if name == "nobody"
        ));
    }
}
