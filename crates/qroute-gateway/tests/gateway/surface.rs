//! The OpenAI chat surface through the gateway: what is passed through,
//! what narrows the candidates, and what is refused with a 400 naming the
//! field.

use qroute_mock::MockConfig;
use serde_json::{json, Value};

use crate::harness::{error_type, sse_data, start, start_raw};

const GREEDY: &str = "[policy]\nexploration = { kind = \"greedy\" }\nfloor = 0.0\n";

fn weather_tool() -> Value {
    json!([{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }])
}

fn chat(model: &str, content: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": content}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_round_trip_whole_and_streamed() {
    let t = start(&[("tool-mock", "openai", 1.0)], "").await;
    let mut body = chat("auto", "What is the weather in Paris?");
    body["tools"] = weather_tool();
    body["tool_choice"] = json!("auto");
    body["seed"] = json!(7);
    body["stop"] = json!(["\n\n"]);
    let (s, b) = t.post("/v1/chat/completions", &body).await;
    assert_eq!(s, 200, "{b}");
    let choice = &b["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{b}");
    assert!(choice["message"]["content"].is_null(), "{b}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string(), "{args}");
    // What reached the upstream: the tools and parameters as sent.
    let sent = t.mock.stats.last_request("tool-mock").unwrap();
    assert_eq!(sent["tools"], weather_tool());
    assert_eq!(
        (sent["seed"].clone(), sent["stop"].clone()),
        (json!(7), json!(["\n\n"]))
    );

    // The tool's result goes back; the model answers in text.
    let mut turn2 = body.clone();
    turn2["messages"] = json!([
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21 C"},
    ]);
    let (s, b) = t.post("/v1/chat/completions", &turn2).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["choices"][0]["finish_reason"], "stop", "{b}");
    assert!(
        b["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("sunny"),
        "{b}"
    );

    // Streamed: the call arrives as deltas that reassemble to the same call.
    body["stream"] = json!(true);
    let text = t
        .http
        .post(format!("{}/v1/chat/completions", t.url))
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let data = sse_data(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
    let mut name = String::new();
    let mut arguments = String::new();
    let mut finish = None;
    for d in &data[..data.len() - 1] {
        let c: Value = serde_json::from_str(d).unwrap();
        for call in c["choices"][0]["delta"]["tool_calls"].as_array().into_iter().flatten() {
            name.push_str(call["function"]["name"].as_str().unwrap_or_default());
            arguments.push_str(call["function"]["arguments"].as_str().unwrap_or_default());
        }
        if let Some(f) = c["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    assert_eq!(name, "get_weather");
    assert_eq!(serde_json::from_str::<Value>(&arguments).unwrap(), args);
    assert_eq!(finish.as_deref(), Some("tool_calls"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_mode_gives_json_and_n_gives_n_choices() {
    let t = start(&[("json-mock", "openai", 1.0), ("claude-mock", "anthropic", 1.0)], "").await;
    let mut body = chat("json-mock", "List three colours.");
    body["response_format"] = json!({"type": "json_object"});
    let (s, b) = t.post("/v1/chat/completions", &body).await;
    assert_eq!(s, 200, "{b}");
    let content = b["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(serde_json::from_str::<Value>(content).unwrap().is_object(), "{content}");

    let mut body = chat("json-mock", "Name a colour.");
    body["n"] = json!(2);
    let (s, b) = t.post("/v1/chat/completions", &body).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["choices"].as_array().unwrap().len(), 2, "{b}");
    assert_eq!(b["choices"][1]["index"], 1);

    // Anthropic's API has no `n` and no JSON mode: refused, naming the field.
    body["model"] = json!("claude-mock");
    let (s, b) = t.post("/v1/chat/completions", &body).await;
    assert_eq!((s, error_type(&b)), (400, "invalid_request"), "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains(": n: "), "{b}");
    // Under auto, only the model that can is a candidate.
    body["model"] = json!("auto");
    for _ in 0..5 {
        let (s, b) = t.post("/v1/chat/completions", &body).await;
        assert_eq!((s, b["model"].as_str()), (200, Some("json-mock")), "{b}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_are_only_models_that_can_serve_the_request() {
    // The cheap models are the greedy choice, unless they cannot serve.
    let models = "
[[models]]
id = \"small-window\"
provider = \"openai\"
input_per_mtok = 0.01
output_per_mtok = 0.01
context_window = 2000

[[models]]
id = \"no-tools\"
provider = \"openai\"
input_per_mtok = 0.02
output_per_mtok = 0.02
capabilities = [\"streaming\", \"json\"]

[[models]]
id = \"large\"
provider = \"openai\"
input_per_mtok = 9.0
output_per_mtok = 9.0
";
    let t = start_raw(MockConfig::default(), &[], GREEDY, models).await;
    let long = "lorem ipsum dolor sit amet ".repeat(400); // ~3,600 estimated tokens
    let mut body = chat("auto", &long);
    body["cost_weight"] = json!(100.0);
    body["models"] = json!(["small-window", "large"]);
    for _ in 0..5 {
        let (s, b) = t.post("/v1/chat/completions", &body).await;
        assert_eq!((s, b["model"].as_str()), (200, Some("large")), "{b}");
    }
    body["model"] = json!("small-window");
    let (s, b) = t.post("/v1/chat/completions", &body).await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("context window"),
        "{b}"
    );

    let mut body = chat("auto", "What is the weather in Oslo?");
    body["cost_weight"] = json!(100.0);
    body["models"] = json!(["no-tools", "large"]);
    body["tools"] = weather_tool();
    for _ in 0..5 {
        let (s, b) = t.post("/v1/chat/completions", &body).await;
        assert_eq!((s, b["model"].as_str()), (200, Some("large")), "{b}");
    }
    assert_eq!(
        t.mock.stats.calls("no-tools"),
        0,
        "a model without tools never saw the request"
    );
    body["model"] = json!("no-tools");
    let (s, b) = t.post("/v1/chat/completions", &body).await;
    assert_eq!(s, 400, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains(": tools: "), "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_pass_through_and_an_image_only_message_is_a_prompt() {
    let t = start(&[("vision-mock", "openai", 1.0)], "").await;
    let body = json!({"model": "auto", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]}]});
    let (s, b) = t.post("/v1/chat/completions", &body).await;
    assert_eq!(s, 200, "{b}");
    let sent = t.mock.stats.last_request("vision-mock").unwrap();
    assert_eq!(sent["messages"][0]["content"][0]["type"], "image_url", "{sent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_bounds_are_checked_before_routing() {
    let t = start(&[("m", "openai", 1.0)], "").await;
    for (field, value) in [
        ("temperature", json!(50)),
        ("temperature", json!(-1)),
        ("max_tokens", json!(0)),
        ("top_p", json!(2)),
        ("n", json!(0)),
        ("frequency_penalty", json!(9)),
        ("logit_bias", json!({"50256": -100})),
    ] {
        let mut body = chat("auto", "hi");
        body[field] = value;
        let (s, b) = t.post("/v1/chat/completions", &body).await;
        assert_eq!((s, error_type(&b)), (400, "invalid_request"), "{field}: {b}");
        assert!(b["error"]["message"].as_str().unwrap().contains(field), "{b}");
    }
    assert_eq!(t.mock.stats.calls("m"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_400_is_relayed_and_never_opens_a_breaker() {
    let extra = "[breaker]\nfailure_threshold = 2\n[retry]\nattempts_per_model = 3\nbackoff_base_ms = 1\n";
    let t = start(&[("notools-mock", "openai", 1.0), ("other-mock", "openai", 9.0)], extra).await;
    let mut body = chat("notools-mock", "Weather?");
    body["tools"] = weather_tool();
    for _ in 0..4 {
        let (s, b) = t.post("/v1/chat/completions", &body).await;
        assert_eq!((s, error_type(&b)), (400, "invalid_request"), "{b}");
        assert!(
            b["error"]["message"]
                .as_str()
                .unwrap()
                .contains("tools are not supported"),
            "{b}"
        );
    }
    assert_eq!(t.mock.stats.calls("notools-mock"), 4, "never retried");
    assert!(t.gw.breaker_states().iter().all(|(_, s)| s.as_str() == "closed"));
    // Under auto another model may accept it.
    body["model"] = json!("auto");
    body["models"] = json!(["notools-mock", "other-mock"]);
    for _ in 0..4 {
        let (s, b) = t.post("/v1/chat/completions", &body).await;
        assert_eq!((s, b["model"].as_str()), (200, Some("other-mock")), "{b}");
    }
    assert!(t.gw.breaker_states().iter().all(|(_, s)| s.as_str() == "closed"));
}
