//! Property test of argument parsing, through the real binary: any arguments to any tool —
//! the tool's own field names with values of any type, hostile paths among them — get an
//! answer (a result or a clear error), never a crash or a hang, and the session goes on.

use crate::common;

use std::cell::RefCell;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};

/// Values an attacker would try in a path or text field, besides random ones.
const NASTY: [&str; 10] = [
    "/",
    "/proc/self/environ",
    "/dev/zero",
    "/dev/stdin",
    "../../../../etc/passwd",
    "",
    "-rf",
    "--output=/tmp/x",
    "HEAD~1000000",
    "data:image/png;base64,!!!!",
];

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        prop::sample::select(NASTY.to_vec()).prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::vec((any::<String>(), inner), 0..3)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

#[test]
fn any_arguments_to_any_tool_get_an_answer_and_the_session_lives() {
    let fake = Fake::start();
    let home = temp_home();
    let mut env = in_process_env(&fake, &home, &[("EXAI_CALL_TIMEOUT_S", "20")]);
    // clink's CLIs are the stand-in: generated prompts never reach a real coding agent.
    let stand_in = std::path::Path::new(EXAI)
        .parent()
        .unwrap()
        .join("exai-fake-cli");
    let config = home.join("config.toml");
    let clis: String = ["claude", "codex", "gemini"]
        .iter()
        .map(|name| format!("[clink.clis.{name}]\ncommand = {:?}\n", path(&stand_in)))
        .collect();
    std::fs::write(&config, clis).unwrap();
    env.push(("EXAI_CONFIG".to_string(), path(&config)));
    let mut raw = RawClient::start(&env, &["--no-daemon"]);
    raw.ok(
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "fuzzer", "version": "1"}}),
    );
    raw.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    let listed = raw.ok("tools/list", json!({}));
    // Each tool with the names of its fields: generated arguments use them, so they get past
    // "unknown field" and reach each field's own checks.
    let tools: Vec<(String, Vec<String>)> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| {
            let fields = tool["inputSchema"]["properties"]
                .as_object()
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            (tool["name"].as_str().unwrap().to_string(), fields)
        })
        .collect();
    assert!(tools.len() >= 20, "{listed}");

    let raw = RefCell::new(raw);
    let strategy = prop::sample::select(tools).prop_flat_map(|(tool, fields)| {
        let field = if fields.is_empty() {
            any::<String>().boxed()
        } else {
            prop_oneof![4 => prop::sample::select(fields), 1 => any::<String>()].boxed()
        };
        (
            Just(tool),
            prop::collection::vec((field, value()), 0..6)
                .prop_map(|pairs| pairs.into_iter().collect::<Map<_, _>>()),
        )
    });
    let mut runner = TestRunner::new(Config {
        cases: 150,
        failure_persistence: None,
        ..Config::default()
    });
    let outcome = runner.run(&strategy, |(tool, arguments)| {
        let reply = raw
            .borrow_mut()
            .request("tools/call", json!({"name": tool, "arguments": arguments}));
        let answered = reply["result"]["content"].is_array()
            || reply["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty());
        prop_assert!(answered, "{tool}: {reply}");
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    // The session is still alive and serving.
    let pong = raw.borrow_mut().ok("ping", json!({}));
    assert!(pong.is_object(), "{pong}");
}
