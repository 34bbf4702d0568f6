//! `/v1/admin/…`: what other processes read from a running gateway, since
//! the sled store belongs to the process that serves it.
//!
//! - `GET /v1/admin/experiences?from=SEQ`: the experience log as JSONL,
//!   streamed (`qroute export --url`, `qroute ope --url`).
//! - `GET /v1/admin/experiences/sample?n=N&half_life=H`: a replay batch for
//!   an external trainer (`qroute train --follow --url`).
//! - `GET /v1/admin/policies`, `GET /v1/admin/policies/{version}`,
//!   `GET /v1/admin/policies/{version}/files/{file}`,
//!   `POST /v1/admin/policies/{version}/rollback`: the policy registry
//!   (`qroute policy … --url`).
//!
//! Scope: admin. Every one of these reads or changes what the gateway
//! learned; until API keys exist they are as open as the rest of the
//! gateway, so bind it to loopback.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::errors::{ApiError, ApiPath, ApiQuery};
use crate::engine::Gateway;
use qroute_core::policy::checkpoint;
use qroute_core::record::Experience;
use qroute_core::store::Sampling;
use qroute_core::Error;

/// Bytes of JSONL gathered before a chunk is sent.
const CHUNK: usize = 64 * 1024;
/// Largest replay batch one call may ask for.
const MAX_SAMPLE: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct From {
    #[serde(default)]
    from: u64,
}

/// `GET /v1/admin/experiences`: JSONL, one experience per line, in store
/// order from sequence number `from`. Read on a blocking thread and sent in
/// chunks as they fill, so memory stays flat however large the log; a read
/// error mid-way aborts the body (the client sees a truncated transfer, not
/// a short file that looks complete).
pub async fn experiences(State(gw): State<Arc<Gateway>>, ApiQuery(q): ApiQuery<From>) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut buf = Vec::with_capacity(CHUNK);
        for exp in gw.store.iter_from(q.from) {
            let line = exp.and_then(|e| {
                serde_json::to_writer(&mut buf, &e).map_err(|e| Error::Store(format!("encoding experience: {e}")))
            });
            if let Err(e) = line {
                tracing::warn!(error = %e, "export stream stopped");
                let _ = tx.blocking_send(Err(std::io::Error::other("export stopped")));
                return;
            }
            buf.push(b'\n');
            if buf.len() >= CHUNK && tx.blocking_send(Ok(Bytes::from(std::mem::take(&mut buf)))).is_err() {
                return; // the client went away
            }
        }
        if !buf.is_empty() {
            let _ = tx.blocking_send(Ok(Bytes::from(buf)));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    ([("content-type", "application/x-ndjson")], Body::from_stream(stream)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleQuery {
    n: usize,
    /// Recency half-life in records; absent: uniform.
    half_life: Option<usize>,
}

/// `GET /v1/admin/experiences/sample`: `{"len": …, "experiences": […]}`,
/// `n` experiences with outcomes drawn as the online trainer draws them.
pub async fn sample(
    State(gw): State<Arc<Gateway>>,
    ApiQuery(q): ApiQuery<SampleQuery>,
) -> Result<Json<Value>, ApiError> {
    if q.n == 0 || q.n > MAX_SAMPLE {
        return Err(Error::InvalidInput(format!("n: must lie in 1..={MAX_SAMPLE}")).into());
    }
    let how = match q.half_life {
        Some(half_life) => Sampling::Recent { half_life },
        None => Sampling::Uniform,
    };
    let store = gw.store.clone();
    let (len, experiences) = tokio::task::spawn_blocking(move || {
        let mut rng = rand::thread_rng();
        store.sample(q.n, &how, &mut rng).map(|e| (store.len(), e))
    })
    .await
    .map_err(|_| Error::Store("sampling failed".into()))??;
    let experiences: Vec<&Experience> = experiences.iter().map(|e| &**e).collect();
    Ok(Json(json!({ "len": len, "experiences": experiences })))
}

fn registry(gw: &Gateway) -> Result<qroute_learn::registry::Registry, ApiError> {
    gw.registry()
        .cloned()
        .ok_or_else(|| ApiError(Error::Unavailable("this gateway has no policy registry".into())))
}

/// `GET /v1/admin/policies`: every registered version, oldest first, and
/// the one serving.
pub async fn policies(State(gw): State<Arc<Gateway>>) -> Result<Json<Value>, ApiError> {
    let reg = registry(&gw)?;
    let entries = tokio::task::spawn_blocking(move || reg.entries())
        .await
        .map_err(|_| Error::Store("listing the registry failed".into()))??;
    Ok(Json(json!({
        "serving": gw.policy().version,
        "versions": entries,
    })))
}

/// `GET /v1/admin/policies/{version}`: its `policy.json`.
pub async fn policy(State(gw): State<Arc<Gateway>>, ApiPath(v): ApiPath<u64>) -> Result<Response, ApiError> {
    policy_file(State(gw), ApiPath((v, checkpoint::META_FILE.to_string()))).await
}

/// `GET /v1/admin/policies/{version}/files/{file}`: `policy.json` or
/// `model.safetensors`, byte for byte.
pub async fn policy_file(
    State(gw): State<Arc<Gateway>>,
    ApiPath((v, file)): ApiPath<(u64, String)>,
) -> Result<Response, ApiError> {
    let content_type = match file.as_str() {
        checkpoint::META_FILE => "application/json",
        checkpoint::WEIGHTS_FILE => "application/octet-stream",
        _ => {
            return Err(Error::NotFound(format!(
                "file: a version has {} and {}",
                checkpoint::META_FILE,
                checkpoint::WEIGHTS_FILE
            ))
            .into())
        }
    };
    let reg = registry(&gw)?;
    let bytes = tokio::task::spawn_blocking(move || reg.file(v, &file))
        .await
        .map_err(|_| Error::Store("reading the registry failed".into()))??;
    Ok(([("content-type", content_type)], bytes).into_response())
}

/// `POST /v1/admin/policies/{version}/rollback`: registers a copy of the
/// version as the newest one. The trainer (online mode) or the registry
/// watcher (external mode) serves it within a second; a gateway that does
/// not learn serves it at once.
pub async fn rollback(State(gw): State<Arc<Gateway>>, ApiPath(v): ApiPath<u64>) -> Result<Response, ApiError> {
    let reg = registry(&gw)?;
    let gw2 = gw.clone();
    let entry = tokio::task::spawn_blocking(move || {
        let entry = reg.rollback(v, &qroute_learn::registry::writer_id())?;
        gw2.serve_registered(entry.version)?;
        Ok::<_, Error>(entry)
    })
    .await
    .map_err(|_| Error::Store("rollback failed".into()))??;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "version": entry.version, "lineage": entry.lineage })),
    )
        .into_response())
}
