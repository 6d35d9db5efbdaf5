//! Conversation memory: threads of turns kept in the store under a continuation id, so a
//! conversation goes on across calls, tools, clients and daemon restarts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError, ThreadRow, ThreadSummary, now_ms};
use crate::tokens;
use crate::users::Caller;

/// One turn of a conversation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Turn {
    /// "user" (the calling agent) or "assistant" (the model).
    pub role: String,
    pub tool: String,
    pub content: String,
    /// Files the turn referred to (embedded afresh when the thread is replayed).
    #[serde(default)]
    pub files: Vec<String>,
    #[serde(default)]
    pub model: Option<String>,
    pub at_ms: i64,
    /// The model's reasoning for this answer, kept where the provider wants it replayed (Kimi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// A workflow step's structured record (workflow tools keep their state here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<serde_json::Value>,
    /// The session of the CLI that answered through `clink`, so the thread resumes it. Kept in
    /// the turn (the thread's JSON), so both stores hold it without a column of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_session: Option<AgentSession>,
}

/// A clink sub-agent's own session: which CLI, the id it gave, where it ran (Claude Code and
/// Gemini CLI find a session by its working directory, so a resume runs there again: the same
/// directory of exai's) and the directories it was handed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSession {
    pub cli: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub directories: Vec<String>,
}

impl Turn {
    /// The tokens this turn takes when replayed: its text, the reasoning that goes back with it
    /// where the provider takes it (`with_reasoning`: Kimi's thinking models take every turn's,
    /// tens of thousands of tokens a turn), and the message's own few.
    pub fn replayed_tokens(&self, with_reasoning: bool) -> usize {
        let reasoning = match (with_reasoning, &self.reasoning) {
            (true, Some(text)) => tokens::count(text),
            _ => 0,
        };
        tokens::count(&self.content) + reasoning + 8
    }

    /// What the calling agent asked (or reported) through `tool`.
    pub fn asked(tool: &str, content: String, files: Vec<String>) -> Self {
        Self {
            role: "user".into(),
            tool: tool.into(),
            content,
            files,
            model: None,
            at_ms: now_ms(),
            reasoning: None,
            step: None,
            agent_session: None,
        }
    }

    /// What a model answered through `tool` (`model` when one model answered).
    pub fn answered(
        tool: &str,
        content: String,
        model: Option<String>,
        reasoning: Option<String>,
    ) -> Self {
        Self {
            role: "assistant".into(),
            tool: tool.into(),
            content,
            files: Vec::new(),
            model,
            at_ms: now_ms(),
            reasoning,
            step: None,
            agent_session: None,
        }
    }
}

/// A conversation.
#[derive(Debug, Clone)]
pub struct Thread {
    pub id: String,
    pub created_at_ms: i64,
    pub turns: Vec<Turn>,
    /// Whose conversation it is (`None`: the machine's owner); it stays theirs when an admin
    /// continues it.
    pub user_name: Option<String>,
    /// What it was first asked (secrets masked, bounded): what it is listed and found by.
    pub first_prompt: Option<String>,
    /// The tools that added turns, in the order they first did.
    pub tools: Vec<String>,
    /// Turns ever added, counting those dropped since.
    pub turn_count: usize,
}

/// Longest first prompt kept for listing and search, in characters.
const FIRST_PROMPT_CHARS: usize = 2_000;

/// `text` as it may be shown outside the conversation: secret-looking values masked.
pub fn shown(text: &str) -> String {
    crate::secrets::redact_text(text, &[])
}

/// The first prompt as kept for listing and search: masked, at most [`FIRST_PROMPT_CHARS`]. Cut
/// (with room for a value running past the cut) before it is masked: a prompt may be a MiB.
fn first_prompt_of(text: &str) -> String {
    let head: String = text.chars().take(FIRST_PROMPT_CHARS * 2).collect();
    shown(&head).chars().take(FIRST_PROMPT_CHARS).collect()
}

/// Why a thread could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ThreadError {
    #[error(
        "continuation_id {0} is unknown: it expired or never existed; start a new conversation without it"
    )]
    Unknown(String),
    #[error("continuation_id {0:?} is not valid (expected a UUID)")]
    Malformed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("thread {id} is damaged: {why}")]
    Damaged { id: String, why: String },
}

/// A new thread's id: a UUIDv8 (RFC 9562's layout of one's own) whose first 32 bits count
/// microseconds, wrapping every 71 minutes, and whose other 90 bits are random. A thread is named
/// by the first characters of its id (`exai threads show 1f3a9c2e`), so they must tell threads
/// apart, which a time-ordered UUIDv7's do not for a minute. Random ids did, but each new one
/// landed on a random page of two indexes (the threads' and the calls' by thread): 36 of the 58
/// pages a commit wrote in the throughput bench. These sort in the order they are made, so a
/// group's new entries share pages.
fn new_thread_id() -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_micros());
    let mut bytes = uuid::Uuid::new_v4().into_bytes();
    // The low 32 bits of the count: they change every microsecond, where its high bits stay the
    // same for over an hour.
    bytes[..4].copy_from_slice(&(micros as u32).to_be_bytes());
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

impl Thread {
    /// A new conversation of `user_name` (`None`: the machine's owner).
    pub fn new(user_name: Option<String>) -> Self {
        Self {
            id: new_thread_id(),
            created_at_ms: now_ms(),
            turns: Vec::new(),
            user_name,
            first_prompt: None,
            tools: Vec::new(),
            turn_count: 0,
        }
    }

    /// Loads a thread from the store. Another user's thread is `Unknown` to `caller`, exactly
    /// like one that never existed.
    pub async fn load(store: &Store, id: &str, caller: &Caller) -> Result<Self, ThreadError> {
        let id = uuid::Uuid::parse_str(id.trim())
            .map_err(|_| ThreadError::Malformed(id.to_string()))?
            .to_string();
        let wanted = id.clone();
        let stored = store.read(move |reader| reader.thread(&wanted)).await;
        // A save the store has not taken yet (an outage) is newer than what it holds, unless
        // another replica saved the thread since.
        let row = match (stored, store.waiting_thread(&id)) {
            (Ok(Some(stored)), Some(waiting)) if stored.updated_at_ms > waiting.updated_at_ms => {
                Some(stored)
            }
            (_, Some(waiting)) => Some(waiting),
            (stored, None) => stored?,
        }
        .filter(|row| caller.may_see(row.user_name.as_deref()))
        .ok_or_else(|| ThreadError::Unknown(id.clone()))?;
        Self::from_row(row)
    }

    /// A thread from its stored row.
    pub fn from_row(row: ThreadRow) -> Result<Self, ThreadError> {
        let turns: Vec<Turn> =
            serde_json::from_str(&row.turns).map_err(|e| ThreadError::Damaged {
                id: row.id.clone(),
                why: e.to_string(),
            })?;
        let tools = row
            .tools
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        Ok(Self {
            // A thread saved before turns were counted counts those it still has.
            turn_count: usize::try_from(row.turn_count)
                .unwrap_or(0)
                .max(turns.len()),
            id: row.id,
            created_at_ms: row.created_at_ms,
            turns,
            user_name: row.user_name,
            first_prompt: row.first_prompt,
            tools,
        })
    }

    /// Adds turns, keeping at most `max_exchanges` exchanges (a user turn and what answered
    /// it; the oldest go first), and saves the thread. Returns how many exchanges were dropped.
    pub async fn append(
        &mut self,
        store: &Store,
        turns: Vec<Turn>,
        max_exchanges: usize,
        ttl: Duration,
    ) -> Result<usize, StoreError> {
        if self.first_prompt.is_none() {
            self.first_prompt = (self.turns.iter().chain(&turns))
                .find(|t| t.role == "user")
                .map(|t| first_prompt_of(&t.content));
        }
        for turn in &turns {
            if !self.tools.contains(&turn.tool) {
                self.tools.push(turn.tool.clone());
            }
        }
        self.turn_count += turns.len();
        self.turns.extend(turns);
        let dropped = self.keep_exchanges(max_exchanges);
        let now = now_ms();
        store
            .save_thread(ThreadRow {
                id: self.id.clone(),
                created_at_ms: self.created_at_ms,
                updated_at_ms: now,
                expires_at_ms: now + ttl.as_millis() as i64,
                turns: serde_json::to_string(&self.turns).unwrap_or_else(|_| "[]".into()),
                user_name: self.user_name.clone(),
                first_prompt: self.first_prompt.clone(),
                tools: self.tools.join(","),
                turn_count: i64::try_from(self.turn_count).unwrap_or(i64::MAX),
            })
            .await?;
        Ok(dropped)
    }

    /// Drops the oldest exchanges beyond `max`; the thread then starts with a user turn.
    fn keep_exchanges(&mut self, max: usize) -> usize {
        let asked: Vec<usize> = (0..self.turns.len())
            .filter(|&i| self.turns[i].role == "user")
            .collect();
        if asked.len() <= max {
            return 0;
        }
        let excess = asked.len() - max;
        self.turns.drain(..asked[excess]);
        excess
    }

    /// The turns to replay within `budget` tokens, oldest first, with how many older turns
    /// were left out.
    ///
    /// The replay starts at a fixed turn for as long as what follows it fits, so each request
    /// of a conversation begins with the bytes of the one before and the providers' prefix
    /// caches hit. Only when the turns outgrow the budget does the start move, and then far
    /// enough to free half of it, where it stays for the next turns. The start is worked out
    /// again from the whole thread each time, so it needs no stored state: the same thread and
    /// budget give the same start.
    pub fn history(&self, budget: usize, with_reasoning: bool) -> (Vec<&Turn>, usize) {
        let costs: Vec<usize> = (self.turns.iter())
            .map(|turn| turn.replayed_tokens(with_reasoning))
            .collect();
        let (mut start, mut used) = (0, 0);
        for (end, cost) in costs.iter().enumerate() {
            used += cost;
            if used > budget {
                while start <= end && used > budget / 2 {
                    used -= costs[start];
                    start += 1;
                }
            }
        }
        // A replay starts with a question: some providers refuse an answer with none before it.
        while start < self.turns.len() && self.turns[start].role != "user" {
            start += 1;
        }
        (self.turns[start..].iter().collect(), start)
    }

    /// The latest session of `cli` a clink turn of this thread kept, to resume it.
    pub fn agent_session(&self, cli: &str) -> Option<&AgentSession> {
        self.turns
            .iter()
            .rev()
            .filter_map(|t| t.agent_session.as_ref())
            .find(|s| s.cli == cli)
    }

    /// Files referenced anywhere in the thread, newest reference first, each once.
    pub fn files(&self) -> Vec<String> {
        let mut seen = Vec::new();
        for turn in self.turns.iter().rev() {
            for file in &turn.files {
                if !seen.contains(file) {
                    seen.push(file.clone());
                }
            }
        }
        seen
    }
}

/// A time for people: `2026-12-02 10:49:10 UTC`.
pub fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// Who wrote a turn, for people.
fn author(turn: &Turn) -> &'static str {
    if turn.role == "assistant" {
        "model"
    } else {
        "agent"
    }
}

impl Thread {
    /// The conversation as Markdown for people: each turn's author, tool, model, time and text,
    /// secret-looking values masked. `summary` adds the last activity and cost.
    pub fn markdown(&self, summary: Option<&ThreadSummary>) -> String {
        let mut out = format!(
            "# Thread {}

",
            self.id
        );
        let mut facts = vec![
            format!(
                "- user: {}",
                self.user_name.as_deref().unwrap_or("(the owner)")
            ),
            format!("- started: {}", when(self.created_at_ms)),
            format!("- tools: {}", self.tools.join(", ")),
            format!(
                "- turns: {} ({} kept)",
                self.turn_count.max(self.turns.len()),
                self.turns.len()
            ),
        ];
        if let Some(summary) = summary {
            facts.push(format!("- last activity: {}", when(summary.updated_at_ms)));
            facts.push(format!("- cost: {}", summary.cost()));
        }
        out.push_str(&facts.join(
            "
",
        ));
        out.push_str(
            "

",
        );
        let dropped = self.turn_count.saturating_sub(self.turns.len());
        if dropped > 0 {
            out.push_str(&format!(
                "_{dropped} older turn(s) were dropped (EXAI_THREAD_MAX_TURNS)._

"
            ));
        }
        for (n, turn) in self.turns.iter().enumerate() {
            let model = turn
                .model
                .as_deref()
                .map(|m| format!(" · {m}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "## {}. {} · {}{model} · {}

",
                n + 1 + dropped,
                author(turn),
                turn.tool,
                when(turn.at_ms)
            ));
            if !turn.files.is_empty() {
                out.push_str(&format!(
                    "Files: {}

",
                    turn.files.join(", ")
                ));
            }
            out.push_str(shown(&turn.content).trim_end());
            out.push_str(
                "

",
            );
        }
        out
    }

    /// The whole conversation as JSON for scripts: every turn with its fields, text masked as
    /// in [`Thread::markdown`], workflow records with secret-named fields redacted.
    pub fn export(&self, summary: Option<&ThreadSummary>) -> serde_json::Value {
        let turns: Vec<serde_json::Value> = self
            .turns
            .iter()
            .map(|turn| {
                serde_json::json!({
                    "role": turn.role,
                    "tool": turn.tool,
                    "model": turn.model,
                    "at": when(turn.at_ms),
                    "at_ms": turn.at_ms,
                    "content": shown(&turn.content),
                    "files": turn.files,
                    "reasoning": turn.reasoning.as_deref().map(shown),
                    "step": turn.step.as_ref().map(crate::calls::redact::redact),
                })
            })
            .collect();
        serde_json::json!({
            "continuation_id": self.id,
            "user_name": self.user_name,
            "created_at": when(self.created_at_ms),
            "created_at_ms": self.created_at_ms,
            "updated_at_ms": summary.map(|s| s.updated_at_ms),
            "expires_at_ms": summary.map(|s| s.expires_at_ms),
            "first_prompt": self.first_prompt,
            "tools": self.tools,
            "turn_count": self.turn_count.max(self.turns.len()),
            "cost_usd_micros": summary.map(|s| s.cost_usd_micros),
            "unpriced_calls": summary.map(|s| s.unpriced_calls),
            "turns": turns,
        })
    }
}

impl ThreadSummary {
    /// What the thread's calls cost, for people: `$0.0123`, `$0.0123 + 2 unpriced call(s)`.
    pub fn cost(&self) -> String {
        let known = crate::providers::price::usd(Some(self.cost_usd_micros));
        match self.unpriced_calls {
            0 => known,
            n => format!("{known} + {n} call(s) of unknown cost"),
        }
    }
}

impl Default for Thread {
    fn default() -> Self {
        Self::new(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_thread_ids_sort_as_they_are_made_and_differ_in_their_first_characters() {
        let ids: Vec<String> = (0..2000).map(|_| new_thread_id()).collect();
        for id in &ids {
            let parsed = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(parsed.get_version_num(), 8, "{id}");
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122, "{id}");
        }
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        // In the order of the microsecond they were made in (ids of the same one in any), but
        // for the one wrap of the count a run may straddle.
        let out_of_order = ids
            .windows(2)
            .filter(|pair| pair[0][..8] > pair[1][..8])
            .count();
        assert!(
            out_of_order <= 1,
            "{out_of_order} ids sorted before the one made earlier"
        );
        // Their first 8 characters change from one microsecond to the next (a UUIDv7's stay the
        // same for a minute): 2,000 ids made back to back take more than one.
        let prefixes: std::collections::HashSet<&str> = ids.iter().map(|id| &id[..8]).collect();
        assert!(
            prefixes.len() > 1,
            "2,000 ids share their first 8 characters"
        );
    }

    fn turn(role: &str, content: &str, files: &[&str]) -> Turn {
        Turn {
            role: role.into(),
            tool: "chat".into(),
            content: content.into(),
            files: files.iter().map(|f| f.to_string()).collect(),
            model: None,
            at_ms: now_ms(),
            reasoning: None,
            step: None,
            agent_session: None,
        }
    }

    #[tokio::test]
    async fn a_thread_survives_a_reload_and_keeps_its_turn_cap() {
        let store = Store::open(&crate::store::tests::test_location()).unwrap();
        let mut thread = Thread::new(Some("ada".into()));
        let mut dropped = Vec::new();
        for i in 0..6 {
            let exchange = vec![
                turn("user", &format!("q{i}"), &["/a.rs"]),
                turn("assistant", &format!("a{i}"), &[]),
            ];
            dropped.push(
                thread
                    .append(&store, exchange, 4, Duration::from_secs(60))
                    .await
                    .unwrap(),
            );
        }
        store.sync().await.unwrap();
        let ada = Caller::User {
            name: "ada".into(),
            admin: false,
        };
        let loaded = Thread::load(&store, &thread.id, &ada).await.unwrap();
        assert_eq!(loaded.user_name.as_deref(), Some("ada"));
        let contents: Vec<_> = loaded.turns.iter().map(|t| t.content.as_str()).collect();
        // The cap counts exchanges (question and answer), not messages.
        assert_eq!(contents, ["q2", "a2", "q3", "a3", "q4", "a4", "q5", "a5"]);
        assert_eq!(dropped, [0, 0, 0, 0, 1, 1]);
        assert!(matches!(
            Thread::load(&store, "01a2132d-05c7-76ba-ab75-235da0d3ad5f", &ada).await,
            Err(ThreadError::Unknown(_))
        ));
        assert!(matches!(
            Thread::load(&store, "nope", &ada).await,
            Err(ThreadError::Malformed(_))
        ));
        // Another user is told it is unknown, as for an id that never existed; the owner sees it.
        let bob = Caller::User {
            name: "bob".into(),
            admin: false,
        };
        let hidden = Thread::load(&store, &thread.id, &bob).await.unwrap_err();
        assert_eq!(
            hidden.to_string(),
            ThreadError::Unknown(thread.id.clone()).to_string()
        );
        assert!(
            Thread::load(&store, &thread.id, &Caller::Owner)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn the_first_prompt_is_kept_masked_and_bounded_and_stays_when_its_turn_is_dropped() {
        let store = Store::open(&crate::store::tests::test_location()).unwrap();
        let mut thread = Thread::new(None);
        let secret = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789";
        let first = format!("deploy with key {secret} {}", "x".repeat(5_000));
        for i in 0..3 {
            let asked = match i {
                0 => first.clone(),
                n => format!("q{n}"),
            };
            let exchange = vec![
                turn("user", &asked, &[]),
                Turn {
                    tool: "thinkdeep".into(),
                    ..turn("assistant", "a", &[])
                },
            ];
            thread
                .append(&store, exchange, 1, Duration::from_secs(60))
                .await
                .unwrap();
        }
        store.sync().await.unwrap();
        let loaded = Thread::load(&store, &thread.id, &Caller::Owner)
            .await
            .unwrap();
        let kept = loaded.first_prompt.clone().unwrap();
        assert!(kept.starts_with("deploy with key "), "{kept}");
        assert!(!kept.contains(secret), "{kept}");
        assert_eq!(kept.chars().count(), FIRST_PROMPT_CHARS);
        assert_eq!(loaded.tools, ["chat", "thinkdeep"]);
        assert_eq!((loaded.turn_count, loaded.turns.len()), (6, 2));
        let shown = loaded.markdown(None);
        assert!(shown.contains("## 5. agent · chat · "), "{shown}");
        assert!(shown.contains("_4 older turn(s) were dropped"), "{shown}");
    }

    #[test]
    fn history_is_chosen_newest_first_and_shown_oldest_first() {
        let thread = Thread {
            turns: vec![
                turn("user", &"old ".repeat(500), &["/x.rs"]),
                turn("assistant", "middle", &[]),
                turn("user", "new", &["/y.rs", "/x.rs"]),
            ],
            ..Thread::default()
        };
        let (turns, left_out) = thread.history(50, false);
        let contents: Vec<_> = turns.iter().map(|t| t.content.as_str()).collect();
        // "middle" fits, but a replay never starts with an answer.
        assert_eq!(contents, ["new"]);
        assert_eq!(left_out, 2);
        assert_eq!(thread.files(), ["/y.rs", "/x.rs"]);
    }

    #[test]
    fn the_reasoning_a_turn_goes_back_with_counts_against_the_history_budget() {
        let mut answer = turn("assistant", "short", &[]);
        answer.reasoning = Some("thinking hard ".repeat(2_000));
        let thread = Thread {
            turns: vec![
                turn("user", "q1", &[]),
                answer,
                turn("user", "q2", &[]),
                turn("assistant", "a2", &[]),
            ],
            ..Thread::default()
        };
        let heavy = thread.turns[1].replayed_tokens(true);
        assert!(heavy > 4_000, "{heavy}");
        // The texts alone fit in 1,000 tokens; with the replayed reasoning they do not.
        let (turns, left_out) = thread.history(1_000, true);
        let contents: Vec<_> = turns.iter().map(|t| t.content.as_str()).collect();
        assert_eq!(contents, ["q2", "a2"]);
        assert_eq!(left_out, 2);
        // To a provider that is not sent the reasoning, it costs nothing.
        assert!(thread.turns[1].replayed_tokens(false) < 20);
        let (turns, left_out) = thread.history(1_000, false);
        assert_eq!((turns.len(), left_out), (4, 0));
    }

    #[test]
    fn the_replay_keeps_its_start_while_the_turns_fit_and_then_jumps_to_free_half() {
        let mut thread = Thread::default();
        // Each turn costs the same: "word" is a token, plus 8 for the message.
        let cost = tokens::count("word") + 8;
        let budget = 6 * cost;
        let mut starts = Vec::new();
        for i in 0..12 {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            thread.turns.push(turn(role, "word", &[]));
            let (turns, left_out) = thread.history(budget, false);
            assert!(turns.len() * cost <= budget, "within the budget");
            assert_eq!(turns.first().unwrap().role, "user");
            starts.push(left_out);
        }
        // Six turns fit from the first; the seventh moves the start to leave half the budget
        // (start 4: turns 4–6), where it stays until the budget is outgrown again (turn 11).
        assert_eq!(starts, [0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 8, 8]);
    }
}
