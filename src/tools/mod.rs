//! The tools exai offers, one file each, behind one small trait (`tool.rs`), listed in the
//! registry (`registry.rs`).

mod analyze;
pub mod answer;
mod call_cancel;
mod call_list;
mod call_result;
mod challenge;
mod chat;
pub(crate) mod clink;
mod codereview;
mod consensus;
mod consult;
mod debug;
mod docgen;
pub mod dry_run;
mod extract;
mod git;
mod listmodels;
mod planner;
mod precommit;
mod refactor;
mod secaudit;
pub mod slash;
mod status;
mod testgen;
mod thinkdeep;
mod threads;
mod tracer;
mod version;
mod workflow;

mod registry;
mod tool;

pub use registry::{ToolRegistry, UnknownTools};
pub use tool::{ExaiTool, ToolContext, ToolFuture};
use tool::{NoArguments, definition, local_read_only, parse_arguments};
