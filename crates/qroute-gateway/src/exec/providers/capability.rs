//! What a model can do beyond plain chat. A request that needs a capability
//! is only offered to models that have it, so no field is dropped on the
//! way to a provider that cannot honour it.

use serde::{Deserialize, Serialize};

use super::config::ProviderKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// `tools`, `tool_choice` and tool turns in the conversation.
    Tools,
    /// Image content parts.
    Vision,
    /// `response_format` `json_object` or `json_schema`.
    Json,
    /// Tokens sent as they are generated (`stream: true`).
    Streaming,
    /// Several choices in one call (`n` > 1).
    Choices,
    /// `logprobs` / `top_logprobs`.
    Logprobs,
}

impl Capability {
    /// The request field a refusal names.
    pub fn field(self) -> &'static str {
        match self {
            Capability::Tools => "tools",
            Capability::Vision => "messages[].content[].image_url",
            Capability::Json => "response_format",
            Capability::Streaming => "stream",
            Capability::Choices => "n",
            Capability::Logprobs => "logprobs",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Tools => "tools",
            Capability::Vision => "vision",
            Capability::Json => "json",
            Capability::Streaming => "streaming",
            Capability::Choices => "choices",
            Capability::Logprobs => "logprobs",
        }
    }
}

impl ProviderKind {
    /// What this wire format can carry, and so what a model behind it has
    /// when its config does not narrow it.
    ///
    /// - OpenAI-compatible: everything the chat completions API defines.
    /// - Anthropic: tools, images and streaming; it has no JSON mode, no
    ///   `n` and no log-probabilities.
    /// - Gemini: tools, images, JSON mode (`responseMimeType`,
    ///   `responseSchema`), streaming and `candidateCount`; no
    ///   log-probabilities in the shape OpenAI's clients read.
    /// - Simulated: answers recorded text, so only streaming (a replay).
    pub fn capabilities(self) -> &'static [Capability] {
        use Capability::*;
        match self {
            ProviderKind::Openai => &[Tools, Vision, Json, Streaming, Choices, Logprobs],
            ProviderKind::Anthropic => &[Tools, Vision, Streaming],
            ProviderKind::Gemini => &[Tools, Vision, Json, Streaming, Choices],
            ProviderKind::Simulated => &[Streaming],
        }
    }
}
