//! `GET /v1/health` (is it up, and is anything degraded) and
//! `GET /v1/capabilities` (what can be asked of it).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::engine::Gateway;
use crate::exec::resilience::BreakerState;

pub async fn health(State(gw): State<Arc<Gateway>>) -> Json<Value> {
    let breakers = gw.breaker_states();
    let open: Vec<&str> = breakers
        .iter()
        .filter(|(_, s)| *s == BreakerState::Open)
        .map(|(id, _)| *id)
        .collect();
    let available = breakers.len() - open.len();
    Json(json!({
        "status": if open.is_empty() { "ok" } else { "degraded" },
        "policy_version": gw.policy().version,
        "trainer_steps": gw.trainer_steps(),
        "uptime_s": gw.started.elapsed().as_secs_f64(),
        "store_records": gw.store.len(),
        "models_available": available,
        "breakers_open": open,
    }))
}

pub async fn capabilities(State(gw): State<Arc<Gateway>>) -> Json<Value> {
    let policy = gw.policy();
    let breakers = gw.breaker_states();
    let models: Vec<Value> = gw
        .models
        .iter()
        .zip(&breakers)
        .map(|(m, (_, state))| {
            let c = &m.config;
            json!({
                "id": c.id,
                "provider": c.provider,
                "upstream": c.upstream(),
                "input_per_mtok": c.input_per_mtok,
                "output_per_mtok": c.output_per_mtok,
                "context_window": c.context_window,
                "capabilities": m.capabilities,
                "tags": c.tags,
                "breaker": state.as_str(),
            })
        })
        .collect();
    Json(json!({
        "models": models,
        "strategies": qroute_core::policy::strategy::STRATEGIES,
        "strategy": gw.config.policy.strategy,
        "variations": {
            "default": gw.config.variations.default,
            "max": gw.config.variations.max,
            "deadline_ms": gw.config.variations.deadline_ms,
            "judge": gw.judge.name(),
            "combine_model": gw.config.variations.combine_model,
        },
        "cascade": {
            "default": gw.config.cascade.default,
            "max_calls": gw.config.cascade.max_calls,
            // Only a policy trained on recorded answers can judge one.
            "available": policy.answer_head.is_some(),
        },
        "feedback_window_ms": gw.config.learning.feedback_window_ms,
        "exploration": gw.config.policy.exploration,
        "policy": {
            "version": policy.version,
            "operating_points": policy.operating_points,
            "default_cost_weight": gw.config.policy.default_cost_weight,
        },
        "features": {"dim": policy.spec.dim, "spec": policy.spec},
        "learning": {
            "enabled": gw.config.learning.mode() != qroute_learn::LearningMode::Off,
            "mode": gw.config.learning.mode(),
            "steps": gw.trainer_steps(),
            "registry_versions": gw.registry().and_then(|r| r.versions().ok()).map(|v| v.len()),
        },
        "experiments": {
            "running": gw.experiments.running(qroute_core::unix_ms()).map(|l| l.experiment.spec.id.clone()),
            "units": ["user", "api_key", "header:<name>"],
        },
        "shadow": gw.shadow.as_ref().map(|s| json!({"name": s.name, "version": s.policy.policy.version})),
        "endpoints": super::ENDPOINTS,
    }))
}
