//! The team benchmark: the two store backends side by side (what exai adds to a call on SQLite
//! and on Postgres), calls per second through `/mcp` on one and two replicas (and pings, the
//! floor under every call), and 10,000 calls in flight on one Postgres replica.
//!
//! Postgres runs as a team would run it (a cluster of this run's own, PostgreSQL's fsync and
//! commit defaults kept), on 127.0.0.1 beside the fake provider. Run with `scripts/bench`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::disallowed_methods
)]

#[path = "../tests/it/common.rs"]
mod common;
#[path = "support/lean_client.rs"]
mod lean_client;
#[path = "support/measure.rs"]
mod measure;

use std::time::{Duration, Instant};

use common::*;
use lean_client::LeanSession;
use measure::*;

/// The clients and the fake provider share the machine's two cores with the daemon they
/// measure: on the C library's malloc a fifth of their CPU went to allocating.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SEQUENTIAL_CALLS: usize = 400;
/// Clients calling at once through `/mcp`, each in its own session, one call after another.
const HTTP_CLIENTS: usize = 64;
/// How long the throughput runs last.
const THROUGHPUT_RUN: Duration = Duration::from_secs(8);
const IN_FLIGHT: usize = 10_000;
const LIST_SAMPLES: usize = 200;

/// Which parts run: all, or those named on the command line (`latency`, `throughput`,
/// `sqlite-throughput`, `pg-throughput`, `inflight`), e.g. `cargo bench --bench team -- throughput` while working on one figure.
fn runs(part: &str) -> bool {
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    named.is_empty() || named.iter().any(|n| n == part)
}

/// The bench's fake provider (serving TLS too when `tls` says so), on one worker thread.
fn lean_fake(tls: Option<exai_fake_provider::Tls>) -> Fake {
    Fake::start_with(exai_fake_provider::Options {
        tls,
        worker_threads: Some(1),
        ..Default::default()
    })
}

/// The daemon's settings for a benchmark: logging as by default (exai's events at info, to its
/// JSON log), the provider queue lifted (this measures
/// exai, not the queue), HTTP/2 to the provider (as to every real provider, which offer it over
/// TLS; the fake speaks it in the clear, so it is asked for), and the store at `database`
/// (SQLite in its home when `None`).
fn bench_daemon(fake: &Fake, database: Option<&str>) -> Daemon {
    let mut env = vec![
        ("EXAI_PROVIDER_CONCURRENCY", "20000"),
        ("EXAI_PROVIDER_HTTP2", "always"),
    ];
    if let Some(url) = database {
        env.push(("EXAI_DATABASE_URL", url));
    }
    Daemon::start(fake, &env)
}

/// What exai adds to one call at a time on `daemon` (via, then direct, p50 and p99).
async fn added_latency(fake: &Fake, daemon: &Daemon) -> Interleaved {
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let latencies = interleaved(fake, &client, &http, SEQUENTIAL_CALLS).await;
    client.cancel().await.unwrap();
    latencies
}

/// CPU time (user + system) process `pid` has used so far.
fn cpu_time(pid: u32) -> Duration {
    used(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap())
}

/// CPU time (user + system) the threads of process `pid` named `exai-store` (the store's writer)
/// have used so far: a change to how the store writes shows in its share of the daemon's CPU,
/// which moves far less than calls/s on a noisy machine.
fn store_writer_cpu_time(pid: u32) -> Duration {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    (threads.flatten())
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "exai-store")
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .map(|stat| used(&stat))
        .sum()
}

/// The CPU time in a `/proc/…/stat` line.
fn used(stat: &str) -> Duration {
    // The fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // Clock ticks are 1/100 s on Linux.
    Duration::from_millis(ticks * 10)
}

/// The value of `metric` (a sample's whole name) in `daemon`'s `/metrics`.
fn metric(daemon: &Daemon, metric: &str) -> Option<f64> {
    let bearer = format!("Bearer {}", daemon.token());
    let url = format!("http://{}/metrics", daemon.addr);
    let (_, metrics) = http_request("GET", &url, &[("Authorization", bearer.as_str())], "");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(metric)?.strip_prefix(' '))?
        .trim()
        .parse()
        .ok()
}

/// Writes waiting for `daemon`'s store.
fn store_queue_depth(daemon: &Daemon) -> Option<u64> {
    metric(daemon, "exai_store_write_queue_depth").map(|depth| depth as u64)
}

/// Writes and commits `daemon`'s store has made so far.
fn store_commits(daemon: &Daemon) -> (f64, f64) {
    let writes = metric(daemon, "exai_store_commit_writes_sum").unwrap_or(0.0);
    let commits = metric(daemon, "exai_store_commit_writes_count").unwrap_or(0.0);
    (writes, commits)
}

/// What a throughput run measured: calls per second, and the CPU the daemons and this process
/// (the clients and the fake provider) spent per call: on 2 cores, calls/s can be at most
/// 2 s over their sum.
struct Throughput {
    calls_per_second: f64,
    daemon_cpu_per_call: Duration,
    bench_cpu_per_call: Duration,
    /// How many writes the daemons' stores committed together, on average.
    writes_per_commit: f64,
    /// The share of the daemons' CPU their stores' writer threads used.
    store_writer_share: f64,
}

impl Throughput {
    /// Its two figures for one replica on `backend`, `versus` after the calls per second.
    fn report(
        &self,
        report: &mut Report,
        backend: &str,
        clients: &str,
        versus: &str,
        target: &str,
    ) {
        report.add(
            &format!("calls/s through /mcp, one {backend} replica ({clients})"),
            format!("{:.0}{versus}", self.calls_per_second),
            target,
        );
        report.add(
            &format!("daemon CPU per call, one {backend} replica"),
            format!(
                "{:.0} µs ({:.1} writes a commit, {:.1}% of it on the store's writer thread)",
                self.daemon_cpu_per_call.as_secs_f64() * 1e6,
                self.writes_per_commit,
                self.store_writer_share * 100.0
            ),
            "-",
        );
        report.add(
            &format!("clients' and fake provider's CPU per call (this process), {backend}"),
            format!("{:.0} µs", self.bench_cpu_per_call.as_secs_f64() * 1e6),
            "-",
        );
    }
}

/// What each client of a throughput run sends, one after another.
#[derive(Clone, Copy)]
enum Work {
    /// `chat` on `fake-fast`, which answers at once.
    Chat,
    /// `ping`: what MCP over HTTP costs before any call (rmcp, hyper, axum, the token check).
    Ping,
}

/// Calls per second through `/mcp` of `daemons` (their sessions spread evenly over them), each
/// client sending `work` one request after another.
async fn calls_per_second(daemons: &[&Daemon], work: Work) -> Throughput {
    let mut sessions = Vec::new();
    for i in 0..HTTP_CLIENTS {
        let daemon = daemons[i % daemons.len()];
        let url = format!("http://{}/mcp", daemon.addr);
        // Opened as the MCP SDKs open one (initialize, initialized); its requests then go over
        // a lean connection, so the clients take as little of the machine as they can.
        let opened = HttpSession::open(&url, &daemon.token()).await;
        let session = LeanSession::connect(
            &daemon.addr,
            &daemon.token(),
            &opened.id,
            HTTP_PROTOCOL_VERSION,
        )
        .await;
        sessions.push(session);
    }
    let commits_before: Vec<(f64, f64)> = daemons.iter().map(|d| store_commits(d)).collect();
    let cpu_before: Vec<Duration> = daemons.iter().map(|d| cpu_time(d.pid())).collect();
    let writer_before: Vec<Duration> = (daemons.iter())
        .map(|d| store_writer_cpu_time(d.pid()))
        .collect();
    let own_cpu_before = cpu_time(std::process::id());
    let started = Instant::now();
    let until = started + THROUGHPUT_RUN;
    let workers = sessions.into_iter().enumerate().map(|(w, mut session)| {
        tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < until {
                match work {
                    Work::Ping => {
                        let reply = session.request("ping", serde_json::json!({})).await;
                        assert!(reply.get("result").is_some(), "{reply}");
                    }
                    Work::Chat => {
                        let prompt = format!("w{w} c{done}");
                        let arguments = serde_json::json!({"prompt": prompt, "model": "fake-fast"});
                        let result = session.call_tool("chat", arguments).await;
                        assert_eq!(text_in(&result), format!("echo: {prompt}"));
                    }
                }
                done += 1;
            }
            done
        })
    });
    let done: u64 = futures::future::join_all(workers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .sum();
    let elapsed = started.elapsed();
    let cpu: Duration = daemons
        .iter()
        .zip(cpu_before)
        .map(|(d, before)| cpu_time(d.pid()) - before)
        .sum();
    let writer: Duration = daemons
        .iter()
        .zip(writer_before)
        .map(|(d, before)| store_writer_cpu_time(d.pid()).saturating_sub(before))
        .sum();
    let own_cpu = cpu_time(std::process::id()) - own_cpu_before;
    let (writes, commits) = daemons.iter().zip(commits_before).fold(
        (0.0, 0.0),
        |(writes, commits), (d, (writes_before, commits_before))| {
            let (w, c) = store_commits(d);
            (writes + w - writes_before, commits + c - commits_before)
        },
    );
    Throughput {
        writes_per_commit: writes / commits.max(1.0),
        store_writer_share: writer.as_secs_f64() / cpu.as_secs_f64().max(f64::MIN_POSITIVE),
        calls_per_second: done as f64 / elapsed.as_secs_f64(),
        daemon_cpu_per_call: cpu / done as u32,
        bench_cpu_per_call: own_cpu / done as u32,
    }
}

/// One worker thread for the clients, and one for the fake provider (`lean_fake`): on two
/// cores, each more thread of the bench's is more switching between threads on the cores the
/// daemon it measures needs. With two apiece, the bench's CPU a call was a fifth more, and the
/// daemon's throughput 5% less.
#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    // The test suite's switch would put every daemon on that PostgreSQL, the "SQLite" ones too.
    assert!(
        std::env::var_os("EXAI_TEST_DATABASE_URL").is_none(),
        "unset EXAI_TEST_DATABASE_URL: this bench starts a PostgreSQL of its own, and the variable \
         would put its SQLite figures on PostgreSQL"
    );
    let fake = lean_fake(None);
    let cluster = Cluster::start(true);
    let url = cluster.url();
    let mut report = Report(Vec::new());
    println!(
        "exai team benchmark (release build, logging on, fake provider and PostgreSQL on 127.0.0.1)\n"
    );

    // 1. Added latency on each backend, one call at a time.
    let mut added = Vec::new();
    for (name, database) in [("SQLite", None), ("Postgres", Some(url.as_str()))] {
        if !runs("latency") {
            break;
        }
        let daemon = bench_daemon(&fake, database);
        let latencies = added_latency(&fake, &daemon).await;
        let ((d50, d99), (v50, v99)) = (latencies.direct, latencies.via);
        report.add(
            &format!("{name}: direct / via exai p50"),
            format!("{:.3} / {:.3} ms", ms(d50), ms(v50)),
            "-",
        );
        report.add(
            &format!("{name}: added latency p50 / p99"),
            format!("{:.3} / {:.3} ms", ms(v50) - ms(d50), ms(v99) - ms(d99)),
            "-",
        );
        added.push(ms(v50) - ms(d50));
    }
    if added.len() == 2 {
        report.add(
            "added latency p50, Postgres / SQLite",
            format!(
                "{:.2}x ({:+.3} ms)",
                added[1] / added[0],
                added[1] - added[0]
            ),
            "-",
        );
    }

    // 2. Calls per second through /mcp: one replica on each backend, then two on Postgres.
    let clients = format!("{HTTP_CLIENTS} clients, zero-delay model");
    let mut one_sqlite = None;
    if runs("throughput") || runs("sqlite-throughput") {
        let sqlite = bench_daemon(&fake, None);
        let run = calls_per_second(&[&sqlite], Work::Chat).await;
        // The floor under every call: the same clients pinging, so the rest of a call's cost
        // (its record, the provider's round trip, the tool) is what the two figures differ by.
        // The chat run's last writes are committed first, not counted as the pings'.
        wait_until_async("the store's queue drained", Duration::from_secs(30), || {
            (store_queue_depth(&sqlite)? == 0).then_some(())
        })
        .await;
        let pings = calls_per_second(&[&sqlite], Work::Ping).await;
        drop(sqlite);
        run.report(&mut report, "SQLite", &clients, "", ">= 10,000");
        one_sqlite = Some(run.calls_per_second);
        report.add(
            "pings/s through /mcp, same replica (MCP over HTTP alone)",
            format!(
                "{:.0} ({:.0} µs daemon CPU, {:.0} µs this process's, a ping)",
                pings.calls_per_second,
                pings.daemon_cpu_per_call.as_secs_f64() * 1e6,
                pings.bench_cpu_per_call.as_secs_f64() * 1e6
            ),
            "-",
        );
    }
    if runs("throughput") || runs("pg-throughput") {
        let (first, second) = (
            bench_daemon(&fake, Some(&url)),
            bench_daemon(&fake, Some(&url)),
        );
        let one = calls_per_second(&[&first], Work::Chat).await;
        let two = calls_per_second(&[&first, &second], Work::Chat).await;
        drop((first, second));
        let versus = one_sqlite
            .map(|sqlite| format!(" ({:.2}x SQLite)", one.calls_per_second / sqlite))
            .unwrap_or_default();
        one.report(&mut report, "Postgres", &clients, &versus, ">= 3,000");
        report.add(
            "calls/s through /mcp, two Postgres replicas on this machine",
            format!(
                "{:.0} ({:.2}x one)",
                two.calls_per_second,
                two.calls_per_second / one.calls_per_second
            ),
            "-",
        );
    }

    // 3. 10,000 calls in flight on one Postgres replica: memory and tools/list meanwhile, over
    // h2c and over TLS (as to a real provider: HTTP/2 chosen by ALPN, the default `auto`).
    if runs("inflight") {
        let daemon = bench_daemon(&fake, Some(&url));
        in_flight(&mut report, &fake, &daemon, "").await;
        drop(daemon);
        let tls = lean_fake(Some(exai_fake_provider::Tls::Http2AndHttp1));
        let ca = trust_test_ca();
        let tls_url = format!("{}/v1", tls.tls_url());
        let daemon = Daemon::start(
            &tls,
            &[
                ("EXAI_PROVIDER_CONCURRENCY", "20000"),
                ("EXAI_DATABASE_URL", &url),
                ("CUSTOM_API_URL", &tls_url),
                ("EXAI_PROVIDER_CA_FILE", ca.to_str().unwrap()),
            ],
        );
        in_flight(&mut report, &tls, &daemon, " over TLS").await;
    }
    println!("\n{} figures; commands: scripts/bench", report.0.len());
}

/// 10,000 calls in flight on `daemon` (answered by `fake` after two minutes): how long they took
/// to open and settle, `tools/list` meanwhile, and the daemon's RSS; `over` names the transport.
async fn in_flight(report: &mut Report, fake: &Fake, daemon: &Daemon, over: &str) {
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let started = Instant::now();
    let in_flight = spawn_chats(&client, IN_FLIGHT, "h", "fake-delay-120000");
    wait_until_async("10,000 calls in flight", Duration::from_secs(120), || {
        (daemon.healthz()["calls_in_flight"].as_u64()? >= IN_FLIGHT as u64).then_some(())
    })
    .await;
    report.add(
        &format!("10,000 calls opened on one Postgres replica{over}"),
        format!("{:.2} s", started.elapsed().as_secs_f64()),
        "-",
    );
    // Steady state: every call waiting at the provider, none still being opened.
    wait_until_async(
        "10,000 calls at the provider",
        Duration::from_secs(120),
        || (fake.stats()["in_flight"].as_u64()? >= IN_FLIGHT as u64).then_some(()),
    )
    .await;
    // ... and the records of their opening written: the store's queue drained to what the
    // calls' heartbeats add, so the samples measure serving beside 10,000 waiting calls.
    wait_until_async(
        "the store's queue drained",
        Duration::from_secs(120),
        || (store_queue_depth(daemon)? < 100).then_some(()),
    )
    .await;
    report.add(
        "... and their records written (the store's queue drained)",
        format!("{:.2} s", started.elapsed().as_secs_f64()),
        "-",
    );
    // ... and the daemon quiet (under a fifth of a core): the calls' progress notifications
    // delivered and their first heartbeats past, which answers share the stream with.
    wait_until_async("the daemon quiet", Duration::from_secs(60), || {
        let before = cpu_time(daemon.pid());
        std::thread::sleep(Duration::from_millis(250));
        (cpu_time(daemon.pid()) - before < Duration::from_millis(50)).then_some(())
    })
    .await;
    report.add(
        "... and the daemon quiet",
        format!("{:.2} s", started.elapsed().as_secs_f64()),
        "-",
    );
    let rss_calls_only = rss_mb(daemon.pid());
    let mut lists = Vec::new();
    for _ in 0..LIST_SAMPLES {
        let t = Instant::now();
        let tools = client.list_all_tools().await.unwrap();
        lists.push(t.elapsed());
        assert!(!tools.is_empty());
    }
    let (l50, l99) = (percentile(&mut lists, 0.5), percentile(&mut lists, 0.99));
    report.add(
        &format!("tools/list with 10,000 calls in flight{over}, p50 / p99"),
        format!("{:.3} / {:.3} ms", ms(l50), ms(l99)),
        "p99 <= 10 ms",
    );
    report.add(
        &format!("daemon RSS, 10,000 calls in flight{over} (before / after the samples)"),
        format!("{rss_calls_only:.1} / {:.1} MB", rss_mb(daemon.pid())),
        "<= 256 MB",
    );
    for call in in_flight {
        call.abort();
    }
    client.cancel().await.unwrap();
}
