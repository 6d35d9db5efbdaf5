//! README as a new user meets it: its shell blocks run as written, top to bottom, in one shell
//! session with a fresh HOME. Each fenced block says in the README itself (an HTML comment just
//! above it, invisible when rendered) how the walk-through treats it, so no block goes unchecked:
//!
//! - `<!-- walkthrough: run -->`: run in the session (`set -e`: a failing command fails the test,
//!   naming the block);
//! - `<!-- walkthrough: run, typing TEXT -->`: run with TEXT as what the person types;
//! - `<!-- walkthrough: run, input below -->` + `<!-- walkthrough: input -->`: run with the next
//!   block as its input, one JSON-RPC message a line; every request in it must get a result;
//! - `<!-- walkthrough: config file -->`: written as the config file when the session reaches it,
//!   which `exai config` must take without a warning (then removed: it is an example);
//! - `<!-- walkthrough: skip — WHY -->`: not run here, and the README says why.
//!
//! What differs from a person's machine, and why: `cargo build`/`cargo install` are answered by a
//! stand-in (the suite built the binaries already, and `./target/release/…` links to them), and the
//! providers' URLs point at the fake provider (there is no network here).

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

/// How the walk-through treats one fenced block.
#[derive(Debug, PartialEq)]
enum Treatment {
    Run { typing: Option<String> },
    RunWithInputBelow,
    Input,
    ConfigFile,
    Skip,
}

#[derive(Debug)]
struct Block {
    /// README line of the opening fence.
    line: usize,
    treatment: Treatment,
    text: String,
}

const MARK: &str = "<!-- walkthrough:";

fn treatment_of(annotation: &str, line: usize) -> Treatment {
    let said = annotation
        .trim()
        .strip_prefix(MARK)
        .and_then(|rest| rest.strip_suffix("-->"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("README line {line}: no `{MARK} … -->` above this block"));
    if let Some(typing) = said.strip_prefix("run, typing ") {
        return Treatment::Run {
            typing: Some(typing.trim_matches('"').to_string()),
        };
    }
    if let Some(why) = said.strip_prefix("skip") {
        let why = why.trim_start_matches([' ', '—', '-', ':']).trim();
        assert!(
            !why.is_empty(),
            "README line {line}: a skipped block says why"
        );
        return Treatment::Skip;
    }
    match said {
        "run" => Treatment::Run { typing: None },
        "run, input below" => Treatment::RunWithInputBelow,
        "input" => Treatment::Input,
        "config file" => Treatment::ConfigFile,
        other => panic!("README line {line}: unknown walk-through treatment {other:?}"),
    }
}

/// Every fenced block of the README with its treatment.
fn blocks(readme: &str) -> Vec<Block> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if !lines[i].starts_with("```") {
            i += 1;
            continue;
        }
        let opening = i;
        let annotation = lines[..opening]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .copied()
            .unwrap_or("");
        let end = (opening + 1..lines.len())
            .find(|&j| lines[j].starts_with("```"))
            .unwrap_or_else(|| panic!("README line {}: unclosed block", opening + 1));
        found.push(Block {
            line: opening + 1,
            treatment: treatment_of(annotation, opening + 1),
            text: lines[opening + 1..end].join("\n") + "\n",
        });
        i = end + 1;
    }
    found
}

/// A checkout-like working directory and a PATH in which the README's commands find exai.
struct Sandbox {
    root: PathBuf,
    home: PathBuf,
    checkout: PathBuf,
    bin: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let root = temp_home();
        let (home, checkout, bin) = (root.join("home"), root.join("checkout"), root.join("bin"));
        let release = checkout.join("target/release");
        for dir in [&home, &release, &bin] {
            std::fs::create_dir_all(dir).unwrap();
        }
        let built = Path::new(EXAI).parent().unwrap();
        for binary in ["exai", "exai-fake-provider"] {
            let target = built.join(binary);
            assert!(
                target.exists(),
                "{} is not built (cargo test --workspace builds it)",
                target.display()
            );
            std::os::unix::fs::symlink(&target, release.join(binary)).unwrap();
            std::os::unix::fs::symlink(&target, bin.join(binary)).unwrap();
        }
        std::os::unix::fs::symlink(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts"),
            checkout.join("scripts"),
        )
        .unwrap();
        let stand_in = bin.join("cargo");
        std::fs::write(
            &stand_in,
            "#!/bin/sh\ncase \"$1\" in\n  build|install) echo \"(walk-through: the suite built it already: cargo $*)\" ;;\n  *) echo \"the walk-through does not expect cargo $*\" >&2; exit 1 ;;\nesac\n",
        )
        .unwrap();
        std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self {
            root,
            home,
            checkout,
            bin,
        }
    }

    /// The session: one bash with `set -e`, each block announced, so a failure names its block.
    fn script(&self, blocks: &[Block]) -> String {
        let mut script = String::from("set -eo pipefail\n");
        let mut iter = blocks.iter().peekable();
        while let Some(block) = iter.next() {
            let input = match &block.treatment {
                Treatment::Run { typing: None } => None,
                Treatment::Run { typing: Some(text) } => Some(format!("{text}\n")),
                Treatment::RunWithInputBelow => {
                    let input = iter.next().filter(|b| b.treatment == Treatment::Input);
                    Some(
                        input
                            .unwrap_or_else(|| {
                                panic!("README line {}: no input block below", block.line)
                            })
                            .text
                            .clone(),
                    )
                }
                Treatment::ConfigFile => {
                    // Written when the session reaches it, as a person would, not before.
                    let out = self.root.join("config.out");
                    script.push_str(&format!(
                        "echo '@@block {line}'\nmkdir -p ~/.config/exai\ncat > ~/.config/exai/config.toml <<'WALKTHROUGH_EOF'\n{text}WALKTHROUGH_EOF\nexai config > {out} 2>&1 || {{ cat {out}; exit 1; }}\n! grep -q 'warning:' {out} || {{ cat {out}; exit 1; }}\nrm ~/.config/exai/config.toml\n",
                        line = block.line,
                        text = block.text,
                        out = out.display()
                    ));
                    continue;
                }
                Treatment::Input => panic!("README line {}: input with nothing above", block.line),
                Treatment::Skip => continue,
            };
            script.push_str(&format!("echo '@@block {}'\n", block.line));
            match input {
                None => script.push_str(&block.text),
                Some(text) => {
                    let file = self.root.join(format!("input-{}", block.line));
                    std::fs::write(&file, text).unwrap();
                    script.push_str(&format!("{{\n{}}} < {}\n", block.text, file.display()));
                }
            }
        }
        script.push_str("echo '@@done'\n");
        script
    }
}

/// The JSON-RPC responses printed by the block at `line`, by id.
fn responses_of(output: &str, line: usize) -> Vec<Value> {
    let start = output
        .find(&format!("@@block {line}\n"))
        .unwrap_or_else(|| panic!("block {line} never ran:\n{output}"));
    output[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("@@"))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("id").is_some() && v.get("method").is_none())
        .collect()
}

#[test]
fn every_block_of_the_readme_runs_as_written_or_says_why_not() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let blocks = blocks(&readme);
    assert!(
        blocks
            .iter()
            .any(|b| matches!(b.treatment, Treatment::Run { .. }))
    );
    let fake = Fake::start();
    let sandbox = Sandbox::new();
    let script = sandbox.script(&blocks);
    let path = format!(
        "{}:{}",
        sandbox.bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut session = Command::new("bash");
    session
        .args(["-c", &script])
        .current_dir(&sandbox.checkout)
        .env_clear()
        .env("PATH", path)
        .env("HOME", &sandbox.home)
        .env("TERM", "dumb")
        // A daemon the walk-through starts must not meet another test's on the default port.
        .env("EXAI_LISTEN", format!("127.0.0.1:{}", free_port()))
        .envs(store_env(&sandbox.home.join(".local/state/exai")))
        .stdin(Stdio::null())
        .process_group(0);
    for provider in ["GLM", "KIMI", "OPENAI", "OPENROUTER"] {
        session.env(format!("{provider}_API_URL"), format!("{}/v1", fake.url));
    }
    // Output goes to a file, not a pipe: processes the session leaves behind (the playground's
    // fake provider, a daemon) would hold a pipe open.
    let log = sandbox.root.join("session.out");
    let file = std::fs::File::create(&log).unwrap();
    session.stdout(file.try_clone().unwrap()).stderr(file);
    let mut child = session.spawn().unwrap();
    let status = child.wait().unwrap();
    // What the session started goes with it: its process group, and the daemon it started.
    let _ = Command::new("kill")
        .args(["-TERM", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let _ = Command::new(EXAI)
        .args(["daemon", "stop"])
        .env_clear()
        .env("HOME", &sandbox.home)
        .envs(store_env(&sandbox.home.join(".local/state/exai")))
        .output();
    let shown = std::fs::read_to_string(&log).unwrap();
    let last = shown
        .lines()
        .rfind(|l| l.starts_with("@@"))
        .unwrap_or("no block");
    assert!(
        status.success() && last == "@@done",
        "the walk-through stopped in {last}:\n{shown}\n{}",
        log_tails(&sandbox.home.join(".local/state/exai/logs"))
    );
    for pair in blocks.windows(2) {
        if pair[0].treatment != Treatment::RunWithInputBelow {
            continue;
        }
        let responses = responses_of(&shown, pair[0].line);
        let asked = pair[1]
            .text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|m| m.get("id").is_some())
            .count();
        assert_eq!(responses.len(), asked, "block {}:\n{shown}", pair[0].line);
        for response in responses {
            assert!(response.get("error").is_none(), "{response}");
            assert_ne!(response["result"]["isError"], true, "{response}");
        }
    }
}

/// The last lines of each log the walk-through's daemons wrote: where a start that stalled
/// stopped, when the walk-through fails (its home goes with the sandbox).
fn log_tails(dir: &Path) -> String {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return format!("(no logs in {})", dir.display());
    };
    let mut tails = String::new();
    for entry in entries.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        tails.push_str(&format!("== {}\n{tail}\n", entry.path().display()));
    }
    tails
}

#[test]
fn a_block_without_a_walkthrough_note_or_a_skip_without_a_reason_is_refused() {
    let unmarked = "text\n\n```sh\nexai status\n```\n";
    assert!(std::panic::catch_unwind(|| blocks(unmarked)).is_err());
    let no_reason = "<!-- walkthrough: skip -->\n```sh\nexai status\n```\n";
    assert!(std::panic::catch_unwind(|| blocks(no_reason)).is_err());
    let marked = "<!-- walkthrough: skip — needs a real key -->\n```sh\nexai status\n```\n";
    assert_eq!(blocks(marked)[0].treatment, Treatment::Skip);
}
