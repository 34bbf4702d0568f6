//! Observability conventions: `/metrics` is valid Prometheus text with
//! `# HELP` and `# TYPE` on every family and `_total` on every counter, the
//! cost, token and breaker families are there per model, and every answer
//! carries an `X-Request-Id`.
//!
//! The metrics recorder is process-wide and shared with the other tests in
//! this binary, so these tests use model names of their own and assert only
//! on their own series.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use qroute_gateway::config::Config;
use qroute_mock::MockConfig;
use serde_json::json;

use crate::harness::{self, start};

// ------------------------------------------------------------- the parser

/// One sample line: its metric name, labels and value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// One metric family: its `# HELP`, `# TYPE` and samples.
#[derive(Debug, Default)]
struct Family {
    help: Option<String>,
    kind: Option<String>,
    samples: Vec<Sample>,
}

/// `Err(format!(…))` from the enclosing function unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return Err(format!($($why)+));
        }
    };
}

/// Parses the Prometheus text exposition format (version 0.0.4) strictly,
/// refusing anything Prometheus would reject or that the format forbids: a
/// malformed name, label or value; a `# TYPE` after the family's samples,
/// or twice; a family whose lines are split up; a histogram series without
/// its suffix or `le`; the same series twice. Comments other than `# HELP`
/// and `# TYPE` are refused too, since the gateway writes none.
fn parse_exposition(text: &str) -> Result<BTreeMap<String, Family>, String> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut closed: HashSet<String> = HashSet::new();
    let mut series: HashSet<(String, Vec<(String, String)>)> = HashSet::new();
    ensure!(
        text.is_empty() || text.ends_with('\n'),
        "the last line must end in a newline"
    );
    for (n, line) in text.lines().enumerate() {
        let at = format!("line {}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        // The family this line belongs to.
        let family = if let Some(comment) = line.strip_prefix("# ") {
            let words = comment
                .split_once(' ')
                .and_then(|(k, rest)| Some((k, rest.split_once(' ')?)));
            let Some((keyword, (name, arg))) = words else {
                return Err(format!("{at}: a comment"));
            };
            ensure!(is_metric_name(name), "{at}: bad metric name");
            let f = families.entry(name.to_string()).or_default();
            match keyword {
                "HELP" => {
                    ensure!(f.help.is_none(), "{at}: a second HELP");
                    ensure!(!arg.trim().is_empty(), "{at}: empty HELP");
                    f.help = Some(unescape(arg, false).ok_or(format!("{at}: bad escape"))?);
                }
                "TYPE" => {
                    ensure!(f.kind.is_none(), "{at}: a second TYPE");
                    ensure!(f.samples.is_empty(), "{at}: TYPE after the family's samples");
                    ensure!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg),
                        "{at}: unknown type"
                    );
                    f.kind = Some(arg.to_string());
                }
                _ => return Err(format!("{at}: a comment other than HELP or TYPE")),
            }
            name.to_string()
        } else {
            let sample = parse_sample(line).ok_or(format!("{at}: not a sample"))?;
            let family = family_of(&families, &sample.name);
            let kind = families.get(&family).and_then(|f| f.kind.as_deref());
            let suffix = &sample.name[family.len()..];
            match kind {
                Some("histogram") => {
                    ensure!(
                        ["_bucket", "_sum", "_count"].contains(&suffix),
                        "{at}: not a histogram series"
                    );
                    ensure!(
                        (suffix == "_bucket") == sample.labels.contains_key("le"),
                        "{at}: `le` on a bucket, and only there"
                    );
                }
                Some("counter" | "gauge") => ensure!(!sample.labels.contains_key("le"), "{at}: `le`"),
                _ => {}
            }
            let key = (
                sample.name.clone(),
                sample.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            );
            ensure!(series.insert(key), "{at}: the same series twice");
            families.entry(family.clone()).or_default().samples.push(sample);
            family
        };
        // A family's lines form one block.
        if current.as_deref() != Some(family.as_str()) {
            ensure!(!closed.contains(&family), "{at}: family {family} is split up");
            if let Some(previous) = current.replace(family) {
                closed.insert(previous);
            }
        }
    }
    Ok(families)
}

/// The family a sample belongs to: a histogram's or summary's for its
/// suffixed series, else the sample's own name.
fn family_of(families: &BTreeMap<String, Family>, name: &str) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if let Some(f) = families.get(base) {
                if matches!(f.kind.as_deref(), Some("histogram" | "summary")) {
                    return base.to_string();
                }
            }
        }
    }
    name.to_string()
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

/// `name{label="value",…} value [timestamp]`.
fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = inner.split_once("=\"")?;
            if !is_label_name(key) {
                return None;
            }
            // The value runs to the first quote not escaped.
            let mut end = None;
            let mut escaped = false;
            for (i, c) in after.char_indices() {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end?;
            let value = unescape(&after[..end], true)?;
            if labels.insert(key.to_string(), value).is_some() {
                return None;
            }
            inner = &after[end + 1..];
            inner = inner.strip_prefix(',').unwrap_or(inner);
        }
    }
    let mut fields = rest.strip_prefix(' ')?.split(' ');
    let value = parse_value(fields.next()?)?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().ok()?;
    }
    if fields.next().is_some() {
        return None;
    }
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// A Go `ParseFloat` number: digits, a point, an exponent, or one of
/// `+Inf`, `-Inf`, `NaN` (Rust's own parser also takes `inf`, `infinity`…).
fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if s.chars().all(|c| c.is_ascii_digit() || ".eE+-".contains(c)) => s.parse().ok(),
        _ => None,
    }
}

/// Undoes `\\`, `\n` and (in label values) `\"`; any other escape is an error.
fn unescape(s: &str, label: bool) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            if label && c == '"' {
                return None;
            }
            out.push(c);
            continue;
        }
        match chars.next()? {
            '\\' => out.push('\\'),
            'n' => out.push('\n'),
            '"' if label => out.push('"'),
            _ => return None,
        }
    }
    Some(out)
}

#[test]
fn the_parser_refuses_what_prometheus_would() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{m=\"x\\\"y\"} 1.5\n\n\
              # TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.5\nh_count 1\n";
    let f = parse_exposition(ok).unwrap();
    assert_eq!(f["a_total"].samples[0].labels["m"], "x\"y");
    assert_eq!(f["h"].samples.len(), 3);
    for bad in [
        "a 1\n# TYPE a counter\n",           // TYPE after samples
        "a{m=\"x} 1\n",                      // unterminated label
        "a{m=x} 1\n",                        // unquoted label
        "a 1x\n",                            // bad value
        "a inf\n",                           // Rust's spelling, not Go's
        "a 1\nb 1\na 2\n",                   // split family, and a duplicate
        "a{m=\"1\"} 1\nb 1\na{m=\"2\"} 1\n", // split family
        "a 1\na 1\n",                        // duplicate series
        "# TYPE h histogram\nh 1\n",         // no suffix on a histogram
        "a{m=\"1\",m=\"2\"} 1\n",            // a label twice
        "# EOF\n",                           // an unknown comment
        "#TYPE a counter\n",                 // not a comment the format knows
        "1a 1\n",                            // bad name
        "a 1",                               // no final newline
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}

// -------------------------------------------------------------- /metrics

/// The value of `family`'s one sample with `labels`, if any.
fn value(families: &BTreeMap<String, Family>, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    families.get(family)?.samples.iter().find_map(|s| {
        let wanted: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        (s.name == family && s.labels == wanted).then_some(s.value)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_prometheus_conventions() {
    // Names of this test's own: the recorder is shared by the whole binary.
    let extra = "[retry]\nattempts_per_model = 1\nmax_fallbacks = 0\n\
                 [breaker]\nfailure_threshold = 1\ncooldown_ms = 600000\n";
    let t = start(
        &[
            ("conventions-good-mock", "openai", 0.5),
            ("conventions-error-mock", "openai", 0.5),
        ],
        extra,
    )
    .await;
    let (s, answer) = t
        .post(
            "/v1/execute",
            &json!({"prompt": "count my tokens", "preference": {"models": ["conventions-good-mock"]}}),
        )
        .await;
    assert_eq!(s, 200, "{answer}");
    // The failing model opens its breaker (threshold 1, a long cool-down).
    let (s, b) = t
        .post(
            "/v1/execute",
            &json!({"prompt": "hi", "preference": {"models": ["conventions-error-mock"]}}),
        )
        .await;
    assert_eq!(s, 502, "{b}");

    let r = t.get("/metrics").await;
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = r.text().await.unwrap();
    let families = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));

    for (name, f) in &families {
        assert!(f.help.is_some(), "{name} has no HELP:\n{text}");
        let kind = f
            .kind
            .as_deref()
            .unwrap_or_else(|| panic!("{name} has no TYPE:\n{text}"));
        assert!(!f.samples.is_empty(), "{name} has no samples");
        assert!(name.starts_with("qroute_"), "{name}");
        assert_eq!(kind == "counter", name.ends_with("_total"), "{name} is a {kind}");
        if kind == "counter" {
            assert!(f.samples.iter().all(|s| s.value >= 0.0), "{name}");
        }
    }

    // Cost: a float counter, equal to what the answer said it cost.
    assert_eq!(families["qroute_cost_usd_total"].kind.as_deref(), Some("counter"));
    let good = [("model", "conventions-good-mock")];
    let cost = value(&families, "qroute_cost_usd_total", &good).unwrap_or_else(|| panic!("no cost:\n{text}"));
    let answered = answer["cost_usd"].as_f64().unwrap();
    assert!(cost > 0.0 && cost < 1.0, "{cost}");
    assert!((cost - answered).abs() < 1e-12, "{cost} vs {answered}");
    // Tokens, as the answer reported them.
    for (family, usage) in [
        ("qroute_input_tokens_total", "input_tokens"),
        ("qroute_output_tokens_total", "output_tokens"),
    ] {
        let counted = value(&families, family, &good).unwrap_or_else(|| panic!("no {family}:\n{text}"));
        let reported = answer["usage"][usage].as_f64().unwrap();
        assert!(reported >= 1.0, "{answer}");
        assert_eq!(counted, reported, "{family}");
    }
    // The breaker of every configured model: 0 closed, 2 open.
    assert_eq!(value(&families, "qroute_breaker_state", &good), Some(0.0), "{text}");
    assert_eq!(
        value(
            &families,
            "qroute_breaker_state",
            &[("model", "conventions-error-mock")]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(families["qroute_breaker_state"].kind.as_deref(), Some("gauge"));
    for name in [
        "qroute_requests_total",
        "qroute_request_duration_seconds",
        "qroute_upstream_duration_seconds",
        "qroute_upstream_errors_total",
        "qroute_breaker_opened_total",
        "qroute_choices_total",
        "qroute_policy_version",
        "qroute_trainer_steps_total",
    ] {
        assert!(families.contains_key(name), "no {name}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn float_counters_only_grow() {
    // Through the facade, as the engine books cost.
    let _ = qroute_gateway::http::metrics::handle();
    let key = [("model", "conventions-float-mock")];
    metrics::gauge!("qroute_cost_usd_total", "model" => "conventions-float-mock").increment(0.000_001_5);
    metrics::gauge!("qroute_cost_usd_total", "model" => "conventions-float-mock").increment(0.25);
    for ignored in [-1.0, f64::NAN, f64::INFINITY] {
        metrics::gauge!("qroute_cost_usd_total", "model" => "conventions-float-mock").increment(ignored);
    }
    metrics::gauge!("qroute_cost_usd_total", "model" => "conventions-float-mock").decrement(0.25);
    metrics::gauge!("qroute_cost_usd_total", "model" => "conventions-float-mock").set(0.0);
    let families = parse_exposition(&qroute_gateway::http::metrics::render_text()).unwrap();
    let v = value(&families, "qroute_cost_usd_total", &key).unwrap();
    assert!((v - 0.250_001_5).abs() < 1e-15, "{v}");
}

// ------------------------------------------------------------ request ids

async fn request_id_of(r: reqwest::Response) -> (u16, String) {
    let id = r
        .headers()
        .get("x-request-id")
        .unwrap_or_else(|| panic!("no x-request-id on a {}", r.status()))
        .to_str()
        .unwrap()
        .to_string();
    (r.status().as_u16(), id)
}

fn is_generated(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_or_made() {
    let t = start(&[("conventions-id-mock", "openai", 1.0)], "").await;
    let get = |path: &str, id: Option<&[u8]>| {
        let mut r = t.http.get(format!("{}{path}", t.url));
        if let Some(id) = id {
            r = r.header("x-request-id", reqwest::header::HeaderValue::from_bytes(id).unwrap());
        }
        r.send()
    };

    // Echoed when the client sends a sound one, on answers and errors alike.
    let longest = "a".repeat(128);
    for (path, status) in [("/v1/health", 200), ("/v1/nowhere", 404), ("/metrics", 200)] {
        for sent in ["client-7f3a.req/1", "x", longest.as_str(), "~!@#$%^&*()_+{}|:<>?"] {
            let (s, id) = request_id_of(get(path, Some(sent.as_bytes())).await.unwrap()).await;
            assert_eq!((s, id.as_str()), (status, sent), "{path}");
        }
    }
    // Made when missing, fresh each time.
    let (_, a) = request_id_of(get("/v1/health", None).await.unwrap()).await;
    let (_, b) = request_id_of(get("/v1/nowhere", None).await.unwrap()).await;
    assert!(is_generated(&a) && is_generated(&b) && a != b, "{a} {b}");
    // Replaced when unusable: too long, empty, spaces, control or non-ASCII bytes.
    let too_long = "a".repeat(129);
    for bad in [
        too_long.as_bytes(),
        b"",
        b"two words",
        b"tab\there",
        "caf\u{e9}".as_bytes(),
    ] {
        let (s, id) = request_id_of(get("/v1/health", Some(bad)).await.unwrap()).await;
        assert_eq!(s, 200);
        assert!(is_generated(&id), "{bad:?} gave {id}");
    }

    // A POST the JSON rules refuse (415) and a 405.
    let r = t
        .http
        .post(format!("{}/v1/execute", t.url))
        .header("content-type", "text/plain")
        .header("x-request-id", "form-post")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(request_id_of(r).await, (415, "form-post".to_string()));
    let r = t
        .http
        .delete(format!("{}/v1/health", t.url))
        .header("x-request-id", "wrong-method")
        .send()
        .await
        .unwrap();
    assert_eq!(request_id_of(r).await, (405, "wrong-method".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_the_request_id() {
    // Auth on (a master key in a variable of this test's own), and only
    // one Host allowed.
    let var = format!("QROUTE_TEST_METRICS_MASTER_{}", std::process::id());
    std::env::set_var(&var, "master-for-request-ids");
    let mock = qroute_mock::spawn(MockConfig::default()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let extra = format!("[auth]\nmaster_key_envs = [\"{var}\"]\n[server]\nallowed_hosts = [\"127.0.0.1\"]\n");
    let text = harness::config_text(
        &mock.url(),
        &data.path().join("store"),
        &[("conventions-auth-mock", "openai", 1.0)],
        &extra,
    );
    let cfg = Config::parse(Path::new("test.toml"), &text).unwrap();
    let t = harness::start_with(cfg, mock, tempfile::tempdir().unwrap()).await;
    let send = |method: reqwest::Method, path: &str, headers: &[(&str, &str)]| {
        let mut r = t.http.request(method, format!("{}{path}", t.url));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send()
    };

    // 401: no credential, and a wrong one.
    let r = send(reqwest::Method::GET, "/v1/models", &[("x-request-id", "no-key")])
        .await
        .unwrap();
    assert_eq!(request_id_of(r).await, (401, "no-key".to_string()));
    let r = send(reqwest::Method::GET, "/v1/models", &[("authorization", "Bearer wrong")])
        .await
        .unwrap();
    let (s, id) = request_id_of(r).await;
    assert!(s == 401 && is_generated(&id), "{s} {id}");
    // 404 behind auth (a key is needed to learn a path does not exist).
    let r = send(
        reqwest::Method::GET,
        "/v1/nowhere",
        &[
            ("x-request-id", "lost"),
            ("authorization", "Bearer master-for-request-ids"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(request_id_of(r).await, (404, "lost".to_string()));
    // The edge's refusals: a Host not served (421), a cross-site POST (403).
    let r = send(
        reqwest::Method::GET,
        "/v1/health",
        &[("host", "rebound.attacker.example"), ("x-request-id", "rebound")],
    )
    .await
    .unwrap();
    assert_eq!(request_id_of(r).await, (421, "rebound".to_string()));
    let r = send(
        reqwest::Method::POST,
        "/v1/experiments/none/stop",
        &[("origin", "https://evil.example"), ("x-request-id", "cross-site")],
    )
    .await
    .unwrap();
    assert_eq!(request_id_of(r).await, (403, "cross-site".to_string()));
    // And a success, for completeness.
    let r = send(reqwest::Method::GET, "/v1/health", &[("x-request-id", "fine")])
        .await
        .unwrap();
    assert_eq!(request_id_of(r).await, (200, "fine".to_string()));
}

// ------------------------------------------------------------ the sources

/// Every `metrics::KIND!("name"` in `text`, as (kind, name).
fn macro_names<'a>(text: &'a str, prefix: &str) -> Vec<(&'a str, &'a str)> {
    let mut found = Vec::new();
    for kind in ["counter", "gauge", "histogram"] {
        let open = format!("{prefix}{kind}!(");
        for (at, _) in text.match_indices(&open) {
            let rest = text[at + open.len()..].trim_start();
            if let Some(name) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
                found.push((kind, name));
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A family emitted anywhere in the crate but not described would be
/// scraped without `# HELP`; one emitted as a counter must end in `_total`.
/// Checked on the sources, so families no test exercises are covered too.
#[test]
fn every_emitted_metric_is_described() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let described_in = std::fs::read_to_string(src.join("http/metrics.rs")).unwrap();
    let described: HashSet<(&str, &str)> = macro_names(&described_in, "describe_").into_iter().collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut emitted = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (kind, name) in macro_names(&text, "metrics::") {
            emitted += 1;
            assert!(
                described.contains(&(kind, name)),
                "{}: {kind} {name} is not described (describe_{kind}! in http/metrics.rs)",
                file.display()
            );
            assert!(
                kind != "counter" || name.ends_with("_total"),
                "{}: counter {name} must end in _total",
                file.display()
            );
        }
    }
    assert!(emitted > 10, "found only {emitted} metric calls: is the scan broken?");
}
