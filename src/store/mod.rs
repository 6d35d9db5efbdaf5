//! The call store: a record per tool call, conversation threads and kept answers.
//!
//! Two backends sit behind one interface ([`StoreConnection`]): an SQLite file in EXAI_HOME (the
//! embedded default for one person) and a Postgres database (shared by a team's daemons). Both
//! get their schema from versioned migrations (refinery) applied at open. Writes go through one
//! writer thread that commits whatever is queued in a single transaction (group commit), so
//! async tasks never block on the database and hundreds of concurrent calls cost a handful of
//! commits. Reads run on blocking threads over a few pooled connections; the CLI reads the store
//! directly, daemon up or not.

mod documents;
mod postgres;
mod records;
mod replicas;
pub mod shared_slots;
mod spend;
mod sqlite;
mod users;
mod waiting_threads;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::mpsc;

use records::sql_list;
pub use records::{
    CallFigures, CallFilter, CallRow, CallState, Delivery, FinishedCall, NewCall, ReplicaRow,
    ThreadFilter, ThreadRow, ThreadSummary, TransportKind,
};
pub use replicas::this_host;
pub use spend::{DailySpend, UsageBy, UsageRow, day_name, day_of, spend_totals};
pub use users::{Revoked, UserRow};
use waiting_threads::{ThreadSave, WaitingThreads};
use writer::{Queued, WriteFailure, WriteOp, Writer};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("call store {store}: {source}")]
    Database { store: String, source: BackendError },
    #[error("call store writer has stopped")]
    WriterGone,
    #[error("call id {id} already names a record")]
    IdTaken { id: String },
    #[error("call store {store}: {message}")]
    Write { store: String, message: String },
    #[error("call store {store} did not answer within {waited:?}")]
    NoAnswer { store: String, waited: Duration },
    #[error(
        "call store {store} took no write for {waited:?}: its queue of {WRITE_QUEUE} writes stayed \
         full (its writer is stuck on the database)"
    )]
    QueueFull { store: String, waited: Duration },
    #[error(
        "user {name} already exists (a revoked user's name stays taken, so the records keep \
         meaning one person); choose another name"
    )]
    UserTaken { name: String },
    #[error("no user {name} (`exai users list` shows them)")]
    UnknownUser { name: String },
    #[error("cannot create {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a backend's database said.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", postgres::message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// The database server did not answer in time: it may be stopped, or a route to it lost.
    #[error("no answer from the database within {} s (waited for {waited_for})", limit.as_secs())]
    NoAnswer {
        waited_for: &'static str,
        limit: Duration,
    },
    /// The database did not answer a moment ago, and is let rest before it is asked again.
    #[error(
        "no answer from the database within {} s a moment ago (waited for {waited_for}); it is \
         asked again {} s after that",
        limit.as_secs(),
        rest.as_secs()
    )]
    Resting {
        waited_for: &'static str,
        limit: Duration,
        rest: Duration,
    },
    #[error("schema migration failed: {0}")]
    Migration(#[from] refinery::Error),
    /// A store a newer exai migrated, without a migration this exai has (or with it changed).
    #[error(
        "the store was migrated by a newer exai, but its history lacks {0} as this exai has it: \
         it was not migrated in order; refusing to run on it"
    )]
    SchemaGap(String),
    /// The runtime that drives a database connection could not start (out of file descriptors…).
    #[error("could not start a database connection's runtime: {0}")]
    Runtime(std::io::Error),
    /// A stored value that does not read back as its type.
    #[error("{0}")]
    Decode(String),
}

impl BackendError {
    /// Whether every write of a batch would fail the same way (the database is locked by another
    /// program, or cannot be reached), so retrying them one by one would only wait longer.
    fn fails_every_write(&self) -> bool {
        match self {
            BackendError::Sqlite(error) => sqlite::is_locked(error),
            BackendError::Postgres(error) => postgres::is_disconnection(error),
            BackendError::Runtime(_)
            | BackendError::NoAnswer { .. }
            | BackendError::Resting { .. } => true,
            BackendError::Migration(_) | BackendError::SchemaGap(_) | BackendError::Decode(_) => {
                false
            }
        }
    }
}

/// Where the store is.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// An SQLite file (the default: `EXAI_HOME/calls.sqlite3`).
    Sqlite(PathBuf),
    /// A Postgres database, by its URL (which may hold a password: never shown).
    Postgres(String),
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sqlite(path) => write!(f, "{}", path.display()),
            StoreLocation::Postgres(url) => f.write_str(&postgres::describe(url)),
        }
    }
}

/// As `Display`: the URL's credentials stay out of debug output too.
impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreLocation({self})")
    }
}

impl StoreLocation {
    /// Whether `url` names a Postgres database this store can use; why not, if it does not.
    pub fn check_postgres_url(url: &str) -> Result<(), String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err("expected a postgres:// URL".to_string());
        }
        url.parse::<tokio_postgres::Config>()
            .map(|_| ())
            .map_err(|e| format!("not a Postgres URL: {e}"))
    }

    /// Whether the store already exists (a Postgres database is taken to: it is made elsewhere).
    pub fn exists(&self) -> bool {
        match self {
            StoreLocation::Sqlite(path) => path.exists(),
            StoreLocation::Postgres(_) => true,
        }
    }

    /// Opens a connection, bringing the schema up to date.
    fn connect(&self) -> Result<Box<dyn StoreConnection>, StoreError> {
        self.connect_with(Schema::BringUpToDate)
    }

    fn connect_with(&self, schema: Schema) -> Result<Box<dyn StoreConnection>, StoreError> {
        let opened: Result<Box<dyn StoreConnection>, BackendError> = match self {
            StoreLocation::Sqlite(path) => {
                sqlite::Sqlite::open(path, schema).map(|c| Box::new(c) as Box<dyn StoreConnection>)
            }
            StoreLocation::Postgres(url) => postgres::Postgres::open(url, schema)
                .map(|c| Box::new(c) as Box<dyn StoreConnection>),
        };
        opened.map_err(|source| self.error(source))
    }

    fn error(&self, source: BackendError) -> StoreError {
        StoreError::Database {
            store: self.to_string(),
            source,
        }
    }
}

/// Whether opening a connection applies the migrations.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Schema {
    /// Apply any not yet applied (every open by a new process: the CLI, a store's writer).
    BringUpToDate,
    /// This process's store already did (its readers, opened as reads need them).
    Current,
}

/// A value bound to a statement, in the few types the store uses.
#[derive(Debug)]
pub(crate) enum Param<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
    Bool(bool),
}

/// One statement of a write, with the values bound to it.
pub(crate) struct Statement<'a> {
    pub sql: &'static str,
    pub params: Vec<Param<'a>>,
    /// Run only if statement N of the same transaction changed a row (else it changes none):
    /// a write about a call whose insert, earlier in the group, found its id taken must not
    /// touch the record that owns the id. Honoured where [`StoreConnection::guards_statements`].
    pub only_if: Option<usize>,
}

/// One row of a query's answer, read by column number.
pub(crate) trait Columns {
    fn int(&self, column: usize) -> Result<Option<i64>, BackendError>;
    fn text(&self, column: usize) -> Result<Option<String>, BackendError>;
    fn flag(&self, column: usize) -> Result<bool, BackendError>;
}

/// One connection to a store's database: all a backend provides. The SQL is the store's own,
/// written once with `?N` placeholders in the dialect both databases accept.
pub(crate) trait StoreConnection: Send {
    fn begin(&mut self) -> Result<(), BackendError>;
    fn commit(&mut self) -> Result<(), BackendError>;
    /// Undoes an unfinished transaction, if one is open.
    fn rollback(&mut self);
    /// Runs a statement; returns how many rows it changed.
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, BackendError>;
    /// Whether [`StoreConnection::execute_in_transaction`] honours [`Statement::only_if`]. A
    /// backend that sends a group without waiting for each answer cannot.
    fn guards_statements(&self) -> bool {
        true
    }
    /// Runs `statements` in one transaction, rolled back if any fails; returns how many rows
    /// each changed. A backend over a network sends them without waiting for each answer.
    fn execute_in_transaction(
        &mut self,
        statements: &[Statement<'_>],
    ) -> Result<Vec<u64>, BackendError> {
        self.execute_in_transaction_then(statements, &|_| Vec::new())
    }
    /// As [`StoreConnection::execute_in_transaction`], then, in the same transaction, the
    /// statements `then` makes of how many rows each of `statements` changed (what it returns).
    /// Used only where [`StoreConnection::guards_statements`]: it waits for each answer.
    fn execute_in_transaction_then<'a>(
        &mut self,
        statements: &[Statement<'a>],
        then: &dyn Fn(&[u64]) -> Vec<Statement<'a>>,
    ) -> Result<Vec<u64>, BackendError> {
        debug_assert!(
            self.guards_statements(),
            "a backend that sends without waiting"
        );
        self.begin()?;
        let mut changed = Vec::with_capacity(statements.len());
        let done = statements
            .iter()
            .try_for_each(|s| {
                let skipped = s.only_if.is_some_and(|i| changed.get(i) == Some(&0));
                changed.push(if skipped {
                    0
                } else {
                    self.execute(s.sql, &s.params)?
                });
                Ok(())
            })
            .and_then(|()| {
                (then(&changed).iter()).try_for_each(|s| self.execute(s.sql, &s.params).map(drop))
            })
            .and_then(|()| self.commit().map(|()| changed));
        if done.is_err() {
            self.rollback();
        }
        done
    }
    /// Runs a query, handing each row of its answer to `each`.
    fn query(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        each: &mut dyn FnMut(&dyn Columns) -> Result<(), BackendError>,
    ) -> Result<(), BackendError>;
    /// Runs SQL with no parameters (tests set scenes with it).
    #[cfg(test)]
    fn execute_raw(&mut self, sql: &str) -> Result<(), BackendError>;
}

/// Whether a migration run was refused only for a version newer than any this exai has: the
/// store was migrated by a newer exai (a replica upgraded first, in a rolling upgrade). Refinery
/// refuses such a store ("missing from the filesystem") before it applies anything.
pub(super) fn refused_as_newer(
    outcome: &Result<refinery::Report, refinery::Error>,
    known: &[refinery::Migration],
) -> bool {
    let Err(error) = outcome else {
        return false;
    };
    let newest_known = known.iter().map(refinery::Migration::version).max();
    matches!(error.kind(), refinery::error::Kind::MissingVersion(missing)
        if newest_known.is_some_and(|newest| missing.version() > newest))
}

/// The outcome of a migration run, where a store a newer exai migrated is no error when its
/// history holds every migration this exai has, as this exai has it: migrations only add, so
/// this exai's statements hold on it, and a replica not yet upgraded that restarts comes back.
/// `applied` is that history, read only when the run was [`refused_as_newer`]; any other
/// refusal stands.
pub(super) fn applied_or_newer(
    outcome: Result<refinery::Report, refinery::Error>,
    known: &[refinery::Migration],
    applied: Option<Result<Vec<refinery::Migration>, refinery::Error>>,
    store: &str,
) -> Result<(), BackendError> {
    let error = match outcome {
        Ok(_) => return Ok(()),
        Err(error) => error,
    };
    let Some(applied) = applied else {
        return Err(BackendError::Migration(error));
    };
    let applied = applied?;
    if let Some(lacking) = known.iter().find(|m| !applied.contains(m)) {
        return Err(BackendError::SchemaGap(lacking.to_string()));
    }
    let newest = applied.iter().max_by_key(|m| m.version());
    tracing::warn!(store, newest = %newest.map(ToString::to_string).unwrap_or_default(),
        "the store was migrated by a newer exai: this one runs on it as it is; upgrade it");
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What the daemon should know about its store's health (shown by `status`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreHealth {
    /// The last failed write: when (ms) and why. Cleared by nothing: it says what happened.
    pub last_error: Option<(i64, String)>,
    /// A corrupt store found at start and moved aside, and where it went.
    pub moved_aside: Option<String>,
}

impl StoreHealth {
    /// What a person should know, one line each (none when all is well).
    pub fn problems(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(aside) = &self.moved_aside {
            lines.push(format!(
                "the call store was corrupt at start: moved aside to {aside} (older records are \
                 there) and a new one was started"
            ));
        }
        if let Some((at_ms, error)) = &self.last_error {
            lines.push(format!(
                "a call store write failed {} s ago: {error}",
                (now_ms() - at_ms).max(0) / 1000
            ));
        }
        lines
    }
}

/// A place in the write queue kept for one call's record ([`Store::room_for_insert`]).
#[derive(Debug)]
pub struct InsertRoom(mpsc::OwnedPermit<Queued>);

/// A write handed to the writer whose answer has not been read yet ([`Store::answer`]).
#[derive(Debug)]
pub struct QueuedWrite {
    /// The id an insert names (for the error when it is taken).
    id_of: String,
    done: writer::Answer,
    /// The writer's answer, if it was looked at before it was read ([`QueuedWrite::refused`]).
    early: Option<Result<(), WriteFailure>>,
    /// A started call's record: the call counts as at work until its answer is read, which
    /// its end does once the end is queued.
    working: Option<writer::WorkingCall>,
}

impl QueuedWrite {
    /// `op` ready for the queue, and where its answer will be read: at once.
    fn of(op: WriteOp) -> (Queued, Self) {
        Self::answered(Queued::awaited(op))
    }

    /// `op` ready for the queue, its answer read later (it may wait to share a commit).
    fn read_later(op: WriteOp) -> (Queued, Self) {
        Self::answered(Queued::answered_later(op))
    }

    fn answered((queued, done): (Queued, writer::Answer)) -> (Queued, Self) {
        let id_of = queued.op.inserted_id().unwrap_or_default().to_string();
        let answer = Self {
            id_of,
            done,
            early: None,
            working: None,
        };
        (queued, answer)
    }

    /// Whether the writer has already refused this insert (its id names another record), asked
    /// without waiting; the answer is kept for [`Store::answer`].
    pub fn refused(&mut self) -> bool {
        if self.early.is_none() {
            self.early = self.done.try_recv().ok();
        }
        matches!(self.early, Some(Err(WriteFailure::IdTaken)))
    }
}

/// Handle to the writer thread and the readers; cheap to clone.
#[derive(Clone)]
pub struct Store {
    location: StoreLocation,
    tx: mpsc::Sender<Queued>,
    /// The writer's thread, woken for a write somebody waits for (others do not wake it, nor
    /// any while it waits out the gap between groups under load).
    writer: std::thread::Thread,
    /// The gap between groups under load: while the writer waits it out, a write does not wake
    /// it (it commits when the gap ends, with the others, or once no call is left at work).
    gap: Arc<writer::Gap>,
    urgency: writer::Urgency,
    health: Arc<Mutex<StoreHealth>>,
    /// Thread saves the database did not take, which the writer tries again.
    waiting_threads: Arc<WaitingThreads>,
    /// Idle reader connections, kept for the next read.
    readers: Arc<Mutex<Vec<StoreReader>>>,
    /// How long a write's acknowledgement is waited for.
    answer_limit: Option<Duration>,
    /// While any handle lives, the SQLite checkpointer thread runs.
    _alive: Arc<()>,
}

/// The error of a write whose answer did not come within the answer limit.
fn no_answer(store: String, waited: Duration) -> StoreError {
    StoreError::NoAnswer { store, waited }
}

/// The error of a write that found the queue full for the whole answer limit.
fn queue_full(store: String, waited: Duration) -> StoreError {
    StoreError::QueueFull { store, waited }
}

/// Bound of the write queue: beyond it, acknowledged writes wait and progress updates are dropped.
const WRITE_QUEUE: usize = 8192;
/// Idle reader connections kept.
const IDLE_READERS: usize = 4;
/// Longest wait for the writer to say a write is done: far beyond any healthy commit, it stops
/// a database that hangs (a stopped server) from holding calls forever.
const WRITE_ANSWER_LIMIT: Duration = Duration::from_secs(30);

impl Store {
    /// Opens (creating if needed) the store and starts its writer thread.
    ///
    /// An SQLite file found corrupt (or not a database at all) is moved aside — never deleted —
    /// and a new store is started, so calls keep being recorded; `health()` says so.
    pub fn open(location: &StoreLocation) -> Result<Self, StoreError> {
        let alive = Arc::new(());
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let health = Arc::new(Mutex::new(StoreHealth::default()));
        let waiting_threads = Arc::new(WaitingThreads::default());
        let gap = Arc::new(writer::Gap::default());
        let writer = Writer {
            store: location.to_string(),
            health: health.clone(),
            waiting_threads: waiting_threads.clone(),
            gap: gap.clone(),
        };
        // The writer's connection is made on its own thread: the Postgres client blocks on a
        // runtime of its own, which may not start on a thread that drives async tasks.
        let (opened_tx, opened) = std::sync::mpsc::sync_channel(1);
        let (for_writer, weak_alive) = (location.clone(), Arc::downgrade(&alive));
        let writer_thread = std::thread::Builder::new()
            .name("exai-store".into())
            .spawn(move || {
                let conn = Self::connect_writer(&for_writer, weak_alive);
                let (conn, moved_aside) = match conn {
                    Ok(opened) => opened,
                    Err(error) => {
                        let _ = opened_tx.send(Err(error));
                        return;
                    }
                };
                let urgency = writer::Urgency::of(conn.as_ref());
                if opened_tx.send(Ok((moved_aside, urgency))).is_ok() {
                    writer.run(conn, rx);
                }
            })
            .map_err(|source| StoreError::Io {
                path: PathBuf::from(location.to_string()),
                source,
            })?;
        let (moved_aside, urgency) = opened.recv().map_err(|_| StoreError::WriterGone)??;
        health.lock().unwrap_or_else(|p| p.into_inner()).moved_aside = moved_aside;
        Ok(Self {
            location: location.clone(),
            tx,
            writer: writer_thread.thread().clone(),
            gap,
            urgency,
            health,
            waiting_threads,
            readers: Arc::new(Mutex::new(Vec::new())),
            answer_limit: Some(WRITE_ANSWER_LIMIT),
            _alive: alive,
        })
    }

    /// The writer's connection, and where a corrupt SQLite file was moved if one was found.
    fn connect_writer(
        location: &StoreLocation,
        alive: std::sync::Weak<()>,
    ) -> Result<(Box<dyn StoreConnection>, Option<String>), StoreError> {
        let StoreLocation::Sqlite(path) = location else {
            return Ok((location.connect()?, None));
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let open = || sqlite::Sqlite::open_for_writing(path, alive.clone());
        let (conn, moved_aside) = match open() {
            Err(error) if sqlite::is_corrupt(&error) => {
                let aside = sqlite::move_aside(path)?;
                tracing::error!(store = %path.display(), moved_to = %aside.display(), %error,
                    "the call store is corrupt: moved aside, starting a new one");
                (open(), Some(aside.display().to_string()))
            }
            other => (other, None),
        };
        let conn = conn.map_err(|source| location.error(source))?;
        Ok((Box::new(conn), moved_aside))
    }

    /// The store for tests on a paused clock, which would expire the wait for a write (the
    /// writer is a thread, outside the clock) the moment the runtime idles.
    #[cfg(test)]
    pub(crate) fn without_answer_limit(mut self) -> Self {
        self.answer_limit = None;
        self
    }

    /// The store with a shorter wait for the writer (tests of a writer that is stuck).
    #[cfg(test)]
    fn with_answer_limit(mut self, limit: Duration) -> Self {
        self.answer_limit = Some(limit);
        self
    }

    pub fn location(&self) -> &StoreLocation {
        &self.location
    }

    /// A reader of this store, for start-up and maintenance (blocking: never on an async task);
    /// the schema is current, the writer brought it up to date when the store opened.
    pub fn reader(&self) -> Result<StoreReader, StoreError> {
        StoreReader::open_with(&self.location, Schema::Current)
    }

    /// What went wrong with the store lately, if anything.
    pub fn health(&self) -> StoreHealth {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Operations waiting for the writer.
    pub fn queue_depth(&self) -> usize {
        WRITE_QUEUE - self.tx.capacity()
    }

    async fn write_acked(&self, op: WriteOp) -> Result<(), StoreError> {
        let queued = self.enqueue(op).await?;
        self.answer(queued).await
    }

    /// Queues `op` with a slot for the writer's answer, waiting for room in the queue.
    async fn enqueue(&self, op: WriteOp) -> Result<QueuedWrite, StoreError> {
        let (queued, answer) = QueuedWrite::of(op);
        self.send(queued).await?;
        Ok(answer)
    }

    /// Hands `queued` to the writer (waiting for room in the queue), waking it when the write
    /// is one somebody waits for (unless it is waiting out the gap between groups under load).
    async fn send(&self, queued: Queued) -> Result<(), StoreError> {
        let urgent = self.urgency.is_urgent(&queued);
        match self.tx.try_send(queued) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(StoreError::WriterGone),
            // A full queue is waited out, boxed: the wait is the rare case, and its future
            // (the send's and the timer's) would otherwise be room every write carries.
            Err(mpsc::error::TrySendError::Full(queued)) => {
                let sent = self.within_answer_limit(self.tx.send(queued), queue_full);
                Box::pin(sent).await?.map_err(|_| StoreError::WriterGone)?;
            }
        }
        self.ring_if(urgent);
        Ok(())
    }

    /// `waiting` for the writer (its answer, or room in its queue: a writer stuck on the
    /// database fills the queue), at most the store's answer limit; past it, `over` names the
    /// store and the wait.
    async fn within_answer_limit<T>(
        &self,
        waiting: impl std::future::Future<Output = T>,
        over: impl FnOnce(String, Duration) -> StoreError,
    ) -> Result<T, StoreError> {
        match self.answer_limit {
            Some(limit) => tokio::time::timeout(limit, waiting)
                .await
                .map_err(|_| over(self.location.to_string(), limit)),
            None => Ok(waiting.await),
        }
    }

    fn ring_if(&self, urgent: bool) {
        if urgent && !self.gap.writer_waits() {
            self.writer.unpark();
        }
    }

    /// What the writer said of a queued write, waited for at most the store's answer limit.
    pub async fn answer(&self, queued: QueuedWrite) -> Result<(), StoreError> {
        let QueuedWrite {
            id_of,
            done,
            early,
            working,
        } = queued;
        // Read once the call's end is queued: the call is no longer at work.
        drop(working);
        let answer = match early {
            Some(early) => Ok(early),
            None => self.within_answer_limit(done, no_answer).await?,
        };
        match answer {
            Ok(Ok(())) => Ok(()),
            Ok(Err(WriteFailure::IdTaken)) => Err(StoreError::IdTaken { id: id_of }),
            Ok(Err(WriteFailure::Sql(message))) => Err(StoreError::Write {
                store: self.location.to_string(),
                message,
            }),
            Err(_) => Err(StoreError::WriterGone),
        }
    }

    fn write_unacked(&self, op: WriteOp) {
        // Progress and state hints are best effort: a full queue drops them, the final write carries the truth.
        let _ = self.tx.try_send(Queued::unawaited(op));
    }

    /// Creates the record of a call that has not started; returns once it is committed. An id
    /// that already names a record is refused (`IdTaken`): a record is never overwritten by
    /// another call.
    pub async fn insert(&self, call: impl Into<Arc<NewCall>>) -> Result<(), StoreError> {
        self.write_acked(WriteOp::Insert {
            call: call.into(),
            started_at_ms: None,
        })
        .await
    }

    /// Room in the write queue for a call's record, waited for at the call's receipt (the
    /// queue's back-pressure) and used when it starts ([`Store::insert_started`]).
    pub async fn room_for_insert(&self) -> Result<InsertRoom, StoreError> {
        let room = self.within_answer_limit(self.tx.clone().reserve_owned(), queue_full);
        room.await?
            .map(InsertRoom)
            .map_err(|_| StoreError::WriterGone)
    }

    /// Queues the record of a call that starts now (its state "running") in the room kept for
    /// it, without waiting for the commit: the call's work goes on meanwhile, and its end asks
    /// [`Store::answer`] whether the record was written (an id already taken is refused, as by
    /// [`Store::insert`]). Nobody waits on it now, so it may linger for the next write somebody
    /// does wait on: a quick call's record and its end share one commit.
    pub fn insert_started(
        &self,
        room: InsertRoom,
        call: Arc<NewCall>,
        started_at_ms: i64,
    ) -> QueuedWrite {
        let (queued, mut answer) = QueuedWrite::read_later(WriteOp::Insert {
            call,
            started_at_ms: Some(started_at_ms),
        });
        answer.working = Some(writer::WorkingCall::new(
            self.gap.clone(),
            self.writer.clone(),
        ));
        let urgent = self.urgency.is_urgent(&queued);
        room.0.send(queued);
        self.ring_if(urgent);
        answer
    }

    /// Runs `query` on a reader of this store, on a blocking thread (never on the async workers).
    pub async fn read<T, F>(&self, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&StoreReader) -> Result<T, StoreError> + Send + 'static,
    {
        let location = self.location.clone();
        let readers = self.readers.clone();
        crate::spawn::blocking(move || {
            let idle = readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let reader = match idle {
                Some(reader) => reader,
                // The writer's connection brought the schema up to date when the store opened.
                None => StoreReader::open_with(&location, Schema::Current)?,
            };
            let answer = query(&reader);
            let mut idle = readers.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < IDLE_READERS {
                idle.push(reader);
            }
            answer
        })
        .await
        .map_err(|_| StoreError::WriterGone)?
    }

    /// Returns once everything queued before it is committed.
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.write_acked(WriteOp::Barrier).await
    }

    pub fn note_progress(&self, id: &str, count: i64, message: &str, model: Option<&str>) {
        self.write_unacked(WriteOp::Progress {
            id: id.to_string(),
            count,
            message: message.to_string(),
            model: model.map(str::to_string),
        });
    }

    /// Records the end of a call; returns once it is committed.
    pub async fn finish(&self, id: &str, done: FinishedCall) -> Result<(), StoreError> {
        let queued = self.queue_finish(id, Arc::new(done)).await?;
        self.answer(queued).await
    }

    /// Queues the end of a call (waiting for room in the queue); [`Store::answer`] says when
    /// it is committed. A write about a call whose record is refused in the same commit (its
    /// id taken) is refused too, `IdTaken`.
    pub async fn queue_finish(
        &self,
        id: &str,
        done: Arc<FinishedCall>,
    ) -> Result<QueuedWrite, StoreError> {
        self.enqueue(WriteOp::Finish {
            id: id.to_string(),
            done,
        })
        .await
    }

    /// Queues a conversation thread for saving. Writes commit in order, so the acknowledged
    /// end of the call that saved it implies the thread is committed before the answer goes out.
    pub async fn save_thread(&self, thread: ThreadRow) -> Result<(), StoreError> {
        self.write_queued(WriteOp::SaveThread(ThreadSave {
            search_text: thread.first_prompt.as_deref().map(search_form),
            thread,
        }))
        .await
    }

    /// The save of thread `id` that waits for the database to take it, if one does (it is
    /// newer than the stored thread).
    pub fn waiting_thread(&self, id: &str) -> Option<ThreadRow> {
        self.waiting_threads.find(id)
    }

    /// How many conversation threads have a save waiting for the database to take it.
    pub fn threads_waiting(&self) -> usize {
        self.waiting_threads.count()
    }

    /// Shutdown: has the writer try the thread saves waiting at once, waits up to `limit` for
    /// the database to take them, and names each one it did not.
    pub async fn settle_threads(&self, limit: Duration) {
        if self.waiting_threads.count() == 0 {
            return;
        }
        self.waiting_threads.try_now();
        self.writer.unpark();
        self.waiting_threads.settle(limit).await;
    }

    /// Queues `op` (waiting for room in the queue, not for its commit): what comes after it in
    /// the queue commits after it, and the writer logs a failure.
    async fn write_queued(&self, op: WriteOp) -> Result<(), StoreError> {
        self.send(Queued::unawaited(op)).await
    }

    /// Records that the call was answered as a task of the `kind` tasks API.
    pub async fn set_task(&self, id: &str, kind: &str) -> Result<(), StoreError> {
        self.write_acked(WriteOp::Task {
            id: id.to_string(),
            kind: kind.to_string(),
        })
        .await
    }

    /// Queues a note of how the answer went to the client, for a path that does not wait for
    /// it: the answer itself was committed with the call's end.
    pub async fn note_delivery(&self, id: &str, delivery: Delivery) -> Result<(), StoreError> {
        self.write_queued(WriteOp::delivery(id, delivery)).await
    }

    /// Records whether the answer reached the client; returns once it is committed.
    pub async fn set_delivery(&self, id: &str, delivery: Delivery) -> Result<(), StoreError> {
        self.write_acked(WriteOp::delivery(id, delivery)).await
    }
}

/// The columns of a call record, in the order [`call_from`] reads them.
const COLUMNS: &str = "id, session_id, client_name, client_version, transport, tool, arguments, state, \
    received_at_ms, started_at_ms, finished_at_ms, deadline_at_ms, duration_ms, provider, model, \
    tokens_in, tokens_out, attempts, progress_count, last_progress, error_kind, error_message, \
    result, is_error, delivery, owner_pid, reasoning_tokens, time_to_first_token_ms, reasoning, task, \
    cached_tokens, finish_reason, replica, cancel_requested, user_name, cost_usd_micros";

/// Synchronous access for start-up, maintenance and the CLI (never on an async task).
pub struct StoreReader {
    location: StoreLocation,
    conn: Mutex<Box<dyn StoreConnection>>,
}

impl StoreReader {
    /// Opens the SQLite store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_at(&StoreLocation::Sqlite(path.to_path_buf()))
    }

    /// Opens the store wherever it is, bringing its schema up to date.
    pub fn open_at(location: &StoreLocation) -> Result<Self, StoreError> {
        Self::open_with(location, Schema::BringUpToDate)
    }

    fn open_with(location: &StoreLocation, schema: Schema) -> Result<Self, StoreError> {
        Ok(Self {
            conn: Mutex::new(location.connect_with(schema)?),
            location: location.clone(),
        })
    }

    fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<usize, StoreError> {
        self.conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .execute(sql, params)
            .map(|n| n as usize)
            .map_err(|e| self.location.error(e))
    }

    /// The rows `sql` answers, each made into a `T` by `read`.
    fn rows<T>(
        &self,
        sql: &str,
        params: &[Param<'_>],
        read: impl Fn(&dyn Columns) -> Result<T, BackendError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut found = Vec::new();
        self.conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .query(sql, params, &mut |row| {
                found.push(read(row)?);
                Ok(())
            })
            .map_err(|e| self.location.error(e))?;
        Ok(found)
    }

    /// Marks calls still open whose owning process is gone as `interrupted`; returns how many.
    /// Only calls of this host are judged by their pid (a call of no replica, or of a replica on
    /// this host): the other hosts' replicas are judged by their heartbeats.
    pub fn interrupt_orphans(&self, reason: &str) -> Result<usize, StoreError> {
        let open = self.rows(
            &format!(
                "SELECT c.id, c.owner_pid FROM calls c LEFT JOIN replicas r ON r.id = c.replica \
                 WHERE c.state IN {} AND (c.replica IS NULL OR r.host = ?1)",
                sql_list(&CallState::OPEN)
            ),
            &[Param::Text(Some(&this_host()))],
            |row| Ok((required_text(row, 0)?, required_int(row, 1)?)),
        )?;
        let me = i64::from(std::process::id());
        let now = now_ms();
        let mut count = 0;
        for (id, pid) in open {
            if pid == me || process_alive(pid) {
                continue;
            }
            let message = format!("{reason} (process {pid} ended while the call was open)");
            count += self.execute(
                "UPDATE calls SET state = ?4, error_kind = ?4, error_message = ?2, \
                 finished_at_ms = ?3, duration_ms = ?3 - received_at_ms WHERE id = ?1",
                &[
                    Param::Text(Some(&id)),
                    Param::Text(Some(&message)),
                    Param::Int(Some(now)),
                    Param::Text(Some(CallState::Interrupted.as_str())),
                ],
            )?;
        }
        Ok(count)
    }

    /// Applies every retention limit; returns how many records were deleted or emptied.
    pub fn apply_retention(
        &self,
        max_age: Duration,
        max_rows: u64,
        result_ttl: Duration,
    ) -> Result<usize, StoreError> {
        let threads = self.execute(
            "DELETE FROM threads WHERE expires_at_ms < ?1",
            &[Param::Int(Some(now_ms()))],
        )?;
        let documents = self.expire_document_texts()?;
        // The running totals of days as old as the records pruned (budgets read today's only).
        let oldest_day = day_of(now_ms() - max_age.as_millis() as i64);
        let days = self.execute(
            "DELETE FROM spend_by_day WHERE day < ?1",
            &[Param::Int(Some(oldest_day))],
        )?;
        let pruned = self.prune(max_age, max_rows)? + self.expire_results(result_ttl)?;
        Ok(pruned + threads + documents + days)
    }

    /// A conversation thread, if it exists and has not expired.
    pub fn thread(&self, id: &str) -> Result<Option<ThreadRow>, StoreError> {
        let found = self.rows(
            "SELECT id, created_at_ms, updated_at_ms, expires_at_ms, turns, user_name, \
             first_prompt, tools, turn_count FROM threads WHERE id = ?1 AND expires_at_ms >= ?2",
            &[Param::Text(Some(id)), Param::Int(Some(now_ms()))],
            |row| {
                Ok(ThreadRow {
                    id: required_text(row, 0)?,
                    created_at_ms: required_int(row, 1)?,
                    updated_at_ms: required_int(row, 2)?,
                    expires_at_ms: required_int(row, 3)?,
                    turns: required_text(row, 4)?,
                    user_name: row.text(5)?,
                    first_prompt: row.text(6)?,
                    tools: required_text(row, 7)?,
                    turn_count: required_int(row, 8)?,
                })
            },
        )?;
        Ok(found.into_iter().next())
    }

    /// Threads that have not expired, most recently continued first, at most `filter.limit`
    /// (at most [`MAX_THREADS_LISTED`]), each with what its calls cost.
    pub fn list_threads(&self, filter: &ThreadFilter) -> Result<Vec<ThreadSummary>, StoreError> {
        // Each word is a parameter of its own, escaped so `%` and `_` in it match themselves.
        let patterns: Vec<String> = filter
            .words
            .iter()
            .take(MAX_SEARCH_WORDS)
            .map(|word| format!("%{}%", like_literal(&search_form(word))))
            .collect();
        let mut sql = String::from(
            "SELECT t.id, t.created_at_ms, t.updated_at_ms, t.expires_at_ms, t.user_name, \
             t.first_prompt, t.tools, t.turn_count, \
             (SELECT CAST(COALESCE(SUM(c.cost_usd_micros), 0) AS BIGINT) FROM calls c \
              WHERE c.thread_id = t.id), \
             (SELECT COUNT(*) FROM calls c WHERE c.thread_id = t.id \
              AND c.cost_usd_micros IS NULL) \
             FROM threads t WHERE t.expires_at_ms >= ?1 \
             AND (CAST(?2 AS TEXT) IS NULL OR t.user_name = ?2) \
             AND (CAST(?3 AS BIGINT) IS NULL OR t.updated_at_ms >= ?3) \
             AND (CAST(?5 AS TEXT) IS NULL OR t.id = ?5)",
        );
        for n in 0..patterns.len() {
            sql += &format!(" AND t.search_text LIKE ?{} ESCAPE '\\'", n + 6);
        }
        sql += " ORDER BY t.updated_at_ms DESC, t.id DESC LIMIT ?4";
        let limit = filter.limit.clamp(1, MAX_THREADS_LISTED) as i64;
        let mut params = vec![
            Param::Int(Some(now_ms())),
            Param::Text(filter.user.as_deref()),
            Param::Int(filter.since_ms),
            Param::Int(Some(limit)),
            Param::Text(filter.id.as_deref()),
        ];
        params.extend(patterns.iter().map(|p| Param::Text(Some(p))));
        self.rows(&sql, &params, |row| {
            let tools = required_text(row, 6)?;
            Ok(ThreadSummary {
                id: required_text(row, 0)?,
                created_at_ms: required_int(row, 1)?,
                updated_at_ms: required_int(row, 2)?,
                expires_at_ms: required_int(row, 3)?,
                user_name: row.text(4)?,
                first_prompt: row.text(5)?,
                tools: tools
                    .split(',')
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect(),
                turn_count: required_int(row, 7)?,
                cost_usd_micros: required_int(row, 8)?,
                unpriced_calls: required_int(row, 9)?,
            })
        })
    }

    /// Ids of live threads starting or ending with `fragment` (typed by hand; matched
    /// literally), of `user` only when one is given; at most 5. An id's first characters count
    /// the microseconds it was made in, so threads made within a second share the first few;
    /// its last are random.
    pub fn find_threads_by_fragment(
        &self,
        fragment: &str,
        user: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let fragment = like_literal(&fragment.to_lowercase());
        self.rows(
            "SELECT id FROM threads WHERE (id LIKE CAST(?1 AS TEXT) || '%' ESCAPE '\\' \
             OR id LIKE '%' || CAST(?1 AS TEXT) ESCAPE '\\') AND expires_at_ms >= ?3 \
             AND (CAST(?2 AS TEXT) IS NULL OR user_name = ?2) ORDER BY id LIMIT 5",
            &[
                Param::Text(Some(&fragment)),
                Param::Text(user),
                Param::Int(Some(now_ms())),
            ],
            |row| required_text(row, 0),
        )
    }

    /// Forgets the results (and reasoning) of calls that ended more than `ttl` ago; returns how many.
    pub fn expire_results(&self, ttl: Duration) -> Result<usize, StoreError> {
        let cutoff = now_ms() - ttl.as_millis() as i64;
        self.execute(
            "UPDATE calls SET result = NULL, reasoning = NULL \
             WHERE finished_at_ms < ?1 AND result IS NOT NULL",
            &[Param::Int(Some(cutoff))],
        )
    }

    /// Deletes records older than `max_age` and beyond `max_rows`; returns how many.
    pub fn prune(&self, max_age: Duration, max_rows: u64) -> Result<usize, StoreError> {
        let cutoff = now_ms() - max_age.as_millis() as i64;
        let open = sql_list(&CallState::OPEN);
        let aged = self.execute(
            &format!("DELETE FROM calls WHERE received_at_ms < ?1 AND state NOT IN {open}"),
            &[Param::Int(Some(cutoff))],
        )?;
        // `LIMIT ?2` with the largest number: both databases need a LIMIT before OFFSET.
        let beyond = self.execute(
            &format!(
                "DELETE FROM calls WHERE id IN (SELECT id FROM calls ORDER BY received_at_ms DESC \
                 LIMIT ?2 OFFSET ?1) AND state NOT IN {open}"
            ),
            &[
                Param::Int(Some(i64::try_from(max_rows).unwrap_or(i64::MAX))),
                Param::Int(Some(i64::MAX)),
            ],
        )?;
        Ok(aged + beyond)
    }

    pub fn list(&self, filter: &CallFilter) -> Result<Vec<CallRow>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM calls WHERE 1=1");
        if filter.failed_only {
            sql += &format!(" AND {}", records::unsuccessful_sql());
        }
        if filter.running_only {
            sql += &format!(" AND state IN {}", sql_list(&CallState::OPEN));
        }
        if filter.tasks_only {
            sql.push_str(" AND task IS NOT NULL");
        }
        // Every parameter appears whether or not it filters, typed for Postgres by its CAST.
        sql.push_str(
            " AND (CAST(?1 AS TEXT) IS NULL OR tool = ?1) \
             AND (CAST(?3 AS TEXT) IS NULL OR client_name = ?3) \
             AND (CAST(?4 AS TEXT) IS NULL OR id < ?4) \
             AND (CAST(?5 AS BIGINT) IS NULL OR received_at_ms >= ?5) \
             AND (CAST(?6 AS TEXT) IS NULL OR user_name = ?6) \
             AND (CAST(?7 AS TEXT) IS NULL OR state = ?7) \
             AND (CAST(?8 AS TEXT) IS NULL OR model = ?8) \
             ORDER BY id DESC LIMIT ?2",
        );
        let limit = if filter.limit == 0 { 20 } else { filter.limit } as i64;
        self.rows(
            &sql,
            &[
                Param::Text(filter.tool.as_deref()),
                Param::Int(Some(limit)),
                Param::Text(filter.client.as_deref()),
                Param::Text(filter.before_id.as_deref()),
                Param::Int(filter.since_ms),
                Param::Text(filter.user.as_deref()),
                Param::Text(filter.state.map(CallState::as_str)),
                Param::Text(filter.model.as_deref()),
            ],
            call_from,
        )
    }

    /// The figures of the calls received since `since_ms` (of `user` only, when given), newest
    /// first, at most `limit`: what the page's charts are drawn from.
    pub fn figures_since(
        &self,
        since_ms: i64,
        user: Option<&str>,
        limit: usize,
    ) -> Result<Vec<CallFigures>, StoreError> {
        self.rows(
            "SELECT model, state, received_at_ms, duration_ms, time_to_first_token_ms, tokens_in, \
             tokens_out FROM calls WHERE received_at_ms >= ?1 \
             AND (CAST(?2 AS TEXT) IS NULL OR user_name = ?2) \
             ORDER BY received_at_ms DESC LIMIT ?3",
            &[
                Param::Int(Some(since_ms)),
                Param::Text(user),
                Param::Int(Some(i64::try_from(limit).unwrap_or(i64::MAX))),
            ],
            |r| {
                Ok(CallFigures {
                    model: r.text(0)?,
                    state: word(r, 1, "call state", CallState::parse)?,
                    received_at_ms: required_int(r, 2)?,
                    duration_ms: r.int(3)?,
                    time_to_first_token_ms: r.int(4)?,
                    tokens_in: r.int(5)?,
                    tokens_out: r.int(6)?,
                })
            },
        )
    }

    pub fn get(&self, id: &str) -> Result<Option<CallRow>, StoreError> {
        let found = self.rows(
            &format!("SELECT {COLUMNS} FROM calls WHERE id = ?1"),
            &[Param::Text(Some(id))],
            call_from,
        )?;
        Ok(found.into_iter().next())
    }

    /// Ids starting or ending with `fragment` (short ids typed by hand: time-ordered ids share
    /// their start with calls of the same moment, so their random end is the handier part);
    /// only calls of `user` when one is given.
    pub fn find_by_fragment(
        &self,
        fragment: &str,
        user: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        // The fragment is matched literally, as a thread search is: `%` and `_` in it are not
        // wildcards.
        let fragment = like_literal(fragment);
        self.rows(
            "SELECT id FROM calls WHERE (id LIKE CAST(?1 AS TEXT) || '%' ESCAPE '\\' \
             OR id LIKE '%' || CAST(?1 AS TEXT) ESCAPE '\\') \
             AND (CAST(?2 AS TEXT) IS NULL OR user_name = ?2) ORDER BY id DESC LIMIT 5",
            &[Param::Text(Some(&fragment)), Param::Text(user)],
            |row| required_text(row, 0),
        )
    }
}

/// Most threads one listing returns.
pub const MAX_THREADS_LISTED: usize = 200;
/// Most words a thread search matches (the rest are ignored).
const MAX_SEARCH_WORDS: usize = 8;

/// The form a first prompt is searched in: lower case (Unicode, the same on both databases),
/// whitespace runs as one space.
pub(crate) fn search_form(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// `text` as a LIKE pattern that matches only itself (escape character `\`).
fn like_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn required_int(row: &dyn Columns, column: usize) -> Result<i64, BackendError> {
    row.int(column)?
        .ok_or_else(|| BackendError::Decode(format!("column {column} is empty")))
}

fn required_text(row: &dyn Columns, column: usize) -> Result<String, BackendError> {
    row.text(column)?
        .ok_or_else(|| BackendError::Decode(format!("column {column} is empty")))
}

/// A stored word read back as its type; an unknown word is a read error naming it.
fn word<T>(
    row: &dyn Columns,
    column: usize,
    what: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<T, BackendError> {
    let word = required_text(row, column)?;
    parse(&word).ok_or_else(|| BackendError::Decode(format!("unknown {what} {word:?}")))
}

/// A call record from a row of [`COLUMNS`].
fn call_from(r: &dyn Columns) -> Result<CallRow, BackendError> {
    Ok(CallRow {
        id: required_text(r, 0)?,
        session_id: required_text(r, 1)?,
        client_name: r.text(2)?,
        client_version: r.text(3)?,
        transport: word(r, 4, "transport", TransportKind::parse)?,
        tool: required_text(r, 5)?,
        arguments: required_text(r, 6)?,
        state: word(r, 7, "call state", CallState::parse)?,
        received_at_ms: required_int(r, 8)?,
        started_at_ms: r.int(9)?,
        finished_at_ms: r.int(10)?,
        deadline_at_ms: required_int(r, 11)?,
        duration_ms: r.int(12)?,
        provider: r.text(13)?,
        model: r.text(14)?,
        tokens_in: r.int(15)?,
        tokens_out: r.int(16)?,
        attempts: r.int(17)?,
        progress_count: required_int(r, 18)?,
        last_progress: r.text(19)?,
        error_kind: r.text(20)?,
        error_message: r.text(21)?,
        result: r.text(22)?,
        is_error: r.flag(23)?,
        delivery: Delivery::parse(&required_text(r, 24)?),
        owner_pid: required_int(r, 25)?,
        reasoning_tokens: r.int(26)?,
        time_to_first_token_ms: r.int(27)?,
        reasoning: r.text(28)?,
        task: r.text(29)?,
        cached_tokens: r.int(30)?,
        finish_reason: r.text(31)?,
        replica: r.text(32)?,
        cancel_requested: r.text(33)?,
        user_name: r.text(34)?,
        cost_usd_micros: r.int(35)?,
    })
}

/// Whether a process with this pid exists (Linux: /proc).
fn process_alive(pid: i64) -> bool {
    pid > 0 && Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Names a Postgres server (a URL to its `postgres` database) to run the store tests on.
    const TEST_SERVER: &str = "EXAI_TEST_DATABASE_URL";

    /// A fresh store for one test: a new SQLite file, or — when `EXAI_TEST_DATABASE_URL` names a
    /// Postgres server — a new database there, so the store's tests run on both backends.
    pub(crate) fn test_location() -> StoreLocation {
        let Ok(server) = std::env::var(TEST_SERVER) else {
            return StoreLocation::Sqlite(tempdir().join("s.db"));
        };
        let name = format!("exai_unit_{}", uuid::Uuid::now_v7().simple());
        let create = format!("CREATE DATABASE {name}");
        let (base, _) = server.rsplit_once('/').unwrap();
        let url = format!("{base}/{name}");
        // On a thread of its own: the Postgres client may not block a thread that runs async tasks.
        std::thread::spawn(move || {
            let mut admin = ::postgres::Client::connect(&server, ::postgres::NoTls).unwrap();
            admin.batch_execute(&create).unwrap();
        })
        .join()
        .unwrap();
        StoreLocation::Postgres(url)
    }

    /// Runs `query` on a reader of `store`, as the daemon does (on a blocking thread).
    async fn read<T: Send + 'static>(
        store: &Store,
        query: impl FnOnce(&StoreReader) -> Result<T, StoreError> + Send + 'static,
    ) -> T {
        store.read(query).await.unwrap()
    }

    async fn get(store: &Store, id: &'static str) -> Option<CallRow> {
        read(store, move |r| r.get(id)).await
    }

    pub(crate) fn connect_for_test() -> (StoreLocation, Box<dyn StoreConnection>) {
        let location = test_location();
        let conn = location.connect().unwrap();
        (location, conn)
    }

    pub(crate) fn new_call(id: &str) -> NewCall {
        NewCall {
            id: id.into(),
            session_id: "s".into(),
            client_name: Some("test".into()),
            client_version: None,
            transport: TransportKind::Ws,
            tool: "chat".into(),
            arguments: "{}".into(),
            received_at_ms: now_ms(),
            deadline_at_ms: now_ms() + 1000,
            replica: None,
            user_name: None,
        }
    }

    pub(crate) fn tempdir() -> PathBuf {
        crate::scratch::scratch_dir("store-test")
    }

    /// Runs `sql` on `location` (on a thread of its own, as the Postgres client blocks).
    fn execute_on(location: &StoreLocation, sql: String) {
        let location = location.clone();
        std::thread::spawn(move || location.connect().unwrap().execute_raw(&sql).unwrap())
            .join()
            .unwrap();
    }

    /// Notes a migration in `location`'s history as applied, as another exai would have.
    fn note_applied(location: &StoreLocation, version: i32, name: &str) {
        execute_on(
            location,
            format!(
                "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
                 VALUES ({version}, '{name}', '2026-12-06T12:00:00Z', '0')"
            ),
        );
    }

    /// A replica not yet upgraded restarts, in a rolling upgrade, on a store a newer exai
    /// migrated: it opens the store and records calls. A history this exai cannot account for
    /// (an unknown version older than its newest; a newer store without one of its own) is
    /// still refused.
    #[tokio::test]
    async fn a_store_migrated_by_a_newer_exai_is_opened_and_a_gap_in_its_history_is_not() {
        let newer = test_location();
        Store::open(&newer).unwrap();
        note_applied(&newer, 9999, "from_a_newer_exai");
        let store = Store::open(&newer).unwrap();
        store.insert(new_call("after")).await.unwrap();
        assert_eq!(
            get(&store, "after").await.unwrap().state,
            CallState::Received
        );

        // Version 2 is none of this exai's migrations, and older than its newest.
        let unknown = test_location();
        Store::open(&unknown).unwrap();
        note_applied(&unknown, 2, "not_ours");
        let refused = Store::open(&unknown).err().unwrap().to_string();
        assert!(refused.contains("not_ours"), "{refused}");

        // Newer, but without this exai's V8.
        let gap = test_location();
        Store::open(&gap).unwrap();
        note_applied(&gap, 9999, "from_a_newer_exai");
        execute_on(
            &gap,
            "DELETE FROM refinery_schema_history WHERE version = 8".into(),
        );
        let refused = Store::open(&gap).err().unwrap().to_string();
        assert!(refused.contains("lacks V8__open_calls_index"), "{refused}");
    }

    #[tokio::test]
    async fn a_record_lives_from_receipt_to_its_end() {
        let location = test_location();
        let store = Store::open(&location).unwrap();
        store.insert(new_call("r")).await.unwrap();
        assert_eq!(get(&store, "r").await.unwrap().state, CallState::Received);
        let room = store.room_for_insert().await.unwrap();
        let queued = store.insert_started(room, new_call("a").into(), now_ms());
        store.note_progress("a", 3, "thinking", Some("glm-4.7"));
        store.answer(queued).await.unwrap();
        store.sync().await.unwrap();
        let running = get(&store, "a").await.unwrap();
        assert_eq!(running.state, CallState::Running);
        assert_eq!(
            (running.progress_count, running.model.as_deref()),
            (3, Some("glm-4.7"))
        );
        store
            .finish(
                "a",
                FinishedCall {
                    state: Some(CallState::Succeeded),
                    finished_at_ms: now_ms(),
                    result: Some("{\"ok\":1}".into()),
                    is_error: true,
                    tokens_in: Some(12),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        store.set_delivery("a", Delivery::Delivered).await.unwrap();
        // A late report about another path does not undo a delivery.
        store.set_delivery("a", Delivery::ClientGone).await.unwrap();
        store.set_task("a", "extension").await.unwrap();
        let row = get(&store, "a").await.unwrap();
        assert_eq!(row.state, CallState::Succeeded);
        assert_eq!(row.delivery, Delivery::Delivered);
        assert_eq!(row.task.as_deref(), Some("extension"));
        assert_eq!((row.is_error, row.tokens_in), (true, Some(12)));
        assert_eq!(row.result.as_deref(), Some("{\"ok\":1}"));
        assert!(row.duration_ms.is_some());
        let failed = read(&store, |r| {
            r.list(&CallFilter {
                failed_only: true,
                limit: 10,
                ..Default::default()
            })
        })
        .await;
        assert!(failed.is_empty());
        let by_tool = |tool: &str| CallFilter {
            tool: Some(tool.into()),
            client: Some("test".into()),
            tasks_only: true,
            since_ms: Some(0),
            ..Default::default()
        };
        let (chat, debug) = (by_tool("chat"), by_tool("debug"));
        let found = read(&store, move |r| {
            Ok((r.list(&chat)?.len(), r.list(&debug)?.len()))
        })
        .await;
        assert_eq!(found, (1, 0));
        let fragments = read(&store, |r| {
            Ok((
                r.find_by_fragment("a", None)?,
                r.find_by_fragment("zz", None)?,
                r.find_by_fragment("a", Some("bob"))?,
            ))
        })
        .await;
        assert_eq!(fragments, (vec!["a".to_string()], vec![], vec![]));
    }

    /// Under load the writer waits out a gap between groups, and writes do not wake it
    /// meanwhile (`Pacing`): wave after wave of writes somebody waits for are all answered, and
    /// all there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waves_of_awaited_writes_are_all_answered_through_the_gaps_between_groups() {
        let store = Store::open(&test_location()).unwrap();
        for wave in 0..5 {
            let writes = (0..40).map(|n| {
                let store = store.clone();
                async move { store.insert(new_call(&format!("w{wave}-{n}"))).await }
            });
            let answered =
                tokio::time::timeout(Duration::from_secs(20), futures::future::join_all(writes))
                    .await
                    .unwrap_or_else(|_| panic!("wave {wave} was not answered within 20 s"));
            assert!(answered.iter().all(Result::is_ok), "{answered:?}");
        }
        for wave in 0..5 {
            let id = format!("w{wave}-39");
            let row = read(&store, move |r| r.get(&id)).await;
            assert!(row.is_some(), "wave {wave}'s last write is missing");
        }
    }

    #[tokio::test]
    async fn threads_are_saved_replaced_and_read_back_until_they_expire() {
        let location = test_location();
        let store = Store::open(&location).unwrap();
        let thread = |turns: &str, updated_at_ms, expires_at_ms| ThreadRow {
            id: "t".into(),
            created_at_ms: 1,
            updated_at_ms,
            expires_at_ms,
            turns: turns.into(),
            user_name: Some("ada".into()),
            first_prompt: None,
            tools: String::new(),
            turn_count: 0,
        };
        let later = now_ms() + 60_000;
        for (turns, updated_at_ms) in [("[1]", 2), ("[1,2]", 3)] {
            let save = thread(turns, updated_at_ms, later);
            store.save_thread(save).await.unwrap();
        }
        store.sync().await.unwrap();
        let read = |id: &str| {
            let id = id.to_string();
            let store = store.clone();
            async move { store.read(move |r| r.thread(&id)).await.unwrap() }
        };
        let saved = read("t").await.unwrap();
        assert_eq!(
            (saved.turns.as_str(), saved.user_name.as_deref()),
            ("[1,2]", Some("ada"))
        );
        assert!(read("other").await.is_none());
        // A save older than the one stored (tried again after an outage) changes nothing.
        store.save_thread(thread("[1]", 2, later)).await.unwrap();
        store.sync().await.unwrap();
        assert_eq!(read("t").await.unwrap().turns, "[1,2]");
        store
            .save_thread(thread("[1,2]", 4, now_ms() - 1))
            .await
            .unwrap();
        store.sync().await.unwrap();
        assert!(read("t").await.is_none());
    }

    #[tokio::test]
    async fn threads_are_listed_newest_first_found_by_their_words_literally_and_costed() {
        let store = Store::open(&test_location()).unwrap();
        let now = now_ms();
        let thread = |id: &str, user: Option<&str>, prompt: &str, updated_at_ms| ThreadRow {
            id: id.into(),
            created_at_ms: 1,
            updated_at_ms,
            expires_at_ms: now + 60_000,
            turns: "[]".into(),
            user_name: user.map(str::to_string),
            first_prompt: Some(prompt.into()),
            tools: "chat,thinkdeep".into(),
            turn_count: 4,
        };
        for row in [
            thread(
                "t-flaky",
                Some("ada"),
                "Why is the  FLAKY test flaky?",
                now - 3,
            ),
            thread(
                "t-percent",
                Some("ada"),
                "Is 100% coverage worth_it?",
                now - 2,
            ),
            thread(
                "t-bob",
                Some("bob"),
                "Why is the flaky test of bob flaky?",
                now - 1,
            ),
        ] {
            store.save_thread(row).await.unwrap();
        }
        // A later save keeps the first prompt the thread is found by.
        store
            .save_thread(thread("t-flaky", Some("ada"), "something else", now))
            .await
            .unwrap();
        for (call, cost) in [("c1", Some(1_500)), ("c2", Some(500)), ("c3", None)] {
            store.insert(new_call(call)).await.unwrap();
            store
                .finish(
                    call,
                    FinishedCall {
                        state: Some(CallState::Succeeded),
                        finished_at_ms: now_ms(),
                        cost_usd_micros: cost,
                        thread_id: Some("t-flaky".into()),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
        }
        store.sync().await.unwrap();
        let list = |words: &[&str], user: Option<&str>| {
            let filter = ThreadFilter {
                user: user.map(str::to_string),
                words: words.iter().map(|w| w.to_string()).collect(),
                limit: 10,
                ..Default::default()
            };
            let store = store.clone();
            async move {
                let rows = store.read(move |r| r.list_threads(&filter)).await.unwrap();
                rows.into_iter().map(|r| r.id).collect::<Vec<_>>()
            }
        };
        assert_eq!(list(&[], None).await, ["t-flaky", "t-bob", "t-percent"]);
        assert_eq!(list(&["flaky", "TEST"], None).await, ["t-flaky", "t-bob"]);
        assert_eq!(list(&["flaky"], Some("ada")).await, ["t-flaky"]);
        // `%` and `_` are themselves, not wildcards.
        assert_eq!(list(&["%"], None).await, ["t-percent"]);
        // As a wildcard, `_` would match the space of "is 100".
        assert_eq!(list(&["s_1"], None).await, Vec::<String>::new());
        assert_eq!(list(&["worth_it"], None).await, ["t-percent"]);
        assert_eq!(list(&["100%c"], None).await, Vec::<String>::new());
        assert_eq!(list(&["\\"], None).await, Vec::<String>::new());

        let flaky = store
            .read(|r| {
                r.list_threads(&ThreadFilter {
                    id: Some("t-flaky".into()),
                    limit: 1,
                    ..Default::default()
                })
            })
            .await
            .unwrap()
            .remove(0);
        assert_eq!(
            flaky.first_prompt.as_deref(),
            Some("Why is the  FLAKY test flaky?")
        );
        assert_eq!(flaky.tools, ["chat", "thinkdeep"]);
        assert_eq!((flaky.cost_usd_micros, flaky.unpriced_calls), (2_000, 1));
        let found = store
            .read(|r| {
                Ok((
                    r.find_threads_by_fragment("t-", None)?,
                    r.find_threads_by_fragment("t-b", Some("ada"))?,
                    r.find_threads_by_fragment("%", None)?,
                    r.find_threads_by_fragment("laky", None)?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(
            found,
            (
                vec!["t-bob".to_string(), "t-flaky".into(), "t-percent".into()],
                vec![],
                vec![],
                vec!["t-flaky".to_string()],
            )
        );
    }

    #[tokio::test]
    async fn orphans_of_dead_processes_become_interrupted() {
        let location = test_location();
        let store = Store::open(&location).unwrap();
        store.insert(new_call("mine")).await.unwrap();
        store.sync().await.unwrap();
        let interrupted = read(&store, |r| {
            r.conn
                .lock()
                .unwrap()
                .execute_raw(
                    "INSERT INTO calls (id, session_id, transport, tool, arguments, state, received_at_ms, deadline_at_ms, owner_pid) \
                     VALUES ('dead', 's', 'ws', 'chat', '{}', 'running', 1, 2, 999999999)",
                )
                .unwrap();
            r.interrupt_orphans("daemon restarted")
        })
        .await;
        assert_eq!(interrupted, 1);
        let dead = get(&store, "dead").await.unwrap();
        assert_eq!(dead.state, CallState::Interrupted);
        assert!(
            dead.interruption()
                .starts_with("daemon restarted (process 999999999")
        );
        assert_eq!(
            get(&store, "mine").await.unwrap().state,
            CallState::Received
        );
    }

    #[tokio::test]
    async fn retention_keeps_at_most_the_row_limit_and_forgets_old_results() {
        let location = test_location();
        let store = Store::open(&location).unwrap();
        for i in 0..5 {
            let mut call = new_call(&format!("c{i}"));
            call.received_at_ms = now_ms() - 10 + i;
            store.insert(call).await.unwrap();
            store
                .finish(
                    &format!("c{i}"),
                    FinishedCall {
                        state: Some(CallState::Failed),
                        finished_at_ms: now_ms() - 5_000,
                        result: Some("kept until its ttl".into()),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
        }
        let pruned = read(&store, |r| r.prune(Duration::from_secs(3600), 3)).await;
        assert_eq!(pruned, 2);
        let all = read(&store, |r| {
            r.list(&CallFilter {
                limit: 10,
                ..Default::default()
            })
        })
        .await;
        let ids: Vec<&str> = all.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["c4", "c3", "c2"]);
        let expired = read(&store, |r| r.expire_results(Duration::from_secs(1))).await;
        assert_eq!(expired, 3);
        assert!(get(&store, "c4").await.unwrap().result.is_none());
    }

    /// A writer stuck on its database (here: another program holds SQLite's write lock, so
    /// each group waits out the busy timeout) fills the write queue; a write that finds it full
    /// is refused once the answer limit has passed, rather than waiting for ever.
    #[tokio::test]
    async fn a_full_write_queue_is_waited_for_only_as_long_as_an_answer() {
        let StoreLocation::Sqlite(path) = test_location() else {
            return;
        };
        let limit = Duration::from_millis(500);
        let store = Store::open(&StoreLocation::Sqlite(path.clone()))
            .unwrap()
            .with_answer_limit(limit);
        let locker = rusqlite::Connection::open(&path).unwrap();
        locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
        // More than the queue holds, and the group the writer took before it got stuck.
        let writers: Vec<_> = (0..WRITE_QUEUE + 2 * writer::BATCH)
            .map(|i| {
                let store = store.clone();
                crate::spawn::in_current_span(async move {
                    store.insert(new_call(&format!("q{i}"))).await
                })
            })
            .collect();
        let full = async {
            while store.queue_depth() < WRITE_QUEUE {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), full)
            .await
            .expect("the queue fills");
        let started = std::time::Instant::now();
        let refused = store.insert(new_call("one more")).await;
        assert!(
            matches!(refused, Err(StoreError::QueueFull { .. })),
            "{refused:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        locker.execute_batch("ROLLBACK").unwrap();
        for writer in writers {
            let _ = writer.await;
        }
    }

    #[tokio::test]
    async fn retention_forgets_the_running_totals_of_days_it_no_longer_keeps() {
        let store = Store::open(&test_location()).unwrap();
        let day_ms = 24 * 3600 * 1000;
        for (id, finished_at_ms) in [("old", now_ms() - 10 * day_ms), ("new", now_ms())] {
            store.insert(new_call(id)).await.unwrap();
            let done = FinishedCall {
                state: Some(CallState::Succeeded),
                finished_at_ms,
                spend: vec![("glm".into(), Some(100))],
                ..Default::default()
            };
            store.finish(id, done).await.unwrap();
        }
        let days = move |r: &StoreReader| -> Result<(usize, usize), StoreError> {
            let old = r.spend_on(day_of(now_ms() - 10 * day_ms))?.len();
            Ok((old, r.spend_on(day_of(now_ms()))?.len()))
        };
        assert_eq!(read(&store, days).await, (1, 1));
        let week = Duration::from_secs(7 * 24 * 3600);
        read(&store, move |r| r.apply_retention(week, 1000, week)).await;
        assert_eq!(read(&store, days).await, (0, 1));
    }

    #[test]
    fn deliveries_keep_their_stored_words() {
        for (word, delivery) in Delivery::NAMES {
            assert_eq!(delivery.to_string(), word);
            assert_eq!(Delivery::parse(word), delivery);
        }
        let failed = Delivery::Failed("broken pipe".into());
        assert_eq!(failed.to_string(), "failed: broken pipe");
        assert_eq!(Delivery::parse("failed: broken pipe"), failed);
        assert_eq!(
            serde_json::to_value(Delivery::HandedToHttp).unwrap(),
            "handed_to_http"
        );
    }

    #[tokio::test]
    async fn a_taken_id_is_refused_and_the_record_stays_as_it_was() {
        let location = test_location();
        let store = Store::open(&location).unwrap();
        store.insert(new_call("x")).await.unwrap();
        let mut other = new_call("x");
        other.tool = "challenge".into();
        assert!(matches!(
            store.insert(other).await,
            Err(StoreError::IdTaken { id }) if id == "x"
        ));
        assert_eq!(get(&store, "x").await.unwrap().tool, "chat");
        let missing = store
            .finish(
                "never-inserted",
                FinishedCall {
                    finished_at_ms: now_ms(),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("no record of call never-inserted"),
            "{missing}"
        );
    }

    #[tokio::test]
    async fn a_queued_insert_refused_as_taken_leaves_the_owner_of_the_id_untouched() {
        let location = test_location();
        let store = Store::open(&location).unwrap();
        store.insert(new_call("y")).await.unwrap();
        store
            .finish(
                "y",
                FinishedCall {
                    state: Some(CallState::Succeeded),
                    finished_at_ms: now_ms(),
                    result: Some("the first answer".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        store.set_delivery("y", Delivery::Delivered).await.unwrap();
        // A second call names the same id: its record is queued, and its writes follow at once
        // (some land in the group of the insert, some after it).
        let mut second = new_call("y");
        second.tool = "challenge".into();
        let room = store.room_for_insert().await.unwrap();
        let queued = store.insert_started(room, second.into(), now_ms());
        store.note_progress("y", 9, "the second call's progress", Some("kimi-k2"));
        let task = store.set_task("y", "extension").await;
        let refused = store.answer(queued).await;
        assert!(
            matches!(&refused, Err(StoreError::IdTaken { id }) if id == "y"),
            "{refused:?}"
        );
        assert!(matches!(task, Err(StoreError::IdTaken { .. })), "{task:?}");
        store
            .note_delivery("y", Delivery::ClientGone)
            .await
            .unwrap();
        store.sync().await.unwrap();
        let row = get(&store, "y").await.unwrap();
        assert_eq!(row.tool, "chat");
        assert_eq!(row.state, CallState::Succeeded);
        assert_eq!(row.result.as_deref(), Some("the first answer"));
        assert_eq!((row.progress_count, row.model), (0, None));
        assert_eq!(row.task, None);
        assert_eq!(row.delivery, Delivery::Delivered);
    }

    #[tokio::test]
    async fn a_write_nobody_waits_for_is_committed_on_its_own_soon() {
        let location = test_location();
        let store = Store::open(&location).unwrap();
        store.insert(new_call("z")).await.unwrap();
        store
            .note_delivery("z", Delivery::HandedToHttp)
            .await
            .unwrap();
        // Nothing else is written: the note lingers for company, then goes alone.
        let started = std::time::Instant::now();
        loop {
            if get(&store, "z").await.unwrap().delivery == Delivery::HandedToHttp {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the lone note was never committed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn an_unknown_stored_word_is_a_read_error_naming_it() {
        let (location, mut conn) = connect_for_test();
        conn.execute_raw(
            "INSERT INTO calls (id, session_id, transport, tool, arguments, state, received_at_ms, deadline_at_ms, owner_pid) \
             VALUES ('odd', 's', 'ws', 'chat', '{}', 'levitating', 1, 2, 1)",
        )
        .unwrap();
        let error = StoreReader::open_at(&location)
            .unwrap()
            .get("odd")
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("unknown call state \"levitating\""),
            "{error}"
        );
    }
}
