//! `exai doctor` against the fake provider (healthy, a refused key, a wrong URL, a region's 404,
//! a hang, none configured), private files, version skew, `--json`; and the first run: `exai`
//! alone in a terminal, `exai stdio` with no provider.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

/// A temporary HOME with its config dir and EXAI_HOME inside: nothing of the real user's is seen.
struct Place {
    root: PathBuf,
    env: Vec<(String, String)>,
}

impl Place {
    fn new() -> Self {
        let root = temp_home();
        let home = root.join("state");
        let mut env = vec![
            ("HOME".to_string(), path(&root)),
            ("XDG_CONFIG_HOME".to_string(), path(&root.join("config"))),
            ("EXAI_HOME".to_string(), path(&home)),
        ];
        env.extend(store_env(&home));
        Self { root, env }
    }

    fn with(mut self, pairs: &[(&str, &str)]) -> Self {
        for (k, v) in pairs {
            self.env.push((k.to_string(), v.to_string()));
        }
        self
    }

    fn home(&self) -> PathBuf {
        self.root.join("state")
    }

    fn keys_file(&self) -> PathBuf {
        self.root.join("config/exai/keys.toml")
    }

    /// `exai ARGS` with exactly this place's environment (and PATH), stdin `input`:
    /// (success, stdout, stderr).
    fn exai(&self, args: &[&str], input: &str) -> (bool, String, String) {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let output = exai_output(&env, args, input);
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// `exai doctor ARGS`: (success, everything it printed).
    fn doctor(&self, args: &[&str]) -> (bool, String) {
        let (ok, out, err) = self.exai(&[&["doctor"], args].concat(), "");
        (ok, format!("{out}{err}"))
    }
}

/// The environment of a custom endpoint at the fake (its model list at `/v1/models`).
fn custom(fake: &Fake) -> Vec<(&'static str, String)> {
    vec![
        ("CUSTOM_API_URL", format!("{}/v1", fake.url)),
        ("CUSTOM_MODEL_NAME", "fake-fast".into()),
    ]
}

fn at<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The line of check `name`, which must be there.
fn line<'a>(report: &'a str, name: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(name)))
        .unwrap_or_else(|| panic!("no {name} line in:\n{report}"))
}

#[test]
fn a_healthy_set_up_passes_with_the_providers_model_count() {
    let fake = Fake::start();
    let place = Place::new().with(&at(&custom(&fake)));
    let (ok, report) = place.doctor(&[]);
    assert!(ok, "{report}");
    let provider = line(&report, "provider custom");
    assert!(provider.starts_with("ok"), "{report}");
    assert!(
        provider.contains(&format!("{}/v1 answered in", fake.url)) && provider.contains("model(s)"),
        "{report}"
    );
    for check in [
        "config",
        "version",
        "daemon",
        "store",
        "default model",
        "disk",
    ] {
        assert!(!line(&report, check).starts_with("FAIL"), "{report}");
    }
    assert!(report.contains("exai is ready"), "{report}");
}

#[test]
fn a_refused_key_fails_naming_the_key_command_and_json_says_the_same() {
    let fake = Fake::start();
    let place = Place::new().with(&at(&custom(&fake)));
    let (stored, out, err) = place.exai(&["keys", "set", "custom"], "fake-key-401\n");
    assert!(stored, "{out}{err}");
    let (ok, report) = place.doctor(&[]);
    assert!(!ok, "{report}");
    let provider = line(&report, "provider custom");
    assert!(
        provider.starts_with("FAIL") && provider.contains("refused the key (HTTP 401)"),
        "{report}"
    );
    assert!(
        report.contains("fix: `exai keys set custom` with a valid key"),
        "{report}"
    );
    assert!(!report.contains("fake-key-401"), "{report}");

    let (ok, out, _) = place.exai(&["doctor", "--json"], "");
    assert!(!ok);
    assert!(!out.contains("fake-key-401"), "{out}");
    let parsed: Value = serde_json::from_str(&out).unwrap();
    let checks = parsed["checks"].as_array().unwrap();
    assert_eq!(parsed["summary"]["healthy"], false);
    assert_eq!(
        parsed["summary"]["fail"],
        checks.iter().filter(|c| c["verdict"] == "fail").count()
    );
    for check in checks {
        let name = check["name"].as_str().unwrap();
        let label = match check["verdict"].as_str().unwrap() {
            "fail" => "FAIL",
            other => other,
        };
        let text = line(&report, name);
        assert!(text.starts_with(label), "{check} vs {text}");
        assert_eq!(check["fix"].is_null(), check["verdict"] == "ok", "{check}");
    }
}

#[test]
fn a_refused_key_of_a_provider_with_regions_names_each_regions_url() {
    let fake = Fake::start();
    let url = format!("{}/v1", fake.url);
    let place = Place::new().with(&[
        ("GLM_API_URL", url.as_str()),
        ("GLM_API_KEY", "fake-key-401"),
        ("KIMI_API_URL", &format!("{}/nowhere", fake.url)),
        ("KIMI_API_KEY", "sk-kimi-5150"),
    ]);
    let (ok, report) = place.doctor(&[]);
    assert!(!ok, "{report}");
    assert!(
        line(&report, "provider glm").starts_with("FAIL"),
        "{report}"
    );
    assert!(
        report.contains(
            "the key comes from GLM_API_KEY, which overrides the keys file: put a valid key \
             there, or unset it and run `exai keys set glm`"
        ) && report.contains("https://open.bigmodel.cn/api/paas/v4 (BigModel, mainland China)"),
        "{report}"
    );
    let kimi = line(&report, "provider kimi");
    assert!(
        kimi.starts_with("FAIL") && kimi.contains("(HTTP 404): a wrong URL or region endpoint"),
        "{report}"
    );
    assert!(
        report.contains("set KIMI_API_URL to the provider's API base URL")
            && report.contains("https://api.moonshot.cn/v1 (mainland China)"),
        "{report}"
    );
    assert!(
        !report.contains("fake-key-401") && !report.contains("sk-kimi-5150"),
        "{report}"
    );
}

#[test]
fn a_url_where_nothing_listens_fails_naming_the_url() {
    let dead = dead_port();
    let url = format!("http://127.0.0.1:{}/v1", dead.port);
    let place = Place::new().with(&[("CUSTOM_API_URL", url.as_str())]);
    let (ok, report) = place.doctor(&[]);
    assert!(!ok, "{report}");
    let provider = line(&report, "provider custom");
    assert!(
        provider.starts_with("FAIL") && provider.contains(&format!("cannot connect to {url}")),
        "{report}"
    );
    assert!(
        report.contains("fix: check CUSTOM_API_URL (host and port) and the network"),
        "{report}"
    );
}

#[test]
fn a_provider_that_hangs_fails_as_timed_out_within_the_timeout() {
    let fake = Fake::start();
    let mut env = custom(&fake);
    env.push(("CUSTOM_API_KEY", "fake-key-hang".into()));
    let place = Place::new().with(&at(&env));
    let started = Instant::now();
    let (ok, report) = place.doctor(&["--timeout", "1"]);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(!ok, "{report}");
    let provider = line(&report, "provider custom");
    assert!(
        provider.starts_with("FAIL") && provider.contains("did not answer within 1 s: timed out"),
        "{report}"
    );
    assert!(!report.contains("fake-key-hang"), "{report}");
}

#[test]
fn with_no_provider_it_says_how_to_add_one() {
    let place = Place::new();
    let (ok, report) = place.doctor(&[]);
    assert!(!ok, "{report}");
    assert!(
        line(&report, "providers").starts_with("FAIL")
            && report.contains("fix: store a key with `exai keys set glm`"),
        "{report}"
    );
}

#[test]
fn a_token_or_keys_file_others_can_read_fails_with_the_chmod() {
    let fake = Fake::start();
    let place = Place::new().with(&at(&custom(&fake)));
    std::fs::create_dir_all(place.home()).unwrap();
    std::fs::set_permissions(place.home(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let token = place.home().join("token");
    std::fs::write(&token, "a-token-of-the-test-0042").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (ok, report) = place.doctor(&[]);
    assert!(!ok, "{report}");
    assert!(
        line(&report, "token").starts_with("FAIL")
            && report.contains(&format!("fix: chmod 600 {}", token.display())),
        "{report}"
    );

    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (stored, out, err) = place.exai(&["keys", "set", "custom"], "sk-custom-1234\n");
    assert!(stored, "{out}{err}");
    std::fs::set_permissions(place.keys_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, report) = place.doctor(&[]);
    assert!(!ok, "{report}");
    assert!(line(&report, "token").starts_with("ok"), "{report}");
    assert!(
        line(&report, "keys file").starts_with("FAIL")
            && report.contains(&format!("fix: chmod 600 {}", place.keys_file().display())),
        "{report}"
    );
    assert!(line(&report, "config").starts_with("FAIL"), "{report}");
    assert!(
        !report.contains("sk-custom-1234") && !report.contains("a-token-of-the-test-0042"),
        "{report}"
    );
}

#[test]
fn a_config_file_holding_a_database_password_fails_unless_private() {
    let fake = Fake::start();
    let place = Place::new().with(&at(&custom(&fake)));
    let file = place.root.join("config/exai/config.toml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, "default_model = \"fake-fast\"\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_, report) = place.doctor(&[]);
    assert!(line(&report, "config file").starts_with("ok"), "{report}");

    std::fs::write(
        &file,
        "[store]\nurl = \"postgres://exai:hunter2-secret@127.0.0.1:9/team\"\n",
    )
    .unwrap();
    let (ok, report) = place.doctor(&[]);
    assert!(!ok, "{report}");
    let config = line(&report, "config file");
    assert!(
        config.starts_with("FAIL")
            && config.contains("mode 644")
            && config.contains("it holds a credential (store.url)"),
        "{report}"
    );
    assert!(
        report.contains(&format!("fix: chmod 600 {}", file.display())),
        "{report}"
    );
    assert!(!report.contains("hunter2-secret"), "{report}");

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_, report) = place.doctor(&[]);
    assert!(line(&report, "config file").starts_with("ok"), "{report}");
}

#[test]
fn a_linked_config_file_is_checked_where_it_points_and_a_linked_keys_file_is_named_a_link() {
    let fake = Fake::start();
    let place = Place::new().with(&at(&custom(&fake)));
    let dotfiles = place.root.join("dotfiles");
    std::fs::create_dir_all(&dotfiles).unwrap();
    let real = dotfiles.join("config.toml");
    std::fs::write(&real, "default_model = \"fake-fast\"\n").unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o644)).unwrap();
    let file = place.root.join("config/exai/config.toml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&real, &file).unwrap();
    let (ok, report) = place.doctor(&[]);
    assert!(ok, "{report}");
    let config = line(&report, "config file");
    assert!(
        config.starts_with("ok")
            && config.contains(&format!("(a link to {})", real.display()))
            && config.contains("mode 644"),
        "{report}"
    );

    // Written by others through the link: the file it points to is what others may write.
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (ok, report) = place.doctor(&[]);
    assert!(!ok, "{report}");
    assert!(
        line(&report, "config file").starts_with("FAIL")
            && report.contains(&format!("fix: chmod 644 {}", file.display())),
        "{report}"
    );
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o644)).unwrap();

    // exai refuses a keys file reached through a link: no chmod helps, the link must go.
    let keys = dotfiles.join("keys.toml");
    std::fs::write(&keys, "custom = \"sk-linked-key-5150\"\n").unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&keys, place.keys_file()).unwrap();
    let (ok, report) = place.doctor(&[]);
    assert!(!ok, "{report}");
    let linked = line(&report, "keys file");
    assert!(
        linked.starts_with("FAIL")
            && linked.contains("is a symbolic link")
            && !linked.contains("mode 777"),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "fix: put the file itself there: mv {} {}",
            keys.display(),
            place.keys_file().display()
        )),
        "{report}"
    );
    assert!(!report.contains("sk-linked-key-5150"), "{report}");
}

#[test]
fn a_daemon_of_another_version_is_a_warning_naming_the_restart() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let (ok, report) = daemon.cli(&["doctor"]);
    assert!(ok, "{report}");
    assert!(
        line(&report, "daemon").starts_with("ok    daemon"),
        "{report}"
    );
    let (ok, status) = daemon.cli(&["status"]);
    assert!(
        ok && status.contains(&format!("version {}", exai::VERSION)),
        "{status}"
    );
    assert!(!status.contains("version: "), "{status}");
    assert!(
        line(&report, "version").contains("the daemon is the same version"),
        "{report}"
    );

    let mut info = daemon_info(&daemon.home);
    info["version"] = json!("0.0.1-old");
    std::fs::write(daemon.home.join("daemon.json"), info.to_string()).unwrap();
    let (ok, report) = daemon.cli(&["doctor"]);
    assert!(ok, "a warning does not fail: {report}");
    let version = line(&report, "version");
    assert!(
        version.starts_with("warn")
            && version.contains(&format!(
                "the running exai daemon is version 0.0.1-old and this exai is {}",
                exai::VERSION
            )),
        "{report}"
    );
    assert!(
        report.contains("fix: run `exai daemon restart` when its calls are done"),
        "{report}"
    );
    assert!(!report.contains(&daemon.token()), "{report}");

    let (ok, status) = daemon.cli(&["status"]);
    assert!(ok, "{status}");
    assert!(
        status.contains(&format!(
            "version: the running exai daemon is version 0.0.1-old and this exai is {}: run \
             `exai daemon restart` when its calls are done",
            exai::VERSION
        )),
        "{status}"
    );
    let (ok, json) = daemon.cli(&["status", "--json"]);
    assert!(ok, "{json}");
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["daemon_version"], "0.0.1-old");
    assert!(
        json["version_skew"]
            .as_str()
            .unwrap()
            .contains("exai daemon restart")
    );
}

/// The `status` tool's text, asked over `/ws` by a client that says its shim is `version`.
async fn status_seen_by_a_shim_of(daemon: &Daemon, version: &str) -> String {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = daemon.url().into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert(
        "authorization",
        format!("Bearer {}", daemon.token()).parse().unwrap(),
    );
    headers.insert("exai-shim-version", version.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let answer = async |ws: &mut tokio_tungstenite::WebSocketStream<_>, id: i64| -> Value {
        loop {
            if let Some(Ok(Message::Text(text))) = ws.next().await {
                let reply: Value = serde_json::from_str(text.as_str()).unwrap();
                if reply["id"] == id {
                    return reply;
                }
            }
        }
    };
    for message in [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "skewed", "version": "0"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "status", "arguments": {}}}),
    ] {
        ws.send(Message::Text(message.to_string().into()))
            .await
            .unwrap();
        if message["id"] == 1 {
            answer(&mut ws, 1).await;
        }
    }
    let reply = answer(&mut ws, 2).await;
    reply["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn the_status_tool_names_a_shim_of_another_version() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let skewed = status_seen_by_a_shim_of(&daemon, "0.0.1-old").await;
    assert!(
        skewed.contains(&format!(
            "version: the running exai daemon is version {} and this exai is 0.0.1-old: run \
             `exai daemon restart` when its calls are done",
            exai::VERSION
        )),
        "{skewed}"
    );
    let same = status_seen_by_a_shim_of(&daemon, exai::VERSION).await;
    assert!(!same.contains("version: "), "{same}");

    // A real shim says its version: the same, so nothing is said.
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let result = client.call_tool(call("status", json!({}))).await.unwrap();
    let text = text_of(&result);
    assert!(
        text.starts_with(&format!("exai {}", exai::VERSION)),
        "{text}"
    );
    assert!(!text.contains("version: "), "{text}");
    let structured = result.structured_content.unwrap();
    assert_eq!(structured["shim_version"], exai::VERSION, "{structured}");
    client.cancel().await.unwrap();
}

/// A pseudo-terminal's secondary side, for a child's stdin (its primary kept open meanwhile).
fn terminal() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain libc calls on a descriptor this function owns; the name is copied at once.
    unsafe {
        let primary = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(primary >= 0, "posix_openpt");
        assert_eq!(libc::grantpt(primary), 0);
        assert_eq!(libc::unlockpt(primary), 0);
        let name = std::ffi::CStr::from_ptr(libc::ptsname(primary))
            .to_string_lossy()
            .into_owned();
        let secondary = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name)
            .unwrap();
        (std::fs::File::from_raw_fd(primary), secondary)
    }
}

#[test]
fn exai_alone_in_a_terminal_says_what_it_is_and_what_to_run_next() {
    let place = Place::new();
    let (_primary, secondary) = terminal();
    let output = Command::new(EXAI)
        .env_clear()
        .envs(place.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::from(secondary))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{said}");
    for next in ["exai keys set glm", "exai setup claude", "exai doctor"] {
        assert!(said.contains(next), "{said}");
    }
    assert!(said.contains("MCP server"), "{said}");

    // Not at a terminal (a script, a client launching `exai` with no arguments): clap's usage
    // error, as before.
    let (ok, out, err) = place.exai(&[], "");
    assert!(!ok && out.is_empty(), "{out}");
    assert!(err.contains("Usage: exai <COMMAND>"), "{err}");
    assert!(!err.contains("exai keys set glm"), "{err}");
}

#[tokio::test]
async fn with_no_provider_tools_are_listed_and_a_model_call_names_the_fix() {
    let place = Place::new();
    let (client, _) = stdio_client(&place.env, &[]).await;
    let tools = client.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "chat"), "{tools:?}");
    let result = client
        .call_tool(call("chat", json!({"prompt": "hello"})))
        .await
        .unwrap();
    let said = error_of(&result);
    assert!(
        said.contains("exai keys set <provider>") && said.contains("exai doctor"),
        "{said}"
    );
    client.cancel().await.unwrap();
    stop_started_daemon(&place.home());
}

#[test]
fn a_daemon_named_by_exai_url_is_checked_there() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let mut env = custom(&fake);
    env.push(("EXAI_URL", daemon.url()));
    let (ok, report) = Place::new().with(&at(&env)).doctor(&[]);
    assert!(ok, "{report}");
    assert!(
        line(&report, "daemon").contains(&format!("up at EXAI_URL {}", daemon.url())),
        "{report}"
    );

    let dead = dead_port();
    let nowhere = format!("ws://127.0.0.1:{}/ws", dead.port);
    let mut env = custom(&fake);
    env.push(("EXAI_URL", nowhere.clone()));
    let (ok, report) = Place::new().with(&at(&env)).doctor(&[]);
    assert!(!ok, "{report}");
    let line = line(&report, "daemon");
    assert!(
        line.starts_with("FAIL") && line.contains(&format!("EXAI_URL {nowhere}: no exai daemon")),
        "{report}"
    );
}

#[test]
fn each_installed_client_is_checked_for_this_exai_and_its_timeout() {
    let fake = Fake::start();
    let place = Place::new().with(&at(&custom(&fake)));
    let (_, report) = place.doctor(&[]);
    assert!(
        line(&report, "clients").starts_with("warn") && report.contains("no MCP client found"),
        "{report}"
    );

    // Codex is installed (its config dir exists) and launches another exai with a short timeout.
    let codex = place.root.join(".codex");
    std::fs::create_dir_all(&codex).unwrap();
    std::fs::write(
        codex.join("config.toml"),
        "[mcp_servers.exai]\ncommand = \"/opt/old/exai\"\nargs = [\"stdio\"]\ntool_timeout_sec = 60\n",
    )
    .unwrap();
    let (ok, report) = place.doctor(&[]);
    assert!(ok, "a client's own file only warns:\n{report}");
    let codex_line = line(&report, "client codex");
    assert!(
        codex_line.starts_with("warn") && codex_line.contains("/opt/old/exai"),
        "{report}"
    );
    assert!(report.contains("fix: exai setup codex"), "{report}");

    // Set up, it is this exai and waits long enough; setup's timeout satisfies doctor.
    let (set_up, out, err) = place.exai(&["setup", "codex"], "");
    assert!(set_up, "{out}{err}");
    let (_, report) = place.doctor(&[]);
    let codex_line = line(&report, "client codex");
    assert!(
        codex_line.starts_with("ok") && codex_line.contains("is set up for this exai, waits"),
        "{report}"
    );
}

/// A daemon stopped where it runs (Ctrl-Z in its terminal) holds its home and answers nothing:
/// `exai doctor`, `exai status` and a client's error (the shim's) say so, with the way to let it
/// go on, instead of "does not answer" or "not running"; doctor does not wait out its timeout;
/// `exai daemon stop` stops it all the same.
#[test]
fn a_stopped_daemon_is_named_with_the_way_to_let_it_go_on() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let pid = daemon.pid().to_string();
    let signal = |which: &str| {
        let sent = Command::new("kill")
            .args([which, pid.as_str()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {which} {pid}");
    };
    signal("-STOP");
    let started = Instant::now();
    let (ok, report) = daemon.cli(&["doctor", "--timeout", "30"]);
    let waited = started.elapsed();
    let (_, status) = daemon.cli(&["status"]);
    // What a client sees: the shim's error names it too.
    let (_, called) = daemon.cli(&[
        "call",
        "chat",
        "--arg",
        "prompt=hi",
        "--arg",
        "model=fake-fast",
    ]);
    signal("-CONT");
    assert!(!ok, "{report}");
    let stopped = format!("the daemon (pid {pid}) is stopped (Ctrl-Z in its terminal, or SIGSTOP)");
    let way_out = format!("`kill -CONT {pid}` lets it go on");
    assert!(
        line(&report, "daemon").contains(&format!("a daemon (pid {pid}) holds"))
            && report.contains(&stopped)
            && report.contains(&way_out),
        "{report}"
    );
    assert!(waited < Duration::from_secs(30), "doctor waited {waited:?}");
    for shown in [&status, &called] {
        assert!(
            shown.contains(&stopped) && shown.contains(&way_out),
            "{shown}"
        );
    }
    assert!(status.contains("daemon: does not answer at"), "{status}");
    // Let go on, it answers again.
    let (ok, report) = daemon.cli(&["doctor"]);
    assert!(
        ok && line(&report, "daemon").starts_with("ok    daemon"),
        "{report}"
    );
    // Stopped again, `exai daemon stop` still stops it: it is let go on to act on SIGTERM.
    signal("-STOP");
    let (ok, stopped) = daemon.cli(&["daemon", "stop"]);
    assert!(ok, "{stopped}");
    let (_, status) = daemon.cli(&["status"]);
    assert!(status.contains("daemon: not running"), "{status}");
}
