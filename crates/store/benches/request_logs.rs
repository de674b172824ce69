//! The request log at size: SQLite filled with 1,000,000 realistic records over 24 hours (four providers,
//! 20 keys in 5 teams, fallbacks after 5xx and 429, failures, streams), then the management API's questions
//! timed one after another: filtered pages, text searches, a deep page, and 24 h aggregates. Prints p50
//! and p95 per question. Run: `cargo bench -p switchyard-store --bench request_logs` (set
//! `SWITCHYARD_BENCH_ROWS` for another size). Figures in docs/benchmarks.md; the goal is p95 < 100 ms.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/reqlog.rs"]
mod gen;

use std::time::{Duration, Instant};

use switchyard_engine::reqlog::{Cursor, LogQuery, RequestLogStore, StatsQuery};
use switchyard_store::SqliteStore;

const DAY_MS: i64 = 86_400_000;
const RUNS: usize = 40;

fn params(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn time<F, Fut>(name: &str, mut f: F) -> Duration
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let mut times = Vec::with_capacity(RUNS);
    let mut found = 0;
    f(0).await; // warm the page cache once, as a running gateway's is
    for i in 0..RUNS {
        let t = Instant::now();
        found = f(i).await;
        times.push(t.elapsed());
    }
    times.sort();
    let (p50, p95) = (pct(&times, 0.50), pct(&times, 0.95));
    println!("{name:<72} {:>8.1} ms {:>8.1} ms   ({found} rows)", p50.as_secs_f64() * 1e3, p95.as_secs_f64() * 1e3);
    p95
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u64 = std::env::var("SWITCHYARD_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("switchyard.db")).await.unwrap();
    let t0: i64 = 1_767_225_600_000;
    let now = t0 + DAY_MS;

    let started = Instant::now();
    let mut written = 0u64;
    // Generated and written in slices, as the writer would over a day (in batches of 500).
    let slice = 50_000u64;
    while written < n {
        let count = slice.min(n - written);
        let span = DAY_MS * count as i64 / n as i64;
        let from = t0 + DAY_MS * written as i64 / n as i64;
        let mut records = gen::records(written ^ 0x5eed, count, from, span.max(1));
        for (i, r) in records.iter_mut().enumerate() {
            r.id = format!("req-{:08x}", written + i as u64);
        }
        for chunk in gen::rows(&records).chunks(500) {
            store.write_batch(chunk.to_vec()).await.unwrap();
        }
        written += count;
    }
    let fill = started.elapsed();
    let size = std::fs::metadata(dir.path().join("switchyard.db")).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(dir.path().join("switchyard.db-wal")).map(|m| m.len()).unwrap_or(0);
    println!(
        "filled {n} records over 24 h in {:.1} s ({:.0} records/s, batches of 500); database {:.0} MB",
        fill.as_secs_f64(),
        n as f64 / fill.as_secs_f64(),
        size as f64 / 1e6
    );
    println!("{:<72} {:>11} {:>11}", "question", "p50", "p95");

    let range = [("from", t0.to_string()), ("to", now.to_string())];
    let log = |extra: &[(&str, &str)]| {
        let mut list: Vec<(&str, &str)> = range.iter().map(|(a, b)| (*a, b.as_str())).collect();
        list.extend_from_slice(extra);
        LogQuery::from_params(&params(&list), now).unwrap()
    };
    let stats = |extra: &[(&str, &str)]| {
        let mut list: Vec<(&str, &str)> = range.iter().map(|(a, b)| (*a, b.as_str())).collect();
        list.extend_from_slice(extra);
        StatsQuery::from_params(&params(&list), now).unwrap()
    };
    let store = &store;
    let mut worst = Duration::ZERO;
    // Each run moves the window's end back a few minutes, so no two runs ask the same page.
    let shifted = |q: &LogQuery, i: usize| LogQuery { to_ms: q.to_ms - i as i64 * 300_000, ..q.clone() };
    for (name, q) in [
        ("page: newest 50", log(&[])),
        (
            "page: provider=openai status=2xx min_latency_ms=2000",
            log(&[("provider", "openai"), ("status", "2xx"), ("min_latency_ms", "2000")]),
        ),
        (
            "page: provider=anthropic status=5xx min_latency_ms=1000",
            log(&[("provider", "anthropic"), ("status", "5xx"), ("min_latency_ms", "1000")]),
        ),
        ("page: virtual_key=vk-07 status=429", log(&[("virtual_key", "vk-07"), ("status", "429")])),
        ("page: team=team-3 stream=true", log(&[("team", "team-3"), ("stream", "true")])),
        ("page: model=claude-sonnet-4 limit=200", log(&[("model", "claude-sonnet-4"), ("limit", "200")])),
        ("page: error=rate_limited", log(&[("error", "rate_limited")])),
        ("page: q=bad gateway", log(&[("q", "bad gateway")])),
        ("page: q=azure-key-1 provider=azure", log(&[("q", "azure-key-1"), ("provider", "azure")])),
        ("page: q=no-such-text (bounded scan, nothing found)", log(&[("q", "no-such-text")])),
    ] {
        worst = worst.max(
            time(name, |i| {
                let q = shifted(&q, i);
                async move { store.query(q).await.unwrap().records.len() }
            })
            .await,
        );
    }
    // A deep page: the cursor of a record half a day back.
    let deep = store.query(LogQuery { to_ms: t0 + DAY_MS / 2, limit: 1, ..log(&[]) }).await.unwrap();
    let cursor: Cursor = Cursor::of(&deep.records[0]);
    let q = LogQuery { cursor: Some(cursor), ..log(&[]) };
    worst = worst.max(
        time("page: after a cursor half a day back", |_| {
            let q = q.clone();
            async move { store.query(q).await.unwrap().records.len() }
        })
        .await,
    );
    let ids: Vec<String> = store.query(log(&[("limit", "200")])).await.unwrap().records.into_iter().map(|r| r.id).collect();
    worst = worst.max(
        time("get one record by id", |i| {
            let id = ids[i % ids.len()].clone();
            async move { usize::from(store.get(id).await.unwrap().is_some()) }
        })
        .await,
    );
    for (name, q) in [
        ("stats 24h: group_by=provider (15m buckets)", stats(&[("group_by", "provider")])),
        ("stats 24h: no grouping, 1m buckets", stats(&[("interval", "1m")])),
        ("stats 24h: group_by=provider,status_class 1h", stats(&[("group_by", "provider,status_class"), ("interval", "1h")])),
        ("stats 24h: group_by=virtual_key (15m buckets)", stats(&[("group_by", "virtual_key")])),
        ("stats 24h: group_by=team, customer=cust-1, 1h", stats(&[("group_by", "team"), ("customer", "cust-1"), ("interval", "1h")])),
    ] {
        let p95 = time(name, |_| {
            let q = q.clone();
            async move { store.stats(q).await.unwrap().totals.requests as usize }
        })
        .await;
        worst = worst.max(p95);
    }
    println!("worst p95: {:.1} ms", worst.as_secs_f64() * 1e3);
    let t = Instant::now();
    let p = store.prune(t0 + DAY_MS / 10, n, t0).await.unwrap();
    println!("prune of the oldest tenth by age: {} rows in {:.1} s", p.aged, t.elapsed().as_secs_f64());
    store.close().await;
}
