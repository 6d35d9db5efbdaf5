//! Conversation memory: threads of turns kept in the store under a continuation id, so a
//! conversation goes on across calls, tools, clients and daemon restarts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError, ThreadRow, now_ms};
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

/// A clink sub-agent's own session: which CLI, the id it gave, and where it ran (Claude Code
/// finds a session by its working directory, so a resume runs there again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSession {
    pub cli: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

impl Turn {
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

impl Thread {
    /// A new conversation of `user_name` (`None`: the machine's owner).
    pub fn new(user_name: Option<String>) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            created_at_ms: now_ms(),
            turns: Vec::new(),
            user_name,
        }
    }

    /// Loads a thread from the store. Another user's thread is `Unknown` to `caller`, exactly
    /// like one that never existed.
    pub async fn load(store: &Store, id: &str, caller: &Caller) -> Result<Self, ThreadError> {
        let id = uuid::Uuid::parse_str(id.trim())
            .map_err(|_| ThreadError::Malformed(id.to_string()))?
            .to_string();
        let wanted = id.clone();
        let row = store
            .read(move |reader| reader.thread(&wanted))
            .await?
            .filter(|row| caller.may_see(row.user_name.as_deref()))
            .ok_or_else(|| ThreadError::Unknown(id.clone()))?;
        let turns = serde_json::from_str(&row.turns).map_err(|e| ThreadError::Damaged {
            id: id.clone(),
            why: e.to_string(),
        })?;
        Ok(Self {
            id,
            created_at_ms: row.created_at_ms,
            turns,
            user_name: row.user_name,
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

    /// The turns to replay within `budget` tokens: chosen newest first, returned oldest first,
    /// with how many older turns did not fit.
    pub fn history(&self, budget: usize) -> (Vec<&Turn>, usize) {
        let mut chosen = Vec::new();
        let mut used = 0;
        for turn in self.turns.iter().rev() {
            let cost = tokens::count(&turn.content) + 8;
            if used + cost > budget {
                break;
            }
            used += cost;
            chosen.push(turn);
        }
        chosen.reverse();
        // A replay starts with a question: some providers refuse an answer with none before it.
        let answers_first = chosen.iter().take_while(|t| t.role != "user").count();
        chosen.drain(..answers_first);
        let left_out = self.turns.len() - chosen.len();
        (chosen, left_out)
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

impl Default for Thread {
    fn default() -> Self {
        Self::new(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let (turns, left_out) = thread.history(50);
        let contents: Vec<_> = turns.iter().map(|t| t.content.as_str()).collect();
        // "middle" fits, but a replay never starts with an answer.
        assert_eq!(contents, ["new"]);
        assert_eq!(left_out, 2);
        assert_eq!(thread.files(), ["/y.rs", "/x.rs"]);
    }
}
