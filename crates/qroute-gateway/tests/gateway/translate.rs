//! The Anthropic and Gemini adapters' translation against the mock
//! upstream, over real HTTP: tool turns, images, JSON mode, several
//! candidates, and real streams reassembled into the whole answer.

use std::time::Duration;

use futures_util::StreamExt;
use qroute_gateway::exec::providers::chat::{FunctionSpec, ImageUrl, JsonSchema, Stop};
use qroute_gateway::exec::providers::{
    http_client, Anthropic, Assembler, ChatMessage, ChatRequest, Completion, Content, Delta, DeltaStream, ErrorKind,
    Gemini, Params, Part, ProviderError, ResponseFormat, Tool,
};
use qroute_mock::{spawn, MockConfig, MockServer};
use serde_json::{json, Value};

/// The two translating adapters, pointed at one mock.
struct Adapters {
    anthropic: Anthropic,
    gemini: Gemini,
}

async fn mock_with(chunk_delay_ms: u64) -> (MockServer, Adapters) {
    let server = spawn(MockConfig {
        chunk_delay_ms,
        ..MockConfig::default()
    })
    .await
    .expect("mock starts");
    let client = http_client(Duration::from_secs(2)).unwrap();
    let url = server.url();
    let adapters = Adapters {
        anthropic: Anthropic::new(client.clone(), url.clone(), Some("ak-test".into())),
        gemini: Gemini::new(client, url, Some("gk-test".into())),
    };
    (server, adapters)
}

async fn mock() -> (MockServer, Adapters) {
    mock_with(0).await
}

impl Adapters {
    async fn complete(&self, format: &str, model: &str, req: &ChatRequest) -> Result<Completion, ProviderError> {
        match format {
            "anthropic" => self.anthropic.complete(model, req).await,
            _ => self.gemini.complete(model, req).await,
        }
    }

    async fn stream(&self, format: &str, model: &str, req: &ChatRequest) -> Result<DeltaStream, ProviderError> {
        match format {
            "anthropic" => self.anthropic.stream(model, req).await,
            _ => self.gemini.stream(model, req).await,
        }
    }

    /// The stream read to its end: every delta, and the answer they make.
    async fn streamed(&self, format: &str, model: &str, req: &ChatRequest) -> (Vec<Delta>, Completion) {
        let mut s = self
            .stream(format, model, req)
            .await
            .unwrap_or_else(|e| panic!("{format}: {e}"));
        let mut deltas = Vec::new();
        let mut a = Assembler::default();
        while let Some(d) = s.next().await {
            let d = d.unwrap_or_else(|e| panic!("{format}: {e}"));
            a.push(&d);
            deltas.push(d);
        }
        assert!(a.finished(), "{format}: the stream never finished");
        assert!(a.usage().is_some(), "{format}: no usage");
        (deltas, a.completion(0))
    }
}

const FORMATS: [&str; 2] = ["anthropic", "gemini"];

fn weather_tool() -> Tool {
    Tool {
        kind: "function".into(),
        function: FunctionSpec {
            name: "get_weather".into(),
            description: Some("The weather in a city".into()),
            parameters: Some(json!({
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city", "days"],
                "additionalProperties": false
            })),
            strict: Some(true),
        },
    }
}

fn other_tool() -> Tool {
    Tool {
        kind: "function".into(),
        function: FunctionSpec {
            name: "now".into(),
            description: None,
            parameters: None,
            strict: None,
        },
    }
}

fn image(url: &str) -> Part {
    Part::ImageUrl {
        image_url: ImageUrl {
            url: url.into(),
            detail: None,
        },
    }
}

#[tokio::test]
async fn streams_reassemble_to_the_whole_answer() {
    let (server, adapters) = mock().await;
    let req = ChatRequest {
        messages: vec![
            ChatMessage::text("system", "Be brief."),
            ChatMessage::text("user", "What is the capital of France?"),
        ],
        ..ChatRequest::default()
    };
    for format in FORMATS {
        let whole = adapters.complete(format, "m-ok", &req).await.unwrap();
        assert_eq!(
            whole.text, "mock answer from m-ok [system: Be brief.]: What is the capital of France?",
            "{format}"
        );
        let (deltas, streamed) = adapters.streamed(format, "m-ok", &req).await;
        assert_eq!(streamed, whole, "{format}");
        // The mock sends a text in 8 pieces: they came as 8 deltas.
        let pieces = deltas.iter().filter(|d| d.content.is_some()).count();
        assert_eq!(pieces, 8, "{format}: {deltas:?}");
        assert!(deltas.last().unwrap().usage.is_some(), "{format}: usage comes last");
    }
    assert_eq!(server.stats.streams_started("m-ok"), 2);
    assert_eq!(server.stats.streams_finished("m-ok"), 2);
    // The stream was asked for in each format's own way.
    assert_eq!(
        server.stats.last_request("m-ok").unwrap()["contents"][0]["role"],
        "user"
    );
}

#[tokio::test]
async fn deltas_arrive_while_the_upstream_is_still_generating() {
    let (server, adapters) = mock_with(100).await;
    let req = ChatRequest::user("hi");
    for format in FORMATS {
        let model = format!("m-paced-{format}");
        let mut s = adapters.stream(format, &model, &req).await.unwrap();
        loop {
            let d = s.next().await.unwrap().unwrap();
            if d.content.is_some() {
                break;
            }
        }
        // Seven more pieces, 100 ms apart, are still to come.
        assert_eq!(server.stats.streams_finished(&model), 0, "{format}");
        while let Some(d) = s.next().await {
            d.unwrap();
        }
        assert_eq!(server.stats.streams_finished(&model), 1, "{format}");
    }
}

#[tokio::test]
async fn tools_are_called_whole_and_streamed() {
    let (server, adapters) = mock().await;
    let req = ChatRequest {
        messages: vec![ChatMessage::text("user", "weather in Paris?")],
        params: Params {
            tools: vec![other_tool(), weather_tool()],
            tool_choice: Some(json!({"type": "function", "function": {"name": "get_weather"}})),
            ..Params::default()
        },
    };
    for format in FORMATS {
        let model = format!("m-tools-{format}");
        for (how, c) in [
            ("whole", adapters.complete(format, &model, &req).await.unwrap()),
            ("streamed", adapters.streamed(format, &model, &req).await.1),
        ] {
            assert_eq!(c.finish_reason, "tool_calls", "{format} {how}");
            assert_eq!(c.tool_calls.len(), 1, "{format} {how}: {c:?}");
            let call = &c.tool_calls[0];
            assert!(!call.id.is_empty(), "{format} {how}");
            assert_eq!(call.kind, "function");
            assert_eq!(call.function.name, "get_weather", "{format} {how}");
            let args: Value = serde_json::from_str(&call.function.arguments).unwrap();
            assert_eq!(args, json!({"city": "mock", "days": 1}), "{format} {how}");
        }
    }
    let sent = server.stats.last_request("m-tools-anthropic").unwrap();
    assert_eq!(sent["tool_choice"], json!({"type": "tool", "name": "get_weather"}));
    assert_eq!(sent["tools"][1]["input_schema"]["required"], json!(["city", "days"]));
    assert_eq!(sent["stream"], true);
    let sent = server.stats.last_request("m-tools-gemini").unwrap();
    assert_eq!(
        sent["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
    );
    let declared = &sent["tools"][0]["functionDeclarations"];
    assert_eq!(declared[0], json!({"name": "now"}));
    assert!(
        declared[1]["parameters"].get("additionalProperties").is_none(),
        "{declared}"
    );
    assert!(declared[1]["parameters"].get("$schema").is_none(), "{declared}");
}

#[tokio::test]
async fn a_tool_result_comes_back_as_the_formats_tool_turn() {
    let (server, adapters) = mock().await;
    for format in FORMATS {
        let model = format!("m-turn-{format}");
        let mut req = ChatRequest {
            messages: vec![ChatMessage::text("user", "weather in Paris?")],
            params: Params {
                tools: vec![weather_tool()],
                ..Params::default()
            },
        };
        let first = adapters.complete(format, &model, &req).await.unwrap();
        assert_eq!(first.finish_reason, "tool_calls", "{format}");
        // The conversation goes on as an OpenAI client sends it.
        req.messages.push(ChatMessage {
            tool_calls: first.tool_calls.clone(),
            content: Content::Null,
            ..ChatMessage::text("assistant", "")
        });
        req.messages.push(ChatMessage {
            tool_call_id: Some(first.tool_calls[0].id.clone()),
            ..ChatMessage::text("tool", "sunny")
        });
        let answer = adapters.complete(format, &model, &req).await.unwrap();
        assert_eq!(answer.finish_reason, "stop", "{format}");
        let said = if format == "anthropic" {
            "sunny"
        } else {
            r#"{"content":"sunny"}"#
        };
        assert_eq!(answer.text, format!("mock answer from {model}: {said}"), "{format}");
    }
    let sent = server.stats.last_request("m-turn-anthropic").unwrap();
    assert_eq!(sent["messages"][1]["content"][0]["type"], "tool_use");
    assert_eq!(sent["messages"][2]["content"][0]["type"], "tool_result");
    let sent = server.stats.last_request("m-turn-gemini").unwrap();
    assert_eq!(
        sent["contents"][2]["parts"][0]["functionResponse"],
        json!({"name": "get_weather", "response": {"content": "sunny"}})
    );
}

#[tokio::test]
async fn images_reach_the_model_inline_or_by_url() {
    let (server, adapters) = mock().await;
    let req = ChatRequest {
        messages: vec![ChatMessage {
            content: Content::Parts(vec![
                Part::Text {
                    text: "what is this?".into(),
                },
                image("data:image/png;base64,iVBORw0KGgo="),
                image("https://example.com/cat.png"),
            ]),
            ..ChatMessage::text("user", "")
        }],
        ..ChatRequest::default()
    };
    for format in FORMATS {
        let model = format!("m-vision-{format}");
        let c = adapters.complete(format, &model, &req).await.unwrap();
        assert_eq!(
            c.text,
            format!("mock answer from {model} [2 images]: what is this?"),
            "{format}"
        );
    }
    let sent = server.stats.last_request("m-vision-anthropic").unwrap();
    assert_eq!(
        sent["messages"][0]["content"][1]["source"],
        json!({"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="})
    );
    assert_eq!(
        sent["messages"][0]["content"][2]["source"],
        json!({"type": "url", "url": "https://example.com/cat.png"})
    );
    let sent = server.stats.last_request("m-vision-gemini").unwrap();
    assert_eq!(
        sent["contents"][0]["parts"][2],
        json!({"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/cat.png"}})
    );
}

#[tokio::test]
async fn gemini_answers_json_to_a_cleaned_schema_and_several_candidates() {
    let (server, adapters) = mock().await;
    let req = ChatRequest {
        params: Params {
            response_format: Some(ResponseFormat::JsonSchema {
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
            }),
            n: Some(2),
            ..Params::default()
        },
        ..ChatRequest::user("who?")
    };
    for (how, c) in [
        ("whole", adapters.gemini.complete("m-json", &req).await.unwrap()),
        ("streamed", adapters.streamed("gemini", "m-json", &req).await.1),
    ] {
        let choices = c.choices();
        assert_eq!(choices.len(), 2, "{how}");
        for choice in &choices {
            let v: Value = serde_json::from_str(&choice.text).unwrap_or_else(|e| panic!("{how}: {e}: {}", choice.text));
            assert_eq!((&v["name"], &v["age"]), (&json!("mock"), &json!(1)), "{how}");
            assert_eq!(choice.finish_reason, "stop", "{how}");
        }
        assert!(choices[1].text.contains("(choice 1)"), "{how}: {}", choices[1].text);
    }
    let sent = server.stats.last_request("m-json").unwrap();
    let config = &sent["generationConfig"];
    assert_eq!(config["responseMimeType"], "application/json");
    assert_eq!(config["candidateCount"], 2);
    assert!(
        config["responseSchema"].get("additionalProperties").is_none(),
        "{config}"
    );
}

#[tokio::test]
async fn parameters_reach_each_formats_fields() {
    let (server, adapters) = mock().await;
    let req = ChatRequest {
        params: Params {
            max_tokens: Some(100),
            temperature: Some(1.5),
            top_p: Some(0.5),
            stop: Some(Stop::Many(vec!["END".into(), "\n".into()])),
            seed: Some(7),
            presence_penalty: Some(0.5),
            user: Some("user-1".into()),
            ..Params::default()
        },
        ..ChatRequest::user("hi")
    };
    adapters.anthropic.complete("m-params-a", &req).await.unwrap();
    adapters.gemini.complete("m-params-g", &req).await.unwrap();
    let sent = server.stats.last_request("m-params-a").unwrap();
    assert_eq!(sent["max_tokens"], 100);
    assert_eq!(sent["temperature"], 1.0);
    assert_eq!(sent["stop_sequences"], json!(["END"]));
    assert_eq!(sent["metadata"], json!({"user_id": "user-1"}));
    let sent = server.stats.last_request("m-params-g").unwrap();
    assert_eq!(
        sent["generationConfig"],
        json!({"maxOutputTokens": 100, "temperature": 1.5, "topP": 0.5, "stopSequences": ["END", "\n"],
               "seed": 7, "presencePenalty": 0.5})
    );
}

#[tokio::test]
async fn a_broken_stream_ends_with_one_error() {
    let (_server, adapters) = mock().await;
    let req = ChatRequest::user("hi");
    for format in FORMATS {
        let mut s = adapters.stream(format, "m-break", &req).await.unwrap();
        let mut pieces = 0;
        let mut error = None;
        while let Some(d) = s.next().await {
            match d {
                Ok(d) => pieces += usize::from(d.content.is_some()),
                Err(e) => {
                    assert!(error.is_none(), "{format}: a second error");
                    error = Some(e);
                }
            }
        }
        assert_eq!(pieces, 3, "{format}");
        let e = error.unwrap_or_else(|| panic!("{format}: the break went unnoticed"));
        // The break is the upstream plumbing's to classify (hyper reports
        // the body cut short); it is one error, in the provider's name.
        assert!(
            matches!(e.kind, ErrorKind::Connect | ErrorKind::Decode),
            "{format}: {e:?}"
        );
        assert!(e.message.contains(format), "{format}: {e}");
    }
}

#[tokio::test]
async fn a_stream_refused_upfront_is_the_upstreams_status() {
    let (_server, adapters) = mock().await;
    let req = ChatRequest::user("hi");
    for format in FORMATS {
        let e = match adapters.stream(format, "m-ratelimit", &req).await {
            Ok(_) => panic!("{format}: a stream"),
            Err(e) => e,
        };
        assert_eq!(e.kind, ErrorKind::Status(429), "{format}");
        assert!(!e.message.contains("ak-test") && !e.message.contains("gk-test"), "{e}");
    }
}
