//! `testgen`: test planning in steps; an expert model writes the tests at the end.

use super::workflow::{Actions, Certainty, NoExtra, Workflow};

pub struct TestGen;

impl Workflow for TestGen {
    type Extra = NoExtra;
    type Confidence = Certainty;
    const NAME: &'static str = "testgen";
    const DESCRIPTION: &'static str = "Plan tests for code in steps (paths, edge cases, failure modes); at the last step \
         an expert model writes them in the project's style. Step 1 names the files.";
    const PROMPT: &'static str = include_str!("prompts/testgen.txt");
    const PAUSE: &'static str = "pause_for_test_analysis";
    const COMPLETE: &'static str = "test_generation_complete_ready_for_implementation";
    const FILES_AT_START: bool = true;
    const ACTIONS: Actions = Actions {
        first: &[
            "Read the code to test and list its public behaviour",
            "Find the existing tests and note their framework, helpers and style",
            "List the paths through the code that matter",
        ],
        middle: &[
            "List edge cases: empty, huge, malformed, concurrent, failing dependencies",
            "Decide what each test asserts and what it needs set up",
            "Add an existing test file as a style example to relevant_files",
        ],
        closing: &[
            "Check the plan covers failures as well as successes",
            "Make sure relevant_files holds the code and a sample test",
            "Finish with next_step_required false to get the tests written",
        ],
    };
}
