//! A mock LLM upstream over real HTTP, speaking OpenAI's, Anthropic's and
//! Gemini's wire formats, so that the gateway's adapters, retries, fallback
//! and load behaviour can be tested without keys, network or cost.
//!
//! Routes:
//! - `POST /v1/chat/completions` (OpenAI and compatibles)
//! - `POST /v1/messages` (Anthropic)
//! - `POST /v1beta/models/MODEL:generateContent` (Gemini)
//! - `GET /mock/stats` → `{"calls": {model: count}}`
//!
//! Faults are chosen by the model name, as in TensorZero's dummy provider: a
//! name containing (case-insensitively) `error` always fails with 500,
//! `flaky` fails every other call with 503 (the first call fails),
//! `ratelimit` answers 429, `reject` answers 400, `timeout` hangs for
//! [`MockConfig::hang_ms`], `slow` sleeps [`MockConfig::slow_ms`], and
//! `delay<N>` sleeps exactly N ms, and `echo-auth` answers 401 with a body
//! that quotes the request's credential headers and its own URL, as a
//! badly-behaved upstream might (to test that the gateway redacts what it
//! passes on). Anything else answers after the sampled
//! latency. The answer is deterministic and reflects the request, so tests
//! can see what reached the upstream, except for a model named with
//! `score<N>` (e.g. `judge-score8`), which answers exactly `Score: N`, as an
//! LLM judge would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;

/// Characters per token, for the token counts the mock reports.
const CHARS_PER_TOKEN: usize = 4;

/// Characters of the last user message (and of the system prompt) echoed in
/// an answer.
const ECHO_CHARS: usize = 60;

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
            seed: 0,
        }
    }
}

/// Calls received, per model name, failed ones included.
#[derive(Debug, Default)]
pub struct MockStats {
    calls: Mutex<HashMap<String, u64>>,
}

impl MockStats {
    /// Calls received for `model` (exactly as the request named it).
    pub fn calls(&self, model: &str) -> u64 {
        self.lock().get(model).copied().unwrap_or(0)
    }

    /// Every model's call count.
    pub fn snapshot(&self) -> HashMap<String, u64> {
        self.lock().clone()
    }

    /// Counts one call and returns the model's count including it.
    fn record(&self, model: &str) -> u64 {
        let mut calls = self.lock();
        // Look up before inserting, so the common case allocates nothing.
        if let Some(n) = calls.get_mut(model) {
            *n += 1;
            return *n;
        }
        calls.insert(model.to_string(), 1);
        1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        // A panic while holding this lock cannot leave the counts torn.
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }
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
    let shared = Arc::new(Shared {
        rng: Mutex::new(ChaCha8Rng::seed_from_u64(cfg.seed)),
        cfg,
        stats: stats.clone(),
        next_id: AtomicU64::new(1),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(openai))
        .route("/v1/messages", post(anthropic))
        .route("/v1beta/models/{model_and_action}", post(gemini))
        .route("/mock/stats", get(stats_handler))
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

struct Shared {
    cfg: MockConfig,
    stats: Arc<MockStats>,
    rng: Mutex<ChaCha8Rng>,
    next_id: AtomicU64,
}

impl Shared {
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

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Which wire format a request came in, to answer in the same one.
#[derive(Clone, Copy)]
enum Format {
    OpenAi,
    Anthropic,
    Gemini,
}

/// What the mock needs of a request, whatever its format.
struct Parsed {
    model: String,
    system: Option<String>,
    last_user: String,
    total_chars: usize,
    max_tokens: Option<u32>,
}

/// The answer to a request that did not fail.
struct Answer {
    text: String,
    prompt_tokens: u64,
    completion_tokens: u64,
    truncated: bool,
}

/// Where a request came in, for a model that quotes it back (`echo-auth`).
struct Received<'a> {
    headers: &'a HeaderMap,
    uri: &'a Uri,
}

/// A request that fails, in the status and words the format's error body
/// will carry.
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

/// Counts the call, waits as the model name asks, injects its fault, and
/// otherwise composes the answer.
async fn answer(shared: &Shared, req: &Parsed, received: &Received<'_>) -> Result<Answer, Failure> {
    let n = shared.stats.record(&req.model);
    let model = req.model.as_str();
    let delay_ms = if contains_ci(model, "timeout") {
        shared.cfg.hang_ms as f64
    } else if contains_ci(model, "slow") {
        shared.cfg.slow_ms as f64
    } else if let Some(ms) = delay_keyword(model) {
        ms as f64
    } else {
        shared.sample_latency_ms()
    };
    if delay_ms > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(delay_ms / 1000.0)).await;
    }
    if contains_ci(model, "echo-auth") {
        return Err(echo_auth(received));
    }
    if contains_ci(model, "error") {
        return Err(Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("mock: model {model} always fails"),
        ));
    }
    if contains_ci(model, "reject") {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            format!("mock: model {model} rejects every request"),
        ));
    }
    if contains_ci(model, "ratelimit") {
        return Err(Failure::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("mock: model {model} is rate limited"),
        ));
    }
    if contains_ci(model, "flaky") && n % 2 == 1 {
        return Err(Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("mock: model {model} failed call {n}, the next one will succeed"),
        ));
    }

    let mut text = match keyword_number(model, "score") {
        // An LLM judge's verdict, for testing judges over HTTP.
        Some(score) => format!("Score: {score}"),
        None => echo(model, req),
    };
    let mut completion_tokens = req_tokens(text.chars().count());
    let mut truncated = false;
    if let Some(max) = req.max_tokens {
        if completion_tokens > u64::from(max) {
            let keep = max as usize * CHARS_PER_TOKEN;
            text = text.chars().take(keep).collect();
            completion_tokens = u64::from(max);
            truncated = true;
        }
    }
    Ok(Answer {
        text,
        prompt_tokens: req_tokens(req.total_chars).max(1),
        completion_tokens,
        truncated,
    })
}

/// A 401 whose message quotes the credentials the request carried, bare
/// and in header form, and the URL it was sent to with the key in its query
/// string, the way some proxies and misconfigured servers do.
fn echo_auth(received: &Received<'_>) -> Failure {
    let header = |name: &str| {
        received
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let authorization = header("authorization");
    let api_key = header("x-api-key");
    let goog_key = header("x-goog-api-key");
    let key = authorization
        .as_deref()
        .map(|a| a.strip_prefix("Bearer ").unwrap_or(a).to_string())
        .or_else(|| api_key.clone())
        .or_else(|| goog_key.clone())
        .unwrap_or_default();
    let host = header("host").unwrap_or_default();
    let shown = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
    Failure::new(
        StatusCode::UNAUTHORIZED,
        format!(
            "Incorrect API key provided: {key}. Received Authorization: {}, x-api-key: {}, x-goog-api-key: {} \
             for http://{host}{}?key={key} (upstream {host})",
            shown(&authorization),
            shown(&api_key),
            shown(&goog_key),
            received.uri.path(),
        ),
    )
}

/// The normal answer: the model's name, then the start of the system prompt
/// and of the last user message.
fn echo(model: &str, req: &Parsed) -> String {
    let mut text = format!("mock answer from {model}");
    if let Some(system) = &req.system {
        text.push_str(" [system: ");
        text.extend(system.chars().take(ECHO_CHARS));
        text.push(']');
    }
    text.push_str(": ");
    text.extend(req.last_user.chars().take(ECHO_CHARS));
    text
}

fn req_tokens(chars: usize) -> u64 {
    chars.div_ceil(CHARS_PER_TOKEN) as u64
}

/// Whether `haystack` contains `needle` (ASCII, lowercase), ignoring case,
/// without allocating a lowercased copy per request.
fn contains_ci(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// N from the first `delay<N>` in a model name, when digits follow.
fn delay_keyword(model: &str) -> Option<u64> {
    keyword_number(model, "delay")
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

// ---- request bodies, as loose as the real APIs allow ----

/// Message content: a string, or a list of typed parts of which the text
/// ones count.
#[derive(Deserialize)]
#[serde(untagged)]
enum InContent {
    Text(String),
    Parts(Vec<InPart>),
}

impl InContent {
    fn into_text(self) -> String {
        match self {
            InContent::Text(t) => t,
            InContent::Parts(parts) => parts.into_iter().filter_map(|p| p.text).collect(),
        }
    }
}

#[derive(Deserialize)]
struct InPart {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct InMessage {
    role: String,
    #[serde(default)]
    content: Option<InContent>,
}

/// Folds a format's system prompt and message list into what [`answer`]
/// needs. System prompts found inside the list (OpenAI's way) join the
/// top-level one (Anthropic's and Gemini's way).
fn fold_messages(model: String, system: Option<String>, messages: Vec<InMessage>, max_tokens: Option<u32>) -> Parsed {
    let mut system_parts: Vec<String> = system.into_iter().collect();
    let mut last_user = String::new();
    let mut total_chars = system_parts.iter().map(|s| s.chars().count()).sum();
    for m in messages {
        let text = m.content.map(InContent::into_text).unwrap_or_default();
        total_chars += text.chars().count();
        if m.role == "system" || m.role == "developer" {
            system_parts.push(text);
        } else if m.role == "user" {
            last_user = text;
        }
    }
    Parsed {
        model,
        system: (!system_parts.is_empty()).then(|| system_parts.join("\n\n")),
        last_user,
        total_chars,
        max_tokens,
    }
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| Failure::new(StatusCode::BAD_REQUEST, format!("malformed request: {e}")))
}

// ---- OpenAI ----

#[derive(Deserialize)]
struct OpenAiRequest {
    #[serde(default)]
    model: String,
    messages: Vec<InMessage>,
    #[serde(default)]
    max_tokens: Option<u32>,
    /// The newer name OpenAI's reasoning models require.
    #[serde(default)]
    max_completion_tokens: Option<u32>,
}

#[derive(Serialize)]
struct OpenAiResponse<'a> {
    id: String,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [OpenAiChoice<'a>; 1],
    usage: OpenAiUsage,
}

#[derive(Serialize)]
struct OpenAiChoice<'a> {
    index: u32,
    message: OpenAiMessage<'a>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct OpenAiMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct OpenAiUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

async fn openai(State(shared): State<Arc<Shared>>, headers: HeaderMap, uri: Uri, body: Bytes) -> Response {
    let req = match parse_json::<OpenAiRequest>(&body) {
        Ok(r) if r.model.is_empty() => {
            return Failure::new(StatusCode::BAD_REQUEST, "model is required").into_response(Format::OpenAi)
        }
        Ok(r) => fold_messages(r.model, None, r.messages, r.max_completion_tokens.or(r.max_tokens)),
        Err(f) => return f.into_response(Format::OpenAi),
    };
    let received = Received {
        headers: &headers,
        uri: &uri,
    };
    let a = match answer(&shared, &req, &received).await {
        Ok(a) => a,
        Err(f) => return f.into_response(Format::OpenAi),
    };
    Json(OpenAiResponse {
        id: format!("chatcmpl-mock{}", shared.next_id()),
        object: "chat.completion",
        created: unix_now(),
        model: &req.model,
        choices: [OpenAiChoice {
            index: 0,
            message: OpenAiMessage {
                role: "assistant",
                content: &a.text,
            },
            finish_reason: if a.truncated { "length" } else { "stop" },
        }],
        usage: OpenAiUsage {
            prompt_tokens: a.prompt_tokens,
            completion_tokens: a.completion_tokens,
            total_tokens: a.prompt_tokens + a.completion_tokens,
        },
    })
    .into_response()
}

// ---- Anthropic ----

#[derive(Deserialize)]
struct AnthropicRequest {
    #[serde(default)]
    model: String,
    /// Required by the real API; the mock enforces it so that an adapter
    /// forgetting it fails here rather than in production.
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    system: Option<InContent>,
    messages: Vec<InMessage>,
}

#[derive(Serialize)]
struct AnthropicResponse<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: [AnthropicBlock<'a>; 1],
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
    usage: AnthropicUsage,
}

#[derive(Serialize)]
struct AnthropicBlock<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

#[derive(Serialize)]
struct AnthropicUsage {
    input_tokens: u64,
    output_tokens: u64,
}

async fn anthropic(State(shared): State<Arc<Shared>>, headers: HeaderMap, uri: Uri, body: Bytes) -> Response {
    let fail = |status, message: &str| Failure::new(status, message).into_response(Format::Anthropic);
    if !headers.contains_key("anthropic-version") {
        return fail(StatusCode::BAD_REQUEST, "anthropic-version: header is required");
    }
    let req = match parse_json::<AnthropicRequest>(&body) {
        Ok(r) if r.model.is_empty() => return fail(StatusCode::BAD_REQUEST, "model: Field required"),
        Ok(AnthropicRequest { max_tokens: None, .. }) => {
            return fail(StatusCode::BAD_REQUEST, "max_tokens: Field required");
        }
        Ok(r) => {
            let system = r.system.map(InContent::into_text);
            fold_messages(r.model, system, r.messages, r.max_tokens)
        }
        Err(f) => return f.into_response(Format::Anthropic),
    };
    let received = Received {
        headers: &headers,
        uri: &uri,
    };
    let a = match answer(&shared, &req, &received).await {
        Ok(a) => a,
        Err(f) => return f.into_response(Format::Anthropic),
    };
    Json(AnthropicResponse {
        id: format!("msg_mock{}", shared.next_id()),
        kind: "message",
        role: "assistant",
        model: &req.model,
        content: [AnthropicBlock {
            kind: "text",
            text: &a.text,
        }],
        stop_reason: if a.truncated { "max_tokens" } else { "end_turn" },
        stop_sequence: None,
        usage: AnthropicUsage {
            input_tokens: a.prompt_tokens,
            output_tokens: a.completion_tokens,
        },
    })
    .into_response()
}

// ---- Gemini ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiRequest {
    contents: Vec<GeminiContent>,
    #[serde(default)]
    system_instruction: Option<GeminiContent>,
    #[serde(default)]
    generation_config: Option<GeminiGenerationConfig>,
}

#[derive(Deserialize)]
struct GeminiContent {
    /// Optional in the real API, where it defaults to `user`.
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    parts: Vec<InPart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiGenerationConfig {
    #[serde(default)]
    max_output_tokens: Option<u32>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GeminiResponse<'a> {
    candidates: [GeminiCandidate<'a>; 1],
    usage_metadata: GeminiUsage,
    model_version: &'a str,
    response_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GeminiCandidate<'a> {
    content: GeminiOutContent<'a>,
    finish_reason: &'static str,
    index: u32,
}

#[derive(Serialize)]
struct GeminiOutContent<'a> {
    role: &'static str,
    parts: [GeminiOutPart<'a>; 1],
}

#[derive(Serialize)]
struct GeminiOutPart<'a> {
    text: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GeminiUsage {
    prompt_token_count: u64,
    candidates_token_count: u64,
    total_token_count: u64,
}

async fn gemini(
    State(shared): State<Arc<Shared>>,
    Path(model_and_action): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let model = match model_and_action.rsplit_once(':') {
        Some((model, "generateContent")) if !model.is_empty() => model.to_string(),
        _ => {
            return Failure::new(
                StatusCode::NOT_FOUND,
                format!("mock: only MODEL:generateContent is served, not {model_and_action}"),
            )
            .into_response(Format::Gemini)
        }
    };
    let req = match parse_json::<GeminiRequest>(&body) {
        Ok(r) => {
            let messages = r
                .contents
                .into_iter()
                .map(|c| InMessage {
                    role: c.role.unwrap_or_else(|| "user".to_string()),
                    content: Some(InContent::Parts(c.parts)),
                })
                .collect();
            let system = r.system_instruction.map(|s| InContent::Parts(s.parts).into_text());
            let max_tokens = r.generation_config.and_then(|g| g.max_output_tokens);
            fold_messages(model, system, messages, max_tokens)
        }
        Err(f) => return f.into_response(Format::Gemini),
    };
    let received = Received {
        headers: &headers,
        uri: &uri,
    };
    let a = match answer(&shared, &req, &received).await {
        Ok(a) => a,
        Err(f) => return f.into_response(Format::Gemini),
    };
    Json(GeminiResponse {
        candidates: [GeminiCandidate {
            content: GeminiOutContent {
                role: "model",
                parts: [GeminiOutPart { text: &a.text }],
            },
            finish_reason: if a.truncated { "MAX_TOKENS" } else { "STOP" },
            index: 0,
        }],
        usage_metadata: GeminiUsage {
            prompt_token_count: a.prompt_tokens,
            candidates_token_count: a.completion_tokens,
            total_token_count: a.prompt_tokens + a.completion_tokens,
        },
        model_version: &req.model,
        response_id: format!("mock{}", shared.next_id()),
    })
    .into_response()
}

// ---- stats ----

async fn stats_handler(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!({ "calls": shared.stats.snapshot() })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_keyword_reads_the_digits_after_delay() {
        assert_eq!(delay_keyword("m-delay50"), Some(50));
        assert_eq!(delay_keyword("m-DELAY7-x"), Some(7));
        assert_eq!(delay_keyword("m-delay"), None);
        assert_eq!(delay_keyword("plain"), None);
    }

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
    fn echo_auth_quotes_the_credentials_and_the_url() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer sk-echo-123456789".parse().unwrap());
        headers.insert("host", "127.0.0.1:4321".parse().unwrap());
        let uri: Uri = "/v1/chat/completions".parse().unwrap();
        let f = echo_auth(&Received {
            headers: &headers,
            uri: &uri,
        });
        assert_eq!(f.status, StatusCode::UNAUTHORIZED);
        assert!(f.message.contains("provided: sk-echo-123456789."), "{}", f.message);
        assert!(
            f.message.contains("Authorization: Bearer sk-echo-123456789,"),
            "{}",
            f.message
        );
        assert!(f.message.contains("x-api-key: (none)"), "{}", f.message);
        assert!(
            f.message
                .contains("http://127.0.0.1:4321/v1/chat/completions?key=sk-echo-123456789"),
            "{}",
            f.message
        );

        let mut headers = HeaderMap::new();
        headers.insert("x-goog-api-key", "AIza-echo".parse().unwrap());
        let f = echo_auth(&Received {
            headers: &headers,
            uri: &uri,
        });
        assert!(f.message.contains("provided: AIza-echo."), "{}", f.message);
        assert!(f.message.contains("x-goog-api-key: AIza-echo "), "{}", f.message);
    }

    #[test]
    fn jitter_never_makes_latency_negative() {
        let cfg = MockConfig {
            latency_ms: 1.0,
            jitter_ms: 50.0,
            ..MockConfig::default()
        };
        let (_, stats) = router(cfg.clone());
        let shared = Shared {
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(cfg.seed)),
            cfg,
            stats,
            next_id: AtomicU64::new(1),
        };
        let samples: Vec<f64> = (0..1000).map(|_| shared.sample_latency_ms()).collect();
        assert!(samples.iter().all(|&s| s >= 0.0));
        assert!(samples.contains(&0.0));
        assert!(samples.iter().any(|&s| s > 40.0));
    }
}
