//! Exact counters for budgets, rate limits and concurrency: reserve, then settle.
//!
//! Peers count usage after the response, so concurrent requests all pass a limit that only one of them
//! fits. Here a request first reserves an upper bound of what it may use on every meter that applies to it,
//! all at once: either every meter has room and all are reserved, or none is. When it is done it settles
//! the real amount (or releases the reservation when it failed). A request that would fit once the
//! reservations in flight have settled waits for them, inside its deadline, instead of being refused on an
//! estimate; and when nothing is in flight but the window has less room than the request's bound, the
//! request gets what is left: so a budget that allows exactly ten requests serves exactly ten, however
//! many arrive at once and however loose the estimate. The price of that: the one request admitted into
//! the last of a window may cost more than what was left (at most its own bound); concurrent requests
//! never overrun a limit together.
//!
//! Each meter has its own small lock; a reservation takes the locks of its meters in one global order (by
//! meter id), so two reservations never deadlock and no lock is shared by unrelated keys.
//!
//! With several replicas (`governance.redis`) the same rules run as one atomic script in Redis over every
//! meter of the request ([`super::shared`]); the local meters then mirror what Redis reported and count
//! the process's own requests in flight, and serve alone only while Redis is unreachable.

use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::model::Period;
use super::shared::{Outcome, Seen, SettlePart, Settlement, Shared, Want};
use crate::config::WhenUnreachable;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Float sums of prices drift by far less than this; a reservation that fits within it fits.
const EPSILON: f64 = 1e-9;

/// What a meter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// US dollars.
    Usd,
    Requests,
    /// Input and output tokens.
    Tokens,
    /// Requests in flight; released when each ends, never used up.
    Concurrent,
}

impl Measure {
    pub fn as_str(self) -> &'static str {
        match self {
            Measure::Usd => "budget",
            Measure::Requests => "requests",
            Measure::Tokens => "tokens",
            Measure::Concurrent => "concurrent requests",
        }
    }
}

/// One limit on one level (`virtual key sensitive`, `team vision`, `provider openai`, ...). Its limit and
/// window may be changed while requests hold reservations on it ([`Meter::reconfigure`]): a management-API
/// write never resets what was used.
pub struct Meter {
    id: u64,
    /// The stable name it is registered under (and shared as).
    name: String,
    pub measure: Measure,
    state: Mutex<State>,
    changed: tokio::sync::Notify,
    shared: Option<Arc<Shared>>,
}

#[derive(Debug, Clone)]
struct State {
    /// Who it limits, for messages: `virtual key "sensitive"`.
    level: String,
    limit: f64,
    period: Option<Period>,
    calendar_aligned: bool,
    /// Unix ms; the current window is [start, end). No window: the meter never resets.
    window: Option<(i64, i64)>,
    used: f64,
    reserved: f64,
}

/// What a meter shows: use in the current window and when it resets.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub level: String,
    pub used: f64,
    pub reserved: f64,
    pub limit: f64,
    pub period: Option<Period>,
    /// Unix ms of the current window's start and end.
    pub window: Option<(i64, i64)>,
}

impl Meter {
    pub fn new(measure: Measure, level: impl Into<String>, limit: f64, period: Option<Period>, calendar_aligned: bool) -> Arc<Meter> {
        Meter::named(String::new(), None, measure, level.into(), (limit, period, calendar_aligned))
    }

    fn named(
        name: String,
        shared: Option<Arc<Shared>>,
        measure: Measure,
        level: String,
        (limit, period, calendar_aligned): (f64, Option<Period>, bool),
    ) -> Arc<Meter> {
        Arc::new(Meter {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            name,
            measure,
            state: Mutex::new(State { level, limit, period, calendar_aligned, window: None, used: 0.0, reserved: 0.0 }),
            changed: tokio::sync::Notify::new(),
            shared,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn read(&self, now_ms: i64) -> Reading {
        let mut st = self.lock();
        roll(self.measure, &mut st, now_ms);
        Reading { level: st.level.clone(), used: st.used, reserved: st.reserved, limit: st.limit, period: st.period, window: st.window }
    }

    pub fn level(&self) -> String {
        self.lock().level.clone()
    }

    /// New limit, window and name, keeping what was used and what is in flight. A different window
    /// length starts a new window.
    pub fn reconfigure(&self, level: &str, limit: f64, period: Option<Period>, calendar_aligned: bool) {
        let mut st = self.lock();
        if st.period != period || st.calendar_aligned != calendar_aligned {
            st.window = None;
        }
        st.level = level.to_string();
        st.limit = limit;
        st.period = period;
        st.calendar_aligned = calendar_aligned;
        drop(st);
        self.changed.notify_waiters();
    }
}

/// The window that holds `now`: the current one, or the one that follows it.
fn window_at(st: &State, now: i64) -> Option<(i64, i64)> {
    let period = st.period?;
    match st.window {
        Some((start, end)) if now < end => Some((start, end)),
        previous => Some(window(period, st.calendar_aligned, previous.map(|w| w.0), now)),
    }
}

/// The window's length and alignment as the shared store compares them.
fn period_text(st: &State) -> String {
    match st.period {
        None => String::new(),
        Some(p) if st.calendar_aligned => format!("{p} calendar"),
        Some(p) => p.to_string(),
    }
}

/// Starts a new window when the current one is over.
fn roll(measure: Measure, st: &mut State, now: i64) {
    let Some(period) = st.period else { return };
    match st.window {
        Some((_, end)) if now < end => {}
        previous => {
            st.window = Some(window(period, st.calendar_aligned, previous.map(|w| w.0), now));
            if measure_resets(measure) {
                st.used = 0.0;
            }
        }
    }
}

/// Meters by stable name (`vk:<handle>:budget`, `provider:openai:tokens`, ...), so that rebuilding the
/// governance state after a configuration change hands every level its existing meter back.
#[derive(Default)]
pub struct Registry {
    by_name: Mutex<std::collections::HashMap<String, Arc<Meter>>>,
    /// Saved use of meters not made yet.
    restored: Mutex<std::collections::HashMap<String, super::store::MeterState>>,
    shared: Option<Arc<Shared>>,
}

impl Registry {
    /// Meters counted in `shared` (Redis), with every replica that uses the same names.
    pub fn with_shared(shared: Arc<Shared>) -> Registry {
        Registry { shared: Some(shared), ..Registry::default() }
    }

    pub fn shared(&self) -> Option<&Arc<Shared>> {
        self.shared.as_ref()
    }

    /// Every meter's use in its current window, by name (to be saved by a store).
    pub fn states(&self) -> Vec<super::store::MeterState> {
        let map = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .filter(|(_, m)| m.measure != Measure::Concurrent)
            .map(|(name, m)| {
                let st = m.lock();
                super::store::MeterState { name: name.clone(), window: st.window, used: st.used }
            })
            .collect()
    }

    /// Resumes saved use: each named meter starts with it when it is made (a window that is over by then
    /// starts afresh at its first use).
    pub fn restore(&self, states: Vec<super::store::MeterState>) {
        let mut pending = self.restored.lock().unwrap_or_else(|e| e.into_inner());
        for s in states {
            pending.insert(s.name.clone(), s);
        }
    }

    /// The meter called `name`, made or reconfigured to these settings.
    pub fn meter(
        &self,
        name: &str,
        measure: Measure,
        level: &str,
        limit: f64,
        period: Option<Period>,
        calendar_aligned: bool,
    ) -> Arc<Meter> {
        let mut map = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(name) {
            Some(m) if m.measure == measure => {
                m.reconfigure(level, limit, period, calendar_aligned);
                Arc::clone(m)
            }
            _ => {
                let m = Meter::named(name.to_string(), self.shared.clone(), measure, level.to_string(), (limit, period, calendar_aligned));
                if let Some(saved) = self.restored.lock().unwrap_or_else(|e| e.into_inner()).remove(name) {
                    let mut st = m.lock();
                    st.used = saved.used.max(0.0);
                    st.window = saved.window;
                }
                map.insert(name.to_string(), Arc::clone(&m));
                m
            }
        }
    }
}

fn measure_resets(m: Measure) -> bool {
    m != Measure::Concurrent
}

/// Why a reservation was refused.
#[derive(Debug, Clone)]
pub struct Refused {
    pub meter: Arc<Meter>,
    /// Milliseconds until the meter's window resets, when it has one.
    pub retry_after_ms: Option<u64>,
}

/// Why a reservation was not made.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// A meter has no room.
    Full(Refused),
    /// The shared counters cannot be reached and the policy is to refuse (`when_unreachable: refuse`).
    Unavailable(String),
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        write!(f, "Meter({} {} of {})", st.level, self.measure.as_str(), st.limit)
    }
}

enum Try {
    Held(Hold),
    /// Would fit once reservations in flight settle.
    Wait(Arc<Meter>),
    Refused(Refused),
}

/// Reserved amounts on a set of meters. Dropping it releases them (nothing is used); [`Hold::settle`]
/// turns them into use.
#[derive(Debug, Default)]
pub struct Hold {
    parts: Vec<(Arc<Meter>, f64)>,
    /// Where the reservation is also held, under which id, and whether it was made on the local meters
    /// only, while the shared ones were unreachable (its use is still sent to them).
    shared: Option<(Arc<Shared>, String, bool)>,
}

/// Amounts actually used, per measure, when a hold is settled.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Used {
    pub usd: f64,
    pub tokens: u64,
    /// Counts one request on request meters.
    pub request: bool,
}

impl Hold {
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Takes the reservations on `meters` out into a hold of their own, settled or released apart (in
    /// Redis, each meter's part of a reservation is released by itself).
    pub fn split_off(&mut self, meters: &[Arc<Meter>]) -> Hold {
        let (taken, kept) = std::mem::take(&mut self.parts).into_iter().partition(|(m, _)| meters.iter().any(|x| x.id == m.id));
        self.parts = kept;
        Hold { parts: taken, shared: self.shared.clone() }
    }

    /// Turns the reservations into use: each meter's reservation is taken back and what was used added.
    pub fn settle(mut self, used: Used) {
        let now = now_ms();
        let mut sent = Vec::new();
        for (m, reserved) in std::mem::take(&mut self.parts) {
            let amount = match m.measure {
                Measure::Usd => used.usd,
                Measure::Tokens => used.tokens as f64,
                Measure::Requests => f64::from(u8::from(used.request)),
                Measure::Concurrent => 0.0,
            }
            .max(0.0);
            let mut st = m.lock();
            roll(m.measure, &mut st, now);
            st.reserved = less(st.reserved, reserved);
            st.used += amount;
            if self.shared.is_some() {
                sent.push(SettlePart {
                    name: m.name.clone(),
                    measure: m.measure,
                    used: amount,
                    period: period_text(&st),
                    next_window: window_at(&st, now),
                });
            }
            drop(st);
            m.changed.notify_waiters();
        }
        if let Some((shared, id, local)) = self.shared.take() {
            if local {
                // Used while Redis was unreachable: only the use is sent, once it is back.
                sent.retain(|p| p.used > 0.0);
            }
            if !local || !sent.is_empty() {
                shared.settle(Settlement { id, local, parts: sent });
            }
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        // The meters are kept only when Redis must hear of the release too.
        let mut released = Vec::new();
        for (m, reserved) in std::mem::take(&mut self.parts) {
            let mut st = m.lock();
            st.reserved = less(st.reserved, reserved);
            drop(st);
            m.changed.notify_waiters();
            if self.shared.is_some() {
                released.push(m);
            }
        }
        if let Some((shared, id, local)) = self.shared.take() {
            if !local {
                let parts = released
                    .iter()
                    .map(|m| SettlePart { name: m.name.clone(), measure: m.measure, used: 0.0, period: String::new(), next_window: None })
                    .collect();
                shared.settle(Settlement { id, local: false, parts });
            }
        }
    }
}

/// `a - b`, with float noise below [`EPSILON`] taken as nothing (so an idle meter reads 0 in flight).
fn less(a: f64, b: f64) -> f64 {
    let d = a - b;
    if d < EPSILON {
        0.0
    } else {
        d
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Reserves `amount` on every meter at once, or on none.
fn try_reserve(wanted: &[(Arc<Meter>, f64)], now: i64) -> Try {
    let mut order: Vec<usize> = (0..wanted.len()).collect();
    order.sort_by_key(|&i| wanted[i].0.id);
    let mut guards: Vec<(usize, MutexGuard<'_, State>)> = Vec::with_capacity(wanted.len());
    for &i in &order {
        let (m, _) = &wanted[i];
        // The same meter twice (a level reached two ways) is locked once.
        if guards.iter().any(|(j, _)| wanted[*j].0.id == m.id) {
            continue;
        }
        let mut g = m.lock();
        roll(m.measure, &mut g, now);
        guards.push((i, g));
    }
    // What each meter grants: the amount asked for when it fits. When it does not, and nothing is in
    // flight on that meter but some of the window is left, the request gets the rest of the window: a
    // request is never refused while its budget has room, so a loose estimate cannot turn away the last
    // request a budget allows. Concurrency is a count of places and never stretched.
    let mut grants = Vec::with_capacity(guards.len());
    for (i, g) in &guards {
        let (m, _) = &wanted[*i];
        let amount: f64 = wanted.iter().filter(|(x, _)| x.id == m.id).map(|(_, a)| *a).sum();
        if g.used + g.reserved + amount <= g.limit + EPSILON {
            grants.push(amount);
            continue;
        }
        let room = g.limit - g.used;
        if m.measure != Measure::Concurrent && room > EPSILON {
            if g.reserved > EPSILON {
                return Try::Wait(Arc::clone(m));
            }
            grants.push(room);
            continue;
        }
        let retry_after_ms = g.window.map(|(_, end)| (end - now).max(1) as u64);
        return Try::Refused(Refused { meter: Arc::clone(m), retry_after_ms });
    }
    let mut parts = Vec::with_capacity(guards.len());
    for ((i, g), grant) in guards.iter_mut().zip(grants) {
        g.reserved += grant;
        parts.push((Arc::clone(&wanted[*i].0), grant));
    }
    drop(guards);
    Try::Held(Hold { parts, shared: None })
}

/// Reserves on every meter at once; waits (up to `within`) for reservations in flight to settle when only
/// they stand in the way. A request that cannot fit is refused at once. Meters of a registry with shared
/// counters are reserved in Redis.
pub async fn reserve(wanted: &[(Arc<Meter>, f64)], within: Duration) -> Result<Hold, Refusal> {
    match wanted.first().and_then(|(m, _)| m.shared.clone()) {
        Some(shared) => reserve_shared(&shared, wanted, within).await,
        None => reserve_local(wanted, within).await.map_err(Refusal::Full),
    }
}

async fn reserve_local(wanted: &[(Arc<Meter>, f64)], within: Duration) -> Result<Hold, Refused> {
    let until = tokio::time::Instant::now() + within;
    loop {
        let m = match try_reserve(wanted, now_ms()) {
            Try::Held(h) => return Ok(h),
            Try::Refused(r) => return Err(r),
            Try::Wait(m) => m,
        };
        // Registered before checking again, so a settlement in between is not missed.
        let mut changed = pin!(m.changed.notified());
        changed.as_mut().enable();
        match try_reserve(wanted, now_ms()) {
            Try::Held(h) => return Ok(h),
            Try::Refused(r) => return Err(r),
            Try::Wait(_) => {}
        }
        if tokio::time::timeout_at(until, changed).await.is_err() {
            return Err(Refused { meter: Arc::clone(&m), retry_after_ms: Some(1000) });
        }
    }
}

/// The shared path: one atomic call to Redis over every meter. The grants are also held on the local
/// meters, which mirror what Redis reported.
async fn reserve_shared(shared: &Arc<Shared>, wanted: &[(Arc<Meter>, f64)], within: Duration) -> Result<Hold, Refusal> {
    let until = tokio::time::Instant::now() + within;
    // One entry per meter, the amounts of a meter reached two ways summed.
    let mut meters: Vec<(Arc<Meter>, f64)> = Vec::with_capacity(wanted.len());
    for (m, a) in wanted {
        match meters.iter_mut().find(|(x, _)| x.id == m.id) {
            Some((_, sum)) => *sum += *a,
            None => meters.push((Arc::clone(m), *a)),
        }
    }
    let id = reservation_id();
    let mut pause = Duration::from_millis(2);
    loop {
        let now = now_ms();
        if shared.skipping(now) {
            return fallback(shared, &meters, until).await;
        }
        let wants: Vec<Want> = meters
            .iter()
            .map(|(m, amount)| {
                let st = m.lock();
                Want {
                    name: m.name.clone(),
                    measure: m.measure,
                    limit: st.limit,
                    amount: *amount,
                    period: period_text(&st),
                    next_window: window_at(&st, now),
                }
            })
            .collect();
        let outcome = match shared.reserve(&id, &wants, now).await {
            Ok(o) => {
                shared.answered();
                o
            }
            Err(e) => {
                shared.failed("reserve", &e, now_ms());
                // A call that timed out may still run once Redis answers again (it was sent): its
                // reservation is released then, after it, by the settling task.
                let parts = wants
                    .into_iter()
                    .map(|w| SettlePart { name: w.name, measure: w.measure, used: 0.0, period: String::new(), next_window: None })
                    .collect();
                shared.settle(Settlement { id: id.clone(), local: false, parts });
                return fallback(shared, &meters, until).await;
            }
        };
        let index = match &outcome {
            Outcome::Held { .. } => 0,
            Outcome::Full { index, .. } | Outcome::Wait { index, .. } => *index,
        };
        let Some((m, _)) = meters.get(index) else {
            return Err(Refusal::Unavailable(format!("the shared counters named meter {index} of {}", meters.len())));
        };
        match outcome {
            Outcome::Held { grants, seen } => {
                let mut parts = Vec::with_capacity(meters.len());
                for (((m, _), grant), seen) in meters.iter().zip(grants).zip(seen) {
                    let mut st = m.lock();
                    mirror(&mut st, seen);
                    st.reserved += grant;
                    parts.push((Arc::clone(m), grant));
                }
                return Ok(Hold { parts, shared: Some((Arc::clone(shared), id, false)) });
            }
            Outcome::Full { seen, .. } => {
                mirror(&mut m.lock(), seen);
                let retry_after_ms = seen.window.map(|(_, end)| (end - now).max(1) as u64);
                return Err(Refusal::Full(Refused { meter: Arc::clone(m), retry_after_ms }));
            }
            Outcome::Wait { seen, .. } => {
                mirror(&mut m.lock(), seen);
                if tokio::time::Instant::now() + pause >= until {
                    return Err(Refusal::Full(Refused { meter: Arc::clone(m), retry_after_ms: Some(1000) }));
                }
                // Other replicas' settlements reach Redis, not this process: look again shortly.
                let jitter = Duration::from_micros(fastrand::u64(..=pause.as_micros() as u64 / 2));
                tokio::time::sleep(pause + jitter).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
        }
    }
}

/// Unique across replicas for as long as it matters (a lease, a day), not a secret.
fn reservation_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// The local meter takes what Redis holds (other replicas' use included); the process's own
/// reservations in flight stay as they are.
fn mirror(st: &mut State, seen: Seen) {
    st.used = seen.used.max(0.0);
    if seen.window.is_some() {
        st.window = seen.window;
    }
}

/// Redis is unreachable: refuse, or serve on the local meters and send what was used once Redis is back.
async fn fallback(shared: &Arc<Shared>, meters: &[(Arc<Meter>, f64)], until: tokio::time::Instant) -> Result<Hold, Refusal> {
    match shared.when_unreachable {
        WhenUnreachable::Refuse => Err(Refusal::Unavailable(format!(
            "the shared counters ({}) cannot be reached, and governance.redis.when_unreachable is refuse",
            shared.describe()
        ))),
        WhenUnreachable::Local => {
            metrics::counter!("switchyard_shared_counters_fallback_total").increment(1);
            let within = until.saturating_duration_since(tokio::time::Instant::now());
            let mut hold = reserve_local(meters, within).await.map_err(Refusal::Full)?;
            hold.shared = Some((Arc::clone(shared), reservation_id(), true));
            Ok(hold)
        }
    }
}

/// The window [start, end) that holds `now`: calendar-aligned, or following on from the previous window's
/// start (the first window starts now).
fn window(period: Period, aligned: bool, previous_start: Option<i64>, now: i64) -> (i64, i64) {
    const DAY: i64 = 86_400_000;
    match (period, aligned) {
        (Period::Fixed(d), true) => {
            let len = (d.as_millis() as i64).max(1);
            // Weeks start on Monday; the Unix epoch was a Thursday, three days after one.
            let offset = if len % (7 * DAY) == 0 { 3 * DAY } else { 0 };
            let start = (now + offset).div_euclid(len) * len - offset;
            (start, start + len)
        }
        (Period::Fixed(d), false) => {
            let len = (d.as_millis() as i64).max(1);
            let base = previous_start.unwrap_or(now);
            let start = base + (now - base).div_euclid(len) * len;
            (start, start + len)
        }
        (Period::Months(n), true) => {
            let (y, m, _) = civil_from_days(now.div_euclid(DAY));
            let index = y * 12 + (m - 1);
            let first = index - index.rem_euclid(i64::from(n));
            let start = months_to_ms(first, 1);
            (start, months_to_ms(first + i64::from(n), 1))
        }
        (Period::Months(n), false) => {
            let base = previous_start.unwrap_or(now);
            let (by, bm, bd) = civil_from_days(base.div_euclid(DAY));
            let time_of_day = base.rem_euclid(DAY);
            let at = |k: i64| {
                let index = by * 12 + (bm - 1) + k * i64::from(n);
                // The 31st of a short month is its last day.
                let day = bd.min(days_in_month(index.div_euclid(12), index.rem_euclid(12) + 1));
                months_to_ms(index, day) + time_of_day
            };
            let mut k = 0;
            while at(k + 1) <= now {
                k += 1;
            }
            (at(k), at(k + 1))
        }
    }
}

/// Unix ms of day `day` of the month `index` (years × 12 + zero-based month).
fn months_to_ms(index: i64, day: i64) -> i64 {
    days_from_civil(index.div_euclid(12), index.rem_euclid(12) + 1, day) * 86_400_000
}

pub(crate) fn days_in_month(y: i64, m: i64) -> i64 {
    let next = if m == 12 { days_from_civil(y + 1, 1, 1) } else { days_from_civil(y, m + 1, 1) };
    next - days_from_civil(y, m, 1)
}

// Days since 1970-01-01 of a proleptic Gregorian date, and back (H. Hinnant's algorithms): two dozen lines
// instead of a calendar crate in the dependency tree.
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(y: i64, m: i64, d: i64) -> i64 {
        days_from_civil(y, m, d) * 86_400_000
    }

    #[test]
    fn calendar_arithmetic_round_trips() {
        for z in [-800_000, -1, 0, 1, 19_000, 20_454, 2_000_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2026, 2), 28);
    }

    #[test]
    fn windows_align_to_the_calendar_or_follow_on() {
        let now = ms(2026, 12, 2) + 13 * 3_600_000 + 5 * 60_000;
        // Wednesday 2026-12-02: the week began on Monday 2026-11-30.
        assert_eq!(window(Period::Fixed(Duration::from_secs(7 * 86_400)), true, None, now), (ms(2026, 11, 30), ms(2026, 12, 7)));
        assert_eq!(window(Period::Fixed(Duration::from_secs(86_400)), true, None, now), (ms(2026, 12, 2), ms(2026, 12, 3)));
        assert_eq!(window(Period::Months(1), true, None, now), (ms(2026, 12, 1), ms(2027, 1, 1)));
        assert_eq!(window(Period::Months(12), true, None, now), (ms(2026, 1, 1), ms(2027, 1, 1)));
        // Not aligned: a month from the first window's start, the 31st becoming the month's last day.
        let start = ms(2026, 1, 31);
        assert_eq!(window(Period::Months(1), false, Some(start), ms(2026, 2, 15)), (start, ms(2026, 2, 28)));
        let hour = Period::Fixed(Duration::from_secs(3600));
        assert_eq!(window(hour, false, Some(1_000), 1_000 + 3_600_000 * 5 + 7), (1_000 + 3_600_000 * 5, 1_000 + 3_600_000 * 6));
    }

    #[tokio::test]
    async fn a_reservation_takes_every_meter_or_none() {
        let a = Meter::new(Measure::Usd, "virtual key a", 1.0, None, false);
        let b = Meter::new(Measure::Usd, "team t", 0.5, None, false);
        let h = reserve(&[(a.clone(), 0.4), (b.clone(), 0.4)], Duration::ZERO).await.unwrap();
        h.settle(Used { usd: 0.5, ..Used::default() });
        // b is spent and nothing in flight will change that: refused, and a is left untouched.
        let Refusal::Full(r) = reserve(&[(a.clone(), 0.4), (b.clone(), 0.4)], Duration::ZERO).await.unwrap_err() else { panic!() };
        assert_eq!(r.meter.level(), "team t");
        assert_eq!(a.read(now_ms()).reserved, 0.0);
        assert_eq!((a.read(now_ms()).used, b.read(now_ms()).used), (0.5, 0.5));
        // With room but less than the bound and nothing in flight, the request gets what is left.
        let h = reserve(&[(a.clone(), 0.8)], Duration::ZERO).await.unwrap();
        assert_eq!(a.read(now_ms()).reserved, 0.5);
        // Dropping a hold releases it without use.
        drop(h);
        assert_eq!((a.read(now_ms()).used, a.read(now_ms()).reserved), (0.5, 0.0));
    }

    #[tokio::test]
    async fn concurrent_requests_get_exactly_what_the_budget_allows() {
        // Each request reserves twice what it will use: the bound is loose, the count still exact.
        let budget = Meter::new(Measure::Usd, "virtual key k", 1.0, None, false);
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let budget = budget.clone();
                tokio::spawn(async move {
                    match reserve(&[(budget, 0.2)], Duration::from_secs(30)).await {
                        Ok(h) => {
                            tokio::task::yield_now().await;
                            h.settle(Used { usd: 0.1, ..Used::default() });
                            true
                        }
                        Err(_) => false,
                    }
                })
            })
            .collect();
        let mut served = 0;
        for t in tasks {
            served += usize::from(t.await.unwrap());
        }
        assert_eq!(served, 10);
        let r = budget.read(now_ms());
        assert!((r.used - 1.0).abs() < 1e-9 && r.reserved == 0.0, "{r:?}");
    }

    #[tokio::test]
    async fn windows_reset_use_but_not_concurrency() {
        let m = Meter::new(Measure::Requests, "virtual key k", 1.0, Some(Period::Fixed(Duration::from_secs(3600))), false);
        reserve(&[(m.clone(), 1.0)], Duration::ZERO).await.unwrap().settle(Used { request: true, ..Used::default() });
        let Refusal::Full(r) = reserve(&[(m.clone(), 1.0)], Duration::ZERO).await.unwrap_err() else { panic!() };
        let after = r.retry_after_ms.unwrap();
        assert!(after > 3_590_000 && after <= 3_600_000, "{after}");
        // An hour later the window has moved on.
        let later = now_ms() + 3_600_001;
        assert_eq!(m.read(later).used, 0.0);
    }
}
