//! The optional libtorch training backend (cargo feature `tch`).
//!
//! [`TorchLearner`] runs the learning rule of [`Learner`](crate::Learner)
//! in libtorch: the same network (sparse context layer, action layer, two
//! ReLU layers, three heads and the wide term), the same loss
//! ([`head_loss`](crate::grad::head_loss): log loss on the quality logit,
//! Huber on the log heads, weighted mean over the masked heads) and the same
//! optimiser ([`Adam`](crate::adam::Adam): global-norm clipping, Adam with
//! decoupled decay on the dense tensors, row-wise AdaGrad on the rows of
//! `w1x` and `wide` that the batch touches), plus the same Polyak average.
//! Only the arithmetic moves: autograd replaces the hand-written backward
//! pass, and the tensors live on a GPU when there is one.
//!
//! The optimiser is written out in tensor operations rather than taken from
//! `tch::nn::Adam` because the plain-Rust one is not stock Adam (AdaGrad
//! rows, decay folded into the update), and a checkpoint must mean the same
//! thing whichever backend made it. Weights go back to a [`Network`] only
//! for snapshots, which are then saved in the one checkpoint format.
//!
//! At the shipped size (64 → 32 hidden units) the plain-Rust backend is as
//! fast or faster on a CPU; this one is for much wider networks and GPUs.

use ndarray::{Array1, Array2};
use tch::{Device, Kind, TchError, Tensor};

use crate::grad::{Batch, Item};
use crate::learner::{item_for, LearnerConfig, Observation, StepStats};
use qroute_core::catalog::ModelCard;
use qroute_core::features::Features;
use qroute_core::policy::network::{Network, HEADS, HEAD_QUALITY};
use qroute_core::policy::DqnPolicy;
use qroute_core::{Error, Result};

/// Positions in [`Network::params`] order.
const W1X: usize = 0;
const W1A: usize = 1;
const B1: usize = 2;
const W2: usize = 3;
const B2: usize = 4;
const W3: usize = 5;
const B3: usize = 6;
const WIDE: usize = 7;
/// The dense tensors (`w1a … b3`), which Adam updates.
const DENSE: std::ops::RangeInclusive<usize> = W1A..=B3;

/// Adam's moment decays and epsilon: the plain-Rust optimiser's defaults.
const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;
const EPS: f32 = 1e-8;

fn terr(e: TchError) -> Error {
    Error::InvalidInput(format!("libtorch: {e}"))
}

/// The device training runs on: the first CUDA device when libtorch sees
/// one, else the CPU.
pub fn default_device() -> Device {
    Device::cuda_if_available()
}

/// A batch copied to the device once per step.
struct DeviceBatch {
    /// Every context's non-zeros, concatenated: input row, value, owning context.
    idx: Tensor,
    vals: Tensor,
    entry_ctx: Tensor,
    /// The distinct input rows the batch touches (the rows AdaGrad moves).
    rows: Tensor,
    contexts: i64,
    item_ctx: Tensor,
    actions: Tensor,
    offsets: Tensor,
    /// Targets, with the quality target clamped to [0, 1] and masked-out
    /// targets zeroed so they cannot turn a zero weight into NaN.
    targets: Tensor,
    /// The quality target's entropy, so the log loss is 0 at a perfect fit
    /// (a constant: it changes the reported loss, not the gradient).
    entropy: Tensor,
    /// Mask times sample weight, per head.
    weights: Tensor,
    total_w: f64,
}

impl DeviceBatch {
    fn new(batch: &Batch<'_>, action_dim: usize, device: Device) -> Result<DeviceBatch> {
        let (mut idx, mut vals, mut entry_ctx) = (Vec::new(), Vec::new(), Vec::new());
        let mut rows = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (c, x) in batch.contexts.iter().enumerate() {
            for (&i, &v) in x.indices.iter().zip(&x.values) {
                idx.push(i64::from(i));
                vals.push(v);
                entry_ctx.push(c as i64);
                if seen.insert(i) {
                    rows.push(i64::from(i));
                }
            }
        }
        let n = batch.items.len();
        let mut actions = Vec::with_capacity(n * action_dim);
        let (mut offsets, mut targets) = (Vec::with_capacity(n * HEADS), Vec::with_capacity(n * HEADS));
        let (mut entropy, mut weights) = (Vec::with_capacity(n * HEADS), Vec::with_capacity(n * HEADS));
        let mut item_ctx = Vec::with_capacity(n);
        for it in &batch.items {
            if it.action.len() != action_dim || it.ctx >= batch.contexts.len() {
                return Err(Error::InvalidInput(format!(
                    "training item with {} action features and context {} (network takes {action_dim}, batch has {})",
                    it.action.len(),
                    it.ctx,
                    batch.contexts.len()
                )));
            }
            item_ctx.push(it.ctx as i64);
            actions.extend_from_slice(&it.action);
            offsets.extend_from_slice(&it.offset);
            for k in 0..HEADS {
                let on = it.mask[k];
                let t = if !on {
                    0.0
                } else if k == HEAD_QUALITY {
                    it.target[k].clamp(0.0, 1.0)
                } else {
                    it.target[k]
                };
                targets.push(t);
                entropy.push(if on && k == HEAD_QUALITY && t > 0.0 && t < 1.0 {
                    -(t * t.ln() + (1.0 - t) * (1.0 - t).ln())
                } else {
                    0.0
                });
                weights.push(if on { it.weight } else { 0.0 });
            }
        }
        let total_w = f64::from(batch.items.iter().map(|it| it.weight).sum::<f32>().max(1e-12));
        let up = |t: Tensor| t.f_to_device(device).map_err(terr);
        let heads = |v: &[f32]| -> Result<Tensor> {
            up(Tensor::f_from_slice(v)
                .map_err(terr)?
                .f_view([n as i64, HEADS as i64])
                .map_err(terr)?)
        };
        Ok(DeviceBatch {
            idx: up(Tensor::f_from_slice(&idx).map_err(terr)?)?,
            vals: up(Tensor::f_from_slice(&vals)
                .map_err(terr)?
                .f_unsqueeze(1)
                .map_err(terr)?)?,
            entry_ctx: up(Tensor::f_from_slice(&entry_ctx).map_err(terr)?)?,
            rows: up(Tensor::f_from_slice(&rows).map_err(terr)?)?,
            contexts: batch.contexts.len() as i64,
            item_ctx: up(Tensor::f_from_slice(&item_ctx).map_err(terr)?)?,
            actions: up(Tensor::f_from_slice(&actions)
                .map_err(terr)?
                .f_view([n as i64, action_dim as i64])
                .map_err(terr)?)?,
            offsets: heads(&offsets)?,
            targets: heads(&targets)?,
            entropy: heads(&entropy)?,
            weights: heads(&weights)?,
            total_w,
        })
    }
}

/// The learning rule of [`Learner`](crate::Learner), in libtorch. Made from
/// a policy; [`TorchLearner::snapshot`] hands back a plain [`DqnPolicy`].
pub struct TorchLearner {
    /// Catalog, spec and scales for building items and snapshots; its
    /// weights are the initial ones (the live weights are `params`).
    policy: DqnPolicy,
    cfg: LearnerConfig,
    device: Device,
    /// The weights, in [`Network::params`] order, tracked by autograd.
    params: Vec<Tensor>,
    /// Averaged weights, when `ema_decay` is set.
    ema: Option<Vec<Tensor>>,
    /// Adam moments of the dense tensors, indexed like `params`
    /// (the sparse positions hold empty tensors).
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Row-wise AdaGrad accumulators of `w1x` and `wide`.
    acc_w1x: Tensor,
    acc_wide: Tensor,
    /// `[1, 0, 0]` as a row: selects the quality head.
    quality_col: Tensor,
    t: u64,
}

fn upload(net: &Network, device: Device, grad: bool) -> Result<Vec<Tensor>> {
    net.params()
        .into_iter()
        .map(|(_, shape, data)| {
            let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            Tensor::f_from_slice(data)
                .and_then(|t| t.f_view(shape.as_slice()))
                .and_then(|t| t.f_to_device(device))
                .and_then(|t| t.f_set_requires_grad(grad))
                .map_err(terr)
        })
        .collect()
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    let flat = t
        .f_detach()
        .and_then(|t| t.f_to_device(Device::Cpu))
        .and_then(|t| t.f_reshape([-1i64]))
        .map_err(terr)?;
    Vec::<f32>::try_from(&flat).map_err(terr)
}

impl TorchLearner {
    /// Copies `policy`'s weights to `device`.
    pub fn new(policy: DqnPolicy, cfg: LearnerConfig, device: Device) -> Result<TorchLearner> {
        let params = upload(&policy.net, device, true)?;
        let ema = match cfg.ema_decay {
            Some(_) => Some(upload(&policy.net, device, false)?),
            None => None,
        };
        let zeros = |i: usize| -> Result<Tensor> {
            if DENSE.contains(&i) {
                params[i].f_zeros_like().map_err(terr)
            } else {
                Tensor::f_zeros([0i64], (Kind::Float, device)).map_err(terr)
            }
        };
        let m = (0..params.len()).map(zeros).collect::<Result<Vec<_>>>()?;
        let v = (0..params.len()).map(zeros).collect::<Result<Vec<_>>>()?;
        let rows = policy.net.arch.ctx_dim as i64;
        let acc = || Tensor::f_zeros([rows], (Kind::Float, device)).map_err(terr);
        let quality_col = Tensor::f_from_slice(&[1f32, 0.0, 0.0])
            .and_then(|t| t.f_view([1, HEADS as i64]))
            .and_then(|t| t.f_to_device(device))
            .map_err(terr)?;
        Ok(TorchLearner {
            acc_w1x: acc()?,
            acc_wide: acc()?,
            policy,
            cfg,
            device,
            params,
            ema,
            m,
            v,
            quality_col,
            t: 0,
        })
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn config(&self) -> &LearnerConfig {
        &self.cfg
    }

    /// Catalog, spec and scales (the weights in it are the initial ones).
    pub fn policy(&self) -> &DqnPolicy {
        &self.policy
    }

    pub fn steps(&self) -> u64 {
        self.t
    }

    /// A training item, exactly as [`Learner::item`](crate::Learner::item) builds it.
    pub fn item(&self, ctx: usize, features: &Features, card: &ModelCard, obs: &Observation, weight: f32) -> Item {
        item_for(&self.policy, ctx, features, card, obs, weight)
    }

    /// Raw head outputs (`items × HEADS`, offsets included) under weights `p`.
    fn forward(&self, p: &[Tensor], b: &DeviceBatch) -> Result<Tensor> {
        let a = self.policy.net.arch;
        let zeros = |cols: usize| Tensor::f_zeros([b.contexts, cols as i64], (Kind::Float, self.device));
        let sparse = |w: &Tensor, cols: usize| {
            let gathered = w.f_index_select(0, &b.idx)?.f_mul(&b.vals)?;
            zeros(cols)?.f_index_add(0, &b.entry_ctx, &gathered)
        };
        let run = || -> std::result::Result<Tensor, TchError> {
            let ctx_h = sparse(&p[W1X], a.hidden1)?.f_add(&p[B1])?;
            let z1 = b.actions.f_mm(&p[W1A])?.f_add(&ctx_h.f_index_select(0, &b.item_ctx)?)?;
            let h2 = z1.f_relu()?.f_mm(&p[W2])?.f_add(&p[B2])?.f_relu()?;
            let mut y = h2.f_mm(&p[W3])?.f_add(&p[B3])?.f_add(&b.offsets)?;
            if a.wide_slots > 0 {
                let ctx_w = sparse(&p[WIDE], a.wide_slots)?;
                let wide = ctx_w
                    .f_index_select(0, &b.item_ctx)?
                    .f_mul(&b.actions.f_narrow(1, 0, a.wide_slots as i64)?)?
                    .f_sum_dim_intlist(1i64, true, Kind::Float)?;
                y = y.f_add(&wide.f_mul(&self.quality_col)?)?;
            }
            Ok(y)
        };
        run().map_err(terr)
    }

    /// Per-item, per-head loss of [`crate::grad::head_loss`] (unweighted, unmasked).
    fn head_loss(&self, y: &Tensor, b: &DeviceBatch) -> Result<Tensor> {
        let delta = f64::from(self.cfg.huber_delta);
        let run = || -> std::result::Result<Tensor, TchError> {
            // Quality: ln(1 + e^y) − t·y − H(t).
            let log_loss = y.f_softplus()?.f_sub(&y.f_mul(&b.targets)?)?.f_sub(&b.entropy)?;
            // The log heads: Huber on the residual.
            let r = y.f_sub(&b.targets)?;
            let abs = r.f_abs()?;
            let quadratic = r.f_square()?.f_mul_scalar(0.5)?;
            let linear = abs.f_sub_scalar(0.5 * delta)?.f_mul_scalar(delta)?;
            let huber = quadratic.f_where_self(&abs.f_le(delta)?, &linear)?;
            let other = self.quality_col.f_neg()?.f_add_scalar(1.0)?;
            log_loss.f_mul(&self.quality_col)?.f_add(&huber.f_mul(&other)?)
        };
        run().map_err(terr)
    }

    /// One step on `batch`: loss, backward, clipping, Adam and AdaGrad, average.
    pub fn step(&mut self, batch: &Batch<'_>) -> Result<StepStats> {
        if batch.items.is_empty() {
            return Ok(StepStats::default());
        }
        let b = DeviceBatch::new(batch, self.policy.net.arch.action_dim, self.device)?;
        for p in &self.params {
            let mut g = p.f_grad().map_err(terr)?;
            if g.defined() {
                let _ = g.f_zero_().map_err(terr)?;
            }
        }
        let y = self.forward(&self.params, &b)?;
        let loss = self
            .head_loss(&y, &b)?
            .f_mul(&b.weights)
            .and_then(|l| l.f_sum(Kind::Float))
            .and_then(|l| l.f_div_scalar(b.total_w))
            .map_err(terr)?;
        loss.f_backward().map_err(terr)?;
        let loss = f64::try_from(&loss).map_err(terr)? as f32;
        let _no_grad = tch::no_grad_guard();
        let mut grads = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let g = p.f_grad().map_err(terr)?;
            grads.push(if g.defined() {
                g
            } else {
                p.f_zeros_like().map_err(terr)?
            });
        }
        let grad_norm = self.update(&mut grads, &b.rows)?;
        Ok(StepStats { loss, grad_norm })
    }

    /// Clips `grads` and applies one update (under `no_grad`): the tensor
    /// form of [`crate::adam::Adam::step`]. Returns the norm before clipping.
    fn update(&mut self, grads: &mut [Tensor], rows: &Tensor) -> Result<f32> {
        let mut sumsq = Tensor::f_zeros([0i64; 0], (Kind::Float, self.device)).map_err(terr)?;
        for g in grads.iter() {
            sumsq = sumsq
                .f_add(&g.f_square().and_then(|s| s.f_sum(Kind::Float)).map_err(terr)?)
                .map_err(terr)?;
        }
        let norm = f64::try_from(&sumsq).map_err(terr)?.sqrt() as f32;
        let clip = self.cfg.clip_norm;
        if clip > 0.0 && norm > clip {
            let f = f64::from(clip / norm);
            for g in grads.iter_mut() {
                let _ = g.f_mul_scalar_(f).map_err(terr)?;
            }
        }
        self.t += 1;
        let t = self.t as i32;
        let lr = self.cfg.lr;
        let lr_t = f64::from(lr * (1.0 - BETA2.powi(t)).sqrt() / (1.0 - BETA1.powi(t)));
        let decay = f64::from(lr * self.cfg.weight_decay);
        for i in DENSE {
            let g = &grads[i];
            let run = |p: &mut Tensor, m: &mut Tensor, v: &mut Tensor| -> std::result::Result<(), TchError> {
                let _ = m
                    .f_mul_scalar_(f64::from(BETA1))?
                    .f_add_(&g.f_mul_scalar(f64::from(1.0 - BETA1))?)?;
                let _ = v
                    .f_mul_scalar_(f64::from(BETA2))?
                    .f_add_(&g.f_square()?.f_mul_scalar(f64::from(1.0 - BETA2))?)?;
                let step = m
                    .f_div(&v.f_sqrt()?.f_add_scalar(f64::from(EPS))?)?
                    .f_mul_scalar(lr_t)?;
                let shrink = p.f_mul_scalar(decay)?;
                let _ = p.f_sub_(&step.f_add(&shrink)?)?;
                Ok(())
            };
            run(&mut self.params[i], &mut self.m[i], &mut self.v[i]).map_err(terr)?;
        }
        let sparse_lr = self.cfg.sparse_lr;
        let sparse_decay = f64::from(sparse_lr * self.cfg.weight_decay);
        let a = self.policy.net.arch;
        let mut sparse = vec![(W1X, a.hidden1)];
        if a.wide_slots > 0 {
            sparse.push((WIDE, a.wide_slots));
        }
        for (i, width) in sparse {
            let acc = if i == W1X {
                &mut self.acc_w1x
            } else {
                &mut self.acc_wide
            };
            let run = |w: &mut Tensor, acc: &mut Tensor| -> std::result::Result<(), TchError> {
                let g = grads[i].f_index_select(0, rows)?;
                let mean_sq = g
                    .f_square()?
                    .f_sum_dim_intlist(1i64, false, Kind::Float)?
                    .f_div_scalar(width as f64)?;
                let acc_rows = acc.f_index_select(0, rows)?.f_add(&mean_sq)?;
                let _ = acc.f_index_copy_(0, rows, &acc_rows)?;
                let step = acc_rows
                    .f_sqrt()?
                    .f_add_scalar(1e-10)?
                    .f_reciprocal()?
                    .f_mul_scalar(f64::from(sparse_lr))?;
                let moved = w
                    .f_index_select(0, rows)?
                    .f_mul_scalar(1.0 - sparse_decay)?
                    .f_sub(&g.f_mul(&step.f_unsqueeze(1)?)?)?;
                let _ = w.f_index_copy_(0, rows, &moved)?;
                Ok(())
            };
            run(&mut self.params[i], acc).map_err(terr)?;
        }
        if let (Some(ema), Some(d)) = (self.ema.as_mut(), self.cfg.ema_decay) {
            for (e, p) in ema.iter_mut().zip(&self.params) {
                let _ = e.f_lerp_(p, f64::from(1.0 - d)).map_err(terr)?;
            }
        }
        Ok(norm)
    }

    /// The weights snapshots carry: the average when Polyak averaging is on.
    fn serving(&self) -> &[Tensor] {
        self.ema.as_deref().unwrap_or(&self.params)
    }

    /// Raw head outputs (offsets included) of the serving weights for every
    /// item of `batch`: libtorch's forward pass, for comparing backends.
    pub fn predict_heads(&self, batch: &Batch<'_>) -> Result<Vec<[f32; HEADS]>> {
        if batch.items.is_empty() {
            return Ok(Vec::new());
        }
        let _no_grad = tch::no_grad_guard();
        let b = DeviceBatch::new(batch, self.policy.net.arch.action_dim, self.device)?;
        let y = to_vec(&self.forward(self.serving(), &b)?)?;
        Ok(y.chunks_exact(HEADS).map(|c| [c[0], c[1], c[2]]).collect())
    }

    /// Mean loss per head on a batch (serving weights), without learning from it.
    pub fn head_losses(&self, batch: &Batch<'_>) -> Result<[f32; HEADS]> {
        if batch.items.is_empty() {
            return Ok([0.0; HEADS]);
        }
        let _no_grad = tch::no_grad_guard();
        let b = DeviceBatch::new(batch, self.policy.net.arch.action_dim, self.device)?;
        let y = self.forward(self.serving(), &b)?;
        let l = self.head_loss(&y, &b)?;
        let sum = l
            .f_mul(&b.weights)
            .and_then(|l| l.f_sum_dim_intlist(0i64, false, Kind::Float))
            .map_err(terr)?;
        let w = b.weights.f_sum_dim_intlist(0i64, false, Kind::Float).map_err(terr)?;
        let (sum, w) = (to_vec(&sum)?, to_vec(&w)?);
        Ok(std::array::from_fn(|k| if w[k] > 0.0 { sum[k] / w[k] } else { 0.0 }))
    }

    /// The live (not averaged) weights as a plain-Rust network.
    pub fn network(&self) -> Result<Network> {
        self.to_network(&self.params)
    }

    fn to_network(&self, p: &[Tensor]) -> Result<Network> {
        let a = self.policy.net.arch;
        let m2 = |i: usize, r: usize, c: usize| -> Result<Array2<f32>> {
            Array2::from_shape_vec((r, c), to_vec(&p[i])?).map_err(|e| Error::InvalidInput(e.to_string()))
        };
        let v1 = |i: usize| -> Result<Array1<f32>> { Ok(Array1::from(to_vec(&p[i])?)) };
        Ok(Network {
            arch: a,
            w1x: m2(W1X, a.ctx_dim, a.hidden1)?.into_shared(),
            w1a: m2(W1A, a.action_dim, a.hidden1)?,
            b1: v1(B1)?,
            w2: m2(W2, a.hidden1, a.hidden2)?,
            b2: v1(B2)?,
            w3: m2(W3, a.hidden2, HEADS)?,
            b3: v1(B3)?,
            wide: m2(WIDE, a.ctx_dim, a.wide_slots)?.into_shared(),
        })
    }

    /// A servable plain-Rust copy of the serving weights, which
    /// [`qroute_core::policy::checkpoint::save`] writes like any other.
    pub fn snapshot(&self, version: u64) -> Result<DqnPolicy> {
        let mut p = self.policy.clone();
        p.net = self.to_network(self.serving())?;
        p.version = version;
        p.refresh_cache();
        Ok(p)
    }
}
