//! `exai threads`: conversations listed (newest first, searchable by their first prompt), one
//! shown as Markdown, or exported whole as JSON — read straight from the store, daemon up or not.

use std::io::Write;

use serde_json::json;

use super::{CliError, age, one_line, open_store, write_json};
use crate::providers::price::usd_json;
use crate::store::{StoreReader, ThreadFilter, ThreadSummary, now_ms};
use crate::threads::Thread;

/// How `show` and `export` print a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Markdown, for people.
    Md,
    /// JSON, complete, for scripts.
    Json,
}

/// `exai threads`: a table of conversations (or JSON), most recently continued first.
pub fn list(
    config: &crate::config::Config,
    filter: &ThreadFilter,
    as_json: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let rows = open_store(config)?.list_threads(filter)?;
    if as_json {
        let threads: Vec<_> = rows.iter().map(summary_json).collect();
        write_json(out, &json!({ "threads": threads }))?;
        return Ok(());
    }
    if rows.is_empty() {
        match filter.words.is_empty() {
            true => writeln!(out, "no threads")?,
            false => writeln!(
                out,
                "no thread's first prompt holds {}",
                filter.words.join(" ")
            )?,
        }
        return Ok(());
    }
    let with_users = rows.iter().any(|row| row.user_name.is_some());
    writeln!(
        out,
        "{:<36}  {:>7}  {}{:>5}  {:>10}  {:<20}  FIRST PROMPT",
        "ID",
        "ACTIVE",
        if with_users { "USER          " } else { "" },
        "TURNS",
        "COST",
        "TOOLS",
    )?;
    let now = now_ms();
    for row in &rows {
        let user = match with_users {
            true => format!(
                "{:<12}  ",
                one_line(row.user_name.as_deref().unwrap_or("(owner)"), 12)
            ),
            false => String::new(),
        };
        let cost = match row.unpriced_calls {
            0 => crate::providers::price::usd(Some(row.cost_usd_micros)),
            n => format!(
                "{} +{n}?",
                crate::providers::price::usd(Some(row.cost_usd_micros))
            ),
        };
        writeln!(
            out,
            "{:<36}  {:>7}  {user}{:>5}  {:>10}  {:<20}  {}",
            row.id,
            age(now - row.updated_at_ms),
            row.turn_count,
            cost,
            one_line(&row.tools.join(","), 20),
            one_line(row.first_prompt.as_deref().unwrap_or("-"), 60),
        )?;
    }
    Ok(())
}

/// A listed thread as JSON (the `threads` tool answers the same shape).
pub fn summary_json(row: &ThreadSummary) -> serde_json::Value {
    json!({
        "continuation_id": row.id,
        "first_prompt": row.first_prompt,
        "tools": row.tools,
        "turns": row.turn_count,
        "user_name": row.user_name,
        "created_at_ms": row.created_at_ms,
        "updated_at_ms": row.updated_at_ms,
        "age_s": (now_ms() - row.updated_at_ms).max(0) / 1000,
        "cost_usd": usd_json(Some(row.cost_usd_micros)),
        "cost_usd_micros": row.cost_usd_micros,
        "unpriced_calls": row.unpriced_calls,
    })
}

/// `exai threads show ID` (Markdown unless asked for JSON) and `exai threads export ID` (JSON
/// unless asked for Markdown): one whole thread; its id's unique first or last characters are
/// enough.
pub fn show(
    config: &crate::config::Config,
    id: &str,
    format: Format,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let store = open_store(config)?;
    let (thread, summary) = load(&store, id)?;
    match format {
        Format::Md => write!(out, "{}", thread.markdown(summary.as_ref()))?,
        Format::Json => write_json(out, &thread.export(summary.as_ref()))?,
    }
    Ok(())
}

/// The thread `id` names (whole, or its unique first or last characters), with its listing.
fn load(store: &StoreReader, id: &str) -> Result<(Thread, Option<ThreadSummary>), CliError> {
    let id = id.trim();
    let row = match store.thread(id)? {
        Some(row) => row,
        None => match store.find_threads_by_fragment(id, None)?.as_slice() {
            [only] => store
                .thread(only)?
                .ok_or_else(|| CliError::UnknownThread(id.into()))?,
            [] => return Err(CliError::UnknownThread(id.into())),
            many => return Err(CliError::AmbiguousThread(id.into(), many.join(", "))),
        },
    };
    let summary = store
        .list_threads(&ThreadFilter {
            id: Some(row.id.clone()),
            limit: 1,
            ..Default::default()
        })?
        .into_iter()
        .next();
    let thread = Thread::from_row(row).map_err(|e| CliError::DamagedThread(e.to_string()))?;
    Ok((thread, summary))
}
