//! `exai stdio --no-daemon`: the same MCP service, in this process, over stdin/stdout.

use std::sync::Arc;

use rmcp::ServiceExt;
use tokio_util::codec::{FramedWrite, LinesCodec};

use crate::app::App;
use crate::calls::TransportKind;
use crate::config::Config;
use crate::health::Health;
use crate::legacy_tasks::LegacyTasks;
use crate::legacy_tasks::adapter::Adapter;
use crate::service::{ExaiService, Session};
use crate::store::StoreError;
use crate::transport::{FrameTransport, line_frames};
use crate::users::Caller;

/// Serves one session on stdin/stdout until stdin closes; calls still running are interrupted.
pub async fn run(config: Config) -> Result<(), StoreError> {
    let limit = config.max_message_bytes;
    let app =
        crate::spawn::blocking(move || App::open(config, Health::new("stdio --no-daemon", None)))
            .await
            .map_err(|_| StoreError::WriterGone)??;
    app.run_replica();
    app.discover_models();
    let session = Session::new(TransportKind::Stdio, Some(Caller::Owner), &app);
    let source = line_frames(crate::stdio::input(), limit);
    let sink = FramedWrite::new(crate::stdio::output(), LinesCodec::new());
    let transport = FrameTransport::spawn(
        source,
        sink,
        session.clone(),
        app.calls.clone(),
        limit,
        Some(Arc::new(Adapter::new(app.tools.task_capable()))),
    );
    let service = ExaiService::new(app.clone(), session)
        .with_custom_requests(LegacyTasks::requests())
        .into_server();
    match service
        .serve_with_ct(transport, app.shutdown.child_token())
        .await
    {
        Ok(running) => {
            let _ = running.waiting().await;
        }
        Err(error) => tracing::warn!(%error, "stdio session ended before initialize"),
    }
    // No daemon keeps the calls alive once we exit: record them interrupted.
    app.calls.drain(std::time::Duration::ZERO).await;
    app.calls.settle_records().await;
    app.leave().await;
    Ok(())
}
