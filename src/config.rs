//! The gateway's configuration: one TOML file, or the embedded default.
//!
//! Unknown fields are errors (`deny_unknown_fields`), so a misspelt key
//! fails at start-up with its line and column instead of being ignored.
//! Cross-field checks (a model naming a provider that does not exist, a
//! duplicate id, an API key variable that is not set) come after parsing and
//! name the field they concern.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::experiment::ExperimentSpec;
use crate::policy::{Exploration, Strategy};
use crate::{Error, Result};

/// The configuration `qroute serve` runs with when given none: simulated
/// providers backed by the bundled routellm dataset and the shipped policy.
pub const EMBEDDED_DEFAULT: &str = include_str!("../config/default.toml");

/// Name of the bundled dataset a simulated provider may use instead of a path.
pub const EMBEDDED_DATASET: &str = "embedded:routellm_mmlu_gsm8k";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on; `--listen` overrides it.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub learning: LearningConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub breaker: BreakerConfig,
    #[serde(default)]
    pub variations: VariationsConfig,
    pub providers: Vec<ProviderConfig>,
    pub models: Vec<ModelConfig>,
    /// Experiments created at start-up unless the store already has them
    /// (more can be created through `/v1/experiments`).
    #[serde(default)]
    pub experiments: Vec<ExperimentSpec>,
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:8080".parse().expect("a valid address")
}

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
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Directory of the experience store; created when missing.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// `true` (the default): a response waits until its decision record is
    /// durable (the sync overlaps the upstream call, so it only shows when
    /// the upstream answers faster than a disk sync). `false`: records are
    /// queued and durable within one group commit after the response, and
    /// a crash in that window can lose them.
    #[serde(default = "yes")]
    pub durable_ack: bool,
}

fn default_store_path() -> PathBuf {
    PathBuf::from("qroute-data/store")
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: default_store_path(),
            durable_ack: true,
        }
    }
}

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

/// Timeouts and size limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_body_bytes")]
    pub body_bytes: usize,
    /// One upstream attempt.
    #[serde(default = "default_attempt_timeout_ms")]
    pub attempt_timeout_ms: u64,
    /// A whole request: every attempt, backoff and fallback.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

fn default_body_bytes() -> usize {
    1 << 20
}
fn default_attempt_timeout_ms() -> u64 {
    60_000
}
fn default_request_timeout_ms() -> u64 {
    120_000
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes: default_body_bytes(),
            attempt_timeout_ms: default_attempt_timeout_ms(),
            request_timeout_ms: default_request_timeout_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
        }
    }
}

impl Limits {
    pub fn attempt_timeout(&self) -> Duration {
        Duration::from_millis(self.attempt_timeout_ms)
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// Retries of one model, and fallback to others.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per model, the first included; only retryable errors
    /// (timeouts, broken connections, 408, 429, 5xx) are tried again.
    #[serde(default = "default_attempts")]
    pub attempts_per_model: u32,
    /// Backoff before retry `n` is uniform in `[0, min(max, base·2ⁿ)]` (full jitter).
    #[serde(default = "default_backoff_base_ms")]
    pub backoff_base_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Other models tried, best policy score first, after the chosen one fails.
    #[serde(default = "default_fallbacks")]
    pub max_fallbacks: usize,
}

fn default_attempts() -> u32 {
    2
}
fn default_backoff_base_ms() -> u64 {
    50
}
fn default_backoff_max_ms() -> u64 {
    2_000
}
fn default_fallbacks() -> usize {
    2
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts_per_model: default_attempts(),
            backoff_base_ms: default_backoff_base_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            max_fallbacks: default_fallbacks(),
        }
    }
}

/// The per-model circuit breaker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failed requests that open the breaker.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// How long an open breaker keeps the model out before one probe.
    #[serde(default = "default_cooldown_ms")]
    pub cooldown_ms: u64,
}

fn default_failure_threshold() -> u32 {
    5
}
fn default_cooldown_ms() -> u64 {
    30_000
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: default_failure_threshold(),
            cooldown_ms: default_cooldown_ms(),
        }
    }
}

/// Running several models for one request and keeping the best answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariationsConfig {
    /// Variations when a request does not say (1: a single model).
    #[serde(default = "one")]
    pub default: usize,
    /// Most variations a request may ask for.
    #[serde(default = "default_max_variations")]
    pub max: usize,
    /// When the deadline passes, the best answer so far is returned and the
    /// rest are cancelled.
    #[serde(default = "default_variation_deadline_ms")]
    pub deadline_ms: u64,
    /// Which judge scores the answers.
    #[serde(default)]
    pub judge: JudgeKind,
    /// The model the `llm` judge asks (a configured model id).
    #[serde(default)]
    pub judge_model: Option<String>,
    /// The model that merges the answers when a request asks to combine
    /// them (a configured model id); absent means combining is refused.
    #[serde(default)]
    pub combine_model: Option<String>,
}

fn one() -> usize {
    1
}
fn default_max_variations() -> usize {
    5
}
fn default_variation_deadline_ms() -> u64 {
    30_000
}

impl Default for VariationsConfig {
    fn default() -> Self {
        VariationsConfig {
            default: 1,
            max: default_max_variations(),
            deadline_ms: default_variation_deadline_ms(),
            judge: JudgeKind::default(),
            judge_model: None,
            combine_model: None,
        }
    }
}

/// The judges `variations.judge` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JudgeKind {
    /// Empty, refused, truncated answers and format checks.
    #[default]
    Heuristic,
    /// Majority answer among the variations.
    Agreement,
    /// The dataset's recorded quality (simulated providers), else heuristic.
    Dataset,
    /// An LLM with a rubric (`judge_model`).
    Llm,
}

/// The wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI's chat completions: OpenAI, Groq, Together, vLLM, Ollama, GitHub Models.
    Openai,
    Anthropic,
    Gemini,
    /// Answers from a routing dataset (see `exec::providers::simulated`).
    Simulated,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    /// e.g. `https://api.openai.com/v1`, `https://api.anthropic.com`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The environment variable holding the API key (never the key itself).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// For `simulated`: a dataset path, or [`EMBEDDED_DATASET`].
    #[serde(default)]
    pub dataset: Option<String>,
    /// For `simulated`: sleep for each answer's recorded latency.
    #[serde(default)]
    pub simulate_latency: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The id clients and the policy use.
    pub id: String,
    pub provider: String,
    /// The provider's name for it; the id when absent.
    #[serde(default)]
    pub upstream: Option<String>,
    /// USD per million input tokens.
    #[serde(default)]
    pub input_per_mtok: f64,
    /// USD per million output tokens.
    #[serde(default)]
    pub output_per_mtok: f64,
    #[serde(default)]
    pub context_window: Option<u64>,
    #[serde(default)]
    pub tags: Vec<String>,
}

impl ModelConfig {
    pub fn upstream(&self) -> &str {
        self.upstream.as_deref().unwrap_or(&self.id)
    }

    /// Price of a call in USD from its token counts.
    pub fn price(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        (input_tokens as f64 * self.input_per_mtok + output_tokens as f64 * self.output_per_mtok) / 1e6
    }
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Config::parse(path, &text)
    }

    /// The embedded default (see [`EMBEDDED_DEFAULT`]).
    pub fn embedded_default() -> Config {
        Config::parse(Path::new("<embedded default>"), EMBEDDED_DEFAULT).expect("the embedded default config is valid")
    }

    /// Parses and checks config text; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.check().map_err(|message| Error::Config {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    /// Cross-field checks the TOML schema cannot express.
    fn check(&self) -> std::result::Result<(), String> {
        let mut names = HashSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            if !names.insert(p.name.as_str()) {
                return Err(format!("providers[{i}].name: {:?} is used twice", p.name));
            }
            match p.kind {
                ProviderKind::Simulated => {
                    if p.dataset.is_none() {
                        return Err(format!("providers[{i}].dataset: a simulated provider needs a dataset"));
                    }
                }
                _ => {
                    if p.base_url.is_none() {
                        return Err(format!("providers[{i}].base_url: required for kind {:?}", p.kind));
                    }
                }
            }
        }
        if self.models.is_empty() {
            return Err("models: at least one model is required".into());
        }
        let mut ids = HashSet::new();
        for (i, m) in self.models.iter().enumerate() {
            if m.id == "auto" {
                return Err(format!("models[{i}].id: \"auto\" is reserved for routing"));
            }
            if !ids.insert(m.id.as_str()) {
                return Err(format!("models[{i}].id: {:?} is used twice", m.id));
            }
            if !names.contains(m.provider.as_str()) {
                return Err(format!("models[{i}].provider: no provider is named {:?}", m.provider));
            }
            if !(m.input_per_mtok >= 0.0 && m.output_per_mtok >= 0.0) {
                return Err(format!("models[{i}]: prices must be non-negative numbers"));
            }
        }
        let l = &self.limits;
        if l.body_bytes == 0 || l.attempt_timeout_ms == 0 || l.request_timeout_ms == 0 {
            return Err("limits: sizes and timeouts must be positive".into());
        }
        if self.retry.attempts_per_model == 0 {
            return Err("retry.attempts_per_model: must be at least 1".into());
        }
        let v = &self.variations;
        if v.default == 0 || v.max == 0 || v.default > v.max || v.deadline_ms == 0 {
            return Err("variations: need 1 <= default <= max and a positive deadline_ms".into());
        }
        for (field, id) in [("judge_model", &v.judge_model), ("combine_model", &v.combine_model)] {
            if let Some(id) = id {
                if !ids.contains(id.as_str()) {
                    return Err(format!("variations.{field}: no model is named {id:?}"));
                }
            }
        }
        if v.judge == JudgeKind::Llm && v.judge_model.is_none() {
            return Err("variations.judge_model: required when judge = \"llm\"".into());
        }
        if self.breaker.failure_threshold == 0 {
            return Err("breaker.failure_threshold: must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.policy.floor) {
            return Err("policy.floor: must lie in [0, 1)".into());
        }
        let learn = &self.learning;
        if !(learn.steps_per_experience.is_finite() && learn.steps_per_experience >= 0.0) {
            return Err("learning.steps_per_experience: must be a finite number >= 0".into());
        }
        if !(learn.max_steps_per_sec.is_finite() && learn.max_steps_per_sec >= 0.01) {
            return Err("learning.max_steps_per_sec: must be a finite number >= 0.01".into());
        }
        if learn.default_quality.is_some_and(|q| !(0.0..=1.0).contains(&q)) {
            return Err("learning.default_quality: must lie in [0, 1]".into());
        }
        if self.learning.batch == 0 || self.learning.publish_every == 0 {
            return Err("learning: batch and publish_every must be positive".into());
        }
        let mut experiments = HashSet::new();
        for (i, e) in self.experiments.iter().enumerate() {
            if let Err(Error::InvalidInput(m)) = e.validate() {
                return Err(format!("experiments[{i}]: {m}"));
            }
            if !experiments.insert(e.id.as_str()) {
                return Err(format!("experiments[{i}].id: {:?} is used twice", e.id));
            }
        }
        Ok(())
    }

    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.name == name)
    }

    pub fn model(&self, id: &str) -> Option<&ModelConfig> {
        self.models.iter().find(|m| m.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(Path::new("test.toml"), text)
    }

    const MINIMAL: &str = r#"
[[providers]]
name = "up"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"

[[models]]
id = "m1"
provider = "up"
input_per_mtok = 1.0
output_per_mtok = 2.0
"#;

    #[test]
    fn embedded_default_parses() {
        let c = Config::embedded_default();
        assert!(!c.models.is_empty());
        assert!(c.providers.iter().all(|p| p.kind == ProviderKind::Simulated));
    }

    #[test]
    fn the_example_parses() {
        let text = include_str!("../config/example.toml");
        let c = parse(text).unwrap();
        assert_eq!(c.provider("anthropic").unwrap().kind, ProviderKind::Anthropic);
        assert_eq!(c.model("claude-sonnet").unwrap().upstream(), "claude-3-5-sonnet-latest");
        assert_eq!(c.policy.budget, Some(0.2));

        // Its commented-out shadow and experiment blocks parse once uncommented.
        let uncomment = |from: &str, to: Option<&str>| {
            let start = text.find(from).unwrap();
            let end = to.map_or(text.len(), |t| start + text[start..].find(t).unwrap());
            text[start..end]
                .lines()
                .map(|l| l.trim_start_matches("# ").split(" #").next().unwrap().to_string())
                .collect::<Vec<_>>()
                .join("\n")
        };
        let policy = uncomment("# [policy.shadow]", Some("\n\n"));
        let experiments = uncomment("# [[experiments]]", None);
        let text = text.replacen("[learning]", &format!("{policy}\n\n[learning]"), 1) + &experiments;
        let c = parse(&text).unwrap();
        assert_eq!(c.policy.shadow.unwrap().name, "candidate-2026-11");
        let e = &c.experiments[0];
        assert_eq!((e.id.as_str(), e.arms.len(), e.holdout), ("learned-vs-cheap", 3, 0.05));
        assert_eq!(e.unit, crate::experiment::UnitKey::ApiKey);
        assert!(e.arms[2].checkpoint.is_some());
    }

    #[test]
    fn experiments_in_config_are_checked() {
        let bad = format!(
            "{MINIMAL}\n[[experiments]]\nid = \"e\"\nunit = \"user\"\nholdout = 2.0\n\
             arms = [{{ name = \"a\", strategy = {{ kind = \"balanced\" }} }}]\n"
        );
        let err = parse(&bad).unwrap_err().to_string();
        assert!(err.contains("experiments[0]") && err.contains("holdout"), "{err}");
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.listen, default_listen());
        assert_eq!(c.retry.attempts_per_model, 2);
        assert_eq!(c.model("m1").unwrap().upstream(), "m1");
        assert!((c.model("m1").unwrap().price(1_000_000, 500_000) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn unknown_field_names_field_and_line() {
        let text = MINIMAL.replace("input_per_mtok = 1.0", "input_per_mtok = 1.0\ncolour = \"red\"");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("test.toml"), "{e}");
        assert!(e.contains("colour"), "{e}");
        assert!(e.contains("line 11"), "{e}");
    }

    #[test]
    fn wrong_type_is_reported() {
        let text = MINIMAL.replace("input_per_mtok = 1.0", "input_per_mtok = \"cheap\"");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("input_per_mtok"), "{e}");
    }

    #[test]
    fn cross_field_errors_name_the_field() {
        let e = parse(&MINIMAL.replace("provider = \"up\"", "provider = \"nope\"")).unwrap_err();
        assert!(e.to_string().contains("models[0].provider"), "{e}");
        let twice = format!("{MINIMAL}\n[[models]]\nid = \"m1\"\nprovider = \"up\"\n");
        assert!(parse(&twice).unwrap_err().to_string().contains("models[1].id"));
        let no_url = MINIMAL.replace("base_url = \"http://127.0.0.1:9/v1\"", "");
        assert!(parse(&no_url)
            .unwrap_err()
            .to_string()
            .contains("providers[0].base_url"));
    }
}
