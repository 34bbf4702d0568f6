//! `POST /v1/execute`: qroute's own API. A prompt and a preference in; the
//! answer, the model that gave it and everything needed to audit the
//! decision (request id, policy version, propensity, cost, timings) out.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::auth::{route_as, with_rate_headers};
use super::errors::{ApiError, ApiJson};
use super::experiments::enroll;
use super::metrics::{Received, UpstreamTime};
use crate::access::Principal;
use crate::cache::CacheMode;
use crate::engine::variations::Variation;
use crate::engine::{Attempt, CascadeStep, Gateway, Preference, RouteRequest, Timings};
use crate::exec::providers::{ChatMessage, ChatRequest, Params};
use qroute_core::Error;

// Objects only: a derived struct would also read from an array, positionally.
qroute_core::objects_only!(ExecuteRequest, PreferenceBody);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct ExecuteRequest {
    pub prompt: String,
    /// Sent as a system message before the prompt.
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default)]
    pub persona: Option<String>,
    /// e.g. `gsm8k`, `mmlu/anatomy`, `code`: a feature the policy sees.
    #[serde(default)]
    pub task_type: Option<String>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// In [0, 2]; read as `f64` so that the check sees the number sent.
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub preference: PreferenceBody,
    /// Models to run in parallel, the judged best answering (the config's
    /// `variations.default` when absent).
    #[serde(default)]
    pub variations: Option<usize>,
    /// Merge the variations' answers with the configured combine model.
    #[serde(default)]
    pub combine: bool,
    /// Run as a cascade: the routed model first, a stronger one only when
    /// its answer is not worth keeping (the config's `cascade.default` when
    /// absent).
    #[serde(default)]
    pub cascade: Option<bool>,
    /// The caller's end user: the unit of experiments keyed on `user`.
    #[serde(default)]
    pub user_id: Option<String>,
}

/// The operating point and limits of one request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct PreferenceBody {
    /// λ: how much one unit of normalised cost weighs against quality.
    #[serde(default)]
    pub cost_weight: Option<f64>,
    /// μ: the same for latency.
    #[serde(default)]
    pub latency_weight: Option<f64>,
    #[serde(default)]
    pub max_cost_usd: Option<f64>,
    /// Restrict the choice to these model ids.
    #[serde(default)]
    pub models: Option<Vec<String>>,
}

impl From<PreferenceBody> for Preference {
    fn from(p: PreferenceBody) -> Self {
        Preference {
            cost_weight: p.cost_weight.map(|w| w as f32),
            latency_weight: p.latency_weight.map(|w| w as f32),
            max_cost_usd: p.max_cost_usd,
            models: p.models,
        }
    }
}

impl ExecuteRequest {
    /// What the engine does not check: a blank prompt (with a system
    /// message the request is not blank), and the numbers that narrow to
    /// `f32`, checked as sent.
    pub fn validate(&self) -> Result<(), Error> {
        if self.prompt.trim().is_empty() {
            return Err(Error::InvalidInput("prompt: must not be blank".into()));
        }
        check_numbers(
            &[("max_tokens", self.max_tokens)],
            self.temperature,
            self.preference.cost_weight,
            self.preference.latency_weight,
        )
    }
}

/// Largest cost or latency weight a request may ask for. Operating points
/// span about 0 to 10; beyond this bound a weight only risks overflowing
/// the `f32` scores (every candidate at minus infinity, no distribution to
/// draw from), and means nothing more than "the cheapest, whatever it does".
pub const MAX_WEIGHT: f64 = 1000.0;

/// The bounds `/v1/execute` and `/v1/chat/completions` share: `max_tokens`
/// at least 1, `temperature` in [0, 2], and weights in [0, MAX_WEIGHT].
pub fn check_numbers(
    max_tokens: &[(&str, Option<u32>)],
    temperature: Option<f64>,
    cost_weight: Option<f64>,
    latency_weight: Option<f64>,
) -> Result<(), Error> {
    if let Some((name, _)) = max_tokens.iter().find(|(_, m)| *m == Some(0)) {
        return Err(Error::InvalidInput(format!("{name}: must be at least 1")));
    }
    if let Some(t) = temperature.filter(|t| !(0.0..=2.0).contains(t)) {
        return Err(Error::InvalidInput(format!("temperature: must lie in [0, 2], got {t}")));
    }
    for (name, w) in [("cost_weight", cost_weight), ("latency_weight", latency_weight)] {
        if let Some(w) = w.filter(|w| !(0.0..=MAX_WEIGHT).contains(w)) {
            return Err(Error::InvalidInput(format!(
                "{name}: must lie in [0, {MAX_WEIGHT}], got {w}"
            )));
        }
    }
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Debug, Serialize)]
pub struct ExecuteResponse {
    pub request_id: String,
    pub response: String,
    pub model: String,
    pub finish_reason: String,
    pub policy_version: u64,
    /// Probability the policy gave the first model it chose.
    pub propensity: f32,
    pub cost_weight: f32,
    pub cost_usd: f64,
    pub usage: Usage,
    pub timings: Timings,
    /// Every model tried, in order; more than one means fallback happened.
    pub attempts: Vec<Attempt>,
    /// With variations: each model run, its judged score, cost and latency.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub variations: Vec<Variation>,
    /// The judge that chose among variations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge: Option<&'static str>,
    /// The model that merged the variations' answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub combined_by: Option<String>,
    /// With a cascade: every model called, its answer's value, cost and
    /// latency, and which answer was kept.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cascade: Vec<CascadeStep>,
}

pub async fn execute(
    State(gw): State<Arc<Gateway>>,
    received: Option<Extension<Received>>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ExecuteRequest>,
) -> Result<Response, ApiError> {
    body.validate()?;
    let enrollment = enroll(&gw, &headers, body.user_id.as_deref());
    let mut messages = Vec::with_capacity(2);
    if let Some(system) = body.system {
        messages.push(ChatMessage::text("system", system));
    }
    messages.push(ChatMessage::text("user", body.prompt));
    let req = RouteRequest {
        chat: ChatRequest {
            messages,
            params: Params {
                max_tokens: body.max_tokens,
                temperature: body.temperature.map(|t| t as f32),
                ..Params::default()
            },
        },
        task_type: body.task_type,
        persona: body.persona,
        preference: body.preference.into(),
        pinned: None,
        variations: body.variations,
        combine: body.combine,
        cascade: body.cascade,
        enrollment,
        key: None,
        stream: false,
        cache: CacheMode::Use,
    };
    let (routed, rate) = match route_as(&gw, &who, req, Received::instant(received)).await {
        Ok(answered) => answered,
        Err(refused) => return Ok(refused.into_response()),
    };
    let upstream = UpstreamTime(routed.upstream);
    let mut resp = Json(ExecuteResponse {
        request_id: routed.request_id,
        response: routed.completion.text,
        model: routed.model,
        finish_reason: routed.completion.finish_reason,
        policy_version: routed.policy_version,
        propensity: routed.propensity,
        cost_weight: routed.cost_weight,
        cost_usd: routed.cost_usd,
        usage: Usage {
            input_tokens: routed.completion.input_tokens,
            output_tokens: routed.completion.output_tokens,
        },
        timings: routed.timings,
        attempts: routed.attempts,
        variations: routed.variations,
        judge: routed.judge,
        combined_by: routed.combined_by,
        cascade: routed.cascade,
    })
    .into_response();
    with_rate_headers(&mut resp, &rate);
    resp.extensions_mut().insert(upstream);
    Ok(resp)
}
