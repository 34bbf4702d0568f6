//! Google's Gemini API (`generateContent`, `streamGenerateContent`).
//!
//! Its shape differs from OpenAI's throughout: the model is named in the
//! URL, the assistant's role is `model`, a message is a list of `parts`
//! (text, images, function calls and function responses), the system
//! prompt is a separate `systemInstruction`, parameters sit in a
//! `generationConfig`, schemas are an OpenAPI subset, and fields are
//! camelCase.
//!
//! What Gemini has no place for is left out of the request:
//! `logprobs` (Gemini's own shape is not OpenAI's; the capability table
//! keeps such requests away), `parallel_tool_calls` (Gemini decides) and
//! `user`.

use std::borrow::Cow;
use std::collections::HashMap;

use futures_util::stream::{self, BoxStream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::chat::{
    Choice, Content, Delta, FunctionDelta, Part, ResponseFormat, Stop, ToolCall, ToolCallDelta, SIGNATURE_MARK,
};
use super::openai_compat::Upstream;
use super::stream::DeltaStream;
use super::{ChatRequest, Completion, ProviderError};

/// The JSON Schema keywords Gemini's schemas (an OpenAPI 3.0 subset)
/// accept. Any other keyword (`additionalProperties`, `$schema`, `$defs`,
/// `examples`, …) fails the whole request with a 400, so schemas written
/// for OpenAI are cut down to these.
const SCHEMA_KEYWORDS: &[&str] = &[
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "items",
    "minItems",
    "maxItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "minimum",
    "maximum",
];

/// The `format`s Gemini accepts; others (`email`, `uri`, …) are refused.
const SCHEMA_FORMATS: &[&str] = &["enum", "date-time", "float", "double", "int32", "int64"];

/// How deep `$ref`s are followed into a schema: far enough for any real
/// one, and a recursive schema (which Gemini cannot state) ends there.
const MAX_SCHEMA_DEPTH: usize = 16;

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
    generation_config: WireGenerationConfig<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTools<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<WireToolConfig<'a>>,
}

#[derive(Serialize)]
struct WireContent<'a> {
    role: &'static str,
    parts: Vec<WirePart<'a>>,
}

#[derive(Serialize)]
struct WireSystem<'a> {
    parts: [WirePart<'a>; 1],
}

/// One part, written `{"text": …}`, `{"inlineData": {…}}` and so on.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum WirePart<'a> {
    Text(Cow<'a, str>),
    InlineData(WireBlob<'a>),
    FileData(WireFile<'a>),
    FunctionCall(WireFunctionCall<'a>),
    FunctionResponse(WireFunctionResponse<'a>),
    /// A function call sent back with the thought signature Gemini gave it:
    /// `{"functionCall": {…}, "thoughtSignature": "…"}`.
    #[serde(untagged)]
    SignedFunctionCall(WireSignedCall<'a>),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireSignedCall<'a> {
    function_call: WireFunctionCall<'a>,
    thought_signature: &'a str,
}

/// A tool call id as sent to the client: the call's own id, and its
/// thought signature when there is one.
fn signed_id(id: String, signature: Option<String>) -> String {
    match signature.filter(|s| !s.is_empty()) {
        Some(sig) => format!("{id}{SIGNATURE_MARK}{sig}"),
        None => id,
    }
}

/// The thought signature a tool call id carries, if any.
fn signature_of(id: &str) -> Option<&str> {
    id.split_once(SIGNATURE_MARK)
        .map(|(_, sig)| sig)
        .filter(|s| !s.is_empty())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireBlob<'a> {
    mime_type: Cow<'a, str>,
    data: Cow<'a, str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireFile<'a> {
    mime_type: &'static str,
    file_uri: &'a str,
}

#[derive(Serialize)]
struct WireFunctionCall<'a> {
    name: &'a str,
    args: Value,
}

#[derive(Serialize)]
struct WireFunctionResponse<'a> {
    name: &'a str,
    response: Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireGenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidate_count: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_schema: Option<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireTools<'a> {
    function_declarations: Vec<WireFunctionDeclaration<'a>>,
}

#[derive(Serialize)]
struct WireFunctionDeclaration<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireToolConfig<'a> {
    function_calling_config: WireFunctionCallingConfig<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireFunctionCallingConfig<'a> {
    mode: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_function_names: Vec<&'a str>,
}

/// A whole answer, and each event of a streamed one (with partial
/// candidates).
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
    /// Left out for the first candidate (proto3 JSON omits zeros).
    #[serde(default)]
    index: u32,
}

#[derive(Deserialize)]
struct WireCandidateContent {
    #[serde(default)]
    parts: Vec<WireResponsePart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireResponsePart {
    #[serde(default)]
    text: Option<String>,
    /// Thinking models may return their reasoning as parts marked `thought`;
    /// those are not the answer.
    #[serde(default)]
    thought: bool,
    #[serde(default)]
    function_call: Option<WireFunctionCallIn>,
    /// Thinking models sign their function calls; the signature must come
    /// back with the call (see [`SIGNATURE_MARK`], which says how).
    #[serde(default)]
    thought_signature: Option<String>,
}

#[derive(Deserialize)]
struct WireFunctionCallIn {
    /// Given by some models; otherwise the adapter numbers the calls.
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    args: Option<Value>,
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
    /// A thinking model's reasoning, billed as output but not counted in
    /// `candidatesTokenCount`.
    #[serde(default)]
    thoughts_token_count: Option<u64>,
}

impl WireUsage {
    /// `(input, output)`, output with the thinking that is billed as such.
    fn counts(&self) -> (u64, u64) {
        let output = self.candidates_token_count.unwrap_or(0) + self.thoughts_token_count.unwrap_or(0);
        (self.prompt_token_count.unwrap_or(0), output)
    }
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

    /// `action` is `generateContent` or `streamGenerateContent?alt=sse`.
    fn request(&self, upstream_model: &str, req: &ChatRequest, action: &str) -> reqwest::RequestBuilder {
        // Model names are accepted both bare and as the API lists them
        // (`models/gemini-…`).
        let model = upstream_model.strip_prefix("models/").unwrap_or(upstream_model);
        let url = format!("{}/v1beta/models/{model}:{action}", self.upstream.base_url);
        let mut rb = self.upstream.client.post(url).json(&wire_request(req));
        if let Some(key) = &self.upstream.api_key {
            rb = rb.header("x-goog-api-key", key);
        }
        rb
    }

    pub async fn complete(&self, upstream_model: &str, req: &ChatRequest) -> Result<Completion, ProviderError> {
        let resp: WireResponse = self
            .upstream
            .send(self.request(upstream_model, req, "generateContent"))
            .await?;
        Ok(completion(resp))
    }

    /// The answer as Gemini generates it: each event's candidates as
    /// [`Delta`]s, and the usage once at the end (Gemini repeats the running
    /// total on every event).
    pub async fn stream(&self, upstream_model: &str, req: &ChatRequest) -> Result<DeltaStream, ProviderError> {
        let events = self
            .upstream
            .open_events::<WireResponse>(self.request(upstream_model, req, "streamGenerateContent?alt=sse"))
            .await?;
        Ok(decode(events))
    }
}

/// The request body for `req`.
fn wire_request(req: &ChatRequest) -> WireRequest<'_> {
    let p = &req.params;
    let mut system = Vec::new();
    let mut contents: Vec<WireContent<'_>> = Vec::with_capacity(req.messages.len());
    // A function response names its function where OpenAI's tool message
    // names only the call: the name comes from the call, by id. Later
    // calls overwrite earlier ones with the same id, as ids are only
    // unique within a turn when Gemini made them.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for m in &req.messages {
        let (role, parts) = match m.role.as_str() {
            // `developer` is OpenAI's newer name for the system role.
            "system" | "developer" => {
                system.push(m.content.text());
                continue;
            }
            "assistant" | "model" => {
                let mut parts = content_parts(&m.content);
                for call in &m.tool_calls {
                    call_names.insert(&call.id, &call.function.name);
                    let function_call = WireFunctionCall {
                        name: &call.function.name,
                        args: call.function.arguments_object(),
                    };
                    parts.push(match signature_of(&call.id) {
                        Some(thought_signature) => WirePart::SignedFunctionCall(WireSignedCall {
                            function_call,
                            thought_signature,
                        }),
                        None => WirePart::FunctionCall(function_call),
                    });
                }
                ("model", parts)
            }
            "tool" | "function" => {
                let name = m
                    .tool_call_id
                    .as_deref()
                    .and_then(|id| call_names.get(id).copied())
                    .or(m.name.as_deref())
                    .unwrap_or_default();
                let text = m.content.text();
                // A result that is JSON is passed as JSON, so the model
                // reads its structure rather than a quoted string.
                let result = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
                let mut response = Map::new();
                response.insert("content".into(), result);
                let part = WirePart::FunctionResponse(WireFunctionResponse {
                    name,
                    response: Value::Object(response),
                });
                ("user", vec![part])
            }
            _ => ("user", content_parts(&m.content)),
        };
        // Nothing to say (`""`): Gemini rejects empty parts.
        if parts.is_empty() {
            continue;
        }
        // Turns of one role in a row become one: Gemini wants the answers
        // to one turn's function calls together, in a single turn.
        match contents.last_mut() {
            Some(last) if last.role == role => last.parts.extend(parts),
            _ => contents.push(WireContent { role, parts }),
        }
    }
    let declarations: Vec<WireFunctionDeclaration<'_>> = p
        .tools
        .iter()
        .map(|t| WireFunctionDeclaration {
            name: &t.function.name,
            description: t.function.description.as_deref(),
            parameters: t.function.parameters.as_ref().map(schema).filter(takes_arguments),
        })
        .collect();
    let tool_config = if declarations.is_empty() {
        None
    } else {
        tool_config(p.tool_choice.as_ref())
    };
    let (response_mime_type, response_schema) = match &p.response_format {
        Some(ResponseFormat::JsonObject) => (Some("application/json"), None),
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            (Some("application/json"), json_schema.schema.as_ref().map(schema))
        }
        Some(ResponseFormat::Text) | None => (None, None),
    };
    WireRequest {
        contents,
        // One part, the system messages joined as for Anthropic, so that
        // every format sees the same system prompt.
        system_instruction: (!system.is_empty()).then(|| WireSystem {
            parts: [WirePart::Text(Cow::Owned(system.join("\n\n")))],
        }),
        generation_config: WireGenerationConfig {
            max_output_tokens: p.max_tokens,
            temperature: p.temperature,
            top_p: p.top_p,
            candidate_count: p.n,
            stop_sequences: match &p.stop {
                Some(Stop::One(s)) => vec![s.as_str()],
                Some(Stop::Many(v)) => v.iter().map(String::as_str).collect(),
                None => Vec::new(),
            },
            // Gemini's seed is 32 bits; a larger one is cut to its low 32,
            // still the same seed every time it is sent.
            seed: p.seed.map(|s| s as i32),
            presence_penalty: p.presence_penalty,
            frequency_penalty: p.frequency_penalty,
            response_mime_type,
            response_schema,
        },
        tools: if declarations.is_empty() {
            Vec::new()
        } else {
            vec![WireTools {
                function_declarations: declarations,
            }]
        },
        tool_config,
    }
}

/// A message's text and images as parts: a `data:` URL inline, any other
/// URL as a file reference (Gemini fetches it).
fn content_parts(c: &Content) -> Vec<WirePart<'_>> {
    match c {
        Content::Text(text) if text.is_empty() => Vec::new(),
        Content::Text(text) => vec![WirePart::Text(Cow::Borrowed(text))],
        Content::Parts(parts) => parts
            .iter()
            .filter_map(|p| match p {
                Part::Text { text } if text.is_empty() => None,
                Part::Text { text } => Some(WirePart::Text(Cow::Borrowed(text))),
                Part::ImageUrl { image_url } => Some(match image_url.inline() {
                    Some((mime_type, data)) => WirePart::InlineData(WireBlob { mime_type, data }),
                    None => WirePart::FileData(WireFile {
                        mime_type: image_mime(&image_url.url),
                        file_uri: &image_url.url,
                    }),
                }),
            })
            .collect(),
        Content::Null => Vec::new(),
    }
}

/// An image URL's type, from its extension (Gemini wants one with a file
/// reference); JPEG, the most common, when the URL does not say.
fn image_mime(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("heic") => "image/heic",
        Some("heif") => "image/heif",
        _ => "image/jpeg",
    }
}

/// OpenAI's `tool_choice` as a function-calling mode: `auto` → AUTO,
/// `required` → ANY, `none` → NONE, a named function → ANY limited to it.
/// An unknown value leaves Gemini's default (AUTO).
fn tool_config(choice: Option<&Value>) -> Option<WireToolConfig<'_>> {
    let (mode, allowed) = match choice? {
        Value::String(s) => match s.as_str() {
            "auto" => ("AUTO", Vec::new()),
            "required" => ("ANY", Vec::new()),
            "none" => ("NONE", Vec::new()),
            _ => return None,
        },
        v => ("ANY", vec![v.pointer("/function/name").and_then(Value::as_str)?]),
    };
    Some(WireToolConfig {
        function_calling_config: WireFunctionCallingConfig {
            mode,
            allowed_function_names: allowed,
        },
    })
}

/// A JSON Schema in the subset Gemini accepts: keywords outside
/// [`SCHEMA_KEYWORDS`] dropped (at every depth), local `$ref`s inlined,
/// `const` as a one-value `enum`, `oneOf` as `anyOf`, and null in a type
/// list or a union (`["string", "null"]`, Pydantic's `Optional`) as
/// `nullable`.
fn schema(s: &Value) -> Value {
    clean_schema(s, s, 0)
}

fn clean_schema(s: &Value, root: &Value, depth: usize) -> Value {
    let Value::Object(map) = s else {
        // `true` and other shorthands constrain nothing Gemini can state.
        return Value::Object(Map::new());
    };
    if depth > MAX_SCHEMA_DEPTH {
        return Value::Object(Map::new());
    }
    if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
        let target = reference.strip_prefix('#').and_then(|pointer| root.pointer(pointer));
        let mut resolved = match target {
            Some(t) => clean_schema(t, root, depth + 1),
            None => Value::Object(Map::new()),
        };
        // The referring schema's own description says more about the use.
        if let (Value::Object(out), Some(d)) = (&mut resolved, map.get("description")) {
            out.insert("description".into(), d.clone());
        }
        return resolved;
    }
    let mut out = Map::new();
    for (key, value) in map {
        match key.as_str() {
            "properties" => {
                // An empty `properties` is refused (Gemini wants at least one).
                if let Value::Object(props) = value {
                    if !props.is_empty() {
                        let cleaned = props
                            .iter()
                            .map(|(name, p)| (name.clone(), clean_schema(p, root, depth + 1)))
                            .collect();
                        out.insert(key.clone(), Value::Object(cleaned));
                    }
                }
            }
            // The tuple form (an array of schemas) has no equivalent.
            "items" if value.is_object() => {
                out.insert(key.clone(), clean_schema(value, root, depth + 1));
            }
            "items" => {}
            "anyOf" | "oneOf" => {
                let Value::Array(options) = value else { continue };
                let is_null = |o: &&Value| o.get("type").and_then(Value::as_str) == Some("null");
                let mut kept: Vec<Value> = options
                    .iter()
                    .filter(|o| !is_null(o))
                    .map(|o| clean_schema(o, root, depth + 1))
                    .collect();
                if kept.len() < options.len() {
                    out.insert("nullable".into(), Value::Bool(true));
                }
                match (kept.len(), kept.pop()) {
                    // One option left: it is the schema.
                    (1, Some(Value::Object(only))) => out.extend(only),
                    (_, Some(last)) => {
                        kept.push(last);
                        out.insert("anyOf".into(), Value::Array(kept));
                    }
                    _ => {}
                }
            }
            "type" => match value {
                Value::Array(types) => {
                    let mut named = types.iter().filter_map(Value::as_str);
                    if let Some(t) = named.clone().find(|t| *t != "null") {
                        out.insert(key.clone(), Value::String(t.to_string()));
                    }
                    if named.any(|t| t == "null") {
                        out.insert("nullable".into(), Value::Bool(true));
                    }
                }
                _ => {
                    out.insert(key.clone(), value.clone());
                }
            },
            "const" if !map.contains_key("enum") => {
                out.insert("enum".into(), Value::Array(vec![value.clone()]));
            }
            "format" if value.as_str().is_some_and(|f| SCHEMA_FORMATS.contains(&f)) => {
                out.insert(key.clone(), value.clone());
            }
            "format" => {}
            k if SCHEMA_KEYWORDS.contains(&k) => {
                out.insert(key.clone(), value.clone());
            }
            _ => {}
        }
    }
    Value::Object(out)
}

/// Whether a cleaned parameters schema says anything: a function without
/// arguments is declared without `parameters`, since Gemini refuses an
/// object schema with no properties.
fn takes_arguments(s: &Value) -> bool {
    let object = match s.get("type").and_then(Value::as_str) {
        Some(t) => t.eq_ignore_ascii_case("object"),
        None => true,
    };
    !object || s.get("properties").is_some()
}

/// A whole answer: a choice per candidate, in index order.
fn completion(resp: WireResponse) -> Completion {
    let (input, output) = resp.usage_metadata.unwrap_or_default().counts();
    if resp.candidates.is_empty() {
        // A blocked prompt is an answer, not a failure: trying again would
        // be blocked the same way.
        let reason = resp.prompt_feedback.and_then(|f| f.block_reason);
        let choice = Choice {
            finish_reason: finish_reason(reason.as_deref().or(Some("BLOCKED")), false),
            ..Choice::default()
        };
        return Completion::from_choices(vec![choice], input, output);
    }
    let mut candidates = resp.candidates;
    candidates.sort_by_key(|c| c.index);
    let choices = candidates
        .into_iter()
        .map(|c| {
            let mut text = String::new();
            let mut tool_calls = Vec::new();
            for part in c.content.map(|c| c.parts).unwrap_or_default() {
                if part.thought {
                    continue;
                }
                if let Some(t) = part.text {
                    text.push_str(&t);
                }
                if let Some(call) = part.function_call {
                    let k = tool_calls.len();
                    tool_calls.push(tool_call(call, part.thought_signature, k));
                }
            }
            Choice {
                finish_reason: finish_reason(c.finish_reason.as_deref(), !tool_calls.is_empty()),
                text,
                tool_calls,
                logprobs: None,
            }
        })
        .collect();
    Completion::from_choices(choices, input, output)
}

/// A function call as OpenAI's tool call: its arguments as JSON text, and
/// an id (`call_<k>`, its place in the answer, where Gemini gave none)
/// carrying its thought signature, if any.
fn tool_call(call: WireFunctionCallIn, signature: Option<String>, k: usize) -> ToolCall {
    let id = call
        .id
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| format!("call_{k}"));
    let arguments = call.args.map_or_else(|| "{}".into(), |a| a.to_string());
    ToolCall::function(signed_id(id, signature), call.name, arguments)
}

/// Gemini's finish reasons in OpenAI's vocabulary where one exists
/// (`STOP`, `MAX_TOKENS`; `STOP` after function calls is `tool_calls`, as
/// Gemini has no reason of its own for it), lowercased otherwise
/// (`safety`, `recitation`).
fn finish_reason(reason: Option<&str>, called: bool) -> String {
    match reason {
        Some("STOP") if called => "tool_calls".to_string(),
        Some("STOP") => "stop".to_string(),
        Some("MAX_TOKENS") => "length".to_string(),
        Some(other) => other.to_ascii_lowercase(),
        None => String::new(),
    }
}

/// Translates a stream's events into deltas as they arrive, then the
/// usage. Ends after the first error.
fn decode(events: BoxStream<'static, Result<WireResponse, ProviderError>>) -> DeltaStream {
    let start = Some((events, Decoder::default()));
    stream::unfold(start, |state| async move {
        let (mut events, mut decoder) = state?;
        match events.next().await {
            Some(Ok(event)) => Some((decoder.event(event), Some((events, decoder)))),
            Some(Err(e)) => Some((vec![Err(e)], None)),
            None => Some((decoder.end().into_iter().map(Ok).collect(), None)),
        }
    })
    .flat_map(stream::iter)
    .boxed()
}

/// What a stream's translation remembers between events.
#[derive(Default)]
struct Decoder {
    /// Per candidate index, the function calls passed on so far: each
    /// event's calls come whole, and take the next OpenAI indexes.
    calls: Vec<(u32, usize)>,
    /// The latest running total.
    usage: Option<(u64, u64)>,
}

impl Decoder {
    fn event(&mut self, resp: WireResponse) -> Vec<Result<Delta, ProviderError>> {
        if let Some(u) = &resp.usage_metadata {
            self.usage = Some(u.counts());
        }
        let mut out = Vec::new();
        if resp.candidates.is_empty() {
            if let Some(reason) = resp.prompt_feedback.and_then(|f| f.block_reason) {
                out.push(Ok(Delta {
                    finish_reason: Some(finish_reason(Some(&reason), false)),
                    ..Delta::default()
                }));
            }
        }
        for c in resp.candidates {
            let mut delta = Delta {
                choice: c.index,
                ..Delta::default()
            };
            let called = self.called(c.index);
            for part in c.content.map(|c| c.parts).unwrap_or_default() {
                if part.thought {
                    continue;
                }
                if let Some(t) = part.text.filter(|t| !t.is_empty()) {
                    delta.content.get_or_insert_with(String::new).push_str(&t);
                }
                if let Some(call) = part.function_call {
                    let k = *called;
                    *called += 1;
                    let call = tool_call(call, part.thought_signature, k);
                    delta.tool_calls.push(ToolCallDelta {
                        index: k as u32,
                        id: Some(call.id),
                        kind: Some(call.kind),
                        function: Some(FunctionDelta {
                            name: Some(call.function.name),
                            arguments: Some(call.function.arguments),
                        }),
                    });
                }
            }
            let called = *called > 0;
            delta.finish_reason = c.finish_reason.map(|r| finish_reason(Some(&r), called));
            if delta.content.is_some() || !delta.tool_calls.is_empty() || delta.finish_reason.is_some() {
                out.push(Ok(delta));
            }
        }
        out
    }

    /// The count of calls candidate `index` has made so far.
    fn called(&mut self, index: u32) -> &mut usize {
        let at = match self.calls.iter().position(|(i, _)| *i == index) {
            Some(at) => at,
            None => {
                self.calls.push((index, 0));
                self.calls.len() - 1
            }
        };
        &mut self.calls[at].1
    }

    /// The usage, once, at the end.
    fn end(&mut self) -> Option<Delta> {
        self.usage.take().map(|u| Delta {
            usage: Some(u),
            ..Delta::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::chat::{Assembler, ChatMessage, FunctionSpec, ImageUrl, JsonSchema, Params, Tool};
    use super::*;
    use serde_json::json;

    fn body(req: &ChatRequest) -> Value {
        serde_json::to_value(wire_request(req)).unwrap()
    }

    fn tool(name: &str, parameters: Option<Value>) -> Tool {
        Tool {
            kind: "function".into(),
            function: FunctionSpec {
                name: name.into(),
                description: None,
                parameters,
                strict: Some(true),
            },
        }
    }

    #[test]
    fn system_and_parameters_reach_their_places() {
        let req = ChatRequest {
            messages: vec![
                ChatMessage::text("system", "Be brief."),
                ChatMessage::text("user", "hi"),
                ChatMessage::text("assistant", "hello"),
                ChatMessage::text("user", "again"),
            ],
            params: Params {
                max_tokens: Some(50),
                temperature: Some(1.5),
                top_p: Some(0.5),
                n: Some(3),
                stop: Some(Stop::One("END".into())),
                seed: Some(42),
                presence_penalty: Some(0.25),
                frequency_penalty: Some(-0.5),
                user: Some("u-1".into()),
                parallel_tool_calls: Some(false),
                ..Params::default()
            },
        };
        assert_eq!(
            body(&req),
            json!({
                "contents": [
                    {"role": "user", "parts": [{"text": "hi"}]},
                    {"role": "model", "parts": [{"text": "hello"}]},
                    {"role": "user", "parts": [{"text": "again"}]}
                ],
                "systemInstruction": {"parts": [{"text": "Be brief."}]},
                "generationConfig": {
                    "maxOutputTokens": 50, "temperature": 1.5, "topP": 0.5, "candidateCount": 3,
                    "stopSequences": ["END"], "seed": 42, "presencePenalty": 0.25, "frequencyPenalty": -0.5
                }
            })
        );
    }

    #[test]
    fn images_are_inline_or_file_references() {
        let image = |url: &str| Part::ImageUrl {
            image_url: ImageUrl {
                url: url.into(),
                detail: None,
            },
        };
        let req = ChatRequest {
            messages: vec![ChatMessage {
                content: Content::Parts(vec![
                    Part::Text { text: "compare".into() },
                    image("data:image/png;base64,iVBORw0KGgo="),
                    image("https://example.com/a/cat.WEBP?size=2#x"),
                    image("gs://bucket/photo"),
                ]),
                ..ChatMessage::text("user", "")
            }],
            ..ChatRequest::default()
        };
        assert_eq!(
            body(&req)["contents"],
            json!([{"role": "user", "parts": [
                {"text": "compare"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/a/cat.WEBP?size=2#x"}},
                {"fileData": {"mimeType": "image/jpeg", "fileUri": "gs://bucket/photo"}}
            ]}])
        );
    }

    #[test]
    fn tool_turns_become_function_calls_and_responses() {
        let tool_result = |id: &str, text: &str| ChatMessage {
            tool_call_id: Some(id.into()),
            ..ChatMessage::text("tool", text)
        };
        let req = ChatRequest {
            messages: vec![
                ChatMessage::text("user", "weather in Paris and Rome?"),
                ChatMessage {
                    tool_calls: vec![
                        ToolCall::function("call_0", "get_weather", r#"{"city":"Paris"}"#),
                        ToolCall::function("call_1", "get_time", "{oops"),
                    ],
                    ..ChatMessage::text("assistant", "Checking.")
                },
                tool_result("call_0", r#"{"sky":"sunny"}"#),
                tool_result("call_1", "noon"),
                // A second round reuses Gemini's generated ids.
                ChatMessage {
                    tool_calls: vec![ToolCall::function("call_0", "get_forecast", "{}")],
                    ..ChatMessage::text("assistant", "")
                },
                tool_result("call_0", "rain"),
            ],
            ..ChatRequest::default()
        };
        assert_eq!(
            body(&req)["contents"],
            json!([
                {"role": "user", "parts": [{"text": "weather in Paris and Rome?"}]},
                {"role": "model", "parts": [
                    {"text": "Checking."},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                    {"functionCall": {"name": "get_time", "args": {}}}
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"content": {"sky": "sunny"}}}},
                    {"functionResponse": {"name": "get_time", "response": {"content": "noon"}}}
                ]},
                {"role": "model", "parts": [{"functionCall": {"name": "get_forecast", "args": {}}}]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_forecast", "response": {"content": "rain"}}}
                ]}
            ])
        );
    }

    #[test]
    fn tools_are_declared_with_schemas_gemini_accepts() {
        let params = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {
                "city": {"type": "string", "format": "hostname", "description": "where"},
                "when": {"type": ["string", "null"], "format": "date-time"},
                "unit": {"$ref": "#/$defs/Unit", "description": "which scale"},
                "tags": {"type": "array", "items": {"type": "string", "additionalProperties": false}},
                "maybe": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                "kind": {"const": "weather"}
            },
            "required": ["city"],
            "additionalProperties": false,
            "$defs": {"Unit": {"type": "string", "enum": ["C", "F"], "title": "Unit"}}
        });
        let req = ChatRequest {
            params: Params {
                tools: vec![
                    tool("get_weather", Some(params)),
                    tool("now", Some(json!({"type": "object", "properties": {}}))),
                ],
                tool_choice: Some(json!({"type": "function", "function": {"name": "get_weather"}})),
                ..Params::default()
            },
            ..ChatRequest::user("hi")
        };
        let v = body(&req);
        assert_eq!(
            v["tools"],
            json!([{"functionDeclarations": [
                {"name": "get_weather", "parameters": {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string", "description": "where"},
                        "when": {"type": "string", "nullable": true, "format": "date-time"},
                        "unit": {"type": "string", "enum": ["C", "F"], "title": "Unit", "description": "which scale"},
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "maybe": {"type": "integer", "nullable": true},
                        "kind": {"enum": ["weather"]}
                    },
                    "required": ["city"]
                }},
                {"name": "now"}
            ]}])
        );
        assert_eq!(
            v["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
        );
    }

    #[test]
    fn tool_choice_maps_to_modes() {
        let mode = |c: Value| serde_json::to_value(tool_config(Some(&c))).unwrap();
        assert_eq!(mode(json!("auto")), json!({"functionCallingConfig": {"mode": "AUTO"}}));
        assert_eq!(
            mode(json!("required")),
            json!({"functionCallingConfig": {"mode": "ANY"}})
        );
        assert_eq!(mode(json!("none")), json!({"functionCallingConfig": {"mode": "NONE"}}));
        assert_eq!(mode(json!("bogus")), Value::Null);
        assert!(tool_config(None).is_none());
        // Without tools no toolConfig is sent.
        let mut req = ChatRequest::user("hi");
        req.params.tool_choice = Some(json!("none"));
        assert!(body(&req).get("toolConfig").is_none());
    }

    #[test]
    fn json_mode_sets_the_mime_type_and_a_cleaned_schema() {
        let mut req = ChatRequest::user("hi");
        req.params.response_format = Some(ResponseFormat::JsonObject);
        let v = body(&req);
        assert_eq!(v["generationConfig"], json!({"responseMimeType": "application/json"}));
        req.params.response_format = Some(ResponseFormat::JsonSchema {
            json_schema: JsonSchema {
                name: "person".into(),
                description: None,
                schema: Some(json!({
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                    "required": ["name", "age"],
                    "additionalProperties": false
                })),
                strict: Some(true),
            },
        });
        assert_eq!(
            body(&req)["generationConfig"],
            json!({
                "responseMimeType": "application/json",
                "responseSchema": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                    "required": ["name", "age"]
                }
            })
        );
        req.params.response_format = Some(ResponseFormat::Text);
        assert_eq!(body(&req)["generationConfig"], json!({}));
    }

    #[test]
    fn recursive_schemas_end_at_the_depth_limit() {
        let s = json!({"type": "object", "properties": {"next": {"$ref": "#"}}});
        let cleaned = schema(&s);
        assert_eq!(cleaned["properties"]["next"]["type"], "object");
        assert!(serde_json::to_string(&cleaned).unwrap().len() < 10_000);
    }

    #[test]
    fn answers_give_a_choice_per_candidate() {
        let resp: WireResponse = serde_json::from_value(json!({
            "candidates": [
                {"content": {"role": "model", "parts": [{"text": "second"}]}, "finishReason": "MAX_TOKENS", "index": 1},
                {"content": {"role": "model", "parts": [
                    {"text": "thinking…", "thought": true},
                    {"text": "Let me check."},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                    {"functionCall": {"name": "now"}}
                ]}, "finishReason": "STOP"}
            ],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 20, "thoughtsTokenCount": 5}
        }))
        .unwrap();
        let c = completion(resp);
        assert_eq!(c.text, "Let me check.");
        assert_eq!(
            c.tool_calls,
            vec![
                ToolCall::function("call_0", "get_weather", r#"{"city":"Paris"}"#),
                ToolCall::function("call_1", "now", "{}")
            ]
        );
        assert_eq!(c.finish_reason, "tool_calls");
        assert_eq!(c.more_choices[0].text, "second");
        assert_eq!(c.more_choices[0].finish_reason, "length");
        assert_eq!((c.input_tokens, c.output_tokens), (10, 25));

        let blocked: WireResponse =
            serde_json::from_value(json!({"promptFeedback": {"blockReason": "SAFETY"}})).unwrap();
        let c = completion(blocked);
        assert_eq!((c.text.as_str(), c.finish_reason.as_str()), ("", "safety"));
    }

    #[test]
    fn thought_signatures_ride_in_the_tool_call_id_and_go_back() {
        let resp: WireResponse = serde_json::from_value(json!({
            "candidates": [{"content": {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}, "thoughtSignature": "c2lnLTE="},
                {"functionCall": {"name": "now"}}
            ]}, "finishReason": "STOP"}]
        }))
        .unwrap();
        let c = completion(resp);
        assert_eq!(c.tool_calls[0].id, "call_0~sig~c2lnLTE=");
        assert_eq!(c.tool_calls[1].id, "call_1", "an unsigned call keeps its plain id");

        // The client sends the calls back as it got them, with the results.
        let mut req = ChatRequest::user("Weather in Oslo?");
        req.messages.push(ChatMessage {
            tool_calls: c.tool_calls.clone(),
            ..ChatMessage::text("assistant", "")
        });
        req.messages.push(ChatMessage {
            tool_call_id: Some(c.tool_calls[0].id.clone()),
            ..ChatMessage::text("tool", "sunny")
        });
        let b = body(&req);
        let model_parts = &b["contents"][1]["parts"];
        assert_eq!(
            model_parts[0],
            json!({"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}, "thoughtSignature": "c2lnLTE="})
        );
        assert_eq!(model_parts[1], json!({"functionCall": {"name": "now", "args": {}}}));
        assert_eq!(b["contents"][2]["parts"][0]["functionResponse"]["name"], "get_weather");
    }

    async fn run(sse: &str) -> Vec<Result<Delta, ProviderError>> {
        use eventsource_stream::Eventsource;
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = sse.as_bytes().chunks(23).map(|c| Ok(c.to_vec())).collect();
        let events = stream::iter(chunks)
            .eventsource()
            .map(|e| Ok(serde_json::from_str::<WireResponse>(&e.unwrap().data).unwrap()))
            .boxed();
        decode(events).collect().await
    }

    #[tokio::test]
    async fn a_stream_reassembles_candidates_calls_and_usage() {
        let sse = r#"data: {"candidates": [{"content": {"parts": [{"text": "Hel"}],"role": "model"}},{"content": {"parts": [{"text": "Bon"}],"role": "model"},"index": 1}],"usageMetadata": {"promptTokenCount": 9,"candidatesTokenCount": 2,"totalTokenCount": 11},"modelVersion": "gemini-2.5-flash"}

data: {"candidates": [{"content": {"parts": [{"text": "I should greet.","thought": true},{"text": "lo"}],"role": "model"}},{"content": {"parts": [{"text": "jour"}],"role": "model"},"finishReason": "STOP","index": 1}],"usageMetadata": {"promptTokenCount": 9,"candidatesTokenCount": 4,"totalTokenCount": 13},"modelVersion": "gemini-2.5-flash"}

data: {"candidates": [{"content": {"parts": [{"functionCall": {"name": "wave","args": {"hand": "left"}}}],"role": "model"}}],"usageMetadata": {"promptTokenCount": 9,"candidatesTokenCount": 6,"totalTokenCount": 15}}

data: {"candidates": [{"content": {"parts": [{"functionCall": {"name": "smile"}}],"role": "model"},"finishReason": "STOP"}],"usageMetadata": {"promptTokenCount": 9,"candidatesTokenCount": 8,"thoughtsTokenCount": 3,"totalTokenCount": 20}}

"#;
        let deltas = run(sse).await;
        let mut a = Assembler::default();
        for d in &deltas {
            a.push(d.as_ref().unwrap());
        }
        let c = a.completion(0);
        assert_eq!(c.text, "Hello");
        assert_eq!(
            c.tool_calls,
            vec![
                ToolCall::function("call_0", "wave", r#"{"hand":"left"}"#),
                ToolCall::function("call_1", "smile", "{}")
            ]
        );
        assert_eq!(c.finish_reason, "tool_calls");
        assert_eq!(c.more_choices.len(), 1);
        assert_eq!(
            (
                c.more_choices[0].text.as_str(),
                c.more_choices[0].finish_reason.as_str()
            ),
            ("Bonjour", "stop")
        );
        assert_eq!((c.input_tokens, c.output_tokens), (9, 11));
        // The usage comes once, last.
        let usages: Vec<usize> = (0..deltas.len())
            .filter(|&i| deltas[i].as_ref().unwrap().usage.is_some())
            .collect();
        assert_eq!(usages, vec![deltas.len() - 1]);
    }

    #[tokio::test]
    async fn a_blocked_prompt_streams_its_reason() {
        let sse = "data: {\"promptFeedback\": {\"blockReason\": \"PROHIBITED_CONTENT\"},\"usageMetadata\": {\"promptTokenCount\": 7,\"totalTokenCount\": 7}}\n\n";
        let mut a = Assembler::default();
        for d in run(sse).await {
            a.push(&d.unwrap());
        }
        let c = a.completion(0);
        assert_eq!((c.text.as_str(), c.finish_reason.as_str()), ("", "prohibited_content"));
        assert_eq!((c.input_tokens, c.output_tokens), (7, 0));
    }
}
