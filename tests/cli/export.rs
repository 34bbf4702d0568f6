//! `qroute export` to Parquet: one row per outcome (one null-outcome row for
//! a decision without any), experiment tags, shadow picks and feedback
//! flattened into nullable columns, read back with the `parquet` crate.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use parquet::basic::{LogicalType, Repetition, Type as PhysicalType};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use qroute_core::features::Features;
use qroute_core::record::{Answered, DecisionRecord, ExperimentTag, Feedback, Outcome, ShadowPick};
use qroute_core::store::ExperienceStore;
use qroute_lab::export::export_parquet;
use qroute_store::SledStore;

const T0: u64 = 1_700_000_000_000;
/// A unit hash past i64::MAX: exported as a negative i64 with the same bits.
const UNIT: u64 = u64::MAX - 41;

fn decision(id: &str, chosen: &[&str]) -> DecisionRecord {
    DecisionRecord {
        request_id: id.to_string(),
        time_ms: T0,
        features: Features {
            dim: 8192,
            indices: vec![1, 7],
            values: vec![0.5, -1.0],
        },
        candidates: vec!["a".into(), "b".into(), "c".into()],
        propensities: vec![0.5, 0.25, 0.25],
        chosen: chosen.iter().map(|m| m.to_string()).collect(),
        policy_version: 7,
        cost_weight: 0.5,
        latency_weight: 0.0,
        task: None,
        experiment: None,
        shadow: None,
    }
}

fn outcome(id: &str, model: &str, quality: Option<f32>, error: Option<&str>) -> Outcome {
    Outcome {
        request_id: id.to_string(),
        model: model.to_string(),
        quality,
        cost_usd: 0.002,
        latency_ms: 350.5,
        error: error.map(str::to_string),
        time_ms: T0 + 1_000,
        ttft_ms: None,
    }
}

/// Four decisions: `r0` with no outcome; `r1` (experiment arm, shadow pick,
/// feedback in time) with one; `r2` with two, one an error, and late
/// feedback on the second; `r3` with one and feedback on a merged answer
/// (a model without an outcome in the decision).
fn build_store(dir: &Path) {
    let store = SledStore::open(dir).unwrap();
    let r1 = DecisionRecord {
        task: Some("code".into()),
        experiment: Some(ExperimentTag {
            experiment: "exp-1".into(),
            arm: "treatment".into(),
            strategy: "cost_optimized".into(),
            assignment_propensity: 0.5,
            unit: UNIT,
        }),
        shadow: Some(ShadowPick {
            name: "next".into(),
            version: 9,
            model: "c".into(),
        }),
        ..decision("r1", &["b"])
    };
    store
        .append_decisions(&[
            decision("r0", &["a"]),
            r1,
            decision("r2", &["a", "c"]),
            decision("r3", &["a", "b"]),
        ])
        .unwrap();
    store
        .record_outcomes(&[
            outcome("r1", "b", Some(0.8), None),
            outcome("r2", "a", Some(0.9), None),
            outcome("r2", "c", None, Some("upstream 503")),
            outcome("r3", "a", Some(0.6), None),
        ])
        .unwrap();
    let answered = |id: &str, model: &str| Answered {
        request_id: id.into(),
        decision_id: id.into(),
        model: model.into(),
        time_ms: T0 + 2_000,
        key_id: None,
    };
    store
        .record_answers(&[answered("r1", "b"), answered("r2", "c"), answered("r3", "merger")])
        .unwrap();
    let feedback = |quality: f32, kind: &str, after_ms: u64| Feedback {
        quality,
        kind: kind.into(),
        value: quality as f64,
        time_ms: T0 + 2_000 + after_ms,
    };
    let window = 60_000;
    store
        .record_feedback("r1", feedback(1.0, "thumbs", 10), window)
        .unwrap();
    let (late, _) = store
        .record_feedback("r2", feedback(0.25, "quality", 120_000), window)
        .unwrap();
    assert!(late.late);
    store
        .record_feedback("r3", feedback(0.0, "thumbs", 10), window)
        .unwrap();
    store.flush().unwrap();
}

fn read_rows(path: &Path) -> Vec<HashMap<String, Field>> {
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    reader
        .get_row_iter(None)
        .unwrap()
        .map(|row| row.unwrap().into_columns().into_iter().collect())
        .collect()
}

fn s(v: &str) -> Field {
    Field::Str(v.to_string())
}

#[test]
fn parquet_export_has_one_row_per_outcome() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    build_store(&dir);
    let out = tmp.path().join("log.parquet");
    let store = SledStore::open(&dir).unwrap();
    assert_eq!(export_parquet(&store, &out).unwrap(), 5);
    drop(store);

    // Schema: names, order, types and nullability.
    let reader = SerializedFileReader::new(std::fs::File::open(&out).unwrap()).unwrap();
    let meta = reader.metadata();
    assert_eq!(meta.file_metadata().num_rows(), 5);
    let schema = meta.file_metadata().schema_descr();
    let columns: Vec<(String, PhysicalType, bool, bool)> = schema
        .columns()
        .iter()
        .map(|c| {
            let t = c.self_type();
            let nullable = t.get_basic_info().repetition() == Repetition::OPTIONAL;
            let string = t.get_basic_info().logical_type_ref() == Some(&LogicalType::String);
            (c.name().to_string(), c.physical_type(), nullable, string)
        })
        .collect();
    use PhysicalType::{BOOLEAN, BYTE_ARRAY, DOUBLE, FLOAT, INT64};
    let expected = [
        ("request_id", BYTE_ARRAY, false),
        ("time_ms", INT64, false),
        ("policy_version", INT64, false),
        ("cost_weight", FLOAT, false),
        ("latency_weight", FLOAT, false),
        ("task", BYTE_ARRAY, true),
        ("candidates", BYTE_ARRAY, false),
        ("propensities", BYTE_ARRAY, false),
        ("chosen", BYTE_ARRAY, false),
        ("model", BYTE_ARRAY, true),
        ("propensity", FLOAT, true),
        ("quality", FLOAT, true),
        ("cost_usd", DOUBLE, true),
        ("latency_ms", DOUBLE, true),
        ("error", BYTE_ARRAY, true),
        ("outcome_time_ms", INT64, true),
        ("experiment", BYTE_ARRAY, true),
        ("arm", BYTE_ARRAY, true),
        ("strategy", BYTE_ARRAY, true),
        ("assignment_propensity", FLOAT, true),
        ("unit", INT64, true),
        ("shadow_name", BYTE_ARRAY, true),
        ("shadow_model", BYTE_ARRAY, true),
        ("shadow_version", INT64, true),
        ("feedback_quality", FLOAT, true),
        ("feedback_kind", BYTE_ARRAY, true),
        ("feedback_late", BOOLEAN, true),
        ("feedback_model", BYTE_ARRAY, true),
    ];
    let expected: Vec<(String, PhysicalType, bool, bool)> = expected
        .iter()
        .map(|&(n, t, nullable)| (n.to_string(), t, nullable, t == BYTE_ARRAY))
        .collect();
    assert_eq!(columns, expected);

    let rows = read_rows(&out);
    let keys: Vec<(Field, Field)> = rows
        .iter()
        .map(|r| (r["request_id"].clone(), r["model"].clone()))
        .collect();
    assert_eq!(
        keys,
        [
            (s("r0"), Field::Null),
            (s("r1"), s("b")),
            (s("r2"), s("a")),
            (s("r2"), s("c")),
            (s("r3"), s("a")),
        ]
    );

    // r0: no outcome, no tag, no feedback: every optional column is null.
    let r0 = &rows[0];
    assert_eq!(r0["time_ms"], Field::Long(T0 as i64));
    assert_eq!(r0["policy_version"], Field::Long(7));
    assert_eq!(r0["cost_weight"], Field::Float(0.5));
    assert_eq!(r0["candidates"], s(r#"["a","b","c"]"#));
    assert_eq!(r0["propensities"], s("[0.5,0.25,0.25]"));
    assert_eq!(r0["chosen"], s(r#"["a"]"#));
    for (name, _, nullable, _) in &columns {
        if *nullable {
            assert_eq!(r0[name], Field::Null, "r0.{name}");
        }
    }

    // r1: every column set.
    let r1 = &rows[1];
    let want = [
        ("task", s("code")),
        ("propensity", Field::Float(0.25)),
        // In-time feedback sets the outcome's quality.
        ("quality", Field::Float(1.0)),
        ("cost_usd", Field::Double(0.002)),
        ("latency_ms", Field::Double(350.5)),
        ("outcome_time_ms", Field::Long((T0 + 1_000) as i64)),
        ("error", Field::Null),
        ("experiment", s("exp-1")),
        ("arm", s("treatment")),
        ("strategy", s("cost_optimized")),
        ("assignment_propensity", Field::Float(0.5)),
        ("unit", Field::Long(-42)),
        ("shadow_name", s("next")),
        ("shadow_model", s("c")),
        ("shadow_version", Field::Long(9)),
        ("feedback_quality", Field::Float(1.0)),
        ("feedback_kind", s("thumbs")),
        ("feedback_late", Field::Bool(false)),
        ("feedback_model", s("b")),
    ];
    for (name, value) in want {
        assert_eq!(r1[name], value, "r1.{name}");
    }
    assert_eq!(UNIT as i64, -42);

    // r2: two outcomes; the error one has no quality; the late feedback sits
    // on the row of the model that answered, and did not change quality.
    let (a, c) = (&rows[2], &rows[3]);
    assert_eq!(a["chosen"], s(r#"["a","c"]"#));
    assert_eq!(
        (&a["propensity"], &a["quality"]),
        (&Field::Float(0.5), &Field::Float(0.9))
    );
    assert_eq!((&a["error"], &a["feedback_quality"]), (&Field::Null, &Field::Null));
    assert_eq!((&c["propensity"], &c["quality"]), (&Field::Float(0.25), &Field::Null));
    assert_eq!(c["error"], s("upstream 503"));
    assert_eq!(c["feedback_quality"], Field::Float(0.25));
    assert_eq!(c["feedback_kind"], s("quality"));
    assert_eq!(c["feedback_late"], Field::Bool(true));
    assert_eq!(c["experiment"], Field::Null);

    // r3: feedback on a merged answer (no outcome of its own) goes on the
    // decision's first row, naming the merger.
    let r3 = &rows[4];
    assert_eq!(r3["feedback_quality"], Field::Float(0.0));
    assert_eq!(r3["feedback_model"], s("merger"));
    assert_eq!(r3["quality"], Field::Float(0.6));
}

#[test]
fn cli_export_picks_the_format_by_extension() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    build_store(&dir);
    let export = |out: &Path| {
        let status = Command::new(env!("CARGO_BIN_EXE_qroute"))
            .arg("export")
            .arg("--store")
            .arg(&dir)
            .arg("--out")
            .arg(out)
            .status()
            .unwrap();
        assert!(status.success(), "qroute export --out {}: {status}", out.display());
    };

    let pq = tmp.path().join("log.parquet");
    export(&pq);
    let bytes = std::fs::read(&pq).unwrap();
    assert!(bytes.len() > 8);
    assert_eq!(&bytes[..4], b"PAR1");
    assert_eq!(&bytes[bytes.len() - 4..], b"PAR1");
    assert_eq!(read_rows(&pq).len(), 5);

    // Any other extension stays JSONL: one experience per decision.
    let jsonl = tmp.path().join("log.jsonl");
    export(&jsonl);
    let text = std::fs::read_to_string(&jsonl).unwrap();
    assert_eq!(text.lines().count(), 4);
    assert!(text.starts_with('{'));
}
