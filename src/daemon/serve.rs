//! The daemon's HTTP server loop: the router served by hyper on a listener (TCP, or the home's
//! socket) as `axum::serve` serves it, with what that does not let us set — a bound on reading a
//! request's head, so a client that sends half a request and waits holds no connection for ever.

use std::time::Duration;

use axum::Router;
use axum::serve::Listener;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;

/// How long a client may take to send a request's head, from when its connection is ready for
/// one. hyper counts the wait for the next request on a kept-alive connection too, so this also
/// closes connections idle that long: HTTP clients keep theirs idle for a few seconds (Node,
/// httpx) up to 90 (reqwest), and make a new one when the server has closed it.
pub const HEAD_READ_LIMIT: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` until `stop`; then finishes what each connection has in flight
/// (hyper's graceful shutdown) and returns once every connection has ended.
pub async fn serve<L: Listener>(mut listener: L, router: Router, stop: CancellationToken) {
    // Each connection holds a receiver; the sender sees them all gone once every one has ended.
    let (all_ended, open) = tokio::sync::watch::channel(());
    loop {
        let (io, _) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let (stop, open) = (stop.clone(), open.clone());
        crate::spawn::in_span(tracing::Span::none(), async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_READ_LIMIT);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            let mut connection = std::pin::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = served {
                tracing::debug!(%error, "an HTTP connection ended");
            }
            drop(open);
        });
    }
    drop(open);
    drop(listener);
    all_ended.closed().await;
}
