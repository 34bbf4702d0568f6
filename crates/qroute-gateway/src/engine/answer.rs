//! What a routed request gives back: the answer, its cost, the attempts
//! made and where the time went.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::cascade::CascadeStep;
use super::variations::Variation;
use crate::exec::providers::{Completion, DeltaStream};

/// One model tried for a request.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub model: String,
    /// Upstream calls made (1 + retries).
    pub calls: u32,
    pub latency_ms: f64,
    pub error: Option<String>,
}

/// Where the time of a request went.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Timings {
    pub total_ms: f64,
    /// Waiting on upstreams, retries' backoff included.
    pub upstream_ms: f64,
    /// Everything else: the gateway's own added latency.
    pub overhead_ms: f64,
    /// Reading the request, featurizing, scoring and drawing.
    pub decision_us: f64,
}

/// A routed and answered request.
#[derive(Debug, Clone)]
pub struct Routed {
    pub request_id: String,
    /// The model that answered.
    pub model: String,
    pub completion: Completion,
    pub cost_usd: f64,
    pub policy_version: u64,
    /// Probability the policy gave the first model it chose.
    pub propensity: f32,
    pub cost_weight: f32,
    pub attempts: Vec<Attempt>,
    /// Every variation run (empty for a single-model request).
    pub variations: Vec<Variation>,
    /// The judge that picked among variations.
    pub judge: Option<&'static str>,
    /// The model that merged the variations' answers, when asked to.
    pub combined_by: Option<String>,
    /// Every model a cascade called, in order (empty otherwise).
    pub cascade: Vec<CascadeStep>,
    pub timings: Timings,
    /// Time spent waiting on upstreams, retries' backoff included.
    pub upstream: Duration,
    /// Whether the answer came from the response cache.
    pub cache: CacheStatus,
}

/// What the response cache did for a request (the `x-qroute-cache` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Answered from the cache: no model was called, nothing was learned.
    Hit,
    /// Looked up and not found; the answer is stored for next time.
    Miss,
    /// Not cacheable (sampled, several choices, the caller said no, or the
    /// cache is off): neither looked up nor stored.
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Bypass => "bypass",
        }
    }
}

/// A routed request whose answer is streamed: how it was routed (the
/// answer in `routed.completion` is empty, or whole for a replay), and
/// the deltas as they come. The stream records the outcome when it ends
/// or is dropped.
pub struct Streaming {
    pub routed: Routed,
    pub deltas: DeltaStream,
    /// The request's cost, sent once the stream has ended (or was dropped),
    /// for the key's budget.
    pub cost: Option<tokio::sync::oneshot::Receiver<f64>>,
}

impl Timings {
    /// Timings of a request that arrived at `received` and waited `upstream`.
    pub fn new(received: Instant, upstream: Duration, decision_us: f64) -> Timings {
        let total = received.elapsed();
        Timings {
            total_ms: total.as_secs_f64() * 1e3,
            upstream_ms: upstream.as_secs_f64() * 1e3,
            overhead_ms: total.saturating_sub(upstream).as_secs_f64() * 1e3,
            decision_us,
        }
    }
}
