//! Weighted key choice among a provider's keys.
//!
//! Kept apart from the executor so the distribution can be tested over many draws without any I/O.

use crate::config::KeyConfig;

/// Whether the key's allow-list admits `model` (an empty list admits any).
pub fn allows(key: &KeyConfig, model: &str) -> bool {
    key.models.is_empty() || key.models.iter().any(|m| m == model)
}

/// Picks one of `candidates` (indices into `keys`) at random in proportion to its weight.
pub fn choose_among(keys: &[KeyConfig], candidates: &[usize], rng: &mut fastrand::Rng) -> Option<usize> {
    let total: f64 = candidates.iter().map(|&i| keys[i].weight).sum();
    if total <= 0.0 {
        return None;
    }
    let mut x = rng.f64() * total;
    for &i in candidates {
        if x < keys[i].weight {
            return Some(i);
        }
        x -= keys[i].weight;
    }
    // Floating-point rounding can leave x a hair above the last weight.
    candidates.last().copied()
}

/// Picks a key at random in proportion to its weight, among the keys whose allow-list admits `model`.
/// `None` when no key may serve the model.
pub fn choose<'a>(keys: &'a [KeyConfig], model: &str, rng: &mut fastrand::Rng) -> Option<&'a KeyConfig> {
    let candidates: Vec<usize> = (0..keys.len()).filter(|&i| allows(&keys[i], model)).collect();
    choose_among(keys, &candidates, rng).map(|i| &keys[i])
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
