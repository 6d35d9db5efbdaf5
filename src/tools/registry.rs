//! The registry: every tool exai offers, by name, less those the user disabled.

use std::collections::HashMap;
use std::sync::Arc;

use rmcp::model::Tool;

use super::tool::ExaiTool;
use super::workflow::WorkflowTool;
use super::{
    analyze, call_cancel, call_list, call_result, challenge, chat, clink, codereview, consensus,
    debug, docgen, listmodels, planner, precommit, refactor, secaudit, status, testgen, thinkdeep,
    threads, tracer, version,
};
use crate::config::Config;
use crate::config::settings::{DISABLED_TOOLS, TOOL_MAX_OUTPUT, TOOL_TIMEOUTS};

/// A setting that names tools that do not exist.
#[derive(Debug, thiserror::Error)]
#[error(
    "{setting} names {names}, which {verb} not a tool; the tools are: {tools}",
    names = .unknown.join(", "),
    verb = if .unknown.len() == 1 { "is" } else { "are" },
    tools = .known.join(", ")
)]
pub struct UnknownTools {
    setting: &'static str,
    unknown: Vec<String>,
    known: Vec<String>,
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
            Arc::new(clink::Clink),
            Arc::new(challenge::Challenge),
            Arc::new(call_result::CallResult),
            Arc::new(call_cancel::CallCancel),
            Arc::new(call_list::CallList),
            Arc::new(threads::Threads),
            Arc::new(listmodels::ListModels),
            Arc::new(status::Status),
            Arc::new(version::Version),
        ];
        let (tools, definitions): (Vec<_>, Vec<Tool>) = all
            .into_iter()
            .map(|t| {
                let mut definition = t.definition();
                if t.asks_models() {
                    super::dry_run::declare(&mut definition);
                }
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
    pub fn check_settings(config: &Config) -> Result<(), UnknownTools> {
        let known: Vec<String> = Self::new(&[]).names();
        let named = [
            (DISABLED_TOOLS.var, config.disabled_tools.clone()),
            (
                TOOL_TIMEOUTS.var,
                config.tool_timeouts.keys().cloned().collect(),
            ),
            (
                TOOL_MAX_OUTPUT.var,
                config.tool_max_output.keys().cloned().collect(),
            ),
        ];
        for (setting, names) in named {
            let mut unknown: Vec<String> =
                names.into_iter().filter(|n| !known.contains(n)).collect();
            unknown.sort();
            if !unknown.is_empty() {
                return Err(UnknownTools {
                    setting,
                    unknown,
                    known,
                });
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

    /// The system prompts and guidance texts shipped in the binary, of every tool in the registry.
    #[test]
    fn system_prompts_snapshot() {
        let registry = ToolRegistry::default();
        let mut all = String::new();
        for definition in registry.definitions().iter() {
            let tool = registry.get(&definition.name).unwrap();
            for (name, prompt) in tool.system_prompts() {
                assert!(
                    prompt.len() > 200,
                    "{name}'s prompt is too short to be real"
                );
                all.push_str(&format!("===== {name} =====\n{prompt}\n"));
            }
        }
        insta::assert_snapshot!("system_prompts", all);
    }
}
