//! exai: an MCP server that gives coding agents a team of other models.
//!
//! The modules follow the hops a tool call takes; ARCHITECTURE.md draws the map.

pub mod allocator;
pub mod app;
#[cfg(test)]
mod arbitrary;
pub mod calls;
pub mod cli;
pub mod clients;
pub mod clink;
pub mod config;
pub mod daemon;
pub mod documents;
pub mod files;
pub mod health;
pub mod hex;
pub mod images;
pub mod legacy_tasks;
pub mod local;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod providers;
pub mod replica;
#[cfg(test)]
mod scratch;
pub mod secrets;
pub mod service;
pub mod settings;
pub mod shim;
pub mod spawn;
pub mod stdio;
pub mod store;
pub mod tasks;
pub mod threads;
pub mod tokens;
pub mod tools;
pub mod transport;
pub mod users;

/// The version of this build, as cargo knows it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
