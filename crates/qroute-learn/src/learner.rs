//! The learner: one gradient step at a time on a working copy of the
//! policy. Offline training, the online trainer and the simulator all drive
//! this same type, so there is one learning rule.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::adam::Adam;
use crate::grad::{Batch, Item};
use qroute_core::catalog::ModelCard;
use qroute_core::features::Features;
use qroute_core::policy::dqn::head_targets;
use qroute_core::policy::network::{Network, HEADS, HEAD_COST, HEAD_LATENCY, HEAD_QUALITY};
use qroute_core::policy::{DqnPolicy, OperatingPoint, Policy};

/// Hyper-parameters of the learning rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LearnerConfig {
    /// Adam step size (dense layers).
    pub lr: f32,
    /// Row-wise AdaGrad step size (sparse input rows).
    pub sparse_lr: f32,
    pub weight_decay: f32,
    pub clip_norm: f32,
    pub huber_delta: f32,
    /// Discount for multi-step episodes (a retry or fallback is a second
    /// decision). 0 makes every decision a bandit round: the target is the
    /// observed outcome.
    pub gamma: f32,
    /// With `gamma > 0`: copy the online weights into the target network
    /// every this many steps.
    pub target_sync: u64,
    /// Polyak averaging: snapshots carry an exponential moving average of
    /// the weights with this decay per step. Averaged weights generalise
    /// better from small, noisy data; each step then costs one more pass
    /// over the parameters, so the online trainer leaves it off.
    pub ema_decay: Option<f32>,
}

impl Default for LearnerConfig {
    fn default() -> Self {
        LearnerConfig {
            lr: 1e-3,
            sparse_lr: 0.05,
            weight_decay: 0.0,
            clip_norm: 5.0,
            huber_delta: 1.0,
            gamma: 0.0,
            target_sync: 200,
            ema_decay: None,
        }
    }
}

impl LearnerConfig {
    /// Settings for learning online from bandit feedback (the online trainer
    /// and the simulator). Each round teaches one model's noisy 0/1 outcome on
    /// one prompt; strong decay keeps the sparse rows from chasing that noise.
    /// Measured with `benches/bandit_vs_vw`
    /// (SquareCB γ₀ 300, publishing every step), mean regret per round at
    /// λ = 0.1 / 0.5 / 1: sparse_lr 0.2, decay 0.1 (the earlier setting):
    /// routellm stream (seed 1) 0.129 / 0.120 / 0.076, AlpacaEval (3 seeds)
    /// 0.052 / 0.059 / 0.065; sparse_lr 0.05, decay 1.0: routellm 0.117 /
    /// 0.101 / 0.063, AlpacaEval (6 seeds) 0.056 / 0.061 / 0.068.
    pub fn online() -> LearnerConfig {
        LearnerConfig {
            lr: 1e-3,
            sparse_lr: 0.05,
            weight_decay: 1.0,
            ..LearnerConfig::default()
        }
    }
}

/// What was observed when a model ran.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub quality: Option<f32>,
    pub cost_usd: f64,
    pub latency_ms: Option<f64>,
}

/// The state after a decision, for multi-step episodes (γ > 0).
#[derive(Debug, Clone)]
pub struct NextState<'a> {
    pub ctx: &'a Features,
    pub candidates: Vec<&'a ModelCard>,
    pub point: OperatingPoint,
}

/// Loss and gradient norm of one step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepStats {
    pub loss: f32,
    pub grad_norm: f32,
}

/// A training item for an observed outcome of `card` on context `ctx` (an
/// index into the batch's contexts), under `policy`'s catalog and scales.
/// Free-standing so every training backend builds items the same way.
pub fn item_for(
    policy: &DqnPolicy,
    ctx: usize,
    features: &Features,
    card: &ModelCard,
    obs: &Observation,
    weight: f32,
) -> Item {
    let chars = qroute_core::features::prompt_chars(features);
    let (target, mask) = head_targets(obs.quality, obs.cost_usd, obs.latency_ms, &policy.scales);
    Item {
        ctx,
        action: policy.action_vector(card, chars),
        offset: policy.head_offsets(card, chars),
        target,
        mask,
        weight,
    }
}

pub struct Learner {
    policy: DqnPolicy,
    adam: Adam,
    cfg: LearnerConfig,
    /// Frozen copy for bootstrapped targets (double DQN), when γ > 0.
    target: Option<DqnPolicy>,
    /// Averaged weights, when `ema_decay` is set.
    ema: Option<Network>,
    /// Seeded randomness for callers that sample batches.
    pub rng: ChaCha8Rng,
}

impl Learner {
    pub fn new(policy: DqnPolicy, cfg: LearnerConfig, seed: u64) -> Learner {
        let mut adam = Adam::new(&policy.net, cfg.lr);
        adam.weight_decay = cfg.weight_decay;
        adam.clip_norm = cfg.clip_norm;
        adam.sparse_lr = cfg.sparse_lr;
        let target = (cfg.gamma > 0.0).then(|| policy.clone());
        let ema = cfg.ema_decay.map(|_| policy.net.clone());
        Learner {
            policy,
            adam,
            cfg,
            target,
            ema,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    pub fn config(&self) -> &LearnerConfig {
        &self.cfg
    }

    /// The working copy's catalog, spec and scales (its weights move with
    /// every step; use [`Learner::snapshot`] to score with them).
    pub fn policy(&self) -> &DqnPolicy {
        &self.policy
    }

    pub fn steps(&self) -> u64 {
        self.adam.steps()
    }

    /// A training item for an observed outcome of `card` on context `ctx`
    /// (an index into the batch's contexts).
    pub fn item(&self, ctx: usize, features: &Features, card: &ModelCard, obs: &Observation, weight: f32) -> Item {
        item_for(&self.policy, ctx, features, card, obs, weight)
    }

    /// Replaces an item's targets with bootstrapped ones (γ > 0):
    /// `observed + γ·target_net(s', a*)`, where the online network picks `a*`
    /// (double DQN). Cost and latency add in linear space, then go back to
    /// the heads' log space.
    pub fn bootstrap(&mut self, item: &mut Item, next: &NextState<'_>) -> qroute_core::Result<()> {
        let gamma = self.cfg.gamma;
        let Some(target) = self.target.as_ref() else {
            return Ok(());
        };
        if next.candidates.is_empty() {
            return Ok(());
        }
        self.policy.refresh_cache();
        let mut online = Vec::new();
        self.policy.predict(next.ctx, &next.candidates, &mut online)?;
        let best =
            qroute_core::policy::explore::argmax(&online.iter().map(|p| p.score(next.point)).collect::<Vec<_>>());
        let mut value = Vec::new();
        target.predict(next.ctx, &next.candidates[best..=best], &mut value)?;
        let v = value[0];
        use qroute_core::policy::dqn::{COST_EPS, LATENCY_EPS};
        let t = &mut item.target;
        if item.mask[HEAD_QUALITY] {
            t[HEAD_QUALITY] += gamma * v.quality;
        }
        t[HEAD_COST] = ((t[HEAD_COST].exp() - COST_EPS).max(0.0) + gamma * v.cost + COST_EPS).ln();
        if item.mask[HEAD_LATENCY] {
            t[HEAD_LATENCY] = ((t[HEAD_LATENCY].exp() - LATENCY_EPS).max(0.0) + gamma * v.latency + LATENCY_EPS).ln();
        }
        debug_assert!(t.iter().take(HEADS).all(|x| x.is_finite()));
        Ok(())
    }

    /// One Adam step on `batch`.
    pub fn step(&mut self, batch: &Batch<'_>) -> StepStats {
        if batch.items.is_empty() {
            return StepStats::default();
        }
        let (loss, mut grads) = crate::grad::loss_and_grads(&self.policy.net, batch, self.cfg.huber_delta);
        let grad_norm = self.adam.step(&mut self.policy.net, &mut grads);
        if let (Some(ema), Some(decay)) = (self.ema.as_mut(), self.cfg.ema_decay) {
            crate::grad::blend_towards(ema, &self.policy.net, 1.0 - decay);
        }
        if let Some(target) = self.target.as_mut() {
            if self.adam.steps().is_multiple_of(self.cfg.target_sync.max(1)) {
                target.net = self.policy.net.clone();
                target.refresh_cache();
            }
        }
        StepStats { loss, grad_norm }
    }

    /// The weights snapshots carry: the average when Polyak averaging is on.
    fn serving_net(&self) -> &Network {
        self.ema.as_ref().unwrap_or(&self.policy.net)
    }

    /// Mean loss per head on a batch (of the serving weights), without learning from it.
    pub fn head_losses(&self, batch: &Batch<'_>) -> [f32; HEADS] {
        crate::grad::head_losses(self.serving_net(), batch, self.cfg.huber_delta)
    }

    /// An immutable, servable copy of the current weights.
    pub fn snapshot(&self, version: u64) -> DqnPolicy {
        let mut p = self.policy.clone();
        p.net = self.serving_net().clone();
        p.version = version;
        p.refresh_cache();
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qroute_core::features::{Featurizer, RequestContext};
    use qroute_core::testing::toy_policy;

    /// A two-step episode: the first decision's quality target converges to
    /// r1 + γ·r2 when bootstrapped through the target network.
    #[test]
    fn bootstrapped_targets_converge_to_discounted_return() {
        let policy = toy_policy(2);
        let fz = Featurizer::new(policy.spec.clone()).unwrap();
        let s1 = fz.featurize(&RequestContext {
            prompt: "first attempt",
            ..Default::default()
        });
        let s2 = fz.featurize(&RequestContext {
            prompt: "the retry after a failure",
            ..Default::default()
        });
        let cfg = LearnerConfig {
            gamma: 0.5,
            target_sync: 20,
            lr: 3e-3,
            ..Default::default()
        };
        let mut l = Learner::new(policy, cfg, 1);
        let cards = l.policy().catalog.models.clone();
        let (r1, r2) = (0.2f32, 0.8f32);
        for _ in 0..1500 {
            let obs1 = Observation {
                quality: Some(r1),
                cost_usd: 0.0001,
                latency_ms: None,
            };
            let obs2 = Observation {
                quality: Some(r2),
                cost_usd: 0.0001,
                latency_ms: None,
            };
            let mut it1 = l.item(0, &s1, &cards[0], &obs1, 1.0);
            let next = NextState {
                ctx: &s2,
                candidates: vec![&cards[0]],
                point: OperatingPoint::cost(0.0),
            };
            l.bootstrap(&mut it1, &next).unwrap();
            let it2 = l.item(1, &s2, &cards[0], &obs2, 1.0);
            let batch = Batch {
                contexts: vec![&s1, &s2],
                items: vec![it1, it2],
            };
            l.step(&batch);
        }
        let snap = l.snapshot(2);
        let mut out = Vec::new();
        snap.predict(&s1, &[&cards[0]], &mut out).unwrap();
        let q1 = out[0].quality;
        assert!(
            (q1 - (r1 + 0.5 * r2)).abs() < 0.05,
            "Q(s1) = {q1}, want {}",
            r1 + 0.5 * r2
        );
    }

    /// The working copy shares the sparse weights with the policy it was made
    /// from and with the snapshots it publishes until a step writes them; the
    /// step copies them, and what serving holds never moves under it.
    #[test]
    fn steps_copy_the_shared_weights_and_leave_snapshots_unchanged() {
        let policy = toy_policy(2);
        let fz = Featurizer::new(policy.spec.clone()).unwrap();
        let x = fz.featurize(&RequestContext {
            prompt: "a prompt whose rows the step moves",
            ..Default::default()
        });
        let mut l = Learner::new(policy.clone(), LearnerConfig::default(), 1);
        let served = l.snapshot(1);
        assert_eq!(served.net.w1x.as_ptr(), policy.net.w1x.as_ptr());
        assert_eq!(served.net.wide.as_ptr(), l.policy().net.wide.as_ptr());

        let cards = l.policy().catalog.models.clone();
        let obs = Observation {
            quality: Some(1.0),
            cost_usd: 0.0001,
            latency_ms: None,
        };
        let batch = Batch {
            contexts: vec![&x],
            items: vec![l.item(0, &x, &cards[0], &obs, 1.0)],
        };
        l.step(&batch);
        assert_ne!(l.policy().net.w1x.as_ptr(), served.net.w1x.as_ptr());
        assert_ne!(l.policy().net.w1x, served.net.w1x, "the step moved no sparse row");
        assert_eq!(served.net, policy.net, "the served snapshot changed");
    }
}
