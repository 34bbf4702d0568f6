//! Variations: k models at once under a deadline, a judge picks the answer,
//! every variation is an experience.

use crate::harness::{error_type, start};
use qroute_core::dataset::Dataset;
use qroute_gateway::config::{Config, JudgeKind};
use qroute_mock::MockConfig;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_cuts_laggards_and_the_best_of_the_rest_answers() {
    let models = [
        ("m-delay50", "openai", 1.0),
        ("m-delay100", "openai", 1.0),
        ("m-delay400", "openai", 1.0),
    ];
    let extra = "[variations]\ndeadline_ms = 200\n[retry]\nattempts_per_model = 1\n[breaker]\nfailure_threshold = 1\n";
    let t = start(&models, extra).await;
    let (s, b) = t
        .post(
            "/v1/execute",
            &json!({"prompt": "Say something.", "variations": 3,
                    "preference": {"models": ["m-delay50", "m-delay100", "m-delay400"]}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["judge"], "heuristic");
    let vars = b["variations"].as_array().unwrap();
    assert_eq!(vars.len(), 3);
    let by_model = |m: &str| vars.iter().find(|v| v["model"] == m).unwrap();
    // The 400 ms one was cut at the 200 ms deadline; the others answered.
    let slow = by_model("m-delay400");
    assert!(slow["error"].as_str().unwrap().contains("no answer within"), "{slow}");
    assert_eq!(slow["selected"], false);
    for m in ["m-delay50", "m-delay100"] {
        assert!(by_model(m)["error"].is_null(), "{b}");
        assert!(by_model(m)["score"].as_f64().is_some());
    }
    let chosen = b["model"].as_str().unwrap();
    assert!(chosen == "m-delay50" || chosen == "m-delay100", "{chosen}");
    assert_eq!(by_model(chosen)["selected"], true);
    // Propensities: the first is the explorer's, the rest conditional, all in (0, 1].
    assert!(vars.iter().all(|v| v["propensity"].as_f64().unwrap() > 0.0));
    // The wall time is bounded by the deadline, not the sum of latencies:
    // the slow one was cut (above) instead of being waited for.

    // One decision with the three models in draw order, three outcomes.
    let e = t.experience(b["request_id"].as_str().unwrap(), 3).await;
    assert_eq!(e.decision.chosen.len(), 3);
    let cut = e.outcomes.iter().find(|o| o.model == "m-delay400").unwrap();
    assert!(cut.error.is_some());
    assert!(e
        .outcomes
        .iter()
        .filter(|o| o.error.is_none())
        .all(|o| o.quality.is_some()));
    // Being cut by the variations' deadline is not a failure of the model:
    // even with a breaker threshold of 1 it stays closed.
    let h: serde_json::Value = t.get("/v1/health").await.json().await.unwrap();
    assert_eq!(h["status"], "ok", "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_variations_than_candidates_run_each_candidate_once() {
    let models = [
        ("a-mock", "openai", 1.0),
        ("b-mock", "openai", 1.0),
        ("c-mock", "openai", 1.0),
    ];
    let t = start(&models, "[policy]\nexploration = { kind = \"greedy\" }\nfloor = 0.0\n").await;
    for _ in 0..10 {
        let (s, b) = t
            .post(
                "/v1/execute",
                &json!({"prompt": "hi", "variations": 4, "preference": {"models": ["a-mock", "b-mock"]}}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        let vars = b["variations"].as_array().unwrap();
        let mut run: Vec<&str> = vars.iter().map(|v| v["model"].as_str().unwrap()).collect();
        run.sort_unstable();
        assert_eq!(run, ["a-mock", "b-mock"], "each once, even with a zero floor: {b}");
        assert!(
            vars.iter().all(|v| v["propensity"].as_f64().is_some_and(|p| p > 0.0)),
            "{b}"
        );
    }
    assert_eq!(t.mock.stats.calls("a-mock") + t.mock.stats.calls("b-mock"), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_variation_does_not_fail_the_request() {
    let models = [
        ("error-mock", "openai", 1.0),
        ("good-mock", "anthropic", 1.0),
        ("also-good", "gemini", 1.0),
    ];
    let t = start(&models, "[retry]\nattempts_per_model = 1\n").await;
    let (s, b) = t
        .post("/v1/execute", &json!({"prompt": "hello", "variations": 3}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_ne!(b["model"], "error-mock");
    let err = b["variations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["model"] == "error-mock")
        .unwrap();
    assert!(err["error"].as_str().is_some());
    assert!(err["score"].is_null());
    // The failed one is learned as a failure; the others with their scores.
    let e = t.experience(b["request_id"].as_str().unwrap(), 3).await;
    assert_eq!(e.outcomes.iter().filter(|o| o.error.is_some()).count(), 1);
    // Every variation failing is an error, not a panic.
    let (s, b) = t
        .post(
            "/v1/execute",
            &json!({"prompt": "hello", "variations": 1, "preference": {"models": ["error-mock"]}}),
        )
        .await;
    assert_eq!((s, error_type(&b)), (502, "upstream_error"));
    // Bad variation counts are a 400.
    let (s, b) = t
        .post("/v1/execute", &json!({"prompt": "hello", "variations": 9}))
        .await;
    assert_eq!((s, error_type(&b)), (400, "invalid_request"), "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_judges_choice_is_the_answer() {
    // Simulated providers from the bundled dataset, judged by the recorded
    // quality: the answer must come from the model that got the prompt right.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::embedded_default().unwrap();
    cfg.variations.judge = JudgeKind::Dataset;
    cfg.store.path = dir.path().join("store");
    let mock = qroute_mock::spawn(MockConfig::default()).await.unwrap();
    let t = crate::harness::start_with(cfg, mock, dir).await;

    let ds = Dataset::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/routellm_mmlu_gsm8k.jsonl"
    ))
    .unwrap();
    let mut checked = 0;
    for row in ds
        .rows
        .iter()
        .filter(|r| r.outcomes[0].quality != r.outcomes[1].quality)
        .take(10)
    {
        let (s, b) = t
            .post("/v1/execute", &json!({"prompt": row.prompt, "variations": 2}))
            .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["judge"], "dataset");
        let right = if row.outcomes[0].quality > row.outcomes[1].quality {
            0
        } else {
            1
        };
        assert_eq!(b["model"], ds.models[right], "{b}");
        // Both answers are experiences, labelled with their recorded quality,
        // and the response paid for both.
        let e = t.experience(b["request_id"].as_str().unwrap(), 2).await;
        for o in &e.outcomes {
            let k = ds.model_index(&o.model).unwrap();
            assert_eq!(o.quality, Some(row.outcomes[k].quality));
        }
        let paid: f64 = row.outcomes.iter().map(|o| o.cost_usd).sum();
        assert!((b["cost_usd"].as_f64().unwrap() - paid).abs() < 1e-12);
        checked += 1;
    }
    assert_eq!(checked, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combine_merges_the_answers_and_counts_its_cost() {
    let models = [
        ("a-mock", "openai", 1.0),
        ("b-mock", "openai", 1.0),
        ("merger-mock", "anthropic", 2.0),
    ];
    let t = start(&models, "[variations]\ncombine_model = \"merger-mock\"\n").await;
    let (s, b) = t
        .post(
            "/v1/execute",
            &json!({"prompt": "Explain DNS.", "variations": 2, "combine": true,
                    "preference": {"models": ["a-mock", "b-mock"]}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["combined_by"], "merger-mock");
    assert_eq!(b["model"], "merger-mock");
    assert!(
        b["response"]
            .as_str()
            .unwrap()
            .starts_with("mock answer from merger-mock"),
        "{b}"
    );
    let parts: f64 = b["variations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["cost_usd"].as_f64().unwrap())
        .sum();
    assert!(
        b["cost_usd"].as_f64().unwrap() > parts,
        "the merge is paid for too: {b}"
    );
    assert_eq!(t.mock.stats.calls("merger-mock"), 1);
    // Feedback on a merged answer is kept, but no variation's outcome takes it.
    let id = b["request_id"].as_str().unwrap();
    t.experience(id, 2).await;
    let (s, f) = t.post("/v1/feedback", &json!({"request_id": id, "quality": 0.0})).await;
    assert_eq!(s, 200, "{f}");
    assert_eq!(
        (f["model"].as_str(), f["learned"].as_bool()),
        (Some("merger-mock"), Some(false))
    );
    let e = t.gw.store.get(id).unwrap().unwrap();
    assert!(
        e.outcomes.iter().all(|o| o.quality.is_some_and(|q| q > 0.0)),
        "judged scores kept"
    );

    // Through the OpenAI endpoint as extension fields.
    let (s, b) = t
        .post(
            "/v1/chat/completions",
            &json!({"model": "auto", "messages": [{"role": "user", "content": "Explain DNS."}],
                    "variations": 2, "models": ["a-mock", "b-mock"]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["qroute"]["variations"].as_array().unwrap().len(), 2);
    assert_eq!(b["qroute"]["judge"], "heuristic");
}
