//! The request log's suite, written once and run against each database, with the in-memory ring as the
//! reference: every store must page, filter and aggregate exactly as it does. Also the generator of
//! realistic records, shared with the `request_logs` benchmark.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use switchyard_engine::observe::{AttemptRecord, Caller, RequestRecord};
use switchyard_engine::reqlog::{LogQuery, LogRow, MemoryLog, RequestLogStore, StatsQuery, MAX_SCANNED};

/// Providers with their models, tags and share of the traffic (percent).
const PROVIDERS: [(&str, &[&str], &str, u32); 4] = [
    ("openai", &["gpt-4o-mini", "gpt-4o"], "cloud", 45),
    ("anthropic", &["claude-3-5-haiku", "claude-sonnet-4"], "cloud", 30),
    ("vllm-local", &["llama-3.1-8b"], "on-prem", 15),
    ("azure", &["gpt-4o-mini"], "cloud,eu", 10),
];

/// One realistic record number `i` at `at_ms`: most succeed at once, some after a fallback from a 5xx
/// or a 429, a few fail; a third stream; 20 keys in 5 teams of 2 customers, some callers anonymous.
pub fn record(rng: &mut fastrand::Rng, i: u64, at_ms: i64) -> RequestRecord {
    let pick = rng.u32(0..100);
    let mut acc = 0;
    let (provider, models, tags, _) = PROVIDERS
        .iter()
        .find(|(_, _, _, share)| {
            acc += share;
            pick < acc
        })
        .copied()
        .unwrap_or(PROVIDERS[0]);
    let model = models[rng.usize(0..models.len())];
    let key = rng.u32(0..22);
    let caller = (key < 20).then(|| Caller {
        virtual_key_id: format!("vk-{key:02}"),
        virtual_key: format!("key {key:02}"),
        team: Some(format!("team-{}", key % 5)),
        customer: Some(format!("cust-{}", key % 2)),
        restricted: key % 7 == 0,
        log_bodies: false,
    });
    let roll = rng.u32(0..1000);
    let latency = (rng.f64() * rng.f64() * 4000.0) as u64 + 80;
    let attempt =
        |provider: &str, model: &str, status: u16, outcome: &str, start_ms: u64, latency_ms: u64, message: Option<&str>| AttemptRecord {
            target: format!("{provider}/{model}"),
            provider: provider.into(),
            kind: if provider == "anthropic" { "anthropic".into() } else { "openai".into() },
            model: model.into(),
            key: Some(format!("{provider}-key-{}", start_ms % 2)),
            status: Some(status),
            outcome: outcome.into(),
            start_ms,
            latency_ms,
            // Not kept in the log (serde skips them): zero, so that a record reads back equal.
            start_us: 0,
            latency_us: 0,
            hedged: false,
            skipped: false,
            message: message.map(Into::into),
            span_id: format!("{:016x}", rng_span(i, start_ms)),
        };
    let mut r = RequestRecord {
        id: format!("req-{i:08x}-{:04x}", rng.u16(..)),
        at_ms,
        endpoint: "chat".into(),
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        model: Some(model.into()),
        caller,
        stream: rng.u32(0..3) == 0,
        trace_id: format!("{:032x}", u128::from(i) * 7919 + 1),
        span_id: format!("{:016x}", i * 31 + 7),
        ..RequestRecord::default()
    };
    let served = |r: &mut RequestRecord, provider: &str, model: &str, tags: &str, fallback: usize| {
        r.provider = Some(provider.into());
        r.served_model = Some(model.into());
        r.key = Some(format!("{provider}-key-0"));
        r.provider_tags = tags.split(',').map(str::to_string).collect();
        r.fallback_index = Some(fallback);
        r.status = Some(200);
        r.tokens_in = Some(20 + i % 900);
        r.tokens_out = Some(5 + i % 300);
        r.cost_nano_usd = Some((i % 997) * 1_000);
        if r.stream {
            r.ttft_ms = Some(latency / 3);
            r.ended = Some("completed".into());
        }
    };
    if roll < 900 {
        r.attempts.push(attempt(provider, model, 200, "success", 1, latency, None));
        served(&mut r, provider, model, tags, 0);
    } else if roll < 960 {
        // A 5xx or 429 from the first target, then the local fallback answers.
        let (status, outcome, msg) = if roll < 935 {
            (502, "transient", "upstream returned 502: bad gateway")
        } else {
            (429, "rate_limited", "rate limit reached for requests")
        };
        r.attempts.push(attempt(provider, model, status, outcome, 1, 40 + latency / 10, Some(msg)));
        r.attempts.push(attempt("vllm-local", "llama-3.1-8b", 200, "success", 50 + latency / 10, latency, None));
        served(&mut r, "vllm-local", "llama-3.1-8b", "on-prem", 1);
        r.latency_ms = latency + latency / 10;
    } else if roll < 990 {
        r.attempts.push(attempt(provider, model, 503, "transient", 1, latency, Some("service unavailable: overloaded")));
        r.status = Some(503);
        r.error = Some("upstream_error".into());
        r.error_class = Some("transient".into());
    } else {
        // Refused before anything was sent: a budget, a bad request.
        r.status = Some(if roll < 995 { 402 } else { 400 });
        r.error = Some(if roll < 995 { "budget_exceeded".into() } else { "invalid_request".into() });
    }
    if r.latency_ms == 0 {
        r.latency_ms = if r.attempts.is_empty() { 1 + latency / 100 } else { latency + 2 };
    }
    r.upstream_ms = r.attempts.iter().map(|a| a.latency_ms).sum();
    r
}

fn rng_span(i: u64, start: u64) -> u64 {
    i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ start
}

/// `n` records spread over `[from_ms, from_ms + span_ms)`, in the order they would finish.
pub fn records(seed: u64, n: u64, from_ms: i64, span_ms: i64) -> Vec<RequestRecord> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out: Vec<RequestRecord> = (0..n)
        .map(|i| {
            let at = (from_ms + (i as i64 * span_ms) / n as i64 + rng.i64(0..1000)).min(from_ms + span_ms - 1);
            record(&mut rng, i, at)
        })
        .collect();
    // Requests finish out of arrival order (streams last longer): writes are not in at_ms order.
    for i in (1..out.len()).step_by(7) {
        out.swap(i - 1, i);
    }
    out
}

pub fn rows(records: &[RequestRecord]) -> Vec<LogRow> {
    records.iter().cloned().map(|r| LogRow::new(Arc::new(r))).collect()
}

/// Which records a query should find, written plainly.
type Want = Box<dyn Fn(&RequestRecord) -> bool>;

fn params(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

/// Every page of `q`, followed to the end: the ids in order, and how many pages it took.
pub async fn all_pages(store: &dyn RequestLogStore, mut q: LogQuery) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut pages = 0;
    loop {
        let page = store.query(q.clone()).await.unwrap();
        pages += 1;
        assert!(page.records.len() <= q.limit);
        assert!(page.records.iter().all(|r| r.request_body.is_none() && r.response_body.is_none()), "a page carries no bodies");
        ids.extend(page.records.iter().map(|r| r.id.clone()));
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => return (ids, pages),
        }
        assert!(pages < 10_000, "paging does not end");
    }
}

/// The log's suite: what is written is read back whole, filtered and paged as the reference does, and
/// aggregated to the same figures.
pub async fn suite(store: &dyn RequestLogStore) {
    const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let mut all = records(7, 900, T0, 3 * 3_600_000);
    // Bodies on a few.
    for r in all.iter_mut().step_by(50) {
        r.request_body = Some(format!("{{\"model\":\"m\",\"messages\":[{{\"role\":\"user\",\"content\":\"hello {}\"}}]}}", r.id));
        r.response_body = Some("{\"choices\":[]}".into());
    }
    let reference = MemoryLog::new(100_000);
    for chunk in rows(&all).chunks(128) {
        store.write_batch(chunk.to_vec()).await.unwrap();
        reference.write_batch(chunk.to_vec()).await.unwrap();
    }
    // A batch written again (its answer was lost) adds nothing, to the rows or to the stats.
    store.write_batch(rows(&all[..64])).await.unwrap();

    // Read back whole, bodies included.
    for r in all.iter().step_by(37).chain(all.iter().step_by(50)) {
        assert_eq!(store.get(r.id.clone()).await.unwrap().as_ref(), Some(r), "{}", r.id);
    }
    assert_eq!(store.get("no-such-request".into()).await.unwrap(), None);

    let now = T0 + 3 * 3_600_000 + 1;
    let range = [("from", T0.to_string()), ("to", now.to_string())];
    let with_range = |extra: &[(&str, &str)]| -> LogQuery {
        let mut list: Vec<(&str, &str)> = range.iter().map(|(a, b)| (*a, b.as_str())).collect();
        list.extend_from_slice(extra);
        LogQuery::from_params(&params(&list), now).unwrap()
    };
    let queries: Vec<(Vec<(&str, &str)>, Want)> = vec![
        (vec![], Box::new(|_| true)),
        (vec![("limit", "7")], Box::new(|_| true)),
        (
            vec![("provider", "openai"), ("status", "2xx"), ("min_latency_ms", "1500")],
            Box::new(|r| r.provider.as_deref() == Some("openai") && r.status == Some(200) && r.latency_ms >= 1500),
        ),
        (vec![("status", "5xx"), ("limit", "10")], Box::new(|r| r.status.is_some_and(|s| s >= 500))),
        (vec![("status", "429")], Box::new(|r| r.status == Some(429))),
        (vec![("virtual_key", "vk-03")], Box::new(|r| r.caller.as_ref().is_some_and(|c| c.virtual_key_id == "vk-03"))),
        (
            vec![("team", "team-2"), ("stream", "true")],
            Box::new(|r| r.stream && r.caller.as_ref().and_then(|c| c.team.as_deref()) == Some("team-2")),
        ),
        (
            vec![("customer", "cust-1"), ("limit", "200")],
            Box::new(|r| r.caller.as_ref().and_then(|c| c.customer.as_deref()) == Some("cust-1")),
        ),
        (
            vec![("model", "llama-3.1-8b")],
            Box::new(|r| r.served_model.as_deref() == Some("llama-3.1-8b") || r.model.as_deref() == Some("llama-3.1-8b")),
        ),
        (vec![("error", "rate_limited")], Box::new(|r| r.attempts.iter().any(|a| a.outcome == "rate_limited"))),
        (vec![("error", "budget_exceeded")], Box::new(|r| r.error.as_deref() == Some("budget_exceeded"))),
        (
            vec![("q", "Bad Gateway"), ("limit", "5")],
            Box::new(|r| r.attempts.iter().any(|a| a.message.as_deref().is_some_and(|m| m.contains("bad gateway")))),
        ),
        (vec![("q", "anthropic-key-1")], Box::new(|r| r.attempts.iter().any(|a| a.key.as_deref() == Some("anthropic-key-1")))),
        (
            vec![("q", "rate_l")],
            Box::new(|r| {
                r.attempts.iter().any(|a| a.outcome == "rate_limited" || a.message.as_deref().is_some_and(|m| m.contains("rate_l")))
            }),
        ),
        (vec![("q", "100%")], Box::new(|_| false)),
    ];
    for (extra, want) in &queries {
        let q = with_range(extra);
        let mut expected: Vec<&RequestRecord> = all.iter().filter(|r| r.at_ms >= T0 && r.at_ms < now && want(r)).collect();
        expected.sort_by(|a, b| (b.at_ms, &b.id).cmp(&(a.at_ms, &a.id)));
        let expected: Vec<String> = expected.iter().map(|r| r.id.clone()).collect();
        let (got, pages) = all_pages(store, q.clone()).await;
        assert_eq!(got, expected, "{extra:?}");
        assert_eq!(pages, expected.len().div_ceil(q.limit).max(1), "{extra:?}: keyset pages of {}", q.limit);
        assert_eq!(all_pages(&reference, q).await.0, expected, "the reference, {extra:?}");
    }
    // Without a range: the last 24 h before now.
    let recent = LogQuery::from_params(&[], T0 + 3_600_000).unwrap();
    let (got, _) = all_pages(store, recent).await;
    assert_eq!(got.len(), all.iter().filter(|r| r.at_ms < T0 + 3_600_000).count());

    // Stats: the same figures as the reference, for every shape of question.
    let from = T0.to_string();
    let to = now.to_string();
    for extra in [
        vec![],
        vec![("group_by", "provider")],
        vec![("group_by", "provider"), ("interval", "1m")],
        vec![("group_by", "virtual_key,status_class"), ("interval", "15m")],
        vec![("group_by", "team"), ("customer", "cust-0"), ("interval", "1h")],
        vec![("group_by", "provider_tags"), ("interval", "5m")],
        vec![("group_by", "model,customer"), ("provider", "openai")],
        vec![("virtual_key", "vk-05"), ("interval", "1d")],
        vec![("group_by", "status_class"), ("model", "gpt-4o")],
    ] {
        let mut list = vec![("from", from.as_str()), ("to", to.as_str())];
        list.extend_from_slice(&extra);
        let q = StatsQuery::from_params(&params(&list), now).unwrap();
        let got = store.stats(q.clone()).await.unwrap();
        let want = reference.stats(q.clone()).await.unwrap();
        assert_eq!(got, want, "{extra:?}");
        let matching = all.iter().filter(|r| {
            let row = LogRow::new(Arc::new((*r).clone()));
            r.at_ms >= q.from_ms && r.at_ms < q.to_ms && q.matches(&row.dims)
        });
        assert_eq!(got.totals.requests, matching.count() as u64, "{extra:?}");
        assert!(got.totals.requests > 0, "{extra:?} asks about something");
        let in_groups: u64 = got.groups.iter().map(|g| g.totals.requests).sum();
        assert_eq!(in_groups, got.totals.requests, "{extra:?}");
    }
    let q = StatsQuery::from_params(&params(&[("from", &from), ("to", &to), ("group_by", "virtual_key")]), now).unwrap();
    let by_key = store.stats(q).await.unwrap();
    let vk3 = by_key.groups.iter().find(|g| g.keys["virtual_key"].as_deref() == Some("vk-03")).unwrap();
    assert_eq!(vk3.labels["virtual_key"].as_deref(), Some("key 03"), "a key is labelled by its name");
    let anonymous = by_key.groups.iter().find(|g| g.keys["virtual_key"].is_none()).unwrap();
    assert_eq!(anonymous.labels["virtual_key"], None);

    // Pruning: by age, then by count (the oldest go).
    let cut = T0 + 3_600_000;
    let p = store.prune(cut, u64::MAX, i64::MIN).await.unwrap();
    let older = all.iter().filter(|r| r.at_ms < cut).count() as u64;
    assert_eq!(p.aged, older);
    let left = all_pages(store, with_range(&[])).await.0;
    assert_eq!(left.len() as u64, all.len() as u64 - older);
    let p = store.prune(cut, 100, i64::MIN).await.unwrap();
    assert_eq!((p.aged, p.over), (0, left.len() as u64 - 100));
    let kept = all_pages(store, with_range(&[])).await.0;
    assert_eq!(kept, left[..100], "the newest 100 are kept");
    // The coarse rollups outlive the rows; the minute ones go with them.
    let q = |interval: &str| {
        StatsQuery::from_params(&params(&[("from", &T0.to_string()), ("to", &cut.to_string()), ("interval", interval)]), now).unwrap()
    };
    assert_eq!(store.stats(q("1h")).await.unwrap().totals.requests, older);
    assert_eq!(store.stats(q("1m")).await.unwrap().totals.requests, 0);
    store.prune(cut, 100, T0 + 2 * 3_600_000).await.unwrap();
    assert_eq!(store.stats(q("1h")).await.unwrap().totals.requests, 0);
}

/// A `q` search looks at no more than its scan limit of rows per page, yet paging on finds every match.
pub async fn bounded_search(store: &dyn RequestLogStore) {
    const T0: i64 = 1_767_225_600_000;
    const SCAN: usize = 400;
    let n = SCAN as u64 * 2 + 150;
    let mut all = records(11, n, T0, 3_600_000);
    // Three needles: the newest record, one in the middle, the oldest.
    let mut by_time: Vec<usize> = (0..all.len()).collect();
    by_time.sort_by_key(|&i| std::cmp::Reverse((all[i].at_ms, all[i].id.clone())));
    let needles = [by_time[0], by_time[by_time.len() / 2], by_time[by_time.len() - 1]];
    for &i in &needles {
        all[i].attempts[0].message = Some("needle-in-the-trail".into());
    }
    for chunk in rows(&all).chunks(300) {
        store.write_batch(chunk.to_vec()).await.unwrap();
    }
    let now = T0 + 3_600_000;
    let mut q = LogQuery::from_params(&params(&[("from", &T0.to_string()), ("to", &now.to_string()), ("q", "needle-in")]), now).unwrap();
    assert_eq!(q.scan_limit, MAX_SCANNED);
    q.scan_limit = SCAN;
    let first = store.query(q.clone()).await.unwrap();
    assert_eq!(first.records.len(), 1, "the first page looked at {SCAN} rows and found the newest needle");
    assert!(first.next_cursor.is_some(), "more rows remain to look at");
    let (ids, pages) = all_pages(store, q.clone()).await;
    let mut want: Vec<&RequestRecord> = needles.iter().map(|&i| &all[i]).collect();
    want.sort_by(|a, b| (b.at_ms, &b.id).cmp(&(a.at_ms, &a.id)));
    assert_eq!(ids, want.iter().map(|r| r.id.clone()).collect::<Vec<_>>());
    assert_eq!(pages, 3, "{n} rows in pages of at most {SCAN} looked at");
    let reference = MemoryLog::new(100_000);
    reference.write_batch(rows(&all)).await.unwrap();
    assert_eq!(all_pages(&reference, q).await, (ids, pages), "the reference bounds its scan alike");
}
