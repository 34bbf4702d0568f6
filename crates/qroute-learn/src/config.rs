//! The `[learning]` config section.

use serde::{Deserialize, Serialize};

/// The online trainer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearningConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Quality assumed for an answer nobody judged nor gave feedback on
    /// within `feedback_window_ms` (the default reward); absent means such
    /// answers are not learned from.
    #[serde(default)]
    pub default_quality: Option<f32>,
    /// How long after an answer feedback (`POST /v1/feedback`) is waited
    /// for. Later feedback is kept but flagged `late` and not learned from.
    #[serde(default = "default_feedback_window_ms")]
    pub feedback_window_ms: u64,
    /// Gradient steps per newly recorded experience: the replay ratio.
    #[serde(default = "default_steps_per_experience")]
    pub steps_per_experience: f32,
    /// Upper bound on steps per second, so training never takes the cores
    /// serving needs.
    #[serde(default = "default_max_steps_per_sec")]
    pub max_steps_per_sec: f32,
    #[serde(default = "default_batch")]
    pub batch: usize,
    #[serde(default = "default_publish_every")]
    pub publish_every: u64,
}

fn yes() -> bool {
    true
}
fn default_feedback_window_ms() -> u64 {
    10 * 60 * 1000
}
fn default_steps_per_experience() -> f32 {
    0.5
}
fn default_max_steps_per_sec() -> f32 {
    200.0
}
fn default_batch() -> usize {
    64
}
fn default_publish_every() -> u64 {
    10
}

impl LearningConfig {
    /// The checks TOML types cannot express; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.steps_per_experience.is_finite() && self.steps_per_experience >= 0.0) {
            return Err("learning.steps_per_experience: must be a finite number >= 0".into());
        }
        if !(self.max_steps_per_sec.is_finite() && self.max_steps_per_sec >= 0.01) {
            return Err("learning.max_steps_per_sec: must be a finite number >= 0.01".into());
        }
        if self.default_quality.is_some_and(|q| !(0.0..=1.0).contains(&q)) {
            return Err("learning.default_quality: must lie in [0, 1]".into());
        }
        if self.batch == 0 || self.publish_every == 0 {
            return Err("learning: batch and publish_every must be positive".into());
        }
        Ok(())
    }
}

impl Default for LearningConfig {
    fn default() -> Self {
        LearningConfig {
            enabled: true,
            default_quality: None,
            feedback_window_ms: default_feedback_window_ms(),
            steps_per_experience: default_steps_per_experience(),
            max_steps_per_sec: default_max_steps_per_sec(),
            batch: default_batch(),
            publish_every: default_publish_every(),
        }
    }
}
