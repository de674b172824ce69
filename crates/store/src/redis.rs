//! The engine's shared counters ([`SharedCounters`]) in Redis, so that every replica of a gateway counts
//! against the same budgets and rate limits.
//!
//! Each call is one Lua script, which Redis runs atomically: a reservation checks and reserves on every
//! meter of a request in one round trip (all or none), a settlement releases reservations and adds what was
//! used for a whole batch of requests in one more. The rules are the engine's (`governance::meter`), run
//! where every replica sees them.
//!
//! Keys, for a meter named `vk:ab12:budget` and the default prefix:
//! - `{switchyard}:m:vk:ab12:budget`, a hash: `used`, `reserved`, the window (`ws`, `we`, Unix ms, and `p`,
//!   its length as text) and one field `r:<id>` per reservation in flight;
//! - `{switchyard}:r:vk:ab12:budget`, a sorted set of those reservations by lease end: a reservation whose
//!   process died is let go when its lease runs out.
//!
//! Names are the engine's stable meter names (a key's non-secret handle, a team's id, a provider's name),
//! so replicas of different versions in a rolling deploy share them. The prefix is in braces so that all
//! keys sit in one Redis Cluster slot, as a script's keys must. A meter's hash expires a day after its
//! window ends (an idle meter starts afresh, as it would anyway); expiries are counted from the caller's
//! clock, like windows and leases, so Redis' own clock never matters.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use switchyard_engine::governance::meter::Measure;
use switchyard_engine::governance::shared::{CounterError, CounterFuture, Outcome, Seen, SettlePart, Settlement, SharedCounters, Want};

const RESERVE: &str = r#"
local EPS = 1e-9
local function f(x) return string.format('%.17g', x) end
local id, now, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local n = #KEYS / 2
local S = {}
for i = 1, n do
  local b = 3 + (i - 1) * 6
  local s = { m = KEYS[2 * i - 1], r = KEYS[2 * i], conc = ARGV[b + 1] == 'c', limit = tonumber(ARGV[b + 2]),
              amount = tonumber(ARGV[b + 3]), period = ARGV[b + 4], ns = tonumber(ARGV[b + 5]), ne = tonumber(ARGV[b + 6]) }
  local h = redis.call('HMGET', s.m, 'used', 'reserved', 'ws', 'we', 'p')
  s.used, s.reserved = tonumber(h[1]) or 0, tonumber(h[2]) or 0
  s.ws, s.we = tonumber(h[3]), tonumber(h[4])
  local stale = redis.call('ZRANGEBYSCORE', s.r, '-inf', now)
  if #stale > 0 then
    for _, g in ipairs(stale) do
      local a = redis.call('HGET', s.m, 'r:' .. g)
      if a then
        s.reserved = s.reserved - tonumber(a)
        redis.call('HDEL', s.m, 'r:' .. g)
      end
    end
    redis.call('ZREMRANGEBYSCORE', s.r, '-inf', now)
    if s.reserved < EPS then s.reserved = 0 end
    redis.call('HSET', s.m, 'reserved', f(s.reserved))
  end
  if s.ns then
    if h[5] ~= s.period or not s.we or now >= s.we then
      s.ws, s.we, s.rolled = s.ns, s.ne, true
      if not s.conc then s.used = 0 end
    end
  else
    s.ws, s.we = nil, nil
  end
  S[i] = s
end
local function seen(out, s)
  out[#out + 1] = f(s.used)
  out[#out + 1] = f(s.reserved)
  out[#out + 1] = s.ws and f(s.ws) or ''
  out[#out + 1] = s.we and f(s.we) or ''
end
for i = 1, n do
  local s = S[i]
  if s.used + s.reserved + s.amount <= s.limit + EPS then
    s.grant = s.amount
  else
    local room = s.limit - s.used
    if (not s.conc) and room > EPS and s.reserved <= EPS then
      s.grant = room
    else
      local out = { (not s.conc) and room > EPS and 'wait' or 'full', tostring(i - 1) }
      seen(out, s)
      return out
    end
  end
end
local out = { 'held', '0' }
for i = 1, n do
  local s = S[i]
  s.reserved = s.reserved + s.grant
  redis.call('HSET', s.m, 'used', f(s.used), 'reserved', f(s.reserved), 'r:' .. id, f(s.grant))
  if s.rolled then redis.call('HSET', s.m, 'ws', f(s.ws), 'we', f(s.we), 'p', s.period) end
  redis.call('ZADD', s.r, lease, id)
  -- Expiry relative to the caller's clock, so a skew between it and Redis' clock does not matter.
  redis.call('PEXPIRE', s.r, math.floor(lease - now) + 60000)
  if s.we then
    redis.call('PEXPIRE', s.m, math.floor(math.max(s.we, lease) - now) + 86400000)
  else
    redis.call('PERSIST', s.m)
  end
  out[#out + 1] = f(s.grant)
  seen(out, s)
end
return out
"#;

const SETTLE: &str = r#"
local EPS = 1e-9
local function f(x) return string.format('%.17g', x) end
local now = tonumber(ARGV[1])
for i = 1, #KEYS / 2 do
  local m, r, b = KEYS[2 * i - 1], KEYS[2 * i], 1 + (i - 1) * 6
  local id, mode, conc, used = ARGV[b + 1], string.sub(ARGV[b + 2], 1, 1), string.sub(ARGV[b + 2], 2, 2) == 'c', tonumber(ARGV[b + 3])
  local apply
  if mode == 'r' then
    -- Released once: a settlement sent again (its first call timed out, yet ran) changes nothing.
    local a = redis.call('HGET', m, 'r:' .. id)
    apply = a ~= false
    if apply then
      local left = (tonumber(redis.call('HGET', m, 'reserved')) or 0) - tonumber(a)
      if left < EPS then left = 0 end
      redis.call('HSET', m, 'reserved', f(left))
      redis.call('HDEL', m, 'r:' .. id)
      redis.call('ZREM', r, id)
    end
  else
    -- Use counted while Redis was unreachable: remembered for a day (beside the leases, which the
    -- reservation script clears when they are over), so it is added once.
    apply = redis.call('ZADD', r, 'NX', now + 86400000, 'l:' .. id) == 1
    if apply then redis.call('PEXPIRE', r, 86400000 + 60000) end
  end
  if apply and used > 0 and not conc then
    local ns, ne = tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6])
    if ns then
      local h = redis.call('HMGET', m, 'we', 'p')
      local we = tonumber(h[1])
      if h[2] ~= ARGV[b + 4] or not we or now >= we then
        redis.call('HSET', m, 'ws', f(ns), 'we', f(ne), 'p', ARGV[b + 4], 'used', '0')
        redis.call('PEXPIRE', m, math.floor(ne - now) + 86400000)
      end
    end
    redis.call('HINCRBYFLOAT', m, 'used', f(used))
  end
end
return 1
"#;

/// Shared counters in one Redis server (or Cluster slot).
pub struct RedisCounters {
    con: ConnectionManager,
    prefix: String,
    shown: String,
    reserve: Script,
    settle: Script,
}

fn error(what: &'static str) -> impl Fn(redis::RedisError) -> CounterError {
    move |e| CounterError { what, message: e.to_string() }
}

/// `url` without its password, for logs.
fn shown(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

fn kind(m: Measure) -> &'static str {
    if m == Measure::Concurrent {
        "c"
    } else {
        "u"
    }
}

fn window_args(w: Option<(i64, i64)>) -> (String, String) {
    w.map_or((String::new(), String::new()), |(s, e)| (s.to_string(), e.to_string()))
}

impl RedisCounters {
    /// A client for `url`; it connects at first use and reconnects by itself, each connection attempt and
    /// each answer bounded by `timeout`. Fails only on a URL it cannot read.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<RedisCounters, String> {
        let client = redis::Client::open(url).map_err(|e| format!("governance.redis.url {}: {e}", shown(url)))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let con = ConnectionManager::new_lazy_with_config(client, config).map_err(|e| format!("governance.redis: {e}"))?;
        Ok(RedisCounters { con, prefix: prefix.to_string(), shown: shown(url), reserve: Script::new(RESERVE), settle: Script::new(SETTLE) })
    }

    /// One PING, for the start-up log line.
    pub async fn ping(&self) -> Result<(), String> {
        let mut con = self.con.clone();
        redis::cmd("PING").query_async::<String>(&mut con).await.map(|_| ()).map_err(|e| e.to_string())
    }

    /// Where the counters live (no password), for logs.
    pub fn describe_for_log(&self) -> String {
        format!("Redis at {}", self.shown)
    }

    fn keys(&self, name: &str) -> (String, String) {
        (format!("{{{}}}:m:{name}", self.prefix), format!("{{{}}}:r:{name}", self.prefix))
    }
}

fn number(s: &str, what: &'static str) -> Result<f64, CounterError> {
    s.parse().map_err(|_| CounterError { what, message: format!("Redis answered {s:?} where a number belongs") })
}

fn seen(group: &[String]) -> Result<Seen, CounterError> {
    let what = "reading Redis' answer";
    let window = match (group[2].as_str(), group[3].as_str()) {
        ("", _) | (_, "") => None,
        (s, e) => Some((number(s, what)? as i64, number(e, what)? as i64)),
    };
    Ok(Seen { used: number(&group[0], what)?, reserved: number(&group[1], what)?, window })
}

fn outcome(reply: &[String], n: usize) -> Result<Outcome, CounterError> {
    let bad = || CounterError { what: "reading Redis' answer", message: format!("unexpected reply {reply:?}") };
    let (status, index) = match reply {
        [s, i, ..] => (s.as_str(), i.parse::<usize>().map_err(|_| bad())?),
        _ => return Err(bad()),
    };
    let rest = &reply[2..];
    match status {
        "held" if rest.len() == 5 * n => {
            let mut grants = Vec::with_capacity(n);
            let mut seens = Vec::with_capacity(n);
            for g in rest.chunks(5) {
                grants.push(number(&g[0], "reading Redis' answer")?);
                seens.push(seen(&g[1..])?);
            }
            Ok(Outcome::Held { grants, seen: seens })
        }
        "wait" if rest.len() == 4 => Ok(Outcome::Wait { index, seen: seen(rest)? }),
        "full" if rest.len() == 4 => Ok(Outcome::Full { index, seen: seen(rest)? }),
        _ => Err(bad()),
    }
}

impl SharedCounters for RedisCounters {
    fn reserve<'a>(&'a self, id: &'a str, wants: &'a [Want], now_ms: i64, lease_until_ms: i64) -> CounterFuture<'a, Outcome> {
        Box::pin(async move {
            let mut call = self.reserve.prepare_invoke();
            for w in wants {
                let (m, r) = self.keys(&w.name);
                call.key(m).key(r);
            }
            call.arg(id).arg(now_ms).arg(lease_until_ms);
            for w in wants {
                let (ns, ne) = window_args(w.next_window);
                call.arg(kind(w.measure)).arg(w.limit.to_string()).arg(w.amount.to_string()).arg(&w.period).arg(ns).arg(ne);
            }
            let mut con = self.con.clone();
            let reply: Vec<String> = call.invoke_async(&mut con).await.map_err(error("reserving"))?;
            outcome(&reply, wants.len())
        })
    }

    fn settle<'a>(&'a self, batch: &'a [Settlement], now_ms: i64) -> CounterFuture<'a, ()> {
        Box::pin(async move {
            let mut call = self.settle.prepare_invoke();
            call.arg(now_ms);
            let mut any = false;
            for s in batch {
                for SettlePart { name, measure, used, period, next_window } in &s.parts {
                    let (m, r) = self.keys(name);
                    call.key(m).key(r);
                    let (ns, ne) = window_args(*next_window);
                    let mode = format!("{}{}", if s.local { "l" } else { "r" }, kind(*measure));
                    call.arg(&s.id).arg(mode).arg(used.to_string()).arg(period).arg(ns).arg(ne);
                    any = true;
                }
            }
            if !any {
                return Ok(());
            }
            let mut con = self.con.clone();
            call.invoke_async::<i64>(&mut con).await.map_err(error("settling"))?;
            Ok(())
        })
    }

    fn describe(&self) -> String {
        self.describe_for_log()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(shown("redis://user:secret@10.0.0.5:6379/2"), "redis://***@10.0.0.5:6379/2");
        assert_eq!(shown("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn replies_are_read_or_refused() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let held = outcome(&s(&["held", "0", "1", "3", "1", "100", "200"]), 1);
        assert_eq!(
            held.ok(),
            Some(Outcome::Held { grants: vec![1.0], seen: vec![Seen { used: 3.0, reserved: 1.0, window: Some((100, 200)) }] })
        );
        let wait = outcome(&s(&["wait", "1", "2", "0.5", "", ""]), 2);
        assert_eq!(wait.ok(), Some(Outcome::Wait { index: 1, seen: Seen { used: 2.0, reserved: 0.5, window: None } }));
        assert!(outcome(&s(&["held", "0", "1"]), 1).is_err());
        assert!(outcome(&s(&["what", "0", "1", "1", "", ""]), 1).is_err());
        assert!(outcome(&s(&["full", "x", "1", "1", "", ""]), 1).is_err());
    }
}
