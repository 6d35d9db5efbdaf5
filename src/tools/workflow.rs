//! The step protocol of the workflow tools (thinkdeep, debug, codereview, …): the calling agent
//! investigates between steps with its own tools, exai keeps every step in the conversation
//! thread (never on a shared object), and at the last step asks the expert model once with
//! everything gathered and the relevant files embedded.

use std::marker::PhantomData;

use futures::future::BoxFuture;
use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::consult::{self, Question, ThinkingMode, Word, word_serde};
use super::{ExaiTool, ToolContext, ToolFuture, definition, parse_arguments};
use crate::calls::{FailureKind, ToolFailure};
use crate::files;
use crate::providers::Need;
use crate::threads::{Thread, Turn};

/// A workflow's confidence scale, weakest first; the default is where a workflow starts.
pub trait Confidence: Word + Default + Serialize + DeserializeOwned + JsonSchema {
    /// The level at which the agent is sure: the expert is not asked.
    const SURE: Self;
    /// Whether the agent is close enough to the end that the closing actions apply.
    fn closing(self) -> bool;
}

/// Confidence levels of most workflows, weakest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Certainty {
    #[default]
    Exploring,
    Low,
    Medium,
    High,
    VeryHigh,
    AlmostCertain,
    Certain,
}

impl Word for Certainty {
    const FIELD: &'static str = "confidence";
    const ALL: &'static [Self] = &[
        Self::Exploring,
        Self::Low,
        Self::Medium,
        Self::High,
        Self::VeryHigh,
        Self::AlmostCertain,
        Self::Certain,
    ];
    fn word(self) -> &'static str {
        match self {
            Self::Exploring => "exploring",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::VeryHigh => "very_high",
            Self::AlmostCertain => "almost_certain",
            Self::Certain => "certain",
        }
    }
}
word_serde!(Certainty, schema);

impl Confidence for Certainty {
    const SURE: Self = Self::Certain;
    fn closing(self) -> bool {
        matches!(self, Self::VeryHigh | Self::AlmostCertain)
    }
}

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
#[serde(bound(deserialize = "C: Deserialize<'de>"))]
pub struct Report<C> {
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
    // The schema keeps one string for every workflow, as agents have always been shown it.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub confidence: Option<C>,
    /// Your current theory.
    #[serde(default)]
    pub hypothesis: Option<String>,
    /// Discard steps from this number on.
    #[serde(default)]
    pub backtrack_from_step: Option<u32>,
}

/// A workflow tool's arguments: the step's report, how to finish, and the tool's own fields.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(bound(deserialize = "C: Deserialize<'de>, Extra: Deserialize<'de>"))]
pub struct StepArguments<C, Extra> {
    #[serde(flatten)]
    pub report: Report<C>,
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
    pub thinking_mode: Option<ThinkingMode>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Workflow `W`'s arguments.
pub type Arguments<W> = StepArguments<<W as Workflow>::Confidence, <W as Workflow>::Extra>;

/// One step as kept in the thread: its report and the tool's own fields.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound(deserialize = "C: Deserialize<'de>, E: Deserialize<'de> + Default"))]
pub struct StepRecord<C, E> {
    #[serde(flatten)]
    pub report: Report<C>,
    // A record written without the tool's fields held `null` here.
    #[serde(default, deserialize_with = "null_as_default")]
    pub extra: E,
}

fn null_as_default<'de, D: Deserializer<'de>, E: Deserialize<'de> + Default>(
    deserializer: D,
) -> Result<E, D::Error> {
    Ok(Option::<E>::deserialize(deserializer)?.unwrap_or_default())
}

/// Workflow `W`'s step record.
pub type Record<W> = StepRecord<<W as Workflow>::Confidence, <W as Workflow>::Extra>;

/// The workflow so far: this tool's steps in the thread since its last step 1, with
/// backtracked steps removed.
pub struct Steps<W: Workflow> {
    pub steps: Vec<Record<W>>,
}

impl<W: Workflow> Default for Steps<W> {
    fn default() -> Self {
        Self { steps: Vec::new() }
    }
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

impl<W: Workflow> Steps<W> {
    /// This tool's steps in `thread`.
    pub fn of(thread: &Thread) -> Self {
        let records: Vec<Record<W>> = thread
            .turns
            .iter()
            .filter(|t| t.tool == W::NAME)
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
    pub fn push(&mut self, record: Record<W>) {
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
    pub fn confidence(&self) -> Option<W::Confidence> {
        self.steps.iter().rev().find_map(|s| s.report.confidence)
    }
    /// The latest value the agent gave for one of the tool's own fields (`field` is `None`
    /// where a step left it out).
    pub fn latest<'a, T: ?Sized>(
        &'a self,
        field: impl Fn(&'a W::Extra) -> Option<&'a T>,
    ) -> Option<&'a T> {
        self.steps.iter().rev().find_map(|s| field(&s.extra))
    }
    /// The latest list the agent gave, not empty, for one of the tool's own fields.
    pub fn latest_list<'a>(
        &'a self,
        field: impl Fn(&'a W::Extra) -> &'a Vec<String>,
    ) -> Option<&'a [String]> {
        self.latest(|extra| Some(field(extra).as_slice()).filter(|list| !list.is_empty()))
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

/// Why a tool refuses a step, in its own error type (the agent reads its message).
pub type Refusal = Box<dyn std::error::Error + Send + Sync>;

/// One workflow tool: its words, fields and hooks; the engine does the rest.
pub trait Workflow: Sized + Send + Sync + 'static {
    /// The tool's own fields, kept with each step.
    type Extra: DeserializeOwned + Serialize + JsonSchema + Default + Clone + Send + Sync + 'static;
    /// The confidence scale the agent reports on (most tools: `Certainty`).
    type Confidence: Confidence;
    const NAME: &'static str;
    const DESCRIPTION: &'static str;
    /// The expert's system prompt, or (for `Expert::Never`) guidance for the agent.
    const PROMPT: &'static str;
    /// Status of an intermediate step, e.g. `pause_for_investigation`.
    const PAUSE: &'static str;
    /// Status of a last step the expert did not take part in.
    const COMPLETE: &'static str;
    const EXPERT: Expert = Expert::UnlessSure;
    /// Step 1 must name the files (codereview, analyze, …).
    const FILES_AT_START: bool = false;
    const ACTIONS: Actions;

    /// Checks the tool's own fields. `Ok(Some(answer))` answers the step without recording it.
    fn check(_args: &Arguments<Self>, _steps: &Steps<Self>) -> Result<Option<Value>, Refusal> {
        Ok(None)
    }
    /// A reason, from the tool's own fields, not to ask the expert.
    fn skip_expert(_steps: &Steps<Self>) -> Option<String> {
        None
    }
    /// Tool-specific sections for the expert (review type, focus, …).
    fn brief(_steps: &Steps<Self>) -> Vec<String> {
        Vec::new()
    }
    /// Work exai does itself at a step (`last` is the final step).
    fn gather(
        _ctx: &ToolContext,
        _steps: &Steps<Self>,
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
        definition::<Arguments<W>>(W::NAME, W::DESCRIPTION, annotations)
    }

    fn may_run_long(&self) -> bool {
        W::EXPERT != Expert::Never
    }

    fn system_prompts(&self) -> Vec<(&'static str, &'static str)> {
        vec![(W::NAME, W::PROMPT)]
    }

    fn run(&self, arguments: JsonObject, ctx: ToolContext) -> ToolFuture {
        Box::pin(run::<W>(arguments, ctx))
    }
}

/// Checks the common fields; returns notes about what was adjusted.
fn check_common<W: Workflow>(
    args: &mut Arguments<W>,
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
    if let Some(complaint) = consult::relative_path(
        args.report
            .files_checked
            .iter()
            .chain(&args.report.relevant_files),
    ) {
        return Err(bad(tool, complaint));
    }
    consult::check_temperature(args.temperature).map_err(|e| bad(tool, e))?;
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

fn record_of<W: Workflow>(args: &Arguments<W>) -> Record<W> {
    StepRecord {
        report: args.report.clone(),
        extra: args.extra.clone(),
    }
}

/// The tally of what the workflow has gathered.
#[derive(Serialize)]
struct Tally {
    steps_recorded: usize,
    files_checked: usize,
    relevant_files: usize,
    relevant_context: usize,
    issues_found: usize,
    hypotheses: usize,
    confidence: &'static str,
}

impl Tally {
    fn of<W: Workflow>(steps: &Steps<W>) -> Self {
        Self {
            steps_recorded: steps.steps.len(),
            files_checked: steps.files_checked().len(),
            relevant_files: steps.relevant_files().len(),
            relevant_context: steps.relevant_context().len(),
            issues_found: steps.issues().len(),
            hypotheses: steps.hypotheses(),
            confidence: steps.confidence().unwrap_or_default().word(),
        }
    }
}

fn required_actions<W: Workflow>(args: &Arguments<W>) -> &'static [&'static str] {
    let closing = args.report.confidence.is_some_and(Confidence::closing)
        || args.report.step_number.saturating_add(1) >= args.report.total_steps;
    if args.report.step_number == 1 {
        W::ACTIONS.first
    } else if closing {
        W::ACTIONS.closing
    } else {
        W::ACTIONS.middle
    }
}

/// A value's word on the wire (the tools' own choice enums, an issue's severity).
pub fn wire_word<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The expert's question: the whole investigation in sections.
fn expert_prompt<W: Workflow>(steps: &Steps<W>, gathered: &Gathered) -> String {
    let mut out = format!(
        "The agent ran a {} workflow in {} step(s) and asks for your analysis.\n\n## Task\n{}\n\n## Investigation\n",
        W::NAME,
        steps.steps.len(),
        steps.initial_request()
    );
    for s in &steps.steps {
        out.push_str(&format!("### Step {}", s.report.step_number));
        if let Some(c) = s.report.confidence {
            out.push_str(&format!(" (confidence: {})", c.word()));
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
            out.push_str(&format!(
                "- [{}] {}\n",
                wire_word(&i.severity),
                i.description
            ));
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

fn step_turn<W: Workflow>(record: &Record<W>) -> Turn {
    let mut content = format!(
        "{} step {}/{}: {}",
        W::NAME,
        record.report.step_number,
        record.report.total_steps,
        record.report.step
    );
    if !record.report.findings.trim().is_empty() {
        content.push_str(&format!("\nFindings: {}", record.report.findings));
    }
    Turn {
        step: serde_json::to_value(record).ok(),
        ..Turn::asked(W::NAME, content, record.report.relevant_files.clone())
    }
}

/// A step's answer. Key order is what the agent reads first: status, then where the workflow
/// stands, then what to do.
#[derive(Serialize)]
struct StepAnswer<'a> {
    status: &'a str,
    tool: &'static str,
    step_number: u32,
    total_steps: u32,
    next_step_required: bool,
    continuation_id: &'a str,
    progress: Tally,
    #[serde(skip_serializing_if = "Option::is_none")]
    gathered: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    guidance: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    required_actions: Option<&'static [&'static str]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<Summary<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expert_analysis: Option<ExpertAnalysis<'a>>,
    next_steps: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    notes: Vec<String>,
}

/// What the whole workflow gathered, for the last step's answer.
#[derive(Serialize)]
struct Summary<'a> {
    initial_request: &'a str,
    steps_taken: usize,
    files_checked: Vec<String>,
    relevant_files: Vec<String>,
    relevant_context: Vec<String>,
    issues_found: Vec<&'a IssueFound>,
    confidence: Option<&'static str>,
    steps: Vec<StepLine<'a>>,
}

/// One step in the last step's summary.
#[derive(Serialize)]
struct StepLine<'a> {
    step_number: u32,
    step: &'a str,
    findings: &'a str,
}

impl<'a> Summary<'a> {
    fn of<W: Workflow>(steps: &'a Steps<W>) -> Self {
        Self {
            initial_request: steps.initial_request(),
            steps_taken: steps.steps.len(),
            files_checked: steps.files_checked(),
            relevant_files: steps.relevant_files(),
            relevant_context: steps.relevant_context(),
            issues_found: steps.issues(),
            confidence: steps.confidence().map(Word::word),
            steps: steps
                .steps
                .iter()
                .map(|s| StepLine {
                    step_number: s.report.step_number,
                    step: &s.report.step,
                    findings: &s.report.findings,
                })
                .collect(),
        }
    }
}

/// Whether the expert took part in the last step.
#[derive(Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum ExpertAnalysis<'a> {
    Skipped {
        reason: &'a str,
    },
    AnalysisComplete {
        model: &'a str,
        provider: &'a str,
        files_embedded: usize,
        /// Where the analysis is: always "in the next content block".
        analysis: &'static str,
    },
}

/// An intermediate step's `next_steps`: do the required actions, then how to call again.
fn pause_next_steps<W: Workflow>(args: &Arguments<W>, thread_id: &str) -> String {
    let finish = match W::EXPERT {
        Expert::UnlessSure if args.use_assistant_model => {
            "; exai then asks the expert model once, with everything gathered and the relevant files"
        }
        _ => "",
    };
    format!(
        "Do not call {tool} again yet. First do the required actions with your own tools \
         (read the code, run commands). Then call {tool} with step_number {next}, \
         continuation_id \"{thread_id}\", what you established in findings, and the files you \
         examined. Set next_step_required to false on your last step{finish}.",
        tool = W::NAME,
        next = args.report.step_number.saturating_add(1),
    )
}

/// Why the last step finishes without the expert, if it does.
fn skip_reason<W: Workflow>(args: &Arguments<W>, steps: &Steps<W>) -> Option<String> {
    if !args.use_assistant_model {
        Some("use_assistant_model is false".to_string())
    } else if W::EXPERT == Expert::Never {
        Some(format!("{} does not ask a model", W::NAME))
    } else if steps.confidence() == Some(W::Confidence::SURE) {
        Some(format!("confidence is {}", W::Confidence::SURE.word()))
    } else {
        W::skip_expert(steps)
    }
}

/// The one expert call of a workflow, streaming, with the relevant files and images.
async fn ask_expert<W: Workflow>(
    ctx: &ToolContext,
    args: &Arguments<W>,
    steps: &Steps<W>,
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
            system: W::PROMPT.into(),
            prompt: &prompt,
            files: steps.relevant_files(),
            thread: None,
            temperature: args.temperature,
            thinking: consult::thinking_of(args.thinking_mode),
            web_search: false,
            images: steps.images(),
        },
    )
    .await
}

/// A structured answer as the tool's result: pretty JSON first, then `blocks`; what the step
/// cost (`cost_usd`, micro-dollars as USD, `null` when unknown) last among its keys.
fn answer_result(
    answer: &impl Serialize,
    cost_usd_micros: Option<i64>,
    mut blocks: Vec<ContentBlock>,
) -> Result<CallToolResult, ToolFailure> {
    let mut answer = super::tool::to_json("answer", &answer)?;
    answer["cost_usd"] = crate::providers::price::usd_json(cost_usd_micros);
    let text = serde_json::to_string_pretty(&answer).unwrap_or_else(|_| answer.to_string());
    blocks.insert(0, ContentBlock::text(text));
    let mut result = CallToolResult::success(blocks);
    result.structured_content = Some(answer);
    Ok(result)
}

async fn run<W: Workflow>(
    arguments: JsonObject,
    ctx: ToolContext,
) -> Result<CallToolResult, ToolFailure> {
    let mut args: Arguments<W> = parse_arguments(W::NAME, arguments)?;
    if let Some(answer) = consult::too_long(&ctx, W::NAME, "step", &args.report.step) {
        return Ok(answer);
    }
    let mut notes = check_common::<W>(&mut args, &ctx)?;
    let mut thread = consult::thread(&ctx, args.continuation_id.as_deref()).await?;
    let mut steps = Steps::<W>::of(&thread);
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
    let record = record_of::<W>(&args);
    let mut turns = vec![step_turn::<W>(&record)];
    steps.push(record);

    // Paths that will not reach the model are named now, not at the last step.
    let roots = ctx.file_policy();
    let named = args.report.relevant_files.clone();
    let refused = crate::spawn::blocking(move || files::refused(&named, &roots))
        .await
        .map_err(consult::blocking_failure)?;
    for r in refused {
        notes.push(format!(
            "{} will not be shown to the expert: {}",
            files::shown::name(&r.path),
            r.why
        ));
    }

    let last = !args.report.next_step_required;
    let gathered = W::gather(&ctx, &steps, last).await?;
    notes.extend(gathered.notes.iter().cloned());

    // What the answer borrows from the last step: the reason the expert was skipped, or its answer.
    let skipped;
    let expert;
    let thread_id = thread.id.clone();
    let mut answer = StepAnswer {
        status: W::PAUSE,
        tool: W::NAME,
        step_number: args.report.step_number,
        total_steps: args.report.total_steps,
        next_step_required: args.report.next_step_required,
        continuation_id: &thread_id,
        progress: Tally::of(&steps),
        gathered: gathered.summary.as_ref(),
        guidance: (args.report.step_number == 1 && W::EXPERT == Expert::Never).then_some(W::PROMPT),
        required_actions: None,
        summary: None,
        expert_analysis: None,
        next_steps: String::new(),
        notes: Vec::new(),
    };
    let mut blocks = Vec::new();

    if !last {
        answer.required_actions = Some(required_actions::<W>(&args));
        answer.next_steps = pause_next_steps::<W>(&args, &thread_id);
    } else {
        answer.summary = Some(Summary::of(&steps));
        match skip_reason::<W>(&args, &steps) {
            Some(reason) => {
                answer.status = W::COMPLETE;
                answer.next_steps = format!(
                    "The {} is complete without an expert analysis ({reason}). Present your \
                     conclusions to the user and act on them.",
                    W::NAME
                );
                skipped = reason;
                answer.expert_analysis = Some(ExpertAnalysis::Skipped { reason: &skipped });
            }
            None => {
                expert = ask_expert::<W>(&ctx, &args, &steps, &gathered).await?;
                let response = &expert.response;
                notes.extend(response.notes.iter().cloned());
                notes.extend(expert.notes());
                answer.status = "calling_expert_analysis";
                answer.expert_analysis = Some(ExpertAnalysis::AnalysisComplete {
                    model: &response.model,
                    provider: &response.provider,
                    files_embedded: expert.embedded.files.len(),
                    analysis: "in the next content block",
                });
                answer.next_steps = format!(
                    "The {} is complete. Weigh the expert analysis below against your own \
                     findings — it can be wrong where it lacked context — then present the \
                     conclusions to the user and act on them.",
                    W::NAME
                );
                blocks.push(ContentBlock::text(format!(
                    "Expert analysis ({}):\n\n{}",
                    response.model, response.text
                )));
                blocks.push(ContentBlock::text(format!(
                    "Cost of this step: {}",
                    response.cost
                )));
                turns.push(Turn::answered(
                    W::NAME,
                    response.text.clone(),
                    Some(response.model.clone()),
                    expert.reasoning_to_keep(),
                ));
            }
        }
    }
    notes.extend(consult::remember(&ctx, &mut thread, turns).await);
    answer.notes = notes;
    answer_result(&answer, ctx.call.cost_usd_micros(), blocks)
}

/// Whether a review ends with the expert (`external`, the default) or without (`internal`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Validation {
    External,
    Internal,
}

/// The fields of a workflow with none of its own.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
pub struct NoExtra {}

/// A section for the expert: `heading` over the text the agent gave, unless it is blank.
pub fn text_section(heading: &str, text: Option<&str>) -> Option<String> {
    text.filter(|t| !t.trim().is_empty())
        .map(|t| format!("{heading}\n{t}"))
}

/// A section for the expert: `heading` over the items the agent gave, one a line.
pub fn list_section(heading: &str, items: Option<&[String]>) -> Option<String> {
    let items = items.filter(|i| !i.is_empty())?;
    let lines: Vec<String> = items.iter().map(|i| format!("- {i}")).collect();
    Some(format!("{heading}\n{}", lines.join("\n")))
}

/// A section for the expert: `heading` over the choice the agent made, as its word.
pub fn choice_section<T: Serialize>(heading: &str, choice: Option<&T>) -> Option<String> {
    choice.map(|c| format!("{heading}\n{}", wire_word(c)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::debug::Debug;
    use super::super::refactor::Refactor;
    use super::*;

    fn record(n: u32, findings: &str, backtrack: Option<u32>) -> Record<Debug> {
        serde_json::from_value(json!({
            "step": format!("step {n}"), "step_number": n, "total_steps": 4,
            "next_step_required": true, "findings": findings,
            "files_checked": [format!("/f{n}.rs")], "backtrack_from_step": backtrack,
        }))
        .unwrap()
    }

    #[test]
    fn backtracking_drops_the_steps_it_revisits_and_a_new_start_resets() {
        let mut thread = Thread::default();
        let mut chat_turn = step_turn::<Debug>(&record(2, "not a debug step", None));
        chat_turn.tool = "chat".into();
        thread.turns = vec![
            step_turn::<Debug>(&record(1, "old run", None)),
            step_turn::<Debug>(&record(1, "a", None)),
            chat_turn,
            step_turn::<Debug>(&record(2, "b", None)),
            step_turn::<Debug>(&record(3, "c", None)),
        ];
        let mut steps = Steps::<Debug>::of(&thread);
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

    /// A step's answer keeps the keys agents have always read, in the same order.
    #[test]
    fn step_answers_keep_their_wire_form() {
        let mut steps = Steps::<Debug>::default();
        steps.push(record(1, "f", None));
        let answer = |expert_analysis, summary| StepAnswer {
            status: "s",
            tool: "debug",
            step_number: 1,
            total_steps: 1,
            next_step_required: false,
            continuation_id: "t",
            progress: Tally::of(&steps),
            gathered: None,
            guidance: Some("g"),
            required_actions: None,
            summary,
            expert_analysis,
            next_steps: "n".into(),
            notes: vec!["note".into()],
        };
        let keys = |answer: StepAnswer| {
            let value = serde_json::to_value(answer).unwrap();
            value
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect::<Vec<_>>()
        };
        let skipped = answer(
            Some(ExpertAnalysis::Skipped { reason: "r" }),
            Some(Summary::of(&steps)),
        );
        assert_eq!(
            keys(skipped),
            [
                "status",
                "tool",
                "step_number",
                "total_steps",
                "next_step_required",
                "continuation_id",
                "progress",
                "guidance",
                "summary",
                "expert_analysis",
                "next_steps",
                "notes"
            ]
        );
        let asked = ExpertAnalysis::AnalysisComplete {
            model: "m",
            provider: "p",
            files_embedded: 2,
            analysis: "in the next content block",
        };
        assert_eq!(
            serde_json::to_string(&asked).unwrap(),
            r#"{"status":"analysis_complete","model":"m","provider":"p","files_embedded":2,"analysis":"in the next content block"}"#
        );
        assert_eq!(
            serde_json::to_string(&Tally::of(&steps)).unwrap(),
            r#"{"steps_recorded":1,"files_checked":1,"relevant_files":0,"relevant_context":0,"issues_found":0,"hypotheses":0,"confidence":"exploring"}"#
        );
        assert_eq!(
            serde_json::to_string(&Summary::of(&steps)).unwrap(),
            r#"{"initial_request":"step 1","steps_taken":1,"files_checked":["/f1.rs"],"relevant_files":[],"relevant_context":[],"issues_found":[],"confidence":null,"steps":[{"step_number":1,"step":"step 1","findings":"f"}]}"#
        );
    }

    #[test]
    fn a_confidence_off_the_tools_scale_is_refused_with_the_scale() {
        let step = |confidence: &str| {
            json!({"step": "s", "step_number": 1, "total_steps": 1, "next_step_required": false,
                   "confidence": confidence})
        };
        let error = serde_json::from_value::<Arguments<Debug>>(step("partial"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "confidence \"partial\" is not one of exploring, low, medium, high, very_high, \
             almost_certain, certain"
        );
        let refactor = serde_json::from_value::<Arguments<Refactor>>(step("partial")).unwrap();
        assert!(refactor.report.confidence.is_some_and(Confidence::closing));
        let error = serde_json::from_value::<Arguments<Refactor>>(step("certain"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "confidence \"certain\" is not one of exploring, incomplete, partial, complete"
        );
        let error = serde_json::from_value::<Arguments<Debug>>(json!({
            "step": "s", "step_number": 1, "total_steps": 1, "next_step_required": false,
            "thinking_mode": "hard"}))
        .unwrap_err()
        .to_string();
        assert_eq!(
            error,
            "thinking_mode \"hard\" is not one of minimal, low, medium, high, max"
        );
    }
}
