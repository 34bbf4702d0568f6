//! The chat request and answer every adapter speaks, in OpenAI's shape
//! (most of the field speaks it, and clients send it): the Anthropic and
//! Gemini adapters translate from and to these types.
//!
//! Fields a provider cannot honour are not dropped silently: a request
//! states what it needs ([`ChatRequest::needs`]) and models that lack it
//! are left out of the candidate set before the policy scores.

use std::borrow::Cow;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::capability::Capability;

// Read from client bodies and upstream answers: objects only, never arrays
// read positionally (see `qroute_core::objects`).
qroute_core::objects_only!(
    ChatMessage,
    Part,
    ImageUrl,
    ToolCall,
    FunctionCall,
    Tool,
    FunctionSpec,
    ResponseFormat,
    JsonSchema,
    ToolCallDelta,
    FunctionDelta
);
qroute_core::serialize_derived!(
    ChatMessage,
    Part,
    ImageUrl,
    ToolCall,
    FunctionCall,
    Tool,
    FunctionSpec,
    ResponseFormat,
    JsonSchema,
    ToolCallDelta,
    FunctionDelta
);

/// One chat message; `role` is `system`, `user`, `assistant` or `tool`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct ChatMessage {
    pub role: String,
    /// `null` for an assistant turn that only called tools.
    #[serde(default, skip_serializing_if = "Content::is_null")]
    pub content: Content,
    /// Tool calls an assistant turn made (sent back in a conversation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a `tool` message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    /// A plain text message.
    pub fn text(role: &str, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: Content::Text(content.into()),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        }
    }
}

/// A message's content: a string, or typed parts (text and images).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
    #[default]
    Null,
}

impl Content {
    fn is_null(&self) -> bool {
        matches!(self, Content::Null)
    }

    /// The text, parts joined by newlines; images contribute nothing.
    pub fn text(&self) -> String {
        match self {
            Content::Text(s) => s.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    Part::Text { text } => Some(text.as_str()),
                    Part::ImageUrl { .. } => None,
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Content::Null => String::new(),
        }
    }

    pub fn images(&self) -> usize {
        match self {
            Content::Parts(parts) => parts.iter().filter(|p| matches!(p, Part::ImageUrl { .. })).count(),
            _ => 0,
        }
    }
}

/// One content part. OpenAI's other kinds (`input_audio`, `file`) are
/// refused when the request is read: no adapter can pass them on yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct ImageUrl {
    /// An `https://` URL or a `data:` URL with base64 bytes.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ImageUrl {
    /// The media type and base64 bytes of a `data:` URL (OpenAI's way of
    /// sending an image inline), or `None` for any other URL: what
    /// Anthropic and Gemini need, as they take inline images as base64
    /// with a type. A URL that is not base64 (percent-encoded bytes) is
    /// encoded; one that names no type is taken as a JPEG.
    pub fn inline(&self) -> Option<(Cow<'_, str>, Cow<'_, str>)> {
        let rest = self.url.strip_prefix("data:")?;
        let (meta, data) = rest.split_once(',')?;
        let mut params = meta.split(';');
        let media_type = params.next().filter(|t| !t.is_empty()).unwrap_or("image/jpeg");
        let data = if params.any(|p| p.eq_ignore_ascii_case("base64")) {
            Cow::Borrowed(data)
        } else {
            let bytes: Vec<u8> = percent_encoding::percent_decode_str(data).collect();
            Cow::Owned(base64::engine::general_purpose::STANDARD.encode(bytes))
        };
        Some((Cow::Borrowed(media_type), data))
    }
}

/// Where a Gemini thought signature starts inside a tool call id. Gemini's
/// thinking models refuse a replayed function call without its signature,
/// and OpenAI's tool call has no field for one, so the Gemini adapter
/// appends it to the id, which clients send back verbatim.
pub const SIGNATURE_MARK: &str = "~sig~";

/// A tool call id without the Gemini signature it may carry: what every
/// other provider is sent (Anthropic allows only `[a-zA-Z0-9_-]` in ids).
pub fn unsigned_id(id: &str) -> &str {
    id.split_once(SIGNATURE_MARK).map_or(id, |(base, _)| base)
}

/// `messages` with every tool call id unsigned ([`unsigned_id`]); borrowed
/// when none carries a signature, which is nearly always.
pub fn unsigned_messages(messages: &[ChatMessage]) -> Cow<'_, [ChatMessage]> {
    let signed = |id: &str| id.contains(SIGNATURE_MARK);
    let any = messages
        .iter()
        .any(|m| m.tool_calls.iter().any(|c| signed(&c.id)) || m.tool_call_id.as_deref().is_some_and(signed));
    if !any {
        return Cow::Borrowed(messages);
    }
    let mut owned = messages.to_vec();
    for m in &mut owned {
        for c in &mut m.tool_calls {
            c.id = unsigned_id(&c.id).to_string();
        }
        if let Some(id) = &mut m.tool_call_id {
            *id = unsigned_id(id).to_string();
        }
    }
    Cow::Owned(owned)
}

/// A tool call, as OpenAI returns it: `arguments` is a JSON text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_kind() -> String {
    "function".into()
}

impl ToolCall {
    /// A call of function `name` with `arguments` (JSON text).
    pub fn function(id: impl Into<String>, name: impl Into<String>, arguments: impl Into<String>) -> ToolCall {
        ToolCall {
            id: id.into(),
            kind: function_kind(),
            function: FunctionCall {
                name: name.into(),
                arguments: arguments.into(),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct FunctionCall {
    pub name: String,
    /// JSON text, as the model wrote it (it may not parse).
    #[serde(default)]
    pub arguments: String,
}

impl FunctionCall {
    /// The arguments as the object Anthropic and Gemini require. OpenAI
    /// carries the JSON text the model wrote, which may not parse or may
    /// not be an object; such a call is passed on with no arguments (`{}`)
    /// rather than failing the whole conversation.
    pub fn arguments_object(&self) -> Value {
        match serde_json::from_str::<Value>(&self.arguments) {
            Ok(v @ Value::Object(_)) => v,
            _ => Value::Object(serde_json::Map::new()),
        }
    }
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct Tool {
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    pub function: FunctionSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct FunctionSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `response_format`: free text, any JSON object, or JSON to a schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchema },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct JsonSchema {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `stop`: one sequence or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn sequences(&self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        }
    }
}

/// The generation parameters passed through to the model. Field names and
/// meanings are OpenAI's; `None` leaves the provider's default.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Params {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
    /// `"none"`, `"auto"`, `"required"` or `{"type":"function","function":{"name":…}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// The end user, for the provider's abuse monitoring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// What the gateway asks of a provider: the same for every wire format.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    #[serde(flatten)]
    pub params: Params,
}

impl ChatRequest {
    /// A single user message.
    pub fn user(prompt: &str) -> ChatRequest {
        ChatRequest {
            messages: vec![ChatMessage::text("user", prompt)],
            ..ChatRequest::default()
        }
    }

    /// The capabilities a model must have to serve this request as asked.
    /// Streaming is the caller's to add: it is how the answer is sent, not
    /// part of the request to the model.
    pub fn needs(&self) -> Vec<Capability> {
        let mut needs = Vec::new();
        let tool_turns = self
            .messages
            .iter()
            .any(|m| !m.tool_calls.is_empty() || m.role == "tool");
        if !self.params.tools.is_empty() || tool_turns {
            needs.push(Capability::Tools);
        }
        if self.messages.iter().any(|m| m.content.images() > 0) {
            needs.push(Capability::Vision);
        }
        if matches!(
            self.params.response_format,
            Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. })
        ) {
            needs.push(Capability::Json);
        }
        if self.params.n.is_some_and(|n| n > 1) {
            needs.push(Capability::Choices);
        }
        if self.params.logprobs == Some(true) {
            needs.push(Capability::Logprobs);
        }
        needs
    }

    /// Tokens the prompt is estimated to take, erring high: see
    /// [`estimate_tokens`]. Each message adds 4 for its framing and each
    /// image 1,000 (a high-detail tile set; providers charge 85–1,600).
    pub fn estimated_prompt_tokens(&self) -> u64 {
        let mut tokens = 0;
        for m in &self.messages {
            tokens += 4 + estimate_tokens(&m.content.text()) + 1_000 * m.content.images() as u64;
            for call in &m.tool_calls {
                tokens += estimate_tokens(&call.function.name) + estimate_tokens(&call.function.arguments);
            }
        }
        for tool in &self.params.tools {
            tokens += estimate_tokens(&serde_json::to_string(tool).unwrap_or_default());
        }
        tokens
    }
}

/// A conservative token count for `text`, with no tokenizer: ASCII at 3
/// characters a token (English averages about 4 in the GPT and Claude
/// tokenizers) and every other character a whole token (Chinese, Japanese,
/// Korean, Cyrillic and others run 0.5–1.5 characters a token). Overcounts
/// rather than under: it decides whether a prompt fits a context window,
/// and a prompt that does not fit is a failed call.
pub fn estimate_tokens(text: &str) -> u64 {
    let ascii = text.bytes().filter(u8::is_ascii).count() as u64;
    let other = text.chars().filter(|c| !c.is_ascii()).count() as u64;
    ascii.div_ceil(3) + other
}

/// One of the model's answers (`n` asks for several).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Choice {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: String,
    /// OpenAI's `logprobs` object, passed through as sent.
    pub logprobs: Option<Value>,
}

/// A provider's answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Completion {
    /// The first choice's text: what judges, combiners and the cache read.
    pub text: String,
    /// The first choice's tool calls.
    pub tool_calls: Vec<ToolCall>,
    /// `stop`, `length`, `tool_calls`, … in OpenAI's vocabulary.
    pub finish_reason: String,
    pub logprobs: Option<Value>,
    /// Choices after the first, when `n` asked for more.
    pub more_choices: Vec<Choice>,
    /// Over every choice.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The quality recorded for this (prompt, model) in a dataset, when the
    /// provider is simulated from one; real providers leave it `None`.
    pub known_quality: Option<f32>,
    /// The cost recorded in a dataset, when simulated; real providers leave
    /// it `None` and the gateway prices the tokens.
    pub known_cost_usd: Option<f64>,
}

impl Completion {
    /// Every choice, the first included, in order.
    pub fn choices(&self) -> Vec<Choice> {
        let first = Choice {
            text: self.text.clone(),
            tool_calls: self.tool_calls.clone(),
            finish_reason: self.finish_reason.clone(),
            logprobs: self.logprobs.clone(),
        };
        std::iter::once(first)
            .chain(self.more_choices.iter().cloned())
            .collect()
    }

    /// A completion from choices in order (the first becomes the fields).
    pub fn from_choices(mut choices: Vec<Choice>, input_tokens: u64, output_tokens: u64) -> Completion {
        let first = if choices.is_empty() {
            Choice::default()
        } else {
            choices.remove(0)
        };
        Completion {
            text: first.text,
            tool_calls: first.tool_calls,
            finish_reason: first.finish_reason,
            logprobs: first.logprobs,
            more_choices: choices,
            input_tokens,
            output_tokens,
            known_quality: None,
            known_cost_usd: None,
        }
    }
}

/// One piece of a streamed answer, in OpenAI's chunk vocabulary whatever
/// the upstream's format: a delta of one choice, or the usage at the end.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Delta {
    pub choice: u32,
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCallDelta>,
    pub finish_reason: Option<String>,
    pub logprobs: Option<Value>,
    /// `(input, output)` tokens, on the chunk that reports them.
    pub usage: Option<(u64, u64)>,
}

/// A fragment of a tool call: the first names it, the rest add arguments.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct ToolCallDelta {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionDelta>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct FunctionDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// Rebuilds a [`Completion`] from the deltas of a stream, so a streamed
/// answer is recorded, priced and cached like any other.
#[derive(Debug, Default)]
pub struct Assembler {
    choices: Vec<Choice>,
    usage: Option<(u64, u64)>,
}

impl Assembler {
    pub fn push(&mut self, d: &Delta) {
        if let Some(u) = d.usage {
            self.usage = Some(u);
        }
        let i = d.choice as usize;
        if d.content.is_none() && d.tool_calls.is_empty() && d.finish_reason.is_none() && d.logprobs.is_none() {
            return;
        }
        if self.choices.len() <= i {
            self.choices.resize(i + 1, Choice::default());
        }
        let c = &mut self.choices[i];
        if let Some(text) = &d.content {
            c.text.push_str(text);
        }
        for t in &d.tool_calls {
            let k = t.index as usize;
            if c.tool_calls.len() <= k {
                c.tool_calls.resize(k + 1, ToolCall::function("", "", ""));
            }
            let call = &mut c.tool_calls[k];
            if let Some(id) = &t.id {
                call.id.clone_from(id);
            }
            if let Some(f) = &t.function {
                if let Some(name) = &f.name {
                    call.function.name.push_str(name);
                }
                if let Some(args) = &f.arguments {
                    call.function.arguments.push_str(args);
                }
            }
        }
        if let Some(reason) = &d.finish_reason {
            c.finish_reason.clone_from(reason);
        }
        if let Some(lp) = &d.logprobs {
            c.logprobs = Some(lp.clone());
        }
    }

    /// Whether any choice has finished: a stream that ends before this is
    /// broken.
    pub fn finished(&self) -> bool {
        self.choices.iter().any(|c| !c.finish_reason.is_empty())
    }

    /// The usage the upstream reported, if it did.
    pub fn usage(&self) -> Option<(u64, u64)> {
        self.usage
    }

    /// The answer so far; tokens the upstream did not report are estimated
    /// (output text at [`estimate_tokens`], the prompt given).
    pub fn completion(&self, estimated_input: u64) -> Completion {
        let (input, output) = self.usage.unwrap_or_else(|| {
            let out = self
                .choices
                .iter()
                .map(|c| {
                    estimate_tokens(&c.text)
                        + c.tool_calls
                            .iter()
                            .map(|t| estimate_tokens(&t.function.arguments))
                            .sum::<u64>()
                })
                .sum();
            (estimated_input, out)
        });
        Completion::from_choices(self.choices.clone(), input, output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_parts_read_as_openai_sends_them() {
        let m: ChatMessage = serde_json::from_str(
            r#"{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"https://x/y.png"}},{"type":"text","text":"b"}]}"#,
        )
        .unwrap();
        assert_eq!(m.content.text(), "a\nb");
        assert_eq!(m.content.images(), 1);
        let m: ChatMessage = serde_json::from_str(
            r#"{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]}"#,
        )
        .unwrap();
        assert_eq!(m.content, Content::Null);
        assert_eq!(m.tool_calls[0].function.name, "f");
        // Serialised back without the null content.
        let v = serde_json::to_value(&m).unwrap();
        assert!(v.get("content").is_none(), "{v}");
    }

    #[test]
    fn data_urls_give_type_and_base64() {
        let img = |url: &str| ImageUrl {
            url: url.into(),
            detail: None,
        };
        assert_eq!(
            img("data:image/webp;base64,AAAA").inline(),
            Some((Cow::Borrowed("image/webp"), Cow::Borrowed("AAAA")))
        );
        assert_eq!(
            img("data:,hi%21")
                .inline()
                .map(|(t, d)| (t.into_owned(), d.into_owned())),
            Some(("image/jpeg".into(), "aGkh".into()))
        );
        assert_eq!(img("https://x/y.png").inline(), None);
    }

    #[test]
    fn unparsable_arguments_become_an_empty_object() {
        let call = |a: &str| FunctionCall {
            name: "f".into(),
            arguments: a.into(),
        };
        assert_eq!(call(r#"{"a":1}"#).arguments_object(), serde_json::json!({"a": 1}));
        assert_eq!(call("[1]").arguments_object(), serde_json::json!({}));
        assert_eq!(call("{oops").arguments_object(), serde_json::json!({}));
    }

    #[test]
    fn signatures_are_stripped_for_other_providers() {
        assert_eq!(unsigned_id("call_0~sig~c2ln"), "call_0");
        assert_eq!(unsigned_id("call_0"), "call_0");
        let plain = vec![ChatMessage::text("user", "hi")];
        assert!(matches!(unsigned_messages(&plain), Cow::Borrowed(_)));
        let signed = vec![
            ChatMessage {
                tool_calls: vec![ToolCall::function("call_0~sig~c2ln", "f", "{}")],
                ..ChatMessage::text("assistant", "")
            },
            ChatMessage {
                tool_call_id: Some("call_0~sig~c2ln".into()),
                ..ChatMessage::text("tool", "42")
            },
        ];
        let out = unsigned_messages(&signed);
        assert_eq!(out[0].tool_calls[0].id, "call_0");
        assert_eq!(out[1].tool_call_id.as_deref(), Some("call_0"));
    }

    #[test]
    fn needs_follow_the_request() {
        let mut r = ChatRequest::user("hi");
        assert!(r.needs().is_empty());
        r.params.tools.push(Tool {
            kind: "function".into(),
            function: FunctionSpec {
                name: "f".into(),
                description: None,
                parameters: None,
                strict: None,
            },
        });
        r.params.response_format = Some(ResponseFormat::JsonObject);
        r.params.n = Some(2);
        assert_eq!(
            r.needs(),
            vec![Capability::Tools, Capability::Json, Capability::Choices]
        );
    }

    #[test]
    fn estimate_errs_high_for_non_latin_scripts() {
        assert_eq!(estimate_tokens("abcdef"), 2);
        assert_eq!(estimate_tokens("日本語"), 3);
        assert_eq!(estimate_tokens("Привет"), 6);
        assert_eq!(estimate_tokens(""), 0);
    }

    #[test]
    fn assembler_rebuilds_text_and_tool_calls() {
        let mut a = Assembler::default();
        let d = |content: Option<&str>, tools: Vec<ToolCallDelta>, finish: Option<&str>| Delta {
            content: content.map(str::to_string),
            tool_calls: tools,
            finish_reason: finish.map(str::to_string),
            ..Delta::default()
        };
        a.push(&d(Some("Hel"), vec![], None));
        a.push(&d(Some("lo"), vec![], None));
        a.push(&d(
            None,
            vec![ToolCallDelta {
                index: 0,
                id: Some("c1".into()),
                kind: Some("function".into()),
                function: Some(FunctionDelta {
                    name: Some("get".into()),
                    arguments: Some("{\"a\"".into()),
                }),
            }],
            None,
        ));
        a.push(&d(
            None,
            vec![ToolCallDelta {
                index: 0,
                function: Some(FunctionDelta {
                    name: None,
                    arguments: Some(":1}".into()),
                }),
                ..ToolCallDelta::default()
            }],
            None,
        ));
        assert!(!a.finished());
        a.push(&d(None, vec![], Some("tool_calls")));
        let c = a.completion(7);
        assert_eq!(c.text, "Hello");
        assert_eq!(c.tool_calls[0].id, "c1");
        assert_eq!(c.tool_calls[0].function.arguments, "{\"a\":1}");
        assert_eq!(c.finish_reason, "tool_calls");
        assert_eq!(c.input_tokens, 7);
    }
}
