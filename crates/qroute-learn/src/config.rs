//! The `[learning]` config section.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Who trains the policy a gateway serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LearningMode {
    /// The gateway trains in a background thread and checkpoints into its
    /// registry.
    Online,
    /// Another process (`qroute train --follow`) trains and registers
    /// versions; the gateway serves each new one within a second.
    External,
    /// The policy never changes while serving.
    Off,
}

/// The online trainer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearningConfig {
    /// `false` is `mode = "off"` (the key predates `mode`).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Absent: `"online"` when `enabled`, else `"off"`.
    #[serde(default)]
    pub mode: Option<LearningMode>,
    /// The policy registry; absent: `policies/` beside the store directory
    /// (`DATA_DIR/policies` for `DATA_DIR/store`).
    #[serde(default)]
    pub registry: Option<PathBuf>,
    /// Seconds between checkpoints of the serving version into the registry
    /// (and one more at shutdown).
    #[serde(default = "default_checkpoint_every_s")]
    pub checkpoint_every_s: f64,
    /// Seconds at least between published versions; a version is published
    /// only after the trainer has learned something new.
    #[serde(default = "default_publish_every_s")]
    pub publish_every_s: f64,
    /// Versions kept in the registry; older ones are removed.
    #[serde(default = "default_keep_versions")]
    pub keep_versions: usize,
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
    /// Gradient steps at least between published versions. 1: the newest
    /// outcomes serve at once (`publish_every_s` already bounds the cost to
    /// one snapshot a second); ten steps were twenty requests at the default
    /// replay ratio, and a stale policy keeps repeating what was just learned
    /// against (`qroute simulate` on AlpacaEval, λ = 1: mean regret 0.082
    /// publishing every 10 steps, 0.066 every step).
    #[serde(default = "default_publish_every")]
    pub publish_every: u64,
}

fn default_checkpoint_every_s() -> f64 {
    30.0
}
fn default_publish_every_s() -> f64 {
    1.0
}
fn default_keep_versions() -> usize {
    100
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
    1
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
        if !self.enabled && self.mode.is_some_and(|m| m != LearningMode::Off) {
            return Err("learning.mode: conflicts with learning.enabled = false (drop one of them)".into());
        }
        for (name, v) in [
            ("checkpoint_every_s", self.checkpoint_every_s),
            ("publish_every_s", self.publish_every_s),
        ] {
            if !(v.is_finite() && (0.0..=86_400.0).contains(&v)) {
                return Err(format!("learning.{name}: must be a number of seconds in [0, 86400]"));
            }
        }
        if self.keep_versions == 0 {
            return Err("learning.keep_versions: must be at least 1".into());
        }
        Ok(())
    }

    /// The mode in effect, from `mode` or the older `enabled`.
    pub fn mode(&self) -> LearningMode {
        match (self.enabled, self.mode) {
            (false, _) => LearningMode::Off,
            (true, Some(m)) => m,
            (true, None) => LearningMode::Online,
        }
    }

    /// The registry directory for a store at `store_path`.
    pub fn registry_dir(&self, store_path: &Path) -> PathBuf {
        self.registry.clone().unwrap_or_else(|| {
            store_path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .join("policies")
        })
    }
}

impl Default for LearningConfig {
    fn default() -> Self {
        LearningConfig {
            enabled: true,
            mode: None,
            registry: None,
            checkpoint_every_s: default_checkpoint_every_s(),
            publish_every_s: default_publish_every_s(),
            keep_versions: default_keep_versions(),
            default_quality: None,
            feedback_window_ms: default_feedback_window_ms(),
            steps_per_experience: default_steps_per_experience(),
            max_steps_per_sec: default_max_steps_per_sec(),
            batch: default_batch(),
            publish_every: default_publish_every(),
        }
    }
}
