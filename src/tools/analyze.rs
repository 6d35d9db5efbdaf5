//! `analyze`: a code analysis (architecture, performance, security, quality) in steps; an expert
//! model gives the strategic view at the end.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::workflow::{Actions, Certainty, Steps, Workflow, choice_section};

pub struct Analyze;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum AnalysisType {
    Architecture,
    Performance,
    Security,
    Quality,
    General,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum OutputFormat {
    Summary,
    Detailed,
    Actionable,
}

/// `analyze`'s own fields.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Extra {
    /// What to analyse for (default general).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    analysis_type: Option<AnalysisType>,
    /// How to present the result (default detailed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output_format: Option<OutputFormat>,
}

impl Workflow for Analyze {
    type Extra = Extra;
    type Confidence = Certainty;
    const NAME: &'static str = "analyze";
    const DESCRIPTION: &'static str = "Analyse code in steps — architecture, performance, security or quality; at the \
         last step an expert model gives the strategic view. Step 1 names the files.";
    const PROMPT: &'static str = include_str!("prompts/analyze.txt");
    const PAUSE: &'static str = "pause_for_analysis";
    const COMPLETE: &'static str = "analysis_complete_ready_for_implementation";
    const FILES_AT_START: bool = true;
    const ACTIONS: Actions = Actions {
        first: &[
            "Map the structure: modules, entry points, main data flows",
            "Read the central files and note the design decisions they embody",
            "Decide which aspects matter most for this analysis",
        ],
        middle: &[
            "Examine coupling, duplication and the boundaries between modules",
            "Check how the design holds up under growth in load, data or features",
            "Collect concrete examples (file and line) for each finding",
        ],
        closing: &[
            "Rank the findings by impact and effort",
            "Make sure relevant_files holds the files the expert must see",
            "Finish with next_step_required false for the expert's view",
        ],
    };

    fn brief(steps: &Steps<Self>) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(choice_section(
            "## Analysis type",
            steps.latest(|e| e.analysis_type.as_ref()),
        ));
        out.extend(choice_section(
            "## Output format",
            steps.latest(|e| e.output_format.as_ref()),
        ));
        out
    }
}
