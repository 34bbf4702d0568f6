//! Cascades: the routed model first, a stronger one only when the answer
//! head does not value its answer; every call recorded, costs summed. And
//! the same head judging variations (`variations.judge = "head"`).

use crate::harness::{error_type, start};
use qroute_core::policy::answer::{AnswerHead, ANSWER_FEATURES};
use qroute_core::policy::checkpoint;
use serde_json::json;

/// A policy directory holding the shipped policy with `head` (or none).
fn policy_with(dir: &std::path::Path, head: Option<AnswerHead>) -> String {
    let mut p = qroute_gateway::embedded::policy().unwrap();
    p.answer_head = head;
    checkpoint::save(&p, dir, serde_json::Value::Null).unwrap();
    dir.display().to_string()
}

/// A head that reads one thing: a refusal is a bad answer (value ≈ 0.007),
/// anything else a good one (≈ 0.99995, above any prompt-only estimate).
fn refusals_are_bad() -> AnswerHead {
    let f = ANSWER_FEATURES.len();
    let mut weights = vec![0.0; f + 1];
    let refusal = ANSWER_FEATURES.iter().position(|n| *n == "refusal").unwrap();
    weights[refusal] = -15.0;
    AnswerHead {
        models: Vec::new(),
        feature_mean: vec![0.0; f],
        feature_std: vec![1.0; f],
        weights,
        bias: 10.0,
    }
}

/// The cheapest predicted model goes first, so the first call is known.
fn config(policy: &str, extra: &str) -> String {
    format!("[policy]\npath = \"{policy}\"\nstrategy = {{ kind = \"cost_optimized\" }}\n{extra}")
}

const MODELS: [(&str, &str, f64); 3] = [
    ("cheap-refuse", "openai", 0.1),
    ("cheap-mock", "openai", 0.1),
    ("strong-mock", "openai", 30.0),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poor_answer_escalates_and_every_call_is_recorded_and_paid() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(&MODELS, &config(&policy_with(dir.path(), Some(refusals_are_bad())), "")).await;
    let (s, b) = t
        .post(
            "/v1/execute",
            &json!({"prompt": "Explain photosynthesis.", "cascade": true,
                    "preference": {"cost_weight": 0.0, "models": ["cheap-refuse", "strong-mock"]}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let steps = b["cascade"].as_array().unwrap();
    let called: Vec<&str> = steps.iter().map(|s| s["model"].as_str().unwrap()).collect();
    assert_eq!(called, ["cheap-refuse", "strong-mock"], "{b}");
    assert!(steps[0]["value"].as_f64().unwrap() < 0.1, "{b}");
    assert_eq!(steps[1]["kept"], true);
    assert_eq!(steps[0]["kept"], false);
    assert_eq!(b["model"], "strong-mock");
    assert!(b["response"].as_str().unwrap().contains("mock answer from strong-mock"));
    let sum: f64 = steps.iter().map(|s| s["cost_usd"].as_f64().unwrap()).sum();
    assert!(steps.iter().all(|s| s["cost_usd"].as_f64().unwrap() > 0.0));
    assert!((b["cost_usd"].as_f64().unwrap() - sum).abs() < 1e-12, "{b}");

    // Two decisions, each with its outcome: the routed one and the step.
    let rid = b["request_id"].as_str().unwrap();
    let first = t.experience(rid, 1).await;
    assert_eq!(first.decision.chosen, ["cheap-refuse"]);
    let step = t.experience(&format!("{rid}/cascade-1"), 1).await;
    assert_eq!(step.decision.chosen, ["strong-mock"]);
    assert_eq!(step.decision.propensities[0], 1.0);
    assert!(!step.decision.candidates.contains(&"cheap-refuse".to_string()));
    assert_eq!(step.outcomes[0].model, "strong-mock");
    // Each model called once.
    assert_eq!(t.mock.stats.calls("strong-mock"), 1);
    assert_eq!(t.mock.stats.calls("cheap-refuse"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_answer_is_kept_and_max_calls_bounds_the_cascade() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_with(dir.path(), Some(refusals_are_bad()));
    let t = start(&MODELS, &config(&policy, "")).await;
    let (s, b) = t
        .post(
            "/v1/execute",
            &json!({"prompt": "Explain photosynthesis.", "cascade": true,
                    "preference": {"cost_weight": 0.0, "models": ["cheap-mock", "strong-mock"]}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["cascade"].as_array().unwrap().len(), 1, "{b}");
    assert_eq!(b["model"], "cheap-mock");
    assert_eq!(b["cascade"][0]["kept"], true);

    // One call at most: even a refusal stands.
    let t = start(&MODELS, &config(&policy, "[cascade]\nmax_calls = 1\n")).await;
    let (s, b) = t
        .post(
            "/v1/chat/completions",
            &json!({"model": "auto", "messages": [{"role": "user", "content": "Explain photosynthesis."}],
                    "cascade": true, "cost_weight": 0.0, "models": ["cheap-refuse", "strong-mock"]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["qroute"]["cascade"].as_array().unwrap().len(), 1, "{b}");
    assert_eq!(b["model"], "cheap-refuse");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cascade_that_cannot_run_is_a_400_naming_why() {
    let dir = tempfile::tempdir().unwrap();
    let with_head = policy_with(&dir.path().join("head"), Some(refusals_are_bad()));
    let t = start(&MODELS, &config(&with_head, "")).await;
    let chat = |extra: serde_json::Value| {
        let mut body = json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}], "cascade": true});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    for (body, why) in [
        (chat(json!({"variations": 2})), "variations"),
        (chat(json!({"stream": true})), "streamed"),
        (chat(json!({"model": "strong-mock"})), "pinned"),
    ] {
        let (s, b) = t.post("/v1/chat/completions", &body).await;
        assert_eq!(s, 400, "{b}");
        assert_eq!(error_type(&b), "invalid_request");
        let msg = b["error"]["message"].as_str().unwrap();
        assert!(msg.contains("cascade:") && msg.contains(why), "{msg}");
    }
    // Without an answer head there is nothing to judge with.
    let without = policy_with(&dir.path().join("plain"), None);
    let t = start(&MODELS, &config(&without, "")).await;
    let (s, b) = t.post("/v1/execute", &json!({"prompt": "hi", "cascade": true})).await;
    assert_eq!(s, 400, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("answer head"), "{b}");
    // The configured default yields instead: a plain answer.
    let t = start(&MODELS, &config(&without, "[cascade]\ndefault = true\n")).await;
    let (s, b) = t.post("/v1/execute", &json!({"prompt": "hi"})).await;
    assert_eq!(s, 200, "{b}");
    assert!(b.get("cascade").is_none(), "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_head_judges_variations() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_with(dir.path(), Some(refusals_are_bad()));
    let two_variations = json!({"prompt": "Explain photosynthesis.", "variations": 2,
                                "preference": {"models": ["cheap-refuse", "cheap-mock"]}});
    let t = start(&MODELS, &config(&policy, "[variations]\njudge = \"head\"\n")).await;
    let (s, b) = t.post("/v1/execute", &two_variations).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["judge"], "head");
    assert_eq!(b["model"], "cheap-mock", "the refusal loses: {b}");
    let vars = b["variations"].as_array().unwrap();
    assert!(vars
        .iter()
        .all(|v| v["reason"].as_str().unwrap().starts_with("answer head")));
    // Its value is the quality the trainer learns for each answer.
    let e = t.experience(b["request_id"].as_str().unwrap(), 2).await;
    let refused = e.outcomes.iter().find(|o| o.model == "cheap-refuse").unwrap();
    assert!(refused.quality.unwrap() < 0.1, "{refused:?}");

    // Without a head the judge says so and falls back to the heuristic.
    let bare = policy_with(&dir.path().join("bare"), None);
    let t = start(&MODELS, &config(&bare, "[variations]\njudge = \"head\"\n")).await;
    let (s, b) = t.post("/v1/execute", &two_variations).await;
    assert_eq!(s, 200, "{b}");
    assert!(
        b["variations"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("no answer head"),
        "{b}"
    );
}
