//! `qroute simulate`: policies see only what they ran, runs are
//! reproducible under a seed, and regret is what it says.

use qroute_core::dataset::Dataset;
use qroute_core::features::{FeatureSpec, Features, Featurizer};
use qroute_core::policy::OperatingPoint;
use qroute_core::store::ExperienceStore;
use qroute_lab::bandits::{BanditPolicy, Feedback, Pick};
use qroute_lab::simulate::{self, DqnBandit, FeedbackMode, SimConfig};
use qroute_learn::offline::featurize_rows;

fn toy(dir: &std::path::Path, n: usize) -> Dataset {
    let mut lines = Vec::new();
    for i in 0..n {
        let math = i % 3 == 0;
        let prompt = if math {
            format!("compute {i} plus {}", i * 7)
        } else {
            format!("describe the history of place {i}")
        };
        lines.push(
            serde_json::json!({
                "id": format!("t{i}"), "task": "toy", "split": if i % 5 == 4 { "test" } else { "train" }, "prompt": prompt,
                "outcomes": {
                    "a": {"quality": if math { 1.0 } else { 0.0 }, "cost_usd": 0.001},
                    "b": {"quality": 0.6, "cost_usd": 0.004},
                    "c": {"quality": if math { 0.0 } else { 1.0 }, "cost_usd": 0.01},
                }
            })
            .to_string(),
        );
    }
    let path = dir.join("toy.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    Dataset::load(&path).unwrap()
}

/// Wraps a policy and checks every piece of feedback against what it ran
/// and against the table: if the simulator ever passed the outcome of a
/// model that did not run, this fails.
struct Spy<'a> {
    inner: &'a mut dyn BanditPolicy,
    ds: &'a Dataset,
    learned: usize,
}

impl BanditPolicy for Spy<'_> {
    fn name(&self) -> &str {
        "spy"
    }
    fn choose(&mut self, id: &str, x: &Features, k: usize) -> Pick {
        self.inner.choose(id, x, k)
    }
    fn learn(&mut self, id: &str, x: &Features, pick: &Pick, feedback: &[Feedback]) {
        let ran: Vec<usize> = feedback.iter().map(|f| f.model).collect();
        assert_eq!(ran, pick.models, "feedback for models that were not run");
        let row = self.ds.rows.iter().find(|r| r.id == id).unwrap();
        for f in feedback {
            assert_eq!(f.quality, row.outcomes[f.model].quality);
        }
        self.learned += feedback.len();
        self.inner.learn(id, x, pick, feedback);
    }
    fn best(&mut self, id: &str, x: &Features) -> usize {
        self.inner.best(id, x)
    }
}

#[test]
fn policies_only_ever_see_the_models_they_ran() {
    let dir = tempfile::tempdir().unwrap();
    let ds = toy(dir.path(), 200);
    for mode in [FeedbackMode::Bandit, FeedbackMode::Variations(2)] {
        let cfg = SimConfig {
            feedback: mode,
            policies: vec!["dqn".into()],
            ..SimConfig::default()
        };
        let mut dqn = DqnBandit::new(simulate::fresh_dqn(&ds, 1).unwrap(), OperatingPoint::cost(0.5), &cfg).unwrap();
        let fz = Featurizer::new(FeatureSpec::default()).unwrap();
        let feats = featurize_rows(&fz, &ds.split("train"));
        let mut spy = Spy {
            inner: &mut dqn,
            ds: &ds,
            learned: 0,
        };
        let res = simulate::run(&ds, &mut [&mut spy], &feats, None, &cfg, 0.01, |_| Ok(())).unwrap();
        assert_eq!(res[0].rounds, 160);
        assert_eq!(spy.learned, 160 * mode.k());
        // The DQN's own experience log holds exactly the models it ran, never the rest.
        for exp in dqn.store().iter_from(0) {
            let exp = exp.unwrap();
            let mut logged: Vec<&str> = exp.outcomes.iter().map(|o| o.model.as_str()).collect();
            let mut chosen: Vec<&str> = exp.decision.chosen.iter().map(|s| s.as_str()).collect();
            logged.sort();
            chosen.sort();
            assert_eq!(logged, chosen);
            assert_eq!(chosen.len(), mode.k());
            assert_eq!(exp.decision.propensities.len(), 3);
        }
        assert_eq!(dqn.store().len(), 160);
    }
}

#[test]
fn traces_are_reproducible_under_a_seed() {
    let dir = tempfile::tempdir().unwrap();
    let ds = toy(dir.path(), 150);
    let trace = |seed: u64, name: &str| {
        let cfg = SimConfig {
            seed,
            shuffle_seed: Some(seed),
            epochs: 2,
            ..SimConfig::default()
        };
        let path = dir.path().join(name);
        simulate::simulate(&ds, &cfg, Some(&path)).unwrap();
        std::fs::read_to_string(path).unwrap()
    };
    let a = trace(3, "a.jsonl");
    assert_eq!(a.lines().count(), 2 * 120 * simulate::POLICIES.len());
    assert_eq!(a, trace(3, "b.jsonl"), "same seed, different trace");
    assert_ne!(a, trace(4, "c.jsonl"), "different seeds, same trace");
}

#[test]
fn regret_is_computed_against_the_per_prompt_oracle() {
    // λ = 1; C = the highest per-model mean cost = mean(0.1, 0.3) = 0.2.
    // Rewards: p1: a = 1 − 0.1/0.2 = 0.5, b = 0;  p2: a = 0 − 1.5, b = 1 − 0.5 = 0.5.
    // The best single model in hindsight is b (mean 0.25 vs −0.5), so its
    // regret is 0.5 on p1 and 0 on p2. Running both (variations=2) returns
    // the best answer and pays both: p1 1 − 0.5 = 0.5 (regret 0),
    // p2 1 − 2 = −1 (regret 1.5).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.jsonl");
    std::fs::write(
        &path,
        r#"{"id":"p1","task":"t","split":"train","prompt":"one","outcomes":{"a":{"quality":1,"cost_usd":0.1},"b":{"quality":0,"cost_usd":0.0}}}
{"id":"p2","task":"t","split":"train","prompt":"two","outcomes":{"a":{"quality":0,"cost_usd":0.3},"b":{"quality":1,"cost_usd":0.1}}}
"#,
    )
    .unwrap();
    let ds = Dataset::load(&path).unwrap();
    for (mode, regrets, mean_reward) in [
        (FeedbackMode::Bandit, [0.5f32, 0.0], 0.25),
        (FeedbackMode::Variations(2), [0.0, 1.5], -0.25),
    ] {
        let cfg = SimConfig {
            feedback: mode,
            cost_weight: 1.0,
            window: 2,
            policies: vec!["best-single".into()],
            ..SimConfig::default()
        };
        let trace_path = dir.path().join("trace.jsonl");
        let (sim, dqn) = simulate::simulate(&ds, &cfg, Some(&trace_path)).unwrap();
        assert!(dqn.is_none());
        assert!((sim.cost_scale - 0.2).abs() < 1e-12);
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&trace_path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        for (line, want) in lines.iter().zip(regrets) {
            assert!((line["regret"].as_f64().unwrap() as f32 - want).abs() < 1e-6, "{line}");
        }
        assert_eq!(lines[0]["models"][0], "b");
        let r = &sim.results[0];
        assert!((r.mean_regret - (regrets[0] + regrets[1]) as f64 / 2.0).abs() < 1e-6);
        assert!((r.mean_reward - mean_reward).abs() < 1e-6, "{}", r.mean_reward);
        assert_eq!(r.curve.len(), 1);
    }
}

#[test]
fn drift_recovery_counts_rounds_until_share_falls_below_ten_percent() {
    // Used every round for 300 rounds, then never: the trailing-100 window
    // holds 9 uses (under 10%) 91 rounds after the change.
    let used: Vec<bool> = (0..600).map(|i| i < 300).collect();
    let (rounds, before) = simulate::drift_recovery(&used, 301);
    assert_eq!(before, Some(1.0));
    assert_eq!(rounds, Some(91));
    let never: Vec<bool> = vec![true; 600];
    assert_eq!(simulate::drift_recovery(&never, 301).0, None);
}

#[test]
fn held_out_curves_track_spend_and_variations_pay_for_every_call() {
    let dir = tempfile::tempdir().unwrap();
    let ds = toy(dir.path(), 300);
    let run = |mode| {
        let cfg = SimConfig {
            feedback: mode,
            policies: vec!["dqn".into(), "best-single".into()],
            eval_every: Some(50),
            ..SimConfig::default()
        };
        simulate::simulate(&ds, &cfg, None).unwrap().0
    };
    let bandit = run(FeedbackMode::Bandit);
    let three = run(FeedbackMode::Variations(3));
    let rounds = ds.split("train").len();
    for sim in [&bandit, &three] {
        for r in &sim.results {
            let t = &r.test_curve;
            assert_eq!(t.len(), rounds.div_ceil(50), "{}", r.policy);
            assert!(t
                .windows(2)
                .all(|w| w[0].spent_usd < w[1].spent_usd && w[0].round < w[1].round));
            assert!(t.iter().all(|p| (0.0..=1.0).contains(&p.quality) && p.cost_usd > 0.0));
        }
    }
    // The best single model's greedy choice never changes: its held-out
    // quality is constant, and with three calls a round it spends more.
    let single = |s: &simulate::Simulation| s.results.iter().find(|r| r.policy == "best-single").unwrap().clone();
    let (b, v) = (single(&bandit), single(&three));
    assert!(b.test_curve.windows(2).all(|w| w[0].quality == w[1].quality));
    assert!(v.test_curve.last().unwrap().spent_usd > 2.0 * b.test_curve.last().unwrap().spent_usd);
}

#[test]
fn the_dqn_keeps_learning_past_the_first_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let ds = toy(dir.path(), 100);
    let cfg = SimConfig {
        epochs: 3,
        policies: vec!["dqn".into()],
        ..SimConfig::default()
    };
    let mut dqn = DqnBandit::new(simulate::fresh_dqn(&ds, 1).unwrap(), OperatingPoint::cost(0.5), &cfg).unwrap();
    let feats = featurize_rows(&Featurizer::new(FeatureSpec::default()).unwrap(), &ds.split("train"));
    simulate::run(&ds, &mut [&mut dqn], &feats, None, &cfg, 0.01, |_| Ok(())).unwrap();
    // Every round of every epoch is logged (the same prompt recurs each epoch).
    assert_eq!(dqn.store().len(), 3 * 80);
}
