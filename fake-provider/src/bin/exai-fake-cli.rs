//! `exai-fake-cli`: a scripted stand-in for the coding-agent CLIs clink runs (Claude Code,
//! Codex, Gemini CLI), for exai's tests. It speaks the event stream its arguments ask for
//! (`exec` → Codex JSONL, `-p` → Claude stream-json, else Gemini stream-json) and does what
//! words in its prompt (read from standard input) say:
//!
//! - `sleep=N`: report a shell command, then sleep N seconds before answering;
//! - `exit=N`: exit with code N after answering (and write to standard error);
//! - `no-answer`: give no answer at all;
//! - `ignore-term`: ignore SIGTERM (only SIGKILL ends it);
//! - `grandchild`: start a process of its own that ignores SIGTERM, sleeping long;
//! - `flood=N`: write N MiB of output lines before answering;
//! - `long-line=N`: write one line of N MiB before answering;
//! - `big-answer=N`: answer with N KiB of text;
//! - `not-logged-in`: fail as Claude Code does without credentials;
//! - `hostile-session`: name its session `--dangerously-skip-permissions`.
//!
//! With `FAKE_CLI_DIR` set it writes there its arguments (`argv.jsonl`, one line per run), its
//! working directory (`cwd.txt`, one line per run), its standard input (`stdin.txt`), its pid (`cli.pid`), its grandchild's (`grandchild.pid`) and the names of the environment
//! variables it was given (`env-names.txt`).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

fn word(prompt: &str, name: &str) -> Option<u64> {
    prompt
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .and_then(|n| n.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
}

fn has(prompt: &str, name: &str) -> bool {
    prompt.split_whitespace().any(|w| w == name)
}

#[derive(Clone, Copy, PartialEq)]
enum Style {
    Claude,
    Codex,
    Gemini,
}

struct Out(std::io::Stdout);

impl Out {
    fn line(&mut self, value: serde_json::Value) {
        let mut lock = self.0.lock();
        let _ = writeln!(lock, "{value}");
        let _ = lock.flush();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut prompt = String::new();
    let _ = std::io::stdin().read_to_string(&mut prompt);
    let dir = std::env::var_os("FAKE_CLI_DIR").map(PathBuf::from);
    if let Some(dir) = &dir {
        let mut argv = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("argv.jsonl"))
            .unwrap();
        writeln!(argv, "{}", serde_json::json!(args)).unwrap();
        std::fs::write(dir.join("stdin.txt"), &prompt).unwrap();
        let mut cwd = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("cwd.txt"))
            .unwrap();
        writeln!(cwd, "{}", std::env::current_dir().unwrap().display()).unwrap();
        std::fs::write(dir.join("cli.pid"), std::process::id().to_string()).unwrap();
        let names: Vec<String> = std::env::vars_os()
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect();
        std::fs::write(dir.join("env-names.txt"), names.join("\n")).unwrap();
    }
    let style = if args.iter().any(|a| a == "exec") {
        Style::Codex
    } else if args.iter().any(|a| a == "-p") {
        Style::Claude
    } else {
        Style::Gemini
    };
    let resumed = args
        .iter()
        .position(|a| a == "--resume" || a == "resume")
        .and_then(|at| args.get(at + 1))
        .cloned();
    let session = if has(&prompt, "hostile-session") {
        "--dangerously-skip-permissions".to_string()
    } else {
        resumed
            .clone()
            .unwrap_or_else(|| format!("fake-session-{}", std::process::id()))
    };

    if has(&prompt, "ignore-term") {
        // SAFETY: setting a signal's disposition to "ignore" touches no memory.
        unsafe {
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
        }
    }
    if has(&prompt, "grandchild") {
        let child = std::process::Command::new("sh")
            .args(["-c", "trap '' TERM; exec sleep 1000"])
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("start the grandchild");
        if let Some(dir) = &dir {
            std::fs::write(dir.join("grandchild.pid"), child.id().to_string()).unwrap();
        }
        std::mem::forget(child);
    }

    let mut out = Out(std::io::stdout());
    match style {
        Style::Claude => out.line(serde_json::json!({
            "type": "system", "subtype": "init", "session_id": session,
            "model": "fake-claude-model", "tools": ["Bash", "Read"]
        })),
        Style::Codex => {
            out.line(serde_json::json!({"type": "thread.started", "thread_id": session}));
            out.line(serde_json::json!({"type": "turn.started"}));
        }
        Style::Gemini => out.line(serde_json::json!({
            "type": "init", "session_id": session, "model": "fake-gemini-model"
        })),
    }
    if has(&prompt, "not-logged-in") {
        out.line(serde_json::json!({
            "type": "result", "subtype": "success", "is_error": true,
            "result": "Not logged in · Please run /login", "session_id": session
        }));
        std::process::exit(1);
    }
    let shell = |out: &mut Out, command: &str| {
        match style {
        Style::Claude => out.line(serde_json::json!({
            "type": "assistant", "session_id": session,
            "message": {"content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": command}}]}
        })),
        Style::Codex => out.line(serde_json::json!({
            "type": "item.started",
            "item": {"id": "item_1", "type": "command_execution", "command": command, "status": "in_progress"}
        })),
        Style::Gemini => out.line(serde_json::json!({
            "type": "tool_use", "tool_name": "run_shell_command", "tool_id": "t1",
            "parameters": {"command": command}
        })),
    }
    };
    shell(&mut out, "cargo check");
    if let Some(mib) = word(&prompt, "flood") {
        let line = format!("{}\n", "flood ".repeat(170));
        let mut lock = out.0.lock();
        let mut written = 0u64;
        while written < mib * 1024 * 1024 {
            if lock.write_all(line.as_bytes()).is_err() {
                std::process::exit(141);
            }
            written += line.len() as u64;
        }
        let _ = lock.flush();
    }
    if let Some(mib) = word(&prompt, "long-line") {
        let mut lock = out.0.lock();
        let _ = lock.write_all(&vec![b'x'; (mib * 1024 * 1024) as usize]);
        let _ = lock.write_all(b"\n");
        let _ = lock.flush();
    }
    if let Some(seconds) = word(&prompt, "sleep") {
        shell(&mut out, &format!("sleep {seconds}"));
        std::thread::sleep(Duration::from_secs(seconds));
    }
    if !has(&prompt, "no-answer") {
        let answer = match word(&prompt, "big-answer") {
            Some(kib) => "all good. ".repeat((kib * 1024 / 10) as usize),
            None => match &resumed {
                Some(id) => format!("fake-cli resumed {id} and did the task."),
                None => format!("fake-cli did the task in {session}."),
            },
        };
        match style {
            Style::Claude => {
                out.line(serde_json::json!({
                    "type": "assistant", "session_id": session,
                    "message": {"model": "fake-claude-model", "content": [{"type": "text", "text": answer}]}
                }));
                out.line(serde_json::json!({
                    "type": "result", "subtype": "success", "is_error": false, "result": answer,
                    "session_id": session, "total_cost_usd": 0.0125, "num_turns": 2,
                    "usage": {"input_tokens": 100, "cache_creation_input_tokens": 0,
                              "cache_read_input_tokens": 50, "output_tokens": 20}
                }));
            }
            Style::Codex => {
                out.line(serde_json::json!({
                    "type": "item.completed",
                    "item": {"id": "item_2", "type": "agent_message", "text": answer}
                }));
                out.line(serde_json::json!({
                    "type": "turn.completed",
                    "usage": {"input_tokens": 300, "cached_input_tokens": 200, "output_tokens": 30}
                }));
            }
            Style::Gemini => {
                out.line(serde_json::json!({
                    "type": "message", "role": "assistant", "content": answer, "delta": true
                }));
                out.line(serde_json::json!({
                    "type": "result", "status": "success",
                    "stats": {"total_tokens": 60, "input_tokens": 40, "output_tokens": 20, "cached": 0}
                }));
            }
        }
    }
    if let Some(code) = word(&prompt, "exit") {
        eprintln!("fake-cli: failing on purpose with {code}");
        std::process::exit(code as i32);
    }
}
