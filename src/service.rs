//! The MCP service: one per session, the same behind WebSocket, HTTP and stdio.
//!
//! It turns each `tools/call` into a call (record first, then a supervised task),
//! relays the call's progress to the client and hands back its result.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams,
    CancelledNotificationParam, ClientNotification, ClientRequest, ContentBlock, CreateTaskResult,
    CustomRequest, CustomResult, ErrorCode, GetPromptRequestParams, GetPromptResponse,
    GetTaskParams, GetTaskResult, Implementation, InitializeRequestParams, InitializeResult,
    ListPromptsResult, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
    ProgressToken, ProtocolVersion, ServerCapabilities, ServerConfig, ServerResult,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData as McpError, Peer, RoleServer, ServerHandler};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::app::App;
use crate::calls::view::CallView;
use crate::calls::{
    CallOrigin, Calls, CancelReason, FailureKind, LiveCall, Outcome, TransportKind,
};
use crate::health::{SessionGuard, SessionSettings};
use crate::settings::ClientEnv;
use crate::store::Delivery;
use crate::tools::ToolContext;
use crate::users::Caller;

pub use crate::calls::CALL_ID_META;

/// A running call's record is refreshed at least every this many heartbeats, stage or not.
const BEATS_PER_RECORD: u32 = 6;
/// Stage-change progress is sent at most this often (heartbeats keep their own period).
const STAGE_COALESCE: std::time::Duration = std::time::Duration::from_millis(250);

/// How long a 2026-07-28 client may keep the tool and prompt lists (SEP-2549): they change
/// only when the daemon restarts (`DISABLED_TOOLS`, a new version).
const LIST_FRESH_MS: u64 = 10 * 60 * 1000;

/// Longest wait for one progress notification to be handed to the transport.
const PROGRESS_SEND_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// How long, and how many, cancellations for requests not tracked yet are kept.
const EARLY_CANCEL_KEPT: Duration = Duration::from_secs(10);
const MOST_EARLY_CANCELS: usize = 64;

/// One MCP session (a WebSocket connection, an HTTP session, a stdio process).
pub struct Session {
    pub id: String,
    pub transport: TransportKind,
    /// Who the session belongs to: the identity its connection was admitted as, or (Streamable
    /// HTTP, where every POST carries its own token) that of its first request.
    caller: std::sync::OnceLock<Caller>,
    client: Mutex<Option<Implementation>>,
    /// The exai version of the shim relaying the session (from its connection), if one does.
    shim_version: std::sync::OnceLock<String>,
    /// JSON-RPC request id → call id, until the response is written.
    pending: Mutex<HashMap<String, String>>,
    /// Cancellations that arrived for a request before its call was tracked (rmcp hands them
    /// over on a task of their own, which may run first): request id, reason, when. The call is
    /// cancelled as it is tracked. A few, for a few seconds.
    cancelled_early: Mutex<std::collections::VecDeque<(String, Option<String>, Instant)>>,
    /// The settings its client's environment sets (a shim on the local socket): its calls run
    /// with them over the daemon's.
    client_env: std::sync::OnceLock<ClientEnv>,
    counted: SessionGuard,
    /// Counted in `/metrics` by transport until the session ends.
    _metered: crate::metrics::SessionCount,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.counted.health().note_session_settings(&self.id, None);
    }
}

impl Session {
    pub fn new(transport: TransportKind, caller: Option<Caller>, app: &App) -> Arc<Self> {
        Arc::new(Self {
            id: uuid::Uuid::now_v7().to_string(),
            transport,
            caller: caller.map(Into::into).unwrap_or_default(),
            client: Mutex::new(None),
            shim_version: std::sync::OnceLock::new(),
            pending: Mutex::new(HashMap::new()),
            cancelled_early: Mutex::default(),
            client_env: std::sync::OnceLock::new(),
            counted: app.health.session_opened(),
            _metered: crate::metrics::session_opened(transport.as_str()),
        })
    }

    /// Notes the exai version of the shim that relays this session (said once, at connection).
    pub fn set_shim_version(&self, version: String) {
        let _ = self.shim_version.set(version);
    }

    /// Its calls run with `env` over the daemon's settings (set once, when it connects).
    pub fn run_with_client_env(&self, env: ClientEnv) {
        let _ = self.client_env.set(env);
    }

    /// Whether the transport reports delivery itself (our framed transports do; rmcp's HTTP does not).
    fn transport_reports_delivery(&self) -> bool {
        self.transport.reports_delivery()
    }

    /// The call a response to `request_id` carries, if any (removes it).
    pub fn take_call_for_response(&self, request_id: &str) -> Option<String> {
        let call = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(request_id);
        if call.is_some() {
            self.counted.health().answer_settled();
        }
        call
    }

    fn call_for_request(&self, request_id: &str) -> Option<String> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(request_id)
            .cloned()
    }

    /// Links `request_id` to its call; `Some(reason)` when the request was cancelled already.
    fn track(&self, request_id: String, call_id: String) -> Option<Option<String>> {
        self.counted.health().answer_pending();
        let mut early = self.early_cancels();
        let cancelled = (early.iter().position(|(id, _, _)| *id == request_id))
            .and_then(|at| early.remove(at))
            .map(|(_, reason, _)| reason);
        drop(early);
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(request_id, call_id);
        cancelled
    }

    /// Keeps a cancellation for a request not tracked yet (see `cancelled_early`).
    fn cancelled_before_tracked(&self, request_id: String, reason: Option<String>) {
        let mut early = self.early_cancels();
        early.retain(|(_, _, at)| at.elapsed() < EARLY_CANCEL_KEPT);
        if early.len() == MOST_EARLY_CANCELS {
            early.pop_front();
        }
        early.push_back((request_id, reason, Instant::now()));
    }

    fn early_cancels(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(String, Option<String>, Instant)>>
    {
        self.cancelled_early
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn client(&self) -> Option<Implementation> {
        self.client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// How a client waits for a call's answer.
struct Waiting {
    /// Closing the request's stream cancels the call.
    disconnect_cancels: bool,
    /// When to answer with a handle rather than lose the client.
    answer_by: Option<std::time::Instant>,
    /// The progress heartbeat of the call's settings.
    heartbeat: Duration,
}

/// How waiting for a call ended.
enum Waited {
    Done(Arc<Outcome>),
    /// The client stopped waiting (cancelled, or its stream closed).
    Gone,
    /// The client's patience is nearly spent: answer with a call handle.
    AnswerNow,
}

/// Heartbeats the whole process sends in a second at most, before they stretch out.
const HEARTBEATS_PER_SECOND: f64 = 300.0;
/// The longest a heartbeat stretches to: clients that reset their timeout on progress (60 s is
/// common) still hear one well within it.
const LONGEST_HEARTBEAT: Duration = Duration::from_secs(30);

/// The time to the next heartbeat of a call: `EXAI_PROGRESS_INTERVAL_S`, stretched when so many
/// calls are in flight that their heartbeats alone would crowd out the requests that must be
/// answered at once (10,000 calls at 5 s would be 2,000 notifications a second).
fn heartbeat_period(configured: Duration, in_flight: usize) -> Duration {
    let spread = Duration::from_secs_f64(in_flight as f64 / HEARTBEATS_PER_SECOND);
    configured.max(spread.min(LONGEST_HEARTBEAT))
}

/// When a call must answer so that a client with `patience` still hears it: a safety
/// margin (a fifth of the patience, 1–10 s) before the client gives up. `None` when the
/// call's own deadline comes first.
pub fn answer_deadline(
    received: std::time::Instant,
    patience: std::time::Duration,
    deadline: std::time::Instant,
) -> Option<std::time::Instant> {
    let margin = (patience / 5).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(10),
    );
    let by = received + patience.saturating_sub(margin);
    (by < deadline).then_some(by)
}

/// The answer a client gets when a call outlives its patience: the call goes on.
fn background_answer(call: &LiveCall) -> CallToolResult {
    let snapshot = call.progress.snapshot();
    let elapsed = call.elapsed();
    let text = format!(
        "{tool} is still running in the background (call {id}, {secs} s so far: {progress}).\n\
         Your MCP client would stop waiting soon, so exai answers now rather than let the result be lost. \
         The call goes on; get its result with the call_result tool: \
         call_result(call_id=\"{id}\", wait_s=30) — repeat until it is done. \
         Stop it with call_cancel(call_id=\"{id}\").",
        tool = call.tool,
        id = call.id,
        secs = elapsed.as_secs(),
        progress = snapshot.message(),
    );
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    let mut meta = rmcp::model::MetaObject::default();
    meta.insert(CALL_ID_META.into(), Value::String(call.id.clone()));
    result.meta = Some(meta);
    result.structured_content = Some(crate::calls::view::still_running(
        &call.id,
        elapsed,
        &snapshot.message(),
    ));
    result
}

/// Work for a call that repeats one already running: wait for that one's answer.
pub(crate) fn attach_to(twin: Arc<LiveCall>) -> crate::tools::ToolFuture {
    Box::pin(async move {
        let outcome = twin.finished().await;
        let mut result = outcome.result.clone();
        result.content.push(ContentBlock::text(format!(
            "(exai: an identical call, {}, was already running; this request was attached to it \
             instead of asking the model again.)",
            twin.id
        )));
        Ok(result)
    })
}

/// What the WebSocket and stdio transports serve: a session's handlers, with tool calls run
/// outside rmcp's dispatch.
///
/// rmcp runs each request in a task with room for its largest request handler, and its own
/// (subscriptions) make that about 5 KB. A tool call may wait minutes on a provider, and
/// thousands may wait at once, so a call is not run there: rmcp's dispatch, with its protocol
/// checks, runs boxed and hands the call back (`CallHandoff`) as soon as it reaches `call_tool`;
/// the request's task then holds only the call's own state. (rmcp's Streamable HTTP server
/// takes only a `ServerHandler`, so `/mcp` serves `ExaiService` as it is.)
#[derive(Clone)]
pub struct ExaiServer(ExaiService);

impl rmcp::Service<RoleServer> for ExaiServer {
    fn handle_request(
        &self,
        request: ClientRequest,
        mut context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<ServerResult, McpError>> + rmcp::service::MaybeSendFuture + '_
    {
        let handoff = matches!(request, ClientRequest::CallToolRequest(_)).then(|| {
            let handoff = CallHandoff::default();
            context.extensions.insert(handoff.clone());
            handoff
        });
        let dispatch = Box::pin(rmcp::Service::handle_request(&self.0, request, context));
        async move {
            // No answer of rmcp's is kept across the call's wait (it would be held in this task).
            let (request, context, declared_tasks) =
                match (dispatch.await, handoff.and_then(|h| h.take())) {
                    (_, Some((request, context))) => {
                        // rmcp's own check after `call_tool`: a task only for a client that
                        // declared tasks. (Read here, not after the match: a context borrowed
                        // in this scope would be kept in the task beside run_call's.)
                        let declared = context
                            .client_capabilities()
                            .is_some_and(|c| c.supports_tasks());
                        (request, context, declared)
                    }
                    (answer, None) => return answer,
                };
            match self.0.run_call(request, context).await? {
                CallToolResponse::Task(_) if !declared_tasks => {
                    Err(McpError::missing_required_client_capability(
                        rmcp::model::ClientCapabilities::builder()
                            .enable_tasks()
                            .build(),
                    ))
                }
                response => Ok(ServerResult::from(response)),
            }
        }
    }

    fn handle_notification(
        &self,
        notification: ClientNotification,
        context: NotificationContext<RoleServer>,
    ) -> impl Future<Output = Result<(), McpError>> + rmcp::service::MaybeSendFuture + '_ {
        rmcp::Service::handle_notification(&self.0, notification, context)
    }

    fn get_info(&self) -> ServerConfig {
        rmcp::Service::get_info(&self.0)
    }

    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        rmcp::Service::supported_protocol_versions(&self.0)
    }
}

/// A `tools/call` as `call_tool` received it.
type HandedCall = (Box<CallToolRequestParams>, RequestContext<RoleServer>);

/// Where `call_tool`, reached through `ExaiServer`, leaves the call for it to run.
#[derive(Clone, Default)]
struct CallHandoff(Arc<Mutex<Option<HandedCall>>>);

impl CallHandoff {
    fn hand_back(&self, request: CallToolRequestParams, context: RequestContext<RoleServer>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((Box::new(request), context));
    }

    fn take(&self) -> Option<HandedCall> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The MCP server handler of one session.
#[derive(Clone)]
pub struct ExaiService {
    app: Arc<App>,
    session: Arc<Session>,
    /// Requests beyond MCP's own, answered by a transport's decorator (2025-11-25 tasks).
    custom: Option<Arc<dyn CustomRequests>>,
}

/// Requests outside the MCP methods rmcp knows, which a decorator at the transport edge renamed
/// into the session (the 2025-11-25 tasks adapter): it answers them with the narrow
/// `RequestScope`, not with the service.
pub trait CustomRequests: Send + Sync + 'static {
    /// The answer to `method`; `None` if it is not one of this decorator's.
    fn answer<'a>(
        &'a self,
        method: &'a str,
        params: Option<Value>,
        scope: RequestScope<'a>,
    ) -> Option<BoxFuture<'a, Result<Value, McpError>>>;
}

/// What a custom request may do in its session: look calls up, and open one as a task.
pub struct RequestScope<'a> {
    service: &'a ExaiService,
    context: RequestContext<RoleServer>,
}

impl RequestScope<'_> {
    pub fn calls(&self) -> &Arc<Calls> {
        &self.service.app.calls
    }

    /// How long a finished call's result is kept (`EXAI_RESULT_TTL_H`).
    pub fn result_ttl(&self) -> std::time::Duration {
        self.service.app.settings().config.result_ttl
    }

    /// The client's name, as it introduced itself.
    pub fn client_name(&self) -> Option<String> {
        self.service.client(&self.context).map(|c| c.name)
    }

    /// Who asked: what they may see of the calls.
    pub fn caller(&self) -> Result<Caller, McpError> {
        self.service.caller(&self.context)
    }

    /// Cancelled when the client cancels this request.
    pub fn cancelled(&self) -> &CancellationToken {
        &self.context.ct
    }

    /// Opens a `tools/call` as a task: recorded and started like any call (refused, and
    /// recorded, for a tool that does not run as a task), its answer kept for later.
    pub async fn open_task(
        &self,
        request: CallToolRequestParams,
    ) -> Result<Arc<LiveCall>, McpError> {
        let opened = self.service.open_call(request, &self.context, true).await?;
        self.service
            .keep_for_later(&opened.call, &opened.request_id, Delivery::TaskCreated)
            .await;
        Ok(opened.call)
    }
}

/// A call `open_call` recorded and started.
struct Opened {
    pub call: Arc<LiveCall>,
    pub tool: Arc<dyn crate::tools::ExaiTool>,
    /// The JSON-RPC request that asked for it.
    pub request_id: String,
    /// How long the client waits for an answer.
    pub patience: std::time::Duration,
    /// The heartbeat of its progress notifications.
    pub progress_interval: std::time::Duration,
}

impl ExaiService {
    pub fn new(app: Arc<App>, session: Arc<Session>) -> Self {
        Self {
            app,
            session,
            custom: None,
        }
    }

    /// The server the WebSocket and stdio transports serve (see `ExaiServer`).
    pub fn into_server(self) -> ExaiServer {
        ExaiServer(self)
    }

    /// The service answering also `custom`'s requests (which a transport's decorator sends in).
    pub fn with_custom_requests(mut self, custom: Arc<dyn CustomRequests>) -> Self {
        self.custom = Some(custom);
        self
    }

    fn client(&self, context: &RequestContext<RoleServer>) -> Option<Implementation> {
        context.client_info().or_else(|| self.session.client())
    }

    /// Who made the request: the identity the daemon's token check put on the HTTP request
    /// (rmcp hands each request's parts over), else the one the session was admitted as. A
    /// session stays its first identity's: a request with another token is refused.
    fn caller(&self, context: &RequestContext<RoleServer>) -> Result<Caller, McpError> {
        self.caller_of(&context.extensions)
    }

    /// [`Self::caller`] of a request or notification, by what rmcp put in its extensions.
    fn caller_of(&self, extensions: &rmcp::model::Extensions) -> Result<Caller, McpError> {
        let of_request = extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Caller>());
        let Some(of_request) = of_request else {
            return self
                .session
                .caller
                .get()
                .cloned()
                .ok_or_else(|| McpError::internal_error("the request carries no identity", None));
        };
        let owner = self.session.caller.get_or_init(|| of_request.clone());
        if owner != of_request {
            tracing::warn!(session = %self.session.id, "a request with another token than its session's refused");
            return Err(McpError::invalid_request(
                "this MCP session belongs to another token; start a new session",
                None,
            ));
        }
        Ok(of_request.clone())
    }

    /// The snapshot a call of this session runs on: the daemon's, or the session's own when its
    /// client sets settings of its own (noted for `status` while they differ).
    async fn settings_for_call(
        &self,
        context: &RequestContext<RoleServer>,
    ) -> Arc<crate::settings::Settings> {
        let Some(env) = self.session.client_env.get() else {
            return self.app.settings();
        };
        let settings = self.app.settings.for_session(Some(env)).await;
        let note = (!settings.differs.is_empty()).then(|| SessionSettings {
            client: self.client(context).map(|c| c.name),
            variables: settings.differs.clone(),
            applied: true,
        });
        self.app
            .health
            .note_session_settings(&self.session.id, note);
        settings
    }

    fn origin(&self, context: &RequestContext<RoleServer>) -> Result<CallOrigin, McpError> {
        let client = self.client(context);
        Ok(CallOrigin {
            session_id: self.session.id.clone(),
            client_name: client.as_ref().map(|c| c.name.clone()),
            client_version: client.as_ref().map(|c| c.version.clone()),
            transport: self.session.transport,
            caller: self.caller(context)?,
            shim_version: self.session.shim_version.get().cloned(),
        })
    }

    /// Records the call of a `tools/call` and starts it in its own task.
    ///
    /// An unknown tool is refused (and recorded); so is a tool that cannot run as a task
    /// when `as_task` (a 2025-11-25 `tools/call` with `params.task`).
    async fn open_call(
        &self,
        request: CallToolRequestParams,
        context: &RequestContext<RoleServer>,
        as_task: bool,
    ) -> Result<Opened, McpError> {
        let proposed_id = context
            .meta
            .get(CALL_ID_META)
            .and_then(Value::as_str)
            .map(str::to_string);
        let arguments = request.arguments.unwrap_or_default();
        let origin = self.origin(context)?;
        let found = match self.app.tools.get(&request.name) {
            None => Err((
                ErrorCode::INVALID_PARAMS,
                FailureKind::UnknownTool,
                format!(
                    "unknown tool {:?}; available: {}",
                    request.name,
                    self.app.tools.names().join(", ")
                ),
            )),
            // The revision's answer to a task for a tool whose taskSupport is "forbidden".
            Some(tool) if as_task && !tool.may_run_long() => Err((
                ErrorCode::METHOD_NOT_FOUND,
                FailureKind::TaskNotSupported,
                format!(
                    "tool {:?} does not run as a task (its execution.taskSupport is \"forbidden\"); \
                     call it without params.task",
                    request.name
                ),
            )),
            Some(tool) => Ok(tool),
        };
        // A refused call is recorded all the same, and its client told which record it is.
        // Boxed: recording a refusal ends a call, a future of kilobytes that every opened call
        // would otherwise carry room for (and copy when it is boxed itself).
        let (proposed, name, given) = (proposed_id.as_deref(), &request.name, &arguments);
        let refuse = |origin, code, kind, message: String| async move {
            let calls = &self.app.calls;
            let id = Box::pin(calls.reject(proposed, name, given, origin, kind, &message)).await;
            McpError::new(code, format!("{message} (call {id})"), None)
        };
        let tool = match found {
            Ok(tool) => tool,
            Err((code, kind, message)) => return Err(refuse(origin, code, kind, message).await),
        };
        // The settings the call runs on, to its end: a reload reaches the next call.
        let settings = self.settings_for_call(context).await;
        let budget = settings.config.timeout_for(&request.name);
        // One person may not take every slot of a shared exai (the daemon's setting).
        let most_per_person = self.app.settings().config.user_max_calls;
        let opened = self
            .app
            .calls
            .open(
                proposed_id.as_deref(),
                &request.name,
                &arguments,
                origin.clone(),
                budget,
                Some(most_per_person),
            )
            .await;
        let call = match opened {
            Ok(call) => call,
            Err(too_many) => {
                let (code, kind) = (ErrorCode::INVALID_REQUEST, FailureKind::TooManyCalls);
                return Err(refuse(origin, code, kind, too_many.to_string()).await);
            }
        };
        let request_id = context.id.to_string();
        if let Some(reason) = self.session.track(request_id.clone(), call.id.clone()) {
            tracing::info!(call_id = %call.id, "the client cancelled the call before it was tracked");
            call.cancel(CancelReason::Client(reason));
        }
        let patience = self
            .app
            .client_patience
            .for_client(&settings.config, call.origin.client_name.as_deref())
            .await;
        let tool_answer_by = answer_deadline(call.received_at, patience, call.deadline);
        let tool_context = ToolContext {
            call: call.clone(),
            calls: self.app.calls.clone(),
            providers: settings.providers.clone(),
            health: self.app.health.clone(),
            config: settings.config.clone(),
            answer_by: tool_answer_by,
            dry_run: None,
        };
        let work = match self.app.calls.running_twin(&call) {
            Some(twin) => {
                tracing::info!(call_id = %call.id, twin = %twin.id, "identical call already running: attaching to it");
                attach_to(twin)
            }
            None => crate::tools::dry_run::run(tool.clone(), arguments, tool_context),
        };
        self.app.calls.start(call.clone(), work);
        Ok(Opened {
            call,
            tool,
            request_id,
            patience,
            progress_interval: settings.config.progress_interval,
        })
    }

    /// This request gets a stand-in (a handle, a task); the call's result waits to be fetched.
    /// A task is committed before it is announced (another replica may be asked for it next);
    /// a handle goes out at once, its note queued: the client's patience is all but spent by
    /// then, and a slow store must not make it miss the handle.
    async fn keep_for_later(&self, call: &LiveCall, request_id: &str, delivery: Delivery) {
        call.hand_off();
        self.session.take_call_for_response(request_id);
        if delivery == Delivery::HandleSent {
            let (calls, id) = (self.app.calls.clone(), call.id.clone());
            crate::spawn::in_current_span(async move {
                let _ = calls.note_delivery(&id, delivery).await;
            });
        } else {
            let _ = self.app.calls.set_delivery(&call.id, delivery).await;
        }
    }

    /// `tasks/cancel`: the call is told to stop here, or through the replica that runs it.
    async fn cancel_task_as_asked(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        match self.lookup(&request.task_id, &context).await? {
            CallView::Running(call) => {
                tracing::info!(call_id = %call.id, "tasks/cancel");
                call.cancel(CancelReason::Client(Some("tasks/cancel".into())));
                Ok(())
            }
            CallView::HeldElsewhere(row) => {
                let reason = "tasks/cancel on another replica".to_string();
                match Box::pin(self.app.calls.request_cancel(&row, reason)).await {
                    Ok(Some(replica)) => {
                        tracing::info!(call_id = %row.id, %replica, "tasks/cancel sent to the replica that runs it");
                        Ok(())
                    }
                    // It ended meanwhile: nothing to cancel.
                    Ok(None) => Ok(()),
                    Err(error) => Err(McpError::internal_error(error.to_string(), None)),
                }
            }
            CallView::Expired => Err(crate::tasks::expired(&request.task_id)),
            // Already ended: the ack is all there is to say.
            _ => Ok(()),
        }
    }

    /// Where a task's call stands, as the request's caller may see it.
    async fn lookup(
        &self,
        id: &str,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallView, McpError> {
        self.app
            .calls
            .lookup(id, &self.caller(context)?)
            .await
            .map_err(|e| McpError::internal_error(e.to_string(), None))
    }

    /// Waits for the call's end, sending progress meanwhile; `None` if the client stopped waiting.
    async fn await_outcome(
        &self,
        call: &Arc<LiveCall>,
        token: Option<ProgressToken>,
        peer: &Peer<RoleServer>,
        stop_waiting: CancellationToken,
        waiting: Waiting,
    ) -> Waited {
        let Waiting {
            disconnect_cancels,
            answer_by,
            heartbeat: configured,
        } = waiting;
        let mut next_beat = tokio::time::Instant::now()
            + heartbeat_period(configured, self.app.calls.in_flight_count());
        let next_stage = call.progress.next_stage();
        tokio::pin!(next_stage);
        next_stage.as_mut().enable();
        let finished = call.finished();
        tokio::pin!(finished);
        // Boxed: a notification's send is large, and awaited only now and then.
        let send = |message: String| {
            let count = call.progress.record_sent(&message);
            let token = token.clone();
            Box::pin(async move {
                if let Some(token) = token {
                    let param =
                        ProgressNotificationParam::new(token, count as f64).with_message(message);
                    // Bounded: once the session's loop has stopped, a notification would wait forever.
                    match tokio::time::timeout(PROGRESS_SEND_LIMIT, peer.notify_progress(param))
                        .await
                    {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => tracing::debug!(%error, "progress notification not sent"),
                        Err(_) => {
                            tracing::debug!("progress notification not sent: session stopped")
                        }
                    }
                }
            })
        };
        if token.is_some() {
            send(format!("{} · started", call.tool)).await;
        }
        let mut last_stage = 0;
        let (mut last_recorded_stage, mut beats_unrecorded) = (u64::MAX, 0);
        let mut last_sent = tokio::time::Instant::now();
        let mut stage_pending = false;
        let answer_by = answer_by.map(tokio::time::Instant::from_std);
        // One timer for the three clocks (the answer's deadline, a coalesced stage, the
        // heartbeat), set to whichever comes first: each would hold a timer of its own in
        // every call in flight.
        let timer = tokio::time::sleep_until(next_beat);
        tokio::pin!(timer);
        loop {
            let stage_due = stage_pending.then(|| last_sent + STAGE_COALESCE);
            let wake = [answer_by, stage_due]
                .into_iter()
                .flatten()
                .fold(next_beat, std::cmp::min);
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            tokio::select! {
                biased;
                outcome = &mut finished => return Waited::Done(outcome),
                _ = stop_waiting.cancelled() => {
                    if disconnect_cancels {
                        tracing::info!("the client closed the request's stream: cancelling the call");
                        call.cancel(CancelReason::Client(Some("the client closed the request's stream".into())));
                    } else {
                        tracing::info!("client stopped waiting; the call goes on and keeps its result");
                    }
                    call.detach();
                    return Waited::Gone;
                }
                _ = &mut next_stage, if token.is_some() && !stage_pending => {
                    // Enabled again before the version is read: no change is missed.
                    next_stage.set(call.progress.next_stage());
                    next_stage.as_mut().enable();
                    if call.progress.stage_version() != last_stage {
                        stage_pending = true;
                    }
                }
                _ = &mut timer => {
                    let now = tokio::time::Instant::now();
                    if answer_by.is_some_and(|at| at <= now) {
                        return Waited::AnswerNow;
                    }
                    // Stage changes are coalesced: fast calls do not pay a notification per stage.
                    if stage_due.is_some_and(|at| at <= now) {
                        stage_pending = false;
                        let snapshot = call.progress.snapshot();
                        last_stage = snapshot.stage_version;
                        last_sent = tokio::time::Instant::now();
                        send(snapshot.message()).await;
                    }
                    if next_beat <= now {
                        next_beat += heartbeat_period(configured, self.app.calls.in_flight_count());
                        let snapshot = call.progress.snapshot();
                        let message = snapshot.message();
                        if token.is_some() {
                            last_sent = tokio::time::Instant::now();
                            send(message.clone()).await;
                        }
                        // The record shows a running call's stage: written when the stage moved, and
                        // now and then for its elapsed time and tokens — not every beat of every call
                        // (10,000 calls waiting on a provider would be 2,000 writes a second).
                        beats_unrecorded += 1;
                        if snapshot.stage_version != last_recorded_stage
                            || beats_unrecorded >= BEATS_PER_RECORD
                        {
                            (last_recorded_stage, beats_unrecorded) = (snapshot.stage_version, 0);
                            let (count, _) = call.progress.sent();
                            self.app.calls.store().note_progress(&call.id, count, &message, snapshot.model.as_deref());
                        }
                    }
                }
            }
        }
    }

    /// A `tools/call`: opens the call, then waits for its outcome (or hands back a task or a
    /// call handle) within the client's patience.
    ///
    /// The request comes boxed and the context is used where it was captured: a call holds
    /// this future for as long as it waits, and an argument an `async fn` takes by value keeps
    /// its room there (often twice: as received and as moved into the body).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would keep room for its arguments beside what its body moves them to"
    )]
    fn run_call(
        &self,
        request: Box<CallToolRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<CallToolResponse, McpError>> + Send + '_ {
        async move {
            let Opened {
                call,
                tool,
                request_id,
                patience,
                progress_interval,
            } = Box::pin(self.open_call(*request, &context, false)).await?;
            // Only long tools can outlast a client; the rest (call_result included) answer in time by design.
            let answer_by = answer_deadline(call.received_at, patience, call.deadline)
                .filter(|_| tool.may_run_long());
            let as_task = tool.may_run_long()
                && context
                    .client_capabilities()
                    .is_some_and(|c| c.supports_tasks());
            if as_task {
                // The client polls tasks/get; the result waits in the call.
                Box::pin(self.keep_for_later(&call, &request_id, Delivery::TaskCreated)).await;
                if let Err(error) =
                    Box::pin(self.app.calls.store().set_task(&call.id, "extension")).await
                {
                    tracing::warn!(call_id = %call.id, %error, "could not mark the call as a task");
                }
                tracing::info!(call_id = %call.id, "answered with a task");
                return Ok(CallToolResponse::Task(CreateTaskResult::new(
                    crate::tasks::working(
                        &call,
                        call.received_at_ms,
                        self.app.settings().config.result_ttl.as_millis() as u64,
                    ),
                )));
            }
            let token = context.meta.get_progress_token();
            // 2026-07-28 over HTTP: closing the request's stream is how a client cancels.
            let disconnect_cancels =
                self.session.transport == TransportKind::Http && is_2026(&context);
            let outcome = self
                .await_outcome(
                    &call,
                    token,
                    &context.peer,
                    context.ct.clone(),
                    Waiting {
                        disconnect_cancels,
                        answer_by,
                        heartbeat: progress_interval,
                    },
                )
                .instrument(call.span.clone())
                .await;
            match outcome {
                Waited::AnswerNow => {
                    Box::pin(self.keep_for_later(&call, &request_id, Delivery::HandleSent)).await;
                    tracing::info!(call_id = %call.id, patience_s = patience.as_secs(), "answering with a call handle; the call goes on");
                    Ok(CallToolResponse::Complete(background_answer(&call)))
                }
                Waited::Done(outcome) => {
                    // Over HTTP the call's end recorded the answer as handed to rmcp.
                    if !self.session.transport_reports_delivery() {
                        self.session.take_call_for_response(&request_id);
                    }
                    Ok(CallToolResponse::Complete(outcome.result.clone()))
                }
                // The client cancelled or left; rmcp drops whatever we answer now.
                Waited::Gone => {
                    // A call that ended as its client left was recorded as handed over (HTTP),
                    // which it now is not.
                    if call.outcome().is_some() && !self.session.transport_reports_delivery() {
                        let calls = &self.app.calls;
                        let _ = Box::pin(calls.note_delivery(&call.id, Delivery::ClientGone)).await;
                    }
                    // Keep the request → call link until the call ends: a `notifications/cancelled`
                    // for this request may still be on its way to `on_cancelled`.
                    let session = self.session.clone();
                    let running = call.clone();
                    crate::spawn::in_current_span(async move {
                        running.finished().await;
                        session.take_call_for_response(&request_id);
                    });
                    // rmcp drops this answer (the request is gone); a plain result keeps its log quiet.
                    Ok(CallToolResponse::Complete(CallToolResult::error(vec![
                        ContentBlock::text(format!(
                            "the client stopped waiting for call {}; it goes on: fetch it with call_result",
                            call.id
                        )),
                    ])))
                }
            }
        }
    }
}

impl ServerHandler for ExaiService {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .enable_tasks()
                .build(),
        )
            .with_server_info(Implementation::new("exai", crate::VERSION))
            .with_instructions(
                "exai gives you other models (GLM, Kimi, any OpenAI-compatible one) to consult. \
                 Long calls send progress; every call has an id you can look up with `exai calls show ID`.",
            )
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, McpError> {
        // An HTTP session belongs to the token that opened it.
        self.caller(&context)?;
        context.peer.set_peer_info(request.clone());
        tracing::info!(
            session = %self.session.id,
            transport = self.session.transport.as_str(),
            client = %request.client_info.name,
            client_version = %request.client_info.version,
            protocol = %request.protocol_version,
            "session initialized"
        );
        *self
            .session
            .client
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(request.client_info.clone());
        self.negotiate_initialize(&request)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let mut listed =
            ListToolsResult::with_all_items(self.app.tools.definitions().as_ref().clone());
        (listed.ttl_ms, listed.cache_scope) = list_cache_hints(&context);
        Ok(listed)
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        let mut listed =
            ListPromptsResult::with_all_items(crate::tools::slash::prompts(&self.app.tools));
        (listed.ttl_ms, listed.cache_scope) = list_cache_hints(&context);
        Ok(listed)
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        crate::tools::slash::get(&self.app.tools, &request.name, request.arguments.as_ref())
            .map(GetPromptResponse::from)
            .map_err(|error| McpError::invalid_params(error.to_string(), None))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        mut context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        match context.extensions.remove::<CallHandoff>() {
            Some(handoff) => {
                handoff.hand_back(request, context);
                // Never sent: `ExaiServer` answers with the call's own result.
                Ok(CallToolResponse::Complete(CallToolResult::success(
                    Vec::new(),
                )))
            }
            None => Box::pin(self.run_call(Box::new(request), context)).await,
        }
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        let ttl_ms = self.app.settings().config.result_ttl.as_millis() as u64;
        let view = self.lookup(&request.task_id, &context).await?;
        crate::tasks::detailed(&request.task_id, &view, ttl_ms).map(GetTaskResult::new)
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        // Boxed whole: every request's task has room for the largest handler, and this one
        // (a call's row held while another replica is asked) was it.
        Box::pin(self.cancel_task_as_asked(request, context)).await
    }

    async fn on_custom_request(
        &self,
        request: CustomRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, McpError> {
        let scope = RequestScope {
            service: self,
            context,
        };
        let CustomRequest { method, params, .. } = request;
        let answer = self
            .custom
            .as_ref()
            .and_then(|custom| custom.answer(&method, params, scope));
        match answer {
            Some(answer) => answer.await.map(CustomResult::new),
            None => Err(McpError::new(
                ErrorCode::METHOD_NOT_FOUND,
                method.clone(),
                None,
            )),
        }
    }

    async fn on_cancelled(
        &self,
        notification: CancelledNotificationParam,
        context: NotificationContext<RoleServer>,
    ) {
        let Some(request_id) = notification.request_id.as_ref().map(|r| r.to_string()) else {
            return;
        };
        // Over HTTP each message carries its own token: a cancel sent into another person's
        // session (its id known) cancels nothing.
        if self.caller_of(&context.extensions).is_err() {
            return;
        }
        let Some(call_id) = self.session.call_for_request(&request_id) else {
            // Its call may be opening still: it is cancelled as it is tracked.
            tracing::debug!(%request_id, "cancellation for no call in flight (yet)");
            (self.session).cancelled_before_tracked(request_id, notification.reason.clone());
            return;
        };
        if let Some(call) = self.app.calls.get(&call_id) {
            tracing::info!(call_id = %call_id, reason = notification.reason.as_deref().unwrap_or(""), "client cancelled the call");
            call.cancel(CancelReason::Client(notification.reason.clone()));
        }
    }
}

/// Whether the request comes from a client on the 2026-07-28 revision.
fn is_2026(context: &RequestContext<RoleServer>) -> bool {
    context.meta.protocol_version() == Some(ProtocolVersion::V_2026_07_28)
}

/// The caching hints of a list result: a 2026-07-28 client must be given them; older ones get
/// the shape they know. The lists are the same for every caller, but they come only to those
/// the daemon let in, so no cache shared between users may serve them.
fn list_cache_hints(context: &RequestContext<RoleServer>) -> (Option<u64>, Option<CacheScope>) {
    if is_2026(context) {
        (Some(LIST_FRESH_MS), Some(CacheScope::Private))
    } else {
        (None, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cancellation that overtakes its request (rmcp hands it over on a task of its own) is
    /// not lost: the call is cancelled as it is tracked. Another request's is not.
    #[tokio::test]
    async fn a_cancel_that_arrives_before_its_call_is_tracked_still_cancels_it() {
        let test = App::for_tests(&[]);
        let session = Session::new(TransportKind::Ws, Some(Caller::Owner), &test.app);
        session.cancelled_before_tracked("7".into(), Some("user pressed Esc".into()));
        assert_eq!(session.track("8".into(), "call-8".into()), None);
        assert_eq!(
            session.track("7".into(), "call-7".into()),
            Some(Some("user pressed Esc".into()))
        );
        assert_eq!(
            session.track("7".into(), "call-7b".into()),
            None,
            "used once"
        );
    }

    #[test]
    fn heartbeats_stretch_only_when_calls_in_flight_would_crowd_the_process() {
        let five = Duration::from_secs(5);
        // Up to 1,500 calls in flight, each beats every 5 s (300 a second in all).
        assert_eq!(heartbeat_period(five, 0), five);
        assert_eq!(heartbeat_period(five, 1_500), five);
        // Beyond, the process as a whole keeps to about 300 a second…
        assert_eq!(heartbeat_period(five, 3_000), Duration::from_secs(10));
        // …and a call still beats at least every 30 s.
        assert_eq!(heartbeat_period(five, 10_000), LONGEST_HEARTBEAT);
        // A slower configured heartbeat is kept as it is.
        assert_eq!(
            heartbeat_period(Duration::from_secs(60), 10_000),
            Duration::from_secs(60)
        );
    }

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, C, F: Future>(_f: impl Fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn a_tool_call_s_task_has_room_for_the_call_not_for_rmcp_s_largest_handler() {
        type Context = RequestContext<RoleServer>;
        let served = future_size::<&'static ExaiServer, ClientRequest, Context, _>(
            <ExaiServer as rmcp::Service<RoleServer>>::handle_request,
        );
        let dispatched = future_size::<&'static ExaiService, ClientRequest, Context, _>(
            <ExaiService as rmcp::Service<RoleServer>>::handle_request,
        );
        let call = future_size::<&'static ExaiService, Box<CallToolRequestParams>, Context, _>(
            ExaiService::run_call,
        );
        // What a waiting call's task holds beyond the call's own future: a few pointers and
        // the handoff, not rmcp's dispatch (about 5 KB in a debug build, 3 KB more than this).
        assert!(
            served <= call + 512,
            "the served future is {served} bytes, the call's {call}"
        );
        assert!(
            served + 1024 < dispatched,
            "the served future is {served} bytes, rmcp's dispatch {dispatched}"
        );
    }
}
