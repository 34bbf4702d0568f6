//! The experience store's contract, run against both backends: the sled
//! store and the PostgreSQL store (on this machine's PostgreSQL, in a schema
//! of its own per test, dropped afterwards). Behaviour that only one backend
//! has (sled's segments and kill recovery) is tested beside that backend.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;

use qroute_core::features::Features;
use qroute_core::record::{Answered, DecisionRecord, Experience, Feedback, Outcome};
use qroute_core::store::{Documents, ExperienceStore, Retention, Sampling};
use qroute_core::testing::{ensure_postgres, unique_schema};
use qroute_core::Error;
use qroute_store::{PgStore, SledStore, StoreOptions};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[derive(Clone, Copy)]
enum Backend {
    Sled,
    Postgres,
}

/// Keeps a test's store alive and removes it afterwards.
enum Guard {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Schema(String),
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::Schema(schema) = self {
            let _ = std::process::Command::new("psql")
                .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc"])
                .arg(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .output();
        }
    }
}

impl Backend {
    fn open(self) -> (Guard, Box<dyn ExperienceStore>) {
        match self {
            Backend::Sled => {
                let dir = tempfile::tempdir().unwrap();
                // Small segments, so retention (which drops whole segments)
                // has something to drop at test sizes.
                let options = StoreOptions {
                    segment_decisions: 100,
                    ..StoreOptions::default()
                };
                let s = SledStore::open_with(dir.path().join("store"), &options).unwrap();
                (Guard::Dir(dir), Box::new(s))
            }
            Backend::Postgres => {
                let schema = unique_schema("contract");
                let url = format!("{}?schema={schema}", ensure_postgres());
                let s = PgStore::open(&url).unwrap();
                (Guard::Schema(schema), Box::new(s))
            }
        }
    }
}

/// Each contract test, once per backend.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sled {
            $(#[test] fn $name() { super::$name(super::Backend::Sled) })*
        }
        mod postgres {
            $(#[test] fn $name() { super::$name(super::Backend::Postgres) })*
        }
    };
}

contract!(
    round_trip,
    outcomes_join_to_their_decision,
    a_second_outcome_replaces_the_first,
    unknown_request_id_is_not_found_and_writes_nothing,
    bad_input_is_rejected_whole,
    sampling_returns_only_experiences_with_outcomes,
    recent_sampling_favours_new_records,
    uniform_sampling_covers_the_range,
    concurrent_appends_number_densely,
    answers_and_feedback_join,
    late_feedback_is_kept_but_not_applied,
    sampling_sees_every_later_write,
    documents_round_trip_in_key_order,
    retention_by_count_removes_the_oldest,
    unsynced_outcomes_are_durable_after_the_next_append,
);

fn rec(i: u64) -> DecisionRecord {
    DecisionRecord {
        request_id: format!("req-{i}"),
        time_ms: 1_700_000_000_000 + i,
        features: Features {
            dim: 64,
            indices: vec![1, (i % 60) as u32 + 2],
            values: vec![0.5, i as f32],
        },
        candidates: vec!["a".into(), "b".into(), "c".into()],
        propensities: vec![0.5, 0.25, 0.25],
        chosen: vec!["a".into(), "c".into()],
        policy_version: 7,
        cost_weight: 0.1,
        latency_weight: 0.01,
        task: i.is_multiple_of(2).then(|| "mmlu/anatomy".to_string()),
        experiment: None,
        shadow: None,
    }
}

fn out(i: u64, model: &str, q: f32) -> Outcome {
    Outcome {
        request_id: format!("req-{i}"),
        model: model.into(),
        quality: Some(q),
        cost_usd: 1e-4,
        latency_ms: 120.0,
        error: None,
        time_ms: 1_700_000_001_000 + i,
        ttft_ms: None,
    }
}

fn seq_of(e: &Experience) -> u64 {
    e.decision.request_id[4..].parse().unwrap()
}

fn rewarded_store(b: Backend, n: u64) -> (Guard, Box<dyn ExperienceStore>) {
    let (g, s) = b.open();
    let recs: Vec<_> = (0..n).map(rec).collect();
    s.append_decisions(&recs).unwrap();
    let outs: Vec<_> = (0..n).map(|i| out(i, "a", 1.0)).collect();
    s.record_outcomes(&outs).unwrap();
    (g, s)
}

fn answered(i: u64, time_ms: u64) -> Answered {
    Answered {
        request_id: format!("req-{i}"),
        decision_id: format!("req-{i}"),
        model: "a".into(),
        time_ms,
        key_id: None,
    }
}

fn feedback(q: f32, time_ms: u64) -> Feedback {
    Feedback {
        quality: q,
        kind: "quality".into(),
        value: f64::from(q),
        time_ms,
    }
}

fn round_trip(b: Backend) {
    let (_g, s) = b.open();
    assert!(s.is_empty());
    let recs: Vec<_> = (0..10).map(rec).collect();
    s.append_decisions(&recs).unwrap();
    assert_eq!(s.len(), 10);
    for r in &recs {
        let e = s.get(&r.request_id).unwrap().unwrap();
        assert_eq!(&e.decision, r);
        assert!(e.outcomes.is_empty());
    }
    assert!(s.get("req-10").unwrap().is_none());
    assert!(s.get("").unwrap().is_none());
    let all: Vec<_> = s.iter_from(0).map(|e| e.unwrap().decision).collect();
    assert_eq!(all, recs);
}

fn outcomes_join_to_their_decision(b: Backend) {
    let (_g, s) = b.open();
    s.append_decisions(&[rec(0), rec(1)]).unwrap();
    s.record_outcomes(&[out(1, "c", 0.5), out(1, "a", 1.0)]).unwrap();
    let e = s.get("req-1").unwrap().unwrap();
    assert_eq!(e.decision, rec(1));
    assert_eq!(e.outcomes, vec![out(1, "a", 1.0), out(1, "c", 0.5)]);
    assert!(s.get("req-0").unwrap().unwrap().outcomes.is_empty());
}

fn a_second_outcome_replaces_the_first(b: Backend) {
    let (_g, s) = b.open();
    s.append_decisions(&[rec(0)]).unwrap();
    s.record_outcomes(&[out(0, "a", 0.0)]).unwrap();
    let mut later = out(0, "a", 0.9);
    later.error = Some("judge retried".into());
    s.record_outcomes(&[later.clone()]).unwrap();
    assert_eq!(s.get("req-0").unwrap().unwrap().outcomes, vec![later]);
    // Within one call the later one wins.
    s.record_outcomes(&[out(0, "c", 0.1), out(0, "c", 0.2)]).unwrap();
    assert_eq!(s.get("req-0").unwrap().unwrap().outcomes[1], out(0, "c", 0.2));
}

fn unknown_request_id_is_not_found_and_writes_nothing(b: Backend) {
    let (_g, s) = b.open();
    s.append_decisions(&[rec(0)]).unwrap();
    let err = s.record_outcomes(&[out(0, "a", 1.0), out(5, "a", 1.0)]).unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err}");
    assert_eq!(err.http_status(), 404);
    assert!(s.get("req-0").unwrap().unwrap().outcomes.is_empty());
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    assert!(s.sample(4, &Sampling::Uniform, &mut rng).unwrap().is_empty());
}

fn bad_input_is_rejected_whole(b: Backend) {
    let (_g, s) = b.open();
    let mut bad = rec(1);
    bad.propensities.pop();
    assert!(matches!(
        s.append_decisions(&[rec(0), bad]),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        s.append_decisions(&[rec(2), rec(2)]),
        Err(Error::InvalidInput(_))
    ));
    let mut nul = rec(3);
    nul.request_id = "a\0b".into();
    assert!(matches!(s.append_decisions(&[nul]), Err(Error::InvalidInput(_))));
    assert!(s.is_empty());
    assert!(s.get("req-0").unwrap().is_none());

    s.append_decisions(&[rec(0)]).unwrap();
    // Same record again: an idempotent retry, no new sequence number.
    s.append_decisions(&[rec(0), rec(1)]).unwrap();
    assert_eq!(s.len(), 2);
    let mut changed = rec(0);
    changed.policy_version += 1;
    assert!(matches!(s.append_decisions(&[changed]), Err(Error::InvalidInput(_))));
    assert_eq!(s.get("req-0").unwrap().unwrap().decision, rec(0));

    // A model that was not chosen, or a quality outside [0, 1].
    assert!(matches!(
        s.record_outcomes(&[out(0, "b", 1.0)]),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        s.record_outcomes(&[out(0, "a", 1.5)]),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        s.record_outcomes(&[out(0, "a", f32::NAN)]),
        Err(Error::InvalidInput(_))
    ));
    assert!(s.get("req-0").unwrap().unwrap().outcomes.is_empty());
}

fn sampling_returns_only_experiences_with_outcomes(b: Backend) {
    let (_g, s) = b.open();
    let recs: Vec<_> = (0..200).map(rec).collect();
    s.append_decisions(&recs).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    assert!(s.sample(10, &Sampling::Uniform, &mut rng).unwrap().is_empty());
    assert!(s
        .sample(10, &Sampling::Recent { half_life: 5 }, &mut rng)
        .unwrap()
        .is_empty());

    let with: Vec<u64> = (0..200).step_by(20).collect();
    let outs: Vec<_> = with.iter().map(|&i| out(i, "a", 0.5)).collect();
    s.record_outcomes(&outs).unwrap();
    for how in [Sampling::Uniform, Sampling::Recent { half_life: 3 }] {
        let got = s.sample(500, &how, &mut rng).unwrap();
        assert_eq!(got.len(), 500);
        let mut seen = HashSet::new();
        for e in &got {
            assert!(!e.outcomes.is_empty());
            assert!(with.contains(&seq_of(e)));
            assert_eq!(e.decision, rec(seq_of(e)));
            seen.insert(seq_of(e));
        }
        assert_eq!(seen.len(), with.len(), "{how:?}");
    }
    assert!(s.sample(0, &Sampling::Uniform, &mut rng).unwrap().is_empty());
}

fn recent_sampling_favours_new_records(b: Backend) {
    let n = 5000u64;
    let (_g, s) = rewarded_store(b, n);
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let half_life = 250;
    let ages = |how: Sampling, rng: &mut ChaCha8Rng| -> Vec<u64> {
        let mut a: Vec<u64> = s
            .sample(4000, &how, rng)
            .unwrap()
            .iter()
            .map(|e| n - 1 - seq_of(e))
            .collect();
        a.sort_unstable();
        a
    };
    let recent = ages(Sampling::Recent { half_life }, &mut rng);
    let median = recent[recent.len() / 2];
    // The median of the age distribution is the half-life.
    assert!((200..=300).contains(&median), "median age {median}");
    let young = recent.iter().filter(|&&a| a < 4 * half_life as u64).count();
    // P(age < 4 half-lives) = 15/16.
    assert!(young as f64 / recent.len() as f64 > 0.9, "{young}");
    let uniform = ages(Sampling::Uniform, &mut rng);
    let umedian = uniform[uniform.len() / 2];
    assert!((2000..=3000).contains(&umedian), "uniform median age {umedian}");

    // A half-life far longer than the store: nearly uniform, and no
    // sample outside the store (truncation, not rejection).
    let long = ages(Sampling::Recent { half_life: 1_000_000 }, &mut rng);
    assert!(long.iter().all(|&a| a < n));
    let lmedian = long[long.len() / 2];
    assert!((2000..=3000).contains(&lmedian), "long half-life median {lmedian}");
    // Half-life 0: always the newest.
    let zero = ages(Sampling::Recent { half_life: 0 }, &mut rng);
    assert!(zero.iter().all(|&a| a == 0));
}

fn uniform_sampling_covers_the_range(b: Backend) {
    let n = 1000u64;
    let (_g, s) = rewarded_store(b, n);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let draws = 20_000;
    let got = s.sample(draws, &Sampling::Uniform, &mut rng).unwrap();
    assert_eq!(got.len(), draws);
    let mut deciles = [0usize; 10];
    let mut seen = HashSet::new();
    for e in &got {
        let i = seq_of(e);
        deciles[(i * 10 / n) as usize] += 1;
        seen.insert(i);
    }
    // Every record is hit with probability 1 - e^-20.
    assert_eq!(seen.len(), n as usize);
    for (d, &c) in deciles.iter().enumerate() {
        assert!((1700..=2300).contains(&c), "decile {d}: {c} of {draws}");
    }
}

fn concurrent_appends_number_densely(b: Backend) {
    let (_g, s) = b.open();
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let s = &s;
            scope.spawn(move || {
                for b in 0..5u64 {
                    let base = t * 1000 + b * 10;
                    s.append_decisions(&(base..base + 10).map(rec).collect::<Vec<_>>())
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(s.len(), 200);
    // Dense, every decision readable, each thread's batches in order.
    let ids: Vec<u64> = s.iter_from(0).map(|e| seq_of(&e.unwrap())).collect();
    assert_eq!(ids.len(), 200);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 200);
    for t in 0..4u64 {
        let mine: Vec<u64> = ids.iter().copied().filter(|i| i / 1000 == t).collect();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "thread {t}: {mine:?}");
    }
    // iter_from starts at a sequence number.
    assert_eq!(s.iter_from(150).count(), 50);
}

fn answers_and_feedback_join(b: Backend) {
    let (_g, s) = b.open();
    s.append_decisions(&[rec(0), rec(1)]).unwrap();
    s.record_outcomes(&[out(0, "a", 0.2), out(1, "a", 0.2)]).unwrap();
    let t = rec(0).time_ms;
    s.record_answers(&[answered(0, t)]).unwrap();
    assert_eq!(s.answered("req-0").unwrap(), Some(answered(0, t)));
    assert_eq!(s.answered("req-1").unwrap(), None);

    let err = s.record_feedback("req-1", feedback(1.0, t), 1_000).unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err}");
    let err = s.record_feedback("req-0", feedback(1.5, t), 1_000).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");

    let (first, previous) = s.record_feedback("req-0", feedback(0.9, t + 10), 1_000).unwrap();
    assert!(previous.is_none());
    assert!(first.applied && !first.late);
    assert_eq!(first.revisions, 1);
    let (second, previous) = s.record_feedback("req-0", feedback(0.7, t + 20), 1_000).unwrap();
    assert_eq!(previous, Some(first));
    assert_eq!(second.revisions, 2);
    let e = s.get("req-0").unwrap().unwrap();
    assert_eq!(e.outcomes[0].quality, Some(0.7), "feedback in time sets the quality");
    assert_eq!(e.feedback, Some(second));
    assert!(s.get("req-1").unwrap().unwrap().feedback.is_none());
}

fn late_feedback_is_kept_but_not_applied(b: Backend) {
    let (_g, s) = b.open();
    s.append_decisions(&[rec(0)]).unwrap();
    s.record_outcomes(&[out(0, "a", 0.2)]).unwrap();
    let t = rec(0).time_ms;
    s.record_answers(&[answered(0, t)]).unwrap();
    let (late, _) = s.record_feedback("req-0", feedback(1.0, t + 5_000), 1_000).unwrap();
    assert!(late.late && !late.applied);
    let e = s.get("req-0").unwrap().unwrap();
    assert_eq!(e.outcomes[0].quality, Some(0.2));
    assert_eq!(e.feedback, Some(late));
}

/// A store may keep what it sampled (the sled store does, for the
/// trainer's replay): every later write must still show in the next draw.
fn sampling_sees_every_later_write(b: Backend) {
    let (_g, s) = b.open();
    s.append_decisions(&[rec(0)]).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut draw = |s: &dyn ExperienceStore| {
        let got = s.sample(3, &Sampling::Uniform, &mut rng).unwrap();
        assert_eq!(got.len(), 3);
        let stored = s.get("req-0").unwrap().unwrap();
        for e in &got {
            assert_eq!(**e, stored, "a draw differs from the stored experience");
        }
        stored
    };
    s.record_outcomes(&[out(0, "a", 0.2)]).unwrap();
    assert_eq!(draw(&*s).outcomes, vec![out(0, "a", 0.2)]);
    s.record_outcomes(&[out(0, "a", 0.5)]).unwrap();
    assert_eq!(draw(&*s).outcomes, vec![out(0, "a", 0.5)]);
    s.record_outcomes_unsynced(&[out(0, "c", 0.1)]).unwrap();
    assert_eq!(draw(&*s).outcomes.len(), 2);
    let t = rec(0).time_ms;
    s.record_answers(&[answered(0, t)]).unwrap();
    let (applied, _) = s.record_feedback("req-0", feedback(0.9, t + 10), 1_000).unwrap();
    let e = draw(&*s);
    assert_eq!(e.outcomes[0].quality, Some(0.9));
    assert_eq!(e.feedback, Some(applied));
    let (late, _) = s.record_feedback("req-0", feedback(0.1, t + 5_000), 1_000).unwrap();
    let e = draw(&*s);
    assert_eq!(e.outcomes[0].quality, Some(0.9), "late feedback changes no quality");
    assert_eq!(e.feedback, Some(late));
}

fn documents_round_trip_in_key_order(b: Backend) {
    let (_g, s) = b.open();
    s.put_doc("keys", "b", &serde_json::json!({"n": 2})).unwrap();
    s.put_doc("keys", "a", &serde_json::json!({"n": 1})).unwrap();
    s.put_doc("keys", "b", &serde_json::json!({"n": 3})).unwrap();
    s.put_doc("experiments", "x", &serde_json::json!({"n": 9})).unwrap();
    let keys: Vec<serde_json::Value> = s.docs("keys").unwrap();
    assert_eq!(keys, vec![serde_json::json!({"n": 1}), serde_json::json!({"n": 3})]);
    assert!(s.docs::<serde_json::Value>("nothing").unwrap().is_empty());
}

fn retention_by_count_removes_the_oldest(b: Backend) {
    let (_g, s) = b.open();
    for chunk in 0..10u64 {
        let ids = chunk * 100..chunk * 100 + 100;
        s.append_decisions(&ids.clone().map(rec).collect::<Vec<_>>()).unwrap();
        s.record_outcomes(&ids.clone().map(|i| out(i, "a", 0.5)).collect::<Vec<_>>())
            .unwrap();
        s.record_answers(&ids.map(|i| answered(i, rec(i).time_ms)).collect::<Vec<_>>())
            .unwrap();
    }
    assert!(s.truncation().unwrap().is_none());
    let keep = Retention {
        max_experiences: Some(250),
        ..Retention::default()
    };
    let pruned = s.apply_retention(&keep, 1_800_000_000_000).unwrap();
    assert!(pruned.removed > 0 && pruned.removed <= 750, "{pruned:?}");
    assert_eq!(s.first_kept(), pruned.first_kept);
    assert_eq!(s.len(), 1000, "sequence numbers never change");
    assert!(s.retained() >= 250);
    // Nothing below first_kept is found, sampled or iterated.
    let gone = format!("req-{}", pruned.first_kept - 1);
    assert!(s.get(&gone).unwrap().is_none());
    let kept: Vec<u64> = s.iter_from(0).map(|e| seq_of(&e.unwrap())).collect();
    assert_eq!(kept.first().copied(), Some(pruned.first_kept));
    assert_eq!(kept.len() as u64, 1000 - pruned.first_kept);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let got = s.sample(300, &Sampling::Uniform, &mut rng).unwrap();
    assert_eq!(got.len(), 300);
    assert!(got.iter().all(|e| seq_of(e) >= pruned.first_kept));
    let t = s.truncation().unwrap().unwrap();
    assert_eq!(t.removed, pruned.removed);
    assert_eq!(t.first_kept, pruned.first_kept);
    assert_eq!(t.pruned_before_ms, rec(pruned.first_kept - 1).time_ms);
    // Again: nothing more is due.
    assert_eq!(s.apply_retention(&keep, 1_800_000_000_000).unwrap().removed, 0);
}

fn unsynced_outcomes_are_durable_after_the_next_append(b: Backend) {
    let (_g, s) = b.open();
    s.append_decisions(&[rec(0)]).unwrap();
    s.record_outcomes_unsynced(&[out(0, "a", 0.4)]).unwrap();
    s.append_decisions(&[rec(1)]).unwrap();
    s.flush().unwrap();
    assert_eq!(s.get("req-0").unwrap().unwrap().outcomes, vec![out(0, "a", 0.4)]);
}

/// Append throughput, batched as the group writer batches (256 decisions
/// with their outcomes per call), on both backends: run with
/// `cargo test --release -p qroute-store --test contract -- --ignored --nocapture`.
/// A measurement, not a check.
#[test]
#[ignore]
fn append_rate() {
    for (name, b) in [("sled", Backend::Sled), ("postgres", Backend::Postgres)] {
        let (_g, s) = b.open();
        let (batches, per) = (80u64, 256u64);
        let started = std::time::Instant::now();
        for k in 0..batches {
            let ids = k * per..(k + 1) * per;
            // As the group writer: each group's append syncs the outcomes
            // staged before it.
            s.append_decisions(&ids.clone().map(rec).collect::<Vec<_>>()).unwrap();
            s.record_outcomes_unsynced(&ids.map(|i| out(i, "a", 0.5)).collect::<Vec<_>>())
                .unwrap();
        }
        s.flush().unwrap();
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{name}: {} experiences (decision + outcome) in {secs:.2} s: {:.0}/s",
            batches * per,
            (batches * per) as f64 / secs
        );
    }
}
