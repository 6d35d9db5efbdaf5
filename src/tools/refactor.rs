//! `refactor`: finding refactoring opportunities in steps; an expert model orders and details
//! them at the end.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::consult::{Word, word_serde};
use super::workflow::{Actions, Confidence, Steps, Workflow, choice_section, list_section};

pub struct Refactor;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum RefactorType {
    Codesmells,
    Decompose,
    Modernize,
    Organization,
}

/// How far the refactoring analysis has got: refactor's own confidence scale.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Completeness {
    #[default]
    Exploring,
    Incomplete,
    Partial,
    Complete,
}

impl Word for Completeness {
    const FIELD: &'static str = "confidence";
    const ALL: &'static [Self] = &[
        Self::Exploring,
        Self::Incomplete,
        Self::Partial,
        Self::Complete,
    ];
    fn word(self) -> &'static str {
        match self {
            Self::Exploring => "exploring",
            Self::Incomplete => "incomplete",
            Self::Partial => "partial",
            Self::Complete => "complete",
        }
    }
}
word_serde!(Completeness, schema);

impl Confidence for Completeness {
    const SURE: Self = Self::Complete;
    fn closing(self) -> bool {
        self == Self::Partial
    }
}

/// `refactor`'s own fields.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
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
    type Confidence = Completeness;
    const NAME: &'static str = "refactor";
    const DESCRIPTION: &'static str = "Find refactoring opportunities in steps (smells, decomposition, modernisation, \
         organisation); at the last step an expert model orders them. Step 1 names the files.";
    const PROMPT: &'static str = include_str!("prompts/refactor.txt");
    const PAUSE: &'static str = "pause_for_refactoring_analysis";
    const COMPLETE: &'static str = "refactoring_analysis_complete_ready_for_implementation";
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

    fn brief(steps: &Steps<Self>) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(choice_section(
            "## Refactoring type",
            steps.latest(|e| e.refactor_type.as_ref()),
        ));
        out.extend(list_section(
            "## Focus areas",
            steps.latest_list(|e| &e.focus_areas),
        ));
        out.extend(list_section(
            "## Style examples (files)",
            steps.latest_list(|e| &e.style_guide_examples),
        ));
        out
    }
}
