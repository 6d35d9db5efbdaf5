//! Gemini CLI: `~/.gemini/settings.json`, or `<project>/.gemini/settings.json`; the entry's
//! `timeout` (milliseconds) is how long it waits for a tool.

use super::json::{JsonClient, Shape};

pub const GEMINI_CLI: JsonClient = JsonClient {
    id: "gemini",
    name: "Gemini CLI",
    program: "gemini",
    dir: ".gemini",
    file: "settings.json",
    project_scope: true,
    shape: Shape {
        timeout_ms: true,
        ..Shape::PLAIN
    },
};
