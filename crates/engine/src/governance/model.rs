//! The governance entities as they are written (in the configuration file, and later through the
//! management API, in Bifrost's shapes): customers, teams, virtual keys with their provider configs,
//! budgets, rate limits and residency. Plain data; the rules that use them are in the sibling modules.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A window length: `30s`, `5m`, `1h`, `1d`, `1w` (fixed lengths), or `1M`, `1Y` (calendar months and
/// years, in UTC). `m` is minutes and `M` months, as in Bifrost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Fixed(Duration),
    Months(u32),
}

impl Period {
    pub fn parse(s: &str) -> Option<Period> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit())?;
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().ok().filter(|n| *n > 0)?;
        let secs = |k: u64| n.checked_mul(k).map(|s| Period::Fixed(Duration::from_secs(s)));
        match unit {
            "s" => secs(1),
            "m" => secs(60),
            "h" => secs(3600),
            "d" => secs(86_400),
            "w" => secs(7 * 86_400),
            "M" => u32::try_from(n).ok().map(Period::Months),
            "Y" | "y" => u32::try_from(n).ok().and_then(|n| n.checked_mul(12)).map(Period::Months),
            _ => None,
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Period::Months(m) if m % 12 == 0 => write!(f, "{}Y", m / 12),
            Period::Months(m) => write!(f, "{m}M"),
            Period::Fixed(d) => {
                let s = d.as_secs();
                match s {
                    _ if s % (7 * 86_400) == 0 => write!(f, "{}w", s / (7 * 86_400)),
                    _ if s % 86_400 == 0 => write!(f, "{}d", s / 86_400),
                    _ if s % 3600 == 0 => write!(f, "{}h", s / 3600),
                    _ if s % 60 == 0 => write!(f, "{}m", s / 60),
                    _ => write!(f, "{s}s"),
                }
            }
        }
    }
}

impl Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Period::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("\"{s}\" is not a period; write 30s, 5m, 1h, 1d, 1w, 1M (calendar month) or 1Y"))
        })
    }
}

/// Spend in US dollars per window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// USD per window. 0 allows only what costs nothing (self-hosted providers, unless priced).
    pub max_limit: f64,
    /// The window; without it the budget never resets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_duration: Option<Period>,
    /// Windows start at calendar boundaries in UTC (the minute, hour, midnight, Monday, the 1st of the
    /// month, January 1st) instead of when the gateway first counted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub calendar_aligned: bool,
}

/// Requests and tokens per window (Bifrost's field names).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_max_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_reset_duration: Option<Period>,
    /// Input and output tokens together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_max_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_reset_duration: Option<Period>,
}

/// Which providers a key's requests may reach, by the providers' `tags`. A provider is allowed when it has
/// one of `allowed_tags` (if any are given) and none of `denied_tags`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Residency {
    #[serde(default)]
    pub allowed_tags: Vec<String>,
    #[serde(default)]
    pub denied_tags: Vec<String>,
}

impl Residency {
    pub fn allows(&self, tags: &[String]) -> bool {
        (self.allowed_tags.is_empty() || self.allowed_tags.iter().any(|t| tags.contains(t)))
            && !self.denied_tags.iter().any(|t| tags.contains(t))
    }

    pub fn is_restrictive(&self) -> bool {
        !self.allowed_tags.is_empty() || !self.denied_tags.is_empty()
    }
}

impl fmt::Display for Residency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.allowed_tags.is_empty() {
            parts.push(format!("only providers tagged {}", self.allowed_tags.join(" or ")));
        }
        if !self.denied_tags.is_empty() {
            parts.push(format!("never providers tagged {}", self.denied_tags.join(" or ")));
        }
        if parts.is_empty() {
            f.write_str("no restriction")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Team {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Applies to every key of the team, with the key's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residency: Option<Residency>,
}

/// A provider a virtual key may use, with its share and its own limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderGrant {
    pub provider: String,
    /// Empty: every model of the provider.
    #[serde(default)]
    pub allowed_models: Vec<String>,
    /// Share among the key's providers for a bare model name; 0: only as a fallback.
    #[serde(default = "one")]
    pub weight: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

fn one() -> f64 {
    1.0
}

impl ProviderGrant {
    pub fn allows(&self, model: &str) -> bool {
        self.allowed_models.is_empty() || self.allowed_models.iter().any(|m| m == model)
    }
}

/// A virtual key as written. `value` is the secret callers present; without one the `id` is the value (so
/// that scripts written for Bifrost, which use the id as the SDK's `api_key`, work), and the id is then a
/// secret too: the key is named by its `name` everywhere it is shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualKeySpec {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The secret, or `env.NAME`.
    #[serde(default, skip_serializing)]
    pub value: Option<String>,
    #[serde(default = "yes")]
    pub is_active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// Empty: every configured provider (filtered by residency).
    #[serde(default)]
    pub provider_configs: Vec<ProviderGrant>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Requests of this key in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residency: Option<Residency>,
    /// Record this key's request and response bodies in the request log when `logs.bodies` is on; needed
    /// for a residency-restricted key, whose bodies are otherwise never recorded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log_bodies: bool,
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_read_and_print_like_bifrost() {
        for (s, p) in [
            ("30s", Period::Fixed(Duration::from_secs(30))),
            ("1m", Period::Fixed(Duration::from_secs(60))),
            ("1h", Period::Fixed(Duration::from_secs(3600))),
            ("1d", Period::Fixed(Duration::from_secs(86_400))),
            ("1w", Period::Fixed(Duration::from_secs(604_800))),
            ("1M", Period::Months(1)),
            ("1Y", Period::Months(12)),
        ] {
            assert_eq!(Period::parse(s), Some(p), "{s}");
            assert_eq!(p.to_string(), s);
        }
        for bad in ["", "0d", "1x", "h", "-1d", "1.5h"] {
            assert_eq!(Period::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn residency_allows_by_tags() {
        let onprem = Residency { allowed_tags: vec!["on-prem".into()], denied_tags: vec![] };
        assert!(onprem.allows(&["on-prem".into(), "gpu".into()]));
        assert!(!onprem.allows(&["cloud".into()]));
        assert!(!onprem.allows(&[]));
        let no_cloud = Residency { allowed_tags: vec![], denied_tags: vec!["cloud".into()] };
        assert!(no_cloud.allows(&[]) && !no_cloud.allows(&["cloud".into(), "eu".into()]));
        assert!(Residency::default().allows(&["cloud".into()]) && !Residency::default().is_restrictive());
    }
}
