//! `qroute train` and `qroute evaluate` end to end, through the real binary,
//! on a dataset the test makes: the decisions file is complete, the report
//! is written, the learned router beats the single models on held-out
//! prompts, training is deterministic, and bad data is a clear error.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_qroute");

/// A world with a structure to learn: `cheap` is right on arithmetic and
/// wrong on history, `dear` is right on both at 20× the price, `mid` is a
/// coin flip. Quality depends on the prompt's topic only.
fn write_dataset(path: &Path) {
    let mut lines = Vec::new();
    let mut state = 12345u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as f64 / (1u64 << 31) as f64
    };
    let arithmetic = ["add", "multiply", "subtract", "divide", "sum", "product"];
    let history = ["empire", "treaty", "dynasty", "revolution", "monarch", "war"];
    for i in 0..900 {
        let math = i % 2 == 0;
        let words = if math { &arithmetic } else { &history };
        let a = words[(next() * 6.0) as usize];
        let b = words[(next() * 6.0) as usize];
        let prompt = if math {
            format!(
                "Please {a} and {b} the numbers {} and {}.",
                (next() * 100.0) as u32,
                (next() * 100.0) as u32
            )
        } else {
            format!(
                "Explain the {a} and the {b} of the year {}.",
                1000 + (next() * 900.0) as u32
            )
        };
        let len = prompt.len() as f64;
        let cheap_q = if math { 1.0 } else { 0.0 };
        let mid_q = if next() < 0.5 { 1.0 } else { 0.0 };
        let split = if i % 10 < 7 { "train" } else { "test" };
        let line = serde_json::json!({
            "id": format!("toy:{i}"),
            "task": if math { "toy/arithmetic" } else { "toy/history" },
            "split": split,
            "prompt": prompt,
            "outcomes": {
                "cheap": {"quality": cheap_q, "cost_usd": 1e-6 * len},
                "mid": {"quality": mid_q, "cost_usd": 5e-6 * len},
                "dear": {"quality": 1.0, "cost_usd": 2e-5 * len},
            }
        });
        lines.push(line.to_string());
    }
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn run(args: &[&str]) -> std::process::Output {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "qroute {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn train_then_evaluate_writes_complete_decisions_and_beats_single_models() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("toy.jsonl");
    write_dataset(&data);
    let data = data.to_str().unwrap();
    let policy = dir.path().join("policy");
    let policy_s = policy.to_str().unwrap();
    run(&[
        "train", "--data", data, "--split", "train", "--out", policy_s, "--epochs", "12", "--quiet",
    ]);

    let decisions = dir.path().join("decisions.jsonl");
    let report = dir.path().join("report");
    run(&[
        "evaluate",
        "--data",
        data,
        "--policy",
        policy_s,
        "--split",
        "test",
        "--decisions",
        decisions.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);

    // One line per test prompt per point, for every point.
    let test_ids: HashSet<String> = (0..900).filter(|i| i % 10 >= 7).map(|i| format!("toy:{i}")).collect();
    let mut seen = HashSet::new();
    let mut points = HashSet::new();
    for line in std::fs::read_to_string(&decisions).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = v["id"].as_str().unwrap().to_string();
        let point = v["point"].as_u64().unwrap();
        assert!(test_ids.contains(&id), "{id} is not a test prompt");
        assert!(["cheap", "mid", "dear"].contains(&v["model"].as_str().unwrap()));
        assert!(seen.insert((id, point)), "duplicate line {line}");
        points.insert(point);
    }
    assert!(points.len() >= 21, "{} operating points", points.len());
    assert_eq!(points, (0..points.len() as u64).collect::<HashSet<_>>());
    assert_eq!(seen.len(), test_ids.len() * points.len());

    // The report: JSON for tools, Markdown for people, a PNG plot.
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(report.join("report.json")).unwrap()).unwrap();
    let png = std::fs::read(report.join("cost_quality.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.contains("| qroute |") && md.contains("oracle"));

    // Held-out: the router uses `cheap` for arithmetic and `dear` for
    // history, which no single model can do.
    let router = r["router"]["aiq"].as_f64().unwrap();
    let singles = r["single_models"]["aiq"].as_f64().unwrap();
    assert!(
        router > singles + 0.05,
        "router AIQ {router} vs single models {singles}"
    );
    let c95 = r["router"]["c95"].as_f64().unwrap();
    let single_c95 = r["single_models"]["c95"].as_f64().unwrap();
    assert!(c95 < single_c95 - 0.1, "C95 {c95} vs single models {single_c95}");
}

#[test]
fn training_is_deterministic_under_a_seed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("toy.jsonl");
    write_dataset(&data);
    let data = data.to_str().unwrap();
    let weights = |name: &str, seed: &str| {
        let out = dir.path().join(name);
        run(&[
            "train",
            "--data",
            data,
            "--out",
            out.to_str().unwrap(),
            "--epochs",
            "3",
            "--seed",
            seed,
            "--quiet",
        ]);
        std::fs::read(out.join("model.safetensors")).unwrap()
    };
    let a = weights("a", "7");
    let b = weights("b", "7");
    let c = weights("c", "8");
    assert!(a == b, "same seed, different weights");
    assert!(a != c, "different seeds, same weights");
}

#[test]
fn malformed_dataset_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bad.jsonl");
    std::fs::write(
        &data,
        "{\"id\":\"a\",\"task\":\"t\",\"split\":\"train\",\"prompt\":\"p\",\"outcomes\":{\"m\":{\"quality\":0.5,\"cost_usd\":0.1}}}\n\
         {\"id\":\"b\",\"task\":\"t\",\"split\":\"train\",\"prompt\":\"p\",\"outcomes\":{\"m\":{\"quality\":\"high\",\"cost_usd\":0.1}}}\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args([
            "train",
            "--data",
            data.to_str().unwrap(),
            "--out",
            dir.path().join("p").to_str().unwrap(),
            "--quiet",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.jsonl:2") && err.contains("outcomes.m.quality"),
        "{err}"
    );
}

#[test]
fn route_uses_the_embedded_default_policy() {
    let out = run(&["route", "--prompt", "What is 17 * 23?", "--task", "gsm8k", "--greedy"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cands = v["candidates"].as_array().unwrap();
    assert_eq!(cands.len(), 2);
    let total: f64 = cands.iter().map(|c| c["propensity"].as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-5);
    assert!(cands.iter().any(|c| c["model"] == v["model"]));
}
