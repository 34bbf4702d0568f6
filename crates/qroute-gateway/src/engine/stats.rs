//! What the console's overview, policy and models pages show: aggregates
//! over the newest decisions in a time window, computed from the experience
//! store (so every replica on a shared store shows the whole fleet), plus
//! this process's cache counters.
//!
//! Read, never written: a pure function of the experiences it is given,
//! so it is tested without a gateway.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use qroute_core::record::Experience;

/// At most this many of the newest decisions are read per call: a bound
/// on the work one request can ask for.
pub const MAX_DECISIONS: u64 = 20_000;

/// The model the savings are measured against: the one with the highest
/// mean quality in the data the policy was trained on (its quality prior),
/// which routing cannot bias, and every served model's price, by which an
/// answer's logged cost is rescaled to what that model would have charged.
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    /// `(model, its mean quality in the training data)`.
    pub strongest: Option<(String, f64)>,
    /// Model → input plus output price per million tokens.
    pub prices: HashMap<String, f64>,
}

/// Cache lookups by this process since it started.
#[derive(Debug, Default)]
pub struct CacheCounts {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

#[derive(Debug, Serialize)]
pub struct Totals {
    /// Requests answered (a fallback's own decision is not another request).
    pub requests: u64,
    pub spend_usd: f64,
    /// Outcomes that failed.
    pub errors: u64,
    /// Mean quality of answers without feedback (judged, or the default).
    pub quality_judged: Option<f64>,
    /// Mean quality callers sent as feedback.
    pub quality_feedback: Option<f64>,
    pub feedback_count: u64,
    pub latency_ms: Option<Percentiles>,
    pub ttft_ms: Option<Percentiles>,
}

#[derive(Debug, Serialize)]
pub struct Bucket {
    pub t_ms: u64,
    pub requests: u64,
    pub spend_usd: f64,
    pub quality_judged: Option<f64>,
    pub quality_feedback: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub ttft_p50_ms: Option<f64>,
    /// Outcomes per model in this bucket.
    pub models: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct ModelStats {
    pub model: String,
    /// Outcomes (answers and failures) of this model.
    pub requests: u64,
    /// Its fraction of all outcomes.
    pub share: f64,
    pub errors: u64,
    pub error_rate: f64,
    pub spend_usd: f64,
    pub mean_quality: Option<f64>,
    pub latency_ms: Option<Percentiles>,
}

#[derive(Debug, Serialize)]
pub struct Savings {
    pub baseline_model: Option<String>,
    pub baseline_usd: Option<f64>,
    pub actual_usd: f64,
    pub saved_usd: Option<f64>,
    pub saved_fraction: Option<f64>,
    /// How the estimate was made, in words, for the page to show.
    pub method: String,
}

#[derive(Debug, Serialize)]
pub struct VersionStats {
    pub version: u64,
    pub requests: u64,
    pub mean_quality: Option<f64>,
    pub first_ms: u64,
    pub last_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct PolicyStats {
    pub serving_version: u64,
    /// Mean probability that a decision did not take the policy's most
    /// likely model (1 − the largest propensity): how much it explores.
    pub exploration_rate: Option<f64>,
    pub versions: Vec<VersionStats>,
}

#[derive(Debug, Serialize)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub hit_rate: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Stats {
    pub window_s: u64,
    pub bucket_s: u64,
    pub from_ms: u64,
    pub to_ms: u64,
    /// Decisions read.
    pub experiences: u64,
    /// Whether the window held more than [`MAX_DECISIONS`] (only the newest
    /// were read).
    pub limited: bool,
    pub totals: Totals,
    pub series: Vec<Bucket>,
    pub models: Vec<ModelStats>,
    pub savings: Savings,
    pub policy: PolicyStats,
    pub cache: CacheStats,
}

fn mean(sum: f64, n: u64) -> Option<f64> {
    (n > 0).then(|| sum / n as f64)
}

/// Nearest-rank percentiles; `None` for no values.
fn percentiles(values: &mut [f64]) -> Option<Percentiles> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((q * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
    Some(Percentiles {
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
    })
}

/// One model's running sums: errors, spend, (quality sum, count) of its
/// answers, their latencies.
#[derive(Default)]
struct ModelAcc {
    errors: u64,
    spend: f64,
    quality: (f64, u64),
    latency: Vec<f64>,
}

/// One policy version's running sums.
struct VersionAcc {
    requests: u64,
    quality: (f64, u64),
    first_ms: u64,
    last_ms: u64,
}

/// Running sums of one bucket (or of the whole window).
#[derive(Default)]
struct Acc {
    requests: u64,
    spend: f64,
    errors: u64,
    judged: (f64, u64),
    feedback: (f64, u64),
    latency: Vec<f64>,
    ttft: Vec<f64>,
    models: BTreeMap<String, u64>,
}

impl Acc {
    fn add(&mut self, e: &Experience) {
        if !e.decision.request_id.contains("/fallback-") {
            self.requests += 1;
        }
        if let Some(f) = &e.feedback {
            self.feedback.0 += f64::from(f.feedback.quality);
            self.feedback.1 += 1;
        }
        let applied = e.feedback.as_ref().is_some_and(|f| f.applied);
        for o in &e.outcomes {
            self.spend += o.cost_usd;
            *self.models.entry(o.model.clone()).or_default() += 1;
            if o.error.is_some() {
                self.errors += 1;
                continue;
            }
            self.latency.push(o.latency_ms);
            if let Some(t) = o.ttft_ms {
                self.ttft.push(t);
            }
            if let (Some(q), false) = (o.quality, applied) {
                self.judged.0 += f64::from(q);
                self.judged.1 += 1;
            }
        }
    }
}

/// The time window aggregated, and whether more decisions fell in it than
/// were read.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub from_ms: u64,
    pub to_ms: u64,
    pub bucket_s: u64,
    pub limited: bool,
}

/// Aggregates `experiences` (decisions with `time_ms` in the window;
/// others are skipped) into the window's buckets.
pub fn compute(
    experiences: &[Experience],
    window: Window,
    serving_version: u64,
    baseline: &Baseline,
    cache: &CacheCounts,
) -> Stats {
    let Window {
        from_ms,
        to_ms,
        bucket_s,
        limited,
    } = window;
    let bucket_ms = bucket_s.max(1) * 1000;
    let n_buckets = ((to_ms.saturating_sub(from_ms)) / bucket_ms + 1) as usize;
    let mut buckets: Vec<Acc> = (0..n_buckets).map(|_| Acc::default()).collect();
    let mut total = Acc::default();
    let mut per_model: HashMap<&str, ModelAcc> = HashMap::new();
    let mut versions: BTreeMap<u64, VersionAcc> = BTreeMap::new();
    let mut explore_sum = 0.0;
    let mut read = 0u64;
    for e in experiences {
        let t = e.decision.time_ms;
        if t < from_ms || t > to_ms {
            continue;
        }
        read += 1;
        total.add(e);
        buckets[((t - from_ms) / bucket_ms) as usize].add(e);
        explore_sum += 1.0 - e.decision.propensities.iter().copied().fold(0.0f32, f32::max) as f64;
        let v = versions.entry(e.decision.policy_version).or_insert(VersionAcc {
            requests: 0,
            quality: (0.0, 0),
            first_ms: t,
            last_ms: t,
        });
        v.requests += 1;
        v.first_ms = v.first_ms.min(t);
        v.last_ms = v.last_ms.max(t);
        for o in &e.outcomes {
            let m = per_model.entry(o.model.as_str()).or_default();
            m.spend += o.cost_usd;
            if o.error.is_some() {
                m.errors += 1;
                continue;
            }
            m.latency.push(o.latency_ms);
            if let Some(q) = o.quality {
                m.quality.0 += f64::from(q);
                m.quality.1 += 1;
                v.quality.0 += f64::from(q);
                v.quality.1 += 1;
            }
        }
    }

    let outcomes: u64 = total.models.values().sum();
    let mut models: Vec<ModelStats> = per_model
        .into_iter()
        .map(|(model, mut m)| {
            let requests = total.models.get(model).copied().unwrap_or(0);
            ModelStats {
                model: model.to_string(),
                requests,
                share: requests as f64 / outcomes.max(1) as f64,
                errors: m.errors,
                error_rate: m.errors as f64 / requests.max(1) as f64,
                spend_usd: m.spend,
                mean_quality: mean(m.quality.0, m.quality.1),
                latency_ms: percentiles(&mut m.latency),
            }
        })
        .collect();
    models.sort_by(|a, b| b.requests.cmp(&a.requests).then_with(|| a.model.cmp(&b.model)));

    let savings = savings(experiences, from_ms, to_ms, baseline, total.spend);
    let series = buckets
        .into_iter()
        .enumerate()
        .map(|(i, mut b)| {
            let lat = percentiles(&mut b.latency);
            Bucket {
                t_ms: from_ms + i as u64 * bucket_ms,
                requests: b.requests,
                spend_usd: b.spend,
                quality_judged: mean(b.judged.0, b.judged.1),
                quality_feedback: mean(b.feedback.0, b.feedback.1),
                latency_p50_ms: lat.map(|p| p.p50),
                latency_p95_ms: lat.map(|p| p.p95),
                ttft_p50_ms: percentiles(&mut b.ttft).map(|p| p.p50),
                models: b.models,
            }
        })
        .collect();
    let (hits, misses) = (cache.hits.load(Ordering::Relaxed), cache.misses.load(Ordering::Relaxed));
    Stats {
        window_s: (to_ms - from_ms) / 1000,
        bucket_s: bucket_ms / 1000,
        from_ms,
        to_ms,
        experiences: read,
        limited,
        totals: Totals {
            requests: total.requests,
            spend_usd: total.spend,
            errors: total.errors,
            quality_judged: mean(total.judged.0, total.judged.1),
            quality_feedback: mean(total.feedback.0, total.feedback.1),
            feedback_count: total.feedback.1,
            latency_ms: percentiles(&mut total.latency),
            ttft_ms: percentiles(&mut total.ttft),
        },
        series,
        models,
        savings,
        policy: PolicyStats {
            serving_version,
            exploration_rate: mean(explore_sum, read),
            versions: versions
                .into_iter()
                .map(|(version, v)| VersionStats {
                    version,
                    requests: v.requests,
                    mean_quality: mean(v.quality.0, v.quality.1),
                    first_ms: v.first_ms,
                    last_ms: v.last_ms,
                })
                .collect(),
        },
        cache: CacheStats {
            hits,
            misses,
            hit_rate: (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64),
        },
    }
}

/// Always sending to the strongest model: each logged answer's cost
/// rescaled by the strongest model's price over the answering model's (the
/// same tokens at its prices), summed over the window.
fn savings(experiences: &[Experience], from_ms: u64, to_ms: u64, baseline: &Baseline, actual: f64) -> Savings {
    let not_estimated = |why: String| Savings {
        baseline_model: None,
        baseline_usd: None,
        actual_usd: actual,
        saved_usd: None,
        saved_fraction: None,
        method: format!("not estimated: {why}"),
    };
    let Some((strongest, quality)) = &baseline.strongest else {
        return not_estimated("the serving policy has no per-model quality from its training data".into());
    };
    let Some(&strong_price) = baseline.prices.get(strongest).filter(|p| **p > 0.0) else {
        return not_estimated(format!("{strongest} has no price"));
    };
    let mut estimate = 0.0;
    let mut unpriced = 0u64;
    for e in experiences
        .iter()
        .filter(|e| (from_ms..=to_ms).contains(&e.decision.time_ms))
    {
        // One answer per request: the outcome that was not an error (the
        // first, for variations), as if only the strongest model had run.
        let Some(o) = e.outcomes.iter().find(|o| o.error.is_none()) else {
            continue;
        };
        match baseline.prices.get(&o.model).filter(|p| **p > 0.0) {
            Some(price) => estimate += o.cost_usd * strong_price / price,
            None => unpriced += 1,
        }
    }
    let skipped = if unpriced > 0 {
        format!(" {unpriced} answers of models without a price are left out.")
    } else {
        String::new()
    };
    Savings {
        baseline_model: Some(strongest.clone()),
        baseline_usd: Some(estimate),
        actual_usd: actual,
        saved_usd: Some(estimate - actual),
        saved_fraction: (estimate > 0.0).then(|| (estimate - actual) / estimate),
        method: format!(
            "From the logged answers, not off-policy evaluation: the strongest model is the one with the highest mean \
             quality in the policy's training data ({strongest}, {quality:.3}); each answer's logged cost is rescaled \
             to its prices (input plus output per million tokens, {strongest}'s over the answering model's), as if it \
             had answered with the same tokens. Actual is the logged spend, variations and failures included.{skipped}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qroute_core::features::Features;
    use qroute_core::record::{Answered, DecisionRecord, Feedback, FeedbackRecord, Outcome};

    fn exp(i: u64, model: &str, cost: f64, quality: f32, feedback: Option<f32>) -> Experience {
        let request_id = format!("r{i}");
        let time_ms = 1_000_000 + i * 1000;
        Experience {
            decision: DecisionRecord {
                request_id: request_id.clone(),
                time_ms,
                features: Features {
                    dim: 4,
                    indices: vec![],
                    values: vec![],
                },
                candidates: vec!["cheap".into(), "strong".into()],
                propensities: vec![0.9, 0.1],
                chosen: vec![model.into()],
                policy_version: 1 + i / 50,
                cost_weight: 0.0,
                latency_weight: 0.0,
                task: None,
                experiment: None,
                shadow: None,
            },
            outcomes: vec![Outcome {
                request_id: request_id.clone(),
                model: model.into(),
                quality: Some(feedback.unwrap_or(quality)),
                cost_usd: cost,
                latency_ms: 100.0 + i as f64,
                error: None,
                time_ms,
                ttft_ms: None,
            }],
            feedback: feedback.map(|q| FeedbackRecord {
                feedback: Feedback {
                    quality: q,
                    kind: "quality".into(),
                    value: f64::from(q),
                    time_ms,
                },
                answered: Answered {
                    request_id: request_id.clone(),
                    decision_id: request_id,
                    model: model.into(),
                    time_ms,
                    key_id: None,
                },
                late: false,
                revisions: 1,
                applied: true,
            }),
        }
    }

    #[test]
    fn totals_series_models_savings_and_versions() {
        // 80 cheap answers (q 0.6, $0.001), 20 strong ones (q 0.9, $0.01),
        // the last 10 cheap ones with feedback 1.0.
        let mut all: Vec<Experience> = (0..80)
            .map(|i| exp(i, "cheap", 0.001, 0.6, (i >= 70).then_some(1.0)))
            .collect();
        all.extend((80..100).map(|i| exp(i, "strong", 0.01, 0.9, None)));
        let cache = CacheCounts::default();
        cache.hits.store(1, Ordering::Relaxed);
        cache.misses.store(3, Ordering::Relaxed);
        let baseline = Baseline {
            strongest: Some(("strong".into(), 0.9)),
            prices: [("cheap".to_string(), 1.0), ("strong".to_string(), 10.0)].into(),
        };
        let s = compute(
            &all,
            Window {
                from_ms: 1_000_000,
                to_ms: 1_099_000,
                bucket_s: 60,
                limited: false,
            },
            2,
            &baseline,
            &cache,
        );
        assert_eq!(s.totals.requests, 100);
        assert!((s.totals.spend_usd - (80.0 * 0.001 + 20.0 * 0.01)).abs() < 1e-9);
        assert_eq!(s.totals.feedback_count, 10);
        assert_eq!(s.totals.quality_feedback, Some(1.0));
        let judged = (70.0 * 0.6 + 20.0 * 0.9) / 90.0;
        assert!((s.totals.quality_judged.unwrap() - judged).abs() < 1e-6);
        assert_eq!(s.series.len(), 2);
        assert_eq!(s.series.iter().map(|b| b.requests).sum::<u64>(), 100);
        assert_eq!(s.series[0].models["cheap"], 60);
        assert_eq!(s.models[0].model, "cheap");
        assert!((s.models[0].share - 0.8).abs() < 1e-9);
        // Each cheap answer at strong's prices: 10 × $0.001; strong's own
        // as they are: 100 × $0.01 in all.
        assert_eq!(s.savings.baseline_model.as_deref(), Some("strong"));
        assert!((s.savings.baseline_usd.unwrap() - 1.0).abs() < 1e-9);
        assert!((s.savings.saved_usd.unwrap() - (1.0 - 0.28)).abs() < 1e-9);
        assert!(s.savings.method.contains("training data"));
        assert!((s.policy.exploration_rate.unwrap() - 0.1).abs() < 1e-6);
        assert_eq!(
            s.policy.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(s.cache.hit_rate, Some(0.25));
        // Outside the window: not counted.
        let s = compute(
            &all,
            Window {
                from_ms: 1_050_000,
                to_ms: 1_099_000,
                bucket_s: 60,
                limited: false,
            },
            2,
            &baseline,
            &cache,
        );
        assert_eq!(s.totals.requests, 50);
    }

    #[test]
    fn no_data_is_nulls_not_nans() {
        let s = compute(
            &[],
            Window {
                from_ms: 0,
                to_ms: 60_000,
                bucket_s: 60,
                limited: false,
            },
            1,
            &Baseline::default(),
            &CacheCounts::default(),
        );
        assert_eq!(s.totals.requests, 0);
        assert!(s.totals.latency_ms.is_none() && s.totals.quality_judged.is_none());
        assert!(s.savings.saved_usd.is_none() && s.cache.hit_rate.is_none());
        assert!(serde_json::to_string(&s).unwrap().find("NaN").is_none());
    }
}
