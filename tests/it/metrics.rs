//! `/metrics`: calls with known outcomes through the real daemon, the scrape parsed by a
//! Prometheus text-format parser (`prometheus-parse`) and its counters checked against them.

use crate::common;

use common::*;
use prometheus_parse::{Sample, Scrape, Value as Metric};

/// GET `/metrics` from `daemon`, with `token` when given: (status, body).
fn scrape_raw(daemon: &Daemon, token: Option<&str>) -> (u16, String) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| ("Authorization", b))
        .into_iter()
        .collect();
    http_request(
        "GET",
        &format!("http://{}/metrics", daemon.addr),
        &headers,
        "",
    )
}

fn parse(body: &str) -> Scrape {
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("a Prometheus text exposition")
}

pub(crate) fn scrape(daemon: &Daemon) -> Scrape {
    let (status, body) = scrape_raw(daemon, Some(&daemon.token()));
    assert_eq!(status, 200, "{body}");
    parse(&body)
}

/// The samples of `metric` whose labels include every pair of `labels`.
fn matching<'a>(
    scrape: &'a Scrape,
    metric: &'a str,
    labels: &'a [(&str, &str)],
) -> impl Iterator<Item = &'a Sample> {
    scrape.samples.iter().filter(move |s| {
        s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
    })
}

/// The sum of the counter or gauge `metric` over the samples matching `labels`.
pub(crate) fn total(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    matching(scrape, metric, labels)
        .map(|s| match &s.value {
            Metric::Counter(v) | Metric::Gauge(v) | Metric::Untyped(v) => *v,
            other => panic!("{metric} is not a counter or gauge: {other:?}"),
        })
        .sum()
}

/// How many observations the histogram `metric` holds over the samples matching `labels`.
fn observations(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> u64 {
    matching(scrape, metric, labels)
        .map(|s| match &s.value {
            Metric::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map_or(0, |b| b.count as u64),
            other => panic!("{metric} is not a histogram: {other:?}"),
        })
        .sum()
}

fn calls(scrape: &Scrape, model: &str, outcome: &str) -> f64 {
    total(
        scrape,
        "exai_calls_total",
        &[("tool", "chat"), ("model", model), ("outcome", outcome)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_match_the_calls_made_by_outcome() {
    let fake = Fake::start();
    let daemon = Daemon::start(
        &fake,
        &[
            ("EXAI_TOOL_TIMEOUTS", "chat=3"),
            ("EXAI_RETRY_BASE_S", "0.05"),
        ],
    );
    // Without the token: refused like every other route.
    let (status, body) = scrape_raw(&daemon, None);
    assert_eq!(status, 401, "{body}");
    let (status, _) = scrape_raw(&daemon, Some("not-the-token"));
    assert_eq!(status, 401);

    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    for prompt in ["one", "two"] {
        let ok = client.call_tool(chat(prompt, "fake-fast")).await.unwrap();
        assert_eq!(ok.is_error, Some(false), "{}", all_text_of(&ok));
    }
    // A 500, retried once, then an answer.
    let retried = client.call_tool(chat("again", "fake-500-1")).await.unwrap();
    assert_eq!(retried.is_error, Some(false), "{}", all_text_of(&retried));
    // The provider refuses the key: a failed call.
    let refused = client.call_tool(chat("no", "fake-401")).await.unwrap();
    error_of(&refused);
    // The provider never answers: the call's 3 s deadline ends it.
    let hung = client.call_tool(chat("wait", "fake-hang")).await.unwrap();
    assert!(error_of(&hung).contains("timed out"));
    // The fake lets go of the abandoned request when it sees the stream reset, which may come
    // after the answer: until then it would count as the next call's request at the provider.
    at_provider(&fake, 0).await;
    // The client cancels a call while the provider works on it.
    let slow = cancellable_call(&client, chat("slow", "fake-delay-20000")).await;
    at_provider(&fake, 1).await;
    let during = scrape(&daemon);
    assert_eq!(total(&during, "exai_calls_in_flight", &[]), 1.0);
    assert_eq!(
        total(
            &during,
            "exai_provider_requests_in_flight",
            &[("provider", "custom")]
        ),
        1.0
    );
    assert!(total(&during, "exai_sessions", &[("transport", "ws")]) >= 1.0);
    slow.cancel(Some("enough".into())).await.unwrap();
    calls_in_flight(&daemon, 0).await;

    let after = scrape(&daemon);
    assert_eq!(calls(&after, "fake-fast", "succeeded"), 2.0);
    assert_eq!(calls(&after, "fake-500-1", "succeeded"), 1.0);
    assert_eq!(calls(&after, "fake-401", "failed"), 1.0);
    assert_eq!(calls(&after, "fake-hang", "timed_out"), 1.0);
    assert_eq!(calls(&after, "fake-delay-20000", "cancelled"), 1.0);
    // Nothing else was called (status polls of the harness are not calls).
    assert_eq!(total(&after, "exai_calls_total", &[]), 6.0);
    assert_eq!(total(&after, "exai_calls_in_flight", &[]), 0.0);

    assert_eq!(
        observations(
            &after,
            "exai_call_duration_seconds",
            &[("tool", "chat"), ("model", "fake-fast")]
        ),
        2
    );
    assert_eq!(
        observations(
            &after,
            "exai_time_to_first_token_seconds",
            &[("model", "fake-fast")]
        ),
        2
    );
    assert!(
        total(
            &after,
            "exai_tokens_total",
            &[("model", "fake-fast"), ("direction", "out")]
        ) > 0.0
    );
    let custom = [("provider", "custom")];
    let requests = |status| {
        total(
            &after,
            "exai_provider_requests_total",
            &[custom[0], ("status", status)],
        )
    };
    assert_eq!(requests("500"), 1.0);
    assert_eq!(requests("401"), 1.0);
    // fake-fast twice, the retried 500, and the hung stream (headers, then silence).
    assert_eq!(requests("200"), 4.0);
    // The slow request was cancelled before its headers came.
    assert_eq!(requests("abandoned"), 1.0);
    assert_eq!(
        total(
            &after,
            "exai_provider_retries_total",
            &[custom[0], ("status", "500")]
        ),
        1.0
    );
    assert_eq!(total(&after, "exai_provider_queue_depth", &custom), 0.0);
    assert!(observations(&after, "exai_store_write_duration_seconds", &[]) >= 12);
    assert_eq!(total(&after, "exai_store_write_queue_depth", &[]), 0.0);
    // The store's commits are counted by how many writes each took: never more than a batch.
    let commits = observations(&after, "exai_store_commit_writes", &[]);
    assert!(commits >= 1, "the store's commits are counted");
    let at_most_a_batch = matching(&after, "exai_store_commit_writes", &[])
        .map(|s| match &s.value {
            Metric::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than == 512.0)
                .map_or(0, |b| b.count as u64),
            other => panic!("not a histogram: {other:?}"),
        })
        .sum::<u64>();
    assert_eq!(at_most_a_batch, commits);
    let build = matching(&after, "exai_build_info", &[]).next().unwrap();
    assert_eq!(build.labels.get("version"), Some(env!("CARGO_PKG_VERSION")));
    client.cancel().await.unwrap();
}

#[test]
fn the_public_setting_opens_metrics_on_loopback_only() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[("EXAI_METRICS_PUBLIC", "1")]);
    let (status, body) = scrape_raw(&daemon, None);
    assert_eq!(status, 200, "{body}");
    let scraped = parse(&body);
    assert_eq!(total(&scraped, "exai_calls_total", &[]), 0.0);
    assert!(matching(&scraped, "exai_build_info", &[]).next().is_some());
    // Only /metrics is open: MCP still wants the token.
    let (status, _) = http_request("GET", &format!("http://{}/ws", daemon.addr), &[], "");
    assert_eq!(status, 401);

    // A daemon others can reach does not start with it, and says why.
    for (listen, why) in [
        ("0.0.0.0:0", "it listens on 0.0.0.0:0"),
        ("127.0.0.1:0", "it runs with --allow-remote"),
    ] {
        let home = temp_home();
        let home_text = home.display().to_string();
        let output = exai_output(
            &[
                ("EXAI_HOME", &home_text),
                ("HOME", &home_text),
                ("XDG_CONFIG_HOME", &home_text),
                ("EXAI_METRICS_PUBLIC", "1"),
            ],
            &["daemon", "--listen", listen, "--allow-remote"],
            "",
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(
            stderr.contains("EXAI_METRICS_PUBLIC") && stderr.contains(why),
            "{stderr}"
        );
    }
}

/// The metrics cover everyone's calls and spend: a member's personal token is refused them,
/// an admin's and the owner's are not.
#[test]
fn a_members_token_gets_no_metrics_an_admins_does() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, &[]);
    let member = crate::users::add_user(&daemon.home, "ada", false);
    let admin = crate::users::add_user(&daemon.home, "boss", true);
    let (status, body) = scrape_raw(&daemon, Some(&member));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("owner's or an admin's token"), "{body}");
    for token in [admin, daemon.token()] {
        let (status, body) = scrape_raw(&daemon, Some(&token));
        assert_eq!(status, 200, "{body}");
    }
}
