//! `GET /v1/stats` (admin): the console's aggregates over a time window
//! (see [`crate::engine::stats`]), and `GET /v1/auth/me` (any key): who
//! the caller is, so the console shows a user key no admin action.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use super::errors::{ApiError, ApiQuery};
use crate::access::Principal;
use crate::engine::stats::Stats;
use crate::engine::Gateway;
use qroute_core::{unix_ms, Error};

/// Longest window: a week.
const MAX_WINDOW_S: u64 = 7 * 86_400;
/// Most buckets one answer holds.
const MAX_BUCKETS: u64 = 2_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// Seconds back from now; default an hour.
    #[serde(default = "default_window")]
    window_s: u64,
    /// Seconds per point of the time series; default a minute.
    #[serde(default = "default_bucket")]
    bucket_s: u64,
}

fn default_window() -> u64 {
    3_600
}
fn default_bucket() -> u64 {
    60
}

pub async fn stats(State(gw): State<Arc<Gateway>>, ApiQuery(q): ApiQuery<StatsQuery>) -> Result<Json<Stats>, ApiError> {
    if !(60..=MAX_WINDOW_S).contains(&q.window_s) {
        return Err(Error::InvalidInput(format!("window_s: must lie in 60..={MAX_WINDOW_S}")).into());
    }
    if q.bucket_s == 0 {
        return Err(Error::InvalidInput("bucket_s: must be at least 1".into()).into());
    }
    // At most MAX_BUCKETS points, and none longer than the window.
    let bucket_s = q.bucket_s.max(q.window_s.div_ceil(MAX_BUCKETS)).min(q.window_s);
    let stats = tokio::task::spawn_blocking(move || gw.stats(q.window_s, bucket_s, unix_ms()))
        .await
        .map_err(|_| Error::Store("computing stats failed".into()))??;
    Ok(Json(stats))
}

pub async fn me(Extension(who): Extension<Principal>) -> Json<Value> {
    let (key_id, name) = match &who {
        Principal::Key(k) => (Some(k.id.clone()), Some(k.name.clone())),
        Principal::Master => (Some("master".to_string()), None),
        Principal::Open => (None, None),
    };
    Json(json!({ "admin": who.is_admin(), "key_id": key_id, "name": name }))
}
