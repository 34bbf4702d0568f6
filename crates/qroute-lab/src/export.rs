//! Exports of the experience store for analysis outside qroute.
//!
//! - [`export_jsonl`]: one serde-JSON [`Experience`] per line, everything
//!   included (features too); what `qroute ope` reads back.
//! - [`export_parquet`]: a flat table, one row per outcome, for pandas,
//!   DuckDB or Polars. Features are left out (sparse vectors do not fit a
//!   flat table; the JSONL export keeps them).

use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use parquet::basic::{Compression, LogicalType, Repetition, Type as PhysicalType};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, FloatType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;

use qroute_core::error::{Error, Result};
use qroute_core::record::{Experience, Outcome};
use qroute_core::store::ExperienceStore;

/// Rows per Parquet row group: bounds the memory an export holds at once
/// (the rows of one group, a few tens of MB at most).
pub const ROW_GROUP_ROWS: usize = 50_000;

/// Physical type of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int64,
    Float,
    Double,
    /// UTF-8 string (BYTE_ARRAY annotated STRING).
    Str,
    Bool,
}

/// The table's columns, in file order: name, type, nullable.
const COLUMNS: [(&str, Kind, bool); 28] = [
    ("request_id", Kind::Str, false),
    ("time_ms", Kind::Int64, false),
    ("policy_version", Kind::Int64, false),
    ("cost_weight", Kind::Float, false),
    ("latency_weight", Kind::Float, false),
    ("task", Kind::Str, true),
    ("candidates", Kind::Str, false),
    ("propensities", Kind::Str, false),
    ("chosen", Kind::Str, false),
    ("model", Kind::Str, true),
    ("propensity", Kind::Float, true),
    ("quality", Kind::Float, true),
    ("cost_usd", Kind::Double, true),
    ("latency_ms", Kind::Double, true),
    ("error", Kind::Str, true),
    ("outcome_time_ms", Kind::Int64, true),
    ("experiment", Kind::Str, true),
    ("arm", Kind::Str, true),
    ("strategy", Kind::Str, true),
    ("assignment_propensity", Kind::Float, true),
    ("unit", Kind::Int64, true),
    ("shadow_name", Kind::Str, true),
    ("shadow_model", Kind::Str, true),
    ("shadow_version", Kind::Int64, true),
    ("feedback_quality", Kind::Float, true),
    ("feedback_kind", Kind::Str, true),
    ("feedback_late", Kind::Bool, true),
    ("feedback_model", Kind::Str, true),
];

/// One cell; `None` is null.
enum Value {
    Int64(Option<i64>),
    Float(Option<f32>),
    Double(Option<f64>),
    Str(Option<String>),
    Bool(Option<bool>),
}

/// The buffered values of one column for the current row group: the
/// non-null values, and a definition level per row (1 set, 0 null; kept for
/// nullable columns only).
enum Column {
    Int64(Vec<i64>, Vec<i16>),
    Float(Vec<f32>, Vec<i16>),
    Double(Vec<f64>, Vec<i16>),
    Str(Vec<ByteArray>, Vec<i16>),
    Bool(Vec<bool>, Vec<i16>),
}

impl Column {
    fn new(kind: Kind) -> Self {
        match kind {
            Kind::Int64 => Column::Int64(Vec::new(), Vec::new()),
            Kind::Float => Column::Float(Vec::new(), Vec::new()),
            Kind::Double => Column::Double(Vec::new(), Vec::new()),
            Kind::Str => Column::Str(Vec::new(), Vec::new()),
            Kind::Bool => Column::Bool(Vec::new(), Vec::new()),
        }
    }

    /// Appends one cell; `Err` names the column when the cell does not fit
    /// it (a bug in [`row`], caught by any export).
    fn push(&mut self, name: &str, nullable: bool, value: Value) -> Result<()> {
        fn put<T>(values: &mut Vec<T>, def: &mut Vec<i16>, nullable: bool, v: Option<T>) -> bool {
            match v {
                Some(v) => {
                    values.push(v);
                    if nullable {
                        def.push(1);
                    }
                    true
                }
                None if nullable => {
                    def.push(0);
                    true
                }
                None => false,
            }
        }
        let ok = match (self, value) {
            (Column::Int64(v, d), Value::Int64(x)) => put(v, d, nullable, x),
            (Column::Float(v, d), Value::Float(x)) => put(v, d, nullable, x),
            (Column::Double(v, d), Value::Double(x)) => put(v, d, nullable, x),
            (Column::Str(v, d), Value::Str(x)) => put(v, d, nullable, x.map(|s| ByteArray::from(s.into_bytes()))),
            (Column::Bool(v, d), Value::Bool(x)) => put(v, d, nullable, x),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::Store(format!("parquet export: bad value for column `{name}`")))
        }
    }

    fn clear(&mut self) {
        fn both<T>(v: &mut Vec<T>, d: &mut Vec<i16>) {
            v.clear();
            d.clear();
        }
        match self {
            Column::Int64(v, d) => both(v, d),
            Column::Float(v, d) => both(v, d),
            Column::Double(v, d) => both(v, d),
            Column::Str(v, d) => both(v, d),
            Column::Bool(v, d) => both(v, d),
        }
    }
}

/// The Parquet schema of [`COLUMNS`].
fn schema() -> Result<Type> {
    let fields = COLUMNS
        .iter()
        .map(|&(name, kind, nullable)| {
            let (physical, logical) = match kind {
                Kind::Int64 => (PhysicalType::INT64, None),
                Kind::Float => (PhysicalType::FLOAT, None),
                Kind::Double => (PhysicalType::DOUBLE, None),
                Kind::Str => (PhysicalType::BYTE_ARRAY, Some(LogicalType::String)),
                Kind::Bool => (PhysicalType::BOOLEAN, None),
            };
            let repetition = if nullable {
                Repetition::OPTIONAL
            } else {
                Repetition::REQUIRED
            };
            Type::primitive_type_builder(name, physical)
                .with_repetition(repetition)
                .with_logical_type(logical)
                .build()
                .map(Arc::new)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Store(format!("parquet schema: {e}")))?;
    Type::group_type_builder("experience")
        .with_fields(fields)
        .build()
        .map_err(|e| Error::Store(format!("parquet schema: {e}")))
}

fn json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Store(format!("encoding a list column: {e}")))
}

/// The cells of one row, in [`COLUMNS`] order: `exp`'s decision joined with
/// `outcome` (`None`: a decision with no outcome yet). `feedback` says
/// whether this row carries the decision's feedback.
fn row(exp: &Experience, outcome: Option<&Outcome>, feedback: bool) -> Result<[Value; COLUMNS.len()]> {
    let d = &exp.decision;
    let propensity = outcome.and_then(|o| {
        let i = d.candidates.iter().position(|c| *c == o.model)?;
        d.propensities.get(i).copied()
    });
    let tag = d.experiment.as_ref();
    let shadow = d.shadow.as_ref();
    let fb = exp.feedback.as_ref().filter(|_| feedback);
    Ok([
        Value::Str(Some(d.request_id.clone())),
        Value::Int64(Some(d.time_ms as i64)),
        Value::Int64(Some(d.policy_version as i64)),
        Value::Float(Some(d.cost_weight)),
        Value::Float(Some(d.latency_weight)),
        Value::Str(d.task.clone()),
        Value::Str(Some(json(&d.candidates)?)),
        Value::Str(Some(json(&d.propensities)?)),
        Value::Str(Some(json(&d.chosen)?)),
        Value::Str(outcome.map(|o| o.model.clone())),
        Value::Float(propensity),
        Value::Float(outcome.and_then(|o| o.quality)),
        Value::Double(outcome.map(|o| o.cost_usd)),
        Value::Double(outcome.map(|o| o.latency_ms)),
        Value::Str(outcome.and_then(|o| o.error.clone())),
        Value::Int64(outcome.map(|o| o.time_ms as i64)),
        Value::Str(tag.map(|t| t.experiment.clone())),
        Value::Str(tag.map(|t| t.arm.clone())),
        Value::Str(tag.map(|t| t.strategy.clone())),
        Value::Float(tag.map(|t| t.assignment_propensity)),
        // The u64 hash's bits as a signed integer (`as i64`): same equality
        // and grouping, and `unit & 0xFFFF_FFFF_FFFF_FFFF` (or a cast to
        // uint64) gives the stored hash back.
        Value::Int64(tag.map(|t| t.unit as i64)),
        Value::Str(shadow.map(|s| s.name.clone())),
        Value::Str(shadow.map(|s| s.model.clone())),
        Value::Int64(shadow.map(|s| s.version as i64)),
        Value::Float(fb.map(|f| f.feedback.quality)),
        Value::Str(fb.map(|f| f.feedback.kind.clone())),
        Value::Bool(fb.map(|f| f.late)),
        Value::Str(fb.map(|f| f.answered.model.clone())),
    ])
}

/// Writes the buffered rows as one row group and clears the buffers.
fn write_group<W: Write + Send>(w: &mut SerializedFileWriter<W>, columns: &mut [Column]) -> Result<()> {
    let pq = |e: parquet::errors::ParquetError| Error::Store(format!("writing parquet: {e}"));
    let mut group = w.next_row_group().map_err(pq)?;
    for (col, &(name, _, nullable)) in columns.iter_mut().zip(COLUMNS.iter()) {
        let mut cw = group
            .next_column()
            .map_err(pq)?
            .ok_or_else(|| Error::Store(format!("parquet export: no column writer for `{name}`")))?;
        fn def(d: &[i16], nullable: bool) -> Option<&[i16]> {
            nullable.then_some(d)
        }
        match col {
            Column::Int64(v, d) => cw.typed::<Int64Type>().write_batch(v, def(d, nullable), None),
            Column::Float(v, d) => cw.typed::<FloatType>().write_batch(v, def(d, nullable), None),
            Column::Double(v, d) => cw.typed::<DoubleType>().write_batch(v, def(d, nullable), None),
            Column::Str(v, d) => cw.typed::<ByteArrayType>().write_batch(v, def(d, nullable), None),
            Column::Bool(v, d) => cw.typed::<BoolType>().write_batch(v, def(d, nullable), None),
        }
        .map_err(pq)?;
        cw.close().map_err(pq)?;
        col.clear();
    }
    group.close().map_err(pq)?;
    Ok(())
}

/// Writes every experience in `store` to `out` as a Parquet file (Snappy
/// compressed) with one row per outcome, in store order (outcomes of a
/// decision by model name); returns the number of rows.
///
/// A decision with no outcome yet gets one row whose outcome columns
/// (`model` to `outcome_time_ms`) are null. Features are not exported (sparse
/// vectors; [`export_jsonl`] keeps them).
///
/// Columns (R = required, N = nullable):
///
/// | column | type | |
/// |---|---|---|
/// | `request_id` | STRING | R |
/// | `time_ms` | INT64 | R, decision time, Unix ms |
/// | `policy_version` | INT64 | R |
/// | `cost_weight`, `latency_weight` | FLOAT | R, the operating point λ, μ |
/// | `task` | STRING | N |
/// | `candidates`, `propensities`, `chosen` | STRING | R, JSON arrays |
/// | `model` | STRING | N, the outcome's model |
/// | `propensity` | FLOAT | N, the logged probability of `model` among `candidates` (for a variation's later draws: its single-draw probability, not the probability it was included) |
/// | `quality` | FLOAT | N |
/// | `cost_usd`, `latency_ms` | DOUBLE | N |
/// | `error` | STRING | N |
/// | `outcome_time_ms` | INT64 | N, Unix ms |
/// | `experiment`, `arm`, `strategy` | STRING | N, the experiment tag |
/// | `assignment_propensity` | FLOAT | N |
/// | `unit` | INT64 | N, the tag's u64 unit hash reinterpreted as i64 (same bits: hashes ≥ 2⁶³ read negative; cast to uint64 for the stored value) |
/// | `shadow_name`, `shadow_model` | STRING | N |
/// | `shadow_version` | INT64 | N |
/// | `feedback_quality` | FLOAT | N |
/// | `feedback_kind` | STRING | N |
/// | `feedback_late` | BOOLEAN | N |
/// | `feedback_model` | STRING | N, the model whose answer the feedback is on |
///
/// Feedback is on the request, so it is written once per decision: on the
/// row whose `model` is `feedback_model`, or, when the decision has no such
/// outcome (a merged answer, or no outcome recorded yet), on its first row.
/// `time_ms`, `policy_version` and `outcome_time_ms` are u64 in the store,
/// written as i64 (exact below 2⁶³).
///
/// pandas' default conversion turns a nullable INT64 column into float64,
/// which rounds 64-bit `unit` hashes: read with
/// `pd.read_parquet(path, dtype_backend="pyarrow")` (or DuckDB, Polars) to
/// keep them exact.
///
/// Rows are written in groups of [`ROW_GROUP_ROWS`], so memory stays bounded
/// whatever the store's size.
pub fn export_parquet(store: &dyn ExperienceStore, out: &Path) -> Result<usize> {
    write_parquet(store, out, ROW_GROUP_ROWS)
}

/// [`export_parquet`] with row groups of `group_rows` rows.
fn write_parquet(store: &dyn ExperienceStore, out: &Path, group_rows: usize) -> Result<usize> {
    let ctx = || format!("writing {}", out.display());
    let pq = |e: parquet::errors::ParquetError| Error::Store(format!("writing parquet {}: {e}", out.display()));
    let file = crate::create_file(out)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(group_rows))
        .build();
    let mut w = SerializedFileWriter::new(BufWriter::new(file), Arc::new(schema()?), Arc::new(props)).map_err(pq)?;
    let mut columns: Vec<Column> = COLUMNS.iter().map(|&(_, kind, _)| Column::new(kind)).collect();
    let mut buffered = 0;
    let mut rows = 0;
    for exp in store.iter_from(0) {
        let exp = exp?;
        let answered = exp.feedback.as_ref().map(|f| f.answered.model.as_str());
        let feedback_at = answered
            .and_then(|m| exp.outcomes.iter().position(|o| o.model == m))
            .unwrap_or(0);
        let outcomes: Vec<Option<&Outcome>> = if exp.outcomes.is_empty() {
            vec![None]
        } else {
            exp.outcomes.iter().map(Some).collect()
        };
        for (i, outcome) in outcomes.into_iter().enumerate() {
            let cells = row(&exp, outcome, i == feedback_at)?;
            for ((col, &(name, _, nullable)), cell) in columns.iter_mut().zip(COLUMNS.iter()).zip(cells) {
                col.push(name, nullable, cell)?;
            }
            buffered += 1;
            rows += 1;
            if buffered == group_rows {
                write_group(&mut w, &mut columns)?;
                buffered = 0;
            }
        }
    }
    if buffered > 0 {
        write_group(&mut w, &mut columns)?;
    }
    let buf = w.into_inner().map_err(pq)?;
    let file = buf.into_inner().map_err(|e| Error::io(ctx(), e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(ctx(), e))?;
    Ok(rows)
}

/// Writes every experience in `store` to `out` as JSONL (one serde-JSON
/// [`Experience`] per line, in store order); returns how many.
pub fn export_jsonl(store: &dyn ExperienceStore, out: &Path) -> Result<usize> {
    let ctx = || format!("writing {}", out.display());
    let mut w = BufWriter::new(crate::create_file(out)?);
    let mut n = 0;
    for exp in store.iter_from(0) {
        let exp = exp?;
        serde_json::to_writer(&mut w, &exp).map_err(|e| Error::Store(format!("encoding experience: {e}")))?;
        w.write_all(b"\n").map_err(|e| Error::io(ctx(), e))?;
        n += 1;
    }
    w.flush().map_err(|e| Error::io(ctx(), e))?;
    w.get_ref().sync_all().map_err(|e| Error::io(ctx(), e))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    use super::*;
    use qroute_core::features::Features;
    use qroute_core::record::DecisionRecord;

    #[test]
    fn rows_are_split_into_groups_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let store = qroute_store::SledStore::open(tmp.path().join("store")).unwrap();
        let decisions: Vec<DecisionRecord> = (0..5)
            .map(|i| DecisionRecord {
                request_id: format!("r{i}"),
                time_ms: i,
                features: Features {
                    dim: 4,
                    indices: vec![0],
                    values: vec![1.0],
                },
                candidates: vec!["a".into()],
                propensities: vec![1.0],
                chosen: vec!["a".into()],
                policy_version: 1,
                cost_weight: 0.0,
                latency_weight: 0.0,
                task: None,
                experiment: None,
                shadow: None,
            })
            .collect();
        store.append_decisions(&decisions).unwrap();
        let out = tmp.path().join("x.parquet");
        assert_eq!(write_parquet(&store, &out, 2).unwrap(), 5);

        let reader = SerializedFileReader::new(File::open(&out).unwrap()).unwrap();
        let groups: Vec<i64> = reader.metadata().row_groups().iter().map(|g| g.num_rows()).collect();
        assert_eq!(groups, [2, 2, 1]);
        let ids: Vec<Field> = reader
            .get_row_iter(None)
            .unwrap()
            .map(|r| r.unwrap().into_columns().swap_remove(0).1)
            .collect();
        let want: Vec<Field> = (0..5).map(|i| Field::Str(format!("r{i}"))).collect();
        assert_eq!(ids, want);
    }

    #[test]
    fn an_empty_store_gives_an_empty_table() {
        let tmp = tempfile::tempdir().unwrap();
        let store = qroute_store::SledStore::open(tmp.path().join("store")).unwrap();
        let out = tmp.path().join("x.parquet");
        assert_eq!(export_parquet(&store, &out).unwrap(), 0);
        let reader = SerializedFileReader::new(File::open(&out).unwrap()).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
        assert_eq!(
            reader.metadata().file_metadata().schema_descr().num_columns(),
            COLUMNS.len()
        );
    }
}
