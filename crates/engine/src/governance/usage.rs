//! Reading the usage ledger back: who used how much, where, when. The ledger (`account::Ledger`) has one
//! row per settled request; an operator asks for totals (requests, input and output tokens, cost) over a
//! time range, narrowed by key, team, customer, provider or model, and split by one of them or by day.
//!
//! The query is parsed and checked here, once, so that every store (SQLite, Postgres, memory) answers the
//! same question and the management API only renders. Times are RFC 3339 on the wire and Unix
//! milliseconds inside, as the ledger keeps them; days are UTC.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::meter::{civil_from_days, days_from_civil, days_in_month};
use super::store::UsageRecord;

/// Groups one answer may hold at most: a year of days, or thousands of keys, with room to spare. A
/// query that would make more says so (`truncated`) instead of growing without bound.
pub const MAX_GROUPS: usize = 10_000;

/// What the totals are split by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    VirtualKey,
    Team,
    Customer,
    Provider,
    Model,
    /// The UTC day a request was settled on, as `YYYY-MM-DD`.
    Day,
}

impl GroupBy {
    pub const ALL: [GroupBy; 6] = [GroupBy::VirtualKey, GroupBy::Team, GroupBy::Customer, GroupBy::Provider, GroupBy::Model, GroupBy::Day];

    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::VirtualKey => "virtual_key",
            GroupBy::Team => "team",
            GroupBy::Customer => "customer",
            GroupBy::Provider => "provider",
            GroupBy::Model => "model",
            GroupBy::Day => "day",
        }
    }

    fn parse(s: &str) -> Option<GroupBy> {
        GroupBy::ALL.into_iter().find(|g| g.as_str() == s)
    }
}

/// One question to the ledger: records settled in `[from_ms, to_ms)` that match every filter given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageQuery {
    pub virtual_key: Option<String>,
    pub team: Option<String>,
    pub customer: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    /// Unix ms, inclusive; `None`: from the first record.
    pub from_ms: Option<i64>,
    /// Unix ms, exclusive; `None`: up to now and beyond.
    pub to_ms: Option<i64>,
    /// `None`: one group holding every matching record.
    pub group_by: Option<GroupBy>,
}

/// The totals of one group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageGroup {
    /// The group's value: a key id, team, customer, provider, model or day; `None` for requests without
    /// one (no virtual key, a key without a team), and for the single group of an ungrouped query.
    pub key: Option<String>,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
}

/// Why a query was refused; `param` names the query parameter at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct UsageQueryError {
    pub param: String,
    pub message: String,
}

fn refuse(param: &str, message: impl Into<String>) -> UsageQueryError {
    UsageQueryError { param: param.to_string(), message: message.into() }
}

const PARAMS: [&str; 8] = ["virtual_key", "team", "customer", "provider", "model", "from", "to", "group_by"];

impl UsageQuery {
    /// The query written as URL parameters (`virtual_key`, `team`, `customer`, `provider`, `model`, `from`,
    /// `to`, `group_by`). Unknown or repeated parameters, empty values, times that are not RFC 3339 (or a
    /// bare `YYYY-MM-DD`, midnight UTC) and an empty range are refused, each naming its parameter.
    pub fn from_params(params: &[(String, String)]) -> Result<UsageQuery, UsageQueryError> {
        let mut q = UsageQuery::default();
        let mut seen = std::collections::HashSet::new();
        for (name, value) in params {
            if !PARAMS.contains(&name.as_str()) {
                return Err(refuse(name, format!("unknown parameter; the usage query takes {}", PARAMS.join(", "))));
            }
            if !seen.insert(name.as_str()) {
                return Err(refuse(name, "given twice; give each parameter at most once"));
            }
            if value.is_empty() {
                return Err(refuse(name, "is empty; leave the parameter out instead"));
            }
            let text = Some(value.clone());
            match name.as_str() {
                "virtual_key" => q.virtual_key = text,
                "team" => q.team = text,
                "customer" => q.customer = text,
                "provider" => q.provider = text,
                "model" => q.model = text,
                "from" => q.from_ms = Some(parse_time(value).ok_or_else(|| bad_time("from", value))?),
                "to" => q.to_ms = Some(parse_time(value).ok_or_else(|| bad_time("to", value))?),
                _ => {
                    q.group_by = Some(GroupBy::parse(value).ok_or_else(|| {
                        let all: Vec<&str> = GroupBy::ALL.iter().map(|g| g.as_str()).collect();
                        refuse("group_by", format!("\"{value}\" is not one of {}", all.join(", ")))
                    })?)
                }
            }
        }
        if let (Some(f), Some(t)) = (q.from_ms, q.to_ms) {
            if f >= t {
                return Err(refuse("to", "must be later than from (the range is [from, to))"));
            }
        }
        Ok(q)
    }

    pub fn from_or_min(&self) -> i64 {
        self.from_ms.unwrap_or(i64::MIN)
    }

    pub fn to_or_max(&self) -> i64 {
        self.to_ms.unwrap_or(i64::MAX)
    }

    /// Whether `r` is one of the records asked for.
    pub fn matches(&self, r: &UsageRecord) -> bool {
        let is = |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| have == Some(w));
        r.at_ms >= self.from_or_min()
            && r.at_ms < self.to_or_max()
            && is(&self.virtual_key, r.virtual_key.as_deref())
            && is(&self.team, r.team.as_deref())
            && is(&self.customer, r.customer.as_deref())
            && is(&self.provider, Some(&r.provider))
            && is(&self.model, Some(&r.model))
    }

    /// The group a record falls in.
    pub fn group_of(&self, r: &UsageRecord) -> Option<String> {
        match self.group_by? {
            GroupBy::VirtualKey => r.virtual_key.clone(),
            GroupBy::Team => r.team.clone(),
            GroupBy::Customer => r.customer.clone(),
            GroupBy::Provider => Some(r.provider.clone()),
            GroupBy::Model => Some(r.model.clone()),
            GroupBy::Day => Some(day(r.at_ms)),
        }
    }
}

fn bad_time(param: &str, value: &str) -> UsageQueryError {
    refuse(param, format!("\"{value}\" is not an RFC 3339 time (such as 2026-01-31T00:00:00Z) or a date (2026-01-31, midnight UTC)"))
}

/// Answers a query over records in memory: what [`super::store::MemoryStore`] does, and the reference the
/// SQL stores are tested against. Groups come in order of their key, the group without one first.
pub fn aggregate<'a>(records: impl IntoIterator<Item = &'a UsageRecord>, q: &UsageQuery) -> Vec<UsageGroup> {
    let mut groups: BTreeMap<Option<String>, UsageGroup> = BTreeMap::new();
    if q.group_by.is_none() {
        groups.insert(None, UsageGroup::default());
    }
    for r in records.into_iter().filter(|r| q.matches(r)) {
        let key = q.group_of(r);
        let g = groups.entry(key.clone()).or_insert_with(|| UsageGroup { key, ..UsageGroup::default() });
        g.requests += 1;
        g.input_tokens += r.prompt_tokens;
        g.output_tokens += r.completion_tokens;
        g.cost_usd += r.cost_usd;
    }
    groups.into_values().take(MAX_GROUPS + 1).collect()
}

/// The UTC day of a Unix ms time, `YYYY-MM-DD`.
pub fn day(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(DAY_MS));
    format!("{y:04}-{m:02}-{d:02}")
}

/// A Unix ms time as RFC 3339 in UTC, to the millisecond: `2026-01-31T09:05:00.250Z`.
pub fn rfc3339(ms: i64) -> String {
    let rest = ms.rem_euclid(DAY_MS);
    let (h, min, s, milli) = (rest / 3_600_000, rest / 60_000 % 60, rest / 1000 % 60, rest % 1000);
    format!("{}T{h:02}:{min:02}:{s:02}.{milli:03}Z", day(ms))
}

/// Parses an RFC 3339 time (`2026-01-31T09:05:00Z`, `…T09:05:00.25+02:00`; `t` and a space for `T`, `z`
/// for `Z`) or a bare date (midnight UTC) into Unix ms.
pub fn parse_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
        return None;
    }
    let date_ms = days_from_civil(y, mo, d) * DAY_MS;
    if b.len() == 10 {
        return Some(date_ms);
    }
    if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 20 || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut at = 19;
    let mut frac_ms = 0;
    if b[at] == b'.' {
        let digits = b[at + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        // Milliseconds: further digits are below what the ledger keeps.
        let ms_digits = &s[at + 1..at + 1 + digits.min(3)];
        frac_ms = ms_digits.parse::<i64>().ok()? * 10_i64.pow(3 - ms_digits.len() as u32);
        at += 1 + digits;
    }
    let offset_min = match s.get(at..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) && tz.as_bytes()[3] == b':' => {
            let (oh, om) = (num(at + 1, 2)?, num(at + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (oh * 60 + om)
        }
        _ => return None,
    };
    // A leap second (:60) reads as the first second of the next minute.
    Some(date_ms + (h * 3600 + mi * 60 + sec) * 1000 + frac_ms - offset_min * 60_000)
}

const DAY_MS: i64 = 86_400_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn params(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn times_read_and_print_as_rfc_3339() {
        let t = parse_time("2026-01-31T09:05:00Z").unwrap();
        assert_eq!(rfc3339(t), "2026-01-31T09:05:00.000Z");
        assert_eq!(parse_time("2026-01-31T11:05:00.25+02:00"), Some(t + 250));
        assert_eq!(parse_time("2026-01-31t09:05:00.123456z"), Some(t + 123));
        assert_eq!(parse_time("2026-01-31"), Some(t - (9 * 3600 + 5 * 60) * 1000));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(day(-1), "1969-12-31");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        for bad in [
            "",
            "yesterday",
            "2026-02-30",
            "2026-13-01",
            "2026-01-31T25:00:00Z",
            "2026-01-31T09:05:00",
            "2026-01-31T09:05:00+2",
            "1700000000",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn queries_are_checked_parameter_by_parameter() {
        let q = UsageQuery::from_params(&params(&[("team", "vision"), ("from", "2026-01-01"), ("group_by", "day")])).unwrap();
        assert_eq!((q.team.as_deref(), q.group_by), (Some("vision"), Some(GroupBy::Day)));
        for (list, param) in [
            (vec![("grup_by", "day")], "grup_by"),
            (vec![("team", "a"), ("team", "b")], "team"),
            (vec![("model", "")], "model"),
            (vec![("from", "yesterday")], "from"),
            (vec![("group_by", "week")], "group_by"),
            (vec![("from", "2026-02-01"), ("to", "2026-01-01")], "to"),
        ] {
            let e = UsageQuery::from_params(&params(&list)).unwrap_err();
            assert_eq!(e.param, param, "{e}");
        }
    }

    #[test]
    fn records_are_totalled_per_group() {
        let r = |at_ms, key: Option<&str>, model: &str, cost| UsageRecord {
            at_ms,
            request_id: "r".into(),
            virtual_key: key.map(Into::into),
            team: None,
            customer: None,
            provider: "p".into(),
            model: model.into(),
            prompt_tokens: 10,
            completion_tokens: 2,
            cost_usd: cost,
        };
        let recs = [r(0, Some("a"), "m1", 1.0), r(DAY_MS, Some("a"), "m2", 2.0), r(DAY_MS + 5, None, "m1", 4.0)];
        let by_key = aggregate(&recs, &UsageQuery { group_by: Some(GroupBy::VirtualKey), ..UsageQuery::default() });
        assert_eq!(
            by_key.iter().map(|g| (g.key.clone(), g.requests, g.cost_usd)).collect::<Vec<_>>(),
            vec![(None, 1, 4.0), (Some("a".into()), 2, 3.0)]
        );
        let days = aggregate(&recs, &UsageQuery { group_by: Some(GroupBy::Day), model: Some("m1".into()), ..UsageQuery::default() });
        assert_eq!(days.iter().map(|g| g.key.clone().unwrap()).collect::<Vec<_>>(), vec!["1970-01-01", "1970-01-02"]);
        // Ungrouped: one group, also when nothing matches.
        let none = aggregate(&recs, &UsageQuery { from_ms: Some(10 * DAY_MS), ..UsageQuery::default() });
        assert_eq!(none, vec![UsageGroup::default()]);
        let all = aggregate(&recs, &UsageQuery { to_ms: Some(DAY_MS + 5), ..UsageQuery::default() });
        assert_eq!((all[0].requests, all[0].input_tokens, all[0].output_tokens), (2, 20, 4));
    }
}
