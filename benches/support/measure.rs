//! What the benchmarks share: percentiles, memory, the report, a direct call to the fake.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;

pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn rss_mb(pid: u32) -> f64 {
    crate::common::rss_bytes(pid).map_or(f64::NAN, |bytes| bytes as f64 / (1024.0 * 1024.0))
}

pub struct Report(pub Vec<(String, String, String)>);

impl Report {
    pub fn add(&mut self, what: &str, value: String, target: &str) {
        println!("{what:<58} {value:>22}   target {target}");
        self.0.push((what.into(), value, target.into()));
    }
}

/// One streaming chat completion straight to the fake provider, read to the end.
pub async fn direct_call(http: &reqwest::Client, url: &str, prompt: &str) {
    let body = json!({"model": "fake-fast", "stream": true, "messages": [{"role": "user", "content": prompt}]});
    let response = http
        .post(format!("{url}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        chunk.unwrap();
    }
}

/// p50 and p99 of a call straight to the fake and of the same call through exai, interleaved
/// one at a time (after 20 of each to warm up).
pub struct Interleaved {
    pub direct: (Duration, Duration),
    pub via: (Duration, Duration),
}

pub async fn interleaved(
    fake: &crate::common::Fake,
    client: &crate::common::Client,
    http: &reqwest::Client,
    calls: usize,
) -> Interleaved {
    use crate::common::{chat, text_of};
    for i in 0..20 {
        direct_call(http, &fake.url, &format!("warm {i}")).await;
        client
            .call_tool(chat(&format!("warm {i}"), "fake-fast"))
            .await
            .unwrap();
    }
    let (mut direct, mut via) = (Vec::new(), Vec::new());
    for i in 0..calls {
        let t = Instant::now();
        direct_call(http, &fake.url, &format!("q{i}")).await;
        direct.push(t.elapsed());
        let t = Instant::now();
        let r = client
            .call_tool(chat(&format!("q{i}"), "fake-fast"))
            .await
            .unwrap();
        via.push(t.elapsed());
        assert_eq!(text_of(&r), format!("echo: q{i}"));
    }
    Interleaved {
        direct: (percentile(&mut direct, 0.5), percentile(&mut direct, 0.99)),
        via: (percentile(&mut via, 0.5), percentile(&mut via, 0.99)),
    }
}
