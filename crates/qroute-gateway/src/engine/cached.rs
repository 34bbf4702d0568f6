//! The response cache in the request's path: looked up before anything is
//! decided, filled once an answer is whole. A hit is not a routing
//! decision: nothing is written to the experience store, so it never
//! biases learning or off-policy evaluation, and it costs nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::decide::new_request_id;
use super::{CacheStatus, Gateway, RouteRequest, Routed, Timings};
use crate::cache::{CacheKey, CacheTarget, CachedAnswer};
use crate::exec::providers::Completion;

impl Gateway {
    /// The cache key of `req` when the cache is on, the config makes the
    /// request cacheable, and the caller lets the cache be used.
    pub(super) fn cache_key(&self, req: &RouteRequest) -> Option<CacheKey> {
        self.cache.as_ref()?;
        if !req.cache.writes() || !self.config.cache.cacheable(&req.chat) {
            return None;
        }
        let p = &req.preference;
        let target = CacheTarget {
            model: req.pinned.clone(),
            cost_weight: p.cost_weight,
            latency_weight: p.latency_weight,
            max_cost_usd: p.max_cost_usd,
            models: p.models.clone(),
            task_type: req.task_type.clone(),
            persona: req.persona.clone(),
            variations: req.variations,
            combine: req.combine,
            cascade: req.cascade,
            key: req.key.clone(),
        };
        CacheKey::of(&req.chat, &target)
    }

    /// The stored answer for `key`, as a routed request, if the caller
    /// lets it be served.
    pub(super) async fn cached_answer(&self, req: &RouteRequest, key: &CacheKey, received: Instant) -> Option<Routed> {
        let cache = self.cache.as_ref()?;
        if !req.cache.reads() {
            return None;
        }
        let hit = cache.get(key).await;
        let result = if hit.is_some() {
            self.cache_counts
                .hits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            "hit"
        } else {
            self.cache_counts
                .misses
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            "miss"
        };
        metrics::counter!("qroute_cache_requests_total", "result" => result).increment(1);
        let hit = hit?;
        tracing::info!(model = %hit.model, age_ms = qroute_core::unix_ms().saturating_sub(hit.created_ms), "cache hit");
        Some(Routed {
            request_id: new_request_id(),
            model: hit.model.clone(),
            completion: hit.completion.clone(),
            cost_usd: 0.0,
            policy_version: self.policy().version,
            propensity: 1.0,
            cost_weight: 0.0,
            attempts: Vec::new(),
            variations: Vec::new(),
            judge: None,
            combined_by: None,
            cascade: Vec::new(),
            upstream: Duration::ZERO,
            timings: Timings::new(received, Duration::ZERO, 0.0),
            cache: CacheStatus::Hit,
        })
    }

    /// Stores a whole answer under `key`. A cut-off or failed answer is not
    /// stored: it would be served again as if whole.
    pub(super) async fn remember(&self, key: CacheKey, model: &str, completion: &Completion) {
        let Some(cache) = &self.cache else {
            return;
        };
        let whole = completion
            .choices()
            .iter()
            .all(|c| matches!(c.finish_reason.as_str(), "stop" | "tool_calls"));
        if whole {
            cache
                .put(key, Arc::new(CachedAnswer::now(model, completion.clone())))
                .await;
        }
    }
}
