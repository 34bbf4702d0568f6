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
}

/// A decision with every outcome recorded for it so far (0..k of them),
/// outcomes ordered by model name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experience {
    pub decision: DecisionRecord,
    pub outcomes: Vec<Outcome>,
}

/// Checks a request id can be used as a store key: non-empty and free of NUL
/// bytes (NUL separates request id and model in outcome keys).
pub(crate) fn validate_request_id(id: &str) -> Result<()> {
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
    pub(crate) fn validate(&self) -> Result<()> {
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
    pub(crate) fn validate(&self) -> Result<()> {
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
