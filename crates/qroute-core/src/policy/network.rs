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
//! Single-sample scoring uses plain loops (fast at this size). The backward
//! pass, the loss and the optimiser live in `qroute-learn`, so serving
//! carries none of them.

use ndarray::{ArcArray2, Array1, Array2, ArrayBase, Data, DataMut, Dimension};
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
    /// The sparse input rows (`ctx_dim × hidden1`, 2 MB at the default
    /// 8,192 × 64) and the wide weights below are shared copy-on-write:
    /// cloning a network (the trainer's working copy of the policy it
    /// serves, a snapshot) shares them until one copy is written to, which
    /// copies that array once. An idle gateway then holds them once, not
    /// once for serving and once for a trainer that has taken no step.
    pub w1x: ArcArray2<f32>,
    pub w1a: Array2<f32>,
    pub b1: Array1<f32>,
    pub w2: Array2<f32>,
    pub b2: Array1<f32>,
    pub w3: Array2<f32>,
    pub b3: Array1<f32>,
    /// Wide weights, `ctx_dim × wide_slots` (shared copy-on-write, as `w1x`).
    pub wide: ArcArray2<f32>,
}

/// `a`'s elements as one slice, in row-major order.
///
/// Every array of a [`Network`] (and of its gradients) is owned and in
/// standard layout: made by [`Network::new`], by checkpoint loading or by
/// ndarray's owned arithmetic, and never sliced or transposed in place; a
/// row of such an array is contiguous too. A broken invariant is a bug to
/// surface at once, not a state to route through, hence the `expect`.
#[allow(clippy::expect_used)]
#[inline]
pub fn flat<S: Data<Elem = f32>, D: Dimension>(a: &ArrayBase<S, D>) -> &[f32] {
    a.as_slice().expect("arrays of a network are in standard layout")
}

/// [`flat`], mutable.
#[allow(clippy::expect_used)]
#[inline]
pub fn flat_mut<S: DataMut<Elem = f32>, D: Dimension>(a: &mut ArrayBase<S, D>) -> &mut [f32] {
    a.as_slice_mut().expect("arrays of a network are in standard layout")
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
            w1x: w1x.into_shared(),
            w1a,
            b1: Array1::zeros(arch.hidden1),
            w2,
            b2: Array1::zeros(arch.hidden2),
            w3,
            b3: Array1::zeros(HEADS),
            wide: ArcArray2::zeros((arch.ctx_dim, arch.wide_slots)),
        }
    }

    /// The wide half for a context: `Vᵀ x`, one value per id slot.
    pub fn context_wide(&self, x: &Features, out: &mut [f32]) {
        out.iter_mut().for_each(|o| *o = 0.0);
        let s = self.arch.wide_slots;
        if s == 0 {
            return;
        }
        simd::sparse_rows_axpy(out, &x.indices, &x.values, flat(&self.wide), s);
    }

    /// The wide term of one candidate: `(Vᵀ x) · a_id`.
    #[inline]
    pub fn wide_term(&self, ctx_wide: &[f32], a: &[f32]) -> f32 {
        ctx_wide.iter().zip(a).map(|(u, a)| u * a).sum()
    }

    /// The context half of the first layer: `b1 + W1xᵀ x`.
    pub fn context_hidden(&self, x: &Features, out: &mut [f32]) {
        out.copy_from_slice(flat(&self.b1));
        let w = flat(&self.w1x);
        simd::sparse_rows_axpy(out, &x.indices, &x.values, w, self.arch.hidden1);
    }

    /// The action half of the first layer: `W1aᵀ a`.
    pub fn action_hidden(&self, a: &[f32], out: &mut [f32]) {
        out.iter_mut().for_each(|o| *o = 0.0);
        let w = flat(&self.w1a);
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
        scratch.copy_from_slice(flat(&self.b2));
        simd::relu_rows_axpy(scratch, z1, flat(&self.w2), h2);
        let mut out = [0f32; HEADS];
        out.copy_from_slice(flat(&self.b3));
        out[HEAD_QUALITY] += wide;
        let w3 = flat(&self.w3);
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

    /// Every parameter tensor with its name and shape, in a fixed order
    /// (checkpoints and weight averaging walk this list).
    pub fn params(&self) -> [(&'static str, &[usize], &[f32]); 8] {
        [
            ("w1x", self.w1x.shape(), flat(&self.w1x)),
            ("w1a", self.w1a.shape(), flat(&self.w1a)),
            ("b1", self.b1.shape(), flat(&self.b1)),
            ("w2", self.w2.shape(), flat(&self.w2)),
            ("b2", self.b2.shape(), flat(&self.b2)),
            ("w3", self.w3.shape(), flat(&self.w3)),
            ("b3", self.b3.shape(), flat(&self.b3)),
            ("wide", self.wide.shape(), flat(&self.wide)),
        ]
    }

    /// [`Network::params`], mutable and in the same order.
    pub fn params_mut(&mut self) -> [&mut [f32]; 8] {
        [
            flat_mut(&mut self.w1x),
            flat_mut(&mut self.w1a),
            flat_mut(&mut self.b1),
            flat_mut(&mut self.w2),
            flat_mut(&mut self.b2),
            flat_mut(&mut self.w3),
            flat_mut(&mut self.b3),
            flat_mut(&mut self.wide),
        ]
    }
}

/// The logistic function.
#[inline]
pub fn sigmoid(y: f32) -> f32 {
    1.0 / (1.0 + (-y).exp())
}
