//! The shared counters' scripts against a real, throwaway Redis: all-or-none reservations, exactness under
//! concurrent clients, settling, window rolls, leases of dead processes, and the last-remainder rule. Time
//! is the caller's argument, so windows and leases are tested without waiting.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

#[path = "common/redis_server.rs"]
mod redis_server;

use std::sync::Arc;
use std::time::Duration;

use switchyard_engine::governance::meter::Measure;
use switchyard_engine::governance::shared::{Outcome, Seen, SettlePart, Settlement, SharedCounters, Want};
use switchyard_store::RedisCounters;

fn want(name: &str, measure: Measure, limit: f64, amount: f64, window: Option<(i64, i64)>) -> Want {
    Want { name: name.into(), measure, limit, amount, period: window.map(|_| "1h".to_string()).unwrap_or_default(), next_window: window }
}

fn part(name: &str, measure: Measure, used: f64, window: Option<(i64, i64)>) -> SettlePart {
    SettlePart { name: name.into(), measure, used, period: window.map(|_| "1h".to_string()).unwrap_or_default(), next_window: window }
}

fn counters(url: &str, prefix: &str) -> RedisCounters {
    RedisCounters::new(url, prefix, Duration::from_secs(5)).unwrap()
}

const LEASE: i64 = 1_000_000;

#[tokio::test]
async fn a_reservation_is_made_on_every_meter_or_on_none() {
    let Some(redis) = redis_server::server() else { return };
    let c = counters(&redis.url(), "t1");
    let wants = [want("a:budget", Measure::Usd, 10.0, 4.0, None), want("b:requests", Measure::Requests, 1.0, 1.0, None)];
    let first = c.reserve("r1", &wants, 0, LEASE).await.unwrap();
    assert!(matches!(first, Outcome::Held { ref grants, .. } if grants == &[4.0, 1.0]), "{first:?}");
    // b has no room now (it may once r1 is released: wait), and a is left as it was.
    let second = c.reserve("r2", &wants, 1, LEASE).await.unwrap();
    assert_eq!(second, Outcome::Wait { index: 1, seen: Seen { used: 0.0, reserved: 1.0, window: None } });
    let third = c.reserve("r3", &wants[..1], 2, LEASE).await.unwrap();
    assert!(matches!(third, Outcome::Held { ref seen, .. } if seen[0].reserved == 8.0), "{third:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_several_processes_reserve_exactly_the_limit_between_them() {
    let Some(redis) = redis_server::server() else { return };
    // Three clients, as three replicas would have, 300 reservations at once on a limit of 10.
    let clients: Vec<Arc<RedisCounters>> = (0..3).map(|_| Arc::new(counters(&redis.url(), "t2"))).collect();
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let c = Arc::clone(&clients[i % 3]);
            tokio::spawn(async move {
                let w = [want("vk:x:requests", Measure::Requests, 10.0, 1.0, Some((0, 3_600_000)))];
                c.reserve(&format!("r{i}"), &w, 1000, LEASE).await.unwrap()
            })
        })
        .collect();
    let mut held = 0;
    for t in tasks {
        match t.await.unwrap() {
            Outcome::Held { .. } => held += 1,
            // Ten are in flight and none settles: the others would wait for them.
            Outcome::Wait { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(held, 10);
}

#[tokio::test]
async fn settling_releases_the_reservation_and_adds_the_use_in_the_right_window() {
    let Some(redis) = redis_server::server() else { return };
    let c = counters(&redis.url(), "t3");
    let w1 = Some((0, 1000));
    let r = c.reserve("r1", &[want("m:budget", Measure::Usd, 10.0, 5.0, w1)], 10, LEASE).await.unwrap();
    assert!(matches!(r, Outcome::Held { .. }));
    c.settle(&[Settlement { id: "r1".into(), local: false, parts: vec![part("m:budget", Measure::Usd, 2.5, w1)] }], 20).await.unwrap();
    // Within the window: 2.5 used, nothing in flight.
    let r = c.reserve("r2", &[want("m:budget", Measure::Usd, 10.0, 7.5, w1)], 30, LEASE).await.unwrap();
    assert_eq!(r, Outcome::Held { grants: vec![7.5], seen: vec![Seen { used: 2.5, reserved: 7.5, window: Some((0, 1000)) }] });
    c.settle(&[Settlement { id: "r2".into(), local: false, parts: vec![part("m:budget", Measure::Usd, 0.0, w1)] }], 40).await.unwrap();
    // The next window starts empty.
    let w2 = Some((1000, 2000));
    let r = c.reserve("r3", &[want("m:budget", Measure::Usd, 10.0, 10.0, w2)], 1500, LEASE).await.unwrap();
    assert_eq!(r, Outcome::Held { grants: vec![10.0], seen: vec![Seen { used: 0.0, reserved: 10.0, window: Some((1000, 2000)) }] });
    // Use with no reservation (counted while Redis was away) is added once, however often it is sent.
    let local = Settlement { id: "l1".into(), local: true, parts: vec![part("m:budget", Measure::Usd, 1.25, w2)] };
    c.settle(&[local.clone(), local.clone()], 1600).await.unwrap();
    c.settle(&[local], 1650).await.unwrap();
    // So is a reservation's settlement.
    let r3 = Settlement { id: "r3".into(), local: false, parts: vec![part("m:budget", Measure::Usd, 3.0, w2)] };
    c.settle(std::slice::from_ref(&r3), 1700).await.unwrap();
    c.settle(&[r3], 1710).await.unwrap();
    let r = c.reserve("r4", &[want("m:budget", Measure::Usd, 10.0, 1.0, w2)], 1800, LEASE).await.unwrap();
    assert!(matches!(r, Outcome::Held { ref seen, .. } if seen[0].used == 4.25 && seen[0].reserved == 1.0), "{r:?}");
}

#[tokio::test]
async fn a_reservation_whose_process_died_is_let_go_when_its_lease_ends() {
    let Some(redis) = redis_server::server() else { return };
    let c = counters(&redis.url(), "t4");
    let w = [want("vk:y:concurrent", Measure::Concurrent, 1.0, 1.0, None)];
    assert!(matches!(c.reserve("dead", &w, 0, 100).await.unwrap(), Outcome::Held { .. }));
    assert!(matches!(c.reserve("next", &w, 50, 1000).await.unwrap(), Outcome::Full { .. }), "the lease still runs");
    assert!(matches!(c.reserve("next", &w, 101, 1000).await.unwrap(), Outcome::Held { .. }), "the lease ran out");
}

#[tokio::test]
async fn the_last_of_a_budget_goes_to_one_request_once_nothing_is_in_flight() {
    let Some(redis) = redis_server::server() else { return };
    let c = counters(&redis.url(), "t5");
    let budget = |amount| [want("k:budget", Measure::Usd, 10.0, amount, None)];
    assert!(matches!(c.reserve("a", &budget(9.0), 0, LEASE).await.unwrap(), Outcome::Held { .. }));
    // 1 left, 9 in flight: a request bounded at 2 might fit once a settles, so it waits.
    assert!(matches!(c.reserve("b", &budget(2.0), 1, LEASE).await.unwrap(), Outcome::Wait { index: 0, .. }));
    c.settle(&[Settlement { id: "a".into(), local: false, parts: vec![part("k:budget", Measure::Usd, 9.5, None)] }], 2).await.unwrap();
    // 0.5 left, nothing in flight: b gets what is left.
    let r = c.reserve("b", &budget(2.0), 3, LEASE).await.unwrap();
    assert!(matches!(r, Outcome::Held { ref grants, .. } if (grants[0] - 0.5).abs() < 1e-9), "{r:?}");
    c.settle(&[Settlement { id: "b".into(), local: false, parts: vec![part("k:budget", Measure::Usd, 0.5, None)] }], 4).await.unwrap();
    assert!(matches!(c.reserve("c", &budget(0.1), 5, LEASE).await.unwrap(), Outcome::Full { .. }));
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_not_a_hang() {
    let Some(mut redis) = redis_server::server() else { return };
    let c = RedisCounters::new(&redis.url(), "t6", Duration::from_millis(300)).unwrap();
    redis.stop();
    let w = [want("z:requests", Measure::Requests, 1.0, 1.0, None)];
    let r = tokio::time::timeout(Duration::from_secs(30), c.reserve("r", &w, 0, LEASE)).await.expect("bounded by the client's timeouts");
    assert!(r.is_err(), "{r:?}");
}
