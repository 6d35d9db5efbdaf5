//! The daemon's HTTP server loop: the router served by hyper on a listener (TCP, or the home's
//! socket) as `axum::serve` serves it, with what that does not let us set — bounds on reading a
//! request's head and its body, so a client that sends half a request and waits holds no
//! connection for ever.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::serve::Listener;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower_service::Service;

/// How long a client may take to send a request's head, from when its connection is ready for
/// one. hyper counts the wait for the next request on a kept-alive connection too, so this also
/// closes connections idle that long: HTTP clients keep theirs idle for a few seconds (Node,
/// httpx) up to 90 (reqwest), and make a new one when the server has closed it.
pub const HEAD_READ_LIMIT: Duration = Duration::from_secs(30);

/// How long a client may take to send a request's body once its head has arrived: 16 MiB (the
/// largest message) at 280 KB/s. A load balancer in front buffers bodies and sends them whole.
pub const BODY_READ_LIMIT: Duration = Duration::from_secs(60);

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
        let router = router.clone();
        let service = service_fn(move |request: axum::http::Request<Incoming>| {
            router.clone().call(request.map(BoundedBody::new))
        });
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

/// A request's body that must have arrived by a deadline ([`BODY_READ_LIMIT`] after its head):
/// past it, reading it fails, and hyper closes the connection of a request not read whole.
struct BoundedBody {
    body: Incoming,
    deadline: Instant,
    /// The timer, made only when the body is not all there at once (rarely: a message's body
    /// comes with its head), so a request whose body is at hand costs no timer.
    timer: Option<Pin<Box<Sleep>>>,
}

impl BoundedBody {
    fn new(body: Incoming) -> Self {
        Self {
            body,
            deadline: Instant::now() + BODY_READ_LIMIT,
            timer: None,
        }
    }
}

/// Why reading a request's body failed.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error(transparent)]
    Read(#[from] hyper::Error),
    #[error("the request's body did not arrive within {} s of its head", BODY_READ_LIMIT.as_secs())]
    TooSlow,
}

impl Body for BoundedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(BodyError::from)));
        }
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                tracing::warn!(
                    limit_s = BODY_READ_LIMIT.as_secs(),
                    "a request's body did not arrive in time; its connection is closed"
                );
                Poll::Ready(Some(Err(BodyError::TooSlow)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
