//! What the mock answers, whatever the wire format: the wait and the fault
//! a model name asks for, then the echo, tool call or JSON that the request
//! calls for.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::{Map, Value};

use crate::request::{JsonMode, Request, ToolChoice, ToolSpec};
use crate::{contains_ci, keyword_number, Failure, Shared};

/// Characters per token, for the token counts the mock reports.
const CHARS_PER_TOKEN: usize = 4;

/// Characters of the last user message (and of the system prompt) echoed in
/// an answer.
const ECHO_CHARS: usize = 60;

/// Prompt tokens an image counts for (OpenAI's price of a low-detail image).
const IMAGE_TOKENS: u64 = 85;

/// What a model named `…refuse…` answers.
const REFUSAL: &str = "I'm sorry, but I cannot help with that.";

/// The short string the mock fills a required string property with.
const SAMPLE_STRING: &str = "mock";

/// Where a request came in, for a model that quotes it back (`echo-auth`).
pub(crate) struct Received<'a> {
    headers: &'a HeaderMap,
    uri: &'a Uri,
}

impl<'a> Received<'a> {
    pub fn new(headers: &'a HeaderMap, uri: &'a Uri) -> Received<'a> {
        Received { headers, uri }
    }
}

/// The answer to a request that did not fail.
#[derive(Debug)]
pub(crate) struct Reply {
    /// One per choice the request asked for, in index order.
    pub choices: Vec<Choice>,
    pub prompt_tokens: u64,
    /// Every choice's tokens together.
    pub completion_tokens: u64,
}

#[derive(Debug)]
pub(crate) struct Choice {
    pub output: Output,
    pub finish: Finish,
}

#[derive(Debug)]
pub(crate) enum Output {
    Text(String),
    ToolCall(ToolCall),
}

/// A call of one of the request's tools.
#[derive(Debug)]
pub(crate) struct ToolCall {
    /// Unique within the mock; each format prefixes it its own way.
    pub id: u64,
    pub name: String,
    /// A JSON object.
    pub arguments: Value,
}

impl ToolCall {
    /// The arguments as OpenAI and Anthropic's stream carry them: JSON text.
    pub fn arguments_json(&self) -> String {
        self.arguments.to_string()
    }
}

/// Why a choice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    Stop,
    /// Cut at `max_tokens`.
    Length,
    ToolCalls,
}

/// Waits as the model name asks, injects its fault, and otherwise composes
/// the answer. `call` is the model's call count including this one.
pub(crate) async fn answer(
    shared: &Shared,
    req: &Request,
    call: u64,
    received: &Received<'_>,
) -> Result<Reply, Failure> {
    wait(shared, &req.model).await;
    fault(req, call, received)?;
    Ok(compose(shared, req))
}

/// Sleeps the latency the model name asks for, or the sampled one.
async fn wait(shared: &Shared, model: &str) {
    let delay_ms = if contains_ci(model, "timeout") {
        shared.cfg.hang_ms as f64
    } else if contains_ci(model, "slow") {
        shared.cfg.slow_ms as f64
    } else if let Some(ms) = keyword_number(model, "delay") {
        ms as f64
    } else {
        shared.sample_latency_ms()
    };
    if delay_ms > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(delay_ms / 1000.0)).await;
    }
}

/// The failure the model name (or a request the mock cannot honour) calls
/// for, if any.
fn fault(req: &Request, call: u64, received: &Received<'_>) -> Result<(), Failure> {
    let model = req.model.as_str();
    if contains_ci(model, "echo-auth") {
        return Err(echo_auth(received));
    }
    if contains_ci(model, "error") {
        return Err(Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("mock: model {model} always fails"),
        ));
    }
    if contains_ci(model, "break") && req.stream.is_none() {
        return Err(Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("mock: model {model} breaks (mid-stream when streamed)"),
        ));
    }
    if contains_ci(model, "reject") {
        return Err(Failure::bad_request(format!(
            "mock: model {model} rejects every request"
        )));
    }
    if contains_ci(model, "ratelimit") {
        return Err(Failure::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("mock: model {model} is rate limited"),
        ));
    }
    if contains_ci(model, "notools") && !req.tools.is_empty() {
        return Err(Failure::bad_request("tools are not supported by this model"));
    }
    if contains_ci(model, "flaky") && call % 2 == 1 {
        return Err(Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("mock: model {model} failed call {call}, the next one will succeed"),
        ));
    }
    if let ToolChoice::Named(name) = &req.tool_choice {
        if !req.tools.iter().any(|t| &t.name == name) {
            return Err(Failure::bad_request(format!(
                "tool_choice names {name}, which is not among the request's tools"
            )));
        }
    }
    Ok(())
}

/// A 401 whose message quotes the credentials the request carried, bare
/// and in header form, and the URL it was sent to with the key in its query
/// string, the way some proxies and misconfigured servers do.
fn echo_auth(received: &Received<'_>) -> Failure {
    let header = |name: &str| {
        received
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let authorization = header("authorization");
    let api_key = header("x-api-key");
    let goog_key = header("x-goog-api-key");
    let key = authorization
        .as_deref()
        .map(|a| a.strip_prefix("Bearer ").unwrap_or(a).to_string())
        .or_else(|| api_key.clone())
        .or_else(|| goog_key.clone())
        .unwrap_or_default();
    let host = header("host").unwrap_or_default();
    let shown = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
    Failure::new(
        StatusCode::UNAUTHORIZED,
        format!(
            "Incorrect API key provided: {key}. Received Authorization: {}, x-api-key: {}, x-goog-api-key: {} \
             for http://{host}{}?key={key} (upstream {host})",
            shown(&authorization),
            shown(&api_key),
            shown(&goog_key),
            received.uri.path(),
        ),
    )
}

/// The answer the request calls for: a tool call per choice when it offers
/// tools, text (or JSON text) otherwise.
fn compose(shared: &Shared, req: &Request) -> Reply {
    let tool = chosen_tool(req);
    let choices: Vec<Choice> = (0..req.choices.max(1))
        .map(|i| match tool {
            Some(tool) => Choice {
                output: Output::ToolCall(ToolCall {
                    id: shared.next_id(),
                    name: tool.name.clone(),
                    arguments: sample_object(&tool.parameters),
                }),
                finish: Finish::ToolCalls,
            },
            None => text_choice(req, i),
        })
        .collect();
    let completion_tokens = choices.iter().map(|c| output_tokens(req, c)).sum();
    Reply {
        choices,
        prompt_tokens: tokens(req.total_chars).max(1) + req.images as u64 * IMAGE_TOKENS,
        completion_tokens,
    }
}

/// The tool the answer calls: none when the request offers none, forbids
/// calls, or already brings a tool's result back (so a tool loop ends).
fn chosen_tool(req: &Request) -> Option<&ToolSpec> {
    if req.ends_with_tool_result {
        return None;
    }
    match &req.tool_choice {
        ToolChoice::None => None,
        ToolChoice::Auto => req.tools.first(),
        ToolChoice::Named(name) => req.tools.iter().find(|t| &t.name == name),
    }
}

/// Choice `index`'s text: the echo (or a judge's score), made JSON if the
/// request wants JSON, cut at `max_tokens`.
fn text_choice(req: &Request, index: u32) -> Choice {
    let mut said = match keyword_number(&req.model, "score") {
        // An LLM judge's verdict, for testing judges over HTTP.
        Some(score) => format!("Score: {score}"),
        // A model that declines, for testing what judges answers.
        None if contains_ci(&req.model, "refuse") => REFUSAL.to_string(),
        None => echo(req),
    };
    if index > 0 {
        said.push_str(&format!(" (choice {index})"));
    }
    let text = match &req.json {
        JsonMode::Off => said,
        JsonMode::Object => Value::Object(Map::from_iter([("answer".to_string(), Value::String(said))])).to_string(),
        JsonMode::Schema(schema) => json_for_schema(schema, said).to_string(),
    };
    match truncate(text, req.max_tokens) {
        (text, true) => Choice {
            output: Output::Text(text),
            finish: Finish::Length,
        },
        (text, false) => Choice {
            output: Output::Text(text),
            finish: Finish::Stop,
        },
    }
}

/// The normal answer: the model's name, then the start of the system
/// prompt, the images counted, and the start of the last user message.
fn echo(req: &Request) -> String {
    let mut text = format!("mock answer from {}", req.model);
    if let Some(system) = &req.system {
        text.push_str(" [system: ");
        text.extend(system.chars().take(ECHO_CHARS));
        text.push(']');
    }
    match req.images {
        0 => {}
        1 => text.push_str(" [1 image]"),
        n => text.push_str(&format!(" [{n} images]")),
    }
    text.push_str(": ");
    text.extend(req.last_user.chars().take(ECHO_CHARS));
    text
}

/// A JSON-mode answer: the schema's required properties, and `answer` (the
/// echo) where the schema has or allows such a property.
fn json_for_schema(schema: &Value, said: String) -> Value {
    let mut object = sample_object(schema);
    let answer_declared = schema.pointer("/properties/answer").is_some();
    let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
    if let Value::Object(map) = &mut object {
        if !closed || answer_declared {
            map.insert("answer".to_string(), Value::String(said));
        }
    }
    object
}

/// An object with a sample value for each required property of an object
/// schema (an empty object for any other schema).
pub(crate) fn sample_object(schema: &Value) -> Value {
    let properties = schema.get("properties");
    let required = schema.get("required").and_then(Value::as_array);
    let map = required
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|name| {
            let property = properties.and_then(|p| p.get(name)).unwrap_or(&Value::Null);
            (name.to_string(), sample_value(property))
        })
        .collect();
    Value::Object(map)
}

/// A value of the schema's type: a short string, 1, true, an object of its
/// required properties, an empty array, or null when the type is unknown.
/// An `enum` or `const` gives its (first) value.
fn sample_value(schema: &Value) -> Value {
    if let Some(v) = schema.get("const") {
        return v.clone();
    }
    if let Some(first) = schema.get("enum").and_then(Value::as_array).and_then(|e| e.first()) {
        return first.clone();
    }
    match schema_type(schema).to_ascii_lowercase().as_str() {
        "string" => Value::String(SAMPLE_STRING.to_string()),
        "number" | "integer" => Value::from(1),
        "boolean" => Value::Bool(true),
        "object" => sample_object(schema),
        "array" => Value::Array(Vec::new()),
        _ => Value::Null,
    }
}

/// A schema's type, the first non-null one of a list (`["string", "null"]`).
fn schema_type(schema: &Value) -> &str {
    match schema.get("type") {
        Some(Value::String(t)) => t,
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| !t.eq_ignore_ascii_case("null"))
            .unwrap_or(""),
        _ => "",
    }
}

/// The text cut to `max_tokens` (at [`CHARS_PER_TOKEN`]), and whether it
/// was.
fn truncate(text: String, max_tokens: Option<u32>) -> (String, bool) {
    match max_tokens {
        Some(max) if tokens(text.chars().count()) > u64::from(max) => {
            let keep = max as usize * CHARS_PER_TOKEN;
            (text.chars().take(keep).collect(), true)
        }
        _ => (text, false),
    }
}

/// The tokens a choice counts for; a cut text counts exactly `max_tokens`.
fn output_tokens(req: &Request, choice: &Choice) -> u64 {
    match (&choice.output, choice.finish) {
        (Output::Text(_), Finish::Length) => req.max_tokens.map(u64::from).unwrap_or(0),
        (Output::Text(text), _) => tokens(text.chars().count()),
        (Output::ToolCall(call), _) => tokens(call.name.chars().count() + call.arguments_json().chars().count()),
    }
}

pub(crate) fn tokens(chars: usize) -> u64 {
    chars.div_ceil(CHARS_PER_TOKEN) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MockConfig;
    use serde_json::json;
    use std::sync::Arc;

    fn request(model: &str, last_user: &str) -> Request {
        Request {
            model: model.into(),
            last_user: last_user.into(),
            total_chars: last_user.len(),
            choices: 1,
            ..Request::default()
        }
    }

    fn shared() -> Shared {
        Shared::new(MockConfig::default(), Arc::default())
    }

    fn text(choice: &Choice) -> &str {
        match &choice.output {
            Output::Text(t) => t,
            Output::ToolCall(c) => panic!("a tool call: {c:?}"),
        }
    }

    #[test]
    fn delay_keyword_reads_the_digits_after_delay() {
        assert_eq!(keyword_number("m-delay50", "delay"), Some(50));
        assert_eq!(keyword_number("m-DELAY7-x", "delay"), Some(7));
        assert_eq!(keyword_number("m-delay", "delay"), None);
        assert_eq!(keyword_number("plain", "delay"), None);
    }

    #[test]
    fn echo_auth_quotes_the_credentials_and_the_url() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer sk-echo-123456789".parse().unwrap());
        headers.insert("host", "127.0.0.1:4321".parse().unwrap());
        let uri: Uri = "/v1/chat/completions".parse().unwrap();
        let f = echo_auth(&Received::new(&headers, &uri));
        assert_eq!(f.status, StatusCode::UNAUTHORIZED);
        assert!(f.message.contains("provided: sk-echo-123456789."), "{}", f.message);
        assert!(
            f.message.contains("Authorization: Bearer sk-echo-123456789,"),
            "{}",
            f.message
        );
        assert!(f.message.contains("x-api-key: (none)"), "{}", f.message);
        assert!(
            f.message
                .contains("http://127.0.0.1:4321/v1/chat/completions?key=sk-echo-123456789"),
            "{}",
            f.message
        );

        let mut headers = HeaderMap::new();
        headers.insert("x-goog-api-key", "AIza-echo".parse().unwrap());
        let f = echo_auth(&Received::new(&headers, &uri));
        assert!(f.message.contains("provided: AIza-echo."), "{}", f.message);
        assert!(f.message.contains("x-goog-api-key: AIza-echo "), "{}", f.message);
    }

    #[test]
    fn tool_call_arguments_carry_each_required_property() {
        let mut req = request("m", "weather?");
        req.tools = vec![
            ToolSpec {
                name: "first".into(),
                parameters: Value::Null,
            },
            ToolSpec {
                name: "get_weather".into(),
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "city": {"type": "string"},
                        "days": {"type": "integer"},
                        "metric": {"type": "boolean"},
                        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                        "at": {"type": "object", "properties": {"lat": {"type": "number"}}, "required": ["lat"]},
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "note": {"type": ["string", "null"]},
                        "anything": {},
                        "optional": {"type": "string"}
                    },
                    "required": ["city", "days", "metric", "unit", "at", "tags", "note", "anything"]
                }),
            },
        ];
        req.tool_choice = ToolChoice::Named("get_weather".into());
        let reply = compose(&shared(), &req);
        let Output::ToolCall(call) = &reply.choices[0].output else {
            panic!("{reply:?}")
        };
        assert_eq!(call.name, "get_weather");
        assert_eq!(reply.choices[0].finish, Finish::ToolCalls);
        assert_eq!(
            call.arguments,
            json!({"city": "mock", "days": 1, "metric": true, "unit": "celsius",
                   "at": {"lat": 1}, "tags": [], "note": "mock", "anything": null})
        );

        // Auto picks the first tool; none and a returned result call none.
        req.tool_choice = ToolChoice::Auto;
        let Output::ToolCall(call) = &compose(&shared(), &req).choices[0].output else {
            panic!()
        };
        assert_eq!((call.name.as_str(), &call.arguments), ("first", &json!({})));
        req.tool_choice = ToolChoice::None;
        assert_eq!(
            text(&compose(&shared(), &req).choices[0]),
            "mock answer from m: weather?"
        );
        req.tool_choice = ToolChoice::Auto;
        req.ends_with_tool_result = true;
        assert_eq!(
            text(&compose(&shared(), &req).choices[0]),
            "mock answer from m: weather?"
        );
    }

    #[test]
    fn json_mode_answers_an_object_that_parses() {
        let mut req = request("m", "hi");
        req.json = JsonMode::Object;
        let v: Value = serde_json::from_str(text(&compose(&shared(), &req).choices[0])).unwrap();
        assert_eq!(v, json!({"answer": "mock answer from m: hi"}));

        req.json = JsonMode::Schema(json!({
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
            "additionalProperties": false
        }));
        let v: Value = serde_json::from_str(text(&compose(&shared(), &req).choices[0])).unwrap();
        assert_eq!(
            v,
            json!({"name": "mock", "age": 1}),
            "a closed schema gets no extra answer"
        );

        req.json = JsonMode::Schema(json!({"type": "object", "properties": {"answer": {"type": "string"}}}));
        let v: Value = serde_json::from_str(text(&compose(&shared(), &req).choices[0])).unwrap();
        assert_eq!(v, json!({"answer": "mock answer from m: hi"}));
    }

    #[test]
    fn n_choices_differ_and_all_count() {
        let mut req = request("m", "hi");
        let one = compose(&shared(), &req);
        req.choices = 3;
        let three = compose(&shared(), &req);
        let texts: Vec<&str> = three.choices.iter().map(text).collect();
        assert_eq!(
            texts,
            [
                "mock answer from m: hi",
                "mock answer from m: hi (choice 1)",
                "mock answer from m: hi (choice 2)"
            ]
        );
        let expected: u64 = texts.iter().map(|t| tokens(t.len())).sum();
        assert_eq!(three.completion_tokens, expected);
        assert_eq!(three.prompt_tokens, one.prompt_tokens);
    }

    #[test]
    fn images_are_counted_in_the_echo_and_the_prompt() {
        let mut req = request("m", "what is this?");
        req.images = 2;
        let reply = compose(&shared(), &req);
        assert_eq!(text(&reply.choices[0]), "mock answer from m [2 images]: what is this?");
        assert_eq!(reply.prompt_tokens, tokens(13) + 2 * IMAGE_TOKENS);
    }

    #[test]
    fn max_tokens_cuts_and_counts_exactly() {
        let mut req = request("m", "a long enough prompt");
        req.max_tokens = Some(3);
        let reply = compose(&shared(), &req);
        assert_eq!(text(&reply.choices[0]), "mock answer ");
        assert_eq!(reply.choices[0].finish, Finish::Length);
        assert_eq!(reply.completion_tokens, 3);
    }

    #[test]
    fn faults_follow_the_model_name() {
        let headers = HeaderMap::new();
        let uri: Uri = "/".parse().unwrap();
        let received = Received::new(&headers, &uri);
        let status = |req: &Request, call| fault(req, call, &received).err().map(|f| f.status.as_u16());
        assert_eq!(status(&request("m", ""), 1), None);
        assert_eq!(status(&request("m-break", ""), 1), Some(500));
        let mut streamed = request("m-break", "");
        streamed.stream = Some(crate::request::StreamMode::Sse { include_usage: false });
        assert_eq!(status(&streamed, 1), None, "a stream breaks later, mid-way");
        assert_eq!(status(&request("flaky", ""), 1), Some(503));
        assert_eq!(status(&request("flaky", ""), 2), None);
        let mut tools = request("m-notools", "");
        assert_eq!(status(&tools, 1), None, "no tools, nothing to refuse");
        tools.tools = vec![ToolSpec {
            name: "f".into(),
            parameters: Value::Null,
        }];
        assert_eq!(status(&tools, 1), Some(400));
        tools.model = "m".into();
        tools.tool_choice = ToolChoice::Named("g".into());
        assert_eq!(status(&tools, 1), Some(400), "an undeclared tool cannot be chosen");
    }
}
