//! The optimiser (see [`Adam`]).

use qroute_core::policy::network::flat_mut;
use qroute_core::policy::network::Network;
use qroute_core::policy::simd;

use crate::grad::Grads;

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

use simd::adam as adam_slice;

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
        let w1x = flat_mut(&mut net.w1x);
        let wide = flat_mut(&mut net.wide);
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
    use crate::grad::*;
    use qroute_core::features::Features;
    use qroute_core::policy::network::*;
    use rand::Rng;
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
        let (_, g) = crate::grad::loss_and_grads(&net, &batch, delta);
        let eps = 1e-3f32;
        let loss_at = |net: &Network| crate::grad::loss_and_grads(net, &batch, delta).0 as f64;
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
        let (_, g) = crate::grad::loss_and_grads(&net, &batch, delta);
        let loss_at = |net: &Network| crate::grad::loss_and_grads(net, &batch, delta).0 as f64;
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
        let y = crate::grad::predict_batch(&net, &batch);
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
        let first = crate::grad::loss_and_grads(&net, &batch, 1.0).0;
        for _ in 0..300 {
            let (_, mut g) = crate::grad::loss_and_grads(&net, &batch, 1.0);
            adam.step(&mut net, &mut g);
            assert!(g.norm() <= 1.0 + 1e-4, "clipped norm");
        }
        let last = crate::grad::loss_and_grads(&net, &batch, 1.0).0;
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
