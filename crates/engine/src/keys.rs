//! Weighted key choice among a provider's keys.
//!
//! Kept apart from the executor so the distribution can be tested over many draws without any I/O.

use crate::config::KeyConfig;

/// Picks a key at random in proportion to its weight, among the keys whose allow-list admits `model`.
/// `None` when no key may serve the model.
pub fn choose<'a>(keys: &'a [KeyConfig], model: &str, rng: &mut fastrand::Rng) -> Option<&'a KeyConfig> {
    let eligible = |k: &&KeyConfig| k.models.is_empty() || k.models.iter().any(|m| m == model);
    let total: f64 = keys.iter().filter(eligible).map(|k| k.weight).sum();
    if total <= 0.0 {
        return None;
    }
    let mut x = rng.f64() * total;
    let mut last = None;
    for k in keys.iter().filter(eligible) {
        if x < k.weight {
            return Some(k);
        }
        x -= k.weight;
        last = Some(k);
    }
    // Floating-point rounding can leave x a hair above the last weight.
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn key(name: &str, weight: f64, models: &[&str]) -> KeyConfig {
        KeyConfig { name: name.into(), secret: SecretString::from("s"), weight, models: models.iter().map(|m| m.to_string()).collect() }
    }

    #[test]
    fn split_follows_weights_within_two_points() {
        let keys = [key("primary", 0.7, &[]), key("failover", 0.3, &[])];
        let mut rng = fastrand::Rng::with_seed(42);
        let n = 10_000;
        let primary = (0..n).filter(|_| choose(&keys, "m", &mut rng).unwrap().name == "primary").count();
        let share = primary as f64 / n as f64;
        assert!((0.68..=0.72).contains(&share), "primary share {share}");
    }

    #[test]
    fn allow_lists_are_respected() {
        let keys = [key("mini-only", 5.0, &["gpt-4o-mini"]), key("any", 1.0, &[])];
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..1000 {
            assert_eq!(choose(&keys, "gpt-4o", &mut rng).unwrap().name, "any");
        }
        let keys = [key("mini-only", 1.0, &["gpt-4o-mini"])];
        assert!(choose(&keys, "gpt-4o", &mut rng).is_none());
    }
}
