//! What a tool is: the trait every tool implements, what it may use while it runs, its
//! definition (the input schema trimmed for an agent's context) and its arguments' parsing.

use std::sync::Arc;

use futures::future::BoxFuture;
use rmcp::model::{CallToolResult, JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::calls::{Calls, FailureKind, LiveCall, ToolFailure};
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
    /// Set for a dry run: model requests are recorded here instead of being sent.
    pub dry_run: Option<Arc<super::dry_run::DryRun>>,
}

impl ToolContext {
    /// Which files on this machine the call may read: the owner's policy, or a team member's
    /// (a personal token), who reads only below the allowed roots.
    pub fn file_policy(&self) -> crate::files::Policy {
        match self.call.origin.caller {
            crate::users::Caller::Owner => crate::files::Policy::of(&self.config),
            crate::users::Caller::User { .. } => crate::files::Policy::confined(&self.config),
        }
    }
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
    /// Whether it asks a model, so `dry_run` applies: the tools that may run long are those.
    fn asks_models(&self) -> bool {
        self.may_run_long()
    }
    /// The system prompts it ships, by name (snapshot-tested).
    fn system_prompts(&self) -> Vec<(&'static str, &'static str)> {
        Vec::new()
    }
}

/// Builds a tool definition whose input schema comes from `Args`.
pub(super) fn definition<Args: JsonSchema + 'static>(
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
pub(super) fn parse_arguments<Args: DeserializeOwned>(
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

/// A tool's own answer (`what`) as JSON; failing is exai's fault, said as such.
pub(super) fn to_json(
    what: &str,
    value: &impl serde::Serialize,
) -> Result<serde_json::Value, ToolFailure> {
    serde_json::to_value(value).map_err(|e| {
        ToolFailure::new(
            FailureKind::Internal,
            format!("the {what} could not be written: {e}"),
        )
    })
}

/// Arguments of a tool that takes none.
#[derive(Debug, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NoArguments {}

/// Annotations of a tool that only reads local state.
pub(super) fn local_read_only() -> ToolAnnotations {
    ToolAnnotations::new().read_only(true).open_world(false)
}
