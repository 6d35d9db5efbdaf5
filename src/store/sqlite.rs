//! The embedded backend: one SQLite file (WAL) in EXAI_HOME, the default for one person.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, Value};
use rusqlite::{Connection, ErrorCode, ToSql};

use super::{BackendError, Columns, Param, Schema, StoreConnection, StoreError};

mod embedded {
    refinery::embed_migrations!("src/store/migrations/sqlite");
}

/// How long the checkpoint thread waits for a commit before it looks at the WAL all the same.
const CHECKPOINT_WHEN_QUIET: Duration = Duration::from_secs(5);
/// How long the checkpoint thread lets the writer's commits gather before each checkpoint.
const CHECKPOINT_WHILE_WRITING: Duration = Duration::from_millis(50);
/// Said when the checkpoint thread cannot start or cannot open the store.
const NO_CHECKPOINTER: &str = "no checkpoint thread; the writer's own checkpoints bound the WAL";
/// The WAL's length (in 4 KiB pages: 64 MiB) past which the writer folds it back itself.
const WAL_MAX_PAGES: i64 = 16_384;

/// Columns added before migrations were versioned: (name, type). A store made then may lack some.
const UNVERSIONED_COLUMNS: [(&str, &str); 6] = [
    ("reasoning_tokens", "INTEGER"),
    ("time_to_first_token_ms", "INTEGER"),
    ("reasoning", "TEXT"),
    ("task", "TEXT"),
    ("cached_tokens", "INTEGER"),
    ("finish_reason", "TEXT"),
];

/// One connection to the store's file.
pub(super) struct Sqlite {
    conn: Connection,
    /// The checkpoint thread (the writer's connection only), which each commit wakes.
    checkpointer: Option<std::thread::Thread>,
}

impl Sqlite {
    /// Opens (creating if needed) the file and brings its schema up to date.
    pub(super) fn open(path: &Path, schema: Schema) -> Result<Self, BackendError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        if schema == Schema::BringUpToDate {
            adopt_unversioned(&conn)?;
            let runner = embedded::migrations::runner();
            let outcome = runner.run(&mut conn);
            let known = runner.get_migrations();
            let applied = super::refused_as_newer(&outcome, known)
                .then(|| runner.get_applied_migrations(&mut conn));
            let store = path.display().to_string();
            super::applied_or_newer(outcome, known, applied, &store)?;
        }
        Ok(Self {
            conn,
            checkpointer: None,
        })
    }

    /// Opens the connection the writer keeps: checkpoints fsync the database, so they are kept
    /// off the commits calls wait for (a thread of their own does them while `alive` lives).
    pub(super) fn open_for_writing(
        path: &Path,
        alive: std::sync::Weak<()>,
    ) -> Result<Self, BackendError> {
        let mut store = Self::open_writer(path, WAL_MAX_PAGES)?;
        store.checkpointer = spawn_checkpointer(path.to_path_buf(), alive, CHECKPOINT_WHEN_QUIET);
        Ok(store)
    }

    /// The writer's connection, which checkpoints only once the WAL is `wal_max_pages` long.
    /// Under a steady stream of writes the checkpoint thread's passive checkpoints never catch
    /// up, so the WAL never starts over: it grew by 50 MB a second in the team benchmark, and
    /// every write went to new pages of the file. A checkpoint by the one writer, between its
    /// groups, copies every frame, and the WAL's next write starts again at its beginning.
    fn open_writer(path: &Path, wal_max_pages: i64) -> Result<Self, BackendError> {
        let store = Self::open(path, Schema::BringUpToDate)?;
        store
            .conn
            .pragma_update(None, "wal_autocheckpoint", wal_max_pages)?;
        Ok(store)
    }
}

/// Adds the columns a store made before versioned migrations may lack, so that the first
/// migration (which creates tables only if they are missing) finds the schema it expects.
fn adopt_unversioned(conn: &Connection) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('calls')")?;
    let existing: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if existing.is_empty() {
        return Ok(());
    }
    for (name, kind) in UNVERSIONED_COLUMNS {
        if !existing.iter().any(|c| c == name) {
            conn.execute_batch(&format!("ALTER TABLE calls ADD COLUMN {name} {kind}"))?;
        }
    }
    Ok(())
}

impl StoreConnection for Sqlite {
    // Prepared once, like every statement: the writer begins and commits each group of writes.
    fn begin(&mut self) -> Result<(), BackendError> {
        self.conn.prepare_cached("BEGIN")?.execute([])?;
        Ok(())
    }

    fn commit(&mut self) -> Result<(), BackendError> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.unpark();
        }
        Ok(())
    }

    fn rollback(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, BackendError> {
        let changed = self
            .conn
            .prepare_cached(sql)?
            .execute(rusqlite::params_from_iter(params))?;
        Ok(changed as u64)
    }

    fn query(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        each: &mut dyn FnMut(&dyn Columns) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        while let Some(row) = rows.next()? {
            each(&SqliteRow(row))?;
        }
        Ok(())
    }

    #[cfg(test)]
    fn execute_raw(&mut self, sql: &str) -> Result<(), BackendError> {
        Ok(self.conn.execute_batch(sql)?)
    }
}

impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Param::Int(Some(n)) => ToSqlOutput::Owned(Value::Integer(*n)),
            Param::Text(Some(text)) => ToSqlOutput::from(*text),
            Param::Bool(flag) => ToSqlOutput::Owned(Value::Integer(i64::from(*flag))),
            Param::Int(None) | Param::Text(None) => ToSqlOutput::Owned(Value::Null),
        })
    }
}

struct SqliteRow<'a>(&'a rusqlite::Row<'a>);

impl Columns for SqliteRow<'_> {
    fn int(&self, column: usize) -> Result<Option<i64>, BackendError> {
        Ok(self.0.get(column)?)
    }
    fn text(&self, column: usize) -> Result<Option<String>, BackendError> {
        Ok(self.0.get(column)?)
    }
    fn flag(&self, column: usize) -> Result<bool, BackendError> {
        Ok(self.0.get(column)?)
    }
}

/// The database is held by someone else (after the busy timeout): every write would fail alike.
pub(super) fn is_locked(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// SQLite's word for a file that is not (or no longer) a usable database.
pub(super) fn is_corrupt(error: &BackendError) -> bool {
    let sqlite = match error {
        BackendError::Sqlite(e) => Some(e),
        BackendError::Migration(e) => {
            std::error::Error::source(e).and_then(|s| s.downcast_ref::<rusqlite::Error>())
        }
        _ => None,
    };
    matches!(
        sqlite.and_then(rusqlite::Error::sqlite_error_code),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// Moves a corrupt store (and its WAL and shared-memory files) to `<name>.corrupt-<ms>`.
pub(super) fn move_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let aside = PathBuf::from(format!("{}.corrupt-{}", path.display(), super::now_ms()));
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        let to = PathBuf::from(format!("{}{suffix}", aside.display()));
        if from.exists() {
            std::fs::rename(&from, &to).map_err(|source| StoreError::Io { path: to, source })?;
        }
    }
    Ok(aside)
}

/// Checkpoints the WAL on its own connection, passively (never blocking the writer): every
/// [`CHECKPOINT_WHILE_WRITING`] while commits come (each wakes it), else every `quiet`.
///
/// A checkpoint syncs the WAL before it copies it. Made every 5 s, they left the writer's own
/// checkpoint (past [`WAL_MAX_PAGES`]) up to 64 MiB to sync: in the throughput bench the writer
/// spent 51–56 ms a second waiting on the disk, up to 23 ms at once, and every call waited with
/// it. Made 50 ms after a commit, 3–6 ms a second, up to 2 ms at once (this thread's CPU: 25–29
/// ms a second).
fn spawn_checkpointer(
    path: PathBuf,
    alive: std::sync::Weak<()>,
    quiet: Duration,
) -> Option<std::thread::Thread> {
    let spawned = std::thread::Builder::new()
        .name("exai-checkpoint".into())
        .spawn(move || {
            let conn = match Connection::open(&path) {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(%error, "{NO_CHECKPOINTER}");
                    return;
                }
            };
            loop {
                std::thread::park_timeout(quiet);
                // Before, not after: the commits of a burst (or one call's few) go in one
                // checkpoint, each of which syncs the WAL and the database.
                std::thread::sleep(CHECKPOINT_WHILE_WRITING);
                if alive.upgrade().is_none() {
                    return;
                }
                if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                {
                    tracing::debug!(%error, "WAL checkpoint skipped");
                }
            }
        });
    match spawned {
        Ok(thread) => Some(thread.thread().clone()),
        Err(error) => {
            tracing::warn!(%error, "{NO_CHECKPOINTER}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{new_call, tempdir};
    use crate::store::{CallState, FinishedCall, Param, Store, StoreLocation, StoreReader, now_ms};

    /// Commits `groups` groups of 10 rows of 4 KiB each on `writer`; returns the WAL's size.
    fn wal_after_writes(writer: &mut Sqlite, path: &Path, groups: usize) -> u64 {
        writer
            .execute_raw("CREATE TABLE IF NOT EXISTS filler (body TEXT)")
            .unwrap();
        let body = "x".repeat(4096);
        for _ in 0..groups {
            let rows: Vec<_> = (0..10)
                .map(|_| crate::store::Statement {
                    sql: "INSERT INTO filler (body) VALUES (?1)",
                    params: vec![Param::Text(Some(&body))],
                    only_if: None,
                })
                .collect();
            writer.execute_in_transaction(&rows).unwrap();
        }
        std::fs::metadata(format!("{}-wal", path.display()))
            .unwrap()
            .len()
    }

    #[test]
    fn the_wal_stays_bounded_under_writes_that_never_pause() {
        let path = tempdir().join("busy.db");
        let mut writer = Sqlite::open_writer(&path, 200).unwrap();
        // A reader as the daemon has them, between its reads.
        let _reader = Sqlite::open(&path, Schema::Current).unwrap();
        let wal = wal_after_writes(&mut writer, &path, 100);
        // 100 groups wrote over 1,000 pages; the WAL holds at most the limit and one group.
        assert!(wal < 260 * 4096, "the WAL is {wal} bytes");

        // What the limit prevents: without it, the WAL keeps every group.
        let path = tempdir().join("unbounded.db");
        let mut writer = Sqlite::open_writer(&path, 0).unwrap();
        let wal = wal_after_writes(&mut writer, &path, 100);
        assert!(wal > 1_000 * 4096, "the WAL is {wal} bytes");
    }

    #[test]
    fn commits_wake_the_checkpoint_thread_which_folds_them_into_the_database() {
        let path = tempdir().join("folded.db");
        let alive = std::sync::Arc::new(());
        // A WAL limit the writes never reach, and a quiet pause longer than the test: only a
        // commit's wake can bring each checkpoint about.
        let mut writer = Sqlite::open_writer(&path, 1_000_000).unwrap();
        writer.checkpointer = spawn_checkpointer(
            path.clone(),
            std::sync::Arc::downgrade(&alive),
            Duration::from_secs(600),
        );
        // The writer's connection as the store opens it has the thread too.
        let alive_too = std::sync::Arc::new(());
        let opened = Sqlite::open_for_writing(
            &tempdir().join("opened.db"),
            std::sync::Arc::downgrade(&alive_too),
        )
        .unwrap();
        assert!(opened.checkpointer.is_some());
        let database_size = || std::fs::metadata(&path).unwrap().len();
        // Each round commits 40 KiB of new rows, which reach the database's file only by a
        // checkpoint: the thread goes on folding commits in as they come, not just the first.
        for round in 1..=3 {
            let before = database_size();
            wal_after_writes(&mut writer, &path, 1);
            let waited = std::time::Instant::now();
            while database_size() < before + 40 * 1024 {
                assert!(
                    waited.elapsed() < Duration::from_secs(30),
                    "round {round}: the database's file is still {} bytes",
                    database_size()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // The thread ends at its next wake once the store is gone.
        drop(alive);
        writer.checkpointer.as_ref().unwrap().unpark();
    }

    #[tokio::test]
    async fn a_store_from_before_versioned_migrations_gains_the_columns_it_lacks() {
        let path = tempdir().join("old.db");
        // The calls table as it was before the last two columns were added, with no history table.
        let current = include_str!("migrations/sqlite/V1__calls_and_threads.sql");
        let old_schema = current.replace(
            ",\n    cached_tokens INTEGER,\n    finish_reason TEXT\n",
            "\n",
        );
        assert_ne!(old_schema, current);
        Connection::open(&path)
            .unwrap()
            .execute_batch(&old_schema)
            .unwrap();
        let store = Store::open(&StoreLocation::Sqlite(path.clone())).unwrap();
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
        // Opening again finds each migration applied once and changes nothing.
        let applied: i64 = Connection::open(&path)
            .unwrap()
            .query_row("SELECT count(*) FROM refinery_schema_history", [], |r| {
                r.get(0)
            })
            .unwrap();
        let migrations = embedded::migrations::runner().get_migrations().len();
        assert_eq!(applied as usize, migrations);
        StoreReader::open(&path).unwrap();
    }

    #[test]
    fn no_write_of_a_call_builds_a_temporary_index() {
        use crate::store::waiting_threads::ThreadSave;
        use crate::store::writer::{GroupSpend, WriteOp, plan};
        let path = tempdir().join("s.db");
        Store::open(&StoreLocation::Sqlite(path.clone())).unwrap();
        let conn = Connection::open(&path).unwrap();
        let call = std::sync::Arc::new(new_call("a"));
        let done = FinishedCall {
            state: Some(CallState::Failed),
            spend: vec![("glm".into(), Some(5))],
            ..FinishedCall::default()
        };
        let ended = std::sync::Arc::new(done.clone());
        let insert = WriteOp::Insert {
            call,
            started_at_ms: Some(now_ms()),
        };
        let thread = crate::store::ThreadRow {
            id: "t".into(),
            created_at_ms: 1,
            updated_at_ms: 1,
            expires_at_ms: 2,
            turns: "[]".into(),
            user_name: None,
            first_prompt: None,
            tools: "chat".into(),
            turn_count: 1,
        };
        let writes = [
            (&insert, None),
            (&insert, Some(&done)),
            (
                &WriteOp::Finish {
                    id: "a".into(),
                    done: ended,
                },
                None,
            ),
            (
                &WriteOp::Progress {
                    id: "a".into(),
                    count: 1,
                    message: "m".into(),
                    model: None,
                },
                None,
            ),
            (
                &WriteOp::delivery("a", crate::store::Delivery::Delivered),
                None,
            ),
            (
                &WriteOp::Task {
                    id: "a".into(),
                    kind: "mcp".into(),
                },
                None,
            ),
            (
                &WriteOp::SaveThread(ThreadSave {
                    thread,
                    search_text: None,
                }),
                None,
            ),
        ];
        let mut statements = Vec::new();
        for (op, recorded_as_ended) in writes {
            plan(op, recorded_as_ended, &mut statements, None);
        }
        let mut summed = GroupSpend::default();
        summed.add(0, None, &done);
        statements.extend(summed.statements(&[1]));
        // Every statement the writer plans (the end's spend, and a group's summed spends too):
        // SQLite builds a temporary index for a list of more than two words in a partial index's
        // condition, every time a statement writes a row.
        assert_eq!(statements.len(), 9);
        for statement in &statements {
            let opcodes = explained(&conn, "EXPLAIN", statement.sql, &statement.params, 1);
            assert!(
                !opcodes.iter().any(|op| op == "OpenEphemeral"),
                "{}",
                statement.sql
            );
        }
    }

    #[test]
    fn calls_looked_up_by_state_are_found_through_the_index_of_those_calls() {
        let path = tempdir().join("s.db");
        Store::open(&StoreLocation::Sqlite(path.clone())).unwrap();
        let conn = Connection::open(&path).unwrap();
        let open = crate::store::records::sql_list(&CallState::OPEN);
        let unsuccessful = crate::store::records::unsuccessful_sql();
        // The shapes of the store's queries by state (`interrupt_orphans`, the replicas' marks
        // and cancels, `list --running` and `--failed`): each uses its partial index, which it
        // can only while the lists here are written as the migration writes them.
        for (query, index) in [
            (
                format!(
                    "SELECT c.id FROM calls c LEFT JOIN replicas r ON r.id = c.replica \
                     WHERE c.state IN {open} AND (c.replica IS NULL OR r.host = 'h')"
                ),
                "calls_open",
            ),
            (
                format!("SELECT id FROM calls WHERE state IN {open} AND replica <> 'r'"),
                "calls_open",
            ),
            (
                format!(
                    "SELECT id FROM calls WHERE 1=1 AND state IN {open} ORDER BY id DESC LIMIT 20"
                ),
                "calls_open",
            ),
            (
                format!(
                    "SELECT id FROM calls WHERE 1=1 AND {unsuccessful} ORDER BY id DESC LIMIT 20"
                ),
                "calls_unsuccessful",
            ),
        ] {
            let plan = explained(&conn, "EXPLAIN QUERY PLAN", &query, &[], 3);
            assert!(
                plan.iter().any(|step| step.contains(index)),
                "{query}: {plan:?}"
            );
        }
        let number = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        let by_state = number("SELECT count(*) FROM sqlite_master WHERE name = 'calls_by_state'");
        assert_eq!(by_state, 0);
        // The index of people's calls holds only those with a name (the owner's have none).
        let partial = number(
            "SELECT \"partial\" FROM pragma_index_list('calls') WHERE name = 'calls_by_user'",
        );
        assert_eq!(partial, 1);
    }

    /// Column `column` of each row SQLite's `how` (`EXPLAIN`, `EXPLAIN QUERY PLAN`) gives for
    /// `sql` with `params`.
    fn explained(
        conn: &Connection,
        how: &str,
        sql: &str,
        params: &[Param<'_>],
        column: usize,
    ) -> Vec<String> {
        conn.prepare(&format!("{how} {sql}"))
            .unwrap()
            .query_map(rusqlite::params_from_iter(params), |row| {
                row.get::<_, String>(column)
            })
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn a_corrupt_store_is_moved_aside_never_deleted() {
        let path = tempdir().join("s.db");
        std::fs::write(&path, b"this is not a database, it is a note".repeat(200)).unwrap();
        let store = Store::open(&StoreLocation::Sqlite(path.clone())).unwrap();
        let aside = store.health().moved_aside.unwrap();
        assert!(
            std::fs::read(&aside)
                .unwrap()
                .starts_with(b"this is not a database")
        );
        assert!(store.health().problems()[0].contains("corrupt"));
        assert!(StoreReader::open(&path).is_ok());
    }

    #[test]
    fn a_full_disk_is_a_clear_error_and_other_writes_go_on() {
        use crate::store::writer::tests::write_all;
        use crate::store::writer::{WriteFailure, WriteOp};
        let path = tempdir().join("s.db");
        let mut store = Sqlite::open(&path, Schema::BringUpToDate).unwrap();
        store
            .execute_raw(&format!(
                "INSERT INTO calls (id, session_id, transport, tool, arguments, state, \
                 received_at_ms, deadline_at_ms, owner_pid) \
                 VALUES ('before', 's', 'ws', 'chat', '{{}}', 'received', {}, 1, 1)",
                now_ms()
            ))
            .unwrap();
        // SQLite's own "disk full": the file may not grow past the pages it has.
        let pages: i64 = store
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        store
            .conn
            .pragma_update(None, "max_page_count", pages)
            .unwrap();
        let mut huge = new_call("huge");
        huge.arguments = "y".repeat(200_000);
        let finish = WriteOp::Finish {
            id: "before".into(),
            done: std::sync::Arc::new(FinishedCall {
                state: Some(CallState::Succeeded),
                finished_at_ms: now_ms(),
                ..Default::default()
            }),
        };
        let (outcomes, health) = write_all(
            Box::new(store),
            vec![
                WriteOp::Insert {
                    call: huge.into(),
                    started_at_ms: None,
                },
                finish,
            ],
        );
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
}
