//! The engine's hot paths: one routing decision (featurize + score +
//! explore) and one training step.

// A bench is a harness like a test: it may unwrap and print.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use qroute_core::catalog::{Catalog, ModelCard};
use qroute_core::dataset::Dataset;
use qroute_core::features::{FeatureSpec, Features, Featurizer, RequestContext};
use qroute_core::policy::network::Network;
use qroute_core::policy::{DqnPolicy, Exploration, Explorer, OperatingPoint, Scales};
use qroute_learn::grad::Batch;
use qroute_learn::{Learner, LearnerConfig, Observation};

const PROMPT: &str = "A 45-year-old man presents with crushing chest pain radiating to his left arm, \
diaphoresis and shortness of breath that began two hours ago while shovelling snow. His ECG shows \
ST elevation in leads II, III and aVF. Which coronary artery is most likely occluded?\n\
A. Left anterior descending artery\nB. Left circumflex artery\nC. Right coronary artery\n\
D. Left main coronary artery\nAnswer:";

fn catalog(n: usize) -> Catalog {
    Catalog {
        models: (0..n)
            .map(|i| ModelCard {
                id: format!("model-{i}"),
                cost_per_char_usd: 1e-7 * (i + 1) as f64,
                base_cost_usd: 1e-5 * (i + 1) as f64,
                mean_cost_usd: 1e-4 * (i + 1) as f64,
                mean_latency_ms: Some(200.0 + 50.0 * i as f64),
                tags: vec![if i % 2 == 0 { "open-weights" } else { "api" }.into()],
            })
            .collect(),
    }
}

fn policy(n: usize) -> DqnPolicy {
    let spec = FeatureSpec::default();
    let cat = catalog(n);
    let scales = Scales {
        cost_usd: cat.cost_scale(),
        latency_ms: cat.latency_scale(),
    };
    let net = Network::new(DqnPolicy::arch_for(&spec), &mut ChaCha8Rng::seed_from_u64(1));
    DqnPolicy::new(1, net, cat, spec, scales, vec![]).unwrap()
}

fn decision(c: &mut Criterion) {
    let mut g = c.benchmark_group("decision");
    let point = OperatingPoint {
        cost_weight: 0.3,
        latency_weight: 0.05,
    };
    for n in [2usize, 11, 16] {
        let p = policy(n);
        let fz = Featurizer::new(p.spec.clone()).unwrap();
        let cards: Vec<&ModelCard> = p.catalog.models.iter().collect();
        let explorer = Explorer::new(Exploration::default(), 0.005, None);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        g.bench_with_input(BenchmarkId::new("featurize_score_explore", n), &n, |b, _| {
            b.iter(|| {
                let x = fz.featurize(&RequestContext {
                    prompt: black_box(PROMPT),
                    task_type: Some("mmlu/clinical_knowledge"),
                    persona: Some("clinician"),
                    metadata: &[],
                });
                let scores = p.scores(&x, &cards, point).unwrap();
                explorer.choose(&scores, &mut rng)
            })
        });
    }
    let p = policy(16);
    let fz = Featurizer::new(p.spec.clone()).unwrap();
    g.bench_function("featurize_only", |b| {
        b.iter(|| {
            fz.featurize(&RequestContext {
                prompt: black_box(PROMPT),
                task_type: Some("mmlu/clinical_knowledge"),
                ..Default::default()
            })
        })
    });
    g.finish();
}

fn training_step(c: &mut Criterion) {
    let p = policy(11);
    let fz = Featurizer::new(p.spec.clone()).unwrap();
    // 64 real, different prompts spread over the bundled dataset, one
    // observed outcome each (bandit feedback): every context touches its
    // own sparse rows, as in production.
    let ds = Dataset::load(concat!(env!("CARGO_MANIFEST_DIR"), "/data/routellm_mmlu_gsm8k.jsonl")).unwrap();
    let step = ds.rows.len() / 64;
    let feats: Vec<Features> = (0..64)
        .map(|i| {
            let row = &ds.rows[i * step];
            fz.featurize(&RequestContext {
                prompt: &row.prompt,
                task_type: Some(&row.task),
                ..Default::default()
            })
        })
        .collect();
    let mut learner = Learner::new(p, LearnerConfig::default(), 3);
    let cards = learner.policy().catalog.models.clone();
    let items: Vec<_> = feats
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let obs = Observation {
                quality: Some((i % 2) as f32),
                cost_usd: 1e-4 * (i % 5 + 1) as f64,
                latency_ms: Some(300.0),
            };
            learner.item(i, x, &cards[i % cards.len()], &obs, 1.0)
        })
        .collect();
    let batch = Batch {
        contexts: feats.iter().collect(),
        items,
    };
    let mut g = c.benchmark_group("train");
    g.throughput(Throughput::Elements(64));
    g.bench_function("step_batch_64", |b| b.iter(|| learner.step(black_box(&batch))));
    g.finish();
}

criterion_group!(benches, decision, training_step);
criterion_main!(benches);
