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

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::Http2;

/// Requests one client carries before the next one is opened: the least a server should allow.
pub const STREAMS_PER_CONNECTION: usize = 100;

/// How each client of an endpoint is built.
#[derive(Debug, Clone, Copy)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    pub http2: Http2,
}

impl ClientSettings {
    fn build(&self) -> Result<reqwest::Client, reqwest::Error> {
        // A redirect would re-send the prompt and files to wherever it points: none is followed.
        let builder = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true);
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
    in_flight: Arc<AtomicUsize>,
}

/// The clients of one endpoint (see the module's comment).
pub struct Connections {
    settings: ClientSettings,
    clients: Mutex<Vec<Client>>,
}

/// One request's hold on a client: counted until dropped (after its answer was read).
pub struct Checkout {
    pub http: reqwest::Client,
    in_flight: Arc<AtomicUsize>,
}

impl Drop for Checkout {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connections {
    /// The first client is built at once: an endpoint that cannot have one fails here.
    pub fn new(settings: ClientSettings) -> Result<Self, reqwest::Error> {
        let first = Client {
            http: settings.build()?,
            in_flight: Arc::default(),
        };
        Ok(Self {
            settings,
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
        // The first client was built with the same settings; a failure now is passing.
        let built = full.then(|| self.settings.build().ok()).flatten();
        let chosen = match built {
            Some(http) => {
                clients.push(Client {
                    http,
                    in_flight: Arc::default(),
                });
                clients.len() - 1
            }
            None => least,
        };
        let client = &clients[chosen];
        client.in_flight.fetch_add(1, Ordering::Relaxed);
        Checkout {
            http: client.http.clone(),
            in_flight: client.in_flight.clone(),
        }
    }

    /// How many clients (connections, with HTTP/2) the endpoint has opened.
    #[cfg(test)]
    fn count(&self) -> usize {
        self.clients.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connections() -> Connections {
        Connections::new(ClientSettings {
            connect_timeout: Duration::from_secs(1),
            http2: Http2::Always,
        })
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
