//! Experience store throughput: batched and single-record appends (each call
//! is one fsync), the joins of outcomes and answers to fresh decisions, sampling from a ~20k-record store, and the record encoding.
//!
//! `cargo bench --bench store -- --warm-up-time 1 --measurement-time 3`

// A bench is a harness like a test: it may unwrap and print.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{black_box, criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use qroute_core::features::Features;
use qroute_core::record::{Answered, DecisionRecord, Outcome};
use qroute_core::store::{ExperienceStore, Sampling};
use qroute_store::SledStore;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DIM: u32 = 8192;
const NNZ: usize = 300;
const MODELS: [&str; 11] = [
    "gpt-4o",
    "gpt-4o-mini",
    "claude-3-5-sonnet",
    "claude-3-haiku",
    "llama-3.1-405b",
    "llama-3.1-70b",
    "llama-3.1-8b",
    "mixtral-8x22b",
    "mistral-7b",
    "qwen-2.5-72b",
    "gemma-2-9b",
];

/// A realistic decision: ~300 non-zeros out of 8192, 11 candidates.
fn record(i: u64) -> DecisionRecord {
    let mut rng = ChaCha8Rng::seed_from_u64(i);
    let mut indices: Vec<u32> = rand::seq::index::sample(&mut rng, DIM as usize, NNZ)
        .into_iter()
        .map(|x| x as u32)
        .collect();
    indices.sort_unstable();
    let values = (0..NNZ).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let mut propensities: Vec<f32> = (0..MODELS.len()).map(|_| rng.gen()).collect();
    let total: f32 = propensities.iter().sum();
    propensities.iter_mut().for_each(|p| *p /= total);
    DecisionRecord {
        request_id: format!("req-{i:08}-{:016x}", rng.gen::<u64>()),
        time_ms: 1_700_000_000_000 + i,
        features: Features {
            dim: DIM,
            indices,
            values,
        },
        candidates: MODELS.iter().map(|m| m.to_string()).collect(),
        propensities,
        chosen: vec![MODELS[(i % 11) as usize].to_string()],
        policy_version: 3,
        cost_weight: 0.4,
        latency_weight: 0.01,
        task: Some("mmlu/anatomy".into()),
        experiment: None,
        shadow: None,
    }
}

fn outcome(r: &DecisionRecord) -> Outcome {
    Outcome {
        request_id: r.request_id.clone(),
        model: r.chosen[0].clone(),
        quality: Some(0.8),
        cost_usd: 2.5e-4,
        latency_ms: 840.0,
        error: None,
        time_ms: r.time_ms + 900,
        ttft_ms: None,
    }
}

fn answered(r: &DecisionRecord) -> Answered {
    Answered {
        request_id: r.request_id.clone(),
        decision_id: r.request_id.clone(),
        model: r.chosen[0].clone(),
        time_ms: r.time_ms + 900,
        key_id: None,
    }
}

/// Records with fresh ids for each call (ids must be unique in a store).
fn fresh(counter: &AtomicU64, template: &[DecisionRecord]) -> Vec<DecisionRecord> {
    template
        .iter()
        .map(|r| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let mut r = r.clone();
            r.request_id = format!("req-{n:010}");
            r
        })
        .collect()
}

fn appends(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path().join("store")).unwrap();
    let counter = AtomicU64::new(0);
    let template: Vec<_> = (0..1000).map(record).collect();

    let mut g = c.benchmark_group("store_append");
    g.sampling_mode(SamplingMode::Flat).sample_size(10);
    g.throughput(Throughput::Elements(1000));
    g.bench_function("batched_1000", |b| {
        b.iter_batched(
            || fresh(&counter, &template),
            |recs| store.append_decisions(&recs).unwrap(),
            criterion::BatchSize::PerIteration,
        )
    });
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g.bench_function("single", |b| {
        b.iter_batched(
            || fresh(&counter, &template[..1]),
            |recs| store.append_decisions(&recs).unwrap(),
            criterion::BatchSize::PerIteration,
        )
    });
    g.throughput(Throughput::Elements(1000));
    g.sample_size(10);
    g.bench_function("outcomes_1000", |b| {
        b.iter_batched(
            || {
                let recs = fresh(&counter, &template);
                store.append_decisions(&recs).unwrap();
                recs.iter().map(outcome).collect::<Vec<_>>()
            },
            |outs| store.record_outcomes(&outs).unwrap(),
            criterion::BatchSize::PerIteration,
        )
    });
    // What the gateway's writer does for each request once its decision is
    // appended: join the outcome and the answer record (unsynced, as the
    // writer leaves them to the next flush).
    g.bench_function("joins_1000", |b| {
        b.iter_batched(
            || {
                let recs = fresh(&counter, &template);
                store.append_decisions(&recs).unwrap();
                recs
            },
            |recs| {
                store
                    .record_outcomes_unsynced(&recs.iter().map(outcome).collect::<Vec<_>>())
                    .unwrap();
                store
                    .record_answers(&recs.iter().map(answered).collect::<Vec<_>>())
                    .unwrap();
            },
            criterion::BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn sampling(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path().join("store")).unwrap();
    for chunk in 0..20u64 {
        let recs: Vec<_> = (chunk * 1000..(chunk + 1) * 1000).map(record).collect();
        store.append_decisions(&recs).unwrap();
        let outs: Vec<_> = recs.iter().map(outcome).collect();
        store.record_outcomes(&outs).unwrap();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut g = c.benchmark_group("store_sample_20k");
    g.throughput(Throughput::Elements(64));
    g.bench_function("recent_64", |b| {
        b.iter(|| {
            store
                .sample(64, &Sampling::Recent { half_life: 2000 }, &mut rng)
                .unwrap()
        })
    });
    g.bench_function("uniform_64", |b| {
        b.iter(|| store.sample(64, &Sampling::Uniform, &mut rng).unwrap())
    });
    g.finish();
}

/// serde_json encode/decode of one realistic decision, for comparison with
/// `store_get` (an index probe, a read of the data file and a decode in the
/// store's binary format, which is private to the crate, plus the outcome
/// scan in sled). Prints the JSON size.
fn encoding(c: &mut Criterion) {
    let r = record(1);
    let json = serde_json::to_vec(&r).unwrap();
    eprintln!("decision record as JSON: {} bytes", json.len());
    let mut g = c.benchmark_group("store_encoding");
    g.bench_function("json_encode", |b| b.iter(|| serde_json::to_vec(black_box(&r)).unwrap()));
    g.bench_function("json_decode", |b| {
        b.iter(|| serde_json::from_slice::<DecisionRecord>(black_box(&json)).unwrap())
    });
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path().join("store")).unwrap();
    store.append_decisions(std::slice::from_ref(&r)).unwrap();
    g.bench_function("store_get", |b| {
        b.iter(|| store.get(black_box(&r.request_id)).unwrap().unwrap())
    });
    g.finish();
}

criterion_group!(benches, appends, sampling, encoding);
criterion_main!(benches);
