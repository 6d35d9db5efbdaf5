//! The replicas sharing a store: each registers itself and renews a heartbeat; the open calls of
//! a replica whose heartbeat is older than the lease are marked interrupted by the others; a
//! cancel asked of a call another replica runs is left on its row for that replica to act on.

use std::sync::OnceLock;
use std::time::Duration;

use super::records::sql_list;
use super::{
    CallState, Param, ReplicaRow, StoreError, StoreReader, now_ms, required_int, required_text,
};

/// This machine's name as the kernel has it (Linux), for replicas' records and messages.
pub fn this_host() -> String {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_string())
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "unknown".to_string())
    })
    .clone()
}

const REPLICA_COLUMNS: &str = "id, host, pid, started_at_ms, heartbeat_at_ms, version";

fn replica_from(row: &dyn super::Columns) -> Result<ReplicaRow, super::BackendError> {
    Ok(ReplicaRow {
        id: required_text(row, 0)?,
        host: required_text(row, 1)?,
        pid: required_int(row, 2)?,
        started_at_ms: required_int(row, 3)?,
        heartbeat_at_ms: required_int(row, 4)?,
        version: required_text(row, 5)?,
    })
}

impl StoreReader {
    /// Registers `replica`, or renews its heartbeat (a replica forgotten by the others while it
    /// could not reach the store registers again this way).
    pub fn heartbeat(&self, replica: &ReplicaRow) -> Result<(), StoreError> {
        self.execute(
            &format!(
                "INSERT INTO replicas ({REPLICA_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT(id) DO UPDATE SET heartbeat_at_ms = excluded.heartbeat_at_ms"
            ),
            &[
                Param::Text(Some(&replica.id)),
                Param::Text(Some(&replica.host)),
                Param::Int(Some(replica.pid)),
                Param::Int(Some(replica.started_at_ms)),
                Param::Int(Some(replica.heartbeat_at_ms)),
                Param::Text(Some(&replica.version)),
            ],
        )
        .map(drop)
    }

    /// Whether the store takes a write (`exai doctor`): a replica row inserted in a transaction
    /// that is then rolled back, so nothing is kept and no replica is ever seen.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        let probe = format!("exai-doctor-{}", uuid::Uuid::now_v7());
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.begin().map_err(|e| self.location.error(e))?;
        let wrote = conn.execute(
            &format!("INSERT INTO replicas ({REPLICA_COLUMNS}) VALUES (?1, ?2, 0, 0, 0, ?3)"),
            &[
                Param::Text(Some(&probe)),
                Param::Text(Some("exai doctor")),
                Param::Text(Some(crate::VERSION)),
            ],
        );
        conn.rollback();
        wrote.map(drop).map_err(|e| self.location.error(e))
    }

    /// Forgets replica `id` (its clean shutdown, once its calls have ended).
    pub fn remove_replica(&self, id: &str) -> Result<(), StoreError> {
        self.execute(
            "DELETE FROM replicas WHERE id = ?1",
            &[Param::Text(Some(id))],
        )
        .map(drop)
    }

    /// The replica registered as `id`, if it is.
    pub fn replica(&self, id: &str) -> Result<Option<ReplicaRow>, StoreError> {
        let found = self.rows(
            &format!("SELECT {REPLICA_COLUMNS} FROM replicas WHERE id = ?1"),
            &[Param::Text(Some(id))],
            replica_from,
        )?;
        Ok(found.into_iter().next())
    }

    /// Every registered replica, oldest first.
    pub fn replicas(&self) -> Result<Vec<ReplicaRow>, StoreError> {
        self.rows(
            &format!("SELECT {REPLICA_COLUMNS} FROM replicas ORDER BY started_at_ms"),
            &[],
            replica_from,
        )
    }

    /// Marks the open calls of every replica but `me` whose heartbeat is older than `lease`
    /// (or that is not registered at all) `interrupted`, and forgets those replicas; returns how
    /// many calls. Each update checks the heartbeat again, so a replica that just renewed it
    /// keeps its calls; two replicas doing this at once interrupt each call once.
    pub fn interrupt_calls_of_lost_replicas(
        &self,
        me: &str,
        lease: Duration,
    ) -> Result<usize, StoreError> {
        let now = now_ms();
        let cutoff = now - i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let open = sql_list(&CallState::OPEN);
        let interrupted = CallState::Interrupted.as_str();
        let lost = self.rows(
            &format!(
                "SELECT {REPLICA_COLUMNS} FROM replicas WHERE heartbeat_at_ms < ?1 AND id <> ?2"
            ),
            &[Param::Int(Some(cutoff)), Param::Text(Some(me))],
            replica_from,
        )?;
        let mut count = 0;
        for replica in lost {
            let message = format!(
                "{replica} stopped answering; last heartbeat {} s ago",
                (now - replica.heartbeat_at_ms).max(0) / 1000
            );
            count += self.execute(
                &format!(
                    "UPDATE calls SET state = ?4, error_kind = ?4, error_message = ?2, \
                     finished_at_ms = ?3, duration_ms = ?3 - received_at_ms \
                     WHERE replica = ?1 AND state IN {open} AND NOT EXISTS \
                     (SELECT 1 FROM replicas WHERE id = ?1 AND heartbeat_at_ms >= ?5)"
                ),
                &[
                    Param::Text(Some(&replica.id)),
                    Param::Text(Some(&message)),
                    Param::Int(Some(now)),
                    Param::Text(Some(interrupted)),
                    Param::Int(Some(cutoff)),
                ],
            )?;
            self.execute(
                "DELETE FROM replicas WHERE id = ?1 AND heartbeat_at_ms < ?2",
                &[Param::Text(Some(&replica.id)), Param::Int(Some(cutoff))],
            )?;
        }
        // A replica registers before it opens a call: one with no record left was forgotten.
        count += self.execute(
            &format!(
                "UPDATE calls SET state = ?2, error_kind = ?2, \
                 error_message = 'replica ' || replica || ' (pid ' || CAST(owner_pid AS TEXT) || \
                 ') stopped answering; no heartbeat on record', \
                 finished_at_ms = ?3, duration_ms = ?3 - received_at_ms \
                 WHERE state IN {open} AND replica IS NOT NULL AND replica <> ?1 \
                 AND replica NOT IN (SELECT id FROM replicas)"
            ),
            &[
                Param::Text(Some(me)),
                Param::Text(Some(interrupted)),
                Param::Int(Some(now)),
            ],
        )?;
        Ok(count)
    }

    /// Asks the replica running call `id` to cancel it, for `reason` (the first reason asked
    /// stays); false when the call is no longer open.
    pub fn request_cancel(&self, id: &str, reason: &str) -> Result<bool, StoreError> {
        let changed = self.execute(
            &format!(
                "UPDATE calls SET cancel_requested = COALESCE(cancel_requested, ?2) \
                 WHERE id = ?1 AND state IN {}",
                sql_list(&CallState::OPEN)
            ),
            &[Param::Text(Some(id)), Param::Text(Some(reason))],
        )?;
        Ok(changed > 0)
    }

    /// The open calls of `replica` that another replica asked to cancel: (id, reason).
    pub fn cancel_requests(&self, replica: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.rows(
            &format!(
                "SELECT id, cancel_requested FROM calls WHERE replica = ?1 \
                 AND cancel_requested IS NOT NULL AND state IN {}",
                sql_list(&CallState::OPEN)
            ),
            &[Param::Text(Some(replica))],
            |row| Ok((required_text(row, 0)?, required_text(row, 1)?)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{new_call, test_location};
    use crate::store::{Store, StoreReader};

    fn replica(id: &str, heartbeat_at_ms: i64) -> ReplicaRow {
        ReplicaRow {
            id: id.into(),
            host: "h".into(),
            pid: 7,
            started_at_ms: 1,
            heartbeat_at_ms,
            version: "test".into(),
        }
    }

    #[tokio::test]
    async fn a_lost_replicas_open_calls_are_interrupted_and_a_live_ones_kept() {
        let store = Store::open(&test_location()).unwrap();
        for (id, owner) in [
            ("lost-call", "lost"),
            ("live-call", "live"),
            ("gone-call", "gone"),
        ] {
            let mut call = new_call(id);
            call.replica = Some(owner.into());
            store.insert(call).await.unwrap();
        }
        let (interrupted, rows, left) = store
            .read(|r: &StoreReader| {
                r.heartbeat(&replica("lost", now_ms() - 60_000))?;
                r.heartbeat(&replica("live", now_ms()))?;
                let interrupted =
                    r.interrupt_calls_of_lost_replicas("me", Duration::from_secs(5))?;
                let rows = ["lost-call", "live-call", "gone-call"].map(|id| {
                    r.get(id)
                        .map(|row| row.map(|row| (row.state, row.error_message)))
                });
                let left: Vec<String> = r.replicas()?.into_iter().map(|r| r.id).collect();
                Ok((interrupted, rows, left))
            })
            .await
            .unwrap();
        assert_eq!(interrupted, 2);
        let [lost, live, gone] = rows.map(|row| row.unwrap().unwrap());
        assert_eq!(lost.0, CallState::Interrupted);
        let message = lost.1.unwrap();
        assert!(
            message.starts_with("replica lost (host h, pid 7) stopped answering; last heartbeat 6"),
            "{message}"
        );
        assert_eq!(live.0, CallState::Received);
        assert_eq!(gone.0, CallState::Interrupted);
        assert!(gone.1.unwrap().contains("replica gone (pid "));
        assert_eq!(left, ["live"]);
    }

    #[tokio::test]
    async fn a_cancel_request_stays_on_an_open_call_with_its_first_reason() {
        let store = Store::open(&test_location()).unwrap();
        let mut call = new_call("c");
        call.replica = Some("a".into());
        store.insert(call).await.unwrap();
        let (asked, again, requests, elsewhere) = store
            .read(|r: &StoreReader| {
                Ok((
                    r.request_cancel("c", "first")?,
                    r.request_cancel("c", "second")?,
                    r.cancel_requests("a")?,
                    r.cancel_requests("b")?,
                ))
            })
            .await
            .unwrap();
        assert!(asked && again);
        assert_eq!(requests, [("c".to_string(), "first".to_string())]);
        assert!(elsewhere.is_empty());
        assert!(
            !store
                .read(|r: &StoreReader| r.request_cancel("never", "x"))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn a_write_check_keeps_nothing() {
        let store = Store::open(&test_location()).unwrap();
        let left = store
            .read(|r: &StoreReader| {
                r.check_writable()?;
                r.check_writable()?;
                r.replicas()
            })
            .await
            .unwrap();
        assert!(left.is_empty(), "{left:?}");
    }
}
