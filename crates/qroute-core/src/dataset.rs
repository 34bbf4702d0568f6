//! Routing datasets: one prompt a line, with the outcome of every candidate
//! model (the JSONL contract in docs/design.md).
//!
//! ```json
//! {"id": "…", "task": "mmlu/anatomy", "split": "train", "prompt": "…",
//!  "outcomes": {"model-a": {"quality": 1.0, "cost_usd": 0.00012},
//!               "model-b": {"quality": 0.0, "cost_usd": 0.0000071, "latency_ms": 850}}}
//! ```
//!
//! The set of models comes from the file (the union over its rows, sorted by
//! name), and every row must carry an outcome for every one of them: a routing
//! dataset with holes cannot be evaluated with full information. Every
//! problem is reported as [`Error::Dataset`] with the file, the 1-based line
//! and the field (`prompt`, `outcomes.gpt4.quality`, …).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::catalog::{Catalog, ModelCard};
use crate::{Error, Result};

/// What one model did on one prompt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelOutcome {
    /// Judged quality in [0, 1].
    pub quality: f32,
    /// Cost of the call in US dollars, >= 0.
    pub cost_usd: f64,
    /// Latency of the call in milliseconds, when the dataset records it.
    pub latency_ms: Option<f64>,
}

/// One prompt and the outcome of every model of the dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub id: String,
    pub task: String,
    pub split: String,
    pub prompt: String,
    /// Indexed like [`Dataset::models`].
    pub outcomes: Vec<ModelOutcome>,
    /// Each model's recorded answer (`outcomes.MODEL.response`), indexed
    /// like `outcomes`; `None` where the source kept none. Apart from the
    /// outcomes because they are large and only simulation reads them.
    pub responses: Vec<Option<String>>,
}

/// A routing dataset loaded from a JSONL file.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// Model names, sorted; the union over the rows of the file.
    pub models: Vec<String>,
    /// Rows in file order.
    pub rows: Vec<Row>,
}

impl Dataset {
    /// Reads and validates a JSONL dataset. Blank lines are skipped; a file
    /// without rows is an error.
    pub fn load(path: impl AsRef<Path>) -> Result<Dataset> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(format!("reading dataset {}", path.display()), e))?;
        parse(path, &bytes)
    }

    /// Parses a dataset already in memory (a bundled one); `label` names it
    /// in errors and in [`Dataset::path`].
    pub fn from_bytes(label: impl AsRef<Path>, bytes: &[u8]) -> Result<Dataset> {
        parse(label.as_ref(), bytes)
    }

    /// Rows whose `split` is `name`, in file order.
    pub fn split(&self, name: &str) -> Vec<&Row> {
        self.rows.iter().filter(|r| r.split == name).collect()
    }

    /// A catalog fitted to `rows`' observed costs and latencies, one card
    /// per model of the dataset, in [`Dataset::models`] order.
    pub fn fit_catalog(&self, rows: &[&Row]) -> Catalog {
        let models = self
            .models
            .iter()
            .enumerate()
            .map(|(m, id)| {
                let calls: Vec<(f32, f64, Option<f64>)> = rows
                    .iter()
                    .map(|r| {
                        (
                            r.prompt.chars().count() as f32,
                            r.outcomes[m].cost_usd,
                            r.outcomes[m].latency_ms,
                        )
                    })
                    .collect();
                ModelCard::fit(id, &calls)
            })
            .collect();
        Catalog { models }
    }

    /// Position of `model` in [`Dataset::models`] (and in every `Row::outcomes`).
    pub fn model_index(&self, model: &str) -> Option<usize> {
        self.models.binary_search_by(|m| m.as_str().cmp(model)).ok()
    }
}

/// A row as read, before the model set of the whole file is known.
struct RawRow {
    line: usize,
    row: Row,
    /// (index into the first-seen model list, outcome, recorded answer)
    outcomes: Vec<(usize, ModelOutcome, Option<String>)>,
}

/// Parses the bytes of a dataset file; `path` is only used in errors and
/// stored in the result.
fn parse(path: &Path, bytes: &[u8]) -> Result<Dataset> {
    let err = |line: usize, field: &str, message: String| Error::Dataset {
        path: path.to_path_buf(),
        line,
        field: field.to_string(),
        message,
    };

    // Model names in first-seen order, and their position in that order.
    let mut seen_models: Vec<String> = Vec::new();
    let mut model_pos: HashMap<String, usize> = HashMap::new();
    let mut first_line_of_id: HashMap<String, usize> = HashMap::new();
    let mut raw: Vec<RawRow> = Vec::new();
    let mut n_lines = 0;

    for (i, mut line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        n_lines = line_no;
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value: Value = serde_json::from_slice(line).map_err(|e| {
            err(
                line_no,
                "(json)",
                format!("not JSON at column {}: {}", e.column(), strip_position(&e)),
            )
        })?;
        let Value::Object(mut obj) = value else {
            return Err(err(
                line_no,
                "(json)",
                format!("expected a JSON object, found {}", type_name(&value)),
            ));
        };

        let id = take_string(&mut obj, "id").map_err(|m| err(line_no, "id", m))?;
        if id.is_empty() {
            return Err(err(line_no, "id", "must not be empty".into()));
        }
        if let Some(&first) = first_line_of_id.get(&id) {
            return Err(err(
                line_no,
                "id",
                format!("duplicate id `{id}` (first seen on line {first})"),
            ));
        }
        first_line_of_id.insert(id.clone(), line_no);

        let task = take_string(&mut obj, "task").map_err(|m| err(line_no, "task", m))?;
        let split = take_string(&mut obj, "split").map_err(|m| err(line_no, "split", m))?;
        let prompt = take_string(&mut obj, "prompt").map_err(|m| err(line_no, "prompt", m))?;

        let outcomes_obj = match obj.remove("outcomes") {
            None => return Err(err(line_no, "outcomes", "missing".into())),
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(err(
                    line_no,
                    "outcomes",
                    format!(
                        "wrong type: expected an object {{model: outcome}}, found {}",
                        type_name(&other)
                    ),
                ))
            }
        };
        if outcomes_obj.is_empty() {
            return Err(err(
                line_no,
                "outcomes",
                "empty: a row needs the outcome of at least one model".into(),
            ));
        }

        let mut outcomes = Vec::with_capacity(outcomes_obj.len());
        for (model, value) in outcomes_obj {
            let field = format!("outcomes.{model}");
            if model.is_empty() {
                return Err(err(line_no, &field, "model name must not be empty".into()));
            }
            let (outcome, response) = parse_outcome(value).map_err(|(sub, m)| {
                let field = match sub {
                    Some(sub) => format!("{field}.{sub}"),
                    None => field.clone(),
                };
                err(line_no, &field, m)
            })?;
            let pos = match model_pos.get(&model) {
                Some(&p) => p,
                None => {
                    let p = seen_models.len();
                    seen_models.push(model.clone());
                    model_pos.insert(model, p);
                    p
                }
            };
            outcomes.push((pos, outcome, response));
        }

        raw.push(RawRow {
            line: line_no,
            row: Row {
                id,
                task,
                split,
                prompt,
                outcomes: Vec::new(),
                responses: Vec::new(),
            },
            outcomes,
        });
    }

    if raw.is_empty() {
        let what = if bytes.is_empty() {
            "the file is empty"
        } else {
            "the file has only blank lines"
        };
        return Err(err(
            n_lines.max(1),
            "(file)",
            format!("no rows: {what}; a dataset needs at least one JSON line"),
        ));
    }

    // Sorted model list, and the map from first-seen position to sorted index.
    let mut order: Vec<usize> = (0..seen_models.len()).collect();
    order.sort_by(|&a, &b| seen_models[a].cmp(&seen_models[b]));
    let mut sorted_index = vec![0usize; seen_models.len()];
    for (sorted, &pos) in order.iter().enumerate() {
        sorted_index[pos] = sorted;
    }
    let models: Vec<String> = order.iter().map(|&p| seen_models[p].clone()).collect();

    let mut rows = Vec::with_capacity(raw.len());
    for r in raw {
        let mut slots: Vec<Option<ModelOutcome>> = vec![None; models.len()];
        let mut responses: Vec<Option<String>> = vec![None; models.len()];
        for (pos, o, response) in r.outcomes {
            slots[sorted_index[pos]] = Some(o);
            responses[sorted_index[pos]] = response;
        }
        let mut outcomes = Vec::with_capacity(models.len());
        for (m, slot) in slots.into_iter().enumerate() {
            match slot {
                Some(o) => outcomes.push(o),
                None => {
                    return Err(err(
                        r.line,
                        &format!("outcomes.{}", models[m]),
                        format!(
                            "missing: other rows of the file have model `{}` ({} models in all), \
                             but this one has no outcome for it; a routing dataset with holes \
                             cannot be evaluated with full information",
                            models[m],
                            models.len()
                        ),
                    ))
                }
            }
        }
        let mut row = r.row;
        row.outcomes = outcomes;
        row.responses = responses;
        rows.push(row);
    }

    Ok(Dataset {
        path: path.to_path_buf(),
        models,
        rows,
    })
}

/// The outcome and recorded answer of one model on one prompt.
type ParsedOutcome = (ModelOutcome, Option<String>);

/// Validates one `{"quality", "cost_usd", "latency_ms"?, "response"?}`
/// object. On error, returns the sub-field (None for the outcome itself)
/// and the message.
fn parse_outcome(value: Value) -> std::result::Result<ParsedOutcome, (Option<&'static str>, String)> {
    let Value::Object(mut obj) = value else {
        return Err((
            None,
            format!(
                "wrong type: expected an object {{\"quality\", \"cost_usd\"}}, found {}",
                type_name(&value)
            ),
        ));
    };
    let quality = number(&obj, "quality")
        .and_then(|q| q.ok_or_else(|| "missing".to_string()))
        .and_then(|q| {
            if (0.0..=1.0).contains(&q) {
                Ok(q)
            } else {
                Err(format!("out of range: {q} is not in [0, 1]"))
            }
        })
        .map_err(|m| (Some("quality"), m))?;
    let cost_usd = number(&obj, "cost_usd")
        .and_then(|c| c.ok_or_else(|| "missing".to_string()))
        .and_then(non_negative)
        .map_err(|m| (Some("cost_usd"), m))?;
    let latency_ms = number(&obj, "latency_ms")
        .and_then(|l| l.map(non_negative).transpose())
        .map_err(|m| (Some("latency_ms"), m))?;
    let response = match obj.remove("response") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            return Err((
                Some("response"),
                format!("wrong type: expected a string, found {}", type_name(&other)),
            ))
        }
    };
    let outcome = ModelOutcome {
        quality: quality as f32,
        cost_usd,
        latency_ms,
    };
    Ok((outcome, response))
}

fn non_negative(x: f64) -> std::result::Result<f64, String> {
    if x >= 0.0 {
        Ok(x)
    } else {
        Err(format!("out of range: {x} is negative, must be >= 0"))
    }
}

/// A numeric field: Ok(None) when absent or null, Err when of another type.
fn number(obj: &Map<String, Value>, key: &str) -> std::result::Result<Option<f64>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if x.is_finite() => Ok(Some(x)),
            _ => Err(format!("not a finite number: {n}")),
        },
        Some(other) => Err(format!("wrong type: expected a number, found {}", type_name(other))),
    }
}

/// Removes a required string field from the object.
fn take_string(obj: &mut Map<String, Value>, key: &str) -> std::result::Result<String, String> {
    match obj.remove(key) {
        None => Err("missing".into()),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!("wrong type: expected a string, found {}", type_name(&other))),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// serde_json's message without its " at line L column C" suffix (the line
/// is ours to report, the column is reported separately).
fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<Dataset> {
        parse(Path::new("mem.jsonl"), text.as_bytes())
    }

    fn field_of(e: Error) -> (usize, String, String) {
        match e {
            Error::Dataset {
                line, field, message, ..
            } => (line, field, message),
            other => panic!("expected a dataset error, got {other}"),
        }
    }

    const A: &str = r#"{"id":"a","task":"t/x","split":"train","prompt":"hi","outcomes":{"zed":{"quality":1.0,"cost_usd":0.5,"response":"Hello!"},"alpha":{"quality":0.25,"cost_usd":0.01,"latency_ms":120}}}"#;
    const B: &str = r#"{"id":"b","task":"t/y","split":"test","prompt":"yo","outcomes":{"alpha":{"quality":0,"cost_usd":0},"zed":{"quality":0.5,"cost_usd":1e-6}}}"#;

    #[test]
    fn loads_models_sorted_and_outcomes_indexed_like_models() {
        let d = load_str(&format!("{A}\n\n{B}\n")).unwrap();
        assert_eq!(d.models, vec!["alpha", "zed"]);
        assert_eq!(d.rows.len(), 2);
        let a = &d.rows[0];
        assert_eq!((a.id.as_str(), a.task.as_str(), a.prompt.as_str()), ("a", "t/x", "hi"));
        assert_eq!(a.outcomes[0].quality, 0.25);
        assert_eq!(a.outcomes[0].latency_ms, Some(120.0));
        assert_eq!(a.outcomes[1].cost_usd, 0.5);
        assert_eq!(a.responses, vec![None, Some("Hello!".to_string())]);
        assert_eq!(a.outcomes[1].latency_ms, None);
        assert_eq!(d.rows[1].outcomes[1].cost_usd, 1e-6);
        assert_eq!(d.model_index("zed"), Some(1));
        assert_eq!(d.model_index("nope"), None);
        assert_eq!(d.split("test").len(), 1);
        assert_eq!(d.split("test")[0].id, "b");
        assert!(d.split("dev").is_empty());
    }

    #[test]
    fn crlf_and_trailing_blank_lines_are_fine() {
        let d = load_str(&format!("{A}\r\n   \r\n{B}\r\n\r\n")).unwrap();
        assert_eq!(d.rows.len(), 2);
    }

    #[test]
    fn errors_carry_line_and_field() {
        let bad = B.replace("\"quality\":0.5", "\"quality\":-0.1");
        let (line, field, msg) = field_of(load_str(&format!("{A}\n\n{bad}")).unwrap_err());
        assert_eq!((line, field.as_str()), (3, "outcomes.zed.quality"));
        assert!(msg.contains("out of range"), "{msg}");

        let bad = B.replace("\"cost_usd\":0}", "\"cost_usd\":null}");
        let (_, field, msg) = field_of(load_str(&bad).unwrap_err());
        assert_eq!(field, "outcomes.alpha.cost_usd");
        assert_eq!(msg, "missing");

        let bad = A.replace("\"latency_ms\":120", "\"latency_ms\":-3");
        let (_, field, _) = field_of(load_str(&bad).unwrap_err());
        assert_eq!(field, "outcomes.alpha.latency_ms");

        let bad = A.replace("\"split\":\"train\"", "\"split\":7");
        let (_, field, msg) = field_of(load_str(&bad).unwrap_err());
        assert_eq!(field, "split");
        assert!(msg.contains("wrong type"), "{msg}");

        let bad = A.replace("\"response\":\"Hello!\"", "\"response\":7");
        let (_, field, msg) = field_of(load_str(&bad).unwrap_err());
        assert_eq!(field, "outcomes.zed.response");
        assert!(msg.contains("wrong type"), "{msg}");

        let bad = A.replace("{\"quality\":1.0,\"cost_usd\":0.5,\"response\":\"Hello!\"}", "3");
        let (_, field, _) = field_of(load_str(&bad).unwrap_err());
        assert_eq!(field, "outcomes.zed");

        let (line, field, msg) = field_of(load_str(&format!("{A}\n[1,2]")).unwrap_err());
        assert_eq!((line, field.as_str()), (2, "(json)"));
        assert!(msg.contains("array"), "{msg}");

        let (line, _, msg) = field_of(load_str(&format!("{A}\n{{\"id\": tru}}")).unwrap_err());
        assert_eq!(line, 2);
        assert!(msg.starts_with("not JSON at column"), "{msg}");
        assert!(!msg.contains("line 1"), "{msg}");
    }

    #[test]
    fn a_model_missing_from_a_later_row_names_that_row() {
        let c = r#"{"id":"c","task":"t","split":"test","prompt":"p","outcomes":{"zed":{"quality":1,"cost_usd":1}}}"#;
        let (line, field, msg) = field_of(load_str(&format!("{A}\n{c}\n{B}")).unwrap_err());
        assert_eq!((line, field.as_str()), (2, "outcomes.alpha"));
        assert!(msg.contains("holes"), "{msg}");
    }

    #[test]
    fn a_model_only_in_a_later_row_blames_the_earlier_rows() {
        let c = r#"{"id":"c","task":"t","split":"test","prompt":"p","outcomes":{"alpha":{"quality":1,"cost_usd":1},"zed":{"quality":1,"cost_usd":1},"new":{"quality":1,"cost_usd":1}}}"#;
        let (line, field, _) = field_of(load_str(&format!("{A}\n{c}")).unwrap_err());
        assert_eq!((line, field.as_str()), (1, "outcomes.new"));
    }

    #[test]
    fn only_blank_lines_is_an_error() {
        let (_, field, msg) = field_of(load_str("\n  \n").unwrap_err());
        assert_eq!(field, "(file)");
        assert!(msg.contains("no rows"), "{msg}");
    }
}
