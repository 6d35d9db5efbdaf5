//! The integration tests, one binary so the suite links once: each module drives the real
//! `exai` binary (and the fake provider) as processes, through real MCP clients.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    // Test tasks carry no call's span: plain spawns are fine here.
    clippy::disallowed_methods
)]

mod common;

mod arguments_property;
mod background;
mod call_path;
mod clink;
mod conversations;
mod cost;
mod daemon;
mod doctor;
mod documents;
mod dry_run;
mod hostile_calls;
mod hostile_files;
mod hostile_repo;
mod hostile_shim;
mod keys;
mod live_providers;
mod metrics;
mod page;
mod postgres_harness;
mod prompt_cache;
mod prompts;
mod provider_fidelity;
mod provider_requests;
mod providers;
mod readme;
mod reload;
mod replicas;
mod setup;
mod shared_limits;
mod store_outage;
mod team;
mod terminal;
mod threads;
mod users;
mod workflows;
