//! Gemini's generateContent: the request read into a [`Request`], the answer
//! as a `GenerateContentResponse` or a stream of them.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::answer::{Choice, Finish, Output, Reply};
use crate::request::{
    array_of, opt_u32, str_of, Content, JsonMode, Request, StreamMode, ToolChoice, ToolSpec, Transcript,
};
use crate::stream::{self, sse_data, Event};
use crate::Failure;

/// The most candidates the mock gives (Gemini allows 8).
const MAX_CANDIDATES: u32 = 8;

/// The model and streaming mode a `MODEL:ACTION` path segment names:
/// `generateContent` answers whole, `streamGenerateContent` streams, as SSE
/// with `alt=sse` and as a JSON array without it.
pub(crate) fn route(model_and_action: &str, query: Option<&str>) -> Result<(String, Option<StreamMode>), Failure> {
    match model_and_action.rsplit_once(':') {
        Some((model, "generateContent")) if !model.is_empty() => Ok((model.to_string(), None)),
        Some((model, "streamGenerateContent")) if !model.is_empty() => {
            let sse = query.is_some_and(|q| q.split('&').any(|kv| kv == "alt=sse"));
            let mode = if sse {
                StreamMode::Sse { include_usage: false }
            } else {
                StreamMode::JsonArray
            };
            Ok((model.to_string(), Some(mode)))
        }
        _ => Err(Failure::new(
            StatusCode::NOT_FOUND,
            format!(
                "mock: only MODEL:generateContent and MODEL:streamGenerateContent are served, not {model_and_action}"
            ),
        )),
    }
}

/// A field under its REST (camelCase) name or its proto (snake_case) one;
/// Gemini accepts both.
fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake)).filter(|f| !f.is_null())
}

/// Reads a generateContent request for `model`, streamed as `stream` says.
pub(crate) fn parse(v: &Value, model: String, stream: Option<StreamMode>) -> Result<Request, Failure> {
    let contents = v
        .get("contents")
        .and_then(Value::as_array)
        .ok_or_else(|| Failure::bad_request("contents: an array is required"))?;
    let mut transcript = Transcript::default();
    if let Some(system) = field(v, "systemInstruction", "system_instruction") {
        transcript.system(Content::from_parts(array_of(system, "parts")));
    }
    for c in contents {
        // The role is optional in the real API, where it defaults to `user`.
        let role = c.get("role").and_then(Value::as_str).unwrap_or("user");
        transcript.message(role, Content::from_parts(array_of(c, "parts")));
    }
    let mut req = transcript.into_request(model);
    let config = field(v, "generationConfig", "generation_config").unwrap_or(&Value::Null);
    req.max_tokens = opt_u32(config, "maxOutputTokens").or_else(|| opt_u32(config, "max_output_tokens"));
    req.choices = opt_u32(config, "candidateCount")
        .or_else(|| opt_u32(config, "candidate_count"))
        .unwrap_or(1)
        .clamp(1, MAX_CANDIDATES);
    req.json = json_mode(config);
    req.tools = tools(v);
    req.tool_choice = tool_choice(v);
    req.stream = stream;
    Ok(req)
}

/// `responseMimeType: "application/json"`, with `responseSchema` (OpenAPI
/// style, types in capitals) or `responseJsonSchema`.
fn json_mode(config: &Value) -> JsonMode {
    let mime = field(config, "responseMimeType", "response_mime_type").and_then(Value::as_str);
    if mime != Some("application/json") {
        return JsonMode::Off;
    }
    let schema = field(config, "responseSchema", "response_schema")
        .or_else(|| field(config, "responseJsonSchema", "response_json_schema"));
    match schema {
        Some(schema) => JsonMode::Schema(schema.clone()),
        None => JsonMode::Object,
    }
}

/// `tools: [{"functionDeclarations": [{"name", "parameters"}]}]`.
fn tools(v: &Value) -> Vec<ToolSpec> {
    array_of(v, "tools")
        .iter()
        .filter_map(|t| field(t, "functionDeclarations", "function_declarations"))
        .filter_map(Value::as_array)
        .flatten()
        .map(|f| ToolSpec {
            name: str_of(f, "name").to_string(),
            parameters: field(f, "parameters", "parameters")
                .or_else(|| field(f, "parametersJsonSchema", "parameters_json_schema"))
                .cloned()
                .unwrap_or(Value::Null),
        })
        .collect()
}

/// `toolConfig.functionCallingConfig`: mode `NONE`, or `ANY` limited to
/// `allowedFunctionNames` (the first is the one called).
fn tool_choice(v: &Value) -> ToolChoice {
    let config = field(v, "toolConfig", "tool_config")
        .and_then(|t| field(t, "functionCallingConfig", "function_calling_config"))
        .unwrap_or(&Value::Null);
    let allowed = field(config, "allowedFunctionNames", "allowed_function_names")
        .and_then(Value::as_array)
        .and_then(|names| names.first())
        .and_then(Value::as_str);
    match (str_of(config, "mode"), allowed) {
        ("NONE", _) => ToolChoice::None,
        (_, Some(name)) => ToolChoice::Named(name.to_string()),
        _ => ToolChoice::Auto,
    }
}

/// The whole answer: one candidate per choice.
pub(crate) fn body(req: &Request, reply: &Reply, id: u64) -> Value {
    let candidates: Vec<Value> = reply
        .choices
        .iter()
        .enumerate()
        .map(|(index, choice)| candidate(index, part(choice, None), Some(choice.finish)))
        .collect();
    response(req, candidates, Some(reply), id)
}

/// A `GenerateContentResponse`; usage only where given (the last event of
/// a stream).
fn response(req: &Request, candidates: Vec<Value>, usage: Option<&Reply>, id: u64) -> Value {
    let mut response = json!({
        "candidates": candidates,
        "modelVersion": req.model,
        "responseId": format!("mock{id}"),
    });
    if let Some(reply) = usage {
        response["usageMetadata"] = json!({
            "promptTokenCount": reply.prompt_tokens,
            "candidatesTokenCount": reply.completion_tokens,
            "totalTokenCount": reply.prompt_tokens + reply.completion_tokens,
        });
    }
    response
}

fn candidate(index: usize, part: Value, finish: Option<Finish>) -> Value {
    let mut candidate = json!({"content": {"role": "model", "parts": [part]}, "index": index});
    if let Some(finish) = finish {
        candidate["finishReason"] = json!(finish_reason(finish));
    }
    candidate
}

/// A choice's part: its text (or `piece` of it), or its function call
/// (which Gemini never splits).
fn part(choice: &Choice, piece: Option<&str>) -> Value {
    match &choice.output {
        Output::Text(text) => json!({ "text": piece.unwrap_or(text) }),
        Output::ToolCall(call) => json!({"functionCall": {"name": call.name, "args": call.arguments}}),
    }
}

/// The answer as Gemini streams it: responses each carrying every
/// candidate's next piece of text (a function call comes whole, in one), the
/// last with the finish reasons and the usage.
pub(crate) fn events(req: &Request, reply: &Reply, id: u64) -> Vec<Event> {
    let pieces: Vec<Vec<Option<String>>> = reply
        .choices
        .iter()
        .map(|choice| match &choice.output {
            Output::Text(text) => stream::text_pieces(text).into_iter().map(Some).collect(),
            Output::ToolCall(_) => vec![None],
        })
        .collect();
    let rounds = pieces.iter().map(Vec::len).max().unwrap_or(0);
    let responses = (0..rounds).map(|round| {
        let last = round + 1 == rounds;
        let candidates = reply
            .choices
            .iter()
            .zip(&pieces)
            .enumerate()
            .filter_map(|(index, (choice, pieces))| {
                let piece = pieces.get(round)?;
                let finish = (round + 1 == pieces.len()).then_some(choice.finish);
                Some(candidate(index, part(choice, piece.as_deref()), finish))
            })
            .collect();
        response(req, candidates, last.then_some(reply), id)
    });
    match req.stream {
        Some(StreamMode::JsonArray) => json_array(responses),
        _ => responses.map(|r| Event::content(sse_data(&r))).collect(),
    }
}

/// Responses as one JSON array, an element per event, as Gemini streams
/// without `alt=sse`.
fn json_array(responses: impl Iterator<Item = Value>) -> Vec<Event> {
    let mut events: Vec<Event> = responses
        .enumerate()
        .map(|(i, r)| Event::content(format!("{}{r}", if i == 0 { "[" } else { ",\r\n" })))
        .collect();
    events.push(Event::framing(if events.is_empty() { "[]" } else { "]" }));
    events
}

fn finish_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Length => "MAX_TOKENS",
        Finish::Stop | Finish::ToolCalls => "STOP",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_names_the_model_and_the_stream() {
        assert_eq!(route("m:generateContent", None).unwrap(), ("m".into(), None));
        assert_eq!(
            route("m:streamGenerateContent", Some("alt=sse")).unwrap(),
            ("m".into(), Some(StreamMode::Sse { include_usage: false }))
        );
        assert_eq!(
            route("m:streamGenerateContent", Some("key=k")).unwrap(),
            ("m".into(), Some(StreamMode::JsonArray))
        );
        assert_eq!(route("m:countTokens", None).unwrap_err().status, StatusCode::NOT_FOUND);
        assert!(route(":generateContent", None).is_err());
    }

    #[test]
    fn parse_reads_the_surface() {
        let req = parse(
            &json!({
                "contents": [
                    {"role": "user", "parts": [
                        {"text": "describe"},
                        {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
                        {"fileData": {"mimeType": "image/png", "fileUri": "gs://b/a.png"}}
                    ]},
                    {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
                    {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"ok": true}}}]}
                ],
                "systemInstruction": {"parts": [{"text": "Be brief."}]},
                "generationConfig": {
                    "candidateCount": 2,
                    "responseMimeType": "application/json",
                    "responseSchema": {"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}}, "required": ["n"]}
                },
                "tools": [{"functionDeclarations": [{"name": "f", "parameters": {"type": "OBJECT"}}]}],
                "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}}
            }),
            "m".into(),
            None,
        )
        .unwrap();
        assert_eq!((req.images, req.last_user.as_str()), (2, r#"{"ok":true}"#));
        assert!(req.ends_with_tool_result);
        assert_eq!(req.system.as_deref(), Some("Be brief."));
        assert_eq!(req.choices, 2);
        assert!(matches!(req.json, JsonMode::Schema(_)));
        assert_eq!(req.tools[0].name, "f");
        assert_eq!(req.tool_choice, ToolChoice::Named("f".into()));
        assert_eq!(
            tool_choice(&json!({"toolConfig": {"functionCallingConfig": {"mode": "NONE"}}})),
            ToolChoice::None
        );
    }
}
