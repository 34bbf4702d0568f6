//! The embedded default end to end: simulated providers answer prompts from
//! the bundled dataset with their recorded quality and cost, every request
//! is an experience, and the online trainer learns from that live traffic
//! and hot-swaps new policy versions into serving.

use std::time::Duration;

use qroute_core::dataset::Dataset;
use qroute_gateway::config::Config;
use qroute_mock::MockConfig;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_setup_learns_from_live_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::embedded_default().unwrap();
    cfg.store.path = dir.path().join("store");
    cfg.learning.steps_per_experience = 1.0;
    cfg.learning.max_steps_per_sec = 1000.0;
    let mock = qroute_mock::spawn(MockConfig::default()).await.unwrap();
    let t = crate::harness::start_with(cfg, mock, dir).await;

    let ds = Dataset::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/routellm_mmlu_gsm8k.jsonl"
    ))
    .unwrap();
    let rows: Vec<_> = ds.split("train").into_iter().take(300).collect();
    let mut first_version = None;
    let mut ids = Vec::new();
    for row in &rows {
        let (s, b) = t
            .post(
                "/v1/execute",
                &json!({"prompt": row.prompt, "task_type": row.task, "preference": {"cost_weight": 0.5}}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        first_version.get_or_insert(b["policy_version"].as_u64().unwrap());
        ids.push((
            b["request_id"].as_str().unwrap().to_string(),
            b["model"].as_str().unwrap().to_string(),
        ));
    }
    // Outcomes carry the dataset's recorded quality and cost for the model chosen.
    for ((id, model), row) in ids.iter().zip(&rows).take(20) {
        let e = t.experience(id, 1).await;
        let k = ds.model_index(model).unwrap();
        assert_eq!(e.outcomes[0].quality, Some(row.outcomes[k].quality));
        assert!((e.outcomes[0].cost_usd - row.outcomes[k].cost_usd).abs() < 1e-12);
    }
    // The trainer steps on that traffic and publishes; serving picks it up.
    let first = first_version.unwrap();
    let mut served = first;
    for _ in 0..3000 {
        let (_, b) = t.post("/v1/execute", &json!({"prompt": rows[0].prompt})).await;
        served = b["policy_version"].as_u64().unwrap();
        if served > first {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(served > first, "no new policy version reached serving");
    assert!(t.gw.trainer_steps() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_answers_recorded_prompts_with_recorded_answers() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::embedded_default().unwrap();
    cfg.store.path = dir.path().join("store");
    let mock = qroute_mock::spawn(MockConfig::default()).await.unwrap();
    let t = crate::harness::start_with(cfg, mock, dir).await;

    let models: serde_json::Value = t.get("/v1/models").await.json().await.unwrap();
    assert_eq!(models["object"], "list");
    assert!(models["data"].as_array().unwrap().len() >= 5, "{models}");

    let ds = Dataset::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/alpaca_eval.jsonl")).unwrap();
    for row in ds.rows.iter().take(5) {
        let (s, b) = t
            .post("/v1/execute", &json!({"prompt": row.prompt, "variations": 3}))
            .await;
        assert_eq!(s, 200, "{b}");
        let variations = b["variations"].as_array().unwrap();
        assert_eq!(variations.len(), 3, "{b}");
        // Only the dataset's own models, and the answer is the recorded one.
        for v in variations {
            assert!(ds.model_index(v["model"].as_str().unwrap()).is_some(), "{v}");
        }
        let k = ds.model_index(b["model"].as_str().unwrap()).unwrap();
        assert_eq!(b["response"].as_str(), row.responses[k].as_deref(), "{}", row.id);
    }
    // `combine` works out of the box.
    let (s, b) = t
        .post(
            "/v1/execute",
            &json!({"prompt": ds.rows[0].prompt, "variations": 3, "combine": true}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(b["combined_by"].is_string(), "{b}");
    // A prompt in no dataset says plainly that it is simulated.
    let (s, b) = t
        .post("/v1/execute", &json!({"prompt": "Write a haiku about qroute."}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(
        b["response"].as_str().unwrap().contains("not in the bundled dataset"),
        "{b}"
    );
}
