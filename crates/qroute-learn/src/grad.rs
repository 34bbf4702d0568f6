//! The backward pass: batched forward with the activations kept, the
//! per-head losses and the gradients of every parameter. Only the learner
//! uses it; serving scores with the forward pass in `qroute-core`.

use ndarray::{Array1, Array2, ArrayView1, Axis};
use qroute_core::policy::network::{flat, flat_mut};

use qroute_core::features::Features;
use qroute_core::policy::network::{sigmoid, Network, HEADS, HEAD_QUALITY};
use qroute_core::policy::simd;

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
    pub(crate) sumsq: Vec<(f32, f32)>,
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
        let d = flat(&self.dctx);
        let dw = flat(&self.dwide);
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
    pub(crate) fn row_sumsq(&mut self) -> &[(f32, f32)] {
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
            flat(&self.w1a),
            flat(&self.b1),
            flat(&self.w2),
            flat(&self.b2),
            flat(&self.w3),
            flat(&self.b3),
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

/// Huber loss with threshold `delta` and its derivative.
#[inline]
pub fn huber(r: f32, delta: f32) -> (f32, f32) {
    if r.abs() <= delta {
        (0.5 * r * r, r)
    } else {
        (delta * (r.abs() - 0.5 * delta), delta * r.signum())
    }
}

/// Batched forward pass: returns `(z1, z2, y)` for every item.
fn forward_batch(net: &Network, batch: &Batch<'_>) -> (Array2<f32>, Array2<f32>, Array2<f32>) {
    let ws = net.arch.wide_slots;
    let mut ctx_w = Array2::<f32>::zeros((batch.contexts.len(), ws));
    for (c, x) in batch.contexts.iter().enumerate() {
        let mut row = ctx_w.row_mut(c);
        net.context_wide(x, flat_mut(&mut row));
    }
    let n = batch.items.len();
    let h1 = net.arch.hidden1;
    let mut ctx_h = Array2::<f32>::zeros((batch.contexts.len(), h1));
    for (c, x) in batch.contexts.iter().enumerate() {
        let mut row = ctx_h.row_mut(c);
        net.context_hidden(x, flat_mut(&mut row));
    }
    let mut a = Array2::<f32>::zeros((n, net.arch.action_dim));
    for (i, it) in batch.items.iter().enumerate() {
        a.row_mut(i).assign(&ArrayView1::from(&it.action[..]));
    }
    let mut z1 = a.dot(&net.w1a);
    for (i, it) in batch.items.iter().enumerate() {
        let mut row = z1.row_mut(i);
        row += &ctx_h.row(it.ctx);
    }
    let h1m = z1.mapv(|v| v.max(0.0));
    let mut z2 = h1m.dot(&net.w2);
    z2 += &net.b2;
    let h2m = z2.mapv(|v| v.max(0.0));
    let mut y = h2m.dot(&net.w3);
    y += &net.b3;
    for (i, it) in batch.items.iter().enumerate() {
        y[(i, HEAD_QUALITY)] += net.wide_term(flat(&ctx_w.row(it.ctx)), &it.action);
        for k in 0..HEADS {
            y[(i, k)] += it.offset[k];
        }
    }
    (z1, z2, y)
}

/// Predictions for every item of a batch (`n × HEADS`).
pub fn predict_batch(net: &Network, batch: &Batch<'_>) -> Array2<f32> {
    forward_batch(net, batch).2
}

/// Moves every weight a fraction `t` of the way towards `other`'s.
pub fn blend_towards(net: &mut Network, other: &Network, t: f32) {
    for (mine, (_, _, theirs)) in net.params_mut().into_iter().zip(other.params()) {
        mine.iter_mut().zip(theirs).for_each(|(x, y)| *x += t * (y - *x));
    }
}

/// Weighted mean loss of each head over the items where it is
/// masked in (no gradients).
pub fn head_losses(net: &Network, batch: &Batch<'_>, delta: f32) -> [f32; HEADS] {
    let y = predict_batch(net, batch);
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
pub fn loss_and_grads(net: &Network, batch: &Batch<'_>, delta: f32) -> (f32, Grads) {
    let (z1, z2, y) = forward_batch(net, batch);
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
    let mut dz2 = dy.dot(&net.w3.t());
    dz2.zip_mut_with(&z2, |d, &z| {
        if z <= 0.0 {
            *d = 0.0
        }
    });
    let g_w2 = h1m.t().dot(&dz2);
    let g_b2 = dz2.sum_axis(Axis(0));
    let mut dz1 = dz2.dot(&net.w2.t());
    dz1.zip_mut_with(&z1, |d, &z| {
        if z <= 0.0 {
            *d = 0.0
        }
    });
    let mut a = Array2::<f32>::zeros((n, net.arch.action_dim));
    for (i, it) in batch.items.iter().enumerate() {
        a.row_mut(i).assign(&ArrayView1::from(&it.action[..]));
    }
    let g_w1a = a.t().dot(&dz1);
    let g_b1 = dz1.sum_axis(Axis(0));

    // Context gradient: sum the items of each context, then scatter into
    // the rows that context touches.
    let h1 = net.arch.hidden1;
    let mut dctx = Array2::<f32>::zeros((batch.contexts.len(), h1));
    for (i, it) in batch.items.iter().enumerate() {
        let mut row = dctx.row_mut(it.ctx);
        row += &dz1.row(i);
    }
    let ws = net.arch.wide_slots;
    let mut dwide = Array2::<f32>::zeros((batch.contexts.len(), ws));
    for (i, it) in batch.items.iter().enumerate() {
        let dq = dy[(i, HEAD_QUALITY)];
        for (d, &a) in dwide.row_mut(it.ctx).iter_mut().zip(&it.action) {
            *d += a * dq;
        }
    }
    let sparse = SparseGrad::build(&batch.contexts, net.arch.ctx_dim, dctx, dwide);
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
