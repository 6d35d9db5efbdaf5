//! The kind of failure a call ended with, as a type that keeps its stored word (`as_str`), which
//! logs, `exai calls` and `--json` show unchanged. (The record's other words — state, transport,
//! delivery — are types of the store row, re-exported here where the call path wants them.)

use serde::Serialize;

pub use crate::store::TransportKind;

/// Why a call failed, as stored in its record's `error_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The arguments did not fit the tool's schema or rules.
    BadArguments,
    /// No tool of that name.
    UnknownTool,
    /// A 2025-11-25 task asked of a tool that does not run as one.
    TaskNotSupported,
    /// The tool's result was marked as an error (a relayed or attached answer).
    ToolError,
    /// The call's own deadline passed.
    Deadline,
    Cancelled,
    /// The daemon shut down before the call ended.
    Interrupted,
    /// The store (calls, threads) could not be read or written.
    Store,
    /// `call_result` and kin: no such call (or its result expired).
    UnknownCall,
    /// No conversation thread under that continuation id.
    UnknownThread,
    /// No model could be chosen.
    NoModel,
    /// Every model of a consensus failed.
    AllModelsFailed,
    /// Reading the repository failed (precommit).
    Git,
    /// exai's own machinery failed (a blocking task died).
    Internal,
    /// A dry run stopped a question once its request was built (never sent).
    DryRun,
    /// The person already has as many calls in flight as they may (`EXAI_USER_MAX_CALLS`).
    TooManyCalls,
    /// A provider's failure, in the provider's own word (`provider_http_error`, …).
    Provider(&'static str),
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::BadArguments => "bad_arguments",
            FailureKind::UnknownTool => "unknown_tool",
            FailureKind::TaskNotSupported => "task_not_supported",
            FailureKind::ToolError => "tool_error",
            FailureKind::Deadline => "deadline",
            FailureKind::Cancelled => "cancelled",
            FailureKind::Interrupted => "interrupted",
            FailureKind::Store => "store",
            FailureKind::UnknownCall => "unknown_call",
            FailureKind::UnknownThread => "unknown_thread",
            FailureKind::NoModel => "no_model",
            FailureKind::AllModelsFailed => "all_models_failed",
            FailureKind::Git => "git",
            FailureKind::Internal => "internal",
            FailureKind::DryRun => "dry_run",
            FailureKind::TooManyCalls => "too_many_calls",
            FailureKind::Provider(word) => word,
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl Serialize for FailureKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_keep_their_stored_words() {
        assert_eq!(FailureKind::BadArguments.to_string(), "bad_arguments");
        assert_eq!(
            serde_json::to_value(FailureKind::Provider("provider_auth")).unwrap(),
            "provider_auth"
        );
        assert_eq!(serde_json::to_value(TransportKind::Ws).unwrap(), "ws");
        assert_eq!(format!("{:<6}|", TransportKind::Http), "http  |");
        assert!(TransportKind::Stdio.reports_delivery() && !TransportKind::Http.reports_delivery());
    }
}
