//! Prometheus metrics of this process (`/metrics`): recorded where each fact is known, rendered
//! in the Prometheus text format by `prometheus-client`.
//!
//! One set per process, like its pid: the recording points (a call's end, a provider request,
//! the store's writes, a session) sit below `App` and take no handle. The registry is exai's own,
//! built here once; nothing registers behind its back. Recording costs the crate's atomics (a
//! family's read lock to find a label set) and no allocation once a label set has been seen:
//! names are interned, and their number is capped (past it, `other`), so a client naming made-up
//! models cannot grow the set. Gauges that the process already knows (calls in flight, queues) are
//! read when Prometheus scrapes, not kept up to date on the call path.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of what [`render`] returns.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Most distinct names (tools, models, providers) kept as label values; past it, `other`.
const MAX_NAMES: usize = 512;

/// A label value from a bounded set (a tool, model or provider name), cloned by reference count.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Name(Arc<str>);

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

/// How a provider request ended: its HTTP status, or no response at all.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum RequestStatus {
    Http(u16),
    /// No connection, or the connection failed before response headers.
    Connect,
    /// No response headers within the idle timeout (or, for a retry, no event within it).
    Timeout,
    /// Dropped before response headers: the call's deadline passed or it was cancelled.
    Abandoned,
    /// Answered, but not usably (its stored error kind: `garbage`, `truncated`, …).
    Unusable(&'static str),
}

impl EncodeLabelValue for RequestStatus {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        match self {
            RequestStatus::Http(code) => write!(encoder, "{code}"),
            RequestStatus::Connect => encoder.write_str("connect_error"),
            RequestStatus::Timeout => encoder.write_str("timeout"),
            RequestStatus::Abandoned => encoder.write_str("abandoned"),
            RequestStatus::Unusable(kind) => encoder.write_str(kind),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    tool: Name,
    model: Name,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolModel {
    tool: Name,
    model: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    model: Name,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderStatus {
    provider: Name,
    status: RequestStatus,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabels {
    transport: &'static str,
}

/// Histogram buckets in seconds, from `start` growing by `factor`.
#[derive(Clone, Copy)]
struct Buckets {
    start: f64,
    factor: f64,
    count: u16,
}

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(self.start, self.factor, self.count))
    }
}

/// A call's whole duration: 50 ms to about 55 minutes.
const CALL_SECONDS: Buckets = Buckets {
    start: 0.05,
    factor: 2.0,
    count: 17,
};
/// Time to a model's first token: 50 ms to about 7 minutes.
const FIRST_TOKEN_SECONDS: Buckets = Buckets {
    start: 0.05,
    factor: 2.0,
    count: 14,
};
/// An acknowledged store write: 0.1 ms to about 26 s.
const STORE_WRITE_SECONDS: Buckets = Buckets {
    start: 0.0001,
    factor: 2.0,
    count: 19,
};

/// Writes committed in one transaction: 1 to the writer's batch of 512.
const STORE_COMMIT_WRITES: Buckets = Buckets {
    start: 1.0,
    factor: 2.0,
    count: 10,
};

/// Longest name kept as a label value: each is repeated on every line of its series.
const MOST_LABEL_BYTES: usize = 128;

/// Names kept as label values, at most `max` of them.
struct Names {
    kept: RwLock<HashSet<Arc<str>>>,
    max: usize,
    other: Name,
}

impl Names {
    fn new(max: usize) -> Self {
        Self {
            kept: RwLock::new(HashSet::new()),
            max,
            other: Name(Arc::from("other")),
        }
    }

    /// `text` as a label value: the one already kept, a new one while there is room, else `other`.
    fn get(&self, text: &str) -> Name {
        if let Some(kept) = self
            .kept
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(text)
        {
            return Name(kept.clone());
        }
        let mut kept = self.kept.write().unwrap_or_else(|p| p.into_inner());
        if let Some(name) = kept.get(text) {
            return Name(name.clone());
        }
        if kept.len() >= self.max || text.len() > MOST_LABEL_BYTES {
            return self.other.clone();
        }
        let name: Arc<str> = Arc::from(text);
        kept.insert(name.clone());
        Name(name)
    }
}

/// Every family, and the registry they are rendered from.
struct Metrics {
    registry: Registry,
    names: Names,
    no_model: Name,
    calls: Family<CallLabels, Counter>,
    call_seconds: Family<ToolModel, Histogram, Buckets>,
    first_token_seconds: Family<ToolModel, Histogram, Buckets>,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<ToolModel, Counter<f64, AtomicU64>>,
    provider_requests: Family<ProviderStatus, Counter>,
    provider_retries: Family<ProviderStatus, Counter>,
    provider_queued: Family<ProviderLabels, Gauge>,
    provider_in_flight: Family<ProviderLabels, Gauge>,
    calls_in_flight: Gauge,
    sessions: Family<TransportLabels, Gauge>,
    store_write_seconds: Histogram,
    store_commit_writes: Histogram,
    store_queue: Gauge,
    store_records_waiting: Gauge,
    store_threads_waiting: Gauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("exai");
        let calls = Family::default();
        registry.register(
            "calls",
            "Calls ended, by tool, model and outcome",
            calls.clone(),
        );
        let call_seconds = Family::new_with_constructor(CALL_SECONDS);
        registry.register_with_unit(
            "call_duration",
            "How long calls took from receipt to end, by tool and model",
            Unit::Seconds,
            call_seconds.clone(),
        );
        let first_token_seconds = Family::new_with_constructor(FIRST_TOKEN_SECONDS);
        registry.register_with_unit(
            "time_to_first_token",
            "How long the model took to its first token, by tool and model",
            Unit::Seconds,
            first_token_seconds.clone(),
        );
        let tokens = Family::default();
        registry.register(
            "tokens",
            "Tokens sent to (in) and received from (out) models, by model",
            tokens.clone(),
        );
        let cost = Family::default();
        registry.register(
            "cost_usd",
            "What calls cost in US dollars, by tool and model",
            cost.clone(),
        );
        let provider_requests = Family::default();
        registry.register(
            "provider_requests",
            "Requests sent to providers, by provider and HTTP status (or connect_error, timeout)",
            provider_requests.clone(),
        );
        let provider_retries = Family::default();
        registry.register(
            "provider_retries",
            "Provider requests retried, by provider and the status that caused the retry",
            provider_retries.clone(),
        );
        let provider_queued = Family::default();
        registry.register(
            "provider_queue_depth",
            "Calls waiting for a free slot of a provider's concurrency limit",
            provider_queued.clone(),
        );
        let provider_in_flight = Family::default();
        registry.register(
            "provider_requests_in_flight",
            "Slots of a provider's concurrency limit in use",
            provider_in_flight.clone(),
        );
        let calls_in_flight = Gauge::default();
        registry.register(
            "calls_in_flight",
            "Calls received and not yet ended",
            calls_in_flight.clone(),
        );
        let sessions = Family::default();
        registry.register(
            "sessions",
            "MCP sessions open, by transport",
            sessions.clone(),
        );
        let store_write_seconds = STORE_WRITE_SECONDS.new_metric();
        registry.register_with_unit(
            "store_write_duration",
            "How long an acknowledged store write took (queue and commit)",
            Unit::Seconds,
            store_write_seconds.clone(),
        );
        let store_commit_writes = STORE_COMMIT_WRITES.new_metric();
        registry.register(
            "store_commit_writes",
            "Writes the store committed together in one transaction (its group commit)",
            store_commit_writes.clone(),
        );
        let store_queue = Gauge::default();
        registry.register(
            "store_write_queue_depth",
            "Writes waiting for the store's writer",
            store_queue.clone(),
        );
        let store_records_waiting = Gauge::default();
        registry.register(
            "store_records_waiting",
            "Records of ended calls waiting for the store to take them (it did not when they ended)",
            store_records_waiting.clone(),
        );
        let store_threads_waiting = Gauge::default();
        registry.register(
            "store_threads_waiting",
            "Conversation threads whose latest save waits for the store to take it",
            store_threads_waiting.clone(),
        );
        registry.register(
            "build",
            "This exai's version",
            Info::new([("version", crate::VERSION)]),
        );
        Self {
            registry,
            names: Names::new(MAX_NAMES),
            no_model: Name(Arc::from("none")),
            calls,
            call_seconds,
            first_token_seconds,
            tokens,
            cost,
            provider_requests,
            provider_retries,
            provider_queued,
            provider_in_flight,
            calls_in_flight,
            sessions,
            store_write_seconds,
            store_commit_writes,
            store_queue,
            store_records_waiting,
            store_threads_waiting,
        }
    }

    fn name(&self, text: &str) -> Name {
        self.names.get(text)
    }

    fn model(&self, model: Option<&str>) -> Name {
        model.map_or_else(|| self.no_model.clone(), |m| self.name(m))
    }
}

/// A label value for `text` (a name from the catalog, the tool registry or the config).
pub fn name(text: &str) -> Name {
    METRICS.name(text)
}

/// The tool label of calls refused before running (their tool name is the client's text).
pub const REFUSED_TOOL: &str = "refused";

/// What is known of a call when it ends.
pub struct CallEnd<'a> {
    /// A tool of the registry, or [`REFUSED_TOOL`].
    pub tool: &'a str,
    /// The model that served it, if one did.
    pub model: Option<&'a str>,
    /// The stored state it ended in (`succeeded`, `failed`, `timed_out`, `cancelled`, …).
    pub outcome: &'static str,
    pub duration: Duration,
    pub time_to_first_token: Option<Duration>,
    pub tokens_in: Option<u64>,
    pub tokens_out: Option<u64>,
}

/// Counts a call's end: its outcome, duration, time to first token and tokens.
pub fn call_ended(end: &CallEnd<'_>) {
    let m = &*METRICS;
    let tool = m.name(end.tool);
    let model = m.model(end.model);
    m.calls
        .get_or_create(&CallLabels {
            tool: tool.clone(),
            model: model.clone(),
            outcome: end.outcome,
        })
        .inc();
    let tool_model = ToolModel {
        tool,
        model: model.clone(),
    };
    m.call_seconds
        .get_or_create(&tool_model)
        .observe(end.duration.as_secs_f64());
    if let Some(first) = end.time_to_first_token {
        m.first_token_seconds
            .get_or_create(&tool_model)
            .observe(first.as_secs_f64());
    }
    for (direction, count) in [("in", end.tokens_in), ("out", end.tokens_out)] {
        if let Some(count) = count.filter(|&c| c > 0) {
            m.tokens
                .get_or_create(&TokenLabels {
                    model: model.clone(),
                    direction,
                })
                .inc_by(count);
        }
    }
}

/// Adds what a call cost (US dollars) to `exai_cost_usd_total`: called once per call, where its
/// cost is known.
pub fn add_cost(tool: &str, model: Option<&str>, usd: f64) {
    if !(usd.is_finite() && usd > 0.0) {
        return;
    }
    let m = &*METRICS;
    m.cost
        .get_or_create(&ToolModel {
            tool: m.name(tool),
            model: m.model(model),
        })
        .inc_by(usd);
}

/// A request sent to a provider, counted once with how it ended: `abandoned` when it is dropped
/// before [`ProviderRequest::ended`] (the call's deadline or a cancel stopped the wait).
pub struct ProviderRequest<'a> {
    provider: &'a Name,
    counted: bool,
}

impl<'a> ProviderRequest<'a> {
    pub fn sent(provider: &'a Name) -> Self {
        Self {
            provider,
            counted: false,
        }
    }

    /// Counts the request under `status`.
    pub fn ended(mut self, status: RequestStatus) {
        self.counted = true;
        provider_request(self.provider, status);
    }
}

impl Drop for ProviderRequest<'_> {
    fn drop(&mut self) {
        if !self.counted {
            provider_request(self.provider, RequestStatus::Abandoned);
        }
    }
}

/// Counts a request sent to `provider` and how it was answered.
fn provider_request(provider: &Name, status: RequestStatus) {
    METRICS
        .provider_requests
        .get_or_create(&ProviderStatus {
            provider: provider.clone(),
            status,
        })
        .inc();
}

/// Counts a retry of a request to `provider` after `status`.
pub fn provider_retry(provider: &Name, status: RequestStatus) {
    METRICS
        .provider_retries
        .get_or_create(&ProviderStatus {
            provider: provider.clone(),
            status,
        })
        .inc();
}

/// Records how long an acknowledged store write took.
pub fn store_write(took: Duration) {
    METRICS.store_write_seconds.observe(took.as_secs_f64());
}

/// Counts one commit of the store, of `writes` writes.
pub fn store_commit(writes: usize) {
    METRICS.store_commit_writes.observe(writes as f64);
}

/// Counts a session open on `transport` until it drops.
pub fn session_opened(transport: &'static str) -> SessionCount {
    let gauge = METRICS
        .sessions
        .get_or_create_owned(&TransportLabels { transport });
    gauge.inc();
    SessionCount(gauge)
}

/// Keeps one session counted in `exai_sessions`.
#[derive(Debug)]
pub struct SessionCount(Gauge);

impl Drop for SessionCount {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What the process knows at the moment of a scrape, set into the gauges before rendering.
pub struct Now {
    pub calls_in_flight: usize,
    pub store_queue: usize,
    pub store_records_waiting: usize,
    pub store_threads_waiting: usize,
    /// Each provider's name, calls waiting for a slot, and slots in use.
    pub providers: Vec<(Name, usize, usize)>,
}

/// The metrics in the Prometheus text format, with the gauges set from `now`.
pub fn render(now: Now) -> Result<String, std::fmt::Error> {
    let m = &*METRICS;
    m.calls_in_flight.set(gauge_value(now.calls_in_flight));
    m.store_queue.set(gauge_value(now.store_queue));
    m.store_records_waiting
        .set(gauge_value(now.store_records_waiting));
    m.store_threads_waiting
        .set(gauge_value(now.store_threads_waiting));
    for (provider, queued, in_flight) in now.providers {
        let labels = ProviderLabels { provider };
        m.provider_queued
            .get_or_create(&labels)
            .set(gauge_value(queued));
        m.provider_in_flight
            .get_or_create(&labels)
            .set(gauge_value(in_flight));
    }
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &m.registry)?;
    Ok(text)
}

fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_too_long_for_a_label_is_other() {
        let names = Names::new(8);
        assert_eq!(
            &*names.get(&"m".repeat(MOST_LABEL_BYTES)).0,
            "m".repeat(128)
        );
        assert_eq!(&*names.get(&"m".repeat(MOST_LABEL_BYTES + 1)).0, "other");
    }

    #[test]
    fn names_are_interned_and_capped() {
        let names = Names::new(8);
        let a = names.get("glm-4.7");
        let b = names.get("glm-4.7");
        assert!(Arc::ptr_eq(&a.0, &b.0));
        for n in 0..20 {
            let _ = names.get(&format!("made-up-{n}"));
        }
        assert_eq!(&*names.get("one-too-many").0, "other");
        // A name kept before the cap is still itself.
        assert_eq!(&*names.get("glm-4.7").0, "glm-4.7");
    }

    #[test]
    fn a_call_shows_in_the_text_format() {
        call_ended(&CallEnd {
            tool: "chat",
            model: Some("metrics-render-model"),
            outcome: "succeeded",
            duration: Duration::from_millis(120),
            time_to_first_token: Some(Duration::from_millis(40)),
            tokens_in: Some(10),
            tokens_out: Some(5),
        });
        add_cost("chat", Some("metrics-render-model"), 0.25);
        let text = render(Now {
            calls_in_flight: 3,
            store_queue: 0,
            store_records_waiting: 4,
            store_threads_waiting: 2,
            providers: vec![(name("metrics-provider"), 2, 1)],
        })
        .unwrap();
        for line in [
            "# TYPE exai_calls_total counter",
            "exai_calls_total{tool=\"chat\",model=\"metrics-render-model\",outcome=\"succeeded\"} 1",
            "exai_tokens_total{model=\"metrics-render-model\",direction=\"out\"} 5",
            "exai_cost_usd_total{tool=\"chat\",model=\"metrics-render-model\"} 0.25",
            "exai_calls_in_flight 3",
            "exai_store_records_waiting 4",
            "exai_store_threads_waiting 2",
            "exai_provider_queue_depth{provider=\"metrics-provider\"} 2",
            "exai_build_info{version=\"",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }
}
