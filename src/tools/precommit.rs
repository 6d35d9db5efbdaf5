//! `precommit`: checking changes before a commit in steps. exai reads the repository itself
//! (status, staged and unstaged diffs, or the diff against a ref) and gives the expert the
//! actual diff; secret files never leave the machine.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use super::ToolContext;
use super::consult::blocking_failure;
use super::workflow::{
    Actions, Gathered, StepArguments, Steps, Validation, Workflow, text_section,
};
use crate::calls::ToolFailure;
use crate::files;

pub struct PreCommit;

/// Most diff text given to the expert.
const MAX_DIFF_BYTES: usize = 160 * 1024;
/// Longest a single git command may take.
const GIT_TIMEOUT: Duration = Duration::from_secs(30);
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
            .map_err(|why| ToolFailure::new("bad_arguments", format!("precommit path: {why}")))?;
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

fn git_failure(message: String) -> ToolFailure {
    ToolFailure::new("git", message)
}

/// Runs git in `dir`, keeping at most `cap` bytes of its output; bounded by `deadline`.
async fn git(
    dir: &Path,
    args: &[&str],
    cap: usize,
    deadline: Instant,
) -> Result<(String, bool), String> {
    let mut child = tokio::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("could not run git: {e}"))?;
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err("git's output could not be read".into());
    };
    let limit = deadline.min(Instant::now() + GIT_TIMEOUT);
    let run = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut stdout = (&mut stdout).take(cap as u64 + 1);
        let mut stderr = (&mut stderr).take(8 * 1024);
        let (read_out, _) =
            tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
        read_out.map_err(|e| format!("reading git's output: {e}"))?;
        let truncated = out.len() > cap;
        if truncated {
            out.truncate(cap);
            // The rest is not wanted: stop git rather than drain it.
            let _ = child.start_kill();
        }
        let status = child
            .wait()
            .await
            .map_err(|e| format!("waiting for git: {e}"))?;
        if !status.success() && !truncated {
            return Err(format!(
                "git {} failed: {}",
                args.first().copied().unwrap_or(""),
                String::from_utf8_lossy(&err).trim()
            ));
        }
        Ok((String::from_utf8_lossy(&out).into_owned(), truncated))
    };
    tokio::time::timeout_at(limit.into(), run)
        .await
        .map_err(|_| format!("git {} took longer than {GIT_TIMEOUT:?}", args.join(" ")))?
}

/// Changed paths of one diff, split into those that may be shown and those that may not.
async fn changed(
    dir: &Path,
    base: &[&str],
    roots: &files::Policy,
    deadline: Instant,
) -> Result<(Vec<String>, Vec<String>), String> {
    let mut args = base.to_vec();
    args.extend(["--name-only", "-z"]);
    let (names, _) = git(dir, &args, 4 * 1024 * 1024, deadline).await?;
    let (mut shown, mut withheld) = (Vec::new(), Vec::new());
    for name in names.split('\0').filter(|n| !n.is_empty()) {
        match files::refusal(&dir.join(name), roots) {
            Some(why) => withheld.push(format!("{name} — {why}")),
            None => shown.push(name.to_string()),
        }
    }
    Ok((shown, withheld))
}

async fn read_repository(
    dir: &Path,
    roots: &files::Policy,
    wanted: &Wanted,
    last: bool,
    deadline: Instant,
) -> Result<Gathered, ToolFailure> {
    let (top, _) = git(dir, &["rev-parse", "--show-toplevel"], 4096, deadline)
        .await
        .map_err(|e| git_failure(format!("{} is not a git repository ({e})", dir.display())))?;
    let top = PathBuf::from(top.trim());
    let (status, _) = git(
        &top,
        &[
            "status",
            "--porcelain=v1",
            "--branch",
            "--untracked-files=all",
        ],
        1024 * 1024,
        deadline,
    )
    .await
    .map_err(git_failure)?;
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
    if let Some(reference) = &wanted.compare_to {
        git(
            &top,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{reference}^{{commit}}"),
            ],
            4096,
            deadline,
        )
        .await
        .map_err(|_| {
            git_failure(format!(
                "compare_to {reference:?} is not a commit, branch or tag in {}",
                top.display()
            ))
        })?;
        diffs.push((
            format!("changes since {reference}"),
            vec!["diff", "--no-color", "--no-ext-diff", reference.as_str()],
        ));
    } else {
        if wanted.staged {
            diffs.push((
                "staged changes".into(),
                vec!["diff", "--no-color", "--no-ext-diff", "--cached"],
            ));
        }
        if wanted.unstaged {
            diffs.push((
                "unstaged changes".into(),
                vec!["diff", "--no-color", "--no-ext-diff"],
            ));
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
        let (shown, withheld) = changed(&top, base, roots, deadline)
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
        let (diff, truncated) = git(&top, &args, left.max(1), deadline)
            .await
            .map_err(git_failure)?;
        left = left.saturating_sub(diff.len());
        brief.push_str(&format!(
            "\n### {label} ({} file(s))\n```diff\n{diff}\n```\n",
            shown.len()
        ));
        if truncated {
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
