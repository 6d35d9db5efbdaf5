//! `precommit`: checking changes before a commit in steps. exai reads the repository itself
//! (status, staged and unstaged diffs, or the diff against a ref) and gives the expert the
//! actual diff; secret files never leave the machine.

use std::path::{Path, PathBuf};
use std::time::Instant;

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ToolContext;
use super::consult::blocking_failure;
use super::git::{Git, GitError};
use super::workflow::{
    Actions, Gathered, StepArguments, Steps, Validation, Workflow, text_section,
};
use crate::calls::{FailureKind, ToolFailure};
use crate::files;

pub struct PreCommit;

/// Most diff text given to the expert.
const MAX_DIFF_BYTES: usize = 160 * 1024;
/// Most changed paths listed back to the agent.
const MAX_LISTED: usize = 50;

/// `precommit`'s own fields.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct Extra {
    /// Absolute path of the repository (required at step 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    /// A ref (branch, tag, commit) to diff against instead of staged/unstaged changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    compare_to: Option<String>,
    /// Include staged changes (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    include_staged: Option<bool>,
    /// Include unstaged changes (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    include_unstaged: Option<bool>,
    /// What to look at especially.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    focus_on: Option<String>,
    /// Lowest severity to report: critical, high, medium, low or all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    severity_filter: Option<String>,
    /// external (default) asks the expert at the end; internal does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    precommit_type: Option<Validation>,
}

impl Workflow for PreCommit {
    type Extra = Extra;
    const NAME: &'static str = "precommit";
    const DESCRIPTION: &'static str = "Check changes before committing, in steps: exai reads the repository's status and \
         diffs itself; at the last step an expert model reviews the diff against your intent.";
    const PROMPT: &'static str = include_str!("prompts/precommit.txt");
    const PAUSE: &'static str = "pause_for_validation";
    const COMPLETE: &'static str = "validation_complete_ready_for_commit";
    const ACTIONS: Actions = Actions {
        first: &[
            "Read the changed files listed under gathered.changed, not only the diff",
            "State what the change is meant to do in findings",
            "Look for code the change affects outside the diff (callers, tests, docs)",
        ],
        middle: &[
            "Check each change for bugs, regressions and missing error handling",
            "Check tests cover the change; run them",
            "Look for secrets, debug leftovers and unintended files",
        ],
        closing: &[
            "Re-check the findings that would block the commit",
            "Make sure relevant_files holds the changed files that matter",
            "Finish with next_step_required false for the expert review of the diff",
        ],
    };

    fn check(args: &StepArguments<Extra>, steps: &Steps) -> Result<Option<Value>, String> {
        let path = args.extra.path.clone().or_else(|| {
            steps
                .extra("path")
                .and_then(|v| v.as_str().map(str::to_string))
        });
        match path {
            None => Err("precommit needs `path`: the absolute path of the repository".into()),
            Some(p) if !Path::new(&p).is_absolute() => Err(format!(
                "path {p:?} is not absolute; give the repository's full path"
            )),
            Some(_) => match &args.extra.compare_to {
                Some(r) if r.starts_with('-') || r.trim().is_empty() => {
                    Err(format!("compare_to {r:?} is not a git ref"))
                }
                _ => Ok(None),
            },
        }
    }

    fn skip_expert(steps: &Steps) -> Option<String> {
        (steps.extra("precommit_type").and_then(|v| v.as_str()) == Some("internal"))
            .then(|| "precommit_type is internal".to_string())
    }

    fn brief(steps: &Steps) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(text_section(steps, "focus_on", "## Review focus"));
        out.extend(text_section(
            steps,
            "severity_filter",
            "## Report severities from",
        ));
        out
    }

    fn gather(
        ctx: &ToolContext,
        steps: &Steps,
        last: bool,
    ) -> BoxFuture<'static, Result<Gathered, ToolFailure>> {
        let path = steps
            .extra("path")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .unwrap_or_default();
        let flag = |name: &str| steps.extra(name).and_then(|v| v.as_bool()).unwrap_or(true);
        let wanted = Wanted {
            compare_to: steps
                .extra("compare_to")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            staged: flag("include_staged"),
            unstaged: flag("include_unstaged"),
        };
        let roots = files::Policy::of(&ctx.config);
        let deadline = ctx.call.deadline;
        ctx.call.progress.set_stage("reading the repository");
        Box::pin(async move {
            let dir = tokio::task::spawn_blocking(move || {
                files::resolve(&path, &roots).map(|p| (p, roots))
            })
            .await
            .map_err(blocking_failure)?
            .map_err(|why| {
                ToolFailure::new(FailureKind::BadArguments, format!("precommit path: {why}"))
            })?;
            read_repository(&dir.0, &dir.1, &wanted, last, deadline).await
        })
    }
}

/// Which changes the agent wants reviewed.
struct Wanted {
    compare_to: Option<String>,
    staged: bool,
    unstaged: bool,
}

fn git_failure(message: impl ToString) -> ToolFailure {
    ToolFailure::new(FailureKind::Git, message.to_string())
}

/// Switches of every `git diff`: no external diff or textconv program, no submodule (git would
/// run child gits inside it, under its own config), no colour, renames as delete plus add (so a
/// renamed secret is withheld under its old name), fixed `a/`/`b/` prefixes whatever the
/// repository's config says, and no order file (a repository could name a FIFO).
const DIFF: &[&str] = &[
    "diff",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--no-renames",
    "--ignore-submodules=all",
    "--src-prefix=a/",
    "--dst-prefix=b/",
    "-O/dev/null",
];

/// Changed paths of one diff, split into those that may be shown and those that may not (with
/// the reason).
async fn changed(
    git: &Git,
    top: &Path,
    base: &[&str],
    roots: &files::Policy,
) -> Result<(Vec<String>, Vec<String>), GitError> {
    let mut args = base.to_vec();
    args.extend(["--name-only", "-z"]);
    let listing = git.run(&args, 4 * 1024 * 1024).await?;
    let mut names: Vec<&str> = listing.text.split('\0').collect();
    // Each name ends in NUL: what follows the last one is empty, or a name cut by the cap.
    names.pop();
    let (mut shown, mut withheld) = (Vec::new(), Vec::new());
    for name in names.into_iter().filter(|n| !n.is_empty()) {
        match files::refusal(&top.join(name), roots) {
            Some(why) => withheld.push((name.to_string(), why)),
            None => shown.push(name.to_string()),
        }
    }
    // A literal pathspec also takes in what lies under it: a file replaced by a directory
    // holding a withheld file (`cfg` → `cfg/.env`) cannot be shown without it. Sorted, the
    // first withheld name at or after `cfg/` tells (no pairwise comparison of long lists).
    let mut withheld_names: Vec<&str> = withheld.iter().map(|(name, _)| name.as_str()).collect();
    withheld_names.sort_unstable();
    let holds_withheld = |path: &String| {
        let dir = format!("{path}/");
        let at = withheld_names.partition_point(|name| *name < dir.as_str());
        withheld_names
            .get(at)
            .is_some_and(|name| name.starts_with(&dir))
    };
    let (inseparable, shown): (Vec<String>, Vec<String>) =
        shown.into_iter().partition(holds_withheld);
    let mut withheld: Vec<String> = withheld
        .into_iter()
        .map(|(name, why)| format!("{name} — {why}"))
        .collect();
    withheld.extend(inseparable.into_iter().map(|path| {
        format!("{path} — a withheld file lies under this path: its diff cannot be sent without it")
    }));
    Ok((shown, withheld))
}

/// A file header in `diff` that names none of `shown`, if there is one. Pathspecs are literal,
/// so git gives the diff of exactly `shown`; this makes sure, so that nothing withheld is ever
/// sent whatever git did.
fn stray_header<'a>(diff: &'a str, shown: &[String]) -> Option<&'a str> {
    // Git quotes a name holding control characters, `"` or `\` (core.quotePath is false); a later
    // git may quote more (spaces), so the always-quoted form is accepted too.
    let forms = |name: &str| [c_quoted(name, false), c_quoted(name, true)];
    let expected: std::collections::HashSet<String> = shown
        .iter()
        .flat_map(|path| {
            let (a, b, plain) = (
                forms(&format!("a/{path}")),
                forms(&format!("b/{path}")),
                forms(path),
            );
            [
                format!("diff --git {} {}", a[0], b[0]),
                format!("diff --git {} {}", a[1], b[1]),
                format!("diff --cc {}", plain[0]),
                format!("diff --cc {}", plain[1]),
                format!("diff --combined {}", plain[0]),
                format!("diff --combined {}", plain[1]),
            ]
        })
        .collect();
    diff.split('\n')
        .filter(|line| line.starts_with("diff --"))
        .find(|line| !expected.contains(*line))
}

/// `name` as git writes it in a diff header: as is, or in double quotes with C escapes when it
/// holds a control character, `"` or `\` (or always, if `always`).
fn c_quoted(name: &str, always: bool) -> String {
    let special = |c: char| c < ' ' || c == '\u{7f}' || c == '"' || c == '\\';
    if !always && !name.chars().any(special) {
        return name.to_string();
    }
    let mut out = String::from("\"");
    for c in name.chars() {
        match c {
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{b}' => out.push_str("\\v"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if special(c) => out.push_str(&format!("\\{:03o}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

async fn read_repository(
    dir: &Path,
    roots: &files::Policy,
    wanted: &Wanted,
    last: bool,
    deadline: Instant,
) -> Result<Gathered, ToolFailure> {
    let git = Git::open(dir, deadline).await.map_err(|e| {
        git_failure(format!(
            "{} could not be read with git ({e})",
            dir.display()
        ))
    })?;
    let top = git
        .run(&["rev-parse", "--show-toplevel"], 4096)
        .await
        .map_err(|e| git_failure(format!("{} is not a git repository ({e})", dir.display())))?;
    let top = PathBuf::from(top.text.trim());
    let git = git.at(&top);
    let status = git
        .run(
            &[
                "status",
                "--porcelain=v1",
                "--branch",
                "--untracked-files=all",
                "--ignore-submodules=all",
            ],
            1024 * 1024,
        )
        .await
        .map_err(git_failure)?
        .text;
    let mut lines = status.lines();
    let branch = lines
        .next()
        .and_then(|l| l.strip_prefix("## "))
        .unwrap_or("")
        .to_string();
    let entries: Vec<&str> = lines.collect();
    let count = |f: fn(&str) -> bool| entries.iter().filter(|l| f(l)).count();
    let staged = count(|l| !l.starts_with("??") && !l.starts_with(' '));
    let unstaged = count(|l| !l.starts_with("??") && l.chars().nth(1).is_some_and(|c| c != ' '));
    let untracked = count(|l| l.starts_with("??"));

    let mut diffs: Vec<(String, Vec<&str>)> = Vec::new();
    let with = |extra: &[&'static str]| DIFF.iter().chain(extra).copied().collect::<Vec<_>>();
    if let Some(reference) = &wanted.compare_to {
        git.run(
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{reference}^{{commit}}"),
            ],
            4096,
        )
        .await
        .map_err(|_| {
            git_failure(format!(
                "compare_to {reference:?} is not a commit, branch or tag in {}",
                top.display()
            ))
        })?;
        let mut args = with(&[]);
        args.push(reference.as_str());
        diffs.push((format!("changes since {reference}"), args));
    } else {
        if wanted.staged {
            diffs.push(("staged changes".into(), with(&["--cached"])));
        }
        if wanted.unstaged {
            diffs.push(("unstaged changes".into(), with(&[])));
        }
    }

    let mut summary = json!({
        "repository": top.display().to_string(),
        "branch": branch,
        "staged": staged,
        "unstaged": unstaged,
        "untracked": untracked,
        "changed": entries.iter().take(MAX_LISTED).map(|l| l.to_string()).collect::<Vec<_>>(),
    });
    if entries.len() > MAX_LISTED {
        summary["changed_not_listed"] = json!(entries.len() - MAX_LISTED);
    }
    let mut gathered = Gathered::default();
    if diffs.is_empty() {
        gathered.notes.push(
            "include_staged and include_unstaged are both false: there is no diff to review."
                .into(),
        );
    }
    if !last {
        gathered.summary = Some(summary);
        return Ok(gathered);
    }

    let mut brief = format!(
        "## Repository changes\nRepository: {}\nBranch: {branch}\n",
        top.display()
    );
    let mut left = MAX_DIFF_BYTES;
    let mut empty = true;
    for (label, base) in &diffs {
        let (shown, withheld) = changed(&git, &top, base, roots)
            .await
            .map_err(git_failure)?;
        for w in withheld {
            gathered.notes.push(format!("not sent to the model: {w}"));
        }
        if shown.is_empty() {
            continue;
        }
        empty = false;
        let mut args = base.clone();
        args.push("--");
        args.extend(shown.iter().map(String::as_str));
        let output = git.run(&args, left.max(1)).await.map_err(git_failure)?;
        let mut diff = output.text;
        if output.truncated {
            // Whole lines only: a header cut in half could not be checked.
            diff.truncate(diff.rfind('\n').map_or(0, |end| end + 1));
        }
        if let Some(header) = stray_header(&diff, &shown) {
            return Err(git_failure(format!(
                "git's diff of {label} holds a file that was not asked for ({header}); nothing was sent to the model"
            )));
        }
        left = left.saturating_sub(diff.len());
        brief.push_str(&format!(
            "\n### {label} ({} file(s))\n```diff\n{diff}\n```\n",
            shown.len()
        ));
        if output.truncated {
            gathered.notes.push(format!(
                "The diff of {label} was cut at {MAX_DIFF_BYTES} bytes; review the rest in smaller parts (compare_to, or stage part of it)."
            ));
        }
    }
    if untracked > 0 {
        brief.push_str(&format!(
            "\n{untracked} untracked file(s) are not in the diffs; they are shown only if listed in relevant_files.\n"
        ));
    }
    if empty {
        gathered
            .notes
            .push("git shows no changes to review in what was asked.".into());
    }
    summary["diff_bytes"] = json!(MAX_DIFF_BYTES - left);
    gathered.summary = Some(summary);
    gathered.brief = Some(brief);
    Ok(gathered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_as_git_quotes_them() {
        assert_eq!(c_quoted("src/main.rs", false), "src/main.rs");
        assert_eq!(c_quoted("a b/café.rs", false), "a b/café.rs");
        assert_eq!(c_quoted("a b", true), "\"a b\"");
        assert_eq!(
            c_quoted("t\tq\"b\\n\nbell\u{7}del\u{7f}esc\u{1b}", false),
            "\"t\\tq\\\"b\\\\n\\nbell\\adel\\177esc\\033\""
        );
    }

    #[test]
    fn a_header_of_a_file_not_shown_is_found() {
        let shown = vec!["*".to_string(), "we\"ird".to_string()];
        let diff = "diff --git a/* b/*\n+x\ndiff --git \"a/we\\\"ird\" \"b/we\\\"ird\"\n+y\n";
        assert_eq!(stray_header(diff, &shown), None);
        let leaked = format!("{diff}diff --git a/.env b/.env\n+API_KEY=1\n");
        assert_eq!(
            stray_header(&leaked, &shown),
            Some("diff --git a/.env b/.env")
        );
        assert_eq!(
            stray_header("diff --cc .env\n", &shown),
            Some("diff --cc .env")
        );
        assert_eq!(stray_header("diff --cc *\n", &shown), None);
    }
}
