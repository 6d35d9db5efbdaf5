//! `exai keys`: keys stored in a private file beside the config file, shown only masked, read by
//! the daemon at start, overridden by the environment, and refused when the file is not private.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common::*;

const KEY: &str = "sk-keysfile-secret-7781";

/// A config directory of its own (XDG_CONFIG_HOME) and a state dir: (config home, keys file).
fn config_home() -> (PathBuf, PathBuf) {
    let dir = temp_home();
    let keys = dir.join("exai/keys.toml");
    (dir, keys)
}

fn env_of(config: &Path) -> Vec<(String, String)> {
    let home = config.join("state");
    let mut env = vec![
        ("XDG_CONFIG_HOME".to_string(), path(config)),
        ("EXAI_HOME".to_string(), path(&home)),
    ];
    env.extend(store_env(&home));
    env
}

fn as_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[test]
fn keys_set_from_stdin_are_private_listed_masked_and_removed() {
    let (config, keys_file) = config_home();
    let env = env_of(&config);
    let env = as_refs(&env);

    let (ok, out) = exai_with_stdin(&env, &["keys", "set", "custom"], &format!("  {KEY}  \n"));
    assert!(ok, "{out}");
    assert!(!out.contains(KEY), "{out}");
    let mode = std::fs::metadata(&keys_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let dir_mode = std::fs::metadata(keys_file.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    assert!(
        std::fs::read_to_string(&keys_file)
            .unwrap()
            .contains(&format!("custom = \"{KEY}\""))
    );

    let (ok, out) = exai_with_stdin(&env, &["keys", "list"], "");
    assert!(ok, "{out}");
    assert!(out.contains("set (…7781) from keys file"), "{out}");
    assert!(out.contains("glm") && out.contains("not set"), "{out}");
    assert!(!out.contains(KEY), "{out}");
    let (ok, out) = exai_with_stdin(&env, &["keys", "list", "--json"], "");
    assert!(ok, "{out}");
    assert!(!out.contains(KEY), "{out}");

    let (ok, out) = exai_with_stdin(&env, &["keys", "set", "gpt"], "sk-whatever-1\n");
    assert!(
        !ok && out.contains("unknown provider \"gpt\"") && out.contains("openrouter"),
        "{out}"
    );
    assert!(!out.contains("sk-whatever-1"), "{out}");
    let (ok, out) = exai_with_stdin(&env, &["keys", "set", "glm"], "   \n");
    assert!(!ok && out.contains("empty key"), "{out}");

    let (ok, out) = exai_with_stdin(&env, &["keys", "rm", "custom"], "");
    assert!(ok && out.contains("removed"), "{out}");
    let (ok, out) = exai_with_stdin(&env, &["keys", "list"], "");
    assert!(ok, "{out}");
    assert!(!out.contains("from keys file"), "{out}");
    assert!(!std::fs::read_to_string(&keys_file).unwrap().contains(KEY));
}

#[test]
fn the_environment_overrides_the_keys_file() {
    let (config, _) = config_home();
    let mut env = env_of(&config);
    env.push(("CUSTOM_API_URL".into(), "http://127.0.0.1:9/v1".into()));
    let (ok, out) = exai_with_stdin(&as_refs(&env), &["keys", "set", "custom"], KEY);
    assert!(ok, "{out}");

    let (ok, out) = exai_with_stdin(&as_refs(&env), &["config"], "");
    assert!(ok, "{out}");
    assert!(out.contains("key set in the keys file"), "{out}");
    assert!(!out.contains(KEY), "{out}");

    env.push(("CUSTOM_API_KEY".into(), "sk-from-environment-4242".into()));
    let (ok, out) = exai_with_stdin(&as_refs(&env), &["config"], "");
    assert!(ok, "{out}");
    assert!(out.contains("key set in CUSTOM_API_KEY"), "{out}");
    let (ok, out) = exai_with_stdin(&as_refs(&env), &["keys", "list"], "");
    assert!(ok, "{out}");
    assert!(
        out.contains(
            "set (…4242) from environment variable CUSTOM_API_KEY (the keys file's key is not used)"
        ),
        "{out}"
    );
    assert!(
        !out.contains(KEY) && !out.contains("sk-from-environment-4242"),
        "{out}"
    );
}

#[test]
fn keys_name_the_variable_the_key_really_comes_from_and_the_daemon_follows_the_file() {
    let (config, _) = config_home();
    std::fs::create_dir_all(config.join("exai")).unwrap();
    std::fs::write(
        config.join("exai/config.toml"),
        "[providers.glm]\napi_key_env = \"MY_GLM_KEY\"\n",
    )
    .unwrap();
    let mut env = env_of(&config);
    // Built-in variables exai does not read for these providers once another is named.
    env.push(("GLM_API_KEY".into(), "sk-builtin-var-not-read-1111".into()));
    env.push(("KIMI_API_KEY_ENV".into(), "MY_KIMI_KEY".into()));
    env.push(("KIMI_API_KEY".into(), "sk-builtin-var-not-read-2222".into()));

    let (ok, out) = exai_with_stdin(&as_refs(&env), &["keys", "set", "glm"], KEY);
    assert!(ok, "{out}");
    assert!(!out.contains("GLM_API_KEY is set"), "{out}");
    assert!(
        out.contains("picks the change up by itself") && !out.contains("until it restarts"),
        "{out}"
    );
    let (ok, out) = exai_with_stdin(&as_refs(&env), &["keys", "list"], "");
    assert!(ok, "{out}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} line: {out}"))
            .to_string()
    };
    assert_eq!(
        line("glm"),
        "glm          set (…7781) from keys file",
        "{out}"
    );
    assert_eq!(
        line("kimi"),
        "kimi         not set (exai keys set kimi, or MY_KIMI_KEY)",
        "{out}"
    );

    env.push(("MY_GLM_KEY".into(), "sk-my-own-variable-3333".into()));
    let (ok, out) = exai_with_stdin(&as_refs(&env), &["keys", "list"], "");
    assert!(ok, "{out}");
    assert!(
        out.contains(
            "glm          set (…3333) from environment variable MY_GLM_KEY (the keys file's key is not used)"
        ),
        "{out}"
    );
    let (ok, out) = exai_with_stdin(&as_refs(&env), &["keys", "set", "glm"], KEY);
    assert!(ok, "{out}");
    assert!(
        out.contains("note: MY_GLM_KEY is set in this environment"),
        "{out}"
    );
    for secret in ["sk-builtin-var-not-read", "sk-my-own-variable-3333", KEY] {
        assert!(!out.contains(secret), "{out}");
    }
}

#[test]
fn a_keys_file_others_may_read_or_a_symlink_is_refused() {
    let (config, keys_file) = config_home();
    let env = env_of(&config);
    let env = as_refs(&env);
    let (ok, out) = exai_with_stdin(&env, &["keys", "set", "glm"], KEY);
    assert!(ok, "{out}");

    std::fs::set_permissions(&keys_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    for args in [&["config"][..], &["keys", "list"], &["keys", "set", "kimi"]] {
        let (ok, out) = exai_with_stdin(&env, args, "sk-other-key-1\n");
        assert!(!ok, "{args:?}: {out}");
        assert!(
            out.contains(&format!("chmod 600 {}", keys_file.display())),
            "{args:?}: {out}"
        );
        assert!(!out.contains(KEY), "{out}");
    }
    std::fs::set_permissions(&keys_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    let real = config.join("elsewhere.toml");
    std::fs::rename(&keys_file, &real).unwrap();
    std::os::unix::fs::symlink(&real, &keys_file).unwrap();
    for args in [&["config"][..], &["keys", "list"]] {
        let (ok, out) = exai_with_stdin(&env, args, "");
        assert!(!ok, "{args:?}: {out}");
        assert!(
            out.contains("is a symlink or not a regular file") && out.contains(&path(&keys_file)),
            "{args:?}: {out}"
        );
        assert!(!out.contains(KEY), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_started_without_the_key_in_its_environment_sends_the_stored_one() {
    let fake = Fake::start();
    let (config, keys_file) = config_home();
    let config_dir = path(&config);
    let (ok, out) = exai_with_stdin(
        &[("XDG_CONFIG_HOME", config_dir.as_str())],
        &["keys", "set", "custom"],
        KEY,
    );
    assert!(ok, "{out}");
    // Blank counts as unset: whatever the test's own environment holds, the daemon has no key.
    let daemon_env = [
        ("XDG_CONFIG_HOME", config_dir.as_str()),
        ("EXAI_CONFIG", ""),
        ("CUSTOM_API_KEY", ""),
    ];
    let mut daemon = Daemon::start(&fake, &daemon_env);

    let (ok, out) = daemon.cli(&["config"]);
    assert!(ok, "{out}");
    assert!(out.contains("key set in the keys file"), "{out}");
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let answered = client
        .call_tool(chat("hello", "custom:fake-fast"))
        .await
        .unwrap();
    assert_eq!(text_of(&answered), "echo: hello");
    assert_eq!(last_body(&fake, "fake-fast")["_has_auth"], true);
    // The provider echoes the Authorization header back in its error: exai masks it.
    let rejected = client
        .call_tool(chat("x", "custom:fake-echo-auth"))
        .await
        .unwrap();
    let error = all_text_of(&rejected);
    assert!(error.contains("Bearer ***"), "{error}");
    assert!(!error.contains(KEY), "{error}");
    for result in [&answered, &rejected] {
        let id = call_id_of(result);
        daemon.final_record(&id);
        let (ok, record) = daemon.cli(&["calls", "show", &id, "--json"]);
        assert!(ok, "{record}");
        assert!(!record.contains(KEY), "{record}");
    }
    client.cancel().await.unwrap();
    daemon.stop();
    assert_eq!(logged(&daemon.home, KEY), 0);

    // Without the stored key, the same daemon set-up sends none: the key above came from the file.
    let (ok, out) = exai_with_stdin(
        &[("XDG_CONFIG_HOME", config_dir.as_str())],
        &["keys", "rm", "custom"],
        "",
    );
    assert!(ok, "{out}");
    assert!(!std::fs::read_to_string(&keys_file).unwrap().contains(KEY));
    let daemon = Daemon::start(&fake, &daemon_env);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let answered = client
        .call_tool(chat("again", "custom:fake-fast"))
        .await
        .unwrap();
    assert_eq!(text_of(&answered), "echo: again");
    assert_eq!(last_body(&fake, "fake-fast")["_has_auth"], false);
    client.cancel().await.unwrap();
}

/// Ctrl-C at `exai keys set`'s prompt cancels it and leaves the terminal as it was (echo on),
/// not a shell that no longer shows what is typed. Run in a real terminal (`script`'s pty).
#[test]
fn ctrl_c_at_the_key_prompt_cancels_and_leaves_the_terminal_echoing() {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};

    let (config, keys_file) = config_home();
    let env = env_of(&config);
    let shell = format!("'{}' keys set glm; stty -a", EXAI);
    let mut child = Command::new("script")
        .args(["-qfec", &shell, "/dev/null"])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains("(not shown): ") {
        assert_eq!(
            stdout.read(&mut byte).unwrap(),
            1,
            "{}",
            String::from_utf8_lossy(&seen)
        );
        seen.push(byte[0]);
    }
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"sk-half\x03").unwrap();
    stdout.read_to_end(&mut seen).unwrap();
    let _ = child.wait();
    let out = String::from_utf8_lossy(&seen);
    assert!(out.contains("cancelled: no key stored"), "{out}");
    // `stty -a` after it: echo is on (a word of its own, not `-echo`).
    assert!(
        out.split_whitespace().any(|word| word == "echo"),
        "the terminal was left without echo: {out}"
    );
    assert!(
        !keys_file.exists()
            || !std::fs::read_to_string(&keys_file)
                .unwrap()
                .contains("sk-half")
    );
}
