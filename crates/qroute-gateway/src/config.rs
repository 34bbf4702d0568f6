//! The gateway's configuration: one TOML file, or the embedded default.
//!
//! Each crate defines the section it owns (`[policy]` in qroute-core,
//! `[store]` in qroute-store, `[learning]` in qroute-learn, `[retry]` and
//! `[breaker]` beside the resilience code, …); this module aggregates them
//! into [`Config`] and makes the checks that span sections.
//!
//! Unknown fields are errors (`deny_unknown_fields`), so a misspelt key
//! fails at start-up with its line and column instead of being ignored.
//! Cross-field checks (a model naming a provider that does not exist, a
//! duplicate id, an API key variable that is not set) come after parsing and
//! name the field they concern.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use qroute_core::{Error, Result};
use qroute_experiment::ExperimentSpec;

pub use crate::access::AuthConfig;
pub use crate::cache::CacheConfig;
pub use crate::exec::judge::JudgeKind;
pub use crate::exec::providers::config::{ModelConfig, ProviderConfig, ProviderKind};
pub use crate::exec::resilience::{BreakerConfig, RetryConfig};
pub use crate::server_config::ServerConfig;
pub use crate::shared::RedisConfig;
pub use qroute_core::policy::{PolicyConfig, ShadowConfig};
pub use qroute_learn::LearningConfig;
pub use qroute_store::StoreConfig;

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
    pub auth: AuthConfig,
    /// The HTTP edge: allowed hosts, CORS, connection timeouts and limits.
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub breaker: BreakerConfig,
    #[serde(default)]
    pub variations: VariationsConfig,
    /// Cascades: a cheap model first, a stronger one only when its answer
    /// is not worth keeping.
    #[serde(default)]
    pub cascade: CascadeConfig,
    /// The response cache: exact repeats of deterministic requests.
    #[serde(default)]
    pub cache: CacheConfig,
    /// Redis shared by every replica: rate limits, live budget spend and
    /// the response cache (see [`crate::shared`]). Absent: each gateway
    /// keeps them to itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisConfig>,
    pub providers: Vec<ProviderConfig>,
    pub models: Vec<ModelConfig>,
    /// Experiments created at start-up unless the store already has them
    /// (more can be created through `/v1/experiments`).
    #[serde(default)]
    pub experiments: Vec<ExperimentSpec>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
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
    /// Most experiments stored, finished ones included.
    #[serde(default = "default_max_experiments")]
    pub max_experiments: usize,
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
fn default_max_experiments() -> usize {
    200
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes: default_body_bytes(),
            attempt_timeout_ms: default_attempt_timeout_ms(),
            request_timeout_ms: default_request_timeout_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            max_experiments: default_max_experiments(),
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

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Config::parse(path, &text)
    }

    /// The embedded default (see [`crate::embedded::CONFIG`]).
    pub fn embedded_default() -> Result<Config> {
        Config::parse(Path::new("<embedded default>"), crate::embedded::CONFIG)
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
            if m.context_window == Some(0) {
                return Err(format!("models[{i}].context_window: must be at least 1"));
            }
            if let (Some(kind), Some(narrowed)) = (
                self.providers.iter().find(|p| p.name == m.provider).map(|p| p.kind),
                &m.capabilities,
            ) {
                if let Some(c) = narrowed.iter().find(|c| !kind.capabilities().contains(c)) {
                    return Err(format!(
                        "models[{i}].capabilities: {:?} is beyond what a {kind:?} provider can carry",
                        c.as_str()
                    ));
                }
            }
        }
        let l = &self.limits;
        if l.body_bytes == 0 || l.attempt_timeout_ms == 0 || l.request_timeout_ms == 0 {
            return Err("limits: sizes and timeouts must be positive".into());
        }
        self.policy.validate()?;
        self.store.validate()?;
        self.learning.validate()?;
        self.auth.validate()?;
        self.server.validate()?;
        self.retry.validate()?;
        self.breaker.validate()?;
        self.cache.validate()?;
        if let Some(r) = &self.redis {
            r.validate()?;
        }
        self.cascade.validate()?;
        let v = &self.variations;
        v.validate()?;
        for (field, id) in [("judge_model", &v.judge_model), ("combine_model", &v.combine_model)] {
            if let Some(id) = id {
                if !ids.contains(id.as_str()) {
                    return Err(format!("variations.{field}: no model is named {id:?}"));
                }
            }
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

/// `[cascade]`: what a request that says nothing gets, and the most one
/// request may pay for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeConfig {
    /// Run requests as cascades unless they say `"cascade": false`.
    #[serde(default)]
    pub default: bool,
    /// Most models one cascade calls (the first included).
    #[serde(default = "default_cascade_calls")]
    pub max_calls: usize,
}

impl Default for CascadeConfig {
    fn default() -> Self {
        CascadeConfig {
            default: false,
            max_calls: default_cascade_calls(),
        }
    }
}

fn default_cascade_calls() -> usize {
    qroute_core::policy::cascade::DEFAULT_MAX_CALLS
}

impl CascadeConfig {
    /// The checks TOML types cannot express; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=5).contains(&self.max_calls) {
            return Err(format!("cascade.max_calls: must lie in 1..=5, got {}", self.max_calls));
        }
        Ok(())
    }
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

impl VariationsConfig {
    /// The checks TOML types cannot express; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.default == 0 || self.max == 0 || self.default > self.max || self.deadline_ms == 0 {
            return Err("variations: need 1 <= default <= max and a positive deadline_ms".into());
        }
        if self.judge == JudgeKind::Llm && self.judge_model.is_none() {
            return Err("variations.judge_model: required when judge = \"llm\"".into());
        }
        Ok(())
    }
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
        let c = Config::embedded_default().unwrap();
        assert!(!c.models.is_empty());
        assert!(c.providers.iter().all(|p| p.kind == ProviderKind::Simulated));
    }

    #[test]
    fn the_example_parses() {
        let text = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/example.toml"));
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
        assert_eq!(e.unit, qroute_experiment::UnitKey::ApiKey);
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

    #[test]
    fn learning_and_retention_sections() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.learning.mode(), qroute_learn::LearningMode::Online);
        assert!(c.store.retention.is_none(), "retention is opt-in");
        assert_eq!(
            c.learning.registry_dir(&c.store.path),
            Path::new("qroute-data/policies"),
            "the registry sits beside the store"
        );
        let text = format!(
            "[learning]\nmode = \"external\"\ncheckpoint_every_s = 5\n[store.retention]\nmax_age_s = 86400\nmax_experiences = 1000\n{MINIMAL}"
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.learning.mode(), qroute_learn::LearningMode::External);
        assert_eq!(c.store.retention.unwrap().retention().max_age_ms, Some(86_400_000));
        // The key that predates `mode` keeps its meaning.
        let off = parse(&format!("[learning]\nenabled = false\n{MINIMAL}")).unwrap();
        assert_eq!(off.learning.mode(), qroute_learn::LearningMode::Off);
        for (bad, field) in [
            ("[learning]\nenabled = false\nmode = \"online\"", "learning.mode"),
            ("[learning]\nmode = \"sometimes\"", "mode"),
            ("[learning]\npublish_every_s = -1", "learning.publish_every_s"),
            ("[store.retention]\nmax_experiences = 0", "store.retention"),
            ("[store.retention]", "store.retention"),
        ] {
            let e = parse(&format!("{bad}\n{MINIMAL}")).unwrap_err().to_string();
            assert!(e.contains(field), "{bad}: {e}");
        }
    }
}
