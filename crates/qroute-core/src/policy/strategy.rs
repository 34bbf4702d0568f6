//! Routing strategies: the learned policy and the fixed rules a product team
//! compares it with. Each one turns the candidates of a request into a
//! distribution (the propensities logged with the decision), so any
//! strategy's traffic can be evaluated off-policy later.
//!
//! The rule-based ones read the same per-candidate predictions the learned
//! policy makes (quality, cost and latency heads) plus the model cards, so
//! "quality-first" means "the model predicted best for this prompt", not a
//! static ranking.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::dqn::{OperatingPoint, Prediction};
use super::explore::argmax;

/// A named way of choosing among candidates. The field-less kinds are empty
/// struct variants (not unit variants) so that `deny_unknown_fields` holds
/// for them too: `{kind = "learned", checkpoint = …}` is an error, not a
/// silently ignored key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Strategy {
    /// The learned policy at the request's operating point, with its
    /// exploration (the gateway's default).
    Learned {},
    /// The best predicted `quality − cost − latency`, each normalised:
    /// the learned policy's greedy choice at λ = μ = 1.
    Balanced {},
    /// The highest predicted quality.
    QualityFirst {},
    /// The lowest predicted cost.
    CostOptimized {},
    /// The lowest predicted latency.
    SpeedPriority {},
    /// Each candidate in turn.
    RoundRobin {},
    /// At random with these relative weights (a candidate not named gets 0;
    /// if none is named, uniform).
    Weighted { weights: BTreeMap<String, f32> },
    /// Always this model (uniform if it is not a candidate).
    Fixed { model: String },
}

/// The names strategies go by in config and `/v1/capabilities`.
pub const STRATEGIES: &[&str] = &[
    "learned",
    "balanced",
    "quality_first",
    "cost_optimized",
    "speed_priority",
    "round_robin",
    "weighted",
    "fixed",
];

impl Strategy {
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Learned {} => "learned",
            Strategy::Balanced {} => "balanced",
            Strategy::QualityFirst {} => "quality_first",
            Strategy::CostOptimized {} => "cost_optimized",
            Strategy::SpeedPriority {} => "speed_priority",
            Strategy::RoundRobin {} => "round_robin",
            Strategy::Weighted { .. } => "weighted",
            Strategy::Fixed { .. } => "fixed",
        }
    }

    /// The distribution over `candidates` (ids, with their predictions),
    /// or `None` for [`Strategy::Learned {}`], whose distribution is the
    /// explorer's. Rules give probability 1 to their pick; round-robin's
    /// pick is deterministic given `turn`, which it advances.
    pub fn distribution(&self, candidates: &[&str], preds: &[Prediction], turn: &AtomicU64) -> Option<Vec<f32>> {
        let n = candidates.len();
        if n == 0 {
            return Some(Vec::new());
        }
        let one_hot = |i: usize| {
            let mut p = vec![0.0; n];
            p[i] = 1.0;
            p
        };
        let best_by = |f: &dyn Fn(&Prediction) -> f32| one_hot(argmax(&preds.iter().map(f).collect::<Vec<_>>()));
        Some(match self {
            Strategy::Learned {} => return None,
            Strategy::Balanced {} => best_by(&|p| {
                p.score(OperatingPoint {
                    cost_weight: 1.0,
                    latency_weight: 1.0,
                })
            }),
            Strategy::QualityFirst {} => best_by(&|p| p.quality),
            Strategy::CostOptimized {} => best_by(&|p| -p.cost),
            Strategy::SpeedPriority {} => best_by(&|p| -p.latency),
            Strategy::RoundRobin {} => one_hot((turn.fetch_add(1, Ordering::Relaxed) % n as u64) as usize),
            Strategy::Weighted { weights } => {
                let w: Vec<f32> = candidates
                    .iter()
                    .map(|c| weights.get(*c).copied().unwrap_or(0.0).max(0.0))
                    .collect();
                let total: f32 = w.iter().sum();
                if total > 0.0 && total.is_finite() {
                    w.iter().map(|x| x / total).collect()
                } else {
                    vec![1.0 / n as f32; n]
                }
            }
            Strategy::Fixed { model } => match candidates.iter().position(|c| c == model) {
                Some(i) => one_hot(i),
                None => vec![1.0 / n as f32; n],
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preds() -> Vec<Prediction> {
        vec![
            // dear, good, slow
            Prediction {
                quality: 0.9,
                cost: 2.0,
                latency: 3.0,
            },
            // cheap, weak, fast
            Prediction {
                quality: 0.5,
                cost: 0.1,
                latency: 0.2,
            },
            // middle
            Prediction {
                quality: 0.8,
                cost: 0.3,
                latency: 1.0,
            },
        ]
    }

    const C: &[&str] = &["dear", "cheap", "mid"];

    fn pick(s: &Strategy) -> Vec<f32> {
        s.distribution(C, &preds(), &AtomicU64::new(0)).unwrap()
    }

    #[test]
    fn rules_pick_by_their_criterion() {
        assert_eq!(pick(&Strategy::QualityFirst {}), [1.0, 0.0, 0.0]);
        assert_eq!(pick(&Strategy::CostOptimized {}), [0.0, 1.0, 0.0]);
        assert_eq!(pick(&Strategy::SpeedPriority {}), [0.0, 1.0, 0.0]);
        // 0.9−2−3 = −4.1, 0.5−0.1−0.2 = 0.2, 0.8−0.3−1 = −0.5
        assert_eq!(pick(&Strategy::Balanced {}), [0.0, 1.0, 0.0]);
        assert_eq!(pick(&Strategy::Fixed { model: "mid".into() }), [0.0, 0.0, 1.0]);
        let absent = pick(&Strategy::Fixed { model: "gone".into() });
        assert!(absent.iter().all(|p| (p - 1.0 / 3.0).abs() < 1e-6));
        assert!(Strategy::Learned {}
            .distribution(C, &preds(), &AtomicU64::new(0))
            .is_none());
    }

    #[test]
    fn round_robin_takes_turns_and_weighted_normalises() {
        let turn = AtomicU64::new(0);
        let picks: Vec<usize> = (0..6)
            .map(|_| argmax(&Strategy::RoundRobin {}.distribution(C, &preds(), &turn).unwrap()))
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        let w = Strategy::Weighted {
            weights: [
                ("dear".to_string(), 1.0),
                ("cheap".to_string(), 3.0),
                ("other".to_string(), 9.0),
            ]
            .into(),
        };
        assert_eq!(pick(&w), [0.25, 0.75, 0.0]);
        let none = Strategy::Weighted {
            weights: BTreeMap::new(),
        };
        assert!(pick(&none).iter().all(|p| (p - 1.0 / 3.0).abs() < 1e-6));
    }

    #[test]
    fn strategies_read_from_config() {
        let s: Strategy = toml::from_str("kind = \"weighted\"\nweights = { a = 1.0, b = 2.0 }").unwrap();
        assert_eq!(s.name(), "weighted");
        let s: Strategy = toml::from_str("kind = \"fixed\"\nmodel = \"a\"").unwrap();
        assert_eq!(s, Strategy::Fixed { model: "a".into() });
        assert!(toml::from_str::<Strategy>("kind = \"fixed\"\nmodle = \"a\"").is_err());
        assert!(toml::from_str::<Strategy>("kind = \"learned\"\ncheckpoint = \"a\"").is_err());
        assert_eq!(
            toml::from_str::<Strategy>("kind = \"learned\"").unwrap(),
            Strategy::Learned {}
        );
        for name in STRATEGIES {
            assert!(
                toml::from_str::<Strategy>(&format!("kind = \"{name}\"")).is_ok()
                    || matches!(*name, "weighted" | "fixed"),
                "{name}"
            );
        }
    }
}
