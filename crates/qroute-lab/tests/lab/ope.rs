//! Offline policy evaluation on a synthetic world whose answer is known:
//! IPS, SNIPS and DR recover each target's true value from uniformly logged
//! decisions, logs without propensities are refused, and poor overlap is
//! flagged.

use qroute_core::features::Features;
use qroute_core::policy::Scales;
use qroute_core::record::{DecisionRecord, Experience, Outcome};
use qroute_core::store::ExperienceStore;
use qroute_core::Error;
use qroute_lab::export::export_jsonl;
use qroute_lab::ope::{evaluate, read_logs, FixedModel, OpeReport, TargetPolicy, Uniform};
use qroute_store::SledStore;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const MODELS: [&str; 3] = ["a", "b", "c"];
/// Mean quality of each model in each context type.
const QUALITY: [[f64; 3]; 2] = [[0.9, 0.6, 0.3], [0.4, 0.7, 0.8]];
/// Fixed cost of each model's call.
const COST: [f64; 3] = [0.01, 0.002, 0.0];
/// Model "b" fails this often (an error counts as quality 0).
const B_ERROR_RATE: f64 = 0.1;
/// Cost weights, drawn uniformly per decision.
const LAMBDAS: [f32; 2] = [0.0, 0.5];
const SCALES: Scales = Scales {
    cost_usd: 0.01,
    latency_ms: 1000.0,
};
const N: usize = 5000;

fn context(kind: usize) -> Features {
    let indices = if kind == 0 {
        vec![10, 200, 3000]
    } else {
        vec![57, 999, 5000]
    };
    Features {
        dim: 8192,
        indices,
        values: vec![1.0, 0.5, 0.25],
    }
}

fn kind_of(x: &Features) -> usize {
    usize::from(x.indices[0] != 10)
}

/// Expected reward of model `m` in context `kind` at cost weight `lambda`.
fn expected_reward(kind: usize, m: usize, lambda: f32) -> f64 {
    let q = QUALITY[kind][m] * if m == 1 { 1.0 - B_ERROR_RATE } else { 1.0 };
    q - lambda as f64 * COST[m] / SCALES.cost_usd
}

/// True value of a deterministic policy `choice(kind) -> model`: contexts
/// and cost weights are uniform.
fn true_value(choice: impl Fn(usize) -> usize) -> f64 {
    let mut v = 0.0;
    for kind in 0..2 {
        for &l in &LAMBDAS {
            v += expected_reward(kind, choice(kind), l) / 4.0;
        }
    }
    v
}

/// "a" on context type 0, "c" on type 1: the best model of each.
struct ByContext;

impl TargetPolicy for ByContext {
    fn name(&self) -> String {
        "by-context".into()
    }
    fn distribution(&self, x: &Features, candidates: &[String], _: f32) -> Vec<f32> {
        let want = if kind_of(x) == 0 { "a" } else { "c" };
        candidates.iter().map(|c| if c == want { 1.0 } else { 0.0 }).collect()
    }
}

/// `n` decisions logged under `logging` (one probability per model), with
/// Bernoulli quality. About 2% of outcomes are unlabelled and 1% of
/// decisions have no outcome, both at random.
fn log(n: usize, logging: [f32; 3], seed: u64) -> Vec<Experience> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let candidates: Vec<String> = MODELS.iter().map(|m| m.to_string()).collect();
    (0..n)
        .map(|i| {
            let kind = rng.gen_range(0..2);
            let lambda = LAMBDAS[rng.gen_range(0..2)];
            let u: f32 = rng.gen();
            let m = if u < logging[0] {
                0
            } else if u < logging[0] + logging[1] {
                1
            } else {
                2
            };
            let request_id = format!("r{i}");
            let errored = m == 1 && rng.gen_bool(B_ERROR_RATE);
            let good = rng.gen_bool(QUALITY[kind][m]);
            // An errored call has no quality; 2% of the rest are unlabelled.
            let unlabelled = rng.gen_bool(0.02);
            let quality = (!errored && !unlabelled).then_some(if good { 1.0 } else { 0.0 });
            let outcome = Outcome {
                request_id: request_id.clone(),
                model: MODELS[m].into(),
                quality,
                cost_usd: COST[m],
                latency_ms: 100.0,
                error: errored.then(|| "upstream 500".to_string()),
                time_ms: 1_000 + i as u64,
                ttft_ms: None,
            };
            let outcomes = if rng.gen_bool(0.01) { vec![] } else { vec![outcome] };
            Experience {
                decision: DecisionRecord {
                    request_id,
                    time_ms: 1_000 + i as u64,
                    features: context(kind),
                    candidates: candidates.clone(),
                    propensities: logging.to_vec(),
                    chosen: vec![MODELS[m].into()],
                    policy_version: 1,
                    cost_weight: lambda,
                    latency_weight: 0.0,
                    task: None,
                    experiment: None,
                    shadow: None,
                },
                outcomes,
                feedback: None,
            }
        })
        .collect()
}

const UNIFORM: [f32; 3] = [1.0 / 3.0; 3];

fn check(report: &OpeReport, truth: f64, tol: f64) {
    for (name, e) in [("ips", report.ips), ("snips", report.snips), ("dr", report.dr)] {
        assert!(
            e.ci_low <= truth && truth <= e.ci_high,
            "{}: {name} CI [{:.4}, {:.4}] misses the true value {truth:.4}",
            report.policy,
            e.ci_low,
            e.ci_high
        );
        assert!(
            (e.value - truth).abs() < tol,
            "{}: {name} = {:.4}, true value {truth:.4}",
            report.policy,
            e.value
        );
    }
}

#[test]
fn estimators_recover_known_values_from_uniform_logs() {
    let logs = log(N, UNIFORM, 7);
    for (m, name) in MODELS.iter().enumerate() {
        let report = evaluate(&logs, &FixedModel(name.to_string()), &SCALES, 1).unwrap();
        check(&report, true_value(|_| m), 0.06);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    }
    let report = evaluate(&logs, &ByContext, &SCALES, 1).unwrap();
    let truth = true_value(|kind| if kind == 0 { 0 } else { 2 });
    check(&report, truth, 0.06);
    // DR's reward model fits this world, so it is tighter than IPS.
    assert!(report.dr.ci_high - report.dr.ci_low < report.ips.ci_high - report.ips.ci_low);

    // Skips are counted; every other decision is a sample.
    assert!(report.skipped_unlabelled > 0 && report.skipped_no_outcome > 0);
    assert_eq!(report.skipped_no_propensity, 0);
    assert_eq!(report.n + report.skipped_unlabelled + report.skipped_no_outcome, N);
}

#[test]
fn ess_is_n_when_target_is_the_logging_policy() {
    let logs = log(N, UNIFORM, 11);
    let report = evaluate(&logs, &Uniform, &SCALES, 3).unwrap();
    assert!((report.ess - report.n as f64).abs() < 1e-6, "ess {}", report.ess);
    assert!((report.max_weight - 1.0).abs() < 1e-9);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let truth = true_value(|_| 0) / 3.0 + true_value(|_| 1) / 3.0 + true_value(|_| 2) / 3.0;
    check(&report, truth, 0.05);
}

#[test]
fn logs_without_propensities_are_refused() {
    let mut logs = log(200, UNIFORM, 5);
    for e in &mut logs {
        e.decision.propensities.clear();
    }
    match evaluate(&logs, &Uniform, &SCALES, 0) {
        Err(Error::InvalidInput(msg)) => assert!(msg.contains("propensities"), "{msg}"),
        other => panic!("expected a refusal, got {other:?}"),
    }

    // Only some without: those are skipped and counted.
    let mut logs = log(200, UNIFORM, 5);
    for e in logs.iter_mut().take(50) {
        e.decision.propensities.clear();
    }
    logs[60].decision.propensities = vec![0.5, 0.5]; // wrong length
    let report = evaluate(&logs, &Uniform, &SCALES, 0).unwrap();
    assert_eq!(report.skipped_no_propensity, 51);
}

#[test]
fn poor_overlap_is_flagged() {
    let logs = log(N, [0.998, 0.001, 0.001], 13);
    let report = evaluate(&logs, &FixedModel("c".into()), &SCALES, 0).unwrap();
    assert!(report.ess < 0.1 * report.n as f64);
    assert!(
        report.warnings.iter().any(|w| w.contains("poor overlap")),
        "{:?}",
        report.warnings
    );
    // The logging policy's own favourite overlaps fine.
    let report = evaluate(&logs, &FixedModel("a".into()), &SCALES, 0).unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}

#[test]
fn store_export_and_read_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let logs = log(400, UNIFORM, 17);
    {
        let store = SledStore::open(dir.path().join("store")).unwrap();
        let decisions: Vec<DecisionRecord> = logs.iter().map(|e| e.decision.clone()).collect();
        store.append_decisions(&decisions).unwrap();
        let outcomes: Vec<Outcome> = logs.iter().flat_map(|e| e.outcomes.clone()).collect();
        store.record_outcomes(&outcomes).unwrap();
        let out = dir.path().join("logs.jsonl");
        assert_eq!(export_jsonl(&store, &out).unwrap(), logs.len());
    }
    let from_store = read_logs(&dir.path().join("store")).unwrap();
    let from_file = read_logs(&dir.path().join("logs.jsonl")).unwrap();
    assert_eq!(from_store, logs);
    assert_eq!(from_file, logs);
    let target = FixedModel("b".into());
    assert_eq!(
        evaluate(&from_file, &target, &SCALES, 2).unwrap(),
        evaluate(&logs, &target, &SCALES, 2).unwrap()
    );

    // A bad line is reported with its file and line number.
    let bad = dir.path().join("bad.jsonl");
    let text = std::fs::read_to_string(dir.path().join("logs.jsonl")).unwrap();
    let mut lines: Vec<&str> = text.lines().take(3).collect();
    lines.push("{\"decision\": 3}");
    std::fs::write(&bad, lines.join("\n")).unwrap();
    let err = read_logs(&bad).unwrap_err().to_string();
    assert!(err.contains("bad.jsonl:4"), "{err}");
}
