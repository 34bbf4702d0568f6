//! Per-arm results of an experiment, computed from the experience store.
//!
//! The unit of analysis is the request (an *episode*: its decision plus any
//! fallback decisions, `{id}/fallback-n`, which carry the same experiment
//! tag). For each episode:
//! - cost is everything it spent (every model run, fallbacks included);
//! - latency adds up the decisions' latencies (the slowest of a decision's
//!   parallel variations, then each fallback in turn);
//! - it is an error when no model answered;
//! - quality is the caller's feedback when sent (late feedback too: it
//!   still says how good the answer was, even if the trainer no longer
//!   learns from it), else the best recorded
//!   quality of an answer, else 0 for an error, else the configured default
//!   quality (`learning.default_quality`), else unknown;
//! - reward is `quality − λ·cost/C − μ·latency/L` at the request's own
//!   operating point ([`qroute_core::reward::reward`]), when quality is known.
//!
//! Requests of one unit share a user and are correlated, so every interval
//! is cluster-robust on the unit ([`Summary::clustered`]). Each estimate has
//! a fixed-horizon interval (valid for one look) and an always-valid one
//! (valid however often it is looked at); each arm's difference from control
//! has an interval, a p-value and an always-valid interval.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::spec::{Experiment, Status, HOLDOUT};
use super::stats::{always_valid_ci, always_valid_difference, always_valid_p_value, mean_ci, quantile, welch, Summary};
use qroute_core::policy::{OperatingPoint, Scales};
use qroute_core::store::ExperienceStore;
use qroute_core::{Error, Result};

/// How results are computed.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Confidence level of every interval (0.95).
    pub level: f64,
    /// Normalises cost and latency in the reward (the serving policy's).
    pub scales: Scales,
    /// Quality of an answer nobody judged (`learning.default_quality`).
    pub default_quality: Option<f32>,
}

/// A mean with its intervals.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Estimate {
    pub n: usize,
    pub mean: f64,
    /// Fixed-horizon interval at the results' level.
    pub ci: [f64; 2],
    /// Always-valid interval at the same level: stays valid under peeking.
    pub always_valid_ci: [f64; 2],
}

/// An arm minus control.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Comparison {
    pub difference: f64,
    pub ci: [f64; 2],
    /// Two-sided, for "no difference"; fixed-horizon.
    pub p_value: f64,
    pub always_valid_ci: [f64; 2],
    /// For "no difference", valid however often it is looked at (below the
    /// level's α exactly when `always_valid_ci` excludes 0).
    pub always_valid_p_value: f64,
}

/// Every metric of an arm compared with control.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VsControl {
    pub reward: Option<Comparison>,
    pub quality: Option<Comparison>,
    pub cost_usd: Option<Comparison>,
    pub latency_ms: Option<Comparison>,
    pub error_rate: Option<Comparison>,
}

/// One arm's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArmResult {
    pub arm: String,
    pub strategy: String,
    pub control: bool,
    /// Share of units assigned here by design.
    pub expected_share: f64,
    /// Requests logged (answered or not yet).
    pub requests: usize,
    /// Requests whose outcome is not recorded yet.
    pub pending: usize,
    pub units: usize,
    pub errors: usize,
    pub error_rate: Option<Estimate>,
    pub reward: Option<Estimate>,
    pub quality: Option<Estimate>,
    pub cost_usd: Option<Estimate>,
    pub latency_ms: Option<Estimate>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// `None` for control itself.
    pub vs_control: Option<VsControl>,
}

/// An experiment's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub experiment: String,
    pub status: Status,
    pub control: String,
    pub level: f64,
    /// Requests enrolled, over all arms and the holdout.
    pub requests: usize,
    /// Arms in spec order, then the holdout if it has traffic.
    pub arms: Vec<ArmResult>,
    /// What to be careful about when reading these numbers.
    pub warnings: Vec<String>,
}

/// One request of the experiment, as far as the store knows it.
struct Episode {
    arm: String,
    strategy: String,
    unit: u64,
    point: OperatingPoint,
    cost: f64,
    latency: f64,
    /// Best quality recorded for a successful answer.
    best: Option<f32>,
    feedback: Option<f32>,
    outcomes: usize,
    answered: bool,
}

impl Episode {
    fn quality(&self, default: Option<f32>) -> Option<f32> {
        if !self.answered {
            return Some(0.0);
        }
        self.feedback.or(self.best).or(default)
    }
}

/// Scans the store from the experiment's first decision and computes every
/// arm's results.
pub fn compute(store: &dyn ExperienceStore, experiment: &Experiment, opts: &Options, now_ms: u64) -> Result<Results> {
    let spec = &experiment.spec;
    let mut episodes: HashMap<String, Episode> = HashMap::new();
    for exp in store.iter_from(experiment.first_seq) {
        let exp = exp?;
        let d = &exp.decision;
        let Some(tag) = d.experiment.as_ref().filter(|t| t.experiment == spec.id) else {
            continue;
        };
        let base = d.request_id.split("/fallback-").next().unwrap_or(&d.request_id);
        let e = episodes.entry(base.to_string()).or_insert_with(|| Episode {
            arm: tag.arm.clone(),
            strategy: tag.strategy.clone(),
            unit: tag.unit,
            point: OperatingPoint {
                cost_weight: d.cost_weight,
                latency_weight: d.latency_weight,
            },
            cost: 0.0,
            latency: 0.0,
            best: None,
            feedback: None,
            outcomes: 0,
            answered: false,
        });
        e.outcomes += exp.outcomes.len();
        e.latency += exp.outcomes.iter().map(|o| o.latency_ms).fold(0.0, f64::max);
        for o in &exp.outcomes {
            e.cost += o.cost_usd;
            if o.error.is_none() {
                e.answered = true;
                if let Some(q) = o.quality {
                    e.best = Some(e.best.map_or(q, |b| b.max(q)));
                }
            }
        }
        if let Some(f) = &exp.feedback {
            e.feedback = Some(f.feedback.quality);
        }
    }

    let mut by_arm: BTreeMap<&str, Vec<&Episode>> = BTreeMap::new();
    for e in episodes.values() {
        by_arm.entry(e.arm.as_str()).or_default().push(e);
    }
    let assigner = spec.assigner()?;
    let rho = 1.0 / (spec.horizon as f64).sqrt();
    let alpha = 1.0 - opts.level;
    let mut arms: Vec<(String, String, f64)> = spec
        .arms
        .iter()
        .enumerate()
        .map(|(i, a)| (a.name.clone(), a.strategy.name().to_string(), assigner.propensity(i)))
        .collect();
    if let Some(h) = by_arm.get(HOLDOUT) {
        arms.push((HOLDOUT.to_string(), h[0].strategy.clone(), spec.holdout));
    }

    let metrics: Vec<ArmMetrics> = arms
        .iter()
        .map(|(name, _, _)| ArmMetrics::of(by_arm.get(name.as_str()).map_or(&[][..], |v| v), opts))
        .collect();
    let control = spec.control().to_string();
    let ci = |s: &Summary| {
        (s.n > 0).then(|| {
            let (lo, hi) = mean_ci(s, opts.level);
            let (alo, ahi) = always_valid_ci(s, alpha, rho);
            Estimate {
                n: s.n,
                mean: s.mean,
                ci: [lo, hi],
                always_valid_ci: [alo, ahi],
            }
        })
    };
    let compare = |t: &Summary, c: &Summary| {
        (t.n > 1 && c.n > 1).then(|| {
            let d = welch(t, c, opts.level);
            let (alo, ahi) = always_valid_difference(t, c, alpha, rho);
            Comparison {
                difference: d.diff,
                ci: [d.ci_low, d.ci_high],
                p_value: d.p_value,
                always_valid_ci: [alo, ahi],
                always_valid_p_value: always_valid_p_value(t, c, rho),
            }
        })
    };
    let c = arms
        .iter()
        .position(|a| a.0 == control)
        .ok_or_else(|| Error::InvalidInput(format!("control: no arm is named {control:?}")))?;
    let mut results = Vec::with_capacity(arms.len());
    let mut warnings = vec![format!(
        "`ci` and `p_value` hold for one look at a sample size fixed in advance; if you watch these results \
         and stop when they look decisive, read `always_valid_ci` instead (tuned for about {} requests per arm)",
        spec.horizon
    )];
    if let Some(t) = store.truncation()?.filter(|t| t.first_kept > experiment.first_seq) {
        warnings.push(format!(
            "truncated: store retention removed this experiment's oldest decisions (sequence numbers {} to {}); \
             these results cover only what is kept",
            experiment.first_seq,
            t.first_kept - 1
        ));
    }
    let total_units: usize = metrics.iter().map(|m| m.units).sum();
    for (i, ((name, strategy, share), m)) in arms.iter().zip(&metrics).enumerate() {
        let vs_control = (i != c).then(|| {
            let k = &metrics[c];
            VsControl {
                reward: compare(&m.reward, &k.reward),
                quality: compare(&m.quality, &k.quality),
                cost_usd: compare(&m.cost, &k.cost),
                latency_ms: compare(&m.latency, &k.latency),
                error_rate: compare(&m.error, &k.error),
            }
        });
        if m.requests > 0 && m.requests < 30 {
            warnings.push(format!(
                "arm {name:?} has {} requests: its intervals rest on a normal approximation that needs more",
                m.requests
            ));
        }
        // Sample ratio mismatch: units far from the designed split mean the
        // assignment or the logging is broken, and no comparison can be trusted.
        if total_units >= 100 {
            let expected = total_units as f64 * share;
            let z = (m.units as f64 - expected) / (expected * (1.0 - share)).sqrt().max(1e-9);
            if z.abs() > 3.89 {
                warnings.push(format!(
                    "sample ratio mismatch: arm {name:?} has {} units where {expected:.0} were expected (z = {z:.1})",
                    m.units
                ));
            }
        }
        results.push(ArmResult {
            arm: name.clone(),
            strategy: strategy.clone(),
            control: i == c,
            expected_share: *share,
            requests: m.requests,
            pending: m.pending,
            units: m.units,
            errors: m.errors,
            error_rate: ci(&m.error),
            reward: ci(&m.reward),
            quality: ci(&m.quality),
            cost_usd: ci(&m.cost),
            latency_ms: ci(&m.latency),
            latency_p50_ms: m.latency_p50,
            latency_p99_ms: m.latency_p99,
            vs_control,
        });
    }
    Ok(Results {
        experiment: spec.id.clone(),
        status: experiment.status(now_ms),
        control,
        level: opts.level,
        requests: episodes.len(),
        arms: results,
        warnings,
    })
}

/// One arm's per-request values, clustered by unit.
struct ArmMetrics {
    requests: usize,
    pending: usize,
    units: usize,
    errors: usize,
    error: Summary,
    reward: Summary,
    quality: Summary,
    cost: Summary,
    latency: Summary,
    latency_p50: Option<f64>,
    latency_p99: Option<f64>,
}

impl ArmMetrics {
    fn of(episodes: &[&Episode], opts: &Options) -> ArmMetrics {
        let done: Vec<&&Episode> = episodes.iter().filter(|e| e.outcomes > 0).collect();
        let values = |f: &dyn Fn(&Episode) -> Option<f64>| -> Vec<(u64, f64)> {
            done.iter().filter_map(|e| f(e).map(|v| (e.unit, v))).collect()
        };
        let quality = values(&|e| e.quality(opts.default_quality).map(f64::from));
        let reward = values(&|e| {
            e.quality(opts.default_quality).map(|q| {
                f64::from(qroute_core::reward::reward(
                    q,
                    e.cost,
                    (e.latency > 0.0).then_some(e.latency),
                    e.point,
                    &opts.scales,
                ))
            })
        });
        let mut latencies: Vec<f64> = done.iter().map(|e| e.latency).collect();
        ArmMetrics {
            requests: episodes.len(),
            pending: episodes.len() - done.len(),
            units: episodes.iter().map(|e| e.unit).collect::<HashSet<_>>().len(),
            errors: done.iter().filter(|e| !e.answered).count(),
            error: Summary::clustered(&values(&|e| Some(if e.answered { 0.0 } else { 1.0 }))),
            reward: Summary::clustered(&reward),
            quality: Summary::clustered(&quality),
            cost: Summary::clustered(&values(&|e| Some(e.cost))),
            latency: Summary::clustered(&values(&|e| Some(e.latency))),
            latency_p50: (!latencies.is_empty()).then(|| quantile(&mut latencies, 0.5)),
            latency_p99: (!latencies.is_empty()).then(|| quantile(&mut latencies, 0.99)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qroute_core::features::Features;
    use qroute_core::record::{Answered, DecisionRecord, ExperimentTag, Feedback, Outcome};

    fn decision(id: &str, experiment: Option<(&str, &str, u64)>) -> DecisionRecord {
        DecisionRecord {
            request_id: id.into(),
            time_ms: 1,
            features: Features {
                dim: 8,
                indices: vec![],
                values: vec![],
            },
            candidates: vec!["m".into()],
            propensities: vec![1.0],
            chosen: vec!["m".into()],
            policy_version: 1,
            cost_weight: 0.0,
            latency_weight: 0.0,
            task: None,
            experiment: experiment.map(|(e, arm, unit)| ExperimentTag {
                experiment: e.into(),
                arm: arm.into(),
                strategy: "fixed".into(),
                assignment_propensity: 0.5,
                unit,
            }),
            shadow: None,
        }
    }

    fn outcome(id: &str, quality: Option<f32>, cost: f64, latency: f64, error: bool) -> Outcome {
        Outcome {
            request_id: id.into(),
            model: "m".into(),
            quality,
            cost_usd: cost,
            latency_ms: latency,
            error: error.then(|| "boom".into()),
            time_ms: 2,
            ttft_ms: None,
        }
    }

    /// Episodes are grouped with their fallbacks, feedback beats recorded
    /// quality, an error is quality 0, an unjudged answer gets the default,
    /// a request with no outcome yet is pending, and other experiments'
    /// and untagged decisions are left out.
    #[test]
    fn episodes_are_built_from_decisions_fallbacks_and_feedback() {
        let dir = tempfile::tempdir().unwrap();
        let store = qroute_store::SledStore::open(dir.path()).unwrap();
        let tag = |arm, unit| Some(("e", arm, unit));
        store
            .append_decisions(&[
                decision("r1", tag("a", 1)),
                decision("r2", tag("a", 2)),
                decision("r2/fallback-1", tag("a", 2)),
                decision("r3", tag("b", 3)),
                decision("r4", tag("b", 4)),
                decision("r5", tag("b", 5)),
                decision("r6", Some(("other", "a", 6))),
                decision("r7", None),
                decision("r8", tag("b", 8)),
            ])
            .unwrap();
        store
            .record_outcomes(&[
                outcome("r1", Some(0.8), 0.010, 100.0, false),
                outcome("r2", None, 0.001, 50.0, true),
                outcome("r2/fallback-1", Some(0.6), 0.002, 70.0, false),
                outcome("r3", None, 0.004, 30.0, true),
                outcome("r4", Some(0.2), 0.005, 10.0, false),
                outcome("r6", Some(1.0), 9.0, 1.0, false),
                outcome("r7", Some(1.0), 9.0, 1.0, false),
                outcome("r8", None, 0.003, 20.0, false),
            ])
            .unwrap();
        store
            .record_answers(&[Answered {
                request_id: "r4".into(),
                decision_id: "r4".into(),
                model: "m".into(),
                time_ms: 2,
                key_id: None,
            }])
            .unwrap();
        let feedback = Feedback {
            quality: 0.9,
            kind: "quality".into(),
            value: 0.9,
            time_ms: 3,
        };
        store.record_feedback("r4", feedback, 60_000).unwrap();

        let spec: crate::ExperimentSpec = serde_json::from_str(
            r#"{"id":"e","unit":"user","arms":[{"name":"a","strategy":{"kind":"balanced"}},
                {"name":"b","strategy":{"kind":"balanced"}}]}"#,
        )
        .unwrap();
        let experiment = Experiment {
            spec,
            created_ms: 0,
            stopped_ms: None,
            first_seq: 0,
        };
        let opts = Options {
            level: 0.95,
            scales: Scales {
                cost_usd: 1.0,
                latency_ms: 1000.0,
            },
            default_quality: Some(0.5),
        };
        let r = compute(&store, &experiment, &opts, 10).unwrap();
        assert_eq!(r.requests, 6);
        let (a, b) = (&r.arms[0], &r.arms[1]);
        assert_eq!(
            (a.arm.as_str(), a.control, a.requests, a.units, a.errors),
            ("a", true, 2, 2, 0)
        );
        assert_eq!((b.requests, b.pending, b.units, b.errors), (4, 1, 4, 1));
        let close = |x: f64, y: f64| (x - y).abs() < 1e-6;
        // r1 cost 0.010; r2 0.001 + 0.002 with the fallback.
        assert!(close(a.cost_usd.unwrap().mean, 0.0065));
        // r2's latency adds its failed call and its fallback: 120 ms.
        let mut lat = [100.0, 120.0];
        assert!(close(a.latency_p50_ms.unwrap(), quantile(&mut lat, 0.5)));
        assert!(close(a.quality.unwrap().mean, 0.7));
        // b: error 0, feedback 0.9 (over the recorded 0.2), default 0.5.
        let q = b.quality.unwrap();
        assert_eq!(q.n, 3);
        assert!(close(q.mean, (0.0 + 0.9 + 0.5) / 3.0));
        assert!(close(b.error_rate.unwrap().mean, 1.0 / 3.0));
        // λ = μ = 0: the reward is the quality.
        assert!(close(b.reward.unwrap().mean, q.mean));
        let vs = b.vs_control.as_ref().unwrap();
        assert!(close(vs.quality.unwrap().difference, q.mean - 0.7));
        assert!(a.vs_control.is_none());
        assert_eq!(r.status, Status::Running);
    }
}
