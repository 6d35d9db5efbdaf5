//! The shared backend: a Postgres database that several daemons (a team's replicas) use at once.
//!
//! Each connection runs on a small runtime of its own, driven only while the store's thread
//! waits on it: the writer and the readers already run on threads of their own. That lets the
//! writer send a whole group of writes in one round trip (pipelined) instead of one per statement.
//! A connection that breaks is dropped and made again on its next use, so a daemon whose
//! database went away recovers by itself when the database returns. Every wait on the server is
//! bounded: a server that accepts connections but never answers (stopped with SIGSTOP, a stuck
//! proxy, a lost route whose packets the kernel still acknowledges) costs a caller at most
//! `CONNECT_TIMEOUT` or `ANSWER_LIMIT`, and the connection it hung on is dropped.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_postgres::config::Host;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, NoTls, Statement as Prepared};

use super::{BackendError, Columns, Param, Schema, Statement, StoreConnection};

mod embedded {
    refinery::embed_migrations!("src/store/migrations/postgres");
}

/// How long a connection attempt may take, its start-up and authentication included, before the
/// store says the database is unreachable. Under the shim's wait for a daemon it starts (5 s), so
/// an autostarted daemon whose database hangs is reported with that error, not as slow to start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one round trip to the server may take. A healthy group commit takes milliseconds and
/// the slowest read (a page of `exai calls` over a large table) well under a second; past this the
/// server is taken to hang, and the caller is told so while a call can still be answered.
const ANSWER_LIMIT: Duration = Duration::from_secs(10);
/// How long the migrations may take (a replica may wait here for another's to finish).
const MIGRATION_LIMIT: Duration = Duration::from_secs(300);
/// After a wait that hit its limit, how long the same caller is told so at once instead of
/// waiting again: the writer's next groups fail fast instead of each waiting out a connect.
const REST_AFTER_HANG: Duration = Duration::from_secs(5);
/// How long a closing connection may take to say goodbye to the server.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Held while migrations run, so replicas starting together apply each migration once.
const MIGRATION_LOCK: i64 = 0x6578_6169; // "exai"

/// One connection to the database, made again when it breaks.
pub(super) struct Postgres {
    link: Link,
    /// Statements prepared on the current connection, by their SQL.
    prepared: HashMap<String, Prepared>,
}

/// A connection made again when it breaks, resting a while after one hung.
pub(super) struct Link {
    config: tokio_postgres::Config,
    connection: Option<Connection>,
    /// When a wait last hit its limit, and which: until `REST_AFTER_HANG` has passed, the
    /// database is not asked again.
    hung: Option<(Instant, &'static str, Duration)>,
}

impl Link {
    pub(super) fn new(config: tokio_postgres::Config) -> Self {
        Self {
            config,
            connection: None,
            hung: None,
        }
    }

    /// The live connection (made again when there is none or it broke); `true` with a new one
    /// (whatever the old connection held — prepared statements, advisory locks — is gone).
    pub(super) fn live(&mut self) -> Result<(&Connection, bool), BackendError> {
        if let Some((at, waited_for, limit)) = self.hung {
            if at.elapsed() < REST_AFTER_HANG {
                return Err(BackendError::Resting {
                    waited_for,
                    limit,
                    rest: REST_AFTER_HANG,
                });
            }
            self.hung = None;
        }
        let (connection, fresh) = match self.connection.take() {
            Some(connection) if !connection.client.is_closed() => (connection, false),
            broken => {
                if let Some(broken) = broken {
                    broken.close();
                }
                match Connection::open(&self.config) {
                    Ok(connection) => (connection, true),
                    Err(error) => {
                        self.note(&error);
                        return Err(error);
                    }
                }
            }
        };
        Ok((self.connection.insert(connection), fresh))
    }

    /// Runs `work` on the live connection, told whether it is a new one. A connection that
    /// failed or hung is dropped.
    pub(super) fn with<T>(
        &mut self,
        work: impl FnOnce(&Connection, bool) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let (connection, fresh) = self.live()?;
        let done = work(connection, fresh);
        if let Err(error) = &done {
            self.note(error);
        }
        done
    }

    /// Drops the connection after an error that says it is broken or hung, and rests after a hang.
    fn note(&mut self, error: &BackendError) {
        if let BackendError::NoAnswer { waited_for, limit } = error {
            self.hung = Some((Instant::now(), waited_for, *limit));
        }
        if error.fails_every_write() {
            self.close();
        }
    }

    /// Closes the connection, if there is one; the next use makes another.
    fn close(&mut self) {
        if let Some(connection) = self.connection.take() {
            connection.close();
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.close();
    }
}

/// A live connection: its client, and the runtime that moves its bytes while the store waits.
pub(super) struct Connection {
    runtime: Runtime,
    client: Client,
    /// The task that reads and writes the socket; it ends when the client is dropped.
    io: JoinHandle<()>,
}

impl Connection {
    /// Connects, start-up and authentication included, within `CONNECT_TIMEOUT`.
    pub(super) fn open(config: &tokio_postgres::Config) -> Result<Self, BackendError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(BackendError::Runtime)?;
        // The client's own connect timeout covers the socket only, not the server's greeting.
        let (client, connection) = within(
            &runtime,
            CONNECT_TIMEOUT,
            "a new connection",
            config.connect(NoTls),
        )?;
        let io = runtime.spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "a store connection ended");
            }
        });
        Ok(Self {
            runtime,
            client,
            io,
        })
    }

    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    /// Waits for `work` (a request on this connection's client) at most `ANSWER_LIMIT`.
    pub(super) fn wait<T>(
        &self,
        work: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, BackendError> {
        within(&self.runtime, ANSWER_LIMIT, "an answer", work)
    }

    /// Says goodbye to the server (so it logs no lost client) and stops the runtime. Stopping a
    /// runtime blocks, which a thread that drives async tasks must not: there it closes on a
    /// thread of its own.
    pub(super) fn close(self) {
        if tokio::runtime::Handle::try_current().is_err() {
            return self.close_now();
        }
        let closing = std::thread::Builder::new()
            .name("exai-store-close".into())
            .spawn(move || self.close_now());
        if let Err(error) = closing {
            tracing::warn!(%error, "a store connection was left to the server to close");
        }
    }

    fn close_now(self) {
        let Self {
            runtime,
            client,
            io,
        } = self;
        drop(client);
        // The timer must be made inside the runtime it runs on.
        let _ = runtime.block_on(async { tokio::time::timeout(CLOSE_TIMEOUT, io).await });
    }
}

/// Drives `work` on `runtime` for at most `limit`; past it, the database is said not to have
/// answered, naming what was waited for.
fn within<T, E: Into<BackendError>>(
    runtime: &Runtime,
    limit: Duration,
    waited_for: &'static str,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, BackendError> {
    // The timer must be made inside the runtime it runs on.
    runtime
        .block_on(async { tokio::time::timeout(limit, work).await })
        .map_err(|_| BackendError::NoAnswer { waited_for, limit })?
        .map_err(Into::into)
}

impl Postgres {
    /// Connects, bringing the schema up to date when `schema` asks.
    pub(super) fn open(url: &str, schema: Schema) -> Result<Self, BackendError> {
        let config = connection_config(url)?;
        if schema == Schema::BringUpToDate {
            migrate(&config, &describe(url))?;
        }
        let mut link = Link::new(config);
        // Connect now all the same: an unreachable database is the opener's error.
        link.live()?;
        Ok(Self {
            link,
            prepared: HashMap::new(),
        })
    }

    /// Runs `work` on the connection (made again when there is none or it broke, which forgets
    /// what was prepared).
    fn with_connection<T>(
        &mut self,
        work: impl FnOnce(&Connection, &mut HashMap<String, Prepared>) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let prepared = &mut self.prepared;
        self.link.with(|connection, fresh| {
            if fresh {
                prepared.clear();
            }
            work(connection, prepared)
        })
    }
}

/// Applies the migrations not yet applied, on a connection of their own, under a lock so that
/// replicas starting together apply each once.
fn migrate(config: &tokio_postgres::Config, store: &str) -> Result<(), BackendError> {
    let mut connection = Connection::open(config)?;
    let client = &mut connection.client;
    let migrated = within(
        &connection.runtime,
        MIGRATION_LIMIT,
        "the schema migrations",
        async {
            client
                .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            let runner = embedded::migrations::runner();
            let outcome = runner.run_async(client).await;
            let known = runner.get_migrations();
            let applied = match super::refused_as_newer(&outcome, known) {
                true => Some(runner.get_applied_migrations_async(client).await),
                false => None,
            };
            let unlocked = client
                .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
                .await;
            super::applied_or_newer(outcome, known, applied, store)?;
            unlocked?;
            Ok::<_, BackendError>(())
        },
    );
    connection.close_now();
    migrated
}

/// How exai connects to the database a URL names: a bounded connect, keep-alives, its name.
pub(super) fn connection_config(
    url: &str,
) -> Result<tokio_postgres::Config, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = url.parse()?;
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

/// The statement for `sql` (written with SQLite's `?N` placeholders), prepared once per connection.
fn prepared(
    connection: &Connection,
    cache: &mut HashMap<String, Prepared>,
    sql: &str,
) -> Result<Prepared, BackendError> {
    if let Some(statement) = cache.get(sql) {
        return Ok(statement.clone());
    }
    let statement = connection.wait(connection.client.prepare(&dollar_placeholders(sql)))?;
    cache.insert(sql.to_string(), statement.clone());
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
        .map(|param| param as &(dyn ToSql + Sync))
        .collect()
}

/// A value as PostgreSQL takes it. Its text cannot hold NUL, which any outside text may carry
/// (a model name, a provider's error, a prompt): each becomes U+FFFD, so the write still lands.
impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Param::Int(n) => n.to_sql(ty, out),
            Param::Text(Some(text)) if text.contains('\0') => {
                text.replace('\0', "\u{FFFD}").as_str().to_sql(ty, out)
            }
            Param::Text(text) => text.to_sql(ty, out),
            Param::Bool(flag) => flag.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <i64 as ToSql>::accepts(ty) || <&str as ToSql>::accepts(ty) || <bool as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

impl StoreConnection for Postgres {
    fn begin(&mut self) -> Result<(), BackendError> {
        self.with_connection(|c, _| c.wait(c.client.batch_execute("BEGIN")))
    }

    fn commit(&mut self) -> Result<(), BackendError> {
        self.with_connection(|c, _| c.wait(c.client.batch_execute("COMMIT")))
    }

    fn rollback(&mut self) {
        if let Some(c) = &self.link.connection
            && let Err(error) = c.wait(c.client.batch_execute("ROLLBACK"))
        {
            // A connection that cannot roll back is left for a new one.
            self.link.note(&error);
            self.link.close();
        }
    }

    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, BackendError> {
        self.with_connection(|c, cache| {
            let statement = prepared(c, cache, sql)?;
            c.wait(c.client.execute(&statement, &bound(params)))
        })
    }

    /// The group goes out without waiting for each answer: no statement can wait on another's.
    fn guards_statements(&self) -> bool {
        false
    }

    /// One round trip for the whole transaction: its statements are sent one after another
    /// without waiting for each answer (the server runs them in order all the same). A statement
    /// that fails makes the server refuse the rest and roll back at `COMMIT`.
    fn execute_in_transaction(
        &mut self,
        statements: &[Statement<'_>],
    ) -> Result<Vec<u64>, BackendError> {
        debug_assert!(statements.iter().all(|s| s.only_if.is_none()));
        let done = self.with_connection(|c, cache| {
            let prepared: Vec<Prepared> = statements
                .iter()
                .map(|s| prepared(c, cache, s.sql))
                .collect::<Result<_, _>>()?;
            let values: Vec<Vec<&(dyn ToSql + Sync)>> =
                statements.iter().map(|s| bound(&s.params)).collect();
            // Requests go out in the order their futures are first polled: the order written here.
            c.wait(async {
                let writes = futures::future::try_join_all(
                    prepared
                        .iter()
                        .zip(&values)
                        .map(|(p, v)| c.client.execute(p, v)),
                );
                let (_, changed, _) = futures::future::try_join3(
                    c.client.batch_execute("BEGIN"),
                    writes,
                    c.client.batch_execute("COMMIT"),
                )
                .await?;
                Ok(changed)
            })
        });
        if done.is_err() {
            self.rollback();
        }
        done
    }

    fn query(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        each: &mut dyn FnMut(&dyn Columns) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        let rows = self.with_connection(|c, cache| {
            let statement = prepared(c, cache, sql)?;
            c.wait(c.client.query(&statement, &bound(params)))
        })?;
        for row in &rows {
            each(&PostgresRow(row))?;
        }
        Ok(())
    }

    #[cfg(test)]
    fn execute_raw(&mut self, sql: &str) -> Result<(), BackendError> {
        self.with_connection(|c, _| c.wait(c.client.batch_execute(sql)))
    }
}

struct PostgresRow<'a>(&'a tokio_postgres::Row);

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
pub(super) fn message(error: &tokio_postgres::Error) -> String {
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
pub(super) fn is_disconnection(error: &tokio_postgres::Error) -> bool {
    error.as_db_error().is_none()
}

/// The database a URL names, for messages and logs: `postgres://host:port/name`, never its
/// user or password. A URL that does not parse is not echoed (it may hold a password).
pub(super) fn describe(url: &str) -> String {
    let Ok(config) = url.parse::<tokio_postgres::Config>() else {
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
