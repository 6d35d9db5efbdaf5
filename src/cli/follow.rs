//! `exai calls --follow`: calls as they start and end, one line each, until Ctrl-C — read from
//! the store on a blocking thread, polled by a look-back window over the time calls arrive.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::Duration;

use super::{CliError, duration, one_line, open_store};
use crate::config::Config;
use crate::store::{CallFilter, CallRow, CallState, StoreReader, now_ms};

/// How often the store is read.
const POLL: Duration = Duration::from_millis(500);
/// How far back each read looks for new calls: a call's record is committed shortly after the
/// time it carries (group commit, or a shim's id named before the daemon saw it), so new calls are
/// found by their receipt time in a window, and each is shown once.
const LOOK_BACK_MS: i64 = 15_000;
/// Most new calls read at one poll.
const MOST_NEW: usize = 2_000;
/// Most open calls the store is asked about at one poll.
const MOST_OPEN: usize = 10_000;

/// What `--follow` has shown, between reads of the store.
pub struct Follower {
    store: StoreReader,
    /// Only calls of this tool.
    tool: Option<String>,
    /// Calls already shown as started, by id, with their receipt time (forgotten past the window).
    seen: HashMap<String, i64>,
    /// Calls shown as started and not yet as ended.
    open: HashSet<String>,
    /// No poll yet: the first also shows calls that started before the window and still run.
    first: bool,
}

impl Follower {
    /// Opens the store (blocking). The calls running now are shown first, at the first poll.
    pub fn open(config: &Config, tool: Option<String>) -> Result<Self, CliError> {
        let store = open_store(config)?;
        let mut follower = Self {
            store,
            tool,
            seen: HashMap::new(),
            open: HashSet::new(),
            first: true,
        };
        // Calls that ended in the window before the start are not news.
        for row in follower.recent()? {
            if !CallState::OPEN.contains(&row.state) {
                follower.seen.insert(row.id, row.received_at_ms);
            }
        }
        Ok(follower)
    }

    fn recent(&self) -> Result<Vec<CallRow>, CliError> {
        let mut rows = self.store.list(&CallFilter {
            tool: self.tool.clone(),
            since_ms: Some(now_ms() - LOOK_BACK_MS),
            limit: MOST_NEW,
            ..Default::default()
        })?;
        rows.reverse();
        Ok(rows)
    }

    /// The calls received or running now, newest first.
    fn open_calls(&self) -> Result<Vec<CallRow>, CliError> {
        Ok(self.store.list(&CallFilter {
            running_only: true,
            tool: self.tool.clone(),
            limit: MOST_OPEN,
            ..Default::default()
        })?)
    }

    /// One read of the store (blocking): the lines of what started and ended since the last.
    pub fn poll(&mut self) -> Result<Vec<String>, CliError> {
        let mut lines = Vec::new();
        if !self.open.is_empty() {
            let still_open: HashSet<String> =
                self.open_calls()?.into_iter().map(|row| row.id).collect();
            let ended: Vec<String> = self
                .open
                .iter()
                .filter(|id| !still_open.contains(*id))
                .cloned()
                .collect();
            for id in ended {
                self.open.remove(&id);
                if let Some(row) = self.store.get(&id)? {
                    lines.push(ended_line(&row));
                }
            }
        }
        let mut new_rows = self.recent()?;
        if std::mem::take(&mut self.first) {
            let mut older: Vec<CallRow> = self
                .open_calls()?
                .into_iter()
                .filter(|row| !new_rows.iter().any(|r| r.id == row.id))
                .collect();
            older.reverse();
            older.append(&mut new_rows);
            new_rows = older;
        }
        for row in new_rows {
            if self.seen.contains_key(&row.id) {
                continue;
            }
            self.seen.insert(row.id.clone(), row.received_at_ms);
            lines.push(started_line(&row));
            if CallState::OPEN.contains(&row.state) {
                self.open.insert(row.id.clone());
            } else {
                lines.push(ended_line(&row));
            }
        }
        let forget_before = now_ms() - 2 * LOOK_BACK_MS;
        self.seen
            .retain(|id, received| *received >= forget_before || self.open.contains(id));
        Ok(lines)
    }
}

/// "14:02:07".
fn clock(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "--:--:--".into())
}

/// The model that served the call, or until one did, the model its arguments ask for.
fn model_of(row: &CallRow) -> String {
    row.model.clone().unwrap_or_else(|| {
        serde_json::from_str::<serde_json::Value>(&row.arguments)
            .ok()
            .and_then(|args| args.get("model")?.as_str().map(str::to_string))
            .unwrap_or_else(|| "-".into())
    })
}

fn line(at_ms: i64, row: &CallRow, state: &str, took: &str) -> String {
    format!(
        "{}  {}  {:<10}  {:<20}  {:<14}  {:<11}  {}",
        clock(at_ms),
        row.id,
        one_line(&row.tool, 10),
        one_line(&model_of(row), 20),
        one_line(row.client_name.as_deref().unwrap_or("?"), 14),
        state,
        took
    )
    .trim_end()
    .to_string()
}

fn started_line(row: &CallRow) -> String {
    line(row.received_at_ms, row, "started", "")
}

fn ended_line(row: &CallRow) -> String {
    line(
        row.finished_at_ms.unwrap_or_else(now_ms),
        row,
        row.state.as_str(),
        &duration(row),
    )
}

/// `exai calls --follow`: prints calls as they start and end until Ctrl-C.
pub async fn follow(
    config: &Config,
    tool: Option<String>,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let config = config.clone();
    // The store is only touched on blocking threads (the Postgres client's rule).
    let mut follower = crate::spawn::blocking(move || Follower::open(&config, tool))
        .await
        .map_err(joined)??;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let (back, lines) = crate::spawn::blocking(move || {
            let lines = follower.poll();
            (follower, lines)
        })
        .await
        .map_err(joined)?;
        follower = back;
        for line in lines? {
            writeln!(out, "{line}")?;
        }
        out.flush()?;
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = &mut ctrl_c => return Ok(()),
        }
    }
}

fn joined(error: tokio::task::JoinError) -> CliError {
    CliError::Io(std::io::Error::other(error))
}
