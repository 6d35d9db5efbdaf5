//! Running one CLI: the program found on PATH first (a missing one is named with how to install
//! it), started in a process group of its own, the prompt on standard input, standard output
//! read a bounded line at a time into its parser (each event a progress line), a bounded tail
//! of standard error kept for errors. Its deadline, a cancel or a dropped call end the whole
//! group: SIGTERM, then SIGKILL after a short grace — nothing it started outlives it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use super::config::CliSpec;
use super::parser::{Report, parser_for};
use crate::config::EndpointConfig;
use crate::providers::Seconds;
use crate::spawn::signal_group;

/// Variables that configure exai's own providers, kept from the sub-agents it starts.
const EXAI_PROVIDER_VARIABLES: &[&str] = &[
    "GLM_API_KEY",
    "ZHIPUAI_API_KEY",
    "KIMI_API_KEY",
    "MOONSHOT_API_KEY",
    "OPENROUTER_API_KEY",
    "CUSTOM_API_KEY",
    "CUSTOM_API_URL",
];

/// The CLIs' own credentials, which they are run with even where exai's providers use the same
/// key (Codex and exai's OpenAI provider both read `OPENAI_API_KEY`).
const CLI_CREDENTIALS: &[&str] = &[
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
];

/// Longest line of output parsed; a longer one (a huge tool result) is skipped, not kept.
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;
/// Most output a run may write; past it the run is stopped (a CLI flooding its output).
pub const MAX_OUTPUT_BYTES: u64 = 64 * 1024 * 1024;
/// Most of standard error kept (its end) for an error message.
const STDERR_TAIL_BYTES: usize = 4096;
/// Longest wait, once the CLI is gone, for the rest of its error output.
const STDERR_READ_LIMIT: Duration = Duration::from_secs(1);
/// Between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// One run of a CLI.
pub struct Invocation<'a> {
    pub cli: &'a CliSpec,
    /// Its arguments, placeholders already filled.
    pub args: Vec<String>,
    /// What it reads on standard input: the prompt.
    pub stdin: String,
    pub cwd: PathBuf,
    /// When it must have finished.
    pub deadline: Instant,
    /// Whether `deadline` is the CLI's own `timeout_s` (rather than the call's deadline).
    pub own_timeout: bool,
    pub max_answer_bytes: usize,
    /// exai's providers: the variables they take their keys from, and any variable holding one
    /// of their keys under another name, are kept from the CLI.
    pub providers: &'a [EndpointConfig],
}

/// A run that ended with something to show.
#[derive(Debug)]
pub struct Finished {
    pub report: Report,
    /// Its exit code when it was not 0 (its answer was recovered from the stream).
    pub failed_exit: Option<String>,
    pub stderr_tail: String,
    /// Lines longer than [`MAX_LINE_BYTES`] that were skipped.
    pub skipped_lines: u64,
}

/// Why a run gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClinkError {
    #[error("{cli} is not installed (no `{command}` on PATH): {hint}")]
    NotInstalled {
        cli: String,
        command: String,
        hint: String,
    },
    #[error("{cli} is not logged in: {hint} ({cli} said: {said})")]
    NotLoggedIn {
        cli: String,
        hint: String,
        said: String,
    },
    #[error("{cli} could not be started: {why}")]
    Spawn { cli: String, why: String },
    #[error(
        "{cli} did not finish within {after}{whose}; it was stopped with everything it started (last: {doing})"
    )]
    TimedOut {
        cli: String,
        after: Seconds,
        whose: String,
        doing: String,
    },
    #[error(
        "{cli} wrote more than {limit} MiB of output; it was stopped with everything it started",
        limit = MAX_OUTPUT_BYTES / (1024 * 1024)
    )]
    TooMuchOutput { cli: String },
    #[error("{cli} exited with {code} and no answer; its last error output: {stderr}")]
    Exited {
        cli: String,
        code: String,
        stderr: String,
    },
    #[error("{cli} failed: {why}")]
    Failed { cli: String, why: String },
    #[error("{cli} ended without an answer; its last error output: {stderr}")]
    NoAnswer { cli: String, stderr: String },
}

impl ClinkError {
    /// Whether a deadline ended the run.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::TimedOut { .. })
    }
}

/// What says a CLI has no credentials (in its result, its errors or its standard error).
const NOT_LOGGED_IN: &[&str] = &[
    "not logged in",
    "please run /login",
    "invalid api key",
    "authentication_error",
    "oauth token has expired",
    "codex login",
    "401 unauthorized",
    "api key not valid",
    "please set an auth method",
    "gemini_api_key environment variable",
    "login required",
];

fn says_not_logged_in(text: &str) -> bool {
    let lower = text.to_lowercase();
    NOT_LOGGED_IN.iter().any(|needle| lower.contains(needle))
}

/// Where `command` is, as an absolute path: the path given, or the first match in an absolute
/// directory of `path_var`. A relative one (`./claude`, a PATH entry `.` or `bin`) would be
/// found again from the CLI's working directory, which is not the daemon's: never used.
fn find_program(command: &str, path_var: Option<&str>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        p.is_absolute()
            && p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if command.contains('/') {
        let path = PathBuf::from(command);
        return runnable(&path).then_some(path);
    }
    std::env::split_paths(path_var?)
        .map(|dir| dir.join(command))
        .find(|p| runnable(p))
}

/// SIGTERM to the group, SIGKILL to whatever is left after the grace.
async fn end_group(pgid: i32, child: Option<Child>) {
    signal_group(pgid, libc::SIGTERM);
    let until = tokio::time::Instant::now() + KILL_GRACE;
    if let Some(mut child) = child {
        let _ = tokio::time::timeout_at(until, child.wait()).await;
        while tokio::time::Instant::now() < until && signal_group(pgid, 0) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        signal_group(pgid, libc::SIGKILL);
        let _ = child.wait().await;
    } else {
        while tokio::time::Instant::now() < until && signal_group(pgid, 0) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        signal_group(pgid, libc::SIGKILL);
    }
}

/// The CLI's process group. Dropped before it was ended (the call's deadline, a cancel), it
/// ends the group in the background: no process of it outlives the call.
struct Group {
    pgid: i32,
    child: Option<Child>,
}

impl Group {
    /// Ends the group and waits until it is gone. The ending runs in a task of its own, so a
    /// run dropped meanwhile (the call's deadline at the same moment) still sends the SIGKILL.
    async fn end(&mut self) {
        let ending = crate::spawn::in_current_span(end_group(self.pgid, self.child.take()));
        let _ = ending.await;
    }

    /// The CLI exited: what it left behind is ended in the background.
    fn end_leftovers(&mut self) {
        let pgid = self.pgid;
        self.child = None;
        if signal_group(pgid, 0) {
            crate::spawn::in_current_span(end_group(pgid, None));
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let Some(child) = self.child.take() else {
            return;
        };
        // At once, not on the task: a runtime shutting down may never run it.
        signal_group(self.pgid, libc::SIGTERM);
        if tokio::runtime::Handle::try_current().is_ok() {
            crate::spawn::in_current_span(end_group(self.pgid, Some(child)));
        } else {
            signal_group(self.pgid, libc::SIGKILL);
        }
    }
}

/// One line of output, as read.
enum Line {
    Whole(String),
    /// Longer than the bound: skipped.
    TooLong,
}

/// Standard output a bounded line at a time; partial lines survive a cancelled read.
struct Lines<R> {
    reader: R,
    line: Vec<u8>,
    overflow: bool,
    /// Bytes read so far.
    total: u64,
}

impl<R: AsyncBufRead + Unpin> Lines<R> {
    async fn next(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            let buf = self.reader.fill_buf().await?;
            if buf.is_empty() {
                if self.line.is_empty() && !self.overflow {
                    return Ok(None);
                }
                return Ok(Some(self.take()));
            }
            let (chunk, ends) = match buf.iter().position(|b| *b == b'\n') {
                Some(at) => (&buf[..at], at + 1),
                None => (buf, buf.len()),
            };
            let newline = ends > chunk.len();
            if !self.overflow {
                if self.line.len() + chunk.len() > MAX_LINE_BYTES {
                    self.overflow = true;
                    self.line = Vec::new();
                } else {
                    self.line.extend_from_slice(chunk);
                }
            }
            self.reader.consume(ends);
            self.total += ends as u64;
            if newline {
                return Ok(Some(self.take()));
            }
            // An endless line must still reach the caller's bound on the whole output.
            if self.overflow && self.total > MAX_OUTPUT_BYTES {
                return Ok(Some(self.take()));
            }
        }
    }

    fn take(&mut self) -> Line {
        let line = std::mem::take(&mut self.line);
        if std::mem::take(&mut self.overflow) {
            Line::TooLong
        } else {
            Line::Whole(String::from_utf8_lossy(&line).into_owned())
        }
    }
}

/// The end of a stream, kept within a bound.
#[derive(Default)]
struct Tail(Vec<u8>);

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
        if self.0.len() > STDERR_TAIL_BYTES {
            let cut = self.0.len() - STDERR_TAIL_BYTES;
            self.0.drain(..cut);
        }
    }

    fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.0);
        let text = text.trim();
        if text.is_empty() {
            "(none)".to_string()
        } else {
            crate::secrets::redact_text(text, &[])
        }
    }
}

/// Runs the CLI; `on_activity` hears what it is doing as its events arrive.
pub async fn run(
    invocation: Invocation<'_>,
    on_activity: &(dyn Fn(String) + Send + Sync),
) -> Result<Finished, ClinkError> {
    let cli = invocation.cli;
    let name = cli.name.clone();
    let path_var = cli
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var("PATH").ok());
    // Off the async threads: each place on the PATH is looked at on the disk.
    let command = cli.command.clone();
    let found = crate::spawn::blocking(move || find_program(&command, path_var.as_deref()));
    let program = found
        .await
        .ok()
        .flatten()
        .ok_or_else(|| ClinkError::NotInstalled {
            cli: name.clone(),
            command: cli.command.clone(),
            hint: cli.install_hint.clone(),
        })?;

    let mut command = Command::new(&program);
    command
        .args(&invocation.args)
        .current_dir(&invocation.cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // The daemon's own settings are not the sub-agent's business (an exai it starts reads its own),
    // nor are the keys of exai's providers, under whatever name: a sub-agent only gets the
    // credentials of its own CLI (CLI_CREDENTIALS), or what its `env` sets.
    let providers = invocation.providers;
    for (key, value) in std::env::vars_os() {
        let name = key.to_string_lossy();
        let named = || (providers.iter()).any(|p| p.key_source.as_deref() == Some(name.as_ref()));
        let holds_a_key = || {
            (providers.iter().filter_map(|p| p.api_key.as_ref()))
                .any(|key| !key.expose().is_empty() && value == key.expose())
        };
        let providers_own = !CLI_CREDENTIALS.contains(&name.as_ref()) && (named() || holds_a_key());
        if name.starts_with("EXAI_")
            || EXAI_PROVIDER_VARIABLES.contains(&name.as_ref())
            || providers_own
        {
            command.env_remove(key);
        }
    }
    command.envs(cli.env.iter().map(|(k, v)| (k, v)));
    let mut child = command.spawn().map_err(|e| ClinkError::Spawn {
        cli: name.clone(),
        why: e.to_string(),
    })?;
    let pgid = child.id().map(|id| id as i32).unwrap_or(0);
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let mut group = Group {
        pgid,
        child: Some(child),
    };

    // The prompt is written on its own so a CLI that does not read it cannot stall the run.
    if let Some(mut stdin) = stdin {
        let prompt = invocation.stdin.into_bytes();
        crate::spawn::in_current_span(async move {
            let _ = stdin.write_all(&prompt).await;
            let _ = stdin.shutdown().await;
        });
    }
    let tail = Arc::new(Mutex::new(Tail::default()));
    let stderr_read = stderr.map(|mut stderr| {
        let tail = tail.clone();
        crate::spawn::in_current_span(async move {
            let mut chunk = vec![0u8; 8192];
            while let Ok(n) = stderr.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                tail.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(&chunk[..n]);
            }
        })
    });
    let stderr_text = || tail.lock().unwrap_or_else(|p| p.into_inner()).text();

    let mut parser = parser_for(cli.parser, invocation.max_answer_bytes);
    let mut lines = stdout.map(|out| Lines {
        reader: BufReader::with_capacity(64 * 1024, out),
        line: Vec::new(),
        overflow: false,
        total: 0,
    });
    let mut skipped_lines = 0;
    let mut doing = "starting".to_string();
    let deadline = tokio::time::Instant::from_std(invocation.deadline);
    let budget = invocation
        .deadline
        .saturating_duration_since(Instant::now());
    let mut exited: Option<std::process::ExitStatus> = None;
    // After the CLI exits, its output is read until whatever it left behind is gone too.
    let mut drain_until: Option<tokio::time::Instant> = None;
    loop {
        let reading = async {
            match lines.as_mut() {
                Some(lines) => lines.next().await,
                None => std::future::pending().await,
            }
        };
        let waiting = async {
            match (exited, group.child.as_mut()) {
                (None, Some(child)) => child.wait().await.ok(),
                _ => std::future::pending().await,
            }
        };
        let drained = async {
            match drain_until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = tokio::time::sleep_until(deadline) => {
                group.end().await;
                let whose = if invocation.own_timeout {
                    format!(" (timeout_s of [clink.clis.{name}])")
                } else {
                    " (the call's deadline)".to_string()
                };
                return Err(ClinkError::TimedOut {
                    cli: name,
                    after: Seconds(budget),
                    whose,
                    doing,
                });
            }
            status = waiting => {
                exited = status.or(Some(std::process::ExitStatus::default()));
                group.end_leftovers();
                drain_until = Some(tokio::time::Instant::now() + KILL_GRACE + Duration::from_millis(500));
            }
            _ = drained => break,
            read = reading => match read {
                Ok(Some(Line::Whole(text))) => {
                    if let Some(now) = parser.line(&text) {
                        doing = now.clone();
                        on_activity(now);
                    }
                }
                Ok(Some(Line::TooLong)) => skipped_lines += 1,
                Ok(None) | Err(_) => {
                    lines = None;
                    if exited.is_some() {
                        break;
                    }
                }
            },
        }
        if lines.as_ref().is_some_and(|l| l.total > MAX_OUTPUT_BYTES) {
            group.end().await;
            return Err(ClinkError::TooMuchOutput { cli: name });
        }
        if lines.is_none() && exited.is_none() && group.child.is_none() {
            break;
        }
    }
    let report = parser.report().clone();
    // Its stdout can end before its stderr is read: what it said last is often why it failed.
    // Its group has been ended, so the pipe closes; the wait is bounded all the same.
    if let Some(reading) = stderr_read {
        let _ = tokio::time::timeout(STDERR_READ_LIMIT, reading).await;
    }
    let stderr_tail = stderr_text();
    let status = exited.unwrap_or_default();
    let failed_exit = (!status.success()).then(|| match status.code() {
        Some(code) => format!("exit code {code}"),
        None => {
            use std::os::unix::process::ExitStatusExt;
            format!("signal {}", status.signal().unwrap_or(0))
        }
    });
    let said = [report.error.as_deref(), Some(stderr_tail.as_str())];
    let short_answer = report.answer.as_deref().filter(|a| a.len() < 400);
    if let Some(text) = said
        .into_iter()
        .flatten()
        .chain(short_answer)
        .find(|t| says_not_logged_in(t))
    {
        return Err(ClinkError::NotLoggedIn {
            cli: name,
            hint: cli.login_hint.clone(),
            said: super::parser::activity_line(text),
        });
    }
    if let Some(why) = &report.error {
        return Err(ClinkError::Failed {
            cli: name,
            why: why.clone(),
        });
    }
    match (&report.answer, &failed_exit) {
        (Some(_), _) => Ok(Finished {
            report,
            failed_exit,
            stderr_tail,
            skipped_lines,
        }),
        (None, Some(code)) => Err(ClinkError::Exited {
            cli: name,
            code: code.clone(),
            stderr: stderr_tail,
        }),
        (None, None) => Err(ClinkError::NoAnswer {
            cli: name,
            stderr: stderr_tail,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_bounded_and_a_long_one_is_skipped_whole() {
        let long = "x".repeat(MAX_LINE_BYTES + 10);
        let input = format!("first\n{long}\nlast");
        let mut lines = Lines {
            reader: BufReader::with_capacity(1024, input.as_bytes()),
            line: Vec::new(),
            overflow: false,
            total: 0,
        };
        let mut seen = Vec::new();
        while let Some(line) = lines.next().await.unwrap() {
            seen.push(match line {
                Line::Whole(text) => text,
                Line::TooLong => "<too long>".to_string(),
            });
        }
        assert_eq!(seen, ["first", "<too long>", "last"]);
        assert_eq!(lines.total, input.len() as u64);
    }

    #[test]
    fn a_missing_program_is_found_missing() {
        assert!(find_program("exai-no-such-cli", Some("/usr/bin:/bin")).is_none());
        assert!(find_program("sh", Some("/usr/bin:/bin")).is_some());
        assert!(find_program("/nonexistent/claude", None).is_none());
    }

    #[test]
    fn a_program_is_only_ever_found_by_an_absolute_path() {
        // Tests run in the package's directory, where these are found; the CLI runs elsewhere.
        let here = Path::new("scripts/nginx.sh");
        assert!(here.is_file(), "run from the package's directory");
        assert_eq!(find_program("./scripts/nginx.sh", None), None);
        assert_eq!(find_program("nginx.sh", Some("scripts:.:")), None);
        let absolute = std::env::current_dir().unwrap().join("scripts");
        assert_eq!(
            find_program("nginx.sh", Some(&format!("scripts:{}", absolute.display()))),
            Some(absolute.join("nginx.sh"))
        );
    }

    #[test]
    fn the_tail_of_stderr_is_kept_and_masked() {
        let mut tail = Tail::default();
        tail.push(&vec![b'a'; STDERR_TAIL_BYTES * 2]);
        tail.push(b"end");
        assert_eq!(tail.0.len(), STDERR_TAIL_BYTES);
        assert!(tail.text().ends_with("end"));
        assert!(says_not_logged_in("Invalid API key · Please run /login"));
        assert!(!says_not_logged_in("all tests pass"));
    }
}
