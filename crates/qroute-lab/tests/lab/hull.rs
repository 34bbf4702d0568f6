//! Never below the single-model hull: a policy trained by the shipped job
//! on AlpacaEval's train split, evaluated on its test split.

use std::path::PathBuf;

use qroute_core::dataset::Dataset;
use qroute_lab::evaluate::evaluate;
use qroute_learn::offline::{self, OfflineConfig};

/// One prompt of 219 at the top of the curve moves AIQ by about 0.0046; the
/// tolerance is half that, so losing a prompt's worth to the best single
/// model fails.
const TOLERANCE: f64 = 0.0023;

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

#[test]
fn the_alpaca_policy_is_at_least_the_single_models_hull() {
    let ds = Dataset::load(repo_file("data/alpaca_eval.jsonl")).unwrap();
    let text = std::fs::read_to_string(repo_file("training/alpaca.toml")).unwrap();
    let cfg: OfflineConfig = toml::from_str(&text).unwrap();
    let trained = offline::train(&ds, "train", &cfg, false).unwrap();
    assert!(
        trained.policy.quality_prior.weight > 0.0,
        "cross-validation should shrink towards the per-model means on AlpacaEval"
    );
    let eval = evaluate(&trained.policy, &ds, "test", &trained.policy.operating_points).unwrap();
    assert!(
        eval.router.aiq >= eval.single_models.aiq - TOLERANCE,
        "policy AIQ {:.4} < single models' {:.4} − {TOLERANCE}",
        eval.router.aiq,
        eval.single_models.aiq
    );

    // Without the prior the same network is below the hull: the prior is
    // what keeps it there.
    let mut unshrunk = cfg.clone();
    unshrunk.prior_folds = 0;
    let plain = offline::train(&ds, "train", &unshrunk, false).unwrap();
    let eval = evaluate(&plain.policy, &ds, "test", &plain.policy.operating_points).unwrap();
    assert!(
        eval.router.aiq < eval.single_models.aiq - TOLERANCE,
        "{:.4}",
        eval.router.aiq
    );
}
