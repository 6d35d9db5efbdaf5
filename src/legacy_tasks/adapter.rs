//! The wire side of 2025-11-25 tasks: renames the revision's task requests and fills in
//! what the revision declares, around an rmcp service that knows only the 2026 extension.
//!
//! One `Adapter` per session. It looks at messages only until it knows the session's
//! revision; sessions that are not 2025-11-25 (or that chose the 2026 extension) pay nothing after.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use rmcp::model::TASKS_EXTENSION_ID;
use serde_json::{Value, json};

use super::{CALL, CANCEL, GET, LIST, RESULT, VERSION};

/// Requests whose answers wait for a rewrite; a client that never reads its answers
/// cannot grow this without bound.
const MAX_PENDING_REWRITES: usize = 1024;
/// Longest request id remembered (JSON-RPC ids are short strings or numbers; a megabyte-long
/// one is not kept a thousand times over).
const MAX_ID_CHARS: usize = 256;

/// Text every message the adapter renames or remembers contains (`initialize`, `tools/list`,
/// `tasks/*`, a `tools/call` with `params.task`).
const ADAPTED_TEXT: [&str; 4] = ["\"initialize\"", "\"tools/list\"", "\"tasks/", "\"task\""];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Era {
    /// No `initialize` answered yet.
    Unknown,
    /// Negotiated 2025-11-25 without the 2026 tasks extension: adapt.
    Legacy,
    /// Anything else: leave every message alone.
    Other,
}

#[derive(Debug, Clone, Copy)]
enum Rewrite {
    Initialize,
    ToolsList,
}

struct State {
    era: Era,
    /// Request id (as JSON text) → what to do to its answer.
    rewrites: HashMap<String, Rewrite>,
}

/// Adapts one session's messages for 2025-11-25 task clients.
pub struct Adapter {
    /// Tools that may run as tasks (`execution.taskSupport: "optional"`).
    task_tools: HashSet<String>,
    state: Mutex<State>,
}

impl Adapter {
    pub fn new(task_tools: impl IntoIterator<Item = String>) -> Self {
        Self {
            task_tools: task_tools.into_iter().collect(),
            state: Mutex::new(State {
                era: Era::Unknown,
                rewrites: HashMap::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether incoming messages may need adapting (otherwise they need not even be looked at).
    pub fn watches_inbound(&self) -> bool {
        self.state().era != Era::Other
    }

    /// Whether the client message `text` may need adapting — a look at the text before any
    /// parsing, so that plain calls, progress and pings are parsed once.
    pub fn may_adapt(&self, text: &str) -> bool {
        self.watches_inbound() && ADAPTED_TEXT.iter().any(|needle| text.contains(needle))
    }

    /// Whether some answer waits for a rewrite.
    pub fn watches_outbound(&self) -> bool {
        !self.state().rewrites.is_empty()
    }

    /// Whether the session negotiated 2025-11-25 tasks.
    pub fn is_legacy(&self) -> bool {
        self.state().era == Era::Legacy
    }

    /// Adapts a message from the client, in place.
    pub fn inbound(&self, message: &mut Value) {
        let Some(method) = message.get("method").and_then(Value::as_str) else {
            return;
        };
        // Notifications carry no task semantics here (`notifications/cancelled` is left to rmcp).
        let Some(id) = request_id(message) else {
            return;
        };
        let mut state = self.state();
        match state.era {
            Era::Other => {}
            Era::Unknown => {
                if method == "initialize" {
                    if wants_legacy_tasks(message.get("params")) {
                        remember(&mut state, id, Rewrite::Initialize);
                    } else {
                        state.era = Era::Other;
                    }
                } else if method != "ping" {
                    // A session that starts without `initialize` is a 2026 stateless one.
                    state.era = Era::Other;
                }
            }
            Era::Legacy => {
                let renamed = match method {
                    // The shim may pass on the client's own initialize after replaying it.
                    "initialize" => {
                        remember(&mut state, id, Rewrite::Initialize);
                        None
                    }
                    "tools/list" => {
                        remember(&mut state, id, Rewrite::ToolsList);
                        None
                    }
                    "tools/call"
                        if message
                            .pointer("/params/task")
                            .is_some_and(|task| !task.is_null()) =>
                    {
                        Some(CALL)
                    }
                    "tasks/get" => Some(GET),
                    "tasks/result" => Some(RESULT),
                    "tasks/list" => Some(LIST),
                    "tasks/cancel" => Some(CANCEL),
                    _ => None,
                };
                if let Some(renamed) = renamed {
                    message["method"] = Value::String(renamed.into());
                }
            }
        }
    }

    /// Adapts a message to the client, in place.
    pub fn outbound(&self, message: &mut Value) {
        if message.get("method").is_some() {
            return;
        }
        let Some(id) = request_id(message) else {
            return;
        };
        let mut state = self.state();
        let Some(rewrite) = state.rewrites.remove(&id) else {
            return;
        };
        let Some(result) = message.get_mut("result") else {
            // An error answer: nothing to add; a failed initialize ends the session anyway.
            return;
        };
        match rewrite {
            Rewrite::Initialize => {
                if result.get("protocolVersion").and_then(Value::as_str) != Some(VERSION) {
                    state.era = Era::Other;
                    return;
                }
                state.era = Era::Legacy;
                if let Some(capabilities) = result
                    .get_mut("capabilities")
                    .and_then(Value::as_object_mut)
                {
                    capabilities.insert(
                        "tasks".into(),
                        json!({"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}),
                    );
                    // One tasks API per session: this client polls the 2025-11-25 way.
                    let now_empty = capabilities
                        .get_mut("extensions")
                        .and_then(Value::as_object_mut)
                        .map(|extensions| {
                            extensions.remove(TASKS_EXTENSION_ID);
                            extensions.is_empty()
                        });
                    if now_empty == Some(true) {
                        capabilities.remove("extensions");
                    }
                }
            }
            Rewrite::ToolsList => {
                let tools = result
                    .get_mut("tools")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten();
                for tool in tools {
                    let long = tool
                        .get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|name| self.task_tools.contains(name));
                    if long && let Some(tool) = tool.as_object_mut() {
                        tool.insert("execution".into(), json!({"taskSupport": "optional"}));
                    }
                }
            }
        }
    }
}

impl crate::transport::WireAdapter for Adapter {
    fn may_adapt(&self, text: &str) -> bool {
        Adapter::may_adapt(self, text)
    }

    fn inbound(&self, message: &mut Value) {
        Adapter::inbound(self, message)
    }

    fn watches_outbound(&self) -> bool {
        Adapter::watches_outbound(self)
    }

    fn outbound(&self, message: &mut Value) {
        Adapter::outbound(self, message)
    }
}

/// A message's id as a map key, if it is a JSON-RPC id (a string or number) of sane length.
fn request_id(message: &Value) -> Option<String> {
    message
        .get("id")
        .filter(|id| id.is_string() || id.is_number())
        .map(Value::to_string)
        .filter(|key| key.len() <= MAX_ID_CHARS)
}

fn remember(state: &mut State, id: String, rewrite: Rewrite) {
    if state.rewrites.len() >= MAX_PENDING_REWRITES {
        state.rewrites.clear();
    }
    state.rewrites.insert(id, rewrite);
}

/// A 2025-11-25 `initialize` from a client that did not choose the 2026 tasks extension.
///
/// The client's own `capabilities.tasks` says which requests *it* can run as tasks for the
/// server (sampling, elicitation); whether it may augment `tools/call` is the server's
/// capability, so it is not looked at here.
fn wants_legacy_tasks(params: Option<&Value>) -> bool {
    let Some(params) = params else {
        return false;
    };
    let version = params.get("protocolVersion").and_then(Value::as_str);
    let chose_extension = params
        .pointer("/capabilities/extensions")
        .and_then(Value::as_object)
        .is_some_and(|extensions| extensions.contains_key(TASKS_EXTENSION_ID));
    version == Some(VERSION) && !chose_extension
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter() -> Adapter {
        Adapter::new(["chat".to_string()])
    }

    fn initialize(adapter: &Adapter, version: &str, capabilities: Value) -> Value {
        let mut request = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": version, "capabilities": capabilities,
            "clientInfo": {"name": "t", "version": "1"}}});
        adapter.inbound(&mut request);
        let mut answer = json!({"jsonrpc": "2.0", "id": 0, "result": {
            "protocolVersion": version,
            "capabilities": {"tools": {}, "extensions": {TASKS_EXTENSION_ID: {}}},
            "serverInfo": {"name": "exai", "version": "0"}}});
        adapter.outbound(&mut answer);
        answer
    }

    #[test]
    fn a_2025_11_25_session_gets_tasks_declared_and_its_task_requests_renamed() {
        let adapter = adapter();
        let answer = initialize(&adapter, VERSION, json!({}));
        assert!(adapter.is_legacy());
        let capabilities = &answer["result"]["capabilities"];
        assert_eq!(
            capabilities["tasks"]["requests"]["tools"]["call"],
            json!({})
        );
        assert!(capabilities.get("extensions").is_none(), "{capabilities}");

        let mut list = json!({"jsonrpc": "2.0", "id": "l", "method": "tools/list"});
        adapter.inbound(&mut list);
        assert_eq!(list["method"], "tools/list");
        let mut tools = json!({"jsonrpc": "2.0", "id": "l", "result": {"tools": [
            {"name": "chat", "inputSchema": {}}, {"name": "version", "inputSchema": {}}]}});
        adapter.outbound(&mut tools);
        assert_eq!(
            tools["result"]["tools"][0]["execution"]["taskSupport"],
            "optional"
        );
        assert!(tools["result"]["tools"][1].get("execution").is_none());

        let mut augmented = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "chat", "task": {"ttl": 60000}}});
        adapter.inbound(&mut augmented);
        assert_eq!(augmented["method"], CALL);
        let mut plain = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "chat"}});
        adapter.inbound(&mut plain);
        assert_eq!(plain["method"], "tools/call");
        for (method, renamed) in [
            ("tasks/get", GET),
            ("tasks/result", RESULT),
            ("tasks/list", LIST),
            ("tasks/cancel", CANCEL),
        ] {
            let mut request = json!({"jsonrpc": "2.0", "id": 4, "method": method,
                "params": {"taskId": "x"}});
            adapter.inbound(&mut request);
            assert_eq!(request["method"], renamed);
        }
        // The shim may pass the client's initialize on after replaying it: answered alike.
        let again = initialize(&adapter, VERSION, json!({}));
        assert!(again["result"]["capabilities"].get("tasks").is_some());
        assert!(!adapter.watches_outbound());
    }

    #[test]
    fn other_sessions_are_left_alone() {
        // An older revision.
        let adapter = adapter();
        let answer = initialize(&adapter, "2025-06-18", json!({}));
        assert!(answer["result"]["capabilities"].get("tasks").is_none());
        assert!(!adapter.watches_inbound());
        // A 2025-11-25 client that chose the 2026 extension (rmcp's clients do).
        let adapter = super::Adapter::new(Vec::new());
        initialize(
            &adapter,
            VERSION,
            json!({"extensions": {TASKS_EXTENSION_ID: {}}}),
        );
        assert!(!adapter.watches_inbound());
        let mut get = json!({"jsonrpc": "2.0", "id": 1, "method": "tasks/get",
            "params": {"taskId": "x"}});
        adapter.inbound(&mut get);
        assert_eq!(get["method"], "tasks/get");
        // A stateless 2026 session never sends initialize.
        let adapter = super::Adapter::new(Vec::new());
        let mut call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "chat", "task": {}}});
        adapter.inbound(&mut call);
        assert_eq!(call["method"], "tools/call");
        assert!(!adapter.watches_inbound());
    }

    mod properties {
        use super::*;
        use crate::arbitrary::json_rpc_message;
        use proptest::prelude::*;

        proptest! {
            /// Any messages, both ways, in any order: no panic, and what the adapter keeps
            /// stays within its bounds.
            #[test]
            fn any_message_sequence_is_adapted_without_panic_or_growth(
                messages in prop::collection::vec((any::<bool>(), json_rpc_message()), 0..40),
            ) {
                let adapter = adapter();
                initialize(&adapter, VERSION, json!({}));
                for (from_client, mut message) in messages {
                    if from_client {
                        let text = message.to_string();
                        let _ = adapter.may_adapt(&text);
                        adapter.inbound(&mut message);
                    } else {
                        adapter.outbound(&mut message);
                    }
                    let state = adapter.state();
                    prop_assert!(state.rewrites.len() <= MAX_PENDING_REWRITES);
                    prop_assert!(state.rewrites.keys().all(|k| k.len() <= MAX_ID_CHARS));
                }
            }

            /// Any text a client sends, adapted or not, is either a message or answered with
            /// a JSON-RPC error by the framed transport.
            #[test]
            fn any_frame_is_parsed_or_answered_with_an_error(
                message in json_rpc_message(),
                raw in any::<String>(),
                legacy in any::<bool>(),
            ) {
                use crate::transport::{malformed_reply, parse_inbound};
                let adapter = adapter();
                if legacy {
                    let mut init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                        "params": {"protocolVersion": "2025-11-25", "capabilities": {}}});
                    adapter.inbound(&mut init);
                }
                for text in [message.to_string(), raw] {
                    if let Err(error) = parse_inbound(&text, Some(&adapter)) {
                        let reply: Value = serde_json::from_str(&malformed_reply(&text, &error)).unwrap();
                        prop_assert!(reply["error"]["code"].is_i64());
                    }
                }
            }
        }
    }
}
