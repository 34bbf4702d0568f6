//! Dataset loading: malformed files give errors that name the file, the line
//! and the field; the bundled datasets load with the right counts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::path::{Path, PathBuf};

use qroute_core::dataset::Dataset;
use qroute_core::Error;

const GOOD_1: &str = r#"{"id": "q1", "task": "mmlu/anatomy", "split": "train", "prompt": "What is the largest bone?", "outcomes": {"big": {"quality": 1.0, "cost_usd": 0.00012}, "small": {"quality": 0.0, "cost_usd": 0.0000071}}}"#;
const GOOD_2: &str = r#"{"id": "q2", "task": "gsm8k", "split": "test", "prompt": "2+2?", "outcomes": {"big": {"quality": 1.0, "cost_usd": 0.0002, "latency_ms": 900}, "small": {"quality": 1.0, "cost_usd": 0.00001}}}"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Loads `text` as a dataset file, expects a dataset error, checks that its
/// Display names the file, `line` and `field`, and returns the message.
fn expect_error(name: &str, text: &str, line: usize, field: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), name, text);
    let err = Dataset::load(&path).expect_err("a malformed dataset must not load");
    let shown = err.to_string();
    assert!(
        shown.contains(&path.display().to_string()),
        "error does not name the file: {shown}"
    );
    assert!(
        shown.contains(&format!(":{line}:")),
        "error does not name line {line}: {shown}"
    );
    assert!(
        shown.contains(&format!("`{field}`")),
        "error does not name field {field}: {shown}"
    );
    match err {
        Error::Dataset { line: l, field: f, .. } => {
            assert_eq!((l, f.as_str()), (line, field));
        }
        other => panic!("expected Error::Dataset, got {other:?}"),
    }
    shown
}

#[test]
fn bad_json_names_the_column() {
    let text = format!("{GOOD_1}\n{{\"id\": \"q2\", \"task\": }}\n");
    let shown = expect_error("bad_json.jsonl", &text, 2, "(json)");
    assert!(shown.contains("not JSON at column"), "{shown}");
}

#[test]
fn missing_prompt() {
    let bad = GOOD_2.replace(r#""prompt": "2+2?", "#, "");
    let shown = expect_error("no_prompt.jsonl", &format!("{GOOD_1}\n\n{bad}\n"), 3, "prompt");
    assert!(shown.contains("missing"), "{shown}");
}

#[test]
fn quality_out_of_range() {
    let bad = GOOD_1.replace(r#""quality": 1.0"#, r#""quality": 1.5"#);
    let shown = expect_error("q15.jsonl", &bad, 1, "outcomes.big.quality");
    assert!(shown.contains("out of range"), "{shown}");
    assert!(shown.contains("1.5"), "{shown}");
}

#[test]
fn quality_as_a_string() {
    let bad = GOOD_2.replace(
        r#""quality": 1.0, "cost_usd": 0.00001"#,
        r#""quality": "1.0", "cost_usd": 0.00001"#,
    );
    let shown = expect_error("qstr.jsonl", &format!("{GOOD_1}\n{bad}"), 2, "outcomes.small.quality");
    assert!(shown.contains("wrong type"), "{shown}");
    assert!(shown.contains("string"), "{shown}");
}

#[test]
fn negative_cost() {
    let bad = GOOD_1.replace("0.0000071", "-0.01");
    let shown = expect_error("negcost.jsonl", &bad, 1, "outcomes.small.cost_usd");
    assert!(shown.contains("negative"), "{shown}");
}

#[test]
fn model_missing_in_one_row() {
    let bad = GOOD_2.replace(r#", "small": {"quality": 1.0, "cost_usd": 0.00001}"#, "");
    assert_ne!(bad, GOOD_2);
    let shown = expect_error("hole.jsonl", &format!("{GOOD_1}\n{bad}\n"), 2, "outcomes.small");
    assert!(shown.contains("missing"), "{shown}");
    assert!(shown.contains("full information"), "{shown}");
}

#[test]
fn duplicate_id() {
    let dup = GOOD_2.replace(r#""id": "q2""#, r#""id": "q1""#);
    let shown = expect_error("dup.jsonl", &format!("{GOOD_1}\n{dup}\n"), 2, "id");
    assert!(shown.contains("duplicate id `q1`"), "{shown}");
    assert!(shown.contains("line 1"), "{shown}");
}

#[test]
fn empty_file() {
    let shown = expect_error("empty.jsonl", "", 1, "(file)");
    assert!(shown.contains("no rows"), "{shown}");
}

#[test]
fn missing_file_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.jsonl");
    let err = Dataset::load(&path).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("nope.jsonl"), "{err}");
}

#[test]
fn small_valid_file_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "ok.jsonl", &format!("{GOOD_1}\n{GOOD_2}\n"));
    let d = Dataset::load(&path).unwrap();
    assert_eq!(d.path, path);
    assert_eq!(d.models, ["big", "small"]);
    assert_eq!(d.rows[1].outcomes[0].latency_ms, Some(900.0));
    assert_eq!(d.split("test").len(), 1);
}

fn bundled(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data").join(name)
}

#[test]
fn bundled_routellm_loads() {
    let d = Dataset::load(bundled("routellm_mmlu_gsm8k.jsonl")).unwrap();
    assert_eq!(d.rows.len(), 15_361);
    assert_eq!(d.models.len(), 2);
    assert!(d.model_index("gpt-4-1106-preview").is_some());
    let (train, test) = (d.split("train").len(), d.split("test").len());
    assert_eq!(train + test, d.rows.len());
    assert!(test > 3_000 && train > 9_000, "train {train} test {test}");
    assert!(d.rows.iter().all(|r| r.outcomes.len() == 2));
}

#[test]
fn bundled_alpaca_loads() {
    let d = Dataset::load(bundled("alpaca_eval.jsonl")).unwrap();
    assert_eq!(d.rows.len(), 781);
    assert_eq!(d.models.len(), 11);
    let mut sorted = d.models.clone();
    sorted.sort();
    assert_eq!(d.models, sorted);
    assert!(d.rows.iter().all(|r| r.outcomes.len() == 11));
}
