//! Upstream LLM providers behind one interface: a chat request in, a
//! completion with token usage out, or a [`ProviderError`] that says whether
//! trying again could help.
//!
//! One file per wire format. The set is closed (a serde-tagged config enum
//! picks one), so dispatch is a `match` rather than a trait object.

pub mod anthropic;
pub mod config;
pub mod gemini;
pub mod openai_compat;
pub mod sanitize;
pub mod simulated;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use anthropic::Anthropic;
pub use gemini::Gemini;
pub use openai_compat::OpenAiCompat;
pub use simulated::Simulated;

/// One chat message; `role` is `system`, `user` or `assistant`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// What the gateway asks of a provider: the same for every wire format.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
}

impl ChatRequest {
    /// A single user message.
    pub fn user(prompt: &str) -> ChatRequest {
        ChatRequest {
            messages: vec![ChatMessage {
                role: "user".into(),
                content: prompt.into(),
            }],
            ..ChatRequest::default()
        }
    }
}

/// A provider's answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Completion {
    pub text: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// `stop`, `length`, … in OpenAI's vocabulary.
    pub finish_reason: String,
    /// The quality recorded for this (prompt, model) in a dataset, when the
    /// provider is simulated from one; real providers leave it `None`.
    pub known_quality: Option<f32>,
    /// The cost recorded in a dataset, when simulated; real providers leave
    /// it `None` and the gateway prices the tokens.
    pub known_cost_usd: Option<f64>,
}

/// Why a call failed, in the categories retry and fallback decide on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No answer within the attempt's time limit.
    Timeout,
    /// Could not connect, or the connection broke.
    Connect,
    /// The upstream answered with this HTTP status.
    Status(u16),
    /// The upstream's answer could not be understood.
    Decode,
    /// The request cannot be sent (a missing API key, a bad URL).
    Config,
}

/// A failed upstream call. The HTTP adapters build these through
/// [`sanitize::Scrubber`], so `message` holds no API key, credential or
/// upstream address: it is shown to clients, logged and stored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ProviderError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ProviderError {
        ProviderError {
            kind,
            message: message.into(),
        }
    }

    /// Whether the same call might succeed if tried again: timeouts, broken
    /// connections, 408, 429 and 5xx. A 4xx other than those will fail the
    /// same way every time.
    pub fn retryable(&self) -> bool {
        match self.kind {
            ErrorKind::Timeout | ErrorKind::Connect => true,
            ErrorKind::Status(s) => s == 408 || s == 429 || s >= 500,
            ErrorKind::Decode | ErrorKind::Config => false,
        }
    }

    /// Classifies a reqwest error. The message is from a fixed vocabulary
    /// ("connection refused", "timed out", …): reqwest's own names the URL.
    pub fn from_reqwest(e: reqwest::Error) -> ProviderError {
        let (kind, what) = sanitize::transport_reason(&e);
        ProviderError::new(kind, what)
    }
}

/// One configured provider.
#[derive(Debug)]
pub enum Provider {
    OpenAi(OpenAiCompat),
    Anthropic(Anthropic),
    Gemini(Gemini),
    Simulated(Simulated),
}

impl Provider {
    /// Names the provider in its error messages as the config does; until
    /// then they say its kind (`provider openai: connection refused`).
    pub fn with_name(self, name: &str) -> Provider {
        match self {
            Provider::OpenAi(p) => Provider::OpenAi(p.with_name(name)),
            Provider::Anthropic(p) => Provider::Anthropic(p.with_name(name)),
            Provider::Gemini(p) => Provider::Gemini(p.with_name(name)),
            Provider::Simulated(p) => Provider::Simulated(p),
        }
    }

    /// Sends `req` to `upstream_model` on this provider. The caller applies
    /// timeouts and retries; this is one attempt.
    pub async fn complete(&self, upstream_model: &str, req: &ChatRequest) -> Result<Completion, ProviderError> {
        match self {
            Provider::OpenAi(p) => p.complete(upstream_model, req).await,
            Provider::Anthropic(p) => p.complete(upstream_model, req).await,
            Provider::Gemini(p) => p.complete(upstream_model, req).await,
            Provider::Simulated(p) => p.complete(upstream_model, req).await,
        }
    }

    /// [`Provider::complete`] cut off after `limit`: a timeout is a
    /// retryable [`ErrorKind::Timeout`] ("no answer within N ms"), and the
    /// dropped future drops its HTTP request.
    pub async fn complete_within(
        &self,
        upstream_model: &str,
        req: &ChatRequest,
        limit: Duration,
    ) -> Result<Completion, ProviderError> {
        match tokio::time::timeout(limit, self.complete(upstream_model, req)).await {
            Ok(result) => result,
            Err(_) => Err(ProviderError::new(
                ErrorKind::Timeout,
                format!("no answer within {} ms", limit.as_millis()),
            )),
        }
    }
}

/// The shared HTTP client: pooled keep-alive connections to every upstream.
/// Timeouts are applied per attempt by the caller, so none is set here
/// beyond a connect limit.
pub fn http_client(connect_timeout: Duration) -> qroute_core::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| qroute_core::Error::Unavailable(format!("the upstream HTTP client cannot start: {e}")))
}
