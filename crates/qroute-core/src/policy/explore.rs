//! Exploration with honest propensities.
//!
//! Every distribution is floored: each candidate keeps at least `floor`
//! probability, so off-policy estimators (IPS, DR) never divide by zero. The
//! probability of what was chosen is returned exactly as it was used.

use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;
use serde::{Deserialize, Serialize};

/// How to turn scores into a distribution over candidates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Exploration {
    /// Inverse-gap weighting (Foster & Rakhlin's SquareCB): a candidate whose
    /// score trails the best by `gap` gets `1 / (K + gamma·gap)`; the best
    /// gets the rest. Larger `gamma` explores less.
    SquareCb { gamma: f32 },
    /// `p ∝ exp(score / temperature)`.
    Softmax { temperature: f32 },
    /// The best with `1 − epsilon`, a uniform pick otherwise.
    EpsilonGreedy { epsilon: f32 },
    /// Always the best (still floored).
    Greedy,
}

impl Default for Exploration {
    fn default() -> Self {
        Exploration::SquareCb { gamma: 200.0 }
    }
}

/// One sampled decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// Probability of each candidate, summing to 1.
    pub propensities: Vec<f32>,
    /// Index of the candidate chosen.
    pub chosen: usize,
    /// Index of the best-scoring candidate.
    pub greedy: usize,
}

impl Choice {
    pub fn propensity(&self) -> f32 {
        self.propensities[self.chosen]
    }
}

/// The models (candidate indices) run for one prompt, with the probability of each
/// draw (for k > 1, each draw's probability given the earlier ones).
#[derive(Debug, Clone, PartialEq)]
pub struct Pick {
    pub models: Vec<usize>,
    pub propensities: Vec<f32>,
}

/// Draws `k` distinct indices, each from `dist` renormalised over what is
/// left; returns them with each draw's conditional probability.
///
/// When what is left has no probability at all (a floor of 0 under greedy
/// exploration), the next draw is uniform over the indices not yet drawn,
/// so `k` distinct indices always come back (fewer only if `dist` is shorter).
pub fn draw_without_replacement(dist: &[f32], k: usize, rng: &mut impl Rng) -> Pick {
    let mut left: Vec<f32> = dist.to_vec();
    let mut taken = vec![false; dist.len()];
    let mut pick = Pick {
        models: Vec::with_capacity(k),
        propensities: Vec::with_capacity(k),
    };
    for _ in 0..k.min(dist.len()) {
        let total: f32 = left.iter().sum();
        let (chosen, p) = if total > 0.0 {
            let mut u = rng.gen::<f32>() * total;
            let mut chosen = left.iter().rposition(|&p| p > 0.0).unwrap_or(0);
            for (i, &p) in left.iter().enumerate() {
                if p > 0.0 && u < p {
                    chosen = i;
                    break;
                }
                u -= p;
            }
            (chosen, left[chosen] / total)
        } else {
            let free: Vec<usize> = (0..dist.len()).filter(|&i| !taken[i]).collect();
            (free[rng.gen_range(0..free.len())], 1.0 / free.len() as f32)
        };
        pick.models.push(chosen);
        pick.propensities.push(p);
        left[chosen] = 0.0;
        taken[chosen] = true;
    }
    pick
}

/// Samples decisions. Shared across threads; the budget counters are atomic.
#[derive(Debug)]
pub struct Explorer {
    pub kind: Exploration,
    /// Least probability of any candidate (capped at half of `1/K`).
    pub floor: f32,
    /// Most expected share of non-greedy decisions; past it the explorer is
    /// greedy (floored) until the share falls back under the cap.
    pub budget: Option<f32>,
    decisions: AtomicU64,
    /// Expected exploration mass so far, in millionths.
    explored_micros: AtomicU64,
}

impl Clone for Explorer {
    fn clone(&self) -> Self {
        Explorer::new(self.kind, self.floor, self.budget)
    }
}

impl Explorer {
    pub fn new(kind: Exploration, floor: f32, budget: Option<f32>) -> Explorer {
        Explorer {
            kind,
            floor,
            budget,
            decisions: AtomicU64::new(0),
            explored_micros: AtomicU64::new(0),
        }
    }

    /// The distribution over candidates for these scores (higher is better).
    pub fn distribution(&self, scores: &[f32]) -> Vec<f32> {
        distribution(self.effective_kind(), self.floor, scores)
    }

    /// Samples one candidate and records it against the budget; `None` when
    /// there is nothing to choose from.
    pub fn choose(&self, scores: &[f32], rng: &mut impl Rng) -> Option<Choice> {
        if scores.is_empty() {
            return None;
        }
        let p = self.distribution(scores);
        let greedy = argmax(scores);
        let u: f32 = rng.gen();
        let mut acc = 0.0;
        let mut chosen = p.len() - 1;
        for (i, &pi) in p.iter().enumerate() {
            acc += pi;
            if u < acc {
                chosen = i;
                break;
            }
        }
        self.decisions.fetch_add(1, Ordering::Relaxed);
        let mass = ((1.0 - p[greedy]) * 1e6) as u64;
        self.explored_micros.fetch_add(mass, Ordering::Relaxed);
        Some(Choice {
            propensities: p,
            chosen,
            greedy,
        })
    }

    /// Share of expected exploration so far.
    pub fn explored_share(&self) -> f32 {
        let n = self.decisions.load(Ordering::Relaxed);
        if n == 0 {
            return 0.0;
        }
        self.explored_micros.load(Ordering::Relaxed) as f32 / 1e6 / n as f32
    }

    fn effective_kind(&self) -> Exploration {
        match self.budget {
            Some(b) if self.explored_share() > b => Exploration::Greedy,
            _ => self.kind,
        }
    }
}

/// Index of the highest score; the first on ties.
pub fn argmax(scores: &[f32]) -> usize {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] {
            best = i;
        }
    }
    best
}

/// The floored distribution of `kind` over `scores`.
pub fn distribution(kind: Exploration, floor: f32, scores: &[f32]) -> Vec<f32> {
    let k = scores.len();
    let best = argmax(scores);
    let mut p = vec![0f32; k];
    match kind {
        Exploration::Greedy => p[best] = 1.0,
        Exploration::EpsilonGreedy { epsilon } => {
            let e = epsilon.clamp(0.0, 1.0);
            p.iter_mut().for_each(|v| *v = e / k as f32);
            p[best] += 1.0 - e;
        }
        Exploration::Softmax { temperature } => {
            let t = temperature.max(1e-6);
            let m = scores[best];
            let mut z = 0.0;
            for (pi, &s) in p.iter_mut().zip(scores) {
                *pi = ((s - m) / t).exp();
                z += *pi;
            }
            p.iter_mut().for_each(|v| *v /= z);
        }
        Exploration::SquareCb { gamma } => {
            let mut rest = 0.0;
            for (i, (pi, &s)) in p.iter_mut().zip(scores).enumerate() {
                if i != best {
                    *pi = 1.0 / (k as f32 + gamma.max(0.0) * (scores[best] - s));
                    rest += *pi;
                }
            }
            p[best] = 1.0 - rest;
        }
    }
    // Floor: mix with uniform so every entry is at least `floor`.
    let f = floor.clamp(0.0, 0.5 / k as f32);
    if f > 0.0 {
        let keep = 1.0 - k as f32 * f;
        p.iter_mut().for_each(|v| *v = keep * *v + f);
    }
    // Exact normalisation against rounding.
    let z: f32 = p.iter().sum();
    p.iter_mut().for_each(|v| *v /= z);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const KINDS: [Exploration; 4] = [
        Exploration::SquareCb { gamma: 20.0 },
        Exploration::Softmax { temperature: 0.2 },
        Exploration::EpsilonGreedy { epsilon: 0.3 },
        Exploration::Greedy,
    ];

    #[test]
    fn propensities_sum_to_one_and_are_floored() {
        let scores = [0.9, 0.1, 0.5, -3.0, 0.89];
        for kind in KINDS {
            let p = distribution(kind, 0.01, &scores);
            let sum: f32 = p.iter().sum();
            assert!((sum - 1.0).abs() < 1e-6, "{kind:?} sums to {sum}");
            assert!(p.iter().all(|&v| v >= 0.01 - 1e-7), "{kind:?}: {p:?}");
            assert_eq!(argmax(&p), 0, "{kind:?} favours the best");
        }
    }

    #[test]
    fn squarecb_weights_by_inverse_gap() {
        let p = distribution(Exploration::SquareCb { gamma: 10.0 }, 0.0, &[1.0, 0.5, 0.0]);
        assert!((p[1] - 1.0 / (3.0 + 5.0)).abs() < 1e-6);
        assert!((p[2] - 1.0 / (3.0 + 10.0)).abs() < 1e-6);
        assert!(p[1] > p[2]);
    }

    /// The logged propensities are the frequencies the sampler produces.
    #[test]
    fn propensities_match_sampled_frequencies() {
        let scores = [0.2, 0.6, 0.55, 0.0];
        for kind in KINDS {
            let ex = Explorer::new(kind, 0.02, None);
            let mut rng = ChaCha8Rng::seed_from_u64(42);
            let n = 200_000;
            let mut counts = [0usize; 4];
            let mut p = Vec::new();
            for _ in 0..n {
                let c = ex.choose(&scores, &mut rng).unwrap();
                assert_eq!(c.greedy, 1);
                counts[c.chosen] += 1;
                p = c.propensities;
            }
            for i in 0..4 {
                let freq = counts[i] as f32 / n as f32;
                // 5 standard errors of a binomial proportion.
                let se = (p[i] * (1.0 - p[i]) / n as f32).sqrt();
                assert!(
                    (freq - p[i]).abs() < 5.0 * se + 1e-4,
                    "{kind:?} arm {i}: freq {freq} vs p {}",
                    p[i]
                );
            }
        }
    }

    #[test]
    fn budget_caps_exploration() {
        let ex = Explorer::new(Exploration::EpsilonGreedy { epsilon: 0.5 }, 0.0, Some(0.1));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..10_000 {
            ex.choose(&[1.0, 0.0, 0.0, 0.0], &mut rng);
        }
        let share = ex.explored_share();
        assert!(share <= 0.11, "explored share {share} over the 0.1 budget");
        assert!(share > 0.05, "budget is used, not starved: {share}");
    }

    #[test]
    fn no_candidates_is_none() {
        let ex = Explorer::new(Exploration::default(), 0.01, None);
        assert!(ex.choose(&[], &mut ChaCha8Rng::seed_from_u64(0)).is_none());
    }

    #[test]
    fn single_candidate_gets_probability_one() {
        for kind in KINDS {
            assert_eq!(distribution(kind, 0.1, &[3.0]), vec![1.0]);
        }
    }
}
