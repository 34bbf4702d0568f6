//! A request to route, whichever endpoint it came from.

use std::sync::Arc;

use crate::cache::CacheMode;
use crate::exec::providers::ChatRequest;
use qroute_experiment::Enrollment;

/// The caller's trade-off between quality, cost and latency, and limits on
/// what may be chosen.
#[derive(Debug, Clone, Default)]
pub struct Preference {
    pub cost_weight: Option<f32>,
    pub latency_weight: Option<f32>,
    /// Leave out models whose expected cost for this prompt is above this.
    pub max_cost_usd: Option<f64>,
    /// Only these model ids.
    pub models: Option<Vec<String>>,
}

/// A request to route, whichever endpoint it came from.
#[derive(Debug, Clone, Default)]
pub struct RouteRequest {
    pub chat: ChatRequest,
    pub task_type: Option<String>,
    pub persona: Option<String>,
    pub preference: Preference,
    /// Skip the policy and call this model (a concrete model id on the
    /// OpenAI endpoint). Still logged, with propensity 1; no fallback.
    pub pinned: Option<String>,
    /// Models to run in parallel (`variations.default` when `None`).
    pub variations: Option<usize>,
    /// Merge the variations' answers with `variations.combine_model`
    /// instead of returning the judged best.
    pub combine: bool,
    /// Run as a cascade (`cascade.default` when `None`).
    pub cascade: Option<bool>,
    /// The experiment arm (or holdout) this request's unit is assigned to.
    pub enrollment: Option<Arc<Enrollment>>,
    /// The caller's key id, recorded with the answer so that only the same
    /// key may send feedback on it.
    pub key: Option<String>,
    /// The answer is to be streamed: only models that stream are candidates.
    pub stream: bool,
    /// What the caller lets the response cache do (for what the config
    /// makes cacheable at all).
    pub cache: CacheMode,
}
