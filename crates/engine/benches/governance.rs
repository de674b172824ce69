//! What governance adds to one request in process: identify the key, admit it (request and concurrency
//! meters), reserve an attempt on every level (key, team, customer, provider config, provider, model), and
//! settle both, against the same request path with governance off (no key, nothing metered). The goal is
//! at most 5 µs added per request (issue 9); figures in docs/benchmarks.md.

use std::collections::BTreeMap;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use secrecy::SecretString;
use switchyard_engine::config::parse_str;
use switchyard_engine::governance::meter::{Registry, Used};
use switchyard_engine::governance::{Estimate, Governance};

/// Six levels (key, team, customer, provider config, provider, model), 11 meters.
const CONFIG: &str = include_str!("governance.yaml");

fn bench(c: &mut Criterion) {
    let cfg = parse_str(CONFIG, &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"));
    let on = Governance::new(&cfg.governance, &Registry::default());
    let off = Governance::new(&Default::default(), &Registry::default());
    let key = Some(SecretString::from("station-7".to_string()));
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap_or_else(|e| panic!("{e}"));
    let estimate = Estimate { usd: 0.05, tokens: 5000 };
    let within = Duration::from_secs(1);

    c.bench_function("governance off: identify, admit, reserve, settle", |b| {
        b.iter(|| {
            rt.block_on(async {
                let who = off.identify(None).unwrap_or_else(|e| panic!("{e}"));
                let attempt = off
                    .reserve_attempt(who.as_deref(), "openai", "gpt-4o", estimate, within, &[])
                    .await
                    .unwrap_or_else(|e| panic!("{e:?}"))
                    .0;
                attempt.settle(Used { usd: 0.01, tokens: 1200, request: true });
            })
        })
    });
    c.bench_function("governance on: identify, admit, reserve, settle (6 levels, 11 meters)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let who = on.identify(key.as_ref()).unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("no principal"));
                let admission = on.admit(&who, within).await.unwrap_or_else(|e| panic!("{e}"));
                let attempt =
                    on.reserve_attempt(Some(&who), "openai", "gpt-4o", estimate, within, &[]).await.unwrap_or_else(|e| panic!("{e:?}")).0;
                attempt.settle(Used { usd: 0.01, tokens: 1200, request: true });
                admission.settle(Used { usd: 0.0, tokens: 0, request: true });
            })
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
