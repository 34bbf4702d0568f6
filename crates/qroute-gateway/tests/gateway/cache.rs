//! The response cache: a repeat of a deterministic request is answered
//! without an upstream call, costs nothing, and is not learning data.

use serde_json::{json, Value};

use crate::harness::{sse_data, start};

fn deterministic(content: &str) -> Value {
    json!({"model": "auto", "temperature": 0, "messages": [{"role": "user", "content": content}]})
}

async fn post(t: &crate::harness::TestGateway, body: &Value, header: Option<(&str, &str)>) -> (String, Value) {
    let mut rb = t.http.post(format!("{}/v1/chat/completions", t.url)).json(body);
    if let Some((k, v)) = header {
        rb = rb.header(k, v);
    }
    let r = rb.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let cache = r.headers()["x-qroute-cache"].to_str().unwrap().to_string();
    (cache, r.json().await.unwrap())
}

/// Decisions in the store (each routed request writes one).
fn decisions(t: &crate::harness::TestGateway) -> usize {
    t.gw.store.iter_from(0).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_is_a_hit_without_an_upstream_call_or_a_decision() {
    let t = start(&[("cache-mock", "openai", 1.0)], "").await;
    let body = deterministic("What is the boiling point of water?");
    let (cache, first) = post(&t, &body, None).await;
    assert_eq!(cache, "miss");
    assert!(first["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let id = first["qroute"]["request_id"].as_str().unwrap();
    t.experience(id, 1).await;
    assert_eq!(t.mock.stats.calls("cache-mock"), 1);

    let (cache, second) = post(&t, &body, None).await;
    assert_eq!(cache, "hit");
    assert_eq!(second["choices"], first["choices"]);
    assert_eq!(second["qroute"]["cost_usd"], 0.0);
    assert_eq!(t.mock.stats.calls("cache-mock"), 1, "no upstream call");
    assert_eq!(decisions(&t), 1, "a hit is not a routing decision");

    // Streamed, the hit is served as a stream.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = t
        .http
        .post(format!("{}/v1/chat/completions", t.url))
        .json(&streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-qroute-cache"], "hit");
    let data = sse_data(&r.text().await.unwrap());
    let text: String = data[..data.len() - 1]
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(String::from))
        .collect();
    assert_eq!(text, first["choices"][0]["message"]["content"].as_str().unwrap());
    assert_eq!(t.mock.stats.calls("cache-mock"), 1);

    // `no-cache` answers fresh (and refreshes the entry); `cache: false`
    // and a sampled request bypass it.
    let (cache, _) = post(&t, &body, Some(("cache-control", "no-cache"))).await;
    assert_eq!(cache, "miss");
    let mut off = body.clone();
    off["cache"] = json!(false);
    assert_eq!(post(&t, &off, None).await.0, "bypass");
    let mut sampled = body.clone();
    sampled.as_object_mut().unwrap().remove("temperature");
    assert_eq!(post(&t, &sampled, None).await.0, "bypass");
    assert_eq!(post(&t, &sampled, None).await.0, "bypass");
    assert_eq!(t.mock.stats.calls("cache-mock"), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_prompt_or_model_is_a_miss() {
    let t = start(&[("a-mock", "openai", 1.0), ("b-mock", "openai", 1.0)], "").await;
    let mut body = deterministic("Hello there");
    body["model"] = json!("a-mock");
    assert_eq!(post(&t, &body, None).await.0, "miss");
    body["model"] = json!("b-mock");
    assert_eq!(post(&t, &body, None).await.0, "miss");
    body["messages"][0]["content"] = json!("Hello there!");
    assert_eq!(post(&t, &body, None).await.0, "miss");
    assert_eq!(post(&t, &body, None).await.0, "hit");
}
