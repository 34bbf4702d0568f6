//! The records the experience store keeps: one [`DecisionRecord`] per routed
//! request, written before anything is known about how it went, and zero or
//! more [`Outcome`]s joined to it later by request id (one per chosen model).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::features::Features;

/// One routing decision, keyed by request id. Written before the outcome is known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub request_id: String,
    /// Unix time in milliseconds.
    pub time_ms: u64,
    /// The context vector the policy saw.
    pub features: Features,
    /// The whole candidate set, in policy order.
    pub candidates: Vec<String>,
    /// Same length as `candidates`: the probability each was chosen.
    pub propensities: Vec<f32>,
    /// Model(s) actually run (1, or k for variations).
    pub chosen: Vec<String>,
    pub policy_version: u64,
    /// Operating point λ (weight of cost in the reward).
    pub cost_weight: f32,
    /// Operating point μ (weight of latency in the reward).
    pub latency_weight: f32,
    #[serde(default)]
    pub task: Option<String>,
    /// The experiment arm that made this decision, when the request was
    /// enrolled in one. `propensities` are then the arm's own distribution.
    #[serde(default)]
    pub experiment: Option<ExperimentTag>,
    /// What a shadow policy would have chosen (scored, never acted on).
    #[serde(default)]
    pub shadow: Option<ShadowPick>,
}

/// Which experiment and arm a decision was made under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentTag {
    pub experiment: String,
    /// The arm's name, or `holdout` for a held-out unit (served by the
    /// gateway's default strategy).
    pub arm: String,
    /// The strategy that drew the action (`learned`, `cost_optimized`, ...).
    pub strategy: String,
    /// Probability that a random unit is assigned this arm.
    pub assignment_propensity: f32,
    /// Stable hash of the unit key (the raw key, which may be an API key or
    /// a user id, is never stored). Requests of one unit are correlated, so
    /// per-arm intervals cluster on it.
    pub unit: u64,
}

/// A shadow policy's would-be choice for a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowPick {
    /// The shadow's configured name.
    pub name: String,
    pub version: u64,
    /// The candidate it scored highest at the request's operating point.
    pub model: String,
}

/// What happened when one chosen model ran; joined to its decision by
/// `request_id` (and `model`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub request_id: String,
    pub model: String,
    /// In `[0, 1]`; `None` until judged or fed back.
    pub quality: Option<f32>,
    pub cost_usd: f64,
    pub latency_ms: f64,
    pub error: Option<String>,
    /// Unix time in milliseconds.
    pub time_ms: u64,
    /// For a streamed answer, the milliseconds from the request's arrival
    /// to its first token: what a chat UI's user waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
}

/// Which answer a caller got for a request id: the decision record that
/// produced it (the request's own, or a fallback's) and the model. Delayed
/// feedback on the request id is joined to this answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answered {
    pub request_id: String,
    /// The decision record whose outcome the answer is (`request_id`, or
    /// `{request_id}/fallback-n`).
    pub decision_id: String,
    pub model: String,
    /// Unix time in milliseconds when the answer was returned.
    pub time_ms: u64,
    /// The key that asked (`master` or a virtual key's id; absent with auth
    /// off): feedback is only taken from the same key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

/// Feedback a caller sent on an answer, after the fact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    /// In `[0, 1]`: what the trainer learns as the answer's quality.
    pub quality: f32,
    /// `quality`, `thumbs` or `metric:<name>`.
    pub kind: String,
    /// The value as sent (1/0 for thumbs up/down, the metric's value).
    pub value: f64,
    /// Unix time in milliseconds when it arrived.
    pub time_ms: u64,
}

/// Feedback as stored: joined to its answer, and flagged when it came after
/// the wait window (kept for analysis, not learned from: by then the
/// default reward applied).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackRecord {
    pub feedback: Feedback,
    pub answered: Answered,
    pub late: bool,
    /// How many times feedback was sent for this request (a repeat replaces
    /// the earlier value).
    pub revisions: u32,
    /// Whether it set the answer's outcome quality (in time, and the answer
    /// has an outcome of its own: a merged answer does not).
    #[serde(default)]
    pub applied: bool,
}

impl Feedback {
    /// The check a store makes before joining feedback: a quality in `[0, 1]`.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.quality) {
            return Err(Error::InvalidInput(format!(
                "feedback quality {} must lie in [0, 1]",
                self.quality
            )));
        }
        Ok(())
    }
}

impl FeedbackRecord {
    /// Feedback joined to the answer it is on: the next revision after
    /// `previous`, and late (kept, not learned from) when it came more than
    /// `window_ms` after the answer. `applied` is for the store to set.
    pub fn join(
        feedback: Feedback,
        answered: Answered,
        previous: Option<&FeedbackRecord>,
        window_ms: u64,
    ) -> FeedbackRecord {
        FeedbackRecord {
            revisions: previous.map_or(1, |p| p.revisions + 1),
            late: feedback.time_ms.saturating_sub(answered.time_ms) > window_ms,
            feedback,
            answered,
            applied: false,
        }
    }
}

/// A decision with every outcome recorded for it so far (0..k of them),
/// outcomes ordered by model name, and the feedback on it if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experience {
    pub decision: DecisionRecord,
    pub outcomes: Vec<Outcome>,
    #[serde(default)]
    pub feedback: Option<FeedbackRecord>,
}

/// Checks a request id can be used as a store key: non-empty and free of NUL
/// bytes (NUL separates request id and model in outcome keys).
pub fn validate_request_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::InvalidInput("request_id: must not be empty".into()));
    }
    if id.as_bytes().contains(&0) {
        return Err(Error::InvalidInput(format!(
            "request_id {id:?}: must not contain a NUL byte"
        )));
    }
    Ok(())
}

impl DecisionRecord {
    /// The structural checks the store makes before writing a decision.
    pub fn validate(&self) -> Result<()> {
        validate_request_id(&self.request_id)?;
        let id = &self.request_id;
        if self.propensities.len() != self.candidates.len() {
            return Err(Error::InvalidInput(format!(
                "decision {id:?}: field `propensities` has {} entries but `candidates` has {}",
                self.propensities.len(),
                self.candidates.len()
            )));
        }
        if self.features.indices.len() != self.features.values.len() {
            return Err(Error::InvalidInput(format!(
                "decision {id:?}: field `features` has {} indices but {} values",
                self.features.indices.len(),
                self.features.values.len()
            )));
        }
        Ok(())
    }
}

impl Outcome {
    /// The structural checks the store makes before writing an outcome.
    pub fn validate(&self) -> Result<()> {
        validate_request_id(&self.request_id)?;
        if let Some(q) = self.quality {
            if !(0.0..=1.0).contains(&q) {
                return Err(Error::InvalidInput(format!(
                    "outcome {:?} / {:?}: field `quality` is {q}, must lie in [0, 1]",
                    self.request_id, self.model
                )));
            }
        }
        Ok(())
    }
}
