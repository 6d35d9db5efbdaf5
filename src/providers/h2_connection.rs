//! One HTTP/2 connection to an endpoint, held on hyper's connection API rather than through
//! reqwest's pooled client.
//!
//! A call waiting on a model holds its request for as long as the model thinks. Through the
//! pooled client that request carries about 6 KB of machinery (the pool's checkout future, sized
//! for connecting, and the client's own bookkeeping, which keeps the body to resend it); on the
//! connection API it is a stream and a small future. Used where exai knows or learns that the
//! server speaks HTTP/2: over TLS when ALPN agrees to `h2`, over plain `http://` with
//! [`Http2::Always`](crate::config::Http2). A TLS server that picks HTTP/1.1 sends the endpoint's
//! requests back to reqwest for good.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::TryFutureExt;
use futures::future::{self, Either};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http2::SendRequest;
use hyper::rt::{Read, Write};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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
    Handshake(#[source] hyper::Error),
    #[error("HTTP/2 request")]
    Request(#[source] hyper::Error),
    #[error("the request's URL is not a URI")]
    Uri(#[source] hyper::http::Error),
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

/// The body a request sends: the bytes serialized for it, whole.
pub type RequestBody = Full<Bytes>;

/// One connection, opened on the first request and again after it closes.
pub struct H2Connection {
    target: Target,
    connect_timeout: Duration,
    keepalive: Duration,
    /// The live connection's sender; held across a connect so concurrent requests share it.
    sender: tokio::sync::Mutex<Option<SendRequest<RequestBody>>>,
}

impl H2Connection {
    /// `keepalive`: how often to ping while requests wait, and how long a ping may go unanswered.
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
    /// A request the connection never took (it closed in between) is sent once more on a new
    /// connection. The request is built before the returned future and the resend is boxed:
    /// the future a call holds while the model thinks is hyper's, and little more.
    pub fn post(
        &self,
        mut sender: SendRequest<RequestBody>,
        url: &reqwest::Url,
        headers: hyper::HeaderMap,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<Response<Incoming>, H2Error>> + Send + '_ {
        let request = Request::post(url.as_str()).body(Full::new(Bytes::from(body)));
        match request {
            Ok(mut request) => {
                *request.headers_mut() = headers;
                Either::Left(
                    sender
                        .try_send_request(request)
                        .or_else(move |mut refused| match refused.take_message() {
                            Some(request) => Either::Left(Box::pin(self.resend(request))),
                            None => {
                                Either::Right(future::err(H2Error::Request(refused.into_error())))
                            }
                        }),
                )
            }
            Err(error) => Either::Right(future::err(H2Error::Uri(error))),
        }
    }

    /// `request` on a new connection (the one it was meant for closed before taking it).
    async fn resend(&self, request: Request<RequestBody>) -> Result<Response<Incoming>, H2Error> {
        // The closed sender is dropped by `sender()`, which connects anew.
        let mut sender = self.sender().await?;
        sender.send_request(request).await.map_err(H2Error::Request)
    }

    /// The live connection's sender, connecting when there is none.
    pub async fn sender(&self) -> Result<SendRequest<RequestBody>, H2Error> {
        let mut current = self.sender.lock().await;
        if let Some(sender) = current.as_ref().filter(|s| !s.is_closed()) {
            return Ok(sender.clone());
        }
        let fresh = Box::pin(self.connect()).await?;
        *current = Some(fresh.clone());
        Ok(fresh)
    }

    /// TCP, TLS where the URL says so, then the HTTP/2 preface, all within the connect
    /// timeout; the connection's task runs until the server or exai closes it (the last
    /// sender dropped and its streams ended).
    async fn connect(&self) -> Result<SendRequest<RequestBody>, H2Error> {
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
                return self.handshake(TokioIo::new(tcp)).await;
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
            // Boxed: hyper sizes each request's task by its connection's, which holds the IO
            // inline, and a TLS session is a kilobyte.
            self.handshake(TokioIo::new(Box::new(stream))).await
        };
        tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| H2Error::ConnectTimeout(self.connect_timeout))?
    }

    /// The HTTP/2 preface on `io`, and the connection's task started.
    async fn handshake<T>(&self, io: T) -> Result<SendRequest<RequestBody>, H2Error>
    where
        T: Read + Write + Unpin + Send + 'static,
    {
        let (host, port) = (self.target.host.clone(), self.target.port);
        // Pings while requests wait: a model may think for minutes without a byte, and a path
        // that died meanwhile (or a middlebox that forgets idle flows) would otherwise show only
        // at the first-token timeout; an unanswered ping closes the connection and fails its
        // requests at once.
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(self.keepalive)
            .keep_alive_timeout(self.keepalive)
            .handshake(io)
            .await
            .map_err(H2Error::Handshake)?;
        // The connection outlives the call that opened it: it logs as the process's own.
        crate::spawn::in_span(tracing::Span::none(), async move {
            if let Err(error) = connection.await {
                tracing::debug!(%host, port, %error, "HTTP/2 connection to a provider ended");
            }
        });
        Ok(sender)
    }
}
