//! A framed MCP transport: one JSON-RPC message per frame (a WebSocket text frame or a stdio line).
//!
//! Unlike a plain pipe it answers malformed and oversized frames with JSON-RPC
//! errors and keeps the session going, and it knows which response carries which
//! call, so it can record whether the answer reached the client. A `WireAdapter` given by
//! the transport's owner (the 2025-11-25 tasks adapter) may rewrite messages both ways.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::{Sink, SinkExt, Stream, StreamExt};
use rmcp::RoleServer;
use rmcp::model::JsonRpcMessage;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Decoder, FramedRead, LinesCodec, LinesCodecError};

use crate::calls::Calls;
use crate::service::Session;
use crate::store::Delivery;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("message larger than the {limit}-byte limit")]
    TooLarge { limit: usize },
    /// The line was read whole but is not UTF-8 (JSON-RPC is text): answered, and reading goes on.
    #[error("message is not valid UTF-8")]
    NotUtf8,
    #[error("{0}")]
    Io(String),
}

/// A decorator of a session's messages on the wire, run by the transport on each one.
pub trait WireAdapter: Send + Sync {
    /// Whether the client message `text` may need adapting — a look at the text before any
    /// parsing, so that messages that need nothing are parsed once.
    fn may_adapt(&self, text: &str) -> bool;
    /// Adapts a message from the client, in place.
    fn inbound(&self, message: &mut Value);
    /// Whether some answer waits for a rewrite.
    fn watches_outbound(&self) -> bool;
    /// Adapts a message to the client, in place.
    fn outbound(&self, message: &mut Value);
}

/// Newline-delimited frames with a size limit that, unlike a bare `LinesCodec`, keeps
/// going after an oversized line: it reports the line as too large and reads on.
pub struct LineFrames {
    lines: LinesCodec,
    limit: usize,
}

impl LineFrames {
    pub fn new(limit: usize) -> Self {
        Self {
            lines: LinesCodec::new_with_max_length(limit),
            limit,
        }
    }
}

impl Decoder for LineFrames {
    type Item = Result<String, FrameError>;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        let decoded = self.lines.decode(buf);
        self.frame(decoded)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        let decoded = self.lines.decode_eof(buf);
        self.frame(decoded)
    }
}

impl LineFrames {
    /// Turns what the line codec said into a frame; only real I/O errors end the stream.
    fn frame(
        &self,
        decoded: Result<Option<String>, LinesCodecError>,
    ) -> Result<Option<Result<String, FrameError>>, std::io::Error> {
        match decoded {
            Ok(line) => Ok(line.map(Ok)),
            // The codec discards the rest of the long line by itself.
            Err(LinesCodecError::MaxLineLengthExceeded) => {
                Ok(Some(Err(FrameError::TooLarge { limit: self.limit })))
            }
            // The codec has already consumed the line; the next one is read as usual.
            Err(LinesCodecError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                Ok(Some(Err(FrameError::NotUtf8)))
            }
            Err(LinesCodecError::Io(e)) => Err(e),
        }
    }
}

/// Reads `input` as a stream of frames (`Err(Io)` ends it).
pub fn line_frames<R: tokio::io::AsyncRead + Send + Unpin + 'static>(
    input: R,
    limit: usize,
) -> impl Stream<Item = Result<String, FrameError>> + Send + Unpin + 'static {
    FramedRead::new(input, LineFrames::new(limit)).map(|frame| match frame {
        Ok(frame) => frame,
        Err(e) => Err(FrameError::Io(e.to_string())),
    })
}

/// The session's writer is gone (the connection closed).
#[derive(Debug, thiserror::Error)]
#[error("the session's connection is closed")]
pub struct TransportClosed;

/// Why an answer did not reach the client; its text is what the record's delivery says.
#[derive(Debug, Clone, thiserror::Error)]
enum WriteError {
    /// The connection's sink refused the frame (its own words).
    #[error("{0}")]
    Sink(String),
    #[error("the connection was already closed")]
    Closed,
    #[error("the client read nothing for {0} s")]
    Stalled(u64),
}

/// Frames queued for the writer; beyond this, senders wait.
const OUTBOUND_QUEUE: usize = 4096;
/// Bytes of frames queued for the writer past which no more of the client's messages are read.
/// The count alone let a client that never reads hold 4,096 tools/list answers of 30 KB each.
const OUTBOUND_BYTES: usize = 8 << 20;
/// Parsed messages waiting for the MCP service; beyond this, reading pauses.
const INBOUND_QUEUE: usize = 256;

/// The longest a closing session waits for its queued frames to be written.
const CLOSE_FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);
/// The longest one frame may take to be written: a client that reads nothing for this long (a
/// peer gone dark) has its session ended and its resources freed. Long, because a client
/// suspended a while (Ctrl-Z) is not gone; what it does not read meanwhile is bounded by the
/// outbound queue, since no more of its requests are read while that is full.
const WRITE_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// The bytes of the frames queued for a session's writer, and a wake-up for the reader when they
/// fall back within [`OUTBOUND_BYTES`].
#[derive(Default)]
struct Backlog {
    bytes: AtomicUsize,
    room: tokio::sync::Notify,
}

impl Backlog {
    /// Counts `frame` until what is returned is dropped.
    fn count(self: &Arc<Self>, frame: &str) -> Counted {
        self.bytes.fetch_add(frame.len(), Ordering::AcqRel);
        Counted {
            backlog: self.clone(),
            len: frame.len(),
        }
    }

    fn uncount(&self, frame_len: usize) {
        let before = self.bytes.fetch_sub(frame_len, Ordering::AcqRel);
        if before > OUTBOUND_BYTES && before - frame_len <= OUTBOUND_BYTES {
            self.room.notify_waiters();
        }
    }

    /// Returns once the queued frames are within [`OUTBOUND_BYTES`].
    async fn has_room(&self) {
        loop {
            let notified = self.room.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a wake-up between the two is not missed.
            notified.as_mut().enable();
            if self.bytes.load(Ordering::Acquire) <= OUTBOUND_BYTES {
                return;
            }
            notified.await;
        }
    }
}

/// A frame's bytes, counted in its session's backlog until this is dropped: once the frame is
/// written, or wherever it is dropped unwritten (a send given up, a session closed), so no
/// frame's bytes stay counted and hold the reader.
struct Counted {
    backlog: Arc<Backlog>,
    len: usize,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.backlog.uncount(self.len);
    }
}

/// Where a session's frames go to its writer, their bytes counted.
#[derive(Clone)]
struct Outbox {
    frames: mpsc::Sender<Outgoing>,
    backlog: Arc<Backlog>,
}

impl Outbox {
    /// Returns once the queue has room for a frame and its bytes (`false`: the writer is gone).
    async fn has_room(&self) -> bool {
        if self.frames.reserve().await.is_err() {
            return false;
        }
        self.backlog.has_room().await;
        true
    }

    /// `text` as a frame for the writer, its bytes counted from now.
    fn frame(&self, text: String, call_id: Option<String>) -> Outgoing {
        let counted = self.backlog.count(&text);
        Outgoing::Frame {
            text,
            call_id,
            counted,
        }
    }
}

enum Outgoing {
    Frame {
        text: String,
        /// The call whose answer this frame is, if it is one.
        call_id: Option<String>,
        counted: Counted,
    },
    /// Every frame queued before it has been written: tell the one closing the session, and
    /// close the connection (the session is over; its client is told by the close, not left
    /// holding a connection nobody answers on).
    Flushed(oneshot::Sender<()>),
}

/// The rmcp side of a framed connection.
pub struct FrameTransport {
    inbound: mpsc::Receiver<RxJsonRpcMessage<RoleServer>>,
    outbox: Outbox,
    session: Arc<Session>,
    /// Where each answer's delivery is noted.
    calls: Arc<Calls>,
    adapter: Option<Arc<dyn WireAdapter>>,
}

impl FrameTransport {
    /// Starts the reader and writer tasks of a connection; `adapter` sees every message.
    pub fn spawn<Src, Snk, SnkErr>(
        source: Src,
        sink: Snk,
        session: Arc<Session>,
        calls: Arc<Calls>,
        limit: usize,
        adapter: Option<Arc<dyn WireAdapter>>,
    ) -> Self
    where
        Src: Stream<Item = Result<String, FrameError>> + Send + Unpin + 'static,
        Snk: Sink<String, Error = SnkErr> + Send + Unpin + 'static,
        SnkErr: std::fmt::Display + Send + 'static,
    {
        let (in_tx, in_rx) = mpsc::channel(INBOUND_QUEUE);
        let (out_tx, out_rx) = mpsc::channel(OUTBOUND_QUEUE);
        // Set by the writer when the client stopped reading: the reader then ends the input,
        // which ends the session.
        let stalled = tokio_util::sync::CancellationToken::new();
        let outbox = Outbox {
            frames: out_tx,
            backlog: Arc::default(),
        };
        crate::spawn::in_current_span(read_frames(
            source,
            in_tx,
            outbox.clone(),
            limit,
            session.id.clone(),
            adapter.clone(),
            stalled.clone(),
        ));
        crate::spawn::in_current_span(write_frames(
            sink,
            out_rx,
            calls.clone(),
            session.id.clone(),
            stalled,
        ));
        Self {
            inbound: in_rx,
            outbox,
            session,
            calls,
            adapter,
        }
    }
}

async fn read_frames<Src>(
    mut source: Src,
    inbound: mpsc::Sender<RxJsonRpcMessage<RoleServer>>,
    outbox: Outbox,
    limit: usize,
    session: String,
    adapter: Option<Arc<dyn WireAdapter>>,
    stalled: tokio_util::sync::CancellationToken,
) where
    Src: Stream<Item = Result<String, FrameError>> + Unpin,
{
    loop {
        // No more is read while the answers already due wait for room: a client that sends
        // and never reads cannot make the daemon hold answers without bound.
        let next = async {
            if !outbox.has_room().await {
                return None;
            }
            source.next().await
        };
        let frame = tokio::select! {
            frame = next => frame,
            _ = stalled.cancelled() => {
                tracing::warn!(%session, "the client read nothing for {} s: its session ends", WRITE_LIMIT.as_secs());
                break;
            }
        };
        let Some(frame) = frame else {
            break;
        };
        let reply = match frame {
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) if text.len() > limit => error_frame(
                Value::Null,
                -32600,
                &FrameError::TooLarge { limit }.to_string(),
            ),
            Ok(text) => match parse_inbound(&text, adapter.as_deref()) {
                Ok(message) => {
                    if inbound.send(message).await.is_err() {
                        break;
                    }
                    continue;
                }
                Err(error) => malformed_reply(&text, &error),
            },
            Err(FrameError::TooLarge { limit }) => error_frame(
                Value::Null,
                -32600,
                &format!("message larger than the {limit}-byte limit was dropped unread"),
            ),
            Err(FrameError::NotUtf8) => error_frame(
                Value::Null,
                -32700,
                "parse error: the message is not valid UTF-8",
            ),
            Err(FrameError::Io(error)) => {
                tracing::info!(%session, %error, "session input ended");
                break;
            }
        };
        tracing::warn!(%session, reply = %reply, "bad frame answered with an error");
        if outbox.frames.send(outbox.frame(reply, None)).await.is_err() {
            break;
        }
    }
    tracing::debug!(%session, "session input closed");
}

/// Reads a client message, adapting it first if the adapter may want to.
pub(crate) fn parse_inbound(
    text: &str,
    adapter: Option<&dyn WireAdapter>,
) -> Result<RxJsonRpcMessage<RoleServer>, serde_json::Error> {
    let Some(adapter) = adapter.filter(|a| a.may_adapt(text)) else {
        return serde_json::from_str(text);
    };
    let mut message: Value = serde_json::from_str(text)?;
    adapter.inbound(&mut message);
    serde_json::from_value(message)
}

/// The JSON-RPC error for a frame that is not a valid message.
pub(crate) fn malformed_reply(text: &str, error: &serde_json::Error) -> String {
    match serde_json::from_str::<Value>(text) {
        Err(_) => error_frame(Value::Null, -32700, &format!("parse error: {error}")),
        Ok(value) => {
            let id = value
                .get("id")
                .cloned()
                .filter(|id| id.is_string() || id.is_number());
            error_frame(
                id.unwrap_or(Value::Null),
                -32600,
                &format!("invalid request: {error}"),
            )
        }
    }
}

fn error_frame(id: Value, code: i64, message: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}).to_string()
}

async fn write_frames<Snk, SnkErr>(
    mut sink: Snk,
    mut outbound: mpsc::Receiver<Outgoing>,
    calls: Arc<Calls>,
    session: String,
    stalled: tokio_util::sync::CancellationToken,
) where
    Snk: Sink<String, Error = SnkErr> + Unpin,
    SnkErr: std::fmt::Display,
{
    let mut broken: Option<WriteError> = None;
    while let Some(outgoing) = outbound.recv().await {
        let (text, call_id, counted) = match outgoing {
            Outgoing::Frame {
                text,
                call_id,
                counted,
            } => (text, call_id, counted),
            Outgoing::Flushed(tell) => {
                let _ = tell.send(());
                break;
            }
        };
        let outcome = match &broken {
            Some(error) => Err(error.clone()),
            None => match tokio::time::timeout(WRITE_LIMIT, sink.send(text)).await {
                Ok(sent) => sent.map_err(|e| WriteError::Sink(e.to_string())),
                Err(_) => {
                    stalled.cancel();
                    Err(WriteError::Stalled(WRITE_LIMIT.as_secs()))
                }
            },
        };
        drop(counted);
        if let Err(error) = &outcome
            && broken.is_none()
        {
            broken = Some(error.clone());
        }
        let Some(call_id) = call_id else {
            continue;
        };
        record_delivery(calls.clone(), call_id, outcome);
    }
    let _ = sink.close().await;
    tracing::debug!(%session, "session output closed");
}

/// Records whether a call's answer reached the client, and logs a failure.
fn record_delivery(calls: Arc<Calls>, call_id: String, outcome: Result<(), WriteError>) {
    let delivery = match outcome {
        Ok(()) => Delivery::Delivered,
        Err(error) => {
            // Invariant 3: the result is already in the store; say where to find it.
            tracing::warn!(%call_id, %error, "delivery failed: client gone; result kept in the store");
            Delivery::Failed(error.to_string())
        }
    };
    // Queued, not waited for: the answer itself was committed before it was sent.
    crate::spawn::in_current_span(async move {
        if let Err(error) = calls.note_delivery(&call_id, delivery).await {
            tracing::error!(%call_id, %error, "could not record delivery");
        }
    });
}

impl rmcp::transport::Transport<RoleServer> for FrameTransport {
    type Error = TransportClosed;

    fn name() -> Cow<'static, str> {
        "exai-frames".into()
    }

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let call_id = match &item {
            JsonRpcMessage::Response(r) => self.session.take_call_for_response(&r.id.to_string()),
            JsonRpcMessage::Error(e) => {
                e.id.as_ref()
                    .and_then(|id| self.session.take_call_for_response(&id.to_string()))
            }
            _ => None,
        };
        let text = match self.adapter.as_deref().filter(|a| a.watches_outbound()) {
            Some(adapter) => serde_json::to_value(&item).map(|mut message| {
                adapter.outbound(&mut message);
                message.to_string()
            }),
            None => serde_json::to_string(&item),
        };
        let queued = text
            .map(|text| self.outbox.frame(text, call_id))
            .map_err(|e| tracing::error!(error = %e, "could not serialize an outgoing message"));
        // Enqueue now, not when the future is polled, so frames keep the order rmcp sent them in.
        let pending = match queued {
            Ok(frame) => match self.outbox.frames.try_send(frame) {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Full(frame)) => Some(frame),
                Err(mpsc::error::TrySendError::Closed(frame)) => {
                    if let Outgoing::Frame {
                        call_id: Some(call_id),
                        ..
                    } = frame
                    {
                        record_delivery(self.calls.clone(), call_id, Err(WriteError::Closed));
                    }
                    return futures::future::Either::Left(async { Err(TransportClosed) });
                }
            },
            Err(()) => None,
        };
        let outbound = self.outbox.frames.clone();
        futures::future::Either::Right(async move {
            match pending {
                Some(frame) => outbound.send(frame).await.map_err(|_| TransportClosed),
                None => Ok(()),
            }
        })
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        self.inbound.recv().await
    }

    /// Returns once what was queued is written (at most [`CLOSE_FLUSH_LIMIT`]): rmcp queues its
    /// last answers just before closing, and a process that exits next (`stdio --no-daemon` at
    /// the end of its input) would otherwise leave them unwritten.
    async fn close(&mut self) -> Result<(), Self::Error> {
        self.inbound.close();
        let (tell, flushed) = oneshot::channel();
        let outbound = self.outbox.frames.clone();
        let flush = async move {
            if outbound.send(Outgoing::Flushed(tell)).await.is_ok() {
                let _ = flushed.await;
            }
        };
        if tokio::time::timeout(CLOSE_FLUSH_LIMIT, flush)
            .await
            .is_err()
        {
            tracing::warn!(session = %self.session.id, "closing with frames still unwritten: the client is not reading");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transport of `session` whose frames go to `sink` and whose client sends nothing.
    fn writing_to<Snk>(sink: Snk, session: Arc<Session>, app: &crate::app::App) -> FrameTransport
    where
        Snk: Sink<String, Error = std::io::Error> + Send + 'static,
    {
        let source = futures::stream::pending::<Result<String, FrameError>>();
        FrameTransport::spawn(
            source,
            Box::pin(sink),
            session,
            app.calls.clone(),
            1024,
            None,
        )
    }

    /// A slow client: closing the session still returns only once every frame queued before it
    /// is written (a process that exits next would lose them otherwise).
    #[tokio::test]
    async fn closing_returns_once_the_queued_frames_are_written() {
        use rmcp::transport::Transport;
        let test = crate::app::App::for_tests(&[]);
        let app = &test.app;
        let session = Session::new(crate::calls::TransportKind::Stdio, None, app);
        let written = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let seen = written.clone();
        let sink = futures::sink::unfold((), move |(), text: String| {
            let seen = seen.clone();
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                seen.lock().unwrap().push(text);
                Ok::<_, std::io::Error>(())
            }
        });
        let mut transport = writing_to(sink, session, app);
        for id in 1..=3 {
            let answer = JsonRpcMessage::response(
                rmcp::model::ServerResult::empty(()),
                rmcp::model::NumberOrString::Number(id),
            );
            transport.send(answer).await.unwrap();
        }
        assert!(
            written.lock().unwrap().len() < 3,
            "the writer is still busy"
        );
        transport.close().await.unwrap();
        assert_eq!(written.lock().unwrap().len(), 3);
    }

    /// A reader held by the bytes queued goes on once a frame's bytes stop counting.
    #[tokio::test]
    async fn a_reader_held_by_the_backlog_goes_on_once_it_falls() {
        let backlog = Arc::new(Backlog::default());
        let counted = backlog.count(&"x".repeat(OUTBOUND_BYTES + 1));
        let mut reader = std::pin::pin!(backlog.has_room());
        assert!(futures::poll!(reader.as_mut()).is_pending());
        drop(counted);
        tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .unwrap();
        assert_eq!(backlog.bytes.load(Ordering::Acquire), 0);
    }

    /// An answer whose send is given up while the queue is full, or refused by a closed queue,
    /// leaves no bytes counted behind it.
    #[tokio::test]
    async fn an_answer_given_up_or_refused_leaves_no_bytes_counted() {
        use rmcp::transport::Transport;
        let test = crate::app::App::for_tests(&[]);
        let app = &test.app;
        let session = Session::new(crate::calls::TransportKind::Stdio, None, app);
        // A client that reads nothing: the writer's first frame never goes.
        let sink = futures::sink::unfold((), |(), _: String| {
            futures::future::pending::<Result<(), std::io::Error>>()
        });
        let mut transport = writing_to(sink, session, app);
        let answer = |id| {
            JsonRpcMessage::response(
                rmcp::model::ServerResult::empty(()),
                rmcp::model::NumberOrString::Number(id),
            )
        };
        let counted =
            |transport: &FrameTransport| transport.outbox.backlog.bytes.load(Ordering::Acquire);
        // One frame with the writer, then a full queue.
        transport.send(answer(0)).await.unwrap();
        let one = counted(&transport);
        assert!(one > 0);
        let taken = async {
            while transport.outbox.frames.capacity() < OUTBOUND_QUEUE {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), taken)
            .await
            .expect("the writer takes the first frame");
        for id in 1..=OUTBOUND_QUEUE as i64 {
            transport.send(answer(id)).await.unwrap();
        }
        let full = counted(&transport);
        // A send that waits for room, given up.
        let mut waiting = Box::pin(transport.send(answer(9_999)));
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        drop(waiting);
        assert_eq!(counted(&transport), full);
        // Refused by a closed queue.
        transport.outbox.frames = mpsc::channel(1).0;
        let _ = transport.send(answer(10_000)).await;
        assert_eq!(counted(&transport), full);
    }

    #[test]
    fn malformed_frames_get_json_rpc_errors() {
        let not_json = serde_json::from_str::<Value>("{oops").unwrap_err();
        let reply: Value = serde_json::from_str(&malformed_reply("{oops", &not_json)).unwrap();
        assert_eq!(reply["error"]["code"], -32700);
        assert_eq!(reply["id"], Value::Null);
        let text = r#"{"jsonrpc":"2.0","id":7,"params":{}}"#;
        let bad = serde_json::from_str::<RxJsonRpcMessage<RoleServer>>(text).unwrap_err();
        let reply: Value = serde_json::from_str(&malformed_reply(text, &bad)).unwrap();
        assert_eq!(reply["error"]["code"], -32600);
        assert_eq!(reply["id"], 7);
    }

    mod properties {
        use super::*;
        use crate::arbitrary::json_rpc_message;
        use proptest::prelude::*;

        proptest! {
            /// Any text a client sends is either a message or answered with a JSON-RPC error.
            #[test]
            fn any_frame_is_parsed_or_answered_with_an_error(
                message in json_rpc_message(),
                raw in any::<String>(),
            ) {
                for text in [message.to_string(), raw] {
                    if let Err(error) = parse_inbound(&text, None) {
                        let reply: Value = serde_json::from_str(&malformed_reply(&text, &error)).unwrap();
                        prop_assert!(reply["error"]["code"].is_i64());
                    }
                }
            }

            /// Any bytes, cut into any chunks: no panic, no line over the limit, and the
            /// buffer never holds much more than the limit (an endless line is discarded as
            /// it comes, not collected).
            #[test]
            fn line_frames_stay_bounded_on_any_bytes(
                chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..40),
                limit in 1usize..200,
            ) {
                let mut frames = LineFrames::new(limit);
                let mut buf = BytesMut::new();
                for chunk in &chunks {
                    buf.extend_from_slice(chunk);
                    while let Some(frame) = frames.decode(&mut buf).map_err(|e| TestCaseError::fail(e.to_string()))? {
                        if let Ok(line) = frame {
                            prop_assert!(line.len() <= limit);
                        }
                    }
                    prop_assert!(buf.len() <= limit + chunk.len() + 1);
                }
                while let Some(frame) = frames.decode_eof(&mut buf).map_err(|e| TestCaseError::fail(e.to_string()))? {
                    if let Ok(line) = frame {
                        prop_assert!(line.len() <= limit);
                    }
                }
            }
        }
    }
}
