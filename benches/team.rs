//! The team benchmark: the two store backends side by side (what exai adds to a call on SQLite
//! and on Postgres), calls per second through `/mcp` on one and two replicas, and 10,000 calls
//! in flight on one Postgres replica.
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
#[path = "support/measure.rs"]
mod measure;

use std::time::{Duration, Instant};

use common::*;
use measure::*;

const SEQUENTIAL_CALLS: usize = 400;
/// Clients calling at once through `/mcp`, each in its own session, one call after another.
const HTTP_CLIENTS: usize = 64;
/// How long the throughput runs last.
const THROUGHPUT_RUN: Duration = Duration::from_secs(8);
const IN_FLIGHT: usize = 10_000;
const LIST_SAMPLES: usize = 200;

/// The daemon's settings for a benchmark: logging on, the provider queue lifted (this measures
/// exai, not the queue), and the store at `database` (SQLite in its home when `None`).
fn bench_daemon(fake: &Fake, database: Option<&str>) -> Daemon {
    let mut env = vec![("EXAI_LOG", "info"), ("EXAI_PROVIDER_CONCURRENCY", "20000")];
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

/// Calls per second through `/mcp` of `daemons` (their sessions spread evenly over them), each
/// client calling `fake-fast` (which answers at once) one call after another.
async fn calls_per_second(daemons: &[&Daemon]) -> f64 {
    let mut sessions = Vec::new();
    for i in 0..HTTP_CLIENTS {
        let daemon = daemons[i % daemons.len()];
        let url = format!("http://{}/mcp", daemon.addr);
        sessions.push(HttpSession::open(&url, &daemon.token()).await);
    }
    let started = Instant::now();
    let until = started + THROUGHPUT_RUN;
    let workers = sessions.into_iter().enumerate().map(|(w, mut session)| {
        tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < until {
                let prompt = format!("w{w} c{done}");
                let result = session
                    .call_tool(
                        "chat",
                        serde_json::json!({"prompt": prompt, "model": "fake-fast"}),
                    )
                    .await;
                assert_eq!(text_in(&result), format!("echo: {prompt}"));
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
    done as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let fake = Fake::start();
    let cluster = Cluster::start(true);
    let url = cluster.url();
    let mut report = Report(Vec::new());
    println!(
        "exai team benchmark (release build, logging on, fake provider and PostgreSQL on 127.0.0.1)\n"
    );

    // 1. Added latency on each backend, one call at a time.
    let mut added = Vec::new();
    for (name, database) in [("SQLite", None), ("Postgres", Some(url.as_str()))] {
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
    report.add(
        "added latency p50, Postgres / SQLite",
        format!(
            "{:.2}x ({:+.3} ms)",
            added[1] / added[0],
            added[1] - added[0]
        ),
        "-",
    );

    // 2. Calls per second through /mcp: one replica on each backend, then two on Postgres.
    let sqlite = bench_daemon(&fake, None);
    let one_sqlite = calls_per_second(&[&sqlite]).await;
    drop(sqlite);
    let (first, second) = (
        bench_daemon(&fake, Some(&url)),
        bench_daemon(&fake, Some(&url)),
    );
    let one_postgres = calls_per_second(&[&first]).await;
    let two_postgres = calls_per_second(&[&first, &second]).await;
    drop((first, second));
    let clients = format!("{HTTP_CLIENTS} clients, zero-delay model");
    report.add(
        &format!("calls/s through /mcp, one SQLite replica ({clients})"),
        format!("{one_sqlite:.0}"),
        ">= 10,000",
    );
    report.add(
        &format!("calls/s through /mcp, one Postgres replica ({clients})"),
        format!(
            "{one_postgres:.0} ({:.2}x SQLite)",
            one_postgres / one_sqlite
        ),
        ">= 3,000",
    );
    report.add(
        "calls/s through /mcp, two Postgres replicas on this machine",
        format!(
            "{two_postgres:.0} ({:.2}x one)",
            two_postgres / one_postgres
        ),
        "-",
    );

    // 3. 10,000 calls in flight on one Postgres replica: memory and tools/list meanwhile.
    let daemon = bench_daemon(&fake, Some(&url));
    let (client, _) = stdio_client(&daemon.stdio_env(), &[]).await;
    let peer = client.peer().clone();
    let started = Instant::now();
    let in_flight: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            let peer = peer.clone();
            tokio::spawn(async move {
                peer.call_tool(chat(&format!("h{i}"), "fake-delay-120000"))
                    .await
            })
        })
        .collect();
    wait_until_async("10,000 calls in flight", Duration::from_secs(120), || {
        (daemon.healthz()["calls_in_flight"].as_u64()? >= IN_FLIGHT as u64).then_some(())
    })
    .await;
    report.add(
        "10,000 calls opened (records written) on one Postgres replica",
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
        "tools/list with 10,000 calls in flight, p50 / p99",
        format!("{:.3} / {:.3} ms", ms(l50), ms(l99)),
        "p99 <= 10 ms",
    );
    report.add(
        "daemon RSS, 10,000 calls in flight (before / after the samples)",
        format!("{rss_calls_only:.1} / {:.1} MB", rss_mb(daemon.pid())),
        "<= 256 MB",
    );
    for call in in_flight {
        call.abort();
    }
    client.cancel().await.unwrap();
    println!("\n{} figures; commands: scripts/bench", report.0.len());
}
