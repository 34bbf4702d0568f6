//! The libtorch backend (`--features tch`) learns the same thing as the
//! plain-Rust one and writes checkpoints the plain-Rust policy loads.

#![cfg(feature = "tch")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use qroute_core::dataset::{Dataset, Row};
use qroute_core::features::{Features, Featurizer};
use qroute_core::policy::checkpoint;
use qroute_core::policy::dqn::{COST_EPS, LATENCY_EPS};
use qroute_core::policy::network::{sigmoid, Network, HEADS};
use qroute_core::policy::{DqnPolicy, OperatingPoint, Policy};
use qroute_learn::grad::Batch;
use qroute_learn::offline::{self, Backend, OfflineConfig};
use qroute_learn::torch::TorchLearner;
use qroute_learn::{Learner, LearnerConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::Device;

/// The first `n` training rows of the shipped RouteLLM data.
fn slice(n: usize) -> Dataset {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/routellm_mmlu_gsm8k.jsonl");
    let mut ds = Dataset::load(path).unwrap();
    ds.rows.retain(|r| r.split == "train");
    ds.rows.truncate(n);
    ds
}

/// Every (prompt, model) pair of `idx` as one batch, full information.
fn batch<'a>(policy: &DqnPolicy, rows: &[&Row], feats: &'a [Features], idx: &[usize]) -> Batch<'a> {
    let mut b = Batch::default();
    offline::items_for(policy, rows, feats, idx, &mut b);
    b
}

struct Setup {
    ds: Dataset,
    feats: Vec<Features>,
    policy: DqnPolicy,
    cfg: OfflineConfig,
}

fn setup(n: usize) -> Setup {
    let ds = slice(n);
    let cfg = OfflineConfig::default();
    let rows: Vec<&Row> = ds.rows.iter().collect();
    let fz = Featurizer::new(cfg.features.clone()).unwrap();
    let feats = offline::featurize_rows(&fz, &rows);
    let policy = offline::initial_policy(&ds, &rows, &cfg, &mut ChaCha8Rng::seed_from_u64(3)).unwrap();
    Setup { ds, feats, policy, cfg }
}

/// Trains in libtorch, saves, loads with the plain-Rust `DqnPolicy`, and
/// checks libtorch's forward pass against the serving one on held-back prompts.
#[test]
fn torch_checkpoints_load_in_plain_rust_and_score_the_same() {
    let s = setup(320);
    let rows: Vec<&Row> = s.ds.rows.iter().collect();
    let mut torch = TorchLearner::new(s.policy.clone(), s.cfg.learner.clone(), Device::Cpu).unwrap();
    let mut losses = Vec::new();
    for step in 0..12 {
        let idx: Vec<usize> = (step * 20..step * 20 + 20).collect();
        losses.push(torch.step(&batch(&s.policy, &rows, &s.feats, &idx)).unwrap().loss);
    }
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");

    let dir = tempfile::tempdir().unwrap();
    checkpoint::save(
        &torch.snapshot(7).unwrap(),
        dir.path(),
        serde_json::json!({"backend": "torch"}),
    )
    .unwrap();
    let loaded = checkpoint::load(dir.path()).unwrap();
    assert_eq!(loaded.version, 7);
    assert_ne!(loaded.net, s.policy.net, "training moved the weights");

    // Prompts the steps above never saw.
    let held: Vec<usize> = (240..320).collect();
    let b = batch(&s.policy, &rows, &s.feats, &held);
    let heads = torch.predict_heads(&b).unwrap();
    let cards: Vec<_> = loaded.catalog.models.iter().collect();
    let k = cards.len();
    let points = [0.0, 0.1, 0.5, 2.0].map(OperatingPoint::cost);
    let mut worst = 0f32;
    let mut preds = Vec::new();
    for (c, x) in b.contexts.iter().enumerate() {
        loaded.predict(x, &cards, &mut preds).unwrap();
        for (m, p) in preds.iter().enumerate() {
            let h: [f32; HEADS] = heads[c * k + m];
            let (q, cost) = (sigmoid(h[0]), (h[1].min(10.0).exp() - COST_EPS).max(0.0));
            let latency = (h[2].min(10.0).exp() - LATENCY_EPS).max(0.0);
            worst = worst
                .max((q - p.quality).abs())
                .max((cost - p.cost).abs())
                .max((latency - p.latency).abs());
            for pt in points {
                let torch_score = q - pt.cost_weight * cost - pt.latency_weight * latency;
                worst = worst.max((torch_score - p.score(pt)).abs());
            }
        }
    }
    println!(
        "largest libtorch vs plain-Rust difference over {} prompts: {worst:e}",
        held.len()
    );
    assert!(worst < 1e-5, "libtorch and plain-Rust forward passes differ by {worst}");
}

fn max_abs_diff(a: &Network, b: &Network) -> (f32, &'static str) {
    a.params()
        .into_iter()
        .zip(b.params())
        .map(|((name, _, x), (_, _, y))| {
            let d = x.iter().zip(y).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            (d, name)
        })
        .fold((0.0, ""), |acc, d| if d.0 > acc.0 { d } else { acc })
}

/// From the same weights and batches, libtorch's steps (autograd, tensor
/// Adam and AdaGrad) and the plain-Rust steps (hand-written backward pass)
/// give the same losses, gradient norms and weights.
#[test]
fn one_torch_step_matches_one_plain_rust_step() {
    let s = setup(96);
    let rows: Vec<&Row> = s.ds.rows.iter().collect();
    // No averaging: compare the live weights the steps move.
    let cfg = LearnerConfig {
        ema_decay: None,
        ..s.cfg.learner.clone()
    };
    let mut rust = Learner::new(s.policy.clone(), cfg.clone(), 1);
    let mut torch = TorchLearner::new(s.policy.clone(), cfg, Device::Cpu).unwrap();
    for step in 0..3 {
        let idx: Vec<usize> = (step * 32..step * 32 + 32).collect();
        let b = batch(&s.policy, &rows, &s.feats, &idx);
        let r = rust.step(&b);
        let t = torch.step(&b).unwrap();
        println!(
            "step {step}: loss {} vs {}, grad norm {} vs {}",
            r.loss, t.loss, r.grad_norm, t.grad_norm
        );
        assert!(
            (r.loss - t.loss).abs() < 1e-5 * (1.0 + r.loss.abs()),
            "loss {} vs {}",
            r.loss,
            t.loss
        );
        assert!(
            (r.grad_norm - t.grad_norm).abs() < 1e-4 * (1.0 + r.grad_norm),
            "grad norm {} vs {}",
            r.grad_norm,
            t.grad_norm
        );
        let (d, name) = max_abs_diff(&rust.snapshot(1).net, &torch.network().unwrap());
        println!("step {step}: largest weight difference {d:e} (in {name})");
        assert!(d < 1e-5, "after step {step}, {name} differs by {d}");
        let losses = (rust.head_losses(&b), torch.head_losses(&b).unwrap());
        for k in 0..HEADS {
            assert!((losses.0[k] - losses.1[k]).abs() < 1e-5, "head losses {losses:?}");
        }
    }
}

/// `offline::train_with` runs end to end on the torch backend (the path of
/// `qroute train --backend torch`), and its checkpoint loads.
#[test]
fn offline_job_trains_on_torch() {
    let ds = slice(200);
    let cfg = OfflineConfig {
        epochs: 2,
        ..OfflineConfig::default()
    };
    let out = offline::train_with(&ds, "train", &cfg, Backend::Torch, false).unwrap();
    assert_eq!(out.history.len(), 2);
    assert!(out
        .history
        .iter()
        .all(|e| e.train_loss.is_finite() && e.val_loss.is_finite()));
    assert!(out.policy.operating_points.len() == cfg.points);
    let dir = tempfile::tempdir().unwrap();
    checkpoint::save(&out.policy, dir.path(), serde_json::Value::Null).unwrap();
    let loaded = checkpoint::load(dir.path()).unwrap();
    assert_eq!(loaded.net, out.policy.net);
}

/// Training time of both backends on the same data and steps, at the
/// shipped size and 4× wider (`QROUTE_TIMING_ROWS` rows, default all;
/// `QROUTE_TIMING_EPOCHS` epochs, default 1). A measurement, not a check:
/// `cargo test --release -p qroute-learn --features tch --test torch -- --ignored --nocapture`.
#[test]
#[ignore]
fn timing_of_both_backends() {
    let env = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let mut ds = slice(usize::MAX);
    ds.rows.truncate(env("QROUTE_TIMING_ROWS", usize::MAX));
    let epochs = env("QROUTE_TIMING_EPOCHS", 1);
    println!(
        "{} rows, {epochs} epoch(s), libtorch on {:?}",
        ds.rows.len(),
        qroute_learn::torch::default_device()
    );
    for (h1, h2) in [(64, 32), (256, 128)] {
        for backend in [Backend::Rust, Backend::Torch] {
            let cfg = OfflineConfig {
                epochs,
                patience: epochs,
                hidden1: h1,
                hidden2: h2,
                ..OfflineConfig::default()
            };
            let started = std::time::Instant::now();
            let out = offline::train_with(&ds, "train", &cfg, backend, false).unwrap();
            let last = out.history.last().unwrap();
            println!(
                "{h1}/{h2} {backend}: {:.1} s, train loss {:.4}, val loss {:.4}",
                started.elapsed().as_secs_f64(),
                last.train_loss,
                last.val_loss
            );
        }
    }
}
