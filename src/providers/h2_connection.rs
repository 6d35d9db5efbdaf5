//! One HTTP/2 connection to an endpoint, held with the `h2` crate rather than through reqwest's
//! pooled client.
//!
//! A call waiting on a model holds its request for as long as the model thinks. Through the
//! pooled client that request carries about 6 KB of machinery (the pool's checkout future, sized
//! for connecting, and the client's own bookkeeping, which keeps the body to resend it); here it
//! is a stream and a small future, and no task of its own: hyper's HTTP/2 client spawned two a
//! request (one sending the body, which waited for the stream to open, so the body left in a
//! write after its headers). Used where exai knows or learns that the
//! server speaks HTTP/2: over TLS when ALPN agrees to `h2`, over plain `http://` with
//! [`Http2::Always`](crate::config::Http2). A TLS server that picks HTTP/1.1 sends the endpoint's
//! requests back to reqwest for good.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use h2::client::{self, ResponseFuture, SendRequest};
use h2::{Ping, PingPong, RecvStream};
use hyper::body::Bytes;
use hyper::header::{CONTENT_LENGTH, HeaderValue};
use hyper::{HeaderMap, Request, Response};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use crate::config::{Http2, TrustedCertificates};

/// Why a request on the connection failed. The endpoint's URL is in the error it becomes
/// (`ProviderError::Connect` names it), so these say only what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum H2Error {
    #[error("connecting")]
    Connect(#[source] io::Error),
    #[error("connecting: no connection within {0:?}")]
    ConnectTimeout(Duration),
    #[error("TLS")]
    Tls(#[source] io::Error),
    #[error(
        "the server does not speak HTTP/2 over TLS (EXAI_PROVIDER_HTTP2=always; auto falls back to HTTP/1.1)"
    )]
    NoHttp2,
    /// The server chose HTTP/1.1 (auto): its requests go through reqwest from now on.
    #[error("the server speaks HTTP/1.1")]
    Http1Only,
    #[error("HTTP/2 handshake")]
    Handshake(#[source] h2::Error),
    #[error("HTTP/2 request")]
    Request(#[source] h2::Error),
    #[error("keep-alive timed out: no answer to an HTTP/2 ping within {0:?}, connection closed")]
    KeepAliveTimedOut(Duration),
    #[error("the request's URL is not a URI")]
    Uri(#[source] hyper::http::Error),
}

impl H2Error {
    /// h2 refused what the server sent, not the network: an answer's head past
    /// [`MAX_ANSWER_HEAD`] (a stream's, or on the connection, one too large to decode), or
    /// frames that break HTTP/2's rules.
    pub fn broke_protocol(&self) -> bool {
        matches!(self, H2Error::Request(e) if e.is_library()
            && matches!(e.reason(), Some(h2::Reason::PROTOCOL_ERROR | h2::Reason::COMPRESSION_ERROR)))
    }
}

/// Why TLS for an endpoint's connections cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("a certificate in {path} is not usable")]
    Certificate {
        path: String,
        #[source]
        error: rustls::Error,
    },
    #[error("TLS versions")]
    Versions(#[source] rustls::Error),
}

/// Where an endpoint's connections go, and how.
#[derive(Clone)]
pub struct Target {
    host: String,
    port: u16,
    tls: Option<Tls>,
    /// Set once a TLS server picks HTTP/1.1 (auto): shared by the endpoint's connections.
    http1_only: Arc<AtomicBool>,
}

#[derive(Clone)]
struct Tls {
    name: ServerName<'static>,
    connector: TlsConnector,
    /// Auto: HTTP/1.1 is offered too, and taking it sends requests back to reqwest.
    may_fall_back: bool,
}

impl Target {
    /// The target of `url`, when the connection API serves it with `http2`: `https://` unless
    /// HTTP/2 is off, plain `http://` with HTTP/2 always; never a URL with a user and password
    /// (reqwest turns those into a header).
    pub fn of(
        url: &reqwest::Url,
        http2: Http2,
        trusted: Option<&TrustedCertificates>,
    ) -> Result<Option<Self>, TlsSetupError> {
        if !url.username().is_empty() || url.password().is_some() {
            return Ok(None);
        }
        // An IPv6 address comes bracketed, as the URL writes it.
        let Some(host) = url.host_str() else {
            return Ok(None);
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let Some(port) = url.port_or_known_default() else {
            return Ok(None);
        };
        let tls = match (url.scheme(), http2) {
            ("http", Http2::Always) => None,
            ("https", Http2::Always | Http2::Auto) => {
                let Ok(name) = ServerName::try_from(host.clone()) else {
                    return Ok(None);
                };
                let may_fall_back = http2 == Http2::Auto;
                Some(Tls {
                    name,
                    connector: connector(trusted, may_fall_back)?,
                    may_fall_back,
                })
            }
            _ => return Ok(None),
        };
        Ok(Some(Self {
            host,
            port,
            tls,
            http1_only: Arc::default(),
        }))
    }

    #[cfg(test)]
    pub fn host_and_port(&self) -> (&str, u16) {
        (&self.host, self.port)
    }

    #[cfg(test)]
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// Whether a TLS handshake failed because the server speaks none of the protocols offered.
fn refused_every_protocol(error: &io::Error) -> bool {
    let alert = rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol);
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| *e == alert)
}

/// A TLS client as reqwest's: the built-in (webpki) roots and the trusted file's, TLS 1.2 and
/// 1.3, offering `h2` (and `http/1.1` when it may fall back).
fn connector(
    trusted: Option<&TrustedCertificates>,
    offer_http1: bool,
) -> Result<TlsConnector, TlsSetupError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for (der, path) in trusted
        .iter()
        .flat_map(|t| t.der.iter().map(move |der| (der, &t.path)))
    {
        roots
            .add(CertificateDer::from(der.clone()))
            .map_err(|error| TlsSetupError::Certificate {
                path: path.display().to_string(),
                error,
            })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Versions)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    if offer_http1 {
        config.alpn_protocols.push(b"http/1.1".to_vec());
    }
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The largest head (status and headers, counted as HTTP/2 counts a header list) an answer may
/// have on any path: hyper's limit for its HTTP/2 client too. Past it, h2 refuses the answer.
pub const MAX_ANSWER_HEAD: usize = 16 * 1024;
/// How much of an answer the server may send ahead of its reading, per request and in all:
/// the readers bound what they keep, and a model's answer is far smaller.
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;

/// The live connection: its sender and its state.
#[derive(Clone)]
pub struct Sender {
    requests: SendRequest<Bytes>,
    state: Arc<ConnectionState>,
}

/// How a connection's task ended (set once, read by the requests it fails), and how many
/// requests wait on it (it is pinged only then, as hyper's client did).
#[derive(Default)]
struct ConnectionState {
    ended: AtomicBool,
    waiting: AtomicUsize,
    /// The keep-alive's ping went unanswered (so the requests' errors say that, not "closed").
    unanswered_ping: AtomicBool,
    keepalive: Duration,
}

impl ConnectionState {
    /// `error` of a request on this connection, named for what closed it.
    fn explain(&self, error: h2::Error) -> H2Error {
        match self.unanswered_ping.load(Ordering::Acquire) {
            true => H2Error::KeepAliveTimedOut(self.keepalive),
            false => H2Error::Request(error),
        }
    }
}

/// A request counted as waiting on its connection until dropped.
struct Waiting(Arc<ConnectionState>);

impl Waiting {
    fn new(state: Arc<ConnectionState>) -> Self {
        state.waiting.fetch_add(1, Ordering::Relaxed);
        Self(state)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An answer on the connection: its head, and its body read as it comes.
pub struct DirectAnswer {
    response: Response<RecvStream>,
    waiting: Waiting,
}

impl DirectAnswer {
    pub fn status(&self) -> hyper::StatusCode {
        self.response.status()
    }

    pub fn headers(&self) -> &HeaderMap {
        self.response.headers()
    }

    /// The body's next bytes; `None` at its end (trailers carry no answer).
    pub async fn chunk(&mut self) -> Option<Result<Bytes, H2Error>> {
        let body = self.response.body_mut();
        loop {
            match body.data().await? {
                Ok(data) => {
                    // Read: the server may send as much again.
                    let _ = body.flow_control().release_capacity(data.len());
                    if !data.is_empty() {
                        return Some(Ok(data));
                    }
                }
                Err(error) => return Some(Err(self.waiting.0.explain(error))),
            }
        }
    }
}

/// One connection, opened on the first request and again after it closes.
pub struct H2Connection {
    target: Target,
    connect_timeout: Duration,
    keepalive: Duration,
    /// The live connection's sender; held across a connect so concurrent requests share it.
    sender: tokio::sync::Mutex<Option<Sender>>,
}

impl H2Connection {
    /// `keepalive`: how often to ping, and how long a ping may go unanswered.
    pub fn new(target: Target, connect_timeout: Duration, keepalive: Duration) -> Self {
        Self {
            target,
            connect_timeout,
            keepalive,
            sender: tokio::sync::Mutex::new(None),
        }
    }

    #[cfg(test)]
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Whether a TLS server of this endpoint chose HTTP/1.1: reqwest carries its requests.
    pub fn http1_only(&self) -> bool {
        self.target.http1_only.load(Ordering::Relaxed)
    }

    /// A POST of `body` to `url` with `headers` on `sender`, waiting for the answer's headers.
    /// The headers and the body are queued together, so they leave in one write. A request the
    /// connection never took (it closed in between) is sent once more on a new connection,
    /// boxed: the future a call holds while the model thinks is h2's, and little more.
    pub async fn post(
        &self,
        sender: Sender,
        url: &reqwest::Url,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<DirectAnswer, H2Error> {
        let request = request(url, headers, body.len())?;
        let body = Bytes::from(body);
        let Sender { requests, state } = sender;
        let (answer, state) = match requests.ready().await {
            Ok(mut ready) => (send(&mut ready, request, body, &state)?, state),
            Err(_) => Box::pin(self.resend(request, body)).await?,
        };
        let waiting = Waiting::new(state);
        match answer.await {
            Ok(response) => Ok(DirectAnswer { response, waiting }),
            Err(error) => Err(waiting.0.explain(error)),
        }
    }

    /// `request` on a new connection (the one it was meant for closed before taking it).
    async fn resend(
        &self,
        request: Request<()>,
        body: Bytes,
    ) -> Result<(ResponseFuture, Arc<ConnectionState>), H2Error> {
        // The closed sender is dropped by `sender()`, which connects anew.
        let Sender { requests, state } = self.sender().await?;
        let mut ready = requests.ready().await.map_err(|e| state.explain(e))?;
        Ok((send(&mut ready, request, body, &state)?, state))
    }

    /// The live connection's sender, connecting when there is none.
    pub async fn sender(&self) -> Result<Sender, H2Error> {
        let mut current = self.sender.lock().await;
        if let Some(sender) = current
            .as_ref()
            .filter(|s| !s.state.ended.load(Ordering::Acquire))
        {
            return Ok(sender.clone());
        }
        let fresh = Box::pin(self.connect()).await?;
        *current = Some(fresh.clone());
        Ok(fresh)
    }

    /// TCP, TLS where the URL says so, then the HTTP/2 preface, all within the connect
    /// timeout; the connection's task runs until the server or exai closes it (the last
    /// sender dropped and its streams ended) or a ping goes unanswered.
    async fn connect(&self) -> Result<Sender, H2Error> {
        let Target {
            host, port, tls, ..
        } = &self.target;
        let connecting = async {
            let tcp = TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(H2Error::Connect)?;
            // Requests are small and written whole: no reason to wait for more to send.
            let _ = tcp.set_nodelay(true);
            let Some(tls) = tls else {
                return self.handshake(tcp).await;
            };
            let stream = tls
                .connector
                .connect(tls.name.clone(), tcp)
                .await
                .map_err(|error| match refused_every_protocol(&error) {
                    true => H2Error::NoHttp2,
                    false => H2Error::Tls(error),
                })?;
            if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                if !tls.may_fall_back {
                    return Err(H2Error::NoHttp2);
                }
                self.target.http1_only.store(true, Ordering::Relaxed);
                tracing::info!(%host, port, "the provider speaks HTTP/1.1 over TLS: its requests go through the pooled client");
                return Err(H2Error::Http1Only);
            }
            self.handshake(stream).await
        };
        tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| H2Error::ConnectTimeout(self.connect_timeout))?
    }

    /// The HTTP/2 preface on `io`, and the connection's task started.
    async fn handshake<T>(&self, io: T) -> Result<Sender, H2Error>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (host, port) = (self.target.host.clone(), self.target.port);
        let (requests, mut connection) = client::Builder::new()
            .enable_push(false)
            .max_header_list_size(MAX_ANSWER_HEAD as u32)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(H2Error::Handshake)?;
        // Pings: a model may think for minutes without a byte, and a path that died meanwhile
        // (or a middlebox that forgets idle flows) would otherwise show only at the first-token
        // timeout; an unanswered ping closes the connection and fails its requests at once.
        let state = Arc::new(ConnectionState {
            keepalive: self.keepalive,
            ..ConnectionState::default()
        });
        let ended = state.clone();
        let pings = ping(connection.ping_pong(), self.keepalive, state.clone());
        // The connection outlives the call that opened it: it logs as the process's own.
        crate::spawn::in_span(tracing::Span::none(), async move {
            tokio::select! {
                outcome = &mut connection => if let Err(error) = outcome {
                    tracing::debug!(%host, port, %error, "HTTP/2 connection to a provider ended");
                },
                () = pings => {
                    tracing::warn!(%host, port, "a provider's HTTP/2 connection answered no ping: closed");
                    ended.unanswered_ping.store(true, Ordering::Release);
                }
            }
            ended.ended.store(true, Ordering::Release);
            // Dropped: the requests still on it fail.
            drop(connection);
        });
        Ok(Sender { requests, state })
    }
}

/// The request's head: `url`, `headers` and the body's length.
fn request(url: &reqwest::Url, headers: HeaderMap, length: usize) -> Result<Request<()>, H2Error> {
    let mut request = Request::post(url.as_str()).body(()).map_err(H2Error::Uri)?;
    *request.headers_mut() = headers;
    request
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(length));
    Ok(request)
}

/// Queues `request` and its whole `body` on a connection ready for a stream.
fn send(
    requests: &mut SendRequest<Bytes>,
    request: Request<()>,
    body: Bytes,
    state: &ConnectionState,
) -> Result<ResponseFuture, H2Error> {
    let (answer, mut stream) = requests
        .send_request(request, false)
        .map_err(|e| state.explain(e))?;
    // Queued even before the stream has flow-control credit: sent with the headers.
    stream.send_data(body, true).map_err(|e| state.explain(e))?;
    Ok(answer)
}

/// Pings every `every` while requests wait on the connection, each answered within `every`;
/// returns at the first that is not (never, when h2 gives no pinger).
async fn ping(pings: Option<PingPong>, every: Duration, state: Arc<ConnectionState>) {
    let Some(mut pings) = pings else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(every).await;
        if state.waiting.load(Ordering::Relaxed) == 0 {
            continue;
        }
        match tokio::time::timeout(every, pings.ping(Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return,
        }
    }
}
