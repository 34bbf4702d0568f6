//! Anthropic's Messages API.
//!
//! It differs from OpenAI's format in three ways that matter here: system
//! prompts live outside the message list, `max_tokens` is mandatory, and the
//! answer is a list of typed content blocks.

use serde::{Deserialize, Serialize};

use super::openai_compat::Upstream;
use super::{ChatRequest, Completion, ProviderError};

/// The API version this adapter's wire structs follow; Anthropic requires
/// the header and keeps old versions stable.
const API_VERSION: &str = "2023-06-01";

/// Anthropic rejects a request without `max_tokens`; other providers treat
/// its absence as "the model's own limit". This is a generous answer length
/// that still bounds the cost of a request that did not say.
const DEFAULT_MAX_TOKENS: u32 = 1024;

#[derive(Debug)]
pub struct Anthropic {
    upstream: Upstream,
    endpoint: Option<reqwest::Url>,
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'a str,
    content: &'a str,
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    content: Vec<WireBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// One content block. Only `text` blocks carry the answer; `thinking` and
/// `tool_use` blocks are skipped.
#[derive(Deserialize)]
struct WireBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

impl Anthropic {
    /// `base_url` is the host, without `/v1`: `https://api.anthropic.com`.
    /// Without a key no `x-api-key` is sent, for a proxy that adds its own.
    pub fn new(client: reqwest::Client, base_url: impl Into<String>, api_key: Option<String>) -> Self {
        let upstream = Upstream::new("anthropic", client, base_url.into(), api_key);
        Anthropic {
            endpoint: upstream.endpoint("/v1/messages"),
            upstream,
        }
    }

    /// Names the provider in error messages as the config does (the kind,
    /// `anthropic`, until then).
    pub fn with_name(mut self, name: &str) -> Self {
        self.upstream.rename(name);
        self
    }

    pub async fn complete(&self, upstream_model: &str, req: &ChatRequest) -> Result<Completion, ProviderError> {
        let mut system = Vec::new();
        let mut messages = Vec::with_capacity(req.messages.len());
        for m in &req.messages {
            if m.role == "system" {
                system.push(m.content.as_str());
            } else {
                messages.push(WireMessage {
                    role: &m.role,
                    content: &m.content,
                });
            }
        }
        let body = WireRequest {
            model: upstream_model,
            max_tokens: req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            system: (!system.is_empty()).then(|| system.join("\n\n")),
            messages,
            temperature: req.temperature,
        };
        let mut rb = self
            .upstream
            .post(&self.endpoint)?
            .header("anthropic-version", API_VERSION)
            .json(&body);
        if let Some(key) = &self.upstream.api_key {
            rb = rb.header("x-api-key", key);
        }
        let resp: WireResponse = self.upstream.send(rb).await?;
        let usage = resp.usage.unwrap_or_default();
        let text = resp
            .content
            .into_iter()
            .filter(|b| b.kind == "text")
            .filter_map(|b| b.text)
            .collect::<String>();
        Ok(Completion {
            text,
            input_tokens: usage.input_tokens.unwrap_or(0),
            output_tokens: usage.output_tokens.unwrap_or(0),
            finish_reason: finish_reason(resp.stop_reason.as_deref()),
            known_quality: None,
            known_cost_usd: None,
        })
    }
}

/// Anthropic's stop reasons in OpenAI's vocabulary, which the rest of the
/// gateway speaks.
fn finish_reason(stop_reason: Option<&str>) -> String {
    match stop_reason {
        Some("end_turn") | Some("stop_sequence") => "stop".to_string(),
        Some("max_tokens") => "length".to_string(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}
