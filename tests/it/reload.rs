//! The daemon follows its config: a changed keys or config file reaches the next call without a
//! restart while calls in flight finish on the settings they started with; a broken config keeps
//! the old settings and says so; a setting fixed at start waits for a restart; each client's own
//! provider keys reach its own session's calls (over the socket), never as everybody's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use exai::store::CallFilter;

use crate::common::*;

const OLD_KEY: &str = "sk-reload-old-1111";
const NEW_KEY: &str = "sk-reload-new-2222";

/// What the fake records of a request that carried `key`.
fn carried(key: &str) -> String {
    exai_fake_provider::auth_id(&format!("Bearer {key}"))
}

/// The config directory of a test (XDG_CONFIG_HOME): config.toml and keys.toml in `exai/`.
fn config_dir() -> PathBuf {
    temp_home()
}

/// Writes the config file as editors do: a new file renamed over the old one.
fn write_config(dir: &Path, text: &str) {
    let exai = dir.join("exai");
    std::fs::create_dir_all(&exai).unwrap();
    let temp = exai.join(".config.toml.tmp");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, exai.join("config.toml")).unwrap();
}

/// `exai keys set PROVIDER` with the key on stdin, for the config directory `dir`.
fn set_key(dir: &Path, provider: &str, key: &str) {
    let dir = path(dir);
    let (ok, out) = exai_with_stdin(
        &[("XDG_CONFIG_HOME", dir.as_str())],
        &["keys", "set", provider],
        key,
    );
    assert!(ok, "{out}");
}

/// A daemon reading its config and keys from `dir`, with no provider key in its environment.
fn daemon_with_config(fake: &Fake, dir: &Path, extra: &[(&str, &str)]) -> Daemon {
    let dir = path(dir);
    let mut env: Vec<(&str, &str)> = vec![
        ("XDG_CONFIG_HOME", dir.as_str()),
        ("EXAI_CONFIG", ""),
        ("CUSTOM_API_KEY", ""),
    ];
    env.extend_from_slice(extra);
    Daemon::start(fake, &env)
}

/// The settings part of `/healthz` as the home's own socket gives it (over TCP it is only counts).
fn settings_of(daemon: &Daemon) -> serde_json::Value {
    let (status, body) = socket_request(
        &home_of(daemon).join("daemon.sock"),
        "localhost",
        "GET",
        "/healthz",
        &[],
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["settings"].clone()
}

/// Waits until the daemon's settings were replaced `generation` times.
fn wait_for_generation(daemon: &Daemon, generation: u64) {
    wait_until(
        &format!("settings generation {generation}"),
        Duration::from_secs(10),
        || (settings_of(daemon)["generation"] == generation).then_some(()),
    );
}

/// `chat` naming no model: the default model answers.
fn chat_by_default(prompt: &str) -> rmcp::model::CallToolRequestParams {
    rmcp::model::CallToolRequestParams::new("chat").with_arguments(
        serde_json::json!({ "prompt": prompt })
            .as_object()
            .cloned()
            .unwrap(),
    )
}

/// What the `status` tool answers `client`.
async fn status_tool(client: &Client) -> rmcp::model::CallToolResult {
    client
        .call_tool(
            rmcp::model::CallToolRequestParams::new("status").with_arguments(Default::default()),
        )
        .await
        .unwrap()
}

fn running_calls(daemon: &Daemon) -> usize {
    daemon.read_store(|store| {
        store
            .list(&CallFilter {
                running_only: true,
                limit: 10,
                ..Default::default()
            })
            .unwrap()
            .len()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_key_reaches_the_next_call_while_calls_in_flight_keep_the_one_they_started_with() {
    let fake = Fake::start();
    let dir = config_dir();
    set_key(&dir, "custom", OLD_KEY);
    // One request at a time: the second call waits in line, in flight, while the key changes.
    let mut daemon = daemon_with_config(&fake, &dir, &[("CUSTOM_MAX_CONCURRENCY", "1")]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;

    let peer = client.peer().clone();
    let first = tokio::spawn(async move { peer.call_tool(chat("first", "fake-delay-3000")).await });
    wait_until(
        "the first call at the provider",
        Duration::from_secs(10),
        || (fake.stats()["in_flight"] == 1).then_some(()),
    );
    let peer = client.peer().clone();
    let queued = tokio::spawn(async move { peer.call_tool(chat("queued", "fake-delay-10")).await });
    wait_until("the second call received", Duration::from_secs(10), || {
        (running_calls(&daemon) == 2).then_some(())
    });

    set_key(&dir, "custom", NEW_KEY);
    wait_for_generation(&daemon, 1);
    assert_eq!(
        fake.stats()["in_flight"],
        1,
        "the change must land while the first call is still at the provider"
    );
    let next = client.call_tool(chat("next", "fake-fast")).await.unwrap();
    assert_eq!(text_of(&next), "echo: next");
    assert_eq!(last_body(&fake, "fake-fast")["_auth_id"], carried(NEW_KEY));

    let first = first.await.unwrap().unwrap();
    let queued = queued.await.unwrap().unwrap();
    assert_eq!(text_of(&first), "echo: first");
    assert_eq!(text_of(&queued), "echo: queued");
    assert_eq!(
        last_body(&fake, "fake-delay-3000")["_auth_id"],
        carried(OLD_KEY)
    );
    // Sent after the change, yet with the key of the settings it was received on.
    assert_eq!(
        last_body(&fake, "fake-delay-10")["_auth_id"],
        carried(OLD_KEY)
    );

    client.cancel().await.unwrap();
    daemon.stop();
    assert_eq!(
        logged(&daemon.home, "custom key"),
        1,
        "one reload line names the key"
    );
    for key in [OLD_KEY, NEW_KEY] {
        assert_eq!(logged(&daemon.home, key), 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_config_reaches_the_next_call_and_exai_reload_names_what_changed() {
    let fake = Fake::start();
    let dir = config_dir();
    write_config(&dir, "default_model = \"fake-delay-5\"\n");
    let daemon = daemon_with_config(&fake, &dir, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let no_model = || chat_by_default("which model?");
    client.call_tool(no_model()).await.unwrap();
    assert_eq!(last_body(&fake, "fake-delay-5")["model"], "fake-delay-5");

    write_config(&dir, "default_model = \"fake-delay-6\"\n");
    // The file watch, or this command, whichever comes first: either way it says what changed.
    let (ok, out) = daemon.cli(&["reload"]);
    assert!(ok, "{out}");
    assert!(out.contains("DEFAULT_MODEL"), "{out}");
    assert!(out.contains("generation 1"), "{out}");
    assert!(!out.contains("fake-delay-6"), "names, never values: {out}");
    client.call_tool(no_model()).await.unwrap();
    assert_eq!(last_body(&fake, "fake-delay-6")["model"], "fake-delay-6");

    let (ok, out) = daemon.cli(&["reload"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("already follows") && out.contains("DEFAULT_MODEL"),
        "{out}"
    );
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_config_keeps_the_old_settings_is_shown_until_fixed() {
    let fake = Fake::start();
    let dir = config_dir();
    write_config(&dir, "default_model = \"fake-delay-5\"\n");
    let mut daemon = daemon_with_config(&fake, &dir, &[]);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;

    write_config(
        &dir,
        "default_model = \"fake-delay-7\"\n[timeouts]\ncall = -5\n",
    );
    let problem = wait_until("the problem in status", Duration::from_secs(10), || {
        settings_of(&daemon)["problem"].as_str().map(str::to_string)
    });
    assert!(
        problem.contains("previous settings stay") && problem.contains("timeouts.call"),
        "{problem}"
    );
    let (ok, status) = daemon.cli(&["status"]);
    assert!(ok, "{status}");
    assert!(status.contains(&format!("settings: {problem}")), "{status}");
    let (ok, out) = daemon.cli(&["reload"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("keeps its previous settings") && out.contains("timeouts.call"),
        "{out}"
    );
    // The calls go on with the settings that were in place.
    let answered = status_tool(&client).await;
    assert!(
        text_of(&answered).contains("timeouts.call"),
        "{}",
        text_of(&answered)
    );
    assert_eq!(settings_of(&daemon)["generation"], 0);
    client.call_tool(chat_by_default("broken")).await.unwrap();
    assert!(
        last_body(&fake, "fake-delay-5")["messages"]
            .to_string()
            .contains("broken"),
        "the default model in place before the broken file answered"
    );

    write_config(&dir, "default_model = \"fake-delay-7\"\n");
    wait_for_generation(&daemon, 1);
    assert!(settings_of(&daemon)["problem"].is_null());
    client.call_tool(chat_by_default("fixed")).await.unwrap();
    assert_eq!(last_body(&fake, "fake-delay-7")["model"], "fake-delay-7");
    client.cancel().await.unwrap();
    daemon.stop();
    assert!(
        logged(&daemon.home, "the config could not be read again") >= 1,
        "the error is logged"
    );
}

#[test]
fn a_change_of_a_setting_fixed_at_start_waits_for_a_restart() {
    let fake = Fake::start();
    let dir = config_dir();
    let mut daemon = daemon_with_config(&fake, &dir, &[]);
    let address = daemon.addr.clone();

    write_config(&dir, "listen = \"127.0.0.1:1\"\nmax_output_tokens = 2000\n");
    let (ok, out) = daemon.cli(&["reload"]);
    assert!(ok, "{out}");
    for setting in ["EXAI_LISTEN", "MAX_MCP_OUTPUT_TOKENS"] {
        assert!(
            out.contains(&format!(
                "{setting} changed, but the running daemon keeps its value: it needs `exai daemon restart`"
            )),
            "{out}"
        );
    }
    assert_eq!(
        settings_of(&daemon)["needs_restart"],
        serde_json::json!(["EXAI_LISTEN", "MAX_MCP_OUTPUT_TOKENS"])
    );
    let (ok, status) = daemon.cli(&["status"]);
    assert!(ok, "{status}");
    assert!(
        status
            .contains("EXAI_LISTEN changed in the config, but the running daemon keeps its value"),
        "{status}"
    );
    // Still where it was.
    assert_eq!(daemon.healthz()["listen"], address);
    assert_eq!(settings_of(&daemon)["generation"], 0);
    daemon.stop();
    assert!(logged(&daemon.home, "it needs `exai daemon restart`") >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_client_s_own_key_reaches_its_own_calls_and_status_names_the_variable_only() {
    const FIRST: &str = "sk-client-first-3333";
    const SECOND: &str = "sk-client-second-4444";
    const OVER_TCP: &str = "sk-client-tcp-5555";
    let fake = Fake::start();
    let dir = config_dir();
    let mut daemon = daemon_with_config(&fake, &dir, &[]);
    let with_key = |mut env: Vec<(String, String)>, key: &str| {
        env.push(("CUSTOM_API_KEY".into(), key.into()));
        env
    };
    let (first, _) = stdio_client(&with_key(daemon.stdio_env(), FIRST), &[]).await;
    let (second, _) = stdio_client(&with_key(daemon.stdio_env(), SECOND), &[]).await;
    let (first_again, _) = stdio_client(&with_key(daemon.stdio_env(), FIRST), &[]).await;
    let (plain, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let (over_tcp, _) = stdio_client(
        &with_key(daemon.tcp_stdio_env(&daemon.url()), OVER_TCP),
        &[],
    )
    .await;

    let mut ids = Vec::new();
    for (client, model) in [
        (&first, "fake-delay-1"),
        (&second, "fake-delay-2"),
        (&first_again, "fake-delay-3"),
        (&plain, "fake-delay-4"),
        (&over_tcp, "fake-delay-5"),
    ] {
        let answered = client.call_tool(chat("whose key?", model)).await.unwrap();
        assert_eq!(text_of(&answered), "echo: whose key?");
        ids.push(call_id_of(&answered));
    }
    assert_eq!(last_body(&fake, "fake-delay-1")["_auth_id"], carried(FIRST));
    assert_eq!(
        last_body(&fake, "fake-delay-2")["_auth_id"],
        carried(SECOND)
    );
    assert_eq!(last_body(&fake, "fake-delay-3")["_auth_id"], carried(FIRST));
    // The daemon's own settings (no key), for a client that sets none and one over TCP.
    assert_eq!(last_body(&fake, "fake-delay-4")["_has_auth"], false);
    assert_eq!(last_body(&fake, "fake-delay-5")["_has_auth"], false);

    let sessions = settings_of(&daemon)["sessions_with_own_settings"].clone();
    let sessions = sessions.as_array().unwrap();
    assert_eq!(sessions.len(), 4, "{sessions:?}");
    // Over TCP, where /healthz takes no token, only how many.
    assert_eq!(
        daemon.healthz()["settings"]["sessions_with_own_settings"],
        4
    );
    for session in sessions {
        assert_eq!(session["variables"], serde_json::json!(["CUSTOM_API_KEY"]));
    }
    assert_eq!(
        sessions.iter().filter(|s| s["applied"] == true).count(),
        3,
        "{sessions:?}"
    );
    let (ok, status) = daemon.cli(&["status"]);
    assert!(ok, "{status}");
    assert_eq!(
        status
            .matches("runs with its own settings: its client sets CUSTOM_API_KEY differently from the daemon")
            .count(),
        3,
        "{status}"
    );
    assert!(
        status.contains("sets CUSTOM_API_KEY differently from the daemon, but it connects over TCP, where the daemon's settings apply"),
        "{status}"
    );
    let answered = status_tool(&plain).await;
    let tool_status = serde_json::to_string(&answered).unwrap();
    assert!(tool_status.contains("CUSTOM_API_KEY"), "{tool_status}");

    let mut shown = vec![status, tool_status, daemon.healthz().to_string()];
    for id in &ids {
        daemon.final_record(id);
        let (ok, record) = daemon.cli(&["calls", "show", id, "--json"]);
        assert!(ok, "{record}");
        shown.push(record);
    }
    for client in [first, second, first_again, plain, over_tcp] {
        client.cancel().await.unwrap();
    }
    daemon.stop();
    // One client configuration, one snapshot: the two sessions of the first key share it.
    assert_eq!(logged(&daemon.home, "a client's own settings built"), 2);
    for key in [FIRST, SECOND, OVER_TCP] {
        assert_eq!(logged(&daemon.home, key), 0, "{key} in the logs");
        for text in &shown {
            assert!(!text.contains(key), "{key} shown: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_autostarted_daemon_takes_no_client_s_provider_settings_as_its_own() {
    const KEY: &str = "sk-autostart-6666";
    let fake = Fake::start();
    let home = temp_home();
    let mut env = autostart_env(&home, &fake, None);
    // Not the default port: another test's daemon (the README walk-through's) may hold it.
    env.push(("EXAI_LISTEN".into(), format!("127.0.0.1:{}", free_port())));
    env.push(("CUSTOM_API_KEY".into(), KEY.into()));
    env.push(("DEFAULT_MODEL".into(), "fake-delay-8".into()));
    let (client, _) = stdio_client(&env, &[]).await;
    let answered = client.call_tool(chat_by_default("mine")).await.unwrap();
    assert_eq!(text_of(&answered), "echo: mine");
    assert_eq!(last_body(&fake, "fake-delay-8")["_auth_id"], carried(KEY));

    let pid = daemon_info(&home)["pid"].as_u64().unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    let names: Vec<&str> = environ
        .split('\0')
        .filter_map(|pair| pair.split_once('=').map(|(name, _)| name))
        .collect();
    for name in ["CUSTOM_API_KEY", "CUSTOM_API_URL", "DEFAULT_MODEL"] {
        assert!(!names.contains(&name), "{name} in the daemon's environment");
    }
    assert!(names.contains(&"EXAI_HOME"), "{names:?}");
    client.cancel().await.unwrap();
    stop_started_daemon(&home);
    assert_eq!(logged(&home, KEY), 0);
}

#[test]
fn only_the_owner_may_reload_the_daemon() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let ada = crate::users::add_user(home_of(&daemon), "ada", false);
    let url = format!("http://{}/reload", daemon.addr);
    let as_ada = format!("Bearer {ada}");
    let (status, body) = http_request("POST", &url, &[("Authorization", as_ada.as_str())], "");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("only the owner"), "{body}");
    let (status, body) = http_request("POST", &url, &[], "");
    assert_eq!(status, 401, "{body}");
    let as_owner = format!("Bearer {}", daemon.token());
    let (status, body) = http_request("POST", &url, &[("Authorization", as_owner.as_str())], "");
    assert_eq!(status, 200, "{body}");
}
