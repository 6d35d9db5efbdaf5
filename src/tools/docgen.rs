//! `docgen`: documentation work guided file by file; no model call — exai keeps count and
//! will not let the agent stop before every file is documented.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::workflow::{Actions, Arguments, Certainty, Expert, Refusal, Steps, Workflow};

pub struct DocGen;

/// Why docgen refuses a step: its count of files does not add up.
#[derive(Debug, thiserror::Error)]
enum Miscount {
    #[error("num_files_documented {done} is more than total_files_to_document {total}")]
    MoreThanAll { done: u32, total: u32 },
    #[error(
        "docgen cannot finish: {done} of {total} files are documented. Document the other \
         {left} file(s) first, with next_step_required true."
    )]
    Unfinished { done: u32, total: u32, left: u32 },
}

/// `docgen`'s own fields.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Extra {
    /// Files documented so far.
    #[serde(default)]
    num_files_documented: u32,
    /// Files to document in all.
    #[serde(default)]
    total_files_to_document: u32,
    /// Note algorithmic complexity (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    document_complexity: Option<bool>,
    /// Note call flow and dependencies (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    document_flow: Option<bool>,
    /// Improve existing docs rather than add new ones (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    update_existing: Option<bool>,
    /// Comment complex logic inline (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    comments_on_complex_logic: Option<bool>,
}

impl Workflow for DocGen {
    type Extra = Extra;
    type Confidence = Certainty;
    const NAME: &'static str = "docgen";
    const DESCRIPTION: &'static str = "Document code file by file in steps (function docs, complexity, call flow); \
         exai keeps count so no file is skipped. Does not call a model.";
    const PROMPT: &'static str = include_str!("prompts/docgen.txt");
    const PAUSE: &'static str = "pause_for_documentation_analysis";
    const COMPLETE: &'static str = "documentation_analysis_complete";
    const EXPERT: Expert = Expert::Never;
    const ACTIONS: Actions = Actions {
        first: &[
            "List every file to document and set total_files_to_document",
            "Read the first file and note what lacks documentation",
            "Document that file, then report num_files_documented",
        ],
        middle: &[
            "Document the next file: functions, types, complexity and call flow",
            "Keep documentation accurate to the code; do not change behaviour",
            "Report num_files_documented after each file",
        ],
        closing: &[
            "Document the remaining files",
            "Check num_files_documented equals total_files_to_document",
            "Finish with next_step_required false",
        ],
    };

    fn check(args: &Arguments<Self>, _steps: &Steps<Self>) -> Result<Option<Value>, Refusal> {
        let (done, total) = (
            args.extra.num_files_documented,
            args.extra.total_files_to_document,
        );
        if done > total {
            return Err(Miscount::MoreThanAll { done, total }.into());
        }
        if !args.report.next_step_required && done < total {
            let left = total - done;
            return Err(Miscount::Unfinished { done, total, left }.into());
        }
        Ok(None)
    }
}
