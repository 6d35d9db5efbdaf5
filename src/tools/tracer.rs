//! `tracer`: tracing a method's execution or a module's dependencies in steps; no model call —
//! exai asks for the mode first and says how to present the trace.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::workflow::{Actions, Arguments, Certainty, Expert, Refusal, Steps, Workflow};

pub struct Tracer;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum TraceMode {
    Ask,
    Precision,
    Dependencies,
}

/// The answer to a first step that did not choose a trace mode.
#[derive(Serialize)]
struct ModeQuestion {
    status: &'static str,
    tool: &'static str,
    question: &'static str,
    next_steps: &'static str,
}

/// `tracer`'s own fields.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Extra {
    /// precision (a method's execution flow), dependencies (what uses what), or ask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace_mode: Option<TraceMode>,
    /// What to trace and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target_description: Option<String>,
}

impl Workflow for Tracer {
    type Extra = Extra;
    type Confidence = Certainty;
    const NAME: &'static str = "tracer";
    const DESCRIPTION: &'static str = "Trace code in steps: a method's execution flow (precision) or a module's \
         dependencies; says how to present the trace. Does not call a model.";
    const PROMPT: &'static str = include_str!("prompts/tracer.txt");
    const PAUSE: &'static str = "pause_for_tracing";
    const COMPLETE: &'static str = "tracing_complete";
    const EXPERT: Expert = Expert::Never;
    const ACTIONS: Actions = Actions {
        first: &[
            "Find the target's definition and read it",
            "Decide the trace's boundary: which layers to follow and where to stop",
            "List the first calls (or dependents) to follow",
        ],
        middle: &[
            "Follow each call or dependency into its file; note branches and side effects",
            "Record file and line for every hop",
            "Note what you could not resolve (dynamic dispatch, reflection, config)",
        ],
        closing: &[
            "Check the trace end to end for gaps",
            "Prepare the trace in the format the guidance describes",
            "Finish with next_step_required false",
        ],
    };

    fn check(args: &Arguments<Self>, _steps: &Steps<Self>) -> Result<Option<Value>, Refusal> {
        if args.report.step_number == 1 && args.extra.trace_mode.is_none_or(|m| m == TraceMode::Ask)
        {
            let question = ModeQuestion {
                status: "mode_selection_required",
                tool: "tracer",
                question: "Which trace? precision: the execution flow of one method or function \
                           (calls, branches, side effects). dependencies: what a class or module \
                           uses and what uses it.",
                next_steps: "Call tracer again at step_number 1 with trace_mode set to \
                             precision or dependencies.",
            };
            return Ok(Some(serde_json::to_value(question)?));
        }
        Ok(None)
    }
}
