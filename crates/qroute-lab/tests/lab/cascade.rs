//! `evaluate --strategy cascade` on AlpacaEval's recorded answers with the
//! shipped policy: decision lines name every model paid for, the report's
//! costs are their sums, no model is called twice.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use qroute_core::dataset::Dataset;
use qroute_core::policy::checkpoint;
use qroute_lab::evaluate::{evaluate_with, write_decisions, Mode};

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

#[test]
fn cascade_decisions_name_every_model_paid_for() {
    let ds = Dataset::load(repo_file("data/alpaca_eval.jsonl")).unwrap();
    let policy = checkpoint::load(&repo_file("policies/alpaca")).unwrap();
    assert!(
        policy.answer_head.is_some(),
        "the shipped policy learned an answer head"
    );
    let points = policy.operating_points.clone();
    let eval = evaluate_with(&policy, &ds, "test", &points, Mode::Cascade { max_calls: 3 }).unwrap();
    assert_eq!(eval.unanswered, 0);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.jsonl");
    write_decisions(&eval, &path).unwrap();
    let rows: HashMap<&str, &qroute_core::dataset::Row> = ds.rows.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut cost = vec![0.0f64; points.len()];
    let mut escalated = 0;
    let text = std::fs::read_to_string(&path).unwrap();
    for line in text.lines() {
        let d: serde_json::Value = serde_json::from_str(line).unwrap();
        let called: Vec<&str> = d["called"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap())
            .collect();
        assert!(!called.is_empty() && called.len() <= 3, "{line}");
        assert_eq!(
            called.iter().collect::<HashSet<_>>().len(),
            called.len(),
            "called twice: {line}"
        );
        assert!(called.contains(&d["model"].as_str().unwrap()), "{line}");
        escalated += usize::from(called.len() > 1);
        let row = rows[d["id"].as_str().unwrap()];
        let point = d["point"].as_u64().unwrap() as usize;
        cost[point] += called
            .iter()
            .map(|m| row.outcomes[ds.model_index(m).unwrap()].cost_usd)
            .sum::<f64>();
    }
    assert_eq!(text.lines().count(), points.len() * eval.prompts);
    assert!(escalated > 0, "some answers were judged not worth keeping");
    for (p, total) in eval.points.iter().zip(&cost) {
        let mean = total / eval.prompts as f64;
        assert!(
            (p.cost - mean).abs() <= 1e-12 * mean.max(1.0),
            "point {}: {} vs {mean}",
            p.point,
            p.cost
        );
        assert!(p.calls >= 1.0);
    }
    // Reading the answers pays: the cascade's curve beats plain routing.
    let plain = eval.plain.unwrap();
    assert!(eval.router.aiq > plain.aiq, "{} <= {}", eval.router.aiq, plain.aiq);
}

#[test]
fn a_cascade_needs_answers_and_a_head() {
    let ds = Dataset::load(repo_file("data/alpaca_eval.jsonl")).unwrap();
    let mut policy = checkpoint::load(&repo_file("policies/alpaca")).unwrap();
    let points = policy.operating_points.clone();
    let mut bare = ds.clone();
    for r in &mut bare.rows {
        r.responses.iter_mut().for_each(|a| *a = None);
    }
    let e = evaluate_with(&policy, &bare, "test", &points, Mode::Cascade { max_calls: 2 }).unwrap_err();
    assert!(e.to_string().contains("no answers"), "{e}");
    policy.answer_head = None;
    let e = evaluate_with(&policy, &ds, "test", &points, Mode::Cascade { max_calls: 2 }).unwrap_err();
    assert!(e.to_string().contains("answer head"), "{e}");
}
