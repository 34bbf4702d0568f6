//! Offline policy evaluation: the value of a candidate (target) policy
//! estimated from logged decisions, without running it.
//!
//! Each logged decision gives one sample `(x, candidates, a, p, r)`: the
//! context, the candidate set, the first model drawn (`chosen[0]`), the
//! logging policy's probability of drawing it and the reward of its outcome
//! at the decision's cost weight (latency is not priced: `μ = 0`). Later
//! draws of a variation (`chosen[1..]`) are not used: their propensities are
//! conditional on the earlier draws.
//!
//! With importance weight `w = π(a|x) / p`, three estimators:
//!
//! - IPS: `mean(w·r)`, unbiased when every action the target takes had a
//!   positive logging probability;
//! - SNIPS: `Σ w·r / Σ w`, self-normalised: slightly biased, far less
//!   variable when weights are large;
//! - doubly robust: `mean(Σ_a π(a|x)·q̂(x,a) + w·(r − q̂(x,a)))` with `q̂` a
//!   per-model ridge regression of reward on a random projection of the
//!   features (and the cost weight), cross-fitted on two folds: the `q̂` used
//!   for a sample never saw it.
//!
//! Each comes with a normal-approximation 95% interval. The report also
//! carries the effective sample size `(Σw)² / Σw²` and warnings when the
//! logging policy's propensities overlap poorly with the target.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::bandits::{Projection, Ridge};
use qroute_core::catalog::ModelCard;
use qroute_core::error::{Error, Result};
use qroute_core::features::Features;
use qroute_core::policy::explore::argmax;
use qroute_core::policy::{DqnPolicy, OperatingPoint, Scales};
use qroute_core::record::Experience;
use qroute_core::reward::reward;
use qroute_core::store::ExperienceStore;
use qroute_store::SledStore;

/// Dimensions of the random projection the DR reward model regresses on.
const PROJECTION_DIM: usize = 64;
/// Ridge penalty of the DR reward model.
const RIDGE_LAMBDA: f64 = 1.0;
/// 95% two-sided normal quantile.
const Z95: f64 = 1.96;
/// Warn when the effective sample size is under this fraction of n.
const ESS_WARN_FRACTION: f64 = 0.1;
/// Warn when an importance weight exceeds this.
const MAX_WEIGHT_WARN: f64 = 100.0;
/// Warn when a logged propensity is under this.
const MIN_PROPENSITY_WARN: f64 = 1e-3;

/// Reads an experience log: a directory is opened as a [`SledStore`] and
/// read whole; a file is read as JSONL, one serde-JSON [`Experience`] per
/// line (blank lines skipped), as written by [`export_jsonl`].
pub fn read_logs(path: &Path) -> Result<Vec<Experience>> {
    if path.is_dir() {
        let store = SledStore::open_existing(path)?;
        return store.iter_from(0).collect();
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    read_jsonl(BufReader::new(file), path)
}

/// Reads JSONL experiences from `reader`; `path` names it in errors.
pub fn read_jsonl(reader: impl BufRead, path: &Path) -> Result<Vec<Experience>> {
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line_no = i + 1;
        let line = line.map_err(|e| Error::io(format!("reading {}:{line_no}", path.display()), e))?;
        if line.trim().is_empty() {
            continue;
        }
        let de = &mut serde_json::Deserializer::from_str(&line);
        let exp: Experience = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            Error::Dataset {
                path: path.to_path_buf(),
                line: line_no,
                field: if field == "." { "experience".into() } else { field },
                message: e.into_inner().to_string(),
            }
        })?;
        out.push(exp);
    }
    Ok(out)
}

/// A policy to evaluate: its distribution over a logged candidate set.
pub trait TargetPolicy {
    fn name(&self) -> String;
    /// `π(·|x)` over `candidates` (same length, summing to 1) at cost weight
    /// `cost_weight`.
    fn distribution(&self, x: &Features, candidates: &[String], cost_weight: f32) -> Vec<f32>;
    /// Whether the policy can take context `x` at all (checked once per
    /// sample before [`TargetPolicy::distribution`]); `Ok` by default.
    fn check(&self, _x: &Features) -> Result<()> {
        Ok(())
    }
}

fn uniform(k: usize) -> Vec<f32> {
    vec![1.0 / k.max(1) as f32; k]
}

fn one_hot(k: usize, i: usize) -> Vec<f32> {
    let mut d = vec![0.0; k];
    d[i] = 1.0;
    d
}

/// The DQN with exploration off: all mass on the candidate with the best
/// score at the decision's cost weight (latency weight 0). Candidates missing
/// from the policy's catalog score −∞; if none is in the catalog, uniform.
/// The logged features must come from the policy's feature spec.
#[derive(Debug, Clone)]
pub struct Greedy(pub DqnPolicy);

impl TargetPolicy for Greedy {
    fn name(&self) -> String {
        format!("dqn-greedy (version {})", self.0.version)
    }

    fn distribution(&self, x: &Features, candidates: &[String], cost_weight: f32) -> Vec<f32> {
        let present: Vec<(usize, &ModelCard)> = candidates
            .iter()
            .enumerate()
            .filter_map(|(i, id)| self.0.catalog.get(id).map(|c| (i, c)))
            .collect();
        if present.is_empty() {
            return uniform(candidates.len());
        }
        let cards: Vec<&ModelCard> = present.iter().map(|&(_, c)| c).collect();
        let point = OperatingPoint {
            cost_weight,
            latency_weight: 0.0,
        };
        // `check` rejected contexts the network cannot take.
        let Ok(s) = self.0.scores(x, &cards, point) else {
            return uniform(candidates.len());
        };
        let mut scores = vec![f32::NEG_INFINITY; candidates.len()];
        for (&(i, _), v) in present.iter().zip(s) {
            scores[i] = if v.is_nan() { f32::NEG_INFINITY } else { v };
        }
        // argmax keeps the first on ties, so an all −∞ row picks a present one.
        let best = if scores.iter().all(|v| *v == f32::NEG_INFINITY) {
            present[0].0
        } else {
            argmax(&scores)
        };
        one_hot(candidates.len(), best)
    }

    fn check(&self, x: &Features) -> Result<()> {
        let want = self.0.net.arch.ctx_dim;
        if x.dim as usize != want || x.indices.last().is_some_and(|&i| i >= x.dim) {
            return Err(Error::InvalidInput(format!(
                "logged features of dimension {} cannot be scored by a policy that takes {want}",
                x.dim
            )));
        }
        Ok(())
    }
}

/// Always the named model. Where a decision's candidates do not include it,
/// the target is taken to be uniform over that decision's candidates (the
/// model could not have been routed to there).
#[derive(Debug, Clone)]
pub struct FixedModel(pub String);

impl TargetPolicy for FixedModel {
    fn name(&self) -> String {
        format!("always {}", self.0)
    }

    fn distribution(&self, _: &Features, candidates: &[String], _: f32) -> Vec<f32> {
        match candidates.iter().position(|c| *c == self.0) {
            Some(i) => one_hot(candidates.len(), i),
            None => uniform(candidates.len()),
        }
    }
}

/// Uniform over the candidates.
#[derive(Debug, Clone, Copy)]
pub struct Uniform;

impl TargetPolicy for Uniform {
    fn name(&self) -> String {
        "uniform".into()
    }

    fn distribution(&self, _: &Features, candidates: &[String], _: f32) -> Vec<f32> {
        uniform(candidates.len())
    }
}

/// A point estimate with its 95% confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub value: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

impl Estimate {
    fn normal(value: f64, se: f64) -> Estimate {
        Estimate {
            value,
            ci_low: value - Z95 * se,
            ci_high: value + Z95 * se,
        }
    }

    /// Whether `v` lies in the interval.
    pub fn covers(&self, v: f64) -> bool {
        self.ci_low <= v && v <= self.ci_high
    }
}

/// What [`evaluate`] found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpeReport {
    /// The target policy's name.
    pub policy: String,
    /// Samples used.
    pub n: usize,
    /// Decisions whose first model's outcome has neither a quality nor an error.
    pub skipped_unlabelled: usize,
    /// Decisions without a usable propensity for their first model.
    pub skipped_no_propensity: usize,
    /// Decisions with no outcome recorded for their first model.
    pub skipped_no_outcome: usize,
    /// Effective sample size `(Σw)² / Σw²`.
    pub ess: f64,
    pub max_weight: f64,
    pub warnings: Vec<String>,
    pub ips: Estimate,
    pub snips: Estimate,
    pub dr: Estimate,
}

/// One usable logged decision.
struct Sample<'a> {
    x: &'a Features,
    candidates: &'a [String],
    propensities: &'a [f32],
    action: usize,
    p: f64,
    r: f64,
    cost_weight: f32,
}

/// The propensity of `chosen[0]`, if the decision carries a usable one.
fn logged_propensity(exp: &Experience) -> Option<(usize, f64)> {
    let d = &exp.decision;
    if d.propensities.is_empty() || d.propensities.len() != d.candidates.len() {
        return None;
    }
    let first = d.chosen.first()?;
    let a = d.candidates.iter().position(|c| c == first)?;
    let p = d.propensities[a] as f64;
    (p > 0.0 && p <= 1.0).then_some((a, p))
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Sample standard deviation (0 for fewer than two values).
fn sd(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// The DR reward model's input: the projected features plus the cost weight.
fn model_input(projection: &Projection, x: &Features, cost_weight: f32) -> Vec<f64> {
    let mut z = projection.apply(x);
    z.push(cost_weight as f64);
    z
}

/// The target's true value on logs made from a routing dataset with full
/// information (`qroute simulate --log-dir`, whose request ids are
/// `{row id}/{round}`): for every logged decision [`evaluate`] would use, the
/// expected reward of the target's distribution over the candidates,
/// replayed from the dataset's table. Returns the value and the number of
/// decisions it covers; the estimators' errors are measured against it.
/// How often a shadow policy's logged pick matched the model the serving
/// policy chose: the apprentice-style agreement rate, from the logs, per
/// shadow name and version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShadowAgreement {
    pub name: String,
    pub version: u64,
    pub decisions: usize,
    pub agreements: usize,
    pub rate: f64,
}

/// [`ShadowAgreement`] of every shadow that left picks in `logs`.
pub fn shadow_agreement(logs: &[Experience]) -> Vec<ShadowAgreement> {
    let mut by: std::collections::BTreeMap<(String, u64), (usize, usize)> = Default::default();
    for exp in logs {
        let d = &exp.decision;
        if let (Some(s), Some(chosen)) = (&d.shadow, d.chosen.first()) {
            let e = by.entry((s.name.clone(), s.version)).or_default();
            e.0 += 1;
            e.1 += (s.model == *chosen) as usize;
        }
    }
    by.into_iter()
        .map(|((name, version), (decisions, agreements))| ShadowAgreement {
            name,
            version,
            decisions,
            agreements,
            rate: agreements as f64 / decisions as f64,
        })
        .collect()
}

pub fn replay_value(
    logs: &[Experience],
    target: &dyn TargetPolicy,
    scales: &Scales,
    ds: &qroute_core::dataset::Dataset,
) -> Result<(f64, usize)> {
    let rows: std::collections::HashMap<&str, &qroute_core::dataset::Row> =
        ds.rows.iter().map(|r| (r.id.as_str(), r)).collect();
    let (mut total, mut n) = (0f64, 0usize);
    for exp in logs {
        let Some((action, _)) = logged_propensity(exp) else {
            continue;
        };
        let d = &exp.decision;
        let labelled = exp
            .outcomes
            .iter()
            .find(|o| o.model == d.candidates[action])
            .is_some_and(|o| o.error.is_some() || o.quality.is_some());
        if !labelled {
            continue;
        }
        let id = d
            .request_id
            .rsplit_once('/')
            .map_or(d.request_id.as_str(), |(row, _)| row);
        let row = rows.get(id).ok_or_else(|| {
            Error::InvalidInput(format!(
                "decision {:?}: no row {id:?} in {} to replay",
                d.request_id,
                ds.path.display()
            ))
        })?;
        let point = OperatingPoint {
            cost_weight: d.cost_weight,
            latency_weight: 0.0,
        };
        let pi = target.distribution(&d.features, &d.candidates, d.cost_weight);
        for (m, p) in d.candidates.iter().zip(&pi) {
            let k = ds.model_index(m).ok_or_else(|| {
                Error::InvalidInput(format!("candidate {m:?} is not a model of {}", ds.path.display()))
            })?;
            let o = &row.outcomes[k];
            total += *p as f64 * reward(o.quality, o.cost_usd, None, point, scales) as f64;
        }
        n += 1;
    }
    if n == 0 {
        return Err(Error::InvalidInput("no logged decision to replay".into()));
    }
    Ok((total / n as f64, n))
}

/// Estimates the value of `target` from `logs` with IPS, SNIPS and doubly
/// robust (see the module docs). Rewards are priced with `scales` (the
/// target policy's). `seed` fixes the DR reward model's projection and folds.
///
/// Refuses logs in which no decision carries propensities, and logs with no
/// usable sample.
pub fn evaluate(logs: &[Experience], target: &dyn TargetPolicy, scales: &Scales, seed: u64) -> Result<OpeReport> {
    if logs.is_empty() {
        return Err(Error::InvalidInput("the logs hold no decisions".into()));
    }
    let mut samples = Vec::with_capacity(logs.len());
    let (mut unlabelled, mut no_prop, mut no_outcome) = (0, 0, 0);
    for exp in logs {
        let Some((action, p)) = logged_propensity(exp) else {
            no_prop += 1;
            continue;
        };
        let d = &exp.decision;
        let model = &d.candidates[action];
        let Some(o) = exp.outcomes.iter().find(|o| o.model == *model) else {
            no_outcome += 1;
            continue;
        };
        let quality = if o.error.is_some() {
            0.0
        } else if let Some(q) = o.quality {
            q
        } else {
            unlabelled += 1;
            continue;
        };
        let point = OperatingPoint {
            cost_weight: d.cost_weight,
            latency_weight: 0.0,
        };
        let r = reward(quality, o.cost_usd, None, point, scales) as f64;
        target.check(&d.features)?;
        samples.push(Sample {
            x: &d.features,
            candidates: &d.candidates,
            propensities: &d.propensities,
            action,
            p,
            r,
            cost_weight: d.cost_weight,
        });
    }
    if no_prop == logs.len() {
        return Err(Error::InvalidInput(format!(
            "logs without propensities cannot be evaluated off-policy: none of the {} decisions records the \
             logging policy's probability of its chosen model (field `propensities`, one per candidate)",
            logs.len()
        )));
    }
    let n = samples.len();
    if n == 0 {
        return Err(Error::InvalidInput(format!(
            "no usable samples: of {} decisions, {no_prop} lack propensities, {no_outcome} have no outcome for \
             their chosen model and {unlabelled} have no quality yet",
            logs.len()
        )));
    }

    // Target distributions and importance weights.
    let pis: Vec<Vec<f32>> = samples
        .iter()
        .map(|s| target.distribution(s.x, s.candidates, s.cost_weight))
        .collect();
    let w: Vec<f64> = samples
        .iter()
        .zip(&pis)
        .map(|(s, pi)| pi[s.action] as f64 / s.p)
        .collect();
    let r: Vec<f64> = samples.iter().map(|s| s.r).collect();
    let sum_w: f64 = w.iter().sum();
    let sum_w2: f64 = w.iter().map(|v| v * v).sum();
    let ess = if sum_w2 > 0.0 { sum_w * sum_w / sum_w2 } else { 0.0 };
    let max_weight = w.iter().copied().fold(0.0, f64::max);
    let sqrt_n = (n as f64).sqrt();

    // IPS.
    let wr: Vec<f64> = w.iter().zip(&r).map(|(w, r)| w * r).collect();
    let ips = Estimate::normal(mean(&wr), sd(&wr) / sqrt_n);

    // SNIPS with a delta-method interval.
    let mut warnings = Vec::new();
    let snips = if sum_w > 0.0 {
        let v = wr.iter().sum::<f64>() / sum_w;
        let dev: Vec<f64> = w.iter().zip(&r).map(|(w, r)| w * (r - v)).collect();
        Estimate::normal(v, sd(&dev) / (sum_w / n as f64) / sqrt_n)
    } else {
        warnings.push(
            "no overlap: the target gives probability 0 to every logged action, so SNIPS is undefined and IPS \
             is 0 by construction"
                .to_string(),
        );
        Estimate {
            value: f64::NAN,
            ci_low: f64::NAN,
            ci_high: f64::NAN,
        }
    };

    // Doubly robust, with a 2-fold cross-fitted reward model.
    let projection = Projection::new(PROJECTION_DIM, seed);
    let inputs: Vec<Vec<f64>> = samples
        .iter()
        .map(|s| model_input(&projection, s.x, s.cost_weight))
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x6f70_655f_666f_6c64));
    let mut fold = vec![0usize; n];
    for (k, &i) in order.iter().enumerate() {
        fold[i] = k % 2;
    }
    let dim = projection.dim() + 1;
    // models[k][name]: trained on the samples outside fold k.
    let mut models: [HashMap<&str, Ridge>; 2] = [HashMap::new(), HashMap::new()];
    for (i, s) in samples.iter().enumerate() {
        let other = 1 - fold[i];
        models[other]
            .entry(s.candidates[s.action].as_str())
            .or_insert_with(|| Ridge::new(dim, RIDGE_LAMBDA))
            .update(&inputs[i], s.r);
    }
    let dr_terms: Vec<f64> = samples
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let q = |a: usize| {
                models[fold[i]]
                    .get(s.candidates[a].as_str())
                    .map_or(0.0, |m| m.predict(&inputs[i]).0)
            };
            let direct: f64 = pis[i]
                .iter()
                .enumerate()
                .filter(|(_, &p)| p > 0.0)
                .map(|(a, &p)| p as f64 * q(a))
                .sum();
            direct + w[i] * (s.r - q(s.action))
        })
        .collect();
    let dr = Estimate::normal(mean(&dr_terms), sd(&dr_terms) / sqrt_n);

    // Overlap diagnostics.
    if ess < ESS_WARN_FRACTION * n as f64 {
        warnings.push(format!(
            "poor overlap: effective sample size {ess:.1} is under {:.0}% of the {n} samples; the estimates rest \
             on few decisions",
            ESS_WARN_FRACTION * 100.0
        ));
    }
    if max_weight > MAX_WEIGHT_WARN {
        warnings.push(format!(
            "poor overlap: the largest importance weight is {max_weight:.1} (over {MAX_WEIGHT_WARN}); IPS and DR \
             are dominated by a few samples"
        ));
    }
    let tiny: Vec<f64> = samples
        .iter()
        .map(|s| s.p)
        .filter(|&p| p < MIN_PROPENSITY_WARN)
        .collect();
    if !tiny.is_empty() {
        let min = tiny.iter().copied().fold(f64::INFINITY, f64::min);
        warnings.push(format!(
            "poor overlap: {} logged propensities are under {MIN_PROPENSITY_WARN} (smallest {min:.2e})",
            tiny.len()
        ));
    }
    let unsupported = samples
        .iter()
        .zip(&pis)
        .filter(|(s, pi)| pi.iter().zip(s.propensities).any(|(&t, &l)| t > 0.0 && l <= 0.0))
        .count();
    if unsupported > 0 {
        warnings.push(format!(
            "no support: in {unsupported} decisions the target gives probability to a model the logging policy \
             could not choose; every estimate is biased there"
        ));
    }

    Ok(OpeReport {
        policy: target.name(),
        n,
        skipped_unlabelled: unlabelled,
        skipped_no_propensity: no_prop,
        skipped_no_outcome: no_outcome,
        ess,
        max_weight,
        warnings,
        ips,
        snips,
        dr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use qroute_core::record::{DecisionRecord, Outcome};

    #[test]
    fn shadow_agreement_counts_matching_picks() {
        let pick = |model: &str, version| {
            Some(qroute_core::record::ShadowPick {
                name: "cand".into(),
                version,
                model: model.into(),
            })
        };
        let mut logs = vec![exp(vec![0.5, 0.5], "a", Some(1.0), false); 4];
        logs[0].decision.shadow = pick("a", 1);
        logs[1].decision.shadow = pick("b", 1);
        logs[2].decision.shadow = pick("a", 1);
        logs[3].decision.shadow = pick("a", 2);
        let a = shadow_agreement(&logs);
        assert_eq!(a.len(), 2);
        assert_eq!((a[0].version, a[0].decisions, a[0].agreements), (1, 3, 2));
        assert!((a[0].rate - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!((a[1].version, a[1].decisions, a[1].agreements), (2, 1, 1));
        assert!(shadow_agreement(&logs[..0]).is_empty());
    }

    fn exp(propensities: Vec<f32>, chosen: &str, quality: Option<f32>, error: bool) -> Experience {
        let candidates = vec!["a".to_string(), "b".to_string()];
        Experience {
            decision: DecisionRecord {
                request_id: "r".into(),
                time_ms: 0,
                features: Features {
                    dim: 16,
                    indices: vec![1, 5],
                    values: vec![1.0, 1.0],
                },
                candidates,
                propensities,
                chosen: vec![chosen.into()],
                policy_version: 0,
                cost_weight: 1.0,
                latency_weight: 0.0,
                task: None,
                experiment: None,
                shadow: None,
            },
            outcomes: vec![Outcome {
                request_id: "r".into(),
                model: chosen.into(),
                quality,
                cost_usd: 0.5,
                latency_ms: 10.0,
                error: error.then(|| "boom".into()),
                time_ms: 0,
                ttft_ms: None,
            }],
            feedback: None,
        }
    }

    const SCALES: Scales = Scales {
        cost_usd: 1.0,
        latency_ms: 1000.0,
    };

    #[test]
    fn propensity_checks() {
        assert_eq!(
            logged_propensity(&exp(vec![0.25, 0.75], "b", None, false)),
            Some((1, 0.75))
        );
        assert_eq!(logged_propensity(&exp(vec![], "a", None, false)), None);
        assert_eq!(logged_propensity(&exp(vec![1.0], "a", None, false)), None);
        assert_eq!(logged_propensity(&exp(vec![0.0, 1.0], "a", None, false)), None);
        assert_eq!(logged_propensity(&exp(vec![0.5, 0.5], "z", None, false)), None);
        assert_eq!(logged_propensity(&exp(vec![f32::NAN, 0.5], "a", None, false)), None);
    }

    #[test]
    fn rewards_errors_and_skips() {
        let logs = vec![
            exp(vec![0.5, 0.5], "a", Some(1.0), false), // r = 1 − 0.5 = 0.5
            exp(vec![0.5, 0.5], "a", Some(1.0), true),  // error: r = 0 − 0.5
            exp(vec![0.5, 0.5], "a", None, false),      // unlabelled
            exp(vec![], "a", Some(1.0), false),         // no propensity
        ];
        let mut no_outcome = exp(vec![0.5, 0.5], "a", Some(1.0), false);
        no_outcome.outcomes.clear();
        let logs = [logs, vec![no_outcome]].concat();
        let r = evaluate(&logs, &FixedModel("a".into()), &SCALES, 0).unwrap();
        assert_eq!(
            (r.n, r.skipped_unlabelled, r.skipped_no_propensity, r.skipped_no_outcome),
            (2, 1, 1, 1)
        );
        // w = 2 for both: IPS = mean(2·0.5, 2·−0.5) = 0; SNIPS = 0.
        assert!(r.ips.value.abs() < 1e-6 && r.snips.value.abs() < 1e-6);
        assert!((r.ess - 2.0).abs() < 1e-9 && (r.max_weight - 2.0).abs() < 1e-9);
        // A target that never takes a logged action: IPS 0, SNIPS undefined, warned.
        let r = evaluate(&logs, &FixedModel("b".into()), &SCALES, 0).unwrap();
        assert_eq!(r.ips.value, 0.0);
        assert!(r.snips.value.is_nan());
        assert!(r.warnings.iter().any(|w| w.contains("no overlap")));
    }

    #[test]
    fn refusals() {
        let e = evaluate(&[], &Uniform, &SCALES, 0).unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)));
        let e = evaluate(&[exp(vec![], "a", Some(1.0), false)], &Uniform, &SCALES, 0).unwrap_err();
        assert!(e.to_string().contains("logs without propensities"), "{e}");
        let e = evaluate(&[exp(vec![0.5, 0.5], "a", None, false)], &Uniform, &SCALES, 0).unwrap_err();
        assert!(e.to_string().contains("no usable samples"), "{e}");
    }

    #[test]
    fn fixed_and_uniform_targets() {
        let x = Features {
            dim: 4,
            indices: vec![],
            values: vec![],
        };
        let c: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(FixedModel("b".into()).distribution(&x, &c, 0.0), vec![0.0, 1.0, 0.0]);
        assert_eq!(FixedModel("z".into()).distribution(&x, &c, 0.0), vec![1.0 / 3.0; 3]);
        assert_eq!(Uniform.distribution(&x, &c, 0.0), vec![1.0 / 3.0; 3]);
    }

    #[test]
    fn greedy_is_one_hot_over_catalog_models() {
        let policy = qroute_core::policy::checkpoint::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../policies/default"
        )))
        .unwrap();
        let ids = policy.catalog.ids();
        let g = Greedy(policy);
        let x = Features {
            dim: 8192,
            indices: vec![3, 77],
            values: vec![1.0, 0.5],
        };
        let c = vec!["unknown".to_string(), ids[0].clone(), ids[1].clone()];
        for lambda in [0.0, 1.0, 10.0] {
            let d = g.distribution(&x, &c, lambda);
            assert_eq!(d.iter().sum::<f32>(), 1.0);
            assert_eq!(d[0], 0.0);
            assert!(d.iter().all(|&p| p == 0.0 || p == 1.0));
        }
        // Only an unknown model: uniform.
        assert_eq!(g.distribution(&x, &c[..1], 0.0), vec![1.0]);
        let small = Features {
            dim: 16,
            indices: vec![],
            values: vec![],
        };
        assert!(g.check(&small).is_err() && g.check(&x).is_ok());
    }

    #[test]
    fn read_logs_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl");
        let good = serde_json::to_string(&exp(vec![0.5, 0.5], "a", Some(1.0), false)).unwrap();
        std::fs::write(&path, format!("{good}\n\n{good}\nnot json\n")).unwrap();
        let e = read_logs(&path).unwrap_err().to_string();
        assert!(e.contains("x.jsonl:4"), "{e}");
        std::fs::write(&path, format!("{good}\n\n{good}\n")).unwrap();
        assert_eq!(read_logs(&path).unwrap().len(), 2);
    }
}
