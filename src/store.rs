//! The call store: one SQLite file (WAL) holding a record per tool call.
//!
//! Writes go through one writer thread that commits whatever is queued in a
//! single transaction (group commit), so async tasks never block on disk and
//! hundreds of concurrent calls cost a handful of fsyncs. Reads open their own
//! connection; the CLI reads the file directly, daemon up or not.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("call store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("call store writer has stopped")]
    WriterGone,
    #[error("call id {id} already names a record")]
    IdTaken { id: String },
    #[error("call store {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error("cannot create {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The life of a call: `received → running → succeeded | failed | timed_out | cancelled | interrupted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    Received,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    Interrupted,
}

impl CallState {
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Received => "received",
            CallState::Running => "running",
            CallState::Succeeded => "succeeded",
            CallState::Failed => "failed",
            CallState::TimedOut => "timed_out",
            CallState::Cancelled => "cancelled",
            CallState::Interrupted => "interrupted",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "received" => CallState::Received,
            "running" => CallState::Running,
            "succeeded" => CallState::Succeeded,
            "failed" => CallState::Failed,
            "timed_out" => CallState::TimedOut,
            "cancelled" => CallState::Cancelled,
            "interrupted" => CallState::Interrupted,
            _ => return None,
        })
    }
    pub fn is_final(self) -> bool {
        !Self::OPEN.contains(&self)
    }

    /// The states of a call that has not ended.
    pub const OPEN: [CallState; 2] = [CallState::Received, CallState::Running];
    /// The ends other than success.
    pub const UNSUCCESSFUL: [CallState; 4] = [
        CallState::Failed,
        CallState::TimedOut,
        CallState::Cancelled,
        CallState::Interrupted,
    ];
}

/// States' stored words as an SQL list, `('received','running')` (fixed words: nothing to escape).
fn sql_list(states: &[CallState]) -> String {
    let words: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
    format!("({})", words.join(","))
}

impl std::fmt::Display for CallState {
    // `pad`, so listings can align the word (`{:<11}`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// How a session reaches the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportKind {
    /// `exai stdio --no-daemon`: the service in-process over stdin/stdout.
    Stdio,
    /// The shim's WebSocket (`/ws`).
    Ws,
    /// Streamable HTTP (`/mcp`), served by rmcp.
    Http,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Stdio => "stdio",
            TransportKind::Ws => "ws",
            TransportKind::Http => "http",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [TransportKind::Stdio, TransportKind::Ws, TransportKind::Http]
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }

    /// Whether exai's own transport writes the answers, and so can record their delivery
    /// (the framed ones do; rmcp's HTTP writes them itself).
    pub fn reports_delivery(self) -> bool {
        self != TransportKind::Http
    }
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A stored word read back as its type; an unknown word is a read error naming it.
fn word_from_sql<T>(
    value: rusqlite::types::ValueRef<'_>,
    what: &str,
    parse: fn(&str) -> Option<T>,
) -> rusqlite::types::FromSqlResult<T> {
    let word = value.as_str()?;
    parse(word).ok_or_else(|| {
        rusqlite::types::FromSqlError::Other(format!("unknown {what} {word:?}").into())
    })
}

impl rusqlite::types::FromSql for CallState {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        word_from_sql(value, "call state", CallState::parse)
    }
}

impl rusqlite::types::FromSql for TransportKind {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        word_from_sql(value, "transport", TransportKind::parse)
    }
}

/// Whether, and how, a call's answer reached a client. Stored as its wire form (`delivered`,
/// `failed: …`), which `exai calls` shows and the SQL guard `delivered%` relies on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Not answered yet.
    Pending,
    /// Written to the client's stream.
    Delivered,
    /// Fetched later with `call_result`.
    DeliveredByCallResult,
    /// Fetched later with the 2025-11-25 `tasks/result`.
    DeliveredByTasksResult,
    /// Given to rmcp's HTTP transport, which writes it itself.
    HandedToHttp,
    /// The client got a call handle instead of the answer.
    HandleSent,
    /// The client got a task instead of the answer.
    TaskCreated,
    /// The answer waits for `call_result` (the client had a handle).
    KeptForCallResult,
    /// The client left before the answer; it is kept in the store.
    ClientGone,
    /// The call was cancelled: no answer was sent.
    NotSentCancelled,
    /// Writing the answer failed, and why.
    Failed(String),
}

impl Delivery {
    const NAMES: [(&'static str, Delivery); 10] = [
        ("pending", Delivery::Pending),
        ("delivered", Delivery::Delivered),
        ("delivered_by_call_result", Delivery::DeliveredByCallResult),
        (
            "delivered_by_tasks_result",
            Delivery::DeliveredByTasksResult,
        ),
        ("handed_to_http", Delivery::HandedToHttp),
        ("handle_sent", Delivery::HandleSent),
        ("task_created", Delivery::TaskCreated),
        ("kept_for_call_result", Delivery::KeptForCallResult),
        ("client_gone", Delivery::ClientGone),
        ("not_sent_cancelled", Delivery::NotSentCancelled),
    ];

    /// Reads the stored form; anything unknown (an older exai's word) is kept as a failure text.
    pub fn parse(text: &str) -> Self {
        if let Some(why) = text.strip_prefix("failed: ") {
            return Delivery::Failed(why.to_string());
        }
        Self::NAMES
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| Delivery::Failed(text.to_string()))
    }
}

impl std::fmt::Display for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Delivery::Failed(why) = self {
            return write!(f, "failed: {why}");
        }
        let name = Self::NAMES
            .iter()
            .find(|(_, d)| d == self)
            .map(|(name, _)| *name)
            .unwrap_or("pending");
        f.write_str(name)
    }
}

impl Serialize for Delivery {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What is known about a call when it arrives.
#[derive(Debug, Clone, Serialize)]
pub struct NewCall {
    pub id: String,
    pub session_id: String,
    pub client_name: Option<String>,
    pub client_version: Option<String>,
    pub transport: TransportKind,
    pub tool: String,
    /// Arguments as JSON text, secrets redacted and size-capped.
    pub arguments: String,
    pub received_at_ms: i64,
    pub deadline_at_ms: i64,
}

/// What is known about a call when it ends.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FinishedCall {
    pub state: Option<CallState>,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: i64,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub tokens_in: Option<i64>,
    pub tokens_out: Option<i64>,
    pub reasoning_tokens: Option<i64>,
    /// Input tokens the provider served from its cache (part of `tokens_in`).
    pub cached_tokens: Option<i64>,
    /// Why the model stopped (`stop`, `length`, `sensitive`, …), as the provider said it.
    pub finish_reason: Option<String>,
    pub time_to_first_token_ms: Option<i64>,
    /// The model's reasoning, kept apart from the answer.
    pub reasoning: Option<String>,
    pub attempts: Option<i64>,
    pub progress_count: i64,
    pub last_progress: Option<String>,
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    /// The result as the client sees it (JSON), size-capped.
    pub result: Option<String>,
    pub is_error: bool,
}

/// One row of the `calls` table, as read back.
#[derive(Debug, Clone, Serialize)]
pub struct CallRow {
    pub id: String,
    pub session_id: String,
    pub client_name: Option<String>,
    pub client_version: Option<String>,
    pub transport: TransportKind,
    pub tool: String,
    pub arguments: String,
    pub state: CallState,
    pub received_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub deadline_at_ms: i64,
    pub duration_ms: Option<i64>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub tokens_in: Option<i64>,
    pub tokens_out: Option<i64>,
    pub reasoning_tokens: Option<i64>,
    pub time_to_first_token_ms: Option<i64>,
    /// The model's reasoning, kept apart from the answer.
    pub reasoning: Option<String>,
    pub attempts: Option<i64>,
    pub progress_count: i64,
    pub last_progress: Option<String>,
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    pub result: Option<String>,
    pub is_error: bool,
    pub delivery: Delivery,
    pub owner_pid: i64,
    /// Which tasks API the call was answered as a task for, if any ("2025-11-25", "extension").
    pub task: Option<String>,
    /// Input tokens the provider served from its cache (part of `tokens_in`).
    pub cached_tokens: Option<i64>,
    /// Why the model stopped (`stop`, `length`, `sensitive`, …), as the provider said it.
    pub finish_reason: Option<String>,
}

impl CallRow {
    /// Why an interrupted call stopped, as recorded.
    pub fn interruption(&self) -> &str {
        self.error_message
            .as_deref()
            .unwrap_or("exai stopped while it ran")
    }
}

/// A conversation thread as stored: its turns are JSON.
#[derive(Debug, Clone)]
pub struct ThreadRow {
    pub id: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub expires_at_ms: i64,
    pub turns: String,
}

/// Which calls `list` returns.
#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    pub failed_only: bool,
    pub running_only: bool,
    pub tool: Option<String>,
    /// Only calls from clients of this name.
    pub client: Option<String>,
    /// Only calls answered as tasks.
    pub tasks_only: bool,
    /// Only calls older than this id (ids grow with time): the next page after it.
    pub before_id: Option<String>,
    /// Only calls received at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    pub limit: usize,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS calls (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    client_name TEXT,
    client_version TEXT,
    transport TEXT NOT NULL,
    tool TEXT NOT NULL,
    arguments TEXT NOT NULL,
    state TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL,
    started_at_ms INTEGER,
    finished_at_ms INTEGER,
    deadline_at_ms INTEGER NOT NULL,
    duration_ms INTEGER,
    provider TEXT,
    model TEXT,
    tokens_in INTEGER,
    tokens_out INTEGER,
    attempts INTEGER,
    progress_count INTEGER NOT NULL DEFAULT 0,
    last_progress TEXT,
    error_kind TEXT,
    error_message TEXT,
    result TEXT,
    is_error INTEGER NOT NULL DEFAULT 0,
    delivery TEXT NOT NULL DEFAULT 'pending',
    owner_pid INTEGER NOT NULL,
    reasoning_tokens INTEGER,
    time_to_first_token_ms INTEGER,
    reasoning TEXT,
    task TEXT,
    cached_tokens INTEGER,
    finish_reason TEXT
);
CREATE INDEX IF NOT EXISTS calls_by_received ON calls(received_at_ms);
CREATE INDEX IF NOT EXISTS calls_by_state ON calls(state);
CREATE TABLE IF NOT EXISTS threads (
    id TEXT PRIMARY KEY,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    turns TEXT NOT NULL
);
";

const COLUMNS: &str = "id, session_id, client_name, client_version, transport, tool, arguments, state, \
    received_at_ms, started_at_ms, finished_at_ms, deadline_at_ms, duration_ms, provider, model, \
    tokens_in, tokens_out, attempts, progress_count, last_progress, error_kind, error_message, \
    result, is_error, delivery, owner_pid, reasoning_tokens, time_to_first_token_ms, reasoning, task, \
    cached_tokens, finish_reason";

/// Columns added after the first release of the schema: (name, type).
const ADDED_COLUMNS: [(&str, &str); 6] = [
    ("reasoning_tokens", "INTEGER"),
    ("time_to_first_token_ms", "INTEGER"),
    ("reasoning", "TEXT"),
    ("task", "TEXT"),
    ("cached_tokens", "INTEGER"),
    ("finish_reason", "TEXT"),
];

/// Brings an older store up to the current schema.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('calls')")?;
    let existing: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for (name, kind) in ADDED_COLUMNS {
        if !existing.iter().any(|c| c == name) {
            conn.execute_batch(&format!("ALTER TABLE calls ADD COLUMN {name} {kind}"))?;
        }
    }
    Ok(())
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let wrap = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open(path).map_err(wrap)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(wrap)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(wrap)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(wrap)?;
    conn.execute_batch(SCHEMA).map_err(wrap)?;
    migrate(&conn).map_err(wrap)?;
    Ok(conn)
}

enum WriteOp {
    /// Shared with the call that made it, which keeps it in case the store cannot take it.
    Insert(Arc<NewCall>),
    Running {
        id: String,
        started_at_ms: i64,
    },
    Progress {
        id: String,
        count: i64,
        message: String,
        /// The model answering, once chosen (so a running call's record names it).
        model: Option<String>,
    },
    Finish {
        id: String,
        /// Boxed: the largest write by far, it would size every slot of the queue.
        done: Box<FinishedCall>,
    },
    Delivery {
        id: String,
        delivery: String,
    },
    /// The call was answered as a task (`kind` names the tasks API).
    Task {
        id: String,
        kind: String,
    },
    /// Creates or replaces a conversation thread.
    SaveThread(ThreadRow),
    /// Commits nothing by itself; its acknowledgement orders everything before it.
    Barrier,
}

/// Why one queued write did not take effect, as the writer tells whoever waits for it.
#[derive(Debug, Clone)]
enum WriteFailure {
    /// An insert named an id that already has a record (the record is left as it was).
    IdTaken,
    /// SQLite refused it (disk full, locked, corrupt, …), or it found no record to update.
    Sql(String),
}

struct Queued {
    op: WriteOp,
    ack: Option<oneshot::Sender<Result<(), WriteFailure>>>,
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

/// Handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    tx: mpsc::Sender<Queued>,
    health: Arc<std::sync::Mutex<StoreHealth>>,
    /// While any handle lives, the checkpointer thread runs.
    _alive: Arc<()>,
}

/// Bound of the write queue: beyond it, acknowledged writes wait and progress updates are dropped.
const WRITE_QUEUE: usize = 8192;
/// Most operations committed in one transaction.
const BATCH: usize = 512;

impl Store {
    /// Opens (creating if needed) the store and starts its writer thread.
    ///
    /// A file SQLite finds corrupt (or not a database at all) is moved aside — never deleted —
    /// and a new store is started, so calls keep being recorded; `health()` says so.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mut health = StoreHealth::default();
        let conn = match open_connection(path) {
            Err(StoreError::Sqlite { source, .. }) if is_corrupt(&source) => {
                let aside = move_aside(path)?;
                tracing::error!(store = %path.display(), moved_to = %aside.display(), error = %source,
                    "the call store is corrupt: moved aside, starting a new one");
                health.moved_aside = Some(aside.display().to_string());
                open_connection(path)?
            }
            other => other?,
        };
        // Checkpoints fsync the database: keep them off the commits calls wait for.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(|source| StoreError::Sqlite {
                path: path.to_path_buf(),
                source,
            })?;
        let alive = Arc::new(());
        spawn_checkpointer(path.to_path_buf(), Arc::downgrade(&alive));
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let health = Arc::new(std::sync::Mutex::new(health));
        let writer = Writer {
            path: path.to_path_buf(),
            health: health.clone(),
        };
        std::thread::Builder::new()
            .name("exai-store".into())
            .spawn(move || writer.run(conn, rx))
            .map_err(|source| StoreError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            tx,
            health,
            _alive: alive,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
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
        let id_of = match &op {
            WriteOp::Insert(call) => call.id.clone(),
            _ => String::new(),
        };
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Queued { op, ack: Some(ack) })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(WriteFailure::IdTaken)) => Err(StoreError::IdTaken { id: id_of }),
            Ok(Err(WriteFailure::Sql(message))) => Err(StoreError::Write {
                path: self.path.clone(),
                message,
            }),
            Err(_) => Err(StoreError::WriterGone),
        }
    }

    fn write_unacked(&self, op: WriteOp) {
        // Progress and state hints are best effort: a full queue drops them, the final write carries the truth.
        let _ = self.tx.try_send(Queued { op, ack: None });
    }

    /// Creates the record at receipt; returns once it is committed. An id that already
    /// names a record is refused (`IdTaken`): a record is never overwritten by another call.
    pub async fn insert(&self, call: impl Into<Arc<NewCall>>) -> Result<(), StoreError> {
        self.write_acked(WriteOp::Insert(call.into())).await
    }

    /// Runs `query` on a reader of this store, on a blocking thread (never on the async workers).
    pub async fn read<T, F>(&self, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&StoreReader) -> Result<T, StoreError> + Send + 'static,
    {
        let path = self.path.clone();
        crate::spawn::blocking(move || query(&StoreReader::open(&path)?))
            .await
            .map_err(|_| StoreError::WriterGone)?
    }

    /// Returns once everything queued before it is committed.
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.write_acked(WriteOp::Barrier).await
    }

    pub fn mark_running(&self, id: &str, started_at_ms: i64) {
        self.write_unacked(WriteOp::Running {
            id: id.to_string(),
            started_at_ms,
        });
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
        self.write_acked(WriteOp::Finish {
            id: id.to_string(),
            done: Box::new(done),
        })
        .await
    }

    /// Queues a conversation thread for saving. Writes commit in order, so the acknowledged
    /// end of the call that saved it implies the thread is committed before the answer goes out.
    pub async fn save_thread(&self, thread: ThreadRow) -> Result<(), StoreError> {
        self.tx
            .send(Queued {
                op: WriteOp::SaveThread(thread),
                ack: None,
            })
            .await
            .map_err(|_| StoreError::WriterGone)
    }

    /// Records that the call was answered as a task of the `kind` tasks API.
    pub async fn set_task(&self, id: &str, kind: &str) -> Result<(), StoreError> {
        self.write_acked(WriteOp::Task {
            id: id.to_string(),
            kind: kind.to_string(),
        })
        .await
    }

    /// Records whether the answer reached the client.
    pub async fn set_delivery(&self, id: &str, delivery: Delivery) -> Result<(), StoreError> {
        self.write_acked(WriteOp::Delivery {
            id: id.to_string(),
            delivery: delivery.to_string(),
        })
        .await
    }
}

/// How often the WAL is folded back into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

/// Checkpoints the WAL on its own connection, passively (never blocking the writer).
fn spawn_checkpointer(path: PathBuf, alive: std::sync::Weak<()>) {
    let spawned = std::thread::Builder::new()
        .name("exai-checkpoint".into())
        .spawn(move || {
            let Ok(conn) = Connection::open(&path) else {
                return;
            };
            while alive.upgrade().is_some() {
                std::thread::sleep(CHECKPOINT_EVERY);
                if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                {
                    tracing::debug!(%error, "WAL checkpoint skipped");
                }
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "no checkpoint thread; the WAL grows until the next start");
    }
}

/// The writer thread: commits what is queued in one transaction; when that fails, each
/// write is retried on its own so one bad row cannot take the others down with it.
struct Writer {
    path: PathBuf,
    health: Arc<std::sync::Mutex<StoreHealth>>,
}

impl Writer {
    fn run(self, mut conn: Connection, mut rx: mpsc::Receiver<Queued>) {
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let outcomes = match apply_batch(&mut conn, &batch) {
                Ok(outcomes) => outcomes,
                // Another program holds the database: each write would wait the busy timeout
                // again and fail the same way, so all get the error at once.
                Err(error) if is_locked(&error) || batch.len() == 1 => {
                    let failure = WriteFailure::Sql(error.to_string());
                    vec![Err(failure); batch.len()]
                }
                Err(error) => {
                    tracing::warn!(store = %self.path.display(), %error, writes = batch.len(),
                        "call store batch failed; retrying each write on its own");
                    batch
                        .iter()
                        .map(
                            |queued| match apply_batch(&mut conn, std::slice::from_ref(queued)) {
                                Ok(mut one) => one.pop().unwrap_or(Ok(())),
                                Err(error) => Err(WriteFailure::Sql(error.to_string())),
                            },
                        )
                        .collect()
                }
            };
            for (queued, outcome) in batch.drain(..).zip(outcomes) {
                if let Err(WriteFailure::Sql(error)) = &outcome {
                    tracing::error!(store = %self.path.display(), %error, "call store write failed");
                    self.health
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .last_error = Some((now_ms(), error.clone()));
                }
                if let Some(ack) = queued.ack {
                    let _ = ack.send(outcome);
                }
            }
        }
    }
}

/// Applies `batch` in one transaction: `Err` when the transaction failed as a whole,
/// else each write's own outcome (an id already taken, an update that found no record).
fn apply_batch(
    conn: &mut Connection,
    batch: &[Queued],
) -> rusqlite::Result<Vec<Result<(), WriteFailure>>> {
    let tx = conn.transaction()?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for queued in batch {
        outcomes.push(apply(&tx, &queued.op)?);
    }
    tx.commit()?;
    Ok(outcomes)
}

/// The database is held by someone else (after the busy timeout).
fn is_locked(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// SQLite's word for a file that is not (or no longer) a usable database.
fn is_corrupt(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

/// Moves a corrupt store (and its WAL and shared-memory files) to `<name>.corrupt-<ms>`.
fn move_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let aside = PathBuf::from(format!("{}.corrupt-{}", path.display(), now_ms()));
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        let to = PathBuf::from(format!("{}{suffix}", aside.display()));
        if from.exists() {
            std::fs::rename(&from, &to).map_err(|source| StoreError::Io { path: to, source })?;
        }
    }
    Ok(aside)
}

/// Applies one write. `Ok(Err(_))` is a write that took no effect without failing the
/// transaction: an insert whose id is taken, a finish that found no record.
fn apply(conn: &Connection, op: &WriteOp) -> rusqlite::Result<Result<(), WriteFailure>> {
    match op {
        WriteOp::Insert(c) => {
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO calls (id, session_id, client_name, client_version, transport, tool, \
                 arguments, state, received_at_ms, deadline_at_ms, owner_pid) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?11, ?8, ?9, ?10) ON CONFLICT(id) DO NOTHING",
                )?
            .execute(params![
                c.id,
                c.session_id,
                c.client_name,
                c.client_version,
                c.transport.as_str(),
                c.tool,
                c.arguments,
                c.received_at_ms,
                c.deadline_at_ms,
                std::process::id(),
                CallState::Received.as_str()
            ])?;
            if inserted == 0 {
                return Ok(Err(WriteFailure::IdTaken));
            }
        }
        WriteOp::Running { id, started_at_ms } => {
            conn.prepare_cached(
                "UPDATE calls SET state = ?3, started_at_ms = ?2 WHERE id = ?1 AND state = ?4",
            )?
            .execute(params![
                id,
                started_at_ms,
                CallState::Running.as_str(),
                CallState::Received.as_str()
            ])?;
        }
        WriteOp::Progress {
            id,
            count,
            message,
            model,
        } => {
            conn.prepare_cached(&format!(
                "UPDATE calls SET progress_count = ?2, last_progress = ?3, model = COALESCE(?4, model) \
                 WHERE id = ?1 AND state IN {}",
                sql_list(&CallState::OPEN)
            ))?
            .execute(params![id, count, message, model])?;
        }
        WriteOp::Finish { id, done } => {
            let updated = conn.prepare_cached(
                "UPDATE calls SET state = ?2, started_at_ms = COALESCE(?3, started_at_ms), finished_at_ms = ?4, \
                 duration_ms = ?4 - received_at_ms, provider = ?5, model = ?6, tokens_in = ?7, tokens_out = ?8, \
                 attempts = ?9, progress_count = ?10, last_progress = ?11, error_kind = ?12, error_message = ?13, \
                 result = ?14, is_error = ?15, reasoning_tokens = ?16, time_to_first_token_ms = ?17, \
                 reasoning = ?18, cached_tokens = ?19, finish_reason = ?20 WHERE id = ?1",
            )?
            .execute(params![
                id,
                done.state.unwrap_or(CallState::Failed).as_str(),
                done.started_at_ms,
                done.finished_at_ms,
                done.provider,
                done.model,
                done.tokens_in,
                done.tokens_out,
                done.attempts,
                done.progress_count,
                done.last_progress,
                done.error_kind,
                done.error_message,
                done.result,
                done.is_error,
                done.reasoning_tokens,
                done.time_to_first_token_ms,
                done.reasoning,
                done.cached_tokens,
                done.finish_reason
            ])?;
            if updated == 0 {
                return Ok(Err(WriteFailure::Sql(format!(
                    "no record of call {id} to finish (its first write was lost)"
                ))));
            }
        }
        WriteOp::Barrier => {}
        WriteOp::SaveThread(t) => {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO threads (id, created_at_ms, updated_at_ms, expires_at_ms, turns) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![t.id, t.created_at_ms, t.updated_at_ms, t.expires_at_ms, t.turns])?;
        }
        WriteOp::Task { id, kind } => {
            conn.prepare_cached("UPDATE calls SET task = ?2 WHERE id = ?1")?
                .execute(params![id, kind])?;
        }
        WriteOp::Delivery { id, delivery } => {
            // Once an answer reached a client, a late report about another
            // path (an abandoned request's closed stream) must not undo that.
            conn.prepare_cached(
                "UPDATE calls SET delivery = ?2 WHERE id = ?1 AND delivery NOT LIKE 'delivered%'",
            )?
            .execute(params![id, delivery])?;
        }
    }
    Ok(Ok(()))
}

/// Synchronous access for start-up, maintenance and the CLI (never on an async task).
pub struct StoreReader {
    path: PathBuf,
    conn: Connection,
}

impl StoreReader {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            path: path.to_path_buf(),
            conn: open_connection(path)?,
        })
    }

    fn wrap(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Marks calls still open whose owning process is gone as `interrupted`; returns how many.
    pub fn interrupt_orphans(&self, reason: &str) -> Result<usize, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT id, owner_pid FROM calls WHERE state IN {}",
                sql_list(&CallState::OPEN)
            ))
            .map_err(|e| self.wrap(e))?;
        let open: Vec<(String, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.wrap(e))?;
        let me = std::process::id() as i64;
        let now = now_ms();
        let mut count = 0;
        for (id, pid) in open {
            if pid == me || process_alive(pid) {
                continue;
            }
            count += self
                .conn
                .execute(
                    "UPDATE calls SET state = ?4, error_kind = ?4, error_message = ?2, \
                     finished_at_ms = ?3, duration_ms = ?3 - received_at_ms WHERE id = ?1",
                    params![
                        id,
                        format!("{reason} (process {pid} ended while the call was open)"),
                        now,
                        CallState::Interrupted.as_str()
                    ],
                )
                .map_err(|e| self.wrap(e))?;
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
        let threads = self
            .conn
            .execute(
                "DELETE FROM threads WHERE expires_at_ms < ?1",
                params![now_ms()],
            )
            .map_err(|e| self.wrap(e))?;
        Ok(self.prune(max_age, max_rows)? + self.expire_results(result_ttl)? + threads)
    }

    /// A conversation thread, if it exists and has not expired.
    pub fn thread(&self, id: &str) -> Result<Option<ThreadRow>, StoreError> {
        self.conn
            .query_row(
                "SELECT id, created_at_ms, updated_at_ms, expires_at_ms, turns FROM threads \
                 WHERE id = ?1 AND expires_at_ms >= ?2",
                params![id, now_ms()],
                |r| {
                    Ok(ThreadRow {
                        id: r.get(0)?,
                        created_at_ms: r.get(1)?,
                        updated_at_ms: r.get(2)?,
                        expires_at_ms: r.get(3)?,
                        turns: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.wrap(e))
    }

    /// Forgets the results (and reasoning) of calls that ended more than `ttl` ago; returns how many.
    pub fn expire_results(&self, ttl: Duration) -> Result<usize, StoreError> {
        let cutoff = now_ms() - ttl.as_millis() as i64;
        self.conn
            .execute(
                "UPDATE calls SET result = NULL, reasoning = NULL WHERE finished_at_ms < ?1 AND result IS NOT NULL",
                params![cutoff],
            )
            .map_err(|e| self.wrap(e))
    }

    /// Deletes records older than `max_age` and beyond `max_rows`; returns how many.
    pub fn prune(&self, max_age: Duration, max_rows: u64) -> Result<usize, StoreError> {
        let cutoff = now_ms() - max_age.as_millis() as i64;
        let mut removed = self
            .conn
            .execute(
                &format!(
                    "DELETE FROM calls WHERE received_at_ms < ?1 AND state NOT IN {}",
                    sql_list(&CallState::OPEN)
                ),
                params![cutoff],
            )
            .map_err(|e| self.wrap(e))?;
        removed += self
            .conn
            .execute(
                &format!(
                    "DELETE FROM calls WHERE id IN (SELECT id FROM calls ORDER BY received_at_ms DESC LIMIT -1 OFFSET ?1) \
                     AND state NOT IN {}",
                    sql_list(&CallState::OPEN)
                ),
                params![max_rows as i64],
            )
            .map_err(|e| self.wrap(e))?;
        Ok(removed)
    }

    pub fn list(&self, filter: &CallFilter) -> Result<Vec<CallRow>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM calls WHERE 1=1");
        if filter.failed_only {
            sql += &format!(" AND state IN {}", sql_list(&CallState::UNSUCCESSFUL));
        }
        if filter.running_only {
            sql += &format!(" AND state IN {}", sql_list(&CallState::OPEN));
        }
        if filter.tool.is_some() {
            sql.push_str(" AND tool = ?1");
        } else {
            sql.push_str(" AND ?1 IS NULL");
        }
        if filter.client.is_some() {
            sql.push_str(" AND client_name = ?3");
        } else {
            sql.push_str(" AND ?3 IS NULL");
        }
        if filter.tasks_only {
            sql.push_str(" AND task IS NOT NULL");
        }
        sql.push_str(" AND (?4 IS NULL OR id < ?4) AND (?5 IS NULL OR received_at_ms >= ?5)");
        sql.push_str(" ORDER BY id DESC LIMIT ?2");
        let limit = if filter.limit == 0 { 20 } else { filter.limit } as i64;
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.wrap(e))?;
        stmt.query_map(
            params![
                filter.tool,
                limit,
                filter.client,
                filter.before_id,
                filter.since_ms
            ],
            row_to_call,
        )
        .and_then(|rows| rows.collect())
        .map_err(|e| self.wrap(e))
    }

    pub fn get(&self, id: &str) -> Result<Option<CallRow>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM calls WHERE id = ?1"),
                params![id],
                row_to_call,
            )
            .optional()
            .map_err(|e| self.wrap(e))
    }

    /// Ids starting or ending with `fragment` (short ids typed by hand: time-ordered ids share
    /// their start with calls of the same moment, so their random end is the handier part).
    pub fn find_by_fragment(&self, fragment: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id FROM calls WHERE id LIKE ?1 || '%' OR id LIKE '%' || ?1 \
                 ORDER BY id DESC LIMIT 5",
            )
            .map_err(|e| self.wrap(e))?;
        stmt.query_map(params![fragment], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.wrap(e))
    }
}

fn row_to_call(r: &rusqlite::Row<'_>) -> rusqlite::Result<CallRow> {
    Ok(CallRow {
        id: r.get(0)?,
        session_id: r.get(1)?,
        client_name: r.get(2)?,
        client_version: r.get(3)?,
        transport: r.get(4)?,
        tool: r.get(5)?,
        arguments: r.get(6)?,
        state: r.get(7)?,
        received_at_ms: r.get(8)?,
        started_at_ms: r.get(9)?,
        finished_at_ms: r.get(10)?,
        deadline_at_ms: r.get(11)?,
        duration_ms: r.get(12)?,
        provider: r.get(13)?,
        model: r.get(14)?,
        tokens_in: r.get(15)?,
        tokens_out: r.get(16)?,
        attempts: r.get(17)?,
        progress_count: r.get(18)?,
        last_progress: r.get(19)?,
        error_kind: r.get(20)?,
        error_message: r.get(21)?,
        result: r.get(22)?,
        is_error: r.get(23)?,
        delivery: Delivery::parse(&r.get::<_, String>(24)?),
        owner_pid: r.get(25)?,
        reasoning_tokens: r.get(26)?,
        time_to_first_token_ms: r.get(27)?,
        reasoning: r.get(28)?,
        task: r.get(29)?,
        cached_tokens: r.get(30)?,
        finish_reason: r.get(31)?,
    })
}

/// Whether a process with this pid exists (Linux: /proc).
fn process_alive(pid: i64) -> bool {
    pid > 0 && Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_call(id: &str) -> NewCall {
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
        }
    }

    #[tokio::test]
    async fn a_store_from_before_the_cached_tokens_and_finish_reason_columns_gains_them() {
        let dir = tempdir();
        let path = dir.join("old.db");
        // The calls table as it was before these columns were added.
        let old_schema = SCHEMA.replace(
            ",\n    cached_tokens INTEGER,\n    finish_reason TEXT\n",
            "\n",
        );
        assert_ne!(old_schema, SCHEMA);
        Connection::open(&path)
            .unwrap()
            .execute_batch(&old_schema)
            .unwrap();
        let store = Store::open(&path).unwrap();
        store.insert(new_call("a")).await.unwrap();
        store
            .finish(
                "a",
                FinishedCall {
                    state: Some(CallState::Succeeded),
                    finished_at_ms: now_ms(),
                    tokens_in: Some(1200),
                    cached_tokens: Some(1024),
                    finish_reason: Some("length".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let row = StoreReader::open(&path).unwrap().get("a").unwrap().unwrap();
        assert_eq!(row.cached_tokens, Some(1024));
        assert_eq!(row.finish_reason.as_deref(), Some("length"));
    }

    #[tokio::test]
    async fn a_record_lives_from_receipt_to_its_end() {
        let dir = tempdir();
        let store = Store::open(&dir.join("s.db")).unwrap();
        store.insert(new_call("a")).await.unwrap();
        store.sync().await.unwrap();
        let reader = StoreReader::open(&dir.join("s.db")).unwrap();
        assert_eq!(reader.get("a").unwrap().unwrap().state, CallState::Received);
        store
            .finish(
                "a",
                FinishedCall {
                    state: Some(CallState::Succeeded),
                    finished_at_ms: now_ms(),
                    result: Some("{\"ok\":1}".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        store.set_delivery("a", Delivery::Delivered).await.unwrap();
        let row = reader.get("a").unwrap().unwrap();
        assert_eq!(row.state, CallState::Succeeded);
        assert_eq!(row.delivery, Delivery::Delivered);
        assert!(row.duration_ms.is_some());
        let failed = reader
            .list(&CallFilter {
                failed_only: true,
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert!(failed.is_empty());
    }

    #[tokio::test]
    async fn orphans_of_dead_processes_become_interrupted() {
        let dir = tempdir();
        let path = dir.join("s.db");
        let store = Store::open(&path).unwrap();
        store.insert(new_call("mine")).await.unwrap();
        store.sync().await.unwrap();
        let reader = StoreReader::open(&path).unwrap();
        reader
            .conn
            .execute(
                "INSERT INTO calls (id, session_id, transport, tool, arguments, state, received_at_ms, deadline_at_ms, owner_pid) \
                 VALUES ('dead', 's', 'ws', 'chat', '{}', 'running', 1, 2, 999999999)",
                [],
            )
            .unwrap();
        assert_eq!(reader.interrupt_orphans("daemon restarted").unwrap(), 1);
        assert_eq!(
            reader.get("dead").unwrap().unwrap().state,
            CallState::Interrupted
        );
        assert_eq!(
            reader.get("mine").unwrap().unwrap().state,
            CallState::Received
        );
    }

    #[tokio::test]
    async fn retention_keeps_at_most_the_row_limit() {
        let dir = tempdir();
        let path = dir.join("s.db");
        let store = Store::open(&path).unwrap();
        for i in 0..5 {
            store.insert(new_call(&format!("c{i}"))).await.unwrap();
            store
                .finish(
                    &format!("c{i}"),
                    FinishedCall {
                        state: Some(CallState::Failed),
                        finished_at_ms: now_ms(),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
        }
        let reader = StoreReader::open(&path).unwrap();
        assert_eq!(reader.prune(Duration::from_secs(3600), 3).unwrap(), 2);
        let all = reader
            .list(&CallFilter {
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(all.len(), 3);
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("exai-store-test-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
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
        let dir = tempdir();
        let store = Store::open(&dir.join("s.db")).unwrap();
        store.insert(new_call("x")).await.unwrap();
        let mut other = new_call("x");
        other.tool = "challenge".into();
        assert!(matches!(
            store.insert(other).await,
            Err(StoreError::IdTaken { id }) if id == "x"
        ));
        let reader = StoreReader::open(&dir.join("s.db")).unwrap();
        assert_eq!(reader.get("x").unwrap().unwrap().tool, "chat");
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

    #[test]
    fn one_bad_write_does_not_drop_the_others_in_its_batch() {
        let dir = tempdir();
        let path = dir.join("s.db");
        let conn = open_connection(&path).unwrap();
        // The "bad row" of the batch: SQLite refuses it (as it would a row over its limits).
        conn.execute_batch(
            "CREATE TEMP TRIGGER bad_row BEFORE INSERT ON calls WHEN NEW.arguments = 'bad' \
             BEGIN SELECT RAISE(ABORT, 'this row is bad'); END;",
        )
        .unwrap();
        let ops = [
            ("a", "{}".to_string()),
            ("b", "bad".to_string()),
            ("c", "{}".to_string()),
        ]
        .into_iter()
        .map(|(id, arguments)| {
            let mut call = new_call(id);
            call.arguments = arguments;
            WriteOp::Insert(call.into())
        })
        .collect();
        let (outcomes, health) = write_all(conn, &path, ops);
        assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
        assert!(
            matches!(&outcomes[1], Err(WriteFailure::Sql(m)) if m.contains("this row is bad")),
            "{outcomes:?}"
        );
        let reader = StoreReader::open(&path).unwrap();
        assert!(reader.get("a").unwrap().is_some());
        assert!(reader.get("b").unwrap().is_none());
        assert!(reader.get("c").unwrap().is_some());
        assert!(
            health.problems()[0].contains("a call store write failed"),
            "{:?}",
            health.problems()
        );
    }

    /// Runs a writer over `conn` for the writes in `ops`, queued before it starts (one batch);
    /// returns each write's outcome.
    fn write_all(
        conn: Connection,
        path: &Path,
        ops: Vec<WriteOp>,
    ) -> (Vec<Result<(), WriteFailure>>, StoreHealth) {
        let (tx, rx) = mpsc::channel(ops.len().max(1));
        let mut acks = Vec::new();
        for op in ops {
            let (ack, done) = oneshot::channel();
            tx.try_send(Queued { op, ack: Some(ack) }).unwrap();
            acks.push(done);
        }
        drop(tx);
        let health = Arc::new(std::sync::Mutex::new(StoreHealth::default()));
        Writer {
            path: path.to_path_buf(),
            health: health.clone(),
        }
        .run(conn, rx);
        let outcomes = acks
            .into_iter()
            .map(|mut done| done.try_recv().unwrap())
            .collect();
        let health = health.lock().unwrap().clone();
        (outcomes, health)
    }

    #[test]
    fn a_full_disk_is_a_clear_error_and_other_writes_go_on() {
        let dir = tempdir();
        let path = dir.join("s.db");
        let conn = open_connection(&path).unwrap();
        apply(&conn, &WriteOp::Insert(new_call("before").into()))
            .unwrap()
            .unwrap();
        // SQLite's own "disk full": the file may not grow past the pages it has.
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        conn.pragma_update(None, "max_page_count", pages).unwrap();
        let mut huge = new_call("huge");
        huge.arguments = "y".repeat(200_000);
        let finish = WriteOp::Finish {
            id: "before".into(),
            done: Box::new(FinishedCall {
                state: Some(CallState::Succeeded),
                finished_at_ms: now_ms(),
                ..Default::default()
            }),
        };
        let (outcomes, health) = write_all(conn, &path, vec![WriteOp::Insert(huge.into()), finish]);
        assert!(
            matches!(&outcomes[0], Err(WriteFailure::Sql(m)) if m.contains("full")),
            "{outcomes:?}"
        );
        assert!(outcomes[1].is_ok(), "{outcomes:?}");
        assert!(
            health.problems()[0].contains("full"),
            "{:?}",
            health.problems()
        );
        let reader = StoreReader::open(&path).unwrap();
        assert_eq!(
            reader.get("before").unwrap().unwrap().state,
            CallState::Succeeded
        );
    }

    #[test]
    fn a_corrupt_store_is_moved_aside_never_deleted() {
        let dir = tempdir();
        let path = dir.join("s.db");
        std::fs::write(&path, b"this is not a database, it is a note".repeat(200)).unwrap();
        let store = Store::open(&path).unwrap();
        let aside = store.health().moved_aside.unwrap();
        assert!(
            std::fs::read(&aside)
                .unwrap()
                .starts_with(b"this is not a database")
        );
        assert!(store.health().problems()[0].contains("corrupt"));
        assert!(StoreReader::open(&path).is_ok());
    }
}
