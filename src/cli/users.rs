//! `exai users add|list|revoke`: the people of a shared exai, read and written in the configured
//! store directly (no daemon needed). A personal token is shown once, when it is made.

use std::io::Write;

use crate::config::Config;
use crate::store::{Revoked, StoreError, StoreLocation, StoreReader, UserRow};
use crate::users::{self, UserError};

/// Why a `users` command failed. No message quotes a token or its hash.
#[derive(Debug, thiserror::Error)]
pub enum UsersCliError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    User(#[from] UserError),
    #[error("cannot create {path}: {source}")]
    Home {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Output(#[from] std::io::Error),
}

/// The store, made when missing (an SQLite file's directory is private, as the daemon makes it).
fn open_store(config: &Config) -> Result<StoreReader, UsersCliError> {
    if let StoreLocation::Sqlite(path) = &config.store
        && let Some(dir) = path.parent()
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| UsersCliError::Home {
                path: dir.display().to_string(),
                source,
            })?;
    }
    Ok(StoreReader::open_at(&config.store)?)
}

/// `exai users add NAME [--admin]`: makes the user's token, keeps its hash, prints it once.
pub fn add(
    config: &Config,
    name: &str,
    admin: bool,
    out: &mut impl Write,
) -> Result<(), UsersCliError> {
    users::check_name(name)?;
    let token = users::new_token()?;
    open_store(config)?.add_user(name, &users::token_hash(&token), admin)?;
    let role = if admin {
        " (admin: sees every call)"
    } else {
        ""
    };
    writeln!(
        out,
        "added user {name}{role}. Their personal token, shown only now (exai keeps only its hash):\n\n\
         {token}\n\n\
         Use it as the header 'Authorization: Bearer <token>' on the daemon's /mcp or /ws \
         (in an MCP client's config: the server entry's headers)."
    )?;
    Ok(())
}

/// `exai users list [--json]`: names, admin flags, when made and revoked; never a token.
pub fn list(config: &Config, as_json: bool, out: &mut impl Write) -> Result<(), UsersCliError> {
    let users = if config.store.exists() {
        StoreReader::open_at(&config.store)?.users()?
    } else {
        Vec::new()
    };
    if as_json {
        let text = serde_json::to_string_pretty(&users).map_err(std::io::Error::other)?;
        writeln!(out, "{text}")?;
        return Ok(());
    }
    if users.is_empty() {
        writeln!(out, "no users (add one with `exai users add NAME`)")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<32}  {:<5}  {:<20}  REVOKED",
        "NAME", "ADMIN", "CREATED"
    )?;
    for UserRow {
        name,
        admin,
        created_at_ms,
        revoked_at_ms,
    } in users
    {
        writeln!(
            out,
            "{name:<32}  {:<5}  {:<20}  {}",
            if admin { "yes" } else { "no" },
            when(created_at_ms),
            revoked_at_ms.map(when).unwrap_or_else(|| "-".into())
        )?;
    }
    Ok(())
}

/// `exai users revoke NAME`: the token stops working (on every daemon within seconds).
pub fn revoke(config: &Config, name: &str, out: &mut impl Write) -> Result<(), UsersCliError> {
    if !config.store.exists() {
        return Err(StoreError::UnknownUser { name: name.into() }.into());
    }
    match StoreReader::open_at(&config.store)?.revoke_user(name)? {
        Revoked::Now => writeln!(
            out,
            "revoked {name}: their token is refused within seconds by every daemon on this store; \
             their calls stay in the records"
        )?,
        Revoked::Already(at) => writeln!(out, "{name} was already revoked on {}", when(at))?,
    }
    Ok(())
}

/// A moment as people read it: `2026-01-31 14:05 UTC`.
fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}
