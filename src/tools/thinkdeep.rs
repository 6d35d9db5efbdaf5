//! `thinkdeep`: the agent thinks a hard problem through in steps; an expert model then
//! challenges and extends its reasoning.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::workflow::{Actions, Certainty, Steps, Workflow, list_section, text_section};

pub struct ThinkDeep;

/// `thinkdeep`'s own fields.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Extra {
    /// Background the expert should know (constraints, goals, what was tried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    problem_context: Option<String>,
    /// Aspects to weigh, e.g. performance, security, maintainability.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    focus_areas: Vec<String>,
}

impl Workflow for ThinkDeep {
    type Extra = Extra;
    type Confidence = Certainty;
    const NAME: &'static str = "thinkdeep";
    const DESCRIPTION: &'static str = "Think a hard problem through in steps (architecture, a tricky bug, a trade-off); \
         at the last step an expert model challenges and extends your reasoning.";
    const PROMPT: &'static str = include_str!("prompts/thinkdeep.txt");
    const PAUSE: &'static str = "pause_for_thinkdeep";
    const COMPLETE: &'static str = "deep_thinking_complete_ready_for_implementation";
    const ACTIONS: Actions = Actions {
        first: &[
            "State the problem precisely: what must be decided or explained, and the constraints",
            "Read the code and documents the problem touches; note what they actually say",
            "List the assumptions you are making and how each could be checked",
        ],
        middle: &[
            "Check the weakest assumption against the code or by running something",
            "Consider at least one alternative approach and what it would cost",
            "Look for edge cases, failure modes and scale limits of your current idea",
        ],
        closing: &[
            "Make sure each conclusion rests on evidence you have seen",
            "Write down the open questions that remain, if any",
            "Finish with next_step_required false to get the expert's review",
        ],
    };

    fn brief(steps: &Steps<Self>) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(text_section(
            "## Problem context",
            steps.latest(|e| e.problem_context.as_deref()),
        ));
        out.extend(list_section(
            "## Focus areas",
            steps.latest_list(|e| &e.focus_areas),
        ));
        out
    }
}
