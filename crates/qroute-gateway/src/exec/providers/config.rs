//! The `[[providers]]` and `[[models]]` config sections: which upstreams
//! exist and which models each serves, at what price.

use serde::{Deserialize, Serialize};

use super::capability::Capability;

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
    /// For `simulated`: a dataset path, or a bundled one by name
    /// ([`crate::embedded::DATASETS`]: `embedded:routellm_mmlu_gsm8k`,
    /// `embedded:alpaca_eval`).
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
    /// Tokens of prompt plus answer the model takes; `None` when unknown,
    /// which sets no limit.
    #[serde(default)]
    pub context_window: Option<u64>,
    /// Narrows what the model can do below what its provider's wire
    /// format carries ([`ProviderKind::capabilities`]); `None` keeps all.
    #[serde(default)]
    pub capabilities: Option<Vec<Capability>>,
    #[serde(default)]
    pub tags: Vec<String>,
}

impl ModelConfig {
    pub fn upstream(&self) -> &str {
        self.upstream.as_deref().unwrap_or(&self.id)
    }

    /// What the model can do behind a provider of `kind`: the kind's
    /// capabilities, narrowed by `capabilities` when the config lists them.
    pub fn capabilities(&self, kind: ProviderKind) -> Vec<Capability> {
        kind.capabilities()
            .iter()
            .copied()
            .filter(|c| self.capabilities.as_ref().is_none_or(|only| only.contains(c)))
            .collect()
    }

    /// Price of a call in USD from its token counts.
    pub fn price(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        (input_tokens as f64 * self.input_per_mtok + output_tokens as f64 * self.output_per_mtok) / 1e6
    }
}
