//! The step protocol of the workflow tools (thinkdeep, debug, codereview, …): the calling agent
//! investigates between steps with its own tools, exai keeps every step in the conversation
//! thread (never on a shared object), and at the last step asks the expert model once with
//! everything gathered and the relevant files embedded.

use std::marker::PhantomData;

use futures::future::BoxFuture;
use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::consult::{self, Question};
use super::{ExaiTool, ToolContext, ToolFuture, definition, parse_arguments};
use crate::calls::{FailureKind, ToolFailure};
use crate::files;
use crate::providers::Need;
use crate::threads::{Thread, Turn};

/// Confidence levels of most workflows, weakest first.
pub const CONFIDENCE: &[&str] = &[
    "exploring",
    "low",
    "medium",
    "high",
    "very_high",
    "almost_certain",
    "certain",
];

// How bad an issue is (a plain comment: doc comments become schema text).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    High,
    Medium,
    Low,
}

// An issue the agent found.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct IssueFound {
    pub severity: Severity,
    pub description: String,
    /// Anything else the agent attached (location, file, …) is kept.
    #[serde(flatten)]
    #[schemars(skip)]
    pub more: serde_json::Map<String, Value>,
}

fn yes() -> bool {
    true
}

/// What a step reports (names as Zen/PAL clients send them); kept in the thread as sent.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    /// Step 1: the task. Later: what you did and plan next.
    pub step: String,
    /// This step's number, from 1.
    #[schemars(range(min = 1))]
    pub step_number: u32,
    /// Your estimate of the steps needed (may grow).
    #[schemars(range(min = 1))]
    pub total_steps: u32,
    /// false on the last step.
    pub next_step_required: bool,
    /// What this step established (evidence).
    #[serde(default)]
    pub findings: String,
    /// Absolute paths of files examined.
    #[serde(default)]
    pub files_checked: Vec<String>,
    /// Absolute paths of the files that matter (shown to the expert).
    #[serde(default)]
    pub relevant_files: Vec<String>,
    /// Functions or methods involved.
    #[serde(default)]
    pub relevant_context: Vec<String>,
    /// Issues found so far.
    #[serde(default)]
    pub issues_found: Vec<IssueFound>,
    /// Images for the expert (absolute paths or data URLs).
    #[serde(default)]
    pub images: Vec<String>,
    /// exploring, low, medium, high, very_high, almost_certain, certain (refactor: exploring, incomplete, partial, complete).
    #[serde(default)]
    pub confidence: Option<String>,
    /// Your current theory.
    #[serde(default)]
    pub hypothesis: Option<String>,
    /// Discard steps from this number on.
    #[serde(default)]
    pub backtrack_from_step: Option<u32>,
}

/// A workflow tool's arguments: the step's report, how to finish, and the tool's own fields.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct StepArguments<Extra> {
    #[serde(flatten)]
    pub report: Report,
    /// false: finish without the expert.
    #[serde(default = "yes")]
    pub use_assistant_model: bool,
    /// From step 1's answer; needed from step 2.
    #[serde(default)]
    pub continuation_id: Option<String>,
    /// Expert model (id, alias or provider:model).
    #[serde(default)]
    pub model: Option<String>,
    /// Expert temperature (0–2).
    #[serde(default)]
    pub temperature: Option<f32>,
    /// minimal, low, medium, high or max.
    #[serde(default)]
    pub thinking_mode: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One step as kept in the thread: its report and the tool's own fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    #[serde(flatten)]
    pub report: Report,
    #[serde(default)]
    pub extra: Value,
}

/// The workflow so far: this tool's steps in the thread since its last step 1, with
/// backtracked steps removed.
#[derive(Debug, Default)]
pub struct Steps {
    pub steps: Vec<StepRecord>,
}

fn union<'a>(lists: impl Iterator<Item = &'a Vec<String>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in lists.flatten() {
        if !out.contains(item) {
            out.push(item.clone());
        }
    }
    out
}

impl Steps {
    /// This tool's steps in `thread`.
    pub fn of(thread: &Thread, tool: &str) -> Self {
        let records: Vec<StepRecord> = thread
            .turns
            .iter()
            .filter(|t| t.tool == tool)
            .filter_map(|t| t.step.clone())
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect();
        let start = records
            .iter()
            .rposition(|r| r.report.step_number == 1)
            .unwrap_or(0);
        let mut steps = Self::default();
        for record in records.into_iter().skip(start) {
            steps.push(record);
        }
        steps
    }

    /// Adds a step, first dropping the steps it backtracks from.
    pub fn push(&mut self, record: StepRecord) {
        if let Some(from) = record.report.backtrack_from_step {
            self.steps.retain(|s| s.report.step_number < from);
        }
        // A repeated step number replaces the earlier one (the agent redid it).
        self.steps
            .retain(|s| s.report.step_number != record.report.step_number);
        self.steps.push(record);
    }

    pub fn initial_request(&self) -> &str {
        self.steps
            .first()
            .map(|s| s.report.step.as_str())
            .unwrap_or("")
    }
    pub fn files_checked(&self) -> Vec<String> {
        union(self.steps.iter().map(|s| &s.report.files_checked))
    }
    pub fn relevant_files(&self) -> Vec<String> {
        union(self.steps.iter().map(|s| &s.report.relevant_files))
    }
    pub fn images(&self) -> Vec<String> {
        union(self.steps.iter().map(|s| &s.report.images))
    }
    pub fn relevant_context(&self) -> Vec<String> {
        union(self.steps.iter().map(|s| &s.report.relevant_context))
    }
    pub fn issues(&self) -> Vec<&IssueFound> {
        let mut out: Vec<&IssueFound> = Vec::new();
        for issue in self.steps.iter().flat_map(|s| &s.report.issues_found) {
            if !out.iter().any(|i| i.description == issue.description) {
                out.push(issue);
            }
        }
        out
    }
    pub fn confidence(&self) -> Option<&str> {
        self.steps
            .iter()
            .rev()
            .find_map(|s| s.report.confidence.as_deref())
    }
    /// The latest value the agent gave for one of the tool's own fields.
    pub fn extra(&self, field: &str) -> Option<&Value> {
        self.steps
            .iter()
            .rev()
            .find_map(|s| s.extra.get(field).filter(|v| !v.is_null()))
    }
    pub fn hypotheses(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s.report.hypothesis.is_some())
            .count()
    }
}

/// Whether the last step asks the expert model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expert {
    /// Unless the agent is sure (its confidence is the tool's `SURE` level).
    UnlessSure,
    /// Never: the tool guides the agent's own work (planner, tracer, docgen).
    Never,
}

/// What the agent is told to do before the next step.
pub struct Actions {
    pub first: &'static [&'static str],
    pub middle: &'static [&'static str],
    pub closing: &'static [&'static str],
}

/// What exai found out itself (precommit reads the repository).
#[derive(Debug, Default)]
pub struct Gathered {
    /// Shown to the agent in the step's answer.
    pub summary: Option<Value>,
    /// Given to the expert model.
    pub brief: Option<String>,
    pub notes: Vec<String>,
}

/// One workflow tool: its words, fields and hooks; the engine does the rest.
pub trait Workflow: Send + Sync + 'static {
    type Extra: DeserializeOwned + Serialize + JsonSchema + Send + Sync + 'static;
    const NAME: &'static str;
    const DESCRIPTION: &'static str;
    /// The expert's system prompt, or (for `Expert::Never`) guidance for the agent.
    const PROMPT: &'static str;
    /// Status of an intermediate step, e.g. `pause_for_investigation`.
    const PAUSE: &'static str;
    /// Status of a last step the expert did not take part in.
    const COMPLETE: &'static str;
    const EXPERT: Expert = Expert::UnlessSure;
    const CONFIDENCE: &'static [&'static str] = CONFIDENCE;
    /// The confidence that skips the expert.
    const SURE: &'static str = "certain";
    /// Step 1 must name the files (codereview, analyze, …).
    const FILES_AT_START: bool = false;
    const ACTIONS: Actions;

    /// Checks the tool's own fields. `Ok(Some(answer))` answers the step without recording it.
    fn check(_args: &StepArguments<Self::Extra>, _steps: &Steps) -> Result<Option<Value>, String> {
        Ok(None)
    }
    /// A reason, from the tool's own fields, not to ask the expert.
    fn skip_expert(_steps: &Steps) -> Option<String> {
        None
    }
    /// Tool-specific sections for the expert (review type, focus, …).
    fn brief(_steps: &Steps) -> Vec<String> {
        Vec::new()
    }
    /// Work exai does itself at a step (`last` is the final step).
    fn gather(
        _ctx: &ToolContext,
        _steps: &Steps,
        _last: bool,
    ) -> BoxFuture<'static, Result<Gathered, ToolFailure>> {
        Box::pin(async { Ok(Gathered::default()) })
    }
}

/// The MCP tool for workflow `W`.
pub struct WorkflowTool<W>(PhantomData<W>);

impl<W> WorkflowTool<W> {
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

fn bad(tool: &str, message: impl std::fmt::Display) -> ToolFailure {
    ToolFailure::new(
        FailureKind::BadArguments,
        format!("invalid arguments for {tool}: {message}"),
    )
}

impl<W: Workflow> ExaiTool for WorkflowTool<W> {
    fn definition(&self) -> Tool {
        let annotations = match W::EXPERT {
            Expert::Never => ToolAnnotations::new().read_only(true).open_world(false),
            Expert::UnlessSure => ToolAnnotations::new().read_only(true).open_world(true),
        };
        definition::<StepArguments<W::Extra>>(W::NAME, W::DESCRIPTION, annotations)
    }

    fn may_run_long(&self) -> bool {
        W::EXPERT != Expert::Never
    }

    fn run(&self, arguments: JsonObject, ctx: ToolContext) -> ToolFuture {
        Box::pin(run::<W>(arguments, ctx))
    }
}

/// Checks the common fields; returns notes about what was adjusted.
fn check_common<W: Workflow>(
    args: &mut StepArguments<W::Extra>,
    ctx: &ToolContext,
) -> Result<Vec<String>, ToolFailure> {
    let tool = W::NAME;
    let mut notes = Vec::new();
    if args.report.step_number == 0 {
        return Err(bad(tool, "step_number starts at 1"));
    }
    if args.report.total_steps == 0 {
        return Err(bad(tool, "total_steps must be 1 or more"));
    }
    if args.report.total_steps < args.report.step_number {
        notes.push(format!(
            "total_steps was {}, below step_number {}; taken as {}.",
            args.report.total_steps, args.report.step_number, args.report.step_number
        ));
        args.report.total_steps = args.report.step_number;
    }
    if args.report.step.trim().is_empty() {
        return Err(bad(tool, "`step` is empty; describe the task or this step"));
    }
    if args.report.step_number > 1 && args.continuation_id.is_none() {
        return Err(bad(
            tool,
            format!(
                "step {} needs the continuation_id that step 1 returned",
                args.report.step_number
            ),
        ));
    }
    if let Some(from) = args.report.backtrack_from_step
        && (from == 0 || from >= args.report.step_number)
    {
        return Err(bad(
            tool,
            format!(
                "backtrack_from_step {from} must name an earlier step (1–{})",
                args.report.step_number.saturating_sub(1)
            ),
        ));
    }
    if let Some(level) = &args.report.confidence
        && !W::CONFIDENCE.contains(&level.as_str())
    {
        return Err(bad(
            tool,
            format!(
                "confidence {level:?} is not one of {}",
                W::CONFIDENCE.join(", ")
            ),
        ));
    }
    if let Some(complaint) = consult::relative_path(
        args.report
            .files_checked
            .iter()
            .chain(&args.report.relevant_files),
    ) {
        return Err(bad(tool, complaint));
    }
    consult::check_temperature(args.temperature).map_err(|m| bad(tool, m))?;
    consult::thinking_of(args.thinking_mode.as_deref()).map_err(|m| bad(tool, m))?;
    if W::FILES_AT_START && args.report.step_number == 1 && args.report.relevant_files.is_empty() {
        return Err(bad(
            tool,
            "step 1 needs relevant_files: the absolute paths of the files or directories to look at",
        ));
    }
    if let Some(model) = &args.model {
        consult::choose(ctx, Some(model), Need::Deep)?;
    }
    Ok(notes)
}

fn record_of<E: Serialize>(args: &StepArguments<E>) -> StepRecord {
    StepRecord {
        report: args.report.clone(),
        extra: serde_json::to_value(&args.extra).unwrap_or(Value::Null),
    }
}

/// The tally of what the workflow has gathered.
fn tally(steps: &Steps) -> Value {
    json!({
        "steps_recorded": steps.steps.len(),
        "files_checked": steps.files_checked().len(),
        "relevant_files": steps.relevant_files().len(),
        "relevant_context": steps.relevant_context().len(),
        "issues_found": steps.issues().len(),
        "hypotheses": steps.hypotheses(),
        "confidence": steps.confidence().unwrap_or("exploring"),
    })
}

fn required_actions<W: Workflow>(args: &StepArguments<W::Extra>) -> &'static [&'static str] {
    let closing = matches!(
        args.report.confidence.as_deref(),
        Some("very_high" | "almost_certain" | "partial")
    ) || args.report.step_number + 1 >= args.report.total_steps;
    if args.report.step_number == 1 {
        W::ACTIONS.first
    } else if closing {
        W::ACTIONS.closing
    } else {
        W::ACTIONS.middle
    }
}

/// The expert's question: the whole investigation in sections.
fn expert_prompt<W: Workflow>(steps: &Steps, gathered: &Gathered) -> String {
    let mut out = format!(
        "The agent ran a {} workflow in {} step(s) and asks for your analysis.\n\n## Task\n{}\n\n## Investigation\n",
        W::NAME,
        steps.steps.len(),
        steps.initial_request()
    );
    for s in &steps.steps {
        out.push_str(&format!("### Step {}", s.report.step_number));
        if let Some(c) = &s.report.confidence {
            out.push_str(&format!(" (confidence: {c})"));
        }
        out.push('\n');
        if s.report.step_number > 1 {
            out.push_str(&s.report.step);
            out.push('\n');
        }
        if !s.report.findings.trim().is_empty() {
            out.push_str(&format!("Findings: {}\n", s.report.findings));
        }
        if let Some(h) = &s.report.hypothesis {
            out.push_str(&format!("Hypothesis: {h}\n"));
        }
        out.push('\n');
    }
    let issues = steps.issues();
    if !issues.is_empty() {
        out.push_str("## Issues found so far\n");
        for i in issues {
            let severity = serde_json::to_value(i.severity)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            out.push_str(&format!("- [{severity}] {}\n", i.description));
        }
        out.push('\n');
    }
    let context = steps.relevant_context();
    if !context.is_empty() {
        out.push_str(&format!(
            "## Code the agent points to\n{}\n\n",
            context.join(", ")
        ));
    }
    let checked = steps.files_checked();
    if !checked.is_empty() {
        out.push_str(&format!("## Files examined\n{}\n\n", checked.join("\n")));
    }
    for section in W::brief(steps) {
        out.push_str(&section);
        out.push_str("\n\n");
    }
    if let Some(brief) = &gathered.brief {
        out.push_str(brief);
        out.push_str("\n\n");
    }
    out.push_str("Give your analysis in the format your instructions describe.");
    out
}

fn step_turn(tool: &str, record: &StepRecord) -> Turn {
    let mut content = format!(
        "{tool} step {}/{}: {}",
        record.report.step_number, record.report.total_steps, record.report.step
    );
    if !record.report.findings.trim().is_empty() {
        content.push_str(&format!("\nFindings: {}", record.report.findings));
    }
    Turn {
        step: serde_json::to_value(record).ok(),
        ..Turn::asked(tool, content, record.report.relevant_files.clone())
    }
}

fn json_block(value: &Value) -> ContentBlock {
    ContentBlock::text(serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()))
}

/// An intermediate step's answer: pause, the actions to take, how to call again.
fn pause<W: Workflow>(args: &StepArguments<W::Extra>, thread_id: &str, answer: &mut Value) {
    answer["status"] = Value::String(W::PAUSE.into());
    answer["required_actions"] = json!(required_actions::<W>(args));
    let finish = match W::EXPERT {
        Expert::UnlessSure if args.use_assistant_model => {
            "; exai then asks the expert model once, with everything gathered and the relevant files"
        }
        _ => "",
    };
    answer["next_steps"] = Value::String(format!(
        "Do not call {tool} again yet. First do the required actions with your own tools \
         (read the code, run commands). Then call {tool} with step_number {next}, \
         continuation_id \"{thread_id}\", what you established in findings, and the files you \
         examined. Set next_step_required to false on your last step{finish}.",
        tool = W::NAME,
        next = args.report.step_number + 1,
    ));
}

/// What the whole workflow gathered, for the last step's answer.
fn summary(steps: &Steps) -> Value {
    json!({
        "initial_request": steps.initial_request(),
        "steps_taken": steps.steps.len(),
        "files_checked": steps.files_checked(),
        "relevant_files": steps.relevant_files(),
        "relevant_context": steps.relevant_context(),
        "issues_found": steps.issues(),
        "confidence": steps.confidence(),
        "steps": steps.steps.iter().map(|s| json!({
            "step_number": s.report.step_number,
            "step": s.report.step,
            "findings": s.report.findings,
        })).collect::<Vec<_>>(),
    })
}

/// Why the last step finishes without the expert, if it does.
fn skip_reason<W: Workflow>(args: &StepArguments<W::Extra>, steps: &Steps) -> Option<String> {
    if !args.use_assistant_model {
        Some("use_assistant_model is false".to_string())
    } else if W::EXPERT == Expert::Never {
        Some(format!("{} does not ask a model", W::NAME))
    } else if steps.confidence() == Some(W::SURE) {
        Some(format!("confidence is {}", W::SURE))
    } else {
        W::skip_expert(steps)
    }
}

/// The one expert call of a workflow, streaming, with the relevant files and images.
async fn ask_expert<W: Workflow>(
    ctx: &ToolContext,
    args: &StepArguments<W::Extra>,
    steps: &Steps,
    gathered: &Gathered,
) -> Result<consult::Answer, ToolFailure> {
    let target = consult::choose(ctx, args.model.as_deref(), Need::Deep)?;
    ctx.call
        .progress
        .set_stage(format!("asking {} for expert analysis", target.model.id));
    let prompt = expert_prompt::<W>(steps, gathered);
    consult::ask_and_record(
        ctx,
        target,
        Question {
            system: W::PROMPT,
            prompt: &prompt,
            files: steps.relevant_files(),
            thread: None,
            temperature: args.temperature,
            thinking: consult::thinking_of(args.thinking_mode.as_deref()).unwrap_or(None),
            web_search: false,
            images: steps.images(),
        },
    )
    .await
}

async fn run<W: Workflow>(
    arguments: JsonObject,
    ctx: ToolContext,
) -> Result<CallToolResult, ToolFailure> {
    let mut args: StepArguments<W::Extra> = parse_arguments(W::NAME, arguments)?;
    if let Some(answer) = consult::too_long(&ctx, W::NAME, "step", &args.report.step) {
        return Ok(answer);
    }
    let mut notes = check_common::<W>(&mut args, &ctx)?;
    let mut thread = consult::thread(&ctx, args.continuation_id.as_deref()).await?;
    let mut steps = Steps::of(&thread, W::NAME);
    if args.report.step_number > 1 && steps.steps.is_empty() {
        notes.push(format!(
            "This conversation has no earlier {} steps; the workflow starts from this one.",
            W::NAME
        ));
    }
    if args.report.step_number == 1 {
        steps = Steps::default();
    }
    if let Some(answer) = W::check(&args, &steps).map_err(|m| bad(W::NAME, m))? {
        return Ok(CallToolResult::structured(answer));
    }
    let record = record_of(&args);
    steps.push(record.clone());

    // Paths that will not reach the model are named now, not at the last step.
    let roots = files::Policy::of(&ctx.config);
    let named = args.report.relevant_files.clone();
    let refused = tokio::task::spawn_blocking(move || files::refused(&named, &roots))
        .await
        .map_err(consult::blocking_failure)?;
    for r in refused {
        notes.push(format!(
            "{} will not be shown to the expert: {}",
            r.path, r.why
        ));
    }

    let last = !args.report.next_step_required;
    let gathered = W::gather(&ctx, &steps, last).await?;
    notes.extend(gathered.notes.iter().cloned());
    let mut turns = vec![step_turn(W::NAME, &record)];

    // Key order is what the agent reads first: status, then where the workflow stands.
    let mut answer = json!({
        "status": Value::Null,
        "tool": W::NAME,
        "step_number": args.report.step_number,
        "total_steps": args.report.total_steps,
        "next_step_required": args.report.next_step_required,
        "continuation_id": thread.id,
        "progress": tally(&steps),
    });
    if let Some(summary) = &gathered.summary {
        answer["gathered"] = summary.clone();
    }
    if args.report.step_number == 1 && W::EXPERT == Expert::Never {
        answer["guidance"] = Value::String(W::PROMPT.to_string());
    }
    let mut blocks = Vec::new();

    if !last {
        pause::<W>(&args, &thread.id, &mut answer);
    } else {
        answer["summary"] = summary(&steps);
        match skip_reason::<W>(&args, &steps) {
            Some(reason) => {
                answer["status"] = Value::String(W::COMPLETE.into());
                answer["expert_analysis"] = json!({"status": "skipped", "reason": reason});
                answer["next_steps"] = Value::String(format!(
                    "The {} is complete without an expert analysis ({reason}). Present your \
                     conclusions to the user and act on them.",
                    W::NAME
                ));
            }
            None => {
                let expert = ask_expert::<W>(&ctx, &args, &steps, &gathered).await?;
                notes.extend(expert.response.notes.iter().cloned());
                notes.extend(expert.notes());
                answer["status"] = Value::String("calling_expert_analysis".into());
                answer["expert_analysis"] = json!({
                    "status": "analysis_complete",
                    "model": expert.response.model,
                    "provider": expert.response.provider,
                    "files_embedded": expert.embedded.files.len(),
                    "analysis": "in the next content block",
                });
                answer["next_steps"] = Value::String(format!(
                    "The {} is complete. Weigh the expert analysis below against your own \
                     findings — it can be wrong where it lacked context — then present the \
                     conclusions to the user and act on them.",
                    W::NAME
                ));
                blocks.push(ContentBlock::text(format!(
                    "Expert analysis ({}):\n\n{}",
                    expert.response.model, expert.response.text
                )));
                turns.push(Turn::answered(
                    W::NAME,
                    expert.response.text.clone(),
                    Some(expert.response.model.clone()),
                    expert.reasoning_to_keep(),
                ));
            }
        }
    }
    notes.extend(consult::remember(&ctx, &mut thread, turns).await);
    if !notes.is_empty() {
        answer["notes"] = json!(notes);
    }
    blocks.insert(0, json_block(&answer));
    let mut result = CallToolResult::success(blocks);
    result.structured_content = Some(answer);
    Ok(result)
}

/// Whether a review ends with the expert (`external`, the default) or without (`internal`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Validation {
    External,
    Internal,
}

/// The fields of a workflow with none of its own.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct NoExtra {}

/// A section for the expert from one of the tool's own fields, if the agent gave it.
pub fn text_section(steps: &Steps, field: &str, heading: &str) -> Option<String> {
    let body = match steps.extra(field)? {
        Value::String(s) if s.trim().is_empty() => return None,
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => return None,
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => format!("- {s}"),
                other => format!("- {other}"),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    };
    Some(format!("{heading}\n{body}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u32, findings: &str, backtrack: Option<u32>) -> StepRecord {
        let report: Report = serde_json::from_value(json!({
            "step": format!("step {n}"), "step_number": n, "total_steps": 4,
            "next_step_required": true, "findings": findings,
            "files_checked": [format!("/f{n}.rs")], "backtrack_from_step": backtrack,
        }))
        .unwrap();
        StepRecord {
            report,
            extra: Value::Null,
        }
    }

    fn turn(tool: &str, r: &StepRecord) -> Turn {
        step_turn(tool, r)
    }

    #[test]
    fn backtracking_drops_the_steps_it_revisits_and_a_new_start_resets() {
        let mut thread = Thread::new();
        thread.turns = vec![
            turn("debug", &record(1, "old run", None)),
            turn("debug", &record(1, "a", None)),
            turn("chat", &record(2, "not a debug step", None)),
            turn("debug", &record(2, "b", None)),
            turn("debug", &record(3, "c", None)),
        ];
        let mut steps = Steps::of(&thread, "debug");
        let found: Vec<_> = steps
            .steps
            .iter()
            .map(|s| s.report.findings.as_str())
            .collect();
        assert_eq!(found, ["a", "b", "c"]);
        steps.push(record(4, "d", Some(2)));
        let found: Vec<_> = steps
            .steps
            .iter()
            .map(|s| s.report.findings.as_str())
            .collect();
        assert_eq!(found, ["a", "d"]);
        assert_eq!(steps.files_checked(), ["/f1.rs", "/f4.rs"]);
    }
}
