//! The tools exai offers, one file each, behind one small trait.

mod call_cancel;
mod call_list;
mod call_result;
mod challenge;
mod chat;
mod listmodels;
mod status;
mod version;

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use rmcp::model::{CallToolResult, JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::calls::{Calls, LiveCall, ToolFailure};
use crate::config::Config;
use crate::health::Health;
use crate::providers::Providers;

/// What a tool may use while it runs.
#[derive(Clone)]
pub struct ToolContext {
    pub call: Arc<LiveCall>,
    pub calls: Arc<Calls>,
    pub providers: Arc<Providers>,
    pub health: Arc<Health>,
    pub config: Arc<Config>,
    /// When the client stops waiting (less a margin): a tool that waits must answer by then.
    pub answer_by: Option<std::time::Instant>,
}

/// The result of running a tool.
pub type ToolFuture = BoxFuture<'static, Result<CallToolResult, ToolFailure>>;

/// One tool.
pub trait ExaiTool: Send + Sync {
    /// Its MCP definition (name, description, input schema, annotations).
    fn definition(&self) -> Tool;
    /// Runs it; the caller bounds the future by the call's deadline and cancel token.
    fn run(&self, arguments: JsonObject, context: ToolContext) -> ToolFuture;
    /// Whether a call may take long enough to be worth a task for clients that use tasks.
    fn may_run_long(&self) -> bool {
        false
    }
}

/// All tools, by name.
pub struct ToolRegistry {
    by_name: HashMap<String, Arc<dyn ExaiTool>>,
    definitions: Arc<Vec<Tool>>,
}

impl ToolRegistry {
    /// Every tool but those named in `disabled`.
    pub fn new(disabled: &[String]) -> Self {
        let all: Vec<Arc<dyn ExaiTool>> = vec![
            Arc::new(chat::Chat),
            Arc::new(challenge::Challenge),
            Arc::new(call_result::CallResult),
            Arc::new(call_cancel::CallCancel),
            Arc::new(call_list::CallList),
            Arc::new(listmodels::ListModels),
            Arc::new(status::Status),
            Arc::new(version::Version),
        ];
        let (tools, definitions): (Vec<_>, Vec<Tool>) = all
            .into_iter()
            .map(|t| {
                let definition = t.definition();
                (t, definition)
            })
            .filter(|(_, d)| !disabled.iter().any(|name| name == d.name.as_ref()))
            .unzip();
        let by_name = definitions
            .iter()
            .zip(tools)
            .map(|(d, t)| (d.name.to_string(), t))
            .collect();
        Self {
            by_name,
            definitions: Arc::new(definitions),
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn ExaiTool>> {
        self.by_name.get(name).cloned()
    }

    pub fn definitions(&self) -> Arc<Vec<Tool>> {
        self.definitions.clone()
    }

    /// The tools that may run long, so clients may run them as tasks.
    pub fn task_capable(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .by_name
            .iter()
            .filter(|(_, tool)| tool.may_run_long())
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.by_name.keys().cloned().collect();
        names.sort();
        names
    }
}

impl Default for ToolRegistry {
    fn default() -> Self {
        Self::new(&[])
    }
}

/// Builds a tool definition whose input schema comes from `Args`.
fn definition<Args: JsonSchema + 'static>(
    name: &'static str,
    description: &'static str,
    annotations: ToolAnnotations,
) -> Tool {
    Tool::new(
        name,
        description,
        rmcp::handler::server::common::schema_for_type::<Args>(),
    )
    .with_annotations(annotations)
}

/// Reads a tool's arguments, with an error that says what is wrong with them.
fn parse_arguments<Args: DeserializeOwned>(
    tool: &str,
    arguments: JsonObject,
) -> Result<Args, ToolFailure> {
    serde_json::from_value(serde_json::Value::Object(arguments)).map_err(|e| {
        ToolFailure::new(
            "bad_arguments",
            format!("invalid arguments for {tool}: {e}"),
        )
    })
}

/// Arguments of a tool that takes none.
#[derive(Debug, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoArguments {}

/// Annotations of a tool that only reads local state.
fn local_read_only() -> ToolAnnotations {
    ToolAnnotations::new().read_only(true).open_world(false)
}
