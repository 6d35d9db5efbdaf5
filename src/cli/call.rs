//! `exai call TOOL --arg NAME=VALUE …` (or a JSON object on stdin): one tool call through the
//! daemon from a terminal — over `exai stdio` as a child, which finds or starts the daemon as it
//! does for any client — with a live progress bar, the answer printed; Ctrl-C cancels the call.

use std::io::Write;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, CancelledNotificationParam, ClientConfig, ClientRequest,
    Implementation, JsonObject, MetaObject, ProgressNotificationParam, Request, RequestMetaObject,
    ServerResult, Tool,
};
use rmcp::service::{NotificationContext, PeerRequestOptions};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::Value;
use tokio::io::AsyncReadExt;

use crate::calls::CALL_ID_META;

/// Why `exai call` did not print an answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("--arg {0:?}: give NAME=VALUE")]
    BadArg(String),
    #[error("the JSON on stdin is not an object of arguments: {0}")]
    BadStdin(String),
    #[error("cannot reach the exai daemon through `exai stdio`: {why}{stderr}")]
    Connect { why: String, stderr: String },
    #[error("no tool {tool:?}; the tools are: {known}")]
    UnknownTool { tool: String, known: String },
    #[error("{0}")]
    Tool(String),
    #[error("call {call_id} cancelled; `exai calls show {call_id}` has its record")]
    Cancelled { call_id: String },
    #[error("the call was not answered: {0}")]
    Mcp(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What to call, and how to print it.
pub struct CallRequest {
    pub tool: String,
    /// `NAME=VALUE` pairs; a value is JSON unless the tool's schema wants a string there.
    pub args: Vec<String>,
    /// A JSON object of arguments (read from stdin); `args` go over it.
    pub stdin_json: Option<String>,
    /// Print the whole result as JSON instead of its text.
    pub json: bool,
    /// Ask for the request(s) the tool would send instead of sending them (`dry_run: true`).
    pub dry_run: bool,
}

/// Keeps the progress bar moving with the call's progress notifications.
#[derive(Clone)]
struct Watcher {
    bar: ProgressBar,
}

impl ClientHandler for Watcher {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        if let Some(message) = params.message {
            self.bar.set_message(super::safe_output::shown(&message));
        }
    }

    fn get_info(&self) -> ClientConfig {
        let mut info = ClientConfig::default();
        info.client_info = Implementation::new("exai-cli", crate::VERSION);
        info
    }
}

/// Runs the call and prints its answer to `out`; an error result is an `Err` (non-zero exit).
pub async fn run(request: CallRequest, out: &mut impl Write) -> Result<(), CallError> {
    let mut arguments = match request.stdin_json.as_deref().map(str::trim) {
        None | Some("") => JsonObject::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            Ok(other) => return Err(CallError::BadStdin(format!("got {other}"))),
            Err(error) => return Err(CallError::BadStdin(error.to_string())),
        },
    };
    let pairs = request
        .args
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .filter(|(name, _)| !name.is_empty())
                .ok_or_else(|| CallError::BadArg(pair.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed:>4} {wide_msg}") {
        bar.set_style(style);
    }
    bar.set_message(format!("{} · connecting", request.tool));
    bar.enable_steady_tick(Duration::from_millis(120));
    let outcome = call(&request, &mut arguments, &pairs, &bar).await;
    bar.finish_and_clear();
    let result = outcome?;
    if request.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&result).unwrap_or_default()
        )?;
    }
    let text = text_of(&result);
    if result.is_error == Some(true) {
        return Err(CallError::Tool(text));
    }
    if !request.json {
        writeln!(out, "{text}")?;
    }
    Ok(())
}

async fn call(
    request: &CallRequest,
    arguments: &mut JsonObject,
    pairs: &[(&str, &str)],
    bar: &ProgressBar,
) -> Result<CallToolResult, CallError> {
    let exe = std::env::current_exe()?;
    let mut command = tokio::process::Command::new(exe);
    command.arg("stdio");
    // Its own process group: the terminal's Ctrl-C reaches this process, which cancels the
    // call through the shim, rather than killing the shim first.
    command.process_group(0);
    let (transport, stderr) = TokioChildProcess::builder(command)
        .stderr(Stdio::piped())
        .spawn()?;
    // What the shim says on its stderr, kept (bounded) to explain a failure to connect.
    let said = Arc::new(Mutex::new(String::new()));
    if let Some(mut stderr) = stderr {
        let said = said.clone();
        crate::spawn::in_current_span(async move {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                let mut text = said.lock().unwrap_or_else(|p| p.into_inner());
                if text.len() < 16_384 {
                    text.push_str(&String::from_utf8_lossy(&chunk[..n]));
                }
            }
        });
    }
    let unreachable = |why: String| CallError::Connect {
        why,
        stderr: last_lines(&said.lock().unwrap_or_else(|p| p.into_inner())),
    };
    let client = Watcher { bar: bar.clone() }
        .serve(transport)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let tools = client
        .list_all_tools()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let Some(tool) = tools.iter().find(|t| t.name == request.tool) else {
        let mut known: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        known.sort_unstable();
        return Err(CallError::UnknownTool {
            tool: request.tool.clone(),
            known: known.join(", "),
        });
    };
    for (name, value) in pairs {
        arguments.insert(name.to_string(), typed(tool, name, value));
    }
    if request.dry_run {
        arguments.insert(crate::tools::dry_run::ARGUMENT.into(), Value::Bool(true));
    }
    // Named here, so that a Ctrl-C can say which call it cancelled.
    let call_id = uuid::Uuid::now_v7().to_string();
    let mut meta = JsonObject::new();
    meta.insert(CALL_ID_META.into(), Value::String(call_id.clone()));
    let options = PeerRequestOptions::no_options().with_meta(RequestMetaObject(MetaObject(meta)));
    let params = CallToolRequestParams::new(request.tool.clone()).with_arguments(arguments.clone());
    let peer = client.peer().clone();
    let handle = peer
        .send_cancellable_request(
            ClientRequest::CallToolRequest(Request::new(params)),
            options,
        )
        .await
        .map_err(|e| CallError::Mcp(e.to_string()))?;
    bar.set_message(format!("{} · sent", request.tool));
    let request_id = handle.id.clone();
    let answered = tokio::select! {
        answer = handle.await_response() => answer,
        _ = tokio::signal::ctrl_c() => {
            bar.set_message(format!("{} · cancelling", request.tool));
            let _ = peer
                .notify_cancelled(CancelledNotificationParam::new(
                    Some(request_id),
                    Some("cancelled with Ctrl-C in exai call".into()),
                ))
                .await;
            // The shim relays the cancel before it goes when its stdin closes.
            let _ = client.cancel().await;
            return Err(CallError::Cancelled { call_id });
        }
    };
    let result = match answered {
        Ok(ServerResult::CallToolResult(result)) => result,
        Ok(other) => return Err(CallError::Mcp(format!("unexpected answer {other:?}"))),
        Err(error) => return Err(CallError::Mcp(error.to_string())),
    };
    let _ = client.cancel().await;
    Ok(result)
}

/// `value` as the tool's schema wants argument `name`: text as it is for a string, else JSON
/// (text that is not JSON stays text, and the tool says what it wanted).
fn typed(tool: &Tool, name: &str, value: &str) -> Value {
    let wants_text = tool
        .input_schema
        .get("properties")
        .and_then(|p| p.get(name))
        .and_then(|p| p.get("type"))
        .is_none_or(|t| t == "string");
    if wants_text {
        return Value::String(value.to_string());
    }
    serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()))
}

/// Every text block of a result, one after the other.
fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The last lines the shim wrote, to explain why it could not connect.
fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    match lines.len() {
        0 => String::new(),
        n => format!("\n{}", lines[n.saturating_sub(5)..].join("\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_follow_the_schema() {
        let schema: JsonObject = serde_json::from_value(serde_json::json!({
            "type": "object",
            "properties": {
                "prompt": {"type": "string"},
                "temperature": {"type": "number"},
                "files": {"type": "array"}
            }
        }))
        .unwrap();
        let tool = Tool::new("chat", "", Arc::new(schema));
        assert_eq!(typed(&tool, "prompt", "42"), Value::String("42".into()));
        assert_eq!(typed(&tool, "temperature", "0.5"), serde_json::json!(0.5));
        assert_eq!(
            typed(&tool, "files", r#"["a.rs"]"#),
            serde_json::json!(["a.rs"])
        );
        assert_eq!(typed(&tool, "files", "a.rs"), Value::String("a.rs".into()));
        assert_eq!(typed(&tool, "unknown", "1"), Value::String("1".into()));
    }
}
