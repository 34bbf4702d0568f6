//! Delayed feedback: joined to the answer by request id, repeats overwrite,
//! unknown ids are a 404, and feedback changes what is learned.

use crate::harness::{error_type, start};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_joins_repeats_overwrite_unknown_ids_404() {
    let t = start(&[("a-mock", "openai", 1.0), ("b-mock", "openai", 1.0)], "").await;
    let (s, b) = t.post("/v1/execute", &json!({"prompt": "Write a haiku."})).await;
    assert_eq!(s, 200, "{b}");
    let id = b["request_id"].as_str().unwrap();
    let model = b["model"].as_str().unwrap();
    // Real providers report no quality: the outcome starts unlabelled.
    assert_eq!(t.experience(id, 1).await.outcomes[0].quality, None);

    // Sent the moment the answer arrived: joined to the answering model.
    let (s, f) = t.post("/v1/feedback", &json!({"request_id": id, "thumbs": "up"})).await;
    assert_eq!(s, 200, "{f}");
    assert_eq!(
        (f["model"].as_str().unwrap(), f["quality"].as_f64().unwrap()),
        (model, 1.0)
    );
    assert_eq!((f["late"].as_bool(), f["revisions"].as_u64()), (Some(false), Some(1)));
    assert!(f["replaced"].is_null());
    let e = t.gw.store.get(id).unwrap().unwrap();
    assert_eq!(e.outcomes[0].quality, Some(1.0), "the trainer now learns the feedback");
    assert_eq!(e.feedback.as_ref().unwrap().feedback.kind, "thumbs");

    // A repeat overwrites, and says what it replaced.
    let (s, f) = t
        .post(
            "/v1/feedback",
            &json!({"request_id": id, "metric": "csat", "value": 2.0, "min": 1.0, "max": 5.0}),
        )
        .await;
    assert_eq!(s, 200, "{f}");
    assert_eq!(f["revisions"], 2);
    assert_eq!(f["replaced"], 1.0);
    assert_eq!(f["quality"], 0.25);
    let e = t.gw.store.get(id).unwrap().unwrap();
    assert_eq!(e.outcomes[0].quality, Some(0.25));
    // The outcome's cost and latency are kept.
    assert!(e.outcomes[0].cost_usd > 0.0 && e.outcomes[0].latency_ms > 0.0);

    // Unknown ids and bad bodies.
    let (s, f) = t
        .post("/v1/feedback", &json!({"request_id": "nope", "quality": 0.5}))
        .await;
    assert_eq!((s, error_type(&f)), (404, "not_found"));
    assert!(f["error"]["message"].as_str().unwrap().contains("nope"));
    for body in [
        json!({"request_id": id}),
        json!({"request_id": id, "quality": 1.5}),
        json!({"request_id": id, "quality": 1.0, "thumbs": "up"}),
        json!({"request_id": id, "thumbs": "sideways"}),
        json!({"request_id": id, "metric": "x"}),
        json!({"request_id": id, "metric": "x", "value": 1.0, "min": 2.0, "max": 1.0}),
    ] {
        let (s, f) = t.post("/v1/feedback", &body).await;
        assert_eq!((s, error_type(&f)), (400, "invalid_request"), "{body} → {f}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_after_the_window_is_kept_but_flagged() {
    // A zero window: any feedback is late.
    let t = start(&[("a-mock", "openai", 1.0)], "[learning]\nfeedback_window_ms = 0\n").await;
    let (_, b) = t.post("/v1/execute", &json!({"prompt": "hi"})).await;
    let id = b["request_id"].as_str().unwrap();
    t.experience(id, 1).await;
    // Make sure the clock has moved past the answer's millisecond.
    let answered = loop {
        if let Some(a) = t.gw.store.answered(id).unwrap() {
            break a;
        }
        tokio::task::yield_now().await;
    };
    while qroute_now_ms() <= answered.time_ms {
        tokio::task::yield_now().await;
    }
    let (s, f) = t.post("/v1/feedback", &json!({"request_id": id, "quality": 0.9})).await;
    assert_eq!(s, 200, "{f}");
    assert_eq!(f["late"], true);
    assert_eq!(f["learned"], false);
    let e = t.gw.store.get(id).unwrap().unwrap();
    assert_eq!(e.outcomes[0].quality, None, "late feedback does not relabel");
    assert!(e.feedback.unwrap().late);
}

fn qroute_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_right_after_a_queued_answer_is_joined() {
    // With durable_ack = false even the decision may still be queued when
    // the feedback arrives; the endpoint waits for it instead of a 404.
    let t = start(&[("a-mock", "openai", 1.0)], "durable_ack = false\n").await;
    for _ in 0..20 {
        let (_, b) = t.post("/v1/execute", &json!({"prompt": "hi"})).await;
        let (s, f) = t
            .post("/v1/feedback", &json!({"request_id": b["request_id"], "quality": 0.5}))
            .await;
        assert_eq!(s, 200, "{f}");
        assert_eq!(f["learned"], true);
    }
}
