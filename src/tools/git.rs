//! The system `git`, run so that nothing a repository or the user's git config names is executed.
//!
//! `precommit` reads status and diffs of repositories cloned from anywhere. Git runs programs named
//! in config (fsmonitor, hooks, clean/smudge/process filters, textconv, external diff, pager,
//! `core.sshCommand` on a lazy fetch) and in the environment. Every run here therefore gets:
//! - a cleared environment ([`ENVIRONMENT`] and `PATH` only): no system or global config, no
//!   `GIT_*` variable of the daemon's, no home directory to find user config or attributes in;
//! - command-scope settings ([`NEUTRAL`], then every filter and diff driver the repository's
//!   config defines, emptied) passed as `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n`,
//!   which git ranks above the repository's own config and which need no quoting;
//! - `--no-pager`, literal pathspecs, a cap on what is kept of the output, and a time limit.
//!
//! Callers add the per-command switches (`--no-ext-diff --no-textconv --ignore-submodules=all`,
//! see `precommit.rs`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

/// Longest a single git command may take.
pub const GIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Most of git's stderr kept for an error message (the rest is read and dropped).
const MAX_STDERR: u64 = 8 * 1024;
/// Most of `git config --get-regexp`'s output read when listing drivers.
const MAX_CONFIG_LISTING: usize = 1024 * 1024;
/// Most filter and diff drivers a repository may define; each costs a few settings.
pub const MAX_DRIVERS: usize = 512;

/// The whole environment of every git run, besides `PATH`.
const ENVIRONMENT: &[(&str, &str)] = &[
    ("LC_ALL", "C"),
    ("GIT_TERMINAL_PROMPT", "0"),
    ("GIT_OPTIONAL_LOCKS", "0"),
    // No system or user config: aliases, pagers, fsmonitor, filters, external diff of theirs.
    ("GIT_CONFIG_NOSYSTEM", "1"),
    ("GIT_CONFIG_GLOBAL", "/dev/null"),
    ("GIT_ATTR_NOSYSTEM", "1"),
    // No home: `~/.config/git/attributes` and friends resolve under a non-directory.
    ("HOME", "/dev/null"),
    ("XDG_CONFIG_HOME", "/dev/null"),
    // A tracked file named `*` is that file, not every file.
    ("GIT_LITERAL_PATHSPECS", "1"),
    // A partial clone missing an object would fetch it (ssh, remote helpers).
    ("GIT_NO_LAZY_FETCH", "1"),
];

/// Command-scope settings that outrank the repository's config and switch off what it could run.
const NEUTRAL: &[(&str, &str)] = &[
    ("core.fsmonitor", "false"),
    // No hook can exist under a file: post-index-change (which `git diff` runs when it refreshes
    // the index) and every other hook are gone, from `.git/hooks` or a configured hooksPath.
    ("core.hooksPath", "/dev/null"),
    // `cat` means "no pager" to git (nothing is started); `--no-pager` says it too.
    ("core.pager", "cat"),
    // Empty fails closed should anything consult it; diffs also pass `--no-ext-diff`.
    ("diff.external", ""),
    // Older gits without GIT_NO_LAZY_FETCH: no transport may run either.
    ("protocol.allow", "never"),
    // Headers quote only control characters, `"` and `\` (precommit checks them by name).
    ("core.quotePath", "false"),
    // A directory that is itself a git directory (`vendor/{HEAD,config,objects,refs}` in a
    // clone) is not taken as a repository: its config and index are the clone's author's.
    ("safe.bareRepository", "explicit"),
    // Files config names that git reads whole (`/dev/zero` runs git out of memory).
    ("core.attributesFile", "/dev/null"),
    ("core.excludesFile", "/dev/null"),
];

/// Settings emptied for each filter driver the repository's config defines. An empty clean or
/// smudge command and an empty process mean "no filter" to git; `required=false` lets the
/// content through unfiltered instead of failing.
const FILTER_NEUTRAL: &[(&str, &str)] = &[
    ("clean", ""),
    ("smudge", ""),
    ("process", ""),
    ("required", "false"),
];

/// Settings emptied for each diff driver the repository's config defines. Diffs pass
/// `--no-textconv --no-ext-diff`, so neither is consulted; should one be, git finds no program
/// to run and fails (nothing is executed).
const DIFF_NEUTRAL: &[(&str, &str)] = &[("textconv", ""), ("command", "")];

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("could not run git: {0}")]
    Spawn(std::io::Error),
    #[error("reading git's output: {0}")]
    Read(std::io::Error),
    #[error("git {command} failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("git {command} took longer than {limit:?}")]
    TookTooLong { command: String, limit: Duration },
    #[error("git {command} was stopped at the call's deadline")]
    Deadline { command: String },
    #[error(
        "the repository's config defines {count} filter and diff drivers; exai neutralises at most {MAX_DRIVERS} and reads no repository with more"
    )]
    TooManyDrivers { count: usize },
    #[error(
        "the repository's filter and diff settings exceed {MAX_CONFIG_LISTING} bytes; exai reads no repository with more"
    )]
    DriverSettings,
    #[error(
        "this git ignores settings given in GIT_CONFIG_COUNT, so it could run programs the repository names; exai needs git 2.31 or later"
    )]
    SettingsIgnored,
    /// A name in git's listing that leaves the worktree: a crafted index, never git's own.
    #[error(
        "git listed {0}, a path outside the repository (its index was not made by git); nothing was sent to the model"
    )]
    Outside(String),
}

/// What git printed, at most the cap asked for.
#[derive(Debug)]
pub struct Output {
    pub text: String,
    /// True when git had more to say than the cap (and was stopped).
    pub truncated: bool,
}

/// Git for one repository, with its drivers neutralised.
#[derive(Debug, Clone)]
pub struct Git {
    dir: PathBuf,
    settings: Vec<(String, String)>,
    deadline: Instant,
}

impl Git {
    /// Git in `dir`: lists the filter and diff drivers the repository's config (with its
    /// includes) defines — reading config runs nothing — and empties each, on top of [`NEUTRAL`].
    pub async fn open(dir: &Path, deadline: Instant) -> Result<Self, GitError> {
        let mut git = Self {
            dir: dir.to_path_buf(),
            settings: neutral(NEUTRAL),
            deadline,
        };
        let listing = git
            .run_allowing(
                &[
                    "config",
                    "--show-scope",
                    "-z",
                    "--get-regexp",
                    r"^(filter|diff)\.",
                ],
                MAX_CONFIG_LISTING,
                // 1: nothing listed, so not even our own settings: told below.
                &[1],
            )
            .await?;
        if listing.truncated {
            return Err(GitError::DriverSettings);
        }
        let drivers = Drivers::listed(&listing.text);
        if !drivers.settings_apply {
            return Err(GitError::SettingsIgnored);
        }
        let count = drivers.filter.len() + drivers.diff.len();
        if count > MAX_DRIVERS {
            return Err(GitError::TooManyDrivers { count });
        }
        git.settings.extend(drivers.neutral());
        Ok(git)
    }

    /// The same repository seen from `dir` (its top level, say).
    pub fn at(&self, dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            ..self.clone()
        }
    }

    /// Runs `git <args>`, keeping at most `cap` bytes of its output.
    pub async fn run(&self, args: &[&str], cap: usize) -> Result<Output, GitError> {
        self.run_allowing(args, cap, &[]).await
    }

    /// Like [`Git::run`], also accepting the exit codes in `ok_codes` (with what was printed).
    async fn run_allowing(
        &self,
        args: &[&str],
        cap: usize,
        ok_codes: &[i32],
    ) -> Result<Output, GitError> {
        let command = args.first().copied().unwrap_or("").to_string();
        let mut child = self.command(args).spawn().map_err(GitError::Spawn)?;
        let (Some(mut stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(GitError::Read(std::io::Error::other(
                "git's output was not piped",
            )));
        };
        let now = Instant::now();
        let by_deadline = self.deadline < now + GIT_TIMEOUT;
        let limit = self.deadline.min(now + GIT_TIMEOUT);
        let run = async {
            let mut out = Vec::new();
            let read_stdout = async {
                let read = (&mut stdout)
                    .take(cap as u64 + 1)
                    .read_to_end(&mut out)
                    .await;
                if out.len() > cap {
                    // The rest is not wanted: stop git rather than leave it blocked on a full pipe.
                    let _ = child.start_kill();
                }
                read
            };
            let (read, err) = tokio::join!(read_stdout, read_stderr(stderr));
            read.map_err(GitError::Read)?;
            let truncated = out.len() > cap;
            out.truncate(cap);
            let status = child.wait().await.map_err(GitError::Read)?;
            let accepted = status.success() || status.code().is_some_and(|c| ok_codes.contains(&c));
            if !accepted && !truncated {
                return Err(GitError::Failed {
                    command: command.clone(),
                    stderr: err.trim().to_string(),
                });
            }
            Ok(Output {
                text: String::from_utf8_lossy(&out).into_owned(),
                truncated,
            })
        };
        match tokio::time::timeout_at(limit.into(), run).await {
            Ok(done) => done,
            Err(_) if by_deadline => Err(GitError::Deadline { command }),
            Err(_) => Err(GitError::TookTooLong {
                command,
                limit: GIT_TIMEOUT,
            }),
        }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("git");
        command.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        command.envs(ENVIRONMENT.iter().copied());
        command.env("GIT_CONFIG_COUNT", self.settings.len().to_string());
        for (n, (key, value)) in self.settings.iter().enumerate() {
            command.env(format!("GIT_CONFIG_KEY_{n}"), key);
            command.env(format!("GIT_CONFIG_VALUE_{n}"), value);
        }
        command
            .arg("--no-pager")
            .arg("-C")
            .arg(&self.dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }
}

/// All of stderr is read (so git never blocks on it); the first [`MAX_STDERR`] bytes are kept.
async fn read_stderr(mut stderr: tokio::process::ChildStderr) -> String {
    let mut kept = Vec::new();
    let _ = (&mut stderr).take(MAX_STDERR).read_to_end(&mut kept).await;
    let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
    String::from_utf8_lossy(&kept).into_owned()
}

fn neutral(settings: &[(&str, &str)]) -> Vec<(String, String)> {
    settings
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The filter and diff drivers a repository's config defines, by name.
#[derive(Debug, Default, PartialEq)]
struct Drivers {
    filter: BTreeSet<String>,
    diff: BTreeSet<String>,
    /// Whether git listed our own `diff.external` at command scope: proof that it applies the
    /// settings exai passes (a repository cannot put anything at that scope).
    settings_apply: bool,
}

impl Drivers {
    /// From `git config --show-scope -z --get-regexp`: each entry is its scope, NUL, the key, and
    /// (after a newline) the value, NUL. A key is `section.subsection.name`; the subsection (the
    /// driver) may hold dots and `=`, never a newline or NUL. Keys without a subsection
    /// (`diff.external`) are not drivers.
    fn listed(listing: &str) -> Self {
        let mut drivers = Self::default();
        let mut fields = listing.split('\0');
        while let (Some(scope), Some(entry)) = (fields.next(), fields.next()) {
            let key = entry.split('\n').next().unwrap_or("");
            if scope == "command" && key == "diff.external" {
                drivers.settings_apply = true;
            }
            let Some((section, rest)) = key.split_once('.') else {
                continue;
            };
            let Some((driver, _name)) = rest.rsplit_once('.') else {
                continue;
            };
            match section {
                "filter" => drivers.filter.insert(driver.to_string()),
                "diff" => drivers.diff.insert(driver.to_string()),
                _ => false,
            };
        }
        drivers
    }

    /// The command-scope settings that empty every driver.
    fn neutral(&self) -> Vec<(String, String)> {
        let each = |drivers: &BTreeSet<String>, section: &str, settings: &[(&str, &str)]| {
            drivers
                .iter()
                .flat_map(|driver| {
                    settings.iter().map(move |(name, value)| {
                        (format!("{section}.{driver}.{name}"), value.to_string())
                    })
                })
                .collect::<Vec<_>>()
        };
        let mut out = each(&self.filter, "filter", FILTER_NEUTRAL);
        out.extend(each(&self.diff, "diff", DIFF_NEUTRAL));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drivers_are_read_by_name_whatever_their_name_holds() {
        let listing = "global\0filter.lfs.clean\ngit-lfs clean -- %f\0\
                       local\0filter.a.b=c.process\ntouch x\0\
                       local\0filter.bare.required\0\
                       local\0diff.external\nsomething\0\
                       local\0diff.tc.textconv\nline one\nline two\0\
                       local\0diff.tc.command\nx\0";
        let drivers = Drivers::listed(listing);
        assert_eq!(
            drivers.filter.into_iter().collect::<Vec<_>>(),
            ["a.b=c", "bare", "lfs"]
        );
        assert_eq!(drivers.diff.into_iter().collect::<Vec<_>>(), ["tc"]);
        assert!(!drivers.settings_apply, "diff.external is the repository's");
    }

    #[test]
    fn our_settings_are_seen_only_at_command_scope() {
        let drivers = Drivers::listed("local\0diff.x.command\nc\0command\0diff.external\n\0");
        assert!(drivers.settings_apply);
        assert_eq!(drivers.diff.into_iter().collect::<Vec<_>>(), ["x"]);
    }

    #[test]
    fn every_driver_setting_is_emptied() {
        let drivers = Drivers::listed("local\0filter.x.y.clean\nc\0local\0diff.d.textconv\nt\0");
        assert_eq!(
            drivers.neutral(),
            [
                ("filter.x.y.clean", ""),
                ("filter.x.y.smudge", ""),
                ("filter.x.y.process", ""),
                ("filter.x.y.required", "false"),
                ("diff.d.textconv", ""),
                ("diff.d.command", ""),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }
}
