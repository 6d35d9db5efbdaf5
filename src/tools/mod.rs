//! The tools exai offers, one file each, behind one small trait.

mod analyze;
pub mod answer;
mod call_cancel;
mod call_list;
mod call_result;
mod challenge;
mod chat;
mod codereview;
mod consensus;
mod consult;
mod debug;
mod docgen;
mod git;
mod listmodels;
mod planner;
mod precommit;
mod refactor;
mod secaudit;
mod status;
mod testgen;
mod thinkdeep;
mod tracer;
mod version;
mod workflow;

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use rmcp::model::{CallToolResult, JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::calls::{Calls, FailureKind, LiveCall, ToolFailure};
use crate::config::Config;
use crate::health::Health;
use crate::providers::Providers;
use workflow::WorkflowTool;

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
            Arc::new(WorkflowTool::<thinkdeep::ThinkDeep>::new()),
            Arc::new(WorkflowTool::<debug::Debug>::new()),
            Arc::new(WorkflowTool::<analyze::Analyze>::new()),
            Arc::new(WorkflowTool::<codereview::CodeReview>::new()),
            Arc::new(WorkflowTool::<precommit::PreCommit>::new()),
            Arc::new(WorkflowTool::<refactor::Refactor>::new()),
            Arc::new(WorkflowTool::<testgen::TestGen>::new()),
            Arc::new(WorkflowTool::<secaudit::SecAudit>::new()),
            Arc::new(WorkflowTool::<docgen::DocGen>::new()),
            Arc::new(WorkflowTool::<tracer::Tracer>::new()),
            Arc::new(WorkflowTool::<planner::Planner>::new()),
            Arc::new(consensus::Consensus),
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

    /// The settings that name tools (`DISABLED_TOOLS`, `EXAI_TOOL_TIMEOUTS`,
    /// `EXAI_TOOL_MAX_OUTPUT`) name only tools that exist; otherwise, which setting names what.
    pub fn check_settings(config: &crate::config::Config) -> Result<(), String> {
        let known: Vec<String> = Self::new(&[]).names();
        let named = [
            ("DISABLED_TOOLS", config.disabled_tools.clone()),
            (
                "EXAI_TOOL_TIMEOUTS",
                config.tool_timeouts.keys().cloned().collect(),
            ),
            (
                "EXAI_TOOL_MAX_OUTPUT",
                config.tool_max_output.keys().cloned().collect(),
            ),
        ];
        for (setting, names) in named {
            let mut unknown: Vec<&String> = names.iter().filter(|n| !known.contains(n)).collect();
            unknown.sort();
            if !unknown.is_empty() {
                let unknown: Vec<&str> = unknown.iter().map(|n| n.as_str()).collect();
                return Err(format!(
                    "{setting} names {}, which {} not a tool; the tools are: {}",
                    unknown.join(", "),
                    if unknown.len() == 1 { "is" } else { "are" },
                    known.join(", ")
                ));
            }
        }
        Ok(())
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
    Tool::new(name, description, Arc::new(compact_schema::<Args>())).with_annotations(annotations)
}

/// The input schema of `Args`, trimmed of what costs an agent's context and tells it nothing:
/// every tool definition sits in the agent's context for the whole session.
fn compact_schema<Args: JsonSchema>() -> JsonObject {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with(|s| {
        s.meta_schema = None;
        s.inline_subschemas = true;
    });
    let schema = settings
        .with_transform(schemars::transform::RecursiveTransform(compact))
        .into_generator()
        .into_root_schema_for::<Args>();
    let mut object = match schema.to_value() {
        serde_json::Value::Object(object) => object,
        _ => JsonObject::new(),
    };
    // The type's own doc comment is for readers of the code; the tool has its description.
    object.remove("description");
    object
}

/// Drops titles, formats, null defaults, zero minimums and the `null` alternatives of optional
/// fields (they are optional already by not being required).
fn compact(schema: &mut schemars::Schema) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    object.remove("title");
    object.remove("format");
    let empty_default = object.get("default").is_some_and(|d| {
        d.is_null()
            || d.as_str().is_some_and(str::is_empty)
            || d.as_array().is_some_and(Vec::is_empty)
    });
    if empty_default {
        object.remove("default");
    }
    if let Some(serde_json::Value::Array(values)) = object.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
    if object.get("minimum").and_then(serde_json::Value::as_u64) == Some(0) {
        object.remove("minimum");
    }
    if let Some(serde_json::Value::Array(types)) = object.get("type") {
        let kept: Vec<&serde_json::Value> = types.iter().filter(|t| *t != "null").collect();
        if kept.len() == 1 {
            let only = kept[0].clone();
            object.insert("type".into(), only);
        }
    }
    if let Some(serde_json::Value::Array(options)) = object.get("anyOf") {
        let kept: Vec<serde_json::Value> = options
            .iter()
            .filter(|o| o.get("type").is_none_or(|t| t != "null"))
            .cloned()
            .collect();
        if kept.len() == 1
            && let Some(serde_json::Value::Object(inner)) = kept.into_iter().next()
        {
            object.remove("anyOf");
            for (key, value) in inner {
                if key != "description" || !object.contains_key("description") {
                    object.insert(key, value);
                }
            }
            compact(schema);
        }
    }
}

/// Reads a tool's arguments, with an error that says what is wrong with them.
fn parse_arguments<Args: DeserializeOwned>(
    tool: &str,
    arguments: JsonObject,
) -> Result<Args, ToolFailure> {
    serde_json::from_value(serde_json::Value::Object(arguments)).map_err(|e| {
        ToolFailure::new(
            FailureKind::BadArguments,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What agents see of every tool; a change here is a change to every agent's context.
    #[test]
    fn tool_definitions_snapshot() {
        let registry = ToolRegistry::default();
        let text = serde_json::to_string_pretty(&*registry.definitions()).unwrap_or_default();
        insta::assert_snapshot!("tool_definitions", text);
    }

    /// The system prompts and guidance texts shipped in the binary.
    #[test]
    fn system_prompts_snapshot() {
        let prompts = [
            ("chat", chat::SYSTEM_PROMPT),
            (
                "thinkdeep",
                <thinkdeep::ThinkDeep as workflow::Workflow>::PROMPT,
            ),
            ("debug", <debug::Debug as workflow::Workflow>::PROMPT),
            ("analyze", <analyze::Analyze as workflow::Workflow>::PROMPT),
            (
                "codereview",
                <codereview::CodeReview as workflow::Workflow>::PROMPT,
            ),
            (
                "precommit",
                <precommit::PreCommit as workflow::Workflow>::PROMPT,
            ),
            (
                "refactor",
                <refactor::Refactor as workflow::Workflow>::PROMPT,
            ),
            ("testgen", <testgen::TestGen as workflow::Workflow>::PROMPT),
            (
                "secaudit",
                <secaudit::SecAudit as workflow::Workflow>::PROMPT,
            ),
            ("docgen", <docgen::DocGen as workflow::Workflow>::PROMPT),
            ("tracer", <tracer::Tracer as workflow::Workflow>::PROMPT),
            ("planner", <planner::Planner as workflow::Workflow>::PROMPT),
        ];
        let mut all = String::new();
        for (tool, prompt) in prompts {
            assert!(
                prompt.len() > 200,
                "{tool}'s prompt is too short to be real"
            );
            all.push_str(&format!("===== {tool} =====\n{prompt}\n"));
        }
        all.push_str(&consensus::all_prompts());
        insta::assert_snapshot!("system_prompts", all);
    }
}
