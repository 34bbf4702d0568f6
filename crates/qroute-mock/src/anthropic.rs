//! Anthropic's Messages API: the request read into a [`Request`], the answer
//! as a `message` or as the Messages streaming events.

use serde_json::{json, Value};

use crate::answer::{Choice, Finish, Output, Reply, ToolCall};
use crate::request::{array_of, flag, opt_u32, str_of, Content, Request, StreamMode, ToolChoice, ToolSpec, Transcript};
use crate::stream::{self, sse_named, Event};
use crate::Failure;

/// Reads a Messages request. `max_tokens` is required by the real API; the
/// mock enforces it so that an adapter forgetting it fails here rather than
/// in production.
pub(crate) fn parse(v: &Value) -> Result<Request, Failure> {
    let model = str_of(v, "model");
    if model.is_empty() {
        return Err(Failure::bad_request("model: Field required"));
    }
    let messages = v
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| Failure::bad_request("messages: Field required"))?;
    let max_tokens = opt_u32(v, "max_tokens").ok_or_else(|| Failure::bad_request("max_tokens: Field required"))?;
    let mut transcript = Transcript::default();
    if let Some(system) = v.get("system").filter(|s| !s.is_null()) {
        transcript.system(Content::read(system));
    }
    for m in messages {
        transcript.message(
            str_of(m, "role"),
            Content::read(m.get("content").unwrap_or(&Value::Null)),
        );
    }
    let mut req = transcript.into_request(model.to_string());
    req.max_tokens = Some(max_tokens);
    req.tools = tools(v);
    req.tool_choice = tool_choice(v.get("tool_choice"));
    req.stream = flag(v, "stream").then_some(StreamMode::Sse { include_usage: false });
    Ok(req)
}

/// `tools: [{"name", "description", "input_schema"}]`.
fn tools(v: &Value) -> Vec<ToolSpec> {
    array_of(v, "tools")
        .iter()
        .map(|t| ToolSpec {
            name: str_of(t, "name").to_string(),
            parameters: t.get("input_schema").cloned().unwrap_or(Value::Null),
        })
        .collect()
}

/// `{"type": "auto" | "any" | "tool" | "none", "name"}`.
fn tool_choice(choice: Option<&Value>) -> ToolChoice {
    let Some(choice) = choice else {
        return ToolChoice::Auto;
    };
    match str_of(choice, "type") {
        "none" => ToolChoice::None,
        "tool" => ToolChoice::Named(str_of(choice, "name").to_string()),
        _ => ToolChoice::Auto,
    }
}

/// The whole answer: a `message` with one content block. Anthropic has no
/// `n`, so there is one choice.
pub(crate) fn body(req: &Request, reply: &Reply, id: u64) -> Value {
    let (content, stop_reason) = match reply.choices.first() {
        Some(choice) => (vec![block(choice)], stop_reason(choice.finish)),
        None => (Vec::new(), stop_reason(Finish::Stop)),
    };
    json!({
        "id": message_id(id),
        "type": "message",
        "role": "assistant",
        "model": req.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": reply.completion_tokens},
    })
}

fn block(choice: &Choice) -> Value {
    match &choice.output {
        Output::Text(text) => json!({"type": "text", "text": text}),
        Output::ToolCall(call) => json!({
            "type": "tool_use",
            "id": tool_use_id(call),
            "name": call.name,
            "input": call.arguments,
        }),
    }
}

/// The answer as Anthropic streams it: `message_start` (with the input
/// tokens), the block's `content_block_start`, a `ping`, its deltas (text,
/// or a tool call's input as JSON fragments), `content_block_stop`,
/// `message_delta` (stop reason and output tokens), `message_stop`.
pub(crate) fn events(req: &Request, reply: &Reply, id: u64) -> Vec<Event> {
    let start = json!({
        "type": "message_start",
        "message": {
            "id": message_id(id),
            "type": "message",
            "role": "assistant",
            "model": req.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": 1},
        },
    });
    let mut events = vec![Event::framing(sse_named("message_start", &start))];
    let mut finish = Finish::Stop;
    if let Some(choice) = reply.choices.first() {
        finish = choice.finish;
        events.extend(block_events(choice));
    }
    let delta = json!({
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason(finish), "stop_sequence": null},
        "usage": {"output_tokens": reply.completion_tokens},
    });
    events.push(Event::framing(sse_named("message_delta", &delta)));
    events.push(Event::framing(sse_named(
        "message_stop",
        &json!({"type": "message_stop"}),
    )));
    events
}

/// One content block's events, from its start to its stop.
fn block_events(choice: &Choice) -> Vec<Event> {
    let (opening, pieces) = match &choice.output {
        Output::Text(text) => (json!({"type": "text", "text": ""}), stream::text_pieces(text)),
        Output::ToolCall(call) => (
            json!({"type": "tool_use", "id": tool_use_id(call), "name": call.name, "input": {}}),
            stream::split_even(&call.arguments_json(), stream::TEXT_CHUNKS),
        ),
    };
    let start = json!({"type": "content_block_start", "index": 0, "content_block": opening});
    let mut events = vec![
        Event::framing(sse_named("content_block_start", &start)),
        Event::framing(sse_named("ping", &json!({"type": "ping"}))),
    ];
    events.extend(pieces.iter().map(|piece| {
        let delta = match choice.output {
            Output::Text(_) => json!({"type": "text_delta", "text": piece}),
            Output::ToolCall(_) => json!({"type": "input_json_delta", "partial_json": piece}),
        };
        let data = json!({"type": "content_block_delta", "index": 0, "delta": delta});
        Event::content(sse_named("content_block_delta", &data))
    }));
    let stop = json!({"type": "content_block_stop", "index": 0});
    events.push(Event::framing(sse_named("content_block_stop", &stop)));
    events
}

fn stop_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::ToolCalls => "tool_use",
    }
}

fn message_id(id: u64) -> String {
    format!("msg_mock{id}")
}

fn tool_use_id(call: &ToolCall) -> String {
    format!("toolu_mock{}", call.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_tools_images_and_tool_results() {
        let req = parse(&json!({
            "model": "m",
            "max_tokens": 100,
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                    {"type": "text", "text": "weather?"}
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
                ]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]}
            ],
            "tools": [{"name": "get_weather", "description": "d", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "get_weather"},
            "stream": true
        }))
        .unwrap();
        assert_eq!(req.system.as_deref(), Some("Be brief."));
        assert_eq!((req.images, req.last_user.as_str()), (1, "sunny"));
        assert!(req.ends_with_tool_result);
        assert_eq!(req.tools[0].name, "get_weather");
        assert_eq!(req.tool_choice, ToolChoice::Named("get_weather".into()));
        assert_eq!(req.stream, Some(StreamMode::Sse { include_usage: false }));
        assert_eq!(tool_choice(Some(&json!({"type": "none"}))), ToolChoice::None);
        assert!(
            parse(&json!({"model": "m", "messages": []})).is_err(),
            "max_tokens is required"
        );
    }
}
