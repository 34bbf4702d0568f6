//! `/v1/experiments`: create, list, show (with per-arm results from the
//! store) and stop A/B experiments between routing strategies; `/v1/shadow`:
//! the shadow policy's agreement so far. Also the enrolment of a request:
//! reading its unit key from the request.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::errors::{ApiError, ApiJson};
use crate::engine::Gateway;
use qroute_core::unix_ms;
use qroute_core::Error;
use qroute_experiment::results::{self, Options};
use qroute_experiment::{Enrollment, ExperimentSpec, LiveExperiment, UnitKey};

/// The running experiment's assignment for a request, when there is one and
/// the request carries its unit key. `user` is the body's user field.
pub fn enroll(gw: &Gateway, headers: &HeaderMap, user: Option<&str>) -> Option<Arc<Enrollment>> {
    let live = gw.experiments.running(unix_ms())?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let unit = match &live.experiment.spec.unit {
        UnitKey::User => user,
        UnitKey::ApiKey => header("authorization")
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v))
            .or_else(|| header("x-api-key")),
        UnitKey::Header(name) => header(name),
    }
    .filter(|u| !u.is_empty())?;
    Some(Arc::new(live.enroll(unit)))
}

/// An experiment and where it stands.
fn describe(live: &LiveExperiment) -> Value {
    json!({
        "experiment": live.experiment,
        "status": live.experiment.status(unix_ms()),
    })
}

/// `GET /v1/experiments`: every experiment, oldest first.
pub async fn list(State(gw): State<Arc<Gateway>>) -> Json<Value> {
    let all: Vec<Value> = gw.experiments.list().iter().map(|l| describe(l)).collect();
    Json(json!({ "experiments": all }))
}

/// `POST /v1/experiments`: 201 with the experiment; 400 for a bad spec, 409
/// for an id in use or an overlapping window.
pub async fn create(
    State(gw): State<Arc<Gateway>>,
    ApiJson(spec): ApiJson<ExperimentSpec>,
) -> Result<Response, ApiError> {
    let gw2 = gw.clone();
    // Loading an arm's checkpoint reads files: off the async workers.
    let live = tokio::task::spawn_blocking(move || gw2.experiments.create(spec, unix_ms()))
        .await
        .map_err(|e| Error::Store(format!("creating the experiment: {e}")))??;
    Ok((StatusCode::CREATED, Json(describe(&live))).into_response())
}

/// `GET /v1/experiments/{id}`: the experiment and its per-arm results,
/// computed from the experience store.
pub async fn show(State(gw): State<Arc<Gateway>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let live = gw
        .experiments
        .get(&id)
        .ok_or_else(|| Error::NotFound(format!("experiment {id:?}")))?;
    let opts = Options {
        level: 0.95,
        scales: gw.policy().scales,
        default_quality: gw.config.learning.default_quality,
    };
    let store = gw.store.clone();
    let experiment = live.experiment.clone();
    let results = tokio::task::spawn_blocking(move || results::compute(store.as_ref(), &experiment, &opts, unix_ms()))
        .await
        .map_err(|e| Error::Store(format!("computing results: {e}")))??;
    let mut body = describe(&live);
    body["results"] = serde_json::to_value(results).map_err(|e| Error::Store(e.to_string()))?;
    Ok(Json(body))
}

/// `POST /v1/experiments/{id}/stop`: ends enrolment; every record stays.
pub async fn stop(State(gw): State<Arc<Gateway>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let live = gw.experiments.stop(&id, unix_ms())?;
    Ok(Json(describe(&live)))
}

/// `GET /v1/shadow`: the shadow policy and how often it agreed with the
/// choice made, since start; 404 when none is configured.
pub async fn shadow(State(gw): State<Arc<Gateway>>) -> Result<Json<Value>, ApiError> {
    let s = gw
        .shadow
        .as_ref()
        .ok_or_else(|| Error::NotFound("no shadow policy is configured (policy.shadow)".into()))?;
    let decisions = s.decisions.load(Ordering::Relaxed);
    let agreements = s.agreements.load(Ordering::Relaxed);
    Ok(Json(json!({
        "name": s.name,
        "version": s.policy.policy.version,
        "decisions": decisions,
        "agreements": agreements,
        "agreement_rate": (decisions > 0).then(|| agreements as f64 / decisions as f64),
    })))
}
