//! `debug`: a root-cause investigation in steps; an expert model weighs the evidence at the end.

use super::workflow::{Actions, Certainty, NoExtra, Workflow};

pub struct Debug;

impl Workflow for Debug {
    type Extra = NoExtra;
    type Confidence = Certainty;
    const NAME: &'static str = "debug";
    const DESCRIPTION: &'static str = "Find the root cause of a bug in steps: you investigate between calls, exai keeps \
         the evidence; at the last step an expert model weighs it and proposes a fix.";
    const PROMPT: &'static str = include_str!("prompts/debug.txt");
    const PAUSE: &'static str = "pause_for_investigation";
    const COMPLETE: &'static str = "certain_confidence_proceed_with_fix";
    const ACTIONS: Actions = Actions {
        first: &[
            "Reproduce the problem or collect its exact symptoms (errors, logs, inputs)",
            "Find the code on the failing path and read it",
            "Note what the code is meant to do there and where that may break",
        ],
        middle: &[
            "Trace the data and calls on the failing path; check each step against your hypothesis",
            "Look for recent changes, state shared between callers, and unchecked assumptions",
            "Try to disprove your hypothesis with one concrete check",
        ],
        closing: &[
            "Confirm the root cause with concrete evidence (a line, a value, a failing test)",
            "Work out the smallest fix and how to verify it",
            "Finish with next_step_required false (confidence certain skips the expert)",
        ],
    };
}
