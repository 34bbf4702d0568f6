//! The body of `POST /v1/chat/completions`, read and checked as OpenAI's
//! server checks it, then turned into a [`RouteRequest`].
//!
//! Every field OpenAI defines is either passed through to the model,
//! checked and used by qroute, or refused with a 400 that names it: none is
//! dropped silently. Refused are the fields no adapter passes on yet
//! (`functions`/`function_call`, superseded by `tools`; `logit_bias`;
//! `audio`/`modalities`; `prediction`; `reasoning_effort`;
//! `web_search_options`).
//!
//! qroute's own knobs ride along as extra body fields (the OpenAI SDKs'
//! `extra_body`): `cost_weight`, `latency_weight`, `max_cost_usd`,
//! `models`, `task_type`, `persona`, `variations`, `combine`, `cascade`,
//! `cache`.

use serde::Deserialize;
use serde_json::Value;

use super::execute::check_numbers;
use crate::cache::CacheMode;
use crate::engine::{Preference, RouteRequest};
use crate::exec::providers::chat::{Content, Params, ResponseFormat, Stop, Tool};
use crate::exec::providers::{ChatMessage, ChatRequest};
use qroute_core::Error;

/// The model name that asks qroute to choose.
pub const AUTO: &str = "auto";

/// OpenAI's limits, checked here so that the client hears of a mistake at
/// once instead of as a provider's 400 after routing.
const MAX_N: u32 = 128;
const MAX_STOP: usize = 4;
const MAX_TOOLS: usize = 128;
const MAX_TOP_LOGPROBS: u32 = 20;

// Objects only: a derived struct would also read from an array, positionally.
qroute_core::objects_only!(ChatCompletionRequest, StreamOptions);

#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    /// `null` reads as false, as OpenAI's server takes it.
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    /// Numbers that narrow to `f32` are read as `f64`, so that the checks
    /// see the number sent.
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<u32>,
    #[serde(default)]
    pub tools: Option<Vec<Tool>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    /// OpenAI's end-user id: passed on, and the unit of experiments keyed
    /// on `user`.
    #[serde(default)]
    pub user: Option<String>,
    // Refused (see the module docs); read only to be named.
    #[serde(default)]
    functions: Option<Value>,
    #[serde(default)]
    function_call: Option<Value>,
    #[serde(default)]
    logit_bias: Option<Value>,
    #[serde(default)]
    audio: Option<Value>,
    #[serde(default)]
    modalities: Option<Value>,
    #[serde(default)]
    prediction: Option<Value>,
    #[serde(default)]
    reasoning_effort: Option<Value>,
    #[serde(default)]
    web_search_options: Option<Value>,
    // qroute's extensions.
    #[serde(default)]
    pub cost_weight: Option<f64>,
    #[serde(default)]
    pub latency_weight: Option<f64>,
    #[serde(default)]
    pub max_cost_usd: Option<f64>,
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub task_type: Option<String>,
    #[serde(default)]
    pub persona: Option<String>,
    #[serde(default)]
    pub variations: Option<usize>,
    #[serde(default)]
    pub combine: bool,
    #[serde(default)]
    pub cascade: Option<bool>,
    /// `false` neither reads nor writes the response cache.
    #[serde(default)]
    pub cache: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

fn invalid(message: String) -> Error {
    Error::InvalidInput(message)
}

/// `value` in `range`, or a 400 naming `field`.
fn within(field: &str, value: Option<f64>, lo: f64, hi: f64) -> Result<(), Error> {
    match value {
        Some(v) if !(lo..=hi).contains(&v) => Err(invalid(format!("{field}: must lie in [{lo}, {hi}], got {v}"))),
        _ => Ok(()),
    }
}

impl ChatCompletionRequest {
    /// Whether the answer is to be streamed.
    pub fn streams(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options.as_ref().is_some_and(|o| o.include_usage)
    }

    /// OpenAI's checks, each failure a 400 naming the field.
    pub fn validate(&self) -> Result<(), Error> {
        let refused = [
            ("functions", &self.functions, "use tools"),
            ("function_call", &self.function_call, "use tool_choice"),
            ("logit_bias", &self.logit_bias, "not passed on by qroute"),
            ("audio", &self.audio, "audio output is not supported"),
            ("modalities", &self.modalities, "only text output is supported"),
            ("prediction", &self.prediction, "not passed on by qroute"),
            ("reasoning_effort", &self.reasoning_effort, "not passed on by qroute"),
            (
                "web_search_options",
                &self.web_search_options,
                "not passed on by qroute",
            ),
        ];
        if let Some((field, _, why)) = refused
            .iter()
            .find(|(_, v, _)| v.as_ref().is_some_and(|v| !v.is_null()))
        {
            return Err(invalid(format!("{field}: not supported ({why})")));
        }
        if self.model.trim().is_empty() {
            return Err(invalid("model: must name a model or \"auto\"".into()));
        }
        if self.messages.is_empty() {
            return Err(invalid("messages: must hold at least one message".into()));
        }
        for (i, m) in self.messages.iter().enumerate() {
            check_message(i, m)?;
        }
        check_numbers(
            &[
                ("max_tokens", self.max_tokens),
                ("max_completion_tokens", self.max_completion_tokens),
            ],
            self.temperature,
            self.cost_weight,
            self.latency_weight,
        )?;
        within("top_p", self.top_p, 0.0, 1.0)?;
        within("presence_penalty", self.presence_penalty, -2.0, 2.0)?;
        within("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?;
        if let Some(n) = self.n.filter(|n| !(1..=MAX_N).contains(n)) {
            return Err(invalid(format!("n: must lie in [1, {MAX_N}], got {n}")));
        }
        if let Some(k) = self.top_logprobs {
            if k > MAX_TOP_LOGPROBS {
                return Err(invalid(format!(
                    "top_logprobs: must lie in [0, {MAX_TOP_LOGPROBS}], got {k}"
                )));
            }
            if self.logprobs != Some(true) {
                return Err(invalid("top_logprobs: needs logprobs set to true".into()));
            }
        }
        if let Some(stop) = &self.stop {
            let seqs = stop.sequences();
            if seqs.len() > MAX_STOP {
                return Err(invalid(format!(
                    "stop: at most {MAX_STOP} sequences, got {}",
                    seqs.len()
                )));
            }
            if seqs.iter().any(String::is_empty) {
                return Err(invalid("stop: sequences must not be empty".into()));
            }
        }
        if self.stream_options.is_some() && !self.streams() {
            return Err(invalid("stream_options: only allowed when stream is true".into()));
        }
        self.check_tools()?;
        if let Some(ResponseFormat::JsonSchema { json_schema }) = &self.response_format {
            if !valid_name(&json_schema.name) {
                return Err(invalid(
                    "response_format.json_schema.name: 1-64 letters, digits, '_' or '-'".into(),
                ));
            }
            if json_schema.schema.as_ref().is_some_and(|s| !s.is_object()) {
                return Err(invalid("response_format.json_schema.schema: must be an object".into()));
            }
        }
        Ok(())
    }

    fn check_tools(&self) -> Result<(), Error> {
        let tools = self.tools.as_deref().unwrap_or_default();
        if tools.len() > MAX_TOOLS {
            return Err(invalid(format!("tools: at most {MAX_TOOLS}, got {}", tools.len())));
        }
        for (i, t) in tools.iter().enumerate() {
            if t.kind != "function" {
                return Err(invalid(format!(
                    "tools[{i}].type: must be \"function\", got {:?}",
                    t.kind
                )));
            }
            if !valid_name(&t.function.name) {
                return Err(invalid(format!(
                    "tools[{i}].function.name: 1-64 letters, digits, '_' or '-', got {:?}",
                    t.function.name
                )));
            }
            if t.function.parameters.as_ref().is_some_and(|p| !p.is_object()) {
                return Err(invalid(format!("tools[{i}].function.parameters: must be an object")));
            }
        }
        let Some(choice) = self.tool_choice.as_ref().filter(|c| !c.is_null()) else {
            return Ok(());
        };
        if tools.is_empty() {
            return Err(invalid("tool_choice: only allowed when tools are given".into()));
        }
        match choice {
            Value::String(s) if matches!(s.as_str(), "none" | "auto" | "required") => Ok(()),
            Value::Object(o) => {
                let name = o
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .filter(|_| o.get("type").and_then(Value::as_str) == Some("function"));
                match name {
                    Some(n) if tools.iter().any(|t| t.function.name == n) => Ok(()),
                    Some(n) => Err(invalid(format!("tool_choice.function.name: no tool named {n:?}"))),
                    None => Err(invalid(
                        "tool_choice: must be {\"type\":\"function\",\"function\":{\"name\":…}}".into(),
                    )),
                }
            }
            _ => Err(invalid(
                "tool_choice: must be \"none\", \"auto\", \"required\" or a named function".into(),
            )),
        }
    }

    /// The request to route, messages and parameters as sent, `developer`
    /// read as `system` (what every provider calls it).
    pub fn into_route_request(self) -> RouteRequest {
        let messages = self
            .messages
            .into_iter()
            .map(|mut m| {
                if m.role == "developer" {
                    m.role = "system".into();
                }
                m
            })
            .collect();
        let pinned = (self.model != AUTO).then_some(self.model);
        RouteRequest {
            chat: ChatRequest {
                messages,
                params: Params {
                    max_tokens: self.max_completion_tokens.or(self.max_tokens),
                    temperature: self.temperature.map(|t| t as f32),
                    top_p: self.top_p.map(|t| t as f32),
                    n: self.n,
                    stop: self.stop,
                    seed: self.seed,
                    presence_penalty: self.presence_penalty.map(|p| p as f32),
                    frequency_penalty: self.frequency_penalty.map(|p| p as f32),
                    logprobs: self.logprobs,
                    top_logprobs: self.top_logprobs,
                    tools: self.tools.unwrap_or_default(),
                    tool_choice: self.tool_choice.filter(|c| !c.is_null()),
                    parallel_tool_calls: self.parallel_tool_calls,
                    response_format: self.response_format,
                    user: self.user,
                },
            },
            task_type: self.task_type,
            persona: self.persona,
            preference: Preference {
                cost_weight: self.cost_weight.map(|w| w as f32),
                latency_weight: self.latency_weight.map(|w| w as f32),
                max_cost_usd: self.max_cost_usd,
                models: self.models,
            },
            pinned,
            variations: self.variations,
            combine: self.combine,
            cascade: self.cascade,
            stream: self.stream.unwrap_or(false),
            cache: if self.cache == Some(false) {
                CacheMode::Bypass
            } else {
                CacheMode::Use
            },
            enrollment: None,
            key: None,
        }
    }
}

/// A message's role and the fields that role needs.
fn check_message(i: usize, m: &ChatMessage) -> Result<(), Error> {
    match m.role.as_str() {
        "system" | "developer" | "user" => {
            if matches!(m.content, Content::Null) {
                return Err(invalid(format!("messages[{i}].content: required for role {}", m.role)));
            }
        }
        "assistant" => {
            if matches!(m.content, Content::Null) && m.tool_calls.is_empty() {
                return Err(invalid(format!(
                    "messages[{i}].content: required unless the message has tool_calls"
                )));
            }
        }
        "tool" => {
            if m.tool_call_id.as_deref().is_none_or(str::is_empty) {
                return Err(invalid(format!("messages[{i}].tool_call_id: required for role tool")));
            }
        }
        other => return Err(invalid(format!("messages[{i}].role: unknown role {other:?}"))),
    }
    if m.role != "assistant" && !m.tool_calls.is_empty() {
        return Err(invalid(format!(
            "messages[{i}].tool_calls: only assistant messages make tool calls"
        )));
    }
    if m.role != "user" && m.content.images() > 0 {
        return Err(invalid(format!(
            "messages[{i}].content: images are allowed in user messages only"
        )));
    }
    Ok(())
}

/// OpenAI's rule for tool and schema names: `^[a-zA-Z0-9_-]{1,64}$`.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Result<(), Error> {
        let req: ChatCompletionRequest = serde_json::from_value(v).map_err(|e| invalid(e.to_string()))?;
        req.validate()
    }

    fn refused(v: Value, field: &str) {
        match body(v) {
            Err(Error::InvalidInput(m)) => assert!(m.starts_with(field), "{m} should name {field}"),
            other => panic!("expected a 400 naming {field}, got {other:?}"),
        }
    }

    #[test]
    fn openai_bounds_are_checked_and_named() {
        let msgs = serde_json::json!([{"role": "user", "content": "hi"}]);
        let with = |k: &str, v: Value| {
            let mut b = serde_json::json!({"model": "auto", "messages": msgs});
            b[k] = v;
            b
        };
        body(with("temperature", 2.into())).unwrap();
        refused(with("temperature", 50.into()), "temperature");
        refused(with("temperature", (-1).into()), "temperature");
        refused(with("max_tokens", 0.into()), "max_tokens");
        refused(with("top_p", 1.5.into()), "top_p");
        refused(with("n", 0.into()), "n");
        refused(with("presence_penalty", 3.into()), "presence_penalty");
        refused(with("top_logprobs", 5.into()), "top_logprobs");
        refused(with("stop", serde_json::json!(["a", "b", "c", "d", "e"])), "stop");
        refused(with("tool_choice", "auto".into()), "tool_choice");
        refused(with("functions", serde_json::json!([])), "functions");
        refused(
            with("stream_options", serde_json::json!({"include_usage": true})),
            "stream_options",
        );
        refused(
            with(
                "tools",
                serde_json::json!([{"type": "function", "function": {"name": "bad name"}}]),
            ),
            "tools[0].function.name",
        );
        body(with("functions", Value::Null)).unwrap();
    }

    #[test]
    fn tool_turns_and_images_are_checked_by_role() {
        let b = |messages: Value| serde_json::json!({"model": "auto", "messages": messages});
        body(b(serde_json::json!([
            {"role": "user", "content": [{"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": "https://x/a.png"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ])))
        .unwrap();
        refused(
            b(serde_json::json!([{"role": "tool", "content": "42"}])),
            "messages[0].tool_call_id",
        );
        refused(
            b(serde_json::json!([{"role": "user", "content": null}])),
            "messages[0].content",
        );
        refused(
            b(serde_json::json!([{"role": "wizard", "content": "x"}])),
            "messages[0].role",
        );
    }
}
