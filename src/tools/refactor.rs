//! `refactor`: finding refactoring opportunities in steps; an expert model orders and details
//! them at the end.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::workflow::{Actions, Steps, Workflow, text_section};

pub struct Refactor;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum RefactorType {
    Codesmells,
    Decompose,
    Modernize,
    Organization,
}

/// `refactor`'s own fields.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct Extra {
    /// codesmells (default), decompose, modernize or organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refactor_type: Option<RefactorType>,
    /// Aspects to favour, e.g. readability, performance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    focus_areas: Vec<String>,
    /// Absolute paths of code that shows the style to follow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    style_guide_examples: Vec<String>,
}

impl Workflow for Refactor {
    type Extra = Extra;
    const NAME: &'static str = "refactor";
    const DESCRIPTION: &'static str = "Find refactoring opportunities in steps (smells, decomposition, modernisation, \
         organisation); at the last step an expert model orders them. Step 1 names the files.";
    const PROMPT: &'static str = include_str!("prompts/refactor.txt");
    const PAUSE: &'static str = "pause_for_refactoring_analysis";
    const COMPLETE: &'static str = "refactoring_analysis_complete_ready_for_implementation";
    const CONFIDENCE: &'static [&'static str] = &["exploring", "incomplete", "partial", "complete"];
    const SURE: &'static str = "complete";
    const FILES_AT_START: bool = true;
    const ACTIONS: Actions = Actions {
        first: &[
            "Read the code and note what each part is responsible for",
            "Mark long functions, deep nesting, duplication and unclear names",
            "Note the project's style so proposals fit it",
        ],
        middle: &[
            "For each candidate, work out what would change and what could break",
            "Check the tests that cover the code you would touch",
            "Record each opportunity in issues_found with its location",
        ],
        closing: &[
            "Order the opportunities by value against risk",
            "Make sure relevant_files holds the code (and style examples)",
            "Finish with next_step_required false (confidence complete skips the expert)",
        ],
    };

    fn brief(steps: &Steps) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(text_section(steps, "refactor_type", "## Refactoring type"));
        out.extend(text_section(steps, "focus_areas", "## Focus areas"));
        out.extend(text_section(
            steps,
            "style_guide_examples",
            "## Style examples (files)",
        ));
        out
    }
}
