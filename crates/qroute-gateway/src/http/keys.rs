//! `/v1/keys`: virtual keys (scope admin). A key's secret is in the answer
//! to `POST` only; listings show its id, name, limits and spend.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::errors::{ApiError, ApiJson, ApiPath};
use crate::access::keys::{KeyRecord, NewKey};
use crate::engine::Gateway;
use qroute_core::{unix_ms, Error};

/// A key as listed: never its hash or secret.
fn describe(gw: &Gateway, k: &KeyRecord) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "preview": k.preview,
        "models": k.models,
        "rpm": k.rpm,
        "tpm": k.tpm,
        "budget_usd": k.budget_usd,
        "budget_period": k.budget_period,
        "spend_usd": gw.access.spent(k, unix_ms()),
        "expires_at": k.expires_at,
        "admin": k.admin,
        "created_ms": k.created_ms,
        "revoked_ms": k.revoked_ms,
    })
}

/// `POST /v1/keys`: 201 with the key (`key`, shown this once) and its id.
pub async fn create(State(gw): State<Arc<Gateway>>, ApiJson(new): ApiJson<NewKey>) -> Result<Response, ApiError> {
    let gw2 = gw.clone();
    // Storing the key is a durable write: off the async workers.
    let (record, secret) = tokio::task::spawn_blocking(move || {
        let known: Vec<&str> = gw2.models.iter().map(|m| m.config.id.as_str()).collect();
        gw2.access.create(new, &known, unix_ms())
    })
    .await
    .map_err(|_| Error::Store("creating the key failed".into()))??;
    let mut body = describe(&gw, &record);
    body["key"] = json!(secret);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /v1/keys`: every key, oldest first.
pub async fn list(State(gw): State<Arc<Gateway>>) -> Json<Value> {
    let keys: Vec<Value> = gw.access.list().iter().map(|k| describe(&gw, k)).collect();
    Json(json!({ "keys": keys }))
}

/// `GET /v1/keys/{id}`: one key, its limits and its spend.
pub async fn show(State(gw): State<Arc<Gateway>>, ApiPath(id): ApiPath<String>) -> Result<Json<Value>, ApiError> {
    let k = gw
        .access
        .get(&id)
        .ok_or_else(|| Error::NotFound(format!("no key {id:?}")))?;
    Ok(Json(describe(&gw, &k)))
}

/// `DELETE /v1/keys/{id}`: revokes the key (and its tokens) at once.
pub async fn revoke(State(gw): State<Arc<Gateway>>, ApiPath(id): ApiPath<String>) -> Result<Json<Value>, ApiError> {
    let gw2 = gw.clone();
    let k = tokio::task::spawn_blocking(move || gw2.access.revoke(&id, unix_ms()))
        .await
        .map_err(|_| Error::Store("revoking the key failed".into()))??;
    Ok(Json(describe(&gw, &k)))
}
