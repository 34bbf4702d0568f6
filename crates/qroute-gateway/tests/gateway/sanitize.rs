//! Upstream failure text on its way out: an upstream that echoes the API
//! key and its own URL (the mock's `echo-auth` model) must leave neither in
//! the client's answer, the logs, the experience store or its export, and a
//! connection error names the provider, not the address it tried.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use qroute_gateway::config::Config;
use serde_json::json;

use crate::harness::{config_text, error_type, start_with, TestGateway};

/// One API key per provider kind, each set in its own environment variable:
/// one shaped like OpenAI's, one with no recognisable shape (only the
/// configured-key rule can catch it), one shaped like Google's.
const KEYS: [(&str, &str, &str); 3] = [
    (
        "openai",
        "QROUTE_TEST_SANITIZE_OPENAI_KEY",
        "sk-qroute-SANITIZE-openai-0123456789",
    ),
    (
        "anthropic",
        "QROUTE_TEST_SANITIZE_ANTHROPIC_KEY",
        "qroutePlainSecretAnthropic42",
    ),
    (
        "gemini",
        "QROUTE_TEST_SANITIZE_GEMINI_KEY",
        "AIzaQrouteSanitizeGemini0123456789abcd",
    ),
];

/// Pieces of the keys that must not survive either (a cut or masked echo).
const KEY_PIECES: [&str; 3] = ["SANITIZE-openai", "PlainSecretAnthropic", "QrouteSanitizeGemini"];

const NO_RETRIES: &str = "[retry]\nattempts_per_model = 1\nmax_fallbacks = 0\n";

/// Everything every test in this binary logs, from the first call on. The
/// subscriber is global because the gateway's tasks run on the runtime's
/// other threads.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink(buf.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber in this binary");
        buf
    })
    .clone()
}

#[derive(Clone)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl io::Write for Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What has been logged so far, as text.
fn logged(logs: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&logs.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

/// The harness's three providers, each with its key from [`KEYS`], at
/// `upstream_url`, serving `models`.
async fn gateway(upstream_url: Option<&str>, models: &[(&str, &str, f64)], extra: &str) -> TestGateway {
    let mock = qroute_mock::spawn(qroute_mock::MockConfig::default())
        .await
        .expect("mock starts");
    let dir = tempfile::tempdir().unwrap();
    let url = upstream_url.map_or_else(|| mock.url(), str::to_string);
    let mut text = config_text(&url, &dir.path().join("store"), models, extra);
    for (kind, var, key) in KEYS {
        // Edition 2021: safe. Every test sets the same values.
        std::env::set_var(var, key);
        let line = format!("kind = \"{kind}\"\n");
        assert_eq!(text.matches(&line).count(), 1, "{text}");
        text = text.replace(&line, &format!("{line}api_key_env = \"{var}\"\n"));
    }
    let cfg = Config::parse(Path::new("test.toml"), &text).expect("test config parses");
    start_with(cfg, mock, dir).await
}

/// Waits until the store holds `n` decisions that each have an outcome, and
/// returns them.
async fn experiences(t: &TestGateway, n: usize) -> Vec<qroute_core::record::Experience> {
    for _ in 0..500 {
        let all: Vec<_> = t.gw.store.iter_from(0).map(|e| e.unwrap()).collect();
        if all.len() >= n && all.iter().all(|e| !e.outcomes.is_empty()) {
            return all;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("fewer than {n} experiences with outcomes");
}

/// Asserts `text` (from `what`) holds no key, no piece of one, and not the
/// upstream's address.
fn assert_clean(what: &str, text: &str, upstream_port: u16) {
    for (_, _, key) in KEYS {
        assert!(!text.contains(key), "{what} shows a key: {text}");
    }
    for piece in KEY_PIECES {
        assert!(!text.contains(piece), "{what} shows part of a key: {text}");
    }
    assert!(
        !text.contains(&format!(":{upstream_port}")),
        "{what} shows the upstream port: {text}"
    );
    assert!(!text.contains("127.0.0.1"), "{what} shows the upstream host: {text}");
    assert!(
        !text.contains("/v1/chat/completions"),
        "{what} shows the upstream path: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_an_upstream_echoes_reach_no_client_log_or_store() {
    let logs = logs();
    let models = [
        ("echo-auth-o", "openai", 1.0),
        ("echo-auth-a", "anthropic", 1.0),
        ("echo-auth-g", "gemini", 1.0),
    ];
    let t = gateway(None, &models, NO_RETRIES).await;
    let port = t.mock.addr.port();

    let mut answers = Vec::new();
    for (model, provider, _) in models {
        let (s, b) = t
            .post(
                "/v1/execute",
                &json!({"prompt": "hi", "preference": {"models": [model]}}),
            )
            .await;
        assert_eq!((s, error_type(&b)), (502, "upstream_error"), "{b}");
        answers.push((provider, b));
    }
    // The OpenAI-compatible endpoint answers its errors the same way.
    let (s, b) = t
        .post(
            "/v1/chat/completions",
            &json!({"model": "echo-auth-o", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(s, 502, "{b}");
    answers.push(("openai", b));
    assert_eq!(t.mock.stats.calls("echo-auth-o"), 2, "the upstream really was asked");
    assert_eq!(t.mock.stats.calls("echo-auth-a"), 1);
    assert_eq!(t.mock.stats.calls("echo-auth-g"), 1);

    // The client: a useful message, without the key or the upstream's URL.
    for (provider, body) in &answers {
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("provider {provider}: upstream answered 401 Unauthorized: ")),
            "{message}"
        );
        assert!(message.contains("Incorrect API key provided: [redacted]"), "{message}");
        assert!(message.contains("[url]"), "{message}");
        assert_clean("the client's answer", &body.to_string(), port);
    }

    // The store, and the export (the JSON the admin export streams).
    let stored = experiences(&t, answers.len()).await;
    assert_eq!(stored.len(), answers.len());
    for e in &stored {
        let error = e.outcomes[0].error.as_deref().expect("the failure is recorded");
        assert!(
            error.contains("upstream answered 401") && error.contains("[redacted]"),
            "{error}"
        );
        assert_clean("the stored outcome", error, port);
        assert_clean("the export", &serde_json::to_string(e).unwrap(), port);
    }

    // The logs: the WARN line of every failed request, cleaned too.
    let text = logged(&logs);
    for e in &stored {
        let id = &e.decision.request_id;
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(id.as_str())).collect();
        assert!(
            lines.iter().any(|l| l.contains("WARN") && l.contains("[redacted]")),
            "no WARN line for {id}"
        );
        for line in lines {
            // The request's span names the gateway's own path (which
            // `/v1/chat/completions` shares with the upstream's): what is
            // checked is the event.
            let event = line.split_once("}: ").map_or(line, |(_, event)| event);
            assert_clean("a log line", event, port);
        }
    }
    for (_, _, key) in KEYS {
        assert!(!text.contains(key), "a key was logged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_answer_reports_the_failure_redacted() {
    let extra = "[policy]\nexploration = { kind = \"greedy\" }\nfloor = 0.0\n[retry]\nattempts_per_model = 1\n";
    let t = gateway(
        None,
        &[("echo-auth-cheap", "anthropic", 0.01), ("good-mock", "openai", 5.0)],
        extra,
    )
    .await;
    let (s, b) = t
        .post(
            "/v1/execute",
            &json!({"prompt": "hi", "preference": {"models": ["echo-auth-cheap", "good-mock"], "cost_weight": 50.0}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["model"], "good-mock");
    assert_eq!(b["attempts"][0]["model"], "echo-auth-cheap");
    let error = b["attempts"][0]["error"].as_str().unwrap();
    assert!(
        error.starts_with("provider anthropic: upstream answered 401"),
        "{error}"
    );
    assert_clean("a 200's attempts", &b.to_string(), t.mock.addr.port());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_name_the_provider_not_the_address() {
    let logs = logs();
    // Bind to learn a free port, then close it so nothing listens there.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let models = [
        ("m-o", "openai", 1.0),
        ("m-a", "anthropic", 1.0),
        ("m-g", "gemini", 1.0),
    ];
    let url = format!("http://127.0.0.1:{closed}");
    let t = gateway(Some(&url), &models, NO_RETRIES).await;
    for (model, provider, _) in models {
        let (s, b) = t
            .post(
                "/v1/execute",
                &json!({"prompt": "hi", "preference": {"models": [model]}}),
            )
            .await;
        assert_eq!((s, error_type(&b)), (502, "upstream_error"), "{b}");
        let message = b["error"]["message"].as_str().unwrap();
        assert!(
            message.ends_with(&format!("({model}: provider {provider}: connection refused)")),
            "{message}"
        );
        assert_clean("the client's answer", &b.to_string(), closed);
        assert!(!message.contains("http"), "{message}");
    }
    let stored = experiences(&t, models.len()).await;
    let text = logged(&logs);
    for e in &stored {
        let error = e.outcomes[0].error.as_deref().expect("the failure is recorded");
        assert!(error.ends_with(": connection refused"), "{error}");
        assert_clean("the export", &serde_json::to_string(e).unwrap(), closed);
        let id = &e.decision.request_id;
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(id.as_str())).collect();
        assert!(
            lines.iter().any(|l| l.contains("connection refused")),
            "no log line for {id}"
        );
        for line in lines {
            assert_clean("a log line", line, closed);
        }
    }
}
