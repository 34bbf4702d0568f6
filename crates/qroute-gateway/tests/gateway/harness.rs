//! A gateway and a mock upstream on 127.0.0.1 ports, for the gateway's
//! integration tests. Both are the real servers: the gateway's provider
//! clients talk HTTP to the mock.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use qroute_gateway::config::Config;
use qroute_gateway::{http as server, Gateway};
use qroute_mock::{MockConfig, MockServer};
use serde_json::Value;

pub struct TestGateway {
    pub url: String,
    pub gw: Arc<Gateway>,
    pub mock: MockServer,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// A config with one OpenAI-compatible, one Anthropic and one Gemini
/// provider, all pointing at the mock, and one model per entry of
/// `models`: `(id, provider, input price per Mtok)`. `extra` is TOML
/// appended before the providers (sections like `[retry]`).
pub fn config_text(mock_url: &str, store: &Path, models: &[(&str, &str, f64)], extra: &str) -> String {
    let mut t = format!(
        r#"listen = "127.0.0.1:0"
[store]
path = "{}"
{extra}
[[providers]]
name = "openai"
kind = "openai"
base_url = "{mock_url}/v1"

[[providers]]
name = "anthropic"
kind = "anthropic"
base_url = "{mock_url}"

[[providers]]
name = "gemini"
kind = "gemini"
base_url = "{mock_url}"
"#,
        store.display()
    );
    for (id, provider, price) in models {
        t.push_str(&format!(
            "\n[[models]]\nid = \"{id}\"\nprovider = \"{provider}\"\ninput_per_mtok = {price}\noutput_per_mtok = {price}\n"
        ));
    }
    t
}

/// Starts a mock upstream and a gateway in front of it.
pub async fn start(models: &[(&str, &str, f64)], extra: &str) -> TestGateway {
    start_raw(MockConfig::default(), models, extra, "").await
}

/// [`start`] with the mock configured as given, and `models_toml`
/// (`[[models]]` tables with fields `models` cannot say, such as
/// `context_window` or `capabilities`) appended to the config.
pub async fn start_raw(mock: MockConfig, models: &[(&str, &str, f64)], extra: &str, models_toml: &str) -> TestGateway {
    let mock = qroute_mock::spawn(mock).await.expect("mock starts");
    let dir = tempfile::tempdir().unwrap();
    let mut text = config_text(&mock.url(), &dir.path().join("store"), models, extra);
    text.push_str(models_toml);
    let cfg = Config::parse(Path::new("test.toml"), &text).expect("test config parses");
    start_with(cfg, mock, dir).await
}

/// The `data:` payloads of a server-sent-event body, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.trim().to_string())
        .collect()
}

pub async fn start_with(cfg: Config, mock: MockServer, dir: tempfile::TempDir) -> TestGateway {
    let gw = Arc::new(tokio::task::block_in_place(|| Gateway::build(cfg)).expect("gateway builds"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::serve(gw.clone(), listener, async move {
        let _ = stopped.await;
    }));
    TestGateway {
        url,
        gw,
        mock,
        http: reqwest::Client::new(),
        _dir: dir,
        stop: Some(stop),
    }
}

impl TestGateway {
    /// POSTs a JSON body; returns status and parsed body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .expect("gateway answers");
        let status = r.status().as_u16();
        (status, r.json().await.expect("a JSON body"))
    }

    /// POSTs raw bytes; returns status and parsed body.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("gateway answers");
        let status = r.status().as_u16();
        (status, r.json().await.expect("a JSON body"))
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("gateway answers")
    }

    /// Waits (polling, no timing assertion) until `request_id`'s decision
    /// has `n` outcomes in the store, and returns it.
    pub async fn experience(&self, request_id: &str, n: usize) -> qroute_core::record::Experience {
        for _ in 0..500 {
            if let Some(e) = self.gw.store.get(request_id).unwrap() {
                if e.outcomes.len() >= n {
                    return e;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no experience with {n} outcomes for {request_id}");
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Asserts an error body of the documented shape and returns its type.
pub fn error_type(body: &Value) -> &str {
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no message: {body}"
    );
    e["type"].as_str().unwrap_or_else(|| panic!("no error type: {body}"))
}
