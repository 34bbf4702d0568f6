//! The mock over real HTTP: streams in the three formats, their pacing and
//! breaking, and the OpenAI surface (tools, JSON mode, n, logprobs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use qroute_mock::{spawn, MockConfig, MockServer};
use serde_json::{json, Value};

async fn mock(chunk_delay_ms: u64) -> MockServer {
    spawn(MockConfig {
        chunk_delay_ms,
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

async fn post(server: &MockServer, path: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", server.url()))
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn post_json(server: &MockServer, path: &str, body: &Value) -> Value {
    let resp = post(server, path, body).await;
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.unwrap()
}

/// A stream's events: (event name, data), names empty where the format sends
/// none.
async fn sse(server: &MockServer, path: &str, body: &Value) -> Vec<(String, String)> {
    let resp = post(server, path, body).await;
    assert_eq!(resp.status(), 200, "{path}");
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    parse_sse(&resp.text().await.unwrap())
}

fn parse_sse(text: &str) -> Vec<(String, String)> {
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let mut name = String::new();
            let mut data = String::new();
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = d.to_string();
                }
            }
            (name, data)
        })
        .collect()
}

fn data(events: &[(String, String)]) -> Vec<Value> {
    events
        .iter()
        .filter(|(_, d)| d != "[DONE]")
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect()
}

fn openai_req(model: &str, extra: Value) -> Value {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "What is the capital of France?"}]});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    body
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "metric": {"type": "boolean"}},
            "required": ["city", "days", "metric"]
        }
    }}])
}

#[tokio::test]
async fn openai_streams_eight_chunks_that_reassemble_the_answer() {
    let server = mock(0).await;
    let whole = post_json(&server, "/v1/chat/completions", &openai_req("m", json!({}))).await;
    let expected = whole["choices"][0]["message"]["content"].as_str().unwrap();

    let events = sse(
        &server,
        "/v1/chat/completions",
        &openai_req("m", json!({"stream": true, "stream_options": {"include_usage": true}})),
    )
    .await;
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks = data(&events);
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let content: Vec<&str> = chunks[1..]
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(content.len() >= 8, "{content:?}");
    assert_eq!(content.concat(), expected);

    let n = chunks.len();
    assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[n - 1]["choices"], json!([]));
    assert_eq!(chunks[n - 1]["usage"], whole["usage"]);
    assert!(chunks[..n - 1].iter().all(|c| c["usage"].is_null()));
    assert_eq!(
        (server.stats.streams_started("m"), server.stats.streams_finished("m")),
        (1, 1)
    );

    // Without include_usage, no usage chunk.
    let chunks = data(
        &sse(
            &server,
            "/v1/chat/completions",
            &openai_req("m", json!({"stream": true})),
        )
        .await,
    );
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "stop");
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
}

#[tokio::test]
async fn anthropic_streams_the_messages_events() {
    let server = mock(0).await;
    let req = json!({"model": "m", "max_tokens": 100, "system": "Be brief.",
                     "messages": [{"role": "user", "content": "hello there"}]});
    let whole = post_json(&server, "/v1/messages", &req).await;
    let mut streamed = req.clone();
    streamed["stream"] = json!(true);
    let events = sse(&server, "/v1/messages", &streamed).await;

    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[..3], ["message_start", "content_block_start", "ping"]);
    assert_eq!(
        names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let values = data(&events);
    for ((name, _), v) in events.iter().zip(&values) {
        assert_eq!(&v["type"], name);
    }
    assert_eq!(
        values[0]["message"]["usage"]["input_tokens"],
        whole["usage"]["input_tokens"]
    );
    let text: Vec<&str> = values
        .iter()
        .filter(|v| v["type"] == "content_block_delta")
        .map(|v| v["delta"]["text"].as_str().unwrap())
        .collect();
    assert!(text.len() >= 8);
    assert_eq!(text.concat(), whole["content"][0]["text"].as_str().unwrap());
    let delta = &values[values.len() - 2];
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], whole["usage"]["output_tokens"]);
}

#[tokio::test]
async fn gemini_streams_responses_the_last_with_finish_and_usage() {
    let server = mock(0).await;
    let req = json!({"contents": [{"parts": [{"text": "hello"}]}], "generationConfig": {"candidateCount": 2}});
    let whole = post_json(&server, "/v1beta/models/m:generateContent", &req).await;
    let events = sse(&server, "/v1beta/models/m:streamGenerateContent?alt=sse", &req).await;
    let values = data(&events);
    assert!(values.len() >= 8);
    for index in 0..2 {
        let text: String = values
            .iter()
            .map(|v| v["candidates"][index]["content"]["parts"][0]["text"].as_str().unwrap())
            .collect();
        assert_eq!(
            text,
            whole["candidates"][index]["content"]["parts"][0]["text"]
                .as_str()
                .unwrap()
        );
    }
    let (last, rest) = values.split_last().unwrap();
    assert_eq!(last["candidates"][1]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"], whole["usageMetadata"]);
    assert!(rest.iter().all(|v| v.get("usageMetadata").is_none()));
    assert!(rest.iter().all(|v| v["candidates"][0].get("finishReason").is_none()));

    // Without alt=sse, the same responses as one JSON array.
    let array = post_json(&server, "/v1beta/models/m:streamGenerateContent", &req).await;
    assert_eq!(array.as_array().unwrap().len(), values.len());
}

#[tokio::test]
async fn a_paced_stream_is_seen_before_it_finishes() {
    let server = mock(50).await;
    let started = Instant::now();
    let mut resp = post(
        &server,
        "/v1/chat/completions",
        &openai_req("paced", json!({"stream": true})),
    )
    .await;
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    assert_eq!(server.stats.streams_started("paced"), 1);
    assert_eq!(
        server.stats.streams_finished("paced"),
        0,
        "the client saw a chunk before the end"
    );
    while resp.chunk().await.unwrap().is_some() {}
    assert!(
        started.elapsed() >= Duration::from_millis(7 * 50),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.stats.streams_finished("paced"), 1);

    let stats: Value = reqwest::get(format!("{}/mock/stats", server.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["calls"]["paced"], 1);
    assert_eq!(stats["streams_finished"]["paced"], 1);
}

#[tokio::test]
async fn delay_keyword_delays_the_first_chunk() {
    let server = mock(0).await;
    let started = Instant::now();
    let mut resp = post(
        &server,
        "/v1/chat/completions",
        &openai_req("m-delay150", json!({"stream": true})),
    )
    .await;
    resp.chunk().await.unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150));
}

/// What a stream sent before it broke off; panics if it finished instead.
async fn read_until_break(mut resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), 200);
    let mut received = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk),
            Ok(None) => panic!("the stream finished: {}", String::from_utf8_lossy(&received)),
            Err(_) => return String::from_utf8(received).unwrap(),
        }
    }
}

#[tokio::test]
async fn break_drops_the_stream_after_three_chunks() {
    let server = mock(0).await;
    let resp = post(
        &server,
        "/v1/chat/completions",
        &openai_req("m-break", json!({"stream": true})),
    )
    .await;
    let text = read_until_break(resp).await;
    let contents = data(&parse_sse(&text))
        .iter()
        .filter(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        })
        .count();
    assert_eq!(contents, 3, "{text}");
    assert!(!text.contains("[DONE]"));
    assert_eq!(
        (
            server.stats.streams_started("m-break"),
            server.stats.streams_finished("m-break")
        ),
        (1, 0)
    );

    let req =
        json!({"model": "m-break", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let text = read_until_break(post(&server, "/v1/messages", &req).await).await;
    assert_eq!(text.matches("event: content_block_delta").count(), 3, "{text}");
    assert!(!text.contains("message_stop"));

    let req = json!({"contents": [{"parts": [{"text": "hi"}]}]});
    let resp = post(&server, "/v1beta/models/m-break:streamGenerateContent?alt=sse", &req).await;
    let text = read_until_break(resp).await;
    assert_eq!(parse_sse(&text).len(), 3, "{text}");

    // Not streamed, it fails like `error`.
    for (path, body) in [
        ("/v1/chat/completions", openai_req("m-break", json!({}))),
        (
            "/v1/messages",
            json!({"model": "m-break", "max_tokens": 5, "messages": []}),
        ),
    ] {
        assert_eq!(post(&server, path, &body).await.status(), 500, "{path}");
    }
}

#[tokio::test]
async fn openai_tools_are_called_then_their_result_answered() {
    let server = mock(0).await;
    let req = openai_req("m", json!({"tools": weather_tool(), "seed": 7}));
    let first = post_json(&server, "/v1/chat/completions", &req).await;
    let choice = &first["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    let call = &choice["message"]["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "mock", "days": 1, "metric": true}));
    assert_eq!(server.stats.last_request("m").unwrap()["seed"], 7);

    // The result comes back: the answer is text, and the loop ends.
    let mut second = req.clone();
    second["messages"].as_array_mut().unwrap().extend([
        json!({"role": "assistant", "content": null, "tool_calls": [call]}),
        json!({"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21 C"}),
    ]);
    let answer = post_json(&server, "/v1/chat/completions", &second).await;
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "mock answer from m: sunny, 21 C"
    );

    // Streamed: the name first, then the arguments in fragments.
    let mut streamed = req.clone();
    streamed["stream"] = json!(true);
    let chunks = data(&sse(&server, "/v1/chat/completions", &streamed).await);
    let opening = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(opening["function"], json!({"name": "get_weather", "arguments": ""}));
    assert_eq!(
        (opening["index"].clone(), opening["type"].clone()),
        (json!(0), json!("function"))
    );
    let fragments: Vec<&str> = chunks[1..]
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert!(fragments.len() > 1);
    let args: Value = serde_json::from_str(&fragments.concat()).unwrap();
    assert_eq!(args["city"], "mock");
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "tool_calls");

    // tool_choice none answers in words; a notools model refuses tools.
    let none = openai_req("m", json!({"tools": weather_tool(), "tool_choice": "none"}));
    let answer = post_json(&server, "/v1/chat/completions", &none).await;
    assert!(answer["choices"][0]["message"]["content"].is_string());
    let resp = post(
        &server,
        "/v1/chat/completions",
        &openai_req("m-notools", json!({"tools": weather_tool()})),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["message"], "tools are not supported by this model");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let plain = post(&server, "/v1/chat/completions", &openai_req("m-notools", json!({}))).await;
    assert_eq!(plain.status(), 200);
}

#[tokio::test]
async fn anthropic_and_gemini_call_tools_their_way() {
    let server = mock(0).await;
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
    let req = json!({"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "weather?"}],
                     "tools": [{"name": "get_weather", "description": "d", "input_schema": schema}]});
    let whole = post_json(&server, "/v1/messages", &req).await;
    assert_eq!(whole["stop_reason"], "tool_use");
    assert_eq!(whole["content"][0]["type"], "tool_use");
    assert_eq!(whole["content"][0]["input"], json!({"city": "mock"}));

    let mut streamed = req.clone();
    streamed["stream"] = json!(true);
    let values = data(&sse(&server, "/v1/messages", &streamed).await);
    assert_eq!(values[1]["content_block"]["type"], "tool_use");
    assert_eq!(values[1]["content_block"]["name"], "get_weather");
    let json_text: String = values
        .iter()
        .filter(|v| v["delta"]["type"] == "input_json_delta")
        .map(|v| v["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&json_text).unwrap(),
        json!({"city": "mock"})
    );
    assert_eq!(values[values.len() - 2]["delta"]["stop_reason"], "tool_use");

    let req = json!({"contents": [{"parts": [{"text": "weather?"}]}],
                     "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters": schema}]}]});
    let whole = post_json(&server, "/v1beta/models/m:generateContent", &req).await;
    let candidate = &whole["candidates"][0];
    assert_eq!(candidate["finishReason"], "STOP");
    assert_eq!(
        candidate["content"]["parts"][0]["functionCall"],
        json!({"name": "get_weather", "args": {"city": "mock"}})
    );
}

#[tokio::test]
async fn json_mode_answers_json_in_openai_and_gemini() {
    let server = mock(0).await;
    let schema = json!({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                        "required": ["name", "age"]});
    for format in [
        json!({"type": "json_object"}),
        json!({"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}),
    ] {
        let whole = post_json(
            &server,
            "/v1/chat/completions",
            &openai_req("m", json!({"response_format": format})),
        )
        .await;
        let content = whole["choices"][0]["message"]["content"].as_str().unwrap();
        let v: Value = serde_json::from_str(content).unwrap();
        assert!(v["answer"].as_str().unwrap().starts_with("mock answer from m"), "{v}");
        if format["type"] == "json_schema" {
            assert_eq!((v["name"].clone(), v["age"].clone()), (json!("mock"), json!(1)));
        }
    }
    let req = json!({"contents": [{"parts": [{"text": "hi"}]}],
                     "generationConfig": {"responseMimeType": "application/json", "responseSchema": schema}});
    let whole = post_json(&server, "/v1beta/models/m:generateContent", &req).await;
    let text = whole["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap();
    let v: Value = serde_json::from_str(text).unwrap();
    assert_eq!(v["age"], 1);
}

#[tokio::test]
async fn n_choices_and_logprobs() {
    let server = mock(0).await;
    let whole = post_json(
        &server,
        "/v1/chat/completions",
        &openai_req("m", json!({"n": 3, "logprobs": true})),
    )
    .await;
    let choices = whole["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    let texts: Vec<&str> = choices
        .iter()
        .map(|c| c["message"]["content"].as_str().unwrap())
        .collect();
    assert!(texts[2].ends_with(" (choice 2)"));
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        let tokens = c["logprobs"]["content"].as_array().unwrap();
        let joined: String = tokens.iter().map(|t| t["token"].as_str().unwrap()).collect();
        assert_eq!(joined, texts[i]);
        assert_eq!(tokens[0]["logprob"], -0.1);
        assert_eq!(tokens[0]["bytes"], json!(b"mock ".to_vec()));
    }
    let tokens = |t: &str| t.len().div_ceil(4);
    assert_eq!(
        whole["usage"]["completion_tokens"],
        texts.iter().map(|t| tokens(t)).sum::<usize>()
    );

    // Streamed, the choices interleave and each reassembles.
    let chunks = data(
        &sse(
            &server,
            "/v1/chat/completions",
            &openai_req("m", json!({"n": 3, "stream": true})),
        )
        .await,
    );
    let indexes: Vec<u64> = chunks
        .iter()
        .filter(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        })
        .map(|c| c["choices"][0]["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes[..6], [0, 1, 2, 0, 1, 2]);
    for (i, text) in texts.iter().enumerate() {
        let streamed: String = chunks
            .iter()
            .filter(|c| c["choices"][0]["index"] == i)
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(&streamed, text);
    }
}

#[tokio::test]
async fn images_and_tool_messages_are_accepted() {
    let server = mock(0).await;
    let req = json!({"model": "m", "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
        ]}
    ]});
    let whole = post_json(&server, "/v1/chat/completions", &req).await;
    assert_eq!(
        whole["choices"][0]["message"]["content"],
        "mock answer from m [1 image]: what is this?"
    );
    assert_eq!(server.stats.last_request("m").unwrap(), req);

    let req = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "text", "text": "and this?"}
    ]}]});
    let whole = post_json(&server, "/v1/messages", &req).await;
    assert!(whole["content"][0]["text"].as_str().unwrap().contains("[1 image]"));
}
