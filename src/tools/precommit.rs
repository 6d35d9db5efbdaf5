//! `precommit`: checking changes before a commit in steps. exai reads the repository itself
//! (status, staged and unstaged diffs, or the diff against a ref) and gives the expert the
//! actual diff; secret files never leave the machine.

use std::path::{Path, PathBuf};
use std::time::Instant;

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ToolContext;
use super::consult::blocking_failure;
use super::git::{Git, GitError};
use super::workflow::{
    Actions, Arguments, Certainty, Gathered, Refusal, Steps, Validation, Workflow, text_section,
};
use crate::calls::{FailureKind, ToolFailure};
use crate::files;

pub struct PreCommit;

/// Most diff text given to the expert.
const MAX_DIFF_BYTES: usize = 160 * 1024;
/// Most changed paths listed back to the agent.
const MAX_LISTED: usize = 50;

/// Why precommit cannot read the repository it was given.
#[derive(Debug, thiserror::Error)]
enum BadRepository {
    #[error("precommit needs `path`: the absolute path of the repository")]
    NoPath,
    #[error("path {0:?} is not absolute; give the repository's full path")]
    Relative(String),
    #[error("compare_to {0:?} is not a git ref")]
    NotARef(String),
}

/// `precommit`'s own fields.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
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
    type Confidence = Certainty;
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

    fn check(args: &Arguments<Self>, steps: &Steps<Self>) -> Result<Option<Value>, Refusal> {
        let path = args
            .extra
            .path
            .as_deref()
            .or_else(|| steps.latest(|e| e.path.as_deref()));
        match path {
            None => Err(BadRepository::NoPath.into()),
            Some(p) if !Path::new(p).is_absolute() => Err(BadRepository::Relative(p.into()).into()),
            Some(_) => match &args.extra.compare_to {
                Some(r) if r.starts_with('-') || r.trim().is_empty() => {
                    Err(BadRepository::NotARef(r.clone()).into())
                }
                _ => Ok(None),
            },
        }
    }

    fn skip_expert(steps: &Steps<Self>) -> Option<String> {
        (steps.latest(|e| e.precommit_type.as_ref()) == Some(&Validation::Internal))
            .then(|| "precommit_type is internal".to_string())
    }

    fn brief(steps: &Steps<Self>) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(text_section(
            "## Review focus",
            steps.latest(|e| e.focus_on.as_deref()),
        ));
        out.extend(text_section(
            "## Report severities from",
            steps.latest(|e| e.severity_filter.as_deref()),
        ));
        out
    }

    fn gather(
        ctx: &ToolContext,
        steps: &Steps<Self>,
        last: bool,
    ) -> BoxFuture<'static, Result<Gathered, ToolFailure>> {
        let path = steps
            .latest(|e| e.path.as_deref())
            .unwrap_or_default()
            .to_string();
        let wanted = Wanted {
            compare_to: steps
                .latest(|e| e.compare_to.as_deref())
                .map(str::to_string),
            staged: *steps.latest(|e| e.include_staged.as_ref()).unwrap_or(&true),
            unstaged: *steps
                .latest(|e| e.include_unstaged.as_ref())
                .unwrap_or(&true),
        };
        let roots = ctx.file_policy();
        let deadline = ctx.call.deadline;
        ctx.call.progress.set_stage("reading the repository");
        Box::pin(async move {
            let dir =
                crate::spawn::blocking(move || files::resolve(&path, &roots).map(|p| (p, roots)))
                    .await
                    .map_err(blocking_failure)?
                    .map_err(|why| {
                        ToolFailure::new(
                            FailureKind::BadArguments,
                            format!("precommit path: {why}"),
                        )
                    })?;
            read_repository(&dir.0, &dir.1, &wanted, last, deadline).await
        })
    }
}

/// What the agent is shown of the repository at each step (`gathered` in the answer).
#[derive(Serialize)]
struct RepositoryState {
    repository: String,
    branch: String,
    staged: usize,
    unstaged: usize,
    untracked: usize,
    /// `git status` lines, the first `MAX_LISTED`.
    changed: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    changed_not_listed: Option<usize>,
    /// At the last step: the bytes of diff given to the expert.
    #[serde(skip_serializing_if = "Option::is_none")]
    diff_bytes: Option<usize>,
}

impl RepositoryState {
    fn as_value(&self) -> Result<Value, ToolFailure> {
        super::tool::to_json("repository state", self)
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
    let listing = git.run(&args, MAX_LISTING_BYTES).await?;
    let mut names: Vec<&str> = listing.text.split('\0').collect();
    // Each name ends in NUL: what follows the last one is empty, or a name cut by the cap.
    names.pop();
    let cut = listing.truncated.then(|| {
        "the files git lists past its first 4 MiB of names — more changed files than one review \
         takes; review them in smaller parts (compare_to, or stage part of it)"
            .to_string()
    });
    if let Some(outside) = names.iter().find(|name| leaves_the_worktree(name)) {
        return Err(GitError::Outside(files::shown::name(outside)));
    }
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
    // Names as a person reads them: a name holding a newline cannot write a note of its own.
    let mut withheld: Vec<String> = withheld
        .into_iter()
        .map(|(name, why)| format!("{} — {why}", files::shown::name(&name)))
        .collect();
    withheld.extend(inseparable.into_iter().map(|path| {
        format!(
            "{} — a withheld file lies under this path: its diff cannot be sent without it",
            files::shown::name(&path)
        )
    }));
    withheld.extend(cut);
    Ok((shown, withheld))
}

/// Most bytes of names one listing of changed files is read for.
const MAX_LISTING_BYTES: usize = 4 * 1024 * 1024;

/// Most bytes of paths one git command is given: the kernel refuses to start a program whose
/// arguments pass about 2 MiB (E2BIG), so a change of tens of thousands of files is diffed in
/// parts.
const MAX_PATHSPEC_BYTES: usize = 256 * 1024;

/// `shown` in runs whose paths together stay within [`MAX_PATHSPEC_BYTES`] (a run holds one path
/// at least).
fn pathspec_runs(shown: &[String]) -> Vec<&[String]> {
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, path) in shown.iter().enumerate() {
        if i > start && bytes + path.len() + 1 > MAX_PATHSPEC_BYTES {
            runs.push(&shown[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += path.len() + 1;
    }
    if start < shown.len() {
        runs.push(&shown[start..]);
    }
    runs
}

/// The file headers git may write for each of `shown`, with the name each stands for.
fn headers_of(shown: &[String]) -> std::collections::HashMap<String, &str> {
    // Git quotes a name holding control characters, `"` or `\` (core.quotePath is false); a later
    // git may quote more (spaces), so the always-quoted form is accepted too.
    let forms = |name: &str| [c_quoted(name, false), c_quoted(name, true)];
    shown
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
            .map(|header| (header, path.as_str()))
        })
        .collect()
}

/// Whether a name git listed points outside the worktree (absolute, or through `..`): git
/// writes no such name in an index, but reads one a clone crafted.
fn leaves_the_worktree(name: &str) -> bool {
    let path = Path::new(name);
    path.is_absolute()
        || path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
}

/// A file header in `diff` that names none of `shown`, if there is one. Pathspecs are literal,
/// so git gives the diff of exactly `shown`; this makes sure, so that nothing withheld is ever
/// sent whatever git did.
fn stray_header<'a>(diff: &'a str, shown: &[String]) -> Option<&'a str> {
    let expected = headers_of(shown);
    diff.split('\n')
        .filter(|line| line.starts_with("diff --"))
        .find(|line| !expected.contains_key(*line))
}

/// `diff` without the section of any file whose lines hold a private key (an added key, a
/// removed one, a changed line next to one), and the names of those files. Each section is
/// checked as the model would see it, whatever the file is called.
fn without_private_keys(diff: &str, shown: &[String]) -> (String, Vec<String>) {
    let headers = headers_of(shown);
    let mut starts: Vec<usize> = diff
        .match_indices("\ndiff --")
        .map(|(at, _)| at + 1)
        .collect();
    if diff.starts_with("diff --") {
        starts.insert(0, 0);
    }
    let sections: Vec<(&str, &str)> = starts
        .iter()
        .enumerate()
        .map(|(i, start)| {
            let section = &diff[*start..starts.get(i + 1).copied().unwrap_or(diff.len())];
            let header = section.lines().next().unwrap_or_default();
            (headers.get(header).map_or(header, |name| *name), section)
        })
        .collect();
    // By name: one path can have two sections (a file turned into a link), and neither goes
    // when either holds a key.
    let mut withheld: Vec<String> = Vec::new();
    let mut keyed = std::collections::HashSet::new();
    for (name, section) in &sections {
        if !keyed.contains(name) && files::holds_a_private_key(section) {
            keyed.insert(*name);
            withheld.push(name.to_string());
        }
    }
    let mut kept = String::with_capacity(diff.len());
    kept.push_str(&diff[..starts.first().copied().unwrap_or(diff.len())]);
    for (name, section) in &sections {
        if !keyed.contains(name) {
            kept.push_str(section);
        }
    }
    (kept, withheld)
}

/// A Markdown fence longer than any run of backticks in `text`, so no line of it (a diff's
/// context line `` ```, say) can close the fence and put text outside it.
fn fence_for(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
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
        // Only ASCII is special here, which shown::escaped writes as git does.
        match special(c) {
            true => files::shown::escaped(c, &mut out),
            false => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Where git found a repository for the directory given, as exai checks it before diffing.
struct Repository {
    /// The directory given (canonical).
    given: PathBuf,
    /// The worktree git named.
    top: PathBuf,
    git_dir: PathBuf,
    /// `core.worktree` in the git directory's config, when that is not `top/.git`.
    core_worktree: Option<String>,
}

impl Repository {
    /// The worktree, if exai may diff it (blocking: it looks at the disk). A repository's
    /// config may move its worktree anywhere (`core.worktree = ../../victim`), and a `.git` file
    /// may name another repository's git directory (whose index and commits would then be
    /// diffed against these files, showing that repository's text): the worktree must be the
    /// directory given or hold it, pass the file policy, and own its git directory.
    fn worktree(&self, policy: &files::Policy) -> Result<PathBuf, String> {
        let canonical = |path: &Path| {
            path.canonicalize()
                .map_err(|e| format!("{} cannot be read: {e}", path.display()))
        };
        let top = canonical(&self.top)?;
        if !self.given.starts_with(&top) {
            return Err(format!(
                "the repository's config moves its worktree to {}, outside the directory \
                 given; exai diffs only the repository it was given",
                top.display()
            ));
        }
        if let Some(why) = files::refusal(&top, policy) {
            return Err(format!("its worktree {}: {why}", top.display()));
        }
        let git_dir = canonical(&self.git_dir)?;
        let own = top.join(".git");
        // A linked worktree's git directory names its `.git` file in `gitdir`; a submodule's
        // names its worktree in `core.worktree`.
        let linked = || {
            files::read_regular(&git_dir.join("gitdir"), 4096)
                .ok()
                .and_then(|text| canonical(Path::new(String::from_utf8_lossy(&text).trim())).ok())
                .is_some_and(|named| named == own)
        };
        // Only a submodule's git directory (`.git/modules/NAME`) names its worktree in its
        // config: a directory of the clone that is itself a git directory does not count, on a
        // git too old for safe.bareRepository.
        let configured = || {
            let a_submodules = git_dir.components().any(|c| c.as_os_str() == ".git");
            a_submodules
                && (self.core_worktree.as_deref())
                    .and_then(|named| canonical(&git_dir.join(named)).ok())
                    .is_some_and(|named| named == top)
        };
        if git_dir == own || linked() || configured() {
            return Ok(top);
        }
        Err(format!(
            "its .git names the git directory of another repository ({}); exai diffs a \
             repository only with its own",
            git_dir.display()
        ))
    }
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
    let found = git
        .run(
            &["rev-parse", "--show-toplevel", "--absolute-git-dir"],
            8192,
        )
        .await
        .map_err(|e| git_failure(format!("{} is not a git repository ({e})", dir.display())))?;
    let mut lines = found.text.lines();
    let (top, git_dir) = (
        PathBuf::from(lines.next().unwrap_or_default()),
        PathBuf::from(lines.next().unwrap_or_default()),
    );
    // A git directory away from its worktree (a linked worktree, a submodule) says where its
    // worktree is in its config, or in a `gitdir` file.
    let core_worktree = match git_dir == top.join(".git") {
        true => None,
        false => (git.run(&["config", "--get", "core.worktree"], 8192).await)
            .ok()
            .map(|found| found.text.trim().to_string()),
    };
    let repository = Repository {
        given: dir.to_path_buf(),
        top,
        git_dir,
        core_worktree,
    };
    let policy = roots.clone();
    let top = crate::spawn::blocking(move || repository.worktree(&policy))
        .await
        .map_err(blocking_failure)?
        .map_err(|why| git_failure(format!("{}: {why}", dir.display())))?;
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

    let mut summary = RepositoryState {
        repository: top.display().to_string(),
        branch: branch.clone(),
        staged,
        unstaged,
        untracked,
        changed: entries
            .iter()
            .take(MAX_LISTED)
            .map(|l| l.to_string())
            .collect(),
        changed_not_listed: entries.len().checked_sub(MAX_LISTED).filter(|n| *n > 0),
        diff_bytes: None,
    };
    let mut gathered = Gathered::default();
    if diffs.is_empty() {
        gathered.notes.push(
            "include_staged and include_unstaged are both false: there is no diff to review."
                .into(),
        );
    }
    if !last {
        gathered.summary = Some(summary.as_value()?);
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
        let (mut diff, mut truncated) = (String::new(), false);
        for run in pathspec_runs(&shown) {
            let mut args = base.clone();
            args.push("--");
            args.extend(run.iter().map(String::as_str));
            let room = left.saturating_sub(diff.len()).max(1);
            let output = git.run(&args, room).await.map_err(git_failure)?;
            diff.push_str(&output.text);
            if output.truncated {
                truncated = true;
                break;
            }
        }
        if truncated {
            // Whole lines only: a header cut in half could not be checked.
            diff.truncate(diff.rfind('\n').map_or(0, |end| end + 1));
        }
        if let Some(header) = stray_header(&diff, &shown) {
            return Err(git_failure(format!(
                "git's diff of {label} holds a file that was not asked for ({header}); nothing was sent to the model"
            )));
        }
        let (diff, keyed) = without_private_keys(&diff, &shown);
        for name in &keyed {
            gathered.notes.push(format!(
                "not sent to the model: {} — {}",
                files::shown::name(name),
                files::Denied::KeyInside
            ));
        }
        let keyed_names: std::collections::HashSet<&str> =
            keyed.iter().map(String::as_str).collect();
        let sent = shown
            .iter()
            .filter(|name| !keyed_names.contains(name.as_str()))
            .count();
        if sent == 0 {
            continue;
        }
        empty = false;
        left = left.saturating_sub(diff.len());
        let fence = fence_for(&diff);
        brief.push_str(&format!(
            "\n### {label} ({sent} file(s))\n{fence}diff\n{diff}\n{fence}\n"
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
    summary.diff_bytes = Some(MAX_DIFF_BYTES - left);
    gathered.summary = Some(summary.as_value()?);
    gathered.brief = Some(brief);
    Ok(gathered)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::workflow::Certainty;
    use super::*;

    #[test]
    fn pathspecs_go_to_git_in_runs_within_the_bound_and_all_of_them_once() {
        let paths: Vec<String> = (0..5_000)
            .map(|i| format!("d/{}{i}", "n".repeat(120)))
            .collect();
        let runs = pathspec_runs(&paths);
        assert!(runs.len() > 1);
        for run in &runs {
            assert!(run.iter().map(|p| p.len() + 1).sum::<usize>() <= MAX_PATHSPEC_BYTES);
        }
        assert_eq!(runs.concat(), paths);
        // A path longer than the bound still goes, alone.
        let long = vec!["x".repeat(MAX_PATHSPEC_BYTES + 1), "y".into()];
        assert_eq!(pathspec_runs(&long), [&long[..1], &long[1..]]);
        assert!(pathspec_runs(&[]).is_empty());
    }
    use crate::threads::{Thread, Turn};

    /// Records as earlier versions stored them (the tool's fields as a JSON object, or null)
    /// still load, and the latest value of a field is found where a later step left it out.
    #[test]
    fn stored_records_load_with_their_own_fields_typed() {
        let stored = |n: u32, extra: Value| {
            json!({
                "step": "s", "step_number": n, "total_steps": 3, "next_step_required": true,
                "findings": "", "files_checked": [], "relevant_files": [],
                "relevant_context": [], "issues_found": [], "images": [],
                "confidence": "high", "hypothesis": null, "backtrack_from_step": null,
                "extra": extra,
            })
        };
        let mut thread = Thread::default();
        for (n, extra) in [
            (
                1,
                json!({"path": "/repo", "compare_to": "main", "include_staged": false}),
            ),
            (2, json!({})),
            (3, Value::Null),
        ] {
            thread.turns.push(Turn {
                step: Some(stored(n, extra)),
                ..Turn::asked("precommit", "step".into(), Vec::new())
            });
        }
        let steps = Steps::<PreCommit>::of(&thread);
        assert_eq!(steps.steps.len(), 3);
        assert_eq!(steps.confidence(), Some(Certainty::High));
        assert_eq!(steps.latest(|e| e.path.as_deref()), Some("/repo"));
        assert_eq!(steps.latest(|e| e.include_staged.as_ref()), Some(&false));
        assert_eq!(steps.latest(|e| e.include_unstaged.as_ref()), None);
        // Written back, a record is what was stored (the field left out stays out).
        let again = serde_json::to_value(&steps.steps[1]).unwrap();
        assert_eq!(again, stored(2, json!({})));
    }

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

    /// A directory of the clone that is itself a git directory naming itself its worktree (what
    /// an old git, without safe.bareRepository, finds there) is not a repository exai diffs.
    #[test]
    fn a_git_directory_that_names_itself_its_worktree_is_refused() {
        let vendor = crate::scratch::scratch_dir("bare").canonicalize().unwrap();
        let repository = Repository {
            given: vendor.clone(),
            top: vendor.clone(),
            git_dir: vendor.clone(),
            core_worktree: Some(".".into()),
        };
        let refused = repository.worktree(&files::Policy::default());
        assert!(
            refused
                .as_ref()
                .is_err_and(|why| why.contains("git directory of another repository")),
            "{refused:?}"
        );
        let _ = std::fs::remove_dir_all(vendor);
    }

    #[test]
    fn a_name_leaving_the_worktree_is_found() {
        for outside in ["../../secret.txt", "/etc/passwd", "a/../../b", ".."] {
            assert!(leaves_the_worktree(outside), "{outside}");
        }
        for inside in ["a/b.rs", "..hidden", "a..b/c", "./x"] {
            assert!(!leaves_the_worktree(inside), "{inside}");
        }
    }

    #[test]
    fn a_section_holding_a_key_is_taken_out_whole() {
        let shown = vec!["a.rs".to_string(), "we\"ird".to_string()];
        let diff = "diff --git a/a.rs b/a.rs\n+fn a() {}\n\
                    diff --git \"a/we\\\"ird\" \"b/we\\\"ird\"\n+-----BEGIN EC PRIVATE KEY-----\n+MHc\n";
        let (kept, withheld) = without_private_keys(diff, &shown);
        assert_eq!(kept, "diff --git a/a.rs b/a.rs\n+fn a() {}\n");
        assert_eq!(withheld, ["we\"ird"]);
        assert_eq!(without_private_keys(diff, &shown[..1]).1.len(), 1);
    }

    #[test]
    fn a_path_with_two_sections_goes_whole_or_not_at_all_and_is_named_once() {
        // A file holding a key turned into a link: git writes the file's removal and the link's
        // addition as two sections of one path.
        let shown = vec!["x".to_string(), "y.rs".to_string()];
        let diff = "diff --git a/x b/x\n-----BEGIN RSA PRIVATE KEY-----\n-MII\n\
                    diff --git a/x b/x\n+target\n\
                    diff --git a/y.rs b/y.rs\n+fn y() {}\n";
        let (kept, withheld) = without_private_keys(diff, &shown);
        assert_eq!(kept, "diff --git a/y.rs b/y.rs\n+fn y() {}\n");
        assert_eq!(withheld, ["x"]);
    }

    #[test]
    fn no_line_of_a_diff_closes_its_fence() {
        assert_eq!(fence_for("+plain\n"), "```");
        assert_eq!(fence_for(" ```\n+````rust\n"), "`````");
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
