//! What counting in Redis adds to a request: the same governance stages as the engine's `governance`
//! bench (identify, admit, reserve an attempt on six levels, settle both), with the meters in process and
//! then in a throwaway Redis on loopback, in the same run. Prints the added latency (p50, p99) and the
//! round trips to Redis per request, counted by a wrapper around the client. Run:
//! `cargo bench -p switchyard-store --bench shared_counters` (needs `redis-server` on the PATH). Figures in
//! docs/benchmarks.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/redis_server.rs"]
mod redis_server;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use switchyard_engine::config::{parse_str, SharedCountersConfig};
use switchyard_engine::governance::meter::{Hold, Registry, Used};
use switchyard_engine::governance::shared::{CounterFuture, Outcome, Settlement, Shared, SharedCounters, Want};
use switchyard_engine::governance::{Estimate, Governance};
use switchyard_store::RedisCounters;

/// The engine bench's configuration: the same six levels and 11 meters.
const CONFIG: &str = include_str!("../../engine/benches/governance.yaml");

/// Counts the calls that reach Redis.
struct Counting {
    inner: RedisCounters,
    reserves: AtomicU64,
    settles: AtomicU64,
}

impl SharedCounters for Counting {
    fn reserve<'a>(&'a self, id: &'a str, wants: &'a [Want], now_ms: i64, lease_until_ms: i64) -> CounterFuture<'a, Outcome> {
        self.reserves.fetch_add(1, Ordering::Relaxed);
        self.inner.reserve(id, wants, now_ms, lease_until_ms)
    }
    fn settle<'a>(&'a self, batch: &'a [Settlement], now_ms: i64) -> CounterFuture<'a, ()> {
        self.settles.fetch_add(1, Ordering::Relaxed);
        self.inner.settle(batch, now_ms)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

async fn one(gov: &Governance, key: &Option<SecretString>) {
    let within = Duration::from_secs(1);
    let who = gov.identify(key.as_ref()).unwrap().unwrap();
    // As the gateway does: with the counters in Redis the admission goes with the first attempt.
    let (admission, deferred) =
        if gov.defers_admission() { (Hold::default(), gov.admission(&who)) } else { (gov.admit(&who, within).await.unwrap(), Vec::new()) };
    let (attempt, admitted) =
        gov.reserve_attempt(Some(&who), "openai", "gpt-4o", Estimate { usd: 0.05, tokens: 5000 }, within, &deferred).await.unwrap();
    attempt.settle(Used { usd: 0.01, tokens: 1200, request: true });
    admitted.unwrap_or(admission).settle(Used { usd: 0.0, tokens: 0, request: true });
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

async fn measure(name: &str, gov: &Governance, key: &Option<SecretString>, n: usize) -> (Duration, Duration) {
    for _ in 0..n / 10 {
        one(gov, key).await;
    }
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        one(gov, key).await;
        times.push(t.elapsed());
    }
    times.sort();
    let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
    println!("{name}: p50 {p50:?}, p99 {p99:?} per request (identify, admit, reserve, settle; {n} sequential)");
    (p50, p99)
}

fn main() {
    let Some(redis) = redis_server::server() else { return };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    rt.block_on(async {
        let cfg = parse_str(CONFIG, &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"));
        let key = Some(SecretString::from("station-7".to_string()));
        let n = 20_000;
        let local = Governance::new(&cfg.governance, &Registry::default());
        let (lp50, lp99) = measure("in process", &local, &key, n).await;

        let counting = Arc::new(Counting {
            inner: RedisCounters::new(&redis.url(), "bench", Duration::from_secs(1)).unwrap(),
            reserves: AtomicU64::new(0),
            settles: AtomicU64::new(0),
        });
        let (shared, _task) = Shared::start(counting.clone(), &SharedCountersConfig::with_url(&redis.url()));
        let in_redis = Governance::new(&cfg.governance, &Registry::with_shared(Arc::clone(&shared)));
        let (before_r, before_s) = (counting.reserves.load(Ordering::Relaxed), counting.settles.load(Ordering::Relaxed));
        let (rp50, rp99) = measure("in Redis", &in_redis, &key, n).await;
        assert!(shared.drain(Duration::from_secs(30)).await);
        let reserves = counting.reserves.load(Ordering::Relaxed) - before_r;
        let settles = counting.settles.load(Ordering::Relaxed) - before_s;
        // The warm-up's requests are counted too: n + n/10 requests in all.
        let requests = (n + n / 10) as f64;
        println!(
            "added by Redis: p50 {:?}, p99 {:?}; round trips per request: {:.2} to reserve, {:.2} to settle (batched)",
            rp50.saturating_sub(lp50),
            rp99.saturating_sub(lp99),
            reserves as f64 / requests,
            settles as f64 / requests
        );

        // Many requests at once: settlements share calls.
        let gov = Arc::new(in_redis);
        let (r0, s0) = (counting.reserves.load(Ordering::Relaxed), counting.settles.load(Ordering::Relaxed));
        let t = Instant::now();
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (gov, key) = (Arc::clone(&gov), key.clone());
                tokio::spawn(async move {
                    for _ in 0..200 {
                        one(&gov, &key).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let elapsed = t.elapsed();
        assert!(shared.drain(Duration::from_secs(30)).await);
        let total = 64.0 * 200.0;
        println!(
            "64 at once: {:.0} requests/s; round trips per request: {:.2} to reserve, {:.3} to settle",
            total / elapsed.as_secs_f64(),
            (counting.reserves.load(Ordering::Relaxed) - r0) as f64 / total,
            (counting.settles.load(Ordering::Relaxed) - s0) as f64 / total
        );
    });
}
