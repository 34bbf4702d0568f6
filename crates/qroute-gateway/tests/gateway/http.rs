//! The gateway end to end: qroute and the mock upstream on 127.0.0.1 ports,
//! real HTTP both ways.

use crate::harness::{error_type, start};
use serde_json::{json, Value};

const MODELS: &[(&str, &str, f64)] = &[
    ("cheap-mock", "openai", 0.1),
    ("dear-mock", "openai", 20.0),
    ("claude-mock", "anthropic", 3.0),
    ("gemini-mock", "gemini", 1.0),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_answers_and_records_an_experience() {
    let t = start(MODELS, "").await;
    let (status, body) = t
        .post(
            "/v1/execute",
            &json!({"prompt": "What is 17 * 23?", "task_type": "gsm8k", "preference": {"cost_weight": 0.5}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let model = body["model"].as_str().unwrap();
    assert!(MODELS.iter().any(|m| m.0 == model));
    assert!(body["response"].as_str().unwrap().contains("17 * 23"), "{body}");
    let p = body["propensity"].as_f64().unwrap();
    assert!(p > 0.0 && p <= 1.0);
    assert!(body["cost_usd"].as_f64().unwrap() > 0.0);
    assert!(body["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert!(body["timings"]["overhead_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(body["attempts"].as_array().unwrap().len(), 1);

    // The decision and its outcome are in the store, joined by request id.
    let id = body["request_id"].as_str().unwrap();
    let exp = t.experience(id, 1).await;
    let d = &exp.decision;
    assert_eq!(d.candidates.len(), MODELS.len());
    assert_eq!(d.chosen, vec![model.to_string()]);
    assert!((d.propensities.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    let k = d.candidates.iter().position(|c| c == model).unwrap();
    assert!((d.propensities[k] as f64 - p).abs() < 1e-6);
    assert_eq!(d.cost_weight, 0.5);
    assert_eq!(d.task.as_deref(), Some("gsm8k"));
    assert!(!d.features.indices.is_empty());
    let o = &exp.outcomes[0];
    assert_eq!(o.model, model);
    assert!(o.error.is_none());
    assert!((o.cost_usd - body["cost_usd"].as_f64().unwrap()).abs() < 1e-12);
    assert!(o.latency_ms > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_an_experience() {
    let t = start(MODELS, "").await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let (status, body) = t.post("/v1/execute", &json!({"prompt": format!("question {i}")})).await;
        assert_eq!(status, 200, "{body}");
        ids.push(body["request_id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        t.experience(id, 1).await;
    }
    assert_eq!(t.gw.store.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preference_limits_the_choice() {
    let t = start(MODELS, "").await;
    for _ in 0..10 {
        let (status, body) = t
            .post(
                "/v1/execute",
                &json!({"prompt": "hi", "preference": {"models": ["claude-mock"]}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["model"], "claude-mock");
        assert_eq!(body["propensity"], 1.0);
    }
    // A cap below every model's expected cost is a clear 400.
    let (status, body) = t
        .post(
            "/v1/execute",
            &json!({"prompt": "hi", "preference": {"max_cost_usd": 0.0}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("max_cost_usd"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completions_auto_and_pinned() {
    let t = start(MODELS, "").await;
    let (status, body) = t
        .post(
            "/v1/chat/completions",
            &json!({"model": "auto", "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Name a prime."}]}
            ], "temperature": 0.2, "n": 1}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert!(body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("Name a prime"));
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert_ne!(body["model"], "auto");
    t.experience(body["qroute"]["request_id"].as_str().unwrap(), 1).await;

    // A concrete model id passes through, over each wire format.
    for model in ["dear-mock", "claude-mock", "gemini-mock"] {
        let before = t.mock.stats.calls(model);
        let (status, body) = t
            .post(
                "/v1/chat/completions",
                &json!({"model": model, "messages": [{"role": "user", "content": "hello"}]}),
            )
            .await;
        assert_eq!(status, 200, "{model}: {body}");
        assert_eq!(body["model"], model);
        assert_eq!(body["qroute"]["propensity"], 1.0);
        assert_eq!(t.mock.stats.calls(model), before + 1, "{model} called once");
    }
}

/// Parses an SSE body into its `data:` payloads.
fn sse_data(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.trim().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completions_stream() {
    let t = start(MODELS, "").await;
    let r = t
        .http
        .post(format!("{}/v1/chat/completions", t.url))
        .json(&json!({"model": "cheap-mock", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "Tell me something long enough to be split into chunks."}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let data = sse_data(&r.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks.len() >= 4, "role, content…, finish, usage");
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(text.starts_with("mock answer from cheap-mock"), "{text}");
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"));
    let usage = chunks.last().unwrap();
    assert!(usage["choices"].as_array().unwrap().is_empty());
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    // The same text as without streaming.
    let (_, plain) = t
        .post(
            "/v1/chat/completions",
            &json!({"model": "cheap-mock", "messages": [{"role": "user", "content": "Tell me something long enough to be split into chunks."}]}),
        )
        .await;
    assert_eq!(plain["choices"][0]["message"]["content"].as_str().unwrap(), text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_capabilities_metrics_openapi() {
    let t = start(MODELS, "").await;
    let r = t.get("/v1/health").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-process-time"));
    let h: Value = r.json().await.unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["models_available"], 4);

    let c: Value = t.get("/v1/capabilities").await.json().await.unwrap();
    let ids: Vec<&str> = c["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["cheap-mock", "dear-mock", "claude-mock", "gemini-mock"]);
    assert_eq!(c["models"][2]["provider"], "anthropic");
    assert_eq!(c["models"][0]["breaker"], "closed");
    assert!(c["features"]["dim"].as_u64().unwrap() > 0);
    assert!(c["policy"]["version"].as_u64().is_some());

    let (status, _) = t.post("/v1/execute", &json!({"prompt": "count me"})).await;
    assert_eq!(status, 200);
    let m = t.get("/metrics").await.text().await.unwrap();
    for name in [
        "qroute_requests_total",
        "qroute_request_duration_seconds_bucket",
        "qroute_overhead_seconds_bucket",
        "qroute_upstream_duration_seconds_bucket",
        "qroute_choices_total",
        "qroute_cost_usd_total",
        "qroute_policy_version",
    ] {
        assert!(m.contains(name), "/metrics lacks {name}:\n{m}");
    }
    assert!(m.contains(r#"endpoint="/v1/execute""#), "{m}");

    // Every listed endpoint is routed (a GET on a POST route is a 405, not the 404 fallback).
    // A templated one answers from its handler, not from the fallback.
    for path in qroute_gateway::http::ENDPOINTS {
        let r = t.get(&path.replace("{id}", "nope")).await;
        let status = r.status();
        let body = r.text().await.unwrap();
        assert!(
            status != 404 || !body.contains("no such endpoint"),
            "{path} is listed but not routed"
        );
    }
    assert_eq!(
        qroute_gateway::http::endpoint_of("/v1/experiments/e-1"),
        Some("/v1/experiments/{id}")
    );
    assert_eq!(
        qroute_gateway::http::endpoint_of("/v1/experiments/e-1/stop"),
        Some("/v1/experiments/{id}/stop")
    );
    assert_eq!(qroute_gateway::http::endpoint_of("/v1/experiments//stop"), None);
    assert_eq!(qroute_gateway::http::endpoint_of("/v1/execute/x"), None);
    assert_eq!(
        c["endpoints"].as_array().unwrap().len(),
        qroute_gateway::http::ENDPOINTS.len()
    );

    let list: Value = t.get("/v1/models").await.json().await.unwrap();
    let listed: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        ["auto", "cheap-mock", "dear-mock", "claude-mock", "gemini-mock"]
    );

    let spec: Value = t.get("/openapi.json").await.json().await.unwrap();
    for path in [
        "/v1/execute",
        "/v1/chat/completions",
        "/v1/feedback",
        "/v1/health",
        "/v1/capabilities",
    ] {
        assert!(spec["paths"].get(path).is_some(), "openapi lacks {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx() {
    let t = start(MODELS, "[limits]\nbody_bytes = 2048\n").await;
    // Malformed JSON.
    let (s, b) = t.post_raw("/v1/execute", "{\"prompt\": ").await;
    assert_eq!((s, error_type(&b)), (400, "invalid_request"), "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("not valid JSON"));
    // A wrong type names the field.
    let (s, b) = t.post("/v1/execute", &json!({"prompt": ["a"]})).await;
    assert_eq!(s, 400, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("prompt"), "{b}");
    let (s, b) = t
        .post(
            "/v1/execute",
            &json!({"prompt": "x", "preference": {"cost_weight": "high"}}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("preference.cost_weight"),
        "{b}"
    );
    // A missing field, an unknown field, an empty prompt, a negative weight.
    for body in [
        json!({"persona": "x"}),
        json!({"prompt": "x", "colour": 1}),
        json!({"prompt": "  "}),
        json!({"prompt": "x", "preference": {"cost_weight": -1.0}}),
        json!({"model": "auto", "messages": []}),
    ] {
        let path = if body.get("model").is_some() {
            "/v1/chat/completions"
        } else {
            "/v1/execute"
        };
        let (s, b) = t.post(path, &body).await;
        assert_eq!((s, error_type(&b)), (400, "invalid_request"), "{body} → {b}");
    }
    // Over the body limit.
    let big = json!({"prompt": "x".repeat(4096)});
    let (s, b) = t.post("/v1/execute", &big).await;
    assert_eq!((s, error_type(&b)), (413, "payload_too_large"), "{b}");
    // Unknown models, through both endpoints.
    let (s, b) = t
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-17", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!((s, error_type(&b)), (404, "not_found"), "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("gpt-17"));
    let (s, b) = t
        .post(
            "/v1/execute",
            &json!({"prompt": "x", "preference": {"models": ["nope"]}}),
        )
        .await;
    assert_eq!((s, error_type(&b)), (404, "not_found"), "{b}");
    // Unknown endpoint and wrong method: JSON too.
    let r = t.get("/v2/nothing").await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_type(&r.json().await.unwrap()), "not_found");
    let r = t.get("/v1/execute").await;
    assert_eq!(r.status(), 405);
    assert_eq!(error_type(&r.json().await.unwrap()), "method_not_allowed");
    // None of these reached the store.
    assert_eq!(t.gw.store.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_strategy_routes_and_logs_its_own_distribution() {
    let fixed = "[policy]\nstrategy = { kind = \"fixed\", model = \"claude-mock\" }\n";
    let t = start(MODELS, fixed).await;
    let caps: Value = t.get("/v1/capabilities").await.json().await.unwrap();
    assert_eq!(caps["strategy"]["kind"], "fixed");
    assert!(caps["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s == "round_robin"));
    for _ in 0..5 {
        let (s, b) = t.post("/v1/execute", &json!({"prompt": "hello"})).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(
            (b["model"].as_str(), b["propensity"].as_f64()),
            (Some("claude-mock"), Some(1.0))
        );
        let e = t.experience(b["request_id"].as_str().unwrap(), 1).await;
        let k = e.decision.candidates.iter().position(|c| c == "claude-mock").unwrap();
        assert_eq!(e.decision.propensities[k], 1.0);
    }

    // Cost-optimized: the cheapest by the policy's cost prediction.
    let t = start(MODELS, "[policy]\nstrategy = { kind = \"cost_optimized\" }\n").await;
    let (_, b) = t.post("/v1/execute", &json!({"prompt": "hello"})).await;
    assert_eq!(b["model"], "cheap-mock", "{b}");

    // Round-robin takes every model in turn.
    let t = start(MODELS, "[policy]\nstrategy = { kind = \"round_robin\" }\n").await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..MODELS.len() {
        let (_, b) = t.post("/v1/execute", &json!({"prompt": "hello"})).await;
        seen.insert(b["model"].as_str().unwrap().to_string());
    }
    assert_eq!(seen.len(), MODELS.len());
}

/// The largest weights a request may send still give every candidate a
/// finite score and a real propensity (schemathesis once found `null`
/// propensities from a weight near `f32::MAX`); one past it is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_weights_keep_propensities_finite() {
    let t = start(MODELS, "").await;
    let top = qroute_gateway::http::execute::MAX_WEIGHT;
    let (s, b) = t
        .post(
            "/v1/execute",
            &json!({"prompt": "hi", "variations": 2, "preference": {"cost_weight": top, "latency_weight": top}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(b["propensity"].as_f64().is_some_and(|p| p > 0.0 && p <= 1.0), "{b}");
    for v in b["variations"].as_array().unwrap() {
        assert!(v["propensity"].as_f64().is_some(), "{b}");
    }
    let (s, b) = t
        .post(
            "/v1/chat/completions",
            &json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}], "latency_weight": top * 1.001}),
        )
        .await;
    assert_eq!((s, error_type(&b)), (400, "invalid_request"), "{b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("latency_weight"),
        "{b}"
    );
}
