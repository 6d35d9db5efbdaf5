//! The HTTP clients of one endpoint: HTTP/2 where the server speaks it, and enough connections
//! that no request waits behind another for a stream.
//!
//! With HTTP/2 one connection carries many requests — a call in flight costs a stream, not a
//! socket with its own buffers and TLS session — but a server caps the streams of a connection
//! (`SETTINGS_MAX_CONCURRENT_STREAMS`, at least 100 as RFC 9113 recommends) and a request over the
//! cap would wait, silently, for another to end. So the requests are spread over several clients
//! (each keeps its own connection), a new one opened when every client carries
//! [`STREAMS_PER_CONNECTION`]. Over HTTP/1.1 each client pools its own connections and the spread
//! changes nothing.
//!
//! Chat requests to an `https://` endpoint (and, with [`Http2::Always`], a plain `http://` one)
//! go on [`H2Connection`]s instead, one per client: a waiting request holds far less. A TLS
//! server that picks HTTP/1.1 sends them back to reqwest. Requests other than chat (model
//! lists, files) always go through reqwest, as do all requests when the environment names a
//! proxy (reqwest honours it).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Bytes;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use super::h2_connection::{
    DirectAnswer, H2Connection, H2Error, MAX_ANSWER_HEAD, Target, TlsSetupError,
};
use crate::config::{Http2, TrustedCertificates};

/// Requests one client carries before the next one is opened: the least a server should allow.
pub const STREAMS_PER_CONNECTION: usize = 100;

/// How each client of an endpoint is built.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    /// HTTP/2 pings on exai's own connections while requests wait (see `H2Connection`).
    pub keepalive: Duration,
    pub http2: Http2,
    pub trusted: Option<TrustedCertificates>,
}

/// Why an endpoint has no clients.
#[derive(Debug, thiserror::Error)]
pub enum NoClient {
    #[error(transparent)]
    Pooled(#[from] reqwest::Error),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
}

impl ClientSettings {
    fn build(&self) -> Result<reqwest::Client, reqwest::Error> {
        // A redirect would re-send the prompt and files to wherever it points: none is followed.
        let mut builder = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true);
        for der in self.trusted.iter().flat_map(|t| t.der.iter()) {
            builder = builder.add_root_certificate(reqwest::Certificate::from_der(der)?);
        }
        match self.http2 {
            Http2::Auto => builder,
            Http2::Always => builder.http2_prior_knowledge(),
            Http2::Off => builder.http1_only(),
        }
        .build()
    }
}

struct Client {
    http: reqwest::Client,
    direct: Option<Arc<H2Connection>>,
    in_flight: Arc<AtomicUsize>,
}

/// The clients of one endpoint (see the module's comment).
pub struct Connections {
    settings: ClientSettings,
    /// Where chat requests go on connections of their own, when they do.
    direct: Option<Target>,
    clients: Mutex<Vec<Client>>,
}

/// One request's hold on a client: counted until dropped (after its answer was read).
pub struct Checkout {
    pub http: reqwest::Client,
    /// The connection a chat request takes instead of `http`, when the endpoint has them.
    pub direct: Option<Arc<H2Connection>>,
    in_flight: Arc<AtomicUsize>,
}

/// A provider's answer, whichever way its request went: status, headers, and a body read
/// chunk by chunk.
pub enum Answer {
    Pooled(reqwest::Response),
    Direct(DirectAnswer),
}

impl Answer {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Pooled(response) => response.status(),
            Self::Direct(answer) => answer.status(),
        }
    }

    pub fn headers(&self) -> &HeaderMap {
        match self {
            Self::Pooled(response) => response.headers(),
            Self::Direct(answer) => answer.headers(),
        }
    }

    /// The body's next bytes; `None` at its end.
    pub async fn chunk(&mut self) -> Option<Result<Bytes, TransportError>> {
        match self {
            Self::Pooled(response) => response
                .chunk()
                .await
                .map_err(TransportError::Pooled)
                .transpose(),
            Self::Direct(answer) => answer
                .chunk()
                .await
                .map(|c| c.map_err(TransportError::Direct)),
        }
    }
}

/// Why a request or the reading of its answer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Pooled(reqwest::Error),
    #[error(transparent)]
    Direct(H2Error),
    /// Over HTTP/1.1 reqwest reads a head of up to about 400 KiB; exai takes no more than h2
    /// does, so an answer meets one bound whichever way it came.
    #[error("its head (status line and headers) is over {} KiB, more than exai reads", MAX_ANSWER_HEAD / 1024)]
    HeadTooLarge,
    /// h2 refused the answer (`H2Error::broke_protocol`), which cannot say whether its head was
    /// too large or it was otherwise not HTTP/2.
    #[error("it broke HTTP/2's rules, or its head was over {} KiB, more than exai reads", MAX_ANSWER_HEAD / 1024)]
    BrokeProtocol(#[source] H2Error),
}

impl TransportError {
    fn direct(error: H2Error) -> Self {
        match error.broke_protocol() {
            true => Self::BrokeProtocol(error),
            false => Self::Direct(error),
        }
    }

    /// The server answered, but not in a form exai takes: its head is past the bound, or
    /// (over HTTP/2) it broke the protocol. Not a failure to reach it.
    pub fn refused_answer(&self) -> bool {
        matches!(self, Self::HeadTooLarge | Self::BrokeProtocol(_))
    }

    /// The error without the request's URL (it may carry credentials).
    pub fn without_url(self) -> Self {
        match self {
            Self::Pooled(error) => Self::Pooled(error.without_url()),
            direct => direct,
        }
    }
}

impl Checkout {
    /// A POST of `body` to `url` with `headers`, on this checkout's connection.
    pub async fn post(
        &self,
        url: &reqwest::Url,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<Answer, TransportError> {
        if let Some(direct) = self.direct.as_ref().filter(|d| !d.http1_only()) {
            match direct.sender().await {
                Ok(sender) => {
                    return direct
                        .post(sender, url, headers, body)
                        .await
                        .map(Answer::Direct)
                        .map_err(TransportError::direct);
                }
                // The server picked HTTP/1.1 over TLS: reqwest, below, from now on.
                Err(H2Error::Http1Only) => {}
                Err(error) => return Err(TransportError::Direct(error)),
            }
        }
        let request = self.http.post(url.clone()).headers(headers).body(body);
        match request.send().await {
            Ok(response) if head_size(response.headers()) > MAX_ANSWER_HEAD => {
                Err(TransportError::HeadTooLarge)
            }
            Ok(response) => Ok(Answer::Pooled(response)),
            Err(error) if past_hyper_s_head_bound(&error) => Err(TransportError::HeadTooLarge),
            Err(error) => Err(TransportError::Pooled(error)),
        }
    }
}

/// A header list's size as HTTP/2 counts it (RFC 9113, 6.5.2): each field's name and value and
/// 32 bytes more.
fn head_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}

/// hyper refused an HTTP/1.1 head too large for its buffer (about 400 KiB) or with too many
/// headers.
fn past_hyper_s_head_bound(error: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if error
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse_too_large)
        {
            return true;
        }
        cause = error.source();
    }
    false
}

impl Drop for Checkout {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connections {
    /// The first client is built at once: an endpoint that cannot have one fails here. Chat
    /// requests to `chat_url` get connections of their own where [`Target::of`] says, when no
    /// proxy is named in the environment (reqwest honours those).
    pub fn new(
        settings: ClientSettings,
        chat_url: Option<&reqwest::Url>,
    ) -> Result<Self, NoClient> {
        let direct = match chat_url.filter(|_| !proxy_named()) {
            Some(url) => Target::of(url, settings.http2, settings.trusted.as_ref())?,
            None => None,
        };
        let first = new_client(settings.build()?, direct.as_ref(), &settings);
        Ok(Self {
            settings,
            direct,
            clients: Mutex::new(vec![first]),
        })
    }

    /// The least busy client, or a new one when every client carries its share.
    pub fn checkout(&self) -> Checkout {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let least = clients
            .iter()
            .enumerate()
            .min_by_key(|(_, c)| c.in_flight.load(Ordering::Relaxed))
            .map_or(0, |(i, _)| i);
        let full = clients
            .get(least)
            .is_none_or(|c| c.in_flight.load(Ordering::Relaxed) >= STREAMS_PER_CONNECTION);
        // Built only when needed: a client is costly to make (TLS set-up), a request is not.
        // The first client was built with the same settings; a failure now is passing. With
        // connections of their own, the clients share the first's reqwest client.
        let built = match (full, &self.direct, clients.first()) {
            (false, ..) => None,
            (true, Some(_), Some(first)) => Some(first.http.clone()),
            (true, ..) => self.settings.build().ok(),
        };
        let chosen = match built {
            Some(http) => {
                clients.push(new_client(http, self.direct.as_ref(), &self.settings));
                clients.len() - 1
            }
            None => least,
        };
        let client = &clients[chosen];
        client.in_flight.fetch_add(1, Ordering::Relaxed);
        Checkout {
            http: client.http.clone(),
            direct: client.direct.clone(),
            in_flight: client.in_flight.clone(),
        }
    }

    /// How many clients (connections, with HTTP/2) the endpoint has opened.
    #[cfg(test)]
    fn count(&self) -> usize {
        self.clients.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// A client around `http`, with a connection of its own to `direct` when chat requests take one.
fn new_client(http: reqwest::Client, direct: Option<&Target>, settings: &ClientSettings) -> Client {
    Client {
        http,
        direct: direct.map(|target| {
            Arc::new(H2Connection::new(
                target.clone(),
                settings.connect_timeout,
                settings.keepalive,
            ))
        }),
        in_flight: Arc::default(),
    }
}

/// Whether the environment names a proxy, which reqwest would send requests through.
fn proxy_named() -> bool {
    ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"]
        .iter()
        .flat_map(|name| [name.to_string(), name.to_ascii_lowercase()])
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connections() -> Connections {
        Connections::new(
            ClientSettings {
                connect_timeout: Duration::from_secs(1),
                keepalive: Duration::from_secs(20),
                http2: Http2::Always,
                trusted: None,
            },
            None,
        )
        .unwrap()
    }

    #[test]
    fn a_new_client_opens_only_when_every_one_carries_its_share() {
        let pool = connections();
        let mut held: Vec<Checkout> = (0..STREAMS_PER_CONNECTION)
            .map(|_| pool.checkout())
            .collect();
        assert_eq!(pool.count(), 1, "100 requests fit one connection");
        held.push(pool.checkout());
        assert_eq!(pool.count(), 2, "the 101st opens a second");
        // Requests that end free their streams: the next ones reuse the clients.
        held.truncate(10);
        for _ in 0..50 {
            held.push(pool.checkout());
        }
        assert_eq!(pool.count(), 2);
        drop(held);
        let again = pool.checkout();
        assert_eq!(again.in_flight.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn chat_requests_get_connections_of_their_own_over_tls_or_with_http2_always() {
        let direct = |http2, url: &str| {
            let url = reqwest::Url::parse(url).unwrap();
            let settings = ClientSettings {
                connect_timeout: Duration::from_secs(1),
                keepalive: Duration::from_secs(20),
                http2,
                trusted: None,
            };
            let connections = Connections::new(settings, Some(&url)).unwrap();
            let checkout = connections.checkout();
            checkout.direct.as_ref().map(|d| {
                let (host, port) = d.target().host_and_port();
                (host.to_string(), port, d.target().is_tls())
            })
        };
        let plain = |host: &str, port| Some((host.to_string(), port, false));
        let tls = |host: &str, port| Some((host.to_string(), port, true));
        let always = Http2::Always;
        assert_eq!(
            direct(always, "http://127.0.0.1:9/v1/x"),
            plain("127.0.0.1", 9)
        );
        assert_eq!(direct(always, "http://[::1]:9/v1"), plain("::1", 9));
        assert_eq!(direct(Http2::Auto, "http://127.0.0.1:9/v1"), None);
        assert_eq!(direct(Http2::Off, "http://127.0.0.1:9/v1"), None);
        let auto_tls = direct(Http2::Auto, "https://api.example.com/v1");
        assert_eq!(auto_tls, tls("api.example.com", 443));
        assert_eq!(direct(always, "https://[::1]:8443/v1"), tls("::1", 8443));
        assert_eq!(direct(Http2::Off, "https://api.example.com/v1"), None);
        // reqwest keeps what it alone does: credentials in the URL become a header.
        assert_eq!(direct(always, "http://user:pw@127.0.0.1:9/v1"), None);
        assert_eq!(direct(Http2::Auto, "https://user@api.example.com/v1"), None);
    }

    #[test]
    fn the_setting_takes_three_words() {
        assert_eq!(Http2::parse("auto"), Some(Http2::Auto));
        assert_eq!(Http2::parse(" Always "), Some(Http2::Always));
        assert_eq!(Http2::parse("off"), Some(Http2::Off));
        assert_eq!(Http2::parse("h2c"), None);
        for mode in [Http2::Auto, Http2::Always, Http2::Off] {
            assert_eq!(Http2::parse(mode.as_str()), Some(mode));
        }
    }
}
