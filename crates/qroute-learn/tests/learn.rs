//! The online trainer learns from the sled store in the background and
//! publishes new versions that serving picks up without waiting.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use qroute_core::catalog::{Catalog, ModelCard};
use qroute_core::features::{FeatureSpec, Featurizer, RequestContext};
use qroute_core::policy::network::Network;
use qroute_core::policy::{DqnPolicy, OperatingPoint, Scales};
use qroute_core::record::{DecisionRecord, Outcome};
use qroute_core::store::{ExperienceStore, Sampling};
use qroute_learn::online::{OnlineConfig, OnlineTrainer};
use qroute_learn::{Learner, LearnerConfig};
use qroute_store::SledStore;
use rand::SeedableRng;

fn policy() -> DqnPolicy {
    let spec = FeatureSpec {
        dim: 1024,
        ..FeatureSpec::default()
    };
    let card = |id: &str| ModelCard {
        id: id.into(),
        cost_per_char_usd: 0.0,
        base_cost_usd: 0.001,
        mean_cost_usd: 0.001,
        mean_latency_ms: None,
        tags: vec![],
    };
    let catalog = Catalog {
        models: vec![card("mathematician"), card("poet")],
    };
    let scales = Scales {
        cost_usd: 0.001,
        latency_ms: 1000.0,
    };
    let net = Network::new(
        DqnPolicy::arch_for(&spec),
        &mut rand_chacha::ChaCha8Rng::seed_from_u64(3),
    );
    DqnPolicy::new(1, net, catalog, spec, scales, vec![]).unwrap()
}

const MATH: [&str; 4] = [
    "solve the equation for x",
    "compute the integral of x squared",
    "what is the derivative of sin x",
    "prove the sum of two even numbers is even",
];
const POEMS: [&str; 4] = [
    "write a sonnet about the sea",
    "compose a haiku about autumn leaves",
    "a short poem about love and loss",
    "write verses about the moon at night",
];

/// Logs bandit feedback: each prompt ran one model; the mathematician is
/// right on math and wrong on poems, the poet the other way round.
fn fill(store: &SledStore, fz: &Featurizer) {
    let mut decisions = Vec::new();
    let mut outcomes = Vec::new();
    for i in 0..400 {
        let math = i % 2 == 0;
        let prompt = if math { MATH[i / 2 % 4] } else { POEMS[i / 2 % 4] };
        let model = if i % 4 < 2 { "mathematician" } else { "poet" };
        let good = (model == "mathematician") == math;
        let id = format!("req-{i}");
        decisions.push(DecisionRecord {
            request_id: id.clone(),
            time_ms: i as u64,
            features: fz.featurize(&RequestContext {
                prompt,
                ..Default::default()
            }),
            candidates: vec!["mathematician".into(), "poet".into()],
            propensities: vec![0.5, 0.5],
            chosen: vec![model.into()],
            policy_version: 1,
            cost_weight: 0.0,
            latency_weight: 0.0,
            task: None,
            experiment: None,
            shadow: None,
        });
        outcomes.push(Outcome {
            request_id: id,
            model: model.into(),
            quality: Some(if good { 1.0 } else { 0.0 }),
            cost_usd: 0.001,
            latency_ms: 100.0,
            error: None,
            time_ms: i as u64,
            ttft_ms: None,
        });
    }
    store.append_decisions(&decisions).unwrap();
    store.record_outcomes(&outcomes).unwrap();
}

fn prefers(p: &DqnPolicy, fz: &Featurizer, prompt: &str) -> String {
    let x = fz.featurize(&RequestContext {
        prompt,
        ..Default::default()
    });
    let cards: Vec<&ModelCard> = p.catalog.models.iter().collect();
    let s = p.scores(&x, &cards, OperatingPoint::cost(0.0)).unwrap();
    cards[if s[0] >= s[1] { 0 } else { 1 }].id.clone()
}

#[test]
fn trainer_learns_from_the_store_and_publishes_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path().join("store")).unwrap());
    let p = policy();
    let fz = Featurizer::new(p.spec.clone()).unwrap();
    fill(&store, &fz);

    let cfg = LearnerConfig {
        lr: 3e-3,
        ..LearnerConfig::default()
    };
    let learner = Learner::new(p, cfg, 7);
    let trainer = OnlineTrainer::spawn(
        store.clone(),
        learner,
        OnlineConfig {
            batch: 32,
            sampling: Sampling::Uniform,
            publish_every: 10,
            ..OnlineConfig::default()
        },
    )
    .unwrap();
    let current = trainer.current();
    assert_eq!(current.load().version, 1);

    // Serving keeps reading while the trainer works; versions only go up.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last_seen = 1;
    while current.load().version < 40 {
        let v = current.load().version;
        assert!(v >= last_seen, "version went back from {last_seen} to {v}");
        last_seen = v;
        assert!(Instant::now() < deadline, "trainer published only up to version {v}");
        std::thread::yield_now();
    }
    let served = trainer.policy();
    for prompt in MATH {
        assert_eq!(prefers(&served, &fz, prompt), "mathematician", "{prompt}");
    }
    for prompt in POEMS {
        assert_eq!(prefers(&served, &fz, prompt), "poet", "{prompt}");
    }
    let steps = trainer.stats().steps.load(std::sync::atomic::Ordering::Relaxed);
    let learner = trainer.stop().unwrap();
    assert!(learner.steps() >= steps);
    assert!(steps >= 390);
}

#[test]
fn trainer_idles_on_an_empty_store_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path().join("store")).unwrap());
    let trainer = OnlineTrainer::spawn(
        store,
        Learner::new(policy(), LearnerConfig::default(), 1),
        OnlineConfig::default(),
    )
    .unwrap();
    trainer.notify();
    assert_eq!(trainer.policy().version, 1);
    let learner = trainer.stop().unwrap();
    assert_eq!(learner.steps(), 0);
}

/// A rollback registered while the trainer keeps publishing in memory (its
/// serving number soon passes the rollback's) is still adopted: the trainer
/// trains on from the rolled-back version, and serves it under a number
/// above every one it used.
#[test]
fn a_rollback_is_adopted_even_after_the_trainer_published_past_its_number() {
    use qroute_learn::online::Checkpoints;
    use qroute_learn::registry::{Lineage, Registry};

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path().join("store")).unwrap());
    let mut p = policy();
    let fz = Featurizer::new(p.spec.clone()).unwrap();
    fill(&store, &fz);
    let registry = Registry::open(dir.path().join("policies")).unwrap();
    p.version = registry.allocate(1).unwrap();
    let lineage = Lineage {
        parent: None,
        base: qroute_learn::registry::fingerprint(&p),
        source: "base".into(),
        steps: 0,
        experiences: 0,
        created_ms: 0,
        writer: "test".into(),
    };
    registry.save(&p, &lineage).unwrap();
    let trainer = OnlineTrainer::spawn(
        store,
        Learner::new(p, LearnerConfig::default(), 3),
        OnlineConfig {
            batch: 16,
            publish_every: 1,
            checkpoints: Some(Checkpoints {
                registry: registry.clone(),
                // No checkpoint of its own until it stops.
                every: Duration::from_secs(3600),
                keep: 100,
                lineage,
            }),
            ..OnlineConfig::default()
        },
    )
    .unwrap();
    while trainer.policy().version < 5 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let rollback = registry.rollback(1, "operator").unwrap().version;
    // Let the trainer publish past the rollback's number, and poll.
    let deadline = Instant::now() + Duration::from_secs(30);
    while trainer.policy().version < rollback + 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(600));
    trainer.stop().unwrap();
    let last = registry.latest().unwrap().unwrap();
    assert!(last > rollback);
    let lineage = registry.entry(last).unwrap().lineage.unwrap();
    assert_eq!(lineage.parent, Some(rollback), "the trainer went on from the rollback");
}
