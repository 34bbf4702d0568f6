//! The `[policy]` config section: which policy routes, and how it explores.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Exploration, Strategy};

/// Which policy routes, and how it explores.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// A policy directory (`model.safetensors` + `policy.json`); absent means
    /// the policy compiled into the binary.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// How the gateway chooses: the learned policy (default) or a rule.
    #[serde(default = "learned")]
    pub strategy: Strategy,
    #[serde(default)]
    pub exploration: Exploration,
    /// Least probability of any candidate, so off-policy estimates stay finite.
    #[serde(default = "default_floor")]
    pub floor: f32,
    /// Most share of non-greedy decisions.
    #[serde(default)]
    pub budget: Option<f32>,
    /// Cost weight λ when a request gives none.
    #[serde(default = "default_cost_weight")]
    pub default_cost_weight: f32,
    /// Answer tokens assumed when pricing a model the policy has not seen.
    #[serde(default = "default_expected_output_tokens")]
    pub expected_output_tokens: f64,
    /// A candidate policy that scores live traffic without acting on it.
    #[serde(default)]
    pub shadow: Option<ShadowConfig>,
    /// Where experiment arms may name frozen policies besides the registry
    /// (`checkpoint = "NAME"` loads `checkpoints_dir/NAME`).
    #[serde(default)]
    pub checkpoints_dir: Option<PathBuf>,
}

/// Shadow mode: a candidate policy's would-be choice is logged with every
/// decision (and counted against the choice made), so its agreement rate
/// and its off-policy value are known before it takes traffic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    /// Logged with each pick, e.g. `candidate-2026-11`.
    pub name: String,
    /// Its policy directory.
    pub path: PathBuf,
}

fn learned() -> Strategy {
    Strategy::Learned {}
}
fn default_floor() -> f32 {
    0.005
}
fn default_cost_weight() -> f32 {
    0.25
}
fn default_expected_output_tokens() -> f64 {
    256.0
}

impl PolicyConfig {
    /// The checks TOML types cannot express; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..1.0).contains(&self.floor) {
            return Err("policy.floor: must lie in [0, 1)".into());
        }
        Ok(())
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            path: None,
            strategy: Strategy::Learned {},
            exploration: Exploration::default(),
            floor: default_floor(),
            budget: None,
            default_cost_weight: default_cost_weight(),
            expected_output_tokens: default_expected_output_tokens(),
            shadow: None,
            checkpoints_dir: None,
        }
    }
}
