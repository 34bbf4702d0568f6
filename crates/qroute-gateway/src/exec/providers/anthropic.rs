//! Anthropic's Messages API.
//!
//! It differs from OpenAI's format in ways that matter here: system prompts
//! live outside the message list, `max_tokens` is mandatory, a message is a
//! list of typed content blocks (tool calls are `tool_use` blocks of the
//! assistant, their results `tool_result` blocks of the user), and a stream
//! is a sequence of named events about those blocks rather than chunks of
//! choices.
//!
//! What the Messages API has no place for is left out of the request:
//! `n`, `logprobs`, `response_format` (the capability table keeps requests
//! that need them away from Anthropic models), and `seed`,
//! `presence_penalty` and `frequency_penalty` (hints that no provider
//! guarantees, so a request carrying them is still served).

use std::borrow::Cow;

use futures_util::stream::{self, BoxStream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::chat::{unsigned_id, Choice, Content, Delta, FunctionDelta, Part, Stop, ToolCall, ToolCallDelta};
use super::openai_compat::Upstream;
use super::sanitize::Scrubber;
use super::stream::DeltaStream;
use super::{ChatRequest, Completion, ProviderError};

/// The API version this adapter's wire structs follow; Anthropic requires
/// the header and keeps old versions stable.
const API_VERSION: &str = "2023-06-01";

/// Anthropic rejects a request without `max_tokens`; other providers treat
/// its absence as "the model's own limit". This is a generous answer length
/// that still bounds the cost of a request that did not say.
const DEFAULT_MAX_TOKENS: u32 = 1024;

/// Anthropic's temperature runs 0–1 where OpenAI's runs 0–2, and a value
/// above 1 is rejected: it is sent as 1, the most random Anthropic allows,
/// rather than failing a request that another provider would serve.
const MAX_TEMPERATURE: f32 = 1.0;

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
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<WireToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<WireMetadata<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: WireContent<'a>,
}

/// A plain string where that is all a message says (the common case, and
/// the smaller body), blocks otherwise.
#[derive(Serialize)]
#[serde(untagged)]
enum WireContent<'a> {
    Text(&'a str),
    Blocks(Vec<WireBlockOut<'a>>),
}

impl<'a> WireContent<'a> {
    fn is_empty(&self) -> bool {
        match self {
            WireContent::Text(text) => text.is_empty(),
            WireContent::Blocks(blocks) => blocks.is_empty(),
        }
    }

    fn into_blocks(self) -> Vec<WireBlockOut<'a>> {
        match self {
            WireContent::Text(text) => vec![WireBlockOut::Text { text }],
            WireContent::Blocks(blocks) => blocks,
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlockOut<'a> {
    Text {
        text: &'a str,
    },
    Image {
        source: WireImageSource<'a>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: WireContent<'a>,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireImageSource<'a> {
    Base64 {
        media_type: Cow<'a, str>,
        data: Cow<'a, str>,
    },
    Url {
        url: &'a str,
    },
}

#[derive(Serialize)]
struct WireTool<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: Cow<'a, Value>,
}

#[derive(Serialize)]
struct WireToolChoice<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    disable_parallel_tool_use: bool,
}

#[derive(Serialize)]
struct WireMetadata<'a> {
    user_id: &'a str,
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

/// One content block of an answer. `text` blocks are the answer and
/// `tool_use` blocks its tool calls; others (`thinking`, server tools'
/// blocks) are not part of what OpenAI's format can return, and are skipped.
#[derive(Deserialize)]
struct WireBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: Option<Value>,
}

#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

/// One event of a streamed answer. Event types this adapter does not know
/// (`ping`, and any Anthropic adds later) are read as `Other` and skipped,
/// as Anthropic asks clients to do, rather than breaking the stream.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent {
    MessageStart {
        message: WireStartMessage,
    },
    ContentBlockStart {
        index: u32,
        content_block: WireBlock,
    },
    ContentBlockDelta {
        index: u32,
        delta: WireBlockDelta,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: WireMessageDelta,
        #[serde(default)]
        usage: Option<WireUsage>,
    },
    MessageStop,
    Error {
        error: WireError,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct WireStartMessage {
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// A block's increment: text, or a fragment of a tool call's input JSON.
/// Others (`thinking_delta`, `signature_delta`, `citations_delta`) belong
/// to blocks that are skipped.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct WireMessageDelta {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
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

    fn request(
        &self,
        upstream_model: &str,
        req: &ChatRequest,
        stream: bool,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let mut rb = self
            .upstream
            .post(&self.endpoint)?
            .header("anthropic-version", API_VERSION)
            .json(&wire_request(upstream_model, req, stream));
        if let Some(key) = &self.upstream.api_key {
            rb = rb.header("x-api-key", key);
        }
        Ok(rb)
    }

    pub async fn complete(&self, upstream_model: &str, req: &ChatRequest) -> Result<Completion, ProviderError> {
        let resp: WireResponse = self.upstream.send(self.request(upstream_model, req, false)?).await?;
        Ok(completion(resp))
    }

    /// The answer as Anthropic generates it, its events translated to
    /// [`Delta`]s as they arrive; the usage comes last.
    pub async fn stream(&self, upstream_model: &str, req: &ChatRequest) -> Result<DeltaStream, ProviderError> {
        let events = self
            .upstream
            .open_events::<WireEvent>(self.request(upstream_model, req, true)?)
            .await?;
        Ok(decode(events, self.upstream.errors.clone()))
    }
}

/// The request body for `req`.
fn wire_request<'a>(model: &'a str, req: &'a ChatRequest, stream: bool) -> WireRequest<'a> {
    let p = &req.params;
    let mut system = Vec::new();
    let mut messages: Vec<WireMessage<'a>> = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        let (role, content) = match m.role.as_str() {
            // `developer` is OpenAI's newer name for the system role.
            "system" | "developer" => {
                system.push(m.content.text());
                continue;
            }
            "assistant" => ("assistant", assistant_content(m)),
            "tool" => {
                let block = WireBlockOut::ToolResult {
                    tool_use_id: unsigned_id(m.tool_call_id.as_deref().unwrap_or_default()),
                    content: content(&m.content),
                };
                ("user", WireContent::Blocks(vec![block]))
            }
            _ => ("user", content(&m.content)),
        };
        // A message with nothing in it (`""`) is rejected, and says nothing.
        if content.is_empty() {
            continue;
        }
        // Anthropic wants user and assistant turns to alternate, and the
        // results of one turn's tool calls in a single user message: turns
        // of the same role in a row become one (the results of parallel
        // calls, a result and the user's next words).
        match messages.last_mut() {
            Some(last) if last.role == role => {
                let previous = std::mem::replace(&mut last.content, WireContent::Blocks(Vec::new()));
                let mut blocks = previous.into_blocks();
                blocks.extend(content.into_blocks());
                last.content = WireContent::Blocks(blocks);
            }
            _ => messages.push(WireMessage { role, content }),
        }
    }
    let tools: Vec<WireTool<'a>> = p
        .tools
        .iter()
        .map(|t| WireTool {
            name: &t.function.name,
            description: t.function.description.as_deref(),
            input_schema: match &t.function.parameters {
                Some(schema) if !schema.is_null() => Cow::Borrowed(schema),
                // Anthropic requires a schema; this one takes no arguments.
                _ => Cow::Owned(serde_json::json!({"type": "object", "properties": {}})),
            },
        })
        .collect();
    let tool_choice = if tools.is_empty() {
        None
    } else {
        tool_choice(p.tool_choice.as_ref(), p.parallel_tool_calls)
    };
    WireRequest {
        model,
        max_tokens: p.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        // One string, the system messages joined, wherever they stood.
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        messages,
        temperature: p.temperature.map(|t| t.min(MAX_TEMPERATURE)),
        // Anthropic's newer models refuse `temperature` and `top_p`
        // together; temperature is the one clients set on purpose, top_p
        // is usually a library default riding along.
        top_p: p.top_p.filter(|_| p.temperature.is_none()),
        stop_sequences: stop_sequences(p.stop.as_ref()),
        tools,
        tool_choice,
        metadata: p.user.as_deref().map(|user_id| WireMetadata { user_id }),
        stream,
    }
}

/// A user message's (or a tool result's) content: a string stays one;
/// parts become text and image blocks.
fn content(c: &Content) -> WireContent<'_> {
    match c {
        Content::Text(text) => WireContent::Text(text),
        Content::Parts(parts) => WireContent::Blocks(parts.iter().filter_map(part_block).collect()),
        Content::Null => WireContent::Blocks(Vec::new()),
    }
}

/// An assistant turn: its text, then a `tool_use` block per tool call.
fn assistant_content(m: &super::ChatMessage) -> WireContent<'_> {
    if m.tool_calls.is_empty() {
        return content(&m.content);
    }
    // Anthropic rejects empty text blocks, which a tool-calling turn's
    // `""` content would make.
    let mut blocks: Vec<WireBlockOut<'_>> = content(&m.content)
        .into_blocks()
        .into_iter()
        .filter(|b| !matches!(b, WireBlockOut::Text { text } if text.is_empty()))
        .collect();
    blocks.extend(m.tool_calls.iter().map(|call| WireBlockOut::ToolUse {
        id: unsigned_id(&call.id),
        name: &call.function.name,
        input: call.function.arguments_object(),
    }));
    WireContent::Blocks(blocks)
}

fn part_block(p: &Part) -> Option<WireBlockOut<'_>> {
    match p {
        // Empty text blocks are rejected; they say nothing anyway.
        Part::Text { text } if text.is_empty() => None,
        Part::Text { text } => Some(WireBlockOut::Text { text }),
        Part::ImageUrl { image_url } => {
            let source = match image_url.inline() {
                Some((media_type, data)) => WireImageSource::Base64 { media_type, data },
                None => WireImageSource::Url { url: &image_url.url },
            };
            Some(WireBlockOut::Image { source })
        }
    }
}

/// OpenAI's `tool_choice` (and `parallel_tool_calls`) in Anthropic's
/// shape: `auto`, `any` (OpenAI's `required`), `tool` (a named function)
/// or `none`. An unknown value is left to Anthropic's default, `auto`.
fn tool_choice(choice: Option<&Value>, parallel: Option<bool>) -> Option<WireToolChoice<'_>> {
    let chosen = match choice {
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(("auto", None)),
            "required" => Some(("any", None)),
            "none" => Some(("none", None)),
            _ => None,
        },
        Some(v) => v
            .pointer("/function/name")
            .and_then(Value::as_str)
            .map(|name| ("tool", Some(name))),
        None => None,
    };
    let serial = parallel == Some(false);
    let (kind, name) = match chosen {
        Some(c) => c,
        None if serial => ("auto", None),
        None => return None,
    };
    Some(WireToolChoice {
        kind,
        name,
        // Meaningless when no tool may be called, and rejected there.
        disable_parallel_tool_use: serial && kind != "none",
    })
}

/// OpenAI's `stop` as `stop_sequences`, less the sequences that are only
/// whitespace (`"\n"` is a common one), which Anthropic rejects: the
/// answer then runs on past them rather than the request failing.
fn stop_sequences(stop: Option<&Stop>) -> Vec<&str> {
    let all: Vec<&str> = match stop {
        Some(Stop::One(s)) => vec![s.as_str()],
        Some(Stop::Many(v)) => v.iter().map(String::as_str).collect(),
        None => Vec::new(),
    };
    all.into_iter().filter(|s| !s.trim().is_empty()).collect()
}

/// A whole answer as a [`Completion`]: the text blocks joined, the
/// `tool_use` blocks as tool calls (their input serialised back to JSON
/// text, as OpenAI's clients read it).
fn completion(resp: WireResponse) -> Completion {
    let usage = resp.usage.unwrap_or_default();
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in resp.content {
        match block.kind.as_str() {
            "text" => text.push_str(block.text.as_deref().unwrap_or_default()),
            "tool_use" => tool_calls.push(ToolCall::function(
                block.id.unwrap_or_default(),
                block.name.unwrap_or_default(),
                block.input.map_or_else(|| "{}".into(), |input| input.to_string()),
            )),
            _ => {}
        }
    }
    let choice = Choice {
        text,
        tool_calls,
        finish_reason: finish_reason(resp.stop_reason.as_deref()),
        logprobs: None,
    };
    Completion::from_choices(
        vec![choice],
        usage.input_tokens.unwrap_or(0),
        usage.output_tokens.unwrap_or(0),
    )
}

/// Anthropic's stop reasons in OpenAI's vocabulary, which the rest of the
/// gateway speaks.
fn finish_reason(stop_reason: Option<&str>) -> String {
    match stop_reason {
        Some("end_turn") | Some("stop_sequence") => "stop".to_string(),
        Some("max_tokens") => "length".to_string(),
        Some("tool_use") => "tool_calls".to_string(),
        Some("refusal") => "content_filter".to_string(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// Translates a stream's events into deltas, as they arrive. Ends after
/// the first error (the upstream's `error` event or a broken connection).
fn decode(events: BoxStream<'static, Result<WireEvent, ProviderError>>, errors: Scrubber) -> DeltaStream {
    let start = Some((events, Decoder::new(errors)));
    stream::unfold(start, |state| async move {
        let (mut events, mut decoder) = state?;
        match events.next().await {
            Some(Ok(event)) => {
                let out = decoder.event(event);
                let next = (!decoder.failed).then_some((events, decoder));
                Some((out, next))
            }
            Some(Err(e)) => Some((vec![Err(e)], None)),
            None => Some((decoder.end().into_iter().map(Ok).collect(), None)),
        }
    })
    .flat_map(stream::iter)
    .boxed()
}

/// What a stream's translation remembers between events: the token counts
/// (input from the start, output from the end), and which content blocks
/// are tool calls, since OpenAI numbers tool calls where Anthropic numbers
/// blocks.
struct Decoder {
    errors: Scrubber,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    usage_sent: bool,
    /// The tool-use blocks so far, in order: a call's OpenAI index is its
    /// position here.
    tool_blocks: Vec<ToolBlock>,
    failed: bool,
}

struct ToolBlock {
    /// Anthropic's index of the block.
    block: u32,
    /// Whether any argument text was passed on.
    has_arguments: bool,
}

impl Decoder {
    fn new(errors: Scrubber) -> Decoder {
        Decoder {
            errors,
            input_tokens: None,
            output_tokens: None,
            usage_sent: false,
            tool_blocks: Vec::new(),
            failed: false,
        }
    }

    fn event(&mut self, event: WireEvent) -> Vec<Result<Delta, ProviderError>> {
        let delta = match event {
            WireEvent::MessageStart { message } => {
                if let Some(u) = message.usage {
                    self.input_tokens = u.input_tokens.or(self.input_tokens);
                }
                None
            }
            WireEvent::ContentBlockStart { index, content_block } => self.block_start(index, content_block),
            WireEvent::ContentBlockDelta { index, delta } => match delta {
                WireBlockDelta::TextDelta { text } if !text.is_empty() => Some(Delta {
                    content: Some(text),
                    ..Delta::default()
                }),
                WireBlockDelta::InputJsonDelta { partial_json } if !partial_json.is_empty() => {
                    self.arguments(index, partial_json)
                }
                _ => None,
            },
            WireEvent::ContentBlockStop { index } => {
                // A call without arguments streams no input at all; OpenAI's
                // clients expect a JSON object, as a whole answer gives.
                let unargued = self.tool_blocks.iter().any(|t| t.block == index && !t.has_arguments);
                if unargued {
                    self.arguments(index, "{}".into())
                } else {
                    None
                }
            }
            WireEvent::MessageDelta { delta, usage } => {
                if let Some(u) = usage {
                    // Cumulative counts: the last one holds.
                    self.input_tokens = u.input_tokens.or(self.input_tokens);
                    self.output_tokens = u.output_tokens.or(self.output_tokens);
                }
                delta.stop_reason.map(|reason| Delta {
                    finish_reason: Some(finish_reason(Some(&reason))),
                    ..Delta::default()
                })
            }
            WireEvent::MessageStop => self.usage(),
            WireEvent::Error { error } => {
                self.failed = true;
                return vec![Err(stream_error(&self.errors, &error))];
            }
            WireEvent::Other => None,
        };
        delta.into_iter().map(Ok).collect()
    }

    /// A text block opens empty (its text follows in deltas); a tool-use
    /// block names its call, which opens with no arguments.
    fn block_start(&mut self, index: u32, block: WireBlock) -> Option<Delta> {
        match block.kind.as_str() {
            "text" => block.text.filter(|t| !t.is_empty()).map(|text| Delta {
                content: Some(text),
                ..Delta::default()
            }),
            "tool_use" => {
                // Input given whole at the start (not so far, but the event
                // allows it) is passed on as the arguments.
                let given = block
                    .input
                    .filter(|i| i.as_object().is_some_and(|o| !o.is_empty()))
                    .map(|i| i.to_string());
                self.tool_blocks.push(ToolBlock {
                    block: index,
                    has_arguments: given.is_some(),
                });
                Some(Delta {
                    tool_calls: vec![ToolCallDelta {
                        index: self.tool_blocks.len() as u32 - 1,
                        id: block.id,
                        kind: Some("function".into()),
                        function: Some(FunctionDelta {
                            name: block.name,
                            arguments: Some(given.unwrap_or_default()),
                        }),
                    }],
                    ..Delta::default()
                })
            }
            _ => None,
        }
    }

    /// A fragment of the arguments of the call that block `index` holds.
    fn arguments(&mut self, index: u32, fragment: String) -> Option<Delta> {
        let k = self.tool_blocks.iter().position(|t| t.block == index)?;
        self.tool_blocks[k].has_arguments = true;
        Some(Delta {
            tool_calls: vec![ToolCallDelta {
                index: k as u32,
                function: Some(FunctionDelta {
                    name: None,
                    arguments: Some(fragment),
                }),
                ..ToolCallDelta::default()
            }],
            ..Delta::default()
        })
    }

    /// The usage, once, when the counts are known.
    fn usage(&mut self) -> Option<Delta> {
        if self.usage_sent {
            return None;
        }
        let output = self.output_tokens?;
        self.usage_sent = true;
        Some(Delta {
            usage: Some((self.input_tokens.unwrap_or(0), output)),
            ..Delta::default()
        })
    }

    /// At the end of the stream: the usage, if `message_stop` never came
    /// to send it.
    fn end(&mut self) -> Option<Delta> {
        self.usage()
    }
}

/// An `error` event as the [`ProviderError`] its type corresponds to: the
/// status Anthropic gives the same error before a stream starts, so that
/// retry and fallback judge it alike (an `overloaded_error` is a 529).
fn stream_error(errors: &Scrubber, e: &WireError) -> ProviderError {
    let code = match e.kind.as_str() {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        // `api_error` and any type added later: Anthropic's side failed.
        _ => 500,
    };
    let status = reqwest::StatusCode::from_u16(code).unwrap_or(reqwest::StatusCode::INTERNAL_SERVER_ERROR);
    let kind = if e.kind.is_empty() { "error" } else { e.kind.as_str() };
    errors.status(status, &format!("{kind}: {}", e.message))
}

#[cfg(test)]
mod tests {
    use super::super::chat::{Assembler, ChatMessage, FunctionSpec, ImageUrl, Params, Tool};
    use super::super::ErrorKind;
    use super::*;
    use serde_json::json;

    fn body(req: &ChatRequest) -> Value {
        serde_json::to_value(wire_request("claude-x", req, false)).unwrap()
    }

    fn tool(name: &str, parameters: Option<Value>) -> Tool {
        Tool {
            kind: "function".into(),
            function: FunctionSpec {
                name: name.into(),
                description: Some(format!("{name} it")),
                parameters,
                strict: None,
            },
        }
    }

    fn tool_result(id: &str, text: &str) -> ChatMessage {
        ChatMessage {
            tool_call_id: Some(id.into()),
            ..ChatMessage::text("tool", text)
        }
    }

    #[test]
    fn plain_requests_keep_the_small_shape() {
        let req = ChatRequest {
            messages: vec![
                ChatMessage::text("system", "Be brief."),
                ChatMessage::text("user", "hi"),
                ChatMessage::text("assistant", "hello"),
                ChatMessage::text("developer", "In French."),
                ChatMessage::text("user", "again"),
            ],
            params: Params {
                temperature: Some(0.5),
                user: Some("u-1".into()),
                stop: Some(Stop::Many(vec!["END".into(), "\n".into()])),
                seed: Some(7),
                ..Params::default()
            },
        };
        assert_eq!(
            body(&req),
            json!({
                "model": "claude-x",
                "max_tokens": 1024,
                "system": "Be brief.\n\nIn French.",
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                    {"role": "user", "content": "again"}
                ],
                "temperature": 0.5,
                "stop_sequences": ["END"],
                "metadata": {"user_id": "u-1"}
            })
        );
        let v = serde_json::to_value(wire_request("m", &req, true)).unwrap();
        assert_eq!(v["stream"], true);
    }

    #[test]
    fn temperature_is_clamped_and_top_p_kept_only_alone() {
        let mut req = ChatRequest::user("hi");
        req.params.temperature = Some(1.5);
        req.params.top_p = Some(0.5);
        let v = body(&req);
        assert_eq!(v["temperature"], 1.0);
        assert!(v.get("top_p").is_none(), "{v}");
        req.params.temperature = None;
        assert_eq!(body(&req)["top_p"], 0.5);
    }

    #[test]
    fn images_become_base64_or_url_sources() {
        let req = ChatRequest {
            messages: vec![ChatMessage {
                content: Content::Parts(vec![
                    Part::Text { text: "what?".into() },
                    Part::ImageUrl {
                        image_url: ImageUrl {
                            url: "data:image/png;base64,iVBORw0KGgo=".into(),
                            detail: Some("high".into()),
                        },
                    },
                    Part::ImageUrl {
                        image_url: ImageUrl {
                            url: "https://example.com/cat.jpg".into(),
                            detail: None,
                        },
                    },
                    Part::ImageUrl {
                        image_url: ImageUrl {
                            url: "data:image/svg+xml,%3Csvg%2F%3E".into(),
                            detail: None,
                        },
                    },
                ]),
                ..ChatMessage::text("user", "")
            }],
            ..ChatRequest::default()
        };
        assert_eq!(
            body(&req)["messages"],
            json!([{"role": "user", "content": [
                {"type": "text", "text": "what?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/svg+xml", "data": "PHN2Zy8+"}}
            ]}])
        );
    }

    #[test]
    fn tool_turns_become_tool_use_and_merged_tool_results() {
        let req = ChatRequest {
            messages: vec![
                ChatMessage::text("user", "weather in Paris and Rome?"),
                ChatMessage {
                    tool_calls: vec![
                        ToolCall::function("call_1", "get_weather", r#"{"city":"Paris"}"#),
                        ToolCall::function("call_2", "get_weather", "{not json"),
                    ],
                    ..ChatMessage::text("assistant", "")
                },
                tool_result("call_1", "sunny"),
                tool_result("call_2", "rain"),
                ChatMessage::text("user", "and tomorrow?"),
            ],
            params: Params {
                tools: vec![
                    tool(
                        "get_weather",
                        Some(json!({"type": "object", "properties": {"city": {"type": "string"}}})),
                    ),
                    tool("now", None),
                ],
                tool_choice: Some(json!("required")),
                parallel_tool_calls: Some(false),
                ..Params::default()
            },
        };
        let v = body(&req);
        assert_eq!(
            v["messages"],
            json!([
                {"role": "user", "content": "weather in Paris and Rome?"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "rain"},
                    {"type": "text", "text": "and tomorrow?"}
                ]}
            ])
        );
        assert_eq!(
            v["tools"],
            json!([
                {"name": "get_weather", "description": "get_weather it",
                 "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                {"name": "now", "description": "now it", "input_schema": {"type": "object", "properties": {}}}
            ])
        );
        assert_eq!(
            v["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
    }

    #[test]
    fn tool_choice_maps_each_openai_form() {
        let named = json!({"type": "function", "function": {"name": "f"}});
        let cases = [
            (Some(json!("auto")), None, Some(json!({"type": "auto"}))),
            (Some(json!("none")), Some(false), Some(json!({"type": "none"}))),
            (Some(named), None, Some(json!({"type": "tool", "name": "f"}))),
            (
                None,
                Some(false),
                Some(json!({"type": "auto", "disable_parallel_tool_use": true})),
            ),
            (None, Some(true), None),
            (Some(json!("bogus")), None, None),
        ];
        for (choice, parallel, expected) in cases {
            let got = tool_choice(choice.as_ref(), parallel).map(|c| serde_json::to_value(c).unwrap());
            assert_eq!(got, expected, "{choice:?} {parallel:?}");
        }
        // Without tools no tool_choice is sent: Anthropic would refuse it.
        let mut req = ChatRequest::user("hi");
        req.params.tool_choice = Some(json!("required"));
        assert!(body(&req).get("tool_choice").is_none());
    }

    #[test]
    fn answers_read_text_and_tool_use_blocks() {
        let resp: WireResponse = serde_json::from_value(json!({
            "id": "msg_1", "type": "message", "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "x"},
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 12, "output_tokens": 34}
        }))
        .unwrap();
        let c = completion(resp);
        assert_eq!(c.text, "Let me check.");
        assert_eq!(
            c.tool_calls,
            vec![ToolCall::function("toolu_1", "get_weather", r#"{"city":"Paris"}"#)]
        );
        assert_eq!(c.finish_reason, "tool_calls");
        assert_eq!((c.input_tokens, c.output_tokens), (12, 34));
    }

    /// Server-sent events as they come off the wire (cut into uneven
    /// chunks), decoded as the upstream plumbing does.
    fn events(sse: &str) -> BoxStream<'static, Result<WireEvent, ProviderError>> {
        use eventsource_stream::Eventsource;
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = sse.as_bytes().chunks(17).map(|c| Ok(c.to_vec())).collect();
        stream::iter(chunks)
            .eventsource()
            .map(|e| Ok(serde_json::from_str::<WireEvent>(&e.unwrap().data).unwrap()))
            .boxed()
    }

    async fn run(sse: &str) -> Vec<Result<Delta, ProviderError>> {
        decode(events(sse), Scrubber::new("anthropic", "http://h", None))
            .collect()
            .await
    }

    const TOOL_STREAM: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-x","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"The user wants weather."}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQB"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Okay, let me "}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"check."}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_01","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"location\": \"San Fra"}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"ncisco\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}

event: content_block_start
data: {"type":"content_block_start","index":3,"content_block":{"type":"tool_use","id":"toolu_02","name":"now","input":{}}}

event: content_block_stop
data: {"type":"content_block_stop","index":3}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"#;

    #[tokio::test]
    async fn a_stream_reassembles_text_tool_calls_and_usage() {
        let deltas = run(TOOL_STREAM).await;
        let mut a = Assembler::default();
        for d in &deltas {
            a.push(d.as_ref().unwrap());
        }
        let c = a.completion(0);
        assert_eq!(c.text, "Okay, let me check.");
        assert_eq!(
            c.tool_calls,
            vec![
                ToolCall::function("toolu_01", "get_weather", r#"{"location": "San Francisco"}"#),
                ToolCall::function("toolu_02", "now", "{}"),
            ]
        );
        assert_eq!(c.finish_reason, "tool_calls");
        assert_eq!((c.input_tokens, c.output_tokens), (472, 89));
        // The text came as it was generated, and the usage once, last.
        let texts = deltas.iter().filter(|d| d.as_ref().unwrap().content.is_some()).count();
        assert_eq!(texts, 2);
        let usages: Vec<usize> = (0..deltas.len())
            .filter(|&i| deltas[i].as_ref().unwrap().usage.is_some())
            .collect();
        assert_eq!(usages, vec![deltas.len() - 1]);
    }

    #[tokio::test]
    async fn an_error_event_ends_the_stream_as_its_status() {
        let sse = r#"event: message_start
data: {"type":"message_start","message":{"usage":{"input_tokens":5,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}

event: error
data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"lo"}}

"#;
        let deltas = run(sse).await;
        assert_eq!(deltas.len(), 2, "{deltas:?}");
        assert_eq!(deltas[0].as_ref().unwrap().content.as_deref(), Some("Hel"));
        let e = deltas[1].as_ref().unwrap_err();
        assert_eq!(e.kind, ErrorKind::Status(529));
        assert!(e.retryable());
        assert!(e.message.contains("overloaded_error: Overloaded"), "{}", e.message);
        assert!(e.message.contains("provider anthropic"), "{}", e.message);
    }

    #[tokio::test]
    async fn a_stream_cut_after_its_last_delta_still_reports_usage() {
        let sse = r#"event: message_start
data: {"type":"message_start","message":{"usage":{"input_tokens":5,"output_tokens":1}}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":1}}

"#;
        let mut a = Assembler::default();
        for d in run(sse).await {
            a.push(&d.unwrap());
        }
        assert_eq!(a.usage(), Some((5, 1)));
        assert_eq!(a.completion(0).finish_reason, "length");
    }
}
