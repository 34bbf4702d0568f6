//! Contextual-bandit policies for the simulator: the standard baselines
//! (uniform, best single model in hindsight, ε-greedy linear, LinUCB,
//! linear Thompson sampling) and qroute's DQN behind one trait.
//!
//! The linear baselines see the same features as the DQN, projected to a
//! small dense space by a fixed seeded random projection: their d×d
//! matrices cannot be kept at the full 8192 dimensions.

use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use qroute_core::features::Features;
pub use qroute_core::policy::explore::{draw_without_replacement, Pick};

/// What a policy may learn from: the outcome of a model it ran, and nothing
/// about the models it did not run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Feedback {
    /// Index of the model that ran.
    pub model: usize,
    pub quality: f32,
    pub cost_usd: f64,
    pub latency_ms: Option<f64>,
    /// `quality − λ·cost/C`.
    pub reward: f32,
}

/// A policy in the simulator.
pub trait BanditPolicy {
    fn name(&self) -> &str;
    /// Chooses `k` distinct models for a prompt.
    fn choose(&mut self, id: &str, x: &Features, k: usize) -> Pick;
    /// Learns from the outcomes of the models it chose, and only those.
    fn learn(&mut self, id: &str, x: &Features, pick: &Pick, feedback: &[Feedback]);
    /// The model it would run with exploration off (for held-out
    /// evaluation while it learns).
    fn best(&mut self, id: &str, x: &Features) -> usize;
    /// In a cascade, after the answers so far (`answers`: each model run
    /// with its answer's text, in call order): which answer to keep, or
    /// another model to call (never one already run). A policy that cannot
    /// read answers keeps the first.
    fn cascade_step(&mut self, _prompt: &str, _x: &Features, _answers: &[(usize, &str)], _max_calls: usize) -> Step {
        Step::Keep(0)
    }
    /// Learns what an answer's text says about its quality (for the next
    /// [`BanditPolicy::cascade_step`]); policies that cannot read answers
    /// ignore it.
    fn learn_answer(&mut self, _prompt: &str, _x: &Features, _model: usize, _answer: &str, _quality: f32) {}
}

/// What a cascade does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Return the answer at this position of the answers so far.
    Keep(usize),
    /// Run this model too.
    Call(usize),
}

/// The `k` highest scores, best first, each with probability 1.
fn top_k(scores: &[f32], k: usize) -> Pick {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(k);
    Pick {
        propensities: vec![1.0; idx.len()],
        models: idx,
    }
}

/// Uniformly random models.
pub struct Uniform {
    pub models: usize,
    pub rng: ChaCha8Rng,
}

impl BanditPolicy for Uniform {
    fn name(&self) -> &str {
        "uniform"
    }
    fn choose(&mut self, _: &str, _: &Features, k: usize) -> Pick {
        draw_without_replacement(&vec![1.0 / self.models as f32; self.models], k, &mut self.rng)
    }
    fn learn(&mut self, _: &str, _: &Features, _: &Pick, _: &[Feedback]) {}
    /// Uniform has no preference: a random model.
    fn best(&mut self, id: &str, x: &Features) -> usize {
        self.choose(id, x, 1).models[0]
    }
}

/// The single model with the best mean reward over the stream, known in
/// hindsight (from the full table): the bar a router must clear.
pub struct BestSingle {
    pub ranking: Vec<usize>,
}

impl BanditPolicy for BestSingle {
    fn name(&self) -> &str {
        "best-single"
    }
    fn choose(&mut self, _: &str, _: &Features, k: usize) -> Pick {
        let models: Vec<usize> = self.ranking.iter().copied().take(k).collect();
        Pick {
            propensities: vec![1.0; models.len()],
            models,
        }
    }
    fn learn(&mut self, _: &str, _: &Features, _: &Pick, _: &[Feedback]) {}
    fn best(&mut self, _: &str, _: &Features) -> usize {
        self.ranking[0]
    }
}

/// A fixed Gaussian random projection of the sparse features to `d`
/// dimensions, plus a constant 1.
pub struct Projection {
    d: usize,
    seed: u64,
}

impl Projection {
    pub fn new(d: usize, seed: u64) -> Projection {
        Projection { d, seed }
    }

    pub fn dim(&self) -> usize {
        self.d + 1
    }

    /// Column `i` of the projection is generated from `(seed, i)`, so the
    /// matrix is never stored.
    pub fn apply(&self, x: &Features) -> Vec<f64> {
        let mut z = vec![0f64; self.d + 1];
        let scale = 1.0 / (self.d as f64).sqrt();
        for (i, v) in x.iter() {
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            for zj in z.iter_mut().take(self.d) {
                let g: f64 = if rng.gen::<bool>() { 1.0 } else { -1.0 };
                *zj += v as f64 * g * scale;
            }
        }
        z[self.d] = 1.0;
        z
    }
}

/// Ridge regression of reward on features for one model, kept as the
/// inverse of `A = λI + Σ x xᵀ` (Sherman–Morrison updates) and `b = Σ r x`.
#[derive(Debug, Clone)]
pub struct Ridge {
    a_inv: Vec<f64>,
    b: Vec<f64>,
    d: usize,
}

impl Ridge {
    pub fn new(d: usize, lambda: f64) -> Ridge {
        let mut a_inv = vec![0.0; d * d];
        for i in 0..d {
            a_inv[i * d + i] = 1.0 / lambda;
        }
        Ridge {
            a_inv,
            b: vec![0.0; d],
            d,
        }
    }

    fn a_inv_x(&self, x: &[f64]) -> Vec<f64> {
        (0..self.d)
            .map(|i| {
                self.a_inv[i * self.d..(i + 1) * self.d]
                    .iter()
                    .zip(x)
                    .map(|(a, b)| a * b)
                    .sum()
            })
            .collect()
    }

    /// `(θᵀx, xᵀA⁻¹x)`: the estimate and its variance factor.
    pub fn predict(&self, x: &[f64]) -> (f64, f64) {
        let ax = self.a_inv_x(x);
        let theta_x: f64 = ax.iter().zip(&self.b).map(|(a, b)| a * b).sum();
        let var: f64 = ax.iter().zip(x).map(|(a, b)| a * b).sum();
        (theta_x, var.max(0.0))
    }

    pub fn update(&mut self, x: &[f64], r: f64) {
        let ax = self.a_inv_x(x);
        let denom = 1.0 + ax.iter().zip(x).map(|(a, b)| a * b).sum::<f64>();
        let d = self.d;
        for i in 0..d {
            for j in 0..d {
                self.a_inv[i * d + j] -= ax[i] * ax[j] / denom;
            }
        }
        for (bi, xi) in self.b.iter_mut().zip(x) {
            *bi += r * xi;
        }
    }
}

/// Which linear rule turns per-model ridge estimates into a choice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LinearRule {
    /// Best estimate, with `epsilon` of uniform exploration.
    EpsilonGreedy { epsilon: f32 },
    /// Best upper confidence bound `θᵀx + α·sqrt(xᵀA⁻¹x)` (Li et al., disjoint).
    LinUcb { alpha: f64 },
    /// Best draw from each model's Gaussian posterior of its reward at x.
    Thompson { scale: f64 },
}

/// A per-model linear bandit (disjoint models) on projected features.
pub struct Linear {
    pub rule: LinearRule,
    name: String,
    projection: Projection,
    models: Vec<Ridge>,
    rng: ChaCha8Rng,
    cached: Option<(String, Vec<f64>)>,
}

impl Linear {
    pub fn new(rule: LinearRule, n_models: usize, projection: Projection, seed: u64) -> Linear {
        let name = match rule {
            LinearRule::EpsilonGreedy { .. } => "egreedy-linear",
            LinearRule::LinUcb { .. } => "linucb",
            LinearRule::Thompson { .. } => "thompson",
        };
        let d = projection.dim();
        Linear {
            rule,
            name: name.into(),
            projection,
            models: vec![Ridge::new(d, 1.0); n_models],
            rng: ChaCha8Rng::seed_from_u64(seed),
            cached: None,
        }
    }

    fn project(&mut self, id: &str, x: &Features) -> Vec<f64> {
        if let Some((cid, z)) = &self.cached {
            if cid == id {
                return z.clone();
            }
        }
        let z = self.projection.apply(x);
        self.cached = Some((id.to_string(), z.clone()));
        z
    }
}

impl BanditPolicy for Linear {
    fn name(&self) -> &str {
        &self.name
    }

    /// The highest predicted mean reward.
    fn best(&mut self, id: &str, x: &Features) -> usize {
        let z = self.project(id, x);
        let means: Vec<f32> = self.models.iter().map(|m| m.predict(&z).0 as f32).collect();
        top_k(&means, 1).models[0]
    }

    fn choose(&mut self, id: &str, x: &Features, k: usize) -> Pick {
        let z = self.project(id, x);
        let n = self.models.len();
        let preds: Vec<(f64, f64)> = self.models.iter().map(|m| m.predict(&z)).collect();
        match self.rule {
            LinearRule::EpsilonGreedy { epsilon } => {
                let scores: Vec<f32> = preds.iter().map(|p| p.0 as f32).collect();
                let best = top_k(&scores, 1).models[0];
                let mut dist = vec![epsilon / n as f32; n];
                dist[best] += 1.0 - epsilon;
                draw_without_replacement(&dist, k, &mut self.rng)
            }
            LinearRule::LinUcb { alpha } => {
                let scores: Vec<f32> = preds.iter().map(|(m, v)| (m + alpha * v.sqrt()) as f32).collect();
                top_k(&scores, k)
            }
            LinearRule::Thompson { scale } => {
                let scores: Vec<f32> = preds
                    .iter()
                    .map(|(m, v)| {
                        let u1: f64 = self.rng.gen_range(f64::EPSILON..1.0);
                        let u2: f64 = self.rng.gen();
                        let g = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                        (m + scale * v.sqrt() * g) as f32
                    })
                    .collect();
                top_k(&scores, k)
            }
        }
    }

    fn learn(&mut self, id: &str, x: &Features, _: &Pick, feedback: &[Feedback]) {
        let z = self.project(id, x);
        for f in feedback {
            self.models[f.model].update(&z, f.reward as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ridge_recovers_a_linear_reward() {
        let mut r = Ridge::new(3, 0.01);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..500 {
            let x = [rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0), 1.0];
            r.update(&x, 2.0 * x[0] - x[1] + 0.5);
        }
        let (m, v) = r.predict(&[0.3, 0.2, 1.0]);
        assert!((m - (0.6 - 0.2 + 0.5)).abs() < 1e-3, "{m}");
        assert!(v < 0.05);
    }

    #[test]
    fn draws_without_replacement_are_distinct_with_conditional_propensities() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for _ in 0..200 {
            let p = draw_without_replacement(&[0.5, 0.3, 0.2], 2, &mut rng);
            assert_eq!(p.models.len(), 2);
            assert_ne!(p.models[0], p.models[1]);
            let first = [0.5, 0.3, 0.2][p.models[0]];
            assert!((p.propensities[0] - first).abs() < 1e-6);
            let second = [0.5f32, 0.3, 0.2][p.models[1]] / (1.0 - first);
            assert!((p.propensities[1] - second).abs() < 1e-5);
        }
    }
}
