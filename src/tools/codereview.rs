//! `codereview`: a code review in steps; an expert model reviews the relevant files with the
//! agent's findings at the end.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::workflow::{
    Actions, Certainty, Steps, Validation, Workflow, choice_section, text_section,
};

pub struct CodeReview;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum ReviewType {
    Full,
    Security,
    Performance,
    Quick,
}

/// `codereview`'s own fields.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Extra {
    /// full (default), security, performance or quick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    review_type: Option<ReviewType>,
    /// What to look at especially.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    focus_on: Option<String>,
    /// Coding standards to hold the code to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    standards: Option<String>,
    /// Lowest severity to report: critical, high, medium, low or all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    severity_filter: Option<String>,
    /// external (default) asks the expert at the end; internal does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    review_validation_type: Option<Validation>,
}

impl Workflow for CodeReview {
    type Extra = Extra;
    type Confidence = Certainty;
    const NAME: &'static str = "codereview";
    const DESCRIPTION: &'static str = "Review code in steps — bugs, security, performance, maintainability; at the last \
         step an expert model reviews the files with your findings. Step 1 names the files.";
    const PROMPT: &'static str = include_str!("prompts/codereview.txt");
    const PAUSE: &'static str = "pause_for_code_review";
    const COMPLETE: &'static str = "code_review_complete_ready_for_implementation";
    const FILES_AT_START: bool = true;
    const ACTIONS: Actions = Actions {
        first: &[
            "Read the files under review and understand what the code is for",
            "Note the project's conventions so findings respect them",
            "Plan the review: correctness first, then security, performance, maintainability",
        ],
        middle: &[
            "Check error handling, edge cases and resource cleanup on each path",
            "Look for injection, unchecked input, secrets and unsafe defaults",
            "Record each problem in issues_found with its severity and location",
        ],
        closing: &[
            "Re-check the high-severity findings against the code; drop what does not hold",
            "Make sure relevant_files holds every file the expert must see",
            "Finish with next_step_required false for the expert review",
        ],
    };

    fn skip_expert(steps: &Steps<Self>) -> Option<String> {
        (steps.latest(|e| e.review_validation_type.as_ref()) == Some(&Validation::Internal))
            .then(|| "review_validation_type is internal".to_string())
    }

    fn brief(steps: &Steps<Self>) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(choice_section(
            "## Review type",
            steps.latest(|e| e.review_type.as_ref()),
        ));
        out.extend(text_section(
            "## Review focus",
            steps.latest(|e| e.focus_on.as_deref()),
        ));
        out.extend(text_section(
            "## Standards to apply",
            steps.latest(|e| e.standards.as_deref()),
        ));
        out.extend(text_section(
            "## Report severities from",
            steps.latest(|e| e.severity_filter.as_deref()),
        ));
        out
    }
}
