//! Cursor: `~/.cursor/mcp.json`, or `<project>/.cursor/mcp.json`; no tool timeout of its own.

use super::json::{JsonClient, Shape};

pub const CURSOR: JsonClient = JsonClient {
    id: "cursor",
    name: "Cursor",
    program: "cursor",
    dir: ".cursor",
    file: "mcp.json",
    project_scope: true,
    shape: Shape::PLAIN,
};
