//! A mock LLM upstream over real HTTP, speaking OpenAI's, Anthropic's and
//! Gemini's wire formats, so that the gateway's adapters, retries, fallback,
//! streaming and load behaviour can be tested without keys, network or cost.
//!
//! Routes:
//! - `POST /v1/chat/completions` (OpenAI and compatibles; `"stream": true`
//!   streams `chat.completion.chunk` events)
//! - `POST /v1/messages` (Anthropic; `"stream": true` streams the Messages
//!   events)
//! - `POST /v1beta/models/MODEL:generateContent` and
//!   `MODEL:streamGenerateContent` (Gemini; with `?alt=sse` the stream is
//!   SSE, without it a JSON array sent piece by piece, as Gemini does)
//! - `GET /mock/stats` → `{"calls": {model: n}, "streams_started": {..},
//!   "streams_finished": {..}, "last_requests": {model: body}}`
//!
//! # Faults, by model name
//!
//! As in TensorZero's dummy provider, a model name containing
//! (case-insensitively):
//! - `error` always fails with 500;
//! - `flaky` fails every other call with 503 (the first call fails);
//! - `ratelimit` answers 429, `reject` answers 400;
//! - `notools` answers 400 ("tools are not supported by this model") when the
//!   request declares tools, as a provider rejecting a client request would;
//! - `timeout` hangs for [`MockConfig::hang_ms`], `slow` sleeps
//!   [`MockConfig::slow_ms`], `delay<N>` sleeps exactly N ms (before the
//!   headers, so in a stream they delay the first token);
//! - `break` streams 3 content chunks and then drops the connection without
//!   finishing the stream (a non-streamed request fails with 500);
//! - `echo-auth` answers 401 with a body that quotes the request's credential
//!   headers and its own URL, as a badly-behaved upstream might (to test that
//!   the gateway redacts what it passes on);
//! - `score<N>` (e.g. `judge-score8`) answers exactly `Score: N`, as an LLM
//!   judge would.
//! - `refuse` answers "I'm sorry, but I cannot help with that.", a poor
//!   answer a cascade should not keep.
//!
//! Anything else answers after the sampled latency.
//!
//! # Answers
//!
//! The answer is deterministic and reflects the request, so tests can see
//! what reached the upstream: `mock answer from MODEL [system: …] [N
//! images]: LAST USER MESSAGE` (the bracketed parts only when present; a
//! tool result coming back counts as the last user message). On top of that
//! the mock follows the request's surface:
//! - declared tools (unless the tool choice is none) are called: the first
//!   tool, or the one the tool choice names, with an argument for each
//!   required property of its schema (strings `"mock"`, numbers 1, booleans
//!   true, objects built the same way, arrays empty, others null), unless
//!   the last message already carries a tool result;
//! - JSON mode (OpenAI's `response_format`, Gemini's `responseMimeType`)
//!   answers a JSON object: the schema's required properties, plus an
//!   `"answer"` echoing as above where the schema allows it;
//! - `n` (OpenAI) and `candidateCount` (Gemini) answer that many choices,
//!   choice i > 0 suffixed ` (choice i)`;
//! - `logprobs: true` (OpenAI) adds a log probability of -0.1 per word;
//! - `max_tokens` truncates at 4 characters a token, as the counts assume.
//!
//! A streamed text answer comes in exactly 8 content chunks (a text under 8
//! characters, only possible with `max_tokens` 1, is padded with spaces),
//! with [`MockConfig::chunk_delay_ms`] between consecutive content chunks.
//! [`MockStats`] counts the streams started and finished and keeps each
//! model's last request body.

mod answer;
mod anthropic;
mod gemini;
mod openai;
mod request;
mod stream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use answer::{Received, Reply};
use request::{Request, StreamMode};

/// How the mock behaves when the model name asks for nothing special.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Mean latency of a normal answer.
    pub latency_ms: f64,
    /// Standard deviation around `latency_ms` (a normal, clipped at 0).
    pub jitter_ms: f64,
    /// The latency of a `slow` model.
    pub slow_ms: u64,
    /// How long a `timeout` model hangs before answering anyway; long enough
    /// that any sane caller gives up first.
    pub hang_ms: u64,
    /// The pause between consecutive content chunks of a stream, so that
    /// tests can observe a stream while it is still under way.
    pub chunk_delay_ms: u64,
    /// Seeds the latency sampler.
    pub seed: u64,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            latency_ms: 0.0,
            jitter_ms: 0.0,
            slow_ms: 1000,
            hang_ms: 300_000,
            chunk_delay_ms: 0,
            seed: 0,
        }
    }
}

/// What the mock has seen, per model name: calls (failed ones included),
/// streams started and finished, and the last request body.
#[derive(Debug, Default)]
pub struct MockStats {
    inner: Mutex<StatsInner>,
}

#[derive(Debug, Default)]
struct StatsInner {
    calls: HashMap<String, u64>,
    streams_started: HashMap<String, u64>,
    streams_finished: HashMap<String, u64>,
    last_requests: HashMap<String, Value>,
}

impl MockStats {
    /// Calls received for `model` (exactly as the request named it).
    pub fn calls(&self, model: &str) -> u64 {
        count(&self.lock().calls, model)
    }

    /// Every model's call count.
    pub fn snapshot(&self) -> HashMap<String, u64> {
        self.lock().calls.clone()
    }

    /// Streamed answers `model` began to send (after its faults passed).
    pub fn streams_started(&self, model: &str) -> u64 {
        count(&self.lock().streams_started, model)
    }

    /// Streamed answers whose last chunk `model` handed to the connection;
    /// counted as that chunk is yielded, so a client that has read a whole
    /// stream sees it counted, and one that has read only the start of a
    /// paced stream does not.
    pub fn streams_finished(&self, model: &str) -> u64 {
        count(&self.lock().streams_finished, model)
    }

    /// The last request body that named `model`, as parsed JSON, so tests
    /// can check what reached the upstream (tools, seed, stop…).
    pub fn last_request(&self, model: &str) -> Option<Value> {
        self.lock().last_requests.get(model).cloned()
    }

    /// Everything, as `/mock/stats` serves it.
    fn to_json(&self) -> Value {
        let inner = self.lock();
        json!({
            "calls": inner.calls,
            "streams_started": inner.streams_started,
            "streams_finished": inner.streams_finished,
            "last_requests": inner.last_requests,
        })
    }

    /// Counts one call, keeps its body, and returns the model's call count
    /// including it.
    fn record(&self, model: &str, body: Value) -> u64 {
        let mut inner = self.lock();
        match inner.last_requests.get_mut(model) {
            Some(last) => *last = body,
            None => {
                inner.last_requests.insert(model.to_string(), body);
            }
        }
        increment(&mut inner.calls, model)
    }

    fn stream_started(&self, model: &str) {
        increment(&mut self.lock().streams_started, model);
    }

    fn stream_finished(&self, model: &str) {
        increment(&mut self.lock().streams_finished, model);
    }

    fn lock(&self) -> MutexGuard<'_, StatsInner> {
        // A panic while holding this lock cannot leave the counts torn.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn count(counts: &HashMap<String, u64>, model: &str) -> u64 {
    counts.get(model).copied().unwrap_or(0)
}

/// Adds one to `model`'s count and returns the new count.
fn increment(counts: &mut HashMap<String, u64>, model: &str) -> u64 {
    // Look up before inserting, so the common case allocates nothing.
    if let Some(n) = counts.get_mut(model) {
        *n += 1;
        return *n;
    }
    counts.insert(model.to_string(), 1);
    1
}

/// A mock running in the background on the current tokio runtime; it serves
/// until that runtime shuts down.
#[derive(Debug, Clone)]
pub struct MockServer {
    pub addr: SocketAddr,
    pub stats: Arc<MockStats>,
}

impl MockServer {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// The mock's routes and the counters they update.
pub fn router(cfg: MockConfig) -> (Router, Arc<MockStats>) {
    let stats = Arc::new(MockStats::default());
    let shared = Arc::new(Shared::new(cfg, stats.clone()));
    let app = Router::new()
        .route("/v1/chat/completions", post(openai_route))
        .route("/v1/messages", post(anthropic_route))
        .route("/v1beta/models/{model_and_action}", post(gemini_route))
        .route("/mock/stats", get(stats_route))
        .with_state(shared);
    (app, stats)
}

/// Serves the mock on `listener` until an I/O error stops it.
pub async fn serve(listener: TcpListener, cfg: MockConfig) -> std::io::Result<()> {
    let (app, _) = router(cfg);
    serve_router(listener, app).await
}

/// Starts the mock on an ephemeral port of 127.0.0.1.
pub async fn spawn(cfg: MockConfig) -> std::io::Result<MockServer> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let (app, stats) = router(cfg);
    tokio::spawn(async move {
        if let Err(e) = serve_router(listener, app).await {
            tracing::error!("mock provider stopped: {e}");
        }
    });
    Ok(MockServer { addr, stats })
}

async fn serve_router(listener: TcpListener, app: Router) -> std::io::Result<()> {
    // Small request/response pairs: Nagle's delay would dominate latency.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await
}

/// The state every route shares.
struct Shared {
    cfg: MockConfig,
    stats: Arc<MockStats>,
    rng: Mutex<ChaCha8Rng>,
    next_id: AtomicU64,
}

impl Shared {
    fn new(cfg: MockConfig, stats: Arc<MockStats>) -> Shared {
        Shared {
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(cfg.seed)),
            cfg,
            stats,
            next_id: AtomicU64::new(1),
        }
    }

    /// A latency from the configured normal, clipped at 0.
    fn sample_latency_ms(&self) -> f64 {
        let MockConfig {
            latency_ms, jitter_ms, ..
        } = self.cfg;
        if jitter_ms == 0.0 {
            return latency_ms.max(0.0);
        }
        let (u1, u2): (f64, f64) = {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            // Box–Muller; 1 - [0, 1) keeps ln away from 0.
            (1.0 - rng.gen::<f64>(), rng.gen::<f64>())
        };
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        (latency_ms + jitter_ms * z).max(0.0)
    }

    /// A number unique within this mock, for response and tool-call ids.
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Which wire format a request came in, to answer in the same one.
#[derive(Clone, Copy, Debug)]
enum Format {
    OpenAi,
    Anthropic,
    Gemini,
}

impl Format {
    /// The whole answer, as one JSON body.
    fn body(self, req: &Request, reply: &Reply, id: u64) -> Value {
        match self {
            Format::OpenAi => openai::body(req, reply, id),
            Format::Anthropic => anthropic::body(req, reply, id),
            Format::Gemini => gemini::body(req, reply, id),
        }
    }

    /// The answer as the stream of events the format sends.
    fn events(self, req: &Request, reply: &Reply, id: u64) -> Vec<stream::Event> {
        match self {
            Format::OpenAi => openai::events(req, reply, id),
            Format::Anthropic => anthropic::events(req, reply, id),
            Format::Gemini => gemini::events(req, reply, id),
        }
    }
}

/// A request that fails, in the status and words the format's error body
/// will carry.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, message)
    }

    fn into_response(self, format: Format) -> Response {
        let code = self.status.as_u16();
        let body = match format {
            Format::OpenAi => {
                let kind = match code {
                    401 => "invalid_api_key",
                    429 => "rate_limit_exceeded",
                    400..=499 => "invalid_request_error",
                    _ => "server_error",
                };
                json!({"error": {"message": self.message, "type": kind, "param": null, "code": null}})
            }
            Format::Anthropic => {
                let kind = match code {
                    401 => "authentication_error",
                    429 => "rate_limit_error",
                    404 => "not_found_error",
                    503 => "overloaded_error",
                    400..=499 => "invalid_request_error",
                    _ => "api_error",
                };
                json!({"type": "error", "error": {"type": kind, "message": self.message}})
            }
            Format::Gemini => {
                let status = match code {
                    401 => "UNAUTHENTICATED",
                    429 => "RESOURCE_EXHAUSTED",
                    404 => "NOT_FOUND",
                    503 => "UNAVAILABLE",
                    400..=499 => "INVALID_ARGUMENT",
                    _ => "INTERNAL",
                };
                json!({"error": {"code": code, "message": self.message, "status": status}})
            }
        };
        (self.status, Json(body)).into_response()
    }
}

// ---- routes ----

async fn openai_route(State(shared): State<Arc<Shared>>, headers: HeaderMap, uri: Uri, body: Bytes) -> Response {
    let parsed = parse_body(&body).and_then(|v| Ok((openai::parse(&v)?, v)));
    respond(&shared, Format::OpenAi, parsed, Received::new(&headers, &uri)).await
}

async fn anthropic_route(State(shared): State<Arc<Shared>>, headers: HeaderMap, uri: Uri, body: Bytes) -> Response {
    let parsed = if headers.contains_key("anthropic-version") {
        parse_body(&body).and_then(|v| Ok((anthropic::parse(&v)?, v)))
    } else {
        Err(Failure::bad_request("anthropic-version: header is required"))
    };
    respond(&shared, Format::Anthropic, parsed, Received::new(&headers, &uri)).await
}

async fn gemini_route(
    State(shared): State<Arc<Shared>>,
    Path(model_and_action): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let parsed = gemini::route(&model_and_action, uri.query()).and_then(|(model, stream)| {
        let v = parse_body(&body)?;
        Ok((gemini::parse(&v, model, stream)?, v))
    });
    respond(&shared, Format::Gemini, parsed, Received::new(&headers, &uri)).await
}

async fn stats_route(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.stats.to_json()).into_response()
}

fn parse_body(body: &[u8]) -> Result<Value, Failure> {
    serde_json::from_slice(body).map_err(|e| Failure::bad_request(format!("malformed request: {e}")))
}

/// What every route does with a request it could read: count it, answer it
/// (or fail as its model name asks), whole or streamed.
async fn respond(
    shared: &Shared,
    format: Format,
    parsed: Result<(Request, Value), Failure>,
    received: Received<'_>,
) -> Response {
    let (req, body) = match parsed {
        Ok(p) => p,
        Err(f) => return f.into_response(format),
    };
    let call = shared.stats.record(&req.model, body);
    let reply = match answer::answer(shared, &req, call, &received).await {
        Ok(r) => r,
        Err(f) => return f.into_response(format),
    };
    let id = shared.next_id();
    let Some(mode) = req.stream else {
        return Json(format.body(&req, &reply, id)).into_response();
    };
    shared.stats.stream_started(&req.model);
    let plan = stream::Plan {
        events: format.events(&req, &reply, id),
        content_type: match mode {
            StreamMode::JsonArray => "application/json",
            StreamMode::Sse { .. } => "text/event-stream",
        },
        chunk_delay_ms: shared.cfg.chunk_delay_ms,
        breaks: contains_ci(&req.model, "break"),
        stats: shared.stats.clone(),
        model: req.model.clone(),
    };
    plan.into_response()
}

// ---- model-name keywords ----

/// Whether `haystack` contains `needle` (ASCII, lowercase), ignoring case,
/// without allocating a lowercased copy per request.
fn contains_ci(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// N from the first `<keyword><N>` in a model name (keyword ASCII lowercase,
/// matched ignoring case), when digits follow it.
fn keyword_number(model: &str, keyword: &str) -> Option<u64> {
    let bytes = model.as_bytes();
    let at = bytes
        .windows(keyword.len())
        .position(|w| w.eq_ignore_ascii_case(keyword.as_bytes()))?;
    let digits = &model[at + keyword.len()..];
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_keyword_reads_the_digits_after_score() {
        assert_eq!(keyword_number("judge-score8", "score"), Some(8));
        assert_eq!(keyword_number("Judge-SCORE10-x", "score"), Some(10));
        assert_eq!(keyword_number("judge-score", "score"), None);
        assert_eq!(keyword_number("judge", "score"), None);
        assert_eq!(keyword_number("score3-delay50", "delay"), Some(50));
    }

    #[test]
    fn keywords_match_ignoring_case() {
        assert!(contains_ci("My-Flaky-Model", "flaky"));
        assert!(!contains_ci("steady", "flaky"));
        assert!(!contains_ci("", "error"));
    }

    #[test]
    fn jitter_never_makes_latency_negative() {
        let cfg = MockConfig {
            latency_ms: 1.0,
            jitter_ms: 50.0,
            ..MockConfig::default()
        };
        let shared = Shared::new(cfg, Arc::default());
        let samples: Vec<f64> = (0..1000).map(|_| shared.sample_latency_ms()).collect();
        assert!(samples.iter().all(|&s| s >= 0.0));
        assert!(samples.contains(&0.0));
        assert!(samples.iter().any(|&s| s > 40.0));
    }

    #[test]
    fn stats_keep_the_last_body_and_count_streams() {
        let stats = MockStats::default();
        assert_eq!(stats.record("m", json!({"a": 1})), 1);
        assert_eq!(stats.record("m", json!({"a": 2})), 2);
        stats.stream_started("m");
        assert_eq!(stats.calls("m"), 2);
        assert_eq!(stats.last_request("m"), Some(json!({"a": 2})));
        assert_eq!(stats.last_request("other"), None);
        assert_eq!((stats.streams_started("m"), stats.streams_finished("m")), (1, 0));
        stats.stream_finished("m");
        assert_eq!(stats.streams_finished("m"), 1);
        let all = stats.to_json();
        assert_eq!(all["calls"]["m"], 2);
        assert_eq!(all["streams_finished"]["m"], 1);
    }
}
