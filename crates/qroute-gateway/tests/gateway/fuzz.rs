//! Robustness of what the gateway reads from outside: whatever bytes a
//! client sends, the parser the handlers use (`parse_json`) and the checks
//! after it answer with an error, never a panic; whatever a config file
//! holds, `Config::parse` does the same. Property tests (proptest), a few
//! thousand cases per target by default; `PROPTEST_CASES=N` runs N per
//! target (`PROPTEST_CASES=250000 cargo test --release -p qroute-gateway
//! --test gateway fuzz -- --nocapture` prints how many inputs each ran).
//!
//! Also the request bounds the OpenAPI document states, checked against the
//! server's parsers, and the document's scopes against the router's.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::{json, Value};

use qroute_experiment::spec::MAX_HORIZON;
use qroute_experiment::ExperimentSpec;
use qroute_gateway::access::keys::NewKey;
use qroute_gateway::access::Scope;
use qroute_gateway::config::Config;
use qroute_gateway::http::auth::{scope, Login};
use qroute_gateway::http::chat_request::ChatCompletionRequest;
use qroute_gateway::http::errors::parse_json;
use qroute_gateway::http::execute::{check_numbers, ExecuteRequest};
use qroute_gateway::http::feedback::FeedbackRequest;
use qroute_gateway::http::{ENDPOINTS, OPENAPI};

const DEFAULT_TOML: &str = qroute_gateway::embedded::CONFIG;
const EXAMPLE_TOML: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/example.toml"));
const NOW_MS: u64 = 1_765_000_000_000;

/// Cases per target: `PROPTEST_CASES`, else `default`.
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        // No regression files written into the source tree: a failure
        // prints its shrunk input, which goes into a test by hand.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Every request body type through the parser its handler uses, then the
/// checks the handler runs on it.
fn parse_every_body(bytes: &[u8]) {
    if let Ok(r) = parse_json::<ExecuteRequest>(bytes) {
        let _ = r.validate();
    }
    if let Ok(r) = parse_json::<ChatCompletionRequest>(bytes) {
        let _ = check_numbers(
            &[
                ("max_tokens", r.max_tokens),
                ("max_completion_tokens", r.max_completion_tokens),
            ],
            r.temperature,
            r.cost_weight,
            r.latency_weight,
        );
    }
    if let Ok(r) = parse_json::<FeedbackRequest>(bytes) {
        let _ = r.feedback();
    }
    if let Ok(k) = parse_json::<NewKey>(bytes) {
        if k.validate(&["gpt-4-1106-preview"], NOW_MS).is_ok() {
            let _ = k.issue(NOW_MS);
        }
    }
    if let Ok(s) = parse_json::<ExperimentSpec>(bytes) {
        if s.validate().is_ok() {
            let _ = s.control();
            let _ = s.assigner();
        }
    }
    let _ = parse_json::<Login>(bytes);
}

/// Field names of every request body, so random objects hit real fields.
const FIELDS: &[&str] = &[
    "prompt",
    "system",
    "persona",
    "task_type",
    "max_tokens",
    "temperature",
    "preference",
    "cost_weight",
    "latency_weight",
    "max_cost_usd",
    "models",
    "variations",
    "combine",
    "user_id",
    "model",
    "messages",
    "role",
    "content",
    "type",
    "text",
    "stream",
    "stream_options",
    "include_usage",
    "max_completion_tokens",
    "user",
    "request_id",
    "quality",
    "thumbs",
    "metric",
    "value",
    "min",
    "max",
    "name",
    "rpm",
    "tpm",
    "budget_usd",
    "budget_period",
    "expires_at",
    "admin",
    "api_key",
    "id",
    "description",
    "unit",
    "arms",
    "control",
    "holdout",
    "start_ms",
    "end_ms",
    "horizon",
    "weight",
    "strategy",
    "checkpoint",
    "kind",
    "weights",
];

/// Strings the parsers and checks treat specially.
const WORDS: &[&str] = &[
    "",
    " ",
    "\t\n",
    "\u{3000}",
    "\u{1c}",
    "auto",
    "user",
    "api_key",
    "header:x-tenant",
    "header:",
    "cookie",
    "learned",
    "balanced",
    "fixed",
    "weighted",
    "round_robin",
    "up",
    "down",
    "day",
    "month",
    "total",
    "holdout",
    "system",
    "developer",
    "assistant",
    "tool",
    "text",
    "image_url",
    "gpt-4-1106-preview",
    "v1",
    ".hidden",
    "../etc",
    "a/b",
    "é",
    "\u{0}",
];

/// Numbers at the bounds the server checks.
const NUMBERS: &[f64] = &[
    0.0,
    -0.0,
    1.0,
    -1.0,
    2.0,
    2.0000000000000004,
    0.5,
    1.0000000000000002,
    3.4028234663852886e38,
    3.402823466385289e38,
    1e308,
    -1e308,
    5e-324,
    -5e-324,
    4294967295.0,
    4294967296.0,
    9.223372036854776e18,
    1.8446744073709552e19,
    1e9,
    1e9 + 1.0,
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::sample::select(
            &[
                0u64,
                1,
                2,
                3,
                5,
                1000,
                4_294_967_295,
                4_294_967_296,
                MAX_HORIZON,
                MAX_HORIZON + 1,
                u64::MAX
            ][..]
        )
        .prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        prop::sample::select(NUMBERS).prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
        prop::sample::select(WORDS).prop_map(|s| Value::String(s.to_string())),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(FIELDS).prop_map(String::from),
        1 => any::<String>(),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..8).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A valid body of each kind, to mutate.
fn bases() -> Vec<Value> {
    vec![
        json!({"prompt": "What is 17 * 23?", "system": "Be brief.", "persona": "p", "task_type": "gsm8k",
            "max_tokens": 256, "temperature": 0.2, "variations": 2, "combine": false, "user_id": "u-17",
            "preference": {"cost_weight": 2.0, "latency_weight": 0.1, "max_cost_usd": 0.01,
                "models": ["gpt-4-1106-preview"]}}),
        json!({"model": "auto", "messages": [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url"}]}],
            "stream": true, "stream_options": {"include_usage": true}, "max_tokens": 5,
            "max_completion_tokens": 6, "temperature": 1.0, "user": "u", "cost_weight": 0.5,
            "latency_weight": 0, "max_cost_usd": 1, "models": ["a"], "task_type": "x", "persona": "p",
            "variations": 2, "combine": true, "n": 1}),
        json!({"request_id": "abc", "metric": "m", "value": 0.5, "min": 0, "max": 1}),
        json!({"request_id": "abc", "quality": 0.5}),
        json!({"request_id": "abc", "thumbs": "up"}),
        json!({"name": "ci", "models": ["gpt-4-1106-preview"], "rpm": 60, "tpm": 1000, "budget_usd": 5.0,
            "budget_period": "day", "expires_at": 4_102_444_800_000u64, "admin": false}),
        json!({"id": "e1", "description": "d", "unit": "header:x-tenant", "control": "b", "holdout": 0.1,
            "start_ms": 1, "end_ms": 2, "horizon": 1000, "arms": [
                {"name": "a", "weight": 1, "strategy": {"kind": "learned"}},
                {"name": "b", "weight": 2, "checkpoint": "v1",
                    "strategy": {"kind": "weighted", "weights": {"gpt-4-1106-preview": 1.0}}},
                {"name": "c", "strategy": {"kind": "fixed", "model": "m"}}]}),
        json!({"api_key": "sk-qr-0123"}),
    ]
}

#[derive(Debug, Clone)]
enum Edit {
    /// Replaces the value at the path.
    Set(Vec<Index>, Value),
    /// Adds a field to the object at the path (or an element to an array).
    Insert(Vec<Index>, String, Value),
    /// Removes what the path leads to.
    Remove(Vec<Index>),
}

fn edit() -> impl Strategy<Value = Edit> {
    let path = || prop::collection::vec(any::<Index>(), 0..5);
    // Mostly scalars, so that most bodies still parse and reach the checks.
    let new = || prop_oneof![4 => leaf(), 1 => value()];
    prop_oneof![
        3 => (path(), new()).prop_map(|(p, v)| Edit::Set(p, v)),
        1 => (path(), key(), new()).prop_map(|(p, k, v)| Edit::Insert(p, k, v)),
        2 => path().prop_map(Edit::Remove),
    ]
}

/// The child `ix` picks, if `v` has children.
fn child<'a>(v: &'a mut Value, ix: &Index) -> Option<&'a mut Value> {
    match v {
        Value::Object(m) if !m.is_empty() => {
            let i = ix.index(m.len());
            m.iter_mut().nth(i).map(|(_, c)| c)
        }
        Value::Array(a) if !a.is_empty() => {
            let i = ix.index(a.len());
            a.get_mut(i)
        }
        _ => None,
    }
}

fn apply(v: &mut Value, e: &Edit) {
    match e {
        Edit::Set(path, new) => match path.split_first() {
            Some((ix, rest)) => match child(v, ix) {
                Some(c) => apply(c, &Edit::Set(rest.to_vec(), new.clone())),
                None => *v = new.clone(),
            },
            None => *v = new.clone(),
        },
        Edit::Insert(path, k, new) => match path.split_first().and_then(|(ix, rest)| Some((child(v, ix)?, rest))) {
            Some((c, rest)) if matches!(c, Value::Object(_) | Value::Array(_)) => {
                apply(c, &Edit::Insert(rest.to_vec(), k.clone(), new.clone()))
            }
            _ => match v {
                Value::Object(m) => {
                    m.insert(k.clone(), new.clone());
                }
                Value::Array(a) => a.push(new.clone()),
                _ => {}
            },
        },
        Edit::Remove(path) => {
            let Some((ix, rest)) = path.split_first() else { return };
            let deeper =
                !rest.is_empty() && child(v, ix).is_some_and(|c| matches!(c, Value::Object(_) | Value::Array(_)));
            if deeper {
                if let Some(c) = child(v, ix) {
                    apply(c, &Edit::Remove(rest.to_vec()));
                }
                return;
            }
            match v {
                Value::Object(m) if !m.is_empty() => {
                    let i = ix.index(m.len());
                    if let Some(k) = m.keys().nth(i).cloned() {
                        m.remove(&k);
                    }
                }
                Value::Array(a) if !a.is_empty() => {
                    let i = ix.index(a.len());
                    a.remove(i);
                }
                _ => {}
            }
        }
    }
}

/// A text edit: TOML-ish tokens replacing, inserted into or cut from the text.
#[derive(Debug, Clone)]
enum TextEdit {
    DropLine(Index),
    DupLine(Index, Index),
    /// The value after a line's `=`.
    SetValue(Index, String),
    Splice(Index, usize, String),
}

const TOML_TOKENS: &[&str] = &[
    "=",
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    ",",
    "\"",
    "'",
    "\"\"\"",
    "#",
    "\n",
    " ",
    ".",
    "-",
    "0",
    "1",
    "-1",
    "1e309",
    "nan",
    "inf",
    "-inf",
    "true",
    "false",
    "1979-05-27T07:32:00Z",
    "0x1f",
    "9223372036854775808",
    "18446744073709551616",
    "\"sim\"",
    "\"auto\"",
    "[]",
    "{}",
    "\"\\u0000\"",
    "\"\\uD800\"",
    "models",
    "providers",
    "kind",
    "\"simulated\"",
    "\"openai\"",
    "experiments",
    "arms",
    "strategy",
    "{ kind = \"learned\" }",
    "variations",
    "max",
    "default",
    "0.0",
    "1e-300",
    "\"header:\"",
    "[[experiments]]",
    "id = \"e\"",
    "unit = \"user\"",
];

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(prop::sample::select(TOML_TOKENS), 1..6).prop_map(|t| t.concat()),
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        any::<String>().prop_map(|s| format!("{s:?}")),
        any::<String>(),
    ]
}

fn text_edit() -> impl Strategy<Value = TextEdit> {
    prop_oneof![
        1 => any::<Index>().prop_map(TextEdit::DropLine),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| TextEdit::DupLine(a, b)),
        3 => (any::<Index>(), toml_value()).prop_map(|(i, v)| TextEdit::SetValue(i, v)),
        2 => (any::<Index>(), 0usize..16, toml_value()).prop_map(|(i, n, s)| TextEdit::Splice(i, n, s)),
    ]
}

fn apply_text(text: &str, e: &TextEdit) -> String {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    if lines.is_empty() {
        lines.push(String::new());
    }
    match e {
        TextEdit::DropLine(i) => {
            lines.remove(i.index(lines.len()));
        }
        TextEdit::DupLine(from, to) => {
            let line = lines[from.index(lines.len())].clone();
            let at = to.index(lines.len() + 1);
            lines.insert(at, line);
        }
        TextEdit::SetValue(i, v) => {
            let n = i.index(lines.len());
            if let Some((k, _)) = lines[n].split_once('=') {
                lines[n] = format!("{k}= {v}");
            } else {
                lines[n] = v.clone();
            }
        }
        TextEdit::Splice(i, cut, s) => {
            let chars: Vec<char> = text.chars().collect();
            let at = i.index(chars.len() + 1);
            let end = (at + cut).min(chars.len());
            let mut out: String = chars[..at].iter().collect();
            out.push_str(s);
            out.extend(&chars[end..]);
            return out;
        }
    }
    lines.join("\n")
}

fn parse_config(text: &str) {
    let _ = Config::parse(Path::new("fuzz.toml"), text);
}

/// Runs `test` on `cases` inputs from `strategy` (shrinking a failure to a
/// small input) and prints how many inputs it ran.
fn fuzz<S: Strategy>(name: &str, default_cases: u32, strategy: S, test: impl Fn(S::Value))
where
    S::Value: std::fmt::Debug,
{
    let ran = AtomicU64::new(0);
    let result = TestRunner::new(config(default_cases)).run(&strategy, |v| {
        ran.fetch_add(1, Ordering::Relaxed);
        test(v);
        Ok(())
    });
    println!("fuzz target {name}: {} inputs", ran.load(Ordering::Relaxed));
    if let Err(e) = result {
        panic!("fuzz target {name} failed: {e}");
    }
}

const CASES: u32 = 3000;

/// Arbitrary bytes, alone and after a JSON-looking start.
#[test]
fn fuzz_request_bytes() {
    let starts: &[&[u8]] = &[b"", b"{", b"[", b"{\"prompt\":", b"{\"arms\":[", b"\""];
    let strategy = (prop::sample::select(starts), prop::collection::vec(any::<u8>(), 0..256));
    fuzz("request_bytes", CASES, strategy, |(start, bytes)| {
        let mut body = start.to_vec();
        body.extend_from_slice(&bytes);
        parse_every_body(&body);
    });
}

/// Arbitrary JSON values, with the real field names.
#[test]
fn fuzz_request_values() {
    fuzz("request_values", CASES, value(), |v| {
        parse_every_body(v.to_string().as_bytes())
    });
}

/// Valid bodies with a few fields replaced, added or removed.
#[test]
fn fuzz_request_mutations() {
    let strategy = (prop::sample::select(bases()), prop::collection::vec(edit(), 1..3));
    fuzz("request_mutations", CASES, strategy, |(mut v, edits)| {
        for e in &edits {
            apply(&mut v, e);
        }
        parse_every_body(v.to_string().as_bytes());
    });
}

/// Arbitrary text, and TOML-ish token soup.
#[test]
fn fuzz_config_text() {
    let strategy = (
        any::<String>(),
        prop::collection::vec(prop::sample::select(TOML_TOKENS), 0..40),
    );
    fuzz("config_text", CASES, strategy, |(s, tokens)| {
        parse_config(&s);
        parse_config(&tokens.concat());
    });
}

/// The shipped configs with lines dropped, duplicated or rewritten and text
/// spliced in.
#[test]
fn fuzz_config_mutations() {
    let strategy = (any::<bool>(), prop::collection::vec(text_edit(), 1..5));
    fuzz("config_mutations", CASES, strategy, |(example, edits)| {
        let mut text = if example { EXAMPLE_TOML } else { DEFAULT_TOML }.to_string();
        for e in &edits {
            text = apply_text(&text, e);
        }
        parse_config(&text);
    });
}

#[test]
fn the_shipped_configs_parse() {
    for text in [DEFAULT_TOML, EXAMPLE_TOML] {
        Config::parse(Path::new("x.toml"), text).unwrap();
    }
}

/// A struct reads from a JSON object only: serde's derived impls would also
/// take an array, the fields in order (schemathesis found
/// `"preference": [null, null]` accepted).
#[test]
fn arrays_are_not_objects() {
    let refused = |body: Value| {
        let bytes = body.to_string();
        let errors = [
            parse_json::<ExecuteRequest>(bytes.as_bytes()).err(),
            parse_json::<ChatCompletionRequest>(bytes.as_bytes()).err(),
            parse_json::<FeedbackRequest>(bytes.as_bytes()).err(),
            parse_json::<ExperimentSpec>(bytes.as_bytes()).err(),
        ];
        errors.into_iter().filter(Option::is_some).count()
    };
    // Whole bodies as arrays.
    assert_eq!(refused(json!(["What is 17 * 23?"])), 4);
    assert_eq!(refused(json!(["auto", [["user", "hi"]]])), 4);
    assert_eq!(refused(json!(["abc", 0.5])), 4);
    assert_eq!(refused(json!(["e", "", "user", [["a", 1, ["learned"]]]])), 4);
    // Nested objects as arrays.
    let e = parse_json::<ExecuteRequest>(br#"{"prompt": "x", "preference": [null, null]}"#).unwrap_err();
    assert!(e.to_string().contains("preference"), "{e}");
    assert!(parse_json::<ExecuteRequest>(br#"{"prompt": "x", "preference": [0.5]}"#).is_err());
    assert!(parse_json::<ExecuteRequest>(br#"{"prompt": "x", "preference": {"cost_weight": 0.5}}"#).is_ok());
    for chat in [
        r#"{"model": "auto", "messages": [["user", "hi"]]}"#,
        r#"{"model": "auto", "messages": [{"role": "user", "content": [["text", "hi"]]}]}"#,
        r#"{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stream_options": [true]}"#,
    ] {
        assert!(parse_json::<ChatCompletionRequest>(chat.as_bytes()).is_err(), "{chat}");
    }
    let spec = |arms: &str| format!(r#"{{"id": "e", "unit": "user", "arms": {arms}}}"#);
    assert!(
        parse_json::<ExperimentSpec>(spec(r#"[{"name": "a", "strategy": {"kind": "learned"}}]"#).as_bytes()).is_ok()
    );
    assert!(parse_json::<ExperimentSpec>(spec(r#"[["a", 1, {"kind": "learned"}]]"#).as_bytes()).is_err());
    assert!(parse_json::<ExperimentSpec>(spec(r#"[{"name": "a", "strategy": ["learned"]}]"#).as_bytes()).is_err());
    // The config reads the same structs from TOML tables.
    let config = format!(
        "{DEFAULT_TOML}\n[[experiments]]\nid = \"e\"\nunit = \"user\"\n\n[[experiments.arms]]\nname = \"a\"\nstrategy = {{ kind = \"learned\" }}\n"
    );
    assert_eq!(
        Config::parse(Path::new("x.toml"), &config).unwrap().experiments.len(),
        1
    );
}

/// The bounds the OpenAPI document states are where the server draws them,
/// to the last representable number.
#[test]
fn bounds_match_the_document() {
    let execute = |extra: Value| {
        let mut body = json!({"prompt": "x"});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        parse_json::<ExecuteRequest>(body.to_string().as_bytes()).and_then(|r| r.validate())
    };
    assert!(execute(json!({})).is_ok());
    assert!(execute(json!({"prompt": " \u{3000}\n"})).is_err());
    assert!(execute(json!({"prompt": " \u{3000}\n", "system": "s"})).is_err());
    assert!(execute(json!({"max_tokens": 0})).is_err());
    assert!(execute(json!({"max_tokens": 1})).is_ok());
    assert!(execute(json!({"temperature": 2.0})).is_ok());
    assert!(execute(json!({"temperature": 2.0000000000000004})).is_err());
    assert!(execute(json!({"temperature": -5e-324})).is_err());
    for w in ["cost_weight", "latency_weight"] {
        let top = qroute_gateway::http::execute::MAX_WEIGHT;
        assert!(execute(json!({"preference": {w: top}})).is_ok(), "{w}");
        assert!(
            execute(json!({"preference": {w: top * (1.0 + f64::EPSILON)}})).is_err(),
            "{w}"
        );
        assert!(execute(json!({"preference": {w: -5e-324}})).is_err(), "{w}");
        assert!(execute(json!({"preference": {w: 0}})).is_ok(), "{w}");
    }

    let feedback = |q: f64| {
        parse_json::<FeedbackRequest>(json!({"request_id": "r", "quality": q}).to_string().as_bytes())
            .and_then(|r| r.feedback())
    };
    assert!(feedback(1.0).is_ok() && feedback(0.0).is_ok());
    assert!(feedback(1.0000000000000002).is_err() && feedback(-5e-324).is_err());
    let metric = json!({"request_id": "r", "metric": "m", "value": 1, "min": 1, "max": 1});
    assert!(parse_json::<FeedbackRequest>(metric.to_string().as_bytes())
        .unwrap()
        .feedback()
        .is_err());

    let horizon = |h: Value| {
        let spec = json!({"id": "e", "unit": "user", "horizon": h,
            "arms": [{"name": "a", "strategy": {"kind": "learned"}}]});
        parse_json::<ExperimentSpec>(spec.to_string().as_bytes()).and_then(|s| s.validate())
    };
    assert!(horizon(json!(1)).is_ok() && horizon(json!(MAX_HORIZON)).is_ok());
    assert!(horizon(json!(0)).is_err() && horizon(json!(MAX_HORIZON + 1)).is_err());
    assert!(horizon(json!(1u64 << 63)).is_err() && horizon(json!(u64::MAX)).is_err());

    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["ExperimentSpec"]["properties"]["horizon"]["maximum"],
        json!(MAX_HORIZON)
    );
    let config = Config::parse(Path::new("x.toml"), DEFAULT_TOML).unwrap();
    for s in ["ExecuteRequest", "ChatCompletionRequest"] {
        assert_eq!(
            schemas[s]["properties"]["variations"]["maximum"],
            json!(config.variations.max),
            "{s}.variations: the embedded default's variations.max"
        );
    }
    assert_eq!(
        schemas["ExecuteRequest"]["properties"]["temperature"]["maximum"],
        json!(2)
    );
    for (schema, field) in [
        ("Preference", "cost_weight"),
        ("Preference", "latency_weight"),
        ("ChatCompletionRequest", "cost_weight"),
        ("ChatCompletionRequest", "latency_weight"),
    ] {
        assert_eq!(
            schemas[schema]["properties"][field]["maximum"].as_f64(),
            Some(qroute_gateway::http::execute::MAX_WEIGHT),
            "{schema}.{field}"
        );
    }
}

/// Every endpoint the router serves is in the document, and every
/// operation states the scope `auth::scope` gives it, with `security: []`
/// exactly on the public ones and a 401 on every other.
#[test]
fn the_document_states_each_scope() {
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for e in ENDPOINTS {
        assert!(paths.contains_key(*e), "openapi.json lacks {e}");
    }
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let m: axum::http::Method = method.to_uppercase().parse().unwrap();
            let concrete = path
                .replace("{id}", "x")
                .replace("{version}", "1")
                .replace("{file}", "policy.json");
            let want = match scope(&m, &concrete, false) {
                Scope::Public => "Scope: public",
                Scope::Key => "Scope: key",
                Scope::Admin => "Scope: admin",
            };
            let description = op["description"].as_str().unwrap_or_default();
            assert!(description.contains(want), "{method} {path}: says not {want:?}");
            let public = want == "Scope: public";
            assert_eq!(
                op.get("security") == Some(&json!([])),
                public,
                "{method} {path}: security"
            );
            if !public {
                assert!(op["responses"].get("401").is_some(), "{method} {path}: 401");
            }
            if op.get("requestBody").is_some() {
                assert!(op["responses"].get("415").is_some(), "{method} {path}: 415");
            }
            operations += 1;
        }
    }
    assert!(operations >= ENDPOINTS.len());
}
