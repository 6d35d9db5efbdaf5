//! One HTTP/2 connection to an endpoint, held on hyper's connection API rather than through
//! reqwest's pooled client.
//!
//! A call waiting on a model holds its request for as long as the model thinks. Through the
//! pooled client that request carries about 6 KB of machinery (the pool's checkout future, sized
//! for connecting, and the client's own bookkeeping, which keeps the body to resend it); on the
//! connection API it is a stream and a small future. Used where exai knows the server speaks
//! HTTP/2 ([`Http2::Always`](crate::config::Http2)); everything else goes through reqwest.

use std::io;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http2::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// Why a request on the connection failed.
#[derive(Debug, thiserror::Error)]
pub enum H2Error {
    #[error("connecting to {host}:{port}")]
    Connect {
        host: String,
        port: u16,
        #[source]
        error: io::Error,
    },
    #[error("connecting to {host}:{port}: no connection within {waited:?}")]
    ConnectTimeout {
        host: String,
        port: u16,
        waited: Duration,
    },
    #[error("HTTP/2 handshake with {host}:{port}")]
    Handshake {
        host: String,
        port: u16,
        #[source]
        error: hyper::Error,
    },
    #[error("HTTP/2 request")]
    Request(#[source] hyper::Error),
    #[error("the request's URL is not a URI")]
    Uri(#[source] hyper::http::Error),
}

/// Where the connection goes: host and port of a plain `http://` URL.
#[derive(Debug, Clone)]
pub struct Target {
    host: String,
    port: u16,
}

impl Target {
    /// The target of `url`, when the connection API serves it: plain `http://` without a user
    /// and password (reqwest turns those into a header, and reaches TLS endpoints).
    pub fn of(url: &reqwest::Url) -> Option<Self> {
        if url.scheme() != "http" || !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        // An IPv6 address comes bracketed, as the URL writes it.
        let host = url
            .host_str()?
            .trim_start_matches('[')
            .trim_end_matches(']');
        Some(Self {
            host: host.to_string(),
            port: url.port_or_known_default()?,
        })
    }
}

/// The body a request sends: the bytes serialized for it, whole.
pub type RequestBody = Full<Bytes>;

/// One connection, opened on the first request and again after it closes.
pub struct H2Connection {
    target: Target,
    connect_timeout: Duration,
    /// The live connection's sender; held across a connect so concurrent requests share it.
    sender: tokio::sync::Mutex<Option<SendRequest<RequestBody>>>,
}

impl H2Connection {
    pub fn new(target: Target, connect_timeout: Duration) -> Self {
        Self {
            target,
            connect_timeout,
            sender: tokio::sync::Mutex::new(None),
        }
    }

    /// Sends `request` (its URI absolute) and waits for the answer's headers. A request the
    /// connection never took (it closed in between) is sent once more on a new connection.
    pub async fn send(&self, request: Request<RequestBody>) -> Result<Response<Incoming>, H2Error> {
        let mut sender = self.sender().await?;
        match sender.try_send_request(request).await {
            Ok(response) => Ok(response),
            Err(mut refused) => match refused.take_message() {
                Some(request) => {
                    // The closed sender is dropped by `sender()`, which connects anew.
                    let mut sender = self.sender().await?;
                    sender.send_request(request).await.map_err(H2Error::Request)
                }
                None => Err(H2Error::Request(refused.into_error())),
            },
        }
    }

    /// The live connection's sender, connecting when there is none.
    async fn sender(&self) -> Result<SendRequest<RequestBody>, H2Error> {
        let mut current = self.sender.lock().await;
        if let Some(sender) = current.as_ref().filter(|s| !s.is_closed()) {
            return Ok(sender.clone());
        }
        let fresh = Box::pin(self.connect()).await?;
        *current = Some(fresh.clone());
        Ok(fresh)
    }

    /// TCP, then the HTTP/2 preface; the connection's task runs until the server or exai
    /// closes it (the last sender dropped and its streams ended).
    async fn connect(&self) -> Result<SendRequest<RequestBody>, H2Error> {
        let Target { host, port } = &self.target;
        let connecting = async {
            let tcp = TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(|error| H2Error::Connect {
                    host: host.clone(),
                    port: *port,
                    error,
                })?;
            // Requests are small and written whole: no reason to wait for more to send.
            let _ = tcp.set_nodelay(true);
            hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .handshake(TokioIo::new(tcp))
                .await
                .map_err(|error| H2Error::Handshake {
                    host: host.clone(),
                    port: *port,
                    error,
                })
        };
        let (sender, connection) = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| H2Error::ConnectTimeout {
                host: host.clone(),
                port: *port,
                waited: self.connect_timeout,
            })??;
        let (host, port) = (host.clone(), *port);
        // The connection outlives the call that opened it: it logs as the process's own.
        crate::spawn::in_span(tracing::Span::none(), async move {
            if let Err(error) = connection.await {
                tracing::debug!(%host, port, %error, "HTTP/2 connection to a provider ended");
            }
        });
        Ok(sender)
    }
}
