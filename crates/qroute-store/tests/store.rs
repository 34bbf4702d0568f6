//! Kill-test of the experience store's flush policy: a child process appends
//! decisions (and outcomes) and reports each one only after the store call
//! covering it returned; the parent SIGKILLs it at an arbitrary point and
//! checks that everything reported is on disk, exactly, and still usable.
//!
//! The child is this test binary re-invoked with `QROUTE_STORE_CHILD` set,
//! running only the `child_writer` "test" (which does nothing without it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use qroute_core::features::Features;
use qroute_core::record::{DecisionRecord, Outcome};
use qroute_core::store::{ExperienceStore, Retention, Sampling};
use qroute_store::{SledStore, StoreOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CHILD_ENV: &str = "QROUTE_STORE_CHILD";
const START_ENV: &str = "QROUTE_STORE_CHILD_START";
/// Set for the retention variant: small segments, pruned after every batch.
const RETAIN_ENV: &str = "QROUTE_STORE_CHILD_RETAIN";
/// The retention variant's limits: segments of this many decisions ...
const KILL_SEGMENT: u64 = 100;
/// ... and at least this many newest decisions kept.
const KILL_KEEP: u64 = 500;
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

fn id(i: u64) -> String {
    format!("req-{i}")
}

fn parse_id(s: &str) -> u64 {
    s.strip_prefix("req-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad id {s:?}"))
}

/// The decision with request id `req-{i}`: deterministic in `i`, so the
/// parent can rebuild exactly what the child wrote.
fn record(i: u64) -> DecisionRecord {
    let mut rng = ChaCha8Rng::seed_from_u64(i);
    let nnz = rng.gen_range(20..300);
    let mut indices = rand::seq::index::sample(&mut rng, 8192, nnz)
        .into_iter()
        .map(|x| x as u32)
        .collect::<Vec<_>>();
    indices.sort_unstable();
    let values = (0..nnz).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let mut propensities: Vec<f32> = (0..MODELS.len()).map(|_| rng.gen()).collect();
    let total: f32 = propensities.iter().sum();
    propensities.iter_mut().for_each(|p| *p /= total);
    let k = if i.is_multiple_of(3) { 2 } else { 1 };
    let chosen = rand::seq::index::sample(&mut rng, MODELS.len(), k)
        .into_iter()
        .map(|m| MODELS[m].to_string())
        .collect();
    DecisionRecord {
        request_id: id(i),
        time_ms: 1_700_000_000_000 + i,
        features: Features {
            dim: 8192,
            indices,
            values,
        },
        candidates: MODELS.iter().map(|m| m.to_string()).collect(),
        propensities,
        chosen,
        policy_version: i / 100,
        cost_weight: rng.gen(),
        latency_weight: rng.gen(),
        task: i.is_multiple_of(2).then(|| format!("task/{}", i % 7)),
        experiment: None,
        shadow: None,
    }
}

/// The outcomes the child records for `req-{i}`: one per chosen model.
fn outcomes(i: u64) -> Vec<Outcome> {
    let mut rng = ChaCha8Rng::seed_from_u64(i ^ 0x5eed);
    record(i)
        .chosen
        .into_iter()
        .map(|model| Outcome {
            request_id: id(i),
            model,
            quality: (!i.is_multiple_of(5)).then(|| rng.gen()),
            cost_usd: rng.gen_range(1e-6..1e-2),
            latency_ms: rng.gen_range(50.0..5000.0),
            error: i.is_multiple_of(11).then(|| "upstream 503".to_string()),
            time_ms: 1_700_000_010_000 + i,
            ttft_ms: None,
        })
        .collect()
}

/// Only outcomes of even requests are recorded, so some acked decisions never
/// get one (sampling must skip those).
fn gets_outcome(i: u64) -> bool {
    i.is_multiple_of(2)
}

/// Opens the store, waiting out sled's file lock: sled's background I/O
/// threads can hold it for a moment after the previous handle was dropped.
fn open_store(path: &std::path::Path) -> SledStore {
    open_store_with(path, &StoreOptions::default())
}

fn open_store_with(path: &std::path::Path, options: &StoreOptions) -> SledStore {
    for _ in 0..200 {
        match SledStore::open_with(path, options) {
            Err(e) if e.to_string().contains("could not acquire lock") => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            r => return r.unwrap(),
        }
    }
    SledStore::open_with(path, options).unwrap()
}

fn kill_options() -> StoreOptions {
    StoreOptions {
        segment_decisions: KILL_SEGMENT,
        ..StoreOptions::default()
    }
}

fn kill_retention() -> Retention {
    Retention {
        max_experiences: Some(KILL_KEEP),
        ..Retention::default()
    }
}

/// The child: appends batches forever, reporting `ACK req-N` for each decision
/// once `append_decisions` returned and `OUT req-N` for each request whose
/// outcomes `record_outcomes` stored. Returns at once outside the kill test.
#[test]
fn child_writer() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let start: u64 = std::env::var(START_ENV).unwrap().parse().unwrap();
    let retain = std::env::var_os(RETAIN_ENV).is_some();
    let store = if retain {
        open_store_with(std::path::Path::new(&path), &kill_options())
    } else {
        open_store(std::path::Path::new(&path))
    };
    let mut rng = ChaCha8Rng::seed_from_u64(start);
    let stdout = std::io::stdout();
    let mut next = start;
    let mut previous: Vec<u64> = Vec::new();
    // Bounded so an orphaned child cannot run forever; the parent kills it
    // long before this.
    while next < start + 1_000_000 {
        let k = rng.gen_range(1..=40);
        let batch: Vec<u64> = (next..next + k).collect();
        let recs: Vec<_> = batch.iter().map(|&i| record(i)).collect();
        store.append_decisions(&recs).unwrap();
        let mut out = stdout.lock();
        for &i in &batch {
            if writeln!(out, "ACK {}", id(i)).is_err() {
                return; // the parent is gone
            }
        }
        if out.flush().is_err() {
            return;
        }
        drop(out);

        // Outcomes arrive later than decisions: record the previous batch's.
        let with: Vec<u64> = previous.iter().copied().filter(|&i| gets_outcome(i)).collect();
        let outs: Vec<_> = with.iter().flat_map(|&i| outcomes(i)).collect();
        store.record_outcomes(&outs).unwrap();
        let mut out = stdout.lock();
        for &i in &with {
            if writeln!(out, "OUT {}", id(i)).is_err() {
                return;
            }
        }
        if out.flush().is_err() {
            return;
        }
        drop(out);
        if retain {
            store.apply_retention(&kill_retention(), 0).unwrap();
        }
        previous = batch;
        next += k;
    }
}

#[test]
fn acknowledged_records_survive_sigkill() {
    if std::env::var_os(CHILD_ENV).is_none() {
        kill_test(false);
    }
}

/// The same with small segments and a prune after every batch, so kills
/// also land in the middle of starting a segment and of pruning: what
/// retention kept is exact, what it removed is gone (files included), and
/// the store stays bounded.
#[test]
fn acknowledged_records_survive_sigkill_with_retention() {
    if std::env::var_os(CHILD_ENV).is_none() {
        kill_test(true);
    }
}

fn kill_test(retain: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<u64> = Vec::new();
    let mut with_outcomes: Vec<u64> = Vec::new();
    let mut start = 0u64;

    // When to kill, after the target ack: up to 15 ms later, so the child may
    // be anywhere in its next calls (generating records, the data write, the
    // index commit, a flush, outcomes). Seeded from the clock so that runs
    // cover different points; printed so a failure can be replayed.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("kill delay seed {seed}");
    let mut kill_rng = ChaCha8Rng::seed_from_u64(seed);

    // Several kill/reopen rounds on the same store: recovery must also leave
    // a store that later writers extend correctly.
    for round in 0..6u64 {
        let mut command = Command::new(&exe);
        command
            .args(["child_writer", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .env(START_ENV, start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if retain {
            command.env(RETAIN_ENV, "1");
        }
        let mut child = command.spawn().unwrap();
        // Kept open until the kill: a closed pipe would make the child stop
        // on its own.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let target = 200 + 60 * round as usize;
        let mut round_acks = 0;
        for line in &mut lines {
            let line = line.unwrap();
            if let Some(rid) = line.strip_prefix("ACK ") {
                acked.push(parse_id(rid));
                round_acks += 1;
            } else if let Some(rid) = line.strip_prefix("OUT ") {
                with_outcomes.push(parse_id(rid));
            }
            // Other lines are libtest's own chatter.
            if round_acks >= target {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_micros(kill_rng.gen_range(0..15_000)));
        child.kill().unwrap(); // SIGKILL: no destructors, no final flush
        let status = child.wait().unwrap();
        drop(lines);
        assert!(
            round_acks >= target,
            "round {round}: child ended after {round_acks} acks: {status}"
        );

        let store = if retain {
            open_store_with(&path, &kill_options())
        } else {
            open_store(&path)
        };
        // Request `req-i` is decision `i`: a child re-appends what its
        // predecessor wrote but did not acknowledge as no-ops, and retention
        // never reaches that far forward.
        let first_kept = store.first_kept();
        for &i in &acked {
            let got = store.get(&id(i)).unwrap();
            if i < first_kept {
                assert!(got.is_none(), "round {round}: pruned {} still found", id(i));
                continue;
            }
            let e = got.unwrap_or_else(|| panic!("round {round}: acked {} lost", id(i)));
            assert_eq!(e.decision, record(i), "round {round}: {} differs", id(i));
        }
        if retain {
            // Bounded: the newest KILL_KEEP, plus less than a segment, plus
            // what the last batches added since their prune.
            assert!(
                store.retained() < KILL_KEEP + KILL_SEGMENT + 100,
                "round {round}: {} retained",
                store.retained()
            );
            let files = std::fs::read_dir(&path)
                .unwrap()
                .filter_map(|e| e.unwrap().file_name().into_string().ok())
                .filter(|n| n.starts_with("decisions"))
                .count() as u64;
            assert!(
                files <= store.retained().div_ceil(KILL_SEGMENT) + 1,
                "round {round}: {files} data files for {} decisions",
                store.retained()
            );
        }
        for &i in with_outcomes.iter().filter(|&&i| i >= first_kept) {
            let mut want = outcomes(i);
            want.sort_by(|a, b| a.model.cmp(&b.model));
            assert_eq!(
                store.get(&id(i)).unwrap().unwrap().outcomes,
                want,
                "round {round}: outcomes of {}",
                id(i)
            );
        }
        // At least the acked ones; possibly a batch that was written but not
        // yet acknowledged when the kill came.
        assert!(store.len() >= acked.len(), "round {round}");
        assert_eq!(store.retained(), store.len() as u64 - first_kept);

        // Insertion order holds, every entry decodes, no sequence gaps.
        let mut count = 0;
        let mut last = None;
        for e in store.iter_from(0) {
            let i = parse_id(&e.unwrap().decision.request_id);
            assert!(last < Some(i), "round {round}: order {last:?} then {i}");
            assert!(i >= first_kept, "round {round}: pruned {i} iterated");
            last = Some(i);
            count += 1;
        }
        assert_eq!(count as u64, store.retained(), "round {round}");

        // Sampling still works and returns exact, rewarded experiences.
        let mut rng = ChaCha8Rng::seed_from_u64(round);
        for how in [Sampling::Uniform, Sampling::Recent { half_life: 50 }] {
            let got = store.sample(200, &how, &mut rng).unwrap();
            assert_eq!(got.len(), 200, "round {round}: {how:?}");
            for e in got {
                let i = parse_id(&e.decision.request_id);
                assert!(gets_outcome(i));
                assert!(i >= first_kept);
                assert_eq!(e.decision, record(i));
                assert_eq!(e.outcomes.len(), e.decision.chosen.len());
            }
        }
        // The next child starts right after the last acked id; ids it
        // re-appends that were written but not acked are identical, which the
        // store accepts as no-ops.
        start = acked.iter().max().unwrap() + 1;
        drop(store);
    }
}

/// Bytes of every file under `dir`.
fn disk_usage(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let meta = e.metadata().unwrap();
        total += if meta.is_dir() {
            disk_usage(&e.path())
        } else {
            meta.len()
        };
    }
    total
}

/// A server's long write loop with `[store.retention]`: decisions with
/// outcomes and answers, a prune every 1000 appended. The store's size on
/// disk levels off instead of growing with the loop.
#[test]
fn retention_keeps_the_store_bounded_under_a_long_write_loop() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    const TOTAL: u64 = 20_000;
    const KEEP: u64 = 2_000;
    const BATCH: u64 = 50;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    const SEGMENT: u64 = 200;
    let options = StoreOptions {
        segment_decisions: SEGMENT,
        ..StoreOptions::default()
    };
    let store = SledStore::open_with(&path, &options).unwrap();
    let keep = Retention {
        max_experiences: Some(KEEP),
        ..Retention::default()
    };
    let mut sizes = Vec::new();
    let mut max_retained = 0;
    let mut next = 0;
    while next < TOTAL {
        let batch: Vec<u64> = (next..next + BATCH).collect();
        store
            .append_decisions(&batch.iter().map(|&i| record(i)).collect::<Vec<_>>())
            .unwrap();
        store
            .record_outcomes(&batch.iter().flat_map(|&i| outcomes(i)).collect::<Vec<_>>())
            .unwrap();
        store
            .record_answers(
                &batch
                    .iter()
                    .map(|&i| qroute_core::record::Answered {
                        request_id: id(i),
                        decision_id: id(i),
                        model: record(i).chosen[0].clone(),
                        time_ms: record(i).time_ms,
                        key_id: None,
                    })
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        next += BATCH;
        if next.is_multiple_of(1000) {
            let pruned = store.apply_retention(&keep, record(next - 1).time_ms).unwrap();
            assert_eq!(pruned.first_kept, store.first_kept());
            assert_eq!(store.len() as u64, next);
            assert_eq!(store.retained(), next - store.first_kept());
            if next > KEEP {
                // At least the newest KEEP, and less than a segment more.
                assert!(store.retained() >= KEEP, "{next}: {}", store.retained());
                assert!(store.retained() < KEEP + SEGMENT, "{next}: {}", store.retained());
            }
            max_retained = max_retained.max(store.retained());
            store.flush().unwrap();
            sizes.push((next, disk_usage(&path)));
        }
    }
    // Sizes once retention is in force (the first prune is due at 3000) up
    // to the end of the loop, which wrote 20000 decisions (about 36 MB).
    let steady = sizes.iter().find(|&&(n, _)| n == 3000).unwrap().1;
    let last = sizes.last().unwrap().1;
    let peak = sizes.iter().map(|&(_, b)| b).max().unwrap();
    println!("store size on disk (decisions appended, bytes): {sizes:?}; max retained {max_retained}");
    assert!(last < 2 * steady, "grew from {steady} to {last} bytes: {sizes:?}");
    assert!(peak < 3 * steady, "peak {peak} bytes vs {steady}: {sizes:?}");
    let t = store.truncation().unwrap().unwrap();
    assert_eq!(t.removed, store.first_kept());
    assert_eq!(t.first_kept, store.first_kept());
    assert!(t.pruned_before_ms < record(store.first_kept()).time_ms);
    assert!(store.get(&id(0)).unwrap().is_none());
    assert!(store.answered(&id(0)).unwrap().is_none());
    assert_eq!(store.get(&id(TOTAL - 1)).unwrap().unwrap().decision, record(TOTAL - 1));
    assert_eq!(store.iter_from(0).count() as u64, store.retained());
}
