//! Offline training from a dataset with full information: every prompt
//! carries the outcome of every model, so each prompt is K training items.

use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::answer_head;
use super::learner::{item_for, Learner, LearnerConfig, Observation};
use super::prior::{self, PriorTrial};
use crate::grad::Batch;
use qroute_core::catalog::ModelCard;
use qroute_core::dataset::{Dataset, Row};
use qroute_core::features::{FeatureSpec, Features, Featurizer, RequestContext};
use qroute_core::policy::network::{Network, HEADS};
use qroute_core::policy::{DqnPolicy, Policy, Prediction, QualityPrior, Scales};
use qroute_core::{Error, Result};

/// Settings of an offline job (`training/*.toml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OfflineConfig {
    pub epochs: usize,
    /// Prompts per step; each contributes one item per model.
    pub batch_prompts: usize,
    pub seed: u64,
    /// Share of the split held out (by id hash) to pick the best epoch.
    pub val_fraction: f32,
    /// Stop after this many epochs without a better validation loss.
    pub patience: usize,
    /// Operating points calibrated into the checkpoint (≥ 21).
    pub points: usize,
    pub hidden1: usize,
    pub hidden2: usize,
    /// Share of a prompt's hashed n-grams dropped at random from each
    /// training presentation (scaled up to compensate): stops the sparse
    /// layer from memorising rare n-grams of individual prompts.
    pub input_dropout: f32,
    /// Folds of the cross-validation that chooses the quality prior's
    /// weight (see `QualityPrior`); below 2, no prior.
    pub prior_folds: usize,
    pub features: FeatureSpec,
    pub learner: LearnerConfig,
}

impl Default for OfflineConfig {
    fn default() -> Self {
        OfflineConfig {
            epochs: 40,
            batch_prompts: 32,
            seed: 1,
            val_fraction: 0.1,
            patience: 6,
            points: 41,
            hidden1: 64,
            hidden2: 32,
            input_dropout: 0.5,
            prior_folds: 5,
            features: FeatureSpec::default(),
            learner: LearnerConfig {
                lr: 1e-3,
                weight_decay: 0.1,
                ema_decay: Some(0.995),
                ..LearnerConfig::default()
            },
        }
    }
}

/// Which library does an offline job's arithmetic. Both run the same
/// network, loss and optimiser and produce the same checkpoint format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Plain Rust: no native dependency, and the fastest at the shipped size.
    #[default]
    Rust,
    /// libtorch, on CUDA when present, else the CPU: for much wider
    /// networks and GPUs. Needs the `tch` cargo feature.
    Torch,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Rust => "rust",
            Backend::Torch => "torch",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Backend> {
        match s {
            "rust" => Ok(Backend::Rust),
            "torch" => Ok(Backend::Torch),
            other => Err(Error::InvalidInput(format!(
                "backend `{other}`: expected `rust` or `torch`"
            ))),
        }
    }
}

/// What the epoch loop needs of a learner, so one loop (same shuffles, same
/// dropout, same early stopping) drives either backend.
trait OfflineLearner {
    fn policy(&self) -> &DqnPolicy;
    fn train_step(&mut self, batch: &Batch<'_>) -> Result<f32>;
    fn val_losses(&self, batch: &Batch<'_>) -> Result<[f32; HEADS]>;
    fn snapshot_policy(&self, version: u64) -> Result<DqnPolicy>;
}

impl OfflineLearner for Learner {
    fn policy(&self) -> &DqnPolicy {
        Learner::policy(self)
    }
    fn train_step(&mut self, batch: &Batch<'_>) -> Result<f32> {
        Ok(self.step(batch).loss)
    }
    fn val_losses(&self, batch: &Batch<'_>) -> Result<[f32; HEADS]> {
        Ok(self.head_losses(batch))
    }
    fn snapshot_policy(&self, version: u64) -> Result<DqnPolicy> {
        Ok(self.snapshot(version))
    }
}

#[cfg(feature = "tch")]
impl OfflineLearner for crate::torch::TorchLearner {
    fn policy(&self) -> &DqnPolicy {
        crate::torch::TorchLearner::policy(self)
    }
    fn train_step(&mut self, batch: &Batch<'_>) -> Result<f32> {
        Ok(self.step(batch)?.loss)
    }
    fn val_losses(&self, batch: &Batch<'_>) -> Result<[f32; HEADS]> {
        self.head_losses(batch)
    }
    fn snapshot_policy(&self, version: u64) -> Result<DqnPolicy> {
        self.snapshot(version)
    }
}

/// Loss per epoch.
#[derive(Debug, Clone, Serialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub train_loss: f32,
    /// Validation loss summed over the heads: the early-stopping criterion.
    pub val_loss: f32,
    /// Validation loss per head: quality, ln cost, ln latency.
    pub val_heads: [f32; 3],
}

pub struct TrainOutcome {
    pub policy: DqnPolicy,
    pub history: Vec<EpochStats>,
    pub best_epoch: usize,
    /// The quality prior's cross-validation, one trial per weight tried
    /// (empty when `prior_folds < 2`).
    pub prior_cv: Vec<PriorTrial>,
}

/// The request a dataset row stands for.
pub fn row_request(row: &Row) -> RequestContext<'_> {
    RequestContext {
        prompt: &row.prompt,
        task_type: Some(&row.task),
        persona: None,
        metadata: &[],
    }
}

/// Features of many rows, in parallel, in row order.
pub fn featurize_rows(fz: &Featurizer, rows: &[&Row]) -> Vec<Features> {
    rows.par_iter().map(|r| fz.featurize(&row_request(r))).collect()
}

/// A copy of `x` with each hashed entry dropped with probability `p` and
/// the survivors scaled by `1/(1−p)`; dense slots are kept as they are.
fn drop_ngrams(x: &Features, p: f32, rng: &mut impl rand::Rng) -> Features {
    if p <= 0.0 {
        return x.clone();
    }
    let dense_from = x.dim - qroute_core::features::DENSE_SLOTS;
    let keep = 1.0 / (1.0 - p);
    let mut out = Features {
        dim: x.dim,
        indices: Vec::with_capacity(x.nnz()),
        values: Vec::with_capacity(x.nnz()),
    };
    for (&i, &v) in x.indices.iter().zip(&x.values) {
        if i >= dense_from {
            out.indices.push(i);
            out.values.push(v);
        } else if rng.gen::<f32>() >= p {
            out.indices.push(i);
            out.values.push(v * keep);
        }
    }
    out
}

/// An untrained policy for `cfg`: random weights, and a catalog whose price
/// lines are fitted to the rows' costs (prices are public; no quality is
/// looked at).
pub fn initial_policy(ds: &Dataset, rows: &[&Row], cfg: &OfflineConfig, rng: &mut impl rand::Rng) -> Result<DqnPolicy> {
    let catalog = ds.fit_catalog(rows);
    let scales = Scales {
        cost_usd: catalog.cost_scale(),
        latency_ms: catalog.latency_scale(),
    };
    let mut arch = DqnPolicy::arch_for(&cfg.features);
    arch.hidden1 = cfg.hidden1;
    arch.hidden2 = cfg.hidden2;
    let net = Network::new(arch, rng);
    DqnPolicy::new(1, net, catalog, cfg.features.clone(), scales, Vec::new())
}

/// Deterministic hold-out membership by id.
fn is_validation(id: &str, fraction: f32) -> bool {
    let h = qroute_core::features::hash_id(id);
    (h % 10_000) as f32 / 10_000.0 < fraction
}

/// Fills `batch` with rows `idx` (with their `feats`) under full
/// information: one item per (prompt, model), every outcome observed.
pub fn items_for<'a>(policy: &DqnPolicy, rows: &[&Row], feats: &'a [Features], idx: &[usize], batch: &mut Batch<'a>) {
    batch.contexts.clear();
    batch.items.clear();
    let cards = &policy.catalog.models;
    for (c, &i) in idx.iter().enumerate() {
        batch.contexts.push(&feats[i]);
        for (m, card) in cards.iter().enumerate() {
            let o = &rows[i].outcomes[m];
            let obs = Observation {
                quality: Some(o.quality),
                cost_usd: o.cost_usd,
                latency_ms: o.latency_ms,
            };
            batch.items.push(item_for(policy, c, &feats[i], card, &obs, 1.0));
        }
    }
}

/// Trains a fresh policy on `split` of `ds` in plain Rust.
pub fn train(ds: &Dataset, split: &str, cfg: &OfflineConfig, progress: bool) -> Result<TrainOutcome> {
    train_with(ds, split, cfg, Backend::Rust, progress)
}

/// Rows of one side of the hold-out split with their features.
#[derive(Default)]
struct Part<'a> {
    rows: Vec<&'a Row>,
    feats: Vec<Features>,
}

/// Trains a fresh policy on `split` of `ds` with `backend`: the network,
/// then (with `prior_folds ≥ 2`) the quality prior's weight by
/// cross-validation on the same split, then the operating points. The data,
/// the initial weights and the order of batches do not depend on the
/// backend.
pub fn train_with(
    ds: &Dataset,
    split: &str,
    cfg: &OfflineConfig,
    backend: Backend,
    progress: bool,
) -> Result<TrainOutcome> {
    let rows = ds.split(split);
    if rows.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{}: no rows in split `{split}`",
            ds.path.display()
        )));
    }
    if cfg.points < 21 {
        return Err(Error::InvalidInput(format!(
            "points = {} (need at least 21)",
            cfg.points
        )));
    }
    let fz = Featurizer::new(cfg.features.clone())?;
    let feats = featurize_rows(&fz, &rows);
    let fitted = fit(ds, &rows, &feats, cfg, backend, progress)?;
    let has_answers = rows.iter().any(|r| r.responses.iter().any(Option::is_some));
    let (mut policy, prior_cv, prompt_quality) = if cfg.prior_folds >= 2 {
        if progress {
            eprintln!(
                "choosing the quality prior's weight by {}-fold cross-validation",
                cfg.prior_folds
            );
        }
        let fit_fold = |rows: &[&Row], feats: &[Features]| Ok(fit(ds, rows, feats, cfg, backend, false)?.policy);
        let cv = prior::choose(&rows, &feats, ds.models.len(), cfg.prior_folds, fit_fold)?;
        let prior = QualityPrior {
            weight: cv.weight,
            means: ds
                .models
                .iter()
                .cloned()
                .zip(prior::mean_qualities(&rows, ds.models.len()))
                .collect(),
        };
        (fitted.policy.with_prior(prior), cv.trials, cv.held_out_quality)
    } else {
        // No held-out predictions: the head sees in-sample ones, which
        // trust the router more than they should.
        let policy = fitted.policy;
        let quality = if has_answers {
            prior::predict_quality(&policy, &feats)?
        } else {
            Vec::new()
        };
        (policy, Vec::new(), quality)
    };
    // `None` on data without recorded answers.
    policy.answer_head = answer_head::fit(&ds.models, &rows, &prompt_quality);
    let all: Vec<&Features> = feats.iter().collect();
    policy.operating_points = calibrate_points(&policy, &all, cfg.points)?;
    Ok(TrainOutcome {
        policy,
        prior_cv,
        ..fitted
    })
}

/// The network alone, trained on `rows` (with `feats`, in the same order),
/// a share of them held out by id for early stopping.
fn fit(
    ds: &Dataset,
    rows: &[&Row],
    feats: &[Features],
    cfg: &OfflineConfig,
    backend: Backend,
    progress: bool,
) -> Result<TrainOutcome> {
    let (mut train, mut val) = (Part::default(), Part::default());
    for (r, x) in rows.iter().zip(feats) {
        let part = if is_validation(&r.id, cfg.val_fraction) {
            &mut val
        } else {
            &mut train
        };
        part.rows.push(r);
        part.feats.push(x.clone());
    }
    if train.rows.is_empty() {
        train = Part {
            rows: val.rows.clone(),
            feats: val.feats.clone(),
        };
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let policy = initial_policy(ds, &train.rows, cfg, &mut rng)?;
    let (history, best_epoch, policy) = match backend {
        Backend::Rust => {
            let learner = Learner::new(policy, cfg.learner.clone(), cfg.seed);
            run_epochs(learner, &mut rng, cfg, &train, &val, progress)?
        }
        #[cfg(feature = "tch")]
        Backend::Torch => {
            let device = crate::torch::default_device();
            tracing::info!(?device, "training in libtorch");
            let learner = crate::torch::TorchLearner::new(policy, cfg.learner.clone(), device)?;
            run_epochs(learner, &mut rng, cfg, &train, &val, progress)?
        }
        #[cfg(not(feature = "tch"))]
        Backend::Torch => {
            return Err(Error::InvalidInput(
                "backend `torch`: this build has no libtorch; rebuild with `--features tch` (see the README)".into(),
            ));
        }
    };
    Ok(TrainOutcome {
        policy,
        history,
        best_epoch,
        prior_cv: Vec::new(),
    })
}

/// The epoch loop: shuffled batches with input dropout, validation after
/// each epoch, early stopping. Returns the history, the best epoch and its
/// snapshot.
fn run_epochs<L: OfflineLearner>(
    mut learner: L,
    rng: &mut ChaCha8Rng,
    cfg: &OfflineConfig,
    train: &Part<'_>,
    val: &Part<'_>,
    progress: bool,
) -> Result<(Vec<EpochStats>, usize, DqnPolicy)> {
    let (train_rows, train_feats) = (&train.rows, &train.feats);
    let (val_rows, val_feats) = (&val.rows, &val.feats);
    let steps_per_epoch = train_rows.len().div_ceil(cfg.batch_prompts.max(1));
    let bar = if progress {
        let b = ProgressBar::new((steps_per_epoch * cfg.epochs) as u64);
        if let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} steps {msg} ({eta})") {
            b.set_style(style.progress_chars("=> "));
        }
        b.set_prefix("train");
        b
    } else {
        ProgressBar::hidden()
    };

    let mut order: Vec<usize> = (0..train_rows.len()).collect();
    let mut batch = Batch::default();
    let mut history = Vec::new();
    let mut best: Option<(f32, usize, DqnPolicy)> = None;
    for epoch in 1..=cfg.epochs {
        order.shuffle(rng);
        let mut total = 0.0;
        for chunk in order.chunks(cfg.batch_prompts.max(1)) {
            let dropped: Vec<Features> = chunk
                .iter()
                .map(|&i| drop_ngrams(&train_feats[i], cfg.input_dropout, rng))
                .collect();
            let local: Vec<usize> = (0..chunk.len()).collect();
            let rows_chunk: Vec<&Row> = chunk.iter().map(|&i| train_rows[i]).collect();
            let mut step_batch = Batch::default();
            items_for(learner.policy(), &rows_chunk, &dropped, &local, &mut step_batch);
            total += learner.train_step(&step_batch)?;
            bar.inc(1);
        }
        let train_loss = total / steps_per_epoch as f32;
        let (val_rows_used, val_feats_used) = if val_rows.is_empty() {
            (&train_rows, &train_feats)
        } else {
            (&val_rows, &val_feats)
        };
        let all: Vec<usize> = (0..val_rows_used.len()).collect();
        items_for(learner.policy(), val_rows_used, val_feats_used, &all, &mut batch);
        let val_heads = learner.val_losses(&batch)?;
        let val_loss = val_heads.iter().sum::<f32>();
        bar.set_message(format!("epoch {epoch} train {train_loss:.4} val {val_loss:.4}"));
        history.push(EpochStats {
            epoch,
            train_loss,
            val_loss,
            val_heads,
        });
        if best.as_ref().is_none_or(|b| val_loss < b.0) {
            best = Some((val_loss, epoch, learner.snapshot_policy(1)?));
        } else if epoch - best.as_ref().map_or(0, |b| b.1) >= cfg.patience {
            break;
        }
    }
    bar.finish_and_clear();
    let (_, best_epoch, policy) = best.ok_or_else(|| Error::InvalidInput("epochs: must be at least 1".into()))?;
    Ok((history, best_epoch, policy))
}

/// Cost weights at which some prompt's choice changes: the breakpoints of
/// the upper envelope of the lines `q_m − λ·c_m`.
pub fn breakpoints(preds: &[Prediction], out: &mut Vec<f32>) {
    let better = |a: &Prediction, b: &Prediction| a.quality > b.quality || (a.quality == b.quality && a.cost < b.cost);
    let mut cur = 0;
    for (i, p) in preds.iter().enumerate() {
        if better(p, &preds[cur]) {
            cur = i;
        }
    }
    let mut lambda = 0f32;
    loop {
        let c = preds[cur];
        let mut next: Option<(f32, usize)> = None;
        for (i, p) in preds.iter().enumerate() {
            if p.cost < c.cost {
                let l = ((c.quality - p.quality) / (c.cost - p.cost)).max(lambda);
                if next.is_none_or(|(nl, ni)| l < nl || (l == nl && p.cost < preds[ni].cost)) {
                    next = Some((l, i));
                }
            }
        }
        match next {
            Some((l, i)) => {
                out.push(l);
                lambda = l;
                cur = i;
            }
            None => break,
        }
    }
}

/// An operating-point grid of `n` cost weights, cheapest first: a λ past
/// every breakpoint, then quantiles of the breakpoints of the given
/// prompts' predictions, then λ = 0 (best quality). Only predictions are
/// used, never outcomes, so calibrating on any prompts is fair.
pub fn calibrate_points(policy: &DqnPolicy, feats: &[&Features], n: usize) -> Result<Vec<f32>> {
    let cards: Vec<&ModelCard> = policy.catalog.models.iter().collect();
    let mut bps: Vec<f32> = feats
        .par_iter()
        .map(|x| {
            let mut preds = Vec::new();
            let mut out = Vec::new();
            if policy.predict(x, &cards, &mut preds).is_ok() {
                breakpoints(&preds, &mut out);
            }
            out
        })
        .flatten()
        .filter(|l| l.is_finite() && *l > 0.0)
        .collect();
    bps.sort_by(f32::total_cmp);
    let interior = n.saturating_sub(2).max(1);
    let mut grid = Vec::with_capacity(n);
    let top = bps.last().copied().unwrap_or(1.0);
    grid.push(top * 2.0 + 1.0);
    for i in (0..interior).rev() {
        let q = if bps.is_empty() {
            top * (i as f32 + 0.5) / interior as f32
        } else {
            bps[((i as f32 + 0.5) / interior as f32 * bps.len() as f32) as usize]
        };
        grid.push(q);
    }
    grid.push(0.0);
    Ok(grid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred(q: f32, c: f32) -> Prediction {
        Prediction {
            quality: q,
            cost: c,
            latency: 0.0,
        }
    }

    #[test]
    fn breakpoints_follow_the_upper_envelope() {
        // Lines: A = 0.9 − λ·1.0, B = 0.7 − λ·0.2, C = 0.3 − λ·0.0, D dominated.
        let preds = [pred(0.9, 1.0), pred(0.7, 0.2), pred(0.3, 0.0), pred(0.5, 0.9)];
        let mut out = Vec::new();
        breakpoints(&preds, &mut out);
        // A→B at (0.9−0.7)/(1.0−0.2) = 0.25; B→C at (0.7−0.3)/0.2 = 2.0.
        assert_eq!(out.len(), 2);
        assert!((out[0] - 0.25).abs() < 1e-6 && (out[1] - 2.0).abs() < 1e-6, "{out:?}");
    }
}
