//! Google's Gemini API (`generateContent`).
//!
//! Its shape differs from OpenAI's throughout: the model is named in the
//! URL, the assistant's role is `model`, text lives in `parts`, the system
//! prompt is a separate `systemInstruction`, and fields are camelCase.

use serde::{Deserialize, Serialize};

use super::openai_compat::Upstream;
use super::{ChatRequest, Completion, ProviderError};

#[derive(Debug)]
pub struct Gemini {
    /// The endpoint names the model, so it is built per call.
    upstream: Upstream,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireRequest<'a> {
    contents: Vec<WireContent<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<WireSystem<'a>>,
    generation_config: WireGenerationConfig,
}

#[derive(Serialize)]
struct WireContent<'a> {
    role: &'static str,
    parts: [WirePart<'a>; 1],
}

#[derive(Serialize)]
struct WireSystem<'a> {
    parts: [WirePart<'a>; 1],
}

#[derive(Serialize)]
struct WirePart<'a> {
    text: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireGenerationConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse {
    /// Empty when the prompt itself was blocked; `promptFeedback` says why.
    #[serde(default)]
    candidates: Vec<WireCandidate>,
    #[serde(default)]
    prompt_feedback: Option<WirePromptFeedback>,
    #[serde(default)]
    usage_metadata: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCandidate {
    /// Absent when the candidate was stopped before producing anything
    /// (a safety block, for instance).
    #[serde(default)]
    content: Option<WireCandidateContent>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireCandidateContent {
    #[serde(default)]
    parts: Vec<WireResponsePart>,
}

#[derive(Deserialize)]
struct WireResponsePart {
    #[serde(default)]
    text: Option<String>,
    /// Thinking models may return their reasoning as parts marked `thought`;
    /// those are not the answer.
    #[serde(default)]
    thought: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireUsage {
    #[serde(default)]
    prompt_token_count: Option<u64>,
    #[serde(default)]
    candidates_token_count: Option<u64>,
}

impl Gemini {
    /// `base_url` is the host, without a version:
    /// `https://generativelanguage.googleapis.com`. Without a key no
    /// `x-goog-api-key` is sent, for a proxy that adds its own.
    pub fn new(client: reqwest::Client, base_url: impl Into<String>, api_key: Option<String>) -> Self {
        Gemini {
            upstream: Upstream::new("gemini", client, base_url.into(), api_key),
        }
    }

    /// Names the provider in error messages as the config does (the kind,
    /// `gemini`, until then).
    pub fn with_name(mut self, name: &str) -> Self {
        self.upstream.rename(name);
        self
    }

    pub async fn complete(&self, upstream_model: &str, req: &ChatRequest) -> Result<Completion, ProviderError> {
        let mut system = Vec::new();
        let mut contents = Vec::with_capacity(req.messages.len());
        for m in &req.messages {
            let role = match m.role.as_str() {
                "system" => {
                    system.push(m.content.as_str());
                    continue;
                }
                "assistant" | "model" => "model",
                _ => "user",
            };
            contents.push(WireContent {
                role,
                parts: [WirePart { text: &m.content }],
            });
        }
        // One part, joined as for Anthropic, so that every format sees the
        // same system prompt.
        let system = (!system.is_empty()).then(|| system.join("\n\n"));
        let body = WireRequest {
            contents,
            system_instruction: system.as_deref().map(|text| WireSystem {
                parts: [WirePart { text }],
            }),
            generation_config: WireGenerationConfig {
                max_output_tokens: req.max_tokens,
                temperature: req.temperature,
            },
        };
        // Model names are accepted both bare and as the API lists them
        // (`models/gemini-…`).
        let model = upstream_model.strip_prefix("models/").unwrap_or(upstream_model);
        let url = format!("{}/v1beta/models/{model}:generateContent", self.upstream.base_url);
        let mut rb = self.upstream.client.post(url).json(&body);
        if let Some(key) = &self.upstream.api_key {
            rb = rb.header("x-goog-api-key", key);
        }
        let resp: WireResponse = self.upstream.send(rb).await?;
        let usage = resp.usage_metadata.unwrap_or_default();
        let (text, finish_reason) = match resp.candidates.into_iter().next() {
            Some(candidate) => {
                let text = candidate
                    .content
                    .map(|c| {
                        c.parts
                            .into_iter()
                            .filter(|p| !p.thought)
                            .filter_map(|p| p.text)
                            .collect::<String>()
                    })
                    .unwrap_or_default();
                (text, finish_reason(candidate.finish_reason.as_deref()))
            }
            // A blocked prompt is an answer, not a failure: trying again
            // would be blocked the same way.
            None => {
                let reason = resp.prompt_feedback.and_then(|f| f.block_reason);
                (String::new(), finish_reason(reason.as_deref().or(Some("BLOCKED"))))
            }
        };
        Ok(Completion {
            text,
            input_tokens: usage.prompt_token_count.unwrap_or(0),
            output_tokens: usage.candidates_token_count.unwrap_or(0),
            finish_reason,
            known_quality: None,
            known_cost_usd: None,
        })
    }
}

/// Gemini's finish reasons in OpenAI's vocabulary where one exists
/// (`STOP`, `MAX_TOKENS`), lowercased otherwise (`safety`, `recitation`).
fn finish_reason(reason: Option<&str>) -> String {
    match reason {
        Some("STOP") => "stop".to_string(),
        Some("MAX_TOKENS") => "length".to_string(),
        Some(other) => other.to_ascii_lowercase(),
        None => String::new(),
    }
}
