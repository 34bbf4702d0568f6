//! Retries, fallback, circuit breakers and timeouts, against the mock
//! upstream's fault injection (faults are chosen by model name).

use std::time::Duration;

use crate::harness::{error_type, start};
use serde_json::json;

/// Greedy choices: the policy's best is always tried first, so a test can
/// put a model first by making it the cheapest at a high cost weight.
const GREEDY: &str = "[policy]\nexploration = { kind = \"greedy\" }\nfloor = 0.0\n";

fn execute(models: &[&str]) -> serde_json::Value {
    json!({"prompt": "Summarise the plot of Hamlet.", "preference": {"models": models, "cost_weight": 50.0}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_failure_is_retried() {
    let extra = "[retry]\nattempts_per_model = 2\nbackoff_base_ms = 1\nbackoff_max_ms = 5\nmax_fallbacks = 0\n";
    let t = start(&[("flaky-mock", "openai", 1.0)], extra).await;
    let (s, b) = t.post("/v1/execute", &execute(&["flaky-mock"])).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["attempts"][0]["calls"], 2, "{b}");
    assert_eq!(t.mock.stats.calls("flaky-mock"), 2);
    // One decision, one successful outcome (retries are not separate decisions).
    let e = t.experience(b["request_id"].as_str().unwrap(), 1).await;
    assert!(e.outcomes[0].error.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_is_not_retried_and_reaches_the_client_as_such() {
    let extra = "[retry]\nattempts_per_model = 3\nbackoff_base_ms = 1\nmax_fallbacks = 0\n";
    let t = start(&[("reject-mock", "openai", 1.0)], extra).await;
    let (s, b) = t.post("/v1/execute", &execute(&["reject-mock"])).await;
    // The upstream's 400 is the client's to fix: relayed, not a 502.
    assert_eq!((s, error_type(&b)), (400, "invalid_request"), "{b}");
    assert_eq!(t.mock.stats.calls("reject-mock"), 1, "a 400 is not worth repeating");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_to_the_next_best_when_a_model_errors() {
    let extra = format!("{GREEDY}[retry]\nattempts_per_model = 2\nbackoff_base_ms = 1\nbackoff_max_ms = 2\n");
    // The erroring model is the cheapest, so at a high cost weight it is chosen first.
    let t = start(&[("error-mock", "openai", 0.01), ("good-mock", "openai", 5.0)], &extra).await;
    let (s, b) = t.post("/v1/execute", &execute(&["error-mock", "good-mock"])).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["model"], "good-mock");
    let attempts = b["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["model"], "error-mock");
    assert_eq!(attempts[0]["calls"], 2, "retried before falling back");
    assert!(attempts[0]["error"].as_str().is_some());
    assert!(attempts[1]["error"].is_null());

    // Two decisions in one episode: the policy's (with the failure) and the fallback's.
    let id = b["request_id"].as_str().unwrap();
    let first = t.experience(id, 1).await;
    assert_eq!(first.decision.chosen, vec!["error-mock".to_string()]);
    assert!(first.outcomes[0].error.is_some());
    let second = t.experience(&format!("{id}/fallback-1"), 1).await;
    assert_eq!(second.decision.chosen, vec!["good-mock".to_string()]);
    assert_eq!(second.decision.propensities, vec![1.0]);
    assert!(second.outcomes[0].error.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_and_closes_again() {
    let extra =
        "[retry]\nattempts_per_model = 1\nmax_fallbacks = 0\n[breaker]\nfailure_threshold = 1\ncooldown_ms = 300\n";
    let t = start(&[("flaky-mock", "openai", 1.0), ("other-mock", "openai", 1.0)], extra).await;
    // Call 1 of a flaky model fails: the breaker (threshold 1) opens.
    let (s, b) = t.post("/v1/execute", &execute(&["flaky-mock"])).await;
    assert_eq!(s, 502, "{b}");
    let h: serde_json::Value = t.get("/v1/health").await.json().await.unwrap();
    assert_eq!(h["status"], "degraded");
    assert_eq!(h["breakers_open"], json!(["flaky-mock"]));
    // While open the model is out of the candidate set: no upstream call,
    // and the 503 says when to come back (the cool-down, rounded up to 1 s).
    let r = t
        .http
        .post(format!("{}/v1/execute", t.url))
        .json(&execute(&["flaky-mock"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let b: serde_json::Value = r.json().await.unwrap();
    assert_eq!(error_type(&b), "unavailable", "{b}");
    assert_eq!(t.mock.stats.calls("flaky-mock"), 1);
    // Other models still route, and the open one is never offered.
    for _ in 0..5 {
        let (s, b) = t.post("/v1/execute", &json!({"prompt": "hi"})).await;
        assert_eq!(s, 200);
        assert_eq!(b["model"], "other-mock");
    }
    // After the cool-down one probe goes through; call 2 succeeds and closes it.
    let mut probed = None;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let (s, b) = t.post("/v1/execute", &execute(&["flaky-mock"])).await;
        if s == 200 {
            probed = Some(b);
            break;
        }
        assert_eq!(s, 503, "{b}");
    }
    let b = probed.expect("the breaker lets a probe through after its cool-down");
    assert_eq!(b["model"], "flaky-mock");
    assert_eq!(t.mock.stats.calls("flaky-mock"), 2);
    let h: serde_json::Value = t.get("/v1/health").await.json().await.unwrap();
    assert_eq!(h["status"], "ok");
    let m = t.get("/metrics").await.text().await.unwrap();
    assert!(m.contains("qroute_breaker_opened_total"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_upstream_times_out() {
    let extra = "[limits]\nattempt_timeout_ms = 200\nrequest_timeout_ms = 5000\n[retry]\nattempts_per_model = 1\nmax_fallbacks = 0\n";
    let t = start(&[("timeout-mock", "openai", 1.0)], extra).await;
    let (s, b) = t.post("/v1/execute", &execute(&["timeout-mock"])).await;
    assert_eq!((s, error_type(&b)), (504, "timeout"), "{b}");
    // The decision was durable before the answer; its outcome follows.
    let id = t.gw.store.iter_from(0).next().unwrap().unwrap().decision.request_id;
    let e = t.experience(&id, 1).await;
    assert!(e.outcomes[0].error.as_deref().unwrap().contains("no answer within"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_model_falls_back() {
    let extra = format!(
        "{GREEDY}[limits]\nattempt_timeout_ms = 200\nrequest_timeout_ms = 5000\n[retry]\nattempts_per_model = 1\n"
    );
    let t = start(
        &[("timeout-mock", "openai", 0.01), ("good-mock", "anthropic", 5.0)],
        &extra,
    )
    .await;
    let (s, b) = t.post("/v1/execute", &execute(&["timeout-mock", "good-mock"])).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["model"], "good-mock");
    assert_eq!(b["attempts"][0]["model"], "timeout-mock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_deadline_bounds_everything() {
    // Each attempt may take 10 s but the request only 300 ms: retries and
    // fallbacks share it and stop at the deadline, and the fallback gets
    // its share.
    let extra = format!(
        "{GREEDY}[limits]\nattempt_timeout_ms = 10000\nrequest_timeout_ms = 300\n[retry]\nattempts_per_model = 3\n"
    );
    let t = start(
        &[("timeout-mock", "openai", 0.01), ("timeout2-mock", "openai", 5.0)],
        &extra,
    )
    .await;
    let (s, b) = t
        .post("/v1/execute", &execute(&["timeout-mock", "timeout2-mock"]))
        .await;
    assert_eq!((s, error_type(&b)), (504, "timeout"), "{b}");
    assert!(t.mock.stats.calls("timeout-mock") >= 1);
    assert!(t.mock.stats.calls("timeout2-mock") >= 1, "the fallback was tried: {b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_first_choice_leaves_the_fallback_time_to_answer() {
    // The config, scaled down: attempts may take the whole request
    // deadline, yet the hung first choice gets only its share.
    let extra = format!(
        "{GREEDY}[limits]\nattempt_timeout_ms = 600\nrequest_timeout_ms = 1200\n[retry]\nattempts_per_model = 2\nbackoff_base_ms = 1\n"
    );
    let t = start(
        &[("timeout-mock", "openai", 0.01), ("good-mock", "openai", 5.0)],
        &extra,
    )
    .await;
    let (s, b) = t.post("/v1/execute", &execute(&["timeout-mock", "good-mock"])).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["model"], "good-mock");
    assert_eq!(b["attempts"][0]["model"], "timeout-mock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_recovers_within_one_probe_interval_of_its_upstream() {
    // An upstream that is down: nothing listens on its port yet.
    let parked = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = parked.local_addr().unwrap();
    drop(parked);
    let extra = format!(
        "[breaker]\nfailure_threshold = 1\ncooldown_ms = 300\nprobe_interval_ms = 50\n[retry]\nattempts_per_model = 1\nmax_fallbacks = 0\n\n[[providers]]\nname = \"later\"\nkind = \"openai\"\nbase_url = \"http://{addr}/v1\"\n"
    );
    let models = "\n[[models]]\nid = \"later-mock\"\nprovider = \"later\"\n";
    let t = crate::harness::start_raw(qroute_mock::MockConfig::default(), &[], &extra, models).await;
    let prompt = json!({"prompt": "hi"});
    let ask = || t.post("/v1/execute", &prompt);
    assert_eq!(ask().await.0, 502, "down: the breaker opens");
    assert_eq!(ask().await.0, 503, "open: refused without a call");
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    assert_eq!(ask().await.0, 502, "the cool-down's probe fails: still down");
    // The upstream comes back.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(qroute_mock::serve(listener, qroute_mock::MockConfig::default()));
    // One probe interval later (not a whole cool-down), a probe goes through.
    tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    let (s, b) = ask().await;
    assert_eq!(s, 200, "{b}");
}
