//! The policy registry on PostgreSQL, as several processes share it (each
//! handle here opens its own pool and LISTEN connection, as a replica
//! would): unique version numbers, publication seen through NOTIFY, the
//! trainer lock passing on when its holder goes, rollback for everyone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use qroute_core::testing::{ensure_postgres, toy_policy, unique_schema};
use qroute_learn::registry::{fingerprint, Lineage, Registry};
use qroute_learn::watch::Watcher;

struct Schema(String);

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc"])
            .arg(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0))
            .output();
    }
}

fn url() -> (Schema, String) {
    let schema = unique_schema("registry");
    let url = format!("{}?schema={schema}", ensure_postgres());
    (Schema(schema), url)
}

fn lineage(source: &str) -> Lineage {
    Lineage {
        parent: None,
        base: "base".into(),
        source: source.into(),
        steps: 0,
        experiences: 0,
        created_ms: 0,
        writer: "test".into(),
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn versions_are_shared_and_never_reused() {
    let (_s, url) = url();
    let a = Registry::open_postgres(&url).unwrap();
    let b = Registry::open_postgres(&url).unwrap();
    assert_eq!(a.latest().unwrap(), None);
    let mut seen = std::collections::HashSet::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = [&a, &b]
            .into_iter()
            .map(|r| s.spawn(move || (0..20).map(|_| r.allocate(1).unwrap()).collect::<Vec<_>>()))
            .collect();
        for h in handles {
            for v in h.join().unwrap() {
                assert!(seen.insert(v), "version {v} allocated twice");
            }
        }
    });
    let mut p = toy_policy(1);
    p.version = a.allocate(0).unwrap();
    a.save(&p, &lineage("base")).unwrap();
    assert!(seen.iter().all(|v| *v < p.version));
    assert_eq!(b.latest().unwrap(), Some(p.version));
    let loaded = b.load(p.version).unwrap();
    assert_eq!(fingerprint(&loaded), fingerprint(&p));
    assert_eq!(b.entry(p.version).unwrap().lineage, Some(lineage("base")));
    // The files come back byte for byte, and a second save of a number is refused.
    let meta = b.file(p.version, "policy.json").unwrap();
    assert!(serde_json::from_slice::<serde_json::Value>(&meta).is_ok());
    assert!(a.save(&p, &lineage("base")).is_err());
    assert!(matches!(b.load(p.version + 100), Err(qroute_core::Error::NotFound(_))));
    // A reader opens an existing registry only.
    let missing = format!("{}?schema={}", ensure_postgres(), unique_schema("absent"));
    assert!(Registry::open_location(&missing).is_err());
    assert_eq!(
        Registry::open_location(&url).unwrap().latest().unwrap(),
        Some(p.version)
    );
}

/// The watcher polls every minute here: only the NOTIFY can make it serve a
/// publication from another handle this soon (20 s is the test's patience,
/// not the latency, which the note measures).
#[test]
fn a_publication_reaches_another_handles_watcher_through_notify() {
    let (_s, url) = url();
    let publisher = Registry::open_postgres(&url).unwrap();
    let replica = Registry::open_postgres(&url).unwrap();
    let mut p = toy_policy(2);
    p.version = publisher.allocate(1).unwrap();
    publisher.save(&p, &lineage("base")).unwrap();
    let serving = Arc::new(ArcSwap::from_pointee(replica.load(p.version).unwrap()));
    let _watch = Watcher::spawn(replica.clone(), serving.clone(), Duration::from_secs(60)).unwrap();
    std::thread::sleep(Duration::from_millis(300)); // the listener connects

    let mut next = toy_policy(3);
    next.version = publisher.allocate(0).unwrap();
    let published = Instant::now();
    publisher.save(&next, &lineage("follow")).unwrap();
    wait_for("the replica to serve the new version", || {
        serving.load().version == next.version
    });
    eprintln!("served {:?} after publication", published.elapsed());

    // A rollback is a publication too: every replica serves the copy.
    let rolled = publisher.rollback(p.version, "operator").unwrap();
    wait_for("the replica to serve the rollback", || {
        serving.load().version == rolled.version
    });
    assert_eq!(fingerprint(&serving.load()), fingerprint(&p));
}

#[test]
fn the_trainer_lock_passes_to_a_waiting_trainer_when_the_holder_goes() {
    let (_s, url) = url();
    let first = Registry::open_postgres(&url).unwrap();
    let second = Registry::open_postgres(&url).unwrap();
    let held = first.lock_trainer().unwrap();
    let err = second.lock_trainer().unwrap_err();
    assert!(err.to_string().contains("another trainer"), "{err}");
    let taken = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let waiter = {
        let taken = taken.clone();
        std::thread::spawn(move || {
            let lock = second.wait_for_trainer_lock().unwrap();
            taken.store(true, std::sync::atomic::Ordering::SeqCst);
            lock
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!taken.load(std::sync::atomic::Ordering::SeqCst), "taken while held");
    drop(held);
    wait_for("the waiting trainer to take the lock", || {
        taken.load(std::sync::atomic::Ordering::SeqCst)
    });
    let _lock = waiter.join().unwrap();
    assert!(first.lock_trainer().is_err());
}
