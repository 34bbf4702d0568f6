//! Sticky assignment of experiment units to arms.
//!
//! A unit (user id, tenant, conversation id, ...) is mapped to an arm by
//! hashing `(experiment_id, unit)` with a hash written out here (FNV-1a over
//! the bytes followed by the SplitMix64 finaliser). Because the hash is fixed
//! by this code and not by the standard library (std's `DefaultHasher` may
//! change between Rust releases and `RandomState` is seeded per process), the
//! same unit lands in the same arm in every process, after every restart and
//! on every replica. Because the experiment id is hashed in, two experiments
//! over the same units get statistically independent splits: being in arm 0
//! of one experiment says nothing about the arm in another.

use serde::{Deserialize, Serialize};

use qroute_core::{Error, Result};

/// One arm of an experiment: a name (usually a strategy name) and a relative
/// traffic weight. Weights need not sum to one; they are normalised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arm {
    pub name: String,
    pub weight: f64,
}

impl Arm {
    /// Convenience constructor.
    pub fn new(name: &str, weight: f64) -> Arm {
        Arm {
            name: name.to_string(),
            weight,
        }
    }
}

/// Where a unit was assigned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Assignment {
    /// Excluded from the experiment (served by the default path).
    Holdout,
    /// In arm `index` (position in the arm list) named `name`. `propensity`
    /// is the probability that a random unit lands in this arm, i.e. the
    /// arm's normalised weight times `1 - holdout`.
    Arm {
        index: usize,
        name: String,
        propensity: f64,
    },
}

/// Deterministic, sticky assigner for one experiment.
#[derive(Debug, Clone)]
pub struct Assigner {
    experiment_id: String,
    arms: Vec<Arm>,
    holdout: f64,
    /// Cumulative normalised weights; the last entry is 1.
    cumulative: Vec<f64>,
    /// Normalised weights (share of the non-holdout traffic).
    shares: Vec<f64>,
}

impl Assigner {
    /// Builds an assigner. Fails with [`Error::InvalidInput`] unless there is
    /// at least one arm, every weight is finite and `>= 0`, the weights have a
    /// positive sum, arm names are unique, and `holdout` lies in `[0, 1)`.
    pub fn new(experiment_id: &str, arms: Vec<Arm>, holdout: f64) -> Result<Assigner> {
        if arms.is_empty() {
            return Err(Error::InvalidInput("experiment needs at least one arm".into()));
        }
        if !(0.0..1.0).contains(&holdout) {
            return Err(Error::InvalidInput(format!(
                "holdout must lie in [0, 1), got {holdout}"
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for arm in &arms {
            if !arm.weight.is_finite() || arm.weight < 0.0 {
                return Err(Error::InvalidInput(format!(
                    "arm `{}`: weight must be finite and >= 0, got {}",
                    arm.name, arm.weight
                )));
            }
            if !seen.insert(arm.name.as_str()) {
                return Err(Error::InvalidInput(format!("duplicate arm name `{}`", arm.name)));
            }
        }
        let total: f64 = arms.iter().map(|a| a.weight).sum();
        if !(total > 0.0 && total.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "arm weights must have a positive finite sum, got {total}"
            )));
        }
        let shares: Vec<f64> = arms.iter().map(|a| a.weight / total).collect();
        let mut acc = 0.0;
        let mut cumulative: Vec<f64> = shares
            .iter()
            .map(|s| {
                acc += s;
                acc
            })
            .collect();
        // Guard against rounding: the last arm with positive weight closes at 1.
        if let Some(last) = shares.iter().rposition(|&s| s > 0.0) {
            for c in cumulative.iter_mut().skip(last) {
                *c = 1.0;
            }
        }
        Ok(Assigner {
            experiment_id: experiment_id.to_string(),
            arms,
            holdout,
            cumulative,
            shares,
        })
    }

    /// The experiment id that salts the hash.
    pub fn experiment_id(&self) -> &str {
        &self.experiment_id
    }

    /// The arms, in the order given to [`Assigner::new`].
    pub fn arms(&self) -> &[Arm] {
        &self.arms
    }

    /// The holdout fraction.
    pub fn holdout(&self) -> f64 {
        self.holdout
    }

    /// Probability that a random unit lands in arm `index`.
    pub fn propensity(&self, index: usize) -> f64 {
        self.shares[index] * (1.0 - self.holdout)
    }

    /// Assigns `unit`. Pure function of `(experiment_id, unit)` and the
    /// configuration: the same inputs give the same answer in any process.
    ///
    /// The hash gives `u` uniform in `[0, 1)`. `u < holdout` is the holdout;
    /// otherwise `(u - holdout) / (1 - holdout)` is mapped through the
    /// cumulative normalised weights.
    pub fn assign(&self, unit: &str) -> Assignment {
        let u = unit_interval(stable_hash(&self.experiment_id, unit));
        if u < self.holdout {
            return Assignment::Holdout;
        }
        let v = (u - self.holdout) / (1.0 - self.holdout);
        let index = self
            .cumulative
            .iter()
            .position(|&c| v < c)
            .unwrap_or_else(|| self.shares.iter().rposition(|&s| s > 0.0).unwrap_or(0));
        Assignment::Arm {
            index,
            name: self.arms[index].name.clone(),
            propensity: self.propensity(index),
        }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// SplitMix64 finaliser: spreads FNV's weak low-order mixing over all bits.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Stable 64-bit hash of `(experiment_id, unit)`. The id is length-prefixed so
/// that `("ab", "c")` and `("a", "bc")` hash differently.
pub fn stable_hash(experiment_id: &str, unit: &str) -> u64 {
    let mut h = fnv1a(FNV_OFFSET, &(experiment_id.len() as u64).to_le_bytes());
    h = fnv1a(h, experiment_id.as_bytes());
    h = fnv1a(h, unit.as_bytes());
    splitmix64(h)
}

/// Top 53 bits of `h` as a float in `[0, 1)`.
fn unit_interval(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn arms(ws: &[f64]) -> Vec<Arm> {
        ws.iter()
            .enumerate()
            .map(|(i, &w)| Arm::new(&format!("arm{i}"), w))
            .collect()
    }

    fn random_units(n: usize, seed: u64) -> Vec<String> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| format!("user-{:016x}", rng.gen::<u64>())).collect()
    }

    fn index(a: &Assignment) -> Option<usize> {
        match a {
            Assignment::Holdout => None,
            Assignment::Arm { index, .. } => Some(*index),
        }
    }

    #[test]
    fn hash_is_pinned() {
        // Pins the hash so an accidental change (which would reshuffle every
        // running experiment) fails loudly.
        assert_eq!(stable_hash("exp", "unit"), stable_hash("exp", "unit"));
        assert_ne!(stable_hash("ab", "c"), stable_hash("a", "bc"));
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn sticky_within_and_across_instances() {
        let a = Assigner::new("exp-1", arms(&[1.0, 2.0, 3.0]), 0.1).unwrap();
        let b = Assigner::new("exp-1", arms(&[1.0, 2.0, 3.0]), 0.1).unwrap();
        for unit in random_units(2000, 1) {
            let first = a.assign(&unit);
            assert_eq!(first, a.assign(&unit));
            assert_eq!(first, b.assign(&unit));
        }
    }

    #[test]
    fn split_matches_weights_and_holdout() {
        let weights = [1.0, 2.0, 0.0, 5.0];
        let holdout = 0.2;
        let a = Assigner::new("split", arms(&weights), holdout).unwrap();
        let n = 100_000;
        let mut counts = [0usize; 4];
        let mut held = 0usize;
        for unit in random_units(n, 2) {
            match a.assign(&unit) {
                Assignment::Holdout => held += 1,
                Assignment::Arm { index, propensity, .. } => {
                    counts[index] += 1;
                    assert!((propensity - a.propensity(index)).abs() < 1e-15);
                }
            }
        }
        assert!((held as f64 / n as f64 - holdout).abs() < 0.01, "holdout {held}");
        assert_eq!(counts[2], 0, "zero-weight arm must get nothing");
        let total: f64 = weights.iter().sum();
        for (i, &w) in weights.iter().enumerate() {
            let expected = w / total * (1.0 - holdout);
            assert!((a.propensity(i) - expected).abs() < 1e-12);
            let got = counts[i] as f64 / n as f64;
            assert!((got - expected).abs() < 0.01, "arm {i}: {got} vs {expected}");
        }
    }

    #[test]
    fn experiments_are_independent() {
        let a = Assigner::new("exp-a", arms(&[0.3, 0.7]), 0.0).unwrap();
        let b = Assigner::new("exp-b", arms(&[0.3, 0.7]), 0.0).unwrap();
        let units = random_units(100_000, 3);
        let agree = units
            .iter()
            .filter(|u| index(&a.assign(u)) == index(&b.assign(u)))
            .count();
        let rate = agree as f64 / units.len() as f64;
        // Independence predicts 0.3² + 0.7² = 0.58; identical splits would give 1.
        assert!((rate - 0.58).abs() < 0.01, "agreement {rate}");
        // Joint cell (arm0, arm0) should be ≈ 0.09.
        let both0 = units
            .iter()
            .filter(|u| index(&a.assign(u)) == Some(0) && index(&b.assign(u)) == Some(0))
            .count() as f64
            / units.len() as f64;
        assert!((both0 - 0.09).abs() < 0.01, "joint {both0}");
    }

    #[test]
    fn validation_errors() {
        let bad =
            |arms: Vec<Arm>, holdout: f64| matches!(Assigner::new("e", arms, holdout), Err(Error::InvalidInput(_)));
        assert!(bad(vec![], 0.0));
        assert!(bad(arms(&[1.0, -1.0]), 0.0));
        assert!(bad(arms(&[1.0, f64::NAN]), 0.0));
        assert!(bad(arms(&[1.0, f64::INFINITY]), 0.0));
        assert!(bad(arms(&[0.0, 0.0]), 0.0));
        assert!(bad(vec![Arm::new("x", 1.0), Arm::new("x", 1.0)], 0.0));
        assert!(bad(arms(&[1.0]), 1.0));
        assert!(bad(arms(&[1.0]), -0.1));
        assert!(bad(arms(&[1.0]), f64::NAN));
        assert!(Assigner::new("e", arms(&[1.0]), 0.0).is_ok());
        assert!(Assigner::new("e", arms(&[0.0, 1.0]), 0.99).is_ok());
    }

    #[test]
    fn arm_serde_roundtrip() {
        let arm = Arm::new("greedy", 0.5);
        let json = serde_json::to_string(&arm).unwrap();
        assert_eq!(serde_json::from_str::<Arm>(&json).unwrap(), arm);
    }
}
