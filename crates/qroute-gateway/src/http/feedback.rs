//! `POST /v1/feedback`: quality that arrives after the answer (a user's
//! thumbs, a task metric, a grader's score), joined to the request by its
//! id and learned instead of the judged or default quality.
//!
//! Body: `request_id` and exactly one of
//! - `quality`: a number in [0, 1];
//! - `thumbs`: `"up"` (1) or `"down"` (0);
//! - `metric` + `value`, with optional `min` and `max` (default 0 and 1):
//!   quality = (value − min) / (max − min), clamped to [0, 1].
//!
//! Semantics (see `ExperienceStore::record_feedback`): a repeat overwrites the
//! earlier value and says so (`revisions`, `replaced`); an unknown id is a
//! 404; feedback after `learning.feedback_window_ms` is kept with
//! `late: true` and not learned from.

use crate::access::Principal;
use axum::Extension;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::errors::{ApiError, ApiJson};
use crate::engine::Gateway;
use qroute_core::record::Feedback;
use qroute_core::unix_ms;
use qroute_core::Error;

// Objects only: a derived struct would also read from an array, positionally.
qroute_core::objects_only!(FeedbackRequest);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct FeedbackRequest {
    pub request_id: String,
    /// Read as `f64` so that the range check sees the number sent.
    #[serde(default)]
    pub quality: Option<f64>,
    #[serde(default)]
    pub thumbs: Option<Thumbs>,
    #[serde(default)]
    pub metric: Option<String>,
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Thumbs {
    Up,
    Down,
}

impl FeedbackRequest {
    /// The feedback this body gives, or what is wrong with it.
    pub fn feedback(&self) -> Result<Feedback, Error> {
        let bad = |m: String| Error::InvalidInput(m);
        let (quality, kind, value) = match (self.quality, self.thumbs, &self.metric) {
            (Some(q), None, None) => {
                if !(0.0..=1.0).contains(&q) {
                    return Err(bad(format!("quality: must lie in [0, 1], got {q}")));
                }
                (q as f32, "quality".to_string(), q)
            }
            (None, Some(t), None) => {
                let v = matches!(t, Thumbs::Up) as u8 as f32;
                (v, "thumbs".to_string(), v as f64)
            }
            (None, None, Some(name)) => {
                let value = self.value.ok_or_else(|| bad("value: required with metric".into()))?;
                let (lo, hi) = (self.min.unwrap_or(0.0), self.max.unwrap_or(1.0));
                if !(value.is_finite() && lo.is_finite() && hi.is_finite() && hi > lo) {
                    return Err(bad(format!(
                        "metric {name:?}: need finite value and min < max, got value {value}, min {lo}, max {hi}"
                    )));
                }
                (
                    ((value - lo) / (hi - lo)).clamp(0.0, 1.0) as f32,
                    format!("metric:{name}"),
                    value,
                )
            }
            _ => {
                return Err(bad(
                    "give exactly one of `quality`, `thumbs` or `metric` (with `value`)".into(),
                ))
            }
        };
        if self.metric.is_none() && (self.value.is_some() || self.min.is_some() || self.max.is_some()) {
            return Err(bad("value, min and max go with metric".into()));
        }
        Ok(Feedback {
            quality,
            kind,
            value,
            time_ms: unix_ms(),
        })
    }
}

/// How long to wait for the answer record of a request whose decision is
/// stored but whose answer is still in the writer's queue (feedback sent
/// the instant the response arrived).
const ANSWER_WAIT: Duration = Duration::from_millis(500);

/// The answer for an id with no answer this key may see: the store's own
/// words for an unknown id, so that another key's ids read the same.
fn unanswered(id: &str) -> Error {
    Error::NotFound(format!(
        "request_id {id:?}: no answered request with that id (unknown, or every model failed)"
    ))
}

pub async fn feedback(
    State(gw): State<Arc<Gateway>>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<FeedbackRequest>,
) -> Result<Json<Value>, ApiError> {
    let fb = body.feedback()?;
    let window = gw.config.learning.feedback_window_ms;
    let id = body.request_id.clone();
    let give_up = tokio::time::Instant::now() + ANSWER_WAIT;
    loop {
        let store = gw.store.clone();
        let (id2, fb2) = (id.clone(), fb.clone());
        let who = who.clone();
        // `None`: another key's request, answered as an unknown one (at
        // once, with the same message) so that ids do not leak.
        // The owner is checked on the answer record itself, so feedback is
        // never recorded before the answer (and its key) is known.
        let result = tokio::task::spawn_blocking(move || match store.answered(&id2)? {
            Some(a) if !who.is_admin() && a.key_id.as_deref() != who.id() => Ok(None),
            Some(_) => store.record_feedback(&id2, fb2, window).map(Some),
            None => Err(unanswered(&id2)),
        })
        .await
        .map_err(|e| Error::Store(format!("feedback task failed: {e}")))?;
        match result {
            Ok(None) => return Err(unanswered(&id).into()),
            // The answer record may still be in the writer's queue (and, with
            // `durable_ack = false`, the decision too): wait a little.
            Err(Error::NotFound(_))
                if tokio::time::Instant::now() < give_up
                    && (!gw.config.store.durable_ack || gw.store.get(&id).ok().flatten().is_some()) =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => return Err(e.into()),
            Ok(Some((record, previous))) => {
                return Ok(Json(json!({
                    "request_id": id,
                    "decision_id": record.answered.decision_id,
                    "model": record.answered.model,
                    "quality": record.feedback.quality,
                    "kind": record.feedback.kind,
                    "late": record.late,
                    "learned": record.applied,
                    "revisions": record.revisions,
                    "replaced": previous.map(|p| p.feedback.quality),
                })))
            }
        }
    }
}
