//! The call-path benchmark: what exai adds over a direct provider call, measured in one run.
//!
//! Everything runs on 127.0.0.1 against the fake provider, release build, logging on.
//! Run with `scripts/bench` (or `cargo bench --bench callpath`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    // Test tasks carry no call's span: plain spawns are fine here.
    clippy::disallowed_methods
)]

#[path = "../tests/it/common.rs"]
mod common;
#[path = "support/measure.rs"]
mod measure;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use measure::*;
use rmcp::model::CallToolRequestParams;
use serde_json::json;

const SEQUENTIAL_CALLS: usize = 400;
const CONCURRENT_CALLS: usize = 500;
const IN_FLIGHT_FOR_LIST: usize = 1000;
const LIST_SAMPLES: usize = 200;
const SPAWN_SAMPLES: usize = 20;

/// Who watches exai while it works, as a person would run them beside it: Prometheus scraping
/// `/metrics` every second and a live page holding `/api/events` open (both with the token),
/// until stopped; counts the scrapes and the page's events.
struct Scraper {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<usize>>,
    page_open: Arc<AtomicBool>,
    page: Option<std::thread::JoinHandle<usize>>,
}

impl Scraper {
    fn start(daemon: &Daemon) -> Self {
        let url = format!("http://{}/metrics", daemon.addr);
        let bearer = format!("Bearer {}", daemon.token());
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let scraping = bearer.clone();
        let thread = std::thread::spawn(move || {
            let mut scrapes = 0;
            loop {
                let (status, body) =
                    http_request("GET", &url, &[("Authorization", scraping.as_str())], "");
                assert_eq!(status, 200, "{body}");
                scrapes += 1;
                match stopped.recv_timeout(Duration::from_secs(1)) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return scrapes,
                }
            }
        });
        let page_open = Arc::new(AtomicBool::new(true));
        let page = watch_page(daemon.addr.to_string(), bearer, page_open.clone());
        Self {
            stop: Some(stop),
            thread: Some(thread),
            page_open,
            page: Some(page),
        }
    }

    /// Stops watching: (scrapes made, events the page received).
    fn stop(mut self) -> (usize, usize) {
        drop(self.stop.take());
        self.page_open.store(false, Ordering::SeqCst);
        (
            self.thread.take().map_or(0, |t| t.join().unwrap()),
            self.page.take().map_or(0, |t| t.join().unwrap()),
        )
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        drop(self.stop.take());
        self.page_open.store(false, Ordering::SeqCst);
        for thread in [self.thread.take(), self.page.take()].into_iter().flatten() {
            let _ = thread.join();
        }
    }
}

/// The live page's feed held open and read until `open` turns false; how many events came.
fn watch_page(
    addr: String,
    bearer: String,
    open: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    use std::io::Read;
    std::thread::spawn(move || {
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        write!(
            stream,
            "GET /api/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {bearer}\r\n\
             Accept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        let (mut events, mut buffer) = (0, [0u8; 16 * 1024]);
        while open.load(Ordering::SeqCst) {
            match stream.read(&mut buffer) {
                Ok(0) => panic!("the live page's feed closed during the run"),
                Ok(n) => {
                    events += String::from_utf8_lossy(&buffer[..n])
                        .matches("\nevent:")
                        .count()
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("the live page's feed failed: {e}"),
            }
        }
        events
    })
}

/// The daemon's settings: logging as by default (exai's events at info, to its JSON log); the
/// provider limit (16 by default) lifted — this measures exai, not the queue —; HTTP/2 to the
/// provider, as exai speaks to every real provider (they offer it over TLS; the fake speaks it
/// in the clear, so it is asked for).
const DAEMON_SETTINGS: &[(&str, &str)] = &[
    ("EXAI_PROVIDER_CONCURRENCY", "2000"),
    ("EXAI_PROVIDER_HTTP2", "always"),
];

/// `count` chats of 20 s opened on `daemon` through `client`, returned once all are in flight.
async fn open_calls(client: &Client, daemon: &Daemon, count: usize) -> Vec<ChatInFlight> {
    let calls = spawn_chats(client, count, "h", "fake-delay-20000");
    wait_until_async("the calls in flight", Duration::from_secs(30), || {
        (daemon.healthz()["calls_in_flight"].as_u64()? >= count as u64).then_some(())
    })
    .await;
    calls
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let fake = Fake::start();
    let daemon = Daemon::start(&fake, DAEMON_SETTINGS);
    let scraper = Scraper::start(&daemon);
    let mut report = Report(Vec::new());
    println!(
        "exai call-path benchmark (release build, logging on, fake provider on 127.0.0.1, \
         /metrics scraped every second, a live page's feed open)\n"
    );

    std::thread::sleep(Duration::from_millis(300));
    report.add(
        "daemon RSS, idle",
        format!("{:.1} MB", rss_mb(daemon.pid())),
        "<= 20 MB",
    );

    // 1. Added latency, one call at a time, direct and via exai interleaved.
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let latencies = interleaved(&fake, &client, &http, SEQUENTIAL_CALLS).await;
    let ((d50, d99), (v50, v99)) = (latencies.direct, latencies.via);
    report.add(
        "direct call to the fake, p50 / p99",
        format!("{:.3} / {:.3} ms", ms(d50), ms(d99)),
        "-",
    );
    report.add(
        "chat via exai stdio -> daemon, p50 / p99",
        format!("{:.3} / {:.3} ms", ms(v50), ms(v99)),
        "-",
    );
    report.add(
        "added latency p50 (via - direct)",
        format!("{:.3} ms ({:.2}x)", ms(v50) - ms(d50), ms(v50) / ms(d50)),
        "<= 0.5 ms",
    );
    report.add(
        "added latency p99 (via - direct)",
        format!("{:.3} ms ({:.2}x)", ms(v99) - ms(d99), ms(v99) / ms(d99)),
        "<= 2 ms",
    );
    // The same with nobody watching: what the live page and Prometheus add to a call.
    let (scrapes, page_events) = scraper.stop();
    let unwatched = interleaved(&fake, &client, &http, SEQUENTIAL_CALLS).await;
    let scraper = Scraper::start(&daemon);
    let (u50, _) = unwatched.via;
    let unwatched_added = ms(u50) - ms(unwatched.direct.0);
    report.add(
        "added latency p50, nobody watching (no page, no scrapes)",
        format!("{unwatched_added:.3} ms"),
        "-",
    );
    report.add(
        "what the page and /metrics add to a call, p50",
        format!("{:+.3} ms", ms(v50) - ms(d50) - unwatched_added),
        "nothing measurable",
    );

    // 1b. Streaming: time to first token as exai's provider client sees it (recorded per call)
    // against a plain client reading the same stream, and 200 concurrent streams.
    let (mut direct_ttft, mut exai_ttft) = (Vec::new(), Vec::new());
    for i in 0..100 {
        let t = Instant::now();
        let body = json!({"model": "fake-slowstart-20x20", "stream": true, "messages": [{"role": "user", "content": format!("s{i}")}]});
        let response = http
            .post(format!("{}/v1/chat/completions", fake.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        let mut stream = response.bytes_stream();
        let mut first = None;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            if first.is_none() && String::from_utf8_lossy(&chunk).contains("\"content\"") {
                first = Some(t.elapsed());
            }
        }
        direct_ttft.push(first.unwrap());
        let r = client
            .call_tool(chat(&format!("s{i}"), "fake-slowstart-20x20"))
            .await
            .unwrap();
        let record = daemon.final_record(&call_id_of(&r));
        exai_ttft.push(Duration::from_millis(
            record.time_to_first_token_ms.unwrap() as u64,
        ));
    }
    let (dt50, dt99) = (
        percentile(&mut direct_ttft, 0.5),
        percentile(&mut direct_ttft, 0.99),
    );
    let (et50, et99) = (
        percentile(&mut exai_ttft, 0.5),
        percentile(&mut exai_ttft, 0.99),
    );
    report.add(
        "time to first token, direct p50 / p99 (20 ms server delay)",
        format!("{:.1} / {:.1} ms", ms(dt50), ms(dt99)),
        "-",
    );
    report.add(
        "time to first token, exai's client p50 / p99",
        format!("{:.1} / {:.1} ms", ms(et50), ms(et99)),
        "-",
    );
    report.add(
        "added time to first token p99",
        format!("{:.2} ms", ms(et99) - ms(dt99)),
        "<= 1 ms",
    );
    let streams = |via_exai: bool| {
        let peer = client.peer().clone();
        let http = http.clone();
        let url = fake.url.clone();
        async move {
            let started = Instant::now();
            let calls = (0..200).map(|i| {
                let (peer, http, url) = (peer.clone(), http.clone(), url.clone());
                async move {
                    let t = Instant::now();
                    if via_exai {
                        peer.call_tool(chat(&format!("c{i}"), "fake-stream-20x10")).await.unwrap();
                    } else {
                        let body = json!({"model": "fake-stream-20x10", "stream": true, "messages": [{"role": "user", "content": format!("c{i}")}]});
                        let mut s = http.post(format!("{url}/v1/chat/completions")).json(&body).send().await.unwrap().bytes_stream();
                        while s.next().await.is_some() {}
                    }
                    t.elapsed()
                }
            });
            let mut times = futures::future::join_all(calls).await;
            (started.elapsed(), percentile(&mut times, 0.99))
        }
    };
    let (direct_wall, direct_p99) = streams(false).await;
    let (exai_wall, exai_p99) = streams(true).await;
    report.add(
        "200 concurrent streams (20 chunks x 10 ms), p99 direct / exai",
        format!("{:.0} / {:.0} ms", ms(direct_p99), ms(exai_p99)),
        "no added tail",
    );
    report.add(
        "200 concurrent streams, wall direct / exai",
        format!("{:.0} / {:.0} ms", ms(direct_wall), ms(exai_wall)),
        "-",
    );

    // 2. 500 concurrent calls on one session, each waiting 1 s at the provider.
    let peer = client.peer().clone();
    let started = Instant::now();
    let calls = (0..CONCURRENT_CALLS).map(|i| {
        let peer = peer.clone();
        async move {
            peer.call_tool(chat(&format!("c{i}"), "fake-delay-1000"))
                .await
                .unwrap()
        }
    });
    let results = futures::future::join_all(calls).await;
    let wall = started.elapsed();
    assert!(
        results
            .iter()
            .enumerate()
            .all(|(i, r)| text_of(r) == format!("echo: c{i}"))
    );
    report.add(
        &format!("{CONCURRENT_CALLS} concurrent chats (fake-delay-1000), wall"),
        format!(
            "{:.3} s ({:.2}x the 1 s floor)",
            wall.as_secs_f64(),
            wall.as_secs_f64()
        ),
        "<= 1.5 s",
    );

    // 3. tools/list while 1,000 calls are in flight, on a fresh daemon so that its RSS
    // is that of the calls, not the high-water mark of the phases above.
    client.cancel().await.unwrap();
    let (more_scrapes, more_events) = scraper.stop();
    let (mut scrapes, mut page_events) = (scrapes + more_scrapes, page_events + more_events);
    drop(daemon);
    let daemon = Daemon::start(&fake, DAEMON_SETTINGS);
    let scraper = Scraper::start(&daemon);
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let in_flight = open_calls(&client, &daemon, IN_FLIGHT_FOR_LIST).await;
    let rss_calls_only = rss_mb(daemon.pid());
    let mut lists = Vec::new();
    let mut listed = None;
    for _ in 0..LIST_SAMPLES {
        let t = Instant::now();
        let tools = client.list_all_tools().await.unwrap();
        lists.push(t.elapsed());
        // Every answer whole: the same tools each time, under load as when it began.
        assert_eq!(*listed.get_or_insert(tools.len()), tools.len());
    }
    assert!(listed.is_some_and(|n| n > 20), "{listed:?} tools listed");
    let (l50, l99) = (percentile(&mut lists, 0.5), percentile(&mut lists, 0.99));
    report.add(
        "tools/list with 1,000 calls in flight, p50 / p99",
        format!("{:.3} / {:.3} ms", ms(l50), ms(l99)),
        "p99 <= 10 ms",
    );
    report.add(
        "daemon RSS, 1,000 calls in flight (before / after the tools/list samples)",
        format!("{rss_calls_only:.1} / {:.1} MB", rss_mb(daemon.pid())),
        "<= 64 MB",
    );
    for call in in_flight {
        call.abort();
    }
    client.cancel().await.unwrap();
    // The same over HTTP/1.1 (a plain local server): a connection per call in flight.
    let http1 = Daemon::start(&fake, &[DAEMON_SETTINGS[0], ("EXAI_PROVIDER_HTTP2", "off")]);
    let (http1_client, _) = stdio_client(&http1.stdio_env(), &[]).await;
    let http1_calls = open_calls(&http1_client, &http1, IN_FLIGHT_FOR_LIST).await;
    report.add(
        "daemon RSS, 1,000 calls in flight over HTTP/1.1 to the provider",
        format!("{:.1} MB", rss_mb(http1.pid())),
        "-",
    );
    for call in http1_calls {
        call.abort();
    }
    http1_client.cancel().await.unwrap();
    drop(http1);

    // 4. `exai stdio` spawn -> tools/list answered, daemon up; and the shim's RSS.
    let mut spawns = Vec::new();
    let mut shim_rss = 0.0;
    for _ in 0..SPAWN_SAMPLES {
        let t = Instant::now();
        let mut child = Command::new(EXAI)
            .arg("stdio")
            .envs(daemon.stdio_env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"0"}}});
        writeln!(stdin, "{init}").unwrap();
        writeln!(
            stdin,
            r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
        )
        .unwrap();
        writeln!(stdin, r#"{{"jsonrpc":"2.0","id":2,"method":"tools/list"}}"#).unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            lines.read_line(&mut line).unwrap();
            if line.contains(r#""id":2"#) {
                break;
            }
        }
        spawns.push(t.elapsed());
        shim_rss = f64::max(shim_rss, rss_mb(child.id()));
        drop(stdin);
        child.wait().unwrap();
    }
    let s50 = percentile(&mut spawns, 0.5);
    report.add(
        "exai stdio spawn -> tools/list answered, p50",
        format!("{:.1} ms", ms(s50)),
        "<= 50 ms",
    );
    report.add(
        "shim RSS (largest seen)",
        format!("{shim_rss:.1} MB"),
        "<= 10 MB",
    );

    let (more_scrapes, more_events) = scraper.stop();
    scrapes += more_scrapes;
    page_events += more_events;
    report.add(
        "/metrics scrapes during the run (one a second)",
        scrapes.to_string(),
        "-",
    );
    report.add(
        "live page feed events received during the run",
        page_events.to_string(),
        "-",
    );

    let _ = CallToolRequestParams::new("version");
    println!("\n{} figures; commands: scripts/bench", report.0.len());
}
