//! clink: another coding agent's CLI (Claude Code, Codex, Gemini CLI, or one the user
//! configures) run as a sub-agent for one task — its configuration, one parser per CLI's event
//! stream, the runner that owns the process group, and the empty directory it runs in.

mod claude;
mod codex;
mod config;
mod gemini;
mod parser;
mod runner;
mod workspace;

pub use config::{
    BUILT_IN_ROLES, CliSection, CliSpec, ClinkSection, Clis, DIRECTORIES, ParserKind, Role,
    RoleSection,
};
pub use parser::{Report, StreamParser, activity_line};
pub use runner::{ClinkError, Finished, Invocation, MAX_LINE_BYTES, run};
pub use workspace::Workspace;
pub use workspace::root as workspace_root;

/// A session id as the CLIs print them (UUIDs, `th_…`): letters, digits, `-` and `_` only, so
/// a stored id can never become a flag or a second argument.
pub fn is_session_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_session_ids_reach_a_command_line() {
        assert!(is_session_id("0199a213-81c0-7800-8aa1-bbab2a035a53"));
        assert!(is_session_id("th_abc"));
        for hostile in [
            "",
            "--dangerously-skip-permissions",
            "a b",
            "x;rm -rf /",
            "id\n--x",
        ] {
            assert!(!is_session_id(hostile), "{hostile:?}");
        }
        assert!(!is_session_id(&"a".repeat(129)));
    }
}
