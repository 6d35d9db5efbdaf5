//! The shared backend: a Postgres database that several daemons (a team's replicas) use at once.
//!
//! The client is synchronous, like SQLite's: the writer and the readers already run on threads
//! of their own. A connection that breaks is dropped and made again on its next use, so a
//! daemon whose database went away recovers by itself when the database returns.

use std::collections::HashMap;
use std::time::Duration;

use postgres::config::Host;
use postgres::types::ToSql;
use postgres::{Client, NoTls, Statement};

use super::{BackendError, Columns, Param, Schema, StoreConnection};

mod embedded {
    refinery::embed_migrations!("src/store/migrations/postgres");
}

/// How long a connection attempt may take before the store says the database is unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Held while migrations run, so replicas starting together apply each migration once.
const MIGRATION_LOCK: i64 = 0x6578_6169; // "exai"

/// One connection to the database, made again when it breaks.
pub(super) struct Postgres {
    config: postgres::Config,
    client: Option<Client>,
    /// Statements prepared on the current client, by their SQL.
    prepared: HashMap<String, Statement>,
}

impl Postgres {
    /// Connects, bringing the schema up to date when `schema` asks.
    pub(super) fn open(url: &str, schema: Schema) -> Result<Self, BackendError> {
        let mut store = Self {
            config: connection_config(url)?,
            client: None,
            prepared: HashMap::new(),
        };
        match schema {
            Schema::BringUpToDate => store.migrate()?,
            // Connect now all the same: an unreachable database is the opener's error.
            Schema::Current => {
                live_client(&mut store.client, &store.config)?;
            }
        }
        Ok(store)
    }

    fn migrate(&mut self) -> Result<(), BackendError> {
        let (client, _) = live_client(&mut self.client, &self.config)?;
        client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
        let applied = embedded::migrations::runner().run(client);
        let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
        applied?;
        unlocked?;
        Ok(())
    }

    /// Runs `work` on the client; a failure of the connection itself drops it.
    fn with_client<T>(
        &mut self,
        work: impl FnOnce(&mut Client, &mut HashMap<String, Statement>) -> Result<T, postgres::Error>,
    ) -> Result<T, BackendError> {
        let (client, fresh) = live_client(&mut self.client, &self.config)?;
        if fresh {
            self.prepared.clear();
        }
        let done = work(client, &mut self.prepared);
        if let Err(error) = &done
            && is_disconnection(error)
        {
            self.client = None;
        }
        Ok(done?)
    }
}

/// How exai connects to the database a URL names: a bounded connect, keep-alives, its name.
pub(super) fn connection_config(url: &str) -> Result<postgres::Config, postgres::Error> {
    let mut config: postgres::Config = url.parse()?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("exai");
    }
    // A peer that vanished (a cable, a dead host) is noticed instead of waited on forever.
    config.keepalives_idle(Duration::from_secs(10));
    config.tcp_user_timeout(Duration::from_secs(15));
    Ok(config)
}

/// The client in `slot`, connected again when there is none or it broke; `true` with a new one
/// (whatever the old connection held — prepared statements, locks — is gone).
pub(super) fn live_client<'a>(
    slot: &'a mut Option<Client>,
    config: &postgres::Config,
) -> Result<(&'a mut Client, bool), postgres::Error> {
    let (client, fresh) = match slot.take() {
        Some(client) if !client.is_closed() => (client, false),
        _ => (config.connect(NoTls)?, true),
    };
    Ok((slot.insert(client), fresh))
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Closing blocks on the client's own runtime, which cannot run on a thread that drives
        // async tasks (the last handle of a store may go there): close it on a thread of its own.
        if let Some(client) = self.client.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            let closing = std::thread::Builder::new()
                .name("exai-store-close".into())
                .spawn(move || drop(client));
            if let Err(error) = closing {
                tracing::warn!(%error, "a store connection was left to the server to close");
            }
        }
    }
}

/// The statement for `sql` (written with SQLite's `?N` placeholders), prepared once per client.
fn statement(
    client: &mut Client,
    prepared: &mut HashMap<String, Statement>,
    sql: &str,
) -> Result<Statement, postgres::Error> {
    if let Some(statement) = prepared.get(sql) {
        return Ok(statement.clone());
    }
    let statement = client.prepare(&dollar_placeholders(sql))?;
    prepared.insert(sql.to_string(), statement.clone());
    Ok(statement)
}

/// `?1` → `$1`: the store's SQL is written once, with SQLite's numbered placeholders.
fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

fn bound<'a>(params: &'a [Param<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params
        .iter()
        .map(|param| match param {
            Param::Int(n) => n as &(dyn ToSql + Sync),
            Param::Text(text) => text as &(dyn ToSql + Sync),
            Param::Bool(flag) => flag as &(dyn ToSql + Sync),
        })
        .collect()
}

impl StoreConnection for Postgres {
    fn begin(&mut self) -> Result<(), BackendError> {
        self.with_client(|client, _| client.batch_execute("BEGIN"))
    }

    fn commit(&mut self) -> Result<(), BackendError> {
        self.with_client(|client, _| client.batch_execute("COMMIT"))
    }

    fn rollback(&mut self) {
        if let Some(client) = self.client.as_mut()
            && client.batch_execute("ROLLBACK").is_err()
        {
            self.client = None;
        }
    }

    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, BackendError> {
        self.with_client(|client, prepared| {
            let statement = statement(client, prepared, sql)?;
            client.execute(&statement, &bound(params))
        })
    }

    fn query(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        each: &mut dyn FnMut(&dyn Columns) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        let rows = self.with_client(|client, prepared| {
            let statement = statement(client, prepared, sql)?;
            client.query(&statement, &bound(params))
        })?;
        for row in &rows {
            each(&PostgresRow(row))?;
        }
        Ok(())
    }

    #[cfg(test)]
    fn execute_raw(&mut self, sql: &str) -> Result<(), BackendError> {
        self.with_client(|client, _| client.batch_execute(sql))
    }
}

struct PostgresRow<'a>(&'a postgres::Row);

impl Columns for PostgresRow<'_> {
    fn int(&self, column: usize) -> Result<Option<i64>, BackendError> {
        Ok(self.0.try_get(column)?)
    }
    fn text(&self, column: usize) -> Result<Option<String>, BackendError> {
        Ok(self.0.try_get(column)?)
    }
    fn flag(&self, column: usize) -> Result<bool, BackendError> {
        Ok(self.0.try_get(column)?)
    }
}

/// What the database said, for people: a server's own message (with its detail and hint), or
/// what went wrong with the connection.
pub(super) fn message(error: &postgres::Error) -> String {
    if let Some(said) = error.as_db_error() {
        return said.to_string();
    }
    // The client's own words are generic ("error connecting to server"): the cause says which.
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}

/// The connection itself failed (refused, closed, timed out), not one statement: every write of
/// a batch would fail alike.
pub(super) fn is_disconnection(error: &postgres::Error) -> bool {
    error.as_db_error().is_none()
}

/// The database a URL names, for messages and logs: `postgres://host:port/name`, never its
/// user or password. A URL that does not parse is not echoed (it may hold a password).
pub(super) fn describe(url: &str) -> String {
    let Ok(config) = url.parse::<postgres::Config>() else {
        return "postgres://(a URL that does not parse)".to_string();
    };
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let name = match host {
                Host::Tcp(name) => name.clone(),
                Host::Unix(dir) => dir.display().to_string(),
            };
            match config.get_ports().get(i).or(config.get_ports().first()) {
                Some(port) => format!("{name}:{port}"),
                None => name,
            }
        })
        .collect();
    format!(
        "postgres://{}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_postgres_numbered_ones_and_nothing_else_changes() {
        assert_eq!(
            dollar_placeholders("UPDATE calls SET a = ?2 WHERE id = ?1 AND b LIKE '?%' AND ?12"),
            "UPDATE calls SET a = $2 WHERE id = $1 AND b LIKE '?%' AND $12"
        );
    }

    #[test]
    fn a_database_is_described_without_its_user_or_password() {
        let shown = describe("postgres://exai:hunter2@db.internal:5433/team?sslmode=disable");
        assert_eq!(shown, "postgres://db.internal:5433/team");
        assert!(!describe("postgres://exai:hunter2@").contains("hunter2"));
        assert!(!describe("postgres://exai:hunter2@host:notaport/x").contains("hunter2"));
    }
}
