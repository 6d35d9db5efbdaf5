//! `exai setup`: each client's configuration written as that client reads it, in a temporary
//! HOME (CODEX_HOME, XDG_CONFIG_HOME, EXAI_HOME and PATH controlled): other entries and comments
//! kept, a second run changing nothing, `--remove` giving the original bytes back, `--dry-run`
//! writing nothing, symlinks and broken files refused, no key in any file. The real Claude Code
//! (npm `@anthropic-ai/claude-code`, installed by scripts/test) lists exai as connected. A Codex
//! session waits as long as Codex's `tool_timeout_sec`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

const KEY: &str = "sk-setup-secret-key-5531";

/// A HOME of its own, with the state and config dirs inside it.
struct Home {
    dir: PathBuf,
    /// PATH: an empty directory (no client CLI) unless a test adds one.
    path: String,
    extra: Vec<(String, String)>,
}

impl Home {
    fn new() -> Self {
        let dir = temp_home();
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        Self {
            path: format!("{}:/usr/bin:/bin", path(&bin)),
            dir,
            extra: Vec::new(),
        }
    }

    fn exai_home(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("HOME".to_string(), path(&self.dir)),
            (
                "XDG_CONFIG_HOME".to_string(),
                path(&self.dir.join(".config")),
            ),
            ("CODEX_HOME".to_string(), path(&self.dir.join(".codex"))),
            ("EXAI_HOME".to_string(), path(&self.exai_home())),
            ("PATH".to_string(), self.path.clone()),
            ("GLM_API_KEY".to_string(), KEY.to_string()),
        ];
        env.extend(self.extra.iter().cloned());
        env
    }

    /// `exai ARGS` in this HOME: (success, stdout + stderr).
    fn exai(&self, args: &[&str]) -> (bool, String) {
        run(Command::new(EXAI).args(args), &self.env(), None)
    }

    /// `exai ARGS` that must succeed: its output.
    fn ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.exai(args);
        assert!(ok, "exai {args:?} failed: {out}");
        assert!(!out.contains(KEY), "the key was printed: {out}");
        out
    }

    fn file(&self, relative: &str) -> PathBuf {
        self.dir.join(relative)
    }
}

/// Runs `command` with only `env`: (success, stdout + stderr).
fn run(command: &mut Command, env: &[(String, String)], dir: Option<&Path>) -> (bool, String) {
    command.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let output = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// The exai binary as the running one sees itself (what setup writes).
fn exai_exe() -> String {
    path(&std::fs::canonicalize(EXAI).unwrap())
}

fn backup_of(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.exai-backup", path.display()))
}

/// Setup, a second setup changing no byte (and no backup), removal giving back `original`.
fn set_up_twice_then_remove(home: &Home, client: &str, file: &Path, original: &str) -> String {
    let out = home.ok(&["setup", client]);
    assert!(out.contains(&format!("wrote {}", file.display())), "{out}");
    assert!(
        out.contains(&format!(
            "backup of the file as it was: {}",
            backup_of(file).display()
        )),
        "{out}"
    );
    assert!(
        out.trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("next: restart"),
        "{out}"
    );
    assert_eq!(
        read(&backup_of(file)),
        original,
        "the backup is the file as it was"
    );
    let written = read(file);
    std::fs::remove_file(backup_of(file)).unwrap();
    let again = home.ok(&["setup", client]);
    assert!(again.contains("already set up"), "{again}");
    assert_eq!(read(file), written, "a second run changes no byte");
    assert!(!backup_of(file).exists(), "a second run makes no backup");
    let removed = home.ok(&["setup", "--remove", client]);
    assert!(removed.contains("next: restart"), "{removed}");
    assert_eq!(
        read(file),
        original,
        "--remove gives back the file as it was"
    );
    let nothing = home.ok(&["setup", "--remove", client]);
    assert!(nothing.contains("not set up there"), "{nothing}");
    written
}

const CODEX_CONFIG: &str = "# my Codex\nmodel = \"o3\"  # the good one\n\n[mcp_servers.docs]\ncommand = \"npx\"\nargs = [\"-y\", \"docs-mcp\"]  # keep\n\n[profiles.fast]\nmodel = \"o4-mini\"\n";

#[test]
fn codex_gets_its_mcp_servers_table_with_the_timeout_and_loses_it_again() {
    let home = Home::new();
    let file = home.file(".codex/config.toml");
    write(&file, CODEX_CONFIG);
    let written = set_up_twice_then_remove(&home, "codex", &file, CODEX_CONFIG);
    let parsed: toml::Table = toml::from_str(&written).unwrap();
    let exai = parsed["mcp_servers"]["exai"].as_table().unwrap();
    assert_eq!(exai["command"].as_str(), Some(exai_exe().as_str()));
    assert_eq!(
        exai["args"].as_array().unwrap(),
        &vec![toml::Value::from("stdio")]
    );
    // The default call deadline (600 s) plus delivery.
    assert_eq!(exai["tool_timeout_sec"].as_integer(), Some(630));
    assert!(exai.get("env").is_none(), "no environment block: {written}");
    assert_eq!(
        parsed["mcp_servers"]["docs"]["command"].as_str(),
        Some("npx")
    );
    assert!(
        written.starts_with("# my Codex\nmodel = \"o3\"  # the good one\n"),
        "{written}"
    );
    assert!(
        written.contains("args = [\"-y\", \"docs-mcp\"]  # keep\n"),
        "{written}"
    );
    assert!(
        written.contains("[profiles.fast]\nmodel = \"o4-mini\"\n"),
        "{written}"
    );
    assert!(!written.contains(KEY));
}

#[test]
fn a_longer_deadline_raises_codex_and_gemini_timeouts() {
    let mut home = Home::new();
    home.ok(&["setup", "codex"]);
    home.ok(&["setup", "gemini"]);
    home.extra
        .push(("EXAI_TOOL_TIMEOUTS".into(), "consensus=1200".into()));
    let out = home.ok(&["setup", "codex"]);
    assert!(out.contains("tool timeout 1230 s"), "{out}");
    let parsed: toml::Table = toml::from_str(&read(&home.file(".codex/config.toml"))).unwrap();
    assert_eq!(
        parsed["mcp_servers"]["exai"]["tool_timeout_sec"].as_integer(),
        Some(1230)
    );
    home.ok(&["setup", "gemini"]);
    let gemini: Value = serde_json::from_str(&read(&home.file(".gemini/settings.json"))).unwrap();
    assert_eq!(gemini["mcpServers"]["exai"]["timeout"], 1_230_000);
}

/// Each JSON client: (id, file under HOME, the entry it must hold besides command and args).
fn json_clients() -> [(&'static str, &'static str, Value); 4] {
    [
        ("cursor", ".cursor/mcp.json", json!({})),
        (
            "gemini",
            ".gemini/settings.json",
            json!({"timeout": 630_000}),
        ),
        ("auggie", ".augment/settings.json", json!({})),
        // No `claude` on PATH: the file is edited as the CLI would.
        (
            "claude",
            ".claude.json",
            json!({"type": "stdio", "env": {}}),
        ),
    ]
}

#[test]
fn json_clients_get_their_shape_and_keep_every_other_key() {
    let home = Home::new();
    let original = "{\n  \"theme\": \"dark\",\n  \"mcpServers\": {\n    \"other\": {\n      \"command\": \"npx\",\n      \"args\": [\n        \"other-mcp\"\n      ]\n    }\n  },\n  \"zzz\": [\n    1,\n    2\n  ]\n}\n";
    for (client, relative, extra) in json_clients() {
        let file = home.file(relative);
        write(&file, original);
        let written = set_up_twice_then_remove(&home, client, &file, original);
        let value: Value = serde_json::from_str(&written).unwrap();
        let mut expected = json!({"command": exai_exe(), "args": ["stdio"]});
        for (k, v) in extra.as_object().unwrap() {
            expected[k] = v.clone();
        }
        let entry = &value["mcpServers"]["exai"];
        for (k, v) in expected.as_object().unwrap() {
            assert_eq!(&entry[k], v, "{client}: {k} in {written}");
        }
        assert_eq!(
            entry.as_object().unwrap().len(),
            expected.as_object().unwrap().len(),
            "{client}: {written}"
        );
        let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["theme", "mcpServers", "zzz"], "{client}: order kept");
        assert_eq!(value["mcpServers"]["other"]["args"], json!(["other-mcp"]));
        assert!(!written.contains(KEY));
    }
}

/// An exai entry already in Claude Code's config keeps what else it holds when it is set up
/// again, with Claude's CLI on PATH: its `env` (a team daemon's EXAI_URL) is not dropped by a
/// `claude mcp remove` and `add`, and the CLI is not run at all.
#[test]
fn claude_setup_over_an_existing_entry_keeps_its_env_even_with_the_cli_on_path() {
    let home = Home::new();
    let claude = home.dir.join("bin/claude");
    let ran = home.dir.join("claude-ran");
    write(
        &claude,
        &format!("#!/bin/sh\necho \"$@\" >> {}\n", path(&ran)),
    );
    std::fs::set_permissions(&claude, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let file = home.file(".claude.json");
    write(
        &file,
        "{\"mcpServers\": {\"exai\": {\"type\": \"stdio\", \"command\": \"/old/place/exai\", \
         \"args\": [\"stdio\"], \"env\": {\"EXAI_URL\": \"https://exai.team.example\"}}}}\n",
    );
    home.ok(&["setup", "claude"]);
    let value: Value = serde_json::from_str(&read(&file)).unwrap();
    let entry = &value["mcpServers"]["exai"];
    assert_eq!(entry["command"], exai_exe(), "{value}");
    assert_eq!(
        entry["env"]["EXAI_URL"], "https://exai.team.example",
        "{value}"
    );
    assert!(
        !ran.exists(),
        "claude ran: {}",
        std::fs::read_to_string(&ran).unwrap_or_default()
    );
}

#[test]
fn clients_without_a_file_get_one_and_lose_it_again() {
    let home = Home::new();
    for (client, relative, _) in json_clients() {
        home.ok(&["setup", client]);
        let file = home.file(relative);
        let value: Value = serde_json::from_str(&read(&file)).unwrap();
        assert_eq!(value["mcpServers"]["exai"]["args"], json!(["stdio"]));
        home.ok(&["setup", "--remove", client]);
        assert!(
            !file.exists(),
            "{client}: the file exai made goes with its entry"
        );
    }
}

#[test]
fn project_scope_writes_the_project_files() {
    let home = Home::new();
    let project = home.file("work/repo");
    std::fs::create_dir_all(&project).unwrap();
    for (client, relative) in [
        ("codex", ".codex/config.toml"),
        ("cursor", ".cursor/mcp.json"),
        ("gemini", ".gemini/settings.json"),
        ("claude", ".mcp.json"),
    ] {
        let out = home.ok(&["setup", client, "--project", &path(&project)]);
        assert!(out.contains("project config"), "{out}");
        assert!(project.join(relative).exists(), "{client}: {out}");
    }
    // Without DIR: the current directory.
    let (ok, out) = run(
        Command::new(EXAI).args(["setup", "--remove", "cursor", "--project"]),
        &home.env(),
        Some(&project),
    );
    assert!(ok, "{out}");
    assert!(!project.join(".cursor/mcp.json").exists(), "{out}");
    let (ok, out) = home.exai(&["setup", "auggie", "--project", &path(&project)]);
    assert!(!ok && out.contains("no project configuration"), "{out}");
    assert!(
        !home.file(".codex/config.toml").exists(),
        "the user's files untouched"
    );
}

#[test]
fn a_project_directory_linked_out_of_the_project_is_refused_and_its_target_untouched() {
    let home = Home::new();
    let codex = home.file(".codex/config.toml");
    write(&codex, CODEX_CONFIG);
    let cursor_text = "{\"mcpServers\": {}}\n";
    let cursor = home.file(".cursor/mcp.json");
    write(&cursor, cursor_text);
    // A cloned repository whose client directories point at the user's own.
    let project = home.file("work/cloned");
    std::fs::create_dir_all(&project).unwrap();
    let project = path(&project);
    for dir in [".codex", ".cursor"] {
        std::os::unix::fs::symlink(home.file(dir), Path::new(&project).join(dir)).unwrap();
    }
    for (client, dir, target, text) in [
        ("codex", ".codex", &codex, CODEX_CONFIG),
        ("cursor", ".cursor", &cursor, cursor_text),
    ] {
        let link = Path::new(&project).join(dir);
        for args in [
            vec!["setup", client, "--project", &project],
            vec!["setup", client, "--project", &project, "--dry-run"],
            vec!["setup", "--remove", client, "--project", &project],
        ] {
            let (ok, out) = home.exai(&args);
            assert!(!ok, "{args:?}: {out}");
            assert!(
                out.contains(&format!(
                    "{} is a symbolic link (to {})",
                    link.display(),
                    home.file(dir).display()
                )) && out.contains("never through a link"),
                "{args:?}: {out}"
            );
        }
        assert_eq!(read(target), text, "{client}: the user's file untouched");
        let beside: Vec<_> = std::fs::read_dir(home.file(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            beside.len(),
            1,
            "{client}: no backup or temporary file: {beside:?}"
        );
    }
}

#[test]
fn a_dry_run_shows_the_change_and_writes_nothing() {
    let home = Home::new();
    let codex = home.file(".codex/config.toml");
    write(&codex, CODEX_CONFIG);
    let out = home.ok(&["setup", "codex", "--dry-run"]);
    assert!(out.contains(&format!("+++ b{}", codex.display())), "{out}");
    assert!(out.contains("+[mcp_servers.exai]\n"), "{out}");
    assert!(out.contains("+tool_timeout_sec = 630\n"), "{out}");
    assert!(out.contains("without --dry-run"), "{out}");
    assert_eq!(read(&codex), CODEX_CONFIG);
    assert!(!backup_of(&codex).exists());
    let out = home.ok(&["setup", "cursor", "--dry-run"]);
    assert!(out.contains("--- /dev/null"), "{out}");
    assert!(!home.file(".cursor").exists(), "{out}");
    home.ok(&["setup", "codex"]);
    let written = read(&codex);
    let out = home.ok(&["setup", "--remove", "codex", "--dry-run"]);
    assert!(out.contains("-[mcp_servers.exai]\n"), "{out}");
    assert_eq!(read(&codex), written);
}

#[test]
fn symlinked_and_broken_configs_are_refused_untouched() {
    let home = Home::new();
    let real = home.file("dotfiles/mcp.json");
    write(&real, "{\"mcpServers\": {}}\n");
    std::fs::create_dir_all(home.file(".cursor")).unwrap();
    std::os::unix::fs::symlink(&real, home.file(".cursor/mcp.json")).unwrap();
    let (ok, out) = home.exai(&["setup", "cursor"]);
    assert!(!ok && out.contains("symbolic link"), "{out}");
    assert_eq!(read(&real), "{\"mcpServers\": {}}\n");

    let broken_json = "{\n  \"theme\": \"dark\",\n  \"mcpServers\": {,\n}\n";
    let gemini = home.file(".gemini/settings.json");
    write(&gemini, broken_json);
    let broken_toml = "model = \"o3\"\n\n[mcp_servers.exai\ncommand = \"x\"\n";
    let codex = home.file(".codex/config.toml");
    write(&codex, broken_toml);
    for (client, file, line, text) in [
        ("gemini", &gemini, "line 3", broken_json),
        ("codex", &codex, "line 3", broken_toml),
    ] {
        for args in [vec!["setup", client], vec!["setup", "--remove", client]] {
            let (ok, out) = home.exai(&args);
            assert!(!ok, "{out}");
            assert!(out.contains(&path(file)) && out.contains(line), "{out}");
            assert!(out.contains("does not parse"), "{out}");
            assert_eq!(read(file), text, "a broken file is left as it was");
            assert!(!backup_of(file).exists());
        }
    }
    let listed = home.ok(&["setup", "--list"]);
    assert!(listed.contains("cannot tell"), "{listed}");
}

#[test]
fn no_key_reaches_a_client_config() {
    let home = Home::new();
    let (ok, out) = run(
        Command::new("sh").args(["-c", &format!("echo {KEY}-file | {EXAI} keys set kimi")]),
        &home.env(),
        None,
    );
    assert!(ok, "{out}");
    let mut outputs = String::new();
    for client in ["claude", "codex", "cursor", "gemini", "auggie"] {
        outputs.push_str(&home.ok(&["setup", client]));
    }
    outputs.push_str(&home.ok(&["setup", "--list"]));
    outputs.push_str(&home.ok(&["setup", "--list", "--json"]));
    assert!(!outputs.contains(KEY), "{outputs}");
    for relative in [
        ".claude.json",
        ".codex/config.toml",
        ".cursor/mcp.json",
        ".gemini/settings.json",
        ".augment/settings.json",
    ] {
        let text = read(&home.file(relative));
        assert!(!text.contains(KEY), "{relative}: {text}");
        assert!(!text.contains("API_KEY"), "{relative}: {text}");
    }
}

#[test]
fn list_says_what_is_installed_and_set_up() {
    let home = Home::new();
    std::fs::create_dir_all(home.file(".gemini")).unwrap();
    home.ok(&["setup", "codex"]);
    let listed: Value = serde_json::from_str(&home.ok(&["setup", "--list", "--json"])).unwrap();
    let row = |id: &str| {
        listed["clients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["client"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(row("codex")["configured"], true, "{listed}");
    assert_eq!(row("codex")["this_exai"], true, "{listed}");
    assert_eq!(row("codex")["timeout_s"], 630.0, "{listed}");
    assert_eq!(row("gemini")["installed"], true, "{listed}");
    assert_eq!(row("gemini")["configured"], false, "{listed}");
    assert_eq!(row("cursor")["installed"], false, "{listed}");
    assert_eq!(
        row("claude")["timeout_elsewhere"],
        "MCP_TOOL_TIMEOUT not set"
    );
    let text = home.ok(&["setup", "--list"]);
    assert!(
        text.contains("Codex        installed; set up for exai"),
        "{text}"
    );
    assert!(text.contains("timeout 630 s"), "{text}");
    assert!(
        text.trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("next: exai setup")
    );
    let (ok, out) = home.exai(&["setup", "vim"]);
    assert!(!ok && out.contains("unknown client \"vim\""), "{out}");
}

#[test]
fn a_short_claude_tool_timeout_gets_advice_not_an_edit() {
    let home = Home::new();
    let settings = home.file(".claude/settings.json");
    let original = "{\n  \"env\": {\n    \"MCP_TOOL_TIMEOUT\": \"60000\"\n  }\n}\n";
    write(&settings, original);
    let out = home.ok(&["setup", "claude"]);
    assert!(out.contains("MCP_TOOL_TIMEOUT is 60000 ms"), "{out}");
    assert!(out.contains("630000"), "{out}");
    assert_eq!(
        read(&settings),
        original,
        "exai leaves Claude's settings alone"
    );
}

/// A client CLI that never finishes (a prompt nobody sees, a login, the network), with a child
/// of its own holding its output open: `exai setup` stops them and says so, instead of waiting
/// with it forever.
#[test]
fn a_client_cli_that_never_finishes_is_stopped_and_named() {
    let home = Home::new();
    let claude = home.dir.join("bin/claude");
    let pid_file = home.dir.join("child.pid");
    write(
        &claude,
        &format!(
            "#!/bin/sh\nsleep 600 &\necho $! > {}\nexec sleep 600\n",
            path(&pid_file)
        ),
    );
    std::fs::set_permissions(&claude, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let started = Instant::now();
    let (ok, out) = home.exai(&["setup", "claude"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("mcp add") && out.contains("did not finish within 30 s"),
        "{out}"
    );
    assert!(started.elapsed() < Duration::from_secs(90), "{out}");
    // Its child went with it.
    let child = read(&pid_file).trim().to_string();
    wait_until(
        "the CLI's child to be stopped",
        Duration::from_secs(10),
        || {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            // Gone, or a zombie its parent (init) has yet to reap.
            (stat.is_empty()
                || stat
                    .rsplit_once(')')
                    .is_some_and(|(_, s)| s.trim_start().starts_with('Z')))
            .then_some(())
        },
    );
}

#[test]
fn the_real_claude_code_lists_exai_connected_then_gone() {
    let Some([claude]) = installed_npm_bins(["claude"], "Claude Code") else {
        return;
    };
    let mut home = Home::new();
    home.path = format!("{}:{}", path(claude.parent().unwrap()), home.path);
    home.extra.extend([
        (
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".to_string(),
            "1".to_string(),
        ),
        (
            "EXAI_LISTEN".to_string(),
            format!("127.0.0.1:{}", free_port()),
        ),
    ]);
    home.extra.extend(store_env(&home.exai_home()));
    let out = home.ok(&["setup", "claude"]);
    assert!(
        out.contains("ran: ") && out.contains("mcp add -s user exai --"),
        "{out}"
    );
    let again = home.ok(&["setup", "claude"]);
    assert!(again.contains("already set up"), "{again}");
    let mcp_list = || {
        let (ok, out) = run(
            Command::new(&claude).args(["mcp", "list"]),
            &home.env(),
            None,
        );
        assert!(ok, "claude mcp list: {out}");
        out
    };
    let listed = mcp_list();
    let line = listed
        .lines()
        .find(|l| l.starts_with("exai:"))
        .unwrap_or_else(|| panic!("exai not listed: {listed}"));
    assert!(line.contains(&format!("{} stdio", exai_exe())), "{line}");
    assert!(
        line.contains("Connected") && !line.contains("Failed"),
        "{line}"
    );
    stop_started_daemon(&home.exai_home());
    let text = read(&home.file(".claude.json"));
    assert!(!text.contains(KEY), "{text}");
    let removed = home.ok(&["setup", "--remove", "claude"]);
    assert!(removed.contains("mcp remove -s user exai"), "{removed}");
    assert!(
        removed.contains(&format!(
            "{}.exai-backup",
            home.file(".claude.json").display()
        )),
        "{removed}"
    );
    let listed = mcp_list();
    assert!(!listed.contains("exai"), "{listed}");
}

/// A slow chat (6 s) from a client that says it is `client`: (how long until the answer, its text).
fn slow_call_as(daemon: &Daemon, client: &str) -> (Duration, String) {
    let mut raw = RawClient::start(&daemon.stdio_env(), &[]);
    raw.ok(
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": client, "version": "1.0.0"}}),
    );
    raw.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    let started = Instant::now();
    let result = raw.ok(
        "tools/call",
        json!({"name": "chat", "arguments": {"prompt": "slow", "model": "fake-delay-6000"}}),
    );
    (
        started.elapsed(),
        result["content"][0]["text"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    )
}

/// The call went to the background at the client's 3 s, not at a default.
fn answered_at_three_seconds((waited, text): (Duration, String)) {
    assert!(text.contains("still running in the background"), "{text}");
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(5),
        "answered after {waited:?}, not at the client's 3 s"
    );
}

#[test]
fn a_codex_session_waits_as_long_as_codex_is_configured_to() {
    let fake = Fake::start();
    let home = Home::new();
    // Codex here waits 3 s for a tool: exai answers with a call handle before that.
    write(
        &home.file(".codex/config.toml"),
        &format!(
            "[mcp_servers.exai]\ncommand = \"{}\"\nargs = [\"stdio\"]\ntool_timeout_sec = 3\n",
            exai_exe()
        ),
    );
    let codex_home = path(&home.file(".codex"));
    let home_dir = path(&home.dir);
    let env = [
        ("HOME", home_dir.as_str()),
        ("CODEX_HOME", codex_home.as_str()),
    ];
    let daemon = Daemon::start(&fake, &env);
    answered_at_three_seconds(slow_call_as(&daemon, "codex-mcp-client"));
    drop(daemon);
    // An explicit rule still wins: this Codex is said to wait a minute.
    let ruled = Daemon::start(
        &fake,
        &[
            ("HOME", home_dir.as_str()),
            ("CODEX_HOME", codex_home.as_str()),
            ("EXAI_CLIENT_PATIENCE", "codex=60"),
        ],
    );
    let (waited, text) = slow_call_as(&ruled, "codex-mcp-client");
    assert!(!text.contains("in the background"), "{text}");
    assert!(waited >= Duration::from_secs(5), "{waited:?}");
}

#[test]
fn a_gemini_session_waits_as_long_as_its_exai_entry_says() {
    let fake = Fake::start();
    let home = Home::new();
    home.ok(&["setup", "gemini"]);
    // The user shortens the timeout setup wrote to 3 s.
    let file = home.file(".gemini/settings.json");
    let mut settings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    settings["mcpServers"]["exai"]["timeout"] = json!(3000);
    write(&file, &settings.to_string());
    let home_dir = path(&home.dir);
    let daemon = Daemon::start(&fake, &[("HOME", home_dir.as_str())]);
    answered_at_three_seconds(slow_call_as(&daemon, "gemini-cli-mcp-client"));
}
