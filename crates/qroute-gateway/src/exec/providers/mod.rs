//! Upstream LLM providers behind one interface: a chat request in, a
//! completion with token usage out, or a [`ProviderError`] that says whether
//! trying again could help.
//!
//! One file per wire format. The set is closed (a serde-tagged config enum
//! picks one), so dispatch is a `match` rather than a trait object.

pub mod anthropic;
pub mod capability;
pub mod chat;
pub mod config;
pub mod gemini;
pub mod openai_compat;
pub mod sanitize;
pub mod simulated;
pub mod stream;

use std::time::Duration;

pub use anthropic::Anthropic;
pub use capability::Capability;
pub use chat::{
    Assembler, ChatMessage, ChatRequest, Choice, Completion, Content, Delta, Params, Part, ResponseFormat, Tool,
    ToolCall,
};
pub use gemini::Gemini;
pub use openai_compat::OpenAiCompat;
pub use simulated::Simulated;
pub use stream::DeltaStream;

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

    /// Whether the failure says the model is unwell, and so counts against
    /// its circuit breaker: a timeout, a broken connection, 408, 429, 5xx
    /// or an unreadable answer. A refusal of the request itself (400, 401,
    /// 403, 404, 413, 422) does not: another request would not meet it.
    pub fn counts_against_model(&self) -> bool {
        self.retryable() || self.kind == ErrorKind::Decode
    }

    /// The request itself was refused (400 or 422): a client's mistake
    /// that the client should hear as such, never retried on the model.
    pub fn refused_request(&self) -> bool {
        matches!(self.kind, ErrorKind::Status(400 | 422))
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
            Err(_) => Err(timed_out(limit)),
        }
    }

    /// Opens a streamed answer from `upstream_model`. Resolves once the
    /// upstream accepted the request; the deltas follow as it generates.
    pub async fn stream(&self, upstream_model: &str, req: &ChatRequest) -> Result<DeltaStream, ProviderError> {
        match self {
            Provider::OpenAi(p) => p.stream(upstream_model, req).await,
            Provider::Anthropic(p) => p.stream(upstream_model, req).await,
            Provider::Gemini(p) => p.stream(upstream_model, req).await,
            Provider::Simulated(p) => Ok(stream::replay(&p.complete(upstream_model, req).await?)),
        }
    }

    /// [`Provider::stream`] whose first delta arrived within `limit`: up
    /// to then a failure may still be retried or fall back, since nothing
    /// has gone to the client. The stream returned starts with that delta.
    pub async fn stream_within(
        &self,
        upstream_model: &str,
        req: &ChatRequest,
        limit: Duration,
    ) -> Result<DeltaStream, ProviderError> {
        use futures_util::StreamExt;
        let first = async {
            let mut s = self.stream(upstream_model, req).await?;
            match s.next().await {
                Some(Ok(d)) => Ok(futures_util::stream::once(std::future::ready(Ok(d))).chain(s).boxed()),
                Some(Err(e)) => Err(e),
                // Dropped before anything was said: worth a retry.
                None => Err(ProviderError::new(
                    ErrorKind::Connect,
                    "the stream ended before its first chunk",
                )),
            }
        };
        match tokio::time::timeout(limit, first).await {
            Ok(result) => result,
            Err(_) => Err(timed_out(limit)),
        }
    }
}

fn timed_out(limit: Duration) -> ProviderError {
    ProviderError::new(ErrorKind::Timeout, format!("no answer within {} ms", limit.as_millis()))
}

/// The shared HTTP client: pooled keep-alive connections to every upstream.
/// Timeouts are applied per attempt by the caller, so none is set here
/// beyond a connect limit. Redirects are not followed: a provider API
/// answers a POST where it was sent, following one would send the prompt
/// (and, same-origin, the key) somewhere the config never named, and the
/// redirect layer was ~4% of a worker's CPU per call. A 3xx is an upstream
/// error like any other non-2xx answer.
pub fn http_client(connect_timeout: Duration) -> qroute_core::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| qroute_core::Error::Unavailable(format!("the upstream HTTP client cannot start: {e}")))
}
