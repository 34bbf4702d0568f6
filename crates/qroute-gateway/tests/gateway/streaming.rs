//! Streaming through: chunks are forwarded as the upstream sends them, in
//! OpenAI's chunk format whatever the upstream's, and the outcome is
//! recorded when the stream ends. Order is asserted, not time.

use futures_util::StreamExt;
use qroute_mock::MockConfig;
use serde_json::{json, Value};

use crate::harness::{sse_data, start_raw, TestGateway};

/// A mock that waits `ms` between chunks.
fn paced(ms: u64) -> MockConfig {
    MockConfig {
        chunk_delay_ms: ms,
        ..MockConfig::default()
    }
}

fn streamed(model: &str) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "Tell me about streams."}],
        "stream": true,
        "stream_options": {"include_usage": true},
    })
}

async fn open(t: &TestGateway, body: &Value) -> reqwest::Response {
    let r = t
        .http
        .post(format!("{}/v1/chat/completions", t.url))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_chunk_arrives_before_the_upstream_sends_its_last() {
    let models = [
        ("s-openai", "openai", 1.0),
        ("s-anthropic", "anthropic", 1.0),
        ("s-gemini", "gemini", 1.0),
    ];
    let t = start_raw(paced(150), &models, "", "").await;
    for (model, _, _) in models {
        let mut body = open(&t, &streamed(model)).await.bytes_stream();
        let mut seen = String::new();
        // Read until the first content arrives.
        while !sse_data(&seen)
            .iter()
            .any(|d| d.contains("\"content\":\"") && !d.contains("\"content\":\"\""))
        {
            let chunk = body.next().await.expect("more chunks").unwrap();
            seen.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        assert_eq!(
            t.mock.stats.streams_finished(model),
            0,
            "{model}: the client had a token before the upstream finished"
        );
        while let Some(chunk) = body.next().await {
            seen.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
        assert_eq!(t.mock.stats.streams_finished(model), 1, "{model}");
        let data = sse_data(&seen);
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{model}");
        let chunks: Vec<Value> = data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"), "{model}");
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert!(text.contains("Tell me about streams."), "{model}: {text}");
        let content_chunks = chunks
            .iter()
            .filter(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty())
            })
            .count();
        assert!(content_chunks >= 8, "{model}: {content_chunks} content chunks");
        assert!(
            chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"),
            "{model}"
        );
        let usage = chunks.iter().find_map(|c| c.get("usage")).expect("usage chunk");
        assert!(usage["completion_tokens"].as_u64().unwrap() > 0, "{model}");
        // The outcome is recorded once the stream ended, priced from usage.
        let id = chunks[0]["qroute"]["request_id"].as_str().unwrap().to_string();
        let e = t.experience(&id, 1).await;
        assert!(e.outcomes[0].error.is_none(), "{model}: {:?}", e.outcomes[0].error);
        assert!(e.outcomes[0].cost_usd > 0.0, "{model}");
        let ttft = e.outcomes[0]
            .ttft_ms
            .expect("a streamed outcome records its time to first token");
        assert!(ttft > 0.0 && ttft <= e.outcomes[0].latency_ms + 1e3, "{model}: {ttft}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_break_mid_stream_ends_with_an_error_event_and_is_recorded() {
    let t = start_raw(paced(5), &[("break-mock", "openai", 1.0)], "", "").await;
    let text = open(&t, &streamed("break-mock")).await.text().await.unwrap();
    let data = sse_data(&text);
    assert!(
        data.iter().any(|d| d.contains("\"content\":\"")),
        "some content came first: {text}"
    );
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "upstream_error", "{text}");
    assert!(!data.iter().any(|d| d == "[DONE]"), "a broken stream is not done");
    let first: Value = serde_json::from_str(&data[0]).unwrap();
    let e = t.experience(first["qroute"]["request_id"].as_str().unwrap(), 1).await;
    assert!(e.outcomes[0].error.is_some(), "the break is recorded");
    assert!(
        e.outcomes[0].cost_usd > 0.0,
        "what was streamed before the break is paid for"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_stream_is_recorded_as_such() {
    let t = start_raw(paced(200), &[("leave-mock", "openai", 1.0)], "", "").await;
    let mut body = open(&t, &streamed("leave-mock")).await.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    let first = sse_data(std::str::from_utf8(&first).unwrap());
    let head: Value = serde_json::from_str(&first[0]).unwrap();
    drop(body);
    let e = t.experience(head["qroute"]["request_id"].as_str().unwrap(), 1).await;
    let error = e.outcomes[0].error.as_deref().unwrap_or_default();
    assert!(error.contains("client disconnected"), "{error}");
    // A client leaving says nothing about the model.
    assert_eq!(t.gw.breaker_states()[0].1.as_str(), "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_first_choice_falls_back_before_the_first_byte() {
    let extra = "[policy]\nexploration = { kind = \"greedy\" }\nfloor = 0.0\n[retry]\nattempts_per_model = 1\n";
    let t = start_raw(
        paced(1),
        &[("error-mock", "openai", 0.01), ("good-mock", "anthropic", 5.0)],
        extra,
        "",
    )
    .await;
    let mut body = streamed("auto");
    body["cost_weight"] = json!(50.0);
    let text = open(&t, &body).await.text().await.unwrap();
    let data = sse_data(&text);
    let head: Value = serde_json::from_str(&data[0]).unwrap();
    assert_eq!(head["model"], "good-mock", "{text}");
    assert_eq!(head["qroute"]["attempts"][0]["model"], "error-mock");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
}
