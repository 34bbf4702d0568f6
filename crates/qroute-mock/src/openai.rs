//! OpenAI's chat completions: the request read into a [`Request`], the
//! answer as a `chat.completion` or a stream of `chat.completion.chunk`s.

use serde_json::{json, Value};

use crate::answer::{Choice, Finish, Output, Reply, ToolCall};
use crate::request::{
    array_of, flag, opt_u32, str_of, Content, JsonMode, Request, StreamMode, ToolChoice, ToolSpec, Transcript,
};
use crate::stream::{self, sse_data, Event};
use crate::{unix_now, Failure};

/// The most choices OpenAI's `n` allows.
const MAX_CHOICES: u32 = 128;

/// The log probability the mock gives every token.
const LOGPROB: f64 = -0.1;

/// Reads a chat completions request.
pub(crate) fn parse(v: &Value) -> Result<Request, Failure> {
    let model = str_of(v, "model");
    if model.is_empty() {
        return Err(Failure::bad_request("model is required"));
    }
    let messages = v
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| Failure::bad_request("messages: an array is required"))?;
    let mut transcript = Transcript::default();
    for m in messages {
        transcript.message(
            str_of(m, "role"),
            Content::read(m.get("content").unwrap_or(&Value::Null)),
        );
    }
    let mut req = transcript.into_request(model.to_string());
    // `max_completion_tokens` is the newer name OpenAI's reasoning models require.
    req.max_tokens = opt_u32(v, "max_completion_tokens").or_else(|| opt_u32(v, "max_tokens"));
    req.tools = tools(v);
    req.tool_choice = tool_choice(v.get("tool_choice"));
    req.json = json_mode(v.get("response_format"));
    req.choices = opt_u32(v, "n").unwrap_or(1).clamp(1, MAX_CHOICES);
    req.logprobs = flag(v, "logprobs");
    req.stream = flag(v, "stream").then(|| StreamMode::Sse {
        include_usage: v.pointer("/stream_options/include_usage") == Some(&Value::Bool(true)),
    });
    Ok(req)
}

/// `tools: [{"type": "function", "function": {"name", "parameters"}}]`.
fn tools(v: &Value) -> Vec<ToolSpec> {
    array_of(v, "tools")
        .iter()
        .filter_map(|t| t.get("function"))
        .map(|f| ToolSpec {
            name: str_of(f, "name").to_string(),
            parameters: f.get("parameters").cloned().unwrap_or(Value::Null),
        })
        .collect()
}

/// `"none"`, `"auto"`, `"required"`, or `{"type": "function", "function":
/// {"name"}}`.
fn tool_choice(choice: Option<&Value>) -> ToolChoice {
    match choice {
        Some(Value::String(s)) if s == "none" => ToolChoice::None,
        Some(c @ Value::Object(_)) => match c.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => ToolChoice::Named(name.to_string()),
            None => ToolChoice::Auto,
        },
        _ => ToolChoice::Auto,
    }
}

/// `{"type": "json_object"}` or `{"type": "json_schema", "json_schema":
/// {"schema"}}`.
fn json_mode(format: Option<&Value>) -> JsonMode {
    let Some(format) = format else {
        return JsonMode::Off;
    };
    match str_of(format, "type") {
        "json_object" => JsonMode::Object,
        "json_schema" => JsonMode::Schema(format.pointer("/json_schema/schema").cloned().unwrap_or(json!({}))),
        _ => JsonMode::Off,
    }
}

/// The whole answer: a `chat.completion`.
pub(crate) fn body(req: &Request, reply: &Reply, id: u64) -> Value {
    let choices: Vec<Value> = reply
        .choices
        .iter()
        .enumerate()
        .map(|(index, choice)| {
            json!({
                "index": index,
                "message": message(choice),
                "logprobs": choice_logprobs(req, choice),
                "finish_reason": finish_reason(choice.finish),
            })
        })
        .collect();
    json!({
        "id": completion_id(id),
        "object": "chat.completion",
        "created": unix_now(),
        "model": req.model,
        "choices": choices,
        "usage": usage(reply),
    })
}

fn message(choice: &Choice) -> Value {
    match &choice.output {
        Output::Text(text) => json!({"role": "assistant", "content": text}),
        Output::ToolCall(call) => json!({
            "role": "assistant",
            "content": null,
            "tool_calls": [{
                "id": call_id(call),
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json()},
            }],
        }),
    }
}

/// The answer as OpenAI streams it: each choice's opening delta (its role,
/// or its tool call's id and name), then its content deltas, interleaved
/// across choices, then each choice's finish reason, then (if asked) the
/// usage in a chunk without choices, then `[DONE]`.
pub(crate) fn events(req: &Request, reply: &Reply, id: u64) -> Vec<Event> {
    let chunk = ChunkFrame {
        id: completion_id(id),
        created: unix_now(),
        model: &req.model,
        include_usage: matches!(req.stream, Some(StreamMode::Sse { include_usage: true })),
    };
    let mut events: Vec<Event> = reply
        .choices
        .iter()
        .enumerate()
        .map(|(i, choice)| Event::framing(chunk.choice(i, opening_delta(choice), Value::Null, None)))
        .collect();
    let pieces: Vec<Vec<String>> = reply.choices.iter().map(content_pieces).collect();
    let rounds = pieces.iter().map(Vec::len).max().unwrap_or(0);
    for round in 0..rounds {
        for (i, (choice, pieces)) in reply.choices.iter().zip(&pieces).enumerate() {
            if let Some(piece) = pieces.get(round) {
                let lp = piece_logprobs(req, choice, piece);
                events.push(Event::content(chunk.choice(i, content_delta(choice, piece), lp, None)));
            }
        }
    }
    for (i, choice) in reply.choices.iter().enumerate() {
        let finish = Some(finish_reason(choice.finish));
        events.push(Event::framing(chunk.choice(i, json!({}), Value::Null, finish)));
    }
    if chunk.include_usage {
        events.push(Event::framing(chunk.usage(reply)));
    }
    events.push(Event::framing("data: [DONE]\n\n"));
    events
}

/// What every chunk of one stream shares.
struct ChunkFrame<'a> {
    id: String,
    created: u64,
    model: &'a str,
    /// With `stream_options.include_usage`, every chunk carries `usage`:
    /// null but in the last one.
    include_usage: bool,
}

impl ChunkFrame<'_> {
    /// A chunk with one choice's delta.
    fn choice(&self, index: usize, delta: Value, logprobs: Value, finish: Option<&str>) -> String {
        let choices = json!([{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]);
        sse_data(&self.chunk(choices, Value::Null))
    }

    /// The last chunk of a stream that asked for usage: no choices.
    fn usage(&self, reply: &Reply) -> String {
        sse_data(&self.chunk(json!([]), usage(reply)))
    }

    fn chunk(&self, choices: Value, usage: Value) -> Value {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": choices,
        });
        if self.include_usage {
            chunk["usage"] = usage;
        }
        chunk
    }
}

/// A choice's first delta: its role, and for a tool call the call's index,
/// id, type, name and empty arguments.
fn opening_delta(choice: &Choice) -> Value {
    match &choice.output {
        Output::Text(_) => json!({"role": "assistant", "content": ""}),
        Output::ToolCall(call) => json!({
            "role": "assistant",
            "content": null,
            "tool_calls": [{
                "index": 0,
                "id": call_id(call),
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }],
        }),
    }
}

/// The pieces a choice's content streams in: its text, or its call's
/// arguments.
fn content_pieces(choice: &Choice) -> Vec<String> {
    match &choice.output {
        Output::Text(text) => stream::text_pieces(text),
        Output::ToolCall(call) => stream::split_even(&call.arguments_json(), stream::TEXT_CHUNKS),
    }
}

fn content_delta(choice: &Choice, piece: &str) -> Value {
    match choice.output {
        Output::Text(_) => json!({"content": piece}),
        Output::ToolCall(_) => json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
    }
}

/// A whole text choice's log probabilities, one per word; null for a tool
/// call or when not asked for.
fn choice_logprobs(req: &Request, choice: &Choice) -> Value {
    match &choice.output {
        Output::Text(text) if req.logprobs => logprobs_of(&words(text)),
        _ => Value::Null,
    }
}

/// A streamed text piece's log probabilities: the piece as one token.
fn piece_logprobs(req: &Request, choice: &Choice, piece: &str) -> Value {
    match &choice.output {
        Output::Text(_) if req.logprobs => logprobs_of(&[piece]),
        _ => Value::Null,
    }
}

/// `{"content": [..]}` with a log probability of [`LOGPROB`] per token.
fn logprobs_of(tokens: &[&str]) -> Value {
    let content: Vec<Value> = tokens
        .iter()
        .map(|token| json!({"token": token, "logprob": LOGPROB, "bytes": token.as_bytes(), "top_logprobs": []}))
        .collect();
    json!({ "content": content })
}

/// A text's words, each with the space after it, so they concatenate back
/// to the text.
fn words(text: &str) -> Vec<&str> {
    text.split_inclusive(' ').collect()
}

fn usage(reply: &Reply) -> Value {
    json!({
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    })
}

fn finish_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "stop",
        Finish::Length => "length",
        Finish::ToolCalls => "tool_calls",
    }
}

fn completion_id(id: u64) -> String {
    format!("chatcmpl-mock{id}")
}

fn call_id(call: &ToolCall) -> String {
    format!("call_{}", call.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_the_surface() {
        let req = parse(&json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "a cat"}
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}},
            "n": 2,
            "logprobs": true,
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": null
        }))
        .unwrap();
        assert_eq!((req.images, req.last_user.as_str()), (1, "a cat"));
        assert!(req.ends_with_tool_result);
        assert_eq!(req.tools.len(), 1);
        assert_eq!(req.tool_choice, ToolChoice::Named("f".into()));
        assert_eq!(req.json, JsonMode::Schema(json!({"type": "object"})));
        assert_eq!((req.choices, req.logprobs, req.max_tokens), (2, true, None));
        assert_eq!(req.stream, Some(StreamMode::Sse { include_usage: true }));

        assert_eq!(tool_choice(Some(&json!("none"))), ToolChoice::None);
        assert_eq!(tool_choice(Some(&json!("required"))), ToolChoice::Auto);
        assert_eq!(json_mode(Some(&json!({"type": "json_object"}))), JsonMode::Object);
        assert_eq!(json_mode(Some(&json!({"type": "text"}))), JsonMode::Off);
        assert!(parse(&json!({"messages": []})).is_err());
        assert!(parse(&json!({"model": "m"})).is_err());
    }

    #[test]
    fn words_reassemble() {
        let text = "mock answer from m: hi";
        assert_eq!(words(text), ["mock ", "answer ", "from ", "m: ", "hi"]);
        assert_eq!(words(text).concat(), text);
    }
}
