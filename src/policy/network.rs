//! The action-feature MLP: it scores a (context, model) pair, so a model the
//! network has never seen still gets a score from its catalog features.
//!
//! ```text
//! x (sparse context, D) ──W1x─┐
//!                             + b1 → ReLU → W2 + b2 → ReLU → W3 + b3 → [quality, ln cost, ln latency]
//! a (dense action, A)  ──W1a─┘
//! ```
//!
//! A "wide" term adds to the quality logit a linear function of the sparse
//! context for each model with an id slot (`xᵀ V a_id`): a per-model
//! logistic regression beside the deep part, which memorises per-model
//! strengths cheaply. A model without an id slot gets only the deep part.
//!
//! Three heads instead of one Q value let one network serve every operating
//! point: the score at (λ, μ) is `q − λ·cost − μ·latency`, formed at decision
//! time. The context half of the first layer is computed once per request and
//! shared by every candidate, so scoring 16 models costs one sparse pass plus
//! 16 small dense ones.
//!
//! Single-sample scoring uses plain loops (fast at this size); batched
//! training uses ndarray GEMM.

use ndarray::{Array1, Array2, ArrayView1, Axis};
use rand::Rng;
use rand_distr_normal::standard_normal;
use serde::{Deserialize, Serialize};

use super::simd;
use crate::features::Features;

/// Output heads.
pub const HEADS: usize = 3;
pub const HEAD_QUALITY: usize = 0;
pub const HEAD_COST: usize = 1;
pub const HEAD_LATENCY: usize = 2;

/// Layer sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arch {
    pub ctx_dim: usize,
    pub action_dim: usize,
    pub hidden1: usize,
    pub hidden2: usize,
    /// The first `wide_slots` entries of the action vector are one-hot
    /// model ids that select a column of the wide weights.
    pub wide_slots: usize,
}

/// The weights. Matrices are stored input-major (`in × out`), so one sparse
/// input row is one contiguous slice.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub arch: Arch,
    pub w1x: Array2<f32>,
    pub w1a: Array2<f32>,
    pub b1: Array1<f32>,
    pub w2: Array2<f32>,
    pub b2: Array1<f32>,
    pub w3: Array2<f32>,
    pub b3: Array1<f32>,
    /// Wide weights, `ctx_dim × wide_slots`.
    pub wide: Array2<f32>,
}

mod rand_distr_normal {
    use rand::Rng;
    /// Box–Muller; avoids a dependency for one distribution.
    pub fn standard_normal(rng: &mut impl Rng) -> f32 {
        let u1: f32 = rng.gen_range(f32::EPSILON..1.0);
        let u2: f32 = rng.gen();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }
}

fn he_init(rng: &mut impl Rng, rows: usize, cols: usize, fan_in: usize) -> Array2<f32> {
    let std = (2.0 / fan_in as f32).sqrt();
    Array2::from_shape_simple_fn((rows, cols), || standard_normal(rng) * std)
}

impl Network {
    /// He-initialised weights; deterministic for a given RNG state.
    pub fn new(arch: Arch, rng: &mut impl Rng) -> Network {
        // The sparse layer sees ~hundreds of active inputs of unit total norm,
        // so its fan-in is effectively small.
        let w1x = he_init(rng, arch.ctx_dim, arch.hidden1, 64);
        let w1a = he_init(rng, arch.action_dim, arch.hidden1, arch.action_dim);
        let w2 = he_init(rng, arch.hidden1, arch.hidden2, arch.hidden1);
        let w3 = he_init(rng, arch.hidden2, HEADS, arch.hidden2) * 0.1;
        Network {
            arch,
            w1x,
            w1a,
            b1: Array1::zeros(arch.hidden1),
            w2,
            b2: Array1::zeros(arch.hidden2),
            w3,
            b3: Array1::zeros(HEADS),
            wide: Array2::zeros((arch.ctx_dim, arch.wide_slots)),
        }
    }

    /// The wide half for a context: `Vᵀ x`, one value per id slot.
    pub fn context_wide(&self, x: &Features, out: &mut [f32]) {
        out.iter_mut().for_each(|o| *o = 0.0);
        let s = self.arch.wide_slots;
        if s == 0 {
            return;
        }
        simd::sparse_rows_axpy(out, &x.indices, &x.values, self.wide.as_slice().expect("contiguous"), s);
    }

    /// The wide term of one candidate: `(Vᵀ x) · a_id`.
    #[inline]
    pub fn wide_term(&self, ctx_wide: &[f32], a: &[f32]) -> f32 {
        ctx_wide.iter().zip(a).map(|(u, a)| u * a).sum()
    }

    /// The context half of the first layer: `b1 + W1xᵀ x`.
    pub fn context_hidden(&self, x: &Features, out: &mut [f32]) {
        out.copy_from_slice(self.b1.as_slice().expect("contiguous"));
        let w = self.w1x.as_slice().expect("contiguous");
        simd::sparse_rows_axpy(out, &x.indices, &x.values, w, self.arch.hidden1);
    }

    /// The action half of the first layer: `W1aᵀ a`.
    pub fn action_hidden(&self, a: &[f32], out: &mut [f32]) {
        out.iter_mut().for_each(|o| *o = 0.0);
        let w = self.w1a.as_slice().expect("contiguous");
        let h = self.arch.hidden1;
        for (k, &v) in a.iter().enumerate() {
            if v == 0.0 {
                continue;
            }
            let row = &w[k * h..(k + 1) * h];
            for (o, &wv) in out.iter_mut().zip(row) {
                *o += v * wv;
            }
        }
    }

    /// Heads for one candidate, given the summed first-layer pre-activation
    /// and the wide term. `scratch` must hold `hidden2` floats.
    pub fn heads_from_z1(&self, z1: &[f32], wide: f32, scratch: &mut [f32]) -> [f32; HEADS] {
        let h2 = self.arch.hidden2;
        scratch.copy_from_slice(self.b2.as_slice().expect("contiguous"));
        simd::relu_rows_axpy(scratch, z1, self.w2.as_slice().expect("contiguous"), h2);
        let mut out = [0f32; HEADS];
        out.copy_from_slice(self.b3.as_slice().expect("contiguous"));
        out[HEAD_QUALITY] += wide;
        let w3 = self.w3.as_slice().expect("contiguous");
        for (i, &z) in scratch.iter().enumerate() {
            if z <= 0.0 {
                continue;
            }
            for k in 0..HEADS {
                out[k] += z * w3[i * HEADS + k];
            }
        }
        out
    }

    /// Forward pass for one (context, action) pair. Slow path for tests and
    /// tools; the policy shares the context half across candidates.
    pub fn forward_one(&self, x: &Features, a: &[f32]) -> [f32; HEADS] {
        let mut z = vec![0f32; self.arch.hidden1];
        let mut za = vec![0f32; self.arch.hidden1];
        self.context_hidden(x, &mut z);
        self.action_hidden(a, &mut za);
        z.iter_mut().zip(&za).for_each(|(z, a)| *z += a);
        let mut s2 = vec![0f32; self.arch.hidden2];
        let mut u = vec![0f32; self.arch.wide_slots];
        self.context_wide(x, &mut u);
        self.heads_from_z1(&z, self.wide_term(&u, a), &mut s2)
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.params().iter().map(|(_, _, p)| p.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One training example: a context (by index into the batch's contexts), an
/// action vector, per-head targets with a mask for heads that have no
/// target, and a sample weight.
#[derive(Debug, Clone)]
pub struct Item {
    pub ctx: usize,
    pub action: Vec<f32>,
    /// Added to the network's outputs: a prior the heads learn a residual
    /// over (the catalog's cost estimate for the cost head).
    pub offset: [f32; HEADS],
    pub target: [f32; HEADS],
    pub mask: [bool; HEADS],
    pub weight: f32,
}

/// Contexts are shared by the items that point at them (full-information
/// data has one context and K items per prompt).
#[derive(Debug, Clone, Default)]
pub struct Batch<'a> {
    pub contexts: Vec<&'a Features>,
    pub items: Vec<Item>,
}

/// The gradient of the sparse input rows (`w1x` and `wide`), kept
/// factored: row `j`'s gradient is `Σ x_c[j] · d_c` over the contexts `c`
/// that touch it. Materialising every touched row (tens of thousands for a
/// batch of distinct prompts) would cost megabytes of memory traffic per
/// step; the factored form is rebuilt row by row in cache when needed.
#[derive(Debug, Clone)]
pub struct SparseGrad {
    /// Touched input rows.
    pub rows: Vec<usize>,
    /// `entries[starts[s]..starts[s + 1]]`: the `(context, x value)` pairs of row `rows[s]`.
    starts: Vec<u32>,
    entries: Vec<(u32, f32)>,
    /// Upstream gradient per context: first layer (`contexts × hidden1`) and wide (`contexts × wide_slots`).
    dctx: Array2<f32>,
    dwide: Array2<f32>,
    /// Per row, `Σ g²` of its `w1x` and `wide` parts, filled by [`Grads::norm`]
    /// so the optimiser does not recompute them.
    sumsq: Vec<(f32, f32)>,
}

impl SparseGrad {
    fn build(contexts: &[&Features], ctx_dim: usize, dctx: Array2<f32>, dwide: Array2<f32>) -> SparseGrad {
        let mut slot_of = vec![u32::MAX; ctx_dim];
        let mut rows = Vec::new();
        let mut counts: Vec<u32> = Vec::new();
        for x in contexts {
            for &i in &x.indices {
                let s = &mut slot_of[i as usize];
                if *s == u32::MAX {
                    *s = rows.len() as u32;
                    rows.push(i as usize);
                    counts.push(0);
                }
                counts[*s as usize] += 1;
            }
        }
        let mut starts = Vec::with_capacity(rows.len() + 1);
        starts.push(0u32);
        for c in &counts {
            starts.push(starts.last().copied().unwrap_or(0) + c);
        }
        let mut fill: Vec<u32> = starts[..rows.len()].to_vec();
        let mut entries = vec![(0u32, 0f32); *starts.last().unwrap_or(&0) as usize];
        for (c, x) in contexts.iter().enumerate() {
            for (&i, &v) in x.indices.iter().zip(&x.values) {
                let s = slot_of[i as usize] as usize;
                entries[fill[s] as usize] = (c as u32, v);
                fill[s] += 1;
            }
        }
        SparseGrad {
            rows,
            starts,
            entries,
            dctx,
            dwide,
            sumsq: Vec::new(),
        }
    }

    /// Writes slot `s`'s gradient rows into `g1x` (`hidden1`) and `gwide` (`wide_slots`).
    pub fn row(&self, s: usize, g1x: &mut [f32], gwide: &mut [f32]) {
        g1x.iter_mut().for_each(|v| *v = 0.0);
        gwide.iter_mut().for_each(|v| *v = 0.0);
        let d = self.dctx.as_slice().expect("contiguous");
        let dw = self.dwide.as_slice().expect("contiguous");
        let (h1, ws) = (g1x.len(), gwide.len());
        for &(c, v) in &self.entries[self.starts[s] as usize..self.starts[s + 1] as usize] {
            let c = c as usize;
            simd::axpy(g1x, v, &d[c * h1..(c + 1) * h1]);
            simd::axpy(gwide, v, &dw[c * ws..(c + 1) * ws]);
        }
    }

    fn scale(&mut self, f: f32) {
        self.dctx *= f;
        self.dwide *= f;
        for (a, b) in &mut self.sumsq {
            *a *= f * f;
            *b *= f * f;
        }
    }

    /// Per-row squared norms, computing them if [`Grads::norm`] has not.
    fn row_sumsq(&mut self) -> &[(f32, f32)] {
        if self.sumsq.len() != self.rows.len() {
            let (mut g1, mut gw) = (vec![0f32; self.dctx.ncols()], vec![0f32; self.dwide.ncols()]);
            self.sumsq = (0..self.rows.len())
                .map(|s| {
                    self.row(s, &mut g1, &mut gw);
                    (simd::sum_squares(&g1), simd::sum_squares(&gw))
                })
                .collect();
        }
        &self.sumsq
    }
}

/// Gradients of every parameter.
#[derive(Debug, Clone)]
pub struct Grads {
    pub sparse: SparseGrad,
    pub w1a: Array2<f32>,
    pub b1: Array1<f32>,
    pub w2: Array2<f32>,
    pub b2: Array1<f32>,
    pub w3: Array2<f32>,
    pub b3: Array1<f32>,
}

impl Grads {
    /// The dense gradients, in [`Network::params`] order (`w1a … b3`).
    pub fn dense(&self) -> [&[f32]; 6] {
        [
            self.w1a.as_slice().expect("contiguous"),
            self.b1.as_slice().expect("contiguous"),
            self.w2.as_slice().expect("contiguous"),
            self.b2.as_slice().expect("contiguous"),
            self.w3.as_slice().expect("contiguous"),
            self.b3.as_slice().expect("contiguous"),
        ]
    }

    /// The global L2 norm, sparse rows included.
    pub fn norm(&mut self) -> f32 {
        let dense: f32 = self.dense().into_iter().map(simd::sum_squares).sum();
        let sparse: f32 = self.sparse.row_sumsq().iter().map(|(a, b)| a + b).sum();
        (dense + sparse).sqrt()
    }

    pub fn scale(&mut self, f: f32) {
        self.sparse.scale(f);
        self.w1a *= f;
        self.b1 *= f;
        self.w2 *= f;
        self.b2 *= f;
        self.w3 *= f;
        self.b3 *= f;
    }
}

/// Loss of head `k` at raw output `y` against `target`, and its derivative.
/// The quality head is a logit: log loss against a target in [0, 1] (a
/// probability of success, so the logistic link fits it and keeps the
/// gradient alive where a squared loss on a sigmoid would vanish). The cost
/// and latency heads regress logs with the Huber loss.
#[inline]
pub fn head_loss(k: usize, y: f32, target: f32, delta: f32) -> (f32, f32) {
    if k == HEAD_QUALITY {
        let t = target.clamp(0.0, 1.0);
        // ln(1 + e^y) − t·y, computed stably.
        let softplus = if y > 0.0 {
            y + (-y).exp().ln_1p()
        } else {
            y.exp().ln_1p()
        };
        let entropy = if t > 0.0 && t < 1.0 {
            -(t * t.ln() + (1.0 - t) * (1.0 - t).ln())
        } else {
            0.0
        };
        (softplus - t * y - entropy, sigmoid(y) - t)
    } else {
        huber(y - target, delta)
    }
}

/// The logistic function.
#[inline]
pub fn sigmoid(y: f32) -> f32 {
    1.0 / (1.0 + (-y).exp())
}

/// Huber loss with threshold `delta` and its derivative.
#[inline]
pub fn huber(r: f32, delta: f32) -> (f32, f32) {
    if r.abs() <= delta {
        (0.5 * r * r, r)
    } else {
        (delta * (r.abs() - 0.5 * delta), delta * r.signum())
    }
}

impl Network {
    /// Batched forward pass: returns `(z1, z2, y)` for every item.
    fn forward_batch(&self, batch: &Batch<'_>) -> (Array2<f32>, Array2<f32>, Array2<f32>) {
        let ws = self.arch.wide_slots;
        let mut ctx_w = Array2::<f32>::zeros((batch.contexts.len(), ws));
        for (c, x) in batch.contexts.iter().enumerate() {
            let mut row = ctx_w.row_mut(c);
            self.context_wide(x, row.as_slice_mut().expect("contiguous"));
        }
        let n = batch.items.len();
        let h1 = self.arch.hidden1;
        let mut ctx_h = Array2::<f32>::zeros((batch.contexts.len(), h1));
        for (c, x) in batch.contexts.iter().enumerate() {
            let mut row = ctx_h.row_mut(c);
            self.context_hidden(x, row.as_slice_mut().expect("contiguous"));
        }
        let mut a = Array2::<f32>::zeros((n, self.arch.action_dim));
        for (i, it) in batch.items.iter().enumerate() {
            a.row_mut(i).assign(&ArrayView1::from(&it.action[..]));
        }
        let mut z1 = a.dot(&self.w1a);
        for (i, it) in batch.items.iter().enumerate() {
            let mut row = z1.row_mut(i);
            row += &ctx_h.row(it.ctx);
        }
        let h1m = z1.mapv(|v| v.max(0.0));
        let mut z2 = h1m.dot(&self.w2);
        z2 += &self.b2;
        let h2m = z2.mapv(|v| v.max(0.0));
        let mut y = h2m.dot(&self.w3);
        y += &self.b3;
        for (i, it) in batch.items.iter().enumerate() {
            y[(i, HEAD_QUALITY)] += self.wide_term(ctx_w.row(it.ctx).as_slice().expect("contiguous"), &it.action);
            for k in 0..HEADS {
                y[(i, k)] += it.offset[k];
            }
        }
        (z1, z2, y)
    }

    /// Predictions for every item of a batch (`n × HEADS`).
    pub fn predict_batch(&self, batch: &Batch<'_>) -> Array2<f32> {
        self.forward_batch(batch).2
    }

    /// Every parameter tensor with its name and shape, in a fixed order
    /// (checkpoints and weight averaging walk this list).
    pub fn params(&self) -> [(&'static str, &[usize], &[f32]); 8] {
        [
            ("w1x", self.w1x.shape(), self.w1x.as_slice().expect("contiguous")),
            ("w1a", self.w1a.shape(), self.w1a.as_slice().expect("contiguous")),
            ("b1", self.b1.shape(), self.b1.as_slice().expect("contiguous")),
            ("w2", self.w2.shape(), self.w2.as_slice().expect("contiguous")),
            ("b2", self.b2.shape(), self.b2.as_slice().expect("contiguous")),
            ("w3", self.w3.shape(), self.w3.as_slice().expect("contiguous")),
            ("b3", self.b3.shape(), self.b3.as_slice().expect("contiguous")),
            ("wide", self.wide.shape(), self.wide.as_slice().expect("contiguous")),
        ]
    }

    /// [`Network::params`], mutable and in the same order.
    pub fn params_mut(&mut self) -> [&mut [f32]; 8] {
        [
            self.w1x.as_slice_mut().expect("contiguous"),
            self.w1a.as_slice_mut().expect("contiguous"),
            self.b1.as_slice_mut().expect("contiguous"),
            self.w2.as_slice_mut().expect("contiguous"),
            self.b2.as_slice_mut().expect("contiguous"),
            self.w3.as_slice_mut().expect("contiguous"),
            self.b3.as_slice_mut().expect("contiguous"),
            self.wide.as_slice_mut().expect("contiguous"),
        ]
    }

    /// Moves every weight a fraction `t` of the way towards `other`'s.
    pub fn blend_towards(&mut self, other: &Network, t: f32) {
        for (mine, (_, _, theirs)) in self.params_mut().into_iter().zip(other.params()) {
            mine.iter_mut().zip(theirs).for_each(|(x, y)| *x += t * (y - *x));
        }
    }

    /// Weighted mean loss of each head over the items where it is
    /// masked in (no gradients).
    pub fn head_losses(&self, batch: &Batch<'_>, delta: f32) -> [f32; HEADS] {
        let y = self.predict_batch(batch);
        let mut sum = [0f32; HEADS];
        let mut w = [0f32; HEADS];
        for (i, it) in batch.items.iter().enumerate() {
            for k in 0..HEADS {
                if it.mask[k] {
                    sum[k] += it.weight * head_loss(k, y[(i, k)], it.target[k], delta).0;
                    w[k] += it.weight;
                }
            }
        }
        std::array::from_fn(|k| if w[k] > 0.0 { sum[k] / w[k] } else { 0.0 })
    }

    /// Weighted mean loss over the masked heads (see [`head_loss`]), and its gradients.
    pub fn loss_and_grads(&self, batch: &Batch<'_>, delta: f32) -> (f32, Grads) {
        let (z1, z2, y) = self.forward_batch(batch);
        let n = batch.items.len();
        let total_w: f32 = batch.items.iter().map(|it| it.weight).sum::<f32>().max(1e-12);
        let mut loss = 0.0;
        let mut dy = Array2::<f32>::zeros((n, HEADS));
        for (i, it) in batch.items.iter().enumerate() {
            for k in 0..HEADS {
                if it.mask[k] {
                    let (l, d) = head_loss(k, y[(i, k)], it.target[k], delta);
                    loss += it.weight * l;
                    dy[(i, k)] = it.weight * d / total_w;
                }
            }
        }
        loss /= total_w;

        let h2m = z2.mapv(|v| v.max(0.0));
        let h1m = z1.mapv(|v| v.max(0.0));
        let g_w3 = h2m.t().dot(&dy);
        let g_b3 = dy.sum_axis(Axis(0));
        let mut dz2 = dy.dot(&self.w3.t());
        dz2.zip_mut_with(&z2, |d, &z| {
            if z <= 0.0 {
                *d = 0.0
            }
        });
        let g_w2 = h1m.t().dot(&dz2);
        let g_b2 = dz2.sum_axis(Axis(0));
        let mut dz1 = dz2.dot(&self.w2.t());
        dz1.zip_mut_with(&z1, |d, &z| {
            if z <= 0.0 {
                *d = 0.0
            }
        });
        let mut a = Array2::<f32>::zeros((n, self.arch.action_dim));
        for (i, it) in batch.items.iter().enumerate() {
            a.row_mut(i).assign(&ArrayView1::from(&it.action[..]));
        }
        let g_w1a = a.t().dot(&dz1);
        let g_b1 = dz1.sum_axis(Axis(0));

        // Context gradient: sum the items of each context, then scatter into
        // the rows that context touches.
        let h1 = self.arch.hidden1;
        let mut dctx = Array2::<f32>::zeros((batch.contexts.len(), h1));
        for (i, it) in batch.items.iter().enumerate() {
            let mut row = dctx.row_mut(it.ctx);
            row += &dz1.row(i);
        }
        let ws = self.arch.wide_slots;
        let mut dwide = Array2::<f32>::zeros((batch.contexts.len(), ws));
        for (i, it) in batch.items.iter().enumerate() {
            let dq = dy[(i, HEAD_QUALITY)];
            for (d, &a) in dwide.row_mut(it.ctx).iter_mut().zip(&it.action) {
                *d += a * dq;
            }
        }
        let sparse = SparseGrad::build(&batch.contexts, self.arch.ctx_dim, dctx, dwide);
        (
            loss,
            Grads {
                sparse,
                w1a: g_w1a,
                b1: g_b1,
                w2: g_w2,
                b2: g_b2,
                w3: g_w3,
                b3: g_b3,
            },
        )
    }
}

/// The optimiser: Adam with gradient-norm clipping and decoupled weight
/// decay for the dense layers; row-wise AdaGrad for the sparse input rows
/// (`w1x`, `wide`), the usual choice for embedding tables. Only rows with a
/// gradient this step move, and each keeps one accumulator instead of two
/// moment vectors, so a step costs in proportion to the batch's non-zeros,
/// not to the vocabulary, and rare n-grams' steps shrink as they are seen.
#[derive(Debug, Clone)]
pub struct Adam {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub clip_norm: f32,
    /// Step size of the row-wise AdaGrad on sparse rows.
    pub sparse_lr: f32,
    t: u64,
    /// First and second moments of the dense tensors, in [`Grads::dense`] order.
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    /// Per input row: sum over steps of the mean squared gradient.
    acc_w1x: Vec<f32>,
    acc_wide: Vec<f32>,
}

use super::simd::adam as adam_slice;

/// The dense tensors (`w1a, b1, w2, b2, w3, b3`) sit between `w1x` and
/// `wide` in [`Network::params`] order.
const DENSE_TENSORS: usize = 6;

fn dense_params(net: &Network) -> impl Iterator<Item = &[f32]> {
    net.params().into_iter().skip(1).take(DENSE_TENSORS).map(|(_, _, p)| p)
}

/// One row-wise AdaGrad update: the row's accumulator grows by its mean
/// squared gradient, and the whole row steps by `lr / sqrt(accumulator)`.
fn adagrad_row(w: &mut [f32], g: &[f32], sumsq: f32, acc: &mut f32, lr: f32, decay: f32) {
    *acc += sumsq / g.len() as f32;
    let step = lr / (acc.sqrt() + 1e-10);
    simd::scale_axpy(w, 1.0 - decay, -step, g);
}

impl Adam {
    pub fn new(net: &Network, lr: f32) -> Adam {
        Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            clip_norm: 5.0,
            sparse_lr: 0.05,
            t: 0,
            m: dense_params(net).map(|p| vec![0.0; p.len()]).collect(),
            v: dense_params(net).map(|p| vec![0.0; p.len()]).collect(),
            acc_w1x: vec![0.0; net.arch.ctx_dim],
            acc_wide: vec![0.0; net.arch.ctx_dim],
        }
    }

    pub fn steps(&self) -> u64 {
        self.t
    }

    /// Clips the gradient to `clip_norm` and applies one update. Returns the
    /// gradient norm before clipping.
    pub fn step(&mut self, net: &mut Network, grads: &mut Grads) -> f32 {
        let norm = grads.norm();
        if self.clip_norm > 0.0 && norm > self.clip_norm {
            grads.scale(self.clip_norm / norm);
        }
        self.t += 1;
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        let lr_t = self.lr * (1.0 - b2.powi(self.t as i32)).sqrt() / (1.0 - b1.powi(self.t as i32));
        let decay = self.lr * self.weight_decay;
        let dense = net.params_mut().into_iter().skip(1).take(DENSE_TENSORS);
        for (((p, g), m), v) in dense.zip(grads.dense()).zip(&mut self.m).zip(&mut self.v) {
            adam_slice(p, g, m, v, lr_t, b1, b2, eps, decay);
        }
        let sparse_decay = self.sparse_lr * self.weight_decay;
        let (h1, ws) = (net.arch.hidden1, net.arch.wide_slots);
        let (mut g1, mut gw) = (vec![0f32; h1], vec![0f32; ws]);
        let w1x = net.w1x.as_slice_mut().expect("contiguous");
        let wide = net.wide.as_slice_mut().expect("contiguous");
        grads.sparse.row_sumsq();
        let sparse = &grads.sparse;
        for (s, &row) in sparse.rows.iter().enumerate() {
            sparse.row(s, &mut g1, &mut gw);
            let (sq1, sqw) = sparse.sumsq[s];
            let lr = self.sparse_lr;
            adagrad_row(
                &mut w1x[row * h1..(row + 1) * h1],
                &g1,
                sq1,
                &mut self.acc_w1x[row],
                lr,
                sparse_decay,
            );
            if ws > 0 {
                adagrad_row(
                    &mut wide[row * ws..(row + 1) * ws],
                    &gw,
                    sqw,
                    &mut self.acc_wide[row],
                    lr,
                    sparse_decay,
                );
            }
        }
        norm
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn arch() -> Arch {
        Arch {
            ctx_dim: 40,
            action_dim: 6,
            hidden1: 16,
            hidden2: 8,
            wide_slots: 3,
        }
    }

    fn feats(idx: &[u32], rng: &mut ChaCha8Rng) -> Features {
        Features {
            dim: 40,
            indices: idx.to_vec(),
            values: idx.iter().map(|_| rng.gen_range(-1.0..1.0)).collect(),
        }
    }

    fn toy_batch(rng: &mut ChaCha8Rng) -> (Vec<Features>, Vec<Item>) {
        let ctxs = vec![
            feats(&[1, 5, 9, 30], rng),
            feats(&[2, 5, 39], rng),
            feats(&[0, 9, 17, 22, 23], rng),
        ];
        let mut items = Vec::new();
        for i in 0..7 {
            items.push(Item {
                ctx: i % 3,
                offset: [0.0, rng.gen_range(-1.0..0.0), 0.3],
                action: (0..6).map(|_| rng.gen_range(-1.0..1.0)).collect(),
                target: [rng.gen(), rng.gen_range(-3.0..1.0), rng.gen_range(-1.0..1.0)],
                mask: [true, true, i % 2 == 0],
                weight: rng.gen_range(0.5..2.0),
            });
        }
        (ctxs, items)
    }

    /// Every parameter's analytic gradient matches a central finite difference.
    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let net = Network::new(arch(), &mut rng);
        let (ctxs, items) = toy_batch(&mut rng);
        let batch = Batch {
            contexts: ctxs.iter().collect(),
            items,
        };
        // A large delta keeps the loss smooth (quadratic) so differences are exact enough.
        let delta = 0.7;
        let (_, g) = net.loss_and_grads(&batch, delta);
        let eps = 1e-3f32;
        let loss_at = |net: &Network| net.loss_and_grads(&batch, delta).0 as f64;
        let mut checked = 0;
        let mut check = |name: &str, analytic: f32, bump: &dyn Fn(&mut Network, f32)| {
            let mut plus = net.clone();
            bump(&mut plus, eps);
            let mut minus = net.clone();
            bump(&mut minus, -eps);
            let numeric = ((loss_at(&plus) - loss_at(&minus)) / (2.0 * eps as f64)) as f32;
            let tol = 2e-3 + 2e-2 * numeric.abs().max(analytic.abs());
            assert!(
                (numeric - analytic).abs() < tol,
                "{name}: numeric {numeric} vs analytic {analytic}"
            );
            checked += 1;
        };
        let mut g1 = vec![0f32; 16];
        let mut gw = vec![0f32; 3];
        for (slot, &row) in g.sparse.rows.iter().enumerate() {
            g.sparse.row(slot, &mut g1, &mut gw);
            for col in [0, 3, 15] {
                check(&format!("w1x[{row},{col}]"), g1[col], &|n, e| n.w1x[(row, col)] += e);
            }
        }
        for r in 0..6 {
            for col in [1, 7] {
                check(&format!("w1a[{r},{col}]"), g.w1a[(r, col)], &|n, e| {
                    n.w1a[(r, col)] += e
                });
            }
        }
        for j in 0..16 {
            check(&format!("b1[{j}]"), g.b1[j], &|n, e| n.b1[j] += e);
        }
        for r in [0, 4, 9, 15] {
            for col in 0..8 {
                check(&format!("w2[{r},{col}]"), g.w2[(r, col)], &|n, e| n.w2[(r, col)] += e);
            }
        }
        for j in 0..8 {
            check(&format!("b2[{j}]"), g.b2[j], &|n, e| n.b2[j] += e);
            for k in 0..HEADS {
                check(&format!("w3[{j},{k}]"), g.w3[(j, k)], &|n, e| n.w3[(j, k)] += e);
            }
        }
        for k in 0..HEADS {
            check(&format!("b3[{k}]"), g.b3[k], &|n, e| n.b3[k] += e);
        }
        // The wide weights start at zero; move them off it so the check is not trivial.
        let mut rng2 = ChaCha8Rng::seed_from_u64(8);
        let mut net = net.clone();
        net.wide.mapv_inplace(|_| rng2.gen_range(-0.5..0.5));
        let (_, g) = net.loss_and_grads(&batch, delta);
        let loss_at = |net: &Network| net.loss_and_grads(&batch, delta).0 as f64;
        for (slot, &row) in g.sparse.rows.iter().enumerate() {
            g.sparse.row(slot, &mut g1, &mut gw);
            for (col, &analytic) in gw.iter().enumerate() {
                let mut plus = net.clone();
                plus.wide[(row, col)] += eps;
                let mut minus = net.clone();
                minus.wide[(row, col)] -= eps;
                let numeric = ((loss_at(&plus) - loss_at(&minus)) / (2.0 * eps as f64)) as f32;
                assert!(
                    (numeric - analytic).abs() < 2e-3 + 2e-2 * numeric.abs(),
                    "wide[{row},{col}]: {numeric} vs {analytic}"
                );
                checked += 1;
            }
        }
        assert!(checked > 100);
        // Rows no context touches get no gradient entry at all.
        assert!(!g.sparse.rows.contains(&3));
    }

    #[test]
    fn batched_forward_matches_single_forward() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let net = Network::new(arch(), &mut rng);
        let (ctxs, items) = toy_batch(&mut rng);
        let batch = Batch {
            contexts: ctxs.iter().collect(),
            items: items.clone(),
        };
        let y = net.predict_batch(&batch);
        for (i, it) in items.iter().enumerate() {
            let one = net.forward_one(&ctxs[it.ctx], &it.action);
            for k in 0..HEADS {
                assert!((y[(i, k)] - one[k] - it.offset[k]).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn adam_reduces_loss_and_clips() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut net = Network::new(arch(), &mut rng);
        let (ctxs, items) = toy_batch(&mut rng);
        let batch = Batch {
            contexts: ctxs.iter().collect(),
            items,
        };
        let mut adam = Adam::new(&net, 1e-2);
        adam.clip_norm = 1.0;
        let first = net.loss_and_grads(&batch, 1.0).0;
        for _ in 0..300 {
            let (_, mut g) = net.loss_and_grads(&batch, 1.0);
            adam.step(&mut net, &mut g);
            assert!(g.norm() <= 1.0 + 1e-4, "clipped norm");
        }
        let last = net.loss_and_grads(&batch, 1.0).0;
        assert!(last < first * 0.1, "loss {first} -> {last}");
    }

    #[test]
    fn init_is_deterministic_under_a_seed() {
        let a = Network::new(arch(), &mut ChaCha8Rng::seed_from_u64(5));
        let b = Network::new(arch(), &mut ChaCha8Rng::seed_from_u64(5));
        let c = Network::new(arch(), &mut ChaCha8Rng::seed_from_u64(6));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
