//! The DQN policy: a network snapshot plus everything needed to feed it.
//! Immutable once built, so the serving path can share it through an
//! atomic pointer while the trainer builds the next one.

use crate::policy::network::flat;
use std::collections::{BTreeMap, HashMap};

use super::action::{set_pair_features, static_features, Scales, ACTION_DIM, PAIR_OFFSET, PAIR_SLOTS};
use super::answer::AnswerHead;
use super::network::{sigmoid, Arch, Network, HEAD_COST, HEAD_LATENCY, HEAD_QUALITY};
use crate::catalog::{Catalog, ModelCard};
use crate::features::{prompt_chars, FeatureSpec, Features};
use crate::{Error, Result};

/// Offsets inside the logs of the cost and latency heads, so a free model
/// (cost 0) has a finite target.
pub const COST_EPS: f32 = 1e-4;
pub const LATENCY_EPS: f32 = 1e-3;

/// How much quality a user gives up for cost and latency:
/// `score = quality − cost_weight·cost/C − latency_weight·latency/L`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OperatingPoint {
    pub cost_weight: f32,
    pub latency_weight: f32,
}

impl OperatingPoint {
    pub fn cost(cost_weight: f32) -> Self {
        OperatingPoint {
            cost_weight,
            latency_weight: 0.0,
        }
    }
}

/// What the network expects of one candidate, cost and latency normalised
/// by the policy's [`Scales`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Prediction {
    pub quality: f32,
    pub cost: f32,
    pub latency: f32,
}

impl Prediction {
    pub fn score(&self, p: OperatingPoint) -> f32 {
        self.quality - p.cost_weight * self.cost - p.latency_weight * self.latency
    }
}

/// Head targets and mask for one observed outcome.
pub fn head_targets(
    quality: Option<f32>,
    cost_usd: f64,
    latency_ms: Option<f64>,
    scales: &Scales,
) -> ([f32; 3], [bool; 3]) {
    let mut t = [0f32; 3];
    let mut m = [false; 3];
    if let Some(q) = quality {
        // The quality head's target is the probability itself (log loss).
        t[HEAD_QUALITY] = q;
        m[HEAD_QUALITY] = true;
    }
    t[HEAD_COST] = ((cost_usd / scales.cost_usd) as f32 + COST_EPS).ln();
    m[HEAD_COST] = cost_usd.is_finite() && cost_usd >= 0.0;
    if let Some(l) = latency_ms.filter(|l| l.is_finite() && *l >= 0.0) {
        t[HEAD_LATENCY] = ((l / scales.latency_ms) as f32 + LATENCY_EPS).ln();
        m[HEAD_LATENCY] = true;
    }
    (t, m)
}

fn prediction_from_heads(h: [f32; 3]) -> Prediction {
    Prediction {
        quality: sigmoid(h[HEAD_QUALITY]),
        cost: (h[HEAD_COST].min(10.0).exp() - COST_EPS).max(0.0),
        latency: (h[HEAD_LATENCY].min(10.0).exp() - LATENCY_EPS).max(0.0),
    }
}

/// What each model scores on average, and how far the network's quality
/// prediction is pulled towards it: `quality = (1 − w)·network + w·mean`.
///
/// On small or noisy data (AlpacaEval's 562 training prompts with 0/1
/// preferences) a prompt tells the network little about which model wins,
/// and an unshrunk network loses to "always use model X". Training chooses
/// `weight` by cross-validation on its own split, so on data where the
/// prompt does tell (RouteLLM) it stays near 0. A model without a mean
/// (one the policy never saw) keeps the network's prediction.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityPrior {
    pub weight: f32,
    /// Mean observed quality per model id.
    pub means: BTreeMap<String, f32>,
}

impl QualityPrior {
    fn shrink(&self, quality: f32, mean: Option<f32>) -> f32 {
        match mean {
            Some(m) if self.weight > 0.0 => (1.0 - self.weight) * quality + self.weight * m,
            _ => quality,
        }
    }
}

/// Anything that predicts per-candidate outcomes from a context.
pub trait Policy: Send + Sync {
    fn version(&self) -> u64;
    /// Fills `out` with one prediction per candidate, in order.
    fn predict(&self, ctx: &Features, candidates: &[&ModelCard], out: &mut Vec<Prediction>) -> Result<()>;
}

/// A trained (or training) DQN snapshot.
#[derive(Debug, Clone)]
pub struct DqnPolicy {
    pub version: u64,
    pub net: Network,
    pub catalog: Catalog,
    pub spec: FeatureSpec,
    pub scales: Scales,
    /// Cost weights λ that sweep from best quality to cheapest, calibrated on
    /// the training prompts (see `train::offline`).
    pub operating_points: Vec<f32>,
    /// Applied to every quality prediction (see [`QualityPrior`]).
    pub quality_prior: QualityPrior,
    /// Values answers for cascades; trained from recorded answers when the
    /// training data has them.
    pub answer_head: Option<AnswerHead>,
    /// The prior's mean per catalog index.
    prior_means: Vec<Option<f32>>,
    /// First-layer contribution of each catalog model's static features.
    model_hidden: Vec<Vec<f32>>,
    index: HashMap<String, usize>,
}

impl DqnPolicy {
    pub fn new(
        version: u64,
        net: Network,
        catalog: Catalog,
        spec: FeatureSpec,
        scales: Scales,
        operating_points: Vec<f32>,
    ) -> Result<DqnPolicy> {
        if net.arch.ctx_dim != spec.dim as usize || net.arch.action_dim != ACTION_DIM {
            return Err(Error::InvalidInput(format!(
                "network input ({} context, {} action) does not match the feature spec ({} context, {} action)",
                net.arch.ctx_dim, net.arch.action_dim, spec.dim, ACTION_DIM
            )));
        }
        let mut p = DqnPolicy {
            version,
            net,
            catalog,
            spec,
            scales,
            operating_points,
            quality_prior: QualityPrior::default(),
            answer_head: None,
            prior_means: Vec::new(),
            model_hidden: Vec::new(),
            index: HashMap::new(),
        };
        p.refresh_cache();
        Ok(p)
    }

    /// The default architecture for a feature spec.
    pub fn arch_for(spec: &FeatureSpec) -> Arch {
        Arch {
            ctx_dim: spec.dim as usize,
            action_dim: ACTION_DIM,
            hidden1: 64,
            hidden2: 32,
            wide_slots: super::action::ID_SLOTS,
        }
    }

    /// The policy with `prior` applied to its quality predictions.
    pub fn with_prior(mut self, prior: QualityPrior) -> DqnPolicy {
        self.quality_prior = prior;
        self.refresh_cache();
        self
    }

    /// Recomputes the per-model cache after the weights changed.
    pub fn refresh_cache(&mut self) {
        self.prior_means = self
            .catalog
            .models
            .iter()
            .map(|m| self.quality_prior.means.get(&m.id).copied())
            .collect();
        self.index = self
            .catalog
            .models
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.clone(), i))
            .collect();
        self.model_hidden = (0..self.catalog.models.len())
            .map(|i| {
                let a = static_features(&self.catalog.models[i], Some(i), &self.scales);
                let mut h = vec![0f32; self.net.arch.hidden1];
                self.net.action_hidden(&a, &mut h);
                h
            })
            .collect();
    }

    /// The full action vector of `card` for a prompt of `chars` characters:
    /// the same vector training uses.
    pub fn action_vector(&self, card: &ModelCard, chars: f32) -> Vec<f32> {
        let mut a = static_features(card, self.index.get(&card.id).copied(), &self.scales);
        set_pair_features(&mut a, card, chars, &self.scales);
        a
    }

    /// Priors the heads learn residuals over: the card's cost estimate for
    /// this prompt and its mean latency, in the heads' log space.
    pub fn head_offsets(&self, card: &ModelCard, chars: f32) -> [f32; 3] {
        let mut o = [0f32; 3];
        o[HEAD_COST] = ((card.estimate_cost(chars) / self.scales.cost_usd) as f32 + COST_EPS).ln();
        if let Some(l) = card.mean_latency_ms {
            o[HEAD_LATENCY] = ((l / self.scales.latency_ms) as f32 + LATENCY_EPS).ln();
        }
        o
    }

    /// Scores of `candidates` at an operating point.
    pub fn scores(&self, ctx: &Features, candidates: &[&ModelCard], point: OperatingPoint) -> Result<Vec<f32>> {
        let mut preds = Vec::with_capacity(candidates.len());
        self.predict(ctx, candidates, &mut preds)?;
        Ok(preds.iter().map(|p| p.score(point)).collect())
    }
}

impl Policy for DqnPolicy {
    fn version(&self) -> u64 {
        self.version
    }

    fn predict(&self, ctx: &Features, candidates: &[&ModelCard], out: &mut Vec<Prediction>) -> Result<()> {
        if ctx.dim as usize != self.net.arch.ctx_dim || ctx.indices.last().is_some_and(|&i| i >= ctx.dim) {
            return Err(Error::InvalidInput(format!(
                "features of dimension {} given to a policy that takes {}",
                ctx.dim, self.net.arch.ctx_dim
            )));
        }
        let h1 = self.net.arch.hidden1;
        let mut ctx_h = vec![0f32; h1];
        let mut z1 = vec![0f32; h1];
        let mut scratch = vec![0f32; self.net.arch.hidden2];
        let mut ctx_w = vec![0f32; self.net.arch.wide_slots];
        self.net.context_hidden(ctx, &mut ctx_h);
        self.net.context_wide(ctx, &mut ctx_w);
        let chars = prompt_chars(ctx);
        let w1a = flat(&self.net.w1a);
        let mut pair = [0f32; ACTION_DIM];
        out.clear();
        for card in candidates {
            let mut wide = 0.0;
            let known = self.index.get(&card.id).copied();
            match known {
                Some(i) => {
                    z1.iter_mut()
                        .zip(&ctx_h)
                        .zip(&self.model_hidden[i])
                        .for_each(|((z, c), m)| *z = c + m);
                    wide = ctx_w.get(i).copied().unwrap_or(0.0);
                }
                None => {
                    let a = static_features(card, None, &self.scales);
                    self.net.action_hidden(&a, &mut z1);
                    z1.iter_mut().zip(&ctx_h).for_each(|(z, c)| *z += c);
                }
            }
            set_pair_features(&mut pair, card, chars, &self.scales);
            for k in PAIR_OFFSET..PAIR_OFFSET + PAIR_SLOTS {
                let row = &w1a[k * h1..(k + 1) * h1];
                z1.iter_mut().zip(row).for_each(|(z, w)| *z += pair[k] * w);
            }
            let mut heads = self.net.heads_from_z1(&z1, wide, &mut scratch);
            for (h, o) in heads.iter_mut().zip(self.head_offsets(card, chars)) {
                *h += o;
            }
            let mut pred = prediction_from_heads(heads);
            let mean = known.and_then(|i| self.prior_means.get(i).copied().flatten());
            pred.quality = self.quality_prior.shrink(pred.quality, mean);
            out.push(pred);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{Featurizer, RequestContext};
    use crate::testing::toy_policy;

    #[test]
    fn fast_path_matches_the_plain_forward_pass() {
        let p = toy_policy(1);
        let fz = Featurizer::new(p.spec.clone()).unwrap();
        let x = fz.featurize(&RequestContext {
            prompt: "How many legs does a spider have?",
            ..Default::default()
        });
        let mut newcomer = p.catalog.models[1].clone();
        newcomer.id = "brand-new".into();
        newcomer.tags = vec!["code".into()];
        let cands: Vec<&ModelCard> = vec![&p.catalog.models[0], &p.catalog.models[1], &newcomer];
        let mut out = Vec::new();
        p.predict(&x, &cands, &mut out).unwrap();
        for (card, pred) in cands.iter().zip(&out) {
            let chars = prompt_chars(&x);
            let mut heads = p.net.forward_one(&x, &p.action_vector(card, chars));
            for (h, o) in heads.iter_mut().zip(p.head_offsets(card, chars)) {
                *h += o;
            }
            let slow = prediction_from_heads(heads);
            assert!((slow.quality - pred.quality).abs() < 1e-5);
            assert!((slow.cost - pred.cost).abs() < 1e-5);
            assert!((slow.latency - pred.latency).abs() < 1e-5);
        }
    }

    #[test]
    fn the_quality_prior_pulls_known_models_towards_their_means() {
        let p = toy_policy(1);
        let fz = Featurizer::new(p.spec.clone()).unwrap();
        let x = fz.featurize(&RequestContext {
            prompt: "Name three primes.",
            ..Default::default()
        });
        let mut newcomer = p.catalog.models[1].clone();
        newcomer.id = "brand-new".into();
        let cands: Vec<&ModelCard> = vec![&p.catalog.models[0], &newcomer];
        let mut plain = Vec::new();
        p.predict(&x, &cands, &mut plain).unwrap();
        let prior = |weight| QualityPrior {
            weight,
            means: [(p.catalog.models[0].id.clone(), 0.9), ("brand-new".to_string(), 0.1)].into(),
        };
        let mut out = Vec::new();
        p.clone().with_prior(prior(1.0)).predict(&x, &cands, &mut out).unwrap();
        assert!((out[0].quality - 0.9).abs() < 1e-6);
        // Not in the policy's catalog: the network's own prediction.
        assert_eq!(out[1], plain[1]);
        p.clone().with_prior(prior(0.5)).predict(&x, &cands, &mut out).unwrap();
        assert!((out[0].quality - (0.5 * plain[0].quality + 0.45)).abs() < 1e-6);
        assert_eq!(out[0].cost, plain[0].cost);
        p.clone().with_prior(prior(0.0)).predict(&x, &cands, &mut out).unwrap();
        assert_eq!(out, plain);
    }

    #[test]
    fn wrong_dimension_is_an_error_not_a_panic() {
        let p = toy_policy(1);
        let x = Features {
            dim: 100_000,
            indices: vec![99_999],
            values: vec![1.0],
        };
        let cards: Vec<&ModelCard> = p.catalog.models.iter().collect();
        assert!(p.predict(&x, &cards, &mut Vec::new()).is_err());
    }

    #[test]
    fn targets_invert_predictions() {
        let scales = Scales {
            cost_usd: 0.01,
            latency_ms: 1000.0,
        };
        let (t, m) = head_targets(Some(0.7), 0.002, Some(250.0), &scales);
        assert_eq!(m, [true, true, true]);
        let mut logits = t;
        logits[HEAD_QUALITY] = (0.7f32 / 0.3).ln();
        let p = prediction_from_heads(logits);
        assert!((p.quality - 0.7).abs() < 1e-6);
        assert!((p.cost - 0.2).abs() < 1e-5);
        assert!((p.latency - 0.25).abs() < 1e-5);
        let (_, m) = head_targets(None, 0.0, None, &scales);
        assert_eq!(m, [false, true, false]);
    }
}
