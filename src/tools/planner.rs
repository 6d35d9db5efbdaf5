//! `planner`: building a plan step by step, with revisions and branches; no model call — the
//! steps are the plan.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::workflow::{Actions, Arguments, Certainty, Expert, Refusal, Steps, Workflow};

pub struct Planner;

/// A revision or branch that names a step not before this one.
#[derive(Debug, thiserror::Error)]
#[error("{field} {named} must name an earlier step than {this}")]
struct NotEarlier {
    field: &'static str,
    named: u32,
    this: u32,
}

/// `planner`'s own fields.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Extra {
    /// This step revises an earlier one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    is_step_revision: Option<bool>,
    /// The step it revises.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revises_step_number: Option<u32>,
    /// This step starts an alternative branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    is_branch_point: Option<bool>,
    /// The step the branch starts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    branch_from_step: Option<u32>,
    /// A name for the branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    branch_id: Option<String>,
    /// More steps are needed than total_steps says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    more_steps_needed: Option<bool>,
}

impl Workflow for Planner {
    type Extra = Extra;
    type Confidence = Certainty;
    const NAME: &'static str = "planner";
    const DESCRIPTION: &'static str = "Plan a task step by step, revising and branching as you go; the final answer \
         gathers the plan. Does not call a model.";
    const PROMPT: &'static str = include_str!("prompts/planner.txt");
    const PAUSE: &'static str = "pause_for_planning";
    const COMPLETE: &'static str = "planning_complete";
    const EXPERT: Expert = Expert::Never;
    const ACTIONS: Actions = Actions {
        first: &[
            "State the goal, the constraints and what done looks like",
            "Break the work into the main phases",
            "Note the unknowns that could change the plan",
        ],
        middle: &[
            "Detail the next phase into concrete steps with their dependencies",
            "Revise an earlier step (is_step_revision) if you learned something that changes it",
            "Branch (is_branch_point) where two approaches are worth comparing",
        ],
        closing: &[
            "Check every step is concrete and ordered by its dependencies",
            "Resolve or drop open branches",
            "Finish with next_step_required false to get the whole plan back",
        ],
    };

    fn check(args: &Arguments<Self>, _steps: &Steps<Self>) -> Result<Option<Value>, Refusal> {
        let this = args.report.step_number;
        let named = [
            ("revises_step_number", args.extra.revises_step_number),
            ("branch_from_step", args.extra.branch_from_step),
        ];
        for (field, step) in named {
            if let Some(named) = step.filter(|n| *n >= this) {
                return Err(NotEarlier { field, named, this }.into());
            }
        }
        Ok(None)
    }
}
